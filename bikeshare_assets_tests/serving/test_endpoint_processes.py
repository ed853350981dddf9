"""The local endpoint never signals or trusts the wrong process, with real processes:

* a decoy (`sleep`, leading its own process group like a reused PID might) named by a stale
  state file survives `bikeshare serve --stop` and the demo's cleanup;
* an orphaned scoring server of another deployment on the port the deployer wants: the new
  server goes to the other blue/green port, and a refusal names the port's real user;
* a truncated state file: predictions fall back (flagged, naming the file) through
  dagster.materialize, and `bikeshare serve --detach/--stop` and the demo say which file is
  broken and set it aside.

Teardown fails if any scoring process of a test's state directory is left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.cli import main
from bikeshare_assets.definitions import build_endpoint
from bikeshare_assets.partitions import materialize_range
from bikeshare_assets.serving.client import score
from bikeshare_assets.serving.deploy import DeploymentRefused, LocalDeployer
from bikeshare_assets.serving.processes import identity_of
from bikeshare_assets.serving.resources import ModelEndpoint
from bikeshare_assets.settings import Settings
from bikeshare_assets.storage import LakeStorage, partition_key_path
from bikeshare_assets_tests.conftest import (
    build_defs,
    env_for,
    materializations,
    pkey,
    replay_table,
    run_bikeshare,
    settings_for,
    utc,
    write_cities,
)
from bikeshare_assets_tests.serving.champions import SIM_CITY, THRESHOLD, Champions, simulate_table
from bikeshare_assets_tests.serving.expect import assert_fallback_rows
from bikeshare_assets_tests.serving.servers import (
    StubEndpoint,
    free_ports,
    kill_group,
    processes_mentioning,
    wait_group_gone,
)

CITY = SIM_CITY


@dataclass
class Site:
    """One BIKESHARE_HOME serving the session's champions on two free ports."""

    home: Path
    settings: Settings
    env: dict[str, str]  # the environment `bikeshare` runs with
    ports: list[int]
    champions: Champions
    keys: list[str]  # station_features partitions in the lake (the last four snapshots)

    @property
    def endpoint(self) -> ModelEndpoint:
        return build_endpoint(self.settings)

    @property
    def deployer(self) -> LocalDeployer:
        return self.endpoint.local(CITY)

    @property
    def state_file(self) -> Path:
        return self.deployer.state_file

    def features(self, key: str) -> pl.DataFrame:
        lake = LakeStorage(root=self.settings.storage_root)
        return lake.read_parquet(partition_key_path(dg.AssetKey([CITY, "station_features"]), key))


def _stop_leftovers(state_dir: Path) -> list[int]:
    """Kill (and return) every scoring process serving a model of `state_dir`."""
    leftovers = processes_mentioning(str(state_dir))
    for pid in leftovers:
        kill_group(pid)
    return leftovers


@pytest.fixture
def site(
    registry: Champions, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    ports = free_ports(2)
    cities = write_cities(tmp_path / "cities.toml", key=CITY, simulate=simulate_table())
    overrides = {
        "BIKESHARE_SOURCE": "simulate",
        "BIKESHARE_ENDPOINT_PORTS": f"{ports[0]},{ports[1]}",
        "BIKESHARE_ENDPOINT_TIMEOUT_S": "10",  # generous: the machine may be busy
        "MLFLOW_TRACKING_URI": registry.tracking.tracking_uri,
        "BIKESHARE_MLFLOW_ARTIFACTS": str(registry.tracking.artifact_root),
    }
    env = env_for(home, cities, **overrides)
    for name, value in env.items():  # for `main([...])` in this process
        monkeypatch.setenv(name, value)
    settings = settings_for(home, cities, **overrides)
    lake = LakeStorage(root=settings.storage_root)
    times = sorted(registry.features.get_column("snapshot_at").unique().to_list())[-4:]
    for at in times:
        lake.write_parquet(
            partition_key_path(dg.AssetKey([CITY, "station_features"]), pkey(at)),
            registry.features.filter(pl.col("snapshot_at") == at),
        )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    site = Site(home, settings, child_env, ports, registry, [pkey(t) for t in times])
    try:
        yield site
    finally:
        state_dir = site.deployer.state_dir
        leftovers = _stop_leftovers(state_dir)
        assert not leftovers, f"scoring processes of {state_dir} left running: {leftovers}"


def bikeshare(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_bikeshare(*args, env=env, timeout=timeout)


@contextmanager
def decoy() -> Iterator[subprocess.Popen]:
    """An unrelated process leading its own process group (as a shell or daemon would) —
    what a reused PID in a stale state file may turn out to be."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def stale_state(deployer: LocalDeployer, port: int, pid: int, kind: str) -> dict:
    """A state file as a scoring server that has since exited would have left it, naming
    `pid` (now reused by the decoy)."""
    model_dir = deployer.state_dir / "models" / "stockout_bikes_v1__stockout_docks_v1"
    state = {
        "url": f"http://127.0.0.1:{port}",
        "port": port,
        "pid": pid,
        "color": "blue",
        "model_uri": "models:/simcity_stockout_serving/1",
        "model_version": "stockout_bikes:v1+stockout_docks:v1",
        "model_dir": str(model_dir),
        "started_at": "2025-09-08T00:00:00+00:00",
        "log_file": str(deployer.state_dir / "logs" / "blue.log"),
    }
    if kind == "recorded identity":  # what this version writes: the old process's start
        decoy_identity = identity_of(pid)
        assert decoy_identity is not None
        state["process_start_time"] = decoy_identity.start_time - 3600.0
        state["cmdline"] = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
    return state


def write_state(path: Path, state: dict | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(state if isinstance(state, str) else json.dumps(state, indent=2))


def truncated_state(deployer: LocalDeployer, port: int) -> str:
    """A state file cut short mid-write (e.g. a full disk under an older writer)."""
    text = json.dumps(stale_state(deployer, port, 1, "legacy"), indent=2)
    return text[: len(text) // 2]


def assert_alive(proc: subprocess.Popen) -> None:
    time.sleep(0.3)  # a SIGTERM would have landed by now
    assert proc.poll() is None, f"the decoy (PID {proc.pid}) was killed: {proc.returncode}"


# --------------------------------------------------------------------------------------
# 1. a stale state file never gets an unrelated process killed


@pytest.mark.parametrize("kind", ["legacy", "recorded identity"])
def test_serve_stop_leaves_the_process_a_stale_state_names_alone(site: Site, kind: str) -> None:
    with decoy() as sleeper:
        write_state(site.state_file, stale_state(site.deployer, site.ports[0], sleeper.pid, kind))

        done = bikeshare(site.env, "serve", "--stop")

        assert done.returncode == 0, done.stdout + done.stderr
        assert_alive(sleeper)
        assert f"{CITY}: nothing was running: {site.state_file} named" in done.stdout
        assert f"PID {sleeper.pid}" in done.stdout and "left alone" in done.stdout
        assert "stopped the local endpoint" not in done.stdout
        assert not site.state_file.exists()  # removed: a later PID reuse cannot hit it again

        again = bikeshare(site.env, "serve", "--stop")
        assert again.returncode == 0 and again.stdout.strip() == f"{CITY}: nothing was running"
        assert_alive(sleeper)


@pytest.fixture
def one_hour_replay(tmp_path: Path, day_recording_path: Path) -> Path:
    start = utc(2025, 9, 8, 0, 0)
    return write_cities(
        tmp_path / "replay.toml",
        replay=replay_table(day_recording_path, start, start + timedelta(hours=1)),
    )


@pytest.mark.parametrize("fault", ["decoy", "truncated"])
def test_demo_cleanup_never_kills_a_decoy_and_names_a_broken_state(
    fault: str, home: Path, one_hour_replay: Path
) -> None:
    """`bikeshare demo --until raw` as in the issue: the cleanup that stops the endpoint."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))},
        "DAGSTER_HOME": str(home / "dagster_home"),
        "BIKESHARE_ENDPOINT_PORTS": ",".join(map(str, free_ports(2))),
    }
    env.update(env_for(home, one_hour_replay))
    settings = settings_for(
        home, one_hour_replay, BIKESHARE_ENDPOINT_PORTS=env["BIKESHARE_ENDPOINT_PORTS"]
    )
    deployer = build_endpoint(settings).local("paris")
    with decoy() as sleeper:
        if fault == "decoy":
            state = stale_state(deployer, 8080, sleeper.pid, "legacy")
        else:
            state = truncated_state(deployer, 8080)
        write_state(deployer.state_file, state)

        done = bikeshare(env, "demo", "--until", "raw")

        assert done.returncode == 0, done.stdout + done.stderr
        assert_alive(sleeper)
        assert "stopped the local endpoint" not in done.stdout
        assert not deployer.state_file.exists()
        if fault == "decoy":
            assert f"paris: nothing was running: {deployer.state_file} named PID {sleeper.pid}" in (
                done.stdout
            )
        else:
            (aside,) = deployer.state_dir.glob("endpoint.json.broken-*")
            assert aside.read_text() == state
            assert f"paris: serving state file {deployer.state_file} is corrupt" in done.stdout
            assert f"moved it to {aside}" in done.stdout
            assert "paris: nothing was running" in done.stdout


# --------------------------------------------------------------------------------------
# 2. the health check reaches the process just started


def test_redeploy_beside_an_orphaned_server_on_the_port(site: Site, tmp_path: Path) -> None:
    """Another deployment's scoring server (e.g. a second checkout's `bikeshare serve`,
    serving the same bundle) holds the first port. Before: the new process died with
    "address already in use", the orphan answered the health check, the deploy reported
    success and the state recorded a dead PID."""
    first, second = site.champions.bundles
    snapshot = site.champions.snapshot
    elsewhere = LocalDeployer(tmp_path / "elsewhere", ports=(site.ports[0], site.ports[1]))
    orphan, _ = elsewhere.deploy(first.model_uri, first.label, snapshot)
    assert orphan.port == site.ports[0]
    try:
        deployed = site.endpoint.deploy(CITY, first.model_uri, first.label, snapshot)

        state = site.deployer.live()
        assert state is not None, "the state names a process that is not serving"
        assert (state.pid, state.port) == (deployed["pid"], site.ports[1])
        assert f"port {site.ports[0]} is used by PID " in deployed["notes"]
        assert f"process group {orphan.pid} of PID {orphan.pid}" in deployed["notes"]
        assert f"started on port {site.ports[1]} instead" in deployed["notes"]
        assert identity_of(orphan.pid) is not None  # another deployment's: never signalled
        transport, problem = site.endpoint.connect(CITY)
        assert transport is not None and problem is None
        answer = score(transport, snapshot, timeout_s=10).frame
        assert answer.get_column("model_version").unique().to_list() == [first.label]

        # The idle port is the orphan's and the other one serves: refused, naming the cause.
        with pytest.raises(DeploymentRefused) as caught:
            site.endpoint.deploy(CITY, second.model_uri, second.label, snapshot)
        message = str(caught.value)
        assert f"port {site.ports[0]} is used by PID " in message, message
        assert f"process group {orphan.pid} of PID {orphan.pid}" in message
        assert "exited with code" not in message
        assert f"({first.label} on {state.url}) keeps serving" in message
        after = site.deployer.live()
        assert after is not None and after.pid == state.pid
        assert identity_of(orphan.pid) is not None
    finally:
        elsewhere.stop()
        site.deployer.stop()
    assert wait_group_gone(orphan.pid) and wait_group_gone(state.pid)


# --------------------------------------------------------------------------------------
# 3. an unreadable state file is "no live endpoint", named and repaired


def test_truncated_state_predictions_fall_back_flagged(
    site: Site, instance: dg.DagsterInstance
) -> None:
    broken = truncated_state(site.deployer, site.ports[0])
    write_state(site.state_file, broken)
    keys = site.keys[-3:]

    result = materialize_range(
        build_defs(site.settings), instance, f"{CITY}/stockout_predictions", keys[0], keys[-1]
    )

    assert result.success
    meta = materializations(result)
    lake = LakeStorage(root=site.settings.storage_root)
    for key in keys:
        frame = lake.read_parquet(
            partition_key_path(dg.AssetKey([CITY, "stockout_predictions"]), key)
        )
        assert_fallback_rows(site.features(key), frame, THRESHOLD)
        assert meta[key]["source"] == "fallback" and meta[key]["batch_success"] == 0.0
        assert "no live endpoint" in meta[key]["error"]
        assert f"serving state file {site.state_file} is corrupt" in meta[key]["error"]
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert sorted(c.partition for c in checks) == keys and not any(c.passed for c in checks)
    assert site.state_file.read_text() == broken  # predictions only read it


def test_truncated_state_serve_detach_and_stop_name_the_file_and_repair_it(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    label = site.champions.bundles[-1].label  # the registry's current champions
    assert main(["serve", "--detach"]) == 0
    first = site.deployer.live()
    assert first is not None and first.model_version == label
    capsys.readouterr()

    # The state is cut short while its server runs: that server is now an orphan nobody calls.
    write_state(site.state_file, site.state_file.read_text()[:40])

    assert main(["serve", "--detach"]) == 0
    out = capsys.readouterr().out
    (aside,) = site.deployer.state_dir.glob("endpoint.json.broken-*")
    assert f"serving state file {site.state_file} is corrupt" in out
    assert f"moved it to {aside}" in out
    assert f"stopped an orphaned scoring server of this city, PID {first.pid}" in out
    assert wait_group_gone(first.pid)
    second = site.deployer.live()
    assert second is not None and second.pid != first.pid and second.model_version == label

    write_state(site.state_file, "")  # zero bytes
    assert main(["serve", "--stop"]) == 0
    out = capsys.readouterr().out
    assert f"{CITY}: serving state file {site.state_file} is corrupt" in out
    assert f"{CITY}: stopped an orphaned scoring server of this city, PID {second.pid}" in out
    assert wait_group_gone(second.pid)
    assert not site.state_file.exists()
    assert len(list(site.deployer.state_dir.glob("endpoint.json.broken-*"))) == 2
    assert processes_mentioning(str(site.deployer.state_dir)) == []


def test_health_check_refuses_a_ping_answered_by_another_process(
    registry: Champions, tmp_path: Path
) -> None:
    """The port was free when chosen, then another server took it before the new process
    bound it: its /ping answer must not count for the process just started."""
    with StubEndpoint() as stub, decoy() as starting:  # `starting` never binds the port
        port = int(stub.url.rsplit(":", 1)[1])
        deployer = LocalDeployer(tmp_path / "serving", ports=(port, free_ports(1)[0]))
        with pytest.raises(DeploymentRefused) as caught:
            deployer.wait_healthy(starting, port, registry.snapshot, "any-version")
        assert f"port {port} is used by PID {os.getpid()}" in str(caught.value)
        assert stub.requests == []  # the sample never went to the other server
