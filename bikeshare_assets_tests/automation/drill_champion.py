"""A Paris champion for the drills, trained on the real recording the live feed serves.

The drills' live stack scores real Paris snapshots (the embedded recording shifted to the
present), and drift_report compares them with the serving version's reference sample. A
champion trained on simulated data would drift from the first hour on; this one is fit on
the pipeline's own features of what the feed serves around now (raw → features → labels
materialized in replay mode, in process), logged with the pipeline's reference sample and
promoted — so the loop starts without drift and the drift drill's shift is the only one.

The training rows are the feed's own answers, minute by minute: each snapshot time t around
now carries the recorded bin the feed serves at t (`PresentRecording.recorded_bin`), and
each hour the recorded weather the feed's Meteostat stand-in serves for it. Not a stretch of
the recording at its recorded times: the feed maps each local day to a recorded day of its
own, so around midnight (or at an edge of the recording) a recorded stretch is not what the
feed serves, and can be empty. The rows are stamped a week before t (same weekday, same
Paris wall-clock time, so the same calendar features and local hours): a replay's
partitions must lie in the past.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from bikeshare_assets.definitions import build_definitions
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.ingest.feed_server import RECORDING_ZONE, PresentRecording
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets.training.tracking import MlflowTracking
from bikeshare_assets_tests.conftest import (
    RECORDED_WEATHER,
    RECORDING,
    replay_table,
    settings_for,
    write_cities,
)
from bikeshare_assets_tests.serving.champions import log_and_promote, train_boosters

CITY = "paris"


def served_span(before: timedelta, after: timedelta) -> tuple[datetime, datetime]:
    """The present times around now the champion is trained on."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - before, now + after


def week_back(at: datetime) -> timedelta:
    """How far back the training rows of present time `at` are stamped: a week, at the same
    Paris wall-clock time (a DST change in between makes it a week plus or minus an hour)."""
    local = at.astimezone(RECORDING_ZONE)
    return at - (local.replace(tzinfo=None) - timedelta(days=7)).replace(tzinfo=RECORDING_ZONE)


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


def minute_recording(
    feed: PresentRecording, start: datetime, end: datetime, cadence: int, back: timedelta
) -> pl.DataFrame:
    """The recording as the live feed serves it at `cadence` over [start, end): each snapshot
    time t with the stations of the recorded bin the feed answers with at t, stamped t - back."""
    times = pl.datetime_range(
        _naive_utc(start), _naive_utc(end), timedelta(minutes=cadence), closed="left", eager=True
    )
    served = pl.DataFrame(
        {
            "tbin_utc": [t - back for t in times],
            "bin": [_naive_utc(feed.recorded_bin(t.replace(tzinfo=UTC))) for t in times],
        },
        schema={"tbin_utc": pl.Datetime("us"), "bin": pl.Datetime("us")},
    )
    recording = pl.read_parquet(RECORDING)
    bins = recording.with_columns(pl.col("tbin_utc").cast(pl.Datetime("us")).alias("bin"))
    return (
        served.join(bins.drop("tbin_utc"), on="bin")
        .select(recording.columns)
        .with_columns(pl.col("tbin_utc").cast(recording.schema["tbin_utc"]))
        .sort("tbin_utc", "stationcode")
    )


def served_weather(
    feed: PresentRecording, start: datetime, end: datetime, back: timedelta, path: Path
) -> Path:
    """The recorded weather as the feed's Meteostat stand-in serves it for each hour of
    [start, end), stamped hour - back, in the recording's CSV format."""
    recorded = pl.read_csv(RECORDED_WEATHER, try_parse_dates=True)
    by_hour = {row["hour_utc"]: row for row in recorded.iter_rows(named=True)}
    rows, hour = [], start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        source = _naive_utc(hour - feed.shift(hour))
        if source in by_hour:
            rows.append({**by_hour[source], "hour_utc": _naive_utc(hour - back)})
        hour += timedelta(hours=1)
    pl.DataFrame(rows, schema=recorded.schema).write_csv(path, datetime_format="%Y-%m-%d %H:%M:%S")
    return path


def paris_features(
    work: Path, start: datetime, end: datetime, cadence: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(station_features, stockout_labels) of what the live feed serves at `cadence` between
    start and end, stamped a week earlier (`week_back`), computed by the pipeline's own
    assets in replay mode (one single-run backfill per layer)."""
    work.mkdir(parents=True, exist_ok=True)
    back = week_back(start)
    recording = work / "recording.parquet"
    feed = PresentRecording()
    minute_recording(feed, start, end, cadence, back).write_parquet(recording)
    weather = served_weather(feed, start - timedelta(hours=3), end, back, work / "weather.csv")
    table = {
        **replay_table(recording, start - back, end - back, weather),
        "cadence_minutes": cadence,
    }
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
    # A drill runs within ~20 minutes of its stack's start: 50 minutes of reference rows ahead.
    start, end = served_span(timedelta(hours=1, minutes=10), timedelta(minutes=50))
    features, labels = paris_features(work, start, end, cadence)
    # The first hour only fills the features' 60-minute lookback.
    first = start - week_back(start) + timedelta(hours=1)
    features = features.filter(pl.col("snapshot_at") >= first)
    versions = {}
    boosters = train_boosters(features, labels, rounds=8)
    snapshot = features.filter(pl.col("snapshot_at") == features.get_column("snapshot_at").max())
    for target in TARGETS:
        versions[target] = log_and_promote(
            tracking, CITY, target, boosters[target], 0.3, snapshot, fit_rows=features
        )
    return versions
