"""The dashboard in a real browser: `bikeshare dashboard` on real pipeline outputs, every
page opened in headless Chromium, rendered, free of Streamlit exceptions, screenshotted.

Screenshots go to the test's folder, and to $DASHBOARD_SCREENSHOTS when set
(docs/dashboard.md's images: `DASHBOARD_SCREENSHOTS=docs/img/dashboard pytest
bikeshare_assets_tests/dashboard/test_browser.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bikeshare_assets_tests.conftest import free_port
from bikeshare_assets_tests.dashboard import browser
from bikeshare_assets_tests.dashboard.demo_outputs import DemoOutputs

pytestmark = pytest.mark.skipif(
    browser.browser_missing() is not None, reason=str(browser.browser_missing())
)


def shot_name(title: str) -> str:
    return title.lower().replace(" ", "_") + ".png"


def test_every_page_renders_in_chromium(demo_outputs: DemoOutputs, tmp_path: Path) -> None:
    targets = [tmp_path / "screenshots"]
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        targets.append(Path(os.environ["DASHBOARD_SCREENSHOTS"]))
    with browser.dashboard_server(demo_outputs.env, free_port()) as url:
        driver = browser.chrome(webgl=True)
        try:
            for title in browser.PAGES:
                browser.load(driver, url, title)
                assert browser.page_errors(driver) == [], title
                if title == "Risk map":
                    browser.wait_map_drawn(driver)
                    # SwiftShader draws the map (the canvas exists) but cannot hand a
                    # screenshot of a full-city WebGL layer back in time: see below.
                    continue
                for folder in targets:
                    assert (
                        browser.screenshot(driver, folder / shot_name(title)).stat().st_size
                        > 10_000
                    )
            # navigating by the sidebar works too, and comes back to a drawn map
            browser.switch(driver, "Dispatch list")
            browser.switch(driver, "Risk map")
            browser.wait_map_drawn(driver)
            assert browser.page_errors(driver) == []
        finally:
            driver.quit()
        # the risk map's screenshot from a browser without WebGL: the page, its numbers and
        # controls (the map layer itself needs a GPU or a real browser)
        plain = browser.chrome(webgl=False)
        try:
            plain.get(url)
            browser.wait_rendered(plain, "Risk map", marker=False)
            assert browser.page_errors(plain) == []
            for folder in targets:
                browser.screenshot(plain, folder / shot_name("Risk map"))
        finally:
            plain.quit()
    for folder in targets:
        assert sorted(p.name for p in folder.glob("*.png")) >= sorted(
            shot_name(t) for t in browser.PAGES
        )
