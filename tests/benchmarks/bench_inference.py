"""Inference speed and peak memory of anysat_core's AnySat (a benchmark script, not a test).

Cases (the protocol of ../shared/reference/perf-official.md, so figures compare with the original's):

* ``treesat``: the real TreeSatAI-TS tile of ``parity_public.pt`` (aerial 4x300x300 at 0.2 m, s2 T=146,
  s1 T=60), patch 20 m; batch 1 and 8 (tile repeated); ``tile`` and ``dense`` (on aerial).
* ``pastis``: spot 3x1280x1280 at 1 m + s2 T=38 x 10 x 128 x 128, patch 40 m, batch 1; dense on s2.

Every configuration runs in its own process (so peak RSS is its own) with 2 threads, through
``anysat_core.features.run_model`` (the path of extract_features and infer_scene), fp32 unless told, eval,
``inference_mode``, random weights; one warm-up, then the median and min of ``--repeats`` forwards.

    python tests/benchmarks/bench_inference.py                      # all sizes, treesat + pastis
    python tests/benchmarks/bench_inference.py --sizes tiny --cases treesat
    python tests/benchmarks/bench_inference.py --precision bf16      # or auto (bf16 where native); not bit-parity

With ``--original DIR`` (a local checkout of github gastruc/AnySat; its code is not part of this repository) every
configuration runs the original in fp32 and anysat_core in fp32 and bf16 *interleaved in one process with the same
weights* (the original's random init, loaded into anysat_core as an official checkpoint), and prints the speed-ups
over the original and the minimum per-sample cosine and relative error of each of ours to the original's output:

    python tests/benchmarks/bench_inference.py --original ../AnySat --sizes tiny --cases treesat
    python tests/benchmarks/bench_inference.py --original ../AnySat --device cuda   # on a GPU (TF32 off in fp32)
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARITY = ROOT.parent / "shared" / "reference" / "parity_public.pt"


def make_inputs(case: str, batch: int):
    import torch

    if case == "treesat":
        inputs = torch.load(PARITY, weights_only=True)["cases"][0]["inputs"]
        return {k: v.repeat(batch, *([1] * (v.dim() - 1))) for k, v in inputs.items()}, 20, "aerial"
    g = torch.Generator().manual_seed(0)
    dates = torch.randperm(365, generator=g)[:38].sort().values
    return (
        {
            "spot": torch.randn(batch, 3, 1280, 1280, generator=g),
            "s2": torch.randn(batch, 38, 10, 128, 128, generator=g),
            "s2_dates": dates.repeat(batch, 1),
        },
        40,
        "s2",
    )


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of ``fn`` (the device synchronised before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _peak_gpu_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None


def run_one(
    size: str,
    case: str,
    batch: int,
    output: str,
    repeats: int,
    threads: int,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from anysat_core import AnySat
    from anysat_core.features import run_model
    from anysat_core.precision import resolve_precision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AnySat(size=size).eval().to(device)
    inputs, patch, dense_mod = make_inputs(case, batch)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    om = dense_mod if output == "dense" else None
    used = resolve_precision(precision, device)
    times = []
    out = run_model(model, inputs, patch, output, om, used)  # warm-up (the path of extract_features / infer_scene)
    for _ in range(repeats):
        times.append(_timed(lambda: run_model(model, inputs, patch, output, om, used), device))
    med = statistics.median(times)
    return {
        "impl": "anysat_core",
        "precision": used,
        "size": size,
        "case": case,
        "batch": batch,
        "output": output,
        "out_shape": list(out.shape),
        "median_s": med,
        "min_s": min(times),
        "tiles_per_s": batch / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": _peak_gpu_mb(device),
        "device": device,
        "threads": threads,
        "torch": torch.__version__,
    }


def run_interleaved(
    size: str,
    case: str,
    batch: int,
    output: str,
    repeats: int,
    threads: int,
    original: str,
    device: str = "cpu",
    precisions: tuple[str, ...] = ("fp32", "bf16"),
) -> dict:
    """The original (fp32), ours fp32 and ours bf16 on the same inputs and weights, in rounds (one call of each per
    round, after one warm-up of each), so that load on the machine hits all three alike."""
    import tempfile

    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(original).resolve()))
    import hubconf

    from anysat_core import AnySat
    from anysat_core.features import run_model
    from anysat_core.precision import precision_context

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    orig = hubconf.AnySat(model_size=size, flash_attn=False).eval()
    with tempfile.TemporaryDirectory() as d:
        torch.save({"state_dict": orig.model.state_dict()}, Path(d) / "orig.pth")
        ours = AnySat.from_checkpoint(Path(d) / "orig.pth", size=size).eval().to(device)
    orig = orig.to(device)
    inputs, patch, dense_mod = make_inputs(case, batch)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    om = dense_mod if output == "dense" else None

    def run_original():
        with torch.inference_mode(), precision_context("fp32", device):  # TF32 off on CUDA, as for ours
            kw = {"output_modality": om} if om else {}
            return orig(inputs, patch_size=patch, output=output, **kw)

    calls = {"original fp32": run_original}
    for p in precisions:
        calls[f"ours {p}"] = functools.partial(run_model, ours, inputs, patch, output, om, p)
    outs = {name: fn().float() for name, fn in calls.items()}  # warm-up, and the outputs compared
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name].append(_timed(fn, device))
    ref = outs["original fp32"]
    row: dict = {"size": size, "case": case, "batch": batch, "output": output, "threads": threads, "device": device}
    for name in calls:
        med = statistics.median(times[name])
        row[name] = {"median_s": med, "min_s": min(times[name]), "tiles_per_s": batch / med}
        if name != "original fp32":
            a, b = outs[name].reshape(batch, -1).double(), ref.reshape(batch, -1).double()  # fp64: long dense vectors
            row[name]["speedup"] = statistics.median(times["original fp32"]) / med
            row[name]["min_cosine"] = float(torch.nn.functional.cosine_similarity(a, b).min())
            row[name]["rel_error"] = float((a - b).norm() / b.norm())
            row[name]["max_abs_error"] = float((a - b).abs().max())
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["peak_gpu_mb"] = _peak_gpu_mb(device)
    return row


def _cells(res: dict | None) -> dict[str, str]:
    """The table cells of one of ours (``-`` where it was not run)."""
    keys = ("median_s", "speedup", "min_cosine", "rel_error", "max_abs_error")
    if res is None:
        return dict.fromkeys(keys, "-")
    return {
        "median_s": f"{res['median_s']:.3f}",
        "speedup": f"{res['speedup']:.2f}x",
        "min_cosine": f"{res['min_cosine']:.6f}",
        "rel_error": f"{res['rel_error']:.1e}",
        "max_abs_error": f"{res['max_abs_error']:.1e}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--cases", nargs="+", default=["treesat", "pastis"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="fp32",
        help="anysat_core.precision: fp32 (exact), bf16 (autocast), auto (bf16 where the CPU has bf16 units)",
    )
    ap.add_argument(
        "--ours",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="with --original: the precisions of ours to interleave (bf16 alone takes long where it is emulated)",
    )
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (times synchronised)")
    ap.add_argument("--original", metavar="DIR", help="a checkout of gastruc/AnySat: run it interleaved with ours")
    ap.add_argument("--one", nargs=4, metavar=("SIZE", "CASE", "BATCH", "OUTPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one and args.original:
        size, case, batch, output = args.one
        row = run_interleaved(
            size, case, int(batch), output, args.repeats, args.threads, args.original, args.device, tuple(args.ours)
        )
        print(json.dumps(row))
        return 0
    if args.one:
        size, case, batch, output = args.one
        row = run_one(size, case, int(batch), output, args.repeats, args.threads, args.precision, args.device)
        print(json.dumps(row))
        return 0
    if not PARITY.exists():
        print(f"needs {PARITY} (the shared folder beside the checkout)", file=sys.stderr)
        return 2
    configs = []
    for size in args.sizes:
        for case in args.cases:
            batches = (1, 8) if case == "treesat" else (1,)
            for batch in batches:
                for output in ("tile", "dense"):
                    configs.append((size, case, batch, output))
    if args.original:
        print(
            "| size | case | B | output | original fp32 s | ours fp32 s | speed-up | ours bf16 s | speed-up | "
            "min cosine fp32 / bf16 | rel. error fp32 / bf16 | max abs error fp32 | peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for size, case, batch, output in configs:
            cmd = [sys.executable, __file__, "--one", size, case, str(batch), output, "--original", args.original]
            cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device]
            cmd += ["--ours", *args.ours]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            o = r["original fp32"]
            f, b = (_cells(r.get(f"ours {p}")) for p in ("fp32", "bf16"))
            print(
                f"| {size} | {case} | {batch} | {output} | {o['median_s']:.3f} | {f['median_s']} | {f['speedup']} | "
                f"{b['median_s']} | {b['speedup']} | {f['min_cosine']} / {b['min_cosine']} | "
                f"{f['rel_error']} / {b['rel_error']} | {f['max_abs_error']} | {r['peak_rss_mb']:.0f} |",
                flush=True,
            )
        return 0
    print(
        f"{'size':6s} {'case':8s} {'B':>2s} {'output':6s} {'median s':>9s} {'min s':>8s} {'tiles/s':>8s} "
        f"{'peak RSS MB':>11s} {'peak GPU MB':>11s}  ({args.device}, {args.precision})"
    )
    for size, case, batch, output in configs:
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                size,
                case,
                str(batch),
                output,
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                "--precision",
                args.precision,
                "--device",
                args.device,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"{size:6s} {case:8s} {batch:2d} {output:6s} {r['median_s']:9.3f} {r['min_s']:8.3f} "
            f"{r['tiles_per_s']:8.2f} {r['peak_rss_mb']:11.0f} {r['peak_gpu_mb'] or 0:11.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
