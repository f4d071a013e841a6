"""anysat_core: a faithful, fast re-implementation of AnySat (Astruc et al., CVPR 2025).

>>> from anysat_core import AnySat
>>> model = AnySat.from_pretrained("base")          # released weights (cached download)
>>> feats = model(batch, patch_size=20, output="tile")

This package never imports app, training, panel, holoviews, lightning or leafmap.
"""

from anysat_core.config import AnySatConfig, config_for_size
from anysat_core.errors import *  # noqa: F403
from anysat_core.errors import __all__ as _error_names
from anysat_core.modalities import MODALITIES, Modality, NormStats, get_modality, list_modalities
from anysat_core.model import OUTPUTS, AnySat, set_fused_attention

__version__ = "0.1.0"

__all__ = [
    "MODALITIES",
    "OUTPUTS",
    "AnySat",
    "AnySatConfig",
    "Modality",
    "NormStats",
    "__version__",
    "config_for_size",
    "get_modality",
    "list_modalities",
    "set_fused_attention",
    *_error_names,
]
