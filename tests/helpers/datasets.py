"""Real-layout dataset roots for the loader tests, built from torchgeo's fixtures in the shared folder.

``make_pastis_root`` completes torchgeo's PASTIS-R fixture with the date dictionaries AnySat reads; ``make_flair_root``
copies the FLAIR #2 fixture and applies ``fix_flair``; ``upsample_rasters`` rewrites a FLAIR domain's rasters at a
larger size.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from tests.helpers.shared import SHARED, shared_file

FIXTURES = SHARED / "data" / "torchgeo-fixtures"


def _weekly_yyyymmdd(day0: str, i: int) -> int:
    """The date ``i`` weeks after ``day0`` (ISO) as an int YYYYMMDD."""
    return int(str(np.datetime64(day0) + np.timedelta64(7 * i, "D")).replace("-", ""))


def make_pastis_root(tmp_path: Path) -> Path:
    """torchgeo's PASTIS-R fixture with the dates-S2/dates-S1A dictionaries AnySat needs (JSON strings for S2,
    plain dicts for S1A: both forms occur).  S2 dates are weekly from 2018-09-24, S1A weekly from 2019-01-01."""
    root = tmp_path / "PASTIS-R"
    shutil.copytree(shared_file(FIXTURES / "pastis" / "PASTIS-R"), root)
    fc = json.loads((root / "metadata.geojson").read_text())
    for feat in fc["features"]:
        pid = feat["properties"]["ID_PATCH"]
        t2 = np.load(root / "DATA_S2" / f"S2_{pid}.npy").shape[0]
        t1 = np.load(root / "DATA_S1A" / f"S1A_{pid}.npy").shape[0]
        feat["properties"]["dates-S2"] = json.dumps({str(i): _weekly_yyyymmdd("2018-09-24", i) for i in range(t2)})
        feat["properties"]["dates-S1A"] = {str(i): _weekly_yyyymmdd("2019-01-01", i) for i in range(t1)}
    (root / "metadata.geojson").write_text(json.dumps(fc))
    return root


def fix_flair(root: Path) -> None:
    """Apply the fixes the FLAIR fixture README lists: masks (T, 2, H, W), products.txt one name a line (monthly
    dates from 2021-04-15), splits.json (train D300_2013, val D346_2018, test D388_2019 and D590_2016)."""
    rng = np.random.default_rng(0)
    for data in root.glob("flair*_sen_*/*/*/sen/*data.npy"):
        T, _, H, W = np.load(data).shape
        masks = data.with_name(data.name.replace("data.npy", "masks.npy"))
        np.save(masks, rng.integers(0, 101, (T, 2, H, W), dtype=np.uint8))
        products = data.with_name(data.name.replace("data.npy", "products.txt"))
        names = re.findall(r"S2[AB]_MSIL2A_.*?(?=S2[AB]_MSIL2A_|$)", products.read_text().strip())
        # distinct dates so the day-of-year parsing is visible
        names = [n[:11] + f"2021{4 + i:02d}15" + n[19:] for i, n in enumerate(names)]
        products.write_text("\n".join(names) + "\n")
    (root / "splits.json").write_text(
        json.dumps({"train": ["D300_2013"], "val": ["D346_2018"], "test": ["D388_2019", "D590_2016"]})
    )


def make_flair_root(tmp_path: Path) -> Path:
    """torchgeo's FLAIR #2 fixture copied to ``tmp_path / "FLAIR"`` and completed by ``fix_flair``."""
    root = tmp_path / "FLAIR"
    shutil.copytree(shared_file(FIXTURES / "flair2" / "FLAIR2"), root)
    fix_flair(root)
    return root


def upsample_rasters(root: Path, domain: str, px: int) -> None:
    """Rewrite a FLAIR domain's 32 px fixture patches at ``px`` px (nearest, 0.2 m pixels), so that they cover a
    multiple of 10 m."""
    for path in root.glob(f"flair*_*/{domain}/*/*/*.tif"):
        with rasterio.open(path) as src:
            arr, profile = src.read(), src.profile
        idx = np.arange(px) * arr.shape[-1] // px
        profile.update(width=px, height=px, transform=Affine(0.2, 0.0, 700000.0, 0.0, -0.2, 6600000.0))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr[:, idx][:, :, idx])
