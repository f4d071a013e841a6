"""Dataset loaders on real-format files: the real TreeSatAI-TS tile and torchgeo's PASTIS-R / FLAIR #2 / TreeSatAI
fixtures (../shared/data), copied into tmp_path and completed as their READMEs say.  Every loader's collated
samples go through the test-size model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anysat_core import AnySat
from anysat_core.data.collate import collate
from anysat_core.data.sample import GeoInfo
from anysat_core.errors import ConfigError, CorruptFileError, DatasetNotFoundError, InputShapeError
from tests.helpers.shared import TREESAT, shared_file, treesat_root

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("h5py")
from rasterio.transform import Affine

from anysat_core.data.datasets.flair import FLAIR, FLAIR_CLASSES
from anysat_core.data.datasets.pastis_hd import PASTISHD, REFERENCE_DATE
from anysat_core.data.datasets.treesatai_ts import TREESAT_GENERA, TreeSatAITS
from tests.helpers.datasets import FIXTURES, make_flair_root, make_pastis_root, upsample_rasters

# the torchgeo FLAIR fixture rasters have a CRS but no geotransform
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

NAME = "Abies_alba_1_1005_WEFL_NLF"


@pytest.fixture(scope="module")
def model() -> AnySat:
    return AnySat(size="test").eval()


def _run(model: AnySat, samples: list[dict], patch_size_m: int, output: str = "patch", **kw) -> torch.Tensor:
    with torch.no_grad():
        out = model(collate(samples), patch_size_m=patch_size_m, output=output, **kw)
    assert torch.isfinite(out).all()
    return out


# =============================================================================================== TreeSatAI-TS
def test_treesat_real_tile_gives_the_reference_inputs_and_outputs(tmp_path, parity, parity_model):
    """Loader -> registry normalisation -> collate equals the inputs the original code ran on, and the model
    loaded with the parity checkpoint reproduces the original's output of case 0."""
    ds = TreeSatAITS(treesat_root(tmp_path), "test", modalities=["aerial", "s2", "s1"])
    assert len(ds) == 1 and ds.normalizer is not None
    batch = collate([ds[0]])
    case = parity["cases"][0]
    ref = case["inputs"]
    for key in ref:
        assert batch[key].shape == ref[key].shape, key
        assert batch[key].dtype == ref[key].dtype, key
        torch.testing.assert_close(batch[key], ref[key], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        out = parity_model(
            batch, patch_size_m=case["patch_size"], output=case["output"], output_modality=case["output_modality"]
        )
    expected = case["expected"]
    assert (out - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())


def test_treesat_sample_content(tmp_path):
    ds = TreeSatAITS(treesat_root(tmp_path), "val", modalities=["aerial", "s2", "s1-asc"], normalize=False)
    s = ds[0]
    assert list(s) == ["aerial", "s2", "s1-asc", "s2_dates", "s1-asc_dates", "label", "meta"]
    assert s["aerial"].shape == (4, 300, 300) and s["aerial"].dtype == torch.float32
    assert s["s2"].shape == (146, 10, 6, 6) and s["s1-asc"].shape == (60, 2, 6, 6)
    assert s["s2_dates"].dtype == torch.int64 and s["s2_dates"][:3].tolist() == [2, 5, 7]
    assert s["s1-asc_dates"][0].item() == 3 and s["s1-asc_dates"][-1].item() == 363  # 2020-01-03 .. 2020-12-28
    # Abies 82 % and Picea 12 % pass the > 7 % rule, Fagus 6 % does not
    assert [TREESAT_GENERA[i] for i in s["label"].nonzero().flatten()] == ["Abies", "Picea"]
    # raw values: the centre crop of the file; s1-asc = the .pth's VV, VH
    with rasterio.open(TREESAT / f"{NAME}.tif") as src:
        assert torch.equal(s["aerial"], torch.from_numpy(src.read()[:, 2:302, 2:302].astype(np.float32)))
        left, top = src.transform.c, src.transform.f
    pth = torch.load(TREESAT / f"{NAME}.pth", weights_only=True)
    assert torch.equal(s["s1-asc"], pth[:, :2])
    meta = s["meta"]
    assert isinstance(meta, GeoInfo) and meta.crs == "EPSG:25832" and meta.split == "val"
    assert meta.dataset == "treesatai-ts" and meta.tile_id == NAME and meta.shape == (300, 300)
    assert meta.bounds == pytest.approx((left + 0.4, top - 60.4, left + 60.4, top - 0.4), abs=1e-3)
    assert meta.extra["s2_dates"][0] == "2020-01-02"


def test_treesat_without_pth_reads_the_h5_and_computes_the_ratio(tmp_path):
    ds = TreeSatAITS(treesat_root(tmp_path, pth=False), "test", modalities=["s1", "s1-asc"], normalize=False)
    s = ds[0]
    pth = torch.load(TREESAT / f"{NAME}.pth", weights_only=True)
    torch.testing.assert_close(s["s1-asc"], pth[:, :2])
    torch.testing.assert_close(s["s1"], pth, atol=1e-3, rtol=1e-4)
    assert "meta" in s and s["meta"].crs is None  # no aerial: no georeference


def test_treesat_train_crop_is_random_and_eval_crop_is_centre(tmp_path):
    root = treesat_root(tmp_path)
    torch.manual_seed(0)
    train = TreeSatAITS(root, "train", modalities=["aerial"], normalize=False)
    full = TreeSatAITS(root, "train", modalities=["aerial"], normalize=False, crop=None)[0]["aerial"]
    assert full.shape == (4, 304, 304)
    seen = set()
    for _ in range(8):
        x = train[0]["aerial"]
        hits = [(r, c) for r in range(5) for c in range(5) if torch.equal(full[:, r : r + 300, c : c + 300], x)]
        seen.update(hits)
    assert len(seen) > 1
    with pytest.raises(ConfigError, match="crop"):
        TreeSatAITS(root, "train", modalities=["aerial"], normalize=False, crop="middle")


def test_treesat_model_at_protocol_patch_size(tmp_path, model):
    ds = TreeSatAITS(treesat_root(tmp_path), "test", modalities=["aerial", "s2", "s1"])
    out = _run(model, [ds[0], ds[0]], ds.patch_size_m)
    assert out.shape == (2, 6, 6, model.config.embed_dim)


def test_treesat_says_which_statistics_and_files_never_silently_replace_the_registry(tmp_path):
    """A computed NORM file beside the data does not replace the statistics the checkpoint expects (the registry's)
    unless normalize='files' asks for it; the dataset names the statistics of each modality."""
    from anysat_core.modalities import MODALITIES

    root = treesat_root(tmp_path)
    (root / "NORM_s2_patch.json").write_text(json.dumps({"mean": [0.0] * 10, "std": [1.0] * 10}))
    ds = TreeSatAITS(root, "test", modalities=["s2"])
    assert ds.normalization["s2"].startswith("treesatai-ts")
    assert "treesatai-ts" in repr(ds)
    raw = TreeSatAITS(root, "test", modalities=["s2"], normalize=False)
    st = MODALITIES["s2"].stats["treesatai-ts"]
    want = (raw[0]["s2"] - torch.tensor(st.mean).view(-1, 1, 1)) / torch.tensor(st.std).view(-1, 1, 1)
    torch.testing.assert_close(ds[0]["s2"], want)
    files = TreeSatAITS(root, "test", modalities=["s2"], normalize="files")
    assert files.normalization["s2"] == str(root / "NORM_s2_patch.json")
    torch.testing.assert_close(files[0]["s2"], raw[0]["s2"])  # mean 0, std 1
    assert raw.normalization == {"s2": "none (raw values)"}
    with pytest.raises(ConfigError, match="'files', False"):
        TreeSatAITS(root, "test", modalities=["s2"], normalize="registry")


def test_treesat_compute_normalisation_for_s1_asc(tmp_path):
    root = treesat_root(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no normalisation statistics for s1-asc"):
        TreeSatAITS(root, "test")  # default modalities aerial, s2, s1-asc; the registry has no s1-asc stats
    ds = TreeSatAITS(root, "test", normalize="compute")
    assert (root / "NORM_s1-asc_patch.json").exists()
    x = ds[0]["s1-asc"]
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)


def test_treesat_errors(tmp_path):
    with pytest.raises(
        DatasetNotFoundError, match=re.escape("huggingface.co/datasets/IGNF/TreeSatAI-Time-Series")
    ) as e:
        TreeSatAITS(tmp_path / "nowhere")
    assert "sentinel/<name>.h5" in str(e.value)

    root = treesat_root(tmp_path)
    (root / "val_filenames.lst").unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape("val_filenames.lst")):
        TreeSatAITS(root, "val", modalities=["aerial"], normalize=False)

    # truncated files: the error names the file
    bad = tmp_path / "bad"
    shutil.copytree(root, bad, symlinks=False)
    h5 = bad / "sentinel" / f"{NAME}.h5"
    h5.write_bytes(h5.read_bytes()[:4000])
    ds = TreeSatAITS(bad, "test", modalities=["s2"], normalize=False)
    with pytest.raises(CorruptFileError, match=re.escape(str(h5))):
        ds[0]
    tif = bad / "aerial" / f"{NAME}.tif"
    tif.write_bytes(tif.read_bytes()[:20000])
    ds = TreeSatAITS(bad, "test", modalities=["aerial"], normalize=False)
    with pytest.raises(CorruptFileError, match=re.escape(str(tif))):
        ds[0]
    shutil.copyfile(TREESAT / f"{NAME}.h5", h5)  # readable again: only the .pth is bad now
    pth = bad / "s1-asc" / f"{NAME}.pth"
    pth.write_bytes(pth.read_bytes()[:1000])
    ds = TreeSatAITS(bad, "test", modalities=["s1"], normalize=False)
    with pytest.raises(CorruptFileError, match=re.escape(str(pth))):
        ds[0]

    # a listed tile missing from the labels, an unknown genus
    root2 = treesat_root(tmp_path / "r2", labels={"Other_1.tif": [["Abies", 1.0]]})
    with pytest.raises(CorruptFileError, match="no entry for"):
        TreeSatAITS(root2, "test", modalities=["aerial"], normalize=False)
    root3 = treesat_root(tmp_path / "r3", labels={f"{NAME}.tif": [["Eucalyptus", 1.0]]})
    with pytest.raises(CorruptFileError, match="unknown genus 'Eucalyptus'"):
        TreeSatAITS(root3, "test", modalities=["aerial"], normalize=False)


def test_treesat_tile_without_genus_above_threshold_is_dropped(tmp_path):
    root = treesat_root(tmp_path, labels={f"{NAME}.tif": [["Abies", 0.05], ["Picea", 0.07]]})
    assert len(TreeSatAITS(root, "test", modalities=["aerial"], normalize=False)) == 0


def test_treesat_original_single_date_layout(tmp_path):
    """torchgeo's TreeSatAI fixture: original layout (aerial/60m, no sentinel-ts)."""
    src = shared_file(FIXTURES / "treesatai")
    root = tmp_path / "treesatai"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("*.zip"))
    with pytest.raises(DatasetNotFoundError, match=re.escape(repr(str(root / "sentinel")))):
        TreeSatAITS(root, "train", modalities=["aerial", "s2"])
    # labels json of the original release: > 7 % rule, 15 genera
    ds = TreeSatAITS(root, "train", modalities=["aerial"], normalize=False, crop=None)
    raw = json.loads((root / "labels" / "TreeSatBA_v9_60m_multi_labels.json").read_text())
    names = (root / "train_filenames.lst").read_text().split()
    assert len(ds) == len(names) == 9
    for i, name in enumerate(ds.names):
        want = sorted({g for g, f in raw[name] if f > 0.07})
        assert [TREESAT_GENERA[j] for j in ds.labels[i].nonzero().flatten()] == want
    s = ds[0]  # aerial/60m/<name>.tif is found; 32 px fixture tile read whole
    assert s["aerial"].shape == (4, 32, 32) and s["meta"].crs == "EPSG:25832"
    assert s["meta"].gsd_m == pytest.approx(0.2)
    # AnySat's 300 px crop needs a real-size tile
    with pytest.raises(InputShapeError, match="expected at least 300 px"):
        TreeSatAITS(root, "train", modalities=["aerial"], normalize=False)[0]
    with pytest.raises(DatasetNotFoundError, match=re.escape("val_filenames.lst")):
        TreeSatAITS(root, "val", modalities=["aerial"], normalize=False)


# =============================================================================================== PASTIS-HD
@pytest.fixture
def pastis_root(tmp_path) -> Path:
    return make_pastis_root(tmp_path)


def test_pastis_folds_dates_and_labels(pastis_root):
    train = PASTISHD(pastis_root, "train", modalities=["s2", "s1"], normalize=False)
    assert len(train) == 3 and [p["fold"] for p in train.patches] == [1, 2, 3]
    assert len(PASTISHD(pastis_root, "val", modalities=["s2"], normalize=False)) == 1
    assert len(PASTISHD(pastis_root, "test", modalities=["s2"], normalize=False, folds=[2, 5])) == 2
    s = train[0]
    raw = np.load(pastis_root / "DATA_S2" / "S2_0.npy")
    assert torch.equal(s["s2"], torch.from_numpy(raw.astype(np.float32)))
    assert s["s1"].shape == (np.load(pastis_root / "DATA_S1A" / "S1A_0.npy").shape[0], 3, 32, 32)
    # days since 2018-09-01, not day of year: 2018-09-24 is day 23, 2019-01-01 is day 122
    assert s["s2_dates"][:2].tolist() == [23, 30] and s["s1_dates"][0].item() == 122
    assert (np.datetime64("2019-01-01") - np.datetime64(REFERENCE_DATE.isoformat())).astype(int) == 122
    target = np.load(pastis_root / "ANNOTATIONS" / "TARGET_0.npy")[0]
    assert s["label"].dtype == torch.int64 and torch.equal(s["label"], torch.from_numpy(target.astype(np.int64)))
    assert train.ignore_index == 19 and len(train.classes) == 20
    m = s["meta"]
    assert m.dataset == "pastis-hd" and m.tile_id == "0" and m.extra["fold"] == 1 and m.crs == "OGC:CRS84"
    assert m.transform is None  # the fixture's dummy CRS84 polygon gives no 10 m grid

    ml = PASTISHD(pastis_root, "train", modalities=["s1-asc"], normalize=False, task="multilabel")
    y = ml[0]["label"]
    present = set(np.unique(target).tolist()) - {0, 19}
    assert y.shape == (18,) and set((y.nonzero().flatten() + 1).tolist()) == present
    assert ml[0]["s1-asc"].shape[1] == 2 and ml.ignore_index is None and len(ml.classes) == 18


def test_pastis_normalisation_files(pastis_root):
    # shipped per-fold stats (upper-case names) are averaged over the folds in use
    folds = {f"Fold_{k}": {"mean": [float(k)] * 10, "std": [2.0 * k] * 10} for k in range(1, 6)}
    (pastis_root / "NORM_S2_patch.json").write_text(json.dumps(folds))
    ds = PASTISHD(pastis_root, "train", modalities=["s2", "s1"], normalize="compute")
    assert ds.normalizer.stats["s2"].mean == pytest.approx((2.0,) * 10)  # folds 1-3
    assert ds.normalizer.stats["s2"].std == pytest.approx((4.0,) * 10)
    assert (pastis_root / "NORM_s1_patch.json").exists()  # computed from the train split
    raw = PASTISHD(pastis_root, "train", modalities=["s2"], normalize=False)[0]["s2"]
    torch.testing.assert_close(ds[0]["s2"], (raw - 2.0) / 4.0)
    with pytest.raises(DatasetNotFoundError, match="no normalisation statistics for s1-asc"):
        PASTISHD(pastis_root, "train", modalities=["s1-asc"])


def test_pastis_model(pastis_root, model):
    ds = PASTISHD(pastis_root, "train", modalities=["s2", "s1"], normalize="compute")
    samples = [ds[0], ds[1]]  # different T: padded by collate
    out = _run(model, samples, ds.patch_size_m, output="dense", output_modality="s2")
    assert out.shape == (2, 32, 32, 2 * model.config.embed_dim)  # 320 m tile, 10 m dense map


def test_pastis_spot_geotiff(pastis_root, model):
    """PASTIS-HD's SPOT GeoTIFFs (absent from PASTIS-R): written here at 1 m over the fixture's 320 m patches."""
    spot_dir = pastis_root / "DATA_SPOT" / "PASTIS_SPOT6_RVB_1M00_2019"
    spot_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for pid in range(5):
        profile = {
            "driver": "GTiff",
            "width": 320,
            "height": 320,
            "count": 3,
            "dtype": "uint8",
            "crs": "EPSG:2154",
            "transform": Affine(1.0, 0.0, 600000.0 + 320 * pid, 0.0, -1.0, 6800000.0),
        }
        with rasterio.open(spot_dir / f"SPOT6_RVB_1M00_2019_{pid}.tif", "w", **profile) as dst:
            dst.write(rng.integers(0, 256, (3, 320, 320)).astype(np.uint8))
    ds = PASTISHD(pastis_root, "train", normalize="compute")  # default modalities spot, s2, s1
    s = ds[1]
    assert list(s)[:1] == ["spot"] and s["spot"].shape == (3, 320, 320)
    assert s["meta"].crs == "EPSG:2154" and s["meta"].bounds == pytest.approx((600320, 6799680, 600640, 6800000))
    out = _run(model, [ds[0], ds[1]], ds.patch_size_m)
    assert out.shape == (2, 8, 8, model.config.embed_dim)


def test_pastis_errors(pastis_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="IGNF/PASTIS-HD") as e:
        PASTISHD(tmp_path / "nowhere")
    assert "metadata.geojson" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="DATA_SPOT"):
        PASTISHD(pastis_root, "train")  # default modalities include spot, absent from PASTIS-R
    with pytest.raises(ConfigError, match="folds"):
        PASTISHD(pastis_root, "train", modalities=["s2"], folds=[6])
    with pytest.raises(ConfigError, match="task"):
        PASTISHD(pastis_root, "train", modalities=["s2"], task="detection")

    npy = pastis_root / "DATA_S2" / "S2_0.npy"
    npy.write_bytes(npy.read_bytes()[:500])
    ds = PASTISHD(pastis_root, "train", modalities=["s2"], normalize=False)
    with pytest.raises(CorruptFileError, match=re.escape(str(npy))):
        ds[0]
    np.save(npy, np.zeros((2, 10, 32, 32), np.int16))  # T does not match the date dictionary
    with pytest.raises(CorruptFileError, match=re.escape("has 2 dates but metadata.geojson lists")):
        ds[0]
    (pastis_root / "ANNOTATIONS" / "TARGET_1.npy").unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape("TARGET_1.npy")):
        ds[1]

    meta = pastis_root / "metadata.geojson"
    fc = json.loads(meta.read_text())
    del fc["features"][0]["properties"]["dates-S2"]
    meta.write_text(json.dumps(fc))
    with pytest.raises(CorruptFileError, match="patch 0 has no 'dates-S2'"):
        PASTISHD(pastis_root, "train", modalities=["s2"], normalize=False)
    meta.write_text(meta.read_text()[:200])
    with pytest.raises(CorruptFileError, match=re.escape("metadata.geojson")):
        PASTISHD(pastis_root, "train", modalities=["s2"], normalize=False)
    meta.unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape("metadata.geojson")):
        PASTISHD(pastis_root, "train", modalities=["s2"], normalize=False)


# =============================================================================================== FLAIR
@pytest.fixture
def flair_root(tmp_path) -> Path:
    return make_flair_root(tmp_path)


def test_flair_sample_content(flair_root):
    ds = FLAIR(flair_root, "train", normalize=False, crop=None)
    assert len(ds) == 2 and [it["img"].name for it in ds.items] == ["IMG_222419.tif", "IMG_291261.tif"]
    s = ds[0]
    assert list(s) == ["aerial-flair", "s2", "s2_dates", "label", "meta"]
    img = flair_root / "flair_aerial_train/D300_2013/Z19_PU/img/IMG_222419.tif"
    with rasterio.open(img) as src:
        assert torch.equal(s["aerial-flair"], torch.from_numpy(src.read().astype(np.float32)))
    data = np.load(flair_root / "flair_sen_train/D300_2013/Z19_PU/sen/SEN2_sp_D300_2013_Z19_PU_data.npy")
    assert torch.equal(s["s2"], torch.from_numpy(data[:, :, 11:21, 11:21].astype(np.float32)))  # centroid [16, 16]
    assert s["s2_dates"].tolist()[:3] == [105, 135, 166]  # 2021-04-15, 05-15, 06-15
    with rasterio.open(flair_root / "flair_labels_train/D300_2013/Z19_PU/msk/MSK_222419.tif") as src:
        raw = src.read(1).astype(np.int64)
    want = np.minimum(raw, 13) - 1
    assert s["label"].dtype == torch.int64 and torch.equal(s["label"], torch.from_numpy(want))
    assert int(s["label"].max()) <= 12 and ds.ignore_index == 12 and FLAIR_CLASSES[12] == "other"
    m = s["meta"]
    assert m.crs == "EPSG:2154" and m.transform is None and m.extra["domain"] == "D300_2013"
    # val domain lives in the train release, test domains in the test release
    assert len(FLAIR(flair_root, "val", normalize=False, crop=None)) == 2
    test = FLAIR(flair_root, "test", normalize=False, crop=None, task="multilabel", cloud_threshold=50)
    y = test[0]
    assert y["label"].shape == (13,) and y["s2_mask"].shape == (y["s2"].shape[0], 1, 10, 10)
    masks = np.load(flair_root / "flair_2_sen_test/D388_2019/Z16_RE/sen/SEN2_sp_D388_2019_Z16_RE_masks.npy")
    want_mask = (masks[:, :, 11:21, 11:21] <= 50).all(axis=1, keepdims=True)
    assert torch.equal(y["s2_mask"], torch.from_numpy(want_mask))


def test_flair_crop_window_matches_label(flair_root):
    """Centre and random crops cut image and label at the same window (on a 512 px rewrite of a val patch)."""
    img = flair_root / "flair_aerial_train/D346_2018/Z12_IE/img/IMG_273729.tif"
    msk = flair_root / "flair_labels_train/D346_2018/Z12_IE/msk/MSK_273729.tif"
    rng = np.random.default_rng(1)
    for path, bands in [(img, 5), (msk, 1)]:
        profile = {
            "driver": "GTiff",
            "width": 512,
            "height": 512,
            "count": bands,
            "dtype": "uint8",
            "crs": "EPSG:2154",
            "transform": Affine(0.2, 0.0, 800000.0, 0.0, -0.2, 6500000.0),
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(rng.integers(1, 20, (bands, 512, 512)).astype(np.uint8))
    with rasterio.open(img) as src:
        full = torch.from_numpy(src.read().astype(np.float32))
    with rasterio.open(msk) as src:
        full_lab = torch.from_numpy(np.minimum(src.read(1).astype(np.int64), 13) - 1)
    ds = FLAIR(flair_root, "val", modalities=["aerial-flair"], normalize=False)  # eval: centre crop [6:506]
    assert ds.items[0]["img"] == img
    s = ds[0]
    assert torch.equal(s["aerial-flair"], full[:, 6:506, 6:506]) and torch.equal(s["label"], full_lab[6:506, 6:506])
    assert s["meta"].bounds == pytest.approx((800001.2, 6500000 - 101.2, 800101.2, 6500000 - 1.2))
    rand = FLAIR(flair_root, "val", modalities=["aerial-flair"], normalize=False, crop="random")
    torch.manual_seed(3)
    for _ in range(3):
        s = rand[0]
        r, c = next(
            (r, c)
            for r in range(13)
            for c in range(13)
            if torch.equal(s["aerial-flair"], full[:, r : r + 500, c : c + 500])
        )
        assert torch.equal(s["label"], full_lab[r : r + 500, c : c + 500])


def test_flair_model(flair_root, model):
    # 100 px aerial = 20 m = 2 S2 pixels: both modalities cover the same extent
    upsample_rasters(flair_root, "D300_2013", 100)
    ds = FLAIR(flair_root, "train", normalize="compute", crop=None, s2_window_px=2)
    assert (flair_root / "NORM_aerial-flair_patch.json").exists()
    out = _run(model, [ds[0], ds[1]], ds.patch_size_m, output="dense", output_modality="aerial-flair")
    assert out.shape == (2, 10, 10, 2 * model.config.embed_dim)  # 2 m sub-patch tokens
    # the AnySat S2 window alone (10 px = 100 m) on an untouched domain
    s2 = FLAIR(flair_root, "test", modalities=["s2"], normalize="compute", crop=None)
    assert _run(model, [s2[0], s2[1]], s2.patch_size_m).shape == (2, 10, 10, model.config.embed_dim)


def test_flair_errors(flair_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="IGNF/FLAIR") as e:
        FLAIR(tmp_path / "nowhere")
    assert "splits.json" in str(e.value)
    unfixed = shared_file(FIXTURES / "flair2" / "FLAIR2")
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(unfixed / "splits.json"))):
        FLAIR(unfixed)  # the fixture as shipped has no splits.json

    splits = json.loads((flair_root / "splits.json").read_text())
    (flair_root / "splits.json").write_text(json.dumps({**splits, "val": ["D999_2020"]}))
    with pytest.raises(DatasetNotFoundError, match="D999_2020"):
        FLAIR(flair_root, "val", normalize=False)
    (flair_root / "splits.json").write_text(json.dumps({"train": splits["train"]}))
    with pytest.raises(CorruptFileError, match="has no 'test' list"):
        FLAIR(flair_root, "test", normalize=False)
    (flair_root / "splits.json").write_text(json.dumps(splits))

    ds = FLAIR(flair_root, "train", normalize=False, crop=None)
    tif = ds.items[0]["img"]
    tif.write_bytes(tif.read_bytes()[:3000])
    with pytest.raises(CorruptFileError, match=re.escape(str(tif))):
        ds[0]
    data = next((flair_root / "flair_sen_train/D300_2013/Z19_PU/sen").glob("*data.npy"))
    data.write_bytes(data.read_bytes()[:1000])
    ds = FLAIR(flair_root, "train", modalities=["s2"], normalize=False, crop=None)
    with pytest.raises(CorruptFileError, match=re.escape(str(data))):
        ds[0]
    products = next((flair_root / "flair_sen_train/D346_2018/Z12_IE/sen").glob("*products.txt"))
    products.write_text("S2A_MSIL2A_2021xx15T105021\n")
    val = FLAIR(flair_root, "val", modalities=["s2"], normalize=False, crop=None)
    with pytest.raises(CorruptFileError, match="characters 11-19"):
        val[0]
    big = FLAIR(flair_root, "test", modalities=["s2"], normalize=False, crop=None, s2_window_px=40)
    with pytest.raises(CorruptFileError, match="leaves the"):
        big[0]
    with pytest.raises(InputShapeError, match="at least 500 px"):
        FLAIR(flair_root, "test", modalities=["aerial-flair"], normalize=False)[0]  # 32 px fixture patch
    (flair_root / "flair-2_centroids_sp_to_patch.json").unlink()
    with pytest.raises(DatasetNotFoundError, match="centroids"):
        FLAIR(flair_root, "test", normalize=False, crop=None)
