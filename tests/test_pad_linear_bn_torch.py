"""pad, conv2d padding_mode, linear and batch norm against PyTorch (+ autograd).

Skipped as a whole when torch is not importable (an optional oracle:
`pip install torch==2.13.0`). torch is imported before pyconv on purpose
(the libgomp load-order pitfall in DESIGN.md).

Oracles: torch.nn.functional.pad, torch.nn.Conv2d(padding_mode=...),
torch.nn.functional.linear, torch.nn.functional.batch_norm (running
statistics updated in place) and torch.native_batch_norm (save_mean /
save_invstd); gradients from autograd.

Tolerances: pyconv in dtype against torch computing in float64 on the same
(already rounded) input values, with scale = max(max|ref|, 1):
    pad forward: bit-exact (a copy)
    float64: 1e-10 * |ref| + 1e-10 * scale
    float32: 1e-4  * |ref| + 1e-4  * scale
The float64 references of pyconv.testing.reference_extra are checked
against torch too (1e-12), anchoring them to PyTorch's semantics.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyconv  # noqa: E402
from pyconv.testing.reference_extra import (  # noqa: E402
    batch_norm_backward_ref, batch_norm_ref, conv2d_mode_backward_ref, conv2d_mode_ref,
    linear_backward_ref, linear_ref, pad_backward_ref, pad_ref)

F = torch.nn.functional
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using padding='same' with even kernel lengths:UserWarning")

TOL = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-4)}
REF_TOL = (1e-12, 1e-12)  # our float64 reference vs torch float64
DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]


def assert_close(got, ref, tol, what):
    rtol, atol = tol
    assert got is not None, f"{what}: got None"
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


def rnd(shape, seed, dtype=np.float64, loc=0.0, sd=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * sd + loc).astype(dtype)


def leaf(a):
    """A float64 torch leaf holding exactly a's values (None stays None)."""
    if a is None:
        return None
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def grad_of(t, like):
    """t.grad as NumPy (zeros when autograd produced none)."""
    if t is None:
        return None
    return np.zeros(like.shape) if t.grad is None else t.grad.numpy()


# ==========================================================================
# pad
# ==========================================================================
PAD_CASES = [
    # (mode, shape, padding); torch's mode limits reached on purpose
    ("constant", (2, 3, 4, 5), (1, 2, 3, 4)),
    ("constant", (5,), (2, 0)),
    ("constant", (2, 3), (0, 1, 2, 0)),
    ("constant", (1, 2, 3, 2, 2), (1, 1, 0, 2)),
    ("reflect", (2, 3, 4, 5), (4, 3, 3, 1)),
    ("reflect", (1, 2, 6), (5, 2)),
    ("reflect", (3, 5, 4), (0, 3, 4, 2)),
    ("reflect", (2, 1, 1, 3), (2, 1, 0, 0)),
    ("replicate", (2, 3, 4, 5), (6, 0, 1, 7)),
    ("replicate", (1, 1, 1, 1), (2, 3, 1, 2)),
    ("replicate", (2, 2, 5), (3, 1)),
    ("circular", (2, 3, 4, 5), (5, 5, 4, 4)),
    ("circular", (1, 2, 3), (1, 3)),
    ("circular", (2, 3, 5), (2, 0, 1, 3)),
    ("circular", (1, 1, 1, 1), (1, 1, 1, 0)),
]


def torch_pad(x, dy, padding, mode, value):
    xt = leaf(x)
    kw = {"value": value} if mode == "constant" else {}
    yt = F.pad(xt, padding, mode=mode, **kw)
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("mode,shape,padding", PAD_CASES,
                         ids=[f"{m}-{'x'.join(map(str, s))}-{'_'.join(map(str, p))}"
                              for m, s, p in PAD_CASES])
def test_pad_vs_torch(mode, shape, padding, dtype):
    x = rnd(shape, 1, dtype)
    value = 0.75 if mode == "constant" else 0.0
    y = pyconv.pad(x, padding, mode, value) if mode == "constant" else pyconv.pad(x, padding, mode)
    dy = rnd(y.shape, 2, dtype)
    y_t, dx_t = torch_pad(x, dy, padding, mode, value)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_t.astype(dtype))
    assert_close(pyconv.pad_backward(dy, shape, padding, mode), dx_t, TOL[np.dtype(dtype)], "dx")
    # the reference agrees with torch
    np.testing.assert_array_equal(pad_ref(x, padding, mode, value), y_t)
    assert_close(pad_backward_ref(dy, shape, padding, mode), dx_t, REF_TOL, "dx ref")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_4d_with_2_tuple_is_torch_3d(mode):
    """torch pads only 3-d input with a 2-tuple in these modes; on 4-d pyconv must equal
    padding the (N, C*H, W) view."""
    x = rnd((2, 3, 4, 5), 3)
    padding = (3, 2)
    y = pyconv.pad(x, padding, mode)
    dy = rnd(y.shape, 4)
    y_t, dx_t = torch_pad(x.reshape(2, 12, 5), dy.reshape(2, 12, -1), padding, mode, 0.0)
    np.testing.assert_array_equal(y, y_t.reshape(y.shape))
    assert_close(pyconv.pad_backward(dy, x.shape, padding, mode), dx_t.reshape(x.shape),
                 TOL[np.dtype(np.float64)], "dx")


# ==========================================================================
# conv2d with padding_mode
# ==========================================================================
CONV_CASES = [
    ("p1", (2, 3, 5, 6), (4, 3, 3, 3), dict(padding=1)),
    ("s2-p2", (1, 2, 7, 5), (3, 2, 3, 2), dict(stride=2, padding=2)),
    ("pair-dil-g2", (2, 4, 6, 7), (4, 2, 3, 3), dict(padding=(2, 1), dilation=(1, 2), groups=2)),
    ("same-even-dil", (2, 2, 5, 6), (2, 2, 4, 2), dict(padding="same", dilation=(1, 3))),
    ("same-dw", (1, 3, 6, 5), (6, 1, 3, 3), dict(padding="same", groups=3)),
    ("s-pair", (1, 2, 6, 7), (2, 2, 3, 3), dict(stride=(1, 2), padding=(0, 3))),
    ("unbatched", (2, 4, 5), (3, 2, 3, 3), dict(padding=1)),
]


def torch_conv_mode(x, w, b, dy, padding_mode, kw):
    OC, Cg, KH, KW = w.shape
    groups = kw.get("groups", 1)
    conv = torch.nn.Conv2d(Cg * groups, OC, (KH, KW), bias=b is not None,
                           padding_mode=padding_mode, dtype=torch.float64, **kw)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(np.asarray(w, np.float64)))
        if b is not None:
            conv.bias.copy_(torch.tensor(np.asarray(b, np.float64)))
    xt = leaf(x)
    yt = conv(xt)
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))
    db = None if b is None else conv.bias.grad.numpy()
    return yt.detach().numpy(), xt.grad.numpy(), conv.weight.grad.numpy(), db


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("name,xs,ws,kw", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_padding_mode_vs_torch(name, xs, ws, kw, padding_mode, dtype):
    x, w, b = rnd(xs, 10, dtype), rnd(ws, 11, dtype), rnd((ws[0],), 12, dtype)
    y = pyconv.conv2d(x, w, b, padding_mode=padding_mode, **kw)
    dy = rnd(y.shape, 13, dtype)
    y_t, dx_t, dw_t, db_t = torch_conv_mode(x, w, b, dy, padding_mode, kw)
    tol = TOL[np.dtype(dtype)]
    assert y.dtype == dtype
    assert_close(y, y_t, tol, "y")
    dx, dw, db = pyconv.conv2d_backward(dy, x, w, padding_mode=padding_mode, **kw)
    assert_close(dx, dx_t, tol, "dx")
    assert_close(dw, dw_t, tol, "dw")
    assert_close(db, db_t, tol, "db")
    if len(xs) == 4:
        assert_close(pyconv.conv2d_input(x.shape, w, dy, padding_mode=padding_mode, **kw),
                     dx_t, tol, "conv2d_input")
        assert_close(pyconv.conv2d_weight(x, w.shape, dy, padding_mode=padding_mode, **kw),
                     dw_t, tol, "conv2d_weight")
    # the reference agrees with torch
    assert_close(conv2d_mode_ref(x, w, b, padding_mode=padding_mode, **kw), y_t, REF_TOL, "y ref")
    for r, t, nm in zip(conv2d_mode_backward_ref(dy, x, w, padding_mode=padding_mode, **kw),
                        (dx_t, dw_t, db_t), ("dx", "dw", "db")):
        assert_close(r, t, REF_TOL, nm + " ref")


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv2d_padding_mode_equals_f_pad_then_conv(padding_mode):
    """The other spelling: F.pad with the mode, then F.conv2d without padding."""
    x, w = rnd((2, 3, 6, 5), 14), rnd((4, 3, 3, 2), 15)
    y = pyconv.conv2d(x, w, padding=(2, 1), stride=(2, 1), padding_mode=padding_mode)
    yt = F.conv2d(F.pad(torch.tensor(x), (1, 1, 2, 2), mode=padding_mode), torch.tensor(w),
                  stride=(2, 1))
    assert_close(y, yt.numpy(), TOL[np.dtype(np.float64)], "y")


# ==========================================================================
# linear
# ==========================================================================
LINEAR_CASES = [((4, 5), 3), ((6,), 4), ((2, 3, 5), 6), ((1, 1), 1), ((17, 33), 15),
                ((2, 1, 2, 7), 9)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("xs,M", LINEAR_CASES, ids=lambda v: str(v))
def test_linear_vs_torch(xs, M, bias, dtype):
    x, w = rnd(xs, 20, dtype), rnd((M, xs[-1]), 21, dtype)
    b = rnd((M,), 22, dtype) if bias else None
    y = pyconv.linear(x, w, b)
    dy = rnd(y.shape, 23, dtype)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    yt = F.linear(xt, wt, bt)
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))
    tol = TOL[np.dtype(dtype)]
    assert y.dtype == dtype
    assert_close(y, yt.detach().numpy(), tol, "y")
    dx, dw, db = pyconv.linear_backward(dy, x, w)
    assert_close(dx, xt.grad.numpy(), tol, "dx")
    assert_close(dw, wt.grad.numpy(), tol, "dw")
    db_t = bt.grad.numpy() if bias else np.asarray(dy, np.float64).reshape(-1, M).sum(0)
    assert_close(db, db_t, tol, "db")
    assert_close(linear_ref(x, w, b), yt.detach().numpy(), REF_TOL, "y ref")
    for r, t, nm in zip(linear_backward_ref(dy, x, w), (xt.grad.numpy(), wt.grad.numpy(), db_t),
                        ("dx", "dw", "db")):
        assert_close(r, t, REF_TOL, nm + " ref")


# ==========================================================================
# batch norm
# ==========================================================================
BN_CASES = [
    ((6, 3), True, 0.1, 1e-5), ((6, 3), False, 0.1, 1e-5),
    ((2, 4, 5), True, 0.3, 1e-3), ((2, 4, 5), False, 0.3, 1e-3),
    ((2, 3, 4, 5), True, 0.1, 1e-5), ((2, 3, 4, 5), False, 0.5, 0.1),
    ((1, 2, 3, 3), True, 1.0, 1e-5), ((5, 1, 1, 1), True, 0.0, 1e-2),
    ((3, 2, 1, 1), False, 0.1, 1e-5),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("affine", ["wb", "w", "b", "none"])
@pytest.mark.parametrize("shape,training,momentum,eps", BN_CASES,
                         ids=[f"{'x'.join(map(str, s))}-{'train' if t else 'eval'}-m{m}-e{e}"
                              for s, t, m, e in BN_CASES])
def test_batch_norm_vs_torch(shape, training, momentum, eps, affine, dtype):
    C = shape[1]
    x = rnd(shape, 30, dtype, loc=-1.0, sd=3.0)
    w = rnd((C,), 31, dtype) if "w" in affine else None
    b = rnd((C,), 32, dtype) if "b" in affine else None
    rm = rnd((C,), 33, dtype)
    rv = (np.random.default_rng(34).random(C) + 0.5).astype(dtype)
    rm_t, rv_t = torch.tensor(rm.astype(np.float64)), torch.tensor(rv.astype(np.float64))
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=training, momentum=momentum, eps=eps)
    dy = rnd(shape, 35, dtype)
    yt.backward(torch.tensor(np.asarray(dy, np.float64)))

    rm_p, rv_p = rm.copy(), rv.copy()
    y, sm, si = pyconv.batch_norm(x, rm_p, rv_p, w, b, training=training, momentum=momentum,
                                  eps=eps, return_stats=True)
    tol = TOL[np.dtype(dtype)]
    assert y.dtype == dtype
    assert_close(y, yt.detach().numpy(), tol, "y")
    assert_close(rm_p, rm_t.numpy(), tol, "running_mean")
    assert_close(rv_p, rv_t.numpy(), tol, "running_var")
    if training:
        _, sm_t, si_t = torch.native_batch_norm(
            torch.tensor(np.asarray(x, np.float64)), None, None, None, None, True, momentum, eps)
        assert_close(sm, sm_t.numpy(), tol, "save_mean")
        assert_close(si, si_t.numpy(), tol, "save_invstd")
    else:
        assert_close(sm, rm, tol, "save_mean (eval)")
        assert_close(si, 1.0 / np.sqrt(rv.astype(np.float64) + eps), tol, "save_invstd (eval)")
    dx, dw, db = pyconv.batch_norm_backward(dy, x, w, sm, si, training=training)
    assert_close(dx, xt.grad.numpy(), tol, "dx")
    xhat = yt.detach().numpy() if w is None and b is None else None
    if w is not None:
        assert_close(dw, wt.grad.numpy(), tol, "dw")
    elif xhat is not None:  # weight None: d/dw at w = 1 is sum(dy * xhat)
        axes = (0,) + tuple(range(2, len(shape)))
        assert_close(dw, (np.asarray(dy, np.float64) * xhat).sum(axes), tol, "dw (weight None)")
    if b is not None:
        assert_close(db, bt.grad.numpy(), tol, "db")
    # the reference agrees with torch
    y_r, m_r, s_r, nrm, nrv = batch_norm_ref(x, rm, rv, w, b, training, momentum, eps)
    assert_close(y_r, yt.detach().numpy(), REF_TOL, "y ref")
    assert_close(nrm, rm_t.numpy(), REF_TOL, "running_mean ref")
    assert_close(nrv, rv_t.numpy(), REF_TOL, "running_var ref")
    dx_r, dw_r, db_r = batch_norm_backward_ref(dy, x, w, m_r, s_r, training)
    assert_close(dx_r, xt.grad.numpy(), REF_TOL, "dx ref")
    if w is not None:
        assert_close(dw_r, wt.grad.numpy(), REF_TOL, "dw ref")
    if b is not None:
        assert_close(db_r, bt.grad.numpy(), REF_TOL, "db ref")


def test_batch_norm_module_training_loop_vs_torch():
    """Several steps of torch.nn.BatchNorm2d's running-stat updates, then eval."""
    bn = torch.nn.BatchNorm2d(4, momentum=0.2, eps=1e-4, dtype=torch.float64)
    rm, rv = np.zeros(4), np.ones(4)
    for step in range(4):
        x = rnd((3, 4, 5, 2), 40 + step, loc=step, sd=1 + step)
        bn.train()
        y_t = bn(torch.tensor(x)).detach().numpy()
        y = pyconv.batch_norm(x, rm, rv, bn.weight.detach().numpy(), bn.bias.detach().numpy(),
                              training=True, momentum=0.2, eps=1e-4)
        assert_close(y, y_t, TOL[np.dtype(np.float64)], f"train step {step}")
    assert_close(rm, bn.running_mean.numpy(), TOL[np.dtype(np.float64)], "running_mean")
    assert_close(rv, bn.running_var.numpy(), TOL[np.dtype(np.float64)], "running_var")
    bn.eval()
    x = rnd((2, 4, 3, 3), 50)
    assert_close(pyconv.batch_norm(x, rm, rv, training=False, eps=1e-4),
                 bn(torch.tensor(x)).detach().numpy(), TOL[np.dtype(np.float64)], "eval")
