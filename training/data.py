"""Data for pretraining and downstream tasks: dataset specs, the JEPA collate, the multi-dataset mixing sampler and
the Lightning datamodules.

**Pretraining mix** (anysat-model.md §2.2).  Every step draws one dataset with probability proportional to its
``weight`` among the datasets that still have batches in this epoch (an epoch ends when all are exhausted), then one
patch size uniformly from that dataset's ``scales_m``, then the JEPA masks (:mod:`training.masks`) on the patch grid
``tile extent / patch_size_m``.

**Seeding scheme** (reproducible with any ``num_workers``, any number of DDP ranks, and across a resume).  Nothing
reads the global RNG: every draw comes from a private generator seeded by a tuple of ints
(:func:`training.masks.seeded_rng`):

* the per-dataset sample order of epoch ``e``: ``(seed, e, dataset, 0)``, identical on every rank; rank ``r`` of
  ``W`` takes every ``W``-th sample from position ``r`` (distinct shards; the tail that does not split evenly is left
  out of that epoch, so every rank has the same number of batches);
* the dataset of every step of epoch ``e``: ``(seed, e, 2**20)``, identical on every rank;
* the patch size of step ``s``: ``(seed, e, s, 0, 2)``; the mask block sizes: ``(seed, e, s)`` (identical on every
  rank, so all ranks run the same shapes); the mask positions: ``(seed, e, s, rank, 1)``.

The sampler (:class:`MixingSampler`) runs in the main process and yields a :class:`BatchKey` per step
``(dataset, sample indices, epoch, step)``; the DataLoader worker that gets it reads the samples and calls
:class:`PretrainCollate` with ``call=(epoch, step)``.  So a batch's content depends only on ``(seed, epoch, step,
rank)``, never on which worker built it: no per-worker counter is needed.  Used on its own (no ``call``),
:class:`PretrainCollate` counts its calls instead (``(seed, calls)``), with ``state_dict``/``load_state_dict``.

**DDP.**  :class:`MixingSampler` subclasses ``torch.utils.data.DistributedSampler`` so that Lightning recognises
it as already distributed and never re-wraps the loader with its own sampler, whatever ``use_distributed_sampler``
says (``use_distributed_sampler: false`` in configs is harmless and documents the intent).  Rank and world size come
from ``self.trainer`` (``global_rank``, ``world_size``) when the loader is built.

**Resume mid-epoch.**  Lightning saves ``PretrainDataModule.state_dict()`` in every checkpoint: the epoch and the
number of batches processed in it (from the trainer's progress counters, which do not count batches prefetched by
workers).  After ``load_state_dict`` the first iteration of that epoch skips those batches, so a resumed run sees
exactly the remaining batches of the interrupted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from anysat_core.data.collate import collate
from anysat_core.data.datasets import AnySatDataset, dataset_class, get_dataset
from anysat_core.data.sample import modalities_of, sample_extent_m
from anysat_core.errors import ConfigError, PatchSizeError, UnknownModalityError
from anysat_core.geo import is_multiple
from anysat_core.modalities import MODALITIES
from training.masks import MaskSpec, MultiBlockMasks, seeded_rng

if TYPE_CHECKING:
    from training.batch import PretrainBatch

__all__ = [
    "BatchKey",
    "DatasetSpec",
    "DownstreamDataModule",
    "MixingSampler",
    "PretrainCollate",
    "PretrainDataModule",
    "build_dataset",
    "collate_for_lightning",
]

log = logging.getLogger(__name__)

#: entropy tag of the dataset-choice stream (kept apart from the per-dataset permutation streams).
_CHOICE_STREAM = 2**20
#: tasks as the downstream module names them (GeoPlex-mini says "change").
#: epoch id of the unshuffled (validation) plan, apart from every training epoch.
_FIXED_EPOCH = 2**31 - 1
#: call ids of the set-up dry run of the masks.
_DRY_RUN = 2**31 - 2
_TASK_ALIASES = {"change": "change-detection"}


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _positive_int(name: str, v: Any, what: str) -> int:
    if not _is_int(v) or v < 1:
        raise ConfigError(f"{what}: {name}={v!r}; expected a positive integer")
    return int(v)


# ------------------------------------------------------------------------------------------------ datasets
def build_dataset(
    name: str,
    root: str | None = None,
    split: str = "train",
    modalities: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> AnySatDataset:
    """A registered dataset loader: ``get_dataset(name, root, split, modalities, **options)``, or keyword-only for a
    generated dataset (GeoPlex-mini, no root).

    Raises:
        UnknownDatasetError: ``name`` is not registered (the message lists the names).
        ConfigError: a root for a generated dataset, no root for a dataset on disk, a bad split or option.
        DatasetNotFoundError: the root (or a file of its layout) is missing (from the loader).
        UnknownModalityError: a modality the dataset does not provide.
    """
    cls = dataset_class(name)
    opts = dict(options or {})
    clash = sorted({"root", "split", "modalities"} & set(opts))
    if clash:
        raise ConfigError(f"{name}: options {clash} are fields of their own; set them outside options")
    if modalities is not None:
        bad = [m for m in modalities if m not in cls.modalities_available]
        if bad:
            raise UnknownModalityError(
                f"{name} has no modality {', '.join(map(repr, bad))}; it provides {', '.join(cls.modalities_available)}"
            )
    if cls.generated:
        if root is not None:
            raise ConfigError(f"{name} is generated in memory and takes no root (got root={root!r}); remove root")
        if modalities is not None:
            opts["modalities"] = list(modalities)
        return get_dataset(name, split=split, **opts)
    if root is None:
        raise ConfigError(f"{name} is read from disk and needs root= (its folder); download it from {cls.url}")
    return get_dataset(name, root, split, None if modalities is None else list(modalities), **opts)


@dataclass
class DatasetSpec:
    """One dataset of the pretraining mix (anysat-model.md §2.2).

    Attributes:
        name: a registered dataset (``anysat_core.data.datasets.list_datasets()``, e.g. ``"geoplex-mini"``).
        root: its folder; None for a generated dataset (GeoPlex-mini).
        split: split used for training.
        modalities: modalities to load (None: the dataset's defaults).
        scales_m: patch sizes in metres, one drawn uniformly per step; each must divide the tile and be a multiple
            of the modalities' patch step (10 m; 30 m with l7/alos).
        batch_size: samples per batch (per DDP rank).
        weight: sampling weight (a dataset is drawn with probability proportional to it).
        options: extra keyword arguments of the loader (GeoPlex-mini ``seed``, ``tiles``, ``tile_m``, ``task``;
            ``normalize``...).

    Raises:
        UnknownDatasetError, UnknownModalityError, ConfigError, PatchSizeError: a bad field (checked on creation).
    """

    name: str
    root: str | None = None
    split: str = "train"
    modalities: list[str] | None = None
    scales_m: list[float] = field(default_factory=lambda: [10.0])
    batch_size: int = 8
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cls = dataset_class(self.name)
        what = f"dataset {self.name!r}"
        if cls.generated and self.root is not None:
            raise ConfigError(f"{what} is generated in memory and takes no root (got root={self.root!r}); remove it")
        if not cls.generated and self.root is None:
            raise ConfigError(f"{what} is read from disk and needs root= (its folder); download it from {cls.url}")
        if self.split not in cls.splits:
            raise ConfigError(f"{what}: split={self.split!r}; expected one of {', '.join(cls.splits)}")
        if self.modalities is not None:
            if isinstance(self.modalities, str):
                self.modalities = [self.modalities]
            bad = [m for m in self.modalities if m not in cls.modalities_available]
            if bad:
                raise UnknownModalityError(
                    f"{what} has no modality {', '.join(map(repr, bad))}; it provides "
                    f"{', '.join(cls.modalities_available)}"
                )
        scales = [self.scales_m] if isinstance(self.scales_m, (int, float)) else list(self.scales_m)
        if not scales:
            raise PatchSizeError(f"{what}: scales_m is empty; give at least one patch size in metres, e.g. [10, 20]")
        for s in scales:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf:
                raise PatchSizeError(f"{what}: scales_m contains {s!r}; expected positive patch sizes in metres")
        self.scales_m = [float(s) for s in scales]
        self.batch_size = _positive_int("batch_size", self.batch_size, what)
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf:
            raise ConfigError(f"{what}: weight={w!r}; expected a positive, finite sampling weight (e.g. 1)")
        self.weight = float(w)
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"{what}: options={self.options!r}; expected a dict of loader keyword arguments")
        self.options = dict(self.options)

    @classmethod
    def coerce(cls, value: DatasetSpec | Mapping[str, Any]) -> DatasetSpec:
        """A DatasetSpec from itself or a dict of its fields (YAML).

        Raises:
            ConfigError: an unknown key (the message lists the fields) or a missing name.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown or "name" not in value:
                raise ConfigError(
                    f"dataset entry {dict(value)!r}: "
                    + (f"unknown key(s) {unknown}" if unknown else "no name")
                    + f"; expected keys {', '.join(cls.__dataclass_fields__)} (name is required)"
                )
            return cls(**value)
        raise ConfigError(f"dataset entry {value!r}; expected a DatasetSpec or a dict with at least a name")

    def build(self, split: str | None = None) -> AnySatDataset:
        """The loader of ``split`` (default: :attr:`split`); see :func:`build_dataset`."""
        return build_dataset(self.name, self.root, split or self.split, self.modalities, self.options)


def _grid_step_m(sample: Mapping[str, Any]) -> int:
    """Patch sizes of this sample must be multiples of this (lcm of its gridded modalities' patch steps)."""
    steps = [MODALITIES[m].patch_step_m for m in modalities_of(sample) if not MODALITIES[m].tile_token]
    return math.lcm(*steps) if steps else 10


def patch_grid(extent_m: float, patch_size_m: float, *, step_m: int = 10, what: str = "the tile") -> int:
    """Side of the patch grid, ``extent_m / patch_size_m``, checked.

    Raises:
        PatchSizeError: ``patch_size_m`` is not a positive multiple of ``step_m`` or does not divide the extent.
    """
    if not (patch_size_m > 0 and is_multiple(patch_size_m, step_m)):
        raise PatchSizeError(
            f"patch size {patch_size_m:g} m for {what}; expected a positive multiple of {step_m} m "
            f"(e.g. {step_m}, {2 * step_m})"
        )
    if not is_multiple(extent_m, patch_size_m):
        divisors = [d for d in range(step_m, round(extent_m) + 1, step_m) if is_multiple(extent_m, d)]
        raise PatchSizeError(
            f"patch size {patch_size_m:g} m does not divide {what} of {extent_m:g} m; use one of {divisors} (scales_m)"
        )
    return round(extent_m / patch_size_m)


# ------------------------------------------------------------------------------------------------ collate
def collate_for_lightning(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`anysat_core.data.collate.collate` with ``meta`` as plain dicts (``dataclasses.asdict`` of each
    :class:`~anysat_core.data.sample.GeoInfo`; ``GeoInfo(**d)`` rebuilds one).

    Lightning moves batches to the device with ``apply_to_collection``, which rebuilds every dataclass it meets and
    fails on frozen ones such as GeoInfo ("A frozen dataclass was passed to `apply_to_collection`").

    Raises:
        InputShapeError, BatchSizeMismatchError: samples that cannot be batched (see ``collate``).
    """
    batch = collate([dict(s) for s in samples])
    meta = batch.get("meta")
    if isinstance(meta, list):
        batch["meta"] = [asdict(m) if is_dataclass(m) and not isinstance(m, type) else m for m in meta]
    return batch


class PretrainCollate:
    """Collate samples of one dataset into a pretraining batch, drawing the patch size and the JEPA masks.

    Args:
        name: dataset name (copied to the batch).
        scales_m: patch sizes in metres; one drawn uniformly per call.
        mask: mask settings (:class:`~training.masks.MaskSpec`, a dict of its fields, or None for the defaults).
        seed: non-negative seed of the scale and mask draws.

    Call with a list of samples (same modalities and tile size) and optionally ``call=`` an int or tuple id of the
    draw and ``rank=`` (see the module docstring); without ``call`` the collate uses and advances its own counter.

    Returns:
        ``{"inputs": collate_for_lightning(samples), "patch_size_m": float, "context": (B, K) int64, "targets": (B, n_targets, Kt)
        int64, "dataset": name}`` with indices into the ``g x g`` patch grid, ``g = tile extent / patch_size_m``.

    Raises:
        PatchSizeError: the drawn patch size does not divide the tile.
        ConfigError: a grid too small for the masks.
    """

    def __init__(
        self,
        name: str,
        scales_m: Sequence[float],
        mask: MaskSpec | Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.scales_m = [float(s) for s in scales_m]
        if not self.scales_m or any(not 0 < s < math.inf for s in self.scales_m):
            raise PatchSizeError(f"{name}: scales_m={list(scales_m)!r}; expected positive patch sizes in metres")
        self.masks = MultiBlockMasks(mask, seed)
        self.seed = self.masks.seed
        self.calls = 0

    def __repr__(self) -> str:
        return f"PretrainCollate({self.name!r}, scales_m={self.scales_m}, seed={self.seed}, calls={self.calls})"

    def scale(self, call: int | Sequence[int]) -> float:
        """The patch size (m) drawn for call ``call`` (identical on every rank)."""
        ids = [call] if _is_int(call) else list(call)  # type: ignore[arg-type]
        return self.scales_m[int(seeded_rng(self.seed, *ids, 0, 2).integers(len(self.scales_m)))]

    def __call__(
        self, samples: Sequence[Mapping[str, Any]], *, call: int | Sequence[int] | None = None, rank: int = 0
    ) -> PretrainBatch:
        if not samples:
            raise ConfigError(f"{self.name}: PretrainCollate got no samples; expected a non-empty list")
        if call is None:
            ids: list[int] = [self.calls]
            self.calls += 1
        else:
            ids = [call] if _is_int(call) else list(call)  # type: ignore[list-item, arg-type]
        patch_size_m = self.scale(ids)
        extent = sample_extent_m(samples[0])
        grid = patch_grid(extent, patch_size_m, step_m=_grid_step_m(samples[0]), what=f"the {self.name} tile")
        context, targets = self.masks(len(samples), grid, call=ids, rank=rank)
        batch: PretrainBatch = {
            "inputs": collate_for_lightning(samples),
            "patch_size_m": patch_size_m,
            "context": context,
            "targets": targets,
            "dataset": self.name,
        }
        return batch

    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "calls"}`` of the standalone counter (unused when the caller passes ``call``)."""
        return {"seed": self.seed, "calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the standalone sequence saved by :meth:`state_dict`.

        Raises:
            ConfigError: the state was saved with another seed.
        """
        if int(state["seed"]) != self.seed:
            raise ConfigError(
                f"the collate state was saved with seed {state['seed']} but this run has seed {self.seed}; resume "
                "with the seed of the saved run"
            )
        self.calls = int(state["calls"])


# ------------------------------------------------------------------------------------------------ sampler
class BatchKey(NamedTuple):
    """What one step loads: dataset position in the mix, sample indices, epoch and step within the epoch."""

    dataset: int
    indices: tuple[int, ...]
    epoch: int
    step: int


class MixingSampler(DistributedSampler):
    """Yields one :class:`BatchKey` per step of the weighted multi-dataset mix (see the module docstring).

    It subclasses ``DistributedSampler`` only so that Lightning does not re-wrap it (it is already sharded); none of
    the parent's machinery is used.

    Args:
        lengths: number of samples of each dataset.
        batch_sizes: batch size of each dataset.
        weights: sampling weight of each dataset (positive).
        seed: non-negative seed.
        rank, world_size: this DDP rank and the number of ranks.
        shuffle: shuffle samples and draw datasets at random (False: samples in order, datasets still mixed by
            weight, the same every epoch: for validation).
        drop_last: drop each dataset's last incomplete batch.

    Raises:
        ConfigError: mismatched lists, bad weights, a dataset with fewer samples than ranks (or no batch).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_sizes: Sequence[int],
        weights: Sequence[float],
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        names: Sequence[str] | None = None,
    ) -> None:
        if not (len(lengths) == len(batch_sizes) == len(weights)) or not lengths:
            raise ConfigError(
                f"MixingSampler got {len(lengths)} lengths, {len(batch_sizes)} batch sizes and {len(weights)} weights; "
                "expected one of each per dataset (at least one dataset)"
            )
        self.names = list(names) if names is not None else [f"dataset {i}" for i in range(len(lengths))]
        self.num_replicas = _positive_int("world_size", world_size, "MixingSampler")
        if not _is_int(rank) or not 0 <= rank < self.num_replicas:
            raise ConfigError(f"MixingSampler: rank={rank!r}; expected 0 <= rank < world_size={world_size}")
        self.rank = int(rank)
        self.seed = int(seed)
        seeded_rng(self.seed)  # ConfigError for a negative seed
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.lengths = [int(n) for n in lengths]
        self.batch_sizes = [_positive_int("batch_size", b, n) for b, n in zip(batch_sizes, self.names)]
        self.weights = [float(w) for w in weights]
        if any(not 0 < w < math.inf for w in self.weights):
            raise ConfigError(f"MixingSampler: weights={list(weights)}; expected positive, finite weights")
        self.shard_sizes = [n // self.num_replicas for n in self.lengths]
        self.num_batches = [
            (s // b if self.drop_last else -(-s // b)) for s, b in zip(self.shard_sizes, self.batch_sizes)
        ]
        for name, n, s, nb, b in zip(self.names, self.lengths, self.shard_sizes, self.num_batches, self.batch_sizes):
            if nb == 0:
                raise ConfigError(
                    f"{name} has {n} samples: {s} per rank over {self.num_replicas} rank(s), no "
                    f"{'full ' if self.drop_last else ''}batch of {b}; use more samples, a smaller batch_size"
                    + (" or drop_last=False" if self.drop_last and s else "")
                    + " or fewer ranks"
                )
        self.epoch = 0
        self.yielded = 0  # keys yielded in the current epoch (the main process's view; workers may prefetch)
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` (Lightning calls this at the start of every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        return sum(self.num_batches)

    def plan(self, epoch: int) -> list[BatchKey]:
        """Every :class:`BatchKey` of epoch ``epoch`` on this rank, in order."""
        e = epoch if self.shuffle else _FIXED_EPOCH  # validation: the same batches, scales and masks every epoch
        queues: list[list[tuple[int, ...]]] = []
        for d, (n, b, nb) in enumerate(zip(self.lengths, self.batch_sizes, self.num_batches)):
            order = seeded_rng(self.seed, e, d, 0).permutation(n) if self.shuffle else np.arange(n)
            shard = order[: self.shard_sizes[d] * self.num_replicas][self.rank :: self.num_replicas]
            queues.append([tuple(int(i) for i in shard[k * b : (k + 1) * b]) for k in range(nb)])
        rng = seeded_rng(self.seed, e, _CHOICE_STREAM)
        left = list(self.num_batches)
        weights = np.asarray(self.weights)
        keys = []
        for step in range(len(self)):
            live = np.flatnonzero(np.asarray(left) > 0)
            p = weights[live] / weights[live].sum()
            d = int(live[rng.choice(len(live), p=p)]) if len(live) > 1 else int(live[0])
            keys.append(BatchKey(d, queues[d][self.num_batches[d] - left[d]], e, step))
            left[d] -= 1
        return keys

    def __iter__(self) -> Iterator[BatchKey]:
        plan = self.plan(self.epoch)
        start = 0
        if self._resume is not None:
            epoch, consumed = self._resume
            self._resume = None
            if epoch == self.epoch and consumed < len(plan):
                start = consumed
        for i in range(start, len(plan)):
            self.yielded = i + 1
            yield plan[i]

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "consumed"}`` as seen by the sampler (keys yielded in this epoch)."""
        return {"epoch": self.epoch, "consumed": self.yielded}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration of epoch ``state["epoch"]`` skips its first ``state["consumed"]`` keys (a
        finished epoch resumes at the start of the next one)."""
        self.epoch, self.yielded = int(state["epoch"]), int(state["consumed"])
        if self.yielded >= len(self):
            self.epoch, self.yielded = self.epoch + 1, 0
        self._resume = (self.epoch, self.yielded)


class _MixedDataset(Dataset):
    """Maps a :class:`BatchKey` to ``(key, [samples])`` (the whole batch, read in one worker)."""

    def __init__(self, datasets: Sequence[AnySatDataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: BatchKey) -> tuple[BatchKey, list[dict[str, Any]]]:
        ds = self.datasets[key.dataset]
        return key, [ds[i] for i in key.indices]


class _MixedCollate:
    """Calls the collate of the key's dataset with ``call=(epoch, step)`` and this rank."""

    def __init__(self, collates: Sequence[PretrainCollate], rank: int) -> None:
        self.collates, self.rank = list(collates), rank

    def __call__(self, item: Any) -> PretrainBatch:
        """``item``: the ``(BatchKey, [samples])`` pair of :class:`_MixedDataset`."""
        key, samples = item
        return self.collates[key.dataset](samples, call=(key.epoch, key.step), rank=self.rank)


# ------------------------------------------------------------------------------------------------ datamodules
class PretrainDataModule(L.LightningDataModule):
    """The pretraining data: a weighted mix of datasets with per-dataset patch sizes and JEPA masks.

    Batches are :class:`PretrainCollate` dicts (``inputs``, ``patch_size_m``, ``context``, ``targets``,
    ``dataset``).  See the module docstring for the seeding, DDP and resume schemes.

    Args:
        datasets: the mix (:class:`DatasetSpec` or dicts of its fields).
        mask: mask settings (:class:`~training.masks.MaskSpec`, a dict, or None for the defaults).
        seed: non-negative seed of every draw (sample order, datasets, scales, masks).
        num_workers: DataLoader workers (batches do not depend on it).
        val_split: split of each dataset used for validation (None: no validation); datasets without that split,
            or with an empty one, are left out of validation.
        drop_last: drop each dataset's last incomplete training batch.
        pin_memory: DataLoader ``pin_memory``.

    Raises:
        ConfigError, UnknownDatasetError, UnknownModalityError, DatasetNotFoundError, PatchSizeError: a bad
        dataset entry, a missing root, a scale that does not divide a tile, masks that cannot fit a grid (all
        checked when the module is built, before any training).
    """

    def __init__(
        self,
        datasets: Sequence[DatasetSpec | dict[str, Any]],
        mask: MaskSpec | dict[str, Any] | None = None,
        seed: int = 0,
        num_workers: int = 0,
        val_split: str | None = "val",
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(datasets, (Mapping, DatasetSpec)) or not datasets:
            raise ConfigError(f"datasets={datasets!r}; expected a non-empty list of dataset entries")
        self.specs = [DatasetSpec.coerce(d) for d in datasets]
        self.mask = MaskSpec.coerce(mask)
        if not _is_int(seed) or seed < 0:
            raise ConfigError(f"seed={seed!r}; expected a non-negative integer")
        self.seed = int(seed)
        if not _is_int(num_workers) or num_workers < 0:
            raise ConfigError(f"num_workers={num_workers!r}; expected an integer >= 0")
        self.num_workers = int(num_workers)
        self.val_split = val_split
        self.drop_last, self.pin_memory = bool(drop_last), bool(pin_memory)
        self.train_sets = [s.build() for s in self.specs]
        self.collates = [PretrainCollate(s.name, s.scales_m, self.mask, self.seed) for s in self.specs]
        self.grids = [self._check_scales(s, d) for s, d in zip(self.specs, self.train_sets)]
        self._val_sets: list[tuple[int, AnySatDataset]] | None = None
        self._sampler: MixingSampler | None = None
        self._pending: dict[str, int] | None = None

    @property
    def names(self) -> list[str]:
        """Dataset names of the mix, in order."""
        return [s.name for s in self.specs]

    def _check_scales(self, spec: DatasetSpec, ds: AnySatDataset) -> dict[float, int]:
        """``{patch_size_m: grid side}`` of a dataset, each checked (and a dry run of the masks on it)."""
        if len(ds) == 0:
            raise ConfigError(f"dataset {spec.name!r} split {spec.split!r} has no samples; choose another split")
        sample = ds[0]
        extent, step = sample_extent_m(sample), _grid_step_m(sample)
        grids = {}
        for s in spec.scales_m:
            g = patch_grid(extent, s, step_m=step, what=f"the {spec.name} tile")
            masks = MultiBlockMasks(self.mask, self.seed)
            for call in range(3):  # fail now rather than hours in
                masks(min(spec.batch_size, 4), g, call=(_DRY_RUN, call))
            grids[s] = g
        return grids

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, datasets: Sequence[tuple[int, AnySatDataset]], *, train: bool) -> DataLoader:
        rank, world = self._rank_world()
        specs = [self.specs[i] for i, _ in datasets]
        sampler = MixingSampler(
            [len(d) for _, d in datasets],
            [s.batch_size for s in specs],
            [s.weight for s in specs],
            seed=self.seed,
            rank=rank,
            world_size=world,
            shuffle=train,
            drop_last=self.drop_last and train,
            names=[f"{s.name} ({d.split})" for s, (_, d) in zip(specs, datasets)],
        )
        if train:
            if self._pending is not None:
                sampler.load_state_dict(self._pending)
                self._pending = None
            self._sampler = sampler
        return DataLoader(
            _MixedDataset([d for _, d in datasets]),
            batch_size=None,
            sampler=sampler,
            collate_fn=_MixedCollate([self.collates[i] for i, _ in datasets], rank),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        """The mixed training loader: one :class:`PretrainCollate` batch per step (this rank's shard)."""
        return self._loader(list(enumerate(self.train_sets)), train=True)

    def val_datasets(self) -> list[tuple[int, AnySatDataset]]:
        """``(position in the mix, loader)`` of the validation split of each dataset that has a non-empty one."""
        if self._val_sets is None:
            self._val_sets = []
            if self.val_split is not None:
                for i, spec in enumerate(self.specs):
                    if self.val_split not in dataset_class(spec.name).splits:
                        log.info("%s has no %r split: left out of validation", spec.name, self.val_split)
                        continue
                    ds = spec.build(self.val_split)
                    if len(ds) == 0:
                        log.info("%s %r split is empty: left out of validation", spec.name, self.val_split)
                        continue
                    self._val_sets.append((i, ds))
        return self._val_sets

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation loader (samples in order, the same batches, scales and masks every epoch); ``[]`` when no
        dataset has a validation split."""
        sets = self.val_datasets()
        _, world = self._rank_world()
        sets = [(i, d) for i, d in sets if len(d) >= world]
        return self._loader(sets, train=False) if sets else []

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """``{"seed", "datasets", "epoch", "consumed"}``: where the training epoch stands.

        Under a trainer, ``consumed`` is the number of training batches the trainer processed in this epoch (not
        those prefetched by workers); without one, the batches the loader yielded.
        """
        state: dict[str, Any] = {"seed": self.seed, "datasets": self.names, "mask": asdict(self.mask)}
        if self._sampler is None:
            pending = self._pending or {"epoch": 0, "consumed": 0}
            return {**state, **pending}
        epoch, consumed = self._sampler.epoch, self._sampler.yielded
        trainer = self.trainer
        if trainer is not None and trainer.state.fn == "fit":
            progress = trainer.fit_loop.epoch_loop.batch_progress.current  # a _ProcessedTracker at run time
            consumed = int(progress.processed)  # type: ignore[attr-defined]
        return {**state, "epoch": epoch, "consumed": consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader where :meth:`state_dict` left it (applied to the next training iteration).

        Raises:
            ConfigError: the state was saved with another seed, mix or mask settings.
        """
        for key, mine in (("seed", self.seed), ("datasets", self.names), ("mask", asdict(self.mask))):
            saved = state_dict.get(key, mine)
            if key == "mask":
                saved = asdict(MaskSpec.coerce(saved))
            if saved != mine:
                raise ConfigError(
                    f"the data state was saved with {key}={saved!r} but this run has {key}={mine!r}; resume with "
                    "the data settings of the saved run"
                )
        pending = {"epoch": int(state_dict["epoch"]), "consumed": int(state_dict["consumed"])}
        if self._sampler is not None:
            self._sampler.load_state_dict(pending)
        else:
            self._pending = pending


class DownstreamDataModule(L.LightningDataModule):
    """One dataset loader's train/val/test splits for probing and fine-tuning, batched by anysat_core's ``collate``
    (through :func:`collate_for_lightning`: ``meta`` entries are plain dicts).

    Args:
        name: a registered dataset (``list_datasets()``), e.g. ``"geoplex-mini"``, ``"treesatai-ts"``.
        root: its folder; None for GeoPlex-mini.
        modalities: modalities to load (None: the dataset's defaults).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        options: extra keyword arguments of the loader (GeoPlex-mini ``seed``, ``tiles``, ``task``...).
        train_split, val_split, test_split: the loader's split names (None: no such loader).
        patch_size_m: patch size of the protocol (None: the dataset class's ``patch_size_m``).
        drop_last: drop the last incomplete training batch.
        pin_memory: DataLoader ``pin_memory``.

    The training loader shuffles with the global RNG (seed it with ``seed_everything``); under DDP Lightning shards
    it with its own DistributedSampler.

    Raises:
        UnknownDatasetError, UnknownModalityError, ConfigError, DatasetNotFoundError: bad arguments or a missing
        root (the training split is opened when the module is built).
    """

    def __init__(
        self,
        name: str,
        root: str | None = None,
        modalities: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        options: dict[str, Any] | None = None,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        patch_size_m: float | None = None,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.cls = dataset_class(name)
        self.name, self.root, self.modalities = name, root, modalities
        self.options = dict(options or {})
        what = f"dataset {name!r}"
        self.batch_size = _positive_int("batch_size", batch_size, what)
        if not _is_int(num_workers) or num_workers < 0:
            raise ConfigError(f"num_workers={num_workers!r}; expected an integer >= 0")
        self.num_workers = int(num_workers)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        for stage, split in self.splits.items():
            if split is not None and split not in self.cls.splits:
                raise ConfigError(
                    f"{what}: {stage}_split={split!r}; expected one of {', '.join(self.cls.splits)} or None"
                )
        if patch_size_m is not None and (
            isinstance(patch_size_m, bool) or not isinstance(patch_size_m, (int, float)) or not patch_size_m > 0
        ):
            raise PatchSizeError(f"{what}: patch_size_m={patch_size_m!r}; expected a positive number of metres")
        self._patch_size_m = patch_size_m
        self.drop_last, self.pin_memory = bool(drop_last), bool(pin_memory)
        self._datasets: dict[str, AnySatDataset] = {}
        named = [s for s in self.splits.values() if s is not None]
        if not named:
            raise ConfigError(f"{what}: train_split, val_split and test_split are all None; name at least one split")
        self._reference = self.dataset(named[0])  # fail early: root, modalities, options

    def dataset(self, split: str) -> AnySatDataset:
        """The loader of ``split`` (built once)."""
        if split not in self._datasets:
            self._datasets[split] = build_dataset(self.cls.name, self.root, split, self.modalities, self.options)
        return self._datasets[split]

    # ---------------------------------------------------------------- facts for the downstream module
    @property
    def task(self) -> str:
        """``"multilabel"``, ``"classification"``, ``"segmentation"``, ``"change-detection"``... (GeoPlex-mini's
        ``"change"`` is reported as ``"change-detection"``)."""
        task = str(self._reference.task)
        return _TASK_ALIASES.get(task, task)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (``("no change", "change")`` for a change task whose loader lists land-cover classes)."""
        if self.task == "change-detection" and len(self.cls.classes) != 2:
            return ("no change", "change")
        return tuple(self.cls.classes)

    @property
    def num_classes(self) -> int:
        """Number of classes (outputs of a head)."""
        return len(self.classes)

    @property
    def ignore_index(self) -> int | None:
        """Label value ignored by losses and metrics (None: every value counts)."""
        return self.cls.ignore_index

    @property
    def patch_size_m(self) -> float:
        """Patch size of the protocol in metres (the argument, else the dataset's)."""
        return float(self._patch_size_m if self._patch_size_m is not None else self.cls.patch_size_m)

    # ---------------------------------------------------------------- loaders
    def _loader(self, stage: str, *, shuffle: bool) -> DataLoader:
        split = self.splits[stage]
        if split is None:
            raise ConfigError(f"dataset {self.name!r}: no {stage} split configured ({stage}_split=None)")
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=self.drop_last and shuffle,
            collate_fn=collate_for_lightning,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (``collate`` dicts with ``label`` and ``meta``)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation batches in order (``[]`` when ``val_split`` is None)."""
        return self._loader("val", shuffle=False) if self.splits["val"] is not None else []

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """Test batches in order (``[]`` when ``test_split`` is None)."""
        return self._loader("test", shuffle=False) if self.splits["test"] is not None else []

    def predict_dataloader(self) -> DataLoader:
        """The test split in order (else validation), for ``predict``."""
        return self._loader("test" if self.splits["test"] is not None else "val", shuffle=False)
