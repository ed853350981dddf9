"""Deploying the serving bundle: a supervised local scoring process (blue/green) or a
SageMaker real-time endpoint (model → endpoint config → create/update, canary, rollback).

Both run the same program, MLflow's pyfunc scoring server; locally it is a process on
127.0.0.1, on AWS it is the SageMaker container's entrypoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from bikeshare_assets.errors import UserError
from bikeshare_assets.serving.client import EndpointError, HttpTransport, score
from bikeshare_assets.serving.processes import (
    ProcessIdentity,
    describe_port_user,
    identity_mismatch,
    identity_of,
    in_group,
    leads_own_group,
    port_in_use,
    port_listeners,
    running_processes,
    stop_group,
)
from bikeshare_assets.settings import child_process_environment


@dataclass
class LocalEndpointState:
    url: str
    port: int
    pid: int
    color: str
    model_uri: str
    model_version: str
    model_dir: str
    started_at: str
    log_file: str
    # Who the process is, recorded when it started and checked before it is trusted or
    # signalled: a PID alone may name an unrelated process once it is reused.
    process_start_time: float | None = None
    cmdline: list[str] | None = None

    def identity(self) -> ProcessIdentity | None:
        if self.process_start_time is None or not self.cmdline:
            return None  # a state file written before identities were recorded
        return ProcessIdentity(self.pid, self.process_start_time, tuple(self.cmdline))


_STATE_TYPES = {"url": str, "port": int, "pid": int, "model_version": str, "model_dir": str}


class DeploymentRefused(UserError):
    """The new version failed its health checks; the previous one keeps serving."""


class UnreadableState(Exception):
    """The serving state file exists but is not a state this deployer wrote."""


@dataclass(frozen=True)
class EndpointStatus:
    """The recorded endpoint when it is this city's scoring server and answers /ping;
    otherwise `problem` says why there is no live endpoint."""

    state: LocalEndpointState | None
    problem: str | None = None


@dataclass
class StopOutcome:
    """What `LocalDeployer.stop` did, for the operator."""

    state_file: Path
    stopped: LocalEndpointState | None = None
    left_alone: str | None = None  # why the process the state named was not signalled
    repaired: str | None = None  # the unreadable state file and where it went
    orphans: list[ProcessIdentity] = field(default_factory=list)

    def lines(self, city: str) -> list[str]:
        out = [f"{city}: {self.repaired}"] if self.repaired else []
        if self.stopped is not None:
            out.append(
                f"{city}: stopped the local endpoint ({self.stopped.url}, PID {self.stopped.pid}); "
                "`bikeshare serve` starts it again"
            )
        for orphan in self.orphans:
            out.append(
                f"{city}: stopped an orphaned scoring server of this city, {orphan.describe()}"
            )
        if self.stopped is None and not self.orphans:
            detail = (
                f": {self.state_file} named {self.left_alone}; that process was left alone and "
                "the stale state file removed"
                if self.left_alone
                else ""
            )
            out.append(f"{city}: nothing was running{detail}")
        return out


def stop_process(pid: int, grace_s: float = 10.0) -> None:
    """Stop a process group this Python process started itself and has not reaped (its PID
    cannot have been reused). Anything else goes through `processes.stop_group`, which
    checks the recorded identity first."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        # Done when the whole group is gone: the leader exits first, and its server workers
        # (which hold the port) may still be shutting down. While any member lives, the
        # group's ID cannot be handed out again, so signalling it stays safe.
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_started(process: subprocess.Popen) -> None:
    """Stop a scoring process this deploy started. Until it is reaped its PID cannot be
    reused; once reaped, only workers left in its group (which keep the group's ID in use)
    are killed."""
    if process.poll() is None:
        stop_process(process.pid)
    elif identity_of(process.pid) is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


class LocalDeployer:
    """Blue/green on two ports (default 8080 and 8081): the new process starts on the idle
    port, must answer /ping (the port's listener being the process just started) and a
    sample /invocations with the expected model version, and only then does the state file
    (the address everybody calls) move to it.

    Only a process proven to be this city's scoring server is ever signalled: the one the
    state file names if its PID, start time and command line still match, or an orphan whose
    command line serves a model from this state directory and which leads its own process
    group (what `start` creates)."""

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        ports: tuple[int, int] = (8080, 8081),
        startup_timeout_s: float = 90.0,
        request_timeout_s: float = 10.0,
    ):
        self.state_dir = Path(state_dir).absolute()
        self.host = host
        self.ports = ports
        self.startup_timeout_s = startup_timeout_s
        self.request_timeout_s = request_timeout_s
        self.notes: list[str] = []  # what the last deploy worked around (ports, repairs)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "endpoint.json"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    def read_state(self) -> LocalEndpointState | None:
        """The recorded endpoint (None: no state file); UnreadableState names a broken file."""
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise UnreadableState(
                f"serving state file {self.state_file} is unreadable ({exc})"
            ) from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            state = LocalEndpointState(**data)
            wrong = [k for k, t in _STATE_TYPES.items() if not isinstance(getattr(state, k), t)]
            if wrong:
                raise ValueError(f"wrong type for {', '.join(wrong)}")
        except (ValueError, TypeError) as exc:
            raise UnreadableState(
                f"serving state file {self.state_file} is corrupt ({type(exc).__name__}: {exc})"
            ) from exc
        return state

    def state(self) -> LocalEndpointState | None:
        """The recorded endpoint, or None when there is none or it cannot be read."""
        try:
            return self.read_state()
        except UnreadableState:
            return None

    def _serves_from_here(self, process: ProcessIdentity, model_dir: str | None = None) -> bool:
        """`process` is `mlflow models serve -m <a model dir of this state dir>` (or of
        `model_dir`) and leads its own process group, as `start` creates it."""
        cmd = list(process.cmdline)
        for i in range(len(cmd) - 4):
            if cmd[i : i + 4] == ["mlflow", "models", "serve", "-m"]:
                served = Path(cmd[i + 4])
                if model_dir is not None:
                    matches = served == Path(model_dir)
                else:
                    matches = served.parent == self.models_dir
                return matches and leads_own_group(process.pid)
        return False

    def proven_identity(
        self, state: LocalEndpointState
    ) -> tuple[ProcessIdentity | None, str | None]:
        """(identity, None) when the state's PID is still its scoring server; else (None, why)."""
        recorded = state.identity()
        if recorded is not None:
            mismatch = identity_mismatch(recorded)
            return (None, mismatch) if mismatch else (recorded, None)
        # Written before identities were recorded: the command line has to prove it.
        current = identity_of(state.pid)
        if current is None:
            return None, f"PID {state.pid} is not running"
        if not self._serves_from_here(current, state.model_dir):
            return None, f"{current.describe()}, which is not this city's scoring server"
        return current, None

    def status(self) -> EndpointStatus:
        try:
            state = self.read_state()
        except UnreadableState as exc:
            return EndpointStatus(
                None,
                f"{exc}; treated as no live endpoint until a deploy (`bikeshare serve` or "
                "materializing <city>/model_endpoint) or `bikeshare serve --stop` sets it aside",
            )
        if state is None:
            return EndpointStatus(None, f"nothing deployed ({self.state_file} does not exist)")
        _, why = self.proven_identity(state)
        if why is not None:
            return EndpointStatus(None, f"{self.state_file} names {why}")
        if not HttpTransport(state.url).ping():
            return EndpointStatus(None, f"{state.url} (PID {state.pid}) does not answer /ping")
        return EndpointStatus(state)

    def live(self) -> LocalEndpointState | None:
        """The current endpoint if it is this city's scoring server and answers /ping."""
        return self.status().state

    def _write_state(self, state: LocalEndpointState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, self.state_file)  # atomic: callers see the old or the new endpoint

    def _set_aside(self, problem: UnreadableState) -> str:
        """Move an unreadable state file aside (kept for a post-mortem)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        aside = self.state_file.with_name(f"{self.state_file.name}.broken-{stamp}")
        os.replace(self.state_file, aside)
        return f"{problem}; moved it to {aside}"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One deploy or stop of this city at a time (they start and stop processes)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def orphans(self, keep: LocalEndpointState | None = None) -> list[ProcessIdentity]:
        """This city's scoring servers that the state file does not name: nobody calls them,
        they only hold ports."""
        return [
            process
            for process in running_processes()
            if (keep is None or process.pid != keep.pid) and self._serves_from_here(process)
        ]

    def _stop_orphans(self, keep: LocalEndpointState | None) -> list[ProcessIdentity]:
        return [orphan for orphan in self.orphans(keep) if stop_group(orphan)]

    def _choose_port(self, old: LocalEndpointState | None) -> int:
        """The idle blue/green port; the other one when it is taken by another process."""
        candidates = [p for p in self.ports if old is None or p != old.port]
        busy = []
        for port in candidates:
            if not port_in_use(self.host, port):
                if busy:
                    self.notes.append(f"{busy[0]}; started on port {port} instead")
                return port
            busy.append(describe_port_user(port))
        live = f"; port {old.port} serves the live endpoint" if old is not None else ""
        raise DeploymentRefused(
            f"{'; '.join(busy)}{live}. Stop that process or set BIKESHARE_ENDPOINT_PORTS to two "
            "free ports"
        )

    def start(self, model_dir: Path, port: int, log_file: Path) -> subprocess.Popen:
        env = child_process_environment(Path(sys.executable).parent)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    str(model_dir),
                    "--env-manager",
                    "local",
                    "-h",
                    self.host,
                    "-p",
                    str(port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives the Dagster run; stopped by process group
            )

    def _port_taken_by_another(self, process: subprocess.Popen, port: int) -> str | None:
        """`port N is used by PID M (...)` when the port's listener is not the process just
        started (or its worker), else None."""
        listeners = port_listeners(port)
        if listeners and not any(in_group(pid, process.pid) for pid in listeners):
            return describe_port_user(port)
        return None

    def wait_healthy(
        self, process: subprocess.Popen, port: int, sample: pl.DataFrame, expect_version: str
    ) -> float:
        """/ping answered by the process just started, then a sample /invocations; returns
        the sample latency in ms."""
        url = f"http://{self.host}:{port}"
        transport = HttpTransport(url)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if process.poll() is not None:
                taken = self._port_taken_by_another(process, port)
                raise DeploymentRefused(
                    taken or f"scoring process exited with code {process.returncode} before /ping"
                )
            if transport.ping(timeout_s=1.0):
                taken = self._port_taken_by_another(process, port)
                if taken:  # someone else answered: the new process cannot bind the port
                    raise DeploymentRefused(taken)
                if port_listeners(port):
                    break
            if time.monotonic() > deadline:
                raise DeploymentRefused(
                    f"no /ping answer from {url} within {self.startup_timeout_s:.0f}s"
                )
            time.sleep(0.25)
        try:
            scored = score(transport, sample, self.request_timeout_s)
        except EndpointError as exc:
            raise DeploymentRefused(f"sample /invocations failed: {exc}") from exc
        versions = set(scored.frame.get_column("model_version").to_list())
        if versions != {expect_version}:
            raise DeploymentRefused(
                f"sample answered model_version {versions}, expected {expect_version}"
            )
        if process.poll() is not None:
            raise DeploymentRefused(
                f"scoring process exited with code {process.returncode} after the sample"
            )
        return scored.latency_ms

    def _previous(self) -> LocalEndpointState | None:
        """The live endpoint; an unreadable state file is set aside (noted) and counts as none."""
        try:
            self.read_state()
        except UnreadableState as exc:
            self.notes.append(self._set_aside(exc))
        return self.live()

    def deploy(
        self, model_uri: str, model_version: str, sample: pl.DataFrame
    ) -> tuple[LocalEndpointState, float]:
        """Blue/green deploy; raises DeploymentRefused (old endpoint untouched) on failure.
        `self.notes` says what it worked around (a taken port, a broken state file, orphans)."""
        self.notes = []
        with self._lock():
            return self._deploy(model_uri, model_version, sample)

    def _deploy(
        self, model_uri: str, model_version: str, sample: pl.DataFrame
    ) -> tuple[LocalEndpointState, float]:
        old = self._previous()
        if old is not None and old.model_version == model_version:
            return old, 0.0  # already serving this version: nothing to do
        for orphan in self._stop_orphans(keep=old):
            self.notes.append(
                f"stopped an orphaned scoring server of this city, {orphan.describe()}"
            )
        keeps_serving = f"({old.model_version} on {old.url})" if old else "(none)"
        try:
            port = self._choose_port(old)
        except DeploymentRefused as exc:
            raise DeploymentRefused(
                f"{model_version} not deployed: {exc}. The previous endpoint {keeps_serving} "
                "keeps serving."
            ) from exc
        color = "green" if port == self.ports[1] else "blue"
        model_dir = self.models_dir / model_version.replace(":", "_").replace("+", "__")
        if not (model_dir / "MLmodel").exists():
            import mlflow  # ~1.5 s to import: only when a new version is copied

            # Served from a local copy, like SageMaker's /opt/ml/model: the process never needs
            # the registry.
            mlflow.artifacts.download_artifacts(
                model_uri, dst_path=str(model_dir.parent / (model_dir.name + ".dl"))
            )
            downloaded = model_dir.parent / (model_dir.name + ".dl")
            mlmodel = next(downloaded.rglob("MLmodel"))
            os.replace(mlmodel.parent, model_dir)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        log_file = self.state_dir / "logs" / f"{color}-{stamp}.log"
        process = self.start(model_dir, port, log_file)
        identity = identity_of(process.pid)  # before anything can reap it
        url = f"http://{self.host}:{port}"
        try:
            latency = self.wait_healthy(process, port, sample, model_version)
            if identity is None:
                raise DeploymentRefused("the scoring process could not be identified")
        except DeploymentRefused as exc:
            _stop_started(process)
            raise DeploymentRefused(
                f"{model_version} refused on {url}: {exc}. The previous endpoint "
                f"{keeps_serving} keeps serving. Scoring server log: {log_file}"
            ) from exc
        state = LocalEndpointState(
            url=url,
            port=port,
            pid=process.pid,
            color=color,
            model_uri=model_uri,
            model_version=model_version,
            model_dir=str(model_dir),
            started_at=datetime.now(UTC).isoformat(),
            log_file=str(log_file),
            process_start_time=identity.start_time,
            cmdline=list(identity.cmdline),
        )
        self._write_state(state)
        if old is not None:
            old_identity, _ = self.proven_identity(old)
            if old_identity is not None:
                stop_group(old_identity)
        return state, latency

    def stop(self) -> StopOutcome:
        """Stop this city's scoring server (only if proven to be it) and any orphan of this
        state directory; remove the state file; set an unreadable one aside."""
        outcome = StopOutcome(self.state_file)
        if not self.state_dir.exists():
            return outcome
        with self._lock():
            try:
                state = self.read_state()
            except UnreadableState as exc:
                outcome.repaired = self._set_aside(exc)
                state = None
            if state is not None:
                identity, outcome.left_alone = self.proven_identity(state)
                if identity is not None and stop_group(identity):
                    outcome.stopped = state
                elif outcome.left_alone is None:
                    outcome.left_alone = f"PID {state.pid}, which exited while being checked"
                self.state_file.unlink(missing_ok=True)
            outcome.orphans = self._stop_orphans(keep=None)
        return outcome


class SageMakerDeployer:
    """model → endpoint config → create/update endpoint with boto3 (the sagemaker 3.x
    resource classes add nothing here and cannot be exercised against moto).

    A challenger can take `canary_weight` of the traffic as a second production variant;
    the previous endpoint config is kept so `rollback` is one update_endpoint call.
    """

    def __init__(
        self,
        sagemaker_client: Any,
        s3_client: Any,
        *,
        endpoint_name: str,
        bucket: str,
        prefix: str,
        image_uri: str,
        role_arn: str,
        instance_type: str = "ml.m5.large",
    ):
        self.sm = sagemaker_client
        self.s3 = s3_client
        self.endpoint_name = endpoint_name
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.image_uri = image_uri
        self.role_arn = role_arn
        self.instance_type = instance_type

    def upload_model(self, model_dir: Path, model_version: str) -> str:
        """model.tar.gz with the MLflow model at its root, as SageMaker unpacks into /opt/ml/model."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path in sorted(Path(model_dir).rglob("*")):
                tar.add(path, arcname=str(path.relative_to(model_dir)))
        key = f"{self.prefix}/{_safe(model_version)}/model.tar.gz"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=buf.getvalue())
        return f"s3://{self.bucket}/{key}"

    def create_model(self, model_version: str, model_data_url: str) -> str:
        name = f"{self.endpoint_name}-{_safe(model_version)}"[:63]
        try:
            self.sm.describe_model(ModelName=name)
        except Exception:
            self.sm.create_model(
                ModelName=name,
                ExecutionRoleArn=self.role_arn,
                PrimaryContainer={
                    "Image": self.image_uri,
                    "ModelDataUrl": model_data_url,
                    "Environment": {"MLFLOW_MODEL_VERSION": model_version},
                },
            )
        return name

    def current_config(self) -> str | None:
        try:
            return self.sm.describe_endpoint(EndpointName=self.endpoint_name)["EndpointConfigName"]
        except Exception:
            return None

    def deploy(
        self, champion_model: str, challenger_model: str | None = None, canary_weight: float = 0.0
    ) -> dict:
        variants = [
            {
                "VariantName": "champion",
                "ModelName": champion_model,
                "InitialInstanceCount": 1,
                "InstanceType": self.instance_type,
                "InitialVariantWeight": 1.0 - (canary_weight if challenger_model else 0.0),
            }
        ]
        if challenger_model and canary_weight > 0:
            variants.append(
                {
                    "VariantName": "challenger",
                    "ModelName": challenger_model,
                    "InitialInstanceCount": 1,
                    "InstanceType": self.instance_type,
                    "InitialVariantWeight": canary_weight,
                }
            )
        previous = self.current_config()
        config = f"{self.endpoint_name}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"[:63]
        tags = [{"Key": "previous_config", "Value": previous or ""}]
        self.sm.create_endpoint_config(
            EndpointConfigName=config, ProductionVariants=variants, Tags=tags
        )
        if previous is None:
            self.sm.create_endpoint(EndpointName=self.endpoint_name, EndpointConfigName=config)
        else:
            self.sm.update_endpoint(EndpointName=self.endpoint_name, EndpointConfigName=config)
        return {
            "endpoint": self.endpoint_name,
            "config": config,
            "previous_config": previous,
            "variants": variants,
        }

    def live_champion_model(self) -> str | None:
        """The model behind the `champion` variant of the live config (None: no endpoint)."""
        current = self.current_config()
        if current is None:
            return None
        variants = self.sm.describe_endpoint_config(EndpointConfigName=current)[
            "ProductionVariants"
        ]
        return next((v["ModelName"] for v in variants if v["VariantName"] == "champion"), None)

    def wait_in_service(self, timeout_s: float = 1800.0, poll_s: float = 15.0) -> str:
        """Block until the endpoint is InService (a real update takes minutes); a Failed
        endpoint is an error naming SageMaker's reason."""
        # Not boto3's `endpoint_in_service` waiter: its WaiterError drops FailureReason and its
        # 30 s poll would slow the moto tests, where the endpoint is InService at once.
        deadline = time.monotonic() + timeout_s
        while True:
            described = self.sm.describe_endpoint(EndpointName=self.endpoint_name)
            status = described["EndpointStatus"]
            if status == "InService":
                return status
            if status in ("Failed", "OutOfService"):
                raise DeploymentRefused(
                    f"SageMaker endpoint {self.endpoint_name} is {status}: "
                    f"{described.get('FailureReason', 'no reason given')}. Roll back with "
                    "`bikeshare endpoint-rollback --city <city>`."
                )
            if time.monotonic() > deadline:
                raise DeploymentRefused(
                    f"SageMaker endpoint {self.endpoint_name} still {status} after {timeout_s:.0f}s"
                )
            time.sleep(poll_s)

    def rollback(self) -> tuple[str, str]:
        """Back to the endpoint config that was live before the current one."""
        current = self.current_config()
        if current is None:
            raise ValueError(f"SageMaker endpoint {self.endpoint_name} does not exist")
        arn = self.sm.describe_endpoint_config(EndpointConfigName=current)["EndpointConfigArn"]
        tags = {t["Key"]: t["Value"] for t in self.sm.list_tags(ResourceArn=arn).get("Tags", [])}
        previous = tags.get("previous_config")
        if not previous:
            raise ValueError(
                f"{self.endpoint_name}: config {current} has no previous config to roll back to"
            )
        self.sm.update_endpoint(EndpointName=self.endpoint_name, EndpointConfigName=previous)
        return current, previous


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()
