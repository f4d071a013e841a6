"""The explorer's map: input composite, PCA colours, similarity, clusters, footprints and examples (HoloViews on
Bokeh: it renders under ``panel serve`` with no internet; basemap tiles only when reachable)."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from app.state import ExplorerState
from app.views.display import (
    basemap,
    empty_image,
    empty_rgb,
    footprints,
    has_crs,
    hv_image,
    hv_rgb,
    lonlat_hover,
    to_display_xy,
    to_source_xy,
)

__all__ = ["MapView", "cluster_colours"]

CLUSTER_COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
]  # fmt: skip


#: footprints of tiles up to this many tile sides from the current one are drawn (and clickable).
NEIGHBOURS = 1.01
#: footprint polygons drawn, always (the current tile and its 8 neighbours on a regular grid)
FOOTPRINT_SLOTS = 9


def cluster_colours(k: int) -> list[str]:
    return CLUSTER_COLOURS[:k]


class MapView(pn.viewable.Viewer):
    """The main map of one session, bound to its :class:`ExplorerState`."""

    state = param.ClassSelector(class_=ExplorerState)
    loop = param.ClassSelector(class_=object, default=None, doc="the session's ProbeLoop (labels, predictions)")
    width = param.Integer(default=720)
    height = param.Integer(default=600)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        st = self.state
        self._crs = lambda: st.source_obj.crs if st._source_obj is not None else None
        # the input and the neighbours' footprints share ONE stream: a new tile gives a new input image, and one map
        # refresh draws both (a footprint layer with its own stream on the tile refreshed the whole map once more)
        on_input = hv.streams.Params(st, ["input_image", "layers"])
        base = hv.DynamicMap(self._base, streams=[on_input])
        # every layer that follows the result in ONE DynamicMap: one map refresh per new result (each DynamicMap
        # with its own stream on the result re-rendered the whole overlay once)
        results = hv.DynamicMap(
            self._results,
            streams=[
                st.param.result,
                st.param.layers,
                st.param.opacity,
                st.param.similarity_threshold,
                st.param.top_k,
            ],
        )
        examples = hv.DynamicMap(self._examples, streams=[st.param.positives, st.param.negatives])
        feet = hv.DynamicMap(self._footprints, streams=[on_input])
        # only the input image sets the map's extent (the tile); the other layers never widen it
        feet, examples, results = (d.opts(apply_ranges=False) for d in (feet, examples, results))
        overlay = base * results * feet * examples
        if self.loop is not None:
            lp = self.loop
            pred = hv.DynamicMap(
                self._prediction,
                streams=[lp.param.prediction, st.param.layers, lp.param.confidence_threshold],
            ).apply.opts(alpha=st.param.opacity)
            conf = hv.DynamicMap(self._confidence, streams=[lp.param.prediction, st.param.layers])
            labels = hv.DynamicMap(self._labels, streams=[lp.param.labels_version])
            review = hv.DynamicMap(self._review, streams=[lp.param.prediction, lp.param.review_k])
            drawing = hv.Polygons([]).opts(fill_alpha=0.2, line_color="black", line_width=2)
            self.poly_draw = hv.streams.PolyDraw(source=drawing, drag=False, show_vertices=True)
            self.poly_draw.add_subscriber(self._on_polygons)
            self._polygons_used = 0
            extra = (pred, conf, labels, review, drawing)
            pred, conf, labels, review, drawing = (d.opts(apply_ranges=False) for d in extra)
            overlay = overlay * pred * conf * labels * review * drawing
        tiles = basemap(st.config.offline)
        if tiles is not None and has_crs(st.input_image):
            overlay = tiles * overlay
        self.tap = hv.streams.Tap(source=base, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        self.plot = overlay.opts(
            hv.opts.RGB(
                width=self.width, height=self.height, tools=[lonlat_hover(), "tap"], active_tools=["wheel_zoom"]
            ),
            hv.opts.Overlay(framewise=False),
        )
        self._pane = pn.pane.HoloViews(self.plot, sizing_mode="stretch_width", min_height=self.height)

    # ------------------------------------------------------------------ layers
    def _tile_bounds(self) -> tuple[float, float, float, float] | None:
        st = self.state
        img = st.input_image
        if img is None:
            return None
        xs, ys = img.x.values, img.y.values
        crs = self._crs()
        a = to_display_xy(float(xs.min()), float(ys.min()), crs)
        b = to_display_xy(float(xs.max()), float(ys.max()), crs)
        return (a[0], a[1], b[0], b[1])

    def _base(self, input_image: Any = None, layers: Any = None) -> hv.RGB:
        st = self.state
        img = st.input_image
        if img is None:
            return empty_rgb().opts(framewise=True)
        el = hv_rgb(img) if "input" in st.layers else hv_rgb(img * 0)
        # a margin around the tile shows the neighbours' footprints (click one to open it)
        return el.opts(framewise=True, xaxis=None, yaxis=None, padding=0.3)

    def _results(self, **_: Any) -> hv.Overlay:
        """PCA colours, clusters, similarity and top-k cells of the current result (always the same four layers,
        empty when off), with the opacity slider's alpha."""
        a = self.state.opacity
        return (
            self._pca().opts(alpha=a) * self._clusters().opts(alpha=a) * self._similarity().opts(alpha=a) * self._topk()
        )

    def _pca(self, result: Any = None, layers: Any = None) -> hv.RGB:
        st = self.state
        res = st.result
        if res is None or res.pca is None or "pca" not in st.layers:
            return empty_rgb(self._tile_bounds())
        return hv_rgb(res.pca)

    def _similarity(self, result: Any = None, layers: Any = None, similarity_threshold: Any = None) -> hv.Image:
        st = self.state
        res = st.result
        if res is None or res.similarity is None or "similarity" not in st.layers:
            return empty_image("similarity", self._tile_bounds()).opts(cmap="viridis")
        sim = res.similarity.where(res.similarity >= st.similarity_threshold)
        lo, hi = float(np.nanmin(res.similarity.values)), float(np.nanmax(res.similarity.values))
        return hv_image(sim, "similarity").opts(
            cmap="viridis", clim=(lo, hi if hi > lo else lo + 1e-6), colorbar=True, tools=["hover"]
        )

    def _clusters(self, result: Any = None, layers: Any = None) -> hv.Image:
        st = self.state
        res = st.result
        if res is None or res.clusters is None or "clusters" not in st.layers:
            return empty_image("cluster", self._tile_bounds()).opts(cmap=CLUSTER_COLOURS[:2])
        k = int(np.nanmax(res.clusters.values)) + 1 if np.isfinite(res.clusters.values).any() else 1
        return hv_image(res.clusters.where(res.clusters >= 0), "cluster").opts(
            cmap=cluster_colours(max(k, 1)), clim=(-0.5, max(k, 1) - 0.5), tools=["hover"]
        )

    def _footprints(self, input_image: Any = None, layers: Any = None) -> hv.Polygons:
        """The current tile's and its neighbours' footprints: always :data:`FOOTPRINT_SLOTS` polygons (unused slots
        are zero-area polygons on the tile's corner). BokehJS' MultiPolygons can paint with indices of its previous
        data when the number of polygons changes (a console TypeError when a raster source replaced GeoPlex-mini)."""
        st = self.state
        src = st._source_obj
        boxes: dict[int, tuple[float, float, float, float]] = {}
        cur = None
        if src is not None and "footprints" in st.layers and st.tile in src.tile_ids:
            boxes = src.footprints()
            cur = boxes.get(src.index_of(st.tile))
        near: dict[int, tuple[float, float, float, float]] = {}
        if cur is not None:  # the current tile and its neighbours (click one to open it)
            side = max(cur[2] - cur[0], cur[3] - cur[1])
            cx, cy = (cur[0] + cur[2]) / 2, (cur[1] + cur[3]) / 2

            def dist(b: tuple[float, float, float, float]) -> float:
                return max(abs((b[0] + b[2]) / 2 - cx), abs((b[1] + b[3]) / 2 - cy))

            ranked = sorted((dist(b), i) for i, b in boxes.items() if dist(b) <= NEIGHBOURS * side)
            near = {i: boxes[i] for _, i in ranked[:FOOTPRINT_SLOTS]}
        corner = (cur[0], cur[1]) if cur is not None else None
        crs, ids = (src.crs, src.tile_ids) if src is not None else (None, [])
        polys = footprints(near, crs, ids, slots=FOOTPRINT_SLOTS, pad_at=corner)
        return polys.opts(fill_alpha=0, line_color="#555555", line_width=1, line_alpha=0.9, tools=["hover"])

    def _examples(self, positives: Any = None, negatives: Any = None) -> hv.Points:
        st = self.state
        crs = self._crs()
        rows = [(*to_display_xy(x, y, crs), "positive") for x, y in st.positives]
        rows += [(*to_display_xy(x, y, crs), "negative") for x, y in st.negatives]
        pts = hv.Points(rows, vdims=["example"]) if rows else hv.Points([], vdims=["example"])
        return pts.opts(
            color="example",
            cmap={"positive": "#00e676", "negative": "#ff1744"},
            size=11,
            line_color="black",
            marker="circle",
            show_legend=False,
        )

    def _topk(self, result: Any = None, top_k: Any = None) -> hv.Points:
        from anysat_core import top_k as top_cells

        st = self.state
        res = st.result
        if res is None or res.similarity is None or st.top_k <= 0:
            return hv.Points([]).opts(size=9, marker="square", fill_alpha=0, line_color="yellow")
        df = top_cells(res.similarity, int(st.top_k))
        crs = self._crs()
        pts = [to_display_xy(float(r.x), float(r.y), crs) for r in df.itertuples()]
        return hv.Points(pts).opts(size=9, marker="square", fill_alpha=0, line_color="yellow", line_width=2)

    # ------------------------------------------------------------------ loop layers
    def _prediction(self, prediction: Any = None, layers: Any = None, confidence_threshold: Any = None) -> hv.Image:
        lp, st = self.loop, self.state
        if lp.prediction is None or "prediction" not in st.layers:
            return empty_image("class", self._tile_bounds()).opts(cmap=CLUSTER_COLOURS[:2])
        pred = lp.prediction["prediction"].astype(np.float32)
        pred = pred.where((pred >= 0) & (lp.prediction["confidence"] >= lp.confidence_threshold))
        k = len(lp.prediction_classes or lp.labels.classes)
        return hv_image(pred, "class").opts(
            cmap=cluster_colours(max(k, 2)), clim=(-0.5, max(k, 2) - 0.5), tools=["hover"], colorbar=True
        )

    def _confidence(self, prediction: Any = None, layers: Any = None) -> hv.Image:
        lp, st = self.loop, self.state
        if lp.prediction is None or "confidence" not in st.layers:
            return empty_image("confidence", self._tile_bounds()).opts(cmap="gray")
        return hv_image(lp.prediction["confidence"], "confidence").opts(
            cmap="gray", clim=(0, 1), alpha=0.8, tools=["hover"]
        )

    def _labels(self, labels_version: Any = None) -> hv.Points:
        lp = self.loop
        crs = self._crs()
        rows = []
        for g, c in lp.labels.items:
            p = g.centroid if g.geom_type != "Point" else g
            rows.append((*to_display_xy(p.x, p.y, crs), c))
        pts = hv.Points(rows, vdims=["class"]) if rows else hv.Points([], vdims=["class"])
        colours = {c: cluster_colours(16)[i % 16] for i, c in enumerate(lp.labels.classes)}
        return pts.opts(
            color="class",
            cmap=colours,
            size=10,
            marker="triangle",
            line_color="black",
            tools=["hover"],
            show_legend=False,
        )

    def _review(self, prediction: Any = None, review_k: Any = None) -> hv.Points:
        crs = self._crs()
        pts = [to_display_xy(x, y, crs) for x, y, _ in self.loop.least_confident()]
        return hv.Points(pts).opts(size=14, marker="circle", fill_alpha=0, line_color="magenta", line_width=2)

    def _on_polygons(self, data: Any = None) -> None:
        if not data:
            return
        xs, ys = data.get("xs", []), data.get("ys", [])
        crs = self._crs()
        for px, py in list(zip(xs, ys))[self._polygons_used :]:
            pts = [to_source_xy(x, y, crs) for x, y in zip(px, py)]
            self.state._guard(self.loop.add_polygon, [p[0] for p in pts], [p[1] for p in pts])
        self._polygons_used = len(xs)

    # ------------------------------------------------------------------ clicks
    def _on_tap(self, x: float | None = None, y: float | None = None) -> None:
        if x is None or y is None:
            return
        st = self.state
        sx, sy = to_source_xy(x, y, self._crs())
        st._guard(st.click, sx, sy)

    def _legend(self, result: Any = None, layers: Any = None) -> Any:
        """The k-means legend: one colour swatch per cluster with its number of cells."""
        res = self.state.result
        if res is None or res.clusters is None or "clusters" not in self.state.layers:
            return pn.pane.HTML("")
        ids, counts = np.unique(res.clusters.values[res.clusters.values >= 0], return_counts=True)
        colours = cluster_colours(int(ids.max()) + 1 if ids.size else 1)
        items = "".join(
            f'<span style="display:inline-block;margin-right:10px"><span style="display:inline-block;width:12px;'
            f'height:12px;background:{colours[int(i)]};margin-right:4px"></span>cluster {int(i)}: {int(n)} cells</span>'
            for i, n in zip(ids, counts)
        )
        return pn.pane.HTML(f"<b>Clusters</b> (k-means, k = {self.state.n_clusters}): {items}")

    def __panel__(self) -> Any:
        legend = pn.bind(self._legend, self.state.param.result, self.state.param.layers)
        return pn.Column(self._pane, legend, sizing_mode="stretch_width")
