"""JEPA pretraining core: predictor, losses, schedules, the LightningModule's step, EMA and a tiny training run."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from anysat_core import AnySat
from anysat_core.data.synthetic import random_batch
from anysat_core.errors import ConfigError, InputShapeError, UnknownModalityError
from training.batch import PretrainBatch
from training.jepa import AnySatJEPA, drop_dates, modality_mask, patch_validity, pixel_statistics
from training.losses import (
    bow_histogram,
    bow_loss,
    contrastive_loss,
    jepa_loss,
    kmeans_update,
    normalize_targets,
    tile_contrastive_loss,
    variance_loss,
)
from training.predictor import JEPAPredictor
from training.schedules import ema_momentum, lr_factor

MODS = ["s2", "s1-asc"]


def make_batch(batch_size: int = 2, seed: int = 0, modalities: list[str] = MODS, dates: int = 6) -> PretrainBatch:
    """60 m tiles at 10 m patches: a 6 x 6 grid; two 2 x 2 target blocks and the context elsewhere."""
    inputs = random_batch(modalities, extent_m=60, batch_size=batch_size, dates=dates, seed=seed)
    targets, context = [], []
    for b in range(batch_size):
        r, c = b % 3, 1 + b % 2
        blocks = [[(r + i) * 6 + c + j for i in range(2) for j in range(2)] for r, c in ((r, c), (3, 3))]
        taken = {p for blk in blocks for p in blk}
        targets.append(blocks)
        context.append([p for p in range(36) if p not in taken][:20])
    return {
        "inputs": inputs,
        "patch_size_m": 10.0,
        "context": torch.tensor(context),
        "targets": torch.tensor(targets),
        "dataset": "synthetic",
    }


def make_module(**kw) -> AnySatJEPA:
    args = {"size": "test", "modalities": MODS, "predictor_depth": 2, "lr": 1e-3, "total_steps": 100, **kw}
    return AnySatJEPA(**args)


def _trainer(steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader(batch: PretrainBatch, n: int) -> DataLoader:
    return DataLoader([batch] * n, batch_size=None)


# ---------------------------------------------------------------- predictor


def test_predictor_shapes_and_positions():
    pred = JEPAPredictor(64, depth=2, num_heads=2)
    ctx = torch.randn(3, 5, 64)
    cpos = torch.randint(0, 16, (3, 5))
    tpos = torch.randint(0, 16, (3, 4, 2))
    out = pred(ctx, cpos, tpos, grid=4, patch_cells_10m=2)
    assert out.shape == (3, 4, 2, 64)
    # each target block is predicted in its own sequence: block 0 does not see block 1's positions
    tpos2 = tpos.clone()
    tpos2[:, 1] = (tpos2[:, 1] + 1) % 16
    out2 = pred(ctx, cpos, tpos2, grid=4, patch_cells_10m=2)
    torch.testing.assert_close(out[:, 0], out2[:, 0])
    assert not torch.allclose(out[:, 1], out2[:, 1])
    with pytest.raises(InputShapeError, match=r"\[0, 16\)"):
        pred(ctx, cpos, tpos + 16, grid=4, patch_cells_10m=2)
    with pytest.raises(ConfigError, match="predictor_dim"):
        JEPAPredictor(64, predictor_dim=66, num_heads=3)


def test_predictor_pe_is_that_of_the_patch_itself():
    """Intended behaviour: a token at patch p gets PE(p) (the original gave PE(p - 1))."""
    from anysat_core.model.pos_embed import sincos_2d

    pred = JEPAPredictor(64, depth=1, num_heads=2)
    seen = {}
    pred.predictor_blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    ctx = torch.zeros(1, 1, 64)
    pred(ctx, torch.tensor([[5]]), torch.tensor([[[7]]]), grid=4, patch_cells_10m=1)
    pe = sincos_2d(64, 4, 1)
    torch.testing.assert_close(seen["x"][0, 1], pred.predictor_embed.bias + pe[5])
    torch.testing.assert_close(seen["x"][0, 2], pred.mask_token[0, 0] + pe[7])


# ---------------------------------------------------------------- losses


def test_jepa_loss_zero_on_normalised_target():
    target = torch.randn(2, 3, 4, 64) * 5 + 2
    assert jepa_loss(normalize_targets(target), target).item() == pytest.approx(0.0, abs=1e-7)
    assert jepa_loss(torch.zeros_like(target), target).item() > 0.1
    with pytest.raises(InputShapeError):
        jepa_loss(torch.zeros(2, 3), target)


def test_contrastive_loss_lowest_for_aligned_modalities():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 9, 32, generator=g)
    noise = 0.1 * torch.randn(4, 9, 32, generator=g)
    aligned = contrastive_loss({"s2": base, "s1-asc": base + noise})
    shuffled = contrastive_loss({"s2": base, "s1-asc": (base + noise)[:, torch.randperm(9, generator=g)]})
    other_sample = contrastive_loss({"s2": base, "s1-asc": (base + noise).roll(1, dims=0)})
    assert aligned < shuffled and aligned < other_sample
    assert aligned < 0.5  # near the minimum for well-separated random tokens
    # one modality has no positives: 0, still in the graph
    x = torch.randn(2, 4, 8, requires_grad=True)
    single = contrastive_loss({"s2": x})
    assert single.item() == 0.0 and single.requires_grad


def test_contrastive_loss_removes_invalid_patches():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 4, 16, generator=g)
    b = torch.randn(2, 4, 16, generator=g)
    valid = {"s1-asc": torch.tensor([[True, True, False, True], [True, True, True, True]])}
    full = contrastive_loss({"s2": a, "s1-asc": b}, valid)
    b2 = b.clone()
    b2[0, 2] = 100.0  # an invalid patch: its value must not matter
    assert contrastive_loss({"s2": a, "s1-asc": b2}, valid) == pytest.approx(full.item())
    # reference: explicit loop over anchors
    toks = {"s2": a, "s1-asc": b}
    ok = {"s2": torch.ones(2, 4, dtype=torch.bool), "s1-asc": valid["s1-asc"]}
    names = list(toks)
    items = [(k, bb, p) for k in range(2) for bb in range(2) for p in range(4) if ok[names[k]][bb, p]]
    z = {i: torch.nn.functional.normalize(toks[names[i[0]]][i[1], i[2]], dim=0) for i in items}
    losses = []
    for i in items:
        kept = [j for j in items if not (j[0] == i[0] and j[1] == i[1])]
        pos = [j for j in kept if j[1] == i[1] and j[2] == i[2]]
        if not pos:
            continue
        sims = {j: z[i] @ z[j] / 0.1 for j in kept}
        lse = [torch.logsumexp(torch.stack([sims[j] for j in js]), 0) for js in (kept, pos)]
        losses.append(lse[0] - lse[1])
    torch.testing.assert_close(full, torch.stack(losses).mean())


# ---------------------------------------------------------------- schedules and helpers


def test_schedules():
    assert ema_momentum(0, 100) == pytest.approx(0.996)
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == ema_momentum(500, 100) == pytest.approx(1.0)
    assert lr_factor(0, 100, warmup_steps=4) == pytest.approx(0.2)
    assert lr_factor(4, 100, warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor(100, 100, warmup_steps=4, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(52, 100, warmup_steps=4) == pytest.approx(0.5)
    assert lr_factor(90, 100, kind="constant") == 1.0
    with pytest.raises(ConfigError):
        lr_factor(0, 10, kind="linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ema_momentum(0, 0)


def test_modality_mask_counts():
    g = torch.Generator().manual_seed(0)
    masked = modality_mask(4, 3, 10, 0.5, g)
    assert masked is not None and masked.shape == (4, 3, 10)
    kept = ~masked
    assert kept.any(dim=1).all()  # every position keeps at least one modality
    assert (kept.sum(dim=(1, 2)) == 10 + math.floor(0.5 * 2 * 10)).all()
    assert modality_mask(4, 1, 10, 0.5, g) is None


def test_drop_dates_keeps_half_in_order():
    model = AnySat("test", modalities=tuple(MODS))
    plan = model.plan(make_batch()["inputs"], 10)
    g = torch.Generator().manual_seed(0)
    out = drop_dates(plan, 0.5, g)
    for m in MODS:
        assert out.images[m].shape[1] == 3 and out.dates[m].shape == (2, 3)
        assert (out.dates[m].diff(dim=1) >= 0).all()
        for b in range(2):  # the kept frames are the frames of the kept dates
            for t in range(3):
                src = (plan.dates[m][b] == out.dates[m][b, t]).nonzero()[0, 0]
                assert torch.equal(out.images[m][b, t], plan.images[m][b, src])


def test_patch_validity_from_masks():
    model = AnySat("test", modalities=tuple(MODS))
    inputs = make_batch()["inputs"]
    mask = torch.ones(2, 6, 1, 6, 6, dtype=torch.bool)
    mask[0, :, :, :1, :2] = False  # patches 0 and 1 of sample 0 (10 m patches = 1 px)
    inputs["s2_mask"] = mask
    valid = patch_validity(model.plan(inputs, 10))
    assert set(valid) == {"s2"} and valid["s2"].shape == (2, 36)
    assert (~valid["s2"]).nonzero().tolist() == [[0, 0], [0, 1]]


def test_variance_loss_zero_when_spread_high_when_collapsed():
    g = torch.Generator().manual_seed(0)
    spread = 3.0 * torch.randn(4, 36, 16, generator=g)
    assert variance_loss(spread).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.ones(4, 36, 16, requires_grad=True)
    v = variance_loss(collapsed)
    assert v.item() == pytest.approx(1.0 - math.sqrt(1e-4), abs=1e-5)
    v.backward()  # finite gradient at collapse (eps under the square root)
    assert collapsed.grad is not None and torch.isfinite(collapsed.grad).all()


# ---------------------------------------------------------------- the module


def test_constructor_errors():
    with pytest.raises(ConfigError, match="date_keep"):
        make_module(date_keep=0.0)
    with pytest.raises(UnknownModalityError):
        make_module(modalities=["s9"])
    with pytest.raises(ConfigError, match="ema"):
        make_module(ema=(0.996, 1.2))
    with pytest.raises(ConfigError, match="tile_weight"):
        make_module(tile_weight=-1.0)
    with pytest.raises(ConfigError, match="tile_variance_weight"):
        make_module(tile_variance_weight=-1.0)


def test_optional_objectives_are_off_by_default():
    """Defaults: no heads, the three losses only, the released keys (tile/contrastive heads live in the module)."""
    module = make_module()
    assert module.tile_head is None and module.contrastive_head is None
    assert not any(k.startswith(("tile_head", "contrastive_head")) for k in module.state_dict())
    on = make_module(tile_weight=1.0, contrastive_head=True, variance_weight=0.5)
    assert set(on.teacher_encoder().state_dict()) == set(module.teacher_encoder().state_dict())
    assert {id(p) for p in on.tile_head.parameters()} <= {id(p) for p in on.trainable_parameters()}
    assert {id(p) for p in on.contrastive_head.parameters()} <= {id(p) for p in on.trainable_parameters()}
    # the same student and teacher weights with and without the heads (the heads draw from their own seed)
    for (k, a), (_, b) in zip(module.student.state_dict().items(), on.student.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_tile_loss_is_zero_for_identical_tokens_and_trains_the_tile_token():
    module = make_module(tile_weight=1.0, variance_weight=0.5, contrastive_head=True, tile_variance_weight=2.0)
    batch = make_batch()
    losses = module.compute_losses(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "jepa", "contrastive", "tile", "variance", "tile_variance"}
    torch.testing.assert_close(
        losses["loss"].detach(),
        losses["jepa"]
        + losses["contrastive"]
        + losses["tile"]
        + 0.5 * losses["variance"]
        + 2 * losses["tile_variance"],
    )
    losses["loss"].backward()
    # the tile token path: the combiner's class query and the tile head get gradient
    assert module.tile_head[0].weight.grad.abs().sum() > 0
    assert module.contrastive_head[0].weight.grad.abs().sum() > 0
    tile_only = make_module(tile_weight=1.0, jepa_weight=1e-12, contrastive_weight=0.0)
    tile_only.compute_losses(batch, torch.Generator().manual_seed(0))["loss"].backward()
    last = len(tile_only.student.blocks) - 1  # the combiner, whose class query row is the tile token
    assert tile_only.student.cls_token.grad.abs().sum() > 0
    combiner = [p.grad for p in tile_only.student.blocks[last].parameters() if p.grad is not None]
    assert combiner and sum(float(g.abs().sum()) for g in combiner) > 0
    # identical tile tokens: a tile head that outputs the teacher's layer-normed token gives a loss of 0
    t = torch.randn(3, 64) * 4 + 1
    assert jepa_loss(normalize_targets(t), t).item() == pytest.approx(0.0, abs=1e-7)


def test_tile_contrastive_loss_is_lowest_for_aligned_tiles():
    g = torch.Generator().manual_seed(0)
    s2 = torch.randn(8, 32, generator=g)
    aligned = {"s2": s2, "s1-asc": s2 + 0.05 * torch.randn(8, 32, generator=g)}
    shuffled = {"s2": s2, "s1-asc": aligned["s1-asc"][torch.roll(torch.arange(8), 1)]}
    unrelated = {"s2": s2, "s1-asc": torch.randn(8, 32, generator=g)}
    low, high, mid = (tile_contrastive_loss(e, tau=0.1).item() for e in (aligned, shuffled, unrelated))
    assert low < 0.01 < mid < high  # aligned pairs: ~0; a mismatch costs more than unrelated embeddings
    # symmetric (CLIP): swapping the modalities gives the same loss; identical constant embeddings give log B
    swapped = {"s1-asc": aligned["s2"], "s2": aligned["s1-asc"]}
    assert tile_contrastive_loss(swapped, tau=0.1).item() == pytest.approx(low, rel=1e-5)
    const = {"s2": torch.ones(8, 32), "s1-asc": torch.ones(8, 32)}
    assert tile_contrastive_loss(const).item() == pytest.approx(math.log(8), rel=1e-5)
    assert tile_contrastive_loss({"s2": s2}).item() == 0.0  # one modality: nothing to contrast
    with pytest.raises(InputShapeError, match="same"):
        tile_contrastive_loss({"s2": s2, "s1-asc": s2[:4]})


def test_tile_contrastive_flag_trains_the_tile_token_and_off_keeps_the_old_step():
    batch = make_batch(batch_size=3)
    off = make_module()
    assert off.tile_contrastive_head is None
    assert not any(k.startswith("tile_contrastive_head") for k in off.state_dict())
    on = make_module(tile_contrastive_weight=0.5, tile_tau=0.2)
    # the flag adds a head with its own seed: the encoder and the other losses are those of the default module
    for (k, a), (_, b) in zip(off.student.state_dict().items(), on.student.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    torch.manual_seed(0)  # the L-TAE dropout draws from the global generator
    ref = off.compute_losses(batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    losses = on.compute_losses(batch, torch.Generator().manual_seed(0))
    assert set(ref) == {"loss", "jepa", "contrastive"}
    assert set(losses) == {"loss", "jepa", "contrastive", "tile_contrastive"}
    for k in ("jepa", "contrastive"):
        torch.testing.assert_close(losses[k], ref[k])
    torch.testing.assert_close(losses["loss"].detach(), ref["loss"].detach() + 0.5 * losses["tile_contrastive"])
    assert {id(p) for p in on.tile_contrastive_head.parameters()} <= {id(p) for p in on.trainable_parameters()}
    # the tile token path gets gradient from this loss alone: the head, the class token and the combiner
    only = make_module(tile_contrastive_weight=1.0, jepa_weight=1e-12, contrastive_weight=0.0)
    only.compute_losses(batch, torch.Generator().manual_seed(0))["loss"].backward()
    assert only.tile_contrastive_head[0].weight.grad.abs().sum() > 0
    assert only.student.cls_token.grad.abs().sum() > 0
    last = len(only.student.blocks) - 1
    assert sum(float(p.grad.abs().sum()) for p in only.student.blocks[last].parameters() if p.grad is not None) > 0
    with pytest.raises(ConfigError, match="tile_contrastive_weight"):
        make_module(tile_contrastive_weight=-1.0)
    with pytest.raises(ConfigError, match="tile_tau"):
        make_module(tile_tau=0.0)


def test_bow_histogram_kmeans_and_loss():
    vocab = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    feats = torch.tensor([[[0.1, 0.0], [9.0, 0.5], [9.5, -0.5], [0.0, 11.0]]])  # 1 tile, 4 pixels
    hist, words = bow_histogram(feats, vocab)
    assert words.tolist() == [[0, 1, 1, 2]]
    torch.testing.assert_close(hist, torch.tensor([[0.25, 0.5, 0.25]]))
    kmeans_update(vocab, feats, words, momentum=0.5)  # each word halfway to the mean of its pixels
    torch.testing.assert_close(vocab, torch.tensor([[0.05, 0.0], [9.625, 0.0], [0.0, 10.5]]))
    ce, kl = bow_loss(hist.log(), hist)  # a perfect prediction: KL 0, cross-entropy = the target's entropy
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    assert ce.item() == pytest.approx(-(hist * hist.log()).sum().item(), rel=1e-5)
    assert bow_loss(torch.zeros(1, 3), hist)[1].item() > 0.03
    with pytest.raises(InputShapeError, match="same"):
        bow_loss(torch.zeros(2, 3), hist)


def test_pixel_statistics_mean_and_std_over_valid_dates():
    module = make_module()
    inputs = make_batch()["inputs"]
    mask = torch.ones(2, 6, 1, 6, 6, dtype=torch.bool)
    mask[:, :3] = False  # the first three dates of S2 are invalid everywhere
    inputs["s2_mask"] = mask
    plan = module.student.plan(inputs, 10)
    f = pixel_statistics(plan, ["s2", "s1-asc", "aerial"])
    assert f.shape == (2, 36, 2 * 10 + 2 * 2 + 2 * 4)  # aerial is absent: zeros
    s2 = plan.images["s2"][:, 3:]  # (B, 3, 10, 6, 6)
    torch.testing.assert_close(f[:, :, :10], s2.mean(1).flatten(2).transpose(1, 2))
    torch.testing.assert_close(f[:, :, 10:20], s2.std(1, unbiased=False).flatten(2).transpose(1, 2))
    assert (f[:, :, 24:] == 0).all()


def test_tile_bow_flag_off_by_default_and_trains_the_tile_token():
    off = make_module()
    assert off.tile_bow_head is None and not any("bow" in k for k in off.state_dict())
    on = make_module(tile_bow_weight=2.0, bow_words=8)
    assert on.bow_vocabulary.shape == (8, 2 * 10 + 2 * 2) and not bool(on.bow_started)
    batch = make_batch(batch_size=3)
    torch.manual_seed(0)
    ref = off.compute_losses(batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    losses = on.compute_losses(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "jepa", "contrastive", "tile_bow"}
    for k in ("jepa", "contrastive"):
        torch.testing.assert_close(losses[k], ref[k])
    # the vocabulary starts from the first training batch's pixels, then moves (online k-means)
    assert bool(on.bow_started) and on.bow_vocabulary.abs().sum() > 0
    losses["loss"].backward()
    assert on.tile_bow_head[0].weight.grad.abs().sum() > 0 and on.student.cls_token.grad.abs().sum() > 0
    # evaluation does not move the vocabulary
    on.eval()
    before = on.bow_vocabulary.clone()
    on.compute_losses(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(on.bow_vocabulary, before)
    with pytest.raises(ConfigError, match="tile_bow_weight"):
        make_module(tile_bow_weight=-1.0)
    with pytest.raises(ConfigError, match="bow_words"):
        make_module(tile_bow_weight=1.0, bow_words=1)
    with pytest.raises(ConfigError, match="bow_view"):
        make_module(tile_bow_weight=1.0, bow_view="teacher")
    # the full view: the student's tile token of every position (both modalities) predicts the histogram
    full = make_module(tile_bow_weight=1.0, bow_words=8, bow_view="full")
    full.compute_losses(batch, torch.Generator().manual_seed(0))["loss"].backward()
    assert full.tile_bow_head[0].weight.grad.abs().sum() > 0 and full.student.cls_token.grad.abs().sum() > 0


def test_flash_compat_switch_and_gradients_reach_the_encoder():
    """flash-compat applies to the encoder; the predictor mixes tokens, so the JEPA loss trains the encoder."""
    module = make_module(flash_compat=True, contrastive_weight=0.0)
    assert module.student.attention_mode == "flash-compat" and module.teacher.attention_mode == "flash-compat"
    assert module.predictor.predictor_blocks[0].attn.mode == "standard"
    module.compute_losses(make_batch(), torch.Generator().manual_seed(0))["loss"].backward()
    for name in ("cls_token", "blocks.0.attn.qkv.weight", "blocks.1.attn.wk.weight"):
        assert module.student.get_parameter(name).grad.abs().sum() > 0, name
    assert module.masked_token.grad.abs().sum() > 0
    assert module.predictor.predictor_embed.weight.grad.abs().sum() > 0


def test_losses_and_bad_masks():
    module = make_module()
    batch = make_batch()
    losses = module.compute_losses(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "jepa", "contrastive"}
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"].detach(), losses["jepa"] + losses["contrastive"])
    bad = dict(batch, targets=batch["targets"] + 36)
    with pytest.raises(InputShapeError, match=r"\[0, 36\)"):
        module.compute_losses(bad, torch.Generator().manual_seed(0))  # type: ignore[arg-type]


def test_teacher_is_eval_and_keys_are_released_ones():
    module = make_module()
    module.train()
    assert module.student.training and not module.teacher.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    assert set(module.teacher_encoder().state_dict()) == set(AnySat("test", modalities=tuple(MODS)).state_dict())
    assert "masked_token" not in module.teacher_encoder().state_dict()


def test_one_step_changes_student_and_moves_teacher_by_momentum():
    module = make_module()
    student0 = {k: v.detach().clone() for k, v in module.student.named_parameters()}
    teacher0 = {k: v.detach().clone() for k, v in module.teacher.named_parameters()}
    _trainer(1).fit(module, _loader(make_batch(), 1))
    m = ema_momentum(0, 100)
    changed = 0
    for name, p in module.student.named_parameters():
        t = dict(module.teacher.named_parameters())[name]
        assert t.grad is None and not t.requires_grad
        changed += not torch.equal(p, student0[name])
        torch.testing.assert_close(t.detach(), m * teacher0[name] + (1 - m) * p.detach(), atol=1e-7, rtol=1e-6)
    assert changed > 0.5 * len(student0)
    # the teacher moved, and only a little
    assert any(not torch.equal(t, teacher0[k]) for k, t in module.teacher.named_parameters())
    assert not module.teacher.training


def test_twenty_steps_lower_the_loss():
    """End to end on CPU (~7 s): 20 steps on one fixed batch (test-size AnySat, s2 + s1-asc) lower the loss."""
    module = make_module(lr=2e-3, warmup_steps=2, lr_schedule="constant", total_steps=20)
    batch = make_batch(batch_size=2, dates=4)
    with torch.no_grad():
        before = module.compute_losses(batch, torch.Generator().manual_seed(0))
    _trainer(20).fit(module, _loader(batch, 20))
    module.eval()
    with torch.no_grad():
        after = module.compute_losses(batch, torch.Generator().manual_seed(0))
    assert after["loss"] < 0.8 * before["loss"]
    assert after["jepa"] < before["jepa"] and after["contrastive"] < before["contrastive"]
