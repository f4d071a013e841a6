"""GeoPlex-mini: the project's embedded default dataset, a procedural multi-modal georeferenced world.

Every tile of the world (:mod:`.world`) can carry **any subset of the 11 modalities** of
:data:`anysat_core.modalities.MODALITIES` at their true GSD over the tile's extent (MODIS: one 250 m pixel centred
on the tile), with the signals of :mod:`.signals` in raw units; ``normalize=True`` applies statistics computed
from the world (:meth:`GeoPlexMini.stats`).  Dates are irregular day-of-year acquisitions with each sensor's
revisit (S2 5 d, S1 6 d, Landsat 8 d/16 d, MODIS 8-day composites, ALOS-2 42 d), the same for every tile.

Tasks (``label``): ``"multilabel"`` multi-hot float32 ``(K,)`` of the classes covering at least ``min_cover`` of the
tile; ``"segmentation"`` int64 ``(H, W)`` class map on the label grid; ``"change"`` int64 ``(H, W)`` 1 where the cover
changed during the year.  The label grid is ``label_gsd_m`` (default: the finest selected modality, the sample's
reference grid described by ``meta``).

Generation is lazy: a tile's modality is computed on access from ``(seed, tile, modality)`` with private seeded
generators (no global random state) and optionally cached under ``cache_dir`` as ``.npz`` files (written atomically).
The dataset has no root: it is registered as ``"geoplex-mini"`` and built with ``get_dataset("geoplex-mini", ...)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.geoplex_mini.signals import band_wavelengths, generate, kind, units
from anysat_core.data.geoplex_mini.world import (
    CLASSES,
    CRS,
    ORIGIN_M,
    YEAR,
    date_count,
    get_world,
    seeded_rng,
    tile_bytes,
    world_bytes,
)
from anysat_core.data.normalize import Normalize, compute_stats, read_stats, write_stats
from anysat_core.data.sample import GeoInfo
from anysat_core.errors import ConfigError, ExtentMismatchError
from anysat_core.geo import cell_centres, is_multiple
from anysat_core.memory import check_memory, format_bytes
from anysat_core.modalities import MODALITIES, Modality, NormStats
from anysat_core.writers import atomic_write

__all__ = ["GENERATOR_VERSION", "GeoPlexMini", "memory_estimate"]

log = logging.getLogger(__name__)

#: Bumped whenever the generator's output changes (it is part of the cache key).
GENERATOR_VERSION = 4
_TASKS = ("multilabel", "segmentation", "change")


def memory_estimate(
    rows: int,
    cols: int,
    tile_m: float,
    parcel_m: float,
    modalities: Sequence[str],
    label_gsd_m: float | None = None,
) -> dict[str, float]:
    """Estimated bytes of a GeoPlex-mini world and of its largest tile, before anything is built (unknown modality
    names are left out; the dataset reports them).

    Returns ``{"world": ..., "tile": ...}``: the world's parcels and per-tile bookkeeping, and the peak of generating
    one sample (the largest modality's tile, or the 2 m class fractions and the label grid, whichever is larger).
    """
    mods = [MODALITIES[m] for m in modalities if m in MODALITIES]
    finest = min((m.gsd_m for m in mods if not m.tile_token), default=10.0)
    given = isinstance(label_gsd_m, (int, float)) and not isinstance(label_gsd_m, bool) and label_gsd_m > 0
    label_gsd = float(label_gsd_m) if given else finest  # type: ignore[arg-type]  # a bad value is reported later
    per_tile = [
        tile_bytes(tile_m, parcel_m, 2.0, 1, 1, False, "labels"),  # class fractions on 2 m sub-samples
        tile_bytes(tile_m, parcel_m, label_gsd, 1, len(CLASSES), False, "labels"),  # the label grid
    ]
    for m in mods:
        n_dates = date_count(m.name) if m.time_series else 1
        per_tile.append(tile_bytes(tile_m, parcel_m, m.gsd_m, n_dates, m.num_bands, m.tile_token, kind(m)))
    return {"world": world_bytes(rows, cols, tile_m, parcel_m), "tile": max(per_tile)}


def _check_memory(
    rows: int, cols: int, tile_m: float, parcel_m: float, modalities: Sequence[str], label_gsd_m: float | None
) -> None:
    """MemoryLimitError when :func:`memory_estimate` exceeds the allowed share of this machine's memory."""
    est = memory_estimate(rows, cols, tile_m, parcel_m, modalities, label_gsd_m)
    check_memory(
        sum(est.values()),
        f"GeoPlex-mini with tiles=({rows}, {cols}) of tile_m={tile_m:g} m, parcel_m={parcel_m:g} and "
        f"{', '.join(modalities)} (world {format_bytes(est['world'])}, one tile {format_bytes(est['tile'])})",
        "use fewer or smaller tiles (the defaults are tiles=16, tile_m=60), fewer fine-resolution modalities "
        "(aerial is 0.2 m), or a larger parcel_m",
    )


@register_dataset
class GeoPlexMini(AnySatDataset):
    """GeoPlex-mini: a procedural multi-modal world of ``rows x cols`` square tiles (see the module docstring).

    Facts (defaults): 16 x 16 = 256 tiles of 60 m (a 960 m square in EPSG:32631, Beauce, France, 2021); 8 classes
    (:data:`CLASSES`); spatial-block splits (blocks of 4 x 4 tiles, about 60/20/20 % train/val/test); all 11
    registry modalities available at their GSD (aerial 300 x 300 px, S2 6 x 6, L7/ALOS 2 x 2, MODIS 1 x 1 per tile).

    Every argument is a keyword (the dataset has no root).

    Args:
        seed: world seed (same seed, byte-identical data).
        modalities: names from the registry (any subset; ``"all"`` for every modality).
        tiles: world size in tiles, ``n`` (square) or ``(rows, cols)``.
        tile_m: tile side in metres; every selected modality must have an integer number of pixels
            (multiples of 30 m fit all modalities).
        task: ``"multilabel"``, ``"segmentation"`` or ``"change"`` (what ``label`` holds).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every tile).
        normalize: True (or ``"compute"``) applies :meth:`stats` (computed from train tiles of the world); False
            gives raw values; a :class:`~anysat_core.data.normalize.Normalize` is used as given.
        cache_dir: folder where generated tiles and statistics are cached (``.npz``/``.json``), None for no cache.
        label_gsd_m: pixel size of segmentation/change labels (default: the finest selected modality).
        min_cover: fraction of the tile a class must cover to be in the multi-label target.
        parcel_m: mean parcel spacing in metres.
        block_tiles: side, in tiles, of the spatial blocks assigned to splits.
        transform: optional callable applied to every sample after normalisation.

    Raises:
        UnknownModalityError: a modality name is not in the registry.
        ConfigError: bad task, split, world size or normalize value.
        ExtentMismatchError: ``tile_m`` or ``label_gsd_m`` is not a whole number of pixels of a modality.
    """

    name: ClassVar[str] = "geoplex-mini"
    generated: ClassVar[bool] = True
    task: ClassVar[str] = "multilabel"
    classes: ClassVar[tuple[str, ...]] = CLASSES
    patch_size_m: ClassVar[int] = 20
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test", "all")
    modalities_available: ClassVar[tuple[str, ...]] = tuple(MODALITIES)
    default_modalities: ClassVar[tuple[str, ...]] = ("aerial", "s2", "s1-asc")

    def __init__(
        self,
        *,
        seed: int = 0,
        modalities: Sequence[str] | str = default_modalities,
        tiles: int | tuple[int, int] = 16,
        tile_m: float = 60.0,
        task: str = "multilabel",
        split: str = "train",
        normalize: bool | str | Normalize = True,
        cache_dir: str | os.PathLike[str] | None = None,
        label_gsd_m: float | None = None,
        min_cover: float = 0.1,
        parcel_m: float = 120.0,
        block_tiles: int = 4,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        mods = (
            tuple(MODALITIES)
            if modalities == "all"
            else (modalities,)
            if isinstance(modalities, str)
            else tuple(modalities)
        )
        if not mods:
            raise ConfigError("modalities is empty; pass at least one registry name, e.g. ('s2',), or 'all'")
        rows, cols = (tiles, tiles) if isinstance(tiles, int) else tuple(tiles)
        if not (isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0):
            raise ConfigError(f"tiles={tiles!r}; expected a positive int or a (rows, cols) pair of positive ints")
        if task not in _TASKS:
            raise ConfigError(f"task={task!r}; expected one of {', '.join(_TASKS)}")
        for name, v, eg in (("tile_m", tile_m, 60), ("parcel_m", parcel_m, 120)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 < v < np.inf:
                raise ConfigError(f"{name}={v!r}; expected a positive, finite number of metres (e.g. {eg})")
        _check_memory(rows, cols, float(tile_m), float(parcel_m), mods, label_gsd_m)
        self.task = task  # type: ignore[misc]
        self.seed, self.rows, self.cols, self.tile_m = int(seed), rows, cols, float(tile_m)
        self.parcel_m, self.block_tiles, self.min_cover = float(parcel_m), int(block_tiles), float(min_cover)
        self._label_gsd_m_arg = label_gsd_m  # resolved into label_gsd_m by _load_index once the modalities are checked
        self.world = get_world(self.seed, rows, cols, self.tile_m, self.parcel_m)
        self.key = hashlib.sha1(
            json.dumps([GENERATOR_VERSION, self.seed, rows, cols, self.tile_m, self.parcel_m]).encode()
        ).hexdigest()[:12]
        self.cache_dir = Path(cache_dir).expanduser() / f"geoplex-mini-{self.key}" if cache_dir is not None else None
        self._stats: dict[str, NormStats] | None = None
        super().__init__(None, split, mods, normalize, transform)

    # ------------------------------------------------------------------ the base class's hooks
    def _load_index(self) -> None:
        """Check the grids of the selected modalities and of the labels; list the tiles of the split."""
        self.mods: list[Modality] = [MODALITIES[m] for m in self.modalities]
        for m in self.mods:
            if not m.tile_token:
                self._pixels(self.tile_m, m.gsd_m, m.name)
            if m.projector != "ltae" or m.name in ("modis", "s2", "l7", "l8"):
                band_wavelengths(m)  # ConfigError for a band without a spectral model
        spatial = [m.gsd_m for m in self.mods if not m.tile_token]
        g = self._label_gsd_m_arg
        self.label_gsd_m = float(g if g is not None else min(spatial, default=10.0))
        self._pixels(self.tile_m, self.label_gsd_m, "the label grid (label_gsd_m)")
        self.tile_split = self._assign_splits()
        self.indices = [i for i, s in enumerate(self.tile_split) if self.split in ("all", s)]

    def _make_normalizer(self, normalize: bool | str | Normalize) -> Normalize | None:
        """Statistics of the world (:meth:`stats`) for True/"compute"; a Normalize as given; None for False."""
        if isinstance(normalize, Normalize):
            return normalize
        if normalize is False:
            return None
        if normalize is True or normalize in ("compute", "files"):
            return Normalize(self.stats())
        raise ConfigError(f"normalize={normalize!r}; expected True, False, 'compute' or a Normalize")

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _pixels(extent_m: float, gsd_m: float, what: str) -> int:
        """Number of ``gsd_m`` pixels across ``extent_m`` (ExtentMismatchError unless it is a whole number >= 1)."""
        if not is_multiple(extent_m, gsd_m):
            raise ExtentMismatchError(
                f"tile_m={extent_m} m is not a whole number of {gsd_m} m pixels for {what} ({extent_m / gsd_m:.3f}); "
                "use a tile side that is a multiple of every selected GSD (a multiple of 30 m fits all modalities, "
                "e.g. 60)"
            )
        return round(extent_m / gsd_m)

    @property
    def crs(self) -> str:
        """CRS of the world (projected, metres)."""
        return CRS

    @property
    def n_tiles(self) -> int:
        """Number of tiles of the whole world (all splits)."""
        return self.rows * self.cols

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the world in CRS metres."""
        x0, y0 = ORIGIN_M
        return (x0, y0 - self.rows * self.tile_m, x0 + self.cols * self.tile_m, y0)

    def transform_at(self, gsd_m: float) -> tuple[float, float, float, float, float, float]:
        """Affine transform (GDAL order) of the world grid at ``gsd_m``."""
        x0, y0 = ORIGIN_M
        return (float(gsd_m), 0.0, x0, 0.0, -float(gsd_m), y0)

    @property
    def world_transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine transform of the world grid at 10 m (the grid of :meth:`class_map` and :meth:`change_map`)."""
        return self.transform_at(10.0)

    def tile_transform(self, tile: int, gsd_m: float | None = None) -> tuple[float, float, float, float, float, float]:
        """Affine transform of world tile ``tile`` (row-major index) at ``gsd_m`` (default: the label grid)."""
        g = float(gsd_m or self.label_gsd_m)
        x, y = self.world.tile_origin(tile)
        return (g, 0.0, x, 0.0, -g, y)

    def tile_id(self, tile: int) -> str:
        r, c = divmod(tile, self.cols)
        return f"r{r:02d}c{c:02d}"

    def _assign_splits(self) -> list[str]:
        b = max(1, self.block_tiles)
        brows, bcols = -(-self.rows // b), -(-self.cols // b)
        nb = brows * bcols
        order = seeded_rng(self.seed, 9).permutation(nb)
        n_val = max(1, round(0.2 * nb)) if nb >= 3 else 0
        n_test = max(1, round(0.2 * nb)) if nb >= 3 else 0
        block_split = np.empty(nb, dtype=object)
        block_split[order[:n_test]] = "test"
        block_split[order[n_test : n_test + n_val]] = "val"
        block_split[order[n_test + n_val :]] = "train"
        return [str(block_split[(t // self.cols) // b * bcols + (t % self.cols) // b]) for t in range(self.n_tiles)]

    # ------------------------------------------------------------------ world maps
    def _world_units(self, gsd_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Unit and class maps ``(H, W)`` of the whole world at ``gsd_m`` (pixel centres, computed by row blocks)."""
        g = float(gsd_m)
        H = self._pixels(self.rows * self.tile_m, g, "the world map")
        W = self._pixels(self.cols * self.tile_m, g, "the world map")
        xs, ys = cell_centres(self.transform_at(g), (H, W))
        unit, cls = np.empty((H, W), np.int64), np.empty((H, W), np.int64)
        step = max(1, 250_000 // W)
        for r in range(0, H, step):
            x, y = np.meshgrid(xs, ys[r : r + step])
            _, unit[r : r + step], cls[r : r + step] = self.world.query(x, y)
        return unit, cls

    def class_map(self, gsd_m: float = 10.0) -> np.ndarray:
        """Class index map ``(H, W)`` int64 of the whole world at ``gsd_m`` (class at each pixel centre).

        Its affine transform is :meth:`transform_at` ``(gsd_m)`` (:attr:`world_transform` for the default 10 m).
        """
        return self._world_units(gsd_m)[1]

    def change_map(self, gsd_m: float = 10.0) -> np.ndarray:
        """Map ``(H, W)`` int64 of the whole world, 1 where the cover changes during the year (pixel centres)."""
        return (self._world_units(gsd_m)[0] % (len(self.world.events) + 1) > 0).astype(np.int64)

    def class_fractions(self) -> np.ndarray:
        """Class fractions ``(len(self), K)`` of the tiles of this split (2 m sub-samples)."""
        return self.world.fractions()[self.indices]

    def dominant_class(self) -> np.ndarray:
        """Dominant class ``(len(self),)`` of each tile of this split."""
        return self.class_fractions().argmax(1)

    @property
    def change_tiles(self) -> list[int]:
        """Positions (in this split) of the tiles where some cover changes during the year."""
        return [i for i, t in enumerate(self.indices) if self.world.tile_events(t)[0] > 0]

    def dates(self, modality: str) -> np.ndarray:
        """Day-of-year acquisitions ``(T,)`` of a series modality (the same for every tile)."""
        return self.world.dates(MODALITIES[modality].name).copy()

    # ------------------------------------------------------------------ generation and cache
    def _cache_path(self, tile: int, mod: str) -> Path | None:
        return self.cache_dir / f"t{tile:05d}_{mod}.npz" if self.cache_dir is not None else None

    def raw(self, tile: int, modality: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw values of world tile ``tile`` for ``modality`` and its mask (None for SAR/VHR), cached if enabled."""
        mod = MODALITIES[modality]
        path = self._cache_path(tile, modality)
        if path is not None and path.exists():
            try:
                with np.load(path) as z:
                    x = z["x"].astype(np.float32)
                    mask = z["mask"] if "mask" in z.files else None
                return x, mask
            except (OSError, ValueError, KeyError, zlib.error) as e:
                log.warning("GeoPlex-mini cache file %s is unreadable (%s); regenerating it", path, e)
        x, mask = self._generate(tile, mod)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = x  # integer-valued rasters are stored losslessly as uint8/uint16
            if np.array_equal(x, np.round(x)) and x.min() >= 0:
                store = x.astype(np.uint8 if x.max() < 256 else np.uint16 if x.max() < 65536 else np.float32)
            arrays: dict[str, Any] = {"x": store} if mask is None else {"x": store, "mask": mask}
            with (
                atomic_write(path, "write the GeoPlex-mini cache file", suffix=".npz", mkdir=False) as tmp,
                open(tmp, "wb") as f,
            ):
                np.savez_compressed(f, **arrays)
        return x, mask

    def _generate(self, tile: int, mod: Modality, clouds: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        return generate(self.world, tile, mod, clouds=clouds)

    # ------------------------------------------------------------------ normalisation
    def stats(self, n_tiles: int = 12) -> dict[str, NormStats]:
        """Normalisation statistics ``{modality: NormStats}`` of the selected modalities, from the world.

        Computed with :func:`~anysat_core.data.normalize.compute_stats` (mean of per-tile statistics, clouds
        left out) over ``n_tiles`` train tiles spread over the world, the same for every split; cached in
        ``cache_dir`` when set.
        """
        if self._stats is not None:
            return self._stats
        train = [i for i, s in enumerate(self.tile_split) if s == "train"] or list(range(self.n_tiles))
        pick = [train[k] for k in np.linspace(0, len(train) - 1, min(n_tiles, len(train))).round().astype(int)]
        out: dict[str, NormStats] = {}
        for mod in self.modalities:
            path = self.cache_dir / f"NORM_{mod}_{len(pick)}.json" if self.cache_dir is not None else None
            if path is not None and path.exists():
                try:
                    out[mod] = read_stats(path, mod)
                    continue
                except Exception as e:  # noqa: BLE001 - a bad cache file is recomputed
                    log.warning("recomputing %s: %s", path, e)
            key = (mod, tuple(pick))
            if key in self.world.stats_cache:  # the same for every split/instance over this world
                out[mod] = self.world.stats_cache[key]
                continue
            samples = []
            for t in pick:
                x, mask = self.raw(t, mod)
                s = {mod: torch.from_numpy(x)}
                if mask is not None:
                    s[f"{mod}_mask"] = torch.from_numpy(mask)
                samples.append(s)
            st = compute_stats(samples, mod)
            out[mod] = NormStats(
                st.mean, st.std, source=f"geoplex-mini seed {self.seed}: {st.source}", units=units(mod)
            )
            self.world.stats_cache[key] = out[mod]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_stats(path, out[mod])
        self._stats = out
        return out

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.indices)

    def _label_grid(self, tile: int) -> tuple[np.ndarray, np.ndarray]:
        """Class map and change map ``(H, W)`` int64 of a tile on the label grid (majority of sub-samples)."""
        g = self.label_gsd_m
        side = self._pixels(self.tile_m, g, "the label grid")
        x, y, _ = self.world.subsamples(tile, g, side, False)
        _, unit, cls = self.world.query(x, y)
        K = len(CLASSES)
        counts = np.zeros((cls.shape[0], K))
        np.add.at(counts, (np.repeat(np.arange(cls.shape[0]), cls.shape[1]), cls.ravel()), 1)
        changed = (unit % (len(self.world.events) + 1) > 0).mean(1) >= 0.5
        return counts.argmax(1).reshape(side, side), changed.astype(np.int64).reshape(side, side)

    def _load_sample(self, index: int) -> dict[str, Any]:
        tile = self.indices[index]
        sample: dict[str, Any] = {}
        acq: dict[str, int] = {}
        for name, mod in zip(self.modalities, self.mods):
            x, mask = self.raw(tile, name)
            sample[name] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            if mod.time_series:
                sample[f"{name}_dates"] = torch.from_numpy(self.world.dates(name).copy())
                if mask is not None:
                    sample[f"{name}_mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
            else:
                acq[name] = self.world.vhr_doy(name)
        frac = self.world.fractions()[tile]
        if self.task == "multilabel":
            hot = (frac >= self.min_cover) | (np.arange(len(CLASSES)) == frac.argmax())
            sample["label"] = torch.from_numpy(hot.astype(np.float32))
        else:
            cmap, chg = self._label_grid(tile)
            sample["label"] = torch.from_numpy(cmap if self.task == "segmentation" else chg)
        side = self._pixels(self.tile_m, self.label_gsd_m, "the label grid")
        events = [self.world.events[e] for e in self.world.tile_events(tile)[1]]
        sample["meta"] = GeoInfo(
            dataset=self.name,
            tile_id=self.tile_id(tile),
            crs=CRS,
            transform=self.tile_transform(tile),
            gsd_m=self.label_gsd_m,
            shape=(side, side),
            split=self.tile_split[tile],
            extra={
                "tile_index": tile,
                "seed": self.seed,
                "year": YEAR,
                "class_fractions": tuple(float(f) for f in frac),
                "dominant_class": int(frac.argmax()),
                "acquisition_doy": acq,
                "change_doy": tuple(e.doy for e in events),
                "change_kind": tuple(("clear-cut", "fire")[e.kind] for e in events),
            },
        )
        return sample

    def __repr__(self) -> str:
        return (
            f"GeoPlexMini(seed={self.seed}, tiles=({self.rows}, {self.cols}), tile_m={self.tile_m}, task={self.task!r}, "
            f"split={self.split!r}, n={len(self)}, modalities={self.modalities})"
        )
