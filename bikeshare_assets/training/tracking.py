"""MLflow tracking as Dagster resources.

`MlflowTracking` (training, registry, serving): dagster-mlflow's `mlflow_tracking` opens one
MLflow run per *Dagster run* and is configured by run config; training opens one MLflow run
per *target* inside one step, and Definitions choose the tracking store per deployment with
typed config. So this small ConfigurableResource points MLflow at the right tracking and
registry URIs, creates experiments under the project's artifact root, and tags every MLflow
run with the Dagster run id, asset and partition that produced it.

Where one MLflow run per Dagster run *is* the model (`model_quality`'s daily metrics),
dagster-mlflow's own resource and hook are used: see the end of this module.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # MLflow takes ~1.5 s to import: loaded when the resource is used
    import mlflow
    from mlflow.tracking import MlflowClient


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str
    registry_uri: str | None = None
    artifact_root: str | None = None  # where new experiments store artifacts (local default)

    def setup(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)

    def client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        self.setup()
        return MlflowClient(self.tracking_uri, self.registry_uri or self.tracking_uri)

    def experiment(self, name: str) -> str:
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location)

    @contextmanager
    def start_run(
        self,
        experiment: str,
        run_name: str,
        dagster_context: dg.AssetExecutionContext | None = None,
        tags: dict[str, str] | None = None,
    ) -> Iterator[mlflow.ActiveRun]:
        import mlflow

        experiment_id = self.experiment(experiment)
        all_tags = dict(tags or {})
        if dagster_context is not None:
            all_tags["dagster.run_id"] = dagster_context.run.run_id
            all_tags["dagster.asset_key"] = dagster_context.asset_key.to_user_string()
            if dagster_context.has_partition_key:
                all_tags["dagster.partition_key"] = dagster_context.partition_key
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags) as run:
            yield run


class OptunaStudies(dg.ConfigurableResource):
    """Where the hyper-parameter searches are kept: one Optuna journal file per study under
    `root` (`$BIKESHARE_HOME/optuna` by default), so a study can be reopened with
    `optuna.load_study(storage=JournalStorage(JournalFileBackend(path)), study_name=...)`.
    Each training run also logs its journal and a trials table to MLflow."""

    root: str

    def journal(self, city: str, study_name: str) -> Path:
        return Path(self.root) / city / f"{study_name}.journal"


# --------------------------------------------------------------------------------------
# dagster-mlflow, where it is the right tool: metrics that belong to a *Dagster run*.
#
# `model_quality` logs each day's live quality (PR-AUC@24h, F1, Brier, calibration error,
# fallback rate) to MLflow so the MLflow UI shows it over time next to the training runs.
# That is exactly dagster-mlflow's model: `mlflow_tracking` opens one MLflow run per Dagster
# run (shared by all its steps, found again by its `dagster_run_id` tag even from another
# step process) and `end_mlflow_on_run_finished` ends it when the job's last step finishes,
# FAILED if a step failed. Training keeps `MlflowTracking.start_run` above: one MLflow run
# per *target* inside one step is not what dagster-mlflow models.
#
# Both are wrapped so that dagster-mlflow, which imports MLflow (~1.5 s), is imported when a
# run uses them, not when the definitions load.

QUALITY_EXPERIMENT = "bikeshare/model_quality"


def mlflow_run_per_dagster_run(
    tracking: MlflowTracking, experiment_name: str = QUALITY_EXPERIMENT
) -> dg.ResourceDefinition:
    """dagster-mlflow's `mlflow_tracking` resource (key `mlflow`), pointed at this
    deployment's tracking server and experiment."""

    def init(context: dg.InitResourceContext):
        from dagster_mlflow import mlflow_tracking

        tracking.experiment(experiment_name)  # created under the project's artifact root
        config = {"experiment_name": experiment_name, "mlflow_tracking_uri": tracking.tracking_uri}
        made = mlflow_tracking.resource_fn(context.replace_config(config))
        if inspect.isgenerator(made):  # yields the MlFlow object, cleans up after the step
            yield from made
        else:
            yield made

    return dg.ResourceDefinition(
        resource_fn=init,
        description=f"dagster-mlflow's mlflow_tracking: one MLflow run per Dagster run in "
        f"experiment {experiment_name}",
    )


def _end_mlflow_on_run_finished(context, event_list):
    from dagster_mlflow import end_mlflow_on_run_finished

    return end_mlflow_on_run_finished.hook_fn(context, event_list)


# dagster-mlflow's hook of the same name; attach it to every asset that uses `mlflow`.
END_MLFLOW_ON_RUN_FINISHED = dg.HookDefinition(
    name="end_mlflow_on_run_finished",
    hook_fn=_end_mlflow_on_run_finished,
    required_resource_keys={"mlflow"},
)
