"""Input checks and small helpers shared by the probes (numpy and scikit-learn only)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from sklearn.exceptions import ConvergenceWarning

from anysat_core.analysis.labels import as_class_array
from anysat_core.errors import InputShapeError, NonFiniteInputError, ProbeError


def as_float_2d(X: Any, name: str = "X") -> np.ndarray:
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


def check_finite_rows(X: np.ndarray, name: str = "X") -> None:
    """Refuse rows of ``X (N, D)`` holding NaN or inf (tile features have no masked rows).

    Raises:
        NonFiniteInputError: the message gives the count and the first rows.
    """
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise NonFiniteInputError(
            f"{name} has NaN or infinite values in {int(bad.sum())} of {len(X)} row(s) (rows "
            f"{rows[:10].tolist()}{' ...' if rows.size > 10 else ''}); expected finite features. Drop those samples "
            "or fill the gaps in the input before extracting features."
        )


def as_class_indices(y: Any, n: int | None, name: str = "y") -> np.ndarray:
    """Integer class labels ``(N,)`` int64; booleans and whole-number floats are accepted, others refused."""
    arr = as_class_array(
        y,
        1,
        name,
        "(N,) integer class indices for task='multiclass' (multi-hot (N, K) targets need task='multilabel')",
    )
    if n is not None and arr.shape[0] != n:
        raise InputShapeError(f"{name} has {arr.shape[0]} labels but X has {n} rows; expected one label per row")
    if arr.size and arr.min() < 0:
        raise InputShapeError(f"{name} has negative class indices ({int(arr.min())}); expected 0..K-1")
    return arr


def as_multihot(y: Any, n: int, name: str = "y") -> np.ndarray:
    """Multi-hot targets ``(N, K)`` int64 of 0 / 1."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise InputShapeError(f"{name} could not be read as an array ({exc}); expected (N, K) multi-hot") from exc
    if arr.ndim != 2 or arr.shape[0] != n:
        raise InputShapeError(
            f"{name} has shape {arr.shape}; expected (N={n}, K) multi-hot targets for task='multilabel'"
        )
    if not np.isin(arr, (0, 1)).all():
        raise InputShapeError(f"{name} must hold 0/1 values for task='multilabel'")
    return arr.astype(np.int64)


def require_two_classes(y: np.ndarray, what: str) -> None:
    """Raise :class:`ProbeError` unless ``y`` holds at least two classes (the message names the only one)."""
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        only = f"class {int(classes[0])} ({int(counts[0])} label(s))" if classes.size else "no class at all"
        raise ProbeError(
            f"{what} holds {only}; a classifier needs labels of at least two classes. Add labels of another class."
        )


def fit_quietly(est: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``est.fit(X, y)`` without scikit-learn's convergence and absent-label warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*Label not .* is present in all training examples.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        return est.fit(X, y)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of a list of scores."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std())
