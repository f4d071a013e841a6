"""Base class of the dataset loaders and the dataset registry.

Each dataset is one class in one module of this package that reads the dataset's published layout and
returns samples in the format of :mod:`anysat_core.data.sample`.  A subclass sets the class attributes
(facts of the dataset) and implements ``_load_index`` (list the samples of a split, checking the layout)
and ``_load_sample`` (read one sample, raw values).  The base class handles missing roots, corrupt
files, splits, modality selection, normalisation and transforms.  A ``generated`` dataset (GeoPlex-mini) has
no root: its ``_load_index`` lays out the generated samples and it overrides ``_make_normalizer``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from anysat_core.data.normalize import Normalize, load_or_compute_stats, registry_stats, stats_path
from anysat_core.errors import (
    ConfigError,
    CorruptFileError,
    DatasetNotFoundError,
    UnknownDatasetError,
    UnknownModalityError,
)
from anysat_core.modalities import MODALITIES, NormStats

__all__ = ["DATASETS", "AnySatDataset", "get_dataset", "list_datasets", "register_dataset"]

log = logging.getLogger(__name__)

#: name -> dataset class, filled by :func:`register_dataset`.
DATASETS: dict[str, type[AnySatDataset]] = {}


def register_dataset(cls: type[AnySatDataset]) -> type[AnySatDataset]:
    """Class decorator adding a dataset to :data:`DATASETS` under ``cls.name``."""
    if cls.name in DATASETS and DATASETS[cls.name] is not cls:
        raise ConfigError(f"dataset name {cls.name!r} registered twice ({DATASETS[cls.name].__name__}, {cls.__name__})")
    DATASETS[cls.name] = cls
    return cls


def list_datasets() -> list[str]:
    """Registered dataset names."""
    return sorted(DATASETS)


def dataset_class(name: str) -> type[AnySatDataset]:
    """The dataset class registered as ``name`` (its facts: ``classes``, ``modalities_available``, ``layout``...).

    Raises:
        UnknownDatasetError: ``name`` is not registered (the message lists the registered names).
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; expected one of {', '.join(list_datasets())} (see list_datasets())"
        ) from None


def get_dataset(name: str, /, *args: Any, **kwargs: Any) -> AnySatDataset:
    """The dataset registered as ``name``, built with the given constructor arguments.

    ``get_dataset("flair", "data/FLAIR", "test")`` is ``FLAIR("data/FLAIR", "test")``; a generated dataset needs no
    root: ``get_dataset("geoplex-mini")``, ``get_dataset("geoplex-mini", seed=1, tiles=8, split="test")``.  For the
    class itself, use :func:`dataset_class`.

    Raises:
        UnknownDatasetError: ``name`` is not registered (the message lists the registered names).
        DatasetNotFoundError: a dataset on disk whose ``root`` (or a file of its layout) is missing.
        ConfigError: bad constructor arguments (e.g. no root for a dataset on disk).
    """
    cls = dataset_class(name)
    signature = inspect.signature(cls)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        hint = "" if cls.generated else f"; download it from {cls.url}, then pass its folder as root"
        raise ConfigError(f"get_dataset({name!r}, ...): {e}; {cls.__name__} takes {signature}{hint}") from None
    return cls(*args, **kwargs)


class AnySatDataset(torch.utils.data.Dataset):
    """A dataset in its published on-disk layout.

    Args:
        root: dataset root folder (the layout under it is in the class docstring and ``layout``); None for a
            ``generated`` dataset, which has no files.
        split: one of ``splits``.
        modalities: subset of ``modalities_available`` (default: the ones AnySat uses for this dataset).
        normalize: ``True`` (default) applies per-channel statistics: the registry's statistics named ``name``
            (those the released checkpoint was used with), else the cached ``NORM_<mod>_patch.json`` under ``root``;
            ``"compute"`` also computes and caches the statistics of modalities that have neither (from the train
            split); ``"files"`` prefers the dataset's own ``NORM_<mod>_patch.json`` files (computed when missing) to
            the registry's; ``False`` returns raw values; a :class:`Normalize` is used as given.
            ``dataset.normalization`` (and the repr) names the statistics of each modality.
        transform: optional callable applied to every sample after normalisation.

    Raises:
        DatasetNotFoundError: ``root`` or a required file of the layout is missing.
        CorruptFileError: (when reading samples) a file exists but cannot be read.
        ConfigError: a bad split or normalize value, or no root for a dataset on disk.
    """

    #: registry name (lower case, e.g. ``"treesatai-ts"``).
    name: ClassVar[str] = ""
    #: where to download the data.
    url: ClassVar[str] = ""
    #: expected files under ``root``, in words (shown in DatasetNotFoundError).
    layout: ClassVar[str] = ""
    #: every modality the dataset provides; ``default_modalities`` those AnySat uses.
    modalities_available: ClassVar[tuple[str, ...]] = ()
    default_modalities: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    #: ``"multilabel"``, ``"classification"``, ``"segmentation"``, ``"change-detection"``, ``"pixel-classification"``.
    task: ClassVar[str] = ""
    classes: ClassVar[tuple[str, ...]] = ()
    #: label value ignored by losses and metrics (None if every value counts).
    ignore_index: ClassVar[int | None] = None
    #: patch size (m) of the AnySat protocol for this dataset.
    patch_size_m: ClassVar[int] = 10
    #: True for a dataset generated in memory (root is None; no files, no download).
    generated: ClassVar[bool] = False

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        split: str = "train",
        modalities: Sequence[str] | None = None,
        normalize: bool | str | Normalize = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if root is None and not self.generated:
            raise ConfigError(f"{self.name}: root=None; pass the dataset's folder as root= (download: {self.url})")
        self.root = Path(root).expanduser() if root is not None else None
        if split not in self.splits:
            raise ConfigError(f"{self.name}: split={split!r}; expected one of {', '.join(self.splits)}")
        self.split = split
        mods = tuple(modalities) if modalities is not None else self.default_modalities
        bad = [m for m in mods if m not in self.modalities_available]
        if bad:
            raise UnknownModalityError(
                f"{self.name} has no modality {', '.join(map(repr, bad))}; it provides "
                f"{', '.join(self.modalities_available)}"
            )
        self.modalities = mods
        self.transform = transform
        if self.root is not None and not self.root.is_dir():
            raise self.not_found(self.root)
        self._load_index()
        self.normalizer = self._make_normalizer(normalize)

    @property
    def root_path(self) -> Path:
        """``root`` of a dataset on disk (always set there; a ``generated`` dataset has no root)."""
        if self.root is None:
            raise ConfigError(f"{self.name} is generated in memory and has no root folder")
        return self.root

    # ---------------------------------------------------------------- for subclasses
    def _load_index(self) -> None:
        """List the samples of ``self.split``; raise :meth:`not_found` for missing layout files."""
        raise NotImplementedError

    def _load_sample(self, index: int) -> dict[str, Any]:
        """Read sample ``index`` with raw values (modalities, dates, masks, label, meta)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    # ---------------------------------------------------------------- errors
    def not_found(self, missing: str | os.PathLike[str]) -> DatasetNotFoundError:
        """The error for a missing root or layout file, naming what to download and the layout."""
        return DatasetNotFoundError(
            f"{self.name}: {str(missing)!r} is missing (root={str(self.root)!r}). Download the dataset from "
            f"{self.url} and pass its folder as root=. Expected layout under root:\n{self.layout}"
        )

    def corrupt(self, path: str | os.PathLike[str], exc: BaseException | str) -> CorruptFileError:
        """The error for a file that exists but cannot be read."""
        why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return CorruptFileError(
            f"{self.name}: cannot read {str(path)!r} ({why}); the file is truncated or not in the published "
            "format. Download it again."
        )

    # ---------------------------------------------------------------- normalisation
    def _make_normalizer(self, normalize: bool | str | Normalize) -> Normalize | None:
        if isinstance(normalize, Normalize):
            return normalize
        if normalize is False:
            return None
        if normalize is not True and not (isinstance(normalize, str) and normalize in ("compute", "files")):
            raise ConfigError(
                f"normalize={normalize!r}; expected True (registry statistics, else NORM files), 'compute', "
                "'files', False (raw values) or a Normalize"
            )
        mode = "registry" if normalize is True else str(normalize)
        norm = Normalize(self._load_stats(compute=mode != "registry", prefer_files=mode == "files"))
        for mod, src in norm.describe().items():
            log.info("%s: normalising %s with %s", self.name, mod, src)
        return norm

    @property
    def normalization(self) -> dict[str, str]:
        """``{modality: the statistics its values are normalised with}`` (``"none (raw values)"`` if none)."""
        described = self.normalizer.describe() if self.normalizer is not None else {}
        return {m: described.get(m, "none (raw values)") for m in self.modalities}

    def _load_stats(
        self, *, compute: bool, modalities: Sequence[str] | None = None, prefer_files: bool = False
    ) -> dict[str, NormStats]:
        """Statistics of ``modalities`` (default: the selected ones): the registry's for this dataset (what the
        released checkpoint expects), else the cached ``NORM_<mod>_patch.json`` under ``root``, else (``compute``)
        computed from the train split and cached.  ``prefer_files`` puts the files (computed when missing) first.

        Raises:
            DatasetNotFoundError: no statistics for a modality and ``compute`` is False.
        """
        mods = self.modalities if modalities is None else tuple(modalities)
        stats: dict[str, NormStats] = {}
        for mod in mods:
            path = stats_path(self.root_path, mod)
            in_registry = self.name in MODALITIES[mod].stats
            if in_registry and not prefer_files:
                stats[mod] = registry_stats(mod, self.name)
                if path.exists():
                    log.info(
                        "%s: %s is not used for %s: the registry's %s statistics (what the released checkpoint "
                        "expects) are; pass normalize='files' to use the file",
                        self.name, path, mod, self.name,
                    )  # fmt: skip
            elif path.exists() or compute:
                samples = None if path.exists() else self._train_samples_raw(mods)
                stats[mod] = load_or_compute_stats(self.root_path, mod, samples)
            else:
                raise DatasetNotFoundError(
                    f"{self.name}: no normalisation statistics for {mod}: {str(path)!r} is missing. Compute them once "
                    f"with `python -m anysat_core.data.normalize {self.name} {self.root}`, or pass normalize='compute' "
                    "(or normalize=False for raw values)."
                )
        return stats

    def _options(self) -> dict[str, Any]:
        """Constructor keyword arguments of the subclass (crop, task...) to rebuild it on another split."""
        return {}

    def _train_samples_raw(self, modalities: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """Raw samples of the train split with ``modalities`` (this dataset itself when it is that)."""
        ds = self
        if self.split != "train" or modalities != self.modalities:
            ds = type(self)(self.root, "train", modalities, normalize=False, **self._options())
        log.info("computing %s normalisation statistics over %d %s samples", self.name, len(ds), ds.split)
        for i in range(len(ds)):
            yield ds._load_sample(i)

    # ---------------------------------------------------------------- access
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name} {self.split} has {len(self)} samples; index {index} is out of range")
        sample = self._load_sample(index % len(self))
        if self.normalizer is not None:
            sample = self.normalizer(sample)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
            f"modalities={self.modalities}, normalization={self.normalization})"
        )
