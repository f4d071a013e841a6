"""The batch contract between the pretraining datamodule and :class:`~training.jepa.AnySatJEPA`."""

from __future__ import annotations

from typing import Any, TypedDict

import torch

__all__ = ["PretrainBatch"]


class PretrainBatch(TypedDict):
    """One pretraining batch: B tiles of one dataset at one patch size, with their JEPA masks.

    Keys:
        inputs: the collated sample dict of :func:`anysat_core.data.collate.collate`: modality tensors
            (``(B, C, H, W)`` images, ``(B, T, C, H, W)`` series, normalised), ``"<m>_dates"`` ``(B, T)`` day of
            year, optional ``"<m>_mask"`` (1 = valid) and ``"<m>_date_mask"``, and ``"meta"`` (a list).
        patch_size_m: patch side in metres for this batch (one of the dataset's scales); it fixes the
            h x h patch grid, P = h * h.
        context: ``(B, K)`` int64 raster indices into the h x h grid: the patches the student sees.
        targets: ``(B, n_targets, Kt)`` int64 raster indices: the target blocks the predictor must predict
            (never overlapping ``context`` in the same sample).
        dataset: name of the dataset the batch comes from (for logging).
    """

    inputs: dict[str, Any]
    patch_size_m: float
    context: torch.Tensor
    targets: torch.Tensor
    dataset: str
