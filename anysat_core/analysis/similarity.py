"""Cosine-similarity maps of feature maps: "where else does it look like this?".

::

    sim = cosine_similarity_map(da, (389_050.0, 5_351_350.0))   # similarity of every cell to the cell at (x, y)
    top_k(sim, 5)                                              # DataFrame x, y, similarity of the 5 best cells
    mask = threshold(sim, 0.8)                                  # boolean (y, x)
    score = refine(da, positives=[(x1, y1), (x2, y2)], negatives=[(x3, y3)])
    sims = similarity_to_query([da1, da2], vector_at(da1, x1, y1))   # one map per tile
    agree = difference_map(da_s2, da_s2_s1)                     # per-cell agreement of two maps of the same place

Feature maps are DataArrays ``(feature, y, x)`` (see :func:`anysat_core.features.extract_features`): ``x``/``y`` are
cell centres on a regular grid in the map's CRS.  Cells with a NaN feature are masked and give NaN similarities; an
infinite feature raises (the NaN rule of :mod:`~anysat_core.analysis.grid`).

**Queries.**  A *location* is a ``tuple`` ``(x, y)`` of two numbers in the map's coordinates: the cell whose centre is
nearest is used, and a point outside the map's extent (cell centres +- half a cell) raises
:class:`~anysat_core.errors.ExtentMismatchError`.  A list of such tuples gives several locations.  Anything else is
read as feature vectors: a numpy array ``(D,)`` or ``(n, D)``, or a DataArray with a ``feature`` dim (``(feature,)``,
``(n, feature)`` or a ``(feature, y, x)`` map whose valid cells are the examples).  Several examples are combined by
``reduce``: ``"mean"`` (default) compares with their prototype, the normalised mean of the unit vectors; ``"max"``
keeps, per cell, the best similarity to any example.

Cosine similarity is ``<u, v> / (|u| |v|)`` computed in float64 and clipped to ``[-1, 1]``; a cell is exactly 1 for a
query equal to its own vector (up to rounding, ``1 - 1e-12``).

This module imports numpy, pandas, xarray and scikit-learn only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from anysat_core.analysis.grid import bounds, cell_matrix, cell_sizes, feature_map, grid_like, locate
from anysat_core.errors import ExtentMismatchError, InputShapeError, MissingCRSError, NonFiniteInputError
from anysat_core.geo import nearest_cell

__all__ = [
    "cosine_similarity_map",
    "difference_map",
    "refine",
    "similarity_to_query",
    "threshold",
    "top_k",
    "vector_at",
]

Reduce = Literal["mean", "max"]


# ----------------------------------------------------------------------------------------------- locations
def _cell_of(da: xr.DataArray, x: float, y: float) -> tuple[int, int]:
    """Row and column of the cell of ``da`` containing map point ``(x, y)``.

    Raises:
        ExtentMismatchError: the point lies outside the map's extent.
    """
    rows, cols, inside = locate(da, x, y)
    if not inside[0]:
        xmin, ymin, xmax, ymax = bounds(da)
        crs = da.rio.crs
        raise ExtentMismatchError(
            f"query point (x={x:g}, y={y:g}) is outside the feature map, which covers x {xmin:g}..{xmax:g}, "
            f"y {ymin:g}..{ymax:g}{f' in {crs}' if crs else ''}; pass a point inside the map, in its coordinates"
        )
    return int(rows[0]), int(cols[0])


def _is_location(q: Any) -> bool:
    return isinstance(q, tuple) and len(q) == 2 and all(isinstance(v, Real) and not isinstance(v, bool) for v in q)


def _locations(arg: Any, name: str) -> list[tuple[float, float]]:
    """A location ``(x, y)`` or a sequence of them, as a list of float pairs."""
    if _is_location(arg):
        return [(float(arg[0]), float(arg[1]))]
    if isinstance(arg, Sequence) and not isinstance(arg, str) and all(_is_location(p) for p in arg):
        return [(float(p[0]), float(p[1])) for p in arg]
    raise InputShapeError(
        f"{name} is {arg!r}; expected a list of map locations as (x, y) tuples, e.g. [(389050.0, 5351350.0)]"
    )


def vector_at(da: xr.DataArray, x: float, y: float) -> np.ndarray:
    """Feature vector ``(D,)`` float64 of the cell of ``da`` containing map point ``(x, y)``.

    Raises:
        InputShapeError: ``da`` is not a ``(feature, y, x)`` map.
        ExtentMismatchError: the point is outside the map.
        NonFiniteInputError: that cell is masked (NaN features).
    """
    da = feature_map(da)
    i, j = _cell_of(da, float(x), float(y))
    v = np.asarray(da.values[:, i, j], dtype=np.float64)
    if not np.isfinite(v).all():
        raise NonFiniteInputError(
            f"the cell at (x={float(da['x'][j]):g}, y={float(da['y'][i]):g}) nearest to ({x:g}, {y:g}) is masked "
            "(its features are NaN); pick a location on a valid cell"
        )
    return v


# ----------------------------------------------------------------------------------------------- query helpers
def _query_vectors(da: xr.DataArray | None, query: Any, D: int) -> tuple[np.ndarray, str]:
    """Query as ``(n, D)`` float64 rows plus a short description; ``da`` resolves locations (None: vectors only)."""
    if _is_location(query) or (isinstance(query, (list, tuple)) and query and all(_is_location(p) for p in query)):
        if da is None:
            raise InputShapeError(
                "similarity_to_query takes feature vectors, not a location (x, y) (which tile would it be read "
                "from?); pass vector_at(feature_map, x, y)"
            )
        locs = _locations(query, "query")
        rows = np.stack([vector_at(da, x, y) for x, y in locs])
        return rows, "location " + ";".join(f"{x:g},{y:g}" for x, y in locs)
    if isinstance(query, xr.DataArray):
        if "feature" not in query.dims:
            raise InputShapeError(f"the query DataArray has dims {query.dims}; expected a 'feature' dim")
        if query.ndim == 3:
            X, valid = cell_matrix(feature_map(query, "query map"), "query map")
            rows = X[valid]
        elif query.ndim <= 2:
            other = [d for d in query.dims if d != "feature"]
            rows = np.asarray(query.transpose(*other, "feature").values, dtype=np.float64).reshape(
                -1, query.sizes["feature"]
            )
        else:
            raise InputShapeError(
                f"the query DataArray has dims {query.dims}; expected (feature,), (n, feature) or (feature, y, x)"
            )
        desc = "feature vectors"
    else:
        try:
            rows = np.asarray(query, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputShapeError(
                f"query {query!r} is neither a location (x, y) tuple nor numeric feature vector(s): {exc}"
            ) from None
        if rows.ndim not in (1, 2):
            raise InputShapeError(f"query array has shape {rows.shape}; expected a vector (D,) or vectors (n, D)")
        rows = rows.reshape(-1, rows.shape[-1]) if rows.size else rows.reshape(0, D)
        desc = "feature vectors"
    if rows.shape[0] == 0:
        raise InputShapeError("the query holds no feature vector (an empty array, or a map with every cell masked)")
    if rows.shape[1] != D:
        raise InputShapeError(
            f"the query vectors have {rows.shape[1]} features but the feature map has {D}; use vectors from the "
            "same model (same width D)"
        )
    if not np.isfinite(rows).all():
        raise NonFiniteInputError("the query vectors hold NaN or inf; pass finite feature vectors")
    if desc == "feature vectors":
        desc = f"{rows.shape[0]} feature vector(s)"
    return rows, desc


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero or non-finite rows become NaN."""
    n = np.linalg.norm(X, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n > 0) & np.isfinite(n), X / np.where(n > 0, n, 1.0), np.nan)


def _similarities(X: np.ndarray, Q: np.ndarray, reduce: str) -> np.ndarray:
    """Cosine similarity ``(N,)`` of rows ``X (N, D)`` to queries ``Q (n, D)`` combined by ``reduce``."""
    if reduce not in ("mean", "max"):
        raise InputShapeError(f"reduce={reduce!r}; expected 'mean' (prototype) or 'max' (best example)")
    Qn = _unit_rows(Q)
    if np.isnan(Qn).any():
        raise NonFiniteInputError("a query vector has zero length; cosine similarity to it is undefined")
    Xn = _unit_rows(X)
    if reduce == "mean":
        p = Qn.mean(axis=0)
        norm = np.linalg.norm(p)
        if not norm > 1e-12:
            raise NonFiniteInputError(
                "the query examples cancel out (their mean direction is zero); use reduce='max' or other examples"
            )
        s = Xn @ (p / norm)
    else:
        s = (Xn @ Qn.T).max(axis=1)
    return np.clip(s, -1.0, 1.0)


# ----------------------------------------------------------------------------------------------- public API
def cosine_similarity_map(da: xr.DataArray, query: Any, *, reduce: Reduce = "mean") -> xr.DataArray:
    """Cosine similarity of every cell of a feature map to a query.

    Args:
        da: DataArray ``(feature, y, x)``.
        query: a location ``(x, y)`` tuple, a list of them, or feature vector(s) (see the module docstring).
        reduce: how several query examples combine: ``"mean"`` (prototype) or ``"max"``.

    Returns:
        float32 DataArray ``(y, x)`` in ``[-1, 1]`` named ``cosine_similarity``, NaN on masked cells, with the
        coordinates, CRS and attributes of ``da`` plus ``analysis`` and ``query`` attributes.

    Raises:
        InputShapeError: wrong dims, a query of another width, or an unreadable query.
        ExtentMismatchError: a query location outside the map.
        NonFiniteInputError: a masked query cell, a zero or non-finite query vector, infinite features.
    """
    da = feature_map(da)
    D = da.sizes["feature"]
    Q, desc = _query_vectors(da, query, D)
    X, _ = cell_matrix(da)
    s = _similarities(X, Q, reduce).reshape(da.sizes["y"], da.sizes["x"]).astype(np.float32)
    return grid_like(s, da, "cosine_similarity", {"analysis": "cosine_similarity", "query": desc, "reduce": reduce})


def similarity_to_query(maps: Sequence[xr.DataArray], query: Any, *, reduce: Reduce = "mean") -> list[xr.DataArray]:
    """Cosine similarity of every cell of several feature maps (tiles) to the same query vector(s).

    Args:
        maps: DataArrays ``(feature, y, x)`` of one model (same D), e.g. the tiles of a scene.
        query: feature vector(s) (not a location: take one with :func:`vector_at`).
        reduce: ``"mean"`` or ``"max"`` for several query vectors.

    Returns:
        One ``(y, x)`` similarity map per input map, as :func:`cosine_similarity_map` returns.
    """
    if isinstance(maps, xr.DataArray):
        maps = [maps]
    maps = [feature_map(m, f"feature map #{i}") for i, m in enumerate(maps)]
    if not maps:
        raise InputShapeError("similarity_to_query got no feature map; pass a list of DataArrays (feature, y, x)")
    out = []
    for m in maps:
        Q, _ = _query_vectors(None, query, m.sizes["feature"])
        out.append(cosine_similarity_map(m, Q, reduce=reduce))
    return out


def _check_sim(sim: Any, fn: str) -> xr.DataArray:
    if not isinstance(sim, xr.DataArray) or set(sim.dims) != {"y", "x"}:
        got = f"dims {sim.dims}" if isinstance(sim, xr.DataArray) else f"a {type(sim).__name__}"
        raise InputShapeError(f"{fn} got {got}; expected a (y, x) DataArray such as cosine_similarity_map returns")
    return sim.transpose("y", "x")


def top_k(sim: xr.DataArray, k: int) -> pd.DataFrame:
    """The ``k`` cells of a ``(y, x)`` score map with the highest values (NaN cells skipped).

    Args:
        sim: ``(y, x)`` DataArray, e.g. from :func:`cosine_similarity_map` or :func:`refine`.
        k: number of cells (fewer rows come back when the map has fewer valid cells).

    Returns:
        DataFrame with columns ``x``, ``y`` (cell centres, map coordinates), ``similarity``, ``row``, ``col``
        (indices in ``sim``), sorted by decreasing similarity (ties in row-major order).

    Raises:
        InputShapeError: ``sim`` is not ``(y, x)`` or ``k`` is not a positive integer.
    """
    sim = _check_sim(sim, "top_k")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputShapeError(f"k={k!r}; expected a positive integer number of cells")
    v = np.asarray(sim.values, dtype=np.float64).ravel()
    idx = np.flatnonzero(~np.isnan(v))
    idx = idx[np.argsort(-v[idx], kind="stable")][: int(k)]
    rows, cols = np.unravel_index(idx, sim.shape)
    return pd.DataFrame(
        {
            "x": np.asarray(sim["x"].values)[cols],
            "y": np.asarray(sim["y"].values)[rows],
            "similarity": v[idx],
            "row": rows.astype(np.int64),
            "col": cols.astype(np.int64),
        }
    )


def threshold(sim: xr.DataArray, t: float) -> xr.DataArray:
    """Boolean ``(y, x)`` map of the cells with ``sim >= t`` (NaN cells are False); coords and CRS kept.

    Raises:
        InputShapeError: ``sim`` is not ``(y, x)`` or ``t`` is not a number.
    """
    sim = _check_sim(sim, "threshold")
    if isinstance(t, bool) or not isinstance(t, Real):
        raise InputShapeError(f"t={t!r}; expected a number, e.g. 0.8 for a cosine similarity")
    out = (sim >= float(t)).fillna(False).astype(bool)
    out.name = "similarity_mask"
    out.attrs = {**sim.attrs, "threshold": f"{float(t):g}"}
    return out


def refine(
    da: xr.DataArray,
    positives: Sequence[tuple[float, float]],
    negatives: Sequence[tuple[float, float]] = (),
    *,
    method: Literal["difference", "logistic"] = "difference",
) -> xr.DataArray:
    """Score every cell by how much it looks like the positive examples and not like the negative ones.

    Methods:
        ``"difference"`` (default): cosine similarity to the prototype of the positives (normalised mean of their
        unit vectors) minus the mean cosine similarity to each negative (0 without negatives).  Range ``[-2, 2]``
        (``[-1, 1]`` without negatives); a cell similar to the positives and unlike the negatives scores high.
        ``"logistic"``: a logistic regression (scikit-learn, L2, ``C=1``, balanced class weights) trained on the
        unit-length vectors of the positive (1) and negative (0) cells; the score is the probability of the
        positive class in ``[0, 1]``.  Needs at least one positive and one negative.  With few examples the
        regularisation keeps probabilities near 0.5; rank or threshold the scores rather than reading them as
        calibrated probabilities.

    Args:
        da: DataArray ``(feature, y, x)``.
        positives: locations ``(x, y)`` of example cells of the thing sought (at least one).
        negatives: locations ``(x, y)`` of counter-examples.
        method: ``"difference"`` or ``"logistic"``.

    Returns:
        float32 DataArray ``(y, x)`` named ``refined_similarity`` (NaN on masked cells) with the coordinates, CRS
        and attributes of ``da`` plus ``analysis``, ``method``, ``n_positives``, ``n_negatives``.

    Raises:
        InputShapeError: wrong dims, no positive, bad locations, ``"logistic"`` without negatives, unknown method.
        ExtentMismatchError: an example outside the map.
        NonFiniteInputError: an example on a masked cell.
    """
    da = feature_map(da)
    pos = _locations(positives, "positives")
    neg = _locations(negatives, "negatives") if len(negatives) else []
    if method not in ("difference", "logistic"):
        raise InputShapeError(f"method={method!r}; expected 'difference' or 'logistic'")
    P = np.stack([vector_at(da, x, y) for x, y in pos])
    N = np.stack([vector_at(da, x, y) for x, y in neg]) if neg else np.zeros((0, P.shape[1]))
    X, valid = cell_matrix(da)
    if method == "difference":
        score = _similarities(X, P, "mean")
        if len(N):
            score = score - (_unit_rows(X) @ _unit_rows(N).T).clip(-1.0, 1.0).mean(axis=1)
    else:
        if not len(N):
            raise InputShapeError("method='logistic' needs negatives as well as positives; pass negatives=[(x, y)]")
        from sklearn.linear_model import LogisticRegression

        train = _unit_rows(np.concatenate([P, N]))
        if np.isnan(train).any():
            raise NonFiniteInputError("an example cell has a zero feature vector; pick other examples")
        labels = np.r_[np.ones(len(P)), np.zeros(len(N))]
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(train, labels)
        score = np.full(X.shape[0], np.nan)
        Xn = _unit_rows(X[valid])
        ok = ~np.isnan(Xn).any(axis=1)
        part = np.full(Xn.shape[0], np.nan)
        part[ok] = clf.predict_proba(Xn[ok])[:, 1]
        score[valid] = part
    s = score.reshape(da.sizes["y"], da.sizes["x"]).astype(np.float32)
    attrs = {"analysis": "refine", "method": method, "n_positives": str(len(P)), "n_negatives": str(len(N))}
    return grid_like(s, da, "refined_similarity", attrs)


def difference_map(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """Per-cell cosine agreement of two feature maps of the same place (e.g. two modality sets or patch sizes).

    The maps are aligned by **map coordinates**, not by array index: the result lies on the finer grid of the two
    (smaller cell area; ``a``'s grid when equal), and each of its cells takes the vector of the other map's cell
    that contains its centre (nearest cell).  The value is the cosine similarity of the two vectors, in
    ``[-1, 1]``: 1 where both maps describe the cell the same way, lower where they disagree.  Both maps must come
    from the same model (the same feature space) for the agreement to mean anything.  Cells of the fine grid
    outside the other map's extent, or masked in either map, are NaN.

    Args:
        a, b: DataArrays ``(feature, y, x)`` with the same D and the same CRS.

    Returns:
        float32 DataArray ``(y, x)`` named ``feature_agreement`` on the finer grid (its coordinates, CRS and
        attributes) plus ``analysis`` and ``resampled`` (``"a"``, ``"b"`` or ``"none"``: which map was resampled).

    Raises:
        InputShapeError: wrong dims or different feature sizes.
        MissingCRSError: a map has no CRS (coordinates cannot be trusted to match).
        ExtentMismatchError: the CRSs differ, or the maps do not overlap.
    """
    a, b = feature_map(a, "first feature map"), feature_map(b, "second feature map")
    if a.sizes["feature"] != b.sizes["feature"]:
        raise InputShapeError(
            f"the maps have {a.sizes['feature']} and {b.sizes['feature']} features; compare maps of the same model"
        )
    ca, cb = a.rio.crs, b.rio.crs
    if ca is None or cb is None:
        which = (
            "both maps have"
            if ca is None and cb is None
            else ("the first map has" if ca is None else "the second map has")
        )
        raise MissingCRSError(
            f"{which} no CRS; difference_map aligns maps by map coordinates and needs both CRSs. Set them with "
            "da.rio.write_crs('EPSG:xxxx')"
        )
    if ca != cb:
        raise ExtentMismatchError(
            f"the maps are in different CRSs ({ca} and {cb}); reproject one onto the other's CRS first"
        )
    (adx, ady), (bdx, bdy) = cell_sizes(a), cell_sizes(b)
    b_is_finer = bdx * bdy < adx * ady
    fine, coarse = (b, a) if b_is_finer else (a, b)
    cdx, cdy = cell_sizes(coarse)
    fx, fy = np.asarray(fine["x"].values, np.float64), np.asarray(fine["y"].values, np.float64)
    cx, cy = np.asarray(coarse["x"].values, np.float64), np.asarray(coarse["y"].values, np.float64)
    j, in_x = nearest_cell(cx, cdx, fx)  # the coarse cell holding each fine cell centre
    i, in_y = nearest_cell(cy, cdy, fy)
    if not in_x.any() or not in_y.any():
        fa, fb = bounds(a), bounds(b)
        raise ExtentMismatchError(
            f"the maps do not overlap: the first covers x {fa[0]:g}..{fa[2]:g}, y {fa[1]:g}..{fa[3]:g}, the second "
            f"x {fb[0]:g}..{fb[2]:g}, y {fb[1]:g}..{fb[3]:g} (in {ca}); compare feature maps of the same place"
        )
    Xf, _ = cell_matrix(fine)
    Xc, _ = cell_matrix(coarse)
    Xc = Xc[(i[:, None] * coarse.sizes["x"] + j[None, :]).ravel()]  # (hf * wf, D): coarse vectors on the fine grid
    agree = np.clip(np.einsum("nd,nd->n", _unit_rows(Xf), _unit_rows(Xc)), -1.0, 1.0)
    inside = (in_y[:, None] & in_x[None, :]).ravel()
    agree[~inside] = np.nan
    s = agree.reshape(fine.sizes["y"], fine.sizes["x"]).astype(np.float32)
    same = fx.shape == cx.shape and fy.shape == cy.shape and np.allclose(fx, cx) and np.allclose(fy, cy)
    resampled = "none" if same else ("a" if b_is_finer else "b")
    return grid_like(s, fine, "feature_agreement", {"analysis": "difference_map", "resampled": resampled})
