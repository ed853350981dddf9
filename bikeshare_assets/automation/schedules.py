"""Live mode: each city's newest snapshot is materialized at the city's own cadence."""

from __future__ import annotations

import dagster as dg

from bikeshare_assets.cities import City
from bikeshare_assets.partitions import CityPartitions


def build_live_schedules(city: City, parts: CityPartitions) -> list[dg.ScheduleDefinition]:
    """One schedule per partitioned layer; each tick targets the newest complete partition."""
    jobs = [
        dg.define_asset_job(
            f"{city.key}_station_information_daily",
            selection=dg.AssetSelection.assets(dg.AssetKey([city.key, "raw_station_information"])),
            partitions_def=parts.days,
        ),
        dg.define_asset_job(
            f"{city.key}_station_status_live",
            selection=dg.AssetSelection.assets(dg.AssetKey([city.key, "raw_station_status"])),
            partitions_def=parts.snapshots,
        ),
        dg.define_asset_job(
            f"{city.key}_weather_hourly",
            selection=dg.AssetSelection.assets(dg.AssetKey([city.key, "raw_weather"])),
            partitions_def=parts.hours,
        ),
    ]
    return [
        dg.build_schedule_from_partitioned_job(
            job,
            name=f"{job.name}_schedule",
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
        for job in jobs
    ]
