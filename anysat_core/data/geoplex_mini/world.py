"""The GeoPlex-mini world: parcels, land-cover classes, phenology, disturbances, acquisition dates and clouds.

The world is a grid of ``rows x cols`` square tiles of ``tile_m`` metres in UTM zone 31N (:data:`CRS`) over an
agricultural plain of the Beauce (near Chartres, France; year :data:`YEAR`).  Land is cut into irregular parcels
(Voronoi cells of a jittered grid of seeds, with warped boundaries), each of one of the eight :data:`CLASSES`.
Each parcel's cover is a mixture of :data:`ENDMEMBERS` whose weights follow the class phenology through the year;
clear-cuts and fires in a few discs change the cover after a day of year between 100 and 260.  Acquisition dates
(each sensor's revisit) and cloud blobs are drawn per modality, the same for every tile.

Everything derives from the seed through private seeded generators (:func:`seeded_rng`, never the global state).
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from anysat_core.modalities import NormStats

__all__ = [
    "CLASSES",
    "CRS",
    "ENDMEMBERS",
    "ORIGIN_M",
    "YEAR",
    "Event",
    "World",
    "get_world",
    "modality_key",
    "seeded_rng",
]

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

#: Endmembers mixed into every pixel.
ENDMEMBERS = ("green", "dry", "soil", "water", "urban", "broadleaf", "woody", "conifer", "burnt")
GREEN, DRY, SOIL, H2O, IMPERV, BLEAF, WOODY, CONIF, BURNT = range(9)
#: Per-sensor acquisition plan: (revisit days, probability that an acquisition is kept).
_REVISIT = {
    "s2": (5, 0.55),
    "s1": (6, 0.9),
    "s1-asc": (6, 0.9),
    "l8": (8, 0.8),
    "l7": (16, 0.85),
    "modis": (8, 1.0),
    "alos": (42, 1.0),
}
#: Day-of-year window of the single VHR acquisition.
_VHR_DOY = {"aerial": (160, 200), "aerial-flair": (120, 250), "spot": (100, 280), "naip": (150, 240)}


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def seeded_rng(*key: int) -> np.random.Generator:
    """A private generator seeded from integers (never the global numpy/torch state)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def modality_key(name: str) -> int:
    """A stable integer for a modality name (part of the seeds of its dates, clouds and noise)."""
    return zlib.crc32(name.encode())


def _class_weights(cls: int, t: np.ndarray) -> np.ndarray:
    """Endmember weights ``(T, E)`` of a class on days of year ``t`` (phenology, sums to 1)."""
    w = np.zeros((t.size, len(ENDMEMBERS)))
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
        w[:, IMPERV] = 0.45  # roofs and roads under trees and gardens: optically close to bare soil
        w[:, GREEN] = 0.12 + 0.08 * np.exp(-(((t - 170) / 60) ** 2))
    elif cls == BARE:
        w[:, GREEN] = 0.05 * np.exp(-(((t - 190) / 30) ** 2))
        w[:, DRY] = 0.1
    w[:, SOIL] += np.clip(1 - w.sum(1), 0, None)
    return w


def _disturbed_weights(kind: int, t: np.ndarray, t0: float) -> np.ndarray:
    """Endmember weights ``(T, E)`` after a disturbance at day ``t0`` (kind 0: clear-cut, 1: fire)."""
    w = np.zeros((t.size, len(ENDMEMBERS)))
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


@dataclass(frozen=True)
class Event:
    x: float
    y: float
    r: float
    doy: int
    kind: int


class World:
    """World-level state: parcels, classes, disturbances, acquisition dates and cloud fields (all from the seed)."""

    def __init__(self, seed: int, rows: int, cols: int, tile_m: float, parcel_m: float) -> None:
        self.seed, self.rows, self.cols, self.tile_m, self.parcel_m = seed, rows, cols, tile_m, parcel_m
        self.x0, self.y0 = ORIGIN_M
        #: normalisation statistics by (modality, tiles used), shared by every dataset over this world
        self.stats_cache: dict[tuple[str, tuple[int, ...]], NormStats] = {}
        self.width_m, self.height_m = cols * tile_m, rows * tile_m
        rng = seeded_rng(seed, 1)
        margin = 300.0  # > MODIS half footprint + boundary warp
        gx = np.arange(self.x0 - margin, self.x0 + self.width_m + margin, parcel_m)
        gy = np.arange(self.y0 - self.height_m - margin, self.y0 + margin, parcel_m)
        sx, sy = np.meshgrid(gx + parcel_m / 2, gy + parcel_m / 2)
        jit = rng.uniform(-0.42, 0.42, size=(2, *sx.shape)) * parcel_m
        self.seeds = np.stack([(sx + jit[0]).ravel(), (sy + jit[1]).ravel()], 1)  # (P, 2) metres
        n = len(self.seeds)
        inside = (
            (self.seeds[:, 0] >= self.x0)
            & (self.seeds[:, 0] < self.x0 + self.width_m)
            & (self.seeds[:, 1] <= self.y0)
            & (self.seeds[:, 1] > self.y0 - self.height_m)
        )
        cls = rng.choice(len(CLASSES), size=n, p=_CLASS_P)
        idx_in = np.flatnonzero(inside)
        k = len(CLASSES)
        forced = np.repeat(np.arange(k), 2)[: len(idx_in)]  # every class at least twice inside the world
        chosen = rng.permutation(idx_in)[: len(forced)]
        cls[chosen] = forced
        self.parcel_class = cls.astype(np.int64)
        self.tree = cKDTree(self.seeds)
        self.pheno_shift = rng.normal(0, 15, n)  # days: sowing and leaf-out dates vary by weeks
        self.gain = rng.normal(1, 0.1, n)  # soil colour, management
        self.sar_offset_db = rng.normal(0, 1.5, n)  # roughness, moisture, incidence
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
            Event(
                x=float(rng.uniform(self.x0 + 30, self.x0 + self.width_m - 30)),
                y=float(rng.uniform(self.y0 - self.height_m + 30, self.y0 - 30)),
                r=float(rng.uniform(25, 60)),
                doy=int(rng.integers(100, 261)),
                kind=int(rng.integers(0, 2)),
            )
            for _ in range(n_ev)
        )
        # peak green cover of each parcel (the rest is soil), from its own stream: parcels, boundaries and events
        # (hence every label) stay those of generator version 2
        self.vigour = seeded_rng(seed, 10).uniform(0.55, 1.0, n)
        self._dates: dict[str, np.ndarray] = {}
        self._clouds: dict[str, list[np.ndarray]] = {}
        self._fractions: np.ndarray | None = None
        self._tile_events: dict[int, tuple[float, tuple[int, ...]]] = {}

    # ------------------------------------------------------------------ geometry
    def tile_origin(self, t: int) -> tuple[float, float]:
        """Upper-left corner (x, y) of tile ``t`` (row-major index)."""
        r, c = divmod(t, self.cols)
        return self.x0 + c * self.tile_m, self.y0 - r * self.tile_m

    def warp_field(self, x: np.ndarray, y: np.ndarray, i: int) -> np.ndarray:
        d = self.warp_dir[i]
        ph = (np.cos(d)[:, None] * x.ravel()[None] + np.sin(d)[:, None] * y.ravel()[None]) * self.warp_k[i][:, None]
        return (np.sin(ph + self.warp_phase[i][:, None]).sum(0) / math.sqrt(3)).reshape(x.shape)

    def query(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parcel, unit (parcel x disturbance) and class of points ``x, y`` (metres, any equal shape)."""
        xw = x + self.warp_amp * self.warp_field(x, y, 0)
        yw = y + self.warp_amp * self.warp_field(x, y, 1)
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
            rng = seeded_rng(self.seed, 2, modality_key(mod))
            start = int(rng.integers(1, revisit + 1))
            d = np.arange(start, 366, revisit)
            kept = d[rng.random(d.size) < keep]
            self._dates[mod] = (kept if kept.size >= 2 else d[:2]).astype(np.int64)
        return self._dates[mod]

    def vhr_doy(self, mod: str) -> int:
        lo, hi = _VHR_DOY.get(mod, (150, 220))
        return int(seeded_rng(self.seed, 3, modality_key(mod)).integers(lo, hi + 1))

    def clouds(self, mod: str) -> list[np.ndarray]:
        """Per date, cloud blobs ``(n, 4)``: x, y, radius (m), opacity."""
        if mod not in self._clouds:
            rng = seeded_rng(self.seed, 4, modality_key(mod))
            out = []
            for _ in self.dates(mod):
                if rng.random() < 0.25:
                    out.append(np.zeros((0, 4)))
                    continue
                n = 1 + rng.poisson(3.5)
                out.append(
                    np.stack(
                        [
                            rng.uniform(self.x0 - 200, self.x0 + self.width_m + 200, n),
                            rng.uniform(self.y0 - self.height_m - 200, self.y0 + 200, n),
                            rng.uniform(50, 300, n),
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
        xw = x + 25 * self.warp_field(x * 2.3, y * 2.3, 0)
        yw = y + 25 * self.warp_field(x * 2.3, y * 2.3, 1)
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
        out = np.empty((units.size, doy.size, len(ENDMEMBERS)))
        for u, unit in enumerate(units):
            p, e = divmod(int(unit), ne)
            t = doy.astype(np.float64) - self.pheno_shift[p]
            w = _class_weights(int(self.parcel_class[p]), t)
            lost = w[:, [GREEN, BLEAF]] * (1 - self.vigour[p])  # a less vigorous parcel shows more soil
            w[:, [GREEN, BLEAF]] -= lost
            w[:, SOIL] += lost.sum(1)
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
            side = round(self.tile_m / 2)
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
            side = round(self.tile_m / 2)
            x, y, _ = self.subsamples(t, 2.0, side, False)
            ev = self.query(x, y)[1] % (len(self.events) + 1)
            self._tile_events[t] = (float((ev > 0).mean()), tuple(int(e) - 1 for e in np.unique(ev[ev > 0])))
        return self._tile_events[t]


@functools.lru_cache(maxsize=8)
def get_world(seed: int, rows: int, cols: int, tile_m: float, parcel_m: float) -> World:
    return World(seed, rows, cols, tile_m, parcel_m)


def world_bytes(rows: int, cols: int, tile_m: float, parcel_m: float) -> float:
    """Estimated bytes of a :class:`World` (parcel seeds, classes, per-parcel draws, the k-d tree) plus the per-tile
    bookkeeping of a dataset over it (splits, indices, class fractions), before it is built."""
    margin = 300.0
    parcels = math.ceil((cols * tile_m + 2 * margin) / parcel_m + 1) * math.ceil(
        (rows * tile_m + 2 * margin) / parcel_m + 1
    )
    return 200.0 * parcels + 100.0 * rows * cols


def tile_bytes(
    tile_m: float, parcel_m: float, gsd_m: float, n_dates: int, n_bands: int, tile_token: bool, kind: str
) -> float:
    """Estimated peak bytes of generating one tile (``n_dates`` x ``n_bands`` rasters of ``gsd_m`` pixels) of a
    modality of ``kind`` (``"optical"``, ``"sar"``, ``"vhr"``; ``"labels"``: a class map of ``n_bands`` classes).

    Terms: the sub-pixel sample points and their parcel look-up (about 80 bytes each, float64); for optical, the
    cloud opacity per date and point; for optical and SAR, the parcel-mixture matrix (pixels x parcels under the
    tile); the float64 intermediates of the values (about 3 live copies).
    """
    side = 1 if tile_token else max(1.0, tile_m / gsd_m)
    pixels = side * side
    ns = int(min(25, max(1, round(gsd_m / 2))))
    points = pixels * ns * ns
    units = 2 * (tile_m / parcel_m + 3) ** 2  # parcels (x disturbances) under a tile
    clouds = 16.0 * n_dates * points if kind == "optical" else 0.0
    mixture = 8.0 * pixels * units if kind in ("optical", "sar") else 0.0
    return 80.0 * points + clouds + mixture + 24.0 * n_dates * n_bands * pixels


def date_count(mod: str) -> int:
    """Upper bound of the acquisitions of a series modality in the year (every revisit kept)."""
    return math.ceil(365 / _REVISIT.get(mod, (10, 0.8))[0])
