"""Grid maths shared by rasters, features, scene inference, probes and PCA (numpy only, no torch, no xarray).

Conventions:

* A north-up affine transform is ``(a, b, c, d, e, f)`` with ``b == d == 0``: ``a`` is the cell width (> 0),
  ``e`` the cell height (< 0 for north-up rasters), ``(c, f)`` the top-left corner; a ``rasterio`` ``Affine``
  works wherever a 6-tuple is accepted.
* Cell ``(i, j)`` (row, column) has its centre at ``x = c + a * (j + 0.5)``, ``y = f + e * (i + 0.5)``.
* Lengths are compared with a relative tolerance :data:`EPS` (metres or CRS units), so that 0.1 + 0.2 is a
  multiple of 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from anysat_core.errors import InputShapeError

__all__ = [
    "EPS",
    "Bounds",
    "cell_centres",
    "cell_size",
    "centres_bounds",
    "count_steps",
    "grid_bounds",
    "grid_transform",
    "is_length",
    "is_multiple",
    "lcm_length",
    "nearest_cell",
    "north_up",
    "snap_inward",
]

#: Tolerance of length comparisons (relative to the unit they are compared with).
EPS = 1e-6

#: ``(left, bottom, right, top)`` in CRS units.
Bounds = tuple[float, float, float, float]


def is_length(value: Any) -> bool:
    """Whether ``value`` is a real, finite number (a length in metres or CRS units; bools are not lengths)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
    )


def is_multiple(x: float, unit: float) -> bool:
    """Whether ``x`` is a positive whole multiple of ``unit`` (1x included), within :data:`EPS`."""
    q = x / unit
    return q >= 1 - EPS and abs(q - round(q)) < EPS


def count_steps(length: float, step: float) -> int:
    """How many ``step`` are needed to cover ``length`` (ceil, a length a hair over a multiple does not count)."""
    return math.ceil(length / step - EPS)


def snap_inward(bounds: Bounds, unit: float) -> Bounds:
    """``bounds`` shrunk to the largest box whose edges are multiples of ``unit`` (a lattice anchored at 0)."""
    left, bottom, right, top = bounds
    return (
        math.ceil(left / unit - EPS) * unit,
        math.ceil(bottom / unit - EPS) * unit,
        math.floor(right / unit + EPS) * unit,
        math.floor(top / unit + EPS) * unit,
    )


def north_up(transform: Any, what: str = "transform") -> tuple[float, float, float, float, float, float]:
    """``(a, b, c, d, e, f)`` of a north-up affine (6-tuple or ``Affine``).

    Raises:
        InputShapeError: a missing, short or rotated/sheared transform.
    """
    try:
        a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    except (TypeError, ValueError) as err:
        raise InputShapeError(
            f"{what} is {transform!r}; expected an affine (a, b, c, d, e, f) such as rasterio's Affine"
        ) from err
    if b != 0 or d != 0:
        raise InputShapeError(
            f"{what} {transform!r} is rotated or sheared; expected a north-up affine (a, 0, c, 0, e, f): "
            "warp the raster to a north-up grid first (e.g. rioxarray's reproject)"
        )
    return a, b, c, d, e, f


def cell_centres(transform: Any, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the cells of a ``(h, w)`` grid with a north-up ``transform``.

    Returns:
        ``(x (w,), y (h,))`` float64 in CRS units; cell ``[i, j]`` lies at ``(x[j], y[i])``.
    """
    a, _, c, _, e, f = north_up(transform)
    h, w = (int(v) for v in shape)
    return c + a * (np.arange(w) + 0.5), f + e * (np.arange(h) + 0.5)


def grid_transform(transform: Any, shape: Sequence[int], grid_shape: Sequence[int]) -> tuple[float, ...]:
    """Transform of an ``(h, w)`` grid laid over the extent of a ``shape = (H, W)`` raster with ``transform``.

    Used to place a patch or dense feature grid on its tile: the cells are ``W / w`` (``H / h``) raster cells wide.
    """
    a, _, c, _, e, f = north_up(transform)
    H, W = (int(v) for v in shape)
    h, w = (int(v) for v in grid_shape)
    if min(h, w, H, W) < 1:
        raise InputShapeError(f"grid {grid_shape!r} over raster {shape!r}; expected positive sizes")
    return (a * W / w, 0.0, c, 0.0, e * H / h, f)


def cell_size(centres: np.ndarray, default: float = 1.0) -> float:
    """Cell size along one axis from regularly spaced centre coordinates (``default`` for a single cell)."""
    centres = np.asarray(centres, dtype=np.float64)
    return float(abs(centres[1] - centres[0])) if centres.size > 1 else float(default)


def centres_bounds(xs: np.ndarray, ys: np.ndarray, step_x: float, step_y: float) -> Bounds:
    """Outer edges ``(left, bottom, right, top)`` of a grid given its cell centres and cell sizes."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    hx, hy = abs(step_x) / 2, abs(step_y) / 2
    return float(xs.min() - hx), float(ys.min() - hy), float(xs.max() + hx), float(ys.max() + hy)


def nearest_cell(centres: np.ndarray, step: float, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the cell (regular ``centres (n,)`` spaced ``step``) holding each of ``values``, and an inside flag.

    Works for increasing and decreasing centres (x and north-up y).  A value on the edge between two cells goes to
    the first of them in ``centres`` order of increasing coordinate.
    """
    centres = np.asarray(centres, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(centres)
    sc = centres[order]
    pos = np.clip(np.searchsorted(sc, values), 1, max(len(sc) - 1, 1))
    left = sc[np.maximum(pos - 1, 0)]
    right = sc[np.minimum(pos, len(sc) - 1)]
    pick = np.clip(np.where(np.abs(values - left) <= np.abs(values - right), pos - 1, pos), 0, len(sc) - 1)
    inside = np.abs(values - sc[pick]) <= step / 2 + 1e-9 * max(step, 1.0)
    return order[pick], inside


def grid_bounds(transform: Any, shape: Sequence[int]) -> Bounds:
    """Outer edges ``(left, bottom, right, top)`` of a ``shape = (H, W)`` grid with an affine ``transform``.

    The box around the grid's four corners (for a north-up transform, its exact extent).
    """
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    H, W = (int(v) for v in shape)
    xs = (c, c + a * W, c + b * H, c + a * W + b * H)
    ys = (f, f + d * W, f + e * H, f + d * W + e * H)
    return min(xs), min(ys), max(xs), max(ys)


def lcm_length(lengths: Sequence[float]) -> float:
    """Least common multiple of lengths with up to 4 decimals (e.g. GSDs 0.2, 10 and 30 m: 30 m)."""
    fractions = [Fraction(str(float(v))).limit_denominator(10_000) for v in lengths]
    num = math.lcm(*(f.numerator for f in fractions))
    den = math.gcd(*(f.denominator for f in fractions))
    return float(Fraction(num, den))
