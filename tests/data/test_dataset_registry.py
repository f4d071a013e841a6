"""Every registered loader: class facts filled in, and a missing root explained the same way."""

from __future__ import annotations

import pytest

from anysat_core import DatasetNotFoundError, UnknownModalityError
from anysat_core.data.datasets import DATASETS, get_dataset
from anysat_core.modalities import MODALITIES

EXPECTED = {"treesatai-ts", "pastis-hd", "flair", "planted", "s2naip-urban", "bradd-s1ts", "sickle", "timesen2crop"}


def test_the_eight_datasets_are_registered():
    assert set(DATASETS) == EXPECTED
    with pytest.raises(UnknownModalityError, match="expected one of"):
        get_dataset("eurosat")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_class_facts(name):
    cls = get_dataset(name)
    assert cls.url.startswith("http") and cls.layout.strip() and cls.task
    assert set(cls.default_modalities) <= set(cls.modalities_available) <= set(MODALITIES)
    assert cls.patch_size_m % 10 == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_root(tmp_path, name):
    cls = get_dataset(name)
    with pytest.raises(DatasetNotFoundError) as info:
        cls(tmp_path / "nowhere")
    msg = str(info.value)
    assert "nowhere" in msg and cls.url in msg and "Expected layout" in msg
    assert isinstance(info.value, FileNotFoundError)
