"""How stale each asset may get: the windows of its FreshnessPolicy, Dagster-free so the
dashboard (read.py) judges freshness with the same numbers the daemon and the Slack alerts
use. automation/policies.py turns them into `dg.FreshnessPolicy` objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Freshness:
    """fail / warn windows of one asset's FreshnessPolicy, and why the warn window is where
    it is (shown in docs/automation.md)."""

    fail: timedelta
    warn: timedelta
    why: str


def freshness_for(cadence: timedelta) -> dict[str, Freshness]:
    """asset name -> freshness windows for a city snapshotted every `cadence`. A policy
    measures the time since the asset's last materialization (any partition)."""
    minute = timedelta(minutes=1)
    return {
        "raw_station_status": Freshness(
            cadence + 3 * minute,
            cadence + minute,
            "a snapshot is due every cadence and its run takes seconds: a minute late is "
            "worth a look, three minutes late means the next window is being missed",
        ),
        "stockout_predictions": Freshness(
            max(10 * minute, cadence + 5 * minute),
            cadence + 2 * minute,
            "predictions follow each snapshot within about two minutes (schedule run, "
            "automation tick, features + scoring run); ten minutes is a whole cadence lost",
        ),
        "drift_report": Freshness(
            timedelta(hours=2),
            timedelta(minutes=75),
            "an hour's report is due once the hour's last snapshot is scored: 75 minutes "
            "without one means the newest hour is late, two hours means one is missing",
        ),
        "stockout_model": Freshness(
            timedelta(days=2),
            timedelta(hours=26),
            "the model retrains daily: 26 hours is one retrain late (2 hours of grace for "
            "tuning), two days is a retrain missed",
        ),
        "registered_model_version": Freshness(
            timedelta(days=2),
            timedelta(hours=26),
            "registration follows each daily model (also when the gate refuses it): the same "
            "windows as stockout_model",
        ),
    }
