"""S2NAIP-URBAN: NAIP + Sentinel-2 + Sentinel-1 + Landsat-8/9 tiles over US cities (AnySat pretraining data)."""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio
import rasterio.features
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.normalize import Normalize
from anysat_core.data.sample import GeoInfo
from anysat_core.dates import yyyymmdd_to_doy
from anysat_core.errors import CorruptFileError
from anysat_core.modalities import MODALITIES

__all__ = ["OSM_CATEGORIES", "S2NaipUrban", "rasterize_osm"]

#: bands of each stacked GeoTIFF, per date (time-major: date 0's bands, then date 1's...).
_STACKS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "s2": (("sentinel2", "_8", ("B02", "B03", "B04", "B08")), ("sentinel2", "_16", ("B05", "B06", "B07", "B8A", "B11", "B12"))),
    "s1": (("sentinel1", "", ("VV", "VH")),),
    "l8": (("landsat", "_8", ("B8",)), ("landsat", "_16", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"))),
}  # fmt: skip
_RATIO_EPS = 1e-6
_RATIO_CLAMP = 1e4

#: OSM ``properties.category`` -> meta-class (1 buildings, 2 transport, 3 industry/energy, 4 water; else 5 other).
OSM_CATEGORIES: dict[str, int] = {
    **dict.fromkeys(("building", "flagpole", "lighthouse", "obelisk", "observatory"), 1),
    **dict.fromkeys(("aerialway_pylon", "airport", "gas_station", "helipad", "parking", "road", "runway", "taxiway"), 2),
    **dict.fromkeys(
        ("chimney", "petroleum_well", "power_plant", "power_substation", "power_tower", "satellite_dish", "silo",
         "storage_tank", "wind_turbine", "works"), 3),
    **dict.fromkeys(("river", "fountain"), 4),
}  # fmt: skip
OSM_CLASSES = ("background", "buildings", "transport", "industry/energy", "water", "other")


def _disk(out: np.ndarray, pts: np.ndarray, seg_end: np.ndarray | None, radius: float, value: int) -> None:
    """Set pixels whose centre lies within ``radius`` of point ``pts`` (or of segment pts->seg_end)."""
    H, W = out.shape
    p0 = pts
    p1 = pts if seg_end is None else seg_end
    x0, x1 = sorted((p0[0], p1[0]))
    y0, y1 = sorted((p0[1], p1[1]))
    c0, c1 = max(0, int(np.floor(x0 - radius - 1))), min(W, int(np.ceil(x1 + radius + 1)))
    r0, r1 = max(0, int(np.floor(y0 - radius - 1))), min(H, int(np.ceil(y1 + radius + 1)))
    if c0 >= c1 or r0 >= r1:
        return
    cx, cy = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    d = p1 - p0
    L2 = float(d @ d)
    t = np.zeros_like(cx) if L2 == 0 else np.clip(((cx - p0[0]) * d[0] + (cy - p0[1]) * d[1]) / L2, 0, 1)
    dist2 = (cx - (p0[0] + t * d[0])) ** 2 + (cy - (p0[1] + t * d[1])) ** 2
    out[r0:r1, c0:c1][dist2 <= radius**2] = value


def rasterize_osm(features: Sequence[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterize OSM features (pixel coordinates of the NAIP grid) into an ``(H, W)`` int64 map of meta-classes.

    Polygons are filled, lines drawn 2 px thick (pixels within 1 px of the line), points as disks of radius 1 px.
    Features are drawn in file order (later ones on top).  Unknown categories are class 5 ("other").
    """
    out = np.zeros(shape, dtype=np.int64)
    for feat in features:
        geom = feat.get("geometry") or {}
        value = OSM_CATEGORIES.get(str((feat.get("properties") or {}).get("category")), 5)
        gtype = geom.get("type")
        coords: Any = geom.get("coordinates")  # GeoJSON: nested lists (a bad file fails with TypeError below)
        if gtype in ("Polygon", "MultiPolygon"):
            burned = rasterio.features.rasterize(
                [(geom, 1)], out_shape=shape, transform=Affine.identity(), fill=0, dtype="uint8"
            )
            out[burned == 1] = value
        elif gtype in ("LineString", "MultiLineString"):
            lines = [coords] if gtype == "LineString" else coords
            for line in lines:
                pts = np.asarray(line, dtype=np.float64)[:, :2]
                for a, b in itertools.pairwise(pts):
                    _disk(out, a, b, 1.0, value)
        elif gtype in ("Point", "MultiPoint"):
            for p in [coords] if gtype == "Point" else coords:
                _disk(out, np.asarray(p, dtype=np.float64)[:2], None, 1.0, value)
        else:
            raise CorruptFileError(
                f"unsupported geometry type {gtype!r}; expected Polygon, MultiPolygon, LineString, MultiLineString, "
                "Point or MultiPoint"
            )
    return out


@register_dataset
class S2NaipUrban(AnySatDataset):
    """S2NAIP-URBAN (Allen AI S2-NAIP "urban set"), the AnySat pretraining tiles; Apache-2.0.

    Continental US, 2019-2021; 640 m tiles: NAIP 512 x 512 px at 1.25 m, Sentinel-2 (L1C per the HF card),
    Sentinel-1 and Landsat-8/9 series at 10 m (64 x 64 px).  AnySat's index JSONs list 359,046 train and 82,140
    val tiles.

    Layout under ``root``::

        {train,val,test}_dict.json     {"name": [...], "s2_dates": [[YYYYMMDD, ...], ...], "s1_dates", "l8_dates"}
        naip/<name>.png                4 x 512 x 512 uint8: R, G, B, NIR (4th band inferred)
        sentinel2/<name>_8.tif         T*4 bands, 64 x 64 (10 m): B02, B03, B04, B08 per date, time-major
        sentinel2/<name>_16.tif        T*6 bands, 32 x 32 (20 m): B05, B06, B07, B8A, B11, B12 per date
        sentinel1/<name>.tif           T*2 bands, 64 x 64: VV, VH per date
        landsat/<name>_8.tif           T*1 band, 64 x 64: B8 (panchromatic)
        landsat/<name>_16.tif          T*10 bands, 32 x 32: B1-B7, B9, B10, B11
        openstreetmap/<name>.geojson   OSM features, ``properties.category``, pixel coordinates of the NAIP grid

    ``<name>`` is ``<EPSG>_<col>_<row>`` on a 512 px x 1.25 m grid.  The 20 m stacks are resized to the 10 m grid
    (bilinear, antialiased) and the bands reordered to the registry orders (s2: B02..B12; l8: B8, B1-B7, B9-B11);
    the band identities of the S2 stacks are *inferred* from AnySat's reorder.  ``s1`` gets the ratio channel
    ``VV / (VH + 1e-6)`` clamped to +-1e4 (the epsilon is *inferred*: AnySat's other loaders use it).
    Dates: the JSON strings converted to day of year (``tm_yday``).

    Sample: ``naip`` float32 ``(4, H, W)``, ``s2``/``s1``/``l8`` float32 ``(T, C, H/8, W/8)`` with ``<mod>_dates``
    int64 ``(T,)``, ``name``, ``meta`` (CRS and transform of the NAIP grid taken from the Sentinel-2 GeoTIFF when
    it is georeferenced, else the CRS from ``<EPSG>`` only).  With ``osm_label=True`` also ``label`` int64
    ``(H, W)``: the OSM features rasterized on the NAIP grid into 6 meta-classes (:data:`OSM_CLASSES`).  There is
    no task or metric: AnySat pretrains on these tiles (JEPA); temporal dropout 0.5 in AnySat is not done here.

    Citation: P. Wolters, F. Bastani, A. Kembhavi, "Zooming Out on Zooming In: Advancing Super-Resolution for
    Remote Sensing", arXiv:2311.18082 (satlas-super-resolution).
    """

    name: ClassVar[str] = "s2naip-urban"
    url: ClassVar[str] = (
        "https://huggingface.co/datasets/allenai/s2-naip (index JSONs: https://github.com/gastruc/AnySat)"
    )
    layout: ClassVar[str] = (
        "  {train,val,test}_dict.json   keys name, s2_dates, s1_dates, l8_dates (YYYYMMDD strings)\n"
        "  naip/<name>.png              4 x H x W uint8 at 1.25 m\n"
        "  sentinel2/<name>_8.tif, <name>_16.tif\n"
        "  sentinel1/<name>.tif\n"
        "  landsat/<name>_8.tif, <name>_16.tif\n"
        "  openstreetmap/<name>.geojson (only with osm_label=True)"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("naip", "l8", "s2", "s1")
    default_modalities: ClassVar[tuple[str, ...]] = ("naip", "l8", "s2", "s1")
    task: ClassVar[str] = "pretraining"
    classes: ClassVar[tuple[str, ...]] = OSM_CLASSES
    patch_size_m: ClassVar[int] = 40

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        modalities: Sequence[str] | None = None,
        normalize: bool | str | Normalize = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        osm_label: bool = False,
    ) -> None:
        """See :class:`AnySatDataset`; ``osm_label=True`` adds the rasterized OSM map as ``label``."""
        self.osm_label = osm_label
        super().__init__(root, split, modalities, normalize, transform)

    def _options(self) -> dict[str, Any]:
        return {"osm_label": self.osm_label}

    def _load_index(self) -> None:
        path = self.root_path / f"{self.split}_dict.json"
        if not path.is_file():
            raise self.not_found(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise self.corrupt(path, e) from e
        keys = ("name", "s2_dates", "s1_dates", "l8_dates")
        if not isinstance(raw, dict) or any(not isinstance(raw.get(k), list) for k in keys):
            raise self.corrupt(path, f"expected a JSON object with list values under {', '.join(keys)}")
        n = len(raw["name"])
        if any(len(raw[k]) != n for k in keys):
            raise self.corrupt(path, "lists of different lengths: " + ", ".join(f"{k}={len(raw[k])}" for k in keys))
        self.names: list[str] = [str(x) for x in raw["name"]]
        self.dates: dict[str, list[list[str]]] = {}
        for mod in ("s2", "s1", "l8"):
            self.dates[mod] = [[str(d) for d in ds] for ds in raw[f"{mod}_dates"]]
        self._index_path = path

    def __len__(self) -> int:
        return len(self.names)

    def _read_raster(self, path: Path) -> tuple[np.ndarray, Any, Any]:
        """``(array (bands, H, W), crs, transform)`` of a GeoTIFF/PNG."""
        if not path.is_file():
            raise self.not_found(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as f:
                    return f.read(), f.crs, f.transform
        except (RasterioError, OSError, ValueError) as e:
            raise self.corrupt(path, e) from e

    def _read_series(self, name: str, mod: str, T: int) -> tuple[torch.Tensor, Any, Any]:
        """``(T, C, H, W)`` float32 in registry band order, plus the CRS/transform of the 10 m stack."""
        bands: dict[str, torch.Tensor] = {}
        size: tuple[int, int] | None = None
        crs = transform = None
        for folder, suffix, names in _STACKS[mod]:
            path = self.root_path / folder / f"{name}{suffix}.tif"
            arr, c, t = self._read_raster(path)
            if arr.shape[0] != T * len(names):
                raise self.corrupt(
                    path,
                    f"{arr.shape[0]} bands; expected {T} dates x {len(names)} bands ({', '.join(names)}) = "
                    f"{T * len(names)}, as {self._index_path.name} lists {T} {mod} dates",
                )
            x = torch.from_numpy(arr.astype(np.float32)).reshape(T, len(names), *arr.shape[1:])
            if size is None:
                size, crs, transform = (int(arr.shape[1]), int(arr.shape[2])), c, t
            elif tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            for i, b in enumerate(names):
                bands[b] = x[:, i]
        x = torch.stack([bands[b] for b in MODALITIES[mod].bands if b in bands], dim=1)
        if mod == "s1":
            x = torch.cat([x, (x[:, :1] / (x[:, 1:2] + _RATIO_EPS)).clamp(-_RATIO_CLAMP, _RATIO_CLAMP)], dim=1)
        return x, crs, transform

    def _load_sample(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        out: dict[str, Any] = {}
        geo_crs = geo_t = None
        naip_shape: tuple[int, int] | None = None
        s10_shape: tuple[int, int] | None = None
        for mod in self.modalities:
            if mod == "naip":
                arr, _, _ = self._read_raster(self.root_path / "naip" / f"{name}.png")
                n = MODALITIES["naip"].num_bands
                if arr.shape[0] != n:
                    raise self.corrupt(self.root_path / "naip" / f"{name}.png", f"{arr.shape[0]} bands; expected {n}")
                out["naip"] = torch.from_numpy(arr.astype(np.float32))
                naip_shape = (int(arr.shape[1]), int(arr.shape[2]))
                continue
            raw_dates = self.dates[mod][index]
            try:
                doy = torch.tensor([yyyymmdd_to_doy(d) for d in raw_dates], dtype=torch.int64)
            except ValueError as e:
                raise self.corrupt(self._index_path, f"{mod} dates of {name!r}: {e}") from e
            x, crs, t = self._read_series(name, mod, len(raw_dates))
            out[mod] = x
            out[f"{mod}_dates"] = doy
            s10_shape = s10_shape or (int(x.shape[-2]), int(x.shape[-1]))
            if mod == "s2" and crs is not None:
                geo_crs, geo_t = crs, t
        ref_shape = naip_shape or s10_shape
        if naip_shape is None and self.osm_label:
            ref_shape = (s10_shape[0] * 8, s10_shape[1] * 8) if s10_shape else (512, 512)
        if self.osm_label:
            assert ref_shape is not None  # the NAIP shape, else 8x the 10 m shape, else 512 x 512 (set above)
            path = self.root_path / "openstreetmap" / f"{name}.geojson"
            if not path.is_file():
                raise self.not_found(path)
            try:
                fc = json.loads(path.read_text())
                out["label"] = torch.from_numpy(rasterize_osm(fc.get("features", []), ref_shape))
            except (OSError, ValueError, TypeError, AttributeError, IndexError) as e:
                raise self.corrupt(path, e) from e
        gsd = MODALITIES["naip"].gsd_m if naip_shape is not None or self.osm_label else MODALITIES["s2"].gsd_m
        transform = None
        if geo_t is not None and s10_shape is not None and ref_shape is not None:
            k = s10_shape[1] / ref_shape[1]
            transform = (geo_t.a * k, geo_t.b * k, geo_t.c, geo_t.d * k, geo_t.e * k, geo_t.f)
        epsg = name.split("_")[0]
        crs_str = geo_crs.to_string() if geo_crs is not None else (f"EPSG:{epsg}" if epsg.isdigit() else None)
        out["name"] = name
        out["meta"] = GeoInfo(
            dataset=self.name,
            tile_id=name,
            crs=crs_str,
            transform=transform,
            gsd_m=gsd,
            shape=ref_shape,
            split=self.split,
            extra={f"{m}_dates": tuple(self.dates[m][index]) for m in self.modalities if m != "naip"},
        )
        return out
