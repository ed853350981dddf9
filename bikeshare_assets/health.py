"""Model and system health from materialized outcomes and predictions: what the dashboard's
health pages plot. Pure polars/numpy; the model's metrics are monitoring.quality's, and the
persistence baseline is training's (score = -current count, flag = count <= threshold), so
the dashboard compares exactly what the gate compares.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from bikeshare_assets.features.labels import TARGETS


def last_hours(frame: pl.DataFrame, hours: int = 24, column: str = "snapshot_at") -> pl.DataFrame:
    """Rows of the `hours` before the newest `column` value (inclusive)."""
    if frame.height == 0:
        return frame
    newest = frame.get_column(column).max()
    return frame.filter(pl.col(column) > newest - timedelta(hours=hours))  # type: ignore[operator]


def _metrics(y: np.ndarray, score: np.ndarray, flags: np.ndarray, prob: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score

    both = len(np.unique(y)) > 1
    return {
        "pr_auc": float(average_precision_score(y, score)) if both else None,
        "f1": float(f1_score(y, flags, zero_division=0)) if len(y) else None,
        "brier": float(brier_score_loss(y, prob)) if len(y) else None,
    }


def quality_vs_persistence(outcomes: pl.DataFrame, threshold: int) -> pl.DataFrame:
    """Per target: PR-AUC, F1 and Brier of the served model and of persistence, on the same
    matured outcomes."""
    rows = []
    for target, count in TARGETS.items():
        frame = outcomes.filter(pl.col(target).is_not_null())
        y = frame.get_column(target).cast(pl.Int8).to_numpy()
        p = frame.get_column(f"p_{target}").to_numpy()
        flags = frame.get_column(f"flag_{target}").cast(pl.Int8).to_numpy()
        current = frame.get_column(count).cast(pl.Float64).fill_null(1e9).to_numpy()
        pers_flags = (current <= threshold).astype(np.int8)
        model = _metrics(y, p, flags, p)
        pers = _metrics(y, -current, pers_flags, pers_flags.astype(float))
        for metric in ("pr_auc", "f1", "brier"):
            rows.append(
                {
                    "target": target,
                    "metric": metric,
                    "model": model[metric],
                    "persistence": pers[metric],
                    "rows": len(y),
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "target": pl.String,
            "metric": pl.String,
            "model": pl.Float64,
            "persistence": pl.Float64,
            "rows": pl.Int64,
        },
    )


def hourly_quality(outcomes: pl.DataFrame, threshold: int) -> pl.DataFrame:
    """quality_vs_persistence per UTC hour of snapshot_at (long: hour, target, metric, ...)."""
    if outcomes.height == 0:
        return pl.DataFrame()
    hours = outcomes.with_columns(hour=pl.col("snapshot_at").dt.truncate("1h"))
    frames = [
        quality_vs_persistence(group, threshold).with_columns(hour=pl.lit(hour[0]))
        for hour, group in hours.partition_by("hour", as_dict=True).items()
    ]
    return pl.concat(frames).sort("hour", "target", "metric")


def calibration_curve(outcomes: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """Per target and equal-width probability bin: mean predicted P, observed rate, rows
    (the bins of monitoring.quality.expected_calibration_error)."""
    frames = []
    for target in TARGETS:
        frame = outcomes.filter(pl.col(target).is_not_null())
        if frame.height == 0:
            continue
        frames.append(
            frame.with_columns(
                bin=(pl.col(f"p_{target}") * bins).floor().clip(0, bins - 1).cast(pl.Int32)
            )
            .group_by("bin")
            .agg(
                predicted=pl.col(f"p_{target}").mean(),
                observed=pl.col(target).cast(pl.Float64).mean(),
                rows=pl.len(),
            )
            .with_columns(target=pl.lit(target))
        )
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames).sort("target", "bin")


def serving_by_hour(predictions: pl.DataFrame) -> pl.DataFrame:
    """Per UTC hour: endpoint latency p50/p95 over the hour's snapshot batches, share of
    batches the model answered (batch success), share of rows that fell back."""
    if predictions.height == 0:
        return pl.DataFrame()
    batches = predictions.group_by("snapshot_at").agg(
        latency_ms=pl.col("latency_ms").first(),
        model=(pl.col("source") == "model").all(),
        rows=pl.len(),
        fallback_rows=(pl.col("source") == "fallback").sum(),
    )
    return (
        batches.with_columns(hour=pl.col("snapshot_at").dt.truncate("1h"))
        .group_by("hour")
        .agg(
            latency_p50_ms=pl.col("latency_ms").quantile(0.5),
            latency_p95_ms=pl.col("latency_ms").quantile(0.95),
            batch_success=pl.col("model").mean(),
            fallback_rate=pl.col("fallback_rows").sum() / pl.col("rows").sum(),
            snapshots=pl.len(),
        )
        .sort("hour")
    )
