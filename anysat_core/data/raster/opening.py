"""Opening rasters: paths (GeoTIFF/COG and other GDAL rasters, NetCDF), DataArrays and Datasets.

:func:`_open_one` gives an :class:`_Opened` record: the raster as one lazy DataArray, its name, metadata tags and
the georeferencing found in its metadata.  A Dataset with one variable per band is stacked lazily
(:class:`_LazyStack`: a window read reads only that window of each variable).  Files that exist but cannot be read
raise :class:`~anysat_core.errors.CorruptFileError`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from xarray.backends import BackendArray
from xarray.core import indexing

from anysat_core.data.raster.georef import _first_line, _georef_hints, _spatial_dims, _time_named
from anysat_core.errors import AnySatError, CorruptFileError, DatasetNotFoundError, InputShapeError

__all__ = ["NETCDF_SUFFIXES", "RasterLike"]

RasterLike = str | os.PathLike | xr.DataArray | xr.Dataset

#: File suffixes read as NetCDF (with xarray) when the file starts with a NetCDF-3 or HDF5 signature.
NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")
_NC3_MAGIC = (b"CDF\x01", b"CDF\x02")  # classic and 64-bit offset (scipy); CDF-5 goes to GDAL
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: GDAL colour interpretations that ``RasterSource(bands=["R", "G", "B"])`` finds (see ``_Opened.colours``)
_COLOURS = ("red", "green", "blue", "alpha")


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
    # GDAL colour interpretation of each band (red/green/blue/alpha, "" otherwise): found by bands=["R", ...] only,
    # never used to order bands by itself (GDAL gives 3-4 band byte files RGB(A) by default, e.g. NIR,G,B,R aerials)
    colours: list[str] | None = None


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
                interp = [ci.name for ci in src.colorinterp]
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
    op = _Opened(da, str(path), tags, crs, transform, from_attrs, notes, gcps=gcps, from_gdal=not netcdf, fix=fix)
    if any(c in _COLOURS for c in interp):
        op.colours = [c if c in _COLOURS else "" for c in interp]
    return op


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
