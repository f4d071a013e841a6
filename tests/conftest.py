"""Shared fixtures: the ../shared folder (reference outputs, real sample tile)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANYSAT_SHARED", ROOT.parent / "shared"))
PARITY = SHARED / "reference" / "parity_public.pt"
TREESAT = SHARED / "data" / "treesatai-ts-sample"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_file(path: Path) -> Path:
    """Return ``path`` or skip the test with the reason when the shared folder lacks it."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared folder (../shared beside the checkout, or $ANYSAT_SHARED) is needed")
    return path


@pytest.fixture(scope="session")
def parity() -> dict:
    """The original code's outputs on fixed inputs (tiny model, random weights)."""
    return torch.load(shared_file(PARITY), weights_only=True)


@pytest.fixture(scope="session")
def parity_model(parity):
    """Tiny AnySat with the parity checkpoint's weights, eval mode."""
    from anysat_core import AnySat

    model = AnySat(size=parity["size"])
    model.load_state_dict(parity["checkpoint"]["state_dict"])
    return model.eval()
