"""Drills: break the live loop on purpose and measure how the system notices and heals.

`bikeshare drill <name>` (and the drill tests) start one **drill stack** — the local live
feed (ingest/feed_server.py) at a fast cadence, a live-mode environment of its own under
`$BIKESHARE_HOME/drills/<stamp>` (its own lake, Dagster instance and alerts file; the MLflow
registry is the one of BIKESHARE_HOME, where the Paris champion lives), the champion deployed,
and a real `dagster-daemon` (schedules, declarative automation, sensors, freshness) — then run
each drill against it:

- `outage`: the feed answers 503 for three cadences, then recovers. Expected: exactly one
  alert and one resolved message (the incident group `paris:snapshots`, automation/alerts.py),
  the outage windows recorded as source gaps, every later snapshot present downstream.
- `endpoint`: the scoring process is killed (SIGKILL to its process group) mid-stream.
  Expected: the next predictions fall back (flagged `source=fallback`), heal_endpoint
  re-deploys the champion, the predictions after that come from the model again.
- `drift`: the feed serves a quarter of the stations closed (no bikes, no docks, not
  renting) — a shift the model never saw. Expected: drift_report's feature_drift fails at
  ERROR, one alert opens the model incident, heal_model retrains → registers through the
  promotion gate → deploys; the challenger is promoted or refused with its reason (on
  minutes of live data there is nothing to train on: the retrain is refused), the endpoint
  serves the champion throughout. The drift is then reset.

The stack's drift reports cover `drift_window` minutes (1 by default, an hour in
production): a drill cannot wait an hour for its report.

Each drill returns a `DrillReport`: its timeline, time to alert (first message sent, from
the first failure the pipeline saw) and time to recovery (from the failure to everything
back), and the expectations that did not hold (empty: the drill passed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import dagster as dg
import requests

from bikeshare_assets.automation.alerts import FIRING, HEAL_FAILED, RESOLVED, read_alerts
from bikeshare_assets.cities import PARTITION_FMT
from bikeshare_assets.live_stack import (
    first_live_window,
    start_dagster_dev,
    stop_endpoints,
    stop_group,
    write_live_cities,
)
from bikeshare_assets.settings import Settings, get_settings, live_environment

if TYPE_CHECKING:
    from bikeshare_assets.partitions import CityPartitions

CITY = "paris"
DRILLS = ("outage", "endpoint", "drift")
OUTAGE_CADENCES = 3
STATUS_JOB = f"{CITY}_station_status_live"


def _key(asset: str) -> dg.AssetKey:
    return dg.AssetKey([CITY, asset])


@dataclass
class DrillReport:
    name: str
    cadence_minutes: int
    started_at: datetime
    timeline: list[tuple[datetime, str]] = field(default_factory=list)
    time_to_alert_s: float | None = None
    time_to_recovery_s: float | None = None
    failures: list[str] = field(default_factory=list)  # expectations that did not hold
    alerts_sent: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def note(self, what: str, at: datetime | None = None) -> None:
        self.timeline.append((at or datetime.now(UTC), what))

    def lines(self) -> list[str]:
        out = [f"drill {self.name} (cadence {self.cadence_minutes} min)"]
        for at, what in sorted(self.timeline):
            out.append(f"  {at:%H:%M:%S}  +{(at - self.started_at).total_seconds():6.0f}s  {what}")
        out.append(
            f"  time to alert: {_secs(self.time_to_alert_s)}; time to recovery: "
            f"{_secs(self.time_to_recovery_s)}; alerts sent: {len(self.alerts_sent)} ("
            + ", ".join(f"{a['kind']} {a['incident']}" for a in self.alerts_sent)
            + ")"
        )
        out.append("  PASSED" if self.passed else "  FAILED: " + "; ".join(self.failures))
        return out


def _title(alert: Mapping[str, Any]) -> str:
    return f"{alert['city']}/{alert['asset']}: {alert['rule']}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class DrillStack:
    """A live loop of its own: feed, environment, Dagster instance, endpoint and daemon."""

    base: Settings  # the environment the drill was started from (its MLflow registry)
    settings: Settings  # the drill's live-mode settings
    env: dict[str, str]
    feed: Any  # LiveFeedServer
    cadence: int
    drift_window: int
    daemon: subprocess.Popen | None = None

    @cached_property
    def parts(self) -> CityPartitions:
        from bikeshare_assets.partitions import city_partitions

        return city_partitions(self.settings.cities[CITY], self.settings.source)

    @cached_property
    def defs(self) -> dg.Definitions:
        """The drill environment's Definitions, for the in-process runs of the stack's start."""
        from bikeshare_assets.definitions import build_definitions

        return build_definitions(self.settings)

    @property
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.settings.dagster_home))

    def post(self, path: str) -> dict[str, Any]:
        response = requests.post(f"{self.feed.control_url}/{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def alerts(self) -> list[dict]:
        return read_alerts(self.settings.alerts_file)

    def daemon_alive(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None


LOG = Callable[[str], None]


@contextmanager
def drill_stack(
    base: Settings,
    *,
    cadence: int = 1,
    drift_window: int = 1,
    feed_port: int = 0,
    extra_env: Mapping[str, str] | None = None,
    log: LOG = print,
) -> Iterator[DrillStack]:
    """Start the stack (feed, first partitions, champion, daemon); stop all of it on exit."""
    from bikeshare_assets.ingest.feed_server import LiveFeedServer
    from bikeshare_assets.runs import write_instance_yaml

    home = base.home / "drills" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    home.mkdir(parents=True, exist_ok=True)
    feed = LiveFeedServer(feed_port, cadence_minutes=cadence).start()
    stack: DrillStack | None = None
    try:
        _, live_start = first_live_window(datetime.now(UTC), cadence)  # kicked below
        cities_file = write_live_cities(
            home / "cities.toml",
            gbfs_url=feed.gbfs_url,
            cadence=cadence,
            drift_window=drift_window,
            live_start=live_start,
        )
        env = live_environment(
            base, cities_file=cities_file, meteostat_url=feed.meteostat_url, live_home=home
        )
        env.update(extra_env or {})
        env.update(
            BIKESHARE_HOME=str(home),
            DAGSTER_HOME=str(home / "dagster_home"),
            MLFLOW_TRACKING_URI=base.mlflow_tracking_uri,
            BIKESHARE_MLFLOW_ARTIFACTS=base.mlflow_artifact_root,
        )
        settings = get_settings(env)
        write_instance_yaml(settings.dagster_home)
        stack = DrillStack(base, settings, env, feed, cadence, drift_window)
        log(
            f"drill stack: {home} (feed {feed.gbfs_url}, cadence {cadence} min, drift reports "
            f"every {drift_window} min)"
        )
        _first_partitions(stack, log)
        stack.daemon = start_dagster_dev(env, home, _free_port(), home / "dagster.log")
        log(f"dagster dev (daemon + UI) pid {stack.daemon.pid}, log {home / 'dagster.log'}")
        _windows_of_the_boot(stack, log)
        yield stack
    finally:
        if stack is not None and stack.daemon is not None and stack.daemon.poll() is None:
            stop_group(stack.daemon)
        feed.stop()
        if stack is not None:
            try:
                stop_endpoints(stack.settings)
            except Exception as exc:  # cleanup must not hide the drill's own failure
                log(f"could not stop the drill's endpoint: {exc}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _first_partitions(stack: DrillStack, log: LOG) -> None:
    """Today's station list, the newest snapshot, its features, the champion deployed for
    today (its health check sends those features) and the snapshot's predictions, in process
    before the daemon starts: the loop starts whole, with nothing for the catch-up to do."""
    from bikeshare_assets.partitions import materialize_range

    instance = stack.instance
    snapshot = stack.parts.snapshots.get_last_partition_key()
    day = stack.parts.days.get_last_partition_key()
    for selection, pdef_key in (
        ([f"{CITY}/raw_station_information"], day),
        ([f"{CITY}/raw_station_status", f"{CITY}/station_features"], snapshot),
        ([f"{CITY}/model_endpoint"], day),
        ([f"{CITY}/stockout_predictions"], snapshot),
    ):
        result = materialize_range(stack.defs, instance, selection, pdef_key, quiet=True)
        if not result.success:
            raise RuntimeError(
                f"drill stack: {', '.join(selection)} {pdef_key} failed — for model_endpoint, "
                "the registry needs a Paris champion (`bikeshare demo` registers one)"
            )
        log(f"  {', '.join(selection)} {pdef_key}: ok")


def _windows_of_the_boot(stack: DrillStack, log: LOG, timeout_s: float = 180) -> None:
    """The windows that ended while `dagster dev` booted, fetched and scored in process once
    its scheduler runs: the schedule starts from its first tick and never fetches them, and
    left to the catch-up sensor they would open an incident before any drill began."""
    from bikeshare_assets.partitions import materialize_range

    started = time.time()

    def scheduling() -> bool:
        beat = stack.instance.get_daemon_heartbeats().get("SCHEDULER")
        return beat is not None and beat.timestamp >= started - 5

    if not _wait("the scheduler's first heartbeat", scheduling, timeout_s, stack):
        raise RuntimeError(
            f"drill stack: dagster dev's scheduler did not start within {timeout_s:.0f} s "
            f"(see {stack.settings.home / 'dagster.log'})"
        )
    scored = stack.instance.get_materialized_partitions(_key("stockout_predictions"))
    scheduled = {
        r.dagster_run.tags.get("dagster/partition")
        for r in stack.instance.get_run_records(dg.RunsFilter(job_name=STATUS_JOB))
    }
    missing = [k for k in stack.parts.snapshots.get_partition_keys() if k not in scored | scheduled]
    if not missing:
        return
    # One run for all three: the automation sees predictions in progress and leaves them.
    assets = [
        f"{CITY}/{a}" for a in ("raw_station_status", "station_features", "stockout_predictions")
    ]
    result = materialize_range(
        stack.defs, stack.instance, assets, missing[0], missing[-1], quiet=True
    )
    if not result.success:
        raise RuntimeError(f"drill stack: {', '.join(assets)} {missing} failed")
    log(f"  windows of the boot {missing[0]}..{missing[-1]}: fetched and scored")


# --- reading the instance -----------------------------------------------------------------------


def _materializations(
    instance: dg.DagsterInstance, asset: str, after: float, limit: int = 200
) -> list[dg.EventLogRecord]:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=_key(asset), after_timestamp=after), limit=limit
    )
    return sorted(result.records, key=lambda r: r.timestamp)


def _source_gaps(instance: dg.DagsterInstance, after: float) -> set[str]:
    result = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=_key("raw_station_status"), after_timestamp=after),
        limit=200,
    )
    gaps = set()
    for record in result.records:
        observation = record.asset_observation
        if observation is not None and observation.metadata.get("source_gap") is not None:
            gaps.add(observation.partition)
    return gaps


def _sent(stack: DrillStack, after: datetime) -> list[dict]:
    return [
        a
        for a in stack.alerts()
        if a.get("sent", True) and datetime.fromisoformat(a["at"]) >= after
    ]


def _wait(what: str, until: Callable[[], Any], timeout_s: float, stack: DrillStack) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        if not stack.daemon_alive():
            raise RuntimeError(f"the Dagster daemon exited while waiting for {what}")
        time.sleep(2)
    return None


def _prediction_source(record: dg.EventLogRecord) -> str | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get("source") if materialization else None
    return getattr(value, "value", None)


def wait_steady(stack: DrillStack, log: LOG, timeout_s: float = 420) -> None:
    """Until the loop runs by itself: a snapshot scored by the model after the daemon
    started, and no incident open (the alerts' incident groups are all resolved)."""
    since = time.time()

    def steady() -> bool:
        scored = [
            r
            for r in _materializations(stack.instance, "stockout_predictions", since)
            if _prediction_source(r) == "model"
        ]
        groups_file = stack.settings.alerts_file.with_name("incidents.json")
        groups = json.loads(groups_file.read_text()) if groups_file.exists() else {}
        # Every window so far scored (a catch-up about to start would join the drill's
        # incident), up to the one the automation is still on.
        pdef = stack.parts.snapshots
        newest = pdef.get_partition_key_for_timestamp(
            (datetime.now(UTC) - 2 * timedelta(minutes=stack.cadence)).timestamp()
        )
        windows = pdef.get_partition_keys_in_range(
            dg.PartitionKeyRange(pdef.get_first_partition_key(), newest)
        )
        present = stack.instance.get_materialized_partitions(_key("stockout_predictions"))
        return bool(scored) and not groups and set(windows) <= present

    if not _wait("a steady loop", steady, timeout_s, stack):
        raise RuntimeError(
            f"the drill stack did not reach a steady loop within {timeout_s:.0f} s "
            f"(see {stack.settings.home / 'dagster.log'})"
        )
    log("steady: snapshots are scored by the model and no incident is open")


# --- the drills ---------------------------------------------------------------------------------


def outage_drill(stack: DrillStack, log: LOG = print, timeout_s: float = 600) -> DrillReport:
    """The feed answers 503 for OUTAGE_CADENCES cadences, then recovers."""
    step = timedelta(minutes=stack.cadence)

    # Clear of the fetch at the start of each window (with its retries, ~15 s): an outage
    # that begins while the previous window's fetch is retrying fails that fetch too, one
    # window more than the drill asked for. (The top of the hour needs no care: the weather
    # stand-in does not share the outage, and raw_weather's hourly run is its own source.)
    def near_a_fetch() -> bool:
        into = datetime.now(UTC).timestamp() % step.total_seconds()
        return into < 25 or into > step.total_seconds() - 5

    while near_a_fetch():
        time.sleep(2)
    report = DrillReport("outage", stack.cadence, datetime.now(UTC))
    state = stack.post(f"outage?cadences={OUTAGE_CADENCES}")
    feed_back = datetime.fromisoformat(state["outage_until"])
    report.note(f"feed down: 503 until {feed_back:%H:%M:%S} ({OUTAGE_CADENCES} cadences)")
    pdef = stack.parts.snapshots
    # By time, not from the partitions definition: these windows do not exist yet.
    first_start = pdef.time_window_for_partition_key(
        pdef.get_partition_key_for_timestamp(report.started_at.timestamp())
    ).start
    windows = [first_start + i * step for i in range(OUTAGE_CADENCES + 1)]
    first_window = windows[0].strftime(PARTITION_FMT)
    outage_keys = [w.strftime(PARTITION_FMT) for w in windows[:-1]]
    after = windows[-1].strftime(PARTITION_FMT)  # fetched once the feed is back
    since = report.started_at.timestamp()

    def first_failed_run() -> dg.RunRecord | None:
        records = stack.instance.get_run_records(
            dg.RunsFilter(
                job_name=STATUS_JOB,
                statuses=[dg.DagsterRunStatus.FAILURE],
                created_after=report.started_at,
            ),
            order_by="create_timestamp",
            ascending=True,
            limit=1,
        )
        return records[0] if records else None

    failed = _wait("the first failed fetch", first_failed_run, timeout_s, stack)
    if failed is None:
        report.failures.append("no raw_station_status run failed during the outage")
        return report
    failed_at = failed.create_timestamp
    report.note(f"first failed fetch: run {failed.dagster_run.run_id[:8]}", failed_at)
    firing = _wait(
        "the alert",
        lambda: [a for a in _sent(stack, report.started_at) if a["kind"] in (FIRING, "action")],
        timeout_s,
        stack,
    )
    if firing:
        at = datetime.fromisoformat(firing[0]["at"])
        report.time_to_alert_s = (at - failed_at).total_seconds()
        report.note(f"alert sent: {_title(firing[0])}", at)

    def recovered() -> bool:
        # The outage windows are recorded gaps and scored (empty, gap=true) and the first
        # window after them is scored: from here on the loop is whole again.
        keys = [*outage_keys, after]
        present = stack.instance.get_materialized_partitions(_key("stockout_predictions"))
        return set(keys) <= present and set(outage_keys) <= _source_gaps(stack.instance, since)

    if _wait("the first window after the outage, downstream", recovered, timeout_s, stack):
        done = max(
            r.timestamp
            for r in _materializations(stack.instance, "stockout_predictions", since)
            if r.partition_key in {*outage_keys, after}
        )
        back = datetime.fromtimestamp(done, UTC)
        report.time_to_recovery_s = (back - feed_back).total_seconds()
        report.note(
            f"outage windows recorded as gaps and scored over; {after} scored (feed back "
            f"{feed_back:%H:%M:%S})",
            back,
        )
    else:
        report.failures.append(
            "the outage windows and the first one after did not reach predictions"
        )
    resolved = _wait(
        "the resolved message",
        lambda: [a for a in _sent(stack, report.started_at) if a["kind"] == RESOLVED],
        timeout_s,
        stack,
    )
    if resolved:
        report.note(
            f"resolved sent: {resolved[0]['value']}", datetime.fromisoformat(resolved[0]["at"])
        )
    time.sleep(35)  # one more alert-sensor tick (30 s): nothing else may be sent
    report.alerts_sent = _sent(stack, report.started_at)
    kinds = [a["kind"] for a in report.alerts_sent]
    if kinds != [FIRING, RESOLVED]:
        report.failures.append(f"expected one alert and one resolved message, sent: {kinds}")
    gaps = _source_gaps(stack.instance, since)
    if gaps != set(outage_keys):
        report.failures.append(f"source gaps {sorted(gaps)} != outage windows {outage_keys}")
    report.note(f"source gaps recorded: {', '.join(sorted(gaps))}")
    # Every later window too: all of them up to the newest the automation has had time for.
    # (a window still being scored under load is given a few cadences to land)
    newest = pdef.get_partition_key_for_timestamp((datetime.now(UTC) - 2 * step).timestamp())
    later = set(pdef.get_partition_keys_in_range(dg.PartitionKeyRange(first_window, newest)))

    def missing() -> set[str]:
        return later - stack.instance.get_materialized_partitions(_key("stockout_predictions"))

    _wait("every later window scored", lambda: not missing(), 4 * step.total_seconds(), stack)
    if missing():
        report.failures.append(f"predictions missing for {sorted(missing())}")
    return report


def endpoint_drill(stack: DrillStack, log: LOG = print, timeout_s: float = 420) -> DrillReport:
    """The scoring process dies (SIGKILL to its group) while snapshots keep coming."""
    from bikeshare_assets.definitions import build_endpoint

    report = DrillReport("endpoint", stack.cadence, datetime.now(UTC))
    state = build_endpoint(stack.settings).local(CITY).read_state()
    if state is None:
        report.failures.append("no local endpoint is recorded for paris")
        return report
    os.killpg(state.pid, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    report.note(f"endpoint killed: SIGKILL to process group {state.pid} ({state.url})", killed_at)
    since = killed_at.timestamp()

    def scored(source: str, after: float) -> list[dg.EventLogRecord]:
        return [
            r
            for r in _materializations(stack.instance, "stockout_predictions", after)
            if _prediction_source(r) == source
        ]

    fallback = _wait("a fallback", lambda: scored("fallback", since), timeout_s, stack)
    if not fallback:
        report.failures.append("no prediction fell back after the endpoint died")
        return report
    report.note(
        f"predictions {fallback[0].partition_key} fell back to persistence (flagged)",
        datetime.fromtimestamp(fallback[0].timestamp, UTC),
    )
    alert = _wait("the alert", lambda: _sent(stack, killed_at), timeout_s, stack)
    if alert:
        at = datetime.fromisoformat(alert[0]["at"])
        report.time_to_alert_s = (at - killed_at).total_seconds()
        report.note(f"alert sent: {_title(alert[0])} — {alert[0]['did']}", at)
    redeployed = _wait(
        "the re-deploy",
        lambda: [
            r
            for r in _materializations(stack.instance, "model_endpoint", since)
            if r.run_id
            and stack.instance.get_run_by_id(r.run_id).tags.get("bikeshare/healed_by")
            == f"{CITY}_heal_endpoint"
        ],
        timeout_s,
        stack,
    )
    if not redeployed:
        report.failures.append("heal_endpoint did not re-deploy the champion")
        return report
    redeploy_at = redeployed[0].timestamp
    report.note(
        "champion re-deployed by paris_heal_endpoint", datetime.fromtimestamp(redeploy_at, UTC)
    )
    model = _wait(
        "predictions from the model", lambda: scored("model", redeploy_at), timeout_s, stack
    )
    if not model:
        report.failures.append("predictions did not come from the model again")
        return report
    back = datetime.fromtimestamp(model[0].timestamp, UTC)
    report.time_to_recovery_s = (back - killed_at).total_seconds()
    report.note(f"predictions {model[0].partition_key} scored by the model again", back)
    resolved = _wait(
        "the resolved message",
        lambda: [a for a in _sent(stack, killed_at) if a["kind"] == RESOLVED],
        120,
        stack,
    )
    if resolved:
        report.note(
            f"resolved sent: {resolved[0]['did']}", datetime.fromisoformat(resolved[0]["at"])
        )
    report.alerts_sent = _sent(stack, killed_at)
    kinds = [a["kind"] for a in report.alerts_sent]
    if kinds != ["action", RESOLVED]:
        report.failures.append(f"expected one alert (the heal) and one resolved, sent: {kinds}")
    return report


def _serving_label(stack: DrillStack, after: float) -> str | None:
    """The model_version of the newest model-scored predictions after `after`."""
    scored = [
        r
        for r in _materializations(stack.instance, "stockout_predictions", after)
        if _prediction_source(r) == "model"
    ]
    if not scored:
        return None
    value = scored[-1].asset_materialization.metadata.get("model_version")  # type: ignore[union-attr]
    return str(getattr(value, "value", value))


def drift_drill(stack: DrillStack, log: LOG = print, timeout_s: float = 720) -> DrillReport:
    """A quarter of the stations closed until drift_report fails and the retrain decided."""
    from bikeshare_assets.automation.sensors import HEALED_BY_TAG

    report = DrillReport("drift", stack.cadence, datetime.now(UTC))
    champion = _serving_label(stack, report.started_at.timestamp() - 600)
    stack.post("drift?kind=closed_stations")
    injected = datetime.now(UTC)
    report.note(f"drift injected: a quarter of the stations closed (champion {champion})", injected)
    pdef = stack.parts.drift
    # The first window whose every snapshot is fetched after the injection: the next window
    # start (a snapshot is fetched when its window ends, so this holds with one to spare).
    step = timedelta(minutes=stack.drift_window)
    first = (
        pdef.time_window_for_partition_key(
            pdef.get_partition_key_for_timestamp(injected.timestamp())
        ).start
        + step
    )
    since = injected.timestamp()

    def drift_failed() -> tuple[float, dg.AssetCheckEvaluation] | None:
        from bikeshare_assets.automation.alerts import latest_check_evaluation

        latest = latest_check_evaluation(
            stack.instance, dg.AssetCheckKey(_key("drift_report"), "feature_drift")
        )
        if latest is None:
            return None
        record, evaluation = latest
        if record.event.timestamp < since or evaluation.passed:
            return None
        failed = evaluation.severity == dg.AssetCheckSeverity.ERROR
        return (record.event.timestamp, evaluation) if failed else None

    failed = _wait("feature_drift to fail", drift_failed, timeout_s, stack)
    if failed is None:
        report.failures.append(
            f"feature_drift did not fail at ERROR on a drift window from {first:%H:%M} on"
        )
        stack.post("reset")
        return report
    failed_at, evaluation = failed
    report.note(
        f"feature_drift ERROR on drift_report {evaluation.partition}: "
        f"{(evaluation.description or '')[:160]}",
        datetime.fromtimestamp(failed_at, UTC),
    )
    alert = _wait(
        "the alert",
        lambda: [a for a in _sent(stack, injected) if a["kind"] in (FIRING, "action")],
        timeout_s,
        stack,
    )
    if alert:
        at = datetime.fromisoformat(alert[0]["at"])
        report.time_to_alert_s = (at - datetime.fromtimestamp(failed_at, UTC)).total_seconds()
        report.note(f"alert sent: {_title(alert[0])}", at)

    def heal_run() -> dg.RunRecord | None:
        records = stack.instance.get_run_records(
            dg.RunsFilter(tags={HEALED_BY_TAG: f"{CITY}_heal_model"}, created_after=injected),
            limit=1,
        )
        return records[0] if records and records[0].dagster_run.is_finished else None

    run = _wait("the retrain run to finish", heal_run, timeout_s, stack)
    if run is None:
        report.failures.append("heal_model launched no retrain run, or it did not finish")
        stack.post("reset")
        return report
    tags = run.dagster_run.tags
    report.note(
        f"retrain run {run.dagster_run.run_id[:8]} {run.dagster_run.status.value} "
        f"(reason tag: {tags.get('bikeshare/heal_reason', '')[:120]})",
        datetime.fromtimestamp(run.end_time or run.update_timestamp.timestamp(), UTC),
    )
    if "feature_drift" not in tags.get("bikeshare/heal_reason", ""):
        report.failures.append("the retrain run's reason tag does not name feature_drift")
    # The heal's outcome (recorded always; sent when it is news for the open incident).
    decided = _wait(
        "the retrain's outcome",
        lambda: [
            a
            for a in stack.alerts()
            if datetime.fromisoformat(a["at"]) >= injected
            and a["kind"] in (RESOLVED, HEAL_FAILED)
            and a["incident"].startswith(f"{CITY}:heal_model:")
        ],
        120,
        stack,
    )
    if decided:
        report.note(
            f"retrain outcome ({'sent' if decided[0].get('sent', True) else 'recorded'}): "
            f"{decided[0]['did']}",
            datetime.fromisoformat(decided[0]["at"]),
        )
    else:
        report.failures.append("nothing recorded what the retrain decided")
    stack.post("reset")
    reset_at = datetime.now(UTC)
    report.note("drift reset: the feed serves every station again", reset_at)
    # The endpoint serves the champion: the next model-scored snapshot after the decision.
    ended = run.end_time or time.time()
    serving = _wait("a model-scored snapshot", lambda: _serving_label(stack, ended), 300, stack)
    if serving is None:
        report.failures.append("no snapshot was scored by the model after the retrain")
    else:
        back = datetime.fromtimestamp(
            _materializations(stack.instance, "stockout_predictions", ended)[0].timestamp, UTC
        )
        # Recovered: the retrain decided (promoted or refused, and said so) and the endpoint
        # scores with the champion after it.
        settled = max(back, datetime.fromisoformat(decided[0]["at"])) if decided else back
        report.time_to_recovery_s = (
            settled - datetime.fromtimestamp(failed_at, UTC)
        ).total_seconds()
        promoted = decided and "retrained, registered and deployed" in decided[0]["did"]
        if not promoted and serving != champion:
            report.failures.append(f"serving {serving}, not the champion {champion}")
        report.note(
            f"the endpoint serves {serving} ({'new' if promoted else 'the'} champion)", back
        )
    # Not waited for: the model incident resolves once the drift windows pass again, which
    # takes up to 15 minutes after the reset (the 15-minute window features see the stations
    # reopen as a change of their own) — real, and not what this drill measures.
    report.alerts_sent = _sent(stack, injected)
    opened = [a for a in report.alerts_sent if a["kind"] in (FIRING, "action")]
    if len(opened) != 1:
        kinds = [f"{a['kind']} {a['incident']}" for a in opened]
        report.failures.append(f"expected one message opening the model incident, sent: {kinds}")
    return report


RUNNERS: dict[str, Callable[..., DrillReport]] = {
    "outage": outage_drill,
    "endpoint": endpoint_drill,
    "drift": drift_drill,
}
