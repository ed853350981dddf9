"""The drill stack as a module fixture: one live stack for the drills of test_drills.py,
started once (the stack's start — champion, first partitions, `dagster dev` — takes minutes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from bikeshare_assets.automation.drills import DrillReport, DrillStack, drill_stack, wait_steady
from bikeshare_assets.settings import get_settings
from bikeshare_assets_tests.automation.drill_champion import register_paris_champion
from bikeshare_assets_tests.conftest import free_port
from bikeshare_assets_tests.serving.champions import tracking_in
from bikeshare_assets_tests.support.slack_server import SlackServer

TOKEN = "xoxb-drill-token"


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory, slack) -> Iterator[DrillStack]:
    """A live stack at a 1-minute cadence with 1-minute drift windows, its Slack posts going
    to `slack`, serving a champion trained on what the feed serves around now."""
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
        with drill_stack(base, cadence=1, drift_window=1, extra_env=env) as running:
            yield running


def run_drill(
    stack: DrillStack, slack: SlackServer, drill: Callable[..., DrillReport]
) -> tuple[DrillReport, list[str]]:
    """Wait for a steady loop, run `drill` and print its timeline; fails with the timeline
    when an expectation did not hold. Returns the report and the Slack texts it posted."""
    wait_steady(stack, print)
    before = len(slack.messages)
    report = drill(stack, print)
    print("\n".join(report.lines()))
    assert report.passed, "\n".join(report.lines())
    assert report.time_to_alert_s is not None and report.time_to_recovery_s is not None
    return report, [m["text"] for m in slack.messages[before:]]
