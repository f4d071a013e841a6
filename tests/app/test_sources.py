"""Sources of the explorer: dataset loaders found under the data roots, modality guesses for own rasters."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import AppConfig
from app.sources import discover_datasets, guess_modality, open_source
from tests.helpers.datasets import make_pastis_root


@pytest.mark.slow
def test_a_dataset_root_under_a_data_root_is_found_and_opens(tmp_path: Path) -> None:
    make_pastis_root(tmp_path)  # tmp_path / "PASTIS-R", the real PASTIS-R layout (torchgeo's fixture + dates)
    cfg = AppConfig(data_roots=(tmp_path,), offline=True)
    found = discover_datasets(cfg)
    keys = [k for k in found.values() if k.startswith("dataset:pastis-hd:")]
    assert keys, found
    src = open_source(keys[0], cfg)
    assert len(src) > 0 and "s2" in src.modalities and "RAW values" in src.label
    sample = src.sample(0)
    assert sample["s2"].dim() == 4


def test_nothing_is_found_without_roots() -> None:
    assert discover_datasets(AppConfig(offline=True)) == {}


def test_modality_guess_from_bands_and_pixel_size(data_root: Path) -> None:
    name, why = guess_modality(next((data_root / "s2").glob("*.tif")))
    assert name == "s2" and "10 bands" in why
    bad = data_root / "not-a-raster.tif"
    bad.write_bytes(b"nope")
    name, why = guess_modality(bad)
    assert name is None and "could not read" in why


@pytest.mark.slow
def test_the_explorer_runs_on_a_found_dataset(tmp_path: Path) -> None:
    from app.state import ExplorerState

    make_pastis_root(tmp_path)
    st = ExplorerState(AppConfig(data_roots=(tmp_path,), size="test", offline=True))
    key = next(k for k in st.sources.values() if k.startswith("dataset:pastis-hd:train"))
    st.source = key
    assert st.error == "", st.error
    assert st.modalities == ["s2"]  # the shipped weights read S2 (and S1 ascending), not PASTIS' 3-channel S1
    assert st.result is not None and st.result.request.source == key
