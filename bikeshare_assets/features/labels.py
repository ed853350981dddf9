"""Stockout labels: what each station held exactly `horizon` minutes after snapshot t.

A label exists only once the snapshot at t + horizon exists (label maturity); a station
missing from that future snapshot, or a future snapshot the recorder missed, gives no
label — never a guessed one.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

HORIZON = timedelta(minutes=30)

LABEL_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_at": pl.Datetime("us", "UTC"),
    "station_id": pl.String(),
    "label_at": pl.Datetime("us", "UTC"),
    "bikes_future": pl.Int32(),
    "docks_future": pl.Int32(),
    "stockout_bikes": pl.Boolean(),
    "stockout_docks": pl.Boolean(),
}

TARGETS = {"stockout_bikes": "bikes_available", "stockout_docks": "docks_available"}


def build_labels(
    status: pl.DataFrame, threshold: int, horizon: timedelta = HORIZON
) -> pl.DataFrame:
    """Labels for every (t, station) in `status` whose snapshot at t + horizon is in `status`."""
    now = status.select("snapshot_at", "station_id")
    future = status.select(
        (pl.col("snapshot_at") - horizon).alias("snapshot_at"),
        "station_id",
        pl.col("snapshot_at").alias("label_at"),
        pl.col("bikes_available").cast(pl.Int32).alias("bikes_future"),
        pl.col("docks_available").cast(pl.Int32).alias("docks_future"),
    )
    return (
        now.join(future, on=["snapshot_at", "station_id"], how="inner")
        .with_columns(
            stockout_bikes=pl.col("bikes_future") <= threshold,
            # A virtual station publishes no docks: no docks label rather than a wrong one.
            stockout_docks=pl.when(pl.col("docks_future").is_null())
            .then(None)
            .otherwise(pl.col("docks_future") <= threshold),
        )
        .select(list(LABEL_SCHEMA))
        .sort("snapshot_at", "station_id")
    )
