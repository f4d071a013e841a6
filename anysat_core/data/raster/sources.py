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

The work is split by concern: :mod:`~anysat_core.data.raster.opening` (paths and xarray objects to one lazy array),
:mod:`~anysat_core.data.raster.georef` (CRS, transform and spatial dims), :mod:`~anysat_core.data.raster.bands`
(band names and aliases, band selection); this module holds :class:`RasterSource`, :class:`Frame`,
:func:`read_frames` and the dates.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
import rasterio.errors
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from anysat_core.data.raster.bands import _channel_error, _resolve_bands, band_alias
from anysat_core.data.raster.georef import _georef, _standard_dims
from anysat_core.data.raster.opening import NETCDF_SUFFIXES, RasterLike, _open_one, _Opened
from anysat_core.dates import DateLike, date_from_name, date_sort_key, parse_date
from anysat_core.errors import ConfigError, DatesError, InputShapeError
from anysat_core.modalities import MODALITIES, Modality

__all__ = ["DATE_TAGS", "NETCDF_SUFFIXES", "Frame", "RasterLike", "RasterSource", "band_alias", "read_frames"]

#: GeoTIFF metadata keys read as the acquisition date, in order of preference (case-insensitive).
DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITIONDATE", "DATE_ACQUIRED", "SENSING_TIME", "DATETIME", "DATE")
#: The TIFF creation time: the date of last resort (often the processing date, not the acquisition).
TIFF_DATETIME = "TIFFTAG_DATETIME"


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
        if self.resampling is not None:
            try:
                if isinstance(self.resampling, str):
                    self.resampling = Resampling[self.resampling]
                elif not isinstance(self.resampling, bool):
                    self.resampling = Resampling(self.resampling)
                else:
                    raise TypeError(self.resampling)
            except (KeyError, ValueError, TypeError):
                raise ConfigError(
                    f"resampling={self.resampling!r} for {self.modality}; expected one of "
                    f"{', '.join(r.name for r in Resampling)} (a name or a rasterio.enums.Resampling)"
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


# ------------------------------------------------------------------------------------------------ frames
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


# ------------------------------------------------------------------------------------------------ dates
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
