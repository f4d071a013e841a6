"""The explorer's probe loop: time from "run probe" to the prediction layer (a script, not a test).

On a GeoPlex-mini tile (r05c05, 60 m, S2 + S1 ascending), with 2 torch threads: 20 labelled points (10 per class,
on cells of the view's feature map) -> :meth:`app.loop.ProbeLoop.run_probe` (fit, predict the view, leave-one-label-
out metrics) -> the prediction and confidence maps exist.  The feature map is computed before the clock starts (the
page already shows it when the user presses "Run probe").  Model sizes: tiny (the shipped checkpoint) and base
(random weights: the released ones are not available offline); outputs patch (10 m cells) and dense.

    python tests/benchmarks/bench_probe.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("ANYSAT_APP_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from app.config import AppConfig
    from app.loop import ProbeLoop
    from app.state import ExplorerState

    print(f"{'model':28s} {'output':7s} {'cells':>7s} {'D':>5s} {'probe -> prediction (s)':>26s}")
    for size, weights in (("tiny", "geoplex-mini"), ("base", "random")):
        st = ExplorerState(AppConfig(size=size, offline=True), tile="r05c05", weights=weights)
        for output in ("patch", "dense"):
            st.param.update(patch_size_m=10, output=output)
            f = st.result.features
            h, w = f.sizes["y"], f.sizes["x"]
            times = []
            for r in range(args.repeats):
                loop = ProbeLoop(st)
                loop.add_class("a")
                loop.add_class("b")
                for i in range(10):  # 10 points per class on distinct cells of the top and bottom halves
                    loop.label_class = "a"
                    loop.add_point(float(f.x[i % w]), float(f.y[(i // w) % (h // 2)]))
                    loop.label_class = "b"
                    loop.add_point(float(f.x[i % w]), float(f.y[h - 1 - (i // w) % (h // 2)]))
                t0 = time.perf_counter()
                loop.run_probe()
                dt = time.perf_counter() - t0
                assert loop.prediction is not None, st.error
                times.append(dt)
            label = f"{size} ({weights})"
            print(
                f"{label:28s} {output:7s} {h * w:7d} {f.sizes['feature']:5d} "
                f"{statistics.median(times):12.3f} (median of {args.repeats}, min {min(times):.3f})"
            )


if __name__ == "__main__":
    main()
