"""Scene-inference test helpers: a small synthetic scene (dated S2 GeoTIFFs of random values in the registry's units,
so that the default normalisation turns them into N(0, 1)),
the ``buffer_mb`` of a given panel width, and the comparison of two exports.

Three dates (by default), 10 bands, 10 m pixels in UTM 31N from (X0, Y0); the default 36 x 24 pixels are 360 m x 240 m.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from affine import Affine

from anysat_core.modalities import MODALITIES

X0, Y0 = 500_000.0, 4_800_000.0
UTM = "EPSG:32631"
DATES = ("20200110", "20200420", "20200805")
C_S2 = MODALITIES["s2"].num_bands


def panel_mb(embed_dim: int, output: str, windows: int, overlap_m: float = 40) -> float:
    """A ``buffer_mb`` that fits exactly ``windows`` window columns of 120 m (cells: 20 m patch, 10 m dense) for a
    model of ``embed_dim`` (the accumulator formula of :func:`~anysat_core.inference.plan_scene`)."""
    D = embed_dim * (2 if output == "dense" else 1)
    cell = 20 if output == "patch" else 10
    wc = 120 // cell
    sc = wc - int(overlap_m // cell)
    return ((windows - 1) * sc + wc) * 4 * (2 * D + 2) * wc / 2**20 + 1e-6


def write_s2_tif(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    """Write ``data`` ``(C_S2, H, W)`` float32 as an S2 GeoTIFF at 10 m with its corner at ``(X0, Y0)`` in UTM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    C, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=C,
        dtype="float32",
        crs=UTM,
        transform=Affine(10, 0, X0, 0, -10, Y0),
        nodata=nodata,
    ) as f:
        f.write(data.astype(np.float32))
    return path


def write_s2_series(
    folder: Path, height: int = 24, width: int = 36, seed: int = 0, dates: tuple[str, ...] = DATES
) -> list[Path]:
    """One float32 GeoTIFF per date (default :data:`DATES`), ``s2_<YYYYMMDD>.tif``: per band ``mean + std * z`` with
    ``z ~ N(0, 1)`` and the registry's S2 statistics (reflectance x 10000), so normalised inputs are ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    return [write_s2_tif(folder / f"s2_{d}.tif", s2_values(rng, height, width)) for d in dates]


def s2_values(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(C_S2, height, width)`` float32 ``mean + std * N(0, 1)`` per band with the registry's S2 statistics (the units
    of reflectance x 10000 that the default normalisation expects)."""
    st = next(iter(MODALITIES["s2"].stats.values()))
    mean, std = np.asarray(st.mean)[:, None, None], np.asarray(st.std)[:, None, None]
    return (mean + std * rng.normal(0, 1, (C_S2, height, width))).astype(np.float32)


def assert_same_output(a: Path, b: Path, variables: tuple[str, ...] = ("anysat_features",)) -> None:
    """Same bytes and provenance in two outputs of infer_scene: the ``variables`` and attributes of two Zarr stores,
    or the bands, tags and profile of two COGs."""
    if a.suffix == ".zarr":
        za, zb = xr.open_zarr(a), xr.open_zarr(b)
        for v in variables:
            assert za[v].values.tobytes() == zb[v].values.tobytes(), v
        assert za.attrs == zb.attrs
    else:
        with rasterio.open(a) as fa, rasterio.open(b) as fb:
            assert fa.read().tobytes() == fb.read().tobytes()
            assert fa.tags() == fb.tags()
            pa, pb = dict(fa.profile), dict(fb.profile)
            assert np.isnan(pa.pop("nodata")) and np.isnan(pb.pop("nodata")) and pa == pb
