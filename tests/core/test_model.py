"""Model structure, shapes for every modality and output, and behaviours beyond the parity fixture."""

from __future__ import annotations

import json
import math

import pytest
import torch

from anysat_core import MODALITIES, AnySat, set_fused_attention
from anysat_core.data.synthetic import random_batch
from anysat_core.model import projectors
from anysat_core.model.attention import SelfAttention
from tests.helpers.shared import SHARED, shared_file


@pytest.fixture(scope="module")
def tiny() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="tiny").eval()


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_state_dict_matches_released_key_list(size):
    ref = json.loads(shared_file(SHARED / "reference" / f"state_dict_keys_{size}.json").read_text())
    sd = AnySat(size=size).state_dict()
    expected = {k["key"]: tuple(k["shape"]) for k in ref["keys"]}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sum(v.numel() for v in sd.values()) == ref["total_parameters"]


# one extent per modality set that every member divides into whole pixels and patches
@pytest.mark.parametrize("name", [m for m in MODALITIES if not MODALITIES[m].tile_token])
@pytest.mark.parametrize("output", ["tile", "patch", "all", "dense"])
def test_every_modality_alone(tiny, name, output):
    mod = MODALITIES[name]
    patch = 30 if mod.patch_step_m == 30 else 20
    extent = 120
    b = random_batch([name], extent_m=extent, batch_size=2, dates=3)
    with torch.no_grad():
        y = tiny(b, patch_size=patch, output=output)
    h = extent // patch
    D = tiny.embed_dim
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


def test_dense_is_patch_token_then_subpatch_token(tiny):
    b = random_batch(["spot", "s2"], extent_m=80, batch_size=1, dates=4)
    with torch.no_grad():
        dense = tiny(b, patch_size=40, output="dense", output_modality="s2")
        patch = tiny(b, patch_size=40, output="patch")
    D = tiny.embed_dim
    assert dense.shape == (1, 8, 8, 2 * D)
    # the first half is constant inside each 4x4 block and equals the patch token
    for i in range(2):
        for j in range(2):
            block = dense[0, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4, :D]
            torch.testing.assert_close(block, patch[0, i, j].expand(4, 4, D), atol=1e-6, rtol=0)
    assert not torch.allclose(dense[0, 0, 0, D:], dense[0, 0, 1, D:])


def test_modis_l7_alos_together(tiny):
    """PLANTED-like input: the original hub path crashes on it; the training-path semantics apply here."""
    b = random_batch(["s2", "s1", "l7", "alos", "modis"], extent_m=120, batch_size=2, dates=5)
    with torch.no_grad():
        tile = tiny(b, patch_size=30, output="tile")
        allt = tiny(b, patch_size=30, output="all")
        dense = tiny(b, patch_size=30, output="dense", output_modality="l7")
        b2 = dict(b, modis=b["modis"] + 1.0)
        tile2 = tiny(b2, patch_size=30, output="tile")
    assert tile.shape == (2, 256) and allt.shape == (2, 17, 256) and dense.shape == (2, 4, 4, 512)
    torch.testing.assert_close(allt[:, 0], tile, atol=1e-5, rtol=1e-5)
    assert (tile - tile2).abs().max() > 1e-4, "the MODIS token must reach the output"


def test_mask_replaces_values_by_pad_parameter(tiny):
    b = random_batch(["s2"], extent_m=40, dates=6)
    mask = torch.ones_like(b["s2"], dtype=torch.bool)
    mask[:, 2] = False
    filled = b["s2"].clone()
    filled[:, 2] = tiny.projector("s2").pad_parameter.item()
    with torch.no_grad():
        masked = tiny(dict(b, s2_mask=mask), patch_size=20, output="patch")
        manual = tiny(dict(b, s2=filled), patch_size=20, output="patch")
        plain = tiny(b, patch_size=20, output="patch")
    torch.testing.assert_close(masked, manual)
    assert not torch.allclose(masked, plain)


def test_date_order_does_not_matter(tiny):
    """L-TAE pools dates with attention: permuting dates (with their images) changes nothing."""
    b = random_batch(["s2"], extent_m=40, dates=7, batch_size=2)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    shuffled = dict(b, s2=b["s2"][:, perm], s2_dates=b["s2_dates"][:, perm])
    with torch.no_grad():
        torch.testing.assert_close(tiny(b, patch_size=20, output="all"), tiny(shuffled, patch_size=20, output="all"),
                                   atol=1e-5, rtol=1e-4)


def test_temporal_chunking_is_exact(tiny, monkeypatch):
    b = random_batch(["s2", "s1-asc"], extent_m=80, dates=9, batch_size=3)
    with torch.no_grad():
        whole = tiny(b, patch_size=20, output="dense", output_modality="s2")
        monkeypatch.setattr(projectors, "LTAE_CHUNK_FLOATS", 9 * 512 * 5)  # 5 pixels a chunk
        chunked = tiny(b, patch_size=20, output="dense", output_modality="s2")
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=1e-5)


def test_fused_and_explicit_attention_agree(tiny):
    b = random_batch(["aerial", "s2"], extent_m=40, dates=4, batch_size=2)
    with torch.no_grad():
        fused = tiny(b, patch_size=20, output="dense", output_modality="aerial")
        set_fused_attention(False)
        try:
            explicit = tiny(b, patch_size=20, output="dense", output_modality="aerial")
        finally:
            set_fused_attention(True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_flash_compat_attention_is_the_transposed_call():
    """flash-compat = the original handing (B, Hh, N, hd) to flash-attn's (batch, seq, heads, hd) API."""
    torch.manual_seed(0)
    attn = SelfAttention(128, 2).eval()
    x = torch.randn(3, 5, 128)
    q, k, v = attn.qkv(x).view(3, 5, 3, 2, 64).permute(2, 0, 3, 1, 4)  # (B, Hh, N, hd) as the original builds them
    # flash_attn_func(q, k, v) reads dim 1 (Hh) as the sequence and dim 2 (N) as heads:
    logits = torch.einsum("bind,bjnd->bnij", q, k) / math.sqrt(64)
    ref = torch.einsum("bnij,bjnd->bind", logits.softmax(-1), v)  # (B, Hh, N, hd) in flash layout
    ref = attn.proj(ref.transpose(1, 2).reshape(3, 5, 128))  # the original's transpose(1, 2).reshape
    with torch.no_grad():
        torch.testing.assert_close(attn(x, "flash-compat"), ref.detach(), atol=1e-5, rtol=1e-5)


def test_flash_compat_mode_keeps_tokens_separate_in_main_blocks():
    model = AnySat(size="tiny", attention="flash-compat").eval()
    x = torch.randn(2, 7, 256)
    perm = torch.randperm(7)
    with torch.no_grad():
        y = model.blocks[0](x, "flash-compat")
        yp = model.blocks[0](x[:, perm], "flash-compat")
        y_std = model.blocks[0](x, "standard")
    torch.testing.assert_close(y[:, perm], yp)
    assert not torch.allclose(y, y_std)
    b = random_batch(["s2"], extent_m=40, dates=3)
    with torch.no_grad():
        flash_tile = model(b, patch_size=20, output="tile")
        model.attention_mode = "standard"
        assert not torch.allclose(flash_tile, model(b, patch_size=20, output="tile"))


def test_float64_input_is_cast_and_gradients_flow():
    model = AnySat(size="tiny").train()
    b = random_batch(["aerial", "s2"], extent_m=40, dates=3, batch_size=2, dtype=torch.float64)
    y = model(b, patch_size=20, output="dense", output_modality="aerial")
    assert y.dtype == torch.float32
    y.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert "projector_aerial.patch_embed.weight" in grads and "blocks.2.attn.q_learned" in grads
    assert "spatial_encoder.predictor_blocks.1.attn.rpe_k.lookup_table_weight" in grads
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_train_mode_uses_dropout_eval_is_deterministic():
    model = AnySat(size="tiny")
    b = random_batch(["s1-asc"], extent_m=40, dates=6)
    model.train()
    a, c = model(b, patch_size=20, output="tile"), model(b, patch_size=20, output="tile")
    assert not torch.allclose(a, c)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(b, patch_size=20, output="tile"), model(b, patch_size=20, output="tile"))


def test_spatial_chunking_is_exact(tiny, monkeypatch):
    from anysat_core.model import encoder

    b = random_batch(["aerial", "s2"], extent_m=80, dates=3, batch_size=2)
    with torch.no_grad():
        outs = [tiny(b, patch_size=20, output="dense", output_modality="aerial"), tiny(b, patch_size=20, output="tile")]
        monkeypatch.setattr(encoder, "SPATIAL_CHUNK_FLOATS", 3 * 101 * 1024)  # 3 sequences a chunk
        chunked = [tiny(b, patch_size=20, output="dense", output_modality="aerial"), tiny(b, patch_size=20, output="tile")]
    for a, c in zip(outs, chunked):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_tables_cached_under_inference_mode_still_allow_training():
    """Positional/bucket tables built during inference are reused by a later training step."""
    model = AnySat(size="tiny")
    b = random_batch(["aerial", "s2"], extent_m=40, dates=3)
    with torch.inference_mode():
        model.eval()(b, patch_size=20, output="all")
    model.train()(b, patch_size=20, output="all").sum().backward()
    assert model.cls_token.grad is not None
