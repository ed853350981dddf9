"""The drills (issue 8 item 7) as tests: one real drill stack — the local live feed at a
1-minute cadence, `dagster dev` (daemon: schedules, automation, sensors, freshness), the
Paris champion served by a real scoring process — and a real HTTP stand-in for Slack. Each
drill breaks something and checks what an on-call engineer would see and what the system did.

Slow (about 15 minutes of real time on 2 cores): marked `slow`, deselected by default
(pyproject's addopts) so `make test` and CI stay inside their budget; `make drills` runs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bikeshare_assets.automation.drills import (
    DrillStack,
    drill_stack,
    endpoint_drill,
    outage_drill,
    wait_steady,
)
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.settings import get_settings
from bikeshare_assets_tests.conftest import free_port
from bikeshare_assets_tests.serving.champions import (
    log_and_promote,
    simulated_dataset,
    tracking_in,
    train_boosters,
)
from bikeshare_assets_tests.support.slack_server import SlackServer

# The stack starts inside the first test (module fixture): its timeout covers the start too.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TOKEN = "xoxb-drill-token"


def _register_paris_champion(home: Path) -> None:
    """A small real champion for Paris in the registry under `home` (the pipeline's own
    logging, registration and promotion; trained on a simulated day: the drills test the
    loop, not the model)."""
    features, labels = simulated_dataset(stations=120)
    tracking = tracking_in(home / "mlflow")
    boosters = train_boosters(features, labels, rounds=4)
    snapshot = features.filter(features["snapshot_at"] == features["snapshot_at"].max())
    for target in TARGETS:
        log_and_promote(tracking, "paris", target, boosters[target], 0.3, snapshot)


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
        _register_paris_champion(home)
        with drill_stack(base, cadence=1, extra_env=env) as running:
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
