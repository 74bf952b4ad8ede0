"""Determinism: every op gives bit-identical results with 1 and 2 threads, and on repeats.

README ("Threads and determinism"): kernels split output tiles between
threads and never a reduction; batch reductions are cut into chunks fixed by
the shape and folded in a fixed order. The shapes below are large enough for
every kernel to go parallel (threads_for thresholds of 2e5 .. 1e6 work units),
so a reduction that depended on the thread split would show up here.

"Bit-identical" is checked on the raw bytes (so -0.0 vs 0.0 and NaN payloads
count), plus dtype and shape.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyconv

F32, F64 = np.float32, np.float64


def _flat(res):
    """The arrays of a result (an array, a scalar, or a tuple of them / None)."""
    if isinstance(res, (tuple, list)):
        out = []
        for r in res:
            out.extend(_flat(r))
        return out
    if res is None:
        return [None]
    return [np.asarray(res)]


def _assert_bits(a, b, what):
    fa, fb = _flat(a), _flat(b)
    assert len(fa) == len(fb), what
    for i, (x, y) in enumerate(zip(fa, fb)):
        if x is None or y is None:
            assert x is None and y is None, f"{what}[{i}]"
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}[{i}]: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.tobytes() != y.tobytes():
            diff = np.flatnonzero(x.ravel().view(np.uint8 if x.itemsize == 1 else f"u{x.itemsize}")
                                  != y.ravel().view(np.uint8 if y.itemsize == 1 else f"u{y.itemsize}"))
            pytest.fail(f"{what}[{i}]: {diff.size} of {x.size} elements differ in their bits "
                        f"(first at flat index {diff[:5].tolist()})")


@pytest.fixture
def threads():
    """Yields a setter; restores the thread count afterwards, whatever happens."""
    old = pyconv.get_num_threads()
    yield pyconv.set_num_threads
    pyconv.set_num_threads(old)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# the ops: name -> (dtype -> zero-argument callable)
# ---------------------------------------------------------------------------
def _conv_case(dt, N=16, C=32, H=24, OC=32, k=3, stride=1, padding=1, dilation=1, groups=1):
    r = _rng(1)
    x = r.standard_normal((N, C, H, H)).astype(dt)
    w = r.standard_normal((OC, C // groups, k, k)).astype(dt)
    b = r.standard_normal(OC).astype(dt)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = pyconv.conv2d(x, w, b, **kw)
    dy = r.standard_normal(y.shape).astype(dt)

    def fwd():
        return pyconv.conv2d(x, w, b, **kw)

    def bwd():
        return pyconv.conv2d_backward(dy, x, w, **kw)

    def bwd_wb_only():  # dw/db path alone (the batch reduction)
        return pyconv.conv2d_backward(dy, x, w, output_mask=(False, True, True), **kw)

    def grad_w():
        return pyconv.conv2d_weight(x, w.shape, dy, **kw)

    def grad_x():
        return pyconv.conv2d_input(x.shape, w, dy, **kw)

    return {"fwd": fwd, "bwd": bwd, "bwd_wb": bwd_wb_only, "weight": grad_w, "input": grad_x}


def _gemm_case(dt):
    r = _rng(2)
    a = r.standard_normal((257, 611)).astype(dt)
    b = r.standard_normal((611, 389)).astype(dt)
    c0 = r.standard_normal((257, 389)).astype(dt)

    def plain():
        return pyconv.gemm(a, b)

    def transposed():  # strided operands, read in place
        return pyconv.gemm(np.asfortranarray(a), b[:, ::-1])

    def beta():
        out = c0.copy()
        return pyconv.gemm(a, b, out=out, beta=0.5)

    return {"plain": plain, "transposed": transposed, "beta": beta}


def _linear_case(dt):
    r = _rng(3)
    x = r.standard_normal((4096, 96)).astype(dt)
    w = r.standard_normal((80, 96)).astype(dt)
    b = r.standard_normal(80).astype(dt)
    dy = r.standard_normal((4096, 80)).astype(dt)
    return {"fwd": lambda: pyconv.linear(x, w, b), "bwd": lambda: pyconv.linear_backward(dy, x, w)}


def _bn_case(dt):
    r = _rng(4)
    x = (r.standard_normal((32, 16, 20, 20)) * 3 + 1).astype(dt)
    w = r.standard_normal(16).astype(dt)
    b = r.standard_normal(16).astype(dt)
    dy = r.standard_normal(x.shape).astype(dt)

    def train():
        rm, rv = np.zeros(16, dt), np.ones(16, dt)
        y, m, s = pyconv.batch_norm(x, rm, rv, w, b, training=True, return_stats=True)
        return y, m, s, rm, rv  # running stats are updated in place: check them too

    def evaluate():
        return pyconv.batch_norm(x, np.full(16, 0.5, dt), np.full(16, 2.0, dt), w, b)

    _, m, s = pyconv.batch_norm(x, None, None, w, b, training=True, return_stats=True)

    def bwd_train():
        return pyconv.batch_norm_backward(dy, x, w, m, s, training=True)

    def bwd_eval():
        return pyconv.batch_norm_backward(dy, x, w, m, s, training=False)

    x2 = x.reshape(32, 16 * 400)  # (N, C) layout: S = 1

    def train_2d():
        return pyconv.batch_norm(x2, None, None, training=True, return_stats=True)

    return {"train": train, "eval": evaluate, "bwd_train": bwd_train, "bwd_eval": bwd_eval,
            "train_2d": train_2d}


def _loss_case(dt):
    r = _rng(5)
    x = (r.standard_normal((2048, 100)) * 4).astype(dt)
    t = r.integers(0, 100, 2048)
    q = pyconv.softmax(r.standard_normal((2048, 100)).astype(dt))
    lp = pyconv.log_softmax(x)
    m1 = r.standard_normal((700, 500)).astype(dt)
    m2 = r.standard_normal((700, 500)).astype(dt)
    out = {}
    for red in ("mean", "sum", "none"):
        g = np.asarray(1.25, dt) if red != "none" else r.standard_normal(2048).astype(dt)
        gm = np.asarray(0.75, dt) if red != "none" else r.standard_normal(m1.shape).astype(dt)
        out[f"ce_{red}"] = (lambda red=red: pyconv.cross_entropy(x, t, red, label_smoothing=0.1))
        out[f"ce_prob_{red}"] = (lambda red=red: pyconv.cross_entropy(x, q, red))
        out[f"ce_bwd_{red}"] = (lambda red=red, g=g: pyconv.cross_entropy_backward(g, x, t, red, 0.1))
        out[f"nll_{red}"] = (lambda red=red: pyconv.nll_loss(lp, t, red))
        out[f"nll_bwd_{red}"] = (lambda red=red, g=g: pyconv.nll_loss_backward(g, lp, t, red))
        out[f"mse_{red}"] = (lambda red=red: pyconv.mse_loss(m1, m2, red))
        out[f"mse_bwd_{red}"] = (lambda red=red, gm=gm: pyconv.mse_loss_backward(gm, m1, m2, red))
    return out


def _pool_case(dt):
    r = _rng(6)
    x = r.standard_normal((16, 32, 24, 24)).astype(dt)
    x[0, 0, :2, :2] = 1.0  # ties
    y, idx = pyconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    dy = r.standard_normal(y.shape).astype(dt)
    ya = pyconv.avg_pool2d(x, 3, 2, 1)
    dya = r.standard_normal(ya.shape).astype(dt)
    yam, iam = pyconv.adaptive_max_pool2d(x, (5, 7), return_indices=True)
    dyad = r.standard_normal(yam.shape).astype(dt)
    return {
        "max": lambda: pyconv.max_pool2d(x, 3, 2, 1, return_indices=True),
        "max2x2": lambda: pyconv.max_pool2d(x, 2, return_indices=True),
        "max_dil_ceil": lambda: pyconv.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
        "max_bwd": lambda: pyconv.max_pool2d_backward(dy, idx, x.shape),
        "avg": lambda: pyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        "avg_bwd": lambda: pyconv.avg_pool2d_backward(dya, x.shape, 3, 2, 1),
        "aavg": lambda: pyconv.adaptive_avg_pool2d(x, (5, 7)),
        "aavg_bwd": lambda: pyconv.adaptive_avg_pool2d_backward(dyad, x.shape),
        "amax": lambda: pyconv.adaptive_max_pool2d(x, (5, 7), return_indices=True),
        "amax_bwd": lambda: pyconv.adaptive_max_pool2d_backward(dyad, iam, x.shape),
    }


def _elementwise_case(dt):
    r = _rng(7)
    x = (r.standard_normal((16, 32, 24, 24)) * 3).astype(dt)
    dy = r.standard_normal(x.shape).astype(dt)
    out = {}
    for name in ("relu", "leaky_relu", "elu", "gelu"):
        f, fb = getattr(pyconv, name), getattr(pyconv, name + "_backward")
        out[name] = (lambda f=f: f(x))
        out[name + "_bwd"] = (lambda fb=fb: fb(dy, x))
    out["gelu_tanh"] = lambda: pyconv.gelu(x, "tanh")
    out["gelu_tanh_bwd"] = lambda: pyconv.gelu_backward(dy, x, "tanh")
    for name in ("sigmoid", "tanh"):
        f, fb = getattr(pyconv, name), getattr(pyconv, name + "_backward")
        y = f(x)
        out[name] = (lambda f=f: f(x))
        out[name + "_bwd"] = (lambda fb=fb, y=y: fb(dy, y))
    for name in ("softmax", "log_softmax"):
        f, fb = getattr(pyconv, name), getattr(pyconv, name + "_backward")
        for axis in (1, -1, 0):
            y = f(x, axis)
            out[f"{name}_{axis}"] = (lambda f=f, axis=axis: f(x, axis))
            out[f"{name}_bwd_{axis}"] = (lambda fb=fb, y=y, axis=axis: fb(dy, y, axis))
    ym = pyconv.maxout(x, 4)
    dym = r.standard_normal(ym.shape).astype(dt)
    out["maxout"] = lambda: pyconv.maxout(x, 4)
    out["maxout_bwd"] = lambda: pyconv.maxout_backward(dym, x, 4)
    for mode in ("constant", "reflect", "replicate", "circular"):
        yp = pyconv.pad(x, (2, 3, 1, 2), mode)
        dyp = r.standard_normal(yp.shape).astype(dt)
        out[f"pad_{mode}"] = (lambda mode=mode: pyconv.pad(x, (2, 3, 1, 2), mode))
        out[f"pad_bwd_{mode}"] = (lambda mode=mode, dyp=dyp: pyconv.pad_backward(dyp, x.shape, (2, 3, 1, 2), mode))
    return out


def _all_cases(dt):
    cases = {}
    conv_variants = {
        "conv": {},
        "conv_s2": dict(stride=2),
        "conv_groups4": dict(groups=4, OC=32),
        "conv_depthwise": dict(groups=32, OC=32),
        "conv_1x1": dict(k=1, padding=0),
        "conv_dil2": dict(dilation=2, padding=2),
        "conv_smallplane": dict(H=6, C=64, OC=64),  # OH*OW < 100: the batched path
        # 1 input channel, output >= 4 MB: on 2 threads each image is staged
        # and streamed to y with non-temporal stores (1 thread: stored directly)
        "conv_1ch_streamed": dict(N=64, C=1, H=28, OC=32, padding=0),
        # depthwise 3x3 on rows of 32+: the register-blocked rows paths
        "conv_depthwise_wide": dict(groups=32, OC=32, H=40, N=4),
    }
    for vname, kw in conv_variants.items():
        for k, f in _conv_case(dt, **kw).items():
            cases[f"{vname}.{k}"] = f
    for prefix, fn in (("gemm", _gemm_case), ("linear", _linear_case), ("bn", _bn_case),
                       ("loss", _loss_case), ("pool", _pool_case), ("ew", _elementwise_case)):
        for k, f in fn(dt).items():
            cases[f"{prefix}.{k}"] = f
    return cases


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_one_vs_two_threads_bit_identical(dt, threads):
    cases = _all_cases(dt)
    threads(1)
    one = {k: f() for k, f in cases.items()}
    threads(2)
    assert pyconv.get_num_threads() == 2
    failures = []
    for k, f in cases.items():
        try:
            _assert_bits(one[k], f(), k)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "thread-count dependent results:\n" + "\n".join(failures)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_repeatable_three_runs(dt, threads):
    threads(2)
    cases = _all_cases(dt)
    failures = []
    for k, f in cases.items():
        first = f()
        for rep in range(2):
            try:
                _assert_bits(first, f(), f"{k} (repeat {rep + 2})")
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, "non-repeatable results:\n" + "\n".join(failures)


def test_thread_count_restored_by_fixture(threads):
    # The fixture above restores the count; this checks the API it relies on.
    old = pyconv.get_num_threads()
    threads(1)
    assert pyconv.get_num_threads() == 1
    threads(old)
    assert pyconv.get_num_threads() == old


def test_isa_ref_vs_active_same_shape_and_close(threads):
    """The 'ref' micro-kernel and the active one agree to rounding (not bits: FMA)."""
    if "ref" not in pyconv.supported_isas():  # pragma: no cover
        pytest.skip("no ref ISA")
    old = pyconv.get_isa()
    r = _rng(9)
    x = r.standard_normal((4, 8, 12, 12))
    w = r.standard_normal((8, 8, 3, 3))
    try:
        y_act = pyconv.conv2d(x, w, padding=1)
        pyconv.set_isa("ref")
        y_ref = pyconv.conv2d(x, w, padding=1)
        y_ref2 = pyconv.conv2d(x, w, padding=1)
    finally:
        pyconv.set_isa(old)
    _assert_bits(y_ref, y_ref2, "ref repeat")
    np.testing.assert_allclose(y_act, y_ref, rtol=1e-12, atol=1e-12)
