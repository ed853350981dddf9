"""Dispatch list: stations predicted to stock out within 30 minutes that are still fine
now, ranked by probability; suggested van moves; stations already empty/full, apart."""

import math

import common
import polars as pl
import streamlit as st

from bikeshare_assets.dispatch import (
    TARGET_LABELS,
    at_risk,
    decision_thresholds,
    station_snapshot,
    stocked_out_now,
    suggest_moves,
    within_radius,
)
from bikeshare_assets.features.labels import TARGETS

ANYWHERE = "(anywhere)"
PERCENT = st.column_config.ProgressColumn
LIST_COLUMNS = {
    "station_id": st.column_config.TextColumn("station"),
    "name": st.column_config.TextColumn("name", width="large"),
    "risk_of": st.column_config.TextColumn("risk of"),
    "p": PERCENT("P in 30 min", format="percent", min_value=0.0, max_value=1.0),
    "bikes_available": st.column_config.NumberColumn("bikes", format="%d"),
    "docks_available": st.column_config.NumberColumn("free docks", format="%d"),
    "capacity": st.column_config.NumberColumn("capacity", format="%d"),
    "distance_km": st.column_config.NumberColumn("km", format="%.1f"),
}


@st.fragment
def stocked_out(out: dict[str, pl.DataFrame]) -> None:
    """The empty and full stations, listed on demand: a dispatcher sees these already, and
    the table is drawn only when asked (toggling reruns this fragment, not the page)."""
    shown = st.toggle(
        "List them",
        key="list_stocked_out",
        help="Out now — a dispatcher sees these already; listed apart, not ranked as risks.",
    )
    if not shown:
        return
    listed = pl.concat(
        [
            out["stockout_bikes"].with_columns(now=pl.lit("empty")),
            out["stockout_docks"].with_columns(now=pl.lit("full")),
        ]
    )
    st.dataframe(
        listed.select(
            "now", "station_id", "name", "bikes_available", "docks_available", "capacity"
        ),
        column_config={"now": st.column_config.TextColumn("now"), **LIST_COLUMNS},
        hide_index=True,
        key="stocked_out_table",
    )


with common.guard():
    city = common.city()
    st.title(f"Dispatch list — {city.display_name}")
    keys = common.scored_snapshots(city.key)
    newest = keys[-1]
    preds = common.lake().read(city.key, "stockout_predictions", [newest])
    snap = station_snapshot(preds, common.stations_for(city.key, newest))
    threshold = city.stockout_threshold
    st.caption(
        f"Snapshot {common.local_time(city, newest)} · model `{preds.get_column('model_version')[0]}`"
        f" · a station is stocked out at ≤ {threshold} bikes (or free docks)."
    )

    f1, f2, f3, f4 = st.columns([1.2, 1.2, 2, 1])
    target_choice = f1.selectbox(
        "Risk of",
        ["both", *TARGETS],
        format_func=lambda t: "no bikes or no docks" if t == "both" else TARGET_LABELS[t],
    )
    # Default: the served model's decision thresholds (rounded down to the slider's step),
    # so the list starts with every station the model flags; calibrated probabilities of a
    # new stockout rarely reach 50 %.
    flagged_from = decision_thresholds(preds)
    default_p = math.floor(min(flagged_from.values(), default=0.5) * 20) / 20
    min_p = f2.slider(
        "Minimum P",
        0.0,
        1.0,
        default_p,
        0.05,
        key="min_p",
        help="Starts at the served model's decision threshold ("
        + (
            ", ".join(f"{TARGET_LABELS[t]} {v:.2f}" for t, v in flagged_from.items())
            or "none flagged: 0.50"
        )
        + "), rounded down: every station the model flags is listed.",
    )
    names = snap.filter(pl.col("lat").is_not_null()).sort("name")
    labels = dict(
        zip(
            names.get_column("station_id").to_list(),
            (
                names.get_column("name").fill_null("") + " (" + names.get_column("station_id") + ")"
            ).to_list(),
            strict=True,
        )
    )
    around = f3.selectbox(
        "Around station", [ANYWHERE, *labels], format_func=lambda k: labels.get(k, k)
    )
    radius = f4.slider("Radius (km)", 0.5, 10.0, 2.0, 0.5, disabled=around == ANYWHERE)

    area = snap
    if around != ANYWHERE:
        centre = snap.filter(pl.col("station_id") == around).row(0, named=True)
        area = within_radius(snap, centre["lat"], centre["lon"], radius)
    targets = tuple(TARGETS) if target_choice == "both" else (target_choice,)
    ranked = at_risk(area, threshold, targets=targets, min_p=min_p)

    st.subheader(f"About to stock out, fine now: {ranked.height}")
    if ranked.height == 0:
        st.success(
            f"No station that is fine now reaches P ≥ {min_p:.0%} "
            + ("in this area." if around != ANYWHERE else "in this snapshot.")
        )
    else:
        shown = [c for c in LIST_COLUMNS if c in ranked.columns]
        st.dataframe(
            ranked.select(shown),
            column_config=LIST_COLUMNS,
            hide_index=True,
            height=min(420, 38 + 35 * ranked.height),
            key="dispatch_table",
        )

    st.subheader("Suggested moves")
    moves = suggest_moves(area, threshold, min_p=min_p, max_km=max(radius, 2.0))
    if moves.height == 0:
        st.info(
            "No pair of a station about to fill up (no docks) and one about to empty (no bikes) "
            f"within {max(radius, 2.0):.1f} km at P ≥ {min_p:.0%}."
        )
    else:
        st.caption(
            "Take bikes from a station about to run out of free docks to the nearest station "
            "about to run out of bikes; bikes to move bring both towards half full (at most one "
            "van load). ⚠ marks a station already full/empty."
        )
        st.dataframe(
            moves.select(
                from_=pl.when(pl.col("from_full_now")).then(pl.lit("⚠ ")).otherwise(pl.lit(""))
                + pl.col("from_name").fill_null(pl.col("from_station")),
                to=pl.when(pl.col("to_empty_now")).then(pl.lit("⚠ ")).otherwise(pl.lit(""))
                + pl.col("to_name").fill_null(pl.col("to_station")),
                bikes_to_move="bikes_to_move",
                distance_km="distance_km",
                from_bikes_docks=pl.format("{} / {}", "from_bikes", "from_docks"),
                p_no_docks="p_no_docks",
                to_bikes_docks=pl.format("{} / {}", "to_bikes", "to_docks"),
                p_no_bikes="p_no_bikes",
            ),
            column_config={
                "from_": "take bikes from",
                "to": "bring them to",
                "bikes_to_move": st.column_config.NumberColumn("bikes to move", format="%d"),
                "distance_km": st.column_config.NumberColumn("km", format="%.1f"),
                "from_bikes_docks": "from: bikes / docks",
                "p_no_docks": st.column_config.NumberColumn("from: P(no docks)", format="percent"),
                "to_bikes_docks": "to: bikes / docks",
                "p_no_bikes": st.column_config.NumberColumn("to: P(no bikes)", format="percent"),
            },
            hide_index=True,
        )

    out = stocked_out_now(area, threshold)
    st.subheader(
        f"Already stocked out: {out['stockout_bikes'].height} empty, "
        f"{out['stockout_docks'].height} full"
    )
    stocked_out(out)
