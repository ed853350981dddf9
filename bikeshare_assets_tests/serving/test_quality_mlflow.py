"""model_quality's daily metrics reach MLflow through dagster-mlflow: one MLflow run per
Dagster run (its `mlflow_tracking` resource), ended by its `end_mlflow_on_run_finished` hook —
FINISHED when the step succeeded, FAILED when it failed. Real Dagster run, real MLflow store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
from mlflow.tracking import MlflowClient

from bikeshare_assets.monitoring.quality import join_outcomes
from bikeshare_assets.partitions import materialize_range
from bikeshare_assets.storage import LakeStorage, partition_key_path
from bikeshare_assets.training.tracking import QUALITY_EXPERIMENT
from bikeshare_assets_tests.conftest import build_defs, pkey, settings_for, write_cities
from bikeshare_assets_tests.serving.champions import SIM_CITY, simulate_table
from bikeshare_assets_tests.serving.test_quality import T0, T1, labels, predictions

DAY = "2025-09-08"


def _setup(home: Path, tmp_path: Path):
    cities = write_cities(tmp_path / "cities.toml", key=SIM_CITY, simulate=simulate_table())
    settings = settings_for(home, cities, BIKESHARE_SOURCE="simulate")
    client = MlflowClient(settings.mlflow_tracking_uri)
    return build_defs(settings), LakeStorage(root=settings.storage_root), client


def _runs_of(client: MlflowClient, dagster_run_id: str):
    experiment = client.get_experiment_by_name(QUALITY_EXPERIMENT)
    assert experiment is not None, "model_quality created no MLflow experiment"
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.dagster_run_id = '{dagster_run_id}'"
    )


def test_model_quality_logs_the_days_metrics_to_one_mlflow_run_per_dagster_run(
    home: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    defs, lake, client = _setup(home, tmp_path)
    for t, flags in ((T0, [True, False, True, False]), (T1, [False, False, True, True])):
        outcomes = join_outcomes(
            predictions(
                [
                    (t, s, 0.8 if f else 0.1, 0.2, f, False, "model")
                    for s, f in zip("ABCD", flags, strict=True)
                ]
            ),
            labels([(t, s, f, False) for s, f in zip("ABCD", flags, strict=True)]),
        )
        lake.write_parquet(
            partition_key_path(dg.AssetKey([SIM_CITY, "prediction_outcomes"]), pkey(t)), outcomes
        )

    result = materialize_range(defs, instance, f"{SIM_CITY}/model_quality", DAY)

    assert result.success
    quality = lake.read_parquet(partition_key_path(dg.AssetKey([SIM_CITY, "model_quality"]), DAY))
    (run,) = _runs_of(client, result.run_id)
    assert run.info.status == "FINISHED"  # ended by end_mlflow_on_run_finished
    assert run.data.tags["city"] == SIM_CITY and run.data.tags[f"{SIM_CITY}.day"] == DAY
    bikes = quality.filter(pl.col("target") == "stockout_bikes").row(0, named=True)
    assert bikes["pr_auc_24h"] == 1.0  # a perfect ranking on these rows
    for name in ("rows", "pr_auc_24h", "f1_24h", "brier_24h", "fallback_rate"):
        assert run.data.metrics[f"{SIM_CITY}.stockout_bikes.{name}"] == float(bikes[name])


def test_a_failed_model_quality_step_marks_its_mlflow_run_failed(
    home: Path, tmp_path: Path, instance: dg.DagsterInstance
):
    defs, _, client = _setup(home, tmp_path)  # no outcomes at all: the step fails

    result = materialize_range(defs, instance, f"{SIM_CITY}/model_quality", DAY)

    assert not result.success
    (run,) = _runs_of(client, result.run_id)
    assert run.info.status == "FAILED"
    assert not [k for k in run.data.metrics if k.startswith(SIM_CITY)]
