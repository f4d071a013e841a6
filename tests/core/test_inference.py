"""Scene-scale inference (anysat_core.inference): sliding windows, blending, streamed COG/Zarr output, resume.

The scene: dated S2 GeoTIFFs (file names carry the dates) of 36 x 24 pixels at 10 m (360 m x 240 m) in UTM 31N
with random values, written by the tests: one date for most tests (reading a window costs per date, and the
geometry, blending and files do not depend on time), three dates (``series_*``) where a time series is the point.
The model is the test-size AnySat with random weights.
Memory use measured on real runs is a benchmark (tests/benchmarks/bench_scene_memory.py), not a test: here the
streaming loop is checked to hold nothing larger than the planned buffers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import torch
import xarray as xr
from rio_cogeo.cogeo import cog_validate

from anysat_core import AnySat, InputShapeError, OutputError, OutputExistsError, OutputWriteError, PatchSizeError
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.features import extract_features, weights_sha256
from anysat_core.inference import infer_scene, plan_scene, write_zarr
from anysat_core.inference import stream as stream_module
from tests.helpers.scenes import DATES, X0, Y0, assert_same_output, panel_mb, write_s2_series

KW = {"patch_size_m": 20, "window_m": 120, "progress": False}


ONE_DATE = DATES[:1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return write_s2_series(tmp_path_factory.mktemp("scene"), dates=ONE_DATE)


@pytest.fixture(scope="module")
def scene(files):
    return open_rasters(RasterSource(files, modality="s2"), tile_m=120)


@pytest.fixture(scope="module")
def series_files(tmp_path_factory) -> list[Path]:
    return write_s2_series(tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="module")
def series_scene(series_files):
    return open_rasters(RasterSource(series_files, modality="s2"), tile_m=120)


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


@pytest.fixture(scope="module")
def patch_map(model, scene) -> xr.DataArray:
    """Patch features with 40 m overlap, in memory: 4 x 3 windows of 120 m, stride 80 m."""
    return infer_scene(model, scene, output="patch", overlap_m=40, **KW)


@pytest.fixture(scope="module")
def series_mosaic(model, series_scene) -> xr.DataArray:
    """Dense features of the three-date scene without overlap, in memory: 3 x 2 windows of 120 m."""
    return infer_scene(model, series_scene, output="dense", overlap_m=0, **KW)


def _tile_features(model, scene, row, col, output):
    return extract_features(model, scene.tile(row, col), patch_size_m=20, output=output, output_modality="s2").values


# ------------------------------------------------------------------------------------------------ equality with tiles
def test_without_overlap_the_scene_is_the_tile_mosaic(model, series_scene, series_mosaic) -> None:
    """Three dates: without overlap the map is the mosaic of the tiles open_rasters cuts (time series and all)."""
    da = series_mosaic
    assert da.dims == ("feature", "y", "x") and da.shape == (2 * model.embed_dim, 24, 36)
    for r in range(2):
        for c in range(3):
            ref = _tile_features(model, series_scene, r, c, "dense")  # (2D, 12, 12) at 10 m
            np.testing.assert_allclose(da.values[:, 12 * r : 12 * r + 12, 12 * c : 12 * c + 12], ref, atol=1e-4)


def test_cells_covered_by_one_window_equal_that_tile(model, scene, files) -> None:
    """With 40 m overlap (stride 80 m) the cells seen by a single window keep that window's features exactly."""
    da = infer_scene(model, scene, output="dense", overlap_m=40, **KW)  # 10 m cells, windows of 12 cells, stride 8
    # window (0, 0) = tile (0, 0) of the 120 m tiling; only it covers cells [0:8, 0:8]
    ref = _tile_features(model, scene, 0, 0, "dense")
    np.testing.assert_allclose(da.values[:, :8, :8], ref[:, :8, :8], atol=1e-4)
    # window (1, 1) starts 80 m right and down: tile (0, 0) of the same rasters cropped by 8 pixels;
    # only it covers cells [12:16, 12:16] (its cells [4:8, 4:8])
    cropped = [rioxarray.open_rasterio(f).isel(x=slice(8, None), y=slice(8, None)) for f in files]
    sub = open_rasters(RasterSource(cropped, modality="s2", dates=list(ONE_DATE)), tile_m=120)
    ref = _tile_features(model, sub, 0, 0, "dense")
    np.testing.assert_allclose(da.values[:, 12:16, 12:16], ref[:, 4:8, 4:8], atol=1e-4)
    # the overlap band is a blend: it differs from both windows but lies between them
    assert not np.allclose(da.values[:, :8, 8:12], _tile_features(model, scene, 0, 0, "dense")[:, :8, 8:12], atol=1e-3)


def _jumps(f: np.ndarray, axis: int) -> np.ndarray:
    """Mean L2 feature difference between neighbouring cells along ``axis`` (1 = y, 2 = x): one value per pair."""
    d = np.linalg.norm(np.diff(f, axis=axis), axis=0)
    return d.mean(axis=1 - (axis - 1))


def test_no_seams_across_window_borders(scene) -> None:
    """Seam measure: the jump between neighbouring patch cells (L2 norm of the feature difference, averaged along
    the other axis), one value per pair of neighbouring rows/columns.  The model is AnySat tiny (random weights):
    the test-size model, one layer deep, mixes too little context into a window for seams to stand out clearly
    (its hard seams are ~3.5-5x the interior jumps).

    * Hard mosaic (overlap 0, windows of 6 cells): at the pairs where one window ends and the next starts the jump
      is ~7-8x the median jump between interior neighbours (random weights: the combiner mixes all patches of a
      window, so each window carries its own context) -- the measure sees seams.
    * Blended (overlap 60 m = 3 cells, stride 3 cells): at every pair where a window starts or ends the jump is
      within 1.5x the hard mosaic's interior median (measured 0.8-1.2x), and the largest jump anywhere is below half
      the smallest hard seam (measured ~0.35x): the change of context is spread over the overlap band.
    """
    torch.manual_seed(0)
    tiny = AnySat(size="tiny").eval()
    scene = scene.with_normalize(None)  # the ratios above were measured on raw values (larger context differences)
    hard = infer_scene(tiny, scene, output="patch", overlap_m=0, **KW).values
    soft = infer_scene(tiny, scene, output="patch", overlap_m=60, **KW).values
    for axis in (2, 1):
        n = hard.shape[axis]
        hj = _jumps(hard, axis)
        h_edges = [e - 1 for e in range(6, n, 6)]
        h_inner = np.median(np.delete(hj, h_edges))
        assert hj[h_edges].min() > 3 * h_inner, (hj, h_edges)
        sj = _jumps(soft, axis)
        edges = sorted({e - 1 for c in range(n) for e in (3 * c, 3 * c + 6) if 0 < e < n})
        assert sj[edges].max() < 1.5 * h_inner, (sj, edges, h_inner)
        assert sj.max() < 0.5 * hj[h_edges].min(), (sj, hj[h_edges])


# ------------------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def probe(model, patch_map):
    """A 3-class logistic regression on the patch features (labels: cell index modulo 3)."""
    from sklearn.linear_model import LogisticRegression

    X = patch_map.values.reshape(model.embed_dim, -1).T
    return LogisticRegression(max_iter=200).fit(X, np.arange(X.shape[0]) % 3)


@pytest.fixture(scope="module")
def exports(model, scene, probe, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted patch exports (40 m overlap) with the probe, as Zarr and COG, alone in their folder."""
    folder = tmp_path_factory.mktemp("exports")
    kw = dict(output="patch", overlap_m=40, probe=probe, **KW)
    return {s: infer_scene(model, scene, out=folder / f"f{s}", **kw) for s in (".zarr", ".tif")}


def test_cog_and_zarr_are_georeferenced_with_provenance(model, patch_map, probe, exports) -> None:
    D = model.embed_dim
    X = patch_map.values.reshape(D, -1).T
    zpath, tpath = exports[".zarr"], exports[".tif"]
    assert sorted(p.name for p in zpath.parent.iterdir()) == ["f.tif", "f.zarr"]  # no partial/temporary leftovers
    xs = X0 + 10 + 20 * np.arange(18)  # patch centres of 20 m cells from the scene corner
    ys = Y0 - 10 - 20 * np.arange(12)
    expected_attrs = {
        "model": "AnySat-test",
        "checkpoint": weights_sha256(model),
        "patch_size_m": "20",
        "window_m": "120",
        "overlap_m": "40",
        "output": "patch",
        "modalities": "s2",
        "anysat_core_version": __import__("anysat_core").__version__,
    }

    ds = xr.open_zarr(zpath)
    z = ds["anysat_features"]
    assert z.dims == ("feature", "y", "x") and z.dtype == np.float32
    assert z.rio.crs.to_epsg() == 32631
    assert tuple(z.rio.transform())[:6] == (20.0, 0.0, X0, 0.0, -20.0, Y0)
    np.testing.assert_array_equal(z.x.values, xs)
    np.testing.assert_array_equal(z.y.values, ys)
    assert expected_attrs.items() <= ds.attrs.items()
    np.testing.assert_array_equal(z.values, patch_map.values)
    assert not any(k.startswith("_anysat") for k in ds.variables) and "anysat_progress" not in ds.attrs
    pred = ds["prediction"].values
    np.testing.assert_array_equal(pred.ravel(), probe.predict(X))
    assert ds["confidence"].values.min() >= 1 / 3 - 1e-6

    assert cog_validate(str(tpath), strict=True)[:2] == (True, [])  # rio-cogeo: a valid Cloud-Optimized GeoTIFF
    with rasterio.open(tpath) as src:
        assert src.crs.to_epsg() == 32631
        assert tuple(src.transform)[:6] == (20.0, 0.0, X0, 0.0, -20.0, Y0)
        assert expected_attrs.items() <= src.tags().items()
        assert src.count == D + 2 and src.descriptions[-2:] == ("prediction", "confidence")
        data = src.read()
    np.testing.assert_array_equal(data[:D], patch_map.values)
    np.testing.assert_array_equal(data[D], pred)
    cog = rioxarray.open_rasterio(tpath)
    np.testing.assert_allclose(cog.x.values, xs)  # a cell's map coordinate is the patch centre
    np.testing.assert_allclose(cog.y.values, ys)


class _Stop(RuntimeError):
    pass


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_interrupted_export_resumes_to_the_same_file(model, scene, probe, exports, tmp_path, suffix) -> None:
    """An export with a probe, interrupted after its first strip, resumes and is byte-identical to an uninterrupted
    export (the ``exports`` fixture)."""
    kw = dict(output="patch", overlap_m=40, probe=probe, **KW)

    def stop_after_5(done: int, total: int) -> None:
        if done == 5:  # strip 0 (4 windows) is committed, strip 1 is half done
            raise _Stop("simulated crash")

    out = tmp_path / f"resumed{suffix}"
    with pytest.raises(_Stop):
        infer_scene(model, scene, out=out, callback=stop_after_5, **kw)
    assert not out.exists()  # nothing under the final name
    assert (tmp_path / f".resumed{suffix}.partial.zarr").is_dir()
    seen: list[int] = []
    infer_scene(model, scene, out=out, callback=lambda d, t: seen.append(d), **kw)
    assert len(seen) == 8  # strips 1 and 2 only: the finished strip was not recomputed
    assert not (tmp_path / f".resumed{suffix}.partial.zarr").exists()
    assert_same_output(exports[suffix], out, ("anysat_features", "prediction", "confidence"))


def test_existing_output_refused_and_bad_locations(model, scene, tmp_path) -> None:
    out = tmp_path / "f.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        infer_scene(model, scene, output="patch", overlap_m=0, out=out, **KW)
    assert out.read_bytes() == b"keep me"
    infer_scene(model, scene, output="patch", overlap_m=0, out=out, overwrite=True, **KW)
    with rasterio.open(out) as src:
        assert src.count == model.embed_dim

    with pytest.raises(OutputError, match=r"\.png.*'\.tif'"):
        infer_scene(model, scene, output="patch", overlap_m=0, out=tmp_path / "f.png", **KW)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    bad = blocker / "sub" / "f.zarr"  # a file where a folder should be
    with pytest.raises(OutputWriteError, match="a_file") as ei:
        infer_scene(model, scene, output="patch", overlap_m=0, out=bad, **KW)
    assert isinstance(ei.value, OSError) and ei.value.path == str(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "f.tif"]

    with pytest.raises(PatchSizeError, match="overlap_m"):
        infer_scene(model, scene, output="patch", overlap_m=70, **KW)


def _read_only_dir(tmp_path: Path) -> Path:
    """A folder nobody can write into: chmod 0o500 for normal users; as root (chmod is ignored), sysfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    if not os.access(ro, os.W_OK):
        return ro
    os.chmod(ro, 0o700)
    probe = Path("/sys") / ".anysat_write_probe"
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys")  # the kernel refuses new entries here, even to root
    probe.rmdir()
    pytest.skip("no read-only folder available: running as root and /sys is writable")


def test_read_only_folder_gives_clear_error(model, scene, tmp_path) -> None:
    ro = _read_only_dir(tmp_path)
    before = set(os.listdir(ro))
    try:
        for name in ("f.zarr", "f.tif"):
            with pytest.raises(OutputWriteError, match=str(ro)) as ei:
                infer_scene(model, scene, output="patch", overlap_m=0, out=ro / name, **KW)
            assert ei.value.path == str(ro / name)
        assert set(os.listdir(ro)) == before, "no partial output left behind"
    finally:
        if ro.is_relative_to(tmp_path):
            os.chmod(ro, 0o700)


def test_write_zarr_single_tile_atomic(model, scene, tmp_path) -> None:
    da = extract_features(model, scene.tile(0, 1), patch_size_m=20, output="patch")
    path = write_zarr(da, tmp_path / "tile.zarr")
    back = xr.open_zarr(path)["anysat_features"]
    np.testing.assert_array_equal(back.values, da.values)
    np.testing.assert_array_equal(back.x.values, da.x.values)
    assert back.rio.crs.to_epsg() == 32631 and back.attrs["checkpoint"] == da.attrs["checkpoint"]
    with pytest.raises(OutputExistsError):
        write_zarr(da, path)
    write_zarr(da * 2, path, overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(path)["anysat_features"].values, 2 * da.values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile.zarr"]


# ------------------------------------------------------------------------------------------------ distributed
def test_local_cluster_equals_in_process(model, scene, patch_map) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        da = infer_scene(model, scene, output="patch", overlap_m=40, client=client, **KW)
    np.testing.assert_array_equal(da.values, patch_map.values)
    assert da.attrs == patch_map.attrs


# ------------------------------------------------------------------------------------------------ bounded memory
def _plan_of(model, tmp_path: Path, name: str, height: int, width: int, **kw) -> object:
    scene = open_rasters(
        RasterSource(write_s2_series(tmp_path / name, height=height, width=width), modality="s2"), tile_m=120
    )
    return plan_scene(model, scene, patch_size_m=20, window_m=120, overlap_m=40, output="dense", **kw)


def test_planned_strip_buffer_is_bounded_in_height_and_width(model, tmp_path) -> None:
    """The strip accumulator (the largest array held while streaming) has the same shape for a 240 m x 360 m scene,
    a 3x taller one and a 3x wider one: panels take the width, strips the height.  Without a bound (one panel) it
    grows with the width."""
    mb = panel_mb(model.embed_dim, "dense", 4)
    base = _plan_of(model, tmp_path, "base", 24, 36, buffer_mb=mb)
    tall = _plan_of(model, tmp_path, "tall", 72, 36, buffer_mb=mb)
    wide = _plan_of(model, tmp_path, "wide", 24, 108, buffer_mb=mb)
    assert tall.grid_shape == (72, 36) and tall.n_rows > 2 * base.n_rows
    assert wide.grid_shape == (24, 108) and (base.n_panels, wide.n_panels) == (1, 4) and wide.panel_windows == 4
    assert base.buffer_shape == tall.buffer_shape == wide.buffer_shape == (2 * model.embed_dim, 12, 36)
    one_panel = _plan_of(model, tmp_path, "wide", 24, 108, buffer_mb=1000)
    assert one_panel.n_panels == 1 and one_panel.buffer_shape == (2 * model.embed_dim, 12, 108)
    assert np.prod(wide.buffer_shape) * 4 * 2 <= mb * 2**20  # acc + divided output within buffer_mb


# ------------------------------------------------------------------------------------------------ panels (width)
#: every window in a batch of its own, so that runs with and without panels differ by the panels only (the test-size
#: model's dense output of a one-date series varies with the other windows of its batch, by ~1e-4)
WIDE_KW = {**KW, "batch_size": 1}


@pytest.fixture(scope="module")
def wide_scene(tmp_path_factory):
    """560 m x 160 m: 2 x 7 windows of 120 m with a stride of 80 m (2 x 5 with a stride of 120 m)."""
    files = write_s2_series(tmp_path_factory.mktemp("wide"), height=16, width=56, seed=1, dates=ONE_DATE)
    return open_rasters(RasterSource(files, modality="s2"), tile_m=120)


@pytest.fixture(scope="module")
def one_pass(model, wide_scene):
    """``one_pass(output, overlap_m)``: the wide scene in one panel, in memory (computed once per setting)."""
    cache: dict[tuple[str, float], xr.DataArray] = {}

    def get(output: str, overlap_m: float) -> xr.DataArray:
        if (output, overlap_m) not in cache:
            cache[output, overlap_m] = infer_scene(model, wide_scene, output=output, overlap_m=overlap_m, **WIDE_KW)
        return cache[output, overlap_m]

    return get


@pytest.mark.parametrize("output,overlap", [("dense", 40), ("patch", 0)])
def test_panels_equal_one_pass(model, wide_scene, one_pass, output, overlap) -> None:
    """A scene processed in memory in panels of 2 window columns (4 panels with the overlap columns carried between
    them, the last one a single column; 3 without overlap) equals the one-panel result: exactly where one panel
    finishes a column alone, up to float rounding in shared columns.  (Patch output with overlap in panels: the Zarr
    test below.)"""
    mb = panel_mb(model.embed_dim, output, 2, overlap)
    plan = plan_scene(model, wide_scene, patch_size_m=20, window_m=120, overlap_m=overlap, output=output, buffer_mb=mb)
    assert plan.n_panels == (4 if overlap else 3) and plan.panel_windows == 2
    one = one_pass(output, overlap)
    many = infer_scene(model, wide_scene, output=output, overlap_m=overlap, **WIDE_KW, buffer_mb=mb)
    assert np.isfinite(many.values).all()
    np.testing.assert_allclose(many.values, one.values, rtol=1e-5, atol=1e-5)
    assert many.attrs == one.attrs and many.rio.transform() == one.rio.transform()


def _spy_on_buffers(monkeypatch) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Record the shapes of the panel accumulators the stream allocates and of the blocks it writes to the store."""
    allocated: list[tuple[int, ...]] = []
    written: list[tuple[int, ...]] = []
    alloc, write = stream_module.panel_buffers, stream_module.ZarrSink.write

    def spy_alloc(plan, p):
        panel = alloc(plan, p)
        allocated.extend([panel.acc.shape, panel.fin.shape, (1, *panel.wsum.shape)])
        return panel

    def spy_write(self, y0, x0, feats, *args):
        written.append(feats.shape)
        return write(self, y0, x0, feats, *args)

    monkeypatch.setattr(stream_module, "panel_buffers", spy_alloc)
    monkeypatch.setattr(stream_module.ZarrSink, "write", spy_write)
    return allocated, written


def test_panels_with_a_probe_and_resume_across_panels(model, wide_scene, one_pass, tmp_path, monkeypatch) -> None:
    """A Zarr export in 4 panels with a probe, interrupted in the middle of panel 1, resumes (only the windows not
    yet committed are run) and is byte-identical to an uninterrupted run with the same panels.  The stream holds
    no array larger than the planned strip buffer and writes one strip of one panel at a time."""
    from sklearn.linear_model import LogisticRegression

    one = one_pass("patch", 40)
    X = one.values.reshape(one.shape[0], -1).T
    probe = LogisticRegression(max_iter=200).fit(X, (X[:, 0] > np.median(X[:, 0])).astype(int))
    mb = panel_mb(model.embed_dim, "patch", 2)
    kw = dict(output="patch", overlap_m=40, buffer_mb=mb, probe=probe, **WIDE_KW)
    plan = plan_scene(model, wide_scene, patch_size_m=20, window_m=120, overlap_m=40, output="patch", buffer_mb=mb)
    allocated, written = _spy_on_buffers(monkeypatch)
    full = infer_scene(model, wide_scene, out=tmp_path / "full.zarr", **kw)
    monkeypatch.undo()
    D, wc, width = plan.buffer_shape
    assert (plan.n_panels, plan.grid_shape, plan.buffer_shape) == (4, (8, 28), (model.embed_dim, 6, 10))
    assert len(allocated) == 3 * plan.n_panels
    assert all(len(s) == 3 and s[0] <= D and s[1] <= wc and s[2] <= width for s in allocated), allocated
    assert len(written) == plan.n_panels * plan.n_rows
    assert all(s[0] == D and s[1] <= wc and s[2] <= plan.panel_windows * plan.stride_cells for s in written), written
    ref = xr.open_zarr(full)
    np.testing.assert_allclose(ref["anysat_features"].values, one.values, rtol=1e-5, atol=1e-5)
    single_prediction = probe.predict(X).reshape(one.shape[1:])  # what a one-panel run with the probe predicts
    agree = (ref["prediction"].values == single_prediction).mean()
    assert agree > 0.99 and set(np.unique(ref["prediction"].values)) == {0, 1}

    def stop(done: int, total: int) -> None:
        if done == 7:  # panel 0 (2 strips x 2 windows) and strip 0 of panel 1 are committed, strip 1 is running
            raise _Stop("simulated crash")

    out = tmp_path / "resumed.zarr"
    with pytest.raises(_Stop):
        infer_scene(model, wide_scene, out=out, callback=stop, **kw)
    seen: list[int] = []
    infer_scene(model, wide_scene, out=out, callback=lambda d, t: seen.append(d), **kw)
    assert len(seen) == 14 - 6  # 2 x 7 windows in all, 6 committed before the crash
    got = xr.open_zarr(out)
    for v in ("anysat_features", "prediction", "confidence"):
        assert got[v].values.tobytes() == ref[v].values.tobytes(), v
    assert not any(n.startswith("_anysat") for n in os.listdir(out)), "resume state dropped from the result"


def test_gdal_cache_is_capped_during_the_run(model, scene) -> None:
    seen: list[str] = []
    infer_scene(
        model,
        scene,
        output="patch",
        overlap_m=0,
        gdal_cache_mb=48,
        **KW,
        callback=lambda d, t: seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX")),
    )
    assert seen and set(seen) == {48 * 2**20}
    for bad in (0, -1, float("nan"), "64", True):
        with pytest.raises(InputShapeError, match="buffer_mb"):
            plan_scene(model, scene, patch_size_m=20, window_m=120, overlap_m=0, buffer_mb=bad)
        with pytest.raises(InputShapeError, match="gdal_cache_mb"):
            infer_scene(model, scene, output="patch", overlap_m=0, gdal_cache_mb=bad, **KW)


def test_dask_chunked_xarray_cube_equals_the_files(model, series_files, series_mosaic) -> None:
    """The three-date scene as one lazily read, dask-chunked ``(time, band, y, x)`` cube (rioxarray ``chunks=`` + a
    time coordinate) gives exactly the map of the GeoTIFF files; the cube is never loaded whole."""
    pytest.importorskip("dask")
    parts = [rioxarray.open_rasterio(f, chunks={"band": -1, "y": 16, "x": 16}) for f in series_files]
    cube = xr.concat(parts, dim="time").assign_coords(
        time=np.array([f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in DATES], dtype="datetime64[ns]")
    )
    assert cube.chunks is not None and cube.dims == ("time", "band", "y", "x")
    scene = open_rasters(RasterSource(cube, modality="s2"), tile_m=120)
    da = infer_scene(model, scene, output="dense", overlap_m=0, **KW)
    np.testing.assert_array_equal(da.values, series_mosaic.values)
    np.testing.assert_array_equal(da.x.values, series_mosaic.x.values)


def test_cog_of_a_scene_wider_than_a_block_has_overviews(model, tmp_path) -> None:
    """A 3 km wide dense map (300 cells of 10 m, more than one 256-pixel block) gets an average overview and is a
    valid COG; the full-resolution bands equal the Zarr export of the same run (10 windows of 300 m)."""
    files = write_s2_series(tmp_path / "s", height=12, width=300, dates=ONE_DATE)
    wide = open_rasters(RasterSource(files, modality="s2"), tile_m=120)
    kw = {**KW, "window_m": 300, "output": "dense", "overlap_m": 0}
    tif = infer_scene(model, wide, out=tmp_path / "f.tif", **kw)
    zarr_path = infer_scene(model, wide, out=tmp_path / "f.zarr", **kw)
    valid, errors, warnings_ = cog_validate(str(tif), strict=True)
    assert valid and not errors and not warnings_, (errors, warnings_)
    with rasterio.open(tif) as src:
        assert src.width == 300 and src.overviews(1) == [2]
        assert src.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND" and src.compression.name == "deflate"
        full = src.read()
        ovr = src.read(1, out_shape=(6, 150))  # the overview level
    np.testing.assert_array_equal(full, xr.open_zarr(zarr_path)["anysat_features"].values)
    np.testing.assert_allclose(ovr, full[0].reshape(6, 2, 150, 2).mean(axis=(1, 3)), rtol=1e-5, atol=1e-6)
