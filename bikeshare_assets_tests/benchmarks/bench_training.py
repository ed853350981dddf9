"""Training benchmark: `train_target` (Optuna-tuned LightGBM) per target on a simulated
training frame, with the search split into its trials."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import optuna
import polars as pl

from bikeshare_assets.cities import DEFAULT_CITIES_FILE, load_cities
from bikeshare_assets.cli import DEMO_TRIALS
from bikeshare_assets.features.compute import build_station_features
from bikeshare_assets.features.labels import TARGETS, build_labels
from bikeshare_assets.training.train import (
    SplitConfig,
    TuningConfig,
    time_split,
    train_target,
    training_frame,
)
from bikeshare_assets_tests.benchmarks import (
    BenchContext,
    CaseResult,
    Run,
    benchmark,
    case,
    fmt_seconds,
)
from bikeshare_assets_tests.benchmarks.pandas_features import simulated_inputs

STATIONS, DAYS, CADENCE = 1_500, 10, 15
THRESHOLD = load_cities(DEFAULT_CITIES_FILE)["paris"].stockout_threshold
P_SEARCH = "Optuna search: the trials (LightGBM fits, pruning, train-set PR-AUC)"
P_FINAL = "refit with the picked trial, threshold on validation, test and baseline metrics"


@contextlib.contextmanager
def _studies() -> Iterator[list[optuna.Study]]:
    """Collect the studies `train_target` creates (observation only: same study, same
    sampler and pruner), to read each trial's start, end and state."""
    created: list[optuna.Study] = []
    original = optuna.create_study

    def create_study(*args: Any, **kwargs: Any) -> optuna.Study:
        study = original(*args, **kwargs)
        created.append(study)
        return study

    optuna.create_study = create_study  # type: ignore[assignment]
    try:
        yield created
    finally:
        optuna.create_study = original  # type: ignore[assignment]


@benchmark(
    "training_time",
    title="stockout model training (`train_target`, Optuna + LightGBM)",
    description=f"""
        `train_target` for each target with the default `TuningConfig` (8 Optuna trials,
        TPE sampler, median pruner after 3 trials and 30 rounds, up to 800 boosting rounds
        with early stopping at 50, LightGBM on all cores), then the refit with the picked
        trial, the validation threshold and the test metrics — what `stockout_model` does
        per target, without MLflow. Input (setup, not timed): the simulator (Paris
        settings, seed 7) at {CADENCE}-minute cadence for {DAYS} days (the default
        `trailing_days`), {STATIONS:,} stations (Paris-sized), `build_station_features`
        for every snapshot, `build_labels` (the city's threshold, 2), `training_frame` and
        `time_split` with the default `SplitConfig` (test 2 days, validation 1.5 days,
        30-minute embargo): ≈ 1.43 M labelled rows. The search phase is cut at the
        trials' own start and end times; pruned trials stop after 30 rounds. Trial times
        depend on the hyperparameters TPE draws (one trial that runs all 800 rounds costs
        as much as several pruned ones) and strongly on what else runs on the two cores:
        compare runs at similar load only. One cold run per target, each in its own
        subprocess.
    """,
    cases=[case(target, target=target) for target in TARGETS],
    repeat=1,
    warmup=0,
    summarize=lambda results: _summary(results),
)
def training_time(ctx: BenchContext, target: str):
    started = time.perf_counter()
    inputs = simulated_inputs(STATIONS, DAYS, cadence_minutes=CADENCE)
    features = build_station_features(
        inputs.status, inputs.information, inputs.weather, inputs.snapshot_times, inputs.context
    )
    labels = build_labels(inputs.status, THRESHOLD)
    frame = training_frame(features, labels)
    split = time_split(frame, SplitConfig())
    del inputs, features, labels, frame
    tuning = TuningConfig(n_trials=DEMO_TRIALS)  # what `bikeshare demo` runs
    ctx.metric("build frame (setup, not timed)", fmt_seconds(time.perf_counter() - started))
    ctx.metric("train rows", split.train.height)
    ctx.metric("validation rows", split.validation.height)
    ctx.metric("test rows", split.test.height)
    ctx.metric(
        "train positives",
        f"{split.train.get_column(target).cast(pl.Float64).mean():.1%}",
    )

    def once(run: Run) -> None:
        t0 = time.perf_counter()
        with _studies() as studies:
            trained = train_target(split, target, THRESHOLD, tuning)
        total = time.perf_counter() - t0
        with run.untimed():
            (study,) = studies
            trials = [t for t in study.trials if t.datetime_complete is not None]
            first = min(t.datetime_start for t in trials if t.datetime_start is not None)
            last = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
            search = (last - first).total_seconds()
            run.add_phase(P_SEARCH, search)
            run.add_phase(P_FINAL, total - search)
            durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
            states = [t.state for t in trials]
            complete = [
                t.duration.total_seconds()
                for t in trials
                if t.state == optuna.trial.TrialState.COMPLETE and t.duration is not None
            ]
            run.metric("trials (n_trials)", f"{trained.n_trials_completed} ({tuning.n_trials})")
            run.metric("pruned", sum(s == optuna.trial.TrialState.PRUNED for s in states))
            run.metric("time per trial (mean)", fmt_seconds(search / len(trials)))
            run.metric("complete trial (median)", fmt_seconds(statistics.median(complete)))
            run.metric(
                "pruned trial (median)",
                fmt_seconds(
                    statistics.median(
                        [
                            d
                            for d, s in zip(durations, states, strict=True)
                            if s == optuna.trial.TrialState.PRUNED
                        ]
                        or [0.0]
                    )
                ),
            )
            run.metric("best iteration", int(trained.metrics["best_iteration"]))
            run.metric(
                "test PR-AUC (persistence)",
                (
                    f"{trained.metrics['test_pr_auc']:.3f} "
                    f"({trained.metrics['baseline_test_pr_auc']:.3f})"
                ),
            )

    return once


def _summary(results: list[CaseResult]) -> list[str]:
    total = sum(r.median() for r in results)
    per_trial = ", ".join(
        f"{r.case} {r.metrics.get('time per trial (mean)', '?')}" for r in results
    )
    return [
        f"**Both targets: {fmt_seconds(total)}** for one `stockout_model` run without MLflow "
        f"({results[0].metrics.get('train rows', 0):,} training rows); mean time per trial: "
        f"{per_trial}.",
    ]
