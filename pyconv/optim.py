"""Optimizers, gradient clipping and learning-rate schedulers for ``pyconv.nn.Parameter``.

Everything here follows ``torch.optim`` (PyTorch 2.x): the same class names,
constructor keywords, defaults, ``param_groups`` / ``state`` layout, update
rules (those of torch's single-tensor code paths, operation for operation) and
scheduler formulas. The maths works in place on ``Parameter.data``: SGD and
Adam / AdamW update a C-contiguous float32 / float64 parameter (and its state)
in one fused C++ pass (``csrc/ops/optim.cpp``) that does, per element, the
same operations and roundings as their NumPy form, which runs otherwise (a
non-contiguous gradient, say) and for the other optimizers. Optimizer state is
kept in the parameter's dtype, and step counts are Python ints.

Contents
--------
Optimizers
    :class:`Optimizer` (base: ``param_groups``, ``state``, ``step()``,
    ``zero_grad()``, ``add_param_group()``, ``state_dict()`` /
    ``load_state_dict()``), :class:`SGD` (momentum, dampening, Nesterov),
    :class:`Adagrad`, :class:`Adadelta`, :class:`RMSprop` (momentum,
    centered), :class:`Adam` (AMSGrad), :class:`AdamW`.
Gradient clipping
    :func:`clip_grad_norm_`, :func:`clip_grad_value_`.
Schedulers
    :class:`LRScheduler` (base), :class:`StepLR`, :class:`MultiStepLR`,
    :class:`ExponentialLR`, :class:`CosineAnnealingLR`,
    :class:`ReduceLROnPlateau`.

Common behaviour
----------------
* ``params`` is an iterable of Parameters, or of param-group dicts
  ``{'params': [...], 'lr': ..., ...}``; options missing from a group take the
  constructor's values.
* Parameters with ``requires_grad == False`` or ``grad is None`` are skipped:
  no state is created and ``data`` is not touched.
* Every optimizer accepts ``maximize`` (ascend instead of descend) and
  ``weight_decay`` (L2, added to the gradient as ``weight_decay * p``;
  decoupled in :class:`AdamW`) like PyTorch, plus one extension, ``l1``: an
  L1 penalty ``l1 * ||p||_1`` whose subgradient ``l1 * sign(p)`` (0 at 0) is
  added to the gradient, alongside the L2 term and before the update rule.
  With ``g`` the gradient the rules below start from::

      g = (-grad if maximize else grad) + l1 * sign(p) + weight_decay * p

* ``state_dict()`` follows torch: ``{'state': {index: {name: value}},
  'param_groups': [{..., 'params': [indices]}]}``, indices counting the
  parameters across groups in order. Its leaves are NumPy arrays (copies),
  Python ints / floats / bools / None and tuples of floats, so it can be
  flattened into an ``.npz``. ``load_state_dict()`` validates and deep-copies,
  and takes scalars back as NumPy scalars or 0-d arrays (as an ``.npz`` gives).
* Differences from torch: state is created lazily at a parameter's first
  update (torch's Adagrad creates it in the constructor; values are the same,
  except that a param group's own ``initial_accumulator_value`` is honoured,
  where torch 2.x fills every group with the constructor's value);
  ``step`` is a Python int rather than a tensor; a parameter listed twice is an
  error rather than a warning; schedulers do not wrap ``optimizer.step`` to warn
  about call order, and ``step()`` takes no deprecated ``epoch`` argument;
  :func:`clip_grad_norm_` returns a Python float accumulated in float64.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from . import _C
from .nn.parameter import Parameter

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "Adam",
    "AdamW",
    "clip_grad_norm_",
    "clip_grad_value_",
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
]


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def _real(owner: str, name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} "
                        f"of type {type(value).__name__}")
    return float(value)


def _nonneg(owner: str, name: str, value) -> float:
    v = _real(owner, name, value)
    if not v >= 0.0:  # also rejects NaN
        raise ValueError(f"{owner}: invalid {name}={value!r}, must be >= 0")
    return v


def _int_at_least(owner: str, name: str, value, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r} "
                        f"of type {type(value).__name__}")
    if value < low:
        raise ValueError(f"{owner}: invalid {name}={value!r}, must be >= {low}")
    return int(value)


def _plain(value):
    """NumPy scalars and 0-d arrays (what an ``.npz`` gives back) as Python
    scalars; anything else unchanged."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fusable(p: Parameter, *arrays) -> bool:
    """Whether the C++ update can run: every array C-contiguous, of the
    parameter's (float32 / float64) dtype and shape, the parameter writable.
    It computes the same values as the NumPy code below, element by element
    in one pass (``csrc/ops/optim.h``); anything else takes the NumPy code."""
    d = p.data
    if d.dtype not in _FUSED_DTYPES or not d.flags.c_contiguous or not d.flags.writeable:
        return False
    return all(isinstance(a, np.ndarray) and a.dtype == d.dtype and a.shape == d.shape
               and a.flags.c_contiguous for a in arrays)


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """``start += weight * (end - start)`` in place, with torch's two-branch
    formula (the one from the far end when weight >= 0.5) and its rounding of
    ``1 - weight`` in the array's dtype."""
    np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        np.multiply(tmp, weight, out=tmp)
        np.add(start, tmp, out=start)
    else:
        np.multiply(tmp, 1 - start.dtype.type(weight), out=tmp)
        np.subtract(end, tmp, out=start)


# --------------------------------------------------------------------------
# Optimizer base
# --------------------------------------------------------------------------
class Optimizer:
    """Base class: holds ``param_groups`` and per-parameter ``state``.

    Subclasses give ``defaults`` (every hyper-parameter with its value),
    ``_check_group`` (validation), ``_init_state`` (fresh state of one
    parameter) and ``_update`` (one in-place step of one parameter, given the
    effective gradient ``g`` described in the module docstring).
    """

    #: Array-valued state entries have the parameter's shape; these are scalars.
    _scalar_state = frozenset({"step"})

    def __init__(self, params, defaults: Dict[str, Any]):
        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Parameters or dicts, but got {type(params).__name__}")
        defaults = dict(defaults)
        self._check_group(defaults)
        self.defaults = defaults
        self.state: Dict[Parameter, Dict[str, Any]] = {}
        self.param_groups: List[Dict[str, Any]] = []
        self._pool: Dict[tuple, np.ndarray] = {}
        groups = [params] if isinstance(params, dict) else list(params)
        if len(groups) == 0:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # --- hooks for subclasses ---------------------------------------------------
    def _check_group(self, group: Dict[str, Any]) -> None:
        """Validate and normalise (to Python floats / bools) a group's options."""
        owner = type(self).__name__
        if "lr" in group:
            v = _real(owner, "lr", group["lr"])
            if not v >= 0.0:
                raise ValueError(f"{owner}: invalid learning rate lr={group['lr']!r}, must be >= 0")
            group["lr"] = v
        for name in ("weight_decay", "l1", "eps"):
            if name in group:
                group[name] = _nonneg(owner, name, group[name])
        if "maximize" in group:
            group["maximize"] = bool(group["maximize"])
        if "initial_lr" in group:
            group["initial_lr"] = _real(owner, "initial_lr", group["initial_lr"])

    def _init_state(self, p: Parameter, group: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    def _update(self, p: Parameter, g: np.ndarray, state: Dict[str, Any],
                group: Dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    # --- scratch buffers (not state: never saved) ---------------------------
    def _scratch(self, p: Parameter, slot: int) -> np.ndarray:
        """A scratch array shaped like ``p``; slot 0 holds the effective
        gradient, slots 1 and 2 are free for ``_update``. One flat buffer per
        (dtype, slot) is shared by all parameters, so the extra memory is a few
        times the largest parameter, not the model size."""
        dtype = p.data.dtype
        key = (dtype.str, slot)
        buf = self._pool.get(key)
        n = p.data.size
        if buf is None or buf.size < n:
            buf = np.empty(n, dtype=dtype)
            self._pool[key] = buf
        return buf[:n].reshape(p.data.shape)

    def _effective_grad(self, p: Parameter, group: Dict[str, Any]) -> np.ndarray:
        grad = p.grad
        if not isinstance(grad, np.ndarray):
            grad = np.asarray(grad)
        if grad.shape != p.data.shape:
            raise ValueError(f"{type(self).__name__}: gradient shape {grad.shape} does not "
                             f"match parameter shape {p.data.shape}")
        if grad.dtype != p.data.dtype:
            grad = grad.astype(p.data.dtype)
        maximize = group.get("maximize", False)
        wd = 0.0 if group.get("decoupled_weight_decay", False) else group.get("weight_decay", 0.0)
        l1 = group.get("l1", 0.0)
        if not (maximize or wd or l1):
            return grad  # read-only from here on
        g = self._scratch(p, 0)
        if maximize:
            np.negative(grad, out=g)
        else:
            np.copyto(g, grad)
        if l1:
            t = self._scratch(p, 1)
            np.sign(p.data, out=t)
            np.multiply(t, l1, out=t)
            np.add(g, t, out=g)
        if wd:
            t = self._scratch(p, 1)
            np.multiply(p.data, wd, out=t)
            np.add(g, t, out=g)
        return g

    # --- public API -----------------------------------------------------------
    def step(self, closure=None):
        """Update every parameter that has a gradient. ``closure`` (optional)
        re-evaluates the model and returns the loss, which is returned."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if not p.requires_grad or p.grad is None:
                    continue
                g = self._effective_grad(p, group)
                state = self.state.get(p)
                fresh = state is None
                if fresh:
                    state = self._init_state(p, group)
                self._update(p, g, state, group)
                if fresh and state:
                    self.state[p] = state
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to None (default) or to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.fill(0)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group of parameters with its own options (missing ones take the
        constructor's values), e.g. layers unfrozen while fine-tuning."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of a set changes between runs; use a list")
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError("optimizer can only optimize pyconv.nn.Parameter objects, "
                                f"but one of the params is {type(p).__name__}")
        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            raise ValueError("a parameter group contains the same parameter more than once")
        for other in self.param_groups:
            if set(ids) & {id(p) for p in other["params"]}:
                raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_group(group)
        self.param_groups.append(group)

    def state_dict(self) -> Dict[str, Any]:
        """Optimizer state as ``{'state': {index: {...}}, 'param_groups': [...]}``.

        Parameters are replaced by their index (counted across groups in
        order); arrays are copies, so later steps do not change the result."""
        index: Dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {
                        k: (v.copy() if isinstance(v, np.ndarray) else v)
                        for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (deep-copied; arrays cast to the parameter's
        dtype). The optimizer must have the same number of groups with the same
        number of parameters; state arrays must have their parameter's shape.
        Hyper-parameters (lr ...) come from the saved groups. Nothing changes
        if a ValueError is raised."""
        owner = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError(f"{owner}.load_state_dict: expected a dict with 'state' and "
                             "'param_groups' entries")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{owner}.load_state_dict: loaded state dict has {len(saved_groups)} parameter "
                f"groups, the optimizer has {len(self.param_groups)}")
        id_map: Dict[int, Parameter] = {}
        new_groups = []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            saved_ids = [int(k) for k in saved["params"]]
            if len(saved_ids) != len(group["params"]):
                raise ValueError(
                    f"{owner}.load_state_dict: parameter group {i} has {len(saved_ids)} "
                    f"parameters in the loaded state dict, {len(group['params'])} in the optimizer")
            missing = sorted(set(self.defaults) - set(saved))
            if missing:
                raise ValueError(f"{owner}.load_state_dict: parameter group {i} lacks the "
                                 f"options {missing} (state dict of another optimizer?)")
            for k, p in zip(saved_ids, group["params"]):
                id_map[k] = p
            new = {k: _plain(copy.deepcopy(v)) for k, v in saved.items() if k != "params"}
            self._check_group(new)
            new["params"] = group["params"]
            new_groups.append(new)
        new_state: Dict[Parameter, Dict[str, Any]] = {}
        for k, pstate in state_dict["state"].items():
            try:
                p = id_map[int(k)]
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{owner}.load_state_dict: state for parameter index {k!r}, "
                                 f"which no parameter group lists") from None
            entry = {}
            for name, v in pstate.items():
                if name in self._scalar_state:
                    entry[name] = int(np.asarray(v).item()) if name == "step" else v
                elif v is None or isinstance(v, (bool, int, float)):
                    entry[name] = v
                else:
                    arr = np.asarray(v)
                    if arr.shape != p.data.shape:
                        raise ValueError(
                            f"{owner}.load_state_dict: state '{name}' of parameter {k} has shape "
                            f"{arr.shape}, the parameter has shape {p.data.shape}")
                    entry[name] = np.array(arr, dtype=p.data.dtype, copy=True, order="C")
            new_state[p] = entry
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = new_state

    def __repr__(self) -> str:
        s = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    s += f"    {key}: {group[key]}\n"
        return s + ")"


# --------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    With ``g`` the effective gradient (module docstring) and ``mu`` the
    momentum::

        b = g                                 first step
        b = mu * b + (1 - dampening) * g      later steps
        g = g + mu * b if nesterov else b     (only when mu != 0)
        p = p - lr * g
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 nesterov: bool = False, weight_decay: float = 0, maximize: bool = False,
                 l1: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay,
                                      maximize=maximize, l1=l1))

    def _check_group(self, group):
        super()._check_group(group)
        group["momentum"] = _nonneg("SGD", "momentum", group["momentum"])
        group["dampening"] = _real("SGD", "dampening", group["dampening"])
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "SGD: nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, p, g, state, group):
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        if _fusable(p, g) and (buf is None or _fusable(p, buf)):
            mode = 0
            if momentum != 0:
                mode = 1 if buf is None else 2
                if buf is None:
                    buf = state["momentum_buffer"] = np.empty_like(p.data)
            _C.sgd_update(p.data, g, buf, group["lr"], momentum, group["dampening"],
                          group["nesterov"], mode)
            return
        t = self._scratch(p, 1)
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=p.data.dtype, copy=True)
            else:
                np.multiply(buf, momentum, out=buf)
                np.multiply(g, 1 - group["dampening"], out=t)
                np.add(buf, t, out=buf)
            if group["nesterov"]:
                np.multiply(buf, momentum, out=t)
                np.add(g, t, out=t)
                g = t
            else:
                g = buf
        np.multiply(g, group["lr"], out=t)
        np.subtract(p.data, t, out=p.data)


class Adagrad(Optimizer):
    """Adagrad: per-element learning rates from the sum of squared gradients.

    ::

        step += 1
        clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g * g                     (sum starts at initial_accumulator_value)
        p = p - clr * g / (sqrt(sum) + eps)
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10,
                 maximize: bool = False, l1: float = 0.0):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize, l1=l1))

    def _check_group(self, group):
        super()._check_group(group)
        group["lr_decay"] = _nonneg("Adagrad", "lr_decay", group["lr_decay"])
        group["initial_accumulator_value"] = _nonneg(
            "Adagrad", "initial_accumulator_value", group["initial_accumulator_value"])

    def _init_state(self, p, group):
        return {"step": 0,
                "sum": np.full(p.data.shape, group["initial_accumulator_value"], p.data.dtype)}

    def _update(self, p, g, state, group):
        state["step"] += 1
        step = state["step"]
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        s = state["sum"]
        t, u = self._scratch(p, 1), self._scratch(p, 2)
        np.multiply(g, g, out=t)
        np.add(s, t, out=s)
        np.sqrt(s, out=t)
        np.add(t, group["eps"], out=t)
        np.divide(g, t, out=u)
        np.multiply(u, clr, out=u)
        np.subtract(p.data, u, out=p.data)


class Adadelta(Optimizer):
    """Adadelta: step sizes from running averages of squared gradients and
    squared updates.

    ::

        v = rho * v + (1 - rho) * g * g
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d
        p = p - lr * d
    """

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, maximize: bool = False, l1: float = 0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, l1=l1))

    def _check_group(self, group):
        super()._check_group(group)
        rho = _real("Adadelta", "rho", group["rho"])
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Adadelta: invalid rho={group['rho']!r}, must be in [0, 1]")
        group["rho"] = rho

    def _init_state(self, p, group):
        return {"step": 0, "square_avg": np.zeros_like(p.data),
                "acc_delta": np.zeros_like(p.data)}

    def _update(self, p, g, state, group):
        state["step"] += 1
        rho, eps = group["rho"], group["eps"]
        v, u = state["square_avg"], state["acc_delta"]
        t1, t2 = self._scratch(p, 1), self._scratch(p, 2)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1 - rho, out=t1)
        np.multiply(v, rho, out=v)
        np.add(v, t1, out=v)
        np.add(v, eps, out=t1)
        np.sqrt(t1, out=t1)                    # std
        np.add(u, eps, out=t2)
        np.sqrt(t2, out=t2)
        np.divide(t2, t1, out=t2)
        np.multiply(t2, g, out=t2)             # delta
        np.multiply(t2, t2, out=t1)
        np.multiply(t1, 1 - rho, out=t1)
        np.multiply(u, rho, out=u)
        np.add(u, t1, out=u)
        np.multiply(t2, group["lr"], out=t2)
        np.subtract(p.data, t2, out=p.data)


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum.

    ::

        v = alpha * v + (1 - alpha) * g * g
        if centered:  m = m + (1 - alpha) * (g - m);  a = sqrt(v - m * m) + eps
        else:         a = sqrt(v) + eps
        if momentum > 0:  b = momentum * b + g / a;  p = p - lr * b
        else:             p = p - lr * g / a
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 maximize: bool = False, l1: float = 0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize, l1=l1))

    def _check_group(self, group):
        super()._check_group(group)
        group["momentum"] = _nonneg("RMSprop", "momentum", group["momentum"])
        group["alpha"] = _nonneg("RMSprop", "alpha", group["alpha"])
        group["centered"] = bool(group["centered"])

    def _init_state(self, p, group):
        state = {"step": 0, "square_avg": np.zeros_like(p.data)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = np.zeros_like(p.data)
        if group["centered"]:
            state["grad_avg"] = np.zeros_like(p.data)
        return state

    def _update(self, p, g, state, group):
        state["step"] += 1
        alpha = group["alpha"]
        v = state["square_avg"]
        t1, t2 = self._scratch(p, 1), self._scratch(p, 2)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1 - alpha, out=t1)
        np.multiply(v, alpha, out=v)
        np.add(v, t1, out=v)
        if group["centered"]:
            m = state["grad_avg"]
            _lerp_(m, g, 1 - alpha, t1)
            np.multiply(m, m, out=t1)
            np.subtract(v, t1, out=t1)
            np.sqrt(t1, out=t1)
        else:
            np.sqrt(v, out=t1)
        np.add(t1, group["eps"], out=t1)
        np.divide(g, t1, out=t2)
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            np.multiply(buf, group["momentum"], out=buf)
            np.add(buf, t2, out=buf)
            np.multiply(buf, group["lr"], out=t2)
        else:
            np.multiply(t2, group["lr"], out=t2)
        np.subtract(p.data, t2, out=p.data)


class Adam(Optimizer):
    """Adam (and AMSGrad); ``decoupled_weight_decay=True`` gives AdamW.

    ::

        step += 1
        p = p * (1 - lr * weight_decay)            only if decoupled
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v); use vmax for v        only if amsgrad
        denom = sqrt(v) / sqrt(1 - beta2**step) + eps
        p = p - lr / (1 - beta1**step) * m / denom
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, maximize: bool = False,
                 l1: float = 0.0, decoupled_weight_decay: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, l1=l1,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        super()._check_group(group)
        owner = type(self).__name__
        betas = group["betas"]
        try:
            betas = tuple(betas)
        except TypeError:
            betas = (betas,)
        if len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {group['betas']!r}")
        checked = []
        for i, b in enumerate(betas):
            b = _real(owner, f"betas[{i}]", b)
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{owner}: invalid beta parameter at index {i}: "
                                 f"betas[{i}]={b!r}, must be in [0, 1)")
            checked.append(b)
        group["betas"] = tuple(checked)
        group["amsgrad"] = bool(group["amsgrad"])
        group["decoupled_weight_decay"] = bool(group["decoupled_weight_decay"])

    def _init_state(self, p, group):
        state = {"step": 0, "exp_avg": np.zeros_like(p.data), "exp_avg_sq": np.zeros_like(p.data)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(p.data)
        return state

    def _update(self, p, g, state, group):
        state["step"] += 1
        step = state["step"]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        vmax = state.get("max_exp_avg_sq") if group["amsgrad"] else None
        if _fusable(p, g, state["exp_avg"], state["exp_avg_sq"], *([vmax] if group["amsgrad"] else [])):
            decoupled = group["decoupled_weight_decay"] and group["weight_decay"] != 0
            _C.adam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"], vmax, decoupled,
                           1 - lr * group["weight_decay"], 1 - beta1, abs(1 - beta1) >= 0.5, beta2,
                           (1 - beta2 ** step) ** 0.5, group["eps"], lr / (1 - beta1 ** step))
            return
        if group["decoupled_weight_decay"] and group["weight_decay"] != 0:
            np.multiply(p.data, 1 - lr * group["weight_decay"], out=p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        t1, t2 = self._scratch(p, 1), self._scratch(p, 2)
        _lerp_(m, g, 1 - beta1, t1)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1 - beta2, out=t1)
        np.multiply(v, beta2, out=v)
        np.add(v, t1, out=v)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        np.sqrt(v, out=t1)
        np.divide(t1, bias_correction2 ** 0.5, out=t1)
        np.add(t1, group["eps"], out=t1)
        np.divide(m, t1, out=t2)
        np.multiply(t2, step_size, out=t2)
        np.subtract(p.data, t2, out=p.data)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``p = p * (1 - lr * weight_decay)``
    before the Adam step (weight decay never enters the moments). ``l1``, if
    given, is still added to the gradient. Otherwise the rule is :class:`Adam`'s."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False,
                 l1: float = 0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, l1=l1,
                         decoupled_weight_decay=True)

    def _check_group(self, group):
        super()._check_group(group)
        group["decoupled_weight_decay"] = True


# --------------------------------------------------------------------------
# gradient clipping
# --------------------------------------------------------------------------
def _grads(parameters) -> List[np.ndarray]:
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients in place so that their joint norm is at most ``max_norm``.

    The norm is taken over all gradients together as if concatenated into one
    vector (``norm_type`` p > 0, or ``inf`` for the largest magnitude), in
    float64. Each gradient is multiplied by ``max_norm / (total + 1e-6)`` when
    that is below 1 (torch's rule; a NaN total makes the gradients NaN unless
    ``error_if_nonfinite``, which raises RuntimeError instead). Returns the
    total norm before clipping, as a Python float.
    """
    max_norm = _nonneg("clip_grad_norm_", "max_norm", max_norm)
    p = float(norm_type)
    if not (p > 0):
        raise ValueError(f"clip_grad_norm_: norm_type={norm_type!r} must be > 0 or inf")
    grads = _grads(parameters)
    if not grads:
        return 0.0
    if p == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    else:
        acc = 0.0
        for g in grads:
            flat = g.reshape(-1)
            if p == 2.0:
                acc += float(np.einsum("i,i->", flat, flat, dtype=np.float64))
            elif p == 1.0:
                acc += float(np.sum(np.abs(flat), dtype=np.float64))
            else:
                acc += float(np.sum(np.power(np.abs(flat, dtype=np.float64), p)))
        total = acc ** (1.0 / p) if math.isfinite(acc) else acc
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            f"non-finite ({total}), so it cannot be clipped. To disable this error and scale "
            "the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # NaN coef scales too, like torch
        for g in grads:
            np.multiply(g, coef, out=g)
    return total


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place."""
    clip_value = _nonneg("clip_grad_value_", "clip_value", clip_value)
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)


# --------------------------------------------------------------------------
# learning-rate schedulers
# --------------------------------------------------------------------------
class LRScheduler:
    """Base class of the epoch-indexed schedulers (torch's chainable form).

    The constructor records ``group['initial_lr']`` (from ``group['lr']`` when
    ``last_epoch == -1``; it must already be there when resuming), sets
    ``base_lrs`` and takes one initial step, so ``last_epoch`` becomes 0. Each
    ``step()`` (call it after ``optimizer.step()``) increments ``last_epoch``
    and writes ``get_lr()`` into the groups; ``get_last_lr()`` returns them.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral) \
                or last_epoch < -1:
            raise ValueError(f"{type(self).__name__}: invalid last_epoch={last_epoch!r}, "
                             "must be an int >= -1")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                                   "when resuming a scheduler with last_epoch >= 0")
        self.base_lrs: List[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> List[float]:
        """The learning rates for the current ``last_epoch`` (called by step)."""
        raise NotImplementedError

    def _current_lrs(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        self._step_count += 1
        self.last_epoch += 1
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = self._current_lrs()

    def get_last_lr(self) -> List[float]:
        """The learning rates set by the last step, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> Dict[str, Any]:
        """Every attribute but the optimizer (lists copied)."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k not in ("optimizer", "_is_initial")}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if key in state_dict and len(state_dict[key]) != n:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has "
                                 f"{len(state_dict[key])} entries, the optimizer has {n} "
                                 "param groups")
        def plain(v):
            if isinstance(v, np.ndarray) and v.ndim > 0:
                return v.tolist()
            if isinstance(v, (list, tuple)):
                return [_plain(x) for x in v]
            return _plain(v)

        self.__dict__.update({k: plain(v) for k, v in state_dict.items()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.get_last_lr()})"


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs:
    ``lr = initial_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1):
        self.step_size = _int_at_least("StepLR", "step_size", step_size, 1)
        self.gamma = _real("StepLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each milestone epoch (by
    ``gamma ** k`` at a milestone listed k times):
    ``lr = initial_lr * gamma ** (number of milestones <= epoch)``."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1):
        ms = list(milestones)
        for m in ms:
            _int_at_least("MultiStepLR", "milestones entry", m, 0)
        if ms != sorted(ms):
            raise ValueError(f"MultiStepLR: milestones={ms} must be increasing")
        self.milestones = Counter(int(m) for m in ms)
        self.gamma = _real("MultiStepLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def state_dict(self):
        state = super().state_dict()
        state["milestones"] = tuple(sorted(self.milestones.elements()))
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.milestones = Counter(int(m) for m in self.milestones)


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every epoch:
    ``lr = initial_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = _real("ExponentialLR", "gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``initial_lr`` to ``eta_min`` over ``T_max`` epochs
    (then back up, periodically; no restarts):
    ``lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Like torch, the value is computed recursively from the current ``lr`` (so
    changes made by others compose), which equals the closed form above up to
    rounding when nothing else touches the learning rate.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        self.T_max = _int_at_least("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = _real("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        e, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and e > 0:
            return [eta_min + (base_lr - eta_min) * (1 + math.cos(e * math.pi / T)) / 2
                    for base_lr in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (group["lr"] - eta_min) + eta_min
                for group in groups]


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    ``step(metric)`` once per epoch. A metric is an improvement when it beats
    the best so far by ``threshold`` (relative: ``best * (1 -+ threshold)``;
    absolute: ``best -+ threshold``; for mode 'min' / 'max'). After more than
    ``patience`` epochs without improvement, ``lr = max(lr * factor, min_lr)``
    (skipped when the change is <= ``eps``), followed by ``cooldown`` epochs in
    which bad epochs are not counted. Unlike the other schedulers it does not
    set ``initial_lr`` (as in torch).
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr=0, eps: float = 1e-8):
        owner = "ReduceLROnPlateau"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        factor = _real(owner, "factor", factor)
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"{owner}: invalid factor={factor!r}, must be in [0, 1)")
        self.factor = factor
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"{owner}: expected {n} min_lrs (one per param group), "
                                 f"got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = [_nonneg(owner, "min_lr", v) for v in min_lr]
        else:
            self.default_min_lr = _nonneg(owner, "min_lr", min_lr)
            self.min_lrs = [self.default_min_lr] * n
        self.patience = _int_at_least(owner, "patience", patience, 0)
        self.cooldown = _int_at_least(owner, "cooldown", cooldown, 0)
        self.eps = _nonneg(owner, "eps", eps)
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self._init_is_better(mode, _nonneg(owner, "threshold", threshold), threshold_mode)
        self._reset()

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode={mode!r} is unknown, use 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode={threshold_mode!r} is unknown, "
                             "use 'rel' or 'abs'")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _reset(self):
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics) -> None:  # type: ignore[override]
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau: the optimizer has {len(groups)} param groups, "
                    f"but min_lr has {len(self.min_lrs)} entries (a group was added?)")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, group in enumerate(groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
