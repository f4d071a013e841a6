"""Per-channel normalisation: statistics from the registry or from per-dataset files, computed when missing.

How statistics are computed (the original AnySat loaders' method, so its checkpoints see the inputs they
were trained on): for every sample of the split, the mean and the standard deviation of each channel over
all its values (dates x pixels) are computed; the dataset's mean and std are the **averages of these
per-sample values** (so "std" is the mean per-sample std, not a global std).  Masked values (``<mod>_mask``
False) are left out.  The result is cached as ``NORM_<modality>_patch.json`` (``{"mean": [...], "std": [...]}``)
in the dataset root, written atomically.

    python -m anysat_core.data.normalize <dataset> <root> [--split train]   # compute and cache
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anysat_core.errors import (
    ChannelMismatchError,
    ConfigError,
    CorruptFileError,
    DatasetNotFoundError,
    InputShapeError,
)
from anysat_core.modalities import MODALITIES, NormStats
from anysat_core.writers import write_json

__all__ = [
    "Normalize",
    "compute_stats",
    "load_or_compute_stats",
    "read_stats",
    "registry_stats",
    "stats_path",
    "write_stats",
]


def stats_path(root: str | os.PathLike[str], modality: str) -> Path:
    """Where the statistics of ``modality`` are cached for the dataset at ``root``."""
    return Path(root) / f"NORM_{modality}_patch.json"


def read_stats(path: str | os.PathLike[str], modality: str) -> NormStats:
    """Read a ``{"mean": [...], "std": [...]}`` file (PASTIS' ``{"Fold_k": {...}}`` form is averaged)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"cannot read statistics file {str(path)!r}: {e}; delete it to recompute it") from e
    try:
        if "mean" not in raw:  # PASTIS: one entry per fold
            folds = [v for v in raw.values() if isinstance(v, dict) and "mean" in v]
            if not folds:
                raise CorruptFileError(f"{str(path)!r} has no 'mean'/'std'; expected {{'mean': [...], 'std': [...]}}")
            n = len(folds)
            raw = {k: [sum(f[k][i] for f in folds) / n for i in range(len(folds[0][k]))] for k in ("mean", "std")}
        stats = NormStats(mean=tuple(map(float, raw["mean"])), std=tuple(map(float, raw["std"])), source=str(path))
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise CorruptFileError(
            f"statistics file {str(path)!r} does not have the expected structure ({type(e).__name__}: {e}); expected "
            "{'mean': [one number per band], 'std': [...]}; delete it to recompute it"
        ) from e
    try:
        check_stats(stats, modality, str(path))
    except ConfigError as e:
        raise CorruptFileError(f"{e}; fix or delete the file to recompute it") from None
    return stats


def check_stats(stats: NormStats, modality: str, where: str) -> None:
    """Raise unless ``stats`` has one finite mean and one finite, positive std per band of ``modality``.

    Raises:
        ChannelMismatchError: not one value per band.
        ConfigError: a NaN/infinite mean or std, a std <= 0 (it would divide by zero), or values outside float32
            range (normalised values would be infinite or NaN); ``where`` names it.
    """
    n = MODALITIES[modality].num_bands
    if len(stats.mean) != n or len(stats.std) != n:
        raise ChannelMismatchError(
            f"{where} has {len(stats.mean)} means and {len(stats.std)} stds for {modality}; expected {n} "
            f"({', '.join(MODALITIES[modality].bands)})"
        )
    f32 = np.finfo(np.float32)  # values are normalised in float32: statistics must survive the conversion
    big, tiny = float(f32.max), float(f32.tiny)
    bad = [
        f"{band}: mean {m:g}, std {s:g}"
        for band, m, s in zip(MODALITIES[modality].bands, stats.mean, stats.std)
        if not (math.isfinite(m) and math.isfinite(s) and abs(m) <= big and tiny <= s <= big)
    ]
    if bad:
        raise ConfigError(
            f"{where} has unusable statistics for {modality} ({'; '.join(bad)}); expected finite means and stds > 0 "
            f"within float32 range (|mean| <= {big:.3g}, {tiny:.3g} <= std <= {big:.3g}; a constant band "
            "has std 0: give it std 1)"
        )


def write_stats(path: str | os.PathLike[str], stats: NormStats) -> None:
    """Write statistics atomically (temporary file in the same folder, then rename).

    Raises:
        OutputWriteError: the file cannot be written (missing or read-only folder, full disk, file size limit); an
            existing ``path`` is then left unchanged and no temporary file remains.
    """
    write_json(
        {"mean": list(stats.mean), "std": list(stats.std), "source": stats.source}, path, "write the statistics file"
    )


def compute_stats(samples: Iterable[Mapping[str, Any]], modality: str) -> NormStats:
    """Mean over samples of per-sample per-channel mean and std (see the module docstring).

    A channel with no valid value in a sample does not count for that sample; a channel never valid
    (a masked placeholder band) gets mean 0 and std 1.
    """
    acc: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # sums of means, of stds, counts
    for s in samples:
        x = s[modality].to(torch.float64)
        x4 = x.unsqueeze(0) if x.dim() == 3 else x  # (T, C, H, W)
        c = x4.shape[1]
        v = x4.transpose(0, 1).reshape(c, -1)  # (C, T*H*W)
        mask = s.get(f"{modality}_mask")
        if mask is None:
            m = torch.ones_like(v, dtype=torch.bool)
        else:
            mb = torch.broadcast_to(mask.to(torch.bool), x.shape)
            m = (mb.unsqueeze(0) if mb.dim() == 3 else mb).transpose(0, 1).reshape(c, -1)
        cnt = m.sum(1)
        mu = (v * m).sum(1) / cnt.clamp(min=1)
        sd = (((v - mu[:, None]) ** 2 * m).sum(1) / cnt.clamp(min=1)).sqrt()
        ok = (cnt > 0).to(torch.float64)
        if acc is None:
            acc = (mu * ok, sd * ok, ok)
        else:
            acc = (acc[0] + mu * ok, acc[1] + sd * ok, acc[2] + ok)
    if acc is None:
        raise InputShapeError(f"no samples to compute {modality} statistics from; give at least one sample")
    sums, stds, counts = acc
    valid = counts > 0
    mean = torch.where(valid, sums / counts.clamp(min=1), torch.zeros_like(sums))
    std = torch.where(valid, (stds / counts.clamp(min=1)).clamp(min=1e-6), torch.ones_like(stds))
    return NormStats(mean=tuple(mean.tolist()), std=tuple(std.tolist()), source="computed: mean of per-sample stats")


def load_or_compute_stats(
    root: str | os.PathLike[str], modality: str, samples: Iterable[Mapping[str, Any]] | None = None
) -> NormStats:
    """Cached statistics of ``modality`` under ``root``; computed from ``samples`` and cached when missing."""
    path = stats_path(root, modality)
    if path.exists():
        return read_stats(path, modality)
    if samples is None:
        raise DatasetNotFoundError(
            f"statistics file {str(path)!r} is missing and no samples were given to compute it; pass samples= or "
            f"compute it with: python -m anysat_core.data.normalize <dataset> {str(root)!r}"
        )
    stats = compute_stats(samples, modality)
    check_stats(stats, modality, "computed statistics")
    write_stats(path, stats)
    return stats


def registry_stats(modality: str, name: str) -> NormStats:
    """The registry's statistics ``name`` of ``modality``, their ``source`` starting with ``name``."""
    stats = MODALITIES[modality].stats[name]
    if stats.source.startswith(name):
        return stats
    return NormStats(stats.mean, stats.std, f"{name} ({stats.source})", stats.units)


class Normalize:
    """Apply ``(x - mean) / std`` per channel to the modalities of a sample (a new dict is returned).

    Args:
        stats: ``{modality: NormStats}``; modalities not listed are left unchanged.
    """

    def __init__(self, stats: Mapping[str, NormStats]) -> None:
        for mod, st in stats.items():
            check_stats(st, mod, f"statistics for {mod}")
        self.stats = dict(stats)
        self._tensors = {
            m: (torch.tensor(s.mean, dtype=torch.float32), torch.tensor(s.std, dtype=torch.float32))
            for m, s in self.stats.items()
        }

    @classmethod
    def from_registry(cls, source: str, modalities: Iterable[str]) -> Normalize:
        """Statistics named ``source`` in the registry (e.g. ``"treesatai-ts"``) for each modality that has them."""
        return cls({m: registry_stats(m, source) for m in modalities if source in MODALITIES[m].stats})

    def describe(self) -> dict[str, str]:
        """``{modality: where its statistics come from}``, e.g. ``{"s2": "treesatai-ts (AnySat demo notebook...)"}``."""
        return {m: s.source for m, s in self.stats.items()}

    def __repr__(self) -> str:
        return f"Normalize({', '.join(f'{m}: {src}' for m, src in self.describe().items()) or 'nothing'})"

    def apply_array(self, modality: str, x: np.ndarray) -> np.ndarray:
        """``x`` ``(..., C, h, w)`` normalised with ``modality``'s statistics (unchanged when it has none)."""
        st = self.stats.get(modality)
        if st is None:
            return x
        mean = np.asarray(st.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(st.std, dtype=np.float32)[:, None, None]
        return ((x - mean) / std).astype(np.float32, copy=False)

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(sample)
        for mod, (mean, std) in self._tensors.items():
            if mod in out:
                x = out[mod].to(torch.float32)
                shape = (-1, 1, 1)
                out[mod] = (x - mean.view(shape)) / std.view(shape)
        return out


def main(argv: list[str] | None = None) -> int:
    """``python -m anysat_core.data.normalize DATASET ROOT``: compute and cache the statistics of a dataset."""
    import argparse

    from anysat_core.data.datasets import dataset_class, get_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="registered dataset name (anysat_core.data.datasets.list_datasets())")
    ap.add_argument("root", help="dataset root folder")
    ap.add_argument("--split", default="train")
    ap.add_argument("--modalities", nargs="*", default=None)
    ap.add_argument("--force", action="store_true", help="recompute even if the file exists")
    args = ap.parse_args(argv)
    if dataset_class(args.dataset).generated:
        raise ConfigError(
            f"{args.dataset} is generated (no files, no root): its statistics are computed when it is built; "
            "this command caches statistics of datasets on disk"
        )
    ds = get_dataset(args.dataset, args.root, args.split, args.modalities, normalize=False)
    for mod in ds.modalities:
        path = stats_path(ds.root_path, mod)
        if path.exists() and not args.force:
            print(f"{mod}: {path} exists (use --force to recompute)")
            continue
        stats = compute_stats((ds._load_sample(i) for i in range(len(ds))), mod)
        write_stats(path, stats)
        print(f"{mod}: wrote {path}: mean {[round(v, 4) for v in stats.mean]} std {[round(v, 4) for v in stats.std]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
