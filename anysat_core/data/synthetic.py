"""Deterministic random batches of any modality set, at the modalities' true resolutions.

Values are standard-normal (as if normalised); dates are sorted days of year.  For shapes, speed and
error tests, benchmarks and demos, not for learning anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anysat_core.modalities import MODALITIES

__all__ = ["random_batch"]


def random_batch(
    modalities: Sequence[str],
    *,
    extent_m: float = 60.0,
    batch_size: int = 1,
    dates: int | dict[str, int] = 8,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A batch dict for ``AnySat.forward`` covering ``extent_m`` x ``extent_m`` metres.

    Args:
        modalities: modality names; each gets ``round(extent_m / gsd_m)`` pixels a side (MODIS: 1 pixel).
        extent_m: tile side in metres.
        batch_size: B.
        dates: number of dates T for every time series, or a ``{modality: T}`` dict.
        seed: seed of the private random generator (same seed, same batch).
        dtype: floating dtype of the images.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in modalities:
        m = MODALITIES[name]
        side = 1 if m.tile_token else max(1, round(extent_m / m.gsd_m))
        if m.time_series:
            T = dates[name] if isinstance(dates, dict) else dates
            out[name] = torch.randn(batch_size, T, m.num_bands, side, side, generator=g, dtype=dtype)
            doy = torch.stack([torch.randperm(365, generator=g)[:T].sort().values + 1 for _ in range(batch_size)])
            out[f"{name}_dates"] = doy
        else:
            out[name] = torch.randn(batch_size, m.num_bands, side, side, generator=g, dtype=dtype)
    return out
