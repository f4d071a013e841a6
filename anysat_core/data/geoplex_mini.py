"""GeoPlex-mini: a small procedural, multi-modal, georeferenced world (the project's embedded default dataset).

The world is a grid of square tiles in UTM zone 31N (``EPSG:32631``) over an agricultural plain of the Beauce
(near Chartres, France; year 2021).  Land is cut into irregular parcels (Voronoi cells of a jittered grid of seeds,
with warped boundaries), each of one of eight land-cover classes.  Every tile can carry **any subset of the 11
modalities** of :data:`anysat_core.modalities.MODALITIES` at their true GSD over the tile's extent (MODIS: one
250 m pixel centred on the tile).  Band lists and GSDs are read from the registry.

What the data contains (raw units; ``normalize=True`` applies statistics computed from the world, see :meth:`stats`):

* **Optical series** (``s2``, ``l7``, ``l8``, ``modis``): surface reflectance x 10000, mixtures of endmember spectra
  (green/dry vegetation, soil, water, impervious, broadleaf/leafless/conifer canopy, burn scar) whose weights follow
  class phenology through the year (winter wheat, maize, mown grassland, deciduous forest...), with per-parcel
  phenology shift and brightness, sub-pixel mixing, sensor noise and per-date gain.  Landsat-8 thermal bands
  (``B10``, ``B11``) are brightness temperatures in kelvin (0.01 K steps); reflectances are integers, as in L2A products.  Random per-date cloud blobs add cloud reflectance;
  ``<mod>_mask`` ``(T, 1, H, W)`` is False exactly where cloud was added.
* **SAR series** (``s1-asc``: linear VV, VH; ``s1``: dB VV, VH and VV-VH dB ratio; ``alos``: linear HH, HV and
  HH/HV ratio clamped to +-1e4): class-dependent backscatter, soil-moisture seasonality, wind on water and
  multiplicative gamma speckle.
* **VHR images** (``aerial``, ``aerial-flair``, ``spot``, ``naip``): 8-bit digital numbers at one summer date with
  class textures (crop rows, tree crowns with shadows, buildings and yards, tillage lines, ripples);
  ``aerial-flair``'s ``elevation`` band is a surface height in metres above sea level.
* **Dates**: irregular day-of-year acquisitions with each sensor's revisit (S2 5 d, S1 6 d, Landsat 8 d/16 d,
  MODIS 8-day composites, ALOS-2 42 d), the same for every tile of the world.
* **Disturbances**: clear-cuts (forest) and fires (crops, grassland, forest) in a few discs, at a day of year
  between 100 and 260; after that date the series (and VHR images acquired later) show the new cover.

Tasks (``label``): ``"multilabel"`` multi-hot float32 ``(K,)`` of the classes covering at least ``min_cover`` of the
tile; ``"segmentation"`` int64 ``(H, W)`` class map on the label grid; ``"change"`` int64 ``(H, W)`` 1 where the cover
changed during the year.  The label grid is ``label_gsd_m`` (default: the finest selected modality, the sample's
reference grid described by ``meta``).

Generation is lazy: a tile's modality is computed on access from ``(seed, tile, modality)`` with private seeded
generators (no global random state) and optionally cached under ``cache_dir`` as ``.npz`` files (written atomically).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from anysat_core.data.normalize import Normalize, compute_stats, read_stats, write_stats
from anysat_core.data.sample import GeoInfo
from anysat_core.errors import ConfigError, ExtentMismatchError
from anysat_core.modalities import MODALITIES, Modality, NormStats
from anysat_core.writers import atomic_write

__all__ = ["CLASSES", "CRS", "GENERATOR_VERSION", "GeoPlexMini"]

log = logging.getLogger(__name__)

#: Bumped whenever the generator's output changes (it is part of the cache key).
GENERATOR_VERSION = 2
#: Projected CRS of the world (UTM zone 31N, WGS 84).
CRS = "EPSG:32631"
#: Upper-left corner (easting, northing) of the world: Beauce plain, about 1.5 E 48.3 N, near Chartres.
ORIGIN_M = (388_800.0, 5_351_400.0)
YEAR = 2021
#: Land-cover classes, in label order.
CLASSES = (
    "wheat",
    "maize",
    "grassland",
    "broadleaf_forest",
    "conifer_forest",
    "water",
    "urban",
    "bare_soil",
)
_CLASS_P = np.array([0.2, 0.15, 0.2, 0.12, 0.1, 0.06, 0.09, 0.08])
WHEAT, MAIZE, GRASS, BROADLEAF, CONIFER, WATER, URBAN, BARE = range(8)

# ------------------------------------------------------------------------------------------------ spectral library
#: Endmembers mixed into every pixel.
_ENDMEMBERS = ("green", "dry", "soil", "water", "urban", "broadleaf", "woody", "conifer", "burnt")
GREEN, DRY, SOIL, H2O, IMPERV, BLEAF, WOODY, CONIF, BURNT = range(9)
_WL_NM = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 1240, 1373, 1610, 2190], dtype=np.float64)
# reflectance (0-1) of each endmember at _WL_NM (1373 nm is the water-vapour cirrus band: surfaces are dark)
_SPECTRA = np.array(
    [
        [0.03, 0.04, 0.09, 0.04, 0.12, 0.30, 0.42, 0.46, 0.47, 0.40, 0.004, 0.24, 0.11],  # green vegetation
        [0.06, 0.07, 0.11, 0.15, 0.18, 0.22, 0.26, 0.29, 0.30, 0.36, 0.004, 0.38, 0.28],  # dry vegetation
        [0.07, 0.08, 0.11, 0.15, 0.17, 0.19, 0.21, 0.23, 0.24, 0.30, 0.004, 0.33, 0.28],  # bare soil
        [0.07, 0.065, 0.055, 0.035, 0.03, 0.02, 0.015, 0.012, 0.01, 0.005, 0.002, 0.003, 0.002],  # water
        [0.10, 0.11, 0.13, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.21, 0.004, 0.23, 0.21],  # impervious
        [0.025, 0.035, 0.075, 0.035, 0.11, 0.28, 0.38, 0.42, 0.43, 0.35, 0.004, 0.20, 0.09],  # broadleaf canopy
        [0.04, 0.05, 0.07, 0.08, 0.10, 0.14, 0.18, 0.20, 0.21, 0.22, 0.004, 0.22, 0.14],  # leafless wood
        [0.02, 0.025, 0.05, 0.025, 0.07, 0.16, 0.22, 0.24, 0.25, 0.20, 0.004, 0.12, 0.05],  # conifer canopy
        [0.03, 0.035, 0.04, 0.045, 0.05, 0.06, 0.07, 0.08, 0.08, 0.12, 0.004, 0.17, 0.16],  # burn scar
    ]
)
_CLOUD = np.array([0.55, 0.55, 0.54, 0.53, 0.53, 0.52, 0.52, 0.51, 0.51, 0.45, 0.25, 0.35, 0.22])
# surface temperature offsets (K) from the regional seasonal mean; clouds are at _CLOUD_K
_TEMP_OFFSET_K = np.array([-2.0, 2.0, 3.0, -1.0, 4.0, -3.0, 0.0, -3.0, 5.0])
_CLOUD_K = 255.0
# backscatter (dB): C band (VV, VH) and L band (HH, HV)
_SAR_C_DB = np.array(
    [[-10.5, -16.5], [-12, -19.5], [-11.5, -19.5], [-21, -27], [-2, -9], [-7.5, -13], [-8, -14], [-7, -12.5], [-12.5, -20.5]]
)
_SAR_L_DB = np.array(
    [[-11, -19], [-12.5, -21], [-11, -24], [-24, -32], [1, -7], [-6.5, -11.5], [-6.5, -11.5], [-6, -11], [-10, -18]]
)
#: Central wavelength (nm) of each band name, per modality (``"vhr"`` for the VHR cameras); thermal bands > 5000.
_BAND_WL_NM: dict[str, dict[str, float]] = {
    "s2": {"B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783, "B08": 842, "B8A": 865,
           "B11": 1610, "B12": 2190},
    "l7": {"B1": 485, "B2": 560, "B3": 660, "B4": 835, "B5": 1650, "B7": 2220},
    "l8": {"B1": 443, "B2": 482, "B3": 561, "B4": 655, "B5": 865, "B6": 1609, "B7": 2201, "B8": 590, "B9": 1373,
           "B10": 10900, "B11": 12000},
    "modis": {"B1": 645, "B2": 858, "B3": 469, "B4": 555, "B5": 1240, "B6": 1640, "B7": 2130},
    "vhr": {"R": 650, "G": 555, "B": 480, "NIR": 830},
}
#: Per-sensor acquisition plan: (revisit days, probability that an acquisition is kept, day-of-year window).
_REVISIT = {
    "s2": (5, 0.55), "s1": (6, 0.9), "s1-asc": (6, 0.9), "l8": (8, 0.8), "l7": (16, 0.85), "modis": (8, 1.0),
    "alos": (42, 1.0),
}
#: Day-of-year window of the single VHR acquisition.
_VHR_DOY = {"aerial": (160, 200), "aerial-flair": (120, 250), "spot": (100, 280), "naip": (150, 240)}
#: Equivalent number of looks of the SAR sensors (gamma speckle shape).
_ENL = {"s1": 4.4, "s1-asc": 4.4, "alos": 8.0}
_SPLITS = ("train", "val", "test", "all")
_TASKS = ("multilabel", "segmentation", "change")


# ------------------------------------------------------------------------------------------------ helpers
def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _rng(*key: int) -> np.random.Generator:
    """A private generator seeded from integers (never the global numpy/torch state)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _mod_id(name: str) -> int:
    return zlib.crc32(name.encode())


def _hash_uniform(i: np.ndarray, j: np.ndarray, salt: int, k: int) -> np.ndarray:
    """Deterministic uniform [0, 1) numbers from integer cell coordinates (a splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = (i.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            j.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        h ^= np.uint64((salt * 1_000_003 + k * 7919) & 0xFFFFFFFFFFFF)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _class_weights(cls: int, t: np.ndarray) -> np.ndarray:
    """Endmember weights ``(T, E)`` of a class on days of year ``t`` (phenology, sums to 1)."""
    w = np.zeros((t.size, len(_ENDMEMBERS)))
    if cls == WHEAT:  # winter wheat: green in winter, peak May, harvest mid-July, stubble
        g = 0.15 + 0.75 * _sig((t - 85) / 12) * (1 - _sig((t - 175) / 7))
        h = _sig((t - 200) / 4)
        w[:, GREEN] = g
        w[:, DRY] = (1 - g) * _sig((t - 165) / 8) * (0.8 - 0.45 * h)
    elif cls == MAIZE:  # sown May, peak August, harvest October
        g = 0.85 * _sig((t - 160) / 10) * (1 - _sig((t - 255) / 9))
        w[:, GREEN] = g
        w[:, DRY] = (1 - g) * _sig((t - 240) / 8) * (1 - 0.8 * _sig((t - 285) / 4))
    elif cls == GRASS:  # spring flush, two mowings
        g = 0.55 + 0.3 * np.exp(-(((t - 130) / 40) ** 2)) - 0.35 * np.exp(-(((t - 165) / 8) ** 2))
        g = np.clip(g - 0.3 * np.exp(-(((t - 230) / 8) ** 2)), 0.1, 0.95)
        w[:, GREEN] = g
        w[:, DRY] = (1 - g) * 0.7
    elif cls == BROADLEAF:  # deciduous: leaf-on late April to late October
        leaf = 0.92 * _sig((t - 115) / 7) * (1 - _sig((t - 295) / 9))
        w[:, BLEAF] = leaf
        w[:, WOODY] = 1 - leaf
    elif cls == CONIFER:
        w[:, CONIF] = 0.9
        w[:, WOODY] = 0.06
        w[:, GREEN] = 0.04
    elif cls == WATER:
        w[:, GREEN] = 0.04 * np.exp(-(((t - 200) / 40) ** 2))
        w[:, H2O] = 1 - w[:, GREEN]
    elif cls == URBAN:
        w[:, IMPERV] = 0.75
        w[:, GREEN] = 0.12 + 0.08 * np.exp(-(((t - 170) / 60) ** 2))
    elif cls == BARE:
        w[:, GREEN] = 0.05 * np.exp(-(((t - 190) / 30) ** 2))
        w[:, DRY] = 0.1
    w[:, SOIL] += np.clip(1 - w.sum(1), 0, None)
    return w


def _disturbed_weights(kind: int, t: np.ndarray, t0: float) -> np.ndarray:
    """Endmember weights ``(T, E)`` after a disturbance at day ``t0`` (kind 0: clear-cut, 1: fire)."""
    w = np.zeros((t.size, len(_ENDMEMBERS)))
    dt = np.clip(t - t0, 0, None)
    if kind == 0:
        regrow = 0.25 * (1 - np.exp(-dt / 90))
        w[:, GREEN] = 0.05 + regrow
        w[:, DRY] = 0.35
    else:
        b = 0.9 * np.exp(-dt / 150)
        w[:, BURNT] = b
        w[:, DRY] = (1 - b) * 0.3
        w[:, GREEN] = (1 - b) * 0.2
    w[:, SOIL] = 1 - w.sum(1)
    return w


#: Classes each disturbance kind can affect (0: clear-cut, 1: fire).
_ELIGIBLE = {0: (BROADLEAF, CONIFER), 1: (WHEAT, MAIZE, GRASS, BROADLEAF, CONIFER)}


def _interp_spectrum(table: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Endmember table ``(..., 13)`` sampled at wavelengths ``wl`` (C,) -> ``(..., C)``."""
    flat = table.reshape(-1, _WL_NM.size)
    out = np.stack([np.interp(wl, _WL_NM, row) for row in flat])
    return out.reshape(*table.shape[:-1], wl.size)


# ------------------------------------------------------------------------------------------------ the world
@dataclass(frozen=True)
class _Event:
    x: float
    y: float
    r: float
    doy: int
    kind: int


class _World:
    """World-level state: parcels, classes, disturbances, acquisition dates and cloud fields (all from the seed)."""

    def __init__(self, seed: int, rows: int, cols: int, tile_m: float, parcel_m: float) -> None:
        self.seed, self.rows, self.cols, self.tile_m, self.parcel_m = seed, rows, cols, tile_m, parcel_m
        self.x0, self.y0 = ORIGIN_M
        #: normalisation statistics by (modality, tiles used), shared by every dataset over this world
        self.stats_cache: dict[tuple[str, tuple[int, ...]], NormStats] = {}
        self.width_m, self.height_m = cols * tile_m, rows * tile_m
        rng = _rng(seed, 1)
        margin = 300.0  # > MODIS half footprint + boundary warp
        gx = np.arange(self.x0 - margin, self.x0 + self.width_m + margin, parcel_m)
        gy = np.arange(self.y0 - self.height_m - margin, self.y0 + margin, parcel_m)
        sx, sy = np.meshgrid(gx + parcel_m / 2, gy + parcel_m / 2)
        jit = rng.uniform(-0.42, 0.42, size=(2, *sx.shape)) * parcel_m
        self.seeds = np.stack([(sx + jit[0]).ravel(), (sy + jit[1]).ravel()], 1)  # (P, 2) metres
        n = len(self.seeds)
        inside = (
            (self.seeds[:, 0] >= self.x0) & (self.seeds[:, 0] < self.x0 + self.width_m)
            & (self.seeds[:, 1] <= self.y0) & (self.seeds[:, 1] > self.y0 - self.height_m)
        )
        cls = rng.choice(len(CLASSES), size=n, p=_CLASS_P)
        idx_in = np.flatnonzero(inside)
        k = len(CLASSES)
        forced = np.repeat(np.arange(k), 2)[: len(idx_in)]  # every class at least twice inside the world
        chosen = rng.permutation(idx_in)[: len(forced)]
        cls[chosen] = forced
        self.parcel_class = cls.astype(np.int64)
        self.tree = cKDTree(self.seeds)
        self.pheno_shift = rng.normal(0, 7, n)  # days
        self.gain = rng.normal(1, 0.04, n)
        self.sar_offset_db = rng.normal(0, 0.6, n)
        self.row_angle = rng.uniform(0, np.pi, n)
        self.row_period = np.where(cls == MAIZE, 0.8, 1.25) * rng.uniform(0.9, 1.2, n)
        # boundary warp: two smooth random fields (sums of plane waves), amplitude ~ parcel_m / 12
        self.warp_k = rng.uniform(2 * np.pi / 220, 2 * np.pi / 45, size=(2, 6)) * rng.choice([-1, 1], size=(2, 6))
        self.warp_dir = rng.uniform(0, 2 * np.pi, size=(2, 6))
        self.warp_phase = rng.uniform(0, 2 * np.pi, size=(2, 6))
        self.warp_amp = parcel_m / 12
        # disturbances
        n_ev = max(2, round(rows * cols / 40))
        self.events = tuple(
            _Event(
                x=float(rng.uniform(self.x0 + 30, self.x0 + self.width_m - 30)),
                y=float(rng.uniform(self.y0 - self.height_m + 30, self.y0 - 30)),
                r=float(rng.uniform(25, 60)),
                doy=int(rng.integers(100, 261)),
                kind=int(rng.integers(0, 2)),
            )
            for _ in range(n_ev)
        )
        self._dates: dict[str, np.ndarray] = {}
        self._clouds: dict[str, list[np.ndarray]] = {}
        self._fractions: np.ndarray | None = None
        self._tile_events: dict[int, tuple[float, tuple[int, ...]]] = {}

    # ------------------------------------------------------------------ geometry
    def tile_origin(self, t: int) -> tuple[float, float]:
        """Upper-left corner (x, y) of tile ``t`` (row-major index)."""
        r, c = divmod(t, self.cols)
        return self.x0 + c * self.tile_m, self.y0 - r * self.tile_m

    def _field(self, x: np.ndarray, y: np.ndarray, i: int) -> np.ndarray:
        d = self.warp_dir[i]
        ph = (np.cos(d)[:, None] * x.ravel()[None] + np.sin(d)[:, None] * y.ravel()[None]) * self.warp_k[i][:, None]
        return (np.sin(ph + self.warp_phase[i][:, None]).sum(0) / math.sqrt(3)).reshape(x.shape)

    def query(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parcel, unit (parcel x disturbance) and class of points ``x, y`` (metres, any equal shape)."""
        xw = x + self.warp_amp * self._field(x, y, 0)
        yw = y + self.warp_amp * self._field(x, y, 1)
        _, pid = self.tree.query(np.stack([xw.ravel(), yw.ravel()], 1))
        pid = pid.reshape(x.shape).astype(np.int64)
        cls = self.parcel_class[pid]
        ev = np.zeros(x.shape, np.int64)
        for e, E in enumerate(self.events):
            hit = ((xw - E.x) ** 2 + (yw - E.y) ** 2 < E.r**2) & np.isin(cls, _ELIGIBLE[E.kind])
            ev[hit] = e + 1
        return pid, pid * (len(self.events) + 1) + ev, cls

    def subsamples(self, t: int, gsd: float, side: int, tile_token: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """Sub-pixel sample points ``(side*side, ns*ns)`` x and y of a tile grid, and ns (samples per pixel side)."""
        ox, oy = self.tile_origin(t)
        ns = int(min(25, max(1, round(gsd / 2))))
        if tile_token:  # one coarse pixel centred on the tile
            ox, oy = ox + self.tile_m / 2 - gsd / 2, oy - self.tile_m / 2 + gsd / 2
        pc = (np.arange(side) + 0.5) * gsd
        off = ((np.arange(ns) + 0.5) / ns - 0.5) * gsd
        px = ox + pc[None, :, None, None] + off[None, None, None, :]  # (1, W, 1, ns)
        py = oy - pc[:, None, None, None] - off[None, None, :, None]  # (H, 1, ns, 1)
        px, py = np.broadcast_arrays(px, py)  # (H, W, ns, ns)
        return px.reshape(side * side, ns * ns), py.reshape(side * side, ns * ns), ns

    # ------------------------------------------------------------------ time
    def dates(self, mod: str) -> np.ndarray:
        """Day-of-year acquisitions ``(T,)`` of a series modality (irregular, sensor revisit)."""
        if mod not in self._dates:
            revisit, keep = _REVISIT.get(mod, (10, 0.8))
            rng = _rng(self.seed, 2, _mod_id(mod))
            start = int(rng.integers(1, revisit + 1))
            d = np.arange(start, 366, revisit)
            kept = d[rng.random(d.size) < keep]
            self._dates[mod] = (kept if kept.size >= 2 else d[:2]).astype(np.int64)
        return self._dates[mod]

    def vhr_doy(self, mod: str) -> int:
        lo, hi = _VHR_DOY.get(mod, (150, 220))
        return int(_rng(self.seed, 3, _mod_id(mod)).integers(lo, hi + 1))

    def clouds(self, mod: str) -> list[np.ndarray]:
        """Per date, cloud blobs ``(n, 4)``: x, y, radius (m), opacity."""
        if mod not in self._clouds:
            rng = _rng(self.seed, 4, _mod_id(mod))
            out = []
            for _ in self.dates(mod):
                if rng.random() < 0.45:
                    out.append(np.zeros((0, 4)))
                    continue
                n = 1 + rng.poisson(2.5)
                out.append(
                    np.stack(
                        [
                            rng.uniform(self.x0 - 200, self.x0 + self.width_m + 200, n),
                            rng.uniform(self.y0 - self.height_m - 200, self.y0 + 200, n),
                            rng.uniform(40, 250, n),
                            rng.uniform(0.3, 1.0, n),
                        ],
                        1,
                    )
                )
            self._clouds[mod] = out
        return self._clouds[mod]

    def cloud_alpha(self, mod: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cloud opacity ``(T, *x.shape)`` in [0, 1]: >= 0.2 x opacity inside a blob, 0 outside."""
        blobs = self.clouds(mod)
        xw = x + 25 * self._field(x * 2.3, y * 2.3, 0)
        yw = y + 25 * self._field(x * 2.3, y * 2.3, 1)
        a = np.zeros((len(blobs), *x.shape))
        for ti, b in enumerate(blobs):
            for bx, by, br, bo in b:
                d = np.sqrt((xw - bx) ** 2 + (yw - by) ** 2)
                a[ti] = np.maximum(a[ti], np.where(d < br, bo * np.clip(0.2 + 1.6 * (1 - d / br), 0, 1), 0.0))
        return a

    # ------------------------------------------------------------------ spectra of units
    def unit_weights(self, units: np.ndarray, doy: np.ndarray) -> np.ndarray:
        """Endmember weights ``(U, T, E)`` of units (parcel x disturbance) on days ``doy``."""
        ne = len(self.events) + 1
        out = np.empty((units.size, doy.size, len(_ENDMEMBERS)))
        for u, unit in enumerate(units):
            p, e = divmod(int(unit), ne)
            t = doy.astype(np.float64) - self.pheno_shift[p]
            w = _class_weights(int(self.parcel_class[p]), t)
            if e:
                E = self.events[e - 1]
                after = doy > E.doy
                w[after] = _disturbed_weights(E.kind, doy[after].astype(np.float64), E.doy)
            out[u] = w
        return out

    # ------------------------------------------------------------------ labels
    def fractions(self) -> np.ndarray:
        """Class fractions ``(n_tiles, K)`` of every tile (2 m sub-samples)."""
        if self._fractions is None:
            side = int(round(self.tile_m / 2))
            fr = np.zeros((self.rows * self.cols, len(CLASSES)))
            for t in range(self.rows * self.cols):
                x, y, _ = self.subsamples(t, 2.0, side, False)
                _, _, cls = self.query(x, y)
                fr[t] = np.bincount(cls.ravel(), minlength=len(CLASSES)) / cls.size
            self._fractions = fr
        return self._fractions

    def tile_events(self, t: int) -> tuple[float, tuple[int, ...]]:
        """Changed fraction of tile ``t`` (2 m sub-samples) and the indices of the events that change it."""
        if t not in self._tile_events:
            side = int(round(self.tile_m / 2))
            x, y, _ = self.subsamples(t, 2.0, side, False)
            ev = self.query(x, y)[1] % (len(self.events) + 1)
            self._tile_events[t] = (float((ev > 0).mean()), tuple(int(e) - 1 for e in np.unique(ev[ev > 0])))
        return self._tile_events[t]


@functools.lru_cache(maxsize=8)
def _world(seed: int, rows: int, cols: int, tile_m: float, parcel_m: float) -> _World:
    return _World(seed, rows, cols, tile_m, parcel_m)


# ------------------------------------------------------------------------------------------------ generators
def _band_wavelengths(mod: Modality) -> np.ndarray:
    key = "vhr" if mod.projector == "vhr" else mod.name
    table = _BAND_WL_NM.get(key, {})
    wl = []
    for b in mod.bands:
        if b == "elevation":
            wl.append(-1.0)
        elif b in table:
            wl.append(float(table[b]))
        else:
            raise ConfigError(
                f"GeoPlex-mini has no spectral model for band {b!r} of {mod.name}; known bands: {sorted(table)}. "
                "Add its central wavelength to _BAND_WL_NM in anysat_core/data/geoplex_mini.py"
            )
    return np.array(wl)


def _gen_optical(w: _World, t: int, mod: Modality, clouds: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance x 10000 (thermal: K) ``(T, C, H, W)`` and validity mask ``(T, 1, H, W)``."""
    side = 1 if mod.tile_token else int(round(w.tile_m / mod.gsd_m))
    doy = w.dates(mod.name)
    x, y, _ = w.subsamples(t, mod.gsd_m, side, mod.tile_token)  # (P, S)
    _, unit, _ = w.query(x, y)
    units, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    frac = np.zeros((side * side, units.size))  # (P, U)
    np.add.at(frac, (np.repeat(np.arange(side * side), unit.shape[1]), inv.ravel()), 1.0 / unit.shape[1])
    W = w.unit_weights(units, doy)  # (U, T, E)
    wl = _band_wavelengths(mod)
    thermal = wl > 5000
    refl = W @ _interp_spectrum(_SPECTRA, np.where(thermal, 865, wl))  # (U, T, C)
    ne = len(w.events) + 1
    refl *= w.gain[units // ne][:, None, None]
    season = 284 + 11 * np.sin(2 * np.pi * (doy - 110) / 365)  # (T,)
    temp = W @ _TEMP_OFFSET_K + season[None]  # (U, T)
    refl[..., thermal] = temp[..., None]
    surf = np.einsum("pu,utc->tcp", frac, refl)  # (T, C, P)
    rng = _rng(w.seed, 5, t, _mod_id(mod.name))
    T, C, P = surf.shape
    date_gain = rng.normal(1, 0.02, (T, 1, 1))
    noise = rng.normal(0, 1, (T, C, P))
    surf = np.where(thermal[None, :, None], surf + 0.3 * noise, surf * date_gain + 0.004 * noise)
    cloud_val = np.where(thermal, _CLOUD_K, _interp_spectrum(_CLOUD, np.where(thermal, 865, wl)))  # (C,)
    alpha = w.cloud_alpha(mod.name, x, y).mean(-1) if clouds else np.zeros((T, P))  # (T, P)
    out = (1 - alpha[:, None]) * surf + alpha[:, None] * cloud_val[None, :, None]
    out = np.where(thermal[None, :, None], np.round(out, 2), np.round(np.clip(out, 0, 1.6) * 10000))  # integer DN
    return (
        out.reshape(T, C, side, side).astype(np.float32),
        (alpha == 0).reshape(T, 1, side, side),
    )


def _gen_sar(w: _World, t: int, mod: Modality) -> np.ndarray:
    """Backscatter series ``(T, C, H, W)``: linear (s1-asc, alos) or dB (s1); the third band is the ratio."""
    side = int(round(w.tile_m / mod.gsd_m))
    doy = w.dates(mod.name)
    x, y, _ = w.subsamples(t, mod.gsd_m, side, False)
    _, unit, _ = w.query(x, y)
    units, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    frac = np.zeros((side * side, units.size))
    np.add.at(frac, (np.repeat(np.arange(side * side), unit.shape[1]), inv.ravel()), 1.0 / unit.shape[1])
    W = w.unit_weights(units, doy)  # (U, T, E)
    lband = mod.bands[0].startswith("H")
    db = np.broadcast_to((_SAR_L_DB if lband else _SAR_C_DB)[None], (doy.size, len(_ENDMEMBERS), 2)).copy()
    rng_d = _rng(w.seed, 6, _mod_id(mod.name))  # world-level per-date effects
    moist = 1.5 * np.cos(2 * np.pi * (doy - 20) / 365)
    db[:, [GREEN, DRY, SOIL], :] += moist[:, None, None]
    db[:, H2O, :] += rng_d.uniform(-2, 4, doy.size)[:, None]  # wind roughening
    lin = 10 ** (db / 10)  # (T, E, 2)
    sig = np.einsum("ute,tep->utp", W, lin)  # (U, T, 2)
    ne = len(w.events) + 1
    sig *= 10 ** (w.sar_offset_db[units // ne] / 10)[:, None, None]
    mean = np.einsum("pu,utk->tkp", frac, sig)  # (T, 2, P)
    rng = _rng(w.seed, 7, t, _mod_id(mod.name))
    L = _ENL.get(mod.name, 4.4)
    vals = mean * rng.gamma(L, 1 / L, mean.shape)
    T = doy.size
    chans: list[np.ndarray] = []
    for b in mod.bands:
        if "/" in b:
            if mod.name == "s1":
                chans.append(10 * np.log10(vals[:, 0]) - 10 * np.log10(vals[:, 1]))
            else:
                chans.append(np.clip(vals[:, 0] / (vals[:, 1] + 1e-10), -1e4, 1e4))
        else:
            v = vals[:, 0 if b in ("VV", "HH") else 1]
            chans.append(10 * np.log10(v) if mod.name == "s1" else v)
    return np.stack(chans, 1).reshape(T, len(mod.bands), side, side).astype(np.float32)


def _gen_vhr(w: _World, t: int, mod: Modality) -> np.ndarray:
    """8-bit digital numbers (elevation: metres) ``(C, H, W)`` at the modality's acquisition date."""
    side = int(round(w.tile_m / mod.gsd_m))
    g = mod.gsd_m
    doy = np.array([w.vhr_doy(mod.name)])
    x, y, _ = w.subsamples(t, g, side, False)
    x, y = x[:, 0].reshape(side, side), y[:, 0].reshape(side, side)
    pid, unit, cls = w.query(x, y)
    units, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    W = w.unit_weights(units, doy)[:, 0]  # (U, E)
    wl = _band_wavelengths(mod)
    spec_wl = np.where(wl < 0, 650, wl)
    ne = len(w.events) + 1
    undisturbed = (unit % ne) == 0
    M = _interp_spectrum(_SPECTRA, spec_wl)  # (E, C)
    base = (W @ M) * w.gain[units // ne][:, None]  # (U, C)
    refl = base[inv]  # (H, W, C)
    green = W[inv][..., GREEN]
    bright = np.ones((side, side))
    height = np.zeros((side, side))
    # crop rows (anti-aliased: faded out when the period is under ~2.5 pixels)
    crop = undisturbed & np.isin(cls, (WHEAT, MAIZE, BARE))
    if crop.any():
        th, per = w.row_angle[pid], np.where(cls == BARE, 3.0, w.row_period[pid])
        amp = np.where(cls == BARE, 0.06, 0.05 + 0.2 * green) * np.clip((per / g - 2) / 2, 0, 1)
        bright += np.where(crop, amp * np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / per), 0)
        height += np.where(crop & (cls == MAIZE), 2.5 * green, 0) + np.where(crop & (cls == WHEAT), 0.9 * green, 0)
    # tree crowns on a jittered cell grid, shadows in the gaps
    forest = undisturbed & np.isin(cls, (BROADLEAF, CONIFER))
    if forest.any():
        crown = np.zeros((side, side))
        for cell, salt, mask in ((4.5, 11, cls == BROADLEAF), (3.0, 12, cls == CONIFER)):
            if not (forest & mask).any():
                continue
            ci, cj = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
            best = np.zeros((side, side))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ii, jj = ci + di, cj + dj
                    cx = (ii + _hash_uniform(ii, jj, salt, 0)) * cell
                    cy = (jj + _hash_uniform(ii, jj, salt, 1)) * cell
                    r = cell * (0.45 + 0.35 * _hash_uniform(ii, jj, salt, 2))
                    best = np.maximum(best, np.clip(1 - ((x - cx) ** 2 + (y - cy) ** 2) / r**2, 0, 1))
            crown = np.where(mask, best, crown)
        bright = np.where(forest, 0.45 + 0.75 * np.sqrt(crown), bright)
        height = np.where(forest, 18 * np.sqrt(crown), height)
    # buildings in a jittered 14 m cell grid; yards (gardens, roads) around them
    urban = cls == URBAN
    if urban.any():
        cell = 14.0
        ci, cj = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
        cx = (ci + 0.3 + 0.4 * _hash_uniform(ci, cj, 21, 0)) * cell
        cy = (cj + 0.3 + 0.4 * _hash_uniform(ci, cj, 21, 1)) * cell
        hx = 2.5 + 3.5 * _hash_uniform(ci, cj, 21, 2)
        hy = 2.5 + 3.5 * _hash_uniform(ci, cj, 21, 3)
        roof = urban & (np.abs(x - cx) < hx) & (np.abs(y - cy) < hy)
        tint = _hash_uniform(ci, cj, 21, 4)
        roof_col = np.where(tint[..., None] < 0.5, np.array([1.6 if b == "R" else 0.8 for b in mod.bands]), 1.0)
        yard_w = np.zeros(len(_ENDMEMBERS))
        yard_w[[GREEN, SOIL, IMPERV]] = (0.55, 0.15, 0.3)
        yard = yard_w @ M
        refl = np.where(roof[..., None], refl * roof_col * (0.8 + 0.5 * tint[..., None]), refl)
        refl = np.where((urban & ~roof)[..., None], yard[None, None], refl)
        height = np.where(roof, 4 + 6 * tint, height)
    water = cls == WATER
    if water.any():
        bright = np.where(water, 1 + 0.03 * np.sin(2 * np.pi * (x + 0.4 * y) / 2.7), bright)
    rng = _rng(w.seed, 8, t, _mod_id(mod.name))
    refl = refl * bright[..., None] * (1 + 0.03 * rng.normal(0, 1, refl.shape))
    dn = np.round(255 * np.clip(refl / 0.6, 0, 1) ** 0.6)  # (H, W, C)
    out = dn.transpose(2, 0, 1)
    if (wl < 0).any():  # surface height above sea level (m)
        terrain = 145 + 4 * w._field(x * 0.3, y * 0.3, 0)
        out[wl < 0] = (terrain + height)[None]
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------------ the dataset
class GeoPlexMini(torch.utils.data.Dataset):
    """GeoPlex-mini: a procedural multi-modal world of ``rows x cols`` square tiles (see the module docstring).

    Facts (defaults): 16 x 16 = 256 tiles of 60 m (a 960 m square in EPSG:32631, Beauce, France, 2021); 8 classes
    (:data:`CLASSES`); spatial-block splits (blocks of 4 x 4 tiles, about 60/20/20 % train/val/test); all 11
    registry modalities available at their GSD (aerial 300 x 300 px, S2 6 x 6, L7/ALOS 2 x 2, MODIS 1 x 1 per tile).

    Args:
        seed: world seed (same seed, byte-identical data).
        modalities: names from the registry (any subset; ``"all"`` for every modality).
        tiles: world size in tiles, ``n`` (square) or ``(rows, cols)``.
        tile_m: tile side in metres; every selected modality must have an integer number of pixels
            (multiples of 30 m fit all modalities).
        task: ``"multilabel"``, ``"segmentation"`` or ``"change"`` (what ``label`` holds).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        normalize: True applies :meth:`stats` (computed from train tiles of the world); False gives raw values;
            a :class:`~anysat_core.data.normalize.Normalize` is used as given.
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

    name = "geoplex-mini"
    classes = CLASSES
    ignore_index = None
    patch_size_m = 20
    splits = ("train", "val", "test")
    modalities_available = tuple(MODALITIES)
    default_modalities = ("aerial", "s2", "s1-asc")

    def __init__(
        self,
        seed: int = 0,
        modalities: Sequence[str] | str = ("aerial", "s2", "s1-asc"),
        tiles: int | tuple[int, int] = 16,
        tile_m: float = 60.0,
        task: str = "multilabel",
        split: str = "train",
        normalize: bool | Normalize = True,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        label_gsd_m: float | None = None,
        min_cover: float = 0.1,
        parcel_m: float = 120.0,
        block_tiles: int = 4,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        mods = tuple(MODALITIES) if modalities == "all" else (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if not mods:
            raise ConfigError("modalities is empty; pass at least one registry name, e.g. ('s2',), or 'all'")
        self.mods = [MODALITIES[m] for m in mods]  # UnknownModalityError on a bad name
        self.modalities = mods
        rows, cols = (tiles, tiles) if isinstance(tiles, int) else tuple(tiles)
        if not (isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0):
            raise ConfigError(f"tiles={tiles!r}; expected a positive int or a (rows, cols) pair of positive ints")
        if task not in _TASKS:
            raise ConfigError(f"task={task!r}; expected one of {', '.join(_TASKS)}")
        if split not in _SPLITS:
            raise ConfigError(f"split={split!r}; expected one of {', '.join(_SPLITS)}")
        if not tile_m > 0:
            raise ConfigError(f"tile_m={tile_m!r}; expected a positive number of metres (e.g. 60)")
        for m in self.mods:
            if not m.tile_token:
                self._pixels(tile_m, m.gsd_m, m.name)
            if m.projector != "ltae" or m.name in ("modis", "s2", "l7", "l8"):
                _band_wavelengths(m)  # ConfigError for a band without a spectral model
        spatial = [m.gsd_m for m in self.mods if not m.tile_token]
        self.label_gsd_m = float(label_gsd_m if label_gsd_m is not None else min(spatial, default=10.0))
        self._pixels(tile_m, self.label_gsd_m, "the label grid (label_gsd_m)")
        self.seed, self.rows, self.cols, self.tile_m = int(seed), rows, cols, float(tile_m)
        self.parcel_m, self.block_tiles, self.min_cover = float(parcel_m), int(block_tiles), float(min_cover)
        self.task, self.split, self.transform = task, split, transform
        self.world = _world(self.seed, rows, cols, self.tile_m, self.parcel_m)
        self.key = hashlib.sha1(
            json.dumps([GENERATOR_VERSION, self.seed, rows, cols, self.tile_m, self.parcel_m]).encode()
        ).hexdigest()[:12]
        self.cache_dir = Path(cache_dir).expanduser() / f"geoplex-mini-{self.key}" if cache_dir is not None else None
        self.tile_split = self._assign_splits()
        self.indices = [i for i, s in enumerate(self.tile_split) if split in ("all", s)]
        self._stats: dict[str, NormStats] | None = None
        if isinstance(normalize, Normalize):
            self.normalizer: Normalize | None = normalize
        elif normalize is True:
            self.normalizer = Normalize(self.stats())
        elif normalize is False:
            self.normalizer = None
        else:
            raise ConfigError(f"normalize={normalize!r}; expected True, False or a Normalize")

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _pixels(extent_m: float, gsd_m: float, what: str) -> int:
        n = extent_m / gsd_m
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise ExtentMismatchError(
                f"tile_m={extent_m} m is not a whole number of {gsd_m} m pixels for {what} ({n:.3f}); use a tile side "
                "that is a multiple of every selected GSD (a multiple of 30 m fits all modalities, e.g. 60)"
            )
        return int(round(n))

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
        order = _rng(self.seed, 9).permutation(nb)
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
        x0, y0 = ORIGIN_M
        xs = x0 + (np.arange(W) + 0.5) * g
        unit, cls = np.empty((H, W), np.int64), np.empty((H, W), np.int64)
        step = max(1, 250_000 // W)
        for r in range(0, H, step):
            x, y = np.meshgrid(xs, y0 - (np.arange(r, min(H, r + step)) + 0.5) * g)
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
            arrays = {"x": store} if mask is None else {"x": store, "mask": mask}
            with atomic_write(path, "write the GeoPlex-mini cache file", suffix=".npz", mkdir=False) as tmp, open(
                tmp, "wb"
            ) as f:
                np.savez_compressed(f, **arrays)
        return x, mask

    def _generate(self, tile: int, mod: Modality, clouds: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        if mod.projector == "vhr":
            return _gen_vhr(self.world, tile, mod), None
        if mod.name in _ENL or mod.bands[0] in ("VV", "HH"):
            return _gen_sar(self.world, tile, mod), None
        return _gen_optical(self.world, tile, mod, clouds=clouds)

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
            out[mod] = NormStats(st.mean, st.std, source=f"geoplex-mini seed {self.seed}: {st.source}", units=_units(mod))
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"geoplex-mini {self.split} has {len(self)} tiles; index {index} is out of range")
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
        if self.normalizer is not None:
            sample = self.normalizer(sample)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return (
            f"GeoPlexMini(seed={self.seed}, tiles=({self.rows}, {self.cols}), tile_m={self.tile_m}, task={self.task!r}, "
            f"split={self.split!r}, n={len(self)}, modalities={self.modalities})"
        )


def _units(mod: str) -> str:
    m = MODALITIES[mod]
    if m.projector == "vhr":
        return "8-bit digital numbers" + (" (elevation: m)" if "elevation" in m.bands else "")
    if mod == "s1":
        return "backscatter dB (ratio band: VV dB - VH dB)"
    if mod in _ENL:
        return "linear backscatter (ratio band: co/cross)"
    return "reflectance x 10000" + (" (thermal bands: K)" if mod == "l8" else "")
