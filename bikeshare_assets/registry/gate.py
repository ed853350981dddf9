"""The promotion gate: pure rules on a challenger's metrics (and the champion's score on the
challenger's own test rows)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateThresholds:
    min_pr_auc: float = 0.70
    min_f1: float = 0.55
    max_overfit_gap: float = 0.10


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
