"""GeoPlex-mini signals: what each sensor measures over the world (optical, SAR and VHR generators).

* **Optical series** (``s2``, ``l7``, ``l8``, ``modis``): surface reflectance x 10000, mixtures of endmember spectra
  (green/dry vegetation, soil, water, impervious, broadleaf/leafless/conifer canopy, burn scar) weighted by the
  world's phenology, with per-parcel brightness, sub-pixel mixing, sensor noise and per-date gain.  Landsat-8
  thermal bands (``B10``, ``B11``) are brightness temperatures in kelvin (0.01 K steps); reflectances are integers,
  as in L2A products.  Cloud blobs add cloud reflectance; the mask is False exactly where cloud was added.
* **SAR series** (``s1-asc``: linear VV, VH; ``s1``: dB VV, VH and VV-VH dB ratio; ``alos``: linear HH, HV and
  HH/HV ratio clamped to +-1e4): class-dependent backscatter, soil-moisture seasonality, wind on water and
  multiplicative gamma speckle.
* **VHR images** (``aerial``, ``aerial-flair``, ``spot``, ``naip``): 8-bit digital numbers at one summer date with
  class textures (crop rows, tree crowns with shadows, buildings and yards, tillage lines, ripples);
  ``aerial-flair``'s ``elevation`` band is a surface height in metres above sea level.

Band lists and GSDs come from :data:`anysat_core.modalities.MODALITIES`; each band's central wavelength is in
:data:`_BAND_WL_NM` here.
"""

from __future__ import annotations

import numpy as np

from anysat_core.data.geoplex_mini.world import (
    BARE,
    BROADLEAF,
    CONIFER,
    DRY,
    ENDMEMBERS,
    GREEN,
    H2O,
    IMPERV,
    MAIZE,
    SOIL,
    URBAN,
    WATER,
    WHEAT,
    World,
    modality_key,
    seeded_rng,
)
from anysat_core.errors import ConfigError
from anysat_core.modalities import MODALITIES, Modality

__all__ = ["band_wavelengths", "generate", "optical", "sar", "units", "vhr"]

_WL_NM = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 1240, 1373, 1610, 2190], dtype=np.float64)
# reflectance (0-1) of each endmember at _WL_NM (1373 nm is the water-vapour cirrus band: surfaces are dark)
_SPECTRA = np.array(
    [
        [0.03, 0.04, 0.09, 0.04, 0.12, 0.30, 0.42, 0.46, 0.47, 0.40, 0.004, 0.24, 0.11],  # green vegetation
        [0.06, 0.07, 0.11, 0.15, 0.18, 0.22, 0.26, 0.29, 0.30, 0.36, 0.004, 0.38, 0.28],  # dry vegetation
        [0.07, 0.08, 0.11, 0.15, 0.17, 0.19, 0.21, 0.23, 0.24, 0.30, 0.004, 0.33, 0.28],  # bare soil
        [0.07, 0.065, 0.055, 0.035, 0.03, 0.02, 0.015, 0.012, 0.01, 0.005, 0.002, 0.003, 0.002],  # water
        [0.10, 0.11, 0.13, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.21, 0.004, 0.23, 0.21],  # impervious
        [0.025, 0.035, 0.075, 0.035, 0.11, 0.28, 0.38, 0.42, 0.43, 0.35, 0.004, 0.20, 0.09],  # broadleaf canopy
        [0.04, 0.05, 0.07, 0.08, 0.10, 0.14, 0.18, 0.20, 0.21, 0.22, 0.004, 0.22, 0.14],  # leafless wood
        [0.02, 0.025, 0.05, 0.025, 0.07, 0.16, 0.22, 0.24, 0.25, 0.20, 0.004, 0.12, 0.05],  # conifer canopy
        [0.03, 0.035, 0.04, 0.045, 0.05, 0.06, 0.07, 0.08, 0.08, 0.12, 0.004, 0.17, 0.16],  # burn scar
    ]
)
_CLOUD = np.array([0.55, 0.55, 0.54, 0.53, 0.53, 0.52, 0.52, 0.51, 0.51, 0.45, 0.25, 0.35, 0.22])
# surface temperature offsets (K) from the regional seasonal mean; clouds are at _CLOUD_K
_TEMP_OFFSET_K = np.array([-2.0, 2.0, 3.0, -1.0, 4.0, -3.0, 0.0, -3.0, 5.0])
_CLOUD_K = 255.0
# backscatter (dB): C band (VV, VH) and L band (HH, HV)
_SAR_C_DB = np.array(
    [
        [-10.5, -16.5],
        [-12, -19.5],
        [-11.5, -19.5],
        [-21, -27],
        [-2, -9],
        [-7.5, -13],
        [-8, -14],
        [-7, -12.5],
        [-12.5, -20.5],
    ]
)
_SAR_L_DB = np.array(
    [[-11, -19], [-12.5, -21], [-11, -24], [-24, -32], [1, -7], [-6.5, -11.5], [-6.5, -11.5], [-6, -11], [-10, -18]]
)
#: Central wavelength (nm) of each band name, per modality (``"vhr"`` for the VHR cameras); thermal bands > 5000.
_BAND_WL_NM: dict[str, dict[str, float]] = {
    "s2": {
        "B02": 490,
        "B03": 560,
        "B04": 665,
        "B05": 705,
        "B06": 740,
        "B07": 783,
        "B08": 842,
        "B8A": 865,
        "B11": 1610,
        "B12": 2190,
    },
    "l7": {"B1": 485, "B2": 560, "B3": 660, "B4": 835, "B5": 1650, "B7": 2220},
    "l8": {
        "B1": 443,
        "B2": 482,
        "B3": 561,
        "B4": 655,
        "B5": 865,
        "B6": 1609,
        "B7": 2201,
        "B8": 590,
        "B9": 1373,
        "B10": 10900,
        "B11": 12000,
    },
    "modis": {"B1": 645, "B2": 858, "B3": 469, "B4": 555, "B5": 1240, "B6": 1640, "B7": 2130},
    "vhr": {"R": 650, "G": 555, "B": 480, "NIR": 830},
}
#: Equivalent number of looks of the SAR sensors (gamma speckle shape).
_ENL = {"s1": 4.4, "s1-asc": 4.4, "alos": 8.0}


def _hash_uniform(i: np.ndarray, j: np.ndarray, salt: int, k: int) -> np.ndarray:
    """Deterministic uniform [0, 1) numbers from integer cell coordinates (a splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        h = (i.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            j.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        h ^= np.uint64((salt * 1_000_003 + k * 7919) & 0xFFFFFFFFFFFF)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _interp_spectrum(table: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Endmember table ``(..., 13)`` sampled at wavelengths ``wl`` (C,) -> ``(..., C)``."""
    flat = table.reshape(-1, _WL_NM.size)
    out = np.stack([np.interp(wl, _WL_NM, row) for row in flat])
    return out.reshape(*table.shape[:-1], wl.size)


def band_wavelengths(mod: Modality) -> np.ndarray:
    key = "vhr" if mod.projector == "vhr" else mod.name
    table = _BAND_WL_NM.get(key, {})
    wl = []
    for b in mod.bands:
        if b == "elevation":
            wl.append(-1.0)
        elif b in table:
            wl.append(float(table[b]))
        else:
            raise ConfigError(
                f"GeoPlex-mini has no spectral model for band {b!r} of {mod.name}; known bands: {sorted(table)}. "
                "Add its central wavelength to _BAND_WL_NM in anysat_core/data/geoplex_mini/signals.py"
            )
    return np.array(wl)


def optical(w: World, t: int, mod: Modality, clouds: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance x 10000 (thermal: K) ``(T, C, H, W)`` and validity mask ``(T, 1, H, W)``."""
    side = 1 if mod.tile_token else round(w.tile_m / mod.gsd_m)
    doy = w.dates(mod.name)
    x, y, _ = w.subsamples(t, mod.gsd_m, side, mod.tile_token)  # (P, S)
    _, unit, _ = w.query(x, y)
    units, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    frac = np.zeros((side * side, units.size))  # (P, U)
    np.add.at(frac, (np.repeat(np.arange(side * side), unit.shape[1]), inv.ravel()), 1.0 / unit.shape[1])
    W = w.unit_weights(units, doy)  # (U, T, E)
    wl = band_wavelengths(mod)
    thermal = wl > 5000
    refl = W @ _interp_spectrum(_SPECTRA, np.where(thermal, 865, wl))  # (U, T, C)
    ne = len(w.events) + 1
    refl *= w.gain[units // ne][:, None, None]
    season = 284 + 11 * np.sin(2 * np.pi * (doy - 110) / 365)  # (T,)
    temp = W @ _TEMP_OFFSET_K + season[None]  # (U, T)
    refl[..., thermal] = temp[..., None]
    surf = np.einsum("pu,utc->tcp", frac, refl)  # (T, C, P)
    rng = seeded_rng(w.seed, 5, t, modality_key(mod.name))
    T, C, P = surf.shape
    date_gain = rng.normal(1, 0.05, (T, 1, 1))  # atmosphere of the date over the tile
    noise = rng.normal(0, 1, (T, C, P))
    surf = np.where(thermal[None, :, None], surf + 0.3 * noise, surf * date_gain + 0.004 * noise)
    cloud_val = np.where(thermal, _CLOUD_K, _interp_spectrum(_CLOUD, np.where(thermal, 865, wl)))  # (C,)
    alpha = w.cloud_alpha(mod.name, x, y).mean(-1) if clouds else np.zeros((T, P))  # (T, P)
    out = (1 - alpha[:, None]) * surf + alpha[:, None] * cloud_val[None, :, None]
    out = np.where(thermal[None, :, None], np.round(out, 2), np.round(np.clip(out, 0, 1.6) * 10000))  # integer DN
    return (
        out.reshape(T, C, side, side).astype(np.float32),
        (alpha == 0).reshape(T, 1, side, side),
    )


def sar(w: World, t: int, mod: Modality) -> np.ndarray:
    """Backscatter series ``(T, C, H, W)``: linear (s1-asc, alos) or dB (s1); the third band is the ratio."""
    side = round(w.tile_m / mod.gsd_m)
    doy = w.dates(mod.name)
    x, y, _ = w.subsamples(t, mod.gsd_m, side, False)
    _, unit, _ = w.query(x, y)
    units, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    frac = np.zeros((side * side, units.size))
    np.add.at(frac, (np.repeat(np.arange(side * side), unit.shape[1]), inv.ravel()), 1.0 / unit.shape[1])
    W = w.unit_weights(units, doy)  # (U, T, E)
    lband = mod.bands[0].startswith("H")
    db = np.broadcast_to((_SAR_L_DB if lband else _SAR_C_DB)[None], (doy.size, len(ENDMEMBERS), 2)).copy()
    rng_d = seeded_rng(w.seed, 6, modality_key(mod.name))  # world-level per-date effects
    moist = 1.5 * np.cos(2 * np.pi * (doy - 20) / 365)
    db[:, [GREEN, DRY, SOIL], :] += moist[:, None, None]
    db[:, H2O, :] += rng_d.uniform(-2, 4, doy.size)[:, None]  # wind roughening
    lin = 10 ** (db / 10)  # (T, E, 2)
    sig = np.einsum("ute,tep->utp", W, lin)  # (U, T, 2)
    ne = len(w.events) + 1
    sig *= 10 ** (w.sar_offset_db[units // ne] / 10)[:, None, None]
    mean = np.einsum("pu,utk->tkp", frac, sig)  # (T, 2, P)
    rng = seeded_rng(w.seed, 7, t, modality_key(mod.name))
    L = _ENL.get(mod.name, 4.4)
    vals = mean * rng.gamma(L, 1 / L, mean.shape)
    T = doy.size
    chans: list[np.ndarray] = []
    for b in mod.bands:
        if "/" in b:
            if mod.name == "s1":
                chans.append(10 * np.log10(vals[:, 0]) - 10 * np.log10(vals[:, 1]))
            else:
                chans.append(np.clip(vals[:, 0] / (vals[:, 1] + 1e-10), -1e4, 1e4))
        else:
            v = vals[:, 0 if b in ("VV", "HH") else 1]
            chans.append(10 * np.log10(v) if mod.name == "s1" else v)
    return np.stack(chans, 1).reshape(T, len(mod.bands), side, side).astype(np.float32)


def vhr(w: World, t: int, mod: Modality) -> np.ndarray:
    """8-bit digital numbers (elevation: metres) ``(C, H, W)`` at the modality's acquisition date."""
    side = round(w.tile_m / mod.gsd_m)
    g = mod.gsd_m
    doy = np.array([w.vhr_doy(mod.name)])
    x, y, _ = w.subsamples(t, g, side, False)
    x, y = x[:, 0].reshape(side, side), y[:, 0].reshape(side, side)
    pid, unit, cls = w.query(x, y)
    units, inv = np.unique(unit, return_inverse=True)
    inv = inv.reshape(unit.shape)
    W = w.unit_weights(units, doy)[:, 0]  # (U, E)
    wl = band_wavelengths(mod)
    spec_wl = np.where(wl < 0, 650, wl)
    ne = len(w.events) + 1
    undisturbed = (unit % ne) == 0
    M = _interp_spectrum(_SPECTRA, spec_wl)  # (E, C)
    base = (W @ M) * w.gain[units // ne][:, None]  # (U, C)
    refl = base[inv]  # (H, W, C)
    green = W[inv][..., GREEN]
    bright = np.ones((side, side))
    height = np.zeros((side, side))
    # crop rows (anti-aliased: faded out when the period is under ~2.5 pixels)
    crop = undisturbed & np.isin(cls, (WHEAT, MAIZE, BARE))
    if crop.any():
        th, per = w.row_angle[pid], np.where(cls == BARE, 3.0, w.row_period[pid])
        amp = np.where(cls == BARE, 0.06, 0.05 + 0.2 * green) * np.clip((per / g - 2) / 2, 0, 1)
        bright += np.where(crop, amp * np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / per), 0)
        height += np.where(crop & (cls == MAIZE), 2.5 * green, 0) + np.where(crop & (cls == WHEAT), 0.9 * green, 0)
    # tree crowns on a jittered cell grid, shadows in the gaps
    forest = undisturbed & np.isin(cls, (BROADLEAF, CONIFER))
    if forest.any():
        crown = np.zeros((side, side))
        for cell, salt, mask in ((4.5, 11, cls == BROADLEAF), (3.0, 12, cls == CONIFER)):
            if not (forest & mask).any():
                continue
            ci, cj = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
            best = np.zeros((side, side))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ii, jj = ci + di, cj + dj
                    cx = (ii + _hash_uniform(ii, jj, salt, 0)) * cell
                    cy = (jj + _hash_uniform(ii, jj, salt, 1)) * cell
                    r = cell * (0.45 + 0.35 * _hash_uniform(ii, jj, salt, 2))
                    best = np.maximum(best, np.clip(1 - ((x - cx) ** 2 + (y - cy) ** 2) / r**2, 0, 1))
            crown = np.where(mask, best, crown)
        bright = np.where(forest, 0.45 + 0.75 * np.sqrt(crown), bright)
        height = np.where(forest, 18 * np.sqrt(crown), height)
    # buildings in a jittered 14 m cell grid; yards (gardens, roads) around them
    urban = cls == URBAN
    if urban.any():
        cell = 14.0
        ci, cj = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
        cx = (ci + 0.3 + 0.4 * _hash_uniform(ci, cj, 21, 0)) * cell
        cy = (cj + 0.3 + 0.4 * _hash_uniform(ci, cj, 21, 1)) * cell
        hx = 2.5 + 3.5 * _hash_uniform(ci, cj, 21, 2)
        hy = 2.5 + 3.5 * _hash_uniform(ci, cj, 21, 3)
        roof = urban & (np.abs(x - cx) < hx) & (np.abs(y - cy) < hy)
        tint = _hash_uniform(ci, cj, 21, 4)
        roof_col = np.where(tint[..., None] < 0.5, np.array([1.6 if b == "R" else 0.8 for b in mod.bands]), 1.0)
        yard_w = np.zeros(len(ENDMEMBERS))
        yard_w[[GREEN, SOIL, IMPERV]] = (0.55, 0.15, 0.3)
        yard = yard_w @ M
        refl = np.where(roof[..., None], refl * roof_col * (0.8 + 0.5 * tint[..., None]), refl)
        refl = np.where((urban & ~roof)[..., None], yard[None, None], refl)
        height = np.where(roof, 4 + 6 * tint, height)
    water = cls == WATER
    if water.any():
        bright = np.where(water, 1 + 0.03 * np.sin(2 * np.pi * (x + 0.4 * y) / 2.7), bright)
    rng = seeded_rng(w.seed, 8, t, modality_key(mod.name))
    refl = refl * bright[..., None] * (1 + 0.03 * rng.normal(0, 1, refl.shape))
    dn = np.round(255 * np.clip(refl / 0.6, 0, 1) ** 0.6)  # (H, W, C)
    out = dn.transpose(2, 0, 1)
    if (wl < 0).any():  # surface height above sea level (m)
        terrain = 145 + 4 * w.warp_field(x * 0.3, y * 0.3, 0)
        out[wl < 0] = (terrain + height)[None]
    return out.astype(np.float32)


def kind(mod: Modality) -> str:
    """How GeoPlex-mini makes ``mod``: ``"vhr"``, ``"sar"`` or ``"optical"`` (the only kind with clouds)."""
    if mod.projector == "vhr":
        return "vhr"
    if mod.name in _ENL or mod.bands[0] in ("VV", "HH"):
        return "sar"
    return "optical"


def generate(w: World, tile: int, mod: Modality, clouds: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw values of world tile ``tile`` for ``mod`` and its cloud mask (None for SAR and VHR modalities)."""
    k = kind(mod)
    if k == "vhr":
        return vhr(w, tile, mod), None
    if k == "sar":
        return sar(w, tile, mod), None
    return optical(w, tile, mod, clouds=clouds)


def units(mod: str) -> str:
    m = MODALITIES[mod]
    if m.projector == "vhr":
        return "8-bit digital numbers" + (" (elevation: m)" if "elevation" in m.bands else "")
    if mod == "s1":
        return "backscatter dB (ratio band: VV dB - VH dB)"
    if mod in _ENL:
        return "linear backscatter (ratio band: co/cross)"
    return "reflectance x 10000" + (" (thermal bands: K)" if mod == "l8" else "")
