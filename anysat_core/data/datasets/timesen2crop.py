"""TimeSen2Crop: pixel-level Sentinel-2 time series of 16 crop types (Austria, 2017-2018)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.sample import GeoInfo
from anysat_core.dates import yyyymmdd_to_doy
from anysat_core.modalities import MODALITIES

__all__ = ["TimeSen2Crop"]

TILES = ("32TNT", "32TPT", "32TQT", "33TUM", "33TUN", "33TVM", "33TVN", "33TWM", "33TWN", "33TXN", "33UUP", "33UVP",
         "33UWP", "33UWQ", "33UXP")  # fmt: skip
_SPLIT_TILES = {"val": ("33TWN",), "test": ("33UVP",)}
_EXCLUDED = ("2019_33UVP",)
#: CSV columns: B02, B03, B04, B05, B06, B07, B8A, B11, B12, flag -> AnySat's s2 slots
#: [B02, B03, B04, B05, B06, B07, B08 <- B8A, B8A <- flag (masked), B11, B12]
_COLUMN_ORDER = (0, 1, 2, 3, 4, 5, 6, 9, 7, 8)
_FLAG_SLOT = 7
_N_COLUMNS = 10


@register_dataset
class TimeSen2Crop(AnySatDataset):
    """TimeSen2Crop (Weikmann, Paris & Bruzzone, IEEE JSTARS 2021): crop type of single Sentinel-2 pixels.

    Austria (the AnySat README says Slovenia), agronomic year September 2017 - August 2018; 1,212,224 pixels in 15
    tiles, plus ``2019_33UVP`` (2018-19, not used).  CC BY 4.0 per the MONSTER re-release card.

    Layout under ``root`` (Zenodo 4715631, ``TimeSen2Crop.zip``)::

        <tile>/dates.csv            header "acquisition_date", then one YYYYMMDD per row (chronological)
        <tile>/<class 0-15>/<k>.csv one pixel: a header row, then T rows x 10 columns: B02, B03, B04, B05, B06,
                                    B07, B8A, B11, B12 and the condition flag (0 clear, 1 cloud, 2 shadow, 3 snow)

    Splits (AnySat): val = 33TWN, test = 33UVP, train = every other tile folder except 2019_33UVP.

    Sample: ``s2`` float32 ``(T, 10, 1, 1)`` with the CSV columns in AnySat's slots [B02, B03, B04, B05, B06, B07,
    **B8A** (in the B08 slot), **flag** (in the B8A slot), B11, B12]; ``s2_mask`` bool ``(T, 10, 1, 1)``, False only
    on the flag slot (there is no B08; the flag is not used to drop cloudy dates); ``s2_dates`` int64 ``(T,)`` day
    of year (``tm_yday``; Sep-Dec come before Jan so it wraps); ``label`` int64 ``()`` class index 0-15 (the folder
    name); ``name`` ``"<tile>/<class>/<k>"``; ``meta``.  Task: single-label classification, overall accuracy (about
    92 in the AnySat README figure).  AnySat's temporal dropout 0.3 in training is not done here.

    Citation: G. Weikmann, C. Paris, L. Bruzzone, "TimeSen2Crop: A Million Labeled Samples Dataset of Sentinel 2
    Image Time Series for Crop-Type Classification", IEEE JSTARS 14, 2021.
    """

    name: ClassVar[str] = "timesen2crop"
    url: ClassVar[str] = "https://zenodo.org/records/4715631"
    layout: ClassVar[str] = (
        "  <tile>/dates.csv              acquisition_date, then YYYYMMDD per row\n"
        "  <tile>/<class 0-15>/<k>.csv   header + T rows x 10 columns (9 bands, flag)\n"
        "  tiles: " + ", ".join(TILES) + " (val 33TWN, test 33UVP, train the others)"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("s2",)
    default_modalities: ClassVar[tuple[str, ...]] = ("s2",)
    task: ClassVar[str] = "classification"
    classes: ClassVar[tuple[str, ...]] = (
        "Legumes", "Grassland", "Maize", "Potato", "Sunflower", "Soy", "Winter barley", "Winter caraway", "Rye",
        "Rapeseed", "Beet", "Spring cereals", "Winter wheat", "Winter triticale", "Permanent plantation", "Other crops",
    )  # fmt: skip
    ignore_index: ClassVar[int | None] = -1
    patch_size_m: ClassVar[int] = 10

    def _split_tiles(self) -> list[str]:
        if self.split in _SPLIT_TILES:
            tiles = list(_SPLIT_TILES[self.split])
            for t in tiles:
                if not (self.root_path / t / "dates.csv").is_file():
                    raise self.not_found(self.root_path / t / "dates.csv")
            return tiles
        held_out = {t for ts in _SPLIT_TILES.values() for t in ts} | set(_EXCLUDED)
        tiles = sorted(
            p.name
            for p in self.root_path.iterdir()
            if p.is_dir() and p.name not in held_out and (p / "dates.csv").is_file()
        )
        if not tiles:
            raise self.not_found(self.root_path / "<tile>" / "dates.csv")
        return tiles

    def _read_dates(self, path: Path) -> tuple[torch.Tensor, tuple[str, ...]]:
        try:
            with path.open(newline="") as f:
                rows = [r for r in csv.reader(f) if r]
            if not rows or rows[0][0].strip() != "acquisition_date":
                raise ValueError(
                    f"first row is {rows[0] if rows else 'missing'}; expected the header 'acquisition_date'"
                )
            raw = tuple(r[0].strip() for r in rows[1:])
            doy = [yyyymmdd_to_doy(d) for d in raw]
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
            raise self.corrupt(path, e) from e
        return torch.tensor(doy, dtype=torch.int64), raw

    def _load_index(self) -> None:
        self.tile_dates: dict[str, tuple[torch.Tensor, tuple[str, ...]]] = {}
        self.items: list[tuple[str, int, Path]] = []
        for tile in self._split_tiles():
            self.tile_dates[tile] = self._read_dates(self.root_path / tile / "dates.csv")
            for c in range(len(self.classes)):
                folder = self.root_path / tile / str(c)
                if not folder.is_dir():
                    continue
                files = [p for p in folder.iterdir() if p.suffix == ".csv"]
                files.sort(key=lambda p: (int(p.stem) if p.stem.isdigit() else 1 << 62, p.name))
                self.items.extend((tile, c, p) for p in files)

    def __len__(self) -> int:
        return len(self.items)

    def _load_sample(self, index: int) -> dict[str, Any]:
        tile, c, path = self.items[index]
        doy, raw_dates = self.tile_dates[tile]
        T = len(raw_dates)
        try:
            with path.open(newline="") as f:
                rows = [r for r in csv.reader(f) if r]
            values = np.array([[float(v) for v in r] for r in rows[1:]], dtype=np.float32)
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
            raise self.corrupt(path, e) from e
        if values.shape != (T, _N_COLUMNS):
            raise self.corrupt(
                path,
                f"{values.shape[0]} rows x {values.shape[1] if values.ndim == 2 else '?'} columns after the header; "
                f"expected {T} rows (one per date of {tile}/dates.csv) x {_N_COLUMNS} columns (9 bands + flag)",
            )
        x = torch.from_numpy(values[:, list(_COLUMN_ORDER)]).reshape(T, _N_COLUMNS, 1, 1)
        mask = torch.ones(T, _N_COLUMNS, 1, 1, dtype=torch.bool)
        mask[:, _FLAG_SLOT] = False
        name = f"{tile}/{c}/{path.stem}"
        return {
            "s2": x,
            "s2_dates": doy.clone(),
            "s2_mask": mask,
            "label": torch.tensor(c, dtype=torch.int64),
            "name": name,
            "meta": GeoInfo(
                dataset=self.name,
                tile_id=name,
                gsd_m=MODALITIES["s2"].gsd_m,
                shape=(1, 1),
                split=self.split,
                extra={"tile": tile, "dates": raw_dates},
            ),
        }
