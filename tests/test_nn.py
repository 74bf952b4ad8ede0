"""Tests for pyconv.nn: modules, containers, losses, initialisation.

* every layer's forward / backward equals the pyconv.functional call it wraps,
  gradients accumulate, zero_grad resets, backward before forward raises;
* central-difference gradient checks in float64 of whole models (input and
  every parameter gradient);
* PyTorch as an oracle (same architecture, same names, torch's state dict
  loaded into pyconv): outputs, parameter gradients, BatchNorm running
  statistics, state-dict keys and shapes, Conv2d options, repr;
* initialisation statistics, containers, freezing, dtype policy, summary and
  error messages.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest

try:  # torch (optional oracle) is loaded before pyconv: the libgomp load-order pitfall
    import torch as _torch_preload  # noqa: F401
except ImportError:  # pragma: no cover - the torch tests importorskip it themselves
    _torch_preload = None

import pyconv  # noqa: E402
import pyconv.functional as F  # noqa: E402
from pyconv import nn  # noqa: E402
from pyconv.nn import init  # noqa: E402
from pyconv.nn.parameter import Parameter  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using padding='same' with even kernel lengths:UserWarning")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def rnd(shape, seed=0, dtype=np.float64, sd=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * sd).astype(dtype)


def assert_close(got, ref, rtol, atol, what=""):
    assert got is not None, f"{what}: got None"
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=what)


def numerical_grad(f, arr, eps=1e-6):
    """Central differences of the scalar f() w.r.t. ``arr`` (perturbed in place, restored)."""
    g = np.empty(arr.shape, np.float64)
    flat = arr.reshape(-1)
    assert np.shares_memory(flat, arr)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = float(f())
        flat[i] = orig - eps
        fm = float(f())
        flat[i] = orig
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def check_model_grads(model, x, loss_fn, rtol=1e-5, atol=1e-7):
    """Compare model.backward's input gradient and every Parameter.grad with central
    differences of loss_fn(model(x)); loss_fn is a pyconv loss-like callable whose
    ``backward()`` gives d loss / d output."""
    model.zero_grad()
    out = model(x)
    loss_fn(out)
    dx = model.backward(loss_fn.backward())
    analytic = {n: p.grad.copy() for n, p in model.named_parameters()}
    assert set(analytic) == {n for n, _ in model.named_parameters()}

    def f():
        return loss_fn(model(x))

    assert_close(dx, numerical_grad(f, x), rtol, atol, "input grad")
    for name, p in model.named_parameters():
        assert p.data.dtype == np.float64
        assert_close(analytic[name], numerical_grad(f, p.data), rtol, atol, name)


class Projected:
    """A scalar loss sum(y * R) with .backward() -> R (for layers without a loss)."""

    def __init__(self, shape, seed=99):
        self.R = rnd(shape, seed)

    def __call__(self, y):
        return float(np.sum(np.asarray(y, np.float64) * self.R))

    def backward(self):
        return self.R


class WithLoss:
    def __init__(self, loss, target):
        self.loss, self.target = loss, target

    def __call__(self, y):
        return self.loss(y, self.target)

    def backward(self):
        return self.loss.backward()


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.ELU(), nn.AvgPool2d(2), nn.GELU(),
        nn.Flatten(), nn.Linear(16, 5), nn.Tanh(), nn.Linear(5, 3))


# --------------------------------------------------------------------------
# layers against pyconv.functional
# --------------------------------------------------------------------------
X4 = (2, 4, 6, 6)

# name -> (factory, input shape, forward(x, layer), backward(dy, x, y, layer) -> dx)
ACTIVATIONS = {
    "ReLU": (lambda: nn.ReLU(), X4, lambda x, m: F.relu(x),
             lambda dy, x, y, m: F.relu_backward(dy, x)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), X4, lambda x, m: F.leaky_relu(x, 0.2),
                  lambda dy, x, y, m: F.leaky_relu_backward(dy, x, 0.2)),
    "ELU": (lambda: nn.ELU(0.7), X4, lambda x, m: F.elu(x, 0.7),
            lambda dy, x, y, m: F.elu_backward(dy, x, 0.7)),
    "Sigmoid": (lambda: nn.Sigmoid(), X4, lambda x, m: F.sigmoid(x),
                lambda dy, x, y, m: F.sigmoid_backward(dy, y)),
    "Tanh": (lambda: nn.Tanh(), X4, lambda x, m: F.tanh(x),
             lambda dy, x, y, m: F.tanh_backward(dy, y)),
    "GELU": (lambda: nn.GELU(), X4, lambda x, m: F.gelu(x),
             lambda dy, x, y, m: F.gelu_backward(dy, x)),
    "GELU-tanh": (lambda: nn.GELU("tanh"), X4, lambda x, m: F.gelu(x, "tanh"),
                  lambda dy, x, y, m: F.gelu_backward(dy, x, "tanh")),
    "Maxout": (lambda: nn.Maxout(2), X4, lambda x, m: F.maxout(x, 2, 1),
               lambda dy, x, y, m: F.maxout_backward(dy, x, 2, 1)),
    "Maxout-last": (lambda: nn.Maxout(3, dim=-1), X4, lambda x, m: F.maxout(x, 3, -1),
                    lambda dy, x, y, m: F.maxout_backward(dy, x, 3, -1)),
    "Softmax": (lambda: nn.Softmax(), (3, 5), lambda x, m: F.softmax(x, 1),
                lambda dy, x, y, m: F.softmax_backward(dy, y, 1)),
    "Softmax-dim": (lambda: nn.Softmax(dim=-1), X4, lambda x, m: F.softmax(x, -1),
                    lambda dy, x, y, m: F.softmax_backward(dy, y, -1)),
    "LogSoftmax": (lambda: nn.LogSoftmax(), (3, 5), lambda x, m: F.log_softmax(x, 1),
                   lambda dy, x, y, m: F.log_softmax_backward(dy, y, 1)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), X4, lambda x, m: F.max_pool2d(x, 2),
                  lambda dy, x, y, m: F.max_pool2d_backward(
                      dy, F.max_pool2d(x, 2, return_indices=True)[1], x.shape)),
    "MaxPool2d-opts": (lambda: nn.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True), X4,
                       lambda x, m: F.max_pool2d(x, 3, 2, 1, 1, True),
                       lambda dy, x, y, m: F.max_pool2d_backward(
                           dy, F.max_pool2d(x, 3, 2, 1, 1, True, return_indices=True)[1], x.shape)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), X4,
                  lambda x, m: F.avg_pool2d(x, 3, 2, 1, False, False),
                  lambda dy, x, y, m: F.avg_pool2d_backward(dy, x.shape, 3, 2, 1, False, False)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((4, 3)), X4,
                          lambda x, m: F.adaptive_avg_pool2d(x, (4, 3)),
                          lambda dy, x, y, m: F.adaptive_avg_pool2d_backward(dy, x.shape)),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(4), X4,
                          lambda x, m: F.adaptive_max_pool2d(x, 4),
                          lambda dy, x, y, m: F.adaptive_max_pool2d_backward(
                              dy, F.adaptive_max_pool2d(x, 4, return_indices=True)[1], x.shape)),
    "Flatten": (lambda: nn.Flatten(), X4, lambda x, m: x.reshape(2, -1),
                lambda dy, x, y, m: dy.reshape(x.shape)),
    "Flatten-mid": (lambda: nn.Flatten(1, 2), X4, lambda x, m: x.reshape(2, 24, 6),
                    lambda dy, x, y, m: dy.reshape(x.shape)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_parameter_free_layer_matches_functional(name, dtype):
    make, shape, fwd, bwd = ACTIVATIONS[name]
    m = make()
    x = rnd(shape, 1, dtype)
    y = m(x)
    ref = fwd(x, m)
    assert y.dtype == dtype  # parameter-free layers keep the input's dtype
    np.testing.assert_array_equal(y, ref)
    dy = rnd(y.shape, 2, dtype)
    dx = m.backward(dy)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(dx, bwd(dy, x, ref, m))
    assert m.backward(dy, need_input_grad=False) is None
    assert list(m.parameters()) == []


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_parameter_free_layer_backward_before_forward(name):
    m = ACTIVATIONS[name][0]()
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.ones(2))


def test_maxpool_return_indices():
    x = rnd(X4, 3)
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    y2, idx2 = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(idx, idx2)
    y, idx = nn.AdaptiveMaxPool2d(2, return_indices=True)(x)
    np.testing.assert_array_equal(idx, F.adaptive_max_pool2d(x, 2, return_indices=True)[1])


CONV_CONFIGS = [
    dict(in_channels=2, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2),
         dilation=(1, 2), groups=2),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", padding_mode="reflect",
         bias=False),
    dict(in_channels=2, out_channels=2, kernel_size=2, padding=1, padding_mode="circular"),
]


def test_accumulate_grad_takes_fresh_arrays_without_copy():
    """take=True (the layers' fresh backward results): the first gradient
    becomes .grad itself when it is C-contiguous and of the parameter's dtype,
    else it is copied; later ones add into .grad in place; take=False copies."""
    p = nn.Parameter(np.zeros((3, 4), np.float32))
    g = np.ones((3, 4), np.float32)
    p.accumulate_grad(g, take=True)
    assert p.grad is g
    p.accumulate_grad(np.full((3, 4), 2, np.float32), take=True)
    assert p.grad is g and (g == 3).all()
    for bad in (np.ones((3, 4), np.float64), np.ones((4, 3), np.float32).T):
        p.zero_grad()
        p.accumulate_grad(bad, take=True)
        assert p.grad is not bad and p.grad.dtype == np.float32 and p.grad.flags.c_contiguous
        np.testing.assert_array_equal(p.grad, bad)
    p.zero_grad()
    p.accumulate_grad(g)
    assert p.grad is not g
    np.testing.assert_array_equal(p.grad, g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=range(len(CONV_CONFIGS)))
def test_conv2d_matches_functional_and_accumulates(cfg, dtype):
    m = nn.Conv2d(**cfg, dtype=dtype)
    assert m.weight.dtype == dtype
    x = rnd((2, cfg["in_channels"], 7, 6), 4, dtype)
    b = None if m.bias is None else m.bias.data
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
              padding_mode=m.padding_mode)
    y = m(x)
    np.testing.assert_array_equal(y, F.conv2d(x, m.weight.data, b, **kw))
    dy = rnd(y.shape, 5, dtype)
    dx = m.backward(dy)
    rdx, rdw, rdb = F.conv2d_backward(dy, x, m.weight.data, **kw)
    np.testing.assert_array_equal(dx, rdx)
    np.testing.assert_array_equal(m.weight.grad, rdw)
    assert m.weight.grad.dtype == dtype
    if b is not None:
        np.testing.assert_array_equal(m.bias.grad, rdb)
    # a second backward adds up
    m(x)
    m.backward(dy)
    assert_close(m.weight.grad, 2 * rdw, 1e-6, 1e-6, "accumulated weight grad")
    if b is not None:
        assert_close(m.bias.grad, 2 * rdb, 1e-6, 1e-6, "accumulated bias grad")
    # parameters only: no input gradient
    assert m.backward(dy, need_input_grad=False) is None
    assert_close(m.weight.grad, 3 * rdw, 1e-6, 1e-6, "accumulated weight grad")
    m.zero_grad()
    assert m.weight.grad is None and (m.bias is None or m.bias.grad is None)
    m.backward(dy)
    m.zero_grad(set_to_none=False)
    assert np.all(m.weight.grad == 0) and m.weight.grad.shape == m.weight.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_functional_and_accumulates(dtype):
    m = nn.Linear(5, 3, dtype=dtype)
    x = rnd((4, 5), 6, dtype)
    y = m(x)
    np.testing.assert_array_equal(y, F.linear(x, m.weight.data, m.bias.data))
    dy = rnd(y.shape, 7, dtype)
    dx = m.backward(dy)
    rdx, rdw, rdb = F.linear_backward(dy, x, m.weight.data)
    np.testing.assert_array_equal(dx, rdx)
    np.testing.assert_array_equal(m.weight.grad, rdw)
    np.testing.assert_array_equal(m.bias.grad, rdb)
    m.backward(dy)
    assert_close(m.weight.grad, 2 * rdw, 1e-6, 1e-6)
    assert_close(m.bias.grad, 2 * rdb, 1e-6, 1e-6)
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None
    # extra leading dims and no bias
    m2 = nn.Linear(5, 2, bias=False, dtype=dtype)
    assert m2.bias is None and [n for n, _ in m2.named_parameters()] == ["weight"]
    x3 = rnd((2, 3, 5), 8, dtype)
    y3 = m2(x3)
    assert y3.shape == (2, 3, 2)
    np.testing.assert_array_equal(y3, F.linear(x3, m2.weight.data))
    dx3 = m2.backward(np.ones_like(y3))
    np.testing.assert_array_equal(dx3, F.linear_backward(np.ones_like(y3), x3, m2.weight.data)[0])


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm2d, (3, 4, 3, 2)), (nn.BatchNorm1d, (5, 4)),
                                       (nn.BatchNorm1d, (3, 4, 5))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_matches_functional(cls, shape, dtype):
    m = cls(4, dtype=dtype)
    m.weight.data[...] = rnd(4, 1, dtype)
    m.bias.data[...] = rnd(4, 2, dtype)
    x = rnd(shape, 3, dtype, sd=2.0) + 1
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    y = m(x)
    yr, mean, invstd = F.batch_norm(x, rm, rv, m.weight.data, m.bias.data, training=True,
                                    momentum=0.1, return_stats=True)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(m.running_mean, rm)
    np.testing.assert_array_equal(m.running_var, rv)
    assert int(m.num_batches_tracked) == 1
    dy = rnd(shape, 4, dtype)
    dx = m.backward(dy)
    rdx, rdw, rdb = F.batch_norm_backward(dy, x, m.weight.data, mean, invstd, training=True)
    np.testing.assert_array_equal(dx, rdx)
    np.testing.assert_array_equal(m.weight.grad, rdw)
    np.testing.assert_array_equal(m.bias.grad, rdb)
    m.backward(dy)
    assert_close(m.weight.grad, 2 * rdw, 1e-6, 1e-6)
    # eval: the running statistics normalise, nothing is updated
    m.eval()
    m.zero_grad()
    before = m.state_dict()
    ye = m(x)
    np.testing.assert_array_equal(ye, F.batch_norm(x, rm, rv, m.weight.data, m.bias.data))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    dxe = m.backward(dy)
    inv = (1 / np.sqrt(rv + 1e-5)).astype(dtype)
    rdx, rdw, rdb = F.batch_norm_backward(dy, x, m.weight.data, rm, inv, training=False)
    assert_close(dxe, rdx, 1e-6, 1e-6)
    assert_close(m.weight.grad, rdw, 1e-5, 1e-5)
    assert_close(m.bias.grad, rdb, 1e-6, 1e-6)


def test_batchnorm_without_affine_or_running_stats():
    m = nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    assert list(m.parameters()) == [] and m.state_dict() == OrderedDict()
    x = rnd((4, 3, 2, 2), 1, np.float32)
    y = m.eval()(x)  # no running stats: batch statistics even in eval
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    dx = m.backward(np.ones_like(y))
    np.testing.assert_allclose(dx, 0, atol=1e-5)  # normalisation is shift-invariant
    m2 = nn.BatchNorm2d(3, affine=False)
    assert list(m2.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    # nothing stored: the layer is parameter-free and keeps a float input's dtype
    x64 = rnd((4, 3, 2, 2), 1)
    y64 = m(x64)
    assert y64.dtype == np.float64 and m.backward(np.ones_like(y64)).dtype == np.float64
    np.testing.assert_allclose(y64, F.batch_norm(x64, None, None, training=True), rtol=1e-12)
    assert nn.Sequential(m).double()(x64).dtype == np.float64


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(2, 3, 3), lambda: nn.Linear(3, 2), lambda: nn.BatchNorm2d(2),
    lambda: nn.BatchNorm1d(2), lambda: nn.Dropout(0.3), lambda: nn.CrossEntropyLoss(),
    lambda: nn.NLLLoss(), lambda: nn.MSELoss(), lambda: nn.Sequential(nn.Linear(2, 2), nn.ReLU()),
    lambda: nn.Residual(nn.Linear(2, 2))])
def test_backward_before_forward_raises(make):
    with pytest.raises(RuntimeError, match="before forward"):
        make().backward(np.ones((2, 2)))


def test_dropout_identity_cases():
    x = rnd((3, 4), 1, np.float32)
    d = nn.Dropout(0.0)
    y = d(x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(d.backward(x * 2), x * 2)
    d = nn.Dropout(0.7).eval()
    np.testing.assert_array_equal(d(x), x)
    np.testing.assert_array_equal(d.backward(x), x)
    assert d.backward(x, need_input_grad=False) is None
    d = nn.Dropout(1.0)
    assert np.all(d(x) == 0) and np.all(d.backward(x) == 0)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_train_statistics(p):
    pyconv.manual_seed(123)
    d = nn.Dropout(p)
    x = np.ones((100, 200), np.float32)
    y = d(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.015
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    assert abs(y.mean() - 1) < 0.05 / (1 - p)  # the scaling keeps the expectation
    dy = rnd(x.shape, 1, np.float32)
    dx = d.backward(dy)
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0), rtol=1e-6)
    # the same seed gives the same mask; a different draw differs
    pyconv.manual_seed(123)
    np.testing.assert_array_equal(nn.Dropout(p)(x), y)
    assert not np.array_equal(d(x), y)


# --------------------------------------------------------------------------
# losses against functional
# --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_functional(reduction):
    x = rnd((4, 5), 1)
    t = np.array([0, 4, 2, 2])
    g = None if reduction != "none" else rnd(4, 2)
    gf = 1.0 if g is None else g
    ce = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1)
    np.testing.assert_array_equal(ce(x, t), F.cross_entropy(x, t, reduction, 0.1))
    np.testing.assert_array_equal(ce.backward(g), F.cross_entropy_backward(gf, x, t, reduction, 0.1))
    nll = nn.NLLLoss(reduction=reduction)
    lp = F.log_softmax(x, 1)
    np.testing.assert_array_equal(nll(lp, t), F.nll_loss(lp, t, reduction))
    np.testing.assert_array_equal(nll.backward(g), F.nll_loss_backward(gf, lp, t, reduction))
    mse = nn.MSELoss(reduction=reduction)
    tt = rnd((4, 5), 3)
    np.testing.assert_array_equal(mse(x, tt), F.mse_loss(x, tt, reduction))
    gm = None if reduction != "none" else rnd((4, 5), 4)
    np.testing.assert_array_equal(mse.backward(gm),
                                  F.mse_loss_backward(1.0 if gm is None else gm, x, tt, reduction))


def test_loss_argument_errors():
    with pytest.raises(ValueError):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    ce = nn.CrossEntropyLoss(reduction="none")
    ce(rnd((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="grad_output"):
        ce.backward()


def test_cross_entropy_probability_targets_keep_input_dtype():
    x = rnd((3, 4), 1, np.float32)
    q = F.softmax(rnd((3, 4), 2), 1)  # float64 probabilities
    ce = nn.CrossEntropyLoss()
    loss = ce(x, q)
    assert_close(loss, F.cross_entropy(x.astype(np.float64), q), 1e-6, 1e-6)
    assert np.asarray(loss).dtype == np.float32
    assert ce.backward().dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_against_torch(dtype):
    torch = pytest.importorskip("torch")
    rtol, atol = TORCH_TOL[dtype]
    tF = torch.nn.functional
    cases = [
        (nn.CrossEntropyLoss(), tF.cross_entropy, {}, (4, 5), "idx"),
        (nn.CrossEntropyLoss(label_smoothing=0.3), tF.cross_entropy, dict(label_smoothing=0.3),
         (4, 5), "idx"),
        (nn.CrossEntropyLoss(reduction="sum"), tF.cross_entropy, dict(reduction="sum"), (4, 5),
         "prob"),
        (nn.CrossEntropyLoss(), tF.cross_entropy, {}, (2, 3, 2, 2), "idx"),
        (nn.CrossEntropyLoss(), tF.cross_entropy, {}, (2, 3, 2, 2), "prob"),
        (nn.NLLLoss(), tF.nll_loss, {}, (4, 5), "idx"),
        (nn.NLLLoss(reduction="sum"), tF.nll_loss, dict(reduction="sum"), (2, 3, 2, 2), "idx"),
        (nn.MSELoss(), tF.mse_loss, {}, (3, 4), "same"),
    ]
    for i, (loss, tfn, kw, shape, kind) in enumerate(cases):
        x = rnd(shape, i, dtype)
        C = shape[1]
        if kind == "idx":
            t = np.random.default_rng(i).integers(0, C, (shape[0],) + shape[2:])
        elif kind == "prob":
            t = F.softmax(rnd(shape, 50 + i, dtype), 1)
        else:
            t = rnd(shape, 50 + i, dtype)
        xt = torch.tensor(x, requires_grad=True)
        lt = tfn(xt, torch.tensor(t), **kw)
        lt.backward()
        lp = loss(x, t)
        assert np.asarray(lp).dtype == dtype
        assert_close(lp, lt.item(), rtol, atol, f"case {i} loss")
        dx = loss.backward()
        assert dx.dtype == dtype
        assert_close(dx, xt.grad.numpy(), rtol, atol, f"case {i} grad")


@pytest.mark.parametrize("cls", [nn.CrossEntropyLoss, nn.NLLLoss])
def test_loss_4d_input_equals_rows(cls):
    x = rnd((2, 3, 2, 2), 1)
    t = np.random.default_rng(0).integers(0, 3, (2, 2, 2))
    rows = np.moveaxis(x, 1, -1).reshape(-1, 3)
    loss = cls()
    val = loss(x, t)
    ref = cls()
    assert_close(val, ref(rows, t.reshape(-1)), 1e-12, 1e-12)
    dx = loss.backward()
    drows = ref.backward()
    assert_close(dx, np.moveaxis(drows.reshape(2, 2, 2, 3), -1, 1), 1e-12, 1e-12)
    none = cls(reduction="none")
    assert none(x, t).shape == (2, 2, 2)
    assert none.backward(np.ones((2, 2, 2))).shape == x.shape


# --------------------------------------------------------------------------
# central-difference gradient checks (float64)
# --------------------------------------------------------------------------
def test_gradcheck_small_cnn_with_cross_entropy():
    pyconv.manual_seed(0)
    model = small_cnn().double()
    model.train()
    x = rnd((3, 2, 8, 8), 1)
    loss = WithLoss(nn.CrossEntropyLoss(), np.array([0, 2, 1]))
    check_model_grads(model, x, loss)
    assert int(model[1].num_batches_tracked) > 0


def test_gradcheck_residual_with_conv_shortcut():
    pyconv.manual_seed(1)
    block = nn.Residual(
        nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                      nn.Conv2d(3, 3, 3, padding=1)),
        shortcut=nn.Sequential(nn.Conv2d(2, 3, 1, stride=2, bias=False), nn.BatchNorm2d(3)),
        activation=nn.Tanh())
    model = nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).double()
    x = rnd((2, 2, 5, 5), 2)
    check_model_grads(model, x, WithLoss(nn.CrossEntropyLoss(), np.array([3, 1])))
    # identity shortcut, no activation
    pyconv.manual_seed(2)
    ident = nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Sigmoid())).double()
    check_model_grads(ident, rnd((2, 2, 4, 4), 3), Projected((2, 2, 4, 4)))


@pytest.mark.parametrize("make,shape,loss", [
    (lambda: nn.Sequential(nn.Linear(4, 6), nn.Maxout(3), nn.Linear(2, 3), nn.Softmax()),
     (3, 4), "proj"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax()), (5, 4), "nll"),
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.1), nn.Linear(3, 2)), (5, 4), "mse"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 2), nn.Maxout(2), nn.BatchNorm2d(2),
                           nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(8, 3),
                           nn.LogSoftmax(dim=-1)), (2, 1, 5, 5), "nll"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.GELU("tanh"), nn.Linear(4, 3)),
     (5, 3), "ce-probs"),
])
def test_gradcheck_layers_and_losses(make, shape, loss):
    pyconv.manual_seed(3)
    model = make().double()
    x = rnd(shape, 4)
    n = shape[0]
    out_shape = model(x).shape
    if loss == "proj":
        fn = Projected(out_shape)
    elif loss == "nll":
        fn = WithLoss(nn.NLLLoss(), np.arange(n) % out_shape[1])
    elif loss == "mse":
        fn = WithLoss(nn.MSELoss(), rnd(out_shape, 5))
    else:
        fn = WithLoss(nn.CrossEntropyLoss(label_smoothing=0.2), F.softmax(rnd(out_shape, 6), 1))
    check_model_grads(model, x, fn)


def test_gradcheck_losses_reduction_sum():
    for loss, target in [(nn.MSELoss(reduction="sum"), rnd((3, 4), 1)),
                         (nn.NLLLoss(reduction="sum"), np.array([1, 0, 3])),
                         (nn.CrossEntropyLoss(reduction="sum"), np.array([1, 0, 3]))]:
        x = rnd((3, 4), 2)
        loss(x, target)
        dx = loss.backward()
        assert_close(dx, numerical_grad(lambda: loss(x, target), x), 1e-6, 1e-8, type(loss).__name__)


# --------------------------------------------------------------------------
# PyTorch as the oracle
# --------------------------------------------------------------------------
TORCH_TOL = {np.float32: (2e-4, 2e-5), np.float64: (1e-9, 1e-11)}


def torch_residual_class(torch):
    class TorchResidual(torch.nn.Module):
        def __init__(self, main, shortcut, activation):
            super().__init__()
            self.main = main
            self.shortcut = shortcut
            self.activation = activation

        def forward(self, x):
            return self.activation(self.main(x) + self.shortcut(x))

    return TorchResidual


def twin_models(torch, arch):
    """The same architecture in torch.nn and pyconv.nn (same child names)."""
    tnn = torch.nn
    if arch == "cnn":
        def build(m):
            kw = dict(padding_mode="reflect")
            return m.Sequential(
                m.Conv2d(2, 4, 3, padding=1), m.BatchNorm2d(4), m.ReLU(), m.MaxPool2d(2),
                m.Conv2d(4, 6, 3, padding="same", groups=2, **kw), m.BatchNorm2d(6), m.GELU(),
                m.Conv2d(6, 4, 2, dilation=2, padding=1, padding_mode="circular"), m.ELU(),
                m.AvgPool2d(2), m.Flatten(), m.Linear(16, 8), m.Tanh(), m.Dropout(0.0),
                m.Linear(8, 3))
        return build(tnn), build(nn), (3, 2, 8, 8)
    if arch == "residual":
        TR = torch_residual_class(torch)

        def block(m, R):
            return R(m.Sequential(m.Conv2d(3, 4, 3, stride=2, padding=1), m.BatchNorm2d(4), m.ReLU(),
                                  m.Conv2d(4, 4, 3, padding=1), m.BatchNorm2d(4)),
                     m.Sequential(m.Conv2d(3, 4, 1, stride=2, bias=False), m.BatchNorm2d(4)),
                     m.ReLU())

        def build(m, R):
            return m.Sequential(block(m, R), m.AdaptiveAvgPool2d(1), m.Flatten(), m.Linear(4, 3))
        return build(tnn, TR), build(nn, nn.Residual), (2, 3, 6, 6)
    raise ValueError(arch)


@pytest.mark.parametrize("arch", ["cnn", "residual"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("via", ["numpy", "tensor"])
def test_against_torch_forward_backward(arch, dtype, via):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    tm, pm, shape = twin_models(torch, arch)
    tm = tm.to(tdt)
    if dtype == np.float64:
        pm.double()
    sd = tm.state_dict()
    # identical keys, order and shapes (num_batches_tracked included)
    ps = pm.state_dict()
    assert list(ps) == list(sd)
    for k, v in sd.items():
        assert ps[k].shape == tuple(v.shape), k
        assert ps[k].dtype == (np.int64 if k.endswith("num_batches_tracked") else dtype), k
    assert [n for n, _ in pm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    res = pm.load_state_dict({k: v.numpy() for k, v in sd.items()} if via == "numpy" else sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in pm.state_dict().items():
        np.testing.assert_array_equal(v, sd[k].numpy(), err_msg=k)
    rtol, atol = TORCH_TOL[dtype]
    crit_t, crit_p = torch.nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    for step in range(2):  # two train-mode batches: running stats and accumulated grads
        x = rnd(shape, 10 + step, dtype)
        t = np.random.default_rng(step).integers(0, 3, shape[0])
        xt = torch.tensor(x, requires_grad=True)
        out_t = tm(xt)
        lt = crit_t(out_t, torch.tensor(t))
        lt.backward()
        out_p = pm(x)
        assert out_p.dtype == dtype
        assert_close(out_p, out_t.detach().numpy(), rtol, atol, "output")
        lp = crit_p(out_p, t)
        assert_close(lp, lt.item(), rtol, atol, "loss")
        dx = pm.backward(crit_p.backward())
        assert dx.dtype == dtype
        assert_close(dx, xt.grad.numpy(), rtol, atol, "input grad")
        tparams = dict(tm.named_parameters())
        for name, p in pm.named_parameters():
            assert p.grad.dtype == dtype
            assert_close(p.grad, tparams[name].grad.numpy(), rtol, 10 * atol, name)
    tsd = tm.state_dict()
    for k, v in pm.state_dict().items():
        assert_close(v, tsd[k].numpy(), rtol, atol, k)
    assert all(int(v) == 2 for k, v in pm.state_dict().items() if k.endswith("num_batches_tracked"))
    # eval mode: running statistics normalise
    tm.eval()
    pm.eval()
    x = rnd(shape, 20, dtype)
    with torch.no_grad():
        ref = tm(torch.tensor(x)).numpy()
    assert_close(pm(x), ref, rtol, atol, "eval output")


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("cls,shape", [("BatchNorm2d", (4, 3, 2, 3)), ("BatchNorm1d", (6, 3)),
                                       ("BatchNorm1d", (3, 3, 4))])
def test_batchnorm_running_stats_against_torch(cls, shape, momentum):
    torch = pytest.importorskip("torch")
    tm = getattr(torch.nn, cls)(3, momentum=momentum).double()
    pm = getattr(nn, cls)(3, momentum=momentum).double()
    for i in range(4):
        x = rnd(shape, i, sd=1 + i) + i
        with torch.no_grad():
            ref = tm(torch.tensor(x)).numpy()
        assert_close(pm(x), ref, 1e-10, 1e-12, f"train step {i}")
        tsd = tm.state_dict()
        for k, v in pm.state_dict().items():
            assert_close(v, tsd[k].numpy(), 1e-10, 1e-12, f"{k} after step {i}")
    assert int(pm.num_batches_tracked) == 4
    tm.eval()
    pm.eval()
    x = rnd(shape, 9)
    with torch.no_grad():
        ref = tm(torch.tensor(x)).numpy()
    assert_close(pm(x), ref, 1e-10, 1e-12, "eval")
    assert int(pm.num_batches_tracked) == 4


def test_batchnorm_momentum_none_is_cumulative_average():
    m = nn.BatchNorm1d(2, momentum=None).double()
    xs = [rnd((5, 2), i) + i for i in range(3)]
    for x in xs:
        m(x)
    np.testing.assert_allclose(m.running_mean, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_against_torch_identity_cases(dtype):
    torch = pytest.importorskip("torch")
    x = rnd((3, 5), 1, dtype)
    for p, train in [(0.0, True), (0.5, False), (0.9, False)]:
        td, pd = torch.nn.Dropout(p).train(train), nn.Dropout(p).train(train)
        xt = torch.tensor(x, requires_grad=True)
        yt = td(xt)
        yt.backward(torch.ones_like(yt) * 2)
        y = pd(x)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(pd.backward(np.full_like(x, 2)), xt.grad.numpy())
    assert repr(nn.Dropout(0.25)).startswith("Dropout(p=0.25")


CONV_TORCH_CONFIGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2),
    dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, bias=False),
    dict(in_channels=2, out_channels=4, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0),
         dilation=(2, 1)),
    dict(in_channels=2, out_channels=2, kernel_size=4, padding="same"),
    dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", dilation=2,
         padding_mode="replicate"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=(1, 2), padding_mode="circular",
         stride=2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONV_TORCH_CONFIGS, ids=range(len(CONV_TORCH_CONFIGS)))
def test_conv2d_options_against_torch(cfg, dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    tm = torch.nn.Conv2d(**cfg).to(tdt)
    pm = nn.Conv2d(**cfg, dtype=dtype)
    assert repr(pm) == repr(tm)
    sd = tm.state_dict()
    assert list(pm.state_dict()) == list(sd)
    pm.load_state_dict(sd)
    x = rnd((2, cfg["in_channels"], 7, 6), 3, dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt)
    dy = rnd(tuple(yt.shape), 4, dtype)
    yt.backward(torch.tensor(dy))
    rtol, atol = TORCH_TOL[dtype]
    y = pm(x)
    assert_close(y, yt.detach().numpy(), rtol, atol, "output")
    assert_close(pm.backward(dy), xt.grad.numpy(), rtol, atol, "input grad")
    assert_close(pm.weight.grad, tm.weight.grad.numpy(), rtol, 10 * atol, "weight grad")
    if pm.bias is not None:
        assert_close(pm.bias.grad, tm.bias.grad.numpy(), rtol, 10 * atol, "bias grad")


def test_state_dict_keys_and_shapes_match_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    def build(m):
        return m.Sequential(OrderedDict([
            ("features", m.Sequential(m.Conv2d(1, 8, 3, bias=False), m.BatchNorm2d(8), m.ReLU(),
                                      m.Conv2d(8, 8, 3, groups=4), m.BatchNorm2d(8, affine=False),
                                      m.MaxPool2d(2))),
            ("bn1", m.BatchNorm1d(8, track_running_stats=False)),
            ("head", m.Linear(8, 10)),
        ]))

    tm, pm = build(tnn), build(nn)
    tsd, psd = tm.state_dict(), pm.state_dict()
    assert list(psd) == list(tsd)
    for k in tsd:
        assert psd[k].shape == tuple(tsd[k].shape), k
    assert psd["features.1.num_batches_tracked"].dtype == np.int64
    assert [n for n, _ in pm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in pm.named_buffers()] == [n for n, b in tm.named_buffers()]
    assert [n for n, _ in pm.named_modules()] == [n for n, _ in tm.named_modules()]
    assert pm.num_parameters() == sum(p.numel() for p in tm.parameters())


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    assert repr(nn.Conv2d(1, 32, 3)) == "Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))"

    def build(m):
        return m.Sequential(m.Conv2d(1, 32, 3), m.Conv2d(32, 8, (3, 1), stride=2, padding=1,
                                                         dilation=(1, 2), groups=2, bias=False),
                            m.ReLU(), m.MaxPool2d(2), m.AvgPool2d(2), m.Flatten(),
                            m.Linear(8, 10), m.Linear(10, 2, bias=False), m.LeakyReLU(0.2),
                            m.ELU(), m.Tanh(), m.Sigmoid(), m.GELU(), m.Softmax(dim=1),
                            m.LogSoftmax(dim=1), m.AdaptiveAvgPool2d(1))

    assert repr(build(nn)) == repr(build(tnn))
    r = repr(nn.Residual(nn.Linear(2, 2), activation=nn.ReLU()))
    assert r.startswith("Residual(\n  (main): Linear(") and "(shortcut): Identity()" in r
    assert "(activation): ReLU()" in r


def test_default_init_matches_torch_distribution_bounds():
    torch = pytest.importorskip("torch")
    for pm, tm in [(nn.Conv2d(6, 4, 3, groups=2), torch.nn.Conv2d(6, 4, 3, groups=2)),
                   (nn.Linear(7, 5), torch.nn.Linear(7, 5))]:
        for (n, p), (_, t) in zip(pm.named_parameters(), tm.named_parameters()):
            tb = float(t.detach().abs().max())
            fan_in = pm.weight.data[0].size
            assert p.shape == tuple(t.shape)
            assert tb <= 1 / math.sqrt(fan_in) + 1e-7
            assert np.abs(p.data).max() <= 1 / math.sqrt(fan_in) + 1e-7


# --------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("make,fan_in", [(lambda: nn.Conv2d(8, 64, 3), 72),
                                         (lambda: nn.Conv2d(8, 64, (3, 2), groups=4), 12),
                                         (lambda: nn.Linear(50, 200), 50)])
def test_default_init_statistics(make, fan_in):
    pyconv.manual_seed(0)
    m = make()
    bound = 1 / math.sqrt(fan_in)
    w = m.weight.data
    assert w.dtype == np.float32 and m.bias.dtype == np.float32
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.08
    assert abs(w.mean()) < 0.05 * bound
    assert np.abs(m.bias.data).max() <= bound * (1 + 1e-6)
    assert m.bias.grad is None and m.weight.requires_grad


def test_init_functions_statistics():
    pyconv.manual_seed(5)
    a = np.empty((200, 100))  # fan_in 100, fan_out 200
    tol = 0.05
    init.kaiming_uniform_(a, nonlinearity="relu")
    bound = math.sqrt(6 / 100)
    assert np.abs(a).max() <= bound and abs(a.var() / (bound ** 2 / 3) - 1) < tol
    init.kaiming_uniform_(a, mode="fan_out", nonlinearity="relu")
    assert np.abs(a).max() <= math.sqrt(6 / 200)
    init.kaiming_normal_(a, nonlinearity="relu")
    assert abs(a.std() / math.sqrt(2 / 100) - 1) < tol
    init.kaiming_normal_(a, a=0.3)
    assert abs(a.std() / (math.sqrt(2 / 1.09) / 10) - 1) < tol
    init.xavier_uniform_(a, gain=2.0)
    bound = 2 * math.sqrt(6 / 300)
    assert np.abs(a).max() <= bound and abs(a.var() / (bound ** 2 / 3) - 1) < tol
    init.xavier_normal_(a)
    assert abs(a.std() / math.sqrt(2 / 300) - 1) < tol
    init.uniform_(a, -2, 3)
    assert a.min() >= -2 and a.max() <= 3 and abs(a.mean() - 0.5) < 0.05
    assert abs(a.var() / (25 / 12) - 1) < tol
    init.normal_(a, 1.5, 0.5)
    assert abs(a.mean() - 1.5) < 0.01 and abs(a.std() / 0.5 - 1) < tol
    assert init.zeros_(a) is a and np.all(a == 0)
    assert np.all(init.ones_(a) == 1) and np.all(init.constant_(a, 0.25) == 0.25)
    # 4-D: fan_in = C * kH * kW
    w = np.empty((32, 16, 3, 3), np.float32)
    init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    assert w.dtype == np.float32 and abs(w.std() / math.sqrt(2 / 144) - 1) < tol
    # a Parameter is filled in place and returned
    p = Parameter(np.zeros((4, 3)))
    assert init.normal_(p) is p and np.any(p.data != 0)
    with pytest.raises(ValueError):
        init.kaiming_uniform_(np.empty(3))
    with pytest.raises(ValueError):
        init.kaiming_uniform_(a, mode="fan_avg")
    with pytest.raises(TypeError):
        init.uniform_(np.zeros(3, np.int64))


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for nl, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                      ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(nl, param) == pytest.approx(
            torch.nn.init.calculate_gain(nl, param)), nl


def test_manual_seed_reproducibility():
    pyconv.manual_seed(42)
    a = small_cnn()
    pyconv.manual_seed(42)
    b = small_cnn()
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)
    c = small_cnn()
    assert not np.array_equal(c[0].weight.data, a[0].weight.data)
    state = init.get_rng_state()
    u = init.uniform_(np.empty(5))
    init.set_rng_state(state)
    np.testing.assert_array_equal(init.uniform_(np.empty(5)), u)
    g = np.random.default_rng(3)
    v1 = init.normal_(np.empty(4), generator=g)
    np.testing.assert_array_equal(v1, np.random.default_rng(3).normal(0, 1, 4))
    with pytest.raises(ValueError):
        pyconv.manual_seed(-1)
    with pytest.raises(TypeError):
        pyconv.manual_seed(1.5)


# --------------------------------------------------------------------------
# containers, parameters, freezing
# --------------------------------------------------------------------------
def test_sequential_indexing_slicing_len_iter_append():
    layers = [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)]
    s = nn.Sequential(*layers)
    assert len(s) == 5
    assert list(s) == layers
    assert s[0] is layers[0] and s[-1] is layers[-1] and s[-2] is layers[3]
    assert s[np.int64(2)] is layers[2]
    with pytest.raises(IndexError):
        s[5]
    with pytest.raises(IndexError):
        s[-6]
    with pytest.raises(TypeError):
        s["0"]
    sub = s[1:4]
    assert isinstance(sub, nn.Sequential) and len(sub) == 3
    assert list(sub._modules) == ["1", "2", "3"]
    assert list(sub.state_dict()) == ["2.weight", "2.bias"]
    assert sub[0] is layers[1] and list(sub) == layers[1:4]
    assert list(s[::2]._modules) == ["0", "2", "4"]
    assert list(s[-2:]) == layers[-2:]
    x = rnd((2, 3), 1, np.float32)
    np.testing.assert_array_equal(s[2:](s[:2](x)), s(x))
    s.append(nn.Sigmoid())
    assert len(s) == 6 and isinstance(s[5], nn.Sigmoid) and list(s._modules)[-1] == "5"
    assert s.append(nn.Identity()) is s
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert named.fc is named[0]
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_named_parameters_order_and_names():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                      nn.Residual(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2, bias=False)),
                      nn.Linear(2, 3))
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.main.0.weight",
                     "3.main.0.bias", "3.shortcut.weight", "4.weight", "4.bias"]
    assert [p for p in m.parameters()] == [p for _, p in m.named_parameters()]
    assert [n for n, _ in m.named_buffers()] == ["1.running_mean", "1.running_var",
                                                  "1.num_batches_tracked"]
    assert [n for n, _ in m.named_modules()][:4] == ["", "0", "1", "2"]
    assert m.num_parameters() == 2 * 9 + 2 + 4 + 6 + 4 + 9
    # a shared parameter is listed once
    lin = nn.Linear(2, 2)
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(shared.parameters())) == 2


def test_requires_grad_freezing_and_backward_skipping():
    pyconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8, 3))
    x = rnd((2, 1, 6, 6), 1, np.float32)
    out = model(x)
    dy = rnd(out.shape, 2, np.float32)
    full_dx = model.backward(dy)
    ref = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()

    model[0].requires_grad_(False)
    assert model[0].weight.requires_grad is False and model[2].weight.requires_grad
    calls = []
    orig0 = model[0].backward

    def spy0(g, need_input_grad=True):
        calls.append(("conv0", need_input_grad))
        if need_input_grad:
            return orig0(g, need_input_grad=True)
        raise AssertionError("frozen first conv called with nothing to compute")

    orig2 = model[2].backward

    def spy2(g, need_input_grad=True):
        calls.append(("conv2", need_input_grad))
        return orig2(g, need_input_grad=need_input_grad)

    model[0].backward = spy0
    model[2].backward = spy2
    model(x)
    assert model.backward(dy, need_input_grad=False) is None
    assert calls == [("conv2", False)]  # conv0 and the ReLU before conv2 are skipped
    assert model[0].weight.grad is None and model[0].bias.grad is None
    for n in ["2.weight", "2.bias", "5.weight", "5.bias"]:
        assert_close(dict(model.named_parameters())[n].grad, ref[n], 1e-6, 1e-7, n)
    # the input gradient is still available when asked for, frozen or not
    calls.clear()
    model.zero_grad()
    model(x)
    np.testing.assert_allclose(model.backward(dy), full_dx, rtol=1e-6, atol=1e-7)
    assert ("conv0", True) in calls and model[0].weight.grad is None
    # a whole frozen model computes nothing when no input gradient is wanted
    model.requires_grad_(False)
    assert all(p.grad is None for p in model.parameters())
    calls.clear()
    model(x)
    assert model.backward(dy, need_input_grad=False) is None
    assert calls == []
    assert model.num_parameters(trainable_only=True) == 0
    model.requires_grad_(True)
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_residual_first_layer_is_skipped():
    block = nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()),
                        activation=nn.ReLU())
    model = nn.Sequential(block, nn.Flatten(), nn.Linear(8, 2))
    block.requires_grad_(False)
    seen = []
    orig = block.backward

    def spy(g, need_input_grad=True):
        seen.append(need_input_grad)
        return orig(g, need_input_grad=need_input_grad)

    block.backward = spy
    x = rnd((3, 2, 2, 2), 1, np.float32)
    model(x)
    assert model.backward(np.ones((3, 2), np.float32), need_input_grad=False) is None
    assert seen == [] and model[2].weight.grad is not None
    assert all(p.grad is None for p in block.parameters())
    # trainable again: called, but told no input gradient is needed
    block.requires_grad_(True)
    model(x)
    assert model.backward(np.ones((3, 2), np.float32), need_input_grad=False) is None
    assert seen == [False] and block.main[0].weight.grad is not None


def test_partial_freeze_parameter_level():
    lin = nn.Linear(3, 2)
    lin.bias.requires_grad_(False)
    x = rnd((4, 3), 1, np.float32)
    lin(x)
    lin.backward(np.ones((4, 2), np.float32))
    assert lin.weight.grad is not None and lin.bias.grad is None
    bn = nn.BatchNorm2d(2)
    bn.weight.requires_grad_(False)
    bn(rnd((2, 2, 2, 2), 1))
    assert bn.backward(np.ones((2, 2, 2, 2), np.float32), need_input_grad=False) is None
    assert bn.weight.grad is None and bn.bias.grad is not None


def test_residual_structure_and_errors():
    r = nn.Residual(nn.Linear(3, 3))
    assert isinstance(r.shortcut, nn.Identity) and r.activation is None
    x = rnd((2, 3), 1, np.float32)
    np.testing.assert_allclose(r(x), r.main(x) + x, rtol=1e-6)
    dx = r.backward(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(dx, np.ones((2, 3)) @ r.main.weight.data + 1, rtol=1e-6)
    assert r.backward(np.ones((2, 3), np.float32), need_input_grad=False) is None
    assert list(r.state_dict()) == ["main.weight", "main.bias"]
    bad = nn.Residual(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="shortcut"):
        bad(x)
    with pytest.raises(TypeError):
        nn.Residual(lambda x: x)


# --------------------------------------------------------------------------
# state dict
# --------------------------------------------------------------------------
def test_state_dict_copies_and_round_trip():
    pyconv.manual_seed(0)
    a, b = small_cnn(), small_cnn()
    a(rnd((2, 2, 8, 8), 1))  # update a's running stats
    sd = a.state_dict()
    sd["0.weight"][...] = 7  # a copy: the model is unchanged
    assert not np.any(a[0].weight.data == 7)
    sd = a.state_dict()
    b.load_state_dict(sd)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    assert int(b[1].num_batches_tracked) == 1
    b[0].weight.data[...] = 0  # loaded by value, not by reference
    assert not np.all(sd["0.weight"] == 0)
    # float64 state dict into a float32 model: cast to the model's dtype
    c = small_cnn()
    c.load_state_dict({k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in sd.items()})
    assert c[0].weight.dtype == np.float32
    np.testing.assert_array_equal(c[0].weight.data, sd["0.weight"])


def test_load_state_dict_errors_leave_model_unchanged():
    pyconv.manual_seed(0)
    m = small_cnn()
    before = m.state_dict()
    sd = m.state_dict()
    sd["0.weight"] = sd["0.weight"] + 1  # a valid change listed before the bad one
    sd["1.running_mean"] = sd["1.running_mean"] + 1
    sd["9.weight"] = np.zeros((5, 15), np.float32)
    with pytest.raises(ValueError, match="9.weight") as e:
        m.load_state_dict(sd)
    assert "(5, 15)" in str(e.value) and "(5, 16)" in str(e.value)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # unexpected and missing keys
    sd = m.state_dict()
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match="extra.weight"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    del sd["11.bias"]
    sd["0.weight"] = sd["0.weight"] + 1
    with pytest.raises(KeyError, match="11.bias"):
        m.load_state_dict(sd)
    np.testing.assert_array_equal(m[0].weight.data, before["0.weight"])
    # strict=False loads what matches and returns the rest
    sd["extra"] = np.zeros(1)
    res = m.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["11.bias"] and res.unexpected_keys == ["extra"]
    missing, unexpected = res
    assert missing == ["11.bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(m[0].weight.data, before["0.weight"] + 1)
    np.testing.assert_array_equal(m[11].bias.data, before["11.bias"])
    with pytest.raises(TypeError):
        m.load_state_dict([("0.weight", before["0.weight"])])
    # a shape mismatch is an error with strict=False too
    sd = m.state_dict()
    sd["0.bias"] = np.zeros(4)
    with pytest.raises(ValueError):
        m.load_state_dict(sd, strict=False)


# --------------------------------------------------------------------------
# dtype policy
# --------------------------------------------------------------------------
def test_dtype_policy():
    pyconv.manual_seed(0)
    m = small_cnn()
    assert m.dtype == np.float32
    assert all(p.dtype == np.float32 for p in m.parameters())
    x64 = rnd((2, 2, 8, 8), 1)
    y = m(x64)
    assert y.dtype == np.float32  # float64 input, float32 model
    dx = m.backward(np.ones_like(y))
    assert dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in m.parameters())
    # int input is accepted (cast to the parameter dtype)
    xi = np.random.default_rng(0).integers(-3, 4, (2, 2, 8, 8))
    yi = m(xi)
    assert yi.dtype == np.float32
    np.testing.assert_allclose(yi, m(xi.astype(np.float32)), rtol=1e-6)
    # double(): params, grads and float buffers; num_batches_tracked stays int64
    sd32 = m.state_dict()
    assert m.double() is m
    assert m.dtype == np.float64
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in m.parameters())
    for k, v in m.state_dict().items():
        expected = np.int64 if k.endswith("num_batches_tracked") else np.float64
        assert v.dtype == expected, k
        np.testing.assert_array_equal(v, sd32[k])
    y64 = m(x64.astype(np.float32))
    assert y64.dtype == np.float64
    assert m.backward(np.ones_like(y64)).dtype == np.float64
    m.eval()
    assert m(xi).dtype == np.float64
    m.float()
    assert m.dtype == np.float32 and m[1].running_var.dtype == np.float32
    assert m[1].num_batches_tracked.dtype == np.int64
    assert m(x64).dtype == np.float32
    m.astype("float64")
    assert m.dtype == np.float64
    with pytest.raises(TypeError):
        m.astype(np.float16)
    with pytest.raises(TypeError):
        m.astype(np.int32)
    # parameter-free modules keep the input dtype
    assert nn.ReLU()(x64).dtype == np.float64
    assert nn.ReLU()(x64.astype(np.float32)).dtype == np.float32
    assert nn.Sequential(nn.ReLU()).dtype == np.float32


def test_train_eval_modes():
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(2)))
    assert m.training and all(c.training for c in m.modules())
    assert m.eval() is m
    assert not any(c.training for c in m.modules())
    m.train()
    assert all(c.training for c in m.modules())
    m.train(False)
    assert not m[2][0].training


# --------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------
def test_summary_rows_counts_and_no_side_effects():
    pyconv.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Dropout(0.5), nn.Linear(36, 10))
    m(rnd((3, 1, 8, 8), 1, sd=3) + 2)  # non-trivial running stats
    m[0].requires_grad_(False)
    before = m.state_dict()
    s = m.summary((2, 1, 8, 8))
    assert isinstance(s, str)
    for name, out in [("0 (Conv2d)", "[2, 4, 6, 6]"), ("1 (BatchNorm2d)", "[2, 4, 6, 6]"),
                      ("2 (ReLU)", "[2, 4, 6, 6]"), ("3 (MaxPool2d)", "[2, 4, 3, 3]"),
                      ("4 (Flatten)", "[2, 36]"), ("5 (Dropout)", "[2, 36]"),
                      ("6 (Linear)", "[2, 10]")]:
        row = [ln for ln in s.splitlines() if ln.startswith(name)]
        assert len(row) == 1, name
        assert out in row[0], (name, row[0])
    conv_row = next(ln for ln in s.splitlines() if ln.startswith("0 (Conv2d)"))
    assert " 40 " in conv_row + " "
    total = 40 + 8 + 370
    assert f"Total params: {total:,}" in s
    assert f"Trainable params: {total - 40:,}" in s
    assert "Non-trainable params: 40" in s
    # no side effects: running stats, counters and modes
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert all(c.training for c in m.modules())
    m.eval()
    m.summary((1, 1, 8, 8))
    assert not any(c.training for c in m.modules())
    # Residual is one row plus its leaves; counts include every parameter
    r = nn.Sequential(nn.Residual(nn.Conv2d(2, 2, 3, padding=1), activation=nn.ReLU()),
                      nn.Flatten(), nn.Linear(8, 2))
    s = r.summary((1, 2, 2, 2))
    assert "(Residual)" in s and "(Conv2d)" in s and "[1, 2, 2, 2]" in s
    assert f"Total params: {r.num_parameters():,}" in s and r.num_parameters() == 38 + 18
    assert "float64" in r.summary((1, 2, 2, 2), dtype=np.float64)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def test_conv_and_batchnorm_channel_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"3 input channels.*\(2, 2, 5, 5\)"):
        conv(np.zeros((2, 2, 5, 5), np.float32))
    bn = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r"4 channels.*\(2, 3, 5, 5\)"):
        bn(np.zeros((2, 3, 5, 5), np.float32))
    assert int(bn.num_batches_tracked) == 0
    with pytest.raises(ValueError, match=r"\(2, 4, 5\)"):
        bn(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError):
        nn.BatchNorm1d(4)(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="in_features=5"):
        nn.Linear(5, 2)(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError):
        conv(np.array([["a"]]))


def test_constructor_errors():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError):
        nn.Conv2d(2, 2, 3, padding="full")
    with pytest.raises(ValueError):
        nn.Conv2d(2, 2, 3, padding="same", stride=2)
    with pytest.raises(ValueError):
        nn.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(ValueError):
        nn.Conv2d(0, 2, 3)
    with pytest.raises(TypeError):
        nn.Conv2d(2, 2, 2.5)
    for p in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="dropout probability"):
            nn.Dropout(p)
    with pytest.raises(ValueError):
        nn.BatchNorm2d(3, momentum=2)
    with pytest.raises(ValueError):
        nn.BatchNorm2d(3, eps=0)
    with pytest.raises(ValueError):
        nn.GELU("erf")
    with pytest.raises(TypeError):
        nn.Linear(2, 2, dtype=np.int32)


def test_module_attribute_registration():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.scale = Parameter(np.ones(1))
            self.register_buffer("count", np.zeros(1))
            self.note = "plain"

        def forward(self, x):
            return self.fc(x) * self.scale.data

    n = Net()
    assert [k for k, _ in n.named_parameters()] == ["scale", "fc.weight", "fc.bias"]  # as torch
    assert "count" in n.state_dict() and n.note == "plain"
    with pytest.raises(TypeError):
        n.fc = 3
    with pytest.raises(TypeError):
        n.count = [1, 2]
    with pytest.raises(AttributeError):
        n.missing

    class Bad(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="super"):
        Bad()
