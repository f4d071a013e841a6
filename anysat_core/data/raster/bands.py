"""Band names: the registry bands' aliases, and which bands of a raster make a modality.

:func:`band_alias` says which registry band a band or variable name means (compared loosely: ``B02``, ``b2``,
``SR_B2`` are one name; common names such as ``red``/``nir``/``swir16`` find their band).  :func:`_resolve_bands`
picks the bands of one opened raster for :func:`~anysat_core.data.raster.sources.read_frames`: from
``RasterSource(bands=...)`` (1-based numbers or names), else from the band names, else in file order;
:func:`_channel_error` is the error for a band count that does not make the modality.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from anysat_core.errors import ChannelMismatchError
from anysat_core.modalities import MODALITIES, Modality

if TYPE_CHECKING:
    from anysat_core.data.raster.opening import _Opened
    from anysat_core.data.raster.sources import RasterSource

__all__ = ["band_alias"]

# ------------------------------------------------------------------------------------------------ band names
#: Other names of registry bands, per modality (compared after :func:`_band_key`): the common names of the STAC
#: ``eo`` extension and of the usual providers (Earth Search, Planetary Computer, Google Earth Engine, USGS).
_VHR_ALIASES: dict[str, tuple[str, ...]] = {
    "R": ("red",),
    "G": ("green",),
    "B": ("blue",),
    "NIR": ("nir", "n", "infrared", "nearinfrared"),
    "elevation": ("elev", "dem", "dsm", "ndsm", "height"),
}
_BAND_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "aerial": _VHR_ALIASES,
    "aerial-flair": _VHR_ALIASES,
    "spot": _VHR_ALIASES,
    "naip": _VHR_ALIASES,
    "s2": {
        "B02": ("blue",),
        "B03": ("green",),
        "B04": ("red",),
        "B05": ("rededge1", "re1", "rededge071"),
        "B06": ("rededge2", "re2", "rededge075"),
        "B07": ("rededge3", "re3", "rededge078"),
        "B08": ("nir", "nir1", "nirbroad", "broadnir"),
        "B8A": ("nir08", "nir2", "nirnarrow", "narrownir", "rededge4", "re4"),
        "B11": ("swir1", "swir16"),
        "B12": ("swir2", "swir22"),
    },
    "s1-asc": {},
    "s1": {"VV/VH": ("vvvhratio", "ratio", "vvovervh")},
    "alos": {"HH/HV": ("hhhvratio", "ratio", "hhoverhv")},
    "l7": {
        "B1": ("blue",),
        "B2": ("green",),
        "B3": ("red",),
        "B4": ("nir", "nir08"),
        "B5": ("swir1", "swir16"),
        "B7": ("swir2", "swir22"),
    },
    "l8": {
        "B1": ("coastal", "coastalaerosol"),
        "B2": ("blue",),
        "B3": ("green",),
        "B4": ("red",),
        "B5": ("nir", "nir08"),
        "B6": ("swir1", "swir16"),
        "B7": ("swir2", "swir22"),
        "B8": ("pan", "panchromatic"),
        "B9": ("cirrus",),
        "B10": ("lwir11", "lwir1", "tirs1", "thermal1"),
        "B11": ("lwir12", "lwir2", "tirs2", "thermal2"),
    },
    "modis": {  # MOD09 band numbers
        "B1": ("red",),
        "B2": ("nir", "nir08"),
        "B3": ("blue",),
        "B4": ("green",),
        "B6": ("swir1", "swir16"),
        "B7": ("swir2", "swir22"),
    },
}


def _band_key(name: object) -> str:
    """A band name compared loosely: lower case, only letters and digits, ``B02``/``b2``/``SR_B2`` -> ``b2``."""
    k = re.sub(r"[^0-9a-z]", "", str(name).lower())
    k = re.sub(r"^(?:surrefl|sr|st|toa)(?=b\d)", "", k)  # sur_refl_b01 (MODIS), SR_B4 / ST_B10 (Landsat C2)
    k = re.sub(r"^(?:sigma0|gamma0|beta0)(?=(?:vv|vh|hh|hv))", "", k)  # sigma0_VV (SAR)
    m = re.fullmatch(r"b0*(\d+)(a?)", k)
    return f"b{m[1]}{m[2]}" if m else k


def _alias_table(modality: str) -> dict[str, str]:
    """``{loose name: registry band}`` of a modality: its band names and their aliases."""
    mod = MODALITIES[modality]
    table = {_band_key(b): b for b in mod.bands}
    for band, names in _BAND_ALIASES.get(modality, {}).items():
        for n in names:
            table.setdefault(_band_key(n), band)
    return table


def band_alias(modality: str, name: str) -> str | None:
    """The registry band of ``modality`` that the band/variable name ``name`` means, or None.

    Names are compared case-insensitively and without separators (``B02``, ``b2``, ``SR_B2`` are one name), with
    the common names of the bands: for ``s2`` blue/B02, green/B03, red/B04, rededge1-3/B05-B07, nir/B08,
    nir08 (narrow NIR)/B8A, swir1 or swir16/B11, swir2 or swir22/B12; for Landsat and MODIS the same common names on
    their band numbers; red/green/blue/nir (R, G, B, NIR) for the aerial modalities; vv, vh (``sigma0_vv``...) and
    ``ratio`` for SAR.
    """
    return _alias_table(modality).get(_band_key(name))


def _alias_examples(modality: str) -> str:
    pairs = [(n, b) for b, ns in _BAND_ALIASES.get(modality, {}).items() for n in ns[:1]]
    return ", ".join(f"{n}={b}" for n, b in pairs[:5]) or "case-insensitive, B2=B02"


# ------------------------------------------------------------------------------------------------ band selection
def _band_names(da: xr.DataArray) -> list[str]:
    """Names of the bands: the file's band descriptions or a string ``band`` coordinate ([] when unnamed)."""
    ln = da.attrs.get("long_name")
    n = da.sizes["band"]
    if isinstance(ln, (tuple, list)) and len(ln) == n and any(ln):
        return [str(s) for s in ln]
    if "band" in da.coords and da["band"].dtype.kind in "UO":
        return [str(v) for v in da["band"].values]
    return []


def _canonical(modality: str, names: list[str], alt: list[list[str]] | None) -> list[str | None]:
    """The registry band each band name means (else the first of its other names that means one), None where none."""
    table = _alias_table(modality)
    out: list[str | None] = []
    for i, n in enumerate(names):
        others = alt[i] if alt is not None and i < len(alt) else []
        out.append(next((table[k] for k in map(_band_key, [n, *others]) if k in table), None))
    return out


def _auto_bands(mod: Modality, names: list[str], canon: list[str | None], n: int, strict: bool, name: str) -> list[int]:
    """0-based bands for the registry order from the band names (no ``bands=``)."""
    C = mod.num_bands
    groups = [canon[k : k + C] for k in range(0, n, C)] if n % C == 0 else []
    if groups and all(sorted(g, key=str) == sorted(mod.bands) for g in groups):  # date-major groups, each all bands
        return [k * C + g.index(b) for k, g in enumerate(groups) for b in mod.bands]
    if all(canon.count(b) == 1 for b in mod.bands):  # every registry band named once: take those
        return [canon.index(b) for b in mod.bands]
    unordered = any(c is not None and c != mod.bands[i % C] for i, c in enumerate(canon))
    if not strict and not unordered:
        return list(range(n))  # unrelated or registry-ordered names: file order, checked by the band count
    kind = "variable" if strict else "band name"
    found = ", ".join(f"{nm!r}" + (f" (= {c})" if c is not None and c != nm else "") for nm, c in zip(names, canon))
    missing = [b for b in mod.bands if b not in canon]
    dup = [b for b in mod.bands if canon.count(b) > 1]
    why = "; ".join(
        [*([f"none is {', '.join(missing)}"] if missing else []), *([f"several are {', '.join(dup)}"] if dup else [])]
    )
    example = [names[canon.index(b)] if b in canon else f"<{b}>" for b in mod.bands]
    raise ChannelMismatchError(
        f"{name}: the {kind}s {found} cannot be matched to the {C} bands of {mod.name!r} ({', '.join(mod.bands)}): "
        f"{why or 'they are named in another order'}. Names are compared case-insensitively, with common aliases "
        f"({_alias_examples(mod.name)}){'; variables are never taken in file order' if strict else ''}. Select "
        f"them in the order of {mod.name!r} with RasterSource(..., bands=[...]) (names, or 1-based numbers in file "
        f"order), e.g. bands={example!r}"
    )


def _resolve_bands(src: RasterSource, da: xr.DataArray, op: _Opened) -> list[int]:
    """0-based indices of the selected bands of ``da`` (before the channel-count check)."""
    mod = MODALITIES[src.modality]
    name = op.name
    n = da.sizes["band"]
    names = _band_names(da)
    alt = op.alt_names
    if src.bands is None:
        if not names:
            return list(range(n))
        return _auto_bands(mod, names, _canonical(mod.name, names, alt), n, op.strict, name)
    idx: list[int] = []
    for b in src.bands:
        if isinstance(b, str):
            idx.append(_band_by_name(mod, b, names, alt, name, n, op.colours))
        elif isinstance(b, (int, np.integer)) and not isinstance(b, bool):
            if not 1 <= int(b) <= n:
                raise ChannelMismatchError(
                    f"{name}: band number {int(b)} out of range; the raster has {n} bands numbered 1..{n} (1-based, "
                    "as in GDAL/rasterio)"
                )
            idx.append(int(b) - 1)
        else:
            raise ChannelMismatchError(f"{name}: bands entry {b!r}; expected 1-based band numbers or band names")
    return idx


def _band_by_name(
    mod: Modality,
    b: str,
    names: list[str],
    alt: list[list[str]] | None,
    name: str,
    n: int,
    colours: list[str] | None = None,
) -> int:
    """The 0-based band that the ``bands=`` entry ``b`` names: exactly, loosely (``b2`` = ``B02``) or by alias; a
    band's GDAL colour interpretation (``colours``) counts as one of its names."""
    if b in names:
        return names.index(b)
    every = [
        [
            *([names[i]] if i < len(names) else []),
            *(alt[i] if alt and i < len(alt) else []),
            *([colours[i]] if colours and i < len(colours) and colours[i] else []),
        ]
        for i in range(n)
    ]
    shown = [ns[0] if ns else "" for ns in every]  # for the messages: descriptions, else colours
    for match in (
        lambda x: _band_key(x) == _band_key(b),
        lambda x: band_alias(mod.name, x) is not None and band_alias(mod.name, x) == band_alias(mod.name, b),
    ):
        hits = [i for i, ns in enumerate(every) if any(match(x) for x in ns)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ChannelMismatchError(
                f"{name}: band name {b!r} matches several bands ({', '.join(shown[i] for i in hits)}); give the exact "
                "name or the 1-based band number in bands=[...]"
            )
    raise ChannelMismatchError(
        f"{name}: band name {b!r} not found; its bands are named {shown if any(shown) else '(no names)'}. Select "
        f"bands by name among these or by 1-based number 1..{n} with bands=[...]"
    )


def _channel_error(mod: Modality, name: str, n: int, n_file: int) -> ChannelMismatchError:
    extra = (
        f" (or a multiple of {mod.num_bands} for a band-stacked time series, date-major, with dates=)"
        if mod.time_series
        else ""
    )
    return ChannelMismatchError(
        f"{name}: {n} band(s) selected (the raster has {n_file}) but modality {mod.name!r} expects "
        f"{mod.num_bands} bands in this order: {', '.join(mod.bands)}{extra}. Select and order them with "
        f"RasterSource(..., bands=[...]) using 1-based band numbers or band names, e.g. "
        f"bands={list(range(1, mod.num_bands + 1))}; or use the modality whose bands match "
        f"({', '.join(f'{k}: {m.num_bands}' for k, m in MODALITIES.items())})."
    )
