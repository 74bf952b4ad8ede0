"""Layers: thin Modules over :mod:`pyconv.functional`, with PyTorch's names and defaults.

Each layer's forward keeps what its backward needs; backward returns the
input gradient and accumulates the parameter gradients (see module.py).
Layers with parameters cast their input to the parameters' dtype (float32
by default, float64 after ``.double()``); parameter-free layers keep the
input's dtype.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

from .. import functional as F
from . import init
from .module import Module, _as_float_input, _float_dtype
from .parameter import Parameter

__all__ = [
    "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "GELU", "Maxout", "Softmax", "LogSoftmax",
    "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d",
]


_pair = F._pair  # int-or-pair arguments, normalised and checked as in the functional API


def _positive_int(name, v):
    v = F._int(name, v)
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return v


def _want(p: Optional[Parameter]) -> bool:
    return p is not None and p.requires_grad


# --------------------------------------------------------------------------
# layers with parameters
# --------------------------------------------------------------------------
class Conv2d(Module):
    """2-D convolution layer, as ``torch.nn.Conv2d``.

    weight: (out_channels, in_channels / groups, kH, kW); bias: (out_channels,).
    Initialised like PyTorch: Kaiming-uniform with a=sqrt(5), bias
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=np.float32):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.groups = _positive_int("groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.kernel_size = _pair("kernel_size", kernel_size)
        if min(self.kernel_size) < 1:
            raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
        self.stride = _pair("stride", stride)
        if min(self.stride) < 1:
            raise ValueError(f"stride must be positive, got {stride!r}")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            self.padding = padding
        else:
            self.padding = _pair("padding", padding)
            if min(self.padding) < 0:
                raise ValueError(f"padding must be >= 0, got {padding!r}")
        self.dilation = _pair("dilation", dilation)
        if min(self.dilation) < 1:
            raise ValueError(f"dilation must be positive, got {dilation!r}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode
        dt = _float_dtype(dtype, "Conv2d")
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups, kh, kw), dt))
        self.bias = Parameter(np.empty(self.out_channels, dt)) if bias else None
        self._x = None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.data[0].size
            bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
            init.uniform_(self.bias, -bound, bound)

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode)

    def forward(self, x):
        x = _as_float_input(x, self.weight.data.dtype)
        if x.ndim in (3, 4) and x.shape[-3] != self.in_channels:
            raise ValueError(f"{self!r}: expected {self.in_channels} input channels, "
                             f"got input of shape {x.shape}")
        self._x = x
        return F.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data,
                        **self._args())

    def backward(self, grad_output, need_input_grad=True):
        if self._x is None:
            raise self._no_cache()
        mask = (need_input_grad, _want(self.weight), _want(self.bias))
        if not any(mask):
            return None
        dx, dw, db = F.conv2d_backward(grad_output, self._x, self.weight.data,
                                       output_mask=mask, **self._args())
        if dw is not None:
            self.weight.accumulate_grad(dw, take=True)
        if db is not None:
            self.bias.accumulate_grad(db, take=True)
        return dx

    def _flops(self, args, out):
        oc, cg, kh, kw = self.weight.shape
        return 2 * int(np.prod(np.shape(out))) * cg * kh * kw

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"  # torch prints padding=same, unquoted
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Linear(Module):
    """Fully connected layer y = x W^T + b, as ``torch.nn.Linear``; weight (out, in)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        dt = _float_dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dt))
        self.bias = Parameter(np.empty(self.out_features, dt)) if bias else None
        self._x = None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        x = _as_float_input(x, self.weight.data.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input (..., {self.in_features}), got shape {x.shape}")
        self._x = x
        return F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)

    def backward(self, grad_output, need_input_grad=True):
        if self._x is None:
            raise self._no_cache()
        mask = (need_input_grad, _want(self.weight), _want(self.bias))
        if not any(mask):
            return None
        dx, dw, db = F.linear_backward(grad_output, self._x, self.weight.data, output_mask=mask)
        if dw is not None:
            self.weight.accumulate_grad(dw, take=True)
        if db is not None:
            self.bias.accumulate_grad(db, take=True)
        return dx

    def _flops(self, args, out):
        return 2 * int(np.prod(np.shape(out))) * self.in_features

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _BatchNorm(Module):
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int("num_features", num_features)
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, numbers.Real) and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = _float_dtype(dtype, type(self).__name__)
        C = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(C, dt))
            self.bias = Parameter(np.zeros(C, dt))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dt))
            self.register_buffer("running_var", np.ones(C, dt))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._cache = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        if self.running_mean is not None:
            dt = self.running_mean.dtype
        elif self.weight is not None:
            dt = self.weight.data.dtype
        else:  # nothing stored (affine=False, track_running_stats=False): keep a float input's dtype
            x = np.asarray(x)
            dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        x = _as_float_input(x, dt)
        if x.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(map(str, self._ndims))}-D "
                             f"input, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels, "
                             f"got input of shape {x.shape}")
        use_batch = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        upd = self.training and self.track_running_stats
        y, mean, invstd = F.batch_norm(x, self.running_mean if upd else None,
                                       self.running_var if upd else None, w, b,
                                       training=True, momentum=momentum, eps=self.eps,
                                       return_stats=True) if use_batch else \
            F.batch_norm(x, self.running_mean, self.running_var, w, b, training=False,
                         eps=self.eps, return_stats=True)
        self._cache = (x, mean, invstd, use_batch)
        return y

    def backward(self, grad_output, need_input_grad=True):
        if self._cache is None:
            raise self._no_cache()
        x, mean, invstd, use_batch = self._cache
        mask = (need_input_grad, _want(self.weight), _want(self.bias))
        if not any(mask):
            return None
        dx, dw, db = F.batch_norm_backward(grad_output, x,
                                           None if self.weight is None else self.weight.data,
                                           mean, invstd, training=use_batch, output_mask=mask)
        if dw is not None:
            self.weight.accumulate_grad(dw, take=True)
        if db is not None:
            self.bias.accumulate_grad(db, take=True)
        return dx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L), as ``torch.nn.BatchNorm1d``."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) per channel, as ``torch.nn.BatchNorm2d``."""
    _ndims = (4,)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
class MaxPool2d(Module):
    """Max pooling, as ``torch.nn.MaxPool2d`` (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        self._cache = None

    def forward(self, x):
        x = np.asarray(x)
        y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode, return_indices=True)
        self._cache = (x.shape, idx)
        return (y, idx) if self.return_indices else y

    def backward(self, grad_output, need_input_grad=True):
        if self._cache is None:
            raise self._no_cache()
        if not need_input_grad:
            return None
        shape, idx = self._cache
        return F.max_pool2d_backward(grad_output, idx, shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Average pooling, as ``torch.nn.AvgPool2d`` (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override
        self._shape = None

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        x = np.asarray(x)
        y = F.avg_pool2d(x, *self._args())
        self._shape = x.shape
        return y

    def backward(self, grad_output, need_input_grad=True):
        if self._shape is None:
            raise self._no_cache()
        if not need_input_grad:
            return None
        return F.avg_pool2d_backward(grad_output, self._shape, *self._args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        self._shape = None

    def forward(self, x):
        x = np.asarray(x)
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._shape = x.shape
        return y

    def backward(self, grad_output, need_input_grad=True):
        if self._shape is None:
            raise self._no_cache()
        return F.adaptive_avg_pool2d_backward(grad_output, self._shape) if need_input_grad else None

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Adaptive max pooling to a fixed output size, as ``torch.nn.AdaptiveMaxPool2d``."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = bool(return_indices)
        self._cache = None

    def forward(self, x):
        x = np.asarray(x)
        y, idx = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._cache = (x.shape, idx)
        return (y, idx) if self.return_indices else y

    def backward(self, grad_output, need_input_grad=True):
        if self._cache is None:
            raise self._no_cache()
        shape, idx = self._cache
        return F.adaptive_max_pool2d_backward(grad_output, idx, shape) if need_input_grad else None

    def extra_repr(self):
        return f"output_size={self.output_size}"


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------
class _Elementwise(Module):
    """An activation whose backward needs its input (``_saves = 'input'``) or output."""
    _saves = "input"

    def __init__(self):
        super().__init__()
        self._saved = None

    def _fwd(self, x):
        raise NotImplementedError

    def _bwd(self, dy, saved):
        raise NotImplementedError

    def forward(self, x):
        x = np.asarray(x)
        y = self._fwd(x)
        self._saved = x if self._saves == "input" else y
        return y

    def backward(self, grad_output, need_input_grad=True):
        if self._saved is None:
            raise self._no_cache()
        return self._bwd(grad_output, self._saved) if need_input_grad else None


class ReLU(_Elementwise):
    """max(x, 0). ``inplace`` is accepted for PyTorch compatibility; the output is always new."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def _fwd(self, x):
        return F.relu(x)

    def _bwd(self, dy, x):
        return F.relu_backward(dy, x)


class LeakyReLU(_Elementwise):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def _fwd(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def _bwd(self, dy, x):
        return F.leaky_relu_backward(dy, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ELU(_Elementwise):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = float(alpha)

    def _fwd(self, x):
        return F.elu(x, self.alpha)

    def _bwd(self, dy, x):
        return F.elu_backward(dy, x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""
    _saves = "output"

    def _fwd(self, x):
        return F.sigmoid(x)

    def _bwd(self, dy, y):
        return F.sigmoid_backward(dy, y)


class Tanh(_Elementwise):
    """tanh(x)."""
    _saves = "output"

    def _fwd(self, x):
        return F.tanh(x)

    def _bwd(self, dy, y):
        return F.tanh_backward(dy, y)


class GELU(_Elementwise):
    """x * Phi(x); ``approximate='tanh'`` for the tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _fwd(self, x):
        return F.gelu(x, self.approximate)

    def _bwd(self, dy, x):
        return F.gelu_backward(dy, x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Maxout(_Elementwise):
    """Max over groups of ``pieces`` consecutive channels along ``dim`` (C -> C / pieces)."""

    def __init__(self, pieces, dim=1):
        super().__init__()
        self.pieces = _positive_int("pieces", pieces)
        self.dim = int(dim)

    def _fwd(self, x):
        return F.maxout(x, self.pieces, self.dim)

    def _bwd(self, dy, x):
        return F.maxout_backward(dy, x, self.pieces, self.dim)

    def extra_repr(self):
        return f"pieces={self.pieces}, dim={self.dim}"


class Softmax(_Elementwise):
    """Softmax along ``dim`` (default 1, the class axis of (N, C) logits)."""
    _saves = "output"

    def __init__(self, dim=1):
        super().__init__()
        self.dim = int(dim)

    def _fwd(self, x):
        return F.softmax(x, self.dim)

    def _bwd(self, dy, y):
        return F.softmax_backward(dy, y, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax(x)) along ``dim``, computed stably."""

    def _fwd(self, x):
        return F.log_softmax(x, self.dim)

    def _bwd(self, dy, y):
        return F.log_softmax_backward(dy, y, self.dim)


# --------------------------------------------------------------------------
# shape and regularisation
# --------------------------------------------------------------------------
class Flatten(Module):
    """Flattens dims start_dim..end_dim (default: all but the batch dim) into one."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self._shape = None

    def forward(self, x):
        x = np.asarray(x)
        nd = max(x.ndim, 1)
        s, e = self.start_dim % nd, self.end_dim % nd
        if s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after end_dim="
                             f"{self.end_dim} for input of shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:])

    def backward(self, grad_output, need_input_grad=True):
        if self._shape is None:
            raise self._no_cache()
        return np.reshape(grad_output, self._shape) if need_input_grad else None

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Zeroes each element with probability p in training and scales the rest by 1/(1-p).

    The mask is drawn from pyconv's global generator (:func:`pyconv.manual_seed`).
    In eval mode it is the identity.
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, got {p!r}")
        self.p = float(p)
        self._mask = None
        self._ran = False

    def forward(self, x):
        x = np.asarray(x)
        self._ran = True
        if not self.training or self.p == 0:
            self._mask = None
            return x
        dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        if self.p == 1:
            self._mask = np.zeros(x.shape, dt)
        else:
            keep = init.get_rng().random(x.shape, dtype=np.float32) >= self.p
            self._mask = keep.astype(dt) * dt.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_output, need_input_grad=True):
        if not self._ran:
            raise self._no_cache()
        if not need_input_grad:
            return None
        return grad_output if self._mask is None else grad_output * self._mask

    def extra_repr(self):
        return f"p={self.p}"
