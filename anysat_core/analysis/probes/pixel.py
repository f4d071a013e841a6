"""Pixel probe: logistic regression from each cell of a ``(feature, y, x)`` feature map to a class.

Feature maps are ``extract_features(..., output="dense" or "patch")`` DataArrays; label maps are put on their grid
by :func:`anysat_core.analysis.labels.labels_on_grid` (by coordinates for a DataArray with ``x``/``y``, by shape for a
plain array).  Masked cells (a NaN feature, see :mod:`~anysat_core.analysis.grid`) raise
:class:`~anysat_core.errors.NonFiniteInputError` by default; with ``nan="drop"`` they are neither fitted nor
evaluated and predicted as ``-1``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xarray as xr
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from anysat_core.analysis.grid import cell_matrix, check_number, describe_cells, feature_map, feature_maps, grid_dataset
from anysat_core.analysis.labels import MISSING, labels_on_grid
from anysat_core.analysis.metrics import confusion_matrix, miou, overall_accuracy, per_class_iou
from anysat_core.analysis.probes._checks import (
    as_class_indices,
    as_float_2d,
    check_finite_rows,
    fit_quietly,
    require_two_classes,
)
from anysat_core.errors import InputShapeError, NonFiniteInputError, ProbeError

__all__ = ["NanPolicy", "PixelProbe"]

NanPolicy = Literal["raise", "drop"]


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


class PixelProbe:
    """Logistic-regression probe mapping each cell's feature vector of a ``(feature, y, x)`` map to a class.

    Args:
        num_classes: K; labels are 0..K-1 (``ignore_index`` aside).
        ignore_index: label value that is neither fitted nor counted by :meth:`evaluate` (e.g. -1 or a void class).
        C: inverse L2 regularisation strength.
        max_pixels: at most this many labelled cells are used to fit (drawn without replacement with ``seed``, so the
            same inputs always give the same probe); bounds memory and time.
        seed: subsampling seed.
        nan: ``"raise"`` (default): masked cells (NaN features) raise NonFiniteInputError saying how many cells and
            where; ``"drop"``: such cells are not fitted nor evaluated, and :meth:`predict_map` gives them
            prediction -1 and confidence NaN.  An infinite feature always raises.
        max_iter: solver iterations.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        C: float = 1.0,
        max_pixels: int = 50_000,
        seed: int = 0,
        nan: NanPolicy = "raise",
        max_iter: int = 2000,
    ) -> None:
        check_number("num_classes", num_classes, whole=True, minimum=2, error=ProbeError)
        if nan not in ("raise", "drop"):
            raise ProbeError(f"nan={nan!r}; expected 'raise' or 'drop'")
        check_number("C", C, positive=True, error=ProbeError)
        check_number("max_pixels", max_pixels, whole=True, minimum=2, error=ProbeError)
        check_number("seed", seed, whole=True, error=ProbeError)
        check_number("max_iter", max_iter, whole=True, minimum=1, error=ProbeError)
        self.num_classes, self.ignore_index, self.C = int(num_classes), ignore_index, float(C)
        self.max_pixels, self.seed, self.nan, self.max_iter = int(max_pixels), int(seed), nan, int(max_iter)
        self.model_: Pipeline | None = None
        self.n_fitted_: int = 0

    # ------------------------------------------------------------------ features
    def _cells(self, da: xr.DataArray, name: str = "feature map") -> tuple[np.ndarray, np.ndarray]:
        """Cells of a checked ``(feature, y, x)`` map: ``X (h*w, D)`` and the flags ``(h*w,)`` of the usable ones.

        Raises:
            NonFiniteInputError: masked cells under ``nan="raise"`` (count and first coordinates), infinite values.
        """
        X, valid = cell_matrix(da, name)
        if not valid.all() and self.nan == "raise":
            bad = np.flatnonzero(~valid)
            raise NonFiniteInputError(
                f"{name} has NaN features in {bad.size} of {len(valid)} cells, e.g. at {describe_cells(da, bad)}; "
                "expected finite features. Fill the input gaps, or pass nan='drop' to leave those cells out."
            )
        return X, valid

    def _pixels(self, das: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n, D)`` and labels ``(n,)`` of the labelled, usable cells of every map."""
        maps = feature_maps(_as_list(das), "PixelProbe")
        labels_l = _as_list(labels)
        if len(maps) != len(labels_l):
            raise InputShapeError(
                f"got {len(maps)} feature map(s) and {len(labels_l)} label map(s); expected one label map per "
                "feature map"
            )
        Xs, ys = [], []
        for i, (da, lab) in enumerate(zip(maps, labels_l)):
            X, ok = self._cells(da, f"feature map {i}")
            y = labels_on_grid(da, lab, self.num_classes, self.ignore_index, f"label map {i}")
            keep = (y != MISSING) & ok
            Xs.append(X[keep])
            ys.append(y[keep])
        return np.concatenate(Xs), np.concatenate(ys)

    # ------------------------------------------------------------------ fit / predict
    def fit_pixels(self, X: Any, y: Any) -> PixelProbe:
        """Fit on per-cell features ``X (n, D)`` and labels ``y (n,)`` directly (subsampled to ``max_pixels``).

        Rows with a NaN are masked cells (refused under ``nan="raise"``, dropped under ``"drop"``); inf raises.
        """
        Xa = as_float_2d(X)
        ya = as_class_indices(y, Xa.shape[0])
        ok = ~np.isnan(Xa).any(1)
        if self.nan == "raise" or np.isinf(Xa).any():
            check_finite_rows(Xa)
        Xa, ya = Xa[ok], ya[ok]
        if ya.size and ya.max() >= self.num_classes:
            raise InputShapeError(f"labels go up to {int(ya.max())} but num_classes={self.num_classes}")
        require_two_classes(ya, "the labelled cells")
        if len(ya) > self.max_pixels:
            idx = np.sort(np.random.default_rng(self.seed).choice(len(ya), self.max_pixels, replace=False))
            Xa, ya = Xa[idx], ya[idx]
            require_two_classes(ya, f"the {self.max_pixels} subsampled cells")
        est = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))
        self.model_ = fit_quietly(est, Xa, ya)
        self.n_fitted_ = len(ya)
        return self

    def fit(self, das: Any, labels: Any) -> PixelProbe:
        """Fit on feature map(s) ``(feature, y, x)`` and their label map(s).

        Label maps are put on the feature grid as :mod:`anysat_core.analysis.labels` describes.

        Args:
            das: one DataArray or a list of them (e.g. ``extract_features(..., output="dense")`` of a batch).
            labels: one label map per feature map: DataArray ``(y, x)`` with coordinates, or array / tensor.

        Raises:
            InputShapeError: not a feature map, mismatched counts / shapes, labels outside 0..K-1.
            NonFiniteInputError: NaN features with ``nan="raise"``, infinite features.
            ProbeError: the labelled cells hold one class only.
        """
        X, y = self._pixels(das, labels)
        return self.fit_pixels(X, y)

    def _fitted(self) -> Pipeline:
        if self.model_ is None:
            raise ProbeError("this PixelProbe is not fitted yet; call fit(...) or use fit_from_points(...)")
        return self.model_

    @property
    def classes_(self) -> np.ndarray:
        """Class ids ``(K,)`` of the columns of :meth:`predict_proba` (scikit-learn's classifier protocol)."""
        self._fitted()
        return np.arange(self.num_classes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, K)`` for finite rows of ``X (n, D)`` (all K columns, 0 for unseen classes)."""
        model = self._fitted()
        n_in = model[0].n_features_in_
        if X.shape[1] != n_in:
            raise InputShapeError(f"the features have {X.shape[1]} channels; the probe was fitted on {n_in}")
        out = np.zeros((X.shape[0], self.num_classes))
        if X.shape[0]:
            out[:, model[-1].classes_] = model.predict_proba(X)
        return out

    def predict_map(self, da: xr.DataArray) -> xr.Dataset:
        """Classify every cell of one feature map.

        Returns:
            Dataset with ``prediction`` ``(y, x)`` int64 (argmax class; -1 for dropped masked cells) and
            ``confidence`` ``(y, x)`` float32 (the max probability, NaN for dropped cells), on the feature map's
            ``x``/``y`` coordinates, with its CRS / transform (``spatial_ref``) when it has one, its string
            attributes and ``analysis="pixel_probe"``.
        """
        self._fitted()
        da = feature_map(da)
        X, ok = self._cells(da)
        h, w = da.sizes["y"], da.sizes["x"]
        prediction = np.full(h * w, -1, dtype=np.int64)
        confidence = np.full(h * w, np.nan, dtype=np.float32)
        p = self.predict_proba(X[ok])
        prediction[ok] = p.argmax(1)
        confidence[ok] = p.max(1)
        variables: dict[str, np.ndarray] = {
            "prediction": prediction.reshape(h, w),
            "confidence": confidence.reshape(h, w),
        }
        return grid_dataset(variables, da, {"analysis": "pixel_probe"})

    def evaluate(self, das: Any, labels: Any) -> dict[str, Any]:
        """Metrics of the probe on feature map(s) and label map(s) (labels put on the feature grid as for fit).

        Returns:
            ``OA`` (percent), ``mIoU`` (fraction, nan-mean over classes present in truth or prediction),
            ``per_class_IoU`` ``(K,)`` (NaN for absent classes), ``confusion_matrix`` ``(K, K)``, ``n_pixels``.
        """
        self._fitted()
        X, y = self._pixels(das, labels)
        if y.size == 0:
            raise ProbeError("no labelled cell to evaluate (all labels ignored or outside the feature maps)")
        pred = self.predict_proba(X).argmax(1)
        cm = confusion_matrix(y, pred, self.num_classes)
        return {
            "OA": overall_accuracy(cm),
            "mIoU": miou(cm),
            "per_class_IoU": per_class_iou(cm),
            "confusion_matrix": cm,
            "n_pixels": int(y.size),
        }
