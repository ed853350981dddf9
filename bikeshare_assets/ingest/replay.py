"""Replay a recording "as of" any partition window, through the live parsing path.

The recording format is the one shipped with the project (Vélib' September 2025, see
docs/data_attribution.md): one row per station per recorded bin, columns

    tbin_utc (naive UTC), stationcode, name, nb_velos_bin (bikes), nb_bornes_bin (free docks),
    capacity_bin, lat, lon

Any file with these columns replays, so users can replay their own recordings or another
city's (point `[cities.<city>.replay] status_path` at it). A window the recorder missed
returns None ("no snapshot"); nothing is interpolated.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


class ReplaySource:
    """A `SnapshotSource` over a recording file."""

    def __init__(self, status_path: Path):
        self.status_path = Path(status_path)

    @cached_property
    def recording(self) -> pl.DataFrame:
        if not self.status_path.exists():
            raise FileNotFoundError(
                f"replay recording {self.status_path} does not exist; set "
                "[cities.<city>.replay] status_path in your cities file (BIKESHARE_CITIES_FILE)."
            )
        frame = pl.read_parquet(self.status_path)
        missing = sorted(set(RECORDING_COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(
                f"{self.status_path} is not a recording in the replay format: columns {missing} "
                f"are missing (expected {sorted(RECORDING_COLUMNS)})."
            )
        tbin = pl.col("tbin_utc")
        if frame.schema["tbin_utc"] == pl.String:
            tbin = tbin.str.to_datetime(time_unit="us")
        return (
            frame.select(list(RECORDING_COLUMNS))
            .with_columns(tbin.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
            .sort("tbin_utc", "stationcode")
        )

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
