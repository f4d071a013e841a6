"""The explorer's loop beyond the PCA picture: label -> probe -> predict -> review -> export -> copy as code.

:class:`ProbeLoop` is a second state object (no widgets) beside :class:`~app.state.ExplorerState`: it owns the user's
labels, the fitted pixel probe and its prediction and confidence maps, the exports and the generated code.  A probe
result belongs to the features it was fitted on: it is cleared when those change (another tile, patch size,
modalities, weights...) or when the labels change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import param
import xarray as xr

from anysat_core.errors import AnySatError, ConfigError, ExtentMismatchError, OutputExistsError
from app.labels import LabelsError, LabelSet
from app.state import EXECUTOR, ExplorerState

__all__ = ["EXPORT_FORMATS", "EXPORT_LAYERS", "ProbeLoop", "generate_code"]

log = logging.getLogger("anysat_explorer")

EXPORT_LAYERS = ["features", "pca", "similarity", "clusters", "prediction", "confidence"]
EXPORT_FORMATS = ["GeoTIFF", "COG", "Zarr", "PNG"]
#: folds of the held-out estimate of the pixel probe's metrics (leave-one-out below this many labels).
FOLDS = 5
_SUFFIX = {"GeoTIFF": ".tif", "COG": ".tif", "Zarr": ".zarr", "PNG": ".png"}


class Cancelled(Exception):
    """Raised inside a job when the user pressed cancel."""


class ProbeLoop(param.Parameterized):
    """Labels, pixel probe, predictions, exports and code of one session (see the module docstring)."""

    explorer = param.ClassSelector(class_=ExplorerState)
    labels = param.Parameter(default=None, doc="the user's LabelSet")
    label_class = param.Selector(default=None, objects=[], check_on_set=False, doc="class of the next label")
    labels_version = param.Integer(default=0, doc="bumps when the labels change")
    probe = param.Parameter(default=None, doc="the fitted PixelProbe (None: not fitted or cleared)")
    prediction = param.Parameter(default=None, doc="Dataset prediction/confidence (y, x) of the current view")
    metrics = param.Dict(default={}, doc="held-out (5-fold over the labels) metrics of the probe")
    confusion = param.Parameter(default=None, doc="confusion matrix (true x predicted) of the held-out labels")
    confidence_threshold = param.Number(default=0.0, bounds=(0.0, 1.0), doc="hide predictions below this")
    review_k = param.Integer(default=0, bounds=(0, 100), doc="highlight the k least confident cells (0 = off)")
    progress = param.Integer(default=0, bounds=(0, 100), doc="progress of the running job, percent")
    running = param.Boolean(default=False, doc="a probe job is running")
    export_layer = param.Selector(default="features", objects=EXPORT_LAYERS)
    export_format = param.Selector(default="GeoTIFF", objects=EXPORT_FORMATS)
    export_name = param.String(default="", doc="file name under the output root (default: from the view)")
    last_export = param.String(default="", doc="path of the last export")
    message = param.String(default="", doc="what the loop says (probe done, export written, cancelled...)")
    tile_tiles = param.Integer(default=48, bounds=(4, 10_000), doc="tiles of the source used by the tile probe")
    tile_metrics = param.Dict(default={}, doc="cross-validated metrics of the tile probe")
    efficiency = param.List(default=[], doc="label-efficiency rows (n_labels, scores)")
    prediction_classes = param.List(default=[], doc="class names of the prediction layer")
    seg_tiles = param.Integer(default=24, bounds=(4, 10_000), doc="tiles of the dataset-label pixel probe")
    scene_name = param.String(default="", doc="scene output name under the output root (.tif or .zarr)")
    scene_with_probe = param.Boolean(default=False, doc="add prediction and confidence from the fitted probe")
    scene_output = param.String(default="", doc="path of the last finished scene output")
    scene_rgb = param.Parameter(default=None, doc="PCA colours (band, y, x) of the last scene output")
    scene_prediction = param.Parameter(default=None, doc="prediction (y, x) of the last scene output, if any")

    def __init__(self, explorer: ExplorerState, **params: Any) -> None:
        super().__init__(explorer=explorer, **params)
        self.labels = LabelSet(crs=explorer.source_obj.crs if explorer._source_obj is not None else None)
        self.param.label_class.objects = list(self.labels.classes)
        self.label_class = self.labels.classes[0]
        self._cancel = threading.Event()
        self._job = 0
        explorer.label_click_handler = self.add_point
        explorer.param.watch(self._inputs_changed, ["result"])
        explorer.param.watch(self._source_changed, ["source"])

    # ------------------------------------------------------------------ labels
    def _labels_changed(self) -> None:
        self.clear_probe()
        self.param.label_class.objects = list(self.labels.classes)
        self.labels_version += 1

    def add_class(self, name: str) -> None:
        self.labels.add_class(name)
        self.param.label_class.objects = list(self.labels.classes)
        self.label_class = name.strip()

    def add_point(self, x: float, y: float) -> None:
        self.labels.add_point(x, y, self.label_class)
        self._labels_changed()

    def add_polygon(self, xs: list[float], ys: list[float]) -> None:
        self.labels.add_polygon(xs, ys, self.label_class)
        self._labels_changed()

    def remove_label(self, index: int) -> None:
        self.labels.remove(index)
        self._labels_changed()

    def clear_labels(self) -> None:
        self.labels.clear()
        self._labels_changed()

    def save_labels(self, name: str, *, overwrite: bool = False) -> Path:
        path = self._output_path(name, (".geojson", ".json", ".gpkg"))
        out = self.labels.save(path, overwrite=overwrite)
        self.message = f"labels written to {out}"
        return out

    def load_labels(self, path: str) -> None:
        from app.config import resolve_under_roots

        cfg = self.explorer.config
        real = resolve_under_roots(path, [*cfg.data_roots, cfg.output_root])
        loaded = LabelSet.load(real, self.explorer.source_obj.crs, self.labels.classes)
        self.labels = loaded
        self._labels_changed()
        self.message = f"{len(loaded)} label(s) read from {real.name} (in {loaded.crs})"

    def _source_changed(self, event: Any) -> None:
        self.labels = LabelSet(crs=self.explorer.source_obj.crs, classes=list(self.labels.classes))
        self._labels_changed()

    # ------------------------------------------------------------------ probe
    def clear_probe(self) -> None:
        self.param.update(probe=None, prediction=None, metrics={}, confusion=None)

    def _inputs_changed(self, event: Any) -> None:
        old, new = event.old, event.new
        if old is None or new is None or old.request != new.request:
            self.clear_probe()

    def _start_job(self, message: str) -> int:
        """A new job: clears a previous cancel, makes older jobs stale, shows ``message``; returns the job id."""
        self._cancel.clear()
        self._job += 1
        self.param.update(running=True, progress=0, message=message)
        return self._job

    def _dispatch(self, work: Any, finish: Any) -> None:
        """Run ``work()`` off the page's thread inside a session (in this thread without one), then
        ``finish(value, error)`` on the session's event loop; ``error`` is ``""``, ``"cancelled"`` or the message
        shown in the page (an unexpected exception is logged with its traceback)."""

        def guarded() -> tuple[Any, str]:
            try:
                return work(), ""
            except Cancelled:
                return None, "cancelled"
            except AnySatError as e:
                return None, str(e)
            except Exception as e:
                log.exception("unexpected error in a background job")
                return None, f"unexpected error ({type(e).__name__}: {e}); see the server log"

        doc = self.explorer._session_doc()
        if doc is None:
            finish(*guarded())
            return

        def background() -> None:
            value, err = guarded()
            doc.add_next_tick_callback(lambda: finish(value, err))

        EXECUTOR.submit(background)

    def cancel(self) -> None:
        """Stop the running job (it checks between steps; within a second)."""
        self._cancel.set()

    def run_probe(self) -> None:
        """Fit a pixel probe on the current view's features and the labels; predict the view; estimate its
        accuracy on labels held out in 5 stratified folds (leave-one-out below 5 labels).  Runs off the page's thread inside a server."""
        ex = self.explorer
        if ex.result is None:
            self.message = "no feature map yet"
            return
        feats = ex.result.features
        try:
            points = self.labels.probe_points()
        except AnySatError as e:
            ex.error = str(e)
            return
        classes = list(self.labels.classes)
        job = self._start_job("fitting the probe ...")

        def work() -> Any:
            return self._fit(feats, points, classes, job)

        def finish(value: Any, err: str) -> None:
            if job != self._job:
                return
            self.running = False
            if value is None:
                if err == "cancelled":
                    self.message = "probe cancelled"
                else:
                    ex.error = err
                    self.message = "probe failed"
                return
            if ex.result is None or ex.result.features is not feats:
                self.message = "the view changed while the probe ran; run it again"
                return
            probe, pred, metrics, cm = value
            ex.error = ""
            self.param.update(
                probe=probe, prediction=pred, metrics=metrics, confusion=cm, progress=100, prediction_classes=classes
            )
            if "prediction" not in ex.layers:
                ex.layers = [*ex.layers, "prediction"]
            self.message = (
                f"probe on {metrics['labels']} label(s) of {metrics['classes']} classes: held-out accuracy "
                f"{metrics['accuracy']:.1f} %, macro F1 {metrics['macro_f1']:.1f} % ({metrics['seconds']:.2f} s)"
            )

        self._dispatch(work, finish)

    def _step(self, done: int, total: int, job: int) -> None:
        if self._cancel.is_set() or job != self._job:
            raise Cancelled
        self.progress = int(100 * done / max(total, 1))

    def _fit(self, feats: xr.DataArray, points: list[tuple[Any, int]], classes: list[str], job: int) -> tuple:
        from anysat_core import fit_from_points
        from anysat_core.analysis.labels import geometry_cells
        from anysat_core.analysis.metrics import confusion_matrix, miou, multiclass_f1, overall_accuracy

        t0 = time.perf_counter()
        k = len(classes)
        _check_inside(feats, points)
        probe = fit_from_points(feats, points, num_classes=k, nan="drop")
        pred = probe.predict_map(feats)
        truth, guess = [], []
        n = len(points)
        # held-out estimate: labels in FOLDS stratified folds (every class spread over the folds; leave-one-out
        # when there are fewer labels); each fold is predicted by a probe fitted on the others
        n_folds = min(FOLDS, n)
        rank: dict[int, int] = {}
        fold_of = []
        for _, c in points:
            fold_of.append(rank.get(c, 0) % n_folds)
            rank[c] = rank.get(c, 0) + 1
        for f in range(n_folds):
            self._step(f, n_folds + 1, job)
            rest = [p for p, fo in zip(points, fold_of) if fo != f]
            held = [p for p, fo in zip(points, fold_of) if fo == f]
            if len({c for _, c in rest}) < 2 or not held:
                continue
            fitted = fit_from_points(feats, rest, num_classes=k, nan="drop")
            self._step(f, n_folds + 1, job)  # a second cancel check per fold: cancel takes effect within a fit
            flat = fitted.predict_map(feats)["prediction"].values.ravel()
            for geom, cls in held:
                votes = flat[geometry_cells(feats, _as_geojson(geom))]
                votes = votes[votes >= 0]
                if votes.size:
                    truth.append(cls)
                    guess.append(int(np.bincount(votes, minlength=k).argmax()))
        cm = confusion_matrix(np.array(truth), np.array(guess), k) if truth else np.zeros((k, k), np.int64)
        used = sorted({c for _, c in points})  # classes with labels: the macro average is over them
        metrics = {
            "labels": n,
            "classes": len({c for _, c in points}),
            "held_out": len(truth),
            "accuracy": overall_accuracy(cm) if truth else float("nan"),
            # percent, like overall_accuracy (multiclass_f1 and miou return fractions)
            "macro_f1": 100 * float(np.mean(multiclass_f1(np.array(truth), np.array(guess), k, average="none")[used]))
            if truth
            else 0.0,
            "miou": 100 * miou(cm) if truth else float("nan"),
            "per_class_f1": (
                [100 * float(v) for v in multiclass_f1(np.array(truth), np.array(guess), k, average="none")]
                if truth
                else []
            ),
            "seconds": time.perf_counter() - t0,
        }
        self._step(n_folds + 1, n_folds + 1, job)
        return probe, pred, metrics, cm

    def run_tile_probe(self, efficiency: bool = False) -> None:
        """Tile probe across tiles of the current source with its dataset labels: tile features of the first
        :attr:`tile_tiles` tiles (current modalities, dates, patch size, weights), 5-fold cross-validated paper
        metrics, and with ``efficiency`` a label-efficiency curve.  Progress per tile; cancel between tiles."""
        ex = self.explorer
        src = ex.source_obj
        task = {"multilabel": "multilabel", "classification": "multiclass"}.get(src.task)
        if task is None:
            ex.error = (
                f"{src.label} has no tile labels (task {src.task or 'none'}); the tile probe needs a dataset with "
                "multi-label or multi-class tile labels (e.g. GeoPlex-mini, TreeSatAI-TS); use the pixel probe "
                "with labels on the map instead"
            )
            return
        n = min(self.tile_tiles, len(src))
        base = ex.request()
        job = self._start_job(f"tile features of {n} tiles ...")

        def work() -> Any:
            from anysat_core import TileProbe, label_efficiency
            from app.compute import compute_features

            X, Y = [], []
            for i in range(n):
                self._step(i, n, job)
                req = dataclasses.replace(base, tile=i, output="tile", output_modality=None)
                X.append(compute_features(req, ex.config).values[0])
                Y.append(np.asarray(src.sample(i)["label"]))
            Xa, Ya = np.stack(X), np.stack(Y)
            if task == "multiclass":
                Ya = Ya.reshape(len(Ya), -1)[:, 0].astype(int)
            probe = TileProbe(task, num_classes=len(src.classes) if task == "multiclass" else None)
            cv = probe.cross_validate(Xa, Ya)
            curve = (
                label_efficiency(Xa, Ya, sizes=[s for s in (4, 8, 16, 32, 64) if s < 0.7 * n], task=task)
                if efficiency
                else []
            )
            return (cv, curve)

        def finish(value: Any, err: str) -> None:
            if job != self._job:
                return
            self.running = False
            if value is None:
                self.message = "tile probe cancelled" if err == "cancelled" else "tile probe failed"
                if err != "cancelled":
                    ex.error = err
                return
            cv, curve = value
            keep = {k: v for k, v in cv.items() if isinstance(v, (int, float))}
            self.param.update(tile_metrics={"tiles": n, "task": task, **keep}, efficiency=curve, progress=100)
            score = keep.get("F1_macro", 0.0) * 100
            self.message = f"tile probe on {n} tiles ({task}): macro F1 {score:.1f} % (5-fold cross-validation)"

        self._dispatch(work, finish)

    def run_scene(self, *, resume: bool = True, overwrite: bool = False) -> None:
        """Map the whole raster scene of the current source with :func:`anysat_core.infer_scene` (current weights,
        modalities, patch size and output; windows of the source's tile size, one patch of overlap), writing a
        resumable output under the output root; optionally with the fitted probe.  Progress per window; cancel
        stops after the current window and keeps the partial store, so that running again resumes it.  With a Dask
        scheduler configured (``--scheduler``), windows run on the cluster."""
        from app.sources import SceneSource

        ex = self.explorer
        src = ex.source_obj
        if not isinstance(src, SceneSource):
            ex.error = (
                f"{src.label} is not a raster scene; scene inference maps your own rasters: open one under "
                "'Your own raster' first"
            )
            return
        try:
            name = self.scene_name.strip() or f"scene_{ex.result.request.patch_size_m:g}m.tif"
            path = self._output_path(name, (".tif", ".tiff", ".zarr"))
            if self.scene_with_probe and self.probe is None:
                raise ConfigError("no fitted probe: run the probe first, or untick 'with the probe'")
        except AnySatError as e:
            ex.error = str(e)
            return
        req = ex.request()
        grid = src.scene.grid
        window = float(grid.tile_m)
        overlap = req.patch_size_m if req.patch_size_m <= window / 2 else 0.0
        probe = self.probe if self.scene_with_probe else None
        job = self._start_job(f"mapping the scene into {path.name} ...")
        doc = ex._session_doc()

        def report(done: int, total: int) -> None:
            if self._cancel.is_set() or job != self._job:
                raise Cancelled
            pct = int(100 * done / max(total, 1))
            if doc is None:
                self.progress = pct
            else:
                doc.add_next_tick_callback(lambda: setattr(self, "progress", pct))

        def work() -> Any:
            from anysat_core import infer_scene
            from app.resources import get_model

            loaded = get_model(req.weights, ex.config)
            with loaded.lock:
                out = infer_scene(
                    loaded.model,
                    src.scene,
                    patch_size_m=req.patch_size_m,
                    window_m=window,
                    overlap_m=overlap,
                    output=req.output,
                    output_modality=req.output_modality,
                    out=path,
                    overwrite=overwrite,
                    resume=resume,
                    progress=False,
                    client=ex.config.scheduler or None,
                    probe=probe,
                    callback=report,
                    precision=req.precision,
                )
            return (out, *_scene_layers(Path(out)))

        def finish(value: Any, err: str) -> None:
            if job != self._job:
                return
            self.running = False
            if value is None:
                if err == "cancelled":
                    self.message = (
                        f"scene run cancelled; its partial output stays beside {path.name}: run it again to resume"
                    )
                else:
                    ex.error = err
                    self.message = "scene run failed"
                return
            out, rgb, pred = value
            self.param.update(scene_output=str(out), scene_rgb=rgb, scene_prediction=pred, progress=100)
            self.message = f"scene written to {out} ({rgb.sizes['x']} x {rgb.sizes['y']} cells)"

        self._dispatch(work, finish)

    def _label_maps(self) -> Any:
        """``i -> (H, W) label DataArray`` of the source's dataset segmentation labels, and the class names.

        Raises:
            ConfigError: the source has no segmentation labels.
        """
        from anysat_core.analysis.labels import labels_to_dataarray

        src = self.explorer.source_obj
        ds = getattr(src, "dataset", None)
        if ds is not None and ds.name == "geoplex-mini":
            from anysat_core.data.datasets import get_dataset

            twin = get_dataset(
                "geoplex-mini", seed=ds.seed, split=ds.split, task="segmentation", modalities=("s2",), normalize=False
            )
            return (lambda i: labels_to_dataarray(twin[i]["label"], twin[i]["meta"])), list(twin.classes)
        if ds is not None and src.task in ("segmentation", "pixel-classification"):
            return (lambda i: labels_to_dataarray(src.sample(i)["label"], src.sample(i)["meta"])), list(src.classes)
        raise ConfigError(
            f"{src.label} has no segmentation labels (task {src.task or 'none'}); the dataset-label pixel probe needs "
            "a segmentation dataset (GeoPlex-mini, PASTIS-HD, FLAIR...); put labels on the map instead"
        )

    def run_dataset_pixel_probe(self) -> None:
        """Pixel probe on the source's segmentation labels: features of the first :attr:`seg_tiles` tiles (current
        view settings), fitted on 70 % of them and evaluated on the rest (OA, mIoU); the fitted probe then predicts
        the current view.  Progress per tile; cancel between tiles."""
        ex = self.explorer
        try:
            label_of, classes = self._label_maps()
        except AnySatError as e:
            ex.error = str(e)
            return
        src = ex.source_obj
        n = min(self.seg_tiles, len(src))
        base = ex.request()
        feats_now = ex.result.features if ex.result is not None else None
        job = self._start_job(f"features and labels of {n} tiles ...")

        def work() -> Any:
            from anysat_core import PixelProbe
            from app.compute import compute_features

            maps, labels = [], []
            for i in range(n):
                self._step(i, n, job)
                maps.append(compute_features(dataclasses.replace(base, tile=i), ex.config))
                labels.append(label_of(i))
            cut = max(1, round(0.7 * n))
            probe = PixelProbe(len(classes), nan="drop").fit(maps[:cut], labels[:cut])
            scores = probe.evaluate(maps[cut:], labels[cut:])
            pred = probe.predict_map(feats_now) if feats_now is not None else None
            return (probe, scores, pred)

        def finish(value: Any, err: str) -> None:
            if job != self._job:
                return
            self.running = False
            if value is None:
                self.message = "pixel probe cancelled" if err == "cancelled" else "pixel probe failed"
                if err != "cancelled":
                    ex.error = err
                return
            probe, scores, pred = value
            cut = max(1, round(0.7 * n))
            self.param.update(
                probe=probe,
                prediction=pred,
                prediction_classes=classes,
                confusion=None,
                metrics={},
                progress=100,
                tile_metrics={
                    "tiles": n,
                    "task": f"segmentation: {cut} tiles fitted, {n - cut} evaluated",
                    "OA": float(scores["OA"]),
                    "mIoU": 100 * float(scores["mIoU"]),
                    "pixels": float(scores["n_pixels"]),
                },
            )
            if pred is not None and "prediction" not in ex.layers:
                ex.layers = [*ex.layers, "prediction"]
            self.message = (
                f"pixel probe on the dataset labels of {n} tiles: mIoU {100 * scores['mIoU']:.1f} %, "
                f"OA {scores['OA']:.1f} % on {n - cut} held-out tiles"
            )

        self._dispatch(work, finish)

    def least_confident(self) -> list[tuple[float, float, float]]:
        """``[(x, y, confidence)]`` of the ``review_k`` least confident cells (the next ones to label)."""
        if self.prediction is None or self.review_k <= 0:
            return []
        conf = self.prediction["confidence"]
        v = conf.values.ravel()
        idx = np.flatnonzero(np.isfinite(v))
        idx = idx[np.argsort(v[idx], kind="stable")][: self.review_k]
        rows, cols = np.unravel_index(idx, conf.shape)
        return [(float(conf.x[c]), float(conf.y[r]), float(v[i])) for r, c, i in zip(rows, cols, idx)]

    # ------------------------------------------------------------------ export
    def _output_path(self, name: str, suffixes: tuple[str, ...]) -> Path:
        """``name`` as a path under the output root (nothing outside it)."""
        root = self.explorer.config.output_root
        name = name.strip()
        if not name:
            raise ConfigError("give the file a name")
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise ConfigError(f"{name!r}: give a name under the output root {root}, without '..' or a leading '/'")
        if p.suffix.lower() not in suffixes:
            raise ConfigError(f"{name!r}: expected a name ending in {' or '.join(suffixes)}")
        out = (root / p).resolve()
        if root.resolve() not in out.parents:
            raise ConfigError(f"{name!r} resolves outside the output root {root}")
        return out

    def layer_array(self, layer: str) -> xr.DataArray:
        """The DataArray of an export layer of the current view.

        Raises:
            ConfigError: the layer is not computed (e.g. no probe yet, no similarity click).
        """
        ex = self.explorer
        res = ex.result
        if res is None:
            raise ConfigError("no feature map yet")
        arrays = {
            "features": res.features,
            "pca": res.pca,
            "similarity": res.similarity,
            "clusters": res.clusters,
            "prediction": self.prediction["prediction"] if self.prediction is not None else None,
            "confidence": self.prediction["confidence"] if self.prediction is not None else None,
        }
        da = arrays.get(layer)
        if da is None:
            hint = {
                "similarity": "click the map first",
                "clusters": "switch the clusters layer on",
                "prediction": "run a probe first",
                "confidence": "run a probe first",
            }.get(layer, "")
            raise ConfigError(f"the {layer} layer is not computed; {hint}")
        return da

    def default_name(self) -> str:
        ex = self.explorer
        req = ex.result.request if ex.result is not None else None
        tile = ex.tile or "tile"
        p = f"{req.patch_size_m:g}m" if req else ""
        return f"{tile}_{self.export_layer}_{p}{_SUFFIX[self.export_format]}"

    def export(self, *, overwrite: bool = False) -> Path:
        """Write the chosen layer in the chosen format under the output root, with provenance attributes.

        Raises:
            OutputExistsError: the file exists and ``overwrite`` is False (never clobbered silently).
            ConfigError: a layer not computed, a bad name.
            MissingCRSError: a GeoTIFF/COG of a view without CRS.
        """
        from anysat_core import write_geotiff, write_png, write_zarr

        name = self.export_name.strip() or self.default_name()
        path = self._output_path(name, (_SUFFIX[self.export_format],))
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; press 'Overwrite' to replace it, or change the name")
        da = self.layer_array(self.export_layer)
        da = da.assign_attrs(_provenance(self.explorer, self.export_layer))
        fmt = self.export_format
        if fmt == "PNG":
            if "band" not in da.dims:
                raise ConfigError("PNG export takes the PCA colours; choose the pca layer (or GeoTIFF for others)")
            out = write_png(da, path, overwrite=overwrite)
        elif fmt == "Zarr":
            out = write_zarr(da.astype(np.float32) if da.dtype.kind in "iu" else da, path, overwrite=overwrite)
        else:
            arr = da.rename({"band": "feature"}) if "band" in da.dims else da
            arr = arr.astype(np.float32)
            out = write_geotiff(arr, path, overwrite=overwrite)
            if fmt == "COG":
                _to_cog(out)
        self.last_export = str(out)
        self.message = f"{self.export_layer} written to {out}"
        return out

    def export_vectors(self, what: str, name: str, *, overwrite: bool = False) -> Path:
        """Write ``"labels"`` or the ``"prediction"`` as polygons (one per connected region of a class, with its
        class name and mean confidence) to a GeoJSON/GeoPackage under the output root, with the CRS.

        Raises:
            OutputExistsError: the file exists and ``overwrite`` is False.
            ConfigError: nothing to write (no labels, no probe), a bad name.
        """
        path = self._output_path(name, (".geojson", ".json", ".gpkg"))
        if what == "labels":
            if not len(self.labels):
                raise ConfigError("no label to write; put labels on the map first")
            out = self.labels.save(path, overwrite=overwrite)
        elif what == "prediction":
            if self.prediction is None:
                raise ConfigError("no prediction to write; run the probe first")
            out = _prediction_polygons(self.prediction, self.prediction_classes, path, overwrite)
        else:
            raise ConfigError(f"vector export of {what!r}; expected 'labels' or 'prediction'")
        self.last_export = str(out)
        self.message = f"{what} polygons written to {out}"
        return out

    # ------------------------------------------------------------------ code
    def code(self) -> str:
        return generate_code(self.explorer, self)


def _scene_layers(path: Path) -> tuple[xr.DataArray, xr.DataArray | None]:
    """PCA colours (fitted on a subsample) and the prediction, if any, of a scene output file."""
    from anysat_core import PCARGB

    if path.suffix == ".zarr":
        ds = xr.open_zarr(path)
        feats = ds["anysat_features"].load()
        pred = ds["prediction"].load() if "prediction" in ds else None
    else:
        import rioxarray

        da = rioxarray.open_rasterio(path, masked=True)
        names = list(da.attrs.get("long_name", ())) if isinstance(da.attrs.get("long_name"), tuple) else []
        pred = None
        if names and "prediction" in names:
            pred = da.isel(band=names.index("prediction"))
            keep = [i for i, n in enumerate(names) if n not in ("prediction", "confidence")]
            da = da.isel(band=keep)
        feats = da.rename({"band": "feature"}).astype(np.float32)
    rgb = PCARGB(max_samples=20_000).fit(feats).transform(feats)
    return rgb, pred


def _prediction_polygons(pred: xr.Dataset, classes: list[str], path: Path, overwrite: bool) -> Path:
    """Polygons of the connected regions of each predicted class (rasterio.features.shapes), written atomically."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    cls = pred["prediction"].values.astype(np.int32)
    conf = pred["confidence"].values
    transform = pred["prediction"].rio.transform()
    geoms, names, ids, means = [], [], [], []
    for geom, value in shapes(cls, mask=cls >= 0, transform=transform):
        g = shape(geom)
        geoms.append(g)
        ids.append(int(value))
        names.append(classes[int(value)] if 0 <= int(value) < len(classes) else str(int(value)))
        from rasterio.features import geometry_mask

        inside = ~geometry_mask([geom], cls.shape, transform)
        means.append(float(np.nanmean(conf[inside])) if inside.any() else float("nan"))
    frame = gpd.GeoDataFrame(
        {"class": names, "class_id": ids, "mean_confidence": means}, geometry=geoms, crs=pred.rio.crs
    )
    from app.labels import write_frame

    return write_frame(frame, path, overwrite=overwrite)


def _to_cog(path: Path) -> None:
    """Rewrite a GeoTIFF as a Cloud-Optimised GeoTIFF in place (atomically)."""
    import os
    import tempfile

    import rasterio
    from rasterio.shutil import copy as rio_copy

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tif", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.open(path) as src:
            rio_copy(src, tmp, driver="COG", compress="DEFLATE")
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _as_geojson(geom: Any) -> dict[str, Any]:
    from shapely.geometry import mapping

    return dict(mapping(geom))


def _check_inside(feats: xr.DataArray, points: list[tuple[Any, int]]) -> None:
    xs, ys = feats.x.values, feats.y.values
    dx = abs(float(xs[1] - xs[0])) if xs.size > 1 else 1.0
    dy = abs(float(ys[1] - ys[0])) if ys.size > 1 else dx
    l, r = xs.min() - dx / 2, xs.max() + dx / 2
    b, t = ys.min() - dy / 2, ys.max() + dy / 2
    outside = [i for i, (g, _) in enumerate(points) if not (l <= g.centroid.x <= r and b <= g.centroid.y <= t)]
    if outside:
        raise ExtentMismatchError(
            f"label(s) {outside} lie outside this view ({l:.1f}, {b:.1f}, {r:.1f}, {t:.1f}); remove them or open "
            "the tile they are on"
        )


def _provenance(ex: ExplorerState, layer: str) -> dict[str, str]:
    req = ex.result.request if ex.result is not None else None
    return {
        "anysat_explorer_layer": layer,
        "source": ex.source,
        "tile": str(ex.tile),
        "weights": ex.model_label,
        "request": json.dumps(dataclasses.asdict(req)) if req else "",
    }


def generate_code(ex: ExplorerState, loop: ProbeLoop | None = None) -> str:
    """Python (``anysat_core`` only) that reproduces the current view: source, weights, modalities, dates, patch size,
    output, PCA basis, similarity query and probe with its labels.  The last value it computes is ``rgb``, the PCA
    colours of the view (a DataArray ``(band, y, x)``)."""
    res = ex.result
    if res is None:
        raise ConfigError("no view to reproduce yet")
    req = res.request
    src = ex.source_obj
    lines = ["import torch", "", "import anysat_core as ac", ""]
    if req.weights == "geoplex-mini":
        lines.append('model = ac.AnySat.from_pretrained("geoplex-mini").eval()')
    elif req.weights == "base":
        lines.append('model = ac.AnySat.from_pretrained("base", local_files_only=True).eval()')
    elif req.weights == "random":
        lines += [
            "torch.manual_seed(0)  # the explorer's random-init weights",
            f'model = ac.AnySat(size="{ex.config.size}").eval()',
        ]
    else:
        lines.append(f"model = ac.AnySat.from_checkpoint({req.weights[5:]!r}).eval()")
    if req.source == "geoplex-mini":
        from app.resources import default_cache_dir

        lines.append(
            f'data = ac.get_dataset("geoplex-mini", seed=0, split="all", cache_dir={str(default_cache_dir())!r})'
        )
        lines.append(f"sample = data[{req.tile}]  # tile {src.tile_ids[req.tile]}")
    elif req.source.startswith("dataset:"):
        _, name, split, mods, root = req.source.split(":", 4)
        raw = "RAW values" in src.label
        lines.append(
            f"data = ac.get_dataset({name!r}, root={root!r}, split={split!r}, modalities={mods.split(',')!r}"
            + (", normalize=False)" if raw else ")")
        )
        lines.append(f"sample = data[{req.tile}]")
    else:
        spec = json.loads(req.source[7:])
        lines.append(
            f"source = ac.RasterSource({spec['paths'] if len(spec['paths']) > 1 else spec['paths'][0]!r}, "
            f"{spec['modality']!r}"
            + (f", dates={spec['dates']!r}" if spec["dates"] else "")
            + (f", bands={list(spec['bands'])!r}" if spec.get("bands") else "")
            + ")"
        )
        lines.append(f"scene = ac.open_rasters([source], tile_m={src.scene.grid.tile_m!r})")
        r, c = src.rc[req.tile]
        lines.append(f"sample = scene.tile({r}, {c})")
    keep = list(req.modalities)
    lines.append(f"inputs = {{k: v for k, v in sample.items() if k == 'meta' or k.split('_')[0] in {keep!r}}}")
    for m, idx in req.dates:
        lines.append(f"keep = {list(idx)!r}  # the {m} dates of the view")
        lines.append(f"inputs[{m!r}] = inputs[{m!r}][keep]")
        lines.append(f"inputs[{m + '_dates'!r}] = inputs[{m + '_dates'!r}][keep]")
        lines.append(f"if {m + '_mask'!r} in inputs:")
        lines.append(f"    inputs[{m + '_mask'!r}] = inputs[{m + '_mask'!r}][keep]")
    om = f", output_modality={req.output_modality!r}" if req.output == "dense" else ""
    prec = f", precision={req.precision!r}" if req.precision != "fp32" else ""
    lines.append(
        f"features = ac.extract_features(model, inputs, patch_size_m={req.patch_size_m!r}, output={req.output!r}{om}"
        f"{prec})"
    )
    if ex.pca_basis == "shared" and ex._shared_pca is not None:
        lines.append("# the view used the session's shared PCA basis; here it is fitted on this map only")
    lines.append("pca = ac.PCARGB().fit(features)")
    lines.append("rgb = pca.transform(features)  # (band, y, x) colours in [0, 1]")
    if ex.positives:
        lines.append(f"similarity = ac.refine(features, {ex.positives!r}, {ex.negatives!r})")
    if loop is not None and len(loop.labels):
        pts = [(json.dumps(_as_geojson(g)), loop.labels.classes.index(c)) for g, c in loop.labels.items]
        lines.append(f"classes = {loop.labels.classes!r}")
        lines.append("labels = [")
        for gj, c in pts:
            lines.append(f"    ({gj}, {c}),")
        lines.append("]")
        lines.append('probe = ac.fit_from_points(features, labels, num_classes=len(classes), nan="drop")')
        lines.append('prediction = probe.predict_map(features)  # Dataset: "prediction", "confidence" (y, x)')
    return "\n".join(lines) + "\n"


__all__ += ["Cancelled", "LabelsError"]
