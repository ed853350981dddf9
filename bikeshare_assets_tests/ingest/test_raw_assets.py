"""The raw assets, materialized with Dagster on a real instance.

Replay runs use a one-day copy of the real Vélib' recording (2025-09-08 UTC); expected
values are read from the recording itself, not from the pipeline. Live runs go through a
real GBFS server on 127.0.0.1 serving the real Vélib' documents.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from bikeshare_assets.cities import SourceMode
from bikeshare_assets.ingest.contracts import STATUS_CHECKS
from bikeshare_assets.ingest.gbfs import STATUS_SCHEMA
from bikeshare_assets.ingest.quarantine import list_quarantined
from bikeshare_assets.ingest.simulator import SimulatedSystem, SimulationConfig
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.conftest import (
    DAY,
    RECORDED_WEATHER,
    build_defs,
    lake_files,
    materializations,
    pkey,
    replay_table,
    settings_for,
    step_failure_message,
    utc,
    write_cities,
)
from bikeshare_assets_tests.support.gbfs_server import FIXTURES_DIR, GbfsServer, Reply

STATUS = "paris/raw_station_status"
INFO = "paris/raw_station_information"
WEATHER = "paris/raw_weather"
STATUS_KEY = dg.AssetKey(["paris", "raw_station_status"])
VELIB = FIXTURES_DIR / "velib-2025"


def bin_rows(recording: pl.DataFrame, at: datetime) -> pl.DataFrame:
    return recording.filter(pl.col("tbin_utc") == at.replace(tzinfo=None))


def status_file(lake_root: Path, partition: str, city: str = "paris") -> Path:
    return lake_root / "raw_station_status" / f"city={city}" / f"dt={partition}" / "part.parquet"


def check_records(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, names
) -> dict[tuple[str, str], bool]:
    """(check name, partition) -> passed, for every completed evaluation stored."""
    out: dict[tuple[str, str], bool] = {}
    for name in names:
        key = dg.AssetCheckKey(asset_key, name)
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=1000):
            if record.event is None or record.event.dagster_event is None:
                continue
            data = record.event.dagster_event.event_specific_data
            if isinstance(data, dg.AssetCheckEvaluation):
                assert record.partition == data.partition
                out.setdefault((name, str(record.partition)), data.passed)
    return out


def check_evaluations_in_run(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [
        e.event_specific_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]


def latest_materialization_ids(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]
) -> dict[str, int]:
    out = {}
    for partition in partitions:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
        ).records
        out[partition] = records[0].storage_id
    return out


def check_partition_infos(instance: dg.DagsterInstance, asset_key: dg.AssetKey, names, partitions):
    """(check, partition) -> Dagster's own view of the latest check execution."""
    keys = [dg.AssetCheckKey(asset_key, n) for n in names]
    infos = instance.event_log_storage.get_asset_check_partition_info(
        keys, partition_keys=partitions
    )
    return {(i.check_key.name, i.partition_key): i for i in infos}


@pytest.fixture
def paris_day(home: Path, day_cities: Path) -> dg.Definitions:
    return build_defs(settings_for(home, day_cities))


# --------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------


def test_status_range_lands_per_partition_with_real_gaps(
    paris_day, instance, home, full_recording
) -> None:
    assert materialize_range(paris_day, instance, INFO, DAY).success

    result = materialize_range(paris_day, instance, STATUS, "2025-09-08-00:00", "2025-09-08-01:00")

    assert result.success, step_failure_message(result)
    lake_root = home / "lake"
    keys = [
        "2025-09-08-00:00",
        "2025-09-08-00:15",
        "2025-09-08-00:30",
        "2025-09-08-00:45",
        "2025-09-08-01:00",
    ]
    bins = {
        pkey(utc(2025, 9, 8, h, m))
        for h, m in ((0, 0), (0, 15), (0, 30), (0, 45), (1, 0))
        if bin_rows(full_recording, utc(2025, 9, 8, h, m)).height
    }
    assert bins == {"2025-09-08-00:30", "2025-09-08-00:45"}  # the recorder missed the rest

    meta = materializations(result)
    assert sorted(meta) == keys
    for key in keys:
        frame = pl.read_parquet(status_file(lake_root, key))
        assert frame.schema == pl.Schema(STATUS_SCHEMA)
        if key not in bins:
            assert frame.is_empty()
            assert meta[key]["gap"] is True and meta[key]["rows"] == 0
            continue
        at = datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
        recorded = bin_rows(full_recording, at).filter(pl.col("stationcode").is_not_null())
        assert meta[key]["gap"] is False
        assert meta[key]["rows"] == frame.height == recorded.height
        assert frame["snapshot_at"].unique().to_list() == [at]
        got = frame.select("station_id", "bikes_available", "docks_available").sort("station_id")
        want = recorded.select(
            pl.col("stationcode").alias("station_id"),
            pl.col("nb_velos_bin").alias("bikes_available"),
            pl.col("nb_bornes_bin").alias("docks_available"),
        ).sort("station_id")
        assert got.equals(want)

    # The 00:30 bin holds the recording's one record without a station code: the batch is
    # accepted, the record is kept in quarantine, and the partition says so.
    assert meta["2025-09-08-00:30"]["records_dropped"] == 1
    dropped = list_quarantined(LakeStorage(root=str(lake_root)), "raw_station_status")
    assert [(r["partition"], r["rule"]) for r in dropped] == [
        ("2025-09-08-00:30", "records_dropped")
    ]
    payload = Path(meta["2025-09-08-00:30"]["dropped_records_quarantine"]) / "payload.jsonl"
    record = json.loads(payload.read_text().splitlines()[0])
    assert record["reason"] == "station_id: missing" and record["record"]["station_id"] is None

    # One check evaluation per check per partition with data, none for the gaps.
    checks = check_records(instance, STATUS_KEY, STATUS_CHECKS)
    assert set(checks) == {(c, p) for c in STATUS_CHECKS for p in sorted(bins)}
    assert all(checks.values())
    contract = dg.AssetCheckKey(STATUS_KEY, "contract")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [contract], partition_filter=PartitionKeyFilter(key="2025-09-08-00:45")
    )[contract]
    assert latest.partition == "2025-09-08-00:45"
    assert latest.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    assert latest.event.dagster_event.event_specific_data.metadata["records_received"].value == 1204
    # A gap has no snapshot to check: its planned evaluation is never completed.
    gap = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [contract], partition_filter=PartitionKeyFilter(key="2025-09-08-00:15")
    ).get(contract)
    assert gap is None or gap.status == AssetCheckExecutionRecordStatus.PLANNED


def test_metadata_path_never_names_another_partitions_file(paris_day, instance, home) -> None:
    """Output metadata is shared by all partitions of a run: a range names the asset's
    folder, a single partition its own file."""
    assert materialize_range(paris_day, instance, INFO, DAY).success
    folder = home / "lake" / "raw_station_status" / "city=paris"

    ranged = materialize_range(paris_day, instance, STATUS, "2025-09-08-00:30", "2025-09-08-00:45")
    single = materialize_range(paris_day, instance, STATUS, "2025-09-08-00:45")

    assert ranged.success and single.success
    assert {k: Path(md["path"]) for k, md in materializations(ranged).items()} == {
        "2025-09-08-00:30": folder,
        "2025-09-08-00:45": folder,
    }
    assert Path(materializations(single)["2025-09-08-00:45"]["path"]) == status_file(
        home / "lake", "2025-09-08-00:45"
    )
    assert status_file(home / "lake", "2025-09-08-00:30").is_relative_to(folder)


def test_station_information_day_from_the_recording(paris_day, instance, home, full_recording):
    result = materialize_range(paris_day, instance, INFO, DAY)

    assert result.success
    frame = pl.read_parquet(
        home / "lake/raw_station_information/city=paris/dt=2025-09-08/part.parquet"
    )
    day = full_recording.filter(
        (pl.col("tbin_utc") >= datetime(2025, 9, 8))
        & (pl.col("tbin_utc") < datetime(2025, 9, 9))
        & pl.col("stationcode").is_not_null()
    )
    # The station list a live fetch at the start of the day would have seen: each station's
    # first recorded values of the day (later values would leak the day's future).
    want = (
        day.sort("tbin_utc")
        .group_by("stationcode")
        .agg(pl.col("capacity_bin").first())
        .sort("stationcode")
    )
    got = frame.select("station_id", "capacity").sort("station_id")
    assert got.rows() == want.rows()
    assert frame["as_of_day"].unique().to_list() == [utc(2025, 9, 8)]
    checks = check_records(
        instance,
        dg.AssetKey(["paris", "raw_station_information"]),
        ("contract", "coordinates_near_city", "capacity_present"),
    )
    assert checks == {
        ("contract", DAY): True,
        ("coordinates_near_city", DAY): True,
        ("capacity_present", DAY): True,
    }


def test_weather_hours_with_a_recorder_gap(paris_day, instance, home) -> None:
    result = materialize_range(paris_day, instance, WEATHER, "2025-09-08-00:00", "2025-09-08-03:00")

    assert result.success
    csv = pl.read_csv(RECORDED_WEATHER)
    recorded = dict(zip(csv["hour_utc"], csv["temp_C"], strict=True))
    assert "2025-09-08 01:00:00" not in recorded  # Open-Meteo recording misses 01:00
    meta = materializations(result)
    for hour in ("00", "01", "02", "03"):
        key = f"2025-09-08-{hour}:00"
        frame = pl.read_parquet(home / f"lake/raw_weather/city=paris/dt={key}/part.parquet")
        temp = recorded.get(f"2025-09-08 {hour}:00:00")
        if temp is None:
            assert frame.is_empty() and meta[key]["gap"] is True
        else:
            assert frame["temperature_c"].to_list() == [temp]
            assert meta[key]["gap"] is False and meta[key]["rows"] == 1


@pytest.fixture
def bad_recording(tmp_path: Path, day_recording_path: Path) -> Path:
    """The real day, except that one station reports -3 bikes in the 07:30 bin."""
    frame = pl.read_parquet(day_recording_path)
    victim = bin_rows(frame, utc(2025, 9, 8, 7, 30))["stationcode"].drop_nulls()[0]
    broken = frame.with_columns(
        pl.when(
            (pl.col("tbin_utc") == datetime(2025, 9, 8, 7, 30)) & (pl.col("stationcode") == victim)
        )
        .then(pl.lit(-3, dtype=pl.Int32))
        .otherwise(pl.col("nb_velos_bin"))
        .alias("nb_velos_bin")
    )
    path = tmp_path / "velib_broken.parquet"
    broken.write_parquet(path)
    return path


def test_bad_bin_fails_the_step_stores_nothing_and_is_quarantined(
    tmp_path, home, instance, bad_recording
) -> None:
    cities = write_cities(tmp_path / "bad.toml", replay=replay_table(bad_recording))
    defs = build_defs(settings_for(home, cities))
    assert materialize_range(defs, instance, INFO, DAY).success
    lake_root = home / "lake"

    result = materialize_range(defs, instance, STATUS, "2025-09-08-07:00", "2025-09-08-07:45")

    assert not result.success
    message = step_failure_message(result)
    assert "paris/raw_station_status partition 2025-09-08-07:30: rule `out_of_range`" in message
    assert "bikes_available: greater_than_or_equal_to(0)" in message
    assert "1 of 4 partition(s)" in message
    # Nothing of the run is stored, not even its good partitions.
    assert result.get_asset_materialization_events() == []
    assert not (lake_root / "raw_station_status").exists()
    # The batch is kept as received, next to the reason.
    qdir = lake_root / "quarantine/raw_station_status/city=paris/dt=2025-09-08-07:30"
    folders = [p for p in qdir.iterdir() if (p / "reason.json").exists()]
    assert len(folders) == 1
    payload = (folders[0] / "payload.json").read_bytes()
    assert folders[0].name == hashlib.sha256(payload).hexdigest()[:12]
    assert any(s["num_bikes_available"] == -3 for s in json.loads(payload)["data"]["stations"])
    reason = json.loads((folders[0] / "reason.json").read_text())
    assert (reason["city"], reason["asset"], reason["partition"], reason["rule"]) == (
        "paris",
        "raw_station_status",
        "2025-09-08-07:30",
        "out_of_range",
    )
    assert reason["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert reason["source_url"].startswith("replay://velib_broken.parquet#station_status@")
    assert "--partition 2025-09-08-07:30" in reason["what_to_do"]
    # Nothing was stored, so no check result is logged for any partition of the run (the
    # step failure names the rejected partition and its rule).
    assert check_evaluations_in_run(result) == []

    # Re-running the same bad partition fails the same way and writes the same folder.
    again = materialize_range(defs, instance, STATUS, "2025-09-08-07:30")
    assert not again.success
    assert [p.name for p in qdir.iterdir()] == [folders[0].name]
    assert (folders[0] / "payload.json").read_bytes() == payload

    # The good partitions go through on their own.
    good = materialize_range(defs, instance, STATUS, "2025-09-08-07:00", "2025-09-08-07:15")
    assert good.success
    assert status_file(lake_root, "2025-09-08-07:15").exists()
    assert not status_file(lake_root, "2025-09-08-07:30").exists()


def test_rematerializing_is_idempotent(paris_day, instance, home) -> None:
    lake_root = home / "lake"
    assert materialize_range(paris_day, instance, INFO, DAY).success
    assert materialize_range(
        paris_day, instance, STATUS, "2025-09-08-00:00", "2025-09-08-01:00"
    ).success
    first = {
        key: status_file(lake_root, key).read_bytes()
        for key in ("2025-09-08-00:30", "2025-09-08-00:45")
    }
    files_before = lake_files(lake_root)

    # The same partition again, alone and inside an overlapping range.
    assert materialize_range(paris_day, instance, STATUS, "2025-09-08-00:30").success
    assert materialize_range(
        paris_day, instance, STATUS, "2025-09-08-00:30", "2025-09-08-00:45"
    ).success

    for key, data in first.items():
        assert status_file(lake_root, key).read_bytes() == data
        frame = pl.read_parquet(status_file(lake_root, key))
        assert frame["station_id"].is_unique().all()
    # No new files: no duplicate quarantine folders, no temp files.
    assert lake_files(lake_root) == files_before


# --------------------------------------------------------------------------------------
# Live: the local GBFS server with the real Vélib' documents
# --------------------------------------------------------------------------------------


def live_defs(tmp_path: Path, home: Path, gbfs_url: str, **env: str):
    live_start = (datetime.now(UTC) - timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    cities = write_cities(tmp_path / "live.toml", gbfs_url=gbfs_url, live_start=live_start)
    settings = settings_for(home, cities, BIKESHARE_SOURCE="live", **env)
    parts = city_partitions(settings.cities["paris"], SourceMode.LIVE)
    status_key = parts.snapshots.get_last_partition_key()
    window = parts.snapshots.time_window_for_partition_key(status_key)
    day_key = window.start.strftime("%Y-%m-%d")
    return build_defs(settings), status_key, day_key


def published_now(path: Path) -> bytes:
    """The real Vélib' status document as if published now: every timestamp moved by the
    same amount, so stations keep their real relative ages."""
    doc = json.loads(path.read_bytes())
    shift = int(datetime.now(UTC).timestamp()) - doc["lastUpdatedOther"]
    doc["lastUpdatedOther"] += shift
    for station in doc["data"]["stations"]:
        station["last_reported"] += shift
    return json.dumps(doc).encode()


@pytest.fixture
def velib_server():
    with GbfsServer() as server:
        url = server.serve_system(
            "velib",
            None,
            {
                "station_information": VELIB / "station_information.json",
                "station_status": published_now(VELIB / "station_status.json"),
            },
            languages=("fr",),
        )
        yield server, url


def test_live_current_partition_through_the_local_gbfs_server(
    tmp_path, home, instance, velib_server
) -> None:
    server, url = velib_server
    defs, status_key, day_key = live_defs(tmp_path, home, url)

    assert materialize_range(defs, instance, INFO, day_key).success
    result = materialize_range(defs, instance, STATUS, status_key)

    assert result.success, step_failure_message(result)
    frame = pl.read_parquet(status_file(home / "lake", status_key))
    doc = json.loads((VELIB / "station_status.json").read_bytes())
    want = {str(s["station_id"]): s["num_bikes_available"] for s in doc["data"]["stations"]}
    assert dict(frame.select("station_id", "bikes_available").rows()) == want
    md = materializations(result)[status_key]
    assert md["source_url"] == server.url("/velib/fr/station_status.json")
    assert md["station_coverage"] == 1.0
    assert server.hits("/velib/fr/station_status.json") == 1


def test_live_feed_serving_a_months_old_document_is_a_gap_with_a_failed_check(
    tmp_path, home, instance, velib_server
) -> None:
    """The recorded Vélib' document as served in 2025: a feed frozen for months still
    answers 200, but its snapshot is not the one at t."""
    server, url = velib_server
    feed = "/velib/fr/station_status.json"
    recorded = (VELIB / "station_status.json").read_bytes()
    defs, status_key, day_key = live_defs(tmp_path, home, url)
    assert materialize_range(defs, instance, INFO, day_key).success
    server.script(feed, [Reply(body=recorded)])

    result = materialize_range(defs, instance, STATUS, status_key)

    assert result.success, step_failure_message(result)
    md = materializations(result)[status_key]
    assert (md["gap"], md["rows"], md["dead_feed"]) == (True, 0, "stale_feed")
    assert pl.read_parquet(status_file(home / "lake", status_key)).is_empty()
    checks = check_records(instance, STATUS_KEY, STATUS_CHECKS)
    assert checks == {("contract", status_key): True, ("last_reported_fresh", status_key): False}
    (reason,) = list_quarantined(LakeStorage(root=str(home / "lake")), "raw_station_status")
    assert (reason["rule"], reason["partition"]) == ("stale_feed", status_key)
    assert "2026-03-04T14:29:50+00:00" in reason["message"]
    folder = Path(md["dead_feed_quarantine"])
    assert (folder / "payload.json").read_bytes() == recorded


def _hostile(case: str) -> bytes:
    """The real Vélib' document, published now, broken one way."""
    doc = json.loads(published_now(VELIB / "station_status.json"))
    stations = doc["data"]["stations"]
    if case == "deeply nested":
        return b'{"data": {"stations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    if case == "lone surrogate id":
        stations[7]["station_id"] = "\udc80"
    elif case == "empty list":
        doc["data"]["stations"] = []
    elif case == "planned stations":
        for station in stations[:151]:
            station.update(status="PLANNED", is_installed=0)
            del station["last_reported"]
    return json.dumps(doc).encode()


def test_hostile_live_documents_through_the_asset(tmp_path, home, instance, velib_server):
    """Through the real asset: a clear rejection (a Dagster Failure, nothing stored), a
    dropped record, a dead-feed gap with a failed check, stations reported not in service."""
    server, url = velib_server
    feed = "/velib/fr/station_status.json"
    defs, status_key, day_key = live_defs(tmp_path, home, url)
    assert materialize_range(defs, instance, INFO, day_key).success
    part = status_file(home / "lake", status_key)

    server.script(feed, [Reply(body=_hostile("deeply nested"))])
    result = materialize_range(defs, instance, STATUS, status_key)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.user_failure_data is not None  # BatchRejected, no crash
    assert "rule `malformed_json`" in step_failure_message(result)
    assert not part.exists()

    server.script(feed, [Reply(body=_hostile("lone surrogate id"))])
    result = materialize_range(defs, instance, STATUS, status_key)
    assert result.success, step_failure_message(result)
    md = materializations(result)[status_key]
    assert (md["rows"], md["records_dropped"]) == (1510, 1)

    server.script(feed, [Reply(body=_hostile("planned stations"))])
    result = materialize_range(defs, instance, STATUS, status_key)
    assert result.success, step_failure_message(result)
    md = materializations(result)[status_key]
    assert (md["rows"], md["stations_not_in_service"], md["records_dropped"]) == (1360, 151, 0)

    server.script(feed, [Reply(body=_hostile("empty list"))])
    result = materialize_range(defs, instance, STATUS, status_key)
    assert result.success, step_failure_message(result)
    md = materializations(result)[status_key]
    assert (md["gap"], md["rows"], md["dead_feed"]) == (True, 0, "empty_feed")
    assert pl.read_parquet(part).is_empty()
    fresh = dg.AssetCheckKey(STATUS_KEY, "last_reported_fresh")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [fresh], partition_filter=PartitionKeyFilter(key=status_key)
    )[fresh]
    assert latest.status == AssetCheckExecutionRecordStatus.FAILED


def test_dead_live_feed_is_quarantined_as_source_unavailable(
    tmp_path, home, instance, velib_server
) -> None:
    server, url = velib_server
    defs, status_key, day_key = live_defs(tmp_path, home, url, BIKESHARE_HTTP_RETRIES="1")
    assert materialize_range(defs, instance, INFO, day_key).success
    feed = "/velib/fr/station_status.json"
    body = b"upstream exploded: no snapshot for you\n"
    server.script(feed, [Reply(status=500, body=body, content_type="text/plain")] * 2)

    result = materialize_range(defs, instance, STATUS, status_key)

    assert not result.success
    assert server.hits(feed) == 2  # one try + one retry, then the feed is dead
    message = step_failure_message(result)
    assert f"paris/raw_station_status partition {status_key}: rule `source_unavailable`" in message
    assert "HTTP 500" in message
    assert not (home / "lake" / "raw_station_status").exists()
    qdir = home / "lake" / "quarantine/raw_station_status/city=paris" / f"dt={status_key}"
    (folder,) = list(qdir.iterdir())
    assert (folder / "payload.body").read_bytes() == body
    reason = json.loads((folder / "reason.json").read_text())
    assert reason["rule"] == "source_unavailable"
    assert reason["details"]["http_status"] == 500
    assert reason["source_url"] == server.url(feed)


def test_live_refuses_a_past_days_station_list_and_says_so(
    tmp_path, home, instance, velib_server
) -> None:
    """The live feed only has today's station list: asking it for yesterday fails with a
    clear message and stores nothing, and the missing-partition hint for yesterday's
    station_status does not send the user to do exactly that."""
    server, url = velib_server
    defs, _, day_key = live_defs(tmp_path, home, url)
    yesterday = (datetime.strptime(day_key, "%Y-%m-%d") - timedelta(days=1)).strftime("%Y-%m-%d")
    info_feed = "/velib/fr/station_information.json"

    refused = materialize_range(defs, instance, INFO, yesterday)

    assert not refused.success
    message = step_failure_message(refused)
    assert f"paris/raw_station_information partition {yesterday}: rule `source_unavailable`" in (
        message
    )
    assert "is in the past" in message
    assert "today's station list, which would be stored under this past date" in message
    assert server.hits(info_feed) == 0
    assert not (home / "lake" / "raw_station_information").exists()

    # Yesterday's snapshots need yesterday's list: the hint explains why it cannot be
    # fetched live instead of telling the user to materialize it.
    past_status = f"{yesterday}-12:00"
    missing = materialize_range(defs, instance, STATUS, past_status)
    assert not missing.success
    hint = step_failure_message(missing)
    assert f"paris/raw_station_information partition {yesterday} has not been materialized" in hint
    assert "a live feed only serves the present" in hint and "BIKESHARE_SOURCE=replay" in hint
    assert f"--select paris/raw_station_information --partition {yesterday}" not in hint

    # Today's list is current: fetched, and the hint for a missing one still says what to run.
    assert materialize_range(defs, instance, INFO, day_key).success
    assert server.hits(info_feed) == 1


def test_missing_todays_station_list_hint_names_the_command(
    tmp_path, home, instance, velib_server
) -> None:
    _, url = velib_server
    defs, status_key, day_key = live_defs(tmp_path, home, url)

    result = materialize_range(defs, instance, STATUS, status_key)

    assert not result.success
    hint = step_failure_message(result)
    assert f"--select paris/raw_station_information --partition {day_key}`" in hint


# --------------------------------------------------------------------------------------
# Simulate
# --------------------------------------------------------------------------------------


def test_simulated_partitions_hold_the_simulators_numbers(tmp_path, home, instance) -> None:
    start = utc(2026, 1, 5)
    sim = {"stations": 40, "days": 1, "seed": 11, "start": start, "cadence_minutes": 5}
    cities = write_cities(tmp_path / "sim.toml", simulate=sim)
    defs = build_defs(settings_for(home, cities, BIKESHARE_SOURCE="simulate"))

    assert materialize_range(defs, instance, INFO, "2026-01-05").success
    result = materialize_range(defs, instance, STATUS, "2026-01-05-08:00", "2026-01-05-08:10")

    assert result.success, step_failure_message(result)
    system = SimulatedSystem(
        SimulationConfig(stations=40, days=1, seed=11, start=start, cadence_minutes=5)
    )
    for minute in (0, 5, 10):
        at = utc(2026, 1, 5, 8, minute)
        frame = pl.read_parquet(status_file(home / "lake", pkey(at)))
        doc = json.loads(system.station_status_document(at))
        want = {s["station_id"]: s["num_bikes_available"] for s in doc["data"]["stations"]}
        assert len(want) == 40
        assert dict(frame.select("station_id", "bikes_available").rows()) == want


@pytest.fixture
def sharded_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An on-disk SQLite instance like the demo's DAGSTER_HOME: one event database per run
    plus an index database, whose storage ids differ."""
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as inst:
        yield inst


def test_check_results_are_current_for_the_materialization_they_judge(
    tmp_path, home, sharded_instance, bad_recording
) -> None:
    """Each partition's check results name that partition's new materialization, so Dagster
    reports them as current; a run whose batch is rejected stores nothing and logs nothing,
    so the earlier, still-stored results stay the current ones."""
    instance = sharded_instance
    cities = write_cities(tmp_path / "bad.toml", replay=replay_table(bad_recording))
    defs = build_defs(settings_for(home, cities))
    assert materialize_range(defs, instance, INFO, DAY).success
    good = ["2025-09-08-07:00", "2025-09-08-07:15"]

    first = materialize_range(defs, instance, STATUS, good[0], good[-1])

    assert first.success, step_failure_message(first)
    stored = latest_materialization_ids(instance, STATUS_KEY, good)
    evaluations = check_evaluations_in_run(first)
    assert {(e.check_name, e.partition) for e in evaluations} == {
        (c, p) for c in STATUS_CHECKS for p in good
    }
    for evaluation in evaluations:
        target = evaluation.target_materialization_data
        assert target is not None and target.run_id == first.run_id
        assert target.storage_id == stored[evaluation.partition]
    infos = check_partition_infos(instance, STATUS_KEY, STATUS_CHECKS, good)
    assert set(infos) == {(c, p) for c in STATUS_CHECKS for p in good}
    assert all(info.is_current for info in infos.values())
    assert all(
        info.latest_execution_status == AssetCheckExecutionRecordStatus.SUCCEEDED
        for info in infos.values()
    )
    latest = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(STATUS_KEY, "contract")
    )
    assert latest is not None and latest.evaluation is not None
    assert latest.evaluation.target_materialization_data.storage_id == stored[latest.partition]

    # A run over the same partitions plus the bad 07:30 bin: rejected, nothing stored, and
    # no result logged — not even the passing ones of 07:00 and 07:15.
    rejected = materialize_range(defs, instance, STATUS, good[0], "2025-09-08-07:45")

    assert not rejected.success
    assert rejected.get_asset_materialization_events() == []
    assert check_evaluations_in_run(rejected) == []
    assert latest_materialization_ids(instance, STATUS_KEY, good) == stored
    for check in STATUS_CHECKS:
        key = dg.AssetCheckKey(STATUS_KEY, check)
        for partition in good:
            history = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=10, partition_filter=PartitionKeyFilter(key=partition)
            )
            # the rejected run planned the check but never completed it
            assert [(r.run_id, r.status) for r in history] == [
                (rejected.run_id, AssetCheckExecutionRecordStatus.PLANNED),
                (first.run_id, AssetCheckExecutionRecordStatus.SUCCEEDED),
            ]
            done = [r for r in history if r.run_id == first.run_id]
            assert done[0].evaluation.target_materialization_data.storage_id == stored[partition]
