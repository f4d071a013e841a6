"""Georeferencing: the CRS and north-up transform of a raster, and its spatial dims.

CRS and transform are read from metadata (:func:`_georef_hints`: CF ``grid_mapping`` variables, variables carrying
CRS attributes, the object's attributes), then from the x/y coordinates (:func:`_georef`, which also flips grids
stored south-up or east to west); the search order is described in :mod:`anysat_core.data.raster.sources`.
:func:`_standard_dims` names and orders the dims ``([time,] band, y, x)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import rasterio
import rasterio.errors
import rioxarray
import rioxarray.exceptions
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from anysat_core.errors import InputShapeError, MissingCRSError

if TYPE_CHECKING:
    from anysat_core.data.raster.opening import _Opened
    from anysat_core.data.raster.sources import RasterSource

_XrObj = TypeVar("_XrObj", xr.DataArray, xr.Dataset)

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


# The first line of an exception's message (also used by opening.py in its read errors).
def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


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


# ------------------------------------------------------------------------------------------------ spatial dims
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
