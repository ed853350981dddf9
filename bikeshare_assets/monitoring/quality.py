"""Live model quality from outcomes (predictions joined with the labels that matured)."""

from __future__ import annotations

import numpy as np
import polars as pl

from bikeshare_assets.features.labels import TARGETS

OUTCOME_KEY = ["snapshot_at", "station_id"]


def join_outcomes(predictions: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Predictions at t with what happened at t + 30 min; unmatured labels drop out."""
    return predictions.join(
        labels.select([*OUTCOME_KEY, "label_at", *TARGETS]), on=OUTCOME_KEY, how="inner"
    ).sort(OUTCOME_KEY)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width probability bins,
    weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y)) if len(y) else float("nan")


def quality_metrics(outcomes: pl.DataFrame) -> list[dict]:
    """Per target: PR-AUC, F1 (at the served flags), Brier, calibration error, fallback rate."""
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score

    rows = []
    for target in TARGETS:
        frame = outcomes.filter(pl.col(target).is_not_null())
        y = frame.get_column(target).cast(pl.Int8).to_numpy()
        p = frame.get_column(f"p_{target}").to_numpy()
        flags = frame.get_column(f"flag_{target}").cast(pl.Int8).to_numpy()
        has_both = len(np.unique(y)) > 1
        rows.append(
            {
                "target": target,
                "rows": len(y),
                "base_rate": float(y.mean()) if len(y) else None,
                "pr_auc_24h": float(average_precision_score(y, p)) if has_both else None,
                "f1_24h": float(f1_score(y, flags, zero_division=0)) if len(y) else None,
                "brier_24h": float(brier_score_loss(y, p)) if len(y) else None,
                "calibration_error_24h": expected_calibration_error(y, p) if len(y) else None,
                "fallback_rate": float((frame.get_column("source") == "fallback").mean())
                if len(y)
                else None,
            }
        )
    return rows
