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
``modalities`` (comma-joined input modalities), ``precision`` (``"fp32"`` or ``"bf16"``: the precision used),
``anysat_core_version``.

Valid fraction.  Spatial outputs carry a ``valid_fraction`` coordinate ``(y, x)`` (float32 in ``[0, 1]``): the
share of the input under each cell that holds data, from the samples' ``<mod>_mask`` (see :func:`valid_fraction`).
Cells whose valid fraction is at most ``min_valid_fraction`` (default 0: cells with no valid input at all, such as
the padding of an edge tile or a nodata block) get NaN features, which the analysis tools skip (their NaN rule).
``output="tile"`` embeddings are not masked (a tile without any valid pixel is refused where tiles are cut).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor used to write the CRS and transform)
import torch
import xarray as xr
from affine import Affine
from torch import nn

from anysat_core.data.collate import collate
from anysat_core.data.sample import GeoInfo, modalities_of
from anysat_core.errors import InputShapeError, OutputError
from anysat_core.geo import cell_centres, grid_transform
from anysat_core.modalities import MODALITIES
from anysat_core.precision import lowp_view, precision_context, resolve_precision
from anysat_core.writers import FEATURES_NAME

__all__ = [
    "VALID_FRACTION",
    "check_min_valid_fraction",
    "extract_features",
    "features_to_dataarray",
    "provenance_attrs",
    "run_model",
    "valid_fraction",
    "valid_fraction_coord",
    "weights_sha256",
]

_SPATIAL_OUTPUTS = ("patch", "dense")

#: Name of the per-cell valid-fraction coordinate/variable of feature maps.
VALID_FRACTION = "valid_fraction"


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


# ----------------------------------------------------------------------------------------------- valid fraction
def _cover(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` share of each output cell that each input pixel covers, both grids spanning the same extent
    (rows sum to 1).  Computed in whole units of ``1 / (n_in * n_out)``, so fractions of whole pixels are exact."""
    e_in = np.arange(n_in + 1, dtype=np.int64) * n_out  # pixel edges
    e_out = np.arange(n_out + 1, dtype=np.int64) * n_in  # cell edges
    lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
    hi = np.minimum(e_out[1:, None], e_in[None, 1:])
    return np.clip(hi - lo, 0, None).astype(np.float64) / n_in


def _pixel_mask(name: str, x: Any, mask: Any) -> np.ndarray:
    """``(H, W)`` bool: pixels of modality ``name`` valid at any date and band of its ``mask``."""
    H, W = x.shape[-2:]
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    try:
        np.broadcast_shapes(m.shape, tuple(x.shape))
    except ValueError:
        raise InputShapeError(
            f"{name}_mask has shape {tuple(m.shape)}, which does not broadcast to {name} of shape {tuple(x.shape)}; "
            "expected a bool mask of the modality's shape (True = valid) or one broadcastable to it"
        ) from None
    m = m.astype(bool, copy=False)
    if m.ndim > 2:
        m = np.asarray(m.any(axis=tuple(range(m.ndim - 2))))
    return np.broadcast_to(m, (H, W))


def valid_fraction(sample: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float32 share of valid input under each cell of an ``h x w`` output grid laid over one sample.

    For every gridded modality of ``sample`` (one sample, not a batch; MODIS, one value per tile, does not count) a
    pixel is valid when its ``<mod>_mask`` is True at *any* date and band (the model then had some input there); the
    valid pixels are pooled onto the cells by area (a cell finer than the pixels takes the share of its area under
    valid pixels).  The result is the mean over the modalities: 0 where no modality has a valid pixel under the
    cell, 1 where all of them are valid under all of it.  A modality without a mask counts as valid everywhere.

    Raises:
        InputShapeError: a mask that does not broadcast to its modality's tensor.
    """
    h, w = (int(v) for v in shape)
    fracs: list[np.ndarray] = []
    for name in modalities_of(sample):
        x = sample[name]
        if MODALITIES[name].tile_token or not hasattr(x, "shape") or len(x.shape) < 2:
            continue
        mask = sample.get(f"{name}_mask")
        if mask is None:
            fracs.append(np.ones((h, w), dtype=np.float64))
            continue
        pix = _pixel_mask(name, x, mask)
        H, W = pix.shape
        fracs.append(_cover(H, h) @ pix.astype(np.float64) @ _cover(W, w).T)
    if not fracs:
        return np.ones((h, w), dtype=np.float32)
    return np.clip(np.mean(fracs, axis=0), 0.0, 1.0).astype(np.float32)


def check_min_valid_fraction(value: Any) -> float:
    """``value`` as a float after checking that it is a number in ``[0, 1)``.

    Raises:
        InputShapeError: anything else (a cell's valid fraction is at most 1, so 1 would mask every cell).
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not (ok and 0.0 <= float(value) < 1.0):
        raise InputShapeError(
            f"min_valid_fraction={value!r}; expected a number in [0, 1): cells whose share of valid input is at most "
            "this get NaN features (0, the default, masks only cells with no valid input at all)"
        )
    return float(value)


def valid_fraction_coord(vf: np.ndarray, min_valid_fraction: float) -> xr.DataArray:
    """The ``valid_fraction`` ``(y, x)`` coordinate of a feature map, with attributes saying what it is."""
    return xr.DataArray(
        np.asarray(vf, dtype=np.float32),
        dims=("y", "x"),
        attrs={
            "long_name": "share of valid input under the cell",
            "units": "1",
            "min_valid_fraction": f"{min_valid_fraction:g}",
            "comment": "features are NaN where valid_fraction <= min_valid_fraction",
        },
    )


def _sample_item(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    """The gridded modality tensors and masks of item ``i`` of a collated batch."""
    item: dict[str, Any] = {}
    for name in modalities_of(batch):
        x = batch[name]
        if not isinstance(x, torch.Tensor) or MODALITIES[name].tile_token:
            continue
        item[name] = x[i]
        mask = batch.get(f"{name}_mask")
        if mask is not None:
            m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
            if m.dim() == x.dim():  # one mask per item (a broadcast mask of fewer dims applies to all)
                m = m[i if m.shape[0] > 1 else 0]
            item[f"{name}_mask"] = m
    return item


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


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to_device(batch: Mapping[str, Any], device: torch.device) -> Mapping[str, Any]:
    if all(not isinstance(v, torch.Tensor) or v.device == device for v in batch.values()):
        return batch
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def run_model(
    model: nn.Module,
    batch: Mapping[str, Any],
    patch_size_m: float,
    output: str,
    om: str | None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Forward in eval mode under inference_mode in ``precision`` (see :mod:`anysat_core.precision`) on the model's
    device (the batch's tensors are moved there), then restore every submodule's training flag.

    In bf16 the model runs through :func:`~anysat_core.precision.lowp_view`: its linear and convolution weights are
    cast once per model, not at every call as plain autocast does (same results), and the model is not changed."""
    flags = [(m, m.training) for m in model.modules()]
    device = model_device(model)
    model.eval()
    kwargs = {"patch_size_m": patch_size_m, "output": output, "output_modality": om}
    try:
        with torch.inference_mode(), precision_context(precision, device) as used:
            batch = _to_device(batch, device)
            net = lowp_view(model, torch.bfloat16) if used == "bf16" else model
            return net(batch, **kwargs)
    finally:
        for m, flag in flags:
            m.training = flag


def provenance_attrs(
    model: nn.Module,
    *,
    patch_size_m: float,
    output: str,
    output_modality: str | None,
    modalities: Sequence[str],
    precision: str = "fp32",
) -> dict[str, str]:
    """String attributes saying where features come from: model, weights hash, patch size, output, modalities,
    the precision used (``fp32`` or ``bf16``, after ``auto`` is resolved), package version (``output_modality``
    defaults to the first modality for ``dense``, ``"none"`` otherwise)."""
    size = getattr(getattr(model, "config", None), "size", None)
    return {
        "model": f"AnySat-{size}" if size else type(model).__name__,
        "checkpoint": weights_sha256(model),
        "patch_size_m": f"{float(patch_size_m):g}",
        "output": output,
        "output_modality": (output_modality or modalities[0]) if output == "dense" else "none",
        "modalities": ",".join(modalities),
        "precision": resolve_precision(precision, model_device(model)),
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
    min_valid_fraction: float = 0.0,
    precision: str = "fp32",
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
        min_valid_fraction: spatial outputs: cells whose share of valid input (the ``valid_fraction`` coordinate,
            see :func:`valid_fraction`) is at most this get NaN features; 0 masks the cells with no valid input.
        precision: ``"fp32"`` (exact, the default), ``"bf16"`` (autocast: faster where the CPU or GPU has bf16
            matrix units, cosine ~0.9999 to fp32) or ``"auto"`` (bf16 where native); see :mod:`anysat_core.precision`.
            The model runs on its own device (``model.to("cuda")``); the precision used is the ``precision``
            attribute of the result.

    Returns:
        ``"tile"``: DataArray ``(sample, feature)`` (``sample`` coords = tile ids, also for one sample).
        ``"patch"``/``"dense"``: a DataArray ``(feature, y, x)`` with a ``valid_fraction`` ``(y, x)`` coordinate
        for one sample, a list of them for a batch.  See the module docstring for coordinates and attributes.

    Raises:
        OutputError: ``output`` is not one of the three above.
        InputShapeError: the input is neither a sample nor a batch, ``meta`` does not match the batch size, a mask
            does not fit its modality, or ``min_valid_fraction`` is not a number in ``[0, 1)``.
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
    threshold = check_min_valid_fraction(min_valid_fraction)
    batched = _is_batch(sample_or_batch)
    batch = sample_or_batch if batched else collate([dict(sample_or_batch)])
    mods = modalities_of(batch)
    feats = run_model(model, batch, patch_size_m, output, output_modality, precision)
    B = feats.shape[0]
    metas = _metas(batch, B)

    attrs = provenance_attrs(
        model,
        patch_size_m=patch_size_m,
        output=output,
        output_modality=output_modality,
        modalities=mods,
        precision=precision,
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

    out = []
    for i in range(B):
        arr = np.array(feats[i].detach().float().cpu().numpy())  # (h, w, D), a copy that may be masked
        vf = valid_fraction(_sample_item(batch, i), arr.shape[:2])
        arr[vf <= threshold] = np.nan
        da = features_to_dataarray(arr, metas[i], **attrs)
        out.append(da.assign_coords({VALID_FRACTION: valid_fraction_coord(vf, threshold)}))
    return out if batched else out[0]


def _version() -> str:
    from anysat_core import __version__

    return __version__
