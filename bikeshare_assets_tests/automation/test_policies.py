"""What the definitions declare, read back from the asset specs Dagster serves: each asset's
automation condition and its label, each freshness policy and its windows, and the
automation sensors with the status they start in."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from bikeshare_assets.automation.policies import (
    CONDITIONS,
    RETRAIN_CRON,
    automation_sensor_name,
)
from bikeshare_assets.definitions import build_definitions
from bikeshare_assets_tests.automation.ticks import live_definitions
from bikeshare_assets_tests.conftest import REPO, VENV_BIN, settings_for, write_cities

RAW = ("raw_station_information", "raw_station_status", "raw_weather")
# asset -> words its condition's label must say (the UI shows the label beside the asset)
LABELS = {
    "station_features": "follows raw_station_status: once per snapshot",
    "stockout_labels": "matures at t + 30 min",
    "stockout_predictions": "follows station_features: once per snapshot",
    "prediction_outcomes": "follows matured labels",
    "drift_report": "follows the hour's predictions: once per hour",
    "stockout_model": f"retrains daily at {RETRAIN_CRON} (Europe/Paris)",
    "model_quality": "re-measured hourly",
    "registered_model_version": "follows stockout_model",
    "model_endpoint": "once the promotion gate passed",
}
MIN = timedelta(minutes=1)


def specs(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    return {spec.key.path[-1]: spec for spec in defs.resolve_all_asset_specs()}


def freshness_windows(spec: dg.AssetSpec) -> tuple[timedelta, timedelta] | None:
    policy = spec.freshness_policy
    if policy is None:
        return None
    return policy.fail_window.to_timedelta(), policy.warn_window.to_timedelta()


def test_every_downstream_asset_has_its_labelled_condition_raw_keeps_its_schedule(
    home: Path, tmp_path: Path
) -> None:
    by_name = specs(live_definitions(home, tmp_path, with_drift_report=True))

    for name in RAW:
        assert by_name[name].automation_condition is None, name
    labelled = {
        name: spec.automation_condition.get_label()
        for name, spec in by_name.items()
        if spec.automation_condition is not None
    }
    assert sorted(labelled) == sorted(LABELS) == sorted(CONDITIONS)
    for name, words in LABELS.items():
        assert words in labelled[name], (name, labelled[name])


def test_live_freshness_policies_follow_the_city_cadence(home: Path, tmp_path: Path) -> None:
    by_name = specs(live_definitions(home, tmp_path, with_drift_report=True))

    windows = {n: freshness_windows(s) for n, s in by_name.items() if s.freshness_policy}
    assert windows == {
        # (fail, warn); 5-minute cadence
        "raw_station_status": (8 * MIN, 6 * MIN),
        "stockout_predictions": (10 * MIN, 7 * MIN),
        "drift_report": (timedelta(hours=2), 75 * MIN),
        "stockout_model": (timedelta(days=2), timedelta(hours=26)),
        "registered_model_version": (timedelta(days=2), timedelta(hours=26)),
    }


def test_a_slower_city_gets_its_own_raw_window(home: Path, tmp_path: Path) -> None:
    cities = write_cities(tmp_path / "slow.toml", cadence_minutes=15)
    by_name = specs(build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="live")))

    assert freshness_windows(by_name["raw_station_status"]) == (18 * MIN, 16 * MIN)
    assert freshness_windows(by_name["stockout_predictions"]) == (20 * MIN, 17 * MIN)


def test_the_local_replay_declares_conditions_but_no_freshness(home: Path) -> None:
    by_name = specs(build_definitions(settings_for(home)))

    # Nothing refreshes a replay by itself: a policy would only ever say FAIL there.
    assert [n for n, s in by_name.items() if s.freshness_policy] == []
    assert by_name["station_features"].automation_condition is not None


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({}, dg.DefaultSensorStatus.STOPPED),  # local, recorded or simulated: driven by hand
        ({"BIKESHARE_SOURCE": "live"}, dg.DefaultSensorStatus.RUNNING),
        (
            {
                "BIKESHARE_DEPLOYMENT": "staging",
                "BIKESHARE_STORAGE_ROOT": "s3://bucket/prefix",
                "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/mlflow",
            },
            dg.DefaultSensorStatus.RUNNING,
        ),
    ],
    ids=["replay", "live", "staging"],
)
def test_one_automation_sensor_per_city_running_only_where_the_loop_runs_itself(
    home: Path, tmp_path: Path, overrides: dict[str, str], status: dg.DefaultSensorStatus
) -> None:
    cities = write_cities(
        tmp_path / "c.toml", simulate={"stations": 5, "days": 1, "start": "2026-01-05-00:00"}
    )
    lyon = write_cities(
        tmp_path / "lyon.toml",
        key="lyon",
        simulate={"stations": 5, "days": 1, "start": "2026-01-05-00:00"},
    )
    cities.write_text(cities.read_text() + "\n" + lyon.read_text())
    source = overrides.get("BIKESHARE_SOURCE", "simulate")
    defs = build_definitions(
        settings_for(home, cities, **{**overrides, "BIKESHARE_SOURCE": source})
    )
    repo = defs.get_repository_def()

    sensors = {
        s.name: s for s in repo.sensor_defs if isinstance(s, dg.AutomationConditionSensorDefinition)
    }
    assert sorted(sensors) == [automation_sensor_name("lyon"), automation_sensor_name("paris")]
    assert {s.default_status for s in sensors.values()} == {status}
    # Each city's sensor evaluates its own assets, all of them, and no other city's.
    graph = repo.asset_graph
    for city in ("lyon", "paris"):
        targeted = sensors[automation_sensor_name(city)].asset_selection.resolve(graph)
        assert targeted == {k for k in graph.get_all_asset_keys() if k.path[0] == city}
    # Several partitions in one tick are runs, not a backfill that fails whole when a
    # lookback reaches before the live start (policies.automation_sensors).
    assert {s.emit_backfills for s in sensors.values()} == {False}


def test_dagster_validates_the_live_code_location_with_its_automation(
    home: Path, tmp_path: Path
) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    cities = write_cities(tmp_path / "live.toml", live_start="2026-11-30-00:00")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_SOURCE": "live",
        "BIKESHARE_CITIES_FILE": str(cities),
    }
    command = [str(VENV_BIN / "dagster"), "definitions", "validate"]
    proc = subprocess.run(
        [*command, "-m", "bikeshare_assets.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr
