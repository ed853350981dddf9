"""The feed-outage drill, on a live stack of its own (conftest.py): `make test` runs this
module and test_drills.py (which says what the drills are) side by side, so the outage's
nine minutes overlap the other two drills."""

from __future__ import annotations

import pytest

from bikeshare_assets.automation.drills import outage_drill
from bikeshare_assets_tests.automation.conftest import run_drill

# The stack starts inside the first test (module fixture, conftest.py): the timeout covers it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_feed_outage_is_one_alert_one_resolution_gaps_recorded_and_caught_up(stack, slack):
    _, posted = run_drill(stack, slack, outage_drill)
    assert len(posted) == 2, posted
    assert "failing" in posted[0] and "raw_station_status" in posted[0]
    assert "resolved" in posted[1] and "caught up" in posted[1]
