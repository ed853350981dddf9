"""Shared fixtures: an isolated BIKESHARE_HOME, small replays of the real recording, test
cities files, a moto S3 server, and helpers that build the project's Definitions and
materialize partition ranges on a real Dagster instance.

Nothing of the project is mocked here: tests get the real Definitions built from a real
Settings, a real (temporary, SQLite) Dagster instance, real files, and real servers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from bikeshare_assets.cities import PARTITION_FMT
from bikeshare_assets.definitions import build_definitions
from bikeshare_assets.settings import Settings, get_settings
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.support.processes import server_process

REPO = Path(__file__).resolve().parents[1]
PARIS_DATA = REPO / "bikeshare_assets" / "data" / "paris-velib-2025-09"
RECORDING = PARIS_DATA / "velib_15min_bins.parquet"
RECORDED_WEATHER = PARIS_DATA / "weather_hourly_openmeteo.csv"
VENV_BIN = Path(sys.executable).parent


def run_bikeshare(
    *args: str, env: Mapping[str, str], timeout: float = 240
) -> subprocess.CompletedProcess:
    """The `bikeshare` command of this venv in a subprocess, with exactly `env`."""
    return subprocess.run(
        [str(VENV_BIN / "bikeshare"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# One real day of the Vélib' recording (UTC). The recorder missed bins that day, e.g.
# 00:00 and 00:15 have no snapshot, and one record at 00:30 has no station code.
DAY = "2025-09-08"
DAY_START = datetime(2025, 9, 8, tzinfo=UTC)
DAY_END = datetime(2025, 9, 9, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def pkey(ts: datetime) -> str:
    return ts.strftime(PARTITION_FMT)


# --------------------------------------------------------------------------------------
# Environment and lake
# --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the developer's .bikeshare, Dagster home, MLflow server or
    AWS profile."""
    for name in list(os.environ):
        if name.startswith(("BIKESHARE_", "AWS_", "MLFLOW_")) or name == "DAGSTER_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("BIKESHARE_HOME", str(tmp_path / "bikeshare"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "bikeshare" / "dagster_home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A temporary BIKESHARE_HOME (the same one the autouse fixture exported)."""
    path = tmp_path / "bikeshare"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def lake(home: Path) -> LakeStorage:
    return LakeStorage(root=str(home / "lake"))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance with in-memory (SQLite) run and event storage."""
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


# --------------------------------------------------------------------------------------
# Recordings and cities files
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def full_recording() -> pl.DataFrame:
    return pl.read_parquet(RECORDING)


@pytest.fixture(scope="session")
def day_recording_path(
    tmp_path_factory: pytest.TempPathFactory, full_recording: pl.DataFrame
) -> Path:
    """A copy of the real recording trimmed to one day (2025-09-08 UTC), every station."""
    path = tmp_path_factory.mktemp("recordings") / "velib_2025-09-08.parquet"
    trim_recording(full_recording, DAY_START, DAY_END).write_parquet(path)
    return path


def trim_recording(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    naive = (start.replace(tzinfo=None), end.replace(tzinfo=None))
    return frame.filter((pl.col("tbin_utc") >= naive[0]) & (pl.col("tbin_utc") < naive[1]))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f'"{pkey(value)}"'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_cities(
    path: Path,
    *,
    key: str = "paris",
    gbfs_url: str = "http://127.0.0.1:9/nowhere/gbfs.json",
    replay: Mapping[str, Any] | None = None,
    simulate: Mapping[str, Any] | None = None,
    **city: Any,
) -> Path:
    """Write a one-city cities TOML (Paris defaults) with optional replay / simulate tables."""
    table: dict[str, Any] = {
        "display_name": f"{key} (test)",
        "gbfs_url": gbfs_url,
        "language": "fr",
        "timezone": "Europe/Paris",
        "country": "FR",
        "latitude": 48.8566,
        "longitude": 2.3522,
        "radius_km": 40.0,
        "cadence_minutes": 5,
        "stockout_threshold": 2,
        "live_start": "2026-11-01-00:00",
        **city,
    }
    lines = [f"[cities.{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for name, sub in (("replay", replay), ("simulate", simulate)):
        if sub is not None:
            lines += ["", f"[cities.{key}.{name}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in sub.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replay_table(
    status_path: Path,
    start: datetime = DAY_START,
    end: datetime = DAY_END,
    weather_path: Path | None = RECORDED_WEATHER,
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "status_path": str(status_path),
        "cadence_minutes": 15,
        "start": start,
        "end": end,
    }
    if weather_path is not None:
        table["weather_path"] = str(weather_path)
    return table


@pytest.fixture
def day_cities(tmp_path: Path, day_recording_path: Path) -> Path:
    """A cities file whose Paris replays the one-day trimmed copy of the recording."""
    return write_cities(tmp_path / "cities.toml", replay=replay_table(day_recording_path))


# --------------------------------------------------------------------------------------
# Definitions and materialization
# --------------------------------------------------------------------------------------


def env_for(home: Path, cities_file: Path | None = None, **overrides: str) -> dict[str, str]:
    """The environment variables a test deployment is configured with."""
    env = {"BIKESHARE_HOME": str(home)}
    if cities_file is not None:
        env["BIKESHARE_CITIES_FILE"] = str(cities_file)
    env.update(overrides)
    return env


def settings_for(home: Path, cities_file: Path | None = None, **overrides: str) -> Settings:
    return get_settings(env_for(home, cities_file, **overrides))


def build_defs(settings: Settings) -> dg.Definitions:
    return build_definitions(settings)


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """partition key -> metadata values of each materialization in a run."""
    out: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        out[str(mat.partition)] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


def step_failure_message(result: dg.ExecuteInProcessResult) -> str:
    """What an operator reads for a failed step: the Failure description, or the error and
    its causes."""
    texts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            user = event.step_failure_data.user_failure_data
            if user and user.description:
                texts.append(user.description)
            error = event.step_failure_data.error
            while error is not None:  # the framework's wrapper, then the causes
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)


def lake_files(root: Path) -> list[str]:
    """Every file under a local lake, relative, including hidden ones (temp files)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------
# S3 on moto's real server
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server (the `moto_server` executable) on a free 127.0.0.1 port."""
    port = free_port()
    command = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with server_process(command, port) as url:
        yield url


@dataclass(frozen=True)
class MotoS3:
    endpoint_url: str
    bucket: str
    client: Any  # boto3 S3 client

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture
def moto_s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """A fresh bucket on the moto server, with dummy AWS credentials in the environment."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"bikeshare-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return MotoS3(moto_endpoint, bucket, client)
