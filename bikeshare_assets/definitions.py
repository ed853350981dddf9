"""The one code location: every city's asset subgraph, resources chosen by deployment."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from bikeshare_assets.automation.alerts import (
    ALERTS_RESOURCE_KEY,
    build_alert_channel,
    build_alert_sensor,
)
from bikeshare_assets.automation.policies import CityContext, apply_policies, automation_sensors
from bikeshare_assets.automation.schedules import build_live_schedules
from bikeshare_assets.automation.sensors import build_healing_sensors
from bikeshare_assets.cities import SourceMode
from bikeshare_assets.errors import ConfigError
from bikeshare_assets.features.assets import build_feature_assets
from bikeshare_assets.ingest.assets import build_raw_assets
from bikeshare_assets.ingest.resources import FeedSources
from bikeshare_assets.monitoring.assets import build_monitoring_assets
from bikeshare_assets.monitoring.drift import DriftPolicy
from bikeshare_assets.partitions import city_partitions
from bikeshare_assets.registry.assets import build_registry_assets
from bikeshare_assets.registry.gate import PromotionGate
from bikeshare_assets.serving.assets import build_serving_assets
from bikeshare_assets.serving.resources import ModelEndpoint
from bikeshare_assets.settings import Deployment, Settings, get_settings
from bikeshare_assets.storage import LakeStorage, PartitionedParquetIOManager
from bikeshare_assets.training.assets import build_training_assets
from bikeshare_assets.training.tracking import (
    MlflowTracking,
    OptunaStudies,
    mlflow_run_per_dagster_run,
)


def build_resources(settings: Settings) -> dict[str, object]:
    if settings.deployment is not Deployment.LOCAL and not settings.storage_root.startswith(
        "s3://"
    ):
        raise ConfigError(
            f"BIKESHARE_DEPLOYMENT={settings.deployment} stores assets on S3: set "
            "BIKESHARE_STORAGE_ROOT=s3://<bucket>/<prefix> (and BIKESHARE_S3_ENDPOINT_URL for a "
            "non-AWS endpoint)."
        )
    if settings.deployment is not Deployment.LOCAL and settings.mlflow_tracking_uri.startswith(
        "sqlite"
    ):
        raise ConfigError(
            f"BIKESHARE_DEPLOYMENT={settings.deployment} shares one model registry across hosts: set "
            "MLFLOW_TRACKING_URI to the MLflow tracking server (a SQLite file is per machine)."
        )
    lake = LakeStorage(root=settings.storage_root, s3_endpoint_url=settings.s3_endpoint_url)
    tracking = MlflowTracking(
        tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    return {
        "lake": lake,
        "io_manager": PartitionedParquetIOManager(lake=lake, source_mode=settings.source.value),
        "sources": FeedSources(
            mode=settings.source.value,
            http_timeout_s=settings.http_timeout_s,
            http_retries=settings.http_retries,
            meteostat_url=settings.meteostat_url,
            cache_dir=str(settings.home / "cache"),
        ),
        "mlflow_tracking": tracking,
        # dagster-mlflow's resource for model_quality's metrics (see training/tracking.py)
        "mlflow": mlflow_run_per_dagster_run(tracking),
        "endpoint": build_endpoint(settings),
        "optuna_studies": OptunaStudies(root=str(settings.home / "optuna")),
        "promotion_gate": PromotionGate(),
        ALERTS_RESOURCE_KEY: build_alert_channel(settings),
        "drift_policy": DriftPolicy(),
    }


def build_endpoint(settings: Settings) -> ModelEndpoint:
    return ModelEndpoint(
        kind=settings.endpoint_kind,
        request_timeout_s=settings.endpoint_timeout_s,
        state_dir=str(settings.home / "serving"),
        ports=list(settings.endpoint_ports),
        region=settings.aws_region,
        sagemaker_endpoint_url=settings.sagemaker_endpoint_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        bucket=settings.sagemaker_bucket,
        image_uri=settings.sagemaker_image,
        role_arn=settings.sagemaker_role_arn,
        canary_weight=settings.sagemaker_canary_weight,
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    sensors: list[dg.SensorDefinition] = [build_alert_sensor(settings)]
    for city in settings.cities.values():
        parts = city_partitions(city, settings.source)
        assets += build_raw_assets(city, parts)
        assets += build_feature_assets(city, parts)
        assets += build_training_assets(city, parts)
        assets += build_registry_assets(city, parts)
        assets += build_serving_assets(city, parts)
        assets += build_monitoring_assets(city, parts)
        if settings.source is SourceMode.LIVE:
            schedules += build_live_schedules(city, parts)
        sensors += build_healing_sensors(city, parts, settings)
    # Declarative automation and freshness policies, applied here once (automation/policies.py).
    contexts = {
        c.key: CityContext(c.key, c.timezone, timedelta(minutes=c.cadence_for(settings.source)))
        for c in settings.cities.values()
    }
    assets = apply_policies(assets, contexts, freshness=settings.runs_itself)
    sensors += automation_sensors(list(contexts), running=settings.runs_itself)
    return dg.Definitions(
        assets=assets,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings),
        executor=_executor(settings),
    )


def _executor(settings: Settings) -> dg.ExecutorDefinition | None:
    """Live mode on one machine (`bikeshare live`, the drills) runs every few minutes a
    run of one to three small steps: one process per run, not one more per step, halves
    what each window costs (each process imports the code location, ~2 s of CPU, more than
    the step's own work). Elsewhere Dagster's default (a process per step) keeps a big
    backfill's steps in parallel and a crashing step from taking its run down."""
    if settings.source is SourceMode.LIVE and settings.deployment is Deployment.LOCAL:
        return dg.in_process_executor
    return None


defs = build_definitions(get_settings())
