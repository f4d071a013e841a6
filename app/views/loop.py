"""Sidebar-free panels of the loop: labels, probe (progress, cancel, metrics, confusion matrix, per-class scores),
export with download, and the view as code."""

from __future__ import annotations

import io
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param

from anysat_core.errors import AnySatError, OutputExistsError
from app.loop import EXPORT_FORMATS, EXPORT_LAYERS, ProbeLoop

__all__ = ["LoopPanel"]


class LoopPanel(pn.viewable.Viewer):
    """Labels -> probe -> export -> code, bound to a :class:`ProbeLoop`."""

    loop = param.ClassSelector(class_=ProbeLoop)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        lp = self.loop
        ex = lp.explorer
        # labels
        self.label_class = pn.widgets.Select.from_param(lp.param.label_class, label="Class of new labels")
        self.new_class = pn.widgets.TextInput(label="New class", placeholder="e.g. forest", width=160)
        self.add_class = pn.widgets.Button(label="Add class", width=100)
        self.add_class.on_click(lambda e: self._guard(lp.add_class, self.new_class.value))
        self.label_mode = pn.widgets.Button(label="Click the map to label", color="primary")
        self.label_mode.on_click(lambda e: setattr(ex, "click_mode", "label"))
        self.table = pn.widgets.Tabulator(
            pn.bind(self._label_rows, lp.param.labels_version), height=160, disabled=True, show_index=False
        )
        self.remove = pn.widgets.Button(label="Remove selected", width=140)
        self.remove.on_click(self._remove_selected)
        self.clear = pn.widgets.Button(label="Clear labels", width=110)
        self.clear.on_click(lambda e: lp.clear_labels())
        self.labels_file = pn.widgets.TextInput(label="Labels file (.geojson/.gpkg)", placeholder="labels.geojson")
        self.save_labels = pn.widgets.Button(label="Save to output root", width=150)
        self.save_labels.on_click(lambda e: self._guard(lp.save_labels, self.labels_file.value))
        self.load_labels = pn.widgets.Button(label="Load from a data root", width=150)
        self.load_labels.on_click(lambda e: self._guard(lp.load_labels, self.labels_file.value))
        # probe
        self.run = pn.widgets.Button(label="Run probe", color="success")
        self.run.on_click(lambda e: lp.run_probe())
        self.cancel = pn.widgets.Button(label="Cancel", color="danger")
        self.cancel.on_click(lambda e: lp.cancel())
        self.progress = pn.indicators.Progress(value=lp.param.progress, max=100, width=220, bar_color="info")
        self.tiles = pn.widgets.IntInput.from_param(lp.param.tile_tiles, label="Tiles for the tile probe", width=150)
        self.run_tiles = pn.widgets.Button(label="Tile probe (dataset labels)")
        self.run_tiles.on_click(lambda e: lp.run_tile_probe())
        self.run_curve = pn.widgets.Button(label="... with label-efficiency curve")
        self.run_curve.on_click(lambda e: lp.run_tile_probe(efficiency=True))
        self.seg_tiles = pn.widgets.IntInput.from_param(lp.param.seg_tiles, label="Tiles (pixel probe)", width=150)
        self.run_seg = pn.widgets.Button(label="Pixel probe (dataset segmentation labels)")
        self.run_seg.on_click(lambda e: lp.run_dataset_pixel_probe())
        self.threshold = pn.widgets.FloatSlider.from_param(
            lp.param.confidence_threshold, label="Hide predictions below confidence", step=0.05
        )
        self.review = pn.widgets.IntSlider.from_param(lp.param.review_k, label="Review: least confident cells")
        # scene
        self.scene_name = pn.widgets.TextInput.from_param(
            lp.param.scene_name, label="Scene output (.tif or .zarr, under the output root)", placeholder="scene.tif"
        )
        self.scene_probe = pn.widgets.Checkbox.from_param(lp.param.scene_with_probe, label="with the probe")
        self.scene_run = pn.widgets.Button(label="Map the whole scene (resumes a cancelled run)", color="primary")
        self.scene_run.on_click(lambda e: lp.run_scene())
        # export
        self.layer = pn.widgets.Select(label="Layer", options=EXPORT_LAYERS, value=lp.export_layer)
        self.layer.link(lp, value="export_layer")
        self.format = pn.widgets.Select(label="Format", options=EXPORT_FORMATS, value=lp.export_format)
        self.format.link(lp, value="export_format")
        self.file_name = pn.widgets.TextInput.from_param(
            lp.param.export_name, label="File name (under the output root)"
        )
        self.export = pn.widgets.Button(label="Export", color="primary")
        self.export.on_click(lambda e: self._export(False))
        self.overwrite = pn.widgets.Button(label="Overwrite it", color="warning", visible=False)
        self.overwrite.on_click(lambda e: self._export(True))
        self.download = pn.widgets.FileDownload(
            callback=self._download, filename="export", label="Download the last export", visible=False
        )
        self.vector_what = pn.widgets.Select(label="Vectors", options=["labels", "prediction"], width=140)
        self.vector_name = pn.widgets.TextInput(label="Vector file (.geojson/.gpkg)", placeholder="classes.gpkg")
        self.vector_button = pn.widgets.Button(label="Export polygons")
        self.vector_button.on_click(
            lambda e: self._guard(lp.export_vectors, self.vector_what.value, self.vector_name.value or "classes.gpkg")
        )
        # code
        self.code_button = pn.widgets.Button(label="Copy as code")
        self.code = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.code_button.on_click(self._show_code)
        self.code_download = pn.widgets.FileDownload(
            callback=lambda: io.BytesIO(lp.code().encode()), filename="anysat_view.py", label="Download as .py"
        )

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except AnySatError as e:
            self.loop.explorer.error = str(e)

    def _label_rows(self, version: int = 0) -> Any:
        import pandas as pd

        rows = self.loop.labels.rows()
        return pd.DataFrame(rows, columns=["#", "class", "kind", "x", "y"])

    def _remove_selected(self, event: Any = None) -> None:
        for i in sorted(self.table.selection, reverse=True):
            self._guard(self.loop.remove_label, int(i))

    def _export(self, overwrite: bool) -> None:
        lp = self.loop
        try:
            lp.export(overwrite=overwrite)
        except OutputExistsError as e:
            lp.explorer.error = str(e)
            self.overwrite.visible = True
            return
        except AnySatError as e:
            lp.explorer.error = str(e)
            return
        lp.explorer.error = ""
        self.overwrite.visible = False
        self.download.filename = lp.last_export.rsplit("/", 1)[-1]
        self.download.visible = not lp.last_export.endswith(".zarr")

    def _download(self) -> Any:
        return open(self.loop.last_export, "rb")

    def _show_code(self, event: Any = None) -> None:
        try:
            self.code.object = f"```python\n{self.loop.code()}```"
        except AnySatError as e:
            self.loop.explorer.error = str(e)

    @param.depends("loop.metrics", "loop.message")
    def _metrics(self) -> Any:
        lp = self.loop
        m = lp.metrics
        msg = pn.pane.Markdown(lp.message or "Label at least two classes, then run the probe.")
        if not m:
            return msg
        names = lp.labels.classes
        rows = "".join(
            f"| {names[i]} | {v:.1f} |" + "\n" for i, v in enumerate(m.get("per_class_f1", [])) if i < len(names)
        )
        table = pn.pane.Markdown(
            f"| metric (held-out labels) | value |\n|---|---|\n| labels | {m['labels']} ({m['held_out']} held out) |\n"
            f"| overall accuracy | {m['accuracy']:.1f} % |\n| macro F1 | {m['macro_f1']:.1f} % |\n"
            f"| mIoU | {m['miou']:.1f} % |\n\n| class | F1 (%) |\n|---|---|\n{rows}"
        )
        plots: list[Any] = [msg, table]
        if lp.confusion is not None:
            cm = np.asarray(lp.confusion)
            cells = [(names[j], names[i], int(cm[i, j])) for i in range(cm.shape[0]) for j in range(cm.shape[1])]
            heat = hv.HeatMap(cells, kdims=["predicted", "true"], vdims=["count"]).opts(
                cmap="Blues", width=360, height=300, tools=["hover"], title="confusion matrix", xrotation=45
            )
            labels = hv.Labels(heat).opts(text_font_size="9pt")
            bars = hv.Bars(
                [(names[i], v) for i, v in enumerate(m.get("per_class_f1", []))], kdims=["class"], vdims=["F1 (%)"]
            ).opts(width=360, height=260, ylim=(0, 100), title="per-class F1", xrotation=45)
            plots.append(pn.Row(pn.pane.HoloViews(heat * labels), pn.pane.HoloViews(bars)))
        return pn.Column(*plots)

    @param.depends("loop.scene_rgb", "loop.scene_prediction")
    def _scene(self) -> Any:
        from app.views.display import hv_image, hv_rgb
        from app.views.map import cluster_colours

        lp = self.loop
        if lp.scene_rgb is None:
            return pn.pane.Markdown("")
        plots = [hv_rgb(lp.scene_rgb).opts(title="scene: PCA colours", width=420, height=380, xaxis=None, yaxis=None)]
        if lp.scene_prediction is not None:
            pred = lp.scene_prediction.astype(np.float32)
            k = max(int(np.nanmax(pred.values)) + 1, 2)
            plots.append(
                hv_image(pred.where(pred >= 0), "class").opts(
                    title="scene: predicted class", cmap=cluster_colours(k), clim=(-0.5, k - 0.5), width=420,
                    height=380, xaxis=None, yaxis=None, tools=["hover"],
                )
            )  # fmt: skip
        # one pane per map (a HoloViews Layout here was never painted in the browser), on the scene's own extent: the
        # axes are not linked to the main map's, which shows one tile of it
        return pn.Row(*(pn.pane.HoloViews(p, linked_axes=False) for p in plots))

    @param.depends("loop.tile_metrics", "loop.efficiency")
    def _tile_results(self) -> Any:
        lp = self.loop
        m = lp.tile_metrics
        if not m:
            return pn.pane.Markdown("")
        rows = "".join(
            f"| {k} | {v * 100:.1f} % |\n" if k.startswith("F1") else f"| {k} | {v:.1f} |\n"
            for k, v in m.items()
            if isinstance(v, float) and not k.endswith("_std")
        )
        parts: list[Any] = [
            pn.pane.Markdown(
                f"**Tile probe** ({m['tiles']} tiles, {m['task']})\n\n| metric | value |\n|---|---|\n{rows}"
            )
        ]
        if lp.efficiency:
            pts = [(r["n_labels"], 100 * r["F1_macro"]) for r in lp.efficiency]
            curve = hv.Curve(pts, kdims=["training labels"], vdims=["macro F1 (%)"]) * hv.Scatter(pts)
            parts.append(pn.pane.HoloViews(curve.opts(width=380, height=260, title="label efficiency", logx=True)))
        return pn.Column(*parts)

    def __panel__(self) -> Any:
        return pn.Column(
            pn.pane.Markdown("### Labels"),
            pn.Row(self.label_class, pn.Column(self.new_class, self.add_class)),
            self.label_mode,
            pn.pane.Markdown("Draw polygons with the map's polygon tool (double-click ends a polygon)."),
            self.table,
            pn.Row(self.remove, self.clear),
            self.labels_file,
            pn.Row(self.save_labels, self.load_labels),
            pn.pane.Markdown("### Probe"),
            pn.Row(self.run, self.cancel, self.progress),
            pn.Row(self.tiles, self.run_tiles, self.run_curve),
            pn.Row(self.seg_tiles, self.run_seg),
            self._metrics,
            self._tile_results,
            self.threshold,
            self.review,
            pn.pane.Markdown("### Scene (your own raster, whole extent)"),
            self.scene_name,
            pn.Row(self.scene_probe, self.scene_run),
            self._scene,
            pn.pane.Markdown("### Export"),
            pn.Row(self.layer, self.format),
            self.file_name,
            pn.Row(self.export, self.overwrite, self.download),
            pn.Row(self.vector_what, self.vector_name, self.vector_button),
            pn.pane.Markdown(self.loop.param.last_export),
            pn.pane.Markdown("### The view as code"),
            pn.Row(self.code_button, self.code_download),
            self.code,
            sizing_mode="stretch_width",
        )
