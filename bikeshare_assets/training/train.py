"""Training one stockout classifier: time-ordered split, Optuna-tuned LightGBM refit on
train + validation, threshold, metrics against the persistence baselines. Pure functions on
polars frames, no Dagster."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import polars as pl
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna_integration import LightGBMPruningCallback
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    fbeta_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import HORIZON, TARGETS
from bikeshare_assets.monitoring.quality import (
    expected_calibration_error,
    new_stockout_metrics,
    not_stocked_out,
)
from bikeshare_assets.registry.gate import GateThresholds

log = logging.getLogger(__name__)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class SplitConfig:
    test_days: float = 2.0
    validation_days: float = 1.5
    embargo: timedelta = HORIZON  # a label at t looks 30 min ahead: keep splits 30 min apart


@dataclass
class Split:
    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    boundaries: dict[str, str] = field(default_factory=dict)


def training_frame(features: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """features ⋈ labels: only snapshots whose label has matured."""
    return features.join(labels, on=["snapshot_at", "station_id"], how="inner").sort(
        "snapshot_at", "station_id"
    )


def time_split(frame: pl.DataFrame, config: SplitConfig) -> Split:
    """Train < validation < test in time, with an embargo before each boundary so no training
    label overlaps the window it is evaluated on."""
    end = frame.get_column("snapshot_at").max()
    assert isinstance(end, datetime)
    test_start = end - timedelta(days=config.test_days)
    val_start = test_start - timedelta(days=config.validation_days)
    t = pl.col("snapshot_at")
    split = Split(
        train=frame.filter(t < val_start - config.embargo),
        validation=frame.filter((t >= val_start) & (t < test_start - config.embargo)),
        test=frame.filter(t >= test_start),
        boundaries={
            "train_start": str(frame.get_column("snapshot_at").min()),
            "validation_start": str(val_start),
            "test_start": str(test_start),
            "end": str(end),
            "embargo_minutes": str(int(config.embargo.total_seconds() // 60)),
        },
    )
    for name in ("train", "validation", "test"):
        part = getattr(split, name)
        if part.height == 0:
            raise ValueError(
                f"the {name} window is empty ({split.boundaries}); train on more days "
                "(trailing_days) or shorten test_days / validation_days."
            )
    return split


def matrix(frame: pl.DataFrame):
    """The model's input matrix: FEATURE_COLUMNS as float64 (booleans as 0/1), NaN for null."""
    return frame.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_numpy()


def target_vector(frame: pl.DataFrame, target: str) -> np.ndarray:
    return frame.get_column(target).cast(pl.Int8).to_numpy()


def persistence_scores(frame: pl.DataFrame, target: str) -> np.ndarray:
    """The baseline: tomorrow looks like now. Score = -current count (fewer = riskier)."""
    return -frame.get_column(TARGETS[target]).cast(pl.Float64).fill_null(1e9).to_numpy()


def persistence_flags(frame: pl.DataFrame, target: str, threshold: int) -> np.ndarray:
    return (frame.get_column(TARGETS[target]).fill_null(1e9) <= threshold).cast(pl.Int8).to_numpy()


def calibrated_persistence(fit: pl.DataFrame, target: str) -> pl.DataFrame:
    """Persistence as a probability: P(stockout at t + 30) per current count, the observed
    rate on `fit` (the rows the model is fit on). Scoring a Brier against this, not against
    0/1 flags, compares calibrated forecasts with calibrated forecasts."""
    return (
        fit.select(
            pl.col(TARGETS[target]).cast(pl.Int64).alias("count"),
            pl.col(target).cast(pl.Float64).alias("y"),
        )
        .drop_nulls("y")
        .group_by("count")
        .agg(pl.col("y").mean().alias("p"), pl.len().alias("rows"))
        .sort("count", nulls_last=True)
    )


def calibrated_persistence_scores(
    table: pl.DataFrame, frame: pl.DataFrame, target: str
) -> np.ndarray:
    """P per row from `calibrated_persistence`: a count never seen in fitting takes the rate
    of the nearest smaller count that was (the largest seen when above them all); a null
    count takes the rate of null-count rows, or the overall rate."""
    seen = table.drop_nulls("count")
    overall = float((table["p"] * table["rows"]).sum() / table["rows"].sum())
    null_rate = table.filter(pl.col("count").is_null()).get_column("p")
    counts = frame.select(
        pl.int_range(pl.len()).alias("_row"),
        pl.col(TARGETS[target]).cast(pl.Int64).alias("count"),
    )
    known = (
        counts.drop_nulls("count")
        .sort("count")
        .join_asof(seen.select("count", "p"), on="count", strategy="backward")
        .with_columns(pl.col("p").fill_null(seen["p"][0] if seen.height else overall))
    )
    out = counts.join(known.select("_row", "p"), on="_row", how="left").sort("_row")
    fill = float(null_rate[0]) if null_rate.len() else overall
    return out.get_column("p").fill_null(fill).to_numpy()


def best_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Decision threshold maximising F1 on validation; returns (threshold, F1).

    Every distinct score is a candidate (flag p >= threshold); on ties the lowest wins."""
    if not np.any(y):
        return 0.5, 0.0  # nothing to find: every threshold scores F1 = 0
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def classification_metrics(y: np.ndarray, p: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    return {
        "pr_auc": float(average_precision_score(y, p)),
        "roc_auc": float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else float("nan"),
        "f1": float(f1_score(y, flags, zero_division=0)),
        "f2": float(fbeta_score(y, flags, beta=2, zero_division=0)),
        "precision": float(precision_score(y, flags, zero_division=0)),
        "recall": float(recall_score(y, flags, zero_division=0)),
    }


@dataclass(frozen=True)
class TuningConfig:
    # 30 trials: Optuna's TPE samples from its model after 10 random ones (n_startup_trials,
    # see `startup_trials`); the demo passes fewer to stay within its time.
    n_trials: int = 30
    seed: int = 42
    max_rounds: int = 800
    early_stopping_rounds: int = 50
    num_threads: int = 0  # 0 = LightGBM's default (all cores)
    timeout_s: float | None = None
    # A trial whose overfit gap (train minus validation PR-AUC) is at or above this is
    # infeasible for the sampler and is never chosen: the promotion gate's own limit.
    max_overfit_gap: float = GateThresholds().max_overfit_gap
    prune_warmup_rounds: int = 30  # MedianPruner: no pruning before this many rounds
    # Where the study is kept (an Optuna journal file, one per study); None = in memory.
    journal_path: Path | None = None
    study_name: str | None = None


def startup_trials(n_trials: int) -> int:
    """Random trials before TPE models the search: Optuna's default 10 when there are enough
    trials, else a third (at least 2), so a short search is still mostly TPE."""
    return min(10, max(2, n_trials // 3))


@dataclass
class TrainedTarget:
    target: str
    booster: lgb.Booster  # refit on train + validation: the model that is registered
    params: dict[str, Any]
    threshold: float
    metrics: dict[str, float]
    validation_f1: float
    n_trials_completed: int
    feature_importance: dict[str, float]
    test_scores: np.ndarray
    test_labels: np.ndarray
    baseline_calibrated_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    study: optuna.Study | None = None
    training_data_end: str = ""  # the newest snapshot the registered model was fit on
    journal_path: str = ""  # the Optuna journal holding the study ("" = in memory)


def monotone_constraints(target: str) -> list[int]:
    """-1 (risk never rises) for the target's own count and every feature that moves with
    it one way when only the current count changes: the net flows, window means, minima and
    trends of that count, and utilisation (bikes / (bikes + docks): up with bikes, down
    with docks). The window variance moves with the count but not one way, so it is free.
    Without these, "more bikes never raises P(no bikes)" fails in a joint sweep."""
    count = TARGETS[target]
    prefix = count.split("_")[0]  # bikes | docks
    tied = {count}
    for c in FEATURE_COLUMNS:
        if c.startswith(f"{prefix}_") and any(
            s in c for s in ("_net_flow_", "_mean_", "_min_", "_trend_per_h_")
        ):
            tied.add(c)
    utilisation = -1 if prefix == "bikes" else 1
    return [-1 if c in tied else utilisation if c == "utilisation" else 0 for c in FEATURE_COLUMNS]


def _dataset(frame: pl.DataFrame, target: str, reference=None) -> lgb.Dataset:
    return lgb.Dataset(
        matrix(frame),
        target_vector(frame, target),
        feature_name=FEATURE_COLUMNS,
        reference=reference,
    )


def _fit(params: dict[str, Any], split: Split, target: str, tuning: TuningConfig, callbacks=()):
    """Fit on train, early-stopped on validation (a trial, and the selection model)."""
    train = _dataset(split.train, target)
    valid = _dataset(split.validation, target, reference=train)
    return lgb.train(
        params,
        train,
        num_boost_round=tuning.max_rounds,
        valid_sets=[valid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(tuning.early_stopping_rounds, verbose=False), *callbacks],
    )


def refit(params: dict[str, Any], fit_rows: pl.DataFrame, target: str, rounds: int) -> lgb.Booster:
    """The registered model: the chosen parameters and number of rounds, fit once on train +
    validation (no early stopping: the rounds were chosen on validation)."""
    return lgb.train(params, _dataset(fit_rows, target), num_boost_round=max(1, rounds))


def _study(tuning: TuningConfig) -> optuna.Study:
    storage = None
    if tuning.journal_path is not None:
        tuning.journal_path.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(tuning.journal_path)))

    return optuna.create_study(
        study_name=tuning.study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(
            seed=tuning.seed,
            n_startup_trials=startup_trials(tuning.n_trials),
            multivariate=True,
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=3, n_warmup_steps=tuning.prune_warmup_rounds
        ),
    )


def train_target(
    split: Split, target: str, threshold_count: int, tuning: TuningConfig
) -> TrainedTarget:
    """Choose on validation, refit on train + validation, test once.

    Optuna (TPE, pruning, the overfit-gap limit as a constraint) searches LightGBM's
    parameters fit on train and early-stopped on validation PR-AUC; the best feasible trial
    gives the parameters, the number of rounds and (from its validation scores) the decision
    threshold. That configuration is refit on train + validation and evaluated on test.

    No class weighting: LightGBM's log loss on the true class balance serves probabilities
    that match observed rates (docs/training_eval.md has the measurement against isotonic
    and Platt calibration)."""
    y_train = target_vector(split.train, target)
    x_train = matrix(split.train)
    base = {
        "objective": "binary",
        "metric": "average_precision",
        "verbosity": -1,
        "seed": tuning.seed,
        "deterministic": True,
        "num_threads": tuning.num_threads,
        "feature_pre_filter": False,
        "monotone_constraints": monotone_constraints(target),
        "monotone_constraints_method": "intermediate",
        "max_bin": 63,
        "bagging_freq": 1,
    }
    boosters: dict[int, lgb.Booster] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {
            **base,
            "learning_rate": trial.suggest_float("learning_rate", 0.04, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 100, 3000, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.6, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-2, 50.0, log=True),
        }
        booster = _fit(
            params,
            split,
            target,
            tuning,
            [LightGBMPruningCallback(trial, "average_precision", "validation")],
        )
        val_pr = float(booster.best_score["validation"]["average_precision"])
        train_pr = float(
            average_precision_score(
                y_train, booster.predict(x_train, num_iteration=booster.best_iteration)
            )
        )
        trial.set_user_attr("overfit_gap", train_pr - val_pr)
        # The overfit-gap rule as an Optuna constraint (<= 0 is feasible; the gate refuses a
        # gap equal to its limit): TPE learns to avoid infeasible regions and best_trial
        # picks among feasible trials only. (Optuna 5's form of TPESampler's
        # `constraints_func`, which it deprecates; a pruned trial has no constraint.)
        trial.set_constraint("overfit_gap", train_pr - val_pr - tuning.max_overfit_gap + 1e-9)
        trial.set_user_attr("train_pr_auc", train_pr)
        trial.set_user_attr("best_iteration", booster.best_iteration)
        boosters[trial.number] = booster
        return val_pr

    study = _study(tuning)
    study.optimize(objective, n_trials=tuning.n_trials, timeout=tuning.timeout_s)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(
            f"{target}: no Optuna trial completed ({len(study.trials)} started); raise n_trials "
            "or timeout."
        )
    try:
        chosen = study.best_trial  # the best among trials within the overfit-gap limit
    except ValueError:
        chosen = max(complete, key=lambda t: t.value or 0.0)
        log.warning(
            "%s: no trial kept the overfit gap below %.2f; using the best (the gate will say no)",
            target,
            tuning.max_overfit_gap,
        )
    selection = boosters[chosen.number]
    params = {**base, **chosen.params}
    rounds = selection.best_iteration or selection.current_iteration()

    p_val = selection.predict(matrix(split.validation), num_iteration=rounds)
    y_val = target_vector(split.validation, target)
    threshold, val_f1 = best_threshold(y_val, p_val)
    train_pr = float(chosen.user_attrs["train_pr_auc"])
    val_pr = float(average_precision_score(y_val, p_val))

    fit_rows = pl.concat([split.train, split.validation], how="vertical_relaxed")
    booster = refit(params, fit_rows, target, rounds)
    p_test = booster.predict(matrix(split.test))
    y_test = target_vector(split.test, target)

    model = classification_metrics(y_test, p_test, (p_test >= threshold).astype(np.int8))
    persistence = persistence_scores(split.test, target)
    baseline = classification_metrics(
        y_test, persistence, persistence_flags(split.test, target, threshold_count)
    )
    calibrated = calibrated_persistence_scores(
        calibrated_persistence(fit_rows, target), split.test, target
    )
    new_model = new_stockout_metrics(split.test, target, threshold_count, p_test)
    new_baseline = new_stockout_metrics(split.test, target, threshold_count, persistence)
    states = [t.state for t in study.trials]
    metrics = {
        **{f"test_{k}": v for k, v in model.items()},
        "test_brier": float(brier_score_loss(y_test, p_test)),
        "test_calibration_error": expected_calibration_error(y_test, p_test),
        "test_mean_p": float(p_test.mean()),
        **{f"test_{k}": v for k, v in new_model.items()},
        "train_pr_auc": train_pr,
        "validation_pr_auc": val_pr,
        "overfit_gap": train_pr - val_pr,
        "validation_f1": val_f1,
        **{f"baseline_test_{k}": v for k, v in baseline.items()},
        **{f"baseline_test_{k}": v for k, v in new_baseline.items()},
        # Persistence as P(stockout | current count), fitted on the model's own fit rows.
        "baseline_calibrated_test_brier": float(brier_score_loss(y_test, calibrated)),
        "baseline_calibrated_test_calibration_error": expected_calibration_error(
            y_test, calibrated
        ),
        "test_base_rate": float(y_test.mean()),
        "test_new_rows": float(not_stocked_out(split.test, target, threshold_count).sum()),
        "test_rows": float(len(y_test)),
        "train_rows": float(len(y_train)),
        "validation_rows": float(len(y_val)),
        "fit_rows": float(fit_rows.height),
        "best_iteration": float(rounds),
        "decision_threshold": threshold,
        "n_trials_completed": float(states.count(optuna.trial.TrialState.COMPLETE)),
        "n_trials_pruned": float(states.count(optuna.trial.TrialState.PRUNED)),
        "n_trials_failed": float(states.count(optuna.trial.TrialState.FAIL)),
        "n_trials_infeasible": float(
            sum(1 for t in complete if t.user_attrs["overfit_gap"] >= tuning.max_overfit_gap)
        ),
    }
    importance = dict(
        zip(
            FEATURE_COLUMNS,
            booster.feature_importance(importance_type="gain").tolist(),
            strict=True,
        )
    )
    return TrainedTarget(
        target=target,
        booster=booster,
        params={k: v for k, v in params.items() if not (isinstance(v, float) and math.isnan(v))},
        threshold=threshold,
        metrics=metrics,
        validation_f1=val_f1,
        n_trials_completed=len(complete),
        feature_importance=importance,
        test_scores=p_test,
        test_labels=y_test,
        baseline_calibrated_scores=calibrated,
        study=study,
        training_data_end=str(fit_rows.get_column("snapshot_at").max()),
        journal_path=str(tuning.journal_path or ""),
    )
