"""Paths of the shared folder (../shared beside the checkout, or $ANYSAT_SHARED) and a real-layout TreeSatAI-TS root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ANYSAT_SHARED", ROOT.parent / "shared"))
PARITY = SHARED / "reference" / "parity_public.pt"
TREESAT = SHARED / "data" / "treesatai-ts-sample"


def shared_file(path: Path) -> Path:
    """Return ``path`` or skip the test with the reason when the shared folder lacks it."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared folder (../shared beside the checkout, or $ANYSAT_SHARED) is needed")
    return path


TREESAT_NAME = "Abies_alba_1_1005_WEFL_NLF"


def treesat_root(tmp: Path, *, pth: bool = True, labels: dict | None = None) -> Path:
    """A real-layout TreeSatAI-TS root around the one real tile (files symlinked, labels and split lists written)."""
    root = tmp / "TreeSat"
    for folder, ext in [("aerial", "tif"), ("sentinel", "h5")] + ([("s1-asc", "pth")] if pth else []):
        (root / folder).mkdir(parents=True)
        (root / folder / f"{TREESAT_NAME}.{ext}").symlink_to(shared_file(TREESAT / f"{TREESAT_NAME}.{ext}").resolve())
    (root / "labels").mkdir()
    labels = labels or {f"{TREESAT_NAME}.tif": [["Abies", 0.82], ["Picea", 0.12], ["Fagus", 0.06]]}
    (root / "labels" / "TreeSatBA_v9_60m_multi_labels.json").write_text(json.dumps(labels))
    for split in ("train", "val", "test"):
        (root / f"{split}_filenames.lst").write_text(f"{TREESAT_NAME}.tif\n")
    return root
