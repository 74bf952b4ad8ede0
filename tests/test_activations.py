"""Activations (relu, leaky_relu, elu, sigmoid, tanh, gelu, softmax, log_softmax,
maxout) forward and backward.

Checked against the float64 references in ``pyconv.testing.reference_ops``
(anchored to PyTorch in tests/test_ops_torch.py). Tolerances (got vs float64
reference ``ref``, elementwise, ``scale = max(max|ref|, 1)`` over the finite
reference values; equal infinities and, where stated, NaN positions match):

    float64:  |got - ref| <= 1e-12 * |ref| + 1e-12 * scale
    float32:  |got - ref| <= 1e-5  * |ref| + 1e-5  * scale
    float16:  |got - ref| <= 2e-3  * |ref| + 2e-3  * scale  (computed in float32)
    maxout forward and backward: exact (it selects values)

For float32/float16 the reference runs on the already-rounded inputs (and, for
sigmoid/tanh/softmax backward, on the same forward output pyconv receives),
so the tolerance covers pyconv's own arithmetic only.

Sections: elementwise ops over shapes and odd lengths (SIMD tails), special
values (+-0, +-1e4, +-inf, NaN; no floating-point warnings), softmax family
over axes, maxout, gradient checks, dtypes and layouts, thread-count
independence, errors.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyconv
import pyconv.functional as Fn
from pyconv.testing import reference_ops as R
from pyconv.testing.gradcheck import gradcheck

TOL = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float16): (2e-3, 2e-3),
}
DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]


def assert_close(got, ref, dtype, what="", equal_nan=True):
    dtype = np.dtype(dtype)
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    rtol, atol = TOL[dtype]
    fin = np.isfinite(ref)
    scale = max(float(np.abs(ref[fin]).max(initial=0.0)), 1.0)
    g = got.astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.abs(g - ref) <= rtol * np.abs(ref) + atol * scale
        ok |= g == ref
        if equal_nan:
            ok |= np.isnan(g) & np.isnan(ref)
    if not ok.all():
        idx = np.unravel_index(np.argmax(~ok), ok.shape)
        raise AssertionError(
            f"{what} ({dtype}): {int((~ok).sum())}/{ok.size} elements off; first at {idx}: "
            f"got {g[idx]!r}, reference {ref[idx]!r} (scale {scale:.3g})")


NAMES = ["relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
         "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "gelu", "gelu_backward",
         "softmax", "softmax_backward", "log_softmax", "log_softmax_backward", "maxout",
         "maxout_backward"]


@pytest.mark.parametrize("name", NAMES)
def test_exported(name):
    f = getattr(pyconv, name)
    assert callable(f)
    assert getattr(Fn, name) is f


# --------------------------------------------------------------------------
# elementwise ops
# --------------------------------------------------------------------------
class Op:
    """One elementwise activation with its keyword arguments.

    ``saved`` says what the backward takes besides grad_output: the forward
    'input' or the forward 'output'.
    """

    def __init__(self, name, ref, ref_bwd, saved="input", **kw):
        self.name, self.ref, self.ref_bwd, self.saved, self.kw = name, ref, ref_bwd, saved, kw
        self.id = name + "".join(f"-{k}={v}" for k, v in kw.items())

    def fwd(self, x):
        return getattr(pyconv, self.name)(x, **self.kw)

    def bwd(self, dy, x, y):
        return getattr(pyconv, self.name + "_backward")(dy, x if self.saved == "input" else y,
                                                         **self.kw)

    def fwd_ref(self, x):
        return self.ref(x, **self.kw)

    def bwd_ref(self, dy, x, y):
        return self.ref_bwd(dy, x if self.saved == "input" else y, **self.kw)


OPS = [
    Op("relu", R.relu_ref, R.relu_backward_ref),
    Op("leaky_relu", R.leaky_relu_ref, R.leaky_relu_backward_ref),
    Op("leaky_relu", R.leaky_relu_ref, R.leaky_relu_backward_ref, negative_slope=0.2),
    Op("leaky_relu", R.leaky_relu_ref, R.leaky_relu_backward_ref, negative_slope=-1.5),
    Op("elu", R.elu_ref, R.elu_backward_ref),
    Op("elu", R.elu_ref, R.elu_backward_ref, alpha=0.5),
    Op("elu", R.elu_ref, R.elu_backward_ref, alpha=2.0),
    Op("sigmoid", R.sigmoid_ref, R.sigmoid_backward_ref, saved="output"),
    Op("tanh", R.tanh_ref, R.tanh_backward_ref, saved="output"),
    Op("gelu", R.gelu_ref, R.gelu_backward_ref),
    Op("gelu", R.gelu_ref, R.gelu_backward_ref, approximate="none"),
    Op("gelu", R.gelu_ref, R.gelu_backward_ref, approximate="tanh"),
]
OP_IDS = [op.id for op in OPS]
SHAPES = [(1,), (7,), (31,), (3, 5), (2, 3, 4, 5), (1, 1, 1, 1), (1027,), (4, 257)]


def _values(shape, seed):
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * 3.0)
    if x.size > 3:
        x.reshape(-1)[::5] = 0.0  # the kink itself, every fifth element
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_elementwise(op, shape, dtype):
    x = _values(shape, 1).astype(dtype)
    dy = np.asarray(np.random.default_rng(2).standard_normal(shape)).astype(dtype)
    y = op.fwd(x)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == x.shape
    assert_close(y, op.fwd_ref(x), dtype, "y")
    dx = op.bwd(dy, x, y)
    assert isinstance(dx, np.ndarray) and dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, op.bwd_ref(dy, x, y), dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_zero_d_input_keeps_its_shape(dtype):
    """Elementwise ops take any shape, 0-d included (np.ascontiguousarray would make it 1-d)."""
    for v in (-1.5, 0.0, 2.0):
        x = np.array(v, dtype=dtype)
        for op in OPS:
            y = op.fwd(x)
            assert y.shape == () and y.dtype == dtype, op.id
            assert_close(y, op.fwd_ref(x), dtype, op.id)
            dx = op.bwd(np.array(2.0, dtype), x, y)
            assert dx.shape == () and dx.dtype == dtype, op.id
            assert_close(dx, op.bwd_ref(np.array(2.0), x, y), dtype, op.id)


SPECIAL = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1.0, -1.0, 5.0, -5.0, 20.0, -20.0,
                    40.0, -40.0, 90.0, -90.0, 700.0, -700.0, 800.0, -800.0, 1e4, -1e4,
                    np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_special_values(op, dtype):
    # repeated so that specials land in vector bodies and in scalar tails
    x = np.tile(SPECIAL, 3)[:-1].astype(dtype)
    dy = np.full(x.shape, 0.75, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = op.fwd(x)
        dx = op.bwd(dy, x, y)
    y_ref, dx_ref = op.fwd_ref(x), op.bwd_ref(dy, x, y)
    nan_in = np.isnan(x)
    lenient_y = np.zeros(x.shape, bool)
    lenient_dx = np.zeros(x.shape, bool)
    if op.name == "gelu":
        # PyTorch: gelu(-inf) = -inf * 0 = NaN and NaN gradients at +-inf;
        # the limits (-0, and 1 / 0 for the gradient) are as good.
        lenient_y = np.isneginf(x)
        assert np.isnan(y[lenient_y]).all() or (y[lenient_y] == 0).all()
        lenient_dx = np.isinf(x)
        lim = np.where(x[lenient_dx] > 0, 0.75, 0.0)
        assert (np.isnan(dx[lenient_dx]) | (dx[lenient_dx] == lim)).all()
    if op.name == "elu":
        # PyTorch's elu backward gives g at NaN in its scalar path and NaN in its
        # vectorised path; either is accepted.
        lenient_dx = nan_in
        assert (np.isnan(dx[nan_in]) | (dx[nan_in] == 0.75)).all()
    assert_close(np.where(lenient_y, 0, y), np.where(lenient_y, 0, y_ref), dtype, "y")
    assert_close(np.where(lenient_dx, 0, dx), np.where(lenient_dx, 0, dx_ref), dtype, "dx")
    assert np.isnan(y[nan_in]).all(), "NaN must propagate"
    # NaN appears in the output only where the input is NaN (gelu(-inf) aside)
    assert not np.isnan(y[~nan_in & ~lenient_y]).any()


def test_saturation_is_exact():
    x = np.array([-1e4, -800.0, -100.0, 100.0, 800.0, 1e4, -np.inf, np.inf])
    for dtype in DTYPES:
        xd = x.astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s = pyconv.sigmoid(xd)
            t = pyconv.tanh(xd)
        np.testing.assert_array_equal(s[[0, 1, 6]], 0.0)
        np.testing.assert_array_equal(s[[3, 4, 5, 7]], 1.0)
        np.testing.assert_array_equal(t, np.sign(x))
        sat = [0, 1, 3, 4, 5, 6, 7]  # sigmoid(-100) = 3.7e-44 is not saturated
        np.testing.assert_array_equal(pyconv.sigmoid_backward(np.ones_like(s), s)[sat], 0.0)
        np.testing.assert_array_equal(pyconv.tanh_backward(np.ones_like(t), t), 0.0)
        np.testing.assert_array_equal(pyconv.elu(xd)[[0, 1, 2, 6]], -1.0)
        np.testing.assert_array_equal(pyconv.relu(xd), np.maximum(x, 0).astype(dtype))
        g = pyconv.gelu(xd)
        np.testing.assert_array_equal(g[3:6], x[3:6].astype(dtype))
        assert (g[:3] == 0).all() and g[7] == np.inf
        g = pyconv.gelu(xd, approximate="tanh")
        np.testing.assert_array_equal(g[3:6], x[3:6].astype(dtype))
        assert (g[:3] == 0).all()


def test_relu_family_kinks_by_hand():
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan])
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(pyconv.relu(x)[:4], [0, 0, 0, 3])
    # grad 0 where input <= 0; NaN passes the gradient (PyTorch: result <= 0 ? 0 : g)
    np.testing.assert_array_equal(pyconv.relu_backward(g, x), [0, 0, 0, 4, 5])
    np.testing.assert_array_equal(pyconv.leaky_relu(x, 0.5)[:4], [-1, 0, 0, 3])
    # input > 0 ? g : g * slope
    np.testing.assert_array_equal(pyconv.leaky_relu_backward(g, x, 0.5), [0.5, 1, 1.5, 4, 2.5])
    np.testing.assert_array_equal(pyconv.elu_backward(g, x, 2.0)[1:4], [4, 6, 4])
    np.testing.assert_allclose(pyconv.elu(x, 2.0)[:4], [2 * np.expm1(-2), 0, 0, 3], rtol=1e-15)
    np.testing.assert_allclose(pyconv.gelu_backward(np.ones(1), np.zeros(1)), [0.5], rtol=1e-15)


# --------------------------------------------------------------------------
# softmax and log_softmax
# --------------------------------------------------------------------------
SOFTMAX_CASES = [((4, 7), 1), ((4, 7), -1), ((4, 7), 0), ((3, 5, 4, 2), 1), ((3, 5, 4, 2), -2),
                 ((3, 5, 4, 2), 0), ((3, 5, 4, 2), 3), ((6,), 0), ((5,), -1), ((2, 1, 3), 1),
                 ((1, 1), 1), ((3, 1031), 1), ((2, 67, 3), 1), ((2, 3, 67), -1)]
SM = [("softmax", R.softmax_ref, R.softmax_backward_ref),
      ("log_softmax", R.log_softmax_ref, R.log_softmax_backward_ref)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES, ids=[f"{s}-ax{a}" for s, a in SOFTMAX_CASES])
@pytest.mark.parametrize("name,ref,ref_bwd", SM, ids=[s[0] for s in SM])
def test_softmax_family(name, ref, ref_bwd, shape, axis, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = getattr(pyconv, name)(x, axis=axis)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, ref(x, axis), dtype, "y")
    dx = getattr(pyconv, name + "_backward")(dy, y, axis=axis)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, ref_bwd(dy, y, axis), dtype, "dx")
    if name == "softmax":
        np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=TOL[np.dtype(dtype)][0] * 10)


def test_softmax_default_axis_is_1():
    x = np.random.default_rng(4).standard_normal((2, 3, 4))
    np.testing.assert_array_equal(pyconv.softmax(x), pyconv.softmax(x, axis=1))
    np.testing.assert_array_equal(pyconv.log_softmax(x), pyconv.log_softmax(x, 1))
    y = pyconv.softmax(x)
    np.testing.assert_array_equal(pyconv.softmax_backward(x, y), pyconv.softmax_backward(x, y, 1))
    assert_close(y, R.softmax_ref(x, 1), np.float64, "y")


SM_SPECIAL = np.array([
    [np.inf, 1.0, -np.inf, 0.0],       # +inf -> the whole row NaN
    [1.0, 2.0, -np.inf, 0.5],          # -inf entry -> probability 0, log -inf
    [-np.inf] * 4,                     # all -inf -> NaN
    [np.nan, 1.0, 2.0, 3.0],           # NaN -> NaN
    [1e4, -1e4, 0.0, 1e4],             # extreme logits, no overflow
    [-1e4, -1e4, -1e4, -1e4],          # uniform
    [1e4, 1e4 - 1.0, -1e4, 3.0],
])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name,ref,ref_bwd", SM, ids=[s[0] for s in SM])
def test_softmax_special_values(name, ref, ref_bwd, dtype):
    for x in (SM_SPECIAL.astype(dtype), np.ascontiguousarray(SM_SPECIAL.T).astype(dtype)):
        axis = 1 if x.shape[0] == SM_SPECIAL.shape[0] else 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = getattr(pyconv, name)(x, axis=axis)
        y_ref = ref(x, axis)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
        assert_close(y, y_ref, dtype, f"{name} axis {axis}")
    y = getattr(pyconv, name)(SM_SPECIAL.astype(dtype), axis=1)
    if name == "softmax":
        np.testing.assert_array_equal(y[4], [0.5, 0.0, 0.0, 0.5])
        np.testing.assert_allclose(y[5], 0.25, rtol=TOL[np.dtype(dtype)][0])
        assert y[1, 2] == 0.0
    else:
        assert y[1, 2] == -np.inf
        np.testing.assert_allclose(y[4], [-np.log(2), -2e4 - np.log(2), -1e4 - np.log(2),
                                          -np.log(2)], rtol=TOL[np.dtype(dtype)][0])
    # backward on the finite rows
    fin = np.isfinite(y).all(axis=1) if name == "log_softmax" else ~np.isnan(y).any(axis=1)
    yf = np.ascontiguousarray(y[fin])
    dy = np.random.default_rng(5).standard_normal(yf.shape).astype(dtype)
    dx = getattr(pyconv, name + "_backward")(dy, yf, axis=1)
    assert_close(dx, ref_bwd(dy, yf, 1), dtype, "dx")


# --------------------------------------------------------------------------
# maxout
# --------------------------------------------------------------------------
MAXOUT_CASES = [((2, 6, 3, 3), 2, 1), ((2, 6, 3, 3), 3, 1), ((2, 6, 3, 3), 6, 1),
                ((4, 12), 4, 1), ((4, 12), 3, -1), ((3, 4, 5), 5, 2), ((3, 4, 5), 1, 1),
                ((8,), 8, 0), ((6, 2), 2, 0), ((1, 2062), 2, 1), ((2, 64, 5, 7), 4, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,pieces,axis", MAXOUT_CASES,
                         ids=[f"{s}-p{p}-ax{a}" for s, p, a in MAXOUT_CASES])
def test_maxout(shape, pieces, axis, dtype):
    rng = np.random.default_rng(6)
    x = (rng.integers(-4, 4, shape) / 2.0).astype(dtype)  # many ties
    y_ref = R.maxout_ref(x, pieces, axis)
    y = pyconv.maxout(x, pieces, axis=axis)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    dx = pyconv.maxout_backward(dy, x, pieces, axis=axis)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(dx, R.maxout_backward_ref(dy, x, pieces, axis))


def test_maxout_by_hand():
    x = np.array([[1.0, 3.0, 3.0, 2.0, -1.0, -1.0]])
    np.testing.assert_array_equal(pyconv.maxout(x, 2), [[3.0, 3.0, -1.0]])
    np.testing.assert_array_equal(pyconv.maxout(x, 3), [[3.0, 2.0]])
    # ties: the first maximal piece gets the gradient
    np.testing.assert_array_equal(pyconv.maxout_backward(np.array([[1.0, 2.0, 3.0]]), x, 2),
                                  [[0, 1, 2, 0, 3, 0]])
    np.testing.assert_array_equal(pyconv.maxout_backward(np.array([[1.0, 2.0]]), x, 3),
                                  [[0, 1, 0, 2, 0, 0]])
    # default axis is 1: channels of an NCHW tensor
    x4 = np.random.default_rng(7).standard_normal((2, 4, 3, 3))
    np.testing.assert_array_equal(pyconv.maxout(x4, 2), np.maximum(x4[:, 0::2], x4[:, 1::2]))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_maxout_nonfinite(dtype):
    x = np.array([[np.nan, 1.0, 2.0, np.nan, 1.0, 2.0, np.inf, -1.0, -np.inf, -np.inf,
                   5.0, np.nan]], dtype=dtype)
    y = pyconv.maxout(x, 2)
    y_ref = R.maxout_ref(x, 2)
    np.testing.assert_array_equal(y, y_ref)  # NaN in a group -> NaN, +inf wins, -inf stays
    np.testing.assert_array_equal(np.isnan(y[0]), [True, True, False, False, False, True])
    # gradients of the finite groups go to their first maximal piece
    dx = pyconv.maxout_backward(np.ones_like(y), x, 2)
    np.testing.assert_array_equal(dx[0, 4:10], [0, 1, 1, 0, 1, 0])


# --------------------------------------------------------------------------
# gradient checks (float64, central differences)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_gradcheck_elementwise(op):
    x = np.random.default_rng(8).standard_normal((3, 7)) * 2.5
    x[np.abs(x) < 0.05] += 0.2  # away from the kinks at 0

    def grads(Rp, x):
        return [op.bwd(Rp, x, op.fwd(x))]

    res = gradcheck(op.fwd, [x], grads, kink=0.0, kink_range=1e-3)
    assert res.ok and res.skipped == 0 and res.checked == x.size
    gradcheck(op.fwd_ref, [x], lambda Rp, x: [op.bwd_ref(Rp, x, op.fwd_ref(x))])


@pytest.mark.parametrize("shape,axis", [((3, 6), 1), ((3, 6), 0), ((2, 3, 4), -1), ((2, 5, 3), 1)])
@pytest.mark.parametrize("name,ref,ref_bwd", SM, ids=[s[0] for s in SM])
def test_gradcheck_softmax_family(name, ref, ref_bwd, shape, axis):
    x = np.random.default_rng(9).standard_normal(shape) * 2
    f = getattr(pyconv, name)
    b = getattr(pyconv, name + "_backward")
    res = gradcheck(lambda x: f(x, axis=axis), [x], lambda Rp, x: [b(Rp, f(x, axis=axis), axis=axis)])
    assert res.ok and res.checked == x.size
    gradcheck(lambda x: ref(x, axis), [x], lambda Rp, x: [ref_bwd(Rp, ref(x, axis), axis)])


@pytest.mark.parametrize("shape,pieces,axis", [((2, 6, 2, 3), 3, 1), ((4, 8), 2, -1), ((6, 5), 3, 0)])
def test_gradcheck_maxout(shape, pieces, axis):
    n = int(np.prod(shape))
    x = (np.random.default_rng(10).permutation(n) * 0.1).reshape(shape)  # distinct values
    res = gradcheck(lambda x: pyconv.maxout(x, pieces, axis=axis), [x],
                    lambda Rp, x: [pyconv.maxout_backward(Rp, x, pieces, axis=axis)])
    assert res.ok and res.checked == n
    gradcheck(lambda x: R.maxout_ref(x, pieces, axis), [x],
              lambda Rp, x: [R.maxout_backward_ref(Rp, x, pieces, axis)])


# --------------------------------------------------------------------------
# dtypes and layouts
# --------------------------------------------------------------------------
def _all_results(x, dy_like):
    """Every op's forward and backward on x (grads from dy_like with the output's shape)."""
    out = {}
    for op in OPS:
        y = op.fwd(x)
        out[op.id] = y
        out[op.id + "/bwd"] = op.bwd(dy_like, x, y)
    for name, _, _ in SM:
        y = getattr(pyconv, name)(x, axis=1)
        out[name] = y
        out[name + "/bwd"] = getattr(pyconv, name + "_backward")(dy_like, y, axis=1)
    y = pyconv.maxout(x, 2, axis=1)
    out["maxout"] = y
    out["maxout/bwd"] = pyconv.maxout_backward(dy_like[:, : y.shape[1]], x, 2, axis=1)
    return out


def _all_refs(x, dy):
    out = {}
    for op in OPS:
        y = op.fwd_ref(x)
        out[op.id] = y
        out[op.id + "/bwd"] = op.bwd_ref(dy, x, y)
    for name, ref, ref_bwd in SM:
        y = ref(x, 1)
        out[name] = y
        out[name + "/bwd"] = ref_bwd(dy, y, 1)
    y = R.maxout_ref(x, 2, 1)
    out["maxout"] = y
    out["maxout/bwd"] = R.maxout_backward_ref(dy[:, : y.shape[1]], x, 2, 1)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["fortran", "strided", "negative", "transposed"])
def test_layouts(layout, dtype):
    rng = np.random.default_rng(11)
    base = rng.standard_normal((6, 8, 10)).astype(dtype)
    gbase = rng.standard_normal((6, 8, 10)).astype(dtype)

    def view(a):
        return {"fortran": np.asfortranarray(a[:, :, :5]),
                "strided": a[::2, :, ::2],
                "negative": a[::-1, :, ::-2],
                "transposed": a.transpose(2, 1, 0)[:5]}[layout]

    x, dy = view(base), view(gbase)
    assert not x.flags.c_contiguous and x.shape[1] == 8
    got = _all_results(x, dy)
    xc, dyc = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    want = _all_results(xc, dyc)
    refs = _all_refs(xc, dyc)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert_close(got[k], refs[k], dtype, k)
    np.testing.assert_array_equal(x, view(base))  # inputs untouched


def test_float16_gives_float16():
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((4, 6)) * 2).astype(np.float16)
    dy = rng.standard_normal((4, 6)).astype(np.float16)
    got = _all_results(x, dy)
    for k, v in got.items():
        assert v.dtype == np.float16, k
    refs = _all_refs(x, dy)
    for op in OPS:
        assert_close(got[op.id], refs[op.id], np.float16, op.id)
    assert_close(got["softmax"], refs["softmax"], np.float16, "softmax")
    assert_close(got["log_softmax"], refs["log_softmax"], np.float16, "log_softmax")
    np.testing.assert_array_equal(got["maxout"], refs["maxout"])


@pytest.mark.parametrize("idt", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_inputs_give_float64(idt):
    rng = np.random.default_rng(13)
    x = rng.integers(0 if idt in (np.uint16, np.bool_) else -3, 2 if idt is np.bool_ else 4,
                     (3, 4)).astype(idt)
    dy = rng.integers(-2, 3, (3, 4)).astype(np.int64)
    got = _all_results(x, dy)
    refs = _all_refs(x, dy)
    for k, v in got.items():
        assert v.dtype == np.float64, k
        assert_close(v, refs[k], np.float64, k)


def test_mixed_dtypes_promote():
    x32 = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    g64 = np.ones((3, 4))
    g16 = np.ones((3, 4), np.float16)
    assert pyconv.relu_backward(g64, x32).dtype == np.float64
    assert pyconv.relu_backward(g16, x32).dtype == np.float32
    assert pyconv.gelu_backward(g16, x32.astype(np.float16)).dtype == np.float16
    y = pyconv.sigmoid(x32)
    assert pyconv.sigmoid_backward(g64, y).dtype == np.float64
    assert pyconv.softmax_backward(g64, pyconv.softmax(x32)).dtype == np.float64
    assert pyconv.maxout_backward(np.ones((3, 2)), x32, 2).dtype == np.float64
    assert pyconv.maxout_backward(np.ones((3, 2), np.int32), x32, 2).dtype == np.float64
    assert pyconv.leaky_relu(np.array([1, -2]), 0.5).dtype == np.float64


def test_nested_lists_read_only_and_fresh_outputs():
    np.testing.assert_array_equal(pyconv.relu([[-1.0, 2.0]]), [[0.0, 2.0]])
    np.testing.assert_allclose(pyconv.softmax([[0.0, 0.0]]), [[0.5, 0.5]])
    a = np.linspace(-3, 3, 10)
    a.setflags(write=False)
    for op in OPS:
        y = op.fwd(a)
        assert not np.shares_memory(y, a)
        assert y.flags.writeable
    np.testing.assert_array_equal(a, np.linspace(-3, 3, 10))


# --------------------------------------------------------------------------
# thread-count independence
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_thread_count_independence(dtype, restore_threads):
    rng = np.random.default_rng(14)
    x = (rng.standard_normal((64, 96, 129)) * 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    xs = x[:, :, :40]  # softmax along axis 0 and 1 (strided rows)

    def run():
        out = []
        for op in OPS:
            y = op.fwd(x)
            out += [y, op.bwd(dy, x, y)]
        for name, _, _ in SM:
            for axis in (-1, 0, 1):
                y = getattr(pyconv, name)(xs, axis=axis)
                out += [y, getattr(pyconv, name + "_backward")(np.ascontiguousarray(dy[:, :, :40]),
                                                                 y, axis=axis)]
        y = pyconv.maxout(x, 4, axis=1)
        out += [y, pyconv.maxout_backward(dy[:, :24], x, 4, axis=1)]
        return out

    pyconv.set_num_threads(1)
    one = run()
    pyconv.set_num_threads(2)
    two = run()
    for i, (a, b) in enumerate(zip(one, two)):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b, equal_nan=True), f"result {i} differs between 1 and 2 threads"


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
X = np.zeros((2, 6, 3))


@pytest.mark.parametrize("bad", ["a", None, [0.1], 1j])
def test_bad_scalar_parameters(bad):
    with pytest.raises(TypeError, match="negative_slope"):
        pyconv.leaky_relu(X, negative_slope=bad)
    with pytest.raises(TypeError, match="negative_slope"):
        pyconv.leaky_relu_backward(X, X, negative_slope=bad)
    with pytest.raises(TypeError, match="alpha"):
        pyconv.elu(X, alpha=bad)
    with pytest.raises(TypeError, match="alpha"):
        pyconv.elu_backward(X, X, alpha=bad)


@pytest.mark.parametrize("bad", ["erf", "Tanh", "", None, True])
def test_bad_gelu_approximate(bad):
    with pytest.raises((ValueError, TypeError), match="approximate"):
        pyconv.gelu(X, approximate=bad)
    with pytest.raises((ValueError, TypeError), match="approximate"):
        pyconv.gelu_backward(X, X, approximate=bad)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_bad_axis(name):
    f, b = getattr(pyconv, name), getattr(pyconv, name + "_backward")
    for axis in (3, -4, 10):
        with pytest.raises(ValueError, match="axis"):
            f(X, axis=axis)
        with pytest.raises(ValueError, match="axis"):
            b(X, X, axis=axis)
    for axis in (1.0, "1", None):
        with pytest.raises(TypeError, match="axis"):
            f(X, axis=axis)
    with pytest.raises(ValueError, match="axis|input"):
        f(np.float64(1.0), axis=0)  # 0-d input has no axis
    with pytest.raises(ValueError, match="grad_output|output"):
        b(np.zeros((2, 6, 4)), X, axis=1)


def test_maxout_bad_arguments():
    for pieces in (0, -2):
        with pytest.raises(ValueError, match="pieces"):
            pyconv.maxout(X, pieces)
    for pieces in (4, 7):  # does not divide 6 channels
        with pytest.raises(ValueError, match="pieces"):
            pyconv.maxout(X, pieces)
        with pytest.raises(ValueError, match="pieces"):
            pyconv.maxout_backward(np.zeros((2, 1, 3)), X, pieces)
    for pieces in (2.0, "2", None, True):
        with pytest.raises(TypeError, match="pieces"):
            pyconv.maxout(X, pieces)
    with pytest.raises(ValueError, match="axis"):
        pyconv.maxout(X, 2, axis=3)
    with pytest.raises(TypeError, match="axis"):
        pyconv.maxout(X, 2, axis=1.5)
    with pytest.raises(ValueError, match="grad_output"):
        pyconv.maxout_backward(np.zeros((2, 6, 3)), X, 2)  # should be (2, 3, 3)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_backward_shape_mismatch(op):
    with pytest.raises(ValueError, match="grad_output|input|output"):
        op.bwd(np.zeros((2, 6)), X, X)
    with pytest.raises(ValueError, match="grad_output|input|output"):
        op.bwd(np.zeros((6, 2, 3)), X, X)


@pytest.mark.parametrize("bad", [np.zeros(3, np.complex128), np.array(["a", "b"]),
                                 np.zeros(2, object)])
def test_bad_dtype(bad):
    for op in OPS:
        with pytest.raises(TypeError, match="input"):
            op.fwd(bad)
    with pytest.raises(TypeError, match="input"):
        pyconv.softmax(bad, axis=0)
    with pytest.raises(TypeError, match="input"):
        pyconv.maxout(bad, 1, axis=0)
    with pytest.raises(TypeError, match="grad_output"):
        pyconv.relu_backward(bad, np.zeros(bad.shape))


# --------------------------------------------------------------------------
# every ISA: float32 activations and softmax take SIMD kernels (vmath) unless
# the ISA is 'ref'; both paths must meet the same tolerances
# --------------------------------------------------------------------------
@pytest.mark.parametrize("isa", pyconv.supported_isas())
def test_every_isa_float32(isa):
    old = pyconv.get_isa()
    pyconv.set_isa(isa)
    try:
        for op in OPS:
            test_special_values(op, np.float32)
            for shape in SHAPES + [(16,), (17,), (1000, 3)]:
                test_elementwise(op, shape, np.float32)
        for name, ref, ref_bwd in SM:
            test_softmax_special_values(name, ref, ref_bwd, np.float32)
            for shape, axis in SOFTMAX_CASES + [((5, 8), 1), ((2, 16), 1), ((3, 9), -1)]:
                test_softmax_family(name, ref, ref_bwd, shape, axis, np.float32)
    finally:
        pyconv.set_isa(old)


@pytest.mark.parametrize("shape,axis", [((129, 10), 1), ((70, 31), 1), ((7, 3), 1), ((200, 8), 1),
                                        ((64, 16), 1), ((3, 5, 263), 1),
                                        ((2, 9, 7, 3), 1), ((300, 2), 0), ((1, 4, 1, 17), 1)])
@pytest.mark.parametrize("name,ref,ref_bwd", SM, ids=[s[0] for s in SM])
def test_softmax_columns_blocks_every_isa(name, ref, ref_bwd, shape, axis, isa):
    """float32 softmax over short rows (transposed in blocks of 64 lines) and over
    a non-last axis (8 columns per vector, column blocks of 256) against the
    reference, with special values spread over the blocks and their tails."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    flat = x.reshape(-1)
    k = max(1, flat.size // 50)
    flat[rng.choice(flat.size, k, replace=False)] = -np.inf
    flat[rng.choice(flat.size, k, replace=False)] = np.nan
    dy = rng.standard_normal(shape).astype(np.float32)
    y = getattr(pyconv, name)(x, axis=axis)
    y_ref = ref(x.astype(np.float64), axis)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    ok = ~np.isnan(y_ref)
    assert_close(y[ok], y_ref[ok], np.float32, "y")
    y_clean = getattr(pyconv, name)(np.nan_to_num(x, neginf=-30.0), axis=axis)
    dx = getattr(pyconv, name + "_backward")(dy, y_clean, axis=axis)
    assert_close(dx, ref_bwd(dy.astype(np.float64), y_clean.astype(np.float64), axis), np.float32, "dx")


@pytest.mark.parametrize("isa", pyconv.supported_isas())
def test_gelu_float32_relative_precision_every_isa(isa):
    """float32 GELU = x * Phi(x) to a few ulp of itself everywhere, the far
    negative tail included (Phi(-12) ~ 2e-33: an erf-based 0.5 * (1 + erf)
    would lose it all), and its gradient to a few ulp of Phi + |x| phi. (Below
    x = -12.7, Phi is subnormal in float32 and has fewer bits.)"""
    x = np.concatenate([np.linspace(-12.7, 13.1, 200_003),
                        np.random.default_rng(5).standard_normal(50_000) * 2]).astype(np.float32)
    xd = x.astype(np.float64)
    y_ref = R.gelu_ref(xd)
    old = pyconv.get_isa()
    pyconv.set_isa(isa)
    try:
        y = pyconv.gelu(x)
        dx = pyconv.gelu_backward(np.ones_like(x), x)
    finally:
        pyconv.set_isa(old)
    ulp = np.spacing(np.abs(y_ref).astype(np.float32)).astype(np.float64)
    err = np.abs(y - y_ref) / ulp
    assert err.max() <= 8, f"gelu off by {err.max():.1f} ulp at x = {x[np.argmax(err)]}"
    # The gradient Phi + x phi cancels near its root (x ~ -0.75) and in the
    # negative tail, so it is held to a few ulp of the sum of its terms' sizes.
    phi = np.exp(-0.5 * xd * xd) / np.sqrt(2 * np.pi)
    cdf = 0.5 * np.asarray(R._erfc(-xd * R._SQRT1_2), dtype=np.float64)
    size = np.spacing((cdf + np.abs(xd) * phi).astype(np.float32)).astype(np.float64)
    err_d = np.abs(dx - (cdf + xd * phi)) / size
    assert err_d.max() <= 8, f"gelu_backward off by {err_d.max():.1f} ulp at x = {x[np.argmax(err_d)]}"


@pytest.mark.parametrize("isa", pyconv.supported_isas())
def test_tanh_float32_ulp_every_isa(isa):
    """float32 tanh (a rational in x^2, no exp) within 8 ulp of the float64
    value from 1e-30 to the saturation, every float of [8.5, 9.5] included,
    and exactly +-1 from 9.1 on (what GELU's tanh form needs for exact 0)."""
    sat = np.arange(np.float32(8.5).view(np.int32), np.float32(9.5).view(np.int32),
                    dtype=np.int32).view(np.float32)
    x = np.concatenate([np.linspace(0, 8.5, 400_001, dtype=np.float32), sat,
                        np.geomspace(1e-30, 1e-2, 50_000).astype(np.float32)])
    x = np.concatenate([x, -x])
    old = pyconv.get_isa()
    pyconv.set_isa(isa)
    try:
        y = pyconv.tanh(x)
        big = pyconv.tanh(np.array([9.1, 9.5, 20.0, 1e30, -9.1, -1e30], np.float32))
    finally:
        pyconv.set_isa(old)
    ref = np.tanh(x.astype(np.float64))
    err = np.abs(y - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert err.max() <= 8, f"tanh off by {err.max():.1f} ulp at x = {x[np.argmax(err)]}"
    np.testing.assert_array_equal(big, [1, 1, 1, 1, -1, -1])


@pytest.mark.parametrize("isa", pyconv.supported_isas())
@pytest.mark.parametrize("dim", [1, 7, 8, 31, 32, 37, 100, 1000])
def test_log_softmax_backward_takes_any_output(isa, dim):
    """log_softmax_backward computes g - exp(y) * sum(g) for whatever y it is
    given: the exp kernel's fast path assumes arguments <= 0 (a log-softmax
    output) and must hand lines with a positive y (anywhere: body, last
    partial vector) to the general exp, not return wrong values."""
    rng = np.random.default_rng(dim)
    g = rng.standard_normal((6, dim)).astype(np.float32)
    y = -np.abs(rng.standard_normal((6, dim))).astype(np.float32) * 3
    y[1, -1] = 0.5          # positive in the last element
    y[2, 0] = 2.0           # positive first
    y[3] = np.abs(y[3])     # all positive
    y[4, dim // 2] = 80.0   # large, still finite in float32
    old = pyconv.get_isa()
    pyconv.set_isa(isa)
    try:
        dx = pyconv.log_softmax_backward(g, y, axis=1)
    finally:
        pyconv.set_isa(old)
    assert_close(dx, R.log_softmax_backward_ref(g, y, axis=1), np.float32, "dx")
