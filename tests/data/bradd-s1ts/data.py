#!/usr/bin/env python3
"""Write a tiny BraDD-S1TS root (run: ``python tests/data/bradd-s1ts/data.py``).

Layout (next to this script), tiles of 16 x 16 px instead of 48 x 48::

    meta.csv                         indexed; alert_idx, center_idx, date, sampling_type, state, file, close_set
    Samples/<7-digit idx>_<date>.pt  torch.save of {image (T, 2, 16, 16) float32 dB, image_dates [date],
                                     label (t, 16, 16) uint8 0/1, label_dates [date]}

``band_ids=True`` fills VV with 2 and VH with 4 everywhere.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PX = 16
#: (alert_idx, alert date, close_set, sampling_type, state, number of image dates)
ROWS = [
    (0, dt.date(2021, 8, 21), "train", "positive", "PA", 5),
    (1, dt.date(2021, 3, 2), "train", "boundary", "MT", 4),
    (2, dt.date(2020, 11, 30), "validation", "positive", "AM", 6),
    (3, dt.date(2021, 1, 12), "test", "negative", "RO", 3),
]


def generate(root: Path = HERE, *, band_ids: bool = False, seed: int = 0) -> None:
    """Write the tiny dataset under ``root`` (``Samples/`` is replaced)."""
    g = torch.Generator().manual_seed(seed)
    shutil.rmtree(root / "Samples", ignore_errors=True)
    (root / "Samples").mkdir(parents=True)
    lines = [",alert_idx,center_idx,date,sampling_type,state,file,close_set"]
    for k, (idx, date, split, kind, state, T) in enumerate(ROWS):
        file = f"{idx:07d}_{date.isoformat()}.pt"
        # images every 12 days, starting 12*(T-1) days before the alert; label dates: the last image date and the
        # alert date (so label[1] is the alert mask)
        image_dates = [date - dt.timedelta(days=12 * (T - 1 - t)) for t in range(T)]
        label_dates = [image_dates[-2], date]
        if band_ids:
            image = torch.tensor([2.0, 4.0]).view(1, 2, 1, 1).expand(T, 2, PX, PX).clone()
        else:
            image = torch.stack(
                [torch.randn(T, PX, PX, generator=g) * 2 - 9, torch.randn(T, PX, PX, generator=g) * 2 - 16], 1
            )
            image = image.round(decimals=2)
        label = torch.zeros(2, PX, PX, dtype=torch.uint8)
        label[1, 2 + k : 8 + k, 3:11] = 1  # a clearing at the alert date
        label[0, 2 + k : 4 + k, 3:6] = 1
        torch.save({"image": image, "image_dates": image_dates, "label": label, "label_dates": label_dates},
                   root / "Samples" / file)  # fmt: skip
        lines.append(f"{k},{idx},{idx * 10 + 3},{date.isoformat()},{kind},{state},{file},{split}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    generate()
