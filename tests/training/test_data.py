"""Pretraining and downstream data: dataset specs, the JEPA collate, the mixing sampler (weights, DDP shards),
datamodules over GeoPlex-mini and an on-disk loader (committed fake TreeSatAI-TS), resume and early errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler

from anysat_core.data.datasets import get_dataset
from anysat_core.errors import (
    ConfigError,
    DatasetNotFoundError,
    PatchSizeError,
    UnknownDatasetError,
    UnknownModalityError,
)
from training.data import (
    DatasetSpec,
    DownstreamDataModule,
    MixingSampler,
    PretrainCollate,
    PretrainDataModule,
    build_dataset,
)

TREESAT = Path(__file__).resolve().parents[1] / "data" / "treesatai-ts"
MINI = {"tiles": 4, "seed": 0, "block_tiles": 2}  # 16 tiles, 4 spatial blocks: train, val and test are non-empty


def mini_spec(**kw) -> dict:
    spec = {"name": "geoplex-mini", "modalities": ["s2", "s1-asc"], "scales_m": [10, 20, 30], "batch_size": 2}
    spec["options"] = dict(MINI)
    return {**spec, **kw}


@pytest.fixture(scope="module")
def mini_samples() -> list[dict]:
    ds = get_dataset("geoplex-mini", split="train", modalities=["s2", "s1-asc"], tiles=4, seed=0)
    return [ds[i] for i in range(3)]


def _summary(batches: list[dict]) -> list[tuple]:
    return [
        (b["dataset"], b["patch_size_m"], b["context"].tolist(), b["targets"].tolist(), b["inputs"]["s2"].sum().item())
        for b in batches
    ]


# ------------------------------------------------------------------------------------------------ collate
def test_collate_shapes_for_each_scale(mini_samples: list[dict]) -> None:
    collate = PretrainCollate("geoplex-mini", [10, 20, 30], seed=0)
    seen = {}
    for call in range(40):
        batch = collate(mini_samples, call=call)
        s, g = batch["patch_size_m"], round(60 / batch["patch_size_m"])
        assert s in (10.0, 20.0, 30.0) and batch["dataset"] == "geoplex-mini"
        assert set(batch) == {"inputs", "patch_size_m", "context", "targets", "dataset"}
        assert batch["inputs"]["s2"].shape[:1] == (3,) and batch["inputs"]["s2"].shape[-2:] == (6, 6)
        assert batch["inputs"]["s2_date_mask"].shape[0] == 3 and len(batch["inputs"]["meta"]) == 3
        context, targets = batch["context"], batch["targets"]
        assert context.shape[0] == 3 and targets.shape[:2] == (3, 4) and context.dtype == torch.int64
        assert int(context.max()) < g * g and int(targets.max()) < g * g
        for b in range(3):
            assert not set(context[b].tolist()) & set(targets[b].flatten().tolist())
        seen[s] = g
    assert seen == {10.0: 6, 20.0: 3, 30.0: 2}


def test_collate_is_seeded_and_resumes(mini_samples: list[dict]) -> None:
    a, b = PretrainCollate("m", [10, 20, 30], seed=4), PretrainCollate("m", [10, 20, 30], seed=4)
    ref = [a(mini_samples) for _ in range(5)]
    for _ in range(2):
        b(mini_samples)
    resumed = PretrainCollate("m", [10, 20, 30], seed=4)
    resumed.load_state_dict(b.state_dict())
    for r in ref[2:]:
        x = resumed(mini_samples)
        assert x["patch_size_m"] == r["patch_size_m"] and torch.equal(x["targets"], r["targets"])
    with pytest.raises(ConfigError, match="seed"):
        PretrainCollate("m", [10], seed=5).load_state_dict(b.state_dict())


def test_collate_scale_that_does_not_divide_the_tile(mini_samples: list[dict]) -> None:
    with pytest.raises(PatchSizeError, match=r"does not divide.*60 m"):
        PretrainCollate("geoplex-mini", [40], seed=0)(mini_samples)
    with pytest.raises(PatchSizeError, match="multiple of 10"):
        PretrainCollate("geoplex-mini", [15], seed=0)(mini_samples)
    with pytest.raises(PatchSizeError):
        PretrainCollate("geoplex-mini", [], seed=0)


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_follows_the_weights() -> None:
    sampler = MixingSampler([10_000] * 3, [10] * 3, [1, 2, 4], seed=0)
    plan = sampler.plan(0)
    assert len(plan) == len(sampler) == 3000
    head = Counter(k.dataset for k in plan[:600])  # no dataset is exhausted before step 1000
    for d, w in enumerate([1, 2, 4]):
        assert abs(head[d] / 600 - w / 7) < 0.06, head
    assert Counter(k.dataset for k in plan) == {0: 1000, 1: 1000, 2: 1000}  # an epoch exhausts every dataset
    for d in range(3):  # each sample once per epoch
        idx = [i for k in plan if k.dataset == d for i in k.indices]
        assert sorted(idx) == list(range(10_000))
    assert [k.step for k in plan] == list(range(3000))
    assert plan == sampler.plan(0) and plan != sampler.plan(1)


def test_sampler_ranks_share_datasets_but_not_samples() -> None:
    lengths, sizes, weights = [50, 31, 7], [4, 3, 2], [1.0, 2.0, 4.0]
    plans = [
        MixingSampler(lengths, sizes, weights, seed=3, rank=r, world_size=3).plan(epoch)
        for r in range(3)
        for epoch in (2,)
    ]
    assert len({len(p) for p in plans}) == 1
    assert all([k.dataset for k in p] == [k.dataset for k in plans[0]] for p in plans)
    for d, n in enumerate(lengths):
        shards = [{i for k in p if k.dataset == d for i in k.indices} for p in plans]
        assert not shards[0] & shards[1] and not shards[1] & shards[2] and not shards[0] & shards[2]
        assert sum(map(len, shards)) == n // 3 * 3
    assert isinstance(MixingSampler([4], [1], [1]), DistributedSampler)  # Lightning leaves it alone


def test_sampler_errors() -> None:
    with pytest.raises(ConfigError, match="fewer ranks"):
        MixingSampler([2], [1], [1.0], world_size=3, names=["tiny"])
    with pytest.raises(ConfigError, match="weights"):
        MixingSampler([8, 8], [1, 1], [1.0, 0.0])
    with pytest.raises(ConfigError, match="rank"):
        MixingSampler([8], [1], [1.0], rank=2, world_size=2)
    with pytest.raises(ConfigError, match="one of each"):
        MixingSampler([8, 8], [1], [1.0])


def test_sampler_resume_skips_consumed_batches() -> None:
    s = MixingSampler([20, 9], [3, 2], [1, 1], seed=1)
    s.set_epoch(4)
    full = list(s)
    s2 = MixingSampler([20, 9], [3, 2], [1, 1], seed=1)
    s2.load_state_dict({"epoch": 4, "consumed": 3})
    assert list(s2) == full[3:]
    assert len(list(s2)) == len(full)  # the skip applies once
    s3 = MixingSampler([20, 9], [3, 2], [1, 1], seed=1)
    s3.load_state_dict({"epoch": 4, "consumed": len(full)})  # a finished epoch: the next one starts
    assert s3.epoch == 5 and list(s3) == s.plan(5)


# ------------------------------------------------------------------------------------------------ datamodule
def test_datamodule_epoch_and_resume() -> None:
    dm = PretrainDataModule([mini_spec()], seed=0)
    assert dm.grids == [{10.0: 6, 20.0: 3, 30.0: 2}]
    loader = dm.train_dataloader()
    ref = list(loader)
    assert len(ref) == len(loader) == 4  # 8 train tiles, batches of 2
    assert {b["patch_size_m"] for b in ref} <= {10.0, 20.0, 30.0}
    dm2 = PretrainDataModule([mini_spec()], seed=0)
    first = []
    for i, b in enumerate(dm2.train_dataloader()):
        first.append(b)
        if i == 1:
            break
    state = dm2.state_dict()
    assert state["epoch"] == 0 and state["consumed"] == 2
    dm3 = PretrainDataModule([mini_spec()], seed=0)
    dm3.load_state_dict(state)
    rest = list(dm3.train_dataloader())
    assert _summary(first + rest) == _summary(ref)
    with pytest.raises(ConfigError, match="seed"):
        PretrainDataModule([mini_spec()], seed=1).load_state_dict(state)


def test_datamodule_workers_give_the_same_batches() -> None:
    a = list(PretrainDataModule([mini_spec()], seed=2).train_dataloader())
    b = list(PretrainDataModule([mini_spec()], seed=2, num_workers=2).train_dataloader())
    assert _summary(a) == _summary(b)


def test_datamodule_ranks_and_validation() -> None:
    specs = [mini_spec(), mini_spec(batch_size=1, weight=3.0, modalities=["s2"])]
    per_rank = []
    for rank in range(2):
        dm = PretrainDataModule(specs, seed=0)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # type: ignore[assignment]
        per_rank.append(list(dm.train_dataloader()))
    r0, r1 = per_rank
    assert [(b["dataset"], b["patch_size_m"], b["targets"].shape) for b in r0] == [
        (b["dataset"], b["patch_size_m"], b["targets"].shape) for b in r1
    ]
    assert any(not torch.equal(x["inputs"]["s2"], y["inputs"]["s2"]) for x, y in zip(r0, r1))
    dm = PretrainDataModule(specs, seed=0)
    val = dm.val_dataloader()
    v1, v2 = _summary(list(val)), _summary(list(dm.val_dataloader()))
    assert v1 == v2 and len(v1) > 0
    assert PretrainDataModule([mini_spec()], val_split=None).val_dataloader() == []


def test_datamodule_and_spec_errors() -> None:
    with pytest.raises(UnknownDatasetError, match="geoplex-mini"):
        PretrainDataModule([{"name": "geoplex-maxi"}])
    with pytest.raises(DatasetNotFoundError, match="missing"):
        PretrainDataModule([{"name": "treesatai-ts", "root": "/nonexistent/TreeSatAI"}])
    with pytest.raises(ConfigError, match="needs root"):
        DatasetSpec("treesatai-ts")
    with pytest.raises(ConfigError, match="no root"):
        DatasetSpec("geoplex-mini", root="/data")
    with pytest.raises(UnknownModalityError, match="provides"):
        DatasetSpec("treesatai-ts", root=str(TREESAT), modalities=["naip"])
    with pytest.raises(UnknownModalityError):
        DatasetSpec("geoplex-mini", modalities=["s3"])
    with pytest.raises(ConfigError, match="weight"):
        DatasetSpec("geoplex-mini", weight=0)
    with pytest.raises(ConfigError, match="batch_size"):
        DatasetSpec("geoplex-mini", batch_size=0)
    with pytest.raises(PatchSizeError, match="scales_m"):
        DatasetSpec("geoplex-mini", scales_m=[-10])
    with pytest.raises(ConfigError, match="split"):
        DatasetSpec("geoplex-mini", split="holdout")
    with pytest.raises(ConfigError, match="unknown key"):
        PretrainDataModule([{"name": "geoplex-mini", "scale": [10]}])
    with pytest.raises(ConfigError, match="non-empty list"):
        PretrainDataModule([])
    with pytest.raises(PatchSizeError, match="does not divide"):
        PretrainDataModule([mini_spec(scales_m=[40])])
    with pytest.raises(ConfigError, match="2 x 2"):
        PretrainDataModule([mini_spec(scales_m=[60])])  # one patch a tile: no room for masks
    with pytest.raises(ConfigError, match="fields of their own"):
        build_dataset("geoplex-mini", options={"split": "val"})


# ------------------------------------------------------------------------------------------------ downstream
def test_downstream_geoplex_mini() -> None:
    dm = DownstreamDataModule("geoplex-mini", modalities=["s2", "s1-asc"], batch_size=3, options=MINI)
    assert dm.task == "multilabel" and dm.num_classes == 8 and dm.patch_size_m == 20.0
    batch = next(iter(dm.train_dataloader()))
    assert batch["s2"].shape[0] == 3 and batch["label"].shape == (3, 8)
    assert len(dm.dataset("val")) > 0 and len(dm.dataset("test")) > 0
    assert next(iter(dm.test_dataloader()))["label"].shape[1] == 8
    change = DownstreamDataModule("geoplex-mini", modalities=["s2"], options={**MINI, "task": "change"})
    assert change.task == "change-detection" and change.num_classes == 2
    seg = DownstreamDataModule("geoplex-mini", modalities=["s2"], options={**MINI, "task": "segmentation"})
    assert seg.task == "segmentation" and next(iter(seg.val_dataloader()))["label"].shape[-2:] == (6, 6)


def test_downstream_on_disk_loader() -> None:
    dm = DownstreamDataModule(
        "treesatai-ts", root=str(TREESAT), modalities=["aerial", "s2", "s1-asc"], batch_size=2,
        options={"normalize": False},
    )  # fmt: skip
    assert dm.task == "multilabel" and dm.num_classes == 15 and dm.patch_size_m == 10.0 and dm.ignore_index is None
    batch = next(iter(dm.train_dataloader()))
    assert (
        batch["aerial"].shape == (2, 4, 300, 300) and batch["s2"].shape[:1] == (2,) and batch["label"].shape == (2, 15)
    )
    assert len(list(dm.val_dataloader())) == 1 and len(list(dm.test_dataloader())) == 1
    with pytest.raises(DatasetNotFoundError):
        DownstreamDataModule("treesatai-ts", root="/nonexistent/TreeSatAI")
    with pytest.raises(ConfigError, match="val_split"):
        DownstreamDataModule("geoplex-mini", val_split="holdout", options=MINI)
    with pytest.raises(UnknownDatasetError):
        DownstreamDataModule("treesat")


# ------------------------------------------------------------------------------------------------ Lightning resume
class _Recorder:
    """A tiny LightningModule (built lazily so that importing this file stays cheap) recording every batch."""

    @staticmethod
    def make(seen: list) -> object:
        import lightning as L

        class Recorder(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1))

            def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
                seen.append(_summary([batch])[0])
                return (self.w * batch["inputs"]["s2"].mean()).sum() ** 2

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.SGD(self.parameters(), lr=0.1)

        return Recorder()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("killed_after", [3, 4])  # mid-epoch, and on the last batch of epoch 0
def test_lightning_resume_sees_the_remaining_batches(tmp_path: Path, killed_after: int) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    def trainer(**kw) -> L.Trainer:
        opts = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False}
        return L.Trainer(**opts, num_sanity_val_steps=0, limit_val_batches=0, **kw)

    ref: list = []
    trainer(max_epochs=2, enable_checkpointing=False).fit(_Recorder.make(ref), PretrainDataModule([mini_spec()]))
    assert len(ref) == 8
    first: list = []
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=killed_after, save_top_k=-1)
    trainer(max_steps=killed_after, callbacks=[ckpt]).fit(_Recorder.make(first), PretrainDataModule([mini_spec()]))
    (path,) = tmp_path.glob("*.ckpt")
    rest: list = []
    resumed = trainer(max_epochs=2, enable_checkpointing=False)
    resumed.fit(_Recorder.make(rest), PretrainDataModule([mini_spec()]), ckpt_path=path)
    assert first + rest == ref
