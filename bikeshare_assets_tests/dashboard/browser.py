"""The dashboard in a real browser: `bikeshare dashboard` started as a user starts it, and
headless Chromium (Debian's `chromium` + `chromium-driver`, installed by .ci/run) driven by
selenium. Shared by the browser test and the dashboard benchmark."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from bikeshare_assets_tests.conftest import REPO, VENV_BIN

CHROMEDRIVER = Path("/usr/bin/chromedriver")
# page title (h1 starts with it) -> URL path; the risk map is the default page ("/")
PAGES = {
    "Risk map": "",
    "Dispatch list": "dispatch",
    "Model health": "model-health",
    "Drift": "drift",
    "System health": "system-health",
}
VEGA = '[data-testid="stVegaLiteChart"]'
# The risk map is a Vega-Lite chart whose station layers are named (app/views/risk_map.py):
# their dots are the SVG paths of marks of class `stations_marks` / `out_now_marks`.
MAP = f"{VEGA}:has(g.stations_marks)"
# What shows that a page finished drawing its content, beyond Streamlit's "not running"
# state and the title: every selector must match. Streamlit loads each chart's and table's
# code lazily and shows a skeleton meanwhile, so the element's own drawing surface is
# waited for: the data grid's canvas, Vega's SVG (for the map: its station marks drawn).
READY = {
    # any dot of either layer: Vega's SVG renderer draws the whole scene in one pass, and a
    # snapshot may have no station fine now (or none out now)
    "Risk map": [f"{VEGA} g.stations_marks path, {VEGA} g.out_now_marks path"],
    "Dispatch list": ['[data-testid="stDataFrame"] canvas'],
    "Model health": [
        f"{VEGA} svg.marks",
        '[data-testid="stDataFrame"] canvas',
    ],
    "System health": [
        '[data-testid="stDataFrame"] canvas',
        f"{VEGA} svg.marks",
    ],
}


def browser_missing() -> str | None:
    if not CHROMEDRIVER.exists() or shutil.which("chromium") is None:
        return "headless Chromium is not installed: apt-get install -y chromium chromium-driver"
    return None


@contextmanager
def dashboard_server(
    env: dict[str, str], port: int, startup_s: float = 90, app: Path | None = None
) -> Iterator[str]:
    """`bikeshare dashboard --port <port>` in its own process group (or another Streamlit
    `app` served with the same options); stopped whatever happens."""
    from bikeshare_assets.cli import streamlit_command

    command = (
        [str(VENV_BIN / "bikeshare"), "dashboard", "--port", str(port)]
        if app is None
        else streamlit_command(app, "127.0.0.1", port)
    )
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"bikeshare dashboard exited with {proc.returncode}: {proc.stdout.read()}"  # type: ignore[union-attr]
                )
            try:
                if requests.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bikeshare dashboard did not answer within {startup_s:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def chrome(webgl: bool = False, width: int = 1440, height: int = 1300, profile: Path | None = None):
    """Headless Chromium, GPU off (software compositing), as on a machine without a GPU: the
    dashboard needs no WebGL. `webgl=True` turns on software WebGL (SwiftShader), which only
    the street map (deck.gl, online) would need; it makes every page slower here (its GPU
    process composites through SwiftShader). Every host but 127.0.0.1 resolves to nothing:
    the test is offline and waits on no tile server. With a `profile` folder, sessions
    share one HTTP cache, as a returning user's browser does."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        *((f"--user-data-dir={profile}",) if profile else ()),
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        *(
            ("--enable-unsafe-swiftshader", "--use-angle=swiftshader")
            if webgl
            else ("--disable-gpu",)
        ),
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver


RENDERED_JS = """
const [title, ready] = arguments;
const app = document.querySelector('[data-testid="stApp"]');
if (!app || app.getAttribute("data-test-script-state") !== "notRunning") return false;
if (![...document.querySelectorAll("h1")].some(h => h.innerText.startsWith(title))) return false;
return ready.every(s => document.querySelector(s) !== null);
"""


def rendered(driver, title: str, marker: bool = True) -> bool:
    """Streamlit finished the run of page `title` and drew what the page is about (READY;
    the risk map's stations drawn by Vega). One script call per poll: a WebDriver round
    trip per element costs tens of milliseconds on a loaded machine, which the benchmark
    would count as page time."""
    ready = READY.get(title, []) if marker else []
    return bool(driver.execute_script(RENDERED_JS, title, ready))


def wait_rendered(driver, title: str, timeout_s: float = 90, marker: bool = True) -> float:
    """Seconds until page `title` is rendered (polling every 20 ms)."""
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.perf_counter()
    WebDriverWait(driver, timeout_s, poll_frequency=0.02).until(
        lambda d: rendered(d, title, marker)
    )
    return time.perf_counter() - started


def load(driver, base_url: str, title: str, timeout_s: float = 90) -> float:
    """Open page `title` by URL in this browser session; seconds until rendered."""
    started = time.perf_counter()
    driver.get(f"{base_url}/{PAGES[title]}")
    wait_rendered(driver, title, timeout_s)
    return time.perf_counter() - started


def switch(driver, title: str, timeout_s: float = 60) -> float:
    """Click the sidebar link to page `title` (Streamlit switches without reloading);
    seconds until it is rendered (the risk map: until its stations are drawn again; no
    other page's chart has station marks)."""
    from selenium.webdriver.common.by import By

    link = next(
        a
        for a in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')
        if a.text.strip().endswith(title)
    )
    started = time.perf_counter()
    link.click()
    wait_rendered(driver, title, timeout_s)
    return time.perf_counter() - started


def map_station_share(driver) -> float:
    """Share of the map's pixels in a station colour (saturated: green, amber, red) in a
    screenshot of the chart: ~0 when nothing was drawn, ~1 when stations are drawn as discs
    covering the city, a few percent when each station is a dot."""
    from io import BytesIO

    from PIL import Image
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, f"{MAP} svg.marks")
    box = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]",
        canvas,
    )
    clip = dict(zip(("x", "y", "width", "height"), box, strict=True), scale=1)
    data = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
    )["data"]
    image = Image.open(BytesIO(base64.b64decode(data))).convert("HSV")
    saturation = image.getchannel("S")
    coloured = sum(saturation.point(lambda v: 255 if v > 100 else 0).histogram()[255:])
    return coloured / (image.width * image.height)


def map_dots(driver) -> int:
    """Stations drawn on the risk map: the dots of its two named layers."""
    return driver.execute_script(
        "return document.querySelectorAll(arguments[0]).length",
        f"{MAP} g.stations_marks path, {MAP} g.out_now_marks path",
    )


def page_errors(driver) -> list[str]:
    """Streamlit exception elements and tracebacks on the page."""
    from selenium.webdriver.common.by import By

    found = [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]
    body = driver.find_element(By.TAG_NAME, "body").text
    if "Traceback (most recent call last)" in body:
        found.append(body)
    return found


def screenshot(driver, path: Path) -> Path:
    """A PNG of the viewport (Chrome DevTools Protocol)."""
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data))
    return path
