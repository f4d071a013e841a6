"""Metrics of anysat_core.analysis.metrics on small examples worked by hand, plus a cross-check with sklearn."""

from __future__ import annotations

import numpy as np
import pytest

from anysat_core.analysis import (
    MetricInputError,
    confusion_matrix,
    iou_of_class,
    miou,
    multiclass_f1,
    multilabel_f1,
    overall_accuracy,
    pangaea_miou,
    pangaea_per_class_iou,
    per_class_iou,
    zero_out_class,
)
from anysat_core.errors import AnySatError, DTypeError, InputShapeError, NonFiniteInputError

# ---------------------------------------------------------------------------------------------------------
# 3-class example, 9 elements
#   y_true = 0 0 0 1 1 2 2 2 2
#   y_pred = 0 0 1 1 2 2 2 0 2
# rows = true, cols = predicted:
#   true 0 -> predicted 0,0,1    -> [2, 1, 0]
#   true 1 -> predicted 1,2      -> [0, 1, 1]
#   true 2 -> predicted 2,2,0,2  -> [1, 0, 3]
# row sums (support) 3,2,4; column sums 3,2,4; trace 6.
#   OA    = 6/9 = 66.67 %
#   IoU_c = TP/(row+col-TP): 2/(3+3-2)=1/2, 1/(2+2-1)=1/3, 3/(4+4-3)=3/5;  mIoU = (1/2+1/3+3/5)/3 = 43/90
#   F1_c  = 2TP/(row+col):   4/6=2/3, 2/4=1/2, 6/8=3/4;  macro = (2/3+1/2+3/4)/3 = 23/36
#   weighted = (3*2/3 + 2*1/2 + 4*3/4)/9 = 6/9;  micro = accuracy = 6/9
# ---------------------------------------------------------------------------------------------------------
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 0, 2]
CM = np.array([[2, 1, 0], [0, 1, 1], [1, 0, 3]])


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, CM)
    # any shape is flattened: the same labels as a (1, 3, 3) "image"
    img = confusion_matrix(np.array(Y_TRUE).reshape(1, 3, 3), np.array(Y_PRED).reshape(1, 3, 3), 3)
    np.testing.assert_array_equal(img, CM)


def test_accuracy_and_iou_by_hand() -> None:
    assert overall_accuracy(CM) == pytest.approx(100 * 6 / 9)
    np.testing.assert_allclose(per_class_iou(CM), [1 / 2, 1 / 3, 3 / 5])
    assert miou(CM) == pytest.approx(43 / 90)
    assert iou_of_class(CM, 2) == pytest.approx(3 / 5)
    assert iou_of_class(CM, -1) == pytest.approx(3 / 5)
    assert isinstance(miou(CM), float) and isinstance(overall_accuracy(CM), float)


def test_f1_multiclass_by_hand() -> None:
    np.testing.assert_allclose(multiclass_f1(Y_TRUE, Y_PRED, 3, average="none"), [2 / 3, 1 / 2, 3 / 4])
    assert multiclass_f1(Y_TRUE, Y_PRED, 3, average="macro") == pytest.approx(23 / 36)
    assert multiclass_f1(Y_TRUE, Y_PRED, 3, average="weighted") == pytest.approx(6 / 9)
    assert multiclass_f1(Y_TRUE, Y_PRED, 3, average="micro") == pytest.approx(6 / 9)


def test_absent_class_iou_nan_f1_zero() -> None:
    # K = 4 with class 3 in neither truth nor prediction: IoU NaN (leaves the mean), F1 0 (counts in macro)
    cm4 = confusion_matrix(Y_TRUE, Y_PRED, num_classes=4)
    iou = per_class_iou(cm4)
    assert np.isnan(iou[3]) and iou_of_class(cm4, 3) != iou_of_class(cm4, 3)  # NaN
    assert miou(cm4) == pytest.approx(43 / 90)
    f1 = multiclass_f1(Y_TRUE, Y_PRED, 4, average="none")
    assert f1[3] == 0.0
    assert multiclass_f1(Y_TRUE, Y_PRED, 4, average="macro") == pytest.approx(23 / 36 * 3 / 4)
    assert multiclass_f1(Y_TRUE, Y_PRED, 4, average="weighted") == pytest.approx(6 / 9)  # support 0


def test_ignore_index_drops_pixels() -> None:
    # the same 9 elements plus three unlabelled (-1) ones whose predictions (even 7, out of range) are dropped
    t = np.array([*Y_TRUE, -1, -1, -1])
    p = np.array([*Y_PRED, 0, 2, 7])
    np.testing.assert_array_equal(confusion_matrix(t, p, 3, ignore_index=-1), CM)
    assert multiclass_f1(t, p, 3, ignore_index=-1) == pytest.approx(23 / 36)
    # ignore_index may be a real class: its pixels leave the rows only (true 2 row -> 0, predictions of 2 stay)
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3, ignore_index=2)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 0]])


def test_zero_last_class_variant() -> None:
    # original IoU(ignore_index=-1): row and column of the LAST class zeroed
    #   [[2,1,0],[0,1,0],[0,0,0]] -> IoU0 = 2/(3+2-2) = 2/3, IoU1 = 1/(1+2-1) = 1/2, IoU2 = 0/0 = NaN
    #   mIoU = nanmean = (2/3 + 1/2)/2 = 7/12; OA on the zeroed matrix = 3/4
    z = zero_out_class(CM, -1)
    np.testing.assert_array_equal(z, [[2, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(CM, [[2, 1, 0], [0, 1, 1], [1, 0, 3]])  # input untouched
    iou = per_class_iou(CM, zero_class=-1)
    np.testing.assert_allclose(iou[:2], [2 / 3, 1 / 2])
    assert np.isnan(iou[2])
    assert miou(CM, zero_class=-1) == pytest.approx(7 / 12)
    assert miou(CM, zero_class=2) == pytest.approx(7 / 12)
    assert overall_accuracy(CM, zero_class=-1) == pytest.approx(75.0)


def test_pangaea_epsilon_variant() -> None:
    # IoU_c = TP/(row+col-TP+1e-6), mean over ALL classes: an absent class counts as 0 (not NaN)
    expected = np.array([2 / (4 + 1e-6), 1 / (3 + 1e-6), 3 / (5 + 1e-6)])
    np.testing.assert_allclose(pangaea_per_class_iou(CM), expected, rtol=1e-12)
    assert pangaea_miou(CM) == pytest.approx(expected.mean(), rel=1e-12)
    assert pangaea_miou(CM) < miou(CM)  # the epsilon lowers every IoU a little
    cm4 = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert pangaea_per_class_iou(cm4)[3] == 0.0
    assert pangaea_miou(cm4) == pytest.approx(expected.sum() / 4, rel=1e-12)
    assert pangaea_miou(cm4, eps=0.0) == pytest.approx(43 / 90 * 3 / 4)


def test_weighted_and_macro_differ_when_imbalanced() -> None:
    # 8 of class 0 all right; 2 of class 1, one predicted 0: cm = [[8,0],[1,1]]
    #   F1_0 = 16/(16+1) = 16/17, F1_1 = 2/(2+1) = 2/3
    #   macro = (16/17 + 2/3)/2 ~ 0.804; weighted = (8*16/17 + 2*2/3)/10 ~ 0.886
    t = [0] * 8 + [1] * 2
    p = [0] * 8 + [0, 1]
    macro = multiclass_f1(t, p, 2, average="macro")
    weighted = multiclass_f1(t, p, 2, average="weighted")
    assert macro == pytest.approx((16 / 17 + 2 / 3) / 2)
    assert weighted == pytest.approx((8 * 16 / 17 + 2 * 2 / 3) / 10)
    assert weighted > macro + 0.05


# ---------------------------------------------------------------------------------------------------------
# multilabel: 4 samples x 3 labels
#   y_true          probs              thresholded (> 0.5)
#   s0  1 0 1       0.9 0.2 0.6        1 0 1
#   s1  0 1 1       0.4 0.7 0.3        0 1 0
#   s2  1 0 0       0.6 0.6 0.1        1 1 0
#   s3  1 0 1       0.2 0.1 0.8        0 0 1
# label 0: TP 2 (s0,s2) FP 0 FN 1 (s3): P = 1,   R = 2/3, F1 = 2*2/(2*2+0+1) = 4/5,  support 3
# label 1: TP 1 (s1)    FP 1 (s2) FN 0: P = 1/2, R = 1,   F1 = 2*1/(2+1+0)   = 2/3,  support 1
# label 2: TP 2 (s0,s3) FP 0 FN 1 (s1): P = 1,   R = 2/3, F1 = 4/5,                  support 3
#   macro    = (4/5 + 2/3 + 4/5)/3         = 34/45
#   weighted = (3*4/5 + 1*2/3 + 3*4/5)/7   = (24/5 + 2/3)/7 = 82/105
#   micro    : TP 5, FP 1, FN 2 -> 10/(10+1+2) = 10/13
# ---------------------------------------------------------------------------------------------------------
ML_TRUE = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0], [1, 0, 1]])
ML_PROB = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.3], [0.6, 0.6, 0.1], [0.2, 0.1, 0.8]])
ML_PRED = (ML_PROB > 0.5).astype(np.int64)


def test_multilabel_f1_by_hand() -> None:
    np.testing.assert_allclose(multilabel_f1(ML_TRUE, ML_PROB, average="none"), [4 / 5, 2 / 3, 4 / 5])
    assert multilabel_f1(ML_TRUE, ML_PROB, average="macro") == pytest.approx(34 / 45)
    assert multilabel_f1(ML_TRUE, ML_PROB, average="weighted") == pytest.approx(82 / 105)
    assert multilabel_f1(ML_TRUE, ML_PROB, average="micro") == pytest.approx(10 / 13)
    # binary predictions (int or bool) give the same numbers
    for pred in (ML_PRED, ML_PRED.astype(bool), ML_PRED.tolist()):
        assert multilabel_f1(ML_TRUE, pred, average="weighted") == pytest.approx(82 / 105)
    # logits with from_logits=True: sigmoid(logit(p)) = p
    logits = np.log(ML_PROB / (1 - ML_PROB))
    assert multilabel_f1(ML_TRUE, logits, average="macro", from_logits=True) == pytest.approx(34 / 45)


def test_multilabel_threshold_is_strict_and_empty_label_is_zero() -> None:
    # a probability of exactly 0.5 is negative (torchmetrics: preds > threshold)
    assert multilabel_f1([[1]], [[0.5]], average="micro") == 0.0
    assert multilabel_f1([[1]], [[0.51]], average="micro") == 1.0
    # a 4th label never true and never predicted: F1 0, counts in macro, not in weighted (support 0) nor micro
    t = np.concatenate([ML_TRUE, np.zeros((4, 1), int)], axis=1)
    p = np.concatenate([ML_PROB, np.full((4, 1), 0.1)], axis=1)
    assert multilabel_f1(t, p, average="none")[3] == 0.0
    assert multilabel_f1(t, p, average="macro") == pytest.approx((4 / 5 + 2 / 3 + 4 / 5) / 4)
    assert multilabel_f1(t, p, average="weighted") == pytest.approx(82 / 105)
    assert multilabel_f1(t, p, average="micro") == pytest.approx(10 / 13)
    # nothing true and nothing predicted anywhere: everything 0, no warning/NaN
    assert multilabel_f1(np.zeros((2, 3), int), np.zeros((2, 3)), average="weighted") == 0.0


def test_errors_are_specific() -> None:
    with pytest.raises(MetricInputError, match=r"y_true has 1 label\(s\) outside 0..2.*\[3\]"):
        confusion_matrix([0, 1, 3], [0, 1, 2], 3)
    with pytest.raises(MetricInputError, match="ignore_index=-1"):
        confusion_matrix([0, -1], [0, 1], 3)
    with pytest.raises(MetricInputError, match="y_pred"):
        confusion_matrix([0, 1], [0, 5], 3)
    with pytest.raises(InputShapeError, match=r"\(3,\).*\(2,\)"):
        confusion_matrix([0, 1, 2], [0, 1], 3)
    with pytest.raises(DTypeError, match="argmax"):
        confusion_matrix([0, 1], [[0.2, 0.8], [0.9, 0.1]], 2)
    with pytest.raises(MetricInputError, match="num_classes"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(InputShapeError, match="square"):
        miou(np.ones((2, 3)))
    with pytest.raises(MetricInputError, match="all zeros"):
        overall_accuracy(np.zeros((3, 3)))
    with pytest.raises(MetricInputError, match="all zeros"):
        overall_accuracy([[0, 0], [0, 5]], zero_class=-1)
    with pytest.raises(MetricInputError, match="mIoU"):
        miou(np.zeros((3, 3)))
    with pytest.raises(MetricInputError, match=r"zero_class=3 is out of range"):
        miou(CM, zero_class=3)
    with pytest.raises(MetricInputError, match="average"):
        multiclass_f1(Y_TRUE, Y_PRED, 3, average="samples")  # type: ignore[arg-type]
    with pytest.raises(MetricInputError, match=r"outside \[0, 1\].*from_logits"):
        multilabel_f1(ML_TRUE, ML_PROB * 4)
    with pytest.raises(MetricInputError, match="binary"):
        multilabel_f1(ML_TRUE * 2, ML_PROB)
    with pytest.raises(MetricInputError, match="binary"):
        multilabel_f1(ML_TRUE, ML_PRED * 3)
    with pytest.raises(InputShapeError, match=r"\(N samples, L labels\)"):
        multilabel_f1(ML_TRUE, ML_PROB[:, :2])
    with pytest.raises(NonFiniteInputError):
        multilabel_f1(ML_TRUE, np.where(ML_PROB > 0.8, np.nan, ML_PROB))
    with pytest.raises(InputShapeError, match="ragged"):
        confusion_matrix([[0, 1], [0]], [[0, 1], [0]], 2)
    # all of them are AnySatErrors and ValueErrors / TypeErrors
    with pytest.raises(AnySatError):
        confusion_matrix([9], [0], 3)
    with pytest.raises(ValueError):
        confusion_matrix([9], [0], 3)


def test_matches_sklearn_on_random_data() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    k = 6
    t = rng.integers(-1, k, size=2000)
    p = np.where(rng.random(2000) < 0.6, t, rng.integers(0, k, size=2000)).clip(0)
    p[t == 4] = rng.integers(0, 3, size=int((t == 4).sum()))  # class 4 never predicted
    t[t == 5] = 0  # class 5 never true (but predicted)
    valid = t != -1
    labels = list(range(k))
    cm = confusion_matrix(t, p, k, ignore_index=-1)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(t[valid], p[valid], labels=labels))
    for avg in ("macro", "weighted", "micro"):
        ref = sk.f1_score(t[valid], p[valid], labels=labels, average=avg, zero_division=0)
        assert multiclass_f1(t, p, k, average=avg, ignore_index=-1) == pytest.approx(ref, abs=1e-12)
    ref = sk.f1_score(t[valid], p[valid], labels=labels, average=None, zero_division=0)
    np.testing.assert_allclose(multiclass_f1(t, p, k, average="none", ignore_index=-1), ref, atol=1e-12)
    np.testing.assert_allclose(
        per_class_iou(cm), sk.jaccard_score(t[valid], p[valid], labels=labels, average=None), atol=1e-12
    )
    assert overall_accuracy(cm) == pytest.approx(100 * sk.accuracy_score(t[valid], p[valid]))

    yt = (rng.random((300, 7)) < 0.3).astype(int)
    yt[:, 6] = 0  # a label never true
    probs = np.clip(yt * 0.5 + rng.random((300, 7)) * 0.6, 0, 1)
    probs[:, 6] = 0.0  # ... and never predicted
    yp = (probs > 0.5).astype(int)
    for avg in ("macro", "weighted", "micro"):
        ref = sk.f1_score(yt, yp, average=avg, zero_division=0)
        assert multilabel_f1(yt, probs, average=avg) == pytest.approx(ref, abs=1e-12)
    np.testing.assert_allclose(
        multilabel_f1(yt, probs, average="none"), sk.f1_score(yt, yp, average=None, zero_division=0), atol=1e-12
    )
