#!/usr/bin/env python3
"""Write a tiny FLAIR #2 root in the release layout plus AnySat's splits.json (run: ``python tests/data/flair/data.py``).

Layout (next to this script)::

    flair_aerial_train/<domain>/<zone>/img/IMG_<id>.tif     5 x 100 x 100 uint8 (R, G, B, NIR, elevation), 0.2 m
    flair_labels_train/<domain>/<zone>/msk/MSK_<id>.tif     1 x 100 x 100 uint8, classes 1-19
    flair_sen_train/<domain>/<zone>/sen/SEN2_sp_<domain>-<zone>_data.npy      (T, 10, 6, 6) int16
    flair_sen_train/<domain>/<zone>/sen/SEN2_sp_<domain>-<zone>_masks.npy     (T, 2, 6, 6) uint8, snow/cloud 0-100
    flair_sen_train/<domain>/<zone>/sen/SEN2_sp_<domain>-<zone>_products.txt  one S2 product name a line
    flair_2_{aerial,labels,sen}_test/...                    the same for the test domain
    flair-2_centroids_sp_to_patch.json                      {IMG_<id>.tif: [row, col]} in the super-area
    splits.json                                             {"train": [D013_2020], "val": [D021_2020], "test": [D035_2021]}

Patches are 20 m (100 px; the real ones are 512 px, 102.4 m), so read them with ``crop=None`` and
``s2_window_px=2``; super-areas are 6 x 6 Sentinel-2 pixels.  ``band_ids=True`` fills band ``k`` of every aerial
image and S2 array with ``k + 1``.
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
PX, SUPER_PX = 100, 6
#: (release, domain, zone, patch ids, number of S2 dates)
ZONES = (
    ("train", "D013_2020", "Z1_NF", (100101, 100102), 4),
    ("train", "D021_2020", "Z2_UA", (200201,), 3),
    ("test", "D035_2021", "Z3_AA", (300301, 300302), 5),
)
FOLDERS = {"train": ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
           "test": ("flair_2_aerial_test", "flair_2_labels_test", "flair_2_sen_test")}  # fmt: skip
#: centroid [row, col] of each patch in its zone's super-area (a 2 px window around it stays inside)
CENTROIDS = {100101: (2, 2), 100102: (3, 4), 200201: (3, 3), 300301: (1, 1), 300302: (4, 2)}


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (its folders and files are replaced)."""
    rng = np.random.default_rng(seed)
    for group in FOLDERS.values():
        for d in group:
            shutil.rmtree(root / d, ignore_errors=True)
    for k, (release, domain, zone, ids, T) in enumerate(ZONES):
        aerial_dir, label_dir, sen_dir = (
            root / g / domain / zone / sub for g, sub in zip(FOLDERS[release], ("img", "msk", "sen"))
        )
        for d in (aerial_dir, label_dir, sen_dir):
            d.mkdir(parents=True)
        for j, pid in enumerate(ids):
            transform = Affine(0.2, 0.0, 840_000.0 + 100 * k + 20 * j, 0.0, -0.2, 6_520_000.0)
            if band_ids:
                img = np.broadcast_to(np.arange(1, 6, dtype=np.uint8)[:, None, None], (5, PX, PX))
            else:  # 2 m blocks: compresses well
                img = np.kron(
                    rng.integers(0, 256, (5, PX // 10, PX // 10), dtype=np.uint8), np.ones((1, 10, 10), np.uint8)
                )
            msk = np.kron(rng.integers(1, 20, (1, PX // 20, PX // 20), dtype=np.uint8), np.ones((1, 20, 20), np.uint8))
            for path, arr in ((aerial_dir / f"IMG_{pid}.tif", img), (label_dir / f"MSK_{pid}.tif", msk)):
                with rasterio.open(path, "w", driver="GTiff", width=PX, height=PX, count=arr.shape[0], dtype="uint8",
                                   compress="deflate", crs="EPSG:2154", transform=transform) as dst:  # fmt: skip
                    dst.write(arr)
        stem = f"SEN2_sp_{domain}-{zone}"
        data = (np.broadcast_to(np.arange(1, 11)[None, :, None, None], (T, 10, SUPER_PX, SUPER_PX)) if band_ids
                else rng.integers(0, 6000, (T, 10, SUPER_PX, SUPER_PX)))  # fmt: skip
        np.save(sen_dir / f"{stem}_data.npy", data.astype(np.int16))
        np.save(sen_dir / f"{stem}_masks.npy", rng.integers(0, 101, (T, 2, SUPER_PX, SUPER_PX), dtype=np.uint8))
        year = int(domain[-4:])
        days = [date(year, 3, 10) + timedelta(days=40 * t + k) for t in range(T)]
        names = [f"S2B_MSIL2A_{d:%Y%m%d}T104619_N0214_R051_T31TFJ_{d:%Y%m%d}T131200" for d in days]
        (sen_dir / f"{stem}_products.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "flair-2_centroids_sp_to_patch.json").write_text(
        json.dumps({f"IMG_{pid}.tif": list(rc) for pid, rc in CENTROIDS.items()}, indent=1)
    )
    (root / "splits.json").write_text(json.dumps({"train": ["D013_2020"], "val": ["D021_2020"], "test": ["D035_2021"]}))


if __name__ == "__main__":
    generate()
