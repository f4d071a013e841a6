"""Entry point of ``panel serve app`` (one run per browser session; the model and data are shared per process)."""

import logging
import sys

import panel as pn

from app.config import AppConfig
from app.layout import create_app, serve
from app.state import ExplorerState

pn.extension("tabulator", notifications=True)
logging.getLogger("anysat_explorer").setLevel(logging.INFO)
serve(create_app(ExplorerState(AppConfig.from_env(sys.argv[1:]))), title="AnySat Explorer")
