"""False-colour RGB of feature maps by PCA, with a colour scale that stays fixed once fitted.

::

    pca = PCARGB(seed=0).fit([da_tile1, da_tile2])   # one basis + stretch for all tiles (pooled features)
    rgb1 = pca.transform(da_tile1)                    # DataArray (band=["r", "g", "b"], y, x), float32 in [0, 1]
    rgb2 = pca.transform(da_tile2)                    # same feature vector -> same colour in both tiles
    write_png(rgb1, "tile1.png")                         # 8-bit RGBA, transparent where the features are NaN

Inputs are feature maps as :func:`anysat_core.features.extract_features` returns them: DataArrays with dims
``("feature", "y", "x")`` (any order; they are transposed), ``x``/``y`` cell-centre coordinates and, when known, a
CRS in a ``spatial_ref`` coordinate.  Masked cells are cells whose feature vector holds a NaN: they are left out of the
fit and come out as NaN (transparent in the PNG).

The fit (see :class:`PCARGB`) pools the valid feature vectors of every map given, subsampled deterministically with
``seed`` down to ``max_samples`` vectors, takes the first three principal axes of their covariance (each axis signed so
that its largest loading is positive, so refits on the same data give the same colours) and stores per-component
``percentiles`` (default 2 and 98) of the projections.  ``transform`` projects any map on that basis and maps
``[low, high]`` of each component linearly to ``[0, 1]``, clipping outside values.

Maps are checked and read by :mod:`~anysat_core.analysis.grid` (its NaN rule: NaN marks a masked cell, an infinite
value raises).  This module imports numpy and xarray only (no torch); the PNG goes through
:func:`anysat_core.writers.write_png`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from anysat_core.analysis.grid import (
    cell_matrix,
    check_number,
    feature_map,
    feature_maps,
    grid_like,
    pooled_sample,
)
from anysat_core.errors import InputShapeError

__all__ = ["MIN_CELLS", "PCARGB"]

#: Valid cells :meth:`PCARGB.fit` needs: three colour axes plus the mean (``n`` cells span at most ``n - 1`` axes).
MIN_CELLS = 4


def _fmt(values: Any) -> str:
    return ",".join(f"{float(v):.6g}" for v in np.atleast_1d(values))


# ----------------------------------------------------------------------------------------------- PCA
class PCARGB:
    """PCA of feature vectors to three colour channels, with a robust stretch fixed at fit time.

    Args:
        percentiles: ``(low, high)`` percentiles (0-100) of each component's projections on the fit sample that
            map to 0 and 1 (values outside are clipped).  ``(0, 100)`` is a plain min-max stretch.
        max_samples: at most this many pooled feature vectors are used to fit (bounds memory and time; at least
            :data:`MIN_CELLS`).
        seed: seed of the subsampling (same data and seed, same basis and colours).

    Attributes (after :meth:`fit`):
        n_features_: D, the feature width fitted on.
        mean_: ``(D,)`` mean feature vector.
        components_: ``(3, D)`` principal axes (rows); rows beyond D (when D < 3) are zero.
        explained_variance_ratio_: ``(3,)`` share of the total variance along each axis.
        low_, high_: ``(3,)`` projection values mapped to 0 and 1.
        n_samples_: number of feature vectors fitted on.

    Raises:
        InputShapeError: bad ``percentiles`` or ``max_samples``.
    """

    def __init__(
        self, *, percentiles: tuple[float, float] = (2.0, 98.0), max_samples: int = 100_000, seed: int = 0
    ) -> None:
        ok = isinstance(percentiles, Sequence) and len(percentiles) == 2
        ok = ok and all(isinstance(p, (int, float, np.integer, np.floating)) for p in percentiles)
        lo, hi = (float(p) for p in percentiles) if ok else (0.0, -1.0)
        if not 0.0 <= lo < hi <= 100.0:
            raise InputShapeError(f"percentiles={percentiles!r}; expected (low, high) with 0 <= low < high <= 100")
        check_number("max_samples", max_samples, whole=True, minimum=MIN_CELLS)
        check_number("seed", seed, whole=True)
        self.percentiles = (lo, hi)
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.n_features_: int | None = None

    def __repr__(self) -> str:
        state = f"n_features={self.n_features_}" if self.n_features_ is not None else "not fitted"
        return f"PCARGB(percentiles={self.percentiles}, max_samples={self.max_samples}, seed={self.seed}; {state})"

    def fit(self, data: xr.DataArray | Sequence[xr.DataArray]) -> PCARGB:
        """Fit the basis and the stretch on one feature map or on the pooled cells of several.

        Args:
            data: a DataArray ``(feature, y, x)`` or a list of them (tiles, scales) with the same D.

        Returns:
            self.

        Raises:
            InputShapeError: wrong dims, maps with different feature sizes, or fewer than :data:`MIN_CELLS` valid
                cells in all (a basis fitted on 1-3 vectors has at most 0-2 axes of variation: flat grey colours).
            EmptyTileError: every cell is masked.
            NonFiniteInputError: infinite feature values.
        """
        maps = feature_maps(data, "PCARGB.fit")
        X = pooled_sample(maps, self.max_samples, self.seed, "PCARGB.fit")
        n, D = X.shape
        if n < MIN_CELLS:
            cells = sum(m.sizes["y"] * m.sizes["x"] for m in maps)
            raise InputShapeError(
                f"PCARGB.fit got {n} valid cell(s) ({cells} cell(s) in {len(maps)} map(s), {cells - n} masked); three "
                f"colour axes need at least {MIN_CELLS} cells with finite features ({n} cell(s) span at most "
                f"{max(n - 1, 0)} axis/axes, the other colours would be a flat grey). Fit on a larger map or on several "
                "maps, pca.fit([da1, da2, ...]), then transform this one with that fit"
            )
        mean = X.mean(axis=0)
        Xc = X - mean
        cov = (Xc.T @ Xc) / max(n - 1, 1)
        evals, evecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(evals, kind="stable")[::-1][:3]
        comps = np.zeros((3, D))
        var = np.zeros(3)
        for r, i in enumerate(order):
            v = evecs[:, i]
            v = v if v[np.argmax(np.abs(v))] >= 0 else -v  # deterministic sign
            comps[r], var[r] = v, max(evals[i], 0.0)
        total = float(np.clip(evals, 0.0, None).sum())
        proj = Xc @ comps.T  # (n, 3)
        low, high = np.percentile(proj, self.percentiles, axis=0)
        self.n_features_ = D
        self.mean_ = mean
        self.components_ = comps
        self.explained_variance_ratio_ = var / total if total > 0 else np.zeros(3)
        self.low_, self.high_ = low, high
        self.n_samples_ = n
        return self

    def _check_fitted(self) -> None:
        if self.n_features_ is None:
            raise InputShapeError("this PCARGB is not fitted yet; call fit(feature_maps) or fit_transform(da) first")

    def transform(self, da: xr.DataArray) -> xr.DataArray:
        """Colours of a feature map on the fitted basis.

        Args:
            da: DataArray ``(feature, y, x)`` with the D fitted on.

        Returns:
            float32 DataArray ``(band, y, x)``, ``band = ["r", "g", "b"]``, values in ``[0, 1]`` (NaN on masked
            cells), same ``x``/``y``/``spatial_ref`` coordinates and attributes as ``da`` plus ``analysis``,
            ``pca_explained_variance_ratio``, ``pca_percentiles``, ``pca_low``, ``pca_high``, ``pca_n_samples``.
            A component with ``high == low`` (no spread) is 0.5 everywhere.

        Raises:
            InputShapeError: not fitted, wrong dims, or a feature size other than the fitted one.
            NonFiniteInputError: infinite feature values.
        """
        self._check_fitted()
        da = feature_map(da)
        D = da.sizes["feature"]
        if D != self.n_features_:
            raise InputShapeError(
                f"the feature map has {D} features but this PCARGB was fitted on {self.n_features_}; fit it on maps "
                "of the same model (same width D) or fit a new one"
            )
        X, valid = cell_matrix(da)
        proj = (X - self.mean_) @ self.components_.T  # (h*w, 3); NaN rows stay NaN
        span = self.high_ - self.low_
        flat = span <= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            rgb = np.clip((proj - self.low_) / np.where(flat, 1.0, span), 0.0, 1.0)
        rgb[:, flat] = 0.5
        rgb[~valid] = np.nan
        h, w = da.sizes["y"], da.sizes["x"]
        cube = rgb.T.reshape(3, h, w).astype(np.float32)
        attrs = {
            "analysis": "pca_rgb",
            "pca_explained_variance_ratio": _fmt(self.explained_variance_ratio_),
            "pca_percentiles": _fmt(self.percentiles),
            "pca_low": _fmt(self.low_),
            "pca_high": _fmt(self.high_),
            "pca_n_samples": str(self.n_samples_),
        }
        out = grid_like(cube, da, "pca_rgb", attrs, leading={"band": ["r", "g", "b"]})
        return out

    def fit_transform(self, da: xr.DataArray) -> xr.DataArray:
        """``fit(da)`` then ``transform(da)``; see both."""
        return self.fit(da).transform(da)
