"""The raw layer's pandera schemas: the hard rules of the data contract (docs/data_contract.md).

A module of its own because pandera imports pandas and numpy (~0.7 s): loading the code
location must not pay for them. `contracts.py` re-exports these names on first access and
builds the dagster-pandera types from them on the first type check.
"""

from __future__ import annotations

from typing import ClassVar

import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

UTC_KW = {"time_unit": "us", "time_zone": "UTC"}

# Impossible values: no docking station anywhere has a thousand docks; a count above that is
# a broken feed, not a big station.
MAX_COUNT = 1000


class StationStatusSchema(pa.DataFrameModel):
    """One row per station per snapshot."""

    snapshot_at: DateTime = pa.Field(dtype_kwargs=UTC_KW)
    station_id: pl.String = pa.Field(str_length={"min_value": 1})
    bikes_available: pl.Int32 = pa.Field(ge=0, le=MAX_COUNT)
    docks_available: pl.Int32 = pa.Field(ge=0, le=MAX_COUNT, nullable=True)
    bikes_disabled: pl.Int32 = pa.Field(ge=0, le=MAX_COUNT, nullable=True)
    docks_disabled: pl.Int32 = pa.Field(ge=0, le=MAX_COUNT, nullable=True)
    is_installed: pl.Boolean = pa.Field(nullable=True)
    is_renting: pl.Boolean = pa.Field(nullable=True)
    is_returning: pl.Boolean = pa.Field(nullable=True)
    last_reported: DateTime = pa.Field(dtype_kwargs=UTC_KW)
    received_at: DateTime = pa.Field(dtype_kwargs=UTC_KW)

    class Config:
        strict = True
        unique: ClassVar[list[str]] = ["snapshot_at", "station_id"]


class StationInformationSchema(pa.DataFrameModel):
    """One row per station per day."""

    as_of_day: DateTime = pa.Field(dtype_kwargs=UTC_KW)
    station_id: pl.String = pa.Field(str_length={"min_value": 1})
    name: pl.String = pa.Field(nullable=True)
    lat: pl.Float64 = pa.Field(ge=-90, le=90)
    lon: pl.Float64 = pa.Field(ge=-180, le=180)
    capacity: pl.Int32 = pa.Field(ge=0, le=MAX_COUNT, nullable=True)
    is_virtual_station: pl.Boolean
    received_at: DateTime = pa.Field(dtype_kwargs=UTC_KW)

    class Config:
        strict = True
        unique: ClassVar[list[str]] = ["as_of_day", "station_id"]


class WeatherSchema(pa.DataFrameModel):
    """One row per hour. Ranges are physical limits (world records), not climate."""

    hour_start: DateTime = pa.Field(dtype_kwargs=UTC_KW, unique=True)
    temperature_c: pl.Float64 = pa.Field(ge=-90, le=60, nullable=True)
    precipitation_mm: pl.Float64 = pa.Field(ge=0, le=400, nullable=True)
    wind_speed_kmh: pl.Float64 = pa.Field(ge=0, le=410, nullable=True)
    weather_code: pl.Int32 = pa.Field(nullable=True)

    class Config:
        strict = True
