"""station_features and stockout_labels: one factory per city, thin Dagster wiring around
the pure functions in compute.py and labels.py."""

import time
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import dagster as dg
import polars as pl

from bikeshare_assets.cities import City
from bikeshare_assets.features.compute import (
    FEATURE_COLUMNS,
    KEY,
    LOOKBACK,
    WEATHER_TOLERANCE,
    WINDOWS_MINUTES,
    FeatureContext,
    FeatureFunction,
    build_station_features,
    empty_features,
    observable_weather,
)
from bikeshare_assets.features.labels import HORIZON, LABEL_SCHEMA, build_labels
from bikeshare_assets.features.store import partition_keys_between, read_partitions
from bikeshare_assets.ingest.contracts import RuleOutcome
from bikeshare_assets.ingest.gbfs import INFORMATION_SCHEMA, empty_frame
from bikeshare_assets.ingest.sources import WEATHER_SCHEMA
from bikeshare_assets.partition_checks import check_specs, partition_check_results
from bikeshare_assets.partitions import SAME_DAY, CityPartitions
from bikeshare_assets.storage import PARTITION_COLUMN_METADATA, LakeStorage, MissingPartitionError

# How far past t the no_look_ahead check reads raw data: a feature that reads the future
# within its longest window shows up as a difference.
LOOK_AHEAD_PROBE = LOOKBACK

# Share of rows allowed to miss a feature. Current state and static features must always be
# there; window statistics miss where the recorder had gaps; weather where none was published.
NULL_BUDGETS: dict[str, float] = {
    **{c: 0.0 for c in ("bikes_available", "capacity", "lat", "lon", "local_hour", "weekday")},
    # A station missing from the snapshot at t - w (or from the whole window) while the city
    # was recorded: real feeds drop a few stations per snapshot.
    **{c: 0.35 for c in FEATURE_COLUMNS if "net_flow" in c or "trend" in c or "_var_" in c},
    "minutes_since_previous": 0.35,
    "temperature_c": 0.5,
    "precipitation_mm": 0.5,
    "wind_speed_kmh": 0.5,
}  # weather columns are excused entirely for a city without a weather source


WEATHER_FEATURES = ("temperature_c", "precipitation_mm", "wind_speed_kmh")


def gap_excused(at: datetime, recorded: set[datetime]) -> list[str]:
    """Features that are null for every station because the recorder (not the station)
    missed the snapshots they need: never filled, and not held against the budget."""
    excused = []
    for w in WINDOWS_MINUTES:
        start = at - timedelta(minutes=w)
        if start not in recorded:  # a net flow needs exactly t - w
            excused += [c for c in FEATURE_COLUMNS if c.endswith(f"net_flow_{w}")]
        if not any(start <= s < at for s in recorded):  # var / trend need a second snapshot
            excused += [f"bikes_var_{w}", f"bikes_trend_per_h_{w}"]
    if not any(at - LOOKBACK <= s < at for s in recorded):
        excused.append("minutes_since_previous")
    return excused


def null_budget_outcome(features: pl.DataFrame, excused: list[str] | None = None) -> RuleOutcome:
    excused = excused or []
    shares = {
        c: features.get_column(c).null_count() / features.height
        for c in NULL_BUDGETS
        if features.height
    }
    over = {c: round(s, 4) for c, s in shares.items() if s > NULL_BUDGETS[c] and c not in excused}
    return RuleOutcome(
        "null_budget",
        not over,
        dg.AssetCheckSeverity.WARN,
        max((s for c, s in shares.items() if c not in excused), default=0.0),
        None,
        (
            "Every feature within its null budget."
            if not over
            else f"Features over their null budget: {over}."
        )
        + (
            f" Null because of recorder gaps or no weather source (excused): {sorted(excused)}."
            if excused
            else ""
        ),
        {
            "null_shares": {c: round(s, 4) for c, s in shares.items() if s > 0},
            "excused_by_gaps": sorted(excused),
        },
    )


def _windows(context: dg.AssetExecutionContext) -> list[tuple[str, dg.TimeWindow]]:
    pdef = context.assets_def.partitions_def
    assert isinstance(pdef, dg.TimeWindowPartitionsDefinition)
    return [(k, pdef.time_window_for_partition_key(k)) for k in context.partition_keys]


def read_status_history(
    lake: LakeStorage,
    key: dg.AssetKey,
    parts: CityPartitions,
    windows: list[tuple[str, dg.TimeWindow]],
    before: timedelta,
    after: timedelta,
) -> pl.DataFrame:
    """Raw snapshots around the run's partitions. The run's own partitions must exist (a gap
    is an existing, empty partition); ones outside the run may be absent (period start, or a
    future snapshot that has not arrived yet)."""
    first, last = windows[0][1].start, windows[-1][1].start
    keys = partition_keys_between(parts.snapshots, first - before, last + after + parts.cadence)
    frame, missing = read_partitions(lake, key, keys, missing_ok=True)
    own = {k for k, _ in windows}
    missing_own = [k for k in missing if k in own]
    if missing_own:
        raise MissingPartitionError(
            f"{key.to_user_string()} partitions {missing_own[:5]}{'...' if len(missing_own) > 5 else ''} "
            "are not materialized; materialize them before features and labels."
        )
    return frame


def build_feature_assets(city: City, parts: CityPartitions) -> list[dg.AssetsDefinition]:
    prefix = city.key
    status_key = dg.AssetKey([prefix, "raw_station_status"])
    info_key = dg.AssetKey([prefix, "raw_station_information"])
    weather_key = dg.AssetKey([prefix, "raw_weather"])
    features_key = dg.AssetKey([prefix, "station_features"])
    labels_key = dg.AssetKey([prefix, "stockout_labels"])
    steps = int(LOOKBACK / parts.cadence)
    horizon_steps = int(HORIZON / parts.cadence)
    context_ = FeatureContext(
        city.timezone,
        city.country,
        parts.cadence_minutes,
        stockout_threshold=city.stockout_threshold,
    )
    common: dict[str, Any] = {
        "group_name": f"{prefix}_features",
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "owners": ["team:ml-platform"],
        "tags": {"city": prefix, "layer": "features"},
        "kinds": {"polars", "parquet"},
        "metadata": {PARTITION_COLUMN_METADATA: "snapshot_at"},
    }

    def _feature_inputs(
        lake: LakeStorage, windows: list[tuple[str, dg.TimeWindow]], after: timedelta = timedelta(0)
    ):
        """Raw status (with the lookback), station lists and weather hours for `windows`, and
        `after` the last window (only the no_look_ahead check reads past it)."""
        history = read_status_history(lake, status_key, parts, windows, LOOKBACK, after)
        first, last = windows[0][1].start, windows[-1][1].end + after
        days = partition_keys_between(parts.days, first - LOOKBACK, last)
        information, _ = read_partitions(lake, info_key, days, missing_ok=True)
        hours = partition_keys_between(parts.hours, first - WEATHER_TOLERANCE, last)
        weather = pl.DataFrame()
        if parts.has_weather:
            weather, _ = read_partitions(lake, weather_key, hours, missing_ok=True)
        # No station list or no weather yet: typed empty frames, so features are null, not an error.
        if information.width == 0:
            information = empty_frame(INFORMATION_SCHEMA)
        if weather.width == 0:
            weather = pl.DataFrame(schema=WEATHER_SCHEMA)
        return history, information, weather

    @dg.asset(
        key=features_key,
        partitions_def=parts.snapshots,
        deps=[
            dg.AssetDep(
                status_key,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-steps, allow_nonexistent_upstream_partitions=True
                ),
            ),
            dg.AssetDep(info_key, partition_mapping=SAME_DAY),
            *([dg.AssetDep(weather_key)] if parts.has_weather else []),
        ],
        check_specs=check_specs(
            features_key,
            ["null_budget", "no_look_ahead"],
            parts.snapshots,
            {
                "null_budget": "Each feature's null share within its budget (gaps make window "
                "features null, never borrowed values).",
                "no_look_ahead": "The newest snapshot of the run, computed from raw data that "
                f"reaches {LOOK_AHEAD_PROBE.total_seconds() / 60:.0f} minutes past t and from "
                "data at or before t alone, gives identical features, equal to the stored ones.",
            },
        ),
        description=f"{city.display_name}: per station at snapshot t, features from raw data "
        f"at or before t only (current state, {', '.join(str(w) for w in (15, 30, 60))}-minute "
        "windows, neighbours within 500 m, local time and holidays, weather). The online and "
        "the offline feature store.",
        **common,
    )
    def station_features(context: dg.AssetExecutionContext, lake: LakeStorage):
        started = time.perf_counter()
        # A city without a weather source: its weather columns are null by design.
        no_weather_excused = [] if parts.has_weather else list(WEATHER_FEATURES)
        windows = _windows(context)
        # A long single-run backfill is computed one UTC day at a time: the same result (each
        # day reads its own 60-minute lookback) with memory bounded by a day, not the range.
        days = [list(group) for _, group in groupby(windows, key=lambda kw: kw[1].start.date())]
        frames, recorded = [], set()
        for i, day_windows in enumerate(days):
            history, information, weather = _feature_inputs(lake, day_windows)
            if history.height:
                recorded |= set(history.get_column("snapshot_at").unique().to_list())
            times = [w.start for _, w in day_windows]
            if history.height:
                frames.append(
                    build_station_features(history, information, weather, times, context_)
                )
            if len(days) > 3:
                context.log.info(f"{prefix}/station_features: day {i + 1}/{len(days)}")
        features = pl.concat(frames) if frames else empty_features()
        by_time = features.partition_by("snapshot_at", as_dict=True) if features.height else {}
        outcomes: dict[str, list[RuleOutcome]] = {}
        for key, window in windows:
            part = by_time.get((window.start,))
            rows = 0 if part is None else part.height
            context.add_asset_metadata({"rows": rows, "gap": rows == 0}, partition_key=key)
            if part is not None:
                excused = gap_excused(window.start, recorded) + no_weather_excused
                outcomes[key] = [null_budget_outcome(part, excused)]
        if outcomes:
            # The newest snapshot with data, recomputed from its own day's inputs (the run's
            # last day may be all recorder gaps) read up to LOOK_AHEAD_PROBE past it.
            starts = {key: window.start for key, window in windows}
            newest_key = max(outcomes, key=starts.__getitem__)
            at = starts[newest_key]
            day_windows = next(d for d in days if d[0][1].start.date() == at.date())
            history, information, weather = _feature_inputs(lake, day_windows, LOOK_AHEAD_PROBE)
            outcomes[newest_key].append(
                look_ahead_outcome(
                    history,
                    information,
                    weather,
                    at,
                    features.filter(pl.col("snapshot_at") == at),
                    context_,
                )
            )
        context.log.info(
            f"{prefix}/station_features: {len(windows)} partition(s), {features.height} rows, "
            f"{time.perf_counter() - started:.1f}s"
        )
        yield dg.Output(features)
        yield from partition_check_results(context, features_key, outcomes)

    @dg.asset(
        key=labels_key,
        partitions_def=parts.snapshots,
        deps=[
            dg.AssetDep(
                status_key,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    end_offset=horizon_steps, allow_nonexistent_upstream_partitions=True
                ),
            )
        ],
        check_specs=check_specs(
            labels_key,
            ["label_maturity"],
            parts.snapshots,
            {"label_maturity": "The snapshot at t + 30 min exists, so t has labels."},
        ),
        description=f"{city.display_name}: bikes and free docks exactly 30 minutes after t, "
        f"and the stockout flags (<= {city.stockout_threshold}). No future snapshot, no label.",
        **common,
    )
    def stockout_labels(context: dg.AssetExecutionContext, lake: LakeStorage):
        windows = _windows(context)
        history = read_status_history(lake, status_key, parts, windows, timedelta(0), HORIZON)
        labels = (
            build_labels(history, city.stockout_threshold)
            if history.height
            else pl.DataFrame(schema=LABEL_SCHEMA)
        )
        own = {w.start for _, w in windows}
        labels = labels.filter(pl.col("snapshot_at").is_in(list(own)))
        present = (
            set(history.get_column("snapshot_at").unique().to_list()) if history.height else set()
        )
        by_time = labels.partition_by("snapshot_at", as_dict=True) if labels.height else {}
        outcomes: dict[str, list[RuleOutcome]] = {}
        for key, window in windows:
            rows = by_time.get((window.start,), pl.DataFrame()).height
            matured = (window.start + HORIZON) in present
            context.add_asset_metadata(
                {"rows": rows, "matured": matured, "gap": window.start not in present},
                partition_key=key,
            )
            if window.start in present:
                outcomes[key] = [
                    RuleOutcome(
                        "label_maturity",
                        matured,
                        dg.AssetCheckSeverity.WARN,
                        float(rows),
                        None,
                        f"{rows} station label(s) from the snapshot at "
                        f"{(window.start + HORIZON).isoformat()}."
                        if matured
                        else "No snapshot 30 minutes later (not arrived yet, or a recorder gap): "
                        "no labels for this snapshot.",
                    )
                ]
        yield dg.Output(labels)
        yield from partition_check_results(context, labels_key, outcomes)

    return [station_features, stockout_labels]


def _differing_columns(left: pl.DataFrame, right: pl.DataFrame) -> list[str]:
    """Columns whose values differ (nulls equal to nulls); ["rows"] if the rows differ."""
    left, right = left.sort(KEY), right.sort(KEY)
    if left.height != right.height or not left.select(KEY).equals(right.select(KEY)):
        return ["rows"]
    return [
        c
        for c in left.columns
        if c not in KEY and not left.get_column(c).eq_missing(right.get_column(c)).all()
    ]


def look_ahead_outcome(
    history: pl.DataFrame,
    information: pl.DataFrame,
    weather: pl.DataFrame,
    at: datetime,
    served: pl.DataFrame,
    context: FeatureContext,
    compute: FeatureFunction = build_station_features,
) -> RuleOutcome:
    """Features at t from inputs that reach past t, against a recomputation from the inputs
    observable at t alone: a feature that reads the future differs. The served rows must
    equal the recomputation too.

    `history`, `information` and `weather` should extend past t (the asset reads
    LOOK_AHEAD_PROBE further); when the lake holds nothing after t yet (the newest live
    snapshot), only the comparison with the served rows is possible, and the result says so.
    """
    past_only = compute(
        history.filter(pl.col("snapshot_at") <= at),
        information.filter(pl.col("as_of_day") <= at) if information.height else information,
        observable_weather(weather, at),
        [at],
        context,
    )
    with_future = compute(history, information, weather, [at], context)
    future = (
        history.filter(pl.col("snapshot_at") > at).get_column("snapshot_at").n_unique()
        if history.height
        else 0
    )
    leaking = _differing_columns(past_only, with_future)
    skewed = _differing_columns(past_only, served)
    passed = not leaking and not skewed
    probe = (
        f"{future} later snapshot(s) in the inputs"
        if future
        else "no later snapshot in the lake yet, so only the served rows could be compared"
    )
    if passed:
        description = (
            f"Features at {at.isoformat()} are identical from inputs at or before t and from "
            f"inputs that reach past t ({probe}), and equal the served rows."
        )
    else:
        description = f"Features at {at.isoformat()} READ THE FUTURE: " + "; ".join(
            part
            for part in (
                f"with later inputs ({probe}) {leaking} change" if leaking else "",
                f"the served rows differ from a recomputation at t in {skewed}" if skewed else "",
            )
            if part
        )
        description += ". Find the feature that reads rows after t in features/compute.py."
    return RuleOutcome(
        "no_look_ahead",
        passed,
        dg.AssetCheckSeverity.ERROR,
        None,
        None,
        description,
        {
            "rows": served.height,
            "later_snapshots_read": future,
            "leaking_columns": leaking,
            "differing_from_served": skewed,
        },
    )
