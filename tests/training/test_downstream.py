"""Downstream Lightning module (training.downstream): protocols, heads, losses, metrics and configuration errors.

Everything runs a random ``AnySat(size="test")`` on 4 x 4-tile GeoPlex-mini worlds with S2 only (6 x 6 px tiles).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

import anysat_core as ac
from anysat_core.analysis import metrics as M
from anysat_core.errors import AnySatError, ConfigError, InputShapeError, UnknownModalityError
from training.downstream import (
    METRICS,
    AnySatTask,
    TaskMetrics,
    WarmupCosine,
    dataset_defaults,
    loader_task,
    normalize_task,
)
from training.heads import DenseHead, TileHead, resize_logits

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(eval mode|does not have many workers|LeafSpec|litlogger|stepping batches|GPU available|TPU).*"
)

LOADER_TASK = {"multilabel": "multilabel", "multiclass": "multilabel", "segmentation": "segmentation"}
LOADER_TASK["change-detection"] = "change"


def _dominant_class(sample: dict[str, Any]) -> dict[str, Any]:
    """A multi-class tile label: the class covering most of the tile."""
    sample["label"] = torch.tensor(sample["meta"].extra["dominant_class"], dtype=torch.int64)
    return sample


def _dataset(task: str, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, **kw: Any) -> Any:
    if task == "multiclass":
        transform = _dominant_class
    return ac.get_dataset(
        "geoplex-mini", split="train", modalities=["s2"], tiles=4, seed=0, task=LOADER_TASK[task], transform=transform,
        **kw,
    )  # fmt: skip


def _loader(ds: Any, batch_size: int = 2) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, collate_fn=ac.collate)


def _task(task: str, **kw: Any) -> AnySatTask:
    torch.manual_seed(0)
    kw = {"modalities": ["s2"], "size": "test", "weights": None, "scheduler": "none", **kw}
    if task == "multiclass":  # GeoPlex-mini's dominant class (see _dominant_class)
        return AnySatTask(task="multiclass", num_classes=8, patch_size_m=20, **kw)
    return AnySatTask.from_dataset("geoplex-mini", task=task, **kw)


def _trainer(
    steps: int = 3, callbacks: list[lightning.Callback] | None = None, val_batches: int | None = 1
) -> lightning.Trainer:
    return lightning.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


class ModeRecorder(lightning.Callback):
    """Records the train/eval mode of the encoder, its blocks, the s2 projector and the head at every step."""

    def __init__(self) -> None:
        self.modes: list[tuple[bool, bool, bool, bool]] = []

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        enc = module.encoder
        self.modes.append((enc.training, enc.blocks.training, enc.projector("s2").training, module.head.training))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str = "") -> set[str]:
    return {k for k, v in module.state_dict().items() if k.startswith(prefix) and not torch.equal(before[k], v)}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Any]:
    return {t: _dataset(t) for t in ("multilabel", "multiclass", "segmentation", "change-detection")}


# ------------------------------------------------------------------------------------------------ protocols


def test_linear_probe_trains_only_the_head_with_the_encoder_in_eval_mode(datasets: dict[str, Any]) -> None:
    module = _task("multilabel", freeze=True)
    enc_before, head_before = _snapshot(module.encoder), _snapshot(module.head)
    rec = ModeRecorder()
    _trainer(3, [rec]).fit(module, _loader(datasets["multilabel"]))
    assert len(rec.modes) == 3
    assert all(m == (False, False, False, True) for m in rec.modes), rec.modes
    assert not _changed(enc_before, module.encoder), "a frozen encoder's weights changed"
    assert _changed(head_before, module.head) == set(head_before)
    assert not any(p.requires_grad for p in module.encoder.parameters())
    opt = module.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in module.head.parameters()}
    assert module.lr == 2e-4  # the LP default
    # the encoder runs without a graph
    batch = ac.collate([datasets["multilabel"][0], datasets["multilabel"][1]])
    assert not module.features(batch).requires_grad


def test_fine_tuning_trains_the_encoder(datasets: dict[str, Any]) -> None:
    module = _task("segmentation", freeze=False)
    before = _snapshot(module)
    rec = ModeRecorder()
    _trainer(2, [rec]).fit(module, _loader(datasets["segmentation"]))
    assert all(m == (True, True, True, True) for m in rec.modes), rec.modes
    changed = _changed(before, module)
    assert any(k.startswith("encoder.blocks.") for k in changed)
    assert any(k.startswith("encoder.projector_s2.") for k in changed)
    assert any(k.startswith("head.") for k in changed)
    assert module.lr == 5e-5  # the FT default


def test_lp_plus_trains_projectors_and_head_only(datasets: dict[str, Any]) -> None:
    module = _task("multilabel", freeze_new=True)
    before = _snapshot(module)
    rec = ModeRecorder()
    _trainer(2, [rec]).fit(module, _loader(datasets["multilabel"]))
    assert all(m == (False, False, True, True) for m in rec.modes), rec.modes
    changed = _changed(before, module)
    assert changed and all(k.startswith(("encoder.projector_s2.", "head.")) for k in changed), changed
    assert any(k.startswith("encoder.projector_s2.") for k in changed)


def test_weights_from_a_checkpoint_and_new_projectors(tmp_path: Any) -> None:
    torch.manual_seed(1)
    enc = ac.AnySat(size="test", modalities=("s2",))
    path = tmp_path / "enc.pt"
    enc.save(path)
    module = AnySatTask(task="multilabel", num_classes=3, patch_size_m=20, weights=str(path), modalities=["s2"])
    for k, v in enc.state_dict().items():
        assert torch.equal(module.encoder.state_dict()[k], v)
    # a modality the checkpoint has no projector for: refused when frozen, a fresh projector for LP+ and FT
    with pytest.raises(UnknownModalityError, match="freeze_new=True"):
        AnySatTask(task="multilabel", num_classes=3, patch_size_m=20, weights=str(path), modalities=["s1"], freeze=True)
    lp_plus = AnySatTask(task="multilabel", num_classes=3, patch_size_m=20, weights=str(path), modalities=["s1"],
                         freeze_new=True)  # fmt: skip
    assert "s1" in lp_plus.encoder.modalities
    trainable = {n.split(".")[0] for n, p in lp_plus.encoder.named_parameters() if p.requires_grad}
    assert trainable == {"projector_s1"}


def test_geoplex_mini_weights_name_is_resolved() -> None:
    """``weights="geoplex-mini"`` calls AnySat.from_pretrained("geoplex-mini"): it loads, or fails with its own error."""
    try:
        module = AnySatTask(task="multilabel", num_classes=8, patch_size_m=20, weights="geoplex-mini")
    except AnySatError as e:
        assert "geoplex-mini" in str(e)
    else:
        assert isinstance(module.encoder, ac.AnySat)


# ------------------------------------------------------------------------------------------------ tasks


def _direct_metrics(task: str, logits: torch.Tensor, target: torch.Tensor, k: int, ii: int | None) -> dict[str, float]:
    """The task's metrics computed in one call each by anysat_core.analysis.metrics on all predictions."""
    t = target.numpy()
    if task == "multilabel":
        probs = torch.sigmoid(logits).numpy()
        return {f"f1_{a}": float(M.multilabel_f1(t, probs, average=a)) for a in ("weighted", "macro", "micro")}
    pred = logits.argmax(1).numpy()
    zc = ii if ii is not None and 0 <= ii < k else None
    drop = None if zc is not None else ii
    cm = M.confusion_matrix(t, pred, k, ignore_index=drop)
    cm_z = cm if zc is None else M.zero_out_class(cm, zc)
    if task == "multiclass":
        return {
            "oa": M.overall_accuracy(cm, zero_class=zc),
            "f1_macro": float(M.multiclass_f1(t, pred, k, average="macro", ignore_index=ii)),
            "f1_weighted": float(M.multiclass_f1(t, pred, k, average="weighted", ignore_index=ii)),
        }
    out = {"miou": M.miou(cm, zero_class=zc), "oa": M.overall_accuracy(cm, zero_class=zc)}
    if task == "segmentation":
        out["pangaea_miou"] = M.pangaea_miou(cm_z)
    else:
        out["iou"] = M.iou_of_class(cm_z, 1)
    return out


def _some_ignored(sample: dict[str, Any]) -> dict[str, Any]:
    label = sample["label"].clone()
    label[::2, 1::2] = -1
    sample["label"] = label
    return sample


@pytest.mark.parametrize(
    "task", ["multilabel", pytest.param("multiclass", marks=pytest.mark.slow), "segmentation", "change-detection"]
)
def test_each_task_trains_logs_and_its_metrics_equal_anysat_core(task: str, datasets: dict[str, Any]) -> None:
    """A short fit and a test run log every metric of the task; the logged test metrics are those that
    anysat_core.analysis.metrics gives on all the test predictions at once (dense tasks: with -1 pixels ignored)."""
    dense = task in ("segmentation", "change-detection")
    module = _task(task, freeze=True, scheduler="cosine", **({"ignore_index": -1} if dense else {}))
    train = _loader(datasets[task])
    trainer = _trainer(2)
    trainer.fit(module, train, train)
    logged = trainer.callback_metrics
    assert math.isfinite(float(logged["train/loss"])) and math.isfinite(float(logged["val/loss"]))
    names = METRICS[normalize_task(task)]
    assert {f"val/{n}" for n in names} <= set(logged) and module.monitor in logged

    ds = _Mapped(Subset(datasets[task], range(3, 11)), _some_ignored if dense else None)
    loader = _loader(ds, batch_size=3)  # 3 batches, the last one short
    trainer.test(module, loader, verbose=False)
    logits, targets = [], []
    with torch.no_grad():
        for batch in loader:
            logits.append(module(batch, tuple(batch["label"].shape[-2:]) if dense else None))
            targets.append(batch["label"])
    target = torch.cat(targets)
    if dense:
        assert (target == -1).any()
    expected = _direct_metrics(normalize_task(task), torch.cat(logits), target, module.num_classes, module.ignore_index)
    assert set(expected) == set(names)
    for name, value in expected.items():
        got = float(trainer.callback_metrics[f"test/{name}"])
        assert got == pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True), name


class _Mapped(torch.utils.data.Dataset):
    """A dataset with a function applied to each sample."""

    def __init__(self, ds: Any, fn: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
        self.ds, self.fn = ds, fn

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.ds[i])
        return self.fn(sample) if self.fn else sample


def test_task_metrics_accumulate_like_one_call() -> None:
    g = torch.Generator().manual_seed(0)
    # segmentation with an ignore value outside the classes, over three batches
    acc = TaskMetrics("segmentation", 4, ignore_index=-1)
    logits = torch.randn(6, 4, 5, 5, generator=g)
    target = torch.randint(-1, 4, (6, 5, 5), generator=g)
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):
        acc.update(logits[sl], target[sl])
    assert acc.total == int((target != -1).sum())
    cm = M.confusion_matrix(target.numpy(), logits.argmax(1).numpy(), 4, ignore_index=-1)
    got = acc.compute()
    assert got["miou"] == pytest.approx(M.miou(cm))
    assert got["oa"] == pytest.approx(M.overall_accuracy(cm))
    assert got["pangaea_miou"] == pytest.approx(M.pangaea_miou(cm))
    # multilabel over two batches
    acc = TaskMetrics("multilabel", 5)
    logits = torch.randn(9, 5, generator=g)
    target = (torch.rand(9, 5, generator=g) > 0.6).float()
    acc.update(logits[:4], target[:4])
    acc.update(logits[4:], target[4:])
    probs = torch.sigmoid(logits).numpy()
    for avg in ("weighted", "macro", "micro"):
        assert acc.compute()[f"f1_{avg}"] == pytest.approx(M.multilabel_f1(target.numpy(), probs, average=avg))
    # multiclass (F1 from the confusion matrix) with an ignore value, over two batches
    acc = TaskMetrics("multiclass", 4, ignore_index=-1)
    logits = torch.randn(20, 4, generator=g)
    target = torch.randint(-1, 4, (20,), generator=g)
    acc.update(logits[:7], target[:7])
    acc.update(logits[7:], target[7:])
    t, p = target.numpy(), logits.argmax(1).numpy()
    got = acc.compute()
    assert got["oa"] == pytest.approx(M.overall_accuracy(M.confusion_matrix(t, p, 4, ignore_index=-1)))
    assert got["f1_macro"] == pytest.approx(M.multiclass_f1(t, p, 4, average="macro", ignore_index=-1))
    assert got["f1_weighted"] == pytest.approx(M.multiclass_f1(t, p, 4, average="weighted", ignore_index=-1))
    # change detection: IoU of class 1
    acc = TaskMetrics("change-detection", 2, ignore_index=-1)
    logits = torch.randn(3, 2, 4, 4, generator=g)
    target = torch.randint(-1, 2, (3, 4, 4), generator=g)
    acc.update(logits, target)
    cm = M.confusion_matrix(target.numpy(), logits.argmax(1).numpy(), 2, ignore_index=-1)
    assert acc.compute()["iou"] == pytest.approx(M.iou_of_class(cm, 1))
    # nothing counted: NaN, not an error
    empty = TaskMetrics("change-detection", 2, ignore_index=-1)
    empty.update(torch.randn(1, 2, 3, 3), torch.full((1, 3, 3), -1))
    assert all(math.isnan(v) for v in empty.compute().values())


def test_ignored_pixels_never_count() -> None:
    """Whatever the logits at ignored pixels, loss and metrics are those of the other pixels alone."""
    g = torch.Generator().manual_seed(1)
    module = AnySatTask(task="segmentation", num_classes=3, ignore_index=-1, patch_size_m=20, size="test",
                        modalities=["s2"], scheduler="none")  # fmt: skip
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[:, :2] = -1
    logits = torch.randn(2, 3, 4, 4, generator=g)
    other = logits.clone()
    other[:, :, :2] = torch.randn(2, 3, 2, 4, generator=g) * 10
    assert module.loss(logits, target) == pytest.approx(float(module.loss(other, target)))
    valid = torch.nn.functional.cross_entropy(logits[:, :, 2:], target[:, 2:])
    assert float(module.loss(logits, target)) == pytest.approx(float(valid))
    a, b = TaskMetrics("segmentation", 3, -1), TaskMetrics("segmentation", 3, -1)
    a.update(logits, target)
    b.update(other, target)
    assert np.array_equal(a.counts, b.counts) and a.total == 2 * 2 * 4
    # all pixels ignored: zero loss that still back-propagates
    x = logits.clone().requires_grad_(True)
    loss = module.loss(x, torch.full_like(target, -1))
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None
    # an ignore_index inside the classes (PASTIS void, FLAIR "other"): its row and column leave mIoU/OA
    acc = TaskMetrics("segmentation", 3, ignore_index=2)
    acc.update(logits, target.clamp(min=0))
    cm = M.confusion_matrix(target.clamp(min=0).numpy(), logits.argmax(1).numpy(), 3)
    assert acc.compute()["miou"] == pytest.approx(M.miou(cm, zero_class=2))
    assert acc.compute()["oa"] == pytest.approx(M.overall_accuracy(cm, zero_class=2))


# ------------------------------------------------------------------------------------------------ heads


def test_heads_shapes_and_parameter_counts() -> None:
    D = 768
    assert sum(p.numel() for p in TileHead(D, 16).parameters()) == 2 * D + D * 16 + 16  # "14K"
    assert sum(p.numel() for p in DenseHead(2 * D, 2).parameters()) == 6146  # "6.1K"
    head = DenseHead(8, 3, upsample=4)
    x = torch.randn(2, 5, 5, 8)
    y = head(x)
    assert y.shape == (2, 3, 20, 20)
    # each cell's f x f block comes from that cell alone
    x2 = x.clone()
    x2[:, 1, 2] += 1
    diff = (head(x2) - y).abs().sum(dim=(0, 1)) > 0
    assert diff[4:8, 8:12].all() and diff.sum() == 16
    assert resize_logits(y, (20, 20)) is y
    assert resize_logits(y, (40, 40)).shape == (2, 3, 40, 40)
    assert resize_logits(y, (10, 10)).shape == (2, 3, 10, 10)
    with pytest.raises(InputShapeError, match=r"\(B, H, W, 8\)"):
        head(torch.randn(2, 8, 5, 5))
    with pytest.raises(InputShapeError, match=r"\(B, 8\)"):
        TileHead(8, 3)(torch.randn(2, 5, 8))


def test_dense_logits_reach_the_label_grid(datasets: dict[str, Any]) -> None:
    """Labels at 5 m under 10 m dense cells: pixel shuffle x2 gives the label grid; without it, resampling does."""
    batch = ac.collate([datasets["segmentation"][i] for i in (4, 8)])
    batch["label"] = batch["label"].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert batch["label"].shape == (2, 12, 12)
    shuffled = _task("segmentation", upsample=2)
    assert shuffled.head(shuffled.features(batch)).shape == (2, 8, 12, 12)
    resampled = _task("segmentation")
    assert resampled.head(resampled.features(batch)).shape == (2, 8, 6, 6)
    assert resampled(batch, (12, 12)).shape == (2, 8, 12, 12)
    out = resampled.predict_step(batch, 0)
    assert out["pred"].shape == (2, 12, 12)


# ------------------------------------------------------------------------------------------------ configuration


def test_dataset_defaults_follow_the_dataset_classes() -> None:
    d = dataset_defaults("bradd-s1ts")
    assert (d["task"], d["num_classes"], d["ignore_index"], d["metric"]) == ("change-detection", 2, -1, "iou")
    assert (d["output_modality"], d["upsample"], d["patch_size_m"]) == ("s1", 1, 10.0)
    d = dataset_defaults("flair")
    assert (d["num_classes"], d["ignore_index"], d["output_modality"], d["upsample"]) == (13, 12, "aerial-flair", 10)
    d = dataset_defaults("pastis-hd", task="multilabel")
    assert (d["task"], d["num_classes"], d["ignore_index"], d["metric"]) == ("multilabel", 18, None, "f1_macro")
    assert dataset_defaults("pastis-hd")["num_classes"] == 20
    assert dataset_defaults("timesen2crop")["task"] == "multiclass"
    assert dataset_defaults("timesen2crop")["metric"] == "oa"
    assert dataset_defaults("planted")["metric"] == "f1_macro"
    assert dataset_defaults("treesatai-ts")["metric"] == "f1_weighted"
    d = dataset_defaults("geoplex-mini", task="change")
    assert (d["task"], d["num_classes"], d["modalities"]) == ("change-detection", 2, ["aerial", "s2", "s1-asc"])
    assert (d["output_modality"], d["upsample"]) == ("aerial", 10)  # labels on the finest (0.2 m) grid
    assert loader_task("geoplex-mini", "change-detection") == "change"
    assert loader_task("timesen2crop") == "classification"
    with pytest.raises(ConfigError, match="no downstream labels"):
        dataset_defaults("s2naip-urban")
    with pytest.raises(ConfigError, match="provides task"):
        dataset_defaults("planted", task="segmentation")
    with pytest.raises(ac.UnknownDatasetError):
        dataset_defaults("nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "regression"}, "not a downstream task"),
        ({"task": None}, "no task given"),
        ({"num_classes": 1, "task": "multiclass"}, "num_classes=1"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"num_classes": None}, "no num_classes"),
        ({"num_classes": 2.5}, "num_classes=2.5"),
        ({"class_weights": [1.0, 2.0]}, "class_weights has 2"),
        ({"task": "segmentation", "class_weights": [1.0, -1.0, 1.0]}, "non-negative"),
        ({"metric": "miou"}, "metric='miou'"),
        ({"ignore_index": -1}, "not used by multilabel"),
        ({"task": "segmentation", "ignore_index": 1.5}, "ignore_index=1.5"),
        ({"patch_size_m": None}, "no patch_size_m"),
        ({"patch_size_m": -10}, "patch_size_m=-10"),
        ({"scheduler": "step"}, "scheduler='step'"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"modalities": "s2"}, "is a string"),
        ({"task": "segmentation", "output_modality": "s1"}, "not among modalities"),
        ({"upsample": 0, "task": "segmentation"}, "upsample=0"),
    ],
)
def test_bad_configuration_raises_config_error(kwargs: dict[str, Any], match: str) -> None:
    base = {"task": "multilabel", "num_classes": 3, "patch_size_m": 20, "size": "test", "modalities": ["s2"]}
    with pytest.raises(ConfigError, match=match):
        AnySatTask(**{**base, **kwargs})


def test_labels_that_do_not_fit_the_configuration(datasets: dict[str, Any]) -> None:
    seg = ac.collate([datasets["segmentation"][i] for i in (4, 8)])
    assert int(seg["label"].max()) >= 2
    small = AnySatTask(task="segmentation", num_classes=2, patch_size_m=20, size="test", modalities=["s2"])
    with pytest.raises(ConfigError, match="num_classes=2"):
        small.training_step(seg, 0)
    wrong = AnySatTask(task="multilabel", num_classes=5, patch_size_m=20, size="test", modalities=["s2"])
    with pytest.raises(InputShapeError, match=r"\(B, 5\) multi-hot"):
        wrong.training_step(ac.collate([datasets["multilabel"][0]]), 0)
    missing = AnySatTask(task="multilabel", num_classes=8, patch_size_m=20, size="test", modalities=["s2", "s1"])
    with pytest.raises(InputShapeError, match="has no s1"):
        missing.training_step(ac.collate([datasets["multilabel"][0]]), 0)
    with pytest.raises(UnknownModalityError):
        AnySatTask(task="multilabel", num_classes=8, patch_size_m=20, size="test", modalities=["s9"])


# ------------------------------------------------------------------------------------------------ optimisation


def test_schedules(datasets: dict[str, Any]) -> None:
    f = WarmupCosine(warmup=2, total=10)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert WarmupCosine(0, 4)(0) == 1.0
    # per-step cosine under a trainer
    lrs: list[float] = []

    class LR(lightning.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = _task("multilabel", freeze=True, scheduler="cosine", warmup_fraction=0.5, lr=1e-3)
    _trainer(4, [LR()]).fit(module, _loader(datasets["multilabel"]))
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3 * 0.5 * (1 + math.cos(math.pi / 2))], abs=1e-12)
    plateau = _task("segmentation", scheduler="plateau", weight_decay=0.01).configure_optimizers()
    assert plateau["lr_scheduler"]["monitor"] == "val/loss"
    assert isinstance(plateau["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert plateau["optimizer"].param_groups[0]["weight_decay"] == 0.01


def test_hyperparameters_rebuild_the_module(tmp_path: Any, datasets: dict[str, Any]) -> None:
    """A Lightning checkpoint of the module loads back (the CLI's resume/test path)."""
    module = _task("change-detection", freeze=True)
    trainer = _trainer(1)
    trainer.fit(module, _loader(datasets["change-detection"]))
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = AnySatTask.load_from_checkpoint(path)
    assert loaded.task == "change-detection" and loaded.output_modality == "s2" and loaded.freeze_encoder
    for k, v in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert not loaded.encoder.training
