"""Depthwise convolution (groups == in_channels) against the float64 reference.

Depthwise conv2d has its own kernels (csrc/ops/depthwise*.cpp): float32
lays each plane out in a zero-padded buffer (stride phases split apart,
dy dilated for backward-data) and runs flat SIMD loops over it; float64,
the 'ref' ISA, non-finite weights in backward-data and buffers past 4M
floats take the portable loops. This file sweeps the layouts those paths
depend on: row widths below, at and around the 8-lane vector, strides
1-3 (phase splits, odd and even padding), dilation, channel multipliers,
'same' padding, and both sides of the buffer limit.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import pyconv
from pyconv.testing.compare import assert_close  # rtol = atol = 1e-4 in float32
from pyconv.testing.reference import conv2d_backward_ref, conv2d_ref


def _case(N, C, mult, H, W, k, stride, padding, dilation, seed=0):
    rng = np.random.default_rng(seed)
    KH, KW = k
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C * mult, 1, KH, KW))
    b = rng.standard_normal(C * mult)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=C)
    y = conv2d_ref(x, w, b, **kw)
    dy = rng.standard_normal(y.shape)
    return x, w, b, dy, kw


def _check(x, w, b, dy, kw, dtype):
    y_ref = conv2d_ref(x.astype(dtype), w.astype(dtype), b.astype(dtype), **kw)
    dx_ref, dw_ref, _ = conv2d_backward_ref(dy.astype(dtype), x.astype(dtype), w.astype(dtype),
                                            **kw)
    xd, wd, bd, dyd = (a.astype(dtype) for a in (x, w, b, dy))
    y = pyconv.conv2d(xd, wd, bd, **kw)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, "y")
    assert_close(pyconv.conv2d_input(x.shape, wd, dyd, **kw), dx_ref, dtype, "dx")
    assert_close(pyconv.conv2d_weight(xd, w.shape, dyd, **kw), dw_ref, dtype, "dw")


# Row widths around the 8-lane vector and the 16/64-float tiles, every stride
# with even and odd padding, a few kernel shapes; sizes drawn so the output
# is non-empty.
SWEEP = []
for (W, stride, padding, k, dil) in itertools.product(
        [1, 5, 7, 8, 9, 15, 16, 17, 31, 33, 40], [1, 2, 3], [0, 1, 2], [(3, 3), (1, 1), (2, 5)],
        [1, 2]):
    H = 3 + (W + stride) % 7
    KH, KW = k
    OH = (H + 2 * padding - dil * (KH - 1) - 1) // stride + 1
    OW = (W + 2 * padding - dil * (KW - 1) - 1) // stride + 1
    if OH > 0 and OW > 0:
        SWEEP.append((H, W, k, stride, padding, dil))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("H,W,k,stride,padding,dil", SWEEP,
                         ids=[f"{h}x{w}-k{k[0]}{k[1]}-s{s}-p{p}-d{d}" for h, w, k, s, p, d in SWEEP])
def test_sweep(H, W, k, stride, padding, dil, dtype):
    x, w, b, dy, kw = _case(2, 3, 1, H, W, k, stride, padding, dil, seed=H * 100 + W)
    _check(x, w, b, dy, kw, dtype)


@pytest.mark.parametrize("mult", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_channel_multiplier(mult, stride, isa):
    x, w, b, dy, kw = _case(2, 4, mult, 13, 21, (3, 3), stride, 1, 1, seed=mult)
    for dtype in (np.float32, np.float64):
        _check(x, w, b, dy, kw, dtype)


@pytest.mark.parametrize("k,dil", [((3, 3), 1), ((4, 2), (2, 1)), ((5, 5), 2)])
def test_same_padding(k, dil, isa):
    x, w, b, dy, kw = _case(3, 5, 1, 11, 19, k, 1, "same", dil, seed=7)
    for dtype in (np.float32, np.float64):
        _check(x, w, b, dy, kw, dtype)


@pytest.mark.parametrize("H,W", [(14, 14), (56, 56), (112, 24)])
@pytest.mark.parametrize("stride", [1, 2])
def test_mobilenet_shapes(H, W, stride, isa):
    """The shapes the benchmark times, float32, on both thread counts."""
    x, w, b, dy, kw = _case(2, 16, 1, H, W, (3, 3), stride, 1, 1, seed=H)
    old = pyconv.get_num_threads()
    try:
        for nt in (1, 2):
            pyconv.set_num_threads(nt)
            _check(x, w, b, dy, kw, np.float32)
    finally:
        pyconv.set_num_threads(old)


@pytest.mark.parametrize("W", [32, 37, 45])
@pytest.mark.parametrize("H", [4, 5, 7, 8, 9, 17, 20])
@pytest.mark.parametrize("mult,padding", [(1, 0), (1, 1), (2, 1), (3, 2), (1, 3), (1, (0, 2)),
                                          (2, (3, 1)), (1, (2, 0))])
def test_unit_3x3_rows(H, W, mult, padding, isa):
    """Stride-1 3x3 on rows of 32 or more takes the rows kernel's register-
    blocked path (forward, and backward-data straight into dx, accumulating
    over the channel multiplier) over bands of 8 output rows, each band's
    source rows copied just before: one band and several, a partial last
    band, 4-row blocks plus single rows, a partial last vector, padding 0-3
    and asymmetric (backward-data's grid is the reversed one, its source
    rows start above or below the output's)."""
    x, w, b, dy, kw = _case(2, 3, mult, H, W, (3, 3), 1, padding, 1, seed=H * W + mult)
    _check(x, w, b, dy, kw, np.float32)


@pytest.mark.parametrize("dil", [900, 1100], ids=["simd-big-buffer", "portable-past-limit"])
def test_huge_dilation_buffers(dil):
    """Padding/dilation of ~1000 makes a 3-4M-float plane buffer: under the
    limit the SIMD path runs on it, over it the portable loops do."""
    x, w, b, dy, kw = _case(1, 2, 1, 6, 7, (3, 3), 1, dil, dil, seed=dil)
    _check(x, w, b, dy, kw, np.float32)


def _nan_pattern_equal(got, ref, what):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what} NaN pattern")
    fin = np.isfinite(ref)
    assert_close(got[fin], ref[fin], np.float32, what)


@pytest.mark.parametrize("stride", [1, 2])
def test_nonfinite_weight_backward_data(stride, isa):
    """An inf weight tap must not turn dx positions it never reaches into NaN
    (the zero-padded-dy path would make inf * 0 there; it hands over to the
    direct loops)."""
    x, w, b, dy, kw = _case(2, 3, 1, 9, 12, (3, 3), stride, 1, 1, seed=3)
    w[1, 0, 0, 2] = np.inf
    ref = conv2d_backward_ref(dy, x, w, **kw)[0]
    got = pyconv.conv2d_input(x.shape, w.astype(np.float32), dy.astype(np.float32), **kw)
    _nan_pattern_equal(got, ref, "dx")
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))


@pytest.mark.parametrize("W", [19, 40])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("where", ["left", "right", "middle"])
def test_nonfinite_input_backward_weight(stride, where, W, isa):
    """inf / NaN pixels poison exactly the dw taps that read them: the flat
    kernel's dropped columns would pair them with zeros, so such planes take
    the masked row kernel (stride 1 on rows of 32+: its 3x3 path, always)."""
    x, w, b, dy, kw = _case(2, 3, 1, 10, W, (3, 3), stride, 1, 1, seed=4)
    col = {"left": 0, "right": W - 1, "middle": W // 2}[where]
    x[0, 1, 4, col] = np.inf
    x[1, 2, 0, col] = np.nan
    ref = conv2d_backward_ref(dy, x, w, **kw)[1]
    got = pyconv.conv2d_weight(x.astype(np.float32), w.shape, dy.astype(np.float32), **kw)
    _nan_pattern_equal(got, ref, "dw")
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))


@pytest.mark.parametrize("stride", [1, 2])
def test_nonfinite_forward_and_dy(stride, isa):
    """Forward: an inf weight on padding gives NaN (0 * inf), an inf pixel
    reaches only its window. Backward-data: a NaN in dy reaches only the
    pixels it scatters to."""
    x, w, b, dy, kw = _case(1, 2, 1, 8, 11, (3, 3), stride, 1, 1, seed=5)
    w[0, 0, 0, 0] = np.inf
    x[0, 1, 3, 4] = np.inf
    dy[0, 1, 1, 2] = np.nan
    y_ref = conv2d_ref(x, w, b, **kw)
    dx_ref = conv2d_backward_ref(dy, x, np.nan_to_num(w, posinf=1.0), **kw)[0]
    y = pyconv.conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), **kw)
    dx = pyconv.conv2d_input(x.shape, np.nan_to_num(w, posinf=1.0).astype(np.float32),
                             dy.astype(np.float32), **kw)
    _nan_pattern_equal(y, y_ref, "y")
    _nan_pattern_equal(dx, dx_ref, "dx")


def _assert_same_bits_on_1_and_2_threads(x, w, b, dy, kw):
    """float32 forward, backward-data and backward-weight on 1 and 2 threads: the same bits."""
    x, w, b, dy = (a.astype(np.float32) for a in (x, w, b, dy))
    old = pyconv.get_num_threads()
    out = []
    try:
        for nt in (1, 2):
            pyconv.set_num_threads(nt)
            out.append((pyconv.conv2d(x, w, b, **kw), pyconv.conv2d_input(x.shape, w, dy, **kw),
                        pyconv.conv2d_weight(x, w.shape, dy, **kw)))
    finally:
        pyconv.set_num_threads(old)
    for a, c in zip(*out):
        np.testing.assert_array_equal(a, c)


def test_thread_count_independent_bits():
    """Same bits on 1 and 2 threads, in every direction (backward-weight sums
    each channel's planes in a fixed order)."""
    _assert_same_bits_on_1_and_2_threads(*_case(4, 16, 2, 33, 40, (3, 3), 2, 1, 1, seed=6))


C8_CASES = [(H, W, pad) for (H, W), pad in itertools.product(
    [(1, 1), (2, 3), (3, 7), (7, 7), (5, 8), (9, 9), (14, 14), (6, 15), (4, 17), (3, 31)],
    [(0, 0), (1, 1), (2, 2), (0, 1), (2, 0), (3, 3), (0, 4)])
    if H + 2 * pad[0] >= 3 and W + 2 * pad[1] >= 3]


@pytest.mark.parametrize("C", [1, 3, 8, 9, 17, 24])
@pytest.mark.parametrize("H,W,padding", C8_CASES)
def test_channel_blocked_3x3(C, H, W, padding, isa):
    """3x3 stride-1 depthwise on maps under 32 columns runs 8 channels per
    vector (pixel-major blocks): channel counts around 8 (the zero lanes of a
    last partial block), maps below, at and above 8 pixels per row and in
    all, every padding that keeps an output, against the reference; and the
    same bits on 1 and 2 threads."""
    x, w, b, dy, kw = _case(2, C, 1, H, W, (3, 3), 1, padding, 1, seed=C * 100 + H * 10 + W)
    _check(x, w, b, dy, kw, np.float32)
    _assert_same_bits_on_1_and_2_threads(x, w, b, dy, kw)
