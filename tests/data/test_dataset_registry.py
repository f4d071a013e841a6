"""Every registered dataset: class facts filled in, a missing root explained the same way, unknown names listed."""

from __future__ import annotations

import pytest

from anysat_core import ConfigError, DatasetNotFoundError, UnknownDatasetError
from anysat_core.data.datasets import DATASETS, dataset_class, get_dataset, list_datasets
from anysat_core.modalities import MODALITIES

ON_DISK = {"treesatai-ts", "pastis-hd", "flair", "planted", "s2naip-urban", "bradd-s1ts", "sickle", "timesen2crop"}
GENERATED = {"geoplex-mini"}


def test_registered_names():
    assert set(DATASETS) == ON_DISK | GENERATED and list_datasets() == sorted(ON_DISK | GENERATED)
    assert {n for n, cls in DATASETS.items() if cls.generated} == GENERATED
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'eurosat'; expected one of bradd-s1ts, flair") as e:
        get_dataset("eurosat")
    with pytest.raises(UnknownDatasetError, match="eurosat"):
        dataset_class("eurosat")
    assert isinstance(e.value, LookupError) and "geoplex-mini" in str(e.value)


@pytest.mark.parametrize("name", sorted(ON_DISK | GENERATED))
def test_class_facts(name):
    cls = dataset_class(name)
    assert cls.__doc__ and cls.task and cls.classes
    assert set(cls.default_modalities) <= set(cls.modalities_available) <= set(MODALITIES)
    assert cls.patch_size_m % 10 == 0
    if not cls.generated:
        assert cls.url.startswith("http") and cls.layout.strip()


@pytest.mark.parametrize("name", sorted(ON_DISK))
def test_missing_root(tmp_path, name):
    cls = dataset_class(name)
    with pytest.raises(DatasetNotFoundError) as info:
        cls(tmp_path / "nowhere")
    msg = str(info.value)
    assert "nowhere" in msg and cls.url in msg and "Expected layout" in msg
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ConfigError, match="root=None"):
        get_dataset(name, None)


def test_bad_constructor_arguments_say_what_the_dataset_takes():
    with pytest.raises(ConfigError, match=r"missing a required argument: 'root'.*download it from http"):
        get_dataset("flair")
    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'splt'.*FLAIR takes"):
        get_dataset("flair", "/data/FLAIR", splt="test")
    with pytest.raises(ConfigError, match="GeoPlexMini takes"):
        get_dataset("geoplex-mini", 3)  # the world's settings are keywords


def test_constructor_arguments_build_the_dataset(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        get_dataset("flair", tmp_path / "nowhere", "test")
