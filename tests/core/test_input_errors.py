"""Every invalid input gets a specific AnySatError subclass with a message that says what and how."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anysat_core import (
    AnySat,
    AnySatError,
    BatchSizeMismatchError,
    ChannelMismatchError,
    ConfigError,
    DatesError,
    DTypeError,
    ExtentMismatchError,
    InputShapeError,
    NonFiniteInputError,
    NonSquareTileError,
    OutputError,
    PatchSizeError,
    UnknownModalityError,
)
from anysat_core.data.synthetic import random_batch


@pytest.fixture(scope="module")
def model() -> AnySat:
    return AnySat(size="test").eval()


def good() -> dict:
    return random_batch(["aerial", "s2", "s1-asc"], extent_m=60, dates=5, batch_size=2)


def raises(model, batch, exc, *match, patch_size_m=20, **kw):
    with pytest.raises(exc) as info:
        model(batch, patch_size_m=patch_size_m, **kw)
    assert isinstance(info.value, AnySatError)
    msg = str(info.value)
    for m in match:
        assert m in msg, f"{m!r} not in message: {msg}"
    return msg


def test_valid_batch_runs(model):
    with torch.no_grad():
        assert model(good(), patch_size_m=20, output="tile").shape == (2, model.embed_dim)


def test_unknown_modality(model):
    b = good()
    b["sentinel2"] = b.pop("s2")
    b["sentinel2_dates"] = b.pop("s2_dates")
    msg = raises(model, b, UnknownModalityError, "'sentinel2'", "s2", "s1-asc")
    assert isinstance(UnknownModalityError("x"), LookupError) and not msg.startswith("'")


def test_modality_without_projector():
    small = AnySat(size="test", modalities=("s2",)).eval()
    raises(small, good(), UnknownModalityError, "no projector for 'aerial'", "AnySatConfig.modalities")


def test_wrong_number_of_dims(model):
    b = good()
    b["s2"] = b["s2"][:, 0]  # a single date without the time axis
    raises(model, b, InputShapeError, "s2 has shape (2, 10, 6, 6)", "(B, T, C, H, W)", "unsqueeze(1)")
    b = good()
    b["aerial"] = b["aerial"][0]
    raises(model, b, InputShapeError, "aerial", "(B, C, H, W)", "batch axis")


def test_wrong_channels(model):
    b = good()
    b["s2"] = b["s2"][:, :, :9]
    raises(model, b, ChannelMismatchError, "s2 has 9 channels", "expected 10", "B02", "B12")


def test_non_square(model):
    b = good()
    b["aerial"] = b["aerial"][..., :250]
    raises(model, b, NonSquareTileError, "300 x 250", "square")


def test_different_extents(model):
    b = good()
    b["aerial"] = b["aerial"][..., :200, :200]  # 40 m against 60 m
    raises(model, b, ExtentMismatchError, "aerial 40 m", "s2 60 m", "200 px x 0.2 m")


@pytest.mark.parametrize(
    "patch_size_m, match",
    [
        (25, "positive multiple of 10 m"),
        (0, "positive multiple"),
        (-20, "positive multiple"),
        (40, "does not divide the tile extent of 60 m"),
        (120, "does not divide"),
        ("20", "number of metres"),
    ],
)
def test_bad_patch_size(model, patch_size_m, match):
    raises(model, good(), PatchSizeError, match, patch_size_m=patch_size_m)


def test_thirty_metre_sensors_need_multiples_of_30(model):
    b = random_batch(["s2", "l7"], extent_m=120, dates=4)
    raises(model, b, PatchSizeError, "multiple of 30 m", "l7", patch_size_m=20)
    with torch.no_grad():
        assert model(b, patch_size_m=30, output="patch").shape == (1, 4, 4, model.embed_dim)


def test_missing_dates(model):
    b = good()
    del b["s2_dates"]
    raises(model, b, DatesError, "no 's2_dates'", "(B, T) = (2, 5)")


def test_dates_length_mismatch(model):
    b = good()
    b["s2_dates"] = b["s2_dates"][:, :4]
    raises(model, b, DatesError, "T=5", "(2, 5)")


def test_dates_without_series(model):
    b = good()
    b["s1_dates"] = b["s2_dates"]
    raises(model, b, DatesError, "'s1_dates' but no 's1'")
    b = good()
    b["aerial_dates"] = b["s2_dates"]
    raises(model, b, DatesError, "single-date")


def test_batch_sizes_differ(model):
    b = good()
    b["s1-asc"] = b["s1-asc"][:1]
    b["s1-asc_dates"] = b["s1-asc_dates"][:1]
    raises(model, b, BatchSizeMismatchError, "aerial=2", "s1-asc=1")
    b = good()
    b["s2_dates"] = b["s2_dates"][:1]
    raises(model, b, BatchSizeMismatchError, "s2_dates has batch size 1")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite(model, value):
    b = good()
    b["s2"][0, 1, 2, 3, 4] = value
    raises(model, b, NonFiniteInputError, "s2 contains 1 NaN or infinite", "s2_mask")
    b = good()
    b["s2_dates"] = b["s2_dates"].float()
    b["s2_dates"][0, 0] = value
    raises(model, b, DatesError, "s2_dates contains NaN")


def test_integer_images(model):
    b = good()
    b["aerial"] = (b["aerial"] * 50 + 100).clamp(0, 255).to(torch.uint8)
    raises(model, b, DTypeError, "aerial has dtype torch.uint8", "floating", "MODALITIES['aerial'].stats")


def test_not_a_tensor(model):
    b = good()
    b["aerial"] = b["aerial"].tolist()
    raises(model, b, DTypeError, "list", "torch.Tensor")


def test_numpy_arrays_are_accepted(model):
    b = {k: v.numpy() for k, v in good().items()}
    assert isinstance(b["s2"], np.ndarray)
    with torch.no_grad():
        assert model(b, patch_size_m=60, output="tile").shape == (2, model.embed_dim)


def test_bad_mask_shape(model):
    b = good()
    b["s2_mask"] = torch.ones(2, 5, 10, 3, 3)
    raises(model, b, InputShapeError, "s2_mask has shape (2, 5, 10, 3, 3)", "broadcast")


def test_output_errors(model):
    raises(model, good(), OutputError, "output='pixels'", "tile, patch, dense, all", output="pixels")
    raises(model, good(), OutputError, "output_modality='spot'", output="dense", output_modality="spot")


def test_modis_rules(model):
    b = random_batch(["s2", "modis"], extent_m=120, dates=4)
    b["modis"] = b["modis"].expand(-1, -1, -1, 2, 2).contiguous()
    raises(model, b, InputShapeError, "modis has 2 x 2 px", "expected 1 x 1", patch_size_m=30)
    only = random_batch(["modis"], dates=4)
    raises(model, only, InputShapeError, "only 'modis'", patch_size_m=30)
    b = random_batch(["modis", "s2"], extent_m=120, dates=4)
    raises(model, b, OutputError, "one token per tile", patch_size_m=30, output="dense")
    b = random_batch(["s2", "modis"], extent_m=480, dates=2)
    raises(model, b, PatchSizeError, "below 240 m", patch_size_m=240)


def test_empty_or_non_dict_batch(model):
    raises(model, {}, InputShapeError, "no modality tensor")
    raises(model, [torch.zeros(1)], InputShapeError, "expected a dict")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"foo": 1}, "unknown config fields ['foo']"),
        ({"num_heads": 0}, "num_heads=0 must be at least 1"),
        ({"modalities": "s2"}, "is a string; give a tuple"),
        ({"attention": "fast"}, "attention='fast'"),
        ({"mlp_ratio": 0}, "mlp_ratio=0 must be positive"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError) as info:
        AnySat(size="test", **kwargs)
    assert match in str(info.value)


def test_unknown_size():
    with pytest.raises(ConfigError, match="unknown size 'huge'; expected one of test, tiny"):
        AnySat(size="huge")


def test_attention_mode_setter_rejects_unknown_modes(model):
    with pytest.raises(ConfigError, match="attention='fast'"):
        model.attention_mode = "fast"
    assert model.attention_mode == "standard" and model.blocks[0].attn.mode == "standard"


def test_projector_of_a_modality_the_model_lacks():
    small = AnySat(size="test", modalities=("s2",))
    assert small.projector("s2") is small.projector_s2
    with pytest.raises(UnknownModalityError, match="no projector for 's1'; it has s2"):
        small.projector("s1")
    with pytest.raises(UnknownModalityError, match="unknown modality 'sentinel2'"):
        small.projector("sentinel2")
