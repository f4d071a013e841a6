"""extract_features / write_geotiff: feature grids land on the right map coordinates and survive a GeoTIFF trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import rasterio
import rioxarray.raster_array
import torch
from rasterio.crs import CRS

from anysat_core import AnySat, AnySatError, MissingCRSError, OutputError, OutputExistsError, __version__
from anysat_core.data.collate import collate
from anysat_core.data.geoplex_mini import GeoPlexMini
from anysat_core.features import extract_features, weights_sha256
from anysat_core.writers import FEATURES_NAME, write_geotiff


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


@pytest.fixture(scope="module")
def ds() -> GeoPlexMini:
    return GeoPlexMini(seed=0, modalities=("s2", "s1-asc"))


@pytest.fixture(scope="module")
def sample(ds):
    return ds[5]


def test_patch_coords_are_patch_centres_from_bounds(model, sample):
    meta = sample["meta"]
    left, bottom, right, top = meta.bounds
    da = extract_features(model, sample, patch_size_m=20, output="patch")
    assert da.dims == ("feature", "y", "x")
    assert da.shape == (model.embed_dim, 3, 3)  # 60 m tile / 20 m patches
    np.testing.assert_allclose(da.x.values, left + 20 * (np.arange(3) + 0.5))
    np.testing.assert_allclose(da.y.values, top - 20 * (np.arange(3) + 0.5))
    assert right - left == 60 and top - bottom == 60
    # the transform written with rioxarray agrees with the coordinates
    t = da.rio.transform()
    assert (t.a, t.b, t.c, t.d, t.e, t.f) == (20, 0, left, 0, -20, top)
    # values are the model's own output, laid out (h, w, D) -> (D, h, w)
    with torch.inference_mode():
        ref = model(collate([sample]), patch_size_m=20, output="patch")[0].numpy()
    np.testing.assert_allclose(da.values, np.moveaxis(ref, -1, 0), rtol=1e-5, atol=1e-6)


def test_dense_s2_grid_is_one_cell_per_s2_pixel(model, sample):
    left, _, _, top = sample["meta"].bounds
    da = extract_features(model, sample, patch_size_m=20, output="dense", output_modality="s2")
    H, W = sample["s2"].shape[-2:]
    assert da.shape == (2 * model.embed_dim, H, W)
    np.testing.assert_allclose(da.x.values, left + 5 + 10 * np.arange(W))
    np.testing.assert_allclose(da.y.values, top - 5 - 10 * np.arange(H))
    assert da.attrs["output_modality"] == "s2"


def test_feature_at_known_pixel_lands_at_its_map_coordinate(model, sample):
    i0, j0 = 2, 4  # row, col of the S2 pixel made anomalous
    changed = copy.copy(sample)
    s2 = sample["s2"].clone()
    s2[:, :, i0, j0] = 5.0  # +5 sigma in every band and date (samples are normalised)
    changed["s2"] = s2
    mask = sample["s2_mask"].clone()
    mask[..., i0, j0] = True
    changed["s2_mask"] = mask
    base = extract_features(model, sample, patch_size_m=10, output="dense", output_modality="s2")
    new = extract_features(model, changed, patch_size_m=10, output="dense", output_modality="s2")
    D = model.embed_dim
    diff = np.abs(new.values[D:] - base.values[D:]).sum(0)  # (h, w) change of the sub-patch half
    i, j = np.unravel_index(diff.argmax(), diff.shape)
    assert diff[i, j] > 10 * np.delete(diff.ravel(), diff.argmax()).max()
    a, _, c, _, e, f = sample["meta"].transform  # pixel centre from the tile's reference grid (10 m)
    assert float(new.x[j]) == pytest.approx(c + a * (j0 + 0.5))
    assert float(new.y[i]) == pytest.approx(f + e * (i0 + 0.5))


def test_attrs_crs_and_training_flag_restored(model, sample):
    model.train()
    try:
        da = extract_features(model, sample, patch_size_m=20, output="patch")
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert da.name == FEATURES_NAME
    assert da.rio.crs == CRS.from_user_input(sample["meta"].crs)
    assert "spatial_ref" in da.coords
    assert da.attrs == {
        "model": "AnySat-test",
        "checkpoint": weights_sha256(model),
        "patch_size_m": "20",
        "output": "patch",
        "output_modality": "none",
        "modalities": "s2,s1-asc",
        "precision": "fp32",
        "anysat_core_version": __version__,
    }
    assert len(da.attrs["checkpoint"]) == 64
    # the hash follows the weights
    other = AnySat(size="test")
    other.load_state_dict(model.state_dict())
    assert weights_sha256(other) == weights_sha256(model)
    with torch.no_grad():
        other.cls_token.add_(1.0)
    assert weights_sha256(other) != weights_sha256(model)


def test_tile_output_for_a_batch_of_two(model, ds):
    samples = [ds[0], ds[1]]
    batch = collate(samples)
    da = extract_features(model, batch, patch_size_m=20, output="tile")
    assert da.dims == ("sample", "feature")
    assert da.shape == (2, model.embed_dim)
    assert list(da.sample.values) == [s["meta"].tile_id for s in samples]
    assert da.rio.crs == CRS.from_user_input(samples[0]["meta"].crs)
    for k, s in enumerate(samples):
        left, bottom, right, top = s["meta"].bounds
        assert float(da.x[k]) == (left + right) / 2 and float(da.y[k]) == (bottom + top) / 2
    with torch.inference_mode():
        ref = model(batch, patch_size_m=20, output="tile").numpy()
    np.testing.assert_allclose(da.values, ref, rtol=1e-5, atol=1e-6)
    # spatial outputs of a batch: one DataArray per tile with its own coordinates
    das = extract_features(model, batch, patch_size_m=20, output="patch")
    assert isinstance(das, list) and len(das) == 2
    assert [float(d.x[0]) for d in das] == [s["meta"].bounds[0] + 10 for s in samples]


def test_without_georeferencing_pixel_coords_and_no_crs(model, sample, tmp_path):
    bare = {k: v for k, v in sample.items() if k != "meta"}
    da = extract_features(model, bare, patch_size_m=20, output="patch")
    np.testing.assert_array_equal(da.x.values, [0, 1, 2])
    np.testing.assert_array_equal(da.y.values, [0, 1, 2])
    assert "spatial_ref" not in da.coords and da.rio.crs is None
    with pytest.raises(MissingCRSError, match="no CRS"):
        write_geotiff(da, tmp_path / "x.tif")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="'all'"):
        extract_features(model, sample, patch_size_m=20, output="all")


def test_write_geotiff_round_trip_and_overwrite(model, sample, tmp_path, monkeypatch):
    da = extract_features(model, sample, patch_size_m=20, output="patch")
    path = tmp_path / "feats.tif"
    assert write_geotiff(da, path) == path
    left, _, _, top = sample["meta"].bounds
    with rasterio.open(path) as f:
        assert f.crs == CRS.from_user_input(sample["meta"].crs)
        assert f.transform.a == 20 and f.transform.e == -20
        assert (f.transform.c, f.transform.f) == (left, top)
        assert f.count == model.embed_dim and f.dtypes[0] == "float32"
        assert f.descriptions[:3] == ("0", "1", "2")
        assert f.tags()["checkpoint"] == da.attrs["checkpoint"]
        np.testing.assert_array_equal(f.read(), da.values)
        # pixel centre of the file's cell (1, 2) is the DataArray's coordinate
        assert f.xy(1, 2) == (float(da.x[2]), float(da.y[1]))

    with pytest.raises(OutputExistsError, match="overwrite=True") as err:
        write_geotiff(da * 0, path)
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, AnySatError)
    with rasterio.open(path) as f:
        np.testing.assert_array_equal(f.read(), da.values)  # untouched

    write_geotiff(da * 2, path, overwrite=True)
    with rasterio.open(path) as f:
        np.testing.assert_array_equal(f.read(), da.values * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["feats.tif"]

    # a failure while writing leaves neither the target nor a temporary file behind
    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rioxarray.raster_array.RasterArray, "to_raster", boom)
    with pytest.raises(OSError, match="disk full"):
        write_geotiff(da, tmp_path / "other.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["feats.tif"]
