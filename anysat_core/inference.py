"""Scene-scale inference: sliding windows over an aligned raster stack, blended, streamed to disk.

:func:`infer_scene` runs a model over a scene of any size with bounded memory::

    scene = open_rasters([RasterSource(s2_files, modality="s2")], tile_m=240)
    path = infer_scene(model, scene, patch_size_m=20, window_m=240, overlap_m=40, output="dense",
                       normalize=Normalize(stats), out="features.tif")        # Cloud-Optimized GeoTIFF
    feats = rioxarray.open_rasterio(path)                                    # (feature, y, x)

**Windows.**  Square windows of ``window_m`` are laid from the top-left corner of the scene's common extent
with a stride of ``window_m - overlap_m``; windows on the right/bottom edges extend beyond the data (padded
pixels are masked, as in :mod:`anysat_core.data.raster`).  Windows without a single valid pixel are skipped (their
cells stay NaN when no other window covers them).  Each window is read lazily (only its pixels are read from the
files) with the scene's own reader, so it is exactly the tile :func:`~anysat_core.data.raster.open_rasters`
would cut at that place.

**Feature grid.**  Cells of ``patch_size_m`` (``output="patch"``) or of the output modality's sub-patch token
(``output="dense"``, e.g. 10 m for s2) laid from the scene's top-left corner; the grid covers the data extent
rounded up to whole cells.  ``x``/``y`` are cell centres in the scene CRS: cell ``(i, j)`` is centred at
``(left + cell * (j + 0.5), top - cell * (i + 0.5))``.

**Blending.**  Each window's feature map is multiplied by a separable weight ``w(i) * w(j)`` that is 1 in its
interior and follows a raised-cosine ramp over the ``overlap`` cells at each border
(``w_k = 0.5 - 0.5 cos(pi (k + 0.5) / n_overlap)``); weighted sums and weights are accumulated and divided.
Two overlapping ramps sum to 1, so the result moves smoothly from one window to the next; a cell covered by a
single window keeps that window's value exactly.  ``overlap_m`` may be at most ``window_m / 2`` (each cell is then
covered by at most two windows per axis).

**Bounded memory.**  Windows are processed in *panels* (vertical bands of at most ``panel_windows`` window
columns, sized so the accumulator stays under ``buffer_mb``), and inside a panel one row of windows (a *strip*) at
a time, reading each window's pixels only when its batch is run.  The accumulator holds ``window`` cell rows x the
panel width: its size depends neither on the scene height nor on its width.  After each strip the finished
``stride`` rows are divided, written to the output, and only the ``overlap`` band is carried to the next strip;
the ``overlap`` columns shared with the next panel are carried through the output store (partial sums and
weights), so a panel never holds more than its own columns.  GDAL's block cache is capped during the run
(``gdal_cache_mb``; GDAL's own default is 5 % of RAM, which a large scene fills).  The full-scene array is never
held in memory when ``out`` is given (with ``out=None`` the result is returned in memory, for small scenes).

**Output files.**  ``out`` ending in ``.zarr`` gives a Zarr store (xarray layout: ``anysat_features``
``(feature, y, x)`` float32, ``x``/``y``/``feature`` coordinates, a CF ``spatial_ref`` with the CRS and
transform; open with ``xr.open_zarr``); ``.tif``/``.tiff`` gives a Cloud-Optimized GeoTIFF (one float32 band per
feature, band descriptions = feature indices, provenance in the dataset tags).  With ``probe=`` the per-cell class
``prediction`` (int16, -1 = no data) and ``confidence`` (max probability, float32) are added: as Zarr variables,
or as the two last bands of the GeoTIFF (descriptions ``prediction``/``confidence``).

**Atomic and resumable.**  Work goes to a partial Zarr store ``.<name>.partial.zarr`` beside ``out``; after every
strip its attributes record the number of finished strips and the carried overlap bands (two alternating slots,
so a crash in the middle of a write never corrupts the last committed state).  A run interrupted for any reason
(a kill, a full disk) keeps that partial store and continues from the last finished strip when called again with the same arguments (``resume=True``) and produces
the same file as an uninterrupted run (strips are batched independently, so every window sees the same batch).
Only the finished result is renamed to ``out``; an existing ``out`` is refused unless ``overwrite=True``
(:class:`~anysat_core.errors.OutputExistsError`), and OS errors (read-only folder, full disk, a file where a
folder should be) become :class:`OutputWriteError` naming the path.

**Distributed.**  With ``client=`` (a :class:`distributed.Client` or a scheduler address) the model weights and
config are scattered once to the workers, the windows of a strip are submitted as batches and gathered in order;
reading, blending and writing stay in the calling process.

Attributes of the result (strings): those of :func:`~anysat_core.features.extract_features` (``model``,
``checkpoint`` = SHA-256 of the weights, ``patch_size_m``, ``output``, ``output_modality``, ``modalities``,
``anysat_core_version``) plus ``window_m``, ``overlap_m``, ``blending`` and ``crs``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from torch import nn

from anysat_core.data.collate import collate
from anysat_core.data.raster import RasterScene, RasterSource, SceneGrid, open_rasters
from anysat_core.data.sample import Sample
from anysat_core.errors import (
    AnySatError,
    EmptyTileError,
    InputShapeError,
    OutputError,
    OutputExistsError,
    OutputWriteError,
    PatchSizeError,
)
from anysat_core.features import provenance_attrs, run_model
from anysat_core.modalities import MODALITIES
from anysat_core.writers import FEATURES_NAME, grid_mapping_attrs, remove_path, replace_path, write_zarr

__all__ = ["OutputWriteError", "ScenePlan", "infer_scene", "plan_scene", "write_zarr"]

log = logging.getLogger(__name__)

_EPS = 1e-6
_PROGRESS_KEY = "anysat_progress"
_CARRY = "_anysat_carry{slot}_{kind}"  # overlap rows carried to the next strip
_COLS = "_anysat_cols{slot}_{kind}"  # overlap columns carried to the next panel


def _write_error(path: Path, e: OSError, what: str, work: Path | None = None) -> OutputWriteError:
    """:meth:`OutputWriteError.from_os_error`, saying whether a resumable partial store ``work`` was kept."""
    if work is not None and work.exists():
        left = (
            f"the finished strips are kept in {str(work)!r}: the same call resumes from there once the problem is "
            "fixed (resume=False, or deleting that folder, starts over)"
        )
    else:
        left = "nothing was written there"
    return OutputWriteError.from_os_error(path, e, what, left=left)


# ----------------------------------------------------------------------------------------------- window grid
@dataclass(frozen=True)
class _WindowGrid(SceneGrid):
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


def _is_multiple(x: float, unit: float) -> bool:
    q = x / unit
    return q >= 1 - _EPS and abs(q - round(q)) < _EPS


def _as_scene(scene_or_sources: Any, window_m: float, patch_size_m: float) -> RasterScene:
    if isinstance(scene_or_sources, RasterScene):
        return scene_or_sources
    if isinstance(scene_or_sources, RasterSource) or (
        isinstance(scene_or_sources, Sequence)
        and not isinstance(scene_or_sources, (str, bytes))
        and all(isinstance(s, RasterSource) for s in scene_or_sources)
    ):
        return open_rasters(scene_or_sources, tile_m=window_m, patch_m=patch_size_m)
    raise InputShapeError(
        f"infer_scene got a {type(scene_or_sources).__name__}; expected a RasterScene (from open_rasters) or "
        "RasterSource(s)"
    )


def _check_geometry(scene: RasterScene, patch_size_m: float, window_m: float, overlap_m: float) -> None:
    grid = scene.grid
    gridded = [m for m in scene.modalities if not MODALITIES[m].tile_token]
    step = math.lcm(*(MODALITIES[m].patch_step_m for m in gridded))
    for name, v in (("patch_size_m", patch_size_m), ("window_m", window_m), ("overlap_m", overlap_m)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise PatchSizeError(f"{name}={v!r}; expected a number of metres")
    if not (patch_size_m > 0 and _is_multiple(patch_size_m, step) and _is_multiple(patch_size_m, grid.unit)):
        raise PatchSizeError(
            f"patch_size_m={patch_size_m!r}; expected a positive multiple of {max(step, grid.unit):g} m for "
            f"{', '.join(gridded)}"
        )
    if not _is_multiple(window_m, patch_size_m):
        raise PatchSizeError(
            f"window_m={window_m!r} is not a multiple of patch_size_m={patch_size_m:g}; use e.g. "
            f"{', '.join(f'{patch_size_m * k:g}' for k in (6, 12, 24))}"
        )
    if overlap_m < 0 or overlap_m > window_m / 2 + _EPS or (
        overlap_m > 0 and not _is_multiple(overlap_m, patch_size_m)
    ):
        raise PatchSizeError(
            f"overlap_m={overlap_m!r}; expected 0 or a multiple of patch_size_m={patch_size_m:g} of at most "
            f"window_m / 2 = {window_m / 2:g} (so that windows stay aligned on the patch grid)"
        )


def _check_megabytes(name: str, value: Any, example: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        math.isfinite(value) and value > 0
    ):
        raise InputShapeError(f"{name}={value!r}; expected a positive number of megabytes, e.g. {example}")


def _cell_m(output: str, patch_size_m: float, output_modality: str) -> float:
    if output == "patch":
        return float(patch_size_m)
    mod = MODALITIES[output_modality]
    r = max(1, round(patch_size_m / (mod.token_m * mod.reduce_scale)))
    return float(patch_size_m) / r


def _window_scene(scene: RasterScene, window_m: float, stride_m: float) -> RasterScene:
    g = scene.grid
    left, bottom, right, top = g.data_bounds
    n_cols = 1 + max(0, math.ceil((right - left - window_m) / stride_m - _EPS))
    n_rows = 1 + max(0, math.ceil((top - bottom - window_m) / stride_m - _EPS))
    gsd = {m: (float(window_m) if MODALITIES[m].tile_token else g.gsd_m[m]) for m in scene.modalities}
    wgrid = _WindowGrid(
        crs=g.crs,
        data_bounds=g.data_bounds,
        unit=g.unit,
        tile_m=float(window_m),
        n_rows=n_rows,
        n_cols=n_cols,
        gsd_m=gsd,
        tile_px={m: int(round(window_m / v)) for m, v in gsd.items()},
        stride_m=float(stride_m),
    )
    return scene.with_grid(wgrid)


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
) -> ScenePlan:
    """The window layout and feature grid :func:`infer_scene` uses for ``scene`` (nothing is read or run).

    ``buffer_mb`` bounds the strip accumulator: panels get as many window columns as fit (at least one).

    Raises:
        PatchSizeError: sizes that do not fit (see :func:`infer_scene`).
        OutputError: an unknown ``output`` or ``output_modality``.
        InputShapeError: ``buffer_mb`` is not a positive number.
    """
    _check_megabytes("buffer_mb", buffer_mb, 16)
    if output not in ("patch", "dense"):
        raise OutputError(f"output={output!r}; infer_scene makes maps: use 'patch' or 'dense'")
    _check_geometry(scene, patch_size_m, window_m, overlap_m)
    om = output_modality or scene.modalities[0]
    if om not in scene.modalities or MODALITIES[om].tile_token:
        raise OutputError(
            f"output_modality={om!r}; expected one of the scene's gridded modalities "
            f"({', '.join(m for m in scene.modalities if not MODALITIES[m].tile_token)})"
        )
    cell = _cell_m(output, patch_size_m, om)
    stride_m = window_m - overlap_m
    wscene = _window_scene(scene, window_m, stride_m)
    wg = wscene.grid
    wc, sc, oc = (int(round(v / cell)) for v in (window_m, stride_m, overlap_m))
    left, bottom, right, top = scene.grid.data_bounds
    ny = math.ceil((top - bottom) / cell - _EPS)
    nx = math.ceil((right - left) / cell - _EPS)
    D = int(getattr(model, "embed_dim", 0)) * (2 if output == "dense" else 1)
    # accumulator (D floats) + weights + the divided output (D floats): 4 * (2 D + 1) bytes per buffer cell
    per_col = 4 * (2 * D + 1) * wc
    fit = int((buffer_mb * 2**20 // per_col - oc) // max(sc, 1))
    panel = max(1, min(wg.n_cols, fit))
    nxp = (panel - 1) * sc + wc
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
        buffer_shape=(D, wc, nxp),
    )


def _ramp(window_cells: int, overlap_cells: int) -> np.ndarray:
    """``(window_cells,)`` float32 weight: 1 inside, raised cosine over ``overlap_cells`` at both ends."""
    w = np.ones(window_cells, dtype=np.float64)
    if overlap_cells > 0:
        k = np.arange(overlap_cells)
        up = 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / overlap_cells)
        w[:overlap_cells] = up
        w[window_cells - overlap_cells :] = up[::-1]
    return w.astype(np.float32)


# ----------------------------------------------------------------------------------------------- model runners
def _local_runner(
    model: nn.Module, patch_size_m: float, output: str, om: str
) -> Callable[[list[list[Sample]]], list[np.ndarray]]:
    def run(batches: list[list[Sample]]) -> list[np.ndarray]:
        return [run_model(model, collate(b), patch_size_m, output, om).float().cpu().numpy() for b in batches]

    return run


_WORKER_MODELS: dict[str, nn.Module] = {}


def _model_payload(model: nn.Module, sha: str) -> dict[str, Any]:
    """What a worker needs to rebuild the model: config + state dict for AnySat, the module itself otherwise."""
    from anysat_core.model.anysat import AnySat

    if type(model) is AnySat:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {"sha": sha, "config": model.config.to_dict(), "state_dict": state}
    return {"sha": sha, "module": model}


def _worker_model(payload: dict[str, Any]) -> nn.Module:
    sha = payload["sha"]
    model = _WORKER_MODELS.get(sha)
    if model is None:
        if "module" in payload:
            model = payload["module"]
        else:
            from anysat_core.config import AnySatConfig
            from anysat_core.model.anysat import AnySat

            model = AnySat(config=AnySatConfig.from_dict(payload["config"]))
            model.load_state_dict(payload["state_dict"])
        model.eval()
        _WORKER_MODELS.clear()  # keep one model per worker
        _WORKER_MODELS[sha] = model
    return model


def _worker_run(payload: dict[str, Any], samples: list[Sample], patch_size_m: float, output: str, om: str) -> np.ndarray:
    """Runs on a dask worker: one batch of windows -> ``(B, h, w, D)`` float32."""
    model = _worker_model(payload)
    return run_model(model, collate(samples), patch_size_m, output, om).float().cpu().numpy()


@contextlib.contextmanager
def _dask_runner(
    client: Any, model: nn.Module, sha: str, patch_size_m: float, output: str, om: str
) -> Iterator[Callable[[list[list[Sample]]], list[np.ndarray]]]:
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - distributed is a dependency of this feature
        raise OutputError("client= needs the 'distributed' package (pip install distributed)") from e
    own = isinstance(client, str)
    cl = Client(client) if own else client
    try:
        payload = cl.scatter(_model_payload(model, sha), broadcast=True)

        def run(batches: list[list[Sample]]) -> list[np.ndarray]:
            futs = [cl.submit(_worker_run, payload, b, patch_size_m, output, om, pure=False) for b in batches]
            return list(cl.gather(futs))  # in submission order

        yield run
    finally:
        if own:
            cl.close()


# ----------------------------------------------------------------------------------------------- writers
class _MemoryWriter:
    """Keeps the whole feature grid in memory (``out=None``: small scenes only)."""

    def __init__(self, plan: ScenePlan, probe: bool) -> None:
        ny, nx = plan.grid_shape
        self.features = np.full((plan.n_features, ny, nx), np.nan, dtype=np.float32)
        self.prediction = np.full((ny, nx), -1, dtype=np.int16) if probe else None
        self.confidence = np.full((ny, nx), np.nan, dtype=np.float32) if probe else None
        oc = plan.overlap_cells if plan.n_panels > 1 else 0  # overlap columns carried between panels, if any
        self._cols = [
            (np.zeros((plan.n_features, ny, oc), np.float32), np.zeros((ny, oc), np.float32)) for _ in range(2)
        ]

    def start(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        return 0, None, None

    def write(self, y0: int, x0: int, feats: np.ndarray, pred: np.ndarray | None, conf: np.ndarray | None) -> None:
        h, w = feats.shape[1:]
        self.features[:, y0 : y0 + h, x0 : x0 + w] = feats
        if pred is not None and self.prediction is not None and self.confidence is not None:
            self.prediction[y0 : y0 + h, x0 : x0 + w] = pred
            self.confidence[y0 : y0 + h, x0 : x0 + w] = conf

    def read_cols(self, slot: int, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        s, w = self._cols[slot]
        return s[:, y0 : y0 + h], w[y0 : y0 + h]

    def write_cols(self, slot: int, y0: int, csum: np.ndarray, cw: np.ndarray) -> None:
        s, w = self._cols[slot]
        s[:, y0 : y0 + csum.shape[1]] = csum
        w[y0 : y0 + cw.shape[0]] = cw

    def commit(self, steps_done: int, carry_sum: np.ndarray | None, carry_w: np.ndarray | None) -> None:
        pass


def _chunks(plan: ScenePlan, max_features: int = 64) -> tuple[int, int, int]:
    """Zarr chunks ``(features, rows, cols)``: one strip of rows (each chunk is written by one strip only, so a
    resumed run rewrites whole chunks), the columns a panel finishes (panels never share a chunk), and at most
    ``max_features`` features (a reader of a few features, like the COG conversion, decodes only those)."""
    ny, nx = plan.grid_shape
    rows = max(1, min(ny, plan.stride_cells))
    cols = max(1, min(nx, plan.panel_windows * plan.stride_cells if plan.n_panels > 1 else nx))
    return max(1, min(plan.n_features, max_features)), rows, cols


class _ZarrWriter:
    """Streams finished rows into a partial Zarr store, with the resume state in its attributes."""

    def __init__(
        self,
        path: Path,
        plan: ScenePlan,
        attrs: dict[str, str],
        fingerprint: dict[str, Any],
        probe: bool,
        resume: bool,
    ) -> None:
        import zarr

        self.path = path
        self.plan = plan
        self.fingerprint = fingerprint
        self.probe = probe
        self._zarr = zarr
        state = self._existing_state() if resume else None
        if state is None:
            if path.exists():
                shutil.rmtree(path)
            self._create(attrs)
            self.done, self.slot = 0, 1
        else:
            self.done, self.slot = int(state["completed_strips"]), int(state["carry_slot"])
            log.info("resuming %s after %d finished strip(s)", path, self.done)
        self.group = zarr.open_group(str(path), mode="r+")

    def _existing_state(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            g = self._zarr.open_group(str(self.path), mode="r")
            state = dict(g.attrs.get(_PROGRESS_KEY) or {})
        except Exception as e:  # a partial store from a crash during creation: start again
            log.warning("ignoring unreadable partial output %s (%s); starting again", self.path, e)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.warning("partial output %s was made with other settings; starting again", self.path)
            return None
        return state

    def _create(self, attrs: dict[str, str]) -> None:
        import dask.array as dsa

        p = self.plan
        ny, nx = p.grid_shape
        a, _, c, _, e, f = p.transform
        chunks = _chunks(p)
        data_vars: dict[str, Any] = {
            FEATURES_NAME: (("feature", "y", "x"), dsa.full((p.n_features, ny, nx), np.nan, dtype=np.float32, chunks=chunks))
        }
        enc: dict[str, Any] = {FEATURES_NAME: {"chunks": chunks}}
        if self.probe:
            data_vars["prediction"] = (("y", "x"), dsa.full((ny, nx), -1, dtype=np.int16, chunks=chunks[1:]))
            data_vars["confidence"] = (("y", "x"), dsa.full((ny, nx), np.nan, dtype=np.float32, chunks=chunks[1:]))
            enc["prediction"] = {"chunks": chunks[1:], "fill_value": -1}
            enc["confidence"] = {"chunks": chunks[1:]}
        coords = {
            "feature": np.arange(p.n_features),
            "y": f + e * (np.arange(ny) + 0.5),
            "x": c + a * (np.arange(nx) + 0.5),
        }
        ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
        ds = ds.rio.write_crs(p.crs).rio.write_transform(Affine(*p.transform))
        for v in ds.data_vars:
            ds[v].attrs.update(attrs)
        ds = grid_mapping_attrs(ds)
        ds.attrs[_PROGRESS_KEY] = {"fingerprint": self.fingerprint, "completed_strips": 0, "carry_slot": 1}
        ds.to_zarr(str(self.path), mode="w", compute=False, encoding=enc, consolidated=False)
        if p.n_panels > 1 and p.overlap_cells > 0:  # overlap columns carried from one panel to the next
            g = self._zarr.open_group(str(self.path), mode="r+")
            oc, rows = p.overlap_cells, chunks[1]
            for slot in (0, 1):
                g.create_array(_COLS.format(slot=slot, kind="sum"), shape=(p.n_features, ny, oc), dtype="float32",
                               chunks=(p.n_features, rows, oc), fill_value=0.0)
                g.create_array(_COLS.format(slot=slot, kind="w"), shape=(ny, oc), dtype="float32",
                               chunks=(rows, oc), fill_value=0.0)

    def start(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        if self.done == 0:
            return 0, None, None
        s = self.group[_CARRY.format(slot=self.slot, kind="sum")][...]
        w = self.group[_CARRY.format(slot=self.slot, kind="w")][...]
        return self.done, np.asarray(s), np.asarray(w)

    def write(self, y0: int, x0: int, feats: np.ndarray, pred: np.ndarray | None, conf: np.ndarray | None) -> None:
        h, w = feats.shape[1:]
        self.group[FEATURES_NAME][:, y0 : y0 + h, x0 : x0 + w] = feats
        if self.probe and pred is not None:
            self.group["prediction"][y0 : y0 + h, x0 : x0 + w] = pred
            self.group["confidence"][y0 : y0 + h, x0 : x0 + w] = conf

    def read_cols(self, slot: int, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.group[_COLS.format(slot=slot, kind="sum")][:, y0 : y0 + h]
        w = self.group[_COLS.format(slot=slot, kind="w")][y0 : y0 + h]
        return np.asarray(s), np.asarray(w)

    def write_cols(self, slot: int, y0: int, csum: np.ndarray, cw: np.ndarray) -> None:
        self.group[_COLS.format(slot=slot, kind="sum")][:, y0 : y0 + csum.shape[1]] = csum
        self.group[_COLS.format(slot=slot, kind="w")][y0 : y0 + cw.shape[0]] = cw

    def commit(self, steps_done: int, carry_sum: np.ndarray | None, carry_w: np.ndarray | None) -> None:
        slot = 1 - self.slot
        if carry_sum is not None and carry_w is not None:
            for kind, arr in (("sum", carry_sum), ("w", carry_w)):
                self.group.create_array(
                    _CARRY.format(slot=slot, kind=kind), shape=arr.shape, dtype=arr.dtype, overwrite=True
                )[...] = arr
        self.group.attrs[_PROGRESS_KEY] = {
            "fingerprint": self.fingerprint,
            "completed_strips": steps_done,
            "carry_slot": slot,
        }
        self.done, self.slot = steps_done, slot

    def finish(self) -> None:
        """Drop the resume state and consolidate the metadata (the store is then a plain xarray Zarr store)."""
        for name in [n for n in self.group.array_keys() if n.startswith("_anysat_")]:
            del self.group[name]
        del self.group.attrs[_PROGRESS_KEY]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            self._zarr.consolidate_metadata(str(self.path))


def _zarr_to_cog(src: Path, dst: Path, attrs: dict[str, str], probe: bool, block_mb: float = 32.0) -> None:
    """Copy the features (and probe outputs) of the store ``src`` to a Cloud-Optimized GeoTIFF at ``dst``.

    A band-interleaved tiled GeoTIFF is written block by block (256 rows x 512 columns x as many features as fit in
    ``block_mb``) and gets internal overviews (average, down to one 256-pixel block); GDAL's GTiff driver then copies
    it with ``COPY_SRC_OVERVIEWS=YES`` (the COG layout: metadata and overviews first, DEFLATE tiles).  Everything is
    done band by band, so memory stays bounded by one block and GDAL's block cache whatever the scene size.  (GDAL's
    COG driver would write pixel-interleaved tiles, which makes it read a full-width row of blocks of every feature
    at once: memory growing with the scene width times the number of features.)
    """
    import rasterio
    import rasterio.enums
    import rasterio.shutil
    import zarr

    g = zarr.open_group(str(src), mode="r")
    feats = g[FEATURES_NAME]
    D, ny, nx = feats.shape
    count = D + (2 if probe else 0)
    sref = dict(g["spatial_ref"].attrs)
    crs = rasterio.crs.CRS.from_wkt(sref["crs_wkt"])
    transform = Affine.from_gdal(*(float(v) for v in sref["GeoTransform"].split()))
    rows, cols = 256, 512
    fit = max(1, int(block_mb * 2**20) // (4 * rows * cols))  # features per block within block_mb
    step = feats.chunks[0]  # features per Zarr chunk: read whole chunks when they fit, so none is decoded twice
    group = min(D, (fit // step) * step if fit >= step else fit)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".blocks.tif", dir=dst.parent)
    os.close(fd)
    try:
        profile = dict(
            driver="GTiff", width=nx, height=ny, count=count, dtype="float32", crs=crs, transform=transform,
            nodata=np.nan, tiled=True, blockxsize=256, blockysize=256, interleave="band", bigtiff="if_safer",
        )
        with rasterio.open(tmp, "w", **profile) as out:
            for y0 in range(0, ny, rows):
                y1 = min(ny, y0 + rows)
                for x0 in range(0, nx, cols):
                    x1 = min(nx, x0 + cols)
                    win = rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)
                    for b0 in range(0, D, group):
                        b1 = min(D, b0 + group)
                        out.write(np.asarray(feats[b0:b1, y0:y1, x0:x1]), indexes=list(range(b0 + 1, b1 + 1)), window=win)
                    if probe:
                        out.write(np.asarray(g["prediction"][y0:y1, x0:x1]).astype(np.float32), D + 1, window=win)
                        out.write(np.asarray(g["confidence"][y0:y1, x0:x1]), D + 2, window=win)
            out.update_tags(**attrs)
            for i in range(D):
                out.set_band_description(i + 1, str(i))
            if probe:
                out.set_band_description(D + 1, "prediction")
                out.set_band_description(D + 2, "confidence")
        factors, k = [], 2
        while math.ceil(max(nx, ny) / (k // 2)) > 256:  # the previous level does not fit in one block yet
            factors.append(k)
            k *= 2
        if factors:
            with rasterio.open(tmp, "r+") as out:
                out.build_overviews(factors, rasterio.enums.Resampling.average)
        rasterio.shutil.copy(
            tmp, str(dst), driver="GTiff", tiled=True, blockxsize=256, blockysize=256, interleave="band",
            compress="deflate", predictor=3, copy_src_overviews=True, bigtiff="if_safer",
        )
    finally:
        Path(tmp).unlink(missing_ok=True)


def _output_kind(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix in (".tif", ".tiff"):
        return "cog"
    raise OutputError(
        f"out={str(out)!r} has the suffix {suffix or '(none)'!r}; expected '.tif'/'.tiff' (Cloud-Optimized GeoTIFF) "
        "or '.zarr' (Zarr store)"
    )


# ----------------------------------------------------------------------------------------------- public API
def infer_scene(
    model: nn.Module,
    scene_or_sources: RasterScene | RasterSource | Sequence[RasterSource],
    *,
    patch_size_m: float,
    window_m: float,
    overlap_m: float,
    output: str = "dense",
    output_modality: str | None = None,
    batch_size: int = 4,
    normalize: Callable[[Sample], Sample] | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
    client: Any = None,
    probe: Any = None,
    callback: Callable[[int, int], None] | None = None,
    buffer_mb: float = 16.0,
    gdal_cache_mb: float = 64.0,
) -> Path | xr.DataArray | xr.Dataset:
    """Feature map of a whole scene with sliding, blended windows (see the module docstring).

    Args:
        model: an :class:`~anysat_core.AnySat` (run in eval mode under ``inference_mode``).
        scene_or_sources: a :class:`RasterScene` from :func:`open_rasters`, or RasterSource(s) (then opened with
            ``tile_m=window_m``).
        patch_size_m: patch side in metres (a multiple of the modalities' patch step).
        window_m: window side in metres, a multiple of ``patch_size_m``.
        overlap_m: overlap of neighbouring windows in metres: 0 or a multiple of ``patch_size_m``, at most
            ``window_m / 2``.
        output: ``"dense"`` (cells of the output modality's sub-patch, ``2D`` channels) or ``"patch"``.
        output_modality: modality of the dense sub-patches (default: the scene's first modality).
        batch_size: windows per forward pass (batches never span two strips).
        normalize: applied to every window sample before batching, e.g. a
            :class:`~anysat_core.data.normalize.Normalize`; the scene's values are raw file values.
        out: ``*.tif``/``*.tiff`` (Cloud-Optimized GeoTIFF) or ``*.zarr``; None returns the result in memory.
        overwrite: replace an existing ``out``.
        resume: continue a partial run of the same settings found beside ``out`` (False: start again).
        progress: show a tqdm progress bar over the windows.
        client: a ``distributed.Client`` or a scheduler address; None runs in this process.
        probe: a fitted classifier with ``predict_proba((N, D)) -> (N, K)`` (and optionally ``classes_``): adds
            per-cell ``prediction`` (class label, -1 where no data) and ``confidence`` (max probability).
        callback: called as ``callback(windows_done, windows_total)`` after every window of this call.
        buffer_mb: memory for the blending accumulator; wider scenes are processed in more panels (results are
            the same up to float rounding in the columns shared by two panels).
        gdal_cache_mb: GDAL block cache limit while reading and writing (GDAL's default is 5 % of the RAM).

    Returns:
        ``out`` as a Path when given; else a DataArray ``(feature, y, x)`` (a Dataset with ``anysat_features``,
        ``prediction`` and ``confidence`` when ``probe`` is given).

    Raises:
        PatchSizeError: sizes that do not fit the modalities or each other.
        OutputError: an unknown ``output``/``output_modality`` or an unsupported ``out`` suffix.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        OutputWriteError: the output cannot be written (read-only folder, full disk, invalid path); a partial
            store of the finished strips stays beside ``out`` so that a second call resumes.
        AnySatError subclasses from reading the rasters or running the model.
    """
    _check_megabytes("gdal_cache_mb", gdal_cache_mb, 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputShapeError(f"batch_size={batch_size!r}; expected a positive int")
    if output not in ("patch", "dense"):
        raise OutputError(f"output={output!r}; infer_scene makes maps: use 'patch' or 'dense'")
    scene = _as_scene(scene_or_sources, window_m, patch_size_m)
    plan = plan_scene(
        model, scene, patch_size_m=patch_size_m, window_m=window_m, overlap_m=overlap_m, output=output,
        output_modality=output_modality, buffer_mb=buffer_mb,
    )
    om = output_modality or scene.modalities[0]
    wscene = _window_scene(scene, window_m, window_m - overlap_m)
    attrs = provenance_attrs(
        model, patch_size_m=patch_size_m, output=output, output_modality=om, modalities=scene.modalities
    )
    sha = attrs["checkpoint"]
    attrs |= {
        "window_m": f"{float(window_m):g}",
        "overlap_m": f"{float(overlap_m):g}",
        "blending": "raised-cosine ramp over the overlap, weighted mean",
        "crs": plan.crs,
    }
    if probe is not None:
        attrs["probe"] = type(probe).__name__

    # ------------------------------------------------------------------ output
    out_path = Path(out) if out is not None else None
    work: Path | None = None
    if out_path is not None:
        kind = _output_kind(out_path)
        if (out_path.exists() or out_path.is_symlink()) and not overwrite:
            raise OutputExistsError(
                f"{str(out_path)!r} exists already; pass overwrite=True to replace it, or choose another path"
            )
        if out_path.is_dir() and kind == "cog":
            raise OutputExistsError(f"{str(out_path)!r} is a folder; pass the path of a .tif file")
        work = out_path.with_name(f".{out_path.name}.partial.zarr")
        fingerprint = {
            "attrs": attrs,
            "grid": list(plan.grid_shape),
            "transform": list(plan.transform),
            "window_grid": [plan.n_rows, plan.n_cols],
            "panel_windows": plan.panel_windows,
            "batch_size": int(batch_size),
            "normalize": type(normalize).__qualname__ if normalize is not None else None,
        }
        existed = work.exists()
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            writer: _MemoryWriter | _ZarrWriter = _ZarrWriter(
                work, plan, attrs, fingerprint, probe is not None, resume
            )
        except OSError as e:
            if work.exists() and not (existed and resume):  # a store being created holds nothing worth keeping
                remove_path(work)
            raise _write_error(out_path, e, "create the output", work) from e
    else:
        kind = "memory"
        writer = _MemoryWriter(plan, probe is not None)

    # ------------------------------------------------------------------ run
    runner_cm = (
        _dask_runner(client, model, sha, patch_size_m, output, om)
        if client is not None
        else contextlib.nullcontext(_local_runner(model, patch_size_m, output, om))
    )
    import rasterio

    def gdal_env() -> rasterio.Env:
        return rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb * 2**20))  # in bytes

    try:
        with gdal_env(), runner_cm as runner:
            _stream(wscene, plan, runner, writer, batch_size, normalize, probe, progress, callback)
    except OSError as e:
        if isinstance(e, AnySatError):
            raise
        raise _write_error(out_path or Path("."), e, "write the output", work) from e

    # ------------------------------------------------------------------ finish
    if isinstance(writer, _MemoryWriter):
        ny, nx = plan.grid_shape
        a, _, c, _, e_, f = plan.transform
        coords = {"feature": np.arange(plan.n_features), "y": f + e_ * (np.arange(ny) + 0.5), "x": c + a * (np.arange(nx) + 0.5)}
        da = xr.DataArray(writer.features, dims=("feature", "y", "x"), coords=coords, name=FEATURES_NAME, attrs=attrs)
        da = da.rio.write_crs(plan.crs).rio.write_transform(Affine(*plan.transform))
        if probe is None:
            return da
        ds = xr.Dataset(
            {
                FEATURES_NAME: da,
                "prediction": (("y", "x"), writer.prediction, attrs),
                "confidence": (("y", "x"), writer.confidence, attrs),
            },
            attrs=attrs,
        )
        return ds
    assert out_path is not None and work is not None and isinstance(writer, _ZarrWriter)
    try:
        if kind == "zarr":
            writer.finish()
            replace_path(work, out_path, overwrite)
        else:  # convert from the partial store, which keeps its resume state until the COG is in place
            fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".cog.tmp", dir=out_path.parent)
            os.close(fd)
            try:
                with gdal_env():
                    _zarr_to_cog(work, Path(tmp), attrs, probe is not None)
                replace_path(Path(tmp), out_path, overwrite)
            finally:
                Path(tmp).unlink(missing_ok=True)
            remove_path(work)
    except OSError as e:
        if isinstance(e, AnySatError):
            raise
        raise _write_error(out_path, e, "finish the output", work) from e
    return out_path


#: batches of windows read and run together: bounds the inputs held in memory whatever the scene width
_INFLIGHT = 4


def _stream(
    wscene: RasterScene,
    plan: ScenePlan,
    runner: Callable[[list[list[Sample]]], list[np.ndarray]],
    writer: _MemoryWriter | _ZarrWriter,
    batch_size: int,
    normalize: Callable[[Sample], Sample] | None,
    probe: Any,
    progress: bool,
    callback: Callable[[int, int], None] | None,
) -> None:
    """Process panels, and strips inside a panel, from the writer's resume point; see the module docstring.

    Progress counts *steps*: step ``p * n_rows + r`` is strip ``r`` of panel ``p``.
    """
    from tqdm.auto import tqdm

    D, wc, _ = plan.buffer_shape
    sc, oc = plan.stride_cells, plan.overlap_cells
    ny, nx = plan.grid_shape
    ramp = _ramp(wc, oc)
    w2d = ramp[:, None] * ramp[None, :]  # (wc, wc)
    step0, carry_sum, carry_w = writer.start()
    p0, r0 = divmod(step0, plan.n_rows)
    if r0 == 0:  # a panel starts afresh: nothing carried over rows
        carry_sum = carry_w = None
    total = plan.n_windows
    # windows already done: all rows of the columns of the finished panels, and r0 strips of panel p0
    c0 = min(plan.n_cols, p0 * plan.panel_windows)
    before = plan.n_rows * c0 + r0 * (min(plan.n_cols, c0 + plan.panel_windows) - c0)
    done = 0
    classes = getattr(probe, "classes_", None)
    bar = tqdm(total=total, initial=before, disable=not progress, desc="windows", unit="win")
    try:
        for p in range(p0, plan.n_panels):
            c0, c1 = plan.panel_cols(p)
            px0, px1 = plan.panel_span(p)  # grid columns this panel finishes
            pw = (c1 - c0 - 1) * sc + wc  # accumulator width
            acc = np.zeros((D, wc, pw), dtype=np.float32)  # weighted sums of one strip of this panel
            wsum = np.zeros((wc, pw), dtype=np.float32)  # weights
            fin = np.empty((D, wc, px1 - px0), dtype=np.float32)  # divided output
            last_panel = p == plan.n_panels - 1
            for r in range(r0 if p == p0 else 0, plan.n_rows):
                acc.fill(0.0)
                wsum.fill(0.0)
                if carry_sum is not None and carry_w is not None and oc > 0:
                    acc[:, :oc] = carry_sum
                    wsum[:oc] = carry_w

                # read the strip's windows lazily, a few batches at a time (batches never cross strips, so a
                # resumed run batches every window as an uninterrupted one): at most _INFLIGHT batches of inputs
                def strip_batches(r: int = r, c0: int = c0, c1: int = c1):  # noqa: ANN202 - generator of batches
                    cols: list[int] = []
                    samples: list[Sample] = []
                    for c in range(c0, c1):
                        try:
                            s = wscene.tile(r, c)
                        except EmptyTileError:
                            continue
                        cols.append(c)
                        samples.append(normalize(s) if normalize is not None else s)
                        if len(samples) == batch_size:
                            yield cols, samples
                            cols, samples = [], []
                    if samples:
                        yield cols, samples

                n_seen = 0
                pending: list[tuple[list[int], list[Sample]]] = []
                batch_iter = strip_batches()
                while True:
                    nxt = next(batch_iter, None)
                    if nxt is not None:
                        pending.append(nxt)
                    if pending and (nxt is None or len(pending) == _INFLIGHT):
                        outs = runner([b for _, b in pending])
                        for (cols, _), out in zip(pending, outs):
                            for c, f in zip(cols, out):  # f: (h, w, D)
                                if f.shape[:2] != (wc, wc) or f.shape[2] != D:
                                    raise RuntimeError(
                                        f"internal: window output {f.shape} does not match the plan {(wc, wc, D)}"
                                    )
                                x0 = (c - c0) * sc
                                acc[:, :, x0 : x0 + wc] += np.moveaxis(f, -1, 0) * w2d
                                wsum[:, x0 : x0 + wc] += w2d
                                done += 1
                                n_seen += 1
                                bar.update(1)
                                if callback is not None:
                                    callback(done, total)
                        pending = []
                    if nxt is None:
                        break
                bar.update((c1 - c0) - n_seen)
                # rows finished by this strip: the stride rows (all of the window rows for the last strip)
                last = r == plan.n_rows - 1
                y0 = r * sc
                n_out = max(0, min(wc if last else sc, ny - y0))
                if n_out > 0:
                    if p > 0 and oc > 0:  # the previous panel's share of the shared overlap columns
                        csum, cw = writer.read_cols(p % 2, y0, n_out)
                        acc[:, :n_out, :oc] += csum
                        wsum[:n_out, :oc] += cw
                    if not last_panel and oc > 0:  # this panel's share, for the next panel
                        xr0 = (c1 - c0) * sc
                        writer.write_cols((p + 1) % 2, y0, acc[:, :n_out, xr0 : xr0 + oc], wsum[:n_out, xr0 : xr0 + oc])
                    w = wsum[:n_out, : px1 - px0]
                    out = fin[:, :n_out]
                    out.fill(np.nan)
                    np.divide(acc[:, :n_out, : px1 - px0], w, out=out, where=w > 0)
                    pred = conf = None
                    if probe is not None:
                        pred, conf = _apply_probe(probe, classes, out)
                    writer.write(y0, px0, out, pred, conf)
                carry_sum = None if last else acc[:, sc : sc + oc].copy()
                carry_w = None if last else wsum[sc : sc + oc].copy()
                writer.commit(p * plan.n_rows + r + 1, carry_sum, carry_w)
            del acc, wsum, fin
    finally:
        bar.close()


def _apply_probe(probe: Any, classes: Any, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell class and confidence of ``feats`` ``(D, h, w)``: int16 ``(h, w)`` (-1: no data), float32 ``(h, w)``."""
    D, h, w = feats.shape
    X = feats.reshape(D, -1).T  # (N, D)
    ok = np.isfinite(X).all(axis=1)
    pred = np.full(h * w, -1, dtype=np.int16)
    conf = np.full(h * w, np.nan, dtype=np.float32)
    if ok.any():
        proba = np.asarray(probe.predict_proba(X[ok]))
        idx = proba.argmax(axis=1)
        labels = np.asarray(classes)[idx] if classes is not None else idx
        pred[ok] = labels.astype(np.int16)
        conf[ok] = proba.max(axis=1).astype(np.float32)
    return pred.reshape(h, w), conf.reshape(h, w)


