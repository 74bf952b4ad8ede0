"""Bad arguments raise ValueError / TypeError whose message names the argument and value.

Also: empty batches (N = 0) are valid and give empty results of the right shape.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import pyconv

X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 2, 3, 3))  # groups=2
B = np.zeros(6)
DY = np.zeros((2, 6, 4, 4))  # conv2d(X, W, groups=2) output shape


def re_shape(shape):
    return re.escape(str(tuple(shape)))


def re_value(v):
    return re.escape(repr(v))


def conv(x=X, w=W, b=None, **kw):
    kw.setdefault("groups", 2)
    return pyconv.conv2d(x, w, b, **kw)


def backward(dy=DY, x=X, w=W, **kw):
    kw.setdefault("groups", 2)
    return pyconv.conv2d_backward(dy, x, w, **kw)


# ---- shapes ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6), (6,), (), (1, 2, 4, 6, 6)])
def test_input_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"input must be 4-d .*got shape " + re_shape(shape)):
        conv(x=np.zeros(shape))


@pytest.mark.parametrize("shape", [(6, 2, 3), (6, 2, 3, 3, 1), (6,)])
def test_weight_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"weight must be 4-d .*got shape " + re_shape(shape)):
        conv(w=np.zeros(shape))


def test_weight_wrong_rank_in_backward():
    with pytest.raises(ValueError, match=r"weight must be 4-d"):
        backward(w=np.zeros((6, 2, 3)))
    with pytest.raises(ValueError, match=r"input must be 4-d"):
        backward(x=np.zeros((2, 4, 6, 6, 1)))


def test_channel_mismatch():
    with pytest.raises(ValueError, match=r"input has 4 channels but weight expects in_channels"
                                         r" = .* = 3 \* 1 = 3"):
        conv(w=np.zeros((6, 3, 3, 3)), groups=1)
    with pytest.raises(ValueError, match=r"4 channels .* 8"):
        conv(w=np.zeros((6, 4, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"4 channels"):
        backward(w=np.zeros((6, 3, 3, 3)), groups=1)


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match=r"groups=3 must divide in_channels=4"):
        conv(w=np.zeros((6, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match=r"groups=2 must divide out_channels=5"):
        conv(w=np.zeros((5, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"groups=3 must divide in_channels=4"):
        backward(dy=np.zeros((2, 6, 4, 4)), w=np.zeros((6, 1, 3, 3)), groups=3)


@pytest.mark.parametrize("groups", [0, -1, -4])
def test_groups_not_positive(groups):
    with pytest.raises(ValueError, match=rf"groups must be >= 1, got {groups}"):
        conv(groups=groups)


@pytest.mark.parametrize("groups", [2.0, "2", True, None, (2,)])
def test_groups_wrong_type(groups):
    with pytest.raises(TypeError, match=r"groups must be an int, got"):
        conv(groups=groups)


# ---- stride / dilation / padding values -------------------------------------
@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (-2, 1)])
def test_non_positive_stride_dilation(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be positive, got {re_value(value)}"):
        conv(**{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be positive"):
        backward(**{name: value})


@pytest.mark.parametrize("value", [-1, (0, -2), (-1, 0)])
def test_negative_padding(value):
    with pytest.raises(ValueError, match=rf"padding must be non-negative, got {re_value(value)}"):
        conv(padding=value)
    with pytest.raises(ValueError, match=r"padding must be non-negative"):
        backward(padding=value)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("value,shown", [(1.5, "float 1.5"), (1.0, "float 1.0"),
                                         (True, "bool True"), (False, "bool False"),
                                         ("2", "str '2'"), (None, "NoneType None"),
                                         ((1, 2.0), "float 2.0"), ((1, True), "bool True"),
                                         (np.float64(2.0), "2.0")])
def test_non_int_stride_padding_dilation(name, value, shown):
    if name == "padding" and isinstance(value, str):
        # a string padding is a padding mode: see test_bad_padding_string
        with pytest.raises(ValueError, match=r"padding must be .* got '2'"):
            conv(padding=value)
        return
    with pytest.raises(TypeError, match=rf"{name} must be an int, got .*{re.escape(shown)}"):
        conv(**{name: value})


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("value", [(1, 1, 1), (), [1, 2, 3], (1, 1, 1, 1)])
def test_wrong_length_tuple(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be an int or a pair"):
        conv(**{name: value})


@pytest.mark.parametrize("value", ["full", "SAME", "Valid", "", "causal", "1"])
def test_bad_padding_string(value):
    with pytest.raises(ValueError, match=rf"padding must be .*'valid' or 'same', got {value!r}"):
        conv(padding=value)
    with pytest.raises(ValueError, match=r"'valid' or 'same'"):
        backward(padding=value)


@pytest.mark.parametrize("stride", [2, (1, 2), (2, 1), 3])
def test_same_padding_needs_stride_1(stride):
    with pytest.raises(ValueError, match=rf"padding='same' requires stride=1, got stride="
                                         rf"{re_value(stride)}"):
        conv(padding="same", stride=stride)
    with pytest.raises(ValueError, match=r"padding='same' requires stride=1"):
        pyconv.conv2d_input(X.shape, W, DY, padding="same", stride=stride, groups=2)


@pytest.mark.parametrize("kw,spans,padded", [
    (dict(w=np.zeros((6, 2, 7, 3))), "(7, 3)", "(6, 6)"),
    (dict(dilation=3), "(7, 7)", "(6, 6)"),
    (dict(w=np.zeros((6, 2, 1, 10)), padding=(0, 1)), "(1, 10)", "(6, 8)"),
    (dict(x=np.zeros((2, 4, 1, 9)), padding="valid"), "(3, 3)", "(1, 9)"),
])
def test_kernel_larger_than_padded_input(kw, spans, padded):
    with pytest.raises(ValueError, match=rf"spans {re.escape(spans)}, larger than the padded "
                                         rf"input {re.escape(padded)}"):
        conv(**kw)


def test_kernel_fits_exactly_once_padded():
    # the boundary case is valid: one output pixel per axis
    y = conv(x=np.zeros((2, 4, 1, 1)), padding=1)
    assert y.shape == (2, 6, 1, 1)


# ---- bias / grad_output shapes ------------------------------------------------
@pytest.mark.parametrize("shape", [(5,), (7,), (6, 1), (1, 6), ()])
def test_bias_wrong_shape(shape):
    with pytest.raises(ValueError, match=rf"bias must have shape \(6,\) .*got {re_shape(shape)}"):
        conv(b=np.zeros(shape))


@pytest.mark.parametrize("shape", [(2, 6, 4, 3), (2, 6, 4), (1, 6, 4, 4), (2, 5, 4, 4),
                                   (2, 6, 4, 4, 1)])
def test_grad_output_wrong_shape(shape):
    pat = r"grad_output must have shape \(2, 6, 4, 4\) .*got " + re_shape(shape)
    with pytest.raises(ValueError, match=pat):
        backward(dy=np.zeros(shape))
    with pytest.raises(ValueError, match=pat):
        pyconv.conv2d_input(X.shape, W, np.zeros(shape), groups=2)
    with pytest.raises(ValueError, match=pat):
        pyconv.conv2d_weight(X, W.shape, np.zeros(shape), groups=2)


def test_output_mask_length():
    with pytest.raises(ValueError, match=r"output_mask must have three bools, got \(True,\)"):
        backward(output_mask=(True,))


def test_size_arguments():
    with pytest.raises(TypeError, match=r"input_size must be an int, got float 6.0"):
        pyconv.conv2d_input((2, 4, 6.0, 6), W, DY, groups=2)
    with pytest.raises(ValueError, match=r"input_size must be 4-d"):
        pyconv.conv2d_input((4, 6, 6, 1, 1), W, DY, groups=2)
    with pytest.raises(TypeError, match=r"weight_size must be an int"):
        pyconv.conv2d_weight(X, (6, 2, "3", 3), DY, groups=2)
    with pytest.raises(ValueError, match=r"weight_size expects in_channels"):
        pyconv.conv2d_weight(X, (6, 4, 3, 3), DY, groups=2)


# ---- dtypes -------------------------------------------------------------------------
BAD_DTYPES = [np.complex128, np.complex64, object, "U3", "S3", "M8[s]", "m8[s]"]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
@pytest.mark.parametrize("which", ["input", "weight", "bias", "grad_output"])
def test_unsupported_dtypes(dtype, which):
    arrays = dict(input=X, weight=W, bias=B, grad_output=DY)
    arrays[which] = arrays[which].astype(dtype)
    pat = rf"{which} has unsupported dtype"
    with pytest.raises(TypeError, match=pat):
        if which == "grad_output":
            pyconv.conv2d_backward(arrays["grad_output"], arrays["input"], arrays["weight"],
                                   groups=2)
        else:
            pyconv.conv2d(arrays["input"], arrays["weight"], arrays["bias"], groups=2)


def test_unsupported_dtype_message_names_dtype():
    with pytest.raises(TypeError, match=r"input has unsupported dtype complex128"):
        conv(x=X.astype(complex))
    with pytest.raises(TypeError, match=r"weight has unsupported dtype object"):
        conv(w=W.astype(object))
    with pytest.raises(TypeError, match=r"bias has unsupported dtype <U3"):
        conv(b="abc")
    with pytest.raises(TypeError, match=r"input has unsupported dtype object"):
        conv(x=None)
    with pytest.raises(TypeError, match=r"grad_output has unsupported dtype complex64"):
        pyconv.conv2d_input(X.shape, W, DY.astype(np.complex64), groups=2)
    with pytest.raises(TypeError, match=r"input has unsupported dtype complex64"):
        pyconv.conv2d_weight(X.astype(np.complex64), W.shape, DY, groups=2)


def test_ragged_list():
    with pytest.raises(TypeError, match=r"input could not be converted to an array"):
        pyconv.conv2d([[[[1.0, 2.0], [3.0]]]], W)


# ---- zero-size dimensions -----------------------------------------------------------
@pytest.mark.parametrize("x_shape,w_shape,pat", [
    ((2, 4, 0, 6), (6, 2, 3, 3), r"input(_size)? has an empty channel or spatial dimension: "
                                 r"shape \(2, 4, 0, 6\)"),
    ((2, 4, 6, 0), (6, 2, 3, 3), r"input(_size)? has an empty .*\(2, 4, 6, 0\)"),
    ((2, 4, 6, 6), (0, 2, 3, 3), r"weight has out_channels 0 in shape \(0, 2, 3, 3\)"),
    ((2, 4, 6, 6), (6, 2, 0, 3), r"weight has kernel height 0"),
    ((2, 4, 6, 6), (6, 2, 3, 0), r"weight has kernel width 0"),
    ((2, 0, 6, 6), (6, 0, 3, 3), r"in_channels/groups = 0"),
])
def test_zero_size_dims(x_shape, w_shape, pat):
    with pytest.raises(ValueError, match=pat):
        conv(x=np.zeros(x_shape), w=np.zeros(w_shape))
    with pytest.raises(ValueError, match=pat):
        pyconv.conv2d_input(x_shape, np.zeros(w_shape), DY, groups=2)


def test_zero_size_dims_with_padding():
    # padding would make room for the kernel, but an empty image is still an error
    with pytest.raises(ValueError, match=r"input has an empty"):
        conv(x=np.zeros((2, 4, 0, 6)), padding=2)


# ---- N = 0 is valid --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_empty_batch(dtype):
    x = np.zeros((0, 4, 7, 6), dtype)
    w = np.ones((6, 2, 3, 3), dtype)
    b = np.ones(6, dtype)
    expect = np.float64 if np.dtype(dtype).kind == "i" else dtype
    y = pyconv.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    assert y.shape == (0, 6, 4, 6) and y.dtype == expect
    dy = np.zeros((0, 6, 4, 6), dtype)
    dx, dw, db = pyconv.conv2d_backward(dy, x, w, stride=(2, 1), padding=1, groups=2)
    assert dx.shape == (0, 4, 7, 6) and dx.dtype == expect
    assert dw.shape == (6, 2, 3, 3) and dw.dtype == expect
    assert db.shape == (6,) and db.dtype == expect
    np.testing.assert_array_equal(dw, 0)  # an empty sum, not garbage
    np.testing.assert_array_equal(db, 0)
    dx2 = pyconv.conv2d_input((0, 4, 7, 6), w, dy, stride=(2, 1), padding=1, groups=2)
    assert dx2.shape == (0, 4, 7, 6)
    dw2 = pyconv.conv2d_weight(x, (6, 2, 3, 3), dy, stride=(2, 1), padding=1, groups=2)
    assert dw2.shape == (6, 2, 3, 3)
    np.testing.assert_array_equal(dw2, 0)


def test_empty_batch_still_validates():
    with pytest.raises(ValueError, match=r"groups=3 must divide in_channels=4"):
        pyconv.conv2d(np.zeros((0, 4, 6, 6)), np.zeros((6, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match=r"larger than the padded input"):
        pyconv.conv2d(np.zeros((0, 4, 2, 2)), W, groups=2)
