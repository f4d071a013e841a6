"""Feature maps as cells: the one place where analysis checks a map, reads its cells and builds results on its grid.

A *feature map* is a DataArray with dims ``("feature", "y", "x")`` (any order; it is transposed) as
:func:`anysat_core.features.extract_features` returns it: ``x``/``y`` cell-centre coordinates on a regular grid and,
when known, a CRS in a ``spatial_ref`` coordinate.

**NaN rule** (every analysis tool follows it): a cell whose feature vector holds a NaN is *masked* (no data there);
an infinite feature value is a bug upstream and raises :class:`~anysat_core.errors.NonFiniteInputError`.  What a tool
does with masked cells is its own documented choice (PCA and similarity give NaN, k-means ``-1``, probes refuse
them unless ``nan="drop"``).

Grid maths (cell sizes, bounds, nearest cell) come from :mod:`anysat_core.geo`; this module only reads them off a
DataArray.  numpy and xarray only (no torch).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor: CRS of maps and results)
import xarray as xr

from anysat_core.errors import EmptyTileError, InputShapeError, NonFiniteInputError
from anysat_core.geo import Bounds, cell_size, centres_bounds, nearest_cell

__all__ = [
    "FEATURE_DIMS",
    "bounds",
    "cell_matrix",
    "cell_sizes",
    "check_number",
    "describe_cells",
    "feature_map",
    "feature_maps",
    "grid_dataset",
    "grid_like",
    "locate",
    "pooled_sample",
    "spatial_coords",
]

FEATURE_DIMS = ("feature", "y", "x")


def check_number(
    name: str,
    value: Any,
    *,
    whole: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    error: type[Exception] = InputShapeError,
) -> None:
    """Raise ``error`` unless ``value`` is a real number (an integer when ``whole``; bools are neither), at least
    ``minimum`` and above 0 when ``positive``: the one check of the numeric settings of the analysis tools."""
    kinds = (int, np.integer) if whole else (int, float, np.integer, np.floating)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and bool(np.isfinite(value))
    ok = ok and (minimum is None or value >= minimum) and (not positive or value > 0)
    if not ok:
        if whole and minimum == 1:
            need = "a positive integer"
        else:
            need = "an integer" if whole else "a number"
            need += f" >= {minimum:g}" if minimum is not None else " > 0" if positive else ""
        raise error(f"{name}={value!r}; expected {need}")


# ----------------------------------------------------------------------------------------------- checking maps
def feature_map(da: Any, name: str = "feature map") -> xr.DataArray:
    """Check that ``da`` is one spatial feature map and return it transposed to ``(feature, y, x)``.

    Raises:
        InputShapeError: not a DataArray, dims other than ``feature``, ``y``, ``x``, or an empty grid.
    """
    if not isinstance(da, xr.DataArray):
        raise InputShapeError(
            f"the {name} is a {type(da).__name__}; expected an xarray.DataArray with dims ('feature', 'y', 'x') "
            "such as extract_features(model, sample, patch_size_m=..., output='patch' or 'dense') returns"
        )
    if set(da.dims) != set(FEATURE_DIMS) or da.ndim != 3:
        hint = (
            " (tile embeddings (sample, feature) have no map grid: use output='patch' or 'dense')"
            if "sample" in da.dims
            else ""
        )
        raise InputShapeError(f"the {name} has dims {da.dims}; expected ('feature', 'y', 'x'){hint}")
    da = da.transpose(*FEATURE_DIMS)
    if 0 in da.shape:
        raise InputShapeError(f"the {name} has shape {dict(da.sizes)}; expected at least one feature and one cell")
    return da


def feature_maps(data: Any, what: str) -> list[xr.DataArray]:
    """One feature map or a sequence of them, as a list of ``(feature, y, x)`` maps of one feature size D.

    Raises:
        InputShapeError: an empty list, a bad map, or maps of different D.
    """
    maps = [data] if isinstance(data, xr.DataArray) else list(data) if isinstance(data, Sequence) else [data]
    if not maps:
        raise InputShapeError(f"{what} got an empty list; expected one feature map (feature, y, x) or several")
    out = [feature_map(m, f"feature map #{i}" if len(maps) > 1 else "feature map") for i, m in enumerate(maps)]
    sizes = sorted({m.sizes["feature"] for m in out})
    if len(sizes) > 1:
        raise InputShapeError(
            f"{what} got feature maps with different feature sizes {sizes}; all maps must come from the same model "
            "(same width D)"
        )
    return out


# ----------------------------------------------------------------------------------------------- cells
def describe_cells(da: xr.DataArray, cells: np.ndarray, limit: int = 5) -> str:
    """Map coordinates of flat cell indices (row-major over ``(y, x)``) for a message: ``(x=.., y=..), ...``."""
    cells = np.asarray(cells, dtype=np.int64).ravel()
    w = da.sizes["x"]
    xs, ys = np.asarray(da["x"].values), np.asarray(da["y"].values)
    text = ", ".join(f"(x={float(xs[c % w]):.10g}, y={float(ys[c // w]):.10g})" for c in cells[:limit])
    return text + (" ..." if cells.size > limit else "")


def cell_matrix(da: xr.DataArray, name: str = "feature map") -> tuple[np.ndarray, np.ndarray]:
    """Cells of a ``(feature, y, x)`` map as rows: ``X (h*w, D)`` float64 (row-major over y, x) and ``valid (h*w,)``.

    A cell is valid when none of its features is NaN (the NaN rule of the module docstring).

    Raises:
        NonFiniteInputError: an infinite feature value (NaN marks masked cells; +-inf is a bug upstream).
    """
    arr = np.asarray(da.values, dtype=np.float64)
    X = arr.reshape(arr.shape[0], -1).T
    inf = np.isinf(X)
    if inf.any():
        cells = np.flatnonzero(inf.any(axis=1))
        raise NonFiniteInputError(
            f"the {name} holds {int(inf.sum())} infinite value(s) in {cells.size} cell(s), e.g. at "
            f"{describe_cells(da, cells)}; expected finite features, with NaN marking masked cells (replace inf with "
            "NaN to mask those cells)"
        )
    return X, ~np.isnan(X).any(axis=1)


def pooled_sample(maps: list[xr.DataArray], max_samples: int, seed: int, what: str) -> np.ndarray:
    """Valid feature vectors of all ``maps`` pooled, at most ``max_samples`` of them: ``(n, D)`` float64.

    When there are more valid cells than ``max_samples``, each map contributes a share proportional to its number
    of valid cells (largest remainders get the leftover), chosen without replacement by a generator seeded with
    ``seed`` (same inputs, same sample).

    Raises:
        InputShapeError: ``max_samples`` is not a positive integer.
        EmptyTileError: no valid cell in any map.
    """
    if not (isinstance(max_samples, (int, np.integer)) and max_samples > 0):
        raise InputShapeError(f"max_samples={max_samples!r}; expected a positive integer (e.g. 100_000)")
    mats = [cell_matrix(m, f"feature map #{i}") for i, m in enumerate(maps)]
    counts = np.array([int(v.sum()) for _, v in mats])
    total = int(counts.sum())
    if total == 0:
        raise EmptyTileError(
            f"{what}: every cell of the {len(maps)} feature map(s) is masked (NaN features); nothing to fit on"
        )
    rng = np.random.default_rng(seed)
    if total <= max_samples:
        quotas = counts
    else:
        raw = counts * (max_samples / total)
        quotas = np.floor(raw).astype(int)
        rest = max_samples - int(quotas.sum())
        quotas[np.argsort(-(raw - quotas), kind="stable")[:rest]] += 1
    parts = []
    for (X, valid), n, q in zip(mats, counts, quotas, strict=True):
        rows = X[valid]
        if q < n:
            rows = rows[np.sort(rng.choice(n, size=int(q), replace=False))]
        parts.append(rows)
    return np.concatenate(parts, axis=0)


# ----------------------------------------------------------------------------------------------- grid geometry
def _transform_step(da: xr.DataArray, index: int) -> float | None:
    """Cell size from the GDAL ``GeoTransform`` written on the grid-mapping coordinate (``index`` 1: x, 5: y)."""
    ref = da.coords.get(da.encoding.get("grid_mapping") or da.attrs.get("grid_mapping") or "spatial_ref")
    if ref is None or "GeoTransform" not in ref.attrs:
        return None
    try:
        gt = [float(v) for v in str(ref.attrs["GeoTransform"]).split()]
    except ValueError:
        return None
    return abs(gt[index]) if len(gt) == 6 and gt[index] != 0 else None


def cell_sizes(da: xr.DataArray) -> tuple[float, float]:
    """Absolute cell sizes ``(dx, dy)`` of a map with ``x``/``y`` coordinates (any dims besides).

    From the coordinates; an axis of one cell takes its size from the written transform, else 1 (pixel-index
    coordinates, unit cells).
    """
    out = []
    for dim, index in (("x", 1), ("y", 5)):
        c = np.asarray(da[dim].values, dtype=np.float64)
        default = _transform_step(da, index) if c.size < 2 else None
        out.append(cell_size(c, 1.0 if default is None else default))
    return out[0], out[1]


def bounds(da: xr.DataArray) -> Bounds:
    """``(xmin, ymin, xmax, ymax)``: the outer edges of a map's cells (centres +- half a cell)."""
    dx, dy = cell_sizes(da)
    return centres_bounds(da["x"].values, da["y"].values, dx, dy)


def locate(da: xr.DataArray, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and inside flag of the cell of ``da`` holding each map point ``(x[n], y[n])``.

    Returns:
        ``rows (n,)``, ``cols (n,)`` int64 and ``inside (n,)`` bool (False for a point outside the map's cells;
        its row / column are then those of the nearest cell).
    """
    dx, dy = cell_sizes(da)
    cols, in_x = nearest_cell(da["x"].values, dx, np.atleast_1d(np.asarray(x, dtype=np.float64)))
    rows, in_y = nearest_cell(da["y"].values, dy, np.atleast_1d(np.asarray(y, dtype=np.float64)))
    return rows.astype(np.int64), cols.astype(np.int64), in_x & in_y


# ----------------------------------------------------------------------------------------------- results on the grid
def spatial_coords(da: xr.DataArray) -> dict[Hashable, xr.DataArray]:
    """Coordinates of ``da`` that do not depend on ``feature`` (``x``, ``y``, ``spatial_ref``...)."""
    return {k: v for k, v in da.coords.items() if "feature" not in v.dims}


def grid_like(
    values: np.ndarray,
    da: xr.DataArray,
    name: str,
    attrs: Mapping[str, str],
    *,
    leading: Mapping[str, Sequence[Any]] | None = None,
) -> xr.DataArray:
    """A ``(y, x)`` DataArray on the grid of the ``(feature, y, x)`` map ``da`` (coords, CRS, attrs kept).

    ``leading`` adds dimensions before ``y, x`` with their coordinates, e.g. ``{"band": ["r", "g", "b"]}`` for
    ``values`` of shape ``(3, y, x)``.
    """
    leading = dict(leading or {})
    out = xr.DataArray(
        values,
        dims=(*leading, "y", "x"),
        coords={**leading, **spatial_coords(da)},
        name=name,
        attrs={**da.attrs, **attrs},
    )
    if "grid_mapping" in da.encoding:
        out.encoding["grid_mapping"] = da.encoding["grid_mapping"]
    return out


def grid_dataset(variables: Mapping[str, np.ndarray], da: xr.DataArray, attrs: Mapping[str, str]) -> xr.Dataset:
    """A Dataset of ``(y, x)`` variables on the grid of ``da``: its spatial coordinates and CRS, its string attributes
    plus ``attrs`` (string attributes only, so that it writes to netCDF / Zarr as is)."""
    ds = xr.Dataset(
        {k: (("y", "x"), v) for k, v in variables.items()},
        coords=spatial_coords(da),
        attrs={**{k: v for k, v in da.attrs.items() if isinstance(v, str)}, **attrs},
    )
    if "spatial_ref" in ds.coords:
        for v in variables:
            ds[v].attrs["grid_mapping"] = "spatial_ref"
    return ds
