"""A real HTTP stand-in for Slack on 127.0.0.1: the Web API's `chat.postMessage` (what
`slack_sdk.WebClient` posts with base_url pointed here) and an incoming-webhook path.

    with SlackServer() as slack:
        env = {"BIKESHARE_SLACK_API_URL": slack.api_url, "BIKESHARE_SLACK_TOKEN": "xoxb-test"}
        ...
        assert [m["text"] for m in slack.messages]

`fail_with` makes it answer like a broken Slack (an HTTP error status, or `ok: false`).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

WEBHOOK_PATH = "/services/T000/B000/webhook-secret"


class SlackServer:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []  # every accepted post, in order
        self.requests: list[dict[str, Any]] = []  # every post, accepted or not
        self.fail_with: int | str | None = None  # HTTP status, or a Slack error string
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                kind = self.headers.get("Content-Type", "")
                body = (
                    json.loads(raw)
                    if "json" in kind
                    else {k: v[0] for k, v in parse_qs(raw).items()}
                )
                record = {
                    "path": self.path,
                    "auth": self.headers.get("Authorization", ""),
                    **body,
                }
                with owner._lock:
                    owner.requests.append(record)
                    failure = owner.fail_with
                    if failure is None:
                        owner.messages.append(record)
                if isinstance(failure, int):
                    self._answer(failure, b"internal_error", "text/plain")
                elif self.path == WEBHOOK_PATH:
                    self._answer(
                        200 if failure is None else 400,
                        b"ok" if failure is None else failure.encode(),
                        "text/plain",
                    )
                elif self.path.endswith("/chat.postMessage"):
                    answer = (
                        {"ok": True, "channel": body.get("channel"), "ts": "1.0"}
                        if failure is None
                        else {"ok": False, "error": failure}
                    )
                    self._answer(200, json.dumps(answer).encode(), "application/json")
                else:
                    self._answer(404, b"unknown method", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """What BIKESHARE_SLACK_API_URL is set to (slack_sdk's base_url)."""
        return f"{self.base_url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}{WEBHOOK_PATH}"

    def __enter__(self) -> SlackServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
