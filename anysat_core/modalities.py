"""The registry of the 11 sensor modalities AnySat knows.

This is the one place that states a modality's bands, ground sampling distance, whether it is a
time series, which projector encodes it and with which hyper-parameters, and the normalisation
statistics that are known for it.  Nothing else in the project hard-codes a band count or a GSD:
models, validation, data loaders, tests and docs read :data:`MODALITIES`.

Facts come from the released AnySat code (``hubconf.get_default_config`` and the training configs of
gastruc/AnySat) and the documentation of each dataset.

This module imports nothing from the package but :mod:`anysat_core.errors` (it is a leaf).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from anysat_core.errors import UnknownModalityError

__all__ = [
    "LTAE_HEADS",
    "LTAE_KEY_DIM",
    "MODALITIES",
    "LTAEProjectorConfig",
    "Modality",
    "NormStats",
    "ProjectorConfig",
    "VHRProjectorConfig",
    "get_modality",
    "list_modalities",
    "modality_table",
]

#: Number of temporal attention heads of every L-TAE projector (all sizes).
LTAE_HEADS = 16
#: Key/query width of every L-TAE head (all sizes).
LTAE_KEY_DIM = 8


@dataclass(frozen=True)
class NormStats:
    """Per-channel statistics, applied as ``(x - mean) / std``.

    Attributes:
        mean: one value per band, in the modality's band order.
        std: one value per band.
        source: where the numbers come from.
        units: the units of the raw values they apply to.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    units: str = ""


@dataclass(frozen=True)
class VHRProjectorConfig:
    """Settings of a very-high-resolution projector (:class:`~anysat_core.model.projectors.VHRProjector`).

    Attributes:
        in_chans: input channels C.
        embed_dim: token width D.
        conv_px: kernel and stride of the patch convolution ``Conv2d(C, D, conv_px, stride=conv_px, bias=False)``.
        cells_per_10m: convolution cells per 10 m block side (g).
        mlp_widths: widths of the token MLP, ``(D, 2D, D)``: a Linear, LayerNorm and ReLU per step.
    """

    in_chans: int
    embed_dim: int
    conv_px: int
    cells_per_10m: int
    mlp_widths: tuple[int, ...]


@dataclass(frozen=True)
class LTAEProjectorConfig:
    """Settings of a time-series projector (:class:`~anysat_core.model.projectors.TemporalProjector`).

    Attributes:
        in_chans: input channels C.
        embed_dim: token width D (output width of the projector).
        input_widths: widths of the per-date input MLP after C, ``(D/8, D/2, D, 2D, D)``: a Linear, GroupNorm(4),
            ReLU and Dropout per step.
        n_head: temporal attention heads.
        d_k: key/query width of each head.
        pe_period: period ``T0`` of the sinusoidal date encoding.
        in_norm: GroupNorm over channels and dates after the input MLP.
        dropout: dropout in training mode.
        reduce_scale: a patch side in 10 m cells is divided by this to give pixels per patch side (3 for 30 m
            sensors, 12 for MODIS).
    """

    in_chans: int
    embed_dim: int
    input_widths: tuple[int, ...]
    n_head: int
    d_k: int
    pe_period: int
    in_norm: bool
    dropout: float
    reduce_scale: int


#: Settings of one modality's projector, as :meth:`Modality.projector_config` gives them.
ProjectorConfig = VHRProjectorConfig | LTAEProjectorConfig


@dataclass(frozen=True)
class Modality:
    """Facts about one input modality.

    Attributes:
        name: key used in input batches and checkpoint module names (``projector_<name>``).
        description: sensor and product in words.
        bands: band names in the order the model expects them (channel axis order).
        gsd_m: ground sampling distance of the input pixels in metres.
        time_series: True for ``(B, T, C, H, W)`` series with ``<name>_dates``; False for
            single-date ``(B, C, H, W)`` images.
        projector: ``"vhr"`` (strided convolution + MLP) or ``"ltae"`` (per-pixel temporal attention).
        token_m: ground size in metres of one projector sub-patch token; it is also the step of the
            spatial encoder's positional encoding.
        conv_px: (vhr only) kernel and stride of the patch convolution, in pixels.
        pe_period: (ltae only) period ``T0`` of the sinusoidal date encoding.
        in_norm: (ltae only) GroupNorm over channels and dates after the input MLP.
        dropout: (ltae only) dropout of the projector in training mode.
        reduce_scale: (ltae only) patch sizes are divided by this before cutting the projected
            map into patches (3 for 30 m sensors, 12 for MODIS).
        patch_step_m: patch sizes used with this modality must be multiples of this (metres).
        tile_token: True for MODIS: the whole input is one coarse pixel that gives one token per
            tile instead of one token per patch; it does not define the tile extent.
        stats: known normalisation statistics, by name.
    """

    name: str
    description: str
    bands: tuple[str, ...]
    gsd_m: float
    time_series: bool
    projector: Literal["vhr", "ltae"]
    token_m: float
    conv_px: int = 0
    pe_period: int = 367
    in_norm: bool = False
    dropout: float = 0.2
    reduce_scale: int = 1
    patch_step_m: int = 10
    tile_token: bool = False
    stats: Mapping[str, NormStats] = field(default_factory=dict)

    @property
    def num_bands(self) -> int:
        """Number of channels the projector takes."""
        return len(self.bands)

    @property
    def ndim(self) -> int:
        """Number of dimensions of a batched input tensor (5 for series, 4 for images)."""
        return 5 if self.time_series else 4

    @property
    def layout(self) -> str:
        """The expected batched tensor layout, in words."""
        return "(B, T, C, H, W)" if self.time_series else "(B, C, H, W)"

    @property
    def pixels_per_token(self) -> int:
        """(vhr only) pixels per 10 m block divided by the conv size: sub-patch cells per 10 m."""
        return max(1, round(10 / self.gsd_m) // self.conv_px) if self.projector == "vhr" else 1

    def projector_config(self, embed_dim: int) -> ProjectorConfig:
        """Settings of this modality's projector for a model of width ``embed_dim``."""
        d = embed_dim
        if self.projector == "vhr":
            return VHRProjectorConfig(
                in_chans=self.num_bands,
                embed_dim=d,
                conv_px=self.conv_px,
                cells_per_10m=self.pixels_per_token,
                mlp_widths=(d, 2 * d, d),
            )
        return LTAEProjectorConfig(
            in_chans=self.num_bands,
            embed_dim=d,
            input_widths=(d // 8, d // 2, d, 2 * d, d),
            n_head=LTAE_HEADS,
            d_k=LTAE_KEY_DIM,
            pe_period=self.pe_period,
            in_norm=self.in_norm,
            dropout=self.dropout,
            reduce_scale=self.reduce_scale,
        )


_TREESAT_DEMO = "AnySat demo notebook (gastruc/AnySat), TreeSatAI-TS normalisation"

_ALL = (
    Modality(
        name="aerial",
        description="Very-high-resolution aerial orthophoto at 0.2 m (TreeSatAI-TS, colour-infrared file order)",
        bands=("NIR", "G", "B", "R"),
        gsd_m=0.2,
        time_series=False,
        projector="vhr",
        token_m=2.0,
        conv_px=10,
        stats={
            "treesatai-ts": NormStats(
                mean=(150.89349365234375, 92.7138900756836, 84.85437774658203, 80.70423889160156),
                std=(36.764923095703125, 27.62498664855957, 22.479450225830078, 26.733688354492188),
                source=_TREESAT_DEMO,
                units="uint8 digital numbers",
            )
        },
    ),
    Modality(
        name="aerial-flair",
        description="Aerial orthophoto at 0.2 m with elevation (FLAIR #2)",
        bands=("R", "G", "B", "NIR", "elevation"),
        gsd_m=0.2,
        time_series=False,
        projector="vhr",
        token_m=2.0,
        conv_px=10,
    ),
    Modality(
        name="spot",
        description="SPOT 6/7 pan-sharpened RGB resampled to 1 m (PASTIS-HD)",
        bands=("R", "G", "B"),
        gsd_m=1.0,
        time_series=False,
        projector="vhr",
        token_m=10.0,
        conv_px=10,
    ),
    Modality(
        name="naip",
        description="NAIP aerial imagery at 1.25 m (S2NAIP-URBAN)",
        bands=("R", "G", "B", "NIR"),
        gsd_m=1.25,
        time_series=False,
        projector="vhr",
        token_m=10.0,
        conv_px=8,
    ),
    Modality(
        name="s2",
        description="Sentinel-2 L2A surface reflectance time series, 10 bands at 10 m",
        bands=("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        gsd_m=10.0,
        time_series=True,
        projector="ltae",
        token_m=10.0,
        in_norm=True,
        dropout=0.0,
        stats={
            "treesatai-ts": NormStats(
                mean=(
                    4304.32958984375,
                    4159.2666015625,
                    4057.776611328125,
                    4328.951171875,
                    4571.22119140625,
                    4644.87109375,
                    4837.2470703125,
                    4700.2578125,
                    2823.264404296875,
                    2319.97021484375,
                ),
                std=(
                    3537.99755859375,
                    3324.23486328125,
                    3270.070068359375,
                    3250.530029296875,
                    2897.391357421875,
                    2754.4970703125,
                    2821.521484375,
                    2625.952392578125,
                    1731.56298828125,
                    1549.3028564453125,
                ),
                source=_TREESAT_DEMO,
                units="reflectance x 10000",
            )
        },
    ),
    Modality(
        name="s1-asc",
        description="Sentinel-1 GRD ascending-pass backscatter time series (VV, VH) at 10 m",
        bands=("VV", "VH"),
        gsd_m=10.0,
        time_series=True,
        projector="ltae",
        token_m=10.0,
    ),
    Modality(
        name="s1",
        description="Sentinel-1 GRD backscatter time series with VV/VH ratio at 10 m",
        bands=("VV", "VH", "VV/VH"),
        gsd_m=10.0,
        time_series=True,
        projector="ltae",
        token_m=10.0,
        stats={
            "treesatai-ts": NormStats(
                mean=(3.2893013954162598, -3.682938814163208, 0.6116273403167725),
                std=(40.11152267456055, 40.535335540771484, 1.0343183279037476),
                source=_TREESAT_DEMO + "; they do not fit linear backscatter, use only to reproduce the demo",
                units="as in the demo (unclear)",
            )
        },
    ),
    Modality(
        name="alos",
        description="ALOS-2 PALSAR-2 L-band backscatter time series (HH, HV, ratio) at 30 m",
        bands=("HH", "HV", "HH/HV"),
        gsd_m=30.0,
        time_series=True,
        projector="ltae",
        token_m=30.0,
        reduce_scale=3,
        patch_step_m=30,
    ),
    Modality(
        name="l7",
        description="Landsat-7 surface reflectance time series at 30 m",
        bands=("B1", "B2", "B3", "B4", "B5", "B7"),
        gsd_m=30.0,
        time_series=True,
        projector="ltae",
        token_m=30.0,
        reduce_scale=3,
        patch_step_m=30,
    ),
    Modality(
        name="l8",
        description="Landsat-8/9 time series resampled to 10 m",
        bands=("B8", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"),
        gsd_m=10.0,
        time_series=True,
        projector="ltae",
        token_m=10.0,
        pe_period=366,
    ),
    Modality(
        name="modis",
        description="MODIS surface reflectance time series, one 250 m pixel per tile",
        bands=("B1", "B2", "B3", "B4", "B5", "B6", "B7"),
        gsd_m=250.0,
        time_series=True,
        projector="ltae",
        token_m=250.0,
        reduce_scale=12,
        tile_token=True,
    ),
)


class _Registry(Mapping[str, Modality]):
    """Read-only mapping ``name -> Modality`` that raises a helpful error on unknown names."""

    def __init__(self, items: tuple[Modality, ...]) -> None:
        self._items = {m.name: m for m in items}

    def __getitem__(self, name: str) -> Modality:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownModalityError(
                f"unknown modality {name!r}; expected one of {', '.join(self._items)}. "
                "Rename the key of your input to one of these (dates go in '<modality>_dates', "
                "masks in '<modality>_mask')."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str, default: Modality | None = None) -> Modality | None:  # type: ignore[override]
        return self._items.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"MODALITIES({', '.join(self._items)})"


#: All modalities, in the order of the AnySat paper/README.
MODALITIES: Mapping[str, Modality] = _Registry(_ALL)


def get_modality(name: str) -> Modality:
    """Return the registry entry of ``name``; raises :class:`UnknownModalityError` if unknown."""
    return MODALITIES[name]


def list_modalities(*, time_series: bool | None = None) -> list[str]:
    """Names of the registered modalities, optionally only time series (True) or images (False)."""
    return [n for n, m in MODALITIES.items() if time_series is None or m.time_series == time_series]


def modality_table() -> str:
    """The registry as a Markdown table (the README's modality table is this, checked by a test).

    Columns: key, sensor and product, bands in the model's order, pixel size, single image or time series, the step
    patch sizes must be multiples of, and the normalisation statistics the registry knows.
    """
    rows = [
        "| key | sensor and product | bands (model order) | pixel | kind | patch sizes | known statistics |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in MODALITIES.values():
        kind = "time series" if m.time_series else "single image"
        if m.tile_token:
            kind += ", one pixel per tile"
        rows.append(
            f"| `{m.name}` | {m.description} | {', '.join(m.bands)} | {m.gsd_m:g} m | {kind} | "
            f"multiples of {m.patch_step_m:g} m | {', '.join(m.stats) or '-'} |"
        )
    return "\n".join(rows)
