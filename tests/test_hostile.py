"""Hostile input: bad arguments give a clear Python exception, never a crash, hang or wrong answer.

What "clear" means here (README, "Errors"): ValueError or TypeError whose
message names the argument; MemoryError only for sizes that truly cannot be
allocated (and then quickly, without touching terabytes). Every error test
below checks the exception type AND that the message names the argument.

Sections
  1. the op table (every public functional op, its float arguments, a float64 oracle)
  2. zero-size dimensions
  3. huge sizes / huge ints (run in an isolated child: memory limit + watchdog)
  4. NaN / +-inf propagation, denormals
  5. layouts and dtypes (non-contiguous, negative strides, Fortran, read-only,
     big-endian, 0-d, float16, int, bool, object, mixed precision)
  6. pooling indices and class targets
  7. kernel / stride / padding / dilation / groups / ... values and types
  8. odd argument objects (strings for enums, output_mask, input_shape, gemm out/beta)

Known bugs are marked ``xfail(strict=True, reason="BUG: ...")`` so the suite
passes while they exist and flags the day they are fixed.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import pyconv
from pyconv import functional as Fn
from pyconv.testing import reference as RC
from pyconv.testing import reference_extra as RX
from pyconv.testing import reference_ops as RO


def bug(reason):
    return pytest.mark.xfail(strict=True, reason="BUG: " + reason)


def quiet(fn):
    """Report a failure as its message only (no traceback).

    Used on the tests that carry xfail marks: formatting a traceback makes pytest
    re-parse this (long) file, ~0.1 s per entry, which dominated the run time.
    """
    @functools.wraps(fn)
    def wrapper(*a, **k):
        __tracebackhide__ = True
        try:
            return fn(*a, **k)
        except (pytest.skip.Exception, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: B902 - every failure becomes a plain message
            pytest.fail(f"{type(e).__name__}: {e}", pytrace=False)
    return wrapper


# ===========================================================================
# 1. the op table
# ===========================================================================
class Op:
    """One public op: its float array arguments (by the name its errors use),
    how to call it, a float64 reference, and whether it is elementwise."""

    def __init__(self, name, floats, call, ref, elementwise=False):
        self.name, self.floats, self.call, self.ref, self.elementwise = name, floats, call, ref, elementwise

    def __call__(self, **arrays):
        return self.call(**arrays)


def _build_ops():
    r = np.random.default_rng(1234)

    def n(*s):
        return r.standard_normal(s)

    ops = []

    def add(*a, **k):
        ops.append(Op(*a, **k))

    x4, w4, b3 = n(2, 4, 6, 6), n(3, 4, 3, 3), n(3)
    dy4 = n(2, 3, 6, 6)  # conv2d(x4, w4, padding=1)
    add("conv2d", dict(input=x4, weight=w4, bias=b3),
        lambda input, weight, bias: pyconv.conv2d(input, weight, bias, padding=1),
        lambda input, weight, bias: RC.conv2d_ref(input, weight, bias, padding=1))
    add("conv2d_backward", dict(grad_output=dy4, input=x4, weight=w4),
        lambda grad_output, input, weight: pyconv.conv2d_backward(grad_output, input, weight, padding=1),
        lambda grad_output, input, weight: RC.conv2d_backward_ref(grad_output, input, weight, padding=1))
    add("conv2d_input", dict(weight=w4, grad_output=dy4),
        lambda weight, grad_output: pyconv.conv2d_input(x4.shape, weight, grad_output, padding=1),
        lambda weight, grad_output: RC.conv2d_backward_ref(grad_output, np.zeros(x4.shape), weight, padding=1)[0])
    add("conv2d_weight", dict(input=x4, grad_output=dy4),
        lambda input, grad_output: pyconv.conv2d_weight(input, w4.shape, grad_output, padding=1),
        lambda input, grad_output: RC.conv2d_backward_ref(grad_output, input, np.zeros(w4.shape), padding=1)[1])
    add("gemm", dict(a=n(5, 7), b=n(7, 3)),
        lambda a, b: pyconv.gemm(a, b),
        lambda a, b: np.asarray(a, np.float64) @ np.asarray(b, np.float64))

    mp_idx = pyconv.max_pool2d(x4, 3, 2, 1, return_indices=True)[1]
    add("max_pool2d", dict(input=x4),
        lambda input: pyconv.max_pool2d(input, 3, 2, 1, return_indices=True),
        lambda input: RO.max_pool2d_ref(input, 3, 2, 1))
    add("max_pool2d_backward", dict(grad_output=n(2, 4, 3, 3)),
        lambda grad_output: pyconv.max_pool2d_backward(grad_output, mp_idx, x4.shape),
        lambda grad_output: RO.max_pool_backward_indices_ref(grad_output, mp_idx, x4.shape))
    add("avg_pool2d", dict(input=x4),
        lambda input: pyconv.avg_pool2d(input, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda input: RO.avg_pool2d_ref(input, 3, 2, 1, ceil_mode=True, count_include_pad=False))
    add("avg_pool2d_backward", dict(grad_output=n(2, 4, 3, 3)),
        lambda grad_output: pyconv.avg_pool2d_backward(grad_output, x4.shape, 3, 2, 1),
        lambda grad_output: RO.avg_pool2d_backward_ref(grad_output, x4.shape, 3, 2, 1))
    add("adaptive_avg_pool2d", dict(input=x4),
        lambda input: pyconv.adaptive_avg_pool2d(input, (4, 5)),
        lambda input: RO.adaptive_avg_pool2d_ref(input, (4, 5)))
    add("adaptive_avg_pool2d_backward", dict(grad_output=n(2, 4, 4, 5)),
        lambda grad_output: pyconv.adaptive_avg_pool2d_backward(grad_output, x4.shape),
        lambda grad_output: RO.adaptive_avg_pool2d_backward_ref(grad_output, x4.shape))
    am_idx = pyconv.adaptive_max_pool2d(x4, (4, 5), return_indices=True)[1]
    add("adaptive_max_pool2d", dict(input=x4),
        lambda input: pyconv.adaptive_max_pool2d(input, (4, 5), return_indices=True),
        lambda input: RO.adaptive_max_pool2d_ref(input, (4, 5)))
    add("adaptive_max_pool2d_backward", dict(grad_output=n(2, 4, 4, 5)),
        lambda grad_output: pyconv.adaptive_max_pool2d_backward(grad_output, am_idx, x4.shape),
        lambda grad_output: RO.max_pool_backward_indices_ref(grad_output, am_idx, x4.shape))

    xa, dya = n(3, 5, 4) * 3, n(3, 5, 4)
    for act, kw in (("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.7}),
                    ("gelu", {}), ("gelu", {"approximate": "tanh"})):
        f, fb = getattr(pyconv, act), getattr(pyconv, act + "_backward")
        rf, rb = getattr(RO, act + "_ref"), getattr(RO, act + "_backward_ref")
        tag = act + ("[tanh]" if kw.get("approximate") == "tanh" else "")
        add(tag, dict(input=xa), lambda input, f=f, kw=kw: f(input, **kw),
            lambda input, rf=rf, kw=kw: rf(input, **kw), elementwise=True)
        add(tag.replace(act, act + "_backward"), dict(grad_output=dya, input=xa),
            lambda grad_output, input, fb=fb, kw=kw: fb(grad_output, input, **kw),
            lambda grad_output, input, rb=rb, kw=kw: rb(grad_output, input, **kw), elementwise=True)
    for act in ("sigmoid", "tanh"):
        f, fb = getattr(pyconv, act), getattr(pyconv, act + "_backward")
        rf, rb = getattr(RO, act + "_ref"), getattr(RO, act + "_backward_ref")
        add(act, dict(input=xa), lambda input, f=f: f(input), lambda input, rf=rf: rf(input), elementwise=True)
        add(act + "_backward", dict(grad_output=dya, output=rf(xa)),
            lambda grad_output, output, fb=fb: fb(grad_output, output),
            lambda grad_output, output, rb=rb: rb(grad_output, output), elementwise=True)
    for sm in ("softmax", "log_softmax"):
        f, fb = getattr(pyconv, sm), getattr(pyconv, sm + "_backward")
        rf, rb = getattr(RO, sm + "_ref"), getattr(RO, sm + "_backward_ref")
        add(sm, dict(input=xa), lambda input, f=f: f(input, 1), lambda input, rf=rf: rf(input, 1))
        add(sm + "_backward", dict(grad_output=dya, output=rf(xa, 1)),
            lambda grad_output, output, fb=fb: fb(grad_output, output, 1),
            lambda grad_output, output, rb=rb: rb(grad_output, output, 1))
    xm = n(2, 6, 3, 2)
    add("maxout", dict(input=xm), lambda input: pyconv.maxout(input, 3), lambda input: RO.maxout_ref(input, 3))
    add("maxout_backward", dict(grad_output=n(2, 2, 3, 2), input=xm),
        lambda grad_output, input: pyconv.maxout_backward(grad_output, input, 3),
        lambda grad_output, input: RO.maxout_backward_ref(grad_output, input, 3))

    logits, t = n(6, 5) * 2, np.array([0, 4, 2, 2, 1, 3])
    q = RO.softmax_ref(n(6, 5), 1)
    g6 = n(6)
    add("cross_entropy", dict(input=logits),
        lambda input: pyconv.cross_entropy(input, t, "mean", 0.1),
        lambda input: RO.cross_entropy_ref(input, t, "mean", 0.1))
    add("cross_entropy[prob]", dict(input=logits, target=q),
        lambda input, target: pyconv.cross_entropy(input, target, "none"),
        lambda input, target: RO.cross_entropy_ref(input, target, "none"))
    add("cross_entropy_backward", dict(grad_output=g6, input=logits),
        lambda grad_output, input: pyconv.cross_entropy_backward(grad_output, input, t, "none", 0.1),
        lambda grad_output, input: RO.cross_entropy_backward_ref(grad_output, input, t, "none", 0.1))
    lp = RO.log_softmax_ref(logits, 1)
    add("nll_loss", dict(input=lp), lambda input: pyconv.nll_loss(input, t, "sum"),
        lambda input: RO.nll_loss_ref(input, t, "sum"))
    add("nll_loss_backward", dict(grad_output=g6, input=lp),
        lambda grad_output, input: pyconv.nll_loss_backward(grad_output, input, t, "none"),
        lambda grad_output, input: RO.nll_loss_backward_ref(grad_output, input, t, "none"))
    add("mse_loss", dict(input=xa, target=n(3, 5, 4)),
        lambda input, target: pyconv.mse_loss(input, target, "mean"),
        lambda input, target: RO.mse_loss_ref(input, target, "mean"))
    add("mse_loss_backward", dict(grad_output=dya, input=xa, target=n(3, 5, 4)),
        lambda grad_output, input, target: pyconv.mse_loss_backward(grad_output, input, target, "none"),
        lambda grad_output, input, target: RO.mse_loss_backward_ref(grad_output, input, target, "none"))

    add("pad", dict(input=x4), lambda input: pyconv.pad(input, (1, 2, 2, 1), "reflect"),
        lambda input: RX.pad_ref(input, (1, 2, 2, 1), "reflect"))
    add("pad_backward", dict(grad_output=n(2, 4, 9, 9)),
        lambda grad_output: pyconv.pad_backward(grad_output, x4.shape, (1, 2, 2, 1), "circular"),
        lambda grad_output: RX.pad_backward_ref(grad_output, x4.shape, (1, 2, 2, 1), "circular"))
    wl, bl = n(3, 4), n(3)
    xl = n(2, 5, 4)
    add("linear", dict(input=xl, weight=wl, bias=bl),
        lambda input, weight, bias: pyconv.linear(input, weight, bias),
        lambda input, weight, bias: RX.linear_ref(input, weight, bias))
    add("linear_backward", dict(grad_output=n(2, 5, 3), input=xl, weight=wl),
        lambda grad_output, input, weight: pyconv.linear_backward(grad_output, input, weight),
        lambda grad_output, input, weight: RX.linear_backward_ref(grad_output, input, weight))

    xb = n(5, 3, 4) * 2 + 1
    gw, gb = n(3), n(3)
    add("batch_norm", dict(input=xb),
        lambda input: pyconv.batch_norm(input, None, None, gw, gb, training=True),
        lambda input: RX.batch_norm_ref(input, None, None, gw, gb, training=True)[0])
    add("batch_norm[eval]", dict(input=xb),
        lambda input: pyconv.batch_norm(input, np.full(3, 0.5), np.full(3, 2.0), gw, gb),
        lambda input: RX.batch_norm_ref(input, np.full(3, 0.5), np.full(3, 2.0), gw, gb)[0])
    _, sm_, si_ = pyconv.batch_norm(xb, None, None, training=True, return_stats=True)
    add("batch_norm_backward", dict(grad_output=n(5, 3, 4), input=xb),
        lambda grad_output, input: pyconv.batch_norm_backward(grad_output, input, gw, sm_, si_, True),
        lambda grad_output, input: RX.batch_norm_backward_ref(grad_output, input, gw, sm_, si_, True))
    return ops


OPS = _build_ops()
OP_IDS = [o.name for o in OPS]
_LOSS_BACKWARD = {"cross_entropy_backward", "nll_loss_backward", "mse_loss_backward"}


def _arrays(res):
    """Flatten an op result (array, scalar, tuple with None) into a list of arrays/None."""
    if isinstance(res, (tuple, list)):
        out = []
        for r in res:
            out.extend(_arrays(r))
        return out
    return [None if res is None else np.asarray(res)]


def _same_bits(got, want):
    g, w = _arrays(got), _arrays(want)
    assert len(g) == len(w)
    for a, b in zip(g, w):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes()


def _close(got, want, rtol=1e-10, atol=1e-12, allow_nan_vs_number=False):
    g, w = _arrays(got), _arrays(want)
    assert len(g) == len(w), f"{len(g)} outputs vs {len(w)}"
    for a, b in zip(g, w):
        assert a.shape == np.shape(b), f"shape {a.shape} vs {np.shape(b)}"
        if a.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b)
            continue
        a64, b64 = a.astype(np.float64), np.asarray(b, np.float64)
        if allow_nan_vs_number:
            m = np.isnan(a64) | np.isnan(b64)
            a64, b64 = a64[~m], b64[~m]
        np.testing.assert_allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True)


class _Failures:
    """Collects labelled failures of an inner loop and reports them all at once."""

    def __init__(self):
        self.items = []

    def check(self, label, fn, *a):
        try:
            fn(*a)
        except (AssertionError, Exception) as e:  # noqa: B014 - report anything
            self.items.append(f"{label}: {type(e).__name__}: {str(e)[:300]}")

    def done(self):
        assert not self.items, "\n".join(self.items)


def test_op_table_covers_every_public_op():
    covered = {o.name.split("[")[0] for o in OPS}
    # conv2d_input / conv2d_weight are public too (functional.__all__).
    assert covered == set(Fn.__all__), set(Fn.__all__) ^ covered


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_op_table_baseline_matches_reference(op):
    _close(op(**op.floats), op.ref(**op.floats))


# ===========================================================================
# 2. zero-size dimensions
# ===========================================================================
def _z(*s):
    return np.zeros(s)


def _o(*s):
    return np.ones(s)


# (id, call, expected): expected is a list of result shapes (zeros checked
# where the result is a gradient of an empty batch), a float (scalar result,
# nan allowed), or (exception, regex naming the argument).
ZERO = [
    # conv2d: empty batch is fine (as torch); C, H or W = 0 is rejected cleanly
    ("conv2d N=0", lambda: pyconv.conv2d(_z(0, 3, 5, 5), _o(4, 3, 3, 3), _o(4)), [(0, 4, 3, 3)]),
    ("conv2d N=0 unbatched-like", lambda: pyconv.conv2d(_z(0, 3, 5, 5), _o(4, 3, 3, 3), padding="same"), [(0, 4, 5, 5)]),
    ("conv2d C=0", lambda: pyconv.conv2d(_z(2, 0, 5, 5), _o(4, 0, 3, 3)), (ValueError, r"weight has in_channels/groups = 0")),
    ("conv2d H=0", lambda: pyconv.conv2d(_z(2, 3, 0, 5), _o(4, 3, 3, 3)), (ValueError, r"input has an empty .*\(2, 3, 0, 5\)")),
    ("conv2d W=0", lambda: pyconv.conv2d(_z(2, 3, 5, 0), _o(4, 3, 1, 1)), (ValueError, r"input has an empty .*\(2, 3, 5, 0\)")),
    ("conv2d OC=0", lambda: pyconv.conv2d(_z(2, 3, 5, 5), _o(0, 3, 3, 3)), (ValueError, r"weight has out_channels 0")),
    ("conv2d kH=0", lambda: pyconv.conv2d(_z(2, 3, 5, 5), _o(2, 3, 0, 3)), (ValueError, r"weight has kernel height 0")),
    ("conv2d_backward N=0", lambda: pyconv.conv2d_backward(_z(0, 4, 3, 3), _z(0, 3, 5, 5), _o(4, 3, 3, 3)),
     [(0, 3, 5, 5), (4, 3, 3, 3), (4,)]),
    ("conv2d_input N=0", lambda: pyconv.conv2d_input((0, 3, 5, 5), _o(4, 3, 3, 3), _z(0, 4, 3, 3)), [(0, 3, 5, 5)]),
    ("conv2d_input H=0", lambda: pyconv.conv2d_input((1, 3, 0, 5), _o(4, 3, 3, 3), _z(1, 4, 1, 3)),
     (ValueError, r"input_size has an empty")),
    ("conv2d_weight N=0", lambda: pyconv.conv2d_weight(_z(0, 3, 5, 5), (4, 3, 3, 3), _z(0, 4, 3, 3)), [(4, 3, 3, 3)]),
    # gemm / linear
    ("gemm M=0", lambda: pyconv.gemm(_z(0, 4), _o(4, 5)), [(0, 5)]),
    ("gemm N=0", lambda: pyconv.gemm(_o(3, 4), _z(4, 0)), [(3, 0)]),
    ("gemm K=0", lambda: pyconv.gemm(_z(3, 0), _z(0, 5)), [(3, 5)]),
    ("linear M=0", lambda: pyconv.linear(_z(0, 4), _o(5, 4), _o(5)), [(0, 5)]),
    ("linear out=0", lambda: pyconv.linear(_o(3, 4), _z(0, 4), _z(0)), [(3, 0)]),
    ("linear batch dims 0", lambda: pyconv.linear(_z(2, 0, 4), _o(5, 4)), [(2, 0, 5)]),
    ("linear_backward M=0", lambda: pyconv.linear_backward(_z(0, 5), _z(0, 4), _o(5, 4)), [(0, 4), (5, 4), (5,)]),
    # pooling: empty batch / channels give empty results; empty planes are rejected
    ("max_pool2d N=0", lambda: pyconv.max_pool2d(_z(0, 3, 5, 5), 2, return_indices=True), [(0, 3, 2, 2), (0, 3, 2, 2)]),
    ("max_pool2d C=0", lambda: pyconv.max_pool2d(_z(2, 0, 5, 5), 2), [(2, 0, 2, 2)]),
    ("max_pool2d H=0", lambda: pyconv.max_pool2d(_z(2, 3, 0, 5), 2), (ValueError, r"input has an empty spatial")),
    ("max_pool2d_backward N=0", lambda: pyconv.max_pool2d_backward(_z(0, 3, 2, 2), np.zeros((0, 3, 2, 2), np.int64), (0, 3, 5, 5)), [(0, 3, 5, 5)]),
    ("avg_pool2d N=0", lambda: pyconv.avg_pool2d(_z(0, 3, 5, 5), 2), [(0, 3, 2, 2)]),
    ("avg_pool2d W=0", lambda: pyconv.avg_pool2d(_z(2, 3, 5, 0), 2), (ValueError, r"input has an empty spatial")),
    ("avg_pool2d_backward N=0", lambda: pyconv.avg_pool2d_backward(_z(0, 3, 2, 2), (0, 3, 5, 5), 2), [(0, 3, 5, 5)]),
    ("avg_pool2d_backward H=0", lambda: pyconv.avg_pool2d_backward(_z(1, 3, 0, 2), (1, 3, 0, 5), 2),
     (ValueError, r"input has an empty spatial")),
    ("adaptive_avg_pool2d N=0", lambda: pyconv.adaptive_avg_pool2d(_z(0, 3, 5, 5), 2), [(0, 3, 2, 2)]),
    ("adaptive_avg_pool2d C=0", lambda: pyconv.adaptive_avg_pool2d(_z(2, 0, 5, 5), 2), [(2, 0, 2, 2)]),
    ("adaptive_avg_pool2d H=0", lambda: pyconv.adaptive_avg_pool2d(_z(2, 3, 0, 5), 2), (ValueError, r"input has an empty spatial")),
    ("adaptive_avg_pool2d_backward N=0", lambda: pyconv.adaptive_avg_pool2d_backward(_z(0, 3, 2, 2), (0, 3, 5, 5)), [(0, 3, 5, 5)]),
    ("adaptive_max_pool2d N=0", lambda: pyconv.adaptive_max_pool2d(_z(0, 3, 5, 5), 2, True), [(0, 3, 2, 2), (0, 3, 2, 2)]),
    ("adaptive_max_pool2d W=0", lambda: pyconv.adaptive_max_pool2d(_z(2, 3, 5, 0), 2), (ValueError, r"input has an empty spatial")),
    ("adaptive_max_pool2d_backward N=0", lambda: pyconv.adaptive_max_pool2d_backward(_z(0, 3, 2, 2), np.zeros((0, 3, 2, 2), np.int64), (0, 3, 5, 5)), [(0, 3, 5, 5)]),
    # elementwise / softmax / maxout: any zero dim gives an empty result
    ("relu 0", lambda: pyconv.relu(_z(2, 0, 3)), [(2, 0, 3)]),
    ("gelu_backward 0", lambda: pyconv.gelu_backward(_z(0, 3), _z(0, 3)), [(0, 3)]),
    ("sigmoid_backward 0", lambda: pyconv.sigmoid_backward(_z(0,), _z(0,)), [(0,)]),
    ("softmax reduced axis 0", lambda: pyconv.softmax(_z(2, 0, 3), 1), [(2, 0, 3)]),
    ("softmax other axis 0", lambda: pyconv.softmax(_z(0, 4), 1), [(0, 4)]),
    ("log_softmax_backward 0", lambda: pyconv.log_softmax_backward(_z(3, 0), _z(3, 0), 1), [(3, 0)]),
    ("maxout C=0", lambda: pyconv.maxout(_z(2, 0, 3), 2), [(2, 0, 3)]),
    ("maxout N=0", lambda: pyconv.maxout(_z(0, 4, 3), 2), [(0, 2, 3)]),
    ("maxout_backward N=0", lambda: pyconv.maxout_backward(_z(0, 2, 3), _z(0, 4, 3), 2), [(0, 4, 3)]),
    # losses: empty batch as torch ('mean' of nothing is nan, 'sum' is 0)
    ("cross_entropy N=0 mean", lambda: pyconv.cross_entropy(_z(0, 4), np.zeros(0, np.int64)), float("nan")),
    ("cross_entropy N=0 sum", lambda: pyconv.cross_entropy(_z(0, 4), np.zeros(0, np.int64), "sum"), 0.0),
    ("cross_entropy N=0 none", lambda: pyconv.cross_entropy(_z(0, 4), np.zeros(0, np.int64), "none"), [(0,)]),
    ("cross_entropy N=0 prob", lambda: pyconv.cross_entropy(_z(0, 4), _z(0, 4), "sum"), 0.0),
    ("cross_entropy_backward N=0", lambda: pyconv.cross_entropy_backward(1.0, _z(0, 4), np.zeros(0, np.int64)), [(0, 4)]),
    ("cross_entropy C=0", lambda: pyconv.cross_entropy(_z(3, 0), np.zeros(3, np.int64)), (ValueError, r"input must have at least one class")),
    ("nll_loss N=0 mean", lambda: pyconv.nll_loss(_z(0, 4), np.zeros(0, np.int64)), float("nan")),
    ("nll_loss N=0 sum", lambda: pyconv.nll_loss(_z(0, 4), np.zeros(0, np.int64), "sum"), 0.0),
    ("nll_loss_backward N=0", lambda: pyconv.nll_loss_backward(_z(0), _z(0, 4), np.zeros(0, np.int64), "none"), [(0, 4)]),
    ("nll_loss C=0", lambda: pyconv.nll_loss(_z(3, 0), np.zeros(3, np.int64)), (ValueError, r"input must have at least one class")),
    ("mse_loss empty mean", lambda: pyconv.mse_loss(_z(0, 3), _z(0, 3)), float("nan")),
    ("mse_loss empty sum", lambda: pyconv.mse_loss(_z(0, 3), _z(0, 3), "sum"), 0.0),
    ("mse_loss_backward empty", lambda: pyconv.mse_loss_backward(1.0, _z(3, 0), _z(3, 0)), [(3, 0)]),
    # pad
    ("pad constant N=0", lambda: pyconv.pad(_z(0, 3, 5, 5), (1, 1, 1, 1)), [(0, 3, 7, 7)]),
    ("pad constant H=0", lambda: pyconv.pad(_z(2, 3, 0, 5), (1, 1, 1, 1), value=2.0), [(2, 3, 2, 7)]),
    ("pad constant 1-d empty", lambda: pyconv.pad(_z(0), (1, 1), value=2.0), [(2,)]),
    ("pad constant W=0", lambda: pyconv.pad(_z(3, 0), (2, 1), value=2.0), [(3, 3)]),
    ("pad constant C=0", lambda: pyconv.pad(_z(2, 0, 4), (1, 1), value=2.0), [(2, 0, 6)]),
    ("pad reflect N=0", lambda: pyconv.pad(_z(0, 3, 5, 5), (1, 1, 1, 1), "reflect"), [(0, 3, 7, 7)]),
    ("pad reflect H=0", lambda: pyconv.pad(_z(2, 3, 0, 5), (1, 1, 1, 1), "reflect"), (ValueError, r"reflect padding \(1, 1, 1, 1\)")),
    ("pad replicate W=0", lambda: pyconv.pad(_z(2, 3, 5, 0), (1, 1), "replicate"), (ValueError, r"mode='replicate' cannot pad an empty input")),
    ("pad circular H=0", lambda: pyconv.pad(_z(2, 3, 0, 5), (1, 1, 1, 1), "circular"), (ValueError, r"circular padding \(1, 1, 1, 1\)")),
    ("pad_backward N=0", lambda: pyconv.pad_backward(_z(0, 3, 7, 7), (0, 3, 5, 5), (1, 1, 1, 1), "replicate"), [(0, 3, 5, 5)]),
    # batch norm: eval accepts empty input; training needs > 1 value per channel (torch returns
    # an empty result for N=0; a clean ValueError is the documented choice here)
    ("batch_norm eval N=0", lambda: pyconv.batch_norm(_z(0, 3, 4), _z(3), _o(3)), [(0, 3, 4)]),
    ("batch_norm eval C=0", lambda: pyconv.batch_norm(_z(2, 0, 4), _z(0), _o(0)), [(2, 0, 4)]),
    ("batch_norm train N=0", lambda: pyconv.batch_norm(_z(0, 3, 4), _z(3), _o(3), training=True),
     (ValueError, r"more than 1 value per channel.*input shape \(0, 3, 4\)")),
    ("batch_norm train one value", lambda: pyconv.batch_norm(_o(1, 3), None, None, training=True),
     (ValueError, r"more than 1 value per channel.*input shape \(1, 3\)")),
    ("batch_norm_backward N=0", lambda: pyconv.batch_norm_backward(_z(0, 3), _z(0, 3), None, _z(3), _o(3)), [(0, 3), (3,), (3,)]),
    # an empty spatial axis: no values per channel (the column walk must not divide by S = 0)
    ("batch_norm eval S=0", lambda: pyconv.batch_norm(_z(2, 3, 0), _z(3), _o(3)), [(2, 3, 0)]),
    ("batch_norm train S=0", lambda: pyconv.batch_norm(_z(2, 3, 0, 5), _z(3), _o(3), training=True),
     (ValueError, r"more than 1 value per channel.*input shape \(2, 3, 0, 5\)")),
    ("batch_norm_backward S=0", lambda: pyconv.batch_norm_backward(_z(2, 3, 0), _z(2, 3, 0), None, _z(3), _o(3)), [(2, 3, 0), (3,), (3,)]),
    ("batch_norm_backward S=0 eval", lambda: pyconv.batch_norm_backward(_z(2, 3, 0, 4), _z(2, 3, 0, 4), _o(3), _z(3), _o(3), training=False), [(2, 3, 0, 4), (3,), (3,)]),
]


_PAD_EMPTY_BUG = bug(
    "WRONG ANSWER: pad(mode='constant') of an input whose last one/two axes are empty returns "
    "UNINITIALISED memory instead of the fill value (the compiled pad counts 0 planes when H*W == 0); "
    "repro: pyconv.pad(np.zeros((2, 3, 0, 5)), (1, 1, 1, 1), value=2.0) -> garbage, torch gives 2.0")
ZERO_MARKS = {}  # (the empty-pad bug is fixed)


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0], marks=ZERO_MARKS.get(c[0], ())) for c in ZERO])
@quiet
def test_zero_size(case):
    _, call, expected = case
    if isinstance(expected, tuple):
        exc, pattern = expected
        with pytest.raises(exc, match=pattern):
            call()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (mean of empty slice etc.)
        res = call()
    if isinstance(expected, float):
        v = np.asarray(res)
        assert v.shape == ()
        if np.isnan(expected):
            assert np.isnan(v)
        else:
            assert v == expected
        return
    got = _arrays(res)
    assert [a.shape for a in got] == expected
    for a in got:
        if a.size and a.dtype.kind == "f":  # gradients / products over an empty axis, or the pad fill
            fill = 2.0 if case[0].startswith("pad constant") else 0.0
            assert np.all(a == fill), f"expected all {fill}, got {np.unique(a)[:5]}"


@pytest.mark.parametrize("which", ["forward", "forward_1d", "backward"])
@quiet
def test_zero_size_linear_in_features(which):
    b = np.arange(3.0)
    if which == "forward":
        np.testing.assert_array_equal(pyconv.linear(_o(2, 0), _o(3, 0), b), np.tile(b, (2, 1)))
    elif which == "forward_1d":
        np.testing.assert_array_equal(pyconv.linear(_o(0), _o(3, 0), b), b)
    else:
        dx, dw, db = pyconv.linear_backward(_o(2, 3), _o(2, 0), _o(3, 0))
        assert dx.shape == (2, 0) and dw.shape == (3, 0)
        np.testing.assert_array_equal(db, [2.0, 2.0, 2.0])


@quiet
def test_zero_size_linear_backward_out_features():
    dx, dw, db = pyconv.linear_backward(_o(3, 0), _o(3, 4), _o(0, 4))
    np.testing.assert_array_equal(dx, np.zeros((3, 4)))
    assert dw.shape == (0, 4) and db.shape == (0,)


@pytest.mark.parametrize("shapes", [((0, 3), (3, 2)), ((2, 3), (3, 0)), ((0, 0), (0, 0))], ids=str)
@quiet
def test_zero_size_gemm_float16_dtype(shapes):
    a, b = shapes
    assert pyconv.gemm(np.ones(a, np.float16), np.ones(b, np.float16)).dtype == np.float16


_ZERO_SHAPE_OPS = [o for o in OPS if o.elementwise or o.name.startswith(("softmax", "log_softmax", "mse_loss"))]


@pytest.mark.parametrize("op", _ZERO_SHAPE_OPS, ids=[o.name for o in _ZERO_SHAPE_OPS])
def test_zero_size_shape_preserving_ops(op):
    """Elementwise ops, softmax / log_softmax (+ backward) and mse: every zero-size shape
    (reduced axis empty or not) gives an empty result of the right shape, no warning."""
    for shape in ((3, 0, 4), (0, 5, 4), (2, 3, 0), (0,)):
        floats = {k: np.zeros(shape) for k in op.floats}
        if op.name.startswith(("softmax", "log_softmax")) and len(shape) < 2:
            continue  # axis=1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = op(**floats)
        a = np.asarray(res)
        if op.name == "mse_loss":  # 'mean' of nothing
            assert a.shape == () and np.isnan(a)
        else:
            assert a.shape == shape and a.dtype == np.float64


def test_zero_size_gemm_k0_beta_scales_out():
    out = np.full((2, 3), 8.0)
    res = pyconv.gemm(_z(2, 0), _z(0, 3), out=out, beta=0.25)
    assert res is out
    np.testing.assert_array_equal(out, 2.0)


# ===========================================================================
# 3. huge sizes and huge ints, in an isolated child
# ===========================================================================
# Each case runs in a child process with RLIMIT_AS (so a bug that tries to
# allocate terabytes gets MemoryError instead of taking the machine down) and a
# per-case faulthandler watchdog (so a hang ends the child). A crash or hang is
# recorded against its case and the child is restarted for the rest.
_MEM_LIMIT = 3 << 30

_CHILD = r"""
import faulthandler, json, os, resource, sys, time
lim = int(sys.argv[1])
if not os.environ.get("PYCONV_SANITIZED"):  # ASan reserves terabytes of address space
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file
import numpy as np
from numpy.lib.stride_tricks import as_strided
import pyconv

def V(*shape, dtype=np.float32):
    '''A huge read-only virtual array of zeros (every stride 0): no memory behind it.'''
    return as_strided(np.zeros(1, dtype), shape=shape, strides=(0,) * len(shape), writeable=False)

cases = json.loads(sys.stdin.read())
for c in cases:
    print(json.dumps({"start": c["id"]}), flush=True)
    faulthandler.dump_traceback_later(c["timeout"], exit=True)
    t0 = time.perf_counter()
    ns = {"np": np, "pyconv": pyconv, "V": V}
    try:
        exec(c["code"], ns)
        res = {"status": "ok", "value": repr(ns.get("result"))[:200]}
    except BaseException as e:
        res = {"status": "raise", "type": type(e).__name__, "msg": str(e)[:400]}
    faulthandler.cancel_dump_traceback_later()
    res["id"] = c["id"]
    res["seconds"] = time.perf_counter() - t0
    print(json.dumps(res), flush=True)
"""


def run_isolated(cases, mem_limit=_MEM_LIMIT):
    """Run [{'id', 'code', 'timeout'}] in child processes; return {id: outcome}.

    outcome: {'status': 'ok' | 'raise' | 'crash' | 'timeout', ...}.
    """
    results, todo = {}, list(cases)
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONFAULTHANDLER="0")
    while todo:
        budget = sum(c["timeout"] for c in todo) + 30
        try:
            p = subprocess.run([sys.executable, "-c", _CHILD, str(mem_limit)], input=json.dumps(todo),
                               capture_output=True, text=True, timeout=budget, env=env, cwd="/")
            out, err, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:  # pragma: no cover - the watchdog should fire first
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err, rc = "parent timeout", "timeout"
        started = None
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                started = msg["start"]
            else:
                results[msg["id"]] = msg
                started = None
        done = {c["id"] for c in todo if c["id"] in results}
        if started is not None:  # died inside this case
            hang = rc == "timeout" or "Timeout (" in err
            results[started] = {"status": "timeout" if hang else "crash", "rc": rc, "stderr": err[-800:]}
            done.add(started)
        elif not done and todo:  # the child died before running anything
            raise RuntimeError(f"isolated child failed (rc={rc}): {err[-2000:]}")
        todo = [c for c in todo if c["id"] not in done]
    return results


class Risky:
    def __init__(self, id, code, accept=(ValueError, MemoryError, OverflowError), match=None,
                 ok=False, timeout=20.0, marks=(), pre=""):
        self.id, self.accept, self.match = id, accept, match
        self.code = pre + textwrap.dedent(code).strip()
        self.ok, self.timeout, self.marks = ok, timeout, marks

    def param(self):
        return pytest.param(self, id=self.id, marks=self.marks)


_SMALL = "x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32)\n"
_ONE = "x1 = np.ones((1, 1, 1, 1), np.float32)\n"

RISKY = [
    # --- virtual inputs whose sizes overflow 32 bits / cannot be allocated
    Risky("conv2d H*W > 2^32", "pyconv.conv2d(V(1, 1, 2**16 + 1, 2**16 + 1), np.ones((1, 1, 1, 1), np.float32))",
          match=r"input|output"),
    Risky("conv2d 2^60-element input", "pyconv.conv2d(V(2**20, 2**20, 2**10, 2**10), V(1, 2**20, 1, 1))",
          match=r"input|output"),
    Risky("conv2d padding 2^31 (output >= 2^62 elements)", pre=_SMALL, code="pyconv.conv2d(x, w, padding=2**31)",
          accept=(ValueError,), match=r"padding"),
    Risky("conv2d padding 2^40", pre=_SMALL, code="pyconv.conv2d(x, w, padding=(2**40, 0))", match=r"output|padding"),
    Risky("conv2d_backward virtual 2^40", "pyconv.conv2d_backward(V(1, 1, 2**20, 2**20), V(1, 1, 2**20, 2**20), np.ones((1, 1, 1, 1), np.float32))",
          match=r"input|grad_output"),
    Risky("conv2d_input input_size 2^62", "pyconv.conv2d_input((2**31, 2**31, 1, 1), V(1, 2**31, 1, 1), V(2**31, 1, 1, 1))",
          accept=(ValueError,), match=r"input_size"),
    Risky("max_pool2d 2^60-element input", "pyconv.max_pool2d(V(2**20, 2**20, 2**10, 2**10), 2)", match=r"input"),
    Risky("avg_pool2d 2^60-element input", "pyconv.avg_pool2d(V(2**20, 2**20, 2**10, 2**10), 2)", match=r"input"),
    Risky("adaptive_avg_pool2d 2^60", "pyconv.adaptive_avg_pool2d(V(2**30, 2**30, 1, 1), 1)", match=r"input"),
    Risky("adaptive_max_pool2d 2^60", "pyconv.adaptive_max_pool2d(V(2**30, 2**30, 1, 1), 1)", match=r"input"),
    Risky("max_pool2d_backward 2^40 input_shape", "pyconv.max_pool2d_backward(V(1, 1, 2**20, 2**20), V(1, 1, 2**20, 2**20, dtype=np.int64), (1, 1, 2**20, 2**20))",
          match=r"input_shape|grad_output"),
    Risky("relu 2^40", "pyconv.relu(V(2**40))", match=r"input"),
    Risky("sigmoid_backward 2^40", "pyconv.sigmoid_backward(V(2**40), V(2**40))", match=r"grad_output|output"),
    Risky("softmax 2^41", "pyconv.softmax(V(2**20, 2**21), 1)", match=r"input"),
    Risky("maxout 2^41", "pyconv.maxout(V(2**20, 2**21), 2)", match=r"input"),
    Risky("gemm 2^40 out", "pyconv.gemm(V(2**20, 4), V(4, 2**20))", match=r"\ba\b|\bb\b|out"),
    Risky("linear 2^40 out", "pyconv.linear(V(2**20, 8), V(2**20, 8))", match=r"input|weight"),
    Risky("cross_entropy 2^42 logits", "pyconv.cross_entropy(V(4, 2**40), np.zeros(4, np.int64))", match=r"input"),
    Risky("mse_loss 2^40", "pyconv.mse_loss(V(2**40), V(2**40))", match=r"input|target"),
    Risky("pad 2^40 input", "pyconv.pad(V(2**20, 2**20), (1, 1))", match=r"input|padding"),
    Risky("pad padding 2^40", pre=_SMALL, code="pyconv.pad(x, (2**40, 0))", match=r"padding"),
    Risky("batch_norm 2^40", "pyconv.batch_norm(V(2**20, 4, 2**18), np.zeros(4), np.ones(4))", match=r"input"),
    Risky("batch_norm_backward 2^40", "pyconv.batch_norm_backward(V(2**20, 4, 2**18), V(2**20, 4, 2**18), None, np.zeros(4), np.ones(4))",
          match=r"input|grad_output"),
    # --- sizes past what numpy can even describe: the error must still name the argument
    Risky("pad padding 2^62", pre=_SMALL, code="pyconv.pad(x, (2**62, 0))", match=r"padding"),
    Risky("pad padding 2^63", pre=_SMALL, code="pyconv.pad(x, (2**63, 0))", match=r"padding"),
    Risky("adaptive_avg_pool2d output_size 2^40", pre=_SMALL, code="pyconv.adaptive_avg_pool2d(x, 2**40)", match=r"output_size"),
    Risky("adaptive_max_pool2d output_size 2^63", pre=_SMALL, code="pyconv.adaptive_max_pool2d(x, 2**63)", match=r"output_size"),
    Risky("adaptive_avg_pool2d output_size (1, 2^40)", pre=_SMALL, code="pyconv.adaptive_avg_pool2d(x, (1, 2**40))", match=r"output_size"),
    Risky("max_pool2d_backward input_shape 2^80", "pyconv.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), (1, 1, 2**40, 2**40))",
          match=r"input_shape"),
    Risky("avg_pool2d_backward input_shape 2^62", "pyconv.avg_pool2d_backward(V(1, 1, 1, 1), (1, 1, 2**31, 2**31), 2**31)",
          match=r"input_shape"),
    Risky("gemm 2^62 out", "pyconv.gemm(V(2**31, 4), V(4, 2**31))", match=r"\ba\b|\bb\b|out"),
    Risky("conv2d_input 2^61 float32 elements", "pyconv.conv2d_input((1, 1, 2**31, 2**30), V(1, 1, 1, 1), V(1, 1, 2**30, 2**30))",
          match=r"input_size|input"),
    # --- huge ints that reach the compiled layer
    Risky("conv2d stride 2^62 (refused: beyond 2**31 - 1)", pre=_SMALL, code="""
          y = pyconv.conv2d(x, w, stride=2**62)
          assert y.shape == (1, 3, 1, 1)
          np.testing.assert_array_equal(y, pyconv.conv2d(x, w, stride=100))""", accept=(ValueError,), match=r"stride"),
    Risky("conv2d padding+dilation 2^61, C=1 (refused: beyond 2**31 - 1)", """
          x = np.arange(40, dtype=np.float32).reshape(1, 1, 5, 8); w = np.arange(2 * 9, dtype=np.float32).reshape(2, 1, 3, 3)
          y = pyconv.conv2d(x, w, padding=2**61, dilation=2**61)
          np.testing.assert_array_equal(y, pyconv.conv2d(x, w[:, :, 1:2, 1:2]))""", accept=(ValueError,), match=r"padding|dilation"),
    Risky("conv2d padding+dilation (1, 2^61) wide (refused: beyond 2**31 - 1)", """
          x = np.arange(160, dtype=np.float32).reshape(1, 4, 5, 8); w = np.ones((2, 4, 3, 3), np.float32)
          y = pyconv.conv2d(x, w, padding=(1, 2**61), dilation=(1, 2**61))
          np.testing.assert_allclose(y, pyconv.conv2d(x, w[:, :, :, 1:2], padding=(1, 0)), rtol=1e-6)""", accept=(ValueError,), match=r"padding|dilation"),
    Risky("conv2d padding+dilation (2^20, 1) wide (valid)", """
          x = np.arange(160, dtype=np.float32).reshape(1, 4, 5, 8); w = np.ones((2, 4, 3, 3), np.float32)
          y = pyconv.conv2d(x, w, padding=(2**20, 1), dilation=(2**20, 1))
          np.testing.assert_allclose(y, pyconv.conv2d(x, w[:, :, 1:2, :], padding=(0, 1)), rtol=1e-6)""", ok=True),
    Risky("conv2d padding+dilation (2^61, 1) wide (refused: beyond 2**31 - 1)", """
          x = np.arange(160, dtype=np.float32).reshape(1, 4, 5, 8); w = np.ones((2, 4, 3, 3), np.float32)
          y = pyconv.conv2d(x, w, padding=(2**61, 1), dilation=(2**61, 1))
          np.testing.assert_allclose(y, pyconv.conv2d(x, w[:, :, 1:2, :], padding=(0, 1)), rtol=1e-6)""",
          accept=(ValueError,), match=r"padding|dilation", timeout=10),
    Risky("conv2d padding+dilation (2^30, 1) wide (valid)", """
          x = np.arange(160, dtype=np.float32).reshape(1, 4, 5, 8); w = np.ones((2, 4, 3, 3), np.float32)
          y = pyconv.conv2d(x, w, padding=(2**30, 1), dilation=(2**30, 1))
          np.testing.assert_allclose(y, pyconv.conv2d(x, w[:, :, 1:2, :], padding=(0, 1)), rtol=1e-6)""",
          ok=True),
    Risky("conv2d_backward padding+dilation (2^20, 1) (valid)", """
          x = np.arange(160, dtype=np.float64).reshape(1, 4, 5, 8); w = np.ones((2, 4, 3, 3)); dy = np.ones((1, 2, 5, 8))
          dx, dw, db = pyconv.conv2d_backward(dy, x, w, padding=(2**20, 1), dilation=(2**20, 1))
          dx0, dw0, db0 = pyconv.conv2d_backward(dy, x, w[:, :, 1:2, :], padding=(0, 1))
          np.testing.assert_allclose(dx, dx0); np.testing.assert_allclose(dw[:, :, 1:2, :], dw0)
          assert not dw[:, :, 0].any() and not dw[:, :, 2].any()""", ok=True),
    Risky("conv2d_backward padding+dilation (2^61, 1) (refused: beyond 2**31 - 1)", """
          x = np.arange(160, dtype=np.float64).reshape(1, 4, 5, 8); w = np.ones((2, 4, 3, 3)); dy = np.ones((1, 2, 5, 8))
          dx, dw, db = pyconv.conv2d_backward(dy, x, w, padding=(2**61, 1), dilation=(2**61, 1))
          dx0, dw0, db0 = pyconv.conv2d_backward(dy, x, w[:, :, 1:2, :], padding=(0, 1))
          np.testing.assert_allclose(dx, dx0); np.testing.assert_allclose(dw[:, :, 1:2, :], dw0)""",
          accept=(ValueError,), match=r"padding|dilation"),
    Risky("conv2d stride 2^63", pre=_SMALL, code="pyconv.conv2d(x, w, stride=2**63)", accept=(ValueError, TypeError, OverflowError),
          match=r"stride"),
    Risky("conv2d_backward stride 2^64", pre=_SMALL, code="pyconv.conv2d_backward(np.ones((1, 3, 3, 1), np.float32), x, w, stride=(1, 2**64))",
          accept=(ValueError, TypeError, OverflowError), match=r"stride"),
    Risky("max_pool2d stride 2^63", pre=_SMALL, code="pyconv.max_pool2d(x, 2, stride=2**63)", accept=(ValueError, TypeError, OverflowError),
          match=r"stride"),
    Risky("avg_pool2d stride 2^64", pre=_SMALL, code="pyconv.avg_pool2d(x, 2, stride=(2**64, 1))", accept=(ValueError, TypeError, OverflowError),
          match=r"stride"),
    Risky("avg_pool2d_backward stride 2^63", pre=_SMALL, code="pyconv.avg_pool2d_backward(np.ones((1, 2, 1, 1), np.float32), x.shape, 2, stride=2**63)",
          accept=(ValueError, TypeError, OverflowError), match=r"stride"),
    Risky("avg_pool2d divisor_override 2^63", pre=_SMALL, code="pyconv.avg_pool2d(x, 2, divisor_override=2**63)",
          accept=(ValueError, TypeError, OverflowError), match=r"divisor_override"),
    Risky("avg_pool2d divisor_override 2^62 (refused: beyond 2**31 - 1)", pre=_SMALL, code="""
          y = pyconv.avg_pool2d(x.astype(np.float64), 2, divisor_override=2**62)
          np.testing.assert_allclose(y, 4.0 / 2**62)""", accept=(ValueError,), match=r"divisor_override"),
    Risky("max_pool2d kernel 2^20 padding 2^19 (valid)", pre=_ONE, code="""
          y = pyconv.max_pool2d(x1, 2**20, padding=2**19)
          assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 1""", ok=True),
    Risky("max_pool2d kernel 2^62 padding 2^61 (refused: beyond 2**31 - 1)", pre=_ONE, code="""
          y = pyconv.max_pool2d(x1, 2**62, padding=2**61)
          assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 1""",
          accept=(ValueError,), match=r"kernel_size|padding", timeout=2.5),
    Risky("avg_pool2d kernel 2^16 padding 2^15 (valid)", pre=_ONE, code="""
          y = pyconv.avg_pool2d(x1.astype(np.float64), 2**16, padding=2**15)
          np.testing.assert_allclose(y, 2.0**-32)""", ok=True),
    Risky("avg_pool2d kernel 2^32 padding 2^31 (refused: beyond 2**31 - 1)", pre=_ONE, code="""
          y = pyconv.avg_pool2d(x1.astype(np.float64), 2**32, padding=2**31)
          np.testing.assert_allclose(y, 2.0**-64)""",
          accept=(ValueError,), match=r"kernel_size|padding"),
    Risky("max_pool2d_backward indices 2^62", pre=_SMALL, code="""
          pyconv.max_pool2d_backward(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), 2**62), x.shape)""",
          accept=(ValueError,), match=r"indices"),
    Risky("max_pool2d_backward indices uint64 2^63+1", pre=_SMALL, code="""
          pyconv.max_pool2d_backward(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), 2**63 + 1, np.uint64), x.shape)""",
          accept=(ValueError,), match=r"indices"),
]


@pytest.fixture(scope="module")
def risky_results():
    if os.environ.get("PYCONV_SANITIZED"):
        return {}  # skipped there (see test_huge_isolated)
    return run_isolated([{"id": c.id, "code": c.code, "timeout": c.timeout} for c in RISKY])


@pytest.mark.parametrize("case", [c.param() for c in RISKY])
@quiet
def test_huge_isolated(case, risky_results):
    if os.environ.get("PYCONV_SANITIZED"):
        pytest.skip("the huge-size cases rely on RLIMIT_AS, which AddressSanitizer cannot run under")
    r = risky_results[case.id]
    assert r["status"] not in ("crash", "timeout"), f"{r['status']} (rc={r.get('rc')}): {r.get('stderr', '')[-400:]}"
    if case.ok:
        assert r["status"] == "ok", f"{r.get('type')}: {r.get('msg')}"
    else:
        assert r["status"] == "raise", f"no exception; returned {r.get('value')}"
        names = [e.__name__ for e in case.accept]
        assert r["type"] in names, f"{r['type']}: {r['msg']}"
        if r["type"] != "MemoryError":
            assert re.search(case.match, r["msg"]), f"message does not name the argument: {r['msg']!r}"
    assert r["seconds"] < 10, f"took {r['seconds']:.1f} s"


def test_isolation_harness_catches_crash_and_hang():
    """The harness itself: a segfault and a hang are reported per case, others still run."""
    res = run_isolated([
        {"id": "ok", "code": "result = 1 + 1", "timeout": 10},
        {"id": "segv", "code": "import ctypes; ctypes.string_at(0)", "timeout": 10},
        {"id": "after", "code": "raise ValueError('input bad')", "timeout": 10},
        {"id": "hang", "code": "import time; time.sleep(60)", "timeout": 1},
        {"id": "mem", "code": "np.ones(2**32)", "timeout": 10},
    ])
    assert res["ok"]["status"] == "ok"
    assert res["segv"]["status"] == "crash"
    assert res["after"] == {**res["after"], "status": "raise", "type": "ValueError"}
    assert res["hang"]["status"] == "timeout"
    assert res["mem"]["type"] == "MemoryError"


# ===========================================================================
# 4. NaN / inf propagation and denormals
# ===========================================================================
def _poison(a, r):
    a = a.copy()
    flat = a.reshape(-1)
    k = r.choice(flat.size, size=min(3, flat.size), replace=False)
    for i, v in zip(k, (np.nan, np.inf, -np.inf)):
        flat[i] = v
    return a


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_nan_inf_propagate_like_reference(op):
    """NaN / +-inf in each float argument in turn: same NaN/inf pattern and values as the
    float64 reference (whose non-finite semantics are PyTorch's, see reference_ops)."""
    r = np.random.default_rng(7)
    for name in op.floats:
        if op.name.startswith(("sigmoid_backward", "tanh_backward", "softmax_backward", "log_softmax_backward")) and name == "output":
            continue  # an 'output' of inf/NaN is not a forward output; covered via the input side
        floats = dict(op.floats)
        floats[name] = _poison(floats[name], r)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got, want = op(**floats), op.ref(**floats)
        # elu backward at NaN: PyTorch's scalar and vector paths differ (reference_ops docs);
        # an infinite cross-entropy grad_output gives inf*0-type NaNs whose placement differs
        # between torch's own code paths (with / without label smoothing): accept either.
        loose = op.name.startswith("elu_backward") or (op.name == "cross_entropy_backward" and name == "grad_output")
        _close(got, want, rtol=1e-9, atol=1e-9, allow_nan_vs_number=loose)


def test_nan_inf_against_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = np.random.default_rng(3)
    x = r.standard_normal((2, 4, 6, 6))
    x[0, 0, 1, 1], x[0, 1, 2, 3], x[1, 2, 4, 4], x[1, 3, 0, 0] = np.nan, np.inf, -np.inf, np.nan
    w = r.standard_normal((3, 4, 3, 3))
    T = torch.from_numpy
    pairs = [
        (pyconv.conv2d(x, w, padding=1), F.conv2d(T(x), T(w), padding=1)),
        (pyconv.max_pool2d(x, 3, 1, 1), F.max_pool2d(T(x), 3, 1, 1)),
        (pyconv.max_pool2d(x, 2, return_indices=True)[1], F.max_pool2d(T(x), 2, return_indices=True)[1]),
        (pyconv.avg_pool2d(x, 2), F.avg_pool2d(T(x), 2)),
        (pyconv.adaptive_max_pool2d(x, 4, True)[1], F.adaptive_max_pool2d(T(x), 4, True)[1]),
        (pyconv.softmax(x, 1), F.softmax(T(x), 1)),
        (pyconv.log_softmax(x, -1), F.log_softmax(T(x), -1)),
        (pyconv.gelu(x), F.gelu(T(x))),
        (pyconv.batch_norm(x, None, None, training=True), F.batch_norm(T(x), None, None, training=True)),
        (pyconv.pad(x, (1, 1, 1, 1), "reflect"), F.pad(T(x), (1, 1, 1, 1), "reflect")),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xt, t = x.reshape(8, 36)[:, :5].copy(), np.array([0, 1, 2, 3, 4, 0, 1, 2])
        for red in ("none", "sum", "mean"):
            pairs.append((pyconv.cross_entropy(xt, t, red), F.cross_entropy(T(xt), T(t), reduction=red)))
            pairs.append((pyconv.mse_loss(xt, np.zeros_like(xt), red), F.mse_loss(T(xt), T(np.zeros_like(xt)), reduction=red)))
    for i, (got, want) in enumerate(pairs):
        _close(got, want.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_denormal_inputs_not_flushed(op):
    for dt in (np.float32, np.float64):
        _denormal_check(op, dt)


def _denormal_check(op, dt):
    """Each float argument in turn scaled into the subnormal range: results match the
    float64 reference with an absolute tolerance far below the subnormal values
    (flush-to-zero / denormals-are-zero would fail)."""
    tiny = 1e-40 if dt == np.float32 else 1e-310
    atol = 1e-43 if dt == np.float32 else 1e-320
    for name in op.floats:
        if op.name.startswith(("sigmoid_backward", "tanh_backward", "softmax_backward", "log_softmax_backward",
                               "batch_norm", "nll_loss")) or op.name.startswith("cross_entropy[prob]"):
            continue  # these arguments are forward outputs / statistics, not free inputs
        floats = {k: v.astype(dt) for k, v in op.floats.items()}
        floats[name] = (op.floats[name] * tiny).astype(dt)
        assert np.any((floats[name] != 0) & (np.abs(floats[name]) < np.finfo(dt).tiny))
        got = op(**floats)
        want = op.ref(**{k: v.astype(np.float64) for k, v in floats.items()})
        rtol = 2e-6 if dt == np.float32 else 1e-10
        for g, w in zip(_arrays(got), _arrays(want)):
            g64, w64 = g.astype(np.float64), np.asarray(w, np.float64)
            if g.dtype.kind in "iu":
                np.testing.assert_array_equal(g, w)
                continue
            # the result's own rounding (incl. cancellation) where it is normal, atol where it is
            # subnormal: a flushed subnormal is off by ~tiny >> atol
            scale = np.abs(w64).max(initial=0)
            np.testing.assert_allclose(g64, w64, rtol=rtol, atol=max(atol, (1e-6 if dt == np.float32 else 1e-13) * scale),
                                       err_msg=f"{name} subnormal, {np.dtype(dt).name}")


def test_denormal_batch_norm_and_nll():
    x = np.full((4, 3), 1e-310)
    x[0] = 3e-310
    y = pyconv.batch_norm(x, np.zeros(3), np.ones(3), eps=1e-300)
    np.testing.assert_array_equal(y, x / np.sqrt(1 + 1e-300))
    lp = np.full((2, 3), -1e-310)
    assert pyconv.nll_loss(lp, np.array([0, 2]), "sum") == 2e-310


# ===========================================================================
# 5. layouts and dtypes
# ===========================================================================
def _noncontig(a):
    big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
    v = big[tuple(slice(1, None, 2) for _ in a.shape)]
    v[...] = a
    assert a.ndim == 0 or not v.flags.c_contiguous or a.size <= 1
    return v


def _negstride(a):
    v = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
    return v[tuple(slice(None, None, -1) for _ in a.shape)]


def _readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _bigendian(a):
    return a.astype(a.dtype.newbyteorder(">"))


LAYOUTS = {"noncontig": _noncontig, "negstride": _negstride, "fortran": np.asfortranarray,
           "readonly": _readonly, "bigendian": _bigendian,
           "broadcast": lambda a: np.broadcast_to(a, a.shape)}


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_layouts_give_identical_bits(op):
    """Every layout of every float argument (all at once, then one at a time) gives the
    bits of the contiguous call; inputs are never written."""
    fails = _Failures()
    snapshot = {k: v.copy() for k, v in op.floats.items()}
    for dt in (np.float64, np.float32):
        floats = {k: v.astype(dt) for k, v in op.floats.items()}
        want = op(**floats)
        for layout, f in LAYOUTS.items():
            fails.check(f"{layout} {np.dtype(dt).name} (all)", lambda: _same_bits(op(**{k: f(v) for k, v in floats.items()}), want))
            if len(floats) > 1:
                for name in floats:
                    fails.check(f"{layout} {np.dtype(dt).name} ({name})",
                                lambda: _same_bits(op(**{k: (f(v) if k == name else v) for k, v in floats.items()}), want))
    for k, v in op.floats.items():
        np.testing.assert_array_equal(v, snapshot[k])
    fails.done()


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_float16_computed_in_float32_returned_float16(op):
    floats = {k: v.astype(np.float16) for k, v in op.floats.items()}
    got = op(**floats)
    want = op(**{k: v.astype(np.float32) for k, v in floats.items()})
    g, w = _arrays(got), _arrays(want)
    for a, b in zip(g, w):
        if b.dtype.kind == "f":
            assert a.dtype == np.float16
            np.testing.assert_array_equal(a, b.astype(np.float16))
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", [o for o in OPS if o.name != "cross_entropy[prob]"],
                         ids=[o.name for o in OPS if o.name != "cross_entropy[prob]"])
def test_integer_and_bool_computed_as_float64(op):
    fails = _Failures()
    for kind in ("int8", "int32", "uint16", "int64", "bool", ">i4"):
        if kind == "bool":
            floats = {k: v > 0 for k, v in op.floats.items()}
        else:
            lo = 0 if kind[0] == "u" else -7
            floats = {k: np.clip(np.round(v * 3), lo, 7).astype(kind) for k, v in op.floats.items()}

        def check():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = op(**floats)
                want = op(**{k: v.astype(np.float64) for k, v in floats.items()})
            for a, b in zip(_arrays(got), _arrays(want)):
                if b.dtype.kind == "f":
                    assert a.dtype == np.float64, a.dtype
                np.testing.assert_array_equal(a, b)

        fails.check(kind, check)
    fails.done()


def test_integer_probability_target_is_read_as_class_indices():
    """An integer target for cross_entropy always means class indices (torch: long target),
    so an integer (N, C) 'probability' array is a shape error naming target."""
    with pytest.raises(ValueError, match=r"target must have shape \(6,\)"):
        pyconv.cross_entropy(np.ones((6, 5)), np.ones((6, 5), np.int64))


@pytest.mark.parametrize("op", [o for o in OPS if len(o.floats) > 1], ids=[o.name for o in OPS if len(o.floats) > 1])
def test_mixed_float32_float64_promotes(op):
    fails = _Failures()
    for name in op.floats:
        for odd, rest in ((np.float32, np.float64), (np.float64, np.float32)):
            if op.name in _LOSS_BACKWARD and (np.float64 if name == "grad_output" else rest) == np.float64 \
                    and (odd if name == "input" else rest) == np.float32:
                continue  # float64 grad_output, float32 input: see test_mixed_loss_grad_output_promotes
            floats = {k: v.astype(odd if k == name else rest) for k, v in op.floats.items()}

            def check():
                got = op(**floats)
                want = op(**{k: v.astype(np.float64) for k, v in floats.items()})
                for a, b in zip(_arrays(got), _arrays(want)):
                    if b.dtype.kind == "f":
                        assert a.dtype == np.float64, f"result {a.dtype}"
                    np.testing.assert_array_equal(a, b)

            fails.check(f"{name} {np.dtype(odd).name}, others {np.dtype(rest).name}", check)
    fails.done()


@quiet
def test_batch_norm_channel_vectors_follow_the_input():
    # By design (PyTorch's mixed precision: float16 activations, float32
    # parameters): the result and the computation take the input's dtype, the
    # per-channel vectors are cast to it, and running statistics keep their own.
    x = np.ones((4, 3), np.float32)
    y = pyconv.batch_norm(x, np.zeros(3), np.ones(3), np.ones(3), np.zeros(3))
    assert y.dtype == np.float32
    rm, rv = np.zeros(3), np.ones(3)  # float64 running statistics
    y, mean, invstd = pyconv.batch_norm(x, rm, rv, np.ones(3), None, training=True, return_stats=True)
    assert y.dtype == mean.dtype == invstd.dtype == np.float32
    assert rm.dtype == np.float64 and np.allclose(rm, 0.1) and np.allclose(rv, 0.9)
    grads = pyconv.batch_norm_backward(np.ones((4, 3), np.float32), x, np.ones(3), mean, invstd)
    assert all(g.dtype == np.float32 for g in grads)
    y16 = pyconv.batch_norm(x.astype(np.float16), None, None, np.ones(3, np.float32), training=True)
    assert y16.dtype == np.float16


@pytest.mark.parametrize("fn", sorted(_LOSS_BACKWARD))
@quiet
def test_mixed_loss_grad_output_promotes(fn):
    # (was a known bug: grad_output's dtype did not take part in promotion)
    x = np.ones((2, 3), np.float32)
    args = {"mse_loss_backward": (x, x, "none"), "cross_entropy_backward": (x, np.array([0, 1]), "none"),
            "nll_loss_backward": (x, np.array([0, 1]), "none")}[fn]
    g = np.ones((2, 3)) if fn == "mse_loss_backward" else np.ones(2)
    assert getattr(pyconv, fn)(g, *args).dtype == np.float64
    assert getattr(pyconv, fn)(g.astype(np.float32), *args).dtype == np.float32
    # a plain Python number is weak, as in NumPy: 1.0 keeps a float32 loss float32
    reduced = (args[0], args[1], "mean")
    assert getattr(pyconv, fn)(1.0, *reduced).dtype == np.float32
    assert getattr(pyconv, fn)(np.float64(1.0), *reduced).dtype == np.float64


@pytest.mark.parametrize("op", [o for o in OPS if o.elementwise], ids=[o.name for o in OPS if o.elementwise])
def test_zero_dim_elementwise(op):
    floats = {k: np.asarray(v.reshape(-1)[3]) for k, v in op.floats.items()}
    got = op(**floats)
    want = op(**{k: v.reshape(1) for k, v in floats.items()})
    assert np.shape(got) == ()
    _same_bits(np.asarray(got).reshape(1), want)
    # numpy scalars and python floats too
    got2 = op(**{k: np.float64(v) for k, v in floats.items()})
    _same_bits(np.asarray(got2).reshape(1), want)


@pytest.mark.parametrize("op", [o for o in OPS if not o.elementwise], ids=[o.name for o in OPS if not o.elementwise])
def test_zero_dim_structured_ops_rejected_or_correct(op):
    floats = {k: np.asarray(2.0) for k in op.floats}
    try:
        op(**floats)
    except (ValueError, TypeError) as e:
        assert re.search("|".join(map(re.escape, list(op.floats) + ["axis"])), str(e)), str(e)
    else:  # only the elementwise-like losses accept 0-d
        assert op.name.startswith("mse_loss"), "0-d accepted"


_BAD_DTYPES = {
    "object": lambda v: v.astype(object),
    "complex": lambda v: v.astype(np.complex128),
    "str": lambda v: v.astype(str),
    "bytes": lambda v: v.astype("S8"),
    "datetime": lambda v: v.astype("i8").astype("M8[s]"),
    "timedelta": lambda v: v.astype("i8").astype("m8[s]"),
    "void": lambda v: np.zeros(v.shape, "V8"),
    "structured": lambda v: np.zeros(v.shape, [("a", "f8")]),
    "ragged list": lambda v: [list(np.ravel(v)), [1.0]],
    "None": lambda v: None,
}


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_unsupported_dtypes_raise_typeerror_naming_argument(op):
    fails = _Failures()
    for name, v in op.floats.items():
        for bad, make in _BAD_DTYPES.items():
            if bad == "ragged list" and (v.size < 2 or (name == "grad_output" and op.name in _LOSS_BACKWARD)):
                continue  # (loss grad_output: see test_loss_grad_output_ragged_named)
            if bad == "None" and name == "bias":
                continue  # bias=None is valid
            floats = dict(op.floats)
            floats[name] = make(v)
            # None is a 0-d object array to NumPy: a shape error naming the argument is as clear
            exc = (TypeError, ValueError) if bad == "None" else TypeError

            def check():
                with pytest.raises(exc, match=rf"\b{re.escape(name)}\b"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    op(**floats)

            fails.check(f"{name}={bad}", check)
    fails.done()


@pytest.mark.parametrize("fn", sorted(_LOSS_BACKWARD))
@quiet
def test_loss_grad_output_ragged_named(fn):
    x = np.ones((2, 3))
    args = {"mse_loss_backward": (x, x), "cross_entropy_backward": (x, np.array([0, 1])),
            "nll_loss_backward": (x, np.array([0, 1]))}[fn]
    with pytest.raises(TypeError, match=r"grad_output"):
        getattr(pyconv, fn)([[1.0, 2.0], [1.0]], *args)


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 here")
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_longdouble_rejected_or_exact(op):
    """longdouble is not a documented dtype: a TypeError naming the argument, or (where an
    argument is simply converted, e.g. a loss grad_output) the float64 result."""
    for name, v in op.floats.items():
        floats = dict(op.floats)
        floats[name] = v.astype(np.longdouble)
        try:
            got = op(**floats)
        except TypeError as e:
            assert re.search(rf"\b{re.escape(name)}\b", str(e)), str(e)
        else:
            _same_bits(got, op(**op.floats))


@pytest.mark.parametrize("arg", ["weight", "bias", "running_mean", "running_var"])
@pytest.mark.parametrize("bad", ["object", "str", "complex"])
@quiet
def test_batch_norm_channel_vector_dtypes(arg, bad):
    v = {"object": np.array([1.0, None]), "str": np.array(["1", "2"]), "complex": np.array([1 + 1j, 2])}[bad]
    kw = dict(running_mean=np.zeros(2), running_var=np.ones(2))
    kw[arg] = v
    with pytest.raises(TypeError, match=arg), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyconv.batch_norm(np.ones((3, 2)), **kw)


@pytest.mark.parametrize("arg", ["weight", "save_mean", "save_invstd"])
@pytest.mark.parametrize("bad", ["object", "str"])
@quiet
def test_batch_norm_backward_channel_vector_dtypes(arg, bad):
    v = {"object": np.array([1.0, None]), "str": np.array(["1", "2"])}[bad]
    kw = dict(weight=np.ones(2), save_mean=np.zeros(2), save_invstd=np.ones(2))
    kw[arg] = v
    with pytest.raises(TypeError, match=arg):
        pyconv.batch_norm_backward(np.ones((3, 2)), np.ones((3, 2)), **kw)


def test_batch_norm_running_stats_must_be_writable_float():
    x = np.ones((3, 2))
    ro = np.zeros(2)
    ro.setflags(write=False)
    for bad in (ro, [0.0, 0.0], np.zeros(2, np.int64)):
        with pytest.raises(TypeError, match=r"running_mean must be a writable float ndarray"):
            pyconv.batch_norm(x, bad, np.ones(2), training=True)
    with pytest.raises(ValueError, match=r"running_var must have shape \(2,\), got \(3,\)"):
        pyconv.batch_norm(x, np.zeros(2), np.ones(3), training=True)
    # non-contiguous / big-endian float running stats are updated in place
    rm = np.zeros(4)[::2]
    rv = np.ones(2, ">f8")
    pyconv.batch_norm(np.arange(6.0).reshape(3, 2), rm, rv, training=True, momentum=0.5)
    np.testing.assert_allclose(rm, [1.0, 1.5])
    np.testing.assert_allclose(rv, [0.5 + 0.5 * 4.0, 0.5 + 0.5 * 4.0])


def test_gemm_reads_strided_operands_in_place_correctly():
    r = np.random.default_rng(5)
    A, B = r.standard_normal((37, 29)), r.standard_normal((29, 23))
    for a, b in ((A[::-1, ::-1], B[::-1]), (np.asfortranarray(A), B.T.copy().T),
                 (np.broadcast_to(A[:1], A.shape), np.broadcast_to(B[:, :1], B.shape)),
                 (A.astype(np.float32)[::-2], B.astype(np.float32)[:, ::-1])):
        np.testing.assert_allclose(pyconv.gemm(a, b), np.asarray(a, np.float64) @ np.asarray(b, np.float64),
                                   rtol=1e-5 if a.dtype == np.float32 else 1e-12, atol=1e-4 if a.dtype == np.float32 else 1e-12)
    out = np.full((74, 23), 5.0)[::-2]
    res = pyconv.gemm(A, B, out=out)
    assert res is out
    np.testing.assert_allclose(out, A @ B, rtol=1e-12, atol=1e-12)


def test_gemm_beta_zero_never_reads_out():
    out = np.full((3, 2), np.nan)
    pyconv.gemm(np.ones((3, 4)), np.ones((4, 2)), out=out, beta=0.0)
    np.testing.assert_array_equal(out, 4.0)


@pytest.mark.parametrize("which", ["a", "b"])
@quiet
def test_gemm_out_aliasing_an_operand(which):
    r = np.random.default_rng(0)
    a, b = r.standard_normal((300, 300)), r.standard_normal((300, 300))
    want = a @ b
    try:
        if which == "a":
            got = pyconv.gemm(a, b, out=a)
        else:
            got = pyconv.gemm(a, b, out=b)
    except ValueError as e:  # refusing the overlap cleanly would also be fine
        assert "out" in str(e)
        return
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


# ===========================================================================
# 6. pooling indices and class targets
# ===========================================================================
_XP = np.random.default_rng(11).standard_normal((2, 3, 6, 6))
_YP, _IP = pyconv.max_pool2d(_XP, 2, return_indices=True)
_YA, _IA = pyconv.adaptive_max_pool2d(_XP, 3, return_indices=True)


def _idx_cases():
    good = _IP
    return [
        ("too large", np.where(good == good.max(), 36, good), ValueError, r"indices.*(out of range|outside).*36"),
        ("negative", np.where(good == good.min(), -1, good), ValueError, r"indices.*(out of range|outside)"),
        ("int64 min", np.full_like(good, np.iinfo(np.int64).min), ValueError, r"indices"),
        ("uint64 wraps", np.full(good.shape, 2**63 + 5, np.uint64), ValueError, r"indices"),
        ("float", good.astype(np.float64), TypeError, r"indices must be an integer array"),
        ("bool", good > 3, TypeError, r"indices must be an integer array"),
        ("object", good.astype(object), TypeError, r"indices must be an integer array"),
        ("wrong shape", good[:, :, :2], ValueError, r"indices shape \(2, 3, 2, 3\) must match grad_output"),
        ("flat", good.reshape(-1), ValueError, r"indices shape"),
        ("0-d", np.int64(0), ValueError, r"indices shape"),
    ]


@pytest.mark.parametrize("fn", ["max_pool2d_backward", "adaptive_max_pool2d_backward"])
@pytest.mark.parametrize("case", _idx_cases(), ids=[c[0] for c in _idx_cases()])
def test_user_indices_validated(fn, case):
    _, idx, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        getattr(pyconv, fn)(np.ones(_YP.shape), idx, _XP.shape)


@pytest.mark.parametrize("fn", ["max_pool2d_backward", "adaptive_max_pool2d_backward"])
def test_user_indices_any_in_range_value_is_accepted(fn):
    """Indices need not come from a forward pass: any value in [0, H*W) is a valid
    scatter target (int32, non-contiguous and big-endian index arrays too)."""
    dy = np.ones(_YP.shape)
    for idx in (np.zeros(_IP.shape, np.int32), np.full(_IP.shape, 35, ">i8"), _noncontig(_IP), _readonly(_IP)):
        dx = getattr(pyconv, fn)(dy, idx, _XP.shape)
        np.testing.assert_array_equal(dx, RO.max_pool_backward_indices_ref(dy, np.asarray(idx, np.int64), _XP.shape))


def test_user_indices_grad_output_shape_mismatch():
    with pytest.raises(ValueError, match=r"grad_output shape \(2, 3, 3, 3\) does not match input_shape \(2, 4, 6, 6\)"):
        pyconv.max_pool2d_backward(np.ones(_YP.shape), _IP, (2, 4, 6, 6))
    with pytest.raises(ValueError, match=r"input_shape must have 3 or 4 dims"):
        pyconv.max_pool2d_backward(np.ones(_YP.shape), _IP, (6, 6))
    # indices valid for a bigger plane are out of range for a smaller input_shape
    with pytest.raises(ValueError, match=r"indices.*(out of range|outside)"):
        pyconv.max_pool2d_backward(np.ones(_YP.shape), np.full(_IP.shape, 20), (2, 3, 4, 4))


_LOGITS = np.random.default_rng(12).standard_normal((4, 5))


def _target_cases():
    return [
        ("== C", np.array([0, 5, 1, 2]), ValueError, r"target contains class index 5, outside \[0, 5\)"),
        ("negative", np.array([0, -1, 1, 2]), ValueError, r"target contains class index -1"),
        ("ignore_index -100", np.array([0, -100, 1, 2]), ValueError, r"target contains class index -100"),
        ("huge", np.array([0, 2**62, 1, 2]), ValueError, r"target contains class index 4611686018427387904"),
        ("uint64 2^63+1", np.array([0, 2**63 + 1, 1, 2], np.uint64), ValueError, r"target contains class index 9223372036854775809"),
        ("int8 negative", np.array([0, -3, 1, 2], np.int8), ValueError, r"target contains class index -3"),
        ("bool", np.array([True, False, True, False]), TypeError, r"target"),
        ("object", np.array([0, 1, None, 2], dtype=object), TypeError, r"target"),
        ("wrong shape", np.array([0, 1, 2]), ValueError, r"target must have shape \(4,\)"),
        ("2-d int", np.zeros((4, 1), np.int64), ValueError, r"target must have shape \(4,\)"),
    ]


@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_backward", "nll_loss", "nll_loss_backward"])
@pytest.mark.parametrize("case", _target_cases(), ids=[c[0] for c in _target_cases()])
def test_class_targets_validated(fn, case):
    _, t, exc, pattern = case
    args = (_LOGITS, t) if not fn.endswith("backward") else (np.float64(1.0), _LOGITS, t)
    with pytest.raises(exc, match=pattern):
        getattr(pyconv, fn)(*args)


def test_float_targets():
    with pytest.raises(TypeError, match=r"target must hold integer class indices, got dtype float64"):
        pyconv.nll_loss(_LOGITS, np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"probability target must have the input's shape \(4, 5\), got \(4,\)"):
        pyconv.cross_entropy(_LOGITS, np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"target shape \(4, 4\) must match input shape \(4, 5\)"):
        pyconv.mse_loss(_LOGITS, np.zeros((4, 4)))


def test_loss_grad_output_shape_and_dtype():
    t = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"grad_output must be a scalar for a reduced loss, got shape \(4,\)"):
        pyconv.cross_entropy_backward(np.ones(4), _LOGITS, t, "mean")
    with pytest.raises(ValueError, match=r"grad_output must have shape \(4,\) for reduction='none'"):
        pyconv.nll_loss_backward(1.0, _LOGITS, t, "none")
    with pytest.raises(TypeError, match=r"grad_output has unsupported dtype"):
        pyconv.mse_loss_backward("1", _LOGITS, _LOGITS)
    with pytest.raises(TypeError, match=r"grad_output has unsupported dtype"):
        pyconv.cross_entropy_backward(np.array([1], dtype=object), _LOGITS, t)


# ===========================================================================
# 7. kernel / stride / padding / dilation / groups / ... values and types
# ===========================================================================
_X = np.ones((1, 4, 6, 6), np.float32)
_W = np.ones((2, 4, 3, 3), np.float32)
_DY = np.ones((1, 2, 4, 4), np.float32)

# (target id, argument name, callable taking the value, values that are VALID and
# must not raise). Values tried: see BAD_TYPES / BAD_VALUES.
INT_ARGS = [
    ("conv2d.stride", "stride", lambda v: pyconv.conv2d(_X, _W, stride=v)),
    ("conv2d.padding", "padding", lambda v: pyconv.conv2d(_X, _W, padding=v)),
    ("conv2d.dilation", "dilation", lambda v: pyconv.conv2d(_X, _W, dilation=v)),
    ("conv2d.groups", "groups", lambda v: pyconv.conv2d(_X, _W, groups=v)),
    ("conv2d_backward.stride", "stride", lambda v: pyconv.conv2d_backward(_DY, _X, _W, stride=v)),
    ("conv2d_backward.dilation", "dilation", lambda v: pyconv.conv2d_backward(_DY, _X, _W, dilation=v)),
    ("conv2d_backward.groups", "groups", lambda v: pyconv.conv2d_backward(_DY, _X, _W, groups=v)),
    ("conv2d_input.stride", "stride", lambda v: pyconv.conv2d_input(_X.shape, _W, _DY, stride=v)),
    ("conv2d_weight.padding", "padding", lambda v: pyconv.conv2d_weight(_X, _W.shape, _DY, padding=v)),
    ("conv2d_input.input_size", "input_size", lambda v: pyconv.conv2d_input((1, 4, v, 6), _W, _DY)),
    ("conv2d_weight.weight_size", "weight_size", lambda v: pyconv.conv2d_weight(_X, (2, 4, v, 3), _DY)),
    ("max_pool2d.kernel_size", "kernel_size", lambda v: pyconv.max_pool2d(_X, v)),
    ("max_pool2d.stride", "stride", lambda v: pyconv.max_pool2d(_X, 2, stride=v)),
    ("max_pool2d.padding", "padding", lambda v: pyconv.max_pool2d(_X, 3, padding=v)),
    ("max_pool2d.dilation", "dilation", lambda v: pyconv.max_pool2d(_X, 2, dilation=v)),
    ("avg_pool2d.kernel_size", "kernel_size", lambda v: pyconv.avg_pool2d(_X, v)),
    ("avg_pool2d.stride", "stride", lambda v: pyconv.avg_pool2d(_X, 2, stride=v)),
    ("avg_pool2d.padding", "padding", lambda v: pyconv.avg_pool2d(_X, 3, padding=v)),
    ("avg_pool2d.divisor_override", "divisor_override", lambda v: pyconv.avg_pool2d(_X, 2, divisor_override=v)),
    ("avg_pool2d_backward.kernel_size", "kernel_size", lambda v: pyconv.avg_pool2d_backward(np.ones((1, 4, 3, 3)), _X.shape, v)),
    ("avg_pool2d_backward.padding", "padding", lambda v: pyconv.avg_pool2d_backward(np.ones((1, 4, 2, 2)), _X.shape, 3, padding=v)),
    ("adaptive_avg_pool2d.output_size", "output_size", lambda v: pyconv.adaptive_avg_pool2d(_X, v)),
    ("adaptive_max_pool2d.output_size", "output_size", lambda v: pyconv.adaptive_max_pool2d(_X, (3, v))),
    ("max_pool2d_backward.input_shape", "input_shape", lambda v: pyconv.max_pool2d_backward(np.ones((1, 4, 3, 3)), np.zeros((1, 4, 3, 3), np.int64), (1, 4, v, 6))),
    ("softmax.axis", "axis", lambda v: pyconv.softmax(_X, v)),
    ("log_softmax_backward.axis", "axis", lambda v: pyconv.log_softmax_backward(_X, _X, v)),
    ("maxout.pieces", "pieces", lambda v: pyconv.maxout(_X, v)),
    ("maxout_backward.pieces", "pieces", lambda v: pyconv.maxout_backward(np.ones((1, 2, 6, 6)), _X, v)),
    ("maxout.axis", "axis", lambda v: pyconv.maxout(_X, 2, v)),
    ("pad.padding", "padding", lambda v: pyconv.pad(_X, (1, v))),
    ("pad_backward.padding", "padding", lambda v: pyconv.pad_backward(np.ones((1, 4, 6, 9)), _X.shape, (1, v))),
    ("pad_backward.input_shape", "input_shape", lambda v: pyconv.pad_backward(np.ones((1, 4, 6, 8)), (1, 4, 6, v), (1, 1))),
]
INT_ARG_IDS = [a[0] for a in INT_ARGS]

BAD_TYPES = {"float 2.0": 2.0, "float 2.5": 2.5, "bool True": True, "bool False": False, "None": None,
             "str": "2", "np.float64": np.float64(2.0), "complex": 2 + 0j, "nan": float("nan"),
             "inf": float("inf"), "bytes": b"2", "object": object()}


def _none_ok(target):
    # stride=None means "= kernel_size" for pooling; divisor_override=None is the default
    return target in ("max_pool2d.stride", "avg_pool2d.stride", "avg_pool2d.divisor_override",
                      "adaptive_max_pool2d.output_size")  # (3, None): None keeps the input width


@pytest.mark.parametrize("target", INT_ARGS, ids=INT_ARG_IDS)
def test_int_args_reject_non_ints_with_typeerror(target):
    tid, name, call = target
    fails = _Failures()
    for bad, v in BAD_TYPES.items():
        def check():
            if v is None and _none_ok(tid):
                call(v)
            elif tid.startswith("conv2d") and name == "padding" and bad == "str":  # strings are modes
                with pytest.raises(ValueError, match=r"padding must be an int, a pair, 'valid' or 'same', got '2'"):
                    call(v)
            else:
                with pytest.raises(TypeError, match=rf"\b{name}\b"):
                    call(v)

        fails.check(bad, check)
    fails.done()


@pytest.mark.parametrize("target", [t for t in INT_ARGS if t[1] in ("stride", "padding", "dilation", "kernel_size", "output_size")
                                    and not t[0].startswith("pad")],
                         ids=[t[0] for t in INT_ARGS if t[1] in ("stride", "padding", "dilation", "kernel_size", "output_size")
                              and not t[0].startswith("pad")])
def test_pair_args_reject_bad_pairs(target):
    tid, name, call = target
    if tid == "adaptive_max_pool2d.output_size":  # the pair is built by the lambda
        call = (lambda v: pyconv.adaptive_max_pool2d(_X, v))
    fails = _Failures()
    for bad, v in {"pair of floats": (2.0, 2.0), "pair with bool": (2, True), "triple": (1, 2, 3), "empty": (),
                   "pair with None": (None, 2), "nested": ((1, 2), 1), "list of str": ["1", "2"],
                   "pair with 0": (2, 0) if name != "padding" else (2, -1)}.items():
        def check():
            if bad == "empty" and tid in ("max_pool2d.stride", "avg_pool2d.stride"):
                call(v)  # torch's convention: stride=[] means kernel_size
            elif bad == "pair with None" and name == "output_size":
                call(v)  # None keeps the input size (torch)
            else:
                with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
                    call(v)

        fails.check(bad, check)
    fails.done()


# (target, value, exception, regex): non-positive / negative / too large values
BAD_VALUES = [
    ("conv2d.stride", 0, ValueError, r"stride must be positive, got 0"),
    ("conv2d.stride", (1, -2), ValueError, r"stride must be positive, got \(1, -2\)"),
    ("conv2d.padding", -1, ValueError, r"padding must be non-negative, got -1"),
    ("conv2d.dilation", 0, ValueError, r"dilation must be positive"),
    ("conv2d.dilation", 2**40, ValueError, r"dilation \(1099511627776, 1099511627776\) .* larger than the padded input"),
    ("conv2d.groups", 0, ValueError, r"groups must be >= 1, got 0"),
    ("conv2d.groups", 3, ValueError, r"groups=3 must divide in_channels=4"),
    ("conv2d.groups", 2**64, ValueError, r"groups=18446744073709551616 must divide"),
    ("conv2d_backward.stride", -(2**63), ValueError, r"stride must be positive"),
    ("conv2d_input.input_size", 0, ValueError, r"input_size has an empty channel or spatial dimension"),
    ("conv2d_input.input_size", -1, ValueError, r"input_size must not have negative entries"),
    ("conv2d_weight.weight_size", 0, ValueError, r"weight_size has kernel height 0"),
    ("conv2d_weight.weight_size", 2**40, ValueError, r"kernel size \(1099511627776, 3\).*larger than the padded input"),
    ("max_pool2d.kernel_size", 0, ValueError, r"kernel_size must be positive, got 0"),
    ("max_pool2d.kernel_size", -3, ValueError, r"kernel_size must be positive"),
    ("max_pool2d.kernel_size", 7, ValueError, r"kernel_size=7 .* larger than the padded input \(6, 6\)"),
    ("max_pool2d.kernel_size", 2**64, ValueError, r"kernel_size=18446744073709551616 .* larger than the padded input"),
    ("max_pool2d.stride", 0, ValueError, r"stride must be positive"),
    ("max_pool2d.padding", -1, ValueError, r"padding must be non-negative"),
    ("max_pool2d.padding", 2, ValueError, r"padding=2 must be at most half of kernel_size=3"),
    ("max_pool2d.padding", 2**63, ValueError, r"padding=9223372036854775808 must be at most half"),
    ("max_pool2d.dilation", 0, ValueError, r"dilation must be positive"),
    ("max_pool2d.dilation", 2**40, ValueError, r"kernel_size=2 with dilation=1099511627776 is larger"),
    ("avg_pool2d.kernel_size", (2, 0), ValueError, r"kernel_size must be positive, got \(2, 0\)"),
    ("avg_pool2d.padding", (1, 2), ValueError, r"padding=\(1, 2\) must be at most half of kernel_size=3"),
    ("avg_pool2d.divisor_override", 0, ValueError, r"divisor_override must be positive, got 0"),
    ("avg_pool2d.divisor_override", -5, ValueError, r"divisor_override must be positive"),
    ("avg_pool2d_backward.kernel_size", 0, ValueError, r"kernel_size must be positive"),
    ("avg_pool2d_backward.padding", 2, ValueError, r"padding=2 must be at most half"),
    ("adaptive_avg_pool2d.output_size", 0, ValueError, r"output_size must be positive, got 0"),
    ("adaptive_max_pool2d.output_size", -1, ValueError, r"output_size must be positive"),
    ("softmax.axis", 4, ValueError, r"axis=4 is out of range for a 4-d input"),
    ("softmax.axis", -5, ValueError, r"axis=-5 is out of range"),
    ("softmax.axis", 2**63, ValueError, r"axis=9223372036854775808 is out of range"),
    ("log_softmax_backward.axis", 7, ValueError, r"axis=7 is out of range"),
    ("maxout.pieces", 0, ValueError, r"pieces=0 must be positive"),
    ("maxout.pieces", 3, ValueError, r"pieces=3 must be positive and divide the 4 channels"),
    ("maxout.pieces", -(2**70), ValueError, r"pieces=-1180591620717411303424 must be positive"),
    ("maxout_backward.pieces", 4, ValueError, r"grad_output must have shape \(1, 1, 6, 6\)"),
    ("maxout.axis", 9, ValueError, r"axis=9 is out of range"),
    ("pad.padding", -1, ValueError, r"padding must be non-negative, got \(1, -1\)"),
    ("pad_backward.padding", -2, ValueError, r"padding must be non-negative"),
    ("pad_backward.input_shape", 7, ValueError, r"grad_output must have the padded shape \(1, 4, 6, 9\)"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c[0]}={c[1]!r}") for c in BAD_VALUES])
def test_bad_values_raise_valueerror_naming_argument(case):
    tid, v, exc, pattern = case
    call = dict((t[0], t[2]) for t in INT_ARGS)[tid]
    if isinstance(v, int) and abs(v) > 2**31 - 1:
        # every size-like int is range-checked first (|v| <= 2**31 - 1), naming the argument
        pattern = rf"{tid.split('.')[-1]}=-?\d+ is out of range"
    with pytest.raises(exc, match=pattern):
        call(v)


@pytest.mark.parametrize("case", [
    pytest.param(("max_pool2d_backward.input_shape", -4), id="max_pool2d_backward input_shape -4"),
    pytest.param(("adaptive_avg_pool2d_backward", -4), id="adaptive_avg_pool2d_backward input_shape -4"),
    pytest.param(("pad_backward", -2), id="pad_backward input_shape -2"),
    pytest.param(("conv2d_input N", -1), id="conv2d_input input_size N=-1"),
])
@quiet
def test_negative_shape_entries_named(case):
    which, v = case
    if which.startswith("max_pool2d_backward"):
        call, name = (lambda: pyconv.max_pool2d_backward(np.ones((1, 4, 3, 3)), np.zeros((1, 4, 3, 3), np.int64), (1, 4, v, 6))), "input_shape"
    elif which.startswith("adaptive"):
        call, name = (lambda: pyconv.adaptive_avg_pool2d_backward(np.ones((1, 2, 2, 2)), (1, 2, v, 4))), "input_shape"
    elif which.startswith("pad"):
        call, name = (lambda: pyconv.pad_backward(np.ones((1, 2, 2, 2)), (1, 2, 2, v), (2, 2))), "input_shape"
    else:
        call, name = (lambda: pyconv.conv2d_input((v, 4, 6, 6), _W, np.ones((1, 2, 4, 4)))), "input_size"
    with pytest.raises(ValueError, match=name):
        call()


def test_padding_larger_than_allowed():
    with pytest.raises(ValueError, match=r"reflect padding \(6, 0\) must be smaller than the input size \(6, 6\)"):
        pyconv.pad(_X, (6, 0), "reflect")
    with pytest.raises(ValueError, match=r"reflect padding \(0, 0, 0, 6\) must be smaller"):
        pyconv.pad_backward(np.ones((1, 4, 12, 6)), _X.shape, (0, 0, 0, 6), "reflect")
    with pytest.raises(ValueError, match=r"circular padding \(7, 0\) must not exceed the input size"):
        pyconv.pad(_X, (7, 0), "circular")
    with pytest.raises(ValueError, match=r"padding \(1, 1, 1, 1\) needs an input with at least 2 dims, got 1"):
        pyconv.pad(np.ones(5), (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"mode='replicate' pads 3-d or 4-d input, got 2-d"):
        pyconv.pad(np.ones((5, 5)), (1, 1), "replicate")
    with pytest.raises(ValueError, match=r"padding=\(2, 1\) must be at most half of kernel_size=\(3, 3\)"):
        pyconv.max_pool2d(_X, (3, 3), padding=(2, 1))
    with pytest.raises(ValueError, match=r"padding='same' requires stride=1, got stride=2"):
        pyconv.conv2d(_X, _W, padding="same", stride=2)
    with pytest.raises(ValueError, match=r"padding must be an int, a pair, 'valid' or 'same', got 'SAME'"):
        pyconv.conv2d(_X, _W, padding="SAME")
    with pytest.raises(ValueError, match=r"reflect padding .* must be smaller"):  # padding_mode goes through pad
        pyconv.conv2d(_X, _W, padding=6, padding_mode="reflect")
    # conv2d's own padding has no upper bound (torch): a big padding is just zeros around
    y = pyconv.conv2d(_X, _W, padding=(40, 0))
    assert y.shape == (1, 2, 84, 4) and not y[:, :, :37].any()


def test_real_valued_args():
    x = np.ones((2, 3))
    for name, call in (("negative_slope", lambda v: pyconv.leaky_relu(x, v)),
                       ("negative_slope", lambda v: pyconv.leaky_relu_backward(x, x, v)),
                       ("alpha", lambda v: pyconv.elu(x, v)), ("alpha", lambda v: pyconv.elu_backward(x, x, v)),
                       ("label_smoothing", lambda v: pyconv.cross_entropy(x, np.array([0, 1]), label_smoothing=v)),
                       ("eps", lambda v: pyconv.batch_norm(x, np.zeros(3), np.ones(3), eps=v)),
                       ("momentum", lambda v: pyconv.batch_norm(x, np.zeros(3), np.ones(3), training=True, momentum=v)),
                       ("value", lambda v: pyconv.pad(x, (1, 1), value=v))):
        for bad in (True, None, "0.1", [0.1], 1j, np.array([0.1, 0.2])):
            with pytest.raises(TypeError, match=rf"{name} must be a real number"):
                call(bad)
    for v in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
            pyconv.cross_entropy(x, np.array([0, 1]), label_smoothing=v)
    for v in (0, -1e-5, -float("inf")):
        with pytest.raises(ValueError, match=r"eps must be positive"):
            pyconv.batch_norm(x, np.zeros(3), np.ones(3), eps=v)
    with pytest.raises(ValueError, match=r"value=1\.0 is only used by mode='constant'"):
        pyconv.pad(_X, (1, 1), "reflect", value=1.0)


# ===========================================================================
# 8. odd argument objects
# ===========================================================================
@pytest.mark.parametrize("case", [
    ("reduction", lambda v: pyconv.cross_entropy(np.ones((2, 3)), np.array([0, 1]), reduction=v)),
    ("reduction", lambda v: pyconv.nll_loss_backward(1.0, np.ones((2, 3)), np.array([0, 1]), reduction=v)),
    ("reduction", lambda v: pyconv.mse_loss(np.ones(3), np.ones(3), reduction=v)),
    ("mode", lambda v: pyconv.pad(_X, (1, 1), mode=v)),
    ("mode", lambda v: pyconv.pad_backward(np.ones((1, 4, 6, 8)), _X.shape, (1, 1), mode=v)),
    ("padding_mode", lambda v: pyconv.conv2d(_X, _W, padding_mode=v)),
    ("padding_mode", lambda v: pyconv.conv2d_backward(_DY, _X, _W, padding_mode=v)),
    ("approximate", lambda v: pyconv.gelu(_X, approximate=v)),
    ("approximate", lambda v: pyconv.gelu_backward(_X, _X, approximate=v)),
], ids=lambda c: c[0] if isinstance(c, str) else None)
def test_enum_strings_rejected_with_valueerror(case):
    name, call = case
    fails = _Failures()
    for value in ("Mean", "", " none", None, 0, 1.5, b"sum", "zero", ("mean",)):
        def check():
            with pytest.raises(ValueError, match=rf"{name} must be .*got {re.escape(repr(value))}"):
                call(value)

        fails.check(repr(value), check)
    fails.done()


@pytest.mark.parametrize("name,call", [
    ("reduction", lambda v: pyconv.cross_entropy(np.ones((2, 3)), np.array([0, 1]), reduction=v)),
    ("mode", lambda v: pyconv.pad(_X, (1, 1), mode=v)),
    ("padding_mode", lambda v: pyconv.conv2d(_X, _W, padding_mode=v)),
])
@quiet
def test_enum_unhashable_named(name, call):
    with pytest.raises((TypeError, ValueError), match=name):
        call(["mean"])


@pytest.mark.parametrize("fn", ["conv2d_backward", "linear_backward", "batch_norm_backward"])
def test_output_mask_wrong_length(fn):
    args = {"conv2d_backward": (_DY, _X, _W), "linear_backward": (np.ones((2, 2)), np.ones((2, 3)), np.ones((2, 3))),
            "batch_norm_backward": (np.ones((2, 3)), np.ones((2, 3)), None, np.zeros(3), np.ones(3))}[fn]
    for m in ((True, True), (True,) * 4, ()):
        with pytest.raises(ValueError, match=r"output_mask must have three bools"):
            getattr(pyconv, fn)(*args, output_mask=m)
    # masked outputs are None, the rest still computed
    res = getattr(pyconv, fn)(*args, output_mask=(False, True, False))
    assert res[0] is None and res[2] is None and res[1] is not None


@pytest.mark.parametrize("fn", ["conv2d_backward", "linear_backward", "batch_norm_backward"])
@quiet
def test_output_mask_none_named(fn):
    args = {"conv2d_backward": (_DY, _X, _W), "linear_backward": (np.ones((2, 2)), np.ones((2, 3)), np.ones((2, 3))),
            "batch_norm_backward": (np.ones((2, 3)), np.ones((2, 3)), None, np.zeros(3), np.ones(3))}[fn]
    with pytest.raises((TypeError, ValueError), match=r"output_mask"):
        getattr(pyconv, fn)(*args, output_mask=None)


@pytest.mark.parametrize("fn", ["max_pool2d_backward", "adaptive_max_pool2d_backward", "avg_pool2d_backward",
                                "adaptive_avg_pool2d_backward", "pad_backward"])
@pytest.mark.parametrize("bad", [None, 5])
@quiet
def test_input_shape_not_a_sequence_named(fn, bad):
    dy, idx = np.ones((1, 4, 3, 3)), np.zeros((1, 4, 3, 3), np.int64)
    call = {"max_pool2d_backward": lambda: pyconv.max_pool2d_backward(dy, idx, bad),
            "adaptive_max_pool2d_backward": lambda: pyconv.adaptive_max_pool2d_backward(dy, idx, bad),
            "avg_pool2d_backward": lambda: pyconv.avg_pool2d_backward(dy, bad, 2),
            "adaptive_avg_pool2d_backward": lambda: pyconv.adaptive_avg_pool2d_backward(dy, bad),
            "pad_backward": lambda: pyconv.pad_backward(dy, bad, (1, 1))}[fn]
    with pytest.raises((TypeError, ValueError), match=r"input_shape"):
        call()


def test_gemm_argument_errors():
    a, b = np.ones((2, 3)), np.ones((3, 2))
    with pytest.raises(ValueError, match=r"gemm: a and b must be 2-d, got shapes \(6,\) and \(3, 2\)"):
        pyconv.gemm(a.ravel(), b)
    with pytest.raises(ValueError, match=r"gemm: a.shape\[1\]=3 does not match b.shape\[0\]=2"):
        pyconv.gemm(a, a.T[:2])
    with pytest.raises(TypeError, match=r"gemm: out must be a numpy array, got list"):
        pyconv.gemm(a, b, out=[[0, 0], [0, 0]])
    with pytest.raises(TypeError, match=r"gemm: out must have dtype float64, got float32"):
        pyconv.gemm(a, b, out=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"gemm: out must have shape \(2, 2\), got \(2, 3\)"):
        pyconv.gemm(a, b, out=np.zeros((2, 3)))
    ro = np.zeros((2, 2))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match=r"gemm: out is read-only"):
        pyconv.gemm(a, b, out=ro)
    with pytest.raises(ValueError, match=r"gemm: beta != 0 needs an out array"):
        pyconv.gemm(a, b, beta=1.0)
    with pytest.raises(TypeError, match=r"\ba\b"):
        pyconv.gemm(a.astype(object), b)


@pytest.mark.parametrize("beta", ["2", None, True, [1.0]], ids=repr)
@quiet
def test_gemm_beta_type(beta):
    with pytest.raises(TypeError, match=r"beta"):
        pyconv.gemm(np.ones((2, 2)), np.ones((2, 2)), out=np.ones((2, 2)), beta=beta)


def test_shape_mismatch_messages():
    with pytest.raises(ValueError, match=r"input must be 4-d \(N, C, H, W\) or 3-d \(C, H, W\), got shape \(6, 6\)"):
        pyconv.max_pool2d(np.ones((6, 6)), 2)
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\) to match weight, got \(3,\)"):
        pyconv.conv2d(_X, _W, np.ones(3))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(1, 2, 4, 4\) \(conv2d's output\), got \(1, 2, 4, 5\)"):
        pyconv.conv2d_backward(np.ones((1, 2, 4, 5)), _X, _W)
    with pytest.raises(ValueError, match=r"grad_output shape \(2, 3\) must match input shape \(3, 2\)"):
        pyconv.relu_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"grad_output shape \(2, 3\) must match output shape \(3, 2\)"):
        pyconv.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"input's last dim must be in_features=3, got shape \(2, 4\)"):
        pyconv.linear(np.ones((2, 4)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), got \(4,\)"):
        pyconv.linear(np.ones((2, 3)), np.ones((5, 3)), np.ones(4))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 5\), got \(5, 2\)"):
        pyconv.linear_backward(np.ones((5, 2)), np.ones((2, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"grad_output shape \(2, 4\) must match input shape \(2, 3\)"):
        pyconv.batch_norm_backward(np.ones((2, 4)), np.ones((2, 3)), None, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"save_mean must have shape \(3,\), got \(2,\)"):
        pyconv.batch_norm_backward(np.ones((2, 3)), np.ones((2, 3)), None, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(1, 4, 3, 3\), got \(1, 4, 2, 2\)"):
        pyconv.avg_pool2d_backward(np.ones((1, 4, 2, 2)), _X.shape, 2)
    with pytest.raises(ValueError, match=r"grad_output shape \(1, 3, 2, 2\) does not match input_shape \(1, 4, 6, 6\)"):
        pyconv.adaptive_avg_pool2d_backward(np.ones((1, 3, 2, 2)), _X.shape)
