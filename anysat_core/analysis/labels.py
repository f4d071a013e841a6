"""Ground-truth labels on feature grids: label maps placed by coordinates, points and polygons turned into cells.

Label maps and feature grids (used by :class:`~anysat_core.analysis.probes.PixelProbe`).  A label map given as a
DataArray ``(y, x)`` with coordinates (e.g. :func:`labels_to_dataarray`) is put on the feature grid by coordinates:

* label pixels **finer than or as fine as** the feature cells: **majority vote** of the label pixels whose centres
  fall inside each feature cell (``ignore_index`` pixels do not vote; ties go to the smaller class index);
* label pixels **coarser** than the feature cells: **nearest** label pixel centre to each feature cell centre;
* feature cells that no label pixel covers (outside the label extent) are left out (not counted, not fitted).

A plain array (or tensor) label map has no coordinates, so it is taken to cover **the same extent** as the feature
map: an ``(h, w)`` array is used as is, an ``(h*r, w*r)`` array is reduced by majority over ``r x r`` blocks and an
``(h/r, w/r)`` array is repeated (nearest).  Other shapes raise :class:`~anysat_core.errors.InputShapeError`.

Labels given as geometries (used by :func:`~anysat_core.analysis.probes.fit_from_points`): a point labels the cell
that holds it (cell edges inclusive); a polygon or multipolygon labels every cell whose **centre** falls inside it
(even-odd rule, holes respected).  numpy and xarray only (no torch, no shapely needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from anysat_core.analysis.grid import cell_sizes, locate
from anysat_core.errors import InputShapeError
from anysat_core.geo import cell_centres, nearest_cell, north_up

__all__ = ["MISSING", "as_class_array", "geometry_cells", "labels_on_grid", "labels_to_dataarray", "parse_labels"]

#: Internal "no label here" value of :func:`labels_on_grid`.
MISSING = -1

_NUMBER = (int, float, np.integer, np.floating)


# ----------------------------------------------------------------------------------------------- label maps
def labels_to_dataarray(label: Any, meta: Any) -> xr.DataArray:
    """A label map ``(H, W)`` (array or tensor) placed on the map with a tile's GeoInfo (``transform``, ``crs``).

    Cell centres: ``x = c + a * (j + 0.5)``, ``y = f + e * (i + 0.5)`` from ``meta.transform = (a, b, c, d, e, f)``
    (:func:`anysat_core.geo.cell_centres`).  The DataArray is named ``label`` (the ground truth of the sample).

    Raises:
        InputShapeError: ``label`` is not 2-D or ``meta`` has no (north-up) transform.
    """
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise InputShapeError(f"label has shape {arr.shape}; expected a (H, W) class map")
    xs, ys = cell_centres(north_up(getattr(meta, "transform", None), "meta.transform"), arr.shape)
    da = xr.DataArray(arr.astype(np.int64), dims=("y", "x"), coords={"y": ys, "x": xs}, name="label")
    crs = getattr(meta, "crs", None)
    return da.rio.write_crs(crs) if crs is not None else da


def as_class_array(y: Any, ndim: int, name: str, expected: str) -> np.ndarray:
    """Class labels as an int64 array of ``ndim`` dims; booleans and whole-number floats are accepted.

    Raises:
        InputShapeError: unreadable, another number of dims (the message ends with ``expected``), non-integer values.
    """
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise InputShapeError(f"{name} could not be read as an array ({exc}); expected {expected}") from exc
    if arr.ndim != ndim:
        raise InputShapeError(f"{name} has shape {arr.shape}; expected {expected}")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise InputShapeError(f"{name} holds non-integer values; expected class indices")
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputShapeError(f"{name} has dtype {arr.dtype}; expected integer class indices")
    return arr.astype(np.int64)


def _label_map(label: Any, k: int, ignore_index: int | None, name: str, expected: str) -> np.ndarray:
    """A ``(H, W)`` int64 label map with ``ignore_index`` turned into :data:`MISSING`; values outside 0..K-1 refused."""
    lab = as_class_array(label, 2, name, expected)
    if ignore_index is not None:
        lab = np.where(lab == ignore_index, MISSING, lab)
    bad = (lab != MISSING) & ((lab < 0) | (lab >= k))
    if bad.any():
        vals = np.unique(lab[bad])
        raise InputShapeError(
            f"{name} has labels {vals[:10].tolist()} outside 0..{k - 1} (num_classes={k}"
            f"{'' if ignore_index is None else f', ignore_index={ignore_index}'}); set num_classes or ignore_index"
        )
    return lab


def _majority(cell: np.ndarray, lab: np.ndarray, n_cells: int, k: int) -> np.ndarray:
    """Majority class ``(n_cells,)`` of labels ``lab (n,)`` falling in cells ``cell (n,)``.

    :data:`MISSING` labels do not vote; ties go to the smaller class; a cell without a vote gets :data:`MISSING`.
    """
    ok = lab != MISSING
    counts = np.bincount(cell[ok] * k + lab[ok], minlength=n_cells * k).reshape(n_cells, k)
    out = counts.argmax(1)
    out[counts.sum(1) == 0] = MISSING
    return out.astype(np.int64)


def _on_grid_by_coordinates(feat: xr.DataArray, label: xr.DataArray, lab: np.ndarray, k: int) -> np.ndarray:
    h, w = feat.sizes["y"], feat.sizes["x"]
    (sfx, sfy), (slx, sly) = cell_sizes(feat), cell_sizes(label)
    fx, fy = feat["x"].values, feat["y"].values
    lx, ly = label["x"].values, label["y"].values
    if slx <= sfx * (1 + 1e-9) and sly <= sfy * (1 + 1e-9):  # finer labels: majority per feature cell
        jx, inx = nearest_cell(fx, sfx, lx)
        iy, iny = nearest_cell(fy, sfy, ly)
        lab = np.where(iny[:, None] & inx[None, :], lab, MISSING)
        return _majority((iy[:, None] * w + jx[None, :]).ravel(), lab.ravel(), h * w, k)
    jx, inx = nearest_cell(lx, slx, fx)  # coarser labels: nearest label pixel per feature cell
    iy, iny = nearest_cell(ly, sly, fy)
    out = np.where(iny[:, None] & inx[None, :], lab[iy[:, None], jx[None, :]], MISSING)
    return out.reshape(-1).astype(np.int64)


def labels_on_grid(feat: xr.DataArray, label: Any, num_classes: int, ignore_index: int | None, name: str) -> np.ndarray:
    """Labels ``(h * w,)`` int64 on the grid of the ``(feature, y, x)`` map ``feat`` (rules in the module docstring);
    :data:`MISSING` where no (valid) label covers a cell.

    Raises:
        InputShapeError: not a 2-D label map, a plain array that is no integer multiple / fraction of the grid, or
            labels outside 0..K-1 (``ignore_index`` aside).
    """
    h, w = feat.sizes["y"], feat.sizes["x"]
    expected = f"a (y, x) label map for a ({h}, {w}) feature grid"
    if isinstance(label, xr.DataArray):
        if set(label.dims) != {"y", "x"}:
            raise InputShapeError(f"{name} has dims {label.dims}; expected a (y, x) label map")
        label = label.transpose("y", "x")
        lab = _label_map(label.values, num_classes, ignore_index, name, expected)
        return _on_grid_by_coordinates(feat, label, lab, num_classes)
    lab = _label_map(label, num_classes, ignore_index, name, expected)
    H, W = lab.shape
    if (H, W) == (h, w):
        return lab.reshape(-1)
    if H % h == 0 and W % w == 0 and H // h == W // w:  # finer, same extent: majority over r x r blocks
        r = H // h
        blocks = lab.reshape(h, r, w, r).transpose(0, 2, 1, 3).reshape(-1)
        return _majority(np.repeat(np.arange(h * w), r * r), blocks, h * w, num_classes)
    if h % H == 0 and w % W == 0 and h // H == w // W:  # coarser, same extent: nearest (repeat)
        r = h // H
        return np.repeat(np.repeat(lab, r, 0), r, 1).reshape(-1)
    raise InputShapeError(
        f"{name} has shape {(H, W)} but the feature grid is {(h, w)}; a plain array must be the same grid or an "
        "integer multiple / fraction of it over the same extent. Pass a DataArray with x/y coordinates "
        "(labels_to_dataarray) to resample by coordinates."
    )


# ----------------------------------------------------------------------------------------------- points and polygons
def _geometry(obj: Any) -> dict[str, Any] | None:
    """A GeoJSON-like geometry dict from a shapely geometry (``__geo_interface__``), a geometry or a Feature dict."""
    gi = getattr(obj, "__geo_interface__", None)
    if isinstance(gi, Mapping):
        obj = gi
    if isinstance(obj, Mapping):
        if obj.get("type") == "Feature":
            return _geometry(obj.get("geometry"))
        if "type" in obj and "coordinates" in obj:
            return dict(obj)
    return None


def _short(coords: Any) -> str:
    """Coordinates for a message: a point as ``(x, y)``, longer geometries cut to 60 characters."""
    try:
        if len(coords) == 2 and all(isinstance(v, _NUMBER) for v in coords):
            return f"({float(coords[0]):.10g}, {float(coords[1]):.10g})"
    except TypeError:
        pass
    text = str(coords)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_labels(points: Sequence[Any]) -> list[tuple[dict[str, Any], int, str]]:
    """Label items as ``(geometry, class, description)``; the forms are those of
    :func:`~anysat_core.analysis.probes.fit_from_points`.

    Raises:
        InputShapeError: an item in none of the forms, or a class that is not a non-negative integer.
    """
    parsed: list[tuple[dict[str, Any], int, str]] = []
    for i, item in enumerate(points):
        geom, cls = None, None
        if isinstance(item, Mapping) and item.get("type") == "Feature":
            geom, cls = _geometry(item), (item.get("properties") or {}).get("class")
        elif isinstance(item, (tuple, list)) and len(item) == 3 and all(isinstance(v, _NUMBER) for v in item):
            geom, cls = {"type": "Point", "coordinates": (float(item[0]), float(item[1]))}, item[2]
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            geom, cls = _geometry(item[0]), item[1]
        whole = isinstance(cls, _NUMBER) and not isinstance(cls, bool) and float(cls).is_integer() and cls >= 0
        if geom is None or cls is None or not whole:  # (cls is None: not whole)
            raise InputShapeError(
                f"label {i} ({item!r:.120}) is not understood; expected (x, y, class), (geometry, class) or a GeoJSON "
                "Feature with properties['class'] (class a non-negative int)"
            )
        parsed.append((geom, int(cls), f"#{i} {geom['type']} {_short(geom['coordinates'])}"))
    return parsed


def _rings_contain(rings: Sequence[Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd rule over all rings of a polygon (outer ring and holes): inside flags for points ``(n,)``."""
    inside = np.zeros(x.shape, dtype=bool)
    for ring in rings:
        r = np.asarray(ring, dtype=np.float64)[:, :2]
        if len(r) < 3:
            continue
        x1, y1 = r[:, 0], r[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        for a, b, c, d in zip(x1, y1, x2, y2):
            crosses = (b > y) != (d > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                xint = a + (y - b) * (c - a) / (d - b)
            inside ^= crosses & (x < xint)
    return inside


def _polygon_contains(geom: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    t = geom["type"]
    if t == "Polygon":
        return _rings_contain(geom["coordinates"], x, y)
    if t == "MultiPolygon":
        out = np.zeros(x.shape, dtype=bool)
        for poly in geom["coordinates"]:
            out |= _rings_contain(poly, x, y)
        return out
    raise InputShapeError(f"geometry type {t!r} is not supported; expected Point, Polygon or MultiPolygon")


def geometry_cells(da: xr.DataArray, geom: dict[str, Any]) -> np.ndarray:
    """Flat indices (row-major over ``(y, x)``) of the cells of map ``da`` that a geometry labels (may be empty).

    Raises:
        InputShapeError: a geometry type other than Point, Polygon, MultiPolygon.
    """
    if geom["type"] == "Point":
        px, py = (float(v) for v in geom["coordinates"][:2])
        rows, cols, inside = locate(da, px, py)
        return (rows * da.sizes["x"] + cols)[inside]
    gx, gy = np.meshgrid(np.asarray(da["x"].values, np.float64), np.asarray(da["y"].values, np.float64))
    return np.flatnonzero(_polygon_contains(geom, gx.ravel(), gy.ravel()))
