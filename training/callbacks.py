"""Callbacks and plugins of the training command line: atomic checkpoints, the encoder config recorded in every
checkpoint, and the export of the trained encoder at the end of ``fit``.

* :class:`AtomicCheckpointIO` writes every Lightning checkpoint under a temporary name in the same folder and
  renames it into place (``os.replace``), so a run killed while saving never leaves a truncated ``last.ckpt``: the
  previous one stays whole.  The file gets the permissions of the process umask (``0o666 & ~umask``), like every
  writer of the package (:func:`anysat_core.writers.atomic_write`).  The command line installs it on every run whose
  strategy uses Lightning's default ``TorchCheckpointIO``; elsewhere, pass ``plugins=[AtomicCheckpointIO()]`` to the
  ``Trainer``.
* :class:`EncoderConfigInCheckpoint` stores the encoder's :class:`~anysat_core.config.AnySatConfig` in every
  checkpoint (``checkpoint["anysat_encoder"]``), so :func:`training.export.export_encoder` rebuilds exactly the model
  that was trained (size, modalities, attention mode).  The command line always adds it.
* :class:`ExportEncoder` writes the encoder (the EMA teacher after pretraining) with
  :func:`~training.export.export_encoder` when ``fit`` ends, on global rank 0 only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from anysat_core.errors import ConfigError
from anysat_core.writers import atomic_write
from training.export import ENCODER_KEY, ExportFormat, encoder_of, export_encoder

__all__ = ["AtomicCheckpointIO", "EncoderConfigInCheckpoint", "ExportEncoder"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` writes a temporary file beside the target, flushes it to disk
    and renames it into place (atomic on a local file system); remote paths (``s3://...``) keep Lightning's writer.

    Temporaries of an earlier writer of the same file that was killed (``.<name>.*.tmp``) are removed first.

    Raises:
        OutputWriteError: the checkpoint cannot be written (full disk, read-only folder); an existing checkpoint of
            that name is left unchanged and no temporary remains.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        with atomic_write(target, "write the checkpoint", mkdir=False) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


class EncoderConfigInCheckpoint(L.Callback):
    """Records ``{"prefix": "teacher." | "encoder.", "config": AnySatConfig.to_dict()}`` of the module's encoder
    in every checkpoint, under ``"anysat_encoder"`` (read by :func:`training.export.export_encoder`)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        try:
            encoder, prefix = encoder_of(pl_module)
        except ConfigError:  # a module of the user's without an AnySat encoder: nothing to record
            return
        checkpoint[ENCODER_KEY] = {"prefix": prefix, "config": encoder.config.to_dict()}


class ExportEncoder(L.Callback):
    """Export the trained encoder when ``fit`` ends (global rank 0).

    Args:
        path: output file (its folder is created); an existing file is replaced (the run owns it).
        format: ``"anysat"`` (:meth:`AnySat.save`, config embedded) or ``"released"`` (``{'state_dict': ...}``).
        dtype: cast the weights (``"float16"``, ``"bfloat16"``) or None to keep float32.
        released_path: also write the released format there (optional).
    """

    def __init__(
        self,
        path: str = "encoder.pt",
        format: ExportFormat = "anysat",
        dtype: str | None = None,
        released_path: str | None = None,
    ) -> None:
        super().__init__()
        if format not in ("anysat", "released"):
            raise ConfigError(f"ExportEncoder format={format!r}; expected 'anysat' or 'released'")
        self.path, self.format, self.dtype, self.released_path = path, format, dtype, released_path
        #: files written by the last fit (empty until then)
        self.written: list[Path] = []

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        targets: list[tuple[str, ExportFormat]] = [(self.path, self.format)]
        if self.released_path:
            targets.append((self.released_path, "released"))
        self.written = []
        for path, fmt in targets:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.written.append(export_encoder(pl_module, path, format=fmt, overwrite=True, dtype=self.dtype))
