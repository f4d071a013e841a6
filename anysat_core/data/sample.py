"""The sample format shared by every data source (datasets, GeoPlex-mini, your own rasters).

A **sample** is a plain ``dict`` (so it batches with any DataLoader and feeds ``AnySat.forward`` directly):

==========================  ==========================================================================
key                         value
==========================  ==========================================================================
``"<mod>"``                 float32 tensor, ``(T, C, H, W)`` for time series, ``(C, H, W)`` for images,
                            channels in ``MODALITIES[mod].bands`` order (normalised or raw, see below)
``"<mod>_dates"``           int64 ``(T,)`` day of year (1..366) of each date of a time series
``"<mod>_mask"``            optional bool tensor broadcastable to the modality tensor, True = valid
``"label"``                 tensor: multi-hot ``(K,)``, class index ``()``, ``(H, W)`` class map, ...
``"meta"``                  :class:`GeoInfo`: dataset, tile id, CRS, affine transform, split
==========================  ==========================================================================

After :func:`~anysat_core.data.collate.collate` every entry gains a leading batch axis and time series are
padded to the longest T; ``"<mod>_date_mask"`` ``(B, T)`` then says which dates are real (True) and which
are padding.  The model ignores ``label``, ``meta`` and ``*_date_mask`` (the original code treated padded
dates as real dates at day 0, and so does the model, for parity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from anysat_core.errors import InputShapeError
from anysat_core.geo import grid_bounds
from anysat_core.modalities import MODALITIES

__all__ = ["GeoInfo", "Sample", "modalities_of", "sample_extent_m"]

#: A sample: see the module docstring for its keys.
Sample = dict[str, Any]


@dataclass(frozen=True)
class GeoInfo:
    """Where a sample comes from and where it lies on Earth.

    Attributes:
        dataset: dataset name (e.g. ``"treesatai-ts"``, ``"geoplex-mini"``, ``"raster"``).
        tile_id: identifier of the tile inside its dataset (file name, patch id...).
        crs: coordinate reference system as a WKT or ``"EPSG:xxxx"`` string, None if unknown.
        transform: affine transform ``(a, b, c, d, e, f)`` (GDAL/rasterio order: ``x = a*col + b*row + c``,
            ``y = d*col + e*row + f``) of the finest grid of the sample (the tile's reference grid), or None.
        gsd_m: pixel size in metres of that reference grid.
        shape: ``(H, W)`` of the reference grid.
        split: split name when the sample comes from a dataset split.
        extra: anything else (dates as ISO strings, source files...).
    """

    dataset: str
    tile_id: str
    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None
    gsd_m: float | None = None
    shape: tuple[int, int] | None = None
    split: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(left, bottom, right, top)`` in CRS units, from the transform and shape; None when either is unknown."""
        if self.transform is None or self.shape is None:
            return None
        return grid_bounds(self.transform, self.shape)

    def with_window(self, row_off: int, col_off: int, height: int, width: int) -> GeoInfo:
        """The GeoInfo of a window of this grid (row/col offsets and size in reference pixels)."""
        if self.transform is None:
            return replace(self, shape=(height, width))
        a, b, c, d, e, f = self.transform
        t = (a, b, c + a * col_off + b * row_off, d, e, f + d * col_off + e * row_off)
        return replace(self, transform=t, shape=(height, width))


def modalities_of(sample: Mapping[str, Any]) -> list[str]:
    """Modality keys of a sample or batch, in insertion order."""
    return [k for k in sample if k in MODALITIES]


def sample_extent_m(sample: Mapping[str, Any]) -> float:
    """Ground side in metres of a (single, unbatched or batched) sample, from its first non-MODIS modality."""
    for k in modalities_of(sample):
        m = MODALITIES[k]
        if not m.tile_token:
            x = sample[k]
            return float(x.shape[-1] * m.gsd_m) if isinstance(x, torch.Tensor) else float("nan")
    raise InputShapeError(
        f"sample has no modality with a spatial extent (keys {sorted(sample)}); expected at least one modality other "
        "than modis, e.g. 's2'"
    )
