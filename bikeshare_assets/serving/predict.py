"""Scoring one snapshot: the endpoint's answer, or — flagged in every row — the persistence
baseline when the endpoint fails."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.serving.client import EndpointError, Transport, score

PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_at": pl.Datetime("us", "UTC"),
    "station_id": pl.String(),
    "bikes_available": pl.Float64(),
    "docks_available": pl.Float64(),
    **{f"p_{t}": pl.Float64() for t in TARGETS},
    **{f"flag_{t}": pl.Boolean() for t in TARGETS},
    "model_version": pl.String(),
    "source": pl.String(),  # model | fallback
    "latency_ms": pl.Float64(),
    "predicted_at": pl.Datetime("us", "UTC"),
    # Was this snapshot in the served model's training data? Null when unknown; filled by
    # stockout_predictions from the champions' `training_data_end` tags.
    "seen_in_training": pl.Boolean(),
}

FALLBACK_VERSION = "persistence-baseline"


@dataclass
class SnapshotPrediction:
    frame: pl.DataFrame
    source: str
    latency_ms: float | None
    error: str | None


def persistence_fallback(features: pl.DataFrame, threshold: int) -> pl.DataFrame:
    """Tomorrow looks like now: P = 1 if the current count is at the threshold, else 0."""
    return features.select(
        *[
            (pl.col(count).fill_null(float("inf")) <= threshold).cast(pl.Float64).alias(f"p_{t}")
            for t, count in TARGETS.items()
        ],
        *[
            (pl.col(count).fill_null(float("inf")) <= threshold).alias(f"flag_{t}")
            for t, count in TARGETS.items()
        ],
        pl.lit(FALLBACK_VERSION).alias("model_version"),
    )


def predict_snapshot(
    features: pl.DataFrame,
    transport: Transport | None,
    timeout_s: float,
    threshold: int,
    unavailable: str | None = None,
) -> SnapshotPrediction:
    """One batch request for every station of the snapshot; `unavailable` says why there is
    no transport (e.g. a broken state file), for the flagged fallback's error."""
    error = None
    latency = None
    if transport is None:
        why = f"{unavailable}; " if unavailable else ""
        error = f"unavailable: no live endpoint ({why}deploy one: materialize <city>/model_endpoint or run `bikeshare serve`)"
        answer = None
    else:
        try:
            scored = score(transport, features, timeout_s)
            answer, latency = scored.frame, scored.latency_ms
        except EndpointError as exc:
            answer, error = None, str(exc)
    source = "model" if answer is not None else "fallback"
    if answer is None:
        answer = persistence_fallback(features, threshold)
    frame = pl.concat(
        [
            features.select("snapshot_at", "station_id", "bikes_available", "docks_available"),
            answer,
        ],
        how="horizontal",
    ).with_columns(
        source=pl.lit(source),
        latency_ms=pl.lit(latency, pl.Float64),
        predicted_at=pl.lit(datetime.now(UTC)).cast(pl.Datetime("us", "UTC")),
        # The persistence fallback is fit on nothing; a model's answer is judged by the caller.
        seen_in_training=pl.lit(False if source == "fallback" else None, pl.Boolean),
    )
    return SnapshotPrediction(
        frame.select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA), source, latency, error
    )
