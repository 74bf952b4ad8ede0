"""Pooling, activations and losses (forward and gradients) against PyTorch.

Skipped as a whole when torch is not importable (an optional oracle:
``pip install torch==2.13.0``, see DESIGN.md). Every op is run on a grid in
float32 and float64; torch computes in float64 on the same (already rounded)
input values, with autograd giving the gradients for a random grad_output.
The float64 references in ``pyconv.testing.reference_ops`` are checked
against torch here too, so the references are anchored to PyTorch semantics.
maxout has no torch equivalent and is only checked against its reference
(tests/test_activations.py).

Tolerances (got vs torch float64 ``ref``, elementwise, ``scale = max(max|ref|, 1)``
over the finite values; NaN positions and infinities must match):

    float64 (pyconv and reference):  1e-12 * |ref| + 1e-12 * scale
    float32:                         1e-5  * |ref| + 1e-5  * scale
    max-pooling values and indices:  exact
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import pyconv  # noqa: E402
from pyconv.testing import reference_ops as R  # noqa: E402

TOL = {np.dtype(np.float64): (1e-12, 1e-12), np.dtype(np.float32): (1e-5, 1e-5)}
DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]


def assert_close(got, ref, dtype, what):
    dtype = np.dtype(dtype)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != torch {ref.shape}"
    rtol, atol = TOL[dtype]
    fin = np.isfinite(ref)
    scale = max(float(np.abs(ref[fin]).max(initial=0.0)), 1.0)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(got - ref) <= rtol * np.abs(ref) + atol * scale) | (got == ref)
        ok |= np.isnan(got) & np.isnan(ref)
    if not ok.all():
        idx = np.unravel_index(np.argmax(~ok), ok.shape) if ok.ndim else ()
        raise AssertionError(f"{what} ({dtype}): {int((~ok).sum())}/{ok.size} off; first at "
                             f"{idx}: got {got[idx]!r}, torch {ref[idx]!r} (scale {scale:.3g})")


def torch_fwd_bwd(fn, x, dy=None, seed=0):
    """torch forward of float64 x, and (if dy is given or drawn) autograd dx, as NumPy."""
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    out = fn(xt)
    extra = None
    if isinstance(out, tuple):
        out, extra = out
    if dy is None:
        dy = np.asarray(np.random.default_rng(seed).standard_normal(tuple(out.shape)))
    out.backward(torch.tensor(np.asarray(dy, dtype=np.float64)))
    return (out.detach().numpy(), xt.grad.numpy(), dy,
            None if extra is None else extra.numpy())


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _pool_grid(with_dilation):
    cases = []
    sizes = [(7, 6), (5, 5), (8, 3), (4, 9)]
    dils = [1, 2, (2, 1)] if with_dilation else [1]
    for i, (k, s, p, d, cm) in enumerate(itertools.product(
            [2, 3, (2, 3)], [None, 1, 2, (1, 2)], [0, 1, (1, 0)], dils, [False, True])):
        (kh, kw), (ph, pw), (dh, dw) = _pair(k), _pair(p), _pair(d)
        if ph > kh // 2 or pw > kw // 2:
            continue
        H, W = sizes[i % len(sizes)]
        if H + 2 * ph < dh * (kh - 1) + 1 or W + 2 * pw < dw * (kw - 1) + 1:
            continue
        _, ind = R.max_pool2d_ref(np.zeros((1, 1, H, W)), k, s, p, d, cm)
        if (ind < 0).any():  # a window with no input tap: undefined in torch
            continue
        cases.append((H, W, k, s, p, d, cm))
    return cases


MAX_CASES = _pool_grid(True)
AVG_CASES = _pool_grid(False)


def _pool_id(c):
    return "h{}w{}-k{}-s{}-p{}-d{}{}".format(*c[:6], "-ceil" if c[6] else "")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", MAX_CASES, ids=[_pool_id(c) for c in MAX_CASES])
def test_max_pool2d(case, dtype):
    H, W, k, s, p, d, cm = case
    rng = np.random.default_rng(1)
    x = (rng.integers(-8, 8, (2, 3, H, W)) / 4.0).astype(dtype)  # ties
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=cm)
    y_t, dx_t, dy, ind_t = torch_fwd_bwd(lambda t: F.max_pool2d(t, return_indices=True, **kw), x)
    y, ind = pyconv.max_pool2d(x, return_indices=True, **kw)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(ind, ind_t)
    dy = dy.astype(dtype)
    assert_close(pyconv.max_pool2d_backward(dy, ind, x.shape), dx_t, dtype, "dx")
    y_r, ind_r = R.max_pool2d_ref(x, **kw)
    np.testing.assert_array_equal(y_r, y_t)
    np.testing.assert_array_equal(ind_r, ind_t)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", AVG_CASES, ids=[_pool_id(c) for c in AVG_CASES])
def test_avg_pool2d(case, dtype):
    H, W, k, s, p, _, cm = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    for cip, div in [(True, None), (False, None), (True, 2), (False, 5)]:
        kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=cm, count_include_pad=cip,
                  divisor_override=div)
        y_t, dx_t, dy, _ = torch_fwd_bwd(lambda t: F.avg_pool2d(t, **kw), x)
        assert_close(pyconv.avg_pool2d(x, **kw), y_t, dtype, f"y {kw}")
        assert_close(pyconv.avg_pool2d_backward(dy.astype(dtype), x.shape, **kw), dx_t, dtype,
                     f"dx {kw}")
        assert_close(R.avg_pool2d_ref(x, **kw), y_t, np.float64, "reference y")
        assert_close(R.avg_pool2d_backward_ref(dy, x.shape, **kw), dx_t, np.float64, "reference dx")


ADAPTIVE = [((5, 7), 1), ((5, 7), (2, 4)), ((5, 7), (None, 3)), ((6, 6), 4), ((4, 3), (7, 9)),
            ((9, 10), (4, 3)), ((13, 11), 5), ((1, 1), 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("hw,out", ADAPTIVE, ids=[f"{h}x{w}-{o}" for (h, w), o in ADAPTIVE])
def test_adaptive_pool2d(hw, out, dtype):
    rng = np.random.default_rng(3)
    x = (rng.integers(-8, 8, (2, 3) + hw) / 4.0).astype(dtype)
    y_t, dx_t, dy, _ = torch_fwd_bwd(lambda t: F.adaptive_avg_pool2d(t, out), x)
    assert_close(pyconv.adaptive_avg_pool2d(x, out), y_t, dtype, "avg y")
    assert_close(pyconv.adaptive_avg_pool2d_backward(dy.astype(dtype), x.shape), dx_t, dtype, "avg dx")
    assert_close(R.adaptive_avg_pool2d_ref(x, out), y_t, np.float64, "reference avg")
    y_t, dx_t, dy, ind_t = torch_fwd_bwd(
        lambda t: F.adaptive_max_pool2d(t, out, return_indices=True), x)
    y, ind = pyconv.adaptive_max_pool2d(x, out, return_indices=True)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(ind, ind_t)
    assert_close(pyconv.adaptive_max_pool2d_backward(dy.astype(dtype), ind, x.shape), dx_t, dtype,
                 "max dx")
    np.testing.assert_array_equal(R.adaptive_max_pool2d_ref(x, out)[1], ind_t)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_pooling_nonfinite(dtype):
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 7))
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = np.nan  # two NaNs in one window: torch takes the last
    x[0, 1] = -np.inf
    x[1, 0, 2, 2] = np.inf
    x[1, 2, ::2, ::2] = np.nan
    x = x.astype(dtype)
    for k, s, p in [(2, 1, 1), (3, 2, 1), ((1, 3), 1, 0)]:
        y_t, i_t = F.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        y, ind = pyconv.max_pool2d(x, k, s, p, return_indices=True)
        np.testing.assert_array_equal(y, y_t.numpy())
        np.testing.assert_array_equal(ind, i_t.numpy())
        assert_close(pyconv.avg_pool2d(x, k, s, p), F.avg_pool2d(torch.tensor(x), k, s, p).numpy(),
                     dtype, "avg")
    y_t, i_t = F.adaptive_max_pool2d(torch.tensor(x), (3, 4), return_indices=True)
    y, ind = pyconv.adaptive_max_pool2d(x, (3, 4), return_indices=True)
    np.testing.assert_array_equal(y, y_t.numpy())
    np.testing.assert_array_equal(ind, i_t.numpy())


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------
ACTS = [
    ("relu", {}, lambda t: F.relu(t), "input"),
    ("leaky_relu", {}, lambda t: F.leaky_relu(t), "input"),
    ("leaky_relu", {"negative_slope": 0.2}, lambda t: F.leaky_relu(t, 0.2), "input"),
    ("elu", {}, lambda t: F.elu(t), "input"),
    ("elu", {"alpha": 1.7}, lambda t: F.elu(t, 1.7), "input"),
    ("sigmoid", {}, torch.sigmoid, "output"),
    ("tanh", {}, torch.tanh, "output"),
    ("gelu", {}, lambda t: F.gelu(t), "input"),
    ("gelu", {"approximate": "tanh"}, lambda t: F.gelu(t, approximate="tanh"), "input"),
]
ACT_IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw, _, _ in ACTS]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), (1031,)], ids=str)
@pytest.mark.parametrize("name,kw,tfn,saved", ACTS, ids=ACT_IDS)
def test_activation(name, kw, tfn, saved, shape, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    flat = x.reshape(-1)  # a view: x is contiguous
    flat[::7] = 0.0
    flat[3::11] = np.resize([1e4, -1e4, 40.0, -40.0, 700.0, -700.0], len(flat[3::11]))
    y_t, dx_t, dy, _ = torch_fwd_bwd(tfn, x)
    y = getattr(pyconv, name)(x, **kw)
    assert_close(y, y_t, dtype, "y")
    s = x if saved == "input" else y
    assert_close(getattr(pyconv, name + "_backward")(dy.astype(dtype), s, **kw), dx_t, dtype, "dx")
    ref = getattr(R, name + "_ref")
    assert_close(ref(x, **kw), y_t, np.float64, "reference y")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name,kw,tfn,saved", ACTS, ids=ACT_IDS)
def test_activation_special_values(name, kw, tfn, saved, dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 800.0, -800.0, 1e-30] * 2,
                 dtype=dtype)
    y_t = tfn(torch.tensor(x)).numpy()
    y = getattr(pyconv, name)(x, **kw)
    if name == "gelu":  # torch: gelu(-inf) = NaN; the limit 0 is as good
        y_t = np.where(np.isneginf(x) & (y == 0), 0.0, y_t)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_t))
    assert_close(y, y_t, dtype, "y")
    if name not in ("gelu", "elu"):  # see tests/test_activations.py for their NaN/inf gradients
        xt = torch.tensor(x, requires_grad=True)
        tfn(xt).backward(torch.ones(x.shape, dtype=xt.dtype))
        s = x if saved == "input" else y
        assert_close(getattr(pyconv, name + "_backward")(np.ones_like(x), s, **kw),
                     xt.grad.numpy(), dtype, "dx")


SM_CASES = [((4, 7), 1), ((4, 7), -1), ((4, 7), 0), ((3, 5, 4, 2), 1), ((3, 5, 4, 2), -2),
            ((6,), 0), ((3, 1031), 1), ((2, 67, 3), 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,axis", SM_CASES, ids=[f"{s}-ax{a}" for s, a in SM_CASES])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(name, shape, axis, dtype):
    x = (np.random.default_rng(6).standard_normal(shape) * 4).astype(dtype)
    tfn = getattr(torch, name)
    y_t, dx_t, dy, _ = torch_fwd_bwd(lambda t: tfn(t, axis), x)
    y = getattr(pyconv, name)(x, axis=axis)
    assert_close(y, y_t, dtype, "y")
    assert_close(getattr(pyconv, name + "_backward")(dy.astype(dtype), y, axis=axis), dx_t, dtype,
                 "dx")
    assert_close(getattr(R, name + "_ref")(x, axis), y_t, np.float64, "reference y")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_special_values(name, dtype):
    x = np.array([[np.inf, 1.0, -np.inf], [1.0, 2.0, -np.inf], [-np.inf] * 3, [np.nan, 1.0, 2.0],
                  [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    y_t = getattr(torch, name)(torch.tensor(x), 1).numpy()
    y = getattr(pyconv, name)(x, axis=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_t))
    assert_close(y, y_t, dtype, name)


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------
CE = list(itertools.product([(1, 1), (4, 3), (7, 10), (3, 1031)], ["index", "prob", "soft"],
                            [0.0, 0.1, 1.0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("nc,kind,ls", CE, ids=[f"n{n}c{c}-{k}-ls{ls}" for (n, c), k, ls in CE])
def test_cross_entropy(nc, kind, ls, dtype):
    N, C = nc
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    if kind == "index":
        t = rng.integers(0, C, N)
        tt = torch.tensor(t)
    else:
        t = rng.random((N, C))
        if kind == "prob":
            t /= t.sum(1, keepdims=True)
        t = t.astype(dtype)
        tt = torch.tensor(t.astype(np.float64))
    for red in ("mean", "sum", "none"):
        y_t, dx_t, dy, _ = torch_fwd_bwd(
            lambda z: F.cross_entropy(z, tt, reduction=red, label_smoothing=ls), x)
        loss = pyconv.cross_entropy(x, t, reduction=red, label_smoothing=ls)
        assert_close(loss, y_t, dtype, f"loss {red}")
        g = dy.astype(dtype)
        assert_close(pyconv.cross_entropy_backward(g, x, t, red, ls), dx_t, dtype, f"dx {red}")
        assert_close(R.cross_entropy_ref(x, t, red, ls), y_t, np.float64, "reference loss")
        assert_close(R.cross_entropy_backward_ref(dy, x, t, red, ls), dx_t, np.float64,
                     "reference dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cross_entropy_extreme_and_nonfinite(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4], [0.0, -np.inf, 1.0],
                  [np.nan, 0.0, 1.0], [1.0, np.inf, 0.0]], dtype=dtype)
    t = np.array([1, 0, 2, 0, 1, 2])
    for ls in (0.0, 0.2):
        y_t, dx_t, _, _ = torch_fwd_bwd(
            lambda z: F.cross_entropy(z, torch.tensor(t), reduction="none", label_smoothing=ls),
            x, dy=np.ones(6))
        assert_close(pyconv.cross_entropy(x, t, "none", ls), y_t, dtype, f"loss ls={ls}")
        assert_close(pyconv.cross_entropy_backward(np.ones(6, dtype), x, t, "none", ls), dx_t,
                     dtype, f"dx ls={ls}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("nc", [(1, 1), (4, 3), (7, 10), (3, 1031)], ids=str)
def test_nll_loss(nc, dtype):
    N, C = nc
    rng = np.random.default_rng(8)
    x = np.log(rng.random((N, C))).astype(dtype)
    t = rng.integers(0, C, N)
    for red in ("mean", "sum", "none"):
        y_t, dx_t, dy, _ = torch_fwd_bwd(lambda z: F.nll_loss(z, torch.tensor(t), reduction=red), x)
        assert_close(pyconv.nll_loss(x, t, red), y_t, dtype, f"loss {red}")
        assert_close(pyconv.nll_loss_backward(dy.astype(dtype), x, t, red), dx_t, dtype, f"dx {red}")
        assert_close(R.nll_loss_ref(x, t, red), y_t, np.float64, "reference")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 4), (2, 3, 4, 5), (2, 1031)], ids=str)
def test_mse_loss(shape, dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    for red in ("mean", "sum", "none"):
        y_t, dx_t, dy, _ = torch_fwd_bwd(
            lambda z: F.mse_loss(z, torch.tensor(y.astype(np.float64)), reduction=red), x)
        assert_close(pyconv.mse_loss(x, y, red), y_t, dtype, f"loss {red}")
        assert_close(pyconv.mse_loss_backward(dy.astype(dtype), x, y, red), dx_t, dtype, f"dx {red}")
        assert_close(R.mse_loss_ref(x, y, red), y_t, np.float64, "reference")
