"""The SageMaker serving image: resolved per region with the SageMaker SDK when
BIKESHARE_SAGEMAKER_IMAGE is not set, and used by a real deploy (moto's server)."""

from __future__ import annotations

import uuid
from importlib import metadata

import pytest

from bikeshare_assets.definitions import build_endpoint
from bikeshare_assets.serving.images import mlflow_serving_image_uri
from bikeshare_assets.settings import get_settings
from bikeshare_assets_tests.serving.champions import Champions
from bikeshare_assets_tests.serving.conftest import MotoServer
from bikeshare_assets_tests.serving.test_sagemaker import Aws, sagemaker_settings_env

MOTO_ACCOUNT = "123456789012"  # moto's default account, what STS answers there


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("eu-west-3", "dkr.ecr.eu-west-3.amazonaws.com"),
        ("us-east-1", "dkr.ecr.us-east-1.amazonaws.com"),
        ("cn-north-1", "dkr.ecr.cn-north-1.amazonaws.com.cn"),  # the China partition
    ],
)
def test_the_mlflow_scoring_image_is_addressed_per_region_and_partition(region, host):
    uri = mlflow_serving_image_uri("111122223333", region, "3.17.2")
    assert uri == f"111122223333.{host}/mlflow-pyfunc:3.17.2"


def test_the_image_tag_is_the_installed_mlflow_version():
    uri = mlflow_serving_image_uri("111122223333", "eu-west-3")
    assert uri.endswith(f"/mlflow-pyfunc:{metadata.version('mlflow')}")


def test_a_deploy_without_an_image_setting_uses_the_accounts_mlflow_image(
    moto_aws: MotoServer, registry: Champions
):
    aws = Aws(moto_aws)
    bucket = f"bikeshare-models-{uuid.uuid4().hex[:8]}"
    aws.s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": moto_aws.region}
    )
    env = sagemaker_settings_env(moto_aws, bucket)
    del env["BIKESHARE_SAGEMAKER_IMAGE"]
    endpoint = build_endpoint(get_settings(env))
    assert endpoint.image_uri == ""
    city = f"city{uuid.uuid4().hex[:8]}"
    bundle = registry.bundles[0]

    result = endpoint.deploy(city, bundle.model_uri, bundle.label, registry.snapshot)

    (variant,) = aws.variants(result["endpoint_config"])
    image = aws.sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["Image"]
    assert image == (
        f"{MOTO_ACCOUNT}.dkr.ecr.{moto_aws.region}.amazonaws.com/"
        f"mlflow-pyfunc:{metadata.version('mlflow')}"
    )
