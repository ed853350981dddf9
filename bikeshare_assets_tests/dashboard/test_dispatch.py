"""The dispatch ranking (pure) and the demo's printed at-risk list, which uses it."""

from __future__ import annotations

import re

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.cli import _print_at_risk
from bikeshare_assets.dispatch import at_risk, stocked_out_now, suggest_moves
from bikeshare_assets.read import lake_key
from bikeshare_assets.storage import partition_key_path
from bikeshare_assets_tests.dashboard.demo_outputs import CITY, DemoOutputs


def snapshot(rows: list[tuple]) -> pl.DataFrame:
    """(station, bikes, docks, p_bikes, p_docks, lat, lon) -> a joined scored snapshot."""
    return pl.DataFrame(
        [
            {
                "station_id": s,
                "name": f"station {s}",
                "bikes_available": float(b),
                "docks_available": float(d),
                "p_stockout_bikes": pb,
                "p_stockout_docks": pd_,
                "lat": lat,
                "lon": lon,
                "capacity": b + d,
            }
            for s, b, d, pb, pd_, lat, lon in rows
        ]
    )


SNAP = snapshot(
    [
        ("A", 0, 20, 0.99, 0.00, 48.850, 2.350),  # empty now: not at risk, out
        ("B", 3, 17, 0.80, 0.01, 48.851, 2.351),  # about to run out of bikes
        ("C", 18, 3, 0.02, 0.70, 48.852, 2.352),  # about to run out of docks
        ("D", 10, 10, 0.40, 0.30, 48.853, 2.353),
        ("E", 20, 1, 0.00, 0.95, 48.950, 2.550),  # full now, far away
    ]
)


def test_at_risk_leaves_out_stations_already_stocked_out_and_ranks_by_p() -> None:
    ranked = at_risk(SNAP, threshold=2, min_p=0.3)
    assert ranked.select("station_id", "target").rows() == [
        ("B", "stockout_bikes"),
        ("C", "stockout_docks"),
        ("D", "stockout_bikes"),
        ("D", "stockout_docks"),
    ]
    out = stocked_out_now(SNAP, threshold=2)
    assert out["stockout_bikes"]["station_id"].to_list() == ["A"]
    assert out["stockout_docks"]["station_id"].to_list() == ["E"]


def test_moves_pair_a_filling_station_with_the_nearest_emptying_one() -> None:
    moves = suggest_moves(SNAP, threshold=2, min_p=0.5, max_km=2.0)
    # A (empty now, P .99) is served first and takes the only donor in reach, C; E is 15 km
    # away; B finds no donor left
    assert moves.select("from_station", "to_station").rows() == [("C", "A")]
    row = moves.row(0, named=True)
    assert row["to_empty_now"] and not row["from_full_now"]
    # A needs 10 to reach half of 20; C can give 18 - 11 (half of 21, rounded up) = 7
    assert row["bikes_to_move"] == 7
    assert 0 < row["distance_km"] < 1


def test_read_layout_is_the_writers_layout() -> None:
    for partition in ("2025-09-16-11:15", "2025-09-16", None):
        assert lake_key("stockout_predictions", "paris", partition) == partition_key_path(
            dg.AssetKey(["paris", "stockout_predictions"]), partition
        )


def test_demo_prints_the_dispatch_ranking_and_the_stocked_out_counts(
    demo_outputs: DemoOutputs, capsys: pytest.CaptureFixture[str]
) -> None:
    _print_at_risk(demo_outputs.settings, CITY, demo_outputs.snapshots)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "not stocked out now" in lines[0]
    rows = [
        re.search(r"(no bikes|no docks)\s+P=([\d.]+)\s+\(bikes (\d+), docks (\d+)\)", line)
        for line in lines[1:-1]
    ]
    assert len(rows) == 10 and all(rows)
    ps = [float(r.group(2)) for r in rows]  # type: ignore[union-attr]
    assert ps == sorted(ps, reverse=True)
    for r in rows:
        count = int(r.group(3)) if r.group(1) == "no bikes" else int(r.group(4))  # type: ignore[union-attr]
        assert count > 2  # never a station that is already out
    newest = next(
        k
        for k in reversed(demo_outputs.snapshots)
        if pl.read_parquet(
            f"{demo_outputs.settings.storage_root}/{lake_key('stockout_predictions', CITY, k)}"
        ).height
    )
    frame = pl.read_parquet(
        f"{demo_outputs.settings.storage_root}/{lake_key('stockout_predictions', CITY, newest)}"
    )
    empty = (frame["bikes_available"] <= 2).sum()
    full = (frame["docks_available"] <= 2).sum()
    assert lines[-1].startswith(
        f"already stocked out (not ranked): {empty} stations empty, {full} full"
    )
