"""The real TreeSatAI-TS tile (../shared/data/treesatai-ts-sample) through the model.

The TreeSatAI-TS loader reads the published files (GeoTIFF aerial, HDF5 Sentinel series, preprocessed S1 .pth),
normalises them with the registry's TreeSatAI-TS statistics and dates them by day of year from the product
names; this must give exactly the inputs the original code was run on, then the original's outputs.
"""

from __future__ import annotations

import pytest
import torch

from anysat_core import AnySat
from anysat_core.data.collate import collate
from tests.helpers.shared import treesat_root


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, torch.Tensor]:
    pytest.importorskip("h5py")
    pytest.importorskip("rasterio")
    from anysat_core.data.datasets.treesatai_ts import TreeSatAITS

    ds = TreeSatAITS(treesat_root(tmp_path_factory.mktemp("treesat")), "test", modalities=["aerial", "s2", "s1"])
    meta = ds[0]["meta"]
    assert meta.crs == "EPSG:25832" and meta.gsd_m == pytest.approx(0.2)
    batch = collate([ds[0]])
    out: dict[str, torch.Tensor] = {}
    for mod in ("aerial", "s2", "s1"):  # model inputs, each series followed by its dates
        out[mod] = batch[mod]
        if f"{mod}_dates" in batch:
            out[f"{mod}_dates"] = batch[f"{mod}_dates"]
    return out


def test_real_files_give_the_reference_inputs(sample, parity):
    """Bit for bit the inputs of the recorded treesat/* cases, so test_parity's checks of those cases hold for the
    real files too."""
    treesat = [c for c in parity["cases"] if c["name"].startswith("treesat/")]
    assert len(treesat) == 9
    for case in treesat:
        ref = case["inputs"]
        assert list(sample) == list(ref)
        for key in ref:
            assert sample[key].dtype == ref[key].dtype and torch.equal(sample[key], ref[key]), key
    assert sample["s2_dates"][0, :3].tolist() == [2, 5, 7]


def test_real_tile_features_match_the_original(sample, parity, parity_model):
    case = parity["cases"][0]
    assert case["name"] == "treesat/ps20/tile"
    with torch.no_grad():
        out = parity_model(sample, patch_size_m=case["patch_size"], output=case["output"])
    expected = case["expected"]
    assert (out - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())


def test_demo_shapes(sample):
    """The shapes the original demo prints for the base model, e.g. (1, 6, 6, 768) for patch_size_m=10.

    The grid depends only on the tile and the patch size, the width only on the size preset (768 for base, checked
    against the released key list in test_model), so the test-size model (D = 64) checks the same shapes.
    """
    model = AnySat(size="test").eval()
    D = model.embed_dim
    with torch.inference_mode():
        assert model(sample, patch_size_m=10, output="tile").shape == (1, D)
        assert model(sample, patch_size_m=10, output="patch").shape == (1, 6, 6, D)
        assert model(sample, patch_size_m=20, output="patch").shape == (1, 3, 3, D)
        assert model(sample, patch_size_m=60, output="patch").shape == (1, 1, 1, D)
        assert model(sample, patch_size_m=20, output="dense", output_modality="aerial").shape == (1, 30, 30, 2 * D)
        assert model(sample, patch_size_m=20, output="dense", output_modality="s2").shape == (1, 6, 6, 2 * D)
