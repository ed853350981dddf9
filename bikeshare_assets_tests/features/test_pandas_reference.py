"""The pandas reference implementation used by the features benchmark computes the same
features as `build_station_features`: same rows, same nulls, every value within 1e-9.

If compute.py changes a feature, this fails until the reference
(bikeshare_assets_tests/benchmarks/pandas_features.py) is changed the same way, so the
benchmark's pandas/polars ratio always compares the same work.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from bikeshare_assets.features.compute import build_station_features
from bikeshare_assets_tests.benchmarks.pandas_features import (
    assert_same_features,
    build_station_features_pandas,
    simulated_inputs,
)

CASES = {
    # the benchmark's own setting, small: 50 Paris-simulator stations, one weekday at 5 min
    "50 stations x 1 day, 5 min": dict(stations=50, days=1),
    # denser stations (most have neighbours), many outages and feed gaps (null net flows),
    # 15-minute cadence, across the spring DST change in Europe/Paris
    "dense, gappy, 15 min, DST": dict(
        stations=50,
        days=2,
        radius_km=1.5,
        outage_rate=0.2,
        cadence_minutes=15,
        start=datetime(2026, 3, 28, tzinfo=UTC),
    ),
    # a public holiday (1 May) at 10-minute cadence
    "holiday, 10 min": dict(
        stations=40,
        days=2,
        radius_km=1.5,
        cadence_minutes=10,
        start=datetime(2026, 4, 30, tzinfo=UTC),
    ),
}


@pytest.mark.parametrize("params", list(CASES.values()), ids=list(CASES))
def test_pandas_reference_equals_build_station_features(params: dict) -> None:
    inputs = simulated_inputs(**params)
    expected = build_station_features(
        inputs.status, inputs.information, inputs.weather, inputs.snapshot_times, inputs.context
    )
    status, information, weather = inputs.as_pandas()
    got = build_station_features_pandas(
        status, information, weather, inputs.snapshot_times, inputs.context
    )
    assert expected.height == inputs.status.height > 0
    assert_same_features(expected, got, tolerance=1e-9)


def test_pandas_reference_on_a_subset_of_snapshot_times() -> None:
    """Features for a few target times only, from a longer history (as a partition run)."""
    inputs = simulated_inputs(stations=40, days=1, radius_km=1.5, outage_rate=0.1)
    targets = inputs.snapshot_times[12::7]
    expected = build_station_features(
        inputs.status, inputs.information, inputs.weather, targets, inputs.context
    )
    status, information, weather = inputs.as_pandas()
    got = build_station_features_pandas(status, information, weather, targets, inputs.context)
    assert expected.get_column("snapshot_at").n_unique() == len(targets)
    assert_same_features(expected, got, tolerance=1e-9)


def _changed_lists(inputs, keep_days: int) -> pl.DataFrame:
    """Day 0's station list as simulated; day 1's with one station moved ~1 km north, one
    resized and three missing; no list at all for later days (up to `keep_days`)."""
    days = inputs.information.get_column("as_of_day").unique().sort().to_list()
    moved, resized = "sim-00001", "sim-00002"
    lists = [
        inputs.information.filter(pl.col("as_of_day") == days[0]),
        inputs.information.filter(
            (pl.col("as_of_day") == days[1])
            & ~pl.col("station_id").is_in(["sim-00003", "sim-00004", "sim-00005"])
        ).with_columns(
            lat=pl.when(pl.col("station_id") == moved)
            .then(pl.col("lat") + 0.01)
            .otherwise(pl.col("lat")),
            capacity=pl.when(pl.col("station_id") == resized)
            .then(pl.col("capacity") + 5)
            .otherwise(pl.col("capacity")),
        ),
    ]
    return pl.concat(lists[:keep_days])


def _compare(inputs, information: pl.DataFrame) -> pl.DataFrame:
    expected = build_station_features(
        inputs.status, information, inputs.weather, inputs.snapshot_times, inputs.context
    )
    status, _, weather = inputs.as_pandas()
    got = build_station_features_pandas(
        status, information.to_pandas(), weather, inputs.snapshot_times, inputs.context
    )
    assert_same_features(expected, got, tolerance=1e-9)
    return expected


def test_pandas_reference_when_the_station_list_changes() -> None:
    """Static and neighbour features come from each snapshot's own day's station list."""
    inputs = simulated_inputs(stations=40, days=2, radius_km=1.5)
    features = _compare(inputs, _changed_lists(inputs, keep_days=2))
    day1 = features.filter(
        pl.col("snapshot_at") >= inputs.snapshot_times[-1].replace(hour=0, minute=0)
    )
    assert day1.filter(pl.col("station_id") == "sim-00003").get_column("lat").is_null().all()


def test_pandas_reference_for_a_day_without_station_list() -> None:
    inputs = simulated_inputs(stations=40, days=1, radius_km=1.5)
    features = _compare(inputs, inputs.information.clear())
    assert features.get_column("nb_weight").is_null().all()
    assert features.get_column("lat").is_null().all()


def test_pandas_reference_when_a_later_day_has_no_station_list() -> None:
    inputs = simulated_inputs(stations=40, days=3, radius_km=1.5)
    _compare(inputs, _changed_lists(inputs, keep_days=2))


def test_the_cases_exercise_the_edge_cases() -> None:
    """Guard against a comparison that passes because the interesting values are absent."""
    dense = simulated_inputs(**CASES["dense, gappy, 15 min, DST"])
    features = build_station_features(
        dense.status, dense.information, dense.weather, dense.snapshot_times, dense.context
    )
    assert features.get_column("bikes_net_flow_15").null_count() > 0  # feed gaps
    assert features.get_column("nb_bikes_weighted").null_count() < features.height / 2
    assert features.get_column("bikes_trend_per_h_60").null_count() < features.height
    # 23-hour local day: no local 02:xx on 2026-03-29
    local_hours = features.filter(
        pl.col("snapshot_at").dt.convert_time_zone("Europe/Paris").dt.day() == 29
    ).get_column("local_hour")
    assert 2 not in set(local_hours.to_list())
    holiday = simulated_inputs(**CASES["holiday, 10 min"])
    features = build_station_features(
        holiday.status,
        holiday.information,
        holiday.weather,
        holiday.snapshot_times,
        holiday.context,
    )
    assert features.get_column("is_holiday").any()
    assert not features.get_column("is_holiday").all()
