"""Declarative automation and freshness policies: the one place that says when each asset
runs by itself and how stale it may get.

Raw assets keep their schedules (automation/schedules.py); everything downstream is declared
here by asset name and applied to whatever assets a city has (`apply_policies`), so the asset
factories stay free of scheduling concerns and an asset that does not exist (yet) costs
nothing. Each condition carries a label the Dagster UI shows beside the asset, and
docs/automation.md is generated from `policy_rows` (test_docs.py keeps it in sync).

Rules the conditions follow:

- Nothing runs twice for the same partition. The snapshot and hour layers (features,
  labels, predictions, outcomes, drift) are computed once per partition: the condition holds
  only while the partition has never been materialized, and is re-armed only by an upstream
  update, never by time passing. A partition that is requested and not yet stored is "in
  progress" for the daemon, so the next tick does not request it again.
- Late data is still picked up, within a lookback: a partition whose inputs land late (a feed
  outage healed, a slow run) is requested when they land, as long as it is within
  `CATCH_UP` of the newest window (labels and outcomes: `HORIZON + CATCH_UP`, since they
  mature 30 minutes after their snapshot). Dagster's `eager()` alone considers only the newest
  window, which would never label anything.
- Labels of snapshot t read raw status up to t + 30 min: they are not even considered until
  t + 30 is a partition (`~in_latest_time_window(HORIZON)`), then wait until raw t .. t + 30
  are all stored. Without the exclusion a live partition t, whose t + 30 does not exist yet,
  would look complete (its future deps are dropped as non-existent) and be labelled unmatured
  once and never again.
- The model retrains once a day on a cron in the city's time zone (`RETRAIN_CRON`, quiet
  hours), once fresh features and labels have landed since the tick; the registered version
  and the endpoint follow each new model, the endpoint only when the promotion gate passed.
- Replay partitions are historical: the conditions only look at the newest windows of the
  recording, so turning automation on in a replay never backfills the period (that is what
  `bikeshare demo` / `bikeshare materialize` do, as single-run backfills); it starts stopped
  there anyway (`Settings.runs_itself`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg

from bikeshare_assets.automation.freshness import Freshness, freshness_for  # noqa: F401
from bikeshare_assets.features.labels import HORIZON

AC = dg.AutomationCondition

# How far back a snapshot or hour partition is still picked up when its inputs land late.
# Two hours covers a feed outage the healing sensors recover from and a daemon restart; older
# windows are the healing sensors' and the CLI's job (a backfill), not a per-tick evaluation.
CATCH_UP = timedelta(hours=2)
# Daily retraining, in the city's own time zone: 04:00 is the quietest hour of a bike-share
# day, and the run (tuning included) ends well before the morning rush it predicts.
RETRAIN_CRON = "0 4 * * *"
# The 24-hour model quality is a rolling measure of the day so far: re-measured once an hour
# (its one deliberate re-run of a partition), when new outcomes have matured since the tick.
QUALITY_CRON = "0 * * * *"
AUTOMATION_SENSOR_INTERVAL_S = 30


@dataclass(frozen=True)
class CityContext:
    """What a city's conditions and policies depend on."""

    key: str
    timezone: str
    cadence: timedelta


def _key(city_key: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([city_key, name])


def once_per_partition(
    lookback: timedelta, needs: Sequence[dg.AssetKey] | None = None
) -> dg.AutomationCondition:
    """`eager()` made safe for a stream of time partitions: any partition within `lookback`
    of the newest window, never materialized, whose required upstream partitions (`needs`,
    default all deps) are stored and not being rewritten, is requested once after an
    upstream update. Deps outside `needs` neither hold it back when missing nor while a run
    rewrites them (predictions keep flowing while the daily retrain run has the endpoint
    in progress)."""
    deps_missing, deps_in_progress = AC.any_deps_missing(), AC.any_deps_in_progress()
    if needs is not None:
        deps_missing = deps_missing.allow(dg.AssetSelection.assets(*needs))
        deps_in_progress = deps_in_progress.allow(dg.AssetSelection.assets(*needs))
    return (
        AC.in_latest_time_window(lookback).with_label(f"within {_human(lookback)} of the newest")
        & AC.missing().with_label("never materialized")
        & (AC.newly_missing() | AC.any_deps_updated()).since_last_handled()
        & ~deps_missing
        & ~deps_in_progress
        & ~AC.in_progress()
    )


def matured(condition: dg.AutomationCondition) -> dg.AutomationCondition:
    """Only partitions whose t + HORIZON is a partition already (labels need raw at t + 30)."""
    return condition & ~AC.in_latest_time_window(HORIZON).with_label(
        f"t + {_human(HORIZON)} not yet a partition"
    )


def _features(city: CityContext) -> dg.AutomationCondition:
    # Not weather: an hour's weather lands after the hour, and features take the newest hour
    # already stored (an as-of join within WEATHER_TOLERANCE), so waiting would only delay.
    needs = [_key(city.key, "raw_station_status"), _key(city.key, "raw_station_information")]
    return once_per_partition(CATCH_UP, needs).with_label(
        "follows raw_station_status: once per snapshot, when its raw status (and the lookback "
        f"before it) and station list are stored; late snapshots within {_human(CATCH_UP)}"
    )


def _labels(city: CityContext) -> dg.AutomationCondition:
    return matured(once_per_partition(HORIZON + CATCH_UP)).with_label(
        f"matures at t + {_human(HORIZON)}: once per snapshot, when raw status t .. t + "
        f"{_human(HORIZON)} is stored; late-maturing snapshots within "
        f"{_human(HORIZON + CATCH_UP)}"
    )


def _predictions(city: CityContext) -> dg.AutomationCondition:
    # The endpoint's day partition is ordering, not data: a new day's model may not be
    # deployed yet, and the champion (or the flagged fallback) keeps scoring meanwhile.
    return once_per_partition(CATCH_UP, [_key(city.key, "station_features")]).with_label(
        "follows station_features: once per snapshot, scored by the deployed champion; late "
        f"snapshots within {_human(CATCH_UP)}"
    )


def _outcomes(city: CityContext) -> dg.AutomationCondition:
    return once_per_partition(HORIZON + CATCH_UP).with_label(
        "follows matured labels: once per snapshot, when its predictions and labels are stored; "
        f"within {_human(HORIZON + CATCH_UP)}"
    )


def _drift(city: CityContext) -> dg.AutomationCondition:
    # Whatever else drift_report reads (the champion's reference), it waits for the hour's
    # features and predictions only.
    needs = [_key(city.key, "station_features"), _key(city.key, "stockout_predictions")]
    return once_per_partition(CATCH_UP, needs).with_label(
        "follows the hour's predictions: once per hour, when every snapshot of the hour is "
        f"featurized and scored; late hours within {_human(CATCH_UP)}"
    )


def _model(city: CityContext) -> dg.AutomationCondition:
    return AC.on_cron(RETRAIN_CRON, city.timezone).with_label(
        f"retrains daily at {RETRAIN_CRON} ({city.timezone}) for the newest day, once features and "
        "labels have updated since the tick"
    )


def _quality(city: CityContext) -> dg.AutomationCondition:
    return AC.on_cron(QUALITY_CRON, "UTC").with_label(
        "re-measured hourly for the newest day, once new outcomes have matured since the tick"
    )


def _registered(city: CityContext) -> dg.AutomationCondition:
    return AC.eager().with_label("follows stockout_model: registers each new model")


def _endpoint(city: CityContext) -> dg.AutomationCondition:
    return (AC.eager() & AC.all_deps_blocking_checks_passed()).with_label(
        "follows registered_model_version: deploys a new version once the promotion gate "
        "passed; a refused challenger leaves the champion serving"
    )


ConditionFor = Callable[[CityContext], dg.AutomationCondition]
# asset name -> its condition. Raw assets are absent on purpose: they keep their schedules.
CONDITIONS: dict[str, ConditionFor] = {
    "station_features": _features,
    "stockout_labels": _labels,
    "stockout_predictions": _predictions,
    "prediction_outcomes": _outcomes,
    "drift_report": _drift,
    "stockout_model": _model,
    "model_quality": _quality,
    "registered_model_version": _registered,
    "model_endpoint": _endpoint,
}


def apply_policies(
    assets: Sequence[dg.AssetsDefinition],
    cities: dict[str, CityContext],
    *,
    freshness: bool,
) -> list[dg.AssetsDefinition]:
    """Every asset with its condition (and, when `freshness`, its freshness policy), matched by
    city (the key's first part) and asset name (its last). `freshness` is off in the local
    replay: nothing refreshes there by itself, so every policy would only ever say FAIL."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        city = cities.get(spec.key.path[0])
        if city is None:
            return spec
        name = spec.key.path[-1]
        changes: dict = {}
        if name in CONDITIONS:
            changes["automation_condition"] = CONDITIONS[name](city)
        windows = freshness_for(city.cadence).get(name)
        if freshness and windows is not None:
            changes["freshness_policy"] = dg.FreshnessPolicy.time_window(
                fail_window=windows.fail, warn_window=windows.warn
            )
        return spec.replace_attributes(**changes) if changes else spec

    return [a.map_asset_specs(attach) for a in assets]


def automation_sensors(
    cities: Sequence[str], *, running: bool
) -> list[dg.AutomationConditionSensorDefinition]:
    """One automation sensor per city (`<city>_automation`): a city whose feed is down can be
    paused without stopping the others, and each tick evaluates one city's graph."""
    status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
    return [
        dg.AutomationConditionSensorDefinition(
            automation_sensor_name(city),
            target=dg.AssetSelection.key_prefixes([city]),
            default_status=status,
            minimum_interval_seconds=AUTOMATION_SENSOR_INTERVAL_S,
            # Runs, not a backfill, when a tick requests several partitions (the windows after
            # a feed outage, a late drift window): Dagster's backfill refuses the whole batch
            # when a snapshot's lookback reaches before the live start ("depends on
            # non-existent partitions"), and the conditions count it as handled, so those
            # windows were left to the catch-up and their drift reports never made.
            emit_backfills=False,
            description=f"{city}: evaluates the declarative automation of the city's assets "
            "(docs/automation.md). On by itself in live mode and on staging/prod; in the "
            "local replay turn it on in the UI to let the newest windows follow by themselves.",
        )
        for city in cities
    ]


def automation_sensor_name(city: str) -> str:
    return f"{city}_automation"


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)} d"
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    if minutes > 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min"


def policy_rows(cadence: timedelta) -> list[tuple[str, str, str]]:
    """(asset, condition label, freshness) for docs/automation.md, from the same tables."""
    context = CityContext(key="<city>", timezone="<city timezone>", cadence=cadence)
    windows = freshness_for(cadence)
    names = ["raw_station_information", "raw_station_status", "raw_weather", *CONDITIONS]
    rows = []
    for name in names:
        condition = CONDITIONS[name](context).get_label() if name in CONDITIONS else "its schedule"
        fresh = windows.get(name)
        shown = (
            f"warn {_human(fresh.warn)}, fail {_human(fresh.fail)}: {fresh.why}" if fresh else "—"
        )
        rows.append((name, condition or "", shown))
    return rows
