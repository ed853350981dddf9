"""station_features and stockout_labels materialized with Dagster on a real instance, over a
few hours of the real Vélib' recording replayed through the raw layer.

Expected values are read from the raw partitions the raw layer landed (and the recording's
own bins), not from the feature code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.cities import SourceMode, load_cities
from bikeshare_assets.features.assets import (
    NULL_BUDGETS,
    gap_excused,
    look_ahead_outcome,
    null_budget_outcome,
)
from bikeshare_assets.features.compute import (
    KEY,
    FeatureContext,
    build_station_features,
    feature_schema,
)
from bikeshare_assets.features.labels import LABEL_SCHEMA
from bikeshare_assets.features.store import partition_keys_between
from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.ingest.weather import RecordedWeatherSource
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets_tests.conftest import (
    DAY,
    RECORDED_WEATHER,
    RECORDING,
    build_defs,
    materializations,
    pkey,
    replay_table,
    settings_for,
    step_failure_message,
    trim_recording,
    utc,
    write_cities,
)
from bikeshare_assets_tests.support.frames import replayed_information, replayed_status

CITY = "paris"
FEATURES = dg.AssetKey([CITY, "station_features"])
LABELS = dg.AssetKey([CITY, "stockout_labels"])
FIRST, LAST = utc(2025, 9, 8, 15, 0), utc(2025, 9, 8, 17, 45)
STEP = timedelta(minutes=15)
KEYS = [pkey(FIRST + i * STEP) for i in range(int((LAST - FIRST) / STEP) + 1)]


def part_file(lake: Path, asset: str, key: str) -> Path:
    return lake / asset / f"city={CITY}" / f"dt={key}" / "part.parquet"


def parse_key(key: str) -> datetime:
    return datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)


def check_evaluations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, names
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """(check, partition) -> the evaluation the instance stored."""
    out: dict[tuple[str, str], dg.AssetCheckEvaluation] = {}
    for name in names:
        key = dg.AssetCheckKey(asset_key, name)
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=1000):
            event = record.event.dagster_event if record.event else None
            data = event.event_specific_data if event else None
            if isinstance(data, dg.AssetCheckEvaluation):
                assert record.partition == data.partition
                out.setdefault((name, str(record.partition)), data)
    return out


@pytest.fixture
def landed(home: Path, day_cities: Path, instance: dg.DagsterInstance):
    """Raw layer for 14:00-18:15 (the lookback before 15:00 and the horizon after 17:45),
    then features and labels for 15:00-17:45 in one single-run backfill."""
    defs = build_defs(settings_for(home, day_cities))
    for selection, start, end in (
        (f"{CITY}/raw_station_information", DAY, DAY),
        (f"{CITY}/raw_weather", "2025-09-08-11:00", "2025-09-08-18:00"),
        (f"{CITY}/raw_station_status", "2025-09-08-14:00", "2025-09-08-18:15"),
    ):
        raw = materialize_range(defs, instance, selection, start, end)
        assert raw.success, step_failure_message(raw)
    result = materialize_range(
        defs,
        instance,
        [FEATURES.to_user_string(), LABELS.to_user_string()],
        KEYS[0],
        KEYS[-1],
    )
    assert result.success, step_failure_message(result)
    return result


def raw_at(lake: Path, at: datetime) -> pl.DataFrame:
    return pl.read_parquet(part_file(lake, "raw_station_status", pkey(at)))


def test_features_and_labels_land_per_partition_with_gaps_and_checks(
    landed, home: Path, instance: dg.DagsterInstance
) -> None:
    lake = home / "lake"
    # The recorder's bins in and around the range (from the raw partitions it landed).
    bins = {
        at
        for at in (utc(2025, 9, 8, 14, 0) + i * STEP for i in range(18))
        if raw_at(lake, at).height
    }
    assert utc(2025, 9, 8, 15, 15) not in bins  # a real recorder gap inside the range
    assert utc(2025, 9, 8, 18, 0) not in bins  # and one 30 minutes after 17:30

    by_asset: dict[str, dict[str, dict]] = {"station_features": {}, "stockout_labels": {}}
    for event in landed.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        by_asset[mat.asset_key.path[-1]][str(mat.partition)] = {
            k: getattr(v, "value", v) for k, v in mat.metadata.items()
        }
    assert sorted(by_asset["station_features"]) == KEYS
    assert sorted(by_asset["stockout_labels"]) == KEYS
    assert materializations(landed)  # the helper agrees there were materializations

    for key in KEYS:
        at = parse_key(key)
        raw = raw_at(lake, at)
        features = pl.read_parquet(part_file(lake, "station_features", key))
        labels = pl.read_parquet(part_file(lake, "stockout_labels", key))
        fmeta, lmeta = by_asset["station_features"][key], by_asset["stockout_labels"][key]
        assert dict(features.schema) == feature_schema()
        assert dict(labels.schema) == LABEL_SCHEMA
        if at not in bins:
            # a gap: an empty partition that says so, never a borrowed snapshot
            assert features.is_empty() and labels.is_empty()
            assert (fmeta["gap"], fmeta["rows"]) == (True, 0)
            assert (lmeta["gap"], lmeta["rows"]) == (True, 0)
            continue
        assert features["snapshot_at"].unique().to_list() == [at]
        assert features.height == raw.height == fmeta["rows"] and fmeta["gap"] is False
        assert features.select(KEY).sort(KEY).equals(raw.select(KEY).sort(KEY))
        matured = at + timedelta(minutes=30) in bins
        assert lmeta["matured"] is matured and lmeta["gap"] is False
        assert labels.height == lmeta["rows"]
        if not matured:
            assert labels.is_empty()
            continue
        future = raw_at(lake, at + timedelta(minutes=30))
        want = raw.select("station_id").join(
            future.select(
                "station_id",
                pl.col("bikes_available").alias("bikes_future"),
                pl.col("docks_available").alias("docks_future"),
            ),
            on="station_id",
        )
        got = labels.select("station_id", "bikes_future", "docks_future")
        assert got.sort("station_id").equals(want.sort("station_id"))
        assert labels["stockout_bikes"].to_list() == (labels["bikes_future"] <= 2).to_list()

    # Net flows across the 15:15 gap, checked against the raw partitions.
    at = utc(2025, 9, 8, 15, 30)
    features = pl.read_parquet(part_file(lake, "station_features", pkey(at)))
    assert features["bikes_net_flow_15"].null_count() == features.height
    want = raw_at(lake, at).join(
        raw_at(lake, at - timedelta(minutes=30)), on="station_id", suffix="_then"
    )
    flows = features.join(
        want.select(
            "station_id",
            (pl.col("bikes_available") - pl.col("bikes_available_then"))
            .cast(pl.Float64)
            .alias("want"),
        ),
        on="station_id",
        how="left",
    )
    assert flows.height == features.height and flows["want"].null_count() < flows.height
    assert flows["bikes_net_flow_30"].eq_missing(flows["want"]).all()
    assert features["obs_15"].max() == 1  # only t itself in [15:15, 15:30]

    # Check evaluations, stored per partition.
    fchecks = check_evaluations(instance, FEATURES, ("null_budget", "no_look_ahead"))
    lchecks = check_evaluations(instance, LABELS, ("label_maturity",))
    with_data = [k for k in KEYS if parse_key(k) in bins]
    assert {p for c, p in fchecks if c == "null_budget"} == set(with_data)
    assert set(lchecks) == {("label_maturity", k) for k in with_data}
    # The newest partition with data was recomputed from raw <= t alone: identical.
    assert [p for c, p in fchecks if c == "no_look_ahead"] == [with_data[-1]]
    assert fchecks[("no_look_ahead", with_data[-1])].passed is True
    for key in with_data:
        at = parse_key(key)
        assert lchecks[("label_maturity", key)].passed is (at + timedelta(minutes=30) in bins)
        # Nulls the recorder's gaps explain are excused, never held against the budget:
        # exactly the net flows whose t - w snapshot was not recorded.
        evaluation = fchecks[("null_budget", key)]
        assert evaluation.passed is True, (key, evaluation.description)
        excused = evaluation.metadata["excused_by_gaps"].value
        for w in (15, 30, 60):
            assert (f"bikes_net_flow_{w}" in excused) is (at - timedelta(minutes=w) not in bins)
    assert not lchecks[("label_maturity", "2025-09-08-17:30")].passed
    after_gap = fchecks[("null_budget", "2025-09-08-15:30")]
    assert "bikes_net_flow_15" in after_gap.metadata["excused_by_gaps"].value


def test_null_budget_fails_on_nulls_no_gap_explains() -> None:
    """Stations missing from a recorded t - 15 snapshot are within budget up to 35%; a
    missing location (no station list) is never excused."""
    at = utc(2025, 9, 8, 15, 30)
    recorded = {at - timedelta(minutes=m) for m in (0, 15, 30, 45, 60)}
    features = pl.DataFrame({c: [1.0] * 10 for c in NULL_BUDGETS}).with_columns(
        bikes_net_flow_15=pl.Series([None] * 3 + [1.0] * 7, dtype=pl.Float64)
    )
    assert null_budget_outcome(features, gap_excused(at, recorded)).passed is True
    many = features.with_columns(
        bikes_net_flow_15=pl.Series([None] * 5 + [1.0] * 5, dtype=pl.Float64)
    )
    outcome = null_budget_outcome(many, gap_excused(at, recorded))
    assert outcome.passed is False and "bikes_net_flow_15" in outcome.description
    # the same nulls right after a recorder gap at t - 15: excused
    assert null_budget_outcome(
        many, gap_excused(at, recorded - {at - timedelta(minutes=15)})
    ).passed
    no_location = features.with_columns(lat=pl.Series([None] * 10, dtype=pl.Float64))
    assert null_budget_outcome(no_location, gap_excused(at, set())).passed is False


def test_partition_keys_between_includes_the_partition_under_way() -> None:
    """A run's reads are by time range: the day (or hour) already under way at the start of
    the range is part of it; a partition that ends exactly at the start is not."""
    parts = city_partitions(load_cities()["paris"], SourceMode.REPLAY)

    assert partition_keys_between(parts.days, utc(2025, 9, 8, 14), utc(2025, 9, 8, 18)) == [DAY]
    assert partition_keys_between(parts.days, utc(2025, 9, 8, 23), utc(2025, 9, 9, 0, 15)) == [
        DAY,
        "2025-09-09",
    ]
    assert partition_keys_between(parts.hours, utc(2025, 9, 8, 12, 5), utc(2025, 9, 8, 15, 10)) == [
        f"2025-09-08-{h}:00" for h in (12, 13, 14, 15)
    ]
    assert partition_keys_between(parts.snapshots, utc(2025, 9, 8, 14), utc(2025, 9, 8, 15)) == [
        f"2025-09-08-14:{m:02d}" for m in (0, 15, 30, 45)
    ]
    assert partition_keys_between(parts.days, utc(2025, 9, 8, 14), utc(2025, 9, 8, 14)) == []


# --------------------------------------------------------------------------------------
# no_look_ahead: able to catch a leak, and right on days that are all recorder gaps
# --------------------------------------------------------------------------------------

PARIS = FeatureContext("Europe/Paris", "FR", 15)


@pytest.fixture(scope="module")
def real_inputs() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, datetime]:
    """Raw status 14:00-18:00 of the real recording (through the replay and the parser), the
    day's station list and weather, and a snapshot t whose next snapshot was recorded."""
    source = ReplaySource(RECORDING)
    history = replayed_status(source, utc(2025, 9, 8, 14), utc(2025, 9, 8, 18), STEP)
    information = replayed_information(source, utc(2025, 9, 8))
    weather = RecordedWeatherSource(RECORDED_WEATHER).hourly(utc(2025, 9, 8), utc(2025, 9, 9))
    times = set(history.get_column("snapshot_at").unique().to_list())
    t = min(x for x in times if x >= utc(2025, 9, 8, 15) and x + STEP in times)
    return history, information, weather, t


def next_snapshot_flow(history, information, weather, times, context) -> pl.DataFrame:
    """A leaking feature: bikes_net_flow_15 as (bikes at t + 15) - (bikes at t)."""
    features = build_station_features(history, information, weather, times, context)
    later = history.select(
        (pl.col("snapshot_at") - STEP).alias("snapshot_at"),
        "station_id",
        pl.col("bikes_available").cast(pl.Float64).alias("_later"),
    )
    return (
        features.join(later, on=KEY, how="left")
        .with_columns(bikes_net_flow_15=pl.col("_later") - pl.col("bikes_available"))
        .drop("_later")
    )


def test_no_look_ahead_passes_for_the_real_features(real_inputs) -> None:
    history, information, weather, t = real_inputs
    served = build_station_features(history, information, weather, [t], PARIS)

    outcome = look_ahead_outcome(history, information, weather, t, served, PARIS)

    assert outcome.passed, outcome.description
    assert outcome.metadata["later_snapshots_read"] >= 1
    assert outcome.metadata["rows"] == served.height > 1000


def test_no_look_ahead_catches_a_feature_that_reads_the_next_snapshot(real_inputs) -> None:
    history, information, weather, t = real_inputs
    # A backfill computed t while the next snapshot was already in the lake.
    served = next_snapshot_flow(history, information, weather, [t], PARIS)
    assert served["bikes_net_flow_15"].null_count() < served.height  # it did read t + 15

    outcome = look_ahead_outcome(
        history, information, weather, t, served, PARIS, compute=next_snapshot_flow
    )

    assert not outcome.passed
    assert outcome.metadata["leaking_columns"] == ["bikes_net_flow_15"]
    assert "READ THE FUTURE" in outcome.description and "bikes_net_flow_15" in outcome.description


def test_no_look_ahead_catches_served_rows_that_differ_from_a_recomputation(real_inputs) -> None:
    history, information, weather, t = real_inputs
    served = build_station_features(history, information, weather, [t], PARIS)
    # The stored frame carries a column shifted by one snapshot (what a leak in the asset's
    # own wiring, not in the feature function, would look like).
    shifted = served.with_columns(
        bikes_mean_15=pl.col("bikes_mean_15") + pl.col("bikes_net_flow_15").fill_null(1.0)
    )

    outcome = look_ahead_outcome(history, information, weather, t, shifted, PARIS)

    assert not outcome.passed
    assert outcome.metadata["differing_from_served"] == ["bikes_mean_15"]


def test_no_look_ahead_on_a_run_whose_last_day_is_all_recorder_gaps(
    tmp_path: Path, home: Path, instance: dg.DagsterInstance, full_recording: pl.DataFrame
) -> None:
    """2025-09-08-22:00 ... 2025-09-09-00:15: the recorder missed 00:00-00:30 on the 9th, so
    the newest snapshot with data (23:45) belongs to the run's previous day."""
    start, end = utc(2025, 9, 8), utc(2025, 9, 9, 2)
    path = tmp_path / "two_days.parquet"
    trim_recording(full_recording, start, end).write_parquet(path)
    cities = write_cities(tmp_path / "gap.toml", replay=replay_table(path, start, end))
    defs = build_defs(settings_for(home, cities))
    for selection, first, last in (
        (f"{CITY}/raw_station_information", DAY, "2025-09-09"),
        (f"{CITY}/raw_weather", "2025-09-08-18:00", "2025-09-09-01:00"),
        (f"{CITY}/raw_station_status", "2025-09-08-21:00", "2025-09-09-01:00"),
    ):
        raw = materialize_range(defs, instance, selection, first, last)
        assert raw.success, step_failure_message(raw)

    result = materialize_range(
        defs, instance, FEATURES.to_user_string(), "2025-09-08-22:00", "2025-09-09-00:15"
    )

    assert result.success, step_failure_message(result)
    rows = {k: md["rows"] for k, md in materializations(result).items()}
    assert rows["2025-09-09-00:00"] == rows["2025-09-09-00:15"] == 0  # the gap day
    checks = check_evaluations(instance, FEATURES, ("no_look_ahead",))
    assert list(checks) == [("no_look_ahead", "2025-09-08-23:45")]
    evaluation = checks[("no_look_ahead", "2025-09-08-23:45")]
    assert evaluation.passed, evaluation.description
    # it read past t: the 00:45 snapshot of the next day
    assert evaluation.metadata["later_snapshots_read"].value == 1
