"""What pyconv is measured against: PyTorch (optional) and a pure-NumPy im2col baseline.

The NumPy baseline is the textbook formulation (Caffe's): ``sliding_window_view``
builds the column matrix, one batched ``matmul`` per direction does the
arithmetic, and backward-data scatters the columns back with one slice-add per
kernel tap (a Python loop over KH*KW taps, never over pixels). Run in float64
it is also the correctness reference when torch is not installed.

NumPy's matmul runs on its bundled OpenBLAS, whose thread pool is separate from
pyconv's OpenMP pool. :class:`BlasThreads` sets its size in-process: through
threadpoolctl when installed, else by calling OpenBLAS's own
``*openblas_set_num_threads*`` entry point (found in ``/proc/self/maps``) with
ctypes. ``OPENBLAS_NUM_THREADS`` cannot be used: it is read when numpy is
imported, which has happened before any bench code runs.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .shapes import ConvShape

__all__ = [
    "np_conv2d",
    "np_conv2d_input",
    "np_conv2d_weight",
    "np_cols_bytes",
    "BlasThreads",
    "load_torch",
    "torch_conv_fn",
]


# --------------------------------------------------------------------------
# NumPy im2col + matmul
# --------------------------------------------------------------------------
def np_cols_bytes(s: ConvShape, itemsize: int) -> int:
    """Size of the column matrix [G, C/G*KH*KW, N*OH*OW] the baseline materialises."""
    return s.N * s.C * s.KH * s.KW * s.OH * s.OW * itemsize


def _im2col(x: np.ndarray, s: ConvShape) -> np.ndarray:
    """x (N, C, H, W) -> cols (G, C/G*KH*KW, N*OH*OW), a fresh contiguous copy."""
    (sh, sw), (ph, pw), (dh, dw) = s.stride, s.pad, s.dil
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    ekh, ekw = dh * (s.KH - 1) + 1, dw * (s.KW - 1) + 1
    v = sliding_window_view(xp, (ekh, ekw), axis=(2, 3))  # (N, C, Hp-ekh+1, Wp-ekw+1, ekh, ekw)
    v = v[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, OH, OW, KH, KW)
    G, Cg = s.groups, s.C // s.groups
    v = v.reshape(s.N, G, Cg, s.OH, s.OW, s.KH, s.KW).transpose(1, 2, 5, 6, 0, 3, 4)
    return v.reshape(G, Cg * s.KH * s.KW, s.N * s.OH * s.OW)


def _dy_groups(dy: np.ndarray, s: ConvShape) -> np.ndarray:
    """dy (N, OC, OH, OW) -> (G, OC/G, N*OH*OW)."""
    G = s.groups
    return dy.reshape(s.N, G, s.OC // G, s.OH * s.OW).transpose(1, 2, 0, 3).reshape(
        G, s.OC // G, s.N * s.OH * s.OW)


def np_conv2d(x: np.ndarray, w: np.ndarray, s: ConvShape) -> np.ndarray:
    """y = conv2d(x, w) without bias: y_g = W_g @ im2col(x)_g."""
    G = s.groups
    wg = w.reshape(G, s.OC // G, -1)
    y = np.matmul(wg, _im2col(x, s))  # (G, OC/G, N*OH*OW)
    y = y.reshape(G, s.OC // G, s.N, s.OH, s.OW).transpose(2, 0, 1, 3, 4)
    return np.ascontiguousarray(y.reshape(s.y_shape))


def np_conv2d_weight(x: np.ndarray, dy: np.ndarray, s: ConvShape) -> np.ndarray:
    """dw_g = dy_g @ im2col(x)_g^T."""
    cols = _im2col(x, s)
    dw = np.matmul(_dy_groups(dy, s), cols.transpose(0, 2, 1))  # (G, OC/G, C/G*KH*KW)
    return dw.reshape(s.w_shape)


def np_conv2d_input(w: np.ndarray, dy: np.ndarray, s: ConvShape) -> np.ndarray:
    """dx = col2im(W_g^T @ dy_g): one strided slice-add per kernel tap."""
    (sh, sw), (ph, pw), (dh, dw) = s.stride, s.pad, s.dil
    G = s.groups
    wg = w.reshape(G, s.OC // G, -1)
    dcols = np.matmul(wg.transpose(0, 2, 1), _dy_groups(dy, s))  # (G, C/G*KH*KW, N*OH*OW)
    dcols = dcols.reshape(s.C, s.KH, s.KW, s.N, s.OH, s.OW)
    dxp = np.zeros((s.N, s.C, s.H + 2 * ph, s.W + 2 * pw), dtype=dcols.dtype)
    for i in range(s.KH):
        for j in range(s.KW):
            y0, x0 = i * dh, j * dw
            dxp[:, :, y0:y0 + sh * (s.OH - 1) + 1:sh, x0:x0 + sw * (s.OW - 1) + 1:sw] += \
                dcols[:, i, j].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(dxp[:, :, ph:ph + s.H, pw:pw + s.W])


# --------------------------------------------------------------------------
# OpenBLAS thread count
# --------------------------------------------------------------------------
class BlasThreads:
    """Set / query the thread count of the BLAS behind numpy.matmul, in-process."""

    _SET_NAMES = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                  "scipy_openblas_set_num_threads_64_", "openblas_set_num_threads64_",
                  "scipy_openblas_set_num_threads")
    _GET_NAMES = ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_",
                  "scipy_openblas_get_num_threads_64_", "openblas_get_num_threads64_",
                  "scipy_openblas_get_num_threads")

    def __init__(self):
        self.method = "none"
        self.library = None
        self._limiter = None
        self._set = self._get = None
        try:
            import threadpoolctl  # noqa: F401

            self._tpc = threadpoolctl
            self.method = "threadpoolctl"
            info = [d for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
            self.library = info[0].get("filepath") if info else None
            self._initial = info[0].get("num_threads") if info else None
            return
        except ImportError:
            self._tpc = None
        lib = self._find_openblas()
        if lib is None:
            return
        try:
            dll = ctypes.CDLL(lib)
        except OSError:
            return
        for nm in self._SET_NAMES:
            if hasattr(dll, nm):
                self._set = getattr(dll, nm)
                self._set.argtypes, self._set.restype = [ctypes.c_int], None
                break
        for nm in self._GET_NAMES:
            if hasattr(dll, nm):
                self._get = getattr(dll, nm)
                self._get.argtypes, self._get.restype = [], ctypes.c_int
                break
        if self._set is not None:
            self.method = "ctypes openblas_set_num_threads"
            self.library = lib
        self._initial = self.get()

    @staticmethod
    def _find_openblas() -> Optional[str]:
        try:
            with open("/proc/self/maps") as f:
                paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
        except OSError:
            return None
        paths = sorted(p for p in paths if os.path.exists(p))
        return paths[0] if paths else None

    def get(self) -> Optional[int]:
        if self._tpc is not None:
            info = [d for d in self._tpc.threadpool_info() if d.get("user_api") == "blas"]
            return info[0].get("num_threads") if info else None
        return int(self._get()) if self._get is not None else None

    def set(self, n: int) -> bool:
        """True when the limit could be applied."""
        if self._tpc is not None:
            self._limiter = self._tpc.threadpool_limits(limits=int(n), user_api="blas")
            return True
        if self._set is not None:
            self._set(int(n))
            return True
        return False

    def restore(self) -> None:
        if self._initial is not None:
            self.set(self._initial)

    def describe(self) -> str:
        lib = os.path.basename(self.library) if self.library else "?"
        if self.method == "none":
            return f"numpy BLAS threads not controlled (library {lib}; default {self.get()})"
        return f"numpy BLAS {lib}, threads set via {self.method}"


# --------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------
def load_torch():
    """The torch module, or None when it is not installed (or fails to import)."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install
        return None
    return torch


def torch_conv_fn(torch, direction: str, x: np.ndarray, w: np.ndarray, dy: np.ndarray,
                  s: ConvShape):
    """A zero-argument callable running one direction in torch, returning a torch tensor.

    Arrays are shared with numpy (``torch.from_numpy``), so no copy is timed.
    bwd_d / bwd_w call ``aten.convolution_backward`` with a one-hot output_mask:
    the same kernels ``torch.nn.grad.conv2d_input`` / ``conv2d_weight`` reach,
    without their Python wrappers.
    """
    xt, wt, dyt = (torch.from_numpy(a) for a in (x, w, dy))
    stride, pad, dil, g = list(s.stride), list(s.pad), list(s.dil), s.groups
    F = torch.nn.functional
    cb = torch.ops.aten.convolution_backward
    if direction == "fwd":
        return lambda: F.conv2d(xt, wt, None, stride, pad, dil, g)
    if direction == "bwd_d":
        return lambda: cb(dyt, xt, wt, None, stride, pad, dil, False, [0, 0], g,
                          [True, False, False])[0]
    if direction == "bwd_w":
        return lambda: cb(dyt, xt, wt, None, stride, pad, dil, False, [0, 0], g,
                          [False, True, False])[1]
    raise ValueError(f"unknown direction {direction!r}")
