"""Turn GBFS documents (1.x, 2.x, 3.0 and the real-world variants) into typed polars frames.

Pure functions, no I/O. Real feeds differ from the spec in ways this module absorbs:
integers for booleans (Vélib', Ecobici), numeric station ids (Vélib'), `lastUpdatedOther`
instead of `last_updated` (Vélib'), 3.0 renaming num_bikes_available to
num_vehicles_available, RFC 3339 timestamps and localized names in 3.0. What cannot be
absorbed becomes a `ContractViolation`, which the caller quarantines.
"""

from __future__ import annotations

import json
import reprlib
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

# last_reported values feeds send for "never reported" (the field is required, so they fill
# it): 1970-01-01T00:00:00Z and one second before. Read as missing, not as a 1970 report.
SENTINEL_EPOCHS = frozenset({-1.0, 0.0})
# A station's `status` (PBSC feeds, not in the spec) that means it is on the street.
IN_SERVICE_STATUSES = frozenset({"IN_SERVICE", "ACTIVE"})

# Unusable values are quoted in drop reasons, quarantine files and check metadata: bounded
# in length and depth, so a 10 MB string or a 900-level nested list stays a short line.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 3, 60, 60
_QUOTE.maxlist = _QUOTE.maxdict = _QUOTE.maxtuple = 4


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
    # Stations the feed marks as not on the street (is_installed false, status PLANNED...)
    # that lack a field an in-service station must have: reported, not counted as unusable.
    not_in_service: list[dict[str, Any]] = field(default_factory=list)  # {"station_id", "reason"}

    @property
    def records_in_service(self) -> int:
        """The records the missing-rate budget applies to."""
        return self.records_received - len(self.not_in_service)

    @property
    def missing_rate(self) -> float:
        n = self.records_in_service
        return len(self.dropped) / n if n else 0.0


def quote(value: Any) -> str:
    """A short, printable repr of a feed value for messages (never raises, never huge)."""
    try:
        return _QUOTE.repr(value)
    except (RecursionError, ValueError):  # ValueError: an int with more than 4300 digits
        return f"<unprintable {type(value).__name__}>"


def load_json(body: bytes) -> dict[str, Any]:
    """Decode a feed body; anything but a JSON object is a contract violation."""
    try:
        doc = json.loads(body)
    except RecursionError as exc:
        raise ContractViolation(
            "malformed_json",
            "the body nests JSON arrays/objects too deeply to decode (no GBFS document is "
            "more than a few levels deep)",
            details={"bytes": len(body)},
        ) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int over 4300 digits
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
            if parsed.tzinfo is None:  # a naive RFC 3339 time is not allowed by the spec
                return None
            # OverflowError: "0001-01-01T00:00:00+01:00" is a valid string but before year 1
            # once in UTC.
            return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    return None


def _is_sentinel(ts: datetime) -> bool:
    return ts.timestamp() in SENTINEL_EPOCHS


def document_last_updated(doc: Mapping[str, Any]) -> datetime | None:
    """When the feed says it last updated the document; None when absent, unusable or -1/0."""
    ts = parse_timestamp(doc.get("last_updated", doc.get("lastUpdatedOther")))
    return None if ts is None or _is_sentinel(ts) else ts


def _version(doc: Mapping[str, Any]) -> str:
    """The declared GBFS version (1.x feeds have none), as a short printable string."""
    value = doc.get("version", "1.0")
    if isinstance(value, str) and isinstance(_text(value), str):
        return value[:20]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)[:20]
    return "unknown"


class _Invalid:
    """Marker for a value present but unusable (e.g. "five" for a count)."""

    def __init__(self, raw: Any):
        self.raw = raw


def _text(value: str) -> str | _Invalid:
    """A string that can be stored: a lone surrogate ("\\ud800" in the JSON) cannot be
    written as UTF-8, so it makes the value unusable instead of crashing the whole frame."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _Invalid(value)
    return value


def _reported(value: Any) -> datetime | _Invalid | None:
    """A station's last_reported: -1/0 are "never reported" (missing), garbage is unusable."""
    if value is None:
        return None
    ts = parse_timestamp(value)
    if ts is None:
        return _Invalid(value)
    return None if _is_sentinel(ts) else ts


def _int(value: Any) -> int | _Invalid | None:
    if type(value) is int or value is None:
        return value
    if isinstance(value, bool):
        return _Invalid(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        try:
            return int(value.strip())
        except ValueError:  # more than 4300 digits
            return _Invalid(value)
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
    if isinstance(value, str):
        return _text(value.strip()) if value.strip() else None
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else _Invalid(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _Invalid(value)


def _first(record: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return None


def _localized(value: Any, language: str | None) -> str | _Invalid | None:
    """GBFS 3.0 names are [{"language", "text"}]; earlier versions are plain strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, Mapping) and isinstance(v.get("text"), str)]
        for item in texts:
            lang = item.get("language")
            if language and isinstance(lang, str) and lang.lower().startswith(language.lower()):
                return _text(item["text"])
        return _text(texts[0]["text"]) if texts else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _Invalid(value)


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
    out_of_service: Mapping[int, str] | None = None,
) -> ParsedBatch:
    """Drop unusable records (kept for quarantine), remove exact duplicates, build the frame.

    `out_of_service` (record index -> why) names stations the feed itself marks as not on
    the street: if such a record only lacks fields, it is reported, not counted as unusable."""
    n = len(raw)
    # Column-wise scan: feeds are clean almost always, so find the few bad records first
    # instead of inspecting every value of every record in Python.
    problems: dict[int, list[str]] = {}
    for name, values in rows.items():
        for i, value in enumerate(values):
            if isinstance(value, _Invalid):
                problems.setdefault(i, []).append(f"{name}: unusable value {quote(value.raw)}")
    for name in required:
        for i, value in enumerate(rows[name]):
            if value is None:
                problems.setdefault(i, []).append(f"{name}: missing")
    # Only absent fields are excused: a garbage value is quarantined whatever the station.
    excused = {
        i: why
        for i, why in (out_of_service or {}).items()
        if i in problems
        and isinstance(rows[key][i], str)
        and all(p.endswith(": missing") for p in problems[i])
    }
    not_in_service = [
        {"station_id": rows[key][i], "reason": f"{excused[i]}; " + "; ".join(problems[i])}
        for i in sorted(excused)
    ]
    dropped = [
        {"record": raw[i], "reason": "; ".join(problems[i])}
        for i in sorted(problems)
        if i not in excused
    ]
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
        not_in_service=not_in_service,
    )


def _not_in_service(record: Mapping[str, Any], installed: Any) -> str | None:
    """Why the feed says a station is not on the street, or None.

    GBFS: `is_installed` false. PBSC feeds also send a `status` (PLANNED, NOT_IN_SERVICE,
    END_OF_LIFE...) and leave out last_reported for such stations."""
    status = record.get("status")
    if isinstance(status, str) and status.strip().upper() not in IN_SERVICE_STATUSES:
        return f"status {quote(status.strip())}"
    if installed is False:
        return "is_installed false"
    return None


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
    out_of_service: dict[int, str] = {}
    for i, rec in enumerate(raw):
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
        rows["last_reported"].append(_reported(rec.get("last_reported")))
        why = _not_in_service(rec, rows["is_installed"][-1])
        if why is not None:
            out_of_service[i] = why
    return _finish(
        rows,
        STATUS_SCHEMA,
        raw,
        STATUS_REQUIRED,
        "station_id",
        {"snapshot_at": snapshot_at, "received_at": received_at},
        _version(doc),
        document_last_updated(doc),
        out_of_service,
    )


def parse_station_information(
    body: bytes, *, as_of_day: datetime, received_at: datetime, language: str | None = None
) -> ParsedBatch:
    """station_information (any version) → one row per station for the day."""
    doc = load_json(body)
    raw = _stations(doc)
    if not raw:
        raise ContractViolation(
            "no_stations",
            "station_information lists no stations: without a station list the day's "
            "snapshots cannot be checked against capacity or located",
        )
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
        _version(doc),
        document_last_updated(doc),
    )


def empty_frame(schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))
