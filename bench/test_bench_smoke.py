"""pytest-benchmark smoke suite: tiny shapes, each checked against NumPy, then timed.

    pytest bench/test_bench_smoke.py -q                         # a few seconds
    pytest bench/test_bench_smoke.py --benchmark-disable -q     # correctness only

Each test first asserts pyconv's result against the float64 NumPy im2col
baseline (``pyconv.bench.baselines``; for the memory-bound ops, the float64
references of ``pyconv.testing.reference_ops`` through ``baselines.np_op_ref``),
then hands the call to the ``benchmark`` fixture with a fixed, small number of
rounds so the suite stays fast. Timings
here are for spotting gross slowdowns only; the real numbers come from
``python -m pyconv.bench``. No timing is asserted.
"""
import numpy as np
import pytest

import pyconv
from pyconv.bench import baselines as B
from pyconv.bench import runner as R
from pyconv.bench.shapes import OpShape, ops_suite, parse_descriptor

pytest.importorskip("pytest_benchmark")

# One of each code path, all tiny: 3x3 pad 1, stride 2, dilation, 1x1, 7x7/s2,
# depthwise, grouped, a batch large enough for the per-image parallel path.
SHAPES = [
    "mb2ic8ih12oc16kh3ph1",
    "mb2ic8ih13oc8kh3sh2ph1",
    "mb1ic8ih12oc8kh3ph2dh1",
    "mb2ic16ih10oc8kh1",
    "mb1ic3ih32oc8kh7sh2ph3",
    "g8mb2ic8ih16oc8kh3ph1",
    "g2mb2ic8ih9iw11oc4kh3kw2ph1",
    "mb16ic4ih8oc8kh3",
]
ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1)


def _arrays(s, dtype):
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(shape).astype(dtype)
                 for shape in (s.x_shape, s.w_shape, s.y_shape))


def _assert_close(out, ref, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    scale = max(float(np.abs(ref).max()), 1.0)
    assert out.shape == ref.shape and out.dtype == dtype
    np.testing.assert_allclose(out, ref, rtol=tol * 10, atol=tol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("direction", ["fwd", "bwd_d", "bwd_w"])
@pytest.mark.parametrize("desc", SHAPES)
def test_conv2d(benchmark, desc, direction, dtype):
    s = parse_descriptor(desc)
    x, w, dy = _arrays(s, dtype)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    kw = s.conv_kwargs()
    if direction == "fwd":
        fn, ref = (lambda: pyconv.conv2d(x, w, None, **kw)), B.np_conv2d(x64, w64, s)
    elif direction == "bwd_d":
        fn, ref = (lambda: pyconv.conv2d_input(x.shape, w, dy, **kw)), B.np_conv2d_input(w64, dy64, s)
    else:
        fn, ref = (lambda: pyconv.conv2d_weight(x, w.shape, dy, **kw)), B.np_conv2d_weight(x64, dy64, s)
    _assert_close(fn(), ref, dtype)  # check first, then time
    benchmark.extra_info.update(desc=desc, direction=direction, flops=s.flops())
    benchmark.pedantic(fn, **ROUNDS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 33, 5), (64, 64, 64), (50, 130, 257)])
def test_gemm(benchmark, m, n, k, dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = np.empty((m, n), dtype)
    _assert_close(pyconv.gemm(a, b, out=c), a.astype(np.float64) @ b.astype(np.float64), dtype)
    benchmark.extra_info.update(flops=2 * m * n * k)
    benchmark.pedantic(pyconv.gemm, args=(a, b), kwargs={"out": c}, **ROUNDS)


def test_numpy_baseline_matches_direct_loop():
    """The baseline is itself checked, against a direct sliding-window loop."""
    s = parse_descriptor("g2mb2ic4ih7iw6oc4kh3kw2sh2sw1ph1pw2dh1")
    x, w, dy = _arrays(s, np.float64)
    (sh, sw), (ph, pw), (dh, dwl) = s.stride, s.pad, s.dil
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    G, Cg, OCg = s.groups, s.C // s.groups, s.OC // s.groups
    y = np.zeros(s.y_shape)
    for oc in range(s.OC):
        g = oc // OCg
        for i in range(s.KH):
            for j in range(s.KW):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * dh:i * dh + sh * (s.OH - 1) + 1:sh,
                           j * dwl:j * dwl + sw * (s.OW - 1) + 1:sw]
                y[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j])
    np.testing.assert_allclose(B.np_conv2d(x, w, s), y, rtol=1e-12, atol=1e-12)
    # <conv(x), dy> = <x, dx> = <w, dw>: the adjoints are consistent.
    lhs = np.vdot(y, dy)
    np.testing.assert_allclose(np.vdot(x, B.np_conv2d_input(w, dy, s)), lhs, rtol=1e-10)
    np.testing.assert_allclose(np.vdot(w, B.np_conv2d_weight(x, dy, s)), lhs, rtol=1e-10)


def test_time_fns_alternates_blocks():
    """pyconv's and torch's calls are timed in alternating blocks, each block
    after one untimed call (the first after ``warmup``), within ``reps``."""
    log = []
    fns = [lambda: log.append("a"), lambda: log.append("b")]
    meds = R.time_fns(fns, reps=8, budget=10.0, warmup=2, rounds=4)
    assert len(meds) == 2 and all(m >= 0 for m in meds)
    # round 1: 2 warm-up + 2 timed calls each; rounds 2-4: 1 + 2 each
    assert "".join(log) == "aaaabbbb" + "aaabbb" * 3
    log.clear()
    R.time_fns(fns, reps=30, budget=0.0, warmup=1, rounds=4, min_reps=3)
    # no time left: each block stops after its share (1) of min_reps
    assert "".join(log) == "aabb" * 4


def test_descriptor_roundtrip():
    for d in SHAPES + ["mb8ic64ih56oc64kh3ph1", "g32mb1ic32ih112oc32kh3ph1", "mb1ic256ih28oc256kh3ph2dh1"]:
        assert parse_descriptor(d).desc == d
    s = parse_descriptor("mb1ic256ih28oc256kh3ph2dh1")
    assert s.dil == (2, 2) and s.OH == 28  # benchdnn: dh counts holes
    with pytest.raises(ValueError):
        parse_descriptor("mb1ic3xx4")


# The ops section's cases, tiny: pooling with indices, an elementwise op whose
# backward takes the forward output, batch norm (three outputs each way) and
# cross-entropy (scalar loss, int64 targets).
OP_CASES = [
    OpShape("max_pool2d", (2, 3, 9, 8), 3, 2, 1),
    OpShape("sigmoid", (3, 5, 7)),
    OpShape("batch_norm", (4, 3, 5, 6)),
    OpShape("cross_entropy", (16, 10)),
]


@pytest.mark.parametrize("direction", ["fwd", "bwd"])
@pytest.mark.parametrize("case", OP_CASES, ids=lambda s: f"{s.name}-{s.desc}")
def test_op(benchmark, case, direction):
    a = R._op_inputs(case, np.dtype(np.float32), 0)
    if direction == "bwd":
        R._op_saved(case, a)
    fn = R._pyconv_op_fn(case, direction, a)
    a64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in a.items()}
    ok, err = R.check_close_many(fn(), B.np_op_ref(case, direction, a64), "float32")
    assert ok, f"rel_err {err:.2e}"  # check first, then time
    benchmark.extra_info.update(op=case.name, desc=case.desc, direction=direction,
                                bytes=case.bytes(direction, 4))
    benchmark.pedantic(fn, **ROUNDS)


def test_op_suite_keys_and_bytes():
    """Every ops row has its own JSON key, and the byte model counts what it says."""
    for quick in (True, False):
        keys = [f"{s.name}:{s.desc}" for s in ops_suite(quick)]
        assert len(keys) == len(set(keys))
    relu = OpShape("relu", (1000,))
    assert relu.bytes("fwd", 4) == 2 * 1000 * 4 and relu.bytes("bwd", 4) == 3 * 1000 * 4
    mp = OpShape("max_pool2d", (64, 64, 32, 32), 2, 2)
    n, m = 64 * 64 * 32 * 32, 64 * 64 * 16 * 16
    assert mp.y_shape == (64, 64, 16, 16) and mp.desc == "mb64ic64ih32kh2sh2"
    assert mp.bytes("fwd", 4) == n * 4 + m * 4 + m * 8


def test_readme_tables_and_chart_render(tmp_path):
    """bench/make_table.py renders every table and the bar chart from the
    committed results (matplotlib is a test extra)."""
    import importlib.util
    import pathlib
    import subprocess
    import sys

    here = pathlib.Path(__file__).parent
    script, res = here / "make_table.py", here / "results" / "bench-2026-11-29.json"
    assert importlib.util.find_spec("matplotlib") is not None
    for extra in ([], ["--threads", "2"], ["--gemm"], ["--ops"], ["--scaling"], ["--scaling", "all"]):
        out = subprocess.run([sys.executable, str(script), str(res), *extra], check=True,
                             capture_output=True, text=True).stdout
        assert out.count("\n|") >= 5, extra
        if extra[:1] == ["--scaling"]:
            assert "geometric mean speed-up 1 -> 2 threads" in out
    png = tmp_path / "chart.png"
    subprocess.run([sys.executable, str(script), str(res), "--chart", str(png)], check=True,
                   capture_output=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
