"""Compare: 2 to 4 panes of the same tile side by side, each with its own modalities, dates and patch size, one
shared PCA basis, linked pan and zoom, and the agreement (cosine) between two panes."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import panel as pn
import param

from app.state import ExplorerState, PaneSpec
from app.views.display import hv_image, hv_rgb

__all__ = ["CompareView"]


class CompareView(pn.viewable.Viewer):
    """Pane editors plus one linked HoloViews layout."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        st = self.state
        self.n = pn.widgets.IntSlider(label="Panes", start=2, end=4, value=2)
        self.run = pn.widgets.Button(label="Compare", color="primary")
        self.run.on_click(self._run)
        self.a = pn.widgets.IntInput(label="Agreement of pane", value=1, start=1, end=4, width=120)
        self.b = pn.widgets.IntInput(label="and pane", value=2, start=1, end=4, width=120)
        self._editors: list[tuple[pn.widgets.CheckButtonGroup, pn.widgets.Select]] = []
        self.editors = pn.Column()
        self.n.param.watch(lambda e: self._build_editors(), "value")
        st.param.watch(lambda e: self._build_editors(), ["tile", "weights", "source"])
        st.param.watch(self._on_panes, "compare_panes")
        self._build_editors()

    def _on_panes(self, event: Any) -> None:
        """Panes set on the state (from code, a notebook) show in the editors; those set by the editors are already
        there."""
        panes = list(event.new or [])
        shown = [(tuple(m.value), p.value) for m, p in self._editors]
        if not panes or [(tuple(p.modalities), p.patch_size_m) for p in panes] == shown:
            return
        if len(panes) != self.n.value and 2 <= len(panes) <= 4:
            self.n.value = len(panes)  # rebuilds the editors from the defaults, then set below
        for (mods, patch), spec in zip(self._editors, panes):
            mods.value = [m for m in spec.modalities if m in mods.options]
            if spec.patch_size_m in patch.options:
                patch.value = spec.patch_size_m

    def _build_editors(self) -> None:
        st = self.state
        defaults = st.default_panes() if st.modalities and st.patch_size_m else []
        # the same choices as before (another tile of the same source): keep the editors and what the user set
        key = (self.n.value, tuple(st.param.modalities.objects), tuple(st.param.patch_size_m.objects), tuple(defaults))
        if key == getattr(self, "_editors_key", None):
            return
        self._editors_key = key
        eds = []
        for i in range(self.n.value):
            d = defaults[i] if i < len(defaults) else (defaults[-1] if defaults else None)
            mods = pn.widgets.CheckButtonGroup(
                label=f"Pane {i + 1} modalities",
                options=list(st.param.modalities.objects),
                value=list(d.modalities) if d else list(st.modalities),
            )
            patch = pn.widgets.Select(
                label=f"Pane {i + 1} patch size (m)",
                options=list(st.param.patch_size_m.objects),
                value=d.patch_size_m if d and d.patch_size_m in st.param.patch_size_m.objects else st.patch_size_m,
            )
            eds.append((mods, patch))
        self._editors = eds
        self.editors.objects = [
            pn.Row(pn.pane.Markdown(f"**Pane {i + 1}**", width=60), m, p) for i, (m, p) in enumerate(eds)
        ]

    def _run(self, event: Any = None) -> None:
        st = self.state
        panes = [PaneSpec(tuple(m.value), float(p.value)) for m, p in self._editors if p.value is not None]
        empty = [i + 1 for i, (m, _) in enumerate(self._editors) if not m.value]
        if empty:
            st.error = f"pane(s) {empty} have no modality; switch one on in each pane"
            return
        st.param.update(compare_difference=(int(self.a.value) - 1, int(self.b.value) - 1), compare_panes=panes)

    @param.depends("state.compare_pca", "state.compare_agreement")
    def _layout(self) -> Any:
        st = self.state
        if not st.compare_pca:
            return pn.pane.Markdown("Choose the panes and press **Compare**.")
        plots = []
        for spec, rgb in zip(st.compare_panes, st.compare_pca):
            plots.append(hv_rgb(rgb).opts(title=spec.label(), width=340, height=340, xaxis=None, yaxis=None))
        if st.compare_agreement is not None:
            a, b = st.compare_difference
            plots.append(
                hv_image(st.compare_agreement, "agreement").opts(
                    title=f"agreement of panes {a + 1} and {b + 1} (cosine)",
                    cmap="RdYlBu",
                    clim=(-1, 1),
                    colorbar=True,
                    width=380,
                    height=340,
                    xaxis=None,
                    yaxis=None,
                    tools=["hover"],
                )
            )
        layout = hv.Layout(plots).cols(3).opts(shared_axes=True)
        return pn.pane.HoloViews(layout, linked_axes=True)

    def __panel__(self) -> Any:
        return pn.Column(
            pn.pane.Markdown(
                "Same tile, different inputs: every pane uses one shared PCA basis, so a colour means the same "
                "feature vector in every pane; pan and zoom are linked."
            ),
            self.n,
            self.editors,
            pn.Row(self.a, self.b),
            self.run,
            self._layout,
        )
