"""Loaders of the AnySat datasets in their published layouts (one module per dataset)."""

from anysat_core.data.datasets.base import DATASETS, AnySatDataset, get_dataset, list_datasets, register_dataset

__all__ = ["DATASETS", "AnySatDataset", "get_dataset", "list_datasets", "register_dataset"]
