"""Replaying your own recording: ISO times, local-time bins, a city without weather, and
materializing from `bikeshare` (also "the latest partition" of a live feed)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.partitions import materialize_range
from bikeshare_assets_tests.conftest import (
    DAY_END,
    DAY_START,
    build_defs,
    pkey,
    replay_table,
    run_bikeshare,
    settings_for,
    step_failure_message,
    trim_recording,
    utc,
    write_cities,
)
from bikeshare_assets_tests.ingest.test_raw_assets import (  # the live GBFS server fixture
    INFO,
    STATUS,
    live_defs,
    velib_server,  # noqa: F401
)

# Four bins of the real 2025-09-08 recording (UTC).
WINDOW = (utc(2025, 9, 8, 6, 0), utc(2025, 9, 8, 7, 0))


def iso_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """tbin_utc as ISO strings: even rows as `...Z`, odd rows as Paris local time with its
    +02:00 offset (both name the same UTC instant), mixed within each bin."""
    odd = pl.int_range(pl.len()) % 2 == 1
    return frame.with_columns(
        pl.when(odd)
        .then((pl.col("tbin_utc") + timedelta(hours=2)).dt.strftime("%Y-%m-%dT%H:%M:%S+02:00"))
        .otherwise(pl.col("tbin_utc").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .alias("tbin_utc")
    )


def test_iso_strings_with_z_and_offsets_replay_as_the_same_utc_bins(
    tmp_path: Path, day_recording_path: Path
) -> None:
    naive = trim_recording(pl.read_parquet(day_recording_path), *WINDOW)
    naive_path, iso_path = tmp_path / "naive.parquet", tmp_path / "iso.parquet"
    naive.write_parquet(naive_path)
    iso_strings(naive).write_parquet(iso_path)

    reference, iso = ReplaySource(naive_path), ReplaySource(iso_path)

    assert iso.bins == reference.bins and len(iso.bins) == 2  # 06:15 and 06:45 recorded
    forms = iso_strings(naive)["tbin_utc"]
    assert forms.str.ends_with("+02:00").any() and forms.str.ends_with("Z").any()
    for start in reference.bins:
        window = (start, start + timedelta(minutes=15))
        assert iso.station_status(*window).body == reference.station_status(*window).body


def shifted_to_local(frame: pl.DataFrame) -> pl.DataFrame:
    """What a recorder that wrote Paris local time (CEST, +2 h) into tbin_utc produces."""
    return frame.with_columns(pl.col("tbin_utc") + timedelta(hours=2))


def test_bins_that_look_like_local_time_are_warned_about(
    tmp_path: Path, home: Path, instance: dg.DagsterInstance, full_recording: pl.DataFrame
) -> None:
    # The heuristic needs enough recorded nights: the whole nine days.
    real, local = tmp_path / "utc.parquet", tmp_path / "local.parquet"
    full_recording.write_parquet(real)
    shifted_to_local(full_recording).write_parquet(local)

    assert ReplaySource(real, "Europe/Paris").local_time_warning is None
    assert "looks like local time" in ReplaySource(local, "Europe/Paris").local_time_warning

    start = utc(2025, 9, 9, 8, 0)
    cities = write_cities(
        tmp_path / "cities.toml", replay=replay_table(local, utc(2025, 9, 9), utc(2025, 9, 10))
    )
    defs = build_defs(settings_for(home, cities))
    assert materialize_range(defs, instance, INFO, "2025-09-09").success
    result = materialize_range(defs, instance, STATUS, pkey(start))

    assert result.success, step_failure_message(result)
    warnings = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.level == 30 and "looks like local time" in e.message
    ]
    assert len(warnings) == 1 and str(local) in warnings[0]


def test_a_city_without_weather_has_no_weather_asset_and_passes_null_budget(
    tmp_path: Path, home: Path, instance: dg.DagsterInstance, day_recording_path: Path
) -> None:
    table = replay_table(day_recording_path, DAY_START, DAY_END, weather_path=None)
    cities = write_cities(tmp_path / "cities.toml", replay=table)
    defs = build_defs(settings_for(home, cities))
    graph = defs.get_repository_def().asset_graph
    features = dg.AssetKey(["paris", "station_features"])

    assert not graph.has(dg.AssetKey(["paris", "raw_weather"]))
    assert dg.AssetKey(["paris", "raw_weather"]) not in graph.get(features).parent_keys

    assert materialize_range(defs, instance, INFO, "2025-09-08").success
    first, last = "2025-09-08-06:00", "2025-09-08-08:45"
    assert materialize_range(defs, instance, STATUS, first, last).success
    result = materialize_range(defs, instance, "paris/station_features", "2025-09-08-08:00", last)

    assert result.success, step_failure_message(result)
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "null_budget"
    ]
    assert len(checks) == 2  # the recorder has 08:15 and 08:45 in this hour
    assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]
    excused = checks[-1].metadata["excused_by_gaps"].value
    assert {"temperature_c", "precipitation_mm", "wind_speed_kmh"} <= set(excused)


def bikeshare(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return run_bikeshare(*args, env={**clean, **env})


def test_bikeshare_materialize_creates_the_instance_it_records_runs_in(
    tmp_path: Path, home: Path, day_recording_path: Path
) -> None:
    cities = write_cities(tmp_path / "cities.toml", replay=replay_table(day_recording_path))
    env = {"BIKESHARE_HOME": str(home), "BIKESHARE_CITIES_FILE": str(cities)}
    assert not (home / "dagster_home").exists()

    proc = bikeshare("materialize", "--select", INFO, "--partition", "2025-09-08", env=env)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "paris/raw_station_information: 1 partition(s)" in proc.stdout
    assert (home / "dagster_home" / "dagster.yaml").exists()
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as recorded:
        (run,) = recorded.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS

    # A partition that does not exist is one line, not a traceback.
    bad = bikeshare("materialize", "--select", INFO, "--partition", "2025-09-31", env=env)

    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "partition '2025-09-31' does not exist" in bad.stderr.splitlines()[0]


def test_bikeshare_materialize_latest_fetches_the_current_live_window(
    tmp_path: Path,
    home: Path,
    velib_server,  # noqa: F811
) -> None:
    server, url = velib_server
    _, status_key, _ = live_defs(tmp_path, home, url)
    env = {
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_CITIES_FILE": str(tmp_path / "live.toml"),
        "BIKESHARE_SOURCE": "live",
    }

    info = bikeshare("materialize", "--select", INFO, "--latest", env=env)
    status = bikeshare("materialize", "--select", STATUS, "--latest", env=env)

    assert info.returncode == 0, info.stdout + info.stderr
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{STATUS}: 1 partition(s) " in status.stdout
    newest = status.stdout.split("partition(s) ")[1].split("..")[0]
    assert newest >= status_key  # the newest complete window when the command ran
    assert server.hits("/velib/fr/station_status.json") == 1
    assert (home / "lake" / "raw_station_status" / "city=paris" / f"dt={newest}").exists()


def test_a_live_rejection_says_what_actually_works(
    tmp_path: Path,
    home: Path,
    instance: dg.DagsterInstance,
    velib_server,  # noqa: F811
) -> None:
    from bikeshare_assets_tests.support.gbfs_server import Reply

    server, url = velib_server
    defs, status_key, day_key = live_defs(tmp_path, home, url, BIKESHARE_HTTP_RETRIES="1")
    assert materialize_range(defs, instance, INFO, day_key).success
    feed = "/velib/fr/station_status.json"
    server.script(feed, [Reply(status=500, body=b"down", content_type="text/plain")] * 2)

    result = materialize_range(defs, instance, STATUS, status_key)

    assert not result.success
    message = step_failure_message(result)
    assert "cannot be fetched again" in message
    assert f"bikeshare materialize --select {STATUS} --latest" in message
    assert "re-run those partitions" not in message
    qdir = home / "lake" / "quarantine/raw_station_status/city=paris" / f"dt={status_key}"
    (folder,) = list(qdir.iterdir())
    what_to_do = json.loads((folder / "reason.json").read_text())["what_to_do"]
    assert "cannot be fetched again" in what_to_do
    assert "--latest" in what_to_do and f"--partition {status_key}" not in what_to_do


@pytest.mark.parametrize("text", ["2025-09-08 07:15", "yesterday"])
def test_unparseable_tbin_strings_name_the_file(tmp_path: Path, text: str) -> None:
    frame = pl.DataFrame(
        {
            "tbin_utc": [text],
            "stationcode": ["1"],
            "name": ["a"],
            "nb_velos_bin": [1],
            "nb_bornes_bin": [1],
            "capacity_bin": [2],
            "lat": [48.8],
            "lon": [2.3],
        }
    )
    path = tmp_path / "rec.parquet"
    frame.write_parquet(path)
    if text == "yesterday":
        with pytest.raises(ValueError, match=r"rec.parquet: tbin_utc value 'yesterday'"):
            _ = ReplaySource(path).recording
    else:
        assert ReplaySource(path).bins == [datetime(2025, 9, 8, 7, 15, tzinfo=DAY_START.tzinfo)]
