"""The drills (issue 8 item 7) as tests: a real drill stack (conftest.py) — the local live
feed at a 1-minute cadence, `dagster dev` (daemon: schedules, automation, sensors,
freshness), the Paris champion served by a real scoring process — and a real HTTP stand-in
for Slack. Each drill breaks something and checks what an on-call engineer would see and
what the system did.

One stack, the drills in this order (pytest keeps a module's order): the feed outage, a
killed endpoint, then drifted data. Each starts once the loop is steady again (every window
scored, no incident open). Drift goes last: its model incident resolves only once the
drift windows pass again, which the drill does not wait for.

Slow (~15 min of real time on a 1-minute cadence, mostly waiting): marked `slow`, so a bare
`pytest` leaves them out (pyproject's addopts). `make test` runs them beside the suite, the
suite at nice 19 (bikeshare_assets_tests/__main__.py); `make drills` runs them alone.

The champion is trained on what the feed serves around now (drill_champion.py), so drift is
measured against what the model saw.
"""

from __future__ import annotations

import pytest

from bikeshare_assets.automation.drills import drift_drill, endpoint_drill, outage_drill
from bikeshare_assets_tests.automation.conftest import run_drill

# The stack starts inside the first test (module fixture, conftest.py): the timeout covers it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_feed_outage_is_one_alert_one_resolution_gaps_recorded_and_caught_up(stack, slack):
    _, posted = run_drill(stack, slack, outage_drill)
    assert len(posted) == 2, posted
    assert "failing" in posted[0] and "raw_station_status" in posted[0]
    assert "resolved" in posted[1] and "caught up" in posted[1]


def test_a_killed_endpoint_falls_back_is_redeployed_and_scores_again(stack, slack):
    _, posted = run_drill(stack, slack, endpoint_drill)
    assert len(posted) == 2, posted
    assert "heal_endpoint" in posted[0] or "re-deploy" in posted[0]
    assert "resolved" in posted[1] and "re-deployed" in posted[1]


def test_drift_fails_the_report_triggers_a_retrain_and_the_champion_keeps_serving(stack, slack):
    _, posted = run_drill(stack, slack, drift_drill)
    assert "feature_drift" in posted[0], posted
    # The retrain on minutes of live data is refused, with the step and its error named.
    assert any("refused" in text and "champion keeps serving" in text for text in posted), posted
