"""The checkpoint shipped with the package: AnySat.from_pretrained("geoplex-mini") (issue #10, point 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import anysat_core
from anysat_core import AnySat
from anysat_core.data.collate import collate
from anysat_core.data.datasets import get_dataset
from anysat_core.errors import PretrainedWeightsError
from anysat_core.model import checkpoint as ckpt

WEIGHTS = Path(anysat_core.__file__).parent / "weights" / "anysat-tiny-geoplex-mini.pt"
RECORD = json.loads(WEIGHTS.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def shipped() -> AnySat:
    return AnySat.from_pretrained("geoplex-mini")


@pytest.fixture(scope="module")
def tile() -> dict:
    """The fixed held-out tile whose features the record holds (a world the pretraining did not see)."""
    fc = RECORD["feature_check"]
    assert fc["world_seed"] != RECORD["data"]["world_seed"]
    ds = get_dataset(
        "geoplex-mini", seed=fc["world_seed"], modalities=tuple(RECORD["modalities"]), tiles=fc["tiles"], split="all"
    )
    return collate([ds[fc["index"]]])


def test_loads_offline_with_the_recorded_config_and_projectors(shipped, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ANYSAT_WEIGHTS", "/nonexistent/AnySat.pth")  # the released-weights path is not consulted
    model = AnySat.from_pretrained("geoplex-mini")
    assert model.config.to_dict() == RECORD["config"] == shipped.config.to_dict()
    assert sorted(model.modalities) == sorted(RECORD["modalities"])
    projectors = sorted(n.removeprefix("projector_") for n, _ in model.named_children() if n.startswith("projector_"))
    assert projectors == sorted(RECORD["modalities"])
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_file_size_and_sha256_match_the_record():
    assert WEIGHTS.stat().st_size <= 20 * 1024 * 1024 and WEIGHTS.stat().st_size == RECORD["bytes"]
    assert ckpt.sha256_file(WEIGHTS) == RECORD["sha256"]
    stored = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    for key in ("git_commit", "command", "curve", "recipe", "data", "probes"):
        assert RECORD[key]
    assert len(RECORD["curve"]["rows"]) == RECORD["recipe"]["max_steps"]


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "weights" / WEIGHTS.name
    copy.parent.mkdir()
    data = bytearray(WEIGHTS.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_text(json.dumps(RECORD))
    fake_module = tmp_path / "model" / "checkpoint.py"
    monkeypatch.setattr(ckpt, "__file__", str(fake_module))
    with pytest.raises(PretrainedWeightsError, match="corrupt or were changed"):
        AnySat.from_pretrained("geoplex-mini")


def test_unknown_name_lists_the_weights():
    with pytest.raises(PretrainedWeightsError) as info:
        AnySat.from_pretrained("geoplex")
    assert "'base'" in str(info.value) and "'geoplex-mini'" in str(info.value)


def test_fp16_storage_gives_the_recorded_fp32_features_and_differs_from_random_init(shipped, tile):
    fc = RECORD["feature_check"]
    with torch.inference_mode():
        out = shipped(tile, patch_size_m=fc["patch_size_m"], output="all")[0].double()
    assert list(out.shape) == fc["shape"]
    n = out.numel()
    # features of the fp16 weights (run in fp32) against the record made when the file was written
    assert out[0, :8].tolist() == pytest.approx(fc["tile_first8"], abs=1e-3)
    assert abs(float(out.sum()) - fc["sum"]) / n < 1e-3
    assert abs(float((out**2).sum()) - fc["sum_sq"]) / n < 2e-3
    # fp16 storage against the fp32 features of the trained weights, recorded before rounding
    ref = fc["fp32_tile_first8"]
    assert out[0, :8].tolist() == pytest.approx(ref, abs=1e-3)
    assert fc["max_abs_diff_fp16_vs_fp32"] <= 1e-3
    torch.manual_seed(0)
    random = AnySat(config=shipped.config).eval()
    with torch.inference_mode():
        rnd = random(tile, patch_size_m=fc["patch_size_m"], output="all")[0].double()
    assert (rnd - out).abs().mean() > 0.1 * out.abs().mean()
