"""Your own rasters as AnySat input: GeoTIFF/COG files or rioxarray objects cut into aligned square tiles.

Map each raster (or each list of dated rasters) to a modality with :class:`RasterSource`, then
:func:`open_rasters` aligns all of them on one grid family and cuts the common extent into square tiles::

    scene = open_rasters(
        [
            RasterSource(["s2_20200102.tif", "s2_20200315.tif"], modality="s2"),
            RasterSource("s1_stack.tif", modality="s1-asc", dates=["2020-01-05", "2020-03-10"]),
        ],
        tile_m=120,
    )
    batch = collate(list(scene.tiles()))
    feats = model(batch, patch_size=40, output="patch")           # (B, 3, 3, D)
    xs, ys = tile_cell_coords(batch["meta"][0], feats.shape[1:3])  # map coordinates of the 3 x 3 patches

**Bands.** ``bands`` selects and orders the bands of each file: 1-based band numbers (as in GDAL, rasterio and
the ``band`` coordinate of ``rioxarray.open_rasterio``) or band names (the file's band descriptions, or the
``band`` coordinate / variable names of an xarray object).  After selection a file must have exactly
``MODALITIES[m].num_bands`` bands in ``MODALITIES[m].bands`` order.  Without ``bands``, files whose band
descriptions name all the registry bands are reordered (and reduced) to the registry order automatically.

**Time series.** A time-series modality is given either as

* several files (or DataArrays), one per date;
* one DataArray with a ``time`` dimension ``(time, band, y, x)``;
* one file whose bands are stacked **date-major**: ``T * C`` bands, all ``C`` bands of the first date, then all
  bands of the second date...  (``dates=`` with ``T`` entries is then required).

Dates are, in this order of precedence: ``dates=`` (ISO strings ``"2020-01-02"``/``"20200102"``,
:class:`datetime.date`/``datetime``/``numpy.datetime64``, or ints taken as day of year 1..366); a ``time``
coordinate; an acquisition-date tag of the GeoTIFF (``ACQUISITION_DATE``, ``DATE_ACQUIRED``,
``SENSING_TIME``, ``DATETIME``, ``DATE``); a date in the file name (``20200102`` or ``2020-01-02``); and last
``TIFFTAG_DATETIME`` (last because the TIFF standard defines it as the file's creation time, which is often the
processing date).  Frames are sorted chronologically and become ``<mod>_dates`` as day of year (``tm_yday``,
1..366), as the AnySat loaders do.

**Alignment.** All rasters are warped with ``rioxarray``'s ``rio.reproject`` onto one grid family:

* reference CRS: ``crs=`` of :func:`open_rasters` (must be projected, in metres) or the first source's CRS; when that
  one is geographic (degrees) or not in metres, the UTM zone of its centre is used instead;
* common extent: the intersection of all sources' bounds (in the reference CRS), shrunk inwards to whole
  multiples of the grid unit ``u`` = least common multiple of the GSDs of the modalities (10 m for s2 + s1), so
  that the extent is a whole number of pixels of every modality and every grid shares the origin;
* each modality gets pixels of its registry GSD (``MODALITIES[m].gsd_m``) on that origin;
* resampling: ``average`` when the source pixels are clearly finer than the target GSD, ``bilinear`` otherwise
  (override per source with ``resampling=``); MODIS uses ``nearest``.

**MODIS** (one 250 m pixel per tile): each tile gets the value of the MODIS pixel that contains the tile centre
(nearest-neighbour sampling of a grid with one ``tile_m`` pixel per tile).

**Tiling.** The common extent is cut into ``tile_m`` squares from its top-left corner; tiles on the right and
bottom edges extend beyond the data, and their padded pixels hold 0 with ``<mod>_mask`` False.  nodata pixels
(the file's nodata value, ``nodata=``, or NaN) are never silently zero: they are False in ``<mod>_mask`` (same
shape as the data).  A tile with no valid pixel in any gridded modality is skipped by :meth:`RasterScene.tiles`
and indexing; asking for it with :meth:`RasterScene.tile` raises :class:`EmptyTileError`.

Values are returned raw (file units, float32); normalise them with :mod:`anysat_core.data.normalize`.
Reading is lazy: files are opened with ``rioxarray.open_rasterio`` and each tile reads only the window it needs.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np
import rasterio
import rasterio.errors
import rioxarray
import torch
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from anysat_core.data.sample import GeoInfo, Sample
from anysat_core.dates import DateLike, date_from_name, date_sort_key, day_of_year, parse_date
from anysat_core.errors import (
    ChannelMismatchError,
    ConfigError,
    CorruptFileError,
    DatasetNotFoundError,
    DatesError,
    EmptyTileError,
    ExtentMismatchError,
    InputShapeError,
    MissingCRSError,
    PatchSizeError,
)
from anysat_core.modalities import MODALITIES, Modality

__all__ = ["RasterScene", "RasterSource", "SceneGrid", "open_rasters", "tile_cell_coords"]

log = logging.getLogger(__name__)

RasterLike = Union[str, os.PathLike, xr.DataArray, xr.Dataset]

#: GeoTIFF metadata keys read as the acquisition date, in order of preference (case-insensitive).
DATE_TAGS = ("ACQUISITION_DATE", "ACQUISITIONDATE", "DATE_ACQUIRED", "SENSING_TIME", "DATETIME", "DATE")
_TIFF_DATETIME = "TIFFTAG_DATETIME"
_EPS = 1e-6


# ----------------------------------------------------------------------------------------------- sources
@dataclass
class RasterSource:
    """Rasters that make one modality.

    Args:
        data: a GeoTIFF/COG path, a ``rioxarray`` DataArray ``(band, y, x)``/``(y, x)``/``(time, band, y, x)``, an
            ``xr.Dataset`` (one variable per band), or a list of paths/DataArrays (one per date, time series).
        modality: a key of :data:`~anysat_core.modalities.MODALITIES` (unknown names raise
            :class:`~anysat_core.errors.UnknownModalityError`).
        bands: bands to take from each file, in ``MODALITIES[modality].bands`` order: 1-based band numbers or band
            names (see the module docstring).  Default: all bands (or the registry bands, found by name).
        dates: one date per frame (time series only): see :func:`parse_date`.  Default: read from metadata.
        nodata: value marking missing pixels; overrides the file's nodata.  NaN is always missing.
        resampling: a :class:`rasterio.enums.Resampling` or its name; default chosen per frame (module docstring).
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
        self._mod: Modality = MODALITIES[self.modality]  # UnknownModalityError for unknown names
        if self.dates is not None and not self._mod.time_series:
            raise DatesError(
                f"{self.modality} is a single-date modality; remove dates= from its RasterSource "
                "(only time series take dates)"
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
class _Frame:
    """One date of one source: a lazily read ``(band, y, x)`` array and the bands that make the modality."""

    da: xr.DataArray
    band_idx: list[int]  # 0-based, len C
    crs: CRS
    transform: Affine
    nodata: float | None
    name: str
    date: _dt.date | int | None = None


def _open_one(item: RasterLike, index: int) -> tuple[xr.DataArray, str, dict[str, str]]:
    """Open a path lazily or normalise an xarray object; return ``(da, name, tags)`` with spatial dims last."""
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
        with warnings.catch_warnings():  # a missing geotransform/CRS is reported by _frames_of with the fix
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            da = rioxarray.open_rasterio(path, masked=False, cache=False)
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
    except Exception as e:  # rioxarray raises MissingSpatialDimensionError
        raise InputShapeError(
            f"{name} has dims {da.dims}; expected spatial dims named x/y (or longitude/latitude) as rioxarray "
            "reads them"
        ) from e
    if (xd, yd) != ("x", "y"):
        da = da.rename({xd: "x", yd: "y"})
    other = [d for d in da.dims if d not in ("x", "y")]
    if len(other) == 0:
        da = da.expand_dims("band")
    elif len(other) == 1 and other[0] != "band":
        if other[0] == "time":
            da = da.expand_dims("band", axis=1)
        else:
            da = da.rename({other[0]: "band"})
    elif len(other) == 2 and set(other) != {"time", "band"}:
        raise InputShapeError(f"{name} has dims {da.dims}; expected (band, y, x), (y, x) or (time, band, y, x)")
    elif len(other) > 2:
        raise InputShapeError(f"{name} has dims {da.dims}; expected (band, y, x), (y, x) or (time, band, y, x)")
    order = [d for d in ("time", "band") if d in da.dims] + ["y", "x"]
    return da.transpose(*order)


def _band_names(da: xr.DataArray) -> list[str]:
    ln = da.attrs.get("long_name")
    n = da.sizes["band"]
    if isinstance(ln, (tuple, list)) and len(ln) == n and any(ln):
        return [str(s) for s in ln]
    if "band" in da.coords and da["band"].dtype.kind in "UO":
        return [str(v) for v in da["band"].values]
    return []


def _resolve_bands(src: RasterSource, da: xr.DataArray, name: str) -> list[int]:
    """0-based indices of the selected bands of ``da`` (before the channel-count check)."""
    mod = src._mod
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


def _channel_error(src: RasterSource, name: str, n: int, n_file: int) -> ChannelMismatchError:
    mod = src._mod
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


def _frames_of(src: RasterSource) -> list[_Frame]:
    """All frames of a source, with resolved bands, CRS and dates, sorted by date (time series)."""
    mod = src._mod
    items = list(src.data) if isinstance(src.data, (list, tuple)) else [src.data]
    if not items:
        raise InputShapeError(f"RasterSource for {mod.name!r} has no data; give a path, a DataArray or a list of these")
    if not mod.time_series and len(items) > 1:
        raise InputShapeError(
            f"{mod.name} is a single-date modality but {len(items)} rasters were given; give one raster (mosaic "
            "tiles of one image first, e.g. with rioxarray.merge.merge_arrays)"
        )
    frames: list[_Frame] = []
    for i, item in enumerate(items):
        da, name, tags = _open_one(item, i)
        da = _standard_dims(da, name)
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
        nodata = src.nodata if src.nodata is not None else da.rio.nodata
        if nodata is None:
            nodata = da.rio.encoded_nodata
        nodata = None if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)) else float(nodata)
        has_time = "time" in da.dims
        sub = da.isel(time=0) if has_time else da
        idx = _resolve_bands(src, sub, name)
        C = mod.num_bands
        if len(idx) == C:
            groups = [idx]
        elif mod.time_series and len(idx) % C == 0 and len(idx) > 0 and len(items) == 1 and not has_time:
            groups = [idx[k * C : (k + 1) * C] for k in range(len(idx) // C)]
        else:
            raise _channel_error(src, name, len(idx), sub.sizes["band"])
        if has_time:
            for t in range(da.sizes["time"]):
                tv = da["time"].values[t] if "time" in da.coords else None
                d = parse_date(tv, f"{name} time[{t}]") if isinstance(tv, np.datetime64) else None
                frames.append(_Frame(da.isel(time=t), idx, crs, transform, nodata, f"{name}[time={t}]", d))
        else:
            date: _dt.date | int | None = None
            if mod.time_series and len(groups) == 1 and src.dates is None:
                date = _date_from_metadata(tags, name)
            for k, g in enumerate(groups):
                fname = name if len(groups) == 1 else f"{name}[date {k + 1} of {len(groups)}]"
                frames.append(_Frame(da, g, crs, transform, nodata, fname, date))
    if mod.time_series:
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
                f"coordinate, the GeoTIFF tags {', '.join(DATE_TAGS + (_TIFF_DATETIME,))} and a YYYYMMDD / YYYY-MM-DD "
                "date in the file name). Pass them explicitly: RasterSource(..., dates=['2020-01-02', ...]) with one "
                "date per file (ISO strings, datetime.date or day-of-year ints)"
            )
        kinds = {isinstance(f.date, int) for f in frames}
        if len(kinds) > 1:
            raise DatesError(
                f"{mod.name}: dates mix calendar dates and day-of-year ints ({[f.date for f in frames]}); use one kind"
            )
        frames.sort(key=lambda f: date_sort_key(f.date))  # type: ignore[arg-type]
    return frames


def _date_from_metadata(tags: dict[str, str], name: str) -> _dt.date | None:
    """Acquisition date from GeoTIFF tags or the file name (None if there is none)."""
    upper = {k.upper(): v for k, v in tags.items()}
    for key in DATE_TAGS:
        if key in upper and str(upper[key]).strip():
            d = parse_date(str(upper[key]), f"{name} tag {key} (override it with RasterSource(..., dates=[...]))")
            if not isinstance(d, int):
                return d
    d = date_from_name(Path(name).name)
    if d is not None:
        return d
    if _TIFF_DATETIME in upper and str(upper[_TIFF_DATETIME]).strip():
        d2 = parse_date(str(upper[_TIFF_DATETIME]), f"{name} tag {_TIFF_DATETIME}")
        return d2 if not isinstance(d2, int) else None
    return None


# ----------------------------------------------------------------------------------------------- grid
def _frac(x: float) -> Fraction:
    return Fraction(str(float(x))).limit_denominator(10_000)


def _lcm(values: Sequence[float]) -> float:
    fr = [_frac(v) for v in values]
    num = math.lcm(*(f.numerator for f in fr))
    den = math.gcd(*(f.denominator for f in fr))
    return float(Fraction(num, den))


def _is_multiple(x: float, unit: float) -> bool:
    q = x / unit
    return q >= 1 - _EPS and abs(q - round(q)) < _EPS


@dataclass(frozen=True)
class SceneGrid:
    """The tile grid of a scene (all lengths in metres of the reference CRS).

    Attributes:
        crs: reference CRS string (``"EPSG:32631"``).
        data_bounds: ``(left, bottom, right, top)`` of the common extent, snapped to whole multiples of ``unit``.
        unit: least common multiple of the gridded modalities' GSDs; every tile is a whole number of pixels of each.
        tile_m: side of a tile.
        n_rows, n_cols: tile rows (top to bottom) and columns (left to right).
        gsd_m: ``{modality: pixel size}`` of each modality grid (MODIS: ``tile_m``, one pixel per tile).
        tile_px: ``{modality: pixels per tile side}``.
    """

    crs: str
    data_bounds: tuple[float, float, float, float]
    unit: float
    tile_m: float
    n_rows: int
    n_cols: int
    gsd_m: dict[str, float] = field(default_factory=dict)
    tile_px: dict[str, int] = field(default_factory=dict)

    @property
    def origin(self) -> tuple[float, float]:
        """``(x, y)`` of the top-left corner shared by every grid."""
        return (self.data_bounds[0], self.data_bounds[3])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of all tiles, padding included."""
        x0, y0 = self.origin
        return (x0, y0 - self.n_rows * self.tile_m, x0 + self.n_cols * self.tile_m, y0)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)``."""
        return (self.n_rows, self.n_cols)

    def tile_bounds(self, row: int, col: int) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of tile ``(row, col)``."""
        x0, y0 = self.origin
        left, top = x0 + col * self.tile_m, y0 - row * self.tile_m
        return (left, top - self.tile_m, left + self.tile_m, top)

    def transform(self, modality: str, row: int = 0, col: int = 0) -> Affine:
        """Affine transform of ``modality``'s pixel grid on tile ``(row, col)`` (``(0, 0)``: the whole scene)."""
        left, _, _, top = self.tile_bounds(row, col)
        g = self.gsd_m[modality]
        return Affine(g, 0.0, left, 0.0, -g, top)


def _reference_crs(crs: Any, frames: list[_Frame]) -> CRS:
    if crs is not None:
        try:
            ref = CRS.from_user_input(crs)
        except rasterio.errors.CRSError as e:
            raise ConfigError(f"crs={crs!r} is not a valid CRS ({e}); give e.g. 'EPSG:32631'") from e
        if not ref.is_projected or (ref.linear_units or "").lower() not in ("metre", "meter", "m"):
            raise ConfigError(
                f"crs={crs!r} is not a projected CRS in metres; AnySat grids are in metres (GSDs from the registry). "
                "Give a UTM or other metric CRS, e.g. 'EPSG:326xx', or leave crs=None"
            )
        return ref
    first = frames[0]
    ref = first.crs
    if ref.is_projected and (ref.linear_units or "").lower() in ("metre", "meter", "m"):
        return ref
    utm = first.da.rio.estimate_utm_crs()
    log.info("reference CRS %s of %s is not metric; using %s", ref.to_string(), first.name, utm.to_string())
    return CRS.from_user_input(utm)


def _frame_bounds(f: _Frame, dst: CRS) -> tuple[float, float, float, float]:
    h, w = f.da.sizes["y"], f.da.sizes["x"]
    xs = (f.transform.c, f.transform.c + f.transform.a * w)
    ys = (f.transform.f, f.transform.f + f.transform.e * h)
    b = (min(xs), min(ys), max(xs), max(ys))
    return b if f.crs == dst else transform_bounds(f.crs, dst, *b, densify_pts=21)


# ----------------------------------------------------------------------------------------------- reading
def _make_da(values: np.ndarray, transform: Affine, crs: CRS) -> xr.DataArray:
    """A ``(band, y, x)`` float32 DataArray with NaN nodata, coordinates at pixel centres."""
    _, h, w = values.shape
    xs = transform.c + transform.a * (np.arange(w) + 0.5)
    ys = transform.f + transform.e * (np.arange(h) + 0.5)
    coords = {"band": np.arange(1, values.shape[0] + 1), "y": ys, "x": xs}
    da = xr.DataArray(values, dims=("band", "y", "x"), coords=coords)
    da = da.rio.write_crs(crs).rio.write_transform(transform).rio.write_nodata(np.nan, encoded=False)
    return da


def _read_frame(f: _Frame, dst_crs: CRS, dst: Affine, shape: tuple[int, int], resampling: Resampling) -> np.ndarray:
    """Warp the part of frame ``f`` under the grid ``(dst, shape)``: ``(C, h, w)`` float32, NaN where no data."""
    h, w = shape
    C = len(f.band_idx)
    left, top = dst.c, dst.f
    right, bottom = left + dst.a * w, top + dst.e * h
    sb = (left, bottom, right, top)
    if f.crs != dst_crs:
        sb = transform_bounds(dst_crs, f.crs, *sb, densify_pts=21)
    inv = ~f.transform
    cols, rows = zip(*(inv @ (x, y) for x in (sb[0], sb[2]) for y in (sb[1], sb[3])))
    H, W = f.da.sizes["y"], f.da.sizes["x"]
    margin = 2  # source pixels around the window, so bilinear/average see their neighbours
    c0, c1 = max(0, math.floor(min(cols)) - margin), min(W, math.ceil(max(cols)) + margin)
    r0, r1 = max(0, math.floor(min(rows)) - margin), min(H, math.ceil(max(rows)) + margin)
    out = np.full((C, h, w), np.nan, dtype=np.float32)
    if c0 >= c1 or r0 >= r1:
        return out
    try:
        raw = np.asarray(f.da.isel(band=f.band_idx, y=slice(r0, r1), x=slice(c0, c1)).values)
    except (rasterio.errors.RasterioError, OSError) as e:
        raise CorruptFileError(
            f"cannot read a window of {f.name!r} ({type(e).__name__}: {e}); the file may be truncated"
        ) from e
    vals = raw.astype(np.float32)
    invalid = ~np.isfinite(vals)
    if f.nodata is not None:
        if np.issubdtype(raw.dtype, np.floating):
            invalid |= raw == raw.dtype.type(f.nodata)
        else:  # integers (and bools): compare exactly in float64, so an out-of-range nodata never wraps around
            invalid |= raw.astype(np.float64) == f.nodata
    vals[invalid] = np.nan
    src = _make_da(vals, f.transform @ Affine.translation(c0, r0), f.crs)
    warped = src.rio.reproject(dst_crs, transform=dst, shape=(h, w), resampling=resampling, nodata=np.nan)
    out[:] = np.asarray(warped.values, dtype=np.float32)
    return out


# ----------------------------------------------------------------------------------------------- scene
@dataclass
class _ModState:
    source: RasterSource
    frames: list[_Frame]
    resampling: list[Resampling]


class RasterScene:
    """Aligned modalities over a common extent, cut into square tiles (see the module docstring).

    ``len(scene)`` and ``scene[i]`` count only non-empty tiles, in row-major order; finding them reads the
    scene once (cached).  :meth:`tiles` streams them; :meth:`tile` reads any ``(row, col)``.
    """

    def __init__(self, mods: dict[str, _ModState], grid: SceneGrid, crs: CRS) -> None:
        self._mods = mods
        self.grid = grid
        self.crs = crs
        self._valid: list[tuple[int, int]] | None = None

    def with_grid(self, grid: SceneGrid) -> RasterScene:
        """The same aligned sources cut along another grid (e.g. overlapping inference windows)."""
        return RasterScene(self._mods, grid, self.crs)

    @property
    def modalities(self) -> list[str]:
        """Modality names, in the order of the sources."""
        return list(self._mods)

    @property
    def dates(self) -> dict[str, torch.Tensor]:
        """``{modality: (T,) int64 day of year}`` of every time series."""
        return {
            m: torch.tensor([day_of_year(f.date) for f in st.frames], dtype=torch.int64)  # type: ignore[arg-type]
            for m, st in self._mods.items()
            if st.source._mod.time_series
        }

    def __repr__(self) -> str:
        g = self.grid
        return (
            f"RasterScene({', '.join(self.modalities)}; {g.n_rows} x {g.n_cols} tiles of {g.tile_m:g} m in {g.crs}, "
            f"data bounds {tuple(round(v, 3) for v in g.data_bounds)})"
        )

    def _inside_mask(self, mod: str, row: int, col: int, shape: tuple[int, int]) -> np.ndarray:
        """``(h, w)`` True where the pixel centre lies inside the common data extent."""
        t = self.grid.transform(mod, row, col)
        h, w = shape
        xs = t.c + t.a * (np.arange(w) + 0.5)
        ys = t.f + t.e * (np.arange(h) + 0.5)
        left, bottom, right, top = self.grid.data_bounds
        return ((ys > bottom) & (ys < top))[:, None] & ((xs > left) & (xs < right))[None, :]

    def _read(self, row: int, col: int) -> tuple[Sample, bool]:
        g = self.grid
        if not (0 <= row < g.n_rows and 0 <= col < g.n_cols):
            raise IndexError(f"tile ({row}, {col}) is outside the {g.n_rows} x {g.n_cols} tile grid")
        sample: Sample = {}
        any_valid = False
        grids: dict[str, Any] = {}
        iso_dates: dict[str, list[str]] = {}
        for m, st in self._mods.items():
            mod = st.source._mod
            px = g.tile_px[m]
            t = g.transform(m, row, col)
            arrs = [_read_frame(f, self.crs, t, (px, px), r) for f, r in zip(st.frames, st.resampling)]
            data = np.stack(arrs) if mod.time_series else arrs[0]  # (T, C, h, w) or (C, h, w)
            valid = np.isfinite(data)
            if not mod.tile_token:
                valid &= self._inside_mask(m, row, col, (px, px))
                any_valid |= bool(valid.any())
            data = np.where(valid, data, 0.0).astype(np.float32)
            sample[m] = torch.from_numpy(data)
            if mod.time_series:
                doys = [day_of_year(f.date) for f in st.frames]  # type: ignore[arg-type]
                sample[f"{m}_dates"] = torch.tensor(doys, dtype=torch.int64)
                iso_dates[m] = [f.date.isoformat() if isinstance(f.date, _dt.date) else str(f.date) for f in st.frames]
            sample[f"{m}_mask"] = torch.from_numpy(valid)
            grids[m] = {"transform": tuple(t)[:6], "shape": (px, px), "gsd_m": g.gsd_m[m]}
        ref = min((m for m in self._mods if not MODALITIES[m].tile_token), key=lambda m: g.gsd_m[m])
        sample["meta"] = GeoInfo(
            dataset="raster",
            tile_id=f"r{row:04d}_c{col:04d}",
            crs=g.crs,
            transform=grids[ref]["transform"],
            gsd_m=g.gsd_m[ref],
            shape=grids[ref]["shape"],
            extra={
                "row": row,
                "col": col,
                "bounds": g.tile_bounds(row, col),
                "dates": iso_dates,
                "sources": {m: [f.name for f in st.frames] for m, st in self._mods.items()},
                "grids": grids,
            },
        )
        return sample, any_valid

    def tile(self, row: int, col: int) -> Sample:
        """The sample of tile ``(row, col)``.

        Raises:
            IndexError: outside the grid.
            EmptyTileError: the tile has no valid pixel in any gridded modality.
        """
        sample, ok = self._read(row, col)
        if not ok:
            raise EmptyTileError(
                f"tile ({row}, {col}) with bounds {self.grid.tile_bounds(row, col)} in {self.grid.crs} has no valid "
                f"pixel in {', '.join(m for m in self._mods if not MODALITIES[m].tile_token)} (all nodata or outside "
                "the data); pick another tile (scene.tiles() skips empty ones) or check nodata="
            )
        return sample

    def tiles(self, skip_empty: bool = True) -> Iterator[Sample]:
        """Samples of all tiles in row-major order; empty tiles are skipped unless ``skip_empty=False``."""
        for r in range(self.grid.n_rows):
            for c in range(self.grid.n_cols):
                sample, ok = self._read(r, c)
                if ok or not skip_empty:
                    yield sample

    def _index(self) -> list[tuple[int, int]]:
        if self._valid is None:
            self._valid = [
                (r, c) for r in range(self.grid.n_rows) for c in range(self.grid.n_cols) if self._read(r, c)[1]
            ]
        return self._valid

    def __len__(self) -> int:
        return len(self._index())

    def __getitem__(self, i: int) -> Sample:
        idx = self._index()
        if not -len(idx) <= i < len(idx):
            raise IndexError(f"tile index {i} out of range; the scene has {len(idx)} non-empty tiles")
        return self.tile(*idx[i])


def open_rasters(
    sources: RasterSource | Sequence[RasterSource],
    *,
    tile_m: float,
    crs: Any = None,
    patch_m: float | None = None,
) -> RasterScene:
    """Align ``sources`` on one grid family and cut their common extent into ``tile_m`` tiles.

    Args:
        sources: one :class:`RasterSource` per modality.
        tile_m: tile side in metres: a multiple of every gridded modality's GSD, of their patch step
            (``MODALITIES[m].patch_step_m``) and of ``patch_m`` if given.
        crs: reference CRS (projected, metres); default the first source's (its UTM zone if it is geographic).
        patch_m: the patch size you will run the model with, to check that it divides ``tile_m``.

    Raises:
        UnknownModalityError, ChannelMismatchError, MissingCRSError, DatesError: bad sources.
        ExtentMismatchError: the sources do not overlap (by at least one grid unit).
        PatchSizeError: ``tile_m``/``patch_m`` do not fit the modalities.
        ConfigError: a non-metric ``crs``.
    """
    srcs = [sources] if isinstance(sources, RasterSource) else list(sources)
    if not srcs:
        raise InputShapeError("open_rasters got no sources; give at least one RasterSource")
    seen: set[str] = set()
    for s in srcs:
        if not isinstance(s, RasterSource):
            raise InputShapeError(f"open_rasters got a {type(s).__name__}; expected RasterSource objects")
        if s.modality in seen:
            raise InputShapeError(
                f"modality {s.modality!r} is given by two RasterSources; put all its rasters in one RasterSource "
                "(a list of files, one per date)"
            )
        seen.add(s.modality)
    gridded = [s.modality for s in srcs if not s._mod.tile_token]
    if not gridded:
        raise InputShapeError("only MODIS was given; it has one pixel per tile and cannot define tiles. Add e.g. s2")

    frames = {s.modality: _frames_of(s) for s in srcs}
    ref = _reference_crs(crs, frames[srcs[0].modality])

    # common extent: intersection of every frame's bounds in the reference CRS
    boxes = {f.name: _frame_bounds(f, ref) for fs in frames.values() for f in fs}
    left = max(b[0] for b in boxes.values())
    bottom = max(b[1] for b in boxes.values())
    right = min(b[2] for b in boxes.values())
    top = min(b[3] for b in boxes.values())
    unit = _lcm([MODALITIES[m].gsd_m for m in gridded])
    sl, sr = math.ceil(left / unit - _EPS) * unit, math.floor(right / unit + _EPS) * unit
    sb, st = math.ceil(bottom / unit - _EPS) * unit, math.floor(top / unit + _EPS) * unit
    if sr - sl < unit - _EPS or st - sb < unit - _EPS:
        detail = "; ".join(f"{n}: {tuple(round(v, 2) for v in b)}" for n, b in boxes.items())
        raise ExtentMismatchError(
            f"the rasters do not overlap by at least {unit:g} m in {ref.to_string()} (bounds left, bottom, right, top: "
            f"{detail}); give rasters that cover a common area (check their CRS and coordinates)"
        )

    # tile size
    step = math.lcm(*(MODALITIES[m].patch_step_m for m in gridded))
    need = _lcm([unit, float(step)] + ([float(patch_m)] if patch_m else []))
    if patch_m is not None and not (patch_m > 0 and _is_multiple(patch_m, step)):
        raise PatchSizeError(f"patch_m={patch_m!r}; expected a positive multiple of {step} m for {', '.join(gridded)}")
    if isinstance(tile_m, bool) or not isinstance(tile_m, (int, float, np.integer, np.floating)) or not (
        tile_m > 0 and _is_multiple(float(tile_m), need)
    ):
        raise PatchSizeError(
            f"tile_m={tile_m!r}; expected a positive multiple of {need:g} m (the GSDs "
            f"{', '.join(f'{m} {MODALITIES[m].gsd_m:g} m' for m in gridded)}, the patch step {step} m"
            + (f" and patch_m={patch_m:g} m" if patch_m else "")
            + f"), e.g. {', '.join(f'{need * k:g}' for k in (2, 4, 6))}"
        )
    tile_m = float(tile_m)
    n_cols = math.ceil((sr - sl) / tile_m - _EPS)
    n_rows = math.ceil((st - sb) / tile_m - _EPS)
    gsd = {s.modality: (tile_m if s._mod.tile_token else s._mod.gsd_m) for s in srcs}
    grid = SceneGrid(
        crs=ref.to_string(),
        data_bounds=(sl, sb, sr, st),
        unit=unit,
        tile_m=tile_m,
        n_rows=n_rows,
        n_cols=n_cols,
        gsd_m=gsd,
        tile_px={m: int(round(tile_m / g)) for m, g in gsd.items()},
    )

    mods: dict[str, _ModState] = {}
    for s in srcs:
        res: list[Resampling] = []
        for f in frames[s.modality]:
            if s.resampling is not None:
                res.append(s.resampling)  # type: ignore[arg-type]
            elif s._mod.tile_token:
                res.append(Resampling.nearest)
            else:
                b = boxes[f.name]
                src_res = min((b[2] - b[0]) / f.da.sizes["x"], (b[3] - b[1]) / f.da.sizes["y"])
                res.append(Resampling.average if src_res < 0.75 * gsd[s.modality] else Resampling.bilinear)
        mods[s.modality] = _ModState(s, frames[s.modality], res)
    return RasterScene(mods, grid, ref)


# ----------------------------------------------------------------------------------------------- features
def tile_cell_coords(meta: GeoInfo, grid_shape: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of the cell centres of an ``h x w`` feature grid laid over a tile.

    Args:
        meta: the tile's :class:`GeoInfo` (``transform`` and ``shape`` of its reference grid).
        grid_shape: ``h`` or ``(h, w)``: e.g. ``features.shape[1:3]`` of ``output="patch"`` or ``"dense"``.

    Returns:
        ``(x_centres (w,), y_centres (h,))`` in CRS units; ``features[i, j]`` lies at ``(x[j], y[i])``.

    Raises:
        MissingCRSError: ``meta`` has no transform/shape.
        InputShapeError: a rotated transform or a non-positive grid shape.
    """
    if meta.transform is None or meta.shape is None:
        raise MissingCRSError(
            f"tile {meta.tile_id!r} has no transform/shape in its GeoInfo; feature grids can only be placed on the map "
            "for georeferenced tiles (e.g. from open_rasters)"
        )
    a, b, c, d, e, f = meta.transform
    if b != 0 or d != 0:
        raise InputShapeError(f"tile {meta.tile_id!r} has a rotated transform {meta.transform}; expected north-up")
    if isinstance(grid_shape, (int, np.integer)):
        dims: tuple[int, ...] = (int(grid_shape), int(grid_shape))
    else:
        dims = tuple(int(v) for v in grid_shape)
    if len(dims) != 2 or min(dims) < 1:
        raise InputShapeError(f"grid_shape={grid_shape!r}; expected h or (h, w) with positive sizes")
    h, w = dims
    H, W = meta.shape
    cw, ch = a * W / w, e * H / h
    return c + cw * (np.arange(w) + 0.5), f + ch * (np.arange(h) + 0.5)
