"""Evaluate a sensor of real Definitions against a real instance, tick after tick, the way
the daemon does: the cursor each tick leaves is the next tick's."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg


@dataclass
class Ticker:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    name: str
    cursor: str | None = None
    run_keys: list[str] = field(default_factory=list)  # every run key ever requested

    def tick(self) -> list[dg.RunRequest]:
        sensor = self.defs.get_repository_def().get_sensor_def(self.name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            definitions=self.defs,
            resources={k: self.defs.resources[k] for k in sensor.required_resource_keys},
            sensor_name=self.name,
        )
        data = sensor.evaluate_tick(context)
        self.cursor = data.cursor
        requests = list(data.run_requests or [])
        self.run_keys += [r.run_key for r in requests]
        return requests


def report_check(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    name: str,
    passed: bool,
    partition: str | None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    **md,
) -> None:
    """A check evaluation as Dagster records it (runless), for the sensors to read."""
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=name,
            passed=passed,
            partition=partition,
            severity=severity,
            metadata=md,
        )
    )
