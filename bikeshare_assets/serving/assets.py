"""model_endpoint (daily) and stockout_predictions (every snapshot)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl

from bikeshare_assets.cities import City
from bikeshare_assets.features.store import partition_keys_between, read_partitions
from bikeshare_assets.ingest.contracts import RuleOutcome
from bikeshare_assets.partition_checks import check_specs, partition_check_results
from bikeshare_assets.partitions import CityPartitions
from bikeshare_assets.registry.registry import served_training_end
from bikeshare_assets.serving.client import EndpointError, Transport, score
from bikeshare_assets.serving.deploy import DeploymentRefused
from bikeshare_assets.serving.predict import PREDICTION_SCHEMA, predict_snapshot
from bikeshare_assets.serving.resources import ModelEndpoint
from bikeshare_assets.storage import PARTITION_COLUMN_METADATA, LakeStorage
from bikeshare_assets.training.tracking import MlflowTracking

BATCH_SUCCESS_MIN = 0.99
SAMPLE_LATENCY_BUDGET_MS = 1000.0

ENDPOINT_SCHEMA = {
    "day": pl.String(),
    "kind": pl.String(),
    "address": pl.String(),
    "model_version": pl.String(),
    "serving_model_uri": pl.String(),
    "deployed_at": pl.Datetime("us", "UTC"),
    "sample_latency_ms": pl.Float64(),
}


def sample_features(
    lake: LakeStorage, city: City, parts: CityPartitions, day: dg.TimeWindow
) -> pl.DataFrame:
    """The newest snapshot of features up to the end of the day: the health check's request."""
    keys = partition_keys_between(parts.snapshots, day.end - timedelta(days=1), day.end)
    for key in reversed(keys):
        frame, _ = read_partitions(
            lake, dg.AssetKey([city.key, "station_features"]), [key], missing_ok=True
        )
        if frame.height:
            return frame
    raise ValueError(
        f"{city.key}/model_endpoint: no station_features in the day before {day.end}; materialize "
        f"{city.key}/station_features first (the deploy's health check sends a real snapshot)."
    )


def endpoint_answers(
    transport: Transport | None,
    sample: pl.DataFrame,
    expected_version: str,
    timeout_s: float,
    budget_ms: float = SAMPLE_LATENCY_BUDGET_MS,
) -> dg.AssetCheckResult:
    """One real /invocations of a full snapshot against the live endpoint, timed here: it
    passes only if every station is scored, by the deployed version, within the budget. No
    answer (nothing serving, an error, a malformed body) is a failure, never a pass."""
    metadata: dict[str, object] = {"sample_rows": sample.height, "budget_ms": budget_ms}
    if transport is None:
        return dg.AssetCheckResult(
            check_name="endpoint_answers",
            passed=False,
            metadata=metadata,
            description="No endpoint is serving after the deploy: nothing answered the sample.",
        )
    try:
        scored = score(transport, sample, timeout_s)
    except EndpointError as exc:
        return dg.AssetCheckResult(
            check_name="endpoint_answers",
            passed=False,
            metadata={**metadata, "error_kind": exc.kind, "error": str(exc)[:500]},
            description=f"The sample /invocations got no usable answer: {exc}",
        )
    versions = sorted(set(scored.frame.get_column("model_version").to_list()))
    latency = round(scored.latency_ms, 2)
    problems = []
    if versions != [expected_version]:
        problems.append(f"answered by {versions}, expected {expected_version}")
    if latency > budget_ms:
        problems.append(f"took {latency:.0f} ms, budget {budget_ms:.0f} ms")
    return dg.AssetCheckResult(
        check_name="endpoint_answers",
        passed=not problems,
        metadata={**metadata, "sample_latency_ms": latency, "model_versions": versions},
        description=(
            f"{sample.height} stations scored by {expected_version} in {latency:.0f} ms."
            if not problems
            else "The sample /invocations " + "; ".join(problems) + "."
        ),
    )


def build_serving_assets(city: City, parts: CityPartitions) -> list[dg.AssetsDefinition]:
    prefix = city.key
    endpoint_key = dg.AssetKey([prefix, "model_endpoint"])
    predictions_key = dg.AssetKey([prefix, "stockout_predictions"])

    @dg.asset(
        key=endpoint_key,
        partitions_def=parts.days,
        deps=[dg.AssetDep([prefix, "registered_model_version"])],
        check_specs=[
            dg.AssetCheckSpec(
                "endpoint_answers",
                asset=endpoint_key,
                partitions_def=parts.days,
                description="The endpoint answered /ping and a full-snapshot /invocations within "
                f"{SAMPLE_LATENCY_BUDGET_MS:.0f} ms with the deployed model version.",
            )
        ],
        group_name=f"{prefix}_serving",
        kinds={"mlflow", "sagemaker"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "serving"},
        description=f"{city.display_name}: both targets' champions bundled into one MLflow model "
        "and served behind an endpoint — a supervised local scoring process (blue/green) or a "
        "SageMaker endpoint. A version that fails its health check is refused and the previous "
        "one keeps serving.",
    )
    def model_endpoint(
        context: dg.AssetExecutionContext,
        lake: LakeStorage,
        mlflow_tracking: MlflowTracking,
        endpoint: ModelEndpoint,
    ):
        # MLflow and LightGBM: imported when a bundle is built, not when definitions load.
        from bikeshare_assets.serving.bundle import build_serving_bundle

        sample = sample_features(lake, city, parts, context.partition_time_window)
        bundle = build_serving_bundle(mlflow_tracking, prefix, sample, context)
        try:
            deployed = endpoint.deploy(prefix, bundle.model_uri, bundle.label, sample)
        except DeploymentRefused as exc:
            raise dg.Failure(
                description=f"{prefix}/model_endpoint {context.partition_key}: {exc}",
                metadata={"refused_version": bundle.label},
            ) from exc
        context.log.info(f"{prefix}: serving {bundle.label} at {deployed['address']}")
        if deployed.get("notes"):
            context.log.warning(
                f"{prefix}/model_endpoint {context.partition_key}: {deployed['notes']}"
            )
        # Measured here, on whatever now serves (the deploy's own health check may have been
        # skipped: the same version already live, or a SageMaker endpoint it cannot time).
        answers = endpoint_answers(
            endpoint.transport(prefix),
            sample,
            bundle.label,
            max(endpoint.request_timeout_s, SAMPLE_LATENCY_BUDGET_MS / 1000 * 5),
        )
        latency = answers.metadata.get("sample_latency_ms")
        frame = pl.DataFrame(
            [
                {
                    "day": context.partition_key,
                    "kind": deployed["kind"],
                    "address": deployed["address"],
                    "model_version": bundle.label,
                    "serving_model_uri": bundle.model_uri,
                    "deployed_at": datetime.now(UTC),
                    "sample_latency_ms": getattr(latency, "value", None),
                }
            ],
            schema=ENDPOINT_SCHEMA,
        )
        yield dg.Output(frame, metadata={k: str(v) for k, v in deployed.items()})
        yield answers

    @dg.asset(
        key=predictions_key,
        partitions_def=parts.snapshots,
        ins={"features": dg.AssetIn(key=[prefix, "station_features"])},
        deps=[dg.AssetDep(endpoint_key)],
        check_specs=check_specs(
            predictions_key,
            ["batch_success"],
            parts.snapshots,
            {
                "batch_success": ">= 99% of the snapshot's stations scored by the model; a fallback to "
                "the persistence baseline fails this check and is flagged in every row."
            },
        ),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=f"{prefix}_serving",
        kinds={"polars", "parquet"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "serving"},
        metadata={PARTITION_COLUMN_METADATA: "snapshot_at"},
        description=f"{city.display_name}: per station at snapshot t, P(stockout_bikes), "
        "P(stockout_docks), flags at the registered thresholds, model version and latency — one "
        "batch call to the endpoint per snapshot; `source=fallback` when the endpoint failed.",
    )
    def stockout_predictions(
        context: dg.AssetExecutionContext,
        endpoint: ModelEndpoint,
        features: pl.DataFrame,
        mlflow_tracking: MlflowTracking,
    ):
        transport, unavailable = endpoint.connect(prefix)
        if transport is None:
            context.log.warning(
                f"{prefix}/stockout_predictions: no live endpoint ({unavailable}) — every "
                "snapshot falls back to persistence"
            )
        by_time = features.partition_by("snapshot_at", as_dict=True) if features.height else {}
        pdef = context.assets_def.partitions_def
        frames, latencies, outcomes = [], [], {}
        fallbacks = 0
        training_ends: dict[str, datetime | None] = {}
        for key in context.partition_keys:
            window = pdef.time_window_for_partition_key(key)  # type: ignore[union-attr]
            part = by_time.get((window.start,))
            if part is None:
                context.add_asset_metadata({"rows": 0, "gap": True}, partition_key=key)
                continue
            result = predict_snapshot(
                part, transport, endpoint.request_timeout_s, city.stockout_threshold, unavailable
            )
            if result.source == "model":
                # Was this snapshot in the served champions' training data?
                label = result.frame.get_column("model_version")[0]
                if label not in training_ends:
                    training_ends[label] = served_training_end(
                        mlflow_tracking.client(), prefix, label
                    )
                end = training_ends[label]
                if end is not None:
                    result.frame = result.frame.with_columns(
                        seen_in_training=pl.col("snapshot_at") <= end
                    )
            seen = result.frame.get_column("seen_in_training")[0]
            frames.append(result.frame)
            if result.latency_ms is not None:
                latencies.append(result.latency_ms)
            fallbacks += result.source == "fallback"
            success = 1.0 if result.source == "model" else 0.0
            context.add_asset_metadata(
                {
                    "rows": result.frame.height,
                    "gap": False,
                    "source": result.source,
                    "batch_success": success,
                    "fallback_rate": 1.0 - success,
                    "latency_ms": round(result.latency_ms, 2) if result.latency_ms else None,
                    "model_version": result.frame.get_column("model_version")[0],
                    "seen_in_training": "unknown" if seen is None else str(seen).lower(),
                    "error": result.error or "",
                },
                partition_key=key,
            )
            if result.error:
                context.log.warning(
                    f"{prefix}/stockout_predictions {key}: fallback to persistence ({result.error})"
                )
            outcomes[key] = [
                RuleOutcome(
                    "batch_success",
                    success >= BATCH_SUCCESS_MIN,
                    dg.AssetCheckSeverity.WARN,
                    success,
                    BATCH_SUCCESS_MIN,
                    "scored by the model"
                    if success
                    else f"fallback to persistence: {result.error}",
                    {"source": result.source},
                )
            ]
        frame = pl.concat(frames) if frames else pl.DataFrame(schema=PREDICTION_SCHEMA)
        scored = len(outcomes)
        summary = {
            "snapshots_scored": scored,
            "batch_success_rate": (scored - fallbacks) / scored if scored else None,
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        }
        context.log.info(f"{prefix}/stockout_predictions: {summary}")
        yield dg.Output(frame, metadata={k: v for k, v in summary.items() if v is not None})
        yield from partition_check_results(context, predictions_key, outcomes)

    return [model_endpoint, stockout_predictions]
