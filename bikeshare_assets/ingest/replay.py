"""Replay a recording "as of" any partition window, through the live parsing path.

The recording format is the one shipped with the project (Vélib' September 2025, see
docs/data_attribution.md): a parquet file, one row per station per recorded bin, columns

    tbin_utc (bin start in UTC), stationcode, name, nb_velos_bin (bikes),
    nb_bornes_bin (free docks), capacity_bin, lat, lon

Any file with these columns replays, so users can replay their own recordings or another
city's (point `[cities.<city>.replay] status_path` at it; the README's "Replay your own
recording" section is the user-facing description). `tbin_utc` is a naive datetime in UTC,
or an ISO 8601 string: naive strings are UTC, strings with `Z` or an offset are converted to
UTC. A window the recorder missed returns None ("no snapshot"); nothing is interpolated.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import polars as pl

from bikeshare_assets.ingest.sources import FeedDocument

RECORDING_COLUMNS = {
    "tbin_utc": "recorded bin start, naive UTC",
    "stationcode": "station id",
    "name": "station name",
    "nb_velos_bin": "bikes available",
    "nb_bornes_bin": "free docks",
    "capacity_bin": "docks at the station",
    "lat": "latitude",
    "lon": "longitude",
}


def _epoch(ts: datetime) -> int:
    return int(ts.timestamp())


def recording_problem(path: Path) -> str | None:
    """Why `path` cannot be replayed (unreadable, missing columns, a bad `tbin_utc` type),
    or None. Reads only the parquet footer, so loading a cities file stays fast."""
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises ComputeError / OSError for non-parquet files
        return f"not a readable parquet file ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    missing = [c for c in RECORDING_COLUMNS if c not in schema]
    if missing:
        return (
            f"columns {missing} are missing; a replay recording has "
            f"{list(RECORDING_COLUMNS)} (see the README's replay format)"
        )
    if not (isinstance(schema["tbin_utc"], pl.Datetime) or schema["tbin_utc"] == pl.String):
        return f"tbin_utc is {schema['tbin_utc']}; it must be a datetime or an ISO 8601 string"
    return None


def utc_bins(values: pl.Series, source: Path | str = "recording") -> pl.Series:
    """`tbin_utc` as Datetime(us, UTC). Naive datetimes and naive strings are UTC; aware
    datetimes and strings with `Z` / an offset are converted. Parsed per distinct value (a
    recording has few), so one file may mix the two string forms."""
    if isinstance(values.dtype, pl.Datetime):
        if values.dtype.time_zone is None:  # type: ignore[union-attr]
            return values.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return values.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    distinct = values.drop_nulls().unique()
    parsed = {}
    for text in distinct.to_list():
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{source}: tbin_utc value {text!r} is not an ISO 8601 time "
                "(e.g. 2025-09-08T07:15:00Z or 2025-09-08 07:15:00 for UTC)."
            ) from None
        parsed[text] = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return values.replace_strict(parsed, default=None, return_dtype=pl.Datetime("us", "UTC"))


# The night lull of bike-share use sits in the early morning, local time. Its centre (the
# quietest 3-hour stretch) is expected between these local hours.
QUIET_LOCAL_HOURS = range(2, 7)


def local_time_suspicion(recording: pl.DataFrame, timezone: str) -> str | None:
    """A warning when `tbin_utc` looks like local time written as UTC, or None.

    Heuristic: average bike movement per station between consecutive bins, by hour of day.
    The quietest 3-hour stretch is in the early morning local time; if it lands there only
    when the bins are read as local time (and not as UTC), they probably are local time.
    Needs most hours of a day recorded; returns None when it cannot tell."""
    from zoneinfo import ZoneInfo

    moves = (
        recording.drop_nulls("stationcode")
        .sort("stationcode", "tbin_utc")
        .with_columns(
            move=pl.col("nb_velos_bin").diff().abs().over("stationcode"),
            step=pl.col("tbin_utc").diff().over("stationcode"),
        )
        .filter(pl.col("step") <= pl.duration(minutes=30))
    )
    if moves.is_empty():
        return None
    first = moves.get_column("tbin_utc").min()
    offset = first.astimezone(ZoneInfo(timezone)).utcoffset() or timedelta(0)  # type: ignore[union-attr]
    shift = round(offset.total_seconds() / 3600)
    if abs(shift) < 2:
        return None  # too close to UTC to tell apart
    by_hour = dict(
        moves.group_by(pl.col("tbin_utc").dt.hour().alias("hour"))
        .agg(pl.col("move").mean())
        .iter_rows()
    )
    if len(by_hour) < 18:
        return None
    rolling = {
        h: sum(m) / len(m)
        for h in by_hour
        if (m := [by_hour[x % 24] for x in (h - 1, h, h + 1) if x % 24 in by_hour])
    }
    quiet_utc = min(rolling, key=rolling.__getitem__)
    as_utc, as_local = (quiet_utc + shift) % 24, quiet_utc
    if as_utc in QUIET_LOCAL_HOURS or as_local not in QUIET_LOCAL_HOURS:
        return None
    return (
        f"tbin_utc looks like local time ({timezone}), not UTC: the night lull is at "
        f"{as_utc:02d}:00 local if the bins are UTC, {as_local:02d}:00 if they are local. "
        f"If the recorder wrote local time, convert it to UTC (e.g. subtract {shift} h) or "
        "write ISO strings with their offset."
    )


class ReplaySource:
    """A `SnapshotSource` over a recording file."""

    def __init__(self, status_path: Path, timezone: str | None = None):
        self.status_path = Path(status_path)
        self.timezone = timezone  # the city's: only used to warn about local-time bins

    @cached_property
    def recording(self) -> pl.DataFrame:
        problem = (
            "does not exist"
            if not self.status_path.exists()
            else recording_problem(self.status_path)
        )
        if problem:
            raise ValueError(
                f"replay recording {self.status_path}: {problem}; fix "
                "[cities.<city>.replay] status_path in your cities file (BIKESHARE_CITIES_FILE)."
            )
        frame = pl.read_parquet(self.status_path, columns=list(RECORDING_COLUMNS))
        return frame.with_columns(
            utc_bins(frame.get_column("tbin_utc"), self.status_path).alias("tbin_utc")
        ).sort("tbin_utc", "stationcode")

    @cached_property
    def local_time_warning(self) -> str | None:
        """See local_time_suspicion: computed once per process, logged by the raw asset."""
        if not self.timezone:
            return None
        warning = local_time_suspicion(self.recording, self.timezone)
        return f"{self.status_path}: {warning}" if warning else None

    @cached_property
    def bins(self) -> list[datetime]:
        return self.recording.get_column("tbin_utc").unique().sort().to_list()

    def _bins_in(self, start: datetime, end: datetime) -> list[datetime]:
        return [b for b in self.bins if start <= b < end]

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument | None:
        bins = self._bins_in(window_start, window_end)
        if not bins:
            return None
        tbin = bins[-1]  # the newest recorded snapshot inside the window
        rows = self.recording.filter(pl.col("tbin_utc") == tbin)
        reported = _epoch(tbin)
        stations = [
            {
                "station_id": r["stationcode"],
                "num_bikes_available": r["nb_velos_bin"],
                "num_docks_available": r["nb_bornes_bin"],
                "last_reported": reported,
            }
            for r in rows.select("stationcode", "nb_velos_bin", "nb_bornes_bin").iter_rows(
                named=True
            )
        ]
        return self._document("station_status", tbin, stations)

    def station_information(self, day_start: datetime, day_end: datetime) -> FeedDocument | None:
        day = self.recording.filter(
            (pl.col("tbin_utc") >= day_start) & (pl.col("tbin_utc") < day_end)
        )
        if day.is_empty():
            return None
        # What a live fetch at the start of the day would have seen: each station's first
        # recorded values that day. Anything later would leak the day's future into features.
        per_station = (
            day.sort("tbin_utc")
            .group_by("stationcode", maintain_order=True)
            .agg(
                pl.col("name").drop_nulls().first(),
                pl.col("lat").drop_nulls().first(),
                pl.col("lon").drop_nulls().first(),
                pl.col("capacity_bin").drop_nulls().first(),
            )
        )
        stations = [
            {
                "station_id": r["stationcode"],
                "name": r["name"],
                "lat": r["lat"],
                "lon": r["lon"],
                "capacity": r["capacity_bin"],
            }
            for r in per_station.iter_rows(named=True)
        ]
        first = day.get_column("tbin_utc").min()
        return self._document("station_information", first, stations)  # type: ignore[arg-type]

    def _document(self, feed: str, at: datetime, stations: list[dict]) -> FeedDocument:
        doc = {
            "last_updated": _epoch(at),
            "ttl": 0,
            "version": "2.3",
            "data": {"stations": stations},
        }
        return FeedDocument(
            feed=feed,
            body=json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(),
            url=f"replay://{self.status_path.name}#{feed}@{at.astimezone(UTC).isoformat()}",
            received_at=at,
        )
