"""The local endpoint for real: `mlflow models serve` processes started by the project's
LocalDeployer (through the ModelEndpoint resource built from Settings), called over
127.0.0.1, swapped blue/green, refusing broken models, and killed.

One module-scoped deployment keeps the suite fast (a scoring process takes ~5-15 s to
start); each test first makes sure something is serving (`ensure_serving`), and the test
that kills the endpoint comes last. Teardown stops every process and fails if any scoring
process of this module is left.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import polars as pl
import pytest
import requests

from bikeshare_assets.definitions import build_endpoint
from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.partitions import materialize_range
from bikeshare_assets.registry.registry import registered_model_name
from bikeshare_assets.serving.bundle import ServingBundle
from bikeshare_assets.serving.client import EndpointError, HttpTransport, score
from bikeshare_assets.serving.deploy import (
    DeploymentRefused,
    LocalDeployer,
    LocalEndpointState,
    stop_process,
)
from bikeshare_assets.serving.predict import predict_snapshot
from bikeshare_assets.serving.resources import ModelEndpoint
from bikeshare_assets.settings import Settings
from bikeshare_assets.storage import LakeStorage, partition_key_path
from bikeshare_assets_tests.conftest import (
    build_defs,
    materializations,
    pkey,
    settings_for,
    write_cities,
)
from bikeshare_assets_tests.serving.champions import (
    SIM_CITY,
    THRESHOLD,
    Champions,
    simulate_table,
)
from bikeshare_assets_tests.serving.expect import assert_fallback, assert_fallback_rows
from bikeshare_assets_tests.serving.servers import (
    free_ports,
    kill_group,
    processes_mentioning,
    wait_group_gone,
)
from bikeshare_assets_tests.support.processes import port_open

CITY = SIM_CITY
DAY = "2025-09-08"


@dataclass
class Serving:
    champions: Champions
    settings: Settings
    defs: dg.Definitions
    endpoint: ModelEndpoint
    lake: LakeStorage
    keys: list[str]  # station_features partitions in the lake (the last four snapshots)
    seen_pids: set[int] = field(default_factory=set)

    @property
    def deployer(self) -> LocalDeployer:
        return self.endpoint.local(CITY)

    @property
    def state_dir(self) -> Path:
        return self.deployer.state_dir

    def features(self, key: str) -> pl.DataFrame:
        return self.lake.read_parquet(
            partition_key_path(dg.AssetKey([CITY, "station_features"]), key)
        )

    def live(self) -> LocalEndpointState | None:
        state = self.deployer.live()
        if state is not None:
            self.seen_pids.add(state.pid)
        return state

    def deploy(self, bundle: ServingBundle, sample: pl.DataFrame | None = None) -> dict:
        self.champions.activate()
        try:
            return self.endpoint.deploy(
                CITY,
                bundle.model_uri,
                bundle.label,
                self.champions.snapshot if sample is None else sample,
            )
        finally:
            self.live()

    def ensure_serving(self, bundle: ServingBundle) -> LocalEndpointState:
        state = self.live()
        if state is None or state.model_version != bundle.label:
            self.deploy(bundle)
            state = self.live()
        assert state is not None and state.model_version == bundle.label
        return state

    def ensure_live(self) -> LocalEndpointState:
        return self.live() or self.ensure_serving(self.champions.bundles[0])

    def live_bundle(self) -> ServingBundle:
        state = self.live()
        assert state is not None
        return self.champions.bundle(state.model_version)


@pytest.fixture(scope="module")
def serving(champions: Champions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    home = tmp_path_factory.mktemp("serving-home")
    ports = free_ports(2)
    cities = write_cities(home / "cities.toml", key=CITY, simulate=simulate_table())
    settings = settings_for(
        home,
        cities,
        BIKESHARE_SOURCE="simulate",
        BIKESHARE_ENDPOINT_PORTS=f"{ports[0]},{ports[1]}",
        BIKESHARE_ENDPOINT_TIMEOUT_S="10",  # generous: the machine may be busy
        MLFLOW_TRACKING_URI=champions.tracking.tracking_uri,
        BIKESHARE_MLFLOW_ARTIFACTS=str(champions.tracking.artifact_root),
    )
    defs = build_defs(settings)
    endpoint = build_endpoint(settings)  # the same resource the Definitions hold
    assert endpoint.kind == "local" and endpoint.ports == ports
    lake = LakeStorage(root=settings.storage_root)
    times = sorted(champions.features.get_column("snapshot_at").unique().to_list())[-4:]
    keys = []
    for at in times:
        keys.append(pkey(at))
        lake.write_parquet(
            partition_key_path(dg.AssetKey([CITY, "station_features"]), keys[-1]),
            champions.features.filter(pl.col("snapshot_at") == at),
        )
    env = Serving(champions, settings, defs, endpoint, lake, keys)
    try:
        env.deploy(champions.bundles[0])
        yield env
    finally:
        env.deployer.stop()
        for pid in env.seen_pids:
            stop_process(pid, grace_s=5)
        # every scoring process group this module saw, any `mlflow models serve` of its
        # state dir (e.g. a refused one), and anything still holding its ports
        leftovers = {pid for pid in env.seen_pids if not wait_group_gone(pid, timeout_s=10)}
        leftovers |= set(processes_mentioning(str(env.state_dir)))
        busy = [port for port in ports if port_open(port)]
        for pid in leftovers:
            kill_group(pid)
        assert not leftovers and not busy, (
            f"scoring processes left running: {leftovers}; ports still answering: {busy}"
        )


def reference_predictions(
    champions: Champions, bundle: ServingBundle, features: pl.DataFrame
) -> pl.DataFrame:
    """The same registered model loaded in this process."""
    champions.activate()
    model = mlflow.pyfunc.load_model(bundle.model_uri)
    x = features.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
    answer = model.predict(x)  # columnar: one list per output, model_version once
    return pl.DataFrame({k: v for k, v in answer.items() if k != "model_version"}).with_columns(
        model_version=pl.lit(answer["model_version"])
    )


# --------------------------------------------------------------------------------------


def test_endpoint_answers_ping_batch_and_single_station(serving: Serving) -> None:
    state = serving.ensure_live()
    bundle = serving.live_bundle()
    snapshot = serving.champions.snapshot
    assert state.port in serving.endpoint.ports
    assert requests.get(f"{state.url}/ping", timeout=5).status_code == 200

    transport = serving.endpoint.transport(CITY)
    assert isinstance(transport, HttpTransport) and transport.url == state.url

    batch = score(transport, snapshot, timeout_s=10)
    assert batch.frame.height == snapshot.height > 250
    assert batch.frame.get_column("model_version").unique().to_list() == [bundle.label]
    expected = reference_predictions(serving.champions, bundle, snapshot)
    for target in TARGETS:
        p = batch.frame.get_column(f"p_{target}").to_numpy()
        assert ((p >= 0) & (p <= 1)).all()
        np.testing.assert_allclose(p, expected.get_column(f"p_{target}").to_numpy(), rtol=1e-9)
        assert (
            batch.frame.get_column(f"flag_{target}").to_list()
            == expected.get_column(f"flag_{target}").cast(pl.Boolean).to_list()
        )

    # one station (the JSON body): the same answer as its row of the batch
    station = snapshot.get_column("station_id")[123]
    single = score(transport, snapshot.filter(pl.col("station_id") == station), timeout_s=10)
    assert single.frame.height == 1
    assert single.frame.get_column("model_version")[0] == bundle.label
    row = batch.frame.row(123, named=True)
    for target in TARGETS:
        assert single.frame.get_column(f"p_{target}")[0] == pytest.approx(row[f"p_{target}"])

    # any client of the SageMaker container contract gets the version too
    one = snapshot.head(1).select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS)
    response = requests.post(
        f"{state.url}/invocations",
        json={"dataframe_split": {"columns": FEATURE_COLUMNS, "data": one.rows()}},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["predictions"]["model_version"] == bundle.label


def test_predictions_asset_scores_every_station_with_the_model(
    serving: Serving, instance: dg.DagsterInstance
) -> None:
    serving.ensure_live()
    bundle = serving.live_bundle()
    label = bundle.label
    keys = serving.keys[-3:]
    # The champions say what they were fit on: bikes up to the middle snapshot, docks up to
    # the first. A snapshot at or before the newer of the two was seen in training.
    client = serving.champions.tracking.client()
    ends = {"stockout_bikes": keys[1], "stockout_docks": keys[0]}
    for target, key in ends.items():
        at = datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
        client.set_model_version_tag(
            registered_model_name(CITY, target),
            bundle.champions[target],
            "training_data_end",
            str(at),
        )
    try:
        result = materialize_range(
            serving.defs, instance, f"{CITY}/stockout_predictions", keys[0], keys[-1]
        )
    finally:
        for target in ends:
            client.delete_model_version_tag(
                registered_model_name(CITY, target), bundle.champions[target], "training_data_end"
            )
    assert result.success
    meta = materializations(result)
    for key, seen in zip(keys, (True, True, False), strict=True):
        frame = serving.lake.read_parquet(
            partition_key_path(dg.AssetKey([CITY, "stockout_predictions"]), key)
        )
        assert frame.get_column("seen_in_training").to_list() == [seen] * frame.height
        assert meta[key]["seen_in_training"] == str(seen).lower()
    for key in keys:
        frame = serving.lake.read_parquet(
            partition_key_path(dg.AssetKey([CITY, "stockout_predictions"]), key)
        )
        features = serving.features(key)
        assert frame.height == features.height > 250
        assert (
            frame.get_column("station_id").to_list() == features.get_column("station_id").to_list()
        )
        assert frame.get_column("source").unique().to_list() == ["model"]
        assert frame.get_column("model_version").unique().to_list() == [label]
        assert frame.get_column("latency_ms").null_count() == 0
        assert meta[key]["source"] == "model" and meta[key]["batch_success"] == 1.0
        assert meta[key]["model_version"] == label and meta[key]["error"] == ""
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert sorted(c.partition for c in checks) == keys
    assert all(c.passed for c in checks)


def test_blue_green_swap_when_model_endpoint_deploys_a_new_champion(
    serving: Serving, instance: dg.DagsterInstance
) -> None:
    """bundles[1] holds the newly promoted stockout_bikes v2: materializing model_endpoint
    builds (re-uses) its bundle and swaps to it on the idle port."""
    first, second = serving.champions.bundles
    old = serving.ensure_serving(first)
    before = score(HttpTransport(old.url), serving.champions.snapshot, timeout_s=10).frame

    result = materialize_range(serving.defs, instance, f"{CITY}/model_endpoint", DAY)
    assert result.success
    new = serving.live()
    assert new is not None
    assert new.model_version == second.label
    assert new.port != old.port and set(serving.endpoint.ports) == {old.port, new.port}
    assert new.color != old.color and new.pid != old.pid
    assert json.loads(serving.deployer.state_file.read_text())["url"] == new.url
    md = materializations(result)[DAY]
    assert md["address"] == new.url and md["model_version"] == second.label
    row = serving.lake.read_parquet(
        partition_key_path(dg.AssetKey([CITY, "model_endpoint"]), DAY)
    ).row(0, named=True)
    assert row["model_version"] == second.label and row["serving_model_uri"] == second.model_uri
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [c.check_name for c in checks] == ["endpoint_answers"] and checks[0].passed

    # the old process (and its uvicorn worker) is gone; its port no longer answers
    assert wait_group_gone(old.pid)
    assert not port_open(old.port)
    with pytest.raises(EndpointError) as caught:
        score(HttpTransport(old.url), serving.champions.snapshot, timeout_s=5)
    assert caught.value.kind == "unavailable"

    # the new process answers with the new version: new bikes model, same docks model
    after = score(serving.endpoint.transport(CITY), serving.champions.snapshot, 10).frame  # type: ignore[arg-type]
    assert after.get_column("model_version").unique().to_list() == [second.label]
    assert not np.allclose(after["p_stockout_bikes"].to_numpy(), before["p_stockout_bikes"])
    np.testing.assert_allclose(after["p_stockout_docks"].to_numpy(), before["p_stockout_docks"])


def _broken_model_dir(bundle: ServingBundle, tmp_path: Path, kind: str) -> Path:
    local = Path(mlflow.artifacts.download_artifacts(bundle.model_uri, dst_path=str(tmp_path)))
    model_dir = next(local.rglob("MLmodel")).parent
    if kind == "corrupt booster":
        (model_dir / "artifacts" / "stockout_bikes.txt").write_text("not a LightGBM model\n")
    else:  # the model expects a feature the features asset does not produce
        meta_path = model_dir / "artifacts" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["features"] = [*meta["features"], "dock_sensor_temperature"]
        meta_path.write_text(json.dumps(meta))
    return model_dir


@pytest.mark.parametrize("kind", ["corrupt booster", "predict raises"])
def test_broken_model_is_refused_and_the_live_version_keeps_serving(
    serving: Serving, tmp_path: Path, kind: str
) -> None:
    before = serving.ensure_live()
    idle_port = next(p for p in serving.endpoint.ports if p != before.port)
    serving.champions.activate()
    model_dir = _broken_model_dir(serving.champions.bundles[1], tmp_path, kind)
    label = f"broken-{kind.replace(' ', '-')}"

    with pytest.raises(DeploymentRefused) as caught:
        serving.deploy(
            ServingBundle("broken", "1", str(model_dir), label, {}, {}),
        )
    message = str(caught.value)
    assert label in message and "keeps serving" in message
    assert before.model_version in message and before.url in message
    if kind == "corrupt booster":
        assert "exited with code" in message
        log = Path(message.rsplit("Scoring server log: ", 1)[1])
        assert "Unknown model format" in log.read_text()
    else:
        assert "sample /invocations failed" in message and "HTTP 400" in message

    # nothing moved: same process, same port, same version, still answering
    after = serving.live()
    assert after is not None
    assert (after.pid, after.port, after.model_version) == (
        before.pid,
        before.port,
        before.model_version,
    )
    answer = score(serving.endpoint.transport(CITY), serving.champions.snapshot, 10)  # type: ignore[arg-type]
    assert answer.frame.get_column("model_version").unique().to_list() == [before.model_version]
    # and the refused process is gone
    assert not port_open(idle_port)
    assert processes_mentioning(str(serving.state_dir / "models" / label)) == []


def test_endpoint_killed_mid_run_falls_back_flagged(
    serving: Serving, instance: dg.DagsterInstance
) -> None:
    """Keep last: it kills the module's endpoint."""
    state = serving.ensure_live()
    transport = serving.endpoint.transport(CITY)
    assert transport is not None
    first, second = (serving.features(k) for k in serving.keys[-2:])

    ok = predict_snapshot(first, transport, timeout_s=10, threshold=THRESHOLD)
    assert ok.source == "model" and ok.error is None

    os.killpg(state.pid, signal.SIGKILL)  # the scoring process dies between two snapshots
    stop_process(state.pid)  # reap it (it is this process's child)
    assert wait_group_gone(state.pid)

    fallen = predict_snapshot(second, transport, timeout_s=10, threshold=THRESHOLD)
    assert_fallback(second, fallen, "unavailable:")
    assert state.url in fallen.error  # type: ignore[operator]

    # the next run finds no live endpoint: every snapshot falls back, flagged, run succeeds
    assert serving.endpoint.transport(CITY) is None
    keys = serving.keys[-3:]
    result = materialize_range(
        serving.defs, instance, f"{CITY}/stockout_predictions", keys[0], keys[-1]
    )
    assert result.success
    meta = materializations(result)
    for key in keys:
        frame = serving.lake.read_parquet(
            partition_key_path(dg.AssetKey([CITY, "stockout_predictions"]), key)
        )
        assert_fallback_rows(serving.features(key), frame, THRESHOLD)
        assert frame.get_column("latency_ms").null_count() == frame.height
        assert meta[key]["source"] == "fallback"
        assert meta[key]["fallback_rate"] == 1.0 and meta[key]["batch_success"] == 0.0
        assert "no live endpoint" in meta[key]["error"]
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert sorted(c.partition for c in checks) == keys
    assert not any(c.passed for c in checks)
    assert all(c.severity == dg.AssetCheckSeverity.WARN for c in checks)
    output = next(
        e.event_specific_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    )
    assert output["batch_success_rate"].value == 0.0
