"""Live GBFS: autodiscovery, polite retries and ttl-aware caching over `requests`.

Public feeds are flaky (5xx during deploys, 429 when polled too hard, slow CDNs) and each
document says how long it stays valid (`ttl`). The client absorbs the transient failures,
never asks twice for a document that is still valid, and when it does give up it raises a
`SourceError` that carries what the server sent, so the caller can quarantine it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import requests

from bikeshare_assets import __version__
from bikeshare_assets.ingest.sources import FeedDocument, SourceError

logger = logging.getLogger(__name__)

# Feed operators ask polling clients to identify themselves.
USER_AGENT = f"bikeshare_assets/{__version__} python-requests/{requests.__version__}"

# Errors where the same request may well succeed a moment later.
_RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_BODY_EXCERPT_CHARS = 300
# A daily station list fetched this long after its day ended is still that day's (a run
# started just before midnight); later, it would be a later day's list stored under it.
INFORMATION_LATENESS = timedelta(minutes=15)


def _excerpt(body: bytes) -> str:
    """A short, printable piece of a body, so error messages stay readable."""
    text = body[:_BODY_EXCERPT_CHARS].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > _BODY_EXCERPT_CHARS else "")


def _ttl_of(document: Any) -> float | None:
    """The document's `ttl` in seconds, or None when it has no usable one."""
    if not isinstance(document, dict):
        return None
    ttl = document.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        return None
    if not math.isfinite(ttl) or ttl < 0:
        return None
    return float(ttl)


def _parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class GbfsClient:
    """One GBFS system, reached through its gbfs.json autodiscovery URL.

    Thread-safe for the cache bookkeeping; concurrent callers may occasionally both fetch
    an expired document, which is harmless.
    """

    def __init__(
        self,
        gbfs_url: str,
        *,
        language: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 60.0,
        max_ttl_s: float | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.gbfs_url = gbfs_url
        self.language = language
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        # Caps both the exponential backoff and a server's Retry-After, so a hostile or
        # misconfigured header cannot stall a 5-minute partition for an hour.
        self.max_wait_s = max_wait_s
        # Some operators declare a ttl far longer than their refresh (Vélib' says 3600 s
        # for station_status, which changes every minute); a cap keeps a 5-minute cadence
        # from being served one cached snapshot for an hour. None honours the ttl as is.
        self.max_ttl_s = max_ttl_s
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._feeds: dict[str, str] | None = None
        self._feeds_expire_at = -math.inf
        self._cache: dict[str, tuple[FeedDocument, float]] = {}

    # -- autodiscovery -------------------------------------------------------------------

    def discover(self) -> dict[str, str]:
        """Feed name -> URL from gbfs.json, re-read only once its ttl has passed."""
        with self._lock:
            if self._feeds is not None and self._clock() < self._feeds_expire_at:
                return dict(self._feeds)

        try:
            response = self._get("gbfs.json", self.gbfs_url)
        except SourceError as exc:
            raise SourceError(
                f"GBFS autodiscovery failed: {exc} Check the city's gbfs_url "
                "(cities.toml / BIKESHARE_CITIES_FILE), or run offline with "
                "BIKESHARE_SOURCE=replay.",
                url=exc.url,
                body=exc.body,
                status=exc.status,
            ) from exc

        body = response.content
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise SourceError(
                f"gbfs.json at {self.gbfs_url} is not valid JSON ({exc}); body starts "
                f"{_excerpt(body)!r}. Check that gbfs_url points at the system's gbfs.json "
                "autodiscovery file.",
                url=self.gbfs_url,
                body=body,
                status=response.status_code,
            ) from exc

        feeds = self._feeds_from(document, body, response.status_code)
        ttl = _ttl_of(document)
        with self._lock:
            self._feeds = feeds
            self._feeds_expire_at = self._clock() + ttl if ttl else -math.inf
        return dict(feeds)

    def _feeds_from(self, document: Any, body: bytes, status: int) -> dict[str, str]:
        """Read the feed list out of either the 1.x/2.x (per-language) or 3.0 (flat) shape."""

        def fail(reason: str) -> SourceError:
            return SourceError(
                f"gbfs.json at {self.gbfs_url} {reason}. Check that gbfs_url points at a "
                "system's gbfs.json autodiscovery file.",
                url=self.gbfs_url,
                body=body,
                status=status,
            )

        if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
            raise fail("has no 'data' object, so it is not a GBFS autodiscovery document")
        data: dict[str, Any] = document["data"]

        if isinstance(data.get("feeds"), list):  # 3.0, and some 1.x feeds that skip languages
            entries = data["feeds"]
        elif "datasets" in data:
            raise fail("is a GBFS manifest.json (a list of systems), not one system's gbfs.json")
        else:
            languages = [k for k, v in data.items() if isinstance(v, dict) and "feeds" in v]
            if not languages:
                raise fail("lists no feeds (expected data.feeds or data.<language>.feeds)")
            chosen = next(
                (lang for lang in (self.language, "en") if lang in languages), languages[0]
            )
            if self.language and chosen != self.language:
                logger.info(
                    "gbfs.json at %s has no %r language; using %r (available: %s)",
                    self.gbfs_url,
                    self.language,
                    chosen,
                    ", ".join(languages),
                )
            entries = data[chosen]["feeds"]
            if not isinstance(entries, list):
                raise fail(f"has a data.{chosen}.feeds that is not a list")

        feeds: dict[str, str] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            name, url = entry.get("name"), entry.get("url")
            if isinstance(name, str) and isinstance(url, str) and url:
                # The spec demands absolute URLs; resolving keeps relative ones working too.
                try:
                    url.encode("utf-8")
                    feeds[name] = urljoin(self.gbfs_url, url)
                except ValueError:  # "http://[::1" or a lone surrogate: not a URL
                    logger.warning(
                        "gbfs.json at %s: skipping feed %r, bad url", self.gbfs_url, name
                    )
        if not feeds:
            raise fail("lists no usable feeds (every entry needs a 'name' and a 'url')")
        return feeds

    def feed_url(self, feed: str) -> str:
        """The discovered URL of one feed; a clear error when the system does not publish it."""
        feeds = self.discover()
        if feed not in feeds:
            raise SourceError(
                f"gbfs.json at {self.gbfs_url} does not list the {feed!r} feed "
                f"(it lists: {', '.join(sorted(feeds))}). This system cannot be used for "
                "station-based stockout prediction; pick another city or gbfs_url.",
                url=self.gbfs_url,
            )
        return feeds[feed]

    # -- feeds ---------------------------------------------------------------------------

    def fetch(self, feed: str) -> FeedDocument:
        """The feed document, from cache while its ttl lasts, else from the network."""
        with self._lock:
            cached = self._cache.get(feed)
            if cached is not None and self._clock() < cached[1]:
                return cached[0]
            self._cache.pop(feed, None)

        url = self.feed_url(feed)
        try:
            response = self._get(feed, url)
        except SourceError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                # The feed URL may have moved; the next call should rediscover.
                with self._lock:
                    self._feeds = None
            raise
        document = FeedDocument(
            feed=feed,
            body=response.content,
            url=url,
            received_at=datetime.now(UTC),
            headers=dict(response.headers),
        )

        try:
            ttl = _ttl_of(json.loads(response.content))
        except (ValueError, RecursionError):
            # Handed back as received: the parser rejects and quarantines it. Not cached, so
            # the next call asks the feed again instead of repeating the broken document.
            ttl = None
        if ttl is not None and self.max_ttl_s is not None:
            ttl = min(ttl, self.max_ttl_s)
        if ttl:
            with self._lock:
                self._cache[feed] = (document, self._clock() + ttl)
        return document

    def _get(self, what: str, url: str) -> requests.Response:
        """GET with timeout and exponential backoff; only transient failures are retried."""
        attempts = self.retries + 1
        last_error = ""
        last_status: int | None = None
        last_body = b""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._session.get(
                    url,
                    timeout=self.timeout_s,
                    headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                )
            except _RETRYABLE_EXCEPTIONS as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            except requests.RequestException as exc:
                raise SourceError(
                    f"GBFS {what}: request to {url} failed and will not be retried: "
                    f"{type(exc).__name__}: {exc}",
                    url=url,
                ) from exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                last_status, last_body = status, response.content
                last_error = f"HTTP {status} {response.reason or ''}".rstrip()
                if status != 429 and status < 500:
                    raise SourceError(
                        f"GBFS {what}: {url} answered {last_error} (not retried: the request "
                        f"itself is wrong or the feed is gone); body starts "
                        f"{_excerpt(last_body)!r}",
                        url=url,
                        body=last_body,
                        status=status,
                    )
                if status in _RETRY_AFTER_STATUSES:
                    retry_after = _parse_retry_after(
                        response.headers.get("Retry-After"), datetime.now(UTC)
                    )

            if attempt + 1 >= attempts:
                break
            if retry_after is not None:
                wait, why = min(retry_after, self.max_wait_s), "Retry-After"
            else:
                wait, why = min(self.backoff_s * 2**attempt, self.max_wait_s), "backoff"
            logger.warning(
                "GBFS %s: attempt %d/%d to %s failed (%s); retrying in %.2fs (%s)",
                what,
                attempt + 1,
                attempts,
                url,
                last_error,
                wait,
                why,
            )
            self._sleep(wait)

        raise SourceError(
            f"GBFS {what}: {url} failed after {attempts} attempt(s); last error: {last_error}",
            url=url,
            body=last_body,
            status=last_status,
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LiveGbfsSource:
    """`SnapshotSource` over a live feed, which can only ever show the present.

    Refusing windows that are not "now" keeps a backfill from silently filling the past
    with today's snapshot.
    """

    def __init__(
        self,
        client: GbfsClient,
        *,
        now: Callable[[], datetime] = _utcnow,
        max_lateness: timedelta | None = None,
    ) -> None:
        self.client = client
        self._now = now
        # None: 2 x the window length, which tolerates a run that starts a little late.
        self.max_lateness = max_lateness

    @classmethod
    def from_url(
        cls,
        gbfs_url: str,
        *,
        language: str | None = None,
        now: Callable[[], datetime] = _utcnow,
        max_lateness: timedelta | None = None,
        **client_kwargs: Any,
    ) -> LiveGbfsSource:
        """Shortcut for the common case of one city's gbfs.json URL (+ its language)."""
        return cls(
            GbfsClient(gbfs_url, language=language, **client_kwargs),
            now=now,
            max_lateness=max_lateness,
        )

    def station_information(self, day_start: datetime, day_end: datetime) -> FeedDocument | None:
        """Today's document, only for the day under way: the feed has no history, so a past
        (or future) day would get today's station list stored under its date."""
        self._check_window(
            window_start=day_start,
            window_end=day_end,
            feed="station_information",
            lateness=INFORMATION_LATENESS,
        )
        return self.client.fetch("station_information")

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument | None:
        """The current snapshot, but only while the window is current."""
        self._check_window(window_start, window_end)
        return self.client.fetch("station_status")

    def _check_window(
        self,
        window_start: datetime,
        window_end: datetime,
        feed: str = "station_status",
        lateness: timedelta | None = None,
    ) -> None:
        for name, value in (("window_start", window_start), ("window_end", window_end)):
            if value.tzinfo is None:
                raise ValueError(f"{name}={value.isoformat()} must be timezone-aware (UTC)")
        if window_end <= window_start:
            raise ValueError(f"empty window [{window_start.isoformat()}, {window_end.isoformat()})")
        now = self._now().astimezone(UTC)
        if lateness is None:
            lateness = self.max_lateness
        if lateness is None:
            lateness = 2 * (window_end - window_start)
        what = "today's station list" if feed == "station_information" else "the current snapshot"
        if now < window_start:
            raise SourceError(
                f"{feed} window [{window_start.isoformat()}, {window_end.isoformat()}) "
                f"has not started yet (now is {now.isoformat()}); a live GBFS feed only serves "
                f"{what}, never a future one.",
                url=self.client.gbfs_url,
            )
        if now > window_end + lateness:
            raise SourceError(
                f"{feed} window [{window_start.isoformat()}, {window_end.isoformat()}) "
                f"is in the past (now is {now.isoformat()}, more than {lateness} after the "
                f"window ended): a live GBFS feed ({self.client.gbfs_url}) only serves "
                f"{what}, which would be stored under this past date. Materialize only the "
                "current partition in live mode; backfills need BIKESHARE_SOURCE=replay with a "
                "recording of this period (the city's [cities.<key>.replay] table).",
                url=self.client.gbfs_url,
            )


__all__ = ["USER_AGENT", "GbfsClient", "LiveGbfsSource"]
