"""Scene-scale inference: time and peak memory of ``infer_scene`` versus scene area (a script, not a test).

Synthetic S2 time series (T=6 dated float32 GeoTIFFs, 10 bands, 10 m) of growing size are embedded with the tiny
model (random weights) through :func:`anysat_core.inference.infer_scene`: windows of 240 m with 40 m overlap,
patch 20 m, streamed to a Zarr store (or a COG).  Each size runs in its own process, so the peak RSS is its own.
Expected: time ~ linear in area; peak RSS bounded by a constant: the torch runtime and model, a few batches of
windows, the strip accumulator (at most ``buffer_mb``; it grows with the scene width only until the scene is
wider than one panel) and GDAL's block cache (at most ``gdal_cache_mb``).

    python tests/benchmarks/bench_scene.py                          # 0.25, 1, 4 km^2, dense output, Zarr
    python tests/benchmarks/bench_scene.py --sizes-km 0.5 1 2 --output patch --format tif
    python tests/benchmarks/bench_scene.py --width-km 1 --sizes-km 0.5 2 4   # fixed width, growing height
    python tests/benchmarks/bench_scene.py --height-km 1 --sizes-km 4 16 32  # fixed height, growing width
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_one(
    side_km: float,
    output: str,
    fmt: str,
    threads: int,
    T: int,
    width_km: float | None = None,
    height_km: float | None = None,
    buffer_mb: float = 16.0,
    gdal_cache_mb: float = 64.0,
    precision: str = "fp32",
    device: str = "cpu",
    batch_size: int = 4,
) -> dict:
    import numpy as np
    import rasterio
    import torch
    from affine import Affine

    sys.path.insert(0, str(ROOT))
    from anysat_core import AnySat
    from anysat_core.data.raster import RasterSource, open_rasters
    from anysat_core.inference import infer_scene, plan_scene
    from anysat_core.modalities import MODALITIES

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    C = MODALITIES["s2"].num_bands
    st = next(iter(MODALITIES["s2"].stats.values()))
    mean, std = np.asarray(st.mean)[:, None, None], np.asarray(st.std)[:, None, None]
    if height_km:  # fixed height, the size sets the width
        h_km, w_km = height_km, side_km
    else:  # the size sets the height (and the width unless it is fixed)
        h_km, w_km = side_km, width_km or side_km
    nh = round(h_km * 100)  # pixels of 10 m: height
    n = round(w_km * 100)  # width
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        files = []
        for t in range(T):
            p = Path(d) / f"s2_2020{1 + 2 * t:02d}15.tif"
            with rasterio.open(
                p,
                "w",
                driver="GTiff",
                height=nh,
                width=n,
                count=C,
                dtype="float32",
                crs="EPSG:32631",
                transform=Affine(10, 0, 500_000, 0, -10, 4_800_000),
                tiled=True,
                blockxsize=256,
                blockysize=256,
            ) as f:
                for y0 in range(0, nh, 256):  # written in strips: the input is never in memory either
                    h = min(256, nh - y0)
                    z = rng.normal(0, 1, (C, h, n))  # in the registry's units (reflectance x 10000), as real S2 L2A
                    f.write((mean + std * z).astype(np.float32), window=rasterio.windows.Window(0, y0, n, h))
            files.append(p)
        model = AnySat(size="tiny").eval().to(device)
        kw = {
            "patch_size_m": 20,
            "window_m": 240,
            "overlap_m": 40,
            "output": output,
            "output_modality": "s2",
            "buffer_mb": buffer_mb,
        }
        scene = open_rasters(RasterSource(files, modality="s2"), tile_m=240)
        plan = plan_scene(model, scene, **kw)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        out = infer_scene(
            model,
            scene,
            **kw,
            batch_size=batch_size,
            progress=False,
            out=Path(d) / f"features.{fmt}",
            gdal_cache_mb=gdal_cache_mb,
            precision=precision,
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in ([out] if out.is_file() else out.rglob("*")) if p.is_file()) / 2**20
    return {
        "side_km": h_km,
        "width_km": w_km,
        "area_km2": h_km * w_km,
        "T": T,
        "output": output,
        "format": fmt,
        "precision": precision,
        "device": device,
        "batch_size": batch_size,
        "windows": plan.n_windows,
        "panels": plan.n_panels,
        "grid": list(plan.grid_shape),
        "buffer_mb": round(np.prod(plan.buffer_shape) * 4 / 2**20, 1),
        "seconds": round(dt, 2),
        "s_per_km2": round(dt / (h_km * w_km), 2),
        "rss_before_mb": round(rss0),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "output_mb": round(size_mb, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes-km",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 2.0],
        help="scene side (or height with --width-km) in km",
    )
    ap.add_argument("--output", choices=["dense", "patch"], default="dense")
    ap.add_argument("--format", choices=["zarr", "tif"], default="zarr")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--T", type=int, default=6)
    ap.add_argument("--width-km", type=float, help="fixed scene width (km); sizes then set the height only")
    ap.add_argument("--height-km", type=float, help="fixed scene height (km); sizes then set the width only")
    ap.add_argument("--buffer-mb", type=float, default=16.0, help="infer_scene buffer_mb (panel accumulator)")
    ap.add_argument("--gdal-cache-mb", type=float, default=64.0, help="infer_scene gdal_cache_mb")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="infer_scene precision")
    ap.add_argument("--device", default="cpu", help="torch device of the model: cpu, cuda, cuda:1")
    ap.add_argument("--batch-size", type=int, default=4, help="infer_scene batch_size (windows per forward)")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        r = run_one(
            a.one,
            a.output,
            a.format,
            a.threads,
            a.T,
            a.width_km,
            a.height_km,
            a.buffer_mb,
            a.gdal_cache_mb,
            a.precision,
            a.device,
            a.batch_size,
        )
        print(json.dumps(r))
        return
    print(
        "| area km2 | height x width km | windows | panels | grid (cells) | strip buffer MB | seconds | s/km2 | RSS before MB | peak RSS MB | output MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in a.sizes_km:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(s),
            "--output",
            a.output,
            "--format",
            a.format,
            "--threads",
            str(a.threads),
            "--T",
            str(a.T),
        ]
        if a.width_km:
            cmd += ["--width-km", str(a.width_km)]
        if a.height_km:
            cmd += ["--height-km", str(a.height_km)]
        cmd += ["--buffer-mb", str(a.buffer_mb), "--gdal-cache-mb", str(a.gdal_cache_mb), "--precision", a.precision]
        cmd += ["--device", a.device, "--batch-size", str(a.batch_size)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(
            f"| {r['area_km2']:g} | {r['side_km']:g} x {r['width_km']:g} | {r['windows']} | {r['panels']} | {r['grid'][0]}x{r['grid'][1]} | "
            f"{r['buffer_mb']} | {r['seconds']} | {r['s_per_km2']} | {r['rss_before_mb']} | {r['peak_rss_mb']} | {r['output_mb']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
