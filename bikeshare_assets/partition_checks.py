"""Per-partition asset check results, also inside single-run backfills.

Dagster 1.13 attaches an AssetCheckResult to the run's one partition key; a run over a
range has none, so a week of snapshots would get one check result for all of it. Instead we
log one AssetCheckEvaluation per partition (the event Dagster itself stores for a check)
and then satisfy each check's step output once. Dagster issue #17836 tracks a public API.

Each evaluation names the materialization it judges (`target_materialization_data`: the
storage id of that partition's materialization in this run), so Dagster reports it as the
current result for the partition. That materialization exists only once the asset's output
is stored, so evaluations are logged after the `Output` — and a partition this run did not
store (the run's batch was rejected, nothing was written) gets no evaluation at all: the
result would otherwise attach to an older materialization it never looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from bikeshare_assets.ingest.contracts import RuleOutcome


def stored_materializations(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Partition -> the materialization of `asset_key` this run stored for it (empty before
    the asset's Output is handled). Read from the cross-run asset index: on a SQLite instance
    each run has its own event database, whose storage ids are not the ones Dagster compares."""
    records = context.instance.get_asset_event_summary_records(
        event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
        asset_key=asset_key,
        run_id=context.run_id,
        ascending=True,
    )
    return {
        record.partition: AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=context.run_id, timestamp=record.timestamp
        )
        for record in records
        if record.partition is not None
    }


def partition_check_results(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    outcomes_by_partition: Mapping[str, Iterable[RuleOutcome]],
) -> Iterator[dg.Output]:
    """Log each partition's check results against its new materialization, then close the
    checks' step outputs. Yield from it *after* the asset's Output."""
    selected = {k.name for k in context.selected_asset_check_keys if k.asset_key == asset_key}
    stored = stored_materializations(context, asset_key)
    for partition, outcomes in outcomes_by_partition.items():
        target = stored.get(partition)
        if target is None:  # not stored by this run: there is nothing new to judge
            continue
        for outcome in outcomes:
            if outcome.check not in selected:
                continue
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=asset_key,
                    check_name=outcome.check,
                    passed=outcome.passed,
                    metadata=outcome.as_metadata(),
                    target_materialization_data=target,
                    severity=outcome.severity,
                    description=outcome.description,
                    partition=partition,
                )
            )
    yield from check_step_outputs(context, asset_key)


def check_step_outputs(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey
) -> Iterator[dg.Output]:
    """Close each selected check's step output (results were logged per partition)."""
    for key in context.selected_asset_check_keys:
        if key.asset_key == asset_key:
            yield dg.Output(
                None, output_name=context.assets_def.get_output_name_for_asset_check_key(key)
            )


def check_specs(
    asset_key: dg.AssetKey,
    names: Iterable[str],
    partitions_def: dg.PartitionsDefinition,
    descriptions: Mapping[str, str] | None = None,
) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name,
            asset=asset_key,
            partitions_def=partitions_def,
            description=(descriptions or {}).get(name),
        )
        for name in names
    ]
