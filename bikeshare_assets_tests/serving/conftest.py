"""Serving fixtures: real champions in a temporary MLflow registry (session), and moto's
server with SageMaker's UpdateEndpoint for the SageMaker deployer."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bikeshare_assets_tests.conftest import REPO
from bikeshare_assets_tests.serving.champions import Champions, build_champions
from bikeshare_assets_tests.serving.servers import free_ports, port_open


@pytest.fixture(scope="session")
def champions(tmp_path_factory: pytest.TempPathFactory) -> Champions:
    """Two generations of real champions and their serving bundles (~10 s, once):
    bundles[0] = stockout_bikes:v1+stockout_docks:v1, bundles[1] = stockout_bikes:v2+...v1."""
    return build_champions(tmp_path_factory.mktemp("champions"))


@pytest.fixture
def registry(champions: Champions) -> Champions:
    """The session's champions with MLflow pointed at their store for this test."""
    champions.activate()
    return champions


@dataclass(frozen=True)
class MotoServer:
    url: str
    region: str = "eu-west-3"


@pytest.fixture(scope="session")
def moto_sagemaker_server() -> Iterator[MotoServer]:
    """moto's server (S3, SageMaker, SageMaker runtime) on a free port, with UpdateEndpoint."""
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bikeshare_assets_tests.serving.moto_sagemaker",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not start within 30 s")
            time.sleep(0.05)
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def moto_aws(moto_sagemaker_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """Dummy credentials and the region in the environment (the autouse fixture removed the
    developer's AWS_* variables)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", moto_sagemaker_server.region)
    return moto_sagemaker_server
