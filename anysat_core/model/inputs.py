"""Validation of model inputs: every rule of the input contract, with specific errors.

:func:`check_batch` turns a user batch into a :class:`BatchPlan` (modalities in input order, the patch
grid, dates and masks as tensors on the right device/dtype) or raises a subclass of
:class:`~anysat_core.errors.AnySatError` whose message says what came in, what was expected and how
to fix it.  Nothing here runs the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from anysat_core.errors import (
    BatchSizeMismatchError,
    ChannelMismatchError,
    DatesError,
    DTypeError,
    ExtentMismatchError,
    InputShapeError,
    NonFiniteInputError,
    NonSquareTileError,
    OutputError,
    PatchSizeError,
    UnknownModalityError,
    UnnormalizedInputWarning,
)
from anysat_core.geo import EPS, is_length
from anysat_core.modalities import MODALITIES, Modality

__all__ = ["META_KEYS", "OUTPUTS", "BatchPlan", "Output", "check_batch"]

#: Output mode of :meth:`AnySat.forward`: one token per tile, one per patch, a sub-patch map, or the tile token
#: followed by the patch tokens.
Output = Literal["tile", "patch", "dense", "all"]
#: The values of :data:`Output`.
OUTPUTS: tuple[str, ...] = get_args(Output)
_SUFFIXES = ("_dates", "_date_mask", "_mask")
#: Keys of a sample/batch that carry no model input (labels, ids, georeferencing); the model ignores them.
META_KEYS = frozenset({"label", "name", "meta", "dataset", "tile_id"})


@dataclass
class BatchPlan:
    """A validated batch, ready for the model.

    Attributes:
        modalities: input modality names in input order (MODIS included).
        images: modality -> float tensor on the model's device and dtype.
        dates: modality -> ``(B, T)`` float32 dates (time series only).
        masks: modality -> bool tensor broadcastable to the image (optional).
        batch_size: B.
        patch_cells_10m: patch side in 10 m cells (s = ``patch_size_m // 10``).
        grid: patches per tile side (h); P = h * h.
        output: output mode.
        output_modality: modality whose sub-patch tokens make the dense output ('' unless dense).
    """

    modalities: list[str]
    images: dict[str, torch.Tensor]
    dates: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    batch_size: int = 0
    patch_cells_10m: int = 1
    grid: int = 1
    output: Output = "patch"
    output_modality: str = ""


def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise DTypeError(
        f"batch[{key!r}] is a {type(value).__name__}; expected a torch.Tensor (or numpy array). "
        "Convert it with torch.as_tensor(...)."
    )


def _fmt(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_image(name: str, mod: Modality, x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise DTypeError(
            f"{name} has dtype {x.dtype}; expected a floating tensor, normalised per channel as "
            f"(x - mean) / std. Convert with x.float() after normalising (see MODALITIES[{name!r}].stats)."
        )
    if x.dim() != mod.ndim:
        extra = (
            " Add a time axis with x.unsqueeze(1) for a single date."
            if mod.time_series and x.dim() == 4
            else " Add a batch axis with x.unsqueeze(0)."
            if x.dim() == mod.ndim - 1
            else ""
        )
        raise InputShapeError(
            f"{name} has shape {_fmt(x.shape)} ({x.dim()} dims); expected {mod.ndim} dims {mod.layout}." + extra
        )
    c = x.shape[-3]
    if c != mod.num_bands:
        raise ChannelMismatchError(
            f"{name} has {c} channels (shape {_fmt(x.shape)}, layout {mod.layout}); expected "
            f"{mod.num_bands}: {', '.join(mod.bands)}. Select or reorder the bands to this list."
        )
    H, W = x.shape[-2:]
    if H != W:
        raise NonSquareTileError(
            f"{name} tile is {H} x {W} px; AnySat needs square tiles (H == W). "
            "Crop or pad it to a square, or cut the scene into square tiles."
        )
    if H == 0:
        raise InputShapeError(f"{name} has an empty spatial size {_fmt(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        hint = (
            f" Replace them (e.g. torch.nan_to_num) and pass '{name}_mask' (1 = valid) so the model ignores them."
            if mod.time_series
            else " Replace them (e.g. torch.nan_to_num or an inpainting) before calling the model."
        )
        raise NonFiniteInputError(f"{name} contains {bad} NaN or infinite values of {x.numel()}." + hint)


#: a modality whose channel means reach this (in absolute value), or whose channel standard deviations reach
#: :data:`RAW_STD`, looks un-normalised (normalised inputs have means near 0 and deviations near 1)
RAW_MEAN = 12.0
RAW_STD = 25.0
_warned_raw: set[str] = set()


def warn_if_raw(name: str, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Warn once per modality (:class:`UnnormalizedInputWarning`) when ``x`` ``(B, [T,] C, H, W)`` looks like raw
    file values; masked-out values (``mask`` False) are left out."""
    if name in _warned_raw or x.numel() == 0:
        return
    with torch.no_grad():
        v = x.detach().float().transpose(0, -3).reshape(x.shape[-3], -1)  # (C, N)
        if mask is not None:
            m = torch.broadcast_to(mask.bool(), x.shape).transpose(0, -3).reshape(x.shape[-3], -1)
            n = m.sum(1).clamp(min=1)
            mean = (v * m).sum(1) / n
            std = (((v - mean[:, None]) ** 2 * m).sum(1) / n).sqrt()
        else:
            mean, std = v.mean(1), v.std(1, correction=0)
    big_mean, big_std = float(mean.abs().max()), float(std.max())
    if big_mean < RAW_MEAN and big_std < RAW_STD:
        return
    _warned_raw.add(name)
    warnings.warn(
        f"{name} inputs look un-normalised (channel means up to {big_mean:.4g} in absolute value, standard "
        f"deviations up to {big_std:.4g}; normalised inputs have means near 0 and deviations near 1). Normalise them "
        "with the statistics the model expects: open_rasters and the dataset loaders do by default (see "
        f"MODALITIES[{name!r}].stats and anysat_core.data.normalize.Normalize). Shown once per modality.",
        UnnormalizedInputWarning,
        stacklevel=2,
    )


def _check_dates(name: str, x: torch.Tensor, dates: Any) -> torch.Tensor:
    if dates is None:
        raise DatesError(
            f"{name} is a time series {_fmt(x.shape)} but batch has no '{name}_dates'; add "
            f"'{name}_dates' with shape (B, T) = ({x.shape[0]}, {x.shape[1]}) holding the day of year of each date."
        )
    d = _as_tensor(f"{name}_dates", dates)
    if d.dtype == torch.bool or d.is_complex():
        raise DatesError(f"{name}_dates has dtype {d.dtype}; expected integer or float day-of-year values")
    B, T = x.shape[:2]
    if d.dim() == 1:
        d = d.unsqueeze(0).expand(B, -1)
    if d.dim() != 2 or d.shape[1] != T:
        raise DatesError(
            f"{name}_dates has shape {_fmt(d.shape)} but {name} has T={T} dates (shape {_fmt(x.shape)}); "
            f"expected ({B}, {T}) or ({T},): one day of year per date."
        )
    if d.shape[0] != B:
        raise BatchSizeMismatchError(
            f"{name}_dates has batch size {d.shape[0]} but {name} has {B}; expected shape ({B}, {T})."
        )
    d = d.to(torch.float32)
    if not bool(torch.isfinite(d).all()):
        raise DatesError(f"{name}_dates contains NaN or infinite values; give a day of year for every date")
    return d


def _check_mask(name: str, x: torch.Tensor, mask: Any) -> torch.Tensor:
    m = _as_tensor(f"{name}_mask", mask)
    try:
        shape = torch.broadcast_shapes(m.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise InputShapeError(
            f"{name}_mask has shape {_fmt(m.shape)}, which does not broadcast to {name} {_fmt(x.shape)}; "
            f"expected a mask broadcastable to {_fmt(x.shape)} with 1 = valid, 0 = invalid."
        )
    if m.dtype != torch.bool:
        if not bool(torch.isfinite(m.float()).all()):
            raise NonFiniteInputError(f"{name}_mask contains NaN or infinite values; use 1 = valid, 0 = invalid")
        m = m != 0
    return m


def _extent(mod: Modality, x: torch.Tensor) -> float:
    return x.shape[-1] * mod.gsd_m


def check_batch(
    batch: Mapping[str, Any],
    patch_size_m: Any,
    output: Output,
    output_modality: str | None,
    *,
    model_modalities: tuple[str, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> BatchPlan:
    """Validate ``batch`` against the input contract and return a :class:`BatchPlan`.

    Raises:
        UnknownModalityError, InputShapeError, ChannelMismatchError, NonSquareTileError,
        BatchSizeMismatchError, ExtentMismatchError, PatchSizeError, DatesError, DTypeError,
        NonFiniteInputError, OutputError.
    """
    if not isinstance(batch, Mapping):
        raise InputShapeError(
            f"batch is a {type(batch).__name__}; expected a dict {{modality: tensor, '<modality>_dates': tensor}}"
        )
    if output not in OUTPUTS:
        raise OutputError(f"output={output!r}; expected one of {', '.join(OUTPUTS)}")

    names: list[str] = []
    for key in batch:
        if not isinstance(key, str):
            raise UnknownModalityError(f"batch key {key!r} is not a string; expected modality names")
        if key in META_KEYS or key.startswith("label"):
            continue
        base = next((key[: -len(s)] for s in _SUFFIXES if key.endswith(s)), None)
        if base is not None:
            if base not in batch:
                MODALITIES[base]  # unknown base name -> UnknownModalityError
                raise DatesError(f"batch has {key!r} but no {base!r} tensor; add batch[{base!r}] or remove {key!r}")
            continue
        mod = MODALITIES[key]
        if key not in model_modalities:
            raise UnknownModalityError(
                f"this model has no projector for {key!r}; it takes {', '.join(model_modalities)}. "
                "Drop that input or build the model with it in AnySatConfig.modalities."
            )
        names.append(key)
        if not mod.time_series and f"{key}_dates" in batch:
            raise DatesError(f"{key} is a single-date modality; remove '{key}_dates' from the batch")

    if not names:
        raise InputShapeError("batch has no modality tensor; expected at least one of " + ", ".join(model_modalities))
    if all(MODALITIES[n].tile_token for n in names):
        raise InputShapeError(
            "batch has only 'modis', which gives one token per tile and cannot define the patch grid; "
            "add a modality such as 's2' over the same tile"
        )

    images: dict[str, torch.Tensor] = {}
    dates: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}
    for n in names:
        mod = MODALITIES[n]
        x = _as_tensor(n, batch[n])
        _check_image(n, mod, x)
        sizes[n] = x.shape[0]
        if mod.time_series:
            dates[n] = _check_dates(n, x, batch.get(f"{n}_dates"))
        if f"{n}_mask" in batch:
            masks[n] = _check_mask(n, x, batch[f"{n}_mask"])
        warn_if_raw(n, x, masks.get(n))
        images[n] = x
    if len(set(sizes.values())) > 1:
        raise BatchSizeMismatchError(
            "modalities have different batch sizes: "
            + ", ".join(f"{n}={b}" for n, b in sizes.items())
            + "; every modality must hold the same B tiles in the same order"
        )
    B = next(iter(sizes.values()))

    # ground extent shared by every modality except MODIS
    grid_mods = [n for n in names if not MODALITIES[n].tile_token]
    extents = {n: _extent(MODALITIES[n], images[n]) for n in grid_mods}
    ref = extents[grid_mods[0]]
    if any(abs(e - ref) > EPS * max(1.0, ref) for e in extents.values()):
        detail = ", ".join(
            f"{n} {e:g} m ({images[n].shape[-1]} px x {MODALITIES[n].gsd_m:g} m)" for n, e in extents.items()
        )
        raise ExtentMismatchError(
            f"modalities cover different ground extents: {detail}; crop or resample them to the same extent "
            "(each modality at its own resolution, see MODALITIES[name].gsd_m)."
        )

    # patch size in metres
    if not is_length(patch_size_m):
        raise PatchSizeError(f"patch_size_m={patch_size_m!r}; expected a number of metres such as 10, 20 or 40")
    step = math.lcm(*(MODALITIES[n].patch_step_m for n in grid_mods))
    if patch_size_m <= 0 or abs(patch_size_m / step - round(patch_size_m / step)) > EPS:
        raise PatchSizeError(
            f"patch_size_m={patch_size_m!r}; expected a positive multiple of {step} m for "
            f"{', '.join(grid_mods)}"
            + (" (30 m sensors l7/alos need multiples of 30 m)" if step > 10 else "")
            + ", e.g. "
            + ", ".join(str(step * k) for k in (1, 2, 4))
        )
    snapped_m = round(patch_size_m / 10) * 10  # the patch side on the 10 m lattice
    cells = ref / snapped_m
    if cells < 1 - EPS or abs(cells - round(cells)) > EPS:
        divisors = [d for d in range(step, round(ref) + 1, step) if abs(ref / d - round(ref / d)) <= EPS]
        raise PatchSizeError(
            f"patch_size_m={patch_size_m!r} does not divide the tile extent of {ref:g} m; expected one of "
            f"{divisors or 'none (crop the tile to a multiple of ' + str(step) + ' m)'}."
        )
    patch_cells_10m = snapped_m // 10
    grid = round(cells)

    for n in names:
        mod = MODALITIES[n]
        if mod.tile_token:
            if patch_cells_10m >= 24:
                raise PatchSizeError(
                    f"patch_size_m={patch_size_m!r} with {n}; {n} gives one {mod.gsd_m:g} m token per tile and works with "
                    "patch sizes below 240 m. Use a smaller patch size or drop modis."
                )
            if images[n].shape[-1] != 1:
                raise InputShapeError(
                    f"{n} has {images[n].shape[-2]} x {images[n].shape[-1]} px; expected 1 x 1: "
                    f"{n} is one {mod.gsd_m:g} m pixel per tile. Take the pixel containing the tile centre."
                )

    if output == "dense":
        om = output_modality or names[0]
        if om not in names:
            raise OutputError(f"output_modality={om!r} is not in the batch; expected one of {', '.join(grid_mods)}")
        if MODALITIES[om].tile_token:
            raise OutputError(
                f"output_modality={om!r} has one token per tile and no dense map; use one of {', '.join(grid_mods)}"
            )
    else:
        om = ""

    images = {n: x.to(device=device, dtype=dtype) for n, x in images.items()}
    dates = {n: d.to(device) for n, d in dates.items()}
    masks = {n: m.to(device) for n, m in masks.items()}
    return BatchPlan(
        modalities=names,
        images=images,
        dates=dates,
        masks=masks,
        batch_size=B,
        patch_cells_10m=patch_cells_10m,
        grid=grid,
        output=output,
        output_modality=om,
    )
