"""Calling an endpoint that misbehaves: real HTTP servers on 127.0.0.1 that are slow, answer
garbage, die mid-answer or fail; every failure is a typed EndpointError with a clear
message, and a snapshot scored through it falls back to persistence, flagged in every row."""

from __future__ import annotations

import io
import json
import time

import pandas as pd
import polars as pl
import pytest

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.serving.client import (
    JSON,
    PARQUET,
    EndpointError,
    HttpTransport,
    score,
)
from bikeshare_assets.serving.predict import predict_snapshot
from bikeshare_assets_tests.serving.champions import THRESHOLD, simulated_dataset
from bikeshare_assets_tests.serving.expect import assert_fallback
from bikeshare_assets_tests.serving.servers import Answer, StubEndpoint, free_ports


@pytest.fixture(scope="module")
def snapshot() -> pl.DataFrame:
    """One simulated snapshot of 80 stations (a parquet-sized batch)."""
    features, _ = simulated_dataset(stations=80)
    newest = features.get_column("snapshot_at").max()
    return features.filter(pl.col("snapshot_at") == newest)


def rows(n: int, **override) -> list[dict]:
    row = {
        "p_stockout_bikes": 0.25,
        "p_stockout_docks": 0.75,
        "flag_stockout_bikes": 0,
        "flag_stockout_docks": 1,
        "model_version": "stockout_bikes:v1+stockout_docks:v1",
    }
    row.update(override)
    return [dict(row) for _ in range(n)]


def body(predictions) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


def columnar(n: int, **override) -> dict:
    """The StockoutModel's own answer shape: one list per output, model_version once."""
    table = {k: [v] * n for k, v in rows(1)[0].items() if k != "model_version"}
    table["model_version"] = rows(1)[0]["model_version"]
    table.update(override)
    return table


# --------------------------------------------------------------------------------------
# what is sent, and a good answer


def test_request_bodies_follow_the_scoring_contract(snapshot: pl.DataFrame) -> None:
    """A batch goes as parquet, a single station as MLflow `dataframe_split` JSON; both carry
    exactly the model's columns in order, missing values as nulls; a good answer comes back
    typed, one row per station."""
    single = snapshot.head(1).with_columns(pl.lit(None, pl.Float64).alias("temperature_c"))
    with StubEndpoint(Answer(body=body(rows(snapshot.height)))) as stub:
        batch = score(HttpTransport(stub.url), snapshot, timeout_s=5)
        stub.answer = Answer(body=body(rows(1)))
        one = score(HttpTransport(stub.url), single, timeout_s=5)

    (batch_type, batch_body), (one_type, one_body) = stub.requests
    assert batch_type == PARQUET
    sent = pd.read_parquet(io.BytesIO(batch_body))
    assert list(sent.columns) == FEATURE_COLUMNS
    assert len(sent) == snapshot.height
    assert sent["bikes_available"].tolist() == snapshot.get_column("bikes_available").to_list()

    assert one_type == JSON
    doc = json.loads(one_body)["dataframe_split"]
    assert doc["columns"] == FEATURE_COLUMNS
    assert len(doc["data"]) == 1
    assert doc["data"][0][FEATURE_COLUMNS.index("temperature_c")] is None

    assert batch.frame.height == snapshot.height and one.frame.height == 1
    assert batch.frame.schema["p_stockout_bikes"] == pl.Float64
    assert batch.frame.schema["flag_stockout_docks"] == pl.Boolean
    assert batch.frame.get_column("model_version").unique().to_list() == [
        "stockout_bikes:v1+stockout_docks:v1"
    ]
    assert batch.latency_ms > 0


# --------------------------------------------------------------------------------------
# slow


def test_slow_endpoint_times_out_and_the_snapshot_falls_back(snapshot: pl.DataFrame) -> None:
    with StubEndpoint(Answer(body=body(rows(snapshot.height)), delay_s=3.0)) as stub:
        transport = HttpTransport(stub.url)
        started = time.monotonic()
        with pytest.raises(EndpointError) as caught:
            score(transport, snapshot, timeout_s=0.5)
        assert time.monotonic() - started < 2.5
        assert caught.value.kind == "timeout"
        assert stub.url in str(caught.value) and "0.5s" in str(caught.value)

        started = time.monotonic()
        result = predict_snapshot(snapshot, transport, timeout_s=0.5, threshold=THRESHOLD)
        assert time.monotonic() - started < 2.5
    assert_fallback(snapshot, result, "timeout:")
    assert result.latency_ms is None
    assert result.frame.get_column("latency_ms").null_count() == snapshot.height


# --------------------------------------------------------------------------------------
# malformed

MALFORMED = {
    "no predictions key": (lambda n: b'{"oops": 1}', "no `predictions` list"),
    "not JSON": (lambda n: b"<html>502 Bad Gateway</html>", "response is not JSON"),
    "a JSON list": (lambda n: json.dumps(rows(n)).encode(), "no `predictions` list"),
    "one row short": (lambda n: body(rows(n - 1)), "predictions for"),
    "one row too many": (lambda n: body(rows(n + 1)), "predictions for"),
    "probability above 1": (lambda n: body(rows(n, p_stockout_bikes=1.7)), "outside [0, 1]"),
    "negative probability": (lambda n: body(rows(n, p_stockout_docks=-0.1)), "outside [0, 1]"),
    "null probability": (lambda n: body(rows(n, p_stockout_docks=None)), "outside [0, 1]"),
    "no model_version": (
        lambda n: body([{k: v for k, v in r.items() if k != "model_version"} for r in rows(n)]),
        "lack fields",
    ),
    "bare numbers": (lambda n: body([0.5] * n), "lack fields"),
    "probability as text": (
        lambda n: body(rows(n, p_stockout_bikes="0.7")),
        "non-numeric values in ['p_stockout_bikes']",
    ),
    "flag as text": (
        lambda n: body(rows(n, flag_stockout_bikes="yes")),
        "non-numeric values in ['flag_stockout_bikes']",
    ),
    "null model_version": (
        lambda n: body(rows(n, model_version=None)),
        "null values in ['model_version']",
    ),
    "table one row short": (
        lambda n: body(columnar(n, p_stockout_bikes=[0.5] * (n - 1))),
        "are not lists of",
    ),
    "table without model_version": (
        lambda n: body({k: v for k, v in columnar(n).items() if k != "model_version"}),
        "lack fields",
    ),
    "table with a list as model_version": (
        lambda n: body(columnar(n, model_version=["v1"] * n)),
        "model_version is not a name",
    ),
    "table with an empty model_version": (
        lambda n: body(columnar(n, model_version="")),
        "model_version is not a name",
    ),
    "table with a blank model_version": (
        lambda n: body(columnar(n, model_version="  ")),
        "model_version is not a name",
    ),
    "empty model_version": (
        lambda n: body(rows(n, model_version="")),
        "model_version is not a name",
    ),
    "table probability above 1": (
        lambda n: body(columnar(n, p_stockout_docks=[1.5] * n)),
        "outside [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_answer_is_a_clear_error_and_falls_back(
    snapshot: pl.DataFrame, case: str
) -> None:
    make, expected = MALFORMED[case]
    with StubEndpoint(Answer(body=make(snapshot.height))) as stub:
        transport = HttpTransport(stub.url)
        with pytest.raises(EndpointError) as caught:
            score(transport, snapshot, timeout_s=5)
        result = predict_snapshot(snapshot, transport, timeout_s=5, threshold=THRESHOLD)
    assert caught.value.kind == "malformed"
    assert expected in str(caught.value)
    assert_fallback(snapshot, result, "malformed:")
    assert expected in result.error  # type: ignore[operator]


# --------------------------------------------------------------------------------------
# failing endpoints


def test_endpoint_dying_mid_answer_falls_back(snapshot: pl.DataFrame) -> None:
    """The connection closes before the announced body is complete (a scoring process
    killed while answering)."""
    with StubEndpoint(Answer(body=body(rows(snapshot.height))[:40], truncate=True)) as stub:
        transport = HttpTransport(stub.url)
        with pytest.raises(EndpointError) as caught:
            score(transport, snapshot, timeout_s=5)
        result = predict_snapshot(snapshot, transport, timeout_s=5, threshold=THRESHOLD)
    assert caught.value.kind == "unavailable"
    assert stub.url in str(caught.value)
    assert_fallback(snapshot, result, "unavailable:")


def test_http_error_status_is_reported_with_the_servers_words(snapshot: pl.DataFrame) -> None:
    answer = Answer(body=b'{"error_code": "BAD_REQUEST", "message": "boom"}', status=400)
    with StubEndpoint(answer) as stub:
        transport = HttpTransport(stub.url)
        with pytest.raises(EndpointError) as caught:
            score(transport, snapshot, timeout_s=5)
        result = predict_snapshot(snapshot, transport, timeout_s=5, threshold=THRESHOLD)
    assert caught.value.kind == "error"
    assert "HTTP 400" in str(caught.value) and "boom" in str(caught.value)
    assert_fallback(snapshot, result, "error:")


def test_nothing_listening_is_unavailable(snapshot: pl.DataFrame) -> None:
    (port,) = free_ports(1)
    transport = HttpTransport(f"http://127.0.0.1:{port}")
    assert transport.ping(timeout_s=0.5) is False
    with pytest.raises(EndpointError) as caught:
        score(transport, snapshot, timeout_s=2)
    assert caught.value.kind == "unavailable"
    assert_fallback(snapshot, predict_snapshot(snapshot, transport, 2, THRESHOLD), "unavailable:")


def test_fallback_never_flags_a_station_whose_count_is_unknown(snapshot: pl.DataFrame) -> None:
    """A null count is not zero: persistence has nothing to persist, so no alarm."""
    unknown = snapshot.head(6).with_columns(
        pl.when(pl.int_range(pl.len()) < 3)
        .then(None)
        .otherwise(pl.col("bikes_available"))
        .alias("bikes_available"),
        pl.when(pl.int_range(pl.len()) >= 3)
        .then(None)
        .otherwise(pl.col("docks_available"))
        .alias("docks_available"),
    )
    result = predict_snapshot(unknown, None, timeout_s=2, threshold=THRESHOLD)
    frame = result.frame
    assert frame.get_column("p_stockout_bikes").head(3).to_list() == [0.0] * 3
    assert frame.get_column("flag_stockout_bikes").head(3).to_list() == [False] * 3
    assert frame.get_column("p_stockout_docks").tail(3).to_list() == [0.0] * 3
    assert frame.get_column("flag_stockout_docks").tail(3).to_list() == [False] * 3
    # The known counts are still judged: persistence at the threshold is a stockout.
    known = unknown.tail(3).get_column("bikes_available") <= THRESHOLD
    assert frame.get_column("flag_stockout_bikes").tail(3).to_list() == known.to_list()


def test_no_endpoint_at_all_falls_back_and_says_how_to_deploy(snapshot: pl.DataFrame) -> None:
    result = predict_snapshot(snapshot, None, timeout_s=2, threshold=THRESHOLD)
    assert_fallback(snapshot, result, "unavailable:")
    assert "bikeshare serve" in result.error  # type: ignore[operator]
