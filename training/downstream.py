"""Downstream tasks with Lightning: linear probing (LP), "LP+" and fine-tuning (FT) of AnySat (anysat-model.md §3).

:class:`AnySatTask` is one LightningModule for every protocol and task of the paper:

==================  ==========================================  ================================  =================
task                features -> head                            loss                              metrics logged
==================  ==========================================  ================================  =================
multilabel          tile token (B, D) -> :class:`TileHead`      BCE with logits                   f1_weighted,
                                                                                                  f1_macro, f1_micro
multiclass          tile token (B, D) -> :class:`TileHead`      CE (ignore_index, class weights)  oa, f1_macro,
                                                                                                  f1_weighted
segmentation        dense (B, H, W, 2D) -> :class:`DenseHead`   CE (ignore_index, class weights)  miou, oa,
                    (pixel-shuffled to the label grid)                                            pangaea_miou
change-detection    dense features of the series that spans     CE (ignore_index, class weights)  iou (class 1),
                    both dates -> :class:`DenseHead`                                              miou, oa
==================  ==========================================  ================================  =================

Dataset task names map onto these: ``"classification"`` and ``"pixel-classification"`` (TimeSen2Crop's one-pixel
tiles, classified from the tile token as in the paper) are ``"multiclass"``; GeoPlex-mini's ``"change"`` is
``"change-detection"``.

**Change detection.**  Every loader that has the task (BraDD-S1TS; GeoPlex-mini ``task="change"``) gives *one* time
series whose dates span the period before and after the change, with one ``(H, W)`` label (1 = changed).  AnySat's
temporal projector sees the whole series, so "before" and "after" are both inside each dense feature; the task is
therefore a two-class segmentation of the dense features of that series (the original code's BraDD-S1TS protocol)
and reports the IoU of class 1.  No second encoder pass, feature difference or Siamese head is needed; a loader
that gave two separate acquisitions would stack them into one series (with their dates) to use this module.

**Protocols.**  ``freeze=True`` is linear probing: the encoder's parameters get no gradient and the encoder stays in
**eval** mode (no L-TAE/attention dropout, deterministic features, the encoder runs under ``torch.no_grad``).  This
is the intended behaviour; the original code froze the parameters but left the encoder in train mode (its L-TAE
dropout stayed active during LP, §3.1), so its LP features were noisier than those seen at test time.
``freeze_new=True`` is "LP+": only the projectors of ``modalities`` (a fresh one for a modality the checkpoint has
none for, e.g. a new sensor) and the head train; the rest of the encoder is frozen in eval mode.  Otherwise
everything trains (FT).

**Metrics** are the paper's, computed once by :mod:`anysat_core.analysis.metrics` (numpy).  The module accumulates
counts over an epoch (confusion matrices; per-label 2 x 2 matrices for multi-label), sums them across processes
under DDP, and computes the metrics at epoch end: ``val/<metric>``, ``test/<metric>``, with ``val/loss`` and
``train/loss``.  Units are the metrics module's: F1 and IoU are fractions in [0, 1], ``oa`` is in percent.  An
``ignore_index`` outside ``0..K-1`` (e.g. -1) drops those pixels from loss and metrics; one inside (PASTIS-HD
void = 19, FLAIR "other" = 12) is left out of the loss and its confusion-matrix row *and* column are zeroed before
mIoU/OA, as in the original ``IoU`` class.

Not done here: FLAIR's test-time five-crop averaging (§3.1) and early stopping (a callback of the CLI configs,
on :attr:`AnySatTask.monitor`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, cast

import lightning
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anysat_core.analysis import metrics as M
from anysat_core.errors import ConfigError, InputShapeError, MetricInputError, UnknownModalityError
from anysat_core.modalities import MODALITIES
from anysat_core.model import AnySat
from training.heads import DenseHead, TileHead, resize_logits

__all__ = [
    "METRICS",
    "PAPER_METRIC",
    "SCHEDULERS",
    "TASKS",
    "AnySatTask",
    "TaskMetrics",
    "dataset_defaults",
    "loader_task",
    "normalize_task",
]

log = logging.getLogger(__name__)

#: The tasks of :class:`AnySatTask`.
TASKS: tuple[str, ...] = ("multilabel", "multiclass", "segmentation", "change-detection")
_TASK_ALIASES = {
    "classification": "multiclass",
    "pixel-classification": "multiclass",
    "change": "change-detection",
    "semseg": "segmentation",
}
#: Metrics computed (and logged as ``<stage>/<name>``) per task; the first is the default ``metric``.
METRICS: dict[str, tuple[str, ...]] = {
    "multilabel": ("f1_weighted", "f1_macro", "f1_micro"),
    "multiclass": ("oa", "f1_macro", "f1_weighted"),
    "segmentation": ("miou", "oa", "pangaea_miou"),
    "change-detection": ("iou", "miou", "oa"),
}
#: The metric the paper reports, per dataset and task (anysat-model.md §3.2; GeoPlex-mini: this project's report).
PAPER_METRIC: dict[tuple[str, str], str] = {
    ("treesatai-ts", "multilabel"): "f1_weighted",
    ("pastis-hd", "multilabel"): "f1_macro",
    ("pastis-hd", "segmentation"): "miou",
    ("flair", "segmentation"): "miou",
    ("flair", "multilabel"): "f1_weighted",
    ("planted", "multiclass"): "f1_macro",
    ("sickle", "segmentation"): "miou",
    ("bradd-s1ts", "change-detection"): "iou",
    ("timesen2crop", "multiclass"): "oa",
    ("geoplex-mini", "multilabel"): "f1_macro",
    ("geoplex-mini", "segmentation"): "miou",
    ("geoplex-mini", "change-detection"): "iou",
}
#: Dense output modality of the paper's segmentation protocols (§3.2).
_DENSE_MODALITY = {"pastis-hd": "s2", "flair": "aerial-flair", "sickle": "s2", "bradd-s1ts": "s1"}
#: Learning-rate schedules: warm-up + cosine per step, ReduceLROnPlateau on val/loss per epoch, or constant.
SCHEDULERS: tuple[str, ...] = ("cosine", "plateau", "none")
#: Weights names that :meth:`AnySat.from_pretrained` resolves (anything else is a checkpoint path).
_PRETRAINED = ("geoplex-mini", "base")
_DEFAULT_LR = {"probe": 2e-4, "finetune": 5e-5}


def normalize_task(task: str) -> str:
    """The :data:`TASKS` name of ``task`` (dataset names such as ``"classification"`` or ``"change"`` map onto them).

    Raises:
        ConfigError: an unknown task.
    """
    if not isinstance(task, str):
        raise ConfigError(f"task={task!r}; expected one of {', '.join(TASKS)}")
    t = _TASK_ALIASES.get(task.strip().lower(), task.strip().lower())
    if t not in TASKS:
        aliases = ", ".join(f"{k!r} (= {v})" for k, v in _TASK_ALIASES.items())
        raise ConfigError(f"task={task!r} is not a downstream task; expected one of {', '.join(TASKS)} (or {aliases})")
    return t


def _other_task_classes(name: str, classes: tuple[str, ...], task: str) -> tuple[int, int | None] | None:
    """(num_classes, ignore_index) of a dataset's non-default task, None when the dataset does not offer it."""
    if (name, task) == ("pastis-hd", "multilabel"):
        return len(classes) - 2, None  # background (0) and void (19) are dropped from the multi-hot
    if (name, task) in {("flair", "multilabel"), ("geoplex-mini", "segmentation")}:
        return len(classes), None
    if (name, task) == ("geoplex-mini", "change-detection"):
        return 2, None  # 0 unchanged, 1 changed
    return None


def loader_task(name: str, task: str | None = None) -> str:
    """The ``task=`` value the dataset loader ``name`` takes for the downstream ``task`` (GeoPlex-mini calls change
    detection ``"change"``; other loaders take their own task name, which this returns for their default task)."""
    from anysat_core.data.datasets import dataset_class

    cls = dataset_class(name)
    t = normalize_task(task) if task is not None else normalize_task(cls.task)
    if cls.name == "geoplex-mini" and t == "change-detection":
        return "change"
    return cls.task if normalize_task(cls.task) == t else t


def dataset_defaults(name: str, task: str | None = None, modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Constructor arguments of :class:`AnySatTask` for the dataset loader ``name`` (facts of its class).

    Args:
        name: a registered dataset (``anysat_core.list_datasets()``).
        task: the downstream task (default: the dataset's own); another task the loader offers (PASTIS-HD and FLAIR
            ``"multilabel"``, GeoPlex-mini ``"segmentation"``/``"change"``) gets its class count.
        modalities: the modalities used (default: the dataset's ``default_modalities``).

    Returns:
        ``task``, ``num_classes``, ``ignore_index``, ``patch_size_m``, ``modalities``, ``metric`` and, for dense
        tasks, ``output_modality`` and ``upsample`` (label pixels per dense cell, assuming the labels lie on the
        output modality's pixel grid: FLAIR aerial 2 m cells -> 0.2 m labels = 10).

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        ConfigError: the dataset has no labels for ``task``.
    """
    from anysat_core.data.datasets import dataset_class

    cls = dataset_class(name)
    if cls.task == "pretraining":
        raise ConfigError(f"dataset {cls.name!r} has no downstream labels (task 'pretraining'); pick a labelled one")
    native = normalize_task(cls.task)
    t = normalize_task(task) if task is not None else native
    if t == native:
        num_classes, ignore_index = len(cls.classes), cls.ignore_index
    else:
        other = _other_task_classes(cls.name, cls.classes, t)
        if other is None:
            raise ConfigError(
                f"dataset {cls.name!r} provides task {native!r}, not {t!r}; use task={native!r}, or give task, "
                "num_classes and ignore_index explicitly (without dataset=) for labels of your own"
            )
        num_classes, ignore_index = other
    mods = tuple(modalities) if modalities is not None else tuple(cls.default_modalities)
    out: dict[str, Any] = {
        "task": t,
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "patch_size_m": float(cls.patch_size_m),
        "modalities": list(mods),
        "metric": PAPER_METRIC.get((cls.name, t), METRICS[t][0]),
    }
    if t in ("segmentation", "change-detection") and mods:
        spatial = [m for m in mods if m in MODALITIES and not MODALITIES[m].tile_token]
        if cls.name in _DENSE_MODALITY and _DENSE_MODALITY[cls.name] in mods:
            dense = _DENSE_MODALITY[cls.name]
        elif cls.name == "geoplex-mini" and spatial:  # its labels lie on the finest selected grid
            dense = min(spatial, key=lambda m: MODALITIES[m].gsd_m)
        else:
            dense = spatial[0] if spatial else mods[0]
        out["output_modality"] = dense
        out["upsample"] = _cells_to_pixels(dense)
    return out


def _cells_to_pixels(modality: str) -> int:
    """Pixels of ``modality`` per side of one dense cell (token_m / gsd_m, at least 1)."""
    m = MODALITIES[modality]
    return max(1, round(m.token_m / m.gsd_m))


# ----------------------------------------------------------------------------------------------------------
# metrics: counts accumulated over an epoch, values from anysat_core.analysis.metrics
# ----------------------------------------------------------------------------------------------------------


class TaskMetrics:
    """Accumulates the counts of one stage's epoch and computes the task's metrics with ``anysat_core``'s code.

    * multiclass, segmentation, change detection: a (K, K) confusion matrix
      (:func:`~anysat_core.analysis.metrics.confusion_matrix`; rows true, columns predicted).
    * multilabel: one (2, 2) confusion matrix per label, shape (K, 2, 2), of ``sigmoid(logit) > threshold``.

    Counts are all any metric here needs, so they can be summed across processes (DDP) and batches.  F1 values are
    computed by expanding the counts back into (true, predicted) label arrays that have exactly those counts and
    calling :func:`~anysat_core.analysis.metrics.multiclass_f1` / :func:`~anysat_core.analysis.metrics.multilabel_f1`
    (F1 depends only on the counts; for multi-label the labels are independent columns).

    Args:
        task: one of :data:`TASKS`.
        num_classes: K.
        ignore_index: label value left out (see the module docstring for a value inside 0..K-1).
        threshold: probability threshold of multi-label predictions.
    """

    def __init__(self, task: str, num_classes: int, ignore_index: int | None = None, threshold: float = 0.5) -> None:
        self.task = normalize_task(task)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.threshold = float(threshold)
        self.names = METRICS[self.task]
        #: class index whose row and column are zeroed before the metrics (an ignore_index inside 0..K-1)
        self.zero_class = ignore_index if ignore_index is not None and 0 <= ignore_index < num_classes else None
        self.counts = self._empty()

    def _empty(self) -> np.ndarray:
        k = self.num_classes
        return np.zeros((k, 2, 2) if self.task == "multilabel" else (k, k), dtype=np.int64)

    def reset(self) -> None:
        """Forget the counts (start of an epoch)."""
        self.counts = self._empty()

    @property
    def total(self) -> int:
        """Number of counted elements (tiles or pixels; for multi-label, tiles)."""
        return int(self.counts[0].sum()) if self.task == "multilabel" else int(self.counts.sum())

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch.

        Args:
            logits: multilabel ``(B, K)``; multiclass ``(B, K)``; dense ``(B, K, H, W)``.
            target: multilabel ``(B, K)`` 0/1; multiclass ``(B,)`` class indices; dense ``(B, H, W)``.
        """
        logits = logits.detach()
        if self.task == "multilabel":
            pred = (torch.sigmoid(logits.float()) > self.threshold).cpu().numpy().astype(np.int64)
            true = target.detach().cpu().numpy().astype(np.int64)
            for c in range(self.num_classes):
                self.counts[c] += M.confusion_matrix(true[:, c], pred[:, c], 2)
            return
        pred = logits.argmax(dim=1).cpu().numpy()
        true = target.detach().cpu().numpy().astype(np.int64)
        drop = None if self.zero_class is not None else self.ignore_index
        self.counts += M.confusion_matrix(true, pred, self.num_classes, ignore_index=drop)

    def compute(self) -> dict[str, float]:
        """The task's metrics from the counts so far (NaN where a metric is undefined, e.g. nothing counted)."""
        if self.total == 0:
            return {name: math.nan for name in self.names}
        out: dict[str, float] = {}
        for name in self.names:
            try:
                out[name] = float(self._metric(name))
            except MetricInputError:
                out[name] = math.nan
        return out

    def _metric(self, name: str) -> float:
        cm, zc = self.counts, self.zero_class
        if self.task == "multilabel":
            true, pred = self._expand_multilabel()
            return float(M.multilabel_f1(true, pred, average=name.removeprefix("f1_")))  # type: ignore[arg-type]
        if name == "oa":
            return M.overall_accuracy(cm, zero_class=zc)
        if name.startswith("f1_"):
            idx = np.repeat(np.arange(cm.size), cm.ravel())
            true, pred = idx // self.num_classes, idx % self.num_classes
            average = name.removeprefix("f1_")
            return float(M.multiclass_f1(true, pred, self.num_classes, average=average, ignore_index=zc))  # type: ignore[arg-type]
        if name == "miou":
            return M.miou(cm, zero_class=zc)
        if name == "pangaea_miou":
            return M.pangaea_miou(cm if zc is None else M.zero_out_class(cm, zc))
        if name == "iou":
            return M.iou_of_class(cm if zc is None else M.zero_out_class(cm, zc), 1)
        raise ConfigError(f"unknown metric {name!r}; expected one of {', '.join(self.names)}")  # pragma: no cover

    def _expand_multilabel(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, K) true and predicted 0/1 arrays whose per-label confusion matrices are the counts."""
        true_of_cell, pred_of_cell = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])  # cells (t, p) of a 2 x 2 matrix
        cols_t = [np.repeat(true_of_cell, c.ravel()) for c in self.counts]
        cols_p = [np.repeat(pred_of_cell, c.ravel()) for c in self.counts]
        return np.stack(cols_t, axis=1), np.stack(cols_p, axis=1)


# ----------------------------------------------------------------------------------------------------------
# learning-rate schedule
# ----------------------------------------------------------------------------------------------------------


class WarmupCosine:
    """LR factor at optimiser step ``step``: linear warm-up over ``warmup`` steps, then cosine to 0 at ``total``."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = int(warmup), max(1, int(total))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------------------
# the LightningModule
# ----------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}={value!r}; expected an int >= {minimum}")
    return int(value)


class AnySatTask(lightning.LightningModule):
    """Linear probing, LP+ and fine-tuning of AnySat on a downstream task (see the module docstring).

    Every argument has a default so that LightningCLI can expose it; ``dataset=`` fills ``task``, ``num_classes``,
    ``ignore_index``, ``patch_size_m``, ``modalities``, ``metric``, ``output_modality`` and ``upsample`` from the
    dataset class (:func:`dataset_defaults`) wherever they are left at None.

    Args:
        task: ``"multilabel"``, ``"multiclass"``, ``"segmentation"`` or ``"change-detection"`` (dataset names such
            as ``"classification"``, ``"pixel-classification"`` and ``"change"`` are accepted).
        num_classes: K, the number of labels/classes (>= 1 for multilabel, >= 2 otherwise).
        dataset: a registered dataset name whose facts fill the arguments left at None.
        ignore_index: label value left out of loss and metrics (None: every value counts; with ``dataset``, None
            takes the dataset's value).
        class_weights: K loss weights (CE ``weight``; BCE per-label ``weight``); None for equal weights.
        metric: the headline metric (one of :data:`METRICS` of the task), monitored as ``val/<metric>``.
        weights: encoder weights: a checkpoint path (:meth:`AnySat.from_checkpoint`, released or this package's
            format), ``"geoplex-mini"`` (this project's shipped checkpoint) or ``"base"`` (the released weights,
            :meth:`AnySat.from_pretrained`), or None for a randomly initialised encoder of ``size``.
        size: model size for ``weights=None`` (``"test"``, ``"tiny"``, ``"small"``, ``"base"``).
        modalities: modalities fed to the encoder (other batch keys are ignored); None: every modality in the batch.
            A random encoder gets projectors for these only.
        patch_size_m: AnySat patch side in metres (required, directly or from ``dataset``).
        output_modality: modality whose sub-patches make the dense features (dense tasks; default: the encoder's
            default, the first modality of the batch).
        upsample: label pixels per dense cell along a side, the head's pixel-shuffle factor (dense tasks; default
            1).  Any remaining mismatch with the label grid is resampled (:func:`training.heads.resize_logits`).
        freeze: linear probing: the encoder is frozen **and kept in eval mode** (the original kept train mode).
        freeze_new: "LP+": train only the projectors of ``modalities`` (fresh ones where the checkpoint has none)
            and the head; the rest of the encoder is frozen in eval mode.
        lr: AdamW learning rate; None: 2e-4 when probing (``freeze``/``freeze_new``), 5e-5 when fine-tuning.
        weight_decay: AdamW weight decay (0 in most of the paper's configs).
        scheduler: ``"cosine"`` (linear warm-up then cosine to 0, per step, over the trainer's estimated steps),
            ``"plateau"`` (ReduceLROnPlateau on ``val/loss`` per epoch) or ``"none"``.
        warmup_fraction: share of the steps spent warming up (``"cosine"``; the paper: 20 of 200 epochs = 0.1).
        plateau_factor: LR factor of ``"plateau"`` (paper 0.1).
        plateau_patience: epochs without improvement of ``val/loss`` before ``"plateau"`` lowers the LR (paper 10).
        threshold: probability threshold of multi-label predictions (paper 0.5).

    Raises:
        ConfigError: an unknown task, metric or scheduler, a bad ``num_classes``/``class_weights``/``ignore_index``,
            or a missing ``patch_size_m``.
        UnknownModalityError, CheckpointError, PretrainedWeightsError: from the encoder's construction.
    """

    def __init__(
        self,
        task: str | None = None,
        num_classes: int | None = None,
        dataset: str | None = None,
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        metric: str | None = None,
        weights: str | None = None,
        size: str = "tiny",
        modalities: list[str] | None = None,
        patch_size_m: float | None = None,
        output_modality: str | None = None,
        upsample: int | None = None,
        freeze: bool = False,
        freeze_new: bool = False,
        lr: float | None = None,
        weight_decay: float = 0.0,
        scheduler: str = "cosine",
        warmup_fraction: float = 0.1,
        plateau_factor: float = 0.1,
        plateau_patience: int = 10,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if isinstance(modalities, str):
            raise ConfigError(f"modalities={modalities!r} is a string; give a list of names, e.g. ['s2']")
        if dataset is not None:
            d = dataset_defaults(dataset, task, modalities)
            task = d["task"]
            num_classes = d["num_classes"] if num_classes is None else num_classes
            ignore_index = d["ignore_index"] if ignore_index is None else ignore_index
            patch_size_m = d["patch_size_m"] if patch_size_m is None else patch_size_m
            modalities = d["modalities"] if modalities is None else modalities
            metric = d["metric"] if metric is None else metric
            output_modality = d.get("output_modality") if output_modality is None else output_modality
            upsample = d.get("upsample") if upsample is None else upsample
        if task is None:
            raise ConfigError(f"no task given; pass task= (one of {', '.join(TASKS)}) or dataset= (a registered name)")
        self.task = normalize_task(task)
        self.dense = self.task in ("segmentation", "change-detection")
        if num_classes is None:
            raise ConfigError(f"no num_classes given for task {self.task!r}; pass num_classes= or dataset=")
        self.num_classes = _check_int("num_classes", num_classes, 1 if self.task == "multilabel" else 2)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ConfigError(f"ignore_index={ignore_index!r}; expected an int label value (e.g. -1) or None")
        if ignore_index is not None and self.task == "multilabel":
            raise ConfigError("ignore_index is not used by multilabel targets (0/1 per label); pass None")
        self.ignore_index = ignore_index
        self.metric = metric if metric is not None else METRICS[self.task][0]
        if self.metric not in METRICS[self.task]:
            raise ConfigError(f"metric={self.metric!r} for task {self.task!r}; expected one of {METRICS[self.task]}")
        if patch_size_m is None:
            raise ConfigError("no patch_size_m given; pass the patch side in metres (e.g. 20) or dataset=")
        if isinstance(patch_size_m, bool) or not isinstance(patch_size_m, (int, float)) or not patch_size_m > 0:
            raise ConfigError(f"patch_size_m={patch_size_m!r}; expected a positive number of metres (e.g. 20)")
        self.patch_size_m = float(patch_size_m)
        self.modalities: tuple[str, ...] | None = tuple(modalities) if modalities else None
        for m in self.modalities or ():
            MODALITIES[m]  # unknown name -> UnknownModalityError listing the registry
        if output_modality is not None:
            MODALITIES[output_modality]
            if self.modalities is not None and output_modality not in self.modalities:
                raise ConfigError(
                    f"output_modality={output_modality!r} is not among modalities {list(self.modalities)}; "
                    "add it or pick one of them"
                )
        self.output_modality = output_modality
        self.upsample = _check_int("upsample", 1 if upsample is None else upsample, 1)
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler={scheduler!r}; expected one of {', '.join(SCHEDULERS)}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction={warmup_fraction!r}; expected a share in [0, 1)")
        # (not self.freeze: LightningModule.freeze() is a method)
        self.freeze_encoder, self.freeze_new = bool(freeze), bool(freeze_new)
        self.weight_decay, self.scheduler, self.warmup_fraction = float(weight_decay), scheduler, float(warmup_fraction)
        self.plateau_factor, self.plateau_patience = float(plateau_factor), int(plateau_patience)
        probing = self.freeze_encoder or self.freeze_new
        self.lr = float(lr) if lr is not None else _DEFAULT_LR["probe" if probing else "finetune"]
        if not self.lr > 0:
            raise ConfigError(f"lr={lr!r}; expected a positive learning rate (e.g. 2e-4 for LP, 5e-5 for FT)")
        #: the logged metric that callbacks (checkpointing, early stopping) should follow, and its direction
        self.monitor = f"val/{self.metric}"
        self.monitor_mode = "max"

        self.configure_encoder(weights, size)
        self.configure_head()
        self.configure_losses(class_weights)
        self.val_metrics = TaskMetrics(self.task, self.num_classes, self.ignore_index, threshold)
        self.test_metrics = TaskMetrics(self.task, self.num_classes, self.ignore_index, threshold)
        self.train()  # a frozen encoder starts in eval mode (Lightning restores the modes it finds at fit start)

    @classmethod
    def from_dataset(cls, name: str, **kwargs: Any) -> AnySatTask:
        """``AnySatTask(dataset=name, **kwargs)``: task, classes, ignore_index, patch size, modalities from the
        dataset class; any keyword overrides them (e.g. ``task="multilabel"``, ``modalities=["s2"]``)."""
        return cls(dataset=name, **kwargs)

    # ------------------------------------------------------------------ construction
    def configure_encoder(self, weights: str | os.PathLike[str] | None, size: str) -> None:
        """Build or load the encoder and mark the parameters that train (see ``freeze``/``freeze_new``)."""
        if weights is None:
            encoder = AnySat(size=size, modalities=self.modalities) if self.modalities else AnySat(size=size)
        elif not os.path.exists(weights) and str(weights) in _PRETRAINED:
            encoder = AnySat.from_pretrained(str(weights))
        else:
            encoder = AnySat.from_checkpoint(weights)
        missing = [m for m in self.modalities or () if m not in encoder.modalities]
        if missing and not self.freeze_new and self.freeze_encoder:
            raise UnknownModalityError(
                f"the encoder ({weights}) has no projector for {', '.join(missing)}; it has "
                f"{', '.join(encoder.modalities)}. A frozen encoder cannot learn one: use freeze_new=True (LP+: "
                "train new projectors and the head) or freeze=False, or drop them from modalities"
            )
        if missing:
            from anysat_core.model.projectors import build_projector

            log.info("adding freshly initialised projectors for %s to the encoder", ", ".join(missing))
            for m in missing:
                encoder.add_module(f"projector_{m}", build_projector(MODALITIES[m], encoder.embed_dim))
            encoder.config = encoder.config.replace(modalities=(*encoder.config.modalities, *missing))
        self.encoder = encoder
        trainable = not (self.freeze_encoder or self.freeze_new)
        for p in encoder.parameters():
            p.requires_grad_(trainable)
        if self.freeze_new:
            for m in self._projector_names():
                for p in encoder.projector(m).parameters():
                    p.requires_grad_(True)

    def _projector_names(self) -> tuple[str, ...]:
        return self.modalities if self.modalities is not None else self.encoder.modalities

    def configure_head(self) -> None:
        """LayerNorm + Linear on the tile token (D) or on the dense features (2D), see :mod:`training.heads`."""
        D = self.encoder.embed_dim
        self.head: nn.Module = (
            DenseHead(2 * D, self.num_classes, self.upsample) if self.dense else TileHead(D, self.num_classes)
        )

    def configure_losses(self, class_weights: Sequence[float] | None) -> None:
        """Check and store the class weights (a buffer, so it follows the module's device)."""
        w: torch.Tensor | None = None
        if class_weights is not None:
            w = torch.as_tensor(list(class_weights), dtype=torch.float32)
            if w.shape != (self.num_classes,) or not torch.isfinite(w).all() or (w < 0).any():
                raise ConfigError(
                    f"class_weights has {w.numel()} value(s) {w.tolist()[:8]}; expected {self.num_classes} finite, "
                    "non-negative weights, one per class"
                )
        self.register_buffer("class_weights", w)

    # ------------------------------------------------------------------ modes
    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter trains (linear probing): the encoder then runs in eval mode, no grad."""
        return self.freeze_encoder and not self.freeze_new

    def train(self, mode: bool = True) -> AnySatTask:
        """Set train/eval mode; a frozen encoder (``freeze``/``freeze_new``) stays in eval mode, except the
        projectors that LP+ trains."""
        super().train(mode)
        if mode and (self.freeze_encoder or self.freeze_new):
            self.encoder.eval()
            if self.freeze_new:
                for m in self._projector_names():
                    self.encoder.projector(m).train()
        return self

    # ------------------------------------------------------------------ forward
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move the tensors of a flat batch dict to ``device``; other values (``meta``: frozen GeoInfo dataclasses,
        which Lightning's generic mover refuses, names...) stay as they are."""
        if isinstance(batch, Mapping):
            return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def encoder_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The encoder's part of a batch: each modality with its ``_dates`` and ``_mask`` (labels, meta dropped)."""
        mods = self.modalities or tuple(k for k in batch if k in MODALITIES)
        missing = [m for m in mods if m not in batch]
        if missing or not mods:
            have = [k for k in batch if k in MODALITIES]
            raise InputShapeError(
                f"the batch has no {', '.join(missing) or 'modality'} (it has {', '.join(have) or 'none'}); "
                "load the dataset with those modalities or set modalities= to ones it provides"
            )
        out: dict[str, Any] = {}
        for m in mods:
            out[m] = batch[m]
            for suffix in ("_dates", "_mask"):
                if f"{m}{suffix}" in batch:
                    out[f"{m}{suffix}"] = batch[f"{m}{suffix}"]
        return out

    def features(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Encoder features: tile token ``(B, D)``, or dense ``(B, H, W, 2D)`` for segmentation/change."""
        inputs = self.encoder_inputs(batch)
        with torch.no_grad() if self.encoder_frozen else nullcontext():
            return self.encoder(
                inputs,
                patch_size_m=self.patch_size_m,
                output="dense" if self.dense else "tile",
                output_modality=self.output_modality if self.dense else None,
            )

    def forward(self, batch: Mapping[str, Any], label_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits: ``(B, K)`` for tile tasks; ``(B, K, H, W)`` for dense tasks, resampled to ``label_size`` when
        given and different from the head's grid."""
        logits = self.head(self.features(batch))
        if self.dense and label_size is not None:
            logits = resize_logits(logits, label_size)
        return logits

    # ------------------------------------------------------------------ loss
    def _target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "label" not in batch:
            raise InputShapeError(f"the batch has no 'label' (keys: {', '.join(map(str, batch))}); a labelled "
                                  "dataset split is needed for training and evaluation")  # fmt: skip
        y = batch["label"]
        B = next(iter(self.encoder_inputs(batch).values())).shape[0]
        K, ii = self.num_classes, self.ignore_index
        expected = {"multilabel": f"(B, {K}) multi-hot", "multiclass": "(B,) class indices"}.get(
            self.task, "(B, H, W) class map"
        )
        ndim = {"multilabel": 2, "multiclass": 1}.get(self.task, 3)
        if not isinstance(y, torch.Tensor) or y.dim() != ndim or y.shape[0] != B or (ndim == 2 and y.shape[1] != K):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise InputShapeError(
                f"label has shape {shape} for task {self.task!r} with num_classes={K}; expected {expected}. Check "
                "task and num_classes against the dataset (dataset_defaults(name) gives them)"
            )
        if self.task == "multilabel":
            return y.float()
        if y.is_floating_point():
            raise InputShapeError(f"label has dtype {y.dtype}; expected integer class indices for {self.task!r}")
        valid = y if ii is None else y[y != ii]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= K):
            raise ConfigError(
                f"labels hold values in [{int(valid.min())}, {int(valid.max())}] but num_classes={K} "
                f"(ignore_index={ii}); set num_classes to the dataset's class count and ignore_index to its "
                "unlabelled value"
            )
        return y.long()

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE with logits (multilabel) or cross-entropy with ``ignore_index`` and class weights; 0 (with a graph)
        when every target is ignored."""
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target, weight=self._class_weights())
        ii = self.ignore_index if self.ignore_index is not None else -100
        if not bool((target != ii).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=self._class_weights(), ignore_index=ii)

    def _class_weights(self) -> torch.Tensor | None:
        return cast("torch.Tensor | None", self.class_weights)

    def _step(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        target = self._target(batch)
        logits = self(batch, tuple(target.shape[-2:]) if self.dense else None)
        loss = self.loss(logits, target)
        B = target.shape[0]
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=B)
        else:
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=B)
            (self.val_metrics if stage == "val" else self.test_metrics).update(logits, target)
        return loss

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss (logged as ``train/loss``)."""
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss (``val/loss``) and metric counts of one batch."""
        self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss (``test/loss``) and metric counts of one batch."""
        self._step(batch, "test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"logits": ..., "pred": ...}``: probabilities > threshold (multilabel, bool) or argmax class indices."""
        label = batch.get("label")
        size = tuple(label.shape[-2:]) if self.dense and isinstance(label, torch.Tensor) else None
        logits = self(batch, size)
        if self.task == "multilabel":
            pred = torch.sigmoid(logits) > self.val_metrics.threshold
        else:
            pred = logits.argmax(dim=1)
        return {"logits": logits, "pred": pred}

    # ------------------------------------------------------------------ metrics at epoch ends
    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def _log_metrics(self, acc: TaskMetrics, stage: str) -> None:
        counts = torch.as_tensor(acc.counts, device=self.device)
        if self.trainer.world_size > 1:
            counts = cast(torch.Tensor, self.all_gather(counts)).sum(dim=0)
        acc.counts = counts.cpu().numpy()
        for name, value in acc.compute().items():
            self.log(f"{stage}/{name}", value, prog_bar=name == self.metric)
        acc.reset()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """AdamW over the trainable parameters (a frozen encoder's are left out) and the chosen LR schedule."""
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        kind = self.scheduler
        if kind == "none":
            return opt
        if kind == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=self.plateau_factor, patience=self.plateau_patience
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss", "interval": "epoch"},
            }
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigError(
                "scheduler='cosine' needs a finite number of steps; set trainer max_steps or max_epochs, or use "
                "scheduler='plateau' or 'none'"
            )
        warmup = round(self.warmup_fraction * total)
        cosine = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(warmup, int(total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
