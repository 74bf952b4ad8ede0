"""Float64 explicit-loop references for pad, conv2d with padding_mode, linear and batch norm.

These are the executable specification that ``pyconv.pad``, ``pyconv.linear``,
``pyconv.batch_norm`` (and their backward functions) and ``pyconv.conv2d``
with a ``padding_mode`` are tested against. Nothing here calls pyconv, runs a
GEMM or uses ``np.pad``: every padded element is fetched from the source
index given by an explicit per-index rule (:func:`pad_source_index`), linear
sums products one output feature at a time, and batch norm computes each
channel's statistics with a two-pass loop over channels. Loops run over
output positions / features / channels; NumPy only vectorises the leading
(batch, channel) axes of one step. All arithmetic is float64 whatever the
input dtype, and no argument is ever modified in place.

Shapes::

    pad_source_index(o, n, lo, mode) -> int or None
        o: index into the padded axis (0 <= o < lo + n + hi); n: unpadded size;
        lo: padding before the axis. Returns the source index in [0, n), or
        None for a 'constant' padding position.

    pad_ref(x, padding, mode='constant', value=0.0) -> y
        x (..., W) with padding (left, right), or (..., H, W) with padding
        (left, right, top, bottom); y (..., H + top + bottom, W + left + right)

    pad_backward_ref(dy, input_shape, padding, mode='constant') -> dx
        dy has pad_ref's output shape; dx has input_shape. Every dy element is
        added into the element it was copied from ('constant' padding
        positions drop their gradient).

    conv2d_padding_mode_pads(x_shape, w_shape, stride=1, padding=0, dilation=1)
        -> (left, right, top, bottom)    pad_ref order; int, pair, 'valid' or
        'same' (PyTorch split: total d*(k-1), top/left get total // 2)

    conv2d_mode_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode='zeros') -> y
        x (N, C, H, W) or (C, H, W); w (OC, C/groups, KH, KW); b (OC,) or None;
        y (N, OC, OH, OW) (or unbatched). The input is padded with pad_ref in
        padding_mode ('zeros' -> 'constant') and convolved with no padding by
        pyconv.testing.reference.conv2d_ref (torch.nn.Conv2d semantics).

    conv2d_mode_backward_ref(dy, x, w, stride=1, padding=0, dilation=1, groups=1,
                             padding_mode='zeros') -> (dx, dw, db)
        dy like y; dx like x (the padded input's gradient folded back with
        pad_backward_ref), dw like w, db (OC,)

    linear_ref(x, w, b=None) -> y
        x (..., K); w (M, K); b (M,) or None; y (..., M)

    linear_backward_ref(dy, x, w) -> (dx, dw, db)
        dy (..., M); dx like x; dw (M, K); db (M,)

    batch_norm_ref(x, running_mean, running_var, weight=None, bias=None,
                   training=False, momentum=0.1, eps=1e-5)
        -> (y, save_mean, save_invstd, new_running_mean, new_running_var)
        x (N, C), (N, C, L) or (N, C, H, W); per-channel vectors (C,) or None.
        training: batch mean and biased variance normalise; the new running
        statistics are (1 - momentum) * running + momentum * batch statistic
        with the UNBIASED batch variance (None where the running input was
        None). Eval: the running statistics normalise and are returned
        unchanged. save_invstd = 1 / sqrt(var + eps) of the statistics used.

    batch_norm_backward_ref(dy, x, weight, save_mean, save_invstd, training=True)
        -> (dx, dw, db)
        dy, dx like x; weight (C,) or None (= ones); dw, db (C,).
        training: the statistics are functions of x (full batch-norm gradient);
        eval: they are constants, dx = dy * weight * save_invstd.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .reference import conv2d_backward_ref, conv2d_ref, resolve_padding

__all__ = [
    "PAD_MODES",
    "pad_source_index",
    "pad_ref",
    "pad_backward_ref",
    "conv2d_padding_mode_pads",
    "conv2d_mode_ref",
    "conv2d_mode_backward_ref",
    "linear_ref",
    "linear_backward_ref",
    "batch_norm_ref",
    "batch_norm_backward_ref",
]

PAD_MODES = ("constant", "reflect", "replicate", "circular")
_CONV_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
               "circular": "circular"}


def _f64(a) -> np.ndarray:
    return np.array(a, dtype=np.float64, copy=True)


# --------------------------------------------------------------------------
# pad
# --------------------------------------------------------------------------
def pad_source_index(o: int, n: int, lo: int, mode: str) -> Optional[int]:
    """Source index along one axis of padded position ``o`` (None: constant fill).

    With j = o - lo the position relative to the unpadded axis:
      constant   j if 0 <= j < n, else None
      reflect    mirror about the edge elements, which are not repeated:
                 -j for j < 0, 2*(n-1) - j for j >= n      (needs pad < n)
      replicate  the nearest edge element: min(max(j, 0), n-1)
      circular   wrap around: j + n for j < 0, j - n for j >= n  (needs pad <= n)
    """
    j = o - lo
    if 0 <= j < n:
        return j
    if mode == "constant":
        return None
    if mode == "reflect":
        s = -j if j < 0 else 2 * (n - 1) - j
    elif mode == "replicate":
        s = 0 if j < 0 else n - 1
    elif mode == "circular":
        s = j + n if j < 0 else j - n
    else:
        raise ValueError(f"unknown pad mode {mode!r}")
    if not 0 <= s < n:
        raise ValueError(f"padding too large for mode {mode!r}: position {o} of an axis "
                         f"of {n} padded by {lo} before has no source")
    return s


def _pads(shape, padding) -> Tuple[int, int, int, int, bool]:
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        (l, r), (t, b), two_d = padding, (0, 0), False
    elif len(padding) == 4:
        l, r, t, b = padding
        two_d = True
    else:
        raise ValueError(f"padding must have 2 or 4 entries, got {padding!r}")
    if min(l, r, t, b) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    if len(shape) < (2 if two_d else 1):
        raise ValueError(f"padding {padding!r} needs more dims than shape {tuple(shape)}")
    return l, r, t, b, two_d


def _index_maps(shape, padding, mode):
    """Per-axis source-index lists for the last two axes of the (2-d view of the) input."""
    l, r, t, b, two_d = _pads(shape, padding)
    W = shape[-1]
    H = shape[-2] if two_d else 1
    rows = [pad_source_index(o, H, t, mode) for o in range(H + t + b)]
    cols = [pad_source_index(o, W, l, mode) for o in range(W + l + r)]
    return rows, cols, two_d


def pad_ref(x, padding, mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """torch.nn.functional.pad of the last one (2-tuple) or two (4-tuple) axes, in float64."""
    x = _f64(x)
    rows, cols, two_d = _index_maps(x.shape, padding, mode)
    x2 = x if two_d else x[..., None, :]  # a unit H axis for 1-d padding
    y = np.empty(x2.shape[:-2] + (len(rows), len(cols)))
    for oy, sy in enumerate(rows):
        for ox, sx in enumerate(cols):
            if sy is None or sx is None:
                y[..., oy, ox] = value
            else:
                y[..., oy, ox] = x2[..., sy, sx]
    return y if two_d else y[..., 0, :]


def pad_backward_ref(dy, input_shape: Sequence[int], padding, mode: str = "constant") -> np.ndarray:
    """Gradient of pad_ref: each dy element is added into the element it came from."""
    dy = _f64(dy)
    input_shape = tuple(int(s) for s in input_shape)
    rows, cols, two_d = _index_maps(input_shape, padding, mode)
    dy2 = dy if two_d else dy[..., None, :]
    expect = input_shape[:-2 if two_d else -1] + (len(rows), len(cols))
    if dy2.shape != expect:
        raise ValueError(f"dy has shape {dy.shape}, the padded shape is "
                         f"{expect if two_d else expect[:-2] + expect[-1:]}")
    dx2 = np.zeros(input_shape if two_d else input_shape[:-1] + (1, input_shape[-1]))
    for oy, sy in enumerate(rows):
        for ox, sx in enumerate(cols):
            if sy is not None and sx is not None:
                dx2[..., sy, sx] += dy2[..., oy, ox]
    return dx2 if two_d else dx2[..., 0, :]


# --------------------------------------------------------------------------
# conv2d with padding_mode
# --------------------------------------------------------------------------
def conv2d_padding_mode_pads(x_shape, w_shape, stride=1, padding=0, dilation=1):
    """(left, right, top, bottom) by which torch.nn.Conv2d pads the input."""
    H, W = x_shape[-2:]
    KH, KW = w_shape[-2:]
    t, b, l, r = resolve_padding(H, W, KH, KW, stride, padding, dilation)
    return l, r, t, b


def _conv_mode(padding_mode: str) -> str:
    if padding_mode not in _CONV_MODES:
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    return _CONV_MODES[padding_mode]


def conv2d_mode_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1,
                    padding_mode: str = "zeros") -> np.ndarray:
    """torch.nn.Conv2d(padding_mode=...) forward: pad_ref by the conv's padding, then conv."""
    x, w = _f64(x), _f64(w)
    pads = conv2d_padding_mode_pads(x.shape, w.shape, stride, padding, dilation)
    xp = pad_ref(x, pads, _conv_mode(padding_mode))
    return conv2d_ref(xp, w, b, stride, 0, dilation, groups)


def conv2d_mode_backward_ref(dy, x, w, stride=1, padding=0, dilation=1, groups: int = 1,
                             padding_mode: str = "zeros"):
    """Gradients of conv2d_mode_ref: (dx, dw, db), dx folded back through the padding."""
    x, w = _f64(x), _f64(w)
    mode = _conv_mode(padding_mode)
    pads = conv2d_padding_mode_pads(x.shape, w.shape, stride, padding, dilation)
    xp = pad_ref(x, pads, mode)
    dxp, dw, db = conv2d_backward_ref(dy, xp, w, stride, 0, dilation, groups)
    return pad_backward_ref(dxp, x.shape, pads, mode), dw, db


# --------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------
def _linear_shapes(x, w):
    if w.ndim != 2:
        raise ValueError(f"w must be 2-d (M, K), got {w.shape}")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"x {x.shape} does not end in K = {w.shape[1]}")
    return w.shape


def linear_ref(x, w, b=None) -> np.ndarray:
    """y[..., o] = b[o] + sum_k x[..., k] * w[o, k], one output feature at a time."""
    x, w = _f64(x), _f64(w)
    M, K = _linear_shapes(x, w)
    y = np.empty(x.shape[:-1] + (M,))
    for o in range(M):
        acc = np.zeros(x.shape[:-1])
        for k in range(K):
            acc += x[..., k] * w[o, k]
        y[..., o] = acc
    if b is not None:
        b = _f64(b)
        if b.shape != (M,):
            raise ValueError(f"b must have shape ({M},), got {b.shape}")
        y += b
    return y


def linear_backward_ref(dy, x, w):
    """Gradients of sum(linear_ref(x, w, b) * dy): (dx, dw, db) in float64."""
    dy, x, w = _f64(dy), _f64(x), _f64(w)
    M, K = _linear_shapes(x, w)
    if dy.shape != x.shape[:-1] + (M,):
        raise ValueError(f"dy must have shape {x.shape[:-1] + (M,)}, got {dy.shape}")
    rows_dy = dy.reshape(-1, M)
    rows_x = x.reshape(-1, K)
    dx = np.zeros(rows_x.shape)
    dw = np.zeros((M, K))
    for o in range(M):
        for k in range(K):
            dx[:, k] += rows_dy[:, o] * w[o, k]
            dw[o, k] = np.sum(rows_dy[:, o] * rows_x[:, k])
    db = np.array([np.sum(rows_dy[:, o]) for o in range(M)])
    return dx.reshape(x.shape), dw, db


# --------------------------------------------------------------------------
# batch norm
# --------------------------------------------------------------------------
def _channel_rows(x: np.ndarray, c: int) -> np.ndarray:
    """All values of channel c, flattened (axis 1 is the channel axis)."""
    return x[:, c].reshape(-1)


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> shape broadcasting against (N, C, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_ref(x, running_mean, running_var, weight=None, bias=None, training=False,
                   momentum=0.1, eps=1e-5):
    """torch.nn.functional.batch_norm in float64; see the module docstring for the outputs."""
    x = _f64(x)
    if x.ndim < 2:
        raise ValueError(f"x must be (N, C, ...), got {x.shape}")
    C = x.shape[1]
    count = x.size // C if C else 0
    rm = None if running_mean is None else _f64(running_mean)
    rv = None if running_var is None else _f64(running_var)
    if training:
        mean = np.empty(C)
        var = np.empty(C)
        for c in range(C):
            v = _channel_rows(x, c)
            m = np.sum(v) / count  # two passes: mean, then squared deviations
            mean[c] = m
            var[c] = np.sum((v - m) * (v - m)) / count
        unbiased = var * count / (count - 1)
        new_rm = None if rm is None else (1.0 - momentum) * rm + momentum * mean
        new_rv = None if rv is None else (1.0 - momentum) * rv + momentum * unbiased
    else:
        if rm is None or rv is None:
            raise ValueError("running statistics are required in eval mode")
        mean, var = rm.copy(), rv.copy()
        new_rm, new_rv = rm, rv
    invstd = 1.0 / np.sqrt(var + eps)
    w = np.ones(C) if weight is None else _f64(weight)
    b = np.zeros(C) if bias is None else _f64(bias)
    y = np.empty_like(x)
    for c in range(C):
        y[:, c] = (x[:, c] - mean[c]) * invstd[c] * w[c] + b[c]
    return y, mean, invstd, new_rm, new_rv


def batch_norm_backward_ref(dy, x, weight, save_mean, save_invstd, training=True):
    """Gradients of sum(batch_norm(x) * dy) w.r.t. x, weight and bias, in float64.

    training: with xhat = (x - mean) * invstd and M values per channel,
        dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    eval: dx = dy * weight * invstd. In both, dw = sum(dy * xhat), db = sum(dy).
    """
    dy, x = _f64(dy), _f64(x)
    if dy.shape != x.shape:
        raise ValueError(f"dy {dy.shape} must match x {x.shape}")
    C = x.shape[1]
    count = x.size // C if C else 0
    mean, invstd = _f64(save_mean), _f64(save_invstd)
    w = np.ones(C) if weight is None else _f64(weight)
    dx = np.empty_like(x)
    dw = np.empty(C)
    db = np.empty(C)
    for c in range(C):
        g = dy[:, c]
        xhat = (x[:, c] - mean[c]) * invstd[c]
        db[c] = np.sum(g)
        dw[c] = np.sum(g * xhat)
        if training:
            dx[:, c] = w[c] * invstd[c] * (g - db[c] / count - xhat * (dw[c] / count))
        else:
            dx[:, c] = g * w[c] * invstd[c]
    return dx, dw, db
