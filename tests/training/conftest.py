"""Helpers of the command-line and scale-out tests: callbacks that a config can name by class path in a child
process (``tests.training.conftest.KillAtStep``), the tiny GeoPlex-mini overrides, the committed fake roots."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"
DATA = REPO / "tests" / "data"

#: a GeoPlex-mini world of 4 x 4 tiles in 2 x 2-tile blocks: train, val and test are all non-empty
MINI_OPTIONS = "{seed: 0, tiles: 4, tile_m: 60, block_tiles: 2}"


class KillAtStep(L.Callback):
    """SIGKILL this process when the batch after optimiser step ``step`` starts (the checkpoint of ``step`` is on
    disk by then: checkpoint callbacks run at the end of the previous batch)."""

    def __init__(self, step: int = 3) -> None:
        super().__init__()
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SaveTeacherPerRank(L.Callback):
    """Write ``teacher-<rank>.pt`` (the EMA teacher's state dict) into ``folder`` on every rank when fit ends."""

    def __init__(self, folder: str = ".") -> None:
        super().__init__()
        self.folder = folder

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sd = {k: v.detach().cpu() for k, v in pl_module.teacher.state_dict().items()}
        torch.save(sd, Path(self.folder) / f"teacher-{trainer.global_rank}.pt")
