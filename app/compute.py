"""The explorer's computations, free of widgets: requests, features (cached), input composites, analysis layers.

Everything here is a plain function of its arguments (thread-safe), so that the state can run it off the page's
thread and tests can call it directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from anysat_core.errors import AnySatError, ConfigError, PatchSizeError
from anysat_core.modalities import MODALITIES
from app.config import AppConfig
from app.resources import FEATURE_CACHE, get_model
from app.sources import open_source

__all__ = [
    "FeatureRequest",
    "composite",
    "compute_features",
    "restrict_sample",
    "tile_extent_m",
    "valid_patch_sizes",
]


@dataclasses.dataclass(frozen=True)
class FeatureRequest:
    """Everything that determines a feature map (the cache key).

    Attributes:
        source: source key (:func:`app.sources.open_source`).
        tile: tile index in the source.
        modalities: modalities fed to the model, sorted.
        dates: ``((modality, (kept date indices...)), ...)`` for time series with a subset; absent = all dates.
        patch_size_m: patch side in metres.
        output: ``"patch"``, ``"dense"`` or ``"tile"``.
        output_modality: modality of dense outputs (None for the others).
        weights: weights key.
        precision: ``"fp32"`` or ``"bf16"``.
    """

    source: str
    tile: int
    modalities: tuple[str, ...]
    dates: tuple[tuple[str, tuple[int, ...]], ...]
    patch_size_m: float
    output: str
    output_modality: str | None
    weights: str
    precision: str


def restrict_sample(
    sample: Mapping[str, Any], modalities: Sequence[str], dates: Mapping[str, Sequence[int]] | None = None
) -> dict[str, Any]:
    """A copy of ``sample`` with only ``modalities`` and, for time series listed in ``dates``, only the dates at
    those indices (images ``(T, C, H, W)``, ``<m>_dates`` ``(T,)`` and ``<m>_mask`` with a T axis alike).

    Raises:
        ConfigError: no modality, a modality the sample lacks, or an empty or out-of-range date subset.
    """
    if not modalities:
        raise ConfigError("no modality selected; switch on at least one modality")
    missing = [m for m in modalities if m not in sample]
    if missing:
        have = [k for k in sample if k in MODALITIES]
        raise ConfigError(f"modality {missing} not in this tile (it has {have}); switch it off")
    out: dict[str, Any] = {}
    for m in [k for k in sample if k in modalities]:  # the sample's order (the model sums modalities in it)
        out[m] = sample[m]
        for suffix in ("_dates", "_mask"):
            if m + suffix in sample:
                out[m + suffix] = sample[m + suffix]
        keep = (dates or {}).get(m)
        if keep is None or not MODALITIES[m].time_series:
            continue
        T = int(sample[m].shape[0])
        idx = sorted({int(i) for i in keep})
        if not idx:
            raise ConfigError(f"{m}: no date selected; keep at least one of its {T} dates")
        if idx[0] < 0 or idx[-1] >= T:
            raise ConfigError(f"{m}: date indices {idx} outside 0..{T - 1}")
        out[m] = sample[m][idx]
        if m + "_dates" in sample:
            out[m + "_dates"] = sample[m + "_dates"][idx]
        mask = sample.get(m + "_mask")
        if mask is not None and mask.dim() == 4 and mask.shape[0] == T:
            out[m + "_mask"] = mask[idx]
    for k in ("meta", "label"):
        if k in sample:
            out[k] = sample[k]
    return out


def tile_extent_m(sample: Mapping[str, Any]) -> float:
    """Side in metres of a tile (the largest extent of its gridded modalities)."""
    sides = [
        float(sample[m].shape[-1]) * MODALITIES[m].gsd_m
        for m in sample
        if m in MODALITIES and not MODALITIES[m].tile_token
    ]
    return max(sides, default=0.0)


def valid_patch_sizes(
    sample: Mapping[str, Any], modalities: Sequence[str], model_modalities: Sequence[str]
) -> list[int]:
    """Patch sizes (m) the model accepts for this tile and modality subset, smallest first (checked by the model's
    own input validation, so no invalid value is offered)."""
    import torch

    from anysat_core.data.collate import collate
    from anysat_core.model.inputs import check_batch

    mods = [m for m in modalities if m in sample]
    if not mods:
        return []
    sub = restrict_sample(sample, mods)
    side = tile_extent_m(sub)
    step = 10
    for m in mods:
        step = math.lcm(step, int(MODALITIES[m].patch_step_m))
    batch = collate([{k: v for k, v in sub.items() if k != "label"}])
    out = []
    for p in range(step, int(side) + 1, step):
        if side % p:
            continue
        try:
            check_batch(
                batch,
                float(p),
                "patch",
                None,
                model_modalities=tuple(model_modalities),
                device=torch.device("cpu"),
                dtype=torch.float32,
            )
        except AnySatError:
            continue
        out.append(p)
    return out


def _compute(req: FeatureRequest, config: AppConfig) -> xr.DataArray:

    from anysat_core import extract_features

    src = open_source(req.source, config)
    sample = restrict_sample(src.sample(req.tile), req.modalities, dict(req.dates))
    loaded = get_model(req.weights, config)
    absent = [m for m in req.modalities if m not in loaded.modalities]
    if absent:
        raise ConfigError(
            f"{loaded.label} has no projector for {absent}; switch those modalities off or choose other weights "
            f"(these weights read: {', '.join(loaded.modalities)})"
        )
    if req.output in ("patch", "dense") and req.patch_size_m <= 0:
        raise PatchSizeError(f"patch size {req.patch_size_m} m; choose one of the offered sizes")
    with loaded.lock:
        da = extract_features(
            loaded.model,
            sample,
            patch_size_m=req.patch_size_m,
            output=req.output,
            output_modality=req.output_modality if req.output == "dense" else None,
            precision=req.precision,
        )
    assert isinstance(da, xr.DataArray)
    da.attrs["weights"] = loaded.label
    return da


def compute_features(req: FeatureRequest, config: AppConfig) -> xr.DataArray:
    """The feature map of a request, computed once per process (:data:`app.resources.FEATURE_CACHE`).

    Raises:
        AnySatError subclasses: bad inputs for this tile, model or patch size.
    """
    return FEATURE_CACHE.get_or_compute((req, config.size), lambda: _compute(req, config))


def composite(
    sample: Mapping[str, Any], modality: str, date_index: int = 0, percentiles: tuple[float, float] = (2.0, 98.0)
) -> xr.DataArray:
    """:func:`anysat_core.composite` as the map draws it.

    Returns:
        uint8 DataArray ``(band, y, x)`` with ``band = r, g, b, a`` (alpha 0 where the pixel is masked or not
        finite), ``x``/``y`` pixel-centre coordinates and the tile's CRS when known.

    Raises:
        ConfigError: a modality the tile lacks or a date index outside its dates.
    """
    from anysat_core.overlays import composite as rgb_composite

    rgb = rgb_composite(sample, modality, date_index, percentiles=percentiles)
    valid = np.isfinite(rgb.values).all(axis=0)
    out = np.zeros((4, *valid.shape), dtype=np.uint8)
    out[:3] = np.rint(np.nan_to_num(rgb.values, nan=0.0) * 255).astype(np.uint8)
    out[3] = np.where(valid, 255, 0)
    da = xr.DataArray(out, dims=("band", "y", "x"), coords={"band": ["r", "g", "b", "a"], "y": rgb.y, "x": rgb.x})
    if rgb.rio.crs is not None:
        da = da.rio.write_crs(rgb.rio.crs)
    da.attrs = {"modality": modality, "date_index": str(date_index)}
    return da


def _meta_for(sample: Mapping[str, Any], modality: str) -> Any:
    """The tile's GeoInfo (its extent is the modality's; features_to_dataarray lays any grid over that extent)."""
    return sample.get("meta")
