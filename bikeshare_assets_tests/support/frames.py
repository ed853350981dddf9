"""Small hand-made raw frames (status, station lists, weather) in the raw layer's schemas,
and the replay path (recording -> GBFS document -> parser) for slices of the real recording."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from bikeshare_assets.ingest.gbfs import (
    INFORMATION_SCHEMA,
    STATUS_SCHEMA,
    parse_station_information,
    parse_station_status,
)
from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.ingest.sources import WEATHER_SCHEMA

UTC_US = pl.Datetime("us", "UTC")


def status_frame(rows: Iterable[Sequence]) -> pl.DataFrame:
    """raw_station_status rows from (snapshot_at, station_id, bikes, docks[, renting,
    returning]) tuples; the other columns are filled as a healthy feed would."""
    records = []
    for row in rows:
        at, station, bikes, docks, *flags = row
        renting, returning = [*flags, True, True][:2]
        records.append(
            {
                "snapshot_at": at,
                "station_id": station,
                "bikes_available": bikes,
                "docks_available": docks,
                "bikes_disabled": 0,
                "docks_disabled": 0,
                "is_installed": True,
                "is_renting": renting,
                "is_returning": returning,
                "last_reported": at,
                "received_at": at,
            }
        )
    return pl.DataFrame(records, schema=STATUS_SCHEMA)


def information_frame(day: datetime, stations: Iterable[Sequence]) -> pl.DataFrame:
    """raw_station_information of one day from (station_id, lat, lon, capacity) tuples."""
    records = [
        {
            "as_of_day": day,
            "station_id": station,
            "name": f"station {station}",
            "lat": lat,
            "lon": lon,
            "capacity": capacity,
            "is_virtual_station": False,
            "received_at": day,
        }
        for station, lat, lon, capacity in stations
    ]
    return pl.DataFrame(records, schema=INFORMATION_SCHEMA)


def weather_frame(rows: Iterable[Sequence]) -> pl.DataFrame:
    """raw_weather rows from (hour_start, temperature_c, precipitation_mm, wind_speed_kmh)."""
    records = [
        {
            "hour_start": hour,
            "temperature_c": temp,
            "precipitation_mm": rain,
            "wind_speed_kmh": wind,
            "weather_code": None,
        }
        for hour, temp, rain, wind in rows
    ]
    return pl.DataFrame(records, schema=WEATHER_SCHEMA)


# --------------------------------------------------------------------------------------
# Replay path on the real recording
# --------------------------------------------------------------------------------------


def replayed_status(
    source: ReplaySource, start: datetime, end: datetime, cadence: timedelta
) -> pl.DataFrame:
    """raw_station_status for the windows in [start, end), exactly as the raw asset lands
    them: the replay's document for each window, through the GBFS parser."""
    frames = []
    at = start
    while at < end:
        doc = source.station_status(at, at + cadence)
        if doc is not None:
            frames.append(
                parse_station_status(doc.body, snapshot_at=at, received_at=doc.received_at).frame
            )
        at += cadence
    return pl.concat(frames) if frames else pl.DataFrame(schema=STATUS_SCHEMA)


def replayed_information(source: ReplaySource, day: datetime, language: str = "fr") -> pl.DataFrame:
    """raw_station_information of one UTC day from the replay, through the GBFS parser."""
    doc = source.station_information(day, day + timedelta(days=1))
    assert doc is not None, f"the recording has no station list for {day}"
    return parse_station_information(
        doc.body, as_of_day=day, received_at=doc.received_at, language=language
    ).frame


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
