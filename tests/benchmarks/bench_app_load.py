"""Explorer under load: 1 then 10 concurrent browser sessions on one ``panel serve app`` (a script, not a test).

One ``python -m panel serve app --args --offline`` process (tiny, shipped GeoPlex-mini weights unless ``--size``;
torch with ``--threads`` threads) serves every session. Each session is its own browser context (own cookies and
websocket) in one headless chromium, driven by async Playwright so that the sessions run at once:

1. open the page and wait for the first map (``Status: tile r00c00: ...``; the server computes the default tile,
   which is in the process-wide feature cache after the first session);
2. select its own tile in the tile ``<select>`` and wait for ``Status: tile rXXcYY:`` (every session has a different
   tile, never computed before, so each one runs the model; inference holds one lock per model, so concurrent
   sessions queue for it).

Reported per phase (``--sessions``, default 1 then 10; the 1-session phase runs ``--single-repeats`` times one
after the other): p50/p95 of the latency to the first map, of tile selection -> its map, and of page open -> own
map; the server's RSS (``psutil``, the server process and its children) before any session, after each phase (its
pages still open) and its peak while the phase ran; errors: failed sessions, console errors and page errors, and
``Traceback`` in the server log. The model is loaded once per process (``app.resources.get_model``), so the RSS
should not grow by a model per session.

    python tests/benchmarks/bench_app_load.py
    python tests/benchmarks/bench_app_load.py --sessions 1 5 10 --json /tmp/load.json

Never ``playwright install``: the browser is Debian's chromium (``CHROMIUM_PATH`` or ``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FIND_TEXT_JS,
    Contention,
    describe_run,
    free_port,
    start_server,
    stop_server,
    wait_port,
)

TIMEOUT_MS = 300_000


def rss_mb(pid: int) -> float:
    """RSS of a process and its children, in MB."""
    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)]
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children."""
    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores) since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class PeakRSS:
    """Samples :func:`rss_mb` every 0.2 s on a thread; ``peak`` is the largest sample."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.2)

    def start(self) -> PeakRSS:
        self._t.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb(self.pid))
        return self.peak


async def wait_text(page, pattern: str) -> str:
    h = await page.wait_for_function(FIND_TEXT_JS, arg=pattern, polling=20, timeout=TIMEOUT_MS)
    return await h.json_value()


async def one_session(browser, url: str, tile: str) -> dict:
    """Open the page in a new context, wait for the first map, select ``tile`` and wait for its map."""
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1100})
    page = await ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []  # requests that did not complete (each also logs a console error)
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    out: dict = {"tile": tile, "errors": errors, "failed_requests": failed, "ctx": ctx}
    t0 = time.perf_counter()
    try:
        await page.goto(url)
        out["page"] = time.perf_counter() - t0  # the HTML: the server builds the session's document meanwhile
        await wait_text(page, r"Status: tile \w+: .*cells of")
        t1 = time.perf_counter()
        await page.locator("select").filter(has_text="r00c00").first.select_option(tile)
        text = await wait_text(page, f"Status: tile {tile}: [^;]*; [0-9.]+ s")
        t2 = time.perf_counter()
        out.update(first_map=t1 - t0, tile_map=t2 - t1, total=t2 - t0, status=text)
    except Exception as e:  # noqa: BLE001  (a failed session is a result here)
        out["failure"] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


async def run(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-app-load-") as d:
        log = Path(d) / "serve.log"
        proc = start_server(port, log, size=args.size, threads=args.threads)
        url = f"http://127.0.0.1:{port}/app"
        report: dict = {"run": describe_run(), "size": args.size, "threads": args.threads, "phases": []}
        try:
            wait_port(proc, port, log)
            await asyncio.sleep(1.0)
            report["rss_idle_mb"] = rss_mb(proc.pid)
            print(
                f"# server pid {proc.pid} on {url}; RSS before any session {report['rss_idle_mb']:.0f} MB", flush=True
            )
            tiles = iter(f"r{1 + k // 16:02d}c{k % 16:02d}" for k in range(15 * 16))  # all distinct, never r00c00
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for n in args.sessions:
                        rounds = args.single_repeats if n == 1 else 1
                        results, open_ctx = [], []
                        t0 = time.perf_counter()
                        busy = Contention().start()
                        peak = PeakRSS(proc.pid).start()
                        cpu0, machine0 = cpu_s(proc.pid), machine_busy_s()
                        for i in range(rounds):
                            batch = await asyncio.gather(*(one_session(browser, url, next(tiles)) for _ in range(n)))
                            results += batch
                            open_ctx = [r.pop("ctx") for r in batch]
                            if i < rounds - 1:  # the last round's pages stay open for the RSS
                                for c in open_ctx:
                                    await c.close()
                        wall = time.perf_counter() - t0
                        others = busy.stop()
                        peak.stop()
                        server_cpu, machine = cpu_s(proc.pid) - cpu0, machine_busy_s() - machine0
                        rss_open = rss_mb(proc.pid)
                        for c in open_ctx:
                            await c.close()
                        ok = [r for r in results if "failure" not in r]
                        phase = {
                            "sessions": n,
                            "rounds": rounds,
                            "wall_s": wall,
                            "ok": len(ok),
                            "failures": [f"{r['tile']}: {r['failure']}" for r in results if "failure" in r],
                            "console_errors": [e for r in results for e in r["errors"]],
                            "failed_requests": [u for r in results for u in r["failed_requests"]],
                            "rss_open_mb": rss_open,
                            "rss_peak_mb": peak.peak,
                            "others_cores": others,
                            "server_cpu_s": server_cpu,
                            "machine_busy_cpu_s": machine,
                        }
                        for key in ("page", "first_map", "tile_map", "total"):
                            xs = [r[key] for r in ok]
                            phase[key] = {"p50": pct(xs, 50), "p95": pct(xs, 95), "max": max(xs, default=float("nan"))}
                        phase["per_session"] = [
                            {k: r.get(k) for k in ("tile", "page", "first_map", "tile_map", "total", "failure")}
                            for r in results
                        ]
                        report["phases"].append(phase)
                        print(json.dumps(phase), flush=True)
                finally:
                    await browser.close()
            await asyncio.sleep(2.0)
            report["rss_end_mb"] = rss_mb(proc.pid)
        finally:
            stop_server(proc)
        text = log.read_text(errors="replace")
        report["server_tracebacks"] = text.count("Traceback")
        report["server_error_lines"] = [ln for ln in text.splitlines() if "ERROR" in ln or "Traceback" in ln][:20]
    return report


def table(rep: dict) -> str:
    run = rep["run"]
    dirty = f", app/ modified (diff sha1 {run['app_diff_sha1']})" if run["app_dirty"] else ""
    out = [
        f"commit {run['commit']}{dirty}; {run['cpus']} CPUs; {run['utc']} UTC",
        (
            f"{rep['size']} ({'shipped GeoPlex-mini weights' if rep['size'] == 'tiny' else 'random weights'}), "
            f"{rep['threads']} torch threads; server RSS before any session: {rep['rss_idle_mb']:.0f} MB, "
            f"after the last phase (pages closed): {rep.get('rss_end_mb', float('nan')):.0f} MB"
        ),
        "",
        (
            "| sessions | ok | page p50 / p95 s | first map p50 / p95 s | select tile -> map p50 / p95 s | "
            "open -> own map p50 / p95 s | wall s | RSS pages open MB | RSS peak MB | server CPU s | machine busy CPU s | "
            "others' CPU (cores) | failures | console errors / failed requests |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ph in rep["phases"]:
        n = f"{ph['sessions']}" + (f" (x{ph['rounds']} in turn)" if ph["rounds"] > 1 else " at once")
        cells = " | ".join(
            f"{ph[k]['p50']:.2f} / {ph[k]['p95']:.2f}" for k in ("page", "first_map", "tile_map", "total")
        )
        out.append(
            f"| {n} | {ph['ok']}/{ph['sessions'] * ph['rounds']} | {cells} | {ph['wall_s']:.0f} | "
            f"{ph['rss_open_mb']:.0f} | {ph['rss_peak_mb']:.0f} | {ph['server_cpu_s']:.0f} | "
            f"{ph['machine_busy_cpu_s']:.0f} | {ph['others_cores']:.2f} | {len(ph['failures'])} | "
            f"{len(ph['console_errors'])} / {len(ph['failed_requests'])} |"
        )
    for ph in rep["phases"]:
        for f in ph["failures"]:
            out.append(f"- {ph['sessions']} sessions: failed: {f}")
        for msg, k in Counter(ph["console_errors"]).most_common(5):
            out.append(f"- {ph['sessions']} sessions: console error x{k}: {msg[:200]}")
        for msg, k in Counter(ph["failed_requests"]).most_common(5):
            out.append(f"- {ph['sessions']} sessions: failed request x{k}: {msg[:200]}")
    out.append("")
    out.append(f"server log: {rep['server_tracebacks']} Traceback(s)")
    out += [f"    {ln}" for ln in rep["server_error_lines"]]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", nargs="+", type=int, default=[1, 10])
    ap.add_argument("--single-repeats", type=int, default=3, help="1-session phase: sessions one after the other")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
    rep = asyncio.run(run(args))
    print()
    print(table(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
