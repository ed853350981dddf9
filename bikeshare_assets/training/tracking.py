"""MLflow tracking as a Dagster resource.

dagster-mlflow's `mlflow_tracking` is a legacy (non-Pythonic) resource that opens one MLflow
run per Dagster step from run config; we train one model per target inside one step and want
typed config that Definitions can choose per deployment, so this small ConfigurableResource
does the same job: point MLflow at the right store and tag every MLflow run with the Dagster
run id, asset and partition that produced it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import mlflow
from mlflow.tracking import MlflowClient


class MlflowTracking(dg.ConfigurableResource):
    tracking_uri: str
    registry_uri: str | None = None
    artifact_root: str | None = None  # where new experiments store artifacts (local default)

    def setup(self) -> None:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)

    def client(self) -> MlflowClient:
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
