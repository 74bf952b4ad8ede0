"""Classification metrics on NumPy arrays.

Pure NumPy, fully vectorised (no per-sample Python loops), and with the same
definitions and conventions as :mod:`sklearn.metrics`, so numbers computed here
can be compared directly with numbers computed there.

Conventions
-----------
* Class labels are integers ``0 .. C-1`` held in a 1-D array of shape ``(N,)``.
  Integer and boolean arrays are accepted, as are float arrays whose values are
  all whole numbers (e.g. labels read back from a CSV file). Anything else
  raises :class:`TypeError`; negative labels or labels ``>= num_classes`` raise
  :class:`ValueError`.
* Wherever a prediction is expected, either predicted labels ``(N,)`` or
  per-class scores ``(N, C)`` (logits or probabilities) may be passed; scores
  are reduced to labels with ``argmax`` over axis 1 (ties go to the lowest
  class index, as with :func:`numpy.argmax`). Scores must not contain NaN.
* Confusion matrices have rows = true class and columns = predicted class
  (the scikit-learn convention).
* Error messages name the offending argument and the value or shape received.

The :func:`get_metric` registry maps short names (``'accuracy'``, ``'top5'``,
``'f1'`` ...) to ``fn(y_true, scores) -> float`` callables for training loops.
"""
from __future__ import annotations

import numbers
import re
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "accuracy",
    "top_k_accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "classification_report",
    "classification_report_dict",
    "get_metric",
    "available_metrics",
]

MetricFn = Callable[[np.ndarray, np.ndarray], float]

_AVERAGES = ("macro", "micro", "weighted", None)


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

def _check_num_classes(num_classes, name: str = "num_classes") -> Optional[int]:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(
            f"{name} must be an int or None, got {type(num_classes).__name__} {num_classes!r}"
        )
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"{name} must be >= 1, got {num_classes}")
    return num_classes


def _check_labels(labels, name: str, num_classes: Optional[int] = None) -> np.ndarray:
    """Validate a 1-D array of integer class labels and return it as int64."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of integer class labels of shape (N,), "
            f"got an array of shape {arr.shape}"
        )
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.int64)
    elif kind == "u":
        if arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} contains label {arr.max().item()} which does not fit in int64")
        arr = arr.astype(np.int64)
    elif kind == "i":
        arr = arr.astype(np.int64, copy=False)
    elif kind == "f":
        finite = np.isfinite(arr)
        whole = finite & (arr == np.round(np.where(finite, arr, 0)))
        if not whole.all():
            bad = arr[np.argmin(whole)].item()
            raise TypeError(
                f"{name} must hold integer class labels, got non-integer value {bad!r} "
                f"(dtype {arr.dtype})"
            )
        arr = arr.astype(np.int64)
    else:
        raise TypeError(
            f"{name} must hold integer class labels, got an array of dtype {arr.dtype}"
        )
    if arr.size:
        lo = arr.min()
        if lo < 0:
            raise ValueError(
                f"{name} contains negative label {int(lo)}; class labels must be >= 0"
            )
        if num_classes is not None:
            hi = arr.max()
            if hi >= num_classes:
                raise ValueError(
                    f"{name} contains label {int(hi)} but num_classes={num_classes} "
                    f"(labels must be in [0, {num_classes - 1}])"
                )
    return arr


def _check_scores(scores, name: str) -> np.ndarray:
    """Validate an (N, C) score/logit/probability array."""
    arr = np.asarray(scores)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of per-class scores of shape (N, C), "
            f"got an array of shape {arr.shape}"
        )
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numeric scores, got an array of dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class column, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        bad = np.argwhere(np.isnan(arr))[0]
        raise ValueError(f"{name} contains NaN (first at row {int(bad[0])}, column {int(bad[1])})")
    return arr


def _check_same_length(y_true: np.ndarray, other: np.ndarray, other_name: str) -> None:
    if y_true.shape[0] != other.shape[0]:
        raise ValueError(
            f"y_true and {other_name} have different numbers of samples: y_true has "
            f"{y_true.shape[0]} (shape {y_true.shape}), {other_name} has {other.shape[0]} "
            f"(shape {other.shape})"
        )


def _check_nonempty(y_true: np.ndarray, func: str) -> None:
    if y_true.shape[0] == 0:
        raise ValueError(f"{func}: y_true is empty (shape {y_true.shape}); the metric is undefined")


def _pred_labels(y_pred, name: str, num_classes: Optional[int]) -> Tuple[np.ndarray, Optional[int]]:
    """Turn labels (N,) or scores (N, C) into labels; also return C from the scores."""
    arr = np.asarray(y_pred)
    if arr.ndim == 2:
        scores = _check_scores(arr, name)
        c = scores.shape[1]
        if num_classes is not None and c != num_classes:
            raise ValueError(
                f"{name} has {c} score columns (shape {scores.shape}) but num_classes={num_classes}"
            )
        return np.argmax(scores, axis=1).astype(np.int64), c
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be predicted labels of shape (N,) or scores of shape (N, C), "
            f"got an array of shape {arr.shape}"
        )
    return _check_labels(arr, name, num_classes), num_classes


def _labels_pair(y_true, y_pred, num_classes, pred_name: str = "y_pred"):
    """Validate (y_true, y_pred) and return (t, p, C) with C the number of classes."""
    num_classes = _check_num_classes(num_classes)
    p, c = _pred_labels(y_pred, pred_name, num_classes)
    t = _check_labels(y_true, "y_true", c)
    _check_same_length(t, p, pred_name)
    if c is None:
        c = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    return t, p, c


def _check_zero_division(zero_division) -> float:
    if isinstance(zero_division, bool) or not isinstance(zero_division, numbers.Real):
        raise TypeError(
            f"zero_division must be a number in [0, 1] or nan, got "
            f"{type(zero_division).__name__} {zero_division!r}"
        )
    z = float(zero_division)
    if not (np.isnan(z) or 0.0 <= z <= 1.0):
        raise ValueError(f"zero_division must be in [0, 1] or nan, got {zero_division!r}")
    return z


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

def accuracy(y_true, y_pred_or_scores) -> float:
    """Fraction of samples whose predicted class equals the true class.

    Parameters
    ----------
    y_true : array of int, shape (N,)
        True class labels.
    y_pred_or_scores : array, shape (N,) or (N, C)
        Predicted labels, or per-class scores/logits/probabilities, in which
        case the prediction is ``argmax`` over axis 1 (ties: lowest index), and
        every label in ``y_true`` must be ``< C``.

    Returns
    -------
    float
        Accuracy in [0, 1]. Raises :class:`ValueError` for empty input.
    """
    t, p, _ = _labels_pair(y_true, y_pred_or_scores, None, "y_pred_or_scores")
    _check_nonempty(t, "accuracy")
    return float(np.count_nonzero(t == p) / t.shape[0])


def top_k_accuracy(y_true, scores, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Ties are broken deterministically by class index: classes are ranked by
    score, highest first, and among equal scores the **lower class index ranks
    first** (the same rule as :func:`numpy.argmax`, so ``k=1`` always equals
    :func:`accuracy` on the same scores). Concretely, a sample counts as correct
    when ``#{j : s_j > s_true} + #{j < true : s_j == s_true} < k``.
    (scikit-learn's ``top_k_accuracy_score`` breaks ties the other way, towards
    the higher index; without ties both agree exactly.)

    Parameters
    ----------
    y_true : array of int, shape (N,)
        True class labels, each ``< C``.
    scores : array, shape (N, C)
        Per-class scores, logits or probabilities (no NaN; ``+-inf`` allowed).
    k : int
        Number of top-ranked classes that count as a hit, ``1 <= k <= C``.

    Returns
    -------
    float
        Top-k accuracy in [0, 1].
    """
    s = _check_scores(scores, "scores")
    n, c = s.shape
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__} {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if k > c:
        raise ValueError(
            f"k={k} is larger than the number of classes C={c} in scores (shape {s.shape})"
        )
    t = _check_labels(y_true, "y_true", c)
    _check_same_length(t, s, "scores")
    _check_nonempty(t, "top_k_accuracy")
    true_score = s[np.arange(n), t][:, None]
    ahead = (s > true_score) | ((s == true_score) & (np.arange(c)[None, :] < t[:, None]))
    rank = np.count_nonzero(ahead, axis=1)
    return float(np.count_nonzero(rank < k) / n)


def confusion_matrix(y_true, y_pred, num_classes: Optional[int] = None) -> np.ndarray:
    """Confusion matrix ``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``.

    Rows are true classes and columns predicted classes (scikit-learn's
    convention), so ``cm.sum(1)`` is the per-class support and ``cm.sum(0)`` the
    number of predictions per class.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_pred : array, shape (N,) labels or (N, C) scores (argmax is taken)
    num_classes : int, optional
        Size ``C`` of the matrix. Defaults to the number of score columns when
        scores are given, else ``max(y_true.max(), y_pred.max()) + 1``
        (``0`` for empty input). Labels ``>= num_classes`` raise ValueError.

    Returns
    -------
    numpy.ndarray of int64, shape (C, C)
    """
    t, p, c = _labels_pair(y_true, y_pred, num_classes)
    counts = np.bincount(t * c + p, minlength=c * c)
    return counts.reshape(c, c).astype(np.int64, copy=False)


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, zero_division, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanaverage(a: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """Average ignoring NaN entries (as scikit-learn does); NaN if nothing is left."""
    mask = ~np.isnan(a)
    if not mask.any():
        return float("nan")
    a = a[mask]
    if weights is None:
        return float(a.mean())
    w = np.asarray(weights, dtype=np.float64)[mask]
    if w.sum() == 0:
        return float(a.mean())
    return float(np.average(a, weights=w))


def _prf_from_cm(cm: np.ndarray, zero_division: float):
    tp = np.diag(cm).astype(np.float64)
    pred_sum = cm.sum(axis=0).astype(np.float64)
    true_sum = cm.sum(axis=1).astype(np.float64)
    precision = _divide(tp, pred_sum, zero_division)
    recall = _divide(tp, true_sum, zero_division)
    f1 = _divide(2.0 * tp, pred_sum + true_sum, zero_division)
    return precision, recall, f1, tp, pred_sum, true_sum


def precision_recall_f1(
    y_true,
    y_pred,
    average: Optional[str] = "macro",
    num_classes: Optional[int] = None,
    zero_division: float = 0.0,
):
    """Precision, recall and F1 score, matching ``sklearn.metrics.precision_recall_fscore_support``.

    Per class ``c``: precision = TP/(TP+FP), recall = TP/(TP+FN),
    F1 = 2·TP/(2·TP+FP+FN). When a denominator is zero (a class that is never
    predicted, for precision; never present, for recall; neither, for F1) the
    value is ``zero_division`` instead.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_pred : array, shape (N,) labels or (N, C) scores (argmax is taken)
    average : {'macro', 'micro', 'weighted', None}
        * ``'macro'``: unweighted mean over classes.
        * ``'weighted'``: mean over classes weighted by support (true count).
        * ``'micro'``: from global TP/FP/FN counts; for single-label
          multiclass data all three equal the accuracy.
        * ``None``: per-class arrays of length ``C``.

        The averages run over the classes that occur in ``y_true`` or
        ``y_pred`` (scikit-learn's default when ``labels`` is not given); a
        class that occurs in neither has no defined precision or recall and is
        left out. If ``zero_division`` is NaN, NaN entries are left out of the
        averages too (as in scikit-learn).
    num_classes : int, optional
        Number of classes ``C`` (length of the per-class arrays); defaults as
        in :func:`confusion_matrix`.
    zero_division : float
        Value in [0, 1] or NaN used where a ratio is 0/0.

    Returns
    -------
    (precision, recall, f1)
        Three Python floats, or three float64 arrays of shape (C,) when
        ``average is None`` (index = class label; classes absent from both
        inputs get ``zero_division``).
    """
    if average not in _AVERAGES:
        raise ValueError(
            f"average must be one of 'macro', 'micro', 'weighted' or None, got {average!r}"
        )
    zd = _check_zero_division(zero_division)
    t, p, c = _labels_pair(y_true, y_pred, num_classes)
    _check_nonempty(t, "precision_recall_f1")
    cm = np.bincount(t * c + p, minlength=c * c).reshape(c, c)
    precision, recall, f1, tp, pred_sum, true_sum = _prf_from_cm(cm, zd)
    if average is None:
        return precision, recall, f1
    if average == "micro":
        tp_all, pred_all, true_all = tp.sum(), pred_sum.sum(), true_sum.sum()
        p_ = _divide(np.array([tp_all]), np.array([pred_all]), zd)[0]
        r_ = _divide(np.array([tp_all]), np.array([true_all]), zd)[0]
        f_ = _divide(np.array([2.0 * tp_all]), np.array([pred_all + true_all]), zd)[0]
        return float(p_), float(r_), float(f_)
    present = (pred_sum + true_sum) > 0
    weights = true_sum[present] if average == "weighted" else None
    return (
        _nanaverage(precision[present], weights),
        _nanaverage(recall[present], weights),
        _nanaverage(f1[present], weights),
    )


def classification_report_dict(
    y_true,
    y_pred,
    class_names: Optional[Sequence[str]] = None,
    zero_division: float = 0.0,
) -> Dict[str, object]:
    """Per-class and averaged metrics as a dict, in the layout of scikit-learn's ``output_dict=True``.

    Returns ``{name: {'precision', 'recall', 'f1-score', 'support'}, ...,
    'accuracy': float, 'macro avg': {...}, 'weighted avg': {...}}`` with one
    entry per class that occurs in ``y_true`` or ``y_pred`` (in label order).
    Class entries are keyed by ``class_names[label]`` if given, else by
    ``str(label)``. Support values are floats, as in scikit-learn.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_pred : array, shape (N,) labels or (N, C) scores (argmax is taken)
    class_names : sequence of str, optional
        Names indexed by label; must cover every label that occurs.
    zero_division : float
        See :func:`precision_recall_f1`.
    """
    zd = _check_zero_division(zero_division)
    t, p, c = _labels_pair(y_true, y_pred, None)
    _check_nonempty(t, "classification_report")
    names = _class_names(class_names, c)
    cm = np.bincount(t * c + p, minlength=c * c).reshape(c, c)
    precision, recall, f1, tp, pred_sum, true_sum = _prf_from_cm(cm, zd)
    present = np.flatnonzero((pred_sum + true_sum) > 0)
    out: Dict[str, object] = {}
    for i in present.tolist():  # one entry per class (bounded by C, not N)
        out[names[i]] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1-score": float(f1[i]),
            "support": float(true_sum[i]),
        }
    n = float(t.shape[0])
    out["accuracy"] = float(tp.sum() / n)
    for avg, w in (("macro avg", None), ("weighted avg", true_sum[present])):
        out[avg] = {
            "precision": _nanaverage(precision[present], w),
            "recall": _nanaverage(recall[present], w),
            "f1-score": _nanaverage(f1[present], w),
            "support": n,
        }
    return out


def classification_report(
    y_true,
    y_pred,
    class_names: Optional[Sequence[str]] = None,
    digits: int = 3,
    zero_division: float = 0.0,
) -> str:
    """Text table of per-class precision, recall, F1 and support plus accuracy and averages.

    The layout is character-for-character that of
    ``sklearn.metrics.classification_report`` (with the same ``digits``)::

                      precision    recall  f1-score   support

                 cat      0.500     1.000     0.667         1
                 ...
            accuracy                          0.600         5
           macro avg      0.500     0.556     0.489         5
        weighted avg      0.700     0.600     0.613         5

    Rows are the classes that occur in ``y_true`` or ``y_pred``; ``macro avg``
    is the plain mean of those rows and ``weighted avg`` their mean weighted by
    support. See :func:`classification_report_dict` for the parameters.
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"digits must be a non-negative int, got {digits!r}")
    d = classification_report_dict(y_true, y_pred, class_names, zero_division)
    avg_names = ("accuracy", "macro avg", "weighted avg")
    class_rows = [(k, v) for k, v in d.items() if k not in avg_names]
    headers = ["precision", "recall", "f1-score", "support"]
    width = max([len(k) for k, _ in class_rows] + [len("weighted avg"), digits])
    head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    report = head_fmt.format("", *headers, width=width) + "\n\n"
    for name, r in class_rows:
        report += row_fmt.format(
            name, r["precision"], r["recall"], r["f1-score"], int(r["support"]),
            width=width, digits=digits,
        )
    report += "\n"
    n = int(d["macro avg"]["support"])
    acc_fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
    report += acc_fmt.format("accuracy", "", "", d["accuracy"], n, width=width, digits=digits)
    for avg in ("macro avg", "weighted avg"):
        r = d[avg]
        report += row_fmt.format(
            avg, r["precision"], r["recall"], r["f1-score"], n, width=width, digits=digits
        )
    return report


def _class_names(class_names, c: int):
    if class_names is None:
        return [str(i) for i in range(c)]
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of names, got a single str")
    names = [str(n) for n in class_names]
    if len(names) < c:
        raise ValueError(
            f"class_names has {len(names)} names but the labels go up to {c - 1} "
            f"(need at least {c})"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names contains duplicate names: {names}")
    return names


# --------------------------------------------------------------------------
# registry for training loops
# --------------------------------------------------------------------------

def _top_k(k: int) -> MetricFn:
    def fn(y_true, scores):
        return top_k_accuracy(y_true, scores, k=k)
    fn.__name__ = f"top{k}"
    return fn


def _prf_metric(index: int, name: str) -> MetricFn:
    def fn(y_true, scores):
        return precision_recall_f1(y_true, scores, average="macro")[index]
    fn.__name__ = name
    return fn


def _accuracy_metric(y_true, scores) -> float:
    return accuracy(y_true, scores)


_accuracy_metric.__name__ = "accuracy"


# alias -> canonical name
_ALIASES = {
    "accuracy": "accuracy",
    "acc": "accuracy",
    "top_k_accuracy": "top5",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
}

_BUILDERS: Dict[str, Callable[[], MetricFn]] = {
    "accuracy": lambda: _accuracy_metric,
    "precision": lambda: _prf_metric(0, "precision"),
    "recall": lambda: _prf_metric(1, "recall"),
    "f1": lambda: _prf_metric(2, "f1"),
}

_TOPK = re.compile(r"top_?(\d+)(?:_accuracy)?")


def available_metrics() -> Tuple[str, ...]:
    """Names accepted by :func:`get_metric` (``top<k>`` stands for any k >= 1)."""
    return ("accuracy", "acc", "top5", "top3", "top<k>", "top_k_accuracy", "precision", "recall", "f1")


def get_metric(name_or_callable: Union[str, MetricFn]) -> Tuple[str, MetricFn]:
    """Resolve a metric for a training loop to ``(name, fn)`` with ``fn(y_true, scores) -> float``.

    Known names (case-insensitive), with the canonical name returned:

    * ``'accuracy'`` / ``'acc'`` -> ``'accuracy'``: :func:`accuracy` (argmax of scores)
    * ``'top5'`` / ``'top_k_accuracy'`` -> ``'top5'``: :func:`top_k_accuracy` with k=5;
      ``'top3'`` -> ``'top3'`` and generally ``'top<k>'`` -> ``'top<k>'``
    * ``'precision'``, ``'recall'``, ``'f1'``: macro averages of
      :func:`precision_recall_f1` on ``argmax(scores)``

    A callable is passed through unchanged with its ``__name__`` (for a
    :func:`functools.partial`, the wrapped function's name). Unknown names
    raise :class:`ValueError` listing the known ones.
    """
    if callable(name_or_callable):
        fn = name_or_callable
        name = getattr(fn, "__name__", None)
        if name is None and hasattr(fn, "func"):  # functools.partial
            name = getattr(fn.func, "__name__", None)
        if name is None:
            name = type(fn).__name__
        return str(name), fn
    if not isinstance(name_or_callable, str):
        raise TypeError(
            f"metric must be a name (str) or a callable fn(y_true, scores) -> float, got "
            f"{type(name_or_callable).__name__} {name_or_callable!r}"
        )
    key = name_or_callable.strip().lower()
    canonical = _ALIASES.get(key)
    if canonical is None:
        m = _TOPK.fullmatch(key)
        if m is not None and int(m.group(1)) >= 1:
            canonical = f"top{int(m.group(1))}"
    if canonical is None:
        raise ValueError(
            f"unknown metric {name_or_callable!r}; known metrics: "
            f"{', '.join(available_metrics())} (or pass a callable fn(y_true, scores) -> float)"
        )
    if canonical.startswith("top"):
        return canonical, _top_k(int(canonical[3:]))
    return canonical, _BUILDERS[canonical]()
