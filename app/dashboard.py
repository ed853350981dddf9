"""Operations dashboard: `bikeshare dashboard` (or `make dashboard`) starts it with
`streamlit run app/dashboard.py` on the BIKESHARE_HOME (or S3 lake) the pipeline wrote.

Pages: where to send the vans (risk map, dispatch list) and whether to trust what they say
(model health, drift, system health). See docs/dashboard.md.
"""

import streamlit as st

st.set_page_config(page_title="Bike-share operations", page_icon="🚲", layout="wide")

import common  # noqa: E402  (set_page_config must come first)

PAGES = [
    st.Page(
        "views/risk_map.py",
        title="Risk map",
        icon=":material/map:",
        url_path="risk-map",
        default=True,
    ),
    st.Page(
        "views/dispatch.py",
        title="Dispatch list",
        icon=":material/local_shipping:",
        url_path="dispatch",
    ),
    st.Page(
        "views/model_health.py",
        title="Model health",
        icon=":material/monitoring:",
        url_path="model-health",
    ),
    st.Page("views/drift.py", title="Drift", icon=":material/thermostat:", url_path="drift"),
    st.Page(
        "views/system_health.py",
        title="System health",
        icon=":material/health_and_safety:",
        url_path="system-health",
    ),
]

navigation = st.navigation(PAGES)
with common.guard():
    common.sidebar()
navigation.run()
