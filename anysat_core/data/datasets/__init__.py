"""Loaders of the AnySat datasets in their published layouts (one module per dataset), and GeoPlex-mini.

Importing this package registers every loader in :data:`DATASETS` (``get_dataset(name)``), and the generated
GeoPlex-mini world (:mod:`anysat_core.data.geoplex_mini`, ``"geoplex-mini"``, no root).
"""

from anysat_core.data.datasets import (  # noqa: F401  (imported to register the loaders)
    bradd_s1ts,
    flair,
    pastis_hd,
    planted,
    s2naip_urban,
    sickle,
    timesen2crop,
    treesatai_ts,
)
from anysat_core.data.datasets.base import (
    DATASETS,
    AnySatDataset,
    dataset_class,
    get_dataset,
    list_datasets,
    register_dataset,
)
from anysat_core.data.geoplex_mini import dataset as geoplex_mini  # noqa: F401  (registers "geoplex-mini")

__all__ = ["DATASETS", "AnySatDataset", "dataset_class", "get_dataset", "list_datasets", "register_dataset"]
