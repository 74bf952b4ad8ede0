"""Stateless operations on NumPy arrays, with PyTorch's names and semantics.

This layer owns argument normalisation, validation (errors name the argument
and the value received), dtype/contiguity conversion and output allocation.
Every loop over array elements runs in the compiled core ``pyconv._C``.

Dtypes: float32 and float64 are computed natively and the result follows the
inputs' NumPy promotion (float32 with float64 gives float64). float16 is
computed in float32 and returned as float16; integer and bool arrays are
computed and returned as float64. Other dtypes raise TypeError.
"""
from __future__ import annotations

import operator
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

from . import _C

IntOrPair = Union[int, Tuple[int, int]]

__all__ = [
    "conv2d", "conv2d_backward", "conv2d_input", "conv2d_weight", "gemm",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "gelu", "gelu_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "maxout", "maxout_backward",
    "cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward",
    "mse_loss", "mse_loss_backward",
    "pad", "pad_backward", "linear", "linear_backward", "batch_norm", "batch_norm_backward",
]

_MAX_ELEMS = 2**62


# --------------------------------------------------------------------------
# argument normalisation
# --------------------------------------------------------------------------
# Sizes, kernel sizes, strides, paddings and dilations must fit in 31 bits, so
# the compiled layer's 64-bit index arithmetic (products of two of them) can
# never overflow; anything larger could not be allocated anyway.
_INT_LIMIT = 2**31 - 1


def _int(name: str, v) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {v!r}")
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}") from None
    if not -_INT_LIMIT <= i <= _INT_LIMIT:
        raise ValueError(f"{name}={i} is out of range (|{name}| must be at most 2**31 - 1)")
    return i


def _pair(name: str, v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return (_int(name, v[0]), _int(name, v[1]))
    i = _int(name, v)
    return (i, i)


def _as_array(name: str, a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {e}") from None
    return arr


_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def _compute_dtype(**arrays) -> Tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) for the given arrays, or TypeError."""
    # Fast path for the common case, all native float32 or all native float64
    # (NumPy's built-in dtypes are singletons; a byte-swapped one is not).
    it = iter(arrays.values())
    d0 = next(it).dtype
    if d0 is _F32 or d0 is _F64:
        for a in it:
            if a.dtype is not d0:
                break
        else:
            return d0, d0
    for name, a in arrays.items():
        k = a.dtype.kind
        if k not in "fiub" or a.dtype == np.longdouble and a.dtype.itemsize > 8:
            raise TypeError(
                f"{name} has unsupported dtype {a.dtype}; pyconv computes in float32 or "
                "float64 (float16, integer and bool inputs are converted)"
            )
    res = np.result_type(*[a.dtype for a in arrays.values()])
    if res.kind in "iub":
        return np.dtype(np.float64), np.dtype(np.float64)
    if res.itemsize <= 2:
        return np.dtype(np.float32), np.dtype(res.newbyteorder("="))
    if res.itemsize == 4:
        return np.dtype(np.float32), np.dtype(np.float32)
    return np.dtype(np.float64), np.dtype(np.float64)


def _prepare(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The one conversion point: native-endian, C-contiguous, of `dtype`.

    (np.asarray with order='C' rather than np.ascontiguousarray, which turns
    0-d arrays into 1-d.)
    """
    return np.asarray(a, dtype=dtype, order="C")


def _finish(out: np.ndarray, result_dtype: np.dtype) -> np.ndarray:
    return out if out.dtype == result_dtype else out.astype(result_dtype)


# --------------------------------------------------------------------------
# conv2d geometry
# --------------------------------------------------------------------------
class _ConvGeom(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    OC: int
    KH: int
    KW: int
    stride: Tuple[int, int]
    pad_tl: Tuple[int, int]  # top, left (bottom/right are implied by OH/OW)
    dilation: Tuple[int, int]
    groups: int
    OH: int
    OW: int

    def c_args(self):
        return (*self.stride, *self.pad_tl, *self.dilation, self.groups)


def _resolve_padding(padding, KH, KW, stride_pair, dilation_pair, stride_arg=None):
    """(top, bottom, left, right) for an int, pair, 'valid' or 'same' padding."""
    (sh, sw), (dh, dw) = stride_pair, dilation_pair
    ekh, ekw = dh * (KH - 1) + 1, dw * (KW - 1) + 1  # dilated kernel extent
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' requires stride=1, got stride={stride_arg!r}")
            # PyTorch: total padding d*(k-1), the odd unit goes to the bottom/right.
            pt, pl = (ekh - 1) // 2, (ekw - 1) // 2
            return pt, ekh - 1 - pt, pl, ekw - 1 - pl
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    pt, pl = _pair("padding", padding)
    if pt < 0 or pl < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pt, pt, pl, pl


_GEOM_CACHE: dict = {}


def _plain(v) -> bool:
    """An int, a str, or a tuple of ints, of exactly those types (so that a
    cached answer for 1 is never reused for True or 1.0, which compare equal)."""
    t = type(v)
    return t is int or t is str or (t is tuple and all(type(e) is int for e in v))


def _conv_geom(x_shape, w_shape, stride, padding, dilation, groups,
               x_name="input", w_name="weight") -> _ConvGeom:
    """The validated geometry; valid answers for plain arguments are cached
    (a small model calls conv2d with the same few shapes again and again)."""
    if not (_plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int):
        return _conv_geom_checked(x_shape, w_shape, stride, padding, dilation, groups, x_name,
                                  w_name)
    if type(x_shape) is not tuple or type(w_shape) is not tuple:
        x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    key = (x_shape, w_shape, stride, padding, dilation, groups, x_name, w_name)
    g = _GEOM_CACHE.get(key)
    if g is None:
        g = _conv_geom_checked(x_shape, w_shape, stride, padding, dilation, groups, x_name, w_name)
        if len(_GEOM_CACHE) >= 1024:
            _GEOM_CACHE.clear()
        _GEOM_CACHE[key] = g
    return g


def _conv_geom_checked(x_shape, w_shape, stride, padding, dilation, groups,
                       x_name="input", w_name="weight") -> _ConvGeom:
    if len(x_shape) != 4:
        raise ValueError(f"{x_name} must be 4-d (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(
            f"{w_name} must be 4-d (out_channels, in_channels/groups, kH, kW), "
            f"got shape {tuple(w_shape)}"
        )
    N, C, H, W = (int(s) for s in x_shape)
    OC, Cg, KH, KW = (int(s) for s in w_shape)
    groups = _int("groups", groups)
    sh, sw = _pair("stride", stride)
    dh, dw = _pair("dilation", dilation)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive, got {stride!r}")
    if dh < 1 or dw < 1:
        raise ValueError(f"dilation must be positive, got {dilation!r}")
    for nm, v in (("out_channels", OC), ("kernel height", KH), ("kernel width", KW)):
        if v < 1:
            raise ValueError(f"{w_name} has {nm} {v} in shape {tuple(w_shape)}; it must be >= 1")
    if Cg < 1:
        raise ValueError(f"{w_name} has in_channels/groups = {Cg} in shape {tuple(w_shape)}; it must be >= 1")
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"{x_name} has an empty channel or spatial dimension: shape {tuple(x_shape)}")
    if C % groups:
        raise ValueError(f"groups={groups} must divide in_channels={C}")
    if OC % groups:
        raise ValueError(f"groups={groups} must divide out_channels={OC}")
    if Cg * groups != C:
        raise ValueError(
            f"{x_name} has {C} channels but {w_name} expects in_channels = "
            f"{w_name}.shape[1] * groups = {Cg} * {groups} = {Cg * groups}"
        )
    pt, pb, pl, pr = _resolve_padding(padding, KH, KW, (sh, sw), (dh, dw), stride)
    ekh, ekw = dh * (KH - 1) + 1, dw * (KW - 1) + 1  # dilated kernel extent
    Hp, Wp = H + pt + pb, W + pl + pr
    if Hp < ekh or Wp < ekw:
        raise ValueError(
            f"kernel size ({KH}, {KW}) with dilation ({dh}, {dw}) spans ({ekh}, {ekw}), "
            f"larger than the padded input ({Hp}, {Wp})"
        )
    OH, OW = (Hp - ekh) // sh + 1, (Wp - ekw) // sw + 1
    if OH < 1 or OW < 1:  # pragma: no cover - implied by the check above
        raise ValueError(f"output size ({OH}, {OW}) is not positive")
    for what, n in (("input", N * C * H * W), ("output", N * OC * OH * OW)):
        if n >= _MAX_ELEMS:
            raise ValueError(f"conv2d {what} would have {n} elements, too many to address")
    return _ConvGeom(N, C, H, W, OC, KH, KW, (sh, sw), (pt, pl), (dh, dw), groups, OH, OW)


_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
                  "circular": "circular"}


def _padding_mode(padding_mode):
    """conv2d's padding_mode as a pad() mode name."""
    if not isinstance(padding_mode, str) or padding_mode not in _PADDING_MODES:
        raise ValueError(
            f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}")
    return _PADDING_MODES[padding_mode]


def _mode_pads(weight, stride, padding, dilation):
    KH, KW = (int(s) for s in np.shape(weight)[-2:])
    return _resolve_padding(padding, KH, KW, _pair("stride", stride), _pair("dilation", dilation),
                            stride)


def _mode_pad(input, weight, stride, padding, dilation, padding_mode):
    """The input padded with padding_mode by the conv's padding, and the pads (l, r, t, b)."""
    w = np.shape(weight)
    if len(w) != 4:
        raise ValueError(f"weight must be 4-d (out_channels, in_channels/groups, kH, kW), got shape {w}")
    pt, pb, pl, pr = _mode_pads(weight, stride, padding, dilation)
    pads = (pl, pr, pt, pb)
    return pad(input, pads, _padding_mode(padding_mode)), pads


def _batched(name: str, a: np.ndarray):
    """PyTorch accepts unbatched (C, H, W) input: add and later drop the batch axis."""
    if a.ndim == 3:
        return a[None], True
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-d (N, C, H, W) or 3-d (C, H, W), got shape {a.shape}")
    return a, False


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def conv2d(input, weight, bias=None, stride: IntOrPair = 1, padding: Union[IntOrPair, str] = 0,
           dilation: IntOrPair = 1, groups: int = 1, padding_mode: str = "zeros") -> np.ndarray:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    input: (N, C, H, W) or (C, H, W); weight: (OC, C/groups, kH, kW);
    bias: (OC,) or None. stride, padding and dilation take an int or a pair;
    padding also takes 'valid' or 'same' (stride 1 only; an odd total goes to
    the bottom/right, as in PyTorch). padding_mode 'zeros' | 'reflect' |
    'replicate' | 'circular' as in ``torch.nn.Conv2d``. Returns a new array
    (N, OC, OH, OW).
    """
    # Fast path, all in C++: plain C-contiguous float32/float64 arrays of one
    # dtype, a batch, zero padding given as ints (the per-call cost of a tiny
    # convolution is then close to a NumPy ufunc's). None means "not that
    # case, or an argument to reject": the checks below then run and raise.
    if type(padding_mode) is str and padding_mode == "zeros":
        y = _C.conv2d_fast(input, weight, bias, stride, padding, dilation, groups)
        if y is not None:
            return y
    if _padding_mode(padding_mode) != "constant":
        xp, _ = _mode_pad(input, weight, stride, padding, dilation, padding_mode)
        return conv2d(xp, weight, bias, stride, 0, dilation, groups)
    x = _as_array("input", input)
    w = _as_array("weight", weight)
    arrays = {"input": x, "weight": w}
    if bias is not None:
        b = _as_array("bias", bias)
        arrays["bias"] = b
    cdt, rdt = _compute_dtype(**arrays)
    x, unbatched = _batched("input", x)
    g = _conv_geom(x.shape, w.shape, stride, padding, dilation, groups)
    if bias is not None and b.shape != (g.OC,):
        raise ValueError(f"bias must have shape ({g.OC},) to match weight, got {b.shape}")
    y = np.empty((g.N, g.OC, g.OH, g.OW), dtype=cdt)
    if g.N:
        _C.conv2d_forward(_prepare(x, cdt), _prepare(w, cdt),
                          None if bias is None else _prepare(b, cdt), y, *g.c_args())
    y = _finish(y, rdt)
    return y[0] if unbatched else y


def conv2d_backward(grad_output, input, weight, stride: IntOrPair = 1,
                    padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1,
                    output_mask=(True, True, True), padding_mode: str = "zeros"):
    """Gradients of :func:`conv2d`: returns ``(grad_input, grad_weight, grad_bias)``.

    grad_output has conv2d's output shape. grad_bias is grad_output summed
    over N, H and W. ``output_mask`` (three bools) skips gradients that are
    not needed; a skipped gradient is returned as None. The results are
    fresh arrays (overwritten, never accumulated). With a padding_mode other
    than 'zeros' the input gradient is folded back through the padding.
    """
    if _padding_mode(padding_mode) != "constant":
        xp, pads = _mode_pad(input, weight, stride, padding, dilation, padding_mode)
        dxp, dw, db = conv2d_backward(grad_output, xp, weight, stride, 0, dilation, groups,
                                      output_mask)
        dx = None if dxp is None else pad_backward(dxp, np.shape(input), pads,
                                                   _padding_mode(padding_mode))
        return dx, dw, db
    dy = _as_array("grad_output", grad_output)
    x = _as_array("input", input)
    w = _as_array("weight", weight)
    if not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3:
        raise ValueError(f"output_mask must have three bools, got {output_mask!r}")
    want_dx, want_dw, want_db = (bool(m) for m in output_mask)
    cdt, rdt = _compute_dtype(grad_output=dy, input=x, weight=w)
    x, unbatched = _batched("input", x)
    if unbatched and dy.ndim == 3:
        dy = dy[None]
    g = _conv_geom(x.shape, w.shape, stride, padding, dilation, groups)
    expect = (g.N, g.OC, g.OH, g.OW)
    if dy.shape != expect:
        raise ValueError(f"grad_output must have shape {expect} (conv2d's output), got {dy.shape}")
    dyc = _prepare(dy, cdt)
    dx = dw = db = None
    if want_dx:
        dx = np.empty((g.N, g.C, g.H, g.W), dtype=cdt)
        if g.N:
            _C.conv2d_backward_data(dyc, _prepare(w, cdt), dx, *g.c_args())
        dx = _finish(dx, rdt)
        if unbatched:
            dx = dx[0]
    if want_dw or want_db:
        dw_buf = np.empty(w.shape, dtype=cdt)
        db = np.empty((g.OC,), dtype=cdt) if want_db else None
        if g.N:
            _C.conv2d_backward_weight(dyc, _prepare(x, cdt), dw_buf, db, *g.c_args())
        else:
            dw_buf[...] = 0
            if db is not None:
                db[...] = 0
        dw = _finish(dw_buf, rdt) if want_dw else None
        db = _finish(db, rdt) if want_db else None
    return dx, dw, db


def conv2d_input(input_size, weight, grad_output, stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1,
                 groups: int = 1, padding_mode: str = "zeros") -> np.ndarray:
    """Gradient of conv2d w.r.t. its input, as ``torch.nn.grad.conv2d_input``."""
    shape = _shape_arg("input_size", input_size)
    mode = _padding_mode(padding_mode)
    if mode != "constant":
        if len(shape) != 4:
            raise ValueError(f"input_size must have 4 dims (N, C, H, W), got {shape}")
        w = _as_array("weight", weight)
        pt, pb, pl, pr = _mode_pads(w, stride, padding, dilation)
        padded = shape[:2] + (shape[2] + pt + pb, shape[3] + pl + pr)
        dxp = conv2d_input(padded, w, grad_output, stride, 0, dilation, groups)
        return pad_backward(dxp, shape, (pl, pr, pt, pb), mode)
    w = _as_array("weight", weight)
    dy = _as_array("grad_output", grad_output)
    cdt, rdt = _compute_dtype(grad_output=dy, weight=w)
    g = _conv_geom(shape, w.shape, stride, padding, dilation, groups, x_name="input_size")
    expect = (g.N, g.OC, g.OH, g.OW)
    if dy.shape != expect:
        raise ValueError(f"grad_output must have shape {expect} (conv2d's output), got {dy.shape}")
    dx = np.empty(shape, dtype=cdt)
    if g.N:
        _C.conv2d_backward_data(_prepare(dy, cdt), _prepare(w, cdt), dx, *g.c_args())
    return _finish(dx, rdt)


def conv2d_weight(input, weight_size, grad_output, stride: IntOrPair = 1,
                  padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1,
                  groups: int = 1, padding_mode: str = "zeros") -> np.ndarray:
    """Gradient of conv2d w.r.t. its weight, as ``torch.nn.grad.conv2d_weight``."""
    shape = _shape_arg("weight_size", weight_size)
    if _padding_mode(padding_mode) != "constant":
        xp, _ = _mode_pad(input, np.empty(shape, np.float32), stride, padding, dilation,
                          padding_mode)
        return conv2d_weight(xp, shape, grad_output, stride, 0, dilation, groups)
    x = _as_array("input", input)
    dy = _as_array("grad_output", grad_output)
    cdt, rdt = _compute_dtype(grad_output=dy, input=x)
    g = _conv_geom(x.shape, shape, stride, padding, dilation, groups, w_name="weight_size")
    expect = (g.N, g.OC, g.OH, g.OW)
    if dy.shape != expect:
        raise ValueError(f"grad_output must have shape {expect} (conv2d's output), got {dy.shape}")
    dw = np.empty(shape, dtype=cdt)
    if g.N:
        _C.conv2d_backward_weight(_prepare(dy, cdt), _prepare(x, cdt), dw, None, *g.c_args())
    else:
        dw[...] = 0
    return _finish(dw, rdt)


# --------------------------------------------------------------------------
# GEMM
# --------------------------------------------------------------------------
def gemm(a, b, out: Optional[np.ndarray] = None, beta: float = 0.0) -> np.ndarray:
    """``out := a @ b + beta * out`` for 2-d arrays, on pyconv's packed GEMM.

    a and b are read through their strides (transposed or sliced views need
    no copy) when their dtype already matches. With ``out=None`` a new array
    is returned and beta must be 0. ``out`` must be writable, of the result
    dtype, with unit column stride; beta=0 never reads it.
    """
    a = _as_array("a", a)
    b = _as_array("b", b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: a and b must be 2-d, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: a.shape[1]={a.shape[1]} does not match b.shape[0]={b.shape[0]}")
    cdt, rdt = _compute_dtype(a=a, b=b)
    beta = _real("beta", beta)
    if out is not None and isinstance(out, np.ndarray) and (
            np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        # the kernel writes C while it still reads A and B: read copies instead
        a, b = (np.array(m, dtype=cdt, order="C") if np.may_share_memory(out, m) else m
                for m in (a, b))

    def operand(m):
        if m.dtype == cdt and m.dtype.isnative and all(s % m.itemsize == 0 for s in m.strides):
            return m
        return np.ascontiguousarray(m, dtype=cdt)

    shape = (a.shape[0], b.shape[1])
    if out is None:
        if beta != 0.0:
            raise ValueError("gemm: beta != 0 needs an out array")
        try:
            out = np.empty(shape, dtype=cdt)
        except ValueError:  # more elements than NumPy can describe
            raise ValueError(f"gemm: the result a @ b would have shape {shape}, too large "
                             "to allocate (out)") from None
        target = out
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"gemm: out must be a numpy array, got {type(out).__name__}")
        if out.shape != shape:
            raise ValueError(f"gemm: out must have shape {shape}, got {out.shape}")
        if out.dtype != cdt:
            raise TypeError(f"gemm: out must have dtype {cdt}, got {out.dtype}")
        if not out.flags.writeable:
            raise ValueError("gemm: out is read-only")
        ok = out.dtype.isnative and (out.shape[1] <= 1 or out.strides[1] == out.itemsize) \
            and out.strides[0] % out.itemsize == 0 and out.strides[0] >= out.itemsize * out.shape[1]
        target = out if ok else np.ascontiguousarray(out)
    if 0 in shape:
        return _finish(out, rdt) if out.dtype != rdt else out
    if target.shape[1] == 1 and target.strides[1] != target.itemsize:
        target = np.ascontiguousarray(target)
    _C.gemm(operand(a), operand(b), target, beta)
    if target is not out:
        out[...] = target
    return _finish(out, rdt) if out.dtype != rdt and out is not None else out


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
_POOL_CACHE: dict = {}


def _pool_geom(shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Output (OH, OW) and normalised window parameters, PyTorch's rules.
    Valid answers for plain arguments are cached, as for conv2d (they depend
    on H and W only)."""
    if (_plain(kernel_size) and (stride is None or _plain(stride)) and _plain(padding)
            and _plain(dilation) and type(ceil_mode) is bool):
        key = (shape[2], shape[3], kernel_size, stride, padding, dilation, ceil_mode)
        r = _POOL_CACHE.get(key)
        if r is None:
            r = _pool_geom_checked(shape, kernel_size, stride, padding, dilation, ceil_mode)
            if len(_POOL_CACHE) >= 1024:
                _POOL_CACHE.clear()
            _POOL_CACHE[key] = r
        return r
    return _pool_geom_checked(shape, kernel_size, stride, padding, dilation, ceil_mode)


def _pool_geom_checked(shape, kernel_size, stride, padding, dilation, ceil_mode):
    N, C, H, W = shape
    kh, kw = _pair("kernel_size", kernel_size)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = _pair("stride", stride)
    ph, pw = _pair("padding", padding)
    dh, dw = _pair("dilation", dilation)
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive, got {stride!r}")
    if dh < 1 or dw < 1:
        raise ValueError(f"dilation must be positive, got {dilation!r}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(
            f"padding={padding!r} must be at most half of kernel_size={kernel_size!r}")
    if H < 1 or W < 1:
        raise ValueError(f"input has an empty spatial dimension: shape {tuple(shape)}")

    def out(size, k, s, p, d):
        span = size + 2 * p - d * (k - 1) - 1
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1  # floor division, as PyTorch
        if ceil_mode and (o - 1) * s >= size + p:  # the last window must start inside
            o -= 1
        if o < 1:
            raise ValueError(
                f"kernel_size={kernel_size!r} with dilation={dilation!r} is larger than the "
                f"padded input ({H + 2 * ph}, {W + 2 * pw}): output size would be {o}")
        return o

    return (out(H, kh, sh, ph, dh), out(W, kw, sw, pw, dw)), (kh, kw, sh, sw, ph, pw, dh, dw)


def _pool_input(input, name="input"):
    x = _as_array(name, input)
    cdt, rdt = _compute_dtype(**{name: x})
    x, unbatched = _batched(name, x)
    return x, cdt, rdt, unbatched


def _unbatch(a, unbatched):
    return a[0] if unbatched else a


def _shape_arg(name: str, v) -> Tuple[int, ...]:
    """A shape argument (input_shape, input_size, weight_size) as a tuple of ints >= 0."""
    if not isinstance(v, (tuple, list)) and not (isinstance(v, np.ndarray) and v.ndim == 1):
        raise TypeError(f"{name} must be a tuple of ints, got {v!r}")
    shape = tuple(_int(name, s) for s in v)
    if any(d < 0 for d in shape):
        raise ValueError(f"{name} must not have negative entries, got {shape}")
    return shape


def _input_shape(input_shape, fn_name):
    """(shape, batched shape, unbatched?) for a pooling backward's input_shape."""
    shape = _shape_arg("input_shape", input_shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"{fn_name}: input_shape must have 3 or 4 dims, got {shape}")
    unbatched = len(shape) == 3
    return shape, ((1,) + shape if unbatched else shape), unbatched


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling as ``torch.nn.functional.max_pool2d``.

    Returns y, or (y, indices) with int64 indices ``iy * W + ix`` into each
    input plane. Ties keep the first position in the window; NaN wins.
    """
    # Fast path, all in C++ (as conv2d's): a plain batched float32/float64
    # array and int window arguments; None sends anything else (and every
    # argument to reject) through the checks below.
    if type(ceil_mode) is bool and type(return_indices) is bool:
        r = _C.max_pool2d_fast(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        if r is not None:
            return r
    x, cdt, rdt, unbatched = _pool_input(input)
    (OH, OW), win = _pool_geom(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    N, C = x.shape[:2]
    y = np.empty((N, C, OH, OW), dtype=cdt)
    idx = np.empty((N, C, OH, OW), dtype=np.int64) if return_indices else None
    if y.size:
        _C.max_pool2d_forward(_prepare(x, cdt), y, idx, *win)
    y = _unbatch(_finish(y, rdt), unbatched)
    return (y, _unbatch(idx, unbatched)) if return_indices else y


def _scatter_backward(grad_output, indices, input_shape, fn_name):
    shape, full, unbatched = _input_shape(input_shape, fn_name)
    dy = _as_array("grad_output", grad_output)
    idx = _as_array("indices", indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fn_name}: indices must be an integer array, got dtype {idx.dtype}")
    if idx.shape != dy.shape:
        raise ValueError(f"{fn_name}: indices shape {idx.shape} must match grad_output shape {dy.shape}")
    cdt, rdt = _compute_dtype(grad_output=dy)
    # grad_output keeps the input's leading (N, C) or (C,) dims.
    if dy.ndim != len(shape) or dy.shape[:-2] != shape[:-2]:
        raise ValueError(f"{fn_name}: grad_output shape {dy.shape} does not match input_shape {shape}")
    if unbatched:
        dy, idx = dy[None], idx[None]
    dx = np.empty(full, dtype=cdt)
    if dx.size:
        if dy.size == 0:
            dx[...] = 0
        else:
            try:
                _C.max_pool2d_backward(_prepare(dy, cdt), np.ascontiguousarray(idx, np.int64), dx)
            except ValueError as e:
                raise ValueError(f"{fn_name}: indices out of range for input_shape {shape}: {e}") from None
    return _unbatch(_finish(dx, rdt), unbatched)


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool2d`: grad_output scattered (added) at ``indices``."""
    dx = _C.max_pool2d_backward_fast(grad_output, indices, input_shape)  # (see max_pool2d)
    if dx is not None:
        return dx
    return _scatter_backward(grad_output, indices, input_shape, "max_pool2d_backward")


def _avg_args(count_include_pad, divisor_override):
    if divisor_override is None:
        dov = 0
    else:
        dov = _int("divisor_override", divisor_override)
        if dov <= 0:
            raise ValueError(f"divisor_override must be positive, got {divisor_override!r}")
    return bool(count_include_pad), dov


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """2-D average pooling as ``torch.nn.functional.avg_pool2d``."""
    if type(ceil_mode) is bool and type(count_include_pad) is bool:  # (see max_pool2d)
        y = _C.avg_pool2d_fast(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                               divisor_override)
        if y is not None:
            return y
    x, cdt, rdt, unbatched = _pool_input(input)
    (OH, OW), win = _pool_geom(x.shape, kernel_size, stride, padding, 1, ceil_mode)
    cip, dov = _avg_args(count_include_pad, divisor_override)
    y = np.empty(x.shape[:2] + (OH, OW), dtype=cdt)
    if y.size:
        _C.avg_pool2d_forward(_prepare(x, cdt), y, *win[:6], cip, dov)
    return _unbatch(_finish(y, rdt), unbatched)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d` w.r.t. its input (same window arguments)."""
    shape, full, unbatched = _input_shape(input_shape, "avg_pool2d_backward")
    dy = _as_array("grad_output", grad_output)
    cdt, rdt = _compute_dtype(grad_output=dy)
    (OH, OW), win = _pool_geom(full, kernel_size, stride, padding, 1, ceil_mode)
    cip, dov = _avg_args(count_include_pad, divisor_override)
    expect = full[:2] + (OH, OW)
    if (dy[None] if unbatched else dy).shape != expect:
        raise ValueError(f"grad_output must have shape {expect[1:] if unbatched else expect}, got {dy.shape}")
    dx = np.empty(full, dtype=cdt)
    if dx.size:
        _C.avg_pool2d_backward(_prepare(dy[None] if unbatched else dy, cdt), dx, *win[:6], cip, dov)
    return _unbatch(_finish(dx, rdt), unbatched)


def _adaptive_size(output_size, H, W):
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
        oh = H if output_size[0] is None else _int("output_size", output_size[0])
        ow = W if output_size[1] is None else _int("output_size", output_size[1])
    else:
        oh = ow = _int("output_size", output_size)
    if oh < 1 or ow < 1:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    return oh, ow


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling as ``torch.nn.functional.adaptive_avg_pool2d``.

    Bin i covers input rows [floor(i*H/OH), ceil((i+1)*H/OH)); output_size=1
    is global average pooling.
    """
    x, cdt, rdt, unbatched = _pool_input(input)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"input has an empty spatial dimension: shape {x.shape}")
    oh, ow = _adaptive_size(output_size, *x.shape[2:])
    y = np.empty(x.shape[:2] + (oh, ow), dtype=cdt)
    if y.size:
        _C.adaptive_avg_pool2d_forward(_prepare(x, cdt), y)
    return _unbatch(_finish(y, rdt), unbatched)


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of :func:`adaptive_avg_pool2d` w.r.t. its input."""
    shape, full, unbatched = _input_shape(input_shape, "adaptive_avg_pool2d_backward")
    dy = _as_array("grad_output", grad_output)
    cdt, rdt = _compute_dtype(grad_output=dy)
    dyb = dy[None] if unbatched else dy
    if dyb.ndim != 4 or dyb.shape[:2] != full[:2] or dyb.shape[2] < 1 or dyb.shape[3] < 1:
        raise ValueError(f"grad_output shape {dy.shape} does not match input_shape {shape}")
    dx = np.empty(full, dtype=cdt)
    if dx.size:
        _C.adaptive_avg_pool2d_backward(_prepare(dyb, cdt), dx)
    return _unbatch(_finish(dx, rdt), unbatched)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Adaptive max pooling as ``torch.nn.functional.adaptive_max_pool2d``."""
    x, cdt, rdt, unbatched = _pool_input(input)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"input has an empty spatial dimension: shape {x.shape}")
    oh, ow = _adaptive_size(output_size, *x.shape[2:])
    y = np.empty(x.shape[:2] + (oh, ow), dtype=cdt)
    idx = np.empty(y.shape, dtype=np.int64)
    if y.size:
        _C.adaptive_max_pool2d_forward(_prepare(x, cdt), y, idx)
    y = _unbatch(_finish(y, rdt), unbatched)
    return (y, _unbatch(idx, unbatched)) if return_indices else y


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`adaptive_max_pool2d`: grad_output scattered at ``indices``."""
    return _scatter_backward(grad_output, indices, input_shape, "adaptive_max_pool2d_backward")


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------
def _real(name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    return float(v)


def _unary(kernel, input, alpha=0.0):
    x = _as_array("input", input)
    cdt, rdt = _compute_dtype(input=x)
    xc = _prepare(x, cdt)
    y = np.empty_like(xc)
    if y.size:
        _C.activation_forward(kernel, xc, y, alpha)
    return _finish(y, rdt)


def _unary_backward(kernel, grad_output, saved, saved_name, alpha=0.0):
    dy = _as_array("grad_output", grad_output)
    s = _as_array(saved_name, saved)
    if dy.shape != s.shape:
        raise ValueError(f"grad_output shape {dy.shape} must match {saved_name} shape {s.shape}")
    cdt, rdt = _compute_dtype(**{"grad_output": dy, saved_name: s})
    dyc = _prepare(dy, cdt)
    dx = np.empty_like(dyc)
    if dx.size:
        _C.activation_backward(kernel, dyc, _prepare(s, cdt), dx, alpha)
    return _finish(dx, rdt)


def relu(input):
    """max(x, 0); NaN propagates."""
    return _unary("relu", input)


def relu_backward(grad_output, input):
    """grad_output where input > 0, else 0 (takes the forward input)."""
    return _unary_backward("relu", grad_output, input, "input")


def leaky_relu(input, negative_slope=0.01):
    """x if x > 0 else negative_slope * x."""
    return _unary("leaky_relu", input, _real("negative_slope", negative_slope))


def leaky_relu_backward(grad_output, input, negative_slope=0.01):
    """grad_output * (1 if input > 0 else negative_slope)."""
    return _unary_backward("leaky_relu", grad_output, input, "input",
                           _real("negative_slope", negative_slope))


def elu(input, alpha=1.0):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return _unary("elu", input, _real("alpha", alpha))


def elu_backward(grad_output, input, alpha=1.0):
    """grad_output * (1 if input > 0 else alpha * exp(input)) (takes the forward input)."""
    return _unary_backward("elu", grad_output, input, "input", _real("alpha", alpha))


def sigmoid(input):
    """1 / (1 + exp(-x)), evaluated without overflow for any x."""
    return _unary("sigmoid", input)


def sigmoid_backward(grad_output, output):
    """grad_output * y * (1 - y), from the forward OUTPUT y."""
    return _unary_backward("sigmoid", grad_output, output, "output")


def tanh(input):
    """Hyperbolic tangent."""
    return _unary("tanh", input)


def tanh_backward(grad_output, output):
    """grad_output * (1 - y**2), from the forward OUTPUT y."""
    return _unary_backward("tanh", grad_output, output, "output")


def _gelu_kernel(approximate):
    if approximate == "none":
        return "gelu"
    if approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu(input, approximate="none"):
    """GELU: x * Phi(x) (approximate='none', erf form) or the tanh approximation."""
    return _unary(_gelu_kernel(approximate), input)


def gelu_backward(grad_output, input, approximate="none"):
    """Gradient of :func:`gelu` (takes the forward input)."""
    return _unary_backward(_gelu_kernel(approximate), grad_output, input, "input")


def _axis_view(shape, axis, name="axis"):
    axis = _int(name, axis)
    nd = len(shape)
    if not -nd <= axis < nd:
        raise ValueError(f"{name}={axis} is out of range for a {nd}-d input")
    axis %= nd
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return axis, outer, shape[axis], inner


def _softmax(log, input, axis):
    x = _as_array("input", input)
    cdt, rdt = _compute_dtype(input=x)
    _, outer, dim, inner = _axis_view(x.shape, axis)
    xc = _prepare(x, cdt)
    y = np.empty_like(xc)
    if y.size:
        _C.softmax_forward(log, xc, y, outer, dim, inner)
    return _finish(y, rdt)


def _softmax_backward(log, grad_output, output, axis):
    dy = _as_array("grad_output", grad_output)
    y = _as_array("output", output)
    if dy.shape != y.shape:
        raise ValueError(f"grad_output shape {dy.shape} must match output shape {y.shape}")
    cdt, rdt = _compute_dtype(grad_output=dy, output=y)
    _, outer, dim, inner = _axis_view(y.shape, axis)
    dyc = _prepare(dy, cdt)
    dx = np.empty_like(dyc)
    if dx.size:
        _C.softmax_backward(log, dyc, _prepare(y, cdt), dx, outer, dim, inner)
    return _finish(dx, rdt)


def softmax(input, axis=1):
    """exp(x) / sum(exp(x)) along ``axis`` (max subtracted first)."""
    return _softmax(False, input, axis)


def softmax_backward(grad_output, output, axis=1):
    """Gradient of :func:`softmax` from its OUTPUT y: y * (g - sum(g * y))."""
    return _softmax_backward(False, grad_output, output, axis)


def log_softmax(input, axis=1):
    """x - logsumexp(x) along ``axis``."""
    return _softmax(True, input, axis)


def log_softmax_backward(grad_output, output, axis=1):
    """Gradient of :func:`log_softmax` from its OUTPUT y: g - exp(y) * sum(g)."""
    return _softmax_backward(True, grad_output, output, axis)


def maxout(input, pieces, axis=1):
    """Max over groups of ``pieces`` consecutive channels along ``axis``.

    Output channel j is the max of input channels j*pieces .. j*pieces+pieces-1,
    so the axis shrinks from C to C // pieces.
    """
    x = _as_array("input", input)
    cdt, rdt = _compute_dtype(input=x)
    pieces = _int("pieces", pieces)
    ax, outer, dim, inner = _axis_view(x.shape, axis)
    if pieces < 1 or dim % pieces:
        raise ValueError(f"pieces={pieces} must be positive and divide the {dim} channels on axis {ax}")
    shape = x.shape[:ax] + (dim // pieces,) + x.shape[ax + 1:]
    y = np.empty(shape, dtype=cdt)
    if y.size:
        _C.maxout_forward(_prepare(x, cdt), y, outer, dim, inner, pieces)
    return _finish(y, rdt)


def maxout_backward(grad_output, input, pieces, axis=1):
    """Gradient of :func:`maxout`: each output gradient goes to its first maximal piece."""
    dy = _as_array("grad_output", grad_output)
    x = _as_array("input", input)
    cdt, rdt = _compute_dtype(grad_output=dy, input=x)
    pieces = _int("pieces", pieces)
    ax, outer, dim, inner = _axis_view(x.shape, axis)
    if pieces < 1 or dim % pieces:
        raise ValueError(f"pieces={pieces} must be positive and divide the {dim} channels on axis {ax}")
    expect = x.shape[:ax] + (dim // pieces,) + x.shape[ax + 1:]
    if dy.shape != expect:
        raise ValueError(f"grad_output must have shape {expect}, got {dy.shape}")
    dx = np.empty(x.shape, dtype=cdt)
    if dx.size:
        _C.maxout_backward(_prepare(dy, cdt), _prepare(x, cdt), dx, outer, dim, inner, pieces)
    return _finish(dx, rdt)


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------
_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


def _reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return _REDUCTIONS[reduction]


def _logits(input, name="input"):
    x = _as_array(name, input)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-d (N, C), got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one class, got shape {x.shape}")
    return x


def _class_targets(target, N, C):
    t = _as_array("target", target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != (N,):
        raise ValueError(f"target must have shape ({N},) for input of {N} rows, got {t.shape}")
    if t.size:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"target contains class index {bad}, outside [0, {C})")
    return np.ascontiguousarray(t, dtype=np.int64)


def _ce_targets(x, target):
    """(class indices or None, probabilities or None, extra arrays for dtype)."""
    t = _as_array("target", target)
    N, C = x.shape
    if t.dtype.kind in "iu":
        return _class_targets(t, N, C), None
    if t.dtype.kind != "f":
        raise TypeError(f"target must be integer class indices or float probabilities, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"probability target must have the input's shape {x.shape}, got {t.shape}")
    return None, t


def _smoothing(label_smoothing):
    eps = _real("label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def _loss_out(code, n, cdt, rdt):
    return np.empty(n if code == 0 else 1, dtype=cdt)


def _loss_result(out, code, rdt, n):
    if code == 0:
        return _finish(out, rdt)
    if n == 0 and code == 2:  # the mean of nothing
        return rdt.type(np.nan)
    return rdt.type(out[0])


def _grad_scalar_or_rows(grad_output, code, n, cdt, shape_none):
    g = _as_array("grad_output", grad_output)
    if g.dtype.kind not in "fiub":
        raise TypeError(f"grad_output has unsupported dtype {g.dtype}")
    if code == 0:
        if g.shape != shape_none:
            raise ValueError(f"grad_output must have shape {shape_none} for reduction='none', got {g.shape}")
    elif g.size != 1:
        raise ValueError(f"grad_output must be a scalar for a reduced loss, got shape {g.shape}")
    return np.ascontiguousarray(g, dtype=cdt).reshape(-1)


def _grad_dtype_arg(grad_output):
    """grad_output's part in the dtype promotion: none for a plain Python
    number (weak, as NumPy treats it: 1.0 keeps a float32 loss float32), else
    its array (a float64 grad_output promotes a float32 input)."""
    if type(grad_output) in (int, float, bool):
        return {}
    return {"grad_output": _as_array("grad_output", grad_output)}


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, C), as ``torch.nn.functional.cross_entropy``.

    target: class indices (N,) or probabilities (N, C). The softmax and the
    log-likelihood are fused in one stable pass. Returns a scalar for
    'mean' / 'sum' and (N,) for 'none'.
    """
    x = _logits(input)
    code = _reduction(reduction)
    eps = _smoothing(label_smoothing)
    tidx, q = _ce_targets(x, target)
    cdt, rdt = _compute_dtype(input=x) if q is None else _compute_dtype(input=x, target=q)
    N = x.shape[0]
    out = _loss_out(code, N, cdt, rdt)
    if N:
        _C.cross_entropy_forward(_prepare(x, cdt), tidx, None if q is None else _prepare(q, cdt),
                                 eps, code, out)
    elif code:
        out[0] = 0
    return _loss_result(out, code, rdt, N)


def cross_entropy_backward(grad_output, input, target, reduction="mean", label_smoothing=0.0):
    """Gradient of :func:`cross_entropy` w.r.t. the logits: g * (softmax - smoothed target)."""
    x = _logits(input)
    code = _reduction(reduction)
    eps = _smoothing(label_smoothing)
    tidx, q = _ce_targets(x, target)
    extra = _grad_dtype_arg(grad_output)
    if q is not None:
        extra["target"] = q
    cdt, rdt = _compute_dtype(input=x, **extra)
    N = x.shape[0]
    g = _grad_scalar_or_rows(grad_output, code, N, cdt, (N,))
    dx = np.empty(x.shape, dtype=cdt)
    if N:
        _C.cross_entropy_backward(_prepare(x, cdt), tidx, None if q is None else _prepare(q, cdt),
                                  eps, g, 1.0 / N if code == 2 else 1.0, dx)
    return _finish(dx, rdt)


def nll_loss(input, target, reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C) at class indices (N,)."""
    x = _logits(input)
    code = _reduction(reduction)
    cdt, rdt = _compute_dtype(input=x)
    t = _class_targets(target, *x.shape)
    N = x.shape[0]
    out = _loss_out(code, N, cdt, rdt)
    if N:
        _C.nll_loss_forward(_prepare(x, cdt), t, code, out)
    elif code:
        out[0] = 0
    return _loss_result(out, code, rdt, N)


def nll_loss_backward(grad_output, input, target, reduction="mean"):
    """Gradient of :func:`nll_loss`: -g at each target class, 0 elsewhere."""
    x = _logits(input)
    code = _reduction(reduction)
    cdt, rdt = _compute_dtype(input=x, **_grad_dtype_arg(grad_output))
    t = _class_targets(target, *x.shape)
    N = x.shape[0]
    g = _grad_scalar_or_rows(grad_output, code, N, cdt, (N,))
    dx = np.empty(x.shape, dtype=cdt)
    if N:
        _C.nll_loss_backward(t, g, 1.0 / N if code == 2 else 1.0, dx)
    return _finish(dx, rdt)


def _mse_args(input, target, **extra):
    x = _as_array("input", input)
    t = _as_array("target", target)
    if x.shape != t.shape:
        raise ValueError(f"target shape {t.shape} must match input shape {x.shape}")
    cdt, rdt = _compute_dtype(input=x, target=t, **extra)
    return x, t, cdt, rdt


def mse_loss(input, target, reduction="mean"):
    """Mean squared error, as ``torch.nn.functional.mse_loss`` (shapes must match)."""
    x, t, cdt, rdt = _mse_args(input, target)
    code = _reduction(reduction)
    if code == 0:
        out = np.empty(x.shape, dtype=cdt)
    else:
        out = np.empty(1, dtype=cdt)
    if x.size:
        _C.mse_loss_forward(_prepare(x, cdt), _prepare(t, cdt), code, out)
    elif code:
        out[0] = 0
    return _loss_result(out, code, rdt, x.size)


def mse_loss_backward(grad_output, input, target, reduction="mean"):
    """Gradient of :func:`mse_loss` w.r.t. input: 2 (x - t) g (/ numel for 'mean')."""
    x, t, cdt, rdt = _mse_args(input, target, **_grad_dtype_arg(grad_output))
    code = _reduction(reduction)
    g = _grad_scalar_or_rows(grad_output, code, x.size, cdt, x.shape)
    dx = np.empty(x.shape, dtype=cdt)
    if x.size:
        _C.mse_loss_backward(_prepare(x, cdt), _prepare(t, cdt), g,
                             1.0 / x.size if code == 2 else 1.0, dx)
    return _finish(dx, rdt)


# --------------------------------------------------------------------------
# pad, linear, batch norm
# --------------------------------------------------------------------------
_PAD_MODES = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}


def _pad_args(shape, padding, mode):
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise ValueError(f"mode must be 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}")
    if not isinstance(padding, (tuple, list)) or len(padding) not in (2, 4):
        raise ValueError(f"padding must be (left, right) or (left, right, top, bottom), got {padding!r}")
    pads = [_int("padding", v) for v in padding]
    if min(pads) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    l, r = pads[0], pads[1]
    t, b = (pads[2], pads[3]) if len(pads) == 4 else (0, 0)
    nd = len(shape)
    if nd < len(pads) // 2:
        raise ValueError(f"padding {padding!r} needs an input with at least {len(pads) // 2} dims, got {nd}")
    if mode != "constant" and nd not in (3, 4):
        raise ValueError(f"mode={mode!r} pads 3-d or 4-d input, got {nd}-d shape {tuple(shape)}")
    W = shape[-1]
    H = shape[-2] if nd >= 2 else 1
    if mode == "reflect" and (l >= W or r >= W or t >= H or b >= H):
        raise ValueError(f"reflect padding {padding!r} must be smaller than the input size ({H}, {W})")
    if mode == "circular" and (l > W or r > W or t > H or b > H):
        raise ValueError(f"circular padding {padding!r} must not exceed the input size ({H}, {W})")
    if mode != "constant" and (H == 0 or W == 0) and any(pads):
        raise ValueError(f"mode={mode!r} cannot pad an empty input of shape {tuple(shape)}")
    out = list(shape)
    out[-1] += l + r
    if nd >= 2:
        out[-2] += t + b
    return (l, r, t, b), tuple(out)


def pad(input, padding, mode="constant", value=0.0):
    """Pad the last one or two axes, as ``torch.nn.functional.pad``.

    padding: (left, right) or (left, right, top, bottom), non-negative.
    mode: 'constant' (with ``value``), 'reflect', 'replicate' or 'circular'.
    """
    x = _as_array("input", input)
    cdt, rdt = _compute_dtype(input=x)
    (l, r, t, b), shape = _pad_args(x.shape, padding, mode)
    value = _real("value", value)
    if mode != "constant" and value != 0.0:
        raise ValueError(f"value={value!r} is only used by mode='constant', not mode={mode!r}")
    y = np.empty(shape, dtype=cdt)
    if y.size and x.size == 0:  # nothing to copy, reflect or wrap: only the fill value
        if mode != "constant":
            raise ValueError(f"mode={mode!r} needs a non-empty input, got shape {x.shape}")
        y.fill(value)
    elif y.size:
        _C.pad_forward(_prepare(x, cdt), y, l, r, t, b, _PAD_MODES[mode], value)
    return _finish(y, rdt)


def pad_backward(grad_output, input_shape, padding, mode="constant"):
    """Gradient of :func:`pad`: each output gradient is added into its source element."""
    shape = _shape_arg("input_shape", input_shape)
    dy = _as_array("grad_output", grad_output)
    cdt, rdt = _compute_dtype(grad_output=dy)
    (l, r, t, b), out_shape = _pad_args(shape, padding, mode)
    if dy.shape != out_shape:
        raise ValueError(f"grad_output must have the padded shape {out_shape}, got {dy.shape}")
    dx = np.empty(shape, dtype=cdt)
    if dx.size:
        _C.pad_backward(_prepare(dy, cdt), dx, l, r, t, b, _PAD_MODES[mode])
    return _finish(dx, rdt)


def _linear_args(input, weight):
    x = _as_array("input", input)
    w = _as_array("weight", weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-d (out_features, in_features), got shape {w.shape}")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"input's last dim must be in_features={w.shape[1]}, got shape {x.shape}")
    return x, w


def linear(input, weight, bias=None):
    """x @ weight.T + bias on pyconv's GEMM; input (..., in), weight (out, in)."""
    x, w = _linear_args(input, weight)
    arrays = {"input": x, "weight": w}
    if bias is not None:
        b = _as_array("bias", bias)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
        arrays["bias"] = b
    cdt, rdt = _compute_dtype(**arrays)
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    y = np.empty((rows, w.shape[0]), dtype=cdt)
    if y.size and w.shape[1] == 0:  # an empty sum: the bias alone
        y[...] = 0 if bias is None else _prepare(b, cdt)
    elif y.size:
        x2 = _prepare(x, cdt).reshape(rows, w.shape[1])
        _C.linear_forward(x2, _prepare(w, cdt), None if bias is None else _prepare(b, cdt), y)
    return _finish(y.reshape(x.shape[:-1] + (w.shape[0],)), rdt)


def linear_backward(grad_output, input, weight, output_mask=(True, True, True)):
    """Gradients of :func:`linear`: (grad_input, grad_weight, grad_bias); None where masked."""
    x, w = _linear_args(input, weight)
    dy = _as_array("grad_output", grad_output)
    if dy.shape != x.shape[:-1] + (w.shape[0],):
        raise ValueError(f"grad_output must have shape {x.shape[:-1] + (w.shape[0],)}, got {dy.shape}")
    if not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3:
        raise ValueError(f"output_mask must have three bools, got {output_mask!r}")
    cdt, rdt = _compute_dtype(grad_output=dy, input=x, weight=w)
    K, N = w.shape[1], w.shape[0]
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    want = [bool(m) for m in output_mask]
    dx = np.empty((rows, K), dtype=cdt) if want[0] else None
    dw = np.empty((N, K), dtype=cdt) if want[1] else None
    db = np.empty((N,), dtype=cdt) if want[2] else None
    if rows == 0 or K == 0 or N == 0:  # empty products: sums of nothing are 0
        for a in (dx, dw, db):
            if a is not None:
                a[...] = 0
        if db is not None and rows and N:
            db[...] = _prepare(dy, cdt).reshape(rows, N).sum(axis=0)
    else:
        x2 = _prepare(x, cdt).reshape(rows, K)
        dy2 = _prepare(dy, cdt).reshape(rows, N)
        _C.linear_backward(dy2, x2, _prepare(w, cdt), dx, dw, db)
    return (None if dx is None else _finish(dx.reshape(x.shape), rdt),
            None if dw is None else _finish(dw, rdt),
            None if db is None else _finish(db, rdt))


def _channel_vec(name, v, C, cdt, writable=False):
    if v is None:
        return None
    if writable:
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f" or not v.flags.writeable:
            raise TypeError(f"{name} must be a writable float ndarray (it is updated in place)")
    a = np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {a.shape}")
    return np.ascontiguousarray(a, dtype=cdt)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, return_stats=False):
    """Batch normalisation, as ``torch.nn.functional.batch_norm``.

    input: (N, C), (N, C, L) or (N, C, H, W); statistics per channel. In
    training mode the batch statistics normalise (biased variance) and
    running_mean / running_var (if given) are updated in place with the
    unbiased variance; otherwise the running statistics are used. With
    return_stats=True returns (y, save_mean, save_invstd) for
    :func:`batch_norm_backward`.
    """
    x = _as_array("input", input)
    if x.ndim < 2:
        raise ValueError(f"input must have at least 2 dims (N, C, ...), got shape {x.shape}")
    C = x.shape[1]
    # The per-channel vectors follow the input's dtype (as PyTorch's mixed
    # precision: float16 activations with float32 parameters give float16).
    cdt, rdt = _compute_dtype(input=x)
    momentum = _real("momentum", momentum)
    eps = _real("eps", eps)
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    rm = _channel_vec("running_mean", running_mean, C, cdt, writable=training)
    rv = _channel_vec("running_var", running_var, C, cdt, writable=training)
    if not training and (rm is None or rv is None):
        raise ValueError("running_mean and running_var are required when training=False")
    w = _channel_vec("weight", weight, C, cdt)
    b = _channel_vec("bias", bias, C, cdt)
    xc = _prepare(x, cdt)
    count = x.size // C if C else 0
    if training:
        if count <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got input shape {x.shape}")
        mean, var, invstd = (np.empty(C, dtype=cdt) for _ in range(3))
        y = np.empty_like(xc)
        # statistics (one pass), invstd = 1 / sqrt(var + eps) in cdt, then y (a second pass)
        _C.batch_norm_train(xc, eps, w, b, y, mean, var, invstd)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += momentum * var * (count / (count - 1))
    else:
        invstd = (1.0 / np.sqrt(rv + eps)).astype(cdt)
        y = np.empty_like(xc)
        if y.size:
            _C.batch_norm_normalize(xc, np.ascontiguousarray(rm, cdt), invstd, w, b, y)
        mean = rm
    y = _finish(y, rdt)
    return (y, mean.astype(cdt, copy=True), invstd) if return_stats else y


def batch_norm_backward(grad_output, input, weight, save_mean, save_invstd, training=True,
                        output_mask=(True, True, True)):
    """Gradients of :func:`batch_norm`: (grad_input, grad_weight, grad_bias); None where masked.

    save_mean / save_invstd are the statistics the forward used
    (``return_stats=True``); weight None means 1.
    """
    x = _as_array("input", input)
    dy = _as_array("grad_output", grad_output)
    if x.ndim < 2:
        raise ValueError(f"input must have at least 2 dims (N, C, ...), got shape {x.shape}")
    if dy.shape != x.shape:
        raise ValueError(f"grad_output shape {dy.shape} must match input shape {x.shape}")
    if not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3:
        raise ValueError(f"output_mask must have three bools, got {output_mask!r}")
    C = x.shape[1]
    cdt, rdt = _compute_dtype(grad_output=dy, input=x)  # vectors follow, as in batch_norm
    mean = _channel_vec("save_mean", save_mean, C, cdt)
    invstd = _channel_vec("save_invstd", save_invstd, C, cdt)
    if mean is None or invstd is None:
        raise ValueError("save_mean and save_invstd are required")
    w = _channel_vec("weight", weight, C, cdt)
    want = [bool(m) for m in output_mask]
    dx = np.empty(x.shape, dtype=cdt) if want[0] else None
    dw = np.empty(C, dtype=cdt) if want[1] else None
    db = np.empty(C, dtype=cdt) if want[2] else None
    _C.batch_norm_backward(_prepare(dy, cdt), _prepare(x, cdt), mean, invstd, w, bool(training),
                           dx, dw, db)
    return tuple(None if a is None else _finish(a, rdt) for a in (dx, dw, db))
