"""System health: the endpoint's latency and answers, data freshness per asset, and the
batches the data contract rejected."""

from datetime import UTC, datetime

import altair as alt
import common
import polars as pl
import streamlit as st

from bikeshare_assets.health import last_hours, serving_by_hour
from bikeshare_assets.read import freshness_table, reference_time

with common.guard():
    city = common.city()
    settings = common.settings()
    lake = common.lake()
    lake.check_reachable()
    st.title(f"System health — {city.display_name}")

    st.subheader("Endpoint: last 24 hours of scoring")
    keys = lake.partitions(city.key, "stockout_predictions")
    if not keys:
        st.info(
            f"No predictions for {city.key} yet, so no endpoint calls to show. Run "
            "`bikeshare demo` (or materialize model_endpoint, then stockout_predictions)."
        )
    else:
        preds = last_hours(
            lake.read(
                city.key,
                "stockout_predictions",
                keys[-200:],
                ["snapshot_at", "station_id", "source", "latency_ms"],
            )
        )
        hourly = serving_by_hour(preds)
        batches = preds.group_by("snapshot_at").agg(
            pl.col("latency_ms").first(), ok=(pl.col("source") == "model").all()
        )
        latency = batches.get_column("latency_ms").drop_nulls()
        cols = st.columns(4)
        cols[0].metric("Batch success", f"{batches.get_column('ok').mean():.1%}")
        cols[1].metric("Fallback rows", f"{(preds.get_column('source') == 'fallback').mean():.1%}")
        cols[2].metric("Latency p50", f"{latency.quantile(0.5):.0f} ms" if latency.len() else "n/a")
        cols[3].metric(
            "Latency p95", f"{latency.quantile(0.95):.0f} ms" if latency.len() else "n/a"
        )
        if hourly.height:
            data = hourly.unpivot(
                index="hour", on=["latency_p50_ms", "latency_p95_ms"], variable_name="series"
            ).to_pandas()
            left, right = st.columns(2)
            left.altair_chart(
                alt.Chart(data)
                .mark_line(point=True)
                .encode(
                    x=alt.X("hour:T", title="hour (UTC)"),
                    y=alt.Y("value:Q", title="ms per full-city batch"),
                    color=alt.Color("series:N", title=None),
                )
                .properties(height=220, title="Endpoint latency")
            )
            rates = hourly.unpivot(
                index="hour", on=["batch_success", "fallback_rate"], variable_name="series"
            ).to_pandas()
            right.altair_chart(
                alt.Chart(rates)
                .mark_line(point=True)
                .encode(
                    x=alt.X("hour:T", title="hour (UTC)"),
                    y=alt.Y("value:Q", title="share", scale=alt.Scale(domain=[0, 1])),
                    color=alt.Color("series:N", title=None),
                )
                .properties(height=220, title="Batch success and fallback rate")
            )

    st.subheader("Data freshness")
    ref = reference_time(city, settings.source)
    now = datetime.now(UTC)
    st.caption(
        f"Age of each asset's newest partition at {ref:%Y-%m-%d %H:%M} UTC"
        + (
            " (the end of the replayed period: its present)"
            if ref < now.replace(second=0, microsecond=0)
            else " (now)"
        )
        + f", against the allowance for a {city.cadence_for(settings.source)}-minute cadence."
    )
    fresh = freshness_table(lake, city, settings.source)
    # text marks, not emoji: a browser without an emoji font would draw ✅ as a box
    st.dataframe(
        fresh.with_columns(
            status=pl.col("status").replace(
                {"fresh": "✓ fresh", "stale": "⚠ stale", "missing": "— none yet"}
            )
        ),
        hide_index=True,
        height=(fresh.height + 1) * 35 + 3,  # every asset visible, no inner scrolling
        column_config={
            "age_min": st.column_config.NumberColumn("age (min)", format="%.0f"),
            "allowed_min": st.column_config.NumberColumn("allowed (min)", format="%.0f"),
        },
    )

    st.subheader("Rejected batches (quarantine)")
    rejected = [r for r in lake.quarantined() if r.get("city") == city.key]
    if not rejected:
        st.success("The data contract rejected nothing for this city.")
    else:
        st.dataframe(
            pl.DataFrame(
                [
                    {
                        "asset": r.get("asset"),
                        "partition": r.get("partition"),
                        "rule": r.get("rule"),
                        "message": r.get("message"),
                        "what to do": r.get("what_to_do"),
                    }
                    for r in rejected
                ]
            ),
            hide_index=True,
        )
        st.caption("Payloads are kept beside each reason; `bikeshare quarantine` lists them too.")
