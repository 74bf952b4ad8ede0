"""Weight initialisation, as ``torch.nn.init``, and pyconv's global random generator.

Every function fills its argument (a :class:`~pyconv.nn.Parameter` or a
float ndarray) in place and returns it. Random draws come from one global
NumPy ``Generator`` shared with :class:`~pyconv.nn.Dropout`; seed it with
:func:`pyconv.manual_seed` for reproducible models. The formulas are
PyTorch's (``fan_in`` / ``fan_out`` / gain), so a pyconv layer starts with
the same distribution as its PyTorch twin (not the same numbers: the
generators differ).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

from .parameter import Parameter

__all__ = [
    "manual_seed", "get_rng", "get_rng_state", "set_rng_state",
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
    "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
]

_rng = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed pyconv's global generator (initialisation and dropout); returns it."""
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be >= 0, got {seed}")
    _rng = np.random.default_rng(int(seed))
    return _rng


def get_rng() -> np.random.Generator:
    """The global generator used by initialisation and dropout."""
    return _rng


def get_rng_state() -> dict:
    """The global generator's state (a JSON-serialisable dict), for checkpoints."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    global _rng
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError("set_rng_state: expected a dict from get_rng_state()")
    bg = getattr(np.random, state["bit_generator"], None)
    if bg is None:
        raise ValueError(f"set_rng_state: unknown bit generator {state['bit_generator']!r}")
    b = bg()
    b.state = state
    _rng = np.random.Generator(b)


def _array(tensor, fn: str) -> np.ndarray:
    a = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        raise TypeError(f"{fn}: expected a Parameter or a float ndarray, got {type(tensor).__name__}")
    if not a.flags.writeable:
        raise ValueError(f"{fn}: the array is read-only")
    return a


def _fans(a: np.ndarray, fn: str):
    if a.ndim < 2:
        raise ValueError(f"{fn}: fan in and fan out need at least 2 dims, got shape {a.shape}")
    receptive = int(np.prod(a.shape[2:])) if a.ndim > 2 else 1
    return a.shape[1] * receptive, a.shape[0] * receptive


def _fan(a, mode, fn):
    fan_in, fan_out = _fans(a, fn)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"{fn}: mode must be 'fan_in' or 'fan_out', got {mode!r}")


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real):
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + float(slope) ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fill(a, values):
    a[...] = values
    return a


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with U(a, b)."""
    arr = _array(tensor, "uniform_")
    if not b >= a:
        raise ValueError(f"uniform_: need a <= b, got a={a}, b={b}")
    _fill(arr, (generator or _rng).uniform(a, b, size=arr.shape))
    return tensor


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """Fill with N(mean, std^2)."""
    arr = _array(tensor, "normal_")
    if not std >= 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    _fill(arr, (generator or _rng).normal(mean, std, size=arr.shape))
    return tensor


def constant_(tensor, val: float):
    """Fill with a constant."""
    _array(tensor, "constant_")[...] = val
    return tensor


def zeros_(tensor):
    """Fill with zeros."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with ones."""
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None):
    """He uniform: U(-bound, bound), bound = gain * sqrt(3 / fan).

    ``Conv2d`` and ``Linear`` use ``a=sqrt(5)`` like PyTorch's default, which
    gives bound = 1 / sqrt(fan_in).
    """
    arr = _array(tensor, "kaiming_uniform_")
    fan = _fan(arr, mode, "kaiming_uniform_")
    if fan == 0:
        return tensor
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    _fill(arr, (generator or _rng).uniform(-bound, bound, size=arr.shape))
    return tensor


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None):
    """He normal: N(0, std^2), std = gain / sqrt(fan)."""
    arr = _array(tensor, "kaiming_normal_")
    fan = _fan(arr, mode, "kaiming_normal_")
    if fan == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    _fill(arr, (generator or _rng).normal(0.0, std, size=arr.shape))
    return tensor


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    arr = _array(tensor, "xavier_uniform_")
    fan_in, fan_out = _fans(arr, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / max(fan_in + fan_out, 1))
    _fill(arr, (generator or _rng).uniform(-bound, bound, size=arr.shape))
    return tensor


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    arr = _array(tensor, "xavier_normal_")
    fan_in, fan_out = _fans(arr, "xavier_normal_")
    std = gain * math.sqrt(2.0 / max(fan_in + fan_out, 1))
    _fill(arr, (generator or _rng).normal(0.0, std, size=arr.shape))
    return tensor
