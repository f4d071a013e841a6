"""JEPA multi-block masks: the context never sees a target, shapes, seeding, resume, tiny grids and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anysat_core.errors import AnySatError, ConfigError
from training.masks import MaskSpec, MultiBlockMasks, seeded_rng

SPECS = [
    MaskSpec(),
    MaskSpec(target_area=(0.15, 0.2), min_keep=4),
    MaskSpec(n_targets=1, target_area=(0.5, 0.5), target_aspect=(1.0, 1.0)),
    MaskSpec(n_targets=6, target_area=(0.05, 0.3), context_area=(0.5, 1.0), min_keep=0),
]


def _check(context: torch.Tensor, targets: torch.Tensor, batch: int, grid: int, spec: MaskSpec) -> None:
    assert context.dtype == targets.dtype == torch.int64
    assert context.ndim == 2 and targets.ndim == 3
    assert context.shape[0] == targets.shape[0] == batch and targets.shape[1] == spec.n_targets
    assert context.shape[1] >= 1 and targets.shape[2] >= 1
    for t in (context, targets):
        assert int(t.min()) >= 0 and int(t.max()) < grid * grid
    for b in range(batch):
        c = context[b].tolist()
        assert c == sorted(set(c))
        assert not set(c) & set(targets[b].flatten().tolist()), "the context sees a target patch"
        for block in targets[b]:  # every target is a full h x w rectangle of the grid
            rows, cols = np.divmod(block.numpy(), grid)
            assert len(block) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_context_never_sees_targets(spec: MaskSpec) -> None:
    """Property test over seeds, grid sizes (2x2 up to 16x16) and batch sizes."""
    for seed in range(6):
        masks = MultiBlockMasks(spec, seed=seed)
        for grid in (2, 3, 4, 5, 6, 7, 9, 12, 16):
            if spec.min_keep > 1 and grid < 4:
                continue  # no room for 4 context patches beside the targets: see test_too_little_room_is_an_error
            for batch in (1, 3, 8):
                context, targets = masks(batch, grid)
                _check(context, targets, batch, grid, spec)
                assert context.shape[1] >= max(spec.min_keep, 1)


def test_shapes_and_shared_block_size() -> None:
    masks = MultiBlockMasks(MaskSpec(), seed=0)
    (th, tw), (ch, cw) = masks.block_sizes(12, 0)
    context, targets = masks(5, 12)
    assert targets.shape == (5, 4, th * tw)
    assert 1 <= th <= 11 and 1 <= tw <= 11 and 1 <= ch <= 11 and ch == cw
    assert context.shape[1] <= ch * cw


def test_tiny_grids() -> None:
    masks = MultiBlockMasks(MaskSpec(), seed=1)
    context, targets = masks(16, 2)  # blocks are clipped to 1 x 1 on a 2 x 2 grid
    assert targets.shape == (16, 4, 1) and context.shape == (16, 1)
    _check(context, targets, 16, 2, masks.spec)
    context, targets = masks(16, 3)
    _check(context, targets, 16, 3, masks.spec)


@pytest.mark.parametrize("grid", [0, 1, -3, 2.5, True])
def test_grid_too_small_is_an_error(grid: object) -> None:
    with pytest.raises(ConfigError, match="patch_size_m"):
        MultiBlockMasks(seed=0)(4, grid)  # type: ignore[arg-type]


def test_too_little_room_is_an_error() -> None:
    masks = MultiBlockMasks(MaskSpec(min_keep=9), seed=0)
    with pytest.raises(ConfigError, match=r"3 x 3 patch grid.*min_keep"):
        masks(2, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_targets": 0},
        {"max_tries": 0},
        {"min_keep": -1},
        {"target_area": (0.0, 0.5)},
        {"target_area": (0.8, 0.2)},
        {"context_area": (0.5, 1.5)},
        {"target_aspect": (0.75,)},
        {"target_aspect": "wide"},
    ],
)
def test_bad_spec(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="MaskSpec"):
        MaskSpec(**kwargs)


def test_spec_from_dict() -> None:
    spec = MaskSpec.coerce({"n_targets": 2, "target_area": [0.1, 0.3]})
    assert spec == MaskSpec(n_targets=2, target_area=(0.1, 0.3)) and spec.target_area == (0.1, 0.3)
    assert MaskSpec.coerce(None) == MaskSpec()
    with pytest.raises(ConfigError, match="unknown key"):
        MaskSpec.coerce({"targets": 2})
    with pytest.raises(ConfigError):
        MultiBlockMasks(seed=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        MultiBlockMasks(seed=0)(0, 6)


def test_deterministic_given_seed_and_no_global_rng() -> None:
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a, b, c = MultiBlockMasks(seed=7), MultiBlockMasks(seed=7), MultiBlockMasks(seed=8)
    draws_a = [a(4, 8) for _ in range(5)]
    draws_b = [b(4, 8) for _ in range(5)]
    draws_c = [c(4, 8) for _ in range(5)]
    for (ca, ta), (cb, tb) in zip(draws_a, draws_b):
        assert torch.equal(ca, cb) and torch.equal(ta, tb)
    assert any(not torch.equal(ta, tc) for (_, ta), (_, tc) in zip(draws_a, draws_c))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()


def test_explicit_call_ids_and_ranks() -> None:
    masks = MultiBlockMasks(seed=3)
    c1, t1 = masks(4, 10, call=(2, 5))
    c2, t2 = masks(4, 10, call=(2, 5))
    assert torch.equal(c1, c2) and torch.equal(t1, t2) and masks.calls == 0  # explicit ids leave the counter alone
    _, t_rank1 = masks(4, 10, call=(2, 5), rank=1)
    assert t_rank1.shape == t1.shape  # same block size on every rank
    assert not torch.equal(t_rank1, t1)  # but other positions
    assert torch.equal(masks(4, 10, call=9)[1], MultiBlockMasks(seed=3)(4, 10, call=[9])[1])


def test_state_dict_resume_continues_the_sequence() -> None:
    ref = MultiBlockMasks(MaskSpec(n_targets=3), seed=5)
    draws = [ref(3, 7) for _ in range(6)]
    run = MultiBlockMasks(MaskSpec(n_targets=3), seed=5)
    for _ in range(4):
        run(3, 7)
    state = run.state_dict()
    assert state["calls"] == 4
    resumed = MultiBlockMasks(MaskSpec(n_targets=3), seed=5)
    resumed.load_state_dict(state)
    for c, t in draws[4:]:
        rc, rt = resumed(3, 7)
        assert torch.equal(c, rc) and torch.equal(t, rt)
    with pytest.raises(ConfigError, match="seed"):
        MultiBlockMasks(MaskSpec(n_targets=3), seed=6).load_state_dict(state)
    with pytest.raises(ConfigError, match="mask settings"):
        MultiBlockMasks(MaskSpec(), seed=5).load_state_dict(state)


def test_seeded_rng_streams() -> None:
    assert seeded_rng(1, 2).integers(1 << 30) == seeded_rng(1, 2).integers(1 << 30)
    assert seeded_rng(1, 2).integers(1 << 30) != seeded_rng(1, 3).integers(1 << 30)
    with pytest.raises(AnySatError):
        seeded_rng(1, -2)
