"""Feature functions on small hand-made frames with answers worked out independently
(numpy, loops, the calendar), plus the no-look-ahead property on slices of the real
Vélib' recording served through the replay and GBFS parsing path."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bikeshare_assets.features.compute import (
    EARTH_RADIUS_M,
    FEATURE_COLUMNS,
    KEY,
    NEIGHBOUR_RADIUS_M,
    FeatureContext,
    build_station_features,
    feature_schema,
    neighbour_edges,
    neighbour_features,
    observable_weather,
    rolling_features,
    static_features,
    time_features,
    weather_features,
)
from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.ingest.weather import RecordedWeatherSource
from bikeshare_assets_tests.conftest import RECORDED_WEATHER, RECORDING
from bikeshare_assets_tests.support.frames import (
    information_frame,
    replayed_information,
    replayed_status,
    status_frame,
    utc,
    weather_frame,
)

T0 = utc(2025, 9, 8, 10, 0)  # a Monday
T = T0 + timedelta(minutes=60)  # the snapshot the rolling tests look at
PARIS = FeatureContext("Europe/Paris", "FR", 15)


def at(minutes: int):
    return T0 + timedelta(minutes=minutes)


# station -> {minutes after T0: (bikes, docks)}
SERIES: dict[str, dict[int, tuple[int, int]]] = {
    # every 15 minutes
    "a": {0: (10, 10), 15: (8, 12), 30: (5, 15), 45: (6, 14), 60: (3, 17)},
    # the recorder missed 10:45 for this station: nothing may stand in for it
    "b": {0: (4, 16), 15: (6, 14), 30: (2, 18), 60: (9, 11)},
    # previous snapshot two hours earlier: outside every window
    "c": {-60: (7, 13), 60: (8, 12)},
    # an off-grid (5-minute feed) snapshot at 10:50: windows are minutes, not rows
    "d": {0: (1, 19), 50: (4, 16), 60: (6, 14)},
}


def series_status() -> pl.DataFrame:
    return status_frame(
        (at(m), station, bikes, docks)
        for station, points in SERIES.items()
        for m, (bikes, docks) in points.items()
    )


def rolled_at_t() -> dict[str, dict]:
    history = series_status()
    out = rolling_features(history, history.filter(pl.col("snapshot_at") == T))
    return {r["station_id"]: r for r in out.iter_rows(named=True)}


def reference_window(station: str, w: int) -> dict[str, float | int | None]:
    """The window statistics of [T - w, T], by hand: numpy over the snapshots that exist."""
    points = sorted((m, b, d) for m, (b, d) in SERIES[station].items() if 60 - w <= m <= 60)
    minutes = np.array([m for m, _, _ in points], dtype=float)
    bikes = np.array([b for _, b, _ in points], dtype=float)
    docks = np.array([d for _, _, d in points], dtype=float)
    n = len(points)
    return {
        f"obs_{w}": n,
        f"bikes_mean_{w}": float(bikes.mean()),
        f"bikes_var_{w}": float(bikes.var(ddof=1)) if n >= 2 else None,
        f"bikes_trend_per_h_{w}": float(np.polyfit(minutes / 60.0, bikes, 1)[0])
        if n >= 2
        else None,
        f"bikes_min_{w}": float(bikes.min()),
        f"docks_min_{w}": float(docks.min()),
    }


def close(actual, expected) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


# --------------------------------------------------------------------------------------
# Rolling windows, net flows, gaps
# --------------------------------------------------------------------------------------


def test_net_flows_are_bikes_now_minus_bikes_exactly_w_minutes_earlier() -> None:
    a = rolled_at_t()["a"]
    # a: bikes 10, 8, 5, 6, 3 at 10:00 .. 11:00; docks move the other way
    assert (a["bikes_net_flow_15"], a["bikes_net_flow_30"], a["bikes_net_flow_60"]) == (
        3 - 6,
        3 - 5,
        3 - 10,
    )
    assert (a["docks_net_flow_15"], a["docks_net_flow_30"], a["docks_net_flow_60"]) == (
        17 - 14,
        17 - 15,
        17 - 10,
    )
    d = rolled_at_t()["d"]
    # d has 10:00, 10:50 and 11:00: nothing at exactly 10:45 or 10:30, so no 15/30 flow,
    # but the 60-minute flow exists (10:00 is exactly 60 minutes before).
    assert d["bikes_net_flow_15"] is None and d["bikes_net_flow_30"] is None
    assert d["bikes_net_flow_60"] == 6 - 1
    c = rolled_at_t()["c"]
    assert c["bikes_net_flow_60"] is None  # its previous snapshot is 120 minutes old


@pytest.mark.parametrize("station", ["a", "b", "c", "d"])
@pytest.mark.parametrize("w", [15, 30, 60])
def test_window_statistics_match_numpy_over_the_snapshots_in_the_window(
    station: str, w: int
) -> None:
    row = rolled_at_t()[station]
    expected = reference_window(station, w)
    mismatched = {k: (row[k], v) for k, v in expected.items() if not close(row[k], v)}
    assert not mismatched, mismatched


def test_window_statistics_known_values() -> None:
    a = rolled_at_t()["a"]
    # [10:45, 11:00] holds 6 and 3; [10:30, 11:00] holds 5, 6, 3; the hour holds all five.
    assert (a["obs_15"], a["obs_30"], a["obs_60"]) == (2, 3, 5)
    assert a["bikes_mean_15"] == pytest.approx(4.5)
    assert a["bikes_var_15"] == pytest.approx(4.5)
    assert a["bikes_trend_per_h_15"] == pytest.approx(-12.0)  # -3 bikes in a quarter hour
    assert a["bikes_trend_per_h_30"] == pytest.approx(-4.0)
    assert a["bikes_mean_60"] == pytest.approx(6.4)
    assert a["bikes_var_60"] == pytest.approx(7.3)
    assert a["bikes_trend_per_h_60"] == pytest.approx(-6.4)
    assert (a["bikes_min_60"], a["docks_min_60"]) == (3.0, 10.0)


def test_minutes_since_previous() -> None:
    rolled = rolled_at_t()
    assert rolled["a"]["minutes_since_previous"] == 15.0
    assert rolled["b"]["minutes_since_previous"] == 30.0  # across the missed 10:45
    assert rolled["d"]["minutes_since_previous"] == 10.0
    # Two hours back is beyond the 60-minute lookback: not "the previous snapshot".
    assert rolled["c"]["minutes_since_previous"] is None
    history = series_status()
    first = rolling_features(history, history.filter(pl.col("snapshot_at") == at(0)))
    assert first.filter(pl.col("station_id") == "a")["minutes_since_previous"].item() is None


def test_a_recording_gap_is_never_bridged() -> None:
    """b was not recorded at 10:45: its 15-minute flow is null and the windows count only
    the snapshots that exist; a forward-filled 10:30 value (2 bikes) would show up in the
    15-minute mean, minimum and count."""
    b = rolled_at_t()["b"]
    assert b["bikes_net_flow_15"] is None and b["docks_net_flow_15"] is None
    assert b["bikes_net_flow_30"] == 9 - 2 and b["bikes_net_flow_60"] == 9 - 4
    assert b["obs_15"] == 1 < rolled_at_t()["a"]["obs_15"] == 2
    assert (b["bikes_mean_15"], b["bikes_min_15"], b["docks_min_15"]) == (9.0, 9.0, 11.0)
    assert b["bikes_var_15"] is None and b["bikes_trend_per_h_15"] is None
    assert (b["obs_30"], b["bikes_mean_30"], b["bikes_min_30"]) == (2, 5.5, 2.0)
    assert b["bikes_trend_per_h_30"] == pytest.approx(14.0)  # +7 bikes in half an hour
    assert b["obs_60"] == 4


def test_a_whole_snapshot_missed_by_the_recorder_nulls_every_stations_flow() -> None:
    history = series_status().filter(pl.col("snapshot_at") != at(45))
    features = build_station_features(history, _info(), pl.DataFrame(), [T], PARIS)
    assert features.height == 4
    assert features["bikes_net_flow_15"].null_count() == 4
    assert features["obs_15"].to_list() == [1, 1, 1, 2]  # a, b, c, d (d has 10:50)
    assert features["bikes_net_flow_30"].to_list() == [3 - 5, 9 - 2, None, None]


# --------------------------------------------------------------------------------------
# Current state, static features, time, weather
# --------------------------------------------------------------------------------------


def _info(day=None, capacity: int = 20) -> pl.DataFrame:
    day = day or utc(2025, 9, 8)
    return information_frame(
        day,
        [
            ("a", 48.8566, 2.3522, capacity),
            ("b", 48.8600, 2.3400, capacity),
            ("c", 48.8700, 2.3700, capacity),
            ("d", 48.8400, 2.3200, capacity),
        ],
    )


def test_build_station_features_shape_and_utilisation() -> None:
    history = status_frame(
        [
            (at(0), "a", 5, 15),
            (at(0), "b", 3, None),  # a station that publishes no docks
            (at(0), "c", 0, 0),  # a station with every dock out of order
            (at(0), "d", 4, 12, False, True),  # not renting
            (at(15), "a", 6, 14),
        ]
    )
    features = build_station_features(history, _info(), pl.DataFrame(), [at(0)], PARIS)

    assert features.columns == KEY + FEATURE_COLUMNS
    assert dict(features.schema) == feature_schema()
    # Only t's snapshot rows, nothing from 10:15.
    assert features["snapshot_at"].unique().to_list() == [at(0)]
    rows = {r["station_id"]: r for r in features.iter_rows(named=True)}
    assert rows["a"]["utilisation"] == pytest.approx(5 / 20)
    assert rows["b"]["utilisation"] is None
    assert rows["c"]["utilisation"] is None
    assert rows["d"]["utilisation"] == pytest.approx(4 / 16)
    assert (rows["d"]["is_renting"], rows["d"]["is_returning"]) == (0.0, 1.0)
    assert (rows["a"]["capacity"], rows["a"]["lat"], rows["a"]["lon"]) == (20.0, 48.8566, 2.3522)


@pytest.mark.parametrize(
    ("at_utc", "hour", "minute_of_day", "weekday", "weekend", "holiday"),
    [
        # Autumn DST change, Sunday 2025-10-26: 03:00 CEST -> 02:00 CET at 01:00 UTC.
        (utc(2025, 10, 25, 21, 45), 23, 23 * 60 + 45, 6, True, False),  # Sat 23:45 CEST
        (utc(2025, 10, 26, 0, 30), 2, 150, 7, True, False),  # 02:30 CEST
        (utc(2025, 10, 26, 1, 30), 2, 150, 7, True, False),  # 02:30 CET, one hour later
        (utc(2025, 10, 26, 2, 30), 3, 210, 7, True, False),
        (utc(2025, 10, 27, 7, 0), 8, 480, 1, False, False),  # Monday 08:00 CET
        # Spring DST change, Sunday 2025-03-30: 02:00 CET -> 03:00 CEST at 01:00 UTC.
        (utc(2025, 3, 30, 0, 30), 1, 90, 7, True, False),
        (utc(2025, 3, 30, 1, 30), 3, 210, 7, True, False),
        # Armistice, Tuesday 2025-11-11, a French public holiday, in local dates.
        (utc(2025, 11, 10, 22, 30), 23, 23 * 60 + 30, 1, False, False),  # Mon 23:30
        (utc(2025, 11, 10, 23, 30), 0, 30, 2, False, True),  # Tue 00:30, already 11 Nov
        (utc(2025, 11, 11, 12, 0), 13, 780, 2, False, True),
        (utc(2025, 11, 11, 23, 15), 0, 15, 3, False, False),  # Wed 00:15
        # 14 July on a Monday
        (utc(2025, 7, 14, 8, 0), 10, 600, 1, False, True),
    ],
)
def test_time_features_are_local_time_in_the_citys_timezone(
    at_utc, hour, minute_of_day, weekday, weekend, holiday
) -> None:
    frame = pl.DataFrame({"snapshot_at": [at_utc], "station_id": ["a"]})
    row = time_features(frame, "Europe/Paris", "FR").row(0, named=True)
    assert (
        row["local_hour"],
        row["local_minute_of_day"],
        row["weekday"],
        row["is_weekend"],
        row["is_holiday"],
    ) == (hour, minute_of_day, weekday, weekend, holiday)


def test_holidays_follow_the_citys_country() -> None:
    frame = pl.DataFrame({"snapshot_at": [utc(2025, 11, 11, 12, 0)], "station_id": ["a"]})
    assert time_features(frame, "Europe/Paris", "FR")["is_holiday"].item() is True
    assert time_features(frame, "Europe/Paris", "US")["is_holiday"].item() is True  # Veterans
    assert time_features(frame, "Europe/Paris", "DE")["is_holiday"].item() is False


def test_weather_is_the_latest_hour_at_or_before_t_within_three_hours() -> None:
    weather = weather_frame(
        [
            (utc(2025, 9, 8, 6), 6.0, 0.6, 16.0),
            (utc(2025, 9, 8, 9), 9.0, 0.9, 19.0),
            (utc(2025, 9, 8, 10), 10.0, 1.0, 20.0),
            (utc(2025, 9, 8, 11), 11.0, 1.1, 21.0),
        ]
    )
    cases = {
        utc(2025, 9, 8, 5, 30): None,  # nothing published before
        utc(2025, 9, 8, 8, 59): 6.0,  # 2 h 59 old: still usable
        utc(2025, 9, 8, 9, 0): 9.0,  # the hour that starts at t
        utc(2025, 9, 8, 9, 45): 9.0,
        utc(2025, 9, 8, 10, 59): 10.0,  # 11:00 has not started
        utc(2025, 9, 8, 14, 30): None,  # the newest hour is 3 h 30 old: none
    }
    frame = pl.DataFrame({"snapshot_at": list(cases), "station_id": ["a"] * len(cases)})
    out = weather_features(frame, weather)
    got = {r["snapshot_at"]: r for r in out.iter_rows(named=True)}
    assert {t: got[t]["temperature_c"] for t in cases} == cases
    assert got[utc(2025, 9, 8, 9, 45)]["precipitation_mm"] == 0.9
    assert got[utc(2025, 9, 8, 9, 45)]["wind_speed_kmh"] == 19.0
    assert got[utc(2025, 9, 8, 14, 30)]["precipitation_mm"] is None

    none = weather_features(frame, weather.clear())
    assert none["temperature_c"].null_count() == len(cases)


def test_static_features_come_from_the_snapshots_own_utc_day() -> None:
    """The station list of t's own (UTC) day: a capacity or coordinate change published on
    a later day must not reach earlier snapshots, and a day without a list has none."""
    info = pl.concat(
        [
            information_frame(utc(2025, 9, 8), [("a", 48.85, 2.35, 20)]),
            information_frame(utc(2025, 9, 9), [("a", 48.86, 2.36, 30)]),
        ]
    )
    times = [
        utc(2025, 9, 8, 21, 0),
        utc(2025, 9, 8, 22, 30),  # already 9 Sep in Paris, still the 8 Sep list (UTC day)
        utc(2025, 9, 8, 23, 45),
        utc(2025, 9, 9, 0, 0),
        utc(2025, 9, 10, 0, 15),  # no list for 10 Sep
    ]
    frame = pl.DataFrame({"snapshot_at": times, "station_id": ["a"] * len(times)})
    out = static_features(frame, info).sort("snapshot_at")
    assert out["capacity"].to_list() == [20.0, 20.0, 20.0, 30.0, None]
    assert out["lat"].to_list() == [48.85, 48.85, 48.85, 48.86, None]

    history = status_frame([(t, "a", 4, 12) for t in times])
    features = build_station_features(history, info, pl.DataFrame(), times, PARIS)
    # No list that day: capacity falls back to bikes + free docks, location stays unknown.
    assert features["capacity"].to_list() == [20.0, 20.0, 20.0, 30.0, 16.0]
    assert features["lat"].to_list()[-1] is None


def test_grid_cells_are_about_500_metres() -> None:
    info = information_frame(
        utc(2025, 9, 8),
        [
            ("near1", 48.85601, 2.35201, 20),
            ("near2", 48.85611, 2.35211, 20),
            ("far", 48.86601, 2.36201, 20),
        ],
    )
    frame = pl.DataFrame(
        {"snapshot_at": [utc(2025, 9, 8, 10)] * 3, "station_id": ["near1", "near2", "far"]}
    )
    cells = dict(static_features(frame, info).select("station_id", "grid_cell").iter_rows())
    assert cells["near1"] == cells["near2"] != cells["far"]


# --------------------------------------------------------------------------------------
# Neighbours against a brute-force reference
# --------------------------------------------------------------------------------------

NEIGHBOURHOOD = [
    ("a", 48.8566, 2.3522),
    ("b", 48.8586, 2.3522),  # ~220 m north of a
    ("c", 48.8566, 2.3572),  # ~370 m east of a
    ("d", 48.8536, 2.3502),  # ~370 m south-west of a, > 500 m from b
    ("e", 48.8606, 2.3562),  # > 500 m from a, within reach of b and c
    ("f", 48.8700, 2.3700),  # alone
]


def haversine_m(p: tuple[float, float], q: tuple[float, float]) -> float:
    (lat1, lon1), (lat2, lon2) = (tuple(math.radians(v) for v in x) for x in (p, q))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def brute_force_neighbours(current: pl.DataFrame) -> dict[tuple, dict[str, float | None]]:
    coords = {s: (lat, lon) for s, lat, lon in NEIGHBOURHOOD}
    rows = list(current.iter_rows(named=True))
    out = {}
    for me in rows:
        sums: dict[str, list[float]] = {}
        total = 0.0
        for other in rows:
            if other["snapshot_at"] != me["snapshot_at"] or other["station_id"] == me["station_id"]:
                continue
            if me["station_id"] not in coords or other["station_id"] not in coords:
                continue
            d = haversine_m(coords[me["station_id"]], coords[other["station_id"]])
            if d > NEIGHBOUR_RADIUS_M:
                continue
            w = 1.0 - d / NEIGHBOUR_RADIUS_M
            total += w
            values = {
                "nb_bikes_weighted": other["bikes_available"],
                "nb_docks_weighted": other["docks_available"],
                "nb_empty_share": None
                if other["bikes_available"] is None
                else float(other["bikes_available"] <= 2),
                "nb_full_share": None
                if other["docks_available"] is None
                else float(other["docks_available"] <= 2),
                "nb_bikes_net_flow_30": other["bikes_net_flow_30"],
            }
            for name, value in values.items():
                num_den = sums.setdefault(name, [0.0, 0.0])
                if value is not None:
                    num_den[0] += w * value
                    num_den[1] += w
        result: dict[str, float | None] = {"nb_weight": total}
        for name in (
            "nb_bikes_weighted",
            "nb_docks_weighted",
            "nb_empty_share",
            "nb_full_share",
            "nb_bikes_net_flow_30",
        ):
            num, den = sums.get(name, [0.0, 0.0])
            result[name] = num / den if den > 0 else None
        out[(me["snapshot_at"], me["station_id"])] = result
    return out


def test_neighbour_edges_are_the_pairs_within_500_m_weighted_by_distance() -> None:
    info = information_frame(utc(2025, 9, 8), [(s, lat, lon, 20) for s, lat, lon in NEIGHBOURHOOD])
    edges = {
        (r["station_id"], r["neighbour_id"]): r["weight"]
        for r in neighbour_edges(info).iter_rows(named=True)
    }
    coords = {s: (lat, lon) for s, lat, lon in NEIGHBOURHOOD}
    expected = {}
    for i in coords:
        for j in coords:
            d = haversine_m(coords[i], coords[j])
            if i != j and d <= NEIGHBOUR_RADIUS_M:
                expected[(i, j)] = 1.0 - d / NEIGHBOUR_RADIUS_M
    assert set(edges) == set(expected)
    assert {("a", "b"), ("a", "c"), ("a", "d"), ("b", "e"), ("c", "e")} <= set(expected)
    assert ("a", "e") not in expected and ("b", "d") not in expected
    for pair, weight in expected.items():
        assert edges[pair] == pytest.approx(weight, rel=1e-9), pair


def test_neighbour_features_match_a_brute_force_reference() -> None:
    t1, t2 = utc(2025, 9, 8, 10, 0), utc(2025, 9, 8, 10, 15)
    current = pl.DataFrame(
        [
            # t1: everyone reports; b publishes no docks; c and e have no 30-min flow
            (t1, "a", 5.0, 10.0, -2.0),
            (t1, "b", 1.0, None, 3.0),
            (t1, "c", 12.0, 2.0, None),
            (t1, "d", 2.0, 8.0, 4.0),
            (t1, "e", 0.0, 20.0, None),
            (t1, "f", 3.0, 5.0, 1.0),
            (t1, "g", 7.0, 7.0, 0.0),  # not in the station list: no coordinates
            # t2: d and e did not report
            (t2, "a", 4.0, 11.0, -1.0),
            (t2, "b", 2.0, 18.0, 1.0),
            (t2, "c", 9.0, 5.0, -3.0),
            (t2, "f", 3.0, 5.0, 0.0),
        ],
        schema={
            "snapshot_at": pl.Datetime("us", "UTC"),
            "station_id": pl.String,
            "bikes_available": pl.Float64,
            "docks_available": pl.Float64,
            "bikes_net_flow_30": pl.Float64,
        },
        orient="row",
    )
    info = information_frame(utc(2025, 9, 8), [(s, lat, lon, 20) for s, lat, lon in NEIGHBOURHOOD])

    got = neighbour_features(current, neighbour_edges(info))
    expected = brute_force_neighbours(current)

    assert got.height == current.height
    for row in got.iter_rows(named=True):
        want = expected[(row["snapshot_at"], row["station_id"])]
        for name, value in want.items():
            assert close(row[name], value), (row["snapshot_at"], row["station_id"], name)
    a1 = expected[(t1, "a")]
    assert a1["nb_weight"] > 0 and a1["nb_docks_weighted"] is not None  # the reference is not empty
    by_key = {(r["snapshot_at"], r["station_id"]): r for r in got.iter_rows(named=True)}
    assert by_key[(t1, "f")]["nb_weight"] == 0.0 and by_key[(t1, "f")]["nb_bikes_weighted"] is None
    assert by_key[(t1, "g")]["nb_weight"] == 0.0
    # a at t2 no longer counts d, which did not report: weights are per snapshot
    assert by_key[(t2, "a")]["nb_weight"] < by_key[(t1, "a")]["nb_weight"]


# --------------------------------------------------------------------------------------
# No look-ahead, on the real recording through the replay and parsing path
# --------------------------------------------------------------------------------------

CADENCE = timedelta(minutes=15)
LATE = utc(2025, 9, 8, 23, 45)  # the last recorded bin of 8 Sep (UTC)
MOVED = "12039"  # its capacity really changes on 9 Sep (38 -> 50)


@pytest.fixture(scope="module")
def replay() -> ReplaySource:
    return ReplaySource(RECORDING)


@pytest.fixture(scope="module")
def weather_all() -> pl.DataFrame:
    return RecordedWeatherSource(RECORDED_WEATHER).hourly(utc(2025, 9, 8), utc(2025, 9, 10))


@pytest.fixture(scope="module")
def around_late(replay: ReplaySource) -> dict[str, pl.DataFrame]:
    return {
        "past": replayed_status(replay, LATE - timedelta(minutes=60), LATE + CADENCE, CADENCE),
        "future": replayed_status(replay, LATE + CADENCE, utc(2025, 9, 9, 12, 45), CADENCE),
        "info_8": replayed_information(replay, utc(2025, 9, 8)),
        "info_9": replayed_information(replay, utc(2025, 9, 9)),
    }


def test_features_at_t_ignore_everything_published_after_t(around_late, weather_all) -> None:
    past, future = around_late["past"], around_late["future"]
    info_8, info_9 = around_late["info_8"], around_late["info_9"]
    assert past["snapshot_at"].max() == LATE and future["snapshot_at"].min() > LATE
    assert future["snapshot_at"].n_unique() >= 5
    capacities = [
        i.filter(pl.col("station_id") == MOVED)["capacity"].item() for i in (info_8, info_9)
    ]
    assert capacities == [38, 50]

    baseline = build_station_features(
        past, info_8, weather_all.filter(pl.col("hour_start") <= LATE), [LATE], PARIS
    )
    assert baseline.height > 1000
    assert baseline["bikes_net_flow_60"].null_count() < baseline.height  # real windows

    # What the future could hold: the real snapshots, or wildly different ones; the real
    # next-day list, or one where every capacity changed and a station moved 300 m; and
    # weather that turned into a storm.
    emptied = future.with_columns(pl.lit(0, pl.Int32).alias("bikes_available"))
    rebuilt = info_9.with_columns(
        pl.col("capacity") + 10,
        pl.when(pl.col("station_id") == MOVED)
        .then(pl.col("lat") + 0.0027)
        .otherwise(pl.col("lat"))
        .alias("lat"),
    )
    storm = weather_all.with_columns(
        pl.when(pl.col("hour_start") > LATE)
        .then(pl.col("precipitation_mm") + 30)
        .otherwise(pl.col("precipitation_mm"))
    )
    for later_status in (future, emptied):
        for later_info in (info_9, rebuilt):
            # the station lists of the days around t, in either order
            for infos in ([info_8, later_info], [later_info, info_8]):
                with_future = build_station_features(
                    pl.concat([past, later_status]), pl.concat(infos), storm, [LATE], PARIS
                )
                assert_frame_equal(with_future, baseline)

    # The comparison is sensitive: t's own day's list does change t's features.
    own_day = build_station_features(
        past, info_8.with_columns(pl.col("capacity") + 10), weather_all, [LATE], PARIS
    )
    assert (own_day["capacity"] - baseline["capacity"]).unique().to_list() == [10.0]


def test_a_backfill_and_a_live_run_compute_the_same_features(replay, weather_all) -> None:
    """Online and offline are the same function: t on 9 Sep gets the same features whether
    the run also read 8 Sep's station list (a multi-day backfill) or only its own day's (a
    live run), even when a station moved between the two days."""
    t = utc(2025, 9, 9, 12, 30)
    history = replayed_status(replay, t - timedelta(minutes=60), t + CADENCE, CADENCE)
    info_8 = replayed_information(replay, utc(2025, 9, 8))
    info_9 = replayed_information(replay, utc(2025, 9, 9)).with_columns(
        pl.when(pl.col("station_id") == MOVED)
        .then(pl.col("lat") + 0.0027)
        .otherwise(pl.col("lat"))
        .alias("lat")
    )

    live = build_station_features(history, info_9, weather_all, [t], PARIS)
    backfill = build_station_features(history, pl.concat([info_8, info_9]), weather_all, [t], PARIS)

    assert live.height > 1000
    assert_frame_equal(backfill, live)


def test_rain_of_the_hour_under_way_is_not_visible() -> None:
    """Both sources label precipitation by the end of the hour it fell in (Open-Meteo: "sum
    of the preceding hour"; Meteostat: the observed last-hour total). The rain of [h, h+1)
    is the row h+1: at h:30 only the row h (rain of [h-1, h)) and h's temperature exist."""
    h = utc(2025, 9, 8, 17)
    weather = weather_frame(
        [
            (h, 21.0, 0.0, 12.0),  # dry in [h-1, h); 21 °C at h
            (h + timedelta(hours=1), 18.0, 6.4, 30.0),  # a downpour in [h, h+1)
        ]
    )
    times = [h + timedelta(minutes=m) for m in (0, 30, 59, 60, 90)]
    frame = pl.DataFrame({"snapshot_at": times, "station_id": ["a"] * len(times)})

    got = {r["snapshot_at"]: r for r in weather_features(frame, weather).iter_rows(named=True)}

    for t in times[:3]:
        assert (got[t]["precipitation_mm"], got[t]["temperature_c"]) == (0.0, 21.0), t
    for t in times[3:]:
        assert (got[t]["precipitation_mm"], got[t]["temperature_c"]) == (6.4, 18.0), t
    assert observable_weather(weather, h + timedelta(minutes=30))["hour_start"].to_list() == [h]


def test_recorded_open_meteo_rows_keep_their_time_label() -> None:
    """The recording's hour_utc is Open-Meteo's own `time` (requested with timezone=UTC), so
    the raw row T carries the precipitation of [T-1h, T): the real 2025-09-08 rows, read
    back unchanged under hour_start = T."""
    csv = pl.read_csv(RECORDED_WEATHER)
    source = RecordedWeatherSource(RECORDED_WEATHER)
    rows = source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))
    first = csv.filter(pl.col("hour_utc").str.starts_with("2025-09-08")).unique(
        "hour_utc", keep="first", maintain_order=True
    )
    assert rows["hour_start"].dt.strftime("%Y-%m-%d %H:%M:%S").to_list() == (
        first["hour_utc"].sort().to_list()
    )
    by_label = dict(zip(first["hour_utc"], first["precip_mm"], strict=True))
    for row in rows.iter_rows(named=True):
        assert row["precipitation_mm"] == by_label[row["hour_start"].strftime("%Y-%m-%d %H:%M:%S")]
