"""Tile probe: logistic regression from one feature vector per tile to a class or a set of classes.

``X (N, D)`` comes from ``extract_features(..., output="tile")`` or :func:`anysat_core.embeddings.embed_dataset`;
``y`` is ``(N,)`` class indices (``task="multiclass"``) or ``(N, K)`` multi-hot (``task="multilabel"``).
:meth:`TileProbe.cross_validate` reports the paper's metrics (:mod:`anysat_core.analysis.metrics`: OA in **percent**,
F1 as **fractions**) as mean / std over deterministic, stratified where possible, folds.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from anysat_core.analysis.grid import check_number
from anysat_core.analysis.metrics import confusion_matrix, multiclass_f1, multilabel_f1, overall_accuracy
from anysat_core.analysis.probes._checks import (
    as_class_indices,
    as_float_2d,
    as_multihot,
    check_finite_rows,
    fit_quietly,
    mean_std,
    require_two_classes,
)
from anysat_core.errors import InputShapeError, ProbeError

__all__ = ["Task", "TileProbe"]

Task = Literal["multiclass", "multilabel"]


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
        check_number("cv", cv, whole=True, minimum=2, error=ProbeError)  # number of folds
        check_number("C", C, positive=True, error=ProbeError)
        check_number("seed", seed, whole=True, error=ProbeError)
        check_number("max_iter", max_iter, whole=True, minimum=1, error=ProbeError)
        self.task, self.C, self.cv, self.seed = task, float(C), int(cv), int(seed)
        self.num_classes = num_classes
        self.max_iter = int(max_iter)
        self.model_: Pipeline | None = None
        self.num_classes_: int | None = None

    # ------------------------------------------------------------------ fitting
    def _check(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        Xa = as_float_2d(X)
        check_finite_rows(Xa)
        if self.task == "multiclass":
            ya = as_class_indices(y, Xa.shape[0])
            k = self._num_classes(ya)
            if ya.max() >= k:
                raise InputShapeError(f"y has class {int(ya.max())} but num_classes={k}; expected 0..{k - 1}")
            require_two_classes(ya, "y")
        else:
            ya = as_multihot(y, Xa.shape[0])
            if not ((ya.sum(0) > 0) & (ya.sum(0) < len(ya))).any():
                raise ProbeError(
                    "every label column of y is constant (always 0 or always 1); a multilabel probe needs at least one "
                    "class that is present in some tiles and absent in others"
                )
        return Xa, ya

    def _num_classes(self, ya: np.ndarray) -> int:
        """K: ``num_classes`` (default ``max(y) + 1``) for multiclass, the number of label columns for multilabel."""
        if self.task == "multilabel":
            return int(ya.shape[1])
        return self.num_classes if self.num_classes is not None else int(ya.max()) + 1

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
        self.num_classes_ = self._num_classes(ya)
        self.model_ = fit_quietly(self._estimator(), Xa, ya)
        return self

    def _fitted(self) -> tuple[Pipeline, int]:
        """``(model_, num_classes_)``, set together by :meth:`fit`."""
        if self.model_ is None or self.num_classes_ is None:
            raise ProbeError("this TileProbe is not fitted yet; call fit(X, y) first")
        return self.model_, self.num_classes_

    @property
    def classes_(self) -> np.ndarray:
        """Class ids ``(K,)`` of the columns of :meth:`predict_proba` (scikit-learn's classifier protocol)."""
        return np.arange(self._fitted()[1])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(N, K)``: softmax over K classes (multiclass) or one sigmoid per class (multilabel)."""
        model, k = self._fitted()
        Xa = as_float_2d(X)
        check_finite_rows(Xa)
        n_in = model[0].n_features_in_
        if Xa.shape[1] != n_in:
            raise InputShapeError(f"X has {Xa.shape[1]} features; the probe was fitted on {n_in}")
        p = model.predict_proba(Xa)
        if self.task == "multilabel":
            return np.asarray(p, dtype=np.float64)
        out = np.zeros((Xa.shape[0], k), dtype=np.float64)
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
            t = as_multihot(y, p.shape[0])
            return {f"F1_{a}": multilabel_f1(t, p, average=a) for a in ("weighted", "macro", "micro")}
        t = as_class_indices(y, p.shape[0])
        k = p.shape[1]  # num_classes_ (predict_proba's columns)
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
        k = self._num_classes(ya)
        per_fold: list[dict[str, Any]] = []
        cm_total = np.zeros((k, k), dtype=np.int64) if self.task == "multiclass" else None
        for i, (tr, te) in enumerate(self.folds(ya)):
            if self.task == "multiclass" and np.unique(ya[tr]).size < 2:
                raise ProbeError(f"training fold {i} holds a single class; give more labels of every class")
            probe = TileProbe(self.task, self.C, self.cv, self.seed, k, self.max_iter)
            probe.model_ = fit_quietly(probe._estimator(), Xa[tr], ya[tr])
            probe.num_classes_ = k
            s = probe.score(Xa[te], ya[te])
            if cm_total is not None:
                cm_total += s["confusion_matrix"]
            per_fold.append(s)
        names = (
            ("OA", "F1_macro", "F1_weighted") if self.task == "multiclass" else ("F1_weighted", "F1_macro", "F1_micro")
        )
        out: dict[str, Any] = {}
        for name in names:
            out[name], out[f"{name}_std"] = mean_std([f[name] for f in per_fold])
        if cm_total is not None:
            out["confusion_matrix"] = cm_total
        out["n_folds"] = len(per_fold)
        out["folds"] = per_fold
        return out
