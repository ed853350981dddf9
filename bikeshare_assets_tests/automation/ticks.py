"""Drive Dagster's own automation evaluation tick by tick on a real instance.

`Ticks` calls `dg.evaluate_automation_conditions` (what the automation sensor runs) with an
explicit evaluation time and the cursor of the previous tick, and reports "data landed" with
`instance.report_runless_asset_event` — Dagster's API for a materialization that happened
outside a run — so the conditions see exactly what they would see in a live deployment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from bikeshare_assets.automation.policies import CityContext, apply_policies
from bikeshare_assets.cities import PARTITION_FMT
from bikeshare_assets.definitions import build_definitions
from bikeshare_assets.partitions import city_partitions
from bikeshare_assets_tests.conftest import settings_for, write_cities

CITY = "paris"
LIVE_START = "2026-11-30-00:00"


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey([CITY, name])


def pkey(ts: datetime) -> str:
    return ts.strftime(PARTITION_FMT)


def snapshots(first: datetime, last: datetime, step: timedelta = timedelta(minutes=5)):
    """Partition keys first, first + step, ..., last."""
    out, at = [], first
    while at <= last:
        out.append(pkey(at))
        at += step
    return out


def live_definitions(home: Path, tmp_path: Path, *, with_drift_report: bool = False):
    """The project's definitions in live mode for one 5-minute city. `with_drift_report` adds
    an hourly drift_report of the shape monitoring builds (features + predictions of the hour)
    when the checkout has none yet, with the policies applied the way definitions.py does."""
    cities = write_cities(tmp_path / "live.toml", live_start=LIVE_START)
    settings = settings_for(home, cities, BIKESHARE_SOURCE="live")
    defs = build_definitions(settings)
    if not with_drift_report or defs.resolve_asset_graph().has(key("drift_report")):
        return defs
    city = settings.cities[CITY]
    parts = city_partitions(city, settings.source)

    @dg.asset(
        key=key("drift_report"),
        partitions_def=parts.hours,
        deps=[key("station_features"), key("stockout_predictions")],
    )
    def drift_report() -> None:
        raise NotImplementedError("only evaluated, never run")

    contexts = {CITY: CityContext(CITY, city.timezone, parts.cadence)}
    drift = apply_policies([drift_report], contexts, freshness=True)
    return dg.Definitions.merge(defs, dg.Definitions(assets=drift))


@dataclass
class Ticks:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    cursor: object = None
    log: list[dict[str, list[str]]] = field(default_factory=list)

    def tick(self, at: datetime) -> dict[str, list[str]]:
        """One evaluation of every condition at `at`: requested partition keys by asset name."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            evaluation_time=at,
            cursor=self.cursor,  # type: ignore[arg-type]
        )
        self.cursor = result.cursor
        requested = {
            r.key.path[-1]: sorted(result.get_requested_partitions(r.key))
            for r in result.results
            if isinstance(r.key, dg.AssetKey) and result.get_num_requested(r.key)
        }
        self.log.append(requested)
        return requested

    def landed(self, name: str, partitions: Iterable[str]) -> None:
        """Materializations of `name` stored outside a run (a schedule's run did it)."""
        for partition in partitions:
            self.instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key(name), partition=partition)
            )

    def run_queued(self, name: str, partition: str) -> dg.DagsterRun:
        """A real run, created and not finished, planned to materialize `name`'s `partition`:
        Dagster counts that partition as in progress until the run ends."""
        job = self.defs.resolve_implicit_job_def_def_for_assets([key(name)])
        assert job is not None, name
        return self.instance.create_run_for_job(
            job_def=job,
            asset_selection=frozenset({key(name)}),
            tags={"dagster/partition": partition},
        )

    def checked(self, name: str, check: str, partition: str, passed: bool) -> None:
        """A check evaluation of the newest materialization of `name`'s `partition`."""
        from dagster._core.definitions.asset_checks.asset_check_evaluation import (
            AssetCheckEvaluationTargetMaterializationData,
        )

        record = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key(name), asset_partitions=[partition]), limit=1
        ).records[0]
        self.instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=key(name),
                check_name=check,
                passed=passed,
                partition=partition,
                target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                    storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
                ),
            )
        )
