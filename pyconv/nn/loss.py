"""Loss modules: ``loss(input, target)`` returns the loss, ``loss.backward()`` the input gradient.

Cross-entropy takes logits (N, C) — the softmax is fused in, as in PyTorch —
and targets as class indices (N,) or probabilities (N, C). Inputs of 4-D
(N, C, H, W) are accepted too (per-pixel classification): they are moved to
(N*H*W, C) and back, with targets (N, H, W).
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "NLLLoss"]


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self._cache = None

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""

    def _grad(self, grad_output):
        if grad_output is None:
            if self.reduction == "none":
                raise ValueError(f"{type(self).__name__}(reduction='none').backward() needs a "
                                 "grad_output of the loss's shape")
            grad_output = 1.0
        return grad_output


def _rows(x, target):
    """(N, C, *S) logits and (N, *S) targets as (N*prod(S), C) and (N*prod(S),)."""
    x = np.asarray(x)
    if x.ndim <= 2:
        return x, target, None
    t = np.asarray(target)
    moved = np.moveaxis(x, 1, -1)
    if t.dtype.kind == "f":
        t = np.moveaxis(t, 1, -1).reshape(-1, x.shape[1])
    else:
        if t.shape != x.shape[:1] + x.shape[2:]:
            raise ValueError(f"target must have shape {x.shape[:1] + x.shape[2:]} for input "
                             f"{x.shape}, got {t.shape}")
        t = t.reshape(-1)
    return moved.reshape(-1, x.shape[1]), t, x.shape


def _unrows(dx, shape):
    if shape is None:
        return dx
    moved = dx.reshape((shape[0],) + shape[2:] + (shape[1],))
    return np.ascontiguousarray(np.moveaxis(moved, -1, 1))


class _ClassLoss(_Loss):
    """A loss over class scores (N, C) or (N, C, *S): rows handled by _rows / _unrows."""

    def _prepare(self, x, t):
        return x, t

    def _loss(self, x, t):
        raise NotImplementedError

    def _loss_backward(self, g, x, t):
        raise NotImplementedError

    def forward(self, input, target):
        x, t = self._prepare(np.asarray(input), np.asarray(target))
        x, t, shape = _rows(x, t)
        loss = self._loss(x, t)
        self._cache = (x, t, shape)
        if shape is not None and self.reduction == "none":
            loss = loss.reshape(shape[:1] + shape[2:])
        return loss

    def backward(self, grad_output=None, need_input_grad=True):
        if self._cache is None:
            raise self._no_cache()
        x, t, shape = self._cache
        g = self._grad(grad_output)
        if shape is not None and self.reduction == "none":
            g = np.asarray(g).reshape(-1)
        return _unrows(self._loss_backward(g, x, t), shape)


class CrossEntropyLoss(_ClassLoss):
    """Softmax cross-entropy of logits, as ``torch.nn.CrossEntropyLoss`` (label_smoothing too)."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def _prepare(self, x, t):
        if t.dtype.kind == "f" and x.dtype.kind == "f" and t.dtype != x.dtype:
            t = t.astype(x.dtype)  # probability targets follow the logits' dtype (as MSELoss)
        return x, t

    def _loss(self, x, t):
        return F.cross_entropy(x, t, self.reduction, self.label_smoothing)

    def _loss_backward(self, g, x, t):
        return F.cross_entropy_backward(g, x, t, self.reduction, self.label_smoothing)

    def extra_repr(self):
        s = super().extra_repr()
        if self.label_smoothing:
            s = (s + ", " if s else "") + f"label_smoothing={self.label_smoothing}"
        return s


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of log-probabilities (N, C), as ``torch.nn.NLLLoss``."""

    def _loss(self, x, t):
        return F.nll_loss(x, t, self.reduction)

    def _loss_backward(self, g, x, t):
        return F.nll_loss_backward(g, x, t, self.reduction)


class MSELoss(_Loss):
    """Mean squared error, as ``torch.nn.MSELoss`` (input and target shapes must match)."""

    def forward(self, input, target):
        x = np.asarray(input)
        t = np.asarray(target)
        if t.dtype != x.dtype and x.dtype.kind == "f":
            t = t.astype(x.dtype)
        loss = F.mse_loss(x, t, self.reduction)
        self._cache = (x, t)
        return loss

    def backward(self, grad_output=None, need_input_grad=True):
        if self._cache is None:
            raise self._no_cache()
        x, t = self._cache
        return F.mse_loss_backward(self._grad(grad_output), x, t, self.reduction)
