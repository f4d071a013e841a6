"""The streaming loop of scene inference: panels of window columns, strips of windows, blended and flushed.

:class:`SceneStream` walks the panels of a :class:`~anysat_core.inference.plan.ScenePlan` from the sink's resume
point, and in each panel its strips (rows of windows) from top to bottom.  One strip is:

1. :meth:`~SceneStream.seed_strip`: clear the accumulator and put back the ``overlap`` rows carried from the strip
   above (weighted sums and weights);
2. :meth:`~SceneStream.window_outputs`: read the strip's windows lazily, a few batches at a time
   (:data:`INFLIGHT`), and run them (batches never cross strips, so a resumed run batches every window as an
   uninterrupted one);
3. :meth:`~SceneStream.blend`: add each window's features and valid fraction (the share of valid input under each
   cell, :func:`~anysat_core.features.valid_fraction` of the window sample, computed here, not on Dask workers)
   times the separable raised-cosine weight;
4. :meth:`~SceneStream.flush_strip`: exchange the ``overlap`` columns shared with the neighbouring panels through the
   sink, divide the finished rows (``stride`` rows, all of them for the last strip), set the features of cells whose
   valid fraction is at most ``min_valid_fraction`` to NaN, apply the probe, write them;
5. :meth:`~SceneStream.carry_rows` and the sink's ``commit``: keep the ``overlap`` band for the next strip and
   record the progress (the sink's resume point is a committed step; at the start of a panel nothing is carried
   over rows, only the columns the previous panel left in the sink).

Progress counts *steps*: step ``p * n_rows + r`` is strip ``r`` of panel ``p``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from anysat_core.data.raster import RasterScene
from anysat_core.data.sample import Sample
from anysat_core.errors import EmptyTileError, InputShapeError, OutputError
from anysat_core.features import valid_fraction
from anysat_core.inference.plan import ScenePlan
from anysat_core.inference.runners import Runner
from anysat_core.inference.sinks import MemorySink, ZarrSink

#: batches of windows read and run together: bounds the inputs held in memory whatever the scene width
INFLIGHT = 4


def ramp(window_cells: int, overlap_cells: int) -> np.ndarray:
    """``(window_cells,)`` float32 weight: 1 inside, raised cosine over ``overlap_cells`` at both ends."""
    w = np.ones(window_cells, dtype=np.float64)
    if overlap_cells > 0:
        k = np.arange(overlap_cells)
        up = 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / overlap_cells)
        w[:overlap_cells] = up
        w[window_cells - overlap_cells :] = up[::-1]
    return w.astype(np.float32)


def check_probe(probe: Any, n_features: int) -> None:
    """Refuse, before any work, a probe that cannot classify ``(N, n_features)`` feature rows.

    The protocol is scikit-learn's: ``predict_proba((N, D)) -> (N, K)`` and, optionally, ``classes_`` (the class id of
    each column). :class:`~anysat_core.TileProbe`, :class:`~anysat_core.PixelProbe` and fitted scikit-learn
    classifiers follow it.

    Raises:
        OutputError: no ``predict_proba``, or it fails or returns another shape or non-finite values on one row of
            zeros (an unfitted probe, one fitted on features of another width...), or ``classes_`` that are not class
            ids 0..32767 (the prediction map is int16); the message names the cause.
    """
    if not callable(getattr(probe, "predict_proba", None)):
        raise OutputError(
            f"probe is a {type(probe).__name__} without predict_proba; expected a fitted classifier with "
            "predict_proba((N, D)) -> (N, K) and classes_, e.g. a PixelProbe, a TileProbe or a scikit-learn classifier"
        )
    try:
        proba = np.asarray(probe.predict_proba(np.zeros((1, n_features))))
        classes = getattr(probe, "classes_", None)
    except Exception as e:
        raise OutputError(
            f"probe {type(probe).__name__} cannot classify {n_features} features ({type(e).__name__}: {e}); give a "
            f"probe fitted on features of this model, output and patch size ({n_features} per cell)"
        ) from e
    if proba.ndim != 2 or proba.shape[0] != 1 or (classes is not None and len(classes) != proba.shape[1]):
        raise OutputError(
            f"probe {type(probe).__name__}.predict_proba returned shape {proba.shape} for one row"
            + (f" with {len(classes)} classes_" if classes is not None else "")
            + "; expected (1, K) probabilities, one column per class"
        )
    if proba.dtype.kind not in "biuf" or not np.isfinite(proba).all():
        raise OutputError(
            f"probe {type(probe).__name__}.predict_proba returned {proba.tolist()!r} for one row; expected finite "
            "probabilities (numbers in [0, 1]), one per class; check that the probe is fitted and its inputs are valid"
        )
    if classes is not None:
        labels = np.asarray(classes)
        whole = labels.dtype.kind in "iub" or (
            labels.dtype.kind == "f" and bool(np.isfinite(labels).all()) and bool((labels == np.round(labels)).all())
        )
        if not whole or labels.size == 0 or labels.min() < 0 or labels.max() > np.iinfo(np.int16).max:
            raise OutputError(
                f"probe {type(probe).__name__} has classes_ {labels.tolist()[:10]!r}; the prediction map stores class "
                f"ids as int16 (-1: no data), so expected whole numbers 0..{np.iinfo(np.int16).max}. Fit the probe on "
                "integer labels (e.g. sklearn.preprocessing.LabelEncoder, keeping the encoder to name the classes)"
            )


def apply_probe(probe: Any, classes: Any, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell class and confidence of ``feats`` ``(D, h, w)``: int16 ``(h, w)`` (-1: no data), float32 ``(h, w)``."""
    D, h, w = feats.shape
    X = feats.reshape(D, -1).T  # (N, D)
    ok = np.isfinite(X).all(axis=1)
    prediction = np.full(h * w, -1, dtype=np.int16)
    confidence = np.full(h * w, np.nan, dtype=np.float32)
    if ok.any():
        proba = np.asarray(probe.predict_proba(X[ok]))
        idx = proba.argmax(axis=1)
        labels = np.asarray(classes)[idx] if classes is not None else idx
        prediction[ok] = labels.astype(np.int16)
        confidence[ok] = proba.max(axis=1).astype(np.float32)
    return prediction.reshape(h, w), confidence.reshape(h, w)


@dataclass
class Panel:
    """One panel's window columns ``[c0, c1)``, the grid columns ``[x0, x1)`` it finishes, and its buffers.

    Attributes:
        acc: ``(D, window_cells, width)`` weighted feature sums of the current strip.
        wts: ``(2, window_cells, width)``: the sums of the weights (:attr:`wsum`) and the weighted sums of the windows'
            valid fractions (:attr:`vsum`), carried together.
        fin: ``(D, window_cells, x1 - x0)`` the divided output of the strip.
    """

    index: int
    c0: int
    c1: int
    x0: int
    x1: int
    last: bool
    acc: np.ndarray
    wts: np.ndarray
    fin: np.ndarray

    @property
    def wsum(self) -> np.ndarray:
        """``(window_cells, width)`` sums of the blending weights."""
        return self.wts[0]

    @property
    def vsum(self) -> np.ndarray:
        """``(window_cells, width)`` sums of the windows' valid fractions times the blending weights."""
        return self.wts[1]


def panel_buffers(plan: ScenePlan, p: int) -> Panel:
    """Panel ``p`` with zeroed buffers (``acc``/``wsum`` at most ``plan.buffer_shape``)."""
    D, wc, _ = plan.buffer_shape
    c0, c1 = plan.panel_cols(p)
    x0, x1 = plan.panel_span(p)
    width = (c1 - c0 - 1) * plan.stride_cells + wc
    return Panel(
        index=p,
        c0=c0,
        c1=c1,
        x0=x0,
        x1=x1,
        last=p == plan.n_panels - 1,
        acc=np.zeros((D, wc, width), dtype=np.float32),
        wts=np.zeros((2, wc, width), dtype=np.float32),
        fin=np.empty((D, wc, x1 - x0), dtype=np.float32),
    )


class SceneStream:
    """Runs the windows of ``wscene`` (the scene cut along the plan's windows) into ``sink``; see the module
    docstring.  ``callback(windows_done, windows_total)`` is called after every window blended by this run."""

    def __init__(
        self,
        wscene: RasterScene,
        plan: ScenePlan,
        runner: Runner,
        sink: MemorySink | ZarrSink,
        *,
        batch_size: int,
        normalize: Callable[[Sample], Sample] | None,
        probe: Any,
        progress: bool,
        callback: Callable[[int, int], None] | None,
        min_valid_fraction: float = 0.0,
    ) -> None:
        self.wscene, self.plan, self.runner, self.sink = wscene, plan, runner, sink
        self.min_valid_fraction = min_valid_fraction
        self.batch_size, self.normalize, self.probe = batch_size, normalize, probe
        self.progress, self.callback = progress, callback
        self.classes = getattr(probe, "classes_", None)
        r = ramp(plan.window_cells, plan.overlap_cells)
        self.weight = r[:, None] * r[None, :]  # (wc, wc)
        self.done = 0  # windows blended by this run
        self.bar: Any = None

    # ----------------------------------------------------------------------------------------- the loop
    def run(self) -> None:
        """Process panels, and strips inside a panel, from the sink's resume point."""
        from tqdm.auto import tqdm

        plan = self.plan
        step0, carry_sum, carry_w = self.sink.start()
        p0, r0 = divmod(step0, plan.n_rows)
        if r0 == 0:  # a panel starts afresh: nothing carried over rows
            carry_sum = carry_w = None
        self.bar = tqdm(
            total=plan.n_windows,
            initial=self.windows_before(p0, r0),
            disable=not self.progress,
            desc="windows",
            unit="win",
        )
        try:
            for p in range(p0, plan.n_panels):
                panel = panel_buffers(plan, p)
                for r in range(r0 if p == p0 else 0, plan.n_rows):
                    carry_sum, carry_w = self.run_strip(panel, r, carry_sum, carry_w)
                del panel
        finally:
            self.bar.close()

    def windows_before(self, p0: int, r0: int) -> int:
        """Windows finished before step ``(p0, r0)``: all rows of the finished panels' columns, ``r0`` strips of
        panel ``p0``."""
        plan = self.plan
        c0 = min(plan.n_cols, p0 * plan.panel_windows)
        return plan.n_rows * c0 + r0 * (min(plan.n_cols, c0 + plan.panel_windows) - c0)

    def run_strip(
        self, panel: Panel, r: int, carry_sum: np.ndarray | None, carry_w: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Strip ``r`` of ``panel``, committed; returns the ``overlap`` rows carried to the next strip."""
        self.seed_strip(panel, carry_sum, carry_w)
        n_seen = 0
        for c, f, v in self.window_outputs(r, panel.c0, panel.c1):
            self.blend(panel, c, f, v)
            n_seen += 1
        self.bar.update((panel.c1 - panel.c0) - n_seen)  # empty windows
        last = r == self.plan.n_rows - 1
        self.flush_strip(panel, r, last)
        carry_sum, carry_w = self.carry_rows(panel, last)
        self.sink.commit(panel.index * self.plan.n_rows + r + 1, carry_sum, carry_w)
        return carry_sum, carry_w

    # ----------------------------------------------------------------------------------------- the steps
    def seed_strip(self, panel: Panel, carry_sum: np.ndarray | None, carry_w: np.ndarray | None) -> None:
        """Clear the accumulator and put back the ``overlap`` rows carried from the strip above."""
        oc = self.plan.overlap_cells
        panel.acc.fill(0.0)
        panel.wts.fill(0.0)
        if carry_sum is not None and carry_w is not None and oc > 0:
            panel.acc[:, :oc] = carry_sum
            panel.wts[:, :oc] = carry_w

    def read_batches(self, r: int, c0: int, c1: int) -> Iterator[tuple[list[int], list[Sample], list[np.ndarray]]]:
        """``(window columns, samples, valid fractions)`` of the non-empty windows ``(r, c0..c1)``, ``batch_size`` at
        a time, each window read (and normalised) only when its batch is asked for.  The valid fraction
        ``(window_cells, window_cells)`` of a window comes from the masks of the sample the model gets."""
        wc = self.plan.window_cells
        cols: list[int] = []
        samples: list[Sample] = []
        fracs: list[np.ndarray] = []
        for c in range(c0, c1):
            try:
                s = self.wscene.tile(r, c)
            except EmptyTileError:
                continue
            cols.append(c)
            s = self.normalize(s) if self.normalize is not None else s
            samples.append(s)
            fracs.append(valid_fraction(s, (wc, wc)))
            if len(samples) == self.batch_size:
                yield cols, samples, fracs
                cols, samples, fracs = [], [], []
        if samples:
            yield cols, samples, fracs

    def window_outputs(self, r: int, c0: int, c1: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(window column, features (h, w, D), valid fraction (h, w))`` of strip ``r``, running :data:`INFLIGHT`
        batches at a time: at most that many batches of inputs are held."""
        pending: list[tuple[list[int], list[Sample], list[np.ndarray]]] = []
        batches = self.read_batches(r, c0, c1)
        while True:
            nxt = next(batches, None)
            if nxt is not None:
                pending.append(nxt)
            if pending and (nxt is None or len(pending) == INFLIGHT):
                outs = self.runner([b for _, b, _ in pending])
                for (cols, _, fracs), out in zip(pending, outs):
                    yield from zip(cols, out, fracs)
                pending = []
            if nxt is None:
                return

    def blend(self, panel: Panel, c: int, f: np.ndarray, v: np.ndarray) -> None:
        """Add window ``c``'s features ``(h, w, D)`` and valid fraction ``(h, w)`` times the blending weight; report
        the window as done."""
        D, wc, _ = self.plan.buffer_shape
        if f.shape[:2] != (wc, wc) or f.shape[2] != D:
            raise InputShapeError(
                f"the model returned a window output of shape {f.shape}; the scene plan expects {(wc, wc, D)} (cells, "
                "cells, features) for this output, window_m and patch_size_m: a custom model must return "
                "(B, h, w, D) maps like AnySat's output='patch'/'dense'"
            )
        x0 = (c - panel.c0) * self.plan.stride_cells
        panel.acc[:, :, x0 : x0 + wc] += np.moveaxis(f, -1, 0) * self.weight
        panel.wsum[:, x0 : x0 + wc] += self.weight
        panel.vsum[:, x0 : x0 + wc] += v * self.weight
        self.done += 1
        self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.plan.n_windows)

    def flush_strip(self, panel: Panel, r: int, last: bool) -> None:
        """Divide and write the rows strip ``r`` finishes: the stride rows (all window rows for the last strip);
        cells whose valid fraction is at most ``min_valid_fraction`` (cells no window covers have 0) get NaN."""
        plan = self.plan
        y0 = r * plan.stride_cells
        n_out = max(0, min(plan.window_cells if last else plan.stride_cells, plan.grid_shape[0] - y0))
        if n_out == 0:
            return
        self.share_columns(panel, y0, n_out)
        width = panel.x1 - panel.x0
        w = panel.wsum[:n_out, :width]
        out = panel.fin[:, :n_out]
        out.fill(np.nan)
        np.divide(panel.acc[:, :n_out, :width], w, out=out, where=w > 0)
        valid = np.zeros(w.shape, dtype=np.float32)
        np.divide(panel.vsum[:n_out, :width], w, out=valid, where=w > 0)
        np.clip(valid, 0.0, 1.0, out=valid)  # a weighted mean of values in [0, 1], up to rounding
        out[:, valid <= self.min_valid_fraction] = np.nan
        prediction = confidence = None
        if self.probe is not None:
            prediction, confidence = apply_probe(self.probe, self.classes, out)
        self.sink.write(y0, panel.x0, out, valid, prediction, confidence)

    def share_columns(self, panel: Panel, y0: int, n_out: int) -> None:
        """Add the previous panel's share of the ``overlap`` columns this panel finishes, and hand this panel's
        share of the columns the next panel finishes to the sink."""
        oc, p = self.plan.overlap_cells, panel.index
        if oc == 0:
            return
        if p > 0:
            csum, cw = self.sink.read_cols(p, y0, n_out)
            panel.acc[:, :n_out, :oc] += csum
            panel.wts[:, :n_out, :oc] += cw
        if not panel.last:
            xr0 = (panel.c1 - panel.c0) * self.plan.stride_cells
            self.sink.write_cols(p + 1, y0, panel.acc[:, :n_out, xr0 : xr0 + oc], panel.wts[:, :n_out, xr0 : xr0 + oc])

    def carry_rows(self, panel: Panel, last: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Copies of the ``overlap`` rows below the stride, for the next strip (None after the last strip)."""
        if last:
            return None, None
        sc, oc = self.plan.stride_cells, self.plan.overlap_cells
        return panel.acc[:, sc : sc + oc].copy(), panel.wts[:, sc : sc + oc].copy()
