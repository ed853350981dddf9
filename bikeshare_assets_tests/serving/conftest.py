"""Serving fixtures: real champions in a temporary MLflow registry (session), and moto's
server with SageMaker's UpdateEndpoint for the SageMaker deployer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bikeshare_assets_tests.conftest import REPO
from bikeshare_assets_tests.serving.champions import Champions, build_champions
from bikeshare_assets_tests.serving.servers import free_ports
from bikeshare_assets_tests.support.processes import server_process


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
    command = [
        sys.executable,
        "-m",
        "bikeshare_assets_tests.serving.moto_sagemaker",
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with server_process(command, port, cwd=REPO) as url:
        yield MotoServer(url)


@pytest.fixture
def moto_aws(moto_sagemaker_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """Dummy credentials and the region in the environment (the autouse fixture removed the
    developer's AWS_* variables)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", moto_sagemaker_server.region)
    return moto_sagemaker_server
