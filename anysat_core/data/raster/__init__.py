"""Your own rasters as AnySat input: GeoTIFF/COG files or rioxarray objects cut into aligned square tiles.

Map each raster (or each list of dated rasters) to a modality with :class:`RasterSource`, then
:func:`open_rasters` aligns all of them on one grid family and cuts the common extent into square tiles::

    scene = open_rasters(
        [
            RasterSource(["s2_20200102.tif", "s2_20200315.tif"], modality="s2"),
            RasterSource("s1_stack.tif", modality="s1-asc", dates=["2020-01-05", "2020-03-10"]),
        ],
        tile_m=120,
    )
    batch = collate(list(scene.tiles()))
    feats = model(batch, patch_size_m=40, output="patch")         # (B, 3, 3, D)
    xs, ys = tile_cell_coords(batch["meta"][0], feats.shape[1:3])  # map coordinates of the 3 x 3 patches

**Bands.** ``bands`` selects and orders the bands of each file: 1-based band numbers (as in GDAL, rasterio and
the ``band`` coordinate of ``rioxarray.open_rasterio``) or band names (the file's band descriptions, or the
``band`` coordinate / variable names of an xarray object).  After selection a file must have exactly
``MODALITIES[m].num_bands`` bands in ``MODALITIES[m].bands`` order.  Without ``bands``, files whose band
descriptions name all the registry bands are reordered (and reduced) to the registry order automatically.
Names are compared case-insensitively and with the common aliases (``blue``/``B02``, ``red``/``B04``,
``nir``/``B08``, ``nir08``/``B8A``, ``swir16``/``B11``, ``B2``/``B02``, ``vv``, ``R``/``red``...; see
:func:`~anysat_core.data.raster.sources.band_alias`).  An ``xr.Dataset`` (or NetCDF file) gives one variable per
band, each ``(y, x)``, ``(band=1, y, x)`` or ``(time, y, x)``; its variables are matched to the registry bands by
name and never taken in file order: names that do not match raise :class:`ChannelMismatchError` asking for
``bands=`` (variable names); so do band descriptions that name registry bands in another order.  NetCDF files are read with xarray and georeferenced from their CF coordinates and
``grid_mapping`` variable or from ``crs``/``GeoTransform`` attributes (see :mod:`~anysat_core.data.raster.sources`).

**Time series.** A time-series modality is given either as

* several files (or DataArrays), one per date;
* one DataArray with a ``time`` dimension ``(time, band, y, x)``;
* one file whose bands are stacked **date-major**: ``T * C`` bands, all ``C`` bands of the first date, then all
  bands of the second date...  (``dates=`` with ``T`` entries is then required).

Dates are, in this order of precedence: ``dates=`` (ISO strings ``"2020-01-02"``/``"20200102"``,
:class:`datetime.date`/``datetime``/``numpy.datetime64``, or ints taken as day of year 1..366); a ``time``
coordinate; an acquisition-date tag of the GeoTIFF (``ACQUISITION_DATE``, ``DATE_ACQUIRED``,
``SENSING_TIME``, ``DATETIME``, ``DATE``); a date in the file name (``20200102`` or ``2020-01-02``); and last
``TIFFTAG_DATETIME`` (last because the TIFF standard defines it as the file's creation time, which is often the
processing date).  Frames are sorted chronologically and become ``<mod>_dates`` as day of year (``tm_yday``,
1..366), as the AnySat loaders do.

**Alignment.** Tiles keep the data where it is:

* reference CRS: ``crs=`` of :func:`open_rasters` (must be projected, in metres) or the CRS of the reference raster
  (the first raster of the finest gridded modality); when that one is geographic (degrees) or not in metres, the UTM
  zone of its centre is used instead;
* common extent: the intersection of all sources' bounds (in the reference CRS), shrunk inwards to the reference
  raster's own pixel grid; tile ``(0, 0)`` starts at its top-left corner (or, with ``origin=(x, y)``, on the
  ``tile_m`` lattice through that point), so no data is cut off or shifted;
* each modality gets pixels of its registry GSD (``MODALITIES[m].gsd_m``) on that origin; ``tile_m`` is a multiple
  of every GSD (the grid unit ``u`` = their least common multiple, 10 m for s2 + s1);
* a raster already on its target grid (same CRS and pixel size, whole-pixel offset) is read as is, without
  resampling; others are warped with rasterio: ``average`` when the source pixels are clearly finer than the target
  GSD, ``bilinear`` otherwise (override per source with ``resampling=``); MODIS uses ``nearest``;
* pixels outside the common extent, nodata and non-finite values are masked (``<mod>_mask``); edge tiles are
  padded.  ``min_valid_fraction=`` skips tiles (e.g. slivers) with less valid data; ``scene.summary()`` counts them.

**Normalisation.** Tiles are normalised by default (``normalize="auto"``): with the registry's statistics of each
modality (those the released checkpoint was used with, e.g. ``treesatai-ts`` for s2, s1 and aerial, in the units of
the original data) or, for modalities without any, statistics computed from a bounded sample of the scene.  Give a
registry name, a statistics file, a ``{modality: ...}`` mapping or a
:class:`~anysat_core.data.normalize.Normalize` to choose, or ``normalize=None`` for raw file values;
``scene.normalization`` and ``repr(scene)`` name the statistics in use (see :mod:`anysat_core.data.raster.stats`).

**MODIS** (one 250 m pixel per tile): each tile gets the value of the MODIS pixel that contains the tile centre
(nearest-neighbour sampling of a grid with one ``tile_m`` pixel per tile).

**Tiling.** The common extent is cut into ``tile_m`` squares from its top-left corner; tiles on the right and
bottom edges extend beyond the data, and their padded pixels hold 0 with ``<mod>_mask`` False.  nodata pixels
(the file's nodata value, ``nodata=``, or NaN) are never silently zero: they are False in ``<mod>_mask`` (same
shape as the data).  A tile with no valid pixel in any gridded modality is skipped by :meth:`RasterScene.tiles`
and indexing; asking for it with :meth:`RasterScene.tile` raises :class:`EmptyTileError`.

Values are returned raw (file units, float32); normalise them with :mod:`anysat_core.data.normalize`.
Reading is lazy: files are opened with ``rioxarray.open_rasterio`` and each tile reads only the window it needs.
"""

from anysat_core.data.raster.grid import SceneGrid, tile_cell_coords
from anysat_core.data.raster.scene import RasterScene, open_rasters
from anysat_core.data.raster.sources import RasterSource

__all__ = ["RasterScene", "RasterSource", "SceneGrid", "open_rasters", "tile_cell_coords"]
