"""Deploying the serving bundle: a supervised local scoring process (blue/green) or a
SageMaker real-time endpoint (model → endpoint config → create/update, canary, rollback).

Both run the same program, MLflow's pyfunc scoring server; locally it is a process on
127.0.0.1, on AWS it is the SageMaker container's entrypoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from bikeshare_assets.serving.client import EndpointError, HttpTransport, score
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


class DeploymentRefused(Exception):
    """The new version failed its health checks; the previous one keeps serving."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(pid: int, grace_s: float = 10.0) -> None:
    """Stop a scoring process and its workers (it runs in its own process group)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class LocalDeployer:
    """Blue/green on two ports (default 8080 and 8081): the new process starts on the idle
    port, must answer /ping and a sample /invocations with the expected model version, and
    only then does the state file (the address everybody calls) move to it."""

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        ports: tuple[int, int] = (8080, 8081),
        startup_timeout_s: float = 90.0,
        request_timeout_s: float = 10.0,
    ):
        self.state_dir = Path(state_dir)
        self.host = host
        self.ports = ports
        self.startup_timeout_s = startup_timeout_s
        self.request_timeout_s = request_timeout_s

    @property
    def state_file(self) -> Path:
        return self.state_dir / "endpoint.json"

    def state(self) -> LocalEndpointState | None:
        if not self.state_file.exists():
            return None
        return LocalEndpointState(**json.loads(self.state_file.read_text()))

    def live(self) -> LocalEndpointState | None:
        """The current endpoint if its process is alive and answers /ping."""
        state = self.state()
        if state is None or not _pid_alive(state.pid):
            return None
        return state if HttpTransport(state.url).ping() else None

    def _write_state(self, state: LocalEndpointState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, self.state_file)  # atomic: callers see the old or the new endpoint

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

    def wait_healthy(
        self, process: subprocess.Popen, url: str, sample: pl.DataFrame, expect_version: str
    ) -> float:
        """/ping then a sample /invocations; returns the sample latency in ms."""
        transport = HttpTransport(url)
        deadline = time.monotonic() + self.startup_timeout_s
        while not transport.ping(timeout_s=1.0):
            if process.poll() is not None:
                raise DeploymentRefused(
                    f"scoring process exited with code {process.returncode} before /ping"
                )
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
        return scored.latency_ms

    def deploy(
        self, model_uri: str, model_version: str, sample: pl.DataFrame
    ) -> tuple[LocalEndpointState, float]:
        """Blue/green deploy; raises DeploymentRefused (old endpoint untouched) on failure."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        old = self.live()
        if old is not None and old.model_version == model_version:
            return old, 0.0  # already serving this version: nothing to do
        port = self.ports[1] if old is not None and old.port == self.ports[0] else self.ports[0]
        color = "green" if port == self.ports[1] else "blue"
        model_dir = self.state_dir / "models" / model_version.replace(":", "_").replace("+", "__")
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
        url = f"http://{self.host}:{port}"
        try:
            latency = self.wait_healthy(process, url, sample, model_version)
        except DeploymentRefused as exc:
            stop_process(process.pid)
            raise DeploymentRefused(
                f"{model_version} refused on {url}: {exc}. The previous endpoint "
                f"{'(' + old.model_version + ' on ' + old.url + ')' if old else '(none)'} keeps serving. "
                f"Scoring server log: {log_file}"
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
        )
        self._write_state(state)
        if old is not None:
            stop_process(old.pid)
        return state, latency

    def stop(self) -> LocalEndpointState | None:
        state = self.state()
        if state is not None:
            stop_process(state.pid)
        return state


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
