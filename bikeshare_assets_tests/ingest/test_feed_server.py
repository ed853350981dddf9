"""The local live feed (`bikeshare live`): the Paris recording served as the present.

Expected values are read from the recording file itself with polars, never through the
server's own mapping functions; the pipeline reads the server over real HTTP with the
project's GBFS client and Meteostat source, on a real Dagster instance.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import requests

from bikeshare_assets.cities import SourceMode
from bikeshare_assets.ingest.feed_server import HEATWAVE_DELTA_C, LiveFeedServer
from bikeshare_assets.ingest.quarantine import list_quarantined
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.conftest import (
    RECORDED_WEATHER,
    RECORDING,
    VENV_BIN,
    build_defs,
    free_port,
    materializations,
    settings_for,
    step_failure_message,
    write_cities,
)
from bikeshare_assets_tests.support.processes import port_open

INFO, STATUS, WEATHER = (
    "paris/raw_station_information",
    "paris/raw_station_status",
    "paris/raw_weather",
)
# A Tuesday: the recorder missed most of Tuesday 9 September 2025, so a Tuesday is served
# from the best-covered weekday, Monday 8 September (59 of 96 bins).
TUESDAY = datetime(2026, 12, 1, 11, 7, 30, tzinfo=UTC)
SATURDAY = datetime(2026, 12, 5, 17, 2, tzinfo=UTC)  # 18:02 in Paris: the recorder has 18:00
PARIS = ZoneInfo("Europe/Paris")


def same_wall_clock(now: datetime, recorded_day: date) -> timedelta:
    """The shift that puts `now` at the same Paris wall-clock time on `recorded_day`."""
    return now - datetime.combine(recorded_day, now.astimezone(PARIS).time(), tzinfo=PARIS)


@pytest.fixture(scope="module")
def recording() -> pl.DataFrame:
    frame = pl.read_parquet(RECORDING)
    return frame.with_columns(pl.col("tbin_utc").dt.replace_time_zone("UTC"))


def newest_bin_at_or_before(recording: pl.DataFrame, at: datetime) -> datetime:
    return recording.filter(pl.col("tbin_utc") <= at).get_column("tbin_utc").max()  # type: ignore[return-value]


def bikes_at(recording: pl.DataFrame, tbin: datetime) -> dict[str, int]:
    rows = recording.filter((pl.col("tbin_utc") == tbin) & pl.col("stationcode").is_not_null())
    return dict(rows.select("stationcode", "nb_velos_bin").rows())


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def get(server: LiveFeedServer, path: str) -> requests.Response:
    return requests.get(server.base_url + path, timeout=10)


def post(server: LiveFeedServer, path: str) -> requests.Response:
    return requests.post(server.base_url + path, timeout=10)


# --------------------------------------------------------------------------------------
# The time shift
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "recorded_day"),
    [(TUESDAY, date(2025, 9, 8)), (SATURDAY, date(2025, 9, 13))],
)
def test_station_status_now_is_the_recording_at_the_same_paris_wall_clock_time(
    recording, now, recorded_day
) -> None:
    with LiveFeedServer(cadence_minutes=5, clock=Clock(now)) as server:
        doc = get(server, "/paris/fr/station_status.json").json()
        state = get(server, "/_control/state").json()

    shift = same_wall_clock(now, recorded_day)
    # A December day served from a September one: whole days and the DST hour.
    assert shift % timedelta(days=1) == timedelta(hours=1)
    tbin = newest_bin_at_or_before(recording, now - shift)
    assert state["shift_hours"] == shift / timedelta(hours=1)
    assert state["recorded_day"] == str(recorded_day)
    assert tbin.date() == recorded_day and now - shift - tbin < timedelta(minutes=45)
    # Same local time of day and the same kind of day (weekday / weekend).
    assert (tbin + shift).weekday() >= 5 if now.weekday() >= 5 else (tbin + shift).weekday() < 5
    served = {s["station_id"]: s["num_bikes_available"] for s in doc["data"]["stations"]}
    assert served == bikes_at(recording, tbin)
    assert doc["last_updated"] == int(now.timestamp())
    assert {s["last_reported"] for s in doc["data"]["stations"]} == {
        int((tbin + shift).timestamp())
    }
    assert int((tbin + shift).timestamp()) <= doc["last_updated"]


def test_a_new_recorded_bin_appears_as_the_clock_moves(recording) -> None:
    clock = Clock(TUESDAY)
    with LiveFeedServer(cadence_minutes=5, clock=clock) as server:
        first = get(server, "/paris/fr/station_status.json").json()
        clock.now = TUESDAY + timedelta(hours=2)
        later = get(server, "/paris/fr/station_status.json").json()
    shift = same_wall_clock(clock.now, date(2025, 9, 8))
    want = bikes_at(recording, newest_bin_at_or_before(recording, clock.now - shift))
    assert {s["station_id"]: s["num_bikes_available"] for s in later["data"]["stations"]} == want
    assert (
        later["data"]["stations"][0]["last_reported"]
        > first["data"]["stations"][0]["last_reported"]
    )


# --------------------------------------------------------------------------------------
# Fault controls
# --------------------------------------------------------------------------------------


def test_outage_answers_503_for_n_cadences_then_recovers() -> None:
    clock = Clock(datetime(2026, 12, 1, 11, 2, 10, tzinfo=UTC))  # window 11:00-11:05 under way
    feed_paths = (
        "/paris/gbfs.json",
        "/paris/fr/station_status.json",
        "/paris/fr/station_information.json",
    )
    with LiveFeedServer(cadence_minutes=5, clock=clock) as server:
        state = post(server, "/_control/outage?cadences=3").json()
        # Windows 11:00, 11:05, 11:10 are fetched just after they end: all must fail.
        assert state["outage_until"] == "2026-12-01T11:17:30+00:00"
        for fetch_at in ("11:05:20", "11:10:40", "11:15:59", "11:17:29"):
            h, m, s = (int(x) for x in fetch_at.split(":"))
            clock.now = clock.now.replace(hour=h, minute=m, second=s)
            assert [get(server, p).status_code for p in feed_paths] == [503, 503, 503], fetch_at
            assert get(server, "/meteostat/stations.db").status_code == 200  # weather stays up
        clock.now = clock.now.replace(minute=17, second=30)
        assert [get(server, p).status_code for p in feed_paths] == [200, 200, 200]
        assert get(server, "/_control/state").json()["outage_until"] is None


def test_drift_controls_change_the_content_as_documented(recording) -> None:
    clock = Clock(TUESDAY)
    with LiveFeedServer(cadence_minutes=5, clock=clock) as server:
        normal = get(server, "/paris/fr/station_status.json").json()["data"]["stations"]

        post(server, "/_control/drift?kind=closed_stations").raise_for_status()
        closed = get(server, "/paris/fr/station_status.json").json()["data"]["stations"]
        shut = [s for s in closed if not s["is_renting"]]
        assert 0.15 < len(shut) / len(closed) < 0.35  # a fixed quarter, by station id
        assert all(s["num_bikes_available"] == 0 == s["num_docks_available"] for s in shut)
        assert not any(s["is_returning"] for s in shut)
        again = get(server, "/paris/fr/station_status.json").json()["data"]["stations"]
        assert [s["station_id"] for s in again if not s["is_renting"]] == [
            s["station_id"] for s in shut
        ]

        post(server, "/_control/drift?kind=weekend").raise_for_status()
        weekend = get(server, "/paris/fr/station_status.json").json()
        state = get(server, "/_control/state").json()
        assert date.fromisoformat(state["recorded_day"]).weekday() >= 5
        tbin = newest_bin_at_or_before(recording, TUESDAY - timedelta(hours=state["shift_hours"]))
        assert {s["station_id"]: s["num_bikes_available"] for s in weekend["data"]["stations"]} == (
            bikes_at(recording, tbin)
        )

        post(server, "/_control/reset").raise_for_status()
        normal_weather = weather_temperatures(server)
        post(server, "/_control/drift?kind=heatwave").raise_for_status()
        hot = weather_temperatures(server)
        assert hot.keys() == normal_weather.keys() and len(hot) > 100
        assert all(hot[h] == normal_weather[h] + HEATWAVE_DELTA_C for h in hot)

        assert post(server, "/_control/drift?kind=snowstorm").status_code == 400
        post(server, "/_control/reset").raise_for_status()
        assert get(server, "/paris/fr/station_status.json").json()["data"]["stations"] == normal


def weather_temperatures(server: LiveFeedServer) -> dict[datetime, float]:
    """Hour -> temp of the Meteostat hourly file the feed serves for this year."""
    from bikeshare_assets.ingest.weather import parse_meteostat_hourly

    body = get(server, f"/meteostat/hourly/{TUESDAY.year}/07156.csv.gz").content
    frame = parse_meteostat_hourly(body, url="test")
    return dict(frame.select("hour_start", "temperature_c").rows())


# --------------------------------------------------------------------------------------
# The pipeline reads it: live mode on a real Dagster instance
# --------------------------------------------------------------------------------------


@pytest.fixture
def live_feed() -> LiveFeedServer:
    with LiveFeedServer(cadence_minutes=5) as server:
        yield server


def live_settings(tmp_path: Path, home: Path, server: LiveFeedServer, **env: str):
    start = (datetime.now(UTC) - timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    cities = write_cities(tmp_path / "live.toml", gbfs_url=server.gbfs_url, live_start=start)
    return settings_for(
        home, cities, BIKESHARE_SOURCE="live", BIKESHARE_METEOSTAT_URL=server.meteostat_url, **env
    )


def test_live_raw_assets_read_the_local_feed_with_the_projects_client(
    tmp_path, home, instance, live_feed, recording
) -> None:
    settings = live_settings(tmp_path, home, live_feed)
    defs = build_defs(settings)
    parts = city_partitions(settings.cities["paris"], SourceMode.LIVE)
    day = parts.days.get_last_partition_key()
    status_key = parts.snapshots.get_last_partition_key()
    hour_keys = parts.hours.get_partition_keys()[-6:]

    assert materialize_range(defs, instance, INFO, day).success
    result = materialize_range(defs, instance, STATUS, status_key)
    assert result.success, step_failure_message(result)
    weather_run = materialize_range(defs, instance, WEATHER, hour_keys[0], hour_keys[-1])
    assert weather_run.success, step_failure_message(weather_run)

    lake = LakeStorage(root=str(home / "lake"))
    state = live_feed.state()
    stored = pl.read_parquet(
        Path(lake.root) / "raw_station_status" / "city=paris" / f"dt={status_key}" / "part.parquet"
    )
    tbin = datetime.fromisoformat(state["recorded_bin"])
    assert dict(stored.select("station_id", "bikes_available").rows()) == bikes_at(recording, tbin)
    md = materializations(result)[status_key]
    assert md["source_url"] == f"{live_feed.base_url}/paris/fr/station_status.json"
    assert md["gap"] is False

    # Each hour is the recorded hour of its day's recorded day; the recording lacks the hours
    # its recorder missed, and those are gaps, never made-up weather.
    recorded = dict(pl.read_csv(RECORDED_WEATHER).select("hour_utc", "temp_C").rows()[::-1])
    stored = materializations(weather_run)
    for key in hour_keys:
        hour = parts.hours.time_window_for_partition_key(key).start
        recorded_day = live_feed.recording.recorded_day(hour.astimezone(PARIS).date())
        at = (hour - same_wall_clock(hour, recorded_day)).strftime("%Y-%m-%d %H:%M:%S")
        if at not in recorded:
            assert stored[key]["gap"] is True, key
            continue
        frame = pl.read_parquet(
            Path(lake.root) / "raw_weather" / "city=paris" / f"dt={key}" / "part.parquet"
        )
        assert frame.get_column("temperature_c").to_list() == [recorded[at]], key


def test_an_outage_is_recorded_by_the_ingest_and_the_feed_recovers(
    tmp_path, home, instance, live_feed
) -> None:
    settings = live_settings(tmp_path, home, live_feed, BIKESHARE_HTTP_RETRIES="1")
    defs = build_defs(settings)
    parts = city_partitions(settings.cities["paris"], SourceMode.LIVE)
    assert materialize_range(defs, instance, INFO, parts.days.get_last_partition_key()).success

    post(live_feed, "/_control/outage?seconds=600").raise_for_status()
    key = parts.snapshots.get_last_partition_key()
    failed = materialize_range(defs, instance, STATUS, key)
    assert not failed.success
    assert "source_unavailable" in step_failure_message(failed)
    records = list_quarantined(LakeStorage(root=str(home / "lake")), "raw_station_status")
    assert [(r["partition"], r["rule"]) for r in records] == [(key, "source_unavailable")]
    assert records[0]["details"]["http_status"] == 503
    assert records[0]["source_url"].startswith(live_feed.base_url)

    post(live_feed, "/_control/reset").raise_for_status()
    recovered = materialize_range(defs, instance, STATUS, parts.snapshots.get_last_partition_key())
    assert recovered.success, step_failure_message(recovered)


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def started_in_the_background() -> None:
    """As `cmd &` from a script: SIGINT and SIGTERM arrive ignored (and Dagster maps SIGTERM
    to whatever SIGINT does)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def test_bikeshare_live_starts_serves_the_feed_and_stops_on_sigterm(tmp_path) -> None:
    feed_port, ui_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "HOME": str(tmp_path),
        "BIKESHARE_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.Popen(
        [str(VENV_BIN / "bikeshare"), "live", "--without-champion",
         "--feed-port", str(feed_port), "--ui-port", str(ui_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=started_in_the_background,
    )  # fmt: skip
    dagster_pid = None
    try:
        deadline = time.monotonic() + 50
        state = None
        while time.monotonic() < deadline and state is None:
            try:
                state = requests.get(
                    f"http://127.0.0.1:{feed_port}/_control/state", timeout=2
                ).json()
            except requests.RequestException:
                assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
                time.sleep(0.5)
        assert state is not None, "the feed never answered"
        assert state["gbfs_url"] == f"http://127.0.0.1:{feed_port}/paris/gbfs.json"
        cities = (tmp_path / "home" / "live" / "cities.toml").read_text()
        assert state["gbfs_url"] in cities
        # Wait for the first partitions and the UI line, then stop it like Ctrl-C would.
        lines: list[str] = []
        while time.monotonic() < deadline + 40:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("Dagster UI:") or not line:
                break
        output = "".join(lines)
        assert "paris/raw_station_status" in output and "FAILED" not in output, output
        assert f"http://127.0.0.1:{ui_port}" in output
        dagster_pid = int(output.split("dagster dev pid ")[1].split(",")[0])
        assert Path(f"/proc/{dagster_pid}").exists()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        left_behind = [g for g in (proc.pid, dagster_pid) if g and group_alive(g)]
        for group in left_behind:  # never leave a process behind, even when the test fails
            os.killpg(group, signal.SIGKILL)
    assert proc.returncode == 0
    # Nothing it started is left: `dagster dev`'s whole process group and the feed are gone.
    assert left_behind == []
    assert not port_open(feed_port) and not port_open(ui_port)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
