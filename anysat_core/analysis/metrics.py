"""The evaluation metrics the AnySat paper reports, in plain numpy.

Each metric is implemented once here, so that training, evaluation scripts and the app give the same
numbers.  The definitions follow the original code (``gastruc/AnySat: src/models/metrics/metrics.py``) and
the torchmetrics classes it calls; where they disagree, the docstring says which one is followed.

Units: IoU and F1 values are **fractions** in [0, 1] (as torchmetrics and the original ``IoU`` class give
mIoU); overall accuracy is in **percent** (as the original ``IoU`` class gives ``acc``).  Multiply by 100 to
compare with the paper's tables.

Which function gives which reported number:

============================  ===============================================================================
dataset / metric              call
============================  ===============================================================================
TreeSatAI-TS weighted F1      ``multilabel_f1(y, probs, average="weighted")``
PASTIS-HD classif macro F1    ``multilabel_f1(y, probs, average="macro")``
PLANTED macro F1              ``multiclass_f1(y, pred, num_classes=40, average="macro")``
PASTIS / FLAIR mIoU, OA       ``cm = confusion_matrix(y, pred, K)``; ``miou(cm, zero_class=-1)``,
                              ``overall_accuracy(cm, zero_class=-1)`` (the last class, void / other, leaves)
SICKLE "IoU"                  ``miou(confusion_matrix(y, pred, 2, ignore_index=-1))``
BraDD-S1TS "IoU"              ``iou_of_class(confusion_matrix(y, pred, 2, ignore_index=-1), 1)``
Sen1Floods11, HLS, SpaceNet7  ``pangaea_miou(confusion_matrix(y, pred, K, ignore_index=-1))``
TimeSen2Crop / So2Sat OA      ``overall_accuracy(confusion_matrix(y, pred, K, ignore_index=-1))``
============================  ===============================================================================

Conventions for undefined values (torchmetrics' ``zero_division=0``): an F1 whose denominator is zero (no
true and no predicted positive for that class/label) is **0**, not NaN, and it counts in the macro mean.
A per-class IoU whose denominator is zero (class absent from truth and prediction) is **NaN** and leaves the
``nanmean`` (the original ``IoU`` class and torchmetrics' Jaccard index both drop such classes).

Every function accepts numpy arrays, lists or CPU tensors (anything ``np.asarray`` takes) and raises an
:class:`~anysat_core.errors.AnySatError` subclass naming what came in and what was expected.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from anysat_core.errors import DTypeError, InputShapeError, MetricInputError, NonFiniteInputError

__all__ = [
    "MetricInputError",
    "confusion_matrix",
    "iou_of_class",
    "miou",
    "multiclass_f1",
    "multilabel_f1",
    "overall_accuracy",
    "pangaea_miou",
    "pangaea_per_class_iou",
    "per_class_iou",
    "zero_out_class",
]

F1Average = Literal["none", "macro", "weighted", "micro"]
_F1_AVERAGES = ("none", "macro", "weighted", "micro")


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------


def _as_array(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)`` with a clear error for ragged lists or non-numeric objects."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InputShapeError(
            f"{name} could not be turned into a numpy array ({type(x).__name__}: {exc}); "
            "pass a numpy array, a rectangular (non-ragged) list or a CPU tensor."
        ) from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DTypeError(f"{name} has dtype {arr.dtype}; expected a numeric or boolean array.")
    return arr


def _check_int_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Integer (or boolean) class labels as int64; floats are refused rather than silently truncated."""
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DTypeError(
            f"{name} has dtype {arr.dtype}; expected integer class labels. If these are scores or "
            "logits of shape (N, K), take the argmax over the class axis first; if they are whole-number "
            "floats, cast with .astype(np.int64)."
        )
    return arr.astype(np.int64, copy=False)


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise MetricInputError(f"num_classes must be a positive int, got {num_classes!r}.")
    return int(num_classes)


def _check_cm(cm: Any) -> np.ndarray:
    """A square, non-negative, finite confusion matrix as float64 (counts may come as floats)."""
    arr = _as_array(cm, "confusion matrix")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise InputShapeError(
            f"confusion matrix has shape {tuple(arr.shape)}; expected a non-empty square (K, K) array "
            "(rows = true class, columns = predicted class), e.g. from confusion_matrix()."
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NonFiniteInputError("confusion matrix contains NaN or infinite entries; expected finite counts.")
    if (arr < 0).any():
        raise MetricInputError(
            f"confusion matrix has negative entries (min {arr.min():g}); expected non-negative counts."
        )
    return arr


def _resolve_class(c: Any, k: int, name: str) -> int:
    """A class index in [-K, K) (negative counts from the end, as numpy does) turned into [0, K)."""
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
        raise MetricInputError(f"{name} must be an int class index, got {c!r}.")
    if not -k <= c < k:
        raise MetricInputError(f"{name}={c} is out of range for {k} classes; expected an index in [{-k}, {k - 1}].")
    return int(c) % k


def _require_counts(cm: np.ndarray, what: str) -> None:
    if cm.sum() == 0:
        raise MetricInputError(
            f"cannot compute {what}: the confusion matrix is all zeros (no sample was counted; were all "
            "labels equal to ignore_index, or all counts in the zeroed class?)."
        )


# ----------------------------------------------------------------------------------------------------------
# confusion matrix and IoU
# ----------------------------------------------------------------------------------------------------------


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Count (true, predicted) label pairs.

    Args:
        y_true: true labels, integer array of any shape (e.g. (N,) tiles or (B, H, W) pixels).
        y_pred: predicted labels, same shape as ``y_true`` (take the argmax of scores first).
        num_classes: K; valid labels are 0..K-1.
        ignore_index: elements whose **true** label equals this value are dropped before counting
            (torchmetrics / PANGAEA behaviour; usually -1).  It may also be a valid class index, in which
            case those pixels leave the rows only; to also clear the class's column (the original ``IoU``
            class behaviour) use :func:`zero_out_class` on the result instead.

    Returns:
        (K, K) int64 array, ``cm[i, j]`` = number of elements of true class i predicted as class j.

    Raises:
        InputShapeError: shapes differ.  DTypeError: non-integer labels.
        MetricInputError: a label (after dropping ``ignore_index``) outside 0..K-1.
    """
    k = _check_num_classes(num_classes)
    t = _check_int_labels(_as_array(y_true, "y_true"), "y_true")
    p = _check_int_labels(_as_array(y_pred, "y_pred"), "y_pred")
    if t.shape != p.shape:
        raise InputShapeError(
            f"y_true has shape {tuple(t.shape)} but y_pred has shape {tuple(p.shape)}; expected the same shape "
            "(one predicted label per true label; take the argmax of (N, K) scores over the class axis)."
        )
    t, p = t.ravel(), p.ravel()
    if ignore_index is not None:
        keep = t != int(ignore_index)
        t, p = t[keep], p[keep]
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = (arr < 0) | (arr >= k)
        if bad.any():
            values = np.unique(arr[bad])
            hint = "" if name == "y_pred" or ignore_index is not None else " (pass ignore_index=-1 for unlabelled -1)"
            raise MetricInputError(
                f"{name} has {int(bad.sum())} label(s) outside 0..{k - 1} for num_classes={k}: "
                f"values {values[:10].tolist()}{' ...' if values.size > 10 else ''}{hint}."
            )
    counts = np.bincount(t * k + p, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64)


def zero_out_class(cm: Any, cls: int = -1) -> np.ndarray:
    """The original AnySat ``IoU(ignore_index=...)`` step: a copy of ``cm`` with row and column ``cls`` set to 0.

    ``cls`` is a numpy index, so -1 is the **last** class (PASTIS void = 19, FLAIR "other" = 12).  Its IoU then
    becomes NaN (0/0) and leaves :func:`miou`; the pixels of that class, and the pixels predicted as it,
    also leave :func:`overall_accuracy`.

    Args:
        cm: (K, K) confusion matrix.
        cls: class index in [-K, K).

    Returns:
        (K, K) array of the same dtype as ``cm``.
    """
    arr = _as_array(cm, "confusion matrix")
    _check_cm(arr)
    c = _resolve_class(cls, arr.shape[0], "zero_class")
    out = arr.copy()
    out[c, :] = 0
    out[:, c] = 0
    return out


def overall_accuracy(cm: Any, *, zero_class: int | None = None) -> float:
    """Overall accuracy in **percent**: trace / total x 100 (torchmetrics' micro multiclass accuracy x 100).

    Args:
        cm: (K, K) confusion matrix.
        zero_class: when given, row and column of this class are zeroed first (original ``IoU`` class with
            ``ignore_index=-1``: ``acc`` is computed on the zeroed matrix).

    Raises:
        MetricInputError: the (zeroed) matrix counts nothing.
    """
    m = _check_cm(cm if zero_class is None else zero_out_class(cm, zero_class))
    _require_counts(m, "overall accuracy")
    return float(np.trace(m) / m.sum() * 100.0)


def per_class_iou(cm: Any, *, zero_class: int | None = None) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN), NaN for a class absent from both truth and prediction.

    Args:
        cm: (K, K) confusion matrix (rows true, columns predicted).
        zero_class: when given (the original code uses -1), that class's row and column are zeroed first, so
            its IoU is NaN.

    Returns:
        (K,) float64 array of fractions in [0, 1] or NaN.
    """
    m = _check_cm(cm if zero_class is None else zero_out_class(cm, zero_class))
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp  # TP + FP + FN
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def miou(cm: Any, *, zero_class: int | None = None) -> float:
    """Mean IoU: nan-mean of :func:`per_class_iou` (absent or zeroed classes leave the mean).

    ``miou(cm, zero_class=-1)`` is the original ``IoU`` class (PASTIS-HD, FLAIR); ``miou(cm)`` on a matrix
    built with ``ignore_index=-1`` is torchmetrics' macro multiclass Jaccard index (SICKLE).

    Raises:
        MetricInputError: no class has a defined IoU (the matrix counts nothing).
    """
    iou = per_class_iou(cm, zero_class=zero_class)
    if np.isnan(iou).all():
        raise MetricInputError("cannot compute mIoU: no class appears in truth or prediction (empty matrix).")
    return float(np.nanmean(iou))


def iou_of_class(cm: Any, cls: int) -> float:
    """IoU of one class (BraDD-S1TS reports class 1, deforestation); NaN when the class never appears.

    Args:
        cm: (K, K) confusion matrix.
        cls: class index in [-K, K).
    """
    m = _check_cm(cm)
    c = _resolve_class(cls, m.shape[0], "cls")
    return float(per_class_iou(m)[c])


def pangaea_per_class_iou(cm: Any, eps: float = 1e-6) -> np.ndarray:
    """PANGAEA-bench IoU: TP_c / (row_c + col_c - TP_c + eps); 0 (not NaN) for an absent class.

    Args:
        cm: (K, K) confusion matrix of pixels whose label is not -1 (``confusion_matrix(..., ignore_index=-1)``).
        eps: added to the denominator (1e-6 in PANGAEA / the original ``SegPangaea``).

    Returns:
        (K,) float64 array.
    """
    m = _check_cm(cm)
    if not np.isfinite(eps) or eps < 0:
        raise MetricInputError(f"eps must be a finite number >= 0, got {eps!r}.")
    tp = np.diag(m)
    den = m.sum(axis=0) + m.sum(axis=1) - tp + float(eps)
    return np.divide(tp, den, out=np.zeros_like(tp), where=den > 0)  # absent class with eps=0: 0, not NaN


def pangaea_miou(cm: Any, eps: float = 1e-6) -> float:
    """PANGAEA-bench mIoU (Sen1Floods11, HLS Burn Scars, SpaceNet7): plain mean over **all** K classes.

    Raises:
        MetricInputError: the matrix counts nothing.
    """
    m = _check_cm(cm)
    _require_counts(m, "PANGAEA mIoU")
    return float(pangaea_per_class_iou(m, eps).mean())


# ----------------------------------------------------------------------------------------------------------
# F1
# ----------------------------------------------------------------------------------------------------------


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, average: str) -> float | np.ndarray:
    """F1 per class = 2TP / (2TP + FP + FN), 0 where the denominator is 0; then averaged."""
    if average not in _F1_AVERAGES:
        raise MetricInputError(f"average={average!r} is not supported; expected one of {list(_F1_AVERAGES)}.")
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    if average == "micro":
        den = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / den) if den > 0 else 0.0
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    if average == "none":
        return f1
    if average == "macro":
        return float(f1.mean())
    support = tp + fn  # weighted
    return float((f1 * support).sum() / support.sum()) if support.sum() > 0 else 0.0


def multiclass_f1(
    y_true: Any,
    y_pred: Any,
    num_classes: int,
    average: F1Average = "macro",
    ignore_index: int | None = None,
) -> float | np.ndarray:
    """F1 score of single-label (multiclass) predictions.

    Per class c: F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), **0** when the class is in neither truth nor
    prediction (torchmetrics ``zero_division=0``).

    Averages:
        * ``"none"``: the (K,) per-class array.
        * ``"macro"``: unweighted mean over **all K classes** (absent ones count as 0).  This is how the
          original code reports ``F1_Score_macro`` (``sum(f1) / len(f1)`` over torchmetrics' per-class F1), and
          it equals ``sklearn.metrics.f1_score(..., labels=range(K), average="macro", zero_division=0)``.
          Note: torchmetrics' own ``average="macro"`` for multiclass instead leaves out classes absent from
          both truth and prediction; the two agree whenever every class appears.
        * ``"weighted"``: mean weighted by support (number of true elements per class).
        * ``"micro"``: global F1, which for single-label data equals accuracy (as a fraction).

    Args:
        y_true, y_pred: integer labels of the same shape (any shape; flattened).
        num_classes: K.
        average: see above.
        ignore_index: elements whose true label equals it are dropped.

    Returns:
        a python float in [0, 1], or a (K,) float64 array for ``average="none"``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes, ignore_index=ignore_index).astype(np.float64)
    tp = np.diag(cm)
    return _f1_from_counts(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp, average)


def _check_binary(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])
        raise MetricInputError(
            f"{name} must hold binary 0/1 values; found {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}."
        )
    return arr.astype(bool)


def multilabel_f1(
    y_true: Any,
    y_pred: Any,
    average: F1Average = "weighted",
    threshold: float = 0.5,
    from_logits: bool = False,
) -> float | np.ndarray:
    """F1 score of multi-label predictions (torchmetrics ``task="multilabel"``).

    Per label l: F1_l = 2 TP_l / (2 TP_l + FP_l + FN_l), **0** when the label has no true and no predicted
    positive (torchmetrics ``zero_division=0``; it counts as 0 in the macro mean, as in torchmetrics).

    Averages:
        * ``"none"``: the (L,) per-label array.
        * ``"macro"``: unweighted mean over all L labels (PASTIS-HD classif).
        * ``"weighted"``: mean weighted by label support, the number of samples where the label is true
          (TreeSatAI-TS); 0 when no label is ever true.
        * ``"micro"``: one F1 from TP, FP, FN summed over all labels.

    Args:
        y_true: (N, L) binary ground truth (bool, or ints/floats that are exactly 0 or 1).
        y_pred: (N, L) predictions: **bool or integer** arrays are taken as binary predictions (must be 0/1);
            **float** arrays are probabilities in [0, 1], positive where ``y_pred > threshold`` (strictly
            greater, as torchmetrics).
        average: see above.
        threshold: probability threshold (0.5 in AnySat).
        from_logits: apply a sigmoid to float ``y_pred`` before thresholding (torchmetrics does this on its
            own when values fall outside [0, 1]; here it must be asked for).

    Returns:
        a python float in [0, 1], or an (L,) float64 array for ``average="none"``.
    """
    t = _as_array(y_true, "y_true")
    p = _as_array(y_pred, "y_pred")
    if t.ndim != 2 or p.shape != t.shape:
        raise InputShapeError(
            f"y_true has shape {tuple(t.shape)} and y_pred {tuple(p.shape)}; expected two arrays of the same "
            "shape (N samples, L labels)."
        )
    t = _check_binary(t, "y_true")
    if np.issubdtype(p.dtype, np.floating):
        if not np.isfinite(p).all():
            raise NonFiniteInputError("y_pred contains NaN or infinite values; expected finite probabilities.")
        if from_logits:
            p = 1.0 / (1.0 + np.exp(-p.astype(np.float64)))
        elif p.min() < 0 or p.max() > 1:
            raise MetricInputError(
                f"y_pred holds floats in [{p.min():g}, {p.max():g}], outside [0, 1]; expected probabilities "
                "(apply a sigmoid, or pass from_logits=True for raw logits)."
            )
        p = p > float(threshold)
    else:
        p = _check_binary(p, "y_pred")
    tp = (t & p).sum(axis=0)
    fp = (~t & p).sum(axis=0)
    fn = (t & ~p).sum(axis=0)
    return _f1_from_counts(tp, fp, fn, average)
