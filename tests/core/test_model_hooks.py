"""AnySat.plan / patch_tokens / forward_tokens: the reusable steps of forward used by JEPA pretraining.

What holds:

* ``positions=None`` is *exactly* ``forward(output="all")`` (same operations, bit for bit);
* ``positions = arange(P)`` gives the same numbers up to float rounding (the combiner runs per-sample queries);
* a per-sample permutation of all positions permutes the output rows (attention is permutation-equivariant and
  the relative-position buckets follow the positions);
* with a subset of positions the output does not depend on the tokens elsewhere, and each sample's rows equal
  that sample run alone (positions are per sample);
* masked tokens are the ``masked_token`` without PE: the output does not depend on the masked tokens' values.
"""

from __future__ import annotations

import pytest
import torch

from anysat_core import AnySat
from anysat_core.data.synthetic import random_batch
from anysat_core.errors import InputShapeError
from anysat_core.model.pos_embed import distance_buckets, distance_buckets_at

CASES = [(["s2", "s1-asc", "aerial"], 20), (["s2", "modis", "l7"], 30)]


@pytest.fixture(scope="module")
def model() -> AnySat:
    torch.manual_seed(0)
    return AnySat(size="test").eval()


def _plan(model: AnySat, mods: list[str], ps: int, batch_size: int = 2):
    batch = random_batch(mods, extent_m=120, batch_size=batch_size, dates=4, seed=1)
    return batch, model.plan(batch, ps)


@pytest.mark.parametrize(("mods", "ps"), CASES)
def test_patch_tokens_shapes(model, mods, ps):
    _, plan = _plan(model, mods, ps)
    with torch.no_grad():
        tokens = model.patch_tokens(plan)
    P = plan.grid**2
    assert list(tokens) == plan.modalities
    for m, t in tokens.items():
        assert t.shape == (2, 1 if m == "modis" else P, 64)


@pytest.mark.parametrize(("mods", "ps"), CASES)
def test_all_positions_is_forward_all_exactly(model, mods, ps):
    batch, plan = _plan(model, mods, ps)
    with torch.no_grad():
        ref = model(batch, patch_size_m=ps, output="all")
        out = model.forward_tokens(plan, model.patch_tokens(plan))
        P = plan.grid**2
        arange = torch.arange(P).expand(2, P)
        out_idx = model.forward_tokens(plan, model.patch_tokens(plan), positions=arange)
    assert torch.equal(out, ref)
    torch.testing.assert_close(out_idx, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("mods", "ps"), CASES)
def test_permuted_positions_permute_rows(model, mods, ps):
    _, plan = _plan(model, mods, ps)
    P = plan.grid**2
    g = torch.Generator().manual_seed(3)
    perm = torch.stack([torch.randperm(P, generator=g) for _ in range(2)])
    with torch.no_grad():
        tokens = model.patch_tokens(plan)
        ref = model.forward_tokens(plan, tokens)
        out = model.forward_tokens(plan, tokens, positions=perm)
    torch.testing.assert_close(out[:, 0], ref[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 1:], torch.stack([ref[b, 1:][perm[b]] for b in range(2)]), atol=1e-5, rtol=1e-5)


def test_subset_ignores_other_tokens_and_is_per_sample(model):
    _, plan = _plan(model, ["s2", "s1-asc"], 20)  # 6 x 6 grid
    positions = torch.tensor([[0, 1, 7, 20], [35, 3, 4, 10]])
    with torch.no_grad():
        tokens = model.patch_tokens(plan)
        out = model.forward_tokens(plan, tokens, positions=positions)
        noisy = {m: t.clone() for m, t in tokens.items()}
        outside = torch.ones(2, 36, dtype=torch.bool)
        outside[torch.arange(2)[:, None], positions] = False
        for t in noisy.values():
            t[outside] = torch.randn_like(t[outside])
        out_noisy = model.forward_tokens(plan, noisy, positions=positions)
        one = model.plan(
            {k: v[1:] for k, v in random_batch(["s2", "s1-asc"], extent_m=120, batch_size=2, dates=4, seed=1).items()},
            20,
        )
        out_one = model.forward_tokens(one, {m: t[1:] for m, t in tokens.items()}, positions=positions[1:])
    assert out.shape == (2, 5, 64)
    assert torch.equal(out, out_noisy)
    torch.testing.assert_close(out_one, out[1:], atol=1e-5, rtol=1e-5)


def test_masked_tokens_lose_value_and_position(model):
    _, plan = _plan(model, ["s2", "s1-asc", "aerial"], 20)
    positions = torch.tensor([[0, 5, 9], [2, 3, 30]])
    masked = torch.zeros(2, 3, 3, dtype=torch.bool)
    masked[0, 1, 2] = masked[1, 0, 0] = masked[1, 2, 1] = True
    token = torch.randn(1, 1, 64, requires_grad=True)
    with torch.no_grad():
        tokens = model.patch_tokens(plan)
    out = model.forward_tokens(plan, tokens, positions=positions, masked=masked, masked_token=token)
    noisy = {m: t.detach().clone() for m, t in tokens.items()}
    noisy["s1-asc"][0, 9] += 5.0  # the masked (sample 0, s1-asc, 3rd position) token
    noisy["s2"][1, 2] -= 5.0
    with torch.no_grad():
        out_noisy = model.forward_tokens(plan, noisy, positions=positions, masked=masked, masked_token=token)
        none = model.forward_tokens(plan, tokens, positions=positions)
        all_false = model.forward_tokens(
            plan, tokens, positions=positions, masked=torch.zeros_like(masked), masked_token=token
        )
    torch.testing.assert_close(out.detach(), out_noisy, atol=1e-6, rtol=0)
    assert torch.equal(none, all_false)
    assert not torch.allclose(out.detach(), none)
    out.sum().backward()
    assert token.grad is not None and token.grad.abs().sum() > 0


def test_bucket_gather_equals_full_table():
    full = distance_buckets(5, special=2, key_repeats=3)
    at = distance_buckets_at(5, torch.arange(25).expand(2, 25), special=2, key_repeats=3)
    assert torch.equal(at, full.expand(2, -1, -1))
    pos = torch.tensor([[4, 0, 12]])
    sub = distance_buckets_at(5, pos, special=1, key_repeats=2)
    base = distance_buckets(5, special=0)
    assert torch.equal(sub[0, 1:, 1:4], base[pos[0]][:, pos[0]])
    assert torch.equal(sub[0, 1:, 4:], base[pos[0]][:, pos[0]])
    assert (sub[0, 0] == 7).all() and (sub[0, :, 0] == 7).all()


def test_bad_token_inputs_are_refused(model):
    _, plan = _plan(model, ["s2", "s1-asc"], 20)
    tokens = model.patch_tokens(plan)
    with pytest.raises(InputShapeError, match=r"\[0, 36\)"):
        model.forward_tokens(plan, tokens, positions=torch.tensor([[0, 36], [1, 2]]))
    with pytest.raises(InputShapeError, match="int64"):
        model.forward_tokens(plan, tokens, positions=torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(InputShapeError, match="masked_token"):
        model.forward_tokens(
            plan, tokens, positions=torch.zeros(2, 3, dtype=torch.long), masked=torch.zeros(2, 2, 3, dtype=torch.bool)
        )
    with pytest.raises(InputShapeError, match="masked has shape"):
        model.forward_tokens(
            plan,
            tokens,
            positions=torch.zeros(2, 3, dtype=torch.long),
            masked=torch.zeros(2, 3, 3, dtype=torch.bool),
            masked_token=torch.zeros(1, 1, 64),
        )
    with pytest.raises(InputShapeError, match="tokens\\['s1-asc'\\]"):
        model.forward_tokens(plan, {"s2": tokens["s2"]})
