"""Cloud-Optimized GeoTIFF made from the partial Zarr store of a finished scene, block by block.

Bands: the ``D`` features (descriptions ``"0"`` .. ``"D-1"``), then ``prediction`` and ``confidence`` with a probe.
The per-cell ``valid_fraction`` of the store is not a band (every band of a feature COG is a feature, so that
``rioxarray.open_rasterio`` gives the feature map as it is): cells with too little valid input are NaN (the COG's
nodata) in every feature band, and the tag ``valid_fraction`` says so; write a ``.zarr`` to keep the fraction itself.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
from affine import Affine

from anysat_core.writers import FEATURES_NAME, replace_path, set_default_mode

#: The COG tag that says where the per-cell valid fraction went.
VALID_FRACTION_NOTE = (
    "not stored in the GeoTIFF: features are NaN (nodata) where the share of valid input under a cell is at most "
    "min_valid_fraction; a .zarr output keeps the per-cell valid_fraction"
)


def write_cog(src: Path, out: Path, attrs: dict[str, str], probe: bool, overwrite: bool) -> None:
    """Convert the store ``src`` to a COG under a temporary name beside ``out``, then rename it to ``out``
    (``src`` is left as it is: it keeps its resume state until the COG is in place)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".cog.tmp", dir=out.parent)
    os.close(fd)
    try:
        _zarr_to_cog(src, Path(tmp), attrs, probe)
        set_default_mode(tmp)  # the COG gets the umask's permissions, not mkstemp's 0o600
        replace_path(Path(tmp), out, overwrite)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _overview_factors(width: int, height: int, block: int = 256) -> list[int]:
    """Decimation factors 2, 4, ... until the coarsest level fits in one ``block``-pixel block."""
    factors, k = [], 2
    while math.ceil(max(width, height) / (k // 2)) > block:  # the previous level does not fit in one block yet
        factors.append(k)
        k *= 2
    return factors


def _zarr_to_cog(src: Path, dst: Path, attrs: dict[str, str], probe: bool, block_mb: float = 32.0) -> None:
    """Copy the features (and probe outputs) of the store ``src`` to a Cloud-Optimized GeoTIFF at ``dst``.

    A band-interleaved tiled GeoTIFF is written block by block (256 rows x 512 columns x as many features as fit in
    ``block_mb``) and gets internal overviews (average, down to one 256-pixel block); GDAL's GTiff driver then copies
    it with ``COPY_SRC_OVERVIEWS=YES`` (the COG layout: metadata and overviews first, DEFLATE tiles).  Everything is
    done band by band, so memory stays bounded by one block and GDAL's block cache whatever the scene size.  (GDAL's
    COG driver would write pixel-interleaved tiles, which makes it read a full-width row of blocks of every feature
    at once: memory growing with the scene width times the number of features.)
    """
    import rasterio
    import rasterio.enums
    import rasterio.shutil
    import zarr

    g = zarr.open_group(str(src), mode="r")
    feats = cast(zarr.Array, g[FEATURES_NAME])
    D, ny, nx = feats.shape
    count = D + (2 if probe else 0)
    sref: dict[str, Any] = dict(g["spatial_ref"].attrs)  # CF grid-mapping attributes (crs_wkt, GeoTransform)
    crs = rasterio.crs.CRS.from_wkt(sref["crs_wkt"])
    transform = Affine.from_gdal(*(float(v) for v in sref["GeoTransform"].split()))
    rows, cols = 256, 512
    fit = max(1, int(block_mb * 2**20) // (4 * rows * cols))  # features per block within block_mb
    step = feats.chunks[0]  # features per Zarr chunk: read whole chunks when they fit, so none is decoded twice
    group = min(D, (fit // step) * step if fit >= step else fit)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".blocks.tif", dir=dst.parent)
    os.close(fd)
    try:
        with rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            width=nx,
            height=ny,
            count=count,
            dtype="float32",
            crs=crs,
            transform=transform,
            nodata=np.nan,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            interleave="band",
            bigtiff="if_safer",
        ) as out:
            for y0 in range(0, ny, rows):
                y1 = min(ny, y0 + rows)
                for x0 in range(0, nx, cols):
                    x1 = min(nx, x0 + cols)
                    win = rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)
                    for b0 in range(0, D, group):
                        b1 = min(D, b0 + group)
                        out.write(
                            np.asarray(feats[b0:b1, y0:y1, x0:x1]), indexes=list(range(b0 + 1, b1 + 1)), window=win
                        )
                    if probe:
                        pred, conf = cast(zarr.Array, g["prediction"]), cast(zarr.Array, g["confidence"])
                        out.write(np.asarray(pred[y0:y1, x0:x1]).astype(np.float32), D + 1, window=win)
                        out.write(np.asarray(conf[y0:y1, x0:x1]), D + 2, window=win)
            out.update_tags(**attrs, valid_fraction=VALID_FRACTION_NOTE)
            for i in range(D):
                out.set_band_description(i + 1, str(i))
            if probe:
                out.set_band_description(D + 1, "prediction")
                out.set_band_description(D + 2, "confidence")
        factors = _overview_factors(nx, ny)
        if factors:
            with rasterio.open(tmp, "r+") as out:
                out.build_overviews(factors, rasterio.enums.Resampling.average)
        rasterio.shutil.copy(
            tmp,
            str(dst),
            driver="GTiff",
            tiled=True,
            blockxsize=256,
            blockysize=256,
            interleave="band",
            compress="deflate",
            predictor=3,
            copy_src_overviews=True,
            bigtiff="if_safer",
        )
    finally:
        Path(tmp).unlink(missing_ok=True)
