"""The training command line (``python -m training``), on Lightning's ``LightningCLI``.

Subcommands: ``fit``, ``validate``, ``test``, ``predict`` (LightningCLI's) and ``export`` (the trained encoder as a
file ``AnySat.from_checkpoint`` loads, see :mod:`training.export`)::

    python -m training fit --config training/configs/geoplex-mini-cpu.yaml --trainer.max_steps 50
    python -m training fit --config training/configs/geoplex-mini-cpu.yaml --ckpt_path last    # resume
    python -m training fit --config training/configs/probe-geoplex-mini.yaml --model.weights encoder.pt
    python -m training export runs/geoplex-mini-cpu/checkpoints/last.ckpt anysat-mini.pt [--format released]

A config names the LightningModule and the datamodule by class path (``subclass_mode``)::

    model:
      class_path: training.jepa.AnySatJEPA            # or training.downstream.AnySatTask
      init_args: {size: tiny, ...}
    data:
      class_path: training.data.PretrainDataModule    # or training.data.DownstreamDataModule
      init_args: {...}

Every value can be overridden on the command line (``--model.size test``, ``--data.datasets.0.root /data/PASTIS``,
``--trainer.max_steps 50``).

**Values one side decides for the other.**  The downstream module's ``dataset``, ``modalities`` and ``patch_size_m``
default to the datamodule's (and the other way round), and GeoPlex-mini's loader ``task`` option follows the
module's ``task`` (``change-detection`` -> ``task: change``); the pretraining module's ``modalities`` default to
those of the datasets of the mix.  These are filled in before the classes are built, only where a side leaves the
value unset (None), so both sides stay overridable; a contradiction (module ``dataset`` != datamodule ``name``) is
a ConfigError.  ``parser.link_arguments`` is not used for them: a link target disappears from the command line (it
can no longer be overridden) and a link cannot depend on which class a config names.

**Refused before training starts** (an :class:`~anysat_core.errors.AnySatError` printed as ``error: <message>``,
exit status 2, no traceback): an unknown key, dataset or modality in a config; a missing dataset root; a damaged
checkpoint given to ``--ckpt_path`` (or one of another model); a batch whose estimated memory for one step exceeds
this machine's share (:func:`anysat_core.memory.check_memory`) or the GPU's memory.

**Always on:** checkpoints are written atomically (:class:`~training.callbacks.AtomicCheckpointIO`, for the
strategies that use Lightning's default checkpoint writer) and record the encoder's config
(:class:`~training.callbacks.EncoderConfigInCheckpoint`).
"""

from __future__ import annotations

import argparse
import glob
import inspect
import math
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from anysat_core.errors import AnySatError, CheckpointError, ConfigError, MemoryLimitError
from anysat_core.memory import check_memory, format_bytes
from training.callbacks import AtomicCheckpointIO, EncoderConfigInCheckpoint

__all__ = ["AnySatCLI", "estimate_step_bytes", "main", "validate_checkpoint"]

PROG = "python -m training"
_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_JEPA = "training.jepa.AnySatJEPA"
_TASK = "training.downstream.AnySatTask"
_PRETRAIN_DATA = "training.data.PretrainDataModule"
_DOWNSTREAM_DATA = "training.data.DownstreamDataModule"
#: share of a GPU's memory one step may plan to use (the rest: CUDA context, allocator fragmentation)
GPU_SHARE = 0.9


# ---------------------------------------------------------------------------------------------- checkpoints
def validate_checkpoint(path: str | os.PathLike[str], *, what: str = "--ckpt_path") -> dict[str, Any]:
    """Read a Lightning checkpoint completely (every member's CRC, then ``torch.load(weights_only=True)``).

    Returns:
        The checkpoint dict (tensors memory-mapped).

    Raises:
        CheckpointError: a missing, truncated, damaged or foreign file; the message says what to do instead.
    """
    p = Path(path)
    fix = (
        "resume from another checkpoint of the run (its last.ckpt or an epoch=...-step=....ckpt in the checkpoint "
        "folder) or start over without --ckpt_path"
    )
    if not p.is_file():
        raise CheckpointError(
            f"{what} {str(p)!r} does not exist or is not a file; give a checkpoint file written by this command, "
            "or --ckpt_path last to resume from the run's last checkpoint"
        )
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad!r} fails its CRC check")
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # BadZipFile, EOFError, UnpicklingError, RuntimeError...
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{what} {str(p)!r} is damaged or not a Lightning checkpoint ({type(e).__name__}: {first}); {fix}"
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{what} {str(p)!r} holds no 'state_dict'; it is not a Lightning checkpoint; {fix}")
    return ckpt


def _check_against_model(ckpt: Mapping[str, Any], model: torch.nn.Module, source: str) -> None:
    """CheckpointMismatchError listing the keys that differ between a checkpoint and the module built from the
    config (Lightning would fail on them only after setting everything up)."""
    from anysat_core.model.checkpoint import check_state_dict

    if not getattr(model, "strict_loading", True):
        return
    check_state_dict(
        model,
        dict(ckpt["state_dict"]),
        source,
        fix="Resume with the config of the run that wrote the checkpoint (same model class, size and modalities).",
    )


# ---------------------------------------------------------------------------------------------- memory
def _sample_tokens(sample: Mapping[str, Any], patch_size_m: float) -> dict[str, float]:
    """Token and element counts of one sample at ``patch_size_m``: ``main`` (sequence of the main transformer),
    ``sub`` (sub-patch tokens of the projectors/spatial encoder), ``series`` (pixel-dates of the time series),
    ``image`` (values of the single-date images), ``grid`` (patches per side)."""
    from anysat_core.data.sample import modalities_of, sample_extent_m
    from anysat_core.modalities import MODALITIES

    extent = float(sample_extent_m(sample))
    grid = max(1, round(extent / float(patch_size_m)))
    P = grid * grid
    main, sub, series, image = 1.0, 0.0, 0.0, 0.0
    for m in modalities_of(sample):
        info = MODALITIES[m]
        shape = tuple(sample[m].shape)
        if info.tile_token:
            main += 1
        else:
            main += P
            sub += (extent / float(info.token_m)) ** 2
        if info.time_series:
            series += math.prod(shape) / shape[-3]  # pixel-dates T*H*W
        else:
            image += math.prod(shape)  # values C*H*W
    return {"main": main, "sub": sub, "series": series, "image": image, "grid": grid}


def estimate_step_bytes(
    model: torch.nn.Module,
    sample: Mapping[str, Any],
    batch_size: int,
    patch_size_m: float,
    *,
    training: bool = True,
    precision: str = "32-true",
) -> float:
    """Estimated peak bytes of one step: parameters (and gradients, AdamW moments of the trainable ones when
    ``training``) plus the activations kept for the backward pass, from the model's width and depth, the tokens of
    one sample at ``patch_size_m`` and the batch size.

    Per sample and transformer block the activations are ``(9 + 2 mlp_ratio) D`` values per token (q, k, v, the
    attention output and projection, two norms, two residuals, the MLP's hidden layer before and after GELU) plus
    the ``heads x L x L`` attention weights; the temporal projectors keep about ``4 D`` values per pixel-date, the
    VHR ones about two copies of their input.  Pretraining
    adds the predictor (one sequence per target block).  It is a lower-bound style estimate: a step that exceeds it
    does not fit; one under it may still need more.
    """
    enc = _encoder(model)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad) if training else 0
    state = 4.0 * n_params + 12.0 * n_train  # fp32 weights; gradient + 2 AdamW moments
    if enc is None:
        return state
    c = enc.config
    D, depth, heads, ratio = c.embed_dim, c.depth, c.num_heads, c.mlp_ratio
    per_token = (9 + 2 * ratio) * D
    t = _sample_tokens(sample, patch_size_m)
    L_main, S = t["main"], t["sub"]
    act = (depth + 1) * (L_main * per_token + heads * L_main * L_main)  # main blocks + combiner
    act += depth * S * per_token  # spatial encoder over the sub-patch tokens
    act += 4 * D * t["series"] + 2 * t["image"]  # projectors: L-TAE per pixel-date; VHR patch embedding
    hp = getattr(model, "hparams", {})
    if hasattr(model, "predictor"):  # JEPA: predictor over context + each target block
        pd = int(hp.get("predictor_dim") or D)
        pdepth = int(hp.get("predictor_depth", 4))
        P = t["grid"] ** 2
        n_t = 4
        act += pdepth * n_t * (2 * P) * (9 + 2 * ratio) * pd
    frozen = bool(getattr(model, "encoder_frozen", False))
    if not training or frozen:
        act /= 2 * depth + 1  # no graph: only one block's activations live at a time
    elem = 2.0 if str(precision).startswith(("16", "bf16")) else 4.0
    return state + batch_size * act * elem


def _encoder(model: torch.nn.Module) -> Any:
    from training.export import encoder_of

    try:
        return encoder_of(model)[0]
    except ConfigError:
        return None


def _batches(datamodule: Any, model: torch.nn.Module) -> list[tuple[str, Mapping[str, Any], int, float, str]]:
    """``(description, sample, batch size, patch size, option that sets the batch size)`` of every kind of batch
    the datamodule makes (pretraining: each dataset at its smallest patch size, the largest grid)."""
    from training.data import DownstreamDataModule, PretrainDataModule

    out: list[tuple[str, Mapping[str, Any], int, float, str]] = []
    if isinstance(datamodule, PretrainDataModule):
        for i, (spec, ds) in enumerate(zip(datamodule.specs, datamodule.train_sets)):
            out.append((spec.name, ds[0], spec.batch_size, min(spec.scales_m), f"data.datasets.{i}.batch_size"))
    elif isinstance(datamodule, DownstreamDataModule):
        split = next((s for s in datamodule.splits.values() if s is not None), None)
        if split is not None:
            ds = datamodule.dataset(split)
            if len(ds):
                patch = float(getattr(model, "patch_size_m", None) or datamodule.patch_size_m)
                out.append((str(datamodule.name), ds[0], datamodule.batch_size, patch, "data.batch_size"))
    return out


def check_step_memory(trainer: L.Trainer, model: torch.nn.Module, datamodule: Any, *, training: bool) -> None:
    """Refuse a configuration whose estimated step (:func:`estimate_step_bytes`) exceeds this machine's share of
    memory (CPU) or the GPU's memory.

    Raises:
        MemoryLimitError: naming the batch size option to lower.
    """
    precision = str(getattr(trainer.precision_plugin, "precision", "32-true"))
    device = trainer.strategy.root_device
    for name, sample, batch_size, patch, option in _batches(datamodule, model):
        nbytes = estimate_step_bytes(model, sample, batch_size, patch, training=training, precision=precision)
        t = _sample_tokens(sample, patch)
        what = (
            f"one {'training' if training else 'evaluation'} step of {type(model).__name__} on {name} with "
            f"batch_size={batch_size} ({int(t['main'])} tokens per sample at {patch:g} m patches)"
        )
        fix = (
            f"lower {option} (--{option} N), or use larger patches, fewer modalities or a smaller model.size; "
            "accumulate gradients (--trainer.accumulate_grad_batches) to keep the effective batch"
        )
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            if nbytes > GPU_SHARE * total:
                raise MemoryLimitError(
                    f"{what} needs ~{format_bytes(nbytes)}; the GPU {device} has {format_bytes(total)} "
                    f"({GPU_SHARE:.0%} usable); {fix}"
                )
        else:
            check_memory(nbytes, what, fix)


# ---------------------------------------------------------------------------------------------- the CLI
def _get(ns: Any, key: str, default: Any = None) -> Any:
    if ns is None:
        return default
    if isinstance(ns, Mapping):
        return ns.get(key, default)
    return getattr(ns, key, default)


def _set(ns: Any, key: str, value: Any) -> None:
    if isinstance(ns, dict):
        ns[key] = value
    else:
        setattr(ns, key, value)


def _class_path(section: Any) -> str:
    return str(_get(section, "class_path", "") or "")


def _dataset_modalities(entry: Any) -> list[str]:
    from anysat_core.data.datasets import dataset_class

    mods = _get(entry, "modalities")
    if mods:
        return [mods] if isinstance(mods, str) else list(mods)
    name = _get(entry, "name")
    return list(dataset_class(str(name)).default_modalities) if name else []


class AnySatCLI(LightningCLI):
    """LightningCLI for AnySat pretraining and downstream tasks (see the module docstring).

    Args:
        args: the arguments (default ``sys.argv[1:]``).
        run: run the subcommand (False: only build the classes, for tests and notebooks).
        **kwargs: more ``LightningCLI`` arguments.
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        parser_kwargs: dict[str, Any] = {
            "prog": PROG,
            "exit_on_error": False,
            "description": "AnySat pretraining (JEPA + contrastive) and downstream probing/fine-tuning on Lightning. "
            "Configs: training/configs/*.yaml. Also: `python -m training export CKPT OUT.pt [--format released]` "
            "writes the trained encoder for AnySat.from_checkpoint.",
        }
        parser_kwargs.update({sub: {"exit_on_error": False} for sub in _SUBCOMMANDS})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"callbacks": [EncoderConfigInCheckpoint()]})
        super().__init__(
            model_class=L.LightningModule,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            parser_kwargs=parser_kwargs,
            auto_configure_optimizers=False,  # the modules configure AdamW and their schedules themselves
            args=list(args) if args is not None else None,
            run=run,
            **kwargs,
        )

    # ------------------------------------------------------------------ parsing
    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse; a jsonargparse error becomes a :class:`ConfigError` with its message.

        Options that address an entry of a list (``--data.datasets.0.root /data/PASTIS``, which jsonargparse does
        not support) are taken out first and applied to the parsed config (values read as YAML, like the others).
        """
        indexed: list[tuple[str, str]] = []
        printing: list[str] = []
        if isinstance(args, list):
            args, indexed = _split_indexed(args)
            if indexed:  # --print_config would print the config before the list entries are set
                printing = [a for a in args if a.startswith("--print_config")]
                args = [a for a in args if not a.startswith("--print_config")]
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as e:
            raise ConfigError(_parse_message(str(e))) from None
        if indexed:
            sub = self.config.get("subcommand")
            root = self.config[sub] if sub else self.config
            for key, raw in indexed:
                _apply_indexed(root, key, raw)
            if printing:
                print(self._parser(sub).dump(root, skip_none=False), end="")
                raise SystemExit(0)

    def instantiate_classes(self) -> None:
        """Build the classes; an AnySatError raised in a constructor is re-raised as itself (jsonargparse wraps it
        in a ValueError listing every type it tried)."""
        try:
            super().instantiate_classes()
        except AnySatError:
            raise
        except Exception as e:
            cause = _anysat_cause(e)
            if cause is not None:
                raise cause from None
            if isinstance(e, (ValueError, TypeError, argparse.ArgumentError)) and _is_parser_error(str(e)):
                raise ConfigError(_parse_message(str(e))) from None
            raise

    def _parse_ckpt_path(self) -> None:
        """Check the ``--ckpt_path`` file completely before Lightning reads its hyper-parameters."""
        sub = self.config.get("subcommand")
        if sub:
            ckpt = self.config[sub].get("ckpt_path")
            if ckpt and str(ckpt) not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt):
                validate_checkpoint(ckpt)
        try:
            super()._parse_ckpt_path()
        except argparse.ArgumentError as e:
            raise ConfigError(f"the hyper-parameters stored in --ckpt_path do not fit this config: {e}") from None

    def before_instantiate_classes(self) -> None:
        """Fill values one side leaves unset from the other (see the module docstring)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        model, data = cfg.get("model"), cfg.get("data")
        m_args, d_args = _get(model, "init_args"), _get(data, "init_args")
        if m_args is None or d_args is None:
            return
        m_cls, d_cls = _class_path(model), _class_path(data)
        _check_roots(d_cls, d_args)
        if m_cls == _TASK and d_cls == _DOWNSTREAM_DATA:
            _link_downstream(m_args, d_args)
            _monitor_metric(cfg, m_args)
        elif m_cls == _JEPA and d_cls == _PRETRAIN_DATA:
            if _get(m_args, "modalities") is None:
                mods: list[str] = []
                for entry in _get(d_args, "datasets") or []:
                    mods += [m for m in _dataset_modalities(entry) if m not in mods]
                if mods:
                    _set(m_args, "modalities", mods)
        elif {m_cls, d_cls} & {_TASK, _JEPA, _PRETRAIN_DATA, _DOWNSTREAM_DATA} and (
            (m_cls == _JEPA and d_cls == _DOWNSTREAM_DATA) or (m_cls == _TASK and d_cls == _PRETRAIN_DATA)
        ):
            raise ConfigError(
                f"model {m_cls} does not train on data {d_cls}: pretraining (AnySatJEPA) takes "
                "training.data.PretrainDataModule, downstream tasks (AnySatTask) take training.data.DownstreamDataModule"
            )

    # ------------------------------------------------------------------ trainer
    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The trainer, with :class:`AtomicCheckpointIO` where the strategy uses Lightning's default writer."""
        trainer = super().instantiate_trainer(**kwargs)
        strategy = trainer.strategy
        io = getattr(strategy, "_checkpoint_io", None)
        if io is None or type(io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    # ------------------------------------------------------------------ checks before running
    def _preflight(self, subcommand: str) -> None:
        ckpt = self.config_init[subcommand].get("ckpt_path")
        path = self._resolve_ckpt(str(ckpt)) if ckpt else None
        if path is not None:
            _check_against_model(validate_checkpoint(path), self.model, f"--ckpt_path {str(path)!r}")
        if self.datamodule is not None:
            check_step_memory(self.trainer, self.model, self.datamodule, training=subcommand == "fit")

    def _resolve_ckpt(self, ckpt: str) -> Path | None:
        """The file ``--ckpt_path`` names (``last``: the newest ``last*.ckpt`` of the checkpoint folders)."""
        if ckpt in ("best", "hpc", "registry") or "://" in ckpt:
            return None
        if ckpt != "last":
            return Path(ckpt)
        found: list[str] = []
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                found += glob.glob(os.path.join(str(cb.dirpath), "last*.ckpt"))
        return Path(max(found, key=os.path.getmtime)) if found else None

    def before_fit(self) -> None:
        self._preflight("fit")

    def before_validate(self) -> None:
        self._preflight("validate")

    def before_test(self) -> None:
        self._preflight("test")

    def before_predict(self) -> None:
        self._preflight("predict")


def _check_roots(data_class: str, d: Any) -> None:
    """ConfigError naming the option when a dataset read from disk has no root (the configs leave it to the user)."""
    from anysat_core.data.datasets import dataset_class

    if data_class == _PRETRAIN_DATA:
        entries = [(f"data.datasets.{i}", e) for i, e in enumerate(_get(d, "datasets") or [])]
    elif data_class == _DOWNSTREAM_DATA:
        entries = [("data", d)]
    else:
        return
    for where, entry in entries:
        name = _get(entry, "name")
        if name is None:
            continue
        cls = dataset_class(str(name))
        if not cls.generated and _get(entry, "root") is None:
            raise ConfigError(
                f"{where}.root is not set: {cls.name} is read from disk; give its folder with --{where}.root "
                f"/path/to/{cls.name} (download it from {cls.url})"
            )


#: monitor value in a config that stands for the task module's headline metric
METRIC_PLACEHOLDER = "val/metric"


def _monitor_metric(cfg: Any, m: Any) -> None:
    """Replace ``monitor: val/metric`` of the trainer's callbacks (ModelCheckpoint, EarlyStopping) with the task
    module's headline metric (``val/<metric>``, the paper's for the dataset and task) and ``mode: max``."""
    from training.downstream import METRICS, dataset_defaults, normalize_task

    metric = _get(m, "metric")
    if metric is None:
        task = _get(m, "task")
        if _get(m, "dataset") is not None:
            metric = dataset_defaults(str(_get(m, "dataset")), task, _get(m, "modalities"))["metric"]
        elif task is not None:
            metric = METRICS[normalize_task(str(task))][0]
    if metric is None:
        return
    trainer = _get(cfg, "trainer")
    callbacks = _get(trainer, "callbacks") or []
    for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
        args = _get(cb, "init_args")
        if args is not None and _get(args, "monitor") == METRIC_PLACEHOLDER:
            _set(args, "monitor", f"val/{metric}")
            _set(args, "mode", "max")


def _link_downstream(m: Any, d: Any) -> None:
    """Downstream: dataset, modalities, patch size and GeoPlex-mini's loader task shared by module and data."""
    from anysat_core.data.datasets import dataset_class
    from training.downstream import loader_task, normalize_task

    name = _get(d, "name")
    if name is None:
        return
    ds = _get(m, "dataset")
    if ds is None:
        if _get(m, "task") is None or _get(m, "num_classes") is None:
            _set(m, "dataset", name)
    elif dataset_class(str(ds)).name != dataset_class(str(name)).name:
        raise ConfigError(
            f"model.dataset={ds!r} but data.name={name!r}; the task module and the data must name the same dataset "
            "(leave model.dataset unset: it follows data.name)"
        )
    for key in ("modalities", "patch_size_m"):
        mv, dv = _get(m, key), _get(d, key)
        if mv is None and dv is not None:
            _set(m, key, list(dv) if key == "modalities" else dv)
        elif dv is None and mv is not None:
            _set(d, key, list(mv) if key == "modalities" else mv)
    cls = dataset_class(str(name))
    options = dict(_get(d, "options") or {})
    if "task" in inspect.signature(cls.__init__).parameters:
        task, opt = _get(m, "task"), options.get("task")
        if task is None and opt is not None:
            _set(m, "task", normalize_task(str(opt)))
        elif task is not None and opt is None:
            options["task"] = loader_task(cls.name, str(task))
            _set(d, "options", options)
        elif task is not None and opt is not None and normalize_task(str(task)) != normalize_task(str(opt)):
            raise ConfigError(f"model.task={task!r} but data.options.task={opt!r}; set one of them (the other follows)")


_INDEXED = re.compile(r"^--([A-Za-z_][\w-]*(?:\.[\w-]+)*\.\d+(?:\.[\w-]+)*)(?:=(.*))?$", re.DOTALL)


def _split_indexed(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``(other args, [(dotted key, raw value)])`` for the options with a list index (``--a.b.0.c VALUE`` or
    ``--a.b.0.c=VALUE``)."""
    rest: list[str] = []
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        m = _INDEXED.match(args[i]) if args[i].startswith("--") else None
        if m is None:
            rest.append(args[i])
            i += 1
            continue
        if m.group(2) is not None:
            found.append((m.group(1), m.group(2)))
            i += 1
        elif i + 1 < len(args):
            found.append((m.group(1), args[i + 1]))
            i += 2
        else:
            raise ConfigError(f"{args[i]} needs a value, e.g. {args[i]} VALUE")
    return rest, found


def _apply_indexed(root: Any, key: str, raw: str) -> None:
    """Set ``key`` (dotted, with list indices; ``init_args`` may be left out) in the parsed config."""
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node: Any = root
    walked: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node) and isinstance(node[int(part)], Namespace):
                # an entry parsed as a dataclass (DatasetSpec) becomes a dict again: its constructor checks keys
                entry = node[int(part)].as_dict()
                node[int(part)] = {k: v for k, v in entry.items() if not k.startswith("__")}
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--{key}: {'.'.join(walked) or 'the list'} has {len(node)} entries (indices 0 to "
                    f"{len(node) - 1}); give an index below {len(node)} or set the whole list"
                )
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
        else:
            if _get(node, part) is None and not last and _get(node, "init_args") is not None:
                node = _get(node, "init_args")
            if last:
                _set(node, part, value)
                return
            child = _get(node, part)
            if child is None:
                if part.isdigit():
                    raise ConfigError(f"--{key}: {'.'.join(walked)} is not a list")
                child = {}
                _set(node, part, child)
            node = child
        walked.append(part)


def _anysat_cause(e: BaseException) -> AnySatError | None:
    """The first AnySatError in the cause/context chain of ``e``."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        if isinstance(x, AnySatError):
            return x
        seen.add(id(x))
        x = x.__cause__ or x.__context__
    return None


_PARSER_MARKS = ("Problem with given class_path", "Does not validate against", "Parser key", "is not accepted")
_KEY_PATTERNS = (
    re.compile(r"Option '([^']+)' is not accepted"),
    re.compile(r'No action for (?:key|destination key) "([^"]+)"'),
    re.compile(r'Key "([^"]+)" is not expected'),
    re.compile(r"Unrecognized arguments: (.+)", re.IGNORECASE),
)


def _is_parser_error(message: str) -> bool:
    return any(mark in message for mark in _PARSER_MARKS)


def _parse_message(message: str) -> str:
    """A jsonargparse message made readable: the unknown keys and the class they were given to, else the message
    without its dumps of the whole config; then what lists the accepted keys."""
    keys = list(dict.fromkeys(k for pat in _KEY_PATTERNS for k in pat.findall(message)))
    classes = list(dict.fromkeys(re.findall(r"class_path '([\w.]+)'", message)))
    if keys:
        where = f" of {classes[-1]}" if classes else ""
        text = f"unknown key(s) {', '.join(map(repr, keys))}{where}; check the spelling against the class's arguments"
    else:
        noise = ("Given value", "Expected a <class 'NoneType'>", "Subtypes:", "Errors:")
        lines = [ln.rstrip() for ln in message.strip().splitlines() if ln.strip() and not ln.strip().startswith(noise)]
        lines = [ln.lstrip(" -") for ln in lines]
        text = "; ".join(dict.fromkeys(lines[:8]))
    return (
        f"the configuration is invalid: {text}\n"
        f"({PROG} fit --help lists the options; {PROG} fit --model.help CLASS and --data.help CLASS list a class's "
        "arguments)"
    )


# ---------------------------------------------------------------------------------------------- export command
def _export_main(argv: Sequence[str]) -> int:
    from training.export import export_encoder

    p = argparse.ArgumentParser(
        prog=f"{PROG} export",
        description="Write the encoder of a training checkpoint (the EMA teacher of a pretraining run, the encoder of "
        "a downstream run) as a file that AnySat.from_checkpoint loads.",
    )
    p.add_argument("checkpoint", help="a Lightning checkpoint of the run (e.g. runs/<name>/checkpoints/last.ckpt)")
    p.add_argument("out", help="the output file (.pt)")
    p.add_argument(
        "--format",
        choices=("anysat", "released"),
        default="anysat",
        help="'anysat' (default: AnySat.save, config embedded) or 'released' (the official {'state_dict': ...})",
    )
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="cast the weights (default: keep)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(list(argv))
    path = export_encoder(args.checkpoint, args.out, format=args.format, overwrite=args.overwrite, dtype=args.dtype)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the training command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status: 0 done,
    2 an AnySat error (``error: ...`` on stderr) or bad arguments, 130 interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    # the arguments are passed on explicitly (so that list entries can be addressed); that is no mistake here
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        if args and args[0] == "export":
            return _export_main(args[1:])
        AnySatCLI(args=args)
        return 0
    except AnySatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command with --ckpt_path last to resume", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help, argparse usage errors
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 2)
