"""Checkpoint formats, mismatch reports, atomic saving and the released-weights path (no network)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from anysat_core import (
    AnySat,
    AnySatError,
    CheckpointError,
    CheckpointMismatchError,
    OutputExistsError,
    PretrainedWeightsError,
)
from anysat_core.data.synthetic import random_batch
from anysat_core.model import checkpoint as ckpt
from tests.helpers.shared import SHARED, shared_file


@pytest.fixture(scope="module")
def official_tiny(tmp_path_factory, parity) -> Path:
    """The parity checkpoint written as the original code writes it: {'state_dict': ...}."""
    path = tmp_path_factory.mktemp("ckpt") / "official_tiny.pth"
    torch.save({"state_dict": parity["checkpoint"]["state_dict"]}, path)
    return path


def test_official_format_gives_the_original_outputs(official_tiny, parity):
    model = AnySat.from_checkpoint(official_tiny, size="tiny")
    assert not model.training
    case = next(c for c in parity["cases"] if c["name"] == "synth_spot_s2_s1asc/ps40/patch")
    with torch.no_grad():
        out = model(case["inputs"], patch_size_m=case["patch_size"], output=case["output"])
    torch.testing.assert_close(out, case["expected"], atol=1e-4, rtol=1e-4)


def test_official_format_size_inferred(official_tiny):
    assert AnySat.from_checkpoint(official_tiny).size == "tiny"


def test_own_format_round_trip(tmp_path):
    model = AnySat(size="test", modalities=("s2", "s1-asc"), attention="flash-compat").eval()
    path = tmp_path / "mine.pth"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.pth"], "no temporary file left behind"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "anysat_core" and raw["config"]["modalities"] == ["s2", "s1-asc"]
    loaded = AnySat.from_checkpoint(path)
    assert loaded.config == model.config
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        AnySat(size="test").save(path)  # never clobbered silently
    assert path.read_bytes() == before
    model.save(path, overwrite=True)
    b = random_batch(["s2"], extent_m=40, dates=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(b, patch_size_m=20, output="all"), model(b, patch_size_m=20, output="all"))
    with pytest.raises(CheckpointMismatchError, match="holds an AnySat 'test' model but size='base'"):
        AnySat.from_checkpoint(path, size="base")


def test_prefixed_training_checkpoint(tmp_path):
    model = AnySat(size="test")
    sd = {f"model.target_encoder.{k}": v for k, v in model.state_dict().items()}
    sd["model.predictor.mask_token"] = torch.zeros(1, 1, 8)  # other modules of the training run are ignored
    sd = {**sd, "optimizer_step": torch.tensor(3)}
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    loaded = AnySat.from_checkpoint(path, size="test")
    assert loaded.size == "test"
    assert torch.equal(loaded.state_dict()["blocks.1.attn.q_learned"], model.state_dict()["blocks.1.attn.q_learned"])


def test_mismatches_are_all_listed(tmp_path):
    sd = AnySat(size="test").state_dict()
    del sd["projector_s2.patch_embed.in_norm.weight"]
    sd["projector_s1-des.pad_parameter"] = torch.tensor(0.0)
    sd["blocks.0.attn.qkv.bias"] = torch.zeros(10)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        AnySat.from_checkpoint(path, size="test")
    e = info.value
    assert e.missing == ["projector_s2.patch_embed.in_norm.weight"]
    assert e.unexpected == ["projector_s1-des.pad_parameter"]
    assert e.mismatched == [("blocks.0.attn.qkv.bias", (10,), (192,))]
    for part in ("missing keys (1)", "unexpected keys (1)", "mis-shaped keys (1)", "checkpoint (10,) vs model (192,)"):
        assert part in str(e)


def test_wrong_size_lists_shapes(official_tiny):
    with pytest.raises(CheckpointMismatchError) as info:
        AnySat.from_checkpoint(official_tiny, size="test")
    assert ("cls_token", (1, 1, 256), (1, 1, 64)) in info.value.mismatched
    assert "... and" in str(info.value)  # long lists are cut, counts kept


def test_unreadable_files(tmp_path, official_tiny):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(official_tiny.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*truncated\.pth"):
        AnySat.from_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        AnySat.from_checkpoint(tmp_path / "nope.pth")
    odd = tmp_path / "odd.pth"
    torch.save({"weights": [1, 2]}, odd)
    with pytest.raises(CheckpointError, match=re.escape("expected {'state_dict'")):
        AnySat.from_checkpoint(odd)


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        AnySat(size="test").save(tmp_path / "no" / "x.pth")


# ---------------------------------------------------------------- released weights, offline


@pytest.fixture(scope="module")
def released_file(tmp_path_factory) -> Path:
    """A file in the released format, standing in for AnySat.pth where only its bytes matter (path and hash)."""
    path = tmp_path_factory.mktemp("released") / "AnySat.pth"
    torch.save({"state_dict": AnySat(size="test").state_dict()}, path)
    return path


def _hf_cache(root: Path, source: Path, *, corrupt: bool = False) -> Path:
    """Lay out a Hugging Face hub cache holding models/AnySat.pth as huggingface_hub itself does."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    repo = root / "models--g-astruc--AnySat"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / digest
    shutil.copyfile(source, blob)
    if corrupt:
        with open(blob, "r+b") as f:
            f.seek(100)
            f.write(b"\x00" * 16)
    commit = "0" * 40
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit / "models"
    snap.mkdir(parents=True)
    (snap / "AnySat.pth").symlink_to(os.path.relpath(blob, snap))
    return root


@pytest.fixture
def loads(monkeypatch) -> list[tuple[str, str | None]]:
    """Records the (path, size) from_pretrained hands to from_checkpoint instead of building a base model."""
    calls: list[tuple[str, str | None]] = []

    def fake(cls, path, size=None, **kwargs):
        calls.append((str(path), size))
        return "model"

    monkeypatch.setattr(AnySat, "from_checkpoint", classmethod(fake))
    return calls


def test_from_pretrained_reads_the_hub_cache_offline(tmp_path, released_file, monkeypatch, loads):
    monkeypatch.delenv(ckpt.ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _hf_cache(tmp_path / "hub", released_file)
    assert AnySat.from_pretrained("base", cache_dir=cache, local_files_only=True) == "model"
    [(path, size)] = loads
    assert size == "base" and Path(path).is_relative_to(cache)
    assert Path(path).read_bytes() == released_file.read_bytes()


def test_from_pretrained_detects_a_corrupt_download(tmp_path, released_file, monkeypatch, loads):
    monkeypatch.delenv(ckpt.ENV_VAR, raising=False)
    cache = _hf_cache(tmp_path / "hub", released_file, corrupt=True)
    with pytest.raises(PretrainedWeightsError, match="corrupt"):
        AnySat.from_pretrained("base", cache_dir=cache, local_files_only=True)
    assert not loads


def test_from_pretrained_env_var_and_path(released_file, monkeypatch, loads):
    monkeypatch.setenv(ckpt.ENV_VAR, str(released_file))
    AnySat.from_pretrained("base")
    assert loads == [(str(released_file), "base")]
    monkeypatch.delenv(ckpt.ENV_VAR)
    assert ckpt.pretrained_path("base", path=released_file) == str(released_file)


@pytest.mark.slow
def test_from_pretrained_builds_the_base_model(tmp_path, monkeypatch):
    """End to end with a base-size file in the released format, made from the released key list (every tensor filled
    with its key's index, so each must land under its own name; the real file needs the network)."""
    ref = json.loads(shared_file(SHARED / "reference" / "state_dict_keys_base.json").read_text())
    released = {k["key"]: torch.full(k["shape"], float(i)) for i, k in enumerate(ref["keys"])}
    path = tmp_path / "AnySat.pth"
    torch.save({"state_dict": released}, path)
    monkeypatch.setenv(ckpt.ENV_VAR, str(path))
    model = AnySat.from_pretrained("base")
    assert model.size == "base" and not model.training
    loaded = model.state_dict()
    assert loaded.keys() == released.keys()
    assert all(torch.equal(loaded[k], v) for k, v in released.items())


def test_from_pretrained_offline_without_weights_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError) as info:
        AnySat.from_pretrained("base", cache_dir=tmp_path, local_files_only=True)
    msg = str(info.value)
    for part in ("models/AnySat.pth", "g-astruc/AnySat", "ANYSAT_WEIGHTS", "path="):
        assert part in msg
    assert isinstance(info.value, AnySatError) and isinstance(info.value, OSError)


def test_from_pretrained_bad_env_path_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv(ckpt.ENV_VAR, str(tmp_path / "missing.pth"))
    with pytest.raises(PretrainedWeightsError, match=r"ANYSAT_WEIGHTS variable points to .*missing\.pth"):
        AnySat.from_pretrained("base")
    with pytest.raises(PretrainedWeightsError, match="only 'base' was published"):
        AnySat.from_pretrained("tiny")


def test_damaged_own_format(tmp_path):
    path = tmp_path / "damaged.pth"
    torch.save({"format": "anysat_core", "format_version": 1, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="lacks a 'config' or 'state_dict' dict"):
        AnySat.from_checkpoint(path)
    torch.save({"format": "anysat_core", "format_version": 9, "config": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="format_version 9; this anysat_core reads up to 1"):
        AnySat.from_checkpoint(path)
