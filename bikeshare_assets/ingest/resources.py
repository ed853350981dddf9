"""The FeedSources resource: which source (replay, live, simulate) serves each city."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from bikeshare_assets.cities import City, SourceMode
from bikeshare_assets.ingest.sources import WEATHER_SCHEMA, SnapshotSource, WeatherSource


class NoWeather:
    """A city without a weather recording: every hour is a gap, never a made-up value."""

    def hourly(self, start: datetime, end: datetime) -> pl.DataFrame:
        return pl.DataFrame(schema=WEATHER_SCHEMA)


class FeedSources(dg.ConfigurableResource):
    """Builds (once per process) the snapshot and weather source of each city."""

    mode: str = SourceMode.REPLAY.value
    http_timeout_s: float = 10.0
    http_retries: int = 3
    meteostat_url: str | None = None
    cache_dir: str | None = None

    _snapshots: dict = PrivateAttr(default_factory=dict)
    _weather: dict = PrivateAttr(default_factory=dict)

    @property
    def source_mode(self) -> SourceMode:
        return SourceMode(self.mode)

    def snapshots(self, city: City) -> SnapshotSource:
        if city.key not in self._snapshots:
            self._snapshots[city.key] = self._build_snapshots(city)
        return self._snapshots[city.key]

    def weather(self, city: City) -> WeatherSource:
        if city.key not in self._weather:
            self._weather[city.key] = self._build_weather(city)
        return self._weather[city.key]

    def _build_snapshots(self, city: City) -> SnapshotSource:
        mode = self.source_mode
        if mode is SourceMode.REPLAY:
            from bikeshare_assets.ingest.replay import ReplaySource

            assert city.replay is not None
            return ReplaySource(city.replay.status_path, timezone=city.timezone)
        if mode is SourceMode.SIMULATE:
            return self._simulated(city)
        from bikeshare_assets.ingest.gbfs_client import GbfsClient, LiveGbfsSource

        client = GbfsClient(
            city.gbfs_url,
            language=city.language,
            timeout_s=self.http_timeout_s,
            retries=self.http_retries,
            # Vélib' declares ttl=3600 on a feed that changes every minute: never reuse a
            # document for longer than one snapshot window.
            max_ttl_s=city.cadence_minutes * 60 / 2,
        )
        return LiveGbfsSource(client)

    def _simulated(self, city: City):
        from bikeshare_assets.ingest.simulator import (
            SimulatedSource,
            SimulatedSystem,
            SimulationConfig,
        )

        key = f"sim:{city.key}"
        if key not in self._snapshots:
            sim = city.simulate
            assert sim is not None
            config = SimulationConfig(
                stations=sim.stations,
                days=sim.days,
                seed=sim.seed,
                start=sim.start,
                cadence_minutes=sim.cadence_minutes,
                center_lat=city.latitude,
                center_lon=city.longitude,
                timezone=city.timezone,
            )
            self._snapshots[key] = SimulatedSource(SimulatedSystem(config))
        return self._snapshots[key]

    def _build_weather(self, city: City) -> WeatherSource:
        mode = self.source_mode
        if mode is SourceMode.REPLAY:
            if city.replay is None or city.replay.weather_path is None:
                return NoWeather()
            from bikeshare_assets.ingest.weather import RecordedWeatherSource

            return RecordedWeatherSource(city.replay.weather_path)
        if mode is SourceMode.SIMULATE:
            return self._simulated(city)
        from bikeshare_assets.ingest.weather import MeteostatWeatherSource

        return MeteostatWeatherSource(
            city.latitude,
            city.longitude,
            base_url=self.meteostat_url,
            timeout_s=self.http_timeout_s,
            retries=self.http_retries,
            cache_dir=Path(self.cache_dir) if self.cache_dir else None,
        )
