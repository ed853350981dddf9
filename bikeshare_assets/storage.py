"""The data lake: parquet per partition, locally or on S3, written atomically.

Layout (the same on disk and on S3):
    <root>/<asset>/city=<city>/dt=<partition>/part.parquet
    <root>/quarantine/<asset>/city=<city>/dt=<partition>/<batch sha>/{payload, reason.json}

Why not dagster-polars' `PolarsParquetIOManager`: it is a `UPathIOManager`, and Dagster 1.13's
`UPathIOManager.handle_output` refuses an output that covers several partitions ("does not
support persisting an output associated with multiple partitions"), which is what every
single-run backfill here produces. This IO manager splits the run's frame by the asset's
`partition_column` into one file per partition; it is small because it leans on dagster-aws
for S3 and on the filesystem's rename for atomicity.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

PARTITION_COLUMN_METADATA = "partition_column"
_UMASK = os.umask(0)
os.umask(_UMASK)


class LakeStorage(dg.ConfigurableResource):
    """Bytes in and out of the lake. `root` is a directory or `s3://bucket/prefix`."""

    root: str
    s3_endpoint_url: str | None = None

    _client: object = PrivateAttr(default=None)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key.lstrip('/')}"

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, _, prefix = self.root[len("s3://") :].partition("/")
        return bucket, "/".join(p for p in (prefix.strip("/"), key.lstrip("/")) if p)

    def _s3(self):
        if self._client is None:
            from dagster_aws.s3 import S3Resource  # ~1 s to import: only when the lake is on S3

            self._client = S3Resource(endpoint_url=self.s3_endpoint_url).get_client()
        return self._client

    def write_bytes(self, key: str, data: bytes) -> str:
        """Atomic: readers see the old object or the new one, never half a file."""
        if self.is_s3:
            # An S3 PUT is atomic by itself: the object appears whole or not at all.
            bucket, obj = self._bucket_key(key)
            self._s3().put_object(Bucket=bucket, Key=obj, Body=data)
            return self.uri(key)
        path = Path(self.uri(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            # mkstemp makes 0600 files; lake files are shared (webserver, daemon, dashboard).
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return str(path)

    def read_bytes(self, key: str) -> bytes:
        if self.is_s3:
            bucket, obj = self._bucket_key(key)
            return self._s3().get_object(Bucket=bucket, Key=obj)["Body"].read()
        return Path(self.uri(key)).read_bytes()

    def exists(self, key: str) -> bool:
        if self.is_s3:
            bucket, obj = self._bucket_key(key)
            resp = self._s3().list_objects_v2(Bucket=bucket, Prefix=obj, MaxKeys=1)
            return any(o["Key"] == obj for o in resp.get("Contents", []))
        return Path(self.uri(key)).exists()

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under a prefix, relative to the root, sorted."""
        if self.is_s3:
            bucket, obj = self._bucket_key(prefix)
            _, root_prefix = self._bucket_key("")
            keys: list[str] = []
            for page in (
                self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=obj)
            ):
                keys += [o["Key"][len(root_prefix) :].lstrip("/") for o in page.get("Contents", [])]
            return sorted(keys)
        base = Path(self.uri(prefix))
        if not base.exists():
            return []
        root = Path(self.root)
        return sorted(
            str(p.relative_to(root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        if self.is_s3:
            bucket, obj = self._bucket_key(key)
            self._s3().delete_object(Bucket=bucket, Key=obj)
        else:
            Path(self.uri(key)).unlink(missing_ok=True)

    def write_parquet(self, key: str, frame: pl.DataFrame) -> str:
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        return self.write_bytes(key, buf.getvalue())

    def read_parquet(self, key: str) -> pl.DataFrame:
        if self.is_s3:
            return pl.read_parquet(io.BytesIO(self.read_bytes(key)))
        return pl.read_parquet(self.uri(key))


def asset_dir(asset_key: dg.AssetKey) -> tuple[str, str | None]:
    """(asset name, city) from a key like ["paris", "raw_station_status"]."""
    path = asset_key.path
    return path[-1], (path[0] if len(path) > 1 else None)


def partition_key_path(asset_key: dg.AssetKey, partition: str | None) -> str:
    name, city = asset_dir(asset_key)
    parts = [name] + ([f"city={city}"] if city else []) + ([f"dt={partition}"] if partition else [])
    return "/".join([*parts, "part.parquet"])


class MissingPartitionError(Exception):
    pass


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Polars frames ↔ one parquet file per partition.

    A run over a partition range hands over one frame; it is split on the asset's
    `partition_column` metadata into each partition's time window, so a single-run backfill
    still lands as per-partition files, and an empty window (a replay gap) is written as an
    empty file with the schema. Re-materializing a partition overwrites it: idempotent.
    """

    lake: LakeStorage

    def _partition_column(self, context: dg.OutputContext | dg.InputContext) -> str | None:
        md = context.definition_metadata or {}
        if PARTITION_COLUMN_METADATA in md:
            value = md[PARTITION_COLUMN_METADATA]
            return getattr(value, "value", value)
        return None

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: PartitionedParquetIOManager stores polars "
                f"DataFrames, got {type(obj).__name__}."
            )
        if not context.has_asset_partitions:
            path = self.lake.write_parquet(partition_key_path(context.asset_key, None), obj)
            context.add_output_metadata({"path": path, "rows": obj.height})
            return
        keys = context.asset_partition_keys
        column = self._partition_column(context)
        if len(keys) > 1 and column is None:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: a run over {len(keys)} partitions needs "
                f"definition metadata '{PARTITION_COLUMN_METADATA}' to split the frame."
            )
        for key, part in self._split(context, obj, keys, column):
            self.lake.write_parquet(partition_key_path(context.asset_key, key), part)
        # Output metadata is shared by every partition's materialization, so a range names
        # the folder that holds all of them (<path>/dt=<partition>/part.parquet), never the
        # first partition's file.
        path = partition_key_path(context.asset_key, keys[0])
        if len(keys) > 1:
            path = path.rsplit("/", 2)[0]
        context.add_output_metadata(
            {"path": self.lake.uri(path), "rows": obj.height, "partitions_written": len(keys)}
        )

    def _split(
        self, context: dg.OutputContext, obj: pl.DataFrame, keys: list[str], column: str | None
    ) -> Iterator[tuple[str, pl.DataFrame]]:
        """Each partition's rows. Rows are stamped with their window start, so one group_by
        does the split; a row outside every window is a bug upstream and fails loudly."""
        partitions_def = context.asset_partitions_def
        if column is None or not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            yield from ((key, obj) for key in keys)
            return
        groups = {k[0]: v for k, v in obj.partition_by(column, as_dict=True).items()}
        empty = obj.clear()
        placed = 0
        for key in keys:
            start = _utc(partitions_def.time_window_for_partition_key(key).start)
            part = groups.get(start, empty)
            placed += part.height
            yield key, part
        if placed != obj.height:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: {obj.height - placed} row(s) have a "
                f"'{column}' that is not the start of one of the run's partitions {keys[0]}..{keys[-1]}."
            )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        asset_key = context.asset_key
        keys = context.asset_partition_keys if context.has_asset_partitions else [None]
        frames = []
        for key in keys:
            path = partition_key_path(asset_key, key)
            if not self.lake.exists(path):
                where = f" partition {key}" if key else ""
                raise MissingPartitionError(
                    f"{asset_key.to_user_string()}{where} has not been materialized "
                    f"({self.lake.uri(path)} is missing). Materialize it first, e.g. "
                    f"`dagster asset materialize -m bikeshare_assets.definitions "
                    f"--select {asset_key.to_user_string()}"
                    + (f" --partition {key}`." if key else "`.")
                )
            frames.append(self.lake.read_parquet(path))
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)
