"""City configuration: a city is a table in cities.toml, never a code change.

The file is checked completely when it is loaded (also by `dagster definitions validate`):
unknown or misspelled keys, missing keys, a time zone or holiday country that does not
exist, a replay recording that is missing or lacks columns. Each problem is one ConfigError
naming the file, the city, the key and what to do.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from bikeshare_assets.errors import ConfigError

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
    live_start: datetime | None  # required for live mode only
    language: str | None = None
    drift_window_minutes: int = 60  # one drift_report partition
    replay: ReplayConfig | None = None
    simulate: SimulateConfig | None = None

    def supports(self, mode: SourceMode) -> bool:
        if mode is SourceMode.REPLAY:
            return self.replay is not None
        if mode is SourceMode.SIMULATE:
            return self.simulate is not None
        return bool(self.gbfs_url)

    def has_weather(self, mode: SourceMode) -> bool:
        """Live (Meteostat) and the simulator always have weather; a replay only with a
        weather_path. Without one the city has no raw_weather asset, and its weather features
        are null by design (excused from the null_budget check)."""
        if mode is SourceMode.REPLAY:
            return self.replay is not None and self.replay.weather_path is not None
        return True

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
        if self.live_start is None:
            raise ConfigError(
                f"[cities.{self.key}] live_start is missing: live mode needs the first live "
                'partition, e.g. live_start = "2026-11-01-00:00" (UTC).'
            )
        return self.live_start, None


def parse_partition_time(value: str) -> datetime:
    return datetime.strptime(value, PARTITION_FMT).replace(tzinfo=UTC)


# Every key a cities file may hold: key -> (default, meaning). REQUIRED marks keys without a
# default. The shipped cities.toml documents each of them; a test keeps the two in step.
REQUIRED = object()
CITY_KEYS: dict[str, tuple[Any, str]] = {
    "display_name": ("<the city key>", "name shown in asset descriptions"),
    "gbfs_url": ("", "gbfs.json autodiscovery URL of the live feed (live mode needs it)"),
    "language": ("(the feed's first)", "language of a multi-language GBFS feed, e.g. fr"),
    "timezone": (REQUIRED, "IANA zone: local hour, weekday and holidays are computed in it"),
    "country": ("", "ISO code for public holidays (python `holidays`); empty: no holidays"),
    "latitude": (REQUIRED, "weather point (Meteostat) and centre of the coordinate check"),
    "longitude": (REQUIRED, "weather point (Meteostat) and centre of the coordinate check"),
    "radius_km": (50.0, "stations farther than this from latitude/longitude fail a check"),
    "cadence_minutes": (5, "live snapshot cadence; must divide 60"),
    "stockout_threshold": (2, "stocked out at <= this many bikes (or free docks)"),
    "drift_window_minutes": (60, "one drift_report partition; must divide 60"),
    "live_start": ("(required for live)", "first live partition, YYYY-MM-DD-HH:MM UTC"),
    "replay": ("(none)", "table: a recording to replay (BIKESHARE_SOURCE=replay)"),
    "simulate": ("(none)", "table: the seeded simulator (BIKESHARE_SOURCE=simulate)"),
}
REPLAY_KEYS: dict[str, tuple[Any, str]] = {
    "status_path": (REQUIRED, "the recording (parquet, see the README's replay format)"),
    "weather_path": ("(none)", "hourly weather CSV; without it the city has no weather"),
    "cadence_minutes": (15, "the recording's bin length; must divide 60"),
    "start": (REQUIRED, "first partition, YYYY-MM-DD-HH:MM UTC"),
    "end": (REQUIRED, "end of the period (exclusive), YYYY-MM-DD-HH:MM UTC"),
}
SIMULATE_KEYS: dict[str, tuple[Any, str]] = {
    "stations": (1500, "number of simulated stations"),
    "days": (14, "length of the simulated period"),
    "seed": (0, "random seed (same seed, same data)"),
    "start": (REQUIRED, "first partition, YYYY-MM-DD-HH:MM UTC"),
    "cadence_minutes": (5, "snapshot cadence; must divide 60"),
}


class _Table:
    """One TOML table of a cities file, read with errors that say where and what to do."""

    def __init__(self, path: Path, where: str, table: Any, keys: Mapping[str, tuple[Any, str]]):
        self.path, self.where, self.keys = path, where, keys
        if not isinstance(table, dict):
            self.fail("", f"must be a table ([{where}]), not {type(table).__name__}")
        self.table: dict[str, Any] = table
        for key in table:
            if key not in keys:
                close = difflib.get_close_matches(key, list(keys), n=1)
                hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(keys)}"
                self.fail(key, f"is not a known key ({hint})")

    def fail(self, key: str, problem: str) -> None:
        name = f"[{self.where}] {key}".rstrip()
        raise ConfigError(f"{self.path}: {name} {problem}. Fix it in this file.")

    def get(self, key: str, kind: Callable[[Any], Any] = str) -> Any:
        if key not in self.table:
            default = self.keys[key][0]
            if default is REQUIRED:
                self.fail(key, f"is missing ({self.keys[key][1]})")
            return default
        value = self.table[key]
        expected = {str: str, int: int, float: (int, float)}.get(kind)  # type: ignore[call-overload]
        if expected is not None and (
            not isinstance(value, expected) or isinstance(value, bool)  # type: ignore[arg-type]
        ):
            self.fail(key, f"= {value!r} must be a {kind.__name__}")
        return kind(value)

    def time(self, key: str) -> datetime | None:
        value = self.get(key) if key in self.table or self.keys[key][0] is REQUIRED else None
        if value is None:
            return None
        try:
            return parse_partition_time(value)
        except ValueError:
            self.fail(key, f'= "{value}" is not a UTC time as YYYY-MM-DD-HH:MM')
        raise AssertionError  # unreachable: fail() raises

    def cadence(self, key: str) -> int:
        cadence = self.get(key, int)
        if cadence <= 0 or 60 % cadence:
            self.fail(key, f"= {cadence} must divide 60 (1, 2, 3, 5, 10, 15, 20, 30 or 60)")
        return cadence

    def path_value(self, key: str) -> Path | None:
        if key not in self.table:
            return self.get(key) if self.keys[key][0] is REQUIRED else None
        path = Path(self.get(key)).expanduser()
        path = path if path.is_absolute() else (self.path.parent / path).resolve()
        if not path.is_file():
            self.fail(key, f"= {path} does not exist (relative paths start at this file's folder)")
        return path


def load_cities(path: Path | None = None) -> dict[str, City]:
    """Read and check every city of a cities file (the package's own by default)."""
    path = Path(path or DEFAULT_CITIES_FILE).expanduser()
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: cities file not found; point BIKESHARE_CITIES_FILE at an existing file "
            "(a copy of bikeshare_assets/cities.toml)."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix the syntax there.") from None
    _Table(path, "top level", raw, {"cities": (REQUIRED, "one table per city")})
    if not isinstance(raw.get("cities"), dict) or not raw["cities"]:
        raise ConfigError(
            f"{path}: no [cities.<key>] table; add one (see the shipped cities.toml)."
        )
    return {key: _city(path, key, table) for key, table in raw["cities"].items()}


def _city(path: Path, key: str, raw: Any) -> City:
    t = _Table(path, f"cities.{key}", raw, CITY_KEYS)
    replay = simulate = None
    if "replay" in t.table:
        r = _Table(path, f"cities.{key}.replay", t.table["replay"], REPLAY_KEYS)
        replay = ReplayConfig(
            status_path=r.path_value("status_path"),  # type: ignore[arg-type]
            weather_path=r.path_value("weather_path"),
            cadence_minutes=r.cadence("cadence_minutes"),
            start=r.time("start"),  # type: ignore[arg-type]
            end=r.time("end"),  # type: ignore[arg-type]
        )
        if replay.end <= replay.start:
            r.fail("end", f"= {replay.end:%Y-%m-%d-%H:%M} must be after start (end is exclusive)")
        from bikeshare_assets.ingest.replay import recording_problem

        problem = recording_problem(replay.status_path)
        if problem:
            r.fail("status_path", f"= {replay.status_path}: {problem}")
    if "simulate" in t.table:
        s = _Table(path, f"cities.{key}.simulate", t.table["simulate"], SIMULATE_KEYS)
        simulate = SimulateConfig(
            stations=s.get("stations", int),
            days=s.get("days", int),
            seed=s.get("seed", int),
            start=s.time("start"),  # type: ignore[arg-type]
            cadence_minutes=s.cadence("cadence_minutes"),
        )
    gbfs_url = t.get("gbfs_url")
    city = City(
        key=key,
        display_name=t.get("display_name") if "display_name" in t.table else key,
        gbfs_url=gbfs_url,
        language=t.get("language") if "language" in t.table else None,
        timezone=_timezone(t),
        country=_country(t),
        latitude=t.get("latitude", float),
        longitude=t.get("longitude", float),
        radius_km=t.get("radius_km", float),
        cadence_minutes=t.cadence("cadence_minutes"),
        stockout_threshold=t.get("stockout_threshold", int),
        drift_window_minutes=t.cadence("drift_window_minutes"),
        live_start=t.time("live_start"),
        replay=replay,
        simulate=simulate,
    )
    cadences = {c.cadence_minutes for c in (city, replay, simulate) if c is not None}
    for cadence in sorted(cadences):
        if city.drift_window_minutes % cadence:
            t.fail(
                "drift_window_minutes",
                f"= {city.drift_window_minutes} must be a multiple of the snapshot cadence "
                f"({cadence} min): a drift window holds whole snapshots",
            )
    if not (-90 <= city.latitude <= 90 and -180 <= city.longitude <= 180):
        t.fail("latitude", f"/ longitude = ({city.latitude}, {city.longitude}) is not on Earth")
    return city


def _timezone(t: _Table) -> str:
    import zoneinfo

    name = t.get("timezone")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f'did you mean "{close[0]}"?' if close else 'e.g. "Europe/Paris"'
        t.fail("timezone", f'= "{name}" is not an IANA time zone ({hint})')
    return name


def holiday_country_codes() -> frozenset[str]:
    """Every country code (with aliases such as "UK") `holidays.country_holidays` accepts.

    Read from the package's registry: `holidays.list_supported_countries()` returns the same
    codes but imports all ~250 country modules to list their subdivisions (~0.2 s on every
    load of the cities file); only the features asset needs a country's calendar."""
    from holidays.registry import EntityLoader

    return frozenset(EntityLoader.get_country_codes(include_aliases=True))


def _country(t: _Table) -> str:
    code = t.get("country")
    if not code:
        return code
    supported = holiday_country_codes()
    if code not in supported:
        close = difflib.get_close_matches(code.upper(), sorted(supported), n=1)
        hint = f'did you mean "{close[0]}"?' if close else "or leave it empty for no holidays"
        t.fail(
            "country",
            f'= "{code}" is not a country the `holidays` package knows (ISO 3166 code; {hint})',
        )
    return code
