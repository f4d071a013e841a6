"""Explorer latency (``panel serve app``): control change -> new PCA map, and cold start (a script, not a test).

Three measurements on a GeoPlex-mini tile (``r05c05`` unless ``--tile``), torch with ``--threads`` (2) threads:

(a) ``state``: server-side latency of a patch-size change (20 -> 10 -> 30 -> 20 m ..., ``--repeats`` cycles) to the
    new PCA result, on :class:`app.state.ExplorerState` directly (no browser: without a Bokeh session the state
    computes in the caller's thread, so the time of ``state.patch_size_m = p`` is request + input composite +
    features + PCA). ``app.resources.FEATURE_CACHE`` is cleared before every change, so each one runs the model.
    Cases: tiny with the shipped GeoPlex-mini weights, base with random weights (the released base weights are
    not available offline; with every modality of the tile, and with the tiny model's s2 + s1-asc), in fp32 and,
    where ``app.resources.bf16_supported()``, bf16.
(b) ``browser``: the real ``python -m panel serve app --args --offline`` in a subprocess, driven by Playwright with
    the system chromium: click a patch-size button, time until the status reads ``Status: tile T: N x N cells of
    P m`` (polled in the page every 20 ms, through the shadow roots). Each timed click is a (tile, patch size) the
    server has not computed yet (tiles ``r05c05``, ``r05c06``, ...); a few clicks back to computed sizes give the
    round trip without the model (``cached``).
(c) ``cold``: process start -> ``Status: tile`` visible in the browser (a fresh server each repeat; the GeoPlex-mini
    tiles come from the usual cache, ``ANYSAT_CACHE_DIR`` or ``~/.cache/anysat-explorer``, generated once if absent).

Goal (issue #11): under 1 s for tiny, under 3 s for base.

    python tests/benchmarks/bench_app.py                                  # (a) tiny + base, (b) + (c) tiny + base
    python tests/benchmarks/bench_app.py --parts state --repeats 5
    python tests/benchmarks/bench_app.py --parts browser cold --browser-sizes tiny --json /tmp/app.json

Never ``playwright install``: the browser is Debian's chromium (``CHROMIUM_PATH`` or ``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GOAL_S = {"tiny": 1.0, "base": 3.0}
#: weights of a size: the shipped checkpoint for tiny, random init for the others (no released base offline).
WEIGHTS = {"tiny": "geoplex-mini"}
STATUS_RE = r"Status: tile {tile}: (\d+) x (\d+) cells of {p} m[^;]*; ([0-9.]+) s"

#: a page function: the text of the document and of every shadow root (Panel renders its panes in shadow roots),
#: tested against a regular expression; returns the first match or null (wait_for_function polls it).
FIND_TEXT_JS = """
(pattern) => {
  const rx = new RegExp(pattern);
  const roots = [document.body];
  for (let i = 0; i < roots.length; i++) {
    const r = roots[i];
    for (const el of r.querySelectorAll('*')) if (el.shadowRoot) roots.push(el.shadowRoot);
  }
  for (const r of roots) {
    const m = (r.textContent || '').match(rx);
    if (m) return m[0];
  }
  return null;
}
"""


class Contention:
    """CPU used by processes outside this script's process tree (this script, its servers, its chromium) while the
    block runs: ``cores`` is their mean, in cores (psutil, sampled every second). Another job on the same cores
    (a training run, tests) slows every figure here; this says how much of the machine it took."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _others(self) -> float:
        ps = self._psutil
        me = ps.Process()
        mine = {me.pid, *(c.pid for c in me.children(recursive=True))}
        total = 0.0
        for p in ps.process_iter():
            if p.pid in mine:
                continue
            try:
                total += p.cpu_percent(None)
            except (ps.NoSuchProcess, ps.AccessDenied):
                pass
        return total / 100.0

    def _run(self) -> None:
        self._others()  # primes cpu_percent
        while not self._stop.wait(1.0):
            self.samples.append(self._others())

    @property
    def cores(self) -> float:
        return statistics.mean(self.samples) if self.samples else float("nan")

    def start(self) -> Contention:
        self._t.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.cores


def describe_run() -> dict:
    """Commit, whether app/ differs from it, cores, and the time (printed first, kept in the JSON)."""

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    info = {
        "commit": git("rev-parse", "--short", "HEAD"),
        "app_dirty": bool(git("status", "--porcelain", "app")),
        "app_diff_sha1": hashlib.sha1(git("diff", "HEAD", "--", "app").encode()).hexdigest()[:10],
        "cpus": os.cpu_count(),
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    print(f"# {json.dumps(info)}", flush=True)
    return info


def weights_of(size: str) -> str:
    return WEIGHTS.get(size, "random")


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    return {"n": len(xs), "median": statistics.median(xs), "min": xs[0], "p90": p90, "max": xs[-1]}


# ---------------------------------------------------------------------------------------------------- (a) state
def bench_state(sizes: list[str], tile: str, repeats: int, threads: int, sizes_cycle: list[int]) -> list[dict]:
    import torch

    sys.path.insert(0, str(ROOT))
    from app.config import AppConfig
    from app.resources import FEATURE_CACHE, bf16_supported
    from app.state import ExplorerState

    torch.set_num_threads(threads)
    precisions = ["fp32", "bf16"] if bf16_supported() else ["fp32"]
    rows = []
    for size in sizes:
        weights = weights_of(size)
        t0 = time.perf_counter()
        st = ExplorerState(AppConfig(offline=True, size=size, weights=weights), tile=tile)
        init_s = time.perf_counter() - t0
        all_mods = list(st.modalities)
        variants = [all_mods]
        if size != "tiny" and sorted(all_mods) != ["s1-asc", "s2"] and {"s1-asc", "s2"} <= set(all_mods):
            variants.append(["s1-asc", "s2"])  # the tiny model's inputs, for a like-for-like row
        for mods in variants:
            if sorted(st.modalities) != sorted(mods):
                st.modalities = mods
            for prec in precisions:
                if st.precision != prec:
                    FEATURE_CACHE.clear()
                    st.precision = prec
                times, computes, cells = [], [], {}
                busy = Contention().start()
                for _ in range(repeats):
                    for p in sizes_cycle:
                        if p == st.patch_size_m:
                            continue
                        FEATURE_CACHE.clear()
                        t = time.perf_counter()
                        st.patch_size_m = p
                        dt = time.perf_counter() - t
                        assert st.result is not None and st.result.pca is not None, st.error or st.status
                        assert st.result.request.patch_size_m == p and not st.error, st.error
                        times.append(dt)
                        computes.append(st.result.seconds)
                        f = st.result.features
                        cells[p] = f"{f.sizes['y']}x{f.sizes['x']}"
                row = {
                    "part": "state",
                    "size": size,
                    "weights": weights,
                    "precision": prec,
                    "modalities": "+".join(sorted(mods)),
                    "features": int(st.result.features.sizes["feature"]),
                    "init_s": init_s,
                    "cells": cells,
                    "latency": stats(times),
                    "compute": stats(computes),
                    "others_cores": busy.stop(),
                    "goal_s": GOAL_S.get(size),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        if "bf16" not in precisions:
            print(f"# {size}: bf16 skipped: app.resources.bf16_supported() is False on this CPU", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------- server
def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (5006, 5077):
            return port


def start_server(
    port: int, log: Path, *, size: str = "tiny", weights: str | None = None, threads: int = 2
) -> subprocess.Popen:
    """``python -m panel serve app`` on ``127.0.0.1:port``, offline, output to ``log`` (the caller kills it)."""
    env = {**os.environ, "ANYSAT_APP_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable, "-m", "panel", "serve", "app", "--port", str(port), "--address", "127.0.0.1",
        "--allow-websocket-origin", f"127.0.0.1:{port}", *os.environ.get("BENCH_SERVE_EXTRA", "").split(),
        "--args", "--offline", "--size", size, "--weights", weights or weights_of(size),
    ]  # fmt: skip
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_port(proc: subprocess.Popen, port: int, log: Path, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"panel serve did not listen on {port} within {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def log_errors(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback")


# ---------------------------------------------------------------------------------------------------- (b) browser
def wait_text(page, pattern: str, timeout_ms: float = 180_000) -> str:
    """Wait until ``pattern`` (a JS regular expression) matches some text of the page; return the match."""
    h = page.wait_for_function(FIND_TEXT_JS, arg=pattern, polling=20, timeout=timeout_ms)
    return h.json_value()


def select_tile(page, tile: str) -> str:
    page.locator("select").filter(has_text="r00c00").first.select_option(tile)
    return wait_text(page, f"Status: tile {tile}: [^;]*; [0-9.]+ s")


def bench_browser(browser, size: str, tiles: list[str], threads: int, workdir: Path) -> list[dict]:
    port = free_port()
    log = workdir / f"serve-browser-{size}.log"
    proc = start_server(port, log, size=size, threads=threads)
    rows = []
    busy = Contention().start()
    try:
        wait_port(proc, port, log)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        failed: list[str] = []  # requests that did not complete (each also logs a console error)
        page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
        page.goto(f"http://127.0.0.1:{port}/app")
        wait_text(page, "Status: tile")
        done: set[tuple[str, int]] = set()
        uncached, uncached_compute, cached = [], [], []
        current = 20
        for tile in tiles:
            m = re.search(r"cells of (\d+) m", select_tile(page, tile))
            current = int(m.group(1)) if m else current
            done.add((tile, current))
            for p in (10, 30, 20):
                if p == current:
                    continue
                t = time.perf_counter()
                page.get_by_role("button", name=str(p), exact=True).click()
                text = wait_text(page, STATUS_RE.format(tile=tile, p=p))
                dt = time.perf_counter() - t
                server_s = float(re.search(STATUS_RE.format(tile=tile, p=p), text).group(3))
                if (tile, p) in done:
                    cached.append(dt)
                else:
                    uncached.append(dt)
                    uncached_compute.append(server_s)
                done.add((tile, p))
                current = p
        # back to sizes computed on the last tile: the round trip without the model
        for p in (10, 30, 20, 10, 30, 20):
            if p == current:
                continue
            t = time.perf_counter()
            page.get_by_role("button", name=str(p), exact=True).click()
            wait_text(page, STATUS_RE.format(tile=tiles[-1], p=p))
            cached.append(time.perf_counter() - t)
            current = p
        ctx.close()
        others = busy.stop()
        for label, xs, comp in (("uncached", uncached, uncached_compute), ("cached", cached, [])):
            row = {
                "part": "browser",
                "size": size,
                "weights": weights_of(size),
                "precision": "fp32",
                "kind": label,
                "latency": stats(xs),
                "server_compute": stats(comp),
                "console_errors": errors,
                "failed_requests": failed,
                "others_cores": others,
                "goal_s": GOAL_S.get(size),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        busy.stop()
        stop_server(proc)
    n_tb = log_errors(log)
    if n_tb:
        print(f"# server log {log}: {n_tb} Traceback(s)", flush=True)
    for r in rows:
        r["server_tracebacks"] = n_tb
    return rows


# ---------------------------------------------------------------------------------------------------- (c) cold
def bench_cold(browser, size: str, repeats: int, threads: int, workdir: Path) -> dict:
    listen, first_map, tracebacks = [], [], 0
    busy = Contention().start()
    for i in range(repeats):
        port = free_port()
        log = workdir / f"serve-cold-{size}-{i}.log"
        t0 = time.perf_counter()
        proc = start_server(port, log, size=size, threads=threads)
        try:
            wait_port(proc, port, log)
            listen.append(time.perf_counter() - t0)
            ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/app")
            wait_text(page, r"Status: tile \w+: .*cells of")
            first_map.append(time.perf_counter() - t0)
            ctx.close()
        finally:
            stop_server(proc)
        tracebacks += log_errors(log)
    row = {
        "part": "cold",
        "size": size,
        "weights": weights_of(size),
        "listen": stats(listen),
        "first_map": stats(first_map),
        "others_cores": busy.stop(),
        "server_tracebacks": tracebacks,
    }
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------------------------------------------- table
def table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r["part"] == "run":
            dirty = f", app/ modified (diff sha1 {r['app_diff_sha1']})" if r["app_dirty"] else ""
            out += [f"commit {r['commit']}{dirty}; {r['cpus']} CPUs; {r['utc']} UTC", ""]
    st = [r for r in rows if r["part"] == "state"]
    if st:
        out += [
            "(a) patch-size change -> new PCA result, ExplorerState (no browser), feature cache cleared each time",
            "",
            (
                "| size | weights | precision | modalities | features | changes | median s | min s | max s | "
                "model+PCA median s | goal | met | others' CPU (cores) |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in st:
            lat, c = r["latency"], r["compute"]
            met = "yes" if lat["median"] < r["goal_s"] else "no"
            out.append(
                f"| {r['size']} | {r['weights']} | {r['precision']} | {r['modalities']} | {r['features']} | "
                f"{lat['n']} | {lat['median']:.2f} | {lat['min']:.2f} | {lat['max']:.2f} | {c['median']:.2f} | "
                f"< {r['goal_s']:g} s | {met} | {r['others_cores']:.2f} |"
            )
        out.append("")
    br = [r for r in rows if r["part"] == "browser"]
    if br:
        out += [
            "(b) browser: click a patch-size button -> status text of the new map (real panel serve + chromium)",
            "",
            (
                "| size | weights | clicks | n | median s | min s | max s | server model+PCA median s | goal | met | "
                "console errors | server tracebacks | others' CPU (cores) |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in br:
            lat, c = r["latency"], r["server_compute"]
            comp = f"{c['median']:.2f}" if c.get("n") else "-"
            met = ("yes" if lat["median"] < r["goal_s"] else "no") if r["kind"] == "uncached" else "-"
            out.append(
                f"| {r['size']} | {r['weights']} | {r['kind']} | {lat['n']} | {lat['median']:.2f} | {lat['min']:.2f} | "
                f"{lat['max']:.2f} | {comp} | < {r['goal_s']:g} s | {met} | {len(r['console_errors'])} | "
                f"{r['server_tracebacks']} | {r['others_cores']:.2f} |"
            )
        for r in br:
            if r["kind"] == "uncached":
                for msg, k in Counter(r["console_errors"]).most_common(5):
                    out.append(f"- {r['size']}: console error x{k}: {msg[:200]}")
                for msg, k in Counter(r.get("failed_requests", [])).most_common(5):
                    out.append(f"- {r['size']}: failed request x{k}: {msg[:200]}")
        out.append("")
    cold = [r for r in rows if r["part"] == "cold"]
    if cold:
        out += [
            "(c) cold start: process start -> port open -> first map (`Status: tile` in the browser)",
            "",
            (
                "| size | weights | repeats | port open median s | first map median s | min s | max s | server tracebacks | "
                "others' CPU (cores) |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in cold:
            lo, fm = r["listen"], r["first_map"]
            out.append(
                f"| {r['size']} | {r['weights']} | {fm['n']} | {lo['median']:.2f} | {fm['median']:.2f} | "
                f"{fm['min']:.2f} | {fm['max']:.2f} | {r['server_tracebacks']} | {r['others_cores']:.2f} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["state", "browser", "cold"], choices=["state", "browser", "cold"])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"], help="model sizes of (a)")
    ap.add_argument("--browser-sizes", nargs="+", default=["tiny", "base"], help="model sizes of (b) and (c)")
    ap.add_argument("--tile", default="r05c05")
    ap.add_argument("--browser-tiles", nargs="+", default=["r05c05", "r05c06", "r06c05"])
    ap.add_argument("--repeats", type=int, default=3, help="cycles 20 -> 10 -> 30 -> 20 m of (a)")
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    rows: list[dict] = [{"part": "run", **describe_run()}]
    if "state" in args.parts:
        rows += bench_state(args.sizes, args.tile, args.repeats, args.threads, [10, 30, 20])
    if {"browser", "cold"} & set(args.parts):
        if CHROMIUM is None:
            sys.exit("chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
        from playwright.sync_api import sync_playwright

        with tempfile.TemporaryDirectory(prefix="bench-app-") as d, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for size in args.browser_sizes:
                    if "browser" in args.parts:
                        rows += bench_browser(browser, size, args.browser_tiles, args.threads, Path(d))
                    if "cold" in args.parts:
                        rows.append(bench_cold(browser, size, args.cold_repeats, args.threads, Path(d)))
            finally:
                browser.close()
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
