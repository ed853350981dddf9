"""One place that makes URLs safe to print: `bikeshare env`, the demo and error messages
echo MLFLOW_TRACKING_URI, BIKESHARE_S3_ENDPOINT_URL and friends, which may carry a password
(`https://user:secret@host`) or a token in the query string."""

from __future__ import annotations

import re

REDACTED = "***"

# scheme://user:password@ — the password runs to the last "@" before the path.
_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/?#]*@")
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&](?:password|passwd|pwd|token|access_token|auth|secret|client_secret|api_key"
    r"|apikey|key|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token)=)"
    r"[^&\s#]*",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with every password in a URL's user info and
    every secret-looking query parameter replaced by ***; the user name, host and path stay,
    so the printed value still says where it points."""
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['head']}{REDACTED}", text)
