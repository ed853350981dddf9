"""`bikeshare` command line: the README's main job (`bikeshare demo`) and operator helpers."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from bikeshare_assets.errors import UserError
from bikeshare_assets.live_stack import (
    first_live_window,
    start_dagster_dev,
    stop_endpoints,
    stop_group,
    write_live_cities,
)
from bikeshare_assets.redaction import redact_url
from bikeshare_assets.settings import (
    ENVIRONMENT_VARIABLES,
    SECRET_ENVIRONMENT_VARIABLES,
    Settings,
    debug_enabled,
    environment_value,
    get_settings,
    quiet_mlflow_for_terminal,
    use_dagster_home,
)

LAYERS = ("raw", "features", "model", "serving")
# Optuna trials in the demo's training run (TrainingConfig's default is larger): keeps the
# whole demo within a few minutes on a laptop.
DEMO_TRIALS = 8


@dataclass
class Stage:
    """One Dagster run: some assets over one partition range."""

    label: str
    layer: str  # one of LAYERS: `bikeshare demo --until <layer>` stops after it
    selection: list[str]
    partitions: object  # TimeWindowPartitionsDefinition
    first: str | None = None
    last: str | None = None
    result: dict = field(default_factory=dict)
    run_config: dict | None = None


def _prepare_instance(settings: Settings):
    import dagster as dg

    from bikeshare_assets.runs import write_instance_yaml

    write_instance_yaml(settings.dagster_home)
    use_dagster_home(settings.dagster_home)
    return dg.DagsterInstance.get()


def _pipeline_stages(settings: Settings) -> list[Stage]:
    """raw → features + labels (one single run over the period) → model → registry (last day)."""
    from bikeshare_assets.partitions import city_partitions

    stages: list[Stage] = []
    for city in settings.cities.values():
        parts = city_partitions(city, settings.source)
        last_day = parts.days.get_last_partition_key()
        stages += [
            Stage(
                f"{city.key}: station list (daily)",
                "raw",
                [f"{city.key}/raw_station_information"],
                parts.days,
            ),
        ]
        if parts.has_weather:
            stages.append(
                Stage(
                    f"{city.key}: weather (hourly)", "raw", [f"{city.key}/raw_weather"], parts.hours
                )
            )
        stages += [
            Stage(
                f"{city.key}: station status ({parts.cadence_minutes} min)",
                "raw",
                [f"{city.key}/raw_station_status"],
                parts.snapshots,
            ),
            Stage(
                f"{city.key}: features + labels",
                "features",
                [f"{city.key}/station_features", f"{city.key}/stockout_labels"],
                parts.snapshots,
            ),
            Stage(
                f"{city.key}: train (day {last_day})",
                "model",
                [f"{city.key}/stockout_model"],
                parts.days,
                last_day,
                last_day,
                run_config={
                    "ops": {f"{city.key}__stockout_model": {"config": {"n_trials": DEMO_TRIALS}}}
                },
            ),
            Stage(
                f"{city.key}: register + gate",
                "model",
                [f"{city.key}/registered_model_version"],
                parts.days,
                last_day,
                last_day,
            ),
            Stage(
                f"{city.key}: deploy endpoint",
                "serving",
                [f"{city.key}/model_endpoint"],
                parts.days,
                last_day,
                last_day,
            ),
            Stage(
                f"{city.key}: predictions + outcomes (last 24 h)",
                "serving",
                [f"{city.key}/stockout_predictions", f"{city.key}/prediction_outcomes"],
                parts.snapshots,
                _last_day_first_key(parts),
            ),
            Stage(
                f"{city.key}: model quality (24 h)",
                "serving",
                [f"{city.key}/model_quality"],
                parts.days,
                last_day,
                last_day,
            ),
        ]
    return stages


def _last_day_first_key(parts) -> str:
    """First snapshot partition of the period's last 24 hours."""
    from datetime import timedelta

    import dagster as dg

    last = parts.snapshots.get_last_partition_key()
    end = parts.snapshots.time_window_for_partition_key(last).end
    return parts.snapshots.get_partition_keys_in_time_window(
        dg.TimeWindow(end - timedelta(hours=24), end)
    )[0]


def _run_stage(defs, instance, stage: Stage, launched_by: str = "bikeshare demo") -> bool:
    from bikeshare_assets.partitions import materialize_range

    pdef = stage.partitions
    first = stage.first or pdef.get_first_partition_key()  # type: ignore[attr-defined]
    last = stage.last or pdef.get_last_partition_key()  # type: ignore[attr-defined]
    started = time.perf_counter()
    result = materialize_range(
        defs,
        instance,
        stage.selection,
        first,
        last,
        launched_by=launched_by,
        quiet=True,
        run_config=stage.run_config,
    )
    materialized: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        entry = materialized.setdefault(
            mat.asset_key.to_user_string(), {"partitions": 0, "rows": 0, "gaps": 0}
        )
        entry["partitions"] += 1
        entry["rows"] += int(md.get("rows") or 0)
        entry["gaps"] += int(bool(md.get("gap")))
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    stage.result = {
        "success": result.success,
        "seconds": time.perf_counter() - started,
        "assets": materialized,
        "checks_failed": _count_failed(checks),
        "checks": len(checks),
        "range": f"{first} .. {last}",
        "run_id": result.run_id,
    }
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data:
                stage.result["error"] = _failure_text(event.step_failure_data)
    return result.success


def _failure_text(failure) -> str:
    """The user-facing cause of a step failure, not Dagster's wrapper around it."""
    if failure.user_failure_data and failure.user_failure_data.description:
        return failure.user_failure_data.description
    error = failure.error
    while (
        error is not None
        and error.cause is not None
        # Dagster's wrappers: ...StepExecutionError, ...LoadInputError, ...HandleOutputError
        and error.cls_name.startswith("DagsterExecution")
    ):
        error = error.cause
    return error.message.strip() if error is not None else "unknown error"


def _count_failed(evaluations) -> dict[str, int]:
    failed: dict[str, int] = {}
    for e in evaluations:
        if not e.passed:
            failed[e.check_name] = failed.get(e.check_name, 0) + 1
    return failed


def _lake(settings: Settings):
    from bikeshare_assets.storage import LakeStorage

    return LakeStorage(root=settings.storage_root, s3_endpoint_url=settings.s3_endpoint_url)


def _quarantined(settings: Settings):
    from bikeshare_assets.ingest.quarantine import count_quarantined, list_quarantined

    return count_quarantined(list_quarantined(_lake(settings)))  # type: ignore[arg-type]


def _print_summary(settings: Settings, stages: list[Stage], seconds: float) -> None:
    print()
    print(f"bikeshare demo — source={settings.source}, deployment={settings.deployment}")
    print(f"{'asset':42} {'partitions':>10} {'with data':>10} {'gaps':>6} {'rows':>10} {'time':>8}")
    for stage in stages:
        for asset, info in stage.result.get("assets", {}).items():
            print(
                f"{asset:42} {info['partitions']:>10} {info['partitions'] - info['gaps']:>10} "
                f"{info['gaps']:>6} {info['rows']:>10} {stage.result['seconds']:>7.1f}s"
            )
        if stage.result.get("gate_refused"):
            print(f"{stage.label:42} gate refused a promotion (see scorecard)")
        elif stage.result and not stage.result["success"]:
            print(f"{stage.label:42} FAILED after {stage.result['seconds']:.1f}s")
    checks = sum(s.result.get("checks", 0) for s in stages)
    failed: dict[str, int] = {}
    for s in stages:
        for name, n in s.result.get("checks_failed", {}).items():
            failed[name] = failed.get(name, 0) + n
    detail = ", ".join(f"{name} {n}" for name, n in sorted(failed.items())) or "none"
    print(f"asset checks: {checks} evaluated; failed: {detail}")
    counts = _quarantined(settings)
    print(f"{counts.summary()} in quarantine ({redact_url(str(settings.quarantine_root))})")
    _print_scorecard(settings, stages)
    _print_serving(settings, stages)
    print(f"total time: {seconds:.1f}s")
    print(f"data lake: {redact_url(str(settings.storage_root))}")
    print(f"MLflow tracking: {redact_url(settings.mlflow_tracking_uri)}")
    print(
        f"Dagster UI on the same instance: DAGSTER_HOME={settings.dagster_home} "
        ".venv/bin/dagster dev   (or: make ui)"
    )


def _print_scorecard(settings: Settings, stages: list[Stage]) -> None:
    """Per target: model vs persistence, the gate's verdict, the registered version."""
    import json

    import dagster as dg

    from bikeshare_assets.storage import partition_key_path

    lake = _lake(settings)
    for stage in stages:
        # Printed also when the gate refused a model: the asset is stored either way.
        if not stage.selection[0].endswith("registered_model_version") or not stage.result:
            continue
        city = stage.selection[0].split("/")[0]
        day = stage.first
        model = lake.read_parquet(partition_key_path(dg.AssetKey([city, "stockout_model"]), day))  # type: ignore[arg-type]
        registry = lake.read_parquet(
            partition_key_path(dg.AssetKey([city, "registered_model_version"]), day)
        )  # type: ignore[arg-type]
        joined = model.join(registry.drop("test_pr_auc", "day"), on="target")
        window = joined.row(0, named=True)
        print(
            f"\nScorecard — {city}, model of {day}: chosen on validation, refit on train + "
            f"validation (data up to {window.get('training_data_end') or '?'}), tested on "
            f"{window.get('test_start') or '?'} → {window.get('test_end') or '?'}"
        )
        print(
            f"{'target':16} {'PR-AUC':>14} {'PR-AUC new':>14} {'P@20 new':>14} {'F1':>14} "
            f"{'Brier':>16}  gate  registered"
        )
        print(
            f"{'':16} {'model / pers.':>14} {'model / low.':>14} {'model / low.':>14} "
            f"{'model / pers.':>14} {'model / cal.p.':>16}"
        )
        for r in joined.sort("target").iter_rows(named=True):
            gate = json.loads(r["gate"])
            verdict = "PASS" if all(x["passed"] for x in gate["rules"]) else "FAIL"
            print(
                f"{r['target']:16} {_pair(r, 'test_pr_auc', 'baseline_test_pr_auc'):>14} "
                f"{_pair(r, 'test_pr_auc_new', 'baseline_test_pr_auc_new'):>14} "
                f"{_pair(r, 'test_precision_at_20_new', 'baseline_test_precision_at_20_new'):>14} "
                f"{_pair(r, 'test_f1', 'baseline_test_f1'):>14} "
                f"{_pair(r, 'test_brier', 'baseline_calibrated_test_brier', 4):>16}  {verdict:4}  "
                f"{r['registered_model']} v{r['version']} "
                f"({'champion' if r['champion_version'] == r['version'] else 'challenger'})"
            )
        print(
            "pers. = persistence (lowest current count first; flags at count ≤ threshold); "
            "low. = the same among stations not stocked out at t (new stockouts); cal.p. = "
            "persistence as P(stockout | current count) fitted on the fit rows. P@20 = precision "
            "of the top 20 per snapshot."
        )
        print(
            "MLflow UI: .venv/bin/mlflow ui --backend-store-uri "
            f"{redact_url(settings.mlflow_tracking_uri)}"
            "   (then open http://127.0.0.1:5000)"
        )


def _pair(row: dict, model: str, baseline: str, digits: int = 3) -> str:
    def fmt(value) -> str:
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    return f"{fmt(row.get(model))} / {fmt(row.get(baseline))}"


def _print_serving(settings: Settings, stages: list[Stage]) -> None:
    """Endpoint latency, batch success, the newest risk list and 24-hour quality."""
    import dagster as dg
    import polars as pl

    from bikeshare_assets.features.store import read_partitions
    from bikeshare_assets.storage import partition_key_path

    lake = _lake(settings)
    for stage in stages:
        if not stage.selection[0].endswith("stockout_predictions") or not stage.result.get(
            "success"
        ):
            continue
        city = stage.selection[0].split("/")[0]
        keys = stage.partitions.get_partition_keys()  # type: ignore[attr-defined]
        keys = keys[keys.index(stage.first) :]
        predictions, _ = read_partitions(
            lake, dg.AssetKey([city, "stockout_predictions"]), keys, missing_ok=True
        )
        if predictions.height == 0:
            continue
        batches = predictions.group_by("snapshot_at").agg(
            pl.col("latency_ms").first(), (pl.col("source") == "model").all().alias("ok")
        )
        latency = batches.get_column("latency_ms").drop_nulls()
        print(f"\nServing — {city}, last 24 h ({batches.height} snapshots)")
        if latency.len():
            print(
                f"endpoint latency per full-city batch: p50 {latency.quantile(0.5):.1f} ms, "
                f"p95 {latency.quantile(0.95):.1f} ms"
            )
        print(
            f"batch success rate: {batches.get_column('ok').mean():.1%} (fallback rows are flagged source=fallback)"
        )
        _print_at_risk(settings, city, keys)
        quality_day = (
            stages[-1].first if stages[-1].selection[0].endswith("model_quality") else None
        )
        if quality_day:
            path = partition_key_path(dg.AssetKey([city, "model_quality"]), quality_day)
            if lake.exists(path):
                _print_quality(lake, city, quality_day, lake.read_parquet(path), predictions)


def _print_quality(lake, city: str, day: str, quality, predictions) -> None:
    """24-hour quality, and whether the scored rows are new evidence: not seen in training
    (model_quality leaves those out) and whether they lie in the champion's test window."""
    from datetime import datetime

    import dagster as dg

    from bikeshare_assets.storage import partition_key_path

    note = ""
    model_path = partition_key_path(dg.AssetKey([city, "stockout_model"]), day)
    if lake.exists(model_path):
        model = lake.read_parquet(model_path)
        if "test_start" in model.columns and model.get_column("test_start")[0]:
            start = datetime.fromisoformat(model.get_column("test_start")[0])
            end = datetime.fromisoformat(model.get_column("test_end")[0])
            times = predictions.get_column("snapshot_at").unique()
            inside = int(((times >= start) & (times <= end)).sum())
            after = int((times > end).sum())
            if inside:
                note = (
                    f" — {inside} of {times.len()} predicted snapshots lie inside the champion's "
                    f"test window ({start:%m-%d %H:%M} → {end:%m-%d %H:%M} UTC): not seen in "
                    "training, but the rows the gate already judged it on, so not an "
                    f"independent estimate; {after} are after it"
                )
            elif after == times.len():
                note = " — all after the champion's test window: new evidence"
    print(f"quality over the last 24 h (model_quality {day}){note}:")
    for r in quality.iter_rows(named=True):

        def fmt(value) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        print(
            f"  {r['target']}: PR-AUC@24h {fmt(r['pr_auc_24h'])}, F1@24h {fmt(r['f1_24h'])}, "
            f"Brier {fmt(r.get('brier_24h'))}, calibration error {fmt(r.get('calibration_error_24h'))}, "
            f"new stockouts PR-AUC {fmt(r.get('pr_auc_new_24h'))} (lowest count first "
            f"{fmt(r.get('baseline_pr_auc_new_24h'))}), P@20 {fmt(r.get('precision_at_20_new_24h'))} "
            f"({fmt(r.get('baseline_precision_at_20_new_24h'))}); {r['rows']} outcomes scored, "
            f"{r.get('rows_seen_in_training') or 0} seen in training left out"
        )


def _print_at_risk(settings: Settings, city: str, keys: list[str]) -> None:
    """The newest snapshot's ten stations most likely to stock out that are still fine now
    (the dashboard's dispatch ranking), and how many are already empty or full."""
    from bikeshare_assets.dispatch import at_risk, station_snapshot, stocked_out_now
    from bikeshare_assets.read import LakeReader

    reader = LakeReader.from_settings(settings)
    scored = [k for k in reader.nonempty_partitions(city, "stockout_predictions") if k in keys]
    if not scored:
        return
    newest = reader.read(city, "stockout_predictions", scored[-1:])
    at = newest.get_column("snapshot_at")[0]
    days = reader.partitions(city, "raw_station_information")
    day = at.strftime("%Y-%m-%d")
    stations = reader.read(city, "raw_station_information", [day]) if day in days else None
    snapshot = station_snapshot(newest, stations)
    threshold = settings.cities[city].stockout_threshold
    ranked = at_risk(snapshot, threshold)
    out = stocked_out_now(snapshot, threshold)
    print(
        f"top 10 stations at risk at {at:%Y-%m-%d %H:%M} UTC, not stocked out now "
        f"(the dashboard's dispatch list: `bikeshare dashboard`):"
    )
    for r in ranked.head(10).iter_rows(named=True):
        print(
            f"  {r['station_id']:>8}  {(r['name'] or '')[:38]:38}  {r['risk_of']:9} P={r['p']:.2f}  "
            f"(bikes {r['bikes_available']:.0f}, docks {r['docks_available']:.0f})"
        )
    print(
        f"already stocked out (not ranked): {out['stockout_bikes'].height} stations empty, "
        f"{out['stockout_docks'].height} full (<= {threshold} bikes / free docks)"
    )


def streamlit_command(app, address: str, port: int) -> list[str]:
    """`streamlit run` as the dashboard is served: no usage statistics, no file watcher
    (nothing edits the app in production), the viewer's toolbar only."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", address, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--theme.base", "light",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Start the Streamlit operations dashboard (app/) on the lake the pipeline wrote."""
    import subprocess
    from pathlib import Path

    app = Path(__file__).resolve().parents[1] / "app" / "dashboard.py"
    if not app.exists():
        print(
            f"The dashboard is not installed beside the package ({app} is missing); run it "
            "from a clone of the repository.",
            file=sys.stderr,
        )
        return 2
    settings = get_settings()  # a wrong environment fails here, with its message
    command = streamlit_command(app, args.address, args.port)
    print(
        f"dashboard: http://{args.address}:{args.port}  (data: {settings.storage_root}; "
        "Ctrl-C stops it)",
        flush=True,
    )
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    warnings.filterwarnings("ignore")
    settings = get_settings()
    if not settings.cities:
        print(
            f"No city supports BIKESHARE_SOURCE={settings.source}; see cities.toml.",
            file=sys.stderr,
        )
        return 2
    instance = _prepare_instance(settings)
    from bikeshare_assets.definitions import build_definitions

    defs = build_definitions(settings)
    layers = LAYERS[: LAYERS.index(args.until) + 1]
    stages = [s for s in _pipeline_stages(settings) if s.layer in layers]
    started = time.perf_counter()
    ok = True
    with tqdm(stages, desc="bikeshare demo", unit="stage", file=sys.stdout) as bar:
        for stage in bar:
            bar.set_postfix_str(stage.label)
            if not _run_stage(defs, instance, stage):
                if "blocking asset check failed" in stage.result.get("error", ""):
                    # The gate refusing a model is a verdict, not a broken pipeline: the
                    # scorecard says why and the champion stays where it was.
                    stage.result["gate_refused"] = True
                    continue
                ok = False
                break
    _print_summary(settings, stages, time.perf_counter() - started)
    if not args.keep_serving:
        try:
            stop_endpoints(settings)
        except Exception as exc:  # cleanup must not hide the run's own failure
            print(f"could not stop the local endpoint: {exc}", file=sys.stderr)
    if not ok:
        failed = next(s for s in stages if s.result and not s.result["success"])
        print(f"\nFAILED: {failed.label}\n{failed.result.get('error', '')}", file=sys.stderr)
        return 1
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """`dagster asset materialize` for this project: the Dagster instance under
    BIKESHARE_HOME is created on first use, and --latest picks the newest complete partition
    (what a live schedule tick would run)."""
    warnings.filterwarnings("ignore")  # Dagster's beta/preview notes drown the result
    import dagster as dg

    from bikeshare_assets.definitions import build_definitions

    settings = get_settings()
    defs = build_definitions(settings)
    graph = defs.get_repository_def().asset_graph
    selection = [s.strip() for s in args.select.split(",") if s.strip()]
    keys = [dg.AssetKey.from_user_string(s) for s in selection]
    unknown = [s for s, k in zip(selection, keys, strict=True) if not graph.has(k)]
    if unknown or not keys:
        known = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
        raise UserError(f"--select {unknown or args.select!r}: no such asset; assets: {known}")
    pdefs = {graph.get(k).partitions_def for k in keys}
    pdef = pdefs.pop()
    if pdefs or not isinstance(pdef, dg.TimeWindowPartitionsDefinition):
        raise UserError(
            f"--select {selection}: select assets of one partitioning per command (snapshots, "
            "hours or days), e.g. paris/raw_station_status,paris/station_features."
        )
    if args.latest:
        first = last = pdef.get_last_partition_key()
        if first is None:
            raise UserError(f"{selection[0]}: no complete partition yet (it starts {pdef.start}).")
    elif args.partition_range:
        first, _, last = args.partition_range.partition("...")
    else:
        first = last = args.partition
    for key in (first, last):
        if not pdef.has_partition_key(key):
            raise UserError(
                f"{selection[0]}: partition {key!r} does not exist; partitions run from "
                f"{pdef.get_first_partition_key()} to {pdef.get_last_partition_key()} "
                f"({pdef.fmt}, UTC)."
            )
    instance = _prepare_instance(settings)
    stage = Stage(f"materialize {','.join(selection)}", "raw", selection, pdef, first, last)
    ok = _run_stage(defs, instance, stage, launched_by="bikeshare materialize")
    for asset, info in stage.result.get("assets", {}).items():
        print(
            f"{asset}: {info['partitions']} partition(s) {first}..{last}, {info['rows']} rows, "
            f"{info['gaps']} gap(s), {stage.result['seconds']:.1f}s"
        )
    failed = stage.result.get("checks_failed") or {}
    print(
        f"asset checks: {stage.result.get('checks', 0)} evaluated; failed: "
        + (", ".join(f"{n} {c}" for n, c in sorted(failed.items())) or "none")
        + f"; run {stage.result.get('run_id')} on DAGSTER_HOME={settings.dagster_home}"
    )
    if not ok:
        print(
            f"FAILED: {stage.result.get('error', 'see the run in the Dagster UI')}", file=sys.stderr
        )
        return 1
    return 0


def _deploy_champion(settings: Settings, live_settings: Settings) -> str:
    """Serve Paris's champions (from the registry `bikeshare demo` wrote) for the live
    predictions; the health check's sample is the newest snapshot of the demo's features."""
    from bikeshare_assets.definitions import build_endpoint
    from bikeshare_assets.partitions import city_partitions
    from bikeshare_assets.serving.assets import sample_features
    from bikeshare_assets.serving.bundle import build_serving_bundle
    from bikeshare_assets.training.tracking import MlflowTracking

    city = settings.cities["paris"]
    parts = city_partitions(city, settings.source)
    last_day = parts.days.get_last_partition_key()
    day = parts.days.time_window_for_partition_key(last_day)
    tracking = MlflowTracking(
        tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    sample = sample_features(_lake(settings), city, parts, day)
    bundle = build_serving_bundle(tracking, "paris", sample)
    deployed = build_endpoint(live_settings).deploy("paris", bundle.model_uri, bundle.label, sample)
    return f"{bundle.label} at {deployed['address']}"


def _kick_live(live_settings: Settings) -> list[str]:
    """What the schedules would otherwise only start at midnight or the next tick: today's
    station list and the window that just ended, so snapshots land from the first minute."""
    from bikeshare_assets.definitions import build_definitions
    from bikeshare_assets.partitions import city_partitions

    instance = _prepare_instance(live_settings)
    defs = build_definitions(live_settings)
    parts = city_partitions(live_settings.cities["paris"], live_settings.source)
    lines = []
    for asset, pdef in (
        ("raw_station_information", parts.days),
        ("raw_station_status", parts.snapshots),
    ):
        key = pdef.get_last_partition_key()
        stage = Stage(asset, "raw", [f"paris/{asset}"], pdef, key, key)
        ok = _run_stage(defs, instance, stage, launched_by="bikeshare live")
        lines.append(
            f"  paris/{asset} {key}: " + ("ok" if ok else f"FAILED {stage.result.get('error')}")
        )
    return lines


def cmd_live(args: argparse.Namespace) -> int:
    """The loop running itself, offline: local live feed + `dagster dev` in live mode."""
    import subprocess
    from datetime import UTC, datetime, timedelta

    from bikeshare_assets.ingest.feed_server import LiveFeedServer
    from bikeshare_assets.settings import live_environment, settings_for_source

    warnings.filterwarnings("ignore")
    # The recorded weather's repeated hours are documented (docs/data_attribution.md); the
    # feed's own log lines would bury the URLs this command prints.
    logging.getLogger("bikeshare_assets.ingest.weather").setLevel(logging.ERROR)
    _check_minutes(args)
    settings = settings_for_source("replay")
    live_home = settings.home / "live"
    live_home.mkdir(parents=True, exist_ok=True)
    _interrupt_on_signals()
    _port_free(args.ui_port, "--ui-port")
    try:
        feed = LiveFeedServer(args.feed_port, cadence_minutes=args.cadence).start()
    except OSError as exc:
        raise UserError(f"--feed-port {args.feed_port}: cannot listen on it ({exc}).") from exc
    dagster: subprocess.Popen | None = None
    live_settings: Settings | None = None
    try:
        # One window of history: the window that just ended is the first partition.
        floored, live_start = first_live_window(datetime.now(UTC), args.cadence)
        cities_file = write_live_cities(
            live_home / "cities.toml",
            gbfs_url=feed.gbfs_url,
            cadence=args.cadence,
            drift_window=args.drift_window,
            live_start=live_start,
        )
        env = live_environment(
            settings, cities_file=cities_file, meteostat_url=feed.meteostat_url, live_home=live_home
        )
        live_settings = get_settings(env)
        print(f"local live feed: {feed.gbfs_url}  (Meteostat stand-in: {feed.meteostat_url})")
        print(f"fault controls:  {feed.control_url}/state  (docs/live.md)", flush=True)
        if args.without_champion:
            print("model: none served (--without-champion): predictions fall back to persistence")
        else:
            try:
                print(
                    f"model: serving the Paris champions {_deploy_champion(settings, live_settings)}"
                )
            except (ValueError, LookupError) as exc:
                raise UserError(
                    f"no Paris champion to serve from BIKESHARE_HOME={settings.home} ({exc}). "
                    "Run `bikeshare demo` first with the same BIKESHARE_HOME (it trains and "
                    "registers one), or pass --without-champion to watch predictions fall back."
                ) from exc
        print("first partitions (today's station list, the window that just ended):", flush=True)
        for line in _kick_live(live_settings):
            print(line, flush=True)
        dagster = start_dagster_dev(
            env, live_home, args.ui_port, None if args.verbose else live_home / "dagster_dev.log"
        )
        next_tick = floored + timedelta(minutes=args.cadence)
        first_drift = "next hour" if args.drift_window == 60 else f"+{args.drift_window} min"
        print(
            f"""
Dagster UI:  http://127.0.0.1:{args.ui_port}   (dagster dev pid {dagster.pid}, instance {env["DAGSTER_HOME"]}, log {live_home / "dagster_dev.log"})
What appears, without touching anything (cadence {args.cadence} min, times UTC):
  now        paris/raw_station_status {live_start:%H:%M} and today's station list (above)
  {next_tick:%H:%M}+     the schedule's next snapshot, then one every {args.cadence} min; weather each hour
             features and predictions follow each snapshot (declarative automation)
  +30 min    labels and outcomes of the first snapshots mature
  {first_drift:10} the first drift report (one per {args.drift_window} min)
Drills: curl -X POST '{feed.control_url}/outage?cadences=3' | drift?kind=heatwave | reset
Ctrl-C stops the UI, daemon, feed and endpoint.""",
            flush=True,
        )
        _interrupt_on_signals()  # again: Dagster maps SIGTERM to SIGINT's handler when it runs
        while dagster.poll() is None:
            time.sleep(0.5)
        print(f"dagster dev exited with {dagster.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if dagster is not None and dagster.poll() is None:
            stop_group(dagster)
        feed.stop()
        if live_settings is not None and not args.without_champion:
            try:
                stop_endpoints(live_settings)
            except Exception as exc:  # cleanup must not hide the reason we stopped
                print(f"could not stop the local endpoint: {exc}", file=sys.stderr)


def _port_free(port: int, option: str) -> None:
    import socket

    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise UserError(f"{option} {port}: something already listens there; pick another.")


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM (a supervisor, a test) both stop `bikeshare live` cleanly, even when
    it was started in the background, where SIGINT arrives ignored."""
    import signal

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def cmd_env(args: argparse.Namespace) -> int:
    for name, default, meaning in ENVIRONMENT_VARIABLES:
        current = environment_value(name)
        if current and name in SECRET_ENVIRONMENT_VARIABLES:
            current = "(set, hidden)"
        print(f"{name:28} {redact_url(current or '(' + default + ')'):40} {meaning}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from bikeshare_assets.ingest.quarantine import (
        count_quarantined,
        is_rejected_batch,
        list_quarantined,
    )

    lake = _lake(get_settings())
    records = list_quarantined(lake, args.asset)  # type: ignore[arg-type]
    for r in records:
        kind = "rejected" if is_rejected_batch(r) else "accepted"
        print(
            f"{r['city']}/{r['asset']} {r['partition']}  {kind}  rule={r['rule']}  "
            f"{r['message'][:160]}"
        )
    print(count_quarantined(records).summary())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the current champions locally (the same deployer as model_endpoint)."""
    from bikeshare_assets.definitions import build_endpoint
    from bikeshare_assets.partitions import city_partitions
    from bikeshare_assets.serving.assets import sample_features
    from bikeshare_assets.serving.bundle import build_serving_bundle
    from bikeshare_assets.training.tracking import MlflowTracking

    warnings.filterwarnings("ignore")
    settings = get_settings()
    endpoint = build_endpoint(settings)
    cities = [args.city] if args.city else list(settings.cities)
    if args.stop:
        stop_endpoints(settings)
        return 0
    tracking = MlflowTracking(
        tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    lake = _lake(settings)
    for key in cities:
        if key not in settings.cities:
            raise UserError(
                f"--city {key}: not a city of this deployment {sorted(settings.cities)}"
            )
        city = settings.cities[key]
        parts = city_partitions(city, settings.source)
        last_day = parts.days.get_last_partition_key()
        day = parts.days.time_window_for_partition_key(last_day)
        try:  # nothing to serve yet: no features to health-check with, or no champion
            sample = sample_features(lake, city, parts, day)
            bundle = build_serving_bundle(tracking, key, sample)
        except (ValueError, LookupError) as exc:
            raise UserError(str(exc)) from exc
        deployed = endpoint.deploy(key, bundle.model_uri, bundle.label, sample)
        print(
            f"{key}: serving {bundle.label} at {deployed['address']} (POST /invocations, GET /ping)"
        )
        if deployed.get("notes"):
            print(f"{key}: {deployed['notes']}")
    if args.detach:
        return 0
    print("Ctrl-C stops serving.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop_endpoints(settings)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from bikeshare_assets.registry.registry import registered_model_name, rollback
    from bikeshare_assets.training.tracking import MlflowTracking

    settings = get_settings()
    client = MlflowTracking(tracking_uri=settings.mlflow_tracking_uri).client()
    name = registered_model_name(args.city, args.target)
    try:
        before, after = rollback(client, name, args.to_version)
    except (ValueError, MlflowException) as exc:
        print(f"cannot roll back {name}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{name}: champion moved from v{before} back to v{after}. Redeploy: `bikeshare serve` or "
        f"materialize {args.city}/model_endpoint."
    )
    return 0


def cmd_endpoint_rollback(args: argparse.Namespace) -> int:
    """SageMaker: back to the endpoint config that was live before (one update_endpoint)."""
    from bikeshare_assets.definitions import build_endpoint

    endpoint = build_endpoint(get_settings())
    if endpoint.kind != "sagemaker":
        print(
            "The local endpoint serves the registry's champions: run `bikeshare rollback` for "
            "the model, then `bikeshare serve` (or materialize <city>/model_endpoint).",
            file=sys.stderr,
        )
        return 2
    try:
        before, after = endpoint.sagemaker(args.city).rollback()
    except ValueError as exc:
        print(f"cannot roll back: {exc}", file=sys.stderr)
        return 1
    print(f"{endpoint.endpoint_name(args.city)}: endpoint config {before} -> {after}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a UserError (bad configuration, refused action) is printed as one line
    plus a hint, its traceback only with --debug or BIKESHARE_DEBUG=1."""
    args = _parser().parse_args(argv)
    # Dagster's notes on beta/preview APIs the project uses are for developers, not operators.
    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
    try:
        return int(args.func(args))
    except UserError as exc:
        if args.debug or debug_enabled():
            raise
        print(f"bikeshare {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        print("(--debug or BIKESHARE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    quiet_mlflow_for_terminal()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # --debug before or after the command; the subcommand's copy must not reset the global one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parser = argparse.ArgumentParser(prog="bikeshare", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])  # type: ignore[method-assign]
    demo = sub.add_parser("demo", help="materialize the whole embedded period end to end")
    demo.add_argument(
        "--until", choices=LAYERS, default=LAYERS[-1], help="stop after this layer (default: all)"
    )
    demo.add_argument(
        "--keep-serving", action="store_true", help="leave the local endpoint running afterwards"
    )
    demo.set_defaults(func=cmd_demo)
    serve = sub.add_parser("serve", help="serve each city's champions on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--city", default=None)
    serve.add_argument(
        "--detach", action="store_true", help="start it and return (stop with --stop)"
    )
    serve.add_argument("--stop", action="store_true", help="stop the running local endpoint")
    serve.set_defaults(func=cmd_serve)
    dashboard = sub.add_parser("dashboard", help="start the operations dashboard (Streamlit)")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.add_argument("--address", default="127.0.0.1")
    dashboard.set_defaults(func=cmd_dashboard)
    rollback = sub.add_parser("rollback", help="put the previous champion back")
    rollback.add_argument("--city", required=True)
    rollback.add_argument("--target", required=True, choices=["stockout_bikes", "stockout_docks"])
    rollback.add_argument("--to-version", default=None, help="a specific registered version")
    rollback.set_defaults(func=cmd_rollback)
    endpoint_rollback = sub.add_parser(
        "endpoint-rollback", help="SageMaker: put the previous endpoint config back"
    )
    endpoint_rollback.add_argument("--city", required=True)
    endpoint_rollback.set_defaults(func=cmd_endpoint_rollback)
    sub.add_parser("env", help="list the environment variables and their values").set_defaults(
        func=cmd_env
    )
    live = sub.add_parser(
        "live",
        help="watch the loop run itself: a local live Paris feed + `dagster dev` in live mode",
        description="Serves the embedded Paris recording shifted to the present on 127.0.0.1 "
        "(GBFS + Meteostat stand-in + fault controls), then runs `dagster dev` in live mode "
        "with schedules, automation and sensors on. See docs/live.md.",
    )
    live.add_argument("--ui-port", type=int, default=3000, help="Dagster UI port (default 3000)")
    live.add_argument("--feed-port", type=int, default=8700, help="local feed port (default 8700)")
    live.add_argument("--cadence", type=int, default=5, help="snapshot minutes (default 5)")
    live.add_argument(
        "--drift-window", type=int, default=60, help="minutes per drift report (default 60)"
    )
    live.add_argument(
        "--without-champion",
        action="store_true",
        help="start without a served model (predictions fall back to persistence, flagged)",
    )
    live.add_argument("--verbose", action="store_true", help="show dagster dev's own output")
    live.set_defaults(func=cmd_live)
    mat = sub.add_parser(
        "materialize",
        help="materialize assets over partitions on the project's Dagster instance",
        description="Like `dagster asset materialize -m bikeshare_assets.definitions`, with "
        "DAGSTER_HOME prepared under BIKESHARE_HOME and --latest for live mode.",
    )
    mat.add_argument(
        "--select", required=True, help="comma-separated asset keys, e.g. paris/raw_station_status"
    )
    which = mat.add_mutually_exclusive_group(required=True)
    which.add_argument("--partition", help="one partition key, e.g. 2025-09-12-08:00")
    which.add_argument("--partition-range", help="FIRST...LAST, run as one single-run backfill")
    which.add_argument(
        "--latest", action="store_true", help="the newest complete partition (live mode)"
    )
    mat.set_defaults(func=cmd_materialize)
    q = sub.add_parser("quarantine", help="list rejected batches and why")
    q.add_argument("--asset", default=None, help="only this raw asset (e.g. raw_station_status)")
    q.set_defaults(func=cmd_quarantine)
    drill = sub.add_parser(
        "drill",
        help="break the live loop on purpose (feed outage, dead endpoint, drift) and time the healing",
        description="Starts its own live stack (local feed, dagster dev, the Paris champion from "
        "BIKESHARE_HOME's registry), runs the drills and prints time to alert and time to "
        "recovery. See docs/performance.md.",
    )
    drill.add_argument("names", nargs="+", choices=["outage", "endpoint", "drift", "all"])
    drill.add_argument("--cadence", type=int, default=1, help="snapshot minutes (default 1)")
    drill.add_argument(
        "--drift-window", type=int, default=1, help="minutes per drift report (default 1)"
    )
    drill.set_defaults(func=cmd_drill)
    return parser


def _check_minutes(args: argparse.Namespace) -> None:
    for flag, minutes in (("--cadence", args.cadence), ("--drift-window", args.drift_window)):
        if minutes <= 0 or 60 % minutes:
            raise UserError(f"{flag} {minutes}: must divide 60 (1, 2, 3, 5, 10, 15, ...).")
    if args.drift_window % args.cadence:
        raise UserError(
            f"--drift-window {args.drift_window}: must be a multiple of --cadence {args.cadence}."
        )


def cmd_drill(args: argparse.Namespace) -> int:
    """`bikeshare drill outage endpoint`: one stack, the drills in turn, a report each."""
    from bikeshare_assets.automation.drills import DRILLS, RUNNERS, drill_stack, wait_steady
    from bikeshare_assets.settings import settings_for_source

    warnings.filterwarnings("ignore")
    logging.getLogger("bikeshare_assets.ingest.weather").setLevel(logging.ERROR)
    names = list(DRILLS) if "all" in args.names else list(dict.fromkeys(args.names))
    _check_minutes(args)
    ok = True
    try:
        with drill_stack(
            settings_for_source("replay"), cadence=args.cadence, drift_window=args.drift_window
        ) as stack:
            for name in names:
                wait_steady(stack, print)
                report = RUNNERS[name](stack, print)
                print("\n".join(report.lines()), flush=True)
                ok = ok and report.passed
    except RuntimeError as exc:  # the stack could not start or never settled: say why
        raise UserError(f"bikeshare drill: {exc}") from exc
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
