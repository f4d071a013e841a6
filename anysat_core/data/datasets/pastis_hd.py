"""PASTIS-HD: crop-type semantic segmentation (or multi-label classification) of 1.28 km patches in France."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anysat_core.data.datasets._io import read_geotiff
from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.normalize import Normalize, stats_path
from anysat_core.data.sample import GeoInfo
from anysat_core.dates import yyyymmdd_date
from anysat_core.errors import ConfigError
from anysat_core.modalities import MODALITIES, NormStats

__all__ = ["PASTISHD", "PASTIS_CLASSES", "REFERENCE_DATE"]

#: The 20 semantic classes of PASTIS (index = value in TARGET channel 0).
PASTIS_CLASSES: tuple[str, ...] = (
    "Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed", "Spring barley",
    "Sunflower", "Grapevine", "Beet", "Winter triticale", "Winter durum wheat", "Fruits, vegetables, flowers",
    "Potatoes", "Leguminous fodder", "Soybeans", "Orchard", "Mixed cereal", "Sorghum", "Void label",
)  # fmt: skip

#: PASTIS dates are days since this date (not day of year).
REFERENCE_DATE = dt.date(2018, 9, 1)

_VOID = 19
_DEFAULT_FOLDS = {"train": (1, 2, 3), "val": (4,), "test": (5,)}
_TASKS = ("segmentation", "multilabel")
# modality -> (folder, file prefix, metadata dates key, shipped NORM file stem, channels stored, channels kept)
_SERIES = {
    "s2": ("DATA_S2", "S2", "dates-S2", "S2", 10, 10),
    "s1": ("DATA_S1A", "S1A", "dates-S1A", "S1A", 3, 3),
    "s1-asc": ("DATA_S1A", "S1A", "dates-S1A", "S1A", 3, 2),
}
_SPOT_DIR = "DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019"


@register_dataset
class PASTISHD(AnySatDataset):
    """PASTIS-HD (Sainte Fare Garnot & Landrieu 2021; OmniSat 2024): 2,433 agricultural patches of 1.28 km.

    Licence etalab-2.0 (data).  Layout under ``root`` (AnySat's ``PASTIS-R`` folder plus ``DATA_SPOT``):

    * ``metadata.geojson``: one feature per patch with ``ID_PATCH``, ``Fold`` (1-5) and the date dictionaries
      ``dates-S2``, ``dates-S1A`` (``{"0": 20180924, ...}``, possibly stored as a JSON string).
    * ``DATA_S2/S2_<id>.npy``: (T, 10, 128, 128) int16 reflectance, bands B2..B12 as the registry's ``s2``.
    * ``DATA_S1A/S1A_<id>.npy``: (T, 3, 128, 128) float32 ascending VV, VH, VV/VH in dB.
    * ``DATA_SPOT/PASTIS_SPOT6_RVB_1M00_2019/SPOT6_RVB_1M00_2019_<id>.tif``: RGB uint8 at 1 m (PASTIS-HD only).
    * ``ANNOTATIONS/TARGET_<id>.npy``: (3, 128, 128); channel 0 is the semantic class 0-19.
    * optional ``NORM_S2_patch.json``/``NORM_S1A_patch.json`` (shipped, ``{"Fold_k": {"mean", "std"}}``).

    Samples: ``s2`` (T, 10, H, W) and ``s1`` (T, 3, H, W) (= S1A with its stored ratio, as AnySat) or
    ``s1-asc`` (T, 2, H, W) (= S1A[:, :2]), float32; ``<mod>_dates`` are **days since 2018-09-01**
    (:data:`REFERENCE_DATE`, as AnySat; not day of year); ``spot`` (3, 10*H, 10*W); ``label``:

    * ``task="segmentation"``: (H, W) int64 class map 0-19; 19 ("void") is :attr:`ignore_index`.
    * ``task="multilabel"``: (18,) float32 multi-hot of the classes present, background (0) and void (19) dropped.

    ``meta`` carries the SPOT GeoTIFF's CRS/transform when ``spot`` is loaded, else the patch polygon's bounds
    from ``metadata.geojson`` on the 10 m grid.

    Splits follow the official folds: train 1-3, val 4, test 5 (AnySat); ``folds=`` overrides them.
    Normalisation (``normalize=True``): ``NORM_<modality>_patch.json`` when present, else the shipped
    ``NORM_S2_patch.json``/``NORM_S1A_patch.json`` averaged over the folds in use; ``"compute"`` computes
    missing ones from the train split.  AnySat's train-time cap of 20 random dates is left to transforms.

    Args:
        root, split, modalities, normalize, transform: see :class:`AnySatDataset`.
        task: ``"segmentation"`` or ``"multilabel"``.
        folds: folds of this split (default: the AnySat folds of ``split``).
    """

    name: ClassVar[str] = "pastis-hd"
    url: ClassVar[str] = "https://huggingface.co/datasets/IGNF/PASTIS-HD (or Zenodo 10908628)"
    layout: ClassVar[str] = (
        "  metadata.geojson                 features with ID_PATCH, Fold, dates-S2, dates-S1A\n"
        "  DATA_S2/S2_<id>.npy              (T, 10, 128, 128)\n"
        "  DATA_S1A/S1A_<id>.npy            (T, 3, 128, 128)\n"
        f"  {_SPOT_DIR}/SPOT6_RVB_1M00_2019_<id>.tif   (spot only)\n"
        "  ANNOTATIONS/TARGET_<id>.npy      (3, 128, 128), channel 0 = class"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("spot", "s2", "s1", "s1-asc")
    default_modalities: ClassVar[tuple[str, ...]] = ("spot", "s2", "s1")
    task: ClassVar[str] = "segmentation"
    classes: ClassVar[tuple[str, ...]] = PASTIS_CLASSES
    ignore_index: ClassVar[int | None] = _VOID
    patch_size_m: ClassVar[int] = 40

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        modalities: Sequence[str] | None = None,
        normalize: bool | str | Normalize = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        task: str = "segmentation",
        folds: Sequence[int] | None = None,
    ) -> None:
        if task not in _TASKS:
            raise ConfigError(f"{self.name}: task={task!r}; expected one of {', '.join(_TASKS)}")
        self.task = task  # type: ignore[misc]
        if task == "multilabel":
            self.classes = PASTIS_CLASSES[1:_VOID]  # type: ignore[misc]
            self.ignore_index = None  # type: ignore[misc]
        self.folds = tuple(int(f) for f in (folds if folds is not None else _DEFAULT_FOLDS.get(split, ())))
        bad = [f for f in self.folds if f not in range(1, 6)]
        if split in self.splits and (bad or not self.folds):
            raise ConfigError(f"{self.name}: folds={folds!r}; expected a non-empty subset of 1, 2, 3, 4, 5")
        super().__init__(root, split, modalities, normalize, transform)

    # ------------------------------------------------------------------ index
    def _load_index(self) -> None:
        meta_path = self.root_path / "metadata.geojson"
        if not meta_path.is_file():
            raise self.not_found(meta_path)
        for d in ["ANNOTATIONS"] + [_SERIES[m][0] for m in self.modalities if m in _SERIES]:
            if not (self.root_path / d).is_dir():
                raise self.not_found(self.root_path / d)
        if "spot" in self.modalities and not (self.root_path / _SPOT_DIR).is_dir():
            raise self.not_found(self.root_path / _SPOT_DIR)
        try:
            fc = json.loads(meta_path.read_text())
            features = fc["features"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise self.corrupt(meta_path, e) from e
        self.crs = _crs_of(fc)
        self.patches: list[dict[str, Any]] = []
        for i, feat in enumerate(features):
            try:
                props = feat["properties"]
                fold, pid = int(props["Fold"]), props["ID_PATCH"]
            except (KeyError, TypeError, ValueError) as e:
                why = f"feature {i}: {type(e).__name__}: {e} (expected Fold and ID_PATCH)"
                raise self.corrupt(meta_path, why) from e
            if fold not in self.folds:
                continue
            entry: dict[str, Any] = {"id": str(pid), "fold": fold, "bounds": _bounds(feat.get("geometry"))}
            for mod in self.modalities:
                if mod in _SERIES:
                    key = _SERIES[mod][2]
                    entry[key] = self._dates(props, key, meta_path, pid)
            self.patches.append(entry)

    def _dates(self, props: Mapping[str, Any], key: str, path: Path, pid: Any) -> tuple[torch.Tensor, list[str]]:
        """Days since 2018-09-01 (int64) and ISO dates of one patch's date dictionary."""
        if key not in props:
            raise self.corrupt(
                path, f"patch {pid} has no {key!r} property; expected a {{index: YYYYMMDD}} dictionary as in PASTIS-R"
            )
        raw = props[key]
        try:
            if isinstance(raw, str):
                raw = json.loads(raw)
            items = sorted(((int(k), int(v)) for k, v in raw.items()), key=lambda kv: kv[0])
            days = [yyyymmdd_date(v) for _, v in items]
        except (ValueError, TypeError, AttributeError) as e:
            raise self.corrupt(path, f"patch {pid} {key}: {type(e).__name__}: {e}") from e
        return (
            torch.tensor([(d - REFERENCE_DATE).days for d in days], dtype=torch.int64),
            [d.isoformat() for d in days],
        )

    def __len__(self) -> int:
        return len(self.patches)

    # ------------------------------------------------------------------ samples
    def _npy(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise self.not_found(path)
        try:
            return np.load(path)
        except (OSError, ValueError, EOFError) as e:
            raise self.corrupt(path, e) from e

    def _load_sample(self, index: int) -> dict[str, Any]:
        p = self.patches[index]
        pid = p["id"]
        sample: dict[str, Any] = {}
        extra: dict[str, Any] = {"fold": p["fold"]}
        geo: GeoInfo | None = None
        for mod in self.modalities:
            if mod == "spot":
                path = self.root_path / _SPOT_DIR / f"SPOT6_RVB_1M00_2019_{pid}.tif"
                arr, geo, _ = read_geotiff(self, path)
                if arr.shape[0] != MODALITIES["spot"].num_bands:
                    raise self.corrupt(path, f"has {arr.shape[0]} bands; expected 3 (R, G, B)")
                sample["spot"] = torch.from_numpy(arr.astype(np.float32))
                continue
            folder, prefix, key, _, stored, keep = _SERIES[mod]
            path = self.root_path / folder / f"{prefix}_{pid}.npy"
            x = self._npy(path)
            if x.ndim != 4 or x.shape[1] != stored:
                raise self.corrupt(path, f"has shape {x.shape}; expected (T, {stored}, H, W)")
            dates, iso = p[key]
            if x.shape[0] != dates.shape[0]:
                raise self.corrupt(
                    path, f"has {x.shape[0]} dates but metadata.geojson lists {dates.shape[0]} in {key} for patch {pid}"
                )
            sample[mod] = torch.from_numpy(np.ascontiguousarray(x[:, :keep], dtype=np.float32))
            sample[f"{mod}_dates"] = dates.clone()
            extra[key] = iso
        tpath = self.root_path / "ANNOTATIONS" / f"TARGET_{pid}.npy"
        target = self._npy(tpath)
        if target.ndim == 2:
            target = target[None]
        if target.ndim != 3:
            raise self.corrupt(tpath, f"has shape {target.shape}; expected (3, H, W) with the class in channel 0")
        sem = torch.from_numpy(target[0].astype(np.int64))
        if sem.numel() and (int(sem.min()) < 0 or int(sem.max()) > _VOID):
            raise self.corrupt(tpath, f"has classes {int(sem.min())}..{int(sem.max())}; expected 0..19")
        if self.task == "segmentation":
            sample["label"] = sem
        else:
            present = torch.zeros(len(PASTIS_CLASSES), dtype=torch.float32)
            present[sem.unique()] = 1.0
            sample["label"] = present[1:_VOID]
        if geo is None:
            H, W = sem.shape
            geo = GeoInfo(
                dataset=self.name,
                tile_id=pid,
                crs=self.crs,
                gsd_m=MODALITIES["s2"].gsd_m,
                shape=(H, W),
                split=self.split,
            )
            projected = self.crs is not None and self.crs.startswith("EPSG:") and self.crs != "EPSG:4326"
            if p["bounds"] is not None and projected:  # patch polygon on the 10 m grid of the Sentinel arrays
                left, bottom, right, top = p["bounds"]
                geo = replace(geo, transform=((right - left) / W, 0.0, left, 0.0, -(top - bottom) / H, top))
        sample["meta"] = replace(geo, tile_id=pid, split=self.split, extra={**geo.extra, **extra})
        return sample

    # ------------------------------------------------------------------ normalisation
    def _load_stats(
        self, *, compute: bool, modalities: Sequence[str] | None = None, prefer_files: bool = False
    ) -> dict[str, NormStats]:
        """As the base class, but the shipped ``NORM_S2_patch.json``/``NORM_S1A_patch.json`` count as cached."""
        mods = self.modalities if modalities is None else tuple(modalities)
        shipped: dict[str, NormStats] = {}
        for mod in mods:
            if mod in _SERIES and not stats_path(self.root_path, mod).exists():
                path = self.root_path / f"NORM_{_SERIES[mod][3]}_patch.json"
                if path.is_file():
                    shipped[mod] = self._shipped_stats(path, mod)
        rest = [m for m in mods if m not in shipped]
        rest_stats = super()._load_stats(compute=compute, modalities=rest, prefer_files=prefer_files) if rest else {}
        return {**shipped, **rest_stats}

    def _shipped_stats(self, path: Path, mod: str) -> NormStats:
        """Per-fold statistics ``{"Fold_k": {"mean", "std"}}`` averaged over this split's folds."""
        try:
            raw = json.loads(path.read_text())
            folds = [raw[f"Fold_{k}"] for k in self.folds if f"Fold_{k}" in raw] or list(raw.values())
            keep = _SERIES[mod][5]
            mean = np.mean([np.asarray(f["mean"], dtype=np.float64)[:keep] for f in folds], axis=0)
            std = np.mean([np.asarray(f["std"], dtype=np.float64)[:keep] for f in folds], axis=0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise self.corrupt(path, e) from e
        if mean.shape != (keep,):
            raise self.corrupt(path, f"has {mean.shape} means; expected {keep} for {mod}")
        return NormStats(tuple(mean.tolist()), tuple(std.tolist()), source=f"{path} (folds {self.folds})")

    def _options(self) -> dict[str, Any]:
        return {"task": self.task}


def _crs_of(fc: Mapping[str, Any]) -> str | None:
    """``"EPSG:2154"`` (or the raw name) from a GeoJSON ``crs`` member; None when absent."""
    try:
        name = str(fc["crs"]["properties"]["name"])
    except (KeyError, TypeError):
        return None
    if "EPSG::" in name:
        return "EPSG:" + name.rsplit("::", 1)[1]
    return "OGC:" + name.rsplit(":", 1)[-1] if name.startswith("urn:ogc:def:crs:OGC") else name


def _bounds(geom: Any) -> tuple[float, float, float, float] | None:
    """``(left, bottom, right, top)`` of a GeoJSON (Multi)Polygon, None if there is none."""
    try:
        pts = np.asarray(_flatten(geom["coordinates"]), dtype=np.float64).reshape(-1, 2)
    except (KeyError, TypeError, ValueError):
        return None
    if pts.size == 0:
        return None
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def _flatten(c: Any) -> list[float]:
    if isinstance(c, (int, float)):
        return [float(c)]
    return [v for item in c for v in _flatten(item)]
