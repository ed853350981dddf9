"""Real demo outputs for the dashboard tests and benchmark, cheaply: a morning of the real
Vélib' recording through the project's own assets (raw → features + labels → a quick
champion registered and promoted → the real local endpoint → predictions → outcomes →
model quality), on a real Dagster instance and MLflow SQLite store under one
BIKESHARE_HOME. Only the model is quick (a small LightGBM instead of the Optuna search);
it is logged, registered and promoted with the pipeline's own functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import polars as pl

from bikeshare_assets.definitions import build_definitions, build_endpoint
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.partitions import materialize_range
from bikeshare_assets.settings import Settings, get_settings
from bikeshare_assets.storage import LakeStorage, partition_key_path

CITY = "paris"
DAGSTER_YAML = "telemetry:\n  enabled: false\n"


@dataclass(frozen=True)
class DemoOutputs:
    home: Path
    cities_file: Path
    settings: Settings
    env: dict[str, str]  # what a process (streamlit) needs to read the same outputs
    snapshots: list[str]  # snapshot partitions that were scored


def build_demo_outputs(
    home: Path, cities_file: Path, start: datetime, end: datetime, ports: list[int]
) -> DemoOutputs:
    from bikeshare_assets_tests.serving.champions import (
        log_and_promote,
        tracking_in,
        train_boosters,
    )

    env = {
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_CITIES_FILE": str(cities_file),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "BIKESHARE_ENDPOINT_PORTS": f"{ports[0]},{ports[1]}",
        "BIKESHARE_ENDPOINT_TIMEOUT_S": "20",
    }
    settings = get_settings(env)
    defs = build_definitions(settings)
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text(DAGSTER_YAML)
    lake = LakeStorage(root=settings.storage_root)
    fmt = "%Y-%m-%d-%H:%M"
    first, last = start.strftime(fmt), end.strftime(fmt)
    day = start.strftime("%Y-%m-%d")
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:

        def run(selection: list[str], a: str, b: str) -> None:
            result = materialize_range(
                defs, instance, selection, a, b, launched_by="dashboard tests", quiet=True
            )
            assert result.success, f"{selection} {a}..{b} failed"

        run([f"{CITY}/raw_station_information"], day, day)
        run([f"{CITY}/raw_weather"], start.strftime("%Y-%m-%d-%H:00"), last[:-2] + "00")
        run([f"{CITY}/raw_station_status"], first, last)
        run([f"{CITY}/station_features", f"{CITY}/stockout_labels"], first, last)

        keys = [k for k in _keys(defs, first, last)]
        features = pl.concat(
            [
                lake.read_parquet(partition_key_path(dg.AssetKey([CITY, "station_features"]), k))
                for k in keys
            ],
            how="diagonal_relaxed",
        )
        labels = pl.concat(
            [
                lake.read_parquet(partition_key_path(dg.AssetKey([CITY, "stockout_labels"]), k))
                for k in keys
            ],
            how="diagonal_relaxed",
        )
        tracking = tracking_in(home / "mlflow")
        boosters = train_boosters(features, labels, rounds=40)
        example = features.filter(pl.col("snapshot_at") == features["snapshot_at"].max())
        for target in TARGETS:
            log_and_promote(tracking, CITY, target, boosters[target], 0.4, example)
        try:
            run([f"{CITY}/model_endpoint"], day, day)
            run([f"{CITY}/stockout_predictions", f"{CITY}/prediction_outcomes"], first, last)
        finally:
            build_endpoint(settings).local(CITY).stop()
        run([f"{CITY}/model_quality"], day, day)
    scored = [
        k
        for k in keys
        if lake.exists(partition_key_path(dg.AssetKey([CITY, "stockout_predictions"]), k))
    ]
    return DemoOutputs(home, cities_file, settings, env, scored)


def _keys(defs: dg.Definitions, first: str, last: str) -> list[str]:
    pdef = defs.resolve_assets_def(dg.AssetKey([CITY, "raw_station_status"])).partitions_def
    keys = pdef.get_partition_keys()  # type: ignore[union-attr]
    return keys[keys.index(first) : keys.index(last) + 1]
