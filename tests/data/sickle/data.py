#!/usr/bin/env python3
"""Write a tiny SICKLE root in AnySat's layout (run: ``python tests/data/sickle/data.py``).

Layout (next to this script)::

    sickle_dataset_tabular.csv                      UNIQUE_ID, PLOT_ID, SPLIT, STANDARD_SEASON, YEAR, ...
    images/S2/npy/<uid>/<GEE id>.npz                B1..B12 + B8A, uint16, 12 x 12 px
    images/S1/npy/<uid>/<GEE id>.npz                VV, VH, float32 dB, 12 x 12 px
    images/L8/npy/<uid>/<GEE id>.npz                SR_B1..SR_B7, ST_B10 uint16, 4 x 4 px (SR_B6 missing once)
    masks/10m/<uid>.tif                             6 bands float32 12 x 12, EPSG:32644

``band_ids=True`` fills every pixel of band ``B<k>`` / ``SR_B<k>`` / ``ST_B<k>`` with ``k`` ("B8A" -> 85,
VV -> 2, VH -> 4).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
L8_BANDS = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10")
#: UNIQUE_ID, PLOT_ID, SPLIT, season, year
ROWS = [(101, 11, "train", "samba", 2018), (102, 13, "train", "kuruvai", 2019), (201, 12, "val", "thaladi", 2020),
        (301, 14, "test", "samba", 2021)]  # fmt: skip
#: per uid: S2, S1, L8 file names (GEE ids; S2 names starting with "T" carry the date in field 1)
FILES = {
    101: (["20181012T050731_20181012T051129_T44PLT", "T44PLT_20181226T050219_x", "20190105T050211_20190105T050630_T44PLT"],
          ["S1A_IW_GRDH_1SDV_20181017T004512_20181017T004537_024084_02A1F1_8D4B",
           "S1B_IW_GRDH_1SDV_20190110T004440_20190110T004505_014471_01AF7A_1C2D"],
          ["LC08_142052_20181105", "LC08_142052_20190124"]),
    102: (["20190601T050701_20190601T051506_T44PLT", "20190716T050659_20190716T051331_T44PLT"],
          ["S1A_IW_GRDH_1SDV_20190605T004520_20190605T004545_027584_031D2B_AB12"],
          ["LC08_142052_20190620", "LC08_142052_20190722", "LC08_142052_20190823"]),
    201: (["20201201T050759_20201201T051520_T44PLT"],
          ["S1A_IW_GRDH_1SDV_20201202T004530_20201202T004555_035459_04253F_0001",
           "S1A_IW_GRDH_1SDV_20201214T004530_20201214T004555_035634_042B5A_0002"],
          ["LC08_142052_20201210"]),
    301: (["20210301T050659_20210301T051331_T44PLT"], ["S1A_IW_GRDH_1SDV_20210302T004530_20210302T004555_036859_045678_0003"],
          ["LC08_142052_20210305"]),
}  # fmt: skip


def code(band: str) -> int:
    """Band-identifying value: the band number ("B8A" -> 85, VV -> 2, VH -> 4)."""
    if band in ("VV", "VH"):
        return 2 if band == "VV" else 4
    b = band.split("_")[-1]
    return 85 if b == "B8A" else int(b.lstrip("B"))


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (``images/`` and ``masks/`` are replaced)."""
    rng = np.random.default_rng(seed)
    for d in ("images", "masks"):
        shutil.rmtree(root / d, ignore_errors=True)
    (root / "masks" / "10m").mkdir(parents=True)
    lines = ["UNIQUE_ID,PLOT_ID,SPLIT,STANDARD_SEASON,YEAR,SOWING_DAY,HARVESTING_DAY,CROP_TYPE"]
    for k, (uid, plot, split, season, year) in enumerate(ROWS):
        lines.append(
            f"{uid},{plot},{split},{season},{year},{year}-08-0{k + 1},{year + 1}-01-1{k},{'paddy' if k % 2 == 0 else 'other'}"
        )
        s2, s1, l8 = FILES[uid]
        for sat, names, bands, px in (("S2", s2, S2_BANDS, 12), ("S1", s1, ("VV", "VH"), 12), ("L8", l8, L8_BANDS, 4)):
            folder = root / "images" / sat / "npy" / str(uid)
            folder.mkdir(parents=True)
            for j, name in enumerate(names):
                arrays = {}
                for b in bands:
                    if sat == "L8" and b == "SR_B6" and uid == 102 and j == 1:
                        continue  # a band missing from one Landsat file
                    if band_ids:
                        a = np.full((px, px), code(b), dtype=np.float32 if sat == "S1" else np.uint16)
                    elif sat == "S1":
                        a = rng.normal(-12 if b == "VV" else -19, 2, (px, px)).round(2).astype(np.float32)
                    else:
                        a = rng.integers(0, 5000, (px, px)).astype(np.uint16)
                    arrays[b] = a
                np.savez_compressed(folder / f"{name}.npz", **arrays)
        # mask: plot ``plot`` on the left, a plot of another split (12, a val plot; 11 for the val tile) on the right
        # third, background (plot 0, crop 0) on the bottom rows.  crop type: 1 paddy, 2 other.
        m = np.zeros((6, 12, 12), dtype=np.float32)
        m[0, :10, :8] = plot
        m[0, :10, 8:] = 12 if plot != 12 else 11
        m[1, :10, :4] = 1
        m[1, :10, 4:8] = 2 + k
        m[1, :10, 8:] = 1
        m[2:5, :10] = 200 + k
        m[5, :10] = 4.5 + k
        with rasterio.open(root / "masks" / "10m" / f"{uid}.tif", "w", driver="GTiff", width=12, height=12, count=6,
                           dtype="float32", crs="EPSG:32644", transform=Affine(10.0, 0.0, 380000.0 + 200 * k, 0.0, -10.0, 1210000.0)) as f:  # fmt: skip
            f.write(m)
    (root / "sickle_dataset_tabular.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    generate()
