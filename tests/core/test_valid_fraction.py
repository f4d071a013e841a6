"""Masks on features: every feature cell carries the share of valid input under it (``valid_fraction``), and cells
with nothing valid underneath are NaN, in ``extract_features`` and in ``infer_scene`` (memory, Zarr, COG).

Rasters are written by the tests: single-date S2 GeoTIFFs (10 m pixels, random values already on the normalised
scale) whose nodata value (-9999) marks blocks of missing pixels; the model is the test-size AnySat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr

from anysat_core import AnySat, InputShapeError
from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.features import extract_features, valid_fraction
from anysat_core.inference import infer_scene
from tests.helpers.scenes import s2_values, write_s2_tif

NODATA = -9999.0
KW = {"patch_size_m": 20, "window_m": 120, "progress": False}


def _write_s2(path: Path, height: int, width: int, holes: list[tuple[slice, slice]] = (), seed: int = 0) -> Path:
    """One S2 GeoTIFF (a date in its name) with ``nodata=-9999`` written into the ``(rows, cols)`` blocks ``holes``."""
    rng = np.random.default_rng(seed)
    data = s2_values(rng, height, width)
    for rows, cols in holes:
        data[:, rows, cols] = NODATA
    return write_s2_tif(path, data, nodata=NODATA)


def _scene(path: Path, tile_m: float = 120):
    return open_rasters(RasterSource([path], modality="s2"), tile_m=tile_m)


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


#: 24 x 36 pixels (240 m x 360 m); a nodata block over pixel rows 4-7 and columns 8-15 (patch cells rows 2-3,
#: columns 4-7: whole 20 m cells), and a partial block over pixel rows 12-14, column 0 (patch cell (6, 0) loses 2 of
#: its 4 pixels, cell (7, 0) 1 of 4)
HOLES = [(slice(4, 8), slice(8, 16)), (slice(12, 15), slice(0, 1))]


@pytest.fixture(scope="module")
def holed(tmp_path_factory) -> Path:
    return _write_s2(tmp_path_factory.mktemp("holed") / "s2_20200110.tif", 24, 36, HOLES)


def _expected_patch_fraction(height: int, width: int, holes, cell_px: int = 2) -> np.ndarray:
    valid = np.ones((height, width))
    for rows, cols in holes:
        valid[rows, cols] = 0
    return valid.reshape(height // cell_px, cell_px, width // cell_px, cell_px).mean(axis=(1, 3))


# ------------------------------------------------------------------------------------------------ the helper
def test_valid_fraction_pools_masks_by_area_over_modalities_and_dates() -> None:
    """Any date and band makes a pixel valid; cells take the share of their area under valid pixels (also when a
    modality is coarser than the cells); modalities count equally; MODIS and unmasked modalities do not mask."""
    s2 = torch.zeros(3, 10, 6, 6)
    m2 = torch.ones(3, 10, 6, 6, dtype=torch.bool)
    m2[:, :, :3, :3] = False  # top-left quarter missing at every date
    m2[0, :, 3:, 3:] = False  # bottom-right quarter missing at one date only: still valid
    sample = {"s2": s2, "s2_mask": m2, "modis": torch.zeros(5, 7, 1, 1), "modis_mask": torch.zeros(5, 7, 1, 1) > 0}
    np.testing.assert_array_equal(valid_fraction(sample, (2, 2)), [[0, 1], [1, 1]])
    np.testing.assert_array_equal(valid_fraction(sample, (3, 3)), [[0, 0.5, 1], [0.5, 0.75, 1], [1, 1, 1]])
    # an image modality of 2 x 2 coarse pixels under 4 x 4 cells: each coarse pixel covers 2 x 2 cells
    spot = torch.zeros(3, 2, 2)
    m1 = torch.tensor([[True, False], [True, True]])  # a mask broadcast over the bands
    both = {**sample, "spot": spot, "spot_mask": m1}
    got = valid_fraction(both, (4, 4))
    s2_part = np.kron([[0, 1], [1, 1]], np.ones((2, 2)))
    s1_part = np.kron([[1, 0], [1, 1]], np.ones((2, 2)))
    np.testing.assert_array_equal(got, (s2_part + s1_part) / 2)
    assert valid_fraction({"s2": s2}, (2, 2)).tolist() == [[1, 1], [1, 1]]  # no mask: all valid
    with pytest.raises(InputShapeError, match=r"s2_mask has shape \(4, 4\).*\(3, 10, 6, 6\)"):
        valid_fraction({"s2": s2, "s2_mask": torch.ones(4, 4, dtype=torch.bool)}, (2, 2))


# ------------------------------------------------------------------------------------------------ extract_features
def test_edge_tile_cells_outside_the_raster_are_nan(model, tmp_path) -> None:
    """A raster 130 m wide cut into 120 m tiles: tile (0, 1) holds one 10 m column of data, so its first 20 m patch
    column is half valid and the 5 others lie wholly outside the raster: NaN there, finite features inside."""
    scene = _scene(_write_s2(tmp_path / "s2_20200110.tif", 12, 13))
    sample = scene.tile(0, 1)
    da = extract_features(model, sample, patch_size_m=20, output="patch")
    vf = da["valid_fraction"]
    assert vf.dims == ("y", "x") and vf.dtype == np.float32
    np.testing.assert_array_equal(vf.values, np.tile([0.5, 0, 0, 0, 0, 0], (6, 1)))
    assert np.isfinite(da.values[:, :, 0]).all()
    assert np.isnan(da.values[:, :, 1:]).all()
    dense = extract_features(model, sample, patch_size_m=20, output="dense")  # 10 m cells: one data column
    np.testing.assert_array_equal(dense["valid_fraction"].values, np.tile([1.0] + [0.0] * 11, (12, 1)))
    assert np.isfinite(dense.values[:, :, 0]).all() and np.isnan(dense.values[:, :, 1:]).all()
    # a threshold masks the half-valid column too
    strict = extract_features(model, sample, patch_size_m=20, output="patch", min_valid_fraction=0.5)
    assert np.isnan(strict.values).all()
    for bad in (-0.1, 1.0, float("nan"), "0", True):
        with pytest.raises(InputShapeError, match="min_valid_fraction"):
            extract_features(model, sample, patch_size_m=20, output="patch", min_valid_fraction=bad)


def test_nodata_block_masks_whole_cells_and_fractions_match(model, holed) -> None:
    scene = _scene(holed)
    sample = scene.tile(0, 0)  # pixel rows 0-11, columns 0-11
    da = extract_features(model, sample, patch_size_m=20, output="patch")
    expected = _expected_patch_fraction(24, 36, HOLES)[:6, :6]
    np.testing.assert_allclose(da["valid_fraction"].values, expected, atol=1e-6)
    assert np.isnan(da.values[:, 2:4, 4:6]).all()  # whole cells under the block
    keep = expected > 0
    assert np.isfinite(da.values[:, keep]).all()
    # a batch: one valid fraction per item
    from anysat_core.data.collate import collate

    das = extract_features(model, collate([scene.tile(0, 0), scene.tile(1, 0)]), patch_size_m=20, output="patch")
    np.testing.assert_allclose(das[1]["valid_fraction"].values, _expected_patch_fraction(24, 36, HOLES)[6:, :6])
    np.testing.assert_array_equal(das[0]["valid_fraction"].values, da["valid_fraction"].values)


# ------------------------------------------------------------------------------------------------ infer_scene
@pytest.fixture(scope="module")
def holed_map(model, holed) -> xr.DataArray:
    return infer_scene(model, _scene(holed), output="patch", overlap_m=40, **KW)


def test_scene_map_carries_valid_fraction_and_nan_cells(holed_map) -> None:
    da = holed_map
    expected = _expected_patch_fraction(24, 36, HOLES)
    vf = da["valid_fraction"]
    assert vf.dims == ("y", "x") and da.attrs["min_valid_fraction"] == "0"
    np.testing.assert_allclose(vf.values, expected, atol=1e-6)  # blended across windows: the same fraction
    assert np.isnan(da.values[:, expected == 0]).all()
    assert np.isfinite(da.values[:, expected > 0]).all()
    assert 0 < float(vf[6, 0]) < 1


def test_scene_outputs_zarr_and_cog(model, holed, holed_map, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    ok = np.isfinite(holed_map.values).all(axis=0)
    X = holed_map.values[:, ok].T
    probe = LogisticRegression(max_iter=200).fit(X, np.arange(len(X)) % 2)
    kw = dict(output="patch", overlap_m=40, probe=probe, **KW)
    scene = _scene(holed)
    z = xr.open_zarr(infer_scene(model, scene, out=tmp_path / "f.zarr", **kw))
    np.testing.assert_array_equal(z["valid_fraction"].values, holed_map["valid_fraction"].values)
    assert "valid_fraction" in z["anysat_features"].coords  # a coordinate of the features, as in memory
    np.testing.assert_array_equal(z["anysat_features"].values, holed_map.values)
    assert (z["prediction"].values[~ok] == -1).all() and (z["prediction"].values[ok] >= 0).all()
    assert np.isnan(z["confidence"].values[~ok]).all()
    tif = infer_scene(model, scene, out=tmp_path / "f.tif", **kw)
    with rasterio.open(tif) as src:
        D = holed_map.sizes["feature"]
        assert src.count == D + 2  # features, prediction, confidence: no valid_fraction band
        assert "zarr" in src.tags()["valid_fraction"] and src.tags()["min_valid_fraction"] == "0"
        np.testing.assert_array_equal(src.read()[:D], holed_map.values)
    # a stricter threshold masks the partial cells too
    strict = infer_scene(model, scene, output="patch", overlap_m=40, min_valid_fraction=0.6, **KW)
    partial = (holed_map["valid_fraction"].values > 0) & (holed_map["valid_fraction"].values <= 0.6)
    assert partial.sum() == 1 and np.isnan(strict.values[:, partial]).all()
    with pytest.raises(InputShapeError, match="min_valid_fraction"):
        infer_scene(model, scene, output="patch", overlap_m=40, min_valid_fraction=2, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "f.zarr"]


def test_analysis_tools_skip_masked_cells(holed_map) -> None:
    """PCA, similarity and k-means on a map with NaN cells from masking: the masked cells stay out (NaN / -1), the
    others get values."""
    from anysat_core.analysis import PCARGB, cosine_similarity_map, kmeans_map

    masked = np.isnan(holed_map.values).any(axis=0)
    assert masked.sum() == 8
    rgb = PCARGB().fit_transform(holed_map)
    assert np.isnan(rgb.values[:, masked]).all() and np.isfinite(rgb.values[:, ~masked]).all()
    x, y = float(holed_map.x[0]), float(holed_map.y[0])
    sim = cosine_similarity_map(holed_map, (x, y))
    assert np.isnan(sim.values[masked]).all() and np.isfinite(sim.values[~masked]).all()
    clusters, _ = kmeans_map(holed_map, 3)
    assert (clusters.values[masked] == -1).all() and (clusters.values[~masked] >= 0).all()
