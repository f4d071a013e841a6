#!/usr/bin/env python3
"""Write a tiny S2NAIP-URBAN root in AnySat's layout (run: ``python tests/data/s2naip-urban/data.py``).

Layout (next to this script), tiles of 80 m instead of 640 m (NAIP 64 px at 1.25 m, 10 m stacks 8 px,
20 m stacks 4 px)::

    {train,val,test}_dict.json          name, s2_dates, s1_dates, l8_dates (YYYYMMDD strings)
    naip/<name>.png                     4 x 64 x 64 uint8
    sentinel2/<name>_8.tif              T*4 bands uint16, 8 x 8, georeferenced (EPSG from the name)
    sentinel2/<name>_16.tif             T*6 bands uint16, 4 x 4
    sentinel1/<name>.tif                T*2 bands float32 (linear backscatter), 8 x 8
    landsat/<name>_8.tif, _16.tif       T*1 / T*10 bands uint16
    openstreetmap/<name>.geojson        a building polygon, a road line, a power tower point, a park polygon

``band_ids=True`` writes value ``k`` in every pixel of band-name code ``k`` (S2 "B8A" -> 85, "B02" -> 2 ...; S1
VV -> 2, VH -> 4; Landsat "B8" -> 8 ...; NAIP R, G, B, NIR -> 1..4) so a test can check the band reordering.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

HERE = Path(__file__).resolve().parent
NAIP_PX = 64
TILE_M = NAIP_PX * 1.25
S2_8 = ("B02", "B03", "B04", "B08")
S2_16 = ("B05", "B06", "B07", "B8A", "B11", "B12")
L8_16 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")
SPLITS = {
    "train": {
        "32610_843_-6594": {"s2": ["20190602", "20190707", "20190816"], "s1": ["20190611", "20190723"],
                            "l8": ["20190520", "20190925"]},
        "32610_844_-6594": {"s2": ["20200105", "20201230"], "s1": ["20200301", "20200402", "20200504"],
                            "l8": ["20200229"]},
    },
    "val": {"32611_101_-5890": {"s2": ["20210115", "20210410"], "s1": ["20210101"], "l8": ["20210303", "20210404"]}},
    "test": {"32617_77_-6400": {"s2": ["20190301"], "s1": ["20190302", "20190303"], "l8": ["20191231"]}},
}  # fmt: skip
OSM = [
    {"type": "Feature", "properties": {"category": "building"},
     "geometry": {"type": "Polygon", "coordinates": [[[4, 4], [20, 4], [20, 16], [4, 16], [4, 4]]]}},
    {"type": "Feature", "properties": {"category": "road"},
     "geometry": {"type": "LineString", "coordinates": [[0, 40], [63, 40]]}},
    {"type": "Feature", "properties": {"category": "power_tower"}, "geometry": {"type": "Point", "coordinates": [50, 10]}},
    {"type": "Feature", "properties": {"category": "park"},
     "geometry": {"type": "Polygon", "coordinates": [[[40, 50], [60, 50], [60, 62], [40, 62], [40, 50]]]}},
]  # fmt: skip


def code(band: str) -> int:
    """Band-identifying value: the band number, "8A" -> 85, VV -> 2, VH -> 4."""
    if band in ("VV", "VH"):
        return 2 if band == "VV" else 4
    return 85 if band.endswith("8A") else int(band.lstrip("B"))


def write_tif(path: Path, arr: np.ndarray, name: str, gsd: float) -> None:
    """A georeferenced GeoTIFF with the tile's CRS/origin (origin from ``<EPSG>_<col>_<row>``, inferred)."""
    epsg, col, row = (int(v) for v in name.split("_"))
    transform = Affine(gsd, 0.0, col * 640.0, 0.0, -gsd, -row * 640.0)
    with rasterio.open(
        path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype=arr.dtype,
        crs=f"EPSG:{epsg}", transform=transform,
    ) as f:  # fmt: skip
        f.write(arr)


def stack(rng: np.random.Generator, T: int, bands: tuple[str, ...], px: int, band_ids: bool, kind: str) -> np.ndarray:
    """(T * len(bands), px, px) time-major stack."""
    if band_ids:
        vals = np.array([code(b) for b in bands], dtype=np.float64)
        a = np.broadcast_to(np.tile(vals, T)[:, None, None], (T * len(bands), px, px))
    elif kind == "s1":
        a = rng.gamma(2.0, 0.05, (T * len(bands), px, px))
    else:
        a = rng.integers(0, 4000, (T * len(bands), px, px))
    return np.ascontiguousarray(a, dtype=np.float32 if kind == "s1" else np.uint16)


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (its data folders are replaced)."""
    rng = np.random.default_rng(seed)
    for d in ("naip", "sentinel2", "sentinel1", "landsat", "openstreetmap"):
        shutil.rmtree(root / d, ignore_errors=True)
        (root / d).mkdir(parents=True)
    px10, px20 = NAIP_PX // 8, NAIP_PX // 16
    for split, tiles in SPLITS.items():
        index = {"name": list(tiles), "s2_dates": [], "s1_dates": [], "l8_dates": []}
        for name, dates in tiles.items():
            for m in ("s2", "s1", "l8"):
                index[f"{m}_dates"].append(dates[m])
            if band_ids:
                naip = np.broadcast_to(np.arange(1, 5, dtype=np.uint8)[:, None, None], (4, NAIP_PX, NAIP_PX)).copy()
            else:  # smooth gradients compress well in PNG
                yy, xx = np.mgrid[0:NAIP_PX, 0:NAIP_PX]
                naip = np.stack([(xx * 3 + 40 * b + yy) % 256 for b in range(4)]).astype(np.uint8)
            with warnings.catch_warnings():  # a PNG has no georeferencing
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(
                    root / "naip" / f"{name}.png", "w", driver="PNG", width=NAIP_PX, height=NAIP_PX, count=4,
                    dtype="uint8",
                ) as f:  # fmt: skip
                    f.write(naip)
            T2, T1, T8 = len(dates["s2"]), len(dates["s1"]), len(dates["l8"])
            write_tif(root / "sentinel2" / f"{name}_8.tif", stack(rng, T2, S2_8, px10, band_ids, "s2"), name, 10.0)
            write_tif(root / "sentinel2" / f"{name}_16.tif", stack(rng, T2, S2_16, px20, band_ids, "s2"), name, 20.0)
            write_tif(
                root / "sentinel1" / f"{name}.tif", stack(rng, T1, ("VV", "VH"), px10, band_ids, "s1"), name, 10.0
            )
            write_tif(root / "landsat" / f"{name}_8.tif", stack(rng, T8, ("B8",), px10, band_ids, "l8"), name, 10.0)
            write_tif(root / "landsat" / f"{name}_16.tif", stack(rng, T8, L8_16, px20, band_ids, "l8"), name, 20.0)
            (root / "openstreetmap" / f"{name}.geojson").write_text(
                json.dumps({"type": "FeatureCollection", "features": OSM})
            )
        (root / f"{split}_dict.json").write_text(json.dumps(index))


if __name__ == "__main__":
    generate()
