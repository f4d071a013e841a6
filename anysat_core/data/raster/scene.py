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

from anysat_core.data.raster.grid import SceneGrid, plan_grid, reference_crs
from anysat_core.data.raster.sources import Frame, RasterSource, read_frames
from anysat_core.data.sample import GeoInfo, Sample
from anysat_core.dates import day_of_year
from anysat_core.errors import CorruptFileError, EmptyTileError, InputShapeError, TileIndexError
from anysat_core.geo import cell_centres, grid_bounds
from anysat_core.modalities import MODALITIES

__all__ = ["RasterScene", "open_rasters"]


def _read_frame(f: Frame, dst_crs: CRS, dst: Affine, shape: tuple[int, int], resampling: Resampling) -> np.ndarray:
    """Warp the part of frame ``f`` under the grid ``(dst, shape)``: ``(C, h, w)`` float32, NaN where no data."""
    h, w = shape
    sb = grid_bounds(dst, shape)
    if f.crs != dst_crs:
        sb = transform_bounds(dst_crs, f.crs, *sb, densify_pts=21)
    inv = ~f.transform
    cols, rows = zip(*(inv @ (x, y) for x in (sb[0], sb[2]) for y in (sb[1], sb[3])))
    H, W = f.shape
    margin = 2  # source pixels around the window, so bilinear/average see their neighbours
    c0, c1 = max(0, math.floor(min(cols)) - margin), min(W, math.ceil(max(cols)) + margin)
    r0, r1 = max(0, math.floor(min(rows)) - margin), min(H, math.ceil(max(rows)) + margin)
    out = np.full((len(f.band_idx), h, w), np.nan, dtype=np.float32)
    if c0 >= c1 or r0 >= r1:
        return out
    try:
        raw = np.asarray(f.da.isel(band=f.band_idx, y=slice(r0, r1), x=slice(c0, c1)).values)
    except (rasterio.errors.RasterioError, OSError) as e:
        raise CorruptFileError(
            f"cannot read a window of {f.name!r} ({type(e).__name__}: {e}); the file may be truncated"
        ) from e
    vals = raw.astype(np.float32)
    invalid = ~np.isfinite(vals)
    if f.nodata is not None:
        if np.issubdtype(raw.dtype, np.floating):
            invalid |= raw == raw.dtype.type(f.nodata)
        else:  # integers (and bools): compare exactly in float64, so an out-of-range nodata never wraps around
            invalid |= raw.astype(np.float64) == f.nodata
    vals[invalid] = np.nan
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

    ``len(scene)`` and ``scene[i]`` count only non-empty tiles, in row-major order; finding them reads the
    scene once (cached).  :meth:`tiles` streams them; :meth:`tile` reads any ``(row, col)``.
    """

    def __init__(self, mods: dict[str, _ModState], grid: SceneGrid, crs: CRS) -> None:
        self._mods = mods
        self.grid = grid
        self.crs = crs
        self._valid: list[tuple[int, int]] | None = None

    def with_grid(self, grid: SceneGrid) -> RasterScene:
        """The same aligned sources cut along another grid (e.g. overlapping inference windows)."""
        return RasterScene(self._mods, grid, self.crs)

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
        return (
            f"RasterScene({', '.join(self.modalities)}; {g.n_rows} x {g.n_cols} tiles of {g.tile_m:g} m in {g.crs}, "
            f"data bounds {tuple(round(v, 3) for v in g.data_bounds)})"
        )

    def _inside_mask(self, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """``(h, w)`` True where the pixel centre lies inside the common data extent."""
        xs, ys = cell_centres(transform, shape)
        left, bottom, right, top = self.grid.data_bounds
        return ((ys > bottom) & (ys < top))[:, None] & ((xs > left) & (xs < right))[None, :]

    def _read(self, row: int, col: int) -> tuple[Sample, bool]:
        """The sample of tile ``(row, col)`` and whether any gridded modality has a valid pixel in it."""
        g = self.grid
        whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (row, col))
        if not (whole and 0 <= row < g.n_rows and 0 <= col < g.n_cols):
            raise TileIndexError(
                f"tile ({row!r}, {col!r}) is outside the {g.n_rows} x {g.n_cols} tile grid; expected whole numbers "
                f"0 <= row < {g.n_rows} and 0 <= col < {g.n_cols}"
            )
        sample: Sample = {}
        any_valid = False
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
                any_valid |= bool(valid.any())
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
            },
        )
        return sample, any_valid

    def tile(self, row: int, col: int) -> Sample:
        """The sample of tile ``(row, col)``.

        Raises:
            TileIndexError: outside the grid (an IndexError).
            EmptyTileError: the tile has no valid pixel in any gridded modality.
        """
        sample, ok = self._read(row, col)
        if not ok:
            raise EmptyTileError(
                f"tile ({row}, {col}) with bounds {self.grid.tile_bounds(row, col)} in {self.grid.crs} has no valid "
                f"pixel in {', '.join(m for m in self._mods if not MODALITIES[m].tile_token)} (all nodata or outside "
                "the data); pick another tile (scene.tiles() skips empty ones) or check nodata="
            )
        return sample

    def tiles(self, skip_empty: bool = True) -> Iterator[Sample]:
        """Samples of all tiles in row-major order; empty tiles are skipped unless ``skip_empty=False``."""
        for r in range(self.grid.n_rows):
            for c in range(self.grid.n_cols):
                sample, ok = self._read(r, c)
                if ok or not skip_empty:
                    yield sample

    def _index(self) -> list[tuple[int, int]]:
        if self._valid is None:
            self._valid = [
                (r, c) for r in range(self.grid.n_rows) for c in range(self.grid.n_cols) if self._read(r, c)[1]
            ]
        return self._valid

    def __len__(self) -> int:
        return len(self._index())

    def __getitem__(self, i: int) -> Sample:
        idx = self._index()
        if not -len(idx) <= i < len(idx):
            raise TileIndexError(f"tile index {i} out of range; the scene has {len(idx)} non-empty tiles")
        return self.tile(*idx[i])


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


def _resampling(src: RasterSource, frame: Frame, bounds: tuple[float, ...], gsd_m: float) -> Resampling:
    """``src.resampling``; else nearest for MODIS, average when the frame's pixels are clearly finer, bilinear."""
    if src.resampling is not None:
        return src.resampling
    if MODALITIES[src.modality].tile_token:
        return Resampling.nearest
    H, W = frame.shape
    src_res = min((bounds[2] - bounds[0]) / W, (bounds[3] - bounds[1]) / H)
    return Resampling.average if src_res < 0.75 * gsd_m else Resampling.bilinear


def open_rasters(
    sources: RasterSource | Sequence[RasterSource],
    *,
    tile_m: float,
    crs: Any = None,
    patch_size_m: float | None = None,
) -> RasterScene:
    """Align ``sources`` on one grid family and cut their common extent into ``tile_m`` tiles.

    Args:
        sources: one :class:`RasterSource` per modality.
        tile_m: tile side in metres: a multiple of every gridded modality's GSD, of their patch step
            (``MODALITIES[m].patch_step_m``) and of ``patch_size_m`` if given.
        crs: reference CRS (projected, metres); default the first source's (its UTM zone if it is geographic).
        patch_size_m: the patch size in metres you will run the model with, to check that it divides ``tile_m``.

    Raises:
        UnknownModalityError, ChannelMismatchError, MissingCRSError, DatesError: bad sources.
        ExtentMismatchError: the sources do not overlap (by at least one grid unit).
        PatchSizeError: ``tile_m``/``patch_size_m`` do not fit the modalities.
        ConfigError: a non-metric ``crs``.
    """
    srcs = _check_sources(sources)
    frames = {s.modality: read_frames(s) for s in srcs}
    ref = reference_crs(crs, frames[srcs[0].modality])
    grid, boxes = plan_grid(frames, ref, tile_m, patch_size_m)
    mods = {
        s.modality: _ModState(
            s,
            frames[s.modality],
            [_resampling(s, f, boxes[f.name], grid.gsd_m[s.modality]) for f in frames[s.modality]],
        )
        for s in srcs
    }
    return RasterScene(mods, grid, ref)
