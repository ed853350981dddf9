"""A local stand-in for data.meteostat.net, serving the files meteostat 2.x downloads.

Meteostat's data service is two kinds of static file under one base URL:

- `/stations.db`: the SQLite station catalogue (tables stations, names, identifiers,
  inventory) that `meteostat.stations` downloads through its network service;
- `/hourly/{year}/{station}.csv.gz`: one gzip CSV per station and year, header
  `year,month,day,hour,<param>,<param>_source,...`, times in UTC, 404 when there is no file.

The stand-in builds both (with the package's builders, ingest/meteostat_files.py) from the project's recorded Paris weather (so tests run on real
numbers) and serves them on 127.0.0.1 with a real HTTP server. Individual paths can be made
to fail (status code) or to hang (delay), to test what the client does when the service
misbehaves.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bikeshare_assets.ingest.meteostat_files import (
    MeteostatHour,
    hourly_csv_gz,
    stations_db_bytes,
)

RECORDED_WEATHER = (
    Path(__file__).resolve().parents[2]
    / "bikeshare_assets"
    / "data"
    / "paris-velib-2025-09"
    / "weather_hourly_openmeteo.csv"
)

# The file builders live in the package (the local live feed serves them too).
FixtureHour = MeteostatHour


def condition_code(precip_mm: float) -> int:
    """A Meteostat condition code for the fixture: 2 fair, 7 light rain, 8 rain."""
    if precip_mm <= 0:
        return 2
    return 7 if precip_mm < 1.0 else 8


def hours_from_recording(recorded_csv: Path = RECORDED_WEATHER) -> list[FixtureHour]:
    """The recorded Paris hours, first row per hour, with a few deliberate empty cells.

    Meteostat files have one row per hour, so repeated hours of the recording are dropped
    here (first wins). Every 10th hour loses its condition code and every 25th its wind
    speed: real files have such holes and they must come back as nulls, not as zeros.
    """
    seen: set[str] = set()
    hours: list[FixtureHour] = []
    with recorded_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["hour_utc"] in seen:
                continue
            seen.add(row["hour_utc"])
            i = len(hours)
            prcp = float(row["precip_mm"])
            hours.append(
                FixtureHour(
                    time=datetime.strptime(row["hour_utc"], "%Y-%m-%d %H:%M:%S"),
                    temp=float(row["temp_C"]),
                    prcp=prcp,
                    wspd=None if i % 25 == 24 else float(row["wind_mps"]),
                    coco=None if i % 10 == 9 else condition_code(prcp),
                )
            )
    return hours


def paris_files(station: str = "07156") -> dict[str, bytes]:
    """Every file the stand-in serves for the recorded Paris September 2025."""
    return {
        "/stations.db": stations_db_bytes(),
        f"/hourly/2025/{station}.csv.gz": hourly_csv_gz(hours_from_recording()),
    }


@dataclass
class MeteostatStandIn:
    """State of a running stand-in: what it serves, how it misbehaves, what it was asked."""

    files: dict[str, bytes]
    base_url: str = ""
    status_overrides: dict[str, int] = field(default_factory=dict)  # path -> HTTP status
    delays_s: dict[str, float] = field(default_factory=dict)  # path -> seconds before replying
    requests: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return sum(1 for p in self.requests if p == path)


def _handler(state: MeteostatStandIn, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with lock:
                state.requests.append(path)
            delay = state.delays_s.get(path, 0.0)
            if delay:
                time.sleep(delay)
            status = state.status_overrides.get(path)
            body = state.files.get(path)
            if status is None:
                status = 200 if body is not None else 404
            if status != 200:
                body = f"stand-in status {status} for {path}\n".encode()
            ctype = "application/gzip" if path.endswith(".gz") else "application/octet-stream"
            assert body is not None
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test); nothing to tell it

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            return

    return Handler


@contextmanager
def serve_meteostat(files: dict[str, bytes] | None = None) -> Iterator[MeteostatStandIn]:
    """Serve `files` (default: the recorded Paris data) on 127.0.0.1 until the block ends."""
    state = MeteostatStandIn(files=paris_files() if files is None else files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, threading.Lock()))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="meteostat-stand-in",
        daemon=True,
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
