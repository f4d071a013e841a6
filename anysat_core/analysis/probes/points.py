"""A pixel probe from a few labels drawn on the map: points and polygons in map coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from anysat_core.analysis.grid import bounds, cell_matrix, describe_cells, feature_maps
from anysat_core.analysis.labels import geometry_cells, parse_labels
from anysat_core.analysis.probes.pixel import PixelProbe
from anysat_core.errors import ExtentMismatchError, InputShapeError, NonFiniteInputError, ProbeError

__all__ = ["fit_from_points"]


def fit_from_points(
    das: xr.DataArray | Sequence[xr.DataArray],
    points: Sequence[Any],
    *,
    num_classes: int | None = None,
    **probe_kwargs: Any,
) -> PixelProbe:
    """Fit a :class:`PixelProbe` from a few labels given in map coordinates.

    Args:
        das: one feature map ``(feature, y, x)`` or a list of them (e.g. the tiles of a scene); the labels must be in
            their CRS (no reprojection is done).
        points: labels, each one of
            * ``(x, y, class)``: the cell of the map containing the point (cell edges inclusive);
            * ``(geometry, class)`` with ``geometry`` a shapely Point / Polygon / MultiPolygon or a GeoJSON-like dict:
              a point as above, a polygon gives **every cell whose centre falls inside it** (even-odd rule, holes
              respected), over every map;
            * a GeoJSON Feature dict with ``properties["class"]``.
            A point labels one cell, in the first map that holds it; a cell labelled twice keeps both labels as two
            samples.
        num_classes: K (default: the largest class given + 1).
        **probe_kwargs: passed to :class:`PixelProbe` (``C``, ``nan``, ``max_pixels``, ``seed``...).

    Returns:
        the fitted :class:`PixelProbe`.

    Raises:
        ExtentMismatchError: labels outside every feature map (the message lists them and the maps' extents).
        ProbeError: no label, or the labels hold one class only.
        NonFiniteInputError: a labelled cell is masked (NaN features; ``nan="drop"`` drops it instead).
        InputShapeError: a label item in none of the forms above, or a class >= ``num_classes``.
    """
    maps = feature_maps(das, "fit_from_points")
    parsed = parse_labels(points)
    if not parsed:
        raise ProbeError("fit_from_points got no label; give labels of at least two classes")
    given = sorted({c for _, c, _ in parsed})
    if len(given) < 2:
        raise ProbeError(
            f"the {len(parsed)} label(s) given to fit_from_points hold only class {given[0]}; a probe needs labels "
            f"of at least two classes to tell them apart. Add points or polygons of another class, e.g. "
            f"(x, y, {1 if given[0] == 0 else 0})"
        )
    top = given[-1]
    k = num_classes if num_classes is not None else top + 1
    probe = PixelProbe(k, **probe_kwargs)
    if top >= k:
        raise InputShapeError(f"a label has class {top} but num_classes={k}")

    Xs: list[np.ndarray] = []
    ys: list[int] = []
    outside: list[str] = []
    matrices = [cell_matrix(da, f"feature map #{i}") for i, da in enumerate(maps)]  # (h*w, D), valid (h*w,)
    for geom, cls, desc in parsed:
        hit = 0
        for mi, (da, (X, valid)) in enumerate(zip(maps, matrices)):
            cells = geometry_cells(da, geom)
            if cells.size == 0:
                continue
            ok = valid[cells]
            if probe.nan == "raise" and not ok.all():
                bad = cells[~ok]
                raise NonFiniteInputError(
                    f"label {desc} falls on {bad.size} masked cell(s) (NaN features) of feature map {mi}, e.g. at "
                    f"{describe_cells(da, bad, 1)}; expected finite features. Move the label, fill the gaps, or pass "
                    "nan='drop'."
                )
            hit += int(cells.size)
            Xs.append(X[cells[ok]])
            ys.extend([cls] * int(ok.sum()))
            if geom["type"] == "Point":
                break  # a point labels one cell, in the first map that holds it
        if hit == 0:
            outside.append(desc)
    if outside:
        extents = "; ".join(
            f"map {i}: x {b[0]:.10g}..{b[2]:.10g}, y {b[1]:.10g}..{b[3]:.10g}"
            for i, b in enumerate(bounds(d) for d in maps)
        )
        crs = maps[0].rio.crs
        raise ExtentMismatchError(
            f"{len(outside)} label(s) fall outside every feature map (or a polygon holds no cell centre): "
            f"{', '.join(outside[:10])}{' ...' if len(outside) > 10 else ''}. The feature maps cover {extents}"
            f"{'' if crs is None else f' (CRS {crs})'}. Give labels in the maps' CRS and inside their extent."
        )
    X = np.concatenate(Xs) if Xs else np.zeros((0, maps[0].sizes["feature"]))
    return probe.fit_pixels(X, np.asarray(ys, dtype=np.int64))
