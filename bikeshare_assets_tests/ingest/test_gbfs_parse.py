"""GBFS parsing and the raw data contract, on real feed documents.

Every document here was published by a real system (Vélib' 2025, Ecobici 2024) or is one of
the official GBFS v2.3 / v3.0 fixtures. The contract is exercised by breaking one rule at a
time in a copy of a real document (load JSON, modify, dump), so each rejection is about
that rule and nothing else. Expected numbers are computed from the raw JSON independently
of the parser.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.ingest.contracts import (
    STALE_AFTER,
    StationInformationSchema,
    StationStatusSchema,
    check_missing_rate,
    enforce_schema,
    status_quality_rules,
)
from bikeshare_assets.ingest.gbfs import (
    INFORMATION_SCHEMA,
    STATUS_SCHEMA,
    ContractViolation,
    ParsedBatch,
    document_last_updated,
    parse_station_information,
    parse_station_status,
)
from bikeshare_assets.ingest.quarantine import list_quarantined
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.support.feeds import paris_city, run_status
from bikeshare_assets_tests.support.gbfs_server import FIXTURES_DIR

VELIB_STATUS = FIXTURES_DIR / "velib-2025" / "station_status.json"
VELIB_INFO = FIXTURES_DIR / "velib-2025" / "station_information.json"
ECOBICI_STATUS = FIXTURES_DIR / "ecobici-2024" / "station_status_20240405210456.json"
ECOBICI_INFO = FIXTURES_DIR / "ecobici-2024" / "station_information_20240405210456.json"
V23_STATUS = FIXTURES_DIR / "fixtures-v2.3" / "station_status.json"
V23_INFO = FIXTURES_DIR / "fixtures-v2.3" / "station_information.json"
V30_STATUS = FIXTURES_DIR / "fixtures-v3.0" / "station_status.json"
V30_INFO = FIXTURES_DIR / "fixtures-v3.0" / "station_information.json"

SNAPSHOT = datetime(2025, 9, 8, 8, 0, tzinfo=UTC)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def received(doc: dict[str, Any]) -> datetime:
    """When the document was published (its own last_updated / lastUpdatedOther)."""
    at = document_last_updated(doc)
    assert at is not None
    return at


def accept_status(body: bytes, at: datetime = SNAPSHOT) -> ParsedBatch:
    """The reject rules exactly as the raw asset applies them to a status document."""
    batch = parse_station_status(body, snapshot_at=at, received_at=at)
    check_missing_rate(batch.dropped, batch.records_in_service)
    enforce_schema(StationStatusSchema, batch.frame)
    return batch


def accept_information(body: bytes, at: datetime = SNAPSHOT, language: str | None = None):
    batch = parse_station_information(body, as_of_day=at, received_at=at, language=language)
    check_missing_rate(batch.dropped, batch.records_received)
    enforce_schema(StationInformationSchema, batch.frame)
    return batch


def rejected(accept: Callable[[bytes], Any], doc: Any) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        accept(doc if isinstance(doc, bytes) else dump(doc))
    return info.value


def ids(doc: dict[str, Any]) -> list[str]:
    return [str(s["station_id"]) for s in doc["data"]["stations"]]


# --------------------------------------------------------------------------------------
# Real documents parse and pass the contract
# --------------------------------------------------------------------------------------


def test_velib_status_integer_booleans_numeric_ids_and_last_updated_other() -> None:
    doc = load(VELIB_STATUS)
    # The quirks this test is about are really in the document.
    assert "last_updated" not in doc and isinstance(doc["lastUpdatedOther"], int)
    assert isinstance(doc["data"]["stations"][0]["station_id"], int)
    assert doc["data"]["stations"][0]["is_renting"] == 1

    batch = accept_status(VELIB_STATUS.read_bytes())

    frame = batch.frame
    assert frame.schema == pl.Schema(STATUS_SCHEMA)
    assert (batch.records_received, frame.height, len(batch.dropped)) == (1511, 1511, 0)
    assert batch.last_updated == datetime.fromtimestamp(doc["lastUpdatedOther"], UTC)
    assert batch.version == "1.0"  # no version field: GBFS 1.x
    assert sorted(frame["station_id"].to_list()) == sorted(ids(doc))
    by_id = {str(s["station_id"]): s for s in doc["data"]["stations"]}
    for row in frame.iter_rows(named=True):
        src = by_id[row["station_id"]]
        assert row["bikes_available"] == src["num_bikes_available"]
        assert row["docks_available"] == src["num_docks_available"]
        assert row["is_renting"] is bool(src["is_renting"])
        assert row["is_returning"] is bool(src["is_returning"])
        assert row["is_installed"] is bool(src["is_installed"])
        assert row["last_reported"] == datetime.fromtimestamp(src["last_reported"], UTC)
    # Vélib' publishes no disabled counts.
    assert frame["bikes_disabled"].null_count() == frame.height


def test_velib_information_numeric_ids_names_and_capacity() -> None:
    doc = load(VELIB_INFO)
    batch = accept_information(VELIB_INFO.read_bytes(), language="fr")

    frame = batch.frame
    assert frame.schema == pl.Schema(INFORMATION_SCHEMA)
    assert frame.height == len(doc["data"]["stations"]) == 1511
    first = doc["data"]["stations"][0]
    row = frame.filter(pl.col("station_id") == str(first["station_id"])).row(0, named=True)
    assert (row["name"], row["lat"], row["lon"], row["capacity"]) == (
        first["name"],
        first["lat"],
        first["lon"],
        first["capacity"],
    )
    assert frame["is_virtual_station"].sum() == 0
    assert frame["capacity"].sum() == sum(s["capacity"] for s in doc["data"]["stations"])


def test_ecobici_1x_string_ids_integer_booleans() -> None:
    doc = load(ECOBICI_STATUS)
    assert "version" not in doc and doc["data"]["stations"][0]["is_installed"] == 1

    status = accept_status(ECOBICI_STATUS.read_bytes())
    info = accept_information(ECOBICI_INFO.read_bytes())

    assert status.frame.height == info.frame.height == 667
    not_installed = sum(1 for s in doc["data"]["stations"] if s["is_installed"] == 0)
    assert status.frame["is_installed"].not_().sum() == not_installed > 0
    disabled = sum(s["num_bikes_disabled"] for s in doc["data"]["stations"])
    assert status.frame["bikes_disabled"].sum() == disabled
    # Ecobici lists placeholder stations at (0, 0): legal for the schema, caught later by
    # the coordinates_near_city check.
    assert info.frame.filter((pl.col("lat") == 0) & (pl.col("lon") == 0)).height >= 1


def test_official_v23_information_without_capacity() -> None:
    doc = load(V23_INFO)
    assert all("capacity" not in s for s in doc["data"]["stations"])

    info = accept_information(V23_INFO.read_bytes())
    status = accept_status(V23_STATUS.read_bytes())

    assert info.version == status.version == "2.3"
    assert info.frame["capacity"].to_list() == [None, None]
    assert info.frame["name"].to_list() == ["Cool bikes", "Cooler bikes"]
    assert status.frame.select("station_id", "bikes_available", "docks_available").rows() == [
        ("TST:Station:1", 1, 3),
        ("TST:Station:2", 6, 8),
    ]


def test_official_v30_vehicles_rfc3339_localized_names_virtual_stations() -> None:
    status_doc = load(V30_STATUS)
    record = status_doc["data"]["stations"][0]
    assert "num_vehicles_available" in record and "num_docks_available" not in record

    status = accept_status(V30_STATUS.read_bytes())
    info = accept_information(V30_INFO.read_bytes(), language="en")

    assert status.version == "3.0"
    assert status.last_updated == datetime(2019, 7, 4, 13, 33, 3, 969000, tzinfo=UTC)
    row = status.frame.row(0, named=True)
    assert row["bikes_available"] == record["num_vehicles_available"]
    assert row["docks_available"] is None  # a virtual station has no docks
    assert row["last_reported"] == datetime(2019, 7, 4, 13, 33, 3, 969000, tzinfo=UTC)

    stations = load(V30_INFO)["data"]["stations"]
    assert info.frame.height == len(stations) == 23
    expected_names = {s["station_id"]: s["name"][0]["text"] for s in stations}
    assert dict(info.frame.select("station_id", "name").rows()) == expected_names
    virtual = sum(1 for s in stations if s.get("is_virtual_station"))
    assert info.frame["is_virtual_station"].sum() == virtual > 0


def test_v30_localized_name_follows_the_city_language() -> None:
    doc = load(V30_INFO)
    station = doc["data"]["stations"][0]
    station["name"] = [
        {"language": "en", "text": "Two wheels"},
        {"language": "fr", "text": "Deux roues"},
    ]
    body = dump(doc)
    sid = station["station_id"]

    def name(language: str | None) -> str:
        frame = accept_information(body, language=language).frame
        return frame.filter(pl.col("station_id") == sid)["name"].item()

    assert name("fr") == "Deux roues"
    assert name("en") == "Two wheels"
    assert name("de") == "Two wheels"  # not offered: the first text, never nothing


# --------------------------------------------------------------------------------------
# Reject rules, one at a time, on a real document
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b'{"data": {"stations": [', b"", b"\xff\xfe\x00garbage", b"[1, 2, 3]"]
)
def test_malformed_json_is_rejected(body: bytes) -> None:
    violation = rejected(accept_status, body)
    assert violation.rule == "malformed_json"


def test_truncated_real_document_is_malformed_json() -> None:
    body = ECOBICI_STATUS.read_bytes()
    violation = rejected(accept_status, body[: len(body) // 2])
    assert violation.rule == "malformed_json"
    assert violation.details["bytes"] == len(body) // 2


@pytest.mark.parametrize("breakage", ["no stations", "no data", "stations not a list"])
def test_missing_data_stations_is_rejected(breakage: str) -> None:
    doc = load(ECOBICI_STATUS)
    if breakage == "no stations":
        del doc["data"]["stations"]
    elif breakage == "no data":
        del doc["data"]
    else:
        doc["data"]["stations"] = {"5": doc["data"]["stations"][0]}
    violation = rejected(accept_status, doc)
    assert violation.rule == "missing_field"
    assert "data.stations" in violation.message


def test_required_field_missing_in_more_than_5_percent_is_rejected() -> None:
    doc = load(ECOBICI_STATUS)
    n = len(doc["data"]["stations"])
    over = 34  # 34 / 667 = 5.1%: just over the contract's 5%
    assert n == 667
    for station in doc["data"]["stations"][:over]:
        del station["num_bikes_available"]

    violation = rejected(accept_status, doc)

    assert violation.rule == "missing_rate"
    assert f"{over} of {n} records (5.1%)" in violation.message
    assert "the budget is 5%" in violation.message
    assert violation.details["examples"][0] == "bikes_available: missing"


def test_required_field_missing_in_at_most_5_percent_drops_those_records() -> None:
    doc = load(ECOBICI_STATUS)
    n = len(doc["data"]["stations"])
    budget = 33  # 33 / 667 = 4.9%: just within the contract's 5%
    assert n == 667
    victims = doc["data"]["stations"][:budget]
    for station in victims[: budget - 1]:
        del station["last_reported"]
    victims[-1]["station_id"] = None

    batch = accept_status(dump(doc))

    assert batch.records_received == n
    assert batch.frame.height == n - budget
    assert len(batch.dropped) == budget
    # The dropped records are kept whole, with the reason, for the quarantine.
    assert batch.dropped[0]["record"] == victims[0]
    assert batch.dropped[0]["reason"] == "last_reported: missing"
    assert batch.dropped[-1]["reason"] == "station_id: missing"
    kept = set(batch.frame["station_id"].to_list())
    assert not kept & {str(s["station_id"]) for s in victims[:-1]}


@pytest.mark.parametrize(
    ("document", "field", "value", "column"),
    [
        ("status", "num_bikes_available", -3, "bikes_available"),
        ("status", "num_docks_available", -1, "docks_available"),
        ("status", "num_bikes_available", 1001, "bikes_available"),
        ("status", "num_bikes_disabled", 5000, "bikes_disabled"),
        ("information", "lat", 95.0, "lat"),
        ("information", "lon", -181.0, "lon"),
        ("information", "capacity", -4, "capacity"),
    ],
)
def test_out_of_range_value_is_rejected(
    document: str, field: str, value: float, column: str
) -> None:
    path, accept = (
        (ECOBICI_STATUS, accept_status)
        if document == "status"
        else (ECOBICI_INFO, accept_information)
    )
    doc = load(path)
    doc["data"]["stations"][10][field] = value

    violation = rejected(accept, doc)

    assert violation.rule == "out_of_range"
    assert violation.message.startswith("1 failing value(s)")
    assert [e["column"] for e in violation.details["examples"]] == [column]
    assert float(violation.details["examples"][0]["failure_case"]) == value


@pytest.mark.parametrize("value", [2**31, 10**12, -(10**12)])
def test_count_too_large_for_the_column_is_out_of_range_not_a_crash(value: int) -> None:
    doc = load(ECOBICI_STATUS)
    doc["data"]["stations"][10]["num_bikes_available"] = value

    violation = rejected(accept_status, doc)

    assert violation.rule == "out_of_range"
    assert f"bikes_available: {value}" in violation.message


def test_conflicting_duplicate_station_ids_are_rejected() -> None:
    doc = load(ECOBICI_STATUS)
    stations = doc["data"]["stations"]
    twin = copy.deepcopy(stations[10])
    twin["num_bikes_available"] += 1  # same station, two different counts
    stations.append(twin)

    violation = rejected(accept_status, doc)

    assert violation.rule == "duplicate_station_id"
    assert stations[10]["station_id"] in json.dumps(violation.details["examples"])


def test_conflicting_duplicate_ids_in_station_information_are_rejected() -> None:
    doc = load(VELIB_INFO)
    stations = doc["data"]["stations"]
    stations[20]["station_id"] = stations[21]["station_id"]  # two places, one id

    violation = rejected(lambda b: accept_information(b, language="fr"), doc)
    assert violation.rule == "duplicate_station_id"


def test_exact_duplicate_records_are_collapsed() -> None:
    doc = load(VELIB_STATUS)
    stations = doc["data"]["stations"]
    stations += [copy.deepcopy(stations[0]), copy.deepcopy(stations[5]), copy.deepcopy(stations[5])]

    batch = accept_status(dump(doc))

    assert batch.records_received == 1514
    assert batch.exact_duplicates == 3
    assert batch.frame.height == 1511
    assert batch.frame["station_id"].is_unique().all()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_bikes_available", "five"),
        ("num_bikes_available", 2.5),
        ("num_bikes_available", True),
        ("is_renting", 2),
        ("last_reported", "yesterday"),
        ("last_reported", 1712349447000),  # milliseconds where seconds are due
        ("station_id", [5]),
    ],
)
def test_wrong_type_in_one_record_drops_that_record(field: str, value: Any) -> None:
    doc = load(ECOBICI_STATUS)
    victim = doc["data"]["stations"][10]
    victim[field] = value

    batch = accept_status(dump(doc))

    assert batch.frame.height == 666
    assert [d["record"] for d in batch.dropped] == [victim]
    column = {"num_bikes_available": "bikes_available"}.get(field, field)
    assert batch.dropped[0]["reason"] == f"{column}: unusable value {value!r}"


def test_wrong_type_everywhere_is_rejected_by_the_missing_rate() -> None:
    doc = load(ECOBICI_STATUS)
    for station in doc["data"]["stations"]:
        station["num_bikes_available"] = "five"

    violation = rejected(accept_status, doc)

    assert violation.rule == "missing_rate"
    assert "667 of 667 records (100.0%)" in violation.message
    assert violation.details["examples"][0] == "bikes_available: unusable value 'five'"


def test_timestamps_in_milliseconds_are_rejected_not_a_crash() -> None:
    doc = load(ECOBICI_STATUS)
    for station in doc["data"]["stations"]:
        station["last_reported"] *= 1000
    doc["last_updated"] *= 1000

    violation = rejected(accept_status, doc)

    # Ecobici's two 1970 placeholders still parse (as 1972) once multiplied; the rest not.
    placeholders = sum(
        1 for s in load(ECOBICI_STATUS)["data"]["stations"] if s["last_reported"] < 10**6
    )
    assert violation.rule == "missing_rate"
    assert f"{667 - placeholders} of 667 records" in violation.message


def test_numeric_strings_are_accepted_as_numbers() -> None:
    doc = load(ECOBICI_STATUS)
    victim = doc["data"]["stations"][10]
    victim["num_bikes_available"] = " 7 "
    victim["last_reported"] = str(victim["last_reported"])

    frame = accept_status(dump(doc)).frame

    row = frame.filter(pl.col("station_id") == victim["station_id"]).row(0, named=True)
    assert row["bikes_available"] == 7
    assert row["last_reported"] == datetime.fromtimestamp(int(victim["last_reported"]), UTC)


# --------------------------------------------------------------------------------------
# Warn-level quality rules measured on real data
# --------------------------------------------------------------------------------------


def quality(status_path: Path, info_path: Path, mutate=None) -> dict[str, Any]:
    status_doc, info_doc = load(status_path), load(info_path)
    if mutate:
        mutate(status_doc, info_doc)
    at = received(status_doc)
    status = accept_status(dump(status_doc), at).frame
    info = accept_information(dump(info_doc), at).frame
    return {o.check: o for o in status_quality_rules(status, info, received_at=at)}


def test_within_capacity_on_real_velib_numbers() -> None:
    status = {str(s["station_id"]): s for s in load(VELIB_STATUS)["data"]["stations"]}
    capacity = {str(s["station_id"]): s["capacity"] for s in load(VELIB_INFO)["data"]["stations"]}
    over = [
        k
        for k, s in status.items()
        if s["num_bikes_available"] > capacity[k] or s["num_docks_available"] > capacity[k]
    ]
    over_sum = [
        k
        for k, s in status.items()
        if s["num_bikes_available"] + s["num_docks_available"] > capacity[k]
    ]
    assert (len(over), len(over_sum)) == (7, 12)  # Vélib' lets bikes overflow full stations

    outcome = quality(VELIB_STATUS, VELIB_INFO)["within_capacity"]

    assert outcome.passed
    assert outcome.severity == dg.AssetCheckSeverity.WARN
    assert outcome.value == pytest.approx(12 / 1511)
    assert outcome.metadata["share_count_above_capacity"] == pytest.approx(7 / 1511)
    assert {e["station_id"] for e in outcome.metadata["examples_count_above_capacity"]} == set(over)


def test_within_capacity_fails_when_many_stations_overflow() -> None:
    def overflow(status_doc: dict, info_doc: dict) -> None:
        capacity = {s["station_id"]: s["capacity"] for s in info_doc["data"]["stations"]}
        for s in status_doc["data"]["stations"][:200]:
            s["num_bikes_available"] = capacity[s["station_id"]] + 5

    outcome = quality(VELIB_STATUS, VELIB_INFO, overflow)["within_capacity"]

    assert not outcome.passed
    assert outcome.value >= 200 / 1511
    assert outcome.metadata["share_count_above_capacity"] >= 200 / 1511


def test_last_reported_fresh_counts_ecobici_1970_placeholders() -> None:
    doc = load(ECOBICI_STATUS)
    at = received(doc)
    stale_ids = {
        s["station_id"]
        for s in doc["data"]["stations"]
        if datetime.fromtimestamp(s["last_reported"], UTC) < at - STALE_AFTER
    }
    from_1970 = {s["station_id"] for s in doc["data"]["stations"] if s["last_reported"] < 10**6}
    assert len(from_1970) == 2 and from_1970 <= stale_ids and len(stale_ids) == 3

    outcome = quality(ECOBICI_STATUS, ECOBICI_INFO)["last_reported_fresh"]

    assert outcome.passed  # 3 of 667 is within the 10% budget
    assert outcome.value == pytest.approx(3 / 667)
    assert {e["station_id"] for e in outcome.metadata["examples"]} == stale_ids
    assert any(e["last_reported"].startswith("1970-") for e in outcome.metadata["examples"])


def test_last_reported_fresh_fails_when_a_fifth_of_stations_are_silent() -> None:
    def silence(status_doc: dict, _info: dict) -> None:
        for s in status_doc["data"]["stations"][:150]:
            s["last_reported"] = 86400  # Ecobici's own placeholder value

    outcome = quality(ECOBICI_STATUS, ECOBICI_INFO, silence)["last_reported_fresh"]

    doc = load(ECOBICI_STATUS)
    at = received(doc)
    silence(doc, {})
    stale = sum(
        1
        for s in doc["data"]["stations"]
        if datetime.fromtimestamp(s["last_reported"], UTC) < at - STALE_AFTER
    )
    assert stale >= 150
    assert not outcome.passed
    assert outcome.value == pytest.approx(stale / 667)


def test_timestamps_utc_passes_on_real_feeds() -> None:
    for status_path, info_path in ((VELIB_STATUS, VELIB_INFO), (ECOBICI_STATUS, ECOBICI_INFO)):
        outcome = quality(status_path, info_path)["timestamps_utc"]
        assert outcome.passed and outcome.value == 0.0
        assert outcome.severity == dg.AssetCheckSeverity.ERROR


def test_timestamps_utc_flags_paris_local_time_sent_as_utc() -> None:
    """Paris is UTC+2 in summer: a local time sent as UTC lands two hours in the future."""

    def local_as_utc(status_doc: dict, _info: dict) -> None:
        for s in status_doc["data"]["stations"][:25]:
            s["last_reported"] += int(timedelta(hours=2).total_seconds())

    outcome = quality(VELIB_STATUS, VELIB_INFO, local_as_utc)["timestamps_utc"]

    doc = load(VELIB_STATUS)
    at = received(doc)
    future = [
        s
        for s in doc["data"]["stations"][:25]
        if datetime.fromtimestamp(s["last_reported"] + 7200, UTC) > at + timedelta(minutes=5)
    ]
    assert len(future) == 25
    assert not outcome.passed
    assert outcome.value == 25.0
    assert "25 station(s)" in outcome.description


# --------------------------------------------------------------------------------------
# Boundaries, and one-line bugs that would otherwise pass unnoticed
# --------------------------------------------------------------------------------------

LYON_STATUS = FIXTURES_DIR / "france-2026-03" / "lyon" / "station_status.json"


@pytest.mark.parametrize(("broken", "accepted"), [(2, True), (3, False)])
def test_missing_rate_of_exactly_5_percent_is_within_the_budget(
    broken: int, accepted: bool
) -> None:
    """40 real Lyon stations: 2 unusable records are exactly 5% (the budget says "more
    than 5%" is rejected), 3 are 7.5%."""
    doc = load(LYON_STATUS)
    assert len(doc["data"]["stations"]) == 40
    for station in doc["data"]["stations"][:broken]:
        del station["num_bikes_available"]

    if accepted:
        batch = accept_status(dump(doc), received(doc))
        assert batch.missing_rate == 0.05 and batch.frame.height == 38
    else:
        violation = rejected(lambda b: accept_status(b, received(doc)), doc)
        assert violation.rule == "missing_rate"
        assert "3 of 40 records (7.5%)" in violation.message
    assert check_missing_rate([{"reason": "x"}], 20) == 0.05


@pytest.mark.parametrize(
    ("document", "field", "column"),
    [
        ("status", "num_bikes_available", "bikes_available"),
        ("status", "num_docks_available", "docks_available"),
        ("status", "num_bikes_disabled", "bikes_disabled"),
        ("status", "num_docks_disabled", "docks_disabled"),
        ("information", "capacity", "capacity"),
    ],
)
def test_exactly_1000_is_the_largest_accepted_count(document: str, field: str, column: str):
    path, accept = (
        (ECOBICI_STATUS, accept_status)
        if document == "status"
        else (ECOBICI_INFO, accept_information)
    )
    doc = load(path)
    victim = doc["data"]["stations"][10]
    victim[field] = 1000
    frame = accept(dump(doc)).frame
    row = frame.filter(pl.col("station_id") == victim["station_id"]).row(0, named=True)
    assert row[column] == 1000

    victim[field] = 1001
    violation = rejected(accept, doc)
    assert violation.rule == "out_of_range"
    assert [e["column"] for e in violation.details["examples"]] == [column]


@pytest.mark.parametrize("value", [5000, -2])
def test_docks_disabled_out_of_range_is_rejected(value: int) -> None:
    doc = load(ECOBICI_STATUS)
    doc["data"]["stations"][10]["num_docks_disabled"] = value

    violation = rejected(accept_status, doc)

    assert violation.rule == "out_of_range"
    assert [e["column"] for e in violation.details["examples"]] == ["docks_disabled"]


def test_gbfs_30_num_vehicles_disabled_is_read_as_bikes_disabled() -> None:
    doc = load(V30_STATUS)
    station = doc["data"]["stations"][0]
    assert "num_bikes_disabled" not in station
    station["num_vehicles_disabled"] = 3

    row = accept_status(dump(doc)).frame.row(0, named=True)

    assert row["bikes_disabled"] == 3


@pytest.mark.parametrize(
    ("sent", "read"),
    [("1", True), ("0", False), ("true", True), ("false", False), (" TRUE ", True), (1, True)],
)
def test_string_and_integer_booleans(sent: Any, read: bool) -> None:
    doc = load(ECOBICI_STATUS)
    victim = doc["data"]["stations"][10]
    for flag in ("is_installed", "is_renting", "is_returning"):
        victim[flag] = sent
    info_doc = load(ECOBICI_INFO)
    info_victim = info_doc["data"]["stations"][10]
    info_victim["is_virtual_station"] = sent

    status = accept_status(dump(doc)).frame
    info = accept_information(dump(info_doc)).frame

    row = status.filter(pl.col("station_id") == victim["station_id"]).row(0, named=True)
    assert (row["is_installed"], row["is_renting"], row["is_returning"]) == (read, read, read)
    virtual = info.filter(pl.col("station_id") == info_victim["station_id"])
    assert virtual["is_virtual_station"].item() is read


def test_disabled_bikes_and_docks_count_inside_capacity() -> None:
    """GBFS capacity counts every dock: available + disabled bikes and free + disabled docks
    add up to it. Every one of Ecobici's 667 real stations adds up exactly."""
    status_doc, info_doc = load(ECOBICI_STATUS), load(ECOBICI_INFO)
    capacity = {s["station_id"]: s["capacity"] for s in info_doc["data"]["stations"]}
    stations = status_doc["data"]["stations"]
    parts = ("num_bikes_available", "num_docks_available", "num_bikes_disabled")
    assert all(
        sum(s[p] for p in parts) + s["num_docks_disabled"] == capacity[s["station_id"]]
        for s in stations
    )
    exact = quality(ECOBICI_STATUS, ECOBICI_INFO)["within_capacity"]
    assert exact.passed and exact.metadata["share_sum_above_capacity"] == 0.0

    # A feed that reports each disabled dock a second time, as free: bikes + free docks
    # reach capacity while disabled ones are still there.
    def double_counted(status: dict, _info: dict) -> None:
        for s in status["data"]["stations"]:
            s["num_docks_available"] += s["num_bikes_disabled"] + s["num_docks_disabled"]

    victims = sum(1 for s in stations if s["num_bikes_disabled"] + s["num_docks_disabled"])
    assert victims == 188
    outcome = quality(ECOBICI_STATUS, ECOBICI_INFO, double_counted)["within_capacity"]
    assert not outcome.passed
    assert outcome.metadata["share_sum_above_capacity"] == pytest.approx(victims / 667)


def test_quarantine_keeps_when_the_batch_was_received_not_when_it_was_quarantined(
    tmp_path: Path,
) -> None:
    doc = load(ECOBICI_STATUS)
    doc["data"]["stations"][10]["num_bikes_available"] = -3
    at = received(doc)  # 2024-04-05: long before this test runs
    lake = LakeStorage(root=str(tmp_path / "lake"))

    result = run_status(lake, paris_city(tmp_path), dump(doc), at + timedelta(seconds=2))

    assert result.rejected is not None
    (reason,) = list_quarantined(lake)
    assert reason["received_at"] == (at + timedelta(seconds=2)).isoformat()
    quarantined_at = datetime.fromisoformat(reason["quarantined_at"])
    assert quarantined_at > at + timedelta(days=365)
