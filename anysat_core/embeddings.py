"""Embed a whole dataset with a frozen AnySat model (features for probes, maps and retrieval).

::

    model = AnySat(size="tiny")
    X, y, metas = embed_dataset(model, GeoPlexMini(split="train"), patch_size_m=20)   # X (N, D), y (N, K)
    TileProbe("multilabel").fit(X, y)

The dataset is read in batches of ``batch_size`` samples (:func:`~anysat_core.data.collate.collate`), the model runs in
eval mode under ``torch.inference_mode`` (:func:`~anysat_core.features.extract_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from torch import nn

from anysat_core.data.collate import collate
from anysat_core.data.sample import GeoInfo
from anysat_core.errors import InputShapeError, OutputError
from anysat_core.features import extract_features

__all__ = ["embed_dataset"]


def _label_array(label: Any) -> Any:
    """A sample's label as a numpy array (tensors are moved to the CPU)."""
    if label is None:
        return None
    if hasattr(label, "detach"):
        return label.detach().cpu().numpy()
    return np.asarray(label)


def embed_dataset(
    model: nn.Module,
    dataset: Any,
    *,
    patch_size_m: float,
    output: str = "tile",
    batch_size: int = 8,
    indices: Sequence[int] | None = None,
    output_modality: str | None = None,
    precision: str = "fp32",
) -> tuple[np.ndarray | list[xr.DataArray], np.ndarray | list[Any], list[GeoInfo | None]]:
    """Features, labels and metadata of (a subset of) a dataset.

    Args:
        model: an AnySat model (its training flags are left as they were).
        dataset: any indexable dataset returning sample dicts (GeoPlexMini, an AnySatDataset...).
        patch_size_m: patch side in metres (the dataset's ``patch_size_m`` for the paper protocol).
        output: ``"tile"`` (one vector per sample), ``"patch"`` or ``"dense"`` (one map per sample).
        batch_size: samples per forward pass; samples of one batch need the same modalities and tile size.
        indices: which samples (default: all, in order).
        output_modality: modality of the ``dense`` tokens (default: the first input modality).
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"auto"``, as in :func:`~anysat_core.extract_features` (the
            maps of ``"patch"``/``"dense"`` record it in their ``precision`` attribute).

    Returns:
        ``(features, labels, metas)``: ``features`` a float32 ``(N, D)`` array for ``"tile"``, else a list of N
        DataArrays ``(feature, y, x)`` on the map; ``labels`` a numpy array stacked over samples when every label has
        the same shape (``(N,)``, ``(N, K)`` or ``(N, H, W)``), else a list (None for samples without ``label``);
        ``metas`` the samples' GeoInfo (None when absent), in the order of ``indices``.

    Raises:
        OutputError: an unknown ``output``.  InputShapeError: a bad ``batch_size`` or ``indices``.
        AnySatError subclasses of the dataset or the model (e.g. BatchSizeMismatchError for mixed modalities).
    """
    if output not in ("tile", "patch", "dense"):
        raise OutputError(f"output={output!r}; embed_dataset takes 'tile', 'patch' or 'dense'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputShapeError(f"batch_size={batch_size!r}; expected a positive int")
    n = len(dataset)
    idx = list(range(n)) if indices is None else list(indices)
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in idx):
        raise InputShapeError(f"indices={idx[:10]!r}; expected sample indices (ints)")
    idx = [int(i) for i in idx]
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise InputShapeError(f"indices {bad[:10]} are out of range for a dataset of {n} samples")
    if not idx:
        raise InputShapeError("embed_dataset got no sample (empty dataset or indices)")

    feats: list[Any] = []
    labels: list[Any] = []
    metas: list[GeoInfo | None] = []
    for start in range(0, len(idx), batch_size):
        samples = [dict(dataset[i]) for i in idx[start : start + batch_size]]
        for s in samples:
            labels.append(_label_array(s.get("label")))
            metas.append(s.get("meta") if isinstance(s.get("meta"), GeoInfo) else None)
        out = extract_features(
            model,
            collate(samples),
            patch_size_m=patch_size_m,
            output=output,
            output_modality=output_modality,
            precision=precision,
        )
        if output == "tile":
            assert isinstance(out, xr.DataArray)  # one DataArray (sample, feature) for output="tile"
            feats.append(np.asarray(out.values, dtype=np.float32))
        else:
            feats.extend(out)
    features: np.ndarray | list[xr.DataArray] = np.concatenate(feats, 0) if output == "tile" else feats
    shapes = {None if lab is None else lab.shape for lab in labels}
    stacked: np.ndarray | list[Any] = np.stack(labels) if len(shapes) == 1 and None not in shapes else labels
    return features, stacked, metas
