"""Checksums of lake files: every `part.parquet` has a sidecar `part.parquet.sha256` with the
SHA-256 of its bytes. Both the writers' IO manager (storage.py) and the dashboard's and CLI's
reader (read.py) verify through `read_verified_parquet`, so a truncated, empty or
bit-flipped partition fails the same way everywhere: naming the file, the asset, the
partition and the command that rebuilds it, instead of being read as different numbers.

Dagster-free (only hashlib and polars): the dashboard's first page must not import Dagster.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

CHECKSUM_SUFFIX = ".sha256"


@dataclass(frozen=True)
class LakeLocation:
    """What a lake key `<asset>/city=<city>/dt=<partition>/part.parquet` holds."""

    asset: str  # "paris/stockout_predictions" (city-prefixed, as Dagster selects it)
    partition: str | None

    @classmethod
    def of(cls, key: str) -> LakeLocation:
        parts = key.strip("/").split("/")
        city = next((p[len("city=") :] for p in parts if p.startswith("city=")), None)
        partition = next((p[len("dt=") :] for p in parts if p.startswith("dt=")), None)
        return cls(f"{city}/{parts[0]}" if city else parts[0], partition)

    @property
    def rebuild_command(self) -> str:
        return (
            f"dagster asset materialize -m bikeshare_assets.definitions --select {self.asset}"
            + (f" --partition {self.partition}" if self.partition else "")
        )


def rebuild_hint(key: str) -> str:
    """Which asset and partition a lake key holds and the command that writes it again."""
    where = LakeLocation.of(key)
    held = f"asset {where.asset}" + (f", partition {where.partition}" if where.partition else "")
    return (
        f"It holds {held}; rebuild it with `{where.rebuild_command}` (it overwrites the file), "
        "then re-run what failed."
    )


class CorruptPartitionError(Exception):
    """A lake file that exists but cannot be trusted; the message says how to rebuild it."""

    def __init__(self, uri: str, key: str, reason: str) -> None:
        self.uri, self.key, self.reason = uri, key, reason
        self.location = LakeLocation.of(key)
        super().__init__(f"{uri} is corrupt: {reason}. {rebuild_hint(key)}")


def is_missing(exc: BaseException) -> bool:
    """A missing file: FileNotFoundError locally, botocore's NoSuchKey on S3."""
    if isinstance(exc, FileNotFoundError):
        return True
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404")


def accepted_digests(read_bytes: Callable[[str], bytes], key: str) -> list[str] | None:
    """The SHA-256s `key` may have (a writer lists the old and new one while it replaces the
    file); None for a file written before checksums existed (no sidecar)."""
    try:
        return read_bytes(key + CHECKSUM_SUFFIX).decode().split()
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def verified_bytes(read_bytes: Callable[[str], bytes], uri: str, key: str) -> bytes:
    """The file's bytes, checked against its sidecar (read with the same `read_bytes`).

    A writer may replace file and sidecar between our two reads, so a mismatch is read once
    more before it counts. Raises CorruptPartitionError."""
    data, accepted = read_bytes(key), accepted_digests(read_bytes, key)
    digest = hashlib.sha256(data).hexdigest()
    if accepted is None or digest in accepted:
        return data
    data, accepted = read_bytes(key), accepted_digests(read_bytes, key)
    digest = hashlib.sha256(data).hexdigest()
    if accepted is None or digest in accepted:
        return data
    found = f"its {len(data)} bytes have SHA-256 {digest[:12]}…" if data else "it is empty"
    raise CorruptPartitionError(
        uri,
        key,
        f"{found}, but {key}{CHECKSUM_SUFFIX} records {accepted[0][:12]}… (a bit flip, a "
        "truncated copy or a write cut short)",
    )


def parse_parquet(
    data: bytes, uri: str, key: str, columns: Sequence[str] | None = None
) -> pl.DataFrame:
    """Verified bytes as a frame (only `columns` that exist, when given); a file that is not
    parquet at all (e.g. written before checksums) raises CorruptPartitionError too."""
    try:
        source = io.BytesIO(data)
        if columns is None:
            return pl.read_parquet(source)
        present = pl.read_parquet_schema(source)
        source.seek(0)
        return pl.read_parquet(source, columns=[c for c in columns if c in present])
    except Exception as exc:  # polars raises ComputeError, OSError, … for a broken file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise CorruptPartitionError(
            uri, key, f"not a readable parquet file ({len(data)} bytes: {first_line})"
        ) from exc


def read_verified_parquet(
    read_bytes: Callable[[str], bytes],
    uri: str,
    key: str,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One lake parquet file through its checksum: the one read path of storage and read."""
    return parse_parquet(verified_bytes(read_bytes, uri, key), uri, key, columns)
