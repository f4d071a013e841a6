"""Scale-out through the command line, in child processes: a run killed (SIGKILL) mid-epoch resumes from its last
checkpoint to the same final weights as an uninterrupted run; DDP with 2 CPU processes (gloo) ends with the same
teacher on both ranks.  Both take tens of seconds: marked ``slow`` (``make test`` runs them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.conftest import CONFIGS, MINI_OPTIONS, REPO

pytestmark = pytest.mark.slow

#: a test-size model on a 4 x 4-tile world, batches of 2 (4 steps per epoch), no validation, no logger
BASE = [
    "fit",
    "--config",
    str(CONFIGS / "geoplex-mini-cpu.yaml"),
    "--model.size",
    "test",
    "--data.datasets.0.options",
    MINI_OPTIONS,
    "--data.datasets.0.batch_size",
    "2",
    "--trainer.limit_val_batches",
    "0",
    "--trainer.enable_progress_bar",
    "false",
]


def _callbacks(folder: Path, *extra: str) -> Path:
    """A config of the trainer's callbacks: last.ckpt after every step in ``folder`` (plus ``extra`` entries)."""
    path = folder / "callbacks.yaml"
    lines = [
        "trainer:",
        "  logger: false",
        "  callbacks:",
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint",
        f"      init_args: {{dirpath: {folder / 'ckpt'}, every_n_train_steps: 1, save_last: true, save_top_k: 1}}",
        *extra,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    steps = ["--trainer.max_steps", "7"]  # crosses the epoch boundary after step 4
    ref = tmp_path / "ref"
    ref.mkdir()
    done = _cli([*BASE, "--config", str(_callbacks(ref)), *steps], ref)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "run"
    run.mkdir()
    kill = [
        "    - class_path: tests.training.conftest.KillAtStep",
        "      init_args: {step: 2}",  # mid-epoch: after 2 of the 4 batches of epoch 0
    ]
    killed = _cli([*BASE, "--config", str(_callbacks(run, *kill)), *steps], run)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = run / "ckpt" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    resumed = _cli([*BASE, "--config", str(_callbacks(run)), *steps, "--ckpt_path", "last"], run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want, got = _state(ref / "ckpt" / "last.ckpt"), _state(last)
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 7
    assert want.keys() == got.keys()
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert not differ, f"{len(differ)} tensors differ after the resume, e.g. {differ[:5]}"


def test_ddp_two_cpu_processes_end_with_the_same_teacher(tmp_path: Path) -> None:
    save = [
        "    - class_path: tests.training.conftest.SaveTeacherPerRank",
        f"      init_args: {{folder: {tmp_path}}}",
    ]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    done = _cli([*BASE, "--config", str(_callbacks(tmp_path, *save)), *ddp, "--trainer.max_steps", "3"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    t0, t1 = (torch.load(tmp_path / f"teacher-{r}.pt", weights_only=True) for r in (0, 1))
    assert t0.keys() == t1.keys()
    assert all(torch.equal(t0[k], t1[k]) for k in t0)
    start = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert start["global_step"] == 3
