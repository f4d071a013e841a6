"""TreeSatAI-TS: multi-label tree-genus classification of 60 m tiles in Lower Saxony (aerial + Sentinel series)."""

from __future__ import annotations

import json
import logging
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
from anysat_core.modalities import MODALITIES

__all__ = ["TREESAT_GENERA", "TreeSatAITS"]

log = logging.getLogger(__name__)

#: The 15 genera of TreeSatAI, in the order of the multi-hot label.
TREESAT_GENERA: tuple[str, ...] = (
    "Abies", "Acer", "Alnus", "Betula", "Cleared", "Fagus", "Fraxinus", "Larix",
    "Picea", "Pinus", "Populus", "Prunus", "Pseudotsuga", "Quercus", "Tilia",
)  # fmt: skip


@register_dataset
class TreeSatAITS(AnySatDataset):
    """TreeSatAI-TS (Ahlswede et al. 2023; OmniSat 2024): 60 m tiles, 15 tree genera, multi-label.

    50,381 tiles of Lower Saxony, CC-BY-4.0.  Layout under ``root`` (AnySat's renaming of the HF release):

    * ``aerial/<name>.tif``: GeoTIFF 4 x 304 x 304 uint8 at 0.2 m, EPSG:25832, bands **NIR, G, B, R** (kept in
      file order, which is the registry's ``aerial`` order).  The original per-species layout
      ``aerial/60m/<name>.tif`` is also accepted.
    * ``sentinel/<name>.h5``: ``sen-2-data`` (T, 10, 6, 6) float32 L2A reflectance x 1e4 (B02..B12 as in the
      registry), ``sen-1-asc-data`` (T, 2, 6, 6) linear VV, VH, and the ``*-products`` name lists.
    * ``s1-asc/<name>.pth`` (optional, AnySat/OmniSat-derived): tensor (T, 3, 6, 6) VV, VH, VV/VH.
    * ``labels/TreeSatBA_v9_60m_multi_labels.json``: ``{"<name>.tif": [[genus, area_fraction], ...]}``.
    * ``train_filenames.lst``, ``val_filenames.lst``, ``test_filenames.lst``: one ``<name>.tif`` a line.

    Samples:

    * ``aerial`` (4, 300, 300) float32: the 304 px tile cropped to 60 m.  ``crop="auto"`` crops at random in
      the train split (as AnySat's training transform) and at the centre ``[2:302]`` in val/test (as the demo;
      AnySat's released eval transform also crops at random, which makes evaluation non-deterministic).
    * ``s2`` (T, 10, 6, 6), ``s2_dates`` (T,) day of year of field 2 of each product name.
    * ``s1-asc`` (T, 2, 6, 6): ``s1-asc/<name>.pth[:, :2]`` when present, else ``sen-1-asc-data``; dates from
      field 4 of ``sen-1-asc-products``.
    * ``s1`` (T, 3, 6, 6): the 3-channel ``.pth`` as AnySat's demo feeds it (with the demo's statistics);
      without a ``.pth``, VV, VH from the h5 plus VV/VH computed here (matches the ``.pth`` to ~1e-3).
    * ``label`` (15,) float32 multi-hot over :data:`TREESAT_GENERA`, genera covering **more than 7 %** of the
      tile; tiles left with no genus are dropped from the split (as AnySat does).
    * ``meta``: :class:`GeoInfo` of the aerial window (CRS and transform from the GeoTIFF).

    No cloud filtering, no temporal dropout (AnySat uses none for this dataset).  AnySat also passes the split
    lists through skmultilearn's iterative stratification with ``partition=1`` (a reordering); the lists are
    used here in file order.

    Args:
        root, split, modalities, normalize, transform: see :class:`AnySatDataset`.
        crop: ``"auto"``, ``"centre"``, ``"random"`` or None (whole 304 px tile, 60.8 m).
        min_fraction: area fraction a genus must exceed to be a positive label.
    """

    name: ClassVar[str] = "treesatai-ts"
    url: ClassVar[str] = (
        "https://huggingface.co/datasets/IGNF/TreeSatAI-Time-Series (sentinel-ts, split, labels) and "
        "https://zenodo.org/records/6780578 (aerial)"
    )
    layout: ClassVar[str] = (
        "  aerial/<name>.tif                          4 x 304 x 304 uint8 (NIR, G, B, R), 0.2 m\n"
        "  sentinel/<name>.h5                         sen-2-data, sen-2-products, sen-1-asc-data, sen-1-asc-products\n"
        "  s1-asc/<name>.pth                          optional (T, 3, 6, 6) VV, VH, VV/VH\n"
        "  labels/TreeSatBA_v9_60m_multi_labels.json  {<name>.tif: [[genus, fraction], ...]}\n"
        "  {train,val,test}_filenames.lst             one <name>.tif per line"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("aerial", "s2", "s1-asc", "s1")
    default_modalities: ClassVar[tuple[str, ...]] = ("aerial", "s2", "s1-asc")
    task: ClassVar[str] = "multilabel"
    classes: ClassVar[tuple[str, ...]] = TREESAT_GENERA
    patch_size_m: ClassVar[int] = 10
    labels_file: ClassVar[str] = "labels/TreeSatBA_v9_60m_multi_labels.json"
    #: aerial crop (px): 300 px x 0.2 m = 60 m = 6 Sentinel pixels.
    crop_px: ClassVar[int] = 300

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        modalities: Sequence[str] | None = None,
        normalize: bool | str | Normalize = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        crop: str | None = "auto",
        min_fraction: float = 0.07,
    ) -> None:
        check_crop(crop)
        self.crop = crop
        self.min_fraction = float(min_fraction)
        super().__init__(root, split, modalities, normalize, transform)

    # ------------------------------------------------------------------ index
    def _load_index(self) -> None:
        root = self.root_path
        needs_sentinel = any(m in self.modalities for m in ("s2", "s1-asc", "s1"))
        if "aerial" in self.modalities and not (root / "aerial").is_dir():
            raise self.not_found(root / "aerial")
        if needs_sentinel and not (root / "sentinel").is_dir():
            raise self.not_found(root / "sentinel")
        lst = root / f"{self.split}_filenames.lst"
        if not lst.is_file():
            raise self.not_found(lst)
        labels_path = root / self.labels_file
        if not labels_path.is_file():
            raise self.not_found(labels_path)
        try:
            names = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise self.corrupt(lst, e) from e
        self.label_table = self.parse_labels(labels_path)
        self.names: list[str] = []
        self.labels: list[torch.Tensor] = []
        dropped = 0
        for n in names:
            if n not in self.label_table:
                raise self.corrupt(labels_path, f"no entry for {n!r}, which {lst.name} lists")
            y = self.label_table[n]
            if not y.any():
                dropped += 1
                continue
            self.names.append(n)
            self.labels.append(y)
        if dropped:
            log.info(
                "%s %s: dropped %d tiles with no genus above %.0f%%",
                self.name,
                self.split,
                dropped,
                100 * self.min_fraction,
            )

    def parse_labels(self, path: Path) -> dict[str, torch.Tensor]:
        """Multi-hot ``(15,)`` float32 labels of every tile of the labels JSON (genera with fraction > min)."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise self.corrupt(path, e) from e
        if not isinstance(raw, dict):
            raise self.corrupt(path, f"top level is a {type(raw).__name__}; expected {{name.tif: [[genus, fraction]]}}")
        index = {g: i for i, g in enumerate(TREESAT_GENERA)}
        out: dict[str, torch.Tensor] = {}
        for tile, pairs in raw.items():
            y = torch.zeros(len(TREESAT_GENERA), dtype=torch.float32)
            try:
                for genus, frac in pairs:
                    if genus not in index:
                        raise ValueError(f"unknown genus {genus!r} (expected one of {', '.join(TREESAT_GENERA)})")
                    if float(frac) > self.min_fraction:
                        y[index[genus]] = 1.0
            except (TypeError, ValueError) as e:
                raise self.corrupt(path, f"entry {tile!r}: {e}") from e
            out[tile] = y
        return out

    def __len__(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------------ samples
    def _aerial_path(self, stem: str) -> Path:
        p = self.root_path / "aerial" / f"{stem}.tif"
        alt = self.root_path / "aerial" / "60m" / f"{stem}.tif"
        return alt if not p.exists() and alt.exists() else p

    def _load_sample(self, index: int) -> dict[str, Any]:
        fname = self.names[index]
        stem = fname.removesuffix(".tif")
        sample: dict[str, Any] = {}
        geo: GeoInfo | None = None
        extra: dict[str, Any] = {}
        if "aerial" in self.modalities:
            mode = ("random" if self.split == "train" else "centre") if self.crop == "auto" else self.crop
            arr, geo, _ = read_geotiff(
                self, self._aerial_path(stem), crop_px=None if mode is None else self.crop_px, mode=mode or "centre"
            )
            self._check_bands(arr.shape[0], "aerial", self._aerial_path(stem))
            sample["aerial"] = torch.from_numpy(arr.astype(np.float32))
        if any(m in self.modalities for m in ("s2", "s1-asc", "s1")):
            sample.update(self._read_sentinel(stem, extra))
        ordered = {m: sample[m] for m in self.modalities}
        for m in self.modalities:
            if f"{m}_dates" in sample:
                ordered[f"{m}_dates"] = sample[f"{m}_dates"]
        ordered["label"] = self.labels[index].clone()
        if geo is None:  # no aerial: the Sentinel grid
            series = next(sample[m] for m in self.modalities if m in sample)
            shape = (int(series.shape[-2]), int(series.shape[-1]))
            geo = GeoInfo(dataset=self.name, tile_id=stem, gsd_m=MODALITIES["s2"].gsd_m, shape=shape, split=self.split)
        ordered["meta"] = replace(geo, tile_id=stem, extra={**geo.extra, **extra})
        return ordered

    def _check_bands(self, n: int, mod: str, path: Path) -> None:
        want = MODALITIES[mod].num_bands
        if n != want:
            raise self.corrupt(path, f"has {n} bands; expected {want} ({', '.join(MODALITIES[mod].bands)})")

    def _read_sentinel(self, stem: str, extra: dict[str, Any]) -> dict[str, torch.Tensor]:
        import h5py

        path = self.root_path / "sentinel" / f"{stem}.h5"
        if not path.is_file():
            raise self.not_found(path)
        pth = self.root_path / "s1-asc" / f"{stem}.pth"
        use_pth = pth.is_file() and any(m in self.modalities for m in ("s1-asc", "s1"))
        out: dict[str, torch.Tensor] = {}
        try:
            with h5py.File(path, "r") as f:
                if "s2" in self.modalities:
                    out["s2"] = torch.from_numpy(np.asarray(f["sen-2-data"][:], dtype=np.float32))
                    out["s2_dates"], extra["s2_dates"] = doy_from_names(f["sen-2-products"][:], 0, 8, field=2)
                if "s1-asc" in self.modalities or "s1" in self.modalities:
                    dates, extra["s1_asc_dates"] = doy_from_names(f["sen-1-asc-products"][:], 0, 8, field=4)
                    s1 = None if use_pth else torch.from_numpy(np.asarray(f["sen-1-asc-data"][:], dtype=np.float32))
        except (OSError, KeyError, ValueError, IndexError, TypeError) as e:
            raise self.corrupt(path, e) from e
        if "s2" in out:
            self._check_series(out["s2"], out["s2_dates"], "s2", path)
        if "s1-asc" in self.modalities or "s1" in self.modalities:
            if use_pth:
                try:
                    s1 = torch.load(pth, map_location="cpu", weights_only=True)
                except Exception as e:  # torch raises RuntimeError, pickle/zip errors... for a bad file
                    raise self.corrupt(pth, e) from e
                if not isinstance(s1, torch.Tensor) or s1.dim() != 4 or s1.shape[1] != 3:
                    got = tuple(s1.shape) if isinstance(s1, torch.Tensor) else type(s1).__name__
                    raise self.corrupt(pth, f"holds {got}; expected a (T, 3, H, W) tensor VV, VH, VV/VH")
                s1 = s1.to(torch.float32)
            else:
                assert s1 is not None  # read above from the h5
                if s1.dim() != 4 or s1.shape[1] != 2:
                    raise self.corrupt(path, f"sen-1-asc-data has shape {tuple(s1.shape)}; expected (T, 2, H, W)")
                s1 = torch.cat([s1, s1[:, :1] / s1[:, 1:2]], dim=1)
            src = pth if use_pth else path
            self._check_series(s1, dates, "s1", src)
            if "s1-asc" in self.modalities:
                out["s1-asc"], out["s1-asc_dates"] = s1[:, :2].contiguous(), dates
            if "s1" in self.modalities:
                out["s1"], out["s1_dates"] = s1, dates.clone()
        return out

    def _check_series(self, x: torch.Tensor, dates: torch.Tensor, mod: str, path: Path) -> None:
        want = MODALITIES[mod].num_bands
        if x.dim() != 4 or x.shape[1] != want:
            raise self.corrupt(path, f"{mod} data has shape {tuple(x.shape)}; expected (T, {want}, H, W)")
        if x.shape[0] != dates.shape[0]:
            raise self.corrupt(path, f"{mod} has {x.shape[0]} dates of data but {dates.shape[0]} product names")

    def _options(self) -> dict[str, Any]:
        return {"crop": self.crop, "min_fraction": self.min_fraction}
