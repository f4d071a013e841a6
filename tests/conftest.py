"""Shared fixtures: the ../shared folder (reference outputs, real sample tile). Helpers live in tests/helpers."""

from __future__ import annotations

import os

# Several pytest-xdist workers share the cores: one thread each (torch, OpenMP, OpenBLAS) instead of oversubscribing.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(_THREADS))

import pytest
import torch

from tests.helpers.shared import PARITY, shared_file

torch.set_num_threads(_THREADS)


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
