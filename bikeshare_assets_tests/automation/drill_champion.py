"""A Paris champion for the drills, trained on the real recording the live feed serves.

The drills' live stack scores real Paris snapshots (the embedded recording shifted to the
present), and drift_report compares them with the serving version's reference sample. A
champion trained on simulated data would drift from the first hour on; this one is fit on
the pipeline's own features of the recorded day the feed serves today (raw → features →
labels materialized in replay mode, in process), logged with the pipeline's reference
sample and promoted — so the loop starts without drift and the drift drill's shift is the
only one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from bikeshare_assets.definitions import build_definitions
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.ingest.feed_server import PresentRecording
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets.training.tracking import MlflowTracking
from bikeshare_assets_tests.conftest import (
    RECORDING,
    replay_table,
    settings_for,
    trim_recording,
    write_cities,
)
from bikeshare_assets_tests.serving.champions import log_and_promote, train_boosters

CITY = "paris"


def served_span(before: timedelta, after: timedelta) -> tuple[datetime, datetime]:
    """Recorded times around now, as the feed serves them (feed_server.PresentRecording: the
    same Paris wall-clock time on a recorded day, so the reference's local hours are the
    ones the live stack scores)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    recorded = now - PresentRecording().shift(now)
    return recorded - before, recorded + after


def minute_recording(start: datetime, end: datetime, cadence: int) -> pl.DataFrame:
    """The recording as the live feed serves it at `cadence`: every snapshot time in
    [start, end) answered by the newest recorded bin at or before it."""
    bins = trim_recording(pl.read_parquet(RECORDING), start - timedelta(minutes=15), end)
    times = pl.DataFrame(
        {
            "at": pl.datetime_range(
                start.replace(tzinfo=None),
                end.replace(tzinfo=None),
                timedelta(minutes=cadence),
                closed="left",
                eager=True,
            )
        }
    )
    served = times.join_asof(
        bins.select(pl.col("tbin_utc").alias("bin")).unique().sort("bin"),
        left_on="at",
        right_on="bin",
    )
    return (
        served.join(bins, left_on="bin", right_on="tbin_utc")
        .drop("bin")
        .rename({"at": "tbin_utc"})
        .select(bins.columns)
        .sort("tbin_utc", "stationcode")
    )


def paris_features(
    work: Path, start: datetime, end: datetime, cadence: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(station_features, stockout_labels) of the recording between start and end as the
    live feed serves it at `cadence`, computed by the pipeline's own assets in replay mode
    (one single-run backfill per layer)."""
    work.mkdir(parents=True, exist_ok=True)
    recording = work / "recording.parquet"
    minute_recording(start, end, cadence).write_parquet(recording)
    table = {**replay_table(recording, start, end), "cadence_minutes": cadence}
    cities = write_cities(work / "cities.toml", replay=table)
    settings = settings_for(work / "home", cities, BIKESHARE_SOURCE="replay")
    defs = build_definitions(settings)
    parts = city_partitions(settings.cities[CITY], settings.source)
    instance = dg.DagsterInstance.ephemeral()
    days = parts.days.get_partition_keys()
    snapshots = parts.snapshots.get_partition_keys()
    for selection, keys in (
        ([f"{CITY}/raw_station_information"], days),
        ([f"{CITY}/raw_weather"], parts.hours.get_partition_keys()),
        (
            [f"{CITY}/raw_station_status", f"{CITY}/station_features", f"{CITY}/stockout_labels"],
            snapshots,
        ),
    ):
        result = materialize_range(defs, instance, selection, keys[0], keys[-1], quiet=True)
        if not result.success:
            raise RuntimeError(f"drill champion: {selection} {keys[0]}..{keys[-1]} failed")
    lake = LakeStorage(root=settings.storage_root)
    frames = {}
    for asset in ("station_features", "stockout_labels"):
        keys = lake.list_keys(f"{asset}/city={CITY}/")
        files = [lake.uri(k) for k in keys if k.endswith(".parquet")]
        frames[asset] = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    return frames["station_features"], frames["stockout_labels"]


def register_paris_champion(tracking: MlflowTracking, work: Path, cadence: int) -> dict[str, str]:
    """Train, log (with the reference sample), register and promote one version per target
    on the hour around now as the feed serves it; returns target -> version."""
    # A drill runs within ~40 minutes of its stack's start: 50 minutes of reference rows ahead.
    start, end = served_span(timedelta(hours=1, minutes=10), timedelta(minutes=50))
    features, labels = paris_features(work, start, end, cadence)
    # The first hour only fills the features' 60-minute lookback.
    features = features.filter(pl.col("snapshot_at") >= start + timedelta(hours=1))
    versions = {}
    boosters = train_boosters(features, labels, rounds=8)
    snapshot = features.filter(pl.col("snapshot_at") == features.get_column("snapshot_at").max())
    for target in TARGETS:
        versions[target] = log_and_promote(
            tracking, CITY, target, boosters[target], 0.3, snapshot, fit_rows=features
        )
    return versions
