"""Partitions and their mappings, defined once per city and imported everywhere.

Partition keys are UTC (`YYYY-MM-DD-HH:MM` for snapshots and hours, `YYYY-MM-DD` for days)
so keys are unambiguous across daylight-saving changes; local time is a feature, not a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg

from bikeshare_assets.cities import PARTITION_FMT, City, SourceMode

DAY_FMT = "%Y-%m-%d"


@dataclass(frozen=True)
class CityPartitions:
    """Every partitions definition of one city's subgraph."""

    snapshots: dg.TimeWindowPartitionsDefinition  # raw_station_status, features, labels, ...
    hours: dg.TimeWindowPartitionsDefinition  # raw_weather
    drift: dg.TimeWindowPartitionsDefinition  # drift_report: hourly unless the city says less
    days: dg.TimeWindowPartitionsDefinition  # raw_station_information, model, registry, endpoint
    cadence_minutes: int
    has_weather: bool = True  # False: a replay without weather_path, so no raw_weather asset

    @property
    def cadence(self) -> timedelta:
        return timedelta(minutes=self.cadence_minutes)


def _floor(ts: datetime, minutes: int) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % minutes, second=0, microsecond=0)


def _ceil_day(ts: datetime) -> datetime:
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if day == ts else day + timedelta(days=1)


def _ceil_hour(ts: datetime) -> datetime:
    hour = ts.replace(minute=0, second=0, microsecond=0)
    return hour if hour == ts else hour + timedelta(hours=1)


def city_partitions(city: City, mode: SourceMode) -> CityPartitions:
    cadence = city.cadence_for(mode)
    start, end = city.period_for(mode)
    start = _floor(start, cadence)
    # Live day partitions include the day under way, so today's station list exists while
    # today's snapshots arrive; an hour of weather exists once the hour is over.
    live_offset = 1 if end is None else 0
    snapshots = dg.TimeWindowPartitionsDefinition(
        start=start,
        end=end,
        fmt=PARTITION_FMT,
        cron_schedule=f"*/{cadence} * * * *" if cadence < 60 else "0 * * * *",
        timezone="UTC",
    )
    hours = dg.TimeWindowPartitionsDefinition(
        start=start.replace(minute=0),
        end=_ceil_hour(end) if end else None,
        fmt=PARTITION_FMT,
        cron_schedule="0 * * * *",
        timezone="UTC",
    )
    # A drift window shorter than the hour is for the drills (their 1-minute cadence makes an
    # hour of waiting per drift report); production keeps hours.
    window = city.drift_window_minutes
    drift = (
        hours
        if window == 60
        else dg.TimeWindowPartitionsDefinition(
            start=start.replace(minute=0),
            end=_ceil_hour(end) if end else None,
            fmt=PARTITION_FMT,
            cron_schedule=f"*/{window} * * * *",
            timezone="UTC",
        )
    )
    days = dg.TimeWindowPartitionsDefinition(
        start=start.replace(hour=0, minute=0),
        end=_ceil_day(end) if end else None,
        fmt=DAY_FMT,
        cron_schedule="0 0 * * *",
        timezone="UTC",
        end_offset=live_offset,
    )
    return CityPartitions(
        snapshots=snapshots,
        hours=hours,
        drift=drift,
        days=days,
        cadence_minutes=cadence,
        has_weather=city.has_weather(mode),
    )


# Status snapshots read the station list of the day they fall in, and features read the
# weather hour they fall in: both are the default "overlapping window" mapping.
SAME_DAY = dg.TimeWindowPartitionMapping()
SAME_HOUR = dg.TimeWindowPartitionMapping()


RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def materialize_range(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: str | Sequence[str],
    first: str,
    last: str | None = None,
    *,
    launched_by: str | None = None,
    quiet: bool = False,
    raise_on_error: bool = False,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize `selection` over the partition keys [first, last] as one run, the way a
    single-run backfill (BackfillPolicy.single_run) launches it. `quiet` keeps Dagster's
    console logger to warnings, for commands that print their own progress."""
    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last or first}
    if launched_by:
        tags["bikeshare/launched_by"] = launched_by
    return dg.materialize(
        list(defs.assets or []),
        selection=[selection] if isinstance(selection, str) else list(selection),
        instance=instance,
        resources=defs.resources,
        tags=tags,
        raise_on_error=raise_on_error,
        run_config={
            **(run_config or {}),
            **({"loggers": {"console": {"config": {"log_level": "WARNING"}}}} if quiet else {}),
        }
        or None,
    )
