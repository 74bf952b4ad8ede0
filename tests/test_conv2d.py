"""conv2d forward and backward against the float64 direct-loop reference.

Tolerances (got vs the float64 reference ref, elementwise, with
scale = max(max|ref|, 1) over the whole array):

    float64:  |got - ref| <= 1e-10 * |ref| + 1e-10 * scale
    float32:  |got - ref| <= 1e-4  * |ref| + 1e-4  * scale
    float16:  |got - ref| <= 2e-3  * |ref| + 2e-3  * scale   (computed in float32,
              rounded once to float16: half an ulp is 4.9e-4 relative)

The absolute term is relative to the array's largest value because every
output is a sum of products whose terms can cancel: a float32 sum of n unit
terms carries an error of about n * 6e-8 * max|term| however small the sum.
Inputs are N(0, 1), so the scale is O(sqrt(reduction length)). For float32
and float16 the reference runs (in float64) on the already-rounded inputs, so
the tolerance covers only pyconv's arithmetic. A wrong tap, channel or
padding gives errors of order 1 * scale, far above these bounds.

Sections: the grid (per ISA, float32 and float64, pyconv.testing.cases),
central-difference gradient checks, hypothesis property tests, thread-count
independence, memory layouts and dtypes, outputs never read before written,
non-finite values.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

import pyconv
from pyconv import _C
from pyconv.testing.cases import conv2d_grid, ConvCase
from pyconv.testing.gradcheck import gradcheck, numerical_grad
from pyconv.testing.compare import assert_close
from pyconv.testing.reference import conv2d_backward_ref, conv2d_ref, resolve_padding


# --------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------
GRID = conv2d_grid()
DTYPES = [np.float32, np.float64]


@functools.lru_cache(maxsize=None)
def _grid_ref(case: ConvCase):
    x, w, b, dy = case.arrays()
    y = conv2d_ref(x, w, b, **case.kwargs)
    dx, dw, db = conv2d_backward_ref(dy, x, w, **case.kwargs)
    return (x, w, b, dy), (y, dx, dw, db)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_grid_forward_backward(case, dtype, isa):
    (x, w, b, dy), (y_ref, dx_ref, dw_ref, db_ref) = _grid_ref(case)
    x, w, dy = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    b = None if b is None else b.astype(dtype)
    # The reference sees exactly the values pyconv sees (rounded to dtype).
    if dtype is np.float32:
        y_ref = conv2d_ref(x, w, b, **case.kwargs)
        dx_ref, dw_ref, db_ref = conv2d_backward_ref(dy, x, w, **case.kwargs)

    y = pyconv.conv2d(x, w, b, **case.kwargs)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, "y")
    # Tiny forward problems run as direct loops; the GEMM paths must stay
    # right on them too (im2col edges, partial tiles), so check both.
    old = _C.get_conv_direct_max()
    try:
        _C.set_conv_direct_max(0)
        assert_close(pyconv.conv2d(x, w, b, **case.kwargs), y_ref, dtype, "y (GEMM paths)")
    finally:
        _C.set_conv_direct_max(old)

    dx, dw, db = pyconv.conv2d_backward(dy, x, w, **case.kwargs)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, "dx")
    assert_close(dw, dw_ref, dtype, "dw")
    assert_close(db, db_ref, dtype, "db")

    # torch.nn.grad-style entry points give the same gradients.
    dx2 = pyconv.conv2d_input(x.shape, w, dy, **case.kwargs)
    dw2 = pyconv.conv2d_weight(x, w.shape, dy, **case.kwargs)
    assert dx2.dtype == dw2.dtype == dtype
    assert_close(dx2, dx_ref, dtype, "conv2d_input")
    assert_close(dw2, dw_ref, dtype, "conv2d_weight")


def test_grid_covers_the_brief():
    """The grid really contains every value asked for, in some case."""
    seen = {k: set() for k in ("stride", "padding", "dilation", "kernel", "grouping")}
    for c in GRID:
        seen["stride"].add(c.stride)
        seen["padding"].add(c.padding)
        seen["dilation"].add(c.dilation)
        seen["kernel"].add((c.KH, c.KW))
        mult = c.OC // c.groups
        seen["grouping"].add("g1" if c.groups == 1 else
                             f"dw{mult}" if c.groups == c.C else f"g{c.groups}")
    assert {1, 2, 3, (1, 2)} <= seen["stride"]
    assert {0, 1, 2, (0, 1), "same", "valid"} <= seen["padding"]
    assert {1, 2, (2, 1)} <= seen["dilation"]
    assert {(1, 1), (3, 3), (2, 3), (5, 1), (7, 7)} <= seen["kernel"]
    assert {"g1", "g2", "dw1", "dw2"} <= seen["grouping"]
    assert any(c.N == 1 for c in GRID) and any(c.H != c.W for c in GRID)
    assert any(c.H % 2 and c.W % 2 for c in GRID)


@pytest.mark.parametrize("case", [c for c in GRID if c.N > 1][:6], ids=lambda c: c.id)
def test_output_mask(case):
    x, w, b, dy = case.arrays()
    full = pyconv.conv2d_backward(dy, x, w, **case.kwargs)
    for mask in [(True, False, False), (False, True, False), (False, False, True),
                 (False, True, True), (True, False, True), (False, False, False)]:
        got = pyconv.conv2d_backward(dy, x, w, **case.kwargs, output_mask=mask)
        for want, g, f in zip(mask, got, full):
            if want:
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None


def test_backward_overwrites_and_leaves_inputs_alone():
    case = GRID[5]
    x, w, b, dy = case.arrays()
    copies = [a.copy() for a in (x, w, b, dy)]
    first = pyconv.conv2d_backward(dy, x, w, **case.kwargs)
    second = pyconv.conv2d_backward(dy, x, w, **case.kwargs)
    pyconv.conv2d(x, w, b, **case.kwargs)
    for a, c in zip((x, w, b, dy), copies):
        np.testing.assert_array_equal(a, c)
    for f, s in zip(first, second):  # fresh, not accumulated
        np.testing.assert_array_equal(f, s)


# --------------------------------------------------------------------------
# central differences (float64, tiny shapes)
# --------------------------------------------------------------------------
GRADCHECK_CASES = [
    ConvCase("gc-basic", 2, 2, 5, 6, 3, 3, 2, padding=1),
    ConvCase("gc-stride-dil", 2, 2, 7, 6, 2, 2, 3, stride=(2, 1), padding=(0, 1), dilation=(1, 2)),
    ConvCase("gc-groups", 1, 4, 5, 5, 4, 3, 3, stride=2, padding=1, groups=2),
    ConvCase("gc-depthwise-m2", 2, 3, 5, 4, 6, 3, 3, padding="same", dilation=(2, 1), groups=3),
    ConvCase("gc-pointwise", 2, 3, 3, 4, 2, 1, 1),
    ConvCase("gc-stride3", 1, 2, 8, 7, 2, 2, 2, stride=3, padding=2),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.id)
def test_gradcheck_pyconv(case):
    x, w, b, _ = case.arrays()
    kw = case.kwargs

    def f(x, w, b):
        return pyconv.conv2d(x, w, b, **kw)

    def grads(R, x, w, b):
        return pyconv.conv2d_backward(R, x, w, **kw)

    res = gradcheck(f, [x, w, b], grads, eps=1e-6, threshold=1e-6)
    assert res.ok and res.checked == x.size + w.size + b.size
    assert res.max_scaled_error < 1e-6


@pytest.mark.parametrize("case", GRADCHECK_CASES[:4], ids=lambda c: c.id)
def test_gradcheck_reference(case):
    """The reference's backward is the derivative of its own forward."""
    x, w, b, _ = case.arrays()
    kw = case.kwargs
    res = gradcheck(lambda x, w, b: conv2d_ref(x, w, b, **kw), [x, w, b],
                    lambda R, x, w, b: conv2d_backward_ref(R, x, w, **kw), threshold=1e-6)
    assert res.ok


def test_gradcheck_detects_a_wrong_gradient():
    case = GRADCHECK_CASES[0]
    x, w, b, _ = case.arrays()
    kw = case.kwargs

    def wrong(R, x, w, b):
        dx, dw, db = pyconv.conv2d_backward(R, x, w, **kw)
        dw = dw.copy()
        dw[0, 0, 1, 1] += 1e-3
        return dx, dw, db

    with pytest.raises(AssertionError, match=r"input 1 at \(0, 0, 1, 1\)"):
        gradcheck(lambda x, w, b: pyconv.conv2d(x, w, b, **kw), [x, w, b], wrong)
    res = gradcheck(lambda x, w, b: pyconv.conv2d(x, w, b, **kw), [x, w, b], wrong,
                    raise_on_failure=False)
    assert not res.ok and len(res.failures) == 1


def test_gradcheck_kink_skips_elements():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(20)
    x[3] = 1e-9  # a finite difference across relu's kink
    relu_grad = lambda R, x: [R * (x > 0)]  # noqa: E731
    res = gradcheck(lambda x: np.maximum(x, 0.0), [x], relu_grad, eps=1e-6,
                    raise_on_failure=False)
    assert not res.ok
    res = gradcheck(lambda x: np.maximum(x, 0.0), [x], relu_grad, eps=1e-6,
                    kink=0.0, kink_range=1e-6)
    assert res.ok and res.skipped == 1


def test_numerical_grad_quadratic():
    x = np.arange(6.0).reshape(2, 3) - 2.5
    np.testing.assert_allclose(numerical_grad(lambda v: np.sum(v**3), x), 3 * x**2, rtol=1e-8)


# --------------------------------------------------------------------------
# hypothesis: random valid shapes and parameters
# --------------------------------------------------------------------------
@st.composite
def conv_params(draw):
    G = draw(st.integers(1, 3))
    Cg = draw(st.integers(1, 3))
    OCg = draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad_kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if pad_kind == "same":
        stride = (1, 1)
        padding = "same"
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = {"int": lambda: draw(st.integers(0, 3)),
                   "pair": lambda: (draw(st.integers(0, 3)), draw(st.integers(0, 3))),
                   "valid": lambda: "valid"}[pad_kind]()
    pt, pb, pl, pr = resolve_padding(1, 1, KH, KW, stride, padding, dil)
    H = max(1, dil[0] * (KH - 1) + 1 - pt - pb) + draw(st.integers(0, 6))
    W = max(1, dil[1] * (KW - 1) + 1 - pl - pr) + draw(st.integers(0, 6))
    N = draw(st.integers(1, 4))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(N=N, C=G * Cg, H=H, W=W, OC=G * OCg, KH=KH, KW=KW, stride=stride,
                padding=padding, dilation=dil, groups=G, bias=bias, seed=seed)


@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(p=conv_params(), dtype=st.sampled_from(DTYPES))
def test_hypothesis_matches_reference(p, dtype):
    rng = np.random.default_rng(p["seed"])
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
              groups=p["groups"])
    x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"])).astype(dtype)
    w = rng.standard_normal((p["OC"], p["C"] // p["groups"], p["KH"], p["KW"])).astype(dtype)
    b = rng.standard_normal(p["OC"]).astype(dtype) if p["bias"] else None
    y_ref = conv2d_ref(x, w, b, **kw)
    y = pyconv.conv2d(x, w, b, **kw)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, f"y {p}")
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    dx_ref, dw_ref, db_ref = conv2d_backward_ref(dy, x, w, **kw)
    dx, dw, db = pyconv.conv2d_backward(dy, x, w, **kw)
    assert_close(dx, dx_ref, dtype, f"dx {p}")
    assert_close(dw, dw_ref, dtype, f"dw {p}")
    assert_close(db, db_ref, dtype, f"db {p}")


# --------------------------------------------------------------------------
# thread-count independence
# --------------------------------------------------------------------------
THREAD_CASES = [
    # big enough that every op threads (stride-1 wide forward, flipped backward-data)
    ConvCase("t-n4c32-28x28-oc64-k3", 4, 32, 28, 28, 64, 3, 3, padding=1),
    # batch >= 8, small planes: parallel over images
    ConvCase("t-n8c16-14x14-oc32-s2", 8, 16, 14, 14, 32, 3, 3, stride=2, padding=1),
    ConvCase("t-n9c8-12x13-oc8-k5-g2", 9, 8, 12, 13, 8, 5, 5, padding=2, groups=2),
    # depthwise, parallel over planes
    ConvCase("t-dw-n2c64-28x28", 2, 64, 28, 28, 64, 3, 3, padding=1, groups=64),
    ConvCase("t-dw2-n8c16-15x15-s2", 8, 16, 15, 15, 32, 3, 3, stride=2, padding=1, groups=16),
    # 1x1 shortcut
    ConvCase("t-pointwise-n4c32-28x28-oc64", 4, 32, 28, 28, 64, 1, 1),
    # dw larger than the split threshold (backward-weight threads over output tiles)
    ConvCase("t-n2c64-14x14-oc128-k3", 2, 64, 14, 14, 128, 3, 3, padding=1),
    # strided, non-square, col2im backward-data
    ConvCase("t-n4c24-27x30-oc40-s2-d2", 4, 24, 27, 30, 40, 3, 3, stride=(2, 1), padding=2,
             dilation=2),
]


@functools.lru_cache(maxsize=None)
def _thread_ref(case: ConvCase):
    x, w, b, dy = case.arrays()
    return conv2d_ref(x, w, b, **case.kwargs), conv2d_backward_ref(dy, x, w, **case.kwargs)


def _all_outputs(case, x, w, b, dy):
    y = pyconv.conv2d(x, w, b, **case.kwargs)
    return (y,) + tuple(pyconv.conv2d_backward(dy, x, w, **case.kwargs))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", THREAD_CASES, ids=lambda c: c.id)
def test_thread_count_independence(case, dtype, restore_threads):
    x, w, b, dy = (a.astype(dtype) for a in case.arrays())
    pyconv.set_num_threads(1)
    one = _all_outputs(case, x, w, b, dy)
    pyconv.set_num_threads(2)
    two = _all_outputs(case, x, w, b, dy)
    again = _all_outputs(case, x, w, b, dy)
    for name, a, b2, c in zip(("y", "dx", "dw", "db"), one, two, again):
        assert a.tobytes() == b2.tobytes(), f"{name} differs between 1 and 2 threads"
        assert b2.tobytes() == c.tobytes(), f"{name} differs between two 2-thread runs"
    # and the threaded results are right
    y_ref, (dx_ref, dw_ref, db_ref) = _thread_ref(case)
    if dtype is np.float32:
        # reference on the float32-rounded values
        x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
        y_ref = conv2d_ref(x64, w64, b64, **case.kwargs)
        dx_ref, dw_ref, db_ref = conv2d_backward_ref(dy64, x64, w64, **case.kwargs)
    for name, got, ref in zip(("y", "dx", "dw", "db"), two, (y_ref, dx_ref, dw_ref, db_ref)):
        assert_close(got, ref, dtype, name)


# --------------------------------------------------------------------------
# memory layouts and dtypes
# --------------------------------------------------------------------------
LAYOUT_CASE = ConvCase("layout", 2, 4, 7, 9, 6, 3, 2, stride=(1, 2), padding=(1, 0),
                       dilation=(2, 1), groups=2)


@functools.lru_cache(maxsize=None)
def _layout_data():
    x, w, b, dy = LAYOUT_CASE.arrays()
    kw = LAYOUT_CASE.kwargs
    return (x, w, b, dy), (conv2d_ref(x, w, b, **kw),) + conv2d_backward_ref(dy, x, w, **kw)


def _check_all(x, w, b, dy, dtype, ref_inputs=None):
    """pyconv on (x, w, b, dy) vs the reference on the same values."""
    kw = LAYOUT_CASE.kwargs
    if ref_inputs is None:
        ref_inputs = (np.asarray(x, np.float64), np.asarray(w, np.float64),
                      np.asarray(b, np.float64), np.asarray(dy, np.float64))
    rx, rw, rb, rdy = ref_inputs
    y = pyconv.conv2d(x, w, b, **kw)
    assert y.dtype == np.dtype(dtype), f"y dtype {y.dtype}, expected {np.dtype(dtype)}"
    assert y.dtype.isnative and y.flags.c_contiguous and y.flags.writeable
    assert_close(y, conv2d_ref(rx, rw, rb, **kw), dtype, "y")
    dx, dw, db = pyconv.conv2d_backward(dy, x, w, **kw)
    rdx, rdw, rdb = conv2d_backward_ref(rdy, rx, rw, **kw)
    for name, got, ref in (("dx", dx, rdx), ("dw", dw, rdw), ("db", db, rdb)):
        assert got.dtype == np.dtype(dtype), f"{name} dtype {got.dtype}"
        assert_close(got, ref, dtype, name)
    return y, dx, dw, db


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_non_contiguous_views(dtype):
    (x, w, b, dy), _ = _layout_data()
    x, w, b, dy = (a.astype(dtype) for a in (x, w, b, dy))
    # every-other-element views of bigger arrays
    xb = np.zeros((2, 8, 14, 9), dtype)
    xb[:, ::2, ::2, :] = x
    wb = np.zeros((6, 2, 3, 4), dtype)
    wb[..., ::2] = w
    bb = np.zeros(12, dtype)
    bb[1::2] = b
    dyb = np.zeros(dy.shape[:3] + (2 * dy.shape[3],), dtype)
    dyb[..., ::2] = dy
    xv, wv, bv, dyv = xb[:, ::2, ::2, :], wb[..., ::2], bb[1::2], dyb[..., ::2]
    assert not any(a.flags.c_contiguous for a in (xv, wv, bv, dyv))
    _check_all(xv, wv, bv, dyv, dtype)
    # transposed views (same logical values, permuted memory)
    xt = np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    wt = np.ascontiguousarray(w.transpose(1, 0, 3, 2)).transpose(1, 0, 3, 2)
    _check_all(xt, wt, b, dy, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_negative_strides(dtype):
    (x, w, b, dy), _ = _layout_data()
    x, w, b, dy = (a.astype(dtype) for a in (x, w, b, dy))
    xr = x[..., ::-1]
    wr = w[:, :, ::-1, ::-1]
    br = b[::-1]
    dyr = dy[:, ::-1]
    assert xr.strides[-1] < 0
    _check_all(xr, wr, br, dyr, dtype)
    _check_all(x[::-1, ::-1], w[::-1], b[::-1], dy[::-1, ::-1], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_fortran_order(dtype):
    (x, w, b, dy), _ = _layout_data()
    xf, wf, dyf = (np.asfortranarray(a.astype(dtype)) for a in (x, w, dy))
    assert xf.flags.f_contiguous and not xf.flags.c_contiguous
    _check_all(xf, wf, b.astype(dtype), dyf, dtype)


def test_big_endian():
    (x, w, b, dy), _ = _layout_data()
    xb, wb, bb, dyb = (a.astype(">f4") for a in (x, w, b, dy))
    assert not xb.dtype.isnative
    _check_all(xb, wb, bb, dyb, np.float32)
    xb8, wb8 = x.astype(">f8"), w.astype(">f8")
    _check_all(xb8, wb8, b.astype(">f8"), dy.astype(">f8"), np.float64)
    # mixed byte orders and widths: float64 result
    _check_all(xb, wb8, b.astype("<f4"), dy, np.float64)


def test_read_only_inputs():
    (x, w, b, dy), _ = _layout_data()
    for dtype in DTYPES:
        arrs = [a.astype(dtype) for a in (x, w, b, dy)]
        for a in arrs:
            a.setflags(write=False)
        _check_all(*arrs, dtype)
    # a read-only broadcast view (zero strides)
    xb = np.broadcast_to(x[:1], x.shape)
    assert not xb.flags.writeable and xb.strides[0] == 0
    _check_all(xb, w, b, dy, np.float64)


def test_nested_lists():
    (x, w, b, dy), _ = _layout_data()
    _check_all(x.tolist(), w.tolist(), b.tolist(), dy.tolist(), np.float64,
               ref_inputs=(x, w, b, dy))


@pytest.mark.parametrize("xdt,wdt", [(np.int32, np.int64), (np.int64, np.int8),
                                     (np.uint8, np.int16), (np.bool_, np.int32)])
def test_integer_and_bool_inputs_give_float64(xdt, wdt):
    rng = np.random.default_rng(7)
    (x, w, b, dy), _ = _layout_data()
    if xdt is np.bool_:
        xi = rng.random(x.shape) > 0.5
    else:
        xi = rng.integers(0, 5, x.shape).astype(xdt)
    wi = rng.integers(-3, 4, w.shape).astype(wdt)
    bi = rng.integers(-3, 4, b.shape).astype(np.int64)
    dyi = rng.integers(-3, 4, dy.shape).astype(np.int32)
    y, dx, dw, db = _check_all(xi, wi, bi, dyi, np.float64)
    # integer data: the float64 result is exact
    kw = LAYOUT_CASE.kwargs
    np.testing.assert_array_equal(y, conv2d_ref(xi, wi, bi, **kw))
    np.testing.assert_array_equal(dw, conv2d_backward_ref(dyi, xi, wi, **kw)[1])
    # int input with float32 weights promotes like NumPy (int64 + float32 -> float64)
    y = pyconv.conv2d(xi, wi.astype(np.float32), None, **kw)
    assert y.dtype == np.result_type(xi.dtype, np.float32)


def test_float16_gives_float16():
    (x, w, b, dy), _ = _layout_data()
    h = [a.astype(np.float16) for a in (x, w, b, dy)]
    _check_all(*h, np.float16)
    # float16 with float32 -> float32
    _check_all(h[0], w.astype(np.float32), h[2], dy.astype(np.float32), np.float32)


@pytest.mark.parametrize("xdt,wdt", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float32_float64_gives_float64(xdt, wdt):
    (x, w, b, dy), _ = _layout_data()
    xm, wm = x.astype(xdt), w.astype(wdt)
    # computed in float64 on the exact float32 values: float64 tolerance
    _check_all(xm, wm, b.astype(np.float32), dy.astype(np.float32), np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_unbatched_3d_input(dtype):
    (x, w, b, dy), _ = _layout_data()
    kw = LAYOUT_CASE.kwargs
    x1, w1, b1, dy1 = x[1].astype(dtype), w.astype(dtype), b.astype(dtype), dy[1].astype(dtype)
    y = pyconv.conv2d(x1, w1, b1, **kw)
    assert y.shape == dy1.shape and y.dtype == dtype
    assert_close(y, conv2d_ref(x1, w1, b1, **kw), dtype, "y (unbatched)")
    y4 = pyconv.conv2d(x1[None], w1, b1, **kw)
    np.testing.assert_array_equal(y, y4[0])
    dx, dw, db = pyconv.conv2d_backward(dy1, x1, w1, **kw)
    assert dx.shape == x1.shape
    rdx, rdw, rdb = conv2d_backward_ref(dy1, x1, w1, **kw)
    assert_close(dx, rdx, dtype, "dx (unbatched)")
    assert_close(dw, rdw, dtype, "dw (unbatched)")
    assert_close(db, rdb, dtype, "db (unbatched)")


def test_padding_spellings_agree():
    """int == (int, int); 'valid' == 0; 'same' == explicit symmetric padding for odd kernels."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 7))
    w = rng.standard_normal((4, 3, 3, 5))
    np.testing.assert_array_equal(pyconv.conv2d(x, w, padding=2),
                                  pyconv.conv2d(x, w, padding=(2, 2)))
    np.testing.assert_array_equal(pyconv.conv2d(x, w, padding="valid"), pyconv.conv2d(x, w))
    np.testing.assert_array_equal(pyconv.conv2d(x, w, padding="same"),
                                  pyconv.conv2d(x, w, padding=(1, 2)))
    np.testing.assert_array_equal(pyconv.conv2d(x, w, stride=[2, 1], dilation=[1, 1]),
                                  pyconv.conv2d(x, w, stride=(2, 1)))
    np.testing.assert_array_equal(pyconv.conv2d(x, w, stride=np.int64(2), groups=np.int32(1)),
                                  pyconv.conv2d(x, w, stride=2))
    # 'same' keeps the spatial size, including even kernels (odd unit bottom/right)
    for k, d in [((2, 4), (1, 1)), ((2, 2), (3, 2)), ((4, 1), (1, 1))]:
        we = rng.standard_normal((2, 3) + k)
        y = pyconv.conv2d(x, we, padding="same", dilation=d)
        assert y.shape == (2, 2, 8, 7)
        assert_close(y, conv2d_ref(x, we, None, padding="same", dilation=d), np.float64,
                     f"same k={k} d={d}")


# --------------------------------------------------------------------------
# kernels overwrite their outputs (DESIGN rule 5: with beta = 0 the output
# may hold NaN garbage and must never be read)
# --------------------------------------------------------------------------
class _NanEmptyNumpy:
    """Stands in for numpy inside pyconv.functional: np.empty returns NaN-filled arrays."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float, order="C"):
        self.calls += 1
        a = np.empty(shape, dtype, order)
        a.fill(np.nan)
        return a


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_grid_outputs_never_read(case, dtype, monkeypatch):
    import pyconv.functional as F

    fake = _NanEmptyNumpy()
    monkeypatch.setattr(F, "np", fake)
    (x, w, b, dy), (y_ref, dx_ref, dw_ref, db_ref) = _grid_ref(case)
    x, w, dy = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    b = None if b is None else b.astype(dtype)
    y = pyconv.conv2d(x, w, b, **case.kwargs)
    dx, dw, db = pyconv.conv2d_backward(dy, x, w, **case.kwargs)
    dx2 = pyconv.conv2d_input(x.shape, w, dy, **case.kwargs)
    dw2 = pyconv.conv2d_weight(x, w.shape, dy, **case.kwargs)
    assert fake.calls >= 5, "pyconv.functional no longer allocates through np.empty"
    for name, a in (("y", y), ("dx", dx), ("dw", dw), ("db", db), ("conv2d_input", dx2),
                    ("conv2d_weight", dw2)):
        assert np.isfinite(a).all(), f"{name}: {int(np.isnan(a).sum())} NaNs from unwritten output"
    # (values are checked by test_grid_forward_backward; a loose check here)
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * max(np.abs(ref).max(), 1))


# --------------------------------------------------------------------------
# non-finite values
# --------------------------------------------------------------------------
NONFINITE_CASES = [
    ConvCase("nf-general", 2, 3, 7, 8, 4, 3, 3, padding=1),
    ConvCase("nf-strided-dil", 3, 4, 9, 8, 4, 3, 2, stride=2, padding=(2, 1), dilation=(2, 1),
             groups=2),
    ConvCase("nf-depthwise", 2, 4, 7, 8, 8, 3, 3, padding=1, groups=4),
    ConvCase("nf-pointwise", 3, 5, 6, 5, 3, 1, 1),
    ConvCase("nf-wide", 1, 8, 11, 12, 3, 3, 3, padding=2),
    ConvCase("nf-batched", 6, 8, 5, 6, 5, 3, 3, padding=1),
]


@pytest.mark.parametrize("case", NONFINITE_CASES, ids=lambda c: c.id)
def test_nan_stays_in_its_receptive_field(case):
    """A NaN input pixel poisons exactly the outputs (and dw taps) that read it; a NaN
    in dy poisons exactly the input pixels it scatters to. No leaks across images,
    channels or into padding."""
    x, w, b, dy = case.arrays()
    x[0, -1, case.H // 2, 1] = np.nan
    dy[-1, 0, -1, dy.shape[3] // 2] = np.nan
    kw = case.kwargs
    y_ref = conv2d_ref(x, w, b, **kw)
    # dw gets NaN from x only: use a finite dy for it (dy NaN times a padded zero
    # is the subject of test_nonfinite_times_padding)
    dy_fin = np.nan_to_num(dy)
    _, dw_ref, _ = conv2d_backward_ref(dy_fin, x, w, **kw)
    dx_ref, _, _ = conv2d_backward_ref(dy, np.nan_to_num(x), w, **kw)
    assert np.isnan(y_ref).any() and np.isnan(dx_ref).any()
    for dtype in DTYPES:
        xd, wd, bd = x.astype(dtype), w.astype(dtype), b.astype(dtype)
        y = pyconv.conv2d(xd, wd, bd, **kw)
        _, dw, _ = pyconv.conv2d_backward(dy_fin.astype(dtype), xd, wd, **kw)
        dx, _, _ = pyconv.conv2d_backward(dy.astype(dtype), np.nan_to_num(xd), wd, **kw)
        for name, got, ref in (("y", y, y_ref), ("dw", dw, dw_ref), ("dx", dx, dx_ref)):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref),
                                          err_msg=f"{name} NaN pattern ({np.dtype(dtype)})")
            fin = ~np.isnan(ref)
            assert_close(got[fin], ref[fin], dtype, name)


@pytest.mark.parametrize("direction", ["forward", "backward_weight"])
@pytest.mark.parametrize("groups", [1, 2, 4], ids=["groups1", "groups2", "depthwise"])
def test_nonfinite_times_padding(groups, direction):
    """IEEE / PyTorch semantics: padding is zeros, and 0 * inf = NaN.

    forward: an infinite weight tap that lands on padding makes that output NaN
    (torch.nn.functional.conv2d gives NaN there too).
    backward_weight: an infinite dy at an output whose window covers padding makes
    the dw taps that read padding NaN (as torch's autograd does).
    The reference, with explicit zero padding, has exactly these semantics.
    """
    C, OC, kw = 4, 4, dict(padding=1, groups=groups)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, C, 5, 6))
    w = rng.standard_normal((OC, C // groups, 3, 3))
    dy = rng.standard_normal((2, OC, 5, 6))
    if direction == "forward":
        w[0, 0, 0, 0] = np.inf  # top-left tap: reads the top padding row for oy = 0
        ref = conv2d_ref(x, w, None, **kw)
        assert np.isnan(ref[:, 0, 0, :]).all()
    else:
        dy[1, 1, 0, 0] = np.inf  # top-left output: its window covers padding
        ref = conv2d_backward_ref(dy, x, w, **kw)[1]
        assert np.isnan(ref[1]).any()
    for dtype in DTYPES:
        xd, wd, dyd = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
        if direction == "forward":
            got = pyconv.conv2d(xd, wd, **kw)
        else:
            got = pyconv.conv2d_backward(dyd, xd, wd, **kw)[1]
        np.testing.assert_array_equal(
            np.isnan(got), np.isnan(ref),
            err_msg=f"{direction} NaN pattern, groups={groups} ({np.dtype(dtype)})")
        fin = np.isfinite(ref)
        assert_close(got[fin], ref[fin], dtype, direction)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("batch", [1, 2])
def test_nonfinite_input_backward_weight_no_leak(padding, batch):
    """A non-finite input pixel must only poison the dw taps that read it.

    The stride-1 backward-weight path reads whole padded rows, including
    positions that wrap around a row end (multiplied by dy = 0); an inf there
    would make 0 * inf = NaN in taps PyTorch keeps finite. Shapes here are
    large enough to take that path, so this pins the fallback.
    """
    rng = np.random.default_rng(12)
    x = rng.standard_normal((batch, 16, 20, 20))
    w = rng.standard_normal((16, 16, 3, 3))
    x[0, 3, 5, 0] = np.inf
    x[0, 4, 7, 19] = np.nan
    oh = 20 + 2 * padding - 2
    dy = rng.standard_normal((batch, 16, oh, oh))
    ref = conv2d_backward_ref(dy, x, w, padding=padding)[1]
    for dtype in DTYPES:
        got = pyconv.conv2d_weight(x.astype(dtype), w.shape, dy.astype(dtype), padding=padding)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        fin = np.isfinite(ref)
        assert_close(got[fin], ref[fin], dtype, "backward_weight")


# --------------------------------------------------------------------------
# strided convolution over phase planes
# --------------------------------------------------------------------------
# Stride > 1 with every phase read by some tap and a reduction of >= 32 runs
# as a stride-1 convolution over the SH x SW phase planes of the padded image
# (forward and backward-weight). These shapes take that path: odd sizes,
# asymmetric stride / padding, dilation, groups, one and several images.
PHASE_CASES = [
    ConvCase("ph-stem-k7s2", 1, 3, 29, 31, 8, 7, 7, stride=2, padding=3),
    ConvCase("ph-k3s2", 2, 8, 15, 14, 6, 3, 3, stride=2, padding=1),
    ConvCase("ph-k5s3", 1, 4, 23, 20, 5, 5, 5, stride=3, padding=2),
    ConvCase("ph-k3s2-d3", 2, 6, 19, 17, 4, 3, 3, stride=2, padding=3, dilation=3),
    ConvCase("ph-k3x4-s2x1-g2", 2, 8, 13, 16, 6, 3, 4, stride=(2, 1), padding=(1, 2), groups=2),
    ConvCase("ph-k4s2-valid", 3, 5, 16, 16, 7, 4, 4, stride=2),
    # the last input column read by no tap (the even phase stops short of it)
    ConvCase("ph-k4s2-crop", 2, 6, 17, 37, 5, 4, 4, stride=2),
    ConvCase("ph-k3s2-n1-c64", 1, 64, 12, 12, 16, 3, 3, stride=2, padding=1),
    # wide output rows (>= 80 columns): the GEMM stores straight into the
    # output planes, with and without bias, stride 1 and 2, groups
    ConvCase("wide-direct-k3", 2, 4, 5, 203, 7, 3, 3, padding=1),
    ConvCase("wide-direct-k7s2", 1, 3, 9, 230, 5, 7, 7, stride=2, padding=3),
    ConvCase("wide-direct-g2", 1, 8, 4, 150, 6, 3, 3, padding=(0, 1), groups=2, bias=False),
    # ... with a last row tile of 2 / 4 output channels (short kernels, direct)
    ConvCase("wide-direct-oc8", 1, 5, 6, 190, 8, 3, 3, padding=1),
    ConvCase("wide-direct-k5s2-oc4", 2, 4, 8, 200, 4, 5, 5, stride=2, padding=2),
    # output rows a multiple of 16 columns (or nearly): tiled row by row,
    # full panels only (32, 64 columns) or one partial panel per row (30)
    ConvCase("row-panels-w32", 2, 4, 6, 32, 5, 3, 3, padding=1),
    ConvCase("row-panels-w30", 1, 4, 9, 30, 7, 3, 3, padding=1),
    ConvCase("row-panels-k7s2", 1, 3, 40, 128, 6, 7, 7, stride=2, padding=3),
    # reductions under 32 (1-3 channels): B packed from the padded planes,
    # panels inside one output row (32 columns) and across rows (26, 13)
    ConvCase("padded-rows-c3", 2, 3, 32, 32, 5, 3, 3, padding=1),
    ConvCase("padded-rows-c1-valid", 3, 1, 28, 28, 4, 3, 3),
    ConvCase("padded-rows-s2", 2, 2, 27, 26, 3, 3, 3, stride=2, padding=1),
    # backward-weight by in-place dot products (long reduction per chunk,
    # small OC x taps): chunks of 1024, a k % 8 tail, edge tiles of 4 x 3
    ConvCase("dot-rows-c3", 8, 3, 32, 32, 5, 3, 3, padding=1),
    ConvCase("dot-rows-s2-c2", 8, 2, 45, 47, 7, 5, 5, stride=2, padding=2),
    # ... with output rows of a multiple of 8: dy read in place row by row
    # (2-D dot products), over more rows than one partial-sum chunk
    ConvCase("dot-rows-2d-tall", 2, 3, 80, 16, 5, 3, 3, padding=1),
    # 1x1 backward-weight on maps smaller than a k block: a chunk's image
    # segments gathered into one product (several images, groups, channel
    # counts off the register tile)
    ConvCase("pw-small-maps-n9", 9, 40, 7, 7, 70, 1, 1),
    ConvCase("pw-small-maps-g2", 5, 16, 5, 3, 14, 1, 1, groups=2),
    ConvCase("pw-small-maps-n2", 2, 24, 6, 7, 30, 1, 1, bias=False),
    # 1x1 backward-weight with few output channels and many input channels:
    # computed transposed, the x rows read in place (k over one and several
    # k blocks, groups, small maps gathered)
    ConvCase("pw-few-oc", 2, 80, 9, 10, 20, 1, 1),
    ConvCase("pw-few-oc-k2", 1, 96, 20, 20, 16, 1, 1),
    ConvCase("pw-few-oc-g2", 3, 160, 6, 7, 24, 1, 1, groups=2),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", PHASE_CASES, ids=lambda c: c.id)
def test_phase_plane_strided(case, dtype, isa, restore_threads):
    x, w, b, dy = (None if a is None else a.astype(dtype) for a in case.arrays())
    y_ref = conv2d_ref(x, w, b, **case.kwargs)
    dx_ref, dw_ref, db_ref = conv2d_backward_ref(dy, x, w, **case.kwargs)
    outs = {}
    for nt in (1, 2):
        pyconv.set_num_threads(nt)
        y = pyconv.conv2d(x, w, b, **case.kwargs)
        dx, dw, db = pyconv.conv2d_backward(dy, x, w, **case.kwargs)
        for name, got, ref in (("y", y, y_ref), ("dx", dx, dx_ref), ("dw", dw, dw_ref),
                               ("db", db, db_ref)):
            if ref is None:
                continue
            assert_close(got, ref, dtype, f"{name} {case.id}")
        outs[nt] = (y, dx, dw, db)
    for a, b2 in zip(outs[1], outs[2]):
        if a is not None:
            assert a.tobytes() == b2.tobytes(), "results differ between 1 and 2 threads"


@pytest.mark.parametrize("stride", [2, 3])
def test_nonfinite_input_strided_backward_weight_no_leak(stride):
    """As above for the phase planes: the columns that are not outputs read
    x values multiplied by dy = 0, so a non-finite x must take the fallback."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 8, 21, 21))
    w = rng.standard_normal((4, 8, 5, 5))
    x[0, 3, 6, 20] = np.inf
    x[1, 2, 0, 1] = np.nan
    oh = (21 + 2 * 2 - 5) // stride + 1
    dy = rng.standard_normal((2, 4, oh, oh))
    ref = conv2d_backward_ref(dy, x, w, stride=stride, padding=2)[1]
    for dtype in DTYPES:
        got = pyconv.conv2d_weight(x.astype(dtype), w.shape, dy.astype(dtype), stride=stride,
                                   padding=2)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        fin = np.isfinite(ref)
        assert_close(got[fin], ref[fin], dtype, "backward_weight")


# --------------------------------------------------------------------------
# the one-call fast path and the direct loops for tiny problems
# --------------------------------------------------------------------------
def test_fast_path_declines_to_the_checked_path():
    """_C.conv2d_fast handles only the plain case and returns None for anything
    else, so the Python layer's checks run and name the bad argument."""
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    assert _C.conv2d_fast(x, w, None, 1, 1, 1, 1).shape == (1, 3, 5, 5)
    y = _C.conv2d_fast(x, w, np.zeros(3, np.float32), (1, 2), (0, 1), 1, 1)
    np.testing.assert_array_equal(y, conv2d_ref(x, w, np.zeros(3), stride=(1, 2), padding=(0, 1)))
    declined = [
        (x.astype(np.float64), w, None, 1, 1, 1, 1),         # mixed dtypes
        (x[:, :, ::2], w, None, 1, 1, 1, 1),                 # not contiguous
        (x, w, np.zeros(3), 1, 1, 1, 1),                     # float64 bias
        (x, w, np.zeros(4, np.float32), 1, 1, 1, 1),         # bias of the wrong size
        (x, w, None, 1, "same", 1, 1),                       # string padding
        (x, w, None, np.int64(1), 1, 1, 1),                  # NumPy integer
        (x, w, None, True, 1, 1, 1),                         # bool is not an int here
        (x, w, None, 0, 1, 1, 1),                            # stride 0
        (x, w, None, 1, -1, 1, 1),                           # negative padding
        (x, w, None, 1, 1, 1, 2),                            # groups do not divide
        (x, w, None, 1, 0, 3, 1),                            # kernel larger than the input
        (x, w, None, 1, 2**31, 1, 1),                        # out of range
        (x[0], w, None, 1, 1, 1, 1),                         # unbatched (3-d)
        (x[:0], w, None, 1, 1, 1, 1),                        # empty batch
        (x.astype(">f4"), w.astype(">f4"), None, 1, 1, 1, 1),  # byte-swapped
    ]
    for args in declined:
        assert _C.conv2d_fast(*args) is None, args
    with pytest.raises(ValueError, match="stride must be positive"):
        pyconv.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="groups=2 must divide out_channels=3"):
        pyconv.conv2d(x, w, groups=2)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        pyconv.conv2d(x, w, np.zeros(4, np.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_direct_loops_for_tiny_problems(dtype):
    """At and below the multiply-add threshold the forward runs as direct
    loops; above it through the GEMM paths: both match the reference, and a
    non-finite weight over padding gives NaN there on both."""
    limit = _C.get_conv_direct_max()
    assert limit > 0
    rng = np.random.default_rng(21)
    for shape, wshape, kw in [((1, 1, 8, 8), (1, 1, 3, 3), {}),
                              ((2, 4, 5, 6), (2, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
                              ((1, 3, 4, 4), (4, 3, 1, 1), dict(padding=1))]:
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(wshape).astype(dtype)
        b = rng.standard_normal(wshape[0]).astype(dtype)
        ref = conv2d_ref(x, w, b, **kw)
        assert_close(pyconv.conv2d(x, w, b, **kw), ref, dtype, f"direct {shape}")
        w_inf = w.copy()
        w_inf[0, 0, 0, 0] = np.inf
        ref_inf = conv2d_ref(x, w_inf, None, **kw)
        got = pyconv.conv2d(x, w_inf, **kw)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref_inf))
    x = np.ones((1, 1, 8, 8), dtype)
    w = np.ones((1, 1, 3, 3), dtype)
    try:  # the same call through the GEMM path gives the same values
        direct = pyconv.conv2d(x, w)
        _C.set_conv_direct_max(0)
        np.testing.assert_array_equal(pyconv.conv2d(x, w), direct)
    finally:
        _C.set_conv_direct_max(limit)
