"""A seeded fuzz corpus of mutated real feed documents through the raw layer.

Seeds are real documents: Vélib' 2025, Ecobici 2024, the official GBFS 2.3 / 3.0 fixtures,
and Lyon / Toulouse 2026 (france-2026-03/, ODbL). Each variant breaks the document the way
real feeds and hostile servers do — a field dropped or retyped, a value at a numeric or
datetime limit, deep nesting, a lone surrogate, duplicated or reordered stations, a frozen
or empty feed, truncated or corrupted bytes — and goes through `ingest_status` /
`ingest_information` on a real lake folder. Every variant must end as exactly one of:

- accepted: a frame with the asset's schema that passes the pandera contract and can be
  written as parquet, with JSON-serialisable metadata;
- rejected: a named rule, nothing but the quarantine folder written, the payload in it
  byte-identical to what was served, and a readable reason.json;
- a dead-feed gap: no frame, a failed `last_reported_fresh` check, the document quarantined.

Never a traceback. The corpus is deterministic (seeded) and takes a few seconds.
"""

from __future__ import annotations

import io
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from bikeshare_assets.ingest.contracts import (
    INFORMATION_CHECKS,
    STATUS_CHECKS,
    StationInformationSchema,
    StationStatusSchema,
    enforce_schema,
)
from bikeshare_assets.ingest.gbfs import INFORMATION_SCHEMA, STATUS_SCHEMA, document_last_updated
from bikeshare_assets.ingest.quarantine import list_quarantined
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.conftest import lake_files
from bikeshare_assets_tests.support.feeds import paris_city, run_information, run_status
from bikeshare_assets_tests.support.gbfs_server import FIXTURES_DIR

SEED = 20261201
VARIANTS_PER_DOCUMENT = 20
FRANCE = FIXTURES_DIR / "france-2026-03"

SEEDS: dict[str, tuple[str, Path]] = {
    "velib-status": ("status", FIXTURES_DIR / "velib-2025" / "station_status.json"),
    "velib-info": ("information", FIXTURES_DIR / "velib-2025" / "station_information.json"),
    "ecobici-status": (
        "status",
        FIXTURES_DIR / "ecobici-2024" / "station_status_20240405210456.json",
    ),
    "ecobici-info": (
        "information",
        FIXTURES_DIR / "ecobici-2024" / "station_information_20240405210456.json",
    ),
    "v23-status": ("status", FIXTURES_DIR / "fixtures-v2.3" / "station_status.json"),
    "v23-info": ("information", FIXTURES_DIR / "fixtures-v2.3" / "station_information.json"),
    "v30-status": ("status", FIXTURES_DIR / "fixtures-v3.0" / "station_status.json"),
    "v30-info": ("information", FIXTURES_DIR / "fixtures-v3.0" / "station_information.json"),
    "lyon-status": ("status", FRANCE / "lyon" / "station_status.json"),
    "lyon-info": ("information", FRANCE / "lyon" / "station_information.json"),
    "toulouse-status": ("status", FRANCE / "toulouse" / "station_status.json"),
    "toulouse-info": ("information", FRANCE / "toulouse" / "station_information.json"),
}

# Rules a rejection may name (contract violations and the raw layer's own).
REJECTION_RULES = {
    "malformed_json",
    "missing_field",
    "missing_rate",
    "out_of_range",
    "duplicate_station_id",
    "schema",
    "no_stations",
}
DEAD_FEED_RULES = {"empty_feed", "stale_feed", "no_station_in_service"}

HOSTILE_VALUES: list[Any] = [
    None,
    "",
    "five",
    " 7 ",
    "1",
    "true",
    "²",
    -1,
    0,
    1000,
    1001,
    2**31,
    10**40,
    -(10**40),
    2.5,
    1e308,
    float("nan"),
    float("inf"),
    True,
    False,
    [],
    {},
    [{"language": "en"}],
    "x" * 5_000,
    "Gare \ud800 Nord",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2025-09-08T08:00:00",  # naive: not allowed by the spec
    -62135596801,
    253402300800,
    "__DEEP__",  # replaced by 400 nested lists in the bytes
]
# The fields each parser reads (plus one it ignores), so most mutations hit something.
FIELDS = {
    "status": [
        "station_id",
        "num_bikes_available",
        "num_vehicles_available",
        "num_docks_available",
        "num_bikes_disabled",
        "num_docks_disabled",
        "is_installed",
        "is_renting",
        "is_returning",
        "last_reported",
        "status",
        "rental_uris",
    ],
    "information": [
        "station_id",
        "name",
        "name",
        "lat",
        "lon",
        "capacity",
        "is_virtual_station",
        "rental_uris",
    ],
}


@dataclass
class Variant:
    seed_name: str
    kind: str  # "status" | "information"
    description: str
    body: bytes
    received_at: datetime


def _stations(doc: Any) -> list[Any]:
    data = doc.get("data") if isinstance(doc, dict) else None
    stations = data.get("stations") if isinstance(data, dict) else None
    return stations if isinstance(stations, list) else []


def _encode(doc: Any) -> bytes:
    return json.dumps(doc).encode().replace(b'"__DEEP__"', b"[" * 400 + b"1" + b"]" * 400)


def _mutate(
    rng: random.Random, doc: dict[str, Any], kind: str, values: Iterator[Any]
) -> tuple[str, dict[str, Any] | bytes]:
    """One mutation of a parsed real document; returns (what was done, doc or raw bytes).

    Hostile values come from `values` in turn, so the corpus uses each of them."""
    stations = _stations(doc)
    op = rng.choice(
        [
            "set_field",
            "set_field",
            "set_field",
            "delete_field",
            "set_field_everywhere",
            "document_field",
            "station_not_a_record",
            "duplicate",
            "conflicting_duplicate",
            "shuffle",
            "empty",
            "frozen",
            "not_in_service",
            "truncate",
            "flip_bytes",
        ]
    )
    if op in ("set_field", "delete_field") and stations:
        i, name = rng.randrange(len(stations)), rng.choice(FIELDS[kind])
        if not isinstance(stations[i], dict):
            return "noop", doc
        if op == "delete_field":
            stations[i].pop(name, None)
            return f"delete {name} of station #{i}", doc
        value = next(values)
        stations[i][name] = value
        return f"station #{i} {name} = {value!r:.60}", doc
    if op == "set_field_everywhere" and stations:
        name, value = rng.choice(FIELDS[kind]), next(values)
        for station in stations:
            if isinstance(station, dict):
                station[name] = value
        return f"every station {name} = {value!r:.60}", doc
    if op == "document_field":
        name = rng.choice(["last_updated", "lastUpdatedOther", "version", "data", "ttl"])
        value = rng.choice([next(values), {"stations": "nope"}, {"nostations": []}])
        doc[name] = value
        return f"document {name} = {value!r:.60}", doc
    if op == "station_not_a_record" and stations:
        i = rng.randrange(len(stations))
        stations[i] = next(values)
        return f"station #{i} replaced by {stations[i]!r:.60}", doc
    if op in ("duplicate", "conflicting_duplicate") and stations:
        i = rng.randrange(len(stations))
        twin = json.loads(json.dumps(stations[i]))
        if op == "conflicting_duplicate" and isinstance(twin, dict):
            for key in ("num_bikes_available", "num_vehicles_available", "lat", "capacity"):
                if isinstance(twin.get(key), int | float) and not isinstance(twin[key], bool):
                    twin[key] += 1
        stations.append(twin)
        return f"{op} of station #{i}", doc
    if op == "shuffle":
        rng.shuffle(stations)
        return "stations shuffled", doc
    if op == "empty" and isinstance(doc.get("data"), dict):
        doc["data"]["stations"] = []
        return "empty station list", doc
    if op == "frozen":
        return "frozen feed (received 120 days after last_updated)", doc
    if op == "not_in_service" and stations:
        k = rng.randint(1, len(stations))
        for station in stations[:k]:
            if isinstance(station, dict):
                station["status"] = rng.choice(["PLANNED", "NOT_IN_SERVICE", "END_OF_LIFE"])
                station["is_installed"] = False
                station.pop("last_reported", None)
        return f"{k} of {len(stations)} stations PLANNED without last_reported", doc
    body = _encode(doc)
    if op == "truncate":
        cut = rng.randrange(len(body))
        return f"truncated at byte {cut}", body[:cut]
    if op == "flip_bytes":
        data = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return "random bytes replaced", bytes(data)
    return "noop", doc


def corpus() -> list[Variant]:
    variants = []
    values = itertools.cycle(HOSTILE_VALUES)
    for index, (name, (kind, path)) in enumerate(sorted(SEEDS.items())):
        original = path.read_bytes()
        published = document_last_updated(json.loads(original)) or datetime(2025, 9, 8, tzinfo=UTC)
        for n in range(VARIANTS_PER_DOCUMENT):
            rng = random.Random(SEED + 1000 * index + n)
            doc = json.loads(original)
            steps, received_at = [], published + timedelta(minutes=1)
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                if isinstance(doc, bytes):
                    break
                what, doc = _mutate(rng, doc, kind, values)
                steps.append(what)
                if what.startswith("frozen"):
                    received_at = published + timedelta(days=120)
            body = doc if isinstance(doc, bytes) else _encode(doc)
            variants.append(Variant(name, kind, "; ".join(steps), body, received_at))
    return variants


CORPUS = corpus()


def _outcome(variant: Variant, root: Path, city) -> str:
    lake = LakeStorage(root=str(root))
    if variant.kind == "status":
        result = run_status(lake, city, variant.body, variant.received_at)
        schema, frame_schema, checks = StationStatusSchema, STATUS_SCHEMA, STATUS_CHECKS
    else:
        result = run_information(lake, city, variant.body, variant.received_at)
        schema, frame_schema = StationInformationSchema, INFORMATION_SCHEMA
        checks = INFORMATION_CHECKS
    files = lake_files(root)
    reasons = list_quarantined(lake)
    assert {o.check for o in result.outcomes} <= set(checks)
    # What Dagster will store for the partition survives its own serialisation.
    for outcome in result.outcomes:
        serialize_value(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(["paris", "raw"]),
                check_name=outcome.check,
                passed=outcome.passed,
                metadata=outcome.as_metadata(),
                severity=outcome.severity,
                description=outcome.description,
                partition=result.partition,
            )
        )
    serialize_value(
        dg.AssetMaterialization(
            ["paris", "raw"], partition=result.partition, metadata=result.metadata
        )
    )

    if result.rejected is not None:
        assert result.rejected.rule in REJECTION_RULES, result.rejected.rule
        assert result.frame is None and not result.gap
        assert all(f.startswith("quarantine/") for f in files), files
        folder = Path(result.quarantine_uri or "")
        assert (folder / "payload.json").read_bytes() == variant.body
        assert result.rejected.rule in {r["rule"] for r in reasons}
        (contract,) = [o for o in result.outcomes if o.check == "contract"]
        assert not contract.passed
        return f"rejected:{result.rejected.rule}"
    if result.gap:
        assert variant.kind == "status" and result.frame is None
        assert result.metadata["dead_feed"] in DEAD_FEED_RULES
        fresh = [o for o in result.outcomes if o.check == "last_reported_fresh"]
        assert len(fresh) == 1 and not fresh[0].passed
        assert all(f.startswith("quarantine/") for f in files), files
        return f"gap:{result.metadata['dead_feed']}"
    frame = result.frame
    assert frame is not None and frame.height > 0
    assert dict(frame.schema) == frame_schema
    enforce_schema(schema, frame)
    frame.write_parquet(io.BytesIO())
    assert all(r["rule"] == "records_dropped" for r in reasons)
    assert {o.check for o in result.outcomes} == set(checks)
    return "accepted"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Variant, str]]:
    """Every variant's outcome; a traceback or a broken promise becomes "error: ..."."""
    base = tmp_path_factory.mktemp("fuzz")
    city = paris_city(base)
    out = []
    for number, variant in enumerate(CORPUS):
        try:
            outcome = _outcome(variant, base / f"lake-{number}", city)
        except Exception as exc:  # a traceback is exactly what this corpus exists to catch
            outcome = f"error: {type(exc).__name__}: {str(exc)[:300]}"
        out.append((variant, outcome))
    return out


@pytest.mark.parametrize("seed_name", sorted(SEEDS))
def test_every_mutated_document_is_accepted_rejected_or_a_gap(seed_name: str, outcomes) -> None:
    mine = [(v, o) for v, o in outcomes if v.seed_name == seed_name]
    errors = [f"{v.description!r}: {o}" for v, o in mine if o.startswith("error")]
    assert errors == []
    assert len(mine) == VARIANTS_PER_DOCUMENT
    census = Counter(o for _, o in mine)
    # Both sides of the contract are exercised for every seed document.
    assert census["accepted"] > 0 and any(k.startswith("rejected:") for k in census), census


def test_the_corpus_reaches_every_rejection_and_dead_feed_rule(outcomes) -> None:
    """Seeded, so this census is fixed; it fails if a mutation stops reaching an outcome
    (e.g. a mutation bug that leaves documents untouched)."""
    census = Counter(o for _, o in outcomes)
    reached = {k.split(":", 1)[1] for k in census if ":" in k and not k.startswith("error")}
    assert reached >= DEAD_FEED_RULES, census
    assert {"malformed_json", "missing_field", "missing_rate", "out_of_range"} <= reached
    assert {"duplicate_station_id", "no_stations"} <= reached, census


def test_the_corpus_is_deterministic() -> None:
    again = corpus()
    assert [(v.description, v.body) for v in again] == [(v.description, v.body) for v in CORPUS]
