"""registered_model_version (daily): every new model is registered as `challenger`; a
blocking promotion gate decides whether `champion` moves."""

import json

import dagster as dg
import polars as pl

from bikeshare_assets.cities import City
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.monitoring.reference import store_reference
from bikeshare_assets.partitions import CityPartitions
from bikeshare_assets.registry.gate import DEFAULT_THRESHOLDS, PromotionGate, evaluate_gate
from bikeshare_assets.registry.registry import (
    CHAMPION,
    alias_version,
    load_test_rows,
    promote,
    register_challenger,
    registered_model_name,
    score_on,
)
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets.training.reports import model_card
from bikeshare_assets.training.tracking import MlflowTracking

REGISTRY_SCHEMA = {
    "day": pl.String(),
    "target": pl.String(),
    "registered_model": pl.String(),
    "version": pl.String(),
    "decision": pl.String(),
    "champion_version": pl.String(),
    "previous_champion": pl.String(),
    "test_pr_auc": pl.Float64(),
    "champion_pr_auc_same_rows": pl.Float64(),
    "gate": pl.String(),
    "model_card": pl.String(),
}


class PromotionConfig(dg.Config):
    """`force` promotes even when a rule fails (recorded as such). The floors are the
    `promotion_gate` resource's, shared with training and model_quality."""

    force: bool = False


ALREADY_CHAMPION = "already champion (this MLflow run was registered before)"
# Run params copied onto each registered version as tags.
TRAINING_WINDOW_TAGS = ("training_data_end", "test_start", "end")


def gate_check_name(target: str) -> str:
    return f"promotion_gate_{target}"


def build_registry_assets(city: City, parts: CityPartitions) -> list[dg.AssetsDefinition]:
    prefix = city.key
    key = dg.AssetKey([prefix, "registered_model_version"])

    @dg.asset(
        key=key,
        partitions_def=parts.days,
        ins={"stockout_model": dg.AssetIn(key=[prefix, "stockout_model"])},
        check_specs=[
            dg.AssetCheckSpec(
                gate_check_name(target),
                asset=key,
                partitions_def=parts.days,
                blocking=True,
                description=f"Promotion gate for {target}: {DEFAULT_THRESHOLDS.describe()} "
                "(defaults of the promotion_gate resource), PR-AUC above persistence overall and "
                "on new stockouts, Brier below calibrated persistence, not worse than the "
                "champion on the same test rows. Blocks deployment when it fails.",
            )
            for target in TARGETS
        ],
        group_name=f"{prefix}_training",
        kinds={"mlflow"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "registry"},
        description=f"{city.display_name}: the day's models in the MLflow registry (one "
        "registered model per target), alias `challenger`; `champion` moves only through the "
        "gate. Roll back with `bikeshare rollback --city <city> --target <target>`.",
    )
    def registered_model_version(
        context: dg.AssetExecutionContext,
        config: PromotionConfig,
        stockout_model: pl.DataFrame,
        mlflow_tracking: MlflowTracking,
        lake: LakeStorage,
        promotion_gate: PromotionGate,
    ):
        client = mlflow_tracking.client()
        thresholds = promotion_gate.thresholds()
        rows, results = [], []
        for model in stockout_model.iter_rows(named=True):
            target = model["target"]
            name = registered_model_name(prefix, target)
            run = client.get_run(model["mlflow_run_id"])
            version = register_challenger(
                client,
                name,
                model["model_uri"],
                {
                    "day": model["day"],
                    "dagster.run_id": context.run.run_id,
                    # What the version has seen: predictions and model_quality compare
                    # scored snapshots with these (seen_in_training).
                    **{k: run.data.params[k] for k in TRAINING_WINDOW_TAGS if k in run.data.params},
                },
                run_id=model["mlflow_run_id"],
            )
            reference = store_reference(
                client, lake, name, str(version.version), model["mlflow_run_id"]
            )
            if reference is None:
                context.log.warning(
                    f"{prefix}/registered_model_version {context.partition_key}: {name} "
                    f"v{version.version} has no drift reference (its MLflow run "
                    f"{model['mlflow_run_id']} logged none); drift_report cannot measure drift "
                    "while it serves. Retrain to get one."
                )
            champion = alias_version(client, name, CHAMPION)
            # Re-materializing a day whose model is already the champion: nothing to compare
            # it with but itself, nothing to promote.
            already_champion = champion is not None and str(champion.version) == str(
                version.version
            )
            rows_for_gate = load_test_rows(model["mlflow_run_id"])
            champion_score = (
                score_on(name, champion.version, rows_for_gate, target)
                if champion is not None and not already_champion
                else None
            )
            metrics = dict(run.data.metrics)
            gate = evaluate_gate(metrics, thresholds, champion_score)
            if already_champion:
                previous, decision = None, ALREADY_CHAMPION
            elif gate.passed or config.force:
                previous = promote(client, name, version.version)
                decision = "promoted" if gate.passed else "promoted (forced past a failing gate)"
            else:
                previous, decision = None, "rejected: champion unchanged"
            after = alias_version(client, name, CHAMPION)
            card = model_card(
                city=prefix,
                target=target,
                metrics=metrics,
                params={k: _num(v) for k, v in run.data.params.items() if k in _PARAMS},
                boundaries={k: run.data.params.get(k, "") for k in _BOUNDARIES},
                importance={},
                run_id=model["mlflow_run_id"],
                version=version.version,
                gate=gate.as_dict(decision),
            )
            client.log_text(model["mlflow_run_id"], card, f"model_card_v{version.version}.md")
            card_uri = lake.write_bytes(f"model_cards/{name}/v{version.version}.md", card.encode())
            context.log.info(
                f"{name} v{version.version}: {decision} (champion now v{after.version if after else '-'})"
            )
            rows.append(
                {
                    "day": model["day"],
                    "target": target,
                    "registered_model": name,
                    "version": version.version,
                    "decision": decision,
                    "champion_version": after.version if after else None,
                    "previous_champion": previous,
                    "test_pr_auc": metrics["test_pr_auc"],
                    "champion_pr_auc_same_rows": champion_score,
                    "gate": json.dumps(gate.as_dict(decision)),
                    "model_card": card_uri,
                }
            )
            results.append(
                dg.AssetCheckResult(
                    check_name=gate_check_name(target),
                    passed=gate.passed,
                    metadata={
                        "registered_model": name,
                        "version": version.version,
                        "decision": decision,
                        "rules": dg.MetadataValue.md(
                            "\n".join(
                                f"- {'✅' if r.passed else '❌'} {r.rule}: {r.value}"
                                for r in gate.rules
                            )
                        ),
                    },
                )
            )
        frame = pl.DataFrame(rows, schema=REGISTRY_SCHEMA)
        yield dg.Output(
            frame,
            metadata={
                f"{r['target']}": f"v{r['version']} {r['decision']}; champion v{r['champion_version']}"
                for r in rows
            },
        )
        yield from results

    return [registered_model_version]


_PARAMS = {
    "learning_rate",
    "num_leaves",
    "min_data_in_leaf",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l2",
    "n_trials",
}
_BOUNDARIES = (
    "train_start",
    "validation_start",
    "test_start",
    "end",
    "embargo_minutes",
    "training_data_end",
)


def _num(value: str):
    try:
        return float(value)
    except ValueError:
        return value
