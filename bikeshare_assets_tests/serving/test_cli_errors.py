"""`bikeshare serve` when it cannot serve: one line that says why, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import dagster as dg

from bikeshare_assets.cities import SourceMode, load_cities
from bikeshare_assets.partitions import city_partitions
from bikeshare_assets.storage import LakeStorage, partition_key_path
from bikeshare_assets_tests.conftest import run_bikeshare, write_cities
from bikeshare_assets_tests.serving.champions import SIM_CITY, Champions, simulate_table


def serve(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BIKESHARE_"))}
    return run_bikeshare("serve", "--detach", env={**clean, **env})


def test_serve_without_features_and_a_refused_deploy_are_one_line(
    champions: Champions, home: Path, tmp_path: Path
) -> None:
    cities = write_cities(tmp_path / "cities.toml", key=SIM_CITY, simulate=simulate_table())
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{champions.db}",
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_CITIES_FILE": str(cities),
        "BIKESHARE_SOURCE": "simulate",
    }

    nothing = serve(env)

    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr
    lines = nothing.stderr.strip().splitlines()
    assert len(lines) <= 2, nothing.stderr
    assert f"materialize {SIM_CITY}/station_features first" in lines[0]

    # Features exist, but both blue/green ports are taken: the deploy is refused.
    city = load_cities(cities)[SIM_CITY]
    parts = city_partitions(city, SourceMode.SIMULATE)
    newest = parts.snapshots.get_last_partition_key()
    lake = LakeStorage(root=str(home / "lake"))
    key = dg.AssetKey([SIM_CITY, "station_features"])
    lake.write_parquet(partition_key_path(key, newest), champions.snapshot)
    taken = [socket.socket(), socket.socket()]
    for sock in taken:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    ports = ",".join(str(s.getsockname()[1]) for s in taken)
    try:
        refused = serve({**env, "BIKESHARE_ENDPOINT_PORTS": ports})
    finally:
        for sock in taken:
            sock.close()

    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) <= 2, refused.stderr
    # the real cause is named: which process holds the port (this test's own)
    assert "not deployed: port" in lines[0] and f"is used by PID {os.getpid()}" in lines[0]
    assert "keeps serving" in lines[0]
