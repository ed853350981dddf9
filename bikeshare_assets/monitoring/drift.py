"""Drift of the scored features and predicted probabilities against the reference the
serving model was trained on — pure polars functions, plus Evidently (imported only inside
`psi_report`: it takes seconds to import and definitions must load fast).

The reference of a registered version is a seeded sample of its fit rows (train +
validation), stratified by local hour, with the model's own P(stockout) on them; it is
logged with the training run and copied to the lake at registration (see
docs/drift.md). An hour of scored snapshots is compared with the reference rows of the
same local hour(s), so the daily cycle of a bike-share system (empty stations at 8 am, full
ones at 6 pm) is not reported as drift every morning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from bikeshare_assets.features.compute import FEATURE_COLUMNS, KEY, WINDOWS_MINUTES
from bikeshare_assets.features.labels import TARGETS

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

# One value per snapshot for the whole city (calendar and weather): an hour holds one to
# four of them, a distribution PSI cannot compare. They are listed, not tested.
CONTEXT_FEATURES = (
    "local_hour",
    "local_minute_of_day",
    "weekday",
    "is_weekend",
    "is_holiday",
    "temperature_c",
    "precipitation_mm",
    "wind_speed_kmh",
)
# How many snapshots the feed delivered in the windows: they move with the feed's cadence
# and its gaps (a source outage, a recorder gap), which the raw layer's gap records and
# freshness own and retraining cannot fix. Their PSI is reported, not checked.
CADENCE_FEATURES = ("obs_15", "obs_30", "obs_60", "minutes_since_previous")
DRIFT_FEATURES = [
    c for c in FEATURE_COLUMNS if c not in CONTEXT_FEATURES and c not in CADENCE_FEATURES
]
PREDICTION_COLUMNS = [f"p_{t}" for t in TARGETS]
MONITORED_COLUMNS = [*DRIFT_FEATURES, *CADENCE_FEATURES, *PREDICTION_COLUMNS]
STRATUM = "local_hour"
REFERENCE_ROWS_PER_HOUR = 1000  # up to 24,000 rows per version
REFERENCE_SEED = 20250907
REFERENCE_ARTIFACT_DIR = "drift"
REFERENCE_ARTIFACT = f"{REFERENCE_ARTIFACT_DIR}/reference_sample.parquet"

DRIFT_SCHEMA: dict[str, pl.DataType] = {
    "hour": pl.Datetime("us", "UTC"),  # the partition's start (splits a range run)
    "feature": pl.String(),
    "kind": pl.String(),  # feature | cadence | prediction (only feature and prediction are checked)
    "psi": pl.Float64(),
    "status": pl.String(),  # ok | warn | fail | not compared
    "drifted": pl.Boolean(),  # psi >= warn
    "current_mean": pl.Float64(),
    "reference_mean": pl.Float64(),
    "rows_current": pl.Int64(),
    "rows_reference": pl.Int64(),
    "model_version": pl.String(),  # the serving label, e.g. stockout_bikes:v3+stockout_docks:v2
    "reference_hours": pl.String(),  # local hours of the reference rows compared
    # the thresholds that judged this hour, so a reader (the dashboard) needs no config
    "warn_psi": pl.Float64(),
    "fail_psi": pl.Float64(),
}


@dataclass(frozen=True)
class DriftThresholds:
    """PSI limits of the feature_drift and prediction_drift checks. These defaults are the
    only place the numbers are written; docs/drift.md gives the reason for each."""

    warn_psi: float = 0.2
    fail_psi: float = 0.3
    # A column with fewer values on either side is listed, not compared: PSI's sampling
    # noise grows as 1/rows, and an hour's rows are a few snapshots of the same stations.
    min_rows: int = 200

    def status(self, psi: float | None) -> str:
        if psi is None:
            return "not compared"
        return "fail" if psi >= self.fail_psi else "warn" if psi >= self.warn_psi else "ok"


DEFAULT_DRIFT_THRESHOLDS = DriftThresholds()


class DriftPolicy(dg.ConfigurableResource):
    """The drift checks' thresholds as a resource (Definitions, or the launchpad's
    `resources.drift_policy.config`), so the UI and the checks use the same numbers."""

    warn_psi: float = DEFAULT_DRIFT_THRESHOLDS.warn_psi
    fail_psi: float = DEFAULT_DRIFT_THRESHOLDS.fail_psi
    min_rows: int = DEFAULT_DRIFT_THRESHOLDS.min_rows

    def thresholds(self) -> DriftThresholds:
        if not 0 < self.warn_psi <= self.fail_psi:
            raise ValueError(
                f"drift_policy: need 0 < warn_psi <= fail_psi, got {self.warn_psi} / {self.fail_psi}"
            )
        return DriftThresholds(self.warn_psi, self.fail_psi, self.min_rows)


# --------------------------------------------------------------------------------------
# the reference


def reference_sample(
    fit_rows: pl.DataFrame,
    rows_per_hour: int = REFERENCE_ROWS_PER_HOUR,
    seed: int = REFERENCE_SEED,
) -> pl.DataFrame:
    """Up to `rows_per_hour` fit rows per local hour, chosen by a seeded hash of
    (snapshot_at, station_id): the same rows whatever the frame's order, so both targets'
    models of one training run get the same sample."""
    order = pl.struct(KEY).hash(seed=seed).rank("ordinal").over(STRATUM)
    return fit_rows.select(*KEY, *FEATURE_COLUMNS).filter(order <= rows_per_hour).sort(KEY)


def reference_key(registered_model: str, version: str | int) -> str:
    """Where a registered version's reference sample lives in the lake."""
    return f"drift_reference/{registered_model}/v{version}/reference_sample.parquet"


def combine_references(samples: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One reference from each serving target's sample (features + its p_<target>): rows
    the samples share (versions of one training run) become one row with every p column;
    rows only one sample has keep the other p null (Evidently drops nulls per column)."""
    frames = [
        s.select(*KEY, *FEATURE_COLUMNS, f"p_{t}").with_columns(pl.col(f"p_{t}").cast(pl.Float64))
        for t, s in samples.items()
    ]
    both = pl.concat(frames, how="diagonal_relaxed")
    return both.group_by(KEY, maintain_order=True).agg(pl.all().drop_nulls().first()).sort(KEY)


def parse_serving_label(label: str) -> dict[str, str] | None:
    """{target: version} from the label the endpoint answers with
    ("stockout_bikes:v3+stockout_docks:v2"); None when it names no registered version of
    every target (the persistence fallback, an unregistered model)."""
    versions = {}
    for part in label.split("+"):
        target, sep, version = part.partition(":v")
        if not sep or target not in TARGETS or not version.isdigit():
            return None
        versions[target] = version
    return versions if set(versions) == set(TARGETS) else None


# --------------------------------------------------------------------------------------
# the hour's scored rows


def scored_rows(predictions: pl.DataFrame, features: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """The model-scored rows of the serving label that scored most of them, joined with
    the features they were scored on; returns (rows, label). Fallback rows (persistence)
    are not the model's and are left out."""
    model = predictions.filter(pl.col("source") == "model")
    if model.height == 0:
        return pl.DataFrame(), ""
    label = (
        model.group_by("model_version")
        .len()
        .sort(["len", "model_version"], descending=[True, False])
        .get_column("model_version")[0]
    )
    rows = model.filter(pl.col("model_version") == label).select(*KEY, *PREDICTION_COLUMNS)
    joined = features.select(*KEY, *FEATURE_COLUMNS).join(rows, on=KEY, how="inner")
    return joined, label


# A window's features are compared only where the station's history holds this share of the
# snapshots a full window would: in the first hour of a deployment, or after a feed outage, a
# 60-minute trend is a trend over a few minutes (or across a hole) — a different quantity, not
# a change in the city, and retraining cannot fix it (the gap records and freshness own those).
WINDOW_COVERAGE = 0.9


def mask_partial_windows(frame: pl.DataFrame, cadence: float | None = None) -> pl.DataFrame:
    """Each window's features nulled (left out of the PSI) where the station has fewer than
    WINDOW_COVERAGE of the snapshots a full window holds (w / cadence + 1, both ends), and
    the predicted probabilities where any window is short.
    `cadence`: the feed's, for the current rows (a window's rows just after a gap are all
    spaced by the gap); without it, the frame's median `minutes_since_previous` (a reference
    sample spans many snapshots). Applied to the current rows and the reference alike, so
    both compare full windows only."""
    if cadence is None:
        spacing = frame.get_column("minutes_since_previous").drop_nulls() if frame.height else None
        if spacing is None or spacing.len() == 0:
            return frame
        cadence = float(spacing.median())  # type: ignore[arg-type]
    masked = []
    fulls = []
    for w in WINDOWS_MINUTES:
        full = pl.col(f"obs_{w}") >= WINDOW_COVERAGE * (w / cadence + 1)
        fulls.append(full)
        masked += [
            pl.when(full).then(pl.col(c)).otherwise(None).alias(c)
            for c in DRIFT_FEATURES
            if c.endswith(f"_{w}") and c in frame.columns
        ]
    # A prediction is made from every window: it is compared only where all of them are full
    # (in a live stack's first hour the model scores short trends; warm-up, not drift).
    every_window = pl.all_horizontal(fulls)
    masked += [
        pl.when(every_window).then(pl.col(c)).otherwise(None).alias(c)
        for c in PREDICTION_COLUMNS
        if c in frame.columns
    ]
    return frame.with_columns(masked)


def matching_reference(reference: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """The reference rows of the local hours the current rows fall in."""
    hours = current.get_column(STRATUM).unique().to_list()
    return reference.filter(pl.col(STRATUM).is_in(hours))


# --------------------------------------------------------------------------------------
# PSI (Evidently)


def comparable(
    reference: pl.DataFrame, current: pl.DataFrame, columns: list[str], min_rows: int = 1
) -> list[str]:
    """Columns with at least `min_rows` values on both sides (and never an empty one:
    Evidently refuses it)."""
    least = max(min_rows, 1)
    return [
        c
        for c in columns
        if reference.get_column(c).drop_nulls().len() >= least
        and current.get_column(c).drop_nulls().len() >= least
    ]


def psi_report(
    reference: pl.DataFrame, current: pl.DataFrame, columns: list[str], warn_psi: float
) -> tuple[dict[str, float], Snapshot]:
    """PSI per column from Evidently's DataDriftPreset(method="psi"); returns the values
    and the report (for HTML / JSON). Columns are compared as numbers (binned by Evidently:
    Sturges bins over both samples, or one bin per value for 20 distinct values or fewer)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=columns)

    def dataset(frame: pl.DataFrame):
        data = frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_pandas()
        return Dataset.from_pandas(data, data_definition=definition)

    report = Report([DataDriftPreset(columns=columns, method="psi", threshold=warn_psi)])
    snapshot = report.run(current_data=dataset(current), reference_data=dataset(reference))
    values: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        column = metric.get("config", {}).get("column")
        if metric.get("config", {}).get("type", "").endswith("ValueDrift") and column:
            values[column] = float(metric["value"])
    missing = [c for c in columns if c not in values]
    if missing:
        raise RuntimeError(f"Evidently's report has no PSI for {missing}")
    return values, snapshot


def drift_table(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    psi: dict[str, float],
    thresholds: DriftThresholds,
    *,
    hour: Any,
    label: str,
) -> pl.DataFrame:
    """One row per monitored column: model features, cadence features, predicted
    probabilities."""
    hours = ",".join(str(h) for h in sorted(current.get_column(STRATUM).unique().to_list()))
    rows = []
    kinds = (
        ("feature", DRIFT_FEATURES),
        ("cadence", list(CADENCE_FEATURES)),
        ("prediction", PREDICTION_COLUMNS),
    )
    for kind, columns in kinds:
        for column in columns:
            value = psi.get(column)
            rows.append(
                {
                    "hour": hour,
                    "feature": column,
                    "kind": kind,
                    "psi": value,
                    "status": thresholds.status(value),
                    "drifted": None if value is None else value >= thresholds.warn_psi,
                    "current_mean": current.get_column(column).cast(pl.Float64).mean(),
                    "reference_mean": reference.get_column(column).cast(pl.Float64).mean(),
                    "rows_current": current.get_column(column).drop_nulls().len(),
                    "rows_reference": reference.get_column(column).drop_nulls().len(),
                    "model_version": label,
                    "reference_hours": hours,
                    "warn_psi": thresholds.warn_psi,
                    "fail_psi": thresholds.fail_psi,
                }
            )
    return pl.DataFrame(rows, schema=DRIFT_SCHEMA)


@dataclass(frozen=True)
class DriftVerdict:
    """One check's result on one hour."""

    passed: bool
    severity: dg.AssetCheckSeverity
    worst_column: str | None
    worst_psi: float | None
    description: str
    drifted: dict[str, float]


def drift_verdict(table: pl.DataFrame, kind: str, thresholds: DriftThresholds) -> DriftVerdict:
    """Fail (ERROR) if any column of `kind` reaches fail_psi, fail (WARN) if any reaches
    warn_psi, else pass; an hour with nothing compared passes and says so."""
    rows = table.filter((pl.col("kind") == kind) & pl.col("psi").is_not_null()).sort(
        "psi", descending=True
    )
    what = "model feature" if kind == "feature" else "predicted probability"
    if rows.height == 0:
        return DriftVerdict(
            True,
            dg.AssetCheckSeverity.WARN,
            None,
            None,
            f"Nothing compared in this hour: no {what} with {thresholds.min_rows} rows "
            "scored by the model on full windows (nothing scored, or a short history).",
            {},
        )
    worst, psi = rows.get_column("feature")[0], float(rows.get_column("psi")[0])
    drifted = {
        r["feature"]: round(r["psi"], 4)
        for r in rows.filter(pl.col("psi") >= thresholds.warn_psi).iter_rows(named=True)
    }
    listed = ", ".join(f"{c} {v:.3f}" for c, v in list(drifted.items())[:8])
    if psi >= thresholds.fail_psi:
        return DriftVerdict(
            False,
            dg.AssetCheckSeverity.ERROR,
            worst,
            psi,
            f"PSI >= {thresholds.fail_psi} (fail): {listed}. The served model sees inputs unlike "
            "its training data; retrain (stockout_model → registered_model_version → "
            "model_endpoint) or find the upstream change.",
            drifted,
        )
    if psi >= thresholds.warn_psi:
        return DriftVerdict(
            False,
            dg.AssetCheckSeverity.WARN,
            worst,
            psi,
            f"PSI >= {thresholds.warn_psi} (warn): {listed}. Watch the next hours.",
            drifted,
        )
    return DriftVerdict(
        True,
        dg.AssetCheckSeverity.WARN,
        worst,
        psi,
        f"Every {what} below PSI {thresholds.warn_psi} (highest: {worst} {psi:.3f}).",
        {},
    )
