"""MLflow registry operations: register, promote, roll back. MLflow 3 aliases, not stages.

History is kept on the versions themselves: a promoted version carries the tag
`previous_champion`, so a rollback is one alias move and `champion` never loses its past.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # MLflow takes ~1.5 s to import: only the functions below load it
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"


def registered_model_name(city: str, target: str) -> str:
    return f"{city}_{target}"


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def registered_version_of(
    client: MlflowClient, name: str, model_uri: str, run_id: str | None = None
) -> ModelVersion | None:
    """The version of `name` already registered from this model (same source URI, or the
    same MLflow run), oldest first; None if there is none."""
    versions = [
        v
        for v in client.search_model_versions(f"name='{name}'")
        if v.source == model_uri or (run_id is not None and v.run_id == run_id)
    ]
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register_challenger(
    client: MlflowClient,
    name: str,
    model_uri: str,
    tags: dict[str, str],
    run_id: str | None = None,
) -> ModelVersion:
    """Register the model as `challenger`, idempotently: re-materializing the same day (the
    same MLflow run) reuses its existing version instead of registering v2, v3, … of one
    model, which would each pass the gate against themselves and be promoted again."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="30-minute-ahead stockout classifier (bikeshare_assets)."
        )
    version = registered_version_of(client, name, model_uri, run_id)
    if version is None:
        version = mlflow.register_model(model_uri, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def served_training_end(client: MlflowClient, city: str, label: str) -> datetime | None:
    """The newest snapshot any champion in a serving label ("stockout_bikes:v3+stockout_docks:v2")
    was fit on, from the versions' `training_data_end` tags; None when a version does not
    say (registered before the tag existed) or the label names no registered versions."""
    from mlflow.exceptions import MlflowException

    ends = []
    for part in label.split("+"):
        target, _, version = part.partition(":v")
        if not target or not version:
            return None
        try:
            tags = client.get_model_version(registered_model_name(city, target), version).tags
        except MlflowException:
            return None
        if not tags.get("training_data_end"):
            return None
        ends.append(datetime.fromisoformat(tags["training_data_end"]))
    return max(ends) if ends else None


def load_test_rows(run_id: str) -> pl.DataFrame:
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation/test_rows.parquet"
    )
    return pl.read_parquet(path)


def score_on(name: str, version: str, rows: pl.DataFrame, target: str) -> float:
    """PR-AUC of a registered version on given rows (used to compare champion and challenger
    on exactly the same rows)."""
    import mlflow
    from sklearn.metrics import average_precision_score

    from bikeshare_assets.features.compute import FEATURE_COLUMNS

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")

    x = rows.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
    predictions = model.predict(x)
    return float(
        average_precision_score(
            rows.get_column(target).cast(pl.Int8).to_numpy(), predictions[f"p_{target}"]
        )
    )


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Move `champion` to `version`; returns the version it replaced.

    Versions are compared as strings: MLflow's SQL store hands back ints, callers (and the
    CLI) pass strings, and "2" != 2 would record a version as its own previous champion."""
    version = str(version)
    current = alias_version(client, name, CHAMPION)
    previous = str(current.version) if current is not None else None
    now = datetime.now(UTC).isoformat()
    if previous is not None and previous != version:
        client.set_model_version_tag(name, version, "previous_champion", previous)
        client.set_model_version_tag(name, previous, "superseded_by", version)
    client.set_model_version_tag(name, version, "promoted_at", now)
    client.set_registered_model_alias(name, CHAMPION, version)
    return previous if previous != version else None


def rollback(client: MlflowClient, name: str, to_version: str | None = None) -> tuple[str, str]:
    """Put the previous champion (or `to_version`) back; returns (from, to)."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise ValueError(f"{name} has no champion to roll back.")
    target = to_version or current.tags.get("previous_champion")
    if not target:
        raise ValueError(
            f"{name} v{current.version} has no previous champion; pass --to-version N "
            "(see `mlflow ui` for the versions)."
        )
    client.get_model_version(name, target)  # fails clearly if it does not exist
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_model_version_tag(
        name, current.version, "rolled_back_at", datetime.now(UTC).isoformat()
    )
    client.set_model_version_tag(name, target, "restored_from", current.version)
    return str(current.version), str(target)
