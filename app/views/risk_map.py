"""Risk map: every station of a scored snapshot, coloured by its risk (the higher of
P(no bikes) and P(no docks) in 30 minutes), sized by capacity."""

import json
from dataclasses import dataclass

import common
import polars as pl
import pydeck as pdk
import streamlit as st
from pydeck.bindings.json_tools import default_serialize

from bikeshare_assets.dispatch import station_snapshot, stocked_out_now
from bikeshare_assets.features.labels import TARGETS

PREDICTION_COLUMNS = [
    "snapshot_at",
    "station_id",
    "bikes_available",
    "docks_available",
    "p_stockout_bikes",
    "p_stockout_docks",
    "model_version",
    "source",
    "flag_stockout_bikes",
    "flag_stockout_docks",
]
OUT_NOW_RGB = (90, 90, 110)  # slate: already empty/full, not a forecast


def colour(frame: pl.DataFrame, threshold: int) -> pl.DataFrame:
    """Green (safe) → amber → red (about to stock out), as RGB columns for deck.gl (plain
    numbers: list columns reach deck.gl as numpy arrays it cannot draw). A station already
    empty or full is slate, not red: its P is ~1 by definition, and red would hide the
    stations a van can still save among the hundreds that are out already."""
    r = pl.col("risk")
    low = r * 2  # 0..0.5 → green to amber
    high = (r - 0.5) * 2  # 0.5..1 → amber to red
    out_now = (pl.col("bikes_available") <= threshold) | (pl.col("docks_available") <= threshold)
    red, green, blue = OUT_NOW_RGB
    return frame.with_columns(
        red=pl.when(out_now)
        .then(red)
        .when(r < 0.5)
        .then(40 + low * 215)
        .otherwise(255 - high * 40),
        green=pl.when(out_now)
        .then(green)
        .when(r < 0.5)
        .then(160 + low * 40)
        .otherwise(200 - high * 175),
        blue=pl.when(out_now).then(blue).when(r < 0.5).then(70 - low * 70).otherwise(0),
        out_now=out_now.fill_null(False),
    ).with_columns(pl.col("red", "green", "blue").round().cast(pl.Int64))


class CompactDeck(pdk.Deck):
    """pydeck writes its JSON indented: a third of the ~0.5 MB a full city sends to the
    browser is whitespace. Streamlit sends `to_json()` as is."""

    def to_json(self) -> str:
        return json.dumps(self, sort_keys=True, default=default_serialize, separators=(",", ":"))


def deck(
    frame: pl.DataFrame, lat: float, lon: float, threshold: int, streets: bool = False
) -> pdk.Deck:
    """The stations as one deck.gl scatter layer. The JSON the browser gets is kept small
    (only what the tooltip shows, coordinates to ~1 m, integers), and radii are metres —
    deck.gl's default unit: pydeck turns any string argument into an expression, so
    `radius_units="meters"` reached deck.gl as an undefined accessor and drew every
    station as a disc covering the whole city (which software WebGL could not finish)."""
    models = frame.get_column("model_version").unique().drop_nulls()
    one_model = models.len() == 1
    located = frame.filter(pl.col("lat").is_not_null() & pl.col("lon").is_not_null())
    data = colour(located, threshold).select(
        "station_id",
        pl.col("name").fill_null("(not in the station list)"),
        pl.col("lat").round(5),
        pl.col("lon").round(5),
        "red",
        "green",
        "blue",
        radius=(20 + 8 * pl.col("capacity").fill_null(20).cast(pl.Float64).sqrt())
        .round()
        .cast(pl.Int64),
        bikes=pl.col("bikes_available").cast(pl.Int64),
        docks=pl.col("docks_available").cast(pl.Int64),
        p_bikes=(pl.col("p_stockout_bikes") * 100).round(0).cast(pl.Int64),
        p_docks=(pl.col("p_stockout_docks") * 100).round(0).cast(pl.Int64),
        capacity=pl.col("capacity").fill_null(0).cast(pl.Int64),
        now=pl.when(pl.col("out_now")).then(pl.lit(" — out now")).otherwise(pl.lit("")),
        # the model's name goes into the tooltip's text when the whole snapshot has one
        **({} if one_model else {"model": pl.col("model_version")}),
    )
    layer = pdk.Layer(
        "ScatterplotLayer",
        data=data.to_dicts(),  # records: pydeck would turn a pandas frame into them slowly
        get_position=["lon", "lat"],
        get_fill_color="[red, green, blue, 210]",
        get_radius="radius",
        radius_min_pixels=2,
        pickable=True,
    )
    model = models[0] if one_model else "{model}"
    tooltip = {
        "html": "<b>{name}</b> ({station_id}){now}<br/>bikes {bikes} · free docks {docks} · "
        "capacity {capacity}<br/>P(no bikes in 30 min) {p_bikes}%<br/>"
        f"P(no docks in 30 min) {{p_docks}}%<br/><small>model {model}</small>",
        "style": {"fontSize": "13px"},
    }
    return CompactDeck(
        layers=[layer],
        initial_view_state=pdk.ViewState(latitude=lat, longitude=lon, zoom=11.3),
        tooltip=tooltip,  # type: ignore[arg-type]
        # Carto's street tiles need the internet; offline (the embedded demo) the stations
        # alone draw the city, and a headless browser does not wait on unreachable tiles.
        **({"map_style": "light"} if streets else {"map_provider": None}),
    )


def flagged_fine_now(snap: pl.DataFrame, threshold: int) -> int:
    """Stations flagged for a target they are not stocked out on now (either target)."""
    conditions = [
        pl.col(f"flag_{t}").cast(pl.Boolean) & (pl.col(count) > threshold)
        for t, count in TARGETS.items()
        if f"flag_{t}" in snap.columns
    ]
    return snap.filter(pl.any_horizontal(conditions)).height if conditions else 0


@dataclass(frozen=True)
class BuiltDeck:
    """A deck already serialized: what st.pydeck_chart reads from a pydeck.Deck."""

    json: str
    _tooltip: dict

    def to_json(self) -> str:
        return self.json


@st.cache_data(show_spinner=False, max_entries=32)
def built_deck(
    city_key: str, partition: str, version: tuple | None, streets: bool
) -> tuple[str, dict]:
    """The map of one scored snapshot, built once per stored file (`version` changes when
    the partition is re-materialized): later visits and reruns skip the join, the colours
    and the 240 kB of JSON."""
    city_ = common.settings().cities[city_key]
    preds = common.lake().read(city_key, "stockout_predictions", [partition], PREDICTION_COLUMNS)
    snap = station_snapshot(preds, common.stations_for(city_key, partition))
    built = deck(snap, city_.latitude, city_.longitude, city_.stockout_threshold, streets)
    return built.to_json(), built._tooltip


with common.guard():
    city = common.city()
    st.title(f"Risk map — {city.display_name}")
    keys = common.scored_snapshots(city.key)
    chosen = keys[-1]
    if len(keys) > 1:
        chosen = st.select_slider(
            "Scored snapshot (UTC)",
            options=keys,
            value=keys[-1],
            format_func=lambda k: f"{k[:10]} {k[11:]}",
            help="Every snapshot the model scored; the newest is what a van should act on.",
        )
    preds = common.lake().read(city.key, "stockout_predictions", [chosen], PREDICTION_COLUMNS)
    snap = station_snapshot(preds, common.stations_for(city.key, chosen))
    threshold = city.stockout_threshold
    flagged = flagged_fine_now(snap, threshold)
    out = stocked_out_now(snap, threshold)
    fallback = preds.get_column("source").eq("fallback").mean()
    st.caption(f"Snapshot {common.local_time(city, chosen)}")
    cols = st.columns(4)
    cols[0].metric(
        "Flagged, fine now",
        flagged,
        help="Stations the served model flags (P ≥ its decision threshold) for no bikes or "
        "no docks in 30 minutes that are not empty/full now: the dispatch list's default.",
    )
    cols[1].metric("Empty now", out["stockout_bikes"].height)
    cols[2].metric("Full now", out["stockout_docks"].height)
    cols[3].metric("Stations scored", snap.height)
    if fallback:
        st.warning(
            f"{fallback:.0%} of this snapshot fell back to persistence (the endpoint did not "
            "answer): those stations show P = 1 if empty/full now, else 0. See System health."
        )
    streets = st.toggle("Street map (Carto tiles, needs internet)", value=False)
    version = common.lake().version(city.key, "stockout_predictions", chosen)
    st.pydeck_chart(BuiltDeck(*built_deck(city.key, chosen, version, streets)), height=600)
    st.caption(
        "Colour: the higher of P(no bikes) and P(no docks) in 30 minutes for stations fine "
        "now — green below 20 %, amber around 50 %, red above 80 %; slate: already empty or "
        "full (listed apart on the dispatch list). Size: station capacity. Hover a station "
        f"for its counts and probabilities. Model: `{preds.get_column('model_version')[0]}`."
    )
