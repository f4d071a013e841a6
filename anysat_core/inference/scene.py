"""The public entry :func:`infer_scene`: checks, provenance, the output (memory or a partial Zarr store), the run
and the final file (Zarr store or COG); see :mod:`anysat_core.inference` for what it does."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from torch import nn

from anysat_core.data.normalize import Normalize
from anysat_core.data.raster import RasterScene, RasterSource
from anysat_core.data.sample import Sample
from anysat_core.errors import AnySatError, ConfigError, InputShapeError, OutputError, OutputWriteError
from anysat_core.features import check_min_valid_fraction, provenance_attrs
from anysat_core.inference.cog import write_cog
from anysat_core.inference.fingerprint import run_fingerprint
from anysat_core.inference.plan import (
    ScenePlan,
    as_scene,
    check_lengths,
    check_megabytes,
    check_output,
    plan_scene,
    window_scene,
)
from anysat_core.inference.runners import connect_client, dask_runner, local_runner
from anysat_core.inference.sinks import (
    Hook,
    MemorySink,
    OutputLock,
    ZarrSink,
    partial_paths,
    remove_stale_temporaries,
)
from anysat_core.inference.stream import SceneStream, check_probe
from anysat_core.writers import check_destination, remove_path, replace_path

__all__ = ["infer_scene"]


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


def _gdal_env(gdal_cache_mb: float) -> Any:
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb * 2**20))  # in bytes


def _open_partial(
    out_path: Path,
    kind: str,
    plan: ScenePlan,
    attrs: dict[str, str],
    fingerprint: dict[str, str],
    *,
    probe: bool,
    resume: bool,
    overwrite: bool,
    min_valid_fraction: float,
    hook: Hook | None,
) -> tuple[ZarrSink, Path]:
    """The partial output beside ``out_path`` (:func:`~anysat_core.inference.sinks.partial_paths`), resumed when its
    fingerprint matches (the caller holds the output's lock)."""
    if kind == "cog":
        check_destination(out_path, overwrite, ".tif file")
    else:
        check_destination(out_path, overwrite, "Zarr store", folder=True)
    work, _, _ = partial_paths(out_path)
    existed = work.exists()
    try:
        sink = ZarrSink(
            out_path,
            plan,
            attrs,
            fingerprint,
            probe=probe,
            resume=resume,
            overwrite=overwrite,
            min_valid_fraction=min_valid_fraction,
            hook=hook,
        )
        return sink, work
    except OSError as e:
        if isinstance(e, AnySatError):
            raise
        if not (existed and resume):  # a partial output being created holds nothing worth keeping
            remove_path(work)
        raise _write_error(out_path, e, "create the output", work) from e


def _finish(
    sink: ZarrSink,
    out_path: Path,
    kind: str,
    attrs: dict[str, str],
    *,
    probe: bool,
    overwrite: bool,
    gdal_cache_mb: float,
) -> None:
    """Put the finished partial store in place as ``out_path`` (renamed: Zarr; converted: COG), then remove the
    partial output.  The resume state says it is finishing first, so a rerun after a kill knows whether ``out_path``
    is already the finished output (:meth:`ZarrSink.finished_before`)."""
    work = sink.path
    try:
        sink.begin_finish(out_path)
        if kind == "zarr":
            replace_path(work, out_path, overwrite)
        else:
            with _gdal_env(gdal_cache_mb):
                write_cog(work, out_path, attrs, probe, overwrite)
        sink.hook("finish:placed", sink.done)
        sink.cleanup(out_path if kind == "zarr" else None)
        sink.hook("finish:cleaned", sink.done)
    except OSError as e:
        if isinstance(e, AnySatError):
            raise
        raise _write_error(out_path, e, "finish the output", work) from e


def _normalized(scene: RasterScene, normalize: Any) -> tuple[RasterScene, Callable[[Sample], Sample] | None]:
    """``(scene normalised as asked, per-sample callable or None)`` for ``infer_scene(normalize=...)``."""
    if isinstance(normalize, str) and normalize == "scene":
        return scene, None
    if callable(normalize) and not isinstance(normalize, Normalize):
        return scene.with_normalize(None), normalize
    return scene.with_normalize(normalize), None


def normalization_attr(scene: RasterScene, sample_fn: Any = None) -> str:
    """The ``normalization`` provenance attribute: ``"s2: <statistics>; s1: <statistics>"``."""
    if sample_fn is not None:
        return f"applied per window by {type(sample_fn).__qualname__} to raw file values"
    return "; ".join(f"{m}: {src}" for m, src in scene.normalization.items())


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
    normalize: Any = "scene",
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
    client: Any = None,
    probe: Any = None,
    callback: Callable[[int, int], None] | None = None,
    buffer_mb: float = 16.0,
    gdal_cache_mb: float = 64.0,
    min_valid_fraction: float = 0.0,
    precision: str = "fp32",
    _crash_hook: Hook | None = None,
) -> Path | xr.DataArray | xr.Dataset:
    """Feature map of a whole scene with sliding, blended windows (see :mod:`anysat_core.inference`).

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
        normalize: ``"scene"`` (default): the scene's own normalisation (``open_rasters``' default ``"auto"`` when
            sources are given); any choice of :func:`~anysat_core.open_rasters`' ``normalize=`` (a registry name, a
            statistics file, a mapping, a :class:`~anysat_core.data.normalize.Normalize`, None for raw file values)
            replaces it; any other callable is applied to every raw window sample instead.  The statistics used are
            recorded in the output's ``normalization`` attribute.
        out: ``*.tif``/``*.tiff`` (Cloud-Optimized GeoTIFF) or ``*.zarr``; None returns the result in memory.
        overwrite: replace an existing ``out``.
        resume: continue the partial output of the same run found beside ``out`` (same inputs and settings: see
            :mod:`~anysat_core.inference.fingerprint`); False: start over.
        progress: show a tqdm progress bar over the windows.
        client: a ``distributed.Client`` or a scheduler address; None runs in this process.
        probe: a fitted classifier with ``predict_proba((N, D)) -> (N, K)`` (and optionally ``classes_``): adds
            per-cell ``prediction`` (class label, -1 where no data) and ``confidence`` (max probability).
        callback: called as ``callback(windows_done, windows_total)`` after every window of this call.
        buffer_mb: memory for the blending accumulator; wider scenes are processed in more panels (results are
            the same up to float rounding in the columns shared by two panels).
        gdal_cache_mb: GDAL block cache limit while reading and writing (GDAL's default is 5 % of the RAM).
        min_valid_fraction: cells whose share of valid input (``valid_fraction``, blended like the features) is
            at most this get NaN features (and prediction -1); 0 masks the cells with no valid input at all.
        precision: ``"fp32"`` (exact, the default), ``"bf16"`` or ``"auto"`` (bf16 where the device has native bf16
            matrix units), see :mod:`anysat_core.precision`; on Dask workers, resolved for the client's model
            device. Recorded in the output's ``precision`` attribute (a resumed run must use the same).
        _crash_hook: private test hook, ``hook(point, step)`` called at every bookkeeping point of a file output
            (the resume tests kill the process there); not for use.

    Returns:
        ``out`` as a Path when given; else a DataArray ``(feature, y, x)`` with a ``valid_fraction`` ``(y, x)``
        coordinate (a Dataset with ``anysat_features``, ``prediction`` and ``confidence`` when ``probe`` is given).

    Raises:
        PatchSizeError: sizes that do not fit the modalities or each other.
        OutputError: an unknown ``output``/``output_modality``, an ``out`` that is not a path or has an unsupported
            suffix, or an unusable ``probe``.
        ConfigError: a ``callback`` that is not callable.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
        OutputLockedError: another run is writing ``out`` (the message names its pid and host).
        ResumeMismatchError: a partial output of another run (other inputs, statistics, weights or settings) is
            beside ``out``, and neither ``resume=False`` nor ``overwrite=True`` was given (it names what changed).
        OutputWriteError: the output cannot be written (read-only folder, full disk, invalid path); a partial
            store of the finished strips stays beside ``out`` so that a second call resumes.
        AnySatError subclasses from reading the rasters or running the model.
    """
    check_megabytes("gdal_cache_mb", gdal_cache_mb, 64)
    threshold = check_min_valid_fraction(min_valid_fraction)
    if callback is not None and not callable(callback):
        raise ConfigError(
            f"callback={callback!r} (a {type(callback).__name__}); expected a function called as "
            "callback(windows_done, windows_total), or None"
        )
    if out is not None:
        if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
            raise OutputError(
                f"out={out!r} (a {type(out).__name__}); expected the path of a '.tif'/'.tiff' (Cloud-Optimized GeoTIFF) "
                "or '.zarr' (Zarr store) output, or None to return the result in memory"
            )
        _output_kind(Path(out))  # an unsupported suffix is refused before the rasters are opened
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputShapeError(f"batch_size={batch_size!r}; expected a positive int")
    check_output(output)
    check_lengths(patch_size_m=patch_size_m, window_m=window_m, overlap_m=overlap_m)  # before opening rasters
    scene = as_scene(scene_or_sources, window_m, patch_size_m)
    scene, sample_fn = _normalized(scene, normalize)
    plan = plan_scene(
        model,
        scene,
        patch_size_m=patch_size_m,
        window_m=window_m,
        overlap_m=overlap_m,
        output=output,
        output_modality=output_modality,
        buffer_mb=buffer_mb,
        batch_size=int(batch_size),
        in_memory=out is None,
    )
    om = output_modality or scene.modalities[0]
    wscene = window_scene(scene, window_m, window_m - overlap_m)
    attrs = provenance_attrs(
        model,
        patch_size_m=patch_size_m,
        output=output,
        output_modality=om,
        modalities=scene.modalities,
        precision=precision,
    )
    used = attrs["precision"]  # "auto" resolved once, here: every window (and worker) runs in the same precision
    sha = attrs["checkpoint"]
    attrs |= {
        "normalization": normalization_attr(scene, sample_fn),
        "window_m": f"{float(window_m):g}",
        "overlap_m": f"{float(overlap_m):g}",
        "blending": "raised-cosine ramp over the overlap, weighted mean",
        "crs": plan.crs,
        "min_valid_fraction": f"{threshold:g}",
    }
    if probe is not None:
        check_probe(probe, plan.n_features)  # before any output exists
        attrs["probe"] = type(probe).__name__

    with contextlib.ExitStack() as stack:
        if client is not None:  # connected first: a SchedulerUnreachableError before any output exists
            client, own_client = connect_client(client)
            if own_client:
                stack.callback(client.close)
        out_path = Path(out) if out is not None else None

        def run(sink: MemorySink | ZarrSink, work: Path | None) -> None:
            runner_cm = (
                dask_runner(client, model, sha, patch_size_m, output, om, precision=used)
                if client is not None
                else contextlib.nullcontext(local_runner(model, patch_size_m, output, om, used))
            )
            try:
                with _gdal_env(gdal_cache_mb), runner_cm as runner:
                    SceneStream(
                        wscene,
                        plan,
                        runner,
                        sink,
                        batch_size=batch_size,
                        normalize=sample_fn,
                        probe=probe,
                        progress=progress,
                        callback=callback,
                        min_valid_fraction=threshold,
                    ).run()
            except OSError as e:
                if isinstance(e, AnySatError):
                    raise
                raise _write_error(out_path or Path("."), e, "write the output", work) from e

        if out_path is None:
            memory = MemorySink(plan, probe is not None, threshold)
            run(memory, None)
            return memory.result(attrs)

        kind = _output_kind(out_path)
        fingerprint = run_fingerprint(scene, plan, attrs, batch_size=int(batch_size), normalize=sample_fn, probe=probe)
        lock = OutputLock(out_path)
        try:
            lock.__enter__()  # OutputLockedError while another run writes out_path
        except OSError as e:
            if isinstance(e, AnySatError):
                raise
            raise _write_error(out_path, e, "create the output") from e
        try:
            remove_stale_temporaries(out_path)
            if resume and ZarrSink.finished_before(out_path, fingerprint):
                return out_path  # a killed run had put the finished output in place
            sink, work = _open_partial(
                out_path,
                kind,
                plan,
                attrs,
                fingerprint,
                probe=probe is not None,
                resume=resume,
                overwrite=overwrite,
                min_valid_fraction=threshold,
                hook=_crash_hook,
            )
            run(sink, work)
            _finish(
                sink, out_path, kind, attrs, probe=probe is not None, overwrite=overwrite, gdal_cache_mb=gdal_cache_mb
            )
        finally:
            lock.__exit__(None, None, None)
        return out_path
