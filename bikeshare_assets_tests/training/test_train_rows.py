"""Which rows each training decision sees: the test rows never influence the model, its
early stopping or its decision threshold; early stopping watches the validation rows.

Written against the public `train_target` (and LightGBM itself), so they hold whatever the
internals look like: a test that depends on how train.py is organised would be rewritten
with it and catch nothing.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.training.train import Split, matrix, target_vector, train_target
from bikeshare_assets_tests.support.training_data import (
    SPLIT_A,
    THRESHOLD,
    TUNING,
    simulated_split,
    trained,
)

TARGET = "stockout_bikes"


def _with_test_labels_inverted(split: Split) -> Split:
    """The same split, except every test label says the opposite."""
    inverted = split.test.with_columns(
        (1 - pl.col(t).cast(pl.Int8)).cast(split.test.schema[t]).alias(t) for t in TARGETS
    )
    return Split(
        train=split.train,
        validation=split.validation,
        test=inverted,
        boundaries=dict(split.boundaries),
    )


def test_test_labels_never_reach_the_model_its_stopping_or_its_threshold() -> None:
    """Inverting every test label may only change the test scores. If the threshold were
    chosen on test rows (test F1 rises, nothing else fails) or early stopping watched them,
    the two runs would differ."""
    split = simulated_split(SPLIT_A)
    honest = trained(TARGET, SPLIT_A)  # train_target(split, TARGET, THRESHOLD, TUNING), shared
    tampered = train_target(_with_test_labels_inverted(split), TARGET, THRESHOLD, TUNING)

    # The tampered labels did reach the scoring, so this test can tell the difference.
    assert tampered.metrics["test_pr_auc"] != honest.metrics["test_pr_auc"]
    assert (tampered.test_labels == 1 - honest.test_labels).all()

    assert tampered.threshold == honest.threshold
    assert tampered.metrics["best_iteration"] == honest.metrics["best_iteration"]
    assert tampered.params == honest.params
    x_val = matrix(split.validation)
    assert np.array_equal(tampered.booster.predict(x_val), honest.booster.predict(x_val))


def _early_stopped_at(
    params: dict, split: Split, watched: pl.DataFrame, rounds: int, patience: int
):
    """LightGBM's own early stopping with these params, watching `watched` rows."""
    train = lgb.Dataset(
        matrix(split.train), target_vector(split.train, TARGET), feature_name=FEATURE_COLUMNS
    )
    valid = lgb.Dataset(matrix(watched), target_vector(watched, TARGET), reference=train)
    booster = lgb.train(
        params,
        train,
        num_boost_round=rounds,
        valid_sets=[valid],
        valid_names=["watched"],
        callbacks=[lgb.early_stopping(patience, verbose=False)],
    )
    return booster.best_iteration


def test_early_stopping_watches_the_validation_rows() -> None:
    """The reported best iteration is where LightGBM stops when it watches the validation
    rows; watching the training or the test rows stops elsewhere on this data."""
    split = simulated_split(SPLIT_A)
    result = trained(TARGET, SPLIT_A)
    rounds, patience = TUNING.max_rounds, TUNING.early_stopping_rounds

    def stop(rows: pl.DataFrame) -> int:
        return _early_stopped_at(result.params, split, rows, rounds, patience)

    on_validation = stop(split.validation)
    assert result.metrics["best_iteration"] == on_validation
    # Discriminating on this data: each wrong choice of rows gives another iteration.
    assert stop(split.test) != on_validation
    assert stop(split.train) != on_validation
