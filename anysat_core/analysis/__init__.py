"""Evaluation and exploration of AnySat outputs (numpy/xarray/scikit-learn only, no torch needed).

* :mod:`anysat_core.analysis.metrics`: the metrics the paper reports (definitions, which call gives which number).
* :mod:`anysat_core.analysis.grid`: checking feature maps ``(feature, y, x)``, their cells, results on their grid and
  the NaN rule every tool follows (NaN marks a masked cell, an infinite value raises).
* :mod:`anysat_core.analysis.pca`: false-colour RGB of feature maps (:class:`PCARGB`).
* :mod:`anysat_core.analysis.similarity`: cosine-similarity maps, top-k, thresholds, refinement, map agreement.
* :mod:`anysat_core.analysis.clustering`: k-means segmentation with cluster ids shared across tiles.
* :mod:`anysat_core.analysis.labels`: ground-truth label maps, points and polygons placed on feature grids.
* :mod:`anysat_core.analysis.probes`: linear probes (tile, pixel, few labels) and label-efficiency curves.

Class maps the tools predict are named ``prediction`` (``PixelProbe.predict_map``, ``kmeans_map``), with
``confidence`` for the probability where there is one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from anysat_core.analysis import metrics
from anysat_core.analysis.metrics import *  # numpy only: the metrics load with the package

if TYPE_CHECKING:
    from anysat_core.analysis.clustering import kmeans_map, predict_map
    from anysat_core.analysis.labels import labels_to_dataarray
    from anysat_core.analysis.pca import PCARGB
    from anysat_core.analysis.probes import PixelProbe, TileProbe, fit_from_points, label_efficiency
    from anysat_core.analysis.similarity import (
        cosine_similarity_map,
        difference_map,
        refine,
        similarity_to_query,
        threshold,
        top_k,
        vector_at,
    )

# Map tools need xarray/pandas/rioxarray (the "data" extra); they load on first use so that the metrics stay
# importable with numpy alone.
_LAZY = {
    "PCARGB": "pca",
    "cosine_similarity_map": "similarity",
    "difference_map": "similarity",
    "refine": "similarity",
    "similarity_to_query": "similarity",
    "threshold": "similarity",
    "top_k": "similarity",
    "vector_at": "similarity",
    "kmeans_map": "clustering",
    "predict_map": "clustering",
    "TileProbe": "probes",
    "PixelProbe": "probes",
    "fit_from_points": "probes",
    "label_efficiency": "probes",
    "labels_to_dataarray": "labels",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"anysat_core.analysis.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anysat_core.analysis' has no attribute {name!r}")


__all__ = [
    "PCARGB",
    "PixelProbe",
    "TileProbe",
    "cosine_similarity_map",
    "difference_map",
    "fit_from_points",
    "kmeans_map",
    "label_efficiency",
    "labels_to_dataarray",
    "predict_map",
    "refine",
    "similarity_to_query",
    "threshold",
    "top_k",
    "vector_at",
]
__all__ += metrics.__all__


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
