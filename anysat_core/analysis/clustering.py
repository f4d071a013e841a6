"""K-means segmentation of feature maps, with cluster ids shared across tiles.

::

    prediction, model = kmeans_map(da, k=6, seed=0)        # DataArray (y, x) int32, -1 on masked cells
    predictions, model = kmeans_map([da1, da2], k=6)       # one fit on the pooled cells: same ids in every tile
    more = predict_map(model, da3)                         # a new tile labelled with the same clusters

Features are L2-normalised before clustering by default (``normalize=True``), so clusters group cells by the
direction of their feature vectors, the geometry of :mod:`~anysat_core.analysis.similarity`; pass
``normalize=False`` for plain Euclidean k-means.  The fit uses scikit-learn's :class:`~sklearn.cluster.KMeans`
(k-means++, ``n_init`` restarts, ``random_state=seed``) on at most ``max_samples`` pooled cells drawn
deterministically with ``seed``; every cell is then labelled by its nearest centre.  Same data and seed, same
cluster ids.  Masked cells (a NaN feature, see :mod:`~anysat_core.analysis.grid`) get ``-1``.

This module imports numpy, xarray and scikit-learn only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from anysat_core.analysis.grid import cell_matrix, check_number, feature_map, feature_maps, grid_like, pooled_sample
from anysat_core.errors import InputShapeError

if TYPE_CHECKING:
    from sklearn.cluster import KMeans

__all__ = ["kmeans_map", "predict_map"]


def _prepare(X: np.ndarray, normalize: bool) -> np.ndarray:
    if not normalize:
        return X
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def predict_map(model: KMeans, da: xr.DataArray) -> xr.DataArray:
    """Label every cell of a feature map with the nearest centre of a model fitted by :func:`kmeans_map`.

    Args:
        model: the KMeans returned by :func:`kmeans_map` (it remembers ``normalize`` as ``anysat_normalize``).
        da: DataArray ``(feature, y, x)`` with the D fitted on.

    Returns:
        int32 DataArray ``(y, x)`` named ``prediction``: cluster ids ``0 .. k-1``, ``-1`` on masked (NaN) cells;
        coordinates, CRS and attributes of ``da`` plus ``analysis``, ``k``, ``seed``, ``normalize``.

    Raises:
        InputShapeError: wrong dims, or a feature size other than the fitted one.
    """
    da = feature_map(da)
    D = da.sizes["feature"]
    fitted = model.cluster_centers_.shape[1]
    if D != fitted:
        raise InputShapeError(
            f"the feature map has {D} features but the k-means model was fitted on {fitted}; use maps of the same "
            "model (same width D)"
        )
    normalize = bool(getattr(model, "anysat_normalize", True))
    X, valid = cell_matrix(da)
    prediction = np.full(X.shape[0], -1, dtype=np.int32)
    if valid.any():
        prediction[valid] = model.predict(_prepare(X[valid], normalize).astype(model.cluster_centers_.dtype))
    attrs = {
        "analysis": "kmeans",
        "k": str(model.n_clusters),
        "seed": str(model.random_state),
        "normalize": str(normalize),
    }
    return grid_like(prediction.reshape(da.sizes["y"], da.sizes["x"]), da, "prediction", attrs)


def kmeans_map(
    data: xr.DataArray | Sequence[xr.DataArray],
    k: int,
    *,
    seed: int = 0,
    normalize: bool = True,
    max_samples: int = 100_000,
    n_init: int = 4,
) -> tuple[xr.DataArray | list[xr.DataArray], KMeans]:
    """Cluster the cells of one feature map, or of several with one shared set of clusters.

    Args:
        data: a DataArray ``(feature, y, x)`` or a list of them (same D): fitted once on the pooled cells, so a
            cluster id means the same thing in every map.
        k: number of clusters (at most the number of valid cells fitted on).
        seed: seeds the subsampling and k-means.
        normalize: cluster unit-length feature vectors (cosine geometry) instead of raw ones.
        max_samples: at most this many pooled cells are used to fit.
        n_init: k-means++ restarts (the best inertia is kept).

    Returns:
        ``(prediction, model)``: ``prediction`` is an int32 DataArray ``(y, x)`` (see :func:`predict_map`) for one input
        map, or a list of them in input order for a list; ``model`` is the fitted scikit-learn ``KMeans`` (apply it
        to other maps with :func:`predict_map`).

    Raises:
        InputShapeError: wrong dims, maps of different D, ``k`` not a positive integer or above the number of valid
            cells.
        EmptyTileError: every cell is masked.
        NonFiniteInputError: infinite feature values.
    """
    check_number("k", k, whole=True, minimum=1)  # number of clusters
    check_number("n_init", n_init, whole=True, minimum=1)
    check_number("seed", seed, whole=True)
    single = isinstance(data, xr.DataArray)
    maps = feature_maps(data, "kmeans_map")
    X = pooled_sample(maps, max_samples, seed, "kmeans_map")
    n_unique = len(np.unique(X, axis=0))
    if k > n_unique:
        raise InputShapeError(
            f"k={k} clusters but the fit sample holds only {n_unique} distinct valid cell(s); lower k or give more "
            "(or larger) feature maps"
        )
    from sklearn.cluster import KMeans  # imported here: keeps `import anysat_core.analysis` light

    model = KMeans(n_clusters=int(k), n_init=int(n_init), random_state=int(seed)).fit(_prepare(X, normalize))
    model.anysat_normalize = bool(normalize)
    predictions = [predict_map(model, m) for m in maps]
    out: Any = predictions[0] if single else predictions
    return out, model
