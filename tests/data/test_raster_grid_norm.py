"""Own rasters, exactly: tiles on the reference raster's pixel grid, reads without resampling when a raster is on its
grid, slivers, explicit origins, and normalisation by default with named statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from anysat_core import AnySat, infer_scene
from anysat_core.data.normalize import Normalize
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.errors import ChannelMismatchError, ConfigError, DatasetNotFoundError, UnitsMismatchWarning
from anysat_core.modalities import MODALITIES, NormStats
from tests.helpers.shared import TREESAT, TREESAT_NAME, shared_file, treesat_root

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 4_800_000.0


def write_tif(path: Path, data: np.ndarray, transform: Affine, crs: str = UTM, nodata: float | None = None) -> Path:
    """Write a ``(C, H, W)`` GeoTIFF."""
    C, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=h, width=w, count=C, dtype=data.dtype, crs=crs, transform=transform,
        nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


def ramp_array(C: int, h: int, w: int, scale: float = 1.0) -> np.ndarray:
    """``(C, h, w)`` float32 values that differ at every pixel and band (any shift or interpolation shows)."""
    c, r, x = np.meshgrid(np.arange(C), np.arange(h), np.arange(w), indexing="ij")
    return ((1000 * c + 37 * r + x + 0.25 * (r * x % 7)) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------ TreeSatAI-TS
def _product_dates(names: np.ndarray, field: int) -> list[str]:
    return [(n.decode() if isinstance(n, bytes) else str(n)).split("_")[field][:8] for n in names]


@pytest.fixture(scope="module")
def treesat(tmp_path_factory) -> dict:
    """The real TreeSatAI-TS tile: the loader's samples (raw and normalised) and the arrays a user would export."""
    h5py = pytest.importorskip("h5py")
    from anysat_core.data.datasets.treesatai_ts import TreeSatAITS

    tmp = tmp_path_factory.mktemp("treesat_rasters")
    root = treesat_root(tmp)
    samples = {
        norm: TreeSatAITS(root, "test", modalities=["aerial", "s2", "s1"], normalize=norm, crop="centre")[0]
        for norm in (False, True)
    }
    with h5py.File(TREESAT / f"{TREESAT_NAME}.h5") as f:
        s2, s2_dates = f["sen-2-data"][:], _product_dates(f["sen-2-products"][:], 2)
        s1_dates = _product_dates(f["sen-1-asc-products"][:], 4)
    s1 = torch.load(TREESAT / f"{TREESAT_NAME}.pth").numpy()
    return {"tmp": tmp, "samples": samples, "s2": (s2, s2_dates), "s1": (s1, s1_dates)}


def _as_rasters(treesat: dict, n_dates: int) -> list[RasterSource]:
    """The tile as a user would have it: its aerial GeoTIFF, plus one GeoTIFF per date (the first ``n_dates``) of
    S2 and S1 made from its HDF5/.pth, placed on the 60 m centre of the aerial tile (the loader's crop [2:302])."""
    aerial = shared_file(TREESAT / f"{TREESAT_NAME}.tif")
    with rasterio.open(aerial) as src:
        x0, y0 = src.transform.c + 0.4, src.transform.f - 0.4  # the centre crop's corner
        crs = src.crs.to_string()
    t = Affine(10, 0, x0, 0, -10, y0)
    sources = [RasterSource(aerial, "aerial")]
    for mod in ("s2", "s1"):
        arr, dates = treesat[mod]
        folder = treesat["tmp"] / f"{mod}_{n_dates}"
        folder.mkdir(exist_ok=True)
        files = [
            write_tif(folder / f"{mod}_{k:03d}.tif", arr[k].astype(np.float32), t, crs)
            for k in range(min(n_dates, arr.shape[0]))
        ]
        sources.append(RasterSource(files, mod, dates=dates[: len(files)]))
    return sources


def _check_same_as_loader(treesat: dict, n_dates: int) -> None:
    sources = _as_rasters(treesat, n_dates)
    for norm in (False, True):
        if norm:  # TreeSatAI's S1 is linear backscatter; the demo's statistics (the loader's too) are not: said at open
            with pytest.warns(UnitsMismatchWarning, match=r"s1 values look like other units.*linear power.*dB") as rec:
                scene = open_rasters(sources, tile_m=60, normalize="auto")
            units = [str(w.message) for w in rec if issubclass(w.category, UnitsMismatchWarning)]
            assert all(m.startswith("s1 ") for m in units), units  # aerial and S2 are in the statistics' units
        else:
            scene = open_rasters(sources, tile_m=60, normalize=None)
        assert len(scene) == 1 and scene.grid.shape == (1, 1)
        ref = treesat["samples"][norm]
        s = scene[0]
        assert s["meta"].bounds == pytest.approx(ref["meta"].bounds, abs=1e-6)  # the same tile extent
        assert s["meta"].crs == ref["meta"].crs
        for mod in ("aerial", "s2", "s1"):
            want = ref[mod] if mod == "aerial" else ref[mod][:n_dates]
            assert s[mod].shape == want.shape, mod
            np.testing.assert_allclose(s[mod].numpy(), want.numpy(), atol=1e-5, rtol=1e-5, err_msg=mod)
            assert bool(s[f"{mod}_mask"].all()), mod
            if mod != "aerial":
                assert torch.equal(s[f"{mod}_dates"], ref[f"{mod}_dates"][:n_dates])
        if norm:
            assert all(src.startswith("treesatai-ts") for src in scene.normalization.values())
            assert "treesatai-ts" in repr(scene)


def test_treesat_tile_as_rasters_equals_the_loader_sample(treesat) -> None:
    """The first 12 dates (opening 146 + 60 files takes ~10 s: the slow test below does all of them)."""
    _check_same_as_loader(treesat, 12)


@pytest.mark.slow
def test_treesat_tile_as_rasters_equals_the_loader_sample_all_dates(treesat) -> None:
    _check_same_as_loader(treesat, 10_000)


def test_aerial_alone_keeps_its_pixel_grid_and_slivers_can_be_dropped() -> None:
    aerial = shared_file(TREESAT / f"{TREESAT_NAME}.tif")
    with rasterio.open(aerial) as src:
        pixels = src.read().astype(np.float32)
        corner = (src.transform.c, src.transform.f)
    scene = open_rasters(RasterSource(aerial, "aerial"), tile_m=60, normalize=None)
    assert scene.grid.origin == pytest.approx(corner)  # nothing cut off on the west or north
    assert scene.grid.shape == (2, 2) and len(scene) == 4  # 60.8 m: three 0.8 m slivers
    np.testing.assert_array_equal(scene.tile(0, 0)["aerial"].numpy(), pixels[:, :300, :300])  # read, not resampled
    sliver = scene.tile(0, 1)
    np.testing.assert_array_equal(sliver["aerial"][:, :, :4].numpy(), pixels[:, :300, 300:])
    assert sliver["meta"].extra["valid_fraction"] == pytest.approx(4 / 300)
    kept = open_rasters(RasterSource(aerial, "aerial"), tile_m=60, normalize=None, min_valid_fraction=0.5)
    assert len(kept) == 1
    assert "4 with data, 1 kept, 3 below min_valid_fraction=0.5" in kept.summary()
    with pytest.raises(Exception, match="below min_valid_fraction"):
        kept.tile(1, 1)


# ------------------------------------------------------------------------------------------------ exact reads
def test_30m_raster_on_30m_modality_is_read_without_resampling(tmp_path: Path) -> None:
    C = MODALITIES["l7"].num_bands
    data = ramp_array(C, 9, 11)
    f = write_tif(tmp_path / "l7_20200110.tif", data, Affine(30, 0, X0 + 15, 0, -30, Y0 - 15))  # off the 30 m lattice
    scene = open_rasters(RasterSource(f, "l7"), tile_m=120, normalize=None)
    assert scene.grid.origin == (X0 + 15, Y0 - 15)
    assert scene.grid.shape == (3, 3)
    for r in range(3):
        for c in range(3):
            s = scene.tile(r, c)
            got = s["l7"][0].numpy()
            want = data[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
            h, w = want.shape[1:]
            np.testing.assert_array_equal(got[:, :h, :w], want)  # identical values: no half-pixel shift
            assert bool(s["l7_mask"][0, :, :h, :w].all()) and not bool(s["l7_mask"][0, :, h:, :].any())


def test_coarser_raster_resampled_onto_the_finest_rasters_grid(tmp_path: Path) -> None:
    """s2 defines the grid; l7 (30 m, offset by 15 m) is resampled onto a 30 m grid with s2's origin."""
    s2 = write_tif(tmp_path / "s2.tif", ramp_array(10, 24, 24, 0.01) + 1000, Affine(10, 0, X0, 0, -10, Y0))
    l7 = write_tif(tmp_path / "l7.tif", np.full((6, 12, 12), 7.0, np.float32), Affine(30, 0, X0 - 45, 0, -30, Y0 + 15))
    scene = open_rasters(
        [RasterSource(s2, "s2", dates=["2020-01-02"]), RasterSource(l7, "l7", dates=["2020-01-03"])],
        tile_m=120,
        normalize=None,
    )
    assert scene.grid.origin == (X0, Y0) and "s2.tif" in scene.grid.reference
    s = scene.tile(0, 0)
    with rasterio.open(s2) as src:
        np.testing.assert_array_equal(s["s2"][0].numpy(), src.read()[:, :12, :12])
    np.testing.assert_allclose(s["l7"][0].numpy(), 7.0)


def test_explicit_origin_puts_tiles_on_its_lattice(tmp_path: Path) -> None:
    data = ramp_array(10, 24, 24, 0.01) + 1000
    f = write_tif(tmp_path / "s2.tif", data, Affine(10, 0, X0, 0, -10, Y0))
    scene = open_rasters(
        RasterSource(f, "s2", dates=["2020-01-02"]), tile_m=120, origin=(X0 - 30 + 1200, Y0 + 30), normalize=None
    )
    assert scene.grid.origin == (X0 - 30, Y0 + 30)  # the 120 m lattice through the origin, around the data
    assert scene.grid.shape == (3, 3)
    s = scene.tile(0, 0)
    np.testing.assert_array_equal(s["s2"][0, :, 3:, 3:].numpy(), data[:, :9, :9])  # read on the file's pixels
    assert not bool(s["s2_mask"][0, 0, :3].any()) and bool(s["s2_mask"][0, 0, 3:, 3:].all())
    for bad in [(1.0,), ("a", 2), (float("nan"), 0.0), 5]:
        with pytest.raises(ConfigError, match="origin="):
            open_rasters(RasterSource(f, "s2", dates=["2020-01-02"]), tile_m=120, origin=bad)  # type: ignore[arg-type]
    for bad_fraction in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(ConfigError, match="min_valid_fraction"):
            open_rasters(RasterSource(f, "s2", dates=["2020-01-02"]), tile_m=120, min_valid_fraction=bad_fraction)


# ------------------------------------------------------------------------------------------------ normalisation
@pytest.fixture
def s2_l7(tmp_path: Path) -> tuple[Path, Path]:
    s2 = write_tif(tmp_path / "s2.tif", ramp_array(10, 24, 24, 10.0) + 500, Affine(10, 0, X0, 0, -10, Y0))
    l7 = write_tif(tmp_path / "l7.tif", ramp_array(6, 8, 8, 0.001), Affine(30, 0, X0, 0, -30, Y0))
    return s2, l7


def _sources(s2: Path, l7: Path) -> list[RasterSource]:
    return [RasterSource(s2, "s2", dates=["2020-01-02"]), RasterSource(l7, "l7", dates=["2020-01-02"])]


def test_normalised_by_default_with_named_statistics(s2_l7) -> None:
    s2, l7 = s2_l7
    scene = open_rasters(_sources(s2, l7), tile_m=240)
    raw = open_rasters(_sources(s2, l7), tile_m=240, normalize=None)
    assert scene.normalization["s2"].startswith("treesatai-ts")  # what the released checkpoint was used with
    assert scene.normalization["l7"].startswith("scene statistics")  # no registry statistics for l7
    assert raw.normalization == {"s2": "none (raw file values)", "l7": "none (raw file values)"}
    assert "treesatai-ts" in repr(scene) and "scene statistics" in repr(scene)
    st = MODALITIES["s2"].stats["treesatai-ts"]
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (st.mean, st.std))
    a, b = scene.tile(0, 0), raw.tile(0, 0)
    torch.testing.assert_close(a["s2"], (b["s2"] - mean) / std)
    l7n = a["l7"][0].numpy()  # the whole l7 raster lies in the tile: scene statistics standardise it
    np.testing.assert_allclose(l7n.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(l7n.std(axis=(1, 2)), 1, atol=1e-3)
    assert a["meta"].extra["normalization"] == scene.normalization


def test_normalize_choices(s2_l7, tmp_path: Path) -> None:
    s2, l7 = s2_l7
    srcs = _sources(s2, l7)
    ones = NormStats(mean=(1.0,) * 6, std=(2.0,) * 6, source="mine")
    scene = open_rasters(srcs, tile_m=240, normalize={"s2": "treesatai-ts", "l7": ones})
    assert scene.normalization == {"s2": scene.normalization["s2"], "l7": "mine"}
    raw = open_rasters(srcs, tile_m=240, normalize=None).tile(0, 0)
    torch.testing.assert_close(scene.tile(0, 0)["l7"], (raw["l7"] - 1) / 2)
    # a JSON file and a dataset root with NORM_<modality>_patch.json files
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(
        json.dumps({"s2": {"mean": [0] * 10, "std": [10] * 10}, "l7": {"mean": [0] * 6, "std": [1] * 6}})
    )
    from_file = open_rasters(srcs, tile_m=240, normalize=stats_file).tile(0, 0)
    torch.testing.assert_close(from_file["s2"], raw["s2"] / 10)
    root = tmp_path / "dataset"
    root.mkdir()
    for mod, n in (("s2", 10), ("l7", 6)):
        (root / f"NORM_{mod}_patch.json").write_text(json.dumps({"mean": [0] * n, "std": [4] * n}))
    torch.testing.assert_close(open_rasters(srcs, tile_m=240, normalize=root).tile(0, 0)["l7"], raw["l7"] / 4)
    # "scene" for every modality; a Normalize covering every modality
    assert all(v.startswith("scene") for v in open_rasters(srcs, tile_m=240, normalize="scene").normalization.values())
    both = Normalize({"s2": MODALITIES["s2"].stats["treesatai-ts"], "l7": ones})
    assert open_rasters(srcs, tile_m=240, normalize=both).normalization["l7"] == "mine"


@pytest.mark.parametrize(
    ("normalize", "error", "match"),
    [
        ("treesatai-ts", ConfigError, "no treesatai-ts statistics for l7"),
        ("bogus", ConfigError, "not a known choice"),
        (5, ConfigError, "expected 'auto'"),
        ({"s2": "auto"}, ConfigError, "missing l7"),
        ({"s2": "auto", "l7": "auto", "s1": "auto"}, ConfigError, "not in the scene"),
        ({"s2": "auto", "l7": {"mean": [0] * 6, "std": [0] * 6}}, ConfigError, "stds > 0"),
        ({"s2": "auto", "l7": {"mean": [0] * 5, "std": [1] * 5}}, ChannelMismatchError, "expected 6"),
        ({"s2": "auto", "l7": [1, 2]}, ConfigError, "expected NormStats"),
        (Normalize({"s2": MODALITIES["s2"].stats["treesatai-ts"]}), ConfigError, "no statistics for l7"),
    ],
)
def test_bad_normalize_is_a_clear_error(s2_l7, normalize, error, match) -> None:
    with pytest.raises(error, match=match):
        open_rasters(_sources(*s2_l7), tile_m=240, normalize=normalize)


def test_missing_statistics_files(s2_l7, tmp_path: Path) -> None:
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"NORM_s2_patch\.json"):
        open_rasters(_sources(*s2_l7), tile_m=240, normalize=empty)
    bad = tmp_path / "stats.json"
    bad.write_text(json.dumps({"s2": {"mean": [0] * 10, "std": [1] * 10}}))
    with pytest.raises(ConfigError, match="no entry for 'l7'"):
        open_rasters(_sources(*s2_l7), tile_m=240, normalize=bad)


def test_infer_scene_records_and_can_replace_the_normalisation(s2_l7) -> None:
    s2, _ = s2_l7
    scene = open_rasters(RasterSource(s2, "s2", dates=["2020-01-02"]), tile_m=120)
    torch.manual_seed(0)
    model = AnySat(size="test").eval()
    kw = {"patch_size_m": 40, "window_m": 120, "overlap_m": 0, "output": "patch", "progress": False}
    da = infer_scene(model, scene, **kw)
    assert da.attrs["normalization"].startswith("s2: treesatai-ts")
    raw = infer_scene(model, scene, normalize=None, **kw)
    assert raw.attrs["normalization"] == "s2: none (raw file values)"
    assert not np.allclose(da.values, raw.values)
    same = infer_scene(
        model, scene.with_normalize(None), normalize=Normalize({"s2": MODALITIES["s2"].stats["treesatai-ts"]}), **kw
    )
    np.testing.assert_allclose(same.values, da.values, atol=1e-5)


def test_raw_inputs_warn_once_normalised_do_not(s2_l7, monkeypatch) -> None:
    import warnings

    from anysat_core.errors import UnnormalizedInputWarning
    from anysat_core.model import inputs

    monkeypatch.setattr(inputs, "_warned_raw", set())
    rng = np.random.default_rng(0)
    reflectance = rng.uniform(200, 3000, (10, 12, 12)).astype(np.float32)  # Sentinel-2 L2A x 10000
    s2 = write_tif(s2_l7[0].parent / "s2_real.tif", reflectance, Affine(10, 0, X0, 0, -10, Y0))
    torch.manual_seed(0)
    model = AnySat(size="test").eval()
    from anysat_core.data.collate import collate

    normed = collate([open_rasters(RasterSource(s2, "s2", dates=["2020-01-02"]), tile_m=120).tile(0, 0)])
    raw = collate([open_rasters(RasterSource(s2, "s2", dates=["2020-01-02"]), tile_m=120, normalize=None).tile(0, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnnormalizedInputWarning)
        model(normed, patch_size_m=40)  # no warning
    with pytest.warns(UnnormalizedInputWarning, match="s2 inputs look un-normalised"):
        model(raw, patch_size_m=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnnormalizedInputWarning)
        model(raw, patch_size_m=40)  # once per modality


def test_huge_tile_refused_before_reading(s2_l7, tmp_path: Path) -> None:
    from anysat_core.errors import MemoryLimitError

    s2, _ = s2_l7
    with pytest.raises(MemoryLimitError, match=r"reading one 1e\+06 m tile .*choose a smaller tile_m"):
        open_rasters(RasterSource(s2, "s2", dates=["2020-01-02"]), tile_m=1e6)


def test_scene_inference_cells_follow_the_tile_origin(tmp_path: Path) -> None:
    """With an explicit origin, the feature grid of infer_scene starts on that lattice too (cells aligned to it)."""
    rng = np.random.default_rng(1)
    f = write_tif(
        tmp_path / "s2.tif", rng.uniform(200, 3000, (10, 24, 24)).astype(np.float32), Affine(10, 0, X0, 0, -10, Y0)
    )
    scene = open_rasters(RasterSource(f, "s2", dates=["2020-01-02"]), tile_m=120, origin=(X0 - 40, Y0 + 40))
    torch.manual_seed(0)
    da = infer_scene(
        AnySat(size="test").eval(), scene, patch_size_m=40, window_m=120, overlap_m=0, output="patch", progress=False
    )
    t = da.rio.transform()
    assert (t.c, t.f) == (X0 - 40, Y0 + 40)
    assert da.sizes["y"] == da.sizes["x"] == 7  # 280 m from the origin to the far edge of the data
    assert np.isnan(da.values[:, 0, :]).all() and np.isnan(da.values[:, :, 0]).all()  # cells with no data
    assert np.isfinite(da.values[:, 1:, 1:]).all()


# ------------------------------------------------------------------------------------------------ units check
def _geotiff(path: Path, data: np.ndarray, dtype: str = "float32") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=dtype,
        crs="EPSG:32631", transform=Affine(10 if "s2" in path.name else 0.2, 0, 500_000, 0, -10 if "s2" in path.name
        else -0.2, 4_800_000),
    ) as f:  # fmt: skip
        f.write(data.astype(dtype))
    return path


def test_values_in_other_units_than_the_statistics_are_said_at_open(tmp_path: Path) -> None:
    """Reflectance in 0-1 against statistics of reflectance x 10000, 16-bit aerial against 8-bit statistics: a
    UnitsMismatchWarning at open, with the numbers and the fix; the right units, or scene statistics, stay silent."""
    import warnings

    rng = np.random.default_rng(0)
    reflectance = rng.uniform(0.01, 0.45, (10, 30, 30))  # surface reflectance in 0-1 (e.g. a GEE export / 10000)
    src = RasterSource([_geotiff(tmp_path / "s2_20200601.tif", reflectance)], modality="s2")
    with pytest.warns(UnitsMismatchWarning, match=r"s2 values look like other units.*multiply them by 10000") as rec:
        scene = open_rasters(src, tile_m=60)
    msg = next(str(w.message) for w in rec if issubclass(w.category, UnitsMismatchWarning))
    assert "treesatai-ts" in msg and "normalize='scene'" in msg and "band B02: mean 0.2" in msg
    assert len(scene) == 25  # a warning, not a refusal: the scene still opens
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitsMismatchWarning)
        open_rasters(src, tile_m=60, normalize="scene")  # its own statistics: nothing to say
        open_rasters(src, tile_m=60, normalize=None)  # raw values asked for
        dn = RasterSource([_geotiff(tmp_path / "dn" / "s2_20200601.tif", reflectance * 10_000)], modality="s2")
        open_rasters(dn, tile_m=60)  # reflectance x 10000, the statistics' units
        water = RasterSource([_geotiff(tmp_path / "w" / "s2_20200601.tif", reflectance * 400)], modality="s2")
        open_rasters(water, tile_m=60)  # a dark scene (4 % reflectance) in the right units
    aerial16 = rng.uniform(8_000, 40_000, (4, 300, 300))
    with pytest.warns(UnitsMismatchWarning, match=r"aerial values .* 16-bit"):
        open_rasters(RasterSource(_geotiff(tmp_path / "aerial.tif", aerial16, "uint16"), "aerial"), tile_m=60)
