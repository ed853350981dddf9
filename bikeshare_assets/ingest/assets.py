"""Raw layer: one factory builds each city's raw_station_information / raw_station_status /
raw_weather assets. The per-partition work lives in plain functions below the factory."""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from bikeshare_assets.cities import City, SourceMode
from bikeshare_assets.ingest.contracts import (
    INFORMATION_CHECKS,
    STATUS_CHECKS,
    WEATHER_CHECKS,
    RuleOutcome,
    StationInformationFrame,
    StationStatusFrame,
    WeatherFrame,
    check_missing_rate,
    contract_passed,
    dead_feed,
    enforce_schema,
    information_quality_rules,
    status_quality_rules,
    weather_quality_rules,
)
from bikeshare_assets.ingest.gbfs import (
    INFORMATION_SCHEMA,
    STATUS_SCHEMA,
    ContractViolation,
    ParsedBatch,
    empty_frame,
    parse_station_information,
    parse_station_status,
    quote,
)
from bikeshare_assets.ingest.quarantine import RECORDS_DROPPED, quarantine_batch
from bikeshare_assets.ingest.resources import FeedSources
from bikeshare_assets.ingest.sources import WEATHER_SCHEMA, FeedDocument, SourceError
from bikeshare_assets.partition_checks import check_specs, partition_check_results
from bikeshare_assets.partitions import SAME_DAY, CityPartitions
from bikeshare_assets.storage import (
    LIVE_CURRENT_ONLY_METADATA,
    PARTITION_COLUMN_METADATA,
    LakeStorage,
)


@dataclass
class PartitionResult:
    """What happened to one partition: data, a gap, or a rejection."""

    partition: str
    frame: pl.DataFrame | None = None
    gap: bool = False
    rejected: ContractViolation | None = None
    quarantine_uri: str | None = None
    outcomes: list[RuleOutcome] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    live: bool = False  # fetched from a live feed: a past window cannot be fetched again


class BatchRejected(dg.Failure):
    pass


def _what_to_do(city: City, asset: str, partition: str, live: bool = False) -> str:
    if live and asset != "raw_weather":
        return LIVE_WHAT_TO_DO.format(city=city.key, asset=asset, partition=partition)
    return (
        "Inspect payload and reason.json in this folder. If the feed was wrong, wait for it to "
        "recover and re-run: `dagster asset materialize -m bikeshare_assets.definitions "
        f"--select {city.key}/{asset} --partition {partition}`. If the contract is too strict "
        "for a legitimate change in the feed, update bikeshare_assets/ingest/schemas.py (or "
        "contracts.py) and docs/data_contract.md."
    )


# A live feed only ever shows the present: re-running a past window is refused, so the hint
# must not suggest it.
LIVE_WHAT_TO_DO = (
    "Inspect payload and reason.json in this folder. A live window cannot be fetched again "
    "once it is over: partition {partition} stays without data (features treat it as a "
    "recorder gap). The schedule fetches the next window; to fetch the current one now: "
    "`bikeshare materialize --select {city}/{asset} --latest`. If the contract is too strict "
    "for a legitimate change in the feed, update bikeshare_assets/ingest/schemas.py (or "
    "contracts.py)."
)


def _reject(
    lake: LakeStorage,
    city: City,
    asset: str,
    result: PartitionResult,
    violation: ContractViolation,
    payload: bytes,
    payload_ext: str,
    source_url: str,
    received_at: datetime | None,
) -> PartitionResult:
    result.rejected = violation
    result.quarantine_uri = quarantine_batch(
        lake,
        asset=asset,
        city=city.key,
        partition=result.partition,
        payload=payload,
        payload_ext=payload_ext,
        rule=violation.rule,
        message=violation.message,
        source_url=source_url,
        received_at=received_at,
        what_to_do=_what_to_do(city, asset, result.partition, result.live),
        details=violation.details,
    )
    result.outcomes.append(
        RuleOutcome(
            "contract",
            False,
            dg.AssetCheckSeverity.ERROR,
            None,
            None,
            f"Batch rejected by rule `{violation.rule}`: {violation.message}. "
            f"Quarantined at {result.quarantine_uri}.",
            {"rule": violation.rule, "quarantine": result.quarantine_uri},
        )
    )
    return result


def _fetch_or_gap(
    lake: LakeStorage,
    city: City,
    asset: str,
    result: PartitionResult,
    fetch: Callable[[datetime, datetime], FeedDocument | None],
    window: dg.TimeWindow,
) -> FeedDocument | None:
    """The window's document; None after marking the result a gap (the source has no
    snapshot) or rejected (the source failed: whatever it sent is quarantined)."""
    try:
        doc = fetch(window.start, window.end)
    except SourceError as error:
        _source_failed(lake, city, asset, result, error)
        return None
    if doc is None:
        result.gap = True
    return doc


def _accept_feed(
    lake: LakeStorage,
    city: City,
    asset: str,
    result: PartitionResult,
    doc: FeedDocument,
    parse: Callable[[bytes], ParsedBatch],
    schema: type,
) -> ParsedBatch | None:
    """Shared path of both GBFS feeds: parse → missing-rate budget → contract → uniqueness."""
    try:
        batch = parse(doc.body)
        check_missing_rate(batch.dropped, batch.records_in_service)
        enforce_schema(schema, batch.frame)
    except ContractViolation as violation:
        _reject(lake, city, asset, result, violation, doc.body, "json", doc.url, doc.received_at)
        return None
    if batch.dropped:
        # Accepted, but the few unusable records are kept, not thrown away.
        result.metadata["dropped_records_quarantine"] = quarantine_batch(
            lake,
            asset=asset,
            city=city.key,
            partition=result.partition,
            payload="\n".join(_json_line(d) for d in batch.dropped).encode(),
            payload_ext="jsonl",
            rule=RECORDS_DROPPED,
            message=f"{len(batch.dropped)} unusable record(s) dropped from an accepted batch",
            source_url=doc.url,
            received_at=doc.received_at,
            what_to_do="Nothing urgent: the batch was accepted within the missing-rate budget.",
        )
    result.outcomes.append(
        contract_passed(
            batch.version, batch.records_received, len(batch.dropped), batch.exact_duplicates
        )
    )
    result.metadata.update(
        {
            "source_url": doc.url,
            "received_at": doc.received_at.isoformat(),
            "gbfs_version": batch.version,
            "records_received": batch.records_received,
            "records_dropped": len(batch.dropped),
        }
    )
    if batch.not_in_service:
        result.metadata["stations_not_in_service"] = len(batch.not_in_service)
        result.metadata["stations_not_in_service_examples"] = batch.not_in_service[:10]
    return batch


def _json_line(dropped: dict[str, Any]) -> str:
    """One dropped record as JSON; one nested too deeply to encode is kept as a short repr."""
    try:
        return json.dumps(dropped, default=str)
    except (RecursionError, ValueError):
        return json.dumps({"record": quote(dropped["record"]), "reason": dropped["reason"]})


def ingest_information(
    lake: LakeStorage,
    city: City,
    source,
    partition: str,
    window: dg.TimeWindow,
    *,
    live: bool = False,
) -> PartitionResult:
    from bikeshare_assets.ingest import schemas  # pandera: imported by the first batch

    result = PartitionResult(partition, live=live)
    doc = _fetch_or_gap(
        lake, city, "raw_station_information", result, source.station_information, window
    )
    if doc is None:
        return result
    batch = _accept_feed(
        lake,
        city,
        "raw_station_information",
        result,
        doc,
        lambda body: parse_station_information(
            body, as_of_day=window.start, received_at=doc.received_at, language=city.language
        ),
        schemas.StationInformationSchema,
    )
    if batch is not None:
        result.frame = batch.frame
        result.outcomes += information_quality_rules(
            batch.frame, center=(city.latitude, city.longitude), radius_km=city.radius_km
        )
    return result


def ingest_status(
    lake: LakeStorage,
    city: City,
    source,
    partition: str,
    window: dg.TimeWindow,
    information: pl.DataFrame,
    *,
    live: bool = False,
) -> PartitionResult:
    from bikeshare_assets.ingest import schemas  # pandera: imported by the first batch

    result = PartitionResult(partition, live=live)
    doc = _fetch_or_gap(lake, city, "raw_station_status", result, source.station_status, window)
    if doc is None:
        return result
    batch = _accept_feed(
        lake,
        city,
        "raw_station_status",
        result,
        doc,
        lambda body: parse_station_status(
            body, snapshot_at=window.start, received_at=doc.received_at
        ),
        schemas.StationStatusSchema,
    )
    if batch is None:
        return result
    dead = dead_feed(batch, received_at=doc.received_at)
    if dead is not None:
        # Answered, but not a current snapshot: a gap, with the document kept to look at.
        result.gap = True
        result.outcomes.append(dead)
        result.metadata["dead_feed"] = dead.metadata["dead_feed"]
        result.metadata["dead_feed_quarantine"] = quarantine_batch(
            lake,
            asset="raw_station_status",
            city=city.key,
            partition=partition,
            payload=doc.body,
            payload_ext="json",
            rule=dead.metadata["dead_feed"],
            message=dead.description,
            source_url=doc.url,
            received_at=doc.received_at,
            what_to_do="The feed answers but does not update. Check the operator's status "
            f"page or the city's gbfs_url; partition {partition} stays a gap.",
            details=dead.metadata,
        )
        return result
    result.frame = batch.frame
    result.outcomes += status_quality_rules(batch.frame, information, received_at=doc.received_at)
    known = information.height
    reporting = batch.frame.join(information, on="station_id", how="semi").height
    result.metadata["stations"] = batch.frame.height
    result.metadata["station_coverage"] = round(reporting / known, 4) if known else None
    return result


def _source_failed(
    lake: LakeStorage, city: City, asset: str, result: PartitionResult, error: SourceError
) -> PartitionResult:
    violation = ContractViolation(
        "source_unavailable",
        str(error),
        details={"url": error.url, "http_status": error.status},
    )
    return _reject(lake, city, asset, result, violation, error.body, "body", error.url, None)


def ingest_weather_hours(
    lake: LakeStorage, city: City, source, partitions: list[tuple[str, dg.TimeWindow]]
) -> list[PartitionResult]:
    """Weather arrives as a table for the whole range; each hour is then its own partition."""
    from bikeshare_assets.ingest import schemas  # pandera: imported by the first batch

    start, end = partitions[0][1].start, partitions[-1][1].end
    results = [PartitionResult(p) for p, _ in partitions]
    try:
        table = source.hourly(start, end)
    except SourceError as error:
        return [_source_failed(lake, city, "raw_weather", r, error) for r in results]
    table = table.select(list(WEATHER_SCHEMA))
    for result, (_, window) in zip(results, partitions, strict=True):
        rows = table.filter(
            (pl.col("hour_start") >= window.start) & (pl.col("hour_start") < window.end)
        )
        if rows.is_empty():
            result.gap = True
            continue
        try:
            enforce_schema(schemas.WeatherSchema, rows)
        except ContractViolation as violation:
            payload = rows.write_json().encode()
            _reject(lake, city, "raw_weather", result, violation, payload, "json", "weather", None)
            continue
        result.frame = rows
        result.outcomes.append(
            RuleOutcome("contract", True, dg.AssetCheckSeverity.ERROR, None, None, "schema passed")
        )
        result.outcomes += weather_quality_rules(rows)
    return results


def _windows(context: dg.AssetExecutionContext) -> list[tuple[str, dg.TimeWindow]]:
    pdef = context.assets_def.partitions_def
    assert isinstance(pdef, dg.TimeWindowPartitionsDefinition)
    return [(k, pdef.time_window_for_partition_key(k)) for k in context.partition_keys]


def _finish(
    context: dg.AssetExecutionContext,
    city: City,
    asset: str,
    results: list[PartitionResult],
    schema: dict[str, pl.DataType],
    started: float,
) -> Iterator[dg.Output]:
    """Fail loudly on rejects; otherwise hand one frame to the IO manager with per-partition
    metadata and per-partition check results."""
    key = context.assets_def.key
    rejected = [r for r in results if r.rejected is not None]
    if rejected:
        lines = [
            f"- {city.key}/{asset} partition {r.partition}: rule `{r.rejected.rule}` — "  # type: ignore[union-attr]
            f"{r.rejected.message} (quarantined at {r.quarantine_uri})"  # type: ignore[union-attr]
            for r in rejected
        ]
        raise BatchRejected(
            description=(
                f"{len(rejected)} of {len(results)} partition(s) of {city.key}/{asset} were "
                "rejected by the data contract; nothing from this run was stored.\n"
                + "\n".join(lines[:20])
                + (
                    "\nWhat to do: read reason.json in each quarantine folder. Live windows "
                    "cannot be fetched again later: these partitions stay without data; "
                    f"`bikeshare materialize --select {city.key}/{asset} --latest` fetches the "
                    "current window now."
                    if any(r.live for r in rejected)
                    else "\nWhat to do: read reason.json in each quarantine folder, then re-run "
                    "those partitions once the feed is fixed (or run the others on their own)."
                )
            ),
            metadata={
                "rejected_partitions": [r.partition for r in rejected],
                "rules": sorted({r.rejected.rule for r in rejected}),  # type: ignore[union-attr]
            },
        )
    frames = [r.frame for r in results if r.frame is not None and not r.frame.is_empty()]
    for r in results:
        md = {"gap": r.gap, "rows": 0 if r.frame is None else r.frame.height, **r.metadata}
        context.add_asset_metadata(md, partition_key=r.partition)
    gaps = sum(r.gap for r in results)
    rows = sum(f.height for f in frames)
    warned = sum(1 for r in results for o in r.outcomes if not o.passed)
    context.log.info(
        f"{city.key}/{asset}: {len(results)} partition(s), {rows} rows, {gaps} gap(s), "
        f"{warned} failed warn-level check(s), {time.perf_counter() - started:.1f}s"
    )
    frame = pl.concat(frames, how="vertical") if frames else empty_frame(schema)
    yield dg.Output(frame)
    # Only now are the partitions stored: each result names its partition's materialization.
    # A rejected run raised above and logs no results (its partitions were not stored).
    yield from partition_check_results(
        context, key, {r.partition: r.outcomes for r in results if r.outcomes}
    )


def _progress(context: dg.AssetExecutionContext, asset: str, i: int, total: int) -> None:
    if total >= 50 and (i + 1) % max(1, total // 10) == 0:
        context.log.info(f"{asset}: {i + 1}/{total} partitions")


CHECK_DESCRIPTIONS = {
    "contract": "Reject rules: pandera schema (types, required fields, physical ranges, unique "
    "station ids) and <= 5% unusable records. A failure quarantines the batch.",
    "within_capacity": "Counts within [0, capacity] and bikes + docks + disabled <= capacity "
    "for >= 95% of stations.",
    "last_reported_fresh": "<= 10% of stations silent for more than 2 hours; fails (ERROR) "
    "for a dead feed: no station listed or in service, or a document older than 2 hours.",
    "timestamps_utc": "UTC timestamps; none in the future (local time sent as UTC).",
    "coordinates_near_city": "Every station within the city's radius (swapped lat/lon).",
    "capacity_present": ">= 90% of stations publish a capacity.",
    "plausible_ranges": "Weather within plausible city ranges.",
}


def build_raw_assets(city: City, parts: CityPartitions) -> list[dg.AssetsDefinition]:
    prefix = city.key
    info_key = dg.AssetKey([prefix, "raw_station_information"])
    status_key = dg.AssetKey([prefix, "raw_station_status"])
    weather_key = dg.AssetKey([prefix, "raw_weather"])
    common: dict[str, Any] = {
        "group_name": f"{prefix}_ingest",
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "owners": ["team:ml-platform"],
        "tags": {"city": prefix, "layer": "raw"},
    }

    @dg.asset(
        key=info_key,
        partitions_def=parts.days,
        dagster_type=StationInformationFrame,
        check_specs=check_specs(info_key, INFORMATION_CHECKS, parts.days, CHECK_DESCRIPTIONS),
        kinds={"polars", "parquet"},
        metadata={PARTITION_COLUMN_METADATA: "as_of_day", LIVE_CURRENT_ONLY_METADATA: True},
        description=f"{city.display_name}: GBFS station_information per day (id, name, "
        "location, capacity). Rejected batches are quarantined.",
        **common,
    )
    def raw_station_information(
        context: dg.AssetExecutionContext, sources: FeedSources, lake: LakeStorage
    ):
        started = time.perf_counter()
        source = sources.snapshots(city)
        live = sources.source_mode is SourceMode.LIVE
        results = [
            ingest_information(lake, city, source, p, w, live=live) for p, w in _windows(context)
        ]
        yield from _finish(
            context, city, "raw_station_information", results, INFORMATION_SCHEMA, started
        )

    @dg.asset(
        key=status_key,
        partitions_def=parts.snapshots,
        ins={"information": dg.AssetIn(key=info_key, partition_mapping=SAME_DAY)},
        dagster_type=StationStatusFrame,
        check_specs=check_specs(status_key, STATUS_CHECKS, parts.snapshots, CHECK_DESCRIPTIONS),
        kinds={"polars", "parquet"},
        metadata={PARTITION_COLUMN_METADATA: "snapshot_at", LIVE_CURRENT_ONLY_METADATA: True},
        description=f"{city.display_name}: one GBFS station_status snapshot per "
        f"{parts.cadence_minutes}-minute partition. A recorder gap is an empty partition "
        "with gap=true; a rejected batch is quarantined and fails the step.",
        **common,
    )
    def raw_station_status(
        context: dg.AssetExecutionContext,
        sources: FeedSources,
        lake: LakeStorage,
        information: pl.DataFrame,
    ):
        started = time.perf_counter()
        source = sources.snapshots(city)
        if warning := getattr(source, "local_time_warning", None):
            context.log.warning(warning)
        windows = _windows(context)
        by_day = information.partition_by("as_of_day", as_dict=True) if information.height else {}
        empty_info = empty_frame(INFORMATION_SCHEMA)
        results = []
        for i, (partition, window) in enumerate(windows):
            day = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
            info = by_day.get((day,), empty_info)
            results.append(
                ingest_status(
                    lake,
                    city,
                    source,
                    partition,
                    window,
                    info,
                    live=sources.source_mode is SourceMode.LIVE,
                )
            )
            _progress(context, "raw_station_status", i, len(windows))
        yield from _finish(context, city, "raw_station_status", results, STATUS_SCHEMA, started)

    @dg.asset(
        key=weather_key,
        partitions_def=parts.hours,
        dagster_type=WeatherFrame,
        check_specs=check_specs(weather_key, WEATHER_CHECKS, parts.hours, CHECK_DESCRIPTIONS),
        kinds={"polars", "parquet"},
        metadata={PARTITION_COLUMN_METADATA: "hour_start"},
        description=f"{city.display_name}: hourly weather at the city's weather point "
        "(temperature, precipitation, wind, condition code).",
        **common,
    )
    def raw_weather(context: dg.AssetExecutionContext, sources: FeedSources, lake: LakeStorage):
        started = time.perf_counter()
        results = ingest_weather_hours(lake, city, sources.weather(city), _windows(context))
        yield from _finish(context, city, "raw_weather", results, WEATHER_SCHEMA, started)

    # A city without a weather source gets no raw_weather: hundreds of empty hourly
    # partitions would say nothing and cost a run each.
    if not parts.has_weather:
        return [raw_station_information, raw_station_status]
    return [raw_station_information, raw_station_status, raw_weather]
