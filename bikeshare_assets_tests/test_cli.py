"""`bikeshare` as a user runs it: a subprocess on a small replay of the real recording."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from bikeshare_assets_tests.conftest import (
    RECORDED_WEATHER,
    replay_table,
    run_bikeshare,
    utc,
    write_cities,
)

# Three hours of the real 2025-09-08 (UTC), from the one-day copy of the recording.
START, END = utc(2025, 9, 8, 0, 0), utc(2025, 9, 8, 3, 0)
HOURS = 3


def bikeshare(
    *args: str, home: Path, cities: Path, timeout: float = 240, **extra_env: str
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_CITIES_FILE": str(cities),
        "DAGSTER_HOME": str(home / "dagster_home"),
        **extra_env,
    }
    return run_bikeshare(*args, env=env, timeout=timeout)


def summary_row(stdout: str, asset: str) -> tuple[int, int, int, int]:
    """(partitions, with data, gaps, rows) of one asset in the demo's summary table."""
    match = re.search(
        rf"^{re.escape(asset)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+s$", stdout, re.M
    )
    assert match, f"no summary row for {asset} in:\n{stdout}"
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def expected_counts(recording: Path) -> dict[str, tuple[int, int, int, int]]:
    """The summary the demo must print, computed from the recording files themselves."""
    frame = pl.read_parquet(recording)
    window = frame.filter(
        (pl.col("tbin_utc") >= START.replace(tzinfo=None))
        & (pl.col("tbin_utc") < END.replace(tzinfo=None))
        & pl.col("stationcode").is_not_null()
    )
    bins = window["tbin_utc"].n_unique()
    status_rows = window.unique(subset=["tbin_utc", "stationcode"]).height
    day = frame.filter(pl.col("tbin_utc").dt.date() == START.date())
    stations = day["stationcode"].drop_nulls().n_unique()
    weather = pl.read_csv(RECORDED_WEATHER)["hour_utc"].unique()
    hours = [f"2025-09-08 {h:02d}:00:00" for h in range(HOURS)]
    with_weather = sum(1 for h in hours if h in weather.to_list())
    return {
        "paris/raw_station_information": (1, 1, 0, stations),
        "paris/raw_weather": (HOURS, with_weather, HOURS - with_weather, with_weather),
        "paris/raw_station_status": (4 * HOURS, bins, 4 * HOURS - bins, status_rows),
    }


@pytest.fixture
def three_hours(tmp_path: Path, day_recording_path: Path) -> Path:
    return write_cities(
        tmp_path / "cities.toml", replay=replay_table(day_recording_path, START, END)
    )


def test_demo_materializes_the_replay_and_prints_the_summary(
    three_hours: Path, home: Path, day_recording_path: Path
) -> None:
    proc = bikeshare("demo", "--until", "raw", home=home, cities=three_hours, **SECRET_URLS)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Credentials in the configured URLs are never echoed; where they point still is.
    assert "s3cr3t" not in proc.stdout + proc.stderr
    assert "MLflow tracking: http://alice:***@127.0.0.1:9/mlflow" in proc.stdout
    expected = expected_counts(day_recording_path)
    # The recorder really missed bins in these hours, and Open-Meteo one hour.
    assert expected["paris/raw_station_status"][2] > 0
    assert expected["paris/raw_weather"][2] == 1
    for asset, counts in expected.items():
        assert summary_row(proc.stdout, asset) == counts, proc.stdout + proc.stderr
    assert "0 rejected batch(es), " in proc.stdout
    lake = home / "lake"
    status_files = list((lake / "raw_station_status" / "city=paris").glob("dt=*/part.parquet"))
    assert len(status_files) == 4 * HOURS
    # The instance the summary points the UI at holds the runs.
    assert (home / "dagster_home" / "dagster.yaml").exists()
    assert f"DAGSTER_HOME={home / 'dagster_home'}" in proc.stdout


@pytest.fixture
def bad_two_hours(tmp_path: Path, day_recording_path: Path) -> Path:
    """02:00-04:00 of the same day, except one station reports 1200 bikes in the 03:15 bin."""
    frame = pl.read_parquet(day_recording_path)
    at = datetime(2025, 9, 8, 3, 15)
    victim = frame.filter(pl.col("tbin_utc") == at)["stationcode"].drop_nulls().sort()[0]
    broken = frame.with_columns(
        pl.when((pl.col("tbin_utc") == at) & (pl.col("stationcode") == victim))
        .then(pl.lit(1200, dtype=pl.Int32))
        .otherwise(pl.col("nb_velos_bin"))
        .alias("nb_velos_bin")
    )
    path = tmp_path / "broken.parquet"
    broken.write_parquet(path)
    window = replay_table(path, utc(2025, 9, 8, 2, 0), utc(2025, 9, 8, 4, 0))
    return write_cities(tmp_path / "bad.toml", replay=window)


def test_demo_stops_on_a_rejected_batch_and_quarantine_lists_it(
    bad_two_hours: Path, home: Path
) -> None:
    proc = bikeshare("demo", home=home, cities=bad_two_hours)

    assert proc.returncode == 1
    assert "paris: station status (15 min)" in proc.stdout and "FAILED" in proc.stdout
    assert "FAILED: paris: station status (15 min)" in proc.stderr
    assert "paris/raw_station_status partition 2025-09-08-03:15: rule `out_of_range`" in proc.stderr
    demo_count = re.search(
        r"^(\d+ rejected batch\(es\), \d+ accepted .*) in quarantine", proc.stdout, re.M
    )
    assert demo_count and demo_count[1].startswith("1 rejected batch(es), "), proc.stdout
    assert not (home / "lake" / "raw_station_status").exists()

    listed = bikeshare("quarantine", home=home, cities=bad_two_hours)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    rejected = [line for line in lines if "rule=out_of_range" in line]
    assert len(rejected) == 1
    assert rejected[0].startswith(
        "paris/raw_station_status 2025-09-08-03:15  rejected  rule=out_of_range"
    )
    assert "bikes_available: less_than_or_equal_to(1000)" in rejected[0]
    # The station list's dropped record (the recording has one row without a station code)
    # is kept and listed too.
    assert (
        "paris/raw_station_information 2025-09-08  accepted  rule=records_dropped" in listed.stdout
    )
    # One definition of a rejected batch: the demo and `bikeshare quarantine` agree.
    assert lines[-1] == demo_count[1]
    assert (
        lines[-1]
        == f"1 rejected batch(es), {len(lines) - 2} accepted batch(es) with dropped records"
    )


@pytest.fixture
def duplicate_station(tmp_path: Path, day_recording_path: Path) -> tuple[Path, str]:
    """00:00-01:00 of the same day, except one station appears twice in the 00:45 bin with
    different bike counts (a feed listing a station twice)."""
    frame = pl.read_parquet(day_recording_path)
    at = datetime(2025, 9, 8, 0, 45)
    row = frame.filter(pl.col("tbin_utc") == at).drop_nulls("stationcode").sort("stationcode")[3]
    twin = row.with_columns((pl.col("nb_velos_bin") + 1).cast(pl.Int32))
    path = tmp_path / "duplicate.parquet"
    pl.concat([frame, twin]).write_parquet(path)
    window = replay_table(path, utc(2025, 9, 8, 0, 0), utc(2025, 9, 8, 1, 0))
    return write_cities(tmp_path / "dup.toml", replay=window), row["stationcode"][0]


def test_duplicate_station_rejection_names_the_station(duplicate_station, home: Path) -> None:
    cities, station = duplicate_station
    proc = bikeshare("demo", "--until", "raw", home=home, cities=cities)

    assert proc.returncode == 1
    assert (
        f"1 station id(s) appear more than once in the batch with different values: {station} (2×)"
        in proc.stderr
    )
    listed = bikeshare("quarantine", "--asset", "raw_station_status", home=home, cities=cities)
    (line,) = [x for x in listed.stdout.splitlines() if "rule=duplicate_station_id" in x]
    assert line.startswith("paris/raw_station_status 2025-09-08-00:45  rejected")
    assert f"{station} (2×)" in line


SECRET_URLS = {
    "MLFLOW_TRACKING_URI": "http://alice:s3cr3t-mlflow@127.0.0.1:9/mlflow",
    "BIKESHARE_S3_ENDPOINT_URL": "http://minio:s3cr3t-minio@127.0.0.1:9/?X-Amz-Security-Token=s3cr3t-token",
}


def test_env_redacts_credentials_in_urls(home: Path, three_hours: Path) -> None:
    proc = bikeshare("env", home=home, cities=three_hours, **SECRET_URLS)

    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t" not in proc.stdout
    assert "http://alice:***@127.0.0.1:9/mlflow" in proc.stdout
    assert "http://minio:***@127.0.0.1:9/?X-Amz-Security-Token=***" in proc.stdout


def test_demo_says_when_its_24_hour_quality_repeats_the_test_window(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10, item 10: PR-AUC@24h on rows inside the champion's test window is not new
    evidence, and the demo says so; after the window it is."""
    import dagster as dg

    from bikeshare_assets import cli
    from bikeshare_assets.monitoring.assets import QUALITY_SCHEMA
    from bikeshare_assets.storage import LakeStorage, partition_key_path

    lake = LakeStorage(root=str(home / "lake"))
    model = pl.DataFrame(
        {"test_start": ["2025-09-14 10:45:00+00:00"], "test_end": ["2025-09-16 10:45:00+00:00"]}
    )
    lake.write_parquet(
        partition_key_path(dg.AssetKey(["paris", "stockout_model"]), "2025-09-16"), model
    )
    quality = pl.DataFrame(
        [{"target": "stockout_bikes", "rows": 10, "pr_auc_24h": 0.8, "f1_24h": 0.7}],
        schema=QUALITY_SCHEMA,
    )

    def printed(*times: datetime) -> str:
        predictions = pl.DataFrame({"snapshot_at": [t.replace(tzinfo=UTC) for t in times]})
        cli._print_quality(lake, "paris", "2025-09-16", quality, predictions)
        return capsys.readouterr().out

    inside = printed(
        datetime(2025, 9, 16, 10, 0), datetime(2025, 9, 16, 10, 45), datetime(2025, 9, 16, 11, 0)
    )
    assert "2 of 3 predicted snapshots lie inside the champion's test window" in inside
    assert "not an independent estimate" in inside and "PR-AUC@24h 0.800" in inside
    after = printed(datetime(2025, 9, 17, 10, 0))
    assert "all after the champion's test window: new evidence" in after
