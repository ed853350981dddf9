"""The two kinds of file Meteostat's data service serves, built from our own numbers.

data.meteostat.net is static files under one base URL (see ingest/weather.py for how
meteostat 2.x reads them):

- `/stations.db`: the SQLite station catalogue (tables stations, names, identifiers,
  inventory) that `meteostat.stations` downloads;
- `/hourly/{year}/{station}.csv.gz`: one gzip CSV per station and year, header
  `year,month,day,hour,<param>,<param>_source,...`, times in UTC.

The local live feed (ingest/feed_server.py) and the tests' Meteostat stand-in serve files
built here, so `MeteostatWeatherSource` reads them exactly as it reads Meteostat's own.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Three real Meteostat stations around Paris (metadata from meteostat/weather-stations) with
# a stand-in inventory; 07156 Paris-Montsouris is the one with hourly data.
STATIONS_JSON = Path(__file__).resolve().parents[1] / "data" / "meteostat" / "stations.json"
PARIS_STATION = "07156"

# The column layout of Meteostat's hourly bulk files (every parameter has a *_source column).
HOURLY_PARAMETERS = (
    "temp",
    "rhum",
    "prcp",
    "snwd",
    "wdir",
    "wspd",
    "wpgt",
    "pres",
    "tsun",
    "cldc",
    "coco",
)
HOURLY_HEADER = ["year", "month", "day", "hour"] + [
    col for p in HOURLY_PARAMETERS for col in (p, f"{p}_source")
]


@dataclass(frozen=True)
class MeteostatHour:
    """One hour of a Meteostat hourly file (None = empty cell). `time` is naive UTC."""

    time: datetime
    temp: float | None
    prcp: float | None
    wspd: float | None
    coco: int | None


def stations_db_bytes(stations_json: Path = STATIONS_JSON) -> bytes:
    """The SQLite catalogue meteostat's `Stations` queries, built from a small JSON file.

    Column names and order follow the queries in meteostat 2.1.5 (`api/stations.py`):
    `stations.*` must be exactly the `Station` fields after the id, because meteostat
    passes the row straight into `Station(**row)`.
    """
    spec = json.loads(Path(stations_json).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stations.db"
        conn = sqlite3.connect(path)
        try:
            conn.executescript(
                """
                CREATE TABLE stations (id TEXT PRIMARY KEY, country TEXT, region TEXT,
                    latitude REAL, longitude REAL, elevation INTEGER, timezone TEXT);
                CREATE TABLE names (station TEXT, language TEXT, name TEXT);
                CREATE TABLE identifiers (station TEXT, key TEXT, value TEXT);
                CREATE TABLE inventory (station TEXT, provider TEXT, parameter TEXT,
                    start TEXT, end TEXT, completeness REAL);
                """
            )
            for st in spec["stations"]:
                conn.execute(
                    "INSERT INTO stations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        st["id"],
                        st["country"],
                        st["region"],
                        st["latitude"],
                        st["longitude"],
                        st["elevation"],
                        st["timezone"],
                    ),
                )
                conn.execute("INSERT INTO names VALUES (?, 'en', ?)", (st["id"], st["name"]))
                for key, value in st["identifiers"].items():
                    conn.execute("INSERT INTO identifiers VALUES (?, ?, ?)", (st["id"], key, value))
                for inv in st["inventory"]:
                    conn.execute(
                        "INSERT INTO inventory VALUES (?, ?, ?, ?, ?, NULL)",
                        (st["id"], inv["provider"], inv["parameter"], inv["start"], inv["end"]),
                    )
            conn.commit()
        finally:
            conn.close()
        return path.read_bytes()


def hourly_csv_gz(hours: list[MeteostatHour]) -> bytes:
    """Hours in Meteostat's hourly bulk format: gzip CSV, all parameter/source columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HOURLY_HEADER)
    for h in hours:
        values = {"temp": h.temp, "prcp": h.prcp, "wspd": h.wspd, "coco": h.coco}
        row: list[object] = [h.time.year, h.time.month, h.time.day, h.time.hour]
        for p in HOURLY_PARAMETERS:
            value = values.get(p)
            row += ["", ""] if value is None else [value, "metar"]
        writer.writerow(row)
    return gzip.compress(buf.getvalue().encode("utf-8"), mtime=0)
