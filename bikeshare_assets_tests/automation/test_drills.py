"""The drills (issue 8 item 7) as tests: one real drill stack — the local live feed at a
1-minute cadence, `dagster dev` (daemon: schedules, automation, sensors, freshness), the
Paris champion served by a real scoring process — and a real HTTP stand-in for Slack. Each
drill breaks something and checks what an on-call engineer would see and what the system did.

Slow (real time on a 1-minute cadence, mostly waiting): marked `slow`, so a bare `pytest`
leaves them out (pyproject's addopts); `make test` (and so CI) runs them in a second pytest
beside the suite, `make drills` alone. The champion is trained on the recorded day the
feed serves (drill_champion.py), so drift is measured against what the model saw.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bikeshare_assets.automation.drills import (
    DrillStack,
    drift_drill,
    drill_stack,
    endpoint_drill,
    outage_drill,
    wait_steady,
)
from bikeshare_assets.settings import get_settings
from bikeshare_assets_tests.automation.drill_champion import register_paris_champion
from bikeshare_assets_tests.conftest import free_port
from bikeshare_assets_tests.serving.champions import tracking_in
from bikeshare_assets_tests.support.slack_server import SlackServer

# The stack starts inside the first test (module fixture): its timeout covers the start too.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TOKEN = "xoxb-drill-token"


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slack) -> Iterator[DrillStack]:
    home = tmp_path_factory.mktemp("drills") / "bikeshare"
    ports = f"{free_port()},{free_port()}"
    env = {
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_SLACK_TOKEN": TOKEN,
        "BIKESHARE_SLACK_API_URL": slack.api_url,
        "BIKESHARE_ENDPOINT_PORTS": ports,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("BIKESHARE_", "AWS_", "MLFLOW_")) or name == "DAGSTER_HOME":
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        base = get_settings(dict(os.environ))
        register_paris_champion(tracking_in(home / "mlflow"), home.parent / "champion", cadence=1)
        with drill_stack(base, cadence=1, drift_window=2, extra_env=env) as running:
            yield running


def test_feed_outage_is_one_alert_one_resolution_gaps_recorded_and_caught_up(stack, slack):
    wait_steady(stack, print)
    before = len(slack.messages)
    report = outage_drill(stack, print)
    print("\n".join(report.lines()))
    assert report.passed, "\n".join(report.lines())
    posted = [m["text"] for m in slack.messages[before:]]
    assert len(posted) == 2, posted
    assert "failing" in posted[0] and "raw_station_status" in posted[0]
    assert "resolved" in posted[1] and "caught up" in posted[1]
    assert report.time_to_alert_s is not None and report.time_to_recovery_s is not None


def test_a_killed_endpoint_falls_back_is_redeployed_and_scores_again(stack, slack):
    wait_steady(stack, print)
    before = len(slack.messages)
    report = endpoint_drill(stack, print)
    print("\n".join(report.lines()))
    assert report.passed, "\n".join(report.lines())
    posted = [m["text"] for m in slack.messages[before:]]
    assert len(posted) == 2, posted
    assert "heal_endpoint" in posted[0] or "re-deploy" in posted[0]
    assert "resolved" in posted[1] and "re-deployed" in posted[1]


def test_drift_fails_the_report_triggers_a_retrain_and_the_champion_keeps_serving(stack, slack):
    wait_steady(stack, print)
    before = len(slack.messages)
    report = drift_drill(stack, print)
    print("\n".join(report.lines()))
    assert report.passed, "\n".join(report.lines())
    posted = [m["text"] for m in slack.messages[before:]]
    assert "feature_drift" in posted[0], posted
    # The retrain on minutes of live data is refused, with the step and its error named.
    assert any("refused" in text and "champion keeps serving" in text for text in posted), posted
    assert "resolved" in posted[-1], posted
    assert report.time_to_alert_s is not None and report.time_to_recovery_s is not None
