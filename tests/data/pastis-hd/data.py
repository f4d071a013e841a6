#!/usr/bin/env python3
"""Write a tiny PASTIS-HD root in AnySat's layout (run: ``python tests/data/pastis-hd/data.py``).

Layout (next to this script)::

    metadata.geojson                     EPSG:2154 patch polygons; ID_PATCH, Fold, dates-S2 (a JSON string, as in
                                         some releases), dates-S1A, dates-S1D ({"0": YYYYMMDD, ...} dictionaries)
    DATA_S2/S2_<id>.npy                  (T, 10, 8, 8) int16 reflectance
    DATA_S1A/S1A_<id>.npy                (T, 3, 8, 8) float32 VV, VH, VV/VH in dB
    DATA_S1D/S1D_<id>.npy                (T, 3, 8, 8) float32 (not read by AnySat)
    DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019/SPOT6_RVB_1M00_2019_<id>.tif   3 x 80 x 80 uint8 RGB, 1 m
    ANNOTATIONS/TARGET_<id>.npy          (3, 8, 8) uint8; channel 0 = class 0-19
    NORM_S2_patch.json, NORM_S1A_patch.json   shipped per-fold statistics {"Fold_k": {"mean", "std"}}

Five patches of 80 m (8 x 8 Sentinel pixels at 10 m instead of 128 x 128), one per fold, with a few dates each.
``band_ids=True`` fills channel ``k`` of the S2/S1 arrays and of the SPOT image with ``k + 1``.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
IDS = (10000, 10001, 10002, 10003, 10004)  # folds 1..5
PX, SPOT_PX = 8, 80
X0, Y0 = 650_000.0, 6_860_000.0  # Lambert-93, near Paris
#: number of S2, S1A and S1D dates of each patch
T_S2, T_S1A, T_S1D = (4, 3, 5, 3, 4), (3, 4, 2, 3, 3), (2, 2, 3, 2, 2)
FOLDERS = ("DATA_S2", "DATA_S1A", "DATA_S1D", "DATA_SPOT", "ANNOTATIONS")


def yyyymmdd(first: date, step_days: int, T: int) -> dict[str, int]:
    """``{"0": YYYYMMDD, ...}``: ``T`` dates ``step_days`` apart from ``first``."""
    return {str(t): int((first + timedelta(days=step_days * t)).strftime("%Y%m%d")) for t in range(T)}


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (its folders and files are replaced)."""
    rng = np.random.default_rng(seed)
    for d in FOLDERS:
        shutil.rmtree(root / d, ignore_errors=True)
    for d in (*FOLDERS[:3], "DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019", "ANNOTATIONS"):
        (root / d).mkdir(parents=True, exist_ok=True)
    features = []
    for i, pid in enumerate(IDS):
        left, top = X0 + 1000.0 * i, Y0  # patches 1 km apart along x
        s2 = (np.broadcast_to(np.arange(1, 11)[None, :, None, None], (T_S2[i], 10, PX, PX)) if band_ids
              else rng.integers(0, 8000, (T_S2[i], 10, PX, PX)))  # fmt: skip
        np.save(root / "DATA_S2" / f"S2_{pid}.npy", s2.astype(np.int16))
        for sensor, T in (("S1A", T_S1A[i]), ("S1D", T_S1D[i])):
            if band_ids:
                s1 = np.broadcast_to(np.arange(1, 4)[None, :, None, None], (T, 3, PX, PX))
            else:
                vv, vh = rng.normal(-11, 2, (T, PX, PX)), rng.normal(-17, 2, (T, PX, PX))
                s1 = np.stack([vv, vh, vv - vh], axis=1)
            np.save(root / f"DATA_{sensor}" / f"{sensor}_{pid}.npy", s1.astype(np.float32))
        target = np.zeros((3, PX, PX), np.uint8)
        target[0] = rng.choice([0, 1, 2, 3, 5, 19], size=(PX, PX))  # background, meadow, wheat, corn, rapeseed, void
        target[1] = rng.integers(0, 4, (PX, PX))  # instance ids (unused by AnySat)
        target[2] = target[0]
        np.save(root / "ANNOTATIONS" / f"TARGET_{pid}.npy", target)
        spot = (np.broadcast_to(np.arange(1, 4, dtype=np.uint8)[:, None, None], (3, SPOT_PX, SPOT_PX)) if band_ids
                else np.kron(rng.integers(0, 256, (3, SPOT_PX // 10, SPOT_PX // 10), dtype=np.uint8),
                             np.ones((1, 10, 10), np.uint8)))  # fmt: skip
        profile = {"driver": "GTiff", "width": SPOT_PX, "height": SPOT_PX, "count": 3, "dtype": "uint8",
                   "compress": "deflate", "crs": "EPSG:2154", "transform": Affine(1.0, 0.0, left, 0.0, -1.0, top)}  # fmt: skip
        with rasterio.open(root / "DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019" / f"SPOT6_RVB_1M00_2019_{pid}.tif", "w",
                           **profile) as dst:  # fmt: skip
            dst.write(spot)
        right, bottom = left + 10 * PX, top - 10 * PX
        features.append({
            "type": "Feature",
            "properties": {
                "ID_PATCH": pid, "Fold": i + 1, "TILE": "t30uxv", "N_Parcel": int(np.unique(target[1]).size),
                "Parcel_Cover": float((target[0] > 0).mean()),
                "dates-S2": json.dumps(yyyymmdd(date(2018, 9, 19) + timedelta(days=i), 25, T_S2[i])),
                "dates-S1A": yyyymmdd(date(2018, 10, 2) + timedelta(days=i), 30, T_S1A[i]),
                "dates-S1D": yyyymmdd(date(2018, 10, 4) + timedelta(days=i), 30, T_S1D[i]),
            },
            "geometry": {"type": "Polygon", "coordinates": [[[left, bottom], [left, top], [right, top], [right, bottom],
                                                             [left, bottom]]]},
        })  # fmt: skip
    fc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}},
          "features": features}  # fmt: skip
    (root / "metadata.geojson").write_text(json.dumps(fc, indent=1))
    for sensor, C, mean in (("S2", 10, 1500.0), ("S1A", 3, -9.0)):
        folds = {f"Fold_{k}": {"mean": [mean + k] * C, "std": [2.0 * k] * C} for k in range(1, 6)}
        (root / f"NORM_{sensor}_patch.json").write_text(json.dumps(folds))


if __name__ == "__main__":
    generate()
