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

**Valid fraction.**  Each window's share of valid input under every cell
(:func:`~anysat_core.features.valid_fraction` of its sample's masks: nodata, padding beyond the rasters) is blended
like the features, with the same weights.  The result carries it as ``valid_fraction`` ``(y, x)`` (a coordinate of
the in-memory result and of the Zarr store's features; not a COG band, see :mod:`~anysat_core.inference.cog`), and
cells where it is at most ``min_valid_fraction`` (default 0: no valid input at all) get NaN features (prediction -1).

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

**Atomic and resumable.**  Work goes to a partial Zarr store ``.<name>.partial.zarr`` beside ``out``, with its
resume state inside (``_anysat_resume/``, see :mod:`~anysat_core.inference.sinks`): the run's *fingerprint*
(:mod:`~anysat_core.inference.fingerprint`: the input files' sizes, times and header hashes or the in-memory
values' hashes, the normalisation statistics, the weights hash, patch size, window, overlap, output, probe...),
the number of finished strips, the overlap rows and columns carried forward, and the size and CRC-32 of every
chunk each strip wrote.  Every step of that bookkeeping is written under a temporary name and renamed, the
progress last, so a run killed at any point (a kill, a full disk) keeps a consistent partial output, and the same
call (``resume=True``) continues from the last finished strip and produces the same file as an uninterrupted run
(strips are batched independently, so every window sees the same batch).  A rerun whose fingerprint differs
refuses with :class:`~anysat_core.errors.ResumeMismatchError` naming what changed (``resume=False`` or
``overwrite=True`` start over); a finished chunk found truncated, deleted or altered is computed again (from the
start of the panel that wrote it).  While a run writes ``out`` it holds a lock ``.<name>.lock`` beside it: a second
run on the same ``out`` fails at once with :class:`~anysat_core.errors.OutputLockedError` naming the holder (pid and
host); the lock of a killed run is taken over.
Only the finished result is renamed to ``out``; an existing ``out`` is refused unless ``overwrite=True``
(:class:`~anysat_core.errors.OutputExistsError`), and OS errors (read-only folder, full disk, a file where a
folder should be) become :class:`OutputWriteError` naming the path.

**Distributed.**  With ``client=`` (a :class:`distributed.Client` or a scheduler address) the model weights and
config are scattered once to the workers, the windows of a strip are submitted as batches and gathered in order;
reading, blending and writing stay in the calling process.

Attributes of the result (strings): those of :func:`~anysat_core.features.extract_features` (``model``,
``checkpoint`` = SHA-256 of the weights, ``patch_size_m``, ``output``, ``output_modality``, ``modalities``,
``anysat_core_version``) plus ``window_m``, ``overlap_m``, ``blending`` and ``crs``.

Modules: :mod:`~anysat_core.inference.plan` (windows, feature grid, panels, size checks),
:mod:`~anysat_core.inference.runners` (the model in this process or on dask workers),
:mod:`~anysat_core.inference.stream` (the streaming loop: read, run, blend, flush, carry, commit),
:mod:`~anysat_core.inference.sinks` (memory, or the resumable partial Zarr store),
:mod:`~anysat_core.inference.cog` (the COG made from the store) and :mod:`~anysat_core.inference.scene`
(:func:`infer_scene`).
"""

from anysat_core.inference.plan import ScenePlan, plan_scene
from anysat_core.inference.scene import infer_scene
from anysat_core.writers import write_zarr

__all__ = ["ScenePlan", "infer_scene", "plan_scene", "write_zarr"]
