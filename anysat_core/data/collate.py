"""Batching samples: stack images, pad time series to the longest T, carry masks and metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from anysat_core.errors import BatchSizeMismatchError, InputShapeError
from anysat_core.modalities import MODALITIES

__all__ = ["collate"]


def _pad_time(x: torch.Tensor, T: int, value: float | bool) -> torch.Tensor:
    if x.shape[0] == T:
        return x
    pad = x.new_full((T - x.shape[0], *x.shape[1:]), value)
    return torch.cat([x, pad], dim=0)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples (see :mod:`anysat_core.data.sample`) into a batch for ``AnySat.forward``.

    * Images are stacked; time series, their dates and masks are zero-padded to the longest T, as the
      original AnySat collate does (padded dates are 0, padded frames 0, padded masks False).
    * ``"<mod>_date_mask"`` ``(B, T)`` marks real dates (True) and padding (False).
    * Tensors under other keys (``label``...) are stacked; everything else (``meta``...) becomes a list.

    Raises:
        BatchSizeMismatchError: the samples do not carry the same keys.
        InputShapeError: tensors that cannot be stacked (different tile sizes or label shapes).
    """
    if not samples:
        raise InputShapeError("collate got no samples; expected a non-empty list of sample dicts")
    keys = list(samples[0])
    for i, s in enumerate(samples[1:], 1):
        if set(s) != set(keys):
            raise BatchSizeMismatchError(
                f"sample {i} has keys {sorted(s)} but sample 0 has {sorted(keys)}; batch samples with the same "
                "modalities (group them by modality set, or drop the extra modalities)"
            )
    out: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        mod = MODALITIES.get(key)
        base = (
            key[: -len("_dates")] if key.endswith("_dates") else key[: -len("_mask")] if key.endswith("_mask") else None
        )
        series = mod is not None and mod.time_series
        base_series = base in MODALITIES and MODALITIES[base].time_series if base else False
        if series or base_series:
            name = key if series or base is None else base  # base is set when base_series
            T = max(s[name].shape[0] for s in samples)
            if key.endswith("_mask") and values[0].dim() == samples[0][name].dim():
                values = [_pad_time(v.to(torch.bool), T, False) for v in values]
            elif key.endswith("_mask"):  # broadcast mask without a time axis: nothing to pad
                pass
            else:
                values = [_pad_time(v, T, 0) for v in values]
            if series:
                out[f"{key}_date_mask"] = torch.stack([torch.arange(T) < s[key].shape[0] for s in samples])
        if all(isinstance(v, torch.Tensor) for v in values):
            try:
                out[key] = torch.stack(values)
            except RuntimeError as e:
                shapes = sorted({tuple(v.shape) for v in values})
                raise InputShapeError(
                    f"cannot stack {key!r} across the batch: shapes {shapes}; samples of one batch need the same "
                    "tile size (cut tiles to one size, or use batch_size=1)"
                ) from e
        else:
            out[key] = values
    return out
