"""Where the finished rows of a scene go: memory (``out=None``) or a partial Zarr store with the resume state.

Both sinks take, from the streaming loop (:mod:`anysat_core.inference.stream`):

* ``start()``: ``(steps_done, carry_sum, carry_w)`` to resume from (``0, None, None`` for a fresh run);
* ``write(y0, x0, feats (D, h, w), valid (h, w), prediction (h, w) | None, confidence (h, w) | None)``: finished
  cells and their valid fraction;
* ``read_cols(slot, y0, h)`` / ``write_cols(slot, y0, csum (D, h, oc), cw (2, h, oc))``: the weighted sums and the
  weights (with the weighted valid fractions) of the ``overlap`` columns a panel shares with the next one (two slots,
  alternating from panel to panel);
* ``commit(steps_done, carry_sum (D, oc, panel_width) | None, carry_w (2, oc, panel_width) | None)``: a strip is
  finished; the ``overlap`` rows carried to the next strip are recorded with it.

The Zarr sink keeps the resume state in the store's attributes (``anysat_progress``: the settings fingerprint, the
number of finished steps and the slot of the carried rows) and the carried rows/columns in ``_anysat_*`` arrays; the
carried rows alternate between two slots, so a crash in the middle of a commit never corrupts the last committed
state.  :meth:`ZarrSink.finish` drops all of that, leaving a plain xarray Zarr store.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import xarray as xr
from affine import Affine

from anysat_core.features import VALID_FRACTION, valid_fraction_coord
from anysat_core.inference.plan import ScenePlan, grid_coords
from anysat_core.writers import FEATURES_NAME, grid_mapping_attrs

if TYPE_CHECKING:
    import zarr

log = logging.getLogger("anysat_core.inference")

_PROGRESS_KEY = "anysat_progress"
_CARRY = "_anysat_carry{slot}_{kind}"  # overlap rows carried to the next strip
_COLS = "_anysat_cols{slot}_{kind}"  # overlap columns carried to the next panel


def georeferenced(ds: xr.DataArray | xr.Dataset, plan: ScenePlan) -> Any:
    """``ds`` with the plan's CRS and transform written by rioxarray."""
    return ds.rio.write_crs(plan.crs).rio.write_transform(Affine(*plan.transform))


class MemorySink:
    """Keeps the whole feature grid in memory (``out=None``: small scenes only)."""

    def __init__(self, plan: ScenePlan, probe: bool, min_valid_fraction: float = 0.0) -> None:
        self.plan = plan
        self.min_valid_fraction = min_valid_fraction
        ny, nx = plan.grid_shape
        self.features = np.full((plan.n_features, ny, nx), np.nan, dtype=np.float32)
        self.valid = np.zeros((ny, nx), dtype=np.float32)
        self.prediction = np.full((ny, nx), -1, dtype=np.int16) if probe else None
        self.confidence = np.full((ny, nx), np.nan, dtype=np.float32) if probe else None
        oc = plan.overlap_cells if plan.n_panels > 1 else 0  # overlap columns carried between panels, if any
        self._cols = [
            (np.zeros((plan.n_features, ny, oc), np.float32), np.zeros((2, ny, oc), np.float32)) for _ in range(2)
        ]

    def start(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        return 0, None, None

    def write(
        self,
        y0: int,
        x0: int,
        feats: np.ndarray,
        valid: np.ndarray,
        pred: np.ndarray | None,
        conf: np.ndarray | None,
    ) -> None:
        h, w = feats.shape[1:]
        self.features[:, y0 : y0 + h, x0 : x0 + w] = feats
        self.valid[y0 : y0 + h, x0 : x0 + w] = valid
        if pred is not None and self.prediction is not None and self.confidence is not None:
            self.prediction[y0 : y0 + h, x0 : x0 + w] = pred
            self.confidence[y0 : y0 + h, x0 : x0 + w] = conf

    def read_cols(self, slot: int, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        s, w = self._cols[slot]
        return s[:, y0 : y0 + h], w[:, y0 : y0 + h]

    def write_cols(self, slot: int, y0: int, csum: np.ndarray, cw: np.ndarray) -> None:
        s, w = self._cols[slot]
        s[:, y0 : y0 + csum.shape[1]] = csum
        w[:, y0 : y0 + cw.shape[1]] = cw

    def commit(self, steps_done: int, carry_sum: np.ndarray | None, carry_w: np.ndarray | None) -> None:
        pass

    def result(self, attrs: dict[str, str]) -> xr.DataArray | xr.Dataset:
        """DataArray ``(feature, y, x)`` with the ``valid_fraction`` ``(y, x)`` coordinate; a Dataset with
        ``prediction`` and ``confidence`` too with a probe."""
        coords: dict[str, Any] = {
            **grid_coords(self.plan),
            VALID_FRACTION: valid_fraction_coord(self.valid, self.min_valid_fraction),
        }
        da = xr.DataArray(self.features, dims=("feature", "y", "x"), coords=coords, name=FEATURES_NAME, attrs=attrs)
        da = georeferenced(da, self.plan)
        if self.prediction is None:
            return da
        return xr.Dataset(
            {
                FEATURES_NAME: da,
                "prediction": (("y", "x"), self.prediction, attrs),
                "confidence": (("y", "x"), self.confidence, attrs),
            },
            attrs=attrs,
        )


def _chunks(plan: ScenePlan, max_features: int = 64) -> tuple[int, int, int]:
    """Zarr chunks ``(features, rows, cols)``: one strip of rows (each chunk is written by one strip only, so a
    resumed run rewrites whole chunks), the columns a panel finishes (panels never share a chunk), and at most
    ``max_features`` features (a reader of a few features, like the COG conversion, decodes only those)."""
    ny, nx = plan.grid_shape
    rows = max(1, min(ny, plan.stride_cells))
    cols = max(1, min(nx, plan.panel_windows * plan.stride_cells if plan.n_panels > 1 else nx))
    return max(1, min(plan.n_features, max_features)), rows, cols


class ZarrSink:
    """Streams finished rows into a partial Zarr store, with the resume state in its attributes.

    Args:
        path: the partial store (created, or reused when ``resume`` and its fingerprint matches).
        fingerprint: JSON-able settings of the run; a store made with other settings is started again.
    """

    def __init__(
        self,
        path: Path,
        plan: ScenePlan,
        attrs: dict[str, str],
        fingerprint: dict[str, Any],
        probe: bool,
        resume: bool,
        min_valid_fraction: float = 0.0,
    ) -> None:
        import zarr

        self.min_valid_fraction = min_valid_fraction
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
            state = dict(cast("Mapping[str, Any]", g.attrs.get(_PROGRESS_KEY) or {}))  # not a mapping: TypeError
        except Exception as e:  # noqa: BLE001 - any unreadable store (crash during creation): start again
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
        chunks = _chunks(p)
        data_vars: dict[str, Any] = {
            FEATURES_NAME: (
                ("feature", "y", "x"),
                dsa.full((p.n_features, ny, nx), np.nan, dtype=np.float32, chunks=chunks),
            )
        }
        enc: dict[str, Any] = {FEATURES_NAME: {"chunks": chunks}}
        if self.probe:
            data_vars["prediction"] = (("y", "x"), dsa.full((ny, nx), -1, dtype=np.int16, chunks=chunks[1:]))
            data_vars["confidence"] = (("y", "x"), dsa.full((ny, nx), np.nan, dtype=np.float32, chunks=chunks[1:]))
            enc["prediction"] = {"chunks": chunks[1:], "fill_value": -1}
            enc["confidence"] = {"chunks": chunks[1:]}
        vf = valid_fraction_coord(np.zeros((0, 0), np.float32), self.min_valid_fraction)
        coords: dict[str, Any] = {
            **grid_coords(p),
            VALID_FRACTION: (("y", "x"), dsa.zeros((ny, nx), dtype=np.float32, chunks=chunks[1:]), vf.attrs),
        }
        enc[VALID_FRACTION] = {"chunks": chunks[1:], "fill_value": 0.0}
        ds = georeferenced(xr.Dataset(data_vars, coords=coords, attrs=attrs), p)
        for v in ds.data_vars:
            ds[v].attrs.update(attrs)
        ds = grid_mapping_attrs(ds)
        ds.attrs[_PROGRESS_KEY] = {"fingerprint": self.fingerprint, "completed_strips": 0, "carry_slot": 1}
        ds.to_zarr(str(self.path), mode="w", compute=False, encoding=enc, consolidated=False)
        if p.n_panels > 1 and p.overlap_cells > 0:  # overlap columns carried from one panel to the next
            g = self._zarr.open_group(str(self.path), mode="r+")
            oc, rows = p.overlap_cells, chunks[1]
            for slot in (0, 1):
                g.create_array(
                    _COLS.format(slot=slot, kind="sum"),
                    shape=(p.n_features, ny, oc),
                    dtype="float32",
                    chunks=(p.n_features, rows, oc),
                    fill_value=0.0,
                )
                g.create_array(
                    _COLS.format(slot=slot, kind="w"),
                    shape=(2, ny, oc),
                    dtype="float32",
                    chunks=(2, rows, oc),
                    fill_value=0.0,
                )

    def _array(self, name: str) -> zarr.Array:
        """The array ``name`` of the store (every member read or written here is an array)."""
        return cast("zarr.Array", self.group[name])

    def start(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        if self.done == 0:
            return 0, None, None
        s = self._array(_CARRY.format(slot=self.slot, kind="sum"))[...]
        w = self._array(_CARRY.format(slot=self.slot, kind="w"))[...]
        return self.done, np.asarray(s), np.asarray(w)

    def write(
        self,
        y0: int,
        x0: int,
        feats: np.ndarray,
        valid: np.ndarray,
        pred: np.ndarray | None,
        conf: np.ndarray | None,
    ) -> None:
        h, w = feats.shape[1:]
        self._array(FEATURES_NAME)[:, y0 : y0 + h, x0 : x0 + w] = feats
        self._array(VALID_FRACTION)[y0 : y0 + h, x0 : x0 + w] = valid
        if self.probe and pred is not None:
            assert conf is not None  # apply_probe gives both
            self._array("prediction")[y0 : y0 + h, x0 : x0 + w] = pred
            self._array("confidence")[y0 : y0 + h, x0 : x0 + w] = conf

    def read_cols(self, slot: int, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._array(_COLS.format(slot=slot, kind="sum"))[:, y0 : y0 + h]
        w = self._array(_COLS.format(slot=slot, kind="w"))[:, y0 : y0 + h]
        return np.asarray(s), np.asarray(w)

    def write_cols(self, slot: int, y0: int, csum: np.ndarray, cw: np.ndarray) -> None:
        self._array(_COLS.format(slot=slot, kind="sum"))[:, y0 : y0 + csum.shape[1]] = csum
        self._array(_COLS.format(slot=slot, kind="w"))[:, y0 : y0 + cw.shape[1]] = cw

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
