"""Raw layer benchmarks: one status partition at scale, and a week-long single-run backfill."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from bikeshare_assets.cities import (
    DEFAULT_CITIES_FILE,
    PARTITION_FMT,
    City,
    SourceMode,
    load_cities,
)
from bikeshare_assets.ingest.assets import ingest_information, ingest_status
from bikeshare_assets.ingest.contracts import StationStatusSchema, enforce_schema
from bikeshare_assets.ingest.gbfs import STATUS_SCHEMA, empty_frame
from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.ingest.simulator import SimulatedSource, SimulationConfig
from bikeshare_assets.ingest.sources import FeedDocument
from bikeshare_assets.partitions import city_partitions, materialize_range
from bikeshare_assets.storage import (
    PARTITION_COLUMN_METADATA,
    LakeStorage,
    PartitionedParquetIOManager,
    partition_key_path,
)
from bikeshare_assets_tests.benchmarks import (
    BenchContext,
    CaseResult,
    Run,
    benchmark,
    case,
    fmt_seconds,
)

CITY = "paris"
STATUS_KEY = dg.AssetKey([CITY, "raw_station_status"])
INFO_KEY = dg.AssetKey([CITY, "raw_station_information"])


def _city() -> City:
    return load_cities(DEFAULT_CITIES_FILE)[CITY]


def _accepted(result: Any, what: str) -> pl.DataFrame:
    if result.rejected is not None or result.frame is None:
        reason = result.rejected.message if result.rejected else "no document (gap)"
        raise RuntimeError(f"{what} partition {result.partition} was not accepted: {reason}")
    return result.frame


# --------------------------------------------------------------------------------------
# raw_status_partition


class _BuiltDocument:
    """A SnapshotSource handing back a document built during setup, so that building the
    GBFS JSON is not timed; everything after the fetch is the project's real path."""

    def __init__(self, doc: FeedDocument) -> None:
        self.doc = doc

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument:
        return self.doc

    def station_information(self, day_start: datetime, day_end: datetime) -> None:
        return None


@benchmark(
    "raw_status_partition",
    title="one station_status partition (simulated feed)",
    description="""
        The live per-partition path, run every 5 minutes per city: a GBFS 2.3
        station_status document from the seeded simulator (SimulatedSource, built during
        setup and *not* timed) goes through `ingest_status` (JSON parsing, missing-rate
        budget, pandera contract, warn-level quality rules joined to the day's station list
        from `ingest_information`), then the accepted frame is written with
        `LakeStorage.write_parquet` to `partition_key_path(...)` in a temporary local lake,
        as the IO manager does (zstd parquet, fsync, atomic rename). Each recorded run uses
        the next 5-minute snapshot from 08:00 UTC on a simulated weekday. 1,500 stations is
        Paris-sized; 10,000 is headroom for the largest systems.
    """,
    cases=[case("1,500 stations", stations=1_500), case("10,000 stations", stations=10_000)],
    repeat=9,
    warmup=1,
)
def raw_status_partition(ctx: BenchContext, stations: int):
    city = _city()
    parts = city_partitions(city, SourceMode.SIMULATE)
    source = SimulatedSource(SimulationConfig.from_city(city, stations=stations, days=1))
    lake = LakeStorage(root=str(ctx.tmp_path / "lake"))

    day_key = parts.days.get_first_partition_key()
    info = ingest_information(
        lake, city, source, day_key, parts.days.time_window_for_partition_key(day_key)
    )
    information = _accepted(info, "station_information")

    first = parts.days.time_window_for_partition_key(day_key).start + timedelta(hours=8)
    documents: list[tuple[str, dg.TimeWindow, FeedDocument]] = []
    build_s: list[float] = []
    for i in range(ctx.iterations):
        key = (first + i * parts.cadence).strftime(PARTITION_FMT)
        window = parts.snapshots.time_window_for_partition_key(key)
        started = time.perf_counter()
        doc = source.station_status(window.start, window.end)
        build_s.append(time.perf_counter() - started)
        assert doc is not None, key
        documents.append((key, window, doc))
    ctx.metric(
        "document size (KiB)", round(statistics.median(len(d.body) for _, _, d in documents) / 1024)
    )
    ctx.metric(
        "build document (setup, not timed)",
        fmt_seconds(statistics.median(build_s[1:] or build_s)),
    )

    def once(run: Run) -> None:
        key, window, doc = documents[run.index]
        with run.phase("parse + contract + quality rules (`ingest_status`)"):
            result = ingest_status(lake, city, _BuiltDocument(doc), key, window, information)
        frame = _accepted(result, "station_status")
        with run.phase("write partition parquet (`LakeStorage.write_parquet`)"):
            lake.write_parquet(partition_key_path(STATUS_KEY, key), frame)
        run.metric("stations in the document", int(result.metadata["records_received"]))
        run.metric("rows written", frame.height)
        run.metric(
            "parquet size (KiB)",
            round(Path(lake.uri(partition_key_path(STATUS_KEY, key))).stat().st_size / 1024),
        )

    return once


# --------------------------------------------------------------------------------------
# raw_replay_backfill_7d

FIRST_DAY, LAST_DAY = "2025-09-08", "2025-09-14"
FIRST_SNAPSHOT, LAST_SNAPSHOT = "2025-09-08-00:00", "2025-09-14-23:45"
DAGSTER_YAML = "telemetry:\n  enabled: false\n"

# Phase names shared by both cases, so the two can be compared line by line.
P_PLAN = (
    "Dagster: build the job, create the run (one ASSET_MATERIALIZATION_PLANNED event per partition)"
)
P_START = "Dagster: start run and step, init resources; load 7 information partitions"
P_LOAD = "load 7 information partitions (IO manager `load_input`)"
P_INGEST = "ingest 672 partitions: replay document + `ingest_status`"
P_REPLAY = "↳ of which the replay source builds GBFS documents"
P_CHECKS = "Dagster: store the per-partition asset check evaluations"
P_FRAME = "per-partition metadata, concat, pandera type check of the whole frame"
P_WRITE = "IO manager `handle_output`: split + write 672 parquet files"
P_MATS = "Dagster: store one ASSET_MATERIALIZATION per partition"
P_END = "Dagster: check outputs, step and run end"
EVENT_STORAGE_PHASES = (P_PLAN, P_CHECKS, P_MATS)


def _replay_env(home: Path) -> dict[str, str]:
    return {
        "BIKESHARE_DEPLOYMENT": "local",
        "BIKESHARE_SOURCE": "replay",
        "BIKESHARE_CITIES": CITY,
        "BIKESHARE_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
    }


def _partitions_written(lake_root: Path) -> int:
    return sum(
        1 for _ in (lake_root / "raw_station_status" / f"city={CITY}").glob("dt=*/part.parquet")
    )


def _event_phases(run: Run, records: list[Any], called_at: float, returned_at: float) -> Counter:
    """Split the run's wall time at its own event timestamps (cheap: no profiler)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    types: Counter = Counter()
    for rec in records:
        kind = rec.dagster_event.event_type_value if rec.dagster_event else "LOG"
        types[kind] += 1
        first.setdefault(kind, rec.timestamp)
        last[kind] = rec.timestamp
    checks_first = first.get("ASSET_CHECK_EVALUATION", first["STEP_INPUT"])
    checks_last = last.get("ASSET_CHECK_EVALUATION", checks_first)
    output = min(
        (
            r.timestamp
            for r in records
            if r.dagster_event and r.dagster_event.event_type_value == "STEP_OUTPUT"
        ),
        default=checks_last,
    )
    mats_first, handled = first["ASSET_MATERIALIZATION"], first["HANDLED_OUTPUT"]
    run.add_phase(P_PLAN, first["PIPELINE_START"] - called_at)
    run.add_phase(P_START, first["STEP_INPUT"] - first["PIPELINE_START"])
    run.add_phase(P_INGEST, checks_first - first["STEP_INPUT"])
    run.add_phase(P_CHECKS, checks_last - checks_first)
    run.add_phase(P_FRAME, output - checks_last)
    run.add_phase(P_WRITE, mats_first - output)
    run.add_phase(P_MATS, handled - mats_first)
    run.add_phase(P_END, returned_at - handled)
    return types


def _materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset: dg.AssetKey, first: str, last: str
):
    # The same call `bikeshare demo` makes: one run over a range (BackfillPolicy.single_run).
    return materialize_range(
        defs, instance, asset.to_user_string(), first, last, launched_by="make bench", quiet=True
    )


def _with_dagster(ctx: BenchContext):
    from bikeshare_assets.definitions import build_definitions
    from bikeshare_assets.settings import get_settings

    env = _replay_env(ctx.tmp_path)
    dagster_home = Path(env["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    settings = get_settings(env)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()

    started = time.perf_counter()
    info = _materialize(defs, instance, INFO_KEY, FIRST_DAY, LAST_DAY)
    if not info.success:
        raise RuntimeError(f"setup: the raw_station_information run {info.run_id} failed")
    ctx.metric("setup: information run (7 days)", fmt_seconds(time.perf_counter() - started))

    def once(run: Run) -> None:
        called_at = time.time()
        result = _materialize(defs, instance, STATUS_KEY, FIRST_SNAPSHOT, LAST_SNAPSHOT)
        returned_at = time.time()
        with run.untimed():
            if not result.success:
                raise RuntimeError(f"the raw_station_status run {result.run_id} failed")
            records = list(instance.all_logs(result.run_id))
            types = _event_phases(run, records, called_at, returned_at)
            mats = result.get_asset_materialization_events()
            rows = gaps = 0
            for event in mats:
                md = event.step_materialization_data.materialization.metadata
                rows += int(md["rows"].value)
                gaps += int(bool(md["gap"].value))
            run.metric("partitions", len(mats))
            run.metric("with data", len(mats) - gaps)
            run.metric("rows", rows)
            run.metric("files written", _partitions_written(Path(settings.storage_root)))
            run.metric("events stored by the run", len(records))
            run.metric("of which check evaluations", types["ASSET_CHECK_EVALUATION"])
            run.metric(
                "instance size (MiB)",
                round(
                    sum(p.stat().st_size for p in dagster_home.rglob("*") if p.is_file()) / 2**20, 1
                ),
            )

    yield once
    instance.dispose()
    if saved is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = saved


class _TimedSource:
    """Delegates to the replay source and adds up the time it spends building documents."""

    def __init__(self, inner: ReplaySource) -> None:
        self.inner = inner
        self.seconds = 0.0

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument | None:
        started = time.perf_counter()
        try:
            return self.inner.station_status(window_start, window_end)
        finally:
            self.seconds += time.perf_counter() - started

    def station_information(self, day_start: datetime, day_end: datetime) -> FeedDocument | None:
        return self.inner.station_information(day_start, day_end)


def _plain_functions(ctx: BenchContext):
    """The same work as the Dagster run, by calling the project's functions directly."""
    city = _city()
    parts = city_partitions(city, SourceMode.REPLAY)
    assert city.replay is not None
    lake = LakeStorage(root=str(ctx.tmp_path / "lake"))
    io_manager = PartitionedParquetIOManager(lake=lake)

    # setup: the 7 information partitions, written through the real IO manager
    info_source = ReplaySource(city.replay.status_path)
    days = parts.days.get_partition_keys_in_range(dg.PartitionKeyRange(FIRST_DAY, LAST_DAY))
    info_frames = [
        _accepted(
            ingest_information(
                lake, city, info_source, d, parts.days.time_window_for_partition_key(d)
            ),
            "info",
        )
        for d in days
    ]
    io_manager.handle_output(
        dg.build_output_context(
            asset_key=INFO_KEY,
            asset_partitions_def=parts.days,
            asset_partition_key_range=dg.PartitionKeyRange(FIRST_DAY, LAST_DAY),
            definition_metadata={PARTITION_COLUMN_METADATA: "as_of_day"},
        ),
        pl.concat(info_frames),
    )
    key_range = dg.PartitionKeyRange(FIRST_SNAPSHOT, LAST_SNAPSHOT)
    keys = parts.snapshots.get_partition_keys_in_range(key_range)

    def once(run: Run) -> None:
        # A fresh source per run, like a fresh resource per Dagster run: the recording is read
        # on first use, inside the timed loop.
        source = _TimedSource(ReplaySource(city.replay.status_path))  # type: ignore[union-attr]
        with run.phase(P_LOAD):
            information = io_manager.load_input(
                dg.build_input_context(
                    asset_key=INFO_KEY,
                    asset_partitions_def=parts.days,
                    asset_partition_key_range=dg.PartitionKeyRange(FIRST_DAY, LAST_DAY),
                )
            )
        with run.phase(P_INGEST):
            # the loop of the raw_station_status asset body
            by_day = information.partition_by("as_of_day", as_dict=True)
            empty_info = empty_frame(dict(information.schema))
            results = []
            for key in keys:
                window = parts.snapshots.time_window_for_partition_key(key)
                day = window.start.replace(hour=0, minute=0, second=0, microsecond=0)
                info = by_day.get((day,), empty_info)
                results.append(ingest_status(lake, city, source, key, window, info))
        run.add_phase(P_REPLAY, source.seconds)
        with run.phase(P_FRAME):
            # what `_finish` and Dagster's type check (dagster-pandera, lazy) do with the frames
            metadata = [
                {"gap": r.gap, "rows": 0 if r.frame is None else r.frame.height, **r.metadata}
                for r in results
            ]
            frames = [r.frame for r in results if r.frame is not None and not r.frame.is_empty()]
            frame = pl.concat(frames, how="vertical") if frames else empty_frame(STATUS_SCHEMA)
            enforce_schema(StationStatusSchema, frame)
        with run.phase(P_WRITE):
            io_manager.handle_output(
                dg.build_output_context(
                    asset_key=STATUS_KEY,
                    asset_partitions_def=parts.snapshots,
                    asset_partition_key_range=key_range,
                    definition_metadata={PARTITION_COLUMN_METADATA: "snapshot_at"},
                ),
                frame,
            )
        with run.untimed():
            rejected = [r.partition for r in results if r.rejected is not None]
            if rejected:
                raise RuntimeError(f"partitions rejected by the contract: {rejected[:5]}")
            gaps = sum(m["gap"] for m in metadata)
            run.metric("partitions", len(results))
            run.metric("with data", len(results) - gaps)
            run.metric("rows", frame.height)
            run.metric("files written", _partitions_written(Path(lake.root)))

    return once


def _backfill_summary(results: list[CaseResult]) -> list[str]:
    by_case = {r.case: r for r in results}
    dagster, plain = by_case.get(CASE_DAGSTER), by_case.get(CASE_PLAIN)
    if dagster is None or plain is None:
        return []
    d_total, p_total = dagster.median(), plain.median()
    storage = sum(dagster.median(p) for p in EVENT_STORAGE_PHASES if p in dagster.phases)
    partitions = dagster.metrics.get("partitions", 672)
    lines = [
        f"**Where the time goes.** The Dagster run took {fmt_seconds(d_total)} "
        f"({d_total / partitions * 1000:.0f} ms per partition); the same work through the plain "
        f"functions took {fmt_seconds(p_total)} ({p_total / partitions * 1000:.0f} ms per "
        f"partition). Dagster therefore adds {fmt_seconds(d_total - p_total)} "
        f"({(d_total - p_total) / d_total:.0%} of the run). Split at the run's own event "
        f"timestamps, writing events to the SQLite event log (planned events, per-partition "
        f"check evaluations, per-partition materializations) accounts for {fmt_seconds(storage)} "
        f"({storage / d_total:.0%}).",
    ]
    if dagster.metrics.get("rows") != plain.metrics.get("rows"):
        lines.append(
            f"**Warning:** the two cases disagree on rows ({dagster.metrics.get('rows')} vs "
            f"{plain.metrics.get('rows')})."
        )
    return lines


CASE_DAGSTER = "dagster.materialize, one run, SQLite instance"
CASE_PLAIN = "same work, plain functions (no Dagster)"


@benchmark(
    "raw_replay_backfill_7d",
    title="7-day single-run backfill of the Paris replay",
    description="""
        `paris/raw_station_status` over 2025-09-08 00:00 → 2025-09-14 23:45 UTC: 672
        fifteen-minute partitions of the real Vélib' recording (partitions the recorder missed
        are stored as empty gap partitions), as ONE run (`BackfillPolicy.single_run`, range
        tags `dagster/asset_partition_range_start/_end`) with `dagster.materialize` on a
        persistent SQLite instance in a fresh temporary DAGSTER_HOME, exactly as `bikeshare
        demo` does. Setup (not timed) materializes the 7 daily `raw_station_information`
        partitions first. The second case does the same work by calling the project's functions
        directly (the asset body's loop over `ingest_status`, the pandera check Dagster runs as
        the output's type check, and the real `PartitionedParquetIOManager` through
        `build_input_context`/`build_output_context`), so the difference is what Dagster and
        its event storage cost. The Dagster case's phases are cut at the timestamps of the
        run's own events. One cold run per case by default (`--repeat N` for more).
    """,
    cases=[case(CASE_DAGSTER, dagster=True), case(CASE_PLAIN, dagster=False)],
    repeat=1,
    warmup=0,
    summarize=_backfill_summary,
)
def raw_replay_backfill_7d(ctx: BenchContext, dagster: bool):
    if dagster:
        yield from _with_dagster(ctx)
    else:
        yield _plain_functions(ctx)
