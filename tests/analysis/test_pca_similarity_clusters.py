"""PCA colours, similarity maps, k-means and map agreement on synthetic feature maps of known structure.

The synthetic maps have two regions (left columns: vector A, right columns: vector B, plus small noise) on a
10 m grid in EPSG:32631, built like extract_features builds them (cell-centre x/y, CRS and transform written with
rioxarray).  One test runs the real chain AnySat (test size) -> extract_features on a GeoPlexMini tile.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from affine import Affine
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from anysat_core.analysis import (
    PCARGB,
    cosine_similarity_map,
    difference_map,
    kmeans_map,
    predict_map,
    refine,
    similarity_to_query,
    threshold,
    top_k,
    vector_at,
)
from anysat_core.errors import (
    EmptyTileError,
    ExtentMismatchError,
    InputShapeError,
    MissingCRSError,
    NonFiniteInputError,
    OutputExistsError,
)
from anysat_core.writers import write_png

D = 16
CRS = "EPSG:32631"
_rng = np.random.default_rng(1234)
VA, VB = _rng.normal(size=D), _rng.normal(size=D)
VB -= VB @ VA / (VA @ VA) * VA  # B orthogonal to A: cos(A, B) = 0


def make_map(
    h: int = 6,
    w: int = 8,
    *,
    x0: float = 389_000.0,
    y0: float = 5_351_400.0,
    res: float = 10.0,
    split: int | None = None,
    noise: float = 0.02,
    seed: int = 0,
    crs: str | None = CRS,
) -> tuple[xr.DataArray, np.ndarray]:
    """A (feature, y, x) map: columns < split hold A, the others B (+ noise); returns it and the region map."""
    split = w // 2 if split is None else split
    rng = np.random.default_rng(seed)
    region = np.zeros((h, w), dtype=int)
    region[:, split:] = 1
    vecs = np.where(region[..., None] == 0, VA, VB) + noise * rng.normal(size=(h, w, D))
    da = xr.DataArray(
        np.moveaxis(vecs, -1, 0).astype(np.float32),
        dims=("feature", "y", "x"),
        coords={"feature": np.arange(D), "y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)},
        name="anysat_features",
        attrs={"model": "synthetic", "patch_size_m": f"{res:g}", "output": "patch"},
    )
    da = da.rio.write_transform(Affine(res, 0.0, x0, 0.0, -res, y0))
    if crs is not None:
        da = da.rio.write_crs(crs)
    return da, region


def xy(da: xr.DataArray, i: int, j: int) -> tuple[float, float]:
    return float(da["x"][j]), float(da["y"][i])


# ----------------------------------------------------------------------------------------------- PCA
def test_pca_same_vector_same_colour_across_tiles_and_stretch() -> None:
    t1, _ = make_map(seed=1)
    t2, _ = make_map(5, 7, x0=392_000.0, split=2, seed=2)
    probe = np.linspace(-1, 1, D).astype(np.float32)
    t1[:, 2, 3] = probe
    t2[:, 4, 0] = probe
    pca = PCARGB(seed=0).fit([t1, t2])
    r1, r2 = pca.transform(t1), pca.transform(t2)
    np.testing.assert_array_equal(r1.values[:, 2, 3], r2.values[:, 4, 0])  # identical, not just close
    for r, t in ((r1, t1), (r2, t2)):
        assert r.dims == ("band", "y", "x") and list(r["band"].values) == ["r", "g", "b"]
        assert r.dtype == np.float32 and float(r.min()) >= 0.0 and float(r.max()) <= 1.0
        np.testing.assert_array_equal(r["x"].values, t["x"].values)
        np.testing.assert_array_equal(r["y"].values, t["y"].values)
        assert r.rio.crs == t.rio.crs and r.rio.transform() == t.rio.transform()
        assert r.attrs["model"] == "synthetic" and r.attrs["analysis"] == "pca_rgb"
        assert len(r.attrs["pca_explained_variance_ratio"].split(",")) == 3
    # the first component separates the two regions: region means differ strongly in the red channel
    assert abs(float(r1.values[0, :, :4].mean() - r1.values[0, :, 4:].mean())) > 0.5
    # robust stretch: about 2 % of the fit cells fall at or below 0, 2 % at or above 1 per channel
    assert float((r1.values == 0).mean()) < 0.1


def test_pca_nan_cells_stay_nan_and_fit_is_deterministic() -> None:
    da, _ = make_map()
    da[:, 0, 0] = np.nan
    da[3, 1, 1] = np.nan  # one NaN feature masks the cell
    rgb = PCARGB().fit_transform(da)
    assert np.isnan(rgb.values[:, 0, 0]).all() and np.isnan(rgb.values[:, 1, 1]).all()
    assert int(np.isnan(rgb.values).any(axis=0).sum()) == 2
    a = PCARGB(max_samples=20, seed=3).fit([da, make_map(seed=9)[0]])
    b = PCARGB(max_samples=20, seed=3).fit([da, make_map(seed=9)[0]])
    assert a.n_samples_ == 20
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.low_, b.low_)


def test_pca_errors() -> None:
    da, _ = make_map()
    pca = PCARGB()
    with pytest.raises(InputShapeError, match="not fitted"):
        pca.transform(da)
    tile_emb = xr.DataArray(np.zeros((2, D)), dims=("sample", "feature"))
    with pytest.raises(InputShapeError, match="output='patch'"):
        pca.fit(tile_emb)
    pca.fit(da)
    with pytest.raises(InputShapeError, match=f"fitted on {D}"):
        pca.transform(da.isel(feature=slice(0, 8)))
    with pytest.raises(InputShapeError, match="different feature sizes"):
        PCARGB().fit([da, da.isel(feature=slice(0, 8))])
    bad = da.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(NonFiniteInputError, match="infinite"):
        PCARGB().fit(bad)
    with pytest.raises(EmptyTileError, match="masked"):
        PCARGB().fit(da * np.nan)
    with pytest.raises(InputShapeError):
        PCARGB(percentiles=(98, 2))


def test_write_png_roundtrip_and_overwrite(tmp_path: Path) -> None:
    da, _ = make_map(4, 5)
    da[:, 1, 2] = np.nan
    rgb = PCARGB().fit_transform(da)
    out = write_png(rgb, tmp_path / "sub" / "pca.png")
    with Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (5, 4)  # (width, height)
        px = np.asarray(im)
    assert px[1, 2, 3] == 0 and (np.delete(px[..., 3].ravel(), 1 * 5 + 2) == 255).all()
    expected = np.rint(rgb.values[:, 0, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(px[0, 0, :3], expected)  # y decreases down the rows already: north up
    # a map stored south-up is flipped so that the PNG is still north up
    flipped = rgb.isel(y=slice(None, None, -1))
    write_png(flipped, tmp_path / "flip.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "flip.png")), px)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_png(rgb, out)
    write_png(rgb * 0, out, overwrite=True)
    assert np.asarray(Image.open(out))[0, 0, :3].tolist() == [0, 0, 0]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pca.png"]  # no temporary file left
    with pytest.raises(InputShapeError):
        write_png(da, tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------- similarity
def test_similarity_to_a_location_is_maximal_at_the_query() -> None:
    da, region = make_map()
    qx, qy = xy(da, 2, 1)
    sim = cosine_similarity_map(da, (qx, qy))
    assert sim.dims == ("y", "x") and sim.name == "cosine_similarity"
    assert sim.rio.crs == da.rio.crs
    np.testing.assert_array_equal(sim["x"].values, da["x"].values)
    assert float(sim[2, 1]) == pytest.approx(1.0, abs=1e-6)
    assert float(sim.max()) == float(sim[2, 1]) and float(sim.min()) >= -1.0
    best = top_k(sim, 3)
    assert list(best.columns[:3]) == ["x", "y", "similarity"] and len(best) == 3
    assert (best.loc[0, "x"], best.loc[0, "y"]) == (qx, qy)
    assert best["similarity"].is_monotonic_decreasing
    assert (sim.values[region == 0] > 0.9).all() and (np.abs(sim.values[region == 1]) < 0.2).all()
    # a point inside the cell (not its centre) picks the same cell; a vector query gives the same map
    np.testing.assert_array_equal(cosine_similarity_map(da, (qx + 4.0, qy - 4.9)).values, sim.values)
    np.testing.assert_allclose(cosine_similarity_map(da, vector_at(da, qx, qy)).values, sim.values, atol=1e-6)
    # several examples: prototype (mean) and best-example (max)
    two = cosine_similarity_map(da, [xy(da, 0, 0), xy(da, 0, 7)], reduce="max")
    assert float(two[0, 0]) == pytest.approx(1.0, abs=1e-6) and float(two[0, 7]) == pytest.approx(1.0, abs=1e-6)
    ex = da.isel(x=[0, 1], y=[0])  # a DataArray of example vectors (feature, y, x)
    assert (cosine_similarity_map(da, ex).values[region == 0] > 0.9).all()


def test_similarity_errors_and_masked_cells() -> None:
    da, _ = make_map()
    da[:, 5, 7] = np.nan
    xmin, xmax = float(da.x.min()) - 5, float(da.x.max()) + 5
    with pytest.raises(ExtentMismatchError, match="outside the feature map"):
        cosine_similarity_map(da, (xmax + 1.0, float(da.y[0])))
    with pytest.raises(ExtentMismatchError, match="outside"):
        cosine_similarity_map(da, (xmin, 0.0))
    with pytest.raises(NonFiniteInputError, match="masked"):
        cosine_similarity_map(da, xy(da, 5, 7))
    with pytest.raises(InputShapeError, match="has 16"):
        cosine_similarity_map(da, np.ones(D + 1))
    with pytest.raises(InputShapeError):
        cosine_similarity_map(da.isel(x=0), (0.0, 0.0))
    with pytest.raises(NonFiniteInputError, match="zero length"):
        cosine_similarity_map(da, np.zeros(D))
    sim = cosine_similarity_map(da, xy(da, 0, 0))
    assert np.isnan(float(sim[5, 7]))
    assert len(top_k(sim, 1000)) == 6 * 8 - 1  # NaN cells are skipped
    with pytest.raises(InputShapeError, match="positive integer"):
        top_k(sim, 0)
    with pytest.raises(InputShapeError, match="expected a number"):
        threshold(sim, "0.8")


def test_threshold_and_refine() -> None:
    da, region = make_map(seed=5)
    da[:, 0, 0] = np.nan
    sim = cosine_similarity_map(da, xy(da, 3, 0))
    mask = threshold(sim, 0.8)
    assert mask.dtype == bool and mask.dims == ("y", "x") and mask.rio.crs == da.rio.crs
    expected = region == 0
    expected[0, 0] = False  # NaN cell -> False
    np.testing.assert_array_equal(mask.values, expected)
    # a mixed cell: between A and B, the positives/negatives push it to the right side
    pos, neg = [xy(da, 1, 1), xy(da, 4, 2)], [xy(da, 2, 6)]
    for method in ("difference", "logistic"):
        score = refine(da, pos, neg, method=method)
        a, b = np.nanmean(score.values[region == 0]), np.nanmean(score.values[region == 1])
        assert a > b, method
        assert np.nanmin(score.values[region == 0]) > np.nanmax(score.values[region == 1]), method
        assert np.isnan(float(score[0, 0])) and score.attrs["method"] == method
    diff = refine(da, pos, neg)
    assert float(diff.max()) <= 2.0 and float(diff.min()) >= -2.0
    only_pos = refine(da, pos)
    assert float(only_pos.max()) <= 1.0
    with pytest.raises(InputShapeError, match="negatives"):
        refine(da, pos, method="logistic")
    with pytest.raises(InputShapeError, match=r"\(x, y\) tuples"):
        refine(da, [1.0, 2.0, 3.0])


def test_similarity_to_query_across_tiles() -> None:
    t1, _ = make_map(seed=1)
    t2, r2 = make_map(5, 7, x0=395_000.0, split=3, seed=2)
    q = vector_at(t1, *xy(t1, 0, 0))
    t2[:, 4, 6] = q
    sims = similarity_to_query([t1, t2], q)
    assert len(sims) == 2
    assert float(sims[0][0, 0]) == pytest.approx(1.0, abs=1e-6) and float(sims[1][4, 6]) == pytest.approx(1.0, abs=1e-6)
    assert sims[1].rio.crs == t2.rio.crs
    np.testing.assert_array_equal(sims[1]["x"].values, t2["x"].values)
    assert (sims[1].values[r2 == 0] > 0.9).all()
    with pytest.raises(InputShapeError, match="vector_at"):
        similarity_to_query([t1, t2], xy(t1, 0, 0))


# ----------------------------------------------------------------------------------------------- k-means
def test_kmeans_recovers_regions_with_ids_shared_across_tiles() -> None:
    t1, r1 = make_map(seed=1)
    t2, r2 = make_map(5, 7, x0=392_000.0, split=2, seed=2)
    t1[:, 0, 0] = np.nan
    (l1, l2), model = kmeans_map([t1, t2], 2, seed=0)
    assert l1.dims == ("y", "x") and l1.dtype == np.int32 and l1.rio.crs == t1.rio.crs and l1.name == "prediction"
    assert int(l1[0, 0]) == -1
    valid = l1.values >= 0
    assert adjusted_rand_score(r1[valid], l1.values[valid]) == 1.0
    assert adjusted_rand_score(r2.ravel(), l2.values.ravel()) == 1.0
    # the same id means the same region in both tiles
    assert int(l1[1, 0]) == int(l2[0, 0]) and int(l1[1, 7]) == int(l2[0, 6])
    assert int(l1[1, 0]) != int(l1[1, 7])
    t3, _ = make_map(3, 3, x0=400_000.0, split=1, seed=3)
    l3 = predict_map(model, t3)
    assert int(l3[0, 0]) == int(l1[1, 0]) and int(l3[0, 2]) == int(l1[1, 7])
    single, _ = kmeans_map(t1, 2, seed=0)
    assert isinstance(single, xr.DataArray)
    again, _ = kmeans_map(t1, 2, seed=0)
    np.testing.assert_array_equal(single.values, again.values)
    with pytest.raises(InputShapeError, match="distinct"):
        kmeans_map(t1.isel(x=[1], y=[1]), 2)
    with pytest.raises(InputShapeError, match="positive integer"):
        kmeans_map(t1, 0)
    with pytest.raises(InputShapeError, match="fitted on"):
        predict_map(model, t1.isel(feature=slice(0, 4)))


# ----------------------------------------------------------------------------------------------- difference map
def test_difference_map_identical_and_coarser_aligned_by_coordinates() -> None:
    fine, _ = make_map(8, 8, noise=0.3, seed=4)
    same = difference_map(fine, fine.copy())
    np.testing.assert_allclose(same.values, 1.0, atol=1e-6)
    assert same.attrs["resampled"] == "none" and same.rio.crs == fine.rio.crs

    coarse, _ = make_map(4, 4, res=20.0, noise=0.5, seed=7)  # same extent, 2x coarser, other vectors
    agree = difference_map(fine, coarse)
    assert agree.sizes == {"y": 8, "x": 8} and agree.attrs["resampled"] == "b"
    np.testing.assert_array_equal(agree["x"].values, fine["x"].values)

    def cos(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    # fine cell (5, 2) (centre x0+25, y0-55) lies in coarse cell (2, 1) (x0+20..40, y0-40..60)
    want = cos(fine.values[:, 5, 2].astype(np.float64), coarse.values[:, 2, 1].astype(np.float64))
    assert float(agree[5, 2]) == pytest.approx(want, abs=1e-6)
    # order of arguments and of the coarse map's rows do not matter: alignment is by coordinates
    south_up = coarse.isel(y=slice(None, None, -1))
    np.testing.assert_allclose(difference_map(south_up, fine).values, agree.values, atol=1e-6)
    assert difference_map(coarse, fine).attrs["resampled"] == "a"

    # partial overlap: the coarse map shifted 40 m east covers only fine columns 4..7
    shifted = coarse.assign_coords(x=coarse["x"] + 40.0)
    part = difference_map(fine, shifted)
    assert np.isnan(part.values[:, :4]).all() and np.isfinite(part.values[:, 4:]).all()


def test_difference_map_errors() -> None:
    fine, _ = make_map()
    far, _ = make_map(x0=500_000.0)
    with pytest.raises(ExtentMismatchError, match="do not overlap"):
        difference_map(fine, far)
    with pytest.raises(ExtentMismatchError, match="different CRSs"):
        difference_map(fine, make_map()[0].rio.write_crs("EPSG:32632"))
    with pytest.raises(MissingCRSError, match="write_crs"):
        difference_map(fine, make_map(crs=None)[0])
    with pytest.raises(InputShapeError, match="features"):
        difference_map(fine, fine.isel(feature=slice(0, 4)))


def test_analysis_modules_do_not_import_torch() -> None:
    root = Path(__file__).resolve().parents[2] / "anysat_core" / "analysis"
    for path in sorted(root.rglob("*.py")):
        name = str(path.relative_to(root))
        tree = ast.parse(path.read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in mods if m.split(".")[0] == "torch"}, name


# ----------------------------------------------------------------------------------------------- integration
def test_real_features_from_anysat_on_geoplex_mini(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from anysat_core import AnySat
    from anysat_core.data.geoplex_mini import GeoPlexMini
    from anysat_core.features import extract_features

    sample = GeoPlexMini(seed=0, modalities=("s2", "s1-asc"))[0]
    torch.manual_seed(0)
    model = AnySat(size="test")
    da20 = extract_features(model, sample, patch_size_m=20, output="patch")  # (64, 3, 3)
    da10 = extract_features(model, sample, patch_size_m=10, output="patch")  # (64, 6, 6)
    rgb = PCARGB().fit([da20, da10]).transform(da10)
    assert rgb.sizes == {"band": 3, "y": 6, "x": 6} and rgb.rio.crs == da10.rio.crs
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    write_png(rgb, tmp_path / "real.png")
    q = xy(da10, 2, 3)
    sim = cosine_similarity_map(da10, q)
    assert (top_k(sim, 1).loc[0, "x"], top_k(sim, 1).loc[0, "y"]) == q
    prediction, _ = kmeans_map([da20, da10], 3)
    assert set(np.unique(prediction[1].values)) <= {0, 1, 2}
    agree = difference_map(da20, da10)  # two patch sizes of the same tile: on the 10 m grid
    assert agree.sizes == {"y": 6, "x": 6} and agree.attrs["resampled"] == "a"
    v20, v10 = da20.values[:, 1, 2].astype(np.float64), da10.values[:, 3, 5].astype(np.float64)
    assert float(agree[3, 5]) == pytest.approx(v20 @ v10 / np.linalg.norm(v20) / np.linalg.norm(v10), abs=1e-5)
