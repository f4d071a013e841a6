"""anysat_core: a faithful, fast re-implementation of AnySat (Astruc et al., CVPR 2025).

Everything a workflow needs is here, at the top level::

    import anysat_core as ac

    model = ac.AnySat(size="tiny")                    # or ac.AnySat.from_pretrained("base"): released weights
    world = ac.get_dataset("geoplex-mini", split="test", modalities=["s2", "aerial"])
    fmap = ac.extract_features(model, world[0], patch_size_m=20, output="patch")   # DataArray (feature, y, x)
    rgb = ac.PCARGB().fit_transform(fmap)

Names resolve lazily (PEP 562): ``import anysat_core`` loads neither torch nor xarray until a name that needs them
is used.  Errors (:class:`AnySatError` and its subclasses), the modality registry and the model configuration are
plain Python and load at once.

This package never imports app, training, panel, holoviews, lightning or leafmap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from anysat_core import errors
from anysat_core.config import AnySatConfig, config_for_size
from anysat_core.errors import *
from anysat_core.modalities import MODALITIES, Modality, NormStats, get_modality, list_modalities

__version__ = "0.1.0"

#: Public name -> module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    # model
    "AnySat": "anysat_core.model",
    "OUTPUTS": "anysat_core.model",
    # data
    "collate": "anysat_core.data.collate",
    "random_batch": "anysat_core.data.synthetic",
    "get_dataset": "anysat_core.data.datasets",
    "list_datasets": "anysat_core.data.datasets",
    "dataset_class": "anysat_core.data.datasets",
    "GeoPlexMini": "anysat_core.data.geoplex_mini",
    "open_rasters": "anysat_core.data.raster",
    "RasterSource": "anysat_core.data.raster",
    "RasterScene": "anysat_core.data.raster",
    "parse_date": "anysat_core.dates",
    # memory limit of a request (refuse early)
    "check_memory": "anysat_core.memory",
    "memory_limit_bytes": "anysat_core.memory",
    "set_memory_share": "anysat_core.memory",
    # features, scenes, files
    "extract_features": "anysat_core.features",
    "features_to_dataarray": "anysat_core.features",
    "infer_scene": "anysat_core.inference",
    "plan_scene": "anysat_core.inference",
    "ScenePlan": "anysat_core.inference",
    "write_geotiff": "anysat_core.writers",
    "write_zarr": "anysat_core.writers",
    "write_png": "anysat_core.writers",
    # web map overlays (leafmap / ipyleaflet / folium image overlays)
    "web_overlay": "anysat_core.overlays",
    "colorize": "anysat_core.overlays",
    "composite": "anysat_core.overlays",
    "WebOverlay": "anysat_core.overlays",
    # analysis
    "PCARGB": "anysat_core.analysis",
    "cosine_similarity_map": "anysat_core.analysis",
    "similarity_to_query": "anysat_core.analysis",
    "vector_at": "anysat_core.analysis",
    "top_k": "anysat_core.analysis",
    "threshold": "anysat_core.analysis",
    "refine": "anysat_core.analysis",
    "difference_map": "anysat_core.analysis",
    "kmeans_map": "anysat_core.analysis",
    "predict_map": "anysat_core.analysis",
    "TileProbe": "anysat_core.analysis",
    "PixelProbe": "anysat_core.analysis",
    "fit_from_points": "anysat_core.analysis",
    "label_efficiency": "anysat_core.analysis",
}

if TYPE_CHECKING:
    from anysat_core.analysis import (
        PCARGB,
        PixelProbe,
        TileProbe,
        cosine_similarity_map,
        difference_map,
        fit_from_points,
        kmeans_map,
        label_efficiency,
        predict_map,
        refine,
        similarity_to_query,
        threshold,
        top_k,
        vector_at,
    )
    from anysat_core.data.collate import collate
    from anysat_core.data.datasets import dataset_class, get_dataset, list_datasets
    from anysat_core.data.geoplex_mini import GeoPlexMini
    from anysat_core.data.raster import RasterScene, RasterSource, open_rasters
    from anysat_core.data.synthetic import random_batch
    from anysat_core.dates import parse_date
    from anysat_core.features import extract_features, features_to_dataarray
    from anysat_core.inference import ScenePlan, infer_scene, plan_scene
    from anysat_core.memory import check_memory, memory_limit_bytes, set_memory_share
    from anysat_core.model import OUTPUTS, AnySat
    from anysat_core.overlays import WebOverlay, colorize, composite, web_overlay
    from anysat_core.writers import write_geotiff, write_png, write_zarr


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'anysat_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MODALITIES",
    "OUTPUTS",
    "PCARGB",
    "AnySat",
    "AnySatConfig",
    "GeoPlexMini",
    "Modality",
    "NormStats",
    "PixelProbe",
    "RasterScene",
    "RasterSource",
    "ScenePlan",
    "TileProbe",
    "WebOverlay",
    "__version__",
    "check_memory",
    "collate",
    "colorize",
    "composite",
    "config_for_size",
    "cosine_similarity_map",
    "dataset_class",
    "difference_map",
    "extract_features",
    "features_to_dataarray",
    "fit_from_points",
    "get_dataset",
    "get_modality",
    "infer_scene",
    "kmeans_map",
    "label_efficiency",
    "list_datasets",
    "list_modalities",
    "memory_limit_bytes",
    "open_rasters",
    "parse_date",
    "plan_scene",
    "predict_map",
    "random_batch",
    "refine",
    "set_memory_share",
    "similarity_to_query",
    "threshold",
    "top_k",
    "vector_at",
    "web_overlay",
    "write_geotiff",
    "write_png",
    "write_zarr",
]
__all__ += errors.__all__
