"""The ModelEndpoint resource: where each city's champion is served and how to call it.

`kind="local"` (embedded default) supervises MLflow's scoring server on 127.0.0.1;
`kind="sagemaker"` deploys the same model to a SageMaker real-time endpoint. Predictions
only ever see a Transport, so they do not care which.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from bikeshare_assets.serving.client import HttpTransport, SageMakerTransport, Transport
from bikeshare_assets.serving.deploy import LocalDeployer, SageMakerDeployer


class ModelEndpoint(dg.ConfigurableResource):
    kind: str = "local"  # local | sagemaker
    request_timeout_s: float = 2.0
    # local
    state_dir: str = ".bikeshare/serving"
    host: str = "127.0.0.1"
    ports: list[int] = Field(default_factory=lambda: [8080, 8081])
    startup_timeout_s: float = 90.0
    # sagemaker
    region: str = "eu-west-3"
    sagemaker_endpoint_url: str | None = None  # e.g. a moto server in tests
    s3_endpoint_url: str | None = None
    bucket: str = ""
    prefix: str = "sagemaker-models"
    image_uri: str = ""
    role_arn: str = ""
    instance_type: str = "ml.m5.large"
    canary_weight: float = 0.0

    def endpoint_name(self, city: str) -> str:
        return f"bikeshare-{city}-stockout"

    def local(self, city: str) -> LocalDeployer:
        return LocalDeployer(
            Path(self.state_dir) / city,
            host=self.host,
            ports=(self.ports[0], self.ports[1]),
            startup_timeout_s=self.startup_timeout_s,
            request_timeout_s=max(self.request_timeout_s, 10.0),
        )

    def serving_image(self) -> str:
        """BIKESHARE_SAGEMAKER_IMAGE, else the account's MLflow scoring image for this MLflow
        version in the endpoint's region (what `mlflow sagemaker build-and-push-container`
        pushes)."""
        if self.image_uri:
            return self.image_uri
        import boto3

        from bikeshare_assets.serving.images import mlflow_serving_image_uri

        sts = boto3.client("sts", region_name=self.region, endpoint_url=self.sagemaker_endpoint_url)
        return mlflow_serving_image_uri(sts.get_caller_identity()["Account"], self.region)

    def sagemaker(self, city: str, image_uri: str | None = None) -> SageMakerDeployer:
        import boto3

        sm = boto3.client(
            "sagemaker", region_name=self.region, endpoint_url=self.sagemaker_endpoint_url
        )
        s3 = boto3.client("s3", region_name=self.region, endpoint_url=self.s3_endpoint_url)
        return SageMakerDeployer(
            sm,
            s3,
            endpoint_name=self.endpoint_name(city),
            bucket=self.bucket,
            prefix=f"{self.prefix}/{city}",
            image_uri=image_uri or self.image_uri,
            role_arn=self.role_arn,
            instance_type=self.instance_type,
        )

    def deploy(self, city: str, model_uri: str, model_version: str, sample: pl.DataFrame) -> dict:
        if self.kind == "local":
            deployer = self.local(city)
            state, latency = deployer.deploy(model_uri, model_version, sample)
            deployed = {
                "kind": "local",
                "address": state.url,
                "pid": state.pid,
                "color": state.color,
                "model_version": state.model_version,
                "sample_latency_ms": round(latency, 2),
            }
            if deployer.notes:  # a taken port, a broken state file set aside, orphans stopped
                deployed["notes"] = "; ".join(deployer.notes)
            return deployed
        if not (self.role_arn and self.bucket):
            raise ValueError(
                f"{city}/model_endpoint: a SageMaker endpoint needs BIKESHARE_SAGEMAKER_ROLE_ARN "
                "and a bucket (BIKESHARE_SAGEMAKER_BUCKET or an s3:// BIKESHARE_STORAGE_ROOT); "
                "see docs/cicd.md."
            )
        import mlflow

        deployer = self.sagemaker(city, image_uri=self.serving_image())
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
            model_dir = next(local.rglob("MLmodel")).parent
            data_url = deployer.upload_model(model_dir, model_version)
        model_name = deployer.create_model(model_version, data_url)
        live = deployer.live_champion_model()
        if self.canary_weight > 0 and live is not None and live != model_name:
            # Canary: the new bundle takes `canary_weight` of the traffic beside the live one;
            # a later deploy with canary_weight=0 makes it the only variant.
            result = deployer.deploy(live, model_name, self.canary_weight)
        else:
            result = deployer.deploy(model_name)
        deployer.wait_in_service()
        return {
            "kind": "sagemaker",
            "address": deployer.endpoint_name,
            "model_version": model_version,
            "endpoint_config": result["config"],
            "previous_config": result["previous_config"] or "",
            "model_data": data_url,
            "variants": ", ".join(
                f"{v['VariantName']}={v['InitialVariantWeight']:g}" for v in result["variants"]
            ),
        }

    def transport(self, city: str) -> Transport | None:
        """How to call the city's live endpoint; None when nothing is serving."""
        return self.connect(city)[0]

    def connect(self, city: str) -> tuple[Transport | None, str | None]:
        """(how to call the city's live endpoint, None), or (None, why nothing is serving) —
        e.g. the local state file is unreadable or names a process that is not the server."""
        if self.kind == "local":
            status = self.local(city).status()
            if status.state is None:
                return None, status.problem
            return HttpTransport(status.state.url), None
        import boto3
        from botocore.config import Config

        # The request budget applies to SageMaker too: botocore's defaults (60 s read
        # timeout, retried) would hold a snapshot for minutes before it falls back.
        runtime = boto3.client(
            "sagemaker-runtime",
            region_name=self.region,
            endpoint_url=self.sagemaker_endpoint_url,
            config=Config(
                connect_timeout=self.request_timeout_s,
                read_timeout=self.request_timeout_s,
                retries={"mode": "standard", "total_max_attempts": 1},
            ),
        )
        return SageMakerTransport(self.endpoint_name(city), runtime), None
