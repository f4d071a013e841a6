"""Linear probes on frozen AnySat features (scikit-learn logistic regression on standardised features).

Three probes, all numpy / xarray / scikit-learn (no torch import):

* :class:`TileProbe`: one feature vector per tile ``X (N, D)`` (``extract_features(..., output="tile")`` or
  :func:`anysat_core.embeddings.embed_dataset`) to a class (``task="multiclass"``, ``y (N,)`` class indices) or a
  set of classes (``task="multilabel"``, ``y (N, K)`` multi-hot).  :meth:`TileProbe.cross_validate` reports the
  paper's metrics as mean / std over deterministic (stratified where possible) folds.
* :class:`PixelProbe`: dense or patch feature maps ``(feature, y, x)`` to a class per cell;
  :meth:`PixelProbe.predict_map` returns a georeferenced ``xr.Dataset`` with ``label`` and ``confidence``.
* :func:`fit_from_points`: a :class:`PixelProbe` from a few user labels (points or polygons in map coordinates).

:func:`label_efficiency` measures a tile probe's score against the number of training labels.

Every metric comes from :mod:`anysat_core.analysis.metrics` (overall accuracy in **percent**, IoU and F1 as
**fractions**).  Bad input raises an :class:`~anysat_core.errors.AnySatError` subclass:
:class:`ProbeError` (defined here) for a problem no probe can learn (one class only, too few labels),
:class:`~anysat_core.errors.InputShapeError` for mismatched shapes,
:class:`~anysat_core.errors.NonFiniteInputError` for NaN / infinite features (unless ``nan="drop"``) and
:class:`~anysat_core.errors.ExtentMismatchError` for labels outside every feature map.

Labels and feature grids (:class:`PixelProbe`).  A label map given as a DataArray ``(y, x)`` with coordinates is
put on the feature grid by coordinates:

* label pixels **finer than or as fine as** the feature cells: **majority vote** of the label pixels whose centres
  fall inside each feature cell (``ignore_index`` pixels do not vote; ties go to the smaller class index);
* label pixels **coarser** than the feature cells: **nearest** label pixel centre to each feature cell centre;
* feature cells that no label pixel covers (outside the label extent) are left out (not counted, not fitted).

A plain array (or tensor) label map has no coordinates, so it is taken to cover **the same extent** as the feature
map: an ``(h, w)`` array is used as is, an ``(h*r, w*r)`` array is reduced by majority over ``r x r`` blocks and an
``(h/r, w/r)`` array is repeated (nearest).  Other shapes raise :class:`~anysat_core.errors.InputShapeError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from anysat_core.analysis.metrics import (
    confusion_matrix,
    miou,
    multiclass_f1,
    multilabel_f1,
    overall_accuracy,
    per_class_iou,
)
from anysat_core.errors import ExtentMismatchError, InputShapeError, NonFiniteInputError, ProbeError

__all__ = [
    "PixelProbe",
    "ProbeError",
    "TileProbe",
    "fit_from_points",
    "label_efficiency",
    "labels_to_dataarray",
]

Task = Literal["multiclass", "multilabel"]
NanPolicy = Literal["raise", "drop"]


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------


def _as_float_2d(X: Any, name: str = "X") -> np.ndarray:
    """``X`` as a float64 ``(N, D)`` array (a tile-features DataArray ``(sample, feature)`` works too)."""
    if isinstance(X, xr.DataArray) and set(X.dims) == {"sample", "feature"}:
        X = X.transpose("sample", "feature").values
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputShapeError(
            f"{name} could not be read as a float array ({type(X).__name__}: {exc}); expected an (N, D) array of "
            "tile features, e.g. extract_features(..., output='tile').values"
        ) from exc
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputShapeError(
            f"{name} has shape {arr.shape}; expected a non-empty (N samples, D features) array (for feature maps "
            "(feature, y, x) use PixelProbe)"
        )
    return arr


def _check_finite_rows(X: np.ndarray, name: str = "X") -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise NonFiniteInputError(
            f"{name} has NaN or infinite values in {int(bad.sum())} of {len(X)} row(s) (rows "
            f"{rows[:10].tolist()}{' ...' if rows.size > 10 else ''}); expected finite features. Drop those samples "
            "or fill the gaps in the input before extracting features."
        )


def _as_class_indices(y: Any, n: int | None, name: str = "y") -> np.ndarray:
    """Integer class labels ``(N,)``; whole-number floats are accepted, others refused."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise InputShapeError(f"{name} could not be read as an array ({exc}); expected (N,) class indices") from exc
    if arr.ndim != 1:
        raise InputShapeError(
            f"{name} has shape {arr.shape}; expected (N,) integer class indices for task='multiclass' "
            "(multi-hot (N, K) targets need task='multilabel')"
        )
    if n is not None and arr.shape[0] != n:
        raise InputShapeError(f"{name} has {arr.shape[0]} labels but X has {n} rows; expected one label per row")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise InputShapeError(f"{name} holds non-integer values; expected class indices 0..K-1")
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputShapeError(f"{name} has dtype {arr.dtype}; expected integer class indices")
    if arr.size and arr.min() < 0:
        raise InputShapeError(f"{name} has negative class indices ({int(arr.min())}); expected 0..K-1")
    return arr.astype(np.int64)


def _as_multihot(y: Any, n: int, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise InputShapeError(
            f"{name} has shape {arr.shape}; expected (N={n}, K) multi-hot targets for task='multilabel'"
        )
    if not np.isin(arr, (0, 1)).all():
        raise InputShapeError(f"{name} must hold 0/1 values for task='multilabel'")
    return arr.astype(np.int64)


def _require_two_classes(y: np.ndarray, what: str) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        only = f"class {int(classes[0])} ({int(counts[0])} label(s))" if classes.size else "no class at all"
        raise ProbeError(
            f"{what} holds {only}; a classifier needs labels of at least two classes. Add labels of another class."
        )


def _fit_quietly(est: Any, X: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*Label not .* is present in all training examples.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        return est.fit(X, y)


def _stats(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std())


# ----------------------------------------------------------------------------------------------------------
# tile probe
# ----------------------------------------------------------------------------------------------------------


class TileProbe:
    """Logistic-regression probe on one feature vector per tile (standardised features).

    Args:
        task: ``"multiclass"`` (``y`` ``(N,)`` class indices, one softmax model) or ``"multilabel"`` (``y`` ``(N, K)``
            multi-hot, one binary model per class: :class:`~sklearn.multiclass.OneVsRestClassifier`; a class that is
            constant in the training set gets a constant prediction).
        C: inverse L2 regularisation strength of :class:`~sklearn.linear_model.LogisticRegression`.
        cv: number of folds of :meth:`cross_validate` (reduced to the smallest class count when stratifying).
        seed: seed of the fold shuffling (the solver is deterministic).
        num_classes: K for ``multiclass`` (default ``max(y) + 1`` at fit time); probabilities and confusion
            matrices have K columns even when a class is absent from the training labels.
        max_iter: solver iterations.
    """

    def __init__(
        self,
        task: Task = "multiclass",
        C: float = 1.0,
        cv: int = 5,
        seed: int = 0,
        num_classes: int | None = None,
        max_iter: int = 2000,
    ) -> None:
        if task not in ("multiclass", "multilabel"):
            raise ProbeError(f"task={task!r}; expected 'multiclass' or 'multilabel'")
        if not (isinstance(cv, (int, np.integer)) and cv >= 2):
            raise ProbeError(f"cv={cv!r}; expected an int >= 2 (number of folds)")
        if not (isinstance(C, (int, float)) and C > 0):
            raise ProbeError(f"C={C!r}; expected a positive number")
        self.task, self.C, self.cv, self.seed = task, float(C), int(cv), int(seed)
        self.num_classes = num_classes
        self.max_iter = int(max_iter)
        self.model_: Pipeline | None = None
        self.num_classes_: int | None = None

    # ------------------------------------------------------------------ fitting
    def _check(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        Xa = _as_float_2d(X)
        _check_finite_rows(Xa)
        if self.task == "multiclass":
            ya = _as_class_indices(y, Xa.shape[0])
            k = self.num_classes if self.num_classes is not None else int(ya.max()) + 1
            if ya.max() >= k:
                raise InputShapeError(f"y has class {int(ya.max())} but num_classes={k}; expected 0..{k - 1}")
            _require_two_classes(ya, "y")
        else:
            ya = _as_multihot(y, Xa.shape[0])
            if not ((ya.sum(0) > 0) & (ya.sum(0) < len(ya))).any():
                raise ProbeError(
                    "every label column of y is constant (always 0 or always 1); a multilabel probe needs at least one "
                    "class that is present in some tiles and absent in others"
                )
        return Xa, ya

    def _estimator(self) -> Pipeline:
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter)
        if self.task == "multilabel":
            return make_pipeline(StandardScaler(), OneVsRestClassifier(lr))
        return make_pipeline(StandardScaler(), lr)

    def fit(self, X: Any, y: Any) -> TileProbe:
        """Fit on ``X`` ``(N, D)`` and ``y`` (``(N,)`` class indices or ``(N, K)`` multi-hot). Returns ``self``.

        Raises:
            InputShapeError: shapes or label values do not fit the task.
            NonFiniteInputError: NaN / infinite features (the message gives the rows).
            ProbeError: one class only.
        """
        Xa, ya = self._check(X, y)
        self.num_classes_ = (
            (self.num_classes if self.num_classes is not None else int(ya.max()) + 1)
            if self.task == "multiclass"
            else ya.shape[1]
        )
        self.model_ = _fit_quietly(self._estimator(), Xa, ya)
        return self

    def _fitted(self) -> Pipeline:
        if self.model_ is None:
            raise ProbeError("this TileProbe is not fitted yet; call fit(X, y) first")
        return self.model_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(N, K)``: softmax over K classes (multiclass) or one sigmoid per class (multilabel)."""
        model = self._fitted()
        Xa = _as_float_2d(X)
        _check_finite_rows(Xa)
        n_in = model[0].n_features_in_
        if Xa.shape[1] != n_in:
            raise InputShapeError(f"X has {Xa.shape[1]} features; the probe was fitted on {n_in}")
        p = model.predict_proba(Xa)
        if self.task == "multilabel":
            return np.asarray(p, dtype=np.float64)
        out = np.zeros((Xa.shape[0], self.num_classes_), dtype=np.float64)
        out[:, model[-1].classes_] = p
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Class indices ``(N,)`` (multiclass, argmax) or multi-hot ``(N, K)`` int64 (multilabel, probability > 0.5)."""
        p = self.predict_proba(X)
        if self.task == "multilabel":
            return (p > 0.5).astype(np.int64)
        return p.argmax(1).astype(np.int64)

    def score(self, X: Any, y: Any) -> dict[str, Any]:
        """The paper metrics of this fitted probe on ``(X, y)`` (see :meth:`cross_validate` for the keys)."""
        p = self.predict_proba(X)
        if self.task == "multilabel":
            t = _as_multihot(y, p.shape[0])
            return {f"F1_{a}": multilabel_f1(t, p, average=a) for a in ("weighted", "macro", "micro")}
        t = _as_class_indices(y, p.shape[0])
        k = self.num_classes_
        pred = p.argmax(1)
        cm = confusion_matrix(t, pred, k)
        return {
            "OA": overall_accuracy(cm),
            "F1_macro": multiclass_f1(t, pred, k, average="macro"),
            "F1_weighted": multiclass_f1(t, pred, k, average="weighted"),
            "confusion_matrix": cm,
        }

    # ------------------------------------------------------------------ cross-validation
    def folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Deterministic ``(train_idx, test_idx)`` folds: stratified when every class has >= 2 samples.

        Multiclass: :class:`~sklearn.model_selection.StratifiedKFold` with ``min(cv, smallest class count)`` folds
        (classes with a single sample are then left to plain shuffled K-fold).  Multilabel: stratified on the
        dominant (first positive, else 0) label when possible, else shuffled K-fold.
        """
        n = len(y)
        strat = y if y.ndim == 1 else np.where(y.any(1), y.argmax(1), 0)
        _, counts = np.unique(strat, return_counts=True)
        k = min(self.cv, int(counts.min()))
        if k >= 2:
            splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
            return list(splitter.split(np.zeros(n), strat))
        k = min(self.cv, n)
        if k < 2:
            raise ProbeError(f"cross-validation needs at least 2 samples; got {n}")
        return list(KFold(n_splits=k, shuffle=True, random_state=self.seed).split(np.zeros(n)))

    def cross_validate(self, X: Any, y: Any) -> dict[str, Any]:
        """K-fold cross-validated paper metrics, mean and standard deviation over folds.

        Returns (multiclass): ``OA`` (percent), ``F1_macro``, ``F1_weighted`` (fractions over all K classes), each
        with ``<name>_std``; ``confusion_matrix`` ``(K, K)`` summed over the test folds; ``n_folds``; ``folds`` (the
        per-fold dicts).  Multilabel: ``F1_weighted`` (TreeSatAI), ``F1_macro`` (PASTIS), ``F1_micro`` with ``_std``,
        ``n_folds``, ``folds``.  The probe itself is left unfitted by this call (fit it with :meth:`fit`).

        Raises:
            ProbeError: one class only, or a training fold with a single class.
        """
        Xa, ya = self._check(X, y)
        k = (
            (self.num_classes if self.num_classes is not None else int(ya.max()) + 1)
            if self.task == "multiclass"
            else None
        )
        per_fold: list[dict[str, Any]] = []
        cm_total = np.zeros((k, k), dtype=np.int64) if k is not None else None
        for i, (tr, te) in enumerate(self.folds(ya)):
            if self.task == "multiclass" and np.unique(ya[tr]).size < 2:
                raise ProbeError(f"training fold {i} holds a single class; give more labels of every class")
            probe = TileProbe(self.task, self.C, self.cv, self.seed, k, self.max_iter)
            probe.model_ = _fit_quietly(probe._estimator(), Xa[tr], ya[tr])
            probe.num_classes_ = k if k is not None else ya.shape[1]
            s = probe.score(Xa[te], ya[te])
            if cm_total is not None:
                cm_total += s["confusion_matrix"]
            per_fold.append(s)
        names = (
            ("OA", "F1_macro", "F1_weighted") if self.task == "multiclass" else ("F1_weighted", "F1_macro", "F1_micro")
        )
        out: dict[str, Any] = {}
        for name in names:
            out[name], out[f"{name}_std"] = _stats([f[name] for f in per_fold])
        if cm_total is not None:
            out["confusion_matrix"] = cm_total
        out["n_folds"] = len(per_fold)
        out["folds"] = per_fold
        return out


# ----------------------------------------------------------------------------------------------------------
# feature maps and label grids
# ----------------------------------------------------------------------------------------------------------


def _check_map(da: Any, name: str = "feature map") -> xr.DataArray:
    if not isinstance(da, xr.DataArray) or set(da.dims) != {"feature", "y", "x"}:
        dims = getattr(da, "dims", None)
        raise InputShapeError(
            f"{name} is a {type(da).__name__} with dims {dims}; expected an xarray.DataArray with dims "
            "('feature', 'y', 'x'), e.g. extract_features(..., output='dense' or 'patch')"
        )
    return da.transpose("feature", "y", "x")


def _cell_matrix(da: xr.DataArray) -> np.ndarray:
    """``(h * w, D)`` float64 features of a map, row-major over ``(y, x)``."""
    arr = np.asarray(da.values, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1).T


def _spacing(c: np.ndarray) -> float:
    """Cell size along one axis from centre coordinates (absolute; 1 for a single cell without transform)."""
    return float(abs(c[1] - c[0])) if c.size > 1 else 1.0


def _axis_step(da: xr.DataArray, axis: str) -> float:
    c = np.asarray(da[axis].values, dtype=np.float64)
    if c.size > 1:
        return _spacing(c)
    try:  # a single cell: take its size from the written transform when there is one
        t = da.rio.transform()
        return float(abs(t.a if axis == "x" else t.e))
    except Exception:  # noqa: BLE001 - no transform on a one-cell map: unit cells
        return 1.0


def _bounds(da: xr.DataArray) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a map's cells (outer edges)."""
    xs, ys = np.asarray(da.x.values, float), np.asarray(da.y.values, float)
    hx, hy = _axis_step(da, "x") / 2, _axis_step(da, "y") / 2
    return float(xs.min() - hx), float(ys.min() - hy), float(xs.max() + hx), float(ys.max() + hy)


def _nearest_index(centres: np.ndarray, step: float, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the cell (centres ``(n,)``, regular spacing ``step``) holding each value, and an inside flag."""
    order = np.argsort(centres)
    sc = centres[order]
    pos = np.clip(np.searchsorted(sc, values), 1, max(len(sc) - 1, 1))
    left = sc[np.maximum(pos - 1, 0)]
    right = sc[np.minimum(pos, len(sc) - 1)]
    pick = np.where(np.abs(values - left) <= np.abs(values - right), pos - 1, pos)
    pick = np.clip(pick, 0, len(sc) - 1)
    inside = np.abs(values - sc[pick]) <= step / 2 + 1e-9 * max(step, 1.0)
    return order[pick], inside


def labels_to_dataarray(label: Any, meta: Any) -> xr.DataArray:
    """A label map ``(H, W)`` (array or tensor) placed on the map with a tile's GeoInfo (``transform``, ``crs``).

    Cell centres: ``x = c + a * (j + 0.5)``, ``y = f + e * (i + 0.5)`` from ``meta.transform = (a, b, c, d, e, f)``.

    Raises:
        InputShapeError: ``label`` is not 2-D or ``meta`` has no (north-up) transform.
    """
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise InputShapeError(f"label has shape {arr.shape}; expected a (H, W) class map")
    tr = getattr(meta, "transform", None)
    if tr is None or tr[1] != 0 or tr[3] != 0:
        raise InputShapeError(f"meta has transform {tr!r}; expected a north-up affine (a, 0, c, 0, e, f)")
    a, _, c, _, e, f = tr
    H, W = arr.shape
    da = xr.DataArray(
        arr.astype(np.int64),
        dims=("y", "x"),
        coords={"y": f + e * (np.arange(H) + 0.5), "x": c + a * (np.arange(W) + 0.5)},
        name="label",
    )
    crs = getattr(meta, "crs", None)
    return da.rio.write_crs(crs) if crs is not None else da


def _labels_on_grid(
    feat: xr.DataArray, label: Any, num_classes: int, ignore_index: int | None, name: str
) -> np.ndarray:
    """Labels ``(h * w,)`` int64 on the feature grid of ``feat``; -1 where no (valid) label covers a cell."""
    h, w = feat.sizes["y"], feat.sizes["x"]
    missing = -1
    if isinstance(label, xr.DataArray):
        if set(label.dims) != {"y", "x"}:
            raise InputShapeError(f"{name} has dims {label.dims}; expected a (y, x) label map")
        label = label.transpose("y", "x")
        lab = np.asarray(label.values)
        lx, ly = np.asarray(label.x.values, float), np.asarray(label.y.values, float)
        fx, fy = np.asarray(feat.x.values, float), np.asarray(feat.y.values, float)
        sfx, sfy = _axis_step(feat, "x"), _axis_step(feat, "y")
        slx, sly = _axis_step(label, "x"), _axis_step(label, "y")
        lab = _check_label_values(lab, num_classes, ignore_index, name)
        if slx <= sfx * (1 + 1e-9) and sly <= sfy * (1 + 1e-9):  # finer labels: majority per feature cell
            jx, inx = _nearest_index(fx, sfx, lx)
            iy, iny = _nearest_index(fy, sfy, ly)
            cell = iy[:, None] * w + jx[None, :]
            ok = iny[:, None] & inx[None, :] & (lab >= 0)
            counts = np.bincount(cell[ok] * num_classes + lab[ok], minlength=h * w * num_classes)
            counts = counts.reshape(h * w, num_classes)
            out = counts.argmax(1)
            out[counts.sum(1) == 0] = missing
            return out.astype(np.int64)
        jx, inx = _nearest_index(lx, slx, fx)  # coarser labels: nearest label pixel per feature cell
        iy, iny = _nearest_index(ly, sly, fy)
        out = lab[iy[:, None], jx[None, :]]
        out = np.where(iny[:, None] & inx[None, :], out, missing)
        return out.reshape(-1).astype(np.int64)
    try:
        lab = np.asarray(label)
    except (TypeError, ValueError) as exc:
        raise InputShapeError(f"{name} could not be read as an array ({exc}); expected a (y, x) label map") from exc
    if lab.ndim != 2:
        raise InputShapeError(
            f"{name} has shape {lab.shape}; expected a (y, x) label map for a ({h}, {w}) feature grid"
        )
    lab = _check_label_values(lab, num_classes, ignore_index, name)
    H, W = lab.shape
    if (H, W) == (h, w):
        return lab.reshape(-1)
    if H % h == 0 and W % w == 0 and H // h == W // w:  # finer, same extent: majority over r x r blocks
        r = H // h
        blocks = lab.reshape(h, r, w, r).transpose(0, 2, 1, 3).reshape(h * w, r * r)
        cell = np.repeat(np.arange(h * w), r * r)
        flat = blocks.reshape(-1)
        ok = flat >= 0
        counts = np.bincount(cell[ok] * num_classes + flat[ok], minlength=h * w * num_classes).reshape(
            h * w, num_classes
        )
        out = counts.argmax(1)
        out[counts.sum(1) == 0] = missing
        return out.astype(np.int64)
    if h % H == 0 and w % W == 0 and h // H == w // W:  # coarser, same extent: nearest (repeat)
        r = h // H
        return np.repeat(np.repeat(lab, r, 0), r, 1).reshape(-1)
    raise InputShapeError(
        f"{name} has shape {(H, W)} but the feature grid is {(h, w)}; a plain array must be the same grid or an integer "
        "multiple / fraction of it over the same extent. Pass a DataArray with x/y coordinates (labels_to_dataarray) "
        "to resample by coordinates."
    )


def _check_label_values(lab: np.ndarray, k: int, ignore_index: int | None, name: str) -> np.ndarray:
    """int64 labels with ``ignore_index`` turned into -1 (internal "no label"); values outside 0..K-1 refused."""
    if lab.dtype == np.bool_:
        lab = lab.astype(np.int64)
    if np.issubdtype(lab.dtype, np.floating):
        if not np.all(np.isfinite(lab) & (lab == np.round(lab))):
            raise InputShapeError(f"{name} holds non-integer values; expected class indices")
        lab = lab.astype(np.int64)
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputShapeError(f"{name} has dtype {lab.dtype}; expected integer class indices")
    lab = lab.astype(np.int64)
    if ignore_index is not None:
        lab = np.where(lab == ignore_index, -1, lab)
    bad = (lab != -1) & ((lab < 0) | (lab >= k))
    if bad.any():
        vals = np.unique(lab[bad])
        raise InputShapeError(
            f"{name} has labels {vals[:10].tolist()} outside 0..{k - 1} (num_classes={k}"
            f"{'' if ignore_index is None else f', ignore_index={ignore_index}'}); set num_classes or ignore_index"
        )
    return lab


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


# ----------------------------------------------------------------------------------------------------------
# pixel probe
# ----------------------------------------------------------------------------------------------------------


class PixelProbe:
    """Logistic-regression probe mapping each cell's feature vector of a ``(feature, y, x)`` map to a class.

    Args:
        num_classes: K; labels are 0..K-1 (``ignore_index`` aside).
        ignore_index: label value that is neither fitted nor counted by :meth:`evaluate` (e.g. -1 or a void class).
        C: inverse L2 regularisation strength.
        max_pixels: at most this many labelled cells are used to fit (drawn without replacement with ``seed``, so the
            same inputs always give the same probe); bounds memory and time.
        seed: subsampling seed.
        nan: ``"raise"`` (default): NaN / infinite features raise NonFiniteInputError saying how many cells and
            where; ``"drop"``: such cells are not fitted nor evaluated, and :meth:`predict_map` gives them label -1
            and confidence NaN.
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
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ProbeError(f"num_classes={num_classes!r}; expected an int >= 2")
        if nan not in ("raise", "drop"):
            raise ProbeError(f"nan={nan!r}; expected 'raise' or 'drop'")
        if not (isinstance(max_pixels, (int, np.integer)) and max_pixels >= 2):
            raise ProbeError(f"max_pixels={max_pixels!r}; expected an int >= 2")
        self.num_classes, self.ignore_index, self.C = int(num_classes), ignore_index, float(C)
        self.max_pixels, self.seed, self.nan, self.max_iter = int(max_pixels), int(seed), nan, int(max_iter)
        self.model_: Pipeline | None = None
        self.n_fitted_: int = 0

    # ------------------------------------------------------------------ features
    def _finite(self, X: np.ndarray, da: xr.DataArray, name: str) -> np.ndarray:
        """Flag ``(h*w,)`` of finite cells; raises under ``nan='raise'`` naming the count and first coordinates."""
        ok = np.isfinite(X).all(axis=1)
        if not ok.all() and self.nan == "raise":
            bad = np.flatnonzero(~ok)
            w = da.sizes["x"]
            xs, ys = np.asarray(da.x.values), np.asarray(da.y.values)
            where = ", ".join(f"(x={xs[b % w]:.10g}, y={ys[b // w]:.10g})" for b in bad[:5])
            raise NonFiniteInputError(
                f"{name} has NaN or infinite features in {bad.size} of {len(ok)} cells, e.g. at {where}"
                f"{' ...' if bad.size > 5 else ''}; expected finite features. Fill the input gaps, or pass nan='drop' "
                "to leave those cells out."
            )
        return ok

    def _pixels(self, das: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        das_l, labels_l = _as_list(das), _as_list(labels)
        if len(das_l) != len(labels_l):
            raise InputShapeError(
                f"got {len(das_l)} feature map(s) and {len(labels_l)} label map(s); expected one label map per feature map"
            )
        if not das_l:
            raise InputShapeError("got no feature map; expected at least one (feature, y, x) DataArray")
        Xs, ys = [], []
        d0 = None
        for i, (da, lab) in enumerate(zip(das_l, labels_l)):
            name = f"feature map {i}"
            da = _check_map(da, name)
            if d0 is None:
                d0 = da.sizes["feature"]
            elif da.sizes["feature"] != d0:
                raise InputShapeError(f"{name} has {da.sizes['feature']} features, map 0 has {d0}; expected the same")
            X = _cell_matrix(da)
            y = _labels_on_grid(da, lab, self.num_classes, self.ignore_index, f"label map {i}")
            keep = (y >= 0) & self._finite(X, da, name)
            Xs.append(X[keep])
            ys.append(y[keep])
        return np.concatenate(Xs), np.concatenate(ys)

    # ------------------------------------------------------------------ fit / predict
    def fit_pixels(self, X: Any, y: Any) -> PixelProbe:
        """Fit on per-cell features ``X`` ``(n, D)`` and labels ``y`` ``(n,)`` directly (subsampled to ``max_pixels``)."""
        Xa = _as_float_2d(X)
        ya = _as_class_indices(y, Xa.shape[0])
        ok = np.isfinite(Xa).all(1)
        if not ok.all():
            if self.nan == "raise":
                _check_finite_rows(Xa)
            Xa, ya = Xa[ok], ya[ok]
        if ya.size and ya.max() >= self.num_classes:
            raise InputShapeError(f"labels go up to {int(ya.max())} but num_classes={self.num_classes}")
        _require_two_classes(ya, "the labelled cells")
        if len(ya) > self.max_pixels:
            idx = np.sort(np.random.default_rng(self.seed).choice(len(ya), self.max_pixels, replace=False))
            Xa, ya = Xa[idx], ya[idx]
            _require_two_classes(ya, f"the {self.max_pixels} subsampled cells")
        est = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))
        self.model_ = _fit_quietly(est, Xa, ya)
        self.n_fitted_ = len(ya)
        return self

    def fit(self, das: Any, labels: Any) -> PixelProbe:
        """Fit on feature map(s) ``(feature, y, x)`` and their label map(s) (see the module docstring for grids).

        Args:
            das: one DataArray or a list of them (e.g. ``extract_features(..., output="dense")`` of a batch).
            labels: one label map per feature map: DataArray ``(y, x)`` with coordinates, or array / tensor.

        Raises:
            InputShapeError: not a feature map, mismatched counts / shapes, labels outside 0..K-1.
            NonFiniteInputError: NaN features with ``nan="raise"``.
            ProbeError: the labelled cells hold one class only.
        """
        X, y = self._pixels(das, labels)
        return self.fit_pixels(X, y)

    def _fitted(self) -> Pipeline:
        if self.model_ is None:
            raise ProbeError("this PixelProbe is not fitted yet; call fit(...) or use fit_from_points(...)")
        return self.model_

    def predict_proba_pixels(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, K)`` for finite rows of ``X`` ``(n, D)`` (all K columns, 0 for unseen classes)."""
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
            Dataset with ``label`` ``(y, x)`` int64 (argmax class; -1 for dropped non-finite cells) and
            ``confidence`` ``(y, x)`` float32 (the max probability, NaN for dropped cells), on the feature map's
            ``x``/``y`` coordinates, with its CRS / transform (``spatial_ref``) when it has one.
        """
        da = _check_map(da)
        X = _cell_matrix(da)
        ok = self._finite(X, da, "feature map")
        h, w = da.sizes["y"], da.sizes["x"]
        label = np.full(h * w, -1, dtype=np.int64)
        conf = np.full(h * w, np.nan, dtype=np.float32)
        p = self.predict_proba_pixels(X[ok])
        label[ok] = p.argmax(1)
        conf[ok] = p.max(1)
        coords = {k: v for k, v in da.coords.items() if k != "feature" and "feature" not in v.dims}
        ds = xr.Dataset(
            {"label": (("y", "x"), label.reshape(h, w)), "confidence": (("y", "x"), conf.reshape(h, w))},
            coords=coords,
            attrs={k: v for k, v in da.attrs.items() if isinstance(v, str)},
        )
        if "spatial_ref" in ds.coords:
            for v in ("label", "confidence"):
                ds[v].attrs["grid_mapping"] = "spatial_ref"
        return ds

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
        pred = self.predict_proba_pixels(X).argmax(1)
        cm = confusion_matrix(y, pred, self.num_classes)
        return {
            "OA": overall_accuracy(cm),
            "mIoU": miou(cm),
            "per_class_IoU": per_class_iou(cm),
            "confusion_matrix": cm,
            "n_pixels": int(y.size),
        }


# ----------------------------------------------------------------------------------------------------------
# few labels: points and polygons
# ----------------------------------------------------------------------------------------------------------


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
        if len(coords) == 2 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in coords):
            return f"({float(coords[0]):.10g}, {float(coords[1]):.10g})"
    except TypeError:
        pass
    text = str(coords)
    return text if len(text) <= 60 else text[:57] + "..."


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


def _geom_contains(geom: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    t = geom["type"]
    if t == "Polygon":
        return _rings_contain(geom["coordinates"], x, y)
    if t == "MultiPolygon":
        out = np.zeros(x.shape, dtype=bool)
        for poly in geom["coordinates"]:
            out |= _rings_contain(poly, x, y)
        return out
    raise InputShapeError(f"geometry type {t!r} is not supported; expected Point, Polygon or MultiPolygon")


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
            A cell labelled twice keeps both labels as two samples.
        num_classes: K (default: the largest class given + 1).
        **probe_kwargs: passed to :class:`PixelProbe` (``C``, ``nan``, ``max_pixels``, ``seed``...).

    Returns:
        the fitted :class:`PixelProbe`.

    Raises:
        ExtentMismatchError: labels outside every feature map (the message lists them and the maps' extents).
        ProbeError: the labels hold one class only.
        NonFiniteInputError: a labelled cell has NaN features (``nan="drop"`` drops it instead).
        InputShapeError: a label item in none of the forms above.
    """
    maps = [_check_map(d, f"feature map {i}") for i, d in enumerate(_as_list(das))]
    if not maps:
        raise InputShapeError("fit_from_points got no feature map")
    parsed: list[tuple[dict[str, Any], int, str]] = []  # (geometry, class, description)
    for i, item in enumerate(points):
        geom, cls = None, None
        if isinstance(item, Mapping) and item.get("type") == "Feature":
            geom, cls = _geometry(item), (item.get("properties") or {}).get("class")
        elif (
            isinstance(item, (tuple, list))
            and len(item) == 3
            and all(isinstance(v, (int, float, np.integer, np.floating)) for v in item)
        ):
            geom, cls = {"type": "Point", "coordinates": (float(item[0]), float(item[1]))}, item[2]
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            geom, cls = _geometry(item[0]), item[1]
        if geom is None or cls is None or isinstance(cls, bool) or not float(cls).is_integer() or cls < 0:
            raise InputShapeError(
                f"label {i} ({item!r:.120}) is not understood; expected (x, y, class), (geometry, class) or a GeoJSON "
                "Feature with properties['class'] (class a non-negative int)"
            )
        parsed.append((geom, int(cls), f"#{i} {geom['type']} {_short(geom['coordinates'])}"))
    if not parsed:
        raise ProbeError("fit_from_points got no label; give labels of at least two classes")
    k = num_classes if num_classes is not None else max(c for _, c, _ in parsed) + 1
    probe = PixelProbe(k, **probe_kwargs)
    if max(c for _, c, _ in parsed) >= k:
        raise InputShapeError(f"a label has class {max(c for _, c, _ in parsed)} but num_classes={k}")

    Xs: list[np.ndarray] = []
    ys: list[int] = []
    outside: list[str] = []
    cell_features = [_cell_matrix(da) for da in maps]  # (h*w, D) per map
    for geom, cls, desc in parsed:
        hit = 0
        for mi, da in enumerate(maps):
            X = cell_features[mi]
            xs, ys_c = np.asarray(da.x.values, float), np.asarray(da.y.values, float)
            w = xs.size
            if geom["type"] == "Point":
                px, py = (float(v) for v in geom["coordinates"][:2])
                jx, inx = _nearest_index(xs, _axis_step(da, "x"), np.array([px]))
                iy, iny = _nearest_index(ys_c, _axis_step(da, "y"), np.array([py]))
                cells = np.array([iy[0] * w + jx[0]]) if (inx[0] and iny[0]) else np.array([], dtype=np.int64)
            else:
                gx, gy = np.meshgrid(xs, ys_c)
                cells = np.flatnonzero(_geom_contains(geom, gx.ravel(), gy.ravel()))
            if cells.size == 0:
                continue
            ok = np.isfinite(X[cells]).all(1)
            if probe.nan == "raise" and not ok.all():
                bad = cells[~ok]
                raise NonFiniteInputError(
                    f"label {desc} falls on {bad.size} cell(s) of feature map {mi} with NaN or infinite features, e.g. "
                    f"at (x={xs[bad[0] % w]:.10g}, y={ys_c[bad[0] // w]:.10g}); expected finite features. Move the label, fill "
                    "the gaps, or pass nan='drop'."
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
            for i, b in enumerate(_bounds(d) for d in maps)
        )
        raise ExtentMismatchError(
            f"{len(outside)} label(s) fall outside every feature map (or a polygon holds no cell centre): "
            f"{', '.join(outside[:10])}{' ...' if len(outside) > 10 else ''}. The feature maps cover {extents}"
            f"{'' if maps[0].rio.crs is None else f' (CRS {maps[0].rio.crs})'}. Give labels in the maps' CRS and "
            "inside their extent."
        )
    X = np.concatenate(Xs) if Xs else np.zeros((0, maps[0].sizes["feature"]))
    return probe.fit_pixels(X, np.asarray(ys, dtype=np.int64))


# ----------------------------------------------------------------------------------------------------------
# label efficiency
# ----------------------------------------------------------------------------------------------------------


def label_efficiency(
    X: Any,
    y: Any,
    sizes: Sequence[int] = (8, 16, 32, 64),
    repeats: int = 3,
    seed: int = 0,
    *,
    task: Task = "multiclass",
    X_test: Any = None,
    y_test: Any = None,
    test_fraction: float = 0.3,
    C: float = 1.0,
) -> list[dict[str, Any]]:
    """Score of a :class:`TileProbe` against the number of training labels.

    Without ``X_test`` a fixed, stratified (multiclass) test split of ``test_fraction`` of the samples is held out
    (drawn with ``seed``); the training pool is the rest.  For each size ``n`` and repeat ``r`` a probe is fitted
    on ``n`` samples drawn without replacement from the pool (seed ``seed + 1000 * r``; for multiclass, one sample
    of each class first when ``n`` allows it, so that no draw has a single class) and scored on the test set.

    Returns:
        one dict per size, sorted by size: ``n_labels``, ``repeats`` and the mean / std over repeats of ``OA``
        (percent) and ``F1_macro`` (multiclass) or ``F1_weighted``, ``F1_macro`` (multilabel).  ``pd.DataFrame(t)``
        turns it into a table.

    Raises:
        ProbeError: a size larger than the training pool or smaller than 2, or repeats < 1.
    """
    Xa = _as_float_2d(X)
    _check_finite_rows(Xa)
    ya = _as_class_indices(y, Xa.shape[0]) if task == "multiclass" else _as_multihot(y, Xa.shape[0])
    if repeats < 1:
        raise ProbeError(f"repeats={repeats!r}; expected >= 1")
    rng = np.random.default_rng(seed)
    if X_test is None:
        if not 0 < test_fraction < 1:
            raise ProbeError(f"test_fraction={test_fraction!r}; expected a number in (0, 1)")
        strat = ya if ya.ndim == 1 else np.where(ya.any(1), ya.argmax(1), 0)
        test_idx: list[int] = []
        for c in np.unique(strat):  # per-class share, at least one test sample per class with >= 2 samples
            members = rng.permutation(np.flatnonzero(strat == c))
            n_te = round(test_fraction * members.size) if members.size >= 2 else 0
            test_idx.extend(members[: max(n_te, 1 if members.size >= 2 else 0)].tolist())
        te = np.zeros(len(ya), dtype=bool)
        te[test_idx] = True
        Xp, yp, Xt, yt = Xa[~te], ya[~te], Xa[te], ya[te]
    else:
        Xp, yp = Xa, ya
        Xt = _as_float_2d(X_test, "X_test")
        _check_finite_rows(Xt, "X_test")
        yt = (
            _as_class_indices(y_test, Xt.shape[0], "y_test")
            if task == "multiclass"
            else _as_multihot(y_test, Xt.shape[0], "y_test")
        )
    k = int(max(ya.max(), yt.max())) + 1 if task == "multiclass" else None
    table: list[dict[str, Any]] = []
    for n in sorted({int(s) for s in sizes}):
        if n < 2 or n > len(yp):
            raise ProbeError(f"size {n} is outside 2..{len(yp)} (the training pool holds {len(yp)} samples)")
        scores: dict[str, list[float]] = {}
        for r in range(repeats):
            g = np.random.default_rng(seed + 1000 * (r + 1))
            if task == "multiclass":
                classes = g.permutation(np.unique(yp))
                first = [int(g.choice(np.flatnonzero(yp == c))) for c in classes[:n]] if n >= 2 else []
                rest = g.permutation(np.setdiff1d(np.arange(len(yp)), first))[: n - len(first)]
                idx = np.concatenate([np.asarray(first, dtype=np.int64), rest.astype(np.int64)])
            else:
                idx = g.choice(len(yp), n, replace=False)
            probe = TileProbe(task, C=C, seed=seed, num_classes=k)
            probe.fit(Xp[idx], yp[idx])
            s = probe.score(Xt, yt)
            for name, v in s.items():
                if name != "confusion_matrix":
                    scores.setdefault(name, []).append(float(v))
        row: dict[str, Any] = {"n_labels": n, "repeats": repeats}
        for name, vals in scores.items():
            row[name], row[f"{name}_std"] = _stats(vals)
        table.append(row)
    return table
