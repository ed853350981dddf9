"""The alerts sensor against a real instance and a real HTTP stand-in for Slack: one message
per incident, one when it resolves, nothing while it stays failed; the alerts file when Slack
is not configured or fails; secrets never written or printed."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from bikeshare_assets.automation.alerts import (
    ACTION,
    ALERT_SENSOR_NAME,
    RESOLVED,
    Alert,
    read_alerts,
)
from bikeshare_assets_tests.automation.sensor_ticks import Ticker
from bikeshare_assets_tests.automation.sensor_ticks import report_check as _check
from bikeshare_assets_tests.conftest import build_defs, settings_for
from bikeshare_assets_tests.support.slack_server import SlackServer

TOKEN = "xoxb-test-secret-token"
QUALITY = dg.AssetKey(["paris", "model_quality"])
STATUS = dg.AssetKey(["paris", "raw_station_status"])


@pytest.fixture
def slack():
    with SlackServer() as server:
        yield server


def _defs(home: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dg.Definitions:
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the token reaches the resource as a Dagster EnvVar
    return build_defs(settings_for(home, **env))


def test_a_failed_error_check_is_one_message_and_its_recovery_another(
    home, monkeypatch, instance, slack
):
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    ticker.tick()
    assert slack.messages == []

    _check(instance, QUALITY, "quality_above_gate", False, "2025-09-15", bikes_pr_auc_24h=0.12)
    ticker.tick()
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 1, "one message per incident, no repeat while it stays failed"
    first = slack.messages[0]
    assert first["path"] == "/api/chat.postMessage" and first["auth"] == f"Bearer {TOKEN}"
    assert first["channel"] == "#bikeshare-alerts"
    for part in ("paris", "model_quality", "2025-09-15", "quality_above_gate", "0.12"):
        assert part in first["text"]
    assert "heal_model" in first["text"], "says what the system does about it"
    assert (
        "http://127.0.0.1:3000/assets/paris/model_quality?view=partitions&partition=2025-09-15"
        in first["text"]
    )

    # Still failing on the next day: the same incident, no new message.
    _check(instance, QUALITY, "quality_above_gate", False, "2025-09-16", bikes_pr_auc_24h=0.1)
    ticker.tick()
    assert len(slack.messages) == 1

    _check(instance, QUALITY, "quality_above_gate", True, "2025-09-17")
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 2
    assert "resolved" in slack.messages[1]["text"] and "model_quality" in slack.messages[1]["text"]

    records = [r for r in read_alerts(home / "alerts" / "alerts.jsonl") if r["sent"]]
    assert [r["kind"] for r in records] == ["firing", "resolved"]
    assert all(r["delivered"] == "slack_api" for r in records)
    assert TOKEN not in (home / "alerts" / "alerts.jsonl").read_text()


def _run_that_never_evaluates(
    instance: dg.DagsterInstance, key: dg.AssetKey, check: str, partition: str
) -> None:
    """A run of `key` that plans `check` and fails before evaluating it: what the sensor sees
    of the next partition while its run is still going (a planned evaluation, no result)."""

    @dg.asset(
        key=key,
        partitions_def=dg.StaticPartitionsDefinition([partition]),
        check_specs=[dg.AssetCheckSpec(check, asset=key)],
    )
    def next_partition():
        raise RuntimeError("the step fails before its checks are evaluated")

    result = dg.materialize(
        [next_partition], instance=instance, partition_key=partition, raise_on_error=False
    )
    assert not result.success
    newest = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(key, check))
    assert newest is not None and newest.status.value == "PLANNED"


def test_a_planned_evaluation_of_the_next_partition_does_not_resolve_the_incident(
    home, monkeypatch, instance, slack
):
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    drift = dg.AssetKey(["paris", "drift_report"])
    _check(instance, drift, "feature_drift", False, "2025-09-15-10:00", nb_full_share=1.2)
    ticker.tick()
    assert len(slack.messages) == 1 and "feature_drift" in slack.messages[0]["text"]

    def model_incident() -> list[str]:
        records = read_alerts(home / "alerts" / "alerts.jsonl")
        return [r["kind"] for r in records if r["sent"] and r.get("group") == "paris:model"]

    # (The failed run is an incident of its own, alerted as such.)
    _run_that_never_evaluates(instance, drift, "feature_drift", "2025-09-15-11:00")
    for _ in range(3):
        ticker.tick()
    assert model_incident() == ["firing"], "nothing passed: no resolution, no second alert"

    _check(instance, drift, "feature_drift", True, "2025-09-15-12:00")
    ticker.tick()
    ticker.tick()
    assert model_incident() == ["firing", "resolved"]


def test_a_warn_severity_failure_is_not_alerted(home, monkeypatch, instance, slack):
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _check(
        instance, STATUS, "within_capacity", False, "2025-09-15-10:00", dg.AssetCheckSeverity.WARN
    )
    ticker.tick()
    assert slack.messages == []
    _check(instance, STATUS, "within_capacity", False, "2025-09-15-10:15")  # now ERROR
    ticker.tick()
    assert len(slack.messages) == 1 and "within_capacity" in slack.messages[0]["text"]


def _freshness(instance, key, before: FreshnessState, after: FreshnessState) -> None:
    instance.report_runless_asset_event(
        FreshnessStateChange(
            key=key, previous_state=before, new_state=after, state_change_timestamp=1.8e9
        )
    )


def test_freshness_warn_and_fail_transitions_are_alerted_once_each(
    home, monkeypatch, instance, slack
):
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _freshness(instance, STATUS, FreshnessState.PASS, FreshnessState.WARN)
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 1 and "freshness WARN" in slack.messages[0]["text"]
    assert "heal_missing_partitions" in slack.messages[0]["text"]
    _freshness(instance, STATUS, FreshnessState.WARN, FreshnessState.FAIL)
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 2 and "freshness FAIL" in slack.messages[1]["text"]
    assert "raw_station_status" in slack.messages[1]["text"]
    _freshness(instance, STATUS, FreshnessState.FAIL, FreshnessState.PASS)
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 3 and "resolved" in slack.messages[2]["text"]


FLAKY = dg.AssetKey(["paris", "flaky_export"])


def _run(instance: dg.DagsterInstance, fail: bool, partition: str) -> None:
    @dg.asset(key=FLAKY, partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]))
    def flaky_export() -> None:
        if fail:
            raise RuntimeError("the export target answered 503")

    dg.materialize([flaky_export], instance=instance, partition_key=partition, raise_on_error=False)


def test_run_failures_of_one_job_are_one_incident_resolved_by_its_next_success(
    home, monkeypatch, instance, slack
):
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _run(instance, True, "a")
    ticker.tick()
    _run(instance, True, "b")  # the same job failing again, another partition
    ticker.tick()
    assert len(slack.messages) == 1
    assert "flaky_export" in slack.messages[0]["text"]
    assert "the export target answered 503" in slack.messages[0]["text"]
    assert "/runs/" in slack.messages[0]["text"]
    _run(instance, False, "c")
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 2 and "resolved" in slack.messages[1]["text"]


def test_an_incoming_webhook_is_used_when_no_token_is_set(home, monkeypatch, instance, slack):
    defs = _defs(home, monkeypatch, BIKESHARE_SLACK_WEBHOOK_URL=slack.webhook_url)
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _check(instance, QUALITY, "quality_above_gate", False, "2025-09-15")
    ticker.tick()
    assert (
        len(slack.messages) == 1
        and slack.messages[0]["path"] == "/services/T000/B000/webhook-secret"
    )
    assert read_alerts(home / "alerts" / "alerts.jsonl")[0]["delivered"] == "slack_webhook"
    assert "webhook-secret" not in (home / "alerts" / "alerts.jsonl").read_text()


def test_without_slack_alerts_go_to_the_file_and_the_log(home, monkeypatch, instance, caplog):
    defs = _defs(home, monkeypatch)
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _check(instance, QUALITY, "quality_above_gate", False, "2025-09-15")
    ticker.tick()
    ticker.tick()
    records = read_alerts(home / "alerts" / "alerts.jsonl")
    assert len(records) == 1
    assert records[0]["delivered"] == "file" and records[0]["asset"] == "model_quality"
    assert records[0]["partition"] == "2025-09-15"


@pytest.mark.parametrize(
    ("failure", "said"), [(500, "internal_error"), ("channel_not_found", "channel_not_found")]
)
def test_when_slack_fails_the_alert_is_kept_in_the_file(
    home, monkeypatch, instance, slack, failure, said
):
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    slack.fail_with = failure
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _check(instance, QUALITY, "quality_above_gate", False, "2025-09-15")
    ticker.tick()
    assert slack.requests and slack.messages == []
    records = read_alerts(home / "alerts" / "alerts.jsonl")
    assert len(records) == 1 and records[0]["delivered"] == "file"
    assert said in records[0]["slack_error"]
    assert TOKEN not in json.dumps(records)


def test_bikeshare_env_hides_the_slack_secrets(monkeypatch, capsys):
    from bikeshare_assets.cli import cmd_env

    monkeypatch.setenv("BIKESHARE_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("BIKESHARE_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/sekrit")
    cmd_env(None)
    out = capsys.readouterr().out
    assert TOKEN not in out and "sekrit" not in out
    assert "(set, hidden)" in out


def _raw_run(instance: dg.DagsterInstance, fail: bool, partition: str) -> None:
    """A run of paris/raw_station_status that fails as a feed answering 503 does."""

    @dg.asset(key=STATUS, partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c", "d"]))
    def raw_station_status() -> None:
        if fail:
            raise RuntimeError("paris/raw_station_status: source_unavailable (HTTP 503)")

    dg.materialize(
        [raw_station_status], instance=instance, partition_key=partition, raise_on_error=False
    )


def _catch_up(kind: str) -> Alert:
    return Alert(
        incident="catch_up:paris:2026-12-01T10:02",
        kind=kind,
        city="paris",
        asset="raw_station_status",
        partition="a..c",
        rule="missing partitions",
        value="3 windows",
        did="caught up: every snapshot present downstream" if kind == RESOLVED else "requested",
        link="http://127.0.0.1:3000/assets/paris/stockout_predictions",
    )


def test_a_feed_outage_is_one_incident_across_runs_freshness_and_the_catch_up(
    home, monkeypatch, instance, slack
):
    """The outage drill's promise: failed raw runs, stale raw data and the catch-up that fills
    the gap are one incident: one message when it starts, one when all of it has resolved —
    also when the runs succeed again before the catch-up has started (a hand-over)."""
    defs = _defs(
        home, monkeypatch, BIKESHARE_SLACK_TOKEN=TOKEN, BIKESHARE_SLACK_API_URL=slack.api_url
    )
    channel = defs.resources["alerts"]
    ticker = Ticker(defs, instance, ALERT_SENSOR_NAME)
    _raw_run(instance, True, "a")
    ticker.tick()
    assert len(slack.messages) == 1 and "source_unavailable" in slack.messages[0]["text"]
    _raw_run(instance, True, "b")
    _freshness(instance, STATUS, FreshnessState.PASS, FreshnessState.WARN)
    ticker.tick()
    _raw_run(instance, False, "d")  # the feed is back before the catch-up started
    _freshness(instance, STATUS, FreshnessState.WARN, FreshnessState.PASS)
    ticker.tick()
    channel.deliver([_catch_up(ACTION)])  # ... which it does within the hold
    ticker.tick()
    ticker.tick()
    assert len(slack.messages) == 1, [m["text"] for m in slack.messages]
    channel.deliver([_catch_up(RESOLVED)])
    ticker.tick()
    assert len(slack.messages) == 1, "the resolution is held one tick"
    ticker.tick()
    assert len(slack.messages) == 2
    resolved = slack.messages[1]["text"]
    assert "resolved" in resolved and "caught up" in resolved and "freshness WARN" in resolved
    records = read_alerts(home / "alerts" / "alerts.jsonl")
    assert [r["kind"] for r in records if r["sent"]] == ["firing", "resolved"]
    assert len(records) > 2, "every member's own alert is still recorded in the file"
    assert {r["group"] for r in records} == {"paris:snapshots"}
