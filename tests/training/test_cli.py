"""The training command line (training.cli): a fast_dev_run of every config, early errors (printed as
``error: ...``, exit 2, before any training), atomic checkpoints and the export round trip.

Runs are in-process (``main([...])``) in a temporary working directory, on test-size models, tiny GeoPlex-mini
worlds and the committed fake dataset roots under tests/data/<name>/ (read with ``normalize: false``: the fakes
carry no statistics files).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from anysat_core import AnySat
from anysat_core.data.synthetic import random_batch
from anysat_core.modalities import MODALITIES
from tests.training.conftest import CONFIGS, DATA, MINI_OPTIONS
from training.callbacks import AtomicCheckpointIO
from training.cli import estimate_step_bytes, main
from training.export import export_encoder, load_training_encoder
from training.jepa import AnySatJEPA

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(eval mode|does not have many workers|LeafSpec|litlogger|stepping batches|GPU available|TPU|"
    "across ranks is zero|transfer_batch_to_device|ckpt_path|Checkpoint directory|num_workers|Precision|"
    "NotGeoreferenced|max_epochs|is a folder|log_every_n_steps|look un-normalised).*"
)

CONFIG_NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
#: loader options for the committed fakes (FLAIR's 20 m patches are read whole, with a 2-pixel S2 window)
FAKE_OPTIONS = {"flair": "{normalize: false, crop: null, s2_window_px: 2}"}
#: GeoPlex's five datasets, in the order of geoplex.yaml, and patch sizes that fit the fakes' small tiles
GEOPLEX = ["treesatai-ts", "pastis-hd", "flair", "planted", "s2naip-urban"]
FAKE_SCALES = {"pastis-hd": "[40]", "flair": "[10]", "s2naip-urban": "[40]"}
FAST = ["--trainer.fast_dev_run", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]


@pytest.fixture(autouse=True)
def _workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the configs write runs/ relative to the working directory


def _fake_root(name: str) -> Path:
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"no committed fake root tests/data/{name}/ for the {name} config")
    return root


def _options(name: str) -> str:
    return FAKE_OPTIONS.get(name, "{normalize: false}")


def _test_size_overrides(name: str) -> list[str]:
    """Overrides that turn a config into a seconds-long CPU run on test data."""
    if name == "geoplex-mini-cpu":
        return ["--model.size", "test", "--data.datasets.0.options", MINI_OPTIONS, "--data.datasets.0.batch_size", "2"]
    if name == "geoplex":
        args = ["--model.size", "test", "--trainer.strategy", "auto", "--trainer.precision", "32-true"]
        args += ["--data.num_workers", "0", "--data.pin_memory", "false"]
        for i, ds in enumerate(GEOPLEX):
            args += [f"--data.datasets.{i}.root", str(_fake_root(ds)), f"--data.datasets.{i}.options", _options(ds)]
            args += [f"--data.datasets.{i}.batch_size", "2"]
            if ds in FAKE_SCALES:
                args += [f"--data.datasets.{i}.scales_m", FAKE_SCALES[ds]]
        return args
    protocol, dataset = name.split("-", 1)
    assert protocol in ("probe", "finetune"), name
    args = ["--model.weights", "null", "--model.size", "test", "--data.num_workers", "0", "--data.batch_size", "2"]
    if dataset == "geoplex-mini":
        return [*args, "--data.options", MINI_OPTIONS]
    return [*args, "--data.root", str(_fake_root(dataset)), "--data.options", _options(dataset)]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ every config
def test_configs_are_named_and_documented() -> None:
    assert {"geoplex-mini-cpu", "geoplex"} <= set(CONFIG_NAMES)
    for ds in ("treesatai-ts", "pastis-hd", "flair", "planted", "sickle", "bradd-s1ts", "timesen2crop", "geoplex-mini"):
        assert {f"probe-{ds}", f"finetune-{ds}"} <= set(CONFIG_NAMES)
    for name in CONFIG_NAMES:
        text = (CONFIGS / f"{name}.yaml").read_text()
        assert text.startswith(f"# {name}:"), name
        assert "class_path: training." in text and "python -m training fit" in text, name


#: configs run in the fast suite; every other one runs in `make test` (marked slow: ~4-12 s each)
FAST_CONFIGS = ("geoplex-mini-cpu", "probe-geoplex-mini")


@pytest.mark.parametrize(
    "name", [n if n in FAST_CONFIGS else pytest.param(n, marks=pytest.mark.slow) for n in CONFIG_NAMES]
)
def test_fast_dev_run_of_every_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(["fit", "--config", CONFIGS / f"{name}.yaml", *FAST, *_test_size_overrides(name)], capsys)
    assert rc == 0, err[-3000:]
    assert "error:" not in err


def test_validate_and_test_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", CONFIGS / "probe-geoplex-mini.yaml", *FAST, *_test_size_overrides("probe-geoplex-mini")]
    for sub in ("validate", "test"):
        rc, err = _run([sub, *base], capsys)
        assert rc == 0, err[-3000:]


def test_downstream_values_follow_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import AnySatCLI

    cfg = ["--config", str(CONFIGS / "probe-geoplex-mini.yaml"), *FAST, *_test_size_overrides("probe-geoplex-mini")]
    cli = AnySatCLI(args=[*cfg, "--model.task", "segmentation"], run=False)
    model, data = cli.model, cli.datamodule
    assert model.task == "segmentation" and data.options["task"] == "segmentation"
    assert model.modalities == ("s2", "s1-asc") and model.patch_size_m == data.patch_size_m == 20
    monitors = {cb.monitor for cb in cli.trainer.callbacks if hasattr(cb, "monitor") and cb.monitor}
    assert monitors == {"val/miou"}


# ------------------------------------------------------------------------------------------------ early errors
MINI = ["fit", "--config", CONFIGS / "geoplex-mini-cpu.yaml", *FAST, *_test_size_overrides("geoplex-mini-cpu")]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data.datasets.0.name", "geoplex-maxi"], "unknown dataset 'geoplex-maxi'"),
        (["--data.datasets.0.modalities", "[s2, s9]"], "unknown modality 's9'"),
        (["--model.sise", "test"], "unknown key(s) 'sise' of training.jepa.AnySatJEPA"),
        (["--data.datasets.0.batchsize", "3"], "unknown key(s) ['batchsize']"),
        (["--data.datasets.2.root", "/x"], "data.datasets has 1 entries"),
        (["--data.mask.target_area", "[0.5, 0.1]"], "MaskSpec target_area"),
        (["--data.datasets.0.batch_size", "100000000"], "lower data.datasets.0.batch_size"),
        (["--ckpt_path", "missing.ckpt"], "does not exist"),
    ],
)
def test_bad_values_fail_before_training(
    extra: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, err = _run([*MINI, *extra], capsys)
    assert rc == 2
    assert err.startswith("error: ") or "\nerror: " in err, err[-2000:]
    assert expected in err, err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "geoplex-mini-cpu" / "encoder.pt").exists()  # nothing trained


def test_unknown_key_in_a_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    predictor_deepth: 2\n")
    rc, err = _run([*MINI, "--config", bad], capsys)
    assert rc == 2 and "predictor_deepth" in err and "Traceback" not in err


def test_missing_dataset_roots(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(["fit", "--config", CONFIGS / "geoplex.yaml", "--model.size", "test"], capsys)
    assert rc == 2 and "data.datasets.0.root is not set" in err and "--data.datasets.0.root" in err
    probe = ["fit", "--config", CONFIGS / "probe-treesatai-ts.yaml", "--model.weights", "null", "--model.size", "test"]
    rc, err = _run(probe, capsys)
    assert rc == 2 and "data.root is not set" in err
    rc, err = _run([*probe, "--data.root", "/nonexistent/TreeSatAI-TS"], capsys)
    assert rc == 2 and err.startswith("error: ") and "/nonexistent/TreeSatAI-TS" in err and "Traceback" not in err


def test_memory_estimate_grows_with_the_batch() -> None:
    from anysat_core.data.datasets import get_dataset

    module = AnySatJEPA(size="test", modalities=["s2", "s1-asc"], predictor_depth=2, total_steps=10)
    sample = get_dataset("geoplex-mini", split="train", modalities=["s2", "s1-asc"], tiles=2, seed=0)[0]
    one, many = (estimate_step_bytes(module, sample, b, 10.0) for b in (1, 64))
    params = 4 * sum(p.numel() for p in module.parameters())
    assert params < one < many and many - one == pytest.approx(63 * (one - estimate_step_bytes(module, sample, 0, 10)))
    assert estimate_step_bytes(module, sample, 8, 10.0) > estimate_step_bytes(module, sample, 8, 20.0)


# ------------------------------------------------------------------------------------------------ a short run
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step geoplex-mini-cpu run (test size) with last.ckpt and the exported encoder in its folder."""
    d = tmp_path_factory.mktemp("run")
    extra = d / "run.yaml"
    extra.write_text(
        "trainer:\n  logger: false\n  limit_val_batches: 0\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {d / 'ckpt'}, every_n_train_steps: 1, save_last: true}}\n"
        "    - class_path: training.callbacks.ExportEncoder\n"
        f"      init_args: {{path: {d / 'encoder.pt'}, released_path: {d / 'released.pt'}}}\n"
    )
    args = ["fit", "--config", CONFIGS / "geoplex-mini-cpu.yaml", "--config", extra]
    args += [
        *_test_size_overrides("geoplex-mini-cpu"),
        "--trainer.max_steps",
        "3",
        "--trainer.enable_progress_bar",
        "false",
    ]
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        os.chdir(cwd)
    return d


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, or within 1e-6 (the same weights loaded elsewhere in memory may take another kernel path)."""
    return a.shape == b.shape and (torch.equal(a, b) or float((a - b).abs().max()) <= 1e-6)


def _features(model: AnySat, modalities: tuple[str, ...] = ("s2", "s1-asc")) -> torch.Tensor:
    batch = random_batch(list(modalities), extent_m=60, batch_size=2, dates=4, seed=3)
    with torch.no_grad():
        return model.eval()(batch, patch_size_m=20, output="all")


def test_checkpoint_is_whole_and_records_the_encoder(trained_run: Path) -> None:
    last = trained_run / "ckpt" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["anysat_encoder"]["prefix"] == "teacher."
    assert ckpt["anysat_encoder"]["config"]["modalities"] == ["s2", "s1-asc"]
    assert not list((trained_run / "ckpt").glob(".*.tmp"))  # no temporaries left
    mode = stat.S_IMODE(last.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_export_round_trip(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    last = trained_run / "ckpt" / "last.ckpt"
    teacher = AnySatJEPA.load_from_checkpoint(last, map_location="cpu").teacher_encoder()
    expected = _features(teacher)
    # the encoder the ExportEncoder callback wrote when fit ended
    assert _same(_features(AnySat.from_checkpoint(trained_run / "encoder.pt")), expected)
    out = trained_run / "exported.pt"
    rc, err = _run(["export", last, out], capsys)
    assert rc == 0, err
    assert _same(_features(AnySat.from_checkpoint(out)), expected)
    rc, err = _run(["export", last, out], capsys)
    assert rc == 2 and "overwrite" in err  # an existing file is kept unless --overwrite
    assert main(["export", str(last), str(out), "--dtype", "float16", "--overwrite"]) == 0
    torch.testing.assert_close(_features(AnySat.from_checkpoint(out)), expected, atol=1e-2, rtol=1e-2)
    assert _same(_features(load_training_encoder(last)), expected)


def test_export_released_format_round_trip(tmp_path: Path) -> None:
    """Both formats of a module with every projector (the released layout holds no config: the loader infers it)."""
    torch.manual_seed(0)
    module = AnySatJEPA(size="test", predictor_depth=1, total_steps=10)
    with torch.no_grad():  # a teacher that differs from the student
        for p in module.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expected = _features(module.teacher)
    for fmt in ("anysat", "released"):
        path = export_encoder(module, tmp_path / f"{fmt}.pt", format=fmt)
        loaded = AnySat.from_checkpoint(path)
        assert _same(_features(loaded), expected), fmt
    sd = torch.load(tmp_path / "released.pt", weights_only=True)
    assert set(sd) == {"state_dict"} and set(sd["state_dict"]) == set(module.teacher.state_dict())


def test_export_released_format_of_a_modality_subset(trained_run: Path) -> None:
    """The released layout of a model with only some projectors (what geoplex-mini-cpu trains)."""
    out = export_encoder(trained_run / "ckpt" / "last.ckpt", trained_run / "subset-released.pt", format="released")
    loaded = AnySat.from_checkpoint(out)  # no config in the file: the modalities come from its projector keys
    assert loaded.modalities == tuple(sorted(loaded.modalities, key=list(MODALITIES).index))
    expected = _features(load_training_encoder(trained_run / "ckpt" / "last.ckpt"))
    assert _same(_features(loaded), expected)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_damaged_checkpoints_are_refused(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = (trained_run / "ckpt" / "last.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(data[:2000] + bytes([data[2000] ^ 0xFF]) + data[2001:])
    for bad in (cut, flipped):
        rc, err = _run([*MINI, "--ckpt_path", bad], capsys)
        assert rc == 2 and "is damaged" in err and "Traceback" not in err, err[-1500:]
    # a whole file whose tensors do not fit the model (here: no hyper-parameters, half the keys) is refused before
    # fit, listing the keys (Lightning would fail only after setting everything up)
    ckpt = torch.load(trained_run / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt.pop("hyper_parameters")
    ckpt["state_dict"] = dict(list(ckpt["state_dict"].items())[::2])
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    rc, err = _run([*MINI, "--ckpt_path", other], capsys)
    assert rc == 2 and "does not match" in err and "missing keys" in err, err[-1500:]


def test_atomic_checkpoint_io(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))
    (path.parent / ".last.ckpt.abc.tmp").write_bytes(b"stale")  # from a writer that was killed
    with pytest.raises(Exception, match=r"pickle|lambda"):  # a failing write keeps the previous file
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "bad": lambda: 0}, path)  # type: ignore[dict-item]
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
