"""Comparison of a result with a float64 reference at a per-dtype tolerance,
as the convolution tests use it: |got - ref| <= rtol * |ref| + atol * scale,
scale = max(|ref|.max(), 1), NaN never passes."""
from __future__ import annotations

import numpy as np

TOL = {
    np.dtype(np.float64): (1e-10, 1e-10),
    np.dtype(np.float32): (1e-4, 1e-4),
    np.dtype(np.float16): (2e-3, 2e-3),
}


def assert_close(got, ref, dtype, what="", tol=None):
    """got (any float dtype) against the float64 reference, with (tol or TOL)[dtype]."""
    dtype = np.dtype(dtype)
    assert got is not None, f"{what}: got None"
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    rtol, atol = (tol or TOL)[dtype]
    scale = max(float(np.abs(ref).max(initial=0.0)), 1.0)
    g = got.astype(np.float64)
    err = np.abs(g - ref)
    bound = rtol * np.abs(ref) + atol * scale
    bad = ~(err <= bound)  # also catches NaN
    if bad.any():
        idx = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), err.shape)
        raise AssertionError(
            f"{what} ({dtype}): {int(bad.sum())}/{bad.size} elements off; worst at {idx}: "
            f"got {g[idx]!r}, reference {ref[idx]!r}, error {err[idx]:.3g} > {bound[idx]:.3g}"
            f" (scale {scale:.3g})")
