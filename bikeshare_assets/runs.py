"""Run monitoring for runs whose worker is a process on this machine.

Dagster's run monitoring daemon fails a STARTED run whose worker is gone, but only if the run
launcher can tell: `DefaultRunLauncher` cannot, so a `kill -9` of `dagster asset materialize`,
of `bikeshare demo` or of `dagster dev` leaves the run STARTED forever, and the step
processes of the multiprocess executor keep running (then hang) with no parent.

`LocalRunLauncher` launches exactly like `DefaultRunLauncher` and answers the health check
from the process ids Dagster records on every event: the run worker is the process that
emitted RUN_START, the step workers those that emitted STEP_WORKER_STARTED / STEP_START. A
process counts as the one recorded only if it exists and was created before the event (a
reused PID is not the worker). When the worker is gone, the run's orphaned step processes are
terminated and the daemon marks the run FAILURE, so it can be re-executed.

It needs the daemon to share the run workers' machine and PID namespace: true for the local
instance (`dagster dev`, `bikeshare demo`) and for a deployment that runs the daemon and the
code server side by side. Across machines use a launcher that monitors natively (e.g.
dagster-aws's EcsRunLauncher).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import psutil
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._serdes import ConfigurableClassData

DAGSTER_YAML = """\
# Written by `bikeshare demo`: the local Dagster instance (SQLite under this folder).
telemetry:
  enabled: false
# A killed run (kill -9 of `dagster asset materialize`, `bikeshare demo`, `dagster dev`) is
# marked FAILURE by the daemon's run monitoring (`dagster dev` runs it) and its orphaned step
# processes are stopped; LocalRunLauncher launches like Dagster's default one and checks
# run workers by their recorded PID (bikeshare_assets/runs.py).
run_launcher:
  module: bikeshare_assets.runs
  class: LocalRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
"""


def write_instance_yaml(dagster_home: Path) -> Path:
    """DAGSTER_HOME/dagster.yaml for the local instance: written when missing, brought up to
    date when an older version of this file is there; an operator's own file is kept."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    yaml = dagster_home / "dagster.yaml"
    current = yaml.read_text() if yaml.exists() else None
    if current is None or (
        current.startswith(DAGSTER_YAML.splitlines()[0]) and current != DAGSTER_YAML
    ):
        yaml.write_text(DAGSTER_YAML)
    return yaml


# A process created up to this long after its first recorded event is still that process
# (event timestamps and process start times come from different clocks' rounding).
_CLOCK_SLACK_S = 1.0
ORPHAN_TERMINATE_GRACE_S = 5.0


def recorded_process(pid: int, first_seen: float) -> psutil.Process | None:
    """The process `pid` if it is still the one seen at `first_seen` (epoch seconds)."""
    try:
        process = psutil.Process(pid)
        if process.create_time() > first_seen + _CLOCK_SLACK_S:
            return None  # the PID was reused by a newer process
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def terminate(processes: list[psutil.Process], grace_s: float = ORPHAN_TERMINATE_GRACE_S) -> None:
    """SIGTERM, then SIGKILL what is still alive after `grace_s`."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher plus a worker health check by recorded PID (see module doc)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def _first_pids(self, run_id: str, event_types: set[DagsterEventType]) -> dict[int, float]:
        """pid -> timestamp of the first event of these types that process emitted."""
        pids: dict[int, float] = {}
        for record in self._instance.all_logs(run_id, of_type=event_types):
            event = record.dagster_event
            if event is not None and event.pid is not None and event.pid not in pids:
                pids[event.pid] = record.timestamp
        return pids

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        workers = self._first_pids(run.run_id, {DagsterEventType.RUN_START})
        if not workers:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not started yet")
        pid, seen = next(iter(workers.items()))
        if recorded_process(pid, seen) is not None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        steps = self._first_pids(
            run.run_id, {DagsterEventType.STEP_WORKER_STARTED, DagsterEventType.STEP_START}
        )
        orphans = [
            p
            for step_pid, step_seen in steps.items()
            if step_pid not in (pid, os.getpid())
            and (p := recorded_process(step_pid, step_seen)) is not None
        ]
        terminate(orphans)
        cleaned = (
            f"; terminated its orphaned step process(es) {sorted(p.pid for p in orphans)}"
            if orphans
            else ""
        )
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker pid {pid} is gone (killed, or its machine restarted){cleaned}. "
            f"Re-execute the run (Dagster UI: Re-execute) to materialize what it did not.",
        )
