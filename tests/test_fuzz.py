"""Fuzzing the functional API: random valid AND invalid argument sets, run in a child process.

Each hypothesis example is a batch of cases (an op name, its shapes and
arguments, a seed), drawn here in the parent. The batch is sent as JSON to a
long-lived worker process that builds the arrays, calls pyconv and, when the
call succeeds, the float64 reference from ``pyconv.testing`` and reports one
JSON outcome per case. A crash (segfault, abort) or a hang only kills the
worker: the case is reported as such, the worker is restarted, and the test
fails with that case instead of taking pytest down.

The parent decides independently whether each case is valid (PyTorch's rules,
written out below, not pyconv's code):

* valid   -> the call must succeed and match the reference;
* invalid -> the call must raise ValueError or TypeError.

Anything else (a crash, a hang, another exception type, a wrong answer, or an
accepted invalid call) fails. Deterministic: ``derandomize=True``, no database.

Known bugs (see tests/test_hostile.py, each an xfail there) are kept out of the
drawn space so that they do not mask everything else: constant padding of an
input with an empty last axis (uninitialised output), linear with
in_features=0 and linear_backward with out_features=0, gemm's float16 result
when it is empty, out= aliasing in gemm, and huge ints (>= 2**30).
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------------------
# the worker (child process)
# ---------------------------------------------------------------------------
_WORKER = r'''
import json, os, resource, sys, warnings
if not os.environ.get("PYCONV_SANITIZED"):  # ASan reserves terabytes of address space
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file
import numpy as np
import pyconv
from pyconv.testing import reference as RC, reference_ops as RO, reference_extra as RX

warnings.simplefilter("ignore")
np.seterr(all="ignore")
F = lambda a: None if a is None else np.asarray(a, np.float64)
TOL = {"float64": 1e-9, "float32": 3e-4, "float16": 3e-2, "int64": 1e-9}


def arr(rng, shape, dt, scale=2.0):
    a = rng.standard_normal(shape) * scale
    if dt == "int64":
        a = np.round(a)
    return a.astype(dt)


def layout(a, how):
    """The same values in a different memory layout."""
    if a.ndim == 0:
        return a
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negstride" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a


# --- runners: (params, rng) -> (pyconv result, thunk giving the reference) ----------
def run_conv(p, rng):
    dt = p["dtype"]
    x, w = arr(rng, p["x"], dt), arr(rng, p["w"], dt)
    b = arr(rng, (p["w"][0],), dt) if p["bias"] else None
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"])
    mode = p["mode"]
    if p["which"] == "fwd":
        got = pyconv.conv2d(layout(x, p["layout"]), w, b, padding_mode=mode, **kw)
        return got, lambda: RX.conv2d_mode_ref(F(x), F(w), F(b), padding_mode=mode, **kw)
    dy = arr(rng, p["dy"], dt)
    ref = lambda: RX.conv2d_mode_backward_ref(F(dy), F(x), F(w), padding_mode=mode, **kw)
    if p["which"] == "bwd":
        mask = p["mask"]
        got = pyconv.conv2d_backward(dy, x, layout(w, p["layout"]), output_mask=mask, padding_mode=mode, **kw)
        return got, lambda: tuple(r if m else None for r, m in zip(ref(), mask))
    if p["which"] == "input":
        return pyconv.conv2d_input(p["x"], w, dy, padding_mode=mode, **kw), lambda: ref()[0]
    return pyconv.conv2d_weight(x, p["w"], dy, padding_mode=mode, **kw), lambda: ref()[1]


def run_pool(p, rng):
    dt, kind = p["dtype"], p["kind"]
    x = arr(rng, p["x"], dt)
    if kind == "max":
        kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], ceil_mode=p["ceil"])
        if p["which"] == "fwd":
            got = pyconv.max_pool2d(layout(x, p["layout"]), p["kernel"], return_indices=True, **kw)
            def ref():
                y, idx = RO.max_pool2d_ref(F(x), p["kernel"], **kw)
                # windows with no tap inside the input are undefined (see reference_ops): mask them
                return y, np.where(idx < 0, got[1], idx)
            return got, ref
        y, idx = RO.max_pool2d_ref(F(x), p["kernel"], **kw)
        idx = np.where(idx < 0, 0, idx)
        if p["bad_index"] is not None:
            idx.reshape(-1)[0] = p["bad_index"]
        dy = arr(rng, y.shape, dt)
        got = pyconv.max_pool2d_backward(dy, idx, p["x"])
        return got, lambda: RO.max_pool_backward_indices_ref(F(dy), idx, p["x"])
    kw = dict(stride=p["stride"], padding=p["padding"], ceil_mode=p["ceil"],
              count_include_pad=p["cip"], divisor_override=p["dov"])
    if p["which"] == "fwd":
        got = pyconv.avg_pool2d(layout(x, p["layout"]), p["kernel"], **kw)
        return got, lambda: RO.avg_pool2d_ref(F(x), p["kernel"], **kw)
    dy = arr(rng, p["dy"], dt)
    got = pyconv.avg_pool2d_backward(dy, p["x"], p["kernel"], **kw)
    return got, lambda: RO.avg_pool2d_backward_ref(F(dy), p["x"], p["kernel"], **kw)


def run_adaptive(p, rng):
    dt = p["dtype"]
    x = arr(rng, p["x"], dt)
    os_ = p["out"]
    if p["kind"] == "avg":
        if p["which"] == "fwd":
            return pyconv.adaptive_avg_pool2d(layout(x, p["layout"]), os_), lambda: RO.adaptive_avg_pool2d_ref(F(x), os_)
        dy = arr(rng, p["dy"], dt)
        return (pyconv.adaptive_avg_pool2d_backward(dy, p["x"]),
                lambda: RO.adaptive_avg_pool2d_backward_ref(F(dy), p["x"]))
    if p["which"] == "fwd":
        return pyconv.adaptive_max_pool2d(x, os_, return_indices=True), lambda: RO.adaptive_max_pool2d_ref(F(x), os_)
    y, idx = RO.adaptive_max_pool2d_ref(F(x), os_)
    dy = arr(rng, y.shape, dt)
    return (pyconv.adaptive_max_pool2d_backward(dy, idx, p["x"]),
            lambda: RO.max_pool_backward_indices_ref(F(dy), idx, p["x"]))


def run_act(p, rng):
    dt, act = p["dtype"], p["act"]
    x = arr(rng, p["x"], dt, 3.0)
    kw = dict(p["kw"])
    name = act
    if act == "gelu_tanh":
        name, kw["approximate"] = "gelu", p["approx"]
    f, rf = getattr(pyconv, name), getattr(RO, name + "_ref")
    if p["which"] == "fwd":
        return f(layout(x, p["layout"]), **kw), lambda: rf(F(x), **kw)
    fb, rb = getattr(pyconv, name + "_backward"), getattr(RO, name + "_backward_ref")
    dy = arr(rng, p["dy"], dt)
    saved = x
    if act in ("sigmoid", "tanh"):  # these take the forward OUTPUT
        saved = rf(F(x)).astype(dt) if dt != "int64" else rf(F(x))
    return fb(dy, saved, **kw), lambda: rb(F(dy), F(saved), **kw)


def run_softmax(p, rng):
    dt, op = p["dtype"], p["op"]
    x = arr(rng, p["x"], dt, 3.0)
    if op in ("softmax", "log_softmax"):
        f, rf = getattr(pyconv, op), getattr(RO, op + "_ref")
        if p["which"] == "fwd":
            return f(layout(x, p["layout"]), p["axis"]), lambda: rf(F(x), p["axis"])
        try:
            y = rf(F(x), p["axis"]).astype(np.float64 if dt == "int64" else dt)
        except Exception:  # invalid axis: any array of the right shape will do
            y = x
        dy = arr(rng, p["dy"], dt)
        fb, rb = getattr(pyconv, op + "_backward"), getattr(RO, op + "_backward_ref")
        return fb(dy, y, p["axis"]), lambda: rb(F(dy), F(y), p["axis"])
    if p["which"] == "fwd":
        return pyconv.maxout(layout(x, p["layout"]), p["pieces"], p["axis"]), lambda: RO.maxout_ref(F(x), p["pieces"], p["axis"])
    dy = arr(rng, p["dy"], dt)
    return (pyconv.maxout_backward(dy, x, p["pieces"], p["axis"]),
            lambda: RO.maxout_backward_ref(F(dy), F(x), p["pieces"], p["axis"]))


def run_loss(p, rng):
    dt, op, red = p["dtype"], p["op"], p["reduction"]
    x = arr(rng, p["x"], dt)
    if op == "mse":
        t = arr(rng, p["t"], dt)
        if p["which"] == "fwd":
            if red == "mean" and x.size == 0:  # torch: the mean of nothing is nan
                return pyconv.mse_loss(x, t, red), lambda: np.float64("nan")
            return pyconv.mse_loss(layout(x, p["layout"]), t, red), lambda: RO.mse_loss_ref(F(x), F(t), red)
        g = arr(rng, p["g"], dt)
        return pyconv.mse_loss_backward(g, x, t, red), lambda: RO.mse_loss_backward_ref(F(g), F(x), F(t), red)
    if p["target"] == "prob":
        t = RO.softmax_ref(rng.standard_normal(p["t"]), -1).astype(np.float64 if dt == "int64" else dt)
        tr = F(t)
    else:
        t = np.asarray(p["t"], p["tdtype"])
        tr = t.astype(np.int64)
    if op == "nll":
        x = RO.log_softmax_ref(F(x), 1).astype(np.float64 if dt == "int64" else dt) if x.size else x
    if p["which"] == "fwd":
        if red == "mean" and x.shape[0] == 0 and x.ndim == 2 and x.shape[1] > 0:  # torch: nan
            f = pyconv.cross_entropy if op == "ce" else pyconv.nll_loss
            args = (p["ls"],) if op == "ce" else ()
            return f(x, t, red, *args), lambda: np.float64("nan")
        if op == "ce":
            return (pyconv.cross_entropy(layout(x, p["layout"]), t, red, p["ls"]),
                    lambda: RO.cross_entropy_ref(F(x), tr, red, p["ls"]))
        return pyconv.nll_loss(x, t, red), lambda: RO.nll_loss_ref(F(x), tr, red)
    g = arr(rng, p["g"], dt)
    if op == "ce":
        return (pyconv.cross_entropy_backward(g, x, t, red, p["ls"]),
                lambda: RO.cross_entropy_backward_ref(F(g), F(x), tr, red, p["ls"]))
    return pyconv.nll_loss_backward(g, x, t, red), lambda: RO.nll_loss_backward_ref(F(g), F(x), tr, red)


def run_pad(p, rng):
    dt = p["dtype"]
    x = arr(rng, p["x"], dt)
    if p["which"] == "fwd":
        return (pyconv.pad(layout(x, p["layout"]), p["padding"], p["mode"], p["value"]),
                lambda: RX.pad_ref(F(x), p["padding"], p["mode"], p["value"]))
    dy = arr(rng, p["dy"], dt)
    return (pyconv.pad_backward(dy, p["x"], p["padding"], p["mode"]),
            lambda: RX.pad_backward_ref(F(dy), p["x"], p["padding"], p["mode"]))


def run_linear(p, rng):
    dt = p["dtype"]
    x, w = arr(rng, p["x"], dt), arr(rng, p["w"], dt)
    b = arr(rng, p["b"], dt) if p["b"] is not None else None
    if p["which"] == "fwd":
        return pyconv.linear(layout(x, p["layout"]), w, b), lambda: RX.linear_ref(F(x), F(w), F(b))
    dy = arr(rng, p["dy"], dt)
    got = pyconv.linear_backward(dy, x, layout(w, p["layout"]), output_mask=p["mask"])
    return got, lambda: tuple(r if m else None for r, m in zip(RX.linear_backward_ref(F(dy), F(x), F(w)), p["mask"]))


def run_bn(p, rng):
    dt = p["dtype"]
    x = arr(rng, p["x"], dt) + 1.0
    C = p["x"][1] if len(p["x"]) > 1 else 0
    vdt = np.float64 if dt == "int64" else dt  # per-channel vectors in the input's dtype
    wt = rng.standard_normal(C).astype(vdt) if p["affine"] else None
    bs = rng.standard_normal(C).astype(vdt) if p["affine"] else None
    if p["which"] == "fwd":
        rm = rng.standard_normal(C).astype(vdt) if p["stats"] else None
        rv = (rng.random(C) + 0.5).astype(vdt) if p["stats"] else None
        rm0, rv0 = (None if rm is None else rm.copy()), (None if rv is None else rv.copy())
        y = pyconv.batch_norm(layout(x, p["layout"]), rm, rv, wt, bs, p["training"], p["momentum"], p["eps"])
        def ref():
            r = RX.batch_norm_ref(F(x), F(rm0), F(rv0), F(wt), F(bs), p["training"], p["momentum"], p["eps"])
            return (r[0],) + ((r[3], r[4]) if p["stats"] else ())
        return ((y,) + ((rm, rv) if p["stats"] else ())), ref
    _, mean, invstd, _, _ = RX.batch_norm_ref(F(x), None, None, training=True, eps=p["eps"])
    mean, invstd = mean.astype(vdt), invstd.astype(vdt)
    dy = arr(rng, p["dy"], dt)
    got = pyconv.batch_norm_backward(dy, x, wt, mean, invstd, p["training"])
    return got, lambda: RX.batch_norm_backward_ref(F(dy), F(x), F(wt), F(mean), F(invstd), p["training"])


def run_gemm(p, rng):
    dt = p["dtype"]
    a, b = arr(rng, p["a"], dt), arr(rng, p["b"], dt)
    if p["ta"]:
        a = np.ascontiguousarray(a.T).T
    if p["nb"] and b.ndim == 2:
        b = np.ascontiguousarray(b[::-1, ::-1])[::-1, ::-1]
    if p["out"] is None:
        return pyconv.gemm(a, b, beta=p["beta"]), lambda: F(a) @ F(b)
    cdt = np.float64 if dt in ("int64", "float64") else np.float32
    out = rng.standard_normal(p["out"]).astype(cdt)
    c0 = out.copy()
    res = pyconv.gemm(a, b, out=out, beta=p["beta"])
    assert res is out, "gemm(out=...) must return out"
    return res, lambda: F(a) @ F(b) + p["beta"] * F(c0)


def run_crash(p, rng):  # harness self-test only
    import ctypes
    ctypes.string_at(0)


RUNNERS = {"__crash__": run_crash, "conv": run_conv, "pool": run_pool, "adaptive": run_adaptive, "act": run_act,
           "softmax": run_softmax, "loss": run_loss, "pad": run_pad, "linear": run_linear,
           "bn": run_bn, "gemm": run_gemm}


def flat(r):
    if isinstance(r, (tuple, list)):
        out = []
        for v in r:
            out.extend(flat(v))
        return out
    return [None if r is None else np.asarray(r)]


def compare(got, want, dt):
    g, w = flat(got), flat(want)
    if len(g) != len(w):
        return f"{len(g)} outputs, reference has {len(w)}"
    for i, (a, b) in enumerate(zip(g, w)):
        if a is None or b is None:
            if not (a is None and b is None):
                return f"output {i}: None vs array"
            continue
        if a.shape != b.shape:
            return f"output {i}: shape {a.shape}, reference {b.shape}"
        if a.dtype.kind in "iu":
            if not np.array_equal(a, b):
                return f"output {i}: integer outputs differ"
            continue
        want_dt = {"float16": np.float16, "float32": np.float32}.get(dt, np.float64)
        if a.dtype != want_dt:
            return f"output {i}: dtype {a.dtype}, expected {np.dtype(want_dt)}"
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.array_equal(np.isnan(a64), np.isnan(b64)) or not np.array_equal(np.isinf(a64), np.isinf(b64)):
            return f"output {i}: NaN/inf pattern differs"
        fin = np.isfinite(b64)
        if fin.any():
            scale = np.abs(b64[fin]).max() + 1.0
            err = np.abs(a64[fin] - b64[fin]).max() / scale
            if err > TOL[dt]:
                return f"output {i}: scaled error {err:.3g} > {TOL[dt]}"
        if not np.array_equal(a64[~fin], b64[~fin]) and not np.isnan(b64[~fin]).all():
            return f"output {i}: infinities differ"
    return None


for line in sys.stdin:
    for case in json.loads(line):
        print(json.dumps({"start": case["id"]}), flush=True)
        out = {"id": case["id"]}
        try:
            got, ref = RUNNERS[case["fam"]](case["p"], np.random.default_rng(case["seed"]))
        except Exception as e:
            out.update(status="raise", type=type(e).__name__, msg=str(e)[:300])
        else:
            try:
                want = ref()
            except Exception as e:
                # some references cannot handle empty arrays: then only an empty result can pass
                if all(g is not None and g.size == 0 for g in flat(got)):
                    out.update(status="ok", mismatch=None)
                else:
                    out.update(status="ok", mismatch=f"reference failed: {type(e).__name__}: {e}"[:300])
            else:
                out.update(status="ok", mismatch=compare(got, want, case["p"]["dtype"]))
        print(json.dumps(out), flush=True)
    print(json.dumps({"done": True}), flush=True)
'''


class Worker:
    """A long-lived child running batches of cases; restarted after a crash or hang."""

    CASE_TIMEOUT = 30.0

    def __init__(self):
        self.proc = None

    def _start(self):
        env = dict(os.environ, OMP_NUM_THREADS="2")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd="/", bufsize=1)
        self.lines = queue.Queue()
        proc = self.proc

        def pump():
            for ln in proc.stdout:
                self.lines.put(ln)
            self.lines.put(None)  # EOF: the child is gone

        threading.Thread(target=pump, daemon=True).start()

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, cases):
        """{id: outcome} for the cases; outcome status: ok / raise / crash / timeout."""
        results, todo = {}, list(cases)
        while todo:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            self.proc.stdin.write(json.dumps(todo) + "\n")
            self.proc.stdin.flush()
            current = None
            while True:
                try:
                    ln = self.lines.get(timeout=self.CASE_TIMEOUT)
                except queue.Empty:
                    ln = "TIMEOUT"
                if ln is None or ln == "TIMEOUT":
                    hang = ln == "TIMEOUT"
                    if hang:
                        self.proc.kill()
                    rc = self.proc.wait()
                    err = self._stderr()
                    self.proc = None
                    if current is None:
                        raise RuntimeError(f"fuzz worker died outside a case (rc={rc}): {err}")
                    results[current] = {"status": "timeout" if hang else "crash", "rc": rc, "stderr": err}
                    break
                msg = json.loads(ln)
                if "start" in msg:
                    current = msg["start"]
                elif "done" in msg:
                    break
                else:
                    results[msg["id"]] = msg
                    current = None
            todo = [c for c in todo if c["id"] not in results]
        return results

    def _stderr(self):
        try:
            return self.proc.stderr.read()[-1500:] if self.proc.poll() is not None else ""
        except Exception:  # pragma: no cover
            return ""


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def check_batch(worker, fam, batch):
    """Run a batch; assert valid <=> success-and-correct, invalid <=> ValueError/TypeError.

    valid=None: either outcome is acceptable (a correct result or a clean error).
    """
    cases = [{"id": i, "fam": fam, "p": p, "seed": 1000 + i} for i, (p, _) in enumerate(batch)]
    res = worker.run(cases)
    problems = []
    for c, (p, valid) in zip(cases, batch):
        r = res[c["id"]]
        where = f"{fam} {json.dumps(p)}"
        if r["status"] in ("crash", "timeout"):
            problems.append(f"{r['status'].upper()} (rc={r.get('rc')}): {where}\n{r.get('stderr', '')[-600:]}")
        elif valid is None:
            if r["status"] == "ok" and r.get("mismatch"):
                problems.append(f"WRONG ANSWER: {r['mismatch']}\n  {where}")
            elif r["status"] == "raise" and r["type"] not in ("ValueError", "TypeError"):
                problems.append(f"raised {r['type']} (want ValueError/TypeError): {r['msg']}\n  {where}")
        elif valid and r["status"] == "raise":
            problems.append(f"valid call raised {r['type']}: {r['msg']}\n  {where}")
        elif valid and r.get("mismatch"):
            problems.append(f"WRONG ANSWER: {r['mismatch']}\n  {where}")
        elif not valid and r["status"] == "ok":
            problems.append(f"invalid call accepted\n  {where}")
        elif not valid and r["type"] not in ("ValueError", "TypeError"):
            problems.append(f"invalid call raised {r['type']} (want ValueError/TypeError): {r['msg']}\n  {where}")
    assert not problems, "\n".join(problems[:5])


FUZZ = settings(max_examples=30, derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
BATCH = 24

# ---------------------------------------------------------------------------
# shared strategies and rules
# ---------------------------------------------------------------------------
DTYPES = st.sampled_from(["float64"] * 4 + ["float32"] * 3 + ["float16", "int64"])
LAYOUTS = st.sampled_from(["c"] * 3 + ["fortran", "negstride", "strided"])
BAD_INTS = [0, -1, 2.0, 1.5, True, None, "1", -3]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def as_pair(v):
    """(a, b) for an int or a 2-list of ints, else None (a type error)."""
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == 2 and all(is_int(t) for t in v) else None
    return (v, v) if is_int(v) else None


def maybe_bad(good, bad, p=0.1):
    """good most of the time, one of bad otherwise (hypothesis still explores both)."""
    bad = bad if isinstance(bad, st.SearchStrategy) else st.sampled_from(bad)
    return st.integers(0, 99).flatmap(lambda r: bad if r < 100 * p else good)


def int_or_pair(lo, hi, bad=BAD_INTS, p_bad=0.06):
    """An int or a pair of ints in [lo, hi]; with probability p_bad a bad value or pair."""
    good = st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.lists(st.integers(lo, hi), min_size=2, max_size=2))
    badv = st.one_of(st.sampled_from(bad), st.lists(st.sampled_from([1, 2] + bad), min_size=1, max_size=3))
    return maybe_bad(good, badv, p_bad)


# ---------------------------------------------------------------------------
# conv2d / conv2d_backward / conv2d_input / conv2d_weight
# ---------------------------------------------------------------------------
@st.composite
def conv_case(draw):
    G = draw(st.sampled_from([1, 1, 2, 3]))
    Cg, OCg = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    N = draw(st.integers(0, 2))
    C = G * Cg if draw(st.integers(0, 19)) else draw(st.integers(0, 5))
    Cw = Cg if draw(st.integers(0, 19)) else draw(st.integers(1, 4))
    OC = G * OCg if draw(st.integers(0, 19)) else draw(st.integers(1, 5))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    if not draw(st.integers(0, 24)):
        H = draw(st.sampled_from([0, 1]))
    p = dict(x=[N, C, H, W], w=[OC, Cw, KH, KW], bias=draw(st.booleans()), dtype=draw(DTYPES),
             stride=draw(int_or_pair(1, 3)), dilation=draw(maybe_bad(st.just(1), int_or_pair(1, 2), 0.4)),
             groups=draw(maybe_bad(st.just(G), [0, -1, 2.0, True, None, G + 1], 0.06)),
             padding=draw(maybe_bad(int_or_pair(0, 2, [-1, 1.5, None, True]),
                                    st.sampled_from(["same", "same", "valid", "full", "SAME"]), 0.2)),
             mode=draw(st.sampled_from(["zeros"] * 8 + ["reflect", "replicate", "circular", "zero"])),
             which=draw(st.sampled_from(["fwd", "fwd", "bwd", "input", "weight"])),
             mask=draw(st.lists(st.booleans(), min_size=3, max_size=3)), layout=draw(LAYOUTS))
    out = conv_out(p)
    p["dy"] = list(out) if out is not None else [N, OC, 1, 1]
    if p["which"] != "fwd" and out is not None and not draw(st.integers(0, 14)):
        p["dy"][3] += 1  # wrong grad_output shape
    valid = out is not None and (p["which"] == "fwd" or p["dy"] == list(out))
    return p, valid


def conv_out(p):
    """torch.nn.functional.conv2d's output shape, or None if the call is invalid."""
    N, C, H, W = p["x"]
    OC, Cw, KH, KW = p["w"]
    s, d, g = as_pair(p["stride"]), as_pair(p["dilation"]), p["groups"]
    if s is None or d is None or not is_int(g) or min(s) < 1 or min(d) < 1 or g < 1:
        return None
    if min(C, H, W) < 1 or C % g or OC % g or Cw * g != C:
        return None
    pad = p["padding"]
    if isinstance(pad, str):
        if pad == "valid":
            pt = pb = pl = pr = 0
        elif pad == "same" and s == (1, 1):
            th, tw = d[0] * (KH - 1), d[1] * (KW - 1)
            pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
        else:
            return None
    else:
        pp = as_pair(pad)
        if pp is None or min(pp) < 0:
            return None
        pt, pb, pl, pr = pp[0], pp[0], pp[1], pp[1]
    mode = p["mode"]
    if mode not in ("zeros", "reflect", "replicate", "circular"):
        return None
    if mode == "reflect" and (max(pt, pb) >= H or max(pl, pr) >= W):
        return None
    if mode == "circular" and (max(pt, pb) > H or max(pl, pr) > W):
        return None
    ekh, ekw = d[0] * (KH - 1) + 1, d[1] * (KW - 1) + 1
    Hp, Wp = H + pt + pb, W + pl + pr
    if Hp < ekh or Wp < ekw:
        return None
    return (N, OC, (Hp - ekh) // s[0] + 1, (Wp - ekw) // s[1] + 1)


@FUZZ
@given(st.lists(conv_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_conv2d(worker, batch):
    check_batch(worker, "conv", batch)


# ---------------------------------------------------------------------------
# max / avg pooling (+ backward), adaptive pooling (+ backward)
# ---------------------------------------------------------------------------
def pool_out(p):
    N, C, H, W = p["x"]
    k = as_pair(p["kernel"])
    st_ = p["stride"]
    s = k if st_ is None or st_ == [] else as_pair(st_)
    pd, d = as_pair(p["padding"]), as_pair(p.get("dilation", 1))
    if None in (k, s, pd, d) or min(k) < 1 or min(s) < 1 or min(d) < 1 or min(pd) < 0:
        return None
    if 2 * pd[0] > k[0] or 2 * pd[1] > k[1] or H < 1 or W < 1:
        return None
    if not isinstance(p["ceil"], bool):
        return None
    if p["kind"] == "avg":
        dov = p["dov"]
        if dov is not None and (not is_int(dov) or dov < 1):
            return None
    outs = []
    for size, kk, ss, pp, dd in ((H, k[0], s[0], pd[0], d[0]), (W, k[1], s[1], pd[1], d[1])):
        span = size + 2 * pp - dd * (kk - 1) - 1
        o = (span + (ss - 1 if p["ceil"] else 0)) // ss + 1
        if p["ceil"] and (o - 1) * ss >= size + pp:  # PyTorch: the last window starts inside
            o -= 1
        if o < 1:
            return None
        outs.append(o)
    return (N, C, outs[0], outs[1])


@st.composite
def pool_case(draw):
    kind = draw(st.sampled_from(["max", "avg"]))
    N, C = draw(st.integers(0, 2)), draw(st.integers(0, 3))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    if not draw(st.integers(0, 24)):
        W = 0
    k = draw(st.integers(1, 4))
    p = dict(kind=kind, x=[N, C, H, W], dtype=draw(DTYPES), layout=draw(LAYOUTS),
             kernel=draw(maybe_bad(st.just(k), int_or_pair(1, 4), 0.3)),
             stride=draw(st.one_of(st.none(), int_or_pair(1, 3))),
             padding=draw(maybe_bad(st.integers(0, k // 2), int_or_pair(0, 2, [-1, 1.5, None]), 0.3)),
             ceil=draw(st.booleans()),
             dilation=draw(maybe_bad(st.just(1), int_or_pair(1, 2), 0.4)) if kind == "max" else 1,
             which=draw(st.sampled_from(["fwd", "fwd", "bwd"])))
    if kind == "avg":
        p["cip"] = draw(st.booleans())
        p["dov"] = draw(st.one_of(st.none(), st.none(), st.integers(1, 5), st.sampled_from([0, -2, 2.0, True])))
    out = pool_out(p)
    valid = out is not None
    p["bad_index"] = None
    if kind == "max" and p["which"] == "bwd":
        if valid:  # indices from the forward; sometimes one made out of range
            bad = draw(maybe_bad(st.none(), [-1, H * W, H * W + 7, -(2**40)], 0.2))
            p["bad_index"] = None if N * C == 0 else bad
            valid = p["bad_index"] is None
        else:
            p["which"] = "fwd"  # the backward takes no window arguments
    if kind == "avg":
        p["dy"] = list(out) if out is not None else [N, C, 1, 1]
        if p["which"] == "bwd" and out is not None and not draw(st.integers(0, 14)):
            p["dy"][2] += 1
            valid = False
    return p, valid


@FUZZ
@given(st.lists(pool_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_pool2d(worker, batch):
    check_batch(worker, "pool", batch)


@st.composite
def adaptive_case(draw):
    N, C = draw(st.integers(0, 2)), draw(st.integers(0, 3))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    if not draw(st.integers(0, 24)):
        H = 0
    out = draw(st.one_of(st.integers(1, 8), st.lists(st.one_of(st.none(), st.integers(1, 8)), min_size=2, max_size=2),
                         st.sampled_from([0, -1, 2.0, True, "2", [1, 2, 3], [0, 2]])))
    p = dict(kind=draw(st.sampled_from(["avg", "max"])), x=[N, C, H, W], out=out, dtype=draw(DTYPES),
             layout=draw(LAYOUTS), which=draw(st.sampled_from(["fwd", "bwd"])))
    if isinstance(out, list):
        ok = len(out) == 2 and all(o is None or (is_int(o) and o >= 1) for o in out)
        oh, ow = (H if ok and out[0] is None else (out[0] if ok else 0)), (W if ok and out[1] is None else (out[1] if ok else 0))
    else:
        ok = is_int(out) and out >= 1
        oh = ow = out if ok else 0
    valid = ok and H >= 1 and W >= 1
    if p["kind"] == "max" and p["which"] == "bwd" and not valid:
        p["which"] = "fwd"
    p["dy"] = [N, C, oh, ow] if valid else [N, C, 1, 1]
    if p["kind"] == "avg" and p["which"] == "bwd":
        if valid and not draw(st.integers(0, 9)):
            p["dy"] = [N, C + 1, oh, ow]
            valid = False
        elif not valid:  # the backward only sees dy and input_shape
            # an empty input plane: an empty gradient or a clean error are both fine
            valid = True if H >= 1 and W >= 1 else None
    return p, valid


@FUZZ
@given(st.lists(adaptive_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_adaptive_pool2d(worker, batch):
    check_batch(worker, "adaptive", batch)


# ---------------------------------------------------------------------------
# activations, softmax / log_softmax, maxout
# ---------------------------------------------------------------------------
SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=4)


@st.composite
def act_case(draw):
    act = draw(st.sampled_from(["relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh"]))
    shape = draw(SHAPES)
    kw, valid = {}, True
    if act in ("leaky_relu", "elu"):
        name = "negative_slope" if act == "leaky_relu" else "alpha"
        v = draw(st.one_of(st.floats(-3, 3), st.integers(-2, 2), st.sampled_from([None, "0.1", True, [0.1]])))
        kw[name] = v
        valid = isinstance(v, (int, float)) and not isinstance(v, bool)
    approx = draw(maybe_bad(st.sampled_from(["none", "tanh"]), ["fast", None, "TANH"], 0.1))
    if act == "gelu_tanh":
        valid = approx in ("none", "tanh")
    p = dict(act=act, x=shape, kw=kw, approx=approx, dtype=draw(DTYPES), layout=draw(LAYOUTS),
             which=draw(st.sampled_from(["fwd", "bwd"])), dy=list(shape))
    if p["which"] == "bwd" and not draw(st.integers(0, 9)):
        p["dy"] = shape + [1]
        valid = False
    return p, valid


@FUZZ
@given(st.lists(act_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_activations(worker, batch):
    check_batch(worker, "act", batch)


@st.composite
def softmax_case(draw):
    op = draw(st.sampled_from(["softmax", "log_softmax", "maxout"]))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)) if draw(st.integers(0, 19)) else []
    nd = len(shape)
    axis = draw(maybe_bad(st.integers(-nd, nd - 1) if nd else st.just(0),
                          st.one_of(st.integers(-nd - 1, nd), st.sampled_from([1.0, None, True])), 0.15))
    ax_ok = is_int(axis) and -nd <= axis < nd
    p = dict(op=op, x=shape, axis=axis, dtype=draw(DTYPES), layout=draw(LAYOUTS),
             which=draw(st.sampled_from(["fwd", "bwd"])))
    valid = ax_ok
    out = list(shape)
    if op == "maxout":
        dim = shape[axis] if ax_ok else 1
        pieces = draw(maybe_bad(st.sampled_from([d for d in range(1, 5) if dim % d == 0]),
                                st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 2.0, True])), 0.2))
        p["pieces"] = pieces
        valid = ax_ok and is_int(pieces) and pieces >= 1 and shape[axis] % pieces == 0
        if valid:
            out[axis] //= pieces
    p["dy"] = out
    if p["which"] == "bwd" and valid and not draw(st.integers(0, 9)):
        p["dy"] = out + [2]
        valid = False
    return p, valid


@FUZZ
@given(st.lists(softmax_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_softmax_maxout(worker, batch):
    check_batch(worker, "softmax", batch)


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------
REDUCTIONS = st.sampled_from(["mean", "sum", "none", "mean", "avg", None])


@st.composite
def loss_case(draw):
    op = draw(st.sampled_from(["ce", "ce", "nll", "mse"]))
    red = draw(REDUCTIONS)
    valid = red in ("mean", "sum", "none")
    p = dict(op=op, reduction=red, dtype=draw(DTYPES), layout=draw(LAYOUTS), which=draw(st.sampled_from(["fwd", "bwd"])))
    if op == "mse":
        shape = draw(SHAPES)
        p["x"] = shape
        p["t"] = shape if draw(st.integers(0, 9)) else shape + [1]
        valid = valid and p["t"] == shape
        p["g"] = shape if red == "none" else []
    else:
        N, C = draw(st.integers(0, 4)), draw(st.integers(1, 5))
        if not draw(st.integers(0, 24)):
            C = 0
        p["x"] = [N, C]
        valid = valid and C >= 1
        target = "prob" if op == "ce" and draw(st.booleans()) else "index"
        p["target"] = target
        if target == "prob":
            p["t"] = [N, C] if draw(st.integers(0, 9)) else [N, C + 1]
            valid = valid and p["t"] == [N, C]
        else:
            t = draw(st.lists(st.integers(0, max(C - 1, 0)), min_size=N, max_size=N))
            if t and not draw(st.integers(0, 5)):
                t[draw(st.integers(0, N - 1))] = draw(st.sampled_from([C, -1, -100, C + 3]))
                valid = False
            if not draw(st.integers(0, 14)):
                t = t + [0]
                valid = False
            p["t"] = t
            p["tdtype"] = draw(st.sampled_from(["int64", "int64", "int32", "uint8"]))
            if p["tdtype"] == "uint8" and any(v < 0 for v in t):
                p["tdtype"] = "int64"
        p["ls"] = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0, -0.1, 1.5])) if op == "ce" else 0.0
        valid = valid and 0.0 <= p["ls"] <= 1.0
        p["g"] = [N] if red == "none" else []
    if p["which"] == "bwd" and not draw(st.integers(0, 9)):
        p["g"] = p["g"] + [2]
        valid = False
    return p, valid


@FUZZ
@given(st.lists(loss_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_losses(worker, batch):
    check_batch(worker, "loss", batch)


# ---------------------------------------------------------------------------
# pad, linear, batch norm, gemm
# ---------------------------------------------------------------------------
@st.composite
def pad_case(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=3, max_size=4) if draw(st.integers(0, 3))
                 else st.lists(st.integers(0, 4), min_size=1, max_size=4))
    npad = draw(st.sampled_from([2, 4, 4, 4, 4, 3]))
    padding = draw(st.lists(st.integers(0, 3), min_size=npad, max_size=npad))
    if not draw(st.integers(0, 14)):
        padding[0] = draw(st.sampled_from([-1, 1.0, None, True]))
    mode = draw(st.sampled_from(["constant"] * 3 + ["reflect", "replicate", "circular"] * 2 + ["wrap"]))
    value = draw(st.sampled_from([0.0, 0.0, 1.5])) if mode == "constant" or not draw(st.integers(0, 9)) else 0.0
    p = dict(x=shape, padding=padding, mode=mode, value=value, dtype=draw(DTYPES), layout=draw(LAYOUTS),
             which=draw(st.sampled_from(["fwd", "bwd"])))
    nd = len(shape)
    valid = npad in (2, 4) and all(is_int(v) and v >= 0 for v in padding) and mode != "wrap" and nd >= npad // 2
    if valid:
        l, r = padding[0], padding[1]
        t, b = (padding[2], padding[3]) if npad == 4 else (0, 0)
        W, H = shape[-1], (shape[-2] if nd >= 2 else 1)
        if mode != "constant":
            valid = nd in (3, 4) and (value == 0.0 or p["which"] == "bwd")
            valid = valid and not ((H == 0 or W == 0) and (l or r or t or b))
            if mode == "reflect":
                valid = valid and max(l, r) < W and max(t, b) < H
            if mode == "circular":
                valid = valid and max(l, r) <= W and max(t, b) <= H
        else:
            # KNOWN BUG (test_hostile: pad constant H=0): an empty last axis gives uninitialised output
            pyconv_bug = (W == 0 or (nd >= 2 and H == 0)) and (l + r + t + b) > 0
            if pyconv_bug:
                p["x"][-1] = max(W, 1)
                if nd >= 2:
                    p["x"][-2] = max(p["x"][-2], 1)
        out = list(p["x"])
        out[-1] += l + r
        if nd >= 2:
            out[-2] += t + b
        p["dy"] = out
        if p["which"] == "bwd" and valid and not draw(st.integers(0, 9)):
            p["dy"][-1] += 1
            valid = False
    else:
        p["dy"] = list(shape)
    return p, valid


@FUZZ
@given(st.lists(pad_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_pad(worker, batch):
    check_batch(worker, "pad", batch)


@st.composite
def linear_case(draw):
    batch_dims = draw(st.lists(st.integers(0, 3), min_size=0, max_size=2))
    K = draw(st.integers(1, 4))  # K = 0: KNOWN BUG (test_hostile: linear in_features=0)
    which = draw(st.sampled_from(["fwd", "bwd"]))
    M = draw(st.integers(0 if which == "fwd" else 1, 4))  # backward M = 0: KNOWN BUG (same test)
    Kw = K if draw(st.integers(0, 9)) else K + 1
    b = draw(st.sampled_from([None, [M], [M], [M + 1]]))
    p = dict(x=batch_dims + [K], w=[M, Kw], b=b if which == "fwd" else None, dtype=draw(DTYPES),
             layout=draw(LAYOUTS), which=which, mask=draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    valid = Kw == K and (p["b"] is None or p["b"] == [M])
    p["dy"] = batch_dims + [M]
    if which == "bwd" and not draw(st.integers(0, 9)):
        p["dy"] = batch_dims + [M + 1]
        valid = False
    return p, valid


@FUZZ
@given(st.lists(linear_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_linear(worker, batch):
    check_batch(worker, "linear", batch)


@st.composite
def bn_case(draw):
    N, C = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    rest = draw(st.lists(st.integers(0, 3), min_size=0, max_size=2))
    shape = [N, C] + rest
    if not draw(st.integers(0, 19)):
        shape = shape[:1]
    training = draw(st.booleans())
    p = dict(x=shape, training=training, stats=draw(st.booleans()) if training else draw(maybe_bad(st.just(True), [False], 0.1)),
             affine=draw(st.booleans()), eps=draw(st.sampled_from([1e-5, 1e-3, 0.5, 0.0, -1e-5])),
             momentum=draw(st.sampled_from([0.1, 0.5, 1.0, 0.0])), dtype=draw(DTYPES), layout=draw(LAYOUTS),
             which=draw(st.sampled_from(["fwd", "fwd", "bwd"])), dy=list(shape))
    count = N
    for s in shape[2:]:
        count *= s
    if p["which"] == "bwd" and (len(shape) < 2 or count <= 1 or C == 0 or p["eps"] <= 0):
        p["which"] = "fwd"  # the backward needs statistics from a valid forward
    if p["which"] == "fwd":  # (C = 0 in training: a clean ValueError, the documented choice)
        valid = len(shape) >= 2 and p["eps"] > 0 and (count > 1 and C > 0 if training else p["stats"])
    else:  # the backward takes no eps / running stats: only shapes can be wrong
        valid = True
        if not draw(st.integers(0, 9)):
            p["dy"] = shape + [1]
            valid = False
    return p, valid


@FUZZ
@given(st.lists(bn_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_batch_norm(worker, batch):
    check_batch(worker, "bn", batch)


@st.composite
def gemm_case(draw):
    M, K, N = draw(st.integers(0, 6)), draw(st.integers(0, 6)), draw(st.integers(0, 6))
    Kb = K if draw(st.integers(0, 9)) else K + 1
    a = [M, K] if draw(st.integers(0, 19)) else [M * K]
    out = draw(st.sampled_from([None, None, [M, N], [M, N + 1]]))
    beta = draw(st.sampled_from([0.0, 0.0, 0.5, -1.0]))
    p = dict(a=a, b=[Kb, N], ta=draw(st.booleans()), nb=draw(st.booleans()), out=out, beta=beta, dtype=draw(DTYPES))
    if p["dtype"] == "float16":
        p["out"] = None  # out= must have the compute dtype (float32) for float16 operands: not fuzzed
        if 0 in (M, N):  # KNOWN BUG (test_hostile: gemm float16 empty result is float32)
            M, N = M or 1, N or 1
            p.update(a=[M, K] if len(a) == 2 else [M * K], b=[Kb, N])
    valid = len(a) == 2 and Kb == K and (p["out"] is None and beta == 0.0 or p["out"] == [M, N])
    return p, valid


@FUZZ
@given(st.lists(gemm_case(), min_size=BATCH, max_size=BATCH))
def test_fuzz_gemm(worker, batch):
    check_batch(worker, "gemm", batch)


# ---------------------------------------------------------------------------
# the harness itself
# ---------------------------------------------------------------------------
def test_worker_reports_crash_and_restarts(worker):
    """A segfaulting case is reported as a crash; the batch's other cases still run."""
    good = {"fam": "gemm", "seed": 1,
            "p": dict(a=[2, 3], b=[3, 2], ta=False, nb=False, out=None, beta=0.0, dtype="float64")}
    crash = {"fam": "__crash__", "seed": 1, "p": {"dtype": "float64"}}
    res = worker.run([dict(good, id=0), dict(crash, id=1), dict(good, id=2),
                      dict(good, id=3, p=dict(good["p"], b=[4, 2]))])
    assert res[0]["status"] == "ok" and res[0]["mismatch"] is None
    assert res[1]["status"] == "crash" and res[1]["rc"] != 0
    assert res[2]["status"] == "ok" and res[2]["mismatch"] is None
    assert res[3]["status"] == "raise" and res[3]["type"] == "ValueError"
    # and an invalid case accepted / a wrong answer are reported by check_batch
    with pytest.raises(AssertionError, match="invalid call accepted"):
        check_batch(worker, "gemm", [(good["p"], False)])
