"""Training: the time-ordered split and its embargo, the decision threshold, the persistence
baseline, and one real (small, fast) Optuna + LightGBM run on a simulated city."""

from __future__ import annotations

import math
from datetime import timedelta

import lightgbm as lgb
import numpy as np
import optuna
import polars as pl
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import HORIZON, TARGETS
from bikeshare_assets.monitoring.quality import (
    new_stockout_metrics,
    not_stocked_out,
    precision_at_k,
)
from bikeshare_assets.training.train import (
    SplitConfig,
    TuningConfig,
    best_threshold,
    calibrated_persistence,
    calibrated_persistence_scores,
    classification_metrics,
    matrix,
    persistence_flags,
    persistence_scores,
    startup_trials,
    time_split,
    train_target,
)
from bikeshare_assets_tests.support.frames import utc
from bikeshare_assets_tests.support.training_data import (
    SPLIT_A,
    THRESHOLD,
    simulated_frame,
    simulated_split,
    trained,
)

REQUIRED_METRICS = (
    "test_pr_auc",
    "test_roc_auc",
    "test_f1",
    "test_precision",
    "test_recall",
    "test_brier",
    "overfit_gap",
    "baseline_test_pr_auc",
    "baseline_test_f1",
    "baseline_calibrated_test_brier",
    "test_calibration_error",
    "test_pr_auc_new",
    "test_precision_at_20_new",
    "baseline_test_pr_auc_new",
    "baseline_test_precision_at_20_new",
)


# --------------------------------------------------------------------------------------
# Time-ordered split with an embargo
# --------------------------------------------------------------------------------------


def grid_frame(days: int = 5) -> pl.DataFrame:
    start = utc(2026, 1, 5)
    times = [start + timedelta(minutes=15 * i) for i in range(days * 96)]
    return pl.DataFrame(
        {
            "snapshot_at": [t for t in times for _ in range(2)],
            "station_id": ["a", "b"] * len(times),
        }
    )


def test_time_split_is_ordered_with_a_30_minute_embargo() -> None:
    frame = grid_frame()
    end = frame["snapshot_at"].max()
    split = time_split(frame, SplitConfig(test_days=1.0, validation_days=1.5))
    test_start = end - timedelta(days=1)
    val_start = test_start - timedelta(days=1.5)
    assert SplitConfig().embargo == HORIZON == timedelta(minutes=30)

    train, val, test = (s["snapshot_at"] for s in (split.train, split.validation, split.test))
    assert train.max() < val.min() <= val.max() < test.min()
    assert val.min() == val_start and test.min() == test_start and test.max() == end
    # On a 15-minute grid the last training snapshot is 45 minutes before validation starts:
    # its label (t + 30) is still in the training period.
    assert train.max() == val_start - timedelta(minutes=45)
    assert val.max() == test_start - timedelta(minutes=45)
    assert (train + HORIZON < val_start).all()
    assert (val + HORIZON < test_start).all()
    # Exactly the snapshots whose label would cross a boundary are left out, nothing else.
    used = set(train) | set(val) | set(test)
    assert set(frame["snapshot_at"]) - used == {
        val_start - timedelta(minutes=30),
        val_start - timedelta(minutes=15),
        test_start - timedelta(minutes=30),
        test_start - timedelta(minutes=15),
    }
    assert split.train.height + split.validation.height + split.test.height == frame.height - 8
    assert split.boundaries["validation_start"] == str(val_start)
    assert split.boundaries["embargo_minutes"] == "30"


def test_time_split_embargo_is_configurable_and_empty_windows_are_refused() -> None:
    frame = grid_frame()
    split = time_split(
        frame, SplitConfig(test_days=1.0, validation_days=1.0, embargo=timedelta(hours=2))
    )
    val_start = split.validation["snapshot_at"].min()
    assert split.train["snapshot_at"].max() == val_start - timedelta(hours=2, minutes=15)

    with pytest.raises(ValueError, match=r"the train window is empty"):
        time_split(grid_frame(days=2), SplitConfig(test_days=1.0, validation_days=1.5))


def test_time_split_of_the_simulated_city() -> None:
    split = simulated_split(SPLIT_A)
    train, val, test = (s["snapshot_at"] for s in (split.train, split.validation, split.test))
    assert train.max() + HORIZON < val.min() and val.max() + HORIZON < test.min()
    assert test.max() - test.min() <= timedelta(days=1)
    # every matured (features, label) row is in exactly one window, or in an embargo
    total = split.train.height + split.validation.height + split.test.height
    assert 0 < simulated_frame().height - total < 2 * 2 * 100


# --------------------------------------------------------------------------------------
# Decision threshold and the persistence baseline
# --------------------------------------------------------------------------------------


def exhaustive_best_f1(y: np.ndarray, p: np.ndarray) -> float:
    return max(f1_score(y, p >= c, zero_division=0) for c in np.unique(p))


def test_best_threshold_known_answer() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 1])
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9])
    threshold, f1 = best_threshold(y, p)
    # Flagging p >= 0.5 catches all three stockouts with one false alarm: F1 = 6/7. (p >= 0.7
    # gives 0.8, p >= 0.4 gives 0.75.)
    assert f1 == pytest.approx(6 / 7)
    assert ((p >= threshold) == (p >= 0.5)).all()


@pytest.mark.parametrize(
    ("y", "p"),
    [
        # rare stockouts, as in the city
        (
            np.array([0] * 14 + [1, 0, 1, 0, 1, 1]),
            np.array([0.01 * i for i in range(1, 15)] + [0.5, 0.55, 0.6, 0.7, 0.8, 0.95]),
        ),
        # stockouts in the majority (a quiet night at an empty station): the best threshold
        # flags more than half of the rows
        (
            np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
            np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
        ),
        # tied scores
        (np.array([0, 1, 0, 1, 1, 0, 0, 1]), np.array([0.2, 0.2, 0.4, 0.4, 0.4, 0.1, 0.1, 0.9])),
    ],
)
def test_best_threshold_maximises_f1(y: np.ndarray, p: np.ndarray) -> None:
    threshold, f1 = best_threshold(y, p)
    assert f1 == pytest.approx(exhaustive_best_f1(y, p))
    assert f1_score(y, p >= threshold) == pytest.approx(f1)


def test_persistence_baseline_known_answer() -> None:
    frame = pl.DataFrame(
        {
            "bikes_available": [0.0, 1.0, 2.0, 3.0, 5.0, 10.0, None],
            "docks_available": [9.0, 9.0, 2.0, 9.0, 9.0, 0.0, 9.0],
            "stockout_bikes": [True, True, False, True, False, False, False],
        }
    )
    y = frame["stockout_bikes"].cast(pl.Int8).to_numpy()
    scores = persistence_scores(frame, "stockout_bikes")
    flags = persistence_flags(frame, "stockout_bikes", THRESHOLD)

    # "In 30 minutes it will look like now": fewer bikes now = riskier; flagged at <= 2.
    assert flags.tolist() == [1, 1, 1, 0, 0, 0, 0]  # a station that reported no count: not flagged
    assert scores.tolist()[:6] == [-0.0, -1.0, -2.0, -3.0, -5.0, -10.0] and scores[6] == -1e9
    assert persistence_flags(frame, "stockout_docks", THRESHOLD).tolist() == [0, 0, 1, 0, 0, 1, 0]
    metrics = classification_metrics(y, scores, flags)
    # Ranked: 0 (stockout), 1 (stockout), 2 (no), 3 (stockout): AP = (1 + 1 + 3/4) / 3
    assert metrics["pr_auc"] == pytest.approx(11 / 12)
    # 3 stockouts x 4 non-stockouts: only (3 bikes, 2 bikes) of the 12 pairs is ranked wrong
    assert metrics["roc_auc"] == pytest.approx(11 / 12)
    # flagged 0, 1, 2: two hits, one false alarm, one miss (3 bikes)
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == pytest.approx(
        (2 / 3, 2 / 3, 2 / 3)
    )


# --------------------------------------------------------------------------------------
# A real training run
# --------------------------------------------------------------------------------------


def test_train_target_on_a_simulated_city_reports_every_metric() -> None:
    split = simulated_split(SPLIT_A)
    result = trained("stockout_bikes", SPLIT_A)
    m = result.metrics

    missing = [k for k in REQUIRED_METRICS if k not in m]
    assert not missing
    assert all(math.isfinite(m[k]) for k in REQUIRED_METRICS)
    assert result.n_trials_completed == 2
    assert m["test_rows"] == split.test.height == len(result.test_labels)
    assert (m["train_rows"], m["validation_rows"]) == (split.train.height, split.validation.height)

    # The metrics are what they say they are, recomputed here from the test rows.
    y = split.test["stockout_bikes"].cast(pl.Int8).to_numpy()
    p = result.booster.predict(matrix(split.test), num_iteration=result.booster.best_iteration)
    assert np.allclose(p, result.test_scores) and ((p >= 0) & (p <= 1)).all()
    assert (y == result.test_labels).all() and 0 < y.mean() < 0.5
    flags = p >= result.threshold
    assert m["decision_threshold"] == result.threshold
    assert m["test_pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["test_roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["test_f1"] == pytest.approx(f1_score(y, flags))
    assert m["test_precision"] == pytest.approx(precision_score(y, flags))
    assert m["test_recall"] == pytest.approx(recall_score(y, flags))
    assert m["test_brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["overfit_gap"] == pytest.approx(m["train_pr_auc"] - m["validation_pr_auc"])
    # The baseline is persistence on the very same rows.
    bikes = split.test["bikes_available"].to_numpy()
    persist = (bikes <= THRESHOLD).astype(int)
    assert m["baseline_test_pr_auc"] == pytest.approx(average_precision_score(y, -bikes))
    assert m["baseline_test_f1"] == pytest.approx(f1_score(y, persist))
    # Brier is compared with persistence as a probability: the stockout rate per current
    # count on the rows the model was fit on (train + validation), not 0/1 flags.
    fit = pl.concat([split.train, split.validation])
    seen = fit["bikes_available"].unique().sort().to_list()
    rate = {
        c: fit.filter(pl.col("bikes_available") == c)["stockout_bikes"].cast(pl.Float64).mean()
        for c in seen
    }
    # a count never seen in fitting takes the nearest smaller seen count's rate
    calibrated = np.array([rate[max(c2 for c2 in seen if c2 <= c)] for c in bikes])
    assert m["baseline_calibrated_test_brier"] == pytest.approx(brier_score_loss(y, calibrated))
    # And the model learnt something persistence does not know.
    assert m["test_pr_auc"] > m["baseline_test_pr_auc"]
    assert sorted(result.feature_importance) == sorted(FEATURE_COLUMNS)
    assert result.feature_importance["bikes_available"] > 0


# --------------------------------------------------------------------------------------
# Calibrated probabilities (issue 10, item 6)
# --------------------------------------------------------------------------------------


def test_calibrated_persistence_known_answer() -> None:
    fit = pl.DataFrame(
        {
            "bikes_available": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, None, None],
            "stockout_bikes": [1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0],
        }
    ).with_columns(pl.col("stockout_bikes").cast(pl.Boolean))
    table = calibrated_persistence(fit, "stockout_bikes")
    test = pl.DataFrame({"bikes_available": [0.0, 1.0, 2.0, 3.0, 9.0, None]})
    p = calibrated_persistence_scores(table, test, "stockout_bikes")
    # observed rates per count: 0 -> 3/4, 1 -> 1/2, 3 -> 1/4; 2 was never seen: the nearest
    # smaller count's rate; 9 is above them all: the largest seen; no count: null rows' rate
    assert p.tolist() == pytest.approx([0.75, 0.5, 0.5, 0.25, 0.25, 0.0])


@pytest.mark.parametrize("target", ["stockout_bikes", "stockout_docks"])
def test_served_probabilities_are_calibrated_and_beat_calibrated_persistence(
    target: str,
) -> None:
    """No class weighting: the mean probability matches the stockout rate, the calibration
    error is small, and the Brier score beats persistence as a probability. With
    scale_pos_weight the mean P was a multiple of the base rate."""
    result = trained(target, SPLIT_A)
    m = result.metrics
    assert "scale_pos_weight" not in result.params and "is_unbalance" not in result.params
    p, y = result.test_scores, result.test_labels
    assert m["test_mean_p"] == pytest.approx(p.mean())
    assert abs(p.mean() - y.mean()) < 0.25 * y.mean()
    assert m["test_calibration_error"] < 0.02
    assert m["test_brier"] < m["baseline_calibrated_test_brier"]


# --------------------------------------------------------------------------------------
# Refit on train + validation (item 7)
# --------------------------------------------------------------------------------------


def test_registered_booster_is_refit_on_train_and_validation() -> None:
    """The booster that is registered is the chosen configuration fit on train + validation
    for the number of rounds chosen on validation: an independent fit reproduces it."""
    split = simulated_split(SPLIT_A)
    result = trained("stockout_bikes", SPLIT_A)
    m = result.metrics
    fit = pl.concat([split.train, split.validation])
    assert m["fit_rows"] == fit.height == m["train_rows"] + m["validation_rows"]
    rounds = int(m["best_iteration"])
    assert result.booster.num_trees() == rounds
    again = lgb.train(
        result.params,
        lgb.Dataset(
            matrix(fit),
            fit["stockout_bikes"].cast(pl.Int8).to_numpy(),
            feature_name=FEATURE_COLUMNS,
        ),
        num_boost_round=rounds,
    )
    x = matrix(split.test)
    assert np.allclose(result.booster.predict(x), again.predict(x), rtol=0, atol=1e-12)
    assert result.training_data_end == str(split.validation["snapshot_at"].max())


# --------------------------------------------------------------------------------------
# Optuna: TPE, the overfit-gap constraint, a kept study, completed trials (item 8)
# --------------------------------------------------------------------------------------


def test_search_uses_tpe_with_the_gap_constraint_and_keeps_the_study(tmp_path) -> None:
    split = simulated_split(SPLIT_A)
    journal = tmp_path / "optuna" / "study.journal"
    tuning = TuningConfig(
        n_trials=6,
        seed=7,
        num_threads=1,
        max_rounds=150,
        prune_warmup_rounds=0,  # prune from the first round: some trials must be pruned
        max_overfit_gap=0.06,
        journal_path=journal,
        study_name="sim-bikes",
    )
    result = train_target(split, "stockout_bikes", THRESHOLD, tuning)
    study = result.study
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.sampler._n_startup_trials == startup_trials(6) == 2
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert optuna.trial.TrialState.PRUNED in states  # so "completed" can be miscounted
    assert result.n_trials_completed == len(complete) < len(study.trials) == 6
    assert result.metrics["n_trials_completed"] == len(complete)
    assert result.metrics["n_trials_pruned"] == states.count(optuna.trial.TrialState.PRUNED)

    # Every completed trial carries the overfit-gap rule as a constraint; the chosen one is
    # the best feasible trial (no hand-picking), and its gap is what the metrics report.
    for t in complete:
        assert t.constraints["overfit_gap"] == pytest.approx(t.user_attrs["overfit_gap"] - 0.06)
    feasible = [t for t in complete if t.user_attrs["overfit_gap"] < 0.06]
    assert feasible
    chosen = max(feasible, key=lambda t: t.value)
    assert study.best_trial.number == chosen.number
    assert result.metrics["overfit_gap"] == pytest.approx(chosen.user_attrs["overfit_gap"])
    assert result.metrics["n_trials_infeasible"] == len(complete) - len(feasible)

    # The study is kept in its journal and can be reopened.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    reopened = optuna.load_study(study_name="sim-bikes", storage=storage)
    assert [t.state for t in reopened.trials] == states
    assert result.journal_path == str(journal)


def test_startup_trials_leave_room_for_tpe() -> None:
    assert startup_trials(TuningConfig().n_trials) == 10  # Optuna's default, with 30 trials
    assert TuningConfig().n_trials >= 30
    assert startup_trials(8) == 2 and startup_trials(2) == 2


# --------------------------------------------------------------------------------------
# New stockouts: stations fine at t (item 11)
# --------------------------------------------------------------------------------------


def test_precision_at_k_counts_ties_at_their_mean() -> None:
    t = np.array([1, 1, 1, 1, 2, 2, 2])
    y = np.array([1, 0, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.5, 0.5, 0.1, 3.0, 2.0, 1.0])
    # snapshot 1, k=2: 0.9 (hit) then one of the tied 0.5s (half a hit): 1.5 / 2
    # snapshot 2, k=2: 3.0 (miss), 2.0 (hit): 1 / 2
    assert precision_at_k(t, y, s, 2) == pytest.approx((0.75 + 0.5) / 2)
    # fewer rows than k: all of them
    assert precision_at_k(t, y, s, 10) == pytest.approx((0.5 + 1 / 3) / 2)


def test_new_stockout_metrics_use_only_stations_fine_at_t() -> None:
    at = [utc(2026, 1, 5, 8, 0)] * 6
    frame = pl.DataFrame(
        {
            "snapshot_at": at,
            "bikes_available": [0.0, 2.0, 3.0, 4.0, 8.0, None],
            "stockout_bikes": [True, True, True, False, False, True],
        }
    )
    scores = np.array([0.99, 0.9, 0.2, 0.6, 0.1, 0.95])
    m = new_stockout_metrics(frame, "stockout_bikes", THRESHOLD, scores, k=1)
    # only 3, 4 and 8 bikes are "fine at t" (> 2, known): the model ranks 4 (no) above 3 (yes)
    assert m["pr_auc_new"] == pytest.approx(0.5)
    assert m["precision_at_1_new"] == 0.0
    lowest_first = new_stockout_metrics(
        frame, "stockout_bikes", THRESHOLD, persistence_scores(frame, "stockout_bikes"), k=1
    )
    assert lowest_first["pr_auc_new"] == 1.0 and lowest_first["precision_at_1_new"] == 1.0


@pytest.mark.parametrize("target", ["stockout_bikes", "stockout_docks"])
def test_new_stockout_metrics_are_logged_for_model_and_baseline(target: str) -> None:
    split = simulated_split(SPLIT_A)
    result = trained(target, SPLIT_A)
    m = result.metrics
    fine = not_stocked_out(split.test, target, THRESHOLD)
    assert 0 < fine.sum() < split.test.height and m["test_new_rows"] == fine.sum()
    y = split.test[target].cast(pl.Int8).to_numpy()
    assert m["test_pr_auc_new"] == pytest.approx(
        average_precision_score(y[fine], result.test_scores[fine])
    )
    count = split.test[TARGETS[target]].to_numpy()
    assert m["baseline_test_pr_auc_new"] == pytest.approx(
        average_precision_score(y[fine], -count[fine])
    )
    times = split.test["snapshot_at"].to_physical().to_numpy()
    assert m["test_precision_at_20_new"] == pytest.approx(
        precision_at_k(times[fine], y[fine], result.test_scores[fine], 20)
    )
    assert m["baseline_test_precision_at_20_new"] == pytest.approx(
        precision_at_k(times[fine], y[fine], -count[fine], 20)
    )
    # on new stockouts the model knows more than the lowest count
    assert m["test_pr_auc_new"] > m["baseline_test_pr_auc_new"]


def test_the_asset_config_defaults_to_the_tuning_trial_count() -> None:
    """TrainingConfig repeats TuningConfig's default (training.train loads only when a run
    trains): the two must not drift apart."""
    from bikeshare_assets.training.assets import TrainingConfig
    from bikeshare_assets.training.train import TuningConfig

    assert TrainingConfig().n_trials == TuningConfig().n_trials
