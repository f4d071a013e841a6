"""Scene inference memory: traced peak of Python/numpy allocations versus scene height and width (a script).

What the default test run checks deterministically (the planned strip buffer, and that the stream holds nothing
larger), this script measures on real runs: the peak of Python/numpy allocations (``tracemalloc``) of a streamed
dense Zarr export, after a warm-up export (lazy imports, caches, zarr's first use) and a garbage collection.

* height: a 240 m and a 720 m high scene (360 m wide): the taller one should peak < 1.3x the smaller one;
* width: a 360 m and a 1080 m wide scene (240 m high) with panels of 4 windows: the wider should peak < 1.3x the
  narrower, while the wide scene in one panel (no bound) peaks > 2x: the measure sees an unbounded accumulator.

Measured with AnySat tiny: height 1.0-1.1x, width 1.02-1.07x, one panel 2.7-2.8x (traced peaks of 3.5-9.6 MB).

    python tests/benchmarks/bench_scene_memory.py              # AnySat tiny, prints the table
    python tests/benchmarks/bench_scene_memory.py --size test --check   # faster; exit 1 when a bound is broken
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def traced_peak(model, scene, kw: dict, out: Path) -> int:
    """Peak bytes traced by tracemalloc during a streamed export of ``scene`` (after a warm-up export)."""
    from anysat_core.inference import infer_scene

    infer_scene(model, scene, **kw, progress=False, out=out.with_name(f"warm-{out.name}"), batch_size=4)
    gc.collect()
    tracemalloc.start()
    try:
        infer_scene(model, scene, **kw, progress=False, out=out, batch_size=4)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", help="AnySat size preset (default: tiny, as the measurements below)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio breaks its bound")
    a = ap.parse_args()

    import torch

    from anysat_core import AnySat
    from anysat_core.data.raster import RasterSource, open_rasters
    from tests.helpers.scenes import panel_mb, write_s2_series

    torch.manual_seed(0)
    model = AnySat(size=a.size).eval()
    base = {"patch_size_m": 20, "window_m": 120, "overlap_m": 40, "output": "dense"}
    panels = {**base, "buffer_mb": panel_mb(model.embed_dim, "dense", 4)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)

        def scene(name: str, height: int, width: int):
            files = write_s2_series(tmp / name, height=height, width=width)
            return open_rasters(RasterSource(files, modality="s2"), tile_m=120)

        runs = {
            "240 m x 360 m": traced_peak(model, scene("small", 24, 36), base, tmp / "small.zarr"),
            "720 m x 360 m": traced_peak(model, scene("tall", 72, 36), base, tmp / "tall.zarr"),
            "240 m x 360 m, panels of 4": traced_peak(model, scene("narrow", 24, 36), panels, tmp / "narrow.zarr"),
            "240 m x 1080 m, panels of 4": traced_peak(model, scene("wide", 24, 108), panels, tmp / "wide.zarr"),
            "240 m x 1080 m, one panel": traced_peak(
                model, scene("wide1", 24, 108), {**base, "buffer_mb": 1000}, tmp / "wide1.zarr"
            ),
        }
    print("| scene | traced peak MB |")
    print("|---|---|")
    for name, peak in runs.items():
        print(f"| {name} | {peak / 2**20:.2f} |")
    small, tall, narrow, wide, one = runs.values()
    checks = {
        "3x taller < 1.3x": tall / small < 1.3,
        "3x wider with panels < 1.3x": wide / narrow < 1.3,
        "3x wider in one panel > 2x": one / narrow > 2,
    }
    print(f"\nheight {tall / small:.2f}x, width {wide / narrow:.2f}x, width in one panel {one / narrow:.2f}x")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 1 if a.check and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
