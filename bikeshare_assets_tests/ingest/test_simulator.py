"""Behavioural tests of the seeded simulator: determinism, GBFS shape, invariants, and the
dynamics a stockout model has to learn (commute peaks, rain, outages, drift)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from bikeshare_assets.ingest.simulator import (
    SimulatedSource,
    SimulatedSystem,
    SimulationConfig,
)
from bikeshare_assets.ingest.sources import FeedDocument, SnapshotSource, WeatherSource

MONDAY = datetime(2026, 4, 6, tzinfo=UTC)  # a Monday; Paris is UTC+2 then
STATUS_KEYS = {
    "station_id",
    "num_bikes_available",
    "num_bikes_disabled",
    "num_docks_available",
    "num_docks_disabled",
    "is_installed",
    "is_renting",
    "is_returning",
    "last_reported",
}


def small(seed: int = 3, **overrides: object) -> SimulationConfig:
    values: dict[str, object] = {"stations": 60, "days": 3, "seed": seed, "start": MONDAY}
    values.update(overrides)
    return SimulationConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def two_weeks() -> SimulatedSystem:
    """400 stations over two weeks: enough rain, commutes and outages to measure."""
    return SimulatedSystem(
        SimulationConfig(stations=400, days=14, seed=11, start=MONDAY), cache_days=14
    )


@pytest.fixture(scope="module")
def two_weeks_frame(two_weeks: SimulatedSystem) -> pl.DataFrame:
    return two_weeks.status_frame().join(
        two_weeks.station_profile().select("station_id", "kind"), on="station_id"
    )


def activity_per_hour(frame: pl.DataFrame) -> pl.DataFrame:
    """Sum over stations of |change in bikes| between consecutive snapshots, per UTC hour."""
    return (
        frame.sort("station_id", "snapshot_at")
        .with_columns(pl.col("bikes_available").diff().abs().over("station_id").alias("moved"))
        .group_by(pl.col("snapshot_at").dt.truncate("1h").alias("hour_start"))
        .agg(pl.col("moved").sum())
    )


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_same_bytes_and_different_seed_differs() -> None:
    at = MONDAY + timedelta(hours=31, minutes=35)
    a, b, c = SimulatedSystem(small(3)), SimulatedSystem(small(3)), SimulatedSystem(small(4))
    assert a.station_status_document(at) == b.station_status_document(at)
    assert a.station_information_document() == b.station_information_document()
    assert a.hourly_weather().equals(b.hourly_weather())
    assert a.station_status_document(at) != c.station_status_document(at)
    assert a.station_information_document() != c.station_information_document()
    assert not a.hourly_weather().equals(c.hourly_weather())


def test_any_request_order_gives_identical_snapshots() -> None:
    cfg = small(5)
    times = SimulatedSystem(cfg).snapshot_times()
    sample = [*times[::37], times[-1]]
    in_order = SimulatedSystem(cfg)
    expected = {t: in_order.station_status_document(t) for t in sample}

    # a one-day cache forces evictions and re-simulation from checkpoints
    shuffled = SimulatedSystem(cfg, cache_days=1)
    order = sample[:]
    random.Random(0).shuffle(order)
    for t in order + order[::-1]:
        assert shuffled.station_status_document(t) == expected[t], t


def test_a_longer_run_agrees_on_the_shared_days() -> None:
    short, long = SimulatedSystem(small(8, days=2)), SimulatedSystem(small(8, days=4))
    assert short.status_frame().equals(long.status_frame(end=short.end))
    assert short.hourly_weather().equals(long.hourly_weather(end=short.end))


def test_status_frame_holds_exactly_the_documents_numbers() -> None:
    system = SimulatedSystem(small(9))
    frame = system.status_frame()
    for at in system.snapshot_times()[::97]:
        doc = json.loads(system.station_status_document(at))
        parsed = pl.DataFrame(doc["data"]["stations"]).select(
            pl.col("station_id"),
            pl.col("num_bikes_available").alias("bikes_available"),
            pl.col("num_docks_available").alias("docks_available"),
            pl.col("num_bikes_disabled").alias("bikes_disabled"),
            pl.col("num_docks_disabled").alias("docks_disabled"),
            "is_installed",
            "is_renting",
            "is_returning",
            pl.from_epoch("last_reported", time_unit="s").dt.replace_time_zone("UTC"),
        )
        rows = frame.filter(pl.col("snapshot_at") == at).drop("snapshot_at")
        assert parsed.height == rows.height > 0
        assert rows.select(parsed.columns).cast(parsed.schema).equals(parsed), at


# ---- GBFS shape and invariants -------------------------------------------------------------


def test_documents_have_the_gbfs_2_3_shape() -> None:
    system = SimulatedSystem(small(1))
    info = json.loads(system.station_information_document())
    assert info["version"] == "2.3"
    assert isinstance(info["last_updated"], int) and isinstance(info["ttl"], int)
    stations = info["data"]["stations"]
    ids = [s["station_id"] for s in stations]
    assert len(ids) == len(set(ids)) == 60
    assert all(i.startswith("sim-") and isinstance(i, str) for i in ids)
    for s in stations:
        assert set(s) == {"station_id", "name", "lat", "lon", "capacity"}
        assert isinstance(s["name"], str) and s["name"]
        assert 12 <= s["capacity"] <= 60 and isinstance(s["capacity"], int)
        assert abs(s["lat"] - 48.8566) < 0.1 and abs(s["lon"] - 2.3522) < 0.15

    parsed = pl.DataFrame(stations).with_columns(pl.col("capacity").cast(pl.Int32))
    assert parsed.equals(system.information_frame())

    at = MONDAY + timedelta(hours=8)
    status = json.loads(system.station_status_document(at))
    assert status["version"] == "2.3"
    assert status["last_updated"] == int(at.timestamp())
    assert isinstance(status["ttl"], int)
    seen = [s["station_id"] for s in status["data"]["stations"]]
    assert len(seen) == len(set(seen)) and set(seen) <= set(ids)
    for s in status["data"]["stations"]:
        assert set(s) == STATUS_KEYS
        for key in ("is_installed", "is_renting", "is_returning"):
            assert isinstance(s[key], bool)
        for key in STATUS_KEYS - {"station_id", "is_installed", "is_renting", "is_returning"}:
            assert isinstance(s[key], int) and not isinstance(s[key], bool)
        assert s["last_reported"] <= status["last_updated"]


def test_counts_stay_within_capacity(two_weeks: SimulatedSystem) -> None:
    frame = two_weeks.status_frame().join(two_weeks.information_frame(), on="station_id")
    counts = ["bikes_available", "docks_available", "bikes_disabled", "docks_disabled"]
    assert frame.select(pl.min_horizontal(counts).min()).item() >= 0
    assert (frame.select(counts).sum_horizontal() == frame["capacity"]).all()
    assert frame.filter(pl.col("last_reported") > pl.col("snapshot_at")).is_empty()
    assert frame.select(pl.struct("snapshot_at", "station_id").is_unique().all()).item()
    # disabled bikes and docks happen, but only now and then
    assert 0 < (frame["bikes_disabled"] > 0).mean() < 0.3
    assert 0 < (frame["docks_disabled"] > 0).mean() < 0.3


# ---- dynamics ------------------------------------------------------------------------------


def test_weekday_morning_commute_empties_homes_and_fills_offices(
    two_weeks_frame: pl.DataFrame,
) -> None:
    local = two_weeks_frame.with_columns(
        pl.col("snapshot_at").dt.convert_time_zone("Europe/Paris").alias("local")
    ).filter(pl.col("local").dt.weekday() <= 5)
    clock = pl.col("local").dt.strftime("%H:%M")
    before = local.filter(clock == "06:30").select(
        "station_id", "kind", pl.col("local").dt.date().alias("day"), pl.col("bikes_available")
    )
    after = local.filter(clock == "09:30").select(
        "station_id", pl.col("local").dt.date().alias("day"), pl.col("bikes_available")
    )
    change = (
        before.join(after, on=["station_id", "day"], suffix="_after")
        .with_columns((pl.col("bikes_available_after") - pl.col("bikes_available")).alias("d"))
        .group_by("kind")
        .agg(pl.col("d").mean())
    )
    mean = dict(change.iter_rows())
    assert mean["residential"] < -1.0, mean
    assert mean["business"] > 1.0, mean
    # and the evening reverses it
    evening = local.filter(clock.is_in(["16:00", "20:00"])).select(
        "station_id",
        "kind",
        clock.alias("t"),
        pl.col("local").dt.date().alias("day"),
        "bikes_available",
    )
    rev = evening.pivot(on="t", index=["station_id", "kind", "day"], values="bikes_available")
    rev_mean = dict(
        rev.group_by("kind").agg((pl.col("20:00") - pl.col("16:00")).mean()).iter_rows()
    )
    assert rev_mean["residential"] > 0 > rev_mean["business"], rev_mean


def test_public_holidays_ride_like_weekends() -> None:
    """2026-04-06 is Easter Monday: with French holidays on, there is no morning commute."""

    def residential_morning_change(country: str | None) -> float:
        system = SimulatedSystem(small(17, stations=300, days=1, country=country))
        kinds = system.station_profile().select("station_id", "kind")
        frame = system.status_frame().join(kinds, on="station_id")
        clock = pl.col("snapshot_at").dt.strftime("%H:%M")  # UTC: 06:30 -> 09:30 in Paris
        joined = frame.filter(clock == "04:30").join(
            frame.filter(clock == "07:30"), on="station_id", suffix="_after"
        )
        joined = joined.filter(pl.col("kind") == "residential")
        return float((joined["bikes_available_after"] - joined["bikes_available"]).mean())

    workday, holiday = residential_morning_change(None), residential_morning_change("FR")
    assert workday < -2.0, workday
    assert holiday > workday + 1.5, (holiday, workday)


def test_rain_reduces_activity(two_weeks: SimulatedSystem, two_weeks_frame: pl.DataFrame) -> None:
    # The rain of the hour [h, h+1) is published at h+1 (the hour it ended).
    fell = two_weeks.hourly_weather().with_columns(pl.col("hour_start") - timedelta(hours=1))
    hours = (
        activity_per_hour(two_weeks_frame)
        .join(fell, on="hour_start")
        .with_columns(pl.col("hour_start").dt.convert_time_zone("Europe/Paris").alias("local"))
        .with_columns(
            pl.col("local").dt.hour().alias("hour"),
            (pl.col("local").dt.weekday() >= 6).alias("weekend"),
            (pl.col("precipitation_mm") > 0).alias("rain"),
        )
        .filter(pl.col("hour").is_between(7, 21))
    )
    assert hours["rain"].sum() >= 15, "too few rainy daytime hours to compare"
    matched = (
        hours.group_by("hour", "weekend", "rain")
        .agg(pl.col("moved").mean())
        .pivot(on="rain", index=["hour", "weekend"], values="moved")
        .drop_nulls()
    )
    assert matched.height >= 8
    ratio = matched["true"].sum() / matched["false"].sum()
    assert ratio < 0.9, ratio
    assert (matched["true"] < matched["false"]).mean() >= 0.75


def test_outages_happen_but_rarely(
    two_weeks: SimulatedSystem, two_weeks_frame: pl.DataFrame
) -> None:
    frame = two_weeks_frame
    not_renting = (~frame["is_renting"]).mean()
    assert 0 < not_renting < 0.05, not_renting
    cadence = timedelta(minutes=two_weeks.config.cadence_minutes)
    down = frame.filter(~pl.col("is_renting"))
    # a dark station keeps its old last_reported, and its counts freeze
    stale = down.filter(pl.col("last_reported") < pl.col("snapshot_at") - cadence)
    assert stale.height > 0.9 * down.height
    per_outage = (
        frame.sort("station_id", "snapshot_at")
        .filter(~pl.col("is_renting"))
        .group_by("station_id", "last_reported")
        .agg(
            pl.len(),
            pl.col("bikes_available").n_unique().alias("bike_values"),
            pl.col("docks_available").n_unique().alias("dock_values"),
        )
    )
    assert (per_outage["len"] > 1).sum() > 5
    assert (per_outage["bike_values"] == 1).all() and (per_outage["dock_values"] == 1).all()
    working = frame.filter(pl.col("is_renting"))
    assert (working["last_reported"] > working["snapshot_at"] - cadence).all()
    # some stations are occasionally missing from the feed, never many
    expected_rows = two_weeks.config.stations * len(two_weeks.snapshot_times())
    missing = 1 - frame.height / expected_rows
    assert 0 < missing < 0.02, missing


def test_stockout_rate_is_realistic(two_weeks_frame: pl.DataFrame) -> None:
    stockout = ((pl.col("bikes_available") <= 2) | (pl.col("docks_available") <= 2)).mean()
    rate = two_weeks_frame.select(stockout).item()
    assert 0.03 < rate < 0.30, rate
    by_kind = dict(two_weeks_frame.group_by("kind").agg(stockout).iter_rows())
    assert all(0 < r < 0.5 for r in by_kind.values()), by_kind


def test_demand_scale_drift_changes_activity() -> None:
    def moved(**knobs: object) -> float:
        system = SimulatedSystem(small(21, stations=150, days=2, **knobs))
        return float(activity_per_hour(system.status_frame())["moved"].sum())

    base, busy, quiet = moved(), moved(demand_scale=1.6), moved(demand_scale=0.5)
    assert busy > 1.2 * base, (busy, base)
    assert quiet < 0.75 * base, (quiet, base)


def test_drift_starts_when_asked_and_not_before() -> None:
    drift_at = MONDAY + timedelta(days=1, hours=12)
    plain = SimulatedSystem(small(13))
    drifted = SimulatedSystem(
        small(13, demand_scale=2.0, temperature_shift_c=5.0, drift_start=drift_at)
    )
    assert plain.status_frame(end=drift_at).equals(drifted.status_frame(end=drift_at))
    assert not plain.status_frame(start=drift_at).equals(drifted.status_frame(start=drift_at))
    w0, w1 = plain.hourly_weather(), drifted.hourly_weather()
    before = w0["hour_start"] < drift_at
    assert w0.filter(before).equals(w1.filter(before))
    shift = (w1["temperature_c"] - w0["temperature_c"]).filter(~before)
    assert shift.min() >= 4.89 and shift.max() <= 5.11


# ---- weather -------------------------------------------------------------------------------


def test_hourly_weather_schema_and_plausibility(two_weeks: SimulatedSystem) -> None:
    w = two_weeks.hourly_weather()
    assert w.schema == pl.Schema(
        {
            "hour_start": pl.Datetime("us", "UTC"),
            "temperature_c": pl.Float64,
            "precipitation_mm": pl.Float64,
            "wind_speed_kmh": pl.Float64,
            "weather_code": pl.Int32,
        }
    )
    assert w.height == 14 * 24
    assert w["hour_start"].diff().drop_nulls().unique().to_list() == [timedelta(hours=1)]
    assert w["temperature_c"].is_between(-25, 45).all()
    assert w["precipitation_mm"].min() >= 0 and w["wind_speed_kmh"].min() >= 0
    assert 0.02 < (w["precipitation_mm"] > 0).mean() < 0.4
    assert ((w["precipitation_mm"] > 0) == (w["weather_code"] >= 51)).all()
    # a diurnal cycle: afternoons warmer than nights
    local_hour = w["hour_start"].dt.convert_time_zone("Europe/Paris").dt.hour()
    assert (
        w.filter(local_hour.is_between(13, 16))["temperature_c"].mean()
        > w.filter(local_hour.is_between(2, 5))["temperature_c"].mean() + 2
    )
    part = two_weeks.hourly_weather(MONDAY + timedelta(hours=5), MONDAY + timedelta(hours=8))
    assert part["hour_start"].to_list() == [MONDAY + timedelta(hours=h) for h in (5, 6, 7)]
    assert two_weeks.hourly_weather(MONDAY - timedelta(days=3), MONDAY).is_empty()


def test_weather_is_published_as_observable_at_its_label(two_weeks: SimulatedSystem) -> None:
    """Like Open-Meteo and Meteostat: the row labelled T holds the temperature at T and the
    rain of the hour that ended at T. The simulator's own weather record (hour i covers
    [origin + i h, origin + (i + 1) h) and drives that hour's trips) is the truth."""
    w = two_weeks.hourly_weather()
    truth = two_weeks._weather
    i = ((w["hour_start"] - truth.origin).dt.total_seconds() // 3600).cast(pl.Int64).to_numpy()
    assert w["temperature_c"].to_list() == truth.temperature_c[i].tolist()
    assert w["precipitation_mm"].to_list() == truth.precipitation_mm[i - 1].tolist()
    assert w["weather_code"].to_list() == truth.weather_code[i - 1].tolist()
    # A rain spell that starts at h: the row labelled h still says dry, the row h+1 has it.
    rain = truth.precipitation_mm
    starts = [k for k in range(len(i) - 1) if rain[i[k]] > 0 and rain[i[k] - 1] == 0]
    assert starts, "no rain spell starts in two weeks"
    k = starts[0]
    assert w["precipitation_mm"][k] == 0.0
    assert w["precipitation_mm"][k + 1] == rain[i[k]] > 0


# ---- the source interface ------------------------------------------------------------------


def test_simulated_source_speaks_the_source_protocols() -> None:
    cfg = small(2, days=1)
    source = SimulatedSource(cfg)
    assert isinstance(source, SnapshotSource) and isinstance(source, WeatherSource)

    at = MONDAY + timedelta(hours=7, minutes=5)
    doc = source.station_status(at, at + timedelta(minutes=5))
    assert isinstance(doc, FeedDocument)
    assert doc.feed == "station_status" and doc.received_at == at
    assert doc.url == "simulator://seed=2/station_status?at=2026-04-06T07:05:00Z"
    assert doc.body == source.system.station_status_document(at)
    # a window that is not on the grid gets the first snapshot inside it
    late = source.station_status(at + timedelta(minutes=2), at + timedelta(minutes=9))
    assert late is not None and late.received_at == at + timedelta(minutes=5)
    assert source.station_status(MONDAY - timedelta(minutes=5), MONDAY) is None
    assert source.station_status(source.system.end, source.system.end + timedelta(hours=1)) is None

    info = source.station_information(MONDAY, MONDAY + timedelta(days=1))
    assert info is not None and info.feed == "station_information"
    assert info.url == "simulator://seed=2/station_information" and info.received_at == MONDAY
    assert json.loads(info.body)["data"]["stations"]
    assert (
        source.station_information(MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)) is None
    )

    weather = source.hourly(MONDAY, MONDAY + timedelta(hours=6))
    assert weather.height == 6


def test_config_rejects_what_it_cannot_simulate() -> None:
    with pytest.raises(ValueError, match="aligned"):
        small(start=MONDAY + timedelta(minutes=2))
    with pytest.raises(ValueError, match="timezone-aware"):
        small(start=datetime(2026, 4, 6))
    with pytest.raises(ValueError, match="divide 60"):
        small(cadence_minutes=7)
    with pytest.raises(ValueError, match="no snapshot"):
        SimulatedSystem(small()).station_status_document(MONDAY + timedelta(minutes=1))


# ---- scale ---------------------------------------------------------------------------------


def test_ten_thousand_stations_for_a_day() -> None:
    system = SimulatedSystem(SimulationConfig(stations=10_000, days=1, seed=1, start=MONDAY))
    info = system.information_frame()
    assert info.height == 10_000 and info["station_id"].n_unique() == 10_000
    frame = system.status_frame()
    steps = len(system.snapshot_times())
    assert steps == 288
    assert 0.98 * 10_000 * steps < frame.height <= 10_000 * steps
    doc = json.loads(system.station_status_document(MONDAY + timedelta(hours=18)))
    assert len(doc["data"]["stations"]) > 9_800
    capacity = frame.join(info.select("station_id", "capacity"), on="station_id")
    total = capacity.select(
        pl.sum_horizontal("bikes_available", "docks_available", "bikes_disabled", "docks_disabled")
        == pl.col("capacity")
    )
    assert total.to_series().all()
    stockout = frame.select(
        ((pl.col("bikes_available") <= 2) | (pl.col("docks_available") <= 2)).mean()
    ).item()
    assert 0.02 < stockout < 0.4, stockout
