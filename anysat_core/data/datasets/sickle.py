"""SICKLE: paddy / non-paddy mapping from Sentinel-2, Sentinel-1 and Landsat-8 time series (Cauvery Delta, India)."""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import rasterio
import torch
import torch.nn.functional as F
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.normalize import Normalize
from anysat_core.data.sample import GeoInfo
from anysat_core.dates import yyyymmdd_to_doy
from anysat_core.modalities import MODALITIES

__all__ = ["Sickle"]

#: file band name of each registry band (registry order), None = no such band (zero-filled and masked).
_S2_BANDS = {"B02": "B2", "B03": "B3", "B04": "B4", "B05": "B5", "B06": "B6", "B07": "B7", "B08": "B8", "B8A": "B8A",
             "B11": "B11", "B12": "B12"}  # fmt: skip
_L8_BANDS = {"B8": None, "B1": "SR_B1", "B2": "SR_B2", "B3": "SR_B3", "B4": "SR_B4", "B5": "SR_B5", "B6": "SR_B6",
             "B7": "SR_B7", "B9": None, "B10": "ST_B10", "B11": None}  # fmt: skip
_S1_BANDS = ("VV", "VH")
_FOLDERS = {"s2": "S2", "s1": "S1", "l8": "L8"}
#: loader split -> value of the SPLIT column (AnySat's test set is SICKLE's val split)
_SPLIT_VALUES = {"train": "train", "val": "val", "test": "val"}
_RATIO_EPS = 1e-6
_RATIO_CLAMP = 1e4


def _stamp_from_name(mod: str, filename: str) -> str:
    """YYYYMMDD of an acquisition file: S2 ``_``-field 1 if the name starts with "T" else field 0; S1 field 4;
    L8 field 2 (first 8 characters)."""
    fields = Path(filename).stem.split("_")
    if mod == "s2":
        f = fields[1] if filename.startswith("T") else fields[0]
    elif mod == "s1":
        f = fields[4]
    else:
        f = fields[2]
    return f[:8]


def _resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of ``(..., H, W)`` to ``(..., size, size)`` (OpenCV INTER_NEAREST indexing)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(1, -1, *x.shape[-2:]).to(torch.float32), size=(size, size), mode="nearest")
    return y.reshape(*lead, size, size).to(x.dtype)


@register_dataset
class Sickle(AnySatDataset):
    """SICKLE (Sani et al., WACV 2024): paddy vs non-paddy segmentation, Cauvery Delta, Tamil Nadu, India.

    2018-2021; 2,370 samples over 388 plots.  Data via the authors' Google form (toy and full versions); licence per
    the access terms, not verified.

    Layout under ``root`` (as AnySat reads it; the official code uses ``masks/yield_distributed/<res>m/``)::

        sickle_dataset_tabular.csv            UNIQUE_ID, PLOT_ID, SPLIT, STANDARD_SEASON, YEAR, SOWING_DAY, ...
        images/{S2,S1,L8}/npy/<UNIQUE_ID>/*.npz   one file per acquisition, one (H, W) array per band name
        masks/10m/<UNIQUE_ID>.tif             bands: plot id, crop type, sowing, transplanting, harvesting, yield

    Band files: S2 B1..B12 with B8A (12 bands), S1 VV, VH (likely dB, from GEE), L8 SR_B1..SR_B7, ST_B10 (some may
    be missing).  Dates: the YYYYMMDD in the file name (S2: ``_``-field 1 if the name starts with "T", else field 0;
    S1: field 4; L8: field 2), as day of year (``tm_yday``; seasons cross 1 January so it wraps).  Acquisitions are
    sorted by date (AnySat keeps the ``glob`` order).

    Sample (every array resized nearest to ``img_size`` = 32 px, a 10 m grid of 320 m):

    * ``s2`` float32 ``(T, 10, 32, 32)`` in the registry order B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12.
      AnySat feeds B8A in the B08 slot and B8 in the B8A slot; ``upstream_band_order=True`` reproduces that swap.
    * ``s1`` float32 ``(T, 3, 32, 32)``: VV, VH, ``VV / (VH + 1e-6)`` clamped to +-1e4.
    * ``l8`` float32 ``(T, 11, 32, 32)`` in the registry slots B8, B1..B7, B9, B10, B11 filled with
      0, SR_B1..SR_B7, 0, ST_B10, 0, and ``l8_mask`` bool ``(T, 11, 32, 32)``, True only on bands present in the file.
    * ``label`` int64 ``(32, 32)``: mask band 1 minus 1, then values > 1 set to 1 and < -1 set to 0 (0 paddy,
      1 other crop, -1 ignored, e.g. background crop value 0); pixels of plots (plot id > 0) whose ``PLOT_ID`` is not
      in this split are -1.
    * ``<mod>_dates`` int64 ``(T,)``, ``name`` the UNIQUE_ID as a string, ``meta`` (CRS and transform of the mask
      GeoTIFF, rescaled to the output grid).

    Splits: the ``SPLIT`` column; as in AnySat, ``split="test"`` reads the rows with ``SPLIT == "val"`` (so test and
    val are the same samples).  Task: binary segmentation, metric IoU (Jaccard, 2 classes, ignore -1, macro mean;
    about 89 in the AnySat README figure).  AnySat's temporal dropout 0.2 in training is not done here.

    Citation: D. Sani, S. Mahato, S. Saini et al., "SICKLE: A Multi-Sensor Satellite Imagery Dataset Annotated with
    Multiple Key Cropping Parameters", WACV 2024.
    """

    name: ClassVar[str] = "sickle"
    url: ClassVar[str] = "https://github.com/Depanshu-Sani/SICKLE (data via the Google form linked there)"
    layout: ClassVar[str] = (
        "  sickle_dataset_tabular.csv                    columns UNIQUE_ID, PLOT_ID, SPLIT, ...\n"
        "  images/{S2,S1,L8}/npy/<UNIQUE_ID>/*.npz       one npz per acquisition, keys = band names\n"
        "  masks/10m/<UNIQUE_ID>.tif                     6 bands: plot id, crop type, sowing, transplanting, "
        "harvesting, yield"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("s2", "s1", "l8")
    default_modalities: ClassVar[tuple[str, ...]] = ("s2", "s1", "l8")
    task: ClassVar[str] = "segmentation"
    classes: ClassVar[tuple[str, ...]] = ("paddy", "non-paddy")
    ignore_index: ClassVar[int | None] = -1
    patch_size_m: ClassVar[int] = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        modalities: Sequence[str] | None = None,
        normalize: bool | str | Normalize = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        img_size: int = 32,
        upstream_band_order: bool = False,
    ) -> None:
        """See :class:`AnySatDataset`; ``img_size``: output side in px; ``upstream_band_order``: AnySat's s2 B8/B8A swap."""
        self.img_size = int(img_size)
        self.upstream_band_order = upstream_band_order
        super().__init__(root, split, modalities, normalize, transform)

    def _options(self) -> dict[str, Any]:
        return {"img_size": self.img_size, "upstream_band_order": self.upstream_band_order}

    def _load_index(self) -> None:
        path = self.root_path / "sickle_dataset_tabular.csv"
        if not path.is_file():
            raise self.not_found(path)
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise self.corrupt(path, e) from e
        missing = [c for c in ("UNIQUE_ID", "PLOT_ID", "SPLIT") if c not in df.columns]
        if missing:
            raise self.corrupt(path, f"no column {', '.join(missing)}; columns are {', '.join(map(str, df.columns))}")
        rows = df[df["SPLIT"].astype(str) == _SPLIT_VALUES[self.split]].reset_index(drop=True)
        try:
            self.uids: list[int] = [int(u) for u in rows["UNIQUE_ID"]]
            self.plot_ids: set[int] = {int(p) for p in rows["PLOT_ID"]}
        except (TypeError, ValueError) as e:
            raise self.corrupt(path, f"UNIQUE_ID/PLOT_ID are not integers: {e}") from e
        for sub in ("images", "masks/10m"):
            if not (self.root_path / sub).is_dir():
                raise self.not_found(self.root_path / sub)

    def __len__(self) -> int:
        return len(self.uids)

    def _read_npz(self, path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: np.asarray(f[k]) for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise self.corrupt(path, e) from e

    def _read_series(self, uid: int, mod: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(x (T, C, S, S) float32, doy (T,) int64, mask (T, C, S, S) bool or None)``."""
        folder = self.root_path / "images" / _FOLDERS[mod] / "npy" / str(uid)
        if not folder.is_dir():
            raise self.not_found(folder)
        files = []
        for p in folder.glob("*.npz"):
            try:
                date = _stamp_from_name(mod, p.name)
                doy = yyyymmdd_to_doy(date)
            except (IndexError, ValueError) as e:
                raise self.corrupt(
                    p, f"no YYYYMMDD date in the file name where {mod.upper()} names have it ({e})"
                ) from e
            files.append((date, p.name, doy, p))
        if not files:
            raise self.not_found(folder / "*.npz")
        files.sort()
        S = self.img_size
        frames, masks = [], []
        names: list[str | None]
        if mod == "s2":
            names = [_S2_BANDS[b] for b in MODALITIES["s2"].bands]
            if self.upstream_band_order:
                i8, i8a = MODALITIES["s2"].bands.index("B08"), MODALITIES["s2"].bands.index("B8A")
                names[i8], names[i8a] = names[i8a], names[i8]
        elif mod == "l8":
            names = [_L8_BANDS[b] for b in MODALITIES["l8"].bands]
        else:
            names = list(_S1_BANDS)
        for _, _, _, p in files:
            arrays = self._read_npz(p)
            chans, valid = [], []
            for b in names:
                if b is not None and b in arrays:
                    a = arrays[b]
                    if a.ndim != 2:
                        raise self.corrupt(p, f"band {b} has shape {a.shape}; expected (H, W)")
                    chans.append(_resize_nearest(torch.from_numpy(a.astype(np.float32)), S))
                    valid.append(True)
                elif mod == "l8":
                    chans.append(torch.zeros(S, S))
                    valid.append(False)
                else:
                    raise self.corrupt(p, f"no band {b}; it has {', '.join(arrays) or 'none'}")
            x = torch.stack(chans)
            if mod == "s1":
                x = torch.cat([x, (x[:1] / (x[1:2] + _RATIO_EPS)).clamp(-_RATIO_CLAMP, _RATIO_CLAMP)])
            frames.append(x)
            masks.append(torch.tensor(valid))
        doys = torch.tensor([f[2] for f in files], dtype=torch.int64)
        x = torch.stack(frames)
        mask = torch.stack(masks)[:, :, None, None].expand(-1, -1, S, S).contiguous() if mod == "l8" else None
        return x, doys, mask

    def _read_label(self, uid: int) -> tuple[torch.Tensor, Any, Any, tuple[int, int]]:
        path = self.root_path / "masks" / "10m" / f"{uid}.tif"
        if not path.is_file():
            raise self.not_found(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as f:
                    arr, crs, transform = f.read(), f.crs, f.transform
        except (RasterioError, OSError, ValueError) as e:
            raise self.corrupt(path, e) from e
        if arr.shape[0] < 2:
            raise self.corrupt(path, f"{arr.shape[0]} band(s); expected 6 (plot id, crop type, ...)")
        plot = np.rint(arr[0]).astype(np.int64)
        label = np.rint(arr[1]).astype(np.int64) - 1
        label[label > 1] = 1
        label[label < -1] = 0
        other = np.isin(plot, sorted(self.plot_ids), invert=True) & (plot > 0)
        label[other] = -1
        return _resize_nearest(torch.from_numpy(label), self.img_size), crs, transform, arr.shape[1:]

    def _load_sample(self, index: int) -> dict[str, Any]:
        uid = self.uids[index]
        label, crs, t, (h, w) = self._read_label(uid)
        out: dict[str, Any] = {}
        for mod in self.modalities:
            x, doy, mask = self._read_series(uid, mod)
            out[mod] = x
            out[f"{mod}_dates"] = doy
            if mask is not None:
                out[f"{mod}_mask"] = mask
        S = self.img_size
        transform = None
        if crs is not None:
            kx, ky = w / S, h / S
            transform = (t.a * kx, t.b * ky, t.c, t.d * kx, t.e * ky, t.f)
        out["label"] = label
        out["name"] = str(uid)
        out["meta"] = GeoInfo(
            dataset=self.name,
            tile_id=str(uid),
            crs=crs.to_string() if crs is not None else None,
            transform=transform,
            gsd_m=MODALITIES["s2"].gsd_m,
            shape=(S, S),
            split=self.split,
        )
        return out
