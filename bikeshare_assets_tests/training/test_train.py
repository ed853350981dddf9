"""Training: the time-ordered split and its embargo, the decision threshold, the persistence
baseline, and one real (small, fast) Optuna + LightGBM run on a simulated city."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
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
from bikeshare_assets.features.labels import HORIZON
from bikeshare_assets.training.train import (
    SplitConfig,
    best_threshold,
    classification_metrics,
    matrix,
    persistence_flags,
    persistence_scores,
    time_split,
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
    "baseline_test_brier",
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
    assert m["baseline_test_brier"] == pytest.approx(brier_score_loss(y, persist))
    # And the model learnt something persistence does not know.
    assert m["test_pr_auc"] > m["baseline_test_pr_auc"]
    assert sorted(result.feature_importance) == sorted(FEATURE_COLUMNS)
    assert result.feature_importance["bikes_available"] > 0
