"""The MLflow registry round trip on a real MLflow (SQLite) store, through the real
`registered_model_version` asset on a real Dagster instance.

Upstream of it, the day's `stockout_model` partition is produced by a stand-in asset with
the same key and output schema that logs already-trained models with the project's own
`_log_to_mlflow` (the real MLflow run: params, metrics, figures, card, test rows, pyfunc).
Only the Optuna search is taken out of the Dagster run: the models come from
`train_target` with one LightGBM thread (see support/training_data.py), so the test stays
fast on a busy 2-core machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest
from mlflow.exceptions import MlflowException
from polars.testing import assert_frame_equal
from sklearn.metrics import average_precision_score

from bikeshare_assets import cli
from bikeshare_assets.cities import SourceMode
from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.partitions import city_partitions
from bikeshare_assets.registry import registry as mlflow_registry
from bikeshare_assets.registry.assets import ALREADY_CHAMPION, gate_check_name
from bikeshare_assets.registry.gate import PromotionGate
from bikeshare_assets.registry.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    promote,
    registered_model_name,
    rollback,
)
from bikeshare_assets.training.assets import MODEL_SUMMARY_SCHEMA, _log_to_mlflow, summary_row
from bikeshare_assets.training.tracking import MlflowTracking
from bikeshare_assets.training.train import Split, SplitConfig, TrainedTarget
from bikeshare_assets_tests.conftest import (
    build_defs,
    settings_for,
    step_failure_message,
    write_cities,
)
from bikeshare_assets_tests.support.training_data import (
    SIM_LAST_DAY,
    SPLIT_A,
    SPLIT_B,
    fresh_mlflow_store,
    short_history_split,
    shuffled_split,
    simulate_table,
    simulated_split,
    trained,
    trained_on_short_history,
    trained_on_shuffled_labels,
)

CITY = "paris"
TARGET = "stockout_bikes"
DOCKS = "stockout_docks"
NAME = registered_model_name(CITY, TARGET)
REGISTRY = dg.AssetKey([CITY, "registered_model_version"])
GATE_CHECK = dg.AssetCheckKey(REGISTRY, gate_check_name(TARGET))
CHAMPION_RULE = "not worse than champion (same test rows)"
# Floors a little below the default 0.70 / 0.55 / 0.10 so the decision does not hinge on the
# third decimal of a 100-station toy city; the bad model misses them by far.
GATE = PromotionGate(min_pr_auc=0.65, min_f1=0.5, max_overfit_gap=0.15)


class Registry:
    """One city's Dagster definitions on a fresh MLflow store, and a way to hand the next
    trained model to the day's stockout_model partition."""

    def __init__(self, home: Path, tmp_path: Path, instance: dg.DagsterInstance) -> None:
        cities = write_cities(tmp_path / "sim.toml", key=CITY, simulate=simulate_table())
        self.settings = settings_for(home, cities, BIKESHARE_SOURCE="simulate")
        self.uri = fresh_mlflow_store(home / "mlflow" / "mlflow.db")
        assert self.settings.mlflow_tracking_uri == self.uri
        self.defs = build_defs(self.settings)
        self.instance = instance
        self.city = self.settings.cities[CITY]
        self.pending: list[tuple[Split, TrainedTarget]] = []
        self.docks_row: list[dict] = []
        self.stand_in = self._stand_in()
        self.client = MlflowTracking(tracking_uri=self.uri).client()

    def _stand_in(self) -> dg.AssetsDefinition:
        city, pending, docks = self.city, self.pending, self.docks_row

        def summary(context, tracking: MlflowTracking, split: Split, model: TrainedTarget) -> dict:
            run_id, model_uri = _log_to_mlflow(context, tracking, city, split, model)
            return summary_row(context.partition_key, model, split, run_id, model_uri)

        @dg.asset(
            key=[CITY, "stockout_model"],
            partitions_def=city_partitions(city, SourceMode.SIMULATE).days,
        )
        def stockout_model(context, mlflow_tracking: MlflowTracking) -> pl.DataFrame:
            split, model = pending.pop(0)
            rows = [summary(context, mlflow_tracking, split, model)]
            # The docks model is logged once and handed over again each day: the registry
            # asset registers every target the day's model partition holds.
            if not docks:
                docks.append(
                    summary(context, mlflow_tracking, split_docks(), trained(DOCKS, SPLIT_A))
                )
            return pl.DataFrame([*rows, *docks], schema=MODEL_SUMMARY_SCHEMA)

        return stockout_model

    def register(
        self, split: Split | None, model: TrainedTarget | None
    ) -> tuple[dg.ExecuteInProcessResult, dict]:
        """Train-day run: log the model, then the registry asset (with its gate) on it.
        Without a model: only the registry asset again, on the day's stored stockout_model."""
        if model is not None:
            self.pending.append((split, model))  # type: ignore[arg-type]
        registry = next(a for a in self.defs.assets or [] if REGISTRY in a.keys)
        result = dg.materialize(
            [self.stand_in, registry],
            selection=[self.stand_in.key, REGISTRY] if model is not None else [REGISTRY],
            partition_key=SIM_LAST_DAY,
            instance=self.instance,
            resources={**self.defs.resources, "promotion_gate": GATE},
            raise_on_error=False,
        )
        lake = Path(self.settings.storage_root)
        path = lake / "registered_model_version" / f"city={CITY}" / f"dt={SIM_LAST_DAY}"
        rows = pl.read_parquet(path / "part.parquet")
        assert sorted(rows["target"]) == [TARGET, DOCKS]
        return result, rows.filter(pl.col("target") == TARGET).row(0, named=True)

    def gate_evaluation(self, result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
        evaluations = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert sorted(e.check_name for e in evaluations) == sorted(
            [GATE_CHECK.name, gate_check_name(DOCKS)]
        )
        return next(e for e in evaluations if e.check_name == GATE_CHECK.name)

    def alias(self, alias: str) -> str | None:
        version = alias_version(self.client, NAME, alias)
        return str(version.version) if version else None

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(NAME, version).tags)

    def score(self, version: str, rows: pl.DataFrame) -> float:
        """PR-AUC of a registered version on given rows, computed here from MLflow's own
        model loading (not the registry module's helper)."""
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
        x = rows.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
        p = np.asarray(model.predict(x)[f"p_{TARGET}"])
        return float(average_precision_score(rows[TARGET].cast(pl.Int8).to_numpy(), p))


def split_docks() -> Split:
    return simulated_split(SPLIT_A)


SPLIT_FIRST = SplitConfig(test_days=1.25, validation_days=1.0)


@pytest.fixture
def registry(home: Path, tmp_path: Path, instance: dg.DagsterInstance) -> Registry:
    return Registry(home, tmp_path, instance)


def test_gate_promotes_refuses_and_rollback_restores(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first champion: a longer test window (other rows than B's) and a model that, scored
    # on B's rows, ranks below B — so step 2 exercises "not worse than the champion" passing.
    split_a, model_a = simulated_split(SPLIT_FIRST), trained(TARGET, SPLIT_FIRST)
    split_b, model_b = simulated_split(SPLIT_B), trained(TARGET, SPLIT_B)
    split_c, model_c = short_history_split(), trained_on_short_history(TARGET)
    bad_split, bad = shuffled_split(), trained_on_shuffled_labels(TARGET)

    # 1. The first model: registered as challenger; no champion yet, the gate passes.
    result, row = registry.register(split_a, model_a)
    assert result.success, step_failure_message(result)
    assert (row["version"], row["decision"], row["champion_version"]) == ("1", "promoted", "1")
    assert row["previous_champion"] is None and row["champion_pr_auc_same_rows"] is None
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == ("1", "1")
    assert "previous_champion" not in registry.tags("1")
    # What the version was fit on and tested on travels with it (seen_in_training).
    assert registry.tags("1")["training_data_end"] == model_a.training_data_end
    assert registry.tags("1")["training_data_end"] == str(split_a.validation["snapshot_at"].max())
    assert registry.tags("1")["test_start"] == split_a.boundaries["test_start"]
    assert registry.gate_evaluation(result).passed is True
    run_a = registry.client.get_model_version(NAME, "1").run_id
    assert registry.client.get_run(run_a).data.metrics["test_pr_auc"] == pytest.approx(
        model_a.metrics["test_pr_auc"]
    )

    # 2. A better model, tested on other rows (a shorter test window). The champion is
    #    scored on *those* rows, not on its own; the challenger beats that and every floor.
    result, row = registry.register(split_b, model_b)
    rows_b = mlflow_registry.load_test_rows(registry.client.get_model_version(NAME, "2").run_id)
    assert_frame_equal(rows_b, split_b.test)
    assert rows_b.height < split_a.test.height
    champion_on_b = registry.score("1", rows_b)
    assert row["champion_pr_auc_same_rows"] == pytest.approx(champion_on_b, abs=1e-12)
    assert abs(champion_on_b - model_a.metrics["test_pr_auc"]) > 1e-3  # other rows, other score
    assert model_b.metrics["test_pr_auc"] > champion_on_b
    assert result.success, step_failure_message(result)
    assert (row["version"], row["decision"], row["champion_version"]) == ("2", "promoted", "2")
    assert row["previous_champion"] == "1"
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == ("2", "2")
    assert registry.tags("2")["previous_champion"] == "1"
    assert registry.tags("1")["superseded_by"] == "2"
    rule = rule_of(row, CHAMPION_RULE)
    assert rule["passed"] is True
    assert rule["value"] == f"{model_b.metrics['test_pr_auc']:.3f} vs {champion_on_b:.3f}"
    # Promoting the champion again (an operator passing "2") changes nothing in its history.
    assert promote(registry.client, NAME, "2") is None
    assert registry.tags("2")["previous_champion"] == "1" and registry.alias(CHAMPION) == "2"

    # 3. A model that clears every floor and beats persistence, but is worse than the
    #    champion on its own test rows: refused by that rule alone; champion stays.
    result, row = registry.register(split_c, model_c)
    champion_on_c = registry.score("2", split_c.test)
    assert row["champion_pr_auc_same_rows"] == pytest.approx(champion_on_c, abs=1e-12)
    assert model_c.metrics["test_pr_auc"] < champion_on_c
    assert not result.success
    assert "blocking asset check" in step_failure_message(result)
    assert registry.gate_evaluation(result).passed is False
    assert failed_rules(row) == [CHAMPION_RULE]
    assert (row["version"], row["decision"]) == ("3", "rejected: champion unchanged")
    assert (row["champion_version"], row["previous_champion"]) == ("2", None)
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == ("2", "3")
    assert "previous_champion" not in registry.tags("3")

    # 4. A model trained on shuffled labels (scored on the true test labels): refused.
    result, row = registry.register(bad_split, bad)
    assert not result.success and registry.gate_evaluation(result).passed is False
    assert (row["version"], row["decision"]) == ("4", "rejected: champion unchanged")
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == ("2", "4")
    assert {"test PR-AUC >= 0.65", "test F1 >= 0.50", "PR-AUC above persistence"} <= set(
        failed_rules(row)
    )
    champion_on_bad_rows = registry.score("2", bad_split.test)
    assert row["champion_pr_auc_same_rows"] == pytest.approx(champion_on_bad_rows, abs=1e-12)
    assert bad.metrics["test_pr_auc"] < 0.3 < champion_on_bad_rows
    card = Path(row["model_card"]).read_text()
    assert "v4" in card and "Decision: **rejected: champion unchanged**" in card

    # 5. Roll back with the operator's command: the previous champion (v1) is back.
    assert cli.main(["rollback", "--city", CITY, "--target", TARGET]) == 0
    assert "from v2 back to v1" in capsys.readouterr().out
    assert registry.alias(CHAMPION) == "1"
    assert registry.tags("1")["restored_from"] == "2" and "rolled_back_at" in registry.tags("2")

    # 6. ... and with the registry functions: to a named version, then by the history tag.
    assert rollback(registry.client, NAME, to_version="2") == ("1", "2")
    assert registry.alias(CHAMPION) == "2"
    assert rollback(registry.client, NAME) == ("2", "1")  # v2's previous_champion
    assert registry.alias(CHAMPION) == "1"
    with pytest.raises(ValueError, match=r"v1 has no previous champion"):
        rollback(registry.client, NAME)
    with pytest.raises(MlflowException):
        rollback(registry.client, NAME, to_version="99")
    assert registry.alias(CHAMPION) == "1"


def rule_of(row: dict, name: str) -> dict:
    return next(r for r in json.loads(row["gate"])["rules"] if r["rule"] == name)


def failed_rules(row: dict) -> list[str]:
    return [r["rule"] for r in json.loads(row["gate"])["rules"] if not r["passed"]]


def test_rematerializing_the_registry_reuses_the_version_of_the_same_run(
    registry: Registry,
) -> None:
    # v1: the first model, promoted. Then the same day's registry again, twice.
    result, first = registry.register(simulated_split(SPLIT_B), trained(TARGET, SPLIT_B))
    assert result.success, step_failure_message(result)
    assert (first["version"], first["decision"]) == ("1", "promoted")
    promoted_at = registry.tags("1")["promoted_at"]

    for _ in range(2):
        result, again = registry.register(None, None)
        assert result.success, step_failure_message(result)
        assert (again["version"], again["champion_version"]) == ("1", "1")
        assert again["decision"] == ALREADY_CHAMPION
        assert again["previous_champion"] is None

    versions = registry.client.search_model_versions(f"name='{NAME}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert registry.tags("1")["promoted_at"] == promoted_at  # not promoted again
    assert "previous_champion" not in registry.tags("1")
    docks = registry.client.search_model_versions(f"name='{registered_model_name(CITY, DOCKS)}'")
    assert len(docks) == 1

    # A refused model re-materialized keeps its one version, and the champion stays.
    result, bad = registry.register(shuffled_split(), trained_on_shuffled_labels(TARGET))
    assert not result.success and bad["version"] == "2"
    result, bad_again = registry.register(None, None)
    assert not result.success
    assert (bad_again["version"], bad_again["decision"]) == ("2", "rejected: champion unchanged")
    assert len(registry.client.search_model_versions(f"name='{NAME}'")) == 2
    assert (registry.alias(CHAMPION), registry.alias(CHALLENGER)) == ("1", "2")
