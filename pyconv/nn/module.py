"""Module: the base class of layers, plus the containers Sequential and Residual.

A module's ``forward(x)`` computes its output and keeps what its
``backward(grad_output)`` needs (the cache); ``backward`` returns the
gradient with respect to the input and *adds* the parameter gradients into
each ``Parameter.grad`` (kernels overwrite, modules accumulate). There is no
autograd tape: a container calls its children's ``backward`` in reverse
order. A module therefore remembers one forward at a time; calling it twice
before ``backward`` keeps only the second call's cache.

``backward`` takes one optional keyword, ``need_input_grad``: when False the
module may skip the input gradient and return None. Containers pass False to
their first layer (nothing upstream wants it), and skip the backward of
leading layers that hold no trainable parameter at all, which is what makes a
frozen convolutional base cheap when fine-tuning.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from .parameter import Parameter

__all__ = ["Module", "Sequential", "Residual", "Identity"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_dtype(dtype, where: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


class IncompatibleKeys(NamedTuple):
    missing_keys: List[str]
    unexpected_keys: List[str]


class Module:
    """Base class of every layer and model.

    Subclasses set Parameters, sub-Modules and buffers as attributes (buffers
    with :meth:`register_buffer`); they are found by name, in assignment
    order, for :meth:`parameters`, :meth:`state_dict` and the repr.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_call_hooks", None)

    # --- attribute registration ---------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called "
                f"(call super().__init__() first in {type(self).__name__}.__init__)")
        params, mods, bufs = self._parameters, self._modules, self._buffers
        if isinstance(value, Parameter):
            mods.pop(name, None)
            bufs.pop(name, None)
            self.__dict__.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            bufs.pop(name, None)
            self.__dict__.pop(name, None)
            mods[name] = value
        elif name in bufs:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} "
                                "(an ndarray or None is required)")
            bufs[name] = value
        elif name in params or name in mods:
            if value is not None:
                kind = "parameter" if name in params else "module"
                raise TypeError(f"cannot assign {type(value).__name__} to {kind} {name!r} "
                                f"(a {'Parameter' if kind == 'parameter' else 'Module'} or None "
                                "is required)")
            (params if name in params else mods)[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_modules", "_buffers"):
            s = d.get(store)
            if s is not None and name in s:
                return s[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in (self._parameters, self._modules, self._buffers):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Optional[np.ndarray]) -> None:
        """Register a non-trainable array saved in the state dict (e.g. BatchNorm's running_mean)."""
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"register_buffer: {name!r} must be an ndarray or None, "
                            f"got {type(array).__name__}")
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self._modules[name] = module

    # --- compute --------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output, need_input_grad: bool = True):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *args, **kwargs):
        y = self.forward(*args, **kwargs)
        if self._call_hooks:
            for hook in self._call_hooks:
                hook(self, args, y)
        return y

    def _no_cache(self):
        return RuntimeError(f"{type(self).__name__}.backward() called before forward(): "
                            "run the forward pass first")

    # --- traversal --------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo=None) -> Iterator[Tuple[str, "Module"]]:
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[Tuple[str, Parameter]]:
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mp}.{name}" if mp else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, np.ndarray]]:
        for mp, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{name}" if mp else name), b

    def buffers(self) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- modes and gradients -------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active, batch norm uses batch statistics)."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Inference mode; same as ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter, e.g. a pretrained base."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def _has_trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    # --- dtype ------------------------------------------------------------------
    def astype(self, dtype) -> "Module":
        """Convert parameters, gradients and float buffers to float32 or float64, in place.

        Create the optimizer after converting: optimizer state keeps the old dtype.
        """
        dt = _float_dtype(dtype, "Module.astype")
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None and p.data.dtype != dt:
                    p.data = p.data.astype(dt)
                    if p.grad is not None:
                        p.grad = p.grad.astype(dt)
            for name, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f" and b.dtype != dt:
                    m._buffers[name] = b.astype(dt)
        return self

    def double(self) -> "Module":
        return self.astype(np.float64)

    def float(self) -> "Module":
        return self.astype(np.float32)

    @property
    def dtype(self) -> np.dtype:
        """dtype of the first parameter (float32 for parameter-free modules)."""
        for p in self.parameters():
            return p.data.dtype
        return np.dtype(np.float32)

    # --- state dict ---------------------------------------------------------
    def _state_entries(self):
        """(key, owner module, kind 'p' or 'b', name) of every saved parameter and buffer."""
        for mp, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    yield (f"{mp}.{name}" if mp else name), m, "p", name
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{name}" if mp else name), m, "b", name

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and buffer, keyed like PyTorch ('0.weight', 'bn.running_mean')."""
        return OrderedDict(
            (key, (m._parameters[name].data if kind == "p" else m._buffers[name]).copy())
            for key, m, kind, name in self._state_entries())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters and buffers, in place.

        Values may be NumPy arrays or anything ``np.asarray`` accepts (a CPU
        torch tensor from ``model.state_dict()`` included); they are cast to the
        parameter's dtype. Shapes must match exactly. With ``strict`` (default)
        missing or unexpected keys raise a KeyError listing them; otherwise
        they are returned as ``(missing_keys, unexpected_keys)``. Nothing is
        modified unless every check passes.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict, got {type(state_dict).__name__}")
        targets: Dict[str, tuple] = {key: (kind, m, name)
                                     for key, m, kind, name in self._state_entries()}
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: " + "; ".join(parts))
        staged = []
        for key, (kind, m, name) in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
                value = value.detach().cpu().numpy()
            arr = np.asarray(value)
            current = m._parameters[name].data if kind == "p" else m._buffers[name]
            if arr.shape != current.shape:
                raise ValueError(f"load_state_dict: {key!r} has shape {arr.shape} in the "
                                 f"state dict but {current.shape} in the model")
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {key!r} has dtype {arr.dtype}, not numeric")
            staged.append((current, arr))
        for current, arr in staged:
            current[...] = arr.astype(current.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # --- repr and summary -------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"

    def summary(self, input_shape, dtype=None) -> str:
        """A table of layers, output shapes, parameter counts and forward FLOPs.

        ``input_shape`` is the shape of one batch, e.g. ``(1, 1, 28, 28)``. The
        model runs once on zeros in eval mode (running statistics untouched);
        returns the table as a string (``print(model.summary(...))``).
        """
        shape = tuple(int(s) for s in input_shape)
        dt = self.dtype if dtype is None else _float_dtype(dtype, "summary")
        rows = []

        def hook(m, args, y):
            if m._modules and not isinstance(m, _SummaryLeaf):
                return
            out = y[0] if isinstance(y, tuple) else y
            nparams = sum(p.size for p in m.parameters(recurse=False))
            rows.append((m, tuple(np.shape(out)), nparams, m._flops(args, out)))

        mods = list(self.named_modules())
        names = {id(m): (n or type(self).__name__) for n, m in mods}
        saved = [(m, m.training) for _, m in mods]
        for _, m in mods:
            object.__setattr__(m, "_call_hooks", [hook])
        try:
            self.eval()
            self(np.zeros(shape, dtype=dt))
        finally:
            for m, t in saved:
                object.__setattr__(m, "_call_hooks", None)
                object.__setattr__(m, "training", t)
        header = ("Layer (type)", "Output shape", "Params", "MFLOPs")
        table = [(f"{names.get(id(m), '?')} ({type(m).__name__})", str(list(s)), f"{n:,}",
                  f"{f / 1e6:.2f}" if f else "-") for m, s, n, f in rows]
        widths = [max(len(r[i]) for r in table + [header]) for i in range(4)]
        fmt = "  ".join("{:<%d}" % w if i < 2 else "{:>%d}" % w for i, w in enumerate(widths))
        rule = "=" * (sum(widths) + 6)
        total = self.num_parameters()
        trainable = self.num_parameters(trainable_only=True)
        nbytes = sum(p.data.nbytes for p in self.parameters())
        flops = sum(r[3] for r in rows)
        out = [f"{type(self).__name__} on input {list(shape)} ({np.dtype(dt).name})", rule,
               fmt.format(*header), rule]
        out += [fmt.format(*r) for r in table]
        out += [rule,
                f"Total params: {total:,} ({nbytes / 2**20:.2f} MiB)",
                f"Trainable params: {trainable:,}",
                f"Non-trainable params: {total - trainable:,}",
                f"Forward FLOPs per batch: {flops / 1e6:,.2f} M"]
        return "\n".join(out)

    def _flops(self, args, out) -> int:
        """Forward floating-point operations of this leaf (2 per multiply-add); 0 if negligible."""
        return 0


class _SummaryLeaf:
    """Mixin: a container that summary() lists as one row (e.g. Residual's add)."""


def _as_float_input(x, dtype: np.dtype) -> np.ndarray:
    """The layer input as an ndarray of the module's dtype (the dtype policy)."""
    x = np.asarray(x)
    if x.dtype != dtype:
        if x.dtype.kind not in "biuf":
            raise TypeError(f"input must be a numeric array, got dtype {x.dtype}")
        x = x.astype(dtype)
    return x


class Identity(Module):
    """Returns its input unchanged."""

    def forward(self, x):
        return x

    def backward(self, grad_output, need_input_grad: bool = True):
        return grad_output


class Sequential(Module):
    """Modules applied in order; supports indexing, slicing, len, iteration and append.

    ``Sequential(a, b, c)`` names the children '0', '1', '2' (state-dict keys
    '0.weight', ...) as PyTorch does; ``Sequential(OrderedDict(...))`` uses the
    given names.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (OrderedDict, dict)):
            for name, m in modules[0].items():
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: {name!r} is a {type(m).__name__}, not a Module")
                self.add_module(str(name), m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        if isinstance(idx, bool) or not hasattr(idx, "__index__"):
            raise TypeError(f"Sequential indices must be int or slice, got {type(idx).__name__}")
        i = idx.__index__()
        if not -len(items) <= i < len(items):
            raise IndexError(f"index {i} is out of range for Sequential of length {len(items)}")
        return items[i][1]

    def __setitem__(self, idx, module):
        key = list(self._modules)[idx]
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: cannot set a {type(module).__name__}, not a Module")
        self._modules[key] = module

    def append(self, module: Module) -> "Sequential":
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, grad_output, need_input_grad: bool = True):
        mods = list(self._modules.values())
        trainable = [m._has_trainable() for m in mods]
        # trainable_before[i]: does any layer before i hold a trainable parameter?
        trainable_before = [False] * (len(mods) + 1)
        for i, t in enumerate(trainable):
            trainable_before[i + 1] = trainable_before[i] or t
        g = grad_output
        for i in range(len(mods) - 1, -1, -1):
            need_dx = need_input_grad or trainable_before[i]
            if not need_dx and not trainable[i]:
                return None  # nothing at or before this layer wants a gradient
            g = mods[i].backward(g, need_input_grad=need_dx)
        return g


class Residual(Module, _SummaryLeaf):
    """A skip-connection block: ``activation(main(x) + shortcut(x))``.

    ``shortcut`` defaults to the identity; give e.g. a 1x1 Conv2d + BatchNorm2d
    when the main branch changes the shape. ``activation`` (e.g. ReLU()) is
    optional. State-dict keys are 'main.*', 'shortcut.*' and 'activation.*'.
    """

    def __init__(self, main: Module, shortcut: Optional[Module] = None,
                 activation: Optional[Module] = None):
        super().__init__()
        for name, m in (("main", main), ("shortcut", shortcut), ("activation", activation)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"Residual: {name} must be a Module, got {type(m).__name__}")
        self.main = main
        self.shortcut = shortcut if shortcut is not None else Identity()
        self.activation = activation

    def forward(self, x):
        a = self.main(x)
        b = self.shortcut(x)
        if np.shape(a) != np.shape(b):
            raise ValueError(f"Residual: main branch output {np.shape(a)} and shortcut output "
                             f"{np.shape(b)} differ; give a shortcut that matches the shape")
        y = np.add(a, b, dtype=np.result_type(a, b))
        return self.activation(y) if self.activation is not None else y

    def backward(self, grad_output, need_input_grad: bool = True):
        g = grad_output
        if self.activation is not None:
            g = self.activation.backward(g)
        ga = self.main.backward(g, need_input_grad=need_input_grad)
        gb = self.shortcut.backward(g, need_input_grad=need_input_grad)
        if not need_input_grad:
            return None
        return ga + gb
