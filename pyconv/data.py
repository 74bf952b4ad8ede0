"""Data handling for training CNNs on NumPy arrays: splitting, batching,
preprocessing and data augmentation.

Everything here is plain NumPy (no compiled code) and works on batches at once:
there are no Python loops over samples or pixels, so augmenting a batch of a few
hundred images costs milliseconds.

Conventions
-----------
* Images are NCHW: ``(batch, channels, height, width)``.
* float32 input gives float32 output and float64 gives float64 (statistics are
  computed in float64 and applied in the input's dtype).
* Nothing modifies its input: every call returns a new array.
* Randomness comes from a :class:`numpy.random.Generator` that each object owns,
  built from ``seed`` with :func:`numpy.random.default_rng`. The same seed gives
  the same results, and ``get_state()`` / ``set_state()`` save and restore the
  generator (a JSON-serialisable dict) so a run can be resumed exactly.

A typical pipeline::

    from pyconv.data import (train_val_test_split, Standardize, BatchLoader,
                             Compose, RandomCrop, RandomHorizontalFlip)

    x_tr, y_tr, x_va, y_va, x_te, y_te = train_val_test_split(x, y, seed=0)
    scaler = Standardize()                 # statistics from the training set only
    x_tr = scaler.fit_transform(x_tr)
    x_va, x_te = scaler.transform(x_va), scaler.transform(x_te)

    augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()], seed=1)
    loader = BatchLoader(x_tr, y_tr, batch_size=64, seed=2, transform=augment)
    for epoch in range(10):
        for xb, yb in loader:              # a new order every epoch
            ...
"""
from __future__ import annotations

import copy
import math
import numbers
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    # splitting and batching
    "train_val_test_split", "batches", "BatchLoader",
    # preprocessing
    "MinMaxScaler", "Center", "Standardize",
    # augmentation
    "Compose", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip",
    "RandomRotation", "RandomAffine", "RandomTranslation", "RandomScale",
    "GaussianNoise", "ColorJitter",
]

SeedLike = Union[None, int, np.random.SeedSequence, np.random.Generator]


# ==========================================================================
# small helpers
# ==========================================================================
def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _real(name: str, v, owner: str) -> float:
    if not _is_real(v):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {v!r}")
    return v


def _positive_int(name: str, v, owner: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if v < 1:
        raise ValueError(f"{owner}: {name} must be >= 1, got {v}")
    return v


def _probability(p, owner: str) -> float:
    p = _real("p", p, owner)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be a probability in [0, 1], got {p!r}")
    return p


def _rng_state(rng: np.random.Generator) -> Dict[str, Any]:
    # bit_generator.state is a fresh dict of ints/strs (JSON-serialisable);
    # deepcopy guards against generators whose state holds arrays.
    return copy.deepcopy(rng.bit_generator.state)


def _set_rng_state(rng: np.random.Generator, state, owner: str) -> None:
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError(
            f"{owner}.set_state: state must be a dict returned by get_state(), got {type(state).__name__}")
    name = type(rng.bit_generator).__name__
    if state["bit_generator"] != name:
        raise ValueError(
            f"{owner}.set_state: state is for bit generator {state['bit_generator']!r}, "
            f"but this object uses {name!r}")
    rng.bit_generator.state = copy.deepcopy(state)


def _length(name: str, a: np.ndarray, fn: str) -> int:
    if a.ndim == 0:
        raise ValueError(f"{fn}: {name} must have a first (sample) axis, got a 0-d array")
    return a.shape[0]


# ==========================================================================
# train / validation / test split
# ==========================================================================
def _largest_remainder(total: int, fractions: np.ndarray) -> np.ndarray:
    """Integer counts that sum to ``total``, as close as possible to total*fractions."""
    raw = total * fractions
    base = np.floor(raw).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:rest]] += 1
    return base


def _stratified_counts(n: np.ndarray, f: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Counts a[c, s] of class c in split s.

    Row sums are the class sizes ``n``, column sums the split sizes ``totals``;
    every class gets at least one sample in every split with a positive fraction
    (the caller checked this is possible), and a[c, s] stays close to n[c]*f[s].
    The number of iterations is bounded by (#classes x #splits), not by the
    number of samples.
    """
    C, K = len(n), len(f)
    target = n[:, None] * f[None, :]
    pos = f > 0
    lb = np.zeros((C, K), np.int64)
    lb[:, pos] = 1
    a = np.maximum(np.floor(target).astype(np.int64), lb)
    a[:, ~pos] = 0

    # 1. rows that the lower bounds pushed above the class size: take back
    #    units from the cells that exceed their target the most.
    for c in range(C):
        while a[c].sum() > n[c]:
            surplus = np.where(a[c] > lb[c], a[c] - target[c], -np.inf)
            a[c, int(np.argmax(surplus))] -= 1

    # 2. largest remainder: hand out the missing units of each row to the cells
    #    with the largest fractional remainders, while their split has room.
    need_row = n - a.sum(1)
    need_col = totals - a.sum(0)
    rem = np.where(pos[None, :], target - a, -np.inf)
    for flat in np.argsort(-rem, axis=None, kind="stable"):
        c, s = divmod(int(flat), K)
        if not pos[s]:
            continue
        if need_row[c] > 0 and need_col[s] > 0:
            a[c, s] += 1
            need_row[c] -= 1
            need_col[s] -= 1
    #    rows still short (their preferred splits were full): any split with
    #    room, else the one with the largest deficit.
    for c in range(C):
        while need_row[c] > 0:
            key = np.where(pos, (need_col > 0) * 1e9 + (target[c] - a[c]), -np.inf)
            s = int(np.argmax(key))
            a[c, s] += 1
            need_row[c] -= 1
            need_col[s] -= 1

    # 3. split sizes still off (lower bounds can overfill a small split):
    #    move single samples from an overfull split to an underfull one, choosing
    #    the class whose proportions suffer least.
    for _ in range(int(np.abs(totals - a.sum(0)).sum()) + 1):
        diff = totals - a.sum(0)
        if not diff.any():
            break
        s_over, s_under = int(np.argmin(diff)), int(np.argmax(diff))
        movable = a[:, s_over] > lb[:, s_over]
        if not movable.any():
            break
        cost = (np.abs(a[:, s_over] - 1 - target[:, s_over]) - np.abs(a[:, s_over] - target[:, s_over])
                + np.abs(a[:, s_under] + 1 - target[:, s_under]) - np.abs(a[:, s_under] - target[:, s_under]))
        c = int(np.argmin(np.where(movable, cost, np.inf)))
        a[c, s_over] -= 1
        a[c, s_under] += 1
    return a


def train_val_test_split(x, y, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                         stratify: bool = True, seed: SeedLike = None):
    """Split a data set into random training, validation and test parts.

    Parameters
    ----------
    x : array_like
        Samples; the first axis indexes samples (e.g. images ``(N, C, H, W)``).
    y : array_like
        Targets, one per sample (``len(y) == len(x)``).
    fractions : sequence of 2 or 3 floats
        Fractions of the samples in each part, each >= 0, summing to 1 (within
        1e-6). Three entries give train/val/test; two give train/test.
    stratify : bool
        If True (the default), ``y`` must hold class labels (ints, bools or
        strings, 1-D) and each class is split in the same proportions, so each
        part has the same class balance as the whole set. Every class appears in
        every part with a positive fraction.
    seed : int, None, SeedSequence or numpy Generator
        Seed for :func:`numpy.random.default_rng`; the same seed gives the same
        split.

    Returns
    -------
    ``(x_train, y_train, x_val, y_val, x_test, y_test)`` for three fractions, or
    ``(x_train, y_train, x_test, y_test)`` for two. The arrays are new copies,
    in random order.

    How the sizes are chosen
    ------------------------
    The part sizes are ``len(x) * fractions`` rounded by the *largest remainder*
    method: round down, then give the leftover samples to the parts with the
    largest fractional parts. The sizes therefore add up to ``len(x)`` exactly
    (e.g. 10 samples with ``(0.7, 0.1, 0.2)`` give 7, 1 and 2). With
    ``stratify=True`` the same rounding is applied to each class, subject to the
    part sizes above and to every class appearing in every part.

    Raises
    ------
    ValueError
        ``x`` and ``y`` of different lengths; bad ``fractions``; ``stratify``
        with float targets, multi-dimensional targets, a class with fewer
        samples than there are parts, or a part smaller than the number of
        classes.

    Examples
    --------
    >>> x = np.arange(20, dtype=np.float32).reshape(20, 1)
    >>> y = np.repeat([0, 1], 10)
    >>> xtr, ytr, xva, yva, xte, yte = train_val_test_split(x, y, seed=0)
    >>> len(xtr), len(xva), len(xte)
    (14, 2, 4)
    """
    fn = "train_val_test_split"
    x = np.asarray(x)
    y = np.asarray(y)
    n_x, n_y = _length("x", x, fn), _length("y", y, fn)
    if n_x != n_y:
        raise ValueError(f"{fn}: x and y must have the same length, got len(x)={n_x} and len(y)={n_y}")
    if n_x == 0:
        raise ValueError(f"{fn}: x is empty; there is nothing to split")

    try:
        f = [float(v) for v in fractions]
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: fractions must be a sequence of 2 or 3 numbers, got {fractions!r}") from None
    if len(f) not in (2, 3):
        raise ValueError(f"{fn}: fractions must have 2 (train, test) or 3 (train, val, test) entries, "
                         f"got {len(f)}: {fractions!r}")
    if any(not math.isfinite(v) or v < 0 for v in f):
        raise ValueError(f"{fn}: fractions must all be >= 0, got {fractions!r}")
    if abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(f"{fn}: fractions must sum to 1, got {fractions!r} (sum {sum(f)!r})")
    f = np.asarray(f, np.float64)
    f = f / f.sum()
    names = ("train", "val", "test") if len(f) == 3 else ("train", "test")
    totals = _largest_remainder(n_x, f)
    rng = np.random.default_rng(seed)

    if not stratify:
        perm = rng.permutation(n_x)
        parts = np.split(perm, np.cumsum(totals)[:-1])
    else:
        if y.ndim != 1:
            raise ValueError(f"{fn}: stratify=True needs 1-D class labels y, got y of shape {y.shape}; "
                             f"pass stratify=False for other targets")
        if y.dtype.kind not in "biuUSO":
            raise ValueError(f"{fn}: stratify=True needs class labels (ints, bools or strings) in y, "
                             f"got y of dtype {y.dtype}; pass stratify=False for regression targets "
                             f"or convert labels with y.astype(int)")
        classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        n_parts = int((f > 0).sum())
        small = np.flatnonzero(counts < n_parts)
        if small.size:
            c = small[0]
            raise ValueError(f"{fn}: stratify=True but class {classes[c].tolist()!r} of y has only {counts[c]} "
                             f"sample(s), fewer than the {n_parts} non-empty parts; pass stratify=False "
                             f"or remove/merge rare classes")
        for s in np.flatnonzero(f > 0):
            if totals[s] < len(classes):
                raise ValueError(f"{fn}: stratify=True but the {names[s]} part would have {totals[s]} "
                                 f"sample(s), fewer than the {len(classes)} classes; increase "
                                 f"fractions[{s}] or pass stratify=False")
        a = _stratified_counts(counts.astype(np.int64), f, totals)
        # all samples grouped by class (stable sort keeps this deterministic),
        # then each class shuffled and cut into its per-part counts.
        by_class = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        pieces: List[List[np.ndarray]] = [[] for _ in f]
        for c in range(len(classes)):
            idx = rng.permutation(by_class[starts[c]:starts[c + 1]])
            for s, chunk in enumerate(np.split(idx, np.cumsum(a[c])[:-1])):
                pieces[s].append(chunk)
        parts = [rng.permutation(np.concatenate(p)) for p in pieces]

    out = []
    for idx in parts:
        out.extend((x[idx], y[idx]))
    return tuple(out)


# ==========================================================================
# batching
# ==========================================================================
def _check_xy(x, y, fn: str):
    x = np.asarray(x)
    n = _length("x", x, fn)
    if y is not None:
        y = np.asarray(y)
        if _length("y", y, fn) != n:
            raise ValueError(f"{fn}: x and y must have the same length, got len(x)={n} and len(y)={len(y)}")
    return x, y


def _iterate(x, y, batch_size, shuffle, drop_last, rng, transform):
    n = x.shape[0]
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx]                      # fancy indexing: always a copy
        if transform is not None:
            xb = transform(xb)
        if y is None:
            yield xb
        else:
            yield xb, y[idx]


def batches(x, y=None, batch_size: int = 32, shuffle: bool = True, drop_last: bool = False,
            seed: SeedLike = None) -> Iterator:
    """Iterate once over ``x`` (and ``y``) in mini-batches.

    Yields ``(xb, yb)`` pairs, or just ``xb`` when ``y`` is None. Each sample
    appears exactly once; with ``shuffle=True`` in a random order drawn from
    ``np.random.default_rng(seed)`` (``seed`` may also be a Generator, which is
    then advanced). The last batch is smaller when ``batch_size`` does not
    divide ``len(x)``, unless ``drop_last=True`` drops it. Batches are copies.

    For several epochs, use :class:`BatchLoader`, which draws a new order each
    time it is iterated.

    >>> for xb, yb in batches(x_train, y_train, batch_size=64, seed=0):
    ...     loss = train_step(xb, yb)
    """
    fn = "batches"
    x, y = _check_xy(x, y, fn)
    batch_size = _positive_int("batch_size", batch_size, fn)
    rng = np.random.default_rng(seed)
    return _iterate(x, y, batch_size, bool(shuffle), bool(drop_last), rng, None)


class BatchLoader:
    """Re-iterable mini-batch loader: each ``for`` loop over it is one epoch.

    Parameters
    ----------
    x, y : array_like
        Samples and (optional) targets; ``y=None`` makes the loader yield ``xb``
        alone instead of ``(xb, yb)``.
    batch_size : int
        Samples per batch (the last one may be smaller, see ``drop_last``).
    shuffle : bool
        Draw a new random order at the start of every epoch.
    drop_last : bool
        Drop the last, incomplete batch.
    seed : int, None, SeedSequence or Generator
        Seeds the loader's own generator, used for the shuffling.
    transform : callable, optional
        Applied to every ``xb`` (e.g. a :class:`Compose` of augmentations).
        ``yb`` is not transformed.

    ``len(loader)`` is the number of batches per epoch. ``get_state()`` returns
    the shuffling generator's state (a JSON-serialisable dict) and
    ``set_state(state)`` restores it: saved between epochs, it lets a resumed run
    see exactly the same batches. (A transform with randomness keeps its own
    state: save ``transform.get_state()`` too.)

    >>> loader = BatchLoader(x_train, y_train, batch_size=64, seed=0)
    >>> for epoch in range(5):
    ...     for xb, yb in loader:
    ...         ...
    """

    def __init__(self, x, y=None, batch_size: int = 32, shuffle: bool = True,
                 drop_last: bool = False, seed: SeedLike = None,
                 transform: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        fn = "BatchLoader"
        self.x, self.y = _check_xy(x, y, fn)
        self.batch_size = _positive_int("batch_size", batch_size, fn)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if transform is not None and not callable(transform):
            raise TypeError(f"{fn}: transform must be callable or None, got {type(transform).__name__}")
        self.transform = transform
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return _iterate(self.x, self.y, self.batch_size, self.shuffle, self.drop_last,
                        self._rng, self.transform)

    def get_state(self) -> Dict[str, Any]:
        """The shuffling generator's state (``bit_generator.state``, a JSON-serialisable dict)."""
        return _rng_state(self._rng)

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state`."""
        _set_rng_state(self._rng, state, "BatchLoader")

    def __repr__(self) -> str:
        return (f"BatchLoader(n={self.x.shape[0]}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, transform={self.transform!r})")


# ==========================================================================
# preprocessing
# ==========================================================================
class _Preprocessor:
    """Shared machinery: statistics along every axis except axis 1 (channels of
    NCHW images, features of (N, F) tables) or over everything."""

    _stat_names: Tuple[str, ...] = ()

    def __init__(self, per_channel: bool):
        self.per_channel = bool(per_channel)
        self._fitted = False

    # -- helpers ---------------------------------------------------------
    @property
    def _name(self) -> str:
        return type(self).__name__

    def _as_array(self, x, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{self._name}.{what}: expected a numeric array, got dtype {x.dtype}")
        if self.per_channel and x.ndim < 2:
            raise ValueError(f"{self._name}.{what}: per_channel=True needs an array of at least 2 "
                             f"dimensions (N, C, ...) with channels/features on axis 1, got shape {x.shape}")
        return x

    def _axes(self, x: np.ndarray):
        if self.per_channel:
            return (0,) + tuple(range(2, x.ndim))
        return None

    def _check_fitted(self, what: str) -> None:
        if not self._fitted:
            raise RuntimeError(f"{self._name}.{what} called before fit: call fit(x_train) "
                               f"(or load_state_dict) first")

    def _prepare(self, x, what: str):
        """Input array, the dtype to compute in, and a function reshaping a
        fitted statistic so it broadcasts against x."""
        self._check_fitted(what)
        x = self._as_array(x, what)
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
        if self.per_channel:
            c = self._channels
            if x.shape[1] != c:
                raise ValueError(f"{self._name}.{what}: fitted on {c} channels (axis 1), but got an "
                                 f"array of shape {x.shape} with {x.shape[1]}")
            shape = (1, c) + (1,) * (x.ndim - 2)
        else:
            shape = ()
        return x, dtype, (lambda s: np.asarray(s, np.float64).reshape(shape).astype(dtype))

    @property
    def _channels(self) -> int:
        return int(np.asarray(getattr(self, self._stat_names[0])).shape[0])

    # -- public API ------------------------------------------------------
    def fit(self, x):
        """Compute the statistics from ``x`` (the training data only). Returns self."""
        x = self._as_array(x, "fit")
        if x.size == 0:
            raise ValueError(f"{self._name}.fit: x is empty (shape {x.shape})")
        self._fit(x, self._axes(x))
        self._fitted = True
        return self

    def fit_transform(self, x) -> np.ndarray:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def transform(self, x) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def inverse_transform(self, x) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _extra_state(self) -> Dict[str, Any]:
        return {}

    def _load_extra(self, state: Dict[str, Any]) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """The fitted statistics as a dict of float64 ndarrays (0-d when
        ``per_channel=False``) plus floats and the class name (``"type"``), e.g.
        for ``np.savez(path, **scaler.state_dict())``."""
        self._check_fitted("state_dict")
        d: Dict[str, Any] = {"type": self._name}
        for k in self._stat_names:
            d[k] = np.array(getattr(self, k), np.float64)
        d.update(self._extra_state())
        return d

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore statistics saved by :meth:`state_dict` (the object must have
        been created with the same ``per_channel``)."""
        name = self._name
        if not isinstance(state, dict) and not hasattr(state, "keys"):
            raise TypeError(f"{name}.load_state_dict: state must be a dict, got {type(state).__name__}")
        if "type" not in state:
            raise ValueError(f"{name}.load_state_dict: state has no 'type' entry; pass a dict made by state_dict()")
        saved_by = str(np.asarray(state["type"]))
        if saved_by != name:
            raise ValueError(f"{name}.load_state_dict: state was saved by {saved_by}, not {name}")
        missing = [k for k in self._stat_names if k not in state]
        if missing:
            raise ValueError(f"{name}.load_state_dict: state is missing {missing}")
        stats = {k: np.array(state[k], np.float64) for k in self._stat_names}
        for k, v in stats.items():
            want = 1 if self.per_channel else 0
            if v.ndim != want:
                raise ValueError(f"{name}.load_state_dict: {k} has shape {v.shape}, which does not match "
                                 f"per_channel={self.per_channel}; create the object with the per_channel "
                                 f"setting used when it was fitted")
        self._load_extra(state)
        for k, v in stats.items():
            setattr(self, k, v)
        self._fitted = True

    def __repr__(self) -> str:
        status = "fitted" if self._fitted else "not fitted"
        return f"{self._name}(per_channel={self.per_channel}) [{status}]"


class MinMaxScaler(_Preprocessor):
    """Scale values linearly so the training data spans ``feature_range``.

    ``transform(x) = (x - data_min) / (data_max - data_min) * (hi - lo) + lo``
    with ``(lo, hi) = feature_range`` (default ``(0, 1)``). ``data_min`` and
    ``data_max`` come from :meth:`fit`: over the whole array by default, or per
    channel (axis 1: over N, H, W for NCHW images, per feature for (N, F)) with
    ``per_channel=True``. A constant channel (max == min) is only shifted.
    Values outside the training range map outside ``feature_range``.

    >>> scaler = MinMaxScaler()
    >>> x_train01 = scaler.fit_transform(x_train)
    >>> x_test01 = scaler.transform(x_test)      # same min/max as training
    """

    _stat_names = ("data_min", "data_max")

    def __init__(self, feature_range: Tuple[float, float] = (0.0, 1.0), per_channel: bool = False):
        super().__init__(per_channel)
        try:
            lo, hi = feature_range
        except (TypeError, ValueError):
            raise ValueError(f"MinMaxScaler: feature_range must be a pair (min, max), got {feature_range!r}") from None
        lo, hi = _real("feature_range[0]", lo, "MinMaxScaler"), _real("feature_range[1]", hi, "MinMaxScaler")
        if not lo < hi:
            raise ValueError(f"MinMaxScaler: feature_range must have min < max, got {feature_range!r}")
        self.feature_range = (lo, hi)

    def _fit(self, x, axes):
        self.data_min = np.asarray(np.min(x, axis=axes), np.float64)
        self.data_max = np.asarray(np.max(x, axis=axes), np.float64)

    def _scale_offset(self):
        lo, hi = self.feature_range
        rng = self.data_max - self.data_min
        rng = np.where(rng == 0, 1.0, rng)
        scale = (hi - lo) / rng
        return scale, lo - self.data_min * scale

    def transform(self, x) -> np.ndarray:
        """Map ``x`` with the fitted min/max (new array, same float dtype)."""
        x, dtype, b = self._prepare(x, "transform")
        scale, offset = self._scale_offset()
        return x.astype(dtype, copy=False) * b(scale) + b(offset)

    def inverse_transform(self, x) -> np.ndarray:
        """Undo :meth:`transform`."""
        x, dtype, b = self._prepare(x, "inverse_transform")
        scale, offset = self._scale_offset()
        return (x.astype(dtype, copy=False) - b(offset)) / b(scale)

    def _extra_state(self):
        return {"feature_range": np.array(self.feature_range, np.float64)}

    def _load_extra(self, state):
        fr = np.asarray(state.get("feature_range", self.feature_range), np.float64).reshape(-1)
        if fr.shape != (2,) or not fr[0] < fr[1]:
            raise ValueError(f"MinMaxScaler.load_state_dict: bad feature_range {fr!r}")
        self.feature_range = (float(fr[0]), float(fr[1]))


class Center(_Preprocessor):
    """Subtract the training mean: ``transform(x) = x - mean``.

    With ``per_channel=True`` (default) the mean is taken per channel (axis 1:
    over N, H, W for NCHW images; per feature for (N, F) tables), otherwise over
    the whole array.
    """

    _stat_names = ("mean",)

    def __init__(self, per_channel: bool = True):
        super().__init__(per_channel)

    def _fit(self, x, axes):
        self.mean = np.asarray(np.mean(x, axis=axes, dtype=np.float64), np.float64)

    def transform(self, x) -> np.ndarray:
        """Subtract the fitted mean (new array, same float dtype)."""
        x, dtype, b = self._prepare(x, "transform")
        return x.astype(dtype, copy=False) - b(self.mean)

    def inverse_transform(self, x) -> np.ndarray:
        """Add the fitted mean back."""
        x, dtype, b = self._prepare(x, "inverse_transform")
        return x.astype(dtype, copy=False) + b(self.mean)


class Standardize(_Preprocessor):
    """Zero mean, unit variance: ``transform(x) = (x - mean) / (std + eps)``.

    ``std`` is the population standard deviation (``ddof=0``) of the training
    data; ``eps`` (default 1e-7) avoids dividing by zero for constant channels.
    With ``per_channel=True`` (default) the statistics are per channel (axis 1:
    over N, H, W for NCHW images; per feature for (N, F) tables), otherwise over
    the whole array.

    >>> std = Standardize()
    >>> x_train = std.fit_transform(x_train)   # statistics of the training set
    >>> x_test = std.transform(x_test)         # ... applied to the test set
    """

    _stat_names = ("mean", "std")

    def __init__(self, per_channel: bool = True, eps: float = 1e-7):
        super().__init__(per_channel)
        eps = _real("eps", eps, "Standardize")
        if eps < 0:
            raise ValueError(f"Standardize: eps must be >= 0, got {eps!r}")
        self.eps = eps

    def _fit(self, x, axes):
        self.mean = np.asarray(np.mean(x, axis=axes, dtype=np.float64), np.float64)
        self.std = np.asarray(np.std(x, axis=axes, dtype=np.float64), np.float64)

    def transform(self, x) -> np.ndarray:
        """Standardise with the fitted mean and std (new array, same float dtype)."""
        x, dtype, b = self._prepare(x, "transform")
        return (x.astype(dtype, copy=False) - b(self.mean)) / b(self.std + self.eps)

    def inverse_transform(self, x) -> np.ndarray:
        """Undo :meth:`transform`: ``x * (std + eps) + mean``."""
        x, dtype, b = self._prepare(x, "inverse_transform")
        return x.astype(dtype, copy=False) * b(self.std + self.eps) + b(self.mean)

    def _extra_state(self):
        return {"eps": float(self.eps)}

    def _load_extra(self, state):
        if "eps" in state:
            self.eps = float(np.asarray(state["eps"]))

    def __repr__(self) -> str:
        status = "fitted" if self._fitted else "not fitted"
        return f"Standardize(per_channel={self.per_channel}, eps={self.eps!r}) [{status}]"


# ==========================================================================
# augmentation
# ==========================================================================
class _Transform:
    """Base of the random augmentations.

    Every transform owns a :class:`numpy.random.Generator` (from ``seed``) and
    works on a whole NCHW batch at once, drawing independent random parameters
    for each image. ``t(x)`` is ``t.apply(x, t.sample_params(x))``:
    ``sample_params`` draws the per-image parameters (advancing the generator)
    and ``apply`` uses them deterministically, which also lets you apply the
    same random transform to two arrays (e.g. images and masks).
    """

    _needs_float = False

    def __init__(self, seed: SeedLike = None):
        self._rng = np.random.default_rng(seed)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"{self._name} expects a 4-D batch of images (N, C, H, W), got an array "
                             f"of shape {x.shape}; add a batch axis with x[None] for a single image")
        if self._needs_float and x.dtype.kind != "f":
            raise TypeError(f"{self._name} needs floating-point images, got dtype {x.dtype}; "
                            f"convert first, e.g. x.astype(np.float32) / 255")
        return x

    def sample_params(self, x) -> Dict[str, np.ndarray]:  # pragma: no cover - overridden
        raise NotImplementedError

    def apply(self, x, params) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, x) -> np.ndarray:
        x = self._check(x)
        return self.apply(x, self.sample_params(x))

    def get_state(self) -> Dict[str, Any]:
        """The generator's state (``bit_generator.state``, a JSON-serialisable dict)."""
        return _rng_state(self._rng)

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state`."""
        _set_rng_state(self._rng, state, self._name)

    def reseed(self, seed: SeedLike) -> None:
        """Replace the generator with ``np.random.default_rng(seed)``."""
        self._rng = np.random.default_rng(seed)


class Compose:
    """Apply several transforms one after the other: ``Compose([t1, t2])(x) == t2(t1(x))``.

    ``transforms`` may contain any callables mapping a batch to a batch.
    ``get_state()`` / ``set_state()`` save and restore the generators of all the
    children that have them. If ``seed`` is given, every child with a
    ``reseed`` method is reseeded from it (with independent streams), so one
    seed makes the whole pipeline reproducible.

    >>> augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()], seed=0)
    >>> xb_aug = augment(xb)
    """

    def __init__(self, transforms: Sequence[Callable[[np.ndarray], np.ndarray]], seed: SeedLike = None):
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, (list, tuple)):
            raise TypeError(f"Compose: transforms must be a list of callables, got {type(transforms).__name__}")
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] is not callable (got {type(t).__name__})")
        self.transforms = list(transforms)
        if seed is not None:
            self.reseed(seed)

    def __call__(self, x) -> np.ndarray:
        if not self.transforms:
            return np.array(x, copy=True)
        for t in self.transforms:
            x = t(x)
        return x

    def reseed(self, seed: SeedLike) -> None:
        """Reseed every child that can be reseeded from independent streams of ``seed``."""
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(2**63))
        children = np.random.SeedSequence(seed).spawn(len(self.transforms))
        for t, s in zip(self.transforms, children):
            if hasattr(t, "reseed"):
                t.reseed(s)

    def get_state(self) -> Dict[str, Any]:
        """``{"transforms": [state of each child, or None if it has no state]}``."""
        return {"transforms": [t.get_state() if hasattr(t, "get_state") else None
                               for t in self.transforms]}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore a state returned by :meth:`get_state`."""
        if not isinstance(state, dict) or "transforms" not in state:
            raise ValueError("Compose.set_state: state must be a dict returned by Compose.get_state()")
        states = state["transforms"]
        if len(states) != len(self.transforms):
            raise ValueError(f"Compose.set_state: state has {len(states)} entries but this Compose "
                             f"has {len(self.transforms)} transforms")
        for t, s in zip(self.transforms, states):
            if s is not None:
                t.set_state(s)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


# --------------------------------------------------------------------------
# flips
# --------------------------------------------------------------------------
class _RandomFlip(_Transform):
    _axis = -1

    def __init__(self, p: float = 0.5, seed: SeedLike = None):
        super().__init__(seed)
        self.p = _probability(p, self._name)

    def sample_params(self, x):
        """``{"flip": bool array (N,)}``: which images are flipped."""
        return {"flip": self._rng.random(len(x)) < self.p}

    def apply(self, x, params):
        x = self._check(x)
        out = x.copy()
        m = np.asarray(params["flip"], bool)
        if m.any():
            out[m] = np.flip(x[m], axis=self._axis)
        return out

    def __repr__(self) -> str:
        return f"{self._name}(p={self.p})"


class RandomHorizontalFlip(_RandomFlip):
    """Mirror each image left-right with probability ``p`` (default 0.5).

    Works for any dtype. ``p=1`` flips every image (``np.flip(x, axis=3)``),
    ``p=0`` returns an unchanged copy.
    """

    _axis = 3


class RandomVerticalFlip(_RandomFlip):
    """Flip each image upside down with probability ``p`` (default 0.5).

    Works for any dtype. ``p=1`` flips every image (``np.flip(x, axis=2)``).
    """

    _axis = 2


# --------------------------------------------------------------------------
# crop
# --------------------------------------------------------------------------
_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


class RandomCrop(_Transform):
    """Cut a random ``size`` window out of each (optionally padded) image.

    Parameters
    ----------
    size : int or (height, width)
        Output size.
    padding : int, (left/right, top/bottom) or (left, top, right, bottom)
        Border added before cropping (as in torchvision). The classic CIFAR-10
        augmentation is ``RandomCrop(32, padding=4)``: pad to 40x40 and take a
        random 32x32 window, i.e. shift the image by up to 4 pixels.
    padding_mode : 'constant', 'edge', 'reflect' or 'symmetric'
        How the border is filled (NumPy's ``np.pad`` modes); 'constant' uses
        ``fill``.
    fill : float
        Value for ``padding_mode='constant'`` (default 0).

    Works for any dtype. The window position is drawn independently for each
    image, uniformly over all positions.
    """

    def __init__(self, size, padding=0, padding_mode: str = "constant", fill: float = 0.0,
                 seed: SeedLike = None):
        super().__init__(seed)
        name = self._name
        if isinstance(size, (tuple, list)):
            if len(size) != 2:
                raise ValueError(f"{name}: size must be an int or a pair (height, width), got {size!r}")
            size = tuple(size)
        else:
            size = (size, size)
        self.size = tuple(_positive_int("size", s, name) for s in size)

        if isinstance(padding, (tuple, list)):
            if len(padding) == 2:
                lr, tb = padding
                padding = (lr, tb, lr, tb)
            elif len(padding) != 4:
                raise ValueError(f"{name}: padding must be an int or a sequence of 2 or 4 ints, got {padding!r}")
        else:
            padding = (padding,) * 4
        pads = []
        for v in padding:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name}: padding must contain ints, got {padding!r}")
            if v < 0:
                raise ValueError(f"{name}: padding must be >= 0, got {padding!r}")
            pads.append(int(v))
        self.padding = tuple(pads)  # left, top, right, bottom
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.fill = _real("fill", fill, name)

    def _padded_hw(self, x):
        left, top, right, bottom = self.padding
        H, W = x.shape[2] + top + bottom, x.shape[3] + left + right
        h, w = self.size
        if h > H or w > W:
            raise ValueError(f"{self._name}: crop size {self.size} is larger than the padded image "
                             f"({H}, {W}) (input shape {x.shape}, padding {self.padding})")
        return H, W

    def sample_params(self, x):
        """``{"top": (N,), "left": (N,)}``: window corners in the padded image."""
        H, W = self._padded_hw(x)
        h, w = self.size
        n = len(x)
        top = self._rng.integers(0, H - h + 1, size=n)
        left = self._rng.integers(0, W - w + 1, size=n)
        return {"top": top, "left": left}

    def apply(self, x, params):
        x = self._check(x)
        self._padded_hw(x)
        left, top, right, bottom = self.padding
        if any(self.padding):
            pw = ((0, 0), (0, 0), (top, bottom), (left, right))
            if self.padding_mode == "constant":
                xp = np.pad(x, pw, mode="constant", constant_values=self.fill)
            else:
                xp = np.pad(x, pw, mode=self.padding_mode)
        else:
            xp = x
        h, w = self.size
        # windows[n, c, i, j] is the h x w window with corner (i, j): a view, no copy.
        windows = np.lib.stride_tricks.sliding_window_view(xp, (h, w), axis=(2, 3))
        n = np.arange(len(x))
        # advanced indices on axes 0, 2, 3 -> result (N, C, h, w), a new array
        return windows[n, :, np.asarray(params["top"]), np.asarray(params["left"])]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding}, padding_mode={self.padding_mode!r})"


# --------------------------------------------------------------------------
# affine transforms (rotation, translation, scaling)
# --------------------------------------------------------------------------
def _grid_sample(x: np.ndarray, xs: np.ndarray, ys: np.ndarray, mode: str, fill: float) -> np.ndarray:
    """Sample ``x`` (N, C, H, W) at source pixel coordinates ``xs``, ``ys``
    (N, Ho, Wo; column and row, pixel centres at integers). Points outside the
    image read ``fill``; bilinear interpolation blends the four neighbours,
    each neighbour outside the image counting as ``fill``."""
    N, C, H, W = x.shape
    Ho, Wo = xs.shape[1:]
    dtype = x.dtype
    flat = x.reshape(N, C, H * W)

    def gather(yi, xi):
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        idx = (np.clip(yi, 0, H - 1) * W + np.clip(xi, 0, W - 1)).reshape(N, 1, Ho * Wo)
        # idx broadcasts over the channel axis: one gather for all channels
        return np.take_along_axis(flat, idx, axis=2).reshape(N, C, Ho, Wo), inside

    if mode == "nearest":
        vals, inside = gather(np.floor(ys + 0.5).astype(np.intp), np.floor(xs + 0.5).astype(np.intp))
        m = inside[:, None]
        return np.where(m, vals, np.asarray(fill, dtype)).astype(dtype, copy=False)

    x0f, y0f = np.floor(xs), np.floor(ys)
    wx1, wy1 = xs - x0f, ys - y0f
    wx0, wy0 = 1.0 - wx1, 1.0 - wy1
    x0, y0 = x0f.astype(np.intp), y0f.astype(np.intp)
    out = np.zeros((N, C, Ho, Wo), dtype)
    covered = np.zeros((N, Ho, Wo), np.float64)
    for yi, wy in ((y0, wy0), (y0 + 1, wy1)):
        for xi, wx in ((x0, wx0), (x0 + 1, wx1)):
            w = wy * wx
            if not w.any():
                continue
            vals, inside = gather(yi, xi)
            w = np.where(inside, w, 0.0)
            covered += w
            out += vals * w[:, None].astype(dtype)
    if fill != 0:
        out += (1.0 - covered)[:, None].astype(dtype) * np.asarray(fill, dtype)
    return out


def _range(name: str, v, owner: str, *, symmetric: bool, lo_min: Optional[float] = None) -> Tuple[float, float]:
    """A number d -> (-d, d) (symmetric) or a pair (lo, hi) with lo <= hi."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{owner}: {name} must be a number or a pair (min, max), got {v!r}")
        lo, hi = _real(name, v[0], owner), _real(name, v[1], owner)
        if lo > hi:
            raise ValueError(f"{owner}: {name} must have min <= max, got {v!r}")
    else:
        d = _real(name, v, owner)
        if d < 0:
            raise ValueError(f"{owner}: {name} must be >= 0 when given as a single number, got {v!r}")
        lo, hi = (-d, d) if symmetric else (d, d)
    if lo_min is not None and lo < lo_min:
        raise ValueError(f"{owner}: {name} must be >= {lo_min}, got {v!r}")
    return lo, hi


class RandomAffine(_Transform):
    """Random rotation, translation and scaling about the image centre.

    Parameters
    ----------
    degrees : number or (min, max)
        Rotation angle range in degrees; a number ``d`` means ``(-d, d)``.
        Positive angles rotate counter-clockwise, as in torchvision.
    translate : (fx, fy) or None
        Maximum shift as a fraction of the width and height: the shift is drawn
        uniformly from ``[-fx*W, fx*W]`` x ``[-fy*H, fy*H]`` and rounded to whole
        pixels, as in torchvision. Positive shifts move content right/down.
    scale : (min, max) or None
        Zoom factor range (> 0); 2 magnifies, 0.5 shrinks.
    interpolation : 'bilinear' (default) or 'nearest'
    fill : float
        Value for the area uncovered by the transform (default 0).

    Each image gets its own parameters. The output pixel at ``p`` (relative to
    the centre ``((W-1)/2, (H-1)/2)``) reads the input at
    ``R(-angle) (p - t) / scale``, interpolated bilinearly from the four nearest
    pixels; pixels outside the input count as ``fill``. A rotation by 90 degrees
    of a square image therefore equals ``np.rot90(x, 1, axes=(2, 3))``, and
    ``degrees=0`` with no translation or scaling returns the input unchanged.
    Needs floating-point images.
    """

    _needs_float = True

    def __init__(self, degrees=0, translate: Optional[Tuple[float, float]] = None,
                 scale: Optional[Tuple[float, float]] = None, interpolation: str = "bilinear",
                 fill: float = 0.0, seed: SeedLike = None):
        super().__init__(seed)
        name = self._name
        self.degrees = _range("degrees", degrees, name, symmetric=True)
        if translate is not None:
            if not isinstance(translate, (tuple, list)) or len(translate) != 2:
                raise ValueError(f"{name}: translate must be a pair (fx, fy) of fractions, got {translate!r}")
            tr = tuple(_real("translate", t, name) for t in translate)
            if not all(0.0 <= t <= 1.0 for t in tr):
                raise ValueError(f"{name}: translate fractions must be in [0, 1], got {translate!r}")
            translate = tr
        self.translate = translate
        if scale is not None:
            if not isinstance(scale, (tuple, list)) or len(scale) != 2:
                raise ValueError(f"{name}: scale must be a pair (min, max), got {scale!r}")
            scale = _range("scale", scale, name, symmetric=False)
            if scale[0] <= 0:
                raise ValueError(f"{name}: scale factors must be > 0, got {scale!r}")
        self.scale = scale
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"{name}: interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation = interpolation
        self.fill = _real("fill", fill, name)

    def sample_params(self, x):
        """``{"angle": (N,) degrees, "translate": (N, 2) whole pixels (x, y), "scale": (N,)}``."""
        n = len(x)
        H, W = np.shape(x)[2:4]
        lo, hi = self.degrees
        angle = self._rng.uniform(lo, hi, size=n) if hi > lo else np.full(n, lo)
        if self.translate is not None:
            mx, my = self.translate[0] * W, self.translate[1] * H
            t = np.round(self._rng.uniform(-1.0, 1.0, size=(n, 2)) * [mx, my])
        else:
            t = np.zeros((n, 2))
        if self.scale is not None:
            slo, shi = self.scale
            s = self._rng.uniform(slo, shi, size=n) if shi > slo else np.full(n, slo)
        else:
            s = np.ones(n)
        return {"angle": angle, "translate": t, "scale": s}

    def apply(self, x, params):
        x = self._check(x)
        N, _, H, W = x.shape
        angle = np.deg2rad(np.asarray(params["angle"], np.float64)).reshape(N, 1, 1)
        t = np.asarray(params["translate"], np.float64).reshape(N, 2)
        s = np.asarray(params["scale"], np.float64).reshape(N, 1, 1)
        cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
        # output pixel coordinates relative to the centre (y points down)
        xo = (np.arange(W) - cx)[None, None, :] - t[:, 0, None, None]
        yo = (np.arange(H) - cy)[None, :, None] - t[:, 1, None, None]
        c, sn = np.cos(angle), np.sin(angle)
        # inverse of "rotate counter-clockwise on screen, then scale": R(-angle) / scale
        xs = (c * xo - sn * yo) / s + cx
        ys = (sn * xo + c * yo) / s + cy
        # snap coordinates within rounding error of a pixel centre, so exact
        # rotations by multiples of 90 degrees and integer shifts are exact
        for g in (xs, ys):
            r = np.round(g)
            close = np.abs(g - r) < 1e-9
            g[close] = r[close]
        return _grid_sample(x, xs, ys, self.interpolation, self.fill)

    def __repr__(self) -> str:
        return (f"{self._name}(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
                f"interpolation={self.interpolation!r})")


class RandomRotation(RandomAffine):
    """Rotate each image by a random angle from ``degrees`` (a number ``d`` means
    ``(-d, d)``); positive angles are counter-clockwise, as in torchvision.
    Rotation is about the image centre; corners that come from outside the image
    are filled with ``fill`` (default 0). See :class:`RandomAffine`.

    >>> RandomRotation(15)          # angles uniform in [-15, 15]
    >>> RandomRotation((90, 90))    # always 90 degrees counter-clockwise
    """

    def __init__(self, degrees, interpolation: str = "bilinear", fill: float = 0.0, seed: SeedLike = None):
        super().__init__(degrees=degrees, interpolation=interpolation, fill=fill, seed=seed)


class RandomTranslation(RandomAffine):
    """Shift each image by up to ``translate = (fx, fy)`` of its width and height
    (whole pixels, zero fill). See :class:`RandomAffine`.

    >>> RandomTranslation((0.125, 0.125))   # up to 4 pixels on 32x32 images
    """

    def __init__(self, translate: Tuple[float, float], fill: float = 0.0, seed: SeedLike = None):
        super().__init__(translate=translate, fill=fill, seed=seed)


class RandomScale(RandomAffine):
    """Zoom each image about its centre by a factor drawn from ``scale = (min, max)``
    (bilinear interpolation, zero fill). See :class:`RandomAffine`.

    >>> RandomScale((0.9, 1.1))
    """

    def __init__(self, scale: Tuple[float, float], interpolation: str = "bilinear", fill: float = 0.0,
                 seed: SeedLike = None):
        super().__init__(scale=scale, interpolation=interpolation, fill=fill, seed=seed)


# --------------------------------------------------------------------------
# pixel-value transforms
# --------------------------------------------------------------------------
class GaussianNoise(_Transform):
    """Add independent normal noise ``N(mean, std**2)`` to every pixel.

    Each image is noised with probability ``p`` (default 1: all of them).
    ``clip=(lo, hi)`` clips the noised images (e.g. ``(0, 1)``), default none.
    ``std=0`` returns the input unchanged. Needs floating-point images; the noise
    is drawn in the input's precision (float32 noise for float32 images).
    """

    _needs_float = True

    def __init__(self, std: float, p: float = 1.0, mean: float = 0.0,
                 clip: Optional[Tuple[float, float]] = None, seed: SeedLike = None):
        super().__init__(seed)
        name = self._name
        self.std = _real("std", std, name)
        if self.std < 0:
            raise ValueError(f"{name}: std must be >= 0, got {std!r}")
        self.mean = _real("mean", mean, name)
        self.p = _probability(p, name)
        if clip is not None:
            clip = _range("clip", clip, name, symmetric=False)
        self.clip = clip

    def sample_params(self, x):
        """``{"apply": bool (N,), "noise": standard normal array shaped like x}``."""
        x = np.asarray(x)
        gen = np.float64 if x.dtype == np.float64 else np.float32
        m = self._rng.random(len(x)) < self.p
        z = self._rng.standard_normal(x.shape, dtype=gen)
        return {"apply": m, "noise": z}

    def apply(self, x, params):
        x = self._check(x)
        if self.std == 0 and self.mean == 0 and self.clip is None:
            return x.copy()
        dt = x.dtype
        z = np.asarray(params["noise"]).astype(dt, copy=False)
        noisy = x + (z * dt.type(self.std) + dt.type(self.mean))
        if self.clip is not None:
            noisy = np.clip(noisy, dt.type(self.clip[0]), dt.type(self.clip[1]))
        m = np.asarray(params["apply"], bool).reshape(-1, 1, 1, 1)
        return np.where(m, noisy, x)

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std}, p={self.p})"


_GRAY = (0.299, 0.587, 0.114)


class ColorJitter(_Transform):
    """Randomly change brightness, contrast and saturation (torchvision's definitions).

    Each argument is a number ``v >= 0``, meaning factors drawn uniformly from
    ``[max(0, 1 - v), 1 + v]``, or a pair ``(min, max)`` of factors; 0 (the
    default) disables that adjustment. For each image with factor ``f``:

    * brightness: ``x * f``
    * contrast:   ``f * x + (1 - f) * mean(gray(x))``  (one mean per image)
    * saturation: ``f * x + (1 - f) * gray(x)``        (per pixel)

    where ``gray = 0.299 R + 0.587 G + 0.114 B`` for 3-channel images and the
    image itself for 1-channel images (saturation is then a no-op). They are
    applied in this fixed order (torchvision picks a random order per image).
    torchvision also clamps to [0, 1]; pass ``clip=(0, 1)`` for that, the
    default does not clip (so it also works on standardised images). Contrast
    and saturation need 1 or 3 channels; brightness works for any number.
    Needs floating-point images.
    """

    _needs_float = True

    def __init__(self, brightness=0, contrast=0, saturation=0,
                 clip: Optional[Tuple[float, float]] = None, seed: SeedLike = None):
        super().__init__(seed)
        name = self._name
        self.brightness = self._factor_range("brightness", brightness)
        self.contrast = self._factor_range("contrast", contrast)
        self.saturation = self._factor_range("saturation", saturation)
        if clip is not None:
            clip = _range("clip", clip, name, symmetric=False)
        self.clip = clip

    def _factor_range(self, name, v):
        if isinstance(v, (tuple, list)):
            lo, hi = _range(name, v, self._name, symmetric=False)
            if lo < 0:
                raise ValueError(f"{self._name}: {name} factors must be >= 0, got {v!r}")
        else:
            d = _real(name, v, self._name)
            if d < 0:
                raise ValueError(f"{self._name}: {name} must be >= 0, got {v!r}")
            lo, hi = max(0.0, 1.0 - d), 1.0 + d
        return None if lo == hi == 1.0 else (lo, hi)

    def sample_params(self, x):
        """``{"brightness", "contrast", "saturation"}``: factors (N,), or None when disabled."""
        n = len(x)
        out = {}
        for k in ("brightness", "contrast", "saturation"):
            r = getattr(self, k)
            out[k] = None if r is None else self._rng.uniform(r[0], r[1], size=n)
        return out

    def _check(self, x):
        x = super()._check(x)
        if (self.contrast is not None or self.saturation is not None) and x.shape[1] not in (1, 3):
            raise ValueError(f"ColorJitter: contrast and saturation need 1 or 3 channels, got an array "
                             f"of shape {x.shape} ({x.shape[1]} channels)")
        return x

    @staticmethod
    def _gray(x):
        if x.shape[1] == 1:
            return x
        w = np.asarray(_GRAY, x.dtype).reshape(1, 3, 1, 1)
        return np.sum(x * w, axis=1, keepdims=True)

    def apply(self, x, params):
        x = self._check(x)
        dt = x.dtype

        def f(v):
            return np.asarray(v, np.float64).reshape(-1, 1, 1, 1).astype(dt)

        out = x.copy()
        if params.get("brightness") is not None:
            out = out * f(params["brightness"])
        if params.get("contrast") is not None:
            k = f(params["contrast"])
            m = np.mean(self._gray(out), axis=(1, 2, 3), keepdims=True, dtype=np.float64).astype(dt)
            out = k * out + (1 - k) * m
        if params.get("saturation") is not None and x.shape[1] == 3:
            k = f(params["saturation"])
            out = k * out + (1 - k) * self._gray(out)
        if self.clip is not None:
            out = np.clip(out, dt.type(self.clip[0]), dt.type(self.clip[1]))
        return out

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation})")
