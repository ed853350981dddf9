"""Turn GBFS documents (1.x, 2.x, 3.0 and the real-world variants) into typed polars frames.

Pure functions, no I/O. Real feeds differ from the spec in ways this module absorbs:
integers for booleans (Vélib', Ecobici), numeric station ids (Vélib'), `lastUpdatedOther`
instead of `last_updated` (Vélib'), 3.0 renaming num_bikes_available to
num_vehicles_available, RFC 3339 timestamps and localized names in 3.0. What cannot be
absorbed becomes a `ContractViolation`, which the caller quarantines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

UTC_US = pl.Datetime("us", "UTC")

STATUS_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_at": UTC_US,
    "station_id": pl.String(),
    "bikes_available": pl.Int32(),
    "docks_available": pl.Int32(),
    "bikes_disabled": pl.Int32(),
    "docks_disabled": pl.Int32(),
    "is_installed": pl.Boolean(),
    "is_renting": pl.Boolean(),
    "is_returning": pl.Boolean(),
    "last_reported": UTC_US,
    "received_at": UTC_US,
}

INFORMATION_SCHEMA: dict[str, pl.DataType] = {
    "as_of_day": UTC_US,
    "station_id": pl.String(),
    "name": pl.String(),
    "lat": pl.Float64(),
    "lon": pl.Float64(),
    "capacity": pl.Int32(),
    "is_virtual_station": pl.Boolean(),
    "received_at": UTC_US,
}

# Fields a station_status record cannot do without (docks are absent for virtual stations).
STATUS_REQUIRED = ("station_id", "bikes_available", "last_reported")
INFORMATION_REQUIRED = ("station_id", "lat", "lon")


class ContractViolation(Exception):
    """A batch breaks the data contract; `rule` names which rule, for quarantine and alerts."""

    def __init__(self, rule: str, message: str, *, details: Mapping[str, Any] | None = None):
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message
        self.details = dict(details or {})


@dataclass
class ParsedBatch:
    """A parsed document: the typed frame plus the records that could not be used."""

    frame: pl.DataFrame
    records_received: int
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {"record", "reason"}
    exact_duplicates: int = 0
    version: str = ""
    last_updated: datetime | None = None

    @property
    def missing_rate(self) -> float:
        return len(self.dropped) / self.records_received if self.records_received else 0.0


def load_json(body: bytes) -> dict[str, Any]:
    """Decode a feed body; anything but a JSON object is a contract violation."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractViolation(
            "malformed_json", f"the body is not valid JSON ({exc})", details={"bytes": len(body)}
        ) from exc
    if not isinstance(doc, dict):
        raise ContractViolation(
            "malformed_json", f"expected a JSON object, got {type(doc).__name__}"
        )
    return doc


def _stations(doc: Mapping[str, Any]) -> list[Any]:
    data = doc.get("data")
    if not isinstance(data, Mapping) or "stations" not in data:
        raise ContractViolation(
            "missing_field",
            "required field data.stations is absent",
            details={"field": "data.stations"},
        )
    stations = data["stations"]
    if not isinstance(stations, list):
        raise ContractViolation("missing_field", "data.stations is not a list")
    return stations


def parse_timestamp(value: Any) -> datetime | None:
    """POSIX seconds (GBFS 1.x/2.x) or RFC 3339 (3.0) → aware UTC datetime."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return datetime.fromtimestamp(int(value.strip()), tz=UTC)
    except (ValueError, OverflowError, OSError):
        # NaN, infinity, or beyond year 9999 (e.g. milliseconds sent as seconds): unusable.
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:  # a naive RFC 3339 time is not allowed by the spec
            return None
        return parsed.astimezone(UTC)
    return None


def document_last_updated(doc: Mapping[str, Any]) -> datetime | None:
    return parse_timestamp(doc.get("last_updated", doc.get("lastUpdatedOther")))


class _Invalid:
    """Marker for a value present but unusable (e.g. "five" for a count)."""

    def __init__(self, raw: Any):
        self.raw = raw


def _int(value: Any) -> int | _Invalid | None:
    if type(value) is int or value is None:
        return value
    if isinstance(value, bool):
        return _Invalid(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return _Invalid(value)


def _bool(value: Any) -> bool | _Invalid | None:
    """GBFS booleans; many real feeds send 0/1 instead."""
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return value.strip().lower() in ("true", "1")
    return _Invalid(value)


def _float(value: Any) -> float | _Invalid | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return _Invalid(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return _Invalid(value)
    return _Invalid(value)


def _station_id(value: Any) -> str | _Invalid | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return _Invalid(value)
    if isinstance(value, int | str):
        return str(value).strip() or None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _Invalid(value)


def _first(record: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return None


def _localized(value: Any, language: str | None) -> str | None:
    """GBFS 3.0 names are [{"language", "text"}]; earlier versions are plain strings."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, Mapping) and "text" in v]
        for item in texts:
            if language and str(item.get("language", "")).lower().startswith(language.lower()):
                return str(item["text"])
        return str(texts[0]["text"]) if texts else None
    return str(value)


_INT32 = (-(2**31), 2**31 - 1)


def _unrepresentable(
    data: Mapping[str, list[Any]], schema: Mapping[str, pl.DataType]
) -> ContractViolation | None:
    """An integer too large for its Int32 column (e.g. 10**12 bikes) is an impossible value:
    the same `out_of_range` rejection as 1001 bikes, instead of a crash while building the frame."""
    bad = [
        f"{name}: {value}"
        for name, values in data.items()
        if schema.get(name) == pl.Int32
        for value in values
        if isinstance(value, int) and not _INT32[0] <= value <= _INT32[1]
    ]
    if not bad:
        return None
    return ContractViolation(
        "out_of_range",
        f"{len(bad)} value(s) do not fit a 32-bit count: " + "; ".join(bad[:5]),
        details={"failures": bad[:10]},
    )


def _finish(
    rows: dict[str, list[Any]],
    schema: Mapping[str, pl.DataType],
    raw: list[Any],
    required: Iterable[str],
    key: str,
    constant: Mapping[str, Any],
    version: str,
    last_updated: datetime | None,
) -> ParsedBatch:
    """Drop unusable records (kept for quarantine), remove exact duplicates, build the frame."""
    n = len(raw)
    # Column-wise scan: feeds are clean almost always, so find the few bad records first
    # instead of inspecting every value of every record in Python.
    problems: dict[int, list[str]] = {}
    for name, values in rows.items():
        for i, value in enumerate(values):
            if isinstance(value, _Invalid):
                problems.setdefault(i, []).append(f"{name}: unusable value {value.raw!r}")
    for name in required:
        for i, value in enumerate(rows[name]):
            if value is None:
                problems.setdefault(i, []).append(f"{name}: missing")
    dropped = [{"record": raw[i], "reason": "; ".join(problems[i])} for i in sorted(problems)]
    keep = [i for i in range(n) if i not in problems] if problems else range(n)
    data = (
        {name: [values[i] for i in keep] for name, values in rows.items()}
        if problems
        else dict(rows)
    )
    for name, value in constant.items():
        data[name] = [value] * len(keep)
    try:
        frame = pl.DataFrame(data, schema={k: schema[k] for k in schema if k in data})
    except (TypeError, OverflowError, pl.exceptions.PolarsError) as exc:
        violation = _unrepresentable(data, schema)
        if violation is None:
            raise
        raise violation from exc
    frame = frame.select([pl.col(k) for k in schema if k in data])
    before = frame.height
    frame = frame.unique(maintain_order=True)
    return ParsedBatch(
        frame=frame.sort(key),
        records_received=n,
        dropped=dropped,
        exact_duplicates=before - frame.height,
        version=version,
        last_updated=last_updated,
    )


def parse_station_status(
    body: bytes, *, snapshot_at: datetime, received_at: datetime
) -> ParsedBatch:
    """station_status (any version) → one row per station at `snapshot_at`."""
    doc = load_json(body)
    raw = _stations(doc)
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "station_id",
            "bikes_available",
            "docks_available",
            "bikes_disabled",
            "docks_disabled",
            "is_installed",
            "is_renting",
            "is_returning",
            "last_reported",
        )
    }
    for rec in raw:
        if not isinstance(rec, Mapping):
            rec = {}
        rows["station_id"].append(_station_id(rec.get("station_id")))
        rows["bikes_available"].append(
            _int(_first(rec, "num_vehicles_available", "num_bikes_available", "numBikesAvailable"))
        )
        rows["docks_available"].append(
            _int(_first(rec, "num_docks_available", "numDocksAvailable"))
        )
        rows["bikes_disabled"].append(
            _int(_first(rec, "num_vehicles_disabled", "num_bikes_disabled"))
        )
        rows["docks_disabled"].append(_int(rec.get("num_docks_disabled")))
        for flag in ("is_installed", "is_renting", "is_returning"):
            rows[flag].append(_bool(rec.get(flag)))
        reported = rec.get("last_reported")
        ts = parse_timestamp(reported)
        rows["last_reported"].append(
            _Invalid(reported) if reported is not None and ts is None else ts
        )
    return _finish(
        rows,
        STATUS_SCHEMA,
        raw,
        STATUS_REQUIRED,
        "station_id",
        {"snapshot_at": snapshot_at, "received_at": received_at},
        str(doc.get("version", "1.0")),
        document_last_updated(doc),
    )


def parse_station_information(
    body: bytes, *, as_of_day: datetime, received_at: datetime, language: str | None = None
) -> ParsedBatch:
    """station_information (any version) → one row per station for the day."""
    doc = load_json(body)
    raw = _stations(doc)
    rows: dict[str, list[Any]] = {
        k: [] for k in ("station_id", "name", "lat", "lon", "capacity", "is_virtual_station")
    }
    for rec in raw:
        if not isinstance(rec, Mapping):
            rec = {}
        rows["station_id"].append(_station_id(rec.get("station_id")))
        rows["name"].append(_localized(rec.get("name"), language))
        rows["lat"].append(_float(rec.get("lat")))
        rows["lon"].append(_float(rec.get("lon")))
        rows["capacity"].append(_int(rec.get("capacity")))
        virtual = _bool(rec.get("is_virtual_station"))
        rows["is_virtual_station"].append(False if virtual is None else virtual)
    return _finish(
        rows,
        INFORMATION_SCHEMA,
        raw,
        INFORMATION_REQUIRED,
        "station_id",
        {"as_of_day": as_of_day, "received_at": received_at},
        str(doc.get("version", "1.0")),
        document_last_updated(doc),
    )


def empty_frame(schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))
