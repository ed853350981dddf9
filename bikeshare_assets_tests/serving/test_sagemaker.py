"""The SageMaker path against moto's real server (S3, SageMaker, SageMaker runtime): model →
endpoint config → create endpoint, update with the previous config recorded, canary
variants, rollback; and the runtime transport, whose answers are checked, never trusted."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path

import boto3
import mlflow
import numpy as np
import polars as pl
import pytest
import yaml

from bikeshare_assets.definitions import build_endpoint
from bikeshare_assets.features.compute import FEATURE_COLUMNS
from bikeshare_assets.serving.assets import endpoint_answers
from bikeshare_assets.serving.client import EndpointError, SageMakerTransport, score
from bikeshare_assets.serving.predict import predict_snapshot
from bikeshare_assets.serving.resources import ModelEndpoint
from bikeshare_assets.settings import get_settings
from bikeshare_assets_tests.serving.champions import THRESHOLD, Champions
from bikeshare_assets_tests.serving.conftest import MotoServer
from bikeshare_assets_tests.serving.expect import assert_fallback
from bikeshare_assets_tests.serving.servers import Answer, StubEndpoint

IMAGE = "123456789012.dkr.ecr.eu-west-3.amazonaws.com/mlflow-pyfunc:3.17.2"
ROLE = "arn:aws:iam::123456789012:role/bikeshare-sagemaker"


def sagemaker_settings_env(moto: MotoServer, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "BIKESHARE_ENDPOINT": "sagemaker",
        "BIKESHARE_SAGEMAKER_IMAGE": IMAGE,
        "BIKESHARE_SAGEMAKER_ROLE_ARN": ROLE,
        "BIKESHARE_SAGEMAKER_BUCKET": bucket,
        "BIKESHARE_SAGEMAKER_ENDPOINT_URL": moto.url,
        "BIKESHARE_S3_ENDPOINT_URL": moto.url,
        "AWS_DEFAULT_REGION": moto.region,
        **extra,
    }


class Aws:
    def __init__(self, moto: MotoServer) -> None:
        self.sm = boto3.client("sagemaker", endpoint_url=moto.url, region_name=moto.region)
        self.s3 = boto3.client("s3", endpoint_url=moto.url, region_name=moto.region)

    def endpoint_config(self, endpoint_name: str) -> str:
        return self.sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]

    def variants(self, config: str) -> list[dict]:
        return self.sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]

    def tags(self, config: str) -> dict[str, str]:
        arn = self.sm.describe_endpoint_config(EndpointConfigName=config)["EndpointConfigArn"]
        return {t["Key"]: t["Value"] for t in self.sm.list_tags(ResourceArn=arn)["Tags"]}


@pytest.fixture
def aws(moto_aws: MotoServer) -> Aws:
    return Aws(moto_aws)


@pytest.fixture
def city() -> str:
    """A fresh city key per test: the moto server (and its endpoints) lives all session."""
    return f"city{uuid.uuid4().hex[:8]}"


@pytest.fixture
def endpoint(moto_aws: MotoServer, aws: Aws, registry: Champions) -> ModelEndpoint:
    """The ModelEndpoint resource exactly as Definitions build it for BIKESHARE_ENDPOINT=sagemaker."""
    bucket = f"bikeshare-models-{uuid.uuid4().hex[:8]}"
    aws.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": moto_aws.region}
    )
    resource = build_endpoint(get_settings(sagemaker_settings_env(moto_aws, bucket)))
    assert resource.kind == "sagemaker" and resource.bucket == bucket
    return resource


def model_tarball(aws: Aws, url: str) -> tarfile.TarFile:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    body = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return tarfile.open(fileobj=io.BytesIO(body), mode="r:gz")


# --------------------------------------------------------------------------------------


def test_first_deploy_creates_model_endpoint_config_and_endpoint(
    endpoint: ModelEndpoint, aws: Aws, registry: Champions, city: str, tmp_path: Path
) -> None:
    bundle = registry.bundles[0]
    result = endpoint.deploy(city, bundle.model_uri, bundle.label, registry.snapshot)
    name = f"bikeshare-{city}-stockout"
    assert result["kind"] == "sagemaker" and result["address"] == name
    assert result["model_version"] == bundle.label and result["previous_config"] == ""

    # the model: the serving image, the role, the tarball, the version it holds
    config = result["endpoint_config"]
    (variant,) = aws.variants(config)
    model = aws.sm.describe_model(ModelName=variant["ModelName"])
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE and model["ExecutionRoleArn"] == ROLE
    assert container["ModelDataUrl"] == result["model_data"]
    assert container["Environment"] == {"MLFLOW_MODEL_VERSION": bundle.label}
    assert variant["VariantName"] == "champion" and variant["InitialVariantWeight"] == 1.0
    assert variant["InstanceType"] == "ml.m5.large" and variant["InitialInstanceCount"] == 1

    # model.tar.gz has the MLflow model at its root, as SageMaker unpacks it into /opt/ml/model
    assert result["model_data"].startswith(f"s3://{endpoint.bucket}/sagemaker-models/{city}/")
    with model_tarball(aws, result["model_data"]) as tar:
        names = set(tar.getnames())
        assert {"MLmodel", "artifacts/meta.json"} <= names
        assert {"artifacts/stockout_bikes.txt", "artifacts/stockout_docks.txt"} <= names
        pyfunc = yaml.safe_load(tar.extractfile("MLmodel").read())["flavors"]["python_function"]  # type: ignore[union-attr]
        code = pyfunc.get("model_code_path") or pyfunc.get("python_model")
        assert Path(code).name in names  # the model's code (or pickle) travels with it
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    served = mlflow.pyfunc.load_model(str(tmp_path / "opt-ml-model"))
    x = registry.snapshot.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
    reference = mlflow.pyfunc.load_model(bundle.model_uri).predict(x)
    answer = served.predict(x)
    assert answer["model_version"] == bundle.label
    np.testing.assert_allclose(answer["p_stockout_bikes"], reference["p_stockout_bikes"])

    # the endpoint
    described = aws.sm.describe_endpoint(EndpointName=name)
    assert described["EndpointConfigName"] == config
    assert described["EndpointStatus"] == "InService"
    assert aws.tags(config) == {"previous_config": ""}


def test_second_deploy_updates_the_endpoint_and_records_the_previous_config(
    endpoint: ModelEndpoint, aws: Aws, registry: Champions, city: str
) -> None:
    first, second = registry.bundles
    one = endpoint.deploy(city, first.model_uri, first.label, registry.snapshot)
    two = endpoint.deploy(city, second.model_uri, second.label, registry.snapshot)
    name = one["address"]
    assert two["previous_config"] == one["endpoint_config"] != two["endpoint_config"]
    assert aws.endpoint_config(name) == two["endpoint_config"]
    assert aws.tags(two["endpoint_config"]) == {"previous_config": one["endpoint_config"]}
    (old_variant,) = aws.variants(one["endpoint_config"])
    (new_variant,) = aws.variants(two["endpoint_config"])
    assert old_variant["ModelName"] != new_variant["ModelName"]
    env = aws.sm.describe_model(ModelName=new_variant["ModelName"])["PrimaryContainer"]
    assert env["Environment"]["MLFLOW_MODEL_VERSION"] == second.label
    # one endpoint, updated in place (not a second endpoint)
    endpoints = aws.sm.list_endpoints(NameContains=city)["Endpoints"]
    assert [e["EndpointName"] for e in endpoints] == [name]


def test_canary_then_promotion_then_rollback(
    endpoint: ModelEndpoint, aws: Aws, registry: Champions, city: str, tmp_path: Path
) -> None:
    first, second = registry.bundles
    deployer = endpoint.sagemaker(city)
    models = {}
    for bundle in (first, second):
        local = Path(
            mlflow.artifacts.download_artifacts(
                bundle.model_uri, dst_path=str(tmp_path / str(bundle.version))
            )
        )
        model_dir = next(local.rglob("MLmodel")).parent
        url = deployer.upload_model(model_dir, bundle.label)
        models[bundle.label] = deployer.create_model(bundle.label, url)
    champion, challenger = models[first.label], models[second.label]
    assert deployer.create_model(first.label, "s3://ignored/again.tar.gz") == champion  # re-used

    base = deployer.deploy(champion)
    canary = deployer.deploy(champion, challenger, canary_weight=0.1)
    variants = {v["VariantName"]: v for v in aws.variants(canary["config"])}
    assert variants["champion"]["ModelName"] == champion
    assert variants["challenger"]["ModelName"] == challenger
    assert variants["champion"]["InitialVariantWeight"] == pytest.approx(0.9)
    assert variants["challenger"]["InitialVariantWeight"] == pytest.approx(0.1)
    live = {
        v["VariantName"]: v["CurrentWeight"]
        for v in aws.sm.describe_endpoint(EndpointName=deployer.endpoint_name)["ProductionVariants"]
    }
    assert live == pytest.approx({"champion": 0.9, "challenger": 0.1})
    assert aws.tags(canary["config"])["previous_config"] == base["config"]

    promoted = deployer.deploy(challenger)
    assert [v["ModelName"] for v in aws.variants(promoted["config"])] == [challenger]

    # rollback: back to the config that was live before (the canary), then to the first one
    assert deployer.rollback() == (promoted["config"], canary["config"])
    assert aws.endpoint_config(deployer.endpoint_name) == canary["config"]
    assert deployer.rollback() == (canary["config"], base["config"])
    assert aws.endpoint_config(deployer.endpoint_name) == base["config"]
    with pytest.raises(ValueError, match="no previous config"):
        deployer.rollback()
    assert aws.endpoint_config(deployer.endpoint_name) == base["config"]


def test_resource_canary_puts_the_new_bundle_beside_the_live_one(
    moto_aws: MotoServer, aws: Aws, registry: Champions, city: str
) -> None:
    """BIKESHARE_SAGEMAKER_CANARY_WEIGHT: a new bundle takes that share next to the live
    champion variant; the endpoint is waited for until InService."""
    bucket = f"bikeshare-models-{uuid.uuid4().hex[:8]}"
    aws.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": moto_aws.region}
    )
    env = sagemaker_settings_env(moto_aws, bucket, BIKESHARE_SAGEMAKER_CANARY_WEIGHT="0.2")
    resource = build_endpoint(get_settings(env))
    first, second = registry.bundles
    one = resource.deploy(city, first.model_uri, first.label, registry.snapshot)
    (only,) = aws.variants(one["endpoint_config"])  # nothing live yet: no canary
    two = resource.deploy(city, second.model_uri, second.label, registry.snapshot)
    weights = {v["VariantName"]: v for v in aws.variants(two["endpoint_config"])}
    assert {k: v["InitialVariantWeight"] for k, v in weights.items()} == pytest.approx(
        {"champion": 0.8, "challenger": 0.2}
    )
    assert weights["champion"]["ModelName"] == only["ModelName"]
    assert weights["challenger"]["ModelName"] != only["ModelName"]
    assert two["variants"] == "champion=0.8, challenger=0.2"
    assert aws.sm.describe_endpoint(EndpointName=two["address"])["EndpointStatus"] == "InService"


def test_rollback_of_a_missing_endpoint_is_a_clear_error(endpoint: ModelEndpoint, city: str):
    with pytest.raises(ValueError, match=f"bikeshare-{city}-stockout does not exist"):
        endpoint.sagemaker(city).rollback()


# --------------------------------------------------------------------------------------
# the runtime transport


def test_runtime_answer_is_parsed_and_moto_canned_body_is_malformed(
    endpoint: ModelEndpoint, registry: Champions, city: str
) -> None:
    """moto's invoke_endpoint answers a canned b"body": the parser must say so, and the
    snapshot falls back, flagged. (A few stations, so the body is JSON: moto 5.2's
    invoke_endpoint fails with HTTP 500 on a binary parquet body.)"""
    bundle = registry.bundles[0]
    endpoint.deploy(city, bundle.model_uri, bundle.label, registry.snapshot)
    transport = endpoint.transport(city)
    assert isinstance(transport, SageMakerTransport)
    assert transport.endpoint_name == f"bikeshare-{city}-stockout"
    stations = registry.snapshot.head(12)
    with pytest.raises(EndpointError) as caught:
        score(transport, stations, timeout_s=5)
    assert caught.value.kind == "malformed"
    assert "response is not JSON" in str(caught.value) and "b'body'" in str(caught.value)
    result = predict_snapshot(stations, transport, timeout_s=5, threshold=THRESHOLD)
    assert_fallback(stations, result, "malformed:")


def test_runtime_transport_honours_the_request_timeout(
    moto_aws: MotoServer, registry: Champions, city: str
) -> None:
    """A SageMaker endpoint that answers (correctly) only after 3 s, with a 0.5 s request
    timeout: the snapshot must fall back within the budget, not wait for botocore's 60 s
    default read timeout (and its retries)."""
    n = registry.snapshot.height
    good = {
        "p_stockout_bikes": 0.5,
        "p_stockout_docks": 0.5,
        "flag_stockout_bikes": 1,
        "flag_stockout_docks": 1,
        "model_version": "slow",
    }
    answer = Answer(body=json.dumps({"predictions": [good] * n}).encode(), delay_s=3.0)
    with StubEndpoint(answer) as stub:
        resource = ModelEndpoint(
            kind="sagemaker",
            region=moto_aws.region,
            sagemaker_endpoint_url=stub.url,
            request_timeout_s=0.5,
        )
        transport = resource.transport(city)
        started = time.monotonic()
        result = predict_snapshot(registry.snapshot, transport, timeout_s=0.5, threshold=THRESHOLD)
        elapsed = time.monotonic() - started
    assert len(stub.requests) == 1, "a timed-out request must not be retried"
    assert stub.requests[0][0] in ("application/json", "application/vnd.apache.parquet")
    assert_fallback(registry.snapshot, result, "timeout:")
    assert elapsed < 2.5


# --------------------------------------------------------------------------------------
# the endpoint_answers check: a real, timed invocation or a failure


def test_endpoint_answers_fails_when_the_sagemaker_endpoint_gives_no_usable_answer(
    endpoint: ModelEndpoint, registry: Champions, city: str
) -> None:
    """Deployed to moto, whose invoke_endpoint answers a canned b"body": the check invokes
    the endpoint and fails, instead of passing for want of a latency."""
    bundle = registry.bundles[0]
    deployed = endpoint.deploy(city, bundle.model_uri, bundle.label, registry.snapshot)
    assert "sample_latency_ms" not in deployed  # the SageMaker deploy times nothing itself

    check = endpoint_answers(
        endpoint.transport(city), registry.snapshot.head(12), bundle.label, timeout_s=5
    )

    assert check.passed is False
    assert check.metadata["error_kind"].value == "malformed"
    assert "sample_latency_ms" not in check.metadata
    assert "no usable answer" in (check.description or "")


def test_endpoint_answers_measures_a_real_invocation(moto_aws: MotoServer, city: str) -> None:
    """A SageMaker runtime that answers correctly: the check passes with the latency it timed;
    the same answer from another model version, or no endpoint at all, fails."""
    stations = 5
    sample = pl.DataFrame({c: [1.0] * stations for c in FEATURE_COLUMNS})
    row = {
        "p_stockout_bikes": 0.1,
        "p_stockout_docks": 0.2,
        "flag_stockout_bikes": 0,
        "flag_stockout_docks": 0,
        "model_version": "bikes:v3+docks:v2",
    }
    answer = Answer(body=json.dumps({"predictions": [row] * stations}).encode(), delay_s=0.2)
    with StubEndpoint(answer) as stub:
        resource = ModelEndpoint(
            kind="sagemaker", region=moto_aws.region, sagemaker_endpoint_url=stub.url
        )
        transport = resource.transport(city)
        good = endpoint_answers(transport, sample, "bikes:v3+docks:v2", timeout_s=5)
        stale = endpoint_answers(transport, sample, "bikes:v4+docks:v2", timeout_s=5)
        slow = endpoint_answers(transport, sample, "bikes:v3+docks:v2", timeout_s=5, budget_ms=50)

    assert len(stub.requests) == 3  # each check sent one real request
    assert good.passed is True
    assert 200 <= good.metadata["sample_latency_ms"].value < 5000
    assert stale.passed is False and "expected bikes:v4+docks:v2" in (stale.description or "")
    assert slow.passed is False and "budget 50 ms" in (slow.description or "")
    nothing = endpoint_answers(None, sample, "bikes:v3+docks:v2", timeout_s=5)
    assert nothing.passed is False
