"""The served model: a probability-returning MLflow pyfunc around the LightGBM boosters,
saved and loaded by MLflow itself, and its behaviour when only the bike count changes."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.models import infer_signature

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.training.pyfunc import StockoutModel, write_model_artifacts
from bikeshare_assets.training.train import TrainedTarget, matrix
from bikeshare_assets_tests.support.training_data import SPLIT_A, simulated_split, trained

TARGETS = ("stockout_bikes", "stockout_docks")


@pytest.fixture(scope="module")
def models() -> dict[str, TrainedTarget]:
    return {t: trained(t, SPLIT_A) for t in TARGETS}


def artifacts(directory: Path, models: dict[str, TrainedTarget], version: str = "unregistered"):
    return write_model_artifacts(
        directory,
        {t: m.booster for t, m in models.items()},
        {t: m.threshold for t, m in models.items()},
        model_version=version,
    )


def model_input(frame: pl.DataFrame) -> pd.DataFrame:
    return frame.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()


def test_pyfunc_saved_and_loaded_by_mlflow_returns_probabilities_flags_and_version(
    tmp_path: Path, models: dict[str, TrainedTarget]
) -> None:
    files = artifacts(tmp_path / "artifacts", models, version="7")
    rows = simulated_split(SPLIT_A).test.sample(2000, seed=3)
    example = model_input(rows.head(5))
    mlflow.pyfunc.save_model(
        path=str(tmp_path / "model"),
        python_model=StockoutModel(),
        artifacts=files,
        signature=infer_signature(
            example, StockoutModel.from_artifacts(files).predict(None, example)
        ),
        input_example=example,
        pip_requirements=["lightgbm", "pandas", "numpy", "mlflow"],
    )

    out = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(model_input(rows))

    # Columnar: one list per output, model_version once (compact on the wire).
    assert list(out) == [
        "p_stockout_bikes",
        "flag_stockout_bikes",
        "p_stockout_docks",
        "flag_stockout_docks",
        "model_version",
    ]
    assert all(len(out[c]) == rows.height for c in out if c != "model_version")
    assert out["model_version"] == "7"
    x = matrix(rows)
    for target, model in models.items():
        p = np.asarray(out[f"p_{target}"])
        assert ((p >= 0) & (p <= 1)).all()
        assert 0 < p.min() < p.max() < 1  # probabilities, not class labels
        # the saved booster stops at the best iteration, like the one evaluated in training
        expected = model.booster.predict(x, num_iteration=model.booster.best_iteration)
        assert np.allclose(p, expected, rtol=0, atol=1e-12)
        flags = np.asarray(out[f"flag_{target}"])
        assert (flags == (p >= model.threshold)).all()
        assert 0 < flags.sum() < len(flags)


def test_pyfunc_refuses_input_without_its_features(
    tmp_path: Path, models: dict[str, TrainedTarget]
) -> None:
    model = StockoutModel.from_artifacts(artifacts(tmp_path, models))
    rows = model_input(simulated_split(SPLIT_A).test.head(3))

    answer = model.predict(None, rows)
    assert answer["model_version"] == "unregistered"
    assert all(len(answer[c]) == len(rows) for c in answer if c != "model_version")
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['nb_weight'\]"):
        model.predict(None, rows.drop(columns=["nb_weight"]))


WINDOWS = (15, 30, 60)


def joint_sweep(model: StockoutModel, rows: pl.DataFrame, target: str, values) -> np.ndarray:
    """P(stockout) for every row with the target's current count (bikes for stockout_bikes,
    free docks for stockout_docks) set to each value and every feature that follows from
    it moved with it, as the feature code would compute them with the past unchanged:

    - utilisation = bikes / (bikes + docks), recomputed;
    - net flows (count now - count w minutes ago) shifted by the change;
    - window means shifted by change / observations in the window;
    - window minima: min(value, the other snapshots' minimum), taking the old minimum as the
      others' when the current count was the minimum;
    - trends: the least-squares slope over a regular 15-minute grid of `obs` points moves by
      change * (t_now - mean t) / sum (t - mean t)^2.

    The window variance also moves with the count, but not one way, so it is not a monotone
    input and is left as it was. Shape (len(values), rows)."""
    count = "bikes_available" if target == "stockout_bikes" else "docks_available"
    prefix = count.split("_")[0]
    base = model_input(rows)
    start = base[count].to_numpy()
    out = []
    for v in values:
        frame = base.copy()
        delta = float(v) - start
        frame[count] = float(v)
        total = frame["bikes_available"] + frame["docks_available"]
        frame["utilisation"] = np.where(total > 0, frame["bikes_available"] / total, np.nan)
        for w in WINDOWS:
            frame[f"{prefix}_net_flow_{w}"] = base[f"{prefix}_net_flow_{w}"] + delta
            old_min = base[f"{prefix}_min_{w}"].to_numpy()
            others = np.where(old_min < start, old_min, start)
            frame[f"{prefix}_min_{w}"] = np.where(np.isnan(old_min), np.nan, np.minimum(v, others))
            if prefix == "bikes":
                n = base[f"obs_{w}"].to_numpy()
                frame[f"bikes_mean_{w}"] = base[f"bikes_mean_{w}"] + delta / np.maximum(n, 1)
                hours = 0.25 * np.arange(int(np.nanmax(n)))
                with np.errstate(divide="ignore", invalid="ignore"):
                    step = np.array(
                        [
                            (hours[k - 1] - hours[:k].mean())
                            / ((hours[:k] - hours[:k].mean()) ** 2).sum()
                            if k >= 2
                            else np.nan
                            for k in n.astype(int)
                        ]
                    )
                frame[f"bikes_trend_per_h_{w}"] = base[f"bikes_trend_per_h_{w}"] + delta * step
        out.append(np.asarray(model.predict(None, frame)[f"p_{target}"]))
    return np.array(out)


@pytest.mark.parametrize("target", ["stockout_bikes", "stockout_docks"])
def test_more_bikes_now_never_raises_the_risk_of_running_out_in_a_joint_sweep(
    tmp_path: Path, models: dict[str, TrainedTarget], target: str
) -> None:
    """Exact, for every row and every step: more bikes now never raises P(no bikes), more
    free docks never raises P(no docks), with the features tied to the count moving with it.
    Constraining only the count left utilisation free, and P rose along the sweep for a
    large share of rows."""
    model = StockoutModel.from_artifacts(artifacts(tmp_path, models))
    rows = simulated_split(SPLIT_A).test.sample(3000, seed=0)
    p = joint_sweep(model, rows, target, range(0, 41))

    rises = np.diff(p, axis=0) > 0
    assert not rises.any(), f"{rises.any(axis=0).mean():.1%} of rows rise somewhere"
    assert p[0].mean() > 5 * p[10].mean()  # and the count still matters
