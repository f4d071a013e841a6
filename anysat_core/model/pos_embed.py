"""Positional encodings and relative-position buckets, cached per shape.

All tables are pure functions of a few integers, so they are built once per
(width, grid, step, device, dtype) and reused; the original code rebuilt them on every call.
Maths follows the released AnySat model exactly (float32 construction):

* ``sincos_2d(D, G, step)``: token at raster index (i, j) gets ``[E(j*step) | E(i*step)]`` with
  ``E(p) = [sin(p w_k) | cos(p w_k)]``, ``w_k = 10000^(-k/(D/4))``; the *first* half encodes the column.
* ``date_encoding``: per date d, ``PE[k] = sin(d / T0^(2*floor(i/2)/dh))`` (even i) / ``cos`` (odd i)
  with ``i = k mod dh``, ``dh = D / heads``; the dh-vector is tiled ``heads`` times.
* ``distance_buckets``: iRPE "euclidean" buckets with ratio 1.9 on a G x G grid, special tokens in
  bucket 7; ``distance_buckets_at`` gathers them at per-sample patch positions (JEPA context tokens).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["NUM_RPE_BUCKETS", "date_encoding", "distance_buckets", "distance_buckets_at", "sincos_2d"]

_F = TypeVar("_F", bound=Callable[..., torch.Tensor])


def _cached(fn: _F) -> _F:
    """LRU-cache a table builder; tables are built outside inference mode so that they can also be used
    later in autograd (a tensor created under ``torch.inference_mode`` cannot be saved for backward)."""

    @functools.lru_cache(maxsize=256)
    def cached(*args: object) -> torch.Tensor:
        with torch.inference_mode(False):
            return fn(*args)

    return functools.wraps(fn)(cached)  # type: ignore[return-value]


NUM_RPE_BUCKETS = 8  # 7 distance buckets (3 of them never used here) + 1 for special tokens
_SPECIAL_BUCKET = 7


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) float32 positions -> (M, dim) ``[sin | cos]`` table."""
    omega = torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


@_cached
def _sincos_2d_cpu(dim: int, grid: int, step: float) -> torch.Tensor:
    idx = torch.arange(grid, dtype=torch.float32)
    cols = (idx[None, :].expand(grid, grid) * torch.tensor(step, dtype=torch.float32)).reshape(-1)
    rows = (idx[:, None].expand(grid, grid) * torch.tensor(step, dtype=torch.float32)).reshape(-1)
    return torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)


@_cached
def _sincos_2d_dev(dim: int, grid: int, step: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _sincos_2d_cpu(dim, grid, step).to(device=device, dtype=dtype)


def sincos_2d(
    dim: int, grid: int, step: float, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """2-D sin-cos table ``(grid*grid, dim)`` for a raster-ordered square grid, positions ``index * step``.

    The returned tensor is shared (cached): do not modify it in place.
    """
    return _sincos_2d_dev(dim, grid, float(step), torch.device(device or "cpu"), dtype)


@_cached
def _date_denominators(dh: int, period: int, device: torch.device) -> torch.Tensor:
    k = torch.arange(dh, dtype=torch.float32)
    return torch.pow(period, 2 * torch.div(k, 2, rounding_mode="floor") / dh).to(device)


def date_encoding(dates: torch.Tensor, dim: int, heads: int, period: int) -> torch.Tensor:
    """Sinusoidal encoding of raw dates (day of year), ``(B, T) -> (B, T, dim)`` float32."""
    dh = dim // heads
    table = dates.to(torch.float32)[..., None] / _date_denominators(dh, period, dates.device)
    table = torch.stack([torch.sin(table[..., 0::2]), torch.cos(table[..., 1::2])], dim=-1).flatten(-2)
    return table.repeat(*([1] * (table.dim() - 1)), heads)


def _piecewise_bucket(dist: torch.Tensor, alpha: float = 1.9, beta: float = 3.8, gamma: float = 15.2) -> torch.Tensor:
    """iRPE piecewise index of non-negative rounded distances (long)."""
    far = dist > alpha
    out = dist.clone()
    scaled = alpha + torch.log(dist.clamp(min=alpha) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    out[far] = scaled[far].round().clip(max=beta)
    return out.to(torch.long)


@_cached
def _grid_buckets_cpu(grid: int) -> torch.Tensor:
    """(G*G, G*G) bucket ids in 3..6 for the tokens of a raster grid."""
    r = torch.arange(grid).repeat_interleave(grid)
    c = torch.arange(grid).repeat(grid)
    d2 = (r[:, None] - r[None, :]) ** 2 + (c[:, None] - c[None, :]) ** 2
    dist = d2.to(torch.float32).sqrt().round()
    return _piecewise_bucket(dist) + int(3.8)  # shift [-beta, beta] to [0, 2*beta]


@_cached
def _distance_buckets_dev(grid: int, special: int, rows: int, key_repeats: int, device: torch.device) -> torch.Tensor:
    base = _grid_buckets_cpu(grid)
    n = grid * grid
    out = torch.full((special + rows, special + key_repeats * n), _SPECIAL_BUCKET, dtype=torch.long)
    if rows:
        out[special:, special:] = base[:rows].repeat(1, key_repeats)
    return out.to(device)


def distance_buckets(
    grid: int,
    *,
    special: int = 1,
    rows: int | None = None,
    key_repeats: int = 1,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Relative-position bucket ids ``(special + rows, special + key_repeats * G*G)``.

    Args:
        grid: side G of the raster grid.
        special: number of leading special tokens (class token, MODIS token) on both axes.
        rows: number of grid query rows to keep (default all ``G*G``; 0 keeps only special rows).
        key_repeats: the grid is tiled this many times along the key axis (one copy per modality).
        device: where the (cached) tensor lives.
    """
    rows = grid * grid if rows is None else rows
    return _distance_buckets_dev(grid, special, rows, key_repeats, torch.device(device or "cpu"))


@_cached
def _grid_buckets_dev(grid: int, device: torch.device) -> torch.Tensor:
    return _grid_buckets_cpu(grid).to(device)


def distance_buckets_at(grid: int, positions: torch.Tensor, *, special: int = 1, key_repeats: int = 1) -> torch.Tensor:
    """Relative-position bucket ids between tokens at given patch positions, per sample.

    The queries are ``special`` special tokens then the K patches at ``positions``; the keys are the same
    ``special`` tokens then ``key_repeats`` copies of the K patches (one per modality), exactly as
    :func:`distance_buckets` lays out the full grid: ``positions = arange(G*G)`` gives ``distance_buckets(grid,
    special=special, key_repeats=key_repeats)`` for every sample.

    Args:
        grid: side G of the raster grid.
        positions: ``(B, K)`` int64 raster indices in ``[0, G*G)``.
        special: number of leading special tokens (bucket 7 against everything).
        key_repeats: copies of the K positions along the key axis.

    Returns:
        ``(B, special + K, special + key_repeats * K)`` long, on ``positions.device``.
    """
    base = _grid_buckets_dev(grid, positions.device)  # (P, P)
    B, K = positions.shape
    sub = base[positions[:, :, None], positions[:, None, :]]  # (B, K, K)
    out = torch.full(
        (B, special + K, special + key_repeats * K), _SPECIAL_BUCKET, dtype=torch.long, device=positions.device
    )
    out[:, special:, special:] = sub.repeat(1, 1, key_repeats)
    return out
