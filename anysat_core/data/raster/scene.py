"""The scene: aligned sources read tile by tile (warped windows, nodata masks), and :func:`open_rasters`."""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio.errors
import rasterio.warp
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from anysat_core.data.normalize import Normalize
from anysat_core.data.raster.grid import SceneGrid, plan_grid, reference_crs
from anysat_core.data.raster.sources import Frame, RasterSource, read_frames
from anysat_core.data.raster.stats import resolve_normalize
from anysat_core.data.sample import GeoInfo, Sample
from anysat_core.dates import day_of_year
from anysat_core.errors import ConfigError, CorruptFileError, EmptyTileError, InputShapeError, TileIndexError
from anysat_core.geo import Bounds, cell_centres, grid_bounds, is_length
from anysat_core.memory import check_memory
from anysat_core.modalities import MODALITIES

__all__ = ["RasterScene", "open_rasters"]


#: largest offset, in pixels, between a raster's grid and a target grid that still counts as "on the grid"
ALIGN_TOL_PX = 1e-4


def aligned_offset(f: Frame, dst_crs: CRS, dst: Affine) -> tuple[int, int] | None:
    """``(row, col)`` of the grid ``dst``'s top-left pixel in frame ``f`` when ``dst`` is on ``f``'s own pixel grid
    (same CRS, same pixel size, whole-pixel offset), else None (the frame must be resampled)."""
    a, b, c, d, e, fy = tuple(f.transform)[:6]
    if f.crs != dst_crs or b != 0 or d != 0 or dst.b != 0 or dst.d != 0:
        return None
    if abs(a - dst.a) > ALIGN_TOL_PX * abs(dst.a) or abs(e - dst.e) > ALIGN_TOL_PX * abs(dst.e):
        return None
    dc, dr = (dst.c - c) / a, (dst.f - fy) / e
    if abs(dc - round(dc)) > ALIGN_TOL_PX or abs(dr - round(dr)) > ALIGN_TOL_PX:
        return None
    return round(dr), round(dc)


def _masked_values(f: Frame, raw: np.ndarray) -> np.ndarray:
    """``raw`` as float32 with NaN where it is not finite or equals the frame's nodata."""
    vals = raw.astype(np.float32)
    invalid = ~np.isfinite(vals)
    if f.nodata is not None:
        if np.issubdtype(raw.dtype, np.floating):
            invalid |= raw == raw.dtype.type(f.nodata)
        else:  # integers (and bools): compare exactly in float64, so an out-of-range nodata never wraps around
            invalid |= raw.astype(np.float64) == f.nodata
    vals[invalid] = np.nan
    return vals


def _read_window(f: Frame, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The frame's bands over rows ``[r0, r1)`` and columns ``[c0, c1)`` (inside the raster), as read."""
    try:
        return np.asarray(f.da.isel(band=f.band_idx, y=slice(r0, r1), x=slice(c0, c1)).values)
    except (rasterio.errors.RasterioError, OSError, RuntimeError) as e:  # RuntimeError: netCDF4/HDF backends
        raise CorruptFileError(
            f"cannot read a window of {f.name!r} ({type(e).__name__}: {e}); the file may be truncated or damaged: "
            "re-download or re-export it"
        ) from e


def _read_frame(f: Frame, dst_crs: CRS, dst: Affine, shape: tuple[int, int], resampling: Resampling) -> np.ndarray:
    """The part of frame ``f`` under the grid ``(dst, shape)``: ``(C, h, w)`` float32, NaN where no data.

    A frame already on that grid (see :func:`aligned_offset`) is read as is; any other is warped."""
    h, w = shape
    H, W = f.shape
    off = aligned_offset(f, dst_crs, dst)
    if off is not None:
        out = np.full((len(f.band_idx), h, w), np.nan, dtype=np.float32)
        r, c = off
        r0, r1, c0, c1 = max(0, r), min(H, r + h), max(0, c), min(W, c + w)
        if r0 < r1 and c0 < c1:
            out[:, r0 - r : r1 - r, c0 - c : c1 - c] = _masked_values(f, _read_window(f, r0, r1, c0, c1))
        return out
    sb = grid_bounds(dst, shape)
    if f.crs != dst_crs:
        sb = transform_bounds(dst_crs, f.crs, *sb, densify_pts=21)
    inv = ~f.transform
    cols, rows = zip(*(inv @ (x, y) for x in (sb[0], sb[2]) for y in (sb[1], sb[3])))
    margin = 2  # source pixels around the window, so bilinear/average see their neighbours
    c0, c1 = max(0, math.floor(min(cols)) - margin), min(W, math.ceil(max(cols)) + margin)
    r0, r1 = max(0, math.floor(min(rows)) - margin), min(H, math.ceil(max(rows)) + margin)
    out = np.full((len(f.band_idx), h, w), np.nan, dtype=np.float32)
    if c0 >= c1 or r0 >= r1:
        return out
    vals = _masked_values(f, _read_window(f, r0, r1, c0, c1))
    # rasterio's warp directly (what rioxarray's reproject calls, without building a DataArray: ~13x less time per
    # small window); NaN is nodata on both sides
    rasterio.warp.reproject(
        source=vals,
        destination=out,
        src_transform=f.transform @ Affine.translation(c0, r0),
        src_crs=f.crs,
        src_nodata=np.nan,
        dst_transform=dst,
        dst_crs=dst_crs,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return out


@dataclass
class _ModState:
    """One modality of a scene: its source, its frames (sorted by date) and the resampling of each frame."""

    source: RasterSource
    frames: list[Frame]
    resampling: list[Resampling]


class RasterScene:
    """Aligned modalities over a common extent, cut into square tiles (see :mod:`anysat_core.data.raster`).

    Tiles hold normalised values (``normalizer``, named statistics; None: raw file values).  A tile counts when
    its valid fraction (the largest, over the gridded modalities, fraction of pixels valid at some date and band)
    is above 0 and at least ``min_valid_fraction``.  ``len(scene)`` and ``scene[i]`` count those tiles, in
    row-major order; finding them reads the scene once (cached; :meth:`summary` reports the counts).
    :meth:`tiles` streams them; :meth:`tile` reads any ``(row, col)``.
    """

    def __init__(
        self,
        mods: dict[str, _ModState],
        grid: SceneGrid,
        crs: CRS,
        normalizer: Normalize | None = None,
        min_valid_fraction: float = 0.0,
    ) -> None:
        self._mods = mods
        self.grid = grid
        self.crs = crs
        self.normalizer = normalizer
        self.min_valid_fraction = float(min_valid_fraction)
        self._fractions: dict[tuple[int, int], float] | None = None

    def with_grid(self, grid: SceneGrid) -> RasterScene:
        """The same aligned, normalised sources cut along another grid (e.g. overlapping inference windows, which
        keep every window with data: ``min_valid_fraction`` is not carried over)."""
        return RasterScene(self._mods, grid, self.crs, self.normalizer)

    def with_normalize(self, normalize: Any) -> RasterScene:
        """The same scene normalised as ``normalize`` says (see :func:`open_rasters`; None: raw file values)."""
        norm = resolve_normalize(
            normalize, {m: st.frames for m, st in self._mods.items()}, self.grid.data_bounds, self.crs
        )
        return RasterScene(self._mods, self.grid, self.crs, norm, self.min_valid_fraction)

    @property
    def normalization(self) -> dict[str, str]:
        """``{modality: the statistics its values are normalised with}`` (``"none (raw file values)"`` if none)."""
        described = self.normalizer.describe() if self.normalizer is not None else {}
        return {m: described.get(m, "none (raw file values)") for m in self._mods}

    @property
    def modalities(self) -> list[str]:
        """Modality names, in the order of the sources."""
        return list(self._mods)

    @property
    def dates(self) -> dict[str, torch.Tensor]:
        """``{modality: (T,) int64 day of year}`` of every time series."""
        return {m: self._doys(st) for m, st in self._mods.items() if MODALITIES[m].time_series}

    @staticmethod
    def _doys(st: _ModState) -> torch.Tensor:
        return torch.tensor([day_of_year(f.date) for f in st.frames], dtype=torch.int64)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        g = self.grid
        norm = "; ".join(f"{m}: {src}" for m, src in self.normalization.items())
        return (
            f"RasterScene({', '.join(self.modalities)}; {g.n_rows} x {g.n_cols} tiles of {g.tile_m:g} m in {g.crs} "
            f"from {tuple(round(v, 3) for v in g.origin)} on {g.reference or 'the reference grid'}, data bounds "
            f"{tuple(round(v, 3) for v in g.data_bounds)}; normalised with: {norm})"
        )

    def summary(self) -> str:
        """Tiles of the grid with data, kept and skipped (reads every tile once; cached)."""
        fr = self._scan()
        n_data = sum(v > 0 for v in fr.values())
        kept = len(self._index())
        g = self.grid
        return (
            f"{self!r}\n{g.n_rows * g.n_cols} tiles in the grid: {n_data} with data, {kept} kept, "
            f"{n_data - kept} below min_valid_fraction={self.min_valid_fraction:g}, "
            f"{g.n_rows * g.n_cols - n_data} empty"
        )

    def _inside_mask(self, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """``(h, w)`` True where the pixel centre lies inside the common data extent."""
        xs, ys = cell_centres(transform, shape)
        left, bottom, right, top = self.grid.data_bounds
        return ((ys > bottom) & (ys < top))[:, None] & ((xs > left) & (xs < right))[None, :]

    def _read(self, row: int, col: int) -> tuple[Sample, float]:
        """The sample of tile ``(row, col)`` and its valid fraction (see the class docstring)."""
        g = self.grid
        whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (row, col))
        if not (whole and 0 <= row < g.n_rows and 0 <= col < g.n_cols):
            raise TileIndexError(
                f"tile ({row!r}, {col!r}) is outside the {g.n_rows} x {g.n_cols} tile grid; expected whole numbers "
                f"0 <= row < {g.n_rows} and 0 <= col < {g.n_cols}"
            )
        sample: Sample = {}
        fraction = 0.0
        grids: dict[str, Any] = {}
        iso_dates: dict[str, list[str]] = {}
        for m, st in self._mods.items():
            mod = MODALITIES[m]
            px = g.tile_px[m]
            t = g.transform(m, row, col)
            arrs = [_read_frame(f, self.crs, t, (px, px), r) for f, r in zip(st.frames, st.resampling)]
            data = np.stack(arrs) if mod.time_series else arrs[0]  # (T, C, h, w) or (C, h, w)
            valid = np.isfinite(data)
            if not mod.tile_token:
                valid &= self._inside_mask(t, (px, px))
                per_pixel = valid.reshape(-1, px, px).any(axis=0)
                fraction = max(fraction, float(per_pixel.mean()))
            if self.normalizer is not None:
                data = self.normalizer.apply_array(m, data)
            # invalid pixels are 0 after normalisation: the statistics' mean
            sample[m] = torch.from_numpy(np.where(valid, data, 0.0).astype(np.float32))
            if mod.time_series:
                sample[f"{m}_dates"] = self._doys(st)
                iso_dates[m] = [f.date.isoformat() if isinstance(f.date, _dt.date) else str(f.date) for f in st.frames]
            sample[f"{m}_mask"] = torch.from_numpy(valid)
            grids[m] = {"transform": tuple(t)[:6], "shape": (px, px), "gsd_m": g.gsd_m[m]}
        ref = min((m for m in self._mods if not MODALITIES[m].tile_token), key=lambda m: g.gsd_m[m])
        sample["meta"] = GeoInfo(
            dataset="raster",
            tile_id=f"r{row:04d}_c{col:04d}",
            crs=g.crs,
            transform=grids[ref]["transform"],
            gsd_m=g.gsd_m[ref],
            shape=grids[ref]["shape"],
            extra={
                "row": row,
                "col": col,
                "bounds": g.tile_bounds(row, col),
                "dates": iso_dates,
                "sources": {m: [f.name for f in st.frames] for m, st in self._mods.items()},
                "grids": grids,
                "normalization": self.normalization,
                "valid_fraction": fraction,
            },
        )
        return sample, fraction

    def _keep(self, fraction: float) -> bool:
        return fraction > 0 and fraction >= self.min_valid_fraction

    def tile(self, row: int, col: int) -> Sample:
        """The sample of tile ``(row, col)``.

        Raises:
            TileIndexError: outside the grid (an IndexError).
            EmptyTileError: the tile has no valid pixel in any gridded modality.
        """
        sample, fraction = self._read(row, col)
        if fraction <= 0:
            raise EmptyTileError(
                f"tile ({row}, {col}) with bounds {self.grid.tile_bounds(row, col)} in {self.grid.crs} has no valid "
                f"pixel in {', '.join(m for m in self._mods if not MODALITIES[m].tile_token)} (all nodata or outside "
                "the data); pick another tile (scene.tiles() skips empty ones) or check nodata="
            )
        if not self._keep(fraction):
            raise EmptyTileError(
                f"tile ({row}, {col}) with bounds {self.grid.tile_bounds(row, col)} in {self.grid.crs} has "
                f"{fraction:.1%} valid pixels, below min_valid_fraction={self.min_valid_fraction:g}; pick another "
                "tile (scene.tiles() skips such tiles) or lower min_valid_fraction"
            )
        return sample

    def tiles(self, skip_empty: bool = True) -> Iterator[Sample]:
        """Samples of all tiles in row-major order; empty tiles (and those below ``min_valid_fraction``) are skipped
        unless ``skip_empty=False``."""
        for r in range(self.grid.n_rows):
            for c in range(self.grid.n_cols):
                sample, fraction = self._read(r, c)
                if self._keep(fraction) or not skip_empty:
                    yield sample

    def _scan(self) -> dict[tuple[int, int], float]:
        """``{(row, col): valid fraction}`` of every tile (read once, cached)."""
        if self._fractions is None:
            self._fractions = {
                (r, c): self._read(r, c)[1] for r in range(self.grid.n_rows) for c in range(self.grid.n_cols)
            }
        return self._fractions

    def _index(self) -> list[tuple[int, int]]:
        return [rc for rc, fraction in self._scan().items() if self._keep(fraction)]

    def __len__(self) -> int:
        return len(self._index())

    def __getitem__(self, i: int) -> Sample:
        idx = self._index()
        if not -len(idx) <= i < len(idx):
            raise TileIndexError(f"tile index {i} out of range; the scene has {len(idx)} tiles with data")
        return self.tile(*idx[i])


#: bytes held per input value while a tile is read: the file's values, the warped float32 copy, the stacked dates,
#: the mask and the output tensor
BYTES_PER_TILE_VALUE = 20


def tile_read_bytes(grid: SceneGrid, first: dict[str, Frame], n_frames: dict[str, int]) -> float:
    """Estimated peak bytes of reading one tile of ``grid`` (``first``: a frame of each modality, for its bands)."""
    return float(
        sum(BYTES_PER_TILE_VALUE * n_frames[m] * len(f.band_idx) * grid.tile_px[m] ** 2 for m, f in first.items())
    )


def _check_sources(sources: RasterSource | Sequence[RasterSource]) -> list[RasterSource]:
    """The sources as a list: RasterSource objects, one per modality, at least one gridded."""
    srcs = [sources] if isinstance(sources, RasterSource) else list(sources)
    if not srcs:
        raise InputShapeError("open_rasters got no sources; give at least one RasterSource")
    seen: set[str] = set()
    for s in srcs:
        if not isinstance(s, RasterSource):
            raise InputShapeError(f"open_rasters got a {type(s).__name__}; expected RasterSource objects")
        if s.modality in seen:
            raise InputShapeError(
                f"modality {s.modality!r} is given by two RasterSources; put all its rasters in one RasterSource "
                "(a list of files, one per date)"
            )
        seen.add(s.modality)
    if all(MODALITIES[s.modality].tile_token for s in srcs):
        raise InputShapeError("only MODIS was given; it has one pixel per tile and cannot define tiles. Add e.g. s2")
    return srcs


#: a raster whose pixels are more than this many times coarser than its modality's GSD is refused unless
#: ``RasterSource(resampling=...)`` asks for the upsampling explicitly
MAX_UPSAMPLING = 8.0


def _pixel_size(frame: Frame, bounds: tuple[float, ...]) -> float:
    """The frame's pixel size in metres of the reference CRS (its bounds there over its pixel counts)."""
    H, W = frame.shape
    return min((bounds[2] - bounds[0]) / W, (bounds[3] - bounds[1]) / H)


def _check_upsampling(src: RasterSource, frames: list[Frame], boxes: dict[str, Bounds], grid: SceneGrid) -> None:
    """Refuse a raster far coarser than its modality (e.g. a 300 m image given as 1 m SPOT): upsampling it invents
    detail the model never saw and makes every tile read (and ``len(scene)``) take very long."""
    m = src.modality
    if src.resampling is not None or MODALITIES[m].tile_token:
        return
    gsd = grid.gsd_m[m]
    for f in frames:
        res = _pixel_size(f, boxes[f.name])
        if res > MAX_UPSAMPLING * gsd:
            others = [k for k in MODALITIES.values() if k.name != m]
            near = sorted(others, key=lambda k: abs(math.log(k.gsd_m / res)))[:3]
            raise InputShapeError(
                f"{f.name} has {res:.4g} m pixels but {m} is a {gsd:g} m modality: each pixel would be upsampled "
                f"{res / gsd:.0f}x ({grid.n_rows} x {grid.n_cols} tiles of {grid.tile_px[m]} x {grid.tile_px[m]} px), "
                f"inventing detail the model never saw and taking very long. Expected a raster of about {gsd:g} m "
                f"(at most {MAX_UPSAMPLING:g}x coarser). Give it as a modality of its resolution (nearest: "
                f"{', '.join(f'{k.name} {k.gsd_m:g} m' for k in near)}), or pass "
                f"RasterSource(..., resampling='bilinear') to upsample it anyway"
            )


def _resampling(src: RasterSource, frame: Frame, bounds: tuple[float, ...], gsd_m: float) -> Resampling:
    """``src.resampling``; else nearest for MODIS, average when the frame's pixels are clearly finer, bilinear."""
    if src.resampling is not None:
        return src.resampling
    if MODALITIES[src.modality].tile_token:
        return Resampling.nearest
    return Resampling.average if _pixel_size(frame, bounds) < 0.75 * gsd_m else Resampling.bilinear


def open_rasters(
    sources: RasterSource | Sequence[RasterSource],
    *,
    tile_m: float,
    crs: Any = None,
    patch_size_m: float | None = None,
    normalize: Any = "auto",
    origin: tuple[float, float] | None = None,
    min_valid_fraction: float = 0.0,
) -> RasterScene:
    """Align ``sources`` on one grid family and cut their common extent into ``tile_m`` tiles.

    Args:
        sources: one :class:`RasterSource` per modality.
        tile_m: tile side in metres: a multiple of every gridded modality's GSD, of their patch step
            (``MODALITIES[m].patch_step_m``) and of ``patch_size_m`` if given.
        crs: reference CRS (projected, metres); default the CRS of the reference raster (the first raster of the
            finest modality; its UTM zone if it is geographic).
        patch_size_m: the patch size in metres you will run the model with, to check that it divides ``tile_m``.
        normalize: the statistics tiles are normalised with (see :mod:`anysat_core.data.raster.stats`): ``"auto"``
            (the registry's per modality, else statistics of this scene), ``"scene"``, a registry name, a dataset
            root or JSON file, a ``{modality: ...}`` mapping, a :class:`Normalize`, or None for raw file values.
            ``scene.normalization`` and ``repr(scene)`` say which are used.
        origin: ``(x, y)`` in the reference CRS: tiles then lie on the ``tile_m`` lattice through it (e.g. to match
            another product's tiling); default: the first tile starts on the reference raster's pixel grid at the
            top-left corner of the common extent.
        min_valid_fraction: in [0, 1]: tiles with a smaller valid fraction (e.g. slivers at the edges) are skipped
            by ``len``, indexing and :meth:`RasterScene.tiles`; 0 keeps every tile with data.

    Raises:
        UnknownModalityError, ChannelMismatchError, MissingCRSError, DatesError: bad sources.
        InputShapeError: a raster more than :data:`MAX_UPSAMPLING` times coarser than its modality's GSD (unless
            its ``RasterSource`` gives ``resampling=``).
        ExtentMismatchError: the sources do not overlap (by at least one grid unit).
        PatchSizeError: ``tile_m``/``patch_size_m`` do not fit the modalities.
        ConfigError: a non-metric ``crs``, a bad ``origin``, ``min_valid_fraction`` or ``normalize``.
        MemoryLimitError: reading one tile would take more than the allowed share of this machine's memory.
        DatasetNotFoundError, CorruptFileError: a statistics file that is missing or unreadable.
    """
    if not (is_length(min_valid_fraction) and 0 <= min_valid_fraction <= 1):
        raise ConfigError(f"min_valid_fraction={min_valid_fraction!r}; expected a number in [0, 1]")
    srcs = _check_sources(sources)
    frames = {s.modality: read_frames(s) for s in srcs}
    finest = min((s.modality for s in srcs if not MODALITIES[s.modality].tile_token), key=lambda m: MODALITIES[m].gsd_m)
    ref = reference_crs(crs, frames[finest])
    grid, boxes = plan_grid(frames, ref, tile_m, patch_size_m, origin)
    for s in srcs:
        _check_upsampling(s, frames[s.modality], boxes, grid)
    check_memory(
        tile_read_bytes(grid, {m: fs[0] for m, fs in frames.items()}, {m: len(fs) for m, fs in frames.items()}),
        f"reading one {grid.tile_m:g} m tile ({', '.join(f'{m}: {px} x {px} px' for m, px in grid.tile_px.items())})",
        "choose a smaller tile_m (window_m when infer_scene opens the rasters)",
    )
    mods = {
        s.modality: _ModState(
            s,
            frames[s.modality],
            [_resampling(s, f, boxes[f.name], grid.gsd_m[s.modality]) for f in frames[s.modality]],
        )
        for s in srcs
    }
    norm = resolve_normalize(normalize, frames, grid.data_bounds, ref)
    return RasterScene(mods, grid, ref, norm, min_valid_fraction)
