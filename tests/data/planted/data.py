#!/usr/bin/env python3
"""Write a tiny PLANTED root in AnySat's npz layout (run: ``python tests/data/planted/data.py``).

Layout (next to this script)::

    {train,val,test}/labels2.json
    {train,val,test}/<id>/<id>_<mod>.npz             arr_0 (T, H, W, C) float32
    {train,val,test}/<id>/<id>_<mod>_mask.npz        arr_0 (T, H, W, C) uint8, 1 = valid
    {train,val,test}/<id>/<id>_<mod>_timestamp.npz   arr_0 (T,) int64 ms since epoch (at 12:00 UTC)

Tiles are 120 m: s2/s1 12 x 12 px, l7/alos 4 x 4 px, modis 1 x 1 px.  ``band_ids=True`` fills channel ``c`` of
every file with ``c + 1`` (and masks nothing) so a test can check the channel order.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: modality -> (channels in the file, tile side in px, number of dates per sample)
SPEC = {"s2": (10, 12, (4, 3, 5)), "s1": (2, 12, (3, 4, 3)), "l7": (6, 4, (3, 2, 3)), "alos": (2, 4, (2, 2, 2)),
        "modis": (7, 1, (5, 4, 6))}  # fmt: skip
#: split -> {tile id: class index}
LABELS = {"train": {"100003": 0, "100017": 11, "100042": 39}, "val": {"200005": 34}, "test": {"300008": 17}}
#: first date of each sample (noon UTC, so the local-time day of year is the same in every time zone)
START = datetime(2019, 1, 15, 12, tzinfo=timezone.utc)


def timestamps(T: int, offset_days: int) -> np.ndarray:
    """``T`` dates 47 days apart (crossing years) in ms since the epoch."""
    return np.array(
        [int((START + timedelta(days=offset_days + 47 * t)).timestamp() * 1000) for t in range(T)], dtype=np.int64
    )


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (split folders are replaced)."""
    rng = np.random.default_rng(seed)
    for k, (split, labels) in enumerate(LABELS.items()):
        split_dir = root / split
        shutil.rmtree(split_dir, ignore_errors=True)
        split_dir.mkdir(parents=True)
        (split_dir / "labels2.json").write_text(json.dumps(labels))
        for i, tile in enumerate(labels):
            d = split_dir / tile
            d.mkdir()
            for mod, (C, side, Ts) in SPEC.items():
                T = Ts[(i + k) % len(Ts)]
                if band_ids:
                    x = np.broadcast_to(np.arange(1, C + 1, dtype=np.float32), (T, side, side, C)).copy()
                    mask = np.ones_like(x, dtype=np.uint8)
                else:
                    if mod in ("s1", "alos"):  # backscatter in dB
                        x = rng.normal(-12.0, 3.0, (T, side, side, C)).round(2).astype(np.float32)
                    else:  # reflectance x 1e4
                        x = rng.integers(0, 6000, (T, side, side, C)).astype(np.float32)
                    mask = (rng.random((T, side, side, C)) > 0.1).astype(np.uint8)
                np.savez_compressed(d / f"{tile}_{mod}.npz", x)
                np.savez_compressed(d / f"{tile}_{mod}_mask.npz", mask)
                np.savez_compressed(d / f"{tile}_{mod}_timestamp.npz", timestamps(T, 3 * i + 5 * k))


if __name__ == "__main__":
    generate()
