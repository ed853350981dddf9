"""Outcomes and live quality on hand-made partitions: predictions at t meet the labels at t
(which mature 30 minutes later), and the quality metrics give hand-computed answers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.features.labels import HORIZON, LABEL_SCHEMA
from bikeshare_assets.monitoring.quality import (
    expected_calibration_error,
    join_outcomes,
    quality_metrics,
)
from bikeshare_assets.partitions import materialize_range
from bikeshare_assets.serving.predict import PREDICTION_SCHEMA
from bikeshare_assets.storage import LakeStorage, partition_key_path
from bikeshare_assets_tests.conftest import (
    build_defs,
    materializations,
    pkey,
    settings_for,
    utc,
    write_cities,
)
from bikeshare_assets_tests.serving.champions import SIM_CITY, simulate_table

T0 = utc(2025, 9, 8, 10, 0)
T1 = T0 + timedelta(minutes=15)
T2 = T0 + timedelta(minutes=30)


def predictions(rows: list[tuple]) -> pl.DataFrame:
    """(t, station, p_bikes, p_docks, flag_bikes, flag_docks, source) -> stockout_predictions."""
    return pl.DataFrame(
        [
            {
                "snapshot_at": t,
                "station_id": s,
                "bikes_available": 5.0,
                "docks_available": 5.0,
                "p_stockout_bikes": pb,
                "p_stockout_docks": pd_,
                "flag_stockout_bikes": fb,
                "flag_stockout_docks": fd,
                "model_version": "persistence-baseline" if src == "fallback" else "m:v1",
                "source": src,
                "latency_ms": 3.0,
                "predicted_at": t,
            }
            for t, s, pb, pd_, fb, fd, src in rows
        ],
        schema=PREDICTION_SCHEMA,
    )


def labels(rows: list[tuple]) -> pl.DataFrame:
    """(t, station, stockout_bikes, stockout_docks) -> stockout_labels."""
    return pl.DataFrame(
        [
            {
                "snapshot_at": t,
                "station_id": s,
                "label_at": t + HORIZON,
                "bikes_future": 0 if b else 10,
                "docks_future": None if d is None else (0 if d else 10),
                "stockout_bikes": b,
                "stockout_docks": d,
            }
            for t, s, b, d in rows
        ],
        schema=LABEL_SCHEMA,
    )


# --------------------------------------------------------------------------------------
# join


def test_outcomes_join_predictions_at_t_with_labels_at_t_and_drop_unmatured() -> None:
    preds = predictions(
        [
            (T0, "A", 0.9, 0.1, True, False, "model"),
            (T0, "B", 0.2, 0.8, False, True, "model"),
            (T1, "A", 0.7, 0.3, True, False, "model"),
            (T1, "B", 0.1, 0.6, False, True, "fallback"),
            (T2, "A", 0.5, 0.5, True, True, "model"),  # label not matured yet
        ]
    )
    labs = labels(
        [
            # in reverse order, and a label whose station was not predicted
            (T1, "B", False, True),
            (T1, "A", True, None),  # virtual station: no docks label
            (T0, "C", True, True),
            (T0, "B", False, False),
            (T0, "A", True, False),
        ]
    )
    out = join_outcomes(preds, labs)
    assert out.select("snapshot_at", "station_id").rows() == [
        (T0, "A"),
        (T0, "B"),
        (T1, "A"),
        (T1, "B"),
    ]
    # each prediction got the label of its own station and time (t + 30 min), not another's
    assert out.get_column("stockout_bikes").to_list() == [True, False, True, False]
    assert out.get_column("stockout_docks").to_list() == [False, False, None, True]
    assert out.get_column("label_at").to_list() == [T0 + HORIZON] * 2 + [T1 + HORIZON] * 2
    assert out.get_column("p_stockout_bikes").to_list() == [0.9, 0.2, 0.7, 0.1]
    assert out.get_column("source").to_list() == ["model", "model", "model", "fallback"]


# --------------------------------------------------------------------------------------
# metrics


def test_quality_metrics_hand_computed() -> None:
    t = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    preds = predictions(
        [
            (t[0], "A", 0.92, 0.65, True, True, "model"),
            (t[1], "A", 0.96, 0.50, True, True, "model"),
            (t[2], "A", 0.35, 0.25, False, False, "fallback"),
            (t[3], "A", 0.15, 0.75, False, True, "model"),
        ]
    )
    labs = labels(
        [
            (t[0], "A", True, True),
            (t[1], "A", False, None),  # no docks label: left out of the docks metrics
            (t[2], "A", True, False),
            (t[3], "A", False, True),
        ]
    )
    metrics = {m["target"]: m for m in quality_metrics(join_outcomes(preds, labs))}

    bikes = metrics["stockout_bikes"]
    assert bikes["rows"] == 4
    assert bikes["base_rate"] == pytest.approx(0.5)
    # ranked by p: 0.96 (no), 0.92 (yes), 0.35 (yes), 0.15 (no): AP = (1/2 + 2/3) / 2
    assert bikes["pr_auc_24h"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # flags 1,1,0,0 vs outcomes 1,0,1,0: TP 1, FP 1, FN 1
    assert bikes["f1_24h"] == pytest.approx(0.5)
    assert bikes["brier_24h"] == pytest.approx((0.08**2 + 0.96**2 + 0.65**2 + 0.15**2) / 4)
    # bins: [0.9, 1.0) holds 0.92 (yes) and 0.96 (no): |0.5 - 0.94| twice; 0.35 (yes); 0.15 (no)
    assert bikes["calibration_error_24h"] == pytest.approx((2 * 0.44 + 0.65 + 0.15) / 4)
    assert bikes["fallback_rate"] == pytest.approx(0.25)

    docks = metrics["stockout_docks"]
    assert docks["rows"] == 3
    assert docks["base_rate"] == pytest.approx(2 / 3)
    assert docks["pr_auc_24h"] == pytest.approx(1.0)  # both stockouts ranked above the miss
    assert docks["f1_24h"] == pytest.approx(1.0)
    assert docks["brier_24h"] == pytest.approx((0.35**2 + 0.25**2 + 0.25**2) / 3)
    assert docks["calibration_error_24h"] == pytest.approx((0.35 + 0.25 + 0.25) / 3)
    assert docks["fallback_rate"] == pytest.approx(1 / 3)


def test_calibration_error_of_a_calibrated_forecast_is_zero() -> None:
    import numpy as np

    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert expected_calibration_error(1 - y, p) == pytest.approx(0.5)


def test_one_class_window_has_no_pr_auc_but_keeps_the_rest() -> None:
    preds = predictions(
        [(T0, "A", 0.2, 0.3, False, False, "model"), (T1, "A", 0.4, 0.1, True, False, "model")]
    )
    labs = labels([(T0, "A", False, False), (T1, "A", False, False)])
    bikes = quality_metrics(join_outcomes(preds, labs))[0]
    assert bikes["pr_auc_24h"] is None
    assert bikes["f1_24h"] == 0.0
    assert bikes["brier_24h"] == pytest.approx((0.2**2 + 0.4**2) / 2)


# --------------------------------------------------------------------------------------
# the prediction_outcomes asset on hand-made lake partitions


@pytest.fixture
def sim_defs(home: Path, tmp_path: Path) -> tuple[dg.Definitions, LakeStorage]:
    cities = write_cities(tmp_path / "cities.toml", key=SIM_CITY, simulate=simulate_table())
    settings = settings_for(home, cities, BIKESHARE_SOURCE="simulate")
    return build_defs(settings), LakeStorage(root=settings.storage_root)


def write_partition(lake: LakeStorage, asset: str, at, frame: pl.DataFrame) -> None:
    lake.write_parquet(partition_key_path(dg.AssetKey([SIM_CITY, asset]), pkey(at)), frame)


def test_prediction_outcomes_asset_joins_each_partition(
    sim_defs: tuple[dg.Definitions, LakeStorage], instance: dg.DagsterInstance
) -> None:
    defs, lake = sim_defs
    write_partition(
        lake,
        "stockout_predictions",
        T0,
        predictions([(T0, s, 0.5, 0.5, True, True, "model") for s in "ABC"]),
    )
    write_partition(
        lake,
        "stockout_predictions",
        T1,
        predictions([(T1, s, 0.5, 0.5, True, True, "model") for s in "ABC"]),
    )
    write_partition(
        lake,
        "stockout_predictions",
        T2,
        predictions([(T2, s, 0.5, 0.5, True, True, "model") for s in "ABC"]),
    )
    write_partition(lake, "stockout_labels", T0, labels([(T0, s, True, False) for s in "ABC"]))
    # C was missing from the snapshot at T1 + 30 min: no label for it
    write_partition(lake, "stockout_labels", T1, labels([(T1, s, False, True) for s in "AB"]))
    write_partition(lake, "stockout_labels", T2, labels([]))  # not matured yet

    result = materialize_range(
        defs, instance, f"{SIM_CITY}/prediction_outcomes", pkey(T0), pkey(T2)
    )
    assert result.success
    meta = materializations(result)
    assert meta[pkey(T0)]["rows"] == 3 and meta[pkey(T0)]["matured"] is True
    assert meta[pkey(T1)]["rows"] == 2
    assert meta[pkey(T2)]["rows"] == 0 and meta[pkey(T2)]["matured"] is False

    out = {
        t: lake.read_parquet(
            partition_key_path(dg.AssetKey([SIM_CITY, "prediction_outcomes"]), pkey(t))
        )
        for t in (T0, T1, T2)
    }
    assert out[T0].get_column("stockout_bikes").to_list() == [True] * 3
    assert out[T1].get_column("station_id").to_list() == ["A", "B"]
    assert out[T1].get_column("stockout_docks").to_list() == [True, True]
    assert out[T2].height == 0

    checks = {
        e.event_specific_data.partition: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks[pkey(T0)].passed is True
    assert checks[pkey(T1)].passed is False  # 2 of 3 predictions have an outcome
    assert checks[pkey(T1)].metadata["value"].value == pytest.approx(2 / 3)
    assert pkey(T2) not in checks  # nothing to cover before the labels mature


def test_prediction_outcomes_of_unmatured_partitions_only(
    sim_defs: tuple[dg.Definitions, LakeStorage], instance: dg.DagsterInstance
) -> None:
    """The newest snapshots have predictions but no labels yet: the run succeeds and writes
    empty outcome partitions (live mode does this every 5 minutes)."""
    defs, lake = sim_defs
    for t in (T1, T2):
        write_partition(
            lake,
            "stockout_predictions",
            t,
            predictions([(t, s, 0.5, 0.5, True, True, "model") for s in "AB"]),
        )
        write_partition(lake, "stockout_labels", t, labels([]))
    result = materialize_range(
        defs, instance, f"{SIM_CITY}/prediction_outcomes", pkey(T1), pkey(T2)
    )
    assert result.success
    for t in (T1, T2):
        out = lake.read_parquet(
            partition_key_path(dg.AssetKey([SIM_CITY, "prediction_outcomes"]), pkey(t))
        )
        assert out.height == 0
        assert {"snapshot_at", "station_id", "stockout_bikes", "p_stockout_bikes"} <= set(
            out.columns
        )


# --------------------------------------------------------------------------------------
# rows seen in training, new stockouts (issue 10, items 10 and 11)


def test_quality_leaves_out_rows_seen_in_training_and_scores_new_stockouts() -> None:
    t = [T0 + timedelta(minutes=15 * i) for i in range(2)]
    preds = predictions(
        [
            # t0: A..D, t1: A..D; bikes_available is 5 for all (fine at t) ...
            (t[0], "A", 0.9, 0.1, True, False, "model"),
            (t[0], "B", 0.6, 0.1, True, False, "model"),
            (t[0], "C", 0.2, 0.1, False, False, "model"),
            (t[0], "D", 0.1, 0.1, False, False, "model"),
            (t[1], "A", 0.8, 0.1, True, False, "model"),
            (t[1], "B", 0.3, 0.1, False, False, "model"),
            (t[1], "C", 0.7, 0.1, True, False, "model"),
            (t[1], "D", 0.05, 0.1, False, False, "model"),
        ]
    ).with_columns(
        # ... except D at t1, already empty (not a new stockout); t0 was in training
        bikes_available=pl.when((pl.col("station_id") == "D") & (pl.col("snapshot_at") == t[1]))
        .then(0.0)
        .otherwise(pl.col("station_id").replace_strict({"A": 3.0, "B": 9.0, "C": 4.0, "D": 6.0})),
        seen_in_training=pl.col("snapshot_at") == t[0],
    )
    labs = labels(
        [
            (t[0], "A", True, False),
            (t[0], "B", False, False),
            (t[0], "C", False, False),
            (t[0], "D", True, False),
            (t[1], "A", False, False),
            (t[1], "B", True, False),
            (t[1], "C", True, False),
            (t[1], "D", True, False),
        ]
    )
    bikes = quality_metrics(join_outcomes(preds, labs), threshold=2)[0]
    # only t1 is scored: 4 rows; t0's 4 rows were seen in training
    assert (bikes["rows"], bikes["rows_seen_in_training"]) == (4, 4)
    assert bikes["base_rate"] == pytest.approx(3 / 4)
    # new stockouts: A (0.8, no), B (0.3, yes), C (0.7, yes); D was empty at t
    # model ranks A, C, B: AP = (1/2 + 2/3) / 2; lowest count first: A(3), C(4), B(9): same
    assert bikes["pr_auc_new_24h"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert bikes["baseline_pr_auc_new_24h"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # three candidates < 20: precision = 2 / 3 for both
    assert bikes["precision_at_20_new_24h"] == pytest.approx(2 / 3)
    assert bikes["baseline_precision_at_20_new_24h"] == pytest.approx(2 / 3)
    # without the column nothing is known to be seen: all 8 rows scored
    unknown = quality_metrics(join_outcomes(preds.drop("seen_in_training"), labs), threshold=2)
    assert (unknown[0]["rows"], unknown[0]["rows_seen_in_training"]) == (8, 0)


def test_model_quality_uses_the_configured_gate_floors(
    sim_defs: tuple[dg.Definitions, LakeStorage], instance: dg.DagsterInstance
) -> None:
    """The quality check judges against the promotion_gate resource, not built-in defaults:
    a 24-hour PR-AUC of 0.58 fails the default 0.70 and passes a configured 0.50."""
    from bikeshare_assets.registry.gate import PromotionGate

    defs, lake = sim_defs
    t = [T0 + timedelta(minutes=15 * i) for i in range(4)]
    preds = predictions(
        [
            (t[0], "A", 0.9, 0.9, True, True, "model"),
            (t[1], "A", 0.8, 0.8, True, True, "model"),
            (t[2], "A", 0.3, 0.3, False, False, "model"),
            (t[3], "A", 0.1, 0.1, False, False, "model"),
        ]
    )
    labs = labels(
        [
            (t[0], "A", False, False),
            (t[1], "A", True, True),
            (t[2], "A", True, True),
            (t[3], "A", False, False),
        ]
    )
    outcomes = join_outcomes(preds, labs)
    for at in t:
        write_partition(
            lake, "prediction_outcomes", at, outcomes.filter(pl.col("snapshot_at") == at)
        )
    day = pkey(T0)[:10]

    def quality_check(gate: PromotionGate) -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            list(defs.assets or []),
            selection=[f"{SIM_CITY}/model_quality"],
            partition_key=day,
            instance=instance,
            resources={**defs.resources, "promotion_gate": gate},
        )
        (evaluation,) = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        return evaluation

    # ranked 0.9 (no), 0.8 (yes), 0.3 (yes), 0.1 (no): AP = (1/2 + 2/3) / 2 = 0.583; F1 0.5
    assert quality_check(PromotionGate()).passed is False
    relaxed = quality_check(PromotionGate(min_pr_auc=0.5, min_f1=0.5))
    assert relaxed.passed is True
    assert relaxed.metadata["min_pr_auc"].value == 0.5
