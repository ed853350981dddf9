"""Real champions, quickly: tiny LightGBM boosters on a simulated city, logged as the
project's StockoutModel pyfunc, registered, promoted and bundled exactly as the pipeline
does, in a temporary MLflow SQLite store.

Shared by the serving tests (session fixture) and the serving benchmark. Nothing here
replaces project code: the models are logged with `write_model_artifacts` +
`log_stockout_model` (the pipeline's own logging), registered with
`registry.register_challenger`, promoted with `registry.promote` and bundled with
`serving.bundle.build_serving_bundle`.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import mlflow
import polars as pl

from bikeshare_assets.features.compute import (
    FEATURE_COLUMNS,
    FeatureContext,
    build_station_features,
)
from bikeshare_assets.features.labels import TARGETS, build_labels
from bikeshare_assets.ingest.simulator import SimulatedSystem, SimulationConfig
from bikeshare_assets.registry.registry import (
    CHAMPION,
    alias_version,
    promote,
    register_challenger,
    registered_model_name,
)
from bikeshare_assets.serving.bundle import ServingBundle, build_serving_bundle
from bikeshare_assets.training.assets import log_reference_sample
from bikeshare_assets.training.pyfunc import (
    StockoutModel,
    log_stockout_model,
    write_model_artifacts,
)
from bikeshare_assets.training.tracking import MlflowTracking

SIM_CITY = "simcity"
SIM_START = datetime(2025, 9, 8, tzinfo=UTC)  # a Monday
SIM_STATIONS = 300
SIM_DAYS = 1
SIM_CADENCE = 15
SIM_SEED = 11
THRESHOLD = 2  # stockout: bikes <= 2 or docks <= 2


def simulate_table() -> dict:
    """The `[simulate]` table of a cities file describing the same simulated system."""
    return {
        "stations": SIM_STATIONS,
        "days": SIM_DAYS,
        "seed": SIM_SEED,
        "start": SIM_START,
        "cadence_minutes": SIM_CADENCE,
    }


def simulated_dataset(
    stations: int = SIM_STATIONS, days: int = SIM_DAYS, seed: int = SIM_SEED
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(station_features, stockout_labels) of a simulated system, from the project's own
    feature and label functions."""
    config = SimulationConfig(
        stations=stations,
        days=days,
        seed=seed,
        start=SIM_START,
        cadence_minutes=SIM_CADENCE,
        country="FR",
    )
    system = SimulatedSystem(config)
    status = system.status_frame()
    information = system.information_frame().with_columns(
        as_of_day=pl.lit(SIM_START).cast(pl.Datetime("us", "UTC"))
    )
    features = build_station_features(
        status,
        information,
        system.hourly_weather(),
        system.snapshot_times(),
        FeatureContext("Europe/Paris", "FR", SIM_CADENCE),
    )
    return features, build_labels(status, THRESHOLD)


def train_boosters(
    features: pl.DataFrame, labels: pl.DataFrame, rounds: int, seed: int = 1
) -> dict[str, lgb.Booster]:
    """One small booster per target on every matured row (fixed parameters, no tuning)."""
    frame = features.join(labels, on=["snapshot_at", "station_id"], how="inner")
    x = frame.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_numpy()
    boosters = {}
    for target in TARGETS:
        rows = frame.get_column(target).is_not_null().to_numpy()
        y = frame.get_column(target).cast(pl.Int8).to_numpy()
        boosters[target] = lgb.train(
            {
                "objective": "binary",
                "num_leaves": 8,
                "learning_rate": 0.2,
                "min_data_in_leaf": 20,
                "seed": seed,
                "deterministic": True,
                "num_threads": 1,
                "verbose": -1,
            },
            lgb.Dataset(x[rows], y[rows]),
            num_boost_round=rounds,
        )
    return boosters


def tracking_in(directory: Path) -> MlflowTracking:
    """An MLflow SQLite store (tracking + registry) and artifact root under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    return MlflowTracking(
        tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
        artifact_root=str(directory / "artifacts"),
    )


def log_and_promote(
    tracking: MlflowTracking,
    city: str,
    target: str,
    booster: lgb.Booster,
    threshold: float,
    example: pl.DataFrame,
    fit_rows: pl.DataFrame | None = None,
) -> str:
    """Log one target's model as the pipeline does (with its drift reference sample when
    `fit_rows` are given), register it as challenger, promote it to champion; returns the
    registered version."""
    client = tracking.client()
    x = example.head(5).select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
    with (
        tempfile.TemporaryDirectory() as tmp,
        tracking.start_run(f"bikeshare/{city}/stockout", f"{city}-{target}-test") as run,
    ):
        artifacts = write_model_artifacts(
            Path(tmp) / "model", {target: booster}, {target: threshold}
        )
        output = StockoutModel.from_artifacts(artifacts).predict(None, x)
        with warnings.catch_warnings():  # MLflow's hint about integer columns (the flags)
            warnings.simplefilter("ignore", UserWarning)
            signature = mlflow.models.infer_signature(x, output)
        info = log_stockout_model(artifacts, input_example=x, signature=signature)
        if fit_rows is not None:
            log_reference_sample(fit_rows, target, artifacts, Path(tmp))
    name = registered_model_name(city, target)
    version = register_challenger(
        client, name, info.model_uri, {"run_id": run.info.run_id, "target": target}
    )
    promote(client, name, version.version)
    return str(version.version)


def champion_label(tracking: MlflowTracking, city: str) -> dict[str, str]:
    client = tracking.client()
    return {
        t: alias_version(client, registered_model_name(city, t), CHAMPION).version  # type: ignore[union-attr]
        for t in TARGETS
    }


@dataclass
class Champions:
    """A temporary registry with two generations of champions and their serving bundles."""

    tracking: MlflowTracking
    store: Path
    city: str
    features: pl.DataFrame  # every simulated snapshot
    labels: pl.DataFrame
    snapshot: pl.DataFrame  # the newest snapshot: every station
    bundles: list[ServingBundle] = field(default_factory=list)  # oldest first

    @property
    def db(self) -> Path:
        return self.store / "mlflow.db"

    def bundle(self, label: str) -> ServingBundle:
        return next(b for b in self.bundles if b.label == label)

    def activate(self) -> None:
        """Point MLflow's process-wide URIs at this store again (another test may have
        moved them)."""
        self.tracking.setup()


def build_champions(store: Path, city: str = SIM_CITY) -> Champions:
    """Generation 1: both targets v1. Generation 2: a retrained stockout_bikes v2 is
    promoted. One serving bundle per generation."""
    features, labels = simulated_dataset()
    snapshot = features.filter(pl.col("snapshot_at") == features.get_column("snapshot_at").max())
    tracking = tracking_in(store)
    champions = Champions(tracking, store, city, features, labels, snapshot)
    first = train_boosters(features, labels, rounds=6, seed=1)
    for target, booster in first.items():
        log_and_promote(tracking, city, target, booster, 0.3, snapshot)
    champions.bundles.append(build_serving_bundle(tracking, city, snapshot))
    second = train_boosters(features, labels, rounds=12, seed=2)
    log_and_promote(tracking, city, "stockout_bikes", second["stockout_bikes"], 0.25, snapshot)
    champions.bundles.append(build_serving_bundle(tracking, city, snapshot))
    return champions


def load_champion_boosters(
    tracking: MlflowTracking, city: str, dst: Path
) -> tuple[dict[str, lgb.Booster], dict[str, float], dict[str, str]]:
    """Read (never write) another store's champions: boosters, thresholds, versions."""
    client = tracking.client()
    boosters, thresholds, versions = {}, {}, {}
    for target in TARGETS:
        name = registered_model_name(city, target)
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise LookupError(f"{name} has no champion in {tracking.tracking_uri}")
        local = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{name}/{champion.version}", dst_path=str(dst / target)
            )
        )
        meta = json.loads(next(local.rglob("meta.json")).read_text())
        boosters[target] = lgb.Booster(model_file=str(next(local.rglob(f"{target}.txt"))))
        thresholds[target] = float(meta["thresholds"][target])
        versions[target] = str(champion.version)
    return boosters, thresholds, versions
