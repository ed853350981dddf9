"""Reading partitions of the lake by time range: the offline feature store's query side.

Training reads many partitions of station_features and stockout_labels; features read the
weather hours before t. Missing partitions are either an error (naming what to run) or,
where the caller says so, simply absent (a lookback before the period starts, a weather hour
not published yet, a label not matured yet).
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import polars as pl

from bikeshare_assets.storage import LakeStorage, MissingPartitionError, partition_key_path


def partition_keys_between(
    partitions_def: dg.TimeWindowPartitionsDefinition, start: datetime, end: datetime
) -> list[str]:
    """Keys of the partitions whose window overlaps [start, end).

    Dagster's `get_partition_keys_in_time_window` returns the partitions that *start* in the
    window, so on its own it misses the partition already under way at `start` (e.g. the
    day partition of a run's snapshots, unless the run crosses midnight)."""
    first = partitions_def.get_first_partition_window()
    if first is None or end <= start:
        return []
    widened = dg.TimeWindow(start - (first.end - first.start), end)
    keys = list(partitions_def.get_partition_keys_in_time_window(widened))
    while keys and partitions_def.time_window_for_partition_key(keys[0]).end <= start:
        keys.pop(0)
    return keys


def read_partitions(
    lake: LakeStorage,
    asset_key: dg.AssetKey,
    keys: list[str],
    *,
    missing_ok: bool = False,
) -> tuple[pl.DataFrame, list[str]]:
    """Concatenate the partitions `keys` of an asset; returns (frame, missing keys)."""
    frames, missing = [], []
    for key in keys:
        path = partition_key_path(asset_key, key)
        if not lake.exists(path):
            missing.append(key)
            continue
        frames.append(lake.read_parquet(path))
    if missing and not missing_ok:
        raise MissingPartitionError(
            f"{asset_key.to_user_string()} is missing {len(missing)} partition(s) "
            f"({missing[0]} .. {missing[-1]}). Materialize them first: `dagster asset materialize "
            f"-m bikeshare_assets.definitions --select {asset_key.to_user_string()} "
            f"--partition-range {missing[0]}...{missing[-1]}`."
        )
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(), missing
    return pl.concat(frames, how="diagonal_relaxed"), missing
