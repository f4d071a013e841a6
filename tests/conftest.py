"""Shared fixtures: the ../shared folder (reference outputs, real sample tile). Helpers live in tests/helpers."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.shared import PARITY, shared_file

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
