"""The declarative automation, evaluated by Dagster tick after tick on a real instance: what
is requested when raw data lands, when labels mature, on the retrain cron and after a new
model — and that nothing is requested twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from bikeshare_assets.automation.policies import CATCH_UP
from bikeshare_assets_tests.automation.ticks import (
    Ticks,
    live_definitions,
    snapshots,
)
from bikeshare_assets_tests.conftest import DAY_END, DAY_START, settings_for, write_cities

DAY = "2026-12-01"
MIN = timedelta(minutes=1)


def at(hour: int, minute: int, second: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def ticks(home: Path, tmp_path: Path, instance: dg.DagsterInstance) -> Ticks:
    return Ticks(live_definitions(home, tmp_path, with_drift_report=True), instance)


def test_each_snapshot_is_featurized_and_scored_once_as_raw_lands(ticks: Ticks) -> None:
    assert ticks.tick(at(10, 0, 10)) == {}  # the sensor starts: nothing has landed
    ticks.landed("raw_station_information", [DAY])
    # An hour of raw status up to 09:55 (the schedule's run for 09:55 ended at ~10:00:20).
    ticks.landed("raw_station_status", snapshots(at(8, 55), at(9, 55)))

    first = ticks.tick(at(10, 0, 30))

    # 09:55 has its 60-minute lookback: featurized and scored in one run; the snapshots
    # before it lack part of their lookback and wait. Every t whose t + 30 min landed is
    # labelled; 09:30 .. 09:55 are not: their t + 30 is not even a partition yet.
    assert first["station_features"] == first["stockout_predictions"] == ["2026-12-01-09:55"]
    assert first["stockout_labels"] == snapshots(at(8, 55), at(9, 25))
    assert "prediction_outcomes" not in first  # no predictions for the labelled snapshots
    assert ticks.tick(at(10, 0, 45)) == {}  # the same data: nothing requested twice

    ticks.landed("raw_station_status", ["2026-12-01-10:00"])
    second = ticks.tick(at(10, 5, 30))

    assert second == {
        "station_features": ["2026-12-01-10:00"],
        "stockout_predictions": ["2026-12-01-10:00"],
        "stockout_labels": ["2026-12-01-09:30"],  # matured by the snapshot at 10:00
    }
    # The runs store what was requested; later ticks do not request those partitions again.
    for name, keys in {**first, **second}.items():
        ticks.landed(name, keys)
    assert ticks.tick(at(10, 5, 45)) == {}
    assert ticks.tick(at(10, 9, 0)) == {}


def test_predictions_keep_flowing_while_the_daily_retrain_run_is_under_way(ticks: Ticks) -> None:
    ticks.tick(at(10, 0, 10))
    # The retrain run (model -> registration -> endpoint) for today has started and takes a
    # while; today's endpoint partition is in progress until it ends.
    ticks.run_queued("model_endpoint", DAY)
    ticks.landed("raw_station_information", [DAY])
    ticks.landed("raw_station_status", snapshots(at(8, 55), at(9, 55)))

    requested = ticks.tick(at(10, 0, 30))

    # The champion serving now scores the snapshot; the run does not hold predictions back.
    assert requested["stockout_predictions"] == ["2026-12-01-09:55"]


def test_a_snapshot_being_featurized_is_not_requested_again(ticks: Ticks) -> None:
    ticks.tick(at(10, 0, 10))
    ticks.landed("raw_station_information", [DAY])
    ticks.landed("raw_station_status", snapshots(at(8, 55), at(9, 50)))
    ticks.run_queued("station_features", "2026-12-01-09:55")  # launched by hand, still running
    ticks.landed("raw_station_status", ["2026-12-01-09:55"])

    requested = ticks.tick(at(10, 0, 30))

    assert "station_features" not in requested
    assert "stockout_predictions" not in requested  # its features are being written


def test_outcomes_follow_matured_labels_of_scored_snapshots(ticks: Ticks) -> None:
    ticks.tick(at(10, 0, 10))
    ticks.landed("raw_station_information", [DAY])
    ticks.landed("raw_station_status", snapshots(at(8, 0), at(9, 55)))
    scored = snapshots(at(9, 0), at(9, 55))
    ticks.landed("station_features", scored)
    ticks.landed("stockout_predictions", scored)

    requested = ticks.tick(at(10, 0, 30))

    # Labels mature 30 minutes on; outcomes join them with the predictions in the same run.
    assert requested["prediction_outcomes"] == snapshots(at(9, 0), at(9, 25))
    ticks.landed("stockout_labels", requested["stockout_labels"])
    ticks.landed("prediction_outcomes", requested["prediction_outcomes"])
    assert ticks.tick(at(10, 0, 50)) == {}


def test_a_snapshot_that_matures_late_is_still_labelled_within_the_lookback(
    ticks: Ticks,
) -> None:
    ticks.tick(at(10, 59, 0))
    ticks.landed("raw_station_information", [DAY])
    # Raw status 07:00 .. 11:00, but the windows at 08:20 and 09:30 did not land (a daemon
    # outage; the healing sensor catches them up later).
    landed = [k for k in snapshots(at(7, 0), at(11, 0)) if k[-5:] not in ("08:20", "09:30")]
    ticks.landed("raw_station_status", landed)
    first = ticks.tick(at(11, 5, 30))
    for name, keys in first.items():
        ticks.landed(name, keys)
    assert not set(first["stockout_labels"]) & set(snapshots(at(9, 0), at(9, 30)))

    ticks.landed("raw_station_status", ["2026-12-01-09:30", "2026-12-01-08:20"])
    caught_up = ticks.tick(at(11, 6, 0))

    # 09:00 .. 09:30 read raw status at 09:30: labelled now, within 30 min + CATCH_UP of the
    # newest snapshot. 07:50 .. 08:20 read 08:20 but are older than that: left to a backfill.
    assert caught_up["stockout_labels"] == snapshots(at(9, 0), at(9, 30))
    newest_end = at(11, 5)
    oldest_considered = newest_end - timedelta(minutes=30) - CATCH_UP
    assert all(
        datetime.strptime(k, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC) >= oldest_considered
        for k in caught_up["stockout_labels"]
    )
    # Features read a 60-minute lookback: those that held 08:20 or 09:30 catch up too, back
    # to CATCH_UP before the newest snapshot (09:05); 09:25 had neither and ran on the first tick.
    assert caught_up["station_features"] == snapshots(at(9, 5), at(9, 20)) + snapshots(
        at(9, 30), at(10, 30)
    )
    assert caught_up["stockout_predictions"] == caught_up["station_features"]
    for name, keys in caught_up.items():
        ticks.landed(name, keys)
    snapshot_layer = {"station_features", "stockout_labels", "stockout_predictions"}
    assert not snapshot_layer & set(ticks.tick(at(11, 6, 30)))


def test_the_drift_report_follows_the_hours_last_scored_snapshot(ticks: Ticks) -> None:
    ticks.tick(at(10, 0, 10))
    ticks.landed("raw_station_information", [DAY])
    ticks.landed("raw_station_status", snapshots(at(8, 0), at(9, 50)))
    scored = snapshots(at(9, 0), at(9, 50))
    ticks.landed("station_features", scored)
    ticks.landed("stockout_predictions", scored)
    assert "drift_report" not in ticks.tick(at(10, 0, 20))  # 09:55 is not scored yet

    ticks.landed("raw_station_status", ["2026-12-01-09:55"])
    scoring = ticks.tick(at(10, 0, 40))
    assert scoring["stockout_predictions"] == ["2026-12-01-09:55"]
    # An hourly asset cannot share a run with 5-minute ones: the report waits for the run
    # that scores 09:55 to store it, then follows on the next tick, once.
    assert "drift_report" not in scoring
    ticks.landed("station_features", scoring["station_features"])
    ticks.landed("stockout_predictions", scoring["stockout_predictions"])

    assert ticks.tick(at(10, 1, 10))["drift_report"] == ["2026-12-01-09:00"]
    ticks.landed("drift_report", ["2026-12-01-09:00"])
    assert "drift_report" not in ticks.tick(at(10, 1, 40))
    assert "drift_report" not in ticks.tick(at(10, 5, 30))


def test_the_model_retrains_on_its_daily_cron_and_the_endpoint_follows(ticks: Ticks) -> None:
    ticks.tick(at(2, 50))
    ticks.landed("station_features", ["2026-12-01-02:45"])
    ticks.landed("stockout_labels", ["2026-12-01-02:15"])
    # Fresh data before the tick does not train: the cron (04:00 Paris = 03:00 UTC) has not passed.
    assert "stockout_model" not in ticks.tick(at(2, 55))
    assert "stockout_model" not in ticks.tick(at(3, 0, 30))  # passed; no data since the tick

    ticks.landed("station_features", ["2026-12-01-03:00"])
    ticks.landed("stockout_labels", ["2026-12-01-02:30"])
    requested = ticks.tick(at(3, 5, 30))

    # One run for the newest day: train, register (the gate blocks what follows), deploy.
    assert {n: requested[n] for n in ("stockout_model", "registered_model_version")} == {
        "stockout_model": [DAY],
        "registered_model_version": [DAY],
    }
    assert requested["model_endpoint"] == [DAY]
    ticks.landed("stockout_model", [DAY])
    ticks.landed("registered_model_version", [DAY])
    ticks.landed("model_endpoint", [DAY])
    ticks.landed("station_features", ["2026-12-01-03:05"])
    assert not {"stockout_model", "registered_model_version", "model_endpoint"} & set(
        ticks.tick(at(3, 10, 30))
    )
    # The next day's tick trains the next day's model, once.
    ticks.tick(at(3, 0, 30, day=2))  # the sensor ticks every 30 s: it sees the cron pass
    ticks.landed("station_features", ["2026-12-02-03:00"])
    ticks.landed("stockout_labels", ["2026-12-02-02:30"])
    assert ticks.tick(at(3, 5, 30, day=2))["stockout_model"] == ["2026-12-02"]
    assert "stockout_model" not in ticks.tick(at(3, 6, 0, day=2))


def test_a_new_model_is_registered_and_deployed_in_one_run(ticks: Ticks) -> None:
    ticks.tick(at(12, 0))
    # A model trained outside the cron (by hand, or by the drift-healing sensor's own run).
    ticks.landed("stockout_model", [DAY])

    requested = ticks.tick(at(12, 0, 30))

    # One run: register, then deploy; the promotion gate is a blocking check, so a refused
    # challenger stops that run before model_endpoint and the champion keeps serving.
    assert requested == {"registered_model_version": [DAY], "model_endpoint": [DAY]}
    ticks.landed("registered_model_version", [DAY])
    ticks.landed("model_endpoint", [DAY])
    assert ticks.tick(at(12, 1, 0)) == {}


def test_a_version_registered_on_its_own_is_deployed_only_past_the_gate(ticks: Ticks) -> None:
    refused, passed = DAY, "2026-12-02"
    ticks.tick(at(12, 0))
    ticks.landed("registered_model_version", [refused])  # e.g. re-registered by hand
    ticks.checked("registered_model_version", "promotion_gate_stockout_bikes", refused, False)
    ticks.checked("registered_model_version", "promotion_gate_stockout_docks", refused, True)

    assert "model_endpoint" not in ticks.tick(at(12, 0, 30))
    assert "model_endpoint" not in ticks.tick(at(12, 1, 0))

    ticks.tick(at(12, 0, day=2))
    ticks.landed("registered_model_version", [passed])
    ticks.checked("registered_model_version", "promotion_gate_stockout_bikes", passed, True)
    ticks.checked("registered_model_version", "promotion_gate_stockout_docks", passed, True)

    assert ticks.tick(at(12, 0, 30, day=2)) == {"model_endpoint": [passed]}
    ticks.landed("model_endpoint", [passed])
    assert ticks.tick(at(12, 1, 0, day=2)) == {}


def test_turned_on_in_a_replay_only_the_newest_windows_follow(
    home: Path, tmp_path: Path, instance: dg.DagsterInstance, day_recording_path: Path
) -> None:
    from bikeshare_assets.definitions import build_definitions
    from bikeshare_assets_tests.conftest import replay_table

    cities = write_cities(tmp_path / "replay.toml", replay=replay_table(day_recording_path))
    ticks = Ticks(build_definitions(settings_for(home, cities)), instance)
    now = at(10, 0)  # turned on in the UI, long after the recording
    ticks.tick(now)
    ticks.landed("raw_station_information", ["2025-09-08"])
    # The recording's one day, 15-minute bins, stored by `bikeshare demo` (one backfill run).
    recorded = snapshots(DAY_START, DAY_END - timedelta(minutes=15), timedelta(minutes=15))
    ticks.landed("raw_station_status", recorded)

    requested = ticks.tick(now + MIN)

    # A whole day landed (a backfill), but only the recording's last CATCH_UP follows: the
    # history is the demo's and the CLI's single-run backfills, not 96 runs of automation.
    assert requested["station_features"] == recorded[-int(CATCH_UP / timedelta(minutes=15)) :]
    assert len(requested["stockout_labels"]) == int(CATCH_UP / timedelta(minutes=15))


def test_a_city_that_just_went_live_is_featurized_from_its_first_snapshot(
    home: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    from bikeshare_assets.definitions import build_definitions

    cities = write_cities(tmp_path / "new.toml", live_start="2026-12-01-09:50")
    ticks = Ticks(build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="live")), instance)
    ticks.tick(at(10, 0, 10))
    ticks.landed("raw_station_information", [DAY])
    ticks.landed("raw_station_status", ["2026-12-01-09:50", "2026-12-01-09:55"])

    requested = ticks.tick(at(10, 0, 30))

    # The lookback before live_start is not a partition: nothing to wait for.
    assert requested["station_features"] == ["2026-12-01-09:50", "2026-12-01-09:55"]
    assert requested["stockout_predictions"] == requested["station_features"]
