"""Quarantine: a rejected batch is kept exactly as received, next to the reason it failed.

    quarantine/<asset>/city=<city>/dt=<partition>/<sha256 of the body, 12 chars>/
        payload.<ext>   the bytes as received (or the unusable records, for a partial drop)
        reason.json     rule, message, city, asset, partition, source URL, times, what to do

Two kinds of entries, told apart by `rule` (one definition for every count, see
`is_rejected_batch`): a *rejected batch* (any contract rule: nothing of it was stored) and
the unusable records of an *accepted* batch (`records_dropped`: the rest was stored).

Folders are keyed by the content hash, so re-running a partition that fails the same way
writes the same folder again (idempotent), while a different bad payload is kept beside it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bikeshare_assets.storage import LakeStorage

RECORDS_DROPPED = "records_dropped"


@dataclass(frozen=True)
class QuarantineRecord:
    city: str
    asset: str
    partition: str
    rule: str
    message: str
    source_url: str
    received_at: str
    quarantined_at: str
    payload_sha256: str
    payload_file: str
    what_to_do: str
    details: dict[str, Any]


def quarantine_prefix(asset: str, city: str, partition: str) -> str:
    return f"quarantine/{asset}/city={city}/dt={partition}"


def quarantine_batch(
    lake: LakeStorage,
    *,
    asset: str,
    city: str,
    partition: str,
    payload: bytes,
    payload_ext: str,
    rule: str,
    message: str,
    source_url: str,
    received_at: datetime | None,
    what_to_do: str,
    details: dict[str, Any] | None = None,
) -> str:
    """Write payload + reason; return the folder URI."""
    digest = hashlib.sha256(payload).hexdigest()
    folder = f"{quarantine_prefix(asset, city, partition)}/{digest[:12]}"
    payload_file = f"payload.{payload_ext}"
    record = QuarantineRecord(
        city=city,
        asset=asset,
        partition=partition,
        rule=rule,
        message=message,
        source_url=source_url,
        received_at=(received_at or datetime.now(UTC)).isoformat(),
        quarantined_at=datetime.now(UTC).isoformat(),
        payload_sha256=digest,
        payload_file=payload_file,
        what_to_do=what_to_do,
        details=details or {},
    )
    # Payload first: a reason.json always points at a payload that exists.
    lake.write_bytes(f"{folder}/{payload_file}", payload)
    lake.write_bytes(
        f"{folder}/reason.json",
        # backslashreplace: a lone surrogate (unencodable) becomes its own JSON escape.
        json.dumps(asdict(record), indent=2, default=str, ensure_ascii=False).encode(
            errors="backslashreplace"
        ),
    )
    return lake.uri(folder)


def list_quarantined(lake: LakeStorage, asset: str | None = None) -> list[dict[str, Any]]:
    """Every reason.json under quarantine/ (optionally one asset), newest partition last."""
    prefix = f"quarantine/{asset}" if asset else "quarantine"
    reasons = [k for k in lake.list_keys(prefix) if k.endswith("reason.json")]
    return [json.loads(lake.read_bytes(k)) for k in reasons]


def is_rejected_batch(record: dict[str, Any]) -> bool:
    """A whole batch refused by the contract, as opposed to the few unusable records kept
    from a batch that was accepted (rule `records_dropped`)."""
    return record.get("rule") != RECORDS_DROPPED


@dataclass(frozen=True)
class QuarantineCounts:
    rejected_batches: int
    accepted_with_dropped_records: int

    def summary(self) -> str:
        """The one sentence `bikeshare quarantine` and `bikeshare demo` both print."""
        return (
            f"{self.rejected_batches} rejected batch(es), "
            f"{self.accepted_with_dropped_records} accepted batch(es) with dropped records"
        )


def count_quarantined(records: list[dict[str, Any]]) -> QuarantineCounts:
    rejected = sum(1 for r in records if is_rejected_batch(r))
    return QuarantineCounts(rejected, len(records) - rejected)
