"""Own rasters as AnySat input (anysat_core.data.raster): real GeoTIFFs written with rasterio in tmp_path."""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from anysat_core.data.collate import collate
from anysat_core.data.raster import RasterScene, RasterSource, open_rasters, tile_cell_coords
from anysat_core.data.sample import GeoInfo
from anysat_core.dates import parse_date
from anysat_core.errors import (
    ChannelMismatchError,
    ConfigError,
    DatesError,
    EmptyTileError,
    ExtentMismatchError,
    InputShapeError,
    MissingCRSError,
    PatchSizeError,
    UnknownModalityError,
)
from anysat_core.modalities import MODALITIES

# S2-like scene: 37 x 23 pixels of 10 m in UTM 31N -> 370 m x 230 m (not square, not a multiple of 120 m)
X0, Y0 = 500_000.0, 4_800_000.0
W, H = 37, 23
UTM = "EPSG:32631"
# a bright 40 m square: the centre 40 m patch of tile (row 0, col 1) when tile_m=120
SQ = (X0 + 160, Y0 - 80, X0 + 200, Y0 - 40)  # left, bottom, right, top
C_S2 = MODALITIES["s2"].num_bands
C_S1 = MODALITIES["s1-asc"].num_bands


#: most tests look at file values: raw (the default normalisation is tested on its own)
open_raw = functools.partial(open_rasters, normalize=None)


def write_tif(
    path: Path,
    data: np.ndarray,
    transform: Affine | None,
    crs: str | None,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a (C, H, W) GeoTIFF."""
    C, h, w = data.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": C, "dtype": data.dtype, "nodata": nodata}
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
    return path


def s2_array(bright: bool = True, value: float = 1000.0) -> np.ndarray:
    """(C, H, W) uint16 reflectances with the bright square."""
    a = np.full((C_S2, H, W), value, dtype=np.uint16)
    if bright:
        c0, c1 = int((SQ[0] - X0) / 10), int((SQ[2] - X0) / 10)
        r0, r1 = int((Y0 - SQ[3]) / 10), int((Y0 - SQ[1]) / 10)
        a[:, r0:r1, c0:c1] = 9000
    return a


def write_s2(path: Path, **kw) -> Path:
    arr = kw.pop("array", None)
    return write_tif(path, s2_array() if arr is None else arr, Affine(10, 0, X0, 0, -10, Y0), UTM, **kw)


def write_s1_wgs84(path: Path, bright: bool = True) -> Path:
    """A 2-band float32 raster in EPSG:4326 (~4 m pixels) covering the S2 scene plus a margin; the bright square
    is written where the pixel centres fall inside SQ in UTM coordinates."""
    lon0, lat0, lon1, lat1 = transform_bounds(UTM, "EPSG:4326", X0, Y0 - H * 10, X0 + W * 10, Y0)
    res, m = 5e-5, 1e-3
    left, top = lon0 - m, lat1 + m
    w, h = math.ceil((lon1 - lon0 + 2 * m) / res), math.ceil((lat1 - lat0 + 2 * m) / res)
    t = Affine(res, 0, left, 0, -res, top)
    lon = left + res * (np.arange(w) + 0.5)
    lat = top - res * (np.arange(h) + 0.5)
    LON, LAT = np.meshgrid(lon, lat)
    xs, ys = warp_transform("EPSG:4326", UTM, LON.ravel(), LAT.ravel())
    xs, ys = np.asarray(xs).reshape(h, w), np.asarray(ys).reshape(h, w)
    inside = (xs > SQ[0]) & (xs < SQ[2]) & (ys > SQ[1]) & (ys < SQ[3])
    a = np.full((C_S1, h, w), 0.1, dtype=np.float32)
    if bright:
        a[:, inside] = 1.0
    return write_tif(path, a, t, "EPSG:4326")


@pytest.fixture
def two_crs(tmp_path: Path) -> RasterScene:
    s2 = write_s2(tmp_path / "s2_20200102.tif")
    s1 = write_s1_wgs84(tmp_path / "s1_20200105.tif")
    return open_raw([RasterSource(s2, "s2"), RasterSource(s1, "s1-asc")], tile_m=120, patch_size_m=40)


def _centroid(img: np.ndarray, t: tuple, thr: float) -> tuple[float, float]:
    """Map centroid of the pixels of a (h, w) image above thr, on the grid with transform t."""
    rows, cols = np.nonzero(img > thr)
    a, _, c, _, e, f = t
    return float(np.mean(c + a * (cols + 0.5))), float(np.mean(f + e * (rows + 0.5)))


# ------------------------------------------------------------------------------------------------ alignment
def test_two_crs_grids_match_and_feature_lands_at_same_map_place(two_crs: RasterScene) -> None:
    g = two_crs.grid
    assert g.crs == UTM
    assert g.data_bounds == (X0, Y0 - 230, X0 + 370, Y0)  # S2 extent; the WGS84 raster covers more
    assert (g.n_rows, g.n_cols) == (2, 4)
    assert g.tile_px == {"s2": 12, "s1-asc": 12}
    s = two_crs.tile(0, 1)
    assert s["s2"].shape == (1, C_S2, 12, 12) and s["s1-asc"].shape == (1, C_S1, 12, 12)
    assert s["s2"].dtype == torch.float32
    grids = s["meta"].extra["grids"]
    assert grids["s2"] == grids["s1-asc"]  # same transform, shape and GSD
    assert grids["s2"]["transform"] == (10.0, 0.0, X0 + 120, 0.0, -10.0, Y0)
    assert s["meta"].bounds == (X0 + 120, Y0 - 120, X0 + 240, Y0)
    assert s["meta"].crs == UTM and s["meta"].dataset == "raster"
    assert (s["meta"].extra["row"], s["meta"].extra["col"]) == (0, 1)
    # the bright square at the same map coordinates in both modalities
    sq_centre = ((SQ[0] + SQ[2]) / 2, (SQ[1] + SQ[3]) / 2)
    cx2, cy2 = _centroid(s["s2"][0, 0].numpy(), grids["s2"]["transform"], 5000)
    cx1, cy1 = _centroid(s["s1-asc"][0, 0].numpy(), grids["s1-asc"]["transform"], 0.55)
    assert (cx2, cy2) == pytest.approx(sq_centre, abs=1e-6)
    assert (cx1, cy1) == pytest.approx(sq_centre, abs=5.0)  # within half a pixel after warping from degrees
    assert int((s["s2"][0, 0] > 5000).sum()) == 16
    assert 12 <= int((s["s1-asc"][0, 0] > 0.55).sum()) <= 20
    assert bool(s["s2_mask"].all()) and bool(s["s1-asc_mask"].all())
    assert s["s2_dates"].tolist() == [2] and s["s1-asc_dates"].tolist() == [5]


def test_grid_family_with_30m_modality(tmp_path: Path) -> None:
    """s2 (10 m) + l7 (30 m): tiles start on the finest raster's (s2's) pixel grid, not on multiples of 30 m; the
    l7 grid shares that origin with its own 30 m pixels."""
    s2 = write_s2(tmp_path / "s2_20200102.tif")
    C7 = MODALITIES["l7"].num_bands
    l7 = write_tif(
        tmp_path / "l7_20200110.tif",
        np.full((C7, 12, 16), 0.2, np.float32),
        Affine(30, 0, X0 - 45, 0, -30, Y0 + 15),
        UTM,
    )
    scene = open_raw([RasterSource(s2, "s2"), RasterSource(l7, "l7")], tile_m=120)
    g = scene.grid
    assert g.unit == 30
    assert g.data_bounds == (X0, Y0 - 230, X0 + 370, Y0)  # the s2 extent, inside the l7 one: nothing cut off
    assert g.origin == (X0, Y0)
    assert (g.n_rows, g.n_cols) == (2, 4)  # 230 m x 370 m, the last row and column partly padding
    assert g.tile_px == {"s2": 12, "l7": 4}
    assert "s2_20200102.tif" in g.reference
    s = scene.tile(0, 0)
    assert s["s2"].shape[-2:] == (12, 12) and s["l7"].shape[-2:] == (4, 4)
    assert s["meta"].extra["grids"]["l7"]["transform"][2] == s["meta"].transform[2] == X0  # shared origin
    edge = scene.tile(1, 3)  # 10 m wide, 110 m tall: the s2 pixels outside the extent are masked
    assert int(edge["s2_mask"][0, 0].sum()) == 11
    assert edge["meta"].extra["valid_fraction"] == pytest.approx(11 / 144)


# ------------------------------------------------------------------------------------------------ nodata
def test_nodata_becomes_mask_not_silent_zero(tmp_path: Path) -> None:
    a = s2_array(bright=False)
    a[:, 2:5, 3:7] = 0  # file nodata = 0
    s2 = write_s2(tmp_path / "s2_20200102.tif", array=a, nodata=0)
    b = np.full((C_S1, H, W), 0.5, np.float32)
    b[:, 10:12, 1:3] = -9999.0  # nodata given by the user
    b[1, 0, 0] = np.nan  # NaN is always missing
    s1 = write_tif(tmp_path / "s1_20200105.tif", b, Affine(10, 0, X0, 0, -10, Y0), UTM)
    scene = open_raw([RasterSource(s2, "s2"), RasterSource(s1, "s1-asc", nodata=-9999)], tile_m=120)
    s = scene.tile(0, 0)
    m2, m1 = s["s2_mask"], s["s1-asc_mask"]
    assert m2.shape == s["s2"].shape and m2.dtype == torch.bool
    expected = np.ones((12, 12), bool)
    expected[2:5, 3:7] = False
    assert (m2[0].numpy() == expected[None]).all()
    assert (s["s2"][0][:, ~expected] == 0).all() and (s["s2"][0][:, expected] == 1000).all()
    exp1 = np.ones((C_S1, 12, 12), bool)
    exp1[:, 10:12, 1:3] = False
    exp1[1, 0, 0] = False
    assert (m1[0].numpy() == exp1).all()
    assert (s["s1-asc"][0][torch.from_numpy(exp1)] == 0.5).all()
    assert (s["s1-asc"][0][~torch.from_numpy(exp1)] == 0).all()  # fill value 0, but masked


# ------------------------------------------------------------------------------------------------ tiling
def test_tiling_non_square_extent_padding_and_adjacent_transforms(two_crs: RasterScene) -> None:
    g = two_crs.grid
    assert (g.n_rows, g.n_cols) == (math.ceil(230 / 120), math.ceil(370 / 120))
    tiles = list(two_crs.tiles())
    assert len(tiles) == len(two_crs) == 8
    ids = [t["meta"].tile_id for t in tiles]
    assert len(set(ids)) == 8
    by_rc = {(t["meta"].extra["row"], t["meta"].extra["col"]): t for t in tiles}
    for (r, c), t in by_rc.items():
        a, _, x, _, e, y = t["meta"].transform
        assert (a, e) == (10.0, -10.0) and t["meta"].shape == (12, 12)
        assert (x, y) == (X0 + 120 * c, Y0 - 120 * r)
        if (r, c + 1) in by_rc:  # right neighbour starts where this tile ends
            assert by_rc[(r, c + 1)]["meta"].bounds[0] == t["meta"].bounds[2]
        if (r + 1, c) in by_rc:
            assert by_rc[(r + 1, c)]["meta"].bounds[3] == t["meta"].bounds[1]
    # edge tile (1, 3): data covers x < X0+370 (1 column of the tile: 360..370) and y > Y0-230 (11 rows)
    edge = by_rc[(1, 3)]
    for mod in ("s2", "s1-asc"):
        m = edge[f"{mod}_mask"][0, 0].numpy()
        assert m[:11, :1].all() and not m[11:, :].any() and not m[:, 1:].any()
        assert (edge[mod][0][:, ~m] == 0).all()
    assert edge["s2"].shape == (1, C_S2, 12, 12)  # padded to the full tile
    # interior tile: fully valid; an index into the scene gives the same sample
    assert bool(by_rc[(0, 0)]["s2_mask"].all())
    assert torch.equal(two_crs[1]["s2"], by_rc[(0, 1)]["s2"])
    with pytest.raises(IndexError):
        two_crs[8]


def test_empty_tiles_skipped_and_requested_empty_tile_raises(tmp_path: Path) -> None:
    a = s2_array(bright=False)
    a[:, 12:, 24:] = 0  # tile (1, 2) and the bottom-right corner all nodata
    s2 = write_s2(tmp_path / "s2_20200102.tif", array=a, nodata=0)
    scene = open_raw(RasterSource(s2, "s2"), tile_m=120)
    assert (scene.grid.n_rows, scene.grid.n_cols) == (2, 4)
    assert len(scene) == 6  # tiles (1, 2) and (1, 3) have no valid pixel
    kept = {(t["meta"].extra["row"], t["meta"].extra["col"]) for t in scene.tiles()}
    assert (1, 2) not in kept and (1, 3) not in kept and len(kept) == 6
    assert len(list(scene.tiles(skip_empty=False))) == 8
    with pytest.raises(EmptyTileError, match=r"tile \(1, 2\)"):
        scene.tile(1, 2)


# ------------------------------------------------------------------------------------------------ dates
def test_time_series_dates_from_file_names_and_tags(tmp_path: Path) -> None:
    t = Affine(10, 0, X0, 0, -10, Y0)

    def const(v: float) -> np.ndarray:
        return np.full((C_S2, 12, 12), v, np.uint16)

    f_mar = write_tif(tmp_path / "S2_20200315_L2A.tif", const(3), t, UTM)
    f_feb = write_tif(tmp_path / "scene_b.tif", const(2), t, UTM, tags={"TIFFTAG_DATETIME": "2020:02:10 10:30:00"})
    f_jan = write_tif(tmp_path / "s2_2020-01-02.tif", const(1), t, UTM)
    f_jun = write_tif(tmp_path / "scene_c.tif", const(4), t, UTM, tags={"ACQUISITION_DATE": "2020-06-30T10:00:00Z"})
    scene = open_raw(RasterSource([f_mar, f_feb, f_jun, f_jan], "s2"), tile_m=120)
    s = scene.tile(0, 0)
    assert s["s2_dates"].dtype == torch.int64
    assert s["s2_dates"].tolist() == [2, 41, 75, 182]  # 2020 is a leap year: 31 + 29 + 15 = 75
    assert s["s2"].shape == (4, C_S2, 12, 12)
    assert [float(s["s2"][k, 0, 0, 0]) for k in range(4)] == [1.0, 2.0, 3.0, 4.0]  # T sorted by date
    assert s["meta"].extra["dates"]["s2"] == ["2020-01-02", "2020-02-10", "2020-03-15", "2020-06-30"]
    assert scene.dates["s2"].tolist() == [2, 41, 75, 182]


def test_explicit_dates_band_stacked_file_and_dataarray(tmp_path: Path) -> None:
    import rioxarray  # noqa: F401
    import xarray as xr

    t = Affine(10, 0, X0, 0, -10, Y0)
    stacked = np.concatenate([np.full((C_S1, 12, 12), v, np.float32) for v in (7, 5)])  # date-major
    f = write_tif(tmp_path / "s1_stack.tif", stacked, t, UTM)
    s = open_raw(RasterSource(f, "s1-asc", dates=["2021-05-01", "20210101"]), tile_m=120).tile(0, 0)
    assert s["s1-asc_dates"].tolist() == [1, 121]
    assert s["s1-asc"][:, 0, 0, 0].tolist() == [5.0, 7.0]
    with pytest.raises(DatesError, match="dates="):
        open_raw(RasterSource(f, "s1-asc"), tile_m=120)

    xs = X0 + 5 + 10 * np.arange(12)
    ys = Y0 - 5 - 10 * np.arange(12)
    da = xr.DataArray(
        np.ones((2, C_S1, 12, 12), np.float32) * np.array([1, 2], np.float32)[:, None, None, None],
        dims=("time", "band", "y", "x"),
        coords={"time": np.array(["2020-03-01", "2020-01-31"], dtype="datetime64[ns]"), "y": ys, "x": xs},
    ).rio.write_crs(UTM)
    s = open_raw(RasterSource(da, "s1-asc"), tile_m=120).tile(0, 0)
    assert s["s1-asc_dates"].tolist() == [31, 61]
    assert s["s1-asc"][:, 1, 5, 5].tolist() == [2.0, 1.0]
    assert parse_date(200) == 200


def test_band_selection_by_number_and_name(tmp_path: Path) -> None:
    t = Affine(10, 0, X0, 0, -10, Y0)
    a = np.arange(1, 13, dtype=np.float32)[:, None, None] * np.ones((12, 12, 12), np.float32)
    f = write_tif(tmp_path / "s2_20200102.tif", a, t, UTM)
    s = open_raw(RasterSource(f, "s2", bands=[2, 3, 4, 5, 6, 7, 8, 9, 11, 12]), tile_m=120).tile(0, 0)
    assert s["s2"][0, :, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 11, 12]
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    with rasterio.open(f, "r+") as dst:
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)
    s = open_raw(RasterSource(f, "s2"), tile_m=120).tile(0, 0)  # registry bands found by name
    assert s["s2"][0, :, 0, 0].tolist() == [names.index(b) + 1 for b in MODALITIES["s2"].bands]


# ------------------------------------------------------------------------------------------------ end to end
def test_end_to_end_patch_features_on_the_map(two_crs: RasterScene) -> None:
    from anysat_core import AnySat

    tiles = list(two_crs.tiles())
    batch = collate(tiles)
    batch["s2"] = (batch["s2"] - 1000) / 2000
    batch["s1-asc"] = (batch["s1-asc"] - 0.1) / 0.3
    torch.manual_seed(0)
    model = AnySat(size="tiny").eval()  # not "test": the localisation margins below need tiny's random features
    with torch.no_grad():
        feats = model(batch, patch_size_m=40, output="patch")
    assert feats.shape[:3] == (len(tiles), 3, 3)
    for b, meta in enumerate(batch["meta"]):
        xs, ys = tile_cell_coords(meta, feats.shape[1:3])
        left, _, _, top = meta.bounds
        np.testing.assert_allclose(xs, left + 20 + 40 * np.arange(3))
        np.testing.assert_allclose(ys, top - 20 - 40 * np.arange(3))
    # the tile holding the bright square (tile (0, 1)): find the patch that differs, and map it.
    # With random weights the combiner mixes all patches of a tile, so the per-patch "patch" tokens are not local;
    # the sub-patch half of the dense output comes from the spatial encoder, which sees only its own patch.
    b = next(i for i, m in enumerate(batch["meta"]) if m.extra["row"] == 0 and m.extra["col"] == 1)
    with torch.no_grad():
        dense = model(batch, patch_size_m=40, output="dense", output_modality="s2")
    D = feats.shape[-1]
    r = dense.shape[1] // 3  # sub-patch cells per patch side (40 m / 10 m = 4)
    assert dense.shape[1:3] == (12, 12) and r == 4
    # the patch-token half of the dense map repeats feats[b, i, j] over the r x r cells of patch (i, j)
    blocks = dense[b, ..., :D].reshape(3, r, 3, r, D)
    assert torch.allclose(blocks, feats[b][:, None, :, None, :].expand_as(blocks), atol=1e-5)
    sub = dense[b, ..., D:]  # (12, 12, D)
    cell_dist = (sub - sub.reshape(-1, D).median(dim=0).values).norm(dim=-1)  # (12, 12)
    per_patch = cell_dist.reshape(3, r, 3, r).mean(dim=(1, 3))  # (3, 3)
    i, j = divmod(int(per_patch.argmax()), 3)
    assert (i, j) == (1, 1)
    assert float(per_patch[i, j]) > 1.5 * float(per_patch.flatten().sort().values[-2])
    xs, ys = tile_cell_coords(batch["meta"][b], per_patch.shape)
    assert SQ[0] < xs[j] < SQ[2] and SQ[1] < ys[i] < SQ[3]
    assert (xs[j], ys[i]) == ((SQ[0] + SQ[2]) / 2, (SQ[1] + SQ[3]) / 2)
    # dense cells: the 16 outlying 10 m cells are exactly the pixels of the square
    xs, ys = tile_cell_coords(batch["meta"][b], cell_dist.shape)
    np.testing.assert_allclose(xs, X0 + 125 + 10 * np.arange(12))
    # each cell against the same sub-patch position in the other patches (positional encodings differ by position)
    by_pos = cell_dist.reshape(3, r, 3, r)
    ratio = (by_pos / by_pos.median(dim=2, keepdim=True).values.median(dim=0, keepdim=True).values).reshape(12, 12)
    rows, cols = np.nonzero(ratio.numpy() > 1.5)
    assert len(rows) == 16
    assert (xs[cols] > SQ[0]).all() and (xs[cols] < SQ[2]).all()
    assert (ys[rows] > SQ[1]).all() and (ys[rows] < SQ[3]).all()


def test_tile_cell_coords_needs_a_north_up_georeferenced_tile() -> None:
    meta = GeoInfo("raster", "r0000_c0001", UTM, (10.0, 0.0, X0 + 120, 0.0, -10.0, Y0), 10.0, (12, 12))
    xs, ys = tile_cell_coords(meta, 3)
    np.testing.assert_allclose(xs, X0 + 140 + 40 * np.arange(3))
    np.testing.assert_allclose(ys, Y0 - 20 - 40 * np.arange(3))
    xs, ys = tile_cell_coords(meta, (2, 4))
    assert xs.shape == (4,) and ys.shape == (2,) and xs[0] == X0 + 135 and ys[0] == Y0 - 30
    with pytest.raises(MissingCRSError, match="no transform"):
        tile_cell_coords(GeoInfo("raster", "t"), 3)
    with pytest.raises(InputShapeError, match="rotated"):
        tile_cell_coords(GeoInfo("raster", "t", UTM, (10.0, 1.0, X0, 0.0, -10.0, Y0), 10.0, (12, 12)), 3)
    with pytest.raises(InputShapeError, match="positive sizes"):
        tile_cell_coords(meta, (0, 3))


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_band_count(tmp_path: Path) -> None:
    f = write_tif(tmp_path / "s2_20200102.tif", np.ones((9, 12, 12), np.float32), Affine(10, 0, X0, 0, -10, Y0), UTM)
    with pytest.raises(ChannelMismatchError, match=r"expects 10 bands.*B02.*bands=\["):
        open_raw(RasterSource(f, "s2"), tile_m=120)
    with pytest.raises(ChannelMismatchError, match="out of range"):
        open_raw(RasterSource(f, "s2", bands=list(range(1, 11))), tile_m=120)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the file is meant to lack one
def test_missing_crs(tmp_path: Path) -> None:
    f = write_tif(tmp_path / "s2_20200102.tif", np.ones((C_S2, 12, 12), np.float32), None, None)
    with pytest.raises(MissingCRSError, match="crs="):
        open_raw(RasterSource(f, "s2"), tile_m=120)


def test_time_series_without_dates(tmp_path: Path) -> None:
    f = write_s2(tmp_path / "scene_a.tif")
    with pytest.raises(DatesError, match=r"scene_a\.tif.*dates="):
        open_raw(RasterSource(f, "s2"), tile_m=120)


def test_unparsable_dates(tmp_path: Path) -> None:
    f = write_s2(tmp_path / "scene_a.tif")
    with pytest.raises(DatesError, match="cannot parse"):
        open_raw(RasterSource(f, "s2", dates=["2020-13-45"]), tile_m=120)
    with pytest.raises(DatesError, match="cannot parse"):
        open_raw(RasterSource(f, "s2", dates=["yesterday"]), tile_m=120)
    g = write_s2(tmp_path / "scene_b.tif", tags={"ACQUISITION_DATE": "soon"})
    with pytest.raises(DatesError, match="ACQUISITION_DATE"):
        open_raw(RasterSource(g, "s2"), tile_m=120)
    with pytest.raises(DatesError, match="1 entries"):
        open_raw(RasterSource([f, g], "s2", dates=["2020-01-01"]), tile_m=120)


def test_non_overlapping_sources(tmp_path: Path) -> None:
    s2 = write_s2(tmp_path / "s2_20200102.tif")
    far = write_tif(
        tmp_path / "s1_20200105.tif", np.ones((C_S1, 10, 10), np.float32), Affine(10, 0, X0 + 5000, 0, -10, Y0), UTM
    )
    with pytest.raises(ExtentMismatchError, match="do not overlap"):
        open_raw([RasterSource(s2, "s2"), RasterSource(far, "s1-asc")], tile_m=120)


def test_bad_modality_and_tile_size(tmp_path: Path) -> None:
    s2 = write_s2(tmp_path / "s2_20200102.tif")
    with pytest.raises(UnknownModalityError, match="sentinel2"):
        RasterSource(s2, "sentinel2")
    with pytest.raises(PatchSizeError, match="multiple of 10"):
        open_raw(RasterSource(s2, "s2"), tile_m=125)
    with pytest.raises(PatchSizeError, match="patch_size_m=40"):
        open_raw(RasterSource(s2, "s2"), tile_m=100, patch_size_m=40)


def test_modis_one_pixel_per_tile_at_tile_centre(tmp_path: Path) -> None:
    """MODIS gets the value of the 250 m pixel containing each tile's centre."""
    s2 = write_s2(tmp_path / "s2_20200102.tif")
    C = MODALITIES["modis"].num_bands
    mx0, my0 = X0 - 500, Y0 + 500
    vals = np.arange(64, dtype=np.float32).reshape(8, 8)
    mod = write_tif(
        tmp_path / "modis_20200103.tif", np.repeat(vals[None], C, 0), Affine(250, 0, mx0, 0, -250, my0), UTM
    )
    scene = open_raw([RasterSource(s2, "s2"), RasterSource(mod, "modis")], tile_m=120)
    assert scene.grid.tile_px["modis"] == 1 and scene.grid.gsd_m["modis"] == 120
    for s in scene.tiles():
        r, c = s["meta"].extra["row"], s["meta"].extra["col"]
        assert s["modis"].shape == (1, C, 1, 1) and bool(s["modis_mask"].all())
        cx, cy = X0 + 60 + 120 * c, Y0 - 60 - 120 * r
        expected = vals[int((my0 - cy) // 250), int((cx - mx0) // 250)]
        assert float(s["modis"][0, 0, 0, 0]) == expected
    assert s["modis_dates"].tolist() == [3]


def test_geographic_first_source_uses_utm_and_metric_crs_required(tmp_path: Path) -> None:
    s2 = write_s2(tmp_path / "s2_20200102.tif")
    s1 = write_s1_wgs84(tmp_path / "s1_20200105.tif")
    scene = open_raw([RasterSource(s1, "s1-asc"), RasterSource(s2, "s2")], tile_m=120)
    assert scene.grid.crs == UTM
    assert scene.grid.data_bounds == (X0, Y0 - 230, X0 + 370, Y0)
    with pytest.raises(ConfigError, match="metres"):
        open_raw([RasterSource(s1, "s1-asc"), RasterSource(s2, "s2")], tile_m=120, crs="EPSG:4326")
