"""Hourly weather at a city's weather point: recorded (offline) or Meteostat (live).

Both sources return the frame the `WeatherSource` protocol promises: one row per hour the
source actually has, `hour_start` in UTC, sorted. Missing hours stay missing; nothing here
fills, interpolates or invents a value, so a gap in the weather is visible downstream.

How meteostat 2.1.5 gets its data (read from its source, `meteostat/`). Settings live on
`meteostat.config`, one module-level object also read from MS_* environment variables at
import (e.g. MS_HOURLY_ENDPOINT); its pickle cache goes to `config.cache_directory`
(default `~/.meteostat/cache`).

- Station catalogue: `meteostat.stations` downloads a SQLite file from
  `config.stations_db_endpoints` (default https://data.meteostat.net/stations.db, then a
  GitHub mirror) with `requests` (`core/network.py`: `config.network_timeout`,
  `config.network_max_retries`, backoff 1 s, 2 s, 4 s...), stores it at
  `config.stations_db_file` (default `~/.meteostat/stations.db`) and queries its tables
  `stations`, `names`, `identifiers`, `inventory`. All of these are read at call time, so
  pointing them at another server and cache directory is plain configuration.
- Hourly data: `providers/meteostat/hourly.py` reads `{year}/{station}.csv.gz` files from
  `config.hourly_endpoint` (default https://data.meteostat.net/hourly/{year}/{station}.csv.gz):
  gzip CSV, columns `year, month, day, hour` (UTC) then each parameter with a `<param>_source`
  column. We fetch these files ourselves, with `requests`, because that provider cannot
  serve a live pipeline: it copies the endpoint into a module constant at import time
  (later configuration is ignored), reads the URL with `pandas.read_csv` over urllib (no
  timeout: a hung server hangs the run), and its `handle_exceptions` decorator turns every
  error, connection refused included, into "no data" - an outage would look like hours
  Meteostat does not have instead of an error. Its pickle cache is also keyed by (station, year) only,
  not by URL. The file format, URL layout and station lookup stay Meteostat's own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import meteostat
import polars as pl
import requests
from pandas.errors import DatabaseError as PandasDatabaseError

from bikeshare_assets import __version__
from bikeshare_assets.ingest.sources import WEATHER_SCHEMA, SourceError

log = logging.getLogger(__name__)

__all__ = [
    "WEATHER_SCHEMA",
    "MeteostatWeatherSource",
    "RecordedWeatherSource",
    "empty_weather_frame",
    "parse_meteostat_hourly",
]

OFFLINE_HINT = "To run without network access use the recorded data: BIKESHARE_SOURCE=replay."


def empty_weather_frame() -> pl.DataFrame:
    """A frame with the weather schema and no hours."""
    return pl.DataFrame(schema=WEATHER_SCHEMA)


def _utc(ts: datetime, name: str) -> datetime:
    """Aware datetimes only: a naive one could be local or UTC, and a wrong guess shifts hours."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{name}={ts!r} is naive; pass a timezone-aware datetime (UTC).")
    return ts.astimezone(UTC)


def _window(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Rows with start <= hour_start < end, sorted, in the exact weather schema."""
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    if end_utc < start_utc:
        raise ValueError(f"end ({end_utc}) is before start ({start_utc}).")
    return (
        frame.filter((pl.col("hour_start") >= start_utc) & (pl.col("hour_start") < end_utc))
        .select([pl.col(name).cast(dtype) for name, dtype in WEATHER_SCHEMA.items()])
        .sort("hour_start")
    )


# --------------------------------------------------------------------------------------
# Recorded weather (offline)
# --------------------------------------------------------------------------------------

_RECORDED_COLUMNS = ("hour_utc", "temp_C", "precip_mm", "wind_mps")


class RecordedWeatherSource:
    """The hourly Open-Meteo table recorded with the Paris replay, served by time window.

    The table is read once. It repeats some hours: a repeat identical to the first row of
    its hour is dropped quietly; a repeat that disagrees is dropped too (first row wins, as
    in the recording's own order) but counted in `conflicting_duplicates` and logged, since
    it means the recorder saw two different values for one hour.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.identical_duplicates = 0  # repeated rows equal to the first row of their hour
        self.conflicting_duplicates = 0  # repeated rows that disagree with the first row
        self.conflicting_hours: list[datetime] = []
        self._frame = self._load()

    def _load(self) -> pl.DataFrame:
        if not self.path.is_file():
            raise FileNotFoundError(f"recorded weather table {self.path} does not exist.")
        raw = pl.read_csv(self.path, infer_schema=False)
        missing = [c for c in _RECORDED_COLUMNS if c not in raw.columns]
        if missing:
            raise ValueError(
                f"{self.path} lacks column(s) {missing}; expected {list(_RECORDED_COLUMNS)} "
                f"(found {raw.columns})."
            )
        try:
            frame = raw.select(
                pl.col("hour_utc")
                .str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=True)
                .dt.replace_time_zone("UTC")
                .alias("hour_start"),
                pl.col("temp_C").cast(pl.Float64, strict=True).alias("temperature_c"),
                pl.col("precip_mm").cast(pl.Float64, strict=True).alias("precipitation_mm"),
                # The column is named m/s but holds km/h, as the data README notes: km/h is
                # Open-Meteo's default wind unit, and 9-23 "m/s" in Paris would be a week of
                # gales. So it is taken unchanged as km/h, the unit Meteostat's wspd uses too.
                pl.col("wind_mps").cast(pl.Float64, strict=True).alias("wind_speed_kmh"),
                pl.lit(None, dtype=pl.Int32).alias("weather_code"),
            )
        except pl.exceptions.PolarsError as exc:
            raise ValueError(
                f"{self.path} has a value that is not a number or time: {exc}"
            ) from exc
        off_hour = frame.filter(pl.col("hour_start") != pl.col("hour_start").dt.truncate("1h"))
        if off_hour.height:
            raise ValueError(
                f"{self.path}: {off_hour.height} row(s) are not on the hour, e.g. "
                f"{off_hour['hour_start'][0]}; hour_utc must be the start of an hour."
            )
        return self._dedupe(frame)

    def _dedupe(self, frame: pl.DataFrame) -> pl.DataFrame:
        first = frame.filter(pl.col("hour_start").is_first_distinct())
        repeats = frame.filter(~pl.col("hour_start").is_first_distinct())
        if repeats.height:
            values = [c for c in WEATHER_SCHEMA if c != "hour_start"]
            compared = repeats.join(first, on="hour_start", how="left", suffix="_first")
            # Null-aware equality: two empty cells agree.
            same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"{c}_first")) for c in values])
            conflicting = compared.filter(~same)
            self.identical_duplicates = repeats.height - conflicting.height
            self.conflicting_duplicates = conflicting.height
            self.conflicting_hours = sorted(set(conflicting["hour_start"].to_list()))
            if self.conflicting_duplicates:
                log.warning(
                    "%s: %d repeated row(s) disagree with the first row of their hour "
                    "(%d hour(s), e.g. %s); kept the first row of each hour.",
                    self.path,
                    self.conflicting_duplicates,
                    len(self.conflicting_hours),
                    ", ".join(h.isoformat() for h in self.conflicting_hours[:3]),
                )
            if self.identical_duplicates:
                log.debug(
                    "%s: dropped %d identical repeated row(s).",
                    self.path,
                    self.identical_duplicates,
                )
        return first.sort("hour_start")

    @property
    def hours(self) -> int:
        """Number of distinct hours in the table."""
        return self._frame.height

    def hourly(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Recorded hours in [start, end)."""
        return _window(self._frame, start, end)


# --------------------------------------------------------------------------------------
# Meteostat (live)
# --------------------------------------------------------------------------------------

_HOURLY_PATH = "/hourly/{year}/{station}.csv.gz"
_TIME_COLUMNS = ("year", "month", "day", "hour")
# Meteostat parameter -> our column. Units are Meteostat's: temp °C, prcp mm (hour total),
# wspd km/h (average wind speed). coco is Meteostat's weather *condition code* (1 clear ...
# 27 storm, see https://dev.meteostat.net/formats.html), not a WMO present-weather code.
_PARAMETERS = {
    "temp": "temperature_c",
    "prcp": "precipitation_mm",
    "wspd": "wind_speed_kmh",
    "coco": "weather_code",
}
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# meteostat's configuration is one module-level object; changes are made under this lock
# and undone afterwards, so two sources with different servers cannot see each other's.
_CONFIG_LOCK = threading.Lock()


@contextmanager
def _meteostat_config(**overrides: Any) -> Iterator[None]:
    """Apply meteostat settings for one call and restore the previous ones."""
    with _CONFIG_LOCK:
        saved = {key: getattr(meteostat.config, key) for key in overrides}
        for key, value in overrides.items():
            setattr(meteostat.config, key, value)
        try:
            yield
        finally:
            for key, value in saved.items():
                setattr(meteostat.config, key, value)


def default_cache_dir() -> Path:
    """Where meteostat's station catalogue goes unless told otherwise: never the home dir."""
    return Path(tempfile.gettempdir()) / "bikeshare_assets" / "meteostat"


class MeteostatWeatherSource:
    """Live hourly weather from the Meteostat station nearest to a point.

    The station is the nearest one within `radius_km` whose inventory lists hourly data
    (found with meteostat's own station catalogue), unless `station_id` is given. Data are
    Meteostat's annual hourly files for that station, which include Meteostat's model data
    where observations are missing and lag real time by up to about a day.

    `base_url` replaces https://data.meteostat.net for both the catalogue and the data
    (a mirror, or a local stand-in in tests); `None` keeps meteostat's configured endpoints.
    Failures (unreachable, timeout, HTTP error, unreadable file) raise `SourceError`; a
    year the station has no file for (404) just contributes no hours.
    """

    def __init__(
        self,
        latitude: float,
        longitude: float,
        *,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        station_id: str | None = None,
        radius_km: float = 50.0,
        cache_dir: Path | None = None,
    ) -> None:
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError(f"({latitude}, {longitude}) is not a latitude/longitude pair.")
        self.latitude = latitude
        self.longitude = longitude
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.radius_km = radius_km
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._station_id = station_id
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = (
            f"bikeshare_assets/{__version__} (meteostat-python {meteostat.__version__})"
        )

    # -- endpoints ---------------------------------------------------------------------

    @property
    def stations_db_urls(self) -> list[str]:
        if self.base_url:
            return [f"{self.base_url}/stations.db"]
        return list(meteostat.config.stations_db_endpoints)

    def hourly_url(self, year: int, station: str) -> str:
        template = (
            f"{self.base_url}{_HOURLY_PATH}" if self.base_url else meteostat.config.hourly_endpoint
        )
        return template.format(year=year, station=station)

    def _stations_db_file(self) -> Path:
        # One catalogue file per set of endpoints, so a mirror's copy is never read as another's.
        key = hashlib.sha256("\n".join(self.stations_db_urls).encode()).hexdigest()[:12]
        return self.cache_dir / f"stations-{key}.db"

    # -- station -----------------------------------------------------------------------

    def resolve_station(self) -> str:
        """The Meteostat station id used for this point (looked up once, then remembered)."""
        with self._lock:
            if self._station_id is None:
                self._station_id = self._nearest_hourly_station()
            return self._station_id

    def _nearest_hourly_station(self) -> str:
        db_file = self._stations_db_file()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        mtime_before = db_file.stat().st_mtime_ns if db_file.exists() else None
        urls = self.stations_db_urls
        try:
            with _meteostat_config(
                stations_db_endpoints=urls,
                stations_db_file=str(db_file),
                cache_directory=str(self.cache_dir),
                network_timeout=self.timeout_s,
                network_max_retries=self.retries,
            ):
                point = meteostat.Point(self.latitude, self.longitude)
                nearby = meteostat.stations.nearby(
                    point, radius=int(self.radius_km * 1000), limit=25
                )
                inventory = (
                    meteostat.stations.inventory(
                        list(nearby.index), providers=[meteostat.Provider.HOURLY]
                    )
                    if not nearby.empty
                    else None
                )
        except Exception as exc:  # meteostat raises bare Exception for a failed download
            # meteostat streams the catalogue straight into its final path, so a download cut
            # short (here, or in a run that was killed) would be read as the catalogue for a
            # month: drop a file written by this call or one that is not a database.
            unreadable = isinstance(exc, (sqlite3.DatabaseError, PandasDatabaseError))
            if db_file.exists() and (unreadable or db_file.stat().st_mtime_ns != mtime_before):
                db_file.unlink(missing_ok=True)
            raise SourceError(
                f"Meteostat station catalogue could not be loaded from {', '.join(urls)} "
                f"({type(exc).__name__}: {exc}). Check the network or BIKESHARE_METEOSTAT_URL, "
                f"or pass a station id. {OFFLINE_HINT}",
                url=urls[0],
            ) from exc

        with_hourly: set[str] = set()
        if inventory is not None and inventory.df is not None:
            with_hourly = set(inventory.df.index.get_level_values("station"))
        for station in nearby.index:  # nearest first
            if station in with_hourly:
                log.info(
                    "Meteostat station %s (%s) is %.1f km from (%s, %s)",
                    station,
                    nearby.loc[station, "name"],
                    nearby.loc[station, "distance"] / 1000,
                    self.latitude,
                    self.longitude,
                )
                return str(station)
        raise SourceError(
            f"no Meteostat station with hourly data within {self.radius_km:g} km of "
            f"({self.latitude}, {self.longitude}) in the catalogue at {urls[0]} "
            f"({len(nearby)} station(s) nearby, none with hourly inventory). "
            "Increase radius_km or pass station_id.",
            url=urls[0],
        )

    # -- data --------------------------------------------------------------------------

    def hourly(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Meteostat hours in [start, end) at this point's station."""
        start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
        if end_utc <= start_utc:
            return _window(empty_weather_frame(), start_utc, end_utc)  # raises if end < start
        station = self.resolve_station()
        years = range(start_utc.year, (end_utc - timedelta(microseconds=1)).year + 1)
        frames = [f for f in (self._year(station, y) for y in years) if f is not None]
        if not frames:
            return empty_weather_frame()
        return _window(pl.concat(frames, how="vertical"), start_utc, end_utc)

    def _year(self, station: str, year: int) -> pl.DataFrame | None:
        url = self.hourly_url(year, station)
        body = self._get(url)
        if body is None:
            log.info("Meteostat has no hourly file for station %s in %d (%s)", station, year, url)
            return None
        return parse_meteostat_hourly(body, url=url)

    def _get(self, url: str) -> bytes | None:
        """GET with timeout and backoff; None on 404 (Meteostat's "no such file")."""
        attempts = self.retries + 1
        last_error = ""
        last_status: int | None = None
        last_body = b""
        tried = 0
        for attempt in range(attempts):
            tried = attempt + 1
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._session.get(
                    url, timeout=self.timeout_s, proxies=meteostat.config.network_proxies
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                what = "no answer in time" if isinstance(exc, requests.Timeout) else "no connection"
                last_error, last_status, last_body = f"{what} ({exc})", None, b""
                continue
            except requests.RequestException as exc:
                raise SourceError(
                    f"Meteostat request to {url} failed: {exc}. {OFFLINE_HINT}", url=url
                ) from exc
            if response.status_code == 200:
                return response.content
            if response.status_code == 404:
                return None
            last_status, last_body = response.status_code, response.content
            last_error = f"HTTP {response.status_code}"
            if response.status_code not in _RETRY_STATUSES:
                break
        raise SourceError(
            f"Meteostat hourly data could not be fetched from {url}: {last_error} "
            f"(after {tried} attempt(s)). Check the network or BIKESHARE_METEOSTAT_URL. "
            f"{OFFLINE_HINT}",
            url=url,
            body=last_body,
            status=last_status,
        )


def parse_meteostat_hourly(body: bytes, *, url: str = "") -> pl.DataFrame:
    """One Meteostat hourly bulk file (gzip CSV, UTC) as a weather frame.

    Columns are found by name: a file without, say, `coco` gives nulls for it, while a file
    without the time columns is not a Meteostat hourly file and raises SourceError. Empty
    cells stay null. A repeated hour keeps its first row.
    """
    try:
        text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        raw = pl.read_csv(io.BytesIO(text), infer_schema=False)
    except (OSError, EOFError, pl.exceptions.PolarsError) as exc:
        raise SourceError(
            f"Meteostat file {url} is not a readable gzip CSV: {exc}", url=url, body=body[:4096]
        ) from exc
    missing = [c for c in _TIME_COLUMNS if c not in raw.columns]
    if missing:
        raise SourceError(
            f"Meteostat file {url} has no {missing} column(s) (header: {raw.columns[:8]}); "
            "the hourly format may have changed.",
            url=url,
            body=body[:4096],
        )
    try:
        frame = raw.select(
            pl.datetime(
                *[pl.col(c).cast(pl.Int32, strict=True) for c in _TIME_COLUMNS],
                time_unit="us",
                time_zone="UTC",
            ).alias("hour_start"),
            *[
                (
                    pl.col(src).cast(pl.Float64, strict=True)
                    if src in raw.columns
                    else pl.lit(None, dtype=pl.Float64)
                ).alias(dst)
                for src, dst in _PARAMETERS.items()
            ],
        ).with_columns(pl.col("weather_code").round(0).cast(pl.Int32, strict=True))
    except pl.exceptions.PolarsError as exc:
        raise SourceError(
            f"Meteostat file {url} has a value that is not a number: {exc}",
            url=url,
            body=body[:4096],
        ) from exc
    repeated = frame.height - frame["hour_start"].n_unique()
    if repeated:
        log.warning(
            "Meteostat file %s repeats %d hour(s); kept the first row of each.", url, repeated
        )
        frame = frame.filter(pl.col("hour_start").is_first_distinct())
    return frame.drop_nulls("hour_start").sort("hour_start")
