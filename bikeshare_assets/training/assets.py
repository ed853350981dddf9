"""stockout_model (daily): one LightGBM classifier per target on the trailing days of
station_features ⋈ stockout_labels, tracked in MLflow."""

import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from bikeshare_assets.cities import City
from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.features.store import partition_keys_between, read_partitions
from bikeshare_assets.partitions import CityPartitions
from bikeshare_assets.registry.gate import DEFAULT_THRESHOLDS, PromotionGate
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets.training.reports import model_card, save_figures
from bikeshare_assets.training.tracking import MlflowTracking, OptunaStudies

if TYPE_CHECKING:
    from bikeshare_assets.training.train import TrainedTarget

# training.train (LightGBM, Optuna, scikit-learn) and training.pyfunc (MLflow) are imported in
# the functions that train: loading the definitions must not pay seconds for them.

MODEL_SUMMARY_SCHEMA = {
    "day": pl.String(),
    "target": pl.String(),
    "mlflow_run_id": pl.String(),
    "model_uri": pl.String(),
    "decision_threshold": pl.Float64(),
    "test_pr_auc": pl.Float64(),
    "test_f1": pl.Float64(),
    "test_brier": pl.Float64(),
    "test_calibration_error": pl.Float64(),
    "test_pr_auc_new": pl.Float64(),
    "test_precision_at_20_new": pl.Float64(),
    "overfit_gap": pl.Float64(),
    "baseline_test_pr_auc": pl.Float64(),
    "baseline_test_f1": pl.Float64(),
    "baseline_calibrated_test_brier": pl.Float64(),
    "baseline_test_pr_auc_new": pl.Float64(),
    "baseline_test_precision_at_20_new": pl.Float64(),
    "test_rows": pl.Int64(),
    "n_trials": pl.Int64(),
    "training_data_end": pl.String(),  # the newest snapshot the model was fit on
    "test_start": pl.String(),
    "test_end": pl.String(),
}


class TrainingConfig(dg.Config):
    """Knobs of a training run (launchpad / `--config` / run_config)."""

    trailing_days: int = 10
    test_days: float = 2.0
    validation_days: float = 1.5
    # completed + pruned; the demo passes 8. Equal to training.train.TuningConfig.n_trials (a
    # test pins it): that module is imported only when a run trains.
    n_trials: int = 30
    seed: int = 42
    num_threads: int = 0  # LightGBM threads; 0 = all cores


def experiment_name(city: City) -> str:
    return f"bikeshare/{city.key}/stockout_model"


def load_training_frame(
    lake: LakeStorage, city: City, parts: CityPartitions, day: dg.TimeWindow, trailing_days: int
) -> pl.DataFrame:
    from bikeshare_assets.training.train import training_frame

    start = day.end - timedelta(days=trailing_days)
    keys = partition_keys_between(parts.snapshots, start, day.end)
    features, missing = read_partitions(
        lake, dg.AssetKey([city.key, "station_features"]), keys, missing_ok=True
    )
    labels, _ = read_partitions(
        lake, dg.AssetKey([city.key, "stockout_labels"]), keys, missing_ok=True
    )
    if features.height == 0 or labels.height == 0:
        raise ValueError(
            f"{city.key}/stockout_model: no features or labels between {start} and {day.end} "
            f"({len(missing)} of {len(keys)} feature partitions missing). Materialize "
            f"{city.key}/station_features and {city.key}/stockout_labels for that range first."
        )
    return training_frame(features, labels)


def summary_row(day: str, trained: "TrainedTarget", split, run_id: str, model_uri: str) -> dict:
    """One row of the stockout_model output (MODEL_SUMMARY_SCHEMA)."""
    m = trained.metrics
    return {
        "day": day,
        "target": trained.target,
        "mlflow_run_id": run_id,
        "model_uri": model_uri,
        **{k: m[k] for k in MODEL_SUMMARY_SCHEMA if k in m},
        "test_rows": int(m["test_rows"]),
        "n_trials": trained.n_trials_completed,
        "training_data_end": trained.training_data_end,
        "test_start": split.boundaries["test_start"],
        "test_end": split.boundaries["end"],
    }


def build_training_assets(city: City, parts: CityPartitions) -> list[dg.AssetsDefinition]:
    prefix = city.key
    model_key = dg.AssetKey([prefix, "stockout_model"])

    @dg.asset(
        key=model_key,
        partitions_def=parts.days,
        deps=[dg.AssetDep([prefix, "station_features"]), dg.AssetDep([prefix, "stockout_labels"])],
        check_specs=[
            dg.AssetCheckSpec(
                "beats_persistence",
                asset=model_key,
                partitions_def=parts.days,
                description="On the test rows: PR-AUC and F1 above persistence, PR-AUC on new "
                "stockouts (stations fine at t) above lowest-count-first, Brier below "
                "calibrated persistence.",
            ),
            dg.AssetCheckSpec(
                "overfit_gap",
                asset=model_key,
                partitions_def=parts.days,
                description="Train minus validation PR-AUC below the promotion gate's "
                f"max_overfit_gap (default {DEFAULT_THRESHOLDS.max_overfit_gap:.2f}).",
            ),
        ],
        group_name=f"{prefix}_training",
        kinds={"lightgbm", "optuna", "mlflow"},
        owners=["team:ml-platform"],
        tags={"city": prefix, "layer": "model"},
        description=f"{city.display_name}: one LightGBM classifier per target "
        f"({', '.join(TARGETS)}), Optuna-tuned on the trailing days of features ⋈ labels with a "
        "time-ordered split; MLflow run per target with metrics, figures, model card and a "
        "probability-returning pyfunc model.",
    )
    def stockout_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        lake: LakeStorage,
        mlflow_tracking: MlflowTracking,
        optuna_studies: OptunaStudies,
        promotion_gate: PromotionGate,
    ):
        from bikeshare_assets.training.train import (
            SplitConfig,
            TuningConfig,
            time_split,
            train_target,
        )

        day = context.partition_time_window
        max_gap = promotion_gate.max_overfit_gap
        frame = load_training_frame(lake, city, parts, day, config.trailing_days)
        split = time_split(frame, SplitConfig(config.test_days, config.validation_days))
        context.log.info(
            f"training rows: train {split.train.height}, validation {split.validation.height}, "
            f"test {split.test.height} ({split.boundaries})"
        )
        rows = []
        for target in TARGETS:
            started = time.perf_counter()
            study_name = f"{prefix}-{target}-{context.partition_key}-{context.run.run_id[:8]}"
            trained = train_target(
                split,
                target,
                city.stockout_threshold,
                TuningConfig(
                    n_trials=config.n_trials,
                    seed=config.seed,
                    num_threads=config.num_threads,
                    max_overfit_gap=max_gap,
                    journal_path=optuna_studies.journal(prefix, study_name),
                    study_name=study_name,
                ),
            )
            run_id, model_uri = _log_to_mlflow(context, mlflow_tracking, city, split, trained)
            m = trained.metrics
            context.log.info(
                f"{target}: test PR-AUC {m['test_pr_auc']:.3f} (persistence "
                f"{m['baseline_test_pr_auc']:.3f}), new stockouts {m['test_pr_auc_new']:.3f} "
                f"({m['baseline_test_pr_auc_new']:.3f}), Brier {m['test_brier']:.4f} (calibrated "
                f"persistence {m['baseline_calibrated_test_brier']:.4f}), F1 {m['test_f1']:.3f}, "
                f"overfit gap {m['overfit_gap']:.3f}, {trained.n_trials_completed} trials "
                f"completed, {time.perf_counter() - started:.0f}s, MLflow run {run_id}"
            )
            rows.append(summary_row(context.partition_key, trained, split, run_id, model_uri))
        summary = pl.DataFrame(rows, schema=MODEL_SUMMARY_SCHEMA)
        yield dg.Output(
            summary,
            metadata={
                "summary": dg.MetadataValue.md(_markdown(summary)),
                **{f"{r['target']}_mlflow_run": r["mlflow_run_id"] for r in rows},
            },
        )
        beats = {
            r["target"]: r["test_pr_auc"] > r["baseline_test_pr_auc"]
            and r["test_f1"] > r["baseline_test_f1"]
            and r["test_pr_auc_new"] > r["baseline_test_pr_auc_new"]
            and r["test_brier"] < r["baseline_calibrated_test_brier"]
            for r in rows
        }
        yield dg.AssetCheckResult(
            check_name="beats_persistence",
            passed=all(beats.values()),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={t: beats[t] for t in beats},
        )
        gaps = {r["target"]: round(r["overfit_gap"], 4) for r in rows}
        yield dg.AssetCheckResult(
            check_name="overfit_gap",
            passed=all(g < max_gap for g in gaps.values()),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={**gaps, "max_overfit_gap": max_gap},
        )

    return [stockout_model]


def _markdown(summary: pl.DataFrame) -> str:
    lines = [
        "| target | PR-AUC | persistence | PR-AUC new | lowest count | P@20 new | lowest count "
        "| F1 | persistence | Brier | calibrated persistence |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.iter_rows(named=True):
        lines.append(
            f"| {r['target']} | {r['test_pr_auc']:.3f} | {r['baseline_test_pr_auc']:.3f} | "
            f"{r['test_pr_auc_new']:.3f} | {r['baseline_test_pr_auc_new']:.3f} | "
            f"{r['test_precision_at_20_new']:.3f} | {r['baseline_test_precision_at_20_new']:.3f} | "
            f"{r['test_f1']:.3f} | {r['baseline_test_f1']:.3f} | {r['test_brier']:.4f} | "
            f"{r['baseline_calibrated_test_brier']:.4f} |"
        )
    return "\n".join(lines)


def _log_to_mlflow(
    context, tracking: MlflowTracking, city: City, split, trained
) -> tuple[str, str]:
    """One MLflow run per target: params, metrics, figures, model card, test rows, drift
    reference sample, model."""
    import mlflow
    from mlflow.models import infer_signature

    from bikeshare_assets.training.pyfunc import log_stockout_model, write_model_artifacts
    from bikeshare_assets.training.train import persistence_scores

    with (
        tempfile.TemporaryDirectory() as tmp,
        tracking.start_run(
            experiment_name(city),
            f"{city.key}-{trained.target}-{context.partition_key}",
            context,
            tags={"city": city.key, "target": trained.target},
        ) as run,
    ):
        tmpdir = Path(tmp)
        mlflow.log_params(
            {
                **trained.params,
                "target": trained.target,
                "n_trials": trained.n_trials_completed,
                **split.boundaries,
                "training_data_end": trained.training_data_end,
                "fit_protocol": "chosen on validation, refit on train + validation",
                **_study_params(trained),
            }
        )
        mlflow.log_metrics(trained.metrics)
        _log_study(trained, tmpdir)
        save_figures(
            tmpdir / "figures",
            trained.target,
            trained.test_labels,
            trained.test_scores,
            persistence_scores(split.test, trained.target),
            trained.threshold,
            trained.feature_importance,
            calibrated_baseline=trained.baseline_calibrated_scores,
        )
        mlflow.log_artifacts(str(tmpdir / "figures"), artifact_path="figures")
        card = model_card(
            city=city.key,
            target=trained.target,
            metrics=trained.metrics,
            params=trained.params,
            boundaries={**split.boundaries, "training_data_end": trained.training_data_end},
            importance=trained.feature_importance,
            run_id=run.info.run_id,
        )
        mlflow.log_text(card, "model_card.md")
        # The exact rows the model was tested on: the promotion gate scores the champion on them.
        test_rows = tmpdir / "test_rows.parquet"
        split.test.write_parquet(test_rows)
        mlflow.log_artifact(str(test_rows), artifact_path="evaluation")
        artifacts = write_model_artifacts(
            tmpdir / "model", {trained.target: trained.booster}, {trained.target: trained.threshold}
        )
        log_reference_sample(
            pl.concat([split.train, split.validation], how="diagonal_relaxed"),
            trained.target,
            artifacts,
            tmpdir,
        )
        example = (
            split.test.head(5)
            .select(FEATURE_COLUMNS)
            .with_columns(pl.all().cast(pl.Float64))
            .to_pandas()
        )
        info = log_stockout_model(
            artifacts,
            input_example=example,
            signature=infer_signature(example, _predict_example(artifacts, example)),
        )
        return run.info.run_id, info.model_uri


def log_reference_sample(
    fit_rows: pl.DataFrame, target: str, artifacts: dict[str, str], tmpdir: Path
) -> None:
    """The drift reference of this model, logged to the active MLflow run: a seeded sample of
    its fit rows (train + validation) with its own P(target) on them, scored by the class
    that serves (monitoring/drift.py; registration copies it into the lake per version)."""
    import mlflow

    from bikeshare_assets.monitoring.drift import REFERENCE_ARTIFACT, reference_sample
    from bikeshare_assets.training.pyfunc import StockoutModel

    sample = reference_sample(fit_rows)
    x = sample.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
    p = StockoutModel.from_artifacts(artifacts).predict(None, x)[f"p_{target}"]
    path = tmpdir / REFERENCE_ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.with_columns(pl.Series(f"p_{target}", p, dtype=pl.Float64)).write_parquet(path)
    mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))


def _study_params(trained: "TrainedTarget") -> dict[str, str]:
    if trained.study is None:
        return {}
    return {
        "optuna_study": trained.study.study_name,
        "optuna_journal": trained.journal_path or "in memory",
    }


def _log_study(trained: "TrainedTarget", tmpdir: Path) -> None:
    """The Optuna study in MLflow: every trial (state, value, parameters, overfit gap,
    constraint) as a table, and the journal file itself when the study was kept in one."""
    import mlflow

    study = trained.study
    if study is None:
        return
    table = tmpdir / "optuna_trials.csv"
    study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs")).assign(
        constraint=[t.constraints.get("overfit_gap") for t in study.trials]
    ).to_csv(table, index=False)
    mlflow.log_artifact(str(table), artifact_path="optuna")
    journal = _study_params(trained).get("optuna_journal", "")
    if journal and Path(journal).exists():
        mlflow.log_artifact(journal, artifact_path="optuna")


def _predict_example(artifacts: dict[str, str], example):
    """Output example for the signature, from the same class that will serve."""
    from bikeshare_assets.training.pyfunc import StockoutModel

    return StockoutModel.from_artifacts(artifacts).predict(None, example)
