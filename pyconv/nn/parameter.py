"""Parameter: a trainable NumPy array with its gradient.

Kernels overwrite, modules accumulate: a module's backward adds its fresh
gradient into ``Parameter.grad`` with :meth:`Parameter.accumulate_grad`, and
``zero_grad()`` resets it to None (PyTorch's default ``set_to_none=True``).
Optimizers skip parameters whose ``grad`` is None or whose ``requires_grad``
is False.
"""
from __future__ import annotations

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter:
    """A trainable array: ``.data`` (float32 or float64 ndarray), ``.grad``
    (same shape and dtype, or None) and ``.requires_grad``."""

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        arr = np.array(data, copy=True)
        if arr.dtype not in _FLOATS:
            if arr.dtype.kind in "biu":
                arr = arr.astype(np.float32)
            else:
                raise TypeError(f"Parameter: data must be float32 or float64, got dtype {arr.dtype}")
        self.data = np.require(arr, requirements="C")  # keeps 0-d arrays 0-d
        self.grad = None
        self.requires_grad = bool(requires_grad)

    # --- array-like conveniences -------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def numpy(self) -> np.ndarray:
        return self.data

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self) -> str:
        rg = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{rg})"

    # --- gradients ------------------------------------------------------------
    def accumulate_grad(self, g: np.ndarray, take: bool = False) -> None:
        """Add ``g`` into ``.grad`` (allocating it on first use). A no-op when
        ``requires_grad`` is False. ``take=True`` says ``g`` is a fresh array
        that nothing else refers to (the layers pass the functional backward's
        results): when ``.grad`` is None, a C-contiguous, writable ``g`` of the
        parameter's dtype becomes ``.grad`` itself instead of being copied."""
        if not self.requires_grad:
            return
        if g.shape != self.data.shape:
            raise ValueError(
                f"Parameter.accumulate_grad: gradient shape {g.shape} does not match "
                f"parameter shape {self.data.shape}")
        if self.grad is None:
            if (take and isinstance(g, np.ndarray) and g.dtype == self.data.dtype
                    and g.flags.c_contiguous and g.flags.writeable):
                self.grad = g
            else:
                self.grad = np.array(g, dtype=self.data.dtype, copy=True, order="C")
        else:
            np.add(self.grad, g, out=self.grad, casting="unsafe")

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad.fill(0)

    def requires_grad_(self, requires_grad: bool = True) -> "Parameter":
        self.requires_grad = bool(requires_grad)
        if not self.requires_grad:
            self.grad = None
        return self
