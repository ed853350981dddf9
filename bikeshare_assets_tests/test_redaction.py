"""redact_url: the one function every printed URL goes through."""

import pytest

from bikeshare_assets.redaction import redact_url


@pytest.mark.parametrize(
    ("raw", "printed"),
    [
        ("https://alice:pa55@mlflow.example.com/", "https://alice:***@mlflow.example.com/"),
        ("postgresql://u:p%40ss@db:5432/dagster", "postgresql://u:***@db:5432/dagster"),
        ("http://u:with@at@minio:9000/bucket", "http://u:***@minio:9000/bucket"),
        ("https://h/x?X-Amz-Signature=abc&y=1", "https://h/x?X-Amz-Signature=***&y=1"),
        ("https://h/x?a=1&token=abc#frag", "https://h/x?a=1&token=***#frag"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("https://user@host/", "https://user@host/"),
        ("8080,8081", "8080,8081"),
        (
            "cannot reach http://a:b@h:1/ (and https://c:d@e/)",
            "cannot reach http://a:***@h:1/ (and https://c:***@e/)",
        ),
    ],
)
def test_redact_url(raw: str, printed: str) -> None:
    assert redact_url(raw) == printed
