"""Weather sources: the recorded Paris table and live Meteostat against a local stand-in.

The Meteostat tests run the real client code (meteostat's station catalogue, our HTTP
fetch and parser) against real HTTP on 127.0.0.1; the stand-in serves files in Meteostat's
own formats built from the recorded Paris weather. One test runs meteostat's own hourly
reader on the same files, so the fixture and our parser cannot drift from the library.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import meteostat
import polars as pl
import pytest

from bikeshare_assets.ingest.sources import WEATHER_SCHEMA, SourceError, WeatherSource
from bikeshare_assets.ingest.weather import (
    MeteostatWeatherSource,
    RecordedWeatherSource,
    parse_meteostat_hourly,
)
from bikeshare_assets_tests.support.meteostat_server import (
    RECORDED_WEATHER,
    FixtureHour,
    MeteostatStandIn,
    hourly_csv_gz,
    hours_from_recording,
    paris_files,
    serve_meteostat,
)

PARIS = (48.8566, 2.3522)
HOURLY_2025 = "/hourly/2025/07156.csv.gz"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def closed_port() -> int:
    """A port nothing listens on: bound, then released, so connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stand_in() -> Iterator[MeteostatStandIn]:
    with serve_meteostat() as server:
        yield server


@pytest.fixture
def recorded() -> RecordedWeatherSource:
    return RecordedWeatherSource(RECORDED_WEATHER)


def live(server: MeteostatStandIn, cache: Path, **kwargs: object) -> MeteostatWeatherSource:
    kwargs.setdefault("retries", 0)
    return MeteostatWeatherSource(*PARIS, base_url=server.base_url, cache_dir=cache, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Recorded
# --------------------------------------------------------------------------------------


def test_recorded_table_one_row_per_hour_in_the_weather_schema(recorded, caplog):
    frame = recorded.hourly(utc(2025, 9, 1), utc(2025, 10, 1))

    assert frame.schema == pl.Schema(WEATHER_SCHEMA)
    assert frame.height == recorded.hours == 145
    assert frame["hour_start"].is_sorted()
    assert frame["hour_start"].n_unique() == frame.height
    assert (frame["hour_start"].dt.minute() == 0).all()
    assert frame["weather_code"].null_count() == frame.height  # Open-Meteo table has no code
    # First row of the file, unchanged: the "wind_mps" values are km/h already.
    assert frame.row(0) == (utc(2025, 9, 7, 23), 21.8, 0.0, 9.0, None)
    # 01:00 on 8 September is missing from the recording and must stay missing.
    assert utc(2025, 9, 8, 1) not in frame["hour_start"].to_list()
    assert isinstance(recorded, WeatherSource)


def test_recorded_conflicting_repeats_keep_the_first_row_and_are_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="bikeshare_assets.ingest.weather"):
        source = RecordedWeatherSource(RECORDED_WEATHER)

    assert source.conflicting_duplicates == 11
    assert source.identical_duplicates == 0
    assert len(source.conflicting_hours) == 11
    assert utc(2025, 9, 13, 19) in source.conflicting_hours
    # The file has 16.4 / 0.0 / 11.1 then 16.6 / 0.1 / 12.6 for 19:00 on 13 September.
    row = source.hourly(utc(2025, 9, 13, 19), utc(2025, 9, 13, 20))
    assert row.rows() == [(utc(2025, 9, 13, 19), 16.4, 0.0, 11.1, None)]
    assert any("11 repeated row(s) disagree" in r.getMessage() for r in caplog.records)


def test_recorded_identical_repeats_are_dropped_quietly(tmp_path, caplog):
    path = tmp_path / "weather.csv"
    path.write_text(
        "hour_utc,temp_C,precip_mm,wind_mps\n"
        "2025-09-08 00:00:00,21.5,0.0,8.8\n"
        "2025-09-08 00:00:00,21.5,0.0,8.8\n"
        "2025-09-08 02:00:00,20.4,,8.1\n"
        "2025-09-08 02:00:00,20.4,,8.1\n"
        "2025-09-08 02:00:00,20.9,,8.1\n"
    )
    with caplog.at_level(logging.WARNING, logger="bikeshare_assets.ingest.weather"):
        source = RecordedWeatherSource(path)

    assert (source.identical_duplicates, source.conflicting_duplicates) == (2, 1)
    assert source.conflicting_hours == [utc(2025, 9, 8, 2)]
    frame = source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))
    assert frame.rows() == [
        (utc(2025, 9, 8, 0), 21.5, 0.0, 8.8, None),
        (utc(2025, 9, 8, 2), 20.4, None, 8.1, None),  # empty cell stays null, not 0
    ]
    assert [r.getMessage().split(": ", 1)[1][:2] for r in caplog.records] == ["1 "]


def test_recorded_window_is_half_open_and_in_utc(recorded):
    paris = datetime(2025, 9, 8, 4, tzinfo=UTC).astimezone()  # any zone: same instants
    frame = recorded.hourly(utc(2025, 9, 8, 2), paris)
    assert frame["hour_start"].to_list() == [utc(2025, 9, 8, 2), utc(2025, 9, 8, 3)]
    assert recorded.hourly(utc(2025, 9, 8, 2), utc(2025, 9, 8, 2)).height == 0
    assert recorded.hourly(utc(2025, 1, 1), utc(2025, 2, 1)).schema == pl.Schema(WEATHER_SCHEMA)
    with pytest.raises(ValueError, match="naive"):
        recorded.hourly(datetime(2025, 9, 8), utc(2025, 9, 9))
    with pytest.raises(ValueError, match="before start"):
        recorded.hourly(utc(2025, 9, 9), utc(2025, 9, 8))


def test_recorded_table_with_wrong_columns_is_rejected(tmp_path):
    path = tmp_path / "weather.csv"
    path.write_text("hour_utc,temp_C,precip_mm\n2025-09-08 00:00:00,21.5,0.0\n")
    with pytest.raises(ValueError, match="wind_mps"):
        RecordedWeatherSource(path)
    path.write_text("hour_utc,temp_C,precip_mm,wind_mps\n2025-09-08 00:30:00,21.5,0.0,3\n")
    with pytest.raises(ValueError, match="not on the hour"):
        RecordedWeatherSource(path)


# --------------------------------------------------------------------------------------
# Meteostat, live path against the stand-in
# --------------------------------------------------------------------------------------


def test_meteostat_serves_the_nearest_station_hours(stand_in, tmp_path, recorded):
    ms_config_before = (meteostat.config.stations_db_file, meteostat.config.cache_directory)
    source = live(stand_in, tmp_path)
    assert isinstance(source, WeatherSource)

    frame = source.hourly(utc(2025, 9, 1), utc(2025, 10, 1))

    assert source.resolve_station() == "07156"  # Paris-Montsouris, 4.6 km away
    assert stand_in.requests == ["/stations.db", HOURLY_2025]
    assert frame.schema == pl.Schema(WEATHER_SCHEMA)
    assert frame["hour_start"].is_sorted() and frame["hour_start"].n_unique() == frame.height
    # Same hours and values as the recording the stand-in was built from.
    expected = recorded.hourly(utc(2025, 9, 1), utc(2025, 10, 1))
    assert frame.height == 145
    assert frame["hour_start"].to_list() == expected["hour_start"].to_list()
    assert frame["temperature_c"].to_list() == expected["temperature_c"].to_list()
    assert frame["precipitation_mm"].to_list() == expected["precipitation_mm"].to_list()
    # Holes of the Meteostat file (every 25th wind, every 10th code) come back as nulls.
    fixture = {h.time.replace(tzinfo=UTC): h for h in hours_from_recording()}
    for hour, wind, code in frame.select("hour_start", "wind_speed_kmh", "weather_code").rows():
        assert (wind, code) == (fixture[hour].wspd, fixture[hour].coco)
    assert frame["wind_speed_kmh"].null_count() == 5
    assert frame["weather_code"].null_count() == 14
    assert set(frame["weather_code"].drop_nulls()) <= {2, 7, 8}
    # The catalogue went to our cache dir, and meteostat's global config was put back.
    assert [p.name for p in tmp_path.iterdir()] == [source._stations_db_file().name]
    assert (meteostat.config.stations_db_file, meteostat.config.cache_directory) == (
        ms_config_before
    )

    # The station is remembered: a second window only fetches data.
    assert source.hourly(utc(2025, 9, 10), utc(2025, 9, 11)).height > 0
    assert stand_in.requests == ["/stations.db", HOURLY_2025, HOURLY_2025]


def test_meteostat_own_reader_agrees_with_ours_on_the_stand_in_files(stand_in, tmp_path):
    """meteostat.hourly (the library's provider code) reads the same files to the same values.

    It runs in a subprocess configured only through meteostat's MS_* environment variables,
    because meteostat binds the hourly endpoint when its provider module is first imported.
    """
    script = r"""
import json, sys
from datetime import datetime
import meteostat as ms
import pandas as pd
P = ms.Parameter
df = ms.hourly("07156", datetime(2025, 9, 1), datetime(2025, 9, 30, 23),
               parameters=[P.TEMP, P.PRCP, P.WSPD, P.COCO]).fetch()
df = df.reset_index()
rows = [[t.isoformat(), *[None if pd.isna(v) else float(v) for v in vals]]
        for t, *vals in df[["time", "temp", "prcp", "wspd", "coco"]].astype(object).itertuples(index=False)]
print(json.dumps(rows))
"""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "MS_HOURLY_ENDPOINT": stand_in.base_url + "/hourly/{year}/{station}.csv.gz",
        "MS_STATIONS_DB_ENDPOINTS": json.dumps([stand_in.base_url + "/stations.db"]),
        "MS_STATIONS_DB_FILE": str(tmp_path / "ms" / "stations.db"),
        "MS_CACHE_DIRECTORY": str(tmp_path / "ms"),
        "MS_CACHE_ENABLE": "false",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    theirs = [
        (datetime.fromisoformat(t).replace(tzinfo=UTC), *vals)
        for t, *vals in json.loads(done.stdout)
    ]

    ours = live(stand_in, tmp_path / "ours").hourly(utc(2025, 9, 1), utc(2025, 10, 1))

    assert len(theirs) == ours.height == 145
    for (t, temp, prcp, wspd, coco), row in zip(theirs, ours.rows(), strict=True):
        assert row == (t, temp, prcp, wspd, None if coco is None else int(coco))


def test_meteostat_skips_nearer_stations_without_hourly_data(stand_in, tmp_path):
    # Next to Le Bourget, which the catalogue lists with daily data only.
    source = MeteostatWeatherSource(
        48.9667, 2.45, base_url=stand_in.base_url, cache_dir=tmp_path, retries=0
    )
    assert source.resolve_station() == "07156"
    assert source.hourly(utc(2025, 9, 8), utc(2025, 9, 8, 3)).height == 2  # 00:00, 02:00


def test_meteostat_without_a_station_in_range_is_a_source_error(stand_in, tmp_path):
    lyon = MeteostatWeatherSource(
        45.76, 4.84, base_url=stand_in.base_url, cache_dir=tmp_path, retries=0
    )
    with pytest.raises(SourceError, match="no Meteostat station with hourly data within 50 km"):
        lyon.hourly(utc(2025, 9, 8), utc(2025, 9, 9))
    assert HOURLY_2025 not in stand_in.requests


def test_meteostat_window_across_years_reads_each_year_and_missing_files_are_empty(
    stand_in, tmp_path
):
    source = live(stand_in, tmp_path, station_id="07156")

    frame = source.hourly(utc(2024, 12, 31, 20), utc(2025, 9, 8, 3))
    assert stand_in.requests == ["/hourly/2024/07156.csv.gz", HOURLY_2025]  # 2024: 404
    assert frame["hour_start"].to_list() == [
        utc(2025, 9, 7, 23),
        utc(2025, 9, 8, 0),
        utc(2025, 9, 8, 2),
    ]

    # An end at New Year midnight does not ask for the next year's file.
    stand_in.requests.clear()
    assert source.hourly(utc(2025, 12, 31), utc(2026, 1, 1)).height == 0
    assert stand_in.requests == [HOURLY_2025]


def test_meteostat_catalogues_of_different_servers_are_kept_apart(stand_in, tmp_path):
    with serve_meteostat() as other:
        live(stand_in, tmp_path).resolve_station()
        live(other, tmp_path).resolve_station()
        live(other, tmp_path).resolve_station()  # cached now
    assert stand_in.count("/stations.db") == 1
    assert other.count("/stations.db") == 1
    assert len(list(tmp_path.glob("stations-*.db"))) == 2


# --------------------------------------------------------------------------------------
# Meteostat, failures
# --------------------------------------------------------------------------------------


def test_meteostat_unreachable_catalogue_is_a_quick_source_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    source = MeteostatWeatherSource(*PARIS, base_url=url, cache_dir=tmp_path, retries=0)

    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))

    assert time.monotonic() - started < 3
    assert caught.value.url == f"{url}/stations.db"
    assert f"{url}/stations.db" in str(caught.value)
    assert "BIKESHARE_SOURCE=replay" in str(caught.value)
    assert list(tmp_path.glob("stations-*.db")) == []


def test_meteostat_unreachable_data_service_is_a_quick_source_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    source = MeteostatWeatherSource(
        *PARIS, base_url=url, cache_dir=tmp_path, station_id="07156", retries=1, backoff_s=0.05
    )

    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))

    assert time.monotonic() - started < 3
    assert caught.value.url == f"{url}{HOURLY_2025}"
    assert caught.value.status is None
    message = str(caught.value)
    assert "no connection" in message and "after 2 attempt(s)" in message
    assert "BIKESHARE_SOURCE=replay" in message


def test_meteostat_server_errors_are_retried_then_raised_with_the_body(stand_in, tmp_path):
    stand_in.status_overrides[HOURLY_2025] = 503
    source = live(stand_in, tmp_path, station_id="07156", retries=2, backoff_s=0.01)

    with pytest.raises(SourceError) as caught:
        source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))

    assert stand_in.count(HOURLY_2025) == 3
    assert caught.value.status == 503
    assert b"stand-in status 503" in caught.value.body


def test_meteostat_client_errors_are_not_retried(stand_in, tmp_path):
    stand_in.status_overrides[HOURLY_2025] = 403
    source = live(stand_in, tmp_path, station_id="07156", retries=3, backoff_s=0.01)
    with pytest.raises(SourceError, match="HTTP 403"):
        source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))
    assert stand_in.count(HOURLY_2025) == 1


def test_meteostat_slow_server_times_out(stand_in, tmp_path):
    stand_in.delays_s[HOURLY_2025] = 3.0
    source = live(stand_in, tmp_path, station_id="07156", timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(SourceError, match="no answer in time"):
        source.hourly(utc(2025, 9, 8), utc(2025, 9, 9))
    assert time.monotonic() - started < 2


def test_meteostat_catalogue_failure_leaves_no_catalogue_behind(stand_in, tmp_path):
    stand_in.status_overrides["/stations.db"] = 500
    with pytest.raises(SourceError, match="station catalogue"):
        live(stand_in, tmp_path).resolve_station()
    assert list(tmp_path.glob("stations-*.db")) == []

    # Served again: the next call downloads it and works.
    del stand_in.status_overrides["/stations.db"]
    assert live(stand_in, tmp_path).resolve_station() == "07156"


def test_meteostat_corrupt_catalogue_is_not_kept(stand_in, tmp_path):
    stand_in.files["/stations.db"] = b"<html>captive portal</html>"
    with pytest.raises(SourceError, match="station catalogue"):
        live(stand_in, tmp_path).resolve_station()
    assert list(tmp_path.glob("stations-*.db")) == []


def test_meteostat_truncated_catalogue_left_by_a_killed_run_is_replaced(stand_in, tmp_path):
    source = live(stand_in, tmp_path)
    db_file = source._stations_db_file()
    db_file.write_bytes(paris_files()["/stations.db"][:3000])  # fresh, so within its TTL

    with pytest.raises(SourceError, match="station catalogue"):
        source.resolve_station()
    assert not db_file.exists()
    assert stand_in.count("/stations.db") == 0

    assert source.resolve_station() == "07156"
    assert stand_in.count("/stations.db") == 1


def test_meteostat_file_that_is_not_meteostat_csv_is_a_source_error(stand_in, tmp_path):
    stand_in.files[HOURLY_2025] = b"<html>maintenance</html>"
    with pytest.raises(SourceError, match="has no \\['year', 'month', 'day', 'hour'\\]"):
        live(stand_in, tmp_path, station_id="07156").hourly(utc(2025, 9, 8), utc(2025, 9, 9))


# --------------------------------------------------------------------------------------
# Meteostat file parser
# --------------------------------------------------------------------------------------


def test_parser_reads_columns_by_name_and_keeps_empty_cells_null():
    hours = [
        FixtureHour(datetime(2025, 3, 30, 1), 5.5, None, 12.0, 3),
        FixtureHour(datetime(2025, 3, 30, 0), 5.0, 0.4, None, None),
    ]
    frame = parse_meteostat_hourly(hourly_csv_gz(hours), url="x")
    assert frame.rows() == [
        (utc(2025, 3, 30, 0), 5.0, 0.4, None, None),
        (utc(2025, 3, 30, 1), 5.5, None, 12.0, 3),
    ]

    # A file with fewer parameters (older layout): what is absent is null, not an error.
    short = b"year,month,day,hour,temp,temp_source\n2025,1,1,0,1.5,isd_lite\n"
    assert parse_meteostat_hourly(short).rows() == [(utc(2025, 1, 1), 1.5, None, None, None)]


def test_parser_rejects_non_numbers_and_keeps_first_of_a_repeated_hour(caplog):
    bad = b"year,month,day,hour,temp,temp_source\n2025,1,1,0,warm,isd_lite\n"
    with pytest.raises(SourceError, match="not a number"):
        parse_meteostat_hourly(bad, url="u")

    repeated = b"year,month,day,hour,temp\n2025,1,1,0,1.0\n2025,1,1,0,2.0\n2025,1,1,1,3.0\n"
    frame = parse_meteostat_hourly(repeated)
    assert frame["temperature_c"].to_list() == [1.0, 3.0]
    assert "repeats 1 hour(s)" in caplog.text


def test_fixture_files_have_one_row_per_recorded_hour():
    """Guards the stand-in itself: a fixture that lost hours would weaken every test above."""
    hours = hours_from_recording()
    assert len(hours) == 145
    assert hours[0].time == datetime(2025, 9, 7, 23)
    assert set(paris_files()) == {"/stations.db", HOURLY_2025}
    assert hours[-1].time - hours[0].time == timedelta(hours=204)
