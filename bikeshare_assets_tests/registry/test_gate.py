"""The promotion gate's rules, one at a time, at and around their limits."""

from __future__ import annotations

import pytest

from bikeshare_assets.registry.gate import GateThresholds, evaluate_gate

GOOD = {
    "test_pr_auc": 0.80,
    "test_f1": 0.70,
    "overfit_gap": 0.05,
    "baseline_test_pr_auc": 0.65,
    "test_pr_auc_new": 0.31,
    "baseline_test_pr_auc_new": 0.21,
    "test_brier": 0.055,
    "baseline_calibrated_test_brier": 0.059,
}
NEW_RULE = "new stockouts: PR-AUC above lowest-count-first"
BRIER_RULE = "Brier below calibrated persistence"
CHAMPION_RULE = "not worse than champion (same test rows)"


def failed(metrics: dict, champion: float | None = None, **thresholds: float) -> list[str]:
    gate = evaluate_gate(metrics, GateThresholds(**thresholds), champion)
    return [r.rule for r in gate.rules if not r.passed]


def test_a_good_challenger_passes_every_rule() -> None:
    gate = evaluate_gate(GOOD, GateThresholds(), champion_pr_auc=0.78)
    assert gate.passed
    assert [r.rule for r in gate.rules] == [
        "test PR-AUC >= 0.70",
        "test F1 >= 0.55",
        "overfit gap < 0.10",
        "PR-AUC above persistence",
        NEW_RULE,
        BRIER_RULE,
        CHAMPION_RULE,
    ]
    assert gate.rules[-1].value == "0.800 vs 0.780"
    decided = gate.as_dict("promoted")
    assert decided["decision"] == "promoted" and all(r["passed"] for r in decided["rules"])


def test_without_a_champion_there_is_no_champion_rule() -> None:
    gate = evaluate_gate(GOOD, GateThresholds(), champion_pr_auc=None)
    assert gate.passed and CHAMPION_RULE not in [r.rule for r in gate.rules]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"test_pr_auc": 0.69}, "test PR-AUC >= 0.70"),
        ({"test_f1": 0.549}, "test F1 >= 0.55"),
        ({"overfit_gap": 0.10}, "overfit gap < 0.10"),  # the limit itself is refused
        ({"baseline_test_pr_auc": 0.80}, "PR-AUC above persistence"),  # a tie is not better
        # beats persistence overall (its stockouts were already empty at t) but not on the
        # stations still fine at t
        ({"test_pr_auc_new": 0.21}, NEW_RULE),
        ({"test_pr_auc_new": float("nan")}, NEW_RULE),  # no new stockout to judge on
        ({"test_brier": 0.059}, BRIER_RULE),
    ],
)
def test_each_rule_fails_on_its_own(change: dict, rule: str) -> None:
    assert failed({**GOOD, **change}, champion=0.5) == [rule]


def test_limits_themselves_pass() -> None:
    at_limits = {**GOOD, "test_pr_auc": 0.70, "test_f1": 0.55, "overfit_gap": 0.0999}
    assert failed(at_limits, champion=0.70) == []  # equal to the champion is not worse


def test_worse_than_the_champion_on_the_same_rows_fails_only_that_rule() -> None:
    # Everything else is fine: only the champion's score on the challenger's rows blocks it.
    assert failed(GOOD, champion=0.801) == [CHAMPION_RULE]
    gate = evaluate_gate(GOOD, GateThresholds(), champion_pr_auc=0.801)
    assert not gate.passed and gate.rules[-1].value == "0.800 vs 0.801"


def test_thresholds_are_configurable() -> None:
    weak = {**GOOD, "test_pr_auc": 0.66, "test_f1": 0.4}
    assert failed(weak) == ["test PR-AUC >= 0.70", "test F1 >= 0.55"]
    assert failed(weak, min_pr_auc=0.6, min_f1=0.3) == []
    assert failed({**GOOD, "overfit_gap": 0.12}, max_overfit_gap=0.15) == []


def test_the_floors_are_written_once() -> None:
    """One source: the promotion_gate resource's defaults are GateThresholds', the registry's
    run config has no floors of its own, and no other module of the package writes them."""
    import re
    from pathlib import Path

    from bikeshare_assets.registry.assets import PromotionConfig
    from bikeshare_assets.registry.gate import DEFAULT_THRESHOLDS, PromotionGate

    assert PromotionGate().thresholds() == DEFAULT_THRESHOLDS == GateThresholds()
    assert set(PromotionConfig.model_fields) == {"force"}
    package = Path(__file__).resolve().parents[2] / "bikeshare_assets"
    floors = re.compile(r"(?<![\d.])0\.(?:70|55|10)(?!\d)")
    writers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(
            floors.search(line) and re.search(r"gap|pr_auc|f1|PR-AUC|F1|floor", line)
            for line in path.read_text().splitlines()
        )
    )
    assert writers == ["registry/gate.py"]
