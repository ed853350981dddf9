"""The dashboard's reads check the SHA-256 sidecars the pipeline writes: a bit flipped in a
real partition is named (file, asset, partition, rebuild command) by read.py and shown as a
message on the page that reads it, never read as different numbers or as a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from bikeshare_assets.integrity import CHECKSUM_SUFFIX, CorruptPartitionError
from bikeshare_assets.read import LakeReader, lake_key
from bikeshare_assets_tests.dashboard.demo_outputs import CITY, DemoOutputs
from bikeshare_assets_tests.dashboard.test_pages import newest_scored, open_page

ASSET = "stockout_predictions"


@pytest.fixture
def flipped(demo_outputs: DemoOutputs, tmp_path: Path) -> tuple[dict[str, str], Path, str, str]:
    """A copy of the demo lake with one bit flipped in the newest scored predictions file:
    (env, lake root, partition, key)."""
    home = tmp_path / "home"
    shutil.copytree(demo_outputs.home / "lake", home / "lake")
    partition, _ = newest_scored(demo_outputs)
    key = lake_key(ASSET, CITY, partition)
    path = home / "lake" / key
    assert (home / "lake" / (key + CHECKSUM_SUFFIX)).exists()  # the pipeline wrote one
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return {**demo_outputs.env, "BIKESHARE_HOME": str(home)}, home / "lake", partition, key


def test_read_names_a_bit_flipped_partition(flipped) -> None:
    _, root, partition, key = flipped
    reader = LakeReader(str(root))

    with pytest.raises(CorruptPartitionError) as caught:
        reader.read(CITY, ASSET, [partition], ["station_id", "p_stockout_bikes"])
    message = str(caught.value)
    assert message.startswith(f"{root}/{key} is corrupt")
    assert f"asset {CITY}/{ASSET}, partition {partition}" in message
    assert (
        f"`dagster asset materialize -m bikeshare_assets.definitions --select {CITY}/{ASSET} "
        f"--partition {partition}`" in message
    )
    with pytest.raises(CorruptPartitionError):  # the row count reads the same checked bytes
        reader.rows(CITY, ASSET, partition)


def test_read_accepts_the_file_again_once_it_is_rewritten(flipped) -> None:
    """The reader's cache is keyed by the file's (and sidecar's) mtime and size: a rebuilt
    partition is read again, not remembered as corrupt."""
    _, root, partition, key = flipped
    reader = LakeReader(str(root))
    with pytest.raises(CorruptPartitionError):
        reader.read(CITY, ASSET, [partition])
    path = root / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # flipped back: the bytes the sidecar records
    path.write_bytes(bytes(data))
    assert reader.read(CITY, ASSET, [partition]).height > 1000


def test_file_without_a_sidecar_is_read_unverified(flipped) -> None:
    """Files written before checksums existed have no sidecar: read as they are (a parquet
    reader still rejects what is not parquet)."""
    _, root, partition, key = flipped
    (root / (key + CHECKSUM_SUFFIX)).unlink()
    (root / key).write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(CorruptPartitionError, match=r"not a readable parquet file \(23 bytes"):
        LakeReader(str(root)).read(CITY, ASSET, [partition])
    pl.DataFrame({"station_id": ["1"]}).write_parquet(root / key)
    assert LakeReader(str(root)).read(CITY, ASSET, [partition]).height == 1


@pytest.mark.parametrize("page", ["risk map", "dispatch"])
def test_page_names_the_corrupt_partition_and_the_rebuild_command(
    page: str, flipped, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, root, partition, key = flipped
    at = open_page(page, env, monkeypatch)  # asserts: no exception element

    assert len(at.error) == 1, [e.value for e in at.error]
    text = at.error[0].value
    assert "failed its integrity check" in text
    assert f"asset **{CITY}/{ASSET}**, partition **{partition}**" in text
    assert f"`{root}/{key}`" in text
    assert (
        f"`dagster asset materialize -m bikeshare_assets.definitions --select {CITY}/{ASSET} "
        f"--partition {partition}`" in text
    )
    assert "Traceback" not in text


def test_s3_reads_are_checked_the_same_way(moto_s3, demo_outputs: DemoOutputs) -> None:
    """The dashboard on an S3 lake: a partition the pipeline's LakeStorage wrote (with its
    sidecar) reads back; the same object with a bit flipped is named, as on disk."""
    from bikeshare_assets.storage import LakeStorage

    root = f"s3://{moto_s3.bucket}/lake"
    partition, frame = newest_scored(demo_outputs)
    key = lake_key(ASSET, CITY, partition)
    LakeStorage(root=root, s3_endpoint_url=moto_s3.endpoint_url).write_parquet(key, frame)
    reader = LakeReader(root, moto_s3.endpoint_url)
    assert reader.read(CITY, ASSET, [partition]).equals(frame)

    data = bytearray(moto_s3.read(f"lake/{key}"))
    data[len(data) // 2] ^= 0x10
    moto_s3.client.put_object(Bucket=moto_s3.bucket, Key=f"lake/{key}", Body=bytes(data))
    with pytest.raises(CorruptPartitionError) as caught:
        LakeReader(root, moto_s3.endpoint_url).read(CITY, ASSET, [partition])
    assert str(caught.value).startswith(f"{root}/{key} is corrupt")
    assert f"--select {CITY}/{ASSET} --partition {partition}" in str(caught.value)
