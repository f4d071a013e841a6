"""xarray and NetCDF inputs of :mod:`anysat_core.data.raster`, and damaged files.

Every raster here is a real file written by the test (NetCDF-3 with xarray's ``scipy`` engine, NetCDF-4 with
``h5netcdf``, GeoTIFF with rasterio) or a real DataArray/Dataset; values read back through :func:`open_rasters`
are compared with the values written.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from anysat_core.data.raster import RasterSource, open_rasters
from anysat_core.data.raster.sources import band_alias, read_frames
from anysat_core.errors import (
    ChannelMismatchError,
    ConfigError,
    CorruptFileError,
    InputShapeError,
    MissingCRSError,
)
from anysat_core.modalities import MODALITIES

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

open_raw = functools.partial(open_rasters, normalize=None)
UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 4_000_000.0
N = 12  # pixels per side: one 120 m tile of 10 m pixels
XS = X0 + 5 + 10 * np.arange(N)  # cell centres
YS = Y0 - 5 - 10 * np.arange(N)
#: Sentinel-2 variables by common name (as Earth Search names them), in alphabetical order.
S2_NAMES = sorted(["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"])
S2_BANDS = MODALITIES["s2"].bands


def band_values(k: int) -> np.ndarray:
    """``(N, N)`` float32 values of band ``k``: ``100 k`` plus the row number plus a tenth of the column."""
    return (100.0 * k + np.arange(N)[:, None] + 0.1 * np.arange(N)[None, :]).astype(np.float32)


def s2_expected() -> np.ndarray:
    """``(10, N, N)``: the values written for each registry band (variable ``S2_NAMES[i]`` holds ``band_values(i)``)."""
    by_band = {band_alias("s2", n): band_values(i) for i, n in enumerate(S2_NAMES)}
    return np.stack([by_band[b] for b in S2_BANDS])


def s2_dataset(band_dim: bool = False, coords: bool = True) -> xr.Dataset:
    dims = ("band", "y", "x") if band_dim else ("y", "x")
    data = {n: (dims, band_values(i)[None] if band_dim else band_values(i)) for i, n in enumerate(S2_NAMES)}
    c: dict = {"x": XS, "y": YS} if coords else {}
    if band_dim:
        c["band"] = [1]
    return xr.Dataset(data, coords=c)


def read_s2(source: RasterSource) -> np.ndarray:
    """The ``(10, N, N)`` s2 values of the one tile of ``source``."""
    scene = open_raw(source, tile_m=120)
    assert (scene.grid.n_rows, scene.grid.n_cols) == (1, 1)
    return scene.tile(0, 0)["s2"][0].numpy()


def write_tif(path: Path, data: np.ndarray, transform: Affine | None, crs: str | None, **kw) -> Path:
    h, w = data.shape[1:]
    with rasterio.open(path, "w", "GTiff", w, h, data.shape[0], crs, transform, data.dtype, **kw) as dst:
        dst.write(data)
    return path


# ------------------------------------------------------------------------------------------------ band names
def test_band_aliases() -> None:
    assert [band_alias("s2", n) for n in ("Blue", "B2", "b02", "RED", "nir", "NIR08", "swir1", "SWIR22")] == [
        "B02",
        "B02",
        "B02",
        "B04",
        "B08",
        "B8A",
        "B11",
        "B12",
    ]
    assert band_alias("l8", "nir") == "B5" and band_alias("l8", "SR_B4") == "B4"
    assert band_alias("aerial", "red") == "R" and band_alias("naip", "Near Infrared") == "NIR"
    assert band_alias("s1", "sigma0_vv") == "VV" and band_alias("s1", "VV/VH") == "VV/VH"
    assert band_alias("s2", "band_2") is None  # generic numbering is never read as a band id


@pytest.mark.parametrize("band_dim", [True, False], ids=["band=1 per variable", "(y, x) variables"])
def test_dataset_variables_matched_by_alias_in_registry_order(band_dim: bool) -> None:
    ds = s2_dataset(band_dim).rio.write_crs(UTM)
    got = read_s2(RasterSource(ds, "s2", dates=["2020-01-02"]))
    np.testing.assert_array_equal(got, s2_expected())  # alphabetical blue, green, nir... land on B02, B03, B04...
    assert got[2, 0, 0] == 100 * S2_NAMES.index("red")  # red (not nir) is the third registry band, B04


def test_aerial_dataset_and_described_geotiff_reordered_by_name(tmp_path: Path) -> None:
    names = ["Blue", "Green", "Red", "NIR"]  # the registry order of aerial is NIR, G, B, R
    xs, ys = X0 + 0.1 + 0.2 * np.arange(600), Y0 - 0.1 - 0.2 * np.arange(600)
    ds = xr.Dataset(
        {n: (("y", "x"), np.full((600, 600), i + 1, np.uint8)) for i, n in enumerate(names)}, coords={"x": xs, "y": ys}
    ).rio.write_crs(UTM)
    s = open_raw(RasterSource(ds, "aerial"), tile_m=120).tile(0, 0)
    assert s["aerial"][:, 0, 0].tolist() == [4, 2, 1, 3]

    data = np.stack([np.full((600, 600), i + 1, np.uint8) for i in range(4)])
    f = write_tif(tmp_path / "aerial.tif", data, Affine(0.2, 0, X0, 0, -0.2, Y0), UTM)
    with rasterio.open(f, "r+") as dst:
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)
    s = open_raw(RasterSource(f, "aerial"), tile_m=120).tile(0, 0)
    assert s["aerial"][:, 0, 0].tolist() == [4, 2, 1, 3]
    with rasterio.open(f, "r+") as dst:
        dst.set_band_description(4, "alpha")  # names that name some bands but not all: never file order
    with pytest.raises(ChannelMismatchError, match=r"none is NIR.*bands="):
        open_raw(RasterSource(f, "aerial"), tile_m=120)


def test_unmatched_variables_raise_and_bands_selects_them() -> None:
    ds = xr.Dataset(
        {f"band_{i}": (("y", "x"), band_values(i)) for i in range(10)}, coords={"x": XS, "y": YS}
    ).rio.write_crs(UTM)
    with pytest.raises(ChannelMismatchError, match=r"'band_0'.*B02, B03.*never taken in file order.*bands=\["):
        read_frames(RasterSource(ds, "s2", dates=["2020-01-02"]))
    order = [f"band_{i}" for i in (3, 1, 2, 0, 4, 5, 6, 7, 8, 9)]
    got = read_s2(RasterSource(ds, "s2", dates=["2020-01-02"], bands=order))
    np.testing.assert_array_equal(got[:4, 0, 0], [300, 100, 200, 0])

    partial = s2_dataset().drop_vars("nir08").rio.write_crs(UTM)  # 9 of 10 bands
    with pytest.raises(ChannelMismatchError, match=r"none is B8A.*bands="):
        read_frames(RasterSource(partial, "s2", dates=["2020-01-02"]))
    # bands= by registry names finds the variables through their aliases
    frames = read_frames(RasterSource(s2_dataset().rio.write_crs(UTM), "s2", dates=[1], bands=list(S2_BANDS)))
    assert [S2_NAMES[i] for i in frames[0].band_idx][:3] == ["blue", "green", "red"]


def test_dataset_variables_of_different_shapes_refused() -> None:
    ds = s2_dataset().rio.write_crs(UTM)
    ds["blue"] = (("y", "x", "z"), np.zeros((N, N, 3), np.float32))
    with pytest.raises(InputShapeError, match=r"'blue'.*one band.*RasterSource\(ds\['blue'\]"):
        read_frames(RasterSource(ds, "s2", dates=[1]))


# ------------------------------------------------------------------------------------------------ NetCDF files
def test_netcdf3_crs_in_cf_grid_mapping(tmp_path: Path) -> None:
    ds = s2_dataset()
    ds["spatial_ref"] = xr.DataArray(np.int32(0), attrs={"crs_wkt": CRS.from_string(UTM).to_wkt()})
    for n in S2_NAMES:
        ds[n].attrs["grid_mapping"] = "spatial_ref"
    ds["scl"] = (("y", "x"), np.zeros((N, N), np.int16), {"_FillValue": np.int16(-1)})  # an extra, ignored layer
    f = tmp_path / "s2_20200102.nc"
    ds.to_netcdf(f, engine="scipy")
    (frame,) = read_frames(RasterSource(f, "s2"))
    assert frame.crs == CRS.from_string(UTM)
    assert tuple(frame.transform)[:6] == (10, 0, X0, 0, -10, Y0)
    assert frame.date is not None and frame.date.isoformat() == "2020-01-02"  # from the file name
    assert frame.nodata is None  # the fill value of the unused scl layer is not the bands' nodata
    np.testing.assert_allclose(read_s2(RasterSource(f, "s2")), s2_expected(), atol=1e-5)


def test_netcdf4_crs_and_geotransform_in_global_attributes(tmp_path: Path) -> None:
    pytest.importorskip("h5netcdf")
    ds = s2_dataset(coords=False)  # no coordinates at all: the attributes georeference it
    ds.attrs.update(crs=UTM, GeoTransform=f"{X0} 10 0 {Y0} 0 -10")
    f = tmp_path / "s2_20200102.nc"
    ds.to_netcdf(f, engine="h5netcdf")
    (frame,) = read_frames(RasterSource(f, "s2"))
    assert frame.crs == CRS.from_string(UTM)
    assert tuple(frame.transform)[:6] == (10, 0, X0, 0, -10, Y0)
    np.testing.assert_allclose(read_s2(RasterSource(f, "s2")), s2_expected(), atol=1e-5)

    ds.attrs = {"crs": 32631, "transform": [10, 0, X0, 0, -10, Y0]}  # EPSG code and affine order
    g = tmp_path / "s2_20200103.nc"
    ds.to_netcdf(g, engine="h5netcdf")
    np.testing.assert_allclose(read_s2(RasterSource(g, "s2")), s2_expected(), atol=1e-5)


def test_netcdf_stored_south_up_is_read_north_up(tmp_path: Path) -> None:
    ds = s2_dataset().isel(y=slice(None, None, -1))  # y increasing, rows bottom first (common in NetCDF)
    ds.attrs["crs"] = UTM
    f = tmp_path / "s2_20200102.nc"
    ds.to_netcdf(f, engine="scipy")
    (frame,) = read_frames(RasterSource(f, "s2"))
    assert tuple(frame.transform)[:6] == (10, 0, X0, 0, -10, Y0)
    np.testing.assert_allclose(read_s2(RasterSource(f, "s2")), s2_expected(), atol=1e-5)


def test_netcdf_time_series_variables_fill_value_and_lonlat(tmp_path: Path) -> None:
    t = np.array(["2020-03-04", "2020-01-02"], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {
            n: (("t", "y", "x"), np.stack([np.full((N, N), 10 * i + k, np.int16) for k in range(2)]))
            for i, n in enumerate(["vh", "VV"])  # lower case and in the wrong order
        },
        coords={"t": t, "x": XS, "y": YS},  # time named t, as openEO writes it
        attrs={"crs": UTM},
    )
    ds["VV"].values[1, 0, 0] = -9999
    for n in ds.data_vars:
        ds[n].attrs["_FillValue"] = np.int16(-9999)
    f = tmp_path / "s1.nc"
    ds.to_netcdf(f, engine="scipy")
    s = open_raw(RasterSource(f, "s1-asc"), tile_m=120).tile(0, 0)
    assert s["s1-asc_dates"].tolist() == [2, 64]  # sorted by date
    assert s["s1-asc"][:, :, 0, 1].tolist() == [[11, 1], [10, 0]]  # (date, VV/VH): VV first
    assert s["s1-asc_mask"][:, :, 0, 0].tolist() == [[False, True], [True, True]]  # the fill value is nodata

    lon = xr.DataArray(3.0 + 1e-4 * np.arange(N), dims="lon", attrs={"units": "degrees_east"})
    lat = xr.DataArray(45.0 - 1e-4 * np.arange(N), dims="lat", attrs={"units": "degrees_north"})
    ll = xr.Dataset(
        {n: (("lat", "lon"), band_values(i)) for i, n in enumerate(S2_NAMES)}, coords={"lon": lon, "lat": lat}
    )
    g = tmp_path / "s2_20200102_lonlat.nc"
    ll.to_netcdf(g, engine="scipy")
    (frame,) = read_frames(RasterSource(g, "s2"))
    assert frame.crs == CRS.from_epsg(4326)  # CF longitude/latitude in degrees
    np.testing.assert_allclose(tuple(frame.transform)[:6], (1e-4, 0, 3.0 - 5e-5, 0, -1e-4, 45.0 + 5e-5))


def test_rioxarray_opened_netcdf_dataset(tmp_path: Path) -> None:
    ds = s2_dataset().rio.write_crs(UTM)
    ds["x"].attrs.update(standard_name="projection_x_coordinate", units="m", axis="X")
    ds["y"].attrs.update(standard_name="projection_y_coordinate", units="m", axis="Y")
    f = tmp_path / "s2_20200102.nc"
    ds.to_netcdf(f, engine="scipy")
    opened = rioxarray.open_rasterio(f)  # one (band=1, y, x) variable per band, georeferenced by GDAL
    assert isinstance(opened, xr.Dataset) and opened["blue"].dims == ("band", "y", "x")
    np.testing.assert_allclose(read_s2(RasterSource(opened, "s2", dates=[2])), s2_expected(), atol=1e-5)

    bare = s2_dataset().rio.write_crs(UTM)  # x/y without CF attributes: GDAL ignores them, xarray does not
    g = tmp_path / "s2_20200103.nc"
    bare.to_netcdf(g, engine="scipy")
    with pytest.raises(MissingCRSError, match=r"pixel-index .*path to RasterSource"):
        read_frames(RasterSource(rioxarray.open_rasterio(g), "s2", dates=[2]))
    np.testing.assert_allclose(read_s2(RasterSource(g, "s2")), s2_expected(), atol=1e-5)


def test_georeferencing_problems_are_named(tmp_path: Path) -> None:
    ds = s2_dataset()
    ds.attrs["crs"] = "not a crs"
    f = tmp_path / "s2_20200102_badcrs.nc"
    ds.to_netcdf(f, engine="scipy")
    with pytest.raises(MissingCRSError, match=r"crs='not a crs' is not a CRS.*crs='EPSG:xxxx'"):
        read_frames(RasterSource(f, "s2"))
    assert read_frames(RasterSource(f, "s2", crs=UTM))[0].crs == CRS.from_string(UTM)

    g = tmp_path / "s2_20200102_bare.nc"
    s2_dataset(coords=False).to_netcdf(g, engine="scipy")
    with pytest.raises(MissingCRSError, match="not georeferenced: it has no CRS and no geotransform") as e:
        read_frames(RasterSource(g, "s2"))
    assert "rotated" not in str(e.value)

    uneven = s2_dataset().assign_coords(x=XS + 0.5 * np.arange(N) ** 2).rio.write_crs(UTM)
    with pytest.raises(InputShapeError, match="not evenly spaced"):
        read_frames(RasterSource(uneven, "s2", dates=[2]))

    data = np.ones((10, N, N), np.float32)
    h = write_tif(tmp_path / "s2_20200102.tif", data, None, UTM)  # a CRS but no geotransform
    with pytest.raises(MissingCRSError, match="a CRS but no geotransform") as e:
        read_frames(RasterSource(h, "s2"))
    assert "rotated" not in str(e.value)
    r = write_tif(tmp_path / "s2_20200103.tif", data, Affine(10, 1, X0, 1, -10, Y0), UTM)
    with pytest.raises(InputShapeError, match="rotated"):
        read_frames(RasterSource(r, "s2"))
    with pytest.raises(ConfigError, match="not a CRS"):
        RasterSource(h, "s2", crs="EPSG:nope")


# ------------------------------------------------------------------------------------------------ damaged files
def _cut(src: Path, dst: Path, n: int | None = None) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2 if n is None else n])
    return dst


@pytest.mark.parametrize(
    "kind",
    [
        "tif cut to 300 bytes",
        "tiled tif cut in half",
        "nc3 cut in half",
        "nc4 cut in half",
        "random .tif",
        "random .nc",
        "empty .tif",
    ],
)
def test_damaged_files_are_corrupt(tmp_path: Path, kind: str) -> None:
    if kind == "nc4 cut in half":
        pytest.importorskip("h5netcdf")
    data = np.random.default_rng(0).integers(0, 1000, (10, 64, 64)).astype(np.uint16)
    t = Affine(10, 0, X0, 0, -10, Y0)
    rng = np.random.default_rng(1)
    full_tif = write_tif(tmp_path / "full.tif", data, t, UTM)
    if kind == "tif cut to 300 bytes":
        f = _cut(full_tif, tmp_path / "s2_20200102.tif", 300)
    elif kind == "tiled tif cut in half":
        tiled = write_tif(tmp_path / "tiled.tif", data, t, UTM, tiled=True, blockxsize=16, blockysize=16)
        f = _cut(tiled, tmp_path / "s2_20200102.tif")
    elif kind.startswith("nc"):
        nc = tmp_path / "full.nc"
        s2_dataset().rio.write_crs(UTM).to_netcdf(nc, engine="scipy" if kind.startswith("nc3") else "h5netcdf")
        f = _cut(nc, tmp_path / "s2_20200102.nc")
    elif kind.startswith("random"):
        f = tmp_path / f"s2_20200102{kind[-4:]}"
        f.write_bytes(rng.bytes(4096))
    else:
        f = tmp_path / "s2_20200102.tif"
        f.write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"(damaged|truncated).*re-download or re-export"):
        open_raw(RasterSource(f, "s2"), tile_m=120)
