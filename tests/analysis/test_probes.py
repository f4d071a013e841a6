"""Linear probes on frozen features: metrics on synthetic problems, GeoPlex-mini probes above chance, errors.

Measured on this machine (CPU, torch.manual_seed(0), random init), kept here so the margins in the assertions are
honest:

* tile probe, GeoPlex-mini (seed 0, s2), dominant class, 32 train / 16 test tiles, patch 20 m, AnySat **tiny** (the
  size matters here: the test-size model's 64 features reach only 50-58 % on 48 / 24 tiles): AnySat features
  OA 75.0 % (s2 + s1-asc: 81.2 %); raw band statistics OA 81.2 %; majority-class chance 31.2 %, uniform chance 12.5 %.
* pixel probe, GeoPlex-mini segmentation, dense s2 features at patch 20 m (10 m grid), 16 train / 8 test tiles,
  test-size AnySat: OA 86.8 % (mIoU 0.39), majority-class chance 51.0 % (tiny: OA 91.7 %).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
import xarray as xr

from anysat_core.analysis import PixelProbe, TileProbe, fit_from_points, label_efficiency, labels_to_dataarray
from anysat_core.analysis.metrics import overall_accuracy
from anysat_core.errors import AnySatError, ExtentMismatchError, InputShapeError, NonFiniteInputError, ProbeError

CRS = "EPSG:32631"


# ------------------------------------------------------------------------------------------------ helpers
def _blobs(n: int = 120, k: int = 3, d: int = 6, sep: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: class c centred at sep * e_c (well separated), unit noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(n, d))
    X[np.arange(n), y] += sep
    return X, y


def _two_region_map(
    h: int = 12,
    w: int = 12,
    d: int = 4,
    x0: float = 500_000.0,
    y0: float = 4_000_000.0,
    gsd: float = 10.0,
    seed: int = 0,
) -> tuple[xr.DataArray, np.ndarray]:
    """Feature map (feature, y, x): left half class 0, right half class 1 (feature 0 encodes the class), noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), dtype=np.int64)
    truth[:, w // 2 :] = 1
    data = rng.normal(scale=0.5, size=(d, h, w))
    data[0] += np.where(truth == 1, 2.0, -2.0)
    da = xr.DataArray(
        data.astype(np.float32),
        dims=("feature", "y", "x"),
        coords={"feature": np.arange(d), "y": y0 - gsd * (np.arange(h) + 0.5), "x": x0 + gsd * (np.arange(w) + 0.5)},
    ).rio.write_crs(CRS)
    return da, truth


# ------------------------------------------------------------------------------------------------ tile probe
def test_tile_probe_separable_metrics() -> None:
    X, y = _blobs()
    probe = TileProbe("multiclass", cv=4, seed=0)
    cv = probe.cross_validate(X, y)
    assert cv["n_folds"] == 4
    assert cv["OA"] > 95 and cv["F1_macro"] > 0.95 and cv["F1_weighted"] > 0.95
    assert cv["OA_std"] >= 0
    assert cv["confusion_matrix"].shape == (3, 3) and cv["confusion_matrix"].sum() == len(y)
    # the reported OA is the metrics.py OA of the summed confusion matrix (equal folds: mean of folds == pooled)
    assert cv["OA"] == pytest.approx(overall_accuracy(cv["confusion_matrix"]), abs=1e-9)
    again = TileProbe("multiclass", cv=4, seed=0).cross_validate(X, y)
    assert again["OA"] == cv["OA"] and np.array_equal(again["confusion_matrix"], cv["confusion_matrix"])
    probe.fit(X, y)
    p = probe.predict_proba(X)
    assert p.shape == (len(y), 3) and np.allclose(p.sum(1), 1)
    assert (probe.predict(X) == y).mean() > 0.95


def test_tile_probe_multilabel() -> None:
    rng = np.random.default_rng(1)
    Y = (rng.random((90, 4)) < 0.4).astype(np.float32)
    X = np.concatenate([Y * 3 + rng.normal(scale=0.5, size=Y.shape), rng.normal(size=(90, 3))], 1)
    cv = TileProbe("multilabel", cv=3).cross_validate(X, Y)
    assert cv["F1_weighted"] > 0.9 and cv["F1_macro"] > 0.9 and cv["F1_micro"] > 0.9
    pred = TileProbe("multilabel").fit(X, Y).predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}


def test_label_efficiency_table() -> None:
    X, y = _blobs(n=150, k=3, sep=1.5, seed=3)
    table = label_efficiency(X, y, sizes=[64, 6, 24], repeats=3, seed=0)
    sizes = [row["n_labels"] for row in table]
    assert sizes == [6, 24, 64]
    for row in table:
        assert 0 <= row["OA"] <= 100 and row["OA_std"] >= 0 and 0 <= row["F1_macro"] <= 1 and row["repeats"] == 3
    assert table[-1]["OA"] > 100 / 3 + 20  # well above chance with 64 labels
    assert table[-1]["OA"] >= table[0]["OA"] - 5
    assert table == label_efficiency(X, y, sizes=[64, 6, 24], repeats=3, seed=0)
    with pytest.raises(ProbeError, match="size 1000"):
        label_efficiency(X, y, sizes=[1000])


# ------------------------------------------------------------------------------------------------ GeoPlex-mini
def _model(size: str):
    from anysat_core import AnySat

    torch.manual_seed(0)
    return AnySat(size=size).eval()


def _raw_stats(ds, idx) -> np.ndarray:
    """Hand-made baseline: per-band mean, std and quarterly means of every series modality."""
    rows = []
    for i in idx:
        s = ds[i]
        f = []
        for mod in ds.modalities:
            x = s[mod].numpy()
            T = x.shape[0]
            f += [x.mean((0, 2, 3)), x.std((0, 2, 3))]
            f += [x[q * T // 4 : (q + 1) * T // 4].mean((0, 2, 3)) for q in range(4)]
        rows.append(np.concatenate(f))
    return np.asarray(rows)


def test_tile_probe_geoplex_above_chance() -> None:
    from anysat_core.data.geoplex_mini import GeoPlexMini
    from anysat_core.embeddings import embed_dataset

    kw = {"seed": 0, "modalities": ("s2",), "task": "multilabel"}
    train, test = GeoPlexMini(split="train", **kw), GeoPlexMini(split="test", **kw)
    model = _model("tiny")
    itr, ite = list(range(32)), list(range(16))
    Xtr, Ltr, Mtr = embed_dataset(model, train, patch_size_m=20, indices=itr, batch_size=16)
    Xte, _, _ = embed_dataset(model, test, patch_size_m=20, indices=ite, batch_size=16)
    assert Xtr.ndim == 2 and Xtr.shape[0] == 32 and Xte.shape == (16, Xtr.shape[1]) and Xtr.dtype == np.float32
    assert Ltr.shape == (32, len(train.classes)) and len(Mtr) == 32
    ytr, yte = train.dominant_class()[itr], test.dominant_class()[ite]
    assert [m.extra["dominant_class"] for m in Mtr] == ytr.tolist()
    k = len(train.classes)
    chance = np.bincount(yte, minlength=k).max() / len(yte) * 100  # majority-class rate on the test tiles
    model_oa = TileProbe(num_classes=k, C=0.1).fit(Xtr, ytr).score(Xte, yte)["OA"]
    raw_oa = TileProbe(num_classes=k, C=0.1).fit(_raw_stats(train, itr), ytr).score(_raw_stats(test, ite), yte)["OA"]
    print(
        f"\ntile probe OA: AnySat-tiny random init {model_oa:.1f} %, raw stats {raw_oa:.1f} %, "
        f"majority chance {chance:.1f} %"
    )
    # measured: 75.0 % vs 31.2 % chance (raw stats 81.2 %): a 25-point margin leaves room for BLAS differences
    assert model_oa > chance + 25
    assert raw_oa > chance + 25


def test_pixel_probe_geoplex_segmentation() -> None:
    from anysat_core.data.geoplex_mini import GeoPlexMini
    from anysat_core.embeddings import embed_dataset

    kw = {"seed": 0, "modalities": ("s2",), "task": "segmentation"}
    train, test = GeoPlexMini(split="train", **kw), GeoPlexMini(split="test", **kw)
    model = _model("test")
    Ftr, Ltr, Mtr = embed_dataset(model, train, patch_size_m=20, output="dense", indices=range(16), batch_size=16)
    Fte, Lte, Mte = embed_dataset(model, test, patch_size_m=20, output="dense", indices=range(8), batch_size=8)
    assert isinstance(Ftr, list) and Ftr[0].dims == ("feature", "y", "x") and Ltr.shape[0] == 16
    labels_tr = [labels_to_dataarray(lab, m) for lab, m in zip(Ltr, Mtr)]  # 10 m label grid, map coordinates
    labels_te = [labels_to_dataarray(lab, m) for lab, m in zip(Lte, Mte)]
    probe = PixelProbe(num_classes=8, max_pixels=400, seed=0).fit(Ftr, labels_tr)
    assert probe.n_fitted_ == 400  # 16 tiles x 36 cells subsampled deterministically
    res = probe.evaluate(Fte, labels_te)
    truth = np.concatenate([np.asarray(lab).ravel() for lab in Lte])
    chance = np.bincount(truth, minlength=8).max() / truth.size * 100
    print(f"\npixel probe OA {res['OA']:.1f} %, mIoU {res['mIoU']:.3f}, majority chance {chance:.1f} %")
    assert res["confusion_matrix"].sum() == res["n_pixels"] == truth.size
    assert res["per_class_IoU"].shape == (8,)
    # measured: OA 86.8 % (mIoU 0.39) vs 51.0 % majority chance
    assert res["OA"] > chance + 25
    ds = probe.predict_map(Fte[0])
    assert set(ds.data_vars) == {"prediction", "confidence"} and ds["prediction"].dims == ("y", "x")
    assert np.array_equal(ds.x.values, Fte[0].x.values) and ds.rio.crs == Fte[0].rio.crs
    assert ((ds["confidence"] > 0) & (ds["confidence"] <= 1)).all()
    # the same labels on the coarser patch grid (20 m cells, 10 m labels): majority by coordinates
    Ptr, _, _ = embed_dataset(model, train, patch_size_m=20, output="patch", indices=range(4), batch_size=4)
    lab = labels_tr[0]
    onto = PixelProbe(8)._pixels([Ptr[0]], [lab])[1]
    blocks = np.asarray(lab).reshape(3, 2, 3, 2).transpose(0, 2, 1, 3).reshape(9, 4)
    counts = np.stack([np.bincount(b, minlength=8) for b in blocks])
    assert np.array_equal(onto, counts.argmax(1))


# ------------------------------------------------------------------------------------------------ maps and points
def test_fit_from_points_recovers_two_regions() -> None:
    da, truth = _two_region_map()
    xs, ys = da.x.values, da.y.values
    points = [
        (xs[1], ys[2], 0),
        (xs[2], ys[8], 0),
        (xs[3], ys[5], 0),
        (xs[9], ys[1], 1),
        (xs[10], ys[6], 1),
        (xs[8] + 3.0, ys[10] - 4.0, 1),
    ]  # off-centre: the cell containing the point
    probe = fit_from_points(da, points)
    ds = probe.predict_map(da)
    acc = (ds["prediction"].values == truth).mean()
    assert acc > 0.95
    assert ds.rio.crs == da.rio.crs
    # polygons (GeoJSON dict and shapely-like object) label every cell whose centre is inside
    x0, x1, y0, y1 = xs[0] - 5, xs[2] + 1, ys[0] + 5, ys[3] - 1  # 3 x 4 cells in the left region

    class Geo:  # any object with __geo_interface__ (as shapely geometries have)
        __geo_interface__: ClassVar[dict] = {
            "type": "Polygon",
            "coordinates": [
                [(xs[9] - 5, ys[0] + 5), (xs[11] + 5, ys[0] + 5), (xs[11] + 5, ys[11] - 5), (xs[9] - 5, ys[11] - 5)]
            ],
        }  # 3 x 12 cells of the right region

    left = {
        "type": "Feature",
        "properties": {"class": 0},
        "geometry": {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]},
    }
    probe2 = fit_from_points(da, [left, (Geo(), 1)], C=0.5)
    assert probe2.n_fitted_ == 12 + 36
    assert (probe2.predict_map(da)["prediction"].values == truth).mean() > 0.95


def test_pixel_probe_label_resampling() -> None:
    da, truth = _two_region_map(h=6, w=6)
    fine = np.repeat(np.repeat(truth, 2, 0), 2, 1)  # (12, 12) labels at 5 m over the same extent
    fine[0, 0] = 1  # one dissenting pixel of four: majority keeps 0
    fine_da = xr.DataArray(
        fine,
        dims=("y", "x"),
        coords={"y": da.y.values[0] + 2.5 - 5 * np.arange(12), "x": da.x.values[0] - 2.5 + 5 * np.arange(12)},
    )
    probe = PixelProbe(2)
    on_grid = probe._pixels(da, fine_da)[1]
    assert np.array_equal(on_grid, truth.ravel())
    assert np.array_equal(probe._pixels(da, fine)[1], truth.ravel())  # plain array: same extent, 2 x 2 majority
    coarse = truth[::2, ::2]  # (3, 3): nearest
    assert np.array_equal(probe._pixels(da, coarse)[1], np.repeat(np.repeat(coarse, 2, 0), 2, 1).ravel())
    res = PixelProbe(2, ignore_index=255).fit(da, fine_da).evaluate(da, truth)
    assert res["OA"] > 95 and res["n_pixels"] == 36
    # labels covering half the map: the other cells are not counted
    half = fine_da.isel(x=slice(0, 6))
    assert (probe._pixels(da, half)[1] >= 0).sum() == 18


# ------------------------------------------------------------------------------------------------ errors
def test_one_class_only() -> None:
    X, _ = _blobs()
    with pytest.raises(ProbeError, match="at least two classes") as e:
        TileProbe().fit(X, np.zeros(len(X), dtype=int))
    assert isinstance(e.value, AnySatError) and isinstance(e.value, ValueError)
    da, _ = _two_region_map()
    with pytest.raises(ProbeError, match="class 1"):
        fit_from_points(da, [(da.x.values[0], da.y.values[0], 1), (da.x.values[3], da.y.values[3], 1)], num_classes=2)
    with pytest.raises(ProbeError):
        PixelProbe(2).fit(da, np.zeros((12, 12), dtype=int))


def test_points_outside_the_raster() -> None:
    da, _ = _two_region_map()
    xs, ys = da.x.values, da.y.values
    with pytest.raises(ExtentMismatchError, match=r"1 label\(s\).*#2 Point") as e:
        fit_from_points(da, [(xs[0], ys[0], 0), (xs[-1], ys[-1], 1), (xs[0] - 1_000, ys[0], 1)])
    assert "EPSG:32631" in str(e.value) and "500000" in str(e.value)
    far = {"type": "Polygon", "coordinates": [[(0, 0), (1, 0), (1, 1), (0, 0)]]}
    with pytest.raises(ExtentMismatchError, match="#1 Polygon"):
        fit_from_points([da], [(xs[0], ys[0], 0), (far, 1)])


def test_nan_features() -> None:
    X, y = _blobs()
    X[[3, 17], 2] = np.nan
    with pytest.raises(NonFiniteInputError, match=r"2 of 120 row\(s\) \(rows \[3, 17\]\)"):
        TileProbe().fit(X, y)
    da, truth = _two_region_map()
    da = da.copy()
    da[:, 4, 5] = np.nan
    with pytest.raises(NonFiniteInputError, match=r"1 of 144 cells.*x=500055, y=3999955"):
        PixelProbe(2).fit(da, truth)
    probe = PixelProbe(2, nan="drop").fit(da, truth)
    assert probe.n_fitted_ == 143
    ds = probe.predict_map(da)
    assert ds["prediction"].values[4, 5] == -1 and np.isnan(ds["confidence"].values[4, 5])
    assert probe.evaluate(da, truth)["n_pixels"] == 143
    with pytest.raises(NonFiniteInputError, match="nan='drop'"):
        fit_from_points(da, [(da.x.values[5], da.y.values[4], 0), (da.x.values[11], da.y.values[0], 1)])
    # the NaN rule of analysis.grid: NaN masks a cell, an infinite value is a bug upstream and always raises
    da[:, 4, 5] = np.inf
    inf_cell = r"infinite value\(s\) in 1 cell\(s\), e\.g\. at \(x=500055, y=3999955"
    with pytest.raises(NonFiniteInputError, match=inf_cell):
        PixelProbe(2, nan="drop").fit(da, truth)


def test_mismatched_shapes() -> None:
    X, y = _blobs()
    with pytest.raises(InputShapeError, match="119 labels but X has 120 rows"):
        TileProbe().fit(X, y[:-1])
    with pytest.raises(InputShapeError, match="multilabel"):
        TileProbe().fit(X, np.eye(3)[y])
    with pytest.raises(InputShapeError, match=r"\(N samples, D features\)"):
        TileProbe().fit(X[:, :, None], y)
    probe = TileProbe().fit(X, y)
    with pytest.raises(InputShapeError, match="fitted on 6"):
        probe.predict(X[:, :4])
    da, truth = _two_region_map()
    with pytest.raises(InputShapeError, match=r"\(5, 7\).*\(12, 12\)"):
        PixelProbe(2).fit(da, np.zeros((5, 7), dtype=int))
    with pytest.raises(InputShapeError, match="one label map per feature map"):
        PixelProbe(2).fit([da, da], [truth])
    with pytest.raises(InputShapeError, match="dims"):
        PixelProbe(2).fit(da.isel(feature=0), truth)
    with pytest.raises(InputShapeError, match=r"outside 0\.\.1"):
        PixelProbe(2).fit(da, truth + 1)
    with pytest.raises(ProbeError, match="not fitted"):
        PixelProbe(2).predict_map(da)
