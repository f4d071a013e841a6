"""The public API: every documented name at the top level, resolved lazily, and a light ``import anysat_core``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import anysat_core as ac
from tests.helpers.shared import ROOT


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_import_is_light_and_names_load_on_first_use():
    out = _run(
        "import sys, anysat_core as ac; heavy = ('torch', 'xarray', 'rasterio', 'sklearn', 'dask');"
        "print([m for m in heavy if m in sys.modules]); ac.PCARGB; print('torch' in sys.modules);"
        "ac.AnySat; print('torch' in sys.modules);"
        "import anysat_core.model.checkpoint, anysat_core.data.synthetic;"
        "ui = ('panel', 'holoviews', 'bokeh', 'lightning', 'pytorch_lightning', 'leafmap', 'app', 'training',"
        " 'datashader'); print([m for m in ui if m in sys.modules])"
    ).split("\n")
    assert out[0] == "[]"  # nothing heavy at import
    assert out[1] == "False"  # the analysis tools do not need torch
    assert out[2] == "True"
    assert out[3] == "[]"  # the core never pulls in the UI or the training stack


@pytest.mark.parametrize("name", ac.__all__)
def test_every_public_name_resolves(name):
    assert getattr(ac, name) is not None
    assert name in dir(ac)


def test_public_names_are_the_objects_of_their_modules():
    from anysat_core.analysis.pca import PCARGB
    from anysat_core.data.raster import open_rasters
    from anysat_core.inference import infer_scene
    from anysat_core.model.anysat import AnySat

    assert ac.AnySat is AnySat and ac.PCARGB is PCARGB and ac.infer_scene is infer_scene
    assert ac.open_rasters is open_rasters


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'extract_feature'"):
        ac.extract_feature  # noqa: B018
    assert issubclass(ac.UnknownDatasetError, ac.AnySatError)
