"""Command-line demo: ``python -m anysat_core.demo``.

Runs AnySat on two tiles of GeoPlex-mini, the embedded default world (aerial 0.2 m + Sentinel-2 + Sentinel-1
ascending over 60 m tiles in UTM 31N), and prints the shape and time of every output and where the tiles lie.
The model is a randomly initialised AnySat of ``--size``; with ``--pretrained``, the released base weights when
they are available locally (``ANYSAT_WEIGHTS`` or the Hugging Face cache).
"""

from __future__ import annotations

import argparse
import time

import torch

from anysat_core import AnySat, AnySatError
from anysat_core.config import SIZES
from anysat_core.data.collate import collate
from anysat_core.data.datasets import get_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", choices=list(SIZES))
    ap.add_argument("--pretrained", action="store_true", help="load the released base weights (cached/local only)")
    ap.add_argument("--patch-size-m", type=int, default=20, help="patch side in metres (default 20)")
    args = ap.parse_args(argv)

    if args.pretrained:
        try:
            model = AnySat.from_pretrained("base", local_files_only=True)
            print("model: released AnySat base weights")
        except AnySatError as e:
            print(f"released weights unavailable ({e}); using a random {args.size} model")
            model = AnySat(size=args.size).eval()
    else:
        model = AnySat(size=args.size).eval()
        print(
            f"model: AnySat {args.size} with random weights ({sum(p.numel() for p in model.parameters()):,} parameters)"
        )

    world = get_dataset("geoplex-mini", seed=0, modalities=("aerial", "s2", "s1-asc"), split="test")
    samples = [world[0], world[1]]
    batch = collate(samples)
    for s in samples:
        labels = [world.classes[i] for i in s["label"].nonzero().flatten().tolist()]
        print(
            f"tile {s['meta'].tile_id}: {s['meta'].crs} bounds {tuple(round(v) for v in s['meta'].bounds)}, classes {labels}"
        )
    print("input:", {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")})
    with torch.inference_mode():
        for output, om in (("tile", None), ("patch", None), ("dense", "aerial"), ("dense", "s2")):
            t0 = time.perf_counter()
            y = model(batch, patch_size_m=args.patch_size_m, output=output, output_modality=om)
            dt = time.perf_counter() - t0
            label = output + (f"[{om}]" if om else "")
            print(f"  {label:14s} -> {tuple(y.shape)}  {dt * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
