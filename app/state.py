"""The state of one explorer session: what is selected and what was computed; no widgets.

:class:`ExplorerState` holds the choices (source, tile, modalities, dates, patch size, output, weights, precision,
PCA basis, query points, layers) as parameters, keeps every choice valid for the current tile and model (options are
narrowed as the tile and weights change), and recomputes when one changes:

* without a Bokeh session (tests, notebooks) the work runs at once, in the caller's thread;
* inside ``panel serve`` it runs on a worker thread; the result is applied on the session's event loop only if no
  newer request was made meanwhile (latest wins), so the page never blocks and a stale result never overwrites a
  newer one.

Every :class:`~anysat_core.errors.AnySatError` ends up in :attr:`ExplorerState.error` (shown in the page; the log
gets one line, no traceback); any other exception is logged with its traceback and shown briefly.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import param
import xarray as xr

from anysat_core.errors import AnySatError, ConfigError
from anysat_core.modalities import MODALITIES
from app.compute import FeatureRequest, composite, compute_features, valid_patch_sizes
from app.config import AppConfig
from app.resources import bf16_supported, get_model, list_weights
from app.sources import DEFAULT_SOURCE, TileSource, discover_datasets, open_source

__all__ = ["EXECUTOR", "ExplorerState", "PaneSpec", "Result"]

log = logging.getLogger("anysat_explorer")

#: worker threads shared by every session of the process (inference holds a per-model lock anyway).
EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="anysat-explorer")

#: a PCA colour basis needs at least this many cells (fewer: the basis is fitted on the tile's finest map).
MIN_PCA_CELLS = 4

LAYERS = ["input", "pca", "similarity", "clusters", "prediction", "confidence", "footprints"]


@dataclasses.dataclass
class Result:
    """What one request produced (None where a layer is off or not computable)."""

    request: FeatureRequest
    features: xr.DataArray
    pca: xr.DataArray | None = None
    similarity: xr.DataArray | None = None
    clusters: xr.DataArray | None = None
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class PaneSpec:
    """One pane of the compare view: its own modality subset, date subset and patch size."""

    modalities: tuple[str, ...]
    patch_size_m: float
    dates: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def label(self) -> str:
        d = "".join(f", {m} {len(ix)} dates" for m, ix in self.dates)
        return f"{' + '.join(self.modalities)} @ {self.patch_size_m:g} m{d}"


class ExplorerState(param.Parameterized):
    """Selections and results of one session (see the module docstring)."""

    source = param.Selector(default=DEFAULT_SOURCE, objects=[DEFAULT_SOURCE], doc="tile source key")
    tile = param.Selector(default=None, objects=[], check_on_set=True, allow_None=True, doc="tile id in the source")
    modalities = param.ListSelector(default=[], objects=[], doc="modalities fed to the model")
    dates = param.Dict(default={}, doc="{time-series modality: kept date indices}; absent = all dates")
    patch_size_m = param.Selector(
        default=None, objects=[], check_on_set=True, allow_None=True, doc="patch side in metres (valid values only)"
    )
    output = param.Selector(default="patch", objects=["patch", "dense"], doc="feature map: per patch or dense")
    output_modality = param.Selector(
        default=None, objects=[], check_on_set=True, allow_None=True, doc="modality of the dense sub-patch grid"
    )
    weights = param.Selector(default="geoplex-mini", objects=["geoplex-mini"], doc="model weights")
    precision = param.Selector(default="fp32", objects=["fp32"], doc="fp32 (exact) or bf16 (fast)")
    pca_basis = param.Selector(default="view", objects=["view", "shared"], doc="PCA fitted on this view or shared")
    opacity = param.Number(default=0.75, bounds=(0.0, 1.0), doc="opacity of the analysis layers")
    input_modality = param.Selector(
        default=None, objects=[], check_on_set=True, allow_None=True, doc="modality shown as the input image"
    )
    input_date = param.Integer(default=0, bounds=(0, None), doc="date index of the input image")
    click_mode = param.Selector(
        default="positive", objects=["positive", "negative", "label", "pick tile"], doc="what a click on the map does"
    )
    positives = param.List(default=[], doc="(x, y) similarity examples, in the source CRS")
    negatives = param.List(default=[], doc="(x, y) counter-examples, in the source CRS")
    similarity_threshold = param.Number(default=-1.0, bounds=(-2.0, 2.0), doc="cells below are hidden")
    top_k = param.Integer(default=0, bounds=(0, 1000), doc="highlight the k most similar cells (0 = off)")
    n_clusters = param.Integer(default=5, bounds=(2, 16), doc="k of the k-means layer")
    layers = param.ListSelector(default=["input", "pca", "footprints"], objects=LAYERS, doc="visible layers")
    compare_panes = param.List(default=[], doc="PaneSpec of the compare view (2 to 4)")
    compare_difference = param.Tuple(default=(0, 1), length=2, doc="panes compared by the agreement layer")

    # results (read-only for views)
    result = param.Parameter(default=None, doc="latest Result")
    input_image = param.Parameter(default=None, doc="input composite DataArray (band, y, x) uint8")
    compare_results = param.List(default=[], doc="feature maps of the compare panes")
    compare_pca = param.List(default=[], doc="PCA colours of the compare panes (one shared basis)")
    compare_agreement = param.Parameter(default=None, doc="agreement map between two compare panes")
    status = param.String(default="", doc="what the page says about the latest result")
    error = param.String(default="", doc="the latest error, shown in the page")
    notice = param.String(default="", doc="a lasting warning about the session's settings (e.g. weights not found)")
    busy = param.Boolean(default=False, doc="a request is running")
    model_label = param.String(default="", doc="what the page says about the weights")
    last_click = param.String(default="", doc="where the last click was (source CRS and lat/lon)")

    def __init__(self, config: AppConfig | None = None, *, doc: Any = None, **params: Any) -> None:
        self.config = config or AppConfig.from_env()
        self._doc = doc  # a Bokeh document to apply results on (None: the current session's, if any)
        self._latest = 0
        self._compare_latest = 0
        self._lock = threading.Lock()
        self._shared_pca: Any = None
        self._shared_key: tuple[Any, ...] | None = None
        self._source_obj: TileSource | None = None
        self._settings_notice = ""  # the lasting part of notice (weights); the source's warnings are added to it
        self._sample: Mapping[str, Any] | None = None
        self._batch = 0  # >0 while several parameters are set together
        self.compute_hook: Callable[[FeatureRequest], None] | None = None  # tests: runs before each computation
        self.label_click_handler: Callable[[float, float], None] | None = None  # set by the probe loop
        super().__init__(**{k: v for k, v in params.items() if k not in ("source", "tile", "weights")})
        self.sources = {"GeoPlex-mini (embedded)": DEFAULT_SOURCE}
        self.sources.update(discover_datasets(self.config))
        self.weight_choices = list_weights(self.config)
        with param.parameterized.discard_events(self):
            self.param.source.objects = list(self.sources.values())
            self.param.weights.objects = list(self.weight_choices.values())
            want = params.get("weights", self.config.weights)
            if want in self.param.weights.objects:
                self.weights = want
            elif want:
                using = next(label for label, key in self.weight_choices.items() if key == self.weights)
                self._settings_notice = (
                    f"weights {want!r} are not available here, so these are used: {using}. "
                    f"Other choices are in the Weights menu"
                    + (
                        " (the released base weights: set ANYSAT_WEIGHTS=/path/to/AnySat.pth or download them once "
                        "with anysat_core.AnySat.from_pretrained('base'))"
                        if want == "base"
                        else " (a checkpoint file must be under a data root)"
                    )
                )
            self.param.precision.objects = ["fp32", "bf16"] if bf16_supported() else ["fp32"]
        self.notice = self._settings_notice
        self._guard(self._load_source, params.get("source", DEFAULT_SOURCE), params.get("tile"))
        # the first view is computed with the page: every model of the session exists before its HTML is made (an
        # update applied before that would get CDN stylesheet URLs from Panel, which fail offline)
        self.refresh(sync=True)

    # ------------------------------------------------------------------ helpers
    @property
    def source_obj(self) -> TileSource:
        assert self._source_obj is not None
        return self._source_obj

    @property
    def sample(self) -> Mapping[str, Any]:
        assert self._sample is not None
        return self._sample

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn``; an AnySatError becomes :attr:`error` (no traceback in the log)."""
        try:
            return fn(*args)
        except AnySatError as e:
            log.info("user error: %s", e)
            self.error = str(e)
        except Exception as e:
            log.exception("unexpected error")
            self.error = f"unexpected error ({type(e).__name__}: {e}); see the server log"
        return None

    def add_source(self, key: str, label: str) -> None:
        """Add a source (e.g. the user's raster) to the choices and select it."""
        self.sources[label] = key
        self.param.source.objects = list(dict.fromkeys([*self.param.source.objects, key]))
        self.source = key

    def open_raster(self, spec: Any) -> None:
        """Open the user's raster(s) (:class:`app.sources.RasterSpec`) as a source and select it; errors go to
        :attr:`error` and keep the current source."""

        def _open() -> None:
            src = open_source(spec.key(), self.config)
            self.add_source(spec.key(), src.label)

        self._guard(_open)

    # ------------------------------------------------------------------ narrowing choices
    def _load_source(self, key: str, tile: str | None = None) -> None:
        src = open_source(key, self.config)
        self._source_obj = src
        self.notice = "\n\n".join(filter(None, [self._settings_notice, *src.warnings]))
        with param.parameterized.discard_events(self):
            self.param.source.objects = list(dict.fromkeys([*self.param.source.objects, key]))
            self.source = key
            self.param.tile.objects = src.tile_ids
            self.tile = tile if tile in src.tile_ids else src.tile_ids[0]
        self._load_tile()

    def _load_tile(self) -> None:
        src = self.source_obj
        sample = src.sample(src.index_of(self.tile))
        self._sample = sample
        model = get_model(self.weights, self.config)
        self.model_label = model.label
        have = [m for m in src.modalities if m in sample]
        usable = [m for m in have if m in model.modalities]
        with param.parameterized.discard_events(self):
            self.param.modalities.objects = usable
            kept = [m for m in self.modalities if m in usable]
            self.modalities = kept or list(usable)
            self.param.input_modality.objects = have
            if self.input_modality not in have:
                self.input_modality = _finest(have)
            self.dates = {m: ix for m, ix in self.dates.items() if m in sample}
            self._narrow()
        self._update_input()
        if not usable:
            raise ConfigError(
                f"{model.label} reads none of this tile's modalities ({', '.join(have)}); choose other weights "
                f"(these read {', '.join(model.modalities)})"
            )

    def _narrow(self) -> None:
        """Keep patch size, output modality and input date valid for the tile, modalities and weights."""
        model = get_model(self.weights, self.config)
        sizes = valid_patch_sizes(self.sample, self.modalities, model.modalities) if self.modalities else []
        self.param.patch_size_m.objects = sizes
        if self.patch_size_m not in sizes:
            want = self.source_obj.default_patch_size_m
            self.patch_size_m = min(sizes, key=lambda p: abs(p - want)) if sizes else None
        spatial = [m for m in self.modalities if not MODALITIES[m].tile_token]
        self.param.output_modality.objects = spatial
        if self.output_modality not in spatial:
            self.output_modality = _finest(spatial)
        T = self.n_dates(self.input_modality)
        self.param.input_date.bounds = (0, max(T - 1, 1))  # a slider needs start < end (hidden for one date)
        if self.input_date >= max(T, 1):
            self.input_date = 0

    def n_dates(self, modality: str | None) -> int:
        """Number of dates of a modality in the current tile (1 for single-date modalities)."""
        if modality is None or self._sample is None or modality not in self.sample:
            return 0
        return int(self.sample[modality].shape[0]) if MODALITIES[modality].time_series else 1

    def date_labels(self, modality: str) -> list[str]:
        """Day-of-year labels of a time series' dates (``"doy 123"``)."""
        d = self.sample.get(modality + "_dates")
        return [f"doy {int(v)}" for v in (d.tolist() if d is not None else [])]

    # ------------------------------------------------------------------ watchers
    @param.depends("source", watch=True)
    def _on_source(self) -> None:
        self.positives, self.negatives = [], []
        self._guard(self._load_source, self.source)
        self.refresh()

    @param.depends("tile", watch=True)
    def _on_tile(self) -> None:
        self.positives, self.negatives = [], []
        self._guard(self._load_tile)
        self.refresh()

    @param.depends("weights", watch=True)
    def _on_weights(self) -> None:
        self._shared_pca = None
        self._guard(self._load_tile)
        self.refresh()

    @param.depends("modalities", "dates", watch=True)
    def _on_modalities(self) -> None:
        with param.parameterized.discard_events(self):
            self._guard(self._narrow)
        self.refresh()

    @param.depends(
        "patch_size_m",
        "output",
        "output_modality",
        "precision",
        "pca_basis",
        "positives",
        "negatives",
        "n_clusters",
        watch=True,
    )
    def _on_settings(self) -> None:
        self.refresh()

    @param.depends("layers", watch=True)
    def _on_layers(self) -> None:
        """Layer toggles only redraw, except the clusters layer, computed when first shown."""
        if "clusters" in self.layers and self.result is not None and self.result.clusters is None:
            self.refresh()

    @param.depends("input_modality", "input_date", watch=True)
    def _on_input(self) -> None:
        with param.parameterized.discard_events(self):
            self._guard(self._narrow)
        self._guard(self._update_input)

    @param.depends("compare_panes", "compare_difference", watch=True)
    def _on_compare(self) -> None:
        self.refresh_compare()

    # ------------------------------------------------------------------ requests
    def request(self, **overrides: Any) -> FeatureRequest:
        """The feature request of the current selection (``overrides`` replace fields, for compare panes)."""
        mods = tuple(sorted(overrides.pop("modalities", self.modalities)))
        dates = overrides.pop("dates", None)
        if dates is None:
            dates = tuple(
                (m, tuple(sorted(int(i) for i in ix)))
                for m, ix in sorted(self.dates.items())
                if m in mods and len(ix) < self.n_dates(m)
            )
        out = self.output
        return FeatureRequest(
            source=self.source,
            tile=self.source_obj.index_of(self.tile),
            modalities=mods,
            dates=dates,
            patch_size_m=float(overrides.pop("patch_size_m", self.patch_size_m) or 0),
            output=out,
            output_modality=self.output_modality if out == "dense" else None,
            weights=self.weights,
            precision=self.precision,
        )

    def _analyse(self, req: FeatureRequest, feats: xr.DataArray) -> Result:
        """PCA, similarity and clusters of a feature map (all cheap next to the model)."""
        from anysat_core import PCARGB, kmeans_map, refine

        res = Result(req, feats)
        fit_on = [feats]
        if int(np.isfinite(feats.values).all(axis=0).sum()) < MIN_PCA_CELLS:
            # too few cells for three colour axes (e.g. one 60 m patch): fit on the finest map of this tile
            sizes = self.param.patch_size_m.objects
            if sizes and sizes[0] != req.patch_size_m:
                fit_on = [compute_features(dataclasses.replace(req, patch_size_m=float(sizes[0])), self.config)]
        pca = self.pca_for(fit_on) if self.pca_basis == "shared" else PCARGB().fit(fit_on)
        res.pca = pca.transform(feats)
        if self.positives:
            res.similarity = refine(feats, self.positives, self.negatives)
        if "clusters" in self.layers:
            valid = int(np.isfinite(feats.values).all(axis=0).sum())
            k = min(self.n_clusters, max(valid, 1))
            res.clusters = kmeans_map(feats, k)[0]  # type: ignore[assignment]
        return res

    def pca_for(self, maps: Sequence[xr.DataArray]) -> Any:
        """The session's shared PCA basis, fitted once on the first maps it is asked for (refit with
        :meth:`refit_shared_basis` or when the weights or feature width change)."""
        from anysat_core import PCARGB

        key = (self.weights, self.output, maps[0].sizes["feature"])
        with self._lock:
            if self._shared_pca is None or self._shared_key != key:
                self._shared_pca = PCARGB().fit(list(maps))
                self._shared_key = key
            return self._shared_pca

    def refit_shared_basis(self) -> None:
        """Forget the shared basis; the next view fits a new one."""
        self._shared_pca = None
        self.refresh()

    def _work(self, req: FeatureRequest) -> Result:
        t0 = time.perf_counter()
        if self.compute_hook is not None:
            self.compute_hook(req)
        feats = compute_features(req, self.config)
        res = self._analyse(req, feats)
        res.seconds = time.perf_counter() - t0
        return res

    def _session_doc(self) -> Any:
        if self._doc is not None:
            return self._doc
        try:
            import panel as pn

            doc = pn.state.curdoc
        except Exception:  # noqa: BLE001
            return None
        return doc if doc is not None and getattr(doc, "session_context", None) else None

    def refresh(self, sync: bool = False) -> None:
        """Recompute the current view (see the module docstring for threads and stale results); ``sync`` computes in
        this thread even inside a session (the first view, built with the page)."""
        if self._source_obj is None or self._sample is None or not self.modalities or self.patch_size_m is None:
            return
        try:
            req = self.request()
        except AnySatError as e:
            self.error = str(e)
            return
        with self._lock:
            self._latest += 1
            rid = self._latest
        doc = None if sync else self._session_doc()
        if doc is None:
            self._finish(rid, self._run_safely(req))
            return
        self.busy = True
        self.status = "computing ..."

        def job() -> None:
            outcome = self._run_safely(req)
            doc.add_next_tick_callback(lambda: self._finish(rid, outcome))

        EXECUTOR.submit(job)

    def _run_safely(self, req: FeatureRequest) -> tuple[Result | None, str]:
        try:
            return self._work(req), ""
        except AnySatError as e:
            log.info("user error: %s", e)
            return None, str(e)
        except Exception as e:
            log.exception("unexpected error while computing %s", req)
            return None, f"unexpected error ({type(e).__name__}: {e}); see the server log"

    def _finish(self, rid: int, outcome: tuple[Result | None, str]) -> None:
        if rid != self._latest:  # a newer request was made: drop this one
            return
        res, err = outcome
        self.busy = False
        if res is None:
            self.error = err
            self.status = "failed"
            return
        self.error = ""
        self.result = res
        f = res.features
        self.status = (
            f"tile {self.source_obj.tile_ids[res.request.tile]}: {f.sizes['y']} x {f.sizes['x']} cells of {f.attrs.get('patch_size_m', '?')} m, "
            f"{f.sizes['feature']} features, {', '.join(res.request.modalities)}, {res.request.precision}; "
            f"{res.seconds:.2f} s"
        )
        if res.similarity is not None:
            self.status += f"; similarity to {len(self.positives)} example(s), {len(self.negatives)} counter-example(s)"

    def _update_input(self) -> None:
        """The input composite of the tile, modality and date; recomputed (and sent to the page) only when one of
        them changed."""
        if self._sample is None or self.input_modality is None:
            self.input_image, self._input_key = None, None
            return
        date = self.input_date if MODALITIES[self.input_modality].time_series else 0
        key = (self.source, self.tile, self.input_modality, date)
        if key == getattr(self, "_input_key", None) and self.input_image is not None:
            return
        self.input_image = composite(self.sample, self.input_modality, date)
        self._input_key = key

    # ------------------------------------------------------------------ clicks
    def click(self, x: float, y: float) -> None:
        """A click at ``(x, y)`` (source CRS): add a positive/negative example, or pick the tile under it."""
        self.last_click = _describe_point(x, y, self.source_obj.crs)
        if self.click_mode == "label":
            if self.label_click_handler is not None:
                self.label_click_handler(x, y)
            return
        if self.click_mode == "pick tile":
            i = self.source_obj.tile_at(x, y)
            if i is not None:
                self.tile = self.source_obj.tile_ids[i]
            return
        feats = self.result.features if self.result is not None else None
        if feats is None:
            return
        if not _inside(feats, x, y):
            i = self.source_obj.tile_at(x, y)
            if i is not None:  # a click on another tile's footprint opens it
                self.tile = self.source_obj.tile_ids[i]
            return
        with param.parameterized.batch_call_watchers(self):
            if "similarity" not in self.layers:
                self.layers = [*self.layers, "similarity"]
            if self.click_mode == "positive":
                self.positives = [*self.positives, (float(x), float(y))]
            else:
                self.negatives = [*self.negatives, (float(x), float(y))]

    def clear_examples(self) -> None:
        self.param.update(positives=[], negatives=[])

    # ------------------------------------------------------------------ compare
    def default_panes(self) -> list[PaneSpec]:
        """Two panes: every modality at the current patch size, and the first modality alone at the next size."""
        mods = tuple(self.modalities)
        sizes = self.param.patch_size_m.objects or [self.patch_size_m]
        p = float(self.patch_size_m or sizes[0])
        other = [s for s in sizes if s != p]
        first = (mods[0],) if len(mods) > 1 else mods
        return [PaneSpec(mods, p), PaneSpec(first, float(other[0]) if other else p)]

    def refresh_compare(self) -> None:
        """Compute the compare panes (shared PCA basis and the agreement layer); same threading as :meth:`refresh`."""
        panes = list(self.compare_panes)
        if not panes or self._source_obj is None:
            return
        if not 2 <= len(panes) <= 4:
            self.error = f"the compare view takes 2 to 4 panes; got {len(panes)}"
            return
        reqs = [self.request(modalities=p.modalities, patch_size_m=p.patch_size_m, dates=p.dates) for p in panes]
        with self._lock:
            self._compare_latest += 1
            rid = self._compare_latest
        a, b = self.compare_difference

        def work() -> tuple[Any, str]:
            from anysat_core import difference_map

            try:
                feats = [compute_features(r, self.config) for r in reqs]
                basis = self.pca_for(feats)
                colours = [basis.transform(f) for f in feats]
                agree = None
                if 0 <= a < len(feats) and 0 <= b < len(feats) and a != b and feats[a].rio.crs is not None:
                    agree = difference_map(feats[a], feats[b])
                return (feats, colours, agree), ""
            except AnySatError as e:
                return None, str(e)
            except Exception as e:
                log.exception("unexpected error in compare")
                return None, f"unexpected error ({type(e).__name__}: {e}); see the server log"

        def finish(outcome: tuple[Any, str]) -> None:
            if rid != self._compare_latest:
                return
            value, err = outcome
            if value is None:
                self.error = err
                return
            self.error = ""
            feats, colours, agree = value
            self.param.update(compare_results=feats, compare_pca=colours, compare_agreement=agree)

        doc = self._session_doc()
        if doc is None:
            finish(work())
            return

        def job() -> None:
            out = work()
            doc.add_next_tick_callback(lambda: finish(out))

        EXECUTOR.submit(job)


def _describe_point(x: float, y: float, crs: Any) -> str:
    """``x, y`` in the source CRS and as latitude, longitude."""
    if crs is None:
        return f"clicked at pixel x {x:.1f}, y {y:.1f} (no CRS)"
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(str(crs), "EPSG:4326", always_xy=True).transform(x, y)
    return f"clicked at x {x:.1f}, y {y:.1f} ({crs}); lat {lat:.6f}, lon {lon:.6f}"


def _finest(mods: Sequence[str]) -> str | None:
    spatial = [m for m in mods if not MODALITIES[m].tile_token]
    return min(spatial, key=lambda m: MODALITIES[m].gsd_m) if spatial else (mods[0] if mods else None)


def _inside(da: xr.DataArray, x: float, y: float) -> bool:
    xs, ys = da.x.values, da.y.values
    dx = abs(float(xs[1] - xs[0])) if xs.size > 1 else float(da.attrs.get("patch_size_m", 1) or 1)
    dy = abs(float(ys[1] - ys[0])) if ys.size > 1 else dx
    return bool(xs.min() - dx / 2 <= x <= xs.max() + dx / 2 and ys.min() - dy / 2 <= y <= ys.max() + dy / 2)
