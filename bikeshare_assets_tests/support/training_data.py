"""A small simulated city, its features and labels, and models trained on them — built once
per test process and shared by the training, pyfunc and registry tests.

Everything is the project's own code: the seeded simulator's snapshots, `build_station_features`,
`build_labels`, `time_split` and `train_target`. Training uses one LightGBM thread: on a
2-core machine that is busy with anything else, LightGBM's default of all cores spends most
of its time spinning (measured 7-15x slower), and these tests must stay fast.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import polars as pl

from bikeshare_assets.features.compute import FeatureContext, build_station_features
from bikeshare_assets.features.labels import TARGETS, build_labels
from bikeshare_assets.ingest.simulator import SimulatedSystem, SimulationConfig
from bikeshare_assets.training.train import (
    Split,
    SplitConfig,
    TrainedTarget,
    TuningConfig,
    time_split,
    train_target,
    training_frame,
)

SIM_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
SIM_STATIONS, SIM_DAYS, SIM_SEED, SIM_CADENCE = 100, 4, 11, 15
SIM_LAST_DAY = "2026-01-08"
THRESHOLD = 2
CONTEXT = FeatureContext("Europe/Paris", "FR", SIM_CADENCE)
TUNING = TuningConfig(n_trials=2, seed=42, num_threads=1)
SPLIT_A = SplitConfig(test_days=1.0, validation_days=1.0)
# Other (fewer) test rows than SPLIT_A. SPLIT_C has the same test rows as SPLIT_B;
# `short_history_split` keeps only its last day of training rows, and the model refit on
# that comes out weaker than SPLIT_B's on those test rows.
SPLIT_B = SplitConfig(test_days=0.75, validation_days=1.25)
SPLIT_C = SplitConfig(test_days=0.75, validation_days=0.75)


def simulate_table(**overrides: object) -> dict[str, object]:
    """The `[cities.<city>.simulate]` table of this system, for `write_cities`."""
    return {
        "stations": SIM_STATIONS,
        "days": SIM_DAYS,
        "seed": SIM_SEED,
        "start": SIM_START,
        "cadence_minutes": SIM_CADENCE,
        **overrides,
    }


@cache
def simulated_raw() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(raw status, one station list per day, hourly weather) of the simulated system."""
    system = SimulatedSystem(
        SimulationConfig(
            stations=SIM_STATIONS,
            days=SIM_DAYS,
            seed=SIM_SEED,
            start=SIM_START,
            cadence_minutes=SIM_CADENCE,
            country="FR",
        )
    )
    base = system.information_frame()
    information = pl.concat(
        base.with_columns(
            pl.lit(SIM_START + timedelta(days=d), dtype=pl.Datetime("us", "UTC")).alias("as_of_day")
        )
        for d in range(SIM_DAYS)
    )
    return system.status_frame(), information, system.hourly_weather()


@cache
def simulated_frame() -> pl.DataFrame:
    """features ⋈ labels over the whole simulated period."""
    status, information, weather = simulated_raw()
    times = status.get_column("snapshot_at").unique().sort().to_list()
    features = build_station_features(status, information, weather, times, CONTEXT)
    return training_frame(features, build_labels(status, THRESHOLD))


@cache
def simulated_split(config: SplitConfig = SPLIT_A) -> Split:
    return time_split(simulated_frame(), config)


@cache
def shuffled_split() -> Split:
    """SPLIT_A with its train and validation labels shuffled (test keeps the truth): a model
    that learnt nothing, scored on the same rows as the good one."""
    good = simulated_split(SPLIT_A)

    def shuffle(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
        return frame.with_columns(pl.col(t).shuffle(seed=seed + i) for i, t in enumerate(TARGETS))

    return Split(
        train=shuffle(good.train, 1),
        validation=shuffle(good.validation, 2),
        test=good.test,
        boundaries=dict(good.boundaries),
    )


@cache
def short_history_split() -> Split:
    """SPLIT_C with only the last 24 hours of its training rows."""
    split = simulated_split(SPLIT_C)
    start = split.train.get_column("snapshot_at").max() - timedelta(hours=24)
    return Split(
        train=split.train.filter(pl.col("snapshot_at") > start),
        validation=split.validation,
        test=split.test,
        boundaries=dict(split.boundaries),
    )


@cache
def trained_on_short_history(target: str) -> TrainedTarget:
    return train_target(short_history_split(), target, THRESHOLD, TUNING)


@cache
def trained(target: str, config: SplitConfig = SPLIT_A) -> TrainedTarget:
    return train_target(simulated_split(config), target, THRESHOLD, TUNING)


@cache
def trained_on_shuffled_labels(target: str) -> TrainedTarget:
    return train_target(shuffled_split(), target, THRESHOLD, TUNING)


# --------------------------------------------------------------------------------------
# MLflow: creating a SQLite store runs every migration (several seconds); a migrated empty
# store is made once and copied for each test that needs a fresh one.
# --------------------------------------------------------------------------------------


@cache
def _migrated_mlflow_db() -> Path:
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="bikeshare-mlflow-template-"))
    atexit.register(shutil.rmtree, folder, True)
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def fresh_mlflow_store(db: Path) -> str:
    """An empty, migrated MLflow SQLite store at `db`; returns its URI."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_mlflow_db(), db)
    return f"sqlite:///{db}"
