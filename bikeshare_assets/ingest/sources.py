"""The one interface every data source speaks: "the feed document as of t".

Live GBFS, the replay of a recording and the simulator all hand back the bytes of a GBFS
document, so a replayed or simulated snapshot goes through exactly the parsing and
validation path a live one does, and a rejected batch can be quarantined as received.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import polars as pl


@dataclass(frozen=True)
class FeedDocument:
    """A feed document exactly as a source delivered it."""

    feed: str  # "station_status" | "station_information"
    body: bytes
    url: str  # http(s)://..., replay://<file>#<bin>, simulator://seed=<n>/...
    received_at: datetime  # UTC, when the bytes arrived (or the recorded time for a replay)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


class SourceError(Exception):
    """A source could not deliver a document (HTTP error after retries, timeout, dead feed).

    `body` keeps whatever the server did send, so it can be quarantined with the reason.
    """

    def __init__(self, message: str, *, url: str, body: bytes = b"", status: int | None = None):
        super().__init__(message)
        self.url = url
        self.body = body
        self.status = status


@runtime_checkable
class SnapshotSource(Protocol):
    """Serves feed documents "as of" a time window.

    `station_status` returns None when the source has no snapshot for the window (a real
    recorder gap): the caller records an empty partition flagged `gap=true`, never a guess.
    """

    def station_information(self, day_start: datetime, day_end: datetime) -> FeedDocument | None:
        """The station_information document valid for [day_start, day_end), or None."""
        ...

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument | None:
        """The station_status snapshot that belongs to [window_start, window_end), or None."""
        ...


WEATHER_SCHEMA: dict[str, pl.DataType] = {
    "hour_start": pl.Datetime("us", "UTC"),
    "temperature_c": pl.Float64(),
    "precipitation_mm": pl.Float64(),
    "wind_speed_kmh": pl.Float64(),
    "weather_code": pl.Int32(),
}


@runtime_checkable
class WeatherSource(Protocol):
    """Hourly weather at the city's weather point, as a polars frame.

    Columns: hour_start (Datetime[us, UTC]), temperature_c, precipitation_mm,
    wind_speed_kmh (Float64), weather_code (Int32, nullable). Hours the source does not
    have are simply absent from the frame.
    """

    def hourly(self, start: datetime, end: datetime) -> pl.DataFrame: ...
