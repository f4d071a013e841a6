"""Model structure, shapes for every modality and output, and behaviours beyond the parity fixture."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from anysat_core import MODALITIES, AnySat, PatchSizeError
from anysat_core.data.synthetic import random_batch
from anysat_core.model import encoder, projectors
from tests.helpers.shared import SHARED, shared_file


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_state_dict_matches_released_key_list(size):
    """Parameter names and shapes equal the released checkpoint's, so no key conversion is needed."""
    ref = json.loads(shared_file(SHARED / "reference" / f"state_dict_keys_{size}.json").read_text())
    with torch.device("meta"):  # shapes without allocating
        sd = AnySat(size=size).state_dict()
    expected = {k["key"]: tuple(k["shape"]) for k in ref["keys"]}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sum(v.numel() for v in sd.values()) == ref["total_parameters"]


# one extent per modality set that every member divides into whole pixels and patches
@pytest.mark.parametrize("name", [m for m in MODALITIES if not MODALITIES[m].tile_token])
@pytest.mark.parametrize("output", ["tile", "patch", "all", "dense"])
def test_every_modality_alone(model, name, output):
    mod = MODALITIES[name]
    patch = 30 if mod.patch_step_m == 30 else 20
    extent = 120
    b = random_batch([name], extent_m=extent, batch_size=2, dates=3)
    with torch.no_grad():
        y = model(b, patch_size_m=patch, output=output)
    h = extent // patch
    D = model.embed_dim
    if output == "tile":
        assert y.shape == (2, D)
    elif output == "patch":
        assert y.shape == (2, h, h, D)
    elif output == "all":
        assert y.shape == (2, 1 + h * h, D)
    else:
        r = {"vhr": (patch // 10) * mod.pixels_per_token}.get(mod.projector, max(1, (patch // 10) // mod.reduce_scale))
        assert y.shape == (2, h * r, h * r, 2 * D)
    assert torch.isfinite(y).all()


def test_dense_is_patch_token_then_subpatch_token(model):
    b = random_batch(["spot", "s2"], extent_m=80, batch_size=1, dates=4)
    with torch.no_grad():
        dense = model(b, patch_size_m=40, output="dense", output_modality="s2")
        patch = model(b, patch_size_m=40, output="patch")
    D = model.embed_dim
    assert dense.shape == (1, 8, 8, 2 * D)
    # the first half is constant inside each 4x4 block and equals the patch token
    for i in range(2):
        for j in range(2):
            block = dense[0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4, :D]
            torch.testing.assert_close(block, patch[0, i, j].expand(4, 4, D), atol=1e-6, rtol=0)
    assert not torch.allclose(dense[0, 0, 0, D:], dense[0, 0, 1, D:])


def test_modis_l7_alos_together(model):
    """PLANTED-like input: the original hub path crashes on it; the training-path semantics apply here."""
    b = random_batch(["s2", "s1", "l7", "alos", "modis"], extent_m=120, batch_size=2, dates=5)
    D = model.embed_dim
    with torch.no_grad():
        tile = model(b, patch_size_m=30, output="tile")
        allt = model(b, patch_size_m=30, output="all")
        dense = model(b, patch_size_m=30, output="dense", output_modality="l7")
        b2 = dict(b, modis=b["modis"] + 1.0)
        tile2 = model(b2, patch_size_m=30, output="tile")
    assert tile.shape == (2, D) and allt.shape == (2, 17, D) and dense.shape == (2, 4, 4, 2 * D)
    torch.testing.assert_close(allt[:, 0], tile, atol=1e-5, rtol=1e-5)
    assert (tile - tile2).abs().max() > 1e-4, "the MODIS token must reach the output"


def test_mask_replaces_values_by_pad_parameter(model):
    b = random_batch(["s2"], extent_m=40, dates=6)
    mask = torch.ones_like(b["s2"], dtype=torch.bool)
    mask[:, 2] = False
    filled = b["s2"].clone()
    filled[:, 2] = model.projector("s2").pad_parameter.item()
    with torch.no_grad():
        masked = model(dict(b, s2_mask=mask), patch_size_m=20, output="patch")
        manual = model(dict(b, s2=filled), patch_size_m=20, output="patch")
        plain = model(b, patch_size_m=20, output="patch")
    torch.testing.assert_close(masked, manual)
    assert not torch.allclose(masked, plain)


def test_date_order_does_not_matter(model):
    """L-TAE pools dates with attention: permuting dates (with their images) changes nothing."""
    b = random_batch(["s2"], extent_m=40, dates=7, batch_size=2)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    shuffled = dict(b, s2=b["s2"][:, perm], s2_dates=b["s2_dates"][:, perm])
    with torch.no_grad():
        torch.testing.assert_close(
            model(b, patch_size_m=20, output="all"),
            model(shuffled, patch_size_m=20, output="all"),
            atol=1e-5,
            rtol=1e-4,
        )


@pytest.fixture(scope="module")
def model64(model) -> AnySat:
    """The test model in float64: chunked and whole runs then agree far below float32 rounding."""
    return copy.deepcopy(model).double()


def test_temporal_chunking_is_exact(model64, monkeypatch):
    model = model64
    b = random_batch(["s2", "s1-asc"], extent_m=80, dates=9, batch_size=3)
    widest = 2 * model.embed_dim  # widest layer of the L-TAE input MLP
    with torch.no_grad():
        whole = model(b, patch_size_m=20, output="dense", output_modality="s2")
        monkeypatch.setattr(projectors, "LTAE_CHUNK_FLOATS", 9 * widest * 5)  # 5 pixels a chunk
        chunked = model(b, patch_size_m=20, output="dense", output_modality="s2")
    assert whole.dtype == torch.float64
    torch.testing.assert_close(whole, chunked, atol=1e-10, rtol=1e-10)


def test_spatial_chunking_is_exact(model64, monkeypatch):
    model = model64
    b = random_batch(["aerial", "s2"], extent_m=80, dates=3, batch_size=2)
    hidden = 4 * model.embed_dim  # spatial-encoder MLP width
    runs = [
        lambda: model(b, patch_size_m=20, output="dense", output_modality="aerial"),
        lambda: model(b, patch_size_m=20, output="tile"),
    ]
    with torch.no_grad():
        outs = [run() for run in runs]
        monkeypatch.setattr(encoder, "SPATIAL_CHUNK_FLOATS", 3 * 101 * hidden)  # 3 sequences of 1 + 10*10 a chunk
        chunked = [run() for run in runs]
    for a, c in zip(outs, chunked):
        torch.testing.assert_close(a, c, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------- the patch_size_m keyword


def test_patch_size_is_a_deprecated_alias(model):
    b = random_batch(["s2"], extent_m=40, dates=3)
    with torch.no_grad():
        new = model(b, patch_size_m=20, output="patch")
        with pytest.warns(DeprecationWarning, match="pass patch_size_m="):
            old = model(b, patch_size=20, output="patch")
    torch.testing.assert_close(old, new, atol=0, rtol=0)


def test_patch_size_given_twice_or_not_at_all(model):
    b = random_batch(["s2"], extent_m=40, dates=3)
    with pytest.raises(PatchSizeError, match="got patch_size_m=20 and patch_size=20; pass only patch_size_m"):
        model(b, patch_size_m=20, patch_size=20)
    with pytest.raises(PatchSizeError, match="no patch size given; pass patch_size_m"):
        model(b, output="tile")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
def test_group_norm_rows_equals_group_norm_with_and_without_autograd(dtype, relu):
    """The inference path (layer norm over the groups + affine in place) gives F.group_norm's values; with autograd
    on it is F.group_norm itself and gradients reach the input and the norm's parameters."""
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 96)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    rows = (torch.randn(37, 96) * 3 + 1).to(dtype)
    expected = torch.nn.functional.group_norm(rows.float(), 4, norm.weight, norm.bias, norm.eps)
    expected = expected.relu() if relu else expected
    with torch.inference_mode():
        fast = projectors.group_norm_rows(rows, norm, relu=relu)
    assert fast.dtype == dtype and fast.shape == rows.shape
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(fast.float(), expected, atol=tol, rtol=tol)
    leaf = rows.float().requires_grad_()
    out = projectors.group_norm_rows(leaf, norm, relu=relu)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- attention switches


def test_attention_modules_fused_vs_manual():
    """Like timm's test_attn2d: each attention module gives the same output with fused_attn on and off."""
    from anysat_core.model.attention import CrossAttention, RPESelfAttention, SelfAttention
    from anysat_core.model.pos_embed import distance_buckets

    torch.manual_seed(0)
    x = torch.randn(3, 1 + 16, 64)
    buckets = distance_buckets(4, special=1)
    for attn, args in [
        (SelfAttention(64, 2), (x,)),
        (SelfAttention(64, 2, mode="flash-compat"), (x,)),
        (RPESelfAttention(64, 2), (x, buckets)),
        (RPESelfAttention(64, 2), (x, buckets, 1)),
        (CrossAttention(64, 2), (x, torch.randn(17, 64), buckets)),
    ]:
        for p in attn.parameters():  # the relative-position tables start at zero
            torch.nn.init.normal_(p, std=0.1)
        attn.eval()
        assert attn.fused_attn
        with torch.no_grad():
            fused = attn(*args)
            attn.fused_attn = False
            manual = attn(*args)
        torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)


def test_fused_attention_switch_on_the_model(model):
    b = random_batch(["aerial", "s2"], extent_m=40, dates=4, batch_size=2)
    with torch.no_grad():
        fused = model(b, patch_size_m=20, output="dense", output_modality="aerial")
        model.fused_attention = False
        try:
            assert not any(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
            manual = model(b, patch_size_m=20, output="dense", output_modality="aerial")
        finally:
            model.fused_attention = True
    assert model.fused_attention
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-4)


def test_fused_attention_default_from_environment(monkeypatch):
    from anysat_core import ConfigError

    monkeypatch.setenv("ANYSAT_FUSED_ATTN", "0")
    assert AnySat(size="test").fused_attention is False
    monkeypatch.setenv("ANYSAT_FUSED_ATTN", "maybe")
    with pytest.raises(ConfigError, match=r"ANYSAT_FUSED_ATTN='maybe'; expected 1 .* or 0"):
        AnySat(size="test")


def test_flash_compat_attention_is_the_transposed_call():
    """flash-compat = the original handing (B, Hh, N, hd) to flash-attn's (batch, seq, heads, hd) API."""
    from anysat_core.model.attention import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(128, 2, mode="flash-compat").eval()
    x = torch.randn(3, 5, 128)
    q, k, v = attn.qkv(x).view(3, 5, 3, 2, 64).permute(2, 0, 3, 1, 4)  # (B, Hh, N, hd) as the original builds them
    # flash_attn_func(q, k, v) reads dim 1 (Hh) as the sequence and dim 2 (N) as heads:
    logits = torch.einsum("bind,bjnd->bnij", q, k) / math.sqrt(64)
    ref = torch.einsum("bnij,bjnd->bind", logits.softmax(-1), v)  # (B, Hh, N, hd) in flash layout
    ref = attn.proj(ref.transpose(1, 2).reshape(3, 5, 128))  # the original's transpose(1, 2).reshape
    with torch.no_grad():
        torch.testing.assert_close(attn(x), ref.detach(), atol=1e-5, rtol=1e-5)


def test_flash_compat_keeps_tokens_separate_in_main_blocks():
    model = AnySat(size="test", attention="flash-compat").eval()
    block = model.blocks[0]
    x = torch.randn(2, 7, model.embed_dim)
    x2 = x.clone()
    x2[:, 3] += torch.randn(model.embed_dim)  # not a constant: LayerNorm would remove it
    with torch.no_grad():
        changed = (block(x) - block(x2)).abs().amax(dim=(0, 2)) > 1e-3  # which tokens' outputs moved
        assert changed.tolist() == [i == 3 for i in range(7)]
        model.attention_mode = "standard"
        assert ((block(x) - block(x2)).abs().amax(dim=(0, 2)) > 1e-3).all()


def test_attention_mode_setter_equals_a_model_built_in_that_mode():
    torch.manual_seed(0)
    model = AnySat(size="test").eval()
    flash = AnySat(size="test", attention="flash-compat").eval()
    flash.load_state_dict(model.state_dict())
    b = random_batch(["s2"], extent_m=40, dates=3)
    with torch.no_grad():
        standard_tile = model(b, patch_size_m=20, output="tile")
        model.attention_mode = "flash-compat"
        assert model.config.attention == "flash-compat"
        switched = model(b, patch_size_m=20, output="tile")
        torch.testing.assert_close(switched, flash(b, patch_size_m=20, output="tile"), atol=0, rtol=0)
        assert not torch.allclose(switched, standard_tile)
        model.attention_mode = "standard"
        torch.testing.assert_close(model(b, patch_size_m=20, output="tile"), standard_tile, atol=0, rtol=0)


# ---------------------------------------------------------------- training behaviour


def test_float64_input_is_cast_and_gradients_flow():
    model = AnySat(size="test").train()
    b = random_batch(["aerial", "s2"], extent_m=40, dates=3, batch_size=2, dtype=torch.float64)
    y = model(b, patch_size_m=20, output="dense", output_modality="aerial")
    assert y.dtype == torch.float32
    y.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert "projector_aerial.patch_embed.weight" in grads and "blocks.1.attn.q_learned" in grads
    assert "spatial_encoder.predictor_blocks.0.attn.rpe_k.lookup_table_weight" in grads
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_train_mode_uses_dropout_eval_is_deterministic():
    model = AnySat(size="test")
    b = random_batch(["s1-asc"], extent_m=40, dates=6)
    model.train()
    a, c = model(b, patch_size_m=20, output="tile"), model(b, patch_size_m=20, output="tile")
    assert not torch.allclose(a, c)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(b, patch_size_m=20, output="tile"), model(b, patch_size_m=20, output="tile"))


def test_tables_cached_under_inference_mode_still_allow_training():
    """Positional/bucket tables built during inference are reused by a later training step."""
    model = AnySat(size="test")
    b = random_batch(["aerial", "s2"], extent_m=40, dates=3)
    with torch.inference_mode():
        model.eval()(b, patch_size_m=20, output="all")
    model.train()(b, patch_size_m=20, output="all").sum().backward()
    assert model.cls_token.grad is not None
