"""Where tiles come from: GeoPlex-mini (the default), dataset loaders found under the data roots, the user's rasters.

Every source is a :class:`TileSource`: an ordered list of tile ids, a sample per tile (cached), the footprint of a
tile in the source's CRS when it is known without reading the tile, the classes of its labels.  Sources are opened once
per process (:func:`open_source`, keyed by a string) and shared by all sessions.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anysat_core.errors import (
    AnySatError,
    ConfigError,
    DatasetNotFoundError,
    InputShapeError,
    TileIndexError,
    UnitsMismatchWarning,
)
from anysat_core.modalities import MODALITIES
from app.config import AppConfig, resolve_under_roots

__all__ = [
    "DEFAULT_SOURCE",
    "RasterSpec",
    "TileSource",
    "discover_datasets",
    "guess_modality",
    "open_source",
    "raster_source_key",
]

#: the embedded default: the GeoPlex-mini world of seed 0 (256 tiles of 60 m, aerial + S2 + S1 ascending).
DEFAULT_SOURCE = "geoplex-mini"
#: raster files the own-raster form accepts.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".nc", ".nc4", ".zarr", ".jp2", ".img")
#: at most this many tiles are listed for one raster scene.
MAX_SCENE_TILES = 10_000
_SAMPLE_CACHE_ITEMS = 16


Bounds = tuple[float, float, float, float]


class TileSource:
    """Tiles of one source (see the module docstring).

    Attributes:
        key: the string :func:`open_source` was called with.
        label: what the page shows.
        crs: CRS of the tiles (``"EPSG:32631"``), None when unknown.
        modalities: modalities every tile has.
        classes: label class names (empty without labels).
        task: the dataset's task (``"multilabel"``, ``"segmentation"``...; ``""`` without labels).
        tile_ids: one id per tile, in order.
        default_patch_size_m: the patch size of the dataset's protocol.
    """

    def __init__(
        self,
        key: str,
        label: str,
        crs: str | None,
        modalities: Sequence[str],
        tile_ids: Sequence[str],
        *,
        classes: Sequence[str] = (),
        task: str = "",
        default_patch_size_m: float = 20.0,
        description: str = "",
        warnings: Sequence[str] = (),
    ) -> None:
        self.key, self.label, self.crs = key, label, crs
        self.modalities = tuple(modalities)
        self.tile_ids = list(tile_ids)
        self.classes = tuple(classes)
        self.task = task
        self.default_patch_size_m = float(default_patch_size_m)
        self.description = description
        self.warnings = tuple(warnings)  # said when it was opened (e.g. values in other units than the statistics)
        self._samples: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._footprints: dict[int, Bounds] = {}

    def __len__(self) -> int:
        return len(self.tile_ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r}, {len(self)} tiles, {', '.join(self.modalities)})"

    def index_of(self, tile_id: str) -> int:
        try:
            return self.tile_ids.index(tile_id)
        except ValueError:
            raise TileIndexError(f"tile {tile_id!r} is not in {self.label}; pick one from the tile list") from None

    def sample(self, i: int) -> dict[str, Any]:
        """The sample of tile ``i`` (cached; thread-safe)."""
        if not 0 <= i < len(self):
            raise TileIndexError(f"tile index {i} out of range; {self.label} has {len(self)} tiles")
        with self._lock:
            hit = self._samples.get(i)
            if hit is not None:
                self._samples.move_to_end(i)
                return hit
        s = self._read(i)
        meta = s.get("meta")
        if meta is not None and getattr(meta, "bounds", None) is not None:
            self._footprints[i] = tuple(float(v) for v in meta.bounds)  # type: ignore[assignment]
        with self._lock:
            self._samples[i] = s
            while len(self._samples) > _SAMPLE_CACHE_ITEMS:
                self._samples.popitem(last=False)
        return s

    def _read(self, i: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def footprints(self) -> dict[int, Bounds]:
        """``{tile index: (left, bottom, right, top)}`` of the tiles whose extent is known (all for GeoPlex-mini and
        raster scenes, those already read for other datasets)."""
        return dict(self._footprints)

    def tile_at(self, x: float, y: float) -> int | None:
        """Index of the tile whose footprint contains ``(x, y)`` (source CRS), None if none."""
        for i, (l, b, r, t) in self.footprints().items():
            if l <= x < r and b < y <= t:
                return i
        return None


class DatasetSource(TileSource):
    """A dataset loader's split (GeoPlex-mini included)."""

    def __init__(self, key: str, label: str, dataset: Any) -> None:
        ids = [f"{i:04d}" for i in range(len(dataset))]
        crs = None
        if dataset.name == "geoplex-mini":
            ids = [dataset.tile_id(t) for t in dataset.indices]
            crs = dataset.crs
        super().__init__(
            key,
            label,
            crs,
            dataset.modalities,
            ids,
            classes=dataset.classes,
            task=dataset.task,
            default_patch_size_m=dataset.patch_size_m,
            description=repr(dataset),
        )
        self.dataset = dataset
        if dataset.name == "geoplex-mini":
            for i, t in enumerate(dataset.indices):
                left, top = dataset.tile_transform(t)[2], dataset.tile_transform(t)[5]
                self._footprints[i] = (left, top - dataset.tile_m, left + dataset.tile_m, top)

    def _read(self, i: int) -> dict[str, Any]:
        s = dict(self.dataset[i])
        meta = s.get("meta")
        if meta is not None and self.crs is None and meta.crs is not None:
            self.crs = meta.crs
        return s


class SceneSource(TileSource):
    """The user's rasters cut into tiles (:func:`anysat_core.open_rasters`)."""

    def __init__(self, key: str, label: str, scene: Any, warnings: Sequence[str] = ()) -> None:
        g = scene.grid
        n = g.n_rows * g.n_cols
        if n > MAX_SCENE_TILES:
            raise InputShapeError(
                f"{label}: {g.n_rows} x {g.n_cols} = {n} tiles of {g.tile_m:g} m; the explorer lists at most "
                f"{MAX_SCENE_TILES}: choose a larger tile size, or map the whole scene with infer_scene"
            )
        self.rc = [(r, c) for r in range(g.n_rows) for c in range(g.n_cols)]
        super().__init__(
            key,
            label,
            str(g.crs),
            scene.modalities,
            [f"r{r:03d}c{c:03d}" for r, c in self.rc],
            default_patch_size_m=min(g.tile_m, 20.0),
            description=repr(scene),
            warnings=warnings,
        )
        self.scene = scene
        for i, (r, c) in enumerate(self.rc):
            self._footprints[i] = tuple(float(v) for v in g.tile_bounds(r, c))  # type: ignore[assignment]

    def _read(self, i: int) -> dict[str, Any]:
        return dict(self.scene.tile(*self.rc[i]))


@dataclasses.dataclass(frozen=True)
class RasterSpec:
    """The user's raster(s) for one modality, as the own-raster form gives them.

    Attributes:
        paths: raster files (one per date for a time series), under the data roots.
        modality: registry name.
        dates: ISO dates, one per path (time series); empty: read from the files.
        tile_m: tile side in metres (0: 64 pixels of the modality).
        bands: the file's bands in the modality's registry order (1-based numbers or band names); empty: all
            bands, reordered when their descriptions name them (see :class:`anysat_core.RasterSource`).
    """

    paths: tuple[str, ...]
    modality: str
    dates: tuple[str, ...] = ()
    tile_m: float = 0.0
    bands: tuple[str, ...] = ()

    def key(self) -> str:
        return "raster:" + json.dumps(dataclasses.asdict(self), sort_keys=True)


def raster_source_key(spec: RasterSpec) -> str:
    """The :func:`open_source` key of a raster spec."""
    return spec.key()


def guess_modality(path: str | Path) -> tuple[str | None, str]:
    """The registry modality a raster most likely holds, from its band count and pixel size, and why.

    Returns ``(name or None, explanation)``.
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            n, res = src.count, abs(src.res[0])
            geographic = src.crs is not None and src.crs.is_geographic
    except Exception as e:  # noqa: BLE001 - rasterio raises many types for unreadable files
        return None, f"could not read {Path(path).name}: {e}"
    gsd = res * 111_320 if geographic else res
    fits = [m for m in MODALITIES.values() if len(m.bands) == n]
    if not fits:
        counts = sorted({len(m.bands) for m in MODALITIES.values()})
        return None, f"{n} band(s): no modality has that many (registry band counts: {counts}); pick bands"
    best = min(fits, key=lambda m: abs(np.log(max(gsd, 1e-6) / m.gsd_m)))
    return best.name, f"{n} bands at {gsd:.3g} m: closest is {best.name} ({len(best.bands)} bands, {best.gsd_m:g} m)"


_SOURCES: dict[str, TileSource] = {}
_SOURCES_LOCK = threading.Lock()


def _geoplex_mini() -> Any:
    from anysat_core.data.datasets import get_dataset
    from app.resources import default_cache_dir

    return get_dataset("geoplex-mini", seed=0, split="all", cache_dir=default_cache_dir())


def open_source(key: str, config: AppConfig) -> TileSource:
    """The source named ``key`` (opened once per process).

    Keys: ``"geoplex-mini"``; ``"dataset:<name>:<split>:<modalities, comma separated>:<root>"``; ``"raster:<json>"`` (:class:`RasterSpec`).

    Raises:
        AnySatError subclasses: a missing or unreadable dataset or raster, a path outside the data roots.
    """
    with _SOURCES_LOCK:
        hit = _SOURCES.get(key)
    if hit is not None:
        return hit
    src = _open(key, config)
    with _SOURCES_LOCK:
        return _SOURCES.setdefault(key, src)


def _open(key: str, config: AppConfig) -> TileSource:
    from anysat_core.data.datasets import get_dataset

    if key == DEFAULT_SOURCE:
        return DatasetSource(key, "GeoPlex-mini (embedded, seed 0)", _geoplex_mini())
    if key.startswith("dataset:"):
        _, name, split, mods, root = key.split(":", 4)
        path = resolve_under_roots(root, config.data_roots)
        modalities = mods.split(",") if mods else None
        try:
            ds = get_dataset(name, root=path, split=split, modalities=modalities)
            note = ""
        except DatasetNotFoundError as e:
            if "normalisation statistics" not in str(e):
                raise
            # no statistics beside the data (and the app writes nothing there): raw values, said in the label
            ds = get_dataset(name, root=path, split=split, modalities=modalities, normalize=False)
            note = ", RAW values: no normalisation statistics found"
        return DatasetSource(key, f"{name} {split} ({path.name}{note})", ds)
    if key.startswith("raster:"):
        from anysat_core import RasterSource, open_rasters

        try:
            spec = RasterSpec(**json.loads(key[7:]))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad raster source key {key!r}: {e}") from None
        if not spec.paths:
            raise ConfigError("no raster path given; enter a GeoTIFF/COG/NetCDF/Zarr path under a data root")
        paths = [str(resolve_under_roots(p, config.data_roots)) for p in spec.paths]
        mod = MODALITIES[spec.modality]
        data: Any = paths if (mod.time_series and len(paths) > 1) or len(paths) > 1 else paths[0]
        dates = list(spec.dates) if spec.dates else None
        if mod.time_series and len(paths) == 1 and not isinstance(data, list):
            data = [paths[0]]
        bands: list[int | str] | None = None
        if spec.bands:
            bands = [int(b) if str(b).strip().isdigit() else str(b).strip() for b in spec.bands]
        src = RasterSource(data, spec.modality, dates=dates, bands=bands)
        tile_m = spec.tile_m or _default_tile_m(spec.modality)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnitsMismatchWarning)
            scene = open_rasters([src], tile_m=tile_m)
        said = [str(w.message) for w in caught if issubclass(w.category, UnitsMismatchWarning)]
        for w in caught:  # the others go on as they came
            if not issubclass(w.category, UnitsMismatchWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        names = ", ".join(Path(p).name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        return SceneSource(key, f"{names} as {spec.modality} ({tile_m:g} m tiles)", scene, said)
    raise ConfigError(
        f"unknown source {key!r}; expected 'geoplex-mini', 'dataset:<name>:<split>:<root>' or a raster source"
    )


def _default_tile_m(modality: str) -> float:
    """A tile of 64 pixels of the modality, rounded to its patch step (at least 60 m)."""
    m = MODALITIES[modality]
    step = getattr(m, "patch_step_m", 10.0) or 10.0
    side = max(60.0, 64 * m.gsd_m)
    return float(np.ceil(side / step) * step)


def discover_datasets(config: AppConfig) -> dict[str, str]:
    """Dataset loaders whose root is found under the data roots: ``{label: source key}``, one entry per split.

    A folder counts as a root of a dataset when the loader opens it (its own layout check); the data roots and their
    sub-folders (one level) are tried.
    """
    from anysat_core.data.datasets import DATASETS

    out: dict[str, str] = {}
    folders: list[Path] = []
    for root in config.data_roots:
        folders.append(root)
        try:
            folders += sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))[:200]
        except OSError:
            continue
    for name, cls in sorted(DATASETS.items()):
        if getattr(cls, "generated", False):
            continue
        for folder in folders:
            for split in cls.splits:
                mods = _openable_modalities(cls, folder, split)
                if mods is not None:
                    key = f"dataset:{name}:{split}:{','.join(mods)}:{folder}"
                    out[f"{name} / {split} ({folder.name}; {', '.join(mods)})"] = key
    return out


def _openable_modalities(cls: Any, folder: Path, split: str) -> list[str] | None:
    """The dataset's default modalities if its loader opens ``folder`` with them, else those it opens alone (a root
    may hold only some modalities), else None."""

    def opens(mods: Sequence[str]) -> bool:
        try:
            return len(cls(folder, split=split, modalities=list(mods), normalize=False)) > 0
        except (AnySatError, OSError, ValueError, KeyError):
            return False

    defaults = list(cls.default_modalities)
    if opens(defaults):
        return defaults
    alone = [m for m in defaults if opens([m])]
    if alone and opens(alone):
        return alone
    return None
