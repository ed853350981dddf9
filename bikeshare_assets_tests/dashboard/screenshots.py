"""`python -m bikeshare_assets_tests.dashboard.screenshots [OUT]`: screenshots of every
dashboard page on the outputs in $BIKESHARE_HOME (the demo's), for docs/dashboard.md —
the same server, browser and waits as the browser test."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bikeshare_assets_tests.conftest import REPO, free_port
from bikeshare_assets_tests.dashboard import browser


def main(out: Path) -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith(("BIKESHARE_", "DAGSTER_"))}
    with browser.dashboard_server(env, free_port()) as url:
        for title in browser.PAGES:
            driver = browser.chrome()
            try:
                browser.load(driver, url, title)
                errors = browser.page_errors(driver)
                if errors:
                    print(f"{title}: {errors}", file=sys.stderr)
                    return 1
                if title == "Risk map":
                    deadline = time.monotonic() + 30  # the map's dots drawn
                    while browser.map_station_share(driver) == 0 and time.monotonic() < deadline:
                        time.sleep(0.2)
                path = browser.screenshot(driver, out / (title.lower().replace(" ", "_") + ".png"))
                print(path)
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs/img/dashboard"))
