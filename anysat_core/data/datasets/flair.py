"""FLAIR #2: land-cover semantic segmentation of 0.2 m aerial patches with Sentinel-2 series (France)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anysat_core.data.datasets._io import check_crop, doy_from_names, read_geotiff
from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.normalize import Normalize
from anysat_core.data.sample import GeoInfo
from anysat_core.errors import ConfigError
from anysat_core.modalities import MODALITIES

__all__ = ["FLAIR", "FLAIR_CLASSES"]

#: The 13 classes AnySat trains on (raw MSK values 1-12, then 13-19 merged into "other").
FLAIR_CLASSES: tuple[str, ...] = (
    "building", "pervious surface", "impervious surface", "bare soil", "water", "coniferous", "deciduous",
    "brushwood", "vineyard", "herbaceous vegetation", "agricultural land", "plowed land", "other",
)  # fmt: skip

_OTHER = 12
_TASKS = ("segmentation", "multilabel")
# (aerial, labels, sentinel) folders of the train and test releases
_GROUPS = (
    ("flair_aerial_train", "flair_labels_train", "flair_sen_train"),
    ("flair_2_aerial_test", "flair_2_labels_test", "flair_2_sen_test"),
)
_CENTROIDS = "flair-2_centroids_sp_to_patch.json"


@register_dataset
class FLAIR(AnySatDataset):
    """FLAIR #2 (Garioud et al. 2023): 512 x 512 aerial patches at 0.2 m with Sentinel-2 super-area series.

    Licence Etalab Open Licence 2.0.  Layout under ``root`` (the release plus AnySat's ``splits.json``):

    * ``flair_aerial_train/<domain>/<zone>/img/IMG_<id>.tif``: 5 x 512 x 512 uint8, EPSG:2154, bands
      R, G, B, NIR, elevation (the registry's ``aerial-flair`` order).
    * ``flair_labels_train/<domain>/<zone>/msk/MSK_<id>.tif``: 1 x 512 x 512, classes 1-19.
    * ``flair_sen_train/<domain>/<zone>/sen/SEN2_sp_<domain>-<zone>_{data.npy,masks.npy,products.txt}``:
      (T, 10, H, W) reflectance of the zone's super-area, (T, 2, H, W) snow/cloud probability 0-100, and one
      product name a line.
    * the same under ``flair_2_aerial_test``, ``flair_2_labels_test``, ``flair_2_sen_test`` for the test domains.
    * ``flair-2_centroids_sp_to_patch.json``: ``{"IMG_<id>.tif": [row, col]}`` of each patch in its super-area.
    * ``splits.json``: ``{"train": [domains], "val": [...], "test": [...]}``; a domain is looked up in both
      releases.  (AnySat's own file validates on the test domains.)

    Samples:

    * ``aerial-flair`` (5, 500, 500) float32: ``crop="auto"`` crops 500 px (100 m) at random in train and at
      the centre ``[6:506]`` otherwise, as AnySat; ``crop=None`` keeps the whole patch.
    * ``s2`` (T, 10, w, w) with ``w = s2_window_px`` (10 = 100 m), rows ``r - w//2 ... r - w//2 + w`` around
      the centroid ``[r, c]`` (AnySat: X-5..X+5); ``s2_dates`` day of year of characters 11-19 of each product
      name.  Clouds are not filtered (as AnySat); with ``cloud_threshold`` set, ``s2_mask`` (T, 1, w, w) is
      False where the snow or cloud probability exceeds it.
    * ``label``: ``task="segmentation"`` (H, W) int64 with raw values > 13 merged into 13, minus 1, so 0-12
      where 12 is "other" (:attr:`ignore_index`, the class AnySat's loss weights 0 and its mIoU leaves out);
      ``task="multilabel"`` (13,) float32 multi-hot of the classes present.
    * ``meta``: :class:`GeoInfo` of the aerial window.

    Temporal dropout (0.7 in AnySat's training) is left to transforms.

    Args:
        root, split, modalities, normalize, transform: see :class:`AnySatDataset`.
        task: ``"segmentation"`` or ``"multilabel"``.
        crop: ``"auto"``, ``"centre"``, ``"random"`` or None.
        s2_window_px: side in Sentinel-2 pixels of the window cut around each patch centroid.
        cloud_threshold: probability (0-100) above which a date-pixel is marked invalid in ``s2_mask``;
            None (default) gives no mask.
    """

    name: ClassVar[str] = "flair"
    url: ClassVar[str] = "https://huggingface.co/datasets/IGNF/FLAIR (FLAIR #2, ignf.github.io/FLAIR)"
    layout: ClassVar[str] = (
        "  flair_aerial_train/<domain>/<zone>/img/IMG_<id>.tif       5 x 512 x 512 (R, G, B, NIR, elevation)\n"
        "  flair_labels_train/<domain>/<zone>/msk/MSK_<id>.tif       1 x 512 x 512, classes 1-19\n"
        "  flair_sen_train/<domain>/<zone>/sen/*{data.npy,masks.npy,products.txt}\n"
        "  flair_2_{aerial,labels,sen}_test/...                      same, test domains\n"
        f"  {_CENTROIDS}                     {{IMG_<id>.tif: [row, col]}}\n"
        '  splits.json                                             {"train": [domains], "val": [...], "test": [...]}'
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("aerial-flair", "s2")
    default_modalities: ClassVar[tuple[str, ...]] = ("aerial-flair", "s2")
    task: ClassVar[str] = "segmentation"
    classes: ClassVar[tuple[str, ...]] = FLAIR_CLASSES
    ignore_index: ClassVar[int | None] = _OTHER
    patch_size_m: ClassVar[int] = 10
    #: aerial crop (px): 500 px x 0.2 m = 100 m = 10 Sentinel-2 pixels.
    crop_px: ClassVar[int] = 500

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        modalities: Sequence[str] | None = None,
        normalize: bool | str | Normalize = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        task: str = "segmentation",
        crop: str | None = "auto",
        s2_window_px: int = 10,
        cloud_threshold: float | None = None,
    ) -> None:
        if task not in _TASKS:
            raise ConfigError(f"{self.name}: task={task!r}; expected one of {', '.join(_TASKS)}")
        check_crop(crop)
        if int(s2_window_px) < 1:
            raise ConfigError(f"{self.name}: s2_window_px={s2_window_px!r}; expected a positive number of pixels")
        self.task = task  # type: ignore[misc]
        if task == "multilabel":
            self.ignore_index = None  # type: ignore[misc]
        self.crop = crop
        self.s2_window_px = int(s2_window_px)
        self.cloud_threshold = cloud_threshold
        self._zones: dict[Path, tuple[Path, Path, torch.Tensor, list[str]]] = {}
        super().__init__(root, split, modalities, normalize, transform)

    # ------------------------------------------------------------------ index
    def _load_index(self) -> None:
        root = self.root_path
        splits_path = root / "splits.json"
        if not splits_path.is_file():
            raise self.not_found(splits_path)
        try:
            splits = json.loads(splits_path.read_text())
            domains = [str(d) for d in splits[self.split]]
        except KeyError:
            raise self.corrupt(splits_path, f"has no {self.split!r} list; expected keys train, val, test") from None
        except (OSError, ValueError, TypeError) as e:
            raise self.corrupt(splits_path, e) from e
        if not any((root / g[0]).is_dir() for g in _GROUPS):
            raise self.not_found(root / _GROUPS[0][0])
        if "s2" in self.modalities:
            cpath = root / _CENTROIDS
            if not cpath.is_file():
                raise self.not_found(cpath)
            try:
                self.centroids: dict[str, Any] = json.loads(cpath.read_text())
            except (OSError, ValueError) as e:
                raise self.corrupt(cpath, e) from e
        self.items: list[dict[str, Any]] = []
        for domain in domains:
            group = next((g for g in _GROUPS if (root / g[0] / domain).is_dir()), None)
            if group is None:
                raise self.not_found(root / _GROUPS[0][0] / domain)
            aerial_dir, label_dir, sen_dir = (root / g / domain for g in group)
            if not label_dir.is_dir():
                raise self.not_found(label_dir)
            if "s2" in self.modalities and not sen_dir.is_dir():
                raise self.not_found(sen_dir)
            for zone in sorted(p for p in aerial_dir.iterdir() if p.is_dir()):
                for img in sorted((zone / "img").glob("IMG_*.tif")):
                    pid = img.stem[len("IMG_") :]
                    self.items.append(
                        {
                            "img": img,
                            "msk": label_dir / zone.name / "msk" / f"MSK_{pid}.tif",
                            "sen": sen_dir / zone.name / "sen",
                            "domain": domain,
                            "zone": zone.name,
                        }
                    )

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ samples
    def _zone(self, sen: Path) -> tuple[Path, Path, torch.Tensor, list[str]]:
        """data.npy, masks.npy, day of year and ISO dates of a zone's super-area (cached)."""
        if sen in self._zones:
            return self._zones[sen]
        if not sen.is_dir():
            raise self.not_found(sen)
        found = {}
        for suffix in ("data.npy", "masks.npy", "products.txt"):
            hits = sorted(sen.glob(f"*{suffix}"))
            if not hits:
                raise self.not_found(sen / f"SEN2_sp_<domain>-<zone>_{suffix}")
            found[suffix] = hits[0]
        products = found["products.txt"]
        try:
            names = [ln.strip() for ln in products.read_text().splitlines() if ln.strip()]
            doy, iso = doy_from_names(names, 11, 19)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise self.corrupt(products, f"{e}; expected one product name a line, YYYYMMDD at characters 11-19") from e
        self._zones[sen] = (found["data.npy"], found["masks.npy"], doy, iso)
        return self._zones[sen]

    def _window(self, path: Path, r0: int, c0: int, w: int, want_c: int, what: str) -> np.ndarray:
        """``[:, :, r0:r0+w, c0:c0+w]`` of a memory-mapped (T, C, H, W) array."""
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise self.corrupt(path, e) from e
        if arr.ndim != 4 or arr.shape[1] != want_c:
            raise self.corrupt(path, f"has shape {arr.shape}; expected (T, {want_c}, H, W) {what}")
        H, W = arr.shape[-2:]
        if r0 < 0 or c0 < 0 or r0 + w > H or c0 + w > W:
            raise self.corrupt(
                self.root_path / _CENTROIDS,
                f"the {w} px window at rows {r0}..{r0 + w}, cols {c0}..{c0 + w} leaves the {H} x {W} super-area "
                f"of {path.name}; use a smaller s2_window_px",
            )
        try:
            return np.array(arr[:, :, r0 : r0 + w, c0 : c0 + w], dtype=np.float32)
        except (OSError, ValueError) as e:
            raise self.corrupt(path, e) from e

    def _load_sample(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        img: Path = it["img"]
        sample: dict[str, Any] = {}
        extra: dict[str, Any] = {"domain": it["domain"], "zone": it["zone"]}
        mode = ("random" if self.split == "train" else "centre") if self.crop == "auto" else self.crop
        crop_px = None if mode is None else self.crop_px
        geo: GeoInfo | None = None
        offset: tuple[int, int] | None = None
        if "aerial-flair" in self.modalities:
            arr, geo, offset = read_geotiff(self, img, crop_px=crop_px, mode=mode or "centre")
            want = MODALITIES["aerial-flair"].num_bands
            if arr.shape[0] != want:
                raise self.corrupt(img, f"has {arr.shape[0]} bands; expected {want} (R, G, B, NIR, elevation)")
            sample["aerial-flair"] = torch.from_numpy(arr.astype(np.float32))
        if "s2" in self.modalities:
            data_p, masks_p, doy, iso = self._zone(it["sen"])
            try:
                r, c = (int(v) for v in self.centroids[img.name])
            except KeyError:
                raise self.corrupt(self.root_path / _CENTROIDS, f"has no centroid for {img.name!r}") from None
            except (TypeError, ValueError) as e:
                raise self.corrupt(self.root_path / _CENTROIDS, f"{img.name!r}: {e}; expected [row, col]") from e
            w = self.s2_window_px
            r0, c0 = r - w // 2, c - w // 2
            x = self._window(data_p, r0, c0, w, MODALITIES["s2"].num_bands, "reflectance")
            if x.shape[0] != doy.shape[0]:
                why = f"has {x.shape[0]} dates but the products.txt beside it lists {doy.shape[0]}"
                raise self.corrupt(data_p, why)
            sample["s2"] = torch.from_numpy(x)
            sample["s2_dates"] = doy.clone()
            if self.cloud_threshold is not None:
                m = self._window(masks_p, r0, c0, w, 2, "snow and cloud probability")
                if m.shape[0] != x.shape[0]:
                    raise self.corrupt(masks_p, f"has {m.shape[0]} dates; data.npy has {x.shape[0]}")
                sample["s2_mask"] = torch.from_numpy((m <= self.cloud_threshold).all(axis=1, keepdims=True))
            extra["s2_dates"] = iso
            extra["s2_window"] = (r0, c0, w, w)
        label_arr, lgeo, _ = read_geotiff(self, it["msk"], crop_px=crop_px, mode="centre", offset=offset)
        if label_arr.shape[0] != 1 or (
            "aerial-flair" in sample and label_arr.shape[-2:] != tuple(sample["aerial-flair"].shape[-2:])
        ):
            raise self.corrupt(it["msk"], f"has shape {label_arr.shape}; expected one band the size of {img.name}")
        raw = torch.from_numpy(label_arr[0].astype(np.int64))
        sem = raw.clamp(max=_OTHER + 1) - 1  # 1..12 -> 0..11, 13..19 -> 12 ("other")
        if self.task == "segmentation":
            sample["label"] = sem
        else:
            present = torch.zeros(len(FLAIR_CLASSES), dtype=torch.float32)
            present[sem[sem >= 0].unique()] = 1.0
            sample["label"] = present
        geo = geo or lgeo
        sample["meta"] = replace(geo, tile_id=img.stem, extra={**geo.extra, **extra})
        return sample

    def _options(self) -> dict[str, Any]:
        return {"task": self.task, "crop": self.crop, "s2_window_px": self.s2_window_px}
