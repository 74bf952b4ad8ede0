"""Losses (cross_entropy with label smoothing and probability targets, nll_loss,
mse_loss) forward and backward.

Checked against the float64 references in ``pyconv.testing.reference_ops``
(anchored to PyTorch in tests/test_ops_torch.py). Tolerances (got vs float64
reference ``ref``, elementwise, ``scale = max(max|ref|, 1)`` over the finite
reference values; equal infinities and NaN positions match):

    float64:  |got - ref| <= 1e-12 * |ref| + 1e-12 * scale
    float32:  |got - ref| <= 1e-5  * |ref| + 1e-5  * scale
    float16:  |got - ref| <= 2e-3  * |ref| + 2e-3  * scale  (computed in float32)

A reduced loss sums N (or numel) terms, each carrying a relative rounding
error of a few ulps of the logits' magnitude, hence the scaled absolute term.
For float32 the reference runs on the already-rounded inputs.

Sections: the grid (shapes x targets x label smoothing x reduction), return
types, hand-computed values, extreme and non-finite logits, gradient checks,
dtypes and layouts, thread-count independence, errors.
"""
from __future__ import annotations

import itertools
import math
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
REDUCTIONS = ["mean", "sum", "none"]


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
        idx = np.unravel_index(np.argmax(~ok), ok.shape) if ok.ndim else ()
        raise AssertionError(
            f"{what} ({dtype}): {int((~ok).sum())}/{ok.size} elements off; first at {idx}: "
            f"got {g[idx]!r}, reference {ref[idx]!r} (scale {scale:.3g})")


def assert_loss_type(loss, reduction, dtype, n):
    """'mean'/'sum' give a NumPy scalar (0-d) of the result dtype; 'none' gives (n,)."""
    a = np.asarray(loss)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == n
    else:
        assert a.ndim == 0, f"reduction={reduction!r} must give a scalar, got shape {a.shape}"
        assert isinstance(loss, (np.generic, np.ndarray, float))
    assert a.dtype == dtype, f"loss dtype {a.dtype} != {np.dtype(dtype)}"


NAMES = ["cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward", "mse_loss",
         "mse_loss_backward"]


@pytest.mark.parametrize("name", NAMES)
def test_exported(name):
    f = getattr(pyconv, name)
    assert callable(f)
    assert getattr(Fn, name) is f


def _grad_for(loss_shape, rng, dtype):
    return rng.standard_normal(loss_shape).astype(dtype) if loss_shape else dtype(rng.standard_normal())


# --------------------------------------------------------------------------
# cross_entropy grid
# --------------------------------------------------------------------------
NC = [(1, 1), (1, 5), (4, 3), (7, 10), (3, 1031), (33, 17)]
TARGETS = ["index", "prob", "soft"]  # soft: unnormalised non-negative rows (PyTorch allows them)
SMOOTH = [0.0, 0.1, 1.0]


def _ce_inputs(N, C, kind, dtype, seed=0):
    rng = np.random.default_rng(seed + 31 * N + C)
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    if kind == "index":
        t = rng.integers(0, C, N)
    else:
        t = rng.random((N, C))
        if kind == "prob":
            t /= t.sum(axis=1, keepdims=True)
        t = t.astype(dtype)
    return x, t, rng


CE_CASES = list(itertools.product(NC, TARGETS, SMOOTH))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("nc,kind,ls", CE_CASES,
                         ids=[f"n{n}c{c}-{k}-ls{ls}" for (n, c), k, ls in CE_CASES])
def test_cross_entropy_grid(nc, kind, ls, dtype):
    N, C = nc
    x, t, rng = _ce_inputs(N, C, kind, dtype)
    for red in REDUCTIONS:
        loss = pyconv.cross_entropy(x, t, reduction=red, label_smoothing=ls)
        assert_loss_type(loss, red, dtype, (N,))
        assert_close(loss, R.cross_entropy_ref(x, t, red, ls), dtype, f"loss {red}")
        g = _grad_for((N,) if red == "none" else (), rng, dtype)
        dx = pyconv.cross_entropy_backward(g, x, t, reduction=red, label_smoothing=ls)
        assert dx.dtype == dtype and dx.shape == (N, C)
        assert_close(dx, R.cross_entropy_backward_ref(g, x, t, red, ls), dtype, f"dx {red}")


def test_cross_entropy_defaults():
    x, t, _ = _ce_inputs(5, 4, "index", np.float64)
    assert pyconv.cross_entropy(x, t) == pyconv.cross_entropy(x, t, "mean", 0.0)
    np.testing.assert_array_equal(pyconv.cross_entropy_backward(1.0, x, t),
                                  pyconv.cross_entropy_backward(1.0, x, t, "mean", 0.0))
    # grad_output may be a Python float, a 0-d array or a 1-element array
    for g in (2.0, np.array(2.0), np.float32(2.0), 2):
        assert_close(pyconv.cross_entropy_backward(g, x, t),
                     R.cross_entropy_backward_ref(2.0, x, t), np.float64, f"g={g!r}")


def test_cross_entropy_by_hand():
    # uniform logits: loss = log C whatever the target and the smoothing
    x = np.zeros((4, 5))
    for t in (np.array([0, 1, 4, 2]), np.eye(5)[[0, 1, 4, 2]]):
        for ls in (0.0, 0.3, 1.0):
            assert math.isclose(pyconv.cross_entropy(x, t, label_smoothing=ls), math.log(5),
                                rel_tol=1e-14)
            assert math.isclose(pyconv.cross_entropy(x, t, "sum", ls), 4 * math.log(5),
                                rel_tol=1e-14)
    # p = (1/4, 3/4); target 1 smoothed by 0.5 -> (1/4, 3/4): loss = entropy of (1/4, 3/4)
    x = np.array([[0.0, math.log(3.0)]])
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert math.isclose(pyconv.cross_entropy(x, np.array([1]), label_smoothing=0.5), h,
                        rel_tol=1e-14)
    # ... where the gradient p - t' vanishes
    np.testing.assert_allclose(pyconv.cross_entropy_backward(1.0, x, np.array([1]),
                                                             label_smoothing=0.5), 0, atol=1e-15)
    # probability targets are averaged over N too (not over N * C)
    q = np.array([[0.25, 0.75], [0.25, 0.75]])
    xx = np.repeat(x, 2, axis=0)
    assert math.isclose(pyconv.cross_entropy(xx, q), h, rel_tol=1e-14)
    assert math.isclose(pyconv.cross_entropy(xx, q, "sum"), 2 * h, rel_tol=1e-14)
    # mean gradient = sum gradient / N
    np.testing.assert_allclose(pyconv.cross_entropy_backward(1.0, xx, np.array([0, 0])),
                               pyconv.cross_entropy_backward(0.5, xx, np.array([0, 0]), "sum"),
                               rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cross_entropy_extreme_logits(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4], [0.0, 0.0, 1e4],
                  [-1e4, 1e4, 3.0]], dtype=dtype)
    t = np.array([1, 0, 2, 2, 1])
    q = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0],
                  [1.0, 0.0, 0.0]], dtype=dtype)
    for tt, ls in itertools.product((t, q), (0.0, 0.2)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss = pyconv.cross_entropy(x, tt, "none", ls)
            dx = pyconv.cross_entropy_backward(np.ones(5, dtype), x, tt, "none", ls)
        assert np.isfinite(loss).all() and np.isfinite(dx).all()
        assert_close(loss, R.cross_entropy_ref(x, tt, "none", ls), dtype, f"loss ls={ls}")
        assert_close(dx, R.cross_entropy_backward_ref(np.ones(5), x, tt, "none", ls), dtype, "dx")
    loss = pyconv.cross_entropy(x, t, "none")
    assert loss[0] == 2e4 and loss[3] == 0.0 and loss[4] == 0.0
    assert math.isclose(loss[1], math.log(3), rel_tol=TOL[np.dtype(dtype)][0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("big", [1e2, 1e3, 1e4])
def test_cross_entropy_large_logits_keep_precision(big, dtype):
    """Logits far from 0 but close to each other: subtracting the row max first
    (x - max is exact) keeps full relative precision, as PyTorch does; folding the
    max into a rounded logsumexp (lse - x, exp(x - lse)) loses ulp(big)."""
    x = np.array([[big, big - 2.0, -big], [big, big, -big], [big - 0.5, big, big - 3.0]], dtype=dtype)
    t = np.array([0, 2, 1])
    for ls in (0.0, 0.1):
        loss = pyconv.cross_entropy(x, t, "none", ls)
        dx = pyconv.cross_entropy_backward(np.ones(3, dtype), x, t, "none", ls)
        ref = R.cross_entropy_ref(x, t, "none", ls)
        # scale 1 per element: judge each row's loss relative to itself
        for i in range(3):
            assert_close(loss[i:i + 1], ref[i:i + 1], dtype, f"loss row {i} ls={ls}")
        assert_close(dx, R.cross_entropy_backward_ref(np.ones(3), x, t, "none", ls), dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cross_entropy_nonfinite(dtype):
    x = np.array([[np.nan, 1.0, 2.0], [1.0, np.inf, 0.0], [0.0, -np.inf, 1.0], [1.0, 2.0, 3.0]],
                 dtype=dtype)
    t = np.array([1, 1, 0, 2])
    loss = pyconv.cross_entropy(x, t, "none")
    ref = R.cross_entropy_ref(x, t, "none")
    np.testing.assert_array_equal(np.isnan(loss), [True, True, False, False])
    # a -inf logit away from the target leaves the class-index loss finite
    assert_close(loss, ref, dtype, "loss")
    dx = pyconv.cross_entropy_backward(np.ones(4, dtype), x, t, "none")
    assert np.isnan(dx[:2]).all() and np.isfinite(dx[2:]).all()
    assert dx[2, 1] == 0.0
    assert_close(dx, R.cross_entropy_backward_ref(np.ones(4), x, t, "none"), dtype, "dx")
    # NaN in one row makes the mean NaN
    assert np.isnan(pyconv.cross_entropy(x, t))
    # smoothing spreads mass onto the -inf logit: infinite loss (as PyTorch)
    assert pyconv.cross_entropy(x[2:3], t[2:3], "sum", 0.1) == np.inf


# --------------------------------------------------------------------------
# nll_loss and mse_loss grids
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("nc", NC, ids=[f"n{n}c{c}" for n, c in NC])
def test_nll_loss_grid(nc, dtype):
    N, C = nc
    rng = np.random.default_rng(N * 100 + C)
    for x in (R.log_softmax_ref(rng.standard_normal((N, C)) * 2, 1), rng.standard_normal((N, C))):
        x = x.astype(dtype)
        t = rng.integers(0, C, N)
        for red in REDUCTIONS:
            loss = pyconv.nll_loss(x, t, reduction=red)
            assert_loss_type(loss, red, dtype, (N,))
            assert_close(loss, R.nll_loss_ref(x, t, red), dtype, f"nll {red}")
            g = _grad_for((N,) if red == "none" else (), rng, dtype)
            dx = pyconv.nll_loss_backward(g, x, t, reduction=red)
            assert dx.dtype == dtype
            assert_close(dx, R.nll_loss_backward_ref(g, x, t, red), dtype, f"nll dx {red}")


def test_nll_loss_by_hand():
    x = np.array([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    t = np.array([2, 0])
    np.testing.assert_array_equal(pyconv.nll_loss(x, t, "none"), [3.0, 4.0])
    assert pyconv.nll_loss(x, t) == 3.5 and pyconv.nll_loss(x, t, "sum") == 7.0
    np.testing.assert_array_equal(pyconv.nll_loss_backward(np.array([1.0, 2.0]), x, t, "none"),
                                  [[0, 0, -1], [-2, 0, 0]])
    np.testing.assert_array_equal(pyconv.nll_loss_backward(1.0, x, t), [[0, 0, -0.5], [-0.5, 0, 0]])
    # other classes never read: inf/NaN there do not leak
    x[0, 0] = np.nan
    x[1, 2] = -np.inf
    assert pyconv.nll_loss(x, t) == 3.5


MSE_SHAPES = [(1,), (5,), (3, 4), (2, 3, 4, 5), (1, 1031), (2, 65)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", MSE_SHAPES, ids=[str(s) for s in MSE_SHAPES])
def test_mse_loss_grid(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    for red in REDUCTIONS:
        loss = pyconv.mse_loss(x, t, reduction=red)
        assert_loss_type(loss, red, dtype, shape)
        assert_close(loss, R.mse_loss_ref(x, t, red), dtype, f"mse {red}")
        g = _grad_for(shape if red == "none" else (), rng, dtype)
        dx = pyconv.mse_loss_backward(g, x, t, reduction=red)
        assert dx.dtype == dtype and dx.shape == shape
        assert_close(dx, R.mse_loss_backward_ref(g, x, t, red), dtype, f"mse dx {red}")


def test_mse_loss_by_hand_and_nonfinite():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = np.array([[0.0, 0.0], [3.0, 6.0]])
    assert pyconv.mse_loss(x, t) == 9.0 / 4 and pyconv.mse_loss(x, t, "sum") == 9.0
    np.testing.assert_array_equal(pyconv.mse_loss(x, t, "none"), [[1, 4], [0, 4]])
    np.testing.assert_array_equal(pyconv.mse_loss_backward(1.0, x, t), [[0.5, 1], [0, -1]])
    np.testing.assert_array_equal(pyconv.mse_loss_backward(np.ones((2, 2)), x, t, "none"),
                                  [[2, 4], [0, -4]])
    x[0, 1] = np.nan
    x[1, 0] = np.inf
    y = pyconv.mse_loss(x, t, "none")
    assert np.isnan(y[0, 1]) and y[1, 0] == np.inf and y[0, 0] == 1.0 and y[1, 1] == 4.0
    assert np.isnan(pyconv.mse_loss(x, t))


def test_mse_loss_zero_d():
    loss = pyconv.mse_loss(np.float64(3.0), np.float64(1.0), "none")
    assert np.shape(loss) == () and float(loss) == 4.0
    assert float(pyconv.mse_loss(3.0, 1.0)) == 4.0
    assert np.shape(pyconv.mse_loss_backward(1.0, np.float64(3.0), np.float64(1.0))) == ()


# --------------------------------------------------------------------------
# gradient checks (float64, central differences)
# --------------------------------------------------------------------------
GC_CE = [("index", 0.0, "mean"), ("index", 0.2, "sum"), ("index", 0.1, "none"),
         ("prob", 0.0, "mean"), ("soft", 0.3, "none"), ("soft", 0.0, "sum")]


@pytest.mark.parametrize("kind,ls,red", GC_CE)
def test_gradcheck_cross_entropy(kind, ls, red):
    x, t, _ = _ce_inputs(4, 6, kind, np.float64, seed=5)
    f = lambda x: pyconv.cross_entropy(x, t, red, ls)  # noqa: E731
    res = gradcheck(f, [x], lambda Rp, x: [pyconv.cross_entropy_backward(Rp, x, t, red, ls)])
    assert res.ok and res.checked == x.size
    gradcheck(lambda x: R.cross_entropy_ref(x, t, red, ls), [x],
              lambda Rp, x: [R.cross_entropy_backward_ref(Rp, x, t, red, ls)])


@pytest.mark.parametrize("red", REDUCTIONS)
def test_gradcheck_nll_and_mse(red):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    res = gradcheck(lambda x: pyconv.nll_loss(x, t, red), [x],
                    lambda Rp, x: [pyconv.nll_loss_backward(Rp, x, t, red)])
    assert res.ok
    y = rng.standard_normal((5, 4))
    res = gradcheck(lambda x: pyconv.mse_loss(x, y, red), [x],
                    lambda Rp, x: [pyconv.mse_loss_backward(Rp, x, y, red)])
    assert res.ok
    gradcheck(lambda x: R.mse_loss_ref(x, y, red), [x],
              lambda Rp, x: [R.mse_loss_backward_ref(Rp, x, y, red)])
    gradcheck(lambda x: R.nll_loss_ref(x, t, red), [x],
              lambda Rp, x: [R.nll_loss_backward_ref(Rp, x, t, red)])


# --------------------------------------------------------------------------
# dtypes and layouts
# --------------------------------------------------------------------------
def test_dtype_rules():
    rng = np.random.default_rng(7)
    x64 = rng.standard_normal((6, 5))
    ti = rng.integers(0, 5, 6)
    q = rng.random((6, 5))
    q /= q.sum(1, keepdims=True)
    for xd in (np.float32, np.float64, np.float16):
        x = x64.astype(xd)
        # integer targets never change the dtype
        for tdt in (np.int64, np.int32, np.uint8, np.int16):
            assert np.asarray(pyconv.cross_entropy(x, ti.astype(tdt))).dtype == xd
            assert pyconv.cross_entropy(x, ti.astype(tdt), "none").dtype == xd
            assert pyconv.cross_entropy_backward(1.0, x, ti.astype(tdt)).dtype == xd
            assert np.asarray(pyconv.nll_loss(x, ti.astype(tdt))).dtype == xd
            assert pyconv.nll_loss_backward(1.0, x, ti.astype(tdt)).dtype == xd
        assert pyconv.cross_entropy(x, q.astype(xd), "none").dtype == xd
        assert np.asarray(pyconv.mse_loss(x, x64.astype(xd)[::-1])).dtype == xd
    # probability targets and mse targets promote like NumPy
    assert pyconv.cross_entropy(x64.astype(np.float32), q, "none").dtype == np.float64
    assert pyconv.cross_entropy_backward(1.0, x64.astype(np.float32), q).dtype == np.float64
    assert pyconv.mse_loss(x64.astype(np.float32), x64, "none").dtype == np.float64
    assert pyconv.mse_loss(x64.astype(np.float16), x64.astype(np.float32), "none").dtype == np.float32
    # integer logits / inputs compute in float64
    xi = rng.integers(-3, 4, (6, 5))
    loss = pyconv.cross_entropy(xi, ti)
    assert np.asarray(loss).dtype == np.float64
    assert_close(loss, R.cross_entropy_ref(xi, ti), np.float64, "int logits")
    assert pyconv.mse_loss(xi, xi[::-1], "none").dtype == np.float64
    assert_close(pyconv.mse_loss(xi, xi[::-1]), R.mse_loss_ref(xi, xi[::-1]), np.float64, "int mse")
    assert pyconv.mse_loss_backward(1, xi, xi[::-1]).dtype == np.float64


def test_float16_values():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((5, 7)) * 2).astype(np.float16)
    t = rng.integers(0, 7, 5)
    assert_close(pyconv.cross_entropy(x, t, "none", 0.1), R.cross_entropy_ref(x, t, "none", 0.1),
                 np.float16, "ce")
    assert_close(pyconv.cross_entropy_backward(np.float16(1), x, t, "mean", 0.1),
                 R.cross_entropy_backward_ref(1.0, x, t, "mean", 0.1), np.float16, "ce dx")
    y = rng.standard_normal((5, 7)).astype(np.float16)
    assert_close(pyconv.mse_loss(x, y), R.mse_loss_ref(x, y), np.float16, "mse")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["fortran", "strided", "negative"])
def test_layouts(layout, dtype):
    rng = np.random.default_rng(9)
    base = (rng.standard_normal((12, 14)) * 2).astype(dtype)
    qbase = rng.random((12, 14)).astype(dtype)

    def view(a):
        return {"fortran": np.asfortranarray(a), "strided": a[::2, ::2],
                "negative": a[::-1, ::-2]}[layout]

    x, q = view(base), view(qbase)
    assert not x.flags.c_contiguous
    N, C = x.shape
    ti = rng.integers(0, C, 2 * N)[::2]  # strided integer target
    xc, qc = np.ascontiguousarray(x), np.ascontiguousarray(q)
    for t, tc in ((ti, np.ascontiguousarray(ti)), (q, qc)):
        for red in REDUCTIONS:
            assert_close(pyconv.cross_entropy(x, t, red, 0.1),
                         R.cross_entropy_ref(xc, tc, red, 0.1), dtype, f"ce {red}")
        g = rng.standard_normal(2 * N).astype(dtype)[::2]
        assert_close(pyconv.cross_entropy_backward(g, x, t, "none", 0.1),
                     R.cross_entropy_backward_ref(g, xc, tc, "none", 0.1), dtype, "ce dx")
    assert_close(pyconv.nll_loss(x, ti, "none"), R.nll_loss_ref(xc, ti, "none"), dtype, "nll")
    assert_close(pyconv.mse_loss(x, q, "none"), R.mse_loss_ref(xc, qc, "none"), dtype, "mse")
    assert_close(pyconv.mse_loss_backward(view(base), x, q, "none"),
                 R.mse_loss_backward_ref(view(base), xc, qc, "none"), dtype, "mse dx")
    np.testing.assert_array_equal(x, view(base))  # inputs untouched


def test_nested_lists():
    assert math.isclose(pyconv.cross_entropy([[0.0, 0.0]], [1]), math.log(2), rel_tol=1e-15)
    assert pyconv.mse_loss([1.0, 2.0], [1.0, 4.0], "sum") == 4.0
    assert pyconv.nll_loss([[-1.0, -2.0]], [1]) == 2.0


# --------------------------------------------------------------------------
# thread-count independence
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_thread_count_independence(dtype, restore_threads):
    rng = np.random.default_rng(10)
    N, C = 2048, 1000
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    ti = rng.integers(0, C, N)
    q = rng.random((N, C)).astype(dtype)
    y = rng.standard_normal((N, C)).astype(dtype)
    gN = rng.standard_normal(N).astype(dtype)

    def run():
        out = []
        for t, ls in ((ti, 0.0), (ti, 0.1), (q, 0.05)):
            for red in REDUCTIONS:
                out.append(np.asarray(pyconv.cross_entropy(x, t, red, ls)))
            out.append(pyconv.cross_entropy_backward(1.5, x, t, "mean", ls))
            out.append(pyconv.cross_entropy_backward(gN, x, t, "none", ls))
        for red in REDUCTIONS:
            out.append(np.asarray(pyconv.nll_loss(x, ti, red)))
            out.append(np.asarray(pyconv.mse_loss(x, y, red)))
        out.append(pyconv.nll_loss_backward(gN, x, ti, "none"))
        out.append(pyconv.mse_loss_backward(0.5, x, y, "mean"))
        return out

    pyconv.set_num_threads(1)
    one = run()
    pyconv.set_num_threads(2)
    two = run()
    for i, (a, b) in enumerate(zip(one, two)):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), f"result {i} differs between 1 and 2 threads"


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
XE = np.zeros((3, 4))
TE = np.array([0, 3, 1])


def _ce_calls(**kw):
    """Every loss entry point that takes the given arguments."""
    x, t = kw.pop("input", XE), kw.pop("target", TE)
    return [lambda: pyconv.cross_entropy(x, t, **kw),
            lambda: pyconv.cross_entropy_backward(1.0, x, t, **kw)]


def _nll_calls(**kw):
    x, t = kw.pop("input", XE), kw.pop("target", TE)
    return [lambda: pyconv.nll_loss(x, t, **kw),
            lambda: pyconv.nll_loss_backward(1.0, x, t, **kw)]


@pytest.mark.parametrize("red", ["avg", "MEAN", "", None, 1])
def test_bad_reduction(red):
    calls = _ce_calls(reduction=red) + _nll_calls(reduction=red) + [
        lambda: pyconv.mse_loss(XE, XE, reduction=red),
        lambda: pyconv.mse_loss_backward(1.0, XE, XE, reduction=red)]
    for call in calls:
        with pytest.raises((ValueError, TypeError), match="reduction"):
            call()


@pytest.mark.parametrize("ls,exc", [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                                    ("0.1", TypeError), (None, TypeError)])
def test_bad_label_smoothing(ls, exc):
    for call in _ce_calls(label_smoothing=ls) + _ce_calls(label_smoothing=ls, target=np.ones((3, 4))):
        with pytest.raises(exc, match="label_smoothing"):
            call()


@pytest.mark.parametrize("bad", [4, -1, 100])
def test_target_out_of_range(bad):
    t = TE.copy()
    t[1] = bad
    for call in _ce_calls(target=t) + _nll_calls(target=t):
        with pytest.raises(ValueError, match="target"):
            call()


@pytest.mark.parametrize("t", [np.array([0, 1]), np.array([0, 1, 2, 3]), np.array([[0], [1], [2]]),
                               np.array(1), np.ones((3, 5)), np.ones((4, 4)), np.ones(3),
                               np.ones((3, 4, 1))])
def test_target_wrong_shape(t):
    calls = _ce_calls(target=t)
    if t.dtype.kind in "iu":
        calls += _nll_calls(target=t)
    for call in calls:
        with pytest.raises(ValueError, match="target"):
            call()


@pytest.mark.parametrize("t", [np.array([0.0, 1.0, 2.0]), np.array(["a", "b", "c"]),
                               np.zeros(3, np.complex64), np.array([True, False, True])])
def test_target_bad_dtype(t):
    # nll needs integer class indices; cross_entropy's only float targets are (N, C) probabilities
    for call in _nll_calls(target=t) + _ce_calls(target=t):
        with pytest.raises((TypeError, ValueError), match="target"):
            call()


@pytest.mark.parametrize("x", [np.zeros(4), np.zeros(()), np.zeros((3, 0))])
def test_logits_wrong_shape(x):
    for call in _ce_calls(input=x, target=np.zeros(3, np.int64)) + _nll_calls(
            input=x, target=np.zeros(3, np.int64)):
        with pytest.raises(ValueError, match="input"):
            call()


def test_bad_input_dtype():
    xc = XE.astype(np.complex128)
    for call in _ce_calls(input=xc) + _nll_calls(input=xc) + [lambda: pyconv.mse_loss(xc, XE)]:
        with pytest.raises(TypeError, match="input"):
            call()
    with pytest.raises(TypeError, match="target"):
        pyconv.mse_loss(XE, xc)


def test_bad_grad_output():
    for red, bad in (("none", np.ones(4)), ("none", np.ones((3, 1))), ("none", 1.0),
                     ("mean", np.ones(3)), ("sum", np.ones((2, 2)))):
        with pytest.raises(ValueError, match="grad_output"):
            pyconv.cross_entropy_backward(bad, XE, TE, red)
        with pytest.raises(ValueError, match="grad_output"):
            pyconv.nll_loss_backward(bad, XE, TE, red)
        with pytest.raises(ValueError, match="grad_output"):
            pyconv.mse_loss_backward(bad if red != "none" else np.ones((4, 3)), XE, XE, red)
    with pytest.raises(TypeError, match="grad_output"):
        pyconv.cross_entropy_backward("1", XE, TE)


def test_mse_shape_mismatch():
    for t in (np.zeros((3, 5)), np.zeros((4, 3)), np.zeros(12), np.zeros((1, 4))):
        with pytest.raises(ValueError, match="target|shape"):
            pyconv.mse_loss(XE, t)
        with pytest.raises(ValueError, match="target|shape"):
            pyconv.mse_loss_backward(1.0, XE, t)


@pytest.mark.parametrize("isa", pyconv.supported_isas())
def test_cross_entropy_every_isa_float32(isa):
    """float32 cross-entropy takes the SIMD row kernels unless the ISA is 'ref'."""
    old = pyconv.get_isa()
    pyconv.set_isa(isa)
    try:
        # (short rows run 8 rows per vector in blocks of 64: N = 130 has both tails)
        for nc, kind, ls in CE_CASES + [((5, 8), "index", 0.0), ((9, 16), "prob", 0.1),
                                        ((130, 10), "index", 0.1), ((130, 31), "prob", 0.0),
                                        ((67, 3), "soft", 0.2)]:
            test_cross_entropy_grid(nc, kind, ls, np.float32)
        test_cross_entropy_extreme_logits(np.float32)
        test_cross_entropy_nonfinite(np.float32)
        for big in (1e2, 1e3, 1e4):
            test_cross_entropy_large_logits_keep_precision(big, np.float32)
    finally:
        pyconv.set_isa(old)
