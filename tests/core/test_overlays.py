"""Web map overlays (``web_overlay``, ``colorize``) and input composites (``composite``)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from PIL import Image
from pyproj import Transformer

import anysat_core as ac


def _grid(values: np.ndarray, crs: str = "EPSG:32631", x0: float = 500_000.0, y0: float = 4_800_000.0, step=10.0):
    """(..., y, x) values on a north-up grid with cell-centre coordinates."""
    ny, nx = values.shape[-2:]
    coords = {"y": y0 - (np.arange(ny) + 0.5) * step, "x": x0 + (np.arange(nx) + 0.5) * step}
    dims = ("band", "y", "x") if values.ndim == 3 else ("y", "x")
    da = xr.DataArray(values, dims=dims, coords=coords)
    return da.rio.write_crs(crs) if crs else da


def _png(ov: ac.WebOverlay) -> np.ndarray:
    assert ov.url.startswith("data:image/png;base64,")
    return np.array(Image.open(io.BytesIO(base64.b64decode(ov.url.split(",", 1)[1]))).convert("RGBA"))


def test_web_overlay_covers_the_map_in_lat_lon_with_sharp_cells_and_transparent_nan():
    rgb = np.random.default_rng(0).uniform(0, 1, (3, 6, 8))
    rgb[:, 0, 0] = np.nan  # north-west cell
    ov = ac.web_overlay(_grid(rgb))
    (south, west), (north, east) = ov.bounds
    to_ll = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_ll.transform(500_000.0, 4_800_000.0)  # north-west corner
    lon1, lat1 = to_ll.transform(500_080.0, 4_799_940.0)  # south-east corner
    tol = 1e-5  # degrees (~1 m): the Web Mercator grid snaps to whole pixels
    assert abs(west - lon0) < tol and abs(north - lat0) < tol and abs(east - lon1) < tol and abs(south - lat1) < tol
    assert ov.center == pytest.approx(((south + north) / 2, (west + east) / 2))
    assert 15 <= ov.zoom <= 22
    png = _png(ov)
    assert png.shape[:2] == (ov.height_px, ov.width_px) and max(png.shape[:2]) >= 256
    assert png[2, 2, 3] == 0  # the NaN cell (north-west) is transparent
    assert png[-3, -3, 3] == 255
    # nearest upsampling keeps each 10 m cell one colour: few distinct colours, about one per cell
    assert len(np.unique(png[..., :3].reshape(-1, 3), axis=0)) <= 6 * 8 + 4


def test_colorize_continuous_and_categorical_keep_nan_and_crs():
    sim = _grid(np.array([[0.0, 0.5], [1.0, np.nan]]))
    rgb = ac.colorize(sim, "viridis")
    assert dict(rgb.sizes) == {"band": 3, "y": 2, "x": 2} and rgb.rio.crs == sim.rio.crs
    assert np.isnan(rgb.values[:, 1, 1]).all() and np.isfinite(rgb.values[:, 0, 0]).all()
    assert not np.allclose(rgb.values[:, 0, 0], rgb.values[:, 1, 0])  # min and max get different colours
    classes = ac.colorize(_grid(np.array([[0, 1], [2, 1]])), ["#ff0000", "#00ff00", "#0000ff"])
    assert classes.values[:, 0, 0].tolist() == [1, 0, 0] and classes.values[:, 1, 0].tolist() == [0, 0, 1]
    assert classes.values[:, 0, 1].tolist() == classes.values[:, 1, 1].tolist() == [0, 1, 0]


def test_overlay_errors_say_what_came_in_and_the_fix():
    with pytest.raises(ac.InputShapeError, match=r"colorize\(map\)"):
        ac.web_overlay(_grid(np.zeros((2, 3))))
    with pytest.raises(ac.MissingCRSError, match="write_crs"):
        ac.web_overlay(_grid(np.zeros((3, 2, 2)), crs=None))
    with pytest.raises(ac.InputShapeError, match="PCARGB"):
        ac.colorize(_grid(np.zeros((3, 2, 2))))


def test_composite_of_a_sample_is_georeferenced_stretched_and_masked():
    world = ac.get_dataset("geoplex-mini", split="test", modalities=["s2", "s1-asc"], seed=0)
    sample = dict(world[0])
    mask = sample["s2_mask"].clone()
    mask[0, 0, 0, 0] = False
    sample["s2_mask"] = mask
    rgb = ac.composite(sample, "s2", 0)
    assert dict(rgb.sizes) == {"band": 3, "y": 6, "x": 6} and str(rgb.rio.crs) == "EPSG:32631"
    assert np.isnan(rgb.values[:, 0, 0]).all()
    assert np.nanmin(rgb.values) == 0.0 and np.nanmax(rgb.values) == 1.0
    assert ac.web_overlay(rgb).width_px >= 256
    raw = ac.composite(sample, "s2", 0, percentiles=None)  # unstretched: the normalised B04, B03, B02 values
    valid = sample["s2_mask"][0, 0].numpy().astype(bool)
    assert valid.sum() >= 5 and np.isnan(raw.values[:, ~valid]).all()
    assert np.allclose(raw.values[:, valid], sample["s2"][0, [2, 1, 0]].numpy()[:, valid], atol=1e-6)
    with pytest.raises(ac.ConfigError, match="date_index 99"):
        ac.composite(sample, "s2", 99)
    with pytest.raises(ac.ConfigError, match="'aerial'"):
        ac.composite(sample, "aerial")


def test_web_overlay_averages_very_fine_grids_down_to_max_side_px():
    rgb = _grid(np.random.default_rng(1).uniform(0, 1, (3, 1500, 900)), step=0.2)
    ov = ac.web_overlay(rgb, max_side_px=500)
    assert max(ov.width_px, ov.height_px) <= 520  # 500 px plus the reprojection's rounding
    full = ac.web_overlay(rgb, max_side_px=None)
    assert max(full.width_px, full.height_px) >= 1400
    assert np.allclose(ov.bounds, full.bounds, atol=2e-6)  # the same place (trimmed by under one block)
