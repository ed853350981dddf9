"""The serving bundle: both targets' champions in one MLflow model, so one batch request
per snapshot scores every station for both stockouts.

Registered as `<city>_stockout_serving`; each version records which champion versions it
holds (`model_version` in its answers reads e.g. "stockout_bikes:v3+stockout_docks:v2").
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import polars as pl
from mlflow.tracking import MlflowClient

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.registry.registry import CHAMPION, alias_version, registered_model_name
from bikeshare_assets.training.pyfunc import (
    StockoutModel,
    log_stockout_model,
    write_model_artifacts,
)
from bikeshare_assets.training.tracking import MlflowTracking


@dataclass(frozen=True)
class ServingBundle:
    registered_model: str
    version: str
    model_uri: str  # models:/<name>/<version>
    label: str  # what the endpoint reports as model_version
    champions: dict[str, str]  # target -> champion version
    thresholds: dict[str, float]


def serving_model_name(city: str) -> str:
    return f"{city}_stockout_serving"


def champion_versions(client: MlflowClient, city: str) -> dict[str, str]:
    versions = {}
    for target in TARGETS:
        champion = alias_version(client, registered_model_name(city, target), CHAMPION)
        if champion is None:
            raise LookupError(
                f"{registered_model_name(city, target)} has no `champion` yet: materialize "
                f"{city}/stockout_model and {city}/registered_model_version (the gate must pass once)."
            )
        versions[target] = champion.version
    return versions


def _load_champion(
    client: MlflowClient, name: str, version: str, target: str
) -> tuple[lgb.Booster, float]:
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    meta = json.loads(next(local.rglob("meta.json")).read_text())
    booster_file = next(p for p in local.rglob(f"{target}.txt"))
    return lgb.Booster(model_file=str(booster_file)), float(meta["thresholds"][target])


def build_serving_bundle(
    tracking: MlflowTracking, city: str, example: pl.DataFrame, dagster_context=None
) -> ServingBundle:
    """Log and register a bundle of the current champions (re-used when unchanged)."""
    client = tracking.client()
    champions = champion_versions(client, city)
    label = "+".join(f"{t}:v{v}" for t, v in sorted(champions.items()))
    name = serving_model_name(city)
    existing = client.search_model_versions(f"name='{name}'") if _exists(client, name) else []
    for version in existing:
        if version.tags.get("champions") == label:
            thresholds = json.loads(version.tags.get("thresholds", "{}"))
            return ServingBundle(
                name,
                version.version,
                f"models:/{name}/{version.version}",
                label,
                champions,
                thresholds,
            )
    boosters, thresholds = {}, {}
    for target, version in champions.items():
        boosters[target], thresholds[target] = _load_champion(
            client, registered_model_name(city, target), version, target
        )
    with (
        tempfile.TemporaryDirectory() as tmp,
        tracking.start_run(
            f"bikeshare/{city}/serving", f"{city}-serving-{label}", dagster_context
        ) as run,
    ):
        artifacts = write_model_artifacts(
            Path(tmp) / "model", boosters, thresholds, model_version=label
        )
        x = example.head(5).select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
        # Logged without a signature on purpose: MLflow's schema enforcement costs the scoring
        # server ~5-7 ms per request (measured, docs/performance.md), most of a single-station
        # request's budget. The model checks its own columns; the per-target registered models
        # keep their signatures and input examples.
        StockoutModel.from_artifacts(artifacts).predict(None, x)  # fail here, not in serving
        info = log_stockout_model(artifacts)
        version = mlflow.register_model(
            info.model_uri,
            name,
            tags={
                "champions": label,
                "thresholds": json.dumps(thresholds),
                "run_id": run.info.run_id,
            },
        )
    return ServingBundle(
        name, version.version, f"models:/{name}/{version.version}", label, champions, thresholds
    )


def _exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except mlflow.exceptions.MlflowException:
        return False
