"""Storage integrity on real lake files: a truncated, empty or bit-flipped partition is named
with the command that rebuilds it, and killed writers' temp files are cleaned up safely."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.partitions import materialize_range
from bikeshare_assets.storage import (
    CHECKSUM_SUFFIX,
    CorruptPartitionError,
    LakeStorage,
    partition_key_path,
)
from bikeshare_assets_tests.conftest import build_defs, settings_for, step_failure_message
from bikeshare_assets_tests.test_storage import HOUR_KEYS, io_resources, readings, run, totals

READINGS = dg.AssetKey(["testcity", "readings"])
STATUS = dg.AssetKey(["paris", "raw_station_status"])
SNAPSHOT = "2025-09-08-00:30"  # 1,429 stations recorded


@pytest.fixture
def real_status_partition(home: Path, day_cities: Path, instance) -> tuple[LakeStorage, str]:
    """One real raw_station_status partition (the Vélib' recording, ~1,400 stations),
    materialized through the project's Definitions."""
    defs = build_defs(settings_for(home, day_cities))
    assert materialize_range(defs, instance, "paris/raw_station_information", "2025-09-08").success
    result = materialize_range(defs, instance, "paris/raw_station_status", SNAPSHOT)
    assert result.success, step_failure_message(result)
    return LakeStorage(root=str(home / "lake")), partition_key_path(STATUS, SNAPSHOT)


def _downstream_of_damaged(lake: LakeStorage, instance, damage) -> str:
    """Materialize testcity/readings, damage one partition file, run totals on it."""
    assert run(
        [readings], ["testcity/readings"], instance, lake, HOUR_KEYS[0], HOUR_KEYS[1]
    ).success
    path = Path(lake.uri(partition_key_path(READINGS, HOUR_KEYS[1])))
    damage(path)
    result = dg.materialize(
        [readings, totals],
        selection=["testcity/totals"],
        instance=instance,
        resources=io_resources(lake),
        partition_key=HOUR_KEYS[1],
        raise_on_error=False,
    )
    assert not result.success
    return step_failure_message(result)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="zero-length"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-100]), id="truncated"),
    ],
)
def test_damaged_partition_names_file_asset_partition_and_rebuild_command(
    lake: LakeStorage, instance, damage
) -> None:
    message = _downstream_of_damaged(lake, instance, damage)

    assert f"{lake.uri(partition_key_path(READINGS, HOUR_KEYS[1]))} is corrupt" in message
    assert f"asset testcity/readings, partition {HOUR_KEYS[1]}" in message
    assert (
        "`dagster asset materialize -m bikeshare_assets.definitions --select testcity/readings "
        f"--partition {HOUR_KEYS[1]}`" in message
    )


def test_damaged_file_without_a_checksum_is_named_too(lake: LakeStorage) -> None:
    """Files written before checksums existed have no sidecar: still named, not 'PAR1'."""
    key = partition_key_path(READINGS, HOUR_KEYS[0])
    lake.write_bytes(key, b"PAR1 truncated")

    with pytest.raises(CorruptPartitionError, match=r"not a readable parquet file \(14 bytes"):
        lake.read_parquet(key)


def test_every_single_bit_flip_in_a_real_partition_is_detected(real_status_partition) -> None:
    lake, key = real_status_partition
    path = Path(lake.uri(key))
    good = path.read_bytes()
    original = lake.read_parquet(key)
    assert original.height > 1000
    rng = random.Random(20250908)
    positions = [rng.randrange(len(good) * 8) for _ in range(200)]

    silent = []
    for bit in positions:
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        try:
            lake.read_parquet(key)
        except CorruptPartitionError as exc:
            assert f"--select paris/raw_station_status --partition {SNAPSHOT}" in str(exc)
        else:
            silent.append(bit)

    assert silent == [], f"{len(silent)} of {len(positions)} bit flips were read silently"
    path.write_bytes(good)
    assert lake.read_parquet(key).equals(original)


def test_rematerializing_repairs_a_corrupt_partition(real_status_partition, home, day_cities):
    lake, key = real_status_partition
    path = Path(lake.uri(key))
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptPartitionError):
        lake.read_parquet(key)

    with dg.DagsterInstance.ephemeral() as instance:
        defs = build_defs(settings_for(home, day_cities))
        assert materialize_range(defs, instance, "paris/raw_station_status", SNAPSHOT).success

    assert path.read_bytes() == good
    assert lake.read_parquet(key).height > 1000


def test_a_write_killed_between_file_and_checksum_leaves_a_readable_partition(
    lake: LakeStorage,
) -> None:
    """The sidecar accepts the new digest before the file is replaced: a kill right after
    the replace (old sidecar contents still listing the old digest too) reads fine."""
    key = partition_key_path(READINGS, HOUR_KEYS[0])
    old = pl.DataFrame({"value": [1.0]})
    new = pl.DataFrame({"value": [2.0]})
    lake.write_parquet(key, old)
    old_sidecar = Path(lake.uri(key + CHECKSUM_SUFFIX)).read_bytes()
    lake.write_parquet(key, new)
    new_digest = Path(lake.uri(key + CHECKSUM_SUFFIX)).read_bytes()
    # State after step 2 of 3: new file, sidecar listing new and old digests.
    lake.write_bytes(key + CHECKSUM_SUFFIX, new_digest + old_sidecar)

    assert lake.read_parquet(key).equals(new)
    lake.write_parquet(key, new)
    assert Path(lake.uri(key + CHECKSUM_SUFFIX)).read_bytes() == new_digest

    # A first write killed before its sidecar exists: a whole file, read unverified.
    Path(lake.uri(key + CHECKSUM_SUFFIX)).unlink()
    assert lake.read_parquet(key).equals(new)
    lake.write_parquet(key, old)
    assert lake.read_parquet(key).equals(old)
    assert Path(lake.uri(key + CHECKSUM_SUFFIX)).read_bytes() == old_sidecar


# --------------------------------------------------------------------------------------
# Temp files of killed writers
# --------------------------------------------------------------------------------------

_KILLED_WRITER = """
import sys
from bikeshare_assets.storage import LakeStorage
LakeStorage(root=sys.argv[1]).write_bytes(sys.argv[2], b"x" * 400_000_000)
"""


def _leftover_of_a_killed_writer(lake: LakeStorage, key: str) -> Path:
    """Start a real writer of `key`, kill -9 it while its temp file exists, return that file."""
    folder = Path(lake.uri(key)).parent
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, lake.root, key],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    deadline = time.monotonic() + 60
    try:
        while not list(folder.glob(".*.tmp")):
            assert proc.poll() is None, "the writer finished before it could be killed"
            assert time.monotonic() < deadline, "the writer never created its temp file"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    (leftover,) = folder.glob(".*.tmp")
    assert str(proc.pid) in leftover.name
    return leftover


def test_next_write_removes_a_killed_writers_temp_file_but_not_a_live_one(
    lake: LakeStorage,
) -> None:
    key = partition_key_path(READINGS, HOUR_KEYS[0])
    other_key = partition_key_path(READINGS, HOUR_KEYS[1])
    killed = _leftover_of_a_killed_writer(lake, key)
    killed_other = _leftover_of_a_killed_writer(lake, other_key)
    # A concurrent writer of the same file that is alive (this test's own process).
    host = killed.name.split("@", 1)[1].rsplit(".", 2)[0]
    live = killed.parent / f".part.parquet.{os.getpid()}@{host}.abcd1234.tmp"
    live.write_bytes(b"being written")
    # An older leftover whose PID may have been reused since: removed by age.
    ancient = killed.parent / f".part.parquet.{os.getpid()}@{host}.zzzz0000.tmp"
    ancient.write_bytes(b"from last week")
    os.utime(ancient, (time.time() - 7 * 86400,) * 2)

    lake.write_parquet(key, pl.DataFrame({"value": [1.0]}))

    assert not killed.exists() and not ancient.exists()
    assert live.exists(), "a live writer's temp file must survive"
    assert killed_other.exists(), "only the written partition's temp files are touched"
    assert lake.read_parquet(key)["value"].to_list() == [1.0]


def test_corrupt_object_on_s3_is_named(moto_s3) -> None:
    lake = LakeStorage(root=f"s3://{moto_s3.bucket}/lake", s3_endpoint_url=moto_s3.endpoint_url)
    key = partition_key_path(STATUS, SNAPSHOT)
    lake.write_parquet(key, pl.DataFrame({"station_id": ["16107"], "bikes": [4]}))
    data = bytearray(moto_s3.read(f"lake/{key}"))
    data[len(data) // 2] ^= 0x04
    moto_s3.client.put_object(Bucket=moto_s3.bucket, Key=f"lake/{key}", Body=bytes(data))

    with pytest.raises(CorruptPartitionError) as caught:
        lake.read_parquet(key)
    assert str(caught.value).startswith(f"s3://{moto_s3.bucket}/lake/{key} is corrupt")
    assert f"--select paris/raw_station_status --partition {SNAPSHOT}" in str(caught.value)


def test_demo_failure_text_names_the_corrupt_file(lake: LakeStorage, instance) -> None:
    """`bikeshare demo` prints the cause of a failed step: the corrupt file, not Dagster's
    'Error occurred while loading input' wrapper."""
    from bikeshare_assets.cli import _failure_text

    assert run(
        [readings], ["testcity/readings"], instance, lake, HOUR_KEYS[0], HOUR_KEYS[1]
    ).success
    Path(lake.uri(partition_key_path(READINGS, HOUR_KEYS[1]))).write_bytes(b"")
    result = dg.materialize(
        [readings, totals],
        selection=["testcity/totals"],
        instance=instance,
        resources=io_resources(lake),
        partition_key=HOUR_KEYS[1],
        raise_on_error=False,
    )
    (failure,) = [e.step_failure_data for e in result.all_events if e.is_step_failure]
    text = _failure_text(failure)
    assert "is corrupt" in text and f"--partition {HOUR_KEYS[1]}" in text, text
