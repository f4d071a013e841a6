"""Reading helpers shared by the dataset loaders: GeoTIFF windows with georeferencing, dates from
product names, centre/random crops.  Errors go through the calling dataset's ``not_found``/``corrupt``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from anysat_core.data.sample import GeoInfo
from anysat_core.dates import day_of_year, yyyymmdd_date
from anysat_core.errors import ConfigError, InputShapeError

if TYPE_CHECKING:
    from anysat_core.data.datasets.base import AnySatDataset

__all__ = ["check_crop", "crop_offset", "doy_from_names", "read_geotiff"]

_CROPS = ("auto", "centre", "random", None)


def crop_offset(size: int, crop_px: int, mode: str, what: str) -> int:
    """Offset (px) of a ``crop_px`` window along an axis of ``size`` px: centred or uniformly random.

    ``"centre"`` gives ``(size - crop_px) // 2`` (TreeSatAI 304 -> [2:302], FLAIR 512 -> [6:506]); ``"random"``
    draws from torch's global generator (so DataLoader worker seeding applies).

    Raises:
        InputShapeError: the axis is shorter than the crop.
    """
    if size < crop_px:
        raise InputShapeError(
            f"{what} has {size} px along an axis; expected at least {crop_px} px to crop {crop_px} px from it. "
            "Pass crop=None to keep the whole raster."
        )
    if mode == "random":
        return int(torch.randint(0, size - crop_px + 1, ()).item())
    return (size - crop_px) // 2


def doy_from_names(
    names: Sequence[str | bytes], start: int, stop: int, *, field: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Day of year (``time.struct_time.tm_yday``, 1..366) of product names, and the ISO dates.

    Args:
        names: ESA product names (bytes or str).
        start, stop: character slice holding ``YYYYMMDD`` (of the ``field``-th ``_``-separated field if given).
        field: index of the ``_``-separated field to slice, or None to slice the whole name.

    Returns:
        ``(T,)`` int64 day of year, and the ``YYYY-MM-DD`` strings.

    Raises:
        ValueError: a name without a date at that place (callers wrap it with the file name).
    """
    doys, iso = [], []
    for raw in names:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        part = name.split("_")[field] if field is not None else name
        stamp = part[start:stop]
        day = yyyymmdd_date(stamp)  # ValueError on a bad name
        doys.append(day_of_year(day))
        iso.append(day.isoformat())
    return torch.tensor(doys, dtype=torch.int64), iso


def read_geotiff(
    ds: AnySatDataset,
    path: Path,
    *,
    crop_px: int | None = None,
    mode: str = "centre",
    offset: tuple[int, int] | None = None,
) -> tuple[np.ndarray, GeoInfo, tuple[int, int]]:
    """Read a GeoTIFF (all bands) optionally cropped to ``crop_px`` x ``crop_px``, with its georeference.

    Args:
        ds: the dataset reading the file (for its error messages, name and split).
        path: the GeoTIFF.
        crop_px: side of the square window to read, None for the whole raster.
        mode: ``"centre"`` or ``"random"`` placement of the window (see :func:`crop_offset`).
        offset: ``(row, col)`` of the window, overriding ``mode`` (to cut a label at the image's window).

    Returns:
        ``(C, h, w)`` array in the file's dtype; a GeoInfo (tile id = file stem) with CRS, the affine transform
        of the window (None if the file has no geotransform), the pixel size and the window shape; and the
        window's ``(row, col)`` offset.

    Raises:
        DatasetNotFoundError: the file is missing.
        CorruptFileError: the file cannot be read.
        InputShapeError: the raster is smaller than the crop.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.windows import Window

    if not path.is_file():
        raise ds.not_found(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                H, W = src.height, src.width
                r0 = c0 = 0
                h, w = H, W
                if crop_px is not None:
                    r0 = crop_offset(H, crop_px, mode, str(path))
                    c0 = crop_offset(W, crop_px, mode, str(path))
                    if offset is not None:
                        r0, c0 = offset
                    h = w = crop_px
                arr = src.read(window=Window(c0, r0, w, h))
                crs = src.crs.to_string() if src.crs else None
                tr = src.transform
                georef = not tr.is_identity
                gsd = abs(tr.a) if georef else None
    except InputShapeError:
        raise
    except (RasterioError, OSError, ValueError) as e:
        raise ds.corrupt(path, e) from e
    geo = GeoInfo(
        dataset=ds.name,
        tile_id=path.stem,
        crs=crs,
        transform=tuple(tr)[:6] if georef else None,
        gsd_m=gsd,
        shape=(H, W),
        split=ds.split,
    ).with_window(r0, c0, h, w)
    return arr, geo, (r0, c0)


def check_crop(crop: str | None) -> None:
    """Raise ConfigError unless ``crop`` is "auto", "centre", "random" or None."""
    if crop not in _CROPS:
        raise ConfigError(f"crop={crop!r}; expected one of {', '.join(map(repr, _CROPS))}")
