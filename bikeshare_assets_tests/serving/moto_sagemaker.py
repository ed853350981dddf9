"""moto's server (`moto.server.main`, what the `moto_server` executable runs) plus the one
SageMaker action moto 5.2 lacks: UpdateEndpoint.

Stock moto answers UpdateEndpoint with an HTTP 500 (no handler), so a second deploy and a
rollback could not be exercised at all. The action added here follows the AWS API
reference: the endpoint and the new endpoint config must exist, an endpoint that is not
InService cannot be updated, and afterwards DescribeEndpoint reports the new config and its
production variants (moto's CreateEndpoint is instantaneous too, so the update completes
at once). Everything else is moto's own code, unchanged.

    python -m bikeshare_assets_tests.serving.moto_sagemaker -H 127.0.0.1 -p 5123
"""

from __future__ import annotations

import sys
from typing import Any


def install_update_endpoint() -> None:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    if hasattr(SageMakerModelBackend, "update_endpoint"):
        return  # a moto that implements it: use moto's own

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> FakeEndpoint:
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None:
            arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
            raise ValidationError(message=f'Could not find endpoint "{arn}".')
        config = self.describe_endpoint_config(endpoint_config_name)  # ValidationError if absent
        if endpoint.endpoint_status != "InService":
            raise ValidationError(
                message=f"Cannot update in-progress endpoint {endpoint.arn} "
                f"(status {endpoint.endpoint_status})."
            )
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        endpoint.last_modified_time = utcnow()
        return endpoint

    def update_endpoint_response(self: Any) -> ActionResult:
        endpoint = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerModelBackend.update_endpoint = update_endpoint  # type: ignore[attr-defined]
    SageMakerResponse.update_endpoint = update_endpoint_response  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    install_update_endpoint()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
