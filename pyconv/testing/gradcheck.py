"""Central-difference gradient checking in float64, after Caffe's GradientChecker.

A function ``f(*inputs) -> y`` (any output shape) is reduced to the scalar
loss ``L = sum(f(*inputs) * R)`` with a fixed random projection ``R`` of y's
shape, so one analytic backward pass with ``dy = R`` gives dL/d(input) for
every input at once. Each element of each checked input is then perturbed by
``+-eps`` and the central difference ``(L(x + eps) - L(x - eps)) / (2 eps)``
is compared with the analytic value::

    |analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)

(Caffe's scaled test). As in Caffe, elements whose value lies within
``kink_range`` of a non-differentiable point ``kink`` (ReLU at 0, say) can be
skipped, since a finite difference straddling a kink is meaningless there.

Shapes::

    numerical_grad(f, x, eps=1e-6) -> g
        f: callable taking an array shaped like x and returning a scalar
        x: array (any shape); g: float64 array shaped like x

    gradcheck(f, inputs, analytic_grads, *, R=None, wrt=None, eps=1e-6,
              threshold=1e-6, kink=None, kink_range=0.0, seed=0)
        -> GradcheckResult
        f:              callable(*inputs) -> y (ndarray, any shape)
        inputs:         sequence of arrays (converted to float64 copies)
        analytic_grads: callable(R, *inputs) -> sequence of dL/d(input_i)
                        (None allowed for inputs not checked), or a sequence
                        of arrays already computed with the given R
        R:              projection shaped like y; drawn from N(0, 1) if None
        wrt:            indices of the inputs to check (default: all whose
                        analytic grad is not None)

Everything runs in float64; ``f`` should compute in float64 too, or the
finite differences drown in rounding error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = [
    "numerical_grad",
    "projected_loss",
    "gradcheck",
    "GradcheckResult",
]


def numerical_grad(f: Callable[[np.ndarray], float], x, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar function ``f`` at ``x`` (float64).

    ``f`` receives a float64 array shaped like ``x`` (the same buffer, perturbed
    in place and restored after each element) and must return a scalar; an
    array result is summed.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    g = np.empty_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = float(np.sum(f(x)))
        flat[i] = orig - eps
        fm = float(np.sum(f(x)))
        flat[i] = orig
        gflat[i] = (fp - fm) / (2.0 * eps)
    return g


def projected_loss(f: Callable[..., np.ndarray], R: np.ndarray) -> Callable[..., float]:
    """The scalar loss ``L(*inputs) = sum(f(*inputs) * R)`` in float64."""
    R = np.asarray(R, dtype=np.float64)

    def loss(*inputs) -> float:
        y = np.asarray(f(*inputs), dtype=np.float64)
        if y.shape != R.shape:
            raise ValueError(f"f returned shape {y.shape}, projection R has shape {R.shape}")
        return float(np.sum(y * R))

    return loss


@dataclass
class GradcheckResult:
    """Per-input outcome: numerical and analytic gradients and the worst element."""

    numeric: List[Optional[np.ndarray]] = field(default_factory=list)
    analytic: List[Optional[np.ndarray]] = field(default_factory=list)
    max_scaled_error: float = 0.0
    checked: int = 0
    skipped: int = 0
    failures: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def gradcheck(f: Callable[..., np.ndarray], inputs: Sequence, analytic_grads, *,
              R: Optional[np.ndarray] = None, wrt: Optional[Sequence[int]] = None,
              eps: float = 1e-6, threshold: float = 1e-6, kink: Optional[float] = None,
              kink_range: float = 0.0, seed: int = 0, raise_on_failure: bool = True,
              max_reported: int = 5) -> GradcheckResult:
    """Check analytic gradients of ``L = sum(f(*inputs) * R)`` against central differences.

    Raises AssertionError listing the worst elements when any scaled error
    exceeds ``threshold`` (unless ``raise_on_failure=False``; then inspect the
    returned :class:`GradcheckResult`).
    """
    xs = [np.array(a, dtype=np.float64, copy=True) for a in inputs]
    y0 = np.asarray(f(*xs), dtype=np.float64)
    if R is None:
        R = np.random.default_rng(seed).standard_normal(y0.shape)
    R = np.asarray(R, dtype=np.float64)
    if R.shape != y0.shape:
        raise ValueError(f"projection R has shape {R.shape}, f's output has shape {y0.shape}")
    loss = projected_loss(f, R)

    if callable(analytic_grads):
        grads = analytic_grads(R, *[x.copy() for x in xs])
    else:
        grads = analytic_grads
    grads = list(grads)
    if len(grads) != len(xs):
        raise ValueError(f"got {len(grads)} analytic gradients for {len(xs)} inputs")
    if wrt is None:
        wrt = [i for i, gi in enumerate(grads) if gi is not None]

    res = GradcheckResult(numeric=[None] * len(xs), analytic=[None] * len(xs))
    for i in wrt:
        if grads[i] is None:
            raise ValueError(f"input {i} is to be checked but its analytic gradient is None")
        ana = np.asarray(grads[i], dtype=np.float64)
        if ana.shape != xs[i].shape:
            raise ValueError(
                f"analytic gradient {i} has shape {ana.shape}, input has shape {xs[i].shape}")

        def f_i(xi, i=i):
            args = list(xs)
            args[i] = xi
            return loss(*args)

        num = numerical_grad(f_i, xs[i], eps)
        res.numeric[i], res.analytic[i] = num, ana
        scale = np.maximum(np.maximum(np.abs(ana), np.abs(num)), 1.0)
        err = np.abs(ana - num) / scale
        if kink is not None:
            near = np.abs(np.abs(xs[i]) - kink) <= kink_range
            res.skipped += int(near.sum())
            err = np.where(near, 0.0, err)
        res.checked += err.size
        res.max_scaled_error = max(res.max_scaled_error, float(err.max(initial=0.0)))
        bad = np.argwhere(err > threshold)
        if bad.size:
            order = np.argsort(-err[tuple(bad.T)])[:max_reported]
            for idx in bad[order]:
                t = tuple(int(v) for v in idx)
                res.failures.append(
                    f"input {i} at {t}: analytic {ana[t]!r}, numeric {num[t]!r}, "
                    f"scaled error {err[t]:.3g} > {threshold:g}")
    if res.failures and raise_on_failure:
        raise AssertionError("gradient check failed:\n  " + "\n  ".join(res.failures))
    return res
