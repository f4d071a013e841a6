"""Export the encoder of a training run: the EMA teacher of :class:`~training.jepa.AnySatJEPA` (what pretraining
produces) or the encoder of a fine-tuned :class:`~training.downstream.AnySatTask`.

Two formats, both read by :meth:`AnySat.from_checkpoint <anysat_core.model.anysat.AnySat.from_checkpoint>`:

* ``"anysat"`` (default): this package's format, :meth:`AnySat.save` (weights plus the model config, so the model
  is rebuilt exactly: size, modalities, attention mode);
* ``"released"``: the official layout ``{'state_dict': {name: tensor}}`` of the released ``AnySat.pth`` (the
  parameter names are the official ones, so the original code can read it too when the projectors match).  It holds
  no config: the reader infers the size from the shapes and the modalities from the projectors present.

From the command line: ``python -m training export RUN.ckpt OUT.pt [--format released] [--dtype float16]
[--overwrite]``.

A Lightning checkpoint (``.ckpt``) holds the whole training module; the encoder's keys are those under
``teacher.`` (pretraining) or ``encoder.`` (downstream).  Its config comes from ``checkpoint["anysat_encoder"]``
(written by :class:`~training.callbacks.EncoderConfigInCheckpoint`, which the command line always adds) or, for
checkpoints written without it, from the tensors' shapes, the projectors present and the module's hyper-parameters
(``flash_compat``).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from anysat_core.config import SIZES, AnySatConfig, config_for_size
from anysat_core.errors import CheckpointError, ConfigError
from anysat_core.model.anysat import AnySat
from anysat_core.writers import check_destination, save_torch

__all__ = ["ENCODER_KEY", "ExportFormat", "encoder_of", "export_encoder", "load_training_encoder"]

ExportFormat = Literal["anysat", "released"]
#: key of the encoder description in a Lightning checkpoint: ``{"prefix": "teacher.", "config": {...}}``
ENCODER_KEY = "anysat_encoder"
_PREFIXES = ("teacher.", "encoder.")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def encoder_of(module: nn.Module) -> tuple[AnySat, str]:
    """``(encoder, state-dict prefix)`` of a training module: the teacher of AnySatJEPA, the encoder of AnySatTask,
    or an AnySat itself (prefix ``""``).

    Raises:
        ConfigError: a module that holds no AnySat encoder.
    """
    if isinstance(module, AnySat):
        return module, ""
    teacher = getattr(module, "teacher_encoder", None)
    if callable(teacher):
        enc = teacher()
        if isinstance(enc, AnySat):
            return enc, "teacher."
    enc = getattr(module, "encoder", None)
    if isinstance(enc, AnySat):
        return enc, "encoder."
    raise ConfigError(
        f"{type(module).__name__} holds no AnySat encoder; export an AnySatJEPA (its teacher), an AnySatTask (its "
        "encoder), an AnySat or a Lightning checkpoint of one of them"
    )


def _read_lightning(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file; pass a Lightning .ckpt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle...
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(e).__name__}: {first}); it is damaged or not a file written "
            "by Lightning. Use another checkpoint of the run (e.g. last.ckpt) or train again"
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no 'state_dict'; expected a Lightning checkpoint of AnySatJEPA or AnySatTask"
        )
    return ckpt


def _infer_config(sd: Mapping[str, torch.Tensor], hparams: Mapping[str, Any], source: str) -> AnySatConfig:
    """The encoder config of a checkpoint written without :data:`ENCODER_KEY`: size from the shapes, modalities
    from the projectors present, attention from ``flash_compat``."""
    if "cls_token" not in sd:
        raise CheckpointError(f"{source} holds no AnySat encoder (no cls_token); expected a checkpoint of a run")
    dim = int(sd["cls_token"].shape[-1])
    depth = len({m.group(1) for k in sd if (m := re.match(r"spatial_encoder\.predictor_blocks\.(\d+)\.", k))})
    size = next((n for n, hp in SIZES.items() if hp["embed_dim"] == dim and hp["depth"] == depth), None)
    if size is None:
        raise CheckpointError(
            f"{source} holds an encoder of width {dim} and depth {depth}, no size preset; export it from the "
            "training module instead (export_encoder(module, ...))"
        )
    mods = tuple(sorted({k[len("projector_") :].split(".", 1)[0] for k in sd if k.startswith("projector_")}))
    attention = "flash-compat" if hparams.get("flash_compat") else "standard"
    return config_for_size(size, modalities=mods, attention=attention)


def load_training_encoder(path: str | os.PathLike[str]) -> AnySat:
    """The encoder (teacher for pretraining runs) of a Lightning checkpoint, in eval mode.

    Raises:
        CheckpointError: an unreadable file, or no AnySat encoder in it.
        CheckpointMismatchError: tensors that do not match the recorded config.
    """
    from anysat_core.model.checkpoint import check_state_dict

    p = Path(path)
    source = f"checkpoint {str(p)!r}"
    ckpt = _read_lightning(p)
    full = ckpt["state_dict"]
    info = ckpt.get(ENCODER_KEY)
    if isinstance(info, Mapping) and isinstance(info.get("config"), Mapping):
        prefix = str(info.get("prefix", ""))
        config = AnySatConfig.from_dict(dict(info["config"]))
    else:
        prefix = next((p for p in _PREFIXES if f"{p}cls_token" in full), "")
        if not prefix:
            raise CheckpointError(
                f"{source} holds no AnySat encoder (no teacher.* or encoder.* keys); expected a checkpoint of an "
                "AnySatJEPA or AnySatTask run"
            )
        config = None
    sd = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
    if config is None:
        config = _infer_config(sd, ckpt.get("hyper_parameters") or {}, source)
    model = AnySat(config=config)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigError(f"dtype={dtype}; expected a floating dtype (float32, float16, bfloat16)")
        return dtype
    if str(dtype) not in _DTYPES:
        raise ConfigError(f"dtype={dtype!r}; expected one of {', '.join(_DTYPES)} or None (keep the weights' dtype)")
    return _DTYPES[str(dtype)]


def export_encoder(
    ckpt_or_module: str | os.PathLike[str] | nn.Module,
    path: str | os.PathLike[str],
    *,
    format: ExportFormat = "anysat",
    overwrite: bool = False,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write the encoder of a training module or Lightning checkpoint as a file ``AnySat.from_checkpoint`` loads.

    Args:
        ckpt_or_module: a Lightning checkpoint path, an :class:`~training.jepa.AnySatJEPA` (its EMA teacher is
            exported), an :class:`~training.downstream.AnySatTask` (its encoder) or an :class:`AnySat`.
        path: the output file (written atomically: a temporary name in the same folder, then renamed; the file gets
            the permissions of the process umask).
        format: ``"anysat"`` (:meth:`AnySat.save`, config embedded) or ``"released"`` (``{'state_dict': ...}``, the
            official layout).
        overwrite: replace an existing ``path``.
        dtype: cast floating tensors (``"float16"`` halves the file; None keeps them).

    Returns:
        ``path``.

    Raises:
        ConfigError: an unknown format or dtype, or a module without an encoder.
        CheckpointError: an unreadable checkpoint or a missing output folder.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputWriteError: the file cannot be written.
    """
    if format not in ("anysat", "released"):
        raise ConfigError(f"format={format!r}; expected 'anysat' (AnySat.save, config embedded) or 'released'")
    cast = _dtype(dtype)
    out = Path(path)
    if not out.parent.is_dir():
        raise CheckpointError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
    check_destination(out, overwrite, ".pt file")
    if isinstance(ckpt_or_module, nn.Module):
        encoder, _ = encoder_of(ckpt_or_module)
    else:
        encoder = load_training_encoder(ckpt_or_module)
    if cast is not None:
        encoder = copy.deepcopy(encoder).to(dtype=cast)
    if format == "anysat":
        encoder.save(out, overwrite=overwrite)
    else:
        sd = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
        save_torch({"state_dict": sd}, out, "write the exported encoder")
    return out
