"""Tests for pyconv.metrics: hand-worked examples, agreement with scikit-learn, errors."""
from __future__ import annotations

import functools
import re
import warnings

import numpy as np
import pytest

from pyconv import metrics as M


# --------------------------------------------------------------------------
# hand-made examples
# --------------------------------------------------------------------------

# 3 classes, 6 samples.
#   true: 0 0 1 1 2 2
#   pred: 0 1 1 1 0 2
# cm (rows true, cols pred):
#   [[1 1 0]
#    [0 2 0]
#    [1 0 1]]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 2])


def test_accuracy_labels_hand():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert isinstance(M.accuracy(Y_TRUE, Y_PRED), float)
    assert M.accuracy([1, 2, 3], [1, 2, 3]) == 1.0
    assert M.accuracy([1, 2, 3], [0, 0, 0]) == 0.0


def test_accuracy_from_scores_uses_argmax():
    scores = np.array([
        [5.0, 1.0, 0.0],   # -> 0
        [0.0, 2.0, 1.0],   # -> 1
        [0.1, 0.2, 0.3],   # -> 2
        [-1.0, -3.0, -2.0],  # -> 0 (negative logits)
    ])
    assert M.accuracy([0, 1, 2, 0], scores) == 1.0
    assert M.accuracy([0, 1, 1, 2], scores) == 0.5
    # ties: argmax takes the first (lowest) index
    assert M.accuracy([0], np.array([[1.0, 1.0]])) == 1.0
    assert M.accuracy([1], np.array([[1.0, 1.0]])) == 0.0


def test_accuracy_accepts_bool_and_integral_float_labels():
    assert M.accuracy(np.array([True, False]), np.array([1, 0])) == 1.0
    assert M.accuracy(np.array([0.0, 2.0, 1.0]), np.array([0, 2, 2])) == pytest.approx(2 / 3)


def test_top_k_hand():
    scores = np.array([
        [0.1, 0.5, 0.4],  # ranking 1, 2, 0
        [0.7, 0.2, 0.1],  # ranking 0, 1, 2
    ])
    y = np.array([2, 2])
    assert M.top_k_accuracy(y, scores, k=1) == 0.0
    assert M.top_k_accuracy(y, scores, k=2) == 0.5
    assert M.top_k_accuracy(y, scores, k=3) == 1.0


def test_top_k_ties_lower_index_first():
    # All scores equal: rank of class c is c, so class c is a top-k hit iff c < k.
    scores = np.zeros((4, 4))
    y = np.array([0, 1, 2, 3])
    assert M.top_k_accuracy(y, scores, k=1) == 0.25
    assert M.top_k_accuracy(y, scores, k=2) == 0.5
    assert M.top_k_accuracy(y, scores, k=3) == 0.75
    # k=1 always agrees with accuracy (argmax picks the first of tied maxima)
    rng = np.random.default_rng(1)
    s = rng.integers(0, 3, size=(200, 6)).astype(float)  # many ties
    t = rng.integers(0, 6, size=200)
    assert M.top_k_accuracy(t, s, k=1) == M.accuracy(t, s)
    # a tie with a higher-index class does not push the true class out
    assert M.top_k_accuracy([1], np.array([[0.0, 5.0, 5.0]]), k=1) == 1.0
    assert M.top_k_accuracy([2], np.array([[0.0, 5.0, 5.0]]), k=1) == 0.0


def test_top_k_with_infinities():
    s = np.array([[-np.inf, 0.0, np.inf], [np.inf, np.inf, 0.0]])
    assert M.top_k_accuracy([2, 1], s, k=1) == 0.5
    assert M.top_k_accuracy([2, 1], s, k=2) == 1.0


def test_confusion_matrix_hand():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert cm.dtype == np.int64
    assert cm.sum() == len(Y_TRUE)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(Y_TRUE))  # rows = true


def test_confusion_matrix_num_classes_and_empty():
    cm = M.confusion_matrix([0, 1], [1, 1], num_classes=4)
    assert cm.shape == (4, 4)
    np.testing.assert_array_equal(cm[:2, :2], [[0, 1], [0, 1]])
    assert cm[2:].sum() == 0 and cm[:, 2:].sum() == 0
    assert M.confusion_matrix([], [], num_classes=3).shape == (3, 3)
    assert M.confusion_matrix([], []).shape == (0, 0)
    assert M.confusion_matrix(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 2).sum() == 0


def test_confusion_matrix_from_scores():
    scores = np.eye(3)[Y_PRED] * 2.0 - 1.0
    np.testing.assert_array_equal(M.confusion_matrix(Y_TRUE, scores), M.confusion_matrix(Y_TRUE, Y_PRED))
    assert M.confusion_matrix([0], np.zeros((1, 5))).shape == (5, 5)  # C from the score columns


def test_precision_recall_f1_hand():
    # class 0: tp=1 fp=1 fn=1 -> p=1/2 r=1/2 f1=1/2
    # class 1: tp=2 fp=1 fn=0 -> p=2/3 r=1   f1=4/5
    # class 2: tp=1 fp=0 fn=1 -> p=1   r=1/2 f1=2/3
    p, r, f = M.precision_recall_f1(Y_TRUE, Y_PRED, average=None)
    np.testing.assert_allclose(p, [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(r, [1 / 2, 1, 1 / 2])
    np.testing.assert_allclose(f, [1 / 2, 4 / 5, 2 / 3])
    mp, mr, mf = M.precision_recall_f1(Y_TRUE, Y_PRED, average="macro")
    assert (mp, mr, mf) == pytest.approx((13 / 18, 2 / 3, (1 / 2 + 4 / 5 + 2 / 3) / 3))
    assert all(isinstance(v, float) for v in (mp, mr, mf))
    # micro = accuracy for single-label multiclass
    assert M.precision_recall_f1(Y_TRUE, Y_PRED, average="micro") == pytest.approx((4 / 6,) * 3)
    # weighted: supports are 2, 2, 2 here -> same as macro
    assert M.precision_recall_f1(Y_TRUE, Y_PRED, average="weighted") == pytest.approx((mp, mr, mf))


def test_weighted_uses_support():
    t = [0, 0, 0, 1]
    p = [0, 0, 0, 0]
    # class 0: p=3/4 r=1; class 1: never predicted -> p=zero_division, r=0
    wp, wr, wf = M.precision_recall_f1(t, p, average="weighted")
    assert wp == pytest.approx(0.75 * 0.75 + 0.25 * 0.0)
    assert wr == pytest.approx(0.75 * 1.0 + 0.25 * 0.0)
    assert wf == pytest.approx(0.75 * (6 / 7))


def test_zero_division_values():
    t = [0, 0, 1]
    p = [0, 0, 0]  # class 1 never predicted -> its precision is 0/0
    p0, _, _ = M.precision_recall_f1(t, p, average=None, zero_division=0.0)
    p1, _, _ = M.precision_recall_f1(t, p, average=None, zero_division=1.0)
    pn, _, _ = M.precision_recall_f1(t, p, average=None, zero_division=np.nan)
    assert p0[1] == 0.0 and p1[1] == 1.0 and np.isnan(pn[1])
    assert p0[0] == p1[0] == pytest.approx(2 / 3)
    # NaN entries are left out of the macro average
    assert M.precision_recall_f1(t, p, average="macro", zero_division=np.nan)[0] == pytest.approx(2 / 3)


def test_absent_class_in_per_class_arrays_but_not_in_average():
    t = [0, 2, 2]
    p = [0, 2, 0]
    pr, rc, f1 = M.precision_recall_f1(t, p, average=None)
    assert pr.shape == (3,)
    assert pr[1] == rc[1] == f1[1] == 0.0  # class 1 occurs nowhere -> zero_division
    macro_p = M.precision_recall_f1(t, p, average="macro")[0]
    assert macro_p == pytest.approx((1 / 2 + 1) / 2)  # mean over classes 0 and 2 only
    # num_classes only sizes the arrays
    assert M.precision_recall_f1(t, p, average=None, num_classes=5)[0].shape == (5,)
    assert M.precision_recall_f1(t, p, average="macro", num_classes=5)[0] == pytest.approx(macro_p)


def test_classification_report_hand():
    rep = M.classification_report(Y_TRUE, Y_PRED, class_names=["cat", "dog", "bird"])
    lines = [ln for ln in rep.splitlines() if ln.strip()]
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[1].split() == ["cat", "0.500", "0.500", "0.500", "2"]
    assert lines[2].split() == ["dog", "0.667", "1.000", "0.800", "2"]
    assert lines[3].split() == ["bird", "1.000", "0.500", "0.667", "2"]
    assert lines[4].split() == ["accuracy", "0.667", "6"]
    assert lines[5].split()[:2] == ["macro", "avg"]
    assert lines[6].split()[:2] == ["weighted", "avg"]
    rep2 = M.classification_report(Y_TRUE, Y_PRED, digits=2)
    assert "0.67" in rep2 and "0.667" not in rep2


def test_classification_report_dict_hand():
    d = M.classification_report_dict(Y_TRUE, Y_PRED, class_names=["cat", "dog", "bird"])
    assert list(d) == ["cat", "dog", "bird", "accuracy", "macro avg", "weighted avg"]
    assert d["dog"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1-score": 0.8, "support": 2.0})
    assert d["accuracy"] == pytest.approx(4 / 6)
    assert d["macro avg"]["support"] == 6.0
    assert d["macro avg"]["precision"] == pytest.approx(13 / 18)


# --------------------------------------------------------------------------
# agreement with scikit-learn
# --------------------------------------------------------------------------

def _random_cases(n_cases=60, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        c = int(rng.integers(2, 9))
        n = int(rng.integers(1, 60))
        t = rng.integers(0, c, n)
        # biased predictions so that some classes are never predicted
        p = np.where(rng.random(n) < 0.5, t, rng.integers(0, max(1, c // 2), n))
        yield c, t, p, rng


def test_agrees_with_sklearn_accuracy_and_confusion_matrix():
    skm = pytest.importorskip("sklearn.metrics")
    for c, t, p, rng in _random_cases():
        assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=1e-15)
        np.testing.assert_array_equal(
            M.confusion_matrix(t, p, num_classes=c), skm.confusion_matrix(t, p, labels=np.arange(c))
        )
        s = rng.normal(size=(t.size, c))
        assert M.accuracy(t, s) == pytest.approx(skm.accuracy_score(t, s.argmax(1)), abs=1e-15)


def test_agrees_with_sklearn_top_k():
    skm = pytest.importorskip("sklearn.metrics")
    for c, t, _, rng in _random_cases(seed=1):
        if c < 3:
            continue
        s = rng.normal(size=(t.size, c))  # continuous: no ties
        for k in range(1, c):
            expect = skm.top_k_accuracy_score(t, s, k=k, labels=np.arange(c))
            assert M.top_k_accuracy(t, s, k=k) == pytest.approx(expect, abs=1e-15), (c, k)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_agrees_with_sklearn_prf_averages(average, zero_division):
    skm = pytest.importorskip("sklearn.metrics")
    n_zero_pred = 0
    for c, t, p, _ in _random_cases(seed=2):
        n_zero_pred += int((np.bincount(p, minlength=c) == 0).any())
        ours = M.precision_recall_f1(t, p, average=average, zero_division=zero_division)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = skm.precision_recall_fscore_support(t, p, average=average, zero_division=zero_division)[:3]
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15, equal_nan=True)
    assert n_zero_pred > 10  # the cases do exercise classes with zero predictions


def test_agrees_with_sklearn_prf_per_class():
    skm = pytest.importorskip("sklearn.metrics")
    for c, t, p, _ in _random_cases(seed=3):
        for zd in (0.0, 1.0):
            ours = M.precision_recall_f1(t, p, average=None, num_classes=c, zero_division=zd)
            ref = skm.precision_recall_fscore_support(
                t, p, average=None, labels=np.arange(c), zero_division=zd
            )[:3]
            for a, b in zip(ours, ref):
                assert a.shape == (c,)
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_agrees_with_sklearn_classification_report():
    skm = pytest.importorskip("sklearn.metrics")
    names = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse"]
    for c, t, p, _ in _random_cases(n_cases=25, seed=4):
        ref_d = skm.classification_report(t, p, output_dict=True, zero_division=0)
        _assert_dict_close(M.classification_report_dict(t, p), ref_d)
        ref_s = skm.classification_report(t, p, digits=3, zero_division=0)
        ours = M.classification_report(t, p)
        if (t == p).any():
            assert ours == ref_s
        else:
            # scikit-learn then prints supports as floats ('3.0'); everything else is identical
            assert ours.split() == [re.sub(r"^(\d+)\.0$", r"\1", tok) for tok in ref_s.split()]
        present = np.union1d(t, p)
        ref_named = skm.classification_report(
            t, p, labels=present, target_names=[names[i] for i in present], digits=3, zero_division=0
        )
        if (t == p).any():
            assert M.classification_report(t, p, class_names=names) == ref_named


def _assert_dict_close(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-12), k


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

def test_get_metric_names_and_aliases():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(50, 10))
    t = rng.integers(0, 10, 50)
    name, fn = M.get_metric("accuracy")
    assert name == "accuracy" and fn(t, s) == M.accuracy(t, s)
    assert M.get_metric("acc")[0] == "accuracy"
    assert M.get_metric("ACC")[0] == "accuracy"
    for alias in ("top5", "top_k_accuracy"):
        name, fn = M.get_metric(alias)
        assert name == "top5" and fn(t, s) == M.top_k_accuracy(t, s, k=5)
    name, fn = M.get_metric("top3")
    assert name == "top3" and fn(t, s) == M.top_k_accuracy(t, s, k=3)
    assert M.get_metric("top7")[1](t, s) == M.top_k_accuracy(t, s, k=7)
    pred = s.argmax(1)
    for i, nm in enumerate(("precision", "recall", "f1")):
        name, fn = M.get_metric(nm)
        assert name == nm
        value = fn(t, s)
        assert isinstance(value, float)
        assert value == M.precision_recall_f1(t, pred, average="macro")[i]


def test_get_metric_callables_pass_through():
    def my_metric(y_true, scores):
        return 0.5

    name, fn = M.get_metric(my_metric)
    assert name == "my_metric" and fn is my_metric
    part = functools.partial(M.top_k_accuracy, k=2)
    name, fn = M.get_metric(part)
    assert name == "top_k_accuracy" and fn is part


def test_get_metric_unknown_lists_known():
    with pytest.raises(ValueError, match=r"unknown metric 'auc'.*accuracy.*top5.*f1"):
        M.get_metric("auc")
    with pytest.raises(ValueError, match="unknown metric 'top0'"):
        M.get_metric("top0")
    with pytest.raises(TypeError, match="metric must be a name"):
        M.get_metric(3)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

def test_error_length_mismatch():
    with pytest.raises(ValueError, match=r"y_true has 3 .*y_pred has 2"):
        M.confusion_matrix([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"y_pred_or_scores has 2"):
        M.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"scores has 4 \(shape \(4, 3\)\)"):
        M.top_k_accuracy([0, 1], np.zeros((4, 3)), k=1)


def test_error_negative_labels():
    with pytest.raises(ValueError, match=r"y_true contains negative label -1"):
        M.accuracy([0, -1], [0, 1])
    with pytest.raises(ValueError, match=r"y_pred contains negative label -3"):
        M.confusion_matrix([0, 1], [0, -3])


def test_error_labels_out_of_range():
    with pytest.raises(ValueError, match=r"y_true contains label 5 but num_classes=3"):
        M.confusion_matrix([0, 5], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match=r"y_pred contains label 4 but num_classes=2"):
        M.precision_recall_f1([0, 1], [4, 1], num_classes=2)
    # labels must be < the number of score columns
    with pytest.raises(ValueError, match=r"y_true contains label 3 but num_classes=3"):
        M.accuracy([0, 3], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"y_true contains label 7 but num_classes=5"):
        M.top_k_accuracy([7], np.zeros((1, 5)), k=1)


def test_error_non_integer_labels():
    with pytest.raises(TypeError, match=r"y_true must hold integer class labels, got non-integer value 0\.5"):
        M.accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(TypeError, match=r"y_pred must hold integer class labels, got an array of dtype <U"):
        M.confusion_matrix([0, 1], ["a", "b"])
    with pytest.raises(TypeError, match=r"y_true must hold integer class labels.*nan"):
        M.confusion_matrix([np.nan, 1.0], [0, 1])


def test_error_wrong_ndim():
    with pytest.raises(ValueError, match=r"y_true must be a 1-D array.*shape \(2, 2\)"):
        M.accuracy([[0, 1], [1, 0]], [0, 1])
    with pytest.raises(ValueError, match=r"y_true must be a 1-D array.*shape \(\)"):
        M.accuracy(3, [3])
    with pytest.raises(ValueError, match=r"y_pred_or_scores must be predicted labels .* shape \(2, 2, 2\)"):
        M.accuracy([0, 1], np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"scores must be a 2-D array.*shape \(3,\)"):
        M.top_k_accuracy([0, 1, 2], np.zeros(3), k=1)


def test_error_scores_content():
    with pytest.raises(ValueError, match=r"scores contains NaN \(first at row 1, column 0\)"):
        M.top_k_accuracy([0, 1], np.array([[1.0, 0.0], [np.nan, 0.0]]), k=1)
    with pytest.raises(TypeError, match=r"y_pred_or_scores must hold numeric scores"):
        M.accuracy([0], np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"at least one class column"):
        M.accuracy([], np.zeros((0, 0)))


def test_error_k():
    s = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"k=5 is larger than the number of classes C=4 in scores \(shape \(2, 4\)\)"):
        M.top_k_accuracy([0, 1], s, k=5)
    with pytest.raises(ValueError, match=r"k must be >= 1, got k=0"):
        M.top_k_accuracy([0, 1], s, k=0)
    with pytest.raises(TypeError, match=r"k must be an int, got float 2\.0"):
        M.top_k_accuracy([0, 1], s, k=2.0)


def test_error_options():
    with pytest.raises(ValueError, match=r"average must be one of .* got 'binary'"):
        M.precision_recall_f1([0, 1], [0, 1], average="binary")
    with pytest.raises(ValueError, match=r"zero_division must be in \[0, 1\] or nan, got 2"):
        M.precision_recall_f1([0, 1], [0, 1], zero_division=2)
    with pytest.raises(TypeError, match=r"zero_division must be a number.*'warn'"):
        M.precision_recall_f1([0, 1], [0, 1], zero_division="warn")
    with pytest.raises(ValueError, match=r"num_classes must be >= 1, got 0"):
        M.confusion_matrix([0], [0], num_classes=0)
    with pytest.raises(TypeError, match=r"num_classes must be an int or None, got float 2\.5"):
        M.confusion_matrix([0], [0], num_classes=2.5)
    with pytest.raises(ValueError, match=r"y_pred has 3 score columns \(shape \(1, 3\)\) but num_classes=4"):
        M.confusion_matrix([0], np.zeros((1, 3)), num_classes=4)
    with pytest.raises(ValueError, match=r"class_names has 2 names but the labels go up to 2"):
        M.classification_report([0, 1, 2], [0, 1, 2], class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"digits must be a non-negative int, got -1"):
        M.classification_report([0], [0], digits=-1)


def test_error_empty_input():
    with pytest.raises(ValueError, match=r"accuracy: y_true is empty"):
        M.accuracy([], [])
    with pytest.raises(ValueError, match=r"precision_recall_f1: y_true is empty"):
        M.precision_recall_f1([], [])


def test_large_input():
    # 10^6 samples (vectorised code handles this in milliseconds)
    rng = np.random.default_rng(6)
    t = rng.integers(0, 10, 1_000_000)
    p = rng.integers(0, 10, 1_000_000)
    cm = M.confusion_matrix(t, p)
    assert cm.sum() == 1_000_000
    assert M.accuracy(t, p) == pytest.approx(np.trace(cm) / 1e6)
    np.testing.assert_allclose(
        M.precision_recall_f1(t, p, average=None)[1], np.diag(cm) / cm.sum(1)
    )
