"""Alerts: one message when an incident starts, one when it resolves, never a repeat.

dagster-slack ships only a run-failure sensor; this module watches what an on-call engineer
needs — freshness WARN/FAIL transitions, failed ERROR-severity checks, failed runs — and the
healing sensors (sensors.py) report every action they take through the same `alerts`
resource. Delivery: the Slack Web API (`dagster_slack.SlackResource`, a bot token) or an
incoming webhook; every alert is also appended to an alerts file under BIKESHARE_HOME and
logged, so an alert is never dropped — not when Slack is unset, not when Slack fails.

The incident bookkeeping is pure (`reconcile`), the Dagster reads are in `observe_*`, and the
sensor only glues them together with its cursor as the memory of what is open.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (  # no public equivalent
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)

from bikeshare_assets.redaction import REDACTED, redact_url
from bikeshare_assets.settings import Settings

ALERTS_RESOURCE_KEY = "alerts"
ALERT_SENSOR_NAME = "bikeshare_alerts"
# Runs the healing sensors launch carry these; their outcome is reported by the sensor that
# launched them, so the run-failure watch leaves them out (one message, not two).
HEAL_ID_TAG = "bikeshare/heal_id"
HEAL_REASON_TAG = "bikeshare/heal_reason"
# The snapshot chain the catch-up sensor keeps whole (sensors.py), upstream first.
SNAPSHOT_CHAIN = ("raw_station_status", "station_features", "stockout_predictions")

FIRING, RESOLVED, ACTION = "firing", "resolved", "action"
HEAL_FAILED = "heal_failed"  # a healing run ended without fixing it: a person should look
_ICONS = {
    FIRING: ":red_circle:",
    RESOLVED: ":large_green_circle:",
    ACTION: ":wrench:",
    HEAL_FAILED: ":red_circle:",
}
_WARN_ICON = ":large_yellow_circle:"
# Freshness states worth a message; PASS resolves, UNKNOWN / NOT_APPLICABLE say nothing.
_STALE_STATES = ("WARN", "FAIL")


@dataclass(frozen=True)
class Alert:
    """One message. `incident` ties a firing alert to its resolution (and healing actions to
    the incident they answer); `did` says what the system already did about it."""

    incident: str
    kind: str  # FIRING | RESOLVED | ACTION | HEAL_FAILED
    city: str
    asset: str
    partition: str | None
    rule: str
    value: str
    did: str
    link: str
    severity: str = "ERROR"  # ERROR | WARN: a WARN firing gets a yellow icon

    @property
    def title(self) -> str:
        where = f"{self.city}/{self.asset}" + (f" {self.partition}" if self.partition else "")
        verb = {
            FIRING: "failing",
            RESOLVED: "resolved",
            ACTION: "healing",
            HEAL_FAILED: "not healed",
        }[self.kind]
        return f"{where}: {self.rule} {verb}"

    def text(self) -> str:
        """The Slack message (mrkdwn): city, asset, partition, rule, value, action, link."""
        icon = _WARN_ICON if self.kind == FIRING and self.severity == "WARN" else _ICONS[self.kind]
        return "\n".join(
            [
                f"{icon} *{self.title}*",
                f"*city* {self.city} · *asset* {self.asset} · *partition* {self.partition or '-'}",
                f"*rule* {self.rule} · *value* {self.value}",
                f"*system* {self.did}",
                f"<{self.link}|Open in Dagster>",
            ]
        )


def asset_link(ui_url: str, asset_key: dg.AssetKey, partition: str | None = None) -> str:
    """The asset's page in the Dagster UI (its partitions view at `partition`)."""
    path = "/".join(quote(part, safe="") for part in asset_key.path)
    query = f"?view=partitions&partition={quote(partition, safe='')}" if partition else ""
    return f"{ui_url.rstrip('/')}/assets/{path}{query}"


def run_link(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


# --- incident bookkeeping (pure) -------------------------------------------------------------


@dataclass
class Reconciled:
    to_send: list[Alert] = field(default_factory=list)
    still_open: dict[str, dict[str, Any]] = field(default_factory=dict)


def reconcile(
    open_incidents: Mapping[str, Mapping[str, Any]], failing: Sequence[Alert]
) -> Reconciled:
    """Compare what is failing now with what was open at the last tick: a new incident (or one
    whose rule changed, e.g. freshness WARN -> FAIL) is sent, one that stopped failing gets a
    resolved message, one still failing as before gets nothing."""
    out = Reconciled()
    now_failing = {a.incident: a for a in failing}
    for incident, alert in now_failing.items():
        before = open_incidents.get(incident)
        if before is None or before.get("rule") != alert.rule:
            out.to_send.append(alert)
        out.still_open[incident] = {
            "rule": alert.rule,
            "city": alert.city,
            "asset": alert.asset,
            "partition": alert.partition,
            "link": alert.link,
        }
    for incident, before in open_incidents.items():
        if incident in now_failing:
            continue
        out.to_send.append(
            Alert(
                incident=incident,
                kind=RESOLVED,
                city=before.get("city", "?"),
                asset=before.get("asset", "?"),
                partition=before.get("partition"),
                rule=before.get("rule", "?"),
                value="passing again",
                did="nothing more to do",
                link=before.get("link", ""),
            )
        )
    return out


# --- incident groups (pure) -------------------------------------------------------------------

# What the on-call engineer sees as ONE incident. A feed outage fails the raw runs, turns
# raw and predictions stale and starts a catch-up: four detectors, one problem. A dead
# endpoint is seen by its heal and its checks. Each group gets one message when its first
# member fires and one when its last member has resolved (held for one more alert-sensor
# tick, so a hand-over between detectors — the runs succeed again, the catch-up is still
# filling — is not a resolution followed by a new alert).
ENDPOINT_RULES = ("endpoint_answers", "batch_success")
# prediction_drift is the same problem seen at the model's output: the served model scores
# inputs unlike its training data (feature_drift sees the inputs themselves).
MODEL_RULES = ("feature_drift", "prediction_drift", "quality_above_gate")
# Alert-sensor ticks a group stays empty before its resolution is sent (30 s apart).
RESOLVE_HOLD_TICKS = 2


def incident_group(alert: Alert) -> str | None:
    """The operator-level incident `alert` belongs to, or None when it stands alone."""
    if alert.incident.startswith("catch_up:") and ":gave_up:" in alert.incident:
        return None  # a partition given up on needs a person: always its own message
    assets = {a.strip() for a in alert.asset.split(",")}
    rule = alert.rule.removeprefix("check ").split(" ")[0]
    if rule in ENDPOINT_RULES:
        return f"{alert.city}:endpoint"
    if rule in MODEL_RULES:
        return f"{alert.city}:model"
    if assets <= set(SNAPSHOT_CHAIN) and (
        alert.rule.startswith(("freshness", "run of")) or alert.incident.startswith("catch_up:")
    ):
        return f"{alert.city}:snapshots"
    return None


@dataclass
class Folded:
    """What to do with one alert of a group: send it now, or only record it."""

    send: bool
    note: str  # why (written to the alerts file)


def fold(groups: dict[str, dict[str, Any]], group: str, alert: Alert, now: datetime) -> Folded:
    """Update the open groups with `alert` (in place) and say whether it is a message."""
    open_group = groups.get(group)
    if alert.kind in (FIRING, ACTION):
        if open_group is None:
            groups[group] = {
                "opened_at": now.isoformat(),
                "severity": alert.severity,
                "members": {alert.incident: alert.rule},
                "seen": [alert.rule],
                "first": {"asset": alert.asset, "rule": alert.rule, "link": alert.link},
                "resolving": None,
                "dids": [],
            }
            return Folded(True, f"opens incident {group}")
        open_group["members"][alert.incident] = alert.rule
        if alert.rule not in open_group["seen"]:
            open_group["seen"].append(alert.rule)
        reopened = open_group.pop("resolving", None) is not None
        open_group["resolving"] = None
        if alert.kind == FIRING and alert.severity == "ERROR" and open_group["severity"] == "WARN":
            open_group["severity"] = "ERROR"
            return Folded(True, f"escalates incident {group} to ERROR")
        return Folded(False, f"part of open incident {group}" + (" (reopened)" if reopened else ""))
    # RESOLVED or HEAL_FAILED
    if open_group is None:
        return Folded(True, "no open incident to fold into")
    open_group["members"].pop(alert.incident, None)
    if alert.did and alert.did != "nothing more to do" and alert.did not in open_group["dids"]:
        open_group["dids"].append(alert.did)
    if alert.kind == HEAL_FAILED:
        if not open_group["members"]:
            groups.pop(group)  # not healed: this message ends it, a person takes over
        return Folded(True, f"a heal in incident {group} failed")
    if open_group["members"]:
        return Folded(False, f"incident {group} still open: {sorted(open_group['members'])}")
    open_group["resolving"] = {"alert": asdict(alert), "ticks": 0, "at": now.isoformat()}
    return Folded(False, f"last member of incident {group}: resolution held one tick")


def release(groups: dict[str, dict[str, Any]], now: datetime) -> list[Alert]:
    """One alert-sensor tick: the resolution of every group that stayed empty long enough
    (removed from `groups`)."""
    out = []
    for group, state in list(groups.items()):
        resolving = state.get("resolving")
        if not resolving:
            continue
        resolving["ticks"] += 1
        if resolving["ticks"] < RESOLVE_HOLD_TICKS:
            continue
        last = Alert(**resolving["alert"])
        opened = datetime.fromisoformat(state["opened_at"])
        minutes = (datetime.fromisoformat(resolving["at"]) - opened).total_seconds() / 60
        out.append(
            replace(
                last,
                incident=group,
                asset=state["first"]["asset"],
                rule=state["first"]["rule"],
                value=f"open {minutes:.1f} min ({opened:%H:%M:%S} to "
                f"{datetime.fromisoformat(resolving['at']):%H:%M:%S} UTC); seen: "
                + ", ".join(state["seen"]),
                did="; ".join(state["dids"]) or "nothing more to do",
                link=state["first"]["link"],
            )
        )
        groups.pop(group)
    return out


# --- delivery ---------------------------------------------------------------------------------


class AlertChannel(dg.ConfigurableResource):
    """Where alerts go: Slack Web API (bot token) or an incoming webhook, and always the
    alerts file and the log. The token and webhook URL never appear in a log or the file."""

    slack_token: str = ""
    slack_channel: str = "#bikeshare-alerts"
    slack_webhook_url: str = ""
    slack_api_url: str = ""
    alerts_file: str
    ui_url: str = "http://127.0.0.1:3000"

    @property
    def slack_target(self) -> str:
        if self.slack_token:
            return f"Slack Web API ({self.slack_channel})"
        if self.slack_webhook_url:
            return "Slack incoming webhook"
        return "none"

    @property
    def incidents_file(self) -> Path:
        """The open incident groups (beside the alerts file), shared by every sensor."""
        return Path(self.alerts_file).with_name("incidents.json")

    @contextmanager
    def _groups(self) -> Iterator[dict[str, dict[str, Any]]]:
        path = self.incidents_file
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # sensors may run in parallel threads/processes
            groups = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            yield groups
            # Replaced, never rewritten in place: a reader without the lock (the dashboard,
            # the drills) sees the old state or the new one, not an empty file.
            partial = path.with_suffix(".json.partial")
            partial.write_text(json.dumps(groups, indent=1, default=str), encoding="utf-8")
            os.replace(partial, path)

    def deliver(self, alerts: Iterable[Alert], log: logging.Logger | Any = None) -> list[dict]:
        """Send each alert — or, when it belongs to an incident group already open (see
        `incident_group`), only record it; return what was recorded for each (also appended
        to the file)."""
        records = []
        for alert in alerts:
            group = incident_group(alert)
            folded = Folded(True, "")
            if group is not None:
                with self._groups() as groups:
                    folded = fold(groups, group, alert, datetime.now(UTC))
            records.append(self._send(alert, log, folded, group))
        return records

    def release_resolved(self, log: logging.Logger | Any = None) -> list[dict]:
        """Called once per alert-sensor tick: send the resolution of each incident group whose
        last member resolved and stayed resolved."""
        with self._groups() as groups:
            resolved = release(groups, datetime.now(UTC))
        return [
            self._send(a, log, Folded(True, f"incident {a.incident} resolved"), a.incident)
            for a in resolved
        ]

    def _send(self, alert: Alert, log: Any, folded: Folded, group: str | None) -> dict:
        log = log or logging.getLogger(__name__)
        error = None
        delivered = "file"
        if folded.send and (self.slack_token or self.slack_webhook_url):
            try:
                self._post(alert)
                delivered = "slack_api" if self.slack_token else "slack_webhook"
            except Exception as exc:  # Slack down or refusing: the file still has it
                error = self._redact(f"{type(exc).__name__}: {exc}")[:500]
        record = {
            "at": datetime.now(UTC).isoformat(),
            **asdict(alert),
            "text": alert.text(),
            "delivered": delivered,
            # False: recorded only, folded into the open incident `group` (no message)
            "sent": folded.send,
            **({"group": group, "group_note": folded.note} if group else {}),
            **({"slack_error": error} if error else {}),
        }
        self._append(record)
        line = f"alert {alert.kind} [{alert.incident}] {alert.title}: {alert.value} — {alert.did}"
        if error:
            log.error(f"{line}. Slack delivery failed ({error}); written to {self.alerts_file}.")
        elif not folded.send:
            log.info(f"{line} (not sent: {folded.note})")
        elif alert.kind == FIRING:
            log.warning(f"{line} (sent to {delivered})")
        else:
            log.info(f"{line} (sent to {delivered})")
        return record

    def _post(self, alert: Alert) -> None:
        # slack_sdk is imported here, not when the definitions load.
        if self.slack_token:
            from dagster_slack import SlackResource

            client = SlackResource(token=self.slack_token).get_client()
            if self.slack_api_url:
                client.base_url = self.slack_api_url.rstrip("/") + "/"
            client.chat_postMessage(channel=self.slack_channel, text=alert.text())
            return
        from slack_sdk.webhook import WebhookClient

        response = WebhookClient(self.slack_webhook_url).send(text=alert.text())
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered HTTP {response.status_code}: {response.body}")

    def _append(self, record: Mapping[str, Any]) -> None:
        path = Path(self.alerts_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def _redact(self, text: str) -> str:
        for secret in (self.slack_token, self.slack_webhook_url):
            if secret:
                text = text.replace(secret, REDACTED)
        return redact_url(text)


def build_alert_channel(settings: Settings) -> AlertChannel:
    """The `alerts` resource. A set token or webhook is passed as a Dagster EnvVar, so its
    value never lands in the definitions (the UI's resource page shows the variable name)."""
    return AlertChannel(
        slack_token=dg.EnvVar("BIKESHARE_SLACK_TOKEN") if settings.slack_token else "",
        slack_channel=settings.slack_channel,
        slack_webhook_url=dg.EnvVar("BIKESHARE_SLACK_WEBHOOK_URL")
        if settings.slack_webhook_url
        else "",
        slack_api_url=settings.slack_api_url or "",
        alerts_file=str(settings.alerts_file),
        ui_url=settings.dagster_ui_url,
    )


def read_alerts(path: Path) -> list[dict]:
    """The alerts file's records, oldest first (empty when nothing was ever alerted)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- what is failing now (Dagster reads) ------------------------------------------------------


def _city_of(key: dg.AssetKey) -> str:
    return key.path[0] if len(key.path) > 1 else "-"


def _asset_of(key: dg.AssetKey) -> str:
    return "/".join(key.path[1:]) if len(key.path) > 1 else key.to_user_string()


def observe_freshness(
    instance: dg.DagsterInstance, asset_keys: Sequence[dg.AssetKey], ui_url: str
) -> list[Alert]:
    """Assets whose FreshnessPolicy is WARN or FAIL now (the daemon keeps the state)."""
    alerts = []
    for key, record in instance.get_freshness_state_records(list(asset_keys)).items():
        state = record.freshness_state.value
        if state not in _STALE_STATES:
            continue
        alerts.append(
            Alert(
                incident=f"freshness:{key.to_user_string()}",
                kind=FIRING,
                city=_city_of(key),
                asset=_asset_of(key),
                partition=None,
                rule=f"freshness {state}",
                value=f"no new materialization within the policy's {state.lower()} window "
                f"(state since {record.updated_at.isoformat(timespec='seconds')})",
                did="the catch-up sensor (heal_missing_partitions) requests the missing "
                "snapshots; a live window the feed did not answer stays a source gap"
                if _asset_of(key) in SNAPSHOT_CHAIN
                else "no automatic action beyond the asset's own automation: see the runbook",
                link=asset_link(ui_url, key),
                severity="WARN" if state == "WARN" else "ERROR",
            )
        )
    return alerts


def _value_of(metadata: Mapping[str, Any], description: str | None) -> str:
    """A short 'value' for the message: the evaluation's description, else its metadata."""
    if description:
        return description[:300]
    shown = []
    for name, value in list(metadata.items())[:6]:
        raw = getattr(value, "value", value)
        shown.append(f"{name}={raw}")
    return ", ".join(shown)[:300] or "failed"


def observe_failed_checks(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey], ui_url: str
) -> list[Alert]:
    """Checks whose newest evaluation (over all partitions) failed with ERROR severity. A later
    passing evaluation, e.g. the next snapshot, resolves the incident."""
    alerts = []
    for check_key in check_keys:
        latest = latest_check_evaluation(instance, check_key)
        if latest is None or latest[1].passed:
            continue
        evaluation = latest[1]
        if evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        key = check_key.asset_key
        alerts.append(
            Alert(
                incident=f"check:{key.to_user_string()}:{check_key.name}",
                kind=FIRING,
                city=_city_of(key),
                asset=_asset_of(key),
                partition=evaluation.partition,
                rule=f"check {check_key.name} (ERROR)",
                value=_value_of(evaluation.metadata, evaluation.description),
                did=CHECK_ACTIONS.get(check_key.name, "nothing automatic: see the runbook"),
                link=asset_link(ui_url, key, evaluation.partition),
            )
        )
    return alerts


# What the healing sensors do about each check (kept beside the check alerts so the message
# says it; the runbook repeats it for a person).
CHECK_ACTIONS = {
    "feature_drift": "the heal_model sensor retrains, registers and deploys for the newest day",
    "quality_above_gate": "the heal_model sensor retrains, registers and deploys for the newest day",
    "endpoint_answers": "the heal_endpoint sensor re-deploys the champion",
    "batch_success": "the heal_endpoint sensor re-deploys the champion; predictions fall "
    "back to persistence meanwhile, flagged source=fallback",
}


def latest_check_evaluation(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey
) -> tuple[Any, dg.AssetCheckEvaluation] | None:
    """The newest *completed* evaluation of a check (over all partitions) with its record
    (`.id`, `.event.timestamp`), or None if it never completed. Not Dagster's newest record:
    while the next partition runs, that is its planned evaluation (no result yet), which
    would read as "passing again" and close an incident only to reopen it minutes later."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
    )
    record = history[0] if history else None
    event = record.event.dagster_event if record and record.event else None
    evaluation = event.event_specific_data if event else None
    return (record, evaluation) if isinstance(evaluation, dg.AssetCheckEvaluation) else None


def run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.AssetKey]:
    """The assets a run was for: its selection, or (an ad-hoc run of a whole asset job) the
    assets it planned to materialize."""
    if run.asset_selection:
        keys = set(run.asset_selection)
    else:
        keys = {
            entry.dagster_event.asset_key
            for entry in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
            )
            if entry.dagster_event is not None and entry.dagster_event.asset_key is not None
        }
    return sorted(keys, key=lambda k: k.to_user_string())


def run_incident_key(run: dg.DagsterRun, assets: Sequence[dg.AssetKey]) -> str:
    """Runs of the same job over the same assets are one incident, whatever the partition: a
    feed down for three cadences is one alert, resolved by the next run that succeeds."""
    return f"run:{run.job_name}:{','.join(k.to_user_string() for k in assets)}"


def observe_runs(
    instance: dg.DagsterInstance,
    open_runs: Mapping[str, Mapping[str, Any]],
    after: float,
    ui_url: str,
) -> tuple[list[Alert], dict[str, dict[str, Any]], float]:
    """Failed runs still unanswered by a later success of the same job and assets (as alerts
    and as the state the next tick starts from), and the newest update time seen. Healing runs
    are left to the sensor that launched them."""
    failing = {k: dict(v) for k, v in open_runs.items()}
    newest = after
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS],
            updated_after=datetime.fromtimestamp(after, UTC),
        ),
        order_by="update_timestamp",
        ascending=True,
        limit=500,
    )
    for record in records:
        run = record.dagster_run
        newest = max(newest, record.update_timestamp.timestamp())
        if HEAL_ID_TAG in run.tags:
            continue
        keys = run_assets(instance, run)
        incident = run_incident_key(run, keys)
        if run.status == dg.DagsterRunStatus.SUCCESS:
            failing.pop(incident, None)
            continue
        first = keys[0] if keys else None
        failing[incident] = {
            "city": _city_of(first) if first else "-",
            "asset": ", ".join(_asset_of(k) for k in keys) or run.job_name,
            "partition": run.tags.get("dagster/partition")
            or _range(run.tags.get("dagster/asset_partition_range_start"), run.tags),
            "value": _first_failure(instance, run.run_id),
            "link": run_link(ui_url, run.run_id),
            "job": run.job_name,
        }
    alerts = [
        Alert(
            incident=incident,
            kind=FIRING,
            city=info["city"],
            asset=info["asset"],
            partition=info["partition"],
            rule=f"run of {info['job']}",
            value=info["value"],
            did="nothing automatic for this run; the catch-up sensor retries missing partitions",
            link=info["link"],
        )
        for incident, info in failing.items()
    ]
    return alerts, failing, newest


def _range(start: str | None, tags: Mapping[str, str]) -> str | None:
    return f"{start}..{tags.get('dagster/asset_partition_range_end')}" if start else None


def _first_failure(instance: dg.DagsterInstance, run_id: str) -> str:
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        error = entry.dagster_event.step_failure_data.error if entry.dagster_event else None
        while error is not None and error.cause is not None:
            error = error.cause  # the user code's own exception, not Dagster's wrapper
        if error is not None:
            return redact_url(error.message.strip().splitlines()[0])[:300]
    return "the run failed (see its event log)"


# --- the sensor -------------------------------------------------------------------------------


def _load_cursor(raw: str | None) -> dict[str, Any]:
    state = json.loads(raw) if raw else {}
    return {
        "open": state.get("open", {}),
        "runs": state.get("runs", {}),
        "runs_after": state.get("runs_after", datetime.now(UTC).timestamp() - 3600),
    }


def build_alert_sensor(
    settings: Settings, minimum_interval_seconds: int = 30
) -> dg.SensorDefinition:
    """One sensor for every city: what failed since the last tick, what resolved."""

    @dg.sensor(
        name=ALERT_SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING
        if settings.runs_itself
        else dg.DefaultSensorStatus.STOPPED,
        description="Slack alerts (or the alerts file): freshness WARN/FAIL, failed "
        "ERROR-severity checks and failed runs — one message per incident, one when it "
        "resolves. Healing actions are reported by the healing sensors.",
    )
    def bikeshare_alerts(context: dg.SensorEvaluationContext, alerts: AlertChannel):
        state = _load_cursor(context.cursor)
        graph = context.repository_def.asset_graph
        asset_keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
        failing = observe_freshness(context.instance, asset_keys, alerts.ui_url)
        failing += observe_failed_checks(
            context.instance,
            sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)),
            alerts.ui_url,
        )
        run_alerts, open_runs, runs_after = observe_runs(
            context.instance, state["runs"], state["runs_after"], alerts.ui_url
        )
        failing += run_alerts
        result = reconcile(state["open"], failing)
        alerts.deliver(result.to_send, context.log)
        released = alerts.release_resolved(context.log)
        context.update_cursor(
            json.dumps({"open": result.still_open, "runs": open_runs, "runs_after": runs_after})
        )
        if not result.to_send and not released:
            return dg.SkipReason(f"{len(result.still_open)} incident(s) open, nothing new")
        return dg.SkipReason(
            f"{len(result.to_send)} alert(s) and {len(released)} incident resolution(s) to "
            f"{alerts.slack_target} (grouped ones to the alerts file only)"
        )

    return bikeshare_alerts
