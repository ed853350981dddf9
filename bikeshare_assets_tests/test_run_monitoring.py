"""A killed run is marked FAILURE by a real `dagster-daemon` running on the instance config
`bikeshare` writes, and its orphaned step process is stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import psutil

from bikeshare_assets.runs import DAGSTER_YAML
from bikeshare_assets_tests.conftest import REPO, VENV_BIN

SLEEPY = """
import time

import dagster as dg


@dg.asset
def sleepy() -> None:
    time.sleep(600)


defs = dg.Definitions(assets=[sleepy])
"""


def _step_started(instance: dg.DagsterInstance, timeout_s: float) -> tuple[str, int]:
    """(run id, step process pid) once the run's step is executing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START):
                return run.run_id, record.dagster_event.pid  # type: ignore[union-attr,return-value]
        time.sleep(0.3)
    raise TimeoutError(f"no step started within {timeout_s:.0f} s")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a process group this test started (its own session), whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_run_is_marked_failed_and_its_orphaned_step_stopped(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The project's instance config, polled every second instead of 30 so the test is short.
    config = DAGSTER_YAML.replace("poll_interval_seconds: 30", "poll_interval_seconds: 1")
    assert config != DAGSTER_YAML and "run_monitoring:\n  enabled: true" in config
    (home / "dagster.yaml").write_text(config)
    module = tmp_path / "sleepy.py"
    module.write_text(SLEEPY)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    # Create the SQLite storages once, here: a daemon and a CLI that both find an empty
    # DAGSTER_HOME race to create the schema ("alembic_version has more than one head").
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        fresh.get_runs(limit=1)
        fresh.get_latest_materialization_events([dg.AssetKey("sleepy")])
        fresh.all_instigator_state()
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(VENV_BIN / "dagster-daemon"), "run", "-f", str(module)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    materialize = subprocess.Popen(
        [
            str(VENV_BIN / "dagster"),
            "asset",
            "materialize",
            "-f",
            str(module),
            "--select",
            "sleepy",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run_id, step_pid = _step_started(instance, timeout_s=90)
            assert step_pid != materialize.pid  # the multiprocess executor's step process

            # kill -9 of the parent only: the step process is orphaned, the run STARTED.
            os.kill(materialize.pid, signal.SIGKILL)
            materialize.wait(timeout=10)
            killed_at = time.monotonic()
            assert not _gone(step_pid)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]

            while instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.FAILURE:  # type: ignore[union-attr]
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
                assert time.monotonic() - killed_at < 45, (
                    "run still STARTED 45 s after its worker was killed:\n"
                    + (tmp_path / "daemon.log").read_text()[-3000:]
                )
                time.sleep(0.5)

            failed_after = time.monotonic() - killed_at
            messages = [r.message for r in instance.all_logs(run_id)]
            assert any(f"run worker pid {materialize.pid} is gone" in m for m in messages), messages
            assert any(f"orphaned step process(es) [{step_pid}]" in m for m in messages), messages
            deadline = time.monotonic() + 15
            while not _gone(step_pid):
                assert time.monotonic() < deadline, f"orphaned step process {step_pid} still runs"
                time.sleep(0.2)
            print(f"run marked FAILURE {failed_after:.1f} s after kill -9")
    finally:
        _kill_group(materialize)
        _kill_group(daemon)
        log.close()


def test_deploy_instance_config_enables_run_monitoring(tmp_path: Path) -> None:
    """deploy/dagster.yaml is valid Dagster instance config with run monitoring on (its
    Postgres storage swapped for the default SQLite one, as CI has no Postgres)."""
    import yaml

    from bikeshare_assets.runs import LocalRunLauncher

    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    config.pop("storage")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health


def test_bikeshare_writes_and_updates_its_instance_config(home: Path) -> None:
    from bikeshare_assets.cli import _prepare_instance
    from bikeshare_assets_tests.conftest import settings_for

    settings = settings_for(home)
    yaml_path = settings.dagster_home / "dagster.yaml"
    settings.dagster_home.mkdir(parents=True)
    # A file an older `bikeshare demo` wrote (telemetry only): brought up to date.
    yaml_path.write_text(DAGSTER_YAML.splitlines()[0] + "\ntelemetry:\n  enabled: false\n")
    _prepare_instance(settings).dispose()
    assert yaml_path.read_text() == DAGSTER_YAML
    # An operator's own file is left alone.
    yaml_path.write_text("telemetry:\n  enabled: false\n")
    _prepare_instance(settings).dispose()
    assert yaml_path.read_text() == "telemetry:\n  enabled: false\n"
