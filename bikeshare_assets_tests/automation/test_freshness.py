"""Freshness policies, evaluated by Dagster's own FreshnessDaemon (the one `dagster dev` and
`dagster-daemon` run) against the project's code location loaded in process: a stale asset
goes WARN, then FAIL, at the windows automation/policies.py declares."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from bikeshare_assets_tests.automation.ticks import LIVE_START, key
from bikeshare_assets_tests.conftest import REPO, write_cities

CODE_LOCATION = """
from bikeshare_assets.definitions import build_definitions
from bikeshare_assets.settings import get_settings

defs = build_definitions(get_settings())
"""


@pytest.fixture
def live_workspace(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dg.DagsterInstance, WorkspaceProcessContext]]:
    """The code location in live mode (5-minute cadence), loaded the way the daemon loads it,
    with a real temporary instance."""
    cities = write_cities(tmp_path / "live.toml", live_start=LIVE_START)
    monkeypatch.setenv("BIKESHARE_HOME", str(home))
    monkeypatch.setenv("BIKESHARE_CITIES_FILE", str(cities))
    monkeypatch.setenv("BIKESHARE_SOURCE", "live")
    location = tmp_path / "location.py"
    location.write_text(CODE_LOCATION)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            python_file=str(location), attribute="defs", working_directory=str(REPO)
        ),
        location_name="bikeshare",
    )
    with (
        dg.instance_for_test() as instance,
        create_test_daemon_workspace_context(
            InProcessWorkspaceLoadTarget(origin), instance
        ) as context,
    ):
        yield instance, context


def states_after(
    instance: dg.DagsterInstance,
    context: WorkspaceProcessContext,
    landed_at: float,
    elapsed: timedelta,
    names: list[str],
) -> dict[str, FreshnessState]:
    """One FreshnessDaemon iteration `elapsed` after `landed_at`: each asset's state."""
    with freeze_time(landed_at + elapsed.total_seconds()):
        list(FreshnessDaemon().run_iteration(context))
    records = instance.get_freshness_state_records([key(n) for n in names])
    return {n: records[key(n)].freshness_state for n in names}


def test_stale_assets_go_warn_then_fail_at_their_declared_windows(live_workspace) -> None:
    instance, context = live_workspace
    names = ["raw_station_status", "stockout_predictions", "stockout_model"]
    for name, partition in zip(
        names, ["2026-12-01-09:55", "2026-12-01-09:55", "2026-12-01"], strict=True
    ):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=key(name), partition=partition)
        )
    landed = instance.get_latest_materialization_event(key(names[-1])).timestamp
    minutes = lambda m: timedelta(minutes=m)  # noqa: E731
    P, W, F = FreshnessState.PASS, FreshnessState.WARN, FreshnessState.FAIL

    # 5-minute cadence: raw warns at 6 min and fails at 8; predictions warn at 7, fail at 10;
    # the daily model warns at 26 h and fails at 2 days.
    expected = {
        minutes(1): [P, P, P],
        minutes(6.5): [W, P, P],
        minutes(8.5): [F, W, P],
        minutes(10.5): [F, F, P],
        timedelta(hours=27): [F, F, W],
        timedelta(days=2, minutes=1): [F, F, F],
    }
    for elapsed, states in expected.items():
        assert states_after(instance, context, landed, elapsed, names) == dict(
            zip(names, states, strict=True)
        ), elapsed


def test_an_asset_without_a_policy_is_not_judged(live_workspace) -> None:
    instance, context = live_workspace
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=key("station_features"), partition="2026-12-01-09:55")
    )
    landed = instance.get_latest_materialization_event(key("station_features")).timestamp

    state = states_after(instance, context, landed, timedelta(days=3), ["station_features"])

    assert state == {"station_features": FreshnessState.NOT_APPLICABLE}
