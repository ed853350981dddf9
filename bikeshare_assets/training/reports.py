"""Evaluation figures and the model card, produced for every trained target."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (metric, label, the baseline's metric on the same rows)
GATE_METRICS = (
    ("test_pr_auc", "PR-AUC", "baseline_test_pr_auc"),
    ("test_pr_auc_new", "PR-AUC, new stockouts (fine at t)", "baseline_test_pr_auc_new"),
    (
        "test_precision_at_20_new",
        "precision of the top 20 per snapshot, new stockouts",
        "baseline_test_precision_at_20_new",
    ),
    ("test_roc_auc", "ROC-AUC", "baseline_test_roc_auc"),
    ("test_f1", "F1", "baseline_test_f1"),
    ("test_f2", "F2", "baseline_test_f2"),
    ("test_precision", "precision", "baseline_test_precision"),
    ("test_recall", "recall", "baseline_test_recall"),
    ("test_brier", "Brier (calibrated persistence)", "baseline_calibrated_test_brier"),
    (
        "test_calibration_error",
        "calibration error (ECE, calibrated persistence)",
        "baseline_calibrated_test_calibration_error",
    ),
)


def save_figures(
    directory: Path,
    target: str,
    y: np.ndarray,
    p: np.ndarray,
    baseline: np.ndarray,
    threshold: float,
    importance: dict[str, float],
    calibrated_baseline: np.ndarray | None = None,
) -> list[Path]:
    # Imported here, not at module level: matplotlib and scikit-learn cost seconds, and the
    # registry imports this module for `model_card` only.
    import matplotlib

    matplotlib.use("Agg")  # headless: servers and CI have no display
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay

    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 5))
    PrecisionRecallDisplay.from_predictions(y, p, name="LightGBM", ax=ax)
    PrecisionRecallDisplay.from_predictions(y, baseline, name="persistence", ax=ax)
    ax.set_title(f"{target}: precision-recall on the test window")
    paths.append(_save(fig, directory / "pr_curve.png"))

    # Reliability diagram: observed stockout rate against the served probability, in bins
    # of equal size (most probabilities are small), with calibrated persistence beside it.
    fig, ax = plt.subplots(figsize=(6, 5))
    CalibrationDisplay.from_predictions(
        y, p, n_bins=15, strategy="quantile", name="LightGBM", ax=ax
    )
    if calibrated_baseline is not None and len(calibrated_baseline) == len(y):
        CalibrationDisplay.from_predictions(
            y,
            calibrated_baseline,
            n_bins=15,
            strategy="quantile",
            name="calibrated persistence",
            ax=ax,
        )
    ax.set_title(f"{target}: reliability diagram on the test window")
    paths.append(_save(fig, directory / "reliability_diagram.png"))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay.from_predictions(
        y, (p >= threshold).astype(int), display_labels=["ok", "stockout"], ax=ax, colorbar=False
    )
    ax.set_title(f"{target}: confusion matrix at threshold {threshold:.2f}")
    paths.append(_save(fig, directory / "confusion_matrix.png"))

    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([k for k, _ in reversed(top)], [v for _, v in reversed(top)])
    ax.set_xlabel("total gain")
    ax.set_title(f"{target}: top 20 features")
    paths.append(_save(fig, directory / "feature_importance.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def model_card(
    *,
    city: str,
    target: str,
    metrics: dict[str, float],
    params: dict,
    boundaries: dict[str, str],
    importance: dict[str, float],
    run_id: str,
    version: str | None = None,
    gate: dict | None = None,
) -> str:
    """An auto-filled model card (markdown)."""
    rows = "\n".join(
        f"| {label} | {metrics[key]:.4f} | "
        + (f"{metrics[baseline]:.4f}" if baseline in metrics else "—")
        + " |"
        for key, label, baseline in GATE_METRICS
        if key in metrics
    )
    top = ", ".join(f"`{k}`" for k, _ in sorted(importance.items(), key=lambda kv: -kv[1])[:8])
    what = "no bikes to rent" if target == "stockout_bikes" else "no free dock to return a bike"
    gate_md = ""
    if gate:
        gate_md = (
            "\n## Promotion gate\n\n| rule | value | passed |\n|---|---|---|\n"
            + "\n".join(
                f"| {r['rule']} | {r['value']} | {'yes' if r['passed'] else 'NO'} |"
                for r in gate["rules"]
            )
            + f"\n\nDecision: **{gate['decision']}**\n"
        )
    return f"""# Model card — {city} / {target}{f" v{version}" if version else ""}

**What it predicts:** the probability that a station has {what} (≤ 2) 30 minutes after the
snapshot, from that snapshot's features. **Used for:** ranking stations for rebalancing vans.
**Not for:** horizons other than 30 minutes, other cities without retraining.

MLflow run `{run_id}`. LightGBM (binary, Optuna-tuned, no class weighting: the
probabilities are meant to be read as probabilities), decision threshold
{metrics["decision_threshold"]:.3f} chosen on validation to maximise F1. Parameters and the
number of rounds were chosen on validation; the registered model is then refit on train +
validation (its training data ends {boundaries.get("training_data_end", "—")}).

## Data

| window | from | rows |
|---|---|---|
| train | {boundaries["train_start"]} | {int(metrics["train_rows"])} |
| validation | {boundaries["validation_start"]} | {int(metrics["validation_rows"])} |
| test | {boundaries["test_start"]} → {boundaries["end"]} | {int(metrics["test_rows"])} |

Splits are time-ordered with a {boundaries["embargo_minutes"]}-minute embargo. Test base
rate {metrics["test_base_rate"]:.3f}.

## Test metrics (model vs persistence baseline on the same rows)

Persistence ranks by current count (lowest first) for PR-AUC, ROC-AUC and the top 20; flags
count ≤ 2 for F1, F2, precision and recall; and for Brier and calibration error it is the
stockout rate per current count observed on the model's fit rows ("calibrated
persistence"). "New stockouts": only stations not stocked out at t.

| metric | model | persistence |
|---|---|---|
{rows}

Overfit gap (train − validation PR-AUC): {metrics["overfit_gap"]:.3f}.

## Most important features

{top}

## Hyper-parameters

{", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()) if k not in ("verbosity", "objective", "metric", "feature_pre_filter"))}
{gate_md}
## Limitations

Trained on the recorded period only: stations that change behaviour (works, events, new
stations) are not foreseen; recorder gaps leave fewer training rows on some days; weather is
hourly. Re-evaluate on fresh outcomes (model_quality) before trusting it in a new season.
"""
