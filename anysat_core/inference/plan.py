"""The window plan of a scene: windows laid over the scene, the feature grid, panels, and the checks of the sizes.

Nothing here reads pixels or runs the model: :func:`plan_scene` says what :func:`~anysat_core.inference.infer_scene`
will do, and :func:`window_scene` gives the scene cut along the windows (read lazily by the scene's own reader).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from anysat_core.data.raster import RasterScene, RasterSource, SceneGrid, open_rasters
from anysat_core.data.raster.survey import has_valid_data, nodata_summary
from anysat_core.errors import EmptyTileError, InputShapeError, OutputError, PatchSizeError
from anysat_core.geo import EPS, cell_centres, count_steps, is_length, is_multiple
from anysat_core.memory import check_memory, format_bytes, memory_limit_bytes
from anysat_core.modalities import MODALITIES

__all__ = ["ScenePlan", "plan_scene"]


@dataclass(frozen=True)
class WindowGrid(SceneGrid):
    """A :class:`SceneGrid` whose "tiles" are overlapping windows: tile ``(r, c)`` starts ``stride_m * (r, c)``
    from the origin and is ``tile_m`` wide, so :class:`RasterScene` reads windows with its own reader."""

    stride_m: float = 0.0

    def tile_bounds(self, row: int, col: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of window ``(row, col)``."""
        x0, y0 = self.origin
        left, top = x0 + col * self.stride_m, y0 - row * self.stride_m
        return (left, top - self.tile_m, left + self.tile_m, top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of all windows, padding included."""
        x0, y0 = self.origin
        w = (self.n_cols - 1) * self.stride_m + self.tile_m
        h = (self.n_rows - 1) * self.stride_m + self.tile_m
        return (x0, y0 - h, x0 + w, y0)


@dataclass(frozen=True)
class ScenePlan:
    """How a scene is cut into windows and where the features go (all sizes in cells unless ``_m``).

    Attributes:
        n_rows, n_cols: windows along y (strips) and x.
        window_cells: window side in feature cells.
        stride_cells: window step in cells (``window - overlap``).
        overlap_cells: overlap in cells.
        cell_m: feature cell side in metres.
        grid_shape: ``(ny, nx)`` cells of the scene's feature grid.
        transform: affine transform of the feature grid (scene CRS).
        crs: the scene CRS string.
        n_features: channels of the feature map (``D`` for patch, ``2D`` for dense).
        panel_windows: window columns per panel (the last panel may have fewer).
        buffer_shape: ``(n_features, window_cells, panel_width)`` of the strip accumulator: the largest array
            held while streaming; it depends neither on the scene height nor on its width.
    """

    n_rows: int
    n_cols: int
    window_cells: int
    stride_cells: int
    overlap_cells: int
    cell_m: float
    grid_shape: tuple[int, int]
    transform: tuple[float, float, float, float, float, float]
    crs: str
    n_features: int
    panel_windows: int
    buffer_shape: tuple[int, int, int]

    @property
    def n_windows(self) -> int:
        """Number of windows (empty ones included)."""
        return self.n_rows * self.n_cols

    @property
    def n_panels(self) -> int:
        """Number of panels (vertical bands of window columns processed one after the other)."""
        return -(-self.n_cols // self.panel_windows)

    def panel_cols(self, p: int) -> tuple[int, int]:
        """Window columns ``[c0, c1)`` of panel ``p``."""
        c0 = p * self.panel_windows
        return c0, min(self.n_cols, c0 + self.panel_windows)

    def panel_span(self, p: int) -> tuple[int, int]:
        """Feature-grid columns ``[x0, x1)`` that panel ``p`` finishes (its last ``overlap`` columns belong to the
        next panel, which finishes them)."""
        c0, c1 = self.panel_cols(p)
        nx = self.grid_shape[1]
        x1 = nx if c1 == self.n_cols else min(nx, c1 * self.stride_cells)
        return min(nx, c0 * self.stride_cells), x1


def grid_coords(plan: ScenePlan) -> dict[str, np.ndarray]:
    """``feature``/``y``/``x`` coordinates of the scene's feature grid (``x``/``y``: cell centres)."""
    xs, ys = cell_centres(plan.transform, plan.grid_shape)
    return {"feature": np.arange(plan.n_features), "y": ys, "x": xs}


def as_scene(scene_or_sources: Any, window_m: float, patch_size_m: float) -> RasterScene:
    """A RasterScene as given, or opened from RasterSource(s) with ``tile_m=window_m``."""
    if isinstance(scene_or_sources, RasterScene):
        return scene_or_sources
    if isinstance(scene_or_sources, RasterSource) or (
        isinstance(scene_or_sources, Sequence)
        and not isinstance(scene_or_sources, (str, bytes))
        and all(isinstance(s, RasterSource) for s in scene_or_sources)
    ):
        return open_rasters(scene_or_sources, tile_m=window_m, patch_size_m=patch_size_m)
    raise InputShapeError(
        f"infer_scene got a {type(scene_or_sources).__name__}; expected a RasterScene (from open_rasters) or "
        "RasterSource(s)"
    )


def check_output(output: str) -> None:
    """Raises OutputError unless ``output`` is a map output (``"patch"`` or ``"dense"``)."""
    if output not in ("patch", "dense"):
        raise OutputError(f"output={output!r}; infer_scene makes maps: use 'patch' or 'dense'")


def check_megabytes(name: str, value: Any, example: int) -> None:
    """Raises InputShapeError unless ``value`` is a positive finite number (of megabytes)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (math.isfinite(value) and value > 0)
    ):
        raise InputShapeError(f"{name}={value!r}; expected a positive number of megabytes, e.g. {example}")


def check_lengths(**lengths: Any) -> None:
    """Raises PatchSizeError unless every value is a real, finite number of metres."""
    for name, v in lengths.items():
        if not is_length(v):
            raise PatchSizeError(f"{name}={v!r}; expected a number of metres")


def _check_geometry(scene: RasterScene, patch_size_m: float, window_m: float, overlap_m: float) -> None:
    grid = scene.grid
    gridded = [m for m in scene.modalities if not MODALITIES[m].tile_token]
    step = math.lcm(*(MODALITIES[m].patch_step_m for m in gridded))
    check_lengths(patch_size_m=patch_size_m, window_m=window_m, overlap_m=overlap_m)
    if not (patch_size_m > 0 and is_multiple(patch_size_m, step) and is_multiple(patch_size_m, grid.unit)):
        raise PatchSizeError(
            f"patch_size_m={patch_size_m!r}; expected a positive multiple of {max(step, grid.unit):g} m for "
            f"{', '.join(gridded)}"
        )
    if not is_multiple(window_m, patch_size_m):
        raise PatchSizeError(
            f"window_m={window_m!r} is not a multiple of patch_size_m={patch_size_m:g}; use e.g. "
            f"{', '.join(f'{patch_size_m * k:g}' for k in (6, 12, 24))}"
        )
    if overlap_m < 0 or overlap_m > window_m / 2 + EPS or (overlap_m > 0 and not is_multiple(overlap_m, patch_size_m)):
        raise PatchSizeError(
            f"overlap_m={overlap_m!r}; expected 0 or a multiple of patch_size_m={patch_size_m:g} of at most "
            f"window_m / 2 = {window_m / 2:g} (so that windows stay aligned on the patch grid)"
        )


def _cell_m(output: str, patch_size_m: float, output_modality: str) -> float:
    """Side of a feature cell: the patch, or the output modality's dense sub-patch token."""
    if output == "patch":
        return float(patch_size_m)
    mod = MODALITIES[output_modality]
    r = max(1, round(patch_size_m / (mod.token_m * mod.reduce_scale)))
    return float(patch_size_m) / r


def window_scene(scene: RasterScene, window_m: float, stride_m: float) -> RasterScene:
    """``scene`` cut into windows of ``window_m`` every ``stride_m`` from its tile origin (edge windows pad)."""
    g = scene.grid
    left, bottom, right, top = g.covered_bounds
    n_cols = 1 + max(0, count_steps(right - left - window_m, stride_m))
    n_rows = 1 + max(0, count_steps(top - bottom - window_m, stride_m))
    gsd = {m: (float(window_m) if MODALITIES[m].tile_token else g.gsd_m[m]) for m in scene.modalities}
    wgrid = WindowGrid(
        crs=g.crs,
        data_bounds=g.data_bounds,
        unit=g.unit,
        tile_m=float(window_m),
        n_rows=n_rows,
        n_cols=n_cols,
        gsd_m=gsd,
        tile_px={m: round(window_m / v) for m, v in gsd.items()},
        origin_xy=g.origin,
        reference=g.reference,
        stride_m=float(stride_m),
    )
    return scene.with_grid(wgrid)


def scene_memory(
    model: nn.Module,
    scene: RasterScene,
    *,
    window_m: float,
    patch_size_m: float,
    n_features: int,
    window_cells: int,
    overlap_cells: int,
    panel_cells: int,
    grid_shape: tuple[int, int],
    batch_size: int,
    in_memory: bool,
) -> dict[str, float]:
    """Estimated peak bytes of a scene run, by part (nothing is allocated).

    * ``accumulator``: the strip buffers ``(D, window, panel)`` (sums, divided output) and weights, plus the
      ``overlap`` rows carried to the next strip;
    * ``inputs``: the windows in flight (``INFLIGHT`` batches of ``batch_size``): per window and modality ``T x C``
      rasters of ``window_m / gsd`` pixels, as float32 values, a validity mask, the collated batch and a transient copy
      while reading (14 bytes per value);
    * ``outputs``: the feature maps of those windows ``(window_cells, window_cells, D)`` float32 (model output and
      its copy);
    * ``model``: the activations of one batch in the main transformer (``1 + M * P`` tokens of width ``D``, about
      ``4 + mlp_ratio`` live copies);
    * ``result``: the whole feature grid ``(D, ny, nx)`` float32 when the result is kept in memory (``out=None``).
    """
    from anysat_core.inference.stream import INFLIGHT  # stream imports this module

    D = n_features
    values = 0.0  # values of one window's inputs
    gridded = 0
    for m in scene.modalities:
        mod = MODALITIES[m]
        px = 1.0 if mod.tile_token else float(window_m) / float(scene.grid.gsd_m[m])
        n_dates = len(scene.dates.get(m, ())) if mod.time_series else 1
        values += max(1, n_dates) * mod.num_bands * px * px
        gridded += 0 if mod.tile_token else 1
    windows = INFLIGHT * batch_size
    tokens = 1 + gridded * (float(window_m) / float(patch_size_m)) ** 2
    width = int(getattr(model, "embed_dim", 0) or D)
    mlp_ratio = float(getattr(getattr(model, "config", None), "mlp_ratio", 4.0))
    ny, nx = grid_shape
    return {
        "accumulator": 4.0 * (2 * D + 2) * window_cells * panel_cells + 8.0 * (D + 1) * overlap_cells * panel_cells,
        "inputs": 14.0 * values * windows,
        "outputs": 8.0 * D * float(window_cells) ** 2 * windows,
        "model": 4.0 * batch_size * tokens * width * (4 + mlp_ratio),
        "result": 4.0 * D * ny * nx if in_memory else 0.0,
    }


def _memory_fix(window_m: float, patch_size_m: float, overlap_m: float, fits: Any) -> str:
    """The advice of a scene too large for memory: a smaller window that fits, if one does, and the other levers."""
    hint = ""
    w = float(window_m)
    while w >= 2 * patch_size_m:
        w = max(float(patch_size_m), math.floor(w / 2 / patch_size_m) * patch_size_m)
        if w < 2 * overlap_m:
            break
        if fits(w):
            hint = f" (window_m={w:g} fits)"
            break
    return (
        f"lower window_m{hint}, use a coarser patch size (a larger patch_size_m) or output='patch', or lower "
        "batch_size; buffer_mb bounds the panel width but never goes below one window"
    )


def plan_scene(
    model: nn.Module,
    scene: RasterScene,
    *,
    patch_size_m: float,
    window_m: float,
    overlap_m: float,
    output: str = "dense",
    output_modality: str | None = None,
    buffer_mb: float = 16.0,
    batch_size: int = 4,
    in_memory: bool = False,
    survey: bool = True,
) -> ScenePlan:
    """The window layout and feature grid :func:`~anysat_core.inference.infer_scene` uses for ``scene`` (nothing is
    run; with ``survey`` the rasters are read until their first valid pixel).

    ``buffer_mb`` bounds the strip accumulator: panels get as many window columns as fit (at least one).

    Before anything is allocated, the peak memory of the run (:func:`scene_memory`: accumulator, the windows in
    flight of ``batch_size``, their outputs, the model's activations, and the whole result when ``in_memory``) is
    checked against :func:`~anysat_core.memory.memory_limit_bytes`; with ``survey`` a scene without a single valid
    pixel is refused (:func:`~anysat_core.data.raster.survey.has_valid_data`).

    Raises:
        PatchSizeError: sizes that do not fit (see :func:`~anysat_core.inference.infer_scene`).
        OutputError: an unknown ``output`` or ``output_modality``.
        InputShapeError: ``buffer_mb`` is not a positive number.
        MemoryLimitError: the run would need more than the allowed share of this machine's memory.
        EmptyTileError: every pixel of the scene is nodata (``survey``).
    """
    check_megabytes("buffer_mb", buffer_mb, 16)
    check_output(output)
    _check_geometry(scene, patch_size_m, window_m, overlap_m)
    om = output_modality or scene.modalities[0]
    if om not in scene.modalities or MODALITIES[om].tile_token:
        raise OutputError(
            f"output_modality={om!r}; expected one of the scene's gridded modalities "
            f"({', '.join(m for m in scene.modalities if not MODALITIES[m].tile_token)})"
        )
    cell = _cell_m(output, patch_size_m, om)
    stride_m = window_m - overlap_m
    wg = window_scene(scene, window_m, stride_m).grid
    wc, sc, oc = (round(v / cell) for v in (window_m, stride_m, overlap_m))
    left, bottom, right, top = scene.grid.covered_bounds  # from the tile origin
    ny, nx = count_steps(top - bottom, cell), count_steps(right - left, cell)
    D = int(getattr(model, "embed_dim", 0)) * (2 if output == "dense" else 1)
    # accumulator (D floats) + weights + valid fraction + the divided output (D floats): 4 (2 D + 2) bytes per cell
    per_col = 4 * (2 * D + 2) * wc
    fit = int((buffer_mb * 2**20 // per_col - oc) // max(sc, 1))
    panel = max(1, min(wg.n_cols, fit))

    def parts(w_m: float, panel_windows: int) -> dict[str, float]:
        w_c, s_c = round(w_m / cell), round((w_m - overlap_m) / cell)
        return scene_memory(
            model,
            scene,
            window_m=w_m,
            patch_size_m=patch_size_m,
            n_features=D,
            window_cells=w_c,
            overlap_cells=oc,
            panel_cells=(panel_windows - 1) * s_c + w_c,
            grid_shape=(ny, nx),
            batch_size=batch_size,
            in_memory=in_memory,
        )

    need = parts(window_m, panel)
    if sum(need.values()) > memory_limit_bytes():
        detail = ", ".join(f"{k} {format_bytes(v)}" for k, v in need.items() if v)
        check_memory(
            sum(need.values()),
            f"scene inference with window_m={window_m:g} and patch_size_m={patch_size_m:g} ({wc} x {wc} cells of "
            f"{D} features per window, batch_size={batch_size}: {detail})",
            _memory_fix(window_m, patch_size_m, overlap_m, lambda w: sum(parts(w, 1).values()) <= memory_limit_bytes())
            + (" or write to a file (out=...) instead of keeping the result in memory" if in_memory else ""),
        )
    if survey and not has_valid_data(scene):
        raise EmptyTileError(
            f"the scene has no valid pixel: inside its extent {tuple(round(v, 3) for v in scene.grid.data_bounds)} "
            f"every value is NaN or nodata ({nodata_summary(scene)}); nothing would be written but NaN. Check the "
            "rasters, or nodata= of their RasterSource if the file's nodata value is wrong"
        )
    return ScenePlan(
        n_rows=wg.n_rows,
        n_cols=wg.n_cols,
        window_cells=wc,
        stride_cells=sc,
        overlap_cells=oc,
        cell_m=cell,
        grid_shape=(ny, nx),
        transform=(cell, 0.0, left, 0.0, -cell, top),
        crs=scene.grid.crs,
        n_features=D,
        panel_windows=panel,
        buffer_shape=(D, wc, (panel - 1) * sc + wc),
    )
