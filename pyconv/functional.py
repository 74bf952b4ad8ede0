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
    "conv2d",
    "conv2d_backward",
    "conv2d_input",
    "conv2d_weight",
    "gemm",
]

_MAX_ELEMS = 2**62


# --------------------------------------------------------------------------
# argument normalisation
# --------------------------------------------------------------------------
def _int(name: str, v) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}") from None


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


def _compute_dtype(**arrays) -> Tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) for the given arrays, or TypeError."""
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
    """The one conversion point: native-endian, C-contiguous, of `dtype`."""
    return np.ascontiguousarray(a, dtype=dtype)


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


def _conv_geom(x_shape, w_shape, stride, padding, dilation, groups,
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
    ekh, ekw = dh * (KH - 1) + 1, dw * (KW - 1) + 1  # dilated kernel extent
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' requires stride=1, got stride={stride!r}")
            # PyTorch: total padding d*(k-1), the odd unit goes to the bottom/right.
            pt, pl = (ekh - 1) // 2, (ekw - 1) // 2
            pb, pr = ekh - 1 - pt, ekw - 1 - pl
        else:
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        pt, pl = _pair("padding", padding)
        pb, pr = pt, pl
        if pt < 0 or pl < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
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
           dilation: IntOrPair = 1, groups: int = 1) -> np.ndarray:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    input: (N, C, H, W) or (C, H, W); weight: (OC, C/groups, kH, kW);
    bias: (OC,) or None. stride, padding and dilation take an int or a pair;
    padding also takes 'valid' or 'same' (stride 1 only; an odd total goes to
    the bottom/right, as in PyTorch). Returns a new array (N, OC, OH, OW).
    """
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
                    output_mask=(True, True, True)):
    """Gradients of :func:`conv2d`: returns ``(grad_input, grad_weight, grad_bias)``.

    grad_output has conv2d's output shape. grad_bias is grad_output summed
    over N, H and W. ``output_mask`` (three bools) skips gradients that are
    not needed; a skipped gradient is returned as None. The results are
    fresh arrays (overwritten, never accumulated).
    """
    dy = _as_array("grad_output", grad_output)
    x = _as_array("input", input)
    w = _as_array("weight", weight)
    if len(output_mask) != 3:
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
                 groups: int = 1) -> np.ndarray:
    """Gradient of conv2d w.r.t. its input, as ``torch.nn.grad.conv2d_input``."""
    shape = tuple(_int("input_size", s) for s in input_size)
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
                  groups: int = 1) -> np.ndarray:
    """Gradient of conv2d w.r.t. its weight, as ``torch.nn.grad.conv2d_weight``."""
    shape = tuple(_int("weight_size", s) for s in weight_size)
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
    beta = float(beta)

    def operand(m):
        if m.dtype == cdt and m.dtype.isnative and all(s % m.itemsize == 0 for s in m.strides):
            return m
        return np.ascontiguousarray(m, dtype=cdt)

    shape = (a.shape[0], b.shape[1])
    if out is None:
        if beta != 0.0:
            raise ValueError("gemm: beta != 0 needs an out array")
        out = np.empty(shape, dtype=cdt)
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
        return out
    if target.shape[1] == 1 and target.strides[1] != target.itemsize:
        target = np.ascontiguousarray(target)
    _C.gemm(operand(a), operand(b), target, beta)
    if target is not out:
        out[...] = target
    return _finish(out, rdt) if out.dtype != rdt and out is not None else out
