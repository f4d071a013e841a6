#!/usr/bin/env python3
"""Write a tiny TimeSen2Crop root (run: ``python tests/data/timesen2crop/data.py``).

Layout (next to this script): 4 tiles (33TUM and 33UWP train, 33TWN val, 33UVP test) plus the unused
``2019_33UVP``; each ``<tile>/dates.csv`` and ``<tile>/<class>/<k>.csv`` pixel files (header, T rows x 10 columns:
B02, B03, B04, B05, B06, B07, B8A, B11, B12, flag).  ``band_ids=True`` writes column ``j`` as ``j + 1`` (flag 10).
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEADER = "B2,B3,B4,B5,B6,B7,B8A,B11,B12,Label"
#: tile -> (first date, number of dates, {class: number of pixels})
TILES = {
    "33TUM": (date(2017, 9, 3), 5, {0: 2, 12: 1}),
    "33UWP": (date(2017, 9, 10), 4, {2: 1}),
    "33TWN": (date(2017, 10, 1), 3, {1: 1, 15: 1}),
    "33UVP": (date(2017, 11, 20), 4, {9: 2}),
    "2019_33UVP": (date(2018, 9, 5), 3, {4: 1}),
}


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (tile folders are replaced)."""
    rng = np.random.default_rng(seed)
    for tile, (start, T, classes) in TILES.items():
        shutil.rmtree(root / tile, ignore_errors=True)
        (root / tile).mkdir(parents=True)
        dates = [start + timedelta(days=37 * t) for t in range(T)]  # crosses 1 January
        (root / tile / "dates.csv").write_text(
            "acquisition_date\n" + "".join(d.strftime("%Y%m%d") + "\n" for d in dates)
        )
        for c, n in classes.items():
            (root / tile / str(c)).mkdir()
            for k in range(n):
                if band_ids:
                    v = np.broadcast_to(np.arange(1, 11), (T, 10))
                else:
                    v = np.concatenate([rng.integers(100, 5000, (T, 9)), rng.integers(0, 4, (T, 1))], axis=1)
                rows = "".join(",".join(str(int(a)) for a in row) + "\n" for row in v)
                (root / tile / str(c) / f"{k}.csv").write_text(HEADER + "\n" + rows)


if __name__ == "__main__":
    generate()
