"""Model outputs as georeferenced :mod:`xarray` objects.

:func:`extract_features` runs an :class:`~anysat_core.model.anysat.AnySat` model on one sample or a collated
batch and labels the result with map coordinates taken from the samples' :class:`~anysat_core.data.sample.GeoInfo`::

    model = AnySat(size="tiny")
    da = extract_features(model, dataset[0], patch_size_m=20, output="patch")  # dims (feature, y, x)
    da.sel(x=389_050, y=5_351_350, method="nearest")                             # the patch at that point
    write_geotiff(da, "features.tif")                       # one band per feature (anysat_core.writers)

Return types:

==============  ==========================================  =========================================================
``output``      one sample (``meta`` is a GeoInfo)          collated batch (``meta`` is a list of GeoInfo)
==============  ==========================================  =========================================================
``"tile"``      DataArray ``(sample=1, feature=D)``         DataArray ``(sample=B, feature=D)``
``"patch"``     DataArray ``(feature=D, y=h, x=h)``         ``list`` of B DataArrays ``(feature, y, x)``
``"dense"``     DataArray ``(feature=2D, y=h*r, x=h*r)``    ``list`` of B DataArrays ``(feature, y, x)``
==============  ==========================================  =========================================================

Spatial outputs of a batch are a list because tiles of a batch sit at different places (often in different CRSs);
each DataArray carries its own coordinates.

Coordinates.  ``x``/``y`` are the **cell centres** of the feature grid in the tile's CRS: the ``h x w`` grid covers
the tile's reference grid extent (``meta.shape`` pixels of ``meta.transform``), so cell ``(i, j)`` is centred on
``x = c + a * W / w * (j + 0.5)``, ``y = f + e * H / h * (i + 0.5)`` (see :func:`anysat_core.geo.grid_transform`
and :func:`anysat_core.geo.cell_centres`).  The CRS is written with ``rio.write_crs`` (a ``spatial_ref``
coordinate) and the grid's affine transform with ``rio.write_transform``.  The ``sample`` coordinate of tile
outputs holds the tile ids, with the tile centres as ``x``/``y`` coordinates along ``sample`` when known.

Without georeferencing (``meta`` absent, or without ``transform``/``shape``) the coordinates are pixel indices
of the feature grid (``0 .. w-1``, ``0 .. h-1``) and there is no ``spatial_ref``; with a transform but no CRS the
coordinates are map coordinates and ``spatial_ref`` holds only the transform.  :func:`~anysat_core.writers.write_geotiff` then raises
:class:`~anysat_core.errors.MissingCRSError`.

Attributes (all strings): ``model`` (``"AnySat-tiny"``...), ``checkpoint`` (SHA-256 of the weights, see
:func:`weights_sha256`), ``patch_size_m``, ``output``, ``output_modality`` (``"none"`` unless ``dense``),
``modalities`` (comma-joined input modalities), ``anysat_core_version``.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from affine import Affine
from torch import nn

from anysat_core.data.collate import collate
from anysat_core.data.sample import GeoInfo, modalities_of
from anysat_core.errors import InputShapeError, OutputError
from anysat_core.geo import cell_centres, grid_transform
from anysat_core.modalities import MODALITIES
from anysat_core.writers import FEATURES_NAME

__all__ = ["extract_features", "features_to_dataarray", "provenance_attrs", "run_model", "weights_sha256"]

_SPATIAL_OUTPUTS = ("patch", "dense")


# ----------------------------------------------------------------------------------------------- weights hash
_HASH_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def weights_sha256(model: nn.Module) -> str:
    """Hex SHA-256 of a model's weights, stable across processes and devices.

    Hashes, for every ``state_dict`` entry in sorted key order, the key, dtype, shape and raw bytes of the tensor
    (little-endian host order, as on every platform torch supports).  The result is cached per model object and
    recomputed when a tensor is replaced or modified in place (its storage or version counter changes).
    """
    state = model.state_dict()
    keys = sorted(state)
    fingerprint = tuple(
        (k, state[k].data_ptr(), state[k]._version, tuple(state[k].shape), str(state[k].dtype)) for k in keys
    )
    cached = _HASH_CACHE.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    h = hashlib.sha256()
    for k in keys:
        t = state[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    _HASH_CACHE[model] = (fingerprint, digest)
    return digest


# ----------------------------------------------------------------------------------------------- helpers
def _is_batch(data: Mapping[str, Any]) -> bool:
    """True for a collated batch, False for one sample (from ``meta``, else from the first modality's ndim)."""
    meta = data.get("meta")
    if isinstance(meta, GeoInfo):
        return False
    if isinstance(meta, (list, tuple)):
        return True
    for name in modalities_of(data):
        x = data[name]
        if not isinstance(x, torch.Tensor):
            continue
        single = 4 if MODALITIES[name].time_series else 3
        if x.dim() == single:
            return False
        if x.dim() == single + 1:
            return True
        kind = "(T, C, H, W) for one sample or (B, T, C, H, W)" if single == 4 else "(C, H, W) or (B, C, H, W)"
        raise InputShapeError(f"{name} has shape {tuple(x.shape)}; expected {kind}")
    raise InputShapeError(
        "extract_features got no modality tensor; expected a sample or batch dict with e.g. an 's2' tensor "
        f"(keys given: {', '.join(map(str, data)) or 'none'})"
    )


def _metas(batch: Mapping[str, Any], n: int) -> list[GeoInfo]:
    meta = batch.get("meta")
    if meta is None:
        return [GeoInfo(dataset="unknown", tile_id=str(i)) for i in range(n)]
    metas = list(meta)
    if len(metas) != n or not all(isinstance(m, GeoInfo) for m in metas):
        raise InputShapeError(
            f"batch['meta'] holds {len(metas)} item(s) of type(s) {sorted({type(m).__name__ for m in metas})} for "
            f"{n} tile(s); expected one GeoInfo per tile (build batches with anysat_core.data.collate)"
        )
    return metas


def run_model(
    model: nn.Module, batch: Mapping[str, Any], patch_size_m: float, output: str, om: str | None
) -> torch.Tensor:
    """Forward in eval mode under inference_mode, then restore every submodule's training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            return model(batch, patch_size_m=patch_size_m, output=output, output_modality=om)
    finally:
        for m, flag in flags:
            m.training = flag


def provenance_attrs(
    model: nn.Module, *, patch_size_m: float, output: str, output_modality: str | None, modalities: Sequence[str]
) -> dict[str, str]:
    """String attributes saying where features come from: model, weights hash, patch size, output, modalities,
    package version (``output_modality`` defaults to the first modality for ``dense``, ``"none"`` otherwise)."""
    size = getattr(getattr(model, "config", None), "size", None)
    return {
        "model": f"AnySat-{size}" if size else type(model).__name__,
        "checkpoint": weights_sha256(model),
        "patch_size_m": f"{float(patch_size_m):g}",
        "output": output,
        "output_modality": (output_modality or modalities[0]) if output == "dense" else "none",
        "modalities": ",".join(modalities),
        "anysat_core_version": _version(),
    }


def features_to_dataarray(features: np.ndarray | torch.Tensor, meta: GeoInfo | None, **attrs: str) -> xr.DataArray:
    """One tile's spatial features ``(h, w, D)`` as a DataArray ``(feature, y, x)`` placed on the map.

    Args:
        features: ``(h, w, D)`` feature grid of one tile (``output="patch"`` or ``"dense"`` of the model, one item).
        meta: the tile's GeoInfo; None or without ``transform``/``shape`` gives pixel-index coordinates.
        **attrs: string attributes to attach (see the module docstring).

    Returns:
        float32 DataArray named :data:`FEATURES_NAME`, dims ``("feature", "y", "x")``, ``x``/``y`` cell centres,
        CRS and transform written with rioxarray when known.

    Raises:
        InputShapeError: ``features`` is not 3-D, or ``meta`` has a rotated transform.
    """
    arr = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if arr.ndim != 3:
        raise InputShapeError(f"features have shape {arr.shape}; expected (h, w, D) for one tile")
    h, w, D = arr.shape
    data = np.ascontiguousarray(np.moveaxis(arr.astype(np.float32, copy=False), -1, 0))  # (D, h, w)
    transform = None
    if meta is not None and meta.transform is not None and meta.shape is not None:
        transform = grid_transform(meta.transform, meta.shape, (h, w))  # cells of W / w by H / h tile pixels
        xs, ys = cell_centres(transform, (h, w))
    else:
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    da = xr.DataArray(
        data,
        dims=("feature", "y", "x"),
        coords={"feature": np.arange(D), "y": ys, "x": xs},
        name=FEATURES_NAME,
        attrs=dict(attrs),
    )
    if transform is not None:
        da = da.rio.write_transform(Affine(*transform))
        if meta is not None and meta.crs is not None:  # (meta is set when transform is)
            da = da.rio.write_crs(meta.crs)
    return da


# ----------------------------------------------------------------------------------------------- public API
def extract_features(
    model: nn.Module,
    sample_or_batch: Mapping[str, Any],
    *,
    patch_size_m: float,
    output: str = "patch",
    output_modality: str | None = None,
) -> xr.DataArray | list[xr.DataArray]:
    """Run ``model`` and return its output as labelled, georeferenced DataArray(s).

    The model runs in eval mode under :func:`torch.inference_mode`; the training flags of the model and its
    submodules are restored afterwards.

    Args:
        model: an :class:`~anysat_core.model.anysat.AnySat` (any module with its ``forward`` signature).
        sample_or_batch: one sample as a dataset returns it (``meta`` a GeoInfo) or a collated batch (``meta`` a
            list of GeoInfo, see :func:`~anysat_core.data.collate.collate`); ``meta`` may be absent.
        patch_size_m: patch side in metres (multiple of 10 dividing the tile side).
        output: ``"tile"``, ``"patch"`` or ``"dense"``.
        output_modality: modality of the ``dense`` sub-patch tokens (default: the first modality of the input).

    Returns:
        ``"tile"``: DataArray ``(sample, feature)`` (``sample`` coords = tile ids, also for one sample).
        ``"patch"``/``"dense"``: a DataArray ``(feature, y, x)`` for one sample, a list of them for a batch.
        See the module docstring for coordinates and attributes.

    Raises:
        OutputError: ``output`` is not one of the three above.
        InputShapeError: the input is neither a sample nor a batch, or ``meta`` does not match the batch size.
        AnySatError subclasses raised by the model for invalid inputs.
    """
    if output not in ("tile", *_SPATIAL_OUTPUTS):
        raise OutputError(
            f"output={output!r}; extract_features takes 'tile', 'patch' or 'dense' (call the model directly for 'all')"
        )
    if not isinstance(sample_or_batch, Mapping):
        raise InputShapeError(
            f"extract_features got a {type(sample_or_batch).__name__}; expected a sample dict or a collated batch dict"
        )
    batched = _is_batch(sample_or_batch)
    batch = sample_or_batch if batched else collate([dict(sample_or_batch)])
    mods = modalities_of(batch)
    feats = run_model(model, batch, patch_size_m, output, output_modality)
    B = feats.shape[0]
    metas = _metas(batch, B)

    attrs = provenance_attrs(
        model, patch_size_m=patch_size_m, output=output, output_modality=output_modality, modalities=mods
    )

    if output == "tile":
        arr = feats.detach().float().cpu().numpy()  # (B, D)
        coords: dict[str, Any] = {"sample": [m.tile_id for m in metas], "feature": np.arange(arr.shape[1])}
        all_bounds = [m.bounds for m in metas]
        bounds = [b for b in all_bounds if b is not None]
        if len(bounds) == len(all_bounds):
            coords["x"] = ("sample", np.array([(b[0] + b[2]) / 2 for b in bounds]))
            coords["y"] = ("sample", np.array([(b[1] + b[3]) / 2 for b in bounds]))
        da = xr.DataArray(arr, dims=("sample", "feature"), coords=coords, name=FEATURES_NAME, attrs=attrs)
        crss = {m.crs for m in metas}
        if len(crss) == 1 and None not in crss:
            da = da.rio.write_crs(crss.pop())
        return da

    out = [features_to_dataarray(feats[i], metas[i], **attrs) for i in range(B)]
    return out if batched else out[0]


def _version() -> str:
    from anysat_core import __version__

    return __version__
