"""Which statistics normalise a scene: :func:`resolve_normalize` turns ``open_rasters(normalize=...)`` into a named
:class:`~anysat_core.data.normalize.Normalize`, computing scene statistics where nothing better is known.

``normalize`` may be:

* ``"auto"`` (default): per modality, the registry's statistics (``MODALITIES[m].stats``: those the released AnySat
  checkpoint was used with, in the units of the original data, e.g. Sentinel-2 L2A reflectance x 10000) when there
  are some, else statistics computed from this scene (:func:`scene_stats`);
* ``"scene"``: statistics computed from this scene for every modality;
* a registry name, e.g. ``"treesatai-ts"``: that dataset's statistics (every modality must have them);
* a dataset root folder holding ``NORM_<modality>_patch.json`` files, or a JSON file
  ``{"<modality>": {"mean": [...], "std": [...]}, ...}``;
* a mapping ``{modality: NormStats | {"mean": [...], "std": [...]} | "scene" | registry name | file}``;
* a :class:`~anysat_core.data.normalize.Normalize` (used as given; it must cover every modality);
* ``None``: raw file values (explicitly; the model then warns when its inputs look un-normalised).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from anysat_core.data.normalize import Normalize, check_stats, read_stats, registry_stats, stats_path
from anysat_core.data.raster.grid import frame_pixel_box
from anysat_core.data.raster.sources import Frame
from anysat_core.errors import ConfigError, CorruptFileError, DatasetNotFoundError
from anysat_core.geo import Bounds
from anysat_core.modalities import MODALITIES, NormStats

__all__ = ["SCENE_STATS_WINDOWS", "resolve_normalize", "scene_stats"]

log = logging.getLogger(__name__)

#: windows per side (their count is this squared) and their side in pixels, read to compute scene statistics
SCENE_STATS_WINDOWS = (4, 256)
#: at most this many dates of a time series are read for scene statistics (evenly spread)
SCENE_STATS_DATES = 8


def _starts(lo: int, hi: int, n: int, size: int) -> list[int]:
    """Up to ``n`` window starts of ``size`` spread evenly over ``[lo, hi)``."""
    if hi - lo <= size:
        return [lo]
    return sorted({round(v) for v in np.linspace(lo, hi - size, n)})


def scene_stats(frames: list[Frame], modality: str, bounds: Bounds, crs: CRS) -> NormStats:
    """Per-band mean and standard deviation of ``frames`` over ``bounds``, from a bounded sample.

    Reads :data:`SCENE_STATS_WINDOWS` (a 4 x 4 grid of 256 px windows spread over the extent) of at most
    :data:`SCENE_STATS_DATES` dates, so the cost does not grow with the scene.  Nodata and non-finite values are
    left out; a band with no valid value gets mean 0 and std 1, a constant band std 1.

    Returns:
        :class:`NormStats` whose ``source`` says how it was computed.
    """
    from anysat_core.data.raster.scene import _masked_values, _read_window

    n, size = SCENE_STATS_WINDOWS
    C = MODALITIES[modality].num_bands
    total = np.zeros(C)
    total_sq = np.zeros(C)
    count = np.zeros(C)
    picks = sorted({round(v) for v in np.linspace(0, len(frames) - 1, min(len(frames), SCENE_STATS_DATES))})
    for f in (frames[i] for i in picks):
        box = frame_pixel_box(f, bounds, crs)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        for r in _starts(r0, r1, n, size):
            for c in _starts(c0, c1, n, size):
                v = _masked_values(f, _read_window(f, r, min(r1, r + size), c, min(c1, c + size)))
                v64 = v.reshape(C, -1).astype(np.float64)
                ok = np.isfinite(v64)
                total += np.where(ok, v64, 0).sum(1)
                total_sq += np.where(ok, v64**2, 0).sum(1)
                count += ok.sum(1)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    var = np.where(count > 0, total_sq / np.maximum(count, 1) - mean**2, 1.0)
    std = np.sqrt(np.maximum(var, 0.0))
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    if (count == 0).any():
        bands = [b for b, k in zip(MODALITIES[modality].bands, count) if k == 0]
        log.warning("%s: no valid value of band(s) %s in the sample; they get mean 0, std 1", modality, bands)
    return NormStats(
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        source=f"scene statistics ({int(count.max())} pixels of {len(picks)} date(s), {n * n} windows of {size} px)",
    )


def _registry_names() -> set[str]:
    return {name for mod in MODALITIES.values() for name in mod.stats}


def _from_file(path: Path, modality: str) -> NormStats:
    """Statistics of ``modality`` from a dataset root (its ``NORM_<modality>_patch.json``) or a JSON file."""
    if path.is_dir():
        f = stats_path(path, modality)
        if not f.exists():
            raise DatasetNotFoundError(
                f"normalize={str(path)!r} is a folder without {f.name} for {modality}; give a dataset root with "
                f"NORM_<modality>_patch.json files, compute them (python -m anysat_core.data.normalize), or use "
                "normalize='auto'"
            )
        return read_stats(f, modality)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"normalize={str(path)!r}: no such file or folder; expected a JSON statistics file or a dataset root"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"cannot read statistics file {str(path)!r}: {e}; expected JSON") from e
    if isinstance(raw, dict) and "mean" in raw:  # one modality's {"mean", "std"}
        return read_stats(path, modality)
    if not isinstance(raw, dict) or modality not in raw:
        raise ConfigError(
            f"statistics file {str(path)!r} has no entry for {modality!r} (it has "
            f"{', '.join(map(repr, raw)) if isinstance(raw, dict) else type(raw).__name__}); expected "
            '{"<modality>": {"mean": [...], "std": [...]}}'
        )
    return _stats_value(raw[modality], modality, f"{path}[{modality!r}]")


def _stats_value(value: Any, modality: str, where: str) -> NormStats:
    """A ``{"mean", "std"}`` mapping or NormStats, checked."""
    if isinstance(value, NormStats):
        st = value
    else:
        try:
            if any(isinstance(v, bool) for k in ("mean", "std") for v in value[k]):
                raise TypeError("True/False are not statistics")
            st = NormStats(
                mean=tuple(float(v) for v in value["mean"]),
                std=tuple(float(v) for v in value["std"]),
                source=str(value.get("source", where)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(
                f"{where} is {value!r}; expected NormStats or {{'mean': [one number per band], 'std': [...]}}"
            ) from e
    check_stats(st, modality, where)
    return st


def _one(
    value: Any, modality: str, frames: list[Frame], bounds: Bounds, crs: CRS, *, auto_ok: bool = True
) -> NormStats:
    """The statistics ``value`` names for ``modality``."""
    mod = MODALITIES[modality]
    if isinstance(value, str) and value == "auto" and auto_ok:
        if mod.stats:
            return registry_stats(modality, next(iter(mod.stats)))
        return scene_stats(frames, modality, bounds, crs)
    if isinstance(value, str) and value == "scene":
        return scene_stats(frames, modality, bounds, crs)
    if isinstance(value, str) and value in _registry_names():
        if value not in mod.stats:
            raise ConfigError(
                f"normalize={value!r}: the registry has no {value} statistics for {modality} (it has "
                f"{', '.join(mod.stats) or 'none'}); give {modality} its own, e.g. normalize={{'{modality}': 'scene', "
                "...}, or use normalize='auto'"
            )
        return registry_stats(modality, value)
    if isinstance(value, (str, os.PathLike)):
        return _from_file(Path(value), modality)
    return _stats_value(value, modality, f"the statistics given for {modality}")


def resolve_normalize(spec: Any, frames: dict[str, list[Frame]], bounds: Bounds, crs: CRS) -> Normalize | None:
    """The :class:`Normalize` that ``spec`` (see the module docstring) names for the modalities of ``frames``.

    Args:
        spec: the ``normalize=`` argument.
        frames: ``{modality: frames}`` of the scene.
        bounds: the scene's data extent in ``crs`` (where scene statistics are sampled).

    Raises:
        ConfigError: an unknown name, a mapping or Normalize without a scene modality, unusable statistics.
        DatasetNotFoundError, CorruptFileError: a statistics file or folder that is missing or unreadable.
    """
    if spec is None:
        return None
    mods = list(frames)
    if isinstance(spec, Normalize):
        missing = [m for m in mods if m not in spec.stats]
        if missing:
            raise ConfigError(
                f"normalize={spec!r} has no statistics for {', '.join(missing)}; add them (e.g. "
                f"normalize={{'{missing[0]}': 'scene', ...}} or 'auto') or give None for raw values"
            )
        return Normalize({m: spec.stats[m] for m in mods})
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in mods]
        missing = [m for m in mods if m not in spec]
        if unknown or missing:
            raise ConfigError(
                f"normalize has statistics for {', '.join(map(repr, spec)) or 'nothing'}; expected exactly the "
                f"scene's modalities ({', '.join(mods)})"
                + (f"; missing {', '.join(missing)} (give e.g. 'auto' or 'scene' for it)" if missing else "")
                + (f"; not in the scene: {', '.join(map(repr, unknown))}" if unknown else "")
            )
        return Normalize({m: _one(spec[m], m, frames[m], bounds, crs) for m in mods})
    names = _registry_names()
    if isinstance(spec, (str, os.PathLike)) and not isinstance(spec, bool):
        if isinstance(spec, str) and spec not in ("auto", "scene") and spec not in names and not Path(spec).exists():
            raise ConfigError(
                f"normalize={spec!r} is not a known choice, registry name or existing file; expected 'auto', 'scene', "
                f"{', '.join(map(repr, sorted(names)))}, a statistics file or dataset root, a mapping, a Normalize, "
                "or None (raw values)"
            )
        return Normalize({m: _one(spec, m, frames[m], bounds, crs) for m in mods})
    raise ConfigError(
        f"normalize={spec!r} (a {type(spec).__name__}); expected 'auto', 'scene', a registry name, a statistics file "
        "or dataset root, a {modality: statistics} mapping, a Normalize, or None (raw values)"
    )
