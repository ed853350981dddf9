"""Training one stockout classifier: time-ordered split, Optuna-tuned LightGBM, threshold,
metrics against the persistence baseline. Pure functions on polars frames, no Dagster."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import polars as pl
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

log = logging.getLogger(__name__)
# The promotion gate refuses an overfit gap (train minus validation PR-AUC) of 0.10 or more;
# the search is steered below this. On the Paris recording even the parameter-free
# persistence baseline scores ~0.08 higher on the training days than on the validation
# day, so part of any gap is the days being different, not the model memorising.
OVERFIT_GAP_TARGET = 0.08
OVERFIT_GAP_LIMIT = 0.095  # a trial at or above this is not picked when another is below


def _pick_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best validation PR-AUC among trials whose overfit gap is under the limit; the
    penalised best when none is."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    feasible = [t for t in done if t.user_attrs.get("overfit_gap", 1.0) < OVERFIT_GAP_LIMIT]
    if feasible:
        return max(feasible, key=lambda t: t.user_attrs["validation_pr_auc"])
    return study.best_trial


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
    n_trials: int = 8
    seed: int = 42
    max_rounds: int = 800
    early_stopping_rounds: int = 50
    num_threads: int = 0  # 0 = LightGBM's default (all cores)
    timeout_s: float | None = None


@dataclass
class TrainedTarget:
    target: str
    booster: lgb.Booster
    params: dict[str, Any]
    threshold: float
    metrics: dict[str, float]
    validation_f1: float
    n_trials_completed: int
    feature_importance: dict[str, float]
    test_scores: np.ndarray
    test_labels: np.ndarray


def _fit(params: dict[str, Any], split: Split, target: str, tuning: TuningConfig, callbacks=()):
    train = lgb.Dataset(
        matrix(split.train), target_vector(split.train, target), feature_name=FEATURE_COLUMNS
    )
    valid = lgb.Dataset(
        matrix(split.validation), target_vector(split.validation, target), reference=train
    )
    return lgb.train(
        params,
        train,
        num_boost_round=tuning.max_rounds,
        valid_sets=[valid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(tuning.early_stopping_rounds, verbose=False), *callbacks],
    )


def train_target(
    split: Split, target: str, threshold_count: int, tuning: TuningConfig
) -> TrainedTarget:
    """Optuna search (with pruning) over LightGBM on train, early-stopped and scored on
    validation PR-AUC; the decision threshold is chosen on validation; test is touched once."""
    y_train = target_vector(split.train, target)
    x_train = matrix(split.train)
    positives = max(1, int(y_train.sum()))
    imbalance = (len(y_train) - positives) / positives
    base = {
        "objective": "binary",
        "metric": "average_precision",
        "verbosity": -1,
        "seed": tuning.seed,
        "deterministic": True,
        "num_threads": tuning.num_threads,
        "feature_pre_filter": False,
        # More bikes now never raises P(no bikes) (docks alike), all else equal: the
        # behaviour operators expect, and a guard against fitting noise in sparse regions.
        "monotone_constraints": [-1 if c == TARGETS[target] else 0 for c in FEATURE_COLUMNS],
        "max_bin": 63,
    }

    def objective(trial: optuna.Trial) -> float:
        params = {
            **base,
            "learning_rate": trial.suggest_float("learning_rate", 0.04, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 100, 3000, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.6, 1.0),
            "bagging_freq": 1,
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-2, 50.0, log=True),
            # Class imbalance: weight positives between 1x and the full neg/pos ratio.
            "scale_pos_weight": trial.suggest_float(
                "scale_pos_weight", 1.0, max(1.0, imbalance), log=True
            ),
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
        trial.set_user_attr("validation_pr_auc", val_pr)
        # The promotion gate refuses an overfit gap >= 0.10: steer the search away from it.
        return val_pr - 10.0 * max(0.0, train_pr - val_pr - OVERFIT_GAP_TARGET)

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=tuning.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30),
    )
    study.optimize(objective, n_trials=tuning.n_trials, timeout=tuning.timeout_s)
    params = {**base, **_pick_trial(study).params, "bagging_freq": 1}
    booster = _fit(params, split, target, tuning)

    p_val = booster.predict(matrix(split.validation), num_iteration=booster.best_iteration)
    y_val = target_vector(split.validation, target)
    threshold, val_f1 = best_threshold(y_val, p_val)
    p_train = booster.predict(x_train, num_iteration=booster.best_iteration)
    p_test = booster.predict(matrix(split.test), num_iteration=booster.best_iteration)
    y_test = target_vector(split.test, target)

    model = classification_metrics(y_test, p_test, (p_test >= threshold).astype(np.int8))
    baseline = classification_metrics(
        y_test,
        persistence_scores(split.test, target),
        persistence_flags(split.test, target, threshold_count),
    )
    train_pr = float(average_precision_score(y_train, p_train))
    val_pr = float(average_precision_score(y_val, p_val))
    metrics = {
        **{f"test_{k}": v for k, v in model.items()},
        "test_brier": float(brier_score_loss(y_test, p_test)),
        "train_pr_auc": train_pr,
        "validation_pr_auc": val_pr,
        "overfit_gap": train_pr - val_pr,
        "validation_f1": val_f1,
        **{f"baseline_test_{k}": v for k, v in baseline.items()},
        # The persistence baseline's "probability" is its 0/1 flag.
        "baseline_test_brier": float(
            brier_score_loss(y_test, persistence_flags(split.test, target, threshold_count))
        ),
        "test_base_rate": float(y_test.mean()),
        "test_rows": float(len(y_test)),
        "train_rows": float(len(y_train)),
        "validation_rows": float(len(y_val)),
        "best_iteration": float(booster.best_iteration),
        "decision_threshold": threshold,
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
        n_trials_completed=len(study.trials),
        feature_importance=importance,
        test_scores=p_test,
        test_labels=y_test,
    )
