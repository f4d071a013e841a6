"""The loop without a browser: labels round-trip with their CRS, the probe is stored and cleared with its inputs,
cancel, predictions and review, export under the output root (never clobbering), and copy-as-code."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from anysat_core.errors import ConfigError, OutputExistsError, ProbeError
from app.labels import LabelSet
from app.sources import RasterSpec


@pytest.fixture
def loop(state, tmp_path: Path):
    from app.loop import ProbeLoop

    state.config = type(state.config)(**{**state.config.__dict__, "output_root": tmp_path / "out"})
    state.patch_size_m = 10
    return ProbeLoop(state)


def _label_two_classes(loop, n: int = 3) -> None:
    f = loop.explorer.result.features
    loop.add_class("field")
    loop.add_class("forest")
    for i in range(n):
        loop.label_class = "field"
        loop.add_point(float(f.x[i]), float(f.y[0]))
        loop.label_class = "forest"
        loop.add_point(float(f.x[i]), float(f.y[-1]))


def test_labels_round_trip_through_geojson_and_gpkg_with_crs(tmp_path: Path) -> None:
    labels = LabelSet(crs="EPSG:32631", classes=["a", "b"])
    labels.add_point(389300.0, 5350900.0, "a")
    labels.add_polygon([389300, 389320, 389320], [5350900, 5350900, 5350880], "b")
    for name in ("l.geojson", "l.gpkg"):
        path = labels.save(tmp_path / name)
        back = LabelSet.load(path, "EPSG:32631")
        assert back.crs == "EPSG:32631" and [c for _, c in back.items] == ["a", "b"]
        assert back.items[0][0].equals_exact(labels.items[0][0], 1e-6)
        with pytest.raises(OutputExistsError):
            labels.save(path)
    # labels in another CRS are reprojected into the source's
    wgs = LabelSet.load(tmp_path / "l.geojson", "EPSG:4326")
    assert abs(wgs.items[0][0].x - 1.5) < 0.1 and abs(wgs.items[0][0].y - 48.3) < 0.1


def test_click_in_label_mode_adds_a_label(loop) -> None:
    f = loop.explorer.result.features
    loop.explorer.click_mode = "label"
    loop.explorer.click(float(f.x[0]), float(f.y[0]))
    assert len(loop.labels) == 1 and loop.labels.items[0][1] == loop.label_class


def test_probe_is_stored_then_cleared_when_its_inputs_change(loop) -> None:
    _label_two_classes(loop)
    loop.run_probe()
    assert loop.probe is not None and loop.prediction is not None
    assert set(np.unique(loop.prediction["prediction"].values)) <= {0, 1, 2, 3}
    assert loop.metrics["labels"] == 6 and 0 <= loop.metrics["accuracy"] <= 100
    assert 0 <= loop.metrics["macro_f1"] <= 100 and all(0 <= v <= 100 for v in loop.metrics["per_class_f1"])
    if loop.metrics["accuracy"] == 100:
        assert loop.metrics["macro_f1"] == pytest.approx(100)  # percent, not a fraction
    assert loop.confusion.shape == (4, 4)
    loop.explorer.patch_size_m = 20  # another view: the probe belongs to the old one
    assert loop.probe is None and loop.prediction is None and loop.metrics == {}
    loop.run_probe()
    assert loop.probe is not None
    loop.add_class("water")  # adding a class keeps the probe; changing labels clears it
    f = loop.explorer.result.features
    loop.add_point(float(f.x[1]), float(f.y[1]))
    assert loop.probe is None


def test_probe_with_one_class_is_refused_and_the_session_stays_usable(loop) -> None:
    f = loop.explorer.result.features
    loop.add_point(float(f.x[0]), float(f.y[0]))
    loop.run_probe()
    assert "at least two classes" in loop.explorer.error
    assert loop.probe is None and not loop.running
    with pytest.raises(ProbeError):
        loop.labels.probe_points()


def test_labels_outside_the_view_are_refused(loop) -> None:
    _label_two_classes(loop, 1)
    loop.labels.add_point(0.0, 0.0, "field")
    loop.run_probe()
    assert "outside this view" in loop.explorer.error


def test_cancel_stops_the_probe_within_a_second(loop) -> None:
    from app.loop import Cancelled

    _label_two_classes(loop, 5)
    loop._job += 1
    job = loop._job
    f = loop.explorer.result.features
    points = loop.labels.probe_points()
    started = threading.Event()
    out: dict = {}

    def run() -> None:
        started.set()
        try:
            for _ in range(1000):  # a long job: many refits
                loop._fit(f, points, list(loop.labels.classes), job)
        except Cancelled:
            out["cancelled_at"] = time.perf_counter()

    t = threading.Thread(target=run)
    t.start()
    started.wait()
    time.sleep(0.3)
    t0 = time.perf_counter()
    loop.cancel()
    t.join(5)
    assert not t.is_alive() and out["cancelled_at"] - t0 < 1.0


def test_review_lists_the_least_confident_cells(loop) -> None:
    _label_two_classes(loop)
    loop.run_probe()
    loop.review_k = 3
    cells = loop.least_confident()
    conf = loop.prediction["confidence"].values
    assert len(cells) == 3
    assert cells[0][2] == pytest.approx(float(np.nanmin(conf)))
    assert [c for *_, c in cells] == sorted(c for *_, c in cells)


def test_export_writes_under_the_output_root_and_never_clobbers(loop) -> None:
    import rasterio

    _label_two_classes(loop)
    loop.run_probe()
    loop.export_layer = "prediction"
    path = loop.export()
    assert path.parent == loop.explorer.config.output_root.resolve()
    f = loop.explorer.result.features
    with rasterio.open(path) as src:
        assert src.crs.to_string() == "EPSG:32631"
        assert src.transform.a == pytest.approx(float(f.x[1] - f.x[0]))
        assert src.bounds.left == pytest.approx(float(f.x[0]) - 5.0)
        assert src.tags()["anysat_explorer_layer"] == "prediction"
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        loop.export()
    assert path.read_bytes() == before
    loop.export(overwrite=True)
    for bad in ("../escape.tif", "/tmp/x.tif", "x.png"):
        loop.export_name = bad
        with pytest.raises(ConfigError):
            loop.export()
    loop.export_name = ""
    loop.export_layer, loop.export_format = "pca", "PNG"
    assert loop.export().suffix == ".png"
    loop.export_layer, loop.export_format = "features", "COG"
    cog = loop.export()
    with rasterio.open(cog) as src:
        assert src.count == f.sizes["feature"] and src.profile.get("blockxsize")
    loop.export_layer, loop.export_format = "confidence", "Zarr"
    assert loop.export().suffix == ".zarr"


@pytest.mark.slow
def test_copied_code_reproduces_the_view(loop, tmp_path: Path) -> None:
    _label_two_classes(loop)
    loop.explorer.dates = {"s2": list(range(0, loop.explorer.n_dates("s2"), 2))}
    code = loop.code()
    compile(code, "view.py", "exec")  # valid Python
    script = tmp_path / "view.py"
    out = tmp_path / "rgb.npy"
    script.write_text(code + f"\nimport numpy as np\nnp.save({str(out)!r}, rgb.values)\n")
    import os

    import torch

    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same threads: same float sums
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, env=env)
    np.testing.assert_allclose(np.load(out), loop.explorer.result.pca.values, atol=1e-5)
    assert "fit_from_points" in code and json.dumps("field") not in code.split("classes =")[0]


@pytest.mark.slow
def test_tile_probe_across_tiles_with_label_efficiency(loop) -> None:
    loop.tile_tiles = 40
    loop.run_tile_probe(efficiency=True)
    m = loop.tile_metrics
    assert m["tiles"] == 40 and m["task"] == "multilabel" and 0 <= m["F1_macro"] <= 1
    assert loop.efficiency and [r["n_labels"] for r in loop.efficiency] == sorted(
        r["n_labels"] for r in loop.efficiency
    )


@pytest.mark.slow
def test_tile_probe_needs_tile_labels(loop) -> None:
    from app.views.controls import RasterForm

    form = RasterForm(state=loop.explorer)
    form.path.value = "s2/*.tif"
    form._open()
    loop.run_tile_probe()
    assert "no tile labels" in loop.explorer.error


@pytest.fixture
def scene_loop(loop, data_root: Path):
    """The loop on the data root's S2 raster (640 m) cut into 320 m tiles: a 2 x 2 window scene."""
    paths = tuple(str(p) for p in sorted((data_root / "s2").glob("*.tif")))
    loop.explorer.open_raster(RasterSpec(paths, "s2", tile_m=320.0))
    assert loop.explorer.error == "", loop.explorer.error
    loop.explorer.patch_size_m = 40
    return loop


@pytest.mark.slow
def test_scene_runs_to_100_percent_and_a_cancelled_run_resumes_to_the_same_output(scene_loop) -> None:
    import rasterio

    lp = scene_loop
    seen: list[int] = []
    lp.param.watch(lambda e: seen.append(e.new), "progress")
    lp.scene_name = "full.tif"
    lp.run_scene()
    assert lp.progress == 100 and seen and seen[-1] == 100, lp.explorer.error
    assert lp.scene_rgb is not None and lp.scene_rgb.sizes["band"] == 3
    full = Path(lp.scene_output)

    lp.scene_name = "resumed.tif"
    calls = {"n": 0}

    def cancel_after_one(*args) -> None:  # the user presses cancel during the first window
        calls["n"] += 1
        lp.cancel()

    lp.param.watch(lambda e: cancel_after_one() if e.new > 0 and calls["n"] == 0 else None, "progress")
    lp.run_scene()
    assert "cancelled" in lp.message and not Path(lp.explorer.config.output_root / "resumed.tif").exists()
    partial = [p for p in Path(lp.explorer.config.output_root).iterdir() if "resumed" in p.name]
    assert partial, "the partial store of the cancelled run is kept"
    calls["n"] = 1  # no more cancelling
    lp.run_scene()  # resumes
    assert lp.progress == 100 and Path(lp.scene_output).name == "resumed.tif"
    with rasterio.open(full) as a, rasterio.open(lp.scene_output) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.crs == b.crs and a.transform == b.transform


def test_scene_needs_a_raster_source(loop) -> None:
    loop.run_scene()
    assert "not a raster scene" in loop.explorer.error


def test_labels_and_predicted_classes_export_as_polygons(loop) -> None:
    import geopandas as gpd

    _label_two_classes(loop)
    loop.run_probe()
    out = loop.export_vectors("prediction", "classes.gpkg")
    frame = gpd.read_file(out)
    assert frame.crs.to_string() == "EPSG:32631" and set(frame["class"]) <= {"field", "forest"}
    assert frame.geometry.area.sum() == pytest.approx(60 * 60)  # the polygons tile the 60 m view
    labels = loop.export_vectors("labels", "labels.geojson")
    assert len(gpd.read_file(labels)) == 6
    with pytest.raises(OutputExistsError):
        loop.export_vectors("labels", "labels.geojson")


@pytest.mark.slow
def test_pixel_probe_on_dataset_segmentation_labels(loop) -> None:
    loop.seg_tiles = 10
    loop.run_dataset_pixel_probe()
    m = loop.tile_metrics
    assert loop.explorer.error == "" and m["tiles"] == 10 and 0 <= m["mIoU"] <= 100 and m["pixels"] > 0
    assert loop.prediction is not None and len(loop.prediction_classes) == 8
    assert "prediction" in loop.explorer.layers


@pytest.mark.slow
def test_dataset_pixel_probe_needs_segmentation_labels(loop, data_root: Path) -> None:
    paths = tuple(str(p) for p in sorted((data_root / "s2").glob("*.tif")))
    loop.explorer.open_raster(RasterSpec(paths, "s2"))
    loop.run_dataset_pixel_probe()
    assert "no segmentation labels" in loop.explorer.error


def test_a_polygon_drawn_on_the_map_becomes_a_label_in_the_source_crs(loop) -> None:
    from app.views.display import to_display_xy
    from app.views.map import MapView

    view = MapView(state=loop.explorer, loop=loop)
    f = loop.explorer.result.features
    corners = [(float(f.x[0]), float(f.y[0])), (float(f.x[2]), float(f.y[0])), (float(f.x[2]), float(f.y[2]))]
    disp = [to_display_xy(x, y, "EPSG:32631") for x, y in corners]  # what the PolyDraw tool sends (Web Mercator)
    view._on_polygons({"xs": [[p[0] for p in disp]], "ys": [[p[1] for p in disp]]})
    assert len(loop.labels) == 1
    geom, cls = loop.labels.items[0]
    assert geom.geom_type == "Polygon" and cls == loop.label_class
    xs, ys = geom.exterior.coords.xy
    assert abs(min(xs) - corners[0][0]) < 0.01 and abs(max(ys) - corners[0][1]) < 0.01  # back in UTM metres
    view._on_polygons({"xs": [[p[0] for p in disp]], "ys": [[p[1] for p in disp]]})  # the same data: no new label
    assert len(loop.labels) == 1


@pytest.mark.slow
def test_scene_runs_on_a_dask_cluster_when_a_scheduler_is_configured(scene_loop) -> None:
    import rasterio
    from distributed import LocalCluster

    lp = scene_loop
    lp.scene_name = "local.tif"
    lp.run_scene()
    local = Path(lp.scene_output)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        cfg = lp.explorer.config
        lp.explorer.config = type(cfg)(**{**cfg.__dict__, "scheduler": cluster.scheduler_address})
        lp.scene_name = "dask.tif"
        lp.run_scene()
    assert lp.progress == 100 and lp.explorer.error == "", lp.explorer.error
    with rasterio.open(local) as a, rasterio.open(lp.scene_output) as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-5)
