"""conv2d forward and gradients against PyTorch (torch.nn.functional.conv2d + autograd).

The whole module is skipped when torch is not importable (it is an optional
oracle: `pip install torch==2.13.0`, see DESIGN.md). It runs the same grid as
tests/test_conv2d.py (pyconv.testing.cases) in float32 and float64, on every
ISA this CPU supports, and also checks the float64 reference against torch so
that the reference itself is anchored to PyTorch's semantics.

Tolerances: as in test_conv2d.py, against torch computing in float64 on the
same input values (scale = max(max|ref|, 1)):
    float64: 1e-10 * |ref| + 1e-10 * scale
    float32: 1e-4  * |ref| + 1e-4  * scale
and float32 against torch's own float32 result with twice the float32
tolerance (both carry rounding error).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyconv  # noqa: E402
from pyconv.testing.cases import ConvCase, conv2d_grid  # noqa: E402
from pyconv.testing.reference import (  # noqa: E402
    conv2d_backward_ref, conv2d_ref, resolve_padding)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using padding='same' with even kernel lengths:UserWarning")

TOL = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-4)}
GRID = conv2d_grid()
DTYPES = [np.float32, np.float64]


def assert_close(got, ref, rtol, atol, what):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = max(float(np.abs(ref).max(initial=0.0)), 1.0)
    err = np.abs(got - ref)
    bound = rtol * np.abs(ref) + atol * scale
    bad = ~(err <= bound)
    if bad.any():
        idx = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())}/{bad.size} off; worst at {idx}: "
                             f"got {got[idx]!r}, torch {ref[idx]!r} (scale {scale:.3g})")


def torch_conv(x, w, b, dy, case: ConvCase):
    """torch forward and autograd gradients (dx, dw, db) as float64 NumPy arrays."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, **case.kwargs)
    yt.backward(torch.tensor(dy))
    db = dy.astype(np.float64).sum(axis=(0, 2, 3)) if bt is None else bt.grad.numpy()
    return (yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), db)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_grid_vs_torch(case, dtype, isa):
    x, w, b, dy = case.arrays()
    x, w, dy = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    b = None if b is None else b.astype(dtype)
    # torch in float64 on exactly the values pyconv sees
    up = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    exact = torch_conv(up(x), up(w), up(b), up(dy), case)
    got = (pyconv.conv2d(x, w, b, **case.kwargs),) + \
        tuple(pyconv.conv2d_backward(dy, x, w, **case.kwargs))
    rtol, atol = TOL[np.dtype(dtype)]
    for name, g, t in zip(("y", "dx", "dw", "db"), got, exact):
        assert g.dtype == dtype
        assert_close(g, t, rtol, atol, f"{name} vs torch float64")
    if dtype is np.float32:
        same = torch_conv(x, w, b, dy, case)
        for name, g, t in zip(("y", "dx", "dw", "db"), got, same):
            assert_close(g, t, 2 * rtol, 2 * atol, f"{name} vs torch float32")
    # pyconv's torch.nn.grad-style entry points against autograd ...
    kw = case.kwargs
    assert_close(pyconv.conv2d_input(x.shape, w, dy, **kw), exact[1], rtol, atol,
                 "conv2d_input vs torch autograd")
    assert_close(pyconv.conv2d_weight(x, w.shape, dy, **kw), exact[2], rtol, atol,
                 "conv2d_weight vs torch autograd")
    # ... and against torch.nn.grad itself, which takes numeric padding only
    pt, pb, pl, pr = resolve_padding(case.H, case.W, case.KH, case.KW, case.stride,
                                     case.padding, case.dilation)
    if (pt, pl) == (pb, pr):
        tkw = dict(kw, padding=(pt, pl))
        dx_t = torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(dy), **tkw)
        dw_t = torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(dy), **tkw)
        assert_close(pyconv.conv2d_input(x.shape, w, dy, **kw), dx_t.numpy(), 2 * rtol,
                     2 * atol, "conv2d_input vs torch.nn.grad")
        assert_close(pyconv.conv2d_weight(x, w.shape, dy, **kw), dw_t.numpy(), 2 * rtol,
                     2 * atol, "conv2d_weight vs torch.nn.grad")


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_reference_vs_torch(case):
    """The float64 reference agrees with torch (so the reference is PyTorch's conv2d)."""
    x, w, b, dy = case.arrays()
    ref = (conv2d_ref(x, w, b, **case.kwargs),) + conv2d_backward_ref(dy, x, w, **case.kwargs)
    for name, r, t in zip(("y", "dx", "dw", "db"), ref, torch_conv(x, w, b, dy, case)):
        assert_close(r, t, 1e-12, 1e-12, f"reference {name} vs torch")


def test_unbatched_and_same_vs_torch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 8, 9))
    w = rng.standard_normal((4, 3, 2, 4))
    for kw in (dict(padding="same", dilation=(2, 1)), dict(padding="valid", stride=(1, 2)),
               dict(padding=(1, 2), stride=3)):
        y = pyconv.conv2d(x, w, **kw)
        yt = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), **kw).numpy()
        assert y.shape == yt.shape
        assert_close(y, yt, 1e-12, 1e-12, f"unbatched {kw}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_large_layer_vs_torch(dtype):
    """A layer big enough for the threaded paths."""
    rng = np.random.default_rng(9)
    case = ConvCase("big", 4, 32, 28, 28, 64, 3, 3, padding=1)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = rng.standard_normal(case.OC).astype(dtype)
    dy = rng.standard_normal(case.y_shape).astype(dtype)
    exact = torch_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                       dy.astype(np.float64), case)
    got = (pyconv.conv2d(x, w, b, padding=1),) + tuple(pyconv.conv2d_backward(dy, x, w,
                                                                               padding=1))
    rtol, atol = TOL[np.dtype(dtype)]
    for name, g, t in zip(("y", "dx", "dw", "db"), got, exact):
        assert_close(g, t, rtol, atol, f"{name} (large layer)")


@pytest.mark.parametrize("groups", [1, 4], ids=["groups1", "depthwise"])
def test_nonfinite_times_padding_vs_torch(groups):
    """0 * inf = NaN where a tap reads padding, as in torch (forward and dw)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 4 // groups, 3, 3))
    w[0, 0, 0, 0] = np.inf
    kw = dict(padding=1, groups=groups)
    yt = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), **kw).numpy()
    y = pyconv.conv2d(x, w, **kw)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt), err_msg="forward NaN pattern")
    w[0, 0, 0, 0] = 1.0
    dy = rng.standard_normal(yt.shape)
    dy[1, 1, 0, 0] = np.inf
    case = ConvCase("nf", 2, 4, 5, 6, 4, 3, 3, padding=1, groups=groups, bias=False)
    dw_t = torch_conv(x, w, None, dy, case)[2]
    dw = pyconv.conv2d_backward(dy, x, w, **kw)[1]
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(dw_t), err_msg="dw NaN pattern")
