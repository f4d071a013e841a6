"""The explorer's state without a browser: recomputation, valid choices, shared basis, similarity, stale results,
the feature cache, own rasters and errors."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.resources import FEATURE_CACHE
from app.sources import RasterSpec


def test_starts_with_a_pca_map(state) -> None:
    res = state.result
    assert res is not None and state.error == ""
    assert res.pca.dims == ("band", "y", "x") and res.pca.sizes["band"] == 3
    assert state.modalities == ["s2", "s1-asc"]  # the shipped weights read these two of the tile's three
    assert "aerial" in state.param.input_modality.objects
    assert state.input_image is not None and state.input_image.dtype == np.uint8


def test_toggling_a_modality_recomputes_with_that_subset_only(state) -> None:
    state.modalities = ["s1-asc"]
    assert state.result.request.modalities == ("s1-asc",)
    assert state.result.features.attrs["modalities"] == "s1-asc"
    state.modalities = ["s2", "s1-asc"]
    assert state.result.request.modalities == ("s1-asc", "s2")


@pytest.mark.slow
def test_only_valid_patch_sizes_can_be_chosen(state) -> None:
    sizes = state.param.patch_size_m.objects
    assert sizes == [10, 20, 30, 60]  # the divisors of the 60 m tile that are multiples of 10 m
    for p in sizes:
        state.patch_size_m = p
        assert state.error == ""
        assert state.result.features.sizes["x"] == 60 // p
    with pytest.raises(ValueError):
        state.patch_size_m = 25


def test_shared_basis_gives_identical_colours_to_identical_vectors(state) -> None:
    state.pca_basis = "shared"
    a = state.result.features
    basis = state._shared_pca
    state.tile = "r05c06"
    assert state._shared_pca is basis  # fitted once, reused on the next tile
    b = state.result.features.copy()
    b[:, 0, 0] = a[:, 1, 1].values  # the same vector in the other tile
    colours_a = state.result.pca  # noqa: F841  (computed with the shared basis)
    ca = basis.transform(a)[:, 1, 1].values
    cb = basis.transform(b)[:, 0, 0].values
    np.testing.assert_array_equal(ca, cb)
    # and the state's own colours of tile a equal the basis applied to a
    state.tile = "r05c05"
    np.testing.assert_array_equal(state.result.pca[:, 1, 1].values, ca)


def test_similarity_is_maximal_at_the_clicked_cell(state) -> None:
    f = state.result.features
    x, y = float(f.x[1]), float(f.y[2])
    state.click(x, y)
    sim = state.result.similarity
    assert "similarity" in state.layers
    assert float(sim.sel(x=x, y=y)) == pytest.approx(float(sim.max()), abs=1e-6)
    assert float(sim.sel(x=x, y=y)) == pytest.approx(1.0, abs=1e-5)
    state.click_mode = "negative"
    state.click(float(f.x[0]), float(f.y[0]))
    assert state.negatives and state.result.similarity is not None


def test_a_click_on_a_neighbour_opens_it(state) -> None:
    l, b, r, t = state.source_obj.footprints()[state.source_obj.index_of("r05c06")]
    state.click((l + r) / 2, (b + t) / 2)
    assert state.tile == "r05c06"


def test_a_stale_request_never_overwrites_a_newer_result(data_root: Path) -> None:
    from app.config import AppConfig
    from app.state import ExplorerState

    class Doc:  # stands for a Bokeh document: callbacks run when the test says so
        session_context = True

        def __init__(self) -> None:
            self.callbacks: list = []

        def add_next_tick_callback(self, cb) -> None:
            self.callbacks.append(cb)

    doc = Doc()
    st = ExplorerState(AppConfig(data_roots=(data_root,), size="test", offline=True), tile="r05c05")
    st._doc = doc  # from now on, results are applied through the "document", as in a served session
    gate = threading.Event()
    st.compute_hook = lambda req: gate.wait(30) if req.patch_size_m == 10 else None
    try:
        st.patch_size_m = 10  # slow request (waits on the gate)
        st.patch_size_m = 30  # newer request, finishes first
        deadline = time.time() + 60
        while len(doc.callbacks) < 1 and time.time() < deadline:
            time.sleep(0.02)
        assert len(doc.callbacks) == 1  # only the newer one is done
    finally:
        gate.set()
    while len(doc.callbacks) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert len(doc.callbacks) == 2
    for cb in doc.callbacks:  # the newer result first, then the stale one
        cb()
    assert st.result.request.patch_size_m == 30
    assert st.result.features.sizes["x"] == 2
    assert not st.busy


def test_a_cache_hit_does_not_recompute(state) -> None:
    FEATURE_CACHE.clear()
    state.patch_size_m = 10
    misses = FEATURE_CACHE.misses
    assert misses == 1
    state.patch_size_m = 30
    assert FEATURE_CACHE.misses == misses + 1
    hits = FEATURE_CACHE.hits
    state.patch_size_m = 10  # seen before: served from the cache
    assert FEATURE_CACHE.misses == misses + 1
    assert FEATURE_CACHE.hits == hits + 1


def test_date_subset_and_one_date(state) -> None:
    T = state.n_dates("s2")
    state.dates = {"s2": [3]}
    assert dict(state.result.request.dates) == {"s2": (3,)}
    assert state.error == ""
    state.dates = {"s2": list(range(T))}
    assert state.result.request.dates == ()  # all dates: no subset in the key


def test_random_weights_are_labelled_and_offer_all_tile_modalities(state) -> None:
    state.weights = "random"
    assert "RANDOM INIT" in state.model_label
    assert state.param.modalities.objects == ["aerial", "s2", "s1-asc"]
    state.modalities = ["aerial"]
    state.output = "dense"
    assert state.result.features.sizes["x"] == 30  # aerial sub-patches of 2 m over the 60 m tile


def test_clusters_and_compare(state) -> None:
    state.layers = [*state.layers, "clusters"]
    assert state.result.clusters is not None
    assert int(state.result.clusters.max()) < state.n_clusters
    state.compare_panes = state.default_panes()
    assert len(state.compare_pca) == 2 and state.compare_agreement is not None
    a, b = state.compare_pca
    assert a.sizes != b.sizes or not np.allclose(a.values, b.values, equal_nan=True)


@pytest.mark.slow
def test_own_raster_opens_and_errors_keep_the_session(state, data_root: Path, caplog) -> None:
    from app.views.controls import RasterForm

    form = RasterForm(state=state)
    form.path.value = "s2/*.tif"
    form._open()
    assert state.error == "", state.error
    assert state.source.startswith("raster:")
    assert state.result.request.modalities == ("s2",)
    with caplog.at_level(logging.INFO, logger="anysat_explorer"):
        form.path.value = "../../../etc/passwd"
        form._open()
    assert "outside the data roots" in state.error
    assert not any(r.exc_info for r in caplog.records)  # an expected user error: no traceback
    state.error = ""
    state.patch_size_m = state.param.patch_size_m.objects[0]  # still usable
    assert state.error == ""


def test_upload_is_capped(state) -> None:
    from app.views.controls import RasterForm

    state.config = type(state.config)(**{**state.config.__dict__, "upload_max_mb": 0.001})
    form = RasterForm(state=state)
    form.upload.filename = "big.tif"
    form.upload.value = b"0" * 5000
    assert "above the cap" in state.error


def test_bad_raster_spec_is_shown(state) -> None:
    state.open_raster(RasterSpec(("s2/missing.tif",), "s2"))
    assert "does not exist" in state.error
    assert state.source == "geoplex-mini"


def test_a_raster_in_other_units_opens_with_a_lasting_notice(state, data_root) -> None:
    """Reflectance in 0-1 against statistics of reflectance x 10000: the scene opens and the page says why its maps
    would mislead and how to fix it, as long as that source is shown."""
    from tests.helpers.scenes import s2_values, write_s2_tif

    write_s2_tif(data_root / "refl" / "s2_20200601.tif", s2_values(np.random.default_rng(1), 24, 24) / 10_000)
    assert state.notice == ""
    state.open_raster(RasterSpec(("refl/s2_20200601.tif",), "s2", dates=("2020-06-01",)))
    assert state.error == "" and state.source.startswith("raster:")
    assert "s2 values look like other units" in state.notice and "multiply them by 10000" in state.notice
    assert state.result is not None  # the session goes on
    from app.views.map import FOOTPRINT_SLOTS, MapView

    one_tile = MapView(state=state)._footprints()
    assert len(one_tile.split()) == FOOTPRINT_SLOTS  # one footprint and zero-area fillers: a fixed polygon count
    assert [p.dimension_values("tile")[0] for p in one_tile.split()].count("") == FOOTPRINT_SLOTS - 1
    state.source = "geoplex-mini"
    assert state.notice == ""
    assert len(MapView(state=state)._footprints().split()) == FOOTPRINT_SLOTS


def test_cluster_legend_lists_every_cluster(state) -> None:
    from app.views.map import MapView

    state.layers = [*state.layers, "clusters"]
    view = MapView(state=state)
    html = view._legend().object
    k = len(np.unique(state.result.clusters.values))
    assert html.count("cluster ") == k and "k-means" in html


def test_a_click_reports_map_coordinates_and_lonlat(state) -> None:
    f = state.result.features
    state.click(float(f.x[0]), float(f.y[0]))
    assert "EPSG:32631" in state.last_click and "lat 48." in state.last_click and "lon 1." in state.last_click


def test_band_order_is_passed_to_the_raster(state, data_root) -> None:
    from app.views.controls import RasterForm

    form = RasterForm(state=state)
    form.path.value = "s2/*.tif"
    assert "closest is s2" in form.note.object
    form.bands.value = "1,2,3"  # three bands for a 10-band modality: refused with the fix
    form._open()
    assert "s2" in state.error and state.source == "geoplex-mini"


def test_an_upload_that_is_not_a_raster_is_refused_and_nothing_breaks(state) -> None:
    from app.views.controls import RasterForm

    form = RasterForm(state=state)
    form.upload.filename = "notes.txt"
    form.upload.value = b"hello"
    assert "expected a raster file" in state.error
    form.upload.filename = "fake.tif"
    form.upload.value = b"this is not a GeoTIFF"
    assert "could not read fake.tif" in state.error and state.source == "geoplex-mini"
    assert (form._upload_dir / "fake.tif").exists()  # kept in the private upload folder, not elsewhere
    state.error = ""
    state.patch_size_m = 30
    assert state.error == "" and state.result.request.patch_size_m == 30


def test_unavailable_weights_are_said_on_the_page_not_silently_replaced(tmp_path) -> None:
    from app.config import AppConfig
    from app.state import ExplorerState

    st = ExplorerState(AppConfig.from_env(["--offline", "--weights", "base"]))
    if "base" in st.param.weights.objects:
        pytest.skip("the released base weights are on this machine")
    assert st.weights == "geoplex-mini"
    assert "'base' are not available" in st.notice and "ANYSAT_WEIGHTS" in st.notice
    assert st.error == ""  # the session works with the shipped weights


def test_compare_editors_show_panes_set_from_code(state) -> None:
    from app.state import PaneSpec
    from app.views.compare import CompareView

    view = CompareView(state=state)
    sizes = list(state.param.patch_size_m.objects)
    mods = list(state.param.modalities.objects)
    panes = [PaneSpec(tuple(mods), sizes[0]), PaneSpec((mods[0],), sizes[-1]), PaneSpec((mods[-1],), sizes[0])]
    state.compare_panes = panes
    assert view.n.value == 3
    shown = [(tuple(m.value), p.value) for m, p in view._editors]
    assert shown == [(p.modalities, p.patch_size_m) for p in panes]
    view._run()  # pressing Compare keeps them
    assert [(p.modalities, p.patch_size_m) for p in state.compare_panes] == shown
