"""Evaluation metrics shared by training and live monitoring, and live model quality from
outcomes (predictions joined with the labels that matured)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from bikeshare_assets.features.labels import TARGETS

OUTCOME_KEY = ["snapshot_at", "station_id"]
PRECISION_AT_K = 20  # a dispatcher's list per snapshot: the top 20 stations


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


def not_stocked_out(frame: pl.DataFrame, target: str, threshold: int) -> np.ndarray:
    """Rows whose station is fine at t (count known and above the threshold): a stockout
    at t + 30 there is new, the case persistence does not get for free."""
    return frame.get_column(TARGETS[target]).fill_null(-1.0).gt(threshold).to_numpy().astype(bool)


def precision_at_k(snapshots: np.ndarray, y: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over snapshots of the share of stockouts among the k highest-scored rows.

    Ties at the k-th score count at their mean (the expectation of a random order among
    them), so "lowest count first" is not flattered or punished by an arbitrary tie-break.
    A snapshot with fewer than k rows is scored on all of them."""
    values = []
    order = np.argsort(snapshots, kind="stable")
    snapshots, y, scores = snapshots[order], y[order], scores[order]
    bounds = np.flatnonzero(np.r_[True, snapshots[1:] != snapshots[:-1], True])
    for start, end in itertools.pairwise(bounds):
        s, hits = scores[start:end], y[start:end].astype(float)
        m = min(k, len(s))
        kth = np.sort(s)[::-1][m - 1]
        above = s > kth
        tied = s == kth
        values.append((hits[above].sum() + (m - above.sum()) * hits[tied].mean()) / m)
    return float(np.mean(values)) if values else float("nan")


def new_stockout_metrics(
    frame: pl.DataFrame, target: str, threshold: int, scores: np.ndarray, k: int = PRECISION_AT_K
) -> dict[str, float]:
    """PR-AUC and precision of the top k per snapshot among stations not stocked out at t
    (rows with a null label are left out)."""
    from sklearn.metrics import average_precision_score  # heavy: only when scoring

    fine = (
        not_stocked_out(frame, target, threshold)
        & frame.get_column(target).is_not_null().to_numpy()
    )
    y = frame.get_column(target).cast(pl.Int8).to_numpy()[fine]
    s = np.asarray(scores, dtype=float)[fine]
    times = frame.get_column("snapshot_at").to_physical().to_numpy()[fine]
    both = len(np.unique(y)) > 1
    return {
        "pr_auc_new": float(average_precision_score(y, s)) if both else float("nan"),
        f"precision_at_{k}_new": precision_at_k(times, y, s, k),
    }


def _nan_to_none(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def quality_metrics(outcomes: pl.DataFrame, threshold: int = 2) -> list[dict]:
    """Per target, on rows the served model did not see in training: PR-AUC, F1 (at the
    served flags), Brier, calibration error, fallback rate, and on new stockouts (stations
    fine at t) PR-AUC and precision of the top 20 per snapshot for the model and for
    "lowest current count first". Rows seen in training are counted, not scored."""
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score

    seen = (
        pl.col("seen_in_training").fill_null(False)
        if "seen_in_training" in outcomes.columns
        else pl.lit(False)
    )
    rows = []
    for target, count in TARGETS.items():
        labelled = outcomes.filter(pl.col(target).is_not_null())
        n_seen = labelled.filter(seen).height
        frame = labelled.filter(~seen)
        y = frame.get_column(target).cast(pl.Int8).to_numpy()
        p = frame.get_column(f"p_{target}").to_numpy()
        flags = frame.get_column(f"flag_{target}").cast(pl.Int8).to_numpy()
        has_both = len(np.unique(y)) > 1
        new_model = new_stockout_metrics(frame, target, threshold, p) if len(y) else {}
        lowest_first = -frame.get_column(count).cast(pl.Float64).fill_null(1e9).to_numpy()
        new_base = new_stockout_metrics(frame, target, threshold, lowest_first) if len(y) else {}
        k = f"precision_at_{PRECISION_AT_K}_new"
        rows.append(
            {
                "target": target,
                "rows": len(y),
                "rows_seen_in_training": n_seen,
                "base_rate": float(y.mean()) if len(y) else None,
                "pr_auc_24h": float(average_precision_score(y, p)) if has_both else None,
                "f1_24h": float(f1_score(y, flags, zero_division=0)) if len(y) else None,
                "brier_24h": float(brier_score_loss(y, p)) if len(y) else None,
                "calibration_error_24h": expected_calibration_error(y, p) if len(y) else None,
                "pr_auc_new_24h": _nan_to_none(new_model.get("pr_auc_new", np.nan)),
                "precision_at_20_new_24h": _nan_to_none(new_model.get(k, np.nan)),
                "baseline_pr_auc_new_24h": _nan_to_none(new_base.get("pr_auc_new", np.nan)),
                "baseline_precision_at_20_new_24h": _nan_to_none(new_base.get(k, np.nan)),
                "fallback_rate": float((frame.get_column("source") == "fallback").mean())
                if len(y)
                else None,
            }
        )
    return rows
