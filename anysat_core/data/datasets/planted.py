"""PLANTED: planted-forest species from multi-satellite time series, in AnySat's npz conversion."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.sample import GeoInfo
from anysat_core.modalities import MODALITIES

__all__ = ["Planted"]

#: modalities stored as (first 2 channels) + appended ratio channel ch0 / (ch1 + eps).
_RATIO_MODALITIES = ("s1", "alos")
_RATIO_EPS = 1e-10
_RATIO_CLAMP = 1e4


def _read_npz(ds: AnySatDataset, path: Path) -> np.ndarray:
    """``arr_0`` of an npz file; missing file -> DatasetNotFoundError, unreadable -> CorruptFileError."""
    if not path.is_file():
        raise ds.not_found(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "arr_0" not in f.files:
                raise ds.corrupt(path, f"no key 'arr_0' (keys: {', '.join(f.files) or 'none'})")
            return np.asarray(f["arr_0"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ds.corrupt(path, e) from e


def ms_to_doy(ms: np.ndarray) -> torch.Tensor:
    """Day of year (1..366, ``tm_yday``) of timestamps in milliseconds since the Unix epoch.

    As AnySat does, the conversion uses ``datetime.fromtimestamp``, i.e. the **local time zone** of the machine.
    """
    return torch.tensor([datetime.fromtimestamp(float(m) / 1000).timetuple().tm_yday for m in ms], dtype=torch.int64)


@register_dataset
class Planted(AnySatDataset):
    """PLANTED (Pazos-Outón et al., IGARSS 2024): planted-forest species, one label per 120 m tile.

    Google DeepMind's dataset has over 2M examples, 64 labels and 41 countries; AnySat keeps 40 classes and reads
    its own npz conversion (1,075,701 train tiles in its config; 1,346,662 tiles in total per its README).
    Licence not verified.

    Layout under ``root`` (the AnySat conversion, not the original release)::

        {train,val,test}/labels2.json                  {"<id>": class index 0-39, ...}
        {train,val,test}/<id>/<id>_<mod>.npz           arr_0: (T, H, W, C) values
        {train,val,test}/<id>/<id>_<mod>_mask.npz      arr_0: same shape, non-zero = valid
        {train,val,test}/<id>/<id>_<mod>_timestamp.npz arr_0: (T,) milliseconds since the Unix epoch

    Modalities (all five are used by AnySat):

    =========  ============================  ======  ================================
    key        channels                      GSD     tile
    =========  ============================  ======  ================================
    ``s2``     B02..B12 (10 bands)           10 m    12 x 12 px
    ``s1``     VV, VH + VV/VH ratio          10 m    12 x 12 px
    ``l7``     B1, B2, B3, B4, B5, B7        30 m    4 x 4 px *(inferred)*
    ``alos``   HH, HV + HH/HV ratio          30 m    4 x 4 px *(inferred)*
    ``modis``  B1..B7                        250 m   1 x 1 px *(inferred)*
    =========  ============================  ======  ================================

    Sample: ``<mod>`` float32 ``(T, C, H, W)`` (the file's ``(T, H, W, C)`` permuted; for ``s1``/``alos`` the first
    two channels plus ``ch0 / (ch1 + 1e-10)`` clamped to +-1e4), ``<mod>_mask`` bool ``(T, C, H, W)`` (the ratio
    channel is valid where both its inputs are), ``<mod>_dates`` int64 ``(T,)`` day of year from
    ``datetime.fromtimestamp`` (local time zone, as AnySat; series span several years so the day of year wraps),
    ``label`` int64 ``()`` class index (AnySat one-hot encodes it to 40 dims; take ``one_hot(label, 40)``),
    ``name`` the tile id, ``meta`` :class:`GeoInfo` (no georeferencing in this conversion).

    Task: single-label classification over the 40 classes, macro F1 (about 61 in the AnySat README figure).
    The AnySat protocol drops 30 % of the dates in training (ALOS keeps 90 %) and samples classes in proportion to
    the square root of their frequency; neither is done here (no randomness in the loader).  ``patch_size_m`` = 30 is
    the smallest patch size valid with the 30 m sensors *(inferred: the config value was not checked)*.

    Citation: L. Pazos-Outón et al., "Planted: a dataset for planted forest identification from multi-satellite
    time series", IGARSS 2024, arXiv:2406.18554.
    """

    name: ClassVar[str] = "planted"
    url: ClassVar[str] = "https://arxiv.org/abs/2406.18554 (npz conversion: https://github.com/gastruc/AnySat)"
    layout: ClassVar[str] = (
        '  {train,val,test}/labels2.json                   {"<id>": class index 0-39}\n'
        "  {train,val,test}/<id>/<id>_<mod>.npz            arr_0 (T, H, W, C)\n"
        "  {train,val,test}/<id>/<id>_<mod>_mask.npz       arr_0 (T, H, W, C)\n"
        "  {train,val,test}/<id>/<id>_<mod>_timestamp.npz  arr_0 (T,) ms since epoch\n"
        "  with <mod> in s2, s1, l7, alos, modis"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("s2", "s1", "l7", "alos", "modis")
    default_modalities: ClassVar[tuple[str, ...]] = ("s2", "s1", "l7", "alos", "modis")
    task: ClassVar[str] = "classification"
    classes: ClassVar[tuple[str, ...]] = (
        "Elaeis guineensis", "Pinus taeda", "Pinus rigida", "Pinus koraiensis", "Pinus densiflora",
        "Abies sachalinensis", "Pinus elliottii", "Shorea robusta", "Castanea crenata", "Pseudotsuga menziesii",
        "Eucalyptus globulus", "Pinus radiata", "Robinia pseudoacacia", "Pinus thunbergii", "Pinus echinata",
        "Thea sinensis", "Betula pendula", "Hevea brasiliensis", "Picea glehnii", "Quercus acutissima",
        "Eucalyptus nitens", "Cocos nucifera", "Anacardium occidentale", "Zelkova serrata", "Acer pictum",
        "Prunus serrulata", "Prunus dulcis", "Picea jezoensis", "Quercus variabilis", "Fraxinus rhynchophylla",
        "Ginkgo biloba", "Pasania edulis", "Dendropanax morbiferus", "Machilus thunbergii", "Cryptomeria japonica",
        "Acacia melanoxylon", "Malus pumila", "Picea mariana", "Cornus controversa", "Theobroma cacao",
    )  # fmt: skip
    patch_size_m: ClassVar[int] = 30

    def _load_index(self) -> None:
        self.split_dir = self.root_path / self.split
        labels_path = self.split_dir / "labels2.json"
        if not labels_path.is_file():
            raise self.not_found(labels_path)
        try:
            raw = json.loads(labels_path.read_text())
        except (OSError, ValueError) as e:
            raise self.corrupt(labels_path, e) from e
        if not isinstance(raw, dict):
            raise self.corrupt(labels_path, f"expected a JSON object {{id: class index}}, got {type(raw).__name__}")
        self.ids: list[str] = list(raw)
        self.labels: list[int] = []
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(self.classes):
                raise self.corrupt(
                    labels_path, f"label of {k!r} is {v!r}; expected a class index 0-{len(self.classes) - 1}"
                )
            self.labels.append(v)

    def __len__(self) -> int:
        return len(self.ids)

    def _read_modality(self, tile: str, mod: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x (T, C, H, W) float32, mask (T, C, H, W) bool, doy (T,) int64)`` of one modality of one tile."""
        folder = self.split_dir / tile
        data_path = folder / f"{tile}_{mod}.npz"
        mask_path = folder / f"{tile}_{mod}_mask.npz"
        ts_path = folder / f"{tile}_{mod}_timestamp.npz"
        data = _read_npz(self, data_path)
        mask = _read_npz(self, mask_path)
        ts = _read_npz(self, ts_path)
        n_bands = MODALITIES[mod].num_bands
        need_c = 2 if mod in _RATIO_MODALITIES else n_bands
        if data.ndim != 4 or (data.shape[-1] < need_c if mod in _RATIO_MODALITIES else data.shape[-1] != need_c):
            raise self.corrupt(
                data_path,
                f"arr_0 has shape {data.shape}; expected (T, H, W, {need_c}) "
                f"({', '.join(MODALITIES[mod].bands[:need_c])})",
            )
        if mask.shape != data.shape:
            raise self.corrupt(mask_path, f"mask shape {mask.shape} differs from data shape {data.shape}")
        if ts.ndim != 1 or ts.shape[0] != data.shape[0]:
            raise self.corrupt(ts_path, f"timestamps have shape {ts.shape}; expected ({data.shape[0]},), one per date")
        try:
            x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
            m = torch.from_numpy(np.asarray(mask) != 0).permute(0, 3, 1, 2).contiguous()
        except (TypeError, ValueError) as e:
            raise self.corrupt(data_path, e) from e
        if mod in _RATIO_MODALITIES:
            ratio = (x[:, :1] / (x[:, 1:2] + _RATIO_EPS)).clamp(-_RATIO_CLAMP, _RATIO_CLAMP)
            x = torch.cat([x[:, :2], ratio], dim=1)
            m = torch.cat([m[:, :2], m[:, :1] & m[:, 1:2]], dim=1)
        try:
            doy = ms_to_doy(ts)
        except (OverflowError, OSError, ValueError) as e:
            raise self.corrupt(ts_path, e) from e
        return x, m, doy

    def _load_sample(self, index: int) -> dict[str, Any]:
        tile = self.ids[index]
        out: dict[str, Any] = {}
        ref: tuple[float, tuple[int, int]] | None = None
        for mod in self.modalities:
            x, m, doy = self._read_modality(tile, mod)
            out[mod] = x
            out[f"{mod}_dates"] = doy
            out[f"{mod}_mask"] = m
            gsd = MODALITIES[mod].gsd_m
            if not MODALITIES[mod].tile_token and (ref is None or gsd < ref[0]):
                ref = (gsd, (int(x.shape[-2]), int(x.shape[-1])))
        out["label"] = torch.tensor(self.labels[index], dtype=torch.int64)
        out["name"] = tile
        out["meta"] = GeoInfo(
            dataset=self.name,
            tile_id=tile,
            gsd_m=ref[0] if ref else None,
            shape=ref[1] if ref else None,
            split=self.split,
        )
        return out
