"""Every dashboard page through Streamlit's AppTest on real pipeline outputs, and the states
a user meets before or without them (fresh install, a city without predictions, S3 down)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets_tests.conftest import REPO, free_port
from bikeshare_assets_tests.dashboard.demo_outputs import CITY, DemoOutputs

APP = REPO / "app" / "dashboard.py"
PAGES = {
    "risk map": "views/risk_map.py",
    "dispatch": "views/dispatch.py",
    "model health": "views/model_health.py",
    "drift": "views/drift.py",
    "system health": "views/system_health.py",
}
THRESHOLD = 2


def open_page(page: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app as a user opens it on `env`, switched to `page`; no exception, ever."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    st.cache_resource.clear()  # settings and readers are cached per process
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page != "risk map":
        at.switch_page(PAGES[page])
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def lake_frame(outputs: DemoOutputs, asset: str, key: str) -> pl.DataFrame:
    path = Path(outputs.settings.storage_root) / asset / f"city={CITY}" / f"dt={key}"
    return pl.read_parquet(path / "part.parquet")


def newest_scored(outputs: DemoOutputs) -> tuple[str, pl.DataFrame]:
    for key in reversed(outputs.snapshots):
        frame = lake_frame(outputs, "stockout_predictions", key)
        if frame.height:
            return key, frame
    raise AssertionError("the demo outputs scored no snapshot")


def metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_risk_map_counts_the_newest_snapshot(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page("risk map", demo_outputs.env, monkeypatch)
    key, frame = newest_scored(demo_outputs)
    assert not at.error
    assert at.title[0].value.startswith("Risk map")
    assert at.select_slider[0].value == key
    assert metric(at, "Stations scored") == str(frame.height)
    assert metric(at, "Empty now") == str((frame["bikes_available"] <= THRESHOLD).sum())
    assert metric(at, "Full now") == str((frame["docks_available"] <= THRESHOLD).sum())
    flagged = frame.filter(
        pl.any_horizontal(
            pl.col(f"flag_{t}").cast(pl.Boolean) & (pl.col(count) > THRESHOLD)
            for t, count in TARGETS.items()
        )
    ).height
    assert flagged > 0
    assert metric(at, "Flagged, fine now") == str(flagged)


def test_risk_map_draws_every_station_with_vega(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The map is a Vega-Lite chart (no WebGL): every scored station is a dot with the
    tooltip's numbers; stations already empty/full are their own (slate) layer, the others
    coloured by risk; the map keeps the city's shape (a degree of longitude is cos(lat) of
    one of latitude)."""
    at = open_page("risk map", demo_outputs.env, monkeypatch)
    assert at.get("deck_gl_json_chart") == []  # no WebGL map unless Street map is on
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    data = pl.read_ipc_stream(chart.proto.data.data)
    _, frame = newest_scored(demo_outputs)
    assert sorted(data["station_id"]) == sorted(frame["station_id"])  # every station
    shown = data.join(frame, on="station_id").row(0, named=True)
    assert shown["p_bikes"] == shown["p_stockout_bikes"]
    assert (shown["bikes"], shown["docks"]) == (
        shown["bikes_available"],
        shown["docks_available"],
    )
    out_now = (frame["bikes_available"] <= THRESHOLD) | (frame["docks_available"] <= THRESHOLD)
    assert (data["status"] != "fine now").sum() == out_now.sum() > 0
    out_layer, stations = spec["layer"]
    assert (out_layer["name"], stations["name"]) == ("out_now", "stations")
    assert out_layer["mark"]["color"] == "rgb(90,90,110)"
    colour = stations["encoding"]["color"]
    assert colour["field"] == "risk" and colour["scale"]["domain"] == [0.0, 0.5, 1.0]
    tooltip = {t["field"] for t in stations["encoding"]["tooltip"]}
    assert {"name", "bikes", "docks", "capacity", "p_bikes", "p_docks", "model"} <= tooltip
    x, y = (stations["encoding"][c]["scale"]["domain"] for c in ("x", "y"))
    assert all(data["lon"].is_between(*x)) and all(data["lat"].is_between(*y))
    mid_lat = math.radians(sum(y) / 2)
    shape = (x[1] - x[0]) * math.cos(mid_lat) / (y[1] - y[0])
    assert shape == pytest.approx(spec["width"] / spec["height"], rel=0.01)


def test_street_map_layer_reaches_deckgl_as_plain_settings(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """*Street map* draws the stations with pydeck on Carto's tiles. pydeck turns string
    arguments into expressions: only accessors (get*) may be one, or deck.gl gets an
    undefined setting (radiusUnits "@@=meters" drew city-sized discs)."""
    at = open_page("risk map", demo_outputs.env, monkeypatch)
    at.toggle[0].set_value(True).run()
    assert not at.exception and at.get("vega_lite_chart") == []
    spec = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    (layer,) = spec["layers"]
    expressions = {
        name: value
        for name, value in layer.items()
        if isinstance(value, str) and value.startswith("@@=") and not name.startswith("get")
    }
    assert expressions == {}
    _, frame = newest_scored(demo_outputs)
    assert len(layer["data"]) == frame.height  # every station is on the map
    assert {"lat", "lon", "radius", "p_bikes", "p_docks"} <= set(layer["data"][0])


def test_dispatch_list_ranks_stations_still_fine_now(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page("dispatch", demo_outputs.env, monkeypatch)
    at.slider(key="min_p").set_value(0.3).run()
    assert not at.exception and not at.error
    _, frame = newest_scored(demo_outputs)
    ranked = at.dataframe[0].value
    assert len(ranked) > 0
    first = ranked.iloc[0]
    assert first["p"] >= 0.3
    count = "bikes_available" if first["risk_of"] == "no bikes" else "docks_available"
    assert first[count] > THRESHOLD  # not stocked out now
    # the highest P among stations fine now, computed from the lake file itself
    best = max(frame.filter(pl.col(c) > THRESHOLD)[f"p_{t}"].max() for t, c in TARGETS.items())
    assert first["p"] == pytest.approx(best)
    assert list(ranked["p"]) == sorted(ranked["p"], reverse=True)
    assert (ranked["p"] >= 0.3).all()
    empty, full = (
        (frame["bikes_available"] <= THRESHOLD).sum(),
        (frame["docks_available"] <= THRESHOLD).sum(),
    )
    assert f"Already stocked out: {empty} empty, {full} full" in [s.value for s in at.subheader]


def test_dispatch_list_lists_stations_already_out_on_demand(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page draws the ranked list and the moves; the empty/full stations are one table
    drawn when *List them* is on (a fragment: the rest of the page is not rerun)."""
    at = open_page("dispatch", demo_outputs.env, monkeypatch)
    assert len(at.dataframe) == 2  # at risk, moves
    assert [t.label for t in at.sidebar.selectbox] == []  # one city: nothing to pick
    assert (
        at.sidebar.markdown[0].value
        == f"**City:** {demo_outputs.settings.cities[CITY].display_name}"
    )
    at.toggle(key="list_stocked_out").set_value(True).run()
    assert not at.exception and not at.error
    listed = at.dataframe[-1].value
    _, frame = newest_scored(demo_outputs)
    empty = set(frame.filter(pl.col("bikes_available") <= THRESHOLD)["station_id"])
    full = set(frame.filter(pl.col("docks_available") <= THRESHOLD)["station_id"])
    assert set(listed.loc[listed["now"] == "empty", "station_id"]) == empty
    assert set(listed.loc[listed["now"] == "full", "station_id"]) == full


def test_dispatch_list_starts_with_every_station_the_model_flags(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrated probabilities of a new stockout rarely reach 50 %: the default Minimum P
    is the served decision threshold (rounded down to the slider's step), not 0.5."""
    at = open_page("dispatch", demo_outputs.env, monkeypatch)
    _, frame = newest_scored(demo_outputs)
    lowest_flagged = min(
        frame.filter(pl.col(f"flag_{t}").cast(pl.Boolean))[f"p_{t}"].min() for t in TARGETS
    )
    assert at.slider(key="min_p").value == pytest.approx(int(lowest_flagged * 20) / 20)
    ranked = at.dataframe[0].value
    flagged_fine_now = {
        (row["station_id"], t)
        for t, count in TARGETS.items()
        for row in frame.filter(
            pl.col(f"flag_{t}").cast(pl.Boolean) & (pl.col(count) > THRESHOLD)
        ).iter_rows(named=True)
    }
    labels = {"no bikes": "stockout_bikes", "no docks": "stockout_docks"}
    listed = set(zip(ranked["station_id"], ranked["risk_of"].map(labels), strict=True))
    assert flagged_fine_now <= listed


def test_model_health_matches_the_stored_quality_and_registry(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page("model health", demo_outputs.env, monkeypatch)
    assert not at.error
    day = demo_outputs.snapshots[0][:10]
    stored = lake_frame(demo_outputs, "model_quality", day)
    shown = [m.value for m in at.metric if m.label.startswith("PR-AUC")]
    expected = [f"{stored.filter(pl.col('target') == t)['pr_auc_24h'][0]:.3f}" for t in TARGETS]
    assert shown == expected
    versions = at.dataframe[0].value
    assert set(versions["target"]) == set(TARGETS)
    assert all("champion" in a for a in versions["aliases"])
    text = " ".join(m.value for m in at.markdown)
    # the quick champion was registered outside Dagster: the page says so instead of guessing
    assert "Last retrain: **paris_stockout_" in text
    assert "no Dagster run recorded on the version" in text
    assert "Decision thresholds" in text


def test_drift_page_says_what_it_waits_for(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page("drift", demo_outputs.env, monkeypatch)
    assert not at.error
    message = at.info[0].value
    assert "No drift reports for paris yet" in message
    assert "drift_report/city=paris/" in message


def test_system_health_shows_serving_freshness_and_quarantine(
    demo_outputs: DemoOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page("system health", demo_outputs.env, monkeypatch)
    assert not at.error
    assert metric(at, "Batch success") == "100.0%"
    assert metric(at, "Fallback rows") == "0.0%"
    freshness = at.dataframe[0].value.set_index("asset")
    assert freshness.loc["stockout_predictions", "status"] == "✓ fresh"
    assert freshness.loc["stockout_predictions", "newest"] == demo_outputs.snapshots[-1]
    assert freshness.loc["drift_report", "status"] == "— none yet"
    # the recording's row without a station code was dropped and kept in quarantine
    quarantine = at.dataframe[1].value
    assert "records_dropped" in set(quarantine["rule"])


# --------------------------------------------------------------------------------------
# before and without outputs


@pytest.mark.parametrize("page", list(PAGES))
def test_fresh_install_says_what_to_run(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"BIKESHARE_HOME": str(tmp_path / "fresh"), "DAGSTER_HOME": str(tmp_path / "dh")}
    at = open_page(page, env, monkeypatch)
    assert not at.error
    messages = " ".join(m.value for m in [*at.info, *at.warning])
    assert "bikeshare demo" in messages, messages
    assert not (tmp_path / "fresh" / "mlflow").exists()  # reading never creates a store


def test_city_without_predictions_names_the_asset_to_materialize(
    demo_outputs: DemoOutputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "partial"
    shutil.copytree(demo_outputs.home / "lake", home / "lake")
    shutil.rmtree(home / "lake" / "stockout_predictions")
    env = {**demo_outputs.env, "BIKESHARE_HOME": str(home)}
    for page in ("risk map", "dispatch"):
        at = open_page(page, env, monkeypatch)
        assert not at.error
        message = at.info[0].value
        assert "No scored snapshots for paris yet" in message
        assert "--select paris/stockout_predictions" in message


@pytest.mark.parametrize("page", ["risk map", "dispatch", "system health"])
def test_s3_unreachable_is_a_message_not_a_traceback(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "BIKESHARE_HOME": str(tmp_path / "home"),
        "BIKESHARE_STORAGE_ROOT": "s3://bikeshare-lake/prod",
        "BIKESHARE_S3_ENDPOINT_URL": closed,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_MAX_ATTEMPTS": "1",
    }
    at = open_page(page, env, monkeypatch)
    assert len(at.error) == 1
    text = at.error[0].value
    assert "The data lake cannot be reached" in text
    assert closed in text and "BIKESHARE_S3_ENDPOINT_URL" in text
