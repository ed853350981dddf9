"""Which container image a SageMaker endpoint runs: MLflow's pyfunc scoring server, the same
program `LocalDeployer` runs on 127.0.0.1.

`mlflow sagemaker build-and-push-container` builds that image and pushes it to the account's
own ECR as repository `mlflow-pyfunc`, tagged with the MLflow version; a model logged with
MLflow 3.17.2 is served by `mlflow-pyfunc:3.17.2`. Its address differs per region and per AWS
partition (`amazonaws.com` in most regions, `amazonaws.com.cn` in China, others in the
isolated partitions): the SageMaker SDK's region table knows them, while MLflow's own
template hard-codes `amazonaws.com`.
"""

from __future__ import annotations

from importlib import metadata

MLFLOW_PYFUNC_REPOSITORY = "mlflow-pyfunc"  # mlflow.sagemaker.DEFAULT_IMAGE_NAME


def mlflow_serving_image_uri(
    account_id: str,
    region: str,
    mlflow_version: str | None = None,
    repository: str = MLFLOW_PYFUNC_REPOSITORY,
) -> str:
    """ECR URI of the MLflow scoring image in `account_id`'s registry in `region`."""
    # The SageMaker SDK takes seconds to import: only a SageMaker deploy pays for it.
    from sagemaker.core.common_utils import get_domain_for_region

    version = mlflow_version or metadata.version("mlflow")
    domain = get_domain_for_region(region)
    return f"{account_id}.dkr.ecr.{region}.{domain}/{repository}:{version}"
