"""Command-line demo: ``python -m anysat_core.demo``.

Runs AnySat on a small multi-modal tile (aerial 0.2 m + Sentinel-2 + Sentinel-1, 60 m) and prints the
shape and time of every output.  Uses the released weights when they are available locally
(``ANYSAT_WEIGHTS`` or the Hugging Face cache), otherwise a randomly initialised tiny model.
"""

from __future__ import annotations

import argparse
import time

import torch

from anysat_core import AnySat, AnySatError
from anysat_core.data.synthetic import random_batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", choices=["tiny", "small", "base"])
    ap.add_argument("--pretrained", action="store_true", help="load the released base weights (cached/local only)")
    ap.add_argument("--patch-size", type=int, default=20, help="patch size in metres (default 20)")
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
        print(f"model: AnySat {args.size} with random weights ({sum(p.numel() for p in model.parameters()):,} parameters)")

    batch = random_batch(["aerial", "s2", "s1-asc"], extent_m=60, dates={"s2": 24, "s1-asc": 12}, seed=0)
    print("input:", {k: tuple(v.shape) for k, v in batch.items()})
    with torch.inference_mode():
        for output, om in (("tile", None), ("patch", None), ("dense", "aerial"), ("dense", "s2")):
            t0 = time.perf_counter()
            y = model(batch, patch_size=args.patch_size, output=output, output_modality=om)
            dt = time.perf_counter() - t0
            label = output + (f"[{om}]" if om else "")
            print(f"  {label:14s} -> {tuple(y.shape)}  {dt * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
