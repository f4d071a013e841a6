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
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from anysat_core.data.normalize import Normalize, check_stats, read_stats, registry_stats, stats_path
from anysat_core.data.raster.grid import frame_pixel_box
from anysat_core.data.raster.sources import Frame
from anysat_core.errors import ConfigError, CorruptFileError, DatasetNotFoundError, UnitsMismatchWarning
from anysat_core.geo import Bounds
from anysat_core.modalities import MODALITIES, NormStats

__all__ = ["SCENE_STATS_WINDOWS", "UNITS_FACTOR", "check_units", "resolve_normalize", "scene_stats"]

log = logging.getLogger(__name__)

#: windows per side (their count is this squared) and their side in pixels, read to compute scene statistics
SCENE_STATS_WINDOWS = (4, 256)
#: at most this many dates of a time series are read for scene statistics (evenly spread)
SCENE_STATS_DATES = 8
#: windows per side and their side in pixels, read (on two dates) to check that a scene's units match its statistics
UNITS_CHECK_WINDOWS = (2, 128)
#: a scene's band magnitudes this many times larger or smaller than its statistics' mean other units
UNITS_FACTOR = 100.0


def _starts(lo: int, hi: int, n: int, size: int) -> list[int]:
    """Up to ``n`` window starts of ``size`` spread evenly over ``[lo, hi)``."""
    if hi - lo <= size:
        return [lo]
    return sorted({round(v) for v in np.linspace(lo, hi - size, n)})


def _moments(
    frames: list[Frame], modality: str, bounds: Bounds, crs: CRS, windows: tuple[int, int], n_dates: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-band mean, standard deviation and count of the valid values in ``windows`` = ``(n, size)`` (an n x n grid of
    windows of ``size`` px spread over ``bounds``) of at most ``n_dates`` dates, and the number of dates read."""
    from anysat_core.data.raster.scene import _masked_values, _read_window

    n, size = windows
    C = MODALITIES[modality].num_bands
    total = np.zeros(C)
    total_sq = np.zeros(C)
    count = np.zeros(C)
    picks = sorted({round(v) for v in np.linspace(0, len(frames) - 1, min(len(frames), n_dates))})
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
    var = np.where(count > 0, total_sq / np.maximum(count, 1) - mean**2, 0.0)
    return mean, np.sqrt(np.maximum(var, 0.0)), count, len(picks)


def scene_stats(frames: list[Frame], modality: str, bounds: Bounds, crs: CRS) -> NormStats:
    """Per-band mean and standard deviation of ``frames`` over ``bounds``, from a bounded sample.

    Reads :data:`SCENE_STATS_WINDOWS` (a 4 x 4 grid of 256 px windows spread over the extent) of at most
    :data:`SCENE_STATS_DATES` dates, so the cost does not grow with the scene.  Nodata and non-finite values are
    left out; a band with no valid value gets mean 0 and std 1, a constant band std 1.

    Returns:
        :class:`NormStats` whose ``source`` says how it was computed.
    """
    mean, std, count, n_dates = _moments(frames, modality, bounds, crs, SCENE_STATS_WINDOWS, SCENE_STATS_DATES)
    std = np.where((count > 0) & (std > 1e-6 * np.maximum(1.0, np.abs(mean))), std, 1.0)
    if (count == 0).any():
        bands = [b for b, k in zip(MODALITIES[modality].bands, count) if k == 0]
        log.warning("%s: no valid value of band(s) %s in the sample; they get mean 0, std 1", modality, bands)
    n, size = SCENE_STATS_WINDOWS
    return NormStats(
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        source=f"scene statistics ({int(count.max())} pixels of {n_dates} date(s), {n * n} windows of {size} px)",
    )


def check_units(st: NormStats, modality: str, frames: list[Frame], bounds: Bounds, crs: CRS) -> float | None:
    """Warn (:class:`~anysat_core.errors.UnitsMismatchWarning`) when the scene's values are in other units than the
    statistics ``st`` that will normalise them: reflectance in 0-1 against statistics of reflectance x 10000, SAR
    backscatter in linear power against statistics in dB, 16-bit against 8-bit imagery...

    Compares the band magnitudes ``sqrt(mean^2 + std^2)`` of a small sample (:data:`UNITS_CHECK_WINDOWS`, two dates)
    with the statistics': a median ratio over the bands beyond :data:`UNITS_FACTOR` either way is a units mismatch
    (scenes in the right units stay well inside it: dark water or snow moves it by less than 10x).

    Returns:
        the median ratio (scene / statistics), or None when the sample holds no valid value.
    """
    mean, std, count, _ = _moments(frames, modality, bounds, crs, UNITS_CHECK_WINDOWS, 2)
    ok = count > 0
    if not ok.any():
        return None
    expected = np.hypot(np.asarray(st.mean), np.asarray(st.std))
    ratios = np.hypot(mean, std)[ok] / expected[ok]
    ratio = float(np.median(ratios))
    if 1 / UNITS_FACTOR <= ratio <= UNITS_FACTOR:
        return ratio
    band = int(np.flatnonzero(ok)[0])
    name = MODALITIES[modality].bands[band]
    if ratio < 1:
        sar = modality.startswith("s1") or modality == "alos"
        hint = (
            "If they are backscatter in linear power, convert them to dB (10 * log10(x))"
            if sar
            else "If they are reflectances in 0-1, multiply them by 10000; if they carry a scale factor, undo it"
        )
    else:
        hint = "If they are 16-bit (or otherwise rescaled) values, bring them to the range of the statistics"
    warnings.warn(
        f"{modality} values look like other units than the statistics that normalise them ({st.source}): the "
        f"bands' magnitudes (sqrt(mean^2 + std^2)) in a sample of this scene are {ratio:.3g}x the statistics' "
        f"(median over bands; band {name}: mean {mean[band]:.4g}, std {std[band]:.4g} here, mean "
        f"{st.mean[band]:.4g}, std {st.std[band]:.4g} expected), so the model would see nearly constant or saturated "
        f"{modality} inputs. {hint}. Or normalise with this scene's own statistics: normalize='scene' (or "
        f"{{'{modality}': 'scene', ...}}).",
        UnitsMismatchWarning,
        stacklevel=2,
    )
    return ratio


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
            value = next(iter(mod.stats))
        else:
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
        st = registry_stats(modality, value)
        check_units(st, modality, frames, bounds, crs)  # registry units may not be the scene's
        return st
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
