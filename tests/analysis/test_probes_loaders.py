"""Linear probes on every dataset loader: loader -> ``embed_dataset`` -> the probe of the dataset's task.

For each of the 8 registered loaders a small real-format root is built as the loader tests build it (the committed
generated copies under ``tests/data/<dataset>/`` for PLANTED, S2NAIP-URBAN, BraDD-S1TS, SICKLE and TimeSen2Crop; the
torchgeo TreeSatAI / PASTIS-R / FLAIR #2 fixtures of ``../shared/data``, completed as in
``tests.helpers.datasets``), every split of it is embedded with the test-size AnySat (``size="test"``, random
weights, ``torch.manual_seed(0)``) at the dataset's protocol patch size (``cls.patch_size_m``), and the probe matching
the loader's ``task`` is fitted:

* ``multilabel`` (TreeSatAI-TS): :class:`TileProbe` ``"multilabel"`` on ``(N, 64)`` tile features;
* ``classification`` (PLANTED, TimeSen2Crop): :class:`TileProbe` ``"multiclass"``;
* ``segmentation`` / ``change-detection`` (PASTIS-HD, FLAIR, BraDD-S1TS, SICKLE) and S2NAIP-URBAN's rasterized OSM
  map (``osm_label=True``; the dataset itself is pretraining-only): :class:`PixelProbe` on ``dense`` feature maps
  (AnySat's segmentation output), label maps put on the feature grid by the probe.

The fixtures hold a handful of samples with random labels, so no score above chance can be asserted on held-out
data.  What is asserted: finite features of the expected shape; predictions of the label's shape with classes of the
label set; metrics in range (OA in percent 0-100, F1 / IoU fractions 0-1); and that the probe fits its training set
clearly better than the majority class (:func:`_clearly_above`: training accuracy at least twice the majority-class
rate, or half-way from it to 100 % where doubling is out of reach).  A split holding a single class (TimeSen2Crop's
test split) raises :class:`ProbeError`.

Training accuracy / majority-class rate measured on this machine (CPU, seed 0, test-size model), kept here so the
margins are honest: TreeSatAI-TS 100 % / 85.9 % (per label; 100 % / 80.8 % on the 11 labels that vary), PASTIS-HD
15.4 % / 5.9 % (3 patches, i.i.d. random labels of 19 classes per pixel), FLAIR 64.7 % / 11.3 %, PLANTED 100 % / 20 %,
S2NAIP-URBAN 100 % / 92.2 % (OSM map on the 8 x 8 dense grid), BraDD-S1TS 94.7 % / 81.3 % (C=100; 91.2 % at C=1),
SICKLE 94.2 % / 50 %, TimeSen2Crop 100 % / 25 %.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from anysat_core import AnySat
from anysat_core.analysis import PixelProbe, TileProbe, labels_to_dataarray
from anysat_core.data.datasets import dataset_class, get_dataset, list_datasets
from anysat_core.embeddings import embed_dataset
from anysat_core.errors import ProbeError
from tests.helpers.shared import SHARED, TREESAT, shared_file

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("h5py")
from rasterio.transform import Affine

from tests.helpers.datasets import fix_flair, make_pastis_root, upsample_rasters

# the torchgeo FLAIR fixture rasters have a CRS but no geotransform
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURES = SHARED / "data" / "torchgeo-fixtures"
TREESAT_NAME = "Abies_alba_1_1005_WEFL_NLF"
NAMES = ("treesatai-ts", "pastis-hd", "flair", "planted", "s2naip-urban", "bradd-s1ts", "sickle", "timesen2crop")
TILE_D, DENSE_D = 64, 128  # AnySat(size="test"): width 64; dense features concatenate two widths


@dataclass
class Case:
    """A loader ready to embed: its splits, the model output to probe and what to expect of the features."""

    datasets: list[Any]
    output: str  # "tile" or "dense"
    feature_shape: tuple[int, ...]  # one sample's features: (D,) for tiles, (D, h, w) for maps
    output_modality: str | None = None
    num_classes: int = 0
    ignore_index: int | None = None
    C: float = 1.0  # the probe's inverse regularisation


# ------------------------------------------------------------------------------------------------ roots
def _copy_generated(name: str, tmp: Path) -> Path:
    """A writable copy of the committed generated layout (normalisation statistics get cached in it)."""
    root = tmp / name
    shutil.copytree(DATA / name, root, ignore=shutil.ignore_patterns("data.py", "__pycache__"))
    return root


def _treesat(tmp: Path) -> Case:
    """TreeSatAI-TS layout around torchgeo's 9 TreeSatAI train tiles (their multi-genus labels JSON and split list).

    The fixture has aerial tiles of 32 px only and no Sentinel series: each aerial tile is written at 304 px (nearest,
    0.2 m, its CRS and origin kept: a 60.8 m tile as in the release) and the real TreeSatAI-TS tile's series
    (``sentinel/*.h5``, ``s1-asc/*.pth``) are linked under every name."""
    src = shared_file(FIXTURES / "treesatai")
    h5, pth = shared_file(TREESAT / f"{TREESAT_NAME}.h5"), shared_file(TREESAT / f"{TREESAT_NAME}.pth")
    root = tmp / "TreeSat"
    for folder in ("aerial", "sentinel", "s1-asc", "labels"):
        (root / folder).mkdir(parents=True)
    shutil.copy(src / "labels" / "TreeSatBA_v9_60m_multi_labels.json", root / "labels")
    shutil.copy(src / "train_filenames.lst", root)
    idx = np.arange(304) * 32 // 304
    for name in (src / "train_filenames.lst").read_text().split():
        stem = name[:-4]
        with rasterio.open(src / "aerial" / "60m" / name) as f:
            arr, profile = f.read(), f.profile
        t = profile["transform"]
        profile.update(width=304, height=304, transform=Affine(0.2, 0.0, t.c, 0.0, -0.2, t.f))
        with rasterio.open(root / "aerial" / name, "w", **profile) as dst:
            dst.write(arr[:, idx][:, :, idx])
        (root / "sentinel" / f"{stem}.h5").symlink_to(h5.resolve())
        (root / "s1-asc" / f"{stem}.pth").symlink_to(pth.resolve())
    ds = get_dataset("treesatai-ts", root, "train", modalities=["aerial", "s2", "s1"], crop="centre")
    return Case([ds], "tile", (TILE_D,))


def _pastis(tmp: Path) -> Case:
    """torchgeo's PASTIS-R fixture (5 patches of 32 px) with the date dictionaries AnySat needs; folds 1-3 (3 patches:
    i.i.d. random labels are memorised better from fewer pixels, and they embed faster)."""
    root = make_pastis_root(tmp)
    cls = dataset_class("pastis-hd")
    ds = cls(root, "train", modalities=["s2", "s1"], normalize="compute", folds=(1, 2, 3))
    return Case([ds], "dense", (DENSE_D, 32, 32), "s2", len(cls.classes), cls.ignore_index)


def _flair(tmp: Path) -> Case:
    """torchgeo's FLAIR #2 fixture with the README fixes; the train and val domains rewritten at 100 px (20 m,
    2 Sentinel-2 pixels), as the loader's model test does."""
    root = tmp / "FLAIR"
    shutil.copytree(shared_file(FIXTURES / "flair2" / "FLAIR2"), root)
    fix_flair(root)
    for domain in ("D300_2013", "D346_2018"):
        upsample_rasters(root, domain, 100)
    cls = dataset_class("flair")
    dss = [cls(root, s, normalize="compute", crop=None, s2_window_px=2) for s in ("train", "val")]
    return Case(dss, "dense", (DENSE_D, 10, 10), "aerial-flair", len(cls.classes), cls.ignore_index)


def _generated(name: str, splits: tuple[str, ...], **kw: Any) -> Any:
    def build(tmp: Path) -> list[Any]:
        root = _copy_generated(name, tmp)
        return [get_dataset(name, root, s, normalize="compute", **kw) for s in splits]

    return build


def _planted(tmp: Path) -> Case:
    return Case(_generated("planted", ("train", "val", "test"))(tmp), "tile", (TILE_D,), num_classes=40)


def _s2naip(tmp: Path) -> Case:
    """The OSM map (``osm_label=True``, 6 meta-classes on the 1.25 m NAIP grid) is the only label of S2NAIP."""
    dss = _generated("s2naip-urban", ("train", "val", "test"), osm_label=True)(tmp)
    return Case(dss, "dense", (DENSE_D, 8, 8), "naip", len(dss[0].classes), None)


def _bradd(tmp: Path) -> Case:
    """Flood maps are 81 % background: a weakly regularised probe (C=100) fits the 64-wide test model's features."""
    dss = _generated("bradd-s1ts", ("train", "val", "test"))(tmp)
    return Case(dss, "dense", (DENSE_D, 16, 16), "s1", 2, -1, C=100.0)


def _sickle(tmp: Path) -> Case:
    """SICKLE's test split reads the val rows (as AnySat): train and val only, so no sample is counted twice."""
    dss = _generated("sickle", ("train", "val"))(tmp)
    return Case(dss, "dense", (DENSE_D, 32, 32), "s2", 2, -1)


def _timesen2crop(tmp: Path) -> Case:
    return Case(_generated("timesen2crop", ("train", "val", "test"))(tmp), "tile", (TILE_D,), num_classes=16)


BUILDERS = {
    "treesatai-ts": _treesat,
    "pastis-hd": _pastis,
    "flair": _flair,
    "planted": _planted,
    "s2naip-urban": _s2naip,
    "bradd-s1ts": _bradd,
    "sickle": _sickle,
    "timesen2crop": _timesen2crop,
}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


def _embed(model: AnySat, case: Case) -> tuple[Any, list[np.ndarray], list[Any]]:
    """Features, labels (one array per sample) and metas of every split of a case, in order."""
    feats: list[Any] = []
    labels: list[np.ndarray] = []
    metas: list[Any] = []
    for ds in case.datasets:
        X, y, m = embed_dataset(
            model, ds, patch_size_m=ds.patch_size_m, output=case.output, output_modality=case.output_modality
        )
        if case.output == "tile":
            feats.append(X)
        else:
            feats.extend(X)
        labels.extend(list(y))
        metas.extend(m)
    X = np.concatenate(feats) if case.output == "tile" else feats
    return X, labels, metas


def _majority_rate(y: np.ndarray) -> float:
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / counts.sum())


def _clearly_above(acc: float, majority: float) -> bool:
    """Training accuracy at least doubles the majority-class rate, or (where that is out of reach, majority > 1/3)
    closes at least half of the gap between it and 100 %."""
    return acc >= min(2.0 * majority, (1.0 + majority) / 2.0) - 1e-9


# ------------------------------------------------------------------------------------------------ tests
def test_every_registered_loader_is_covered() -> None:
    """GeoPlex-mini (no root, synthetic) is probed in test_probes.py; every loader of a published dataset is here."""
    assert sorted(NAMES) == sorted(set(list_datasets()) - {"geoplex-mini"}) == sorted(BUILDERS)


@pytest.mark.parametrize("name", NAMES)
def test_probe_on_loader(name: str, model: AnySat, tmp_path: Path) -> None:
    cls = dataset_class(name)
    case = BUILDERS[name](tmp_path)
    X, labels, metas = _embed(model, case)
    n = sum(len(ds) for ds in case.datasets)
    assert n >= 3 and len(labels) == len(metas) == n

    if case.output == "tile":
        _check_tile(cls, case, X, labels)
    else:
        _check_pixels(cls, case, X, labels, metas)


def _check_tile(cls: Any, case: Case, X: np.ndarray, labels: list[np.ndarray]) -> None:
    n = len(labels)
    assert X.dtype == np.float32 and X.shape == (n, *case.feature_shape) and np.isfinite(X).all()
    assert np.unique(X, axis=0).shape[0] == n  # every sample gets its own embedding
    if cls.task == "multilabel":
        Y = np.stack(labels).astype(np.int64)
        assert Y.shape == (n, len(cls.classes)) and set(np.unique(Y)) <= {0, 1}
        varying = (Y.sum(0) > 0) & (Y.sum(0) < n)
        assert varying.any(), "the fixture's labels must vary for a multilabel probe"
        probe = TileProbe("multilabel", cv=3).fit(X, Y)
        pred = probe.predict(X)
        assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
        proba = probe.predict_proba(X)
        assert proba.shape == Y.shape and ((proba >= 0) & (proba <= 1)).all()
        # per-label training accuracy against predicting each label's majority value
        acc = float((pred == Y).mean())
        majority = float(np.maximum(Y.mean(0), 1 - Y.mean(0)).mean())
        assert _clearly_above(acc, majority), (acc, majority)
        # the varying labels carry the learning: they must be fitted too
        acc_v = float((pred[:, varying] == Y[:, varying]).mean())
        maj_v = float(np.maximum(Y[:, varying].mean(0), 1 - Y[:, varying].mean(0)).mean())
        assert _clearly_above(acc_v, maj_v), (acc_v, maj_v)
        scores = [probe.score(X, Y), probe.cross_validate(X, Y)]
        for s in scores:
            for key in ("F1_weighted", "F1_macro", "F1_micro"):
                assert 0.0 <= s[key] <= 1.0, (key, s[key])
        assert scores[0]["F1_micro"] > 0.5
        return

    assert cls.task == "classification"
    y = np.asarray(labels, dtype=np.int64)
    assert y.shape == (n,) and ((0 <= y) & (y < case.num_classes)).all()
    assert np.unique(y).size >= 2
    probe = TileProbe("multiclass", cv=3, num_classes=case.num_classes).fit(X, y)
    pred = probe.predict(X)
    assert pred.shape == y.shape and set(pred.tolist()) <= set(y.tolist())
    proba = probe.predict_proba(X)
    assert proba.shape == (n, case.num_classes) and np.allclose(proba.sum(1), 1.0)
    s = probe.score(X, y)
    acc = float((pred == y).mean())
    assert s["OA"] == pytest.approx(100 * acc)
    assert _clearly_above(acc, _majority_rate(y)), (acc, _majority_rate(y))
    cv = probe.cross_validate(X, y)
    for d in (s, cv):
        assert 0.0 <= d["OA"] <= 100.0
        assert 0.0 <= d["F1_macro"] <= 1.0 and 0.0 <= d["F1_weighted"] <= 1.0
    assert cv["confusion_matrix"].shape == (case.num_classes, case.num_classes)
    assert cv["confusion_matrix"].sum() == n  # every sample tested once


def _check_pixels(cls: Any, case: Case, das: list[xr.DataArray], labels: list[np.ndarray], metas: list[Any]) -> None:
    assert cls.task in ("segmentation", "change-detection") or cls.name == "s2naip-urban"
    for da, lab in zip(das, labels):
        assert isinstance(da, xr.DataArray) and da.dims == ("feature", "y", "x")
        assert da.shape == case.feature_shape and np.isfinite(da.values).all()
        assert lab.ndim == 2
        valid = lab[lab != case.ignore_index] if case.ignore_index is not None else lab
        assert ((valid >= 0) & (valid < case.num_classes)).all()
    probe = PixelProbe(case.num_classes, ignore_index=case.ignore_index, C=case.C).fit(das, labels)
    ev = probe.evaluate(das, labels)
    cm = ev["confusion_matrix"]
    assert cm.shape == (case.num_classes, case.num_classes) and cm.sum() == ev["n_pixels"] > 0
    truth = cm.sum(1)  # the labels on the feature grid, per class
    assert (truth > 0).sum() >= 2, "the fixture's label maps must hold two classes"
    h, w = case.feature_shape[1:]
    if all(lab.shape == (h, w) for lab in labels):  # labels on the feature grid: every valid pixel counted
        n_valid = sum(int((lab != case.ignore_index).sum()) for lab in labels)
        assert ev["n_pixels"] == n_valid
    assert 0.0 <= ev["OA"] <= 100.0 and 0.0 <= ev["mIoU"] <= 1.0
    iou = ev["per_class_IoU"]
    assert iou.shape == (case.num_classes,) and np.all((iou[~np.isnan(iou)] >= 0) & (iou[~np.isnan(iou)] <= 1))
    majority = float(truth.max() / truth.sum())
    assert _clearly_above(ev["OA"] / 100.0, majority), (ev["OA"], majority)

    seen = set(np.flatnonzero(truth).tolist())
    for da, lab in zip(das, labels):
        pm = probe.predict_map(da)
        assert pm["prediction"].shape == (h, w) and set(np.unique(pm["prediction"].values).tolist()) <= seen
        r = lab.shape[0] // h  # the label map is the prediction grid, or r x r finer over the same extent
        assert r >= 1 and lab.shape == (r * h, r * w)
        conf = pm["confidence"].values
        assert np.isfinite(conf).all() and ((conf > 0) & (conf <= 1)).all()
        np.testing.assert_array_equal(pm["x"].values, da["x"].values)

    # georeferenced samples: labels placed by coordinates land on the same cells as the plain arrays
    if all(m is not None and m.transform is not None for m in metas):
        geo = [labels_to_dataarray(lab, m) for lab, m in zip(labels, metas)]
        for da, g in zip(das, geo):  # the feature map covers the label map's extent
            assert da.rio.bounds() == pytest.approx(g.rio.bounds())
        ev_geo = probe.evaluate(das, geo)
        np.testing.assert_array_equal(ev_geo["confusion_matrix"], cm)


def test_single_class_split_raises_probe_error(model: AnySat, tmp_path: Path) -> None:
    """TimeSen2Crop's test tile holds two pixels of one class (9): no probe can be fitted, and the error says why."""
    ds = get_dataset("timesen2crop", _copy_generated("timesen2crop", tmp_path), "test", normalize="compute")
    X, y, _ = embed_dataset(model, ds, patch_size_m=ds.patch_size_m)
    assert y.tolist() == [9, 9]
    with pytest.raises(ProbeError, match=r"holds class 9 \(2 label\(s\)\).*at least two classes"):
        TileProbe("multiclass", num_classes=16).fit(X, y)
