"""Winograd F(2x2, 3x3) (csrc/ops/winograd*.{h,cpp}) against the float64 reference.

float32 3x3 stride-1 dilation-1 ungrouped convolutions with >= 16 input and
output channels and >= 32 output tiles run forward, backward-data and
backward-weight by Winograd; so do dilated ones with padding = dilation on
sizes the dilation divides (as D*D undilated phase problems). This file sweeps what its layout depends on: odd output sizes
(partial 2x2 tiles), padding 0-2 (backward-data runs with padding 2 - p),
channel counts off the 8-lane and 6-row blocks, more than one GEMM k block,
several tile blocks per call (shared and per-thread), both thread counts;
and checks that out-of-range values fall back to the direct path with its
exact semantics, and that pyconv.set_winograd(False) turns it off.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv.testing.reference import conv2d_backward_ref, conv2d_ref

TOL = 1e-4  # the float32 tolerance of every conv2d test


def rel_err(got, ref):
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / max(np.abs(ref).max(), 1.0))


@pytest.fixture
def winograd_restore():
    old = pyconv.get_winograd()
    yield
    pyconv.set_winograd(old)


def _arrays(N, C, OC, H, W, P, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((OC, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    OH, OW = H + 2 * P - 2, W + 2 * P - 2
    dy = rng.standard_normal((N, OC, OH, OW)).astype(np.float32)
    return x, w, b, dy


def _run(x, w, b, dy, padding):
    return (pyconv.conv2d(x, w, b, padding=padding),
            pyconv.conv2d_input(x.shape, w, dy, padding=padding),
            pyconv.conv2d_weight(x, w.shape, dy, padding=padding))


def _check(x, w, b, dy, padding):
    y_ref = conv2d_ref(x, w, b, padding=padding)
    dx_ref, dw_ref, _ = conv2d_backward_ref(dy, x, w, padding=padding)
    got = _run(x, w, b, dy, padding)
    for name, g, ref in zip(("y", "dx", "dw"), got, (y_ref, dx_ref, dw_ref)):
        assert g.dtype == np.float32
        assert rel_err(g, ref) < TOL, (name, rel_err(g, ref))
    return got


SHAPES = [
    # N, C, OC, H, W, padding
    (1, 16, 16, 16, 16, 1),
    (2, 16, 16, 15, 17, 1),    # odd sizes: partial tiles in both directions
    (3, 17, 23, 9, 13, 0),     # C off the 8-lane groups, OC off the 6-row panels
    (2, 24, 18, 11, 10, 2),    # backward-data at padding 0
    (1, 40, 20, 21, 7, 1),     # tile rows of 4, blocks across rows
    (4, 32, 32, 8, 8, 1),      # blocks across images
    (1, 300, 20, 12, 12, 1),   # two GEMM k blocks (k = 300 -> 150 + 150)
    (1, 19, 16, 64, 40, 1),    # several tile blocks (per-thread blocks at 2 threads)
    (2, 16, 70, 5, 90, 1),     # wide, short rows
    (2, 16, 16, 96, 96, 1),    # 9 tile blocks: per-thread blocks at 2 threads
    (1, 21, 27, 14, 13, 1),    # last panels of 3 rows: short kernels (forward and dual)
]


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("N,C,OC,H,W,P", SHAPES, ids=[f"n{s[0]}c{s[1]}oc{s[2]}-{s[3]}x{s[4]}-p{s[5]}" for s in SHAPES])
def test_matches_reference(N, C, OC, H, W, P, nt, restore_threads, winograd_restore):
    pyconv.set_num_threads(nt)
    x, w, b, dy = _arrays(N, C, OC, H, W, P, seed=N * 1000 + C + H)
    got = _check(x, w, b, dy, P)
    # and it really was Winograd: the direct path rounds differently
    pyconv.set_winograd(False)
    for name, g, d in zip(("y", "dx", "dw"), got, _run(x, w, b, dy, P)):
        assert not np.array_equal(g, d), name


def test_same_padding_and_no_bias(restore_threads):
    x, w, b, dy = _arrays(2, 16, 24, 13, 14, 1, seed=5)
    y_ref = conv2d_ref(x, w, None, padding="same")
    y = pyconv.conv2d(x, w, None, padding="same")
    assert rel_err(y, y_ref) < TOL


def test_bit_identical_across_thread_counts(restore_threads):
    # 40 x 24 tiles x 4 images: several blocks, shared at 1 thread and own at 2
    x, w, b, dy = _arrays(4, 24, 20, 80, 48, 1, seed=9)
    out = []
    for nt in (1, 2):
        pyconv.set_num_threads(nt)
        out.append(_run(x, w, b, dy, 1))
    for a, c in zip(*out):
        np.testing.assert_array_equal(a, c)


def test_error_close_to_direct(winograd_restore):
    """Winograd's rounding error stays within a small factor of the direct sum's."""
    x, w, b, dy = _arrays(2, 128, 64, 20, 20, 1, seed=3)
    y_ref = conv2d_ref(x, w, b, padding=1)
    pyconv.set_winograd(True)
    e_w = rel_err(pyconv.conv2d(x, w, b, padding=1), y_ref)
    pyconv.set_winograd(False)
    e_d = rel_err(pyconv.conv2d(x, w, b, padding=1), y_ref)
    assert e_w < 4 * e_d + 1e-7, (e_w, e_d)
    assert e_w < 1e-5


def test_switch(winograd_restore):
    assert pyconv.get_winograd() is True
    assert pyconv.config()["winograd"] is True
    x, w, b, dy = _arrays(2, 16, 16, 16, 16, 1, seed=4)
    pyconv.set_winograd(False)
    assert pyconv.get_winograd() is False
    y_direct = pyconv.conv2d(x, w, b, padding=1)
    pyconv.set_winograd(True)
    y_wino = pyconv.conv2d(x, w, b, padding=1)
    # different algorithms: close, not equal
    assert not np.array_equal(y_direct, y_wino)
    np.testing.assert_allclose(y_wino, y_direct, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="enabled"):
        pyconv.set_winograd("yes")


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 3.0e38, 2.0**41])
@pytest.mark.parametrize("where", ["x", "w"])
def test_out_of_range_values_take_the_direct_path(value, where, winograd_restore):
    """inf / NaN / huge values would spread through a tile's transform (inf - inf):
    the call falls back, so results equal the direct path bit for bit."""
    x, w, b, dy = _arrays(2, 16, 16, 12, 12, 1, seed=6)
    if where == "x":
        x[1, 3, 5, 7] = value
    else:
        w[2, 4, 1, 1] = value
    pyconv.set_winograd(True)
    got = _run(x, w, b, dy, 1)
    pyconv.set_winograd(False)
    direct = _run(x, w, b, dy, 1)
    names = ("y", "dw") if where == "x" else ("y", "dx")
    for name, g, d in zip(("y", "dx", "dw"), got, direct):
        if name in names:
            np.testing.assert_array_equal(g, d, err_msg=name)
    y1 = got[0]
    if np.isfinite(value) and where == "x":
        ref = conv2d_ref(x, w, b, padding=1)
        assert rel_err(y1, ref) < TOL


@pytest.mark.parametrize("which", ["dx", "dw"])
def test_nonfinite_dy_backward(which, winograd_restore):
    x, w, b, dy = _arrays(2, 16, 16, 12, 12, 1, seed=7)
    dy[0, 2, 3, 4] = np.nan
    dy[1, 5, 0, 0] = np.inf
    dx_ref, dw_ref, _ = conv2d_backward_ref(dy, x, w, padding=1)
    if which == "dx":
        ref, got = dx_ref, pyconv.conv2d_input(x.shape, w, dy, padding=1)
    else:
        ref, got = dw_ref, pyconv.conv2d_weight(x, w.shape, dy, padding=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    assert rel_err(got[fin], ref[fin]) < TOL


def test_dw_error_close_to_direct(winograd_restore):
    """Backward-weight sums over every tile of the batch: its error stays
    within a small factor of the direct path's too."""
    x, w, b, dy = _arrays(8, 64, 64, 28, 28, 1, seed=10)
    ref = conv2d_backward_ref(dy, x, w, padding=1)[1]
    pyconv.set_winograd(True)
    e_w = rel_err(pyconv.conv2d_weight(x, w.shape, dy, padding=1), ref)
    pyconv.set_winograd(False)
    e_d = rel_err(pyconv.conv2d_weight(x, w.shape, dy, padding=1), ref)
    assert e_w < 4 * e_d + 1e-7, (e_w, e_d)
    assert e_w < 1e-5


def test_float64_and_small_shapes_unaffected(winograd_restore):
    """float64, < 16 channels, < 32 tiles, stride 2, dilation 2, groups: not Winograd
    (bit-identical with the switch on or off)."""
    rng = np.random.default_rng(8)
    cases = [
        (rng.standard_normal((2, 16, 12, 12)), rng.standard_normal((16, 16, 3, 3)), {}),
        (rng.standard_normal((2, 8, 12, 12)).astype(np.float32),
         rng.standard_normal((16, 8, 3, 3)).astype(np.float32), {}),
        (rng.standard_normal((1, 32, 7, 7)).astype(np.float32),
         rng.standard_normal((32, 32, 3, 3)).astype(np.float32), {}),
        (rng.standard_normal((2, 16, 12, 12)).astype(np.float32),
         rng.standard_normal((16, 16, 3, 3)).astype(np.float32), dict(stride=2)),
        (rng.standard_normal((2, 16, 12, 12)).astype(np.float32),
         rng.standard_normal((16, 16, 3, 3)).astype(np.float32), dict(dilation=2)),
        (rng.standard_normal((2, 32, 12, 12)).astype(np.float32),
         rng.standard_normal((32, 16, 3, 3)).astype(np.float32), dict(groups=2)),
    ]
    for x, w, kw in cases:
        y = pyconv.conv2d(x, w, padding=1, **kw)
        dy = np.ones_like(y)
        out = []
        for on in (True, False):
            pyconv.set_winograd(on)
            out.append((pyconv.conv2d(x, w, padding=1, **kw),
                        pyconv.conv2d_input(x.shape, w, dy, padding=1, **kw),
                        pyconv.conv2d_weight(x, w.shape, dy, padding=1, **kw)))
        for a, c in zip(*out):
            np.testing.assert_array_equal(a, c)


DILATED = [
    # N, C, OC, H, W, D
    (1, 16, 16, 16, 16, 2),
    (2, 16, 20, 12, 18, 2),
    (1, 32, 16, 30, 30, 3),
    (3, 17, 16, 10, 14, 2),
]


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("N,C,OC,H,W,D", DILATED, ids=[f"n{s[0]}c{s[1]}oc{s[2]}-{s[3]}x{s[4]}-d{s[5]}" for s in DILATED])
def test_dilated_same_padding_by_phases(N, C, OC, H, W, D, nt, restore_threads, winograd_restore):
    """Dilation D with padding D on sizes divisible by D runs as D*D undilated
    Winograd problems (one per input/output phase)."""
    pyconv.set_num_threads(nt)
    x, w, b, _ = _arrays(N, C, OC, H, W, 1, seed=H * W + D)
    kw = dict(padding=D, dilation=D)
    dy = np.random.default_rng(D).standard_normal((N, OC, H, W)).astype(np.float32)
    y_ref = conv2d_ref(x, w, b, **kw)
    dx_ref, dw_ref, _ = conv2d_backward_ref(dy, x, w, **kw)
    got = (pyconv.conv2d(x, w, b, **kw), pyconv.conv2d_input(x.shape, w, dy, **kw),
           pyconv.conv2d_weight(x, w.shape, dy, **kw))
    for name, g, ref in zip(("y", "dx", "dw"), got, (y_ref, dx_ref, dw_ref)):
        assert rel_err(g, ref) < TOL, (name, rel_err(g, ref))
    pyconv.set_winograd(False)
    direct = (pyconv.conv2d(x, w, b, **kw), pyconv.conv2d_input(x.shape, w, dy, **kw),
              pyconv.conv2d_weight(x, w.shape, dy, **kw))
    for name, g, d in zip(("y", "dx", "dw"), got, direct):
        assert not np.array_equal(g, d), name  # it was Winograd


def test_dilated_other_shapes_stay_direct(winograd_restore):
    """Sizes not divisible by D, or padding other than D: the direct path."""
    rng = np.random.default_rng(1)
    for (H, W, P) in [(15, 16, 2), (16, 16, 1), (16, 16, 3)]:
        x = rng.standard_normal((1, 16, H, W)).astype(np.float32)
        w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
        out = []
        for on in (True, False):
            pyconv.set_winograd(on)
            out.append(pyconv.conv2d(x, w, padding=P, dilation=2))
        np.testing.assert_array_equal(out[0], out[1])
        assert rel_err(out[0], conv2d_ref(x, w, padding=P, dilation=2)) < TOL
