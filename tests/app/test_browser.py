"""The real ``panel serve app`` in a subprocess, driven by Playwright with Debian's chromium (offline).

Never ``playwright install``: the browser is the system chromium (``CHROMIUM_PATH`` or ``/usr/bin/chromium``).
A screenshot per step goes to ``tests/app/artifacts/`` (not committed).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
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
TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path_factory: pytest.TempPathFactory, data_root: Path, *serve_args: str):
    """``python -m panel serve app`` on a free loopback port, offline, with the test data root (a generator)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    output_root = tmp_path_factory.mktemp("outputs")
    env = {**os.environ, "ANYSAT_APP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "panel", "serve", "app", "--port", str(port), "--address", "127.0.0.1",
        "--allow-websocket-origin", f"127.0.0.1:{port}", *serve_args, "--args", "--offline",
        "--data-root", str(data_root), "--output-root", str(output_root),
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"panel serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{port}/app", "log": log, "output_root": output_root}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(log.read_text()[-6000:])  # shown by pytest when a test fails
    # no traceback from the app (Tornado's "websocket closed" noise when a page closes mid-message is not ours)
    text = log.read_text()
    blocks = text.split("Traceback (most recent call last):")[1:]
    ours = [b for b in blocks if "WebSocketClosedError" not in b and "StreamClosedError" not in b]
    assert not ours, text[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    yield from _serve(tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs it with apt; or set CHROMIUM_PATH)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server, request):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server["url"])
    page.get_by_text("Status: tile").first.wait_for()
    page.console_errors = errors  # type: ignore[attr-defined]
    yield page
    page.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def map_pixels(page, index: int = 0) -> np.ndarray:
    """RGB pixels of the index-th visible map canvas (larger than 150 px), left to right then top to bottom."""
    from PIL import Image

    cv = page.locator("canvas")
    items = []
    for i in range(cv.count()):
        box = cv.nth(i).bounding_box()
        if box and box["width"] > 150 and box["height"] > 150 and cv.nth(i).is_visible():
            items.append((round(box["y"] / 50), round(box["x"]), i))
    items.sort()
    seen: set = set()
    items = [t for t in items if not (t[:2] in seen or seen.add(t[:2]))]  # a Bokeh plot stacks several canvases
    return np.array(Image.open(io.BytesIO(cv.nth(items[index][2]).screenshot())).convert("RGB")).astype(int)


def wait_status(page, text: str) -> None:
    """Wait until no computation runs and the status shows ``text``, then for the map's repaint."""
    from playwright.sync_api import expect

    expect(page.get_by_text("Status: computing")).to_have_count(0, timeout=TIMEOUT_MS)
    page.get_by_text(text).first.wait_for()
    expect(page.get_by_text("Status: computing")).to_have_count(0, timeout=TIMEOUT_MS)
    time.sleep(1.0)  # the map redraws after the status (same server message batch, then a canvas repaint)


def select_tile(page, tile: str) -> None:
    page.locator("select").filter(has_text="r00c00").first.select_option(tile)
    wait_status(page, f"Status: tile {tile}:")


def test_page_loads_with_a_pca_map_and_no_console_errors(page) -> None:
    select_tile(page, "r05c05")
    shot(page, "01-loaded")
    px = map_pixels(page)
    assert px.std() > 10, "the map canvas is blank"
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50
    assert page.console_errors == []


def test_patch_size_and_modality_redraw_the_map(page) -> None:
    select_tile(page, "r05c05")
    before = map_pixels(page)
    page.get_by_role("button", name="10", exact=True).click()
    wait_status(page, "6 x 6 cells of 10 m")
    after = map_pixels(page)
    shot(page, "02-patch-10m")
    assert np.abs(before - after).mean() > 1.0
    page.get_by_role("button", name="s1-asc", exact=True).click()  # toggle S1 off: S2 only
    wait_status(page, "256 features, s2, fp32")
    s2_only = map_pixels(page)
    shot(page, "03-s2-only")
    assert np.abs(after - s2_only).mean() > 1.0
    assert page.console_errors == []


def test_a_click_gives_a_similarity_layer(page) -> None:
    select_tile(page, "r05c05")
    page.get_by_role("button", name="10", exact=True).click()
    wait_status(page, "6 x 6 cells of 10 m")
    before = map_pixels(page)
    cv = page.locator("canvas")
    boxes = [cv.nth(i).bounding_box() for i in range(cv.count())]
    box = max((b for b in boxes if b), key=lambda b: b["width"] * b["height"])
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_status(page, "similarity to 1 example(s)")
    after = map_pixels(page)
    shot(page, "04-similarity")
    assert np.abs(before - after).mean() > 1.0
    assert page.console_errors == []


def test_compare_view_shows_two_different_panes(page) -> None:
    select_tile(page, "r05c05")
    page.locator(".bk-tab").filter(has_text="Compare").first.click()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("agreement").first.wait_for()
    time.sleep(3)
    shot(page, "05-compare")
    a, b = map_pixels(page, 0), map_pixels(page, 1)
    assert a.std() > 10 and b.std() > 10
    assert a.shape != b.shape or np.abs(a - b).mean() > 1.0
    assert page.console_errors == []


def test_own_geotiff_opens_and_a_path_outside_the_roots_is_refused(page) -> None:
    page.get_by_text("Your own raster", exact=True).click()
    path = page.get_by_placeholder("scene.tif or s2/*.tif")
    path.fill("../../../etc/passwd")
    page.get_by_role("button", name="Open raster").click()
    page.get_by_text("outside the data roots").first.wait_for()
    shot(page, "06-refused")
    path.fill("s2/*.tif")
    page.get_by_role("button", name="Open raster").click()
    wait_status(page, "Status: tile r000c000:")
    shot(page, "07-own-geotiff")
    assert map_pixels(page).std() > 10
    # BokehJS painted the footprints with the previous source's polygon indices (fewer tiles here) until the layer
    # kept a fixed number of polygons
    assert page.console_errors == []


def test_own_geotiff_in_other_units_opens_with_a_notice_on_the_page(page, data_root) -> None:
    """Reflectance in 0-1 (statistics expect x 10000): the map is drawn and the page says why it would mislead."""
    from tests.helpers.scenes import s2_values, write_s2_tif

    write_s2_tif(data_root / "refl-0-1" / "s2_20200601.tif", s2_values(np.random.default_rng(2), 32, 32) / 10_000)
    page.get_by_text("Your own raster", exact=True).click()
    page.get_by_placeholder("scene.tif or s2/*.tif").fill("refl-0-1/s2_20200601.tif")
    page.get_by_role("button", name="Open raster").click()
    wait_status(page, "Status: tile r000c000:")
    notice = page.get_by_text("s2 values look like other units").first
    notice.wait_for()
    assert "multiply them by 10000" in notice.inner_text()
    shot(page, "07b-units-notice")
    assert map_pixels(page).std() > 10  # still drawn: a warning, the session goes on
    assert page.console_errors == []


def _map_box(page) -> dict:
    cv = page.locator("canvas")
    boxes = [cv.nth(i).bounding_box() for i in range(cv.count()) if cv.nth(i).is_visible()]
    return max((b for b in boxes if b), key=lambda b: b["width"] * b["height"])


def test_label_probe_predict_and_export(page, server) -> None:
    import rasterio

    select_tile(page, "r05c05")
    page.get_by_role("button", name="10", exact=True).click()
    wait_status(page, "6 x 6 cells of 10 m")
    page.get_by_role("button", name="Click the map to label").click()
    box = _map_box(page)

    def click(fx: float, fy: float) -> None:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        time.sleep(0.8)

    for fx, fy in ((0.38, 0.38), (0.42, 0.40), (0.40, 0.44)):
        click(fx, fy)
    page.locator("select").filter(has_text="class 1").first.select_option("class 1")
    time.sleep(0.5)
    for fx, fy in ((0.60, 0.60), (0.62, 0.56), (0.58, 0.62)):
        click(fx, fy)
    shot(page, "08-labels")
    page.get_by_role("button", name="Run probe").click()
    page.get_by_text("held-out accuracy").first.wait_for()
    page.get_by_text("overall accuracy").first.wait_for()
    time.sleep(1.5)
    shot(page, "09-probe")
    page.get_by_text("Status: tile").first.scroll_into_view_if_needed()
    wait_status(page, "Status: tile r05c05: 6 x 6 cells")
    before = map_pixels(page)
    assert before.std() > 10
    page.get_by_role("button", name="confidence", exact=True).click()
    time.sleep(1)
    wait_status(page, "Status: tile r05c05: 6 x 6 cells")
    shot(page, "10-confidence")
    assert np.abs(before - map_pixels(page)).mean() > 0.5
    page.locator("select:has(option[value='prediction'])").first.select_option("prediction")
    time.sleep(0.5)
    page.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text("prediction written to").first.wait_for()
    shot(page, "11-export")
    files = list(Path(server["output_root"]).glob("*.tif"))
    assert len(files) == 1
    with rasterio.open(files[0]) as src:
        assert src.crs.to_string() == "EPSG:32631"
        assert src.width == 6 and src.height == 6 and src.transform.a == 10.0
        l, b, r, t = src.bounds
        assert (r - l, t - b) == (60.0, 60.0)
    page.get_by_role("button", name="Export", exact=True).click()  # again: never clobbers silently
    page.get_by_text("exists").first.wait_for()
    assert page.get_by_role("button", name="Overwrite it").is_visible()
    assert page.console_errors == []


def _wait_progress(page, low: int, high: int) -> None:
    """Wait until the progress bar shows a value in [low, high]."""
    deadline = time.time() + TIMEOUT_MS / 1000
    bar = page.locator("progress").first
    while time.time() < deadline:
        v = bar.get_attribute("value")
        if v is not None and low <= float(v) <= high:
            return
        time.sleep(0.05)
    raise AssertionError(f"the progress bar never showed a value in [{low}, {high}]")


def _wait_painted_canvas(page, width: int, timeout_s: float = 30.0) -> None:
    """Wait until a visible canvas about ``width`` px wide is painted (not one flat colour)."""
    from PIL import Image

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        cv = page.locator("canvas")
        for i in range(cv.count()):
            c = cv.nth(i)
            box = c.bounding_box()
            if box and abs(box["width"] - width) < 60 and c.is_visible():
                c.scroll_into_view_if_needed()
                px = np.array(Image.open(io.BytesIO(c.screenshot())).convert("RGB")).astype(int)
                if px.std() > 10:
                    return
        time.sleep(0.5)
    raise AssertionError(f"no painted canvas ~{width} px wide within {timeout_s} s")


def test_scene_progress_cancel_resume_and_copied_code(page, server, data_root) -> None:
    import rasterio

    from tests.helpers.scenes import write_s2_series

    write_s2_series(data_root / "big", 200, 200, seed=3)  # 2 km x 2 km of S2 at 10 m: 4 km2, 3 dates
    page.get_by_text("Your own raster", exact=True).click()
    page.get_by_placeholder("scene.tif or s2/*.tif").fill("big/*.tif")
    page.get_by_role("button", name="Open raster").click()
    wait_status(page, "Status: tile r000c000:")
    scene = page.get_by_placeholder("scene.tif", exact=True)
    run = page.get_by_role("button", name="Map the whole scene (resumes a cancelled run)")
    scene.fill("full.tif")
    run.click()
    page.get_by_text("scene written to").first.wait_for()
    assert page.locator("progress").first.get_attribute("value") == "100"
    _wait_painted_canvas(page, width=420)  # the scene's PCA map is drawn under the form
    shot(page, "12-scene")
    scene.fill("resumed.tif")
    run.click()
    _wait_progress(page, 1, 60)  # the first windows are done: cancel mid-run
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_text("scene run cancelled").first.wait_for()
    shot(page, "13-scene-cancelled")
    out = Path(server["output_root"])
    assert not (out / "resumed.tif").exists()
    run.click()
    page.get_by_text("resumed.tif (").first.wait_for()
    with rasterio.open(out / "full.tif") as a, rasterio.open(out / "resumed.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())

    # the view as code, run in a subprocess, reproduces the view's PCA colours (exported from the page)
    page.locator("select:has(option[value='prediction'])").first.select_option("pca")
    page.get_by_placeholder("scene.tif", exact=True).fill("")
    page.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text("pca written to").first.wait_for()
    page.get_by_role("button", name="Copy as code").click()
    code = page.locator("pre").filter(has_text="import anysat_core as ac").first.inner_text()
    script = out / "view.py"
    script.write_text(code + "\nimport numpy as np\nnp.save(" + repr(str(out / "rgb.npy")) + ", rgb.values)\n")
    subprocess.run([sys.executable, str(script)], check=True, timeout=300, cwd=ROOT)
    exported = next(p for p in out.glob("*pca*.tif"))
    with rasterio.open(exported) as src:
        np.testing.assert_allclose(np.load(out / "rgb.npy"), src.read(), atol=1e-5)


@pytest.fixture(scope="module")
def forgetful_server(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """A server that drops a session its page has not connected to within 1 ms (checked every 100 ms)."""
    yield from _serve(tmp_path_factory, data_root, "--check-unused-sessions", "100", "--unused-session-lifetime", "1")


def test_a_session_rebuilt_from_its_websocket_still_loads_everything_from_this_server(
    browser, forgetful_server
) -> None:
    """Under load Bokeh drops a session whose page has not connected yet and rebuilds it from the websocket alone;
    the rebuilt page must not point at a CDN (offline, every such stylesheet failed). With ``forgetful_server``
    every page takes that path."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    elsewhere: list[str] = []
    errors: list[str] = []
    local = ("http://127.0.0.1", "blob:http://127.0.0.1", "data:")
    page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(local) else None)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(forgetful_server["url"])
    page.get_by_text("Status: tile r00c00").first.wait_for()
    time.sleep(1.0)
    shot(page, "00-rebuilt-session")
    assert elsewhere == [], elsewhere[:5]
    assert errors == []
    assert map_pixels(page).std() > 10, "the map canvas is blank"
    page.close()
