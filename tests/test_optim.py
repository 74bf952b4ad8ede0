"""Tests for pyconv.optim: optimizers, gradient clipping, LR schedulers.

The torch comparisons run the same seeded random gradients through
``pyconv.optim`` and ``torch.optim`` (single-tensor code path) and compare
parameters and optimizer state after every step. The closed-form tests and the
API tests need no torch.
"""
from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest

from pyconv import optim
from pyconv.nn.parameter import Parameter

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
SHAPES = [(3, 4), (5,), (2, 3, 2), (1,)]
DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 1e-5}

OPTIMIZERS = {
    "SGD": optim.SGD,
    "Adagrad": optim.Adagrad,
    "Adadelta": optim.Adadelta,
    "RMSprop": optim.RMSprop,
    "Adam": optim.Adam,
    "AdamW": optim.AdamW,
}

# (optimizer name, kwargs): every meaningful option and a few combinations.
OPT_CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.1, maximize=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.02, maximize=True, l1=0.01)),
    ("SGD", dict(lr=0.1, l1=0.05)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.3, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.1,
                     maximize=True, l1=0.02)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4)),
    ("Adadelta", dict(lr=0.9, weight_decay=0.1)),
    ("Adadelta", dict(lr=0.9, weight_decay=0.1, maximize=True, l1=0.01)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.8, alpha=0.7)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, eps=1e-4)),  # lerp weight >= 0.5 branch
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, maximize=True, l1=0.01, momentum=0.5)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.3, 0.6), eps=1e-6, amsgrad=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("Adam", dict(lr=0.01, maximize=True, l1=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.0)),
    ("AdamW", dict(lr=0.02, betas=(0.2, 0.5), maximize=True, l1=0.01)),
]


def _cfg_id(cfg):
    name, kw = cfg
    return name + ("-" + "-".join(f"{k}={v}" for k, v in kw.items()) if kw else "")


def _init_arrays(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    arrays[0].reshape(-1)[:2] = 0  # exact zeros: sign(p) == 0 for l1
    return arrays


def _grad_stream(dtype, n_steps, seed=1, shapes=SHAPES):
    """n_steps lists of gradients, different every step."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(n_steps)]


def _params(arrays):
    return [Parameter(a) for a in arrays]


def _assert_close(actual, expected, dtype, what=""):
    tol = TOL[dtype]
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * 1e-2 * max(scale, 1e-30),
                               err_msg=what)


def _torch_dtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def _set_torch_grad(torch, tp, g, pdata, kw):
    """torch has no ``l1``: fold ``l1 * sign(p)`` into the gradient it sees
    (with the sign flipped under maximize, which torch negates)."""
    l1 = kw.get("l1", 0.0)
    if l1:
        s = l1 * np.sign(pdata)
        g = g - s if kw.get("maximize", False) else g + s
    tp.grad = torch.from_numpy(np.array(g, copy=True))


def _torch_kwargs(kw):
    out = {k: v for k, v in kw.items() if k != "l1"}
    out["foreach"] = False
    return out


def _all_leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _all_leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _all_leaves(v)
    else:
        yield obj


def _assert_same_state(opt_a, params_a, opt_b, params_b):
    """Bit-exact equality of two optimizers' per-parameter states."""
    for pa, pb in zip(params_a, params_b):
        sa, sb = opt_a.state.get(pa), opt_b.state.get(pb)
        assert (sa is None) == (sb is None)
        if sa is None:
            continue
        assert sa.keys() == sb.keys()
        for k in sa:
            if isinstance(sa[k], np.ndarray):
                assert sa[k].dtype == sb[k].dtype
                np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
            else:
                assert sa[k] == sb[k] and type(sa[k]) is type(sb[k]), k


# --------------------------------------------------------------------------
# against torch.optim
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cfg", OPT_CONFIGS, ids=[_cfg_id(c) for c in OPT_CONFIGS])
def test_optimizer_matches_torch(cfg, dtype):
    torch = pytest.importorskip("torch")
    name, kw = cfg
    n_steps = 12
    arrays = _init_arrays(dtype)
    params = _params(arrays)
    tparams = [torch.tensor(a, requires_grad=True) for a in arrays]
    opt = OPTIMIZERS[name](params, **kw)
    topt = getattr(torch.optim, name)(tparams, **_torch_kwargs(kw))
    for step, grads in enumerate(_grad_stream(dtype, n_steps), 1):
        for p, tp, g in zip(params, tparams, grads):
            p.grad = g.copy()
            _set_torch_grad(torch, tp, g, p.data, kw)
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(params, tparams)):
            where = f"{name} {kw} step {step} param {i}"
            assert p.data.dtype == dtype
            _assert_close(p.data, tp.detach().numpy(), dtype, where)
            tstate = {k: v for k, v in topt.state.get(tp, {}).items() if v is not None}
            pstate = opt.state.get(p, {})
            assert set(pstate) == set(tstate), where
            for k, tv in tstate.items():
                if k == "step":
                    assert isinstance(pstate[k], int) and pstate[k] == step == int(tv.item())
                else:
                    assert pstate[k].dtype == dtype and pstate[k].shape == p.shape
                    _assert_close(pstate[k], tv.numpy(), dtype, f"{where} state {k}")


FUSED_CONFIGS = [c for c in OPT_CONFIGS if c[0] in ("SGD", "Adam", "AdamW")]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cfg", FUSED_CONFIGS, ids=[_cfg_id(c) for c in FUSED_CONFIGS])
def test_fused_update_same_bits_as_numpy(cfg, dtype):
    """SGD and Adam / AdamW update C-contiguous parameters in one C++ pass
    (csrc/ops/optim.cpp) and anything else with NumPy, array by array; both
    do the same operations per element, so the values agree bit for bit:
    parameters and state, over steps, with inf / NaN / zero gradients. The
    NumPy path is forced by Fortran-order copies of the gradients."""
    name, kw = cfg
    shapes = [(7, 5), (300, 41), (1, 1)]  # 2-d, so a Fortran copy is not C-contiguous
    arrays = _init_arrays(dtype, seed=3, shapes=shapes)
    fused = _params([a.copy() for a in arrays])
    slow = _params([a.copy() for a in arrays])
    opt_f, opt_s = OPTIMIZERS[name](fused, **kw), OPTIMIZERS[name](slow, **kw)
    for step, grads in enumerate(_grad_stream(dtype, 6, seed=4, shapes=shapes), 1):
        if step == 3:
            grads[1][0, :3] = (np.inf, -np.inf, np.nan)
            grads[1][1, :] = 0
        for pf, ps, g in zip(fused, slow, grads):
            pf.grad, ps.grad = g.copy(), np.asfortranarray(g)
        assert not slow[1].grad.flags.c_contiguous
        opt_f.step()
        with np.errstate(all="ignore"):  # NumPy warns of the inf - inf it computes
            opt_s.step()
        for i, (pf, ps) in enumerate(zip(fused, slow)):
            where = f"{name} {kw} step {step} param {i}"
            np.testing.assert_array_equal(pf.data, ps.data, err_msg=where)
            assert set(opt_f.state.get(pf, {})) == set(opt_s.state.get(ps, {})), where
            for k, v in opt_f.state.get(pf, {}).items():
                if isinstance(v, np.ndarray):
                    np.testing.assert_array_equal(v, opt_s.state[ps][k], err_msg=f"{where} {k}")


def test_fused_update_bindings_refuse_bad_state():
    """The C++ updates behind SGD / Adam check their arrays (a wrong type is
    a TypeError, not a crash)."""
    from pyconv import _C
    p = np.zeros(4, np.float32)
    g = np.ones(4, np.float32)
    with pytest.raises(TypeError):
        _C.sgd_update(p, g, None, 0.1, 0.9, 0.0, False, 1)
    with pytest.raises(TypeError):
        _C.sgd_update(p, g, [0.0] * 4, 0.1, 0.9, 0.0, False, 2)
    with pytest.raises(ValueError):
        _C.sgd_update(p, g, np.zeros(3, np.float32), 0.1, 0.9, 0.0, False, 2)
    with pytest.raises(TypeError):
        _C.adam_update(p, g, np.zeros(4, np.float32), np.zeros(4, np.float32), [0.0] * 4, False, 1.0,
                       0.1, False, 0.999, 1.0, 1e-8, 0.1)
    with pytest.raises((TypeError, ValueError)):
        _C.adam_update(p, g.astype(np.float64), np.zeros(4, np.float32), np.zeros(4, np.float32), None,
                       False, 1.0, 0.1, False, 0.999, 1.0, 1e-8, 0.1)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_fused_update_thread_count_independent(name, restore_threads):
    """A parameter big enough to split between threads: same bits on 1 and 2."""
    import pyconv
    rng = np.random.default_rng(8)
    data = rng.standard_normal((512, 700)).astype(np.float32)
    grads = [rng.standard_normal(data.shape).astype(np.float32) for _ in range(3)]
    out = []
    for nt in (1, 2):
        pyconv.set_num_threads(nt)
        p = Parameter(data.copy())
        opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True) if name == "SGD" else \
            optim.Adam([p], lr=0.01, amsgrad=True)
        for g in grads:
            p.grad = g.copy()
            opt.step()
        out.append(p.data.copy())
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_param_groups_and_missing_grads_match_torch(name):
    """Two groups with different options; a frozen parameter; parameters whose
    gradient is None on some steps (their state, step count included, must lag)."""
    torch = pytest.importorskip("torch")
    dtype = np.float64
    arrays = _init_arrays(dtype, seed=5)
    params = _params(arrays)
    tparams = [torch.tensor(a, requires_grad=True) for a in arrays]
    params[3].requires_grad = False
    tparams[3].requires_grad_(False)
    extra = {"SGD": dict(momentum=0.5), "RMSprop": dict(centered=True),
             "Adam": dict(amsgrad=True), "Adagrad": dict(lr_decay=0.1),
             "Adadelta": dict(rho=0.7), "AdamW": dict(weight_decay=0.2)}
    g1 = {"lr": 0.03, **extra[name]}

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], **g1}]

    opt = OPTIMIZERS[name](groups(params), lr=0.01)
    topt = getattr(torch.optim, name)(groups(tparams), lr=0.01, foreach=False)
    rng = np.random.default_rng(11)
    for step, grads in enumerate(_grad_stream(dtype, 10, seed=3), 1):
        for i, (p, tp, g) in enumerate(zip(params, tparams, grads)):
            if i == 3 or rng.random() < 0.3:
                p.grad, tp.grad = None, None
            else:
                p.grad = g.copy()
                tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for i, (p, tp) in enumerate(zip(params, tparams)):
            _assert_close(p.data, tp.detach().numpy(), dtype, f"step {step} param {i}")
            tstate = {k: v for k, v in topt.state.get(tp, {}).items() if v is not None}
            if p not in opt.state:
                # never updated: torch has no state either, except Adagrad's eager zero-step one
                assert not tstate or int(tstate["step"].item()) == 0
                continue
            for k, tv in tstate.items():
                if k == "step":
                    assert opt.state[p][k] == int(tv.item())
                else:
                    _assert_close(opt.state[p][k], tv.numpy(), dtype, f"param {i} state {k}")
    np.testing.assert_array_equal(params[3].data, arrays[3])
    assert params[3] not in opt.state


# --------------------------------------------------------------------------
# closed forms (no torch)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_one_step_closed_form(dtype):
    p0, g = _init_arrays(dtype)[0], _grad_stream(dtype, 1)[0][0]
    p = Parameter(p0)
    p.grad = g.copy()
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_array_equal(p.data, p0 - g * dtype(0.1))


def test_sgd_momentum_two_steps_closed_form():
    p0 = np.array([1.0, -2.0, 0.5])
    g1, g2 = np.array([0.5, 1.0, -1.0]), np.array([-0.25, 2.0, 0.5])
    lr, mu, damp = 0.1, 0.9, 0.25
    p = Parameter(p0)
    opt = optim.SGD([p], lr=lr, momentum=mu, dampening=damp)
    p.grad = g1.copy()
    opt.step()
    np.testing.assert_allclose(p.data, p0 - lr * g1, rtol=1e-15)  # first buffer = g1, undamped
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], g1)
    p.grad = g2.copy()
    opt.step()
    b2 = mu * g1 + (1 - damp) * g2
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], b2, rtol=1e-15)
    np.testing.assert_allclose(p.data, p0 - lr * g1 - lr * b2, rtol=1e-15)


def test_sgd_nesterov_two_steps_closed_form():
    p0 = np.array([1.0, -2.0])
    g1, g2 = np.array([0.5, 1.0]), np.array([-0.25, 2.0])
    lr, mu = 0.1, 0.9
    p = Parameter(p0)
    opt = optim.SGD([p], lr=lr, momentum=mu, nesterov=True)
    p.grad = g1.copy()
    opt.step()
    np.testing.assert_allclose(p.data, p0 - lr * (g1 + mu * g1), rtol=1e-15)
    p.grad = g2.copy()
    opt.step()
    b2 = mu * g1 + g2
    np.testing.assert_allclose(p.data, p0 - lr * (1 + mu) * g1 - lr * (g2 + mu * b2), rtol=1e-15)


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_first_step_magnitude_is_lr(cls, dtype):
    """Bias correction makes the first update lr * g / (|g| + eps) ~= lr * sign(g)."""
    p0 = _init_arrays(dtype)[2]
    g = _grad_stream(dtype, 1)[0][2]
    lr = 0.01
    for maximize in (False, True):
        p = Parameter(p0)
        p.grad = g.copy()
        cls([p], lr=lr, betas=(0.8, 0.95), weight_decay=0.0, maximize=maximize).step()
        expected = -lr * np.sign(g) * (-1 if maximize else 1)
        rtol = 1e-5 if dtype == np.float32 else 1e-7
        np.testing.assert_allclose(p.data - p0, expected, rtol=rtol, atol=1e-7)


def test_adam_two_steps_closed_form():
    p0, g1, g2 = np.array([0.3, -1.2]), np.array([0.5, -2.0]), np.array([1.5, 0.25])
    lr, b1, b2, eps = 0.05, 0.7, 0.9, 1e-8
    p = Parameter(p0)
    opt = optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, amsgrad=True)
    p.grad = g1
    opt.step()
    p.grad = g2
    opt.step()
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1 ** 2
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2 ** 2
    vmax = np.maximum(v1, v2)
    p1 = p0 - lr * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    p2 = p1 - lr * (m2 / (1 - b1 ** 2)) / (np.sqrt(vmax / (1 - b2 ** 2)) + eps)
    np.testing.assert_allclose(p.data, p2, rtol=1e-14)
    np.testing.assert_allclose(opt.state[p]["exp_avg"], m2, rtol=1e-14)
    np.testing.assert_allclose(opt.state[p]["exp_avg_sq"], v2, rtol=1e-14)
    np.testing.assert_allclose(opt.state[p]["max_exp_avg_sq"], vmax, rtol=1e-14)
    assert opt.state[p]["step"] == 2


def test_adamw_zero_gradient_is_pure_decoupled_decay():
    p0 = np.array([1.0, -3.0, 0.0, 2.5])
    lr, wd = 0.1, 0.2
    p = Parameter(p0)
    opt = optim.AdamW([p], lr=lr, weight_decay=wd)
    for k in range(1, 4):
        p.grad = np.zeros(4)
        opt.step()
        np.testing.assert_allclose(p.data, p0 * (1 - lr * wd) ** k, rtol=1e-15)
    np.testing.assert_array_equal(opt.state[p]["exp_avg"], 0)  # decay never enters the moments


def test_adam_weight_decay_is_coupled():
    """Adam's L2 term goes through the moments: a zero gradient still moves p."""
    p = Parameter(np.array([1.0, -2.0]))
    p.grad = np.zeros(2)
    opt = optim.Adam([p], lr=0.1, weight_decay=0.5)
    opt.step()
    np.testing.assert_allclose(opt.state[p]["exp_avg"], 0.1 * 0.5 * np.array([1.0, -2.0]))
    np.testing.assert_allclose(p.data, [0.9, -1.9], rtol=1e-7)


def test_adagrad_closed_form_with_lr_decay():
    p0, g = np.array([1.0, -1.0, 0.5]), np.array([0.5, -2.0, 1.0])
    lr, decay, init, eps = 0.1, 0.5, 0.25, 1e-10
    p = Parameter(p0)
    opt = optim.Adagrad([p], lr=lr, lr_decay=decay, initial_accumulator_value=init, eps=eps)
    p.grad = g
    opt.step()
    opt.step()
    s1, s2 = init + g * g, init + 2 * g * g
    expected = p0 - lr * g / (np.sqrt(s1) + eps) - lr / (1 + decay) * g / (np.sqrt(s2) + eps)
    np.testing.assert_allclose(p.data, expected, rtol=1e-15)
    np.testing.assert_allclose(opt.state[p]["sum"], s2, rtol=1e-15)


def test_adadelta_one_step_closed_form():
    p0, g = np.array([1.0, -1.0]), np.array([0.5, -2.0])
    lr, rho, eps = 1.0, 0.9, 1e-6
    p = Parameter(p0)
    p.grad = g
    opt = optim.Adadelta([p], lr=lr, rho=rho, eps=eps)
    opt.step()
    v = (1 - rho) * g * g
    delta = np.sqrt(eps) / np.sqrt(v + eps) * g
    np.testing.assert_allclose(p.data, p0 - lr * delta, rtol=1e-15)
    np.testing.assert_allclose(opt.state[p]["acc_delta"], (1 - rho) * delta ** 2, rtol=1e-15)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_one_step_closed_form(centered):
    p0, g = np.array([1.0, -1.0]), np.array([0.5, -2.0])
    lr, alpha, eps = 0.01, 0.9, 1e-8
    p = Parameter(p0)
    p.grad = g
    optim.RMSprop([p], lr=lr, alpha=alpha, eps=eps, centered=centered).step()
    v = (1 - alpha) * g * g
    if centered:
        v = v - ((1 - alpha) * g) ** 2
    np.testing.assert_allclose(p.data, p0 - lr * g / (np.sqrt(v) + eps), rtol=1e-14)


@pytest.mark.parametrize("name,kw", [c for c in OPT_CONFIGS if c[1].get("weight_decay")
                                     and c[0] != "AdamW" and not c[1].get("l1")],
                         ids=lambda x: str(x))
def test_weight_decay_is_an_added_gradient_term(name, kw):
    """Coupled weight decay == no weight decay with grad + wd * p (bit-exact)."""
    arrays = _init_arrays(np.float64)
    wd = kw["weight_decay"]
    plain_kw = dict(kw, weight_decay=0.0, maximize=False)
    a, b = _params(arrays), _params(arrays)
    oa, ob = OPTIMIZERS[name](a, **kw), OPTIMIZERS[name](b, **plain_kw)
    for grads in _grad_stream(np.float64, 5):
        for pa, pb, g in zip(a, b, grads):
            pa.grad = g.copy()
            gb = -g if kw.get("maximize") else g.copy()
            pb.grad = gb + pb.data * wd
        oa.step()
        ob.step()
        for pa, pb in zip(a, b):
            np.testing.assert_array_equal(pa.data, pb.data)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_l1_adds_l1_sign_p(name):
    """``l1`` == no l1 with grad + l1 * sign(p); sign(0) == 0, so zeros get no push."""
    arrays = _init_arrays(np.float64)
    assert np.any(arrays[0] == 0)
    l1 = 0.03
    kw = {"lr": 0.05} if name != "Adadelta" else {}
    if name == "AdamW":
        kw["weight_decay"] = 0.0
    a, b = _params(arrays), _params(arrays)
    oa, ob = OPTIMIZERS[name](a, l1=l1, **kw), OPTIMIZERS[name](b, **kw)
    for grads in _grad_stream(np.float64, 4):
        for pa, pb, g in zip(a, b, grads):
            pa.grad = g.copy()
            pb.grad = g + l1 * np.sign(pb.data)
        oa.step()
        ob.step()
        for pa, pb in zip(a, b):
            np.testing.assert_array_equal(pa.data, pb.data)


def test_l1_sgd_shrinks_towards_zero_and_keeps_zeros():
    p = Parameter(np.array([0.0, 1.0, -1.0, 0.0]))
    p.grad = np.zeros(4)
    optim.SGD([p], lr=0.5, l1=0.1).step()
    np.testing.assert_allclose(p.data, [0.0, 0.95, -0.95, 0.0], rtol=1e-15)
    assert p.data[0] == 0 and p.data[3] == 0


def test_maximize_is_descent_on_negated_gradient():
    arrays = _init_arrays(np.float64)
    a, b = _params(arrays), _params(arrays)
    oa = optim.RMSprop(a, lr=0.01, momentum=0.9, maximize=True)
    ob = optim.RMSprop(b, lr=0.01, momentum=0.9)
    for grads in _grad_stream(np.float64, 4):
        for pa, pb, g in zip(a, b, grads):
            pa.grad, pb.grad = g.copy(), -g
        oa.step()
        ob.step()
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.data, pb.data)


# --------------------------------------------------------------------------
# skipping, groups, zero_grad, in-place updates
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", OPT_CONFIGS, ids=[_cfg_id(c) for c in OPT_CONFIGS])
def test_frozen_and_gradless_params_untouched(cfg):
    name, kw = cfg
    arrays = _init_arrays(np.float64)
    params = _params(arrays)
    params[1].requires_grad = False
    params[1].grad = np.ones(params[1].shape)  # a stale gradient must not be used
    params[2].grad = None
    opt = OPTIMIZERS[name](params, **kw)
    for grads in _grad_stream(np.float64, 3):
        params[0].grad = grads[0]
        params[3].grad = grads[3]
        opt.step()
    np.testing.assert_array_equal(params[1].data, arrays[1])
    np.testing.assert_array_equal(params[2].data, arrays[2])
    assert params[1] not in opt.state and params[2] not in opt.state
    assert not np.array_equal(params[0].data, arrays[0])
    assert not np.array_equal(params[3].data, arrays[3])
    sd = opt.state_dict()
    assert 1 not in sd["state"] and 2 not in sd["state"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", OPT_CONFIGS, ids=[_cfg_id(c) for c in OPT_CONFIGS])
def test_step_is_in_place_and_leaves_grad_alone(cfg, dtype):
    name, kw = cfg
    params = _params(_init_arrays(dtype))
    datas = [p.data for p in params]
    opt = OPTIMIZERS[name](params, **kw)
    state_arrays = None
    for grads in _grad_stream(dtype, 3):
        copies = [g.copy() for g in grads]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for p, d, g, c in zip(params, datas, grads, copies):
            assert p.data is d and p.data.dtype == dtype and p.data.flags.c_contiguous
            assert p.grad is g
            np.testing.assert_array_equal(g, c)  # gradients are read, never written
        if state_arrays is None:
            state_arrays = {k: v for k, v in opt.state.get(params[0], {}).items()
                            if isinstance(v, np.ndarray)}
    for k, v in state_arrays.items():  # state is updated in place too
        assert opt.state[params[0]][k] is v, f"state {k} reallocated"
        assert v.dtype == dtype
    assert bool(state_arrays) == (name != "SGD" or bool(kw.get("momentum")))


def test_step_does_not_mutate_gradient_values():
    for name, kw in OPT_CONFIGS:
        params = _params(_init_arrays(np.float32))
        grads = _grad_stream(np.float32, 1)[0]
        for p, g in zip(params, grads):
            p.grad = g.copy()
        OPTIMIZERS[name](params, **kw).step()
        for p, g in zip(params, grads):
            np.testing.assert_array_equal(p.grad, g, err_msg=f"{name} {kw}")


def test_gradient_of_other_dtype_and_layout_is_accepted():
    p = Parameter(np.ones((3, 4), dtype=np.float32))
    p.grad = np.asfortranarray(np.full((3, 4), 2.0))  # float64, Fortran order
    optim.SGD([p], lr=0.25, momentum=0.5).step()
    assert p.data.dtype == np.float32
    np.testing.assert_array_equal(p.data, np.full((3, 4), 0.5, np.float32))


def test_adagrad_group_initial_accumulator_value_is_honoured():
    """Deliberate difference: torch 2.x fills every group's ``sum`` with the
    constructor's initial_accumulator_value; pyconv uses the group's own."""
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = optim.Adagrad([{"params": [a], "initial_accumulator_value": 0.5}, {"params": [b]}],
                        lr=0.1, initial_accumulator_value=0.25)
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_array_equal(opt.state[a]["sum"], 1.5)
    np.testing.assert_array_equal(opt.state[b]["sum"], 1.25)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_empty_and_non_contiguous_parameters(name):
    empty = Parameter(np.zeros((0, 3)))
    empty.grad = np.zeros((0, 3))
    q = Parameter(np.ones((4, 3)))
    q.data = np.asfortranarray(q.data)  # a user-assigned non-C-contiguous array
    ref = Parameter(np.ones((4, 3)))
    data = q.data
    kw = dict(weight_decay=0.1, l1=0.05)
    opt, ref_opt = OPTIMIZERS[name]([empty, q], **kw), OPTIMIZERS[name]([ref], **kw)
    for g in _grad_stream(np.float64, 3, shapes=[(4, 3)]):
        q.grad, ref.grad = np.asfortranarray(g[0]), g[0]
        opt.step()
        ref_opt.step()
    assert q.data is data and empty.data.shape == (0, 3)
    np.testing.assert_array_equal(q.data, ref.data)


def test_gradient_shape_mismatch_raises():
    p = Parameter(np.ones(3))
    p.grad = np.ones(4)
    with pytest.raises(ValueError, match="gradient shape"):
        optim.Adam([p]).step()


def test_param_groups_use_their_own_lr():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.0)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["momentum"] == 0.0
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, 0.9])
    np.testing.assert_allclose(b.data, [0.5, 0.5])
    opt.param_groups[0]["lr"] = 0.2  # changing lr between steps takes effect
    opt.step()
    np.testing.assert_allclose(a.data, [0.7, 0.7])


def test_add_param_group():
    a, b, c = (Parameter(np.ones(2)) for _ in range(3))
    opt = optim.Adam([a], lr=0.1, betas=(0.5, 0.9))
    opt.add_param_group({"params": b, "lr": 0.01})
    assert len(opt.param_groups) == 2
    g = opt.param_groups[1]
    assert g["params"] == [b] and g["lr"] == 0.01 and g["betas"] == (0.5, 0.9)
    assert g["eps"] == 1e-8 and g["amsgrad"] is False
    b.grad = np.ones(2)
    opt.step()
    np.testing.assert_allclose(b.data, 1 - 0.01, rtol=1e-6)
    np.testing.assert_array_equal(a.data, 1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a, c]})
    with pytest.raises(ValueError, match="same parameter more than once"):
        opt.add_param_group({"params": [c, c]})
    with pytest.raises(ValueError, match="'params'"):
        opt.add_param_group({"lr": 0.1})
    with pytest.raises(TypeError, match="dict"):
        opt.add_param_group([c])
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": {c}})
    with pytest.raises(ValueError, match="beta"):
        opt.add_param_group({"params": [c], "betas": (0.9, 1.5)})
    assert len(opt.param_groups) == 2  # failed additions left nothing behind
    opt.add_param_group({"params": (c,)})
    assert opt.param_groups[2]["lr"] == 0.1


def test_constructor_accepts_generators_and_a_single_dict():
    ps = [Parameter(np.ones(2)) for _ in range(3)]
    opt = optim.SGD((p for p in ps), lr=0.1)
    assert opt.param_groups[0]["params"] == ps
    opt = optim.SGD({"params": ps, "lr": 0.3})
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    a, b, c = Parameter(np.ones(3)), Parameter(np.ones(2)), Parameter(np.ones(2))
    a.grad, b.grad = np.full(3, 2.0), np.full(2, 3.0)
    ga = a.grad
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1)
    opt.zero_grad(set_to_none=set_to_none)
    if set_to_none:
        assert a.grad is None and b.grad is None
    else:
        assert a.grad is ga
        np.testing.assert_array_equal(a.grad, 0)
        np.testing.assert_array_equal(b.grad, 0)
    assert c.grad is None


def test_zero_grad_default_sets_none_and_step_then_skips():
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad()
    assert p.grad is None
    opt.step()
    np.testing.assert_array_equal(p.data, 1)


def test_closure_is_called_once_and_its_loss_returned():
    p = Parameter(np.ones(2))
    calls = []

    def closure():
        calls.append(1)
        p.grad = np.ones(2)
        return 42.0

    assert optim.SGD([p], lr=0.5).step(closure) == 42.0
    assert calls == [1]
    np.testing.assert_array_equal(p.data, 0.5)
    assert optim.SGD([p], lr=0.5).step() is None


def test_scratch_buffers_do_not_leak_between_parameters():
    """Big then small parameter (shared scratch pool): results equal separate runs."""
    arrays = [np.linspace(-1, 1, 50).reshape(5, 10), np.array([0.5, -0.25])]
    grads = [np.cos(np.arange(50.0)).reshape(5, 10), np.array([1.0, -3.0])]
    kw = dict(lr=0.01, weight_decay=0.1, l1=0.01, amsgrad=True)
    together = _params(arrays)
    opt = optim.Adam(together, **kw)
    for _ in range(3):
        for p, g in zip(together, grads):
            p.grad = g
        opt.step()
    for i in range(2):
        alone = Parameter(arrays[i])
        o = optim.Adam([alone], **kw)
        for _ in range(3):
            alone.grad = grads[i]
            o.step()
        np.testing.assert_array_equal(alone.data, together[i].data)


# --------------------------------------------------------------------------
# state_dict
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", OPT_CONFIGS, ids=[_cfg_id(c) for c in OPT_CONFIGS])
def test_state_dict_round_trip_is_bit_exact(cfg, dtype):
    name, kw = cfg
    k, n = 4, 9
    grads = _grad_stream(dtype, n)
    ref = _params(_init_arrays(dtype))
    ref_opt = OPTIMIZERS[name](ref, **kw)
    saved = None
    for step, gs in enumerate(grads):
        if step == k:
            saved = ref_opt.state_dict()
            snapshot = [p.data.copy() for p in ref]
        for p, g in zip(ref, gs):
            p.grad = g.copy()
        ref_opt.step()
    # a fresh optimizer with different hyper-parameters: the loaded ones win
    resumed = _params(snapshot)
    opt = OPTIMIZERS[name](resumed, lr=123.0)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    for gs in grads[k:]:
        for p, g in zip(resumed, gs):
            p.grad = g.copy()
        opt.step()
    for p, q in zip(resumed, ref):
        assert p.data.dtype == q.data.dtype
        np.testing.assert_array_equal(p.data, q.data)
    _assert_same_state(opt, resumed, ref_opt, ref)


@pytest.mark.parametrize("cfg", OPT_CONFIGS, ids=[_cfg_id(c) for c in OPT_CONFIGS])
def test_state_dict_leaves_are_plain(cfg):
    name, kw = cfg
    params = _params(_init_arrays(np.float32))
    opt = OPTIMIZERS[name]([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], **kw)
    optim.StepLR(opt, 3)  # adds 'initial_lr' to the groups
    for grads in _grad_stream(np.float32, 2):
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert all(isinstance(k, int) for k in sd["state"])
    for leaf in _all_leaves(sd):
        assert leaf is None or isinstance(leaf, (np.ndarray, bool, int, float, str, tuple)), leaf
        if isinstance(leaf, tuple):
            assert all(isinstance(x, float) for x in leaf)
        if isinstance(leaf, np.ndarray):
            assert leaf.dtype == np.float32
    for st in sd["state"].values():
        if "step" in st:
            assert type(st["step"]) is int and st["step"] == 2


def _flatten(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}/"))
    else:
        out[prefix.rstrip("/")] = np.asarray(obj)
    return out


def _unflatten_like(template, flat, prefix=""):
    """Rebuild the nested structure of ``template`` from the loaded npz arrays
    as they come back (0-d arrays for scalars, 1-d arrays for tuples)."""
    if isinstance(template, dict):
        return {k: _unflatten_like(v, flat, f"{prefix}{k}/") for k, v in template.items()}
    if isinstance(template, list):
        return [_unflatten_like(v, flat, f"{prefix}{i}/") for i, v in enumerate(template)]
    return flat[prefix.rstrip("/")]


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, amsgrad=True, betas=(0.8, 0.9))),
                                     ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     ("RMSprop", dict(centered=True, momentum=0.5))])
def test_state_dict_survives_npz(name, kw):
    grads = _grad_stream(np.float64, 6)
    ref = _params(_init_arrays(np.float64))
    ref_opt = OPTIMIZERS[name](ref, **kw)
    for step, gs in enumerate(grads):
        if step == 3:
            buf = io.BytesIO()
            np.savez(buf, **_flatten(ref_opt.state_dict()))
            template = ref_opt.state_dict()
            snapshot = [p.data.copy() for p in ref]
        for p, g in zip(ref, gs):
            p.grad = g.copy()
        ref_opt.step()
    buf.seek(0)
    with np.load(buf) as z:
        flat = {k: z[k] for k in z.files}
    loaded = _unflatten_like(template, flat)
    assert isinstance(loaded["param_groups"][0]["lr"], np.ndarray)  # 0-d, as npz returns it
    resumed = _params(snapshot)
    opt = OPTIMIZERS[name](resumed)
    opt.load_state_dict(loaded)
    g0 = opt.param_groups[0]
    assert type(g0["lr"]) is float and g0 == {**ref_opt.param_groups[0], "params": resumed}
    for gs in grads[3:]:
        for p, g in zip(resumed, gs):
            p.grad = g.copy()
        opt.step()
    for p, q in zip(resumed, ref):
        np.testing.assert_array_equal(p.data, q.data)
    _assert_same_state(opt, resumed, ref_opt, ref)


def test_state_dict_is_a_snapshot_and_load_copies():
    p = Parameter(np.ones(3))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    sd = opt.state_dict()
    m = sd["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], m)  # not aliased to live state
    assert sd["state"][0]["step"] == 1
    q = Parameter(np.ones(3))
    opt2 = optim.Adam([q])
    opt2.load_state_dict(sd)
    sd["state"][0]["exp_avg"][:] = 99.0
    sd["param_groups"][0]["lr"] = 7.0
    assert opt2.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(opt2.state[q]["exp_avg"], m)
    assert opt2.param_groups[0]["params"] == [q]


def test_load_state_dict_casts_to_param_dtype():
    p64 = Parameter(np.ones(3))
    opt = optim.RMSprop([p64], momentum=0.9)
    p64.grad = np.full(3, 0.3)
    opt.step()
    p32 = Parameter(np.ones(3, dtype=np.float32))
    opt32 = optim.RMSprop([p32])
    opt32.load_state_dict(opt.state_dict())
    assert opt32.param_groups[0]["momentum"] == 0.9
    for v in opt32.state[p32].values():
        if isinstance(v, np.ndarray):
            assert v.dtype == np.float32


def test_load_state_dict_errors_leave_optimizer_unchanged():
    a, b = Parameter(np.ones(3)), Parameter(np.ones((2, 2)))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad, b.grad = np.ones(3), np.ones((2, 2))
    opt.step()
    good = opt.state_dict()

    target_a, target_b = Parameter(np.ones(3)), Parameter(np.ones((2, 2)))
    target = optim.Adam([target_a, target_b], lr=0.5)
    before = target.state_dict()

    def check_unchanged():
        after = target.state_dict()
        assert after["param_groups"] == before["param_groups"] and after["state"] == {}

    two_groups = optim.Adam([{"params": [Parameter(np.ones(3))]},
                             {"params": [Parameter(np.ones((2, 2)))]}])
    with pytest.raises(ValueError, match="parameter groups"):
        two_groups.load_state_dict(good)
    with pytest.raises(ValueError, match="parameter groups"):
        target.load_state_dict(two_groups.state_dict())
    one_param = optim.Adam([Parameter(np.ones(3))])
    with pytest.raises(ValueError, match="parameter group 0 has 2"):
        one_param.load_state_dict(good)
    bad_shape = copy.deepcopy(good)
    bad_shape["state"][1]["exp_avg"] = np.ones(4)
    with pytest.raises(ValueError, match="shape"):
        target.load_state_dict(bad_shape)
    check_unchanged()
    swapped = optim.Adam([Parameter(np.ones((2, 2))), Parameter(np.ones(3))])
    with pytest.raises(ValueError, match="shape"):
        swapped.load_state_dict(good)
    with pytest.raises(ValueError, match="lacks the options"):
        sgd = optim.SGD([Parameter(np.ones(3)), Parameter(np.ones(1))])
        target.load_state_dict(sgd.state_dict())
    unknown = copy.deepcopy(good)
    unknown["state"][5] = unknown["state"][0]
    with pytest.raises(ValueError, match="index 5"):
        target.load_state_dict(unknown)
    bad_lr = copy.deepcopy(good)
    bad_lr["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        target.load_state_dict(bad_lr)
    with pytest.raises(ValueError, match="'state'"):
        target.load_state_dict({"param_groups": []})
    check_unchanged()
    target.load_state_dict(good)  # and the good one still loads
    assert target.state[target_a]["step"] == 1


def test_sgd_without_momentum_has_no_state():
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    opt = optim.SGD([p], lr=0.1)
    opt.step()
    assert opt.state == {} and opt.state_dict()["state"] == {}


# --------------------------------------------------------------------------
# argument errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_common_argument_errors(name):
    cls = OPTIMIZERS[name]
    ps = [Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="learning rate"):
        cls(ps, lr=-0.1)
    with pytest.raises(ValueError, match="learning rate"):
        cls(ps, lr=float("nan"))
    with pytest.raises(TypeError, match="lr must be a real number"):
        cls(ps, lr="0.1")
    with pytest.raises(ValueError, match="weight_decay"):
        cls(ps, weight_decay=-1e-3)
    with pytest.raises(ValueError, match="l1"):
        cls(ps, l1=-0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([])
    with pytest.raises(ValueError, match="empty parameter list"):
        cls(iter([]))
    with pytest.raises(TypeError, match="iterable of Parameters"):
        cls(ps[0])
    with pytest.raises(TypeError, match="iterable of Parameters"):
        cls(np.ones(3))
    with pytest.raises(TypeError, match="Parameter objects"):
        cls([np.ones(3)])
    with pytest.raises(ValueError, match="more than once"):
        cls([ps[0], ps[0]])
    if name != "SGD":
        with pytest.raises(ValueError, match="eps"):
            cls(ps, eps=-1e-8)


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize("betas,idx", [((1.0, 0.9), 0), ((-0.1, 0.9), 0), ((0.9, 1.0), 1),
                                       ((0.9, -1e-3), 1), ((0.9, float("nan")), 1)])
def test_betas_outside_unit_interval(cls, betas, idx):
    with pytest.raises(ValueError, match=rf"beta parameter at index {idx}"):
        cls([Parameter(np.ones(2))], betas=betas)


def test_betas_must_be_a_pair():
    with pytest.raises(ValueError, match="pair"):
        optim.Adam([Parameter(np.ones(2))], betas=(0.9, 0.99, 0.5))
    with pytest.raises(ValueError, match="pair"):
        optim.Adam([Parameter(np.ones(2))], betas=0.9)
    with pytest.raises(TypeError, match="betas"):
        optim.Adam([Parameter(np.ones(2))], betas=("a", 0.9))
    assert optim.Adam([Parameter(np.ones(2))], betas=[0.5, 0.6]).defaults["betas"] == (0.5, 0.6)


def test_sgd_momentum_errors():
    ps = [Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        optim.SGD(ps, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0 and dampening = 0"):
        optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(ps, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([{"params": ps, "momentum": 0.0}], lr=0.1, momentum=0.9, nesterov=True)
    assert optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True).defaults["nesterov"] is True


def test_other_option_errors():
    ps = [Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="lr_decay"):
        optim.Adagrad(ps, lr_decay=-1.0)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        optim.Adagrad(ps, initial_accumulator_value=-1.0)
    with pytest.raises(ValueError, match="rho"):
        optim.Adadelta(ps, rho=1.5)
    with pytest.raises(ValueError, match="rho"):
        optim.Adadelta(ps, rho=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        optim.RMSprop(ps, alpha=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.RMSprop(ps, momentum=-0.1)
    with pytest.raises(TypeError, match="weight_decay must be a real number"):
        optim.SGD(ps, lr=0.1, weight_decay=None)


# --------------------------------------------------------------------------
# gradient clipping
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, float("inf"), 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    torch = pytest.importorskip("torch")
    grads = _grad_stream(dtype, 1, seed=7)[0]
    params = _params(_init_arrays(dtype))
    tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
    for i, (p, tp, g) in enumerate(zip(params, tparams, grads)):
        if i == 1:
            continue  # one parameter without gradient: ignored
        p.grad = g.copy()
        tp.grad = torch.from_numpy(g.copy())
    ids = [id(p.grad) for p in params]
    total = optim.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type, foreach=False)
    assert isinstance(total, float)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(total, float(ttotal), rtol=rtol)
    for p, tp, i in zip(params, tparams, ids):
        assert id(p.grad) == i  # in place
        if tp.grad is None:
            assert p.grad is None
        else:
            assert p.grad.dtype == dtype
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=rtol, atol=rtol * 1e-3)
    flat = np.concatenate([g.reshape(-1) for i, g in enumerate(grads) if i != 1]).astype(np.float64)
    expected = np.linalg.norm(flat, ord=norm_type)
    np.testing.assert_allclose(total, expected, rtol=1e-12 if dtype == np.float64 else 1e-6)


def test_clip_grad_norm_closed_form():
    a, b = Parameter(np.zeros(1)), Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0]), np.array([-4.0])
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert total == 5.0
    np.testing.assert_allclose([a.grad[0], b.grad[0]], np.array([3.0, -4.0]) / (5.0 + 1e-6),
                               rtol=1e-15)
    # no clipping when the norm is below max_norm: untouched, and norm still returned
    a.grad, b.grad = np.array([0.3]), np.array([-0.4])
    assert math.isclose(optim.clip_grad_norm_([a, b], max_norm=1.0), 0.5, rel_tol=1e-15)
    np.testing.assert_array_equal(a.grad, [0.3])
    # inf norm and a single Parameter
    a.grad = np.array([-6.0])
    assert optim.clip_grad_norm_(a, max_norm=3.0, norm_type="inf") == 6.0
    np.testing.assert_allclose(a.grad, [-6.0 * 3.0 / (6.0 + 1e-6)], rtol=1e-15)
    assert optim.clip_grad_norm_([Parameter(np.ones(2))], 1.0) == 0.0  # no gradients at all


def test_clip_grad_norm_errors_and_nonfinite():
    p = Parameter(np.zeros(2))
    p.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with np.errstate(invalid="ignore"):  # inf * 0 -> nan, as in torch
        assert math.isinf(optim.clip_grad_norm_([p], 1.0))
    assert np.isnan(p.grad[0]) and p.grad[1] == 0  # torch gives [nan, 0] too
    p.grad = np.array([np.nan, 1.0])
    with np.errstate(invalid="ignore"):
        assert math.isnan(optim.clip_grad_norm_([p], 1.0))
    assert np.isnan(p.grad).all()
    with pytest.raises(ValueError, match="norm_type"):
        optim.clip_grad_norm_([p], 1.0, norm_type=0)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm_([p], -1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_value(dtype):
    p, q = Parameter(np.zeros(4, dtype=dtype)), Parameter(np.zeros(1, dtype=dtype))
    p.grad = np.array([-3.0, -0.5, 0.25, 7.0], dtype=dtype)
    g = p.grad
    assert optim.clip_grad_value_([p, q], 1.0) is None
    assert p.grad is g and q.grad is None
    np.testing.assert_array_equal(p.grad, np.array([-1.0, -0.5, 0.25, 1.0], dtype=dtype))
    with pytest.raises(ValueError, match="clip_value"):
        optim.clip_grad_value_([p], -1.0)


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    grads = _grad_stream(np.float32, 1, seed=9)[0]
    params = _params(_init_arrays(np.float32))
    tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
    for p, tp, g in zip(params, tparams, grads):
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    optim.clip_grad_value_(params, 0.7)
    torch.nn.utils.clip_grad_value_(tparams, 0.7, foreach=False)
    for p, tp in zip(params, tparams):
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())


# --------------------------------------------------------------------------
# schedulers
# --------------------------------------------------------------------------
SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 11, 20], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=10)),
]


def _two_group_optimizers(torch=None):
    a, b = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.03}], lr=0.1, momentum=0.9)
    if torch is None:
        return opt
    ta, tb = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    topt = torch.optim.SGD([{"params": [ta]}, {"params": [tb], "lr": 0.03}], lr=0.1, momentum=0.9)
    return opt, topt


@pytest.mark.parametrize("name,kw", SCHEDULERS, ids=[f"{n}-{k}" for n, k in SCHEDULERS])
def test_scheduler_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    opt, topt = _two_group_optimizers(torch)
    sched = getattr(optim, name)(opt, **kw)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    assert sched.get_last_lr() == tsched.get_last_lr() == [0.1, 0.03]
    assert sched.base_lrs == tsched.base_lrs
    for epoch in range(1, 31):
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        lrs = sched.get_last_lr()
        assert lrs == tsched.get_last_lr(), f"epoch {epoch}"  # same formulas: bit-exact
        assert lrs == [g["lr"] for g in opt.param_groups]
        assert sched.last_epoch == tsched.last_epoch == epoch
    assert all(g["initial_lr"] == lr for g, lr in zip(opt.param_groups, [0.1, 0.03]))


def test_scheduler_closed_forms():
    opt = _two_group_optimizers()
    s = optim.StepLR(opt, step_size=4, gamma=0.5)
    for e in range(1, 13):
        s.step()
        np.testing.assert_allclose(s.get_last_lr(), [0.1 * 0.5 ** (e // 4), 0.03 * 0.5 ** (e // 4)],
                                   rtol=1e-15)
    opt = _two_group_optimizers()
    s = optim.MultiStepLR(opt, milestones=[3, 3, 7], gamma=0.1)
    for e in range(1, 10):
        s.step()
        k = (e >= 3) * 2 + (e >= 7)
        np.testing.assert_allclose(s.get_last_lr()[0], 0.1 * 0.1 ** k, rtol=1e-13)
    opt = _two_group_optimizers()
    s = optim.CosineAnnealingLR(opt, T_max=5, eta_min=0.01)
    for e in range(1, 6):
        s.step()
        np.testing.assert_allclose(s.get_last_lr()[0],
                                   0.01 + 0.09 * (1 + math.cos(math.pi * e / 5)) / 2, rtol=1e-13)
    assert math.isclose(s.get_last_lr()[0], 0.01, rel_tol=1e-12)
    opt = _two_group_optimizers()
    s = optim.ExponentialLR(opt, gamma=0.5)
    s.step()
    s.step()
    assert s.get_last_lr() == [0.025, 0.0075]


def test_scheduler_lr_drives_the_optimizer():
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = np.ones(1)
        opt.step()
        sched.step()
    np.testing.assert_array_equal(p.data, [-(1.0 + 0.5 + 0.25)])


PLATEAU_CASES = [
    dict(mode="min", patience=2, factor=0.5),
    dict(mode="max", patience=1, factor=0.5, threshold=0.05),
    dict(mode="min", patience=1, threshold_mode="abs", threshold=0.2, cooldown=2),
    dict(mode="max", patience=0, threshold_mode="abs", threshold=0.1, cooldown=1, factor=0.3),
    dict(mode="min", patience=0, factor=0.5, min_lr=0.02),
    dict(mode="min", patience=0, factor=0.5, min_lr=[0.02, 0.001], cooldown=1),
    dict(mode="min", patience=0, factor=0.9, eps=5e-3),  # group 1's cuts are below eps
]


def _plateau_metrics(n=40, seed=4):
    rng = np.random.default_rng(seed)
    walk = np.round(5 + np.cumsum(rng.standard_normal(n)) * 0.3, 1)
    walk[10:16] = walk[9]  # an exact plateau
    return [float(x) for x in walk]


@pytest.mark.parametrize("kw", PLATEAU_CASES, ids=[str(k) for k in PLATEAU_CASES])
def test_reduce_lr_on_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    opt, topt = _two_group_optimizers(torch)
    sched = optim.ReduceLROnPlateau(opt, **kw)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    reductions = 0
    for epoch, metric in enumerate(_plateau_metrics(), 1):
        before = sched.get_last_lr()
        sched.step(metric)
        tsched.step(metric)
        assert sched.get_last_lr() == tsched.get_last_lr(), f"epoch {epoch}"
        reductions += sched.get_last_lr() != before
        for attr in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert getattr(sched, attr) == getattr(tsched, attr), (attr, epoch)
    assert reductions >= 2  # the cases do exercise reductions
    assert "initial_lr" not in opt.param_groups[0]


def test_reduce_lr_on_plateau_closed_form():
    opt = _two_group_optimizers()
    s = optim.ReduceLROnPlateau(opt, mode="min", patience=1, factor=0.5, cooldown=1, min_lr=0.02)
    lrs = []
    for m in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]:
        s.step(m)
        lrs.append(s.get_last_lr()[0])
    # bad epochs 1, 2 -> cut at epoch 3; cooldown epoch 4; bad again 5, 6 -> cut at 6 (floored)
    assert lrs == [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02]
    assert s.get_last_lr()[1] == 0.02  # group 1 started at 0.03: floored to min_lr at once


@pytest.mark.parametrize("name,kw", SCHEDULERS + [("ReduceLROnPlateau", dict(patience=1, cooldown=1,
                                                                          factor=0.5))],
                         ids=[f"{n}-{k}" for n, k in SCHEDULERS] + ["ReduceLROnPlateau"])
def test_scheduler_state_dict_round_trip(name, kw):
    metrics = _plateau_metrics(30, seed=2)
    cls = getattr(optim, name)

    def advance(opt, sched, epochs):
        out = []
        for e in epochs:
            opt.step()
            if name == "ReduceLROnPlateau":
                sched.step(metrics[e])
            else:
                sched.step()
            out.append(sched.get_last_lr())
        return out

    opt = _two_group_optimizers()
    sched = cls(opt, **kw)
    advance(opt, sched, range(10))
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    assert "optimizer" not in sched_sd
    reference = advance(opt, sched, range(10, 30))

    opt2 = _two_group_optimizers()
    opt2.load_state_dict(opt_sd)
    sched2 = cls(opt2, **kw)
    sched2.load_state_dict(sched_sd)
    assert advance(opt2, sched2, range(10, 30)) == reference
    sched_sd["base_lrs"] = [1.0]
    with pytest.raises(ValueError, match="param groups"):
        cls(_two_group_optimizers(), **kw).load_state_dict(sched_sd)


def test_scheduler_state_dict_survives_npz():
    opt = _two_group_optimizers()
    sched = optim.MultiStepLR(opt, milestones=[2, 4, 4], gamma=0.5)
    for _ in range(3):
        sched.step()
    sd = sched.state_dict()
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sd.items()})
    buf.seek(0)
    with np.load(buf) as z:
        loaded = {k: z[k] for k in z.files}
    opt2 = _two_group_optimizers()
    opt2.load_state_dict(opt.state_dict())
    sched2 = optim.MultiStepLR(opt2, milestones=[1], gamma=0.9)
    sched2.load_state_dict(loaded)
    assert type(sched2.last_epoch) is int and sched2.last_epoch == 3
    assert sched2.base_lrs == [0.1, 0.03] and all(type(x) is float for x in sched2.base_lrs)
    sched2.step()
    sched.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_scheduler_resume_with_last_epoch():
    opt = _two_group_optimizers()
    with pytest.raises(KeyError, match="initial_lr"):
        optim.StepLR(opt, step_size=2, last_epoch=3)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    s = optim.StepLR(opt, step_size=2, gamma=0.5, last_epoch=3)
    assert s.last_epoch == 4


def test_scheduler_argument_errors():
    opt = _two_group_optimizers()
    with pytest.raises(TypeError, match="not an Optimizer"):
        optim.StepLR(object(), step_size=2)
    with pytest.raises(TypeError, match="not an Optimizer"):
        optim.ReduceLROnPlateau(object())
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(TypeError, match="step_size"):
        optim.StepLR(opt, step_size=1.5)
    with pytest.raises(ValueError, match="last_epoch"):
        optim.StepLR(opt, step_size=1, last_epoch=-2)
    with pytest.raises(ValueError, match="increasing"):
        optim.MultiStepLR(opt, milestones=[5, 2])
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="factor"):
        optim.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode='best' is unknown"):
        optim.ReduceLROnPlateau(opt, mode="best")
    with pytest.raises(ValueError, match="threshold_mode='relative' is unknown"):
        optim.ReduceLROnPlateau(opt, threshold_mode="relative")
    with pytest.raises(ValueError, match="expected 2 min_lrs"):
        optim.ReduceLROnPlateau(opt, min_lr=[0.1])
    with pytest.raises(ValueError, match="patience"):
        optim.ReduceLROnPlateau(opt, patience=-1)
    # failed constructions left no trace
    assert all("initial_lr" not in g for g in opt.param_groups)


def test_reduce_lr_on_plateau_after_add_param_group():
    opt = _two_group_optimizers()
    s = optim.ReduceLROnPlateau(opt, patience=0, min_lr=[0.0, 0.0])
    opt.add_param_group({"params": [Parameter(np.ones(1))], "lr": 1.0})
    s.step(1.0)
    with pytest.raises(RuntimeError, match="min_lr has 2 entries"):
        s.step(2.0)
    s2 = optim.ReduceLROnPlateau(opt, patience=0, min_lr=0.0)
    opt.add_param_group({"params": [Parameter(np.ones(1))], "lr": 1.0})
    s2.step(1.0)
    s2.step(2.0)  # scalar min_lr: extended to the new group
    assert s2.get_last_lr()[-1] == 0.1 and len(s2.min_lrs) == 4


def test_no_torch_warnings_needed():
    """Sanity: pyconv schedulers never warn (they do not wrap optimizer.step)."""
    opt = _two_group_optimizers()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = optim.CosineAnnealingLR(opt, T_max=3)
        s.step()
        opt.step()
    assert s.last_epoch == 1
