"""Healing sensors against a real instance: each heal triggers for the reason it names and
not otherwise; run keys never repeat; cooldowns hold; the reason is in the run's tags; the
follow-up message says what the heal achieved (a refused challenger leaves the champion)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from bikeshare_assets.automation.alerts import HEAL_ID_TAG, HEAL_REASON_TAG, read_alerts
from bikeshare_assets.automation.sensors import (
    HealPolicy,
    build_healing_sensors,
    plan_catch_up,
    retrain_outcome,
)
from bikeshare_assets.definitions import build_definitions
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets.settings import Settings
from bikeshare_assets_tests.automation.sensor_ticks import Ticker
from bikeshare_assets_tests.automation.sensor_ticks import report_check as _check
from bikeshare_assets_tests.conftest import settings_for, step_failure_message, write_cities

DRIFT = dg.AssetKey(["paris", "drift_report"])
QUALITY = dg.AssetKey(["paris", "model_quality"])
ENDPOINT = dg.AssetKey(["paris", "model_endpoint"])
PREDICTIONS = dg.AssetKey(["paris", "stockout_predictions"])
REGISTRY = dg.AssetKey(["paris", "registered_model_version"])
RETRAIN = [
    dg.AssetKey(["paris", "stockout_model"]),
    REGISTRY,
    ENDPOINT,
]


def _defs(settings: Settings, policy: HealPolicy | None = None) -> dg.Definitions:
    """The project's definitions with the healing sensors built under `policy`."""
    base = build_definitions(settings)
    city = settings.cities["paris"]
    parts = city_partitions(city, settings.source)
    return dg.Definitions(
        assets=list(base.assets or []),
        sensors=build_healing_sensors(city, parts, settings, policy),
        resources=base.resources,
    )


def _newest_day(settings: Settings) -> str:
    return city_partitions(settings.cities["paris"], settings.source).days.get_last_partition_key()


def _actions(home: Path) -> list[dict]:
    return read_alerts(home / "alerts" / "alerts.jsonl")


# --- retrain ------------------------------------------------------------------------------------


def test_feature_drift_error_retrains_registers_and_deploys_the_newest_day(home, instance):
    settings = settings_for(home)
    ticker = Ticker(_defs(settings), instance, "paris_heal_model")
    assert ticker.tick() == []
    _check(instance, DRIFT, "feature_drift", False, "2025-09-16-10:00", max_psi=0.41)
    [request] = ticker.tick()
    assert request.partition_key == _newest_day(settings)
    assert list(request.asset_selection) == RETRAIN
    reason = request.tags[HEAL_REASON_TAG]
    assert "feature_drift" in reason and "ERROR" in reason and "0.41" in reason
    assert "2025-09-16-10:00" in reason
    # The same failing evaluation is acted on once: later ticks request nothing.
    assert ticker.tick() == [] and ticker.tick() == []
    [action] = _actions(home)
    assert action["kind"] == "action" and action["rule"] == "feature_drift"
    assert "retrain" in action["did"] and request.run_key in action["did"]


def test_feature_drift_at_warn_does_not_retrain(home, instance):
    ticker = Ticker(_defs(settings_for(home)), instance, "paris_heal_model")
    _check(instance, DRIFT, "feature_drift", False, "2025-09-16-10:00", dg.AssetCheckSeverity.WARN)
    assert ticker.tick() == []
    _check(instance, DRIFT, "feature_drift", True, "2025-09-16-11:00")
    assert ticker.tick() == []
    assert _actions(home) == []


def test_a_failing_model_quality_retrains_and_a_passing_one_does_not(home, instance):
    settings = settings_for(home)
    ticker = Ticker(_defs(settings), instance, "paris_heal_model")
    _check(instance, QUALITY, "quality_above_gate", True, "2025-09-14")
    assert ticker.tick() == []
    _check(instance, QUALITY, "quality_above_gate", False, "2025-09-15", failing_targets="bikes")
    [request] = ticker.tick()
    assert "quality_above_gate" in request.tags[HEAL_REASON_TAG]
    assert request.partition_key == _newest_day(settings)


def _refused_registry_run(instance: dg.DagsterInstance, heal_id: str) -> dg.ExecuteInProcessResult:
    """A real run tagged as the heal's, in which registered_model_version is stored with the
    registry's own metadata for a refused challenger and its blocking gate check fails (what
    registry/assets.py yields when the gate refuses)."""

    @dg.asset(
        key=REGISTRY,
        check_specs=[
            dg.AssetCheckSpec("promotion_gate_stockout_bikes", asset=REGISTRY, blocking=True)
        ],
    )
    def registered_model_version():
        yield dg.Output(
            1,
            metadata={
                "stockout_bikes": "v3 rejected: champion unchanged; champion v2",
                "stockout_docks": "v4 already champion; champion v4",
            },
        )
        yield dg.AssetCheckResult(check_name="promotion_gate_stockout_bikes", passed=False)

    return dg.materialize(
        [registered_model_version],
        instance=instance,
        tags={HEAL_ID_TAG: heal_id},
        raise_on_error=False,
    )


def test_a_refused_challenger_is_reported_and_the_cooldown_holds_the_next_retrain(home, instance):
    settings = settings_for(home)
    ticker = Ticker(_defs(settings), instance, "paris_heal_model")
    _check(instance, DRIFT, "feature_drift", False, "2025-09-16-10:00", max_psi=0.5)
    [request] = ticker.tick()
    assert not _refused_registry_run(instance, request.tags[HEAL_ID_TAG]).success
    assert ticker.tick() == []
    outcome = _actions(home)[-1]
    assert outcome["kind"] == "heal_failed" and outcome["incident"] == request.tags[HEAL_ID_TAG]
    assert "refused" in outcome["did"] and "champion keeps serving" in outcome["did"]
    assert "stockout_bikes" in outcome["did"]

    # Drift still failing an hour later: within the cooldown nothing is requested ...
    _check(instance, DRIFT, "feature_drift", False, "2025-09-16-11:00", max_psi=0.5)
    assert ticker.tick() == []


def test_without_a_cooldown_a_new_failing_evaluation_gets_a_new_run_key(home, instance):
    policy = HealPolicy(retrain_cooldown=timedelta(0))
    ticker = Ticker(_defs(settings_for(home), policy), instance, "paris_heal_model")
    _check(instance, DRIFT, "feature_drift", False, "2025-09-16-10:00")
    [first] = ticker.tick()
    _refused_registry_run(instance, first.tags[HEAL_ID_TAG])
    assert ticker.tick() == []  # the outcome is reported; the same evaluation is not re-acted on
    _check(instance, DRIFT, "feature_drift", False, "2025-09-16-11:00")
    [second] = ticker.tick()
    assert second.run_key != first.run_key
    assert len(set(ticker.run_keys)) == len(ticker.run_keys) == 2


def test_retrain_outcome_reads_the_registry_metadata():
    promoted = {
        "stockout_bikes": "v3 promoted; champion v3",
        "stockout_docks": "v4 promoted; champion v4",
    }
    assert retrain_outcome("SUCCESS", promoted).startswith("retrained, registered and deployed")
    refused = {**promoted, "stockout_bikes": "v5 rejected: champion unchanged; champion v3"}
    assert "champion keeps serving" in retrain_outcome("FAILURE", refused)
    assert "refused before registration" in retrain_outcome("FAILURE", None)
    why = "stockout_model: ValueError: paris/stockout_model: no features or labels between"
    assert f"registration ({why})" in retrain_outcome("FAILURE", None, why)


# --- re-deploy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "check", "partition"),
    [
        (ENDPOINT, "endpoint_answers", "2025-09-16"),
        (PREDICTIONS, "batch_success", "2025-09-16-10:00"),
    ],
)
def test_a_dead_endpoint_is_redeployed(home, instance, key, check, partition):
    settings = settings_for(home)
    ticker = Ticker(_defs(settings), instance, "paris_heal_endpoint")
    _check(instance, key, check, True, partition)
    assert ticker.tick() == []
    later = partition[:-1] + "5" if "-10:00" in partition else "2025-09-15"
    _check(instance, key, check, False, later, error_kind="connection")
    [request] = ticker.tick()
    assert list(request.asset_selection) == [ENDPOINT]
    assert request.partition_key == _newest_day(settings)
    assert check in request.tags[HEAL_REASON_TAG]
    assert ticker.tick() == []

    # A real run of that heal that does not bring the endpoint back says so.
    @dg.asset(key=ENDPOINT)
    def model_endpoint():
        raise RuntimeError("no port free")

    dg.materialize(
        [model_endpoint],
        instance=instance,
        tags={HEAL_ID_TAG: request.tags[HEAL_ID_TAG]},
        raise_on_error=False,
    )
    assert ticker.tick() == []
    assert "did not bring the endpoint back" in _actions(home)[-1]["did"]
    assert _actions(home)[-1]["kind"] == "heal_failed"


# --- catch-up of missing partitions -------------------------------------------------------------


def test_catch_up_requests_each_missing_partition_from_its_first_missing_asset(
    home, instance, day_cities
):
    settings = settings_for(home, day_cities)
    policy = HealPolicy(
        catch_up_cooldown=timedelta(seconds=1), catch_up_attempts=2, max_runs_per_tick=10
    )
    defs = _defs(settings, policy)
    # The recording's last two hours: 22:00-23:45 at 15 minutes. 23:00 never landed.
    for selection, first, last in (
        ("paris/raw_station_information", "2025-09-08", None),
        ("paris/raw_station_status", "2025-09-08-22:00", "2025-09-08-22:45"),
        ("paris/raw_station_status", "2025-09-08-23:15", "2025-09-08-23:45"),
    ):
        result = materialize_range(defs, instance, selection, first, last, quiet=True)
        assert result.success, step_failure_message(result)
    # Features for 22:00 and 22:15 and predictions for 22:00, reported through Dagster's API.
    for key, partition in (
        ("station_features", "2025-09-08-22:00"),
        ("station_features", "2025-09-08-22:15"),
        ("stockout_predictions", "2025-09-08-22:00"),
    ):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["paris", key], partition=partition)
        )
    ticker = Ticker(defs, instance, "paris_heal_missing_partitions")
    first = {r.partition_key: [k.path[-1] for k in r.asset_selection] for r in ticker.tick()}
    assert first == {
        "2025-09-08-23:45": ["station_features", "stockout_predictions"],
        "2025-09-08-23:30": ["station_features", "stockout_predictions"],
        "2025-09-08-23:15": ["station_features", "stockout_predictions"],
        "2025-09-08-23:00": ["raw_station_status", "station_features", "stockout_predictions"],
        "2025-09-08-22:45": ["station_features", "stockout_predictions"],
        "2025-09-08-22:30": ["station_features", "stockout_predictions"],
        "2025-09-08-22:15": ["stockout_predictions"],
    }
    assert ticker.tick() == [], "within the cooldown nothing is requested again"
    # 22:15 catches up meanwhile; the rest is retried once the cooldown is over.
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=["paris", "stockout_predictions"], partition="2025-09-08-22:15"
        )
    )
    time.sleep(1.2)
    second = ticker.tick()
    assert sorted(r.partition_key for r in second) == sorted(set(first) - {"2025-09-08-22:15"})
    assert all("try 2 of 2" in r.tags[HEAL_REASON_TAG] for r in second)
    time.sleep(1.2)
    assert ticker.tick() == [], "after the last try the sensor stops and says so"
    assert len(set(ticker.run_keys)) == len(ticker.run_keys) == 13
    messages = _actions(home)
    gave_up = [a for a in messages if "stopped retrying" in a["did"]]
    assert sorted(a["partition"] for a in gave_up) == sorted(set(first) - {"2025-09-08-22:15"})
    catch_up = [a for a in messages if a["rule"] == "missing partitions"]
    assert [a["kind"] for a in catch_up] == ["action", "resolved"]
    assert "requested 7 run(s)" in catch_up[0]["did"] and "given up" in catch_up[1]["did"]


def test_a_catch_up_is_one_message_and_one_when_everything_is_back(home, instance, day_cities):
    settings = settings_for(home, day_cities)
    ticker = Ticker(_defs(settings), instance, "paris_heal_missing_partitions")
    windows = [f"2025-09-08-{h}:{m}" for h in ("22", "23") for m in ("00", "15", "30", "45")]
    for partition in windows:
        for key in ("raw_station_status", "station_features", "stockout_predictions"):
            if (key, partition) != ("stockout_predictions", "2025-09-08-23:45"):
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key=["paris", key], partition=partition)
                )
    [request] = ticker.tick()
    assert request.partition_key == "2025-09-08-23:45"
    assert [k.path[-1] for k in request.asset_selection] == ["stockout_predictions"]
    assert ticker.tick() == []
    assert [a["kind"] for a in _actions(home)] == ["action"]
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=["paris", "stockout_predictions"], partition="2025-09-08-23:45"
        )
    )
    assert ticker.tick() == [] and ticker.tick() == []
    messages = _actions(home)
    assert [a["kind"] for a in messages] == ["action", "resolved"]
    assert messages[0]["incident"] == messages[1]["incident"]
    assert "caught up" in messages[1]["did"] and "1 partition(s) requested" in messages[1]["value"]


def test_live_windows_the_feed_did_not_answer_become_source_gaps_once(home, instance, tmp_path):
    now = datetime.now(UTC)
    start = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    cities = write_cities(
        tmp_path / "live.toml",
        gbfs_url="http://127.0.0.1:9/gbfs.json",
        live_start=start.strftime("%Y-%m-%d-%H:%M"),
    )
    settings = settings_for(home, cities, BIKESHARE_SOURCE="live")
    defs = _defs(settings)
    ticker = Ticker(defs, instance, "paris_heal_missing_partitions")
    requests = ticker.tick()
    observations = instance.fetch_observations(
        dg.AssetKey(["paris", "raw_station_status"]), limit=100
    ).records
    gaps = {r.partition_key for r in observations}
    assert len(gaps) >= 20, "two hours of 5-minute windows, nothing landed"
    assert all(r.asset_observation.metadata["source_gap"].value is True for r in observations)
    pdef = city_partitions(settings.cities["paris"], settings.source).snapshots
    for gap in gaps:  # only windows too old to be fetched from a present-tense feed
        assert pdef.time_window_for_partition_key(gap).end + timedelta(minutes=10) < datetime.now(
            UTC
        )
    assert requests and len(requests) <= HealPolicy().max_runs_per_tick
    for request in requests:
        chain = [k.path[-1] for k in request.asset_selection]
        if request.partition_key in gaps:
            assert chain == ["station_features", "stockout_predictions"]
            assert "source gap" in request.tags[HEAL_REASON_TAG]
        else:  # a window still current: the feed may answer it
            assert chain[0] == "raw_station_status"
    # Recorded once: the next tick adds no observation and re-requests nothing (cooldown).
    again_requested = {r.partition_key for r in ticker.tick()}
    assert again_requested.isdisjoint({r.partition_key for r in requests})
    again = instance.fetch_observations(dg.AssetKey(["paris", "raw_station_status"]), limit=100)
    assert len(again.records) == len(observations)
    # A gap is a stored, empty raw partition: features over it (and over the lookbacks that
    # span it) run instead of failing on a missing partition.
    gap = max(gaps)
    assert gap in instance.get_materialized_partitions(dg.AssetKey(["paris", "raw_station_status"]))
    features = materialize_range(defs, instance, "paris/station_features", gap, quiet=True)
    assert features.success, step_failure_message(features)
    [opened] = _actions(home)  # one message for the whole catch-up, not one per run
    assert opened["kind"] == "action" and opened["rule"] == "missing partitions"
    assert f"recorded {len(gaps)} live window(s)" in opened["did"]
    assert "source gaps" in opened["did"]


def test_plan_catch_up_in_live_mode_requests_raw_only_while_the_window_is_current():
    pdef = dg.TimeWindowPartitionsDefinition(
        start=datetime(2026, 12, 1, tzinfo=UTC), fmt="%Y-%m-%d-%H:%M", cron_schedule="*/5 * * * *"
    )
    keys = ["2026-12-01-10:00", "2026-12-01-10:05", "2026-12-01-10:10"]
    windows = [(k, pdef.time_window_for_partition_key(k)) for k in keys]
    now = datetime(2026, 12, 1, 10, 20, tzinfo=UTC)  # 10:10 ended 5 min ago, 10:00 15 min ago
    empty = {
        name: set() for name in ("raw_station_status", "station_features", "stockout_predictions")
    }
    plan = plan_catch_up(
        now, windows, empty, set(), {}, HealPolicy(), live=True, live_lateness=timedelta(minutes=10)
    )
    assert plan.new_source_gaps == ["2026-12-01-10:00"]
    chains = {r.partition: r.assets[0] for r in plan.runs}
    assert chains == {
        "2026-12-01-10:10": "raw_station_status",
        "2026-12-01-10:05": "raw_station_status",
        "2026-12-01-10:00": "station_features",
    }
    replay = plan_catch_up(
        now,
        windows,
        empty,
        set(),
        {},
        HealPolicy(),
        live=False,
        live_lateness=timedelta(minutes=10),
    )
    assert replay.new_source_gaps == [] and {r.assets[0] for r in replay.runs} == {
        "raw_station_status"
    }


def test_a_catch_up_request_runs_as_the_daemon_would_launch_it(home, instance, day_cities):
    settings = settings_for(home, day_cities, BIKESHARE_ENDPOINT_PORTS="19501,19502")
    policy = HealPolicy(catch_up_cooldown=timedelta(seconds=1))
    defs = _defs(settings, policy)
    result = materialize_range(defs, instance, "paris/raw_station_information", "2025-09-08")
    assert result.success, step_failure_message(result)
    ticker = Ticker(defs, instance, "paris_heal_missing_partitions")
    newest = ticker.tick()[0]
    assert newest.partition_key == "2025-09-08-23:45"
    # The sensor's own target job, the request's selection, partition and tags.
    repo = defs.get_repository_def()
    job = repo.get_job(repo.get_sensor_def("paris_heal_missing_partitions").job_name)
    run = job.get_subset(asset_selection=set(newest.asset_selection)).execute_in_process(
        partition_key=newest.partition_key, instance=instance, tags=newest.tags
    )
    assert run.success
    for name in ("raw_station_status", "station_features", "stockout_predictions"):
        assert "2025-09-08-23:45" in instance.get_materialized_partitions(
            dg.AssetKey(["paris", name])
        )
    assert "2025-09-08-23:45" in instance.get_run_by_id(run.run_id).tags[HEAL_REASON_TAG]
    time.sleep(1.2)
    assert "2025-09-08-23:45" not in {r.partition_key for r in ticker.tick()}
