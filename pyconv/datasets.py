"""Small ready-made data sets for experiments and exercises.

Nothing here downloads anything: the data come from files bundled with
scikit-learn (install it with ``pip install 'pyconv-cnn[data]'`` or
``pip install scikit-learn``).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["load_digits", "DIGITS_CLASSES"]

#: Class names of :func:`load_digits`: label ``k`` is the digit ``DIGITS_CLASSES[k]``.
DIGITS_CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))

_SKLEARN_HINT = ("pyconv.datasets.load_digits needs scikit-learn: pip install 'pyconv-cnn[data]' "
                 "(or pip install scikit-learn)")


def load_digits(return_images: bool = True, return_names: bool = False, dtype=np.float32):
    """The 8x8 handwritten digits of scikit-learn (1797 images, 10 classes).

    A tiny image classification set (the UCI "optical recognition of
    handwritten digits" test set) that trains in seconds on a CPU: good for
    trying out a CNN before moving to MNIST or CIFAR-10.

    Parameters
    ----------
    return_images : bool
        True (default): ``x`` has shape ``(1797, 1, 8, 8)`` (NCHW, one channel),
        ready for ``conv2d``. False: flat ``(1797, 64)`` rows.
    return_names : bool
        Also return the class names ``("0", ..., "9")`` (also available as
        ``pyconv.datasets.DIGITS_CLASSES``).
    dtype : float dtype
        dtype of ``x`` (default float32).

    Returns
    -------
    x : ndarray
        Pixel intensities scaled from the original 0..16 to [0, 1] (divided by 16).
    y : ndarray of int64, shape (1797,)
        The digit shown, 0..9.
    names : tuple of str
        Only if ``return_names=True``.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> from pyconv.datasets import load_digits
    >>> x, y = load_digits()
    >>> x.shape, x.dtype, y[:5]
    ((1797, 1, 8, 8), dtype('float32'), array([0, 1, 2, 3, 4]))
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"load_digits: dtype must be a floating-point dtype, got {dtype}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError(_SKLEARN_HINT) from e

    bunch = _sk_load_digits()
    data = np.asarray(bunch.data, np.float64)            # (1797, 64), values 0..16
    x = (data / 16.0).astype(dtype)
    if return_images:
        x = np.ascontiguousarray(x.reshape(-1, 1, 8, 8))
    y = np.asarray(bunch.target).astype(np.int64)
    if return_names:
        return x, y, DIGITS_CLASSES
    return x, y
