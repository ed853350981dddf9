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

Every parquet file has a sidecar `part.parquet.sha256` with the SHA-256 of its bytes, checked
on every read by integrity.py (the dashboard's reader uses the same check): a truncated, empty or bit-flipped partition fails naming the file, the asset,
the partition and the command that rebuilds it, instead of being read as different numbers.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from bikeshare_assets.integrity import (  # noqa: F401  (CorruptPartitionError, rebuild_hint: re-exported)
    CHECKSUM_SUFFIX,
    CorruptPartitionError,
    accepted_digests,
    read_verified_parquet,
    rebuild_hint,
)

PARTITION_COLUMN_METADATA = "partition_column"
# A temp file older than this is a killed writer's leftover even if its PID is alive again
# (reused); no write of one partition takes anywhere near this long.
STALE_TEMP_SECONDS = 3600
_HOST = socket.gethostname().split(".")[0]
# Definition metadata of assets whose live source serves only the current window (a GBFS feed
# has no history): a missing past partition of theirs cannot be fetched in live mode.
LIVE_CURRENT_ONLY_METADATA = "live_source_serves_current_window_only"
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
        remove_stale_temp_files(path)
        # The writer's PID and host are in the name, so the next writer can tell a killed
        # writer's leftover from a live one's file.
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp"
        )
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
        """Write the file and its checksum so that a kill at any point leaves a file the
        sidecar accepts: a sidecar listing other digests first accepts the new one beside
        them, then the file is replaced, then the sidecar keeps only the new digest. A first
        write killed before its sidecar exists leaves a whole file without one (read
        unverified, like a file from before checksums, until it is written again)."""
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        sidecar = key + CHECKSUM_SUFFIX
        before = accepted_digests(self.read_bytes, key) or []
        if before == [digest]:  # re-materialized with identical bytes: the sidecar holds
            return self.write_bytes(key, data)
        if before:
            accepted = [digest] + [d for d in before if d != digest]
            self.write_bytes(sidecar, ("\n".join(accepted) + "\n").encode())
        uri = self.write_bytes(key, data)
        self.write_bytes(sidecar, f"{digest}\n".encode())
        return uri

    def read_parquet(self, key: str) -> pl.DataFrame:
        """The frame, after checking the bytes against the sidecar's SHA-256 (integrity.py,
        shared with the dashboard's reader).

        Raises CorruptPartitionError (naming file, asset, partition and the rebuild command)
        for a truncated, empty, bit-flipped or otherwise unreadable file."""
        return read_verified_parquet(self.read_bytes, self.uri(key), key)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete the hidden temp files killed writers of `path` left behind; returns them.

    Only this file's temp files, and only those whose writer is gone: its PID (recorded in
    the name) no longer runs on this host, or the file is older than STALE_TEMP_SECONDS. A
    concurrent writer's live temp file is left alone."""
    removed = []
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{prefix}*.tmp"):
        writer = tmp.name[len(prefix) : -len(".tmp")].rsplit(".", 1)[0]  # "<pid>@<host>"
        pid, _, host = writer.partition("@")
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        dead = pid.isdigit() and host == _HOST and not _pid_alive(int(pid))
        if dead or age > STALE_TEMP_SECONDS:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


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
    source_mode: str = "replay"  # replay | live | simulate: only for the missing-partition hint

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
                raise MissingPartitionError(self._missing_hint(context, key, path))
            frames.append(self.lake.read_parquet(path))
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]

    def _missing_hint(self, context: dg.InputContext, key: str | None, path: str) -> str:
        """What to run for a missing upstream partition — unless that cannot work: a past
        partition of a live source that only serves the present."""
        name = context.asset_key.to_user_string()
        missing = (
            f"{name}{f' partition {key}' if key else ''} has not been materialized "
            f"({self.lake.uri(path)} is missing)."
        )
        upstream = context.upstream_output
        current_only = bool(
            upstream is not None
            and (upstream.definition_metadata or {}).get(LIVE_CURRENT_ONLY_METADATA)
        )
        partitions_def = context.asset_partitions_def if key else None
        if (
            self.source_mode == "live"
            and current_only
            and key
            and isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
            and partitions_def.time_window_for_partition_key(key).end <= datetime.now(UTC)
        ):
            return (
                f"{missing} It lies in the past, and a live feed only serves the present: "
                f"fetching it now would store today's data under {key}, so the live source "
                f"refuses it. Run only current partitions in live mode, or replay a recording "
                f"of that period (BIKESHARE_SOURCE=replay with the city's [cities.<key>.replay] "
                f"table) to fill {key}."
            )
        return (
            f"{missing} Materialize it first, e.g. `dagster asset materialize -m "
            f"bikeshare_assets.definitions --select {name}"
            + (f" --partition {key}`." if key else "`.")
        )


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)
