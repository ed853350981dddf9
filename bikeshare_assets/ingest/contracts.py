"""The raw layer's data contract: the reject rules and per-partition quality rules around the
pandera schemas (hard rules, in `schemas.py`), and the Dagster types that check them.

Two kinds of rule, documented in docs/data_contract.md:
- *reject* rules: a batch that breaks one is quarantined as received and the step fails
  (malformed JSON, missing fields, > 5% unusable records, impossible values, conflicting
  duplicate ids). These are the pandera schemas plus the missing-rate budget.
- *warn* rules: real feeds break them a little every day (Vélib' lets bikes overflow a
  full station, stations go quiet): they are measured per partition as asset checks,
  with the offending stations in metadata, and the data is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from bikeshare_assets.ingest.gbfs import ContractViolation, ParsedBatch

if TYPE_CHECKING:
    import pandera.polars as pa

EARTH_RADIUS_KM = 6371.0088
MISSING_RATE_MAX = 0.05
CAPACITY_VIOLATION_MAX = 0.05
STALE_AFTER = timedelta(hours=2)
STALE_RATE_MAX = 0.10
FUTURE_TOLERANCE = timedelta(minutes=5)
CAPACITY_PRESENT_MIN = 0.90


# The pandera schemas live in `schemas.py` and are imported on first use: pandera brings
# pandas and numpy, which loading the code location must not pay for.
SCHEMA_NAMES = ("StationStatusSchema", "StationInformationSchema", "WeatherSchema")


def __getattr__(name: str) -> Any:
    """`contracts.StationStatusSchema` & co. import `schemas.py` (and pandera) on first access."""
    if name in SCHEMA_NAMES:
        from bikeshare_assets.ingest import schemas

        return getattr(schemas, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PanderaFrameType(dg.DagsterType):
    """The dagster-pandera Dagster type of one schema of `schemas.py`, built on first use.

    `pandera_schema_to_dagster_type` needs the pandera schema, so building it when the module
    loads imports pandera and pandas (~0.7 s on every `dagster`/`bikeshare` command and
    code-server reload). This type carries only the name; the type check, the description and
    the column-schema metadata the UI shows are those of the dagster-pandera type, built the
    first time any of them is needed (a run's type check or the code location's snapshot).
    """

    def __init__(self, schema_name: str) -> None:
        if schema_name not in SCHEMA_NAMES:
            raise ValueError(f"{schema_name!r} is not one of {SCHEMA_NAMES}")
        super().__init__(type_check_fn=self._delegate_type_check, name=schema_name)

    @cached_property
    def pandera_type(self) -> dg.DagsterType:
        """The dagster-pandera type of the schema (imports pandera on first access)."""
        from dagster_pandera import pandera_schema_to_dagster_type

        from bikeshare_assets.ingest import schemas

        return pandera_schema_to_dagster_type(getattr(schemas, self.key))

    def _delegate_type_check(self, context: dg.TypeCheckContext, value: object) -> dg.TypeCheck:
        return self.pandera_type.type_check(context, value)

    @property
    def description(self) -> str | None:
        return self.pandera_type.description

    @property
    def metadata(self) -> Any:
        return self.pandera_type.metadata

    @property
    def typing_type(self) -> Any:
        return self.pandera_type.typing_type


StationStatusFrame = PanderaFrameType("StationStatusSchema")
StationInformationFrame = PanderaFrameType("StationInformationSchema")
WeatherFrame = PanderaFrameType("WeatherSchema")


def enforce_schema(schema: type[pa.DataFrameModel], frame: pl.DataFrame) -> None:
    """Raise a ContractViolation naming the rule, columns and first failure cases."""
    from pandera.errors import SchemaErrors

    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        checks = cases.get_column("check").cast(pl.String).to_list()
        columns = cases.get_column("column").cast(pl.String).to_list()
        if any("uniqueness" in c for c in checks):
            rule = "duplicate_station_id"
        elif any(c.startswith(("greater_than", "less_than", "in_range")) for c in checks):
            rule = "out_of_range"
        else:
            rule = "schema"
        summary = sorted({f"{col}: {chk}" for col, chk in zip(columns, checks, strict=True)})
        examples = cases.head(10).select(
            pl.col("column").cast(pl.String),
            pl.col("check").cast(pl.String),
            pl.col("failure_case").cast(pl.String),
        )
        details: dict[str, Any] = {"failures": summary, "examples": examples.to_dicts()}
        message = f"{len(cases)} failing value(s): " + "; ".join(summary)
        if rule == "duplicate_station_id":
            repeated = duplicate_station_ids(schema, frame)
            details["duplicate_station_ids"] = repeated.get_column("station_id").to_list()
            named = ", ".join(
                f"{r['station_id']} ({r['len']}×)" for r in repeated.head(10).to_dicts()
            )
            more = f" and {repeated.height - 10} more" if repeated.height > 10 else ""
            message = (
                f"{repeated.height} station id(s) appear more than once in the batch with "
                f"different values: {named}{more}; " + message
            )
        raise ContractViolation(rule, message, details=details) from exc


def duplicate_station_ids(schema: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame:
    """station_id and how often it occurs, for ids repeated within the schema's unique key
    (pandera's failure cases only say 'multiple_fields_uniqueness')."""
    key = list(getattr(schema.Config, "unique", None) or ["station_id"])
    return (
        frame.filter(pl.struct(key).is_duplicated()).group_by("station_id").len().sort("station_id")
    )


@dataclass
class RuleOutcome:
    """One quality rule measured on one partition, ready to become an asset check result."""

    check: str
    passed: bool
    severity: dg.AssetCheckSeverity
    value: float | None
    limit: float | None
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {"explanation": dg.MetadataValue.md(self.description)}
        if self.value is not None:
            md["value"] = float(self.value)
        if self.limit is not None:
            md["limit"] = float(self.limit)
        md.update(self.metadata)
        return md


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _examples(frame: pl.DataFrame, columns: list[str], n: int = 10) -> list[dict]:
    return [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        for row in frame.head(n).select(columns).to_dicts()
    ]


def check_missing_rate(dropped: list[dict[str, Any]], received: int) -> float:
    """Reject rule: more than 5% of records lack a required field or carry an unusable value."""
    rate = _rate(len(dropped), received)
    if rate > MISSING_RATE_MAX:
        raise ContractViolation(
            "missing_rate",
            f"{len(dropped)} of {received} records ({rate:.1%}) lack a required field or carry "
            f"an unusable value; the budget is {MISSING_RATE_MAX:.0%}",
            details={"examples": [d["reason"] for d in dropped[:10]]},
        )
    return rate


def contract_passed(version: str, received: int, dropped: int, duplicates: int) -> RuleOutcome:
    """The contract check of an accepted batch, with what the reject rules measured."""
    return RuleOutcome(
        "contract",
        True,
        dg.AssetCheckSeverity.ERROR,
        _rate(dropped, received),
        MISSING_RATE_MAX,
        f"GBFS {version} batch of {received} records accepted: schema (types, required "
        f"fields, physical ranges, unique station ids) passed; {dropped} unusable record(s) "
        f"({_rate(dropped, received):.1%}, budget {MISSING_RATE_MAX:.0%}) kept in quarantine; "
        f"{duplicates} exact duplicate record(s) collapsed.",
        {
            "missing_rate": _rate(dropped, received),
            "records_received": received,
            "records_dropped": dropped,
            "exact_duplicates_collapsed": duplicates,
        },
    )


def status_quality_rules(
    status: pl.DataFrame, information: pl.DataFrame, *, received_at: datetime
) -> list[RuleOutcome]:
    """Warn-level rules on one accepted status snapshot (joined to that day's station list)."""
    joined = status.join(information.select("station_id", "capacity"), on="station_id", how="left")
    with_capacity = joined.filter(pl.col("capacity").is_not_null())
    n = with_capacity.height
    over = with_capacity.filter(
        (pl.col("bikes_available") > pl.col("capacity"))
        | (pl.col("docks_available").fill_null(0) > pl.col("capacity"))
    )
    # GBFS capacity counts every dock, working or not: each holds an available or a
    # disabled bike, or is free or disabled, so the four counts add up to at most capacity.
    disabled = pl.col("bikes_disabled").fill_null(0) + pl.col("docks_disabled").fill_null(0)
    over_sum = with_capacity.filter(
        pl.col("bikes_available") + pl.col("docks_available").fill_null(0) + disabled
        > pl.col("capacity")
    )
    snapshot_end = received_at
    stale = status.filter(pl.col("last_reported") < snapshot_end - STALE_AFTER)
    future = status.filter(pl.col("last_reported") > received_at + FUTURE_TOLERANCE)
    tz_ok = all(
        status.schema[c] == pl.Datetime("us", "UTC") for c in ("snapshot_at", "last_reported")
    )
    cols = ["station_id", "bikes_available", "docks_available", "capacity"]
    return [
        RuleOutcome(
            "within_capacity",
            max(_rate(over.height, n), _rate(over_sum.height, n)) <= CAPACITY_VIOLATION_MAX,
            dg.AssetCheckSeverity.WARN,
            max(_rate(over.height, n), _rate(over_sum.height, n)),
            CAPACITY_VIOLATION_MAX,
            f"{over.height} of {n} stations report more bikes or free docks than their "
            f"capacity; {over_sum.height} report bikes + free docks + disabled bikes and docks "
            "above capacity. "
            "Vélib' lets bikes overflow a full station, so a few of each are normal.",
            {
                "share_count_above_capacity": _rate(over.height, n),
                "share_sum_above_capacity": _rate(over_sum.height, n),
                "examples_count_above_capacity": _examples(over, cols),
                "examples_sum_above_capacity": _examples(over_sum, cols),
                "stations_without_capacity": joined.height - n,
            },
        ),
        RuleOutcome(
            "last_reported_fresh",
            _rate(stale.height, status.height) <= STALE_RATE_MAX,
            dg.AssetCheckSeverity.WARN,
            _rate(stale.height, status.height),
            STALE_RATE_MAX,
            f"{stale.height} of {status.height} stations last reported more than "
            f"{STALE_AFTER} before the snapshot.",
            {"examples": _examples(stale, ["station_id", "last_reported"])},
        ),
        RuleOutcome(
            "timestamps_utc",
            tz_ok and future.is_empty(),
            dg.AssetCheckSeverity.ERROR,
            float(future.height),
            0.0,
            f"timestamps are {'UTC' if tz_ok else 'NOT UTC'}; {future.height} station(s) report "
            f"a last_reported more than {FUTURE_TOLERANCE} after the batch arrived (a local "
            "time sent as UTC looks like this).",
            {"examples": _examples(future, ["station_id", "last_reported"])},
        ),
    ]


def dead_feed(batch: ParsedBatch, *, received_at: datetime) -> RuleOutcome | None:
    """A station_status document that is not a current snapshot, or None when it is.

    Three ways a feed is dead while still answering 200: it lists no stations, it lists
    none in service (a system closed for the winter), or its `last_updated` is more than
    STALE_AFTER before it was received (a frozen export served for months). Storing such a
    document as "the snapshot at t" would teach the model that nothing moves; the caller
    records a gap instead, and this outcome fails the partition's freshness check."""
    listed, usable = batch.records_received, batch.frame.height
    if listed == 0:
        rule, why = "empty_feed", "the feed lists no stations"
    elif usable == 0 and batch.not_in_service:
        rule = "no_station_in_service"
        why = f"none of the {listed} stations listed is in service (planned or not installed)"
    elif batch.last_updated is not None and batch.last_updated < received_at - STALE_AFTER:
        rule = "stale_feed"
        age_h = (received_at - batch.last_updated).total_seconds() / 3600
        why = (
            f"the document's last_updated {batch.last_updated.isoformat()} is "
            + (f"{age_h / 24:.0f} days" if age_h >= 48 else f"{age_h:.1f} hours")
            + f" before it was received ({received_at.isoformat()}); the limit is "
            f"{STALE_AFTER.total_seconds() / 3600:g} hours"
        )
    else:
        return None
    updated = batch.last_updated
    return RuleOutcome(
        "last_reported_fresh",
        False,
        dg.AssetCheckSeverity.ERROR,
        1.0,  # no station of a dead feed has a current report
        STALE_RATE_MAX,
        f"Dead feed (`{rule}`): {why}. Recorded as a gap, not as a snapshot.",
        {
            "dead_feed": rule,
            "document_last_updated": None if updated is None else updated.isoformat(),
            "document_age_hours": (
                None if updated is None else (received_at - updated).total_seconds() / 3600
            ),
            "records_received": listed,
            "stations_not_in_service": len(batch.not_in_service),
        },
    )


def distance_km(lat: pl.Series, lon: pl.Series, center: tuple[float, float]) -> pl.Series:
    """Great-circle distance of each station to a point (scikit-learn's haversine)."""
    if lat.is_empty():  # scikit-learn refuses an empty array
        return pl.Series("distance_km", [], dtype=pl.Float64)
    import numpy as np
    from sklearn.metrics.pairwise import haversine_distances  # heavy: only when checking

    points = np.radians(np.column_stack([lat.to_numpy(), lon.to_numpy()]))
    origin = np.radians(np.array([center]))
    return pl.Series("distance_km", haversine_distances(points, origin)[:, 0] * EARTH_RADIUS_KM)


def information_quality_rules(
    information: pl.DataFrame, *, center: tuple[float, float], radius_km: float
) -> list[RuleOutcome]:
    far = information.with_columns(
        distance_km(information.get_column("lat"), information.get_column("lon"), center)
    ).filter(pl.col("distance_km") > radius_km)
    n = information.height
    with_capacity = information.filter(pl.col("capacity").is_not_null()).height
    return [
        RuleOutcome(
            "coordinates_near_city",
            far.is_empty(),
            dg.AssetCheckSeverity.WARN,
            float(far.height),
            0.0,
            f"{far.height} of {n} stations lie more than {radius_km:g} km from the city centre "
            "(swapped lat/lon or a test station).",
            {"examples": _examples(far, ["station_id", "name", "lat", "lon", "distance_km"])},
        ),
        RuleOutcome(
            "capacity_present",
            _rate(with_capacity, n) >= CAPACITY_PRESENT_MIN,
            dg.AssetCheckSeverity.WARN,
            _rate(with_capacity, n),
            CAPACITY_PRESENT_MIN,
            f"{with_capacity} of {n} stations publish a capacity; the capacity checks and the "
            "docks features need it.",
        ),
    ]


def weather_quality_rules(weather: pl.DataFrame) -> list[RuleOutcome]:
    """Plausible for a city (not physically impossible — that is the schema's job)."""
    implausible = weather.filter(
        (pl.col("temperature_c") < -40)
        | (pl.col("temperature_c") > 50)
        | (pl.col("precipitation_mm") > 100)
        | (pl.col("wind_speed_kmh") > 200)
    )
    nulls = weather.select(
        pl.sum_horizontal(
            pl.col("temperature_c", "precipitation_mm", "wind_speed_kmh").is_null()
        ).sum()
    ).item()
    return [
        RuleOutcome(
            "plausible_ranges",
            implausible.is_empty(),
            dg.AssetCheckSeverity.WARN,
            float(implausible.height),
            0.0,
            f"{implausible.height} hour(s) outside plausible city weather "
            "(-40..50 °C, <= 100 mm/h, <= 200 km/h).",
            {"examples": _examples(implausible, weather.columns), "missing_values": nulls},
        ),
    ]


# Few checks, rich metadata: every check result is a stored event, and a single-run backfill
# of a week of snapshots writes one per check per partition.
STATUS_CHECKS = ("contract", "within_capacity", "last_reported_fresh", "timestamps_utc")
INFORMATION_CHECKS = ("contract", "coordinates_near_city", "capacity_present")
WEATHER_CHECKS = ("contract", "plausible_ranges")
