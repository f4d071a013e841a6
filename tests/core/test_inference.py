"""Scene-scale inference (anysat_core.inference): sliding windows, blending, streamed COG/Zarr output, resume.

The scene: three dated S2 GeoTIFFs (file names carry the dates) of 36 x 24 pixels at 10 m (360 m x 240 m) in
UTM 31N with random values, written by the tests.  The model is AnySat tiny with random weights.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import torch
import xarray as xr
from rio_cogeo.cogeo import cog_validate

from anysat_core import AnySat, InputShapeError, OutputError, OutputExistsError, PatchSizeError
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.features import extract_features, weights_sha256
from anysat_core.inference import OutputWriteError, infer_scene, plan_scene, write_zarr
from tests.helpers.scenes import DATES, X0, Y0, write_s2_series

KW = dict(patch_size_m=20, window_m=120, progress=False)



@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return write_s2_series(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def scene(files):
    return open_rasters(RasterSource(files, modality="s2"), tile_m=120)


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="tiny").eval()


@pytest.fixture(scope="module")
def patch_map(model, scene) -> xr.DataArray:
    """Patch features with 40 m overlap, in memory: 4 x 3 windows of 120 m, stride 80 m."""
    return infer_scene(model, scene, output="patch", overlap_m=40, **KW)


def _tile_features(model, scene, row, col, output):
    return extract_features(model, scene.tile(row, col), patch_size_m=20, output=output, output_modality="s2").values


# ------------------------------------------------------------------------------------------------ equality with tiles
def test_without_overlap_the_scene_is_the_tile_mosaic(model, scene) -> None:
    da = infer_scene(model, scene, output="dense", overlap_m=0, **KW)
    assert da.dims == ("feature", "y", "x") and da.shape == (2 * model.embed_dim, 24, 36)
    for r in range(2):
        for c in range(3):
            ref = _tile_features(model, scene, r, c, "dense")  # (2D, 12, 12) at 10 m
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
    sub = open_rasters(RasterSource(cropped, modality="s2", dates=list(DATES)), tile_m=120)
    ref = _tile_features(model, sub, 0, 0, "dense")
    np.testing.assert_allclose(da.values[:, 12:16, 12:16], ref[:, 4:8, 4:8], atol=1e-4)
    # the overlap band is a blend: it differs from both windows but lies between them
    assert not np.allclose(da.values[:, :8, 8:12], _tile_features(model, scene, 0, 0, "dense")[:, :8, 8:12], atol=1e-3)


def _jumps(f: np.ndarray, axis: int) -> np.ndarray:
    """Mean L2 feature difference between neighbouring cells along ``axis`` (1 = y, 2 = x): one value per pair."""
    d = np.linalg.norm(np.diff(f, axis=axis), axis=0)
    return d.mean(axis=1 - (axis - 1))


def test_no_seams_across_window_borders(model, scene) -> None:
    """Seam measure: the jump between neighbouring patch cells (L2 norm of the feature difference, averaged along
    the other axis), one value per pair of neighbouring rows/columns.

    * Hard mosaic (overlap 0, windows of 6 cells): at the pairs where one window ends and the next starts the jump
      is ~7-8x the median jump between interior neighbours (random weights: the combiner mixes all patches of a
      window, so each window carries its own context) -- the measure sees seams.
    * Blended (overlap 60 m = 3 cells, stride 3 cells): at every pair where a window starts or ends the jump is
      within 1.5x the hard mosaic's interior median (measured ~1.0x), and the largest jump anywhere is below half
      the smallest hard seam (measured ~0.3x): the change of context is spread over the overlap band.
    """
    hard = infer_scene(model, scene, output="patch", overlap_m=0, **KW).values
    soft = infer_scene(model, scene, output="patch", overlap_m=60, **KW).values
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
def test_cog_and_zarr_are_georeferenced_with_provenance(model, scene, patch_map, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    D = model.embed_dim
    X = patch_map.values.reshape(D, -1).T
    y = np.arange(X.shape[0]) % 3
    probe = LogisticRegression(max_iter=200).fit(X, y)

    zpath = infer_scene(model, scene, output="patch", overlap_m=40, out=tmp_path / "f.zarr", probe=probe, **KW)
    tpath = infer_scene(model, scene, output="patch", overlap_m=40, out=tmp_path / "f.tif", probe=probe, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "f.zarr"]  # no partial/temporary leftovers
    xs = X0 + 10 + 20 * np.arange(18)  # patch centres of 20 m cells from the scene corner
    ys = Y0 - 10 - 20 * np.arange(12)
    expected_attrs = {
        "model": "AnySat-tiny", "checkpoint": weights_sha256(model), "patch_size_m": "20", "window_m": "120",
        "overlap_m": "40", "output": "patch", "modalities": "s2", "anysat_core_version": __import__("anysat_core").__version__,
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
def test_interrupted_export_resumes_to_the_same_file(model, scene, tmp_path, suffix) -> None:
    full = infer_scene(model, scene, output="patch", overlap_m=40, out=tmp_path / f"full{suffix}", **KW)

    def stop_after_5(done: int, total: int) -> None:
        if done == 5:  # strip 0 (4 windows) is committed, strip 1 is half done
            raise _Stop("simulated crash")

    out = tmp_path / f"resumed{suffix}"
    with pytest.raises(_Stop):
        infer_scene(model, scene, output="patch", overlap_m=40, out=out, callback=stop_after_5, **KW)
    assert not out.exists()  # nothing under the final name
    assert (tmp_path / f".resumed{suffix}.partial.zarr").is_dir()
    seen: list[int] = []
    infer_scene(model, scene, output="patch", overlap_m=40, out=out, callback=lambda d, t: seen.append(d), **KW)
    assert len(seen) == 8  # strips 1 and 2 only: the finished strip was not recomputed
    assert not (tmp_path / f".resumed{suffix}.partial.zarr").exists()
    if suffix == ".zarr":
        a, b = xr.open_zarr(full), xr.open_zarr(out)
        assert a["anysat_features"].values.tobytes() == b["anysat_features"].values.tobytes()
        assert a.attrs == b.attrs
    else:
        with rasterio.open(full) as fa, rasterio.open(out) as fb:
            assert fa.read().tobytes() == fb.read().tobytes()
            assert fa.tags() == fb.tags()
            pa, pb = dict(fa.profile), dict(fb.profile)
            assert np.isnan(pa.pop("nodata")) and np.isnan(pb.pop("nodata")) and pa == pb


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
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        da = infer_scene(model, scene, output="patch", overlap_m=40, client=client, **KW)
    np.testing.assert_array_equal(da.values, patch_map.values)
    assert da.attrs == patch_map.attrs


# ------------------------------------------------------------------------------------------------ memory
def _traced_peak(model, scene, kw: dict, out: Path) -> int:
    """Peak of Python/numpy allocations (tracemalloc) of a streamed export, after a warm-up export (lazy imports,
    caches, zarr's first use)."""
    infer_scene(model, scene, **kw, progress=False, out=out.with_name(f"warm-{out.name}"), batch_size=4)
    gc.collect()  # garbage left by earlier tests would otherwise be freed (or not) at random points of the run
    tracemalloc.start()
    try:
        infer_scene(model, scene, **kw, progress=False, out=out, batch_size=4)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_strip_not_the_scene(model, tmp_path) -> None:
    """The strip accumulator (the largest array held) has the same shape for a 240 m and a 720 m high scene, and
    the traced peak of Python/numpy allocations (tracemalloc) of a streamed dense Zarr export grows by < 30 % for a
    3x taller scene."""
    small = open_rasters(RasterSource(write_s2_series(tmp_path / "s", height=24), modality="s2"), tile_m=120)
    tall = open_rasters(RasterSource(write_s2_series(tmp_path / "t", height=72), modality="s2"), tile_m=120)
    kw = dict(patch_size_m=20, window_m=120, overlap_m=40, output="dense")
    ps, pt = plan_scene(model, small, **kw), plan_scene(model, tall, **kw)
    assert pt.grid_shape[0] == 3 * ps.grid_shape[0] and pt.n_rows > 2 * ps.n_rows
    assert ps.buffer_shape == pt.buffer_shape == (2 * model.embed_dim, 12, 36)

    p_small = _traced_peak(model, small, kw, tmp_path / "s.zarr")
    p_tall = _traced_peak(model, tall, kw, tmp_path / "t.zarr")
    assert p_tall < 1.3 * p_small, (p_small, p_tall)


# ------------------------------------------------------------------------------------------------ panels (width)
@pytest.fixture(scope="module")
def wide_scene(tmp_path_factory):
    """720 m x 240 m: 3 x 9 windows of 120 m with a stride of 80 m."""
    files = write_s2_series(tmp_path_factory.mktemp("wide"), height=24, width=72, seed=1)
    return open_rasters(RasterSource(files, modality="s2"), tile_m=120)


def _panel_mb(model, output: str, windows: int, overlap_m: float = 40) -> float:
    """A ``buffer_mb`` that fits exactly ``windows`` window columns of 120 m (cells: 20 m patch, 10 m dense)."""
    D = model.embed_dim * (2 if output == "dense" else 1)
    cell = 20 if output == "patch" else 10
    wc = 120 // cell
    sc = wc - int(overlap_m // cell)
    return ((windows - 1) * sc + wc) * 4 * (2 * D + 1) * wc / 2**20 + 1e-6


@pytest.mark.parametrize("output,overlap", [("patch", 40), ("dense", 40), ("patch", 0)])
def test_panels_equal_one_pass(model, wide_scene, output, overlap) -> None:
    """A scene processed in panels of 2 window columns (5 panels, overlap columns carried between them) equals the
    one-panel result: exactly where one panel finishes a column alone, up to float rounding in shared columns."""
    kw = dict(output=output, overlap_m=overlap, **KW)
    one = infer_scene(model, wide_scene, **kw)
    plan = plan_scene(model, wide_scene, patch_size_m=20, window_m=120, overlap_m=overlap, output=output,
                      buffer_mb=_panel_mb(model, output, 2, overlap))
    assert plan.n_panels == (5 if overlap else 3) and plan.panel_windows == 2
    many = infer_scene(model, wide_scene, **kw, buffer_mb=_panel_mb(model, output, 2, overlap))
    assert np.isfinite(many.values).all()
    np.testing.assert_allclose(many.values, one.values, rtol=1e-5, atol=1e-5)
    assert many.attrs == one.attrs and many.rio.transform() == one.rio.transform()


def test_panels_with_a_probe_and_resume_across_panels(model, wide_scene, tmp_path) -> None:
    """A Zarr export in 5 panels with a probe, interrupted in the middle of panel 1, resumes (only the windows not
    yet committed are run) and is byte-identical to an uninterrupted run with the same panels."""
    from sklearn.linear_model import LogisticRegression

    one = infer_scene(model, wide_scene, output="patch", overlap_m=40, **KW)
    X = one.values.reshape(one.shape[0], -1).T
    probe = LogisticRegression(max_iter=200).fit(X, (X[:, 0] > np.median(X[:, 0])).astype(int))
    mb = _panel_mb(model, "patch", 2)
    kw = dict(output="patch", overlap_m=40, buffer_mb=mb, probe=probe, **KW)
    full = infer_scene(model, wide_scene, out=tmp_path / "full.zarr", **kw)
    ref = xr.open_zarr(full)
    single = infer_scene(model, wide_scene, output="patch", overlap_m=40, probe=probe, **KW)
    np.testing.assert_allclose(ref["anysat_features"].values, single["anysat_features"].values, rtol=1e-5, atol=1e-5)
    agree = (ref["prediction"].values == single["prediction"].values).mean()
    assert agree > 0.99 and set(np.unique(ref["prediction"].values)) == {0, 1}

    def stop(done: int, total: int) -> None:
        if done == 10:  # panel 0 (3 strips x 2 windows) and strip 0 of panel 1 are committed, strip 1 is running
            raise _Stop("simulated crash")

    out = tmp_path / "resumed.zarr"
    with pytest.raises(_Stop):
        infer_scene(model, wide_scene, out=out, callback=stop, **kw)
    seen: list[int] = []
    infer_scene(model, wide_scene, out=out, callback=lambda d, t: seen.append(d), **kw)
    assert len(seen) == 27 - 8  # 3 x 9 windows in all, 8 committed before the crash
    got = xr.open_zarr(out)
    for v in ("anysat_features", "prediction", "confidence"):
        assert got[v].values.tobytes() == ref[v].values.tobytes(), v
    assert not any(n.startswith("_anysat") for n in os.listdir(out)), "resume state dropped from the result"


def test_memory_is_bounded_in_width_too(model, tmp_path) -> None:
    """With panels the accumulator has the same shape for a 360 m and a 1080 m wide scene, and the traced peak of
    Python/numpy allocations of a streamed dense Zarr export grows by < 30 % for the 3x wider scene (measured
    1.02-1.05x), while the same wide scene in one panel peaks > 2x higher (measured 2.7x): the measure sees it."""
    narrow = open_rasters(RasterSource(write_s2_series(tmp_path / "n", width=36), modality="s2"), tile_m=120)
    wide = open_rasters(RasterSource(write_s2_series(tmp_path / "w", width=108), modality="s2"), tile_m=120)
    base = dict(patch_size_m=20, window_m=120, overlap_m=40, output="dense")
    kw = dict(base, buffer_mb=_panel_mb(model, "dense", 4))
    pn, pw = plan_scene(model, narrow, **kw), plan_scene(model, wide, **kw)
    assert pw.grid_shape[1] == 3 * pn.grid_shape[1] and pw.n_panels == 4 and pn.n_panels == 1
    assert pn.buffer_shape == pw.buffer_shape == (2 * model.embed_dim, 12, 36)
    assert plan_scene(model, wide, **base, buffer_mb=1000).n_panels == 1

    p_narrow = _traced_peak(model, narrow, kw, tmp_path / "n.zarr")
    p_wide = _traced_peak(model, wide, kw, tmp_path / "w.zarr")
    p_one_panel = _traced_peak(model, wide, dict(base, buffer_mb=1000), tmp_path / "w1.zarr")
    assert p_wide < 1.3 * p_narrow, (p_narrow, p_wide)
    assert p_one_panel > 2 * p_narrow, (p_narrow, p_one_panel)


def test_gdal_cache_is_capped_during_the_run(model, scene) -> None:
    seen: list[str] = []
    infer_scene(model, scene, output="patch", overlap_m=0, gdal_cache_mb=48, **KW,
                callback=lambda d, t: seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX")))
    assert seen and set(seen) == {48 * 2**20}
    for bad in (0, -1, float("nan"), "64", True):
        with pytest.raises(InputShapeError, match="buffer_mb"):
            plan_scene(model, scene, patch_size_m=20, window_m=120, overlap_m=0, buffer_mb=bad)
        with pytest.raises(InputShapeError, match="gdal_cache_mb"):
            infer_scene(model, scene, output="patch", overlap_m=0, gdal_cache_mb=bad, **KW)


def test_dask_chunked_xarray_cube_equals_the_files(model, files, patch_map) -> None:
    """The scene as one lazily read, dask-chunked ``(time, band, y, x)`` cube (rioxarray ``chunks=`` + a time
    coordinate) gives exactly the map of the GeoTIFF files; the cube is never loaded whole."""
    pytest.importorskip("dask")
    parts = [rioxarray.open_rasterio(f, chunks={"band": -1, "y": 16, "x": 16}) for f in files]
    cube = xr.concat(parts, dim="time").assign_coords(time=np.array([f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in DATES],
                                                                    dtype="datetime64[ns]"))
    assert cube.chunks is not None and cube.dims == ("time", "band", "y", "x")
    scene = open_rasters(RasterSource(cube, modality="s2"), tile_m=120)
    da = infer_scene(model, scene, output="patch", overlap_m=40, **KW)
    np.testing.assert_array_equal(da.values, patch_map.values)
    np.testing.assert_array_equal(da.x.values, patch_map.x.values)


def test_cog_of_a_scene_wider_than_a_block_has_overviews(model, tmp_path) -> None:
    """A 3 km wide dense map (300 cells of 10 m, more than one 256-pixel block) gets an average overview and is a
    valid COG; the full-resolution bands equal the Zarr export of the same run."""
    wide = open_rasters(RasterSource(write_s2_series(tmp_path / "s", height=12, width=300), modality="s2"), tile_m=120)
    kw = dict(output="dense", overlap_m=0, **KW)
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
