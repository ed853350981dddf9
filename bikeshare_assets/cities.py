"""City configuration: a city is a table in cities.toml, never a code change."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

PARTITION_FMT = "%Y-%m-%d-%H:%M"
DEFAULT_CITIES_FILE = Path(__file__).with_name("cities.toml")


class SourceMode(StrEnum):
    """Where raw snapshots come from."""

    REPLAY = "replay"  # a recording served as of each partition (offline, embedded default)
    LIVE = "live"  # the city's public GBFS feed + Meteostat
    SIMULATE = "simulate"  # the seeded simulator (scale tests, drift injection)


@dataclass(frozen=True)
class ReplayConfig:
    status_path: Path
    weather_path: Path | None
    cadence_minutes: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class SimulateConfig:
    stations: int
    days: int
    seed: int
    start: datetime
    cadence_minutes: int


@dataclass(frozen=True)
class City:
    key: str
    display_name: str
    gbfs_url: str
    timezone: str
    country: str
    latitude: float
    longitude: float
    radius_km: float
    cadence_minutes: int
    stockout_threshold: int
    live_start: datetime
    language: str | None = None
    replay: ReplayConfig | None = None
    simulate: SimulateConfig | None = None

    def supports(self, mode: SourceMode) -> bool:
        if mode is SourceMode.REPLAY:
            return self.replay is not None
        if mode is SourceMode.SIMULATE:
            return self.simulate is not None
        return bool(self.gbfs_url)

    def cadence_for(self, mode: SourceMode) -> int:
        """Snapshot cadence in minutes for a source mode (the Paris replay is 15, live 5)."""
        if mode is SourceMode.REPLAY and self.replay:
            return self.replay.cadence_minutes
        if mode is SourceMode.SIMULATE and self.simulate:
            return self.simulate.cadence_minutes
        return self.cadence_minutes

    def period_for(self, mode: SourceMode) -> tuple[datetime, datetime | None]:
        """[start, end) of the partitions for a mode; live has no end."""
        if mode is SourceMode.REPLAY and self.replay:
            return self.replay.start, self.replay.end
        if mode is SourceMode.SIMULATE and self.simulate:
            sim = self.simulate
            return sim.start, sim.start + timedelta(days=sim.days)
        return self.live_start, None


def parse_partition_time(value: str) -> datetime:
    return datetime.strptime(value, PARTITION_FMT).replace(tzinfo=UTC)


def _resolve(base: Path, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def load_cities(path: Path | None = None) -> dict[str, City]:
    """Read every city of a cities file (the package's own by default)."""
    path = Path(path or DEFAULT_CITIES_FILE)
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    cities: dict[str, City] = {}
    for key, table in raw.get("cities", {}).items():
        replay = simulate = None
        if "replay" in table:
            r = table["replay"]
            replay = ReplayConfig(
                status_path=_resolve(path.parent, r["status_path"]),  # type: ignore[arg-type]
                weather_path=_resolve(path.parent, r.get("weather_path")),
                cadence_minutes=int(r.get("cadence_minutes", 15)),
                start=parse_partition_time(r["start"]),
                end=parse_partition_time(r["end"]),
            )
        if "simulate" in table:
            s = table["simulate"]
            simulate = SimulateConfig(
                stations=int(s.get("stations", 1500)),
                days=int(s.get("days", 14)),
                seed=int(s.get("seed", 0)),
                start=parse_partition_time(s["start"]),
                cadence_minutes=int(s.get("cadence_minutes", 5)),
            )
        cities[key] = City(
            key=key,
            display_name=table.get("display_name", key),
            gbfs_url=table.get("gbfs_url", ""),
            language=table.get("language"),
            timezone=table["timezone"],
            country=table.get("country", ""),
            latitude=float(table["latitude"]),
            longitude=float(table["longitude"]),
            radius_km=float(table.get("radius_km", 50.0)),
            cadence_minutes=int(table.get("cadence_minutes", 5)),
            stockout_threshold=int(table.get("stockout_threshold", 2)),
            live_start=parse_partition_time(table.get("live_start", "2026-01-01-00:00")),
            replay=replay,
            simulate=simulate,
        )
        _validate(cities[key])
    return cities


def _validate(city: City) -> None:
    for mode in SourceMode:
        if not city.supports(mode):
            continue
        cadence = city.cadence_for(mode)
        if cadence <= 0 or 60 % cadence:
            raise ValueError(
                f"cities file: city '{city.key}' has cadence {cadence} min for {mode}; "
                "it must divide 60 (1, 2, 3, 5, 10, 15, 20, 30 or 60)."
            )
