"""The floor under the dashboard benchmark: the same pages, titles and element types as the
dashboard (a one-station Vega-Lite map with the risk map's two named layers, a three-row
table, a small chart) with no data behind them. What this app costs in the same browser is
what Streamlit and Vega cost by themselves; the dashboard's own share is the difference."""

import altair as alt
import pandas as pd
import streamlit as st

st.set_page_config(page_title="floor", layout="wide")
TABLE = pd.DataFrame({"station": ["a", "b", "c"], "p": [0.9, 0.8, 0.7]})


def risk_map() -> None:
    st.title("Risk map — floor")
    station = pd.DataFrame({"lon": [2.35], "lat": [48.86], "risk": [0.9]})
    layer = {
        "mark": "circle",
        "encoding": {
            "x": {"field": "lon", "type": "quantitative"},
            "y": {"field": "lat", "type": "quantitative"},
        },
    }
    st.vega_lite_chart(
        station,
        {
            "width": 700,
            "height": 620,
            "layer": [{**layer, "name": "out_now"}, {**layer, "name": "stations"}],
        },
    )


def dispatch() -> None:
    st.title("Dispatch list — floor")
    st.dataframe(TABLE, hide_index=True)


def system_health() -> None:
    st.title("System health — floor")
    st.altair_chart(alt.Chart(TABLE).mark_line().encode(x="station", y="p"))
    st.dataframe(TABLE, hide_index=True)


st.navigation(
    [
        st.Page(risk_map, title="Risk map", url_path="risk-map", default=True),
        st.Page(dispatch, title="Dispatch list", url_path="dispatch"),
        st.Page(system_health, title="System health", url_path="system-health"),
    ]
).run()
