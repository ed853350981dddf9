"""prediction_outcomes (every snapshot), model_quality (daily, rolling 24 hours) and
drift_report (hourly)."""

from datetime import timedelta
from typing import Any

import dagster as dg
import polars as pl

from bikeshare_assets.cities import City
from bikeshare_assets.features.labels import LABEL_SCHEMA, TARGETS
from bikeshare_assets.features.store import partition_keys_between, read_partitions
from bikeshare_assets.ingest.contracts import RuleOutcome
from bikeshare_assets.monitoring.drift import (
    DEFAULT_DRIFT_THRESHOLDS,
    DRIFT_SCHEMA,
    MONITORED_COLUMNS,
    STRATUM,
    DriftPolicy,
    combine_references,
    comparable,
    drift_table,
    drift_verdict,
    mask_partial_windows,
    matching_reference,
    parse_serving_label,
    psi_report,
    scored_rows,
)
from bikeshare_assets.monitoring.quality import join_outcomes, quality_metrics
from bikeshare_assets.monitoring.reference import ReferenceMissing, load_reference
from bikeshare_assets.partition_checks import check_specs, partition_check_results
from bikeshare_assets.partitions import CityPartitions
from bikeshare_assets.registry.gate import DEFAULT_THRESHOLDS, PromotionGate
from bikeshare_assets.serving.predict import PREDICTION_SCHEMA
from bikeshare_assets.storage import PARTITION_COLUMN_METADATA, LakeStorage, partition_key_path
from bikeshare_assets.training.tracking import END_MLFLOW_ON_RUN_FINISHED, MlflowTracking

COVERAGE_MIN = 0.9
# What join_outcomes returns; also the schema of an outcome partition with no matured label
# yet (the IO manager splits the run's frame on snapshot_at, so it needs the columns).
OUTCOME_SCHEMA = {**PREDICTION_SCHEMA, **{c: LABEL_SCHEMA[c] for c in ("label_at", *TARGETS)}}
QUALITY_SCHEMA = {
    "day": pl.String(),
    "target": pl.String(),
    "rows": pl.Int64(),  # scored: outcomes the served model did not see in training
    "rows_seen_in_training": pl.Int64(),  # left out of every metric
    "base_rate": pl.Float64(),
    "pr_auc_24h": pl.Float64(),
    "f1_24h": pl.Float64(),
    "brier_24h": pl.Float64(),
    "calibration_error_24h": pl.Float64(),
    "pr_auc_new_24h": pl.Float64(),
    "precision_at_20_new_24h": pl.Float64(),
    "baseline_pr_auc_new_24h": pl.Float64(),
    "baseline_precision_at_20_new_24h": pl.Float64(),
    "fallback_rate": pl.Float64(),
}


def log_quality_to_mlflow(mlflow_run, city: str, day: str, quality: pl.DataFrame) -> None:
    """The day's quality as metrics `<city>.<target>.<metric>` of the Dagster run's MLflow
    run (dagster-mlflow's resource, which exposes MLflow's functions)."""
    mlflow_run.set_tags({f"{city}.day": day, "city": city})
    metrics = {
        f"{city}.{row['target']}.{name}": float(value)
        for row in quality.iter_rows(named=True)
        for name, value in row.items()
        if name not in ("day", "target") and value is not None
    }
    mlflow_run.log_metrics(metrics)


def build_monitoring_assets(city: City, parts: CityPartitions) -> list[dg.AssetsDefinition]:
    prefix = city.key
    outcomes_key = dg.AssetKey([prefix, "prediction_outcomes"])
    quality_key = dg.AssetKey([prefix, "model_quality"])

    @dg.asset(
        key=outcomes_key,
        partitions_def=parts.snapshots,
        ins={
            "predictions": dg.AssetIn(key=[prefix, "stockout_predictions"]),
            "labels": dg.AssetIn(key=[prefix, "stockout_labels"]),
        },
        check_specs=check_specs(
            outcomes_key,
            ["coverage"],
            parts.snapshots,
            {"coverage": ">= 90% of the snapshot's predictions have a matured label."},
        ),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=f"{prefix}_monitoring",
        kinds={"polars", "parquet"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "monitoring"},
        metadata={PARTITION_COLUMN_METADATA: "snapshot_at"},
        description=f"{city.display_name}: predictions at t joined with the labels at t, which "
        "mature 30 minutes later.",
    )
    def prediction_outcomes(
        context: dg.AssetExecutionContext, predictions: pl.DataFrame, labels: pl.DataFrame
    ):
        outcomes = (
            join_outcomes(predictions, labels) if predictions.height and labels.height else None
        )
        pdef = context.assets_def.partitions_def
        results = {}
        for key in context.partition_keys:
            start = pdef.time_window_for_partition_key(key).start  # type: ignore[union-attr]
            n_pred = (
                predictions.filter(pl.col("snapshot_at") == start).height
                if predictions.height
                else 0
            )
            n_lab = labels.filter(pl.col("snapshot_at") == start).height if labels.height else 0
            n_out = (
                outcomes.filter(pl.col("snapshot_at") == start).height
                if outcomes is not None
                else 0
            )
            context.add_asset_metadata(
                {"rows": n_out, "predictions": n_pred, "matured": n_lab > 0}, partition_key=key
            )
            if n_pred and n_lab:
                share = n_out / n_pred
                results[key] = [
                    RuleOutcome(
                        "coverage",
                        share >= COVERAGE_MIN,
                        dg.AssetCheckSeverity.WARN,
                        share,
                        COVERAGE_MIN,
                        f"{n_out} of {n_pred} predictions have an outcome.",
                    )
                ]
        frame = outcomes if outcomes is not None else pl.DataFrame(schema=OUTCOME_SCHEMA)
        yield dg.Output(frame)
        yield from partition_check_results(context, outcomes_key, results)

    @dg.asset(
        key=quality_key,
        partitions_def=parts.days,
        deps=[dg.AssetDep(outcomes_key)],
        check_specs=[
            dg.AssetCheckSpec(
                "quality_above_gate",
                asset=quality_key,
                partitions_def=parts.days,
                description="Rolling 24-hour PR-AUC and F1 at or above the promotion gate's floors "
                f"(the promotion_gate resource; default {DEFAULT_THRESHOLDS.min_pr_auc:.2f} / "
                f"{DEFAULT_THRESHOLDS.min_f1:.2f}) for both targets, on outcomes the model did "
                "not see in training; failing means retrain.",
            )
        ],
        group_name=f"{prefix}_monitoring",
        kinds={"polars", "mlflow"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "monitoring"},
        description=f"{city.display_name}: rolling 24-hour PR-AUC, F1, Brier, calibration error, "
        "new-stockout PR-AUC and precision of the top 20 (model and lowest-count-first) and "
        "fallback rate of the served predictions, from matured outcomes the model did not see "
        "in training (those are counted, not scored); also logged to MLflow (experiment "
        "bikeshare/model_quality, one run per Dagster run).",
        # dagster-mlflow: `mlflow` is its mlflow_tracking resource, the hook ends that run.
        hooks={END_MLFLOW_ON_RUN_FINISHED},
    )
    def model_quality(
        context: dg.AssetExecutionContext,
        lake: LakeStorage,
        mlflow: dg.ResourceParam[Any],
        promotion_gate: PromotionGate,
    ):
        # The 24 hours up to the end of the day, or of the data when the period ends earlier.
        last = parts.snapshots.get_last_partition_key()
        data_end = parts.snapshots.time_window_for_partition_key(last).end if last else None
        end = (
            min(context.partition_time_window.end, data_end)
            if data_end
            else context.partition_time_window.end
        )
        keys = partition_keys_between(parts.snapshots, end - timedelta(hours=24), end)
        outcomes, missing = read_partitions(lake, outcomes_key, keys, missing_ok=True)
        if outcomes.height == 0:
            raise dg.Failure(
                description=f"{prefix}/model_quality {context.partition_key}: no prediction outcomes in the "
                f"24 hours before {end} ({len(missing)} of {len(keys)} partitions missing). Materialize "
                f"{prefix}/stockout_predictions and {prefix}/prediction_outcomes first."
            )
        rows = [
            {"day": context.partition_key, **r}
            for r in quality_metrics(outcomes, city.stockout_threshold)
        ]
        frame = pl.DataFrame(rows, schema=QUALITY_SCHEMA)
        log_quality_to_mlflow(mlflow, prefix, context.partition_key, frame)
        floors = promotion_gate.thresholds()
        failing = [
            r["target"]
            for r in rows
            if r["pr_auc_24h"] is None
            or r["pr_auc_24h"] < floors.min_pr_auc
            or (r["f1_24h"] or 0) < floors.min_f1
        ]
        yield dg.Output(
            frame,
            metadata={
                **{
                    f"{r['target']}_pr_auc_24h": r["pr_auc_24h"]
                    for r in rows
                    if r["pr_auc_24h"] is not None
                },
                **{f"{r['target']}_f1_24h": r["f1_24h"] for r in rows if r["f1_24h"] is not None},
                **{
                    f"{r['target']}_{name}": r[name]
                    for r in rows
                    for name in (
                        "brier_24h",
                        "calibration_error_24h",
                        "pr_auc_new_24h",
                        "baseline_pr_auc_new_24h",
                        "precision_at_20_new_24h",
                        "baseline_precision_at_20_new_24h",
                        "rows_seen_in_training",
                    )
                    if r[name] is not None
                },
                "outcome_rows": outcomes.height,
            },
        )
        yield dg.AssetCheckResult(
            check_name="quality_above_gate",
            passed=not failing,
            metadata={
                "failing_targets": failing,
                "min_pr_auc": floors.min_pr_auc,
                "min_f1": floors.min_f1,
                **{f"{r['target']}_pr_auc_24h": r["pr_auc_24h"] or 0.0 for r in rows},
                **{f"{r['target']}_f1_24h": r["f1_24h"] or 0.0 for r in rows},
            },
        )

    return [prediction_outcomes, model_quality, build_drift_report(city, parts)]


def _psi_table(table: pl.DataFrame) -> dg.TableMetadataValue:
    """The hour's PSI per column as a table the Dagster UI shows, worst first."""
    columns = ["feature", "kind", "psi", "status", "current_mean", "reference_mean"]
    types = {"psi": "float", "current_mean": "float", "reference_mean": "float"}
    rows = table.sort("psi", descending=True, nulls_last=True).select(columns)
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
            for r in rows.iter_rows(named=True)
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, types.get(c, "string")) for c in columns]),
    )


def _file_metadata(lake: LakeStorage, key: str) -> dg.MetadataValue:
    uri = lake.uri(key)
    return dg.MetadataValue.url(uri) if lake.is_s3 else dg.MetadataValue.path(uri)


def build_drift_report(city: City, parts: CityPartitions) -> dg.AssetsDefinition:
    """drift_report (hourly): the hour's scored features and P(stockout) against the
    reference sample of the versions that scored them (monitoring/drift.py)."""
    prefix = city.key
    drift_key = dg.AssetKey([prefix, "drift_report"])
    features_key = dg.AssetKey([prefix, "station_features"])
    predictions_key = dg.AssetKey([prefix, "stockout_predictions"])
    limits = DEFAULT_DRIFT_THRESHOLDS

    @dg.asset(
        key=drift_key,
        partitions_def=parts.drift,
        deps=[dg.AssetDep(features_key), dg.AssetDep(predictions_key)],
        check_specs=check_specs(
            drift_key,
            ["feature_drift", "prediction_drift"],
            parts.drift,
            {
                "feature_drift": f"PSI of each station-level model feature scored in the hour "
                "against the serving version's training reference (same local hour): WARN at >= "
                f"{limits.warn_psi}, ERROR at >= {limits.fail_psi} (drift_policy resource). "
                "Calendar, weather and cadence (obs_*, minutes_since_previous) features are not "
                "checked (docs/drift.md). An hour nothing was scored by the model in passes "
                "with 'nothing scored'.",
                "prediction_drift": "The same on P(stockout_bikes) and P(stockout_docks) against "
                "the serving versions' own probabilities on their reference rows.",
            },
        ),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=f"{prefix}_monitoring",
        kinds={"evidently", "polars", "parquet"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "monitoring"},
        metadata={PARTITION_COLUMN_METADATA: "hour"},
        description=f"{city.display_name}: per hour, PSI (Evidently DataDriftPreset) of every "
        "model feature and predicted probability that the model scored in the hour, against "
        "the reference sample of the version that served (its training rows of the same local "
        "hour); one row per column, the Evidently HTML and JSON beside the partition.",
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        lake: LakeStorage,
        mlflow_tracking: MlflowTracking,
        drift_policy: DriftPolicy,
    ):
        thresholds = drift_policy.thresholds()
        pdef = parts.drift
        frames, results = [], {}
        references: dict[tuple[str, str], pl.DataFrame] = {}
        for key in context.partition_keys:
            window = pdef.time_window_for_partition_key(key)
            where = f"{prefix}/drift_report {key}"
            snapshot_keys = partition_keys_between(parts.snapshots, window.start, window.end)
            predictions, _ = read_partitions(lake, predictions_key, snapshot_keys, missing_ok=True)
            scored_keys = (
                [
                    k
                    for k in snapshot_keys
                    if predictions.filter(
                        (
                            pl.col("snapshot_at")
                            == parts.snapshots.time_window_for_partition_key(k).start
                        )
                        & (pl.col("source") == "model")
                    ).height
                ]
                if predictions.height
                else []
            )
            features, missing = read_partitions(lake, features_key, scored_keys, missing_ok=True)
            if scored_keys and missing:
                raise dg.Failure(
                    description=f"{where}: {prefix}/stockout_predictions scored snapshots "
                    f"{missing} but {prefix}/station_features has no partition for them; "
                    f"materialize {prefix}/station_features for {missing[0]}..{missing[-1]} "
                    "and run drift_report again."
                )
            current, label = (
                scored_rows(predictions, features) if scored_keys else (pl.DataFrame(), "")
            )
            fallback_rows = (
                predictions.filter(pl.col("source") != "model").height if predictions.height else 0
            )
            if current.height == 0:
                context.add_asset_metadata(
                    {
                        "scored_rows": 0,
                        "fallback_rows": fallback_rows,
                        "snapshots_with_predictions": predictions.get_column(
                            "snapshot_at"
                        ).n_unique()
                        if predictions.height
                        else 0,
                        "note": "nothing scored by the model in this hour: no drift to measure",
                    },
                    partition_key=key,
                )
                verdicts = {
                    kind: drift_verdict(pl.DataFrame(schema=DRIFT_SCHEMA), kind, thresholds)
                    for kind in ("feature", "prediction")
                }
            else:
                versions = parse_serving_label(label) or _champions(mlflow_tracking, prefix, where)
                samples = {}
                for target, version in versions.items():
                    if (target, version) not in references:
                        try:
                            references[(target, version)] = load_reference(
                                mlflow_tracking.client(), lake, prefix, target, version
                            )
                        except ReferenceMissing as exc:
                            raise dg.Failure(description=f"{where}: {exc}") from exc
                    samples[target] = references[(target, version)]
                current = mask_partial_windows(current, parts.cadence_minutes)
                reference = mask_partial_windows(
                    matching_reference(combine_references(samples), current)
                )
                if reference.height == 0:
                    raise dg.Failure(
                        description=f"{where}: the reference of {label} has no rows at local "
                        f"hour(s) {current.get_column(STRATUM).unique().to_list()} (trained on "
                        "too short a window?); retrain on at least a full day."
                    )
                columns = comparable(reference, current, MONITORED_COLUMNS, thresholds.min_rows)
                psi, snapshot = psi_report(reference, current, columns, thresholds.warn_psi)
                table = drift_table(
                    reference, current, psi, thresholds, hour=window.start, label=label
                )
                frames.append(table)
                folder = partition_key_path(drift_key, key).rsplit("/", 1)[0]
                html_key, json_key = f"{folder}/report.html", f"{folder}/report.json"
                lake.write_bytes(html_key, snapshot.get_html_str(as_iframe=False).encode())
                lake.write_bytes(json_key, snapshot.json().encode())
                verdicts = {
                    kind: drift_verdict(table, kind, thresholds)
                    for kind in ("feature", "prediction")
                }
                context.add_asset_metadata(
                    {
                        "psi": _psi_table(table),
                        "report_html": _file_metadata(lake, html_key),
                        "report_json": _file_metadata(lake, json_key),
                        "model_version": label,
                        "scored_rows": current.height,
                        "fallback_rows": fallback_rows,
                        "reference_rows": reference.height,
                        "worst_feature": verdicts["feature"].worst_column or "",
                        "worst_feature_psi": verdicts["feature"].worst_psi,
                        "worst_prediction_psi": verdicts["prediction"].worst_psi,
                        "not_compared": [c for c in MONITORED_COLUMNS if c not in columns],
                    },
                    partition_key=key,
                )
                context.log.info(
                    f"{where}: {label}, {current.height} scored rows vs {reference.height} "
                    f"reference rows; worst feature {verdicts['feature'].worst_column} "
                    f"{verdicts['feature'].worst_psi}, worst prediction "
                    f"{verdicts['prediction'].worst_column} {verdicts['prediction'].worst_psi}"
                )
            results[key] = [
                RuleOutcome(
                    f"{kind}_drift",
                    v.passed,
                    v.severity,
                    v.worst_psi,
                    thresholds.fail_psi
                    if v.severity == dg.AssetCheckSeverity.ERROR
                    else thresholds.warn_psi,
                    v.description,
                    {
                        "worst": v.worst_column or "",
                        "drifted": v.drifted,
                        "warn_psi": thresholds.warn_psi,
                        "fail_psi": thresholds.fail_psi,
                        "model_version": label,
                        "scored_rows": current.height,
                    },
                )
                for kind, v in verdicts.items()
            ]
        frame = pl.concat(frames) if frames else pl.DataFrame(schema=DRIFT_SCHEMA)
        yield dg.Output(frame, metadata={"hours_compared": len(frames)})
        yield from partition_check_results(context, drift_key, results)

    return drift_report


def _champions(tracking: MlflowTracking, city: str, where: str) -> dict[str, str]:
    """Fallback when the predictions' label names no registered versions: the champion
    alias of each target."""
    from bikeshare_assets.registry.registry import CHAMPION, alias_version, registered_model_name

    client = tracking.client()
    versions = {}
    for target in TARGETS:
        champion = alias_version(client, registered_model_name(city, target), CHAMPION)
        if champion is None:
            raise dg.Failure(
                description=f"{where}: the scored rows name no registered version and "
                f"{registered_model_name(city, target)} has no champion; register one first "
                f"(materialize {city}/stockout_model and {city}/registered_model_version)."
            )
        versions[target] = str(champion.version)
    return versions
