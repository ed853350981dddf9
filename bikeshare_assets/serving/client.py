"""Calling a scoring endpoint that speaks the SageMaker container contract.

The scoring program is MLflow's own pyfunc scoring server (`mlflow models serve`, the same
server MLflow puts in SageMaker images): GET /ping, POST /invocations with a
`dataframe_split` JSON body, answer `{"predictions": [...]}`. One request per snapshot
carries every station; a single-station request is the same call with one row.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl
import requests

from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.features.labels import TARGETS


class EndpointError(Exception):
    """The endpoint did not give a usable answer; `kind` is unavailable|timeout|malformed|error."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class Scored:
    frame: pl.DataFrame  # p_<target>, flag_<target>, model_version — one row per input row
    latency_ms: float


JSON = "application/json"
PARQUET = "application/vnd.apache.parquet"
# A full-city batch as JSON costs the server ~18 ms just to parse (1,473 rows x 47 floats);
# as parquet ~8 ms. A handful of rows is cheaper as JSON. Both are MLflow scoring-server
# content types, so SageMaker accepts them too.
PARQUET_FROM_ROWS = 64


def request_body(features: pl.DataFrame) -> tuple[str, bytes]:
    """(content type, body) of the model's inputs."""
    inputs = features.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS)
    if inputs.height >= PARQUET_FROM_ROWS:
        buf = io.BytesIO()
        inputs.write_parquet(buf, compression="uncompressed", statistics=False)
        return PARQUET, buf.getvalue()
    data = [[None if (v is None or math.isnan(v)) else v for v in row] for row in inputs.rows()]
    return JSON, json.dumps(
        {"dataframe_split": {"columns": FEATURE_COLUMNS, "data": data}}
    ).encode()


def parse_response(body: bytes, expected_rows: int) -> pl.DataFrame:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EndpointError("malformed", f"response is not JSON ({exc}): {body[:200]!r}") from exc
    predictions = doc.get("predictions") if isinstance(doc, dict) else None
    required = [f"p_{t}" for t in TARGETS] + [f"flag_{t}" for t in TARGETS] + ["model_version"]
    if isinstance(predictions, dict):
        frame = _columnar_frame(predictions, required, expected_rows)
    elif isinstance(predictions, list):
        frame = _records_frame(predictions, required, expected_rows)
    else:
        raise EndpointError(
            "malformed", f"response has no `predictions` list or table: {body[:200]!r}"
        )
    if frame is None:
        return pl.DataFrame(schema={c: pl.Float64 for c in required})
    example = frame.head(1).to_dicts()
    # Text or nested values would otherwise fail below with a polars error instead of an
    # EndpointError, and the snapshot would not fall back.
    non_numeric = [
        c
        for c in required[:-1]
        if not (frame.schema[c].is_numeric() or frame.schema[c] in (pl.Boolean, pl.Null))
    ]
    if non_numeric:
        raise EndpointError("malformed", f"non-numeric values in {non_numeric}: {example!r}")
    nulls = [c for c in required[len(TARGETS) :] if frame.get_column(c).null_count()]
    if nulls:
        raise EndpointError("malformed", f"null values in {nulls}: {example!r}")
    # Every stored prediction names the model behind it; "" would make it untraceable.
    versions = frame.get_column("model_version").cast(pl.String)
    if (versions.str.strip_chars() == "").any():
        raise EndpointError("malformed", f"model_version is not a name: {example!r}")
    probabilities = frame.select(pl.col(f"p_{t}") for t in TARGETS)
    if (
        probabilities.select(((pl.all() < 0) | (pl.all() > 1) | pl.all().is_null()).any())
        .row(0)
        .count(True)
    ):
        raise EndpointError("malformed", "probabilities outside [0, 1] or missing")
    return frame.select(
        *[pl.col(f"p_{t}").cast(pl.Float64) for t in TARGETS],
        *[pl.col(f"flag_{t}").cast(pl.Boolean) for t in TARGETS],
        pl.col("model_version").cast(pl.String),
    )


def _columnar_frame(
    predictions: dict, required: list[str], expected_rows: int
) -> pl.DataFrame | None:
    """The StockoutModel's own answer: one list per output, `model_version` once."""
    missing = [c for c in required if c not in predictions]
    if missing:
        raise EndpointError("malformed", f"predictions lack fields {missing}")
    columns = {c: predictions[c] for c in required[:-1]}
    bad = [c for c, v in columns.items() if not isinstance(v, list) or len(v) != expected_rows]
    if bad:
        raise EndpointError(
            "malformed", f"{bad} are not lists of {expected_rows} values (one per row sent)"
        )
    version = predictions["model_version"]
    if not isinstance(version, str) or not version.strip():
        raise EndpointError("malformed", f"model_version is not a name: {version!r}")
    if expected_rows == 0:
        return None
    try:
        frame = pl.DataFrame(columns, strict=False)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise EndpointError("malformed", f"predictions are not a table ({exc})") from exc
    return frame.with_columns(model_version=pl.lit(version, pl.String))


def _records_frame(
    predictions: list, required: list[str], expected_rows: int
) -> pl.DataFrame | None:
    """One dict per row (MLflow's answer for a model returning a DataFrame)."""
    if len(predictions) != expected_rows:
        raise EndpointError(
            "malformed", f"{len(predictions)} predictions for {expected_rows} rows sent"
        )
    if predictions and not all(
        isinstance(p, dict) and set(required) <= set(p) for p in predictions
    ):
        raise EndpointError("malformed", f"predictions lack fields {required}: {predictions[0]!r}")
    if not predictions:
        return None
    try:
        return pl.DataFrame(predictions, schema_overrides={"model_version": pl.String})
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise EndpointError(
            "malformed", f"predictions are not a table ({exc}): {predictions[0]!r}"
        ) from exc


class Transport(Protocol):
    def post(self, body: bytes, timeout_s: float, content_type: str = JSON) -> bytes: ...


class HttpTransport:
    """A local (or any HTTP) endpoint: keep-alive session, /invocations."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def ping(self, timeout_s: float = 2.0) -> bool:
        try:
            return self.session.get(f"{self.url}/ping", timeout=timeout_s).status_code == 200
        except requests.RequestException:
            return False

    def post(self, body: bytes, timeout_s: float, content_type: str = JSON) -> bytes:
        try:
            response = self.session.post(
                f"{self.url}/invocations",
                data=body,
                headers={"Content-Type": content_type},
                timeout=timeout_s,
            )
        except requests.Timeout as exc:
            raise EndpointError(
                "timeout", f"{self.url} did not answer within {timeout_s}s"
            ) from exc
        except requests.ConnectionError as exc:
            raise EndpointError(
                "unavailable", f"{self.url} refused or dropped the connection"
            ) from exc
        except requests.RequestException as exc:  # e.g. the process died mid-answer
            raise EndpointError("unavailable", f"{self.url} broke off its answer: {exc}") from exc
        if response.status_code != 200:
            raise EndpointError(
                "error", f"{self.url} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.content


class SageMakerTransport:
    """A SageMaker real-time endpoint through the runtime API (same body, same answer)."""

    def __init__(self, endpoint_name: str, runtime_client: Any):
        self.endpoint_name = endpoint_name
        self.runtime = runtime_client

    def post(self, body: bytes, timeout_s: float, content_type: str = JSON) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        try:
            response = self.runtime.invoke_endpoint(
                EndpointName=self.endpoint_name, ContentType=content_type, Body=body
            )
        except ReadTimeoutError as exc:
            raise EndpointError(
                "timeout", f"SageMaker endpoint {self.endpoint_name}: {exc}"
            ) from exc
        except (ClientError, BotoCoreError) as exc:
            raise EndpointError(
                "unavailable", f"SageMaker endpoint {self.endpoint_name}: {exc}"
            ) from exc
        return response["Body"].read()


def score(transport: Transport, features: pl.DataFrame, timeout_s: float) -> Scored:
    content_type, body = request_body(features)
    started = time.perf_counter()
    raw = transport.post(body, timeout_s, content_type)
    latency_ms = (time.perf_counter() - started) * 1000
    return Scored(parse_response(raw, features.height), latency_ms)
