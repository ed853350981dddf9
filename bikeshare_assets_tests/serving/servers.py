"""Real servers on 127.0.0.1 for the serving tests, and process bookkeeping.

* `StubEndpoint`: a tiny HTTP server speaking the scoring contract's shape (/ping,
  /invocations) that answers what a test scripts: slow, malformed, non-JSON, truncated.
* `free_ports(n)`: distinct free ports (never 8080/8081, which a developer's
  `bikeshare serve` may hold).
* `group_alive(pgid)`: whether any non-zombie process of a process group is left
  (LocalDeployer starts the scoring server in its own session: pgid == pid).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

RESERVED_PORTS = {8080, 8081}


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports on 127.0.0.1 (held open together so they differ)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
            port = sock.getsockname()[1]
            if port not in RESERVED_PORTS:
                ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `text` (e.g. a model dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and state[state.rfind(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def wait_group_gone(pgid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.1)
    return not group_alive(pgid)


def kill_group(pgid: int) -> None:
    """Last-resort cleanup of a scoring process group this test session started."""
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)


# --------------------------------------------------------------------------------------
# A scriptable endpoint


@dataclass
class Answer:
    """What the stub answers to POST /invocations. `body` may be a callable of the request
    body; `truncate` announces more bytes than it sends, then closes the connection."""

    body: bytes | Callable[[bytes], bytes] = b'{"predictions": []}'
    status: int = 200
    delay_s: float = 0.0
    content_type: str = "application/json"
    truncate: bool = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._send(200, b"\n", "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = self.rfile.read(length)
        self.server.owner.requests.append((self.headers.get("Content-Type", ""), request))
        answer = self.server.owner.answer
        if answer.delay_s:
            time.sleep(answer.delay_s)
        body = answer.body(request) if callable(answer.body) else answer.body
        if answer.truncate:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(answer.status, body, answer.content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # the client may have given up already (timeout)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not block shutdown
    owner: StubEndpoint


class StubEndpoint:
    """`with StubEndpoint(Answer(...)) as stub: HttpTransport(stub.url)`."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or Answer()
        self.requests: list[tuple[str, bytes]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StubEndpoint:
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
        self._thread.join(timeout=5)
