"""Sidebar controls: widgets built from the state's parameters (their options follow the state's narrowing)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import panel as pn
import param

from anysat_core.errors import AnySatError
from anysat_core.modalities import MODALITIES
from app.config import UploadTooLargeError, resolve_under_roots
from app.sources import RASTER_SUFFIXES, RasterSpec, guess_modality
from app.state import ExplorerState

__all__ = ["Controls", "RasterForm"]


class RasterForm(pn.viewable.Viewer):
    """Open the user's raster: a path under a data root (or an upload), its modality and dates."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        roots = ", ".join(str(r) for r in self.state.config.data_roots) or "none configured"
        self.path = pn.widgets.TextInput(
            label="Raster path(s) under a data root", placeholder="scene.tif or s2/*.tif", sizing_mode="stretch_width"
        )
        self.modality = pn.widgets.Select(label="Modality", options=["(guess)", *MODALITIES], value="(guess)")
        self.dates = pn.widgets.TextInput(label="Dates (time series; ISO, comma separated)", placeholder="from files")
        self.bands = pn.widgets.TextInput(
            label="Bands in registry order (numbers or names; empty = from the file)", placeholder="e.g. 3,2,1,4"
        )
        self.tile_m = pn.widgets.IntInput(label="Tile size (m, 0 = auto)", value=0, start=0, step=10)
        self.open_button = pn.widgets.Button(label="Open raster", color="primary")
        self.upload = pn.widgets.FileInput(accept=",".join(RASTER_SUFFIXES), label="or upload a GeoTIFF")
        self.note = pn.pane.Markdown(f"Data roots: {roots}", styles={"font-size": "12px"})
        self.open_button.on_click(self._open)
        self.path.param.watch(self._on_path, "value")
        self.upload.param.watch(self._on_upload, "value")
        self._upload_dir = Path(tempfile.mkdtemp(prefix="anysat-explorer-upload-"))
        os.chmod(self._upload_dir, 0o700)

    def _paths(self) -> list[str]:
        text = self.path.value.strip()
        if not text:
            return []
        roots = [*self.state.config.data_roots, self._upload_dir]
        out: list[str] = []
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            if any(ch in part for ch in "*?["):
                matches: list[Path] = []
                for r in roots:
                    matches += sorted(r.glob(part)) if not Path(part).is_absolute() else []
                if not matches:
                    raise resolve_error(part)
                out += [str(resolve_under_roots(m, roots)) for m in matches]
            else:
                out.append(str(resolve_under_roots(part, roots)))
        return out

    def _on_path(self, event: Any = None) -> None:
        """Say which modality the first file looks like (band count and pixel size) and its band names."""
        try:
            paths = self._paths()
        except AnySatError as e:
            self.note.object = str(e)
            return
        if not paths:
            return
        mod, why = guess_modality(paths[0])
        self.note.object = f"{len(paths)} file(s); {why}" + (
            f"; registry bands of {mod}: {', '.join(MODALITIES[mod].bands)}" if mod else ""
        )

    def _open(self, event: Any = None) -> None:
        st = self.state
        try:
            paths = self._paths()
            if not paths:
                st.error = "enter the path of a raster under a data root (or upload one)"
                return
            mod = self.modality.value
            if mod == "(guess)":
                mod, why = guess_modality(paths[0])
                if mod is None:
                    st.error = f"could not guess the modality of {Path(paths[0]).name}: {why}; pick it in the list"
                    return
            dates = tuple(d.strip() for d in self.dates.value.split(",") if d.strip())
            bands = tuple(b.strip() for b in self.bands.value.split(",") if b.strip())
            spec = RasterSpec(tuple(paths), mod, dates, float(self.tile_m.value or 0), bands)
        except AnySatError as e:
            st.error = str(e)
            return
        st.open_raster(spec)

    def _on_upload(self, event: Any) -> None:
        st = self.state
        data = self.upload.value
        if not data:
            return
        cap = st.config.upload_max_mb * 1e6
        if len(data) > cap:
            st.error = str(
                UploadTooLargeError(
                    f"upload of {len(data) / 1e6:.1f} MB is above the cap of {st.config.upload_max_mb:g} MB; put the "
                    "file under a data root and enter its path instead"
                )
            )
            return
        name = Path(self.upload.filename or "upload.tif").name
        if not name.lower().endswith(RASTER_SUFFIXES):
            st.error = f"upload {name!r}: expected a raster file ({', '.join(RASTER_SUFFIXES)})"
            return
        dest = self._upload_dir / name
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        self.path.value = str(dest)
        self._open()

    def __panel__(self) -> Any:
        return pn.Column(
            self.path, self.upload, self.modality, self.bands, self.dates, self.tile_m, self.open_button, self.note
        )


def resolve_error(pattern: str) -> AnySatError:
    from anysat_core.errors import DatasetNotFoundError

    return DatasetNotFoundError(f"no file matches {pattern!r} under the data roots; check the pattern")


class Controls(pn.viewable.Viewer):
    """The sidebar of the explorer."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        st = self.state
        self.source = pn.widgets.Select(
            label="Source", options={label: key for label, key in st.sources.items()}, value=st.source
        )
        self.source.link(st, value="source")
        st.param.watch(self._sync_sources, "source")
        self.tile = pn.widgets.Select.from_param(st.param.tile, label="Tile")
        self.prev = pn.widgets.Button(label="◀", width=40)
        self.next = pn.widgets.Button(label="▶", width=40)
        self.prev.on_click(lambda e: self._step(-1))
        self.next.on_click(lambda e: self._step(1))
        self.weights = pn.widgets.Select(
            label="Weights", options=dict(st.weight_choices), value=st.weights, sizing_mode="stretch_width"
        )
        self.weights.link(st, value="weights")
        self.modalities = pn.widgets.CheckButtonGroup.from_param(st.param.modalities, label="Modalities")
        self.patch = pn.widgets.RadioButtonGroup.from_param(st.param.patch_size_m, label="Patch size (m)")
        self.output = pn.widgets.RadioButtonGroup.from_param(st.param.output, label="Output")
        self.output_modality = pn.widgets.Select.from_param(st.param.output_modality, label="Dense grid of")
        self.precision = pn.widgets.RadioButtonGroup.from_param(st.param.precision, label="Precision")
        self.basis = pn.widgets.RadioButtonGroup.from_param(st.param.pca_basis, label="PCA basis")
        self.refit = pn.widgets.Button(label="Refit shared basis", color="light")
        self.refit.on_click(lambda e: st.refit_shared_basis())
        self.opacity = pn.widgets.FloatSlider.from_param(st.param.opacity, label="Layer opacity", step=0.05)
        self.layers = pn.widgets.CheckButtonGroup.from_param(st.param.layers, label="Layers")
        self.click = pn.widgets.RadioButtonGroup.from_param(st.param.click_mode, label="A click on the map")
        self.clear = pn.widgets.Button(label="Clear examples", color="light")
        self.clear.on_click(lambda e: st.clear_examples())
        self.threshold = pn.widgets.FloatSlider.from_param(
            st.param.similarity_threshold, label="Similarity threshold", step=0.01, start=-1.0, end=1.0
        )
        self.topk = pn.widgets.IntInput.from_param(st.param.top_k, label="Top-k cells", step=1)
        self.k = pn.widgets.IntSlider.from_param(st.param.n_clusters, label="Clusters (k)")
        self.input_modality = pn.widgets.Select.from_param(st.param.input_modality, label="Input image")
        self.input_date = pn.widgets.IntSlider.from_param(
            st.param.input_date,
            label="Input date",
            visible=pn.bind(lambda m, t: st.n_dates(m) > 1, st.param.input_modality, st.param.tile),
        )
        self.raster = RasterForm(state=st)

    def _sync_sources(self, event: Any) -> None:
        self.source.options = {label: key for label, key in self.state.sources.items()}
        self.source.value = self.state.source

    def _step(self, d: int) -> None:
        st = self.state
        ids = st.source_obj.tile_ids
        i = (ids.index(st.tile) + d) % len(ids)
        st.tile = ids[i]

    @param.depends("state.tile", "state.modalities", "state.source")
    def _dates(self) -> Any:
        st = self.state
        rows = []
        for m in st.modalities:
            if not MODALITIES[m].time_series or st._sample is None or m not in st.sample:
                continue
            labels = st.date_labels(m)
            options = {f"{i}: {lab}": i for i, lab in enumerate(labels)}
            keep = st.dates.get(m, list(range(len(labels))))
            w = pn.widgets.MultiChoice(label=f"{m} dates ({len(labels)})", options=options, value=list(keep))
            one = pn.widgets.Button(label=f"{m}: one date", color="light", width=120)
            every = pn.widgets.Button(label=f"{m}: all", color="light", width=80)

            def set_dates(event: Any, m: str = m) -> None:
                st.dates = {**st.dates, m: list(event.new)}

            w.param.watch(set_dates, "value")
            one.on_click(lambda e, w=w, labels=labels: setattr(w, "value", [len(labels) // 2]))
            every.on_click(lambda e, w=w, labels=labels: setattr(w, "value", list(range(len(labels)))))
            rows.append(pn.Column(w, pn.Row(one, every)))
        return pn.Column(*rows) if rows else pn.pane.Markdown("No time series in this selection.")

    def __panel__(self) -> Any:
        return pn.Column(
            pn.pane.Markdown("### Data"),
            self.source,
            pn.Row(self.tile, self.prev, self.next),
            self.weights,
            pn.pane.Markdown("### Model inputs"),
            self.modalities,
            pn.pane.Markdown("Patch size (m)"),
            self.patch,
            self.output,
            self.output_modality,
            self.precision,
            pn.Card(self._dates, title="Dates", collapsed=True),
            pn.pane.Markdown("### Map"),
            self.layers,
            self.opacity,
            self.input_modality,
            self.input_date,
            self.basis,
            self.refit,
            pn.pane.Markdown("### Similarity and clusters"),
            self.click,
            self.clear,
            self.threshold,
            self.topk,
            self.k,
            pn.Card(self.raster, title="Your own raster", collapsed=True),
            sizing_mode="stretch_width",
        )
