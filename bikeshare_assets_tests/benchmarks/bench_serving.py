"""Serving benchmark: loopback latency of the real local endpoint, as predictions call it."""

from __future__ import annotations

import atexit
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from bikeshare_assets.cities import DEFAULT_CITIES_FILE, PARTITION_FMT, load_cities
from bikeshare_assets.features.compute import FeatureContext, build_station_features
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.ingest.replay import ReplaySource
from bikeshare_assets.ingest.weather import RecordedWeatherSource
from bikeshare_assets.serving.bundle import ServingBundle, build_serving_bundle
from bikeshare_assets.serving.client import PARQUET_FROM_ROWS, HttpTransport, score
from bikeshare_assets.serving.deploy import LocalDeployer
from bikeshare_assets.training.tracking import MlflowTracking
from bikeshare_assets_tests.benchmarks import (
    REPO_ROOT,
    BenchContext,
    CaseResult,
    Run,
    benchmark,
    case,
)

CITY = "paris"
REQUESTS = 300  # per recorded run
TIMEOUT_S = 10.0
TARGET_P95_MS = {"single": 10.0, "city": 50.0}
# The snapshot the brief names; the lake's largest snapshot is used when it holds more stations.
NAMED_SNAPSHOT = "2025-09-16-11:15"
CASE_SINGLE = "single station (JSON body)"
CASE_CITY = "full city (parquet body)"


def _demo_home() -> Path:
    return Path(os.environ.get("BIKESHARE_HOME") or REPO_ROOT / ".bikeshare").resolve()


def _demo_tracking() -> MlflowTracking | None:
    db = _demo_home() / "mlflow" / "mlflow.db"
    return MlflowTracking(tracking_uri=f"sqlite:///{db}") if db.exists() else None


def _lake_snapshot() -> tuple[pl.DataFrame, str] | None:
    """The demo lake's largest station_features snapshot (a full city), if there is a lake."""
    folder = _demo_home() / "lake" / "station_features" / f"city={CITY}"
    files = sorted(folder.glob("dt=*/part.parquet"))
    if not files:
        return None
    sizes = {f: pl.scan_parquet(f).select(pl.len()).collect().item() for f in files}
    named = folder / f"dt={NAMED_SNAPSHOT}" / "part.parquet"
    best = max(sizes, key=lambda f: (sizes[f], f == named))
    return pl.read_parquet(best), f"demo lake {best.parent.name}"


def _recording_snapshot() -> tuple[pl.DataFrame, str]:
    """The recording's fullest snapshot, through the replay path and the feature function."""
    from bikeshare_assets_tests.support.frames import replayed_information, replayed_status

    city = load_cities(DEFAULT_CITIES_FILE)[CITY]
    assert city.replay is not None
    source = ReplaySource(city.replay.status_path)
    counts = source.recording.group_by("tbin_utc").len().sort("len", "tbin_utc")
    at: datetime = counts.get_column("tbin_utc")[-1]
    cadence = timedelta(minutes=city.replay.cadence_minutes)
    history = replayed_status(source, at - timedelta(hours=1), at + cadence, cadence)
    information = replayed_information(source, at.replace(hour=0, minute=0))
    weather = (
        RecordedWeatherSource(city.replay.weather_path).hourly(
            at - timedelta(hours=3), at + cadence
        )
        if city.replay.weather_path
        else pl.DataFrame()
    )
    features = build_station_features(
        history,
        information,
        weather,
        [at],
        FeatureContext(city.timezone, city.country, city.replay.cadence_minutes),
    )
    return features, f"recording {at.strftime(PARTITION_FMT)} (built by build_station_features)"


def _champions_into(tracking: MlflowTracking, tmp: Path, example: pl.DataFrame) -> str:
    """Copy the demo's champions (read-only) into `tracking`, else train quick ones."""
    from bikeshare_assets_tests.serving.champions import (
        load_champion_boosters,
        log_and_promote,
        simulated_dataset,
        train_boosters,
    )

    demo = _demo_tracking()
    if demo is not None:
        try:
            boosters, thresholds, versions = load_champion_boosters(demo, CITY, tmp / "demo")
            origin = "demo champions " + ", ".join(f"{t} v{v}" for t, v in sorted(versions.items()))
        except LookupError:
            demo = None
    if demo is None:
        features, labels = simulated_dataset(stations=500, days=2)
        boosters = train_boosters(features, labels, rounds=200)
        thresholds = dict.fromkeys(TARGETS, 0.3)
        origin = "quick LightGBM (200 rounds) on a simulated city: no demo champions found"
    for target in TARGETS:
        log_and_promote(tracking, CITY, target, boosters[target], thresholds[target], example)
    return origin


def _summary(results: list[CaseResult]) -> list[str]:
    lines = []
    for r in results:
        key = "single" if r.case == CASE_SINGLE else "city"
        p95 = r.metrics.get("p95 (ms)")
        if p95 is None:
            continue
        verdict = "met" if p95 <= TARGET_P95_MS[key] else "**missed**"
        lines.append(
            f"- {r.case}: p95 {p95:.1f} ms end to end (`serving.client.score`) against a target of "
            f"{TARGET_P95_MS[key]:.0f} ms: {verdict}; {r.metrics.get('requests/s', 0):.0f} "
            f"requests/s from one sequential client."
        )
    return lines


@benchmark(
    "serving_latency",
    title="Serving: loopback latency of the local scoring endpoint",
    description=f"""
        A real local endpoint: `LocalDeployer.deploy` starts MLflow's pyfunc scoring server
        (`mlflow models serve`, one uvicorn worker, the program SageMaker runs) on a free
        127.0.0.1 port, serving the serving bundle that `build_serving_bundle` makes of the
        Paris champions (copied read-only from the demo's MLflow store when there is one, into
        a temporary store; quick LightGBM models otherwise). Requests go through
        `serving.client.score` over a keep-alive `HttpTransport`, exactly what
        `stockout_predictions` calls: a single station is a `dataframe_split` JSON body, a full
        city (the demo lake's largest `station_features` snapshot, or one built from the
        recording) is a parquet body (>= {PARQUET_FROM_ROWS} rows). Setup (store, bundle,
        process start) is not timed; one unrecorded warm-up run, then each recorded run is
        {REQUESTS} sequential requests. Phases: the HTTP round trip
        (`transport.post`, what the server and the loopback cost) and the client's own work
        (request body + response parsing). Latency percentiles are over every recorded
        request, end to end. Targets: single-station p95 <= {TARGET_P95_MS["single"]:.0f} ms,
        full-city p95 <= {TARGET_P95_MS["city"]:.0f} ms.
    """,
    cases=[case(CASE_SINGLE, rows=1), case(CASE_CITY, rows=0)],
    repeat=3,
    warmup=1,
    summarize=_summary,
)
def serving_latency(ctx: BenchContext, rows: int):
    from bikeshare_assets_tests.serving.servers import free_ports

    snapshot, tmp, bundle = _bundle(ctx)
    deployer = LocalDeployer(tmp / "serving", ports=tuple(free_ports(2)))  # type: ignore[arg-type]
    started = time.perf_counter()
    state, _ = deployer.deploy(bundle.model_uri, bundle.label, snapshot)
    atexit.register(deployer.stop)  # also when a measured call fails
    ctx.metric("endpoint start (s)", round(time.perf_counter() - started, 1))
    try:
        yield _latency_loop(ctx, HttpTransport(state.url), snapshot, rows, bundle.label)
    finally:
        deployer.stop()


def _bundle(ctx: BenchContext) -> tuple[pl.DataFrame, Path, ServingBundle]:
    """The full-city snapshot and a serving bundle of the Paris champions in a temporary
    MLflow store."""
    from bikeshare_assets_tests.serving.champions import tracking_in

    snapshot, origin = _lake_snapshot() or _recording_snapshot()
    ctx.metric("snapshot", origin)
    tmp = Path(tempfile.mkdtemp(dir=ctx.tmp_path))
    tracking = tracking_in(tmp / "mlflow")
    ctx.metric("models", _champions_into(tracking, tmp, snapshot))
    return snapshot, tmp, build_serving_bundle(tracking, CITY, snapshot)


def _requests(snapshot: pl.DataFrame, rows: int, n: int) -> list[pl.DataFrame]:
    if rows == 1:  # every station in turn
        return [snapshot.slice(i % snapshot.height, 1) for i in range(n)]
    return [snapshot] * n


def _latency_loop(ctx: BenchContext, transport, snapshot: pl.DataFrame, rows: int, label: str):
    requests = _requests(snapshot, rows, REQUESTS)
    ctx.metric("rows per request", requests[0].height)
    e2e_ms: list[float] = []
    rtt_ms: list[float] = []

    def once(run: Run) -> None:
        run_e2e: list[float] = []
        run_rtt: list[float] = []
        for frame in requests:
            t0 = time.perf_counter()
            scored = score(transport, frame, TIMEOUT_S)
            run_e2e.append((time.perf_counter() - t0) * 1000)
            run_rtt.append(scored.latency_ms)
            if scored.frame.height != frame.height:
                raise RuntimeError("the endpoint answered the wrong number of rows")
        run.add_phase("HTTP round trip (`transport.post`: server + loopback)", sum(run_rtt) / 1000)
        run.add_phase("client: request body + parse answer", (sum(run_e2e) - sum(run_rtt)) / 1000)
        if run.warmup:  # connection, the server's lazy imports, caches
            return
        e2e_ms.extend(run_e2e)
        rtt_ms.extend(run_rtt)
        with run.untimed():
            if scored.frame.get_column("model_version")[0] != label:
                raise RuntimeError("the endpoint answered with another model version")
            run.metric("requests", len(e2e_ms))
            for q in (50, 95, 99):
                run.metric(f"p{q} (ms)", round(float(np.percentile(e2e_ms, q)), 2))
            run.metric("round trip p95 (ms)", round(float(np.percentile(rtt_ms, 95)), 2))
            run.metric("requests/s", round(len(e2e_ms) / (sum(e2e_ms) / 1000), 1))
            run.metric("mean (ms)", round(statistics.fmean(e2e_ms), 2))

    return once


# --------------------------------------------------------------------------------------
# serving_breakdown: the same request without HTTP, piece by piece

P_BODY = "client: request body (`request_body`)"
P_PARSE = "server: parse the body (MLflow `parse_parquet_input` / `_parse_json_data`)"
P_PREDICT = "server: pyfunc predict (`StockoutModel.predict`, 2 LightGBM boosters)"
P_ANSWER = "server: JSON answer (MLflow `predictions_to_json`)"
P_PARSE_ANSWER = "client: parse the answer (`parse_response`)"


@benchmark(
    "serving_breakdown",
    title="Serving: where a scoring request's time goes (no HTTP)",
    description="""
        The work behind one `/invocations` request of `serving_latency`, piece by piece in
        one process, with the functions the scoring server itself runs: MLflow's body parser
        for the content type, the bundle loaded with `load_model_with_mlflow_config` (what
        `mlflow.pyfunc.scoring_server.app` loads) and its `predict`, MLflow's
        `predictions_to_json`, and the project's client side (`request_body`,
        `parse_response`). The bundle and snapshot are the ones `serving_latency` serves.
        `serving_latency`'s round trip minus the three server phases here is what HTTP,
        uvicorn/FastAPI, the thread hop and the loopback cost.
    """,
    cases=[case(CASE_SINGLE, rows=1), case(CASE_CITY, rows=0)],
    repeat=200,
    warmup=20,
)
def serving_breakdown(ctx: BenchContext, rows: int):
    import io

    import mlflow
    from mlflow.pyfunc import scoring_server as server

    from bikeshare_assets.serving.client import parse_response, request_body

    snapshot, tmp, bundle = _bundle(ctx)
    local = Path(mlflow.artifacts.download_artifacts(bundle.model_uri, dst_path=str(tmp / "m")))
    model = server.load_model_with_mlflow_config(str(next(local.rglob("MLmodel")).parent))
    schema = model.metadata.get_input_schema()
    ctx.metric("input schema enforced", schema is not None)
    requests = _requests(snapshot, rows, ctx.iterations)
    ctx.metric("rows per request", requests[0].height)

    def once(run: Run) -> None:
        frame = requests[run.index]
        with run.phase(P_BODY):
            content_type, body = request_body(frame)
        with run.phase(P_PARSE):
            if content_type.endswith("parquet"):
                data = server.parse_parquet_input(io.BytesIO(body))
            else:
                data = server._parse_json_data(body, model.metadata, schema).data
        with run.phase(P_PREDICT):
            raw = model.predict(data)
        with run.phase(P_ANSWER):
            out = io.StringIO()
            server.predictions_to_json(raw, out)
            answer = out.getvalue().encode()
        with run.phase(P_PARSE_ANSWER):
            parsed = parse_response(answer, frame.height)
        with run.untimed():
            run.metric("request body (KiB)", round(len(body) / 1024, 1))
            run.metric("answer (KiB)", round(len(answer) / 1024, 1))
            if parsed.height != frame.height:
                raise RuntimeError("wrong number of rows")

    return once
