"""The code location loads, validates, and exposes exactly the assets and checks we expect."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from bikeshare_assets.definitions import build_definitions, build_resources
from bikeshare_assets.settings import Deployment, get_settings
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.conftest import REPO, VENV_BIN, env_for, settings_for, write_cities

# The raw layer of the embedded default (package cities.toml, replay). A rename or a lost
# raw asset or check must show up here; update this list on purpose when the layer changes.
# (The layers above own their own snapshots: features, training and registry are still
# being built and are only required to load alongside.)
EXPECTED_ASSET_KEYS = [
    "paris/raw_station_information",
    "paris/raw_station_status",
    "paris/raw_weather",
]
EXPECTED_CHECK_KEYS = [
    "paris/raw_station_information:capacity_present",
    "paris/raw_station_information:contract",
    "paris/raw_station_information:coordinates_near_city",
    "paris/raw_station_status:contract",
    "paris/raw_station_status:last_reported_fresh",
    "paris/raw_station_status:timestamps_utc",
    "paris/raw_station_status:within_capacity",
    "paris/raw_weather:contract",
    "paris/raw_weather:plausible_ranges",
]

# The feature, training and registry layers above it, snapshotted the same way.
MODEL_LAYERS = ("station_features", "stockout_labels", "stockout_model", "registered_model_version")
EXPECTED_MODEL_LAYER_ASSET_KEYS = [
    "paris/registered_model_version",
    "paris/station_features",
    "paris/stockout_labels",
    "paris/stockout_model",
]
EXPECTED_MODEL_LAYER_CHECK_KEYS = [
    "paris/registered_model_version:promotion_gate_stockout_bikes",
    "paris/registered_model_version:promotion_gate_stockout_docks",
    "paris/station_features:no_look_ahead",
    "paris/station_features:null_budget",
    "paris/stockout_labels:label_maturity",
    "paris/stockout_model:beats_persistence",
    "paris/stockout_model:overfit_gap",
]


def layer_graph(defs: dg.Definitions, names=MODEL_LAYERS) -> tuple[list[str], list[str]]:
    """Sorted asset keys and check keys ("asset:check") of the assets named in `names`."""
    repo = defs.get_repository_def()
    keys = [k for k in repo.asset_graph.get_all_asset_keys() if k.path[-1] in names]
    assets = sorted(k.to_user_string() for k in keys)
    checks = sorted(
        f"{k.asset_key.to_user_string()}:{k.name}"
        for k in repo.asset_graph.asset_check_keys
        if k.asset_key in keys
    )
    return assets, checks


def graph(defs: dg.Definitions, prefix: str = "raw_") -> tuple[list[str], list[str]]:
    """Sorted asset keys and check keys ("asset:check") of the assets named `prefix*`."""
    repo = defs.get_repository_def()
    keys = [k for k in repo.asset_graph.get_all_asset_keys() if k.path[-1].startswith(prefix)]
    assets = sorted(k.to_user_string() for k in keys)
    checks = sorted(
        f"{k.asset_key.to_user_string()}:{k.name}"
        for k in repo.asset_graph.asset_check_keys
        if k.asset_key in keys
    )
    return assets, checks


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "BIKESHARE_HOME": str(tmp_path / "bikeshare"),
    }

    proc = subprocess.run(
        [
            str(VENV_BIN / "dagster"),
            "definitions",
            "validate",
            "-m",
            "bikeshare_assets.definitions",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_module_level_defs_load_in_process() -> None:
    from bikeshare_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert graph(defs) == (EXPECTED_ASSET_KEYS, EXPECTED_CHECK_KEYS)
    assert layer_graph(defs) == (EXPECTED_MODEL_LAYER_ASSET_KEYS, EXPECTED_MODEL_LAYER_CHECK_KEYS)


def test_snapshot_of_asset_and_check_keys(home: Path) -> None:
    defs = build_definitions(get_settings(env_for(home)))

    dg.Definitions.validate_loadable(defs)
    assert graph(defs) == (EXPECTED_ASSET_KEYS, EXPECTED_CHECK_KEYS)
    repo = defs.get_repository_def()
    assert repo.schedule_defs == []  # replay: nothing runs on its own
    # Every raw asset is partitioned, single-run backfilled, and its checks are per partition.
    for key in repo.asset_graph.get_all_asset_keys():
        if key.path[-1].startswith("raw_"):
            node = repo.asset_graph.get(key)
            assert isinstance(node.partitions_def, dg.TimeWindowPartitionsDefinition)
            assert node.backfill_policy == dg.BackfillPolicy.single_run()


def test_snapshot_of_the_feature_training_and_registry_layers(home: Path) -> None:
    defs = build_definitions(get_settings(env_for(home)))

    assert layer_graph(defs) == (EXPECTED_MODEL_LAYER_ASSET_KEYS, EXPECTED_MODEL_LAYER_CHECK_KEYS)
    repo = defs.get_repository_def()
    node = {name: repo.asset_graph.get(dg.AssetKey(["paris", name])) for name in MODEL_LAYERS}
    raw = {n: dg.AssetKey(["paris", n]) for n in ("raw_station_status", "raw_weather")}
    info = dg.AssetKey(["paris", "raw_station_information"])
    snapshots = repo.asset_graph.get(raw["raw_station_status"]).partitions_def
    days = repo.asset_graph.get(info).partitions_def
    # Features and labels live on the snapshot partitions, models and versions on days.
    for name in ("station_features", "stockout_labels"):
        assert node[name].partitions_def == snapshots
        assert node[name].backfill_policy == dg.BackfillPolicy.single_run()
    for name in ("stockout_model", "registered_model_version"):
        assert node[name].partitions_def == days
    # The lineage: raw -> features / labels -> model -> registered version.
    assert node["station_features"].parent_keys == {*raw.values(), info}
    assert node["stockout_labels"].parent_keys == {raw["raw_station_status"]}
    assert node["stockout_model"].parent_keys == {
        dg.AssetKey(["paris", "station_features"]),
        dg.AssetKey(["paris", "stockout_labels"]),
    }
    assert node["registered_model_version"].parent_keys == {
        dg.AssetKey(["paris", "stockout_model"])
    }
    # Checks are evaluated per partition; the promotion gate blocks what comes after it.
    specs = {
        f"{spec.asset_key.to_user_string()}:{spec.name}": spec
        for name in MODEL_LAYERS
        for spec in defs.resolve_assets_def(dg.AssetKey(["paris", name])).check_specs
    }
    assert sorted(specs) == EXPECTED_MODEL_LAYER_CHECK_KEYS
    assert {k for k, spec in specs.items() if spec.blocking} == {
        "paris/registered_model_version:promotion_gate_stockout_bikes",
        "paris/registered_model_version:promotion_gate_stockout_docks",
    }
    for key, spec in specs.items():
        asset = key.split(":")[0].split("/")[1]
        assert spec.partitions_def == node[asset].partitions_def, key


def test_every_city_gets_its_own_subgraph(home: Path, tmp_path: Path) -> None:
    cities = tmp_path / "two.toml"
    write_cities(
        cities, key="paris", simulate={"stations": 5, "days": 1, "start": "2026-01-05-00:00"}
    )
    lyon = write_cities(
        tmp_path / "lyon.toml",
        key="lyon",
        simulate={"stations": 5, "days": 1, "start": "2026-01-05-00:00"},
    )
    cities.write_text(cities.read_text() + "\n" + lyon.read_text())

    defs = build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="simulate"))

    assets, checks = graph(defs)
    assert assets == sorted(
        [k.replace("paris/", f"{c}/") for c in ("lyon", "paris") for k in EXPECTED_ASSET_KEYS]
    )
    assert len(checks) == 2 * len(EXPECTED_CHECK_KEYS)
    assert layer_graph(defs)[0] == sorted(
        k.replace("paris/", f"{c}/")
        for c in ("lyon", "paris")
        for k in EXPECTED_MODEL_LAYER_ASSET_KEYS
    )
    assert len(layer_graph(defs)[1]) == 2 * len(EXPECTED_MODEL_LAYER_CHECK_KEYS)
    only = build_definitions(
        settings_for(home, cities, BIKESHARE_SOURCE="simulate", BIKESHARE_CITIES="lyon")
    )
    assert graph(only)[0] == [k.replace("paris/", "lyon/") for k in EXPECTED_ASSET_KEYS]


def test_live_mode_has_running_schedules(home: Path, tmp_path: Path) -> None:
    cities = write_cities(tmp_path / "live.toml", gbfs_url="http://127.0.0.1:9/gbfs.json")
    defs = build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="live"))

    repo = defs.get_repository_def()
    assert graph(defs) == (EXPECTED_ASSET_KEYS, EXPECTED_CHECK_KEYS)
    raw = {
        s.name: s
        for s in repo.schedule_defs
        if s.name
        in (
            "paris_station_information_daily_schedule",
            "paris_station_status_live_schedule",
            "paris_weather_hourly_schedule",
        )
    }
    assert len(raw) == 3
    assert {s.default_status for s in raw.values()} == {dg.DefaultScheduleStatus.RUNNING}
    status = raw["paris_station_status_live_schedule"]
    assert status.cron_schedule == "*/5 * * * *"


# The declarative automation (automation/policies.py, docs/automation.md): the assets that
# run by themselves, the sensors that evaluate them, and the assets with a freshness policy
# in live mode. drift_report is listed from the start; it is required once monitoring
# builds it.
EXPECTED_AUTOMATED_ASSET_KEYS = [
    "paris/drift_report",
    "paris/model_endpoint",
    "paris/model_quality",
    "paris/prediction_outcomes",
    "paris/registered_model_version",
    "paris/station_features",
    "paris/stockout_labels",
    "paris/stockout_model",
    "paris/stockout_predictions",
]
EXPECTED_AUTOMATION_SENSORS = ["paris_automation"]
EXPECTED_LIVE_FRESHNESS_KEYS = [
    "paris/drift_report",
    "paris/raw_station_status",
    "paris/registered_model_version",
    "paris/stockout_model",
    "paris/stockout_predictions",
]


def automation_snapshot(defs: dg.Definitions) -> tuple[list[str], list[str], list[str]]:
    """(assets with a condition, automation sensors, assets with a freshness policy)."""
    specs = list(defs.resolve_all_asset_specs())
    repo = defs.get_repository_def()
    sensors = [s for s in repo.sensor_defs if isinstance(s, dg.AutomationConditionSensorDefinition)]
    return (
        sorted(s.key.to_user_string() for s in specs if s.automation_condition is not None),
        sorted(s.name for s in sensors),
        sorted(s.key.to_user_string() for s in specs if s.freshness_policy is not None),
    )


def test_snapshot_of_the_automation(home: Path, tmp_path: Path) -> None:
    replay = build_definitions(get_settings(env_for(home)))
    cities = write_cities(tmp_path / "live.toml", gbfs_url="http://127.0.0.1:9/gbfs.json")
    live = build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="live"))

    assert automation_snapshot(replay) == (
        EXPECTED_AUTOMATED_ASSET_KEYS,
        EXPECTED_AUTOMATION_SENSORS,
        [],  # nothing refreshes a replay by itself
    )
    assert automation_snapshot(live) == (
        EXPECTED_AUTOMATED_ASSET_KEYS,
        EXPECTED_AUTOMATION_SENSORS,
        EXPECTED_LIVE_FRESHNESS_KEYS,
    )
    assert {s.default_status for s in replay.get_repository_def().sensor_defs} == {
        dg.DefaultSensorStatus.STOPPED
    }


# --------------------------------------------------------------------------------------
# Settings errors are clear and early
# --------------------------------------------------------------------------------------


def test_bad_deployment_is_rejected(home: Path) -> None:
    with pytest.raises(
        ValueError, match=r"BIKESHARE_DEPLOYMENT='laptop' is not one of local, staging, prod"
    ):
        get_settings(env_for(home, BIKESHARE_DEPLOYMENT="laptop"))


def test_bad_source_is_rejected(home: Path) -> None:
    with pytest.raises(
        ValueError, match=r"BIKESHARE_SOURCE='kafka' is not one of replay, live, simulate"
    ):
        get_settings(env_for(home, BIKESHARE_SOURCE="kafka"))


def test_unknown_city_is_rejected(home: Path) -> None:
    with pytest.raises(
        ValueError, match=r"BIKESHARE_CITIES names \['atlantis'\].*known cities: \['paris'\]"
    ):
        get_settings(env_for(home, BIKESHARE_CITIES="paris,atlantis"))


def test_city_without_the_chosen_source_is_rejected(home: Path, tmp_path: Path) -> None:
    cities = write_cities(tmp_path / "c.toml")  # live only: no replay table
    with pytest.raises(ValueError, match=r"cities \['paris'\] have no \[replay\] configuration"):
        get_settings(env_for(home, cities, BIKESHARE_CITIES="paris"))


def test_bad_cadence_in_the_cities_file_is_rejected(home: Path, tmp_path: Path) -> None:
    cities = write_cities(tmp_path / "c.toml", cadence_minutes=7)
    with pytest.raises(ValueError, match=r"\[cities.paris\] cadence_minutes = 7 must divide 60"):
        get_settings(env_for(home, cities))


@pytest.mark.parametrize("deployment", ["staging", "prod"])
def test_staging_and_prod_need_an_s3_root(home: Path, deployment: str) -> None:
    settings = get_settings(
        env_for(home, BIKESHARE_DEPLOYMENT=deployment, BIKESHARE_SOURCE="replay")
    )
    assert settings.deployment is Deployment(deployment)

    with pytest.raises(ValueError, match=r"set BIKESHARE_STORAGE_ROOT=s3://<bucket>/<prefix>"):
        build_definitions(settings)


def test_staging_with_an_s3_root_builds_an_s3_lake(home: Path) -> None:
    settings = get_settings(
        env_for(
            home,
            BIKESHARE_DEPLOYMENT="staging",
            BIKESHARE_SOURCE="replay",
            BIKESHARE_STORAGE_ROOT="s3://bucket/prefix",
            BIKESHARE_S3_ENDPOINT_URL="http://127.0.0.1:9",
            MLFLOW_TRACKING_URI="http://127.0.0.1:9/mlflow",
        )
    )
    lake = build_resources(settings)["lake"]
    assert isinstance(lake, LakeStorage) and lake.is_s3
    assert (lake.root, lake.s3_endpoint_url) == ("s3://bucket/prefix", "http://127.0.0.1:9")
    assert settings.quarantine_root == "s3://bucket/prefix/quarantine"
    assert graph(build_definitions(settings))[0] == EXPECTED_ASSET_KEYS
    # Outside local the endpoint is SageMaker; its image and role are checked when deploying.
    assert build_resources(settings)["endpoint"].kind == "sagemaker"


def test_staging_needs_a_shared_mlflow(home: Path) -> None:
    settings = get_settings(
        env_for(
            home,
            BIKESHARE_DEPLOYMENT="staging",
            BIKESHARE_SOURCE="replay",
            BIKESHARE_STORAGE_ROOT="s3://bucket/prefix",
        )
    )
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        build_resources(settings)


def test_local_defaults(home: Path) -> None:
    settings = get_settings(env_for(home))
    assert settings.deployment is Deployment.LOCAL
    assert settings.source == "replay"
    assert settings.storage_root == str(home / "lake")
    assert settings.dagster_home == home / "dagster_home"
    assert (settings.http_timeout_s, settings.http_retries) == (10.0, 3)
    assert list(settings.cities) == ["paris"]


def test_snapshot_of_the_drift_report(home: Path) -> None:
    """drift_report: hourly, in the monitoring group, after features and predictions, with
    its two per-partition checks (issue 8)."""
    defs = build_definitions(get_settings(env_for(home)))
    assert layer_graph(defs, ("drift_report",)) == (
        ["paris/drift_report"],
        ["paris/drift_report:feature_drift", "paris/drift_report:prediction_drift"],
    )
    repo = defs.get_repository_def()
    node = repo.asset_graph.get(dg.AssetKey(["paris", "drift_report"]))
    weather = repo.asset_graph.get(dg.AssetKey(["paris", "raw_weather"]))
    assert node.partitions_def == weather.partitions_def  # the hours
    assert node.group_name == "paris_monitoring"
    assert node.parent_keys == {
        dg.AssetKey(["paris", "station_features"]),
        dg.AssetKey(["paris", "stockout_predictions"]),
    }
    for spec in defs.resolve_assets_def(node.key).check_specs:
        assert spec.partitions_def == node.partitions_def and not spec.blocking
    assert "drift_policy" in (defs.resources or {})


def test_live_runs_execute_in_one_process_a_replay_keeps_dagsters_default(home, tmp_path):
    """A live window's run is one to three small steps: a process per step would cost more
    than the steps (definitions._executor)."""
    cities = write_cities(tmp_path / "live.toml", gbfs_url="http://127.0.0.1:9/gbfs.json")
    live = build_definitions(settings_for(home, cities, BIKESHARE_SOURCE="live"))
    assert live.executor is dg.in_process_executor
    assert build_definitions(settings_for(home)).executor is None
