"""Label efficiency: a tile probe's score against the number of training labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anysat_core.analysis.probes._checks import as_class_indices, as_float_2d, as_multihot, check_finite_rows, mean_std
from anysat_core.analysis.probes.tile import Task, TileProbe
from anysat_core.errors import ProbeError

__all__ = ["label_efficiency"]


def _targets(y: Any, n: int, task: Task, name: str) -> np.ndarray:
    return as_class_indices(y, n, name) if task == "multiclass" else as_multihot(y, n, name)


def _held_out(ya: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Test flags ``(N,)``: per class (multilabel: per dominant label), ``round(test_fraction * count)`` samples and
    at least one of every class with >= 2 samples; a class with a single sample stays in the training pool."""
    strat = ya if ya.ndim == 1 else np.where(ya.any(1), ya.argmax(1), 0)
    test = np.zeros(len(ya), dtype=bool)
    for c in np.unique(strat):
        members = rng.permutation(np.flatnonzero(strat == c))
        if members.size >= 2:
            test[members[: max(round(test_fraction * members.size), 1)]] = True
    return test


def _draw(yp: np.ndarray, n: int, task: Task, g: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` training samples drawn without replacement from the pool ``yp``.

    Multiclass: first one sample of each of ``min(n, C)`` classes (the C classes of the pool in random order), then
    the rest at random from the remaining pool, so that a draw holds at least two classes.  Multilabel: ``n`` at
    random."""
    if task == "multilabel":
        return g.choice(len(yp), n, replace=False)
    classes = g.permutation(np.unique(yp))
    first = np.asarray([int(g.choice(np.flatnonzero(yp == c))) for c in classes[:n]], dtype=np.int64)
    rest = g.permutation(np.setdiff1d(np.arange(len(yp)), first))[: n - len(first)]
    return np.concatenate([first, rest.astype(np.int64)])


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
    """Score of a :class:`~anysat_core.analysis.probes.TileProbe` against the number of training labels.

    Without ``X_test``, a fixed test split is held out, drawn with ``np.random.default_rng(seed)``: per class
    (multilabel: per dominant label) ``round(test_fraction * count)`` samples, at least one of every class with two
    or more samples; the training pool is the rest.  With ``X_test`` / ``y_test`` the whole of ``(X, y)`` is the pool.

    For each size ``n`` (in increasing order) and repeat ``r = 0 .. repeats - 1``, ``n`` samples are drawn without
    replacement from the pool by ``np.random.default_rng(seed + 1000 * (r + 1))`` (the same draws for every size's
    repeat ``r``): for multiclass, first one sample of each of ``min(n, C)`` classes of the pool, taken in random
    order, then the rest at random, so that no draw holds a single class.  A probe (``C``, ``num_classes`` = the
    largest class in ``y`` or ``y_test`` + 1) is fitted on them and scored on the test set.

    Returns:
        one dict per size, sorted by size: ``n_labels``, ``repeats`` and the mean and ``<name>_std`` (population
        standard deviation) over repeats of every score of :meth:`TileProbe.score`: ``OA`` (percent),
        ``F1_macro``, ``F1_weighted`` (multiclass) or ``F1_weighted``, ``F1_macro``, ``F1_micro`` (multilabel).
        ``pd.DataFrame(table)`` turns it into a table.

    Raises:
        ProbeError: a size larger than the training pool or smaller than 2, ``repeats < 1``, ``test_fraction``
            outside (0, 1), or a draw with a single class.
        InputShapeError, NonFiniteInputError: as for :meth:`TileProbe.fit`.
    """
    Xa = as_float_2d(X)
    check_finite_rows(Xa)
    ya = _targets(y, Xa.shape[0], task, "y")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ProbeError(f"repeats={repeats!r}; expected an int >= 1")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sizes):
        raise ProbeError(f"sizes={sizes!r}; expected numbers of training labels (ints >= 2)")
    if X_test is None:
        if not 0 < test_fraction < 1:
            raise ProbeError(f"test_fraction={test_fraction!r}; expected a number in (0, 1)")
        te = _held_out(ya, test_fraction, np.random.default_rng(seed))
        Xp, yp, Xt, yt = Xa[~te], ya[~te], Xa[te], ya[te]
    else:
        Xp, yp = Xa, ya
        Xt = as_float_2d(X_test, "X_test")
        check_finite_rows(Xt, "X_test")
        yt = _targets(y_test, Xt.shape[0], task, "y_test")
    k = int(max(ya.max(), yt.max())) + 1 if task == "multiclass" else None
    table: list[dict[str, Any]] = []
    for n in sorted({int(s) for s in sizes}):
        if n < 2 or n > len(yp):
            raise ProbeError(f"size {n} is outside 2..{len(yp)} (the training pool holds {len(yp)} samples)")
        scores: dict[str, list[float]] = {}
        for r in range(repeats):
            idx = _draw(yp, n, task, np.random.default_rng(seed + 1000 * (r + 1)))
            s = TileProbe(task, C=C, seed=seed, num_classes=k).fit(Xp[idx], yp[idx]).score(Xt, yt)
            for name, v in s.items():
                if name != "confusion_matrix":
                    scores.setdefault(name, []).append(float(v))
        row: dict[str, Any] = {"n_labels": n, "repeats": repeats}
        for name, vals in scores.items():
            row[name], row[f"{name}_std"] = mean_std(vals)
        table.append(row)
    return table
