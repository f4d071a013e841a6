"""Every Python block of the README runs as written, each on its own (a fresh namespace, in an empty folder)."""

from __future__ import annotations

import re

import pytest

from tests.helpers.shared import ROOT

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write files (GeoTIFFs, PNG, Zarr) into the current folder
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102  (our own README's code)


def test_the_modality_table_is_the_registry():
    from anysat_core.modalities import modality_table

    readme = (ROOT / "README.md").read_text()
    assert modality_table() in readme, "regenerate the README table with anysat_core.modalities.modality_table()"


def test_the_readme_lists_every_tutorial():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")):
        assert f"`{nb.stem}`" in readme, nb.name
