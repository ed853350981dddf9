"""The data lake: atomic local writes, the partitioned parquet IO manager, and S3 on moto's
real server (the same code path as AWS, over HTTP on 127.0.0.1)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.ingest.quarantine import list_quarantined
from bikeshare_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, materialize_range
from bikeshare_assets.storage import (
    PARTITION_COLUMN_METADATA,
    LakeStorage,
    MissingPartitionError,
    PartitionedParquetIOManager,
    partition_key_path,
)
from bikeshare_assets_tests.conftest import (
    DAY,
    MotoS3,
    build_defs,
    lake_files,
    materializations,
    settings_for,
    step_failure_message,
)

# --------------------------------------------------------------------------------------
# Local lake
# --------------------------------------------------------------------------------------


def test_local_write_is_atomic_and_leaves_no_temp_files(lake: LakeStorage, home: Path) -> None:
    uri = lake.write_bytes("a/b/c.bin", b"first")
    assert Path(uri) == home / "lake/a/b/c.bin"
    assert lake.read_bytes("a/b/c.bin") == b"first"

    lake.write_bytes("a/b/c.bin", b"second, longer")

    assert lake.read_bytes("a/b/c.bin") == b"second, longer"
    assert lake_files(home / "lake") == ["a/b/c.bin"]  # hidden temp files included


def test_failed_local_write_keeps_the_old_file_and_cleans_up(lake: LakeStorage, home: Path) -> None:
    lake.write_bytes("x/part.parquet", b"good bytes")

    with pytest.raises(TypeError):
        lake.write_bytes("x/part.parquet", "not bytes")  # type: ignore[arg-type]

    assert lake.read_bytes("x/part.parquet") == b"good bytes"
    assert lake_files(home / "lake") == ["x/part.parquet"]


def test_local_list_exists_delete(lake: LakeStorage, home: Path) -> None:
    for key in ("q/a/reason.json", "q/b/reason.json", "q/b/payload.json", "other/x"):
        lake.write_bytes(key, b"{}")
    (home / "lake/q/a/.reason.json.123.tmp").write_bytes(b"half")  # a crashed writer's leftover

    assert lake.list_keys("q") == ["q/a/reason.json", "q/b/payload.json", "q/b/reason.json"]
    assert lake.list_keys("missing") == []
    assert lake.exists("q/a/reason.json") and not lake.exists("q/a/nope")
    lake.delete("q/a/reason.json")
    lake.delete("q/a/reason.json")  # deleting twice is fine
    assert not lake.exists("q/a/reason.json")


def test_parquet_round_trip_keeps_types(lake: LakeStorage) -> None:
    frame = pl.DataFrame(
        {
            "at": [datetime(2025, 9, 8, tzinfo=UTC)] * 2,
            "station_id": ["16107", "8203"],
            "bikes": pl.Series([13, None], dtype=pl.Int32),
        }
    )
    lake.write_parquet("t/part.parquet", frame)
    back = lake.read_parquet("t/part.parquet")
    assert back.equals(frame) and back.schema == frame.schema


# --------------------------------------------------------------------------------------
# The IO manager: a single-run range lands as one file per partition
# --------------------------------------------------------------------------------------

HOURS = dg.HourlyPartitionsDefinition(start_date="2025-09-08-00:00", fmt="%Y-%m-%d-%H:%M")
HOUR_KEYS = ["2025-09-08-00:00", "2025-09-08-01:00", "2025-09-08-02:00", "2025-09-08-03:00"]


def hour(h: int) -> datetime:
    return datetime(2025, 9, 8, h, tzinfo=UTC)


@dg.asset(
    key=["testcity", "readings"],
    partitions_def=HOURS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={PARTITION_COLUMN_METADATA: "hour_start"},
)
def readings(context) -> pl.DataFrame:
    """Two rows per hour of the run, except 02:00 (an empty window, like a recorder gap)."""
    windows = [HOURS.time_window_for_partition_key(k) for k in context.partition_keys]
    starts = [w.start for w in windows if w.start.hour != 2]
    return pl.DataFrame(
        {
            "hour_start": [s for s in starts for _ in range(2)],
            "value": [float(s.hour * 10 + i) for s in starts for i in range(2)],
        },
        schema={"hour_start": pl.Datetime("us", "UTC"), "value": pl.Float64},
    )


@dg.asset(
    key=["testcity", "totals"],
    partitions_def=HOURS,
    ins={"readings": dg.AssetIn(["testcity", "readings"])},
)
def totals(readings: pl.DataFrame) -> pl.DataFrame:
    return readings.group_by("hour_start").agg(pl.col("value").sum()).sort("hour_start")


@dg.asset(
    key=["testcity", "daily_sum"],
    partitions_def=dg.DailyPartitionsDefinition(start_date="2025-09-08"),
    ins={"readings": dg.AssetIn(["testcity", "readings"])},
)
def daily_sum(readings: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({"rows": [readings.height], "total": [readings["value"].sum()]})


@dg.asset(
    key=["testcity", "bad"],
    partitions_def=HOURS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={PARTITION_COLUMN_METADATA: "hour_start"},
)
def bad(context) -> pl.DataFrame:
    """A row stamped outside the run's partitions (a bug upstream)."""
    return pl.DataFrame({"hour_start": [hour(20)]}, schema={"hour_start": pl.Datetime("us", "UTC")})


def io_resources(lake: LakeStorage) -> dict:
    return {"io_manager": PartitionedParquetIOManager(lake=lake)}


def run(assets, selection, instance, lake, start, end=None, **kwargs):
    return dg.materialize(
        assets,
        selection=selection,
        instance=instance,
        resources=io_resources(lake),
        tags={RANGE_START_TAG: start, RANGE_END_TAG: end or start},
        **kwargs,
    )


def test_range_is_split_into_partition_files(lake: LakeStorage, home: Path, instance) -> None:
    result = run([readings], ["testcity/readings"], instance, lake, HOUR_KEYS[0], HOUR_KEYS[-1])

    assert result.success
    for key in HOUR_KEYS:
        frame = lake.read_parquet(partition_key_path(dg.AssetKey(["testcity", "readings"]), key))
        assert frame.schema == pl.Schema(
            {"hour_start": pl.Datetime("us", "UTC"), "value": pl.Float64}
        )
        h = int(key[11:13])
        if h == 2:
            assert frame.is_empty()  # the empty window is written, with its schema
        else:
            assert frame["hour_start"].to_list() == [hour(h), hour(h)]
            assert frame["value"].to_list() == [h * 10.0, h * 10.0 + 1]
    assert lake_files(home / "lake") == [
        f"readings/city=testcity/dt={k}/part.parquet{suffix}"
        for k in HOUR_KEYS
        for suffix in ("", ".sha256")  # each file and its checksum
    ]
    md = materializations(result)
    assert set(md) == set(HOUR_KEYS)
    assert {m["partitions_written"] for m in md.values()} == {4}


def test_downstream_loads_one_partition_and_a_range(lake: LakeStorage, instance) -> None:
    assert run(
        [readings], ["testcity/readings"], instance, lake, HOUR_KEYS[0], HOUR_KEYS[-1]
    ).success

    one = dg.materialize(
        [readings, totals],
        selection=["testcity/totals"],
        instance=instance,
        resources=io_resources(lake),
        partition_key="2025-09-08-01:00",
    )
    assert one.success
    assert lake.read_parquet("totals/city=testcity/dt=2025-09-08-01:00/part.parquet")[
        "value"
    ].to_list() == [10.0 + 11.0]

    # A daily partition reads all 24 hours of its day; only 4 exist.
    with pytest.raises(
        MissingPartitionError, match=r"testcity/readings partition 2025-09-08-04:00"
    ):
        dg.materialize(
            [readings, daily_sum],
            selection=["testcity/daily_sum"],
            instance=instance,
            resources=io_resources(lake),
            partition_key=DAY,
        )


def test_downstream_range_concatenates_partitions(lake: LakeStorage, instance) -> None:
    keys = [
        (datetime(2025, 9, 8) + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in range(24)
    ]
    assert run([readings], ["testcity/readings"], instance, lake, keys[0], keys[-1]).success

    result = dg.materialize(
        [readings, daily_sum],
        selection=["testcity/daily_sum"],
        instance=instance,
        resources=io_resources(lake),
        partition_key=DAY,
    )

    assert result.success
    out = lake.read_parquet(f"daily_sum/city=testcity/dt={DAY}/part.parquet")
    expected = sum(h * 10.0 * 2 + 1 for h in range(24) if h != 2)
    assert out.row(0) == (46, expected)


def test_row_outside_the_run_partitions_fails_loudly(
    lake: LakeStorage, home: Path, instance
) -> None:
    result = run(
        [bad], ["testcity/bad"], instance, lake, HOUR_KEYS[0], HOUR_KEYS[1], raise_on_error=False
    )

    assert not result.success
    assert "1 row(s) have a 'hour_start' that is not the start of one of the run's partitions" in (
        step_failure_message(result)
    )


# --------------------------------------------------------------------------------------
# S3 on moto's server
# --------------------------------------------------------------------------------------


def test_s3_round_trip(moto_s3: MotoS3) -> None:
    lake = LakeStorage(root=f"s3://{moto_s3.bucket}/lake", s3_endpoint_url=moto_s3.endpoint_url)
    frame = pl.DataFrame({"station_id": ["1", "2"], "bikes": [3, 4]})

    uri = lake.write_parquet("raw/city=x/dt=1/part.parquet", frame)
    lake.write_bytes("quarantine/a/reason.json", b'{"rule": "x"}')
    lake.write_bytes("quarantine/a/payload.json", b"[]")

    assert uri == f"s3://{moto_s3.bucket}/lake/raw/city=x/dt=1/part.parquet"
    # Objects really are in the bucket under the prefix, as S3 sees them.
    assert moto_s3.keys() == [
        "lake/quarantine/a/payload.json",
        "lake/quarantine/a/reason.json",
        "lake/raw/city=x/dt=1/part.parquet",
        "lake/raw/city=x/dt=1/part.parquet.sha256",
    ]
    assert pl.read_parquet(io.BytesIO(moto_s3.read("lake/raw/city=x/dt=1/part.parquet"))).equals(
        frame
    )
    assert lake.read_parquet("raw/city=x/dt=1/part.parquet").equals(frame)
    assert lake.list_keys("quarantine") == ["quarantine/a/payload.json", "quarantine/a/reason.json"]
    assert lake.exists("quarantine/a/reason.json")
    assert not lake.exists("quarantine/a/reason")  # a prefix of a key is not the key
    lake.write_bytes("quarantine/a/reason.json", b'{"rule": "y"}')
    assert json.loads(lake.read_bytes("quarantine/a/reason.json")) == {"rule": "y"}
    lake.delete("quarantine/a/reason.json")
    assert not lake.exists("quarantine/a/reason.json")


def test_s3_bucket_root_without_prefix(moto_s3: MotoS3) -> None:
    lake = LakeStorage(root=f"s3://{moto_s3.bucket}", s3_endpoint_url=moto_s3.endpoint_url)
    lake.write_bytes("a/b.txt", b"x")
    assert moto_s3.keys() == ["a/b.txt"]
    assert lake.list_keys("a") == ["a/b.txt"]


def test_raw_assets_materialize_to_s3(
    moto_s3: MotoS3, home: Path, day_cities: Path, instance, full_recording
) -> None:
    settings = settings_for(
        home,
        day_cities,
        BIKESHARE_DEPLOYMENT="staging",
        BIKESHARE_SOURCE="replay",
        BIKESHARE_STORAGE_ROOT=f"s3://{moto_s3.bucket}/lake",
        BIKESHARE_S3_ENDPOINT_URL=moto_s3.endpoint_url,
        # staging refuses a per-machine SQLite registry; the raw layer never calls MLflow
        MLFLOW_TRACKING_URI="http://127.0.0.1:9/mlflow",
    )
    defs = build_defs(settings)

    assert materialize_range(defs, instance, "paris/raw_station_information", DAY).success
    result = materialize_range(
        defs, instance, "paris/raw_station_status", "2025-09-08-00:15", "2025-09-08-00:30"
    )

    assert result.success, step_failure_message(result)
    keys = moto_s3.keys("lake/")
    assert "lake/raw_station_information/city=paris/dt=2025-09-08/part.parquet" in keys
    gap = pl.read_parquet(
        io.BytesIO(
            moto_s3.read("lake/raw_station_status/city=paris/dt=2025-09-08-00:15/part.parquet")
        )
    )
    assert gap.is_empty() and "bikes_available" in gap.columns
    snap = pl.read_parquet(
        io.BytesIO(
            moto_s3.read("lake/raw_station_status/city=paris/dt=2025-09-08-00:30/part.parquet")
        )
    )
    recorded = full_recording.filter(
        (pl.col("tbin_utc") == datetime(2025, 9, 8, 0, 30)) & pl.col("stationcode").is_not_null()
    )
    assert snap.height == recorded.height == 1429
    assert snap["bikes_available"].sum() == recorded["nb_velos_bin"].sum()
    # The quarantine lives on S3 too (the record without a station code at 00:30).
    s3_lake = LakeStorage(root=f"s3://{moto_s3.bucket}/lake", s3_endpoint_url=moto_s3.endpoint_url)
    dropped = list_quarantined(s3_lake, "raw_station_status")
    assert [(r["partition"], r["rule"]) for r in dropped] == [
        ("2025-09-08-00:30", "records_dropped")
    ]
    assert materializations(result)["2025-09-08-00:30"]["dropped_records_quarantine"].startswith(
        f"s3://{moto_s3.bucket}/lake/quarantine/raw_station_status/city=paris/dt=2025-09-08-00:30/"
    )
    # Nothing was written locally.
    assert not (home / "lake").exists()
