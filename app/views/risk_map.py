"""Risk map: every station of a scored snapshot, coloured by its risk (the higher of
P(no bikes) and P(no docks) in 30 minutes), sized by capacity.

Drawn by Vega-Lite (no WebGL, no map tiles: offline the dots draw the city). *Street map*
switches to a pydeck/deck.gl map on Carto's tiles, which needs the internet."""

import json
import math
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


# deck.gl's colours as a Vega scale: green (P 0) → amber (0.5) → red (1)
RISK_DOMAIN = [0.0, 0.5, 1.0]
RISK_RANGE = ["rgb(40,160,70)", "rgb(255,200,0)", "rgb(215,25,0)"]
OUT_NOW_CSS = "rgb({},{},{})".format(*OUT_NOW_RGB)
MAP_HEIGHT_PX = 620
MAP_MAX_WIDTH_PX = 1000


def map_frame(frame: pl.DataFrame, threshold: int) -> pl.DataFrame:
    """One row per located station with what the dots and the tooltip show (small: the
    browser gets it as Arrow)."""
    located = frame.filter(pl.col("lat").is_not_null() & pl.col("lon").is_not_null())
    bikes, docks = pl.col("bikes_available"), pl.col("docks_available")
    return located.select(
        "station_id",
        pl.col("name").fill_null("(not in the station list)"),
        pl.col("lat").round(5),
        pl.col("lon").round(5),
        "risk",
        pl.col("p_stockout_bikes").alias("p_bikes"),
        pl.col("p_stockout_docks").alias("p_docks"),
        bikes.cast(pl.Int64).alias("bikes"),
        docks.cast(pl.Int64).alias("docks"),
        pl.col("capacity").fill_null(0).cast(pl.Int64),
        status=pl.when(bikes <= threshold)
        .then(pl.lit("empty now"))
        .when(docks <= threshold)
        .then(pl.lit("full now"))
        .otherwise(pl.lit("fine now")),
        model=pl.col("model_version"),
    ).sort("risk")  # the riskiest dots are drawn last, on top


def map_extent(lat: pl.Series, lon: pl.Series) -> tuple[list[float], list[float], int]:
    """Longitude and latitude domains and a width in pixels that keep the city's shape at
    MAP_HEIGHT_PX: a degree of longitude is cos(latitude) as long as one of latitude, which
    is what a Mercator map shows at city scale. Zoom (scroll) keeps the ratio."""
    pad = 0.04  # of the extent on each side: edge stations keep their whole dot
    lat_lo, lat_hi, lon_lo, lon_hi = lat.min(), lat.max(), lon.min(), lon.max()
    k = math.cos(math.radians((lat_lo + lat_hi) / 2))
    lat_span = max(lat_hi - lat_lo, 1e-3) * (1 + 2 * pad)
    lon_span = max(lon_hi - lon_lo, 1e-3) * (1 + 2 * pad)
    width = round(MAP_HEIGHT_PX * lon_span * k / lat_span)
    if width > MAP_MAX_WIDTH_PX:  # wider than tall: more latitude, so the shape holds
        width = MAP_MAX_WIDTH_PX
        lat_span = lon_span * k * MAP_HEIGHT_PX / width
    else:
        lon_span = lat_span * width / (MAP_HEIGHT_PX * k)
    lat_mid, lon_mid = (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2
    return (
        [lon_mid - lon_span / 2, lon_mid + lon_span / 2],
        [lat_mid - lat_span / 2, lat_mid + lat_span / 2],
        width,
    )


def vega_map(data: pl.DataFrame) -> dict:
    """The stations as a Vega-Lite scatter on longitude/latitude (no WebGL, no tiles: the
    dots draw the city; Vega's code is the one the health pages' charts load anyway).
    Stations fine now are coloured by risk; those already empty or full are slate, under
    them. Scroll zooms, drag pans, double-click resets."""
    x_domain, y_domain, width = map_extent(data.get_column("lat"), data.get_column("lon"))
    position = {
        "x": {"field": "lon", "type": "quantitative", "scale": {"domain": x_domain}, "axis": None},
        "y": {"field": "lat", "type": "quantitative", "scale": {"domain": y_domain}, "axis": None},
        "size": {
            "field": "capacity",
            "type": "quantitative",
            "scale": {"range": [12, 110], "zero": True},
            "legend": None,
        },
        "tooltip": [
            {"field": "name", "title": "station"},
            {"field": "station_id", "title": "id"},
            {"field": "status", "title": "now"},
            {"field": "bikes", "title": "bikes"},
            {"field": "docks", "title": "free docks"},
            {"field": "capacity", "title": "capacity"},
            {"field": "p_bikes", "title": "P(no bikes in 30 min)", "format": ".0%"},
            {"field": "p_docks", "title": "P(no docks in 30 min)", "format": ".0%"},
            {"field": "model", "title": "model"},
        ],
    }
    return {
        "width": width,
        "height": MAP_HEIGHT_PX,
        "layer": [
            {
                "name": "out_now",  # the SVG group's class: out_now_marks
                "transform": [{"filter": "datum.status != 'fine now'"}],
                "mark": {"type": "circle", "color": OUT_NOW_CSS, "opacity": 0.55},
                "encoding": position,
            },
            {
                "name": "stations",  # stations_marks
                "transform": [{"filter": "datum.status == 'fine now'"}],
                "mark": {"type": "circle", "opacity": 0.9, "stroke": "white", "strokeWidth": 0.4},
                "params": [{"name": "zoom", "select": "interval", "bind": "scales"}],
                "encoding": {
                    **position,
                    "color": {
                        "field": "risk",
                        "type": "quantitative",
                        "title": "P(stockout in 30 min)",
                        "scale": {"domain": RISK_DOMAIN, "range": RISK_RANGE, "clamp": True},
                        "legend": {"format": ".0%", "orient": "right", "gradientLength": 200},
                    },
                },
            },
        ],
        "config": {"view": {"stroke": "#ddd"}},
    }


@st.cache_data(show_spinner=False, max_entries=32)
def built_map(city_key: str, partition: str, version: tuple | None) -> tuple[pl.DataFrame, dict]:
    """The map of one scored snapshot, built once per stored file (`version` changes when
    the partition is re-materialized)."""
    city_ = common.settings().cities[city_key]
    preds = common.lake().read(city_key, "stockout_predictions", [partition], PREDICTION_COLUMNS)
    snap = station_snapshot(preds, common.stations_for(city_key, partition))
    data = map_frame(snap, city_.stockout_threshold)
    return data, vega_map(data)


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
    if streets:
        st.pydeck_chart(BuiltDeck(*built_deck(city.key, chosen, version, True)), height=600)
    else:
        data, spec = built_map(city.key, chosen, version)
        # the spec's own width keeps the city's shape (map_extent): not the container's
        st.vega_lite_chart(data, spec, width="content", key="risk_map")
    st.caption(
        "Colour: the higher of P(no bikes) and P(no docks) in 30 minutes for stations fine "
        "now — green below 20 %, amber around 50 %, red above 80 %; slate: already empty or "
        "full (listed apart on the dispatch list). Size: station capacity. Hover a station "
        "for its counts and probabilities; scroll to zoom, drag to pan, double-click to "
        f"reset. Model: `{preds.get_column('model_version')[0]}`."
    )
