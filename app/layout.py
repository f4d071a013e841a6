"""``create_app(state=None)``: the explorer's page (the same factory serves ``panel serve app`` and the tests)."""

from __future__ import annotations

from typing import Any

import panel as pn
from panel.io.resources import LOCAL_DIST, patch_model_css

from app.loop import ProbeLoop
from app.state import ExplorerState
from app.views.compare import CompareView
from app.views.controls import Controls
from app.views.loop import LoopPanel
from app.views.map import MapView

__all__ = ["create_app", "serve"]


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
    notice = pn.pane.Alert(st.param.notice, alert_type="warning", visible=pn.bind(bool, st.param.notice))
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
        notice,
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


def local_dist_url() -> str:
    """Where this server serves Panel's own static files (CSS, JS) for the current request."""
    return f"{pn.state.rel_path}/{LOCAL_DIST}" if pn.state.rel_path else LOCAL_DIST


def serve(page: Any, title: str) -> Any:
    """Make ``page`` the current session's page, with every stylesheet served by this server (never a CDN).

    Bokeh discards a session whose browser has not opened its websocket within ``--unused-session-lifetime``
    (15 s by default); when that page connects later, the server builds the session again from the websocket alone.
    Panel learns where its static files are only from the HTML request, so such a rebuilt session pointed every
    stylesheet at cdn.holoviz.org: offline, 132 failed stylesheet requests over 10 concurrent sessions (measured with
    ``tests/benchmarks/bench_app_load.py``, where pages waited 36 s for their HTML). The document's ``dist_url`` is
    therefore pinned before the page is built and its models are patched after; the HTML request, when it comes,
    sets the same values again.

    Args:
        page: a Panel viewable (the explorer's template).
        title: the browser tab's title.

    Returns:
        ``page``.
    """
    doc = pn.state.curdoc
    session = doc is not None and doc.session_context is not None
    if session:
        doc.template_variables.setdefault("dist_url", local_dist_url())
    page.servable(title=title)
    if session:
        for root in doc.roots:
            patch_model_css(root, dist_url=doc.template_variables["dist_url"])
    return page
