"""Loaders of the AnySat datasets in their published layouts (one module per dataset).

Importing this package registers every loader in :data:`DATASETS` (``get_dataset(name)``).
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
from anysat_core.data.datasets.base import DATASETS, AnySatDataset, get_dataset, list_datasets, register_dataset

__all__ = ["DATASETS", "AnySatDataset", "get_dataset", "list_datasets", "register_dataset"]
