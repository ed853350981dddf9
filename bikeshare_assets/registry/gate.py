"""The promotion gate: pure rules on a challenger's metrics (and the champion's score on the
challenger's own test rows)."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class GateThresholds:
    """The gate's floors. These defaults are the only place the numbers are written: the
    `promotion_gate` resource, the checks' descriptions, training's overfit-gap constraint
    and model_quality all read them from here (or from the configured resource)."""

    min_pr_auc: float = 0.70
    min_f1: float = 0.55
    max_overfit_gap: float = 0.10

    def describe(self) -> str:
        return (
            f"test PR-AUC >= {self.min_pr_auc:.2f}, F1 >= {self.min_f1:.2f}, overfit gap < "
            f"{self.max_overfit_gap:.2f}"
        )


DEFAULT_THRESHOLDS = GateThresholds()


class PromotionGate(dg.ConfigurableResource):
    """The gate's floors as one resource shared by training (its overfit-gap constraint and
    check), the registry's gate and model_quality: configure them once (Definitions, or the
    launchpad's `resources.promotion_gate.config`) and every consumer uses the same ones."""

    min_pr_auc: float = DEFAULT_THRESHOLDS.min_pr_auc
    min_f1: float = DEFAULT_THRESHOLDS.min_f1
    max_overfit_gap: float = DEFAULT_THRESHOLDS.max_overfit_gap

    def thresholds(self) -> GateThresholds:
        return GateThresholds(self.min_pr_auc, self.min_f1, self.max_overfit_gap)


@dataclass(frozen=True)
class GateRule:
    rule: str
    value: str
    passed: bool


@dataclass(frozen=True)
class GateResult:
    rules: list[GateRule]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    def as_dict(self, decision: str) -> dict:
        return {"rules": [r.__dict__ for r in self.rules], "decision": decision}


def evaluate_gate(
    metrics: dict[str, float],
    thresholds: GateThresholds,
    champion_pr_auc: float | None,
) -> GateResult:
    """Every rule must hold; `champion_pr_auc` is the current champion scored on the same
    test rows (None when there is no champion yet)."""
    pr, f1, gap = metrics["test_pr_auc"], metrics["test_f1"], metrics["overfit_gap"]
    base = metrics["baseline_test_pr_auc"]
    pr_new, base_new = metrics["test_pr_auc_new"], metrics["baseline_test_pr_auc_new"]
    brier, base_brier = metrics["test_brier"], metrics["baseline_calibrated_test_brier"]
    rules = [
        GateRule(
            f"test PR-AUC >= {thresholds.min_pr_auc:.2f}", f"{pr:.3f}", pr >= thresholds.min_pr_auc
        ),
        GateRule(f"test F1 >= {thresholds.min_f1:.2f}", f"{f1:.3f}", f1 >= thresholds.min_f1),
        GateRule(
            f"overfit gap < {thresholds.max_overfit_gap:.2f}",
            f"{gap:.3f}",
            gap < thresholds.max_overfit_gap,
        ),
        GateRule("PR-AUC above persistence", f"{pr:.3f} vs {base:.3f}", pr > base),
        # Most stockouts at t + 30 are stations already empty (full) at t, which persistence
        # catches for free; a dispatcher needs the ones still fine now.
        GateRule(
            "new stockouts: PR-AUC above lowest-count-first",
            f"{pr_new:.3f} vs {base_new:.3f}",
            pr_new > base_new,  # NaN (no new stockout in the test window) fails
        ),
        GateRule(
            "Brier below calibrated persistence",
            f"{brier:.4f} vs {base_brier:.4f}",
            brier < base_brier,
        ),
    ]
    if champion_pr_auc is not None:
        rules.append(
            GateRule(
                "not worse than champion (same test rows)",
                f"{pr:.3f} vs {champion_pr_auc:.3f}",
                pr >= champion_pr_auc,
            )
        )
    return GateResult(rules)
