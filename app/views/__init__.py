"""Views of the explorer: each a ``pn.viewable.Viewer`` bound to an :class:`app.state.ExplorerState`."""

import holoviews as hv
import holoviews.plotting.bokeh

hv.Store.set_current_backend("bokeh")

import warnings

# empty layers are all-NaN images (transparent); HoloViews warns when it takes their range
warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
