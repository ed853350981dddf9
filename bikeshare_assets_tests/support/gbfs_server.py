"""A real GBFS HTTP server on 127.0.0.1 for tests, serving recorded feed documents.

Tests talk to it over real sockets, so timeouts, retries, status codes and headers are
exercised exactly as against a public feed, but offline and deterministically: each path
can be scripted with a queue of faults before it falls back to its recorded document.

    with GbfsServer(FIXTURES_DIR) as server:
        url = server.serve_system("v23", FIXTURES_DIR / "fixtures-v2.3/gbfs.json", {...})
        server.script("/v23/en/station_status.json", [Reply(status=500)])
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "gbfs-feeds"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body=None` serves the path's recorded document (or, for an
    error status, a short text body); `drop=True` closes the socket without answering."""

    status: int = 200
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/json"
    drop: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server saw it; `time` is time.monotonic() on arrival."""

    method: str
    path: str  # without the query string
    raw_path: str  # as sent, with the query string
    time: float
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in a slow reply must not block close()
    owner: GbfsServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: simple, and no stale pools

    def do_GET(self) -> None:
        self.server.owner._handle(self, head=False)

    def do_HEAD(self) -> None:
        self.server.owner._handle(self, head=True)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("gbfs test server: " + format, *args)


class GbfsServer:
    """A threaded HTTP server on an ephemeral 127.0.0.1 port.

    `routes` is a directory (URL path == path under it) or a mapping of URL path to bytes
    or file. Use as a context manager, or call start()/stop().
    """

    def __init__(self, routes: Path | str | Mapping[str, bytes | Path] | None = None) -> None:
        self._root: Path | None = None
        self._routes: dict[str, bytes] = {}
        self._lock = threading.Lock()
        if isinstance(routes, str | Path):
            self._root = Path(routes).resolve()
        elif routes is not None:
            for path, content in routes.items():
                self.add(path, content)
        self._scripts: dict[str, deque[Reply]] = {}
        self._requests: list[RecordedRequest] = []
        self._closing = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> GbfsServer:
        if self._httpd is not None:
            return self
        self._closing.clear()
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._closing.set()  # wakes handlers sleeping in a delayed reply
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GbfsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("GbfsServer is not running; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + _normalise(path)

    # -- content -------------------------------------------------------------------------

    def add(self, path: str, content: bytes | str | Path) -> str:
        """Serve `content` (bytes, text or a file, verbatim) at `path`; returns its URL path."""
        if isinstance(content, Path):
            data = content.read_bytes()
        elif isinstance(content, str):
            data = content.encode("utf-8")
        else:
            data = bytes(content)
        path = _normalise(path)
        with self._lock:
            self._routes[path] = data
        return path

    def serve_system(
        self,
        name: str,
        gbfs_json_path: Path | None,
        feeds: Mapping[str, Path | bytes],
        *,
        version: str = "2.3",
        languages: Sequence[str] = ("en",),
        ttl: int | None = None,
    ) -> str:
        """Publish a system at /<name>/gbfs.json listing exactly `feeds`, served from here.

        With a recorded gbfs.json its shape and top-level fields are kept (2.x: one list
        per language at /<name>/<lang>/<feed>.json; 3.0: data.feeds at /<name>/<feed>.json)
        and only the feed list is rewritten. Without one (Vélib', Ecobici publish their
        feeds but no gbfs.json was recorded), a document of `version` is built. Returns the
        absolute gbfs.json URL.
        """
        name = name.strip("/")
        if gbfs_json_path is not None:
            document: dict[str, Any] = json.loads(Path(gbfs_json_path).read_bytes())
        else:
            document = {"last_updated": int(time.time()), "ttl": 0, "version": version}
            if version.startswith("3"):
                document["data"] = {"feeds": []}
            else:
                document["data"] = {lang: {"feeds": []} for lang in languages}
        document = copy.deepcopy(document)
        if ttl is not None:
            document["ttl"] = ttl

        data = document.get("data")
        if not isinstance(data, dict):
            raise ValueError(f"{gbfs_json_path} has no data object; not a gbfs.json")

        def publish(prefix: str) -> list[dict[str, str]]:
            entries = []
            for feed, content in feeds.items():
                path = self.add(f"/{prefix}/{feed}.json", content)
                entries.append({"name": feed, "url": self.base_url + path})
            return entries

        if isinstance(data.get("feeds"), list):
            data["feeds"] = publish(name)
        else:
            langs = [k for k, v in data.items() if isinstance(v, dict) and "feeds" in v]
            if not langs:
                raise ValueError(f"{gbfs_json_path} lists no feeds in either GBFS shape")
            for lang in langs:
                data[lang]["feeds"] = publish(f"{name}/{lang}")

        self.add(f"/{name}/gbfs.json", json.dumps(document, ensure_ascii=False, indent=2))
        return self.url(f"/{name}/gbfs.json")

    # -- faults and records --------------------------------------------------------------

    def script(self, path: str, replies: Iterable[Reply]) -> None:
        """Queue replies for `path`; once used up, the path serves its recorded document."""
        with self._lock:
            self._scripts.setdefault(_normalise(path), deque()).extend(replies)

    def pending(self, path: str) -> int:
        """Scripted replies not yet used for `path`."""
        with self._lock:
            return len(self._scripts.get(_normalise(path), ()))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def hits(self, path: str) -> int:
        path = _normalise(path)
        return sum(1 for r in self.requests if r.path == path)

    def reset(self) -> None:
        """Forget scripts and recorded requests (routes stay)."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()

    # -- request handling (server threads) ------------------------------------------------

    def _handle(self, handler: _Handler, *, head: bool) -> None:
        path = _normalise(urlsplit(handler.path).path)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=handler.command,
                    path=path,
                    raw_path=handler.path,
                    time=time.monotonic(),
                    headers=dict(handler.headers.items()),
                )
            )
            queue = self._scripts.get(path)
            reply = queue.popleft() if queue else Reply()
        recorded = self._lookup(path)

        if reply.delay_s > 0 and self._closing.wait(reply.delay_s):
            return  # shutting down: give up on the slow reply
        if reply.drop:
            handler.close_connection = True
            return  # the socket closes with no status line at all

        status, body, content_type = reply.status, reply.body, reply.content_type
        if body is None:
            if status == 200 and recorded is not None:
                body = recorded
            else:
                status = 404 if status == 200 else status
                body = f"{status} {_phrase(status)}: {path}\n".encode()
                content_type = "text/plain; charset=utf-8"

        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            if not head:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout fired); nothing left to tell it

    def _lookup(self, path: str) -> bytes | None:
        with self._lock:
            if path in self._routes:
                return self._routes[path]
        if self._root is None:
            return None
        candidate = (self._root / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self._root) or not candidate.is_file():
            return None
        return candidate.read_bytes()


def _normalise(path: str) -> str:
    return "/" + path.lstrip("/")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def fixture_feeds(subdir: str) -> dict[str, Path]:
    """Feed name -> recorded document for one fixture set (e.g. "fixtures-v2.3"),
    without the autodiscovery files themselves."""
    return {
        p.stem: p
        for p in sorted((FIXTURES_DIR / subdir).glob("*.json"))
        if p.stem not in {"gbfs", "manifest"}
    }
