"""pad, conv2d padding_mode, linear and batch norm against float64 explicit-loop references.

The references live in pyconv.testing.reference_extra (index-rule padding,
feature-by-feature linear, channel-by-channel two-pass batch norm).

Tolerances (got vs the float64 reference ref, elementwise, with
scale = max(max|ref|, 1) over the whole array):

    pad forward:      bit-exact in every dtype (it only copies values; the
                      reference runs on the inputs already rounded to dtype)
    float64:  |got - ref| <= 1e-10 * |ref| + 1e-10 * scale
    float32:  |got - ref| <= 1e-4  * |ref| + 1e-4  * scale
    float16:  |got - ref| <= 2e-3  * |ref| + 2e-3  * scale   (computed in float32,
              rounded once to float16)

For float32/float16 the reference runs on the already-rounded inputs, so the
tolerance covers only pyconv's arithmetic. The absolute term is relative to
the array's largest value because the outputs are sums whose terms can
cancel. A wrong source index, channel or statistic gives errors of order
1 * scale. Batch-norm running statistics use the same tolerances.

Central-difference checks (pyconv.testing.gradcheck) run in float64 with
eps = 1e-6 and Caffe's scaled threshold 1e-6.

Sections: pad, conv2d padding_mode, linear, batch norm; each with reference
sweeps in float32/float64, gradient checks, thread-count independence,
memory layouts, dtype rules and bad arguments.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyconv
from pyconv.testing import compare
from pyconv.testing.gradcheck import gradcheck
from pyconv.testing.reference_extra import (
    PAD_MODES,
    batch_norm_backward_ref,
    batch_norm_ref,
    conv2d_mode_backward_ref,
    conv2d_mode_ref,
    linear_backward_ref,
    linear_ref,
    pad_backward_ref,
    pad_ref,
)

TOL = {
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.float32): (1e-4, 1e-4),
    np.dtype(np.float16): (2e-3, 2e-3),
}
DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]
CONV_MODES = ["zeros", "reflect", "replicate", "circular"]


def assert_close(got, ref, dtype, what=""):
    """got (any float dtype) against the float64 reference, with this file's TOL[dtype]."""
    compare.assert_close(got, ref, dtype, what, TOL)


def rnd(shape, seed, dtype=np.float64, loc=0.0, sd=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * sd + loc).astype(dtype)


def run_1_and_2_threads(fn):
    """fn() at 1 and at 2 threads (the caller restores the setting)."""
    pyconv.set_num_threads(1)
    a = fn()
    pyconv.set_num_threads(2)
    b = fn()
    return a, b


def assert_same_bits(a, b, what=""):
    if isinstance(a, tuple):
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same_bits(u, v, f"{what}[{i}]")
        return
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), f"{what}: results differ between 1 and 2 threads"


# ==========================================================================
# pad
# ==========================================================================
def _limit(mode, n):
    """Largest pad a mode allows on an axis of n elements (constant: any; use n + 2)."""
    return {"constant": n + 2, "reflect": n - 1, "replicate": n + 2, "circular": n}[mode]


def _clip(mode, shape, padding):
    """padding with each entry clipped to the mode's limit for `shape`."""
    W = shape[-1]
    H = shape[-2] if len(padding) == 4 else None
    out = [min(p, _limit(mode, W)) for p in padding[:2]]
    if H is not None:
        out += [min(p, _limit(mode, H)) for p in padding[2:]]
    return tuple(out)


# (shape, padding): asymmetric, odd sizes, batch 1, 1x1 planes, 3-d and 4-d,
# 2-tuples (last axis only) and 4-tuples; clipped per mode by _clip.
PAD_CASES = [
    ((2, 3, 5, 7), (1, 2, 3, 4)),
    ((1, 2, 6, 5), (4, 0, 0, 5)),
    ((2, 1, 3, 3), (2, 2, 2, 2)),
    ((1, 1, 1, 1), (1, 1, 1, 1)),
    ((3, 2, 1, 4), (3, 2, 1, 0)),
    ((2, 3, 7), (3, 6)),
    ((1, 1, 1), (1, 0)),
    ((3, 4, 5), (0, 0, 2, 4)),   # 3-d with 4-tuple: an unbatched (C, H, W) image
    ((2, 2, 4, 3), (0, 0, 0, 0)),
    ((2, 2, 4, 3), (2, 1)),      # 4-d with a 2-tuple pads the last axis only
]


def _pad_cases():
    out = []
    for mode in PAD_MODES:
        for shape, padding in PAD_CASES:
            p = _clip(mode, shape, padding)
            out.append(pytest.param(mode, shape, p, id=f"{mode}-{'x'.join(map(str, shape))}-"
                                    f"{'_'.join(map(str, p))}"))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("mode,shape,padding", _pad_cases())
def test_pad_forward_backward(mode, shape, padding, dtype):
    x = rnd(shape, 1, dtype)
    value = -1.5 if mode == "constant" else 0.0
    y = pyconv.pad(x, padding, mode, value) if mode == "constant" else pyconv.pad(x, padding, mode)
    assert y.dtype == dtype
    y_ref = pad_ref(x, padding, mode, value)
    assert y.shape == y_ref.shape
    np.testing.assert_array_equal(y, y_ref.astype(dtype))  # a copy: bit-exact
    dy = rnd(y.shape, 2, dtype)
    dx = pyconv.pad_backward(dy, shape, padding, mode)
    assert dx.dtype == dtype and dx.shape == shape
    assert_close(dx, pad_backward_ref(dy, shape, padding, mode), dtype, "dx")


@pytest.mark.parametrize("mode", PAD_MODES)
def test_pad_every_size_up_to_the_limit(mode):
    """Every (H, W) in 1..4; on each side every pad from 0 to the mode's limit
    (one side at a time, then all four sides together), and all sides at the limit."""
    for H in (1, 2, 3, 4):
        for W in (1, 2, 3, 4):
            shape = (2, 1, H, W)
            x = rnd(shape, H * 10 + W)
            lw, lh = _limit(mode, W), _limit(mode, H)
            paddings = {(lw, lw, lh, lh)}
            for p in range(0, max(lw, lh) + 1):
                paddings |= {(min(p, lw), 0, 0, 0), (0, min(p, lw), 0, 0),
                             (0, 0, min(p, lh), 0), (0, 0, 0, min(p, lh)),
                             (min(p, lw), min(p, lw), min(p, lh), min(p, lh)),
                             (min(p, lw), 0, 0, min(p + 1, lh))}
            for padding in sorted(paddings):
                y = pyconv.pad(x, padding, mode)
                np.testing.assert_array_equal(y, pad_ref(x, padding, mode),
                                              err_msg=f"{shape} {padding}")
                dy = rnd(y.shape, sum(padding))
                assert_close(pyconv.pad_backward(dy, shape, padding, mode),
                             pad_backward_ref(dy, shape, padding, mode), np.float64,
                             f"dx {shape} {padding}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape,padding", [
    ((5,), (2, 3)), ((4, 3), (1, 0)), ((4, 3), (0, 2, 1, 3)), ((2, 1, 2, 3, 2), (1, 2, 2, 1)),
    ((1, 2, 1, 1, 3), (0, 1)), ((3,), (0, 0))])
def test_pad_constant_any_rank(shape, padding, dtype):
    x = rnd(shape, 3, dtype)
    y = pyconv.pad(x, padding, "constant", value=2.25)
    np.testing.assert_array_equal(y, pad_ref(x, padding, "constant", 2.25).astype(dtype))
    y0 = pyconv.pad(x, padding)  # default mode and value
    np.testing.assert_array_equal(y0, pad_ref(x, padding).astype(dtype))
    dy = rnd(y.shape, 4, dtype)
    assert_close(pyconv.pad_backward(dy, shape, padding), pad_backward_ref(dy, shape, padding),
                 dtype, "dx")


def test_pad_constant_value_is_exact_in_float32():
    x = np.zeros((1, 1, 2, 2), np.float32)
    y = pyconv.pad(x, (1, 1, 1, 1), value=0.1)
    assert y.dtype == np.float32
    assert y[0, 0, 0, 0] == np.float32(0.1)
    assert np.isinf(pyconv.pad(x, (1, 0), value=np.inf)[0, 0, 0, 0])
    assert np.isnan(pyconv.pad(x, (1, 0), value=np.nan)[0, 0, 0, 0])


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("shape,padding", [((2, 2, 3, 4), (1, 2, 2, 0)), ((1, 2, 5), (3, 4)),
                                           ((2, 1, 3, 3), (2, 1))])
def test_pad_gradcheck(mode, shape, padding):
    padding = _clip(mode, shape, padding)
    x = rnd(shape, 5)
    gradcheck(lambda x: pyconv.pad(x, padding, mode),
              [x], lambda R, x: [pyconv.pad_backward(R, x.shape, padding, mode)])


def test_pad_hand_examples():
    x = np.arange(1.0, 5.0).reshape(1, 1, 4)
    np.testing.assert_array_equal(pyconv.pad(x, (2, 3), "reflect")[0, 0],
                                  [3, 2, 1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(pyconv.pad(x, (2, 3), "replicate")[0, 0],
                                  [1, 1, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(pyconv.pad(x, (4, 3), "circular")[0, 0],
                                  [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3])
    np.testing.assert_array_equal(pyconv.pad(x, (1, 2), "constant", 9)[0, 0],
                                  [9, 1, 2, 3, 4, 9, 9])
    # reflect backward: the mirrored gradients land on interior elements.
    dy = np.ones((1, 1, 9))
    np.testing.assert_array_equal(pyconv.pad_backward(dy, (1, 1, 4), (2, 3), "reflect")[0, 0],
                                  [2, 3, 3, 1])
    np.testing.assert_array_equal(pyconv.pad_backward(dy, (1, 1, 4), (2, 3), "replicate")[0, 0],
                                  [3, 1, 1, 4])
    np.testing.assert_array_equal(pyconv.pad_backward(dy[..., :7], (1, 1, 4), (1, 2))[0, 0],
                                  [1, 1, 1, 1])


def test_pad_returns_new_arrays_and_leaves_inputs_alone():
    x = rnd((2, 2, 3, 3), 6)
    xc = x.copy()
    y = pyconv.pad(x, (0, 0, 0, 0), "reflect")
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)
    y[...] = 7
    np.testing.assert_array_equal(x, xc)
    dy = rnd((2, 2, 3, 3), 7)
    dyc = dy.copy()
    dx = pyconv.pad_backward(dy, x.shape, (0, 0, 0, 0), "circular")
    assert not np.shares_memory(dx, dy)
    np.testing.assert_array_equal(dy, dyc)
    np.testing.assert_array_equal(dx, dy)
    # Repeated backward calls overwrite, never accumulate.
    a = pyconv.pad_backward(rnd((2, 2, 5, 6), 8), x.shape, (1, 2, 1, 1), "replicate")
    b = pyconv.pad_backward(rnd((2, 2, 5, 6), 8), x.shape, (1, 2, 1, 1), "replicate")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_pad_thread_count_independence(mode, restore_threads):
    x = rnd((8, 16, 40, 36), 9, np.float32)
    padding = (3, 5, 2, 7)
    y1, y2 = run_1_and_2_threads(lambda: pyconv.pad(x, padding, mode))
    assert_same_bits(y1, y2, "pad")
    dy = rnd(y1.shape, 10, np.float32)
    d1, d2 = run_1_and_2_threads(lambda: pyconv.pad_backward(dy, x.shape, padding, mode))
    assert_same_bits(d1, d2, "pad_backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("mode", PAD_MODES)
def test_pad_non_contiguous(mode, dtype):
    base = rnd((3, 8, 7, 10), 11, dtype)
    padding = (2, 1, 3, 0)
    for x in (base[::2, ::3, 1:6, ::2],                    # strided
              base.transpose(0, 1, 3, 2),                  # transposed
              np.asfortranarray(base),                     # Fortran order
              base[::-1, :, ::-1]):                        # negative strides
        y = pyconv.pad(x, padding, mode)
        np.testing.assert_array_equal(y, pad_ref(x, padding, mode).astype(dtype))
        dy_full = rnd((y.shape[0], y.shape[1], y.shape[2], 2 * y.shape[3]), 12, dtype)
        dy = dy_full[..., ::2]
        assert_close(pyconv.pad_backward(dy, x.shape, padding, mode),
                     pad_backward_ref(dy, x.shape, padding, mode), dtype, "dx")


def test_pad_dtypes():
    x16 = rnd((1, 2, 3, 3), 13, np.float16)
    y = pyconv.pad(x16, (1, 1, 1, 1), "reflect")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, pad_ref(x16, (1, 1, 1, 1), "reflect").astype(np.float16))
    dx = pyconv.pad_backward(rnd(y.shape, 14, np.float16), x16.shape, (1, 1, 1, 1), "reflect")
    assert dx.dtype == np.float16
    for xi in (np.arange(12, dtype=np.int32).reshape(1, 1, 3, 4),
               np.arange(12, dtype=np.uint8).reshape(1, 1, 3, 4),
               np.ones((1, 1, 3, 4), dtype=bool)):
        y = pyconv.pad(xi, (1, 2, 2, 1), "circular")
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y, pad_ref(xi, (1, 2, 2, 1), "circular"))
        dx = pyconv.pad_backward(xi, (1, 1, 2, 1), (0, 3, 0, 1), "replicate")
        assert dx.dtype == np.float64
        np.testing.assert_array_equal(dx, pad_backward_ref(xi, (1, 1, 2, 1), (0, 3, 0, 1),
                                                           "replicate"))
    # nested lists are array-like
    y = pyconv.pad([[[1.0, 2.0, 3.0]]], [1, 1], "reflect")
    np.testing.assert_array_equal(y, [[[2.0, 1.0, 2.0, 3.0, 2.0]]])
    assert y.dtype == np.float64


class TestPadErrors:
    X = np.zeros((1, 2, 3, 4))

    @pytest.mark.parametrize("padding", [(-1, 0), (0, 0, 0, -2), (1, -1, 1, 1)])
    def test_negative(self, padding):
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad(self.X, padding)
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad_backward(self.X, self.X.shape, padding)

    @pytest.mark.parametrize("padding", [(1,), (1, 1, 1), (1, 1, 1, 1, 1, 1), ()])
    def test_wrong_length(self, padding):
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad(self.X, padding)

    @pytest.mark.parametrize("padding", [(1.5, 0), (0, "1"), (True, 0), (0, 0, None, 0)])
    def test_not_int(self, padding):
        with pytest.raises(TypeError, match="padding"):
            pyconv.pad(self.X, padding)

    def test_not_a_sequence(self):
        with pytest.raises((TypeError, ValueError), match="padding"):
            pyconv.pad(self.X, 1)

    @pytest.mark.parametrize("mode", ["zeros", "Reflect", "wrap", "", None])
    def test_mode(self, mode):
        with pytest.raises((ValueError, TypeError), match="mode"):
            pyconv.pad(self.X, (1, 1), mode)
        with pytest.raises((ValueError, TypeError), match="mode"):
            pyconv.pad_backward(np.zeros((1, 2, 3, 6)), self.X.shape, (1, 1), mode)

    @pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
    @pytest.mark.parametrize("shape", [(4,), (3, 4), (1, 1, 2, 3, 4)])
    def test_non_constant_needs_3d_or_4d(self, mode, shape):
        with pytest.raises(ValueError, match="input"):
            pyconv.pad(np.zeros(shape), (1, 1), mode)

    def test_four_tuple_needs_2d(self):
        with pytest.raises(ValueError, match="input|padding"):
            pyconv.pad(np.zeros(5), (1, 1, 1, 1))

    def test_constant_on_0d(self):
        with pytest.raises(ValueError, match="input|padding"):
            pyconv.pad(np.float64(3.0), (1, 1))

    @pytest.mark.parametrize("padding", [(4, 0, 0, 0), (0, 4, 0, 0), (0, 0, 3, 0), (0, 0, 0, 3),
                                         (5, 5, 5, 5)])
    def test_reflect_pad_must_be_smaller_than_dim(self, padding):
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad(self.X, padding, "reflect")
        out = (1, 2, 3 + padding[2] + padding[3], 4 + padding[0] + padding[1])
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad_backward(np.zeros(out), self.X.shape, padding, "reflect")

    @pytest.mark.parametrize("padding", [(5, 0, 0, 0), (0, 5, 0, 0), (0, 0, 4, 0), (0, 0, 0, 4)])
    def test_circular_pad_must_not_exceed_dim(self, padding):
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad(self.X, padding, "circular")
        out = (1, 2, 3 + padding[2] + padding[3], 4 + padding[0] + padding[1])
        with pytest.raises(ValueError, match="padding"):
            pyconv.pad_backward(np.zeros(out), self.X.shape, padding, "circular")

    def test_limits_themselves_are_allowed(self):
        assert pyconv.pad(self.X, (3, 3, 2, 2), "reflect").shape == (1, 2, 7, 10)
        assert pyconv.pad(self.X, (4, 4, 3, 3), "circular").shape == (1, 2, 9, 12)
        assert pyconv.pad(self.X, (9, 9, 9, 9), "replicate").shape == (1, 2, 21, 22)

    @pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
    def test_value_only_for_constant(self, mode):
        # As torch: 'Padding mode "reflect" doesn't take in value argument' (value 0 is
        # accepted: it is the default).
        with pytest.raises(ValueError, match="value"):
            pyconv.pad(self.X, (1, 1, 1, 1), mode, value=1.0)
        assert pyconv.pad(self.X, (1, 1, 1, 1), mode, value=0.0).shape == (1, 2, 5, 6)

    @pytest.mark.parametrize("value", ["1", [1.0], 1j])
    def test_value_not_real(self, value):
        with pytest.raises(TypeError, match="value"):
            pyconv.pad(self.X, (1, 1), "constant", value)

    @pytest.mark.parametrize("bad", [np.zeros((1, 2, 3), np.complex128),
                                     np.array([["a", "b"]]), np.zeros((2, 2), object)])
    def test_input_dtype(self, bad):
        with pytest.raises(TypeError, match="input"):
            pyconv.pad(bad, (1, 1))
        shape = bad.shape[:-1] + (bad.shape[-1] - 2,) if bad.shape[-1] > 2 else None
        if shape is not None:
            with pytest.raises(TypeError, match="grad_output"):
                pyconv.pad_backward(bad, shape, (1, 1))

    def test_backward_grad_output_shape(self):
        with pytest.raises(ValueError, match="grad_output"):
            pyconv.pad_backward(np.zeros((1, 2, 5, 6)), self.X.shape, (1, 1, 1, 0))
        with pytest.raises(ValueError, match="grad_output"):
            pyconv.pad_backward(np.zeros((1, 2, 3, 6)), self.X.shape, (1, 1, 1, 1), "reflect")

    @pytest.mark.parametrize("shape", [(1, 2, 3.0, 4), (1, 2, "3", 4), (1, 2, None, 4)])
    def test_backward_input_shape_not_int(self, shape):
        with pytest.raises(TypeError, match="input_shape"):
            pyconv.pad_backward(np.zeros((1, 2, 3, 6)), shape, (1, 1))


# ==========================================================================
# conv2d with padding_mode
# ==========================================================================
# (name, x shape, w shape, kwargs); padding kept within every mode's limit.
CONV_CASES = [
    ("p1", (2, 3, 5, 6), (4, 3, 3, 3), dict(padding=1)),
    ("p2-s2", (1, 2, 7, 5), (3, 2, 3, 2), dict(stride=2, padding=2)),
    ("pair-dil", (2, 4, 6, 7), (4, 2, 3, 3), dict(padding=(2, 1), dilation=(1, 2), groups=2)),
    ("same-even", (2, 2, 5, 6), (2, 2, 4, 2), dict(padding="same", dilation=(1, 3))),
    ("same-dw", (1, 3, 6, 5), (6, 1, 3, 3), dict(padding="same", groups=3)),
    ("valid", (2, 2, 4, 5), (3, 2, 2, 2), dict(padding="valid")),
    ("s-pair", (1, 2, 6, 7), (2, 2, 3, 3), dict(stride=(1, 2), padding=(0, 3))),
    ("1x1-in", (3, 2, 1, 1), (2, 2, 1, 1), dict(padding=(0, 1))),
    ("unbatched", (2, 4, 5), (3, 2, 3, 3), dict(padding=1)),
]


def _conv_arrays(xs, ws, seed, dtype):
    x, w = rnd(xs, seed, dtype), rnd(ws, seed + 1, dtype)
    b = rnd((ws[0],), seed + 2, dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("padding_mode", CONV_MODES)
@pytest.mark.parametrize("name,xs,ws,kw", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_padding_mode(name, xs, ws, kw, padding_mode, dtype):
    if padding_mode == "circular" and name == "1x1-in":
        kw = dict(padding=(1, 1))  # circular: pad <= size; reflect: pad 0 on a 1-pixel axis
    if padding_mode == "reflect" and name == "1x1-in":
        kw = dict(padding=0)
    x, w, b = _conv_arrays(xs, ws, 20, dtype)
    y_ref = conv2d_mode_ref(x, w, b, padding_mode=padding_mode, **kw)
    y = pyconv.conv2d(x, w, b, padding_mode=padding_mode, **kw)
    assert y.dtype == dtype
    assert_close(y, y_ref, dtype, "y")
    y_nb = pyconv.conv2d(x, w, padding_mode=padding_mode, **kw)
    assert_close(y_nb, conv2d_mode_ref(x, w, None, padding_mode=padding_mode, **kw), dtype, "y")

    dy = rnd(y_ref.shape, 23, dtype)
    dx_ref, dw_ref, db_ref = conv2d_mode_backward_ref(dy, x, w, padding_mode=padding_mode, **kw)
    dx, dw, db = pyconv.conv2d_backward(dy, x, w, padding_mode=padding_mode, **kw)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, "dx")
    assert_close(dw, dw_ref, dtype, "dw")
    assert_close(db, db_ref, dtype, "db")
    if len(xs) == 4:
        dx2 = pyconv.conv2d_input(x.shape, w, dy, padding_mode=padding_mode, **kw)
        dw2 = pyconv.conv2d_weight(x, w.shape, dy, padding_mode=padding_mode, **kw)
        assert dx2.dtype == dw2.dtype == dtype
        assert_close(dx2, dx_ref, dtype, "conv2d_input")
        assert_close(dw2, dw_ref, dtype, "conv2d_weight")


@pytest.mark.parametrize("padding_mode", CONV_MODES)
def test_conv2d_padding_mode_zero_padding_is_plain_conv(padding_mode):
    x, w, b = _conv_arrays((2, 3, 6, 5), (4, 3, 3, 3), 30, np.float64)
    for padding in (0, "valid", (0, 0)):
        np.testing.assert_array_equal(
            pyconv.conv2d(x, w, b, padding=padding, padding_mode=padding_mode),
            pyconv.conv2d(x, w, b, padding=padding))


@pytest.mark.parametrize("padding_mode", CONV_MODES)
def test_conv2d_padding_mode_output_mask(padding_mode):
    x, w, _ = _conv_arrays((2, 2, 5, 5), (3, 2, 3, 3), 31, np.float64)
    dy = rnd((2, 3, 5, 5), 32)
    full = pyconv.conv2d_backward(dy, x, w, padding=1, padding_mode=padding_mode)
    for mask in [(True, False, False), (False, True, False), (False, False, True),
                 (False, True, True), (False, False, False)]:
        got = pyconv.conv2d_backward(dy, x, w, padding=1, padding_mode=padding_mode,
                                     output_mask=mask)
        for want, g, f in zip(mask, got, full):
            if want:
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None


GC_CONV = [
    ((2, 2, 4, 5), (2, 2, 3, 3), dict(padding=1)),
    ((1, 2, 5, 4), (2, 1, 2, 3), dict(padding="same", dilation=(2, 1), groups=2)),
    ((1, 1, 5, 5), (2, 1, 3, 2), dict(stride=2, padding=(2, 1))),
]


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("xs,ws,kw", GC_CONV, ids=["p1", "same-dil-g2", "s2-pair"])
def test_conv2d_padding_mode_gradcheck(xs, ws, kw, padding_mode):
    x, w, b = _conv_arrays(xs, ws, 33, np.float64)
    gradcheck(lambda x, w, b: pyconv.conv2d(x, w, b, padding_mode=padding_mode, **kw),
              [x, w, b],
              lambda R, x, w, b: pyconv.conv2d_backward(R, x, w, padding_mode=padding_mode, **kw))


@pytest.mark.parametrize("padding_mode", CONV_MODES)
def test_conv2d_padding_mode_thread_count_independence(padding_mode, restore_threads):
    x, w, b = _conv_arrays((4, 8, 20, 18), (16, 8, 3, 3), 34, np.float32)
    y1, y2 = run_1_and_2_threads(
        lambda: pyconv.conv2d(x, w, b, padding=2, padding_mode=padding_mode))
    assert_same_bits(y1, y2, "y")
    dy = rnd(y1.shape, 35, np.float32)
    g1, g2 = run_1_and_2_threads(
        lambda: pyconv.conv2d_backward(dy, x, w, padding=2, padding_mode=padding_mode))
    assert_same_bits(g1, g2, "grads")


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_conv2d_padding_mode_non_contiguous_and_dtypes(padding_mode):
    base = rnd((2, 6, 9, 8), 36)
    x = base[:, ::2, 1:, ::-1].transpose(0, 1, 3, 2)  # (2, 3, 8, 8), non-contiguous
    w = np.asfortranarray(rnd((4, 3, 3, 3), 37))
    ref = conv2d_mode_ref(x, w, padding=2, padding_mode=padding_mode)
    assert_close(pyconv.conv2d(x, w, padding=2, padding_mode=padding_mode), ref, np.float64, "y")
    # float32 input with float64 weight -> float64; float16 -> float16; ints -> float64
    y = pyconv.conv2d(x.astype(np.float32), w, padding=1, padding_mode=padding_mode)
    assert y.dtype == np.float64
    y16 = pyconv.conv2d(x.astype(np.float16), w.astype(np.float16), padding=1,
                        padding_mode=padding_mode)
    assert y16.dtype == np.float16
    assert_close(y16, conv2d_mode_ref(x.astype(np.float16), w.astype(np.float16), padding=1,
                                      padding_mode=padding_mode), np.float16, "y16")
    xi = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4) % 7
    wi = np.ones((2, 3, 3, 3), np.int64)
    yi = pyconv.conv2d(xi, wi, padding=1, padding_mode=padding_mode)
    assert yi.dtype == np.float64
    assert_close(yi, conv2d_mode_ref(xi, wi, padding=1, padding_mode=padding_mode),
                 np.float64, "yi")


class TestConvPaddingModeErrors:
    X = np.zeros((1, 2, 3, 4))
    W = np.zeros((2, 2, 3, 3))
    DY = np.zeros((1, 2, 3, 4))

    @pytest.mark.parametrize("padding_mode", ["constant", "same", "zero", "", None, "Reflect"])
    def test_bad_padding_mode(self, padding_mode):
        for call in (
                lambda: pyconv.conv2d(self.X, self.W, padding=1, padding_mode=padding_mode),
                lambda: pyconv.conv2d_backward(self.DY, self.X, self.W, padding=1,
                                               padding_mode=padding_mode),
                lambda: pyconv.conv2d_input(self.X.shape, self.W, self.DY, padding=1,
                                            padding_mode=padding_mode),
                lambda: pyconv.conv2d_weight(self.X, self.W.shape, self.DY, padding=1,
                                             padding_mode=padding_mode)):
            with pytest.raises((ValueError, TypeError), match="padding_mode"):
                call()

    @pytest.mark.parametrize("padding_mode,padding", [("reflect", 3), ("reflect", (1, 4)),
                                                      ("circular", (4, 0)), ("circular", (0, 5))])
    def test_padding_too_large_for_mode(self, padding_mode, padding):
        with pytest.raises(ValueError, match="padding"):
            pyconv.conv2d(self.X, np.zeros((2, 2, 1, 1)), padding=padding,
                          padding_mode=padding_mode)

    def test_replicate_has_no_limit(self):
        y = pyconv.conv2d(self.X, np.ones((1, 2, 1, 1)), padding=5, padding_mode="replicate")
        assert y.shape == (1, 1, 13, 14)


# ==========================================================================
# linear
# ==========================================================================
# (x shape, out_features): batch 1, unbatched, 3-d, K = 1, M = 1, sizes
# around register blocks.
LINEAR_CASES = [
    ((4, 5), 3), ((1, 7), 2), ((6,), 4), ((2, 3, 5), 6), ((3, 1), 1), ((5, 1), 4),
    ((2, 1), 1), ((17, 33), 15), ((9, 16), 32), ((1, 2, 2, 3), 2), ((13, 64), 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("xs,M", LINEAR_CASES, ids=lambda v: str(v))
def test_linear_forward_backward(xs, M, dtype):
    K = xs[-1]
    x, w, b = rnd(xs, 40, dtype), rnd((M, K), 41, dtype), rnd((M,), 42, dtype)
    y = pyconv.linear(x, w, b)
    assert y.dtype == dtype and y.shape == xs[:-1] + (M,)
    assert_close(y, linear_ref(x, w, b), dtype, "y")
    y0 = pyconv.linear(x, w)
    assert_close(y0, linear_ref(x, w), dtype, "y (no bias)")
    dy = rnd(y.shape, 43, dtype)
    dx_ref, dw_ref, db_ref = linear_backward_ref(dy, x, w)
    dx, dw, db = pyconv.linear_backward(dy, x, w)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, "dx")
    assert_close(dw, dw_ref, dtype, "dw")
    assert_close(db, db_ref, dtype, "db")


def test_linear_output_mask():
    x, w = rnd((5, 4), 44), rnd((3, 4), 45)
    dy = rnd((5, 3), 46)
    full = pyconv.linear_backward(dy, x, w)
    for mask in [(True, False, False), (False, True, False), (False, False, True),
                 (True, True, False), (False, False, False)]:
        got = pyconv.linear_backward(dy, x, w, output_mask=mask)
        assert len(got) == 3
        for want, g, f in zip(mask, got, full):
            if want:
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None


@pytest.mark.parametrize("xs,M", [((3, 4), 2), ((2, 2, 3), 3), ((5,), 2)])
def test_linear_gradcheck(xs, M):
    x, w, b = rnd(xs, 47), rnd((M, xs[-1]), 48), rnd((M,), 49)
    gradcheck(lambda x, w, b: pyconv.linear(x, w, b), [x, w, b],
              lambda R, x, w, b: pyconv.linear_backward(R, x, w))


def test_linear_empty_batch():
    x, w, b = np.zeros((0, 4)), rnd((3, 4), 50), rnd((3,), 51)
    y = pyconv.linear(x, w, b)
    assert y.shape == (0, 3)
    dx, dw, db = pyconv.linear_backward(np.zeros((0, 3)), x, w)
    assert dx.shape == (0, 4)
    np.testing.assert_array_equal(dw, np.zeros((3, 4)))
    np.testing.assert_array_equal(db, np.zeros(3))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_linear_thread_count_independence(dtype, restore_threads):
    x, w, b = rnd((256, 300), 52, dtype), rnd((200, 300), 53, dtype), rnd((200,), 54, dtype)
    y1, y2 = run_1_and_2_threads(lambda: pyconv.linear(x, w, b))
    assert_same_bits(y1, y2, "y")
    dy = rnd(y1.shape, 55, dtype)
    g1, g2 = run_1_and_2_threads(lambda: pyconv.linear_backward(dy, x, w))
    assert_same_bits(g1, g2, "grads")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_linear_non_contiguous(dtype):
    xb, wb = rnd((12, 10), 56, dtype), rnd((9, 14), 57, dtype)
    x = xb[::2, 1:8]                          # (6, 7) strided
    w = wb[:4, ::2]                           # (4, 7) strided
    b = rnd((8,), 58, dtype)[::2]             # (4,) strided
    dy = rnd((4, 6), 59, dtype).T             # (6, 4) transposed
    assert_close(pyconv.linear(x, w, b), linear_ref(x, w, b), dtype, "y")
    for got, ref, nm in zip(pyconv.linear_backward(dy, x, w), linear_backward_ref(dy, x, w),
                            ("dx", "dw", "db")):
        assert_close(got, ref, dtype, nm)
    xt = rnd((7, 6), 60, dtype).T             # transposed input
    wf = np.asfortranarray(w)
    np.testing.assert_array_equal(pyconv.linear(xt, wf, b),
                                  pyconv.linear(np.ascontiguousarray(xt), np.ascontiguousarray(w),
                                                np.ascontiguousarray(b)))
    xn = xb[::-1, ::-1][:, :7]                # negative strides
    assert_close(pyconv.linear(xn, w), linear_ref(xn, w), dtype, "y (negative strides)")


def test_linear_dtypes():
    x32, w32, b32 = rnd((3, 4), 61, np.float32), rnd((2, 4), 62, np.float32), rnd((2,), 63, np.float32)
    w64 = w32.astype(np.float64)
    assert pyconv.linear(x32, w32, b32).dtype == np.float32
    y = pyconv.linear(x32, w64, b32)
    assert y.dtype == np.float64  # NumPy promotion
    assert_close(y, linear_ref(x32, w64, b32), np.float64, "mixed")
    assert pyconv.linear(x32, w32, b32.astype(np.float64)).dtype == np.float64
    dx, dw, db = pyconv.linear_backward(rnd((3, 2), 64, np.float64), x32, w32)
    assert dx.dtype == dw.dtype == db.dtype == np.float64
    x16, w16 = x32.astype(np.float16), w32.astype(np.float16)
    y16 = pyconv.linear(x16, w16)
    assert y16.dtype == np.float16
    assert_close(y16, linear_ref(x16, w16), np.float16, "f16")
    g16 = pyconv.linear_backward(rnd((3, 2), 65, np.float16), x16, w16)
    assert all(g.dtype == np.float16 for g in g16)
    xi, wi = np.arange(12).reshape(3, 4), np.arange(8, dtype=np.int8).reshape(2, 4)
    yi = pyconv.linear(xi, wi, np.array([1, 2]))
    assert yi.dtype == np.float64
    np.testing.assert_array_equal(yi, linear_ref(xi, wi, [1, 2]))
    yb = pyconv.linear(np.ones((2, 3), bool), np.ones((1, 3), bool))
    assert yb.dtype == np.float64
    np.testing.assert_array_equal(yb, [[3.0], [3.0]])
    yl = pyconv.linear([[1.0, 2.0]], [[3.0, 4.0]], [0.5])
    np.testing.assert_array_equal(yl, [[11.5]])


class TestLinearErrors:
    X = np.zeros((3, 4))
    W = np.zeros((2, 4))

    @pytest.mark.parametrize("w", [np.zeros(4), np.zeros((2, 4, 1)), np.zeros(())])
    def test_weight_rank(self, w):
        with pytest.raises(ValueError, match="weight"):
            pyconv.linear(self.X, w)
        with pytest.raises(ValueError, match="weight"):
            pyconv.linear_backward(np.zeros((3, 2)), self.X, w)

    @pytest.mark.parametrize("x", [np.zeros((3, 5)), np.zeros((4, 3)), np.zeros(()), np.zeros(3)])
    def test_in_features_mismatch(self, x):
        with pytest.raises(ValueError, match="input"):
            pyconv.linear(x, self.W)

    @pytest.mark.parametrize("b", [np.zeros(3), np.zeros((2, 1)), np.zeros(()), np.zeros((1, 2))])
    def test_bias_shape(self, b):
        with pytest.raises(ValueError, match="bias"):
            pyconv.linear(self.X, self.W, b)

    @pytest.mark.parametrize("name", ["input", "weight", "bias"])
    def test_dtype(self, name):
        args = {"input": self.X, "weight": self.W, "bias": np.zeros(2)}
        args[name] = args[name].astype(np.complex64)
        with pytest.raises(TypeError, match=name):
            pyconv.linear(args["input"], args["weight"], args["bias"])

    def test_backward_grad_output(self):
        for dy in (np.zeros((3, 3)), np.zeros((2, 2)), np.zeros(2)):
            with pytest.raises(ValueError, match="grad_output"):
                pyconv.linear_backward(dy, self.X, self.W)
        with pytest.raises(TypeError, match="grad_output"):
            pyconv.linear_backward(np.zeros((3, 2), np.complex128), self.X, self.W)

    @pytest.mark.parametrize("mask", [(True, True), (True,) * 4, ()])
    def test_backward_output_mask(self, mask):
        with pytest.raises(ValueError, match="output_mask"):
            pyconv.linear_backward(np.zeros((3, 2)), self.X, self.W, output_mask=mask)


# ==========================================================================
# batch norm
# ==========================================================================
BN_SHAPES = [(6, 3), (2, 4, 5), (2, 3, 4, 5), (1, 2, 3, 3), (5, 1, 1, 1), (3, 2, 1), (2, 3)]


def _bn_arrays(shape, seed, dtype):
    C = shape[1]
    x = rnd(shape, seed, dtype, loc=1.5, sd=2.0)
    w, b = rnd((C,), seed + 1, dtype), rnd((C,), seed + 2, dtype)
    rm = rnd((C,), seed + 3, dtype)
    rv = (np.random.default_rng(seed + 4).random(C) + 0.5).astype(dtype)
    return x, w, b, rm, rv


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_forward_backward(shape, training, dtype):
    x, w, b, rm, rv = _bn_arrays(shape, 70, dtype)
    rm_in, rv_in = rm.copy(), rv.copy()
    y_ref, m_ref, s_ref, nrm_ref, nrv_ref = batch_norm_ref(x, rm, rv, w, b, training, 0.1, 1e-5)
    y, sm, si = pyconv.batch_norm(x, rm, rv, w, b, training=training, return_stats=True)
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, y_ref, dtype, "y")
    assert_close(sm, m_ref, dtype, "save_mean")
    assert_close(si, s_ref, dtype, "save_invstd")
    assert rm.dtype == rv.dtype == dtype
    assert_close(rm, nrm_ref, dtype, "running_mean")
    assert_close(rv, nrv_ref, dtype, "running_var")
    if not training:
        np.testing.assert_array_equal(rm, rm_in)
        np.testing.assert_array_equal(rv, rv_in)
    dy = rnd(shape, 75, dtype)
    dx_ref, dw_ref, db_ref = batch_norm_backward_ref(dy, x, w, m_ref, s_ref, training)
    dx, dw, db = pyconv.batch_norm_backward(dy, x, w, sm, si, training=training)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, "dx")
    assert_close(dw, dw_ref, dtype, "dw")
    assert_close(db, db_ref, dtype, "db")


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0, 0.01])
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])
def test_batch_norm_momentum_eps(momentum, eps):
    x, w, b, rm, rv = _bn_arrays((4, 3, 2, 3), 80, np.float64)
    rm0, rv0 = rm.copy(), rv.copy()
    for step in range(3):  # repeated updates compound correctly
        xs = x + step
        y_ref, m_ref, s_ref, nrm, nrv = batch_norm_ref(xs, rm, rv, w, b, True, momentum, eps)
        y, sm, si = pyconv.batch_norm(xs, rm, rv, w, b, training=True, momentum=momentum,
                                      eps=eps, return_stats=True)
        assert_close(y, y_ref, np.float64, "y")
        assert_close(si, s_ref, np.float64, "save_invstd")
        assert_close(rm, nrm, np.float64, "running_mean")
        assert_close(rv, nrv, np.float64, "running_var")
    if momentum == 0.0:
        np.testing.assert_array_equal(rm, rm0)
        np.testing.assert_array_equal(rv, rv0)
    ye, sme, sie = pyconv.batch_norm(x, rm, rv, w, b, training=False, momentum=momentum,
                                     eps=eps, return_stats=True)
    ye_ref, me_ref, se_ref, _, _ = batch_norm_ref(x, rm, rv, w, b, False, momentum, eps)
    assert_close(ye, ye_ref, np.float64, "eval y")
    assert_close(sme, rm, np.float64, "eval save_mean")
    assert_close(sie, 1.0 / np.sqrt(rv + eps), np.float64, "eval save_invstd")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("use_w,use_b", [(False, False), (True, False), (False, True)])
def test_batch_norm_weight_bias_none(training, use_w, use_b):
    x, w, b, rm, rv = _bn_arrays((3, 4, 2), 90, np.float64)
    w_, b_ = (w if use_w else None), (b if use_b else None)
    y_ref, m_ref, s_ref, _, _ = batch_norm_ref(x, rm, rv, w_, b_, training)
    y, sm, si = pyconv.batch_norm(x, rm.copy(), rv.copy(), w_, b_, training=training,
                                  return_stats=True)
    assert_close(y, y_ref, np.float64, "y")
    dy = rnd(x.shape, 91)
    ref = batch_norm_backward_ref(dy, x, w_, m_ref, s_ref, training)
    got = pyconv.batch_norm_backward(dy, x, w_, sm, si, training=training)
    for g, r, nm in zip(got, ref, ("dx", "dw", "db")):
        assert g is not None, f"{nm} missing with weight={use_w}"
        assert_close(g, r, np.float64, nm)


def test_batch_norm_no_running_stats_in_training():
    x, w, b, _, _ = _bn_arrays((4, 3, 5), 92, np.float64)
    y_ref, m_ref, s_ref, _, _ = batch_norm_ref(x, None, None, w, b, True)
    assert_close(pyconv.batch_norm(x, None, None, w, b, training=True), y_ref, np.float64, "y")
    y, sm, si = pyconv.batch_norm(x, None, None, training=True, return_stats=True)
    assert_close(sm, m_ref, np.float64, "save_mean")
    assert_close(si, s_ref, np.float64, "save_invstd")
    # only one of the two running statistics
    rm = np.zeros(3)
    pyconv.batch_norm(x, rm, None, training=True, momentum=1.0)
    assert_close(rm, m_ref, np.float64, "running_mean alone")


def test_batch_norm_running_stats_in_place_views_and_dtypes():
    x, w, b, _, _ = _bn_arrays((4, 3, 2, 2), 93, np.float64)
    _, m_ref, _, _, _ = batch_norm_ref(x, None, None, training=True)
    big = np.zeros(6)
    rm = big[::2]                     # a strided, writable view
    rv = np.ones(3, np.float32)       # float32 statistics with float64 input
    ids = (id(rm), id(rv))
    out = pyconv.batch_norm(x, rm, rv, training=True, momentum=0.5)
    assert (id(rm), id(rv)) == ids and isinstance(out, np.ndarray)
    assert_close(big[::2], 0.5 * m_ref, np.float64, "running_mean through the view")
    np.testing.assert_array_equal(big[1::2], 0.0)
    _, _, _, _, nrv = batch_norm_ref(x, None, np.ones(3), training=True, momentum=0.5)
    assert rv.dtype == np.float32
    assert_close(rv, nrv, np.float32, "float32 running_var")


def test_batch_norm_does_not_modify_input_and_eval_leaves_stats():
    x, w, b, rm, rv = _bn_arrays((3, 2, 4), 94, np.float64)
    copies = [a.copy() for a in (x, w, b, rm, rv)]
    pyconv.batch_norm(x, rm, rv, w, b, training=False)
    y, sm, si = pyconv.batch_norm(x, rm, rv, w, b, training=False, return_stats=True)
    dy = rnd(x.shape, 95)
    dyc = dy.copy()
    pyconv.batch_norm_backward(dy, x, w, sm, si, training=False)
    for a, c in zip((x, w, b, rm, rv), copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(dy, dyc)
    assert not np.shares_memory(y, x)


def test_batch_norm_output_mask():
    x, w, b, rm, rv = _bn_arrays((3, 2, 4), 96, np.float64)
    _, sm, si = pyconv.batch_norm(x, rm, rv, w, b, training=True, return_stats=True)
    dy = rnd(x.shape, 97)
    for training in (True, False):
        full = pyconv.batch_norm_backward(dy, x, w, sm, si, training=training)
        for mask in [(True, False, False), (False, True, False), (False, False, True),
                     (False, True, True), (False, False, False)]:
            got = pyconv.batch_norm_backward(dy, x, w, sm, si, training=training,
                                             output_mask=mask)
            assert len(got) == 3
            for want, g, f in zip(mask, got, full):
                if want:
                    np.testing.assert_array_equal(g, f)
                else:
                    assert g is None


@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 3), (2, 2, 2, 3), (1, 2, 2, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_gradcheck_training(shape):
    x, w, b, _, _ = _bn_arrays(shape, 100, np.float64)

    def f(x, w, b):
        return pyconv.batch_norm(x, None, None, w, b, training=True, eps=1e-3)

    def grads(R, x, w, b):
        _, sm, si = pyconv.batch_norm(x, None, None, w, b, training=True, eps=1e-3,
                                      return_stats=True)
        return pyconv.batch_norm_backward(R, x, w, sm, si, training=True)

    gradcheck(f, [x, w, b], grads)


@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 2, 3)], ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_gradcheck_eval(shape):
    x, w, b, rm, rv = _bn_arrays(shape, 101, np.float64)

    def f(x, w, b):
        return pyconv.batch_norm(x, rm, rv, w, b, training=False, eps=1e-3)

    def grads(R, x, w, b):
        _, sm, si = pyconv.batch_norm(x, rm, rv, w, b, training=False, eps=1e-3,
                                      return_stats=True)
        return pyconv.batch_norm_backward(R, x, w, sm, si, training=False)

    gradcheck(f, [x, w, b], grads)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_thread_count_independence(training, dtype, restore_threads):
    x, w, b, rm, rv = _bn_arrays((16, 32, 24, 24), 102, dtype)

    def fwd():
        rm_, rv_ = rm.copy(), rv.copy()
        y, sm, si = pyconv.batch_norm(x, rm_, rv_, w, b, training=training, return_stats=True)
        return y, sm, si, rm_, rv_

    r1, r2 = run_1_and_2_threads(fwd)
    assert_same_bits(r1, r2, "forward")
    dy = rnd(x.shape, 103, dtype)
    g1, g2 = run_1_and_2_threads(
        lambda: pyconv.batch_norm_backward(dy, x, w, r1[1], r1[2], training=training))
    assert_same_bits(g1, g2, "backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_batch_norm_non_contiguous(dtype):
    nhwc = rnd((3, 5, 4, 6), 104, dtype, loc=1.0)
    x = nhwc.transpose(0, 3, 1, 2)           # channels-last view (3, 6, 5, 4)
    C = 6
    w = rnd((2 * C,), 105, dtype)[::2]
    b = rnd((C,), 106, dtype)[::-1]
    rm_big = rnd((2 * C,), 107, dtype)
    rm = rm_big[1::2]
    rv = (np.random.default_rng(108).random(C) + 0.5).astype(dtype)
    y_ref, m_ref, s_ref, nrm, nrv = batch_norm_ref(x, rm, rv, w, b, True)
    rm_c, rv_c = rm.copy(), rv.copy()
    y, sm, si = pyconv.batch_norm(x, rm, rv, w, b, training=True, return_stats=True)
    assert_close(y, y_ref, dtype, "y")
    assert_close(rm_big[1::2], nrm, dtype, "running_mean view")
    assert_close(rv, nrv, dtype, "running_var")
    # The same values laid out contiguously give the same bits.
    yc = pyconv.batch_norm(np.ascontiguousarray(x), rm_c, rv_c, np.ascontiguousarray(w),
                           np.ascontiguousarray(b), training=True)
    np.testing.assert_array_equal(y, yc)
    dy = rnd((3, 4, 5, 6), 109, dtype).transpose(0, 3, 2, 1)[:, :, ::-1, ::-1]  # (3, 6, 5, 4)
    for g, r, nm in zip(pyconv.batch_norm_backward(dy, x, w, sm, si, training=True),
                        batch_norm_backward_ref(dy, x, w, m_ref, s_ref, True), ("dx", "dw", "db")):
        assert_close(g, r, dtype, nm)
    for g, r, nm in zip(pyconv.batch_norm_backward(dy, x, w, np.repeat(sm, 2)[::2], si, training=False),
                        batch_norm_backward_ref(dy, x, w, m_ref, s_ref, False), ("dx", "dw", "db")):
        assert_close(g, r, dtype, nm)


def test_batch_norm_dtypes():
    x, w, b, rm, rv = _bn_arrays((4, 3, 2, 2), 110, np.float32)
    # float16 input (with float32 parameters and statistics, as in mixed precision) -> float16
    x16 = x.astype(np.float16)
    y16, sm, si = pyconv.batch_norm(x16, rm.copy(), rv.copy(), w, b, training=True,
                                    return_stats=True)
    assert y16.dtype == np.float16
    y_ref, m_ref, s_ref, _, _ = batch_norm_ref(x16, rm, rv, w, b, True)
    assert_close(y16, y_ref, np.float16, "f16 y")
    dx16 = pyconv.batch_norm_backward(rnd(x.shape, 111, np.float16), x16, w, sm, si)[0]
    assert dx16.dtype == np.float16
    # integer and bool input -> float64
    xi = (np.arange(48).reshape(4, 3, 2, 2) % 5).astype(np.int32)
    rm64, rv64 = np.zeros(3), np.ones(3)
    yi = pyconv.batch_norm(xi, rm64, rv64, training=True)
    assert yi.dtype == np.float64
    yi_ref, _, _, nrm, nrv = batch_norm_ref(xi, np.zeros(3), np.ones(3), training=True)
    assert_close(yi, yi_ref, np.float64, "int y")
    assert_close(rm64, nrm, np.float64, "int running_mean")
    assert_close(rv64, nrv, np.float64, "int running_var")
    yb = pyconv.batch_norm(np.eye(4, dtype=bool), np.zeros(4), np.ones(4), training=False)
    assert yb.dtype == np.float64
    assert_close(yb, batch_norm_ref(np.eye(4), np.zeros(4), np.ones(4))[0], np.float64, "bool")
    # float32 / float64 native
    assert pyconv.batch_norm(x, rm.copy(), rv.copy(), w, b).dtype == np.float32
    assert pyconv.batch_norm(x.astype(np.float64), rm.astype(np.float64),
                             rv.astype(np.float64)).dtype == np.float64
    # backward: grad_output and input follow NumPy promotion
    _, sm, si = pyconv.batch_norm(x, None, None, w, b, training=True, return_stats=True)
    g = pyconv.batch_norm_backward(rnd(x.shape, 112, np.float64), x, w, sm, si)
    assert all(a.dtype == np.float64 for a in g)
    # eval with array-like (list) running statistics
    yl = pyconv.batch_norm([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0], [4.0, 1.0], eps=1e-12)
    np.testing.assert_allclose(yl, [[0.0, 0.0], [1.0, 2.0]], atol=1e-9)


class TestBatchNormErrors:
    X = np.zeros((4, 3, 2))
    RM = np.zeros(3)
    RV = np.ones(3)

    def bn(self, **kw):
        args = dict(input=self.X, running_mean=self.RM.copy(), running_var=self.RV.copy())
        args.update(kw)
        return pyconv.batch_norm(**args)

    @pytest.mark.parametrize("x", [np.zeros(3), np.zeros(())])
    def test_input_rank(self, x):
        with pytest.raises(ValueError, match="input"):
            self.bn(input=x)

    @pytest.mark.parametrize("name", ["running_mean", "running_var", "weight", "bias"])
    @pytest.mark.parametrize("shape", [(4,), (2,), (3, 1), ()])
    def test_channel_vector_shape(self, name, shape):
        for training in (False, True):
            with pytest.raises(ValueError, match=name):
                self.bn(**{name: np.ones(shape)}, training=training)

    @pytest.mark.parametrize("name", ["running_mean", "running_var"])
    def test_eval_needs_running_stats(self, name):
        with pytest.raises(ValueError, match=name):
            self.bn(**{name: None}, training=False)

    @pytest.mark.parametrize("name", ["running_mean", "running_var"])
    def test_training_needs_writable_float_arrays(self, name):
        ro = np.ones(3)
        ro.setflags(write=False)
        for bad in (ro, np.ones(3, np.int64), [0.0, 0.0, 0.0]):
            with pytest.raises((TypeError, ValueError), match=name):
                self.bn(**{name: bad}, training=True)

    @pytest.mark.parametrize("eps", [0.0, -1e-5])
    def test_eps_positive(self, eps):
        with pytest.raises(ValueError, match="eps"):
            self.bn(eps=eps)

    @pytest.mark.parametrize("name", ["eps", "momentum"])
    @pytest.mark.parametrize("value", ["0.1", [0.1], 1j])
    def test_scalar_types(self, name, value):
        with pytest.raises(TypeError, match=name):
            self.bn(**{name: value}, training=True)

    @pytest.mark.parametrize("x", [np.zeros((1, 3)), np.zeros((1, 3, 1)), np.zeros((1, 3, 1, 1))])
    def test_training_needs_more_than_one_value_per_channel(self, x):
        with pytest.raises(ValueError, match="input"):
            self.bn(input=x, training=True)
        # eval is fine
        assert self.bn(input=x, training=False).shape == x.shape

    def test_input_dtype(self):
        with pytest.raises(TypeError, match="input"):
            self.bn(input=np.zeros((4, 3), np.complex64))

    def test_backward_errors(self):
        x, dy, m, s, w = self.X, np.zeros((4, 3, 2)), np.zeros(3), np.ones(3), np.ones(3)
        bw = pyconv.batch_norm_backward
        with pytest.raises(ValueError, match="grad_output"):
            bw(np.zeros((4, 3, 3)), x, w, m, s)
        with pytest.raises(ValueError, match="input"):
            bw(np.zeros(3), np.zeros(3), w, m, s)
        for nm, args in (("save_mean", (dy, x, w, np.zeros(2), s)),
                         ("save_invstd", (dy, x, w, m, np.ones((3, 1)))),
                         ("weight", (dy, x, np.ones(4), m, s))):
            with pytest.raises(ValueError, match=nm):
                bw(*args)
        with pytest.raises(ValueError, match="save_mean"):
            bw(dy, x, w, None, s)
        with pytest.raises(ValueError, match="save_invstd"):
            bw(dy, x, w, m, None)
        for mask in [(True, True), (True,) * 4]:
            with pytest.raises(ValueError, match="output_mask"):
                bw(dy, x, w, m, s, output_mask=mask)
        with pytest.raises(TypeError, match="grad_output"):
            bw(dy.astype(np.complex128), x, w, m, s)


@pytest.mark.parametrize("N", [3, 19])
@pytest.mark.parametrize("S", [1, 7, 8, 29, 31, 32, 33, 64, 100, 255, 256, 257, 300, 1000])
def test_batch_norm_simd_reductions_match_portable_bits(S, N):
    """float32 batch-norm statistics and backward run their reductions on AVX2
    in the portable loops' order (blocks of 256 values, 32 float lanes, the
    tail into the first ones, the same fold and merge): the results are the
    same bits on every ISA, on both sides of the 32-value row / column
    switch and of the 256-value blocks."""
    rng = np.random.default_rng(S)
    C = 5
    x = (rng.standard_normal((N, C, S)) * 3 + 1).astype(np.float32)
    g = rng.standard_normal((N, C, S)).astype(np.float32)
    if N > 3:  # one column / block whose float sums overflow: redone in double on every ISA
        x[:, 1, 0] *= np.float32(1e19)
        g[:, 1, 0] *= np.float32(1e20)  # (and g * (x - mean) in the backward)
    w = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    out = {}
    old = pyconv.get_isa()
    try:
        for isa in pyconv.supported_isas():
            pyconv.set_isa(isa)
            rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
            y, mean, invstd = pyconv.batch_norm(x, rm, rv, w, b, training=True, return_stats=True)
            grads = pyconv.batch_norm_backward(g, x, w, mean, invstd, training=True)
            out[isa] = (y, mean, invstd, rm, rv) + tuple(grads)
    finally:
        pyconv.set_isa(old)
    ref = out.pop("ref")
    for isa, got in out.items():
        for a, c in zip(got, ref):
            np.testing.assert_array_equal(a, c, err_msg=isa)


# Shapes on both walks (rows of >= 32 values; shorter rows by columns), odd
# sizes around the 32-lane groups, the 256-value blocks and the 8-row blocks.
BN_WIDE_SHAPES = [(3, 5, 300), (9, 4, 33), (2, 3, 16, 16), (5, 6, 1000), (300, 37), (17, 9, 5),
                  (64, 3, 2, 2), (1, 2, 257), (20, 3000), (10, 700, 5)]  # (the last two: > 2048 columns)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BN_WIDE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_larger_shapes_every_isa(shape, training, isa):
    for dtype in DTYPES:
        x, w, b, rm, rv = _bn_arrays(shape, 110, dtype)
        y_ref, m_ref, s_ref, nrm_ref, nrv_ref = batch_norm_ref(x, rm, rv, w, b, training, 0.1, 1e-5)
        y, sm, si = pyconv.batch_norm(x, rm, rv, w, b, training=training, return_stats=True)
        for got, ref, what in ((y, y_ref, "y"), (sm, m_ref, "mean"), (si, s_ref, "invstd"),
                               (rm, nrm_ref, "running_mean"), (rv, nrv_ref, "running_var")):
            assert_close(got, ref, dtype, what)
        dy = rnd(shape, 111, dtype)
        refs = batch_norm_backward_ref(dy, x, w, m_ref, s_ref, training)
        for mask in ((True, True, True), (True, False, False), (False, True, True)):
            got = pyconv.batch_norm_backward(dy, x, w, sm, si, training=training, output_mask=mask)
            for g, r, m, what in zip(got, refs, mask, ("dx", "dw", "db")):
                if m:
                    assert_close(g, r, dtype, what)
                else:
                    assert g is None


@pytest.mark.parametrize("shape", [(8, 3, 40), (16, 2, 5), (256, 3)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["offset", "drift", "outlier"])
def test_batch_norm_float32_statistics_are_robust(shape, kind, isa):
    """The float32 statistics sum in float only about each block's own mean:
    a mean 10^4 deviations away (offset), images whose means differ by
    hundreds of deviations (drift), and a first value far out (outlier, the
    start of the channel) keep float32 accuracy."""
    rng = np.random.default_rng(7)
    x64 = rng.standard_normal(shape)
    if kind == "offset":
        x64 += 1.0e4
    elif kind == "drift":
        x64 += 300.0 * np.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    else:
        x64.reshape(shape[0], shape[1], -1)[0, :, 0] = 1.0e4
    x = x64.astype(np.float32)
    C = shape[1]
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, sm, si = pyconv.batch_norm(x, rm, rv, training=True, return_stats=True)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    xd = x.astype(np.float64)
    mean, var = xd.mean(axis=axes), xd.var(axis=axes)
    np.testing.assert_allclose(sm, mean, rtol=1e-6, atol=0)
    np.testing.assert_allclose(1.0 / si.astype(np.float64) ** 2 - 1e-5, var, rtol=2e-5)
    shp = [1] * x.ndim
    shp[1] = C
    scale = 1 / np.sqrt(var.reshape(shp) + 1e-5)
    y_ref = (xd - mean.reshape(shp)) * scale
    # y = x * scale + shift, as PyTorch: a few float32 ulp of x * scale
    tol = 1e-4 * np.abs(y_ref).max() + 8 * 2.0 ** -24 * np.abs(xd * scale).max()
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=tol)


@pytest.mark.parametrize("shape", [(16, 64, 24, 24), (4096, 300), (2000, 130, 2, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_walks_thread_count_independence(shape, restore_threads):
    """Both walks on 2 threads (each case is over 2 MB, so it is split)."""
    x, w, b, rm, rv = _bn_arrays(shape, 112, np.float32)
    dy = rnd(shape, 113, np.float32)

    def both():
        y, sm, si = pyconv.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True, return_stats=True)
        return (y, sm, si) + tuple(pyconv.batch_norm_backward(dy, x, w, sm, si))

    r1, r2 = run_1_and_2_threads(both)
    assert_same_bits(r1, r2, "batch norm")


@pytest.mark.parametrize("shape", [(4, 3, 40), (4, 3), (4, 3, 2)], ids=["rows", "columns", "columns-S2"])
def test_batch_norm_non_finite_input(shape):
    x = np.ones(shape, np.float32)
    x = x.reshape(shape[0], shape[1], -1)
    x[1, 0, -1] = np.inf
    x[2, 1, 0] = np.nan
    x = x.reshape(shape)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, sm, si = pyconv.batch_norm(x, rm, rv, training=True, return_stats=True)
    y = y.reshape(shape[0], 3, -1)
    # PyTorch's mean is inf for channel 0, ours NaN; both give NaN outputs
    assert not np.isfinite(sm[0]) and np.isnan(si[0]) and np.isnan(y[:, 0]).all()
    assert np.isnan(sm[1]) and np.isnan(si[1]) and np.isnan(y[:, 1]).all()
    assert sm[2] == 1.0 and np.isfinite(y[:, 2]).all()


@pytest.mark.parametrize("shape", [(6, 2, 300), (40, 3), (16, 2, 3), (40, 9), (20, 3, 5)],
                         ids=["rows", "columns", "columns-S3", "columns-strip", "columns-S5"])
def test_batch_norm_float32_huge_values_fall_back_to_double(shape, isa):
    """Deviations near 1e19 overflow a float sum of squares; such blocks are
    taken again in double, so the variance (about 1e38, within float32)
    stays finite and right."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 1e19).astype(np.float32)
    y, sm, si = pyconv.batch_norm(x, None, None, training=True, return_stats=True)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    var = x.astype(np.float64).var(axis=axes)
    assert np.isfinite(si).all() and (si > 0).all()
    np.testing.assert_allclose(1.0 / si.astype(np.float64) ** 2, var, rtol=1e-5)
    np.testing.assert_allclose(sm, x.astype(np.float64).mean(axis=axes), rtol=1e-4, atol=1e14)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("shape", [(6, 2, 300), (40, 9), (20, 3, 5)], ids=["rows", "columns", "columns-S5"])
def test_batch_norm_backward_huge_products_fall_back_to_double(shape, isa):
    """g * (x - mean) near 1e39 overflows a float sum; such blocks are taken
    again in double, so grad_weight (about 1e20 here) stays finite and
    right, on every ISA."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(shape) * 1e19).astype(np.float32)
    g = (rng.standard_normal(shape) * 1e20).astype(np.float32)
    _, sm, si = pyconv.batch_norm(x, None, None, training=True, return_stats=True)
    dx, dw, db = pyconv.batch_norm_backward(g, x, None, sm, si, training=False)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shp = [1] * x.ndim
    shp[1] = shape[1]
    gd, xd = g.astype(np.float64), x.astype(np.float64)
    dw_ref = (gd * (xd - sm.astype(np.float64).reshape(shp))).sum(axis=axes) * si.astype(np.float64)
    assert np.isfinite(dw).all() and np.isfinite(db).all()
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4)
    np.testing.assert_allclose(db, gd.sum(axis=axes), rtol=1e-4, atol=1e-4 * np.abs(gd).sum(axis=axes).max())
