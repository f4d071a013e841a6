"""``create_app(state=None)``: the explorer's page (the same factory serves ``panel serve app`` and the tests)."""

from __future__ import annotations

from typing import Any

import panel as pn

from app.loop import ProbeLoop
from app.state import ExplorerState
from app.views.compare import CompareView
from app.views.controls import Controls
from app.views.loop import LoopPanel
from app.views.map import MapView

__all__ = ["create_app"]


def create_app(state: ExplorerState | None = None) -> Any:
    """The explorer page for one session.

    Args:
        state: the session's state (default: a new :class:`ExplorerState` from the environment's settings).

    Returns:
        a Panel template (``.servable()`` in ``app/main.py``).
    """
    st = state if state is not None else ExplorerState()
    controls = Controls(state=st)
    error = pn.pane.Alert(st.param.error, alert_type="danger", visible=pn.bind(bool, st.param.error))
    weights_note = pn.pane.Alert(
        st.param.model_label,
        alert_type="warning",
        visible=pn.bind(lambda w: w == "random", st.param.weights),
    )
    status = pn.pane.Markdown(pn.bind(lambda s, b: f"**Status:** {s}", st.param.status, st.param.busy))
    spinner = pn.indicators.LoadingSpinner(value=st.param.busy, size=24)
    model = pn.pane.Markdown(pn.bind(lambda m: f"**Model:** {m}", st.param.model_label))
    where = pn.pane.Markdown(st.param.last_click, styles={"font-size": "12px"})
    loop = ProbeLoop(st)
    explore = pn.Column(pn.Row(spinner, status), MapView(state=st, loop=loop), where)
    main = pn.Column(
        error,
        weights_note,
        model,
        pn.Tabs(
            ("Explore", pn.Column(explore, pn.Card(LoopPanel(loop=loop), title="Label, probe, export, code"))),
            ("Compare", CompareView(state=st)),
            dynamic=False,
        ),
        sizing_mode="stretch_width",
    )
    template = pn.template.BootstrapTemplate(
        title="AnySat Explorer", sidebar=[controls], main=[main], sidebar_width=380
    )
    return template
