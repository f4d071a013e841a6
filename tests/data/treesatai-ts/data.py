#!/usr/bin/env python3
"""Write a tiny TreeSatAI-TS root in AnySat's layout (run: ``python tests/data/treesatai-ts/data.py``).

Layout (next to this script)::

    aerial/<name>.tif                          4 x 304 x 304 uint8 (NIR, G, B, R), 0.2 m, EPSG:25832
    sentinel/<name>.h5                         sen-2-data (T, 10, 6, 6) float32, sen-2-masks (T, 2, 6, 6) uint8,
                                               sen-1-{asc,des}-data (T, 2, 6, 6) float32 linear, *-products (bytes)
    s1-asc/<name>.pth                          (T, 3, 6, 6) VV, VH, VV/VH: first tile only (the others use the h5)
    labels/TreeSatBA_v9_60m_multi_labels.json  {<name>.tif: [[genus, fraction], ...]}
    {train,val,test}_filenames.lst             one <name>.tif a line

Tiles have the real sizes (the aerial is piecewise constant on 16 px blocks so that it compresses), a few dates
each.  One train tile has no genus above 7 %: the loader drops it.  ``band_ids=True`` fills band ``k``
of every image with ``k + 1`` (S1: VV 2, VH 4).
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import h5py
import numpy as np
import rasterio
import torch
from affine import Affine

HERE = Path(__file__).resolve().parent
#: split -> {tile name: [[genus, area fraction], ...]}
TILES = {
    "train": {
        "Abies_alba_1_1005_WEFL_NLF.tif": [["Abies", 0.82], ["Picea", 0.12], ["Fagus", 0.06]],
        "Fagus_sylvatica_3_2107_WEFL_NLF.tif": [["Fagus", 0.6], ["Quercus", 0.4]],
        "Picea_abies_2_411_WEFL_NLF.tif": [["Picea", 0.05], ["Larix", 0.07]],  # nothing > 7 %: dropped
    },
    "val": {"Quercus_robur_5_8804_WEFL_NLF.tif": [["Quercus", 0.9], ["Tilia", 0.1]]},
    "test": {"Pinus_sylvestris_4_6032_WEFL_NLF.tif": [["Pinus", 1.0]]},
}
PX, SEN_PX, BLOCK = 304, 6, 16
#: number of S2, S1 ascending and S1 descending dates of the i-th tile
T_S2, T_ASC, T_DES = (4, 3, 5, 2, 3), (3, 2, 2, 3, 4), (2, 2, 3, 2, 2)


def s2_products(year: int, T: int, offset: int) -> list[bytes]:
    """ESA L2A names whose field 2 starts with the date: every 17 days from 2 January + ``offset``."""
    days = [date(year, 1, 2) + timedelta(days=offset + 17 * t) for t in range(T)]
    return [f"S2A_MSIL2A_{d:%Y%m%d}T103421_N0213_R108_T32UNC_{d:%Y%m%d}T113032".encode() for d in days]


def s1_products(year: int, T: int, offset: int) -> list[bytes]:
    """GRD names whose field 4 starts with the date: every 12 days from 3 January + ``offset``."""
    days = [date(year, 1, 3) + timedelta(days=offset + 12 * t) for t in range(T)]
    return [f"S1A_IW_GRDH_1SDV_{d:%Y%m%d}T053331_{d:%Y%m%d}T053356_030629_038269_1D2B".encode() for d in days]


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (its folders and lists are replaced)."""
    rng = np.random.default_rng(seed)
    for d in ("aerial", "sentinel", "s1-asc", "labels"):
        shutil.rmtree(root / d, ignore_errors=True)
        (root / d).mkdir(parents=True)
    labels = {}
    i = 0
    for split, tiles in TILES.items():
        (root / f"{split}_filenames.lst").write_text("".join(f"{n}\n" for n in tiles))
        for name, genera in tiles.items():
            labels[name] = genera
            stem = name[:-4]
            if band_ids:
                img = np.broadcast_to(np.arange(1, 5, dtype=np.uint8)[:, None, None], (4, PX, PX))
            else:
                blocks = rng.integers(0, 256, (4, PX // BLOCK, PX // BLOCK), dtype=np.uint8)
                img = np.kron(blocks, np.ones((1, BLOCK, BLOCK), np.uint8))
            profile = {"driver": "GTiff", "width": PX, "height": PX, "count": 4, "dtype": "uint8", "compress": "deflate",
                       "crs": "EPSG:25832", "transform": Affine(0.2, 0.0, 550000.0 + 100 * i, 0.0, -0.2, 5800000.0)}  # fmt: skip
            with rasterio.open(root / "aerial" / name, "w", **profile) as dst:
                dst.write(img)
            series = {}
            for key, T, C, lo, hi in (("sen-2", T_S2[i], 10, 0, 6000), ("sen-1-asc", T_ASC[i], 2, 0.001, 0.5),
                                      ("sen-1-des", T_DES[i], 2, 0.001, 0.5)):  # fmt: skip
                if band_ids:
                    codes = np.arange(1, C + 1) if key == "sen-2" else np.array([2, 4])
                    x = np.broadcast_to(codes[None, :, None, None], (T, C, SEN_PX, SEN_PX))
                else:
                    x = rng.uniform(lo, hi, (T, C, SEN_PX, SEN_PX))
                    x = x.round() if key == "sen-2" else x
                series[key] = x.astype(np.float32)
            with h5py.File(root / "sentinel" / f"{stem}.h5", "w") as f:
                f["sen-2-data"] = series["sen-2"]
                f["sen-2-masks"] = rng.integers(0, 101, (T_S2[i], 2, SEN_PX, SEN_PX), dtype=np.uint8)
                f["sen-2-products"] = np.array(s2_products(2020, T_S2[i], i))
                f["sen-1-asc-data"] = series["sen-1-asc"]
                f["sen-1-asc-products"] = np.array(s1_products(2020, T_ASC[i], i))
                f["sen-1-des-data"] = series["sen-1-des"]
                f["sen-1-des-products"] = np.array(s1_products(2020, T_DES[i], i + 1))
            if i == 0:  # AnySat's derived .pth: VV, VH and their ratio
                asc = torch.from_numpy(series["sen-1-asc"])
                torch.save(torch.cat([asc, asc[:, :1] / asc[:, 1:]], dim=1), root / "s1-asc" / f"{stem}.pth")
            i += 1
    (root / "labels" / "TreeSatBA_v9_60m_multi_labels.json").write_text(json.dumps(labels, indent=1))


if __name__ == "__main__":
    generate()
