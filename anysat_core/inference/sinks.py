"""Where the finished rows of a scene go: memory (``out=None``) or a partial Zarr store with its resume state.

Both sinks take, from the streaming loop (:mod:`anysat_core.inference.stream`):

* ``start()``: ``(steps_done, carry_sum, carry_w)`` to resume from (``0, None, None`` for a fresh run or at the start
  of a panel);
* ``write(y0, x0, feats (D, h, w), valid (h, w), prediction (h, w) | None, confidence (h, w) | None)``: finished
  cells and their valid fraction;
* ``read_cols(panel, y0, h)`` / ``write_cols(panel, y0, csum (D, h, oc), cw (2, h, oc))``: the weighted sums and the
  weights (with the weighted valid fractions) of the ``overlap`` columns on the left edge of ``panel``, written by
  the panel before it;
* ``commit(steps_done, carry_sum (D, oc, panel_width) | None, carry_w (2, oc, panel_width) | None)``: a strip is
  finished; the ``overlap`` rows carried to the next strip are recorded with it.

**The partial output** of ``out`` (:func:`partial_paths`) lies beside it:

* ``.<name>.partial.zarr``: the Zarr store being filled (xarray layout, as the final one);
* ``.<name>.partial.zarr/_anysat_resume/``: the resume state (a folder Zarr and xarray ignore), every file written
  under a temporary name and renamed:
  ``state.json`` (the run's fingerprint, the number of finished steps, the carried rows' file and its size and
  checksum, the phase), ``step_<k>.json`` (size and CRC-32 of every chunk file step ``k`` wrote, and of its carried
  columns), ``rows_<k>.npy`` (the rows carried after step ``k``, named by the step, so the file the state points
  to is never overwritten), ``cols_<panel>_<y0>.npy`` (the columns carried into a panel, kept until the end);
* ``.<name>.lock``: held (``flock``) by the run writing ``out``, with its pid and host.

A commit writes the carried rows, then the step's record, then ``state.json`` (atomically: that is the commit), then
removes older carried rows; a kill at any point leaves the last committed state whole.  ``state.json`` is also the
last file written when the store is created: without it the store is unfinished and is made again.  On resume the
fingerprint must match (:func:`~anysat_core.inference.fingerprint.check_same_run`), and every finished chunk is
checked against its record: a truncated, deleted or altered chunk (or carried file) sends the run back to the start
of the panel that wrote it (each panel starts from the columns carried into it, which are kept), so the damaged
strips are computed again.  Every chunk is written whole by one strip, so a strip computed again writes the same
bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import json
import logging
import os
import re
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import xarray as xr
from affine import Affine

from anysat_core.errors import OutputLockedError, ResumeMismatchError
from anysat_core.features import VALID_FRACTION, valid_fraction_coord
from anysat_core.inference.fingerprint import check_same_run
from anysat_core.inference.plan import ScenePlan, grid_coords
from anysat_core.writers import FEATURES_NAME, grid_mapping_attrs, remove_path

if TYPE_CHECKING:
    import zarr

log = logging.getLogger("anysat_core.inference")

_STATE = "state.json"
_STATE_VERSION = 2
_TMP = ".tmp-"  # prefix of the resume folder's temporary files
_ZARR_TMP = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr's own temporary chunk files (zarr.storage.LocalStore)

#: ``hook(point, step)``: a test hook called at each point of the bookkeeping (tests kill the process there)
Hook = Callable[[str, int], None]


def _no_hook(point: str, step: int) -> None:
    pass


#: the resume folder inside a partial store (and, for a moment, inside a finished Zarr output)
RESUME_DIR = "_anysat_resume"


def partial_paths(out: Path) -> tuple[Path, Path, Path]:
    """``(store, resume folder, lock file)`` of the partial output of ``out`` (the store and the lock beside it, the
    resume folder inside the store)."""
    store = out.with_name(f".{out.name}.partial.zarr")
    return store, store / RESUME_DIR, out.with_name(f".{out.name}.lock")


def remove_stale_temporaries(out: Path) -> None:
    """Remove the temporary files a killed run left beside ``out`` (COG conversion, replaced outputs); call it only
    while holding the output's lock."""
    name = out.name
    for pattern in (f".{name}.*.cog.tmp", f"..{name}.*.cog.tmp.*.blocks.tif", f".{name}.old-*"):
        for p in out.parent.glob(pattern):
            remove_path(p)


def _identity(path: Path) -> list[int] | None:
    """``[inode, size, mtime_ns]`` of ``path`` (not followed), None when absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _check(path: Path) -> list[int] | None:
    """``[size, CRC-32]`` of a file, None when absent."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return [len(data), zlib.crc32(data)]


def _atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename it (the file is whole or absent)."""
    tmp = path.with_name(f"{_TMP}{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    _atomic_bytes(path, buf.getvalue())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_state(rdir: Path) -> dict[str, Any] | None:
    """The committed state of a resume folder; None when there is none (never created whole) or it is unreadable."""
    state = _read_json(rdir / _STATE)
    if state is None or state.get("version") != _STATE_VERSION or not isinstance(state.get("fingerprint"), dict):
        return None
    return state


class OutputLock:
    """The lock of an output: ``flock`` on ``.<name>.lock`` beside it, holding the holder's pid, host and start time.

    The kernel drops the lock when its process ends, however it ends, so the lock of a killed run is taken over by
    the next one; the file is removed when the lock is released.

    Raises:
        OutputLockedError: (on entering) another live process holds it; the message names the output and the holder.
        OSError: the lock file cannot be created (the caller reports it as an OutputWriteError).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = partial_paths(out)[2]
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:  # noqa: PYI034 - a final class
        self.out.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{str(self.out)!r} is being written by another run ({holder}; lock file {str(self.path)!r}); "
                    "wait for it to finish, or write to another path"
                ) from None
            except OSError as e:  # a file system without locks: run unlocked rather than not at all
                log.warning("cannot lock %s (%s); running without a lock", self.path, e)
                self.fd = fd
                return self
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the holder removed the file between our open and our lock: try again
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not written its name yet"

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


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

    def read_cols(self, panel: int, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        s, w = self._cols[panel % 2]  # two slots: a panel reads what the previous one wrote
        return s[:, y0 : y0 + h], w[:, y0 : y0 + h]

    def write_cols(self, panel: int, y0: int, csum: np.ndarray, cw: np.ndarray) -> None:
        s, w = self._cols[panel % 2]
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
    """Streams finished rows into the partial store of ``out`` with a crash-consistent resume state (see the module
    docstring); the caller holds the output's :class:`OutputLock`.

    Args:
        out: the final output path (the partial output lies beside it, :func:`partial_paths`).
        fingerprint: :func:`~anysat_core.inference.fingerprint.run_fingerprint` of the run.
        resume: continue a partial output of the same fingerprint (False: start over).
        overwrite: start over, rather than refuse, when the partial output is of another run.
        hook: a test hook called at each bookkeeping point (``_crash_hook`` of ``infer_scene``).

    Raises:
        ResumeMismatchError: ``resume`` and ``not overwrite`` and the partial output is of another run.
    """

    def __init__(
        self,
        out: Path,
        plan: ScenePlan,
        attrs: dict[str, str],
        fingerprint: dict[str, str],
        *,
        probe: bool,
        resume: bool,
        overwrite: bool = False,
        min_valid_fraction: float = 0.0,
        hook: Hook | None = None,
    ) -> None:
        import zarr

        self._zarr = zarr
        self.path, self.rdir, _ = partial_paths(out)
        self.plan, self.fingerprint, self.probe = plan, fingerprint, probe
        self.min_valid_fraction = min_valid_fraction
        self.hook: Hook = hook or _no_hook
        self._touched: dict[str, None] = {}  # chunk files (relative to the store) written by the current step
        self._files: list[str] = []  # resume files written by the current step (carried columns)
        state = read_state(self.rdir) if resume else None
        if resume and state is None and (self.path.exists() or self.rdir.exists()):
            log.warning(
                "partial output %s has no committed state (its creation did not finish); starting over", self.path
            )
        if state is not None:
            try:
                check_same_run(state["fingerprint"], fingerprint, [self.path])
            except ResumeMismatchError as e:
                if not overwrite:
                    raise
                log.warning("overwrite=True: discarding the partial output of another run (%s)", e)
                state = None
        if state is not None:
            try:
                self.group = zarr.open_group(str(self.path), mode="r+")
                for name in self._names():
                    self._array(name)
            except Exception as e:  # noqa: BLE001 - a store whose metadata is damaged holds nothing to trust
                log.warning("partial output %s cannot be opened (%s); starting over", self.path, e)
                state = None
        if state is None:
            self._create(attrs)
            self.done, self.rows = 0, None
        else:
            self._remove_temporaries()
            self.done, self.rows = self._verify(state)
            log.info("resuming %s after %d finished step(s)", self.path, self.done)
        self.group = zarr.open_group(str(self.path), mode="r+")

    # ----------------------------------------------------------------------------------------- creation
    def _names(self) -> list[str]:
        return [FEATURES_NAME, VALID_FRACTION] + (["prediction", "confidence"] if self.probe else [])

    def _create(self, attrs: dict[str, str]) -> None:
        import dask.array as dsa

        remove_path(self.path)
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
        ds.to_zarr(str(self.path), mode="w", compute=False, encoding=enc, consolidated=False)
        self.rdir.mkdir()
        self.hook("create:store", 0)
        self._write_state(0, None)  # the marker: written last, the store is whole

    # ----------------------------------------------------------------------------------------- resume
    def _write_state(
        self, done: int, rows: dict[str, Any] | None, phase: str = "running", out_before: list[int] | None = None
    ) -> None:
        state = {
            "version": _STATE_VERSION,
            "fingerprint": self.fingerprint,
            "steps_done": done,
            "rows": rows,
            "phase": phase,
            "out_before": out_before,
        }
        _atomic_bytes(self.rdir / _STATE, json.dumps(state, indent=1).encode())

    def _remove_temporaries(self) -> None:
        """Temporary files of a killed run: zarr's half-written chunks and this sink's own."""
        for root, _, names in os.walk(self.path):
            for name in names:
                if _ZARR_TMP.search(name):
                    os.unlink(os.path.join(root, name))
        for tmp in self.rdir.glob(f"{_TMP}*"):
            tmp.unlink(missing_ok=True)

    def _damage(self, k: int) -> str | None:
        """What is damaged among the files step ``k`` wrote (None: all as recorded)."""
        record = _read_json(self.rdir / f"step_{k}.json")
        if record is None:
            return f"the record of step {k} ({str(self.rdir / f'step_{k}.json')!r}) is missing or unreadable"
        for base, entries in ((self.path, record.get("chunks", {})), (self.rdir, record.get("files", {}))):
            for rel, want in entries.items():
                got = _check(base / rel)
                if got != want:
                    how = "missing" if got is None else f"{got[0]} bytes" if want and got[0] != want[0] else "altered"
                    return f"{str(base / rel)!r} is {how} (recorded: {want[0] if want else 'absent'} bytes)"
        return None

    def _verify(self, state: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """``(steps_done, carried rows)`` to resume from: the committed state, or the start of the first panel
        with a damaged chunk or carried file (then committed as the new state)."""
        n_rows = self.plan.n_rows
        done = int(state["steps_done"])
        rows = state.get("rows")
        restart, why = done, ""
        for k in range(1, done + 1):
            bad = self._damage(k)
            if bad is not None:
                restart, why = ((k - 1) // n_rows) * n_rows, f"{bad}, written by step {k}"
                break
        needs_rows = restart == done and done % n_rows > 0  # the next strip starts from the carried rows
        if needs_rows and (
            not isinstance(rows, dict) or _check(self.rdir / str(rows.get("file"))) != [rows["size"], rows["crc"]]
        ):
            restart, why = (done // n_rows) * n_rows, f"the rows carried after step {done} are damaged"
        if restart == done:
            return done, rows
        log.warning(
            "%s: %s; computing again from step %d (the start of panel %d)", self.path, why, restart, restart // n_rows
        )
        self._write_state(restart, None)
        return restart, None

    # ----------------------------------------------------------------------------------------- the stream's calls
    def _array(self, name: str) -> zarr.Array:
        """The array ``name`` of the store (every member read or written here is an array)."""
        return cast("zarr.Array", self.group[name])

    def start(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        if self.done % self.plan.n_rows == 0 or self.rows is None:
            return self.done, None, None
        arr = np.load(self.rdir / str(self.rows["file"]), allow_pickle=False)
        D = self.plan.n_features
        return self.done, arr[:D], arr[D:]

    def _touch(self, name: str, y0: int, h: int, x0: int, w: int) -> zarr.Array:
        """The array ``name``, after noting the chunk files a write of rows ``y0..y0+h``, columns ``x0..x0+w`` makes."""
        arr = self._array(name)
        *lead, cr, cc = arr.chunks
        spans = [range(-(-n // c)) for n, c in zip(arr.shape[:-2], lead)]
        spans += [range(y0 // cr, -(-(y0 + h) // cr)), range(x0 // cc, -(-(x0 + w) // cc))]
        for idx in itertools.product(*spans):
            self._touched[f"{arr.path}/{arr.metadata.encode_chunk_key(idx)}"] = None
        return arr

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
        self._touch(FEATURES_NAME, y0, h, x0, w)[:, y0 : y0 + h, x0 : x0 + w] = feats
        self._touch(VALID_FRACTION, y0, h, x0, w)[y0 : y0 + h, x0 : x0 + w] = valid
        if self.probe and pred is not None:
            assert conf is not None  # apply_probe gives both
            self._touch("prediction", y0, h, x0, w)[y0 : y0 + h, x0 : x0 + w] = pred
            self._touch("confidence", y0, h, x0, w)[y0 : y0 + h, x0 : x0 + w] = conf

    def read_cols(self, panel: int, y0: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        arr = np.load(self.rdir / f"cols_{panel}_{y0}.npy", allow_pickle=False)
        D = self.plan.n_features
        return arr[:D, :h], arr[D:, :h]

    def write_cols(self, panel: int, y0: int, csum: np.ndarray, cw: np.ndarray) -> None:
        name = f"cols_{panel}_{y0}.npy"
        _atomic_npy(self.rdir / name, np.concatenate([csum, cw], axis=0))
        self._files.append(name)

    def commit(self, steps_done: int, carry_sum: np.ndarray | None, carry_w: np.ndarray | None) -> None:
        k = steps_done
        rows: dict[str, Any] | None = None
        if carry_sum is not None and carry_w is not None:
            name = f"rows_{k}.npy"
            _atomic_npy(self.rdir / name, np.concatenate([carry_sum, carry_w], axis=0))
            size, crc = cast("list[int]", _check(self.rdir / name))
            rows = {"file": name, "size": size, "crc": crc}
        self.hook("commit:rows", k)
        record = {
            "chunks": {rel: _check(self.path / rel) for rel in self._touched},
            "files": {name: _check(self.rdir / name) for name in self._files},
        }
        _atomic_bytes(self.rdir / f"step_{k}.json", json.dumps(record).encode())
        self.hook("commit:record", k)
        self._write_state(k, rows)  # the commit
        self.hook("commit:state", k)
        for old in self.rdir.glob("rows_*.npy"):
            if rows is None or old.name != rows["file"]:
                old.unlink(missing_ok=True)
        self.done, self.rows = k, rows
        self._touched.clear()
        self._files.clear()
        self.hook("commit:done", k)

    # ----------------------------------------------------------------------------------------- the end
    def begin_finish(self, out: Path) -> None:
        """Consolidate the store's metadata and record, before ``out`` is put in place, what ``out`` was (so that a
        rerun after a kill knows whether the finished output is in place: :meth:`finished_before`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            self._zarr.consolidate_metadata(str(self.path))
        self.hook("finish:consolidated", self.done)
        self._write_state(self.done, self.rows, phase="finishing", out_before=_identity(out))
        self.hook("finish:phase", self.done)

    def cleanup(self, renamed_to: Path | None) -> None:
        """Remove what is left once the output is in place: the resume folder inside ``renamed_to`` (the store was
        renamed to it), or the whole store (it was converted)."""
        if renamed_to is not None:
            remove_path(renamed_to / RESUME_DIR)
        else:
            remove_path(self.path)

    @staticmethod
    def finished_before(out: Path, fingerprint: Mapping[str, str]) -> bool:
        """True (after removing what is left of the partial output) when a run of this fingerprint was killed after
        putting its finished output in place as ``out``: a renamed store still holds the resume folder, a converted
        one is still beside ``out``."""
        store, rdir, _ = partial_paths(out)
        for folder, leftover in ((out / RESUME_DIR, out / RESUME_DIR), (rdir, store)):
            state = read_state(folder) if folder.is_dir() else None
            if state is None or state.get("phase") != "finishing" or state.get("fingerprint") != dict(fingerprint):
                continue
            now = _identity(out)
            if now is None or now == state.get("out_before"):
                continue
            remove_path(leftover)
            log.info("%s was finished by a previous run; what was left of its partial output is removed", out)
            return True
        return False
