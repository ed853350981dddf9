"""Hostile and unusual feed documents: each is a clear rejection, a dropped record or a
dead-feed gap, quarantined with its reason, never a traceback.

Every case starts from a real document (Ecobici 2024, Vélib' 2025, the official GBFS 3.0
fixture) and breaks one thing, then goes through the raw layer's real per-partition path
(`ingest_status` / `ingest_information` on a real lake folder) or the real live client
against a real HTTP server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from bikeshare_assets.ingest.contracts import (
    STALE_AFTER,
    StationInformationSchema,
    StationStatusSchema,
    check_missing_rate,
    enforce_schema,
    information_quality_rules,
)
from bikeshare_assets.ingest.gbfs import (
    INFORMATION_SCHEMA,
    ContractViolation,
    document_last_updated,
    empty_frame,
    load_json,
    parse_station_information,
    parse_station_status,
    parse_timestamp,
)
from bikeshare_assets.ingest.gbfs_client import GbfsClient
from bikeshare_assets.ingest.quarantine import list_quarantined, quarantine_batch
from bikeshare_assets.ingest.sources import SourceError
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.conftest import lake_files
from bikeshare_assets_tests.support.feeds import paris_city, run_information, run_status
from bikeshare_assets_tests.support.gbfs_server import FIXTURES_DIR, GbfsServer

ECOBICI_STATUS = FIXTURES_DIR / "ecobici-2024" / "station_status_20240405210456.json"
ECOBICI_INFO = FIXTURES_DIR / "ecobici-2024" / "station_information_20240405210456.json"
VELIB_STATUS = FIXTURES_DIR / "velib-2025" / "station_status.json"
V30_STATUS = FIXTURES_DIR / "fixtures-v3.0" / "station_status.json"
AT = datetime(2025, 9, 8, 8, 0, tzinfo=UTC)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # ensure_ascii: a lone surrogate stays a "\\ud800" escape


def published(doc: dict[str, Any]) -> datetime:
    at = document_last_updated(doc)
    assert at is not None
    return at


def nested(depth: int, inner: str = "1") -> bytes:
    return b"[" * depth + inner.encode() + b"]" * depth


@pytest.fixture
def lake(tmp_path: Path) -> LakeStorage:
    return LakeStorage(root=str(tmp_path / "lake"))


@pytest.fixture
def city(tmp_path: Path):
    return paris_city(tmp_path)


def quarantined(lake: LakeStorage) -> list[dict[str, Any]]:
    return list_quarantined(lake)


# --------------------------------------------------------------------------------------
# Deep nesting
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["whole body", "one station", "data"])
def test_deeply_nested_json_is_malformed_json_not_a_recursion_error(
    where: str, lake, city, tmp_path
) -> None:
    doc = load(ECOBICI_STATUS)
    if where == "whole body":
        body = nested(100_000)
    else:
        marker = '"__deep__"'
        if where == "one station":
            doc["data"]["stations"][3]["num_bikes_available"] = "__deep__"
        else:
            doc["data"] = "__deep__"
        body = dump(doc).replace(marker.encode(), nested(50_000))
    with pytest.raises(ContractViolation) as info:
        load_json(body)
    assert info.value.rule == "malformed_json"
    assert "nests JSON arrays/objects too deeply" in info.value.message

    result = run_status(lake, city, body, published(load(ECOBICI_STATUS)))

    assert result.rejected is not None and result.rejected.rule == "malformed_json"
    assert result.frame is None
    (reason,) = quarantined(lake)
    assert reason["rule"] == "malformed_json"
    assert lake_files(Path(lake.root)) == sorted(
        str(Path(reason_path).relative_to(lake.root))
        for reason_path in (
            Path(result.quarantine_uri) / "payload.json",
            Path(result.quarantine_uri) / "reason.json",
        )
    )
    assert (Path(result.quarantine_uri) / "payload.json").read_bytes() == body


def test_a_nested_but_decodable_value_drops_one_record_with_a_short_reason(lake, city) -> None:
    doc = load(ECOBICI_STATUS)
    doc["data"]["stations"][3]["num_docks_disabled"] = "__deep__"
    body = dump(doc).replace(b'"__deep__"', nested(400))

    result = run_status(lake, city, body, published(doc))

    assert result.rejected is None and result.frame is not None
    assert result.frame.height == 666
    assert result.metadata["records_dropped"] == 1
    (reason,) = quarantined(lake)
    assert reason["rule"] == "records_dropped"
    line = json.loads(
        (Path(result.metadata["dropped_records_quarantine"]) / "payload.jsonl").read_text()
    )
    assert line["reason"] == "docks_disabled: unusable value [[[[...]]]]"


def test_live_client_refuses_a_deeply_nested_gbfs_json(tmp_path) -> None:
    with GbfsServer({"/deep/gbfs.json": nested(100_000)}) as server:
        client = GbfsClient(server.url("/deep/gbfs.json"), retries=0)
        with pytest.raises(SourceError) as info:
            client.discover()
    assert "is not valid JSON" in str(info.value)
    assert "maximum recursion depth" in str(info.value)


def test_live_client_hands_a_deeply_nested_feed_to_the_parser_uncached(lake, city) -> None:
    body = b'{"ttl": 60, "data": {"stations": ' + nested(100_000) + b"}}"
    with GbfsServer() as server:
        url = server.serve_system("deep", None, {"station_status": body})
        client = GbfsClient(url, retries=0)
        first = client.fetch("station_status")
        client.fetch("station_status")
        hits = server.hits("/deep/en/station_status.json")
    assert first.body == body
    assert hits == 2  # not cached: the next call asks the feed again

    result = run_status(lake, city, first.body, first.received_at)
    assert result.rejected is not None and result.rejected.rule == "malformed_json"


# --------------------------------------------------------------------------------------
# Timestamps at the datetime limits, and sentinel values
# --------------------------------------------------------------------------------------

LIMIT_TIMESTAMPS = [
    "0001-01-01T00:00:00+01:00",  # year 0 once in UTC
    "9999-12-31T23:59:59-01:00",  # year 10000 once in UTC
    -62135596801,  # one second before year 1
    253402300800,  # year 10000
    1e20,
    "1e400",
    "²",  # a digit to str.isdigit, not to int()
]


@pytest.mark.parametrize("value", LIMIT_TIMESTAMPS)
def test_timestamp_at_the_datetime_limits_is_unusable_not_an_overflow(value: Any) -> None:
    assert parse_timestamp(value) is None

    doc = load(ECOBICI_STATUS)
    victim = doc["data"]["stations"][7]
    victim["last_reported"] = value
    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    assert [d["record"] for d in batch.dropped] == [victim]
    assert batch.dropped[0]["reason"].startswith("last_reported: unusable value")


@pytest.mark.parametrize("value", LIMIT_TIMESTAMPS)
def test_document_last_updated_at_the_limits_is_unknown_and_the_batch_accepted(
    value: Any, lake, city
) -> None:
    doc = load(V30_STATUS)
    doc["last_updated"] = value

    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    assert batch.last_updated is None
    result = run_status(lake, city, dump(doc), published(load(V30_STATUS)))
    assert result.rejected is None and not result.gap
    assert result.frame is not None
    assert result.frame.height == len(doc["data"]["stations"])


@pytest.mark.parametrize("sentinel", [-1, 0, "0", "1970-01-01T00:00:00Z"])
def test_sentinel_last_reported_is_missing_not_a_1970_report(sentinel: Any) -> None:
    doc = load(ECOBICI_STATUS)
    victims = doc["data"]["stations"][:5]
    for station in victims:
        station["last_reported"] = sentinel

    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)

    assert [d["record"] for d in batch.dropped] == victims
    assert {d["reason"] for d in batch.dropped} == {"last_reported: missing"}
    # Ecobici's own 86400 placeholders stay (stale, not sentinels); nothing earlier remains.
    assert batch.frame["last_reported"].min() == datetime(1970, 1, 2, tzinfo=UTC)


def test_sentinel_last_reported_everywhere_rejects_the_batch() -> None:
    doc = load(ECOBICI_STATUS)
    for station in doc["data"]["stations"]:
        station["last_reported"] = -1
    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    with pytest.raises(ContractViolation) as info:
        check_missing_rate(batch.dropped, batch.records_in_service)
    assert info.value.rule == "missing_rate"


def test_sentinel_document_last_updated_is_unknown() -> None:
    doc = load(ECOBICI_STATUS)
    doc["last_updated"] = 0
    assert document_last_updated(doc) is None


# --------------------------------------------------------------------------------------
# Lone surrogates: one bad record, not a dead batch
# --------------------------------------------------------------------------------------


def test_lone_surrogate_in_a_station_name_drops_that_station_only(lake, city) -> None:
    doc = load(ECOBICI_INFO)
    victim = doc["data"]["stations"][10]
    victim["name"] = "Reforma \ud800 Insurgentes"
    body = dump(doc)
    assert b"\\ud800" in body  # as a feed would send it: a JSON escape

    result = run_information(lake, city, body)

    assert result.rejected is None and result.frame is not None
    assert result.frame.height == len(doc["data"]["stations"]) - 1
    assert victim["station_id"] not in result.frame["station_id"].to_list()
    (reason,) = quarantined(lake)
    assert reason["rule"] == "records_dropped"
    payload = Path(result.metadata["dropped_records_quarantine"]) / "payload.jsonl"
    line = json.loads(payload.read_text(encoding="utf-8"))
    assert line["record"]["station_id"] == victim["station_id"]
    assert line["reason"] == "name: unusable value 'Reforma \\ud800 Insurgentes'"


@pytest.mark.parametrize("field", ["station_id", "version"])
def test_lone_surrogate_in_a_status_document(field: str) -> None:
    doc = load(ECOBICI_STATUS)
    if field == "version":
        doc["version"] = "2.\udfff"
    else:
        doc["data"]["stations"][4]["station_id"] = "\udc80"
    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    enforce_schema(StationStatusSchema, batch.frame)
    if field == "version":
        assert batch.version == "unknown" and not batch.dropped
    else:
        assert batch.dropped[0]["reason"] == "station_id: unusable value '\\udc80'"


def test_quarantine_reason_with_a_lone_surrogate_is_valid_utf8_json(lake) -> None:
    uri = quarantine_batch(
        lake,
        asset="raw_station_information",
        city="paris",
        partition="2025-09-08",
        payload=b"{}",
        payload_ext="json",
        rule="schema",
        message="bad name 'x\ud800y'",
        source_url="test://x",
        received_at=AT,
        what_to_do="look",
    )
    reason = json.loads((Path(uri) / "reason.json").read_bytes().decode("utf-8"))
    assert reason["message"] == "bad name 'x\ud800y'"
    assert reason["received_at"] == AT.isoformat()


# --------------------------------------------------------------------------------------
# Empty lists and dead feeds
# --------------------------------------------------------------------------------------


def test_empty_station_information_is_rejected_and_quarantined(lake, city) -> None:
    doc = load(ECOBICI_INFO)
    doc["data"]["stations"] = []
    with pytest.raises(ContractViolation) as info:
        parse_station_information(dump(doc), as_of_day=AT, received_at=AT)
    assert info.value.rule == "no_stations"

    result = run_information(lake, city, dump(doc))

    assert result.rejected is not None and result.rejected.rule == "no_stations"
    assert result.frame is None
    assert [(r["rule"], r["partition"]) for r in quarantined(lake)] == [
        ("no_stations", "2025-09-08")
    ]


def test_coordinate_rule_on_an_empty_station_list_does_not_crash() -> None:
    rules = information_quality_rules(
        empty_frame(INFORMATION_SCHEMA), center=(48.85, 2.35), radius_km=40
    )
    by_check = {r.check: r for r in rules}
    assert by_check["coordinates_near_city"].passed
    assert by_check["coordinates_near_city"].value == 0.0
    assert not by_check["capacity_present"].passed  # no station publishes a capacity


def test_empty_station_status_is_a_dead_feed_gap_with_a_failed_check(lake, city) -> None:
    doc = load(ECOBICI_STATUS)
    doc["data"]["stations"] = []
    at = published(doc)

    result = run_status(lake, city, dump(doc), at)

    assert result.gap and result.frame is None and result.rejected is None
    by_check = {o.check: o for o in result.outcomes}
    assert by_check["contract"].passed
    fresh = by_check["last_reported_fresh"]
    assert not fresh.passed and fresh.severity == dg.AssetCheckSeverity.ERROR
    assert fresh.metadata["dead_feed"] == "empty_feed"
    assert "within_capacity" not in by_check  # nothing to measure on a gap
    assert result.metadata["dead_feed"] == "empty_feed"
    (reason,) = quarantined(lake)
    assert (reason["rule"], reason["partition"]) == ("empty_feed", "2025-09-08-08:00")


@pytest.mark.parametrize(
    ("age", "dead"),
    [
        (timedelta(days=120), True),
        (STALE_AFTER + timedelta(seconds=1), True),
        (STALE_AFTER, False),
        (timedelta(minutes=3), False),
    ],
)
def test_months_old_document_is_a_stale_feed_gap(age: timedelta, dead: bool, lake, city) -> None:
    doc = load(ECOBICI_STATUS)
    received_at = published(doc) + age

    result = run_status(lake, city, dump(doc), received_at)

    assert result.gap is dead
    assert (result.frame is None) is dead
    fresh = {o.check: o for o in result.outcomes}["last_reported_fresh"]
    if dead:
        assert not fresh.passed and fresh.metadata["dead_feed"] == "stale_feed"
        assert published(doc).isoformat() in fresh.description
        assert [r["rule"] for r in quarantined(lake)] == ["stale_feed"]
    else:
        assert fresh.metadata.get("dead_feed") is None
        assert quarantined(lake) == []


# --------------------------------------------------------------------------------------
# Stations that are not in service (PBSC's PLANNED / NOT_IN_SERVICE / END_OF_LIFE)
# --------------------------------------------------------------------------------------


def planned_stations(doc: dict[str, Any], n: int, *, installed: bool = False) -> list[dict]:
    """Make the first n stations look like PBSC's: status set, no last_reported."""
    statuses = ["PLANNED", "NOT_IN_SERVICE", "END_OF_LIFE"]
    victims = doc["data"]["stations"][:n]
    for i, station in enumerate(victims):
        station["status"] = statuses[i % 3]
        station["is_installed"] = installed
        del station["last_reported"]
    return victims


def test_stations_not_in_service_without_last_reported_are_reported_not_fatal(lake, city) -> None:
    doc = load(ECOBICI_STATUS)
    for station in doc["data"]["stations"]:
        station["status"] = "IN_SERVICE"
    victims = planned_stations(doc, 100)  # 15% of 667: far above the missing-rate budget

    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    assert batch.dropped == []
    assert [s["station_id"] for s in batch.not_in_service] == [v["station_id"] for v in victims]
    assert batch.not_in_service[0]["reason"] == "status 'PLANNED'; last_reported: missing"

    result = run_status(lake, city, dump(doc), published(doc))

    assert result.rejected is None and result.frame is not None
    assert result.frame.height == 567
    assert not set(result.frame["station_id"]) & {v["station_id"] for v in victims}
    assert result.metadata["stations_not_in_service"] == 100
    assert result.metadata["records_dropped"] == 0


def test_is_installed_false_alone_marks_a_station_not_in_service() -> None:
    doc = load(ECOBICI_STATUS)
    victims = doc["data"]["stations"][:60]
    for station in victims:
        station["is_installed"] = 0
        del station["last_reported"]
    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    assert len(batch.not_in_service) == 60 and batch.dropped == []
    assert batch.not_in_service[0]["reason"] == "is_installed false; last_reported: missing"
    check_missing_rate(batch.dropped, batch.records_in_service)  # accepted


def test_installed_stations_without_last_reported_still_break_the_contract() -> None:
    doc = load(ECOBICI_STATUS)
    for station in doc["data"]["stations"][:100]:
        station["is_installed"] = 1
        del station["last_reported"]
    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    assert batch.not_in_service == [] and len(batch.dropped) == 100
    with pytest.raises(ContractViolation) as info:
        check_missing_rate(batch.dropped, batch.records_in_service)
    assert info.value.rule == "missing_rate"


def test_garbage_in_a_planned_station_is_still_dropped_and_quarantined() -> None:
    doc = load(ECOBICI_STATUS)
    (victim,) = planned_stations(doc, 1)
    victim["num_bikes_available"] = "lots"
    batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
    assert batch.not_in_service == []
    assert [d["record"] for d in batch.dropped] == [victim]


def test_a_system_with_no_station_in_service_is_a_dead_feed_gap(lake, city) -> None:
    doc = load(ECOBICI_STATUS)
    planned_stations(doc, len(doc["data"]["stations"]))

    result = run_status(lake, city, dump(doc), published(doc))

    assert result.gap and result.frame is None and result.rejected is None
    fresh = {o.check: o for o in result.outcomes}["last_reported_fresh"]
    assert fresh.metadata["dead_feed"] == "no_station_in_service"
    assert "none of the 667 stations listed is in service" in fresh.description


# --------------------------------------------------------------------------------------
# The information path keeps working on real documents after all of this
# --------------------------------------------------------------------------------------


def test_real_documents_are_unchanged_by_the_hostile_input_rules() -> None:
    for status_path in (ECOBICI_STATUS, VELIB_STATUS, V30_STATUS):
        doc = load(status_path)
        batch = parse_station_status(dump(doc), snapshot_at=AT, received_at=AT)
        check_missing_rate(batch.dropped, batch.records_in_service)
        enforce_schema(StationStatusSchema, batch.frame)
        assert batch.frame.height == len(doc["data"]["stations"])
        assert batch.not_in_service == [] and batch.dropped == []
    info = parse_station_information(ECOBICI_INFO.read_bytes(), as_of_day=AT, received_at=AT)
    enforce_schema(StationInformationSchema, info.frame)
    assert info.frame.height == len(load(ECOBICI_INFO)["data"]["stations"])
