"""A local live GBFS feed: the embedded Paris recording served as if it were happening now.

`bikeshare live` runs the pipeline in live mode against this server on 127.0.0.1, so the
whole loop (schedules, automation, sensors, alerts) can be watched offline. It speaks GBFS 2.3
over real HTTP, with Vélib's layout (one language, "fr"):

    GET /paris/gbfs.json                      autodiscovery
    GET /paris/fr/station_information.json    the stations of the recording
    GET /paris/fr/station_status.json         the recorded snapshot "as of now"
    GET /meteostat/stations.db                Meteostat's station catalogue (stand-in)
    GET /meteostat/hourly/{year}/07156.csv.gz the recorded weather, shifted the same way

How "now" maps into the recording (`PresentRecording`): at the same Paris wall-clock time, so
8 am in the present is 8 am in the recording (the morning rush at the hour it happens, and the
drift reports, which compare by local hour, see the hour they name). Across a daylight-saving
difference (a September recording served in December) the shift is whole days and an hour.
Each real local day is served from one recorded day of the same kind (Mon-Fri or Sat-Sun):
the same weekday when the recorder has at least half of its bins, otherwise the best-covered
day of that kind (the recorder missed most of Tuesday 9 and Friday 12 September).
station_status carries the newest recorded 15-minute bin at or before `now - shift`, with
`last_updated = now` and each station's `last_reported = bin + shift`: a station's report is
as old as it was in the recording (up to 15 minutes, longer in the recorder's own gaps).
Polled every 5 minutes, a recorded bin therefore answers up to three polls: the recording
has 15-minute resolution and nothing is interpolated.

Fault controls for the drills (POST, answers JSON; GET /_control/state shows the state):

    POST /_control/outage?cadences=N   the GBFS feed answers 503 for the window under way
                                       and the N-1 after it, until half a cadence after the
                                       Nth ends, so exactly those N fetches fail
    POST /_control/outage?seconds=S    503 for S seconds
    POST /_control/drift?kind=K        heatwave: served weather +12 °C and dry;
                                       closed_stations: a fixed quarter of the stations
                                       (by station id) report 0 bikes, 0 docks, not renting
                                       or returning; weekend: a weekend day's recording is
                                       served whatever the day
    POST /_control/reset               no outage, no drift

Run on its own: `python -m bikeshare_assets.ingest.feed_server --port 8700`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import polars as pl

from bikeshare_assets.ingest.meteostat_files import (
    PARIS_STATION,
    MeteostatHour,
    hourly_csv_gz,
    stations_db_bytes,
)
from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.ingest.weather import RecordedWeatherSource

PARIS_DATA = Path(__file__).resolve().parents[1] / "data" / "paris-velib-2025-09"
RECORDING = PARIS_DATA / "velib_15min_bins.parquet"
RECORDED_WEATHER = PARIS_DATA / "weather_hourly_openmeteo.csv"

SYSTEM = "paris"
RECORDING_ZONE = ZoneInfo("Europe/Paris")  # where the recording's wall clock was
LANGUAGE = "fr"
DRIFT_KINDS = ("heatwave", "closed_stations", "weekend")
HEATWAVE_DELTA_C = 12.0
# A recorded day counts as "covered" when it has at least half of its 96 bins (the best has 59).
COVERED_SHARE = 0.5
BINS_PER_DAY = 96
WEATHER_HISTORY_DAYS = 10  # hours before now in each served weather file


def _is_weekend(day: date) -> bool:
    return day.weekday() >= 5


def _closed(station_id: str) -> bool:
    """A fixed quarter of the stations, the same on every request and every run."""
    return hashlib.sha256(station_id.encode()).digest()[0] % 4 == 0


class PresentRecording:
    """The recording mapped onto the present: which recorded time answers for `now`."""

    def __init__(self, status_path: Path = RECORDING, weather_path: Path = RECORDED_WEATHER):
        self.replay = ReplaySource(status_path)
        self.weather = RecordedWeatherSource(weather_path)

    @cached_property
    def bins_per_day(self) -> dict[date, int]:
        """Recorded bins per UTC day: how well the recorder covered a day (the choice of day
        only; the two hours a local day differs by do not change it)."""
        return _count_days(self.replay.bins)

    def recorded_day(self, day: date, *, weekend: bool | None = None) -> date:
        """The recorded day that answers for real local day `day` (see the module docstring);
        `weekend=True` forces a weekend day (the `weekend` drift)."""
        want_weekend = _is_weekend(day) if weekend is None else weekend
        kind = [d for d in self.bins_per_day if _is_weekend(d) == want_weekend]
        same_weekday = [d for d in kind if d.weekday() == day.weekday()]
        covered = [d for d in same_weekday if self.bins_per_day[d] >= COVERED_SHARE * BINS_PER_DAY]
        if covered:
            return max(covered, key=lambda d: (self.bins_per_day[d], d))
        return max(kind, key=lambda d: (self.bins_per_day[d], d))

    def shift(self, now: datetime, *, weekend: bool | None = None) -> timedelta:
        """now - shift is the recorded time that answers for `now`: the same wall-clock time
        on the recorded day (whole days, plus the daylight-saving difference)."""
        local = now.astimezone(RECORDING_ZONE)
        day = self.recorded_day(local.date(), weekend=weekend)
        recorded = datetime.combine(day, local.time(), tzinfo=RECORDING_ZONE)
        return now.astimezone(UTC) - recorded.astimezone(UTC)

    def recorded_bin(self, now: datetime, *, weekend: bool | None = None) -> datetime:
        """The newest recorded bin at or before now - shift."""
        at = now.astimezone(UTC) - self.shift(now, weekend=weekend)
        earlier = [b for b in self.replay.bins if b <= at]
        if not earlier:  # before the recorder's first bin (the first local hour of 8 September)
            return self.replay.bins[0]
        return earlier[-1]

    def station_status(
        self, now: datetime, *, weekend: bool | None = None, closed_stations: bool = False
    ) -> dict[str, Any]:
        """The GBFS 2.3 station_status document served at `now`."""
        shift = self.shift(now, weekend=weekend)
        tbin = self.recorded_bin(now, weekend=weekend)
        # never after now (the first bin answers the hour before the recording starts too)
        reported = min(int((tbin + shift).timestamp()), int(now.timestamp()))
        stations = []
        for sid, bikes, docks in _bin_rows(self.replay, tbin):
            closed = closed_stations and _closed(sid)
            stations.append(
                {
                    "station_id": sid,
                    "num_bikes_available": 0 if closed else bikes,
                    "num_docks_available": 0 if closed else docks,
                    "is_installed": True,
                    "is_renting": not closed,
                    "is_returning": not closed,
                    "last_reported": reported,
                }
            )
        return _gbfs(now, {"stations": stations})

    def station_information(self, now: datetime) -> dict[str, Any]:
        """Every station of the recording, with its first recorded name, place, capacity."""
        return _gbfs(now, {"stations": _all_stations(self.replay)})

    def weather_hours(
        self, now: datetime, *, weekend: bool | None = None, heatwave: bool = False
    ) -> list[MeteostatHour]:
        """Complete hours of the last WEATHER_HISTORY_DAYS days, each the recorded hour of
        its day's recorded day (no weather code: the recording has none)."""
        now = now.astimezone(UTC)
        end = now.replace(minute=0, second=0, microsecond=0)
        recorded = self.weather.hourly(
            datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        )
        by_hour = {r["hour_start"]: r for r in recorded.iter_rows(named=True)}
        hours = []
        hour = end - timedelta(days=WEATHER_HISTORY_DAYS)
        while hour < end:
            row = by_hour.get(hour - self.shift(hour, weekend=weekend))
            if row is not None:
                temp, prcp = row["temperature_c"], row["precipitation_mm"]
                if heatwave:
                    temp, prcp = temp + HEATWAVE_DELTA_C, 0.0
                hours.append(
                    MeteostatHour(
                        hour.replace(tzinfo=None), temp, prcp, row["wind_speed_kmh"], None
                    )
                )
            hour += timedelta(hours=1)
        return hours


def _count_days(bins: list[datetime]) -> dict[date, int]:
    counts: dict[date, int] = {}
    for b in bins:
        counts[b.date()] = counts.get(b.date(), 0) + 1
    return counts


@lru_cache(maxsize=8)
def _bin_rows(replay: ReplaySource, tbin: datetime) -> list[tuple[str, int, int]]:
    frame = replay.recording.filter(
        (pl.col("tbin_utc") == tbin) & pl.col("stationcode").is_not_null()
    )
    return list(frame.select("stationcode", "nb_velos_bin", "nb_bornes_bin").iter_rows())


@lru_cache(maxsize=2)
def _all_stations(replay: ReplaySource) -> list[dict[str, Any]]:
    per_station = (
        replay.recording.drop_nulls("stationcode")
        .group_by("stationcode", maintain_order=True)
        .agg(
            pl.col("name").drop_nulls().first(),
            pl.col("lat").drop_nulls().first(),
            pl.col("lon").drop_nulls().first(),
            pl.col("capacity_bin").drop_nulls().first(),
        )
    )
    return [
        {"station_id": s, "name": n, "lat": la, "lon": lo, "capacity": c}
        for s, n, la, lo, c in per_station.iter_rows()
    ]


def _gbfs(now: datetime, data: dict[str, Any], ttl: int = 60) -> dict[str, Any]:
    return {"last_updated": int(now.timestamp()), "ttl": ttl, "version": "2.3", "data": data}


@dataclass
class FeedControls:
    """The fault state the control API sets."""

    cadence_minutes: int
    outage_until: datetime | None = None
    drift: str | None = None
    requests: list[tuple[str, int]] = field(default_factory=list)  # (path, status) served

    def outage_for_cadences(self, now: datetime, cadences: int) -> datetime:
        """Until half a cadence after the end of the Nth window, counting the one under way:
        the schedule fetches each window just after it ends, so exactly N fetches fail."""
        step = timedelta(minutes=self.cadence_minutes)
        now = now.astimezone(UTC)
        start = now.replace(second=0, microsecond=0) - timedelta(
            minutes=now.minute % self.cadence_minutes
        )
        self.outage_until = start + cadences * step + step / 2
        return self.outage_until

    def in_outage(self, now: datetime) -> bool:
        return self.outage_until is not None and now < self.outage_until


class LiveFeedServer:
    """The threaded HTTP server: GBFS + Meteostat stand-in + control API on 127.0.0.1."""

    def __init__(
        self,
        port: int = 0,
        *,
        cadence_minutes: int = 5,
        recording: PresentRecording | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        host: str = "127.0.0.1",
    ) -> None:
        self.recording = recording or PresentRecording()
        self.controls = FeedControls(cadence_minutes)
        self.clock = clock
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LiveFeedServer:
        handler = _handler_for(self)
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="live-feed-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LiveFeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("LiveFeedServer is not running")
        return f"http://{self._host}:{self._httpd.server_address[1]}"

    @property
    def gbfs_url(self) -> str:
        return f"{self.base_url}/{SYSTEM}/gbfs.json"

    @property
    def meteostat_url(self) -> str:
        return f"{self.base_url}/meteostat"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_control"

    # -- answers -------------------------------------------------------------------------

    def state(self, now: datetime | None = None) -> dict[str, Any]:
        """What the feed serves now: the mapping into the recording and the faults."""
        now = self.clock() if now is None else now
        weekend = True if self.controls.drift == "weekend" else None
        shift = self.recording.shift(now, weekend=weekend)
        return {
            "now": now.isoformat(),
            "cadence_minutes": self.controls.cadence_minutes,
            "shift_hours": shift / timedelta(hours=1),
            "recorded_day": (now - shift).astimezone(RECORDING_ZONE).date().isoformat(),
            "recorded_bin": self.recording.recorded_bin(now, weekend=weekend).isoformat(),
            "outage_until": self.controls.outage_until.isoformat()
            if self.controls.in_outage(now)
            else None,
            "drift": self.controls.drift,
            "gbfs_url": self.gbfs_url,
            "meteostat_url": self.meteostat_url,
        }

    def answer(self, method: str, raw_path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        now = self.clock()
        with self._lock:
            if path.startswith("/_control"):
                return self._control(method, path, query, now)
            if method != "GET":
                return _text(405, f"{method} not allowed on {path}")
            # The GBFS feed goes down, not the weather service beside it.
            if self.controls.in_outage(now) and path.startswith(f"/{SYSTEM}/"):
                return _text(503, "feed outage (drill): try again later")
            drift = self.controls.drift
        weekend = True if drift == "weekend" else None
        base = f"/{SYSTEM}"
        if path == f"{base}/gbfs.json":
            feeds = [
                {"name": f, "url": f"{self.base_url}{base}/{LANGUAGE}/{f}.json"}
                for f in ("station_information", "station_status")
            ]
            return _json(_gbfs(now, {LANGUAGE: {"feeds": feeds}}))
        if path == f"{base}/{LANGUAGE}/station_information.json":
            return _json(self.recording.station_information(now))
        if path == f"{base}/{LANGUAGE}/station_status.json":
            doc = self.recording.station_status(
                now, weekend=weekend, closed_stations=drift == "closed_stations"
            )
            return _json(doc)
        if path == "/meteostat/stations.db":
            return 200, "application/octet-stream", _stations_db()
        if path.startswith("/meteostat/hourly/") and path.endswith(f"/{PARIS_STATION}.csv.gz"):
            year = path.split("/")[3]
            hours = [
                h
                for h in self.recording.weather_hours(
                    now, weekend=weekend, heatwave=drift == "heatwave"
                )
                if str(h.time.year) == year
            ]
            if not hours:
                return _text(404, f"no hourly file for {year}")
            return 200, "application/gzip", hourly_csv_gz(hours)
        return _text(404, f"not found: {path}")

    def _control(
        self, method: str, path: str, query: dict[str, list[str]], now: datetime
    ) -> tuple[int, str, bytes]:
        name = path.removeprefix("/_control").strip("/")
        if name == "state" and method == "GET":
            return _json(self.state(now))
        if method != "POST":
            return _text(405, f"use POST {path} (GET only for /_control/state)")
        if name == "outage":
            if "seconds" in query:
                seconds = float(query["seconds"][0])
                self.controls.outage_until = now + timedelta(seconds=seconds)
            else:
                cadences = int(query.get("cadences", ["3"])[0])
                if cadences < 1:
                    return _text(400, "cadences must be >= 1")
                self.controls.outage_for_cadences(now, cadences)
        elif name == "drift":
            kind = query.get("kind", [""])[0]
            if kind not in DRIFT_KINDS:
                return _text(400, f"kind={kind!r}: one of {', '.join(DRIFT_KINDS)}")
            self.controls.drift = kind
        elif name == "reset":
            self.controls.outage_until = None
            self.controls.drift = None
        else:
            return _text(404, f"no control {name!r}: outage, drift, reset, state")
        return _json(self.state(now))


@lru_cache(maxsize=1)
def _stations_db() -> bytes:
    return stations_db_bytes()


def _json(doc: dict[str, Any]) -> tuple[int, str, bytes]:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return 200, "application/json", body


def _text(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "text/plain; charset=utf-8", (message + "\n").encode()


def _handler_for(server: LiveFeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _reply(self, head: bool = False) -> None:
            try:
                status, ctype, body = server.answer(self.command, self.path)
            except Exception as exc:  # a bug here must answer 500, not hang the client
                status, ctype, body = _text(500, f"{type(exc).__name__}: {exc}")
            server.controls.requests.append((urlsplit(self.path).path, status))
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:
            self._reply()

        def do_HEAD(self) -> None:
            self._reply(head=True)

        def do_POST(self) -> None:
            self._reply()

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bikeshare_assets.ingest.feed_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--cadence", type=int, default=5, help="minutes (for outage cadences)")
    args = parser.parse_args(argv)
    server = LiveFeedServer(args.port, cadence_minutes=args.cadence).start()
    print(f"GBFS: {server.gbfs_url}\ncontrol: {server.control_url}/state", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
