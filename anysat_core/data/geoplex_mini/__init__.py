"""GeoPlex-mini: a small procedural, multi-modal, georeferenced world (the project's embedded default dataset).

:mod:`.world` holds the world (parcels, classes, phenology, disturbances, dates, clouds), :mod:`.signals` what each
sensor measures over it, and :mod:`.dataset` the :class:`GeoPlexMini` dataset, registered as ``"geoplex-mini"``.
"""

from anysat_core.data.geoplex_mini.dataset import GENERATOR_VERSION, GeoPlexMini
from anysat_core.data.geoplex_mini.world import CLASSES, CRS

__all__ = ["CLASSES", "CRS", "GENERATOR_VERSION", "GeoPlexMini"]
