"""Raster sources: open files/DataArrays/Datasets lazily, standardise dims, resolve bands, date the frames.

A :class:`RasterSource` maps rasters to one modality; :func:`read_frames` turns it into :class:`Frame` objects
(one per date), each a lazily read ``(band, y, x)`` array with its CRS, transform, nodata and date.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
import rasterio.errors
import rioxarray
import rioxarray.exceptions
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from anysat_core.dates import DateLike, date_from_name, date_sort_key, parse_date
from anysat_core.errors import (
    ChannelMismatchError,
    ConfigError,
    CorruptFileError,
    DatasetNotFoundError,
    DatesError,
    InputShapeError,
    MissingCRSError,
)
from anysat_core.modalities import MODALITIES, Modality

__all__ = ["DATE_TAGS", "Frame", "RasterLike", "RasterSource", "read_frames"]

RasterLike = str | os.PathLike | xr.DataArray | xr.Dataset

#: GeoTIFF metadata keys read as the acquisition date, in order of preference (case-insensitive).
DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITIONDATE", "DATE_ACQUIRED", "SENSING_TIME", "DATETIME", "DATE")
#: The TIFF creation time: the date of last resort (often the processing date, not the acquisition).
TIFF_DATETIME = "TIFFTAG_DATETIME"


@dataclass
class RasterSource:
    """Rasters that make one modality.

    Args:
        data: a GeoTIFF/COG path, a ``rioxarray`` DataArray ``(band, y, x)``/``(y, x)``/``(time, band, y, x)``, an
            ``xr.Dataset`` (one variable per band), or a list of paths/DataArrays (one per date, time series).
        modality: a key of :data:`~anysat_core.modalities.MODALITIES` (unknown names raise
            :class:`~anysat_core.errors.UnknownModalityError`).
        bands: bands to take from each file, in ``MODALITIES[modality].bands`` order: 1-based band numbers or band
            names (see :mod:`anysat_core.data.raster`).  Default: all bands (or the registry bands, found by name).
        dates: one date per frame (time series only): see :func:`anysat_core.dates.parse_date`.  Default: read
            from metadata.
        nodata: value marking missing pixels; overrides the file's nodata.  NaN is always missing.
        resampling: a :class:`rasterio.enums.Resampling` or its name; default chosen per frame
            (see :mod:`anysat_core.data.raster`).
        crs: CRS to assume for rasters that have none (e.g. ``"EPSG:32631"``); a raster without CRS and without this
            raises :class:`~anysat_core.errors.MissingCRSError`.
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


def _open_one(item: RasterLike, index: int) -> tuple[xr.DataArray, str, dict[str, str]]:
    """Open a path lazily or take an xarray object; return ``(da, name, tags)``."""
    if isinstance(item, xr.Dataset):
        crs = item.rio.crs
        da = item.to_array(dim="band")
        if crs is not None:
            da = da.rio.write_crs(crs)
        return da, f"Dataset[{index}]", {}
    if isinstance(item, xr.DataArray):
        return item, f"DataArray[{index}]" if item.name is None else f"DataArray {item.name!r}", {}
    if not isinstance(item, (str, os.PathLike)):
        raise InputShapeError(
            f"RasterSource data item {index} is a {type(item).__name__}; expected a file path, an xarray DataArray "
            "or Dataset, or a list of these"
        )
    path = Path(item)
    if not path.exists():
        raise DatasetNotFoundError(f"raster file {str(path)!r} does not exist; check the path given to RasterSource")
    try:
        with warnings.catch_warnings():  # a missing geotransform/CRS is reported by read_frames with the fix
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            da = cast(xr.DataArray, rioxarray.open_rasterio(path, masked=False, cache=False))  # one raster file
        with rasterio.open(path) as src:
            tags = dict(src.tags())
            desc = list(src.descriptions)
    except (rasterio.errors.RasterioError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CorruptFileError(
            f"cannot read raster {str(path)!r} ({type(e).__name__}: {first}); expected a GeoTIFF/COG or another "
            "GDAL-readable raster"
        ) from e
    if isinstance(da, list):  # subdatasets (HDF/netCDF): not supported here
        raise CorruptFileError(
            f"{str(path)!r} holds several subdatasets; open the one you need with rioxarray and pass the DataArray"
        )
    if any(desc):
        da.attrs["long_name"] = tuple(d or "" for d in desc)
    return da, str(path), tags


def _standard_dims(da: xr.DataArray, name: str) -> xr.DataArray:
    """Rename spatial dims to ``y``/``x`` and order as ``([time,] band, y, x)``."""
    try:
        xd, yd = da.rio.x_dim, da.rio.y_dim
    except rioxarray.exceptions.RioXarrayError as e:  # MissingSpatialDimensionError
        raise InputShapeError(
            f"{name} has dims {da.dims}; expected spatial dims named x/y (or longitude/latitude) as rioxarray "
            "reads them"
        ) from e
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


def _band_names(da: xr.DataArray) -> list[str]:
    """Names of the bands: the file's band descriptions or a string ``band`` coordinate ([] when unnamed)."""
    ln = da.attrs.get("long_name")
    n = da.sizes["band"]
    if isinstance(ln, (tuple, list)) and len(ln) == n and any(ln):
        return [str(s) for s in ln]
    if "band" in da.coords and da["band"].dtype.kind in "UO":
        return [str(v) for v in da["band"].values]
    return []


def _resolve_bands(src: RasterSource, da: xr.DataArray, name: str) -> list[int]:
    """0-based indices of the selected bands of ``da`` (before the channel-count check)."""
    mod = MODALITIES[src.modality]
    n = da.sizes["band"]
    names = _band_names(da)
    if src.bands is None:
        if names and set(mod.bands) <= set(names) and names[: mod.num_bands] != list(mod.bands):
            return [names.index(b) for b in mod.bands]
        return list(range(n))
    idx: list[int] = []
    for b in src.bands:
        if isinstance(b, str):
            if b not in names:
                raise ChannelMismatchError(
                    f"{name}: band name {b!r} not found; its bands are named {names or '(no names)'}. Select bands by "
                    f"name among these or by 1-based number 1..{n} with bands=[...]"
                )
            idx.append(names.index(b))
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


def _georef(src: RasterSource, da: xr.DataArray, name: str) -> tuple[xr.DataArray, CRS, Affine]:
    """The CRS (``src.crs`` when the raster has none) and the north-up transform of ``da``."""
    crs = da.rio.crs
    if crs is None and src.crs is not None:
        crs = CRS.from_user_input(src.crs)
        da = da.rio.write_crs(crs)
    if crs is None:
        raise MissingCRSError(
            f"{name} has no coordinate reference system; write one into the file (gdal_edit.py -a_srs EPSG:xxxx), "
            "call .rio.write_crs('EPSG:xxxx') on a DataArray, or pass RasterSource(..., crs='EPSG:xxxx')"
        )
    crs = CRS.from_user_input(crs)
    transform = da.rio.transform(recalc=True) if da.sizes["x"] > 1 and da.sizes["y"] > 1 else da.rio.transform()
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise InputShapeError(
            f"{name} has the geotransform {tuple(transform)[:6]}; expected a north-up grid (no rotation, x to the "
            "east, y to the north). Warp it first, e.g. gdalwarp or .rio.reproject(crs)"
        )
    return da, crs, transform


def _nodata(src: RasterSource, da: xr.DataArray) -> float | None:
    """``src.nodata``, else the raster's nodata; None for none or NaN (NaN is always missing)."""
    nodata = src.nodata if src.nodata is not None else da.rio.nodata
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
        da, name, tags = _open_one(item, i)
        da, crs, transform = _georef(src, _standard_dims(da, name), name)
        nodata = _nodata(src, da)
        has_time = "time" in da.dims
        sub = da.isel(time=0) if has_time else da
        idx = _resolve_bands(src, sub, name)
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
