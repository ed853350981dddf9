"""Healing sensors: what the system does by itself when data goes missing, drift or model
quality fails, or the endpoint stops answering.

Per city:
- `<city>_heal_missing_partitions`: snapshots of the recent window missing from
  raw_station_status / station_features / stockout_predictions are requested again. A live
  GBFS feed only serves the present, so a raw window it did not answer while it was current
  is recorded once as a source gap (an empty raw partition, gap=true and source_gap=true, and
  an observation saying why: `record_source_gap`) and never re-requested;
  features and predictions catch up over it (empty, gap=true) and from the moment it returns.
- `<city>_heal_model`: `feature_drift` failing at ERROR or `quality_above_gate` failing →
  stockout_model → registered_model_version → model_endpoint for the newest day. The
  promotion gate may refuse the challenger: the champion keeps serving, and the follow-up
  message says so.
- `<city>_heal_endpoint`: `endpoint_answers` or `batch_success` failing → model_endpoint for
  the newest day (re-deploys the champion).

Each keeps its state in its cursor, gives every run a run key (a retry gets a new key, the
same condition never two runs), waits a cooldown between actions, writes the reason in the
run's tags (`bikeshare/heal_reason`) and reports each action and its outcome to the `alerts`
resource. The planning is pure (`plan_catch_up`, `choose_trigger`, `retrain_outcome`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from bikeshare_assets.automation.alerts import (
    ACTION,
    HEAL_FAILED,
    HEAL_ID_TAG,
    HEAL_REASON_TAG,
    RESOLVED,
    SNAPSHOT_CHAIN,
    Alert,
    AlertChannel,
    asset_link,
    latest_check_evaluation,
    run_link,
)
from bikeshare_assets.cities import City, SourceMode
from bikeshare_assets.ingest.gbfs import STATUS_SCHEMA, empty_frame
from bikeshare_assets.partitions import CityPartitions
from bikeshare_assets.settings import Settings
from bikeshare_assets.storage import LakeStorage, partition_key_path

HEALED_BY_TAG = "bikeshare/healed_by"
# A requested heal run that has not appeared after this long is not waited for any more.
PENDING_RUN_TIMEOUT_S = 3600
RETRAIN_CHAIN = ("stockout_model", "registered_model_version", "model_endpoint")
# Checks that trigger each heal: (asset, check, only when failing at ERROR severity).
MODEL_TRIGGERS = (
    ("drift_report", "feature_drift", True),
    ("model_quality", "quality_above_gate", False),
)
ENDPOINT_TRIGGERS = (
    ("model_endpoint", "endpoint_answers", False),
    ("stockout_predictions", "batch_success", False),
)


@dataclass(frozen=True)
class HealPolicy:
    """How hard each sensor tries. Catch-up: the window it looks back over, how long after a
    window ends before a missing partition counts as missing (the schedule and automation get
    the first go), how long between two tries of one partition and how many tries."""

    lookback: timedelta = timedelta(hours=2)
    grace: timedelta = timedelta(minutes=2)
    catch_up_cooldown: timedelta = timedelta(minutes=5)
    catch_up_attempts: int = 3
    max_runs_per_tick: int = 6
    # A retrain costs minutes of CPU and a new registry version: at most one per 6 hours.
    retrain_cooldown: timedelta = timedelta(hours=6)
    # A re-deploy is cheap but must not loop while a broken version keeps failing.
    redeploy_cooldown: timedelta = timedelta(minutes=10)


# --- catch-up of missing snapshot partitions (pure) -------------------------------------------


@dataclass(frozen=True)
class CatchUp:
    partition: str
    assets: tuple[str, ...]
    attempt: int
    reason: str

    @property
    def run_key(self) -> str:
        return f"catch_up:{self.partition}:{self.assets[0]}:attempt{self.attempt}"


@dataclass
class CatchUpPlan:
    runs: list[CatchUp] = field(default_factory=list)
    new_source_gaps: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    # Partitions still incomplete and not given up (requested now or waiting a cooldown).
    still_missing: list[str] = field(default_factory=list)


def plan_catch_up(
    now: datetime,
    windows: Sequence[tuple[str, dg.TimeWindow]],
    present: Mapping[str, set[str]],
    source_gaps: set[str],
    attempts: Mapping[str, Mapping[str, Any]],
    policy: HealPolicy,
    *,
    live: bool,
    live_lateness: timedelta,
) -> CatchUpPlan:
    """Which partitions of `windows` (oldest first) to request, from which asset on, newest
    first (fresh predictions matter most). A raw window of a live feed can only be fetched
    while it is current (until `live_lateness` after it ends): a missing one older than that
    becomes a source gap, and only the assets below it are requested."""
    plan = CatchUpPlan()
    raw, features, predictions = SNAPSHOT_CHAIN
    for key, window in reversed(windows):
        if window.end + policy.grace > now:
            continue  # the schedule / automation are still on it
        raw_missing = key not in present[raw] and key not in source_gaps
        if raw_missing and live and now > window.end + live_lateness:
            plan.new_source_gaps.append(key)
            raw_missing = False
        if raw_missing:
            chain, why = SNAPSHOT_CHAIN, f"{raw} {key} missing"
        elif key not in present[features]:
            chain = (features, predictions)
            why = f"{features} {key} missing" + (
                " (raw is a source gap: features record the gap)"
                if key in source_gaps or key in plan.new_source_gaps
                else ""
            )
        elif key not in present[predictions]:
            chain, why = (predictions,), f"{predictions} {key} missing"
        else:
            continue
        tried = attempts.get(key, {})
        count = int(tried.get("count", 0))
        if tried.get("first") != chain[0]:
            count = 0  # a new step of the chain is missing: its own tries
        if count >= policy.catch_up_attempts:
            if not tried.get("given_up"):
                plan.given_up.append(key)
            continue
        plan.still_missing.append(key)
        last = tried.get("last")
        if (
            last is not None
            and now.timestamp() - float(last) < policy.catch_up_cooldown.total_seconds()
        ):
            continue
        if len(plan.runs) >= policy.max_runs_per_tick:
            continue  # the next tick takes the rest; gaps further back are still recorded
        plan.runs.append(
            CatchUp(
                key,
                chain,
                count + 1,
                f"{why} {int((now - window.end).total_seconds() // 60)} min after its window "
                f"ended (try {count + 1} of {policy.catch_up_attempts})",
            )
        )
    return plan


def recent_windows(
    parts: CityPartitions, now: datetime, lookback: timedelta
) -> list[tuple[str, dg.TimeWindow]]:
    """The snapshot partitions whose window lies in the `lookback` before now (or before the
    end of a replay's period), oldest first."""
    pdef = parts.snapshots
    last = pdef.get_last_partition_key()
    if last is None:
        return []
    end = pdef.time_window_for_partition_key(last).end
    start = max(end - lookback, pdef.start)
    keys = pdef.get_partition_keys_in_range(
        dg.PartitionKeyRange(pdef.get_partition_key_for_timestamp(start.timestamp()), last)
    )
    return [(k, pdef.time_window_for_partition_key(k)) for k in keys]


# --- check-driven heals (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """A failing check evaluation a heal answers."""

    asset: str
    check: str
    evaluation_id: int
    partition: str | None
    severity: str
    value: str

    @property
    def reason(self) -> str:
        where = f"{self.asset} {self.partition}" if self.partition else self.asset
        return f"{self.check} failed ({self.severity}) on {where}: {self.value}"


def choose_trigger(
    failing: Sequence[Trigger],
    handled: Mapping[str, int],
    last_action_at: float | None,
    cooldown: timedelta,
    now: datetime,
    pending: bool,
) -> tuple[Trigger | None, str]:
    """The evaluation to act on now, or None and why not: every failing evaluation is acted on
    at most once, never while the previous heal run is unfinished or within the cooldown."""
    fresh = [t for t in failing if t.evaluation_id > handled.get(f"{t.asset}:{t.check}", 0)]
    if not fresh:
        return None, "no new failing evaluation" if failing else "nothing failing"
    if pending:
        return None, "the previous heal run has not finished"
    if last_action_at is not None and now.timestamp() - last_action_at < cooldown.total_seconds():
        wait = cooldown.total_seconds() - (now.timestamp() - last_action_at)
        return None, f"cooldown: {fresh[0].reason}; next action possible in {wait / 60:.0f} min"
    return fresh[0], "act"


def retrain_outcome(
    run_status: str, registry_metadata: Mapping[str, Any] | None, failure: str | None = None
) -> str:
    """What the retrain achieved, from the run, registered_model_version's metadata (per
    target: `v<version> <decision>; champion v<champion>`, see registry/assets.py) and the
    run's first step failure, if any."""
    decisions = {
        name: str(getattr(v, "value", v))
        for name, v in (registry_metadata or {}).items()
        if isinstance(getattr(v, "value", v), str) and "champion" in str(getattr(v, "value", v))
    }
    summary = "; ".join(f"{t}: {d}" for t, d in sorted(decisions.items()))
    refused = [t for t, d in decisions.items() if "rejected" in d]
    if refused:
        return (
            f"challenger refused by the promotion gate for {', '.join(sorted(refused))} — the "
            f"champion keeps serving ({summary})"
        )
    if run_status == "SUCCESS":
        return f"retrained, registered and deployed ({summary or 'no registry metadata'})"
    if decisions:
        return f"registered ({summary}) but the deploy failed: the previous endpoint keeps serving"
    why = f" ({failure})" if failure else ""
    return f"the retrain was refused before registration{why}: the champion keeps serving"


# --- the sensors --------------------------------------------------------------------------------


def _status(settings: Settings) -> dg.DefaultSensorStatus:
    return (
        dg.DefaultSensorStatus.RUNNING if settings.runs_itself else dg.DefaultSensorStatus.STOPPED
    )


def _now(context: dg.SensorEvaluationContext) -> datetime:
    # build_sensor_context in tests and the daemon alike: the wall clock.
    return datetime.now(UTC)


def build_catch_up_sensor(
    city: City, parts: CityPartitions, settings: Settings, policy: HealPolicy
) -> dg.SensorDefinition:
    keys = {name: dg.AssetKey([city.key, name]) for name in SNAPSHOT_CHAIN}
    live = settings.source is SourceMode.LIVE
    # Live ingest accepts a window until two window lengths after it ends (gbfs_client.py).
    lateness = 2 * parts.cadence

    @dg.sensor(
        name=f"{city.key}_heal_missing_partitions",
        minimum_interval_seconds=60,
        default_status=_status(settings),
        target=list(keys.values()),
        description=f"{city.display_name}: requests snapshots missing from "
        f"{', '.join(SNAPSHOT_CHAIN)} in the last {policy.lookback}; a live window the feed "
        "did not answer is recorded as a source gap, not re-requested.",
    )
    def heal_missing_partitions(
        context: dg.SensorEvaluationContext, alerts: AlertChannel, lake: LakeStorage
    ):
        now = _now(context)
        state = json.loads(context.cursor) if context.cursor else {}
        windows = recent_windows(parts, now, policy.lookback)
        in_window = {k for k, _ in windows}
        gaps = set(state.get("source_gaps", [])) & in_window
        attempts = {k: v for k, v in state.get("attempts", {}).items() if k in in_window}
        present = {
            name: context.instance.get_materialized_partitions(key) & in_window
            for name, key in keys.items()
        }
        plan = plan_catch_up(
            now, windows, present, gaps, attempts, policy, live=live, live_lateness=lateness
        )
        for key in plan.new_source_gaps:
            record_source_gap(context.instance, lake, keys["raw_station_status"], key)
        gaps |= set(plan.new_source_gaps)
        requests = []
        for run in plan.runs:
            attempts[run.partition] = {
                "count": run.attempt,
                "first": run.assets[0],
                "last": now.timestamp(),
            }
            context.log.info(f"{city.key}: requesting {' → '.join(run.assets)}: {run.reason}")
            requests.append(
                dg.RunRequest(
                    run_key=run.run_key,
                    partition_key=run.partition,
                    asset_selection=[keys[a] for a in run.assets],
                    tags={
                        HEAL_REASON_TAG: run.reason,
                        HEAL_ID_TAG: f"{city.key}:{run.run_key}",
                        HEALED_BY_TAG: f"{city.key}_heal_missing_partitions",
                    },
                )
            )
        for key in plan.given_up:
            attempts[key]["given_up"] = True
        # One incident per catch-up: a message when it starts, one when nothing is missing
        # any more; the runs in between are in the log and their tags.
        incident = state.get("incident")
        notes = []
        if incident is None and (plan.runs or plan.new_source_gaps):
            incident = {
                "id": f"catch_up:{city.key}:{now.strftime('%Y-%m-%dT%H:%M')}",
                "requested": [],
                "gaps": 0,
                "first": (plan.runs[0].partition if plan.runs else plan.new_source_gaps[0]),
            }
            notes.append(
                Alert(
                    incident=incident["id"],
                    kind=ACTION,
                    city=city.key,
                    asset=plan.runs[0].assets[0] if plan.runs else "raw_station_status",
                    partition=_span([r.partition for r in plan.runs] + plan.new_source_gaps),
                    rule="missing partitions",
                    value=plan.runs[0].reason if plan.runs else "live windows not answered",
                    did=_catch_up_did(plan),
                    link=asset_link(alerts.ui_url, keys[SNAPSHOT_CHAIN[-1]]),
                )
            )
        if incident is not None:
            incident["requested"] = sorted(
                set(incident["requested"]) | {r.partition for r in plan.runs}
            )
            incident["gaps"] += len(plan.new_source_gaps)
        for key in plan.given_up:
            notes.append(
                Alert(
                    incident=f"catch_up:{city.key}:gave_up:{key}",
                    kind=ACTION,
                    city=city.key,
                    asset=attempts[key].get("first", "raw_station_status"),
                    partition=key,
                    rule="missing partition",
                    value=f"still missing after {policy.catch_up_attempts} tries",
                    did="stopped retrying: a person should look (see the failed runs)",
                    link=asset_link(alerts.ui_url, keys[attempts[key]["first"]], key),
                )
            )
        if incident is not None and not plan.still_missing and not plan.runs:
            notes.append(
                Alert(
                    incident=incident["id"],
                    kind=RESOLVED,
                    city=city.key,
                    asset=SNAPSHOT_CHAIN[-1],
                    partition=_span(incident["requested"]) if incident["requested"] else None,
                    rule="missing partitions",
                    value=f"{len(incident['requested'])} partition(s) requested, "
                    f"{incident['gaps']} window(s) recorded as source gaps",
                    did=f"caught up: every snapshot of the last {policy.lookback} is present "
                    "downstream (or a recorded gap"
                    + (", or given up" if any(a.get("given_up") for a in attempts.values()) else "")
                    + ")",
                    link=asset_link(alerts.ui_url, keys[SNAPSHOT_CHAIN[-1]]),
                )
            )
            incident = None
        alerts.deliver(notes, context.log)
        context.update_cursor(
            json.dumps({"source_gaps": sorted(gaps), "attempts": attempts, "incident": incident})
        )
        if not requests:
            return dg.SkipReason(f"{city.key}: no missing partition to request")
        return requests

    return heal_missing_partitions


SOURCE_GAP_REASON = (
    "the live feed did not answer while this window was current; a GBFS feed has no history, "
    "so it stays without data"
)


def record_source_gap(
    instance: dg.DagsterInstance, lake: LakeStorage, raw_key: dg.AssetKey, partition: str
) -> None:
    """Record a live window the feed never answered as what a recorder gap is in a replay: an
    empty raw partition (gap=true, source_gap=true) in the lake and in Dagster, plus an
    observation saying why. Features and labels read it as a gap (null window features, no
    label), and the automation conditions see the partition stored, so the snapshots after
    an outage — whose 60-minute lookback spans it — follow by themselves instead of waiting
    an hour for the lookback to pass."""
    lake.write_parquet(partition_key_path(raw_key, partition), empty_frame(STATUS_SCHEMA))
    metadata = {"source_gap": True, "gap": True, "rows": 0, "reason": SOURCE_GAP_REASON}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=raw_key, partition=partition, metadata=metadata)
    )
    instance.report_runless_asset_event(
        dg.AssetObservation(asset_key=raw_key, partition=partition, metadata=metadata)
    )


def _span(partitions: Sequence[str]) -> str | None:
    if not partitions:
        return None
    first, last = min(partitions), max(partitions)
    return first if first == last else f"{first}..{last}"


def _catch_up_did(plan: CatchUpPlan) -> str:
    parts = []
    if plan.runs:
        parts.append(
            f"requested {len(plan.runs)} run(s) from the first missing asset "
            f"({_span([r.partition for r in plan.runs])})"
        )
    if plan.new_source_gaps:
        parts.append(
            f"recorded {len(plan.new_source_gaps)} live window(s) the feed did not answer as "
            "source gaps (observation source_gap=true); features and predictions catch up over "
            "them"
        )
    return "; ".join(parts)


def failing_triggers(
    instance: dg.DagsterInstance, city: str, triggers: Sequence[tuple[str, str, bool]]
) -> list[Trigger]:
    """The triggers whose newest evaluation (over all partitions) failed."""
    found = []
    for asset, check, error_only in triggers:
        latest = latest_check_evaluation(
            instance, dg.AssetCheckKey(dg.AssetKey([city, asset]), check)
        )
        if latest is None or latest[1].passed:
            continue
        record, evaluation = latest
        if error_only and evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        metadata = ", ".join(
            f"{k}={getattr(v, 'value', v)}" for k, v in list(evaluation.metadata.items())[:4]
        )
        found.append(
            Trigger(
                asset,
                check,
                record.id,
                evaluation.partition,
                evaluation.severity.value,
                (evaluation.description or metadata or "failed")[:300],
            )
        )
    return found


def _heal_run(instance: dg.DagsterInstance, heal_id: str) -> dg.DagsterRun | None:
    records = instance.get_run_records(dg.RunsFilter(tags={HEAL_ID_TAG: heal_id}), limit=1)
    return records[0].dagster_run if records else None


def build_check_heal_sensor(
    city: City,
    parts: CityPartitions,
    settings: Settings,
    *,
    name: str,
    triggers: Sequence[tuple[str, str, bool]],
    chain: Sequence[str],
    cooldown: timedelta,
    did: str,
    outcome: Callable[[dg.DagsterInstance, dg.DagsterRun, str], str],
    description: str,
) -> dg.SensorDefinition:
    """A sensor that answers failing checks with one run of `chain` for the newest day."""
    selection = [dg.AssetKey([city.key, a]) for a in chain]

    @dg.sensor(
        name=f"{city.key}_{name}",
        minimum_interval_seconds=30,
        default_status=_status(settings),
        target=selection,
        description=f"{city.display_name}: {description}",
    )
    def heal(context: dg.SensorEvaluationContext, alerts: AlertChannel):
        now = _now(context)
        state = json.loads(context.cursor) if context.cursor else {}
        handled: dict[str, int] = state.get("handled", {})
        pending: dict[str, Any] | None = state.get("pending")
        if pending is not None:
            run = _heal_run(context.instance, pending["heal_id"])
            if run is None and now.timestamp() - pending.get("at", 0) > PENDING_RUN_TIMEOUT_S:
                # The request never became a run (the sensor was stopped mid-tick, the run
                # was deleted): stop waiting, or this heal would never act again.
                context.log.warning(f"{city.key}_{name}: no run for {pending['heal_id']}")
                pending = None
            elif run is not None and run.is_finished:
                day = pending["partition"]
                alerts.deliver(
                    [
                        Alert(
                            incident=pending["heal_id"],
                            kind=RESOLVED
                            if run.status == dg.DagsterRunStatus.SUCCESS
                            else HEAL_FAILED,
                            city=city.key,
                            asset=chain[-1],
                            partition=day,
                            rule=pending["rule"],
                            value=f"heal run {run.status.value}",
                            did=outcome(context.instance, run, day),
                            link=run_link(alerts.ui_url, run.run_id),
                        )
                    ],
                    context.log,
                )
                pending = None
        trigger, why = choose_trigger(
            failing_triggers(context.instance, city.key, triggers),
            handled,
            state.get("last_action_at"),
            cooldown,
            now,
            pending is not None,
        )
        requests = []
        if trigger is not None:
            day = parts.days.get_last_partition_key()
            run_key = f"{name}:{day}:{trigger.check}:{trigger.evaluation_id}"
            heal_id = f"{city.key}:{run_key}"
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=day,
                    asset_selection=selection,
                    tags={
                        HEAL_REASON_TAG: trigger.reason[:1000],
                        HEAL_ID_TAG: heal_id,
                        HEALED_BY_TAG: f"{city.key}_{name}",
                    },
                )
            )
            handled[f"{trigger.asset}:{trigger.check}"] = trigger.evaluation_id
            pending = {
                "heal_id": heal_id,
                "partition": day,
                "rule": trigger.check,
                "at": now.timestamp(),
            }
            alerts.deliver(
                [
                    Alert(
                        incident=heal_id,
                        kind=ACTION,
                        city=city.key,
                        asset=trigger.asset,
                        partition=trigger.partition,
                        rule=trigger.check,
                        value=trigger.value,
                        did=f"{did} for {day} (run key {run_key})",
                        link=asset_link(
                            alerts.ui_url, dg.AssetKey([city.key, trigger.asset]), trigger.partition
                        ),
                    )
                ],
                context.log,
            )
            state["last_action_at"] = now.timestamp()
        context.update_cursor(
            json.dumps(
                {
                    "handled": handled,
                    "pending": pending,
                    "last_action_at": state.get("last_action_at"),
                }
            )
        )
        return requests or dg.SkipReason(f"{city.key}_{name}: {why}")

    return heal


def _registry_metadata(
    instance: dg.DagsterInstance, city: str, run: dg.DagsterRun, day: str
) -> Mapping[str, Any] | None:
    """registered_model_version's metadata from this run, if the run got that far."""
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization and materialization.asset_key == dg.AssetKey(
            [city, "registered_model_version"]
        ):
            return materialization.metadata
    return None


def _step_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The first failed step of a run and the first line of its error."""
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        # Dagster wraps the asset's own exception ("Error occurred while executing op ..."):
        # the innermost cause is what the asset said.
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            message = error.message.strip().splitlines()[0] if error.message.strip() else ""
            return f"{event.step_key}: {message}"[:300]  # type: ignore[union-attr]
    return None


def _retrain_outcome(city: str) -> Callable[[dg.DagsterInstance, dg.DagsterRun, str], str]:
    def outcome(instance: dg.DagsterInstance, run: dg.DagsterRun, day: str) -> str:
        return retrain_outcome(
            run.status.value,
            _registry_metadata(instance, city, run, day),
            _step_failure(instance, run) if run.status != dg.DagsterRunStatus.SUCCESS else None,
        )

    return outcome


def _redeploy_outcome(city: str) -> Callable[[dg.DagsterInstance, dg.DagsterRun, str], str]:
    def outcome(instance: dg.DagsterInstance, run: dg.DagsterRun, day: str) -> str:
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey([city, "model_endpoint"]), "endpoint_answers")
        )
        answered = (
            record is not None
            and record.run_id == run.run_id
            and record.status.value == "SUCCEEDED"
        )
        if run.status == dg.DagsterRunStatus.SUCCESS and answered:
            return "champion re-deployed: the endpoint answers again"
        return (
            "re-deploy did not bring the endpoint back (see the run); predictions keep falling "
            "back to persistence, flagged — a person should look"
        )

    return outcome


def build_healing_sensors(
    city: City, parts: CityPartitions, settings: Settings, policy: HealPolicy | None = None
) -> list[dg.SensorDefinition]:
    """The city's three healing sensors (they need the `alerts` resource)."""
    policy = policy or HealPolicy()
    return [
        build_catch_up_sensor(city, parts, settings, policy),
        build_check_heal_sensor(
            city,
            parts,
            settings,
            name="heal_model",
            triggers=MODEL_TRIGGERS,
            chain=RETRAIN_CHAIN,
            cooldown=policy.retrain_cooldown,
            did="retrain → register (promotion gate) → deploy requested",
            outcome=_retrain_outcome(city.key),
            description="feature_drift at ERROR or a failing quality_above_gate → retrain, "
            "register through the promotion gate and deploy, for the newest day.",
        ),
        build_check_heal_sensor(
            city,
            parts,
            settings,
            name="heal_endpoint",
            triggers=ENDPOINT_TRIGGERS,
            chain=("model_endpoint",),
            cooldown=policy.redeploy_cooldown,
            did="re-deploy of the champion requested",
            outcome=_redeploy_outcome(city.key),
            description="a failing endpoint_answers or batch_success (endpoint dead, "
            "predictions falling back) → re-deploy the champion for the newest day.",
        ),
    ]
