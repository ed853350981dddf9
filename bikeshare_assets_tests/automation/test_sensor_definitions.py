"""The sensors and the alerts resource in the code location: on by themselves in live mode
(and on staging/prod), stopped in the embedded replay; the alert channel built from settings
without putting a secret in the definitions."""

from __future__ import annotations

import dagster as dg

from bikeshare_assets.automation.alerts import ALERT_SENSOR_NAME, ALERTS_RESOURCE_KEY
from bikeshare_assets.definitions import build_definitions
from bikeshare_assets_tests.conftest import settings_for, write_cities

SENSORS = [
    ALERT_SENSOR_NAME,
    "paris_heal_endpoint",
    "paris_heal_missing_partitions",
    "paris_heal_model",
]


def _sensors(defs: dg.Definitions) -> dict[str, dg.SensorDefinition]:
    """The healing and alert sensors (the automation-condition sensors: test_policies.py)."""
    return {
        s.name: s
        for s in defs.get_repository_def().sensor_defs
        if not isinstance(s, dg.AutomationConditionSensorDefinition)
    }


def test_replay_has_the_sensors_stopped(home):
    sensors = _sensors(build_definitions(settings_for(home)))
    assert sorted(sensors) == SENSORS
    assert {s.default_status for s in sensors.values()} == {dg.DefaultSensorStatus.STOPPED}
    assert all(ALERTS_RESOURCE_KEY in s.required_resource_keys for s in sensors.values())


def test_live_mode_runs_the_sensors(home, tmp_path):
    cities = write_cities(tmp_path / "live.toml", gbfs_url="http://127.0.0.1:9/gbfs.json")
    sensors = _sensors(build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="live")))
    assert sorted(sensors) == SENSORS
    assert {s.default_status for s in sensors.values()} == {dg.DefaultSensorStatus.RUNNING}


def test_the_slack_token_is_an_env_var_in_the_definitions(home, monkeypatch):
    monkeypatch.setenv("BIKESHARE_SLACK_TOKEN", "xoxb-never-in-defs")
    settings = settings_for(home, BIKESHARE_SLACK_TOKEN="xoxb-never-in-defs")
    assert "xoxb-never-in-defs" not in repr(settings)
    defs = build_definitions(settings)
    channel = defs.resources[ALERTS_RESOURCE_KEY]
    assert isinstance(channel.slack_token, dg.EnvVar)
    assert "xoxb-never-in-defs" not in repr(channel)
    assert channel.alerts_file == str(home / "alerts" / "alerts.jsonl")
