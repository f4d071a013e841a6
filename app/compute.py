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
from app.resources import FEATURE_CACHE, get_model, precision_context
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
    import torch

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
    with loaded.lock, precision_context(req.precision), torch.inference_mode():
        da = extract_features(
            loaded.model,
            sample,
            patch_size_m=req.patch_size_m,
            output=req.output,
            output_modality=req.output_modality if req.output == "dense" else None,
        )
    assert isinstance(da, xr.DataArray)
    da.attrs["weights"] = loaded.label
    da.attrs["precision"] = req.precision
    return da


def compute_features(req: FeatureRequest, config: AppConfig) -> xr.DataArray:
    """The feature map of a request, computed once per process (:data:`app.resources.FEATURE_CACHE`).

    Raises:
        AnySatError subclasses: bad inputs for this tile, model or patch size.
    """
    return FEATURE_CACHE.get_or_compute((req, config.size), lambda: _compute(req, config))


def rgb_bands(modality: str) -> list[int]:
    """Indices of the bands shown as red, green, blue for a modality (natural colour when the registry names them;
    SAR: VV, VH, VV/VH or VV, VH, VV-VH; other: the first three)."""
    from anysat_core.data.raster.bands import band_alias

    mod = MODALITIES[modality]
    names = [band_alias(modality, c) for c in ("red", "green", "blue")]
    if all(names):
        return [mod.bands.index(n) for n in names]  # type: ignore[arg-type]
    n = len(mod.bands)
    return [0, min(1, n - 1), min(2, n - 1)]


def composite(
    sample: Mapping[str, Any], modality: str, date_index: int = 0, percentiles: tuple[float, float] = (2.0, 98.0)
) -> xr.DataArray:
    """An RGB composite of one modality of a tile (one date of a time series), robustly stretched.

    Returns:
        uint8 DataArray ``(band, y, x)`` with ``band = r, g, b, a`` (alpha 0 where the pixel is masked or not
        finite), ``x``/``y`` pixel-centre coordinates and the tile's CRS when known.

    Raises:
        ConfigError: a modality the tile lacks or a date index outside its dates.
    """
    import torch

    from anysat_core.features import features_to_dataarray

    if modality not in sample:
        raise ConfigError(f"{modality} is not in this tile; pick one of {[k for k in sample if k in MODALITIES]}")
    x = sample[modality]
    mod = MODALITIES[modality]
    mask = None
    if mod.time_series:
        T = int(x.shape[0])
        if not 0 <= date_index < T:
            raise ConfigError(f"{modality} date {date_index} outside 0..{T - 1}")
        x = x[date_index]
        m = sample.get(modality + "_mask")
        if m is not None and m.dim() == 4 and m.shape[0] == T:
            mask = m[date_index, 0]
    arr = x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    bands = rgb_bands(modality)
    bands = [min(b, arr.shape[0] - 1) for b in bands]
    rgb = arr[bands].astype(np.float64)
    if modality in ("s1-asc", "s1") and arr.shape[0] >= 2 and bands[2] == min(2, arr.shape[0] - 1) and arr.shape[0] < 3:
        rgb[2] = arr[0] - arr[1]
    valid = np.isfinite(rgb).all(axis=0)
    if mask is not None:
        valid &= mask.numpy().astype(bool)  # True = valid
    out = np.zeros((4, *rgb.shape[1:]), dtype=np.uint8)
    for c in range(3):
        v = rgb[c][valid]
        if v.size == 0:
            continue
        lo, hi = np.percentile(v, percentiles)
        scaled = (rgb[c] - lo) / (hi - lo) if hi > lo else np.full_like(rgb[c], 0.5)
        out[c] = (np.clip(np.nan_to_num(scaled, nan=0.0), 0, 1) * 255).astype(np.uint8)
    out[3] = np.where(valid, 255, 0)
    hwc = np.moveaxis(out, 0, -1)
    da = features_to_dataarray(hwc, _meta_for(sample, modality))
    da = da.rename({"feature": "band"}).assign_coords(band=["r", "g", "b", "a"]).astype(np.uint8)
    da.attrs = {"modality": modality, "date_index": str(date_index)}
    return da


def _meta_for(sample: Mapping[str, Any], modality: str) -> Any:
    """The tile's GeoInfo (its extent is the modality's; features_to_dataarray lays any grid over that extent)."""
    return sample.get("meta")
