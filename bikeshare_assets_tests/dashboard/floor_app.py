"""The floor under the dashboard benchmark: the same pages, titles and elements as the
dashboard (a one-station pydeck map, a three-row table, a small chart) with no data behind
them. What this app costs in the same browser is what Streamlit and deck.gl cost by
themselves; the dashboard's own share is the difference."""

import altair as alt
import pandas as pd
import pydeck as pdk
import streamlit as st

st.set_page_config(page_title="floor", layout="wide")
TABLE = pd.DataFrame({"station": ["a", "b", "c"], "p": [0.9, 0.8, 0.7]})


def risk_map() -> None:
    st.title("Risk map — floor")
    layer = pdk.Layer(
        "ScatterplotLayer",
        data=[{"lon": 2.35, "lat": 48.86, "radius": 300}],
        get_position=["lon", "lat"],
        get_fill_color=[220, 40, 0, 210],
        get_radius="radius",
    )
    view = pdk.ViewState(latitude=48.86, longitude=2.35, zoom=11.3)
    st.pydeck_chart(
        pdk.Deck(layers=[layer], initial_view_state=view, map_provider=None), height=600
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
