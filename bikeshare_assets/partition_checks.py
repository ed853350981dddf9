"""Per-partition asset check results, also inside single-run backfills.

Dagster 1.13 attaches an AssetCheckResult to the run's one partition key; a run over a
range has none, so a week of snapshots would get one check result for all of it. Instead we
log one AssetCheckEvaluation per partition (the event Dagster itself stores for a check)
and then satisfy each check's step output once. Dagster issue #17836 tracks a public API.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import dagster as dg

from bikeshare_assets.ingest.contracts import RuleOutcome


def log_partition_checks(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    outcomes_by_partition: Mapping[str, Iterable[RuleOutcome]],
) -> None:
    selected = {k.name for k in context.selected_asset_check_keys if k.asset_key == asset_key}
    for partition, outcomes in outcomes_by_partition.items():
        for outcome in outcomes:
            if outcome.check not in selected:
                continue
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=asset_key,
                    check_name=outcome.check,
                    passed=outcome.passed,
                    metadata=outcome.as_metadata(),
                    severity=outcome.severity,
                    description=outcome.description,
                    partition=partition,
                )
            )


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
