"""2-D pooling (max, average, adaptive max/average) forward and backward.

Checked against the float64 direct-window references in
``pyconv.testing.reference_ops`` (themselves anchored to PyTorch in
tests/test_ops_torch.py). Tolerances (got vs float64 reference ``ref``,
elementwise, ``scale = max(max|ref|, 1)`` over the array):

    max pooling forward, indices:  exact (a max selects an input value)
    float64:  |got - ref| <= 1e-12 * |ref| + 1e-12 * scale
    float32:  |got - ref| <= 1e-5  * |ref| + 1e-5  * scale
    float16:  |got - ref| <= 2e-3  * |ref| + 2e-3  * scale  (computed in float32,
              rounded once to float16)

Grid inputs are multiples of 1/8 in [-2, 2) (exact in every float dtype, so
the same reference serves float32 and float64, and many ties exercise the
first-index rule); gradient checks use distinct values spaced 0.1 apart,
far from the kinks of max.

Sections: grid sweep (kernel x stride x padding x dilation x ceil_mode, odd
sizes, batch 1, 1x1 inputs, windows partly in padding and past the padded
input), hand-computed divisors, adaptive pooling, gradient checks,
non-finite values, layouts and dtypes, thread-count independence, errors.
"""
from __future__ import annotations

import functools
import itertools
import zlib
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import pytest

import pyconv
import pyconv.functional as Fn
from pyconv.testing.gradcheck import gradcheck
from pyconv.testing.reference_ops import (
    adaptive_avg_pool2d_backward_ref, adaptive_avg_pool2d_ref,
    adaptive_max_pool2d_backward_ref, adaptive_max_pool2d_ref, avg_pool2d_backward_ref,
    avg_pool2d_ref, max_pool2d_backward_ref, max_pool2d_ref, max_pool_backward_indices_ref)

TOL = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-5),
    np.dtype(np.float16): (2e-3, 2e-3),
}
DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]

Pair = Union[int, Tuple[int, int]]


def assert_close(got, ref, dtype, what="", equal_nan=False):
    dtype = np.dtype(dtype)
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    rtol, atol = TOL[dtype]
    fin = np.isfinite(ref)
    scale = max(float(np.abs(ref[fin]).max(initial=0.0)), 1.0)
    g = got.astype(np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - ref)
        ok = err <= rtol * np.abs(ref) + atol * scale
        ok |= (g == ref)  # same infinities
        if equal_nan:
            ok |= np.isnan(g) & np.isnan(ref)
    if not ok.all():
        idx = np.unravel_index(np.argmax(~ok), ok.shape)
        raise AssertionError(
            f"{what} ({dtype}): {int((~ok).sum())}/{ok.size} elements off; first at {idx}: "
            f"got {g[idx]!r}, reference {ref[idx]!r} (scale {scale:.3g})")


POOL_NAMES = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
              "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
              "adaptive_max_pool2d_backward"]


@pytest.mark.parametrize("name", POOL_NAMES)
def test_exported(name):
    f = getattr(pyconv, name)
    assert callable(f)
    assert getattr(Fn, name) is f


# --------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolCase:
    N: int
    C: int
    H: int
    W: int
    kernel_size: Pair
    stride: Optional[Pair]
    padding: Pair
    dilation: Pair
    ceil_mode: bool

    @property
    def id(self):
        f = lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
        return (f"n{self.N}c{self.C}h{self.H}w{self.W}k{f(self.kernel_size)}s{f(self.stride)}"
                f"p{f(self.padding)}d{f(self.dilation)}{'ceil' if self.ceil_mode else ''}")

    @property
    def kw(self):
        d = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                 ceil_mode=self.ceil_mode)
        if self.dilation != 1:
            d["dilation"] = self.dilation
        return d

    @property
    def avg_kw(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)

    def arrays(self):
        rng = np.random.default_rng(zlib.crc32(self.id.encode()))
        x = rng.integers(-16, 16, (self.N, self.C, self.H, self.W)) / 8.0
        return x


KERNELS = [1, 2, 3, (2, 3), (3, 1)]
STRIDES = [None, 1, 2, (1, 3)]
PADDINGS = [0, 1, (1, 0), (0, 1)]
DILATIONS = [1, 2, (1, 2)]
SIZES = [(5, 7), (1, 1), (6, 6), (8, 3), (4, 9), (2, 11), (7, 5), (3, 3)]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _valid(H, W, k, s, p, d, cm):
    (kh, kw), (ph, pw), (dh, dw) = _pair(k), _pair(p), _pair(d)
    if H + 2 * ph < dh * (kh - 1) + 1 or W + 2 * pw < dw * (kw - 1) + 1:
        return False  # window larger than the padded input: test_window_larger_than_input
    _, ind = max_pool2d_ref(np.zeros((1, 1, H, W)), k, s, p, d, cm)
    return bool((ind >= 0).all())  # no window entirely outside the input


def _grid(with_dilation: bool):
    cases, i = [], 0
    dils = DILATIONS if with_dilation else [1]
    for k, s, p, cm, d in itertools.product(KERNELS, STRIDES, PADDINGS, [False, True], dils):
        (kh, kw), (ph, pw) = _pair(k), _pair(p)
        if ph > kh // 2 or pw > kw // 2:
            continue
        for j in range(len(SIZES)):
            H, W = SIZES[(i + j) % len(SIZES)]
            if _valid(H, W, k, s, p, d, cm):
                break
        else:  # pragma: no cover
            continue
        cases.append(PoolCase(1 + i % 3, (3, 1, 4, 2)[i % 4], H, W, k, s, p, d, cm))
        i += 1
    return cases


MAX_GRID = _grid(with_dilation=True)
AVG_GRID = _grid(with_dilation=False)


def test_grid_covers_the_brief():
    for grid in (MAX_GRID, AVG_GRID):
        assert any(c.N == 1 for c in grid)
        assert any((c.H, c.W) == (1, 1) for c in grid)
        assert any(c.H % 2 and c.W % 2 for c in grid)
        assert any(c.ceil_mode for c in grid) and any(not c.ceil_mode for c in grid)
        assert any(c.stride is None for c in grid)
        assert any(_pair(c.padding) != (0, 0) for c in grid)
    assert {c.dilation for c in MAX_GRID} == set(DILATIONS)
    assert len(MAX_GRID) > 300 and len(AVG_GRID) > 100
    # ceil_mode adds windows (some running past the padded input) in many cases
    def extra_windows(c):
        z = np.zeros((1, c.H, c.W))
        try:
            floor = avg_pool2d_ref(z, **{**c.avg_kw, "ceil_mode": False}).size
        except ValueError:  # only ceil_mode gives an output at all
            floor = 0
        return avg_pool2d_ref(z, **c.avg_kw).size > floor

    assert sum(extra_windows(c) for c in AVG_GRID if c.ceil_mode) >= 10


@functools.lru_cache(maxsize=None)
def _max_ref(case: PoolCase):
    x = case.arrays()
    y, ind = max_pool2d_ref(x, **case.kw)
    dy = np.random.default_rng(7).integers(-8, 8, y.shape) / 4.0
    dx = max_pool2d_backward_ref(dy, x, **case.kw)
    return x, dy, y, ind, dx


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", MAX_GRID, ids=[c.id for c in MAX_GRID])
def test_max_pool_grid(case, dtype):
    x, dy, y_ref, ind_ref, dx_ref = _max_ref(case)
    x, dy = x.astype(dtype), dy.astype(dtype)
    y = pyconv.max_pool2d(x, **case.kw)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    y2, ind = pyconv.max_pool2d(x, **case.kw, return_indices=True)
    np.testing.assert_array_equal(y2, y_ref)
    assert ind.dtype == np.int64
    np.testing.assert_array_equal(ind, ind_ref)
    dx = pyconv.max_pool2d_backward(dy, ind, x.shape)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, dx_ref, dtype, "dx")


@functools.lru_cache(maxsize=None)
def _avg_ref(case: PoolCase, cip: bool, div: Optional[int]):
    x = case.arrays()
    kw = dict(case.avg_kw, count_include_pad=cip, divisor_override=div)
    y = avg_pool2d_ref(x, **kw)
    dy = np.random.default_rng(8).integers(-8, 8, y.shape) / 4.0
    return x, dy, y, avg_pool2d_backward_ref(dy, x.shape, **kw), kw


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("case", AVG_GRID, ids=[c.id for c in AVG_GRID])
def test_avg_pool_grid(case, dtype):
    for cip, div in [(True, None), (False, None), (True, 3), (False, 2)]:
        x, dy, y_ref, dx_ref, kw = _avg_ref(case, cip, div)
        x, dy = x.astype(dtype), dy.astype(dtype)
        y = pyconv.avg_pool2d(x, **kw)
        assert y.dtype == dtype
        assert_close(y, y_ref, dtype, f"y {kw}")
        dx = pyconv.avg_pool2d_backward(dy, x.shape, **kw)
        assert dx.dtype == dtype
        assert_close(dx, dx_ref, dtype, f"dx {kw}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_fast_path_matches_checked_path(dtype):
    """A plain batched array with int window arguments takes one C++ call
    (max_pool2d_fast / avg_pool2d_fast, sized by PyTorch's rules there): its
    results are the checked path's bits (forced here by a non-contiguous copy
    of the input); anything unusual, and every argument to reject, gets None
    from it, so the checked path runs and raises."""
    from pyconv import _C
    for case in MAX_GRID[::3]:
        x = case.arrays().astype(dtype)
        xs = np.asfortranarray(x)  # not C-contiguous: the checked path
        kw = case.kw
        args = (kw["kernel_size"], kw.get("stride"), kw.get("padding", 0), kw.get("dilation", 1),
                kw.get("ceil_mode", False))
        y, ind = _C.max_pool2d_fast(x, *args, True)
        y2, ind2 = Fn.max_pool2d(xs, **kw, return_indices=True)
        assert y.dtype == dtype and ind.dtype == np.int64
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(ind, ind2)
        np.testing.assert_array_equal(_C.max_pool2d_fast(x, *args, False), y2)
    for case in AVG_GRID[::3]:
        x = case.arrays().astype(dtype)
        kw = case.avg_kw
        for cip in (True, False):
            y = _C.avg_pool2d_fast(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                                   kw.get("ceil_mode", False), cip, None)
            np.testing.assert_array_equal(y, Fn.avg_pool2d(np.asfortranarray(x), **kw, count_include_pad=cip))
    x = np.zeros((2, 3, 6, 6), dtype)
    for bad in [dict(kernel_size=2, padding=2), dict(kernel_size=7), dict(kernel_size=True),
                dict(kernel_size=2.0), dict(kernel_size=2, stride=0), dict(kernel_size=2, stride=-1),
                dict(kernel_size=(2, 2, 2)), dict(kernel_size=2, dilation=0), dict(kernel_size=2, padding=-1),
                dict(kernel_size=2, stride=[])]:
        a = (bad["kernel_size"], bad.get("stride"), bad.get("padding", 0), bad.get("dilation", 1), False)
        assert _C.max_pool2d_fast(x, *a, False) is None, bad
    for xb in (np.zeros((0, 3, 6, 6), dtype), np.zeros((3, 6, 6), dtype), np.zeros((2, 3, 6, 6), np.int32),
               np.zeros((2, 3, 6, 6), dtype)[:, :, ::2]):
        assert _C.max_pool2d_fast(xb, 2, None, 0, 1, False, False) is None
    assert _C.avg_pool2d_fast(x, 2, None, 0, False, True, 3) is None  # divisor_override: checked path


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_backward_fast_path_matches_checked_path(dtype):
    """max_pool2d_backward's one-call path (plain arrays, int64 indices, a
    tuple input_shape) gives the checked path's bits; anything else, and an
    index out of range, gets None from it, so the checked path runs."""
    from pyconv import _C
    for case in MAX_GRID[::5]:
        x, dy, _, _, _ = _max_ref(case)
        x, dy = x.astype(dtype), dy.astype(dtype)
        _, ind = pyconv.max_pool2d(x, **case.kw, return_indices=True)
        fast = _C.max_pool2d_backward_fast(dy, ind, x.shape)
        slow = Fn.max_pool2d_backward(np.asfortranarray(dy), ind, list(x.shape))
        assert fast is not None and fast.dtype == dtype
        np.testing.assert_array_equal(fast, slow)
    dy = np.ones((2, 3, 2, 2), dtype)
    ind = np.zeros((2, 3, 2, 2), np.int64)
    assert _C.max_pool2d_backward_fast(dy, ind, (2, 3, 4, 4)) is not None
    for bad in [(dy, ind, [2, 3, 4, 4]), (dy, ind.astype(np.int32), (2, 3, 4, 4)), (dy, ind, (3, 3, 4, 4)),
                (dy, ind, (2, 3, 0, 4)), (dy, ind[:, :, :1], (2, 3, 4, 4)), (dy, ind + 16, (2, 3, 4, 4)),
                (dy, ind - 1, (2, 3, 4, 4)), (dy.astype(np.float16), ind, (2, 3, 4, 4))]:
        assert _C.max_pool2d_backward_fast(*bad) is None
    with pytest.raises(ValueError, match="out of range"):
        Fn.max_pool2d_backward(dy, ind + 16, (2, 3, 4, 4))


def test_stride_none_means_kernel_size():
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8))
    np.testing.assert_array_equal(pyconv.max_pool2d(x, (3, 2)),
                                  pyconv.max_pool2d(x, (3, 2), stride=(3, 2)))
    np.testing.assert_array_equal(pyconv.avg_pool2d(x, 3), pyconv.avg_pool2d(x, 3, 3))
    np.testing.assert_array_equal(
        pyconv.avg_pool2d_backward(np.ones((2, 3, 3, 4)), x.shape, (3, 2)),
        pyconv.avg_pool2d_backward(np.ones((2, 3, 3, 4)), x.shape, (3, 2), stride=(3, 2)))


def test_int_and_pair_spellings_agree():
    x = np.random.default_rng(1).standard_normal((1, 2, 7, 7))
    a = pyconv.max_pool2d(x, 3, 2, 1, 2)
    b = pyconv.max_pool2d(x, (3, 3), (2, 2), (1, 1), (2, 2))
    c = pyconv.max_pool2d(x, [3, 3], np.int64(2), [1, 1], np.int32(2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# hand-computed cases (no reference involved)
# --------------------------------------------------------------------------
def test_avg_divisors_by_hand_padding():
    x = np.ones((1, 1, 3, 3))
    # windows: rows/cols (-1..0) and (1..2); real elements 1, 2, 2, 4 of 4
    np.testing.assert_allclose(pyconv.avg_pool2d(x, 2, 2, 1)[0, 0],
                               [[0.25, 0.5], [0.5, 1.0]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(pyconv.avg_pool2d(x, 2, 2, 1, count_include_pad=False)[0, 0],
                               np.ones((2, 2)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(pyconv.avg_pool2d(x, 2, 2, 1, divisor_override=1)[0, 0],
                               [[1, 2], [2, 4]], rtol=0, atol=1e-15)


def test_avg_divisors_by_hand_ceil_mode():
    # H = W = 4, k = 3, s = 2, p = 1, ceil: 3 windows per axis starting at -1, 1, 3.
    # Padded extents (clipped at H + p = 5): 3, 3, 2; real input rows: 2, 3, 1.
    x = np.ones((1, 1, 4, 4))
    real = np.array([2.0, 3.0, 1.0])
    padded = np.array([3.0, 3.0, 2.0])
    y = pyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(y[0, 0], np.outer(real / padded, real / padded), rtol=1e-15)
    y = pyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(y[0, 0], np.ones((3, 3)), rtol=1e-15)
    y = pyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=2)
    np.testing.assert_allclose(y[0, 0], np.outer(real, real) / 2, rtol=1e-15)
    # without ceil_mode the last window is dropped
    assert pyconv.avg_pool2d(x, 3, 2, 1).shape == (1, 1, 2, 2)
    # backward by hand: each window spreads dy / divisor over its real elements
    dx = pyconv.avg_pool2d_backward(np.ones((1, 1, 3, 3)), x.shape, 3, 2, 1, ceil_mode=True)
    cover = np.zeros(4)  # sum over windows of 1/padded extent, per input row
    for start, ext in zip((-1, 1, 3), padded):
        for r in range(max(start, 0), min(start + 3, 4)):
            cover[r] += 1 / ext
    np.testing.assert_allclose(dx[0, 0], np.outer(cover, cover), rtol=1e-14)


def test_ceil_mode_output_sizes():
    x = np.zeros((1, 1, 5, 5))
    assert pyconv.max_pool2d(x, 2).shape == (1, 1, 2, 2)
    assert pyconv.max_pool2d(x, 2, ceil_mode=True).shape == (1, 1, 3, 3)
    # the last window would start in the right padding: dropped
    assert pyconv.max_pool2d(np.zeros((1, 1, 4, 4)), 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    assert pyconv.avg_pool2d(np.zeros((1, 1, 4, 4)), 3, 3, 1, ceil_mode=True).shape == (1, 1, 2, 2)


def test_window_larger_than_input_with_ceil_mode():
    """PyTorch's size rule gives one output when ceil_mode rounds (1 + 0 - 1 - 1) / 2 up."""
    x = np.array([[[[3.0]]]])
    y, ind = pyconv.max_pool2d(x, 2, ceil_mode=True, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y.item() == 3.0 and ind.item() == 0
    ya = pyconv.avg_pool2d(x, 2, ceil_mode=True)
    # the divisor counts the padded input only: min(0 + 2, 1 + 0) - 0 = 1 per axis
    assert ya.shape == (1, 1, 1, 1) and ya.item() == avg_pool2d_ref(x, 2, ceil_mode=True).item() == 3.0
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    y = pyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert_close(y, avg_pool2d_ref(x, 3, 2, 1, ceil_mode=True), np.float64, "avg")
    # without ceil_mode the same arguments are an error
    with pytest.raises(ValueError, match=r"(?i)kernel|output"):
        pyconv.max_pool2d(np.array([[[[3.0]]]]), 2)


def test_max_pool_indices_by_hand():
    x = np.array([[[[1., 5., 2.],
                    [5., 0., 7.],
                    [3., 7., 7.]]]])
    y, ind = pyconv.max_pool2d(x, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [7, 7]])
    # ties: the first in row-major window order
    np.testing.assert_array_equal(ind[0, 0], [[1, 5], [7, 5]])
    dx = pyconv.max_pool2d_backward(np.array([[[[1., 2.], [3., 4.]]]]), ind, x.shape)
    np.testing.assert_array_equal(dx[0, 0], [[0, 1, 0], [0, 0, 6], [0, 3, 0]])


def test_max_pool_padding_never_wins():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: implicit padding is -inf
    y, ind = pyconv.max_pool2d(x, 3, 1, 1, return_indices=True)
    np.testing.assert_array_equal(y[0, 0], [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]])
    np.testing.assert_array_equal(ind[0, 0], [[0, 0, 1], [0, 0, 1], [3, 3, 4]])


def test_max_pool_backward_scatter_adds_duplicates():
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((2, 3, 4, 5))
    ind = rng.integers(0, 6, dy.shape)  # input planes 2 x 3: many duplicates
    for itype in (np.int64, np.int32):
        dx = pyconv.max_pool2d_backward(dy, ind.astype(itype), (2, 3, 2, 3))
        assert_close(dx, max_pool_backward_indices_ref(dy, ind, (2, 3, 2, 3)), np.float64, "dx")
    dx = pyconv.max_pool2d_backward(dy, np.zeros_like(ind), (2, 3, 2, 3))
    assert_close(dx[:, :, 0, 0], dy.sum(axis=(2, 3)), np.float64, "dx[0,0]")
    assert not dx.reshape(2, 3, -1)[:, :, 1:].any()


def test_unbatched_input():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 6))
    y, ind = pyconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_ref, ind_ref = max_pool2d_ref(x, 3, 2, 1)
    assert y.shape == ind.shape == (3, 4, 3)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(ind, ind_ref)
    dy = rng.standard_normal(y.shape)
    dx = pyconv.max_pool2d_backward(dy, ind, x.shape)
    assert dx.shape == x.shape
    assert_close(dx, max_pool2d_backward_ref(dy, x, 3, 2, 1), np.float64, "dx")
    ya = pyconv.avg_pool2d(x, 2, 1, 1)
    assert_close(ya, avg_pool2d_ref(x, 2, 1, 1), np.float64, "avg")
    dxa = pyconv.avg_pool2d_backward(rng.standard_normal(ya.shape), x.shape, 2, 1, 1)
    assert dxa.shape == x.shape
    for fwd in (pyconv.adaptive_avg_pool2d, pyconv.adaptive_max_pool2d):
        assert fwd(x, (2, 5)).shape == (3, 2, 5)
    yam, iam = pyconv.adaptive_max_pool2d(x, 2, return_indices=True)
    assert iam.shape == (3, 2, 2)
    assert pyconv.adaptive_max_pool2d_backward(np.ones((3, 2, 2)), iam, x.shape).shape == x.shape
    assert pyconv.adaptive_avg_pool2d_backward(np.ones((3, 2, 2)), x.shape).shape == x.shape


# --------------------------------------------------------------------------
# adaptive pooling
# --------------------------------------------------------------------------
ADAPTIVE = [((5, 7), 1), ((5, 7), 3), ((5, 7), (2, 4)), ((5, 7), (None, 3)), ((5, 7), (4, None)),
            ((6, 6), 6), ((4, 3), (7, 9)), ((1, 1), (2, 3)), ((9, 10), (4, 3)), ((13, 11), 5)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("hw,out", ADAPTIVE, ids=[f"{h}x{w}-{o}" for (h, w), o in ADAPTIVE])
def test_adaptive(hw, out, dtype):
    rng = np.random.default_rng(5)
    x = (rng.integers(-16, 16, (2, 3) + hw) / 8.0).astype(dtype)
    y_ref = adaptive_avg_pool2d_ref(x, out)
    y = pyconv.adaptive_avg_pool2d(x, out)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, "avg y")
    dy = (rng.integers(-8, 8, y_ref.shape) / 4.0).astype(dtype)
    dx = pyconv.adaptive_avg_pool2d_backward(dy, x.shape)
    assert dx.dtype == dtype
    assert_close(dx, adaptive_avg_pool2d_backward_ref(dy, x.shape), dtype, "avg dx")

    m_ref, i_ref = adaptive_max_pool2d_ref(x, out)
    m = pyconv.adaptive_max_pool2d(x, out)
    np.testing.assert_array_equal(m, m_ref)
    m, ind = pyconv.adaptive_max_pool2d(x, out, return_indices=True)
    assert m.dtype == dtype and ind.dtype == np.int64
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(ind, i_ref)
    dx = pyconv.adaptive_max_pool2d_backward(dy, ind, x.shape)
    assert dx.dtype == dtype
    assert_close(dx, adaptive_max_pool2d_backward_ref(dy, x), dtype, "max dx")


def test_adaptive_special_sizes():
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 7))
    # global pooling
    assert_close(pyconv.adaptive_avg_pool2d(x, 1), x.mean(axis=(2, 3), keepdims=True),
                 np.float64, "global avg")
    np.testing.assert_array_equal(pyconv.adaptive_max_pool2d(x, 1),
                                  x.max(axis=(2, 3), keepdims=True))
    # output == input: identity, indices are the positions
    np.testing.assert_array_equal(pyconv.adaptive_avg_pool2d(x, (5, 7)), x)
    y, ind = pyconv.adaptive_max_pool2d(x, (None, None), return_indices=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ind[0, 0], np.arange(35).reshape(5, 7))
    # bins by hand: H = 5 into 3 -> [0, 2), [1, 4), [3, 5)
    col = np.arange(5.0).reshape(1, 1, 5, 1)
    np.testing.assert_allclose(pyconv.adaptive_avg_pool2d(col, (3, 1)).ravel(), [0.5, 2.0, 3.5])
    np.testing.assert_array_equal(pyconv.adaptive_max_pool2d(col, (3, 1)).ravel(), [1, 3, 4])


# --------------------------------------------------------------------------
# gradient checks (float64, central differences)
# --------------------------------------------------------------------------
def distinct(shape, seed=0):
    """Values 0.1 apart, shuffled: no ties, far from max's kinks for eps = 1e-6."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.1 - n * 0.05).reshape(shape)


GC_MAX = [(3, 1, 1, 1, False), (2, 2, 0, 1, True), ((2, 3), (1, 2), (1, 0), 2, False),
          (3, 2, 1, (1, 2), True)]


@pytest.mark.parametrize("k,s,p,d,cm", GC_MAX)
def test_gradcheck_max_pool(k, s, p, d, cm):
    x = distinct((2, 2, 5, 6), seed=1)
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=cm)

    def grads(R, x):
        _, ind = pyconv.max_pool2d(x, **kw, return_indices=True)
        return [pyconv.max_pool2d_backward(R, ind, x.shape)]

    res = gradcheck(lambda x: pyconv.max_pool2d(x, **kw), [x], grads)
    assert res.ok and res.checked == x.size
    # and the reference's own gradient
    gradcheck(lambda x: max_pool2d_ref(x, **kw)[0], [x],
              lambda R, x: [max_pool2d_backward_ref(R, x, **kw)])


GC_AVG = [(3, 1, 1, False, True, None), (2, 2, 1, True, False, None),
          ((3, 2), (2, 1), (1, 0), True, True, None), (3, 2, 0, True, True, 5)]


@pytest.mark.parametrize("k,s,p,cm,cip,div", GC_AVG)
def test_gradcheck_avg_pool(k, s, p, cm, cip, div):
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 6))
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=cm, count_include_pad=cip,
              divisor_override=div)
    res = gradcheck(lambda x: pyconv.avg_pool2d(x, **kw), [x],
                    lambda R, x: [pyconv.avg_pool2d_backward(R, x.shape, **kw)])
    assert res.ok and res.checked == x.size
    gradcheck(lambda x: avg_pool2d_ref(x, **kw), [x],
              lambda R, x: [avg_pool2d_backward_ref(R, x.shape, **kw)])


@pytest.mark.parametrize("out", [1, (2, 4), (4, 3), (7, 8)])
def test_gradcheck_adaptive(out):
    x = distinct((2, 2, 5, 6), seed=3)
    res = gradcheck(lambda x: pyconv.adaptive_avg_pool2d(x, out), [x],
                    lambda R, x: [pyconv.adaptive_avg_pool2d_backward(R, x.shape)])
    assert res.ok

    def grads(R, x):
        _, ind = pyconv.adaptive_max_pool2d(x, out, return_indices=True)
        return [pyconv.adaptive_max_pool2d_backward(R, ind, x.shape)]

    res = gradcheck(lambda x: pyconv.adaptive_max_pool2d(x, out), [x], grads)
    assert res.ok
    gradcheck(lambda x: adaptive_avg_pool2d_ref(x, out), [x],
              lambda R, x: [adaptive_avg_pool2d_backward_ref(R, x.shape)])
    gradcheck(lambda x: adaptive_max_pool2d_ref(x, out)[0], [x],
              lambda R, x: [adaptive_max_pool2d_backward_ref(R, x)])


# --------------------------------------------------------------------------
# non-finite values
# --------------------------------------------------------------------------
def _nonfinite_input(dtype):
    x = np.random.default_rng(9).standard_normal((2, 3, 6, 7))
    x[0, 0, 1, 1] = np.nan                    # one NaN
    x[0, 1] = -np.inf                         # a whole plane of -inf
    x[1, 0, 2, 2] = np.inf
    x[1, 1, 3, 3] = -np.inf
    x[1, 2, 0, 0] = np.nan                    # NaN in a corner (next to padding)
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("k,s,p", [(2, 1, 1), (3, 2, 1), ((1, 3), 1, 0), (2, 2, 0)])
def test_max_pool_nonfinite(k, s, p, dtype):
    x = _nonfinite_input(dtype)
    y, ind = pyconv.max_pool2d(x, k, s, p, return_indices=True)
    y_ref, ind_ref = max_pool2d_ref(x, k, s, p)
    np.testing.assert_array_equal(y, y_ref)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(ind, ind_ref)
    assert np.isnan(y[0, 0]).any() and np.isneginf(y[0, 1]).all() and np.isposinf(y[1, 0]).any()
    dy = np.ones(y.shape, dtype)
    assert_close(pyconv.max_pool2d_backward(dy, ind, x.shape),
                 max_pool_backward_indices_ref(dy, ind_ref, x.shape), dtype, "dx")


def test_max_pool_several_nans_index_as_pytorch():
    """PyTorch's scan takes a tap when it is > max or NaN: the LAST NaN gives the index."""
    x = np.array([[[[np.nan, 1.0, np.nan, 2.0]]]])
    y, ind = pyconv.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(y).all()
    assert ind.item() == 2 == max_pool2d_ref(x, (1, 4))[1].item()
    y, ind = pyconv.adaptive_max_pool2d(x, 1, return_indices=True)
    assert np.isnan(y).all() and ind.item() == 2


def test_all_minus_inf_window_index_is_first_tap():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, ind = pyconv.max_pool2d(x, 2, 1, 1, return_indices=True)
    assert np.isneginf(y).all()
    np.testing.assert_array_equal(ind, max_pool2d_ref(x, 2, 1, 1)[1])
    # window (i, j) starts at (i - 1, j - 1): its first in-input tap
    np.testing.assert_array_equal(ind[0, 0], [[0, 0, 1, 2], [0, 0, 1, 2], [3, 3, 4, 5],
                                              [6, 6, 7, 8]])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_avg_pool_nonfinite(dtype):
    x = _nonfinite_input(dtype)
    for kw in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=1)):
        y = pyconv.avg_pool2d(x, **kw)
        assert_close(y, avg_pool2d_ref(x, **kw), dtype, f"avg {kw}", equal_nan=True)
        assert np.isneginf(y[0, 1]).all()
    y = pyconv.adaptive_avg_pool2d(x, (3, 4))
    assert_close(y, adaptive_avg_pool2d_ref(x, (3, 4)), dtype, "adaptive avg", equal_nan=True)
    y, ind = pyconv.adaptive_max_pool2d(x, (3, 4), return_indices=True)
    y_ref, ind_ref = adaptive_max_pool2d_ref(x, (3, 4))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(ind, ind_ref)


def test_nonfinite_grad_stays_in_its_window():
    x = np.random.default_rng(10).standard_normal((1, 2, 6, 6))
    dy = np.zeros((1, 2, 3, 3))
    dy[0, 0, 0, 0] = np.nan
    dx = pyconv.avg_pool2d_backward(dy, x.shape, 2)
    assert np.isnan(dx[0, 0, :2, :2]).all()
    assert np.isnan(dx).sum() == 4
    _, ind = pyconv.max_pool2d(x, 2, return_indices=True)
    dx = pyconv.max_pool2d_backward(dy, ind, x.shape)
    assert np.isnan(dx).sum() == 1 and np.isnan(dx[0, 0, :2, :2]).sum() == 1


# --------------------------------------------------------------------------
# layouts and dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["fortran", "strided", "negative", "transposed"])
def test_layouts(layout, dtype):
    rng = np.random.default_rng(11)
    base = rng.standard_normal((3, 4, 14, 11)).astype(dtype)
    x = {"fortran": np.asfortranarray(base[:2]),
         "strided": base[:, ::2, ::2, 1::2],
         "negative": base[::-1, :, ::-1, ::-2],
         "transposed": base.transpose(0, 1, 3, 2)}[layout]
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    y, ind = pyconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_ref, ind_ref = max_pool2d_ref(xc, 3, 2, 1)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(ind, ind_ref)
    dy = np.asfortranarray(rng.standard_normal(y.shape).astype(dtype))
    assert_close(pyconv.max_pool2d_backward(dy, np.asfortranarray(ind), x.shape),
                 max_pool2d_backward_ref(dy, xc, 3, 2, 1), dtype, "max dx")
    assert_close(pyconv.avg_pool2d(x, 3, 2, 1), avg_pool2d_ref(xc, 3, 2, 1), dtype, "avg")
    dyv = rng.standard_normal((y.shape[0], y.shape[1], 2 * y.shape[2], y.shape[3])).astype(dtype)
    dyv = dyv[:, :, ::2]  # strided grad_output
    assert_close(pyconv.avg_pool2d_backward(dyv, x.shape, 3, 2, 1),
                 avg_pool2d_backward_ref(dyv, x.shape, 3, 2, 1), dtype, "avg dx")
    assert_close(pyconv.adaptive_avg_pool2d(x, (3, 2)), adaptive_avg_pool2d_ref(xc, (3, 2)),
                 dtype, "adaptive avg")
    np.testing.assert_array_equal(pyconv.adaptive_max_pool2d(x, (3, 2)),
                                  adaptive_max_pool2d_ref(xc, (3, 2))[0])
    np.testing.assert_array_equal(x, np.ascontiguousarray(x))  # inputs left alone


def test_nested_lists_and_read_only():
    x = [[[[1.0, 2.0], [3.0, 4.0]]]]
    np.testing.assert_array_equal(pyconv.max_pool2d(x, 2), [[[[4.0]]]])
    a = np.arange(16.0).reshape(1, 1, 4, 4)
    a.setflags(write=False)
    np.testing.assert_array_equal(pyconv.avg_pool2d(a, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_float16_gives_float16():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float16)
    y, ind = pyconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert y.dtype == np.float16 and ind.dtype == np.int64
    np.testing.assert_array_equal(y, max_pool2d_ref(x, 3, 2, 1)[0])
    ya = pyconv.avg_pool2d(x, 3, 2, 1)
    assert ya.dtype == np.float16
    assert_close(ya, avg_pool2d_ref(x, 3, 2, 1), np.float16, "avg")
    dy = rng.standard_normal(y.shape).astype(np.float16)
    dx = pyconv.max_pool2d_backward(dy, ind, x.shape)
    assert dx.dtype == np.float16
    assert_close(dx, max_pool2d_backward_ref(dy, x, 3, 2, 1), np.float16, "max dx")
    dxa = pyconv.avg_pool2d_backward(dy, x.shape, 3, 2, 1)
    assert dxa.dtype == np.float16
    assert_close(dxa, avg_pool2d_backward_ref(dy, x.shape, 3, 2, 1), np.float16, "avg dx")
    assert pyconv.adaptive_avg_pool2d(x, 2).dtype == np.float16
    assert pyconv.adaptive_max_pool2d(x, 2).dtype == np.float16
    assert pyconv.adaptive_avg_pool2d_backward(dy[:, :, :2, :2], x.shape).dtype == np.float16


@pytest.mark.parametrize("idt", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_inputs_give_float64(idt):
    rng = np.random.default_rng(13)
    x = rng.integers(0, 2 if idt is np.bool_ else 9, (2, 2, 5, 5)).astype(idt)
    y, ind = pyconv.max_pool2d(x, 2, 1, return_indices=True)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, max_pool2d_ref(x, 2, 1)[0])
    ya = pyconv.avg_pool2d(x, 2, 1)
    assert ya.dtype == np.float64
    assert_close(ya, avg_pool2d_ref(x, 2, 1), np.float64, "avg")
    assert pyconv.adaptive_avg_pool2d(x, 3).dtype == np.float64
    assert pyconv.adaptive_max_pool2d(x, 3).dtype == np.float64
    dyi = rng.integers(-3, 4, y.shape).astype(idt if idt is not np.bool_ else np.int8)
    dx = pyconv.max_pool2d_backward(dyi, ind, x.shape)
    assert dx.dtype == np.float64
    assert_close(dx, max_pool_backward_indices_ref(dyi, ind, x.shape), np.float64, "dx")
    assert pyconv.avg_pool2d_backward(dyi, x.shape, 2, 1).dtype == np.float64


def test_backward_overwrites_and_leaves_inputs_alone():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 6, 6))
    y, ind = pyconv.max_pool2d(x, 2, return_indices=True)
    dy = rng.standard_normal(y.shape)
    dy0, ind0 = dy.copy(), ind.copy()
    a = pyconv.max_pool2d_backward(dy, ind, x.shape)
    b = pyconv.max_pool2d_backward(dy, ind, x.shape)
    np.testing.assert_array_equal(a, b)
    assert a is not b
    np.testing.assert_array_equal(dy, dy0)
    np.testing.assert_array_equal(ind, ind0)
    a = pyconv.avg_pool2d_backward(dy, x.shape, 2)
    np.testing.assert_array_equal(a, pyconv.avg_pool2d_backward(dy, x.shape, 2))
    out = pyconv.max_pool2d(x, 2)
    assert not np.shares_memory(out, x)


# --------------------------------------------------------------------------
# thread-count independence
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_thread_count_independence(dtype, restore_threads):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((8, 32, 57, 61)).astype(dtype)

    def run():
        y, ind = pyconv.max_pool2d(x, 3, 2, 1, return_indices=True)
        dy = np.ones_like(y)
        ya = pyconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        am, ai = pyconv.adaptive_max_pool2d(x, (7, 5), return_indices=True)
        return [y, ind, pyconv.max_pool2d_backward(dy, ind, x.shape), ya,
                pyconv.avg_pool2d_backward(np.ones_like(ya), x.shape, 3, 2, 1, ceil_mode=True,
                                           count_include_pad=False),
                pyconv.adaptive_avg_pool2d(x, (7, 5)),
                pyconv.adaptive_avg_pool2d_backward(np.ones((8, 32, 7, 5), dtype), x.shape),
                am, ai, pyconv.adaptive_max_pool2d_backward(np.ones_like(am), ai, x.shape)]

    pyconv.set_num_threads(1)
    one = run()
    pyconv.set_num_threads(2)
    two = run()
    for i, (a, b) in enumerate(zip(one, two)):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), f"result {i} differs between 1 and 2 threads"


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
X = np.zeros((2, 3, 6, 6))


def _raises(exc, pattern):
    return pytest.raises(exc, match=pattern)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("kw,exc,pattern", [
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=-2), ValueError, "kernel_size"),
    (dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size"),
    (dict(kernel_size=2.0), TypeError, "kernel_size"),
    (dict(kernel_size="2"), TypeError, "kernel_size"),
    (dict(kernel_size=True), TypeError, "kernel_size"),
    (dict(kernel_size=2, stride=0), ValueError, "stride"),
    (dict(kernel_size=2, stride=(1, -1)), ValueError, "stride"),
    (dict(kernel_size=2, stride=1.5), TypeError, "stride"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding"),
    (dict(kernel_size=3, padding=2), ValueError, "padding"),
    (dict(kernel_size=(3, 2), padding=(1, 2)), ValueError, "padding"),
    (dict(kernel_size=2, padding=1.0), TypeError, "padding"),
    (dict(kernel_size=2, padding="same"), (TypeError, ValueError), "padding"),
    (dict(kernel_size=7), ValueError, r"(?i)kernel|output"),
])
def test_pool_bad_geometry(op, kw, exc, pattern):
    f = pyconv.max_pool2d if op == "max" else pyconv.avg_pool2d
    with _raises(exc, pattern):
        f(X, **kw)


@pytest.mark.parametrize("d,exc", [(0, ValueError), (-1, ValueError), ((1, 0), ValueError),
                                   (1.0, TypeError), ((1, 2, 3), ValueError)])
def test_max_pool_bad_dilation(d, exc):
    with _raises(exc, "dilation"):
        pyconv.max_pool2d(X, 2, dilation=d)


@pytest.mark.parametrize("div,exc", [(0, ValueError), (-3, ValueError), (1.5, (TypeError, ValueError)),
                                     ("2", TypeError)])
def test_avg_pool_bad_divisor(div, exc):
    with _raises(exc, "divisor_override"):
        pyconv.avg_pool2d(X, 2, divisor_override=div)
    with _raises(exc, "divisor_override"):
        pyconv.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X.shape, 2, divisor_override=div)


@pytest.mark.parametrize("shape", [(6, 6), (6,), (), (1, 2, 3, 6, 6)])
def test_pool_input_wrong_rank(shape):
    for f in (lambda a: pyconv.max_pool2d(a, 1), lambda a: pyconv.avg_pool2d(a, 1),
              lambda a: pyconv.adaptive_avg_pool2d(a, 1), lambda a: pyconv.adaptive_max_pool2d(a, 1)):
        with _raises(ValueError, "input"):
            f(np.zeros(shape))


@pytest.mark.parametrize("bad", [np.zeros((1, 1, 2, 2), dtype=np.complex128),
                                 np.array([[[["a"]]]]), np.zeros((1, 1, 2, 2), dtype=object)])
def test_pool_input_bad_dtype(bad):
    for f in (lambda a: pyconv.max_pool2d(a, 1), lambda a: pyconv.avg_pool2d(a, 1),
              lambda a: pyconv.adaptive_avg_pool2d(a, 1), lambda a: pyconv.adaptive_max_pool2d(a, 1)):
        with _raises(TypeError, "input"):
            f(bad)


def test_pool_empty_spatial_input():
    with _raises(ValueError, "input|output"):
        pyconv.max_pool2d(np.zeros((1, 1, 0, 4)), 1)
    with _raises(ValueError, "input|output"):
        pyconv.adaptive_avg_pool2d(np.zeros((1, 1, 4, 0)), 1)


@pytest.mark.parametrize("out,exc", [(0, ValueError), (-1, ValueError), ((2, 0), ValueError),
                                     ((1, 2, 3), ValueError), (1.5, TypeError), ("2", TypeError),
                                     ((2, 1.5), TypeError)])
def test_adaptive_bad_output_size(out, exc):
    with _raises(exc, "output_size"):
        pyconv.adaptive_avg_pool2d(X, out)
    with _raises(exc, "output_size"):
        pyconv.adaptive_max_pool2d(X, out)


def _max_fwd():
    return pyconv.max_pool2d(X, 2, return_indices=True)


def test_max_pool_backward_bad_indices():
    y, ind = _max_fwd()
    dy = np.ones_like(y)
    with _raises((TypeError, ValueError), "indices"):
        pyconv.max_pool2d_backward(dy, ind.astype(np.float64), X.shape)
    with _raises(ValueError, "indices"):
        pyconv.max_pool2d_backward(dy, ind[:, :, :2], X.shape)
    for bad in (-1, 36, 10**6):
        ind2 = ind.copy()
        ind2[1, 2, 0, 1] = bad
        with _raises(ValueError, "indices"):
            pyconv.max_pool2d_backward(dy, ind2, X.shape)
    ind2 = ind.copy()
    ind2[0, 0, 0, 0] = 36
    with _raises(ValueError, "indices"):
        pyconv.adaptive_max_pool2d_backward(dy, ind2, X.shape)
    with _raises((TypeError, ValueError), "indices"):
        pyconv.adaptive_max_pool2d_backward(dy, ind.astype(np.float32), X.shape)


def test_pool_backward_bad_shapes():
    y, ind = _max_fwd()
    dy = np.ones_like(y)
    # input_shape inconsistent with grad_output (batch / channels differ) or of the wrong length
    for shape in [(3, 3, 6, 6), (2, 4, 6, 6)]:
        with _raises(ValueError, "input_shape|grad_output"):
            pyconv.max_pool2d_backward(dy, ind, shape)
        with _raises(ValueError, "input_shape|grad_output"):
            pyconv.adaptive_avg_pool2d_backward(dy, shape)
        with _raises(ValueError, "input_shape|grad_output"):
            pyconv.avg_pool2d_backward(dy, shape, 2)
    for shape in [(6, 6), (1, 2, 3, 6, 6)]:
        with _raises(ValueError, "input_shape"):
            pyconv.max_pool2d_backward(dy, ind, shape)
        with _raises(ValueError, "input_shape"):
            pyconv.avg_pool2d_backward(dy, shape, 2)
    with _raises((TypeError, ValueError), "input_shape"):
        pyconv.avg_pool2d_backward(dy, (2, 3, 6.5, 6), 2)
    # grad_output shape must be the forward output's
    with _raises(ValueError, "grad_output"):
        pyconv.avg_pool2d_backward(np.ones((2, 3, 2, 3)), X.shape, 2)
    with _raises(ValueError, "grad_output|indices"):
        pyconv.max_pool2d_backward(np.ones((2, 3, 3, 2)), ind, X.shape)
    with _raises(ValueError, "grad_output|indices"):
        pyconv.adaptive_max_pool2d_backward(np.ones((2, 3, 3, 2)), ind, X.shape)


def test_backward_bad_grad_dtype():
    y, ind = _max_fwd()
    with _raises(TypeError, "grad_output"):
        pyconv.max_pool2d_backward(y.astype(np.complex64), ind, X.shape)
    with _raises(TypeError, "grad_output"):
        pyconv.avg_pool2d_backward(y.astype(np.complex64), X.shape, 2)
    with _raises(TypeError, "grad_output"):
        pyconv.adaptive_avg_pool2d_backward(y.astype(np.complex64), X.shape)


@pytest.mark.parametrize("W", [2, 3, 15, 16, 17, 18, 31, 33, 40])
def test_max_pool_2x2_simd_rows_match_reference_on_every_isa(W):
    """The 2x2 stride-2 fast path runs 8 outputs per vector on AVX2 (float32)
    with a scalar tail: ties (first maximum wins), NaN (a NaN wins: the last
    one) and -inf must give the reference's values and indices on every ISA."""
    rng = np.random.default_rng(W)
    x = rng.integers(0, 3, size=(2, 3, 6, W)).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 7, replace=False)] = np.nan
    flat[rng.choice(flat.size, 7, replace=False)] = -np.inf
    y_ref, i_ref = max_pool2d_ref(x.astype(np.float64), 2)
    old = pyconv.get_isa()
    try:
        for isa in pyconv.supported_isas():
            pyconv.set_isa(isa)
            y, ind = pyconv.max_pool2d(x, 2, return_indices=True)
            np.testing.assert_array_equal(ind, i_ref, err_msg=isa)
            np.testing.assert_array_equal(y, y_ref.astype(np.float32), err_msg=isa)
            np.testing.assert_array_equal(pyconv.max_pool2d(x, 2), y)
    finally:
        pyconv.set_isa(old)


@pytest.mark.parametrize("k,s,p,d,cm", [(3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, 1, 1, 1, False),
                                        (3, 1, 1, 2, False), (5, 3, 2, 1, True), ((2, 3), (1, 2), (1, 0), 1, False)])
@pytest.mark.parametrize("W", [5, 16, 37])
def test_max_pool_simd_planes_match_reference_on_every_isa(k, s, p, d, cm, W):
    """Other float32 max pools run over -inf-padded, phase-split planes (plane.h)
    with one flat SIMD pass over the taps; values and indices (ties, NaN, all-
    -inf windows) must equal the reference's on every ISA."""
    rng = np.random.default_rng(W)
    x = rng.integers(0, 3, size=(2, 3, 9, W)).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 5, replace=False)] = np.nan
    flat[rng.choice(flat.size, 9, replace=False)] = -np.inf
    x[1, 2, :4, :4] = -np.inf  # windows with nothing above -inf
    y_ref, i_ref = max_pool2d_ref(x.astype(np.float64), k, s, p, d, cm)
    old = pyconv.get_isa()
    try:
        for isa in pyconv.supported_isas():
            pyconv.set_isa(isa)
            y, ind = pyconv.max_pool2d(x, k, s, p, d, ceil_mode=cm, return_indices=True)
            np.testing.assert_array_equal(ind, i_ref, err_msg=isa)
            np.testing.assert_array_equal(y, y_ref.astype(np.float32), err_msg=isa)
    finally:
        pyconv.set_isa(old)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("H,W", [(15, 15), (16, 17), (17, 16), (31, 33), (56, 56), (9, 57)])
def test_max_pool_3x3_stride2_kernel(H, W, padding, ceil_mode):
    """ResNet's 3x3 stride-2 pool has its own float32 kernel (rows split into
    even / odd columns, 8 outputs per vector, the last block of a row
    overlapping): values and indices against the reference, with ties, NaNs
    (several in a window: the last wins), -inf windows and planes, on every
    output width it takes (>= 8; 15 x 15 unpadded gives 7, the generic path)
    and both thread counts."""
    rng = np.random.default_rng(H * 100 + W)
    x = np.round(rng.standard_normal((2, 3, H, W)) * 2)  # many ties
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = np.nan
    x[0, 1] = -np.inf
    x[1, 0, :3, :3] = -np.inf
    x[1, 2, -1, -1] = np.nan
    x[1, 2, 4:7, 4:7] = np.nan
    kw = dict(kernel_size=3, stride=2, padding=padding, ceil_mode=ceil_mode)
    y_ref, i_ref = max_pool2d_ref(x, **kw)
    old = pyconv.get_num_threads()
    try:
        for nt in (1, 2):
            pyconv.set_num_threads(nt)
            y, ind = pyconv.max_pool2d(x.astype(np.float32), return_indices=True, **kw)
            np.testing.assert_array_equal(ind, i_ref)
            np.testing.assert_array_equal(y, y_ref.astype(np.float32))  # (NaN == NaN here)
            # no NaN in the plane: the compare-only path
            x2 = np.where(np.isnan(x), 0.5, x)
            y2, ind2 = pyconv.max_pool2d(x2.astype(np.float32), return_indices=True, **kw)
            y2_ref, i2_ref = max_pool2d_ref(x2, **kw)
            np.testing.assert_array_equal(ind2, i2_ref)
            np.testing.assert_array_equal(y2, y2_ref.astype(np.float32))
    finally:
        pyconv.set_num_threads(old)
