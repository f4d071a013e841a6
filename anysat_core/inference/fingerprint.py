"""The fingerprint of a scene run: everything that decides its output, kept with a partial output so that a rerun
resumes only the same run.

:func:`run_fingerprint` gives ``{item: description}`` strings (JSON-able, readable in a message):

* ``input <modality>[<i>] <name>``: one per frame of the scene.  A file read lazily: its size, modification time
  and the SHA-256 of its first 64 KiB (the header, with the georeferencing).  Values in memory (up to 256 MiB, even
  when read from a file: they may have been changed since): shape, dtype, coordinates, attributes and the SHA-256 of
  the values; other arrays (dask-backed, lazy without a file, larger) the same with three 256 x 256 blocks of values
  and the dask name (which rioxarray derives from the file name and time).  With each: the bands, nodata, date, CRS
  and transform read.
* ``normalization statistics``: the scene's :class:`~anysat_core.data.normalize.Normalize` (``scene.normalizer``):
  where its statistics come from and the SHA-256 of their values; ``normalize function``: a callable given to
  ``infer_scene(normalize=...)`` (its type and the SHA-256 of its pickle).
* ``attribute <name>``: every provenance attribute of the output (model, ``checkpoint`` = SHA-256 of the weights,
  patch size, window, overlap, output kind and modality, modalities, normalisation, CRS, ``min_valid_fraction``,
  package version...).
* ``grid``, ``windows`` (rows, columns and window columns per panel: ``buffer_mb``), ``batch_size``.
* ``probe``: its type and the SHA-256 of its pickle (of its ``predict_proba`` on a fixed input when it cannot be
  pickled).

:func:`check_same_run` compares a stored fingerprint with the current one and raises
:class:`~anysat_core.errors.ResumeMismatchError` naming what changed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from anysat_core.errors import ResumeMismatchError

__all__ = ["check_same_run", "describe_frame", "run_fingerprint"]

#: bytes of a file hashed as its header
HEADER_BYTES = 64 * 1024
#: in-memory arrays up to this size are hashed whole
FULL_HASH_BYTES = 256 * 2**20
#: side of the blocks of a large or lazy array that are hashed
BLOCK = 256


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _file_of(da: xr.DataArray) -> Path | None:
    """The file a DataArray was read from (rioxarray keeps it in ``encoding["source"]``), if it still exists."""
    src = da.encoding.get("source")
    if isinstance(src, (str, os.PathLike)) and Path(src).is_file():
        return Path(src)
    return None


def _file_digest(path: Path) -> str:
    st = path.stat()
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    modified = _dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=_dt.timezone.utc).isoformat()
    return f"file {str(path.resolve())!r}: {st.st_size} bytes, modified {modified}, header sha256 {_sha(head)}"


def _array_digest(da: xr.DataArray) -> str:
    parts: list[bytes | str] = [str(da.shape), str(da.dtype), str(da.dims)]
    for name in ("y", "x"):
        if name in da.coords:
            parts.append(np.ascontiguousarray(da[name].values).tobytes())
    parts.append(repr(sorted((str(k), repr(v)) for k, v in da.attrs.items())))
    data = da.variable._data  # numpy in memory, or a lazy/dask array that must not be loaded whole
    whole = isinstance(data, np.ndarray) and da.nbytes <= FULL_HASH_BYTES
    if whole:
        parts.append(np.ascontiguousarray(data).tobytes())
        how = "all values"
    else:
        token = getattr(da.data, "name", None)  # dask: a token of the graph (rioxarray: file name and time)
        if isinstance(token, str):
            parts.append(token)
        H, W = da.sizes["y"], da.sizes["x"]
        for y0, x0 in ((0, 0), (max(0, H // 2 - BLOCK // 2), max(0, W // 2 - BLOCK // 2)), (H - BLOCK, W - BLOCK)):
            block = da.isel(y=slice(max(0, y0), max(0, y0) + BLOCK), x=slice(max(0, x0), max(0, x0) + BLOCK))
            parts.append(np.ascontiguousarray(np.asarray(block.values)).tobytes())
        how = "three blocks of values"
    return f"in-memory array {tuple(da.shape)} {da.dtype}, sha256 of shape, coordinates, attributes and {how} {_sha(*parts)}"


def describe_frame(frame: Any) -> str:
    """One frame of a scene (:class:`~anysat_core.data.raster.sources.Frame`): where its values come from and how
    they are read."""
    da = frame.da
    in_memory = isinstance(da.variable._data, np.ndarray) and da.nbytes <= FULL_HASH_BYTES
    path = None if in_memory else _file_of(da)  # values loaded (perhaps changed) in memory: hash them
    source = _file_digest(path) if path is not None else _array_digest(da)
    crs = frame.crs.to_string() if hasattr(frame.crs, "to_string") else str(frame.crs)
    return (
        f"{source}; bands {list(frame.band_idx)}, nodata {frame.nodata}, date {frame.date}, crs {crs}, "
        f"transform {tuple(round(float(v), 9) for v in tuple(frame.transform)[:6])}"
    )


def _stats_digest(normalizer: Any) -> str:
    if normalizer is None:
        return "none (raw file values)"
    stats = getattr(normalizer, "stats", None)
    describe = getattr(normalizer, "describe", None)
    names = describe() if callable(describe) else {}
    if isinstance(stats, Mapping):
        values = {
            str(m): [
                np.asarray(getattr(s, "mean", []), np.float64).tolist(),
                np.asarray(getattr(s, "std", []), np.float64).tolist(),
            ]
            for m, s in sorted(stats.items())
        }
        return f"{json.dumps(names, sort_keys=True)}, values sha256 {_sha(json.dumps(values, sort_keys=True))}"
    return f"{type(normalizer).__qualname__} {_pickle_digest(normalizer)}"


def _pickle_digest(obj: Any) -> str:
    try:
        return f"pickle sha256 {_sha(pickle.dumps(obj, protocol=4))}"
    except Exception:  # noqa: BLE001 - lambdas, open handles...: say that changes inside it go unseen
        return "(cannot be pickled: changes inside it are not detected)"


def _probe_digest(probe: Any, n_features: int) -> str:
    if probe is None:
        return "none"
    digest = _pickle_digest(probe)
    if digest.startswith("(cannot"):
        X = np.random.default_rng(0).normal(size=(8, n_features))
        with contextlib.suppress(Exception):  # check_probe has vetted it; else the type is all there is
            proba = np.asarray(probe.predict_proba(X), dtype=np.float64)
            digest = f"predict_proba sha256 {_sha(proba.tobytes())}"
    return f"{type(probe).__module__}.{type(probe).__qualname__}, {digest}"


def run_fingerprint(
    scene: Any,
    plan: Any,
    attrs: Mapping[str, str],
    *,
    batch_size: int,
    normalize: Any,
    probe: Any,
) -> dict[str, str]:
    """``{item: description}`` of everything that decides the output of ``infer_scene`` (see the module docstring).

    Args:
        scene: the :class:`~anysat_core.data.raster.RasterScene` run (its frames and ``normalizer``).
        plan: its :class:`~anysat_core.inference.plan.ScenePlan`.
        attrs: the output's provenance attributes.
        batch_size: windows per forward pass.
        normalize: the per-window callable given to ``infer_scene``, or None.
        probe: the probe, or None.
    """
    items: dict[str, str] = {}
    for m, st in getattr(scene, "_mods", {}).items():
        for i, frame in enumerate(st.frames):
            items[f"input {m}[{i}] {frame.name}"] = describe_frame(frame)
    items["normalization statistics"] = _stats_digest(getattr(scene, "normalizer", None))
    items["normalize function"] = (
        "none" if normalize is None else f"{type(normalize).__qualname__}, {_pickle_digest(normalize)}"
    )
    for k, v in sorted(attrs.items()):
        items[f"attribute {k}"] = str(v)
    items["grid"] = f"{tuple(plan.grid_shape)} cells of {plan.cell_m:g} m, transform {tuple(plan.transform)}"
    items["windows"] = (
        f"{plan.n_rows} x {plan.n_cols} windows, {plan.panel_windows} window columns per panel (from buffer_mb)"
    )
    items["batch_size"] = str(int(batch_size))
    items["probe"] = _probe_digest(probe, plan.n_features)
    return items


def _short(text: str | None, limit: int = 240) -> str:
    if text is None:
        return "(absent)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same_run(stored: Mapping[str, str], current: Mapping[str, str], leftovers: Sequence[Path]) -> None:
    """Raise :class:`ResumeMismatchError` unless the fingerprint ``stored`` with a partial output equals ``current``.

    The message names every item that changed (old -> new), and says how to start over (``leftovers``: the partial
    output's paths).
    """
    keys = list(dict.fromkeys([*stored, *current]))
    changed = [k for k in keys if stored.get(k) != current.get(k)]
    if not changed:
        return
    lines = "; ".join(f"{k}: {_short(stored.get(k))} -> {_short(current.get(k))}" for k in changed[:8])
    more = f"; and {len(changed) - 8} more" if len(changed) > 8 else ""
    where = " and ".join(repr(str(p)) for p in leftovers)
    raise ResumeMismatchError(
        f"the partial output {where} was made by a run with other inputs or settings ({len(changed)} item(s) "
        f"changed: {lines}{more}); resuming it would mix two results. Run again with the original inputs and "
        "settings to resume it, or start over: pass resume=False (or overwrite=True), or delete "
        f"{where}"
    )
