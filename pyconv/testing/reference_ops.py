"""Float64 references for pooling, activations and losses (and their gradients).

The executable specification the compiled ops are tested against (DESIGN.md
rule 7: reference and fast path are different algorithms). Nothing here calls
pyconv. Pooling references loop in Python over output positions and over the
taps of each window (NumPy only vectorises the batch and channel axes);
softmax-like references loop over rows and sum with ``math.fsum``; maxout
loops over pieces; elementwise activations are written from their textbook
formulas in a numerically stable form (``erfc``, ``expm1``, sign-split
sigmoid), evaluated in float64. Every result is float64 whatever the input
dtype, so these are the reference for float16/32/64 and integer inputs alike.

Semantics are PyTorch's (CPU, 2.x), including non-finite values:

* max pooling: a tap replaces the running maximum when it is greater or NaN
  (so NaN wins, and with several NaNs the last one in row-major window order
  gives the index); ties keep the first index in row-major window order; the
  index of an all ``-inf`` window is its first in-input tap. Indices are flat
  positions ``iy * W + ix`` in the input plane.
* relu backward passes the gradient where the input is NaN (PyTorch tests
  ``result <= 0``); leaky_relu backward uses ``input > 0 ? g : g * slope``;
  elu backward follows PyTorch's scalar rule ``input <= 0 ? g*alpha*exp(x) : g``
  (so g at NaN; PyTorch's vectorised path gives NaN there, so tests accept both).
  gelu is NaN at -inf and its gradient NaN at +-inf (``inf * 0``), as PyTorch.
* max pooling windows with no tap inside the input (possible only with
  dilation, or with ceil_mode) are undefined: PyTorch returns -inf with an
  out-of-range index; the reference returns -inf and index -1. Tests avoid them.
* avg pooling divides by ``(min(hs + KH, H + ph) - hs) * (min(ws + KW, W + pw) - ws)``
  (window start ``hs = oy * sh - ph``; positions ceil_mode adds past the padded
  input are not counted) with count_include_pad, by the number of in-input
  positions without it; divisor_override replaces both.
* softmax / log_softmax: a row holding +inf or NaN (or only -inf) is all NaN;
  -inf entries of an otherwise finite row give probability 0 (log -inf).

Shapes (``x`` is (N, C, H, W) or unbatched (C, H, W) for pooling; kernel_size,
stride, padding, dilation and output_size take an int or a pair)::

    pool2d_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False) -> int
        one axis; ceil_mode drops a last window starting in the right padding

    max_pool2d_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False)
        -> (y, indices)         y float64 (N, C, OH, OW), indices int64 (N, C, OH, OW)
    max_pool2d_backward_ref(dy, x, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False) -> dx          (recomputes the argmax)
    max_pool_backward_indices_ref(dy, indices, input_shape) -> dx
        dy, indices (N, C, OH, OW) or (C, OH, OW); dx float64 of input_shape
        (dx[n, c].flat[indices[n, c, i, j]] += dy[n, c, i, j]; works for any indices)

    avg_pool2d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None) -> y (N, C, OH, OW)
    avg_pool2d_backward_ref(dy, input_shape, kernel_size, stride=None, padding=0,
                            ceil_mode=False, count_include_pad=True,
                            divisor_override=None) -> dx of input_shape

    adaptive_output_size(input_hw, output_size) -> (OH, OW)   (None keeps the input size)
    adaptive_avg_pool2d_ref(x, output_size) -> y (N, C, OH, OW)
    adaptive_avg_pool2d_backward_ref(dy, input_shape) -> dx of input_shape
    adaptive_max_pool2d_ref(x, output_size) -> (y, indices)
    adaptive_max_pool2d_backward_ref(dy, x) -> dx like x     (output size from dy)

    relu_ref(x) -> y;                 relu_backward_ref(dy, x) -> dx
    leaky_relu_ref(x, negative_slope=0.01); leaky_relu_backward_ref(dy, x, negative_slope=0.01)
    elu_ref(x, alpha=1.0);            elu_backward_ref(dy, x, alpha=1.0)
    sigmoid_ref(x);                   sigmoid_backward_ref(dy, y)     (y = forward output)
    tanh_ref(x);                      tanh_backward_ref(dy, y)        (y = forward output)
    gelu_ref(x, approximate='none');  gelu_backward_ref(dy, x, approximate='none')
        all elementwise: any shape, dx/y like x

    softmax_ref(x, axis=1);           softmax_backward_ref(dy, y, axis=1)
    log_softmax_ref(x, axis=1);       log_softmax_backward_ref(dy, y, axis=1)
        any shape with ndim >= 1; y = forward output; results like x

    maxout_ref(x, pieces, axis=1) -> y   x (..., C, ...), y (..., C // pieces, ...)
        y[j] = max(x[j*pieces], ..., x[j*pieces + pieces - 1]) along axis
    maxout_backward_ref(dy, x, pieces, axis=1) -> dx like x (to the first maximal piece)

    cross_entropy_ref(x, target, reduction='mean', label_smoothing=0.0) -> loss
    cross_entropy_backward_ref(dy, x, target, reduction='mean', label_smoothing=0.0) -> dx
        x logits (N, C); target int class indices (N,) or float probabilities (N, C)
        (rows need not sum to 1); with smoothing eps the target becomes
        (1 - eps) * target + eps / C; a -inf logit off the target class leaves an
        unsmoothed class-index loss finite, and gives NaN (0 * -inf) with probabilities;
        loss float64 scalar for 'mean' (sum / N) and 'sum', (N,) for 'none';
        dy scalar for 'mean'/'sum', (N,) for 'none'; dx (N, C)
    nll_loss_ref(x, target, reduction='mean');  nll_loss_backward_ref(dy, x, target, reduction='mean')
        x log-probabilities (N, C); target int (N,)
    mse_loss_ref(x, target, reduction='mean');  mse_loss_backward_ref(dy, x, target, reduction='mean')
        x and target the same (any) shape; 'mean' divides by x.size; dx like x
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

__all__ = [
    "pool2d_output_size",
    "max_pool2d_ref", "max_pool2d_backward_ref", "max_pool_backward_indices_ref",
    "avg_pool2d_ref", "avg_pool2d_backward_ref",
    "adaptive_output_size",
    "adaptive_avg_pool2d_ref", "adaptive_avg_pool2d_backward_ref",
    "adaptive_max_pool2d_ref", "adaptive_max_pool2d_backward_ref",
    "relu_ref", "relu_backward_ref",
    "leaky_relu_ref", "leaky_relu_backward_ref",
    "elu_ref", "elu_backward_ref",
    "sigmoid_ref", "sigmoid_backward_ref",
    "tanh_ref", "tanh_backward_ref",
    "gelu_ref", "gelu_backward_ref",
    "softmax_ref", "softmax_backward_ref",
    "log_softmax_ref", "log_softmax_backward_ref",
    "maxout_ref", "maxout_backward_ref",
    "cross_entropy_ref", "cross_entropy_backward_ref",
    "nll_loss_ref", "nll_loss_backward_ref",
    "mse_loss_ref", "mse_loss_backward_ref",
]


def _f64(a) -> np.ndarray:
    return np.array(a, dtype=np.float64, copy=True)


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _batch4(a: np.ndarray):
    if a.ndim == 3:
        return a[None], True
    if a.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) or (C, H, W), got shape {a.shape}")
    return a, False


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def pool2d_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                       ceil_mode: bool = False) -> int:
    """PyTorch's pooling output length along one axis; ValueError when it is < 1.

    ``floor_or_ceil((size + 2p - d(k-1) - 1) / s) + 1`` (floor division also for a
    negative numerator), and with ceil_mode a last window that would start in
    the right padding is dropped. With ceil_mode a window may reach past the
    padded input (PyTorch allows this).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ValueError(f"pooling output size {out} < 1 (size {size}, kernel {kernel}, "
                         f"stride {stride}, padding {padding}, dilation {dilation})")
    return out


def _pool_params(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None or stride == () else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    H, W = x_shape[-2:]
    OH = pool2d_output_size(H, kh, sh, ph, dh, ceil_mode)
    OW = pool2d_output_size(W, kw, sw, pw, dw, ceil_mode)
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW)


def _running_max(m, idx, v, pos):
    """One tap of PyTorch's max scan: take v when v > m or v is NaN."""
    take = (v > m) | np.isnan(v) | (idx < 0)
    return np.where(take, v, m), np.where(take, pos, idx)


def max_pool2d_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Direct-window max pooling: (y float64, indices int64), PyTorch semantics."""
    x = _f64(x)
    x4, unb = _batch4(x)
    N, C, H, W = x4.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (OH, OW) = _pool_params(
        x4.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y = np.empty((N, C, OH, OW))
    ind = np.empty((N, C, OH, OW), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for oy in range(OH):
            for ox in range(OW):
                m = np.full((N, C), -np.inf)
                idx = np.full((N, C), -1, dtype=np.int64)
                for ky in range(kh):
                    iy = oy * sh - ph + ky * dh
                    if not 0 <= iy < H:
                        continue
                    for kx in range(kw):
                        ix = ox * sw - pw + kx * dw
                        if not 0 <= ix < W:
                            continue
                        m, idx = _running_max(m, idx, x4[:, :, iy, ix], iy * W + ix)
                y[:, :, oy, ox] = m
                ind[:, :, oy, ox] = idx
    return (y[0], ind[0]) if unb else (y, ind)


def max_pool_backward_indices_ref(dy, indices, input_shape):
    """Scatter-add dy into a zero input-shaped plane at flat ``indices``."""
    dy = _f64(dy)
    indices = np.asarray(indices)
    shape = tuple(int(s) for s in input_shape)
    dy4, _ = _batch4(dy)
    ind4, _ = _batch4(indices)
    N, C = dy4.shape[:2]
    H, W = shape[-2:]
    dx = np.zeros((N, C, H * W))
    n_ix, c_ix = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    for oy in range(dy4.shape[2]):
        for ox in range(dy4.shape[3]):
            np.add.at(dx, (n_ix, c_ix, ind4[:, :, oy, ox]), dy4[:, :, oy, ox])
    return dx.reshape(shape)


def max_pool2d_backward_ref(dy, x, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False):
    """Gradient of max_pool2d w.r.t. x: each dy goes to its window's argmax."""
    _, ind = max_pool2d_ref(x, kernel_size, stride, padding, dilation, ceil_mode)
    return max_pool_backward_indices_ref(dy, ind, np.shape(x))


def _avg_windows(H, W, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    """Yield (oy, ox, (y0, y1, x0, x1) clipped to the input, divisor)."""
    (kh, kw), (sh, sw), (ph, pw), _, (OH, OW) = _pool_params(
        (H, W), kernel_size, stride, padding, 1, ceil_mode)
    for oy in range(OH):
        for ox in range(OW):
            hs, ws = oy * sh - ph, ox * sw - pw
            he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
            pool_size = (he - hs) * (we - ws)  # inside the padded input only
            y0, x0, y1, x1 = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
            if divisor_override is not None:
                div = divisor_override
            elif count_include_pad:
                div = pool_size
            else:
                div = (y1 - y0) * (x1 - x0)
            yield oy, ox, (y0, y1, x0, x1), div


def avg_pool2d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None):
    """Direct-window average pooling with PyTorch's divisor rules."""
    x = _f64(x)
    x4, unb = _batch4(x)
    N, C, H, W = x4.shape
    _, _, _, _, (OH, OW) = _pool_params(x4.shape, kernel_size, stride, padding, 1, ceil_mode)
    y = np.empty((N, C, OH, OW))
    for oy, ox, (y0, y1, x0, x1), div in _avg_windows(
            H, W, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        acc = np.zeros((N, C))
        for iy in range(y0, y1):
            for ix in range(x0, x1):
                acc = acc + x4[:, :, iy, ix]
        y[:, :, oy, ox] = acc / div
    return y[0] if unb else y


def avg_pool2d_backward_ref(dy, input_shape, kernel_size, stride=None, padding=0,
                            ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of avg_pool2d: each dy / divisor is added over its window."""
    dy = _f64(dy)
    shape = tuple(int(s) for s in input_shape)
    dy4, _ = _batch4(dy)
    N, C = dy4.shape[:2]
    H, W = shape[-2:]
    dx = np.zeros((N, C, H, W))
    for oy, ox, (y0, y1, x0, x1), div in _avg_windows(
            H, W, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        g = dy4[:, :, oy, ox] / div
        for iy in range(y0, y1):
            for ix in range(x0, x1):
                dx[:, :, iy, ix] += g
    return dx.reshape(shape)


def adaptive_output_size(input_hw, output_size) -> Tuple[int, int]:
    H, W = (int(s) for s in input_hw)
    if isinstance(output_size, (tuple, list)):
        oh, ow = output_size
    else:
        oh = ow = output_size
    return (H if oh is None else int(oh)), (W if ow is None else int(ow))


def _bins(size: int, out: int):
    """[start, end) of each adaptive bin: floor(i*size/out), ceil((i+1)*size/out)."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d_ref(x, output_size):
    x = _f64(x)
    x4, unb = _batch4(x)
    N, C, H, W = x4.shape
    OH, OW = adaptive_output_size((H, W), output_size)
    y = np.empty((N, C, OH, OW))
    for oy, (y0, y1) in enumerate(_bins(H, OH)):
        for ox, (x0, x1) in enumerate(_bins(W, OW)):
            acc = np.zeros((N, C))
            for iy in range(y0, y1):
                for ix in range(x0, x1):
                    acc = acc + x4[:, :, iy, ix]
            y[:, :, oy, ox] = acc / ((y1 - y0) * (x1 - x0))
    return y[0] if unb else y


def adaptive_avg_pool2d_backward_ref(dy, input_shape):
    dy = _f64(dy)
    shape = tuple(int(s) for s in input_shape)
    dy4, _ = _batch4(dy)
    N, C, OH, OW = dy4.shape
    H, W = shape[-2:]
    dx = np.zeros((N, C, H, W))
    for oy, (y0, y1) in enumerate(_bins(H, OH)):
        for ox, (x0, x1) in enumerate(_bins(W, OW)):
            g = dy4[:, :, oy, ox] / ((y1 - y0) * (x1 - x0))
            for iy in range(y0, y1):
                for ix in range(x0, x1):
                    dx[:, :, iy, ix] += g
    return dx.reshape(shape)


def adaptive_max_pool2d_ref(x, output_size):
    x = _f64(x)
    x4, unb = _batch4(x)
    N, C, H, W = x4.shape
    OH, OW = adaptive_output_size((H, W), output_size)
    y = np.empty((N, C, OH, OW))
    ind = np.empty((N, C, OH, OW), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for oy, (y0, y1) in enumerate(_bins(H, OH)):
            for ox, (x0, x1) in enumerate(_bins(W, OW)):
                m = np.full((N, C), -np.inf)
                idx = np.full((N, C), -1, dtype=np.int64)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        m, idx = _running_max(m, idx, x4[:, :, iy, ix], iy * W + ix)
                y[:, :, oy, ox] = m
                ind[:, :, oy, ox] = idx
    return (y[0], ind[0]) if unb else (y, ind)


def adaptive_max_pool2d_backward_ref(dy, x):
    dy = np.asarray(dy)
    _, ind = adaptive_max_pool2d_ref(x, dy.shape[-2:])
    return max_pool_backward_indices_ref(dy, ind, np.shape(x))


# --------------------------------------------------------------------------
# elementwise activations
# --------------------------------------------------------------------------
def relu_ref(x):
    x = _f64(x)
    return np.where(x > 0, x, np.where(np.isnan(x), x, 0.0))


def relu_backward_ref(dy, x):
    dy, x = _f64(dy), _f64(x)
    return np.where(x <= 0, 0.0, dy)


def leaky_relu_ref(x, negative_slope=0.01):
    x = _f64(x)
    return np.where(x > 0, x, x * float(negative_slope))


def leaky_relu_backward_ref(dy, x, negative_slope=0.01):
    dy, x = _f64(dy), _f64(x)
    return np.where(x > 0, dy, dy * float(negative_slope))


def elu_ref(x, alpha=1.0):
    x = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x > 0, x, float(alpha) * np.expm1(np.minimum(x, 0.0)))


def elu_backward_ref(dy, x, alpha=1.0):
    dy, x = _f64(dy), _f64(x)
    return np.where(x <= 0, dy * float(alpha) * np.exp(np.minimum(x, 0.0)), dy)


def sigmoid_ref(x):
    x = _f64(x)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # NaN stays NaN


def sigmoid_backward_ref(dy, y):
    dy, y = _f64(dy), _f64(y)
    return dy * y * (1.0 - y)


def tanh_ref(x):
    return np.tanh(_f64(x))


def tanh_backward_ref(dy, y):
    dy, y = _f64(dy), _f64(y)
    return dy * (1.0 - y * y)


_erfc = np.frompyfunc(math.erfc, 1, 1)
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT2_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def _check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_ref(x, approximate="none"):
    """Exact: x * Phi(x) = 0.5 x erfc(-x / sqrt 2). tanh: 0.5 x (1 + tanh(u)) = x * sigmoid(2u)."""
    _check_approximate(approximate)
    x = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "none":
            return 0.5 * x * np.asarray(_erfc(-x * _SQRT1_2), dtype=np.float64)  # -inf * 0 = NaN
        u = _SQRT2_PI * (x + _GELU_C * x ** 3)
        return x * sigmoid_ref(2.0 * u)


def gelu_backward_ref(dy, x, approximate="none"):
    _check_approximate(approximate)
    dy, x = _f64(dy), _f64(x)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if approximate == "none":
            cdf = 0.5 * np.asarray(_erfc(-x * _SQRT1_2), dtype=np.float64)
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
            return dy * (cdf + x * pdf)  # NaN at +-inf (inf * 0), as PyTorch
        u = _SQRT2_PI * (x + _GELU_C * x ** 3)
        s = sigmoid_ref(2.0 * u)                       # (1 + tanh u) / 2
        sech2 = 4.0 * s * (1.0 - s)                    # 1 - tanh(u)^2
        du = _SQRT2_PI * (1.0 + 3.0 * _GELU_C * x * x)
        d = s + 0.5 * x * sech2 * du
        return dy * d  # NaN at +-inf (inf * 0), as PyTorch


# --------------------------------------------------------------------------
# softmax family and maxout (row loops)
# --------------------------------------------------------------------------
def _rows(a: np.ndarray, axis: int):
    """View a as (rows, C) with `axis` last; also return the inverse."""
    axis = axis % a.ndim if a.ndim else 0
    moved = np.moveaxis(a, axis, -1)
    shp = moved.shape

    def back(r):
        return np.moveaxis(r.reshape(shp), -1, axis)

    return np.ascontiguousarray(moved).reshape(-1, shp[-1]), back


def softmax_ref(x, axis=1):
    r, back = _rows(_f64(x), axis)
    out = np.empty_like(r)
    with np.errstate(invalid="ignore"):
        for i, row in enumerate(r):
            e = np.exp(row - np.max(row))
            out[i] = e / math.fsum(e) if not np.isnan(e).any() else np.nan
    return back(out)


def log_softmax_ref(x, axis=1):
    r, back = _rows(_f64(x), axis)
    out = np.empty_like(r)
    with np.errstate(invalid="ignore"):
        for i, row in enumerate(r):
            m = np.max(row)
            z = row - m
            e = np.exp(z)
            out[i] = z - math.log(math.fsum(e)) if not np.isnan(e).any() else np.nan
    return back(out)


def softmax_backward_ref(dy, y, axis=1):
    """dx = y * (dy - <dy, y>) per row."""
    rg, back = _rows(_f64(dy), axis)
    ry, _ = _rows(_f64(y), axis)
    out = np.empty_like(rg)
    for i in range(rg.shape[0]):
        out[i] = ry[i] * (rg[i] - math.fsum(rg[i] * ry[i]))
    return back(out)


def log_softmax_backward_ref(dy, y, axis=1):
    """dx = dy - exp(y) * sum(dy) per row (y = log_softmax output)."""
    rg, back = _rows(_f64(dy), axis)
    ry, _ = _rows(_f64(y), axis)
    out = np.empty_like(rg)
    for i in range(rg.shape[0]):
        out[i] = rg[i] - np.exp(ry[i]) * math.fsum(rg[i])
    return back(out)


def _maxout_scan(x, pieces, axis):
    x = _f64(x)
    axis = axis % x.ndim
    C = x.shape[axis]
    if pieces < 1 or C % pieces:
        raise ValueError(f"pieces={pieces} must divide the {C} channels")
    xm = np.moveaxis(x, axis, 0)
    G = C // pieces
    m = xm[0::pieces].copy()
    arg = np.zeros(m.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for p in range(1, pieces):
            v = xm[p::pieces]
            take = (v > m) | (np.isnan(v) & ~np.isnan(m))  # first max; first NaN wins
            m = np.where(take, v, m)
            arg = np.where(take, p, arg)
    assert m.shape[0] == G
    return x, axis, m, arg


def maxout_ref(x, pieces, axis=1):
    _, axis, m, _ = _maxout_scan(x, pieces, axis)
    return np.moveaxis(m, 0, axis)


def maxout_backward_ref(dy, x, pieces, axis=1):
    x, axis, _, arg = _maxout_scan(x, pieces, axis)
    g = np.moveaxis(_f64(dy), axis, 0)
    dx = np.zeros(np.moveaxis(x, axis, 0).shape)
    for p in range(pieces):
        dx[p::pieces] = np.where(arg == p, g, 0.0)
    return np.moveaxis(dx, 0, axis)


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------
def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(per_item: np.ndarray, reduction: str, count: int):
    _check_reduction(reduction)
    if reduction == "none":
        return per_item
    s = math.fsum(per_item.ravel()) if np.isfinite(per_item).all() else float(np.sum(per_item))
    return np.float64(s / count if reduction == "mean" else s)


def _item_grad(dy, reduction, shape, count):
    """dL/d(per-item loss) broadcast to `shape`."""
    _check_reduction(reduction)
    dy = _f64(dy)
    if reduction == "none":
        return dy
    g = float(dy.reshape(()))
    return np.full(shape, g / count if reduction == "mean" else g)


def _is_index_target(target) -> bool:
    return np.asarray(target).dtype.kind in "iu"


def _smoothed_targets(x: np.ndarray, target, label_smoothing: float) -> np.ndarray:
    """(N, C) float64 target distribution after label smoothing."""
    N, C = x.shape
    t = np.asarray(target)
    eps = float(label_smoothing)
    if _is_index_target(t):
        t = _check_index_target(x, t)
        onehot = np.zeros((N, C))
        onehot[np.arange(N), t] = 1.0
        tt = onehot
    else:
        if t.shape != (N, C):
            raise ValueError(f"probability target must have shape ({N}, {C}), got {t.shape}")
        tt = _f64(t)
    return tt * (1.0 - eps) + eps / C


def _sum(v: np.ndarray) -> float:
    return math.fsum(v) if np.isfinite(v).all() else float(np.sum(v))


def cross_entropy_ref(x, target, reduction="mean", label_smoothing=0.0):
    """Per row: class index t: -(1 - eps) logp[t] - eps/C sum_c logp[c] (just -logp[t]
    when eps = 0, so a -inf logit elsewhere leaves the loss finite); probabilities q:
    -sum_c q'_c logp[c] with q' = (1 - eps) q + eps/C (0 * -inf is NaN, as PyTorch).
    logp = log_softmax(x); 'mean' divides by N in both cases."""
    x = _f64(x)
    N, C = x.shape
    eps = float(label_smoothing)
    logp = log_softmax_ref(x, axis=1)
    per = np.empty(N)
    with np.errstate(invalid="ignore"):
        if _is_index_target(target):
            t = _check_index_target(x, target)
            for i in range(N):
                per[i] = -logp[i, t[i]]
                if eps:
                    per[i] = (1.0 - eps) * per[i] - eps / C * _sum(logp[i])
        else:
            q = _smoothed_targets(x, target, eps)
            for i in range(N):
                per[i] = -_sum(q[i] * logp[i])
    return _reduce(per, reduction, N)


def cross_entropy_backward_ref(dy, x, target, reduction="mean", label_smoothing=0.0):
    """d/dx_i = g_i * (softmax(x_i) * sum(t'_i) - t'_i), t' the smoothed target."""
    x = _f64(x)
    N, C = x.shape
    t = _smoothed_targets(x, target, label_smoothing)
    p = softmax_ref(x, axis=1)
    g = _item_grad(dy, reduction, (N,), N)
    dx = np.empty((N, C))
    for i in range(N):
        dx[i] = g[i] * (p[i] * math.fsum(t[i]) - t[i])
    return dx


def _check_index_target(x, target):
    N, C = x.shape
    t = np.asarray(target)
    if t.dtype.kind not in "iu" or t.shape != (N,):
        raise ValueError(f"target must be int class indices of shape ({N},)")
    if N and (t.min() < 0 or t.max() >= C):
        raise ValueError(f"target values must be in [0, {C})")
    return t


def nll_loss_ref(x, target, reduction="mean"):
    x = _f64(x)
    t = _check_index_target(x, target)
    per = np.array([-x[i, t[i]] for i in range(x.shape[0])], dtype=np.float64)
    return _reduce(per, reduction, x.shape[0])


def nll_loss_backward_ref(dy, x, target, reduction="mean"):
    x = _f64(x)
    t = _check_index_target(x, target)
    N = x.shape[0]
    g = _item_grad(dy, reduction, (N,), N)
    dx = np.zeros_like(x)
    for i in range(N):
        dx[i, t[i]] = -g[i]
    return dx


def mse_loss_ref(x, target, reduction="mean"):
    x, t = _f64(x), _f64(target)
    if x.shape != t.shape:
        raise ValueError(f"input {x.shape} and target {t.shape} shapes differ")
    d = x - t
    per = d * d
    if reduction == "none":
        return per
    return _reduce(per.ravel(), reduction, per.size)


def mse_loss_backward_ref(dy, x, target, reduction="mean"):
    x, t = _f64(x), _f64(target)
    g = _item_grad(dy, reduction, x.shape, x.size)
    return 2.0 * (x - t) * g
