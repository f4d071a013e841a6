"""Linear probes on frozen AnySat features (scikit-learn logistic regression on standardised features).

* :class:`TileProbe` (:mod:`.tile`): one feature vector per tile ``X (N, D)`` to a class (``task="multiclass"``,
  ``y (N,)``) or a set of classes (``task="multilabel"``, ``y (N, K)`` multi-hot); :meth:`TileProbe.cross_validate`
  reports the paper's metrics as mean / std over deterministic folds.
* :class:`PixelProbe` (:mod:`.pixel`): feature maps ``(feature, y, x)`` to a class per cell;
  :meth:`PixelProbe.predict_map` returns a georeferenced ``xr.Dataset`` with ``prediction`` and ``confidence``.
  Label maps are put on the feature grid as :mod:`anysat_core.analysis.labels` describes.
* :func:`fit_from_points` (:mod:`.points`): a :class:`PixelProbe` from a few labels (points or polygons in map
  coordinates).
* :func:`label_efficiency` (:mod:`.efficiency`): a tile probe's score against the number of training labels.

Every metric comes from :mod:`anysat_core.analysis.metrics` (overall accuracy in **percent**, IoU and F1 as
**fractions**).  Bad input raises an :class:`~anysat_core.errors.AnySatError` subclass (all in
:mod:`anysat_core.errors`): :class:`~anysat_core.errors.ProbeError` for a problem no probe can learn (one class only,
too few labels, not fitted), :class:`~anysat_core.errors.InputShapeError` for mismatched shapes,
:class:`~anysat_core.errors.NonFiniteInputError` for NaN / infinite features (masked cells of a map are dropped
instead with ``nan="drop"``) and :class:`~anysat_core.errors.ExtentMismatchError` for labels outside every feature map.
"""

from __future__ import annotations

from anysat_core.analysis.probes.efficiency import label_efficiency
from anysat_core.analysis.probes.pixel import PixelProbe
from anysat_core.analysis.probes.points import fit_from_points
from anysat_core.analysis.probes.tile import TileProbe

__all__ = ["PixelProbe", "TileProbe", "fit_from_points", "label_efficiency"]
