"""What pyconv is measured against: PyTorch (optional) and a pure-NumPy im2col baseline.

The NumPy baseline is the textbook formulation (Caffe's): ``sliding_window_view``
builds the column matrix, one batched ``matmul`` per direction does the
arithmetic, and backward-data scatters the columns back with one slice-add per
kernel tap (a Python loop over KH*KW taps, never over pixels). Run in float64
it is also the correctness reference when torch is not installed.

For the memory-bound ops (``--section ops``) torch's equivalents are the aten
kernels autograd runs (:func:`torch_op_fn`); without torch the float64
reference is :mod:`pyconv.testing.reference_ops` (direct loops) plus the NumPy
formulas for batch norm and reflect padding here (:func:`np_op_ref`), and the
NumPy number is a bare ufunc call, ``np.maximum(x, 0)``, the floor of what one
call from Python costs.

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

from .shapes import ConvShape, OpShape

__all__ = [
    "np_conv2d",
    "np_conv2d_input",
    "np_conv2d_weight",
    "np_cols_bytes",
    "BlasThreads",
    "load_torch",
    "torch_conv_fn",
    "torch_op_fn",
    "np_op_ref",
    "BN_EPS",
    "BN_MOMENTUM",
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


# --------------------------------------------------------------------------
# memory-bound ops
# --------------------------------------------------------------------------
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def torch_op_fn(torch, s: OpShape, direction: str, a: dict):
    """A zero-argument callable running op ``s.name`` in torch, returning a tensor or a
    tuple of tensors in the order pyconv returns them.

    ``a`` holds the NumPy inputs (see ``runner._op_inputs``): x, g (the output
    gradient), and for the backward the forward's products computed by pyconv
    (idx, y, mean, invstd), so both libraries differentiate the same forward.
    Backward ops are the aten kernels autograd calls, without autograd.
    """
    T = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) and v.ndim else v
         for k, v in a.items()}
    F = torch.nn.functional
    aten = torch.ops.aten
    op, fwd = s.name, direction == "fwd"
    x = T["x"]
    g = T.get("g")
    if op == "max_pool2d":
        k, st, p = [s.kernel] * 2, [s.stride] * 2, [s.pad] * 2
        if fwd:
            return lambda: F.max_pool2d(x, k, st, p, return_indices=True)
        idx = T["idx"]
        return lambda: aten.max_pool2d_with_indices_backward(g, x, k, st, p, [1, 1], False, idx)
    if op == "avg_pool2d":
        k, st, p = [s.kernel] * 2, [s.stride] * 2, [s.pad] * 2
        if fwd:
            return lambda: F.avg_pool2d(x, k, st, p)
        return lambda: aten.avg_pool2d_backward(g, x, k, st, p, False, True, None)
    if op == "adaptive_avg_pool2d":
        if fwd:
            return lambda: F.adaptive_avg_pool2d(x, 1)
        return lambda: aten._adaptive_avg_pool2d_backward(g, x)
    if op == "relu":
        return (lambda: F.relu(x)) if fwd else (lambda: aten.threshold_backward(g, x, 0))
    if op == "sigmoid":
        y = T.get("y")
        return (lambda: torch.sigmoid(x)) if fwd else (lambda: aten.sigmoid_backward(g, y))
    if op == "tanh":
        y = T.get("y")
        return (lambda: torch.tanh(x)) if fwd else (lambda: aten.tanh_backward(g, y))
    if op == "gelu":
        if fwd:
            return lambda: F.gelu(x)
        return lambda: aten.gelu_backward(g, x, approximate="none")
    if op == "softmax":
        y = T.get("y")
        if fwd:
            return lambda: torch.softmax(x, 1)
        return lambda: aten._softmax_backward_data(g, y, 1, x.dtype)
    if op == "log_softmax":
        y = T.get("y")
        if fwd:
            return lambda: torch.log_softmax(x, 1)
        return lambda: aten._log_softmax_backward_data(g, y, 1, x.dtype)
    if op == "cross_entropy":
        t = T["target"]
        if fwd:
            return lambda: F.cross_entropy(x, t)
        # autograd's backward of cross_entropy = log_softmax + nll_loss (mean):
        # nll_loss_backward, then _log_softmax_backward_data from the saved log-probs.
        lsm = torch.log_softmax(x, 1)
        gy = torch.tensor(float(a["g"]), dtype=x.dtype)
        total = torch.tensor(float(x.shape[0]), dtype=x.dtype)

        def ce_bwd():
            gl = aten.nll_loss_backward(gy, lsm, t, None, 1, -100, total)
            return aten._log_softmax_backward_data(gl, lsm, 1, x.dtype)
        return ce_bwd
    if op == "batch_norm":
        w, b = T["w"], T["b"]
        if fwd:
            rm, rv = torch.from_numpy(a["rm"].copy()), torch.from_numpy(a["rv"].copy())
            return lambda: aten.native_batch_norm(x, w, b, rm, rv, True, BN_MOMENTUM, BN_EPS)
        mean, invstd = T["mean"], T["invstd"]
        return lambda: aten.native_batch_norm_backward(g, x, w, None, None, mean, invstd, True,
                                                       BN_EPS, [True, True, True])
    if op == "pad_reflect":
        p = [s.pad] * 4
        if fwd:
            return lambda: F.pad(x, p, mode="reflect")
        return lambda: aten.reflection_pad2d_backward(g, x, p)
    raise ValueError(f"unknown op {op!r}")


def _np_batch_norm(x, w, b):
    """Training-mode batch norm in float64: (y, mean, invstd), biased variance."""
    axes = (0, 2, 3)
    mean = x.mean(axis=axes)
    var = ((x - mean[None, :, None, None]) ** 2).mean(axis=axes)
    invstd = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
    return xhat * w[None, :, None, None] + b[None, :, None, None], mean, invstd


def _np_batch_norm_backward(dy, x, w, mean, invstd):
    """(dx, dw, db) of training-mode batch norm with the given statistics."""
    axes = (0, 2, 3)
    m = x.size // x.shape[1]
    c = lambda v: v[None, :, None, None]  # noqa: E731
    xhat = (x - c(mean)) * c(invstd)
    db = dy.sum(axis=axes)
    dw = (dy * xhat).sum(axis=axes)
    dx = c(w * invstd) * (dy - c(db / m) - xhat * c(dw / m))
    return dx, dw, db


def _reflect_fold(n: int, p: int) -> np.ndarray:
    """(n, n + 2p) 0/1 matrix: column i (padded position) marks its source in the input."""
    i = np.abs(np.arange(-p, n + p))
    i = np.where(i >= n, 2 * (n - 1) - i, i)
    m = np.zeros((n, n + 2 * p))
    m[i, np.arange(n + 2 * p)] = 1.0
    return m


def _np_reflect_pad_backward(dy, x_shape, p):
    """Adjoint of np.pad(mode='reflect') on the last two axes: dx = Mh @ dy @ Mw^T."""
    H, W = x_shape[-2:]
    return _reflect_fold(H, p) @ dy @ _reflect_fold(W, p).T


def np_op_ref(s: OpShape, direction: str, a: dict):
    """The float64 reference without torch: :mod:`pyconv.testing.reference_ops` where
    it has the op, else NumPy formulas. ``a`` holds float64 inputs."""
    from pyconv.testing import reference_ops as R

    op, fwd = s.name, direction == "fwd"
    x, g = a["x"], a.get("g")
    if op == "max_pool2d":
        if fwd:
            return R.max_pool2d_ref(x, s.kernel, s.stride, s.pad)
        return R.max_pool_backward_indices_ref(g, a["idx"], x.shape)
    if op == "avg_pool2d":
        if fwd:
            return R.avg_pool2d_ref(x, s.kernel, s.stride, s.pad)
        return R.avg_pool2d_backward_ref(g, x.shape, s.kernel, s.stride, s.pad)
    if op == "adaptive_avg_pool2d":
        return R.adaptive_avg_pool2d_ref(x, 1) if fwd else \
            R.adaptive_avg_pool2d_backward_ref(g, x.shape)
    if op in ("relu", "gelu"):
        f = getattr(R, f"{op}_ref")
        return f(x) if fwd else getattr(R, f"{op}_backward_ref")(g, x)
    if op in ("sigmoid", "tanh", "softmax", "log_softmax"):
        return getattr(R, f"{op}_ref")(x) if fwd else getattr(R, f"{op}_backward_ref")(g, a["y"])
    if op == "cross_entropy":
        t = a["target"]
        return R.cross_entropy_ref(x, t) if fwd else \
            R.cross_entropy_backward_ref(float(g), x, t)
    if op == "batch_norm":
        if fwd:
            return _np_batch_norm(x, a["w"], a["b"])
        return _np_batch_norm_backward(g, x, a["w"], a["mean"], a["invstd"])
    if op == "pad_reflect":
        p = s.pad
        if fwd:
            return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
        return _np_reflect_pad_backward(g, x.shape, p)
    raise ValueError(f"unknown op {op!r}")
