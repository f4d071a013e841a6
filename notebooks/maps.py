"""Small helpers the tutorials share: leafmap maps of ``anysat_core`` overlays (works offline in JupyterLab).

``anysat_core.web_overlay`` turns a georeferenced RGB map into a PNG and its latitude/longitude corners; these helpers
put such overlays on a ``leafmap.Map`` (ipyleaflet) with a layer switcher and an opacity slider per layer. The
basemap is added only when its tile server answers (``basemap="auto"``), so an offline map shows the overlays on a
blank background instead of grey tiles.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["leaflet_map", "tiles_reachable"]


def tiles_reachable(host: str = "tile.openstreetmap.org", port: int = 443, timeout_s: float = 1.0) -> bool:
    """Whether the basemap's tile server accepts a connection (a quick check, no download)."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def leaflet_map(
    overlays: Mapping[str, Any], *, basemap: bool | str = "auto", opacity: float = 0.8, shown: int = 2
) -> Any:
    """A leafmap map with one image layer per overlay, a layer switcher and opacity sliders.

    Args:
        overlays: ``{layer name: anysat_core.WebOverlay}``, drawn in order (the last on top); the map is centred
            on the first.
        basemap: True (OpenStreetMap tiles), False (blank background) or "auto" (tiles only when reachable).
        opacity: starting opacity of the second layer (the first, the input imagery, is opaque).
        shown: layers after the first ``shown`` start at opacity 0 (raise their slider to see them), so that the
            input is not buried under every layer at once.

    Returns:
        a ``leafmap.Map``; display it as a cell's last value. Its image layers are ``m.anysat_layers`` (by name).
    """
    import ipyleaflet
    import ipywidgets as widgets
    import leafmap

    first = next(iter(overlays.values()))
    m = leafmap.Map(center=first.center, zoom=first.zoom, scroll_wheel_zoom=True)
    if basemap == "auto":
        basemap = tiles_reachable()
    if not basemap:
        for layer in list(m.layers):
            if isinstance(layer, ipyleaflet.TileLayer):
                m.remove(layer)
    layers = {}
    sliders = []
    for i, (name, ov) in enumerate(overlays.items()):
        start = 1.0 if i == 0 else (opacity if i < shown else 0.0)
        layer = ipyleaflet.ImageOverlay(url=ov.url, bounds=ov.bounds, name=name, opacity=start)
        m.add(layer)
        layers[name] = layer
        slider = widgets.FloatSlider(
            value=start,
            min=0,
            max=1,
            step=0.05,
            description=name,
            style={"description_width": "initial"},
            layout=widgets.Layout(width="340px"),
        )
        widgets.jslink((slider, "value"), (layer, "opacity"))
        sliders.append(slider)
    m.add(ipyleaflet.LayersControl(position="topright"))  # add later layers with a name (e.g. a LayerGroup)
    m.add(ipyleaflet.WidgetControl(widget=widgets.VBox(sliders), position="bottomright"))
    m.anysat_layers = layers
    return m
