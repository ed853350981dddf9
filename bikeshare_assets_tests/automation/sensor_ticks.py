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
