"""Labels are what a station held exactly 30 minutes after t — not 15, not 45 — and only
when that snapshot exists."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from bikeshare_assets.features.labels import LABEL_SCHEMA, build_labels
from bikeshare_assets_tests.support.frames import status_frame, utc

T0 = utc(2025, 9, 8, 10, 0)


def at(minutes: int):
    return T0 + timedelta(minutes=minutes)


# Every (time, station) has distinct counts, so a label read from t+15 or t+45 shows.
STATUS = status_frame(
    [
        # a: every 15 minutes from 10:00 to 11:00
        (at(0), "a", 11, 9),
        (at(15), "a", 7, 13),
        (at(30), "a", 2, 18),
        (at(45), "a", 3, 17),
        (at(60), "a", 1, 19),
        # b: missing from the 10:30 snapshot
        (at(0), "b", 20, 0),
        (at(15), "b", 19, 1),
        (at(45), "b", 18, 2),
        (at(60), "b", 16, 2),
        # c: publishes no docks at 10:45 (a virtual station)
        (at(0), "c", 5, 5),
        (at(15), "c", 6, 4),
        (at(30), "c", 4, 6),
        (at(45), "c", 0, None),
        (at(60), "c", 8, 2),
    ]
)


def labels_by_key(frame: pl.DataFrame) -> dict[tuple, dict]:
    return {(r["snapshot_at"], r["station_id"]): r for r in frame.iter_rows(named=True)}


def test_labels_are_the_counts_exactly_30_minutes_later() -> None:
    labels = build_labels(STATUS, threshold=2)
    got = labels_by_key(labels)

    assert dict(labels.schema) == LABEL_SCHEMA
    for (t, station), row in got.items():
        future = STATUS.filter(
            (pl.col("snapshot_at") == t + timedelta(minutes=30)) & (pl.col("station_id") == station)
        ).row(0, named=True)
        assert row["label_at"] == t + timedelta(minutes=30)
        assert (row["bikes_future"], row["docks_future"]) == (
            future["bikes_available"],
            future["docks_available"],
        )
    a_at_10 = got[(at(0), "a")]
    assert a_at_10["bikes_future"] == 2  # 10:30; 10:15 had 7 and 10:45 had 3
    assert got[(at(15), "a")]["bikes_future"] == 3  # 10:45
    assert got[(at(30), "a")]["bikes_future"] == 1  # 11:00


def test_no_snapshot_at_t_plus_30_means_no_label() -> None:
    got = labels_by_key(build_labels(STATUS, threshold=2))

    # b is missing at 10:30, so b at 10:00 has no label (not the 10:15 or 10:45 counts)
    assert (at(0), "b") not in got
    assert got[(at(15), "b")]["bikes_future"] == 18  # 10:45
    # 10:45 and 11:00 have not matured: nothing 30 minutes later in the data
    assert not any(t >= at(45) for t, _ in got)
    assert sorted(got) == sorted(
        [
            (at(0), "a"),
            (at(15), "a"),
            (at(30), "a"),
            (at(15), "b"),
            (at(0), "c"),
            (at(15), "c"),
            (at(30), "c"),
        ]
    )


def test_stockout_flags_at_the_threshold_and_no_docks_label_without_docks() -> None:
    got = labels_by_key(build_labels(STATUS, threshold=2))

    assert (got[(at(0), "a")]["stockout_bikes"], got[(at(0), "a")]["stockout_docks"]) == (
        True,  # 2 bikes: at the threshold is a stockout
        False,
    )
    assert got[(at(15), "a")]["stockout_bikes"] is False  # 3 bikes
    assert got[(at(15), "b")]["stockout_docks"] is True  # 2 free docks
    # c at 10:15 looks at 10:45: no bikes, docks not published
    c = got[(at(15), "c")]
    assert (c["bikes_future"], c["docks_future"]) == (0, None)
    assert c["stockout_bikes"] is True
    assert c["stockout_docks"] is None
    assert got[(at(30), "c")]["stockout_docks"] is True  # 2 docks at 11:00


@pytest.mark.parametrize(
    ("threshold", "flagged"),
    [(0, {(at(15), "c")}), (2, {(at(0), "a"), (at(30), "a"), (at(15), "c")})],
)
def test_the_threshold_is_the_citys(threshold: int, flagged: set) -> None:
    labels = build_labels(STATUS, threshold=threshold)
    assert {
        (r["snapshot_at"], r["station_id"])
        for r in labels.filter(pl.col("stockout_bikes")).iter_rows(named=True)
    } == flagged
