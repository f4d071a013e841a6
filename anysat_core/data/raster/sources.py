"""Raster sources: open files/DataArrays/Datasets lazily, standardise dims, resolve bands, date the frames.

A :class:`RasterSource` maps rasters to one modality; :func:`read_frames` turns it into :class:`Frame` objects
(one per date), each a lazily read ``(band, y, x)`` array with its CRS, transform, nodata and date.

Inputs:

* GeoTIFF/COG and other GDAL rasters by path (``rioxarray.open_rasterio``, raw file values);
* NetCDF files by path (a NetCDF-3 or HDF5 signature with a ``.nc``/``.nc4``/``.cdf``/``.netcdf`` suffix): read
  with xarray (engine ``scipy`` for NetCDF-3, ``h5netcdf`` for NetCDF-4; raw values, ``_FillValue`` as nodata), one
  variable per band, rows in file order; GDAL when neither engine is installed;
* an ``xr.DataArray`` ``(band, y, x)``, ``(y, x)`` or ``(time, band, y, x)``;
* an ``xr.Dataset`` with one variable per band, each ``(y, x)``, ``(band=1, y, x)`` (what
  ``rioxarray.open_rasterio`` gives for a NetCDF) or ``(time, y, x)``: the variables are stacked lazily (a window read
  reads only that window of each variable) and matched to the registry bands by name (see :func:`band_alias`).

Georeferencing.  CRS, first found of: a CF ``grid_mapping`` variable named by a band variable (its ``crs_wkt``,
``spatial_ref``, ``crs``... attribute, or CF projection parameters), any variable carrying such attributes (the
``spatial_ref`` coordinate of rioxarray, a ``crs`` variable), the object's (global) attributes ``crs``, ``crs_wkt``,
``spatial_ref``, ``proj4``, ``epsg``..., rioxarray's ``rio.crs``, WGS 84 for x/y coordinates in degrees
(``units="degrees_east"``/``standard_name="longitude"``), and last ``RasterSource(crs=...)``.  Transform: from
evenly spaced 1-D x/y (or lon/lat) coordinates of the cell centres; else a ``GeoTransform`` attribute (GDAL order
``x0 dx rx y0 ry dy``) or a ``transform`` attribute (affine order ``a b c d e f``) on those variables or the object;
else the file's GDAL geotransform.  Grids stored south-up (y increasing) or east to west are flipped to north-up
lazily; rotated, irregular or curvilinear grids are refused with the fix.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import rasterio
import rasterio.errors
import rioxarray
import rioxarray.exceptions
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window
from xarray.backends import BackendArray
from xarray.core import indexing

from anysat_core.dates import DateLike, date_from_name, date_sort_key, parse_date
from anysat_core.errors import (
    AnySatError,
    ChannelMismatchError,
    ConfigError,
    CorruptFileError,
    DatasetNotFoundError,
    DatesError,
    InputShapeError,
    MissingCRSError,
)
from anysat_core.modalities import MODALITIES, Modality

__all__ = ["DATE_TAGS", "NETCDF_SUFFIXES", "Frame", "RasterLike", "RasterSource", "band_alias", "read_frames"]

RasterLike = str | os.PathLike | xr.DataArray | xr.Dataset
_XrObj = TypeVar("_XrObj", xr.DataArray, xr.Dataset)

#: GeoTIFF metadata keys read as the acquisition date, in order of preference (case-insensitive).
DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITIONDATE", "DATE_ACQUIRED", "SENSING_TIME", "DATETIME", "DATE")
#: The TIFF creation time: the date of last resort (often the processing date, not the acquisition).
TIFF_DATETIME = "TIFFTAG_DATETIME"
#: File suffixes read as NetCDF (with xarray) when the file starts with a NetCDF-3 or HDF5 signature.
NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")
_NC3_MAGIC = (b"CDF\x01", b"CDF\x02")  # classic and 64-bit offset (scipy); CDF-5 goes to GDAL
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Attributes read as a CRS (case-insensitive), in order of preference.
_CRS_KEYS = (
    "crs_wkt",
    "spatial_ref",
    "esri_pe_string",
    "crs",
    "srs",
    "proj4",
    "proj4text",
    "proj4_string",
    "epsg",
    "epsg_code",
)


@dataclass
class RasterSource:
    """Rasters that make one modality.

    Args:
        data: a GeoTIFF/COG or NetCDF path, a ``rioxarray`` DataArray ``(band, y, x)``/``(y, x)``/
            ``(time, band, y, x)``, an ``xr.Dataset`` (one variable per band, each ``(y, x)``, ``(band=1, y, x)`` or
            ``(time, y, x)``), or a list of these (one per date, time series).  See the module docstring.
        modality: a key of :data:`~anysat_core.modalities.MODALITIES` (unknown names raise
            :class:`~anysat_core.errors.UnknownModalityError`).
        bands: bands to take from each file, in ``MODALITIES[modality].bands`` order: 1-based band numbers or band
            names (band descriptions, ``band`` coordinate values or Dataset variable names; registry names and
            aliases such as ``"red"`` find their band too, see :func:`band_alias`).  Default: all bands, reordered
            to the registry when their names say so; Dataset variables must match the registry names.
        dates: one date per frame (time series only): see :func:`anysat_core.dates.parse_date`.  Default: read
            from metadata.
        nodata: value marking missing pixels; overrides the file's nodata.  NaN is always missing.
        resampling: a :class:`rasterio.enums.Resampling` or its name; default chosen per frame
            (see :mod:`anysat_core.data.raster`).
        crs: CRS to assume for rasters that have none (e.g. ``"EPSG:32631"``; one that is not a CRS raises
            :class:`~anysat_core.errors.ConfigError`); a raster without CRS and without this raises
            :class:`~anysat_core.errors.MissingCRSError`.
    """

    data: RasterLike | Sequence[RasterLike]
    modality: str
    bands: Sequence[int | str] | None = None
    dates: Sequence[DateLike] | None = None
    nodata: float | None = None
    resampling: Resampling | str | None = None
    crs: Any = None

    def __post_init__(self) -> None:
        mod: Modality = MODALITIES[self.modality]  # UnknownModalityError for unknown names
        if self.dates is not None and not mod.time_series:
            raise DatesError(
                f"{self.modality} is a single-date modality; remove dates= from its RasterSource "
                "(only time series take dates)"
            )
        if self.nodata is not None and (
            isinstance(self.nodata, bool) or not isinstance(self.nodata, (int, float, np.integer, np.floating))
        ):
            raise ConfigError(
                f"nodata={self.nodata!r} for {self.modality}; expected a number (the pixel value that marks missing "
                "data, e.g. 0 or -9999) or None to use the file's own nodata"
            )
        if self.crs is not None:
            try:
                CRS.from_user_input(self.crs)
            except (rasterio.errors.CRSError, ValueError, TypeError) as e:
                raise ConfigError(
                    f"crs={self.crs!r} for {self.modality} is not a CRS ({e}); expected e.g. 'EPSG:32631', a WKT or "
                    "PROJ string, or a rasterio/pyproj CRS"
                ) from None
        if isinstance(self.resampling, str):
            try:
                self.resampling = Resampling[self.resampling]
            except KeyError:
                raise ConfigError(
                    f"resampling={self.resampling!r} for {self.modality}; expected one of "
                    f"{', '.join(r.name for r in Resampling)}"
                ) from None


@dataclass
class Frame:
    """One date of one source: a lazily read ``(band, y, x)`` array and the bands that make the modality."""

    da: xr.DataArray
    band_idx: list[int]  # 0-based, len C
    crs: CRS
    transform: Affine
    nodata: float | None
    name: str
    date: _dt.date | int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the whole raster."""
        return (self.da.sizes["y"], self.da.sizes["x"])


# ------------------------------------------------------------------------------------------------ band names
#: Other names of registry bands, per modality (compared after :func:`_band_key`): the common names of the STAC
#: ``eo`` extension and of the usual providers (Earth Search, Planetary Computer, Google Earth Engine, USGS).
_VHR_ALIASES: dict[str, tuple[str, ...]] = {
    "R": ("red",),
    "G": ("green",),
    "B": ("blue",),
    "NIR": ("nir", "n", "infrared", "nearinfrared"),
    "elevation": ("elev", "dem", "dsm", "ndsm", "height"),
}
_BAND_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "aerial": _VHR_ALIASES,
    "aerial-flair": _VHR_ALIASES,
    "spot": _VHR_ALIASES,
    "naip": _VHR_ALIASES,
    "s2": {
        "B02": ("blue",),
        "B03": ("green",),
        "B04": ("red",),
        "B05": ("rededge1", "re1", "rededge071"),
        "B06": ("rededge2", "re2", "rededge075"),
        "B07": ("rededge3", "re3", "rededge078"),
        "B08": ("nir", "nir1", "nirbroad", "broadnir"),
        "B8A": ("nir08", "nir2", "nirnarrow", "narrownir", "rededge4", "re4"),
        "B11": ("swir1", "swir16"),
        "B12": ("swir2", "swir22"),
    },
    "s1-asc": {},
    "s1": {"VV/VH": ("vvvhratio", "ratio", "vvovervh")},
    "alos": {"HH/HV": ("hhhvratio", "ratio", "hhoverhv")},
    "l7": {
        "B1": ("blue",),
        "B2": ("green",),
        "B3": ("red",),
        "B4": ("nir", "nir08"),
        "B5": ("swir1", "swir16"),
        "B7": ("swir2", "swir22"),
    },
    "l8": {
        "B1": ("coastal", "coastalaerosol"),
        "B2": ("blue",),
        "B3": ("green",),
        "B4": ("red",),
        "B5": ("nir", "nir08"),
        "B6": ("swir1", "swir16"),
        "B7": ("swir2", "swir22"),
        "B8": ("pan", "panchromatic"),
        "B9": ("cirrus",),
        "B10": ("lwir11", "lwir1", "tirs1", "thermal1"),
        "B11": ("lwir12", "lwir2", "tirs2", "thermal2"),
    },
    "modis": {  # MOD09 band numbers
        "B1": ("red",),
        "B2": ("nir", "nir08"),
        "B3": ("blue",),
        "B4": ("green",),
        "B6": ("swir1", "swir16"),
        "B7": ("swir2", "swir22"),
    },
}


def _band_key(name: object) -> str:
    """A band name compared loosely: lower case, only letters and digits, ``B02``/``b2``/``SR_B2`` -> ``b2``."""
    k = re.sub(r"[^0-9a-z]", "", str(name).lower())
    k = re.sub(r"^(?:surrefl|sr|st|toa)(?=b\d)", "", k)  # sur_refl_b01 (MODIS), SR_B4 / ST_B10 (Landsat C2)
    k = re.sub(r"^(?:sigma0|gamma0|beta0)(?=(?:vv|vh|hh|hv))", "", k)  # sigma0_VV (SAR)
    m = re.fullmatch(r"b0*(\d+)(a?)", k)
    return f"b{m[1]}{m[2]}" if m else k


def _alias_table(modality: str) -> dict[str, str]:
    """``{loose name: registry band}`` of a modality: its band names and their aliases."""
    mod = MODALITIES[modality]
    table = {_band_key(b): b for b in mod.bands}
    for band, names in _BAND_ALIASES.get(modality, {}).items():
        for n in names:
            table.setdefault(_band_key(n), band)
    return table


def band_alias(modality: str, name: str) -> str | None:
    """The registry band of ``modality`` that the band/variable name ``name`` means, or None.

    Names are compared case-insensitively and without separators (``B02``, ``b2``, ``SR_B2`` are one name), with
    the common names of the bands: for ``s2`` blue/B02, green/B03, red/B04, rededge1-3/B05-B07, nir/B08,
    nir08 (narrow NIR)/B8A, swir1 or swir16/B11, swir2 or swir22/B12; for Landsat and MODIS the same common names on
    their band numbers; red/green/blue/nir (R, G, B, NIR) for the aerial modalities; vv, vh (``sigma0_vv``...) and
    ``ratio`` for SAR.
    """
    return _alias_table(modality).get(_band_key(name))


def _alias_examples(modality: str) -> str:
    pairs = [(n, b) for b, ns in _BAND_ALIASES.get(modality, {}).items() for n in ns[:1]]
    return ", ".join(f"{n}={b}" for n, b in pairs[:5]) or "case-insensitive, B2=B02"


# ------------------------------------------------------------------------------------------------ opening
@dataclass
class _Opened:
    """One opened raster: its array, a display name, metadata tags and the georeferencing found in its metadata."""

    da: xr.DataArray
    name: str
    tags: dict[str, str] = field(default_factory=dict)
    crs: CRS | None = None  # from CF/GDAL attributes (None: rioxarray's or none)
    transform: Affine | None = None  # from attributes or the GDAL geotransform (None: from the coordinates)
    transform_from_attrs: bool = False
    notes: list[str] = field(default_factory=list)  # where georeferencing was looked for / what could not be read
    strict: bool = False  # band names must match the registry (Dataset variables: never taken in file order)
    alt_names: list[list[str]] | None = None  # other names of each band (a variable's long_name...)
    band_fills: list[float | None] | None = None  # fill value of each band (Dataset variables)
    gcps: int = 0
    from_gdal: bool = False  # a file opened with GDAL (its pixel-index coordinates mean: no geotransform)
    fix: str = ""  # how to georeference this kind of input


class _LazyStack(BackendArray):
    """Arrays of one shape stacked along a new axis, read lazily: indexing reads only that part of each array.

    ``arrays``: xarray objects (lazy file variables or in-memory), each ``shape``; the stack is ``shape`` with
    ``len(arrays)`` inserted at ``axis``.  Read errors become :class:`CorruptFileError` naming ``name``.
    """

    def __init__(self, arrays: list[xr.DataArray], axis: int, name: str) -> None:
        self.arrays = [a.variable for a in arrays]
        self.axis = axis
        self.name = name
        shape = list(self.arrays[0].shape)
        shape.insert(axis, len(arrays))
        self.shape = tuple(shape)
        self.dtype = np.result_type(*(a.dtype for a in self.arrays))

    def __getitem__(self, key: Any) -> Any:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        keys = list(key)
        pick = np.arange(len(self.arrays))[keys.pop(self.axis)]
        rest = tuple(keys)
        try:
            parts = [np.asarray(self.arrays[int(i)][rest].values, dtype=self.dtype) for i in np.atleast_1d(pick)]
            if not parts:
                empty = np.asarray(self.arrays[0][rest].values, dtype=self.dtype)
        except (AnySatError, MemoryError):
            raise
        except Exception as e:  # any backend (scipy, h5netcdf, GDAL, dask) error: the file under it is damaged
            raise CorruptFileError(
                f"cannot read a window of {self.name!r} ({type(e).__name__}: {_first_line(e)}); the file is damaged "
                "or truncated: re-download or re-export it"
            ) from e
        if np.ndim(pick) == 0:
            return parts[0]
        axis = sum(1 for k in key[: self.axis] if not isinstance(k, (int, np.integer)))
        if not parts:
            return np.empty((*empty.shape[:axis], 0, *empty.shape[axis:]), self.dtype)
        return np.stack(parts, axis=axis)


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _damaged(path: Path, e: BaseException, doing: str) -> CorruptFileError:
    """The error for a file that exists but cannot be read: damaged, truncated or not a raster."""
    try:
        size = f"{path.stat().st_size} bytes"
    except OSError:
        size = "size unknown"
    return CorruptFileError(
        f"raster file {str(path)!r} ({size}) is damaged, truncated or not a raster: {doing} failed "
        f"({type(e).__name__}: {_first_line(e)}). Expected a complete GeoTIFF/COG, NetCDF or other GDAL-readable "
        "raster; re-download or re-export the file"
    )


def _open_one(item: RasterLike, index: int) -> _Opened:
    """Open a path lazily or take an xarray object, with the georeferencing found in its metadata."""
    if isinstance(item, xr.Dataset):
        op = _from_dataset(item, f"Dataset[{index}]")
        op.fix = "write it: ds.rio.write_crs('EPSG:xxxx') and x/y coordinates of the cell centres"
        return op
    if isinstance(item, xr.DataArray):
        name = f"DataArray[{index}]" if item.name is None else f"DataArray {item.name!r}"
        crs, transform, notes = _georef_hints(item, [item])
        return _Opened(
            item,
            name,
            crs=crs,
            transform=transform,
            transform_from_attrs=transform is not None,
            notes=notes,
            fix="write it: da.rio.write_crs('EPSG:xxxx') and x/y coordinates of the cell centres",
        )
    if not isinstance(item, (str, os.PathLike)):
        raise InputShapeError(
            f"RasterSource data item {index} is a {type(item).__name__}; expected a file path, an xarray DataArray "
            "or Dataset, or a list of these"
        )
    path = Path(item)
    if not path.exists():
        raise DatasetNotFoundError(f"raster file {str(path)!r} does not exist; check the path given to RasterSource")
    if path.is_dir():
        raise InputShapeError(
            f"{str(path)!r} is a folder; expected a raster file (GeoTIFF/COG, NetCDF). Open a Zarr store with "
            "xarray.open_zarr and pass the Dataset"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise CorruptFileError(f"cannot read raster file {str(path)!r} ({e}); check its permissions") from e
    if not head:
        raise CorruptFileError(
            f"raster file {str(path)!r} is empty (0 bytes); it is truncated: re-download or re-export it"
        )
    engine = _netcdf_engine(path, head)
    if engine is not None:
        return _open_netcdf(path, engine)
    return _open_gdal(path)


def _netcdf_engine(path: Path, head: bytes) -> str | None:
    """The xarray engine that reads ``path`` as NetCDF (None: not NetCDF, or no engine installed: GDAL reads it)."""
    if head[:4] in _NC3_MAGIC:
        return "scipy" if importlib.util.find_spec("scipy") is not None else None
    if head == _HDF5_MAGIC and path.suffix.lower() in NETCDF_SUFFIXES:
        return "h5netcdf" if importlib.util.find_spec("h5netcdf") is not None else None
    return None


def _open_netcdf(path: Path, engine: str) -> _Opened:
    """A NetCDF file read with xarray: raw values, one variable per band, CF georeferencing."""
    ds = None
    for decode_times in (True, False):  # a time axis xarray cannot decode: read it as numbers (dates= then)
        try:
            ds = xr.open_dataset(path, engine=engine, mask_and_scale=False, cache=False, decode_times=decode_times)
            break
        except (AnySatError, MemoryError):
            raise
        except Exception as e:  # scipy/h5py raise many kinds (ValueError, OSError, TypeError...) on damaged files
            if not decode_times:
                raise _damaged(path, e, f"opening it as NetCDF (xarray, engine {engine!r})") from e
    assert ds is not None
    tags = {str(k): str(v) for k, v in ds.attrs.items()}
    op = _from_dataset(ds, str(path), tags)
    op.fix = (
        "give the band variables x/y coordinates of the cell centres and a grid_mapping variable with a crs_wkt "
        "attribute (as xarray + rioxarray write them: ds.rio.write_crs('EPSG:xxxx').to_netcdf(...))"
    )
    for ys, xs in ((slice(0, 1), slice(0, 1)), (slice(-1, None), slice(-1, None))):  # first and last cells
        try:
            np.asarray(op.da.isel(y=ys, x=xs).values)
        except CorruptFileError as e:
            raise _damaged(path, e.__cause__ or e, "reading its first and last cells") from e
    return op


def _open_gdal(path: Path) -> _Opened:
    """A raster file read with GDAL (rioxarray), checked by reading its first and last pixels."""
    try:
        with warnings.catch_warnings():  # a missing geotransform/CRS is reported by read_frames with the fix
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            obj = rioxarray.open_rasterio(path, masked=False, cache=False)  # one raster file
            with rasterio.open(path) as src:
                tags = dict(src.tags())
                desc = list(src.descriptions)
                gcps = len(src.gcps[0])
                gt = src.transform
                if src.count and src.width and src.height:  # truncated files open but fail to read
                    src.read(window=Window(0, 0, 1, 1))
                    src.read(window=Window(src.width - 1, src.height - 1, 1, 1))
    except (rasterio.errors.RasterioError, OSError, ValueError, RuntimeError) as e:
        raise _damaged(path, e, "opening it and reading its first and last pixels with GDAL") from e
    if isinstance(obj, list):  # subdatasets of different shapes (HDF/netCDF): not supported here
        raise CorruptFileError(
            f"{str(path)!r} holds several subdatasets; open the one you need with rioxarray and pass the DataArray"
        )
    netcdf = path.suffix.lower() in NETCDF_SUFFIXES
    fix = (
        "install h5netcdf (pip install h5netcdf) so that RasterSource reads the NetCDF's CF coordinates and attributes "
        "itself, or write the georeferencing with gdal_translate -a_srs EPSG:xxxx -a_ullr ulx uly lrx lry"
        if netcdf
        else "write it: gdal_translate -a_srs EPSG:xxxx -a_ullr ulx uly lrx lry in.tif out.tif"
    )
    if isinstance(obj, xr.Dataset):
        op = _from_dataset(obj, str(path), tags)
        op.fix = fix
        return op
    da = obj
    if any(desc):
        da.attrs["long_name"] = tuple(d or "" for d in desc)
    crs, transform, notes = _georef_hints(da, [da])
    from_attrs = transform is not None
    if transform is None and not gt.is_identity:
        transform = gt
    return _Opened(da, str(path), tags, crs, transform, from_attrs, notes, gcps=gcps, from_gdal=not netcdf, fix=fix)


def _fill_value(da: xr.DataArray) -> Any:
    for where in (da.attrs, da.encoding):
        for key in ("_FillValue", "missing_value", "nodata"):
            v = where.get(key)
            if v is not None and np.ndim(v) == 0:
                return v
    return None


def _from_dataset(ds: xr.Dataset, name: str, tags: dict[str, str] | None = None) -> _Opened:
    """A Dataset with one variable per band as one lazy ``([time,] band, y, x)`` DataArray named by the variables."""
    ds = _time_named(ds)
    xd, yd = _spatial_dims(ds, name)
    cands = [str(v) for v in ds.data_vars if {xd, yd} <= set(ds[v].dims)]
    if not cands:
        raise InputShapeError(
            f"{name} has no variable over its spatial dims ({yd}, {xd}) (variables: "
            f"{', '.join(f'{v} {ds[v].dims}' for v in ds.data_vars) or 'none'}); expected one variable per band"
        )
    crs, transform, notes = _georef_hints(ds, [ds[v] for v in cands])
    op = _Opened(ds[cands[0]], name, tags or {}, crs, transform, transform is not None, notes)
    extra = [d for d, n in ds[cands[0]].sizes.items() if d not in (xd, yd, "time") and n > 1]
    arrays: list[xr.DataArray] = []
    if len(cands) == 1 and len(extra) == 1:  # one multi-band variable: its bands, named by its band coordinate
        (bd,) = extra
        var = ds[cands[0]].rename({xd: "x", yd: "y"}) if (xd, yd) != ("x", "y") else ds[cands[0]]
        arrays = [
            var.isel({bd: i}, drop=True).transpose(*[d for d in ("time", "y", "x") if d in var.dims])
            for i in range(var.sizes[bd])
        ]
        band_coord = np.asarray(var[bd].values) if bd in var.coords else np.arange(1, len(arrays) + 1)
        long_name = var.attrs.get("long_name")
    else:
        for v in cands:
            var = ds[v]
            if (xd, yd) != ("x", "y"):
                var = var.rename({xd: "x", yd: "y"})
            for d in [d for d in var.dims if d not in ("x", "y", "time")]:
                if var.sizes[d] != 1:
                    raise InputShapeError(
                        f"{name}: variable {v!r} has dims {dict(var.sizes)}; with several variables each must be one "
                        f"band: (y, x), (band=1, y, x) or (time, y, x). Pass the multi-band variable alone: "
                        f"RasterSource(ds[{v!r}], ...)"
                    )
                var = var.isel({d: 0}, drop=True)
            var = var.transpose(*[d for d in ("time", "y", "x") if d in var.dims])
            if arrays and (var.dims != arrays[0].dims or var.shape != arrays[0].shape):
                raise InputShapeError(
                    f"{name}: variable {v!r} has dims {dict(var.sizes)} but {cands[0]!r} has "
                    f"{dict(arrays[0].sizes)}; all band variables must share one grid (and one time axis). Resample "
                    "them onto one grid first"
                )
            arrays.append(var)
        band_coord = np.array(cands, dtype=object)
        long_name = None
        op.strict = True  # Dataset variables are matched by name, never taken in file order
        op.alt_names = [
            [str(a.attrs[k]) for k in ("long_name", "description", "standard_name") if isinstance(a.attrs.get(k), str)]
            for a in arrays
        ]
    op.band_fills = [None if f is None else float(f) for f in map(_fill_value, arrays)]
    first = arrays[0]
    dims = ("time", "band", "y", "x") if "time" in first.dims else ("band", "y", "x")
    stack = _LazyStack(arrays, dims.index("band"), name)
    coords: dict[str, Any] = {d: first.coords[d] for d in ("time", "y", "x") if d in first.coords}
    coords["band"] = band_coord
    da = xr.DataArray(xr.Variable(dims, indexing.LazilyIndexedArray(stack)), coords=coords)
    if isinstance(long_name, (tuple, list)):
        da.attrs["long_name"] = tuple(long_name)
    op.da = da
    return op


# ------------------------------------------------------------------------------------------------ georeferencing
def _parse_crs(value: Any) -> CRS:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return CRS.from_epsg(int(value))
    if isinstance(value, str):
        value = value.strip()
        if value.isdigit():
            return CRS.from_epsg(int(value))
    return CRS.from_user_input(value)


def _short(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _crs_from_attrs(attrs: Mapping[Any, Any], where: str, notes: list[str]) -> CRS | None:
    """The CRS named by the attributes ``attrs`` (None if none); what cannot be read is added to ``notes``."""
    low = {str(k).lower(): v for k, v in attrs.items()}
    for key in _CRS_KEYS:
        v = low.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        try:
            return _parse_crs(v)
        except (rasterio.errors.CRSError, ValueError, TypeError) as e:
            notes.append(f"{where}: {key}={_short(v)} is not a CRS ({_first_line(e)})")
    if "grid_mapping_name" in low:
        try:
            import pyproj

            return CRS.from_wkt(pyproj.CRS.from_cf(dict(attrs)).to_wkt())
        except (pyproj.exceptions.CRSError, rasterio.errors.CRSError, ValueError, KeyError, TypeError) as e:
            notes.append(f"{where}: CF grid mapping {low['grid_mapping_name']!r} is incomplete ({_first_line(e)})")
    return None


def _numbers(value: Any) -> list[float] | None:
    try:
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            return [float(v) for v in re.split(r"[\s,;()\[\]|]+", value.strip()) if v]
        return [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
    except (ValueError, TypeError):
        return None


def _transform_from_attrs(attrs: Mapping[Any, Any], where: str, notes: list[str]) -> Affine | None:
    """A ``GeoTransform`` (GDAL order) or ``transform`` (affine order) attribute as an Affine (None if none)."""
    low = {str(k).lower(): v for k, v in attrs.items()}
    for key, gdal_order in (("geotransform", True), ("transform", False)):
        if key not in low:
            continue
        vals = _numbers(low[key])
        if vals is None or len(vals) not in ((6,) if gdal_order else (6, 9)) or not all(map(math.isfinite, vals)):
            notes.append(
                f"{where}: {key}={_short(low[key])} is not "
                + ("6 numbers x0 dx rx y0 ry dy (GDAL order)" if gdal_order else "6 numbers a b c d e f (affine)")
            )
            continue
        t = Affine.from_gdal(*vals[:6]) if gdal_order else Affine(*vals[:6])
        if t.is_identity:  # what GDAL writes for rasters without georeferencing
            continue
        if t.determinant == 0:
            notes.append(f"{where}: {key}={_short(low[key])} has a zero pixel size")
            continue
        return t
    return None


def _georef_hints(
    obj: xr.Dataset | xr.DataArray, bands: list[xr.DataArray]
) -> tuple[CRS | None, Affine | None, list[str]]:
    """CRS and transform from the metadata of ``obj`` (CF grid mapping variables, then attributes), with notes."""
    notes: list[str] = []
    places: list[tuple[str, Mapping[Any, Any]]] = []
    variables: Mapping[Any, Any] = obj.variables if isinstance(obj, xr.Dataset) else obj.coords
    named: list[str] = []
    for b in bands:
        gm = b.attrs.get("grid_mapping", b.encoding.get("grid_mapping"))
        if isinstance(gm, str) and gm.strip():
            g = re.split(r"[:\s]+", gm.strip())[0]
            if g in named:
                continue
            named.append(g)
            if g in variables:
                places.append((f"grid mapping variable {g!r}", variables[g].attrs))
            else:
                notes.append(f"{b.name!r} names the grid mapping variable {g!r}, which is missing")
    keys = {*_CRS_KEYS, "grid_mapping_name", "geotransform"}
    for k, v in variables.items():
        if str(k) not in named and v.ndim == 0 and keys & {str(a).lower() for a in v.attrs}:
            places.append((f"variable {str(k)!r}", v.attrs))
    places.append(("global attributes" if isinstance(obj, xr.Dataset) else "attributes", obj.attrs))
    crs = transform = None
    for where, attrs in places:
        if crs is None:
            crs = _crs_from_attrs(attrs, where, notes)
        if transform is None:
            transform = _transform_from_attrs(attrs, where, notes)
    if crs is None:
        notes.append(
            f"looked for a CRS in {', '.join(w for w, _ in places)} (attributes {', '.join(_CRS_KEYS[:6])}...)"
        )
    return crs, transform, notes


def _axis(values: np.ndarray, label: str, name: str) -> tuple[float, float | None]:
    """``(first cell centre, step)`` of 1-D coordinates (step None for one value); uneven spacing raises."""
    if values.dtype.kind not in "iuf":
        raise InputShapeError(
            f"{name}: the {label} coordinates are {values.dtype} values; expected numbers (map coordinates of the "
            "cell centres)"
        )
    v = values.astype(np.float64)
    if not np.isfinite(v).all():
        raise InputShapeError(f"{name}: the {label} coordinates hold NaN or infinite values; expected a regular grid")
    n = len(v)
    if n == 1:
        return float(v[0]), None
    step = (v[-1] - v[0]) / (n - 1)
    ulp = float(np.spacing(np.abs(values).max().astype(values.dtype))) if values.dtype.kind == "f" else 0.0
    dev = float(np.abs(v - (v[0] + step * np.arange(n))).max())
    if step == 0 or dev > max(0.01 * abs(step), 2 * ulp):
        d = np.diff(v)
        raise InputShapeError(
            f"{name}: the {label} coordinates are not evenly spaced (steps from {d.min():g} to {d.max():g}); "
            "expected a regular grid. Resample onto one first, e.g. with .rio.reproject(...) or .interp(...)"
        )
    return float(v[0]), float(step)


def _coords_transform(da: xr.DataArray, op: _Opened) -> tuple[Affine | None, bool]:
    """The transform given by 1-D x/y coordinates (None: none, or pixel-index ones) and whether they are indices."""
    if "x" not in da.coords or "y" not in da.coords:
        return None, False
    xs, ys = np.asarray(da["x"].values), np.asarray(da["y"].values)
    if xs.ndim != 1 or ys.ndim != 1:
        raise InputShapeError(
            f"{op.name} has 2-D (curvilinear) x/y coordinates; expected a regular grid with 1-D coordinates. "
            "Regrid it first (e.g. gdalwarp -geoloc, or xesmf)"
        )
    x0, sx = _axis(xs, "x", op.name)
    y0, sy = _axis(ys, "y", op.name)
    if sx is None or sy is None:
        if op.transform is not None:
            return None, False  # one row or column: the pixel size comes from the attributes
        raise InputShapeError(
            f"{op.name} is {da.sizes['y']} x {da.sizes['x']} pixels; the pixel size cannot be read from a single "
            "coordinate. Write the transform (da.rio.write_transform(Affine(...))) or give a larger raster"
        )
    t = Affine(sx, 0.0, x0 - sx / 2, 0.0, sy, y0 - sy / 2)
    if t.almost_equals(Affine.identity(), precision=1e-9):  # 0.5, 1.5, ...: GDAL found no georeferencing
        return None, True
    return t, False


def _is_lonlat(da: xr.DataArray) -> bool:
    """x/y coordinates declared in degrees (CF units or standard names)."""

    def deg(c: str, units: tuple[str, ...], std: str) -> bool:
        if c not in da.coords:
            return False
        a = da[c].attrs
        return str(a.get("units", "")).lower() in units or str(a.get("standard_name", "")).lower() == std

    return deg("x", ("degrees_east", "degree_east", "degrees_e", "degree_e"), "longitude") and deg(
        "y", ("degrees_north", "degree_north", "degrees_n", "degree_n"), "latitude"
    )


def _georef(src: RasterSource, da: xr.DataArray, op: _Opened) -> tuple[xr.DataArray, CRS, Affine]:
    """The CRS and the north-up transform of ``da`` (flipped lazily if stored south-up/east-west)."""
    name = op.name
    transform, indices = _coords_transform(da, op)
    if transform is None:
        if indices and op.transform is not None and op.transform_from_attrs:
            raise MissingCRSError(
                f"{name} has pixel-index coordinates (0.5, 1.5, ...: GDAL found no georeferencing) but its attributes "
                f"give the transform {tuple(op.transform)[:6]}; GDAL may have flipped the rows of a NetCDF it could "
                "not georeference, so the attributes cannot be applied safely. Pass the NetCDF file's path to "
                "RasterSource (it reads the CF coordinates and attributes itself) or open it with "
                "xarray.open_dataset(path) and pass that Dataset"
            )
        transform = op.transform
    crs = op.crs
    if crs is None:
        try:
            crs = da.rio.crs
        except (rioxarray.exceptions.RioXarrayError, rasterio.errors.CRSError, ValueError):
            crs = None
    if crs is None and _is_lonlat(da):
        crs = CRS.from_epsg(4326)  # CF: longitude/latitude in degrees without a grid mapping
    if crs is None and src.crs is not None:
        crs = CRS.from_user_input(src.crs)
    looked = f" ({'; '.join(op.notes)})" if op.notes else ""
    if transform is None:
        if op.gcps:
            raise MissingCRSError(
                f"{name} is georeferenced by {op.gcps} ground control points only, not by a geotransform; warp it "
                "onto a north-up grid first: gdalwarp -t_srs EPSG:xxxx in.tif out.tif (or .rio.reproject(...))"
            )
        what = "a CRS but no geotransform" if crs is not None else "no CRS and no geotransform"
        coords = (
            "no geotransform in the file"
            if op.from_gdal
            else "only pixel-index x/y coordinates 0.5, 1.5, ... (GDAL found no geotransform; for a NetCDF it did "
            "not recognise the x/y coordinate variables: pass the file's path to RasterSource, which reads them)"
            if indices
            else "no x/y coordinates of the cell centres"
        )
        raise MissingCRSError(
            f"{name} is not georeferenced: it has {what} ({coords}, no GeoTransform or transform attribute){looked}. "
            f"To fix, {op.fix or 'write its georeferencing'}; a missing CRS alone can also be given with "
            "RasterSource(..., crs='EPSG:xxxx')"
        )
    if crs is None:
        raise MissingCRSError(
            f"{name} has no coordinate reference system{looked}; write one into the file (gdal_edit.py -a_srs "
            "EPSG:xxxx; for NetCDF a grid_mapping variable with crs_wkt), call .rio.write_crs('EPSG:xxxx') on a "
            "DataArray/Dataset, or pass RasterSource(..., crs='EPSG:xxxx')"
        )
    crs = CRS.from_user_input(crs)
    if transform.b != 0 or transform.d != 0:
        raise InputShapeError(
            f"{name} has the rotated geotransform {tuple(transform)[:6]}; expected a north-up grid (no rotation). "
            "Warp it first, e.g. gdalwarp -t_srs <crs> in out or .rio.reproject(crs)"
        )
    H, W = da.sizes["y"], da.sizes["x"]
    if transform.e > 0:  # stored south-up (y increasing, common in NetCDF): read it north-up
        da = da.isel(y=slice(None, None, -1))
        transform = transform * Affine(1, 0, 0, 0, -1, H)
    if transform.a < 0:  # stored east to west
        da = da.isel(x=slice(None, None, -1))
        transform = transform * Affine(-1, 0, W, 0, 1, 0)
    a, _, c, _, e, f = tuple(transform)[:6]
    da = da.assign_coords(x=c + a * (np.arange(W) + 0.5), y=f + e * (np.arange(H) + 0.5))
    da = da.rio.write_crs(crs).rio.write_transform(transform)
    return da, crs, transform


def _time_named(obj: _XrObj) -> _XrObj:
    """``obj`` with its time dim named ``time``: a dim named t/date/times (openEO names it ``t``) or of dates."""
    if "time" in obj.dims:
        return obj
    for d in obj.sizes:
        if str(d).lower() in ("t", "date", "dates", "times") or (d in obj.coords and obj[d].dtype.kind == "M"):
            return obj.rename({d: "time"})
    return obj


def _spatial_dims(obj: xr.Dataset | xr.DataArray, name: str) -> tuple[Any, Any]:
    """The names of the ``(x, y)`` dims: rioxarray's, else by name (lon/lat...) or CF ``axis``/``standard_name``."""
    try:
        return obj.rio.x_dim, obj.rio.y_dim
    except rioxarray.exceptions.RioXarrayError:  # MissingSpatialDimensionError: look further
        pass

    def find(names: tuple[str, ...], axis: str, standard: tuple[str, ...]) -> Any:
        hits = [d for d in obj.sizes if str(d).lower() in names]
        if not hits:
            hits = [
                d
                for d in obj.sizes
                if d in obj.coords
                and (
                    str(obj[d].attrs.get("axis", "")).upper() == axis
                    or str(obj[d].attrs.get("standard_name", "")).lower() in standard
                )
            ]
        return hits[0] if len(hits) == 1 else None

    xd = find(("x", "longitude", "lon", "long", "easting"), "X", ("projection_x_coordinate", "longitude"))
    yd = find(("y", "latitude", "lat", "northing"), "Y", ("projection_y_coordinate", "latitude"))
    if xd is None or yd is None:
        raise InputShapeError(
            f"{name} has dims {dict(obj.sizes)}; expected spatial dims named x/y (or lon/lat, longitude/latitude, or "
            "marked with the CF axis attribute X/Y). Rename them, e.g. .rename({'col': 'x', 'row': 'y'})"
        )
    return xd, yd


def _standard_dims(da: xr.DataArray, name: str) -> xr.DataArray:
    """Rename spatial dims to ``y``/``x`` and order as ``([time,] band, y, x)``."""
    da = _time_named(da)
    xd, yd = _spatial_dims(da, name)
    if (xd, yd) != ("x", "y"):
        da = da.rename({xd: "x", yd: "y"})
    other = [d for d in da.dims if d not in ("x", "y")]
    if len(other) > 2 or (len(other) == 2 and set(other) != {"time", "band"}):
        raise InputShapeError(f"{name} has dims {da.dims}; expected (band, y, x), (y, x) or (time, band, y, x)")
    if len(other) == 0:
        da = da.expand_dims("band")
    elif len(other) == 1 and other[0] == "time":
        da = da.expand_dims("band", axis=1)
    elif len(other) == 1 and other[0] != "band":
        da = da.rename({other[0]: "band"})
    order = [d for d in ("time", "band") if d in da.dims] + ["y", "x"]
    return da.transpose(*order)


# ------------------------------------------------------------------------------------------------ bands
def _band_names(da: xr.DataArray) -> list[str]:
    """Names of the bands: the file's band descriptions or a string ``band`` coordinate ([] when unnamed)."""
    ln = da.attrs.get("long_name")
    n = da.sizes["band"]
    if isinstance(ln, (tuple, list)) and len(ln) == n and any(ln):
        return [str(s) for s in ln]
    if "band" in da.coords and da["band"].dtype.kind in "UO":
        return [str(v) for v in da["band"].values]
    return []


def _canonical(modality: str, names: list[str], alt: list[list[str]] | None) -> list[str | None]:
    """The registry band each band name means (else the first of its other names that means one), None where none."""
    table = _alias_table(modality)
    out: list[str | None] = []
    for i, n in enumerate(names):
        others = alt[i] if alt is not None and i < len(alt) else []
        out.append(next((table[k] for k in map(_band_key, [n, *others]) if k in table), None))
    return out


def _auto_bands(mod: Modality, names: list[str], canon: list[str | None], n: int, strict: bool, name: str) -> list[int]:
    """0-based bands for the registry order from the band names (no ``bands=``)."""
    C = mod.num_bands
    groups = [canon[k : k + C] for k in range(0, n, C)] if n % C == 0 else []
    if groups and all(sorted(g, key=str) == sorted(mod.bands) for g in groups):  # date-major groups, each all bands
        return [k * C + g.index(b) for k, g in enumerate(groups) for b in mod.bands]
    if all(canon.count(b) == 1 for b in mod.bands):  # every registry band named once: take those
        return [canon.index(b) for b in mod.bands]
    unordered = any(c is not None and c != mod.bands[i % C] for i, c in enumerate(canon))
    if not strict and not unordered:
        return list(range(n))  # unrelated or registry-ordered names: file order, checked by the band count
    kind = "variable" if strict else "band name"
    found = ", ".join(f"{nm!r}" + (f" (= {c})" if c is not None and c != nm else "") for nm, c in zip(names, canon))
    missing = [b for b in mod.bands if b not in canon]
    dup = [b for b in mod.bands if canon.count(b) > 1]
    why = "; ".join(
        [*([f"none is {', '.join(missing)}"] if missing else []), *([f"several are {', '.join(dup)}"] if dup else [])]
    )
    example = [names[canon.index(b)] if b in canon else f"<{b}>" for b in mod.bands]
    raise ChannelMismatchError(
        f"{name}: the {kind}s {found} cannot be matched to the {C} bands of {mod.name!r} ({', '.join(mod.bands)}): "
        f"{why or 'they are named in another order'}. Names are compared case-insensitively, with common aliases "
        f"({_alias_examples(mod.name)}){'; variables are never taken in file order' if strict else ''}. Select "
        f"them in the order of {mod.name!r} with RasterSource(..., bands=[...]) (names, or 1-based numbers in file "
        f"order), e.g. bands={example!r}"
    )


def _resolve_bands(src: RasterSource, da: xr.DataArray, op: _Opened) -> list[int]:
    """0-based indices of the selected bands of ``da`` (before the channel-count check)."""
    mod = MODALITIES[src.modality]
    name = op.name
    n = da.sizes["band"]
    names = _band_names(da)
    alt = op.alt_names
    if src.bands is None:
        if not names:
            return list(range(n))
        return _auto_bands(mod, names, _canonical(mod.name, names, alt), n, op.strict, name)
    idx: list[int] = []
    for b in src.bands:
        if isinstance(b, str):
            idx.append(_band_by_name(mod, b, names, alt, name, n))
        elif isinstance(b, (int, np.integer)) and not isinstance(b, bool):
            if not 1 <= int(b) <= n:
                raise ChannelMismatchError(
                    f"{name}: band number {int(b)} out of range; the raster has {n} bands numbered 1..{n} (1-based, "
                    "as in GDAL/rasterio)"
                )
            idx.append(int(b) - 1)
        else:
            raise ChannelMismatchError(f"{name}: bands entry {b!r}; expected 1-based band numbers or band names")
    return idx


def _band_by_name(mod: Modality, b: str, names: list[str], alt: list[list[str]] | None, name: str, n: int) -> int:
    """The 0-based band that the ``bands=`` entry ``b`` names: exactly, loosely (``b2`` = ``B02``) or by alias."""
    if b in names:
        return names.index(b)
    every = [[nm, *(alt[i] if alt and i < len(alt) else [])] for i, nm in enumerate(names)]
    for match in (
        lambda x: _band_key(x) == _band_key(b),
        lambda x: band_alias(mod.name, x) is not None and band_alias(mod.name, x) == band_alias(mod.name, b),
    ):
        hits = [i for i, ns in enumerate(every) if any(match(x) for x in ns)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ChannelMismatchError(
                f"{name}: band name {b!r} matches several bands ({', '.join(names[i] for i in hits)}); give the exact "
                "name or the 1-based band number in bands=[...]"
            )
    raise ChannelMismatchError(
        f"{name}: band name {b!r} not found; its bands are named {names or '(no names)'}. Select bands by name among "
        f"these or by 1-based number 1..{n} with bands=[...]"
    )


def _channel_error(mod: Modality, name: str, n: int, n_file: int) -> ChannelMismatchError:
    extra = (
        f" (or a multiple of {mod.num_bands} for a band-stacked time series, date-major, with dates=)"
        if mod.time_series
        else ""
    )
    return ChannelMismatchError(
        f"{name}: {n} band(s) selected (the raster has {n_file}) but modality {mod.name!r} expects "
        f"{mod.num_bands} bands in this order: {', '.join(mod.bands)}{extra}. Select and order them with "
        f"RasterSource(..., bands=[...]) using 1-based band numbers or band names, e.g. "
        f"bands={list(range(1, mod.num_bands + 1))}; or use the modality whose bands match "
        f"({', '.join(f'{k}: {m.num_bands}' for k, m in MODALITIES.items())})."
    )


def _nodata(src: RasterSource, da: xr.DataArray, op: _Opened, idx: list[int]) -> float | None:
    """``src.nodata``, else the raster's nodata (of the selected variables of a Dataset); None for none or NaN."""
    nodata: float | None
    if src.nodata is not None:
        nodata = src.nodata
    elif op.band_fills is not None:
        values = {v for v in (op.band_fills[i] for i in idx) if v is not None and not math.isnan(v)}
        if len(values) > 1:
            raise InputShapeError(
                f"{op.name}: the selected band variables declare different fill values {sorted(values)}; one nodata "
                "value per raster is supported. Pass it explicitly: RasterSource(..., nodata=<value>) (NaN is always "
                "missing)"
            )
        nodata = values.pop() if values else None
    else:
        nodata = da.rio.nodata
        if nodata is None:
            nodata = da.rio.encoded_nodata
    return None if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)) else float(nodata)


def read_frames(src: RasterSource) -> list[Frame]:
    """All frames of a source, with resolved bands, CRS and dates, sorted by date (time series).

    Raises:
        InputShapeError, ChannelMismatchError, MissingCRSError, DatesError, DatasetNotFoundError, CorruptFileError:
            rasters that cannot make the modality (each message says how to fix it).
    """
    mod = MODALITIES[src.modality]
    # anything but a list or tuple is one item (_open_one rejects what is not a path or an xarray object)
    items: list[RasterLike] = list(src.data) if isinstance(src.data, (list, tuple)) else [cast(RasterLike, src.data)]
    if not items:
        raise InputShapeError(f"RasterSource for {mod.name!r} has no data; give a path, a DataArray or a list of these")
    if not mod.time_series and len(items) > 1:
        raise InputShapeError(
            f"{mod.name} is a single-date modality but {len(items)} rasters were given; give one raster (mosaic "
            "tiles of one image first, e.g. with rioxarray.merge.merge_arrays)"
        )
    frames: list[Frame] = []
    for i, item in enumerate(items):
        op = _open_one(item, i)
        name, tags = op.name, op.tags
        da, crs, transform = _georef(src, _standard_dims(op.da, name), op)
        has_time = "time" in da.dims
        sub = da.isel(time=0) if has_time else da
        idx = _resolve_bands(src, sub, op)
        nodata = _nodata(src, da, op, idx)
        C = mod.num_bands
        if len(idx) == C:
            groups = [idx]
        elif mod.time_series and len(idx) % C == 0 and len(idx) > 0 and len(items) == 1 and not has_time:
            groups = [idx[k * C : (k + 1) * C] for k in range(len(idx) // C)]
        else:
            raise _channel_error(mod, name, len(idx), sub.sizes["band"])
        if has_time:
            for t in range(da.sizes["time"]):
                tv = da["time"].values[t] if "time" in da.coords else None
                d = parse_date(tv, f"{name} time[{t}]") if isinstance(tv, np.datetime64) else None
                frames.append(Frame(da.isel(time=t), idx, crs, transform, nodata, f"{name}[time={t}]", d))
        else:
            date: _dt.date | int | None = None
            if mod.time_series and len(groups) == 1 and src.dates is None:
                date = _date_from_metadata(tags, name)
            for k, g in enumerate(groups):
                fname = name if len(groups) == 1 else f"{name}[date {k + 1} of {len(groups)}]"
                frames.append(Frame(da, g, crs, transform, nodata, fname, date))
    if mod.time_series:
        _date_frames(src, mod, frames)
    return frames


def _date_frames(src: RasterSource, mod: Modality, frames: list[Frame]) -> None:
    """Give every frame of a time series its date (``src.dates`` first) and sort the frames by date, in place."""
    if src.dates is not None:
        dates = list(src.dates)
        if len(dates) != len(frames):
            raise DatesError(
                f"{mod.name}: dates= has {len(dates)} entries but the rasters hold {len(frames)} dates "
                f"({', '.join(f.name for f in frames)}); give one date per file (per date group for a band-stacked "
                "file), in the order of the rasters"
            )
        for f, d in zip(frames, dates):
            f.date = parse_date(d, f"{mod.name} dates= entry for {f.name}")
    missing = [f.name for f in frames if f.date is None]
    if missing:
        raise DatesError(
            f"{mod.name}: no acquisition date found for {', '.join(missing)} (looked for a date argument, a time "
            f"coordinate, the GeoTIFF tags {', '.join((*DATE_TAGS, TIFF_DATETIME))} and a YYYYMMDD / YYYY-MM-DD "
            "date in the file name). Pass them explicitly: RasterSource(..., dates=['2020-01-02', ...]) with one "
            "date per file (ISO strings, datetime.date or day-of-year ints)"
        )
    if len({isinstance(f.date, int) for f in frames}) > 1:
        raise DatesError(
            f"{mod.name}: dates mix calendar dates and day-of-year ints ({[f.date for f in frames]}); use one kind"
        )
    frames.sort(key=lambda f: date_sort_key(f.date))  # type: ignore[arg-type]


def _date_from_metadata(tags: dict[str, str], name: str) -> _dt.date | None:
    """Acquisition date from GeoTIFF tags or the file name (None if there is none)."""
    upper = {k.upper(): v for k, v in tags.items()}
    for key in DATE_TAGS:
        if key in upper and str(upper[key]).strip():
            d = parse_date(str(upper[key]), f"{name} tag {key} (override it with RasterSource(..., dates=[...]))")
            if not isinstance(d, int):
                return d
    named = date_from_name(Path(name).name)
    if named is not None:
        return named
    if TIFF_DATETIME in upper and str(upper[TIFF_DATETIME]).strip():
        d2 = parse_date(str(upper[TIFF_DATETIME]), f"{name} tag {TIFF_DATETIME}")
        return d2 if not isinstance(d2, int) else None
    return None
