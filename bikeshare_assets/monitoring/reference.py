"""Drift references in the lake and in MLflow: written once per registered version, read by
drift_report for the versions that actually served.

The sample is logged as an artifact of the training run (training/assets.py, where the fit
rows and the model are at hand); registration copies it into the lake under the version's
number. A version whose lake copy is missing (a lake rebuilt, another machine) is healed from
MLflow on first use.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

import polars as pl

from bikeshare_assets.monitoring.drift import REFERENCE_ARTIFACT, reference_key
from bikeshare_assets.registry.registry import registered_model_name
from bikeshare_assets.storage import LakeStorage

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class ReferenceMissing(LookupError):
    """A serving version has no drift reference anywhere; the message says what to do."""


def run_reference(client: MlflowClient, run_id: str) -> pl.DataFrame | None:
    """The reference sample logged with a training run; None if the run has none (trained
    before references were stored)."""
    logged = [a.path for a in client.list_artifacts(run_id, REFERENCE_ARTIFACT.rsplit("/", 1)[0])]
    if REFERENCE_ARTIFACT not in logged:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return pl.read_parquet(client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp))


def store_reference(
    client: MlflowClient, lake: LakeStorage, name: str, version: str, run_id: str
) -> str | None:
    """Copy the run's reference sample to the version's lake key (idempotent: a version
    whose copy exists is left alone); returns the lake URI, None if the run has none."""
    key = reference_key(name, version)
    if not lake.exists(key):
        sample = run_reference(client, run_id)
        if sample is None:
            return None
        lake.write_parquet(key, sample)
    uri = lake.uri(key)
    client.set_model_version_tag(name, version, "drift_reference", uri)
    return uri


def load_reference(
    client: MlflowClient, lake: LakeStorage, city: str, target: str, version: str
) -> pl.DataFrame:
    """A serving version's reference: the lake copy, else the training run's artifact
    (written to the lake for next time); ReferenceMissing if neither exists."""
    name = registered_model_name(city, target)
    key = reference_key(name, version)
    if lake.exists(key):
        return lake.read_parquet(key)
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_model_version(name, version).run_id
    except MlflowException as exc:
        raise ReferenceMissing(
            f"{name} v{version} is not in the MLflow registry ({exc}); the predictions name a "
            "version this registry does not know (another MLFLOW_TRACKING_URI?)."
        ) from exc
    sample = run_reference(client, run_id) if run_id else None
    if sample is None:
        raise ReferenceMissing(
            f"{name} v{version} has no drift reference: neither {lake.uri(key)} nor the "
            f"artifact {REFERENCE_ARTIFACT} of its MLflow run {run_id or '(none)'} exists — it "
            "was trained before references were stored. Retrain and register a new version "
            f"(materialize {city}/stockout_model and {city}/registered_model_version, then "
            f"{city}/model_endpoint)."
        )
    lake.write_parquet(key, sample)
    return sample
