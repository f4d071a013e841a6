"""Evaluation of AnySat outputs: the metrics the paper reports (numpy only, no torch needed).

See :mod:`anysat_core.analysis.metrics` for the definitions and which call gives which reported number.
"""

from anysat_core.analysis.metrics import (
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
