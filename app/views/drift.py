"""Drift: PSI per feature over time against the reference the serving champion was trained
on, with the warn/fail lines, and the stored Evidently report of each hour."""

import altair as alt
import common
import polars as pl
import streamlit as st

# Lines drawn when a report predates the thresholds column (the defaults of
# monitoring/drift.py's DriftThresholds; a current report carries its own).
DEFAULT_WARN, DEFAULT_FAIL = 0.2, 0.3


def psi_long(frame: pl.DataFrame) -> pl.DataFrame:
    """(partition, feature, psi) from a drift_report table: long (feature, psi columns) or
    wide (one psi_<feature> column per feature)."""
    if {"feature", "psi"} <= set(frame.columns):
        return frame.select("partition", "feature", pl.col("psi").cast(pl.Float64))
    wide = [c for c in frame.columns if c.startswith("psi_")]
    if not wide:
        raise ValueError(
            f"drift_report has neither feature/psi nor psi_<feature> columns: {frame.columns}"
        )
    return (
        frame.select("partition", *wide)
        .unpivot(index="partition", variable_name="feature", value_name="psi")
        .with_columns(pl.col("feature").str.strip_prefix("psi_"))
    )


with common.guard():
    city = common.city()
    st.title(f"Drift — {city.display_name}")
    lake = common.lake()
    common.require_partitions(city.key, "raw_station_status", "raw data")  # a fresh install
    keys = lake.partitions(city.key, "drift_report")
    if not keys:
        st.info(
            f"**No drift reports for {city.key} yet.** This page reads `{city.key}/drift_report` "
            f"(hourly partitions under `{lake.uri(f'drift_report/city={city.key}/')}`): per "
            "feature, the PSI of the hour's scored features against the serving model's "
            "training reference, with the Evidently report stored beside each partition. "
            "It is materialized by automation in live mode; after the replay demo run "
            f"`bikeshare materialize --select {city.key}/drift_report --latest`."
        )
        st.stop()
    frames = []
    for key in keys[-48:]:
        part = lake.read(city.key, "drift_report", [key])
        if part.height:
            frames.append(part.with_columns(partition=pl.lit(key)))
    if not frames:
        st.info(f"The {len(keys)} newest drift_report partitions are empty (no scored hour).")
        st.stop()
    table = pl.concat(frames, how="diagonal_relaxed")
    psi = psi_long(table)
    newest = table.filter(pl.col("partition") == keys[-1]) if "kind" in table.columns else table
    warn_psi, fail_psi = (
        (newest.get_column("warn_psi").max(), newest.get_column("fail_psi").max())
        if {"warn_psi", "fail_psi"} <= set(table.columns) and newest.height
        else (DEFAULT_WARN, DEFAULT_FAIL)
    )
    latest = psi.filter(pl.col("partition") == psi.get_column("partition").max())
    worst = latest.sort("psi", descending=True, nulls_last=True)
    # Only the rows the checks judge (model features and predicted probabilities); cadence
    # rows are listed in the table, not counted.
    checked = (
        newest.filter(pl.col("kind").is_in(["feature", "prediction"]))
        if "kind" in newest.columns
        else worst
    )
    failing = checked.filter(pl.col("psi") >= fail_psi).height
    warning = checked.filter((pl.col("psi") >= warn_psi) & (pl.col("psi") < fail_psi)).height
    cols = st.columns(3)
    cols[0].metric("Newest report (UTC hour)", keys[-1])
    cols[1].metric(f"Checked columns ≥ {fail_psi} (fail)", failing)
    cols[2].metric(f"Checked columns {warn_psi}–{fail_psi} (warn)", warning)

    top = worst.head(8).get_column("feature").to_list()
    shown = st.multiselect("Features", sorted(psi.get_column("feature").unique()), default=top)
    data = psi.filter(pl.col("feature").is_in(shown)).to_pandas()
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("partition:N", title="hour (UTC)"),
            y=alt.Y("psi:Q", title="PSI"),
            color="feature:N",
            tooltip=["partition", "feature", alt.Tooltip("psi:Q", format=".3f")],
        )
    )
    rules = (
        alt.Chart(pl.DataFrame({"psi": [warn_psi, fail_psi], "rule": ["warn", "fail"]}).to_pandas())
        .mark_rule(strokeDash=[6, 4])
        .encode(
            y="psi:Q",
            color=alt.Color("rule:N", scale=alt.Scale(range=["#d62728", "#ff9f1c"]), legend=None),
        )
    )
    st.altair_chart(lines + rules)
    shown_cols = [
        c
        for c in ("feature", "kind", "psi", "status", "current_mean", "reference_mean")
        if c in newest.columns
    ]
    st.dataframe(
        newest.select(shown_cols).sort("psi", descending=True, nulls_last=True)
        if "kind" in newest.columns
        else worst,
        hide_index=True,
    )

    reports = [
        u
        for u in lake.files_in_partition(city.key, "drift_report", keys[-1])
        if u.endswith(".html")
    ]
    for uri in reports:
        key = uri[len(lake.root.rstrip("/")) + 1 :]
        st.download_button(
            f"Evidently report {keys[-1]} ({uri.rsplit('/', 1)[-1]})",
            data=lake.read_bytes(key),
            file_name=f"drift_{city.key}_{keys[-1]}.html",
            mime="text/html",
        )
        st.caption(f"Stored at `{uri}`")
