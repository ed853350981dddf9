"""Model health: is the served model better than "it stays as it is" over the last 24 h,
is it calibrated, which champion serves and why it was trained."""

import altair as alt
import common
import polars as pl
import streamlit as st

from bikeshare_assets.dispatch import TARGET_LABELS
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.health import (
    calibration_curve,
    hourly_quality,
    last_hours,
    quality_vs_persistence,
)
from bikeshare_assets.read import (
    REGISTRY_TAGS,
    model_versions,
    run_reason,
    serving_thresholds,
)

OUTCOME_COLUMNS = [
    "snapshot_at",
    "station_id",
    "bikes_available",
    "docks_available",
    *[f"p_{t}" for t in TARGETS],
    *[f"flag_{t}" for t in TARGETS],
    *TARGETS,
    "model_version",
]
METRICS = {"pr_auc": "PR-AUC ↑", "f1": "F1 ↑", "brier": "Brier ↓"}


@st.cache_data(ttl=common.CACHE_TTL_S, show_spinner="Scoring the last 24 hours…")
def quality(city_key: str, newest: str, threshold: int):
    keys = common.lake().partitions(city_key, "prediction_outcomes")
    outcomes = last_hours(
        common.lake().read(city_key, "prediction_outcomes", keys[-200:], OUTCOME_COLUMNS)
    )
    return (
        outcomes,
        quality_vs_persistence(outcomes, threshold),
        hourly_quality(outcomes, threshold),
        calibration_curve(outcomes),
    )


@st.cache_data(ttl=common.CACHE_TTL_S, show_spinner=False)
def registry(city_key: str):
    s = common.settings()
    versions = model_versions(s, city_key, tuple(TARGETS))
    return versions, serving_thresholds(s, city_key)


with common.guard():
    city = common.city()
    st.title(f"Model health — {city.display_name}")
    keys = common.require_partitions(city.key, "prediction_outcomes", "prediction outcomes")
    outcomes, summary, hourly, calibration = quality(city.key, keys[-1], city.stockout_threshold)
    if outcomes.height == 0:
        st.info(
            "No matured outcomes yet: a prediction's outcome exists 30 minutes after its "
            "snapshot. Materialize prediction_outcomes again once stockout_labels caught up."
        )
        st.stop()
    start, end = outcomes.get_column("snapshot_at").min(), outcomes.get_column("snapshot_at").max()
    st.caption(
        f"{outcomes.height:,} matured outcomes, snapshots {start:%Y-%m-%d %H:%M} – "
        f"{end:%Y-%m-%d %H:%M} UTC. Persistence = 'in 30 minutes it is as it is now' (flag: "
        f"≤ {city.stockout_threshold} now), the baseline every model must beat."
    )

    st.subheader("Last 24 hours: model vs persistence")
    for target in TARGETS:
        cols = st.columns(len(METRICS) + 1)
        cols[0].markdown(f"**{TARGET_LABELS[target]}**  \n`{target}`")
        for col, (metric, label) in zip(cols[1:], METRICS.items(), strict=True):
            row = summary.filter((pl.col("target") == target) & (pl.col("metric") == metric)).row(
                0, named=True
            )
            if row["model"] is None:
                col.metric(label, "n/a", help="Only one class in the window.")
                continue
            delta = row["model"] - (row["persistence"] or 0.0)
            col.metric(
                label,
                f"{row['model']:.3f}",
                f"{delta:+.3f} vs persistence {row['persistence']:.3f}",
                delta_color="inverse" if metric == "brier" else "normal",
            )

    if hourly.height:
        chart = (
            hourly.unpivot(
                index=["hour", "target", "metric"],
                on=["model", "persistence"],
                variable_name="scorer",
            )
            .filter(pl.col("value").is_not_null())
            .with_columns(pl.col("metric").replace(METRICS))
        )
        st.altair_chart(
            alt.Chart(chart.to_pandas())
            .mark_line(point=True)
            .encode(
                x=alt.X("hour:T", title="hour (UTC)"),
                y=alt.Y("value:Q", title=None),
                color=alt.Color("scorer:N", title=None),
                tooltip=["hour:T", "target", "scorer", alt.Tooltip("value:Q", format=".3f")],
            )
            .properties(height=130, width=230)
            # one row per target: told apart by a dash, the two were hard to read
            .facet(column=alt.Column("metric:N", title=None), row=alt.Row("target:N", title=None))
            .resolve_scale(y="independent"),
        )

    left, right = st.columns(2)
    with left:
        st.subheader("Calibration")
        if calibration.height:
            points = alt.Chart(calibration.to_pandas()).encode(
                x=alt.X("predicted:Q", title="predicted P", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("observed:Q", title="observed rate", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("target:N", title=None),
                tooltip=["target", "bin", "rows", alt.Tooltip("observed:Q", format=".2f")],
            )
            diagonal = (
                alt.Chart(pl.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}).to_pandas())
                .mark_line(strokeDash=[4, 4], color="gray")
                .encode(x="x:Q", y="y:Q")
            )
            st.altair_chart(
                diagonal + points.mark_line(point=True).encode(size=alt.value(2)),
            )
            st.caption("On the dashed line, '70 %' means 70 % of those stations did stock out.")

    with right:
        st.subheader("Champion")
        versions, thresholds = registry(city.key)
        served = outcomes.get_column("model_version")[-1]
        st.markdown(f"Serving: `{served}`")
        if served in thresholds:
            st.markdown(
                "Decision thresholds (flag a stockout at P ≥): "
                + ", ".join(
                    f"{TARGET_LABELS[t]} **{v:.2f}**" for t, v in thresholds[served].items()
                )
            )
        if versions.height == 0:
            st.info("No registered model versions yet.")
        else:
            newest = versions.sort("registered_at").row(-1, named=True)
            reason = run_reason(common.settings(), newest["dagster_run_id"])
            st.markdown(
                f"Last retrain: **{newest['registered_model']} v{newest['version']}**, "
                f"registered {newest['registered_at']:%Y-%m-%d %H:%M} UTC — {reason}."
            )
            st.dataframe(
                versions.select("target", "version", "aliases", "registered_at", *REGISTRY_TAGS),
                hide_index=True,
                column_config={
                    "registered_at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                    "day": "trained on day",
                },
            )
            st.caption(
                "Promotions and rollbacks from the MLflow registry's tags. Roll back with "
                "`bikeshare rollback --city <city> --target <target>`."
            )
