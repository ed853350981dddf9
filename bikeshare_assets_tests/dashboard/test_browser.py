"""The dashboard in a real browser: `bikeshare dashboard` on real pipeline outputs, every
page opened in headless Chromium, rendered, free of Streamlit exceptions, screenshotted.

Screenshots go to the test's folder, and to $DASHBOARD_SCREENSHOTS when set
(docs/dashboard.md's images: `DASHBOARD_SCREENSHOTS=docs/img/dashboard pytest
bikeshare_assets_tests/dashboard/test_browser.py`).
"""

from __future__ import annotations

import os
import time
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


def wait_for_stations(driver, timeout_s: float = 30) -> float:
    """The map's share of station-coloured pixels once Vega drew it."""
    deadline = time.monotonic() + timeout_s
    while (share := browser.map_station_share(driver)) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return share


def test_every_page_renders_in_chromium(demo_outputs: DemoOutputs, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    targets = [tmp_path / "screenshots"]
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        targets.append(Path(os.environ["DASHBOARD_SCREENSHOTS"]))
    with browser.dashboard_server(demo_outputs.env, free_port()) as url:
        driver = browser.chrome()
        try:
            for title in browser.PAGES:
                browser.load(driver, url, title)
                assert browser.page_errors(driver) == [], title
                if title == "Risk map":
                    # load() waited for Vega to draw the stations: one dot per scored
                    # station, a few percent of the map in colour, neither empty nor one
                    # city-sized disc
                    scored = driver.find_element(
                        By.XPATH, '//*[@data-testid="stMetric"][contains(., "Stations scored")]'
                    ).text.split()[-1]
                    assert browser.map_dots(driver) == int(scored) > 0
                    share = wait_for_stations(driver)
                    assert 0.005 < share < 0.4, f"{share:.1%} of the map in station colours"
                for folder in targets:
                    assert (
                        browser.screenshot(driver, folder / shot_name(title)).stat().st_size
                        > 10_000
                    )
            # navigating by the sidebar works too, and comes back to a drawn map
            browser.switch(driver, "Dispatch list")
            browser.switch(driver, "Risk map")  # waits for the stations drawn again
            assert 0.005 < wait_for_stations(driver) < 0.4
            assert browser.page_errors(driver) == []
        finally:
            driver.quit()
    for folder in targets:
        assert sorted(p.name for p in folder.glob("*.png")) >= sorted(
            shot_name(t) for t in browser.PAGES
        )
