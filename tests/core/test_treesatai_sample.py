"""The real TreeSatAI-TS tile (../shared/data/treesatai-ts-sample) through the model.

Reads the published files (GeoTIFF aerial, HDF5 Sentinel series, preprocessed S1 .pth), normalises them with
the registry's TreeSatAI-TS statistics and day-of-year dates from the product names, and checks that this
gives exactly the inputs the original code was run on, then the original's outputs.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from anysat_core import MODALITIES, AnySat
from tests.conftest import TREESAT, shared_file

NAME = "Abies_alba_1_1005_WEFL_NLF"


def _doy(products: np.ndarray, field: int) -> torch.Tensor:
    names = [p.decode() if isinstance(p, bytes) else str(p) for p in products]
    return torch.tensor([time.strptime(n.split("_")[field][:8], "%Y%m%d").tm_yday for n in names])


def _norm(x: torch.Tensor, modality: str, channel_axis: int) -> torch.Tensor:
    stats = MODALITIES[modality].stats["treesatai-ts"]
    shape = [1] * x.dim()
    shape[channel_axis] = -1
    mean = torch.tensor(stats.mean).view(shape)
    std = torch.tensor(stats.std).view(shape)
    return (x - mean) / std


@pytest.fixture(scope="module")
def sample() -> dict[str, torch.Tensor]:
    h5py = pytest.importorskip("h5py")
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(shared_file(TREESAT / f"{NAME}.tif")) as src:
        assert src.crs.to_epsg() == 25832 and src.res == pytest.approx((0.2, 0.2))
        aerial = torch.from_numpy(src.read().astype(np.float32))[:, 2:302, 2:302]  # centre 60 m, as the demo
    with h5py.File(shared_file(TREESAT / f"{NAME}.h5"), "r") as f:
        s2 = torch.from_numpy(f["sen-2-data"][:])
        s2_dates = _doy(f["sen-2-products"][:], 2)
        s1_dates = _doy(f["sen-1-asc-products"][:], 4)
    s1 = torch.load(shared_file(TREESAT / f"{NAME}.pth"), weights_only=True)  # (T, 3, 6, 6) VV, VH, VV/VH
    return {
        "aerial": _norm(aerial, "aerial", 0)[None],
        "s2": _norm(s2, "s2", 1)[None],
        "s2_dates": s2_dates[None],
        "s1": _norm(s1, "s1", 1)[None],
        "s1_dates": s1_dates[None],
    }


def test_real_files_give_the_reference_inputs(sample, parity):
    ref = parity["cases"][0]["inputs"]
    assert list(sample) == list(ref)
    for key in ref:
        assert sample[key].shape == ref[key].shape, key
        torch.testing.assert_close(sample[key].to(ref[key].dtype), ref[key], atol=1e-5, rtol=1e-5)
    assert sample["s2_dates"][0, :3].tolist() == [2, 5, 7]


@pytest.mark.parametrize("case_index", range(9))
def test_real_tile_features_match_the_original(sample, parity, parity_model, case_index):
    case = parity["cases"][case_index]
    assert case["name"].startswith("treesat/")
    with torch.no_grad():
        out = parity_model(sample, patch_size=case["patch_size"], output=case["output"],
                           output_modality=case["output_modality"])
    expected = case["expected"]
    assert (out - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())


def test_demo_shapes_on_base(sample):
    """The shapes the original demo prints for the base model."""
    model = AnySat(size="base").eval()
    with torch.inference_mode():
        assert model(sample, patch_size=10, output="tile").shape == (1, 768)
        assert model(sample, patch_size=10, output="patch").shape == (1, 6, 6, 768)
        assert model(sample, patch_size=20, output="patch").shape == (1, 3, 3, 768)
        assert model(sample, patch_size=60, output="patch").shape == (1, 1, 1, 768)
        assert model(sample, patch_size=20, output="dense", output_modality="aerial").shape == (1, 30, 30, 1536)
        assert model(sample, patch_size=20, output="dense", output_modality="s2").shape == (1, 6, 6, 1536)
