"""Every on-disk loader on the tiny generated copy of its layout (TreeSatAI-TS, PASTIS-HD, FLAIR, PLANTED, S2NAIP-URBAN,
BraDD-S1TS, SICKLE, TimeSen2Crop).

The committed copies under ``tests/data/<dataset>/`` are written by ``tests/data/<dataset>/data.py``; the band-order
tests regenerate a copy with band-identifying values (band k filled with k) in a temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from datetime import date
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from anysat_core import AnySat
from anysat_core.data.collate import collate
from anysat_core.data.datasets import DATASETS
from anysat_core.data.datasets.bradd_s1ts import BraDDS1TS
from anysat_core.data.datasets.flair import FLAIR
from anysat_core.data.datasets.pastis_hd import PASTISHD
from anysat_core.data.datasets.planted import Planted
from anysat_core.data.datasets.s2naip_urban import S2NaipUrban
from anysat_core.data.datasets.sickle import Sickle
from anysat_core.data.datasets.timesen2crop import TimeSen2Crop
from anysat_core.data.datasets.treesatai_ts import TREESAT_GENERA, TreeSatAITS
from anysat_core.errors import CorruptFileError, DatasetNotFoundError
from anysat_core.modalities import MODALITIES

HERE = Path(__file__).resolve().parent


def generator(dataset: str) -> ModuleType:
    """The ``tests/data/<dataset>/data.py`` module."""
    spec = importlib.util.spec_from_file_location(f"gen_{dataset.replace('-', '_')}", HERE / dataset / "data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


def run_model(model: AnySat, samples: list[dict], patch_size_m: int) -> torch.Tensor:
    batch = collate(samples)
    with torch.no_grad():
        out = model(batch, patch_size_m=patch_size_m, output="tile")
    assert out.shape[0] == len(samples)
    assert torch.isfinite(out).all()
    return out


def test_every_on_disk_loader_has_a_generator() -> None:
    on_disk = {name for name, cls in DATASETS.items() if not cls.generated}
    assert on_disk == {p.parent.name for p in HERE.glob("*/data.py")} == set(CASES)
    for name, (cls, *_) in CASES.items():
        assert DATASETS[name] is cls


def _doy(iso: str) -> int:
    return date.fromisoformat(iso).timetuple().tm_yday


# ------------------------------------------------------------------------------------------------ TreeSatAI-TS
TREESAT = HERE / "treesatai-ts"


def test_treesat_splits_and_values() -> None:
    lens = {s: len(TreeSatAITS(TREESAT, s, normalize=False)) for s in ("train", "val", "test")}
    assert lens == {"train": 2, "val": 1, "test": 1}  # the train tile with no genus above 7 % is dropped
    train = TreeSatAITS(TREESAT, "train", modalities=["aerial", "s2", "s1-asc", "s1"], normalize=False)
    assert train.names == ["Abies_alba_1_1005_WEFL_NLF.tif", "Fagus_sylvatica_3_2107_WEFL_NLF.tif"]
    assert [TREESAT_GENERA[i] for i in train.labels[0].nonzero().flatten()] == ["Abies", "Picea"]
    s = train[0]  # s1 from the .pth; its first two channels are s1-asc
    pth = torch.load(TREESAT / "s1-asc" / "Abies_alba_1_1005_WEFL_NLF.pth", weights_only=True)
    assert torch.equal(s["s1"], pth) and torch.equal(s["s1-asc"], pth[:, :2])
    assert s["aerial"].shape == (4, 300, 300) and s["s2"].shape == (4, 10, 6, 6)
    assert s["s2_dates"].tolist() == [2, 19, 36, 53] and s["s1-asc_dates"].tolist() == [3, 15, 27]
    test = TreeSatAITS(TREESAT, "test", modalities=["aerial", "s2", "s1"], normalize=False)[0]  # centre crop
    name = "Pinus_sylvestris_4_6032_WEFL_NLF"
    with rasterio.open(TREESAT / "aerial" / f"{name}.tif") as f:
        assert torch.equal(test["aerial"], torch.from_numpy(f.read()[:, 2:302, 2:302].astype(np.float32)))
        left, top = f.transform.c, f.transform.f
    with h5py.File(TREESAT / "sentinel" / f"{name}.h5") as f:  # no .pth: VV, VH from the h5 and their ratio
        assert torch.equal(test["s2"], torch.from_numpy(f["sen-2-data"][:]))
        asc = torch.from_numpy(f["sen-1-asc-data"][:])
    torch.testing.assert_close(test["s1"], torch.cat([asc, asc[:, :1] / asc[:, 1:]], dim=1))
    assert test["meta"].crs == "EPSG:25832" and test["meta"].bounds == pytest.approx(
        (left + 0.4, top - 60.4, left + 60.4, top - 0.4)
    )
    assert [_doy(d) for d in test["meta"].extra["s2_dates"]] == test["s2_dates"].tolist()


def test_treesat_band_order(tmp_path: Path) -> None:
    generator("treesatai-ts").generate(tmp_path, band_ids=True)
    s = TreeSatAITS(tmp_path, "val", modalities=["aerial", "s2", "s1-asc", "s1"], normalize=False)[0]
    assert s["aerial"][:, 0, 0].tolist() == [1, 2, 3, 4]  # NIR, G, B, R kept in file order
    assert s["s2"][0, :, 0, 0].tolist() == list(range(1, 11))
    assert s["s1-asc"][0, :, 0, 0].tolist() == [2, 4] and s["s1"][0, :, 0, 0].tolist() == [2, 4, 0.5]


def test_treesat_model(model: AnySat) -> None:
    ds = TreeSatAITS(TREESAT, "train", modalities=["aerial", "s2", "s1"], normalize=False)
    run_model(model, [ds[0], ds[1]], patch_size_m=ds.patch_size_m)


# ------------------------------------------------------------------------------------------------ PASTIS-HD
PASTIS = HERE / "pastis-hd"


def test_pastis_splits_and_values() -> None:
    lens = {s: len(PASTISHD(PASTIS, s, normalize=False)) for s in ("train", "val", "test")}
    assert lens == {"train": 3, "val": 1, "test": 1}
    ds = PASTISHD(PASTIS, "train", modalities=["spot", "s2", "s1"], normalize=False)
    s = ds[1]
    assert s["s2"].shape == (3, 10, 8, 8) and s["s1"].shape == (4, 3, 8, 8) and s["spot"].shape == (3, 80, 80)
    assert torch.equal(s["s2"], torch.from_numpy(np.load(PASTIS / "DATA_S2" / "S2_10001.npy").astype(np.float32)))
    assert torch.equal(s["s1"], torch.from_numpy(np.load(PASTIS / "DATA_S1A" / "S1A_10001.npy")))
    # days since 2018-09-01: S2 from 2018-09-20 every 25 days (a JSON string in the metadata), S1A from 2018-10-03
    assert s["s2_dates"].tolist() == [19, 44, 69] and s["s1_dates"].tolist() == [32, 62, 92, 122]
    target = np.load(PASTIS / "ANNOTATIONS" / "TARGET_10001.npy")[0]
    assert torch.equal(s["label"], torch.from_numpy(target.astype(np.int64)))
    m = s["meta"]  # from the SPOT GeoTIFF
    assert m.crs == "EPSG:2154" and m.tile_id == "10001" and m.extra["fold"] == 2 and m.gsd_m == 1.0
    assert m.bounds == pytest.approx((651000, 6859920, 651080, 6860000))
    s2_only = PASTISHD(PASTIS, "train", modalities=["s2"], normalize=False)[1]["meta"]  # the polygon on the 10 m grid
    assert s2_only.transform == (10.0, 0.0, 651000.0, 0.0, -10.0, 6860000.0) and s2_only.bounds == m.bounds
    ml = PASTISHD(PASTIS, "test", modalities=["s1-asc"], normalize=False, task="multilabel")[0]
    target = np.load(PASTIS / "ANNOTATIONS" / "TARGET_10004.npy")[0]
    assert set((ml["label"].nonzero().flatten() + 1).tolist()) == set(np.unique(target).tolist()) - {0, 19}
    assert ml["s1-asc"].shape[1] == 2


def test_pastis_shipped_statistics() -> None:
    ds = PASTISHD(PASTIS, "train", modalities=["s2", "s1"])  # NORM_{S2,S1A}_patch.json averaged over folds 1-3
    assert ds.normalizer.stats["s2"].mean == pytest.approx((1502.0,) * 10)
    assert ds.normalizer.stats["s1"].std == pytest.approx((4.0,) * 3)
    raw = PASTISHD(PASTIS, "train", modalities=["s2"], normalize=False)[0]["s2"]
    torch.testing.assert_close(ds[0]["s2"], (raw - 1502.0) / 4.0)


def test_pastis_band_order(tmp_path: Path) -> None:
    generator("pastis-hd").generate(tmp_path, band_ids=True)
    s = PASTISHD(tmp_path, "val", modalities=["spot", "s2", "s1", "s1-asc"], normalize=False)[0]
    assert s["spot"][:, 0, 0].tolist() == [1, 2, 3] and s["s2"][0, :, 0, 0].tolist() == list(range(1, 11))
    assert s["s1"][0, :, 0, 0].tolist() == [1, 2, 3] and s["s1-asc"][0, :, 0, 0].tolist() == [1, 2]


def test_pastis_model(model: AnySat) -> None:
    ds = PASTISHD(PASTIS, "train", modalities=["spot", "s2", "s1"], normalize=False)
    run_model(model, [ds[0], ds[1]], patch_size_m=ds.patch_size_m)  # T differ: padded


# ------------------------------------------------------------------------------------------------ FLAIR
FLAIR_ROOT = HERE / "flair"


def test_flair_splits_and_values() -> None:
    lens = {s: len(FLAIR(FLAIR_ROOT, s, normalize=False, crop=None)) for s in ("train", "val", "test")}
    assert lens == {"train": 2, "val": 1, "test": 2}  # the test domain lives in the flair_2_*_test release
    ds = FLAIR(FLAIR_ROOT, "train", normalize=False, crop=None, s2_window_px=2, cloud_threshold=50)
    s = ds[1]
    img = FLAIR_ROOT / "flair_aerial_train/D013_2020/Z1_NF/img/IMG_100102.tif"
    assert ds.items[1]["img"] == img
    with rasterio.open(img) as f:
        assert torch.equal(s["aerial-flair"], torch.from_numpy(f.read().astype(np.float32)))
    sen = FLAIR_ROOT / "flair_sen_train/D013_2020/Z1_NF/sen"
    data = np.load(sen / "SEN2_sp_D013_2020-Z1_NF_data.npy")
    assert torch.equal(s["s2"], torch.from_numpy(data[:, :, 2:4, 3:5].astype(np.float32)))  # centroid [3, 4]
    masks = np.load(sen / "SEN2_sp_D013_2020-Z1_NF_masks.npy")[:, :, 2:4, 3:5]
    assert torch.equal(s["s2_mask"], torch.from_numpy((masks <= 50).all(axis=1, keepdims=True)))
    assert s["s2_dates"].tolist() == [70, 110, 150, 190]  # 2020-03-10 + 40 days... (leap year)
    with rasterio.open(FLAIR_ROOT / "flair_labels_train/D013_2020/Z1_NF/msk/MSK_100102.tif") as f:
        raw = f.read(1).astype(np.int64)
    assert torch.equal(s["label"], torch.from_numpy(np.minimum(raw, 13) - 1))
    assert s["meta"].crs == "EPSG:2154" and s["meta"].extra["domain"] == "D013_2020"
    ml = FLAIR(FLAIR_ROOT, "val", modalities=["aerial-flair"], normalize=False, crop=None, task="multilabel")[0]
    assert ml["label"].shape == (13,) and ml["label"].sum() >= 1


def test_flair_band_order(tmp_path: Path) -> None:
    generator("flair").generate(tmp_path, band_ids=True)
    s = FLAIR(tmp_path, "test", normalize=False, crop=None, s2_window_px=2)[0]
    assert s["aerial-flair"][:, 0, 0].tolist() == [1, 2, 3, 4, 5]  # R, G, B, NIR, elevation
    assert s["s2"][0, :, 0, 0].tolist() == list(range(1, 11))


def test_flair_model(model: AnySat) -> None:
    ds = FLAIR(FLAIR_ROOT, "test", normalize=False, crop=None, s2_window_px=2)
    run_model(model, [ds[0], ds[1]], patch_size_m=ds.patch_size_m)


# ------------------------------------------------------------------------------------------------ PLANTED
PLANTED = HERE / "planted"


def test_planted_splits_and_values() -> None:
    lens = {s: len(Planted(PLANTED, s, normalize=False)) for s in ("train", "val", "test")}
    assert lens == {"train": 3, "val": 1, "test": 1}
    ds = Planted(PLANTED, "train", normalize=False)
    s = ds[1]
    assert s["name"] == "100017" and s["label"].dtype == torch.int64 and int(s["label"]) == 11
    assert int(Planted(PLANTED, "val", normalize=False)[0]["label"]) == 34
    shapes = {
        "s2": (3, 10, 12, 12),
        "s1": (4, 3, 12, 12),
        "l7": (2, 6, 4, 4),
        "alos": (2, 3, 4, 4),
        "modis": (4, 7, 1, 1),
    }
    for mod, shape in shapes.items():
        assert tuple(s[mod].shape) == shape and s[mod].dtype == torch.float32
        assert s[f"{mod}_mask"].shape == s[mod].shape and s[f"{mod}_mask"].dtype == torch.bool
        assert s[f"{mod}_dates"].dtype == torch.int64 and s[f"{mod}_dates"].shape == (shape[0],)
    # (T, H, W, C) file permuted to (T, C, H, W); mask = file != 0
    d = PLANTED / "train" / "100017"
    raw = np.load(d / "100017_s2.npz")["arr_0"]
    assert torch.equal(s["s2"], torch.from_numpy(raw).permute(0, 3, 1, 2))
    raw_m = np.load(d / "100017_s2_mask.npz")["arr_0"]
    assert torch.equal(s["s2_mask"], torch.from_numpy(raw_m != 0).permute(0, 3, 1, 2))
    raw1 = torch.from_numpy(np.load(d / "100017_s1.npz")["arr_0"]).permute(0, 3, 1, 2)
    assert torch.allclose(s["s1"][:, 2], raw1[:, 0] / (raw1[:, 1] + 1e-10))
    # sample 1 starts 2019-01-18 (START + 3 days), dates 47 days apart, noon UTC
    assert s["s2_dates"].tolist() == [18, 65, 112]
    assert ds[0]["s2_dates"].tolist() == [15, 62, 109, 156]
    assert ds[0]["modis"].shape == (4, 7, 1, 1) or ds[0]["modis"].shape[1:] == (7, 1, 1)


def test_planted_band_order(tmp_path: Path) -> None:
    generator("planted").generate(tmp_path, band_ids=True)
    s = Planted(tmp_path, "train", normalize=False)[0]
    for mod in ("s2", "l7", "modis"):
        expect = torch.arange(1, MODALITIES[mod].num_bands + 1, dtype=torch.float32)
        assert torch.equal(s[mod][0, :, 0, 0], expect)
    for mod in ("s1", "alos"):  # 2 stored channels + ch0 / (ch1 + 1e-10)
        assert torch.allclose(s[mod][0, :, 0, 0], torch.tensor([1.0, 2.0, 0.5]))
        assert s[f"{mod}_mask"].all()


def test_planted_model(model: AnySat) -> None:
    ds = Planted(PLANTED, "train", normalize=False)
    run_model(model, [ds[0], ds[1]], patch_size_m=60)


def test_planted_compute_stats(tmp_path: Path) -> None:
    root = tmp_path / "planted"
    shutil.copytree(PLANTED, root)
    ds = Planted(root, "val", modalities=["s2"], normalize="compute")
    stats = json.loads((root / "NORM_s2_patch.json").read_text())
    assert len(stats["mean"]) == 10
    assert abs(float(ds[0]["s2"][ds[0]["s2_mask"]].mean())) < 1.0  # roughly centred


# ------------------------------------------------------------------------------------------------ S2NAIP-URBAN
S2NAIP = HERE / "s2naip-urban"


def test_s2naip_splits_and_values() -> None:
    lens = {s: len(S2NaipUrban(S2NAIP, s, normalize=False)) for s in ("train", "val", "test")}
    assert lens == {"train": 2, "val": 1, "test": 1}
    s = S2NaipUrban(S2NAIP, "train", normalize=False)[0]
    assert s["name"] == "32610_843_-6594" and "label" not in s
    assert s["naip"].shape == (4, 64, 64) and s["naip"].dtype == torch.float32
    assert s["s2"].shape == (3, 10, 8, 8) and s["s1"].shape == (2, 3, 8, 8) and s["l8"].shape == (2, 11, 8, 8)
    assert s["s2_dates"].tolist() == [153, 188, 228]  # 2019-06-02, 07-07, 08-16
    assert s["l8_dates"].tolist() == [140, 268]
    # 10 m bands are copied as they are: B02 of date 1 is band 4 (0-based) of the time-major _8 stack
    with rasterio.open(S2NAIP / "sentinel2" / "32610_843_-6594_8.tif") as f:
        b8 = f.read()
        assert s["meta"].crs == f.crs.to_string() == "EPSG:32610"
    assert torch.equal(s["s2"][1, 0], torch.from_numpy(b8[4].astype(np.float32)))
    assert torch.equal(s["s2"][1, 6], torch.from_numpy(b8[7].astype(np.float32)))  # B08
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        f = rasterio.open(S2NAIP / "naip" / "32610_843_-6594.png")
    with f:
        assert torch.equal(s["naip"], torch.from_numpy(f.read().astype(np.float32)))
    t = s["meta"].transform
    assert t[0] == pytest.approx(1.25) and t[2] == 843 * 640 and t[5] == 6594 * 640
    assert s["meta"].shape == (64, 64)


def test_s2naip_band_order_and_osm(tmp_path: Path) -> None:
    generator("s2naip-urban").generate(tmp_path, band_ids=True)
    s = S2NaipUrban(tmp_path, "train", normalize=False, osm_label=True)[0]
    assert s["s2"][:, :, 3, 3].tolist() == [[2, 3, 4, 5, 6, 7, 8, 85, 11, 12]] * 3
    assert s["l8"][0, :, 3, 3].tolist() == [8, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    assert torch.allclose(s["s1"][0, :, 0, 0], torch.tensor([2.0, 4.0, 0.5]), atol=1e-5)
    assert s["naip"][:, 0, 0].tolist() == [1, 2, 3, 4]
    label = s["label"]
    assert label.shape == (64, 64) and label.dtype == torch.int64
    assert label[10, 10] == 1  # building polygon
    assert label[40, 30] == 2 and label[39, 30] == 2 and label[37, 30] == 0  # road, 2 px thick
    assert label[10, 50] == 3  # power tower point
    assert label[55, 50] == 5  # "park": other
    assert label[30, 30] == 0
    assert set(label.unique().tolist()) == {0, 1, 2, 3, 5}


def test_s2naip_model(model: AnySat) -> None:
    ds = S2NaipUrban(S2NAIP, "train", normalize=False)
    run_model(model, [ds[0], ds[1]], patch_size_m=40)


# ------------------------------------------------------------------------------------------------ BraDD-S1TS
BRADD = HERE / "bradd-s1ts"


def test_bradd_splits_and_values() -> None:
    lens = {s: len(BraDDS1TS(BRADD, s, normalize=False)) for s in ("train", "val", "test")}
    assert lens == {"train": 2, "val": 1, "test": 1}
    s = BraDDS1TS(BRADD, "train", normalize=False)[0]
    assert s["name"] == "0000000_2021-08-21.pt"
    assert s["s1"].shape == (5, 3, 16, 16) and s["s1"].dtype == torch.float32
    # 5 images 12 days apart ending on the alert date, which is the last label date: days since the first date + 1
    assert s["s1_dates"].tolist() == [1, 13, 25, 37, 49] and s["s1_dates"].dtype == torch.int64
    raw = torch.load(BRADD / "Samples" / "0000000_2021-08-21.pt", weights_only=False)
    assert torch.equal(s["s1"][:, :2], raw["image"])
    assert torch.allclose(s["s1"][:, 2], (raw["image"][:, 0] / (raw["image"][:, 1] + 1e-6)).clamp(-1e4, 1e4))
    assert s["label"].dtype == torch.int64 and torch.equal(s["label"], raw["label"][1].long())
    assert int(s["label"].sum()) == 48 and s["label"][2, 3] == 1 and s["label"][0, 0] == 0
    assert s["meta"].extra["image_dates"][0] == "2021-07-04"


def test_bradd_band_order_and_model(tmp_path: Path, model: AnySat) -> None:
    generator("bradd-s1ts").generate(tmp_path, band_ids=True)
    s = BraDDS1TS(tmp_path, "val", normalize=False)[0]
    assert torch.allclose(s["s1"][0, :, 0, 0], torch.tensor([2.0, 4.0, 0.5]), atol=1e-5)
    ds = BraDDS1TS(BRADD, "train", normalize=False)
    run_model(model, [ds[0], ds[1]], patch_size_m=40)


# ------------------------------------------------------------------------------------------------ SICKLE
SICKLE = HERE / "sickle"


def test_sickle_splits_and_values() -> None:
    lens = {s: len(Sickle(SICKLE, s, normalize=False)) for s in ("train", "val", "test")}
    assert lens == {"train": 2, "val": 1, "test": 1}
    assert Sickle(SICKLE, "test", normalize=False)[0]["name"] == "201"  # AnySat's test = SICKLE's val
    s = Sickle(SICKLE, "train", normalize=False)[0]
    assert s["name"] == "101"
    assert s["s2"].shape == (3, 10, 32, 32) and s["s1"].shape == (2, 3, 32, 32) and s["l8"].shape == (2, 11, 32, 32)
    assert s["l8_mask"].shape == (2, 11, 32, 32) and s["l8_mask"].dtype == torch.bool
    # files sorted by date: 2018-10-12 (field 0), 2018-12-26 (name starts with "T": field 1), 2019-01-05
    assert s["s2_dates"].tolist() == [285, 360, 5]
    assert s["s1_dates"].tolist() == [290, 10] and s["l8_dates"].tolist() == [309, 24]
    raw = np.load(SICKLE / "images/S2/npy/101/T44PLT_20181226T050219_x.npz")
    idx = (torch.arange(32) * 12) // 32  # nearest resize 12 -> 32
    assert torch.equal(s["s2"][1, 0], torch.from_numpy(raw["B2"].astype(np.float32))[idx][:, idx])
    # label: plot 11 (train) crop 1 -> 0 paddy, crop 2 -> 1; plot 12 (a val plot) -> -1; background crop 0 -> -1
    lab = s["label"]
    assert lab.dtype == torch.int64 and lab.shape == (32, 32)
    assert lab[0, 0] == 0 and lab[0, 12] == 1 and lab[0, 30] == -1 and lab[31, 0] == -1
    assert set(lab.unique().tolist()) == {-1, 0, 1}
    assert s["meta"].crs == "EPSG:32644"
    s2 = Sickle(SICKLE, "train", normalize=False)[1]
    # SR_B6 missing from the second Landsat file of 102: masked there only; B8, B9, B11 slots always masked
    m = s2["l8_mask"][:, :, 0, 0]
    assert m[:, [0, 8, 10]].sum() == 0 and m[1, 6].item() is False and m[0, 6].item() is True
    assert s2["l8"][1, 6].abs().sum() == 0


def test_sickle_band_order(tmp_path: Path) -> None:
    generator("sickle").generate(tmp_path, band_ids=True)
    s = Sickle(tmp_path, "train", normalize=False)[0]
    assert s["s2"][0, :, 5, 5].tolist() == [2, 3, 4, 5, 6, 7, 8, 85, 11, 12]
    assert s["l8"][0, :, 5, 5].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 10, 0]
    assert torch.allclose(s["s1"][0, :, 5, 5], torch.tensor([2.0, 4.0, 0.5]), atol=1e-5)
    up = Sickle(tmp_path, "train", normalize=False, upstream_band_order=True)[0]
    assert up["s2"][0, :, 5, 5].tolist() == [2, 3, 4, 5, 6, 7, 85, 8, 11, 12]  # AnySat's B8/B8A swap


def test_sickle_model(model: AnySat) -> None:
    ds = Sickle(SICKLE, "train", normalize=False)
    run_model(model, [ds[0], ds[1]], patch_size_m=40)


# ------------------------------------------------------------------------------------------------ TimeSen2Crop
TS2C = HERE / "timesen2crop"


def test_timesen2crop_splits_and_values() -> None:
    names = {s: [x["name"] for x in TimeSen2Crop(TS2C, s, normalize=False)] for s in ("train", "val", "test")}
    assert names == {
        "train": ["33TUM/0/0", "33TUM/0/1", "33TUM/12/0", "33UWP/2/0"],  # 2019_33UVP left out
        "val": ["33TWN/1/0", "33TWN/15/0"],
        "test": ["33UVP/9/0", "33UVP/9/1"],
    }
    ds = TimeSen2Crop(TS2C, "train", normalize=False)
    s = ds[2]
    assert int(s["label"]) == 12 and s["label"].dtype == torch.int64
    assert s["s2"].shape == (5, 10, 1, 1) and s["s2"].dtype == torch.float32
    assert s["s2_dates"].tolist() == [246, 283, 320, 357, 29]  # 2017-09-03 + 37 days..., wraps in January
    raw = np.loadtxt(TS2C / "33TUM/12/0.csv", delimiter=",", skiprows=1, dtype=np.float32)
    assert torch.equal(s["s2"][:, :, 0, 0], torch.from_numpy(raw[:, [0, 1, 2, 3, 4, 5, 6, 9, 7, 8]]))
    assert s["s2_mask"].shape == (5, 10, 1, 1) and s["s2_mask"][:, 7].sum() == 0 and s["s2_mask"].sum() == 45


def test_timesen2crop_band_order_and_model(tmp_path: Path, model: AnySat) -> None:
    generator("timesen2crop").generate(tmp_path, band_ids=True)
    s = TimeSen2Crop(tmp_path, "test", normalize=False)[0]
    assert s["s2"][0, :, 0, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 10, 8, 9]  # B8A in the B08 slot, flag masked
    ds = TimeSen2Crop(TS2C, "train", normalize=False)
    run_model(model, [ds[0], ds[3]], patch_size_m=10)  # T = 5 and 4: padded


def test_timesen2crop_compute_stats(tmp_path: Path) -> None:
    root = tmp_path / "ts2c"
    shutil.copytree(TS2C, root)
    ds = TimeSen2Crop(root, "test", normalize="compute")  # statistics from the train split, cached
    assert (root / "NORM_s2_patch.json").is_file()
    x = ds[0]["s2"]
    assert torch.isfinite(x[ds[0]["s2_mask"]]).all()


# ------------------------------------------------------------------------------------------------ errors
CASES = {
    "treesatai-ts": (TreeSatAITS, TREESAT, "train", "sentinel/Abies_alba_1_1005_WEFL_NLF.h5", {}),
    "pastis-hd": (PASTISHD, PASTIS, "train", "DATA_S2/S2_10000.npy", {}),
    "flair": (FLAIR, FLAIR_ROOT, "train", "flair_aerial_train/D013_2020/Z1_NF/img/IMG_100101.tif", {"crop": None}),
    "planted": (Planted, PLANTED, "train", "train/100003/100003_s2.npz", {}),
    "s2naip-urban": (S2NaipUrban, S2NAIP, "train", "sentinel2/32610_843_-6594_8.tif", {}),
    "bradd-s1ts": (BraDDS1TS, BRADD, "train", "Samples/0000000_2021-08-21.pt", {}),
    "sickle": (Sickle, SICKLE, "train", "masks/10m/101.tif", {}),
    "timesen2crop": (TimeSen2Crop, TS2C, "train", "33TUM/0/0.csv", {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_missing_root(name: str, tmp_path: Path) -> None:
    cls = CASES[name][0]
    with pytest.raises(DatasetNotFoundError) as e:
        cls(tmp_path / "nowhere", "train", normalize=False)
    msg = str(e.value)
    assert cls.url in msg and cls.layout.splitlines()[0].strip() in msg and "nowhere" in msg


@pytest.mark.parametrize("name", list(CASES))
def test_truncated_file(name: str, tmp_path: Path) -> None:
    cls, src, split, rel, kw = CASES[name]
    root = tmp_path / name
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("data.py", "__pycache__"))
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2])
    ds = cls(root, split, normalize=False, **kw)
    with pytest.raises(CorruptFileError) as e:
        ds[0]
    assert str(root / rel) in str(e.value)
