"""The tutorials in ``notebooks/``: stored clean, each with a settings cell and a map or plot; and the newcomer's path
(README + notebook 05 on a GeoTIFF of their own) followed exactly, on a GeoTIFF this test writes.

``make test`` also executes every notebook as it is stored (``pytest --nbmake notebooks``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.shared import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
TOPICS = ["quickstart", "pca", "similarity", "probes", "own-rasters", "pretraining", "app"]


def _code(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_seven_tutorials_are_there_in_order():
    names = [p.stem for p in NOTEBOOKS]
    assert len(names) == 7, names
    for i, (name, topic) in enumerate(zip(names, TOPICS), start=1):
        assert name.startswith(f"{i:02d}-") and topic in name, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path.name}: run nbstripout"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_starts_with_settings_and_shows_a_map_or_plot(path):
    code = _code(path)
    assert "Settings" in code[0] or "settings" in code[0].lower(), f"{path.name}: the first code cell is the settings"
    assert re.search(r"^[A-Z_]+ = ", code[0], flags=re.MULTILINE), f"{path.name}: settings are UPPER_CASE variables"
    text = "\n".join(code)
    assert re.search(r"leaflet_map\(|leafmap\.Map\(|plt\.subplots|\.plot\.|hv\.|pn\.", text), path.name
    if "import panel" in text:  # offline rendering in JupyterLab needs the inline resources
        first = text.index("pn.extension(")
        assert text[first:].startswith("pn.extension(inline=True"), f"{path.name}: call pn.extension(inline=True) first"


@pytest.mark.notebook
def test_a_newcomer_gets_a_pca_map_of_their_own_geotiff_with_notebook_05(tmp_path):
    """The README's path for one's own raster: notebook 05 with ``MY_RASTERS`` set to a GeoTIFF (here one written by
    this test: a single-date 10-band Sentinel-2 image, UTM 33N, odd size, nodata border) and nothing else changed."""
    import nbformat
    import rasterio
    from affine import Affine
    from nbclient import NotebookClient

    tif = tmp_path / "my_s2_2023-07-14.tif"
    rng = np.random.default_rng(7)
    data = rng.uniform(300, 4000, (10, 29, 37)).astype("float32")
    data[:, :2, :] = 0  # a nodata strip along the top
    transform = Affine(10, 0, 600_030, 0, -10, 5_200_090)
    with rasterio.open(
        tif, "w", driver="GTiff", width=37, height=29, count=10, dtype="float32", crs="EPSG:32633", nodata=0,
        transform=transform,
    ) as f:  # fmt: skip
        f.write(data)
    out = tmp_path / "outputs"
    nb = nbformat.read(ROOT / "notebooks" / "05-own-rasters.ipynb", as_version=4)
    settings = next(c for c in nb.cells if c.cell_type == "code")
    assert "MY_RASTERS = None" in settings.source and "OUT_DIR = None" in settings.source
    settings.source = settings.source.replace("MY_RASTERS = None", f"MY_RASTERS = {str(tif)!r}").replace(
        "OUT_DIR = None", f"OUT_DIR = {str(out)!r}"
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert widgets, "no leafmap map was displayed"
    assert images, "no plot was drawn"
    for name in ("features.tif", "features.zarr", "pca.png", "features-cli.tif"):
        assert (out / name).exists(), name
    import rioxarray

    features = rioxarray.open_rasterio(out / "features.tif")
    assert str(features.rio.crs) == "EPSG:32633"
