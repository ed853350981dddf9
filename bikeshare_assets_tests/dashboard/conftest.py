"""Dashboard fixtures: one real pipeline slice (session), shared by the AppTest and
browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from bikeshare_assets_tests.conftest import replay_table, utc, write_cities
from bikeshare_assets_tests.dashboard.demo_outputs import DemoOutputs, build_demo_outputs
from bikeshare_assets_tests.serving.servers import free_ports

# 06:00-09:00 UTC on Monday 2025-09-08: the morning peak, so stations empty and fill.
START, END = utc(2025, 9, 8, 6, 0), utc(2025, 9, 8, 9, 0)
LAST = utc(2025, 9, 8, 8, 45)  # the last snapshot partition of [START, END)


@pytest.fixture(scope="session")
def demo_outputs(tmp_path_factory: pytest.TempPathFactory, day_recording_path: Path) -> DemoOutputs:
    root = tmp_path_factory.mktemp("dashboard-demo")
    cities = write_cities(root / "cities.toml", replay=replay_table(day_recording_path, START, END))
    return build_demo_outputs(root / "bikeshare", cities, START, LAST, free_ports(2))
