"""Data for AnySat: every source yields samples in one format (:mod:`~anysat_core.data.sample`).

* :mod:`~anysat_core.data.datasets`: loaders of the AnySat datasets in their published layouts.
* :mod:`~anysat_core.data.geoplex_mini`: GeoPlex-mini, a small procedural georeferenced world.
* :mod:`~anysat_core.data.raster`: your own GeoTIFFs/COGs or xarray objects, aligned and cut into tiles.
* :mod:`~anysat_core.data.collate`, :mod:`~anysat_core.data.normalize`: batching and per-channel normalisation.
* :mod:`~anysat_core.data.synthetic`: deterministic random batches for shape tests and benchmarks.
"""
