"""`bikeshare rollback`: the champion alias moves back to the previous champion in the
registry MLFLOW_TRACKING_URI names, and the next deploy re-uses that generation's bundle.

Each test works on a copy of the session registry (rollback writes aliases and tags)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bikeshare_assets.cli import main
from bikeshare_assets.registry.registry import CHAMPION, registered_model_name
from bikeshare_assets.serving.bundle import build_serving_bundle, serving_model_name
from bikeshare_assets_tests.conftest import VENV_BIN, write_cities
from bikeshare_assets_tests.serving.champions import (
    SIM_CITY,
    Champions,
    simulate_table,
    tracking_in,
)

BIKES = registered_model_name(SIM_CITY, "stockout_bikes")
DOCKS = registered_model_name(SIM_CITY, "stockout_docks")


def registry_client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, CHAMPION).version)


@pytest.fixture
def store_copy(champions: Champions, tmp_path: Path) -> Path:
    """A copy of the session registry's database (artifacts are shared, read-only)."""
    copy = tmp_path / "registry"
    copy.mkdir()
    shutil.copy(champions.db, copy / "mlflow.db")
    return copy


@pytest.fixture
def cli_env(store_copy: Path, home: Path, tmp_path: Path) -> dict[str, str]:
    cities = write_cities(tmp_path / "cities.toml", key=SIM_CITY, simulate=simulate_table())
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{store_copy / 'mlflow.db'}",
        "BIKESHARE_HOME": str(home),
        "BIKESHARE_CITIES_FILE": str(cities),
        "BIKESHARE_SOURCE": "simulate",
    }


def test_rollback_moves_the_champion_back_and_the_old_bundle_is_reused(
    champions: Champions,
    store_copy: Path,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    copy = registry_client(cli_env["MLFLOW_TRACKING_URI"])
    assert (champion(copy, BIKES), champion(copy, DOCKS)) == ("2", "1")

    assert main(["rollback", "--city", SIM_CITY, "--target", "stockout_bikes"]) == 0
    out = capsys.readouterr().out
    assert f"{BIKES}: champion moved from v2 back to v1" in out
    assert f"materialize {SIM_CITY}/model_endpoint" in out
    assert (champion(copy, BIKES), champion(copy, DOCKS)) == ("1", "1")
    assert copy.get_model_version(BIKES, "1").tags["restored_from"] == "2"
    assert "rolled_back_at" in copy.get_model_version(BIKES, "2").tags

    # the session's own registry did not move
    original = champions.tracking.client()
    assert champion(original, BIKES) == "2"

    # redeploying now serves generation 1's bundle again: re-used, not registered anew
    tracking = tracking_in(store_copy)
    bundle = build_serving_bundle(tracking, SIM_CITY, champions.snapshot)
    assert bundle.label == champions.bundles[0].label == "stockout_bikes:v1+stockout_docks:v1"
    assert str(bundle.version) == str(champions.bundles[0].version)
    versions = tracking.client().search_model_versions(f"name='{serving_model_name(SIM_CITY)}'")
    assert len(versions) == len(champions.bundles)

    # stockout_docks never had a previous champion: refused, nothing moves
    assert main(["rollback", "--city", SIM_CITY, "--target", "stockout_docks"]) == 1
    assert "no previous champion; pass --to-version" in capsys.readouterr().err
    assert champion(copy, DOCKS) == "1"

    # v1 was the first champion: a second rollback needs an explicit version
    assert main(["rollback", "--city", SIM_CITY, "--target", "stockout_bikes"]) == 1
    assert "no previous champion; pass --to-version" in capsys.readouterr().err
    assert champion(copy, BIKES) == "1"
    assert (
        main(["rollback", "--city", SIM_CITY, "--target", "stockout_bikes", "--to-version", "2"])
        == 0
    )
    assert champion(copy, BIKES) == "2"
    champions.activate()


def test_bikeshare_rollback_command(store_copy: Path, cli_env: dict[str, str]) -> None:
    """The command as an operator runs it, in its own process."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BIKESHARE_"))},
        **cli_env,
    }

    done = subprocess.run(
        [str(VENV_BIN / "bikeshare"), "rollback", "--city", SIM_CITY, "--target", "stockout_bikes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{BIKES}: champion moved from v2 back to v1" in done.stdout
    copy = registry_client(cli_env["MLFLOW_TRACKING_URI"])
    assert (champion(copy, BIKES), champion(copy, DOCKS)) == ("1", "1")
