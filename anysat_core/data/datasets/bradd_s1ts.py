"""BraDD-S1TS: Sentinel-1 time series for deforestation (change) detection in the Brazilian Amazon."""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import zipfile
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pandas as pd
import torch

from anysat_core.data.datasets.base import AnySatDataset, register_dataset
from anysat_core.data.normalize import Normalize
from anysat_core.data.sample import GeoInfo
from anysat_core.modalities import MODALITIES

__all__ = ["BraDDS1TS"]

_SPLIT_VALUES = {"train": "train", "val": "validation", "test": "test"}
_RATIO_EPS = 1e-6
_RATIO_CLAMP = 1e4


@register_dataset
class BraDDS1TS(AnySatDataset):
    """BraDD-S1TS (Karaman, Sainte Fare Garnot & Wegner, ISPRS Annals 2023): deforestation change detection.

    Brazilian Amazon; 13,234 tiles (README; about 25k sequences in the paper) of 48 x 48 px at 10 m (480 m).
    Code MIT; dataset licence not verified.

    Layout under ``root`` (Zenodo 8060250, ``BraDD-S1TS_zenodo.zip``)::

        meta.csv           indexed; columns alert_idx, center_idx, date, sampling_type, state, file, close_set
        Samples/<file>     e.g. 0000000_2021-08-21.pt, a torch-pickled dict:
                           image (T, 2, 48, 48) float VV, VH (backscatter, probably dB),
                           image_dates [datetime.date], label (t, 48, 48) binary forest-loss masks,
                           label_dates [datetime.date]

    Splits: ``close_set`` in {train, validation, test}; ``split="val"`` reads ``validation``.

    Sample: ``s1`` float32 ``(T, 3, H, W)`` = VV, VH and ``VV / (VH + 1e-6)`` clamped to +-1e4; ``s1_dates`` int64
    ``(T,)`` = ``(date - min(image_dates + label_dates)).days + 1`` (1-based days since the sample's first date, **not**
    day of year, as AnySat and the authors' code); ``label`` int64 ``(H, W)`` = ``label[1]``, the mask at the second
    label date (0 no deforestation, 1 deforestation; -1 would be ignored); ``name`` the file name; ``meta``.

    Files are read with ``torch.load(weights_only=True)`` allowing only ``datetime.date``; pass ``trust_pickle=True``
    to unpickle arbitrary objects (only for files you trust).  Task: change detection (2-class segmentation),
    metric IoU of the deforestation class (about 81 in the AnySat README figure).  AnySat's temporal dropout 0.5 in
    training is not done here.

    Citation: K. Karaman, V. Sainte Fare Garnot, J. D. Wegner, "Deforestation detection in the Amazon with
    Sentinel-1 SAR image time series", ISPRS Annals 2023.
    """

    name: ClassVar[str] = "bradd-s1ts"
    url: ClassVar[str] = "https://zenodo.org/records/8060250 (code: https://github.com/ecovision-uzh/BraDD-S1TS)"
    layout: ClassVar[str] = (
        "  meta.csv          indexed CSV with columns file, close_set (train/validation/test), ...\n"
        "  Samples/<file>    torch-pickled dict: image (T, 2, H, W), image_dates, label (t, H, W), label_dates"
    )
    modalities_available: ClassVar[tuple[str, ...]] = ("s1",)
    default_modalities: ClassVar[tuple[str, ...]] = ("s1",)
    task: ClassVar[str] = "change-detection"
    classes: ClassVar[tuple[str, ...]] = ("no deforestation", "deforestation")
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
        trust_pickle: bool = False,
    ) -> None:
        """See :class:`AnySatDataset`; ``trust_pickle=True`` loads the ``.pt`` files with ``weights_only=False``."""
        self.trust_pickle = trust_pickle
        super().__init__(root, split, modalities, normalize, transform)

    def _load_index(self) -> None:
        path = self.root_path / "meta.csv"
        if not path.is_file():
            raise self.not_found(path)
        try:
            df = pd.read_csv(path, index_col=0)
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise self.corrupt(path, e) from e
        missing = [c for c in ("file", "close_set") if c not in df.columns]
        if missing:
            raise self.corrupt(path, f"no column {', '.join(missing)}; columns are {', '.join(map(str, df.columns))}")
        self.meta_df = df[df["close_set"] == _SPLIT_VALUES[self.split]].reset_index(drop=True)
        self.files: list[str] = [str(f) for f in self.meta_df["file"]]
        if not (self.root_path / "Samples").is_dir():
            raise self.not_found(self.root_path / "Samples")

    def _options(self) -> dict[str, Any]:
        return {"trust_pickle": self.trust_pickle}

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, file: str) -> dict[str, Any]:
        path = self.root_path / "Samples" / file
        if not path.is_file():
            raise self.not_found(path)
        try:
            if self.trust_pickle:
                raw = torch.load(path, map_location="cpu", weights_only=False)
            else:
                with torch.serialization.safe_globals([_dt.date]):
                    raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            hint = "" if self.trust_pickle else " (if the file holds other Python objects, pass trust_pickle=True)"
            raise self.corrupt(path, f"{type(e).__name__}: {str(e).splitlines()[0]}{hint}") from e
        except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise self.corrupt(path, e) from e
        keys = ("image", "image_dates", "label", "label_dates")
        if not isinstance(raw, dict) or any(k not in raw for k in keys):
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise self.corrupt(path, f"expected a dict with keys {', '.join(keys)}; got {got}")
        image, label = torch.as_tensor(raw["image"]), torch.as_tensor(raw["label"])
        if image.dim() != 4 or image.shape[1] < 2 or image.shape[0] != len(raw["image_dates"]):
            raise self.corrupt(
                path, f"image has shape {tuple(image.shape)} for {len(raw['image_dates'])} dates; expected (T, 2, H, W)"
            )
        if label.dim() != 3 or label.shape[0] < 2 or label.shape[-2:] != image.shape[-2:]:
            raise self.corrupt(
                path, f"label has shape {tuple(label.shape)}; expected (t >= 2, {image.shape[-2]}, {image.shape[-1]})"
            )
        return {**raw, "image": image, "label": label, "path": path}

    def _load_sample(self, index: int) -> dict[str, Any]:
        file = self.files[index]
        raw = self._read(file)
        x = raw["image"][:, :2].to(torch.float32)
        ratio = (x[:, :1] / (x[:, 1:2] + _RATIO_EPS)).clamp(-_RATIO_CLAMP, _RATIO_CLAMP)
        try:
            first = min(list(raw["image_dates"]) + list(raw["label_dates"]))
            days = torch.tensor([(d - first).days + 1 for d in raw["image_dates"]], dtype=torch.int64)
        except (TypeError, AttributeError) as e:
            raise self.corrupt(raw["path"], f"image_dates/label_dates are not dates: {e}") from e
        H, W = int(x.shape[-2]), int(x.shape[-1])
        return {
            "s1": torch.cat([x, ratio], dim=1),
            "s1_dates": days,
            "label": raw["label"][1].to(torch.int64),
            "name": file,
            "meta": GeoInfo(
                dataset=self.name,
                tile_id=file,
                gsd_m=MODALITIES["s1"].gsd_m,
                shape=(H, W),
                split=self.split,
                extra={
                    "image_dates": tuple(d.isoformat() for d in raw["image_dates"]),
                    "label_dates": tuple(d.isoformat() for d in raw["label_dates"]),
                },
            ),
        }
