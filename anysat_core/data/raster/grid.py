"""The scene grid: reference CRS, the reference raster's pixel lattice, tile size checks, tiles on the map.

Tiles keep the data where it is: the tile grid starts on the pixel lattice of the **reference raster** (the first
raster of the finest gridded modality), at the first lattice point inside the common extent, or on a lattice of
``tile_m`` anchored at an explicit ``origin``.  Every modality grid shares that origin with its own GSD, so a tile is
a whole number of pixels of each modality, and a raster already on its target grid is read as is (no resampling).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio.errors
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from anysat_core.data.raster.sources import Frame
from anysat_core.data.sample import GeoInfo
from anysat_core.errors import ConfigError, ExtentMismatchError, InputShapeError, MissingCRSError, PatchSizeError
from anysat_core.geo import (
    EPS,
    Bounds,
    cell_centres,
    count_steps,
    grid_bounds,
    grid_transform,
    is_length,
    is_multiple,
    lcm_length,
    north_up,
)
from anysat_core.modalities import MODALITIES

__all__ = ["SceneGrid", "frame_bounds", "frame_pixel_box", "plan_grid", "reference_crs", "tile_cell_coords"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneGrid:
    """The tile grid of a scene (all lengths in metres of the reference CRS).

    Attributes:
        crs: reference CRS string (``"EPSG:32631"``).
        data_bounds: ``(left, bottom, right, top)`` of the common extent of the rasters, shrunk to the reference
            pixel lattice; pixels outside it are masked.
        unit: least common multiple of the gridded modalities' GSDs; every tile is a whole number of pixels of each.
        tile_m: side of a tile.
        n_rows, n_cols: tile rows (top to bottom) and columns (left to right).
        gsd_m: ``{modality: pixel size}`` of each modality grid (MODIS: ``tile_m``, one pixel per tile).
        tile_px: ``{modality: pixels per tile side}``.
        origin_xy: ``(x, y)`` top-left corner of tile ``(0, 0)``; None: the top-left corner of ``data_bounds``.
        reference: the raster whose pixel lattice the grid follows (a description, for summaries).
    """

    crs: str
    data_bounds: Bounds
    unit: float
    tile_m: float
    n_rows: int
    n_cols: int
    gsd_m: dict[str, float] = field(default_factory=dict)
    tile_px: dict[str, int] = field(default_factory=dict)
    origin_xy: tuple[float, float] | None = None
    reference: str = ""

    @property
    def origin(self) -> tuple[float, float]:
        """``(x, y)`` of the top-left corner shared by every grid."""
        if self.origin_xy is not None:
            return self.origin_xy
        return (self.data_bounds[0], self.data_bounds[3])

    @property
    def covered_bounds(self) -> Bounds:
        """``(left, bottom, right, top)`` from the origin to the far edges of the data: what the grid must cover."""
        x0, y0 = self.origin
        return (x0, self.data_bounds[1], self.data_bounds[2], y0)

    @property
    def bounds(self) -> Bounds:
        """``(left, bottom, right, top)`` of all tiles, padding included."""
        x0, y0 = self.origin
        return (x0, y0 - self.n_rows * self.tile_m, x0 + self.n_cols * self.tile_m, y0)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)``."""
        return (self.n_rows, self.n_cols)

    def tile_bounds(self, row: int, col: int) -> Bounds:
        """``(left, bottom, right, top)`` of tile ``(row, col)``."""
        x0, y0 = self.origin
        left, top = x0 + col * self.tile_m, y0 - row * self.tile_m
        return (left, top - self.tile_m, left + self.tile_m, top)

    def transform(self, modality: str, row: int = 0, col: int = 0) -> Affine:
        """Affine transform of ``modality``'s pixel grid on tile ``(row, col)`` (``(0, 0)``: the whole scene)."""
        left, _, _, top = self.tile_bounds(row, col)
        g = self.gsd_m[modality]
        return Affine(g, 0.0, left, 0.0, -g, top)


def _is_metric(crs: CRS) -> bool:
    return bool(crs.is_projected) and (crs.linear_units or "").lower() in ("metre", "meter", "m")


def reference_crs(crs: Any, frames: list[Frame]) -> CRS:
    """``crs`` (checked: projected, in metres), else the CRS of the first frame (its UTM zone if not metric).

    Raises:
        ConfigError: an invalid or non-metric ``crs``.
    """
    if crs is not None:
        try:
            ref = CRS.from_user_input(crs)
        except rasterio.errors.CRSError as e:
            raise ConfigError(f"crs={crs!r} is not a valid CRS ({e}); give e.g. 'EPSG:32631'") from e
        if not _is_metric(ref):
            raise ConfigError(
                f"crs={crs!r} is not a projected CRS in metres; AnySat grids are in metres (GSDs from the registry). "
                "Give a UTM or other metric CRS, e.g. 'EPSG:326xx', or leave crs=None"
            )
        return ref
    first = frames[0]
    if _is_metric(first.crs):
        return first.crs
    utm = first.da.rio.estimate_utm_crs()
    log.info("reference CRS %s of %s is not metric; using %s", first.crs.to_string(), first.name, utm.to_string())
    return CRS.from_user_input(utm)


def frame_bounds(f: Frame, dst: CRS) -> Bounds:
    """``(left, bottom, right, top)`` of frame ``f`` in the CRS ``dst``."""
    b = grid_bounds(f.transform, f.shape)
    return b if f.crs == dst else transform_bounds(f.crs, dst, *b, densify_pts=21)


def _lattice(frames: dict[str, list[Frame]], ref: CRS, gridded: list[str]) -> tuple[tuple[float, float], float, str]:
    """``((x, y) anchor, step, description)`` of the reference pixel lattice: the pixel corners of the first raster
    of the finest gridded modality when it is north-up in ``ref`` (else multiples of that modality's GSD)."""
    finest = min(gridded, key=lambda m: MODALITIES[m].gsd_m)
    f = frames[finest][0]
    a, b, c, d, e, fy = tuple(f.transform)[:6]
    if f.crs == ref and b == 0 and d == 0 and a > 0 and e < 0 and math.isclose(a, -e, rel_tol=EPS):
        return (c, fy), a, f"the pixel grid of {f.name} ({a:g} m, {finest})"
    g = MODALITIES[finest].gsd_m
    return (0.0, 0.0), g, f"multiples of {g:g} m ({finest}'s GSD; {f.name} is not a north-up grid in {ref.to_string()})"


def _snap(bounds: Bounds, anchor: tuple[float, float], step: float) -> Bounds:
    """``bounds`` shrunk to the lattice of ``step`` through ``anchor``."""
    left, bottom, right, top = bounds
    ax, ay = anchor
    return (
        ax + math.ceil((left - ax) / step - EPS) * step,
        ay - math.floor((ay - bottom) / step + EPS) * step,
        ax + math.floor((right - ax) / step + EPS) * step,
        ay - math.ceil((ay - top) / step - EPS) * step,
    )


def _check_origin(origin: Any) -> tuple[float, float] | None:
    if origin is None:
        return None
    try:
        x, y = origin
        ok = is_length(x) and is_length(y)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"origin={origin!r}; expected (x, y), the top-left corner of a tile in the reference CRS (metres), or "
            "None to start the tiles on the reference raster's pixel grid"
        )
    return (float(x), float(y))


def frame_pixel_box(f: Frame, bounds: Bounds, crs: CRS) -> tuple[int, int, int, int] | None:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of frame ``f`` that cover ``bounds`` (in ``crs``), clipped to the
    raster; None when they do not meet.  Generous by up to one pixel: a pixel partly outside ``bounds`` counts."""
    b = bounds if f.crs == crs else transform_bounds(crs, f.crs, *bounds, densify_pts=21)
    inv = ~f.transform
    cols, rows = zip(*(inv @ (x, y) for x in (b[0], b[2]) for y in (b[1], b[3])))
    H, W = f.shape
    r0, r1 = max(0, math.floor(min(rows))), min(H, math.ceil(max(rows)))
    c0, c1 = max(0, math.floor(min(cols))), min(W, math.ceil(max(cols)))
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def plan_grid(
    frames: dict[str, list[Frame]],
    ref: CRS,
    tile_m: float,
    patch_size_m: float | None,
    origin: Any = None,
) -> tuple[SceneGrid, dict[str, Bounds]]:
    """The tile grid over the common extent of ``frames`` (``{modality: frames}``) in the reference CRS ``ref``.

    Tile ``(0, 0)`` starts at the top-left corner of the common extent shrunk to the reference pixel lattice (see the
    module docstring), or, with ``origin=(x, y)``, at the corner of the ``tile_m`` lattice through ``origin`` that
    contains that corner.

    Returns:
        ``(grid, {frame name: bounds in ref})``.

    Raises:
        ExtentMismatchError: the frames do not overlap by at least one reference pixel.
        PatchSizeError: ``tile_m``/``patch_size_m`` do not fit the modalities.
        ConfigError: an ``origin`` that is not two finite numbers.
    """
    anchor_xy = _check_origin(origin)
    gridded = [m for m in frames if not MODALITIES[m].tile_token]
    boxes = {f.name: frame_bounds(f, ref) for fs in frames.values() for f in fs}
    common = (
        max(b[0] for b in boxes.values()),
        max(b[1] for b in boxes.values()),
        min(b[2] for b in boxes.values()),
        min(b[3] for b in boxes.values()),
    )
    anchor, px, reference = _lattice(frames, ref, gridded)
    if anchor_xy is not None:
        anchor, px = anchor_xy, min(MODALITIES[m].gsd_m for m in gridded)
        reference = f"origin {anchor_xy} (lattice of {px:g} m)"
    left, bottom, right, top = _snap(common, anchor, px)
    if right - left < px * (1 - EPS) or top - bottom < px * (1 - EPS):
        detail = "; ".join(f"{n}: {tuple(round(v, 2) for v in b)}" for n, b in boxes.items())
        raise ExtentMismatchError(
            f"the rasters do not overlap by at least one {px:g} m pixel in {ref.to_string()} (bounds left, bottom, "
            f"right, top: {detail}); give rasters that cover a common area (check their CRS and coordinates)"
        )

    unit = lcm_length([MODALITIES[m].gsd_m for m in gridded])
    step = math.lcm(*(MODALITIES[m].patch_step_m for m in gridded))
    if patch_size_m is not None and not (
        is_length(patch_size_m) and patch_size_m > 0 and is_multiple(patch_size_m, step)
    ):
        raise PatchSizeError(
            f"patch_size_m={patch_size_m!r}; expected a positive multiple of {step} m for {', '.join(gridded)}"
        )
    need = lcm_length([unit, float(step)] + ([float(patch_size_m)] if patch_size_m else []))
    if not (is_length(tile_m) and tile_m > 0 and is_multiple(float(tile_m), need)):
        raise PatchSizeError(
            f"tile_m={tile_m!r}; expected a positive multiple of {need:g} m (the GSDs "
            f"{', '.join(f'{m} {MODALITIES[m].gsd_m:g} m' for m in gridded)}, the patch step {step} m"
            + (f" and patch_size_m={patch_size_m:g} m" if patch_size_m else "")
            + f"), e.g. {', '.join(f'{need * k:g}' for k in (2, 4, 6))}"
        )
    tile_m = float(tile_m)
    x0, y0 = left, top
    if anchor_xy is not None:  # the tile lattice through origin
        x0 = anchor_xy[0] + math.floor((left - anchor_xy[0]) / tile_m + EPS) * tile_m
        y0 = anchor_xy[1] - math.floor((anchor_xy[1] - top) / tile_m + EPS) * tile_m
    gsd = {m: (tile_m if MODALITIES[m].tile_token else MODALITIES[m].gsd_m) for m in frames}
    grid = SceneGrid(
        crs=ref.to_string(),
        data_bounds=(left, bottom, right, top),
        unit=unit,
        tile_m=tile_m,
        n_rows=count_steps(y0 - bottom, tile_m),
        n_cols=count_steps(right - x0, tile_m),
        gsd_m=gsd,
        tile_px={m: round(tile_m / g) for m, g in gsd.items()},
        origin_xy=(x0, y0),
        reference=reference,
    )
    return grid, boxes


def tile_cell_coords(meta: GeoInfo, grid_shape: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of the cell centres of an ``h x w`` feature grid laid over a tile.

    Args:
        meta: the tile's :class:`GeoInfo` (``transform`` and ``shape`` of its reference grid).
        grid_shape: ``h`` or ``(h, w)``: e.g. ``features.shape[1:3]`` of ``output="patch"`` or ``"dense"``.

    Returns:
        ``(x_centres (w,), y_centres (h,))`` in CRS units; ``features[i, j]`` lies at ``(x[j], y[i])``.

    Raises:
        MissingCRSError: ``meta`` has no transform/shape.
        InputShapeError: a rotated transform or a non-positive grid shape.
    """
    if meta.transform is None or meta.shape is None:
        raise MissingCRSError(
            f"tile {meta.tile_id!r} has no transform/shape in its GeoInfo; feature grids can only be placed on the map "
            "for georeferenced tiles (e.g. from open_rasters)"
        )
    if isinstance(grid_shape, (int, np.integer)):
        dims: tuple[int, ...] = (int(grid_shape), int(grid_shape))
    else:
        dims = tuple(int(v) for v in grid_shape)
    if len(dims) != 2 or min(dims) < 1:
        raise InputShapeError(f"grid_shape={grid_shape!r}; expected h or (h, w) with positive sizes")
    transform = north_up(meta.transform, f"the transform of tile {meta.tile_id!r}")
    return cell_centres(grid_transform(transform, meta.shape, dims), dims)
