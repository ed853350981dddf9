"""GbfsClient and LiveGbfsSource against a real HTTP server on 127.0.0.1.

Nothing of the project is mocked: faults are produced by the server over real sockets, and
only time is injected (a clock we advance and a sleep that records instead of waiting).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from bikeshare_assets.ingest.gbfs_client import GbfsClient, LiveGbfsSource
from bikeshare_assets.ingest.sources import FeedDocument, SnapshotSource, SourceError
from bikeshare_assets_tests.support.gbfs_server import (
    FIXTURES_DIR,
    GbfsServer,
    Reply,
    fixture_feeds,
)

ECOBICI = FIXTURES_DIR / "ecobici-2024"
ECOBICI_STATUS = ECOBICI / "station_status_20240405210456.json"
ECOBICI_INFO = ECOBICI / "station_information_20240405210456.json"
VELIB = FIXTURES_DIR / "velib-2025"
V23 = FIXTURES_DIR / "fixtures-v2.3"
V30 = FIXTURES_DIR / "fixtures-v3.0"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> Iterator[GbfsServer]:
    with GbfsServer(FIXTURES_DIR) as srv:
        yield srv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def ecobici(server: GbfsServer) -> str:
    """Ecobici (Mexico City) as a GBFS 1.x system with a 5-minute gbfs.json ttl."""
    return server.serve_system(
        "ecobici",
        None,
        {"station_information": ECOBICI_INFO, "station_status": ECOBICI_STATUS},
        version="1.1",
        ttl=300,
    )


def make_client(url: str, clock: FakeClock, sleeps: list[float], **kwargs: Any) -> GbfsClient:
    options: dict[str, Any] = {"timeout_s": 2.0, "retries": 3, "backoff_s": 0.01}
    options.update(kwargs)
    return GbfsClient(url, clock=clock, sleep=sleeps.append, **options)


STATUS = "/ecobici/en/station_status.json"
GBFS = "/ecobici/gbfs.json"


# -- retries -----------------------------------------------------------------------------


def test_500_then_200_succeeds_after_one_retry(
    server: GbfsServer,
    ecobici: str,
    clock: FakeClock,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.script(STATUS, [Reply(status=500, body=b"upstream exploded")])
    client = make_client(ecobici, clock, sleeps)

    with caplog.at_level(logging.WARNING, logger="bikeshare_assets.ingest.gbfs_client"):
        doc = client.fetch("station_status")

    assert doc.body == ECOBICI_STATUS.read_bytes()
    assert doc.feed == "station_status"
    assert doc.url == server.url(STATUS)
    assert doc.received_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - doc.received_at).total_seconds()) < 5
    assert doc.headers["Content-Type"] == "application/json"
    assert server.hits(STATUS) == 2
    assert sleeps == [0.01]
    retry_logs = [r.getMessage() for r in caplog.records]
    assert len(retry_logs) == 1
    assert "HTTP 500" in retry_logs[0] and "attempt 1/4" in retry_logs[0]


def test_backoff_doubles_per_attempt(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(status=s) for s in (500, 502, 503, 504)])
    client = make_client(ecobici, clock, sleeps, retries=4, backoff_s=0.5, max_wait_s=3.0)

    doc = client.fetch("station_status")

    assert doc.body == ECOBICI_STATUS.read_bytes()
    assert server.hits(STATUS) == 5
    assert sleeps == [0.5, 1.0, 2.0, 3.0]  # 0.5 * 2**3 = 4.0 is capped by max_wait_s


def test_retries_exhausted_raises_with_last_status_and_body(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(status=500, body=f"boom {i}".encode()) for i in range(4)])
    client = make_client(ecobici, clock, sleeps, retries=3)

    with pytest.raises(SourceError) as info:
        client.fetch("station_status")

    err = info.value
    assert err.status == 500
    assert err.body == b"boom 3"
    assert err.url == server.url(STATUS)
    message = str(err)
    assert "station_status" in message
    assert server.url(STATUS) in message
    assert "4 attempt" in message
    assert "HTTP 500" in message
    assert server.hits(STATUS) == 4
    assert len(sleeps) == 3  # no pointless wait after the last attempt


def test_dropped_connection_is_retried(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(drop=True)])
    client = make_client(ecobici, clock, sleeps)

    doc = client.fetch("station_status")

    assert doc.body == ECOBICI_STATUS.read_bytes()
    assert server.hits(STATUS) == 2
    assert len(sleeps) == 1


def test_slow_reply_times_out_and_retries_are_exhausted(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(delay_s=1.0)] * 3)
    client = make_client(ecobici, clock, sleeps, timeout_s=0.2, retries=2, backoff_s=0.001)

    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        client.fetch("station_status")
    elapsed = time.monotonic() - started

    err = info.value
    assert "Timeout" in str(err)
    assert "3 attempt" in str(err)
    assert err.status is None
    assert err.body == b""
    assert server.hits(STATUS) == 3
    assert sleeps == [0.001, 0.002]
    assert elapsed < 2.0  # three 0.2 s timeouts, not three 1 s replies


def test_slow_reply_then_fast_reply_succeeds(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(delay_s=1.0)])
    client = make_client(ecobici, clock, sleeps, timeout_s=0.2)

    doc = client.fetch("station_status")

    assert doc.body == ECOBICI_STATUS.read_bytes()
    assert server.hits(STATUS) == 2


def test_404_fails_at_once_and_forces_rediscovery(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(status=404, body=b"no such feed")])
    client = make_client(ecobici, clock, sleeps)

    with pytest.raises(SourceError) as info:
        client.fetch("station_status")

    err = info.value
    assert err.status == 404
    assert err.body == b"no such feed"
    assert "404" in str(err) and "no such feed" in str(err)
    assert server.hits(STATUS) == 1
    assert sleeps == []
    assert server.hits(GBFS) == 1

    # The feed URL may have moved: the next fetch re-reads gbfs.json despite its ttl.
    client.fetch("station_status")
    assert server.hits(GBFS) == 2


def test_429_retry_after_seconds_is_honoured(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(status=429, headers={"Retry-After": "7"})])
    client = make_client(ecobici, clock, sleeps, backoff_s=0.01)

    doc = client.fetch("station_status")

    assert doc.body == ECOBICI_STATUS.read_bytes()
    assert sleeps == [7.0]
    assert server.hits(STATUS) == 2


def test_retry_after_is_capped(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(status=429, headers={"Retry-After": "3600"})])
    client = make_client(ecobici, clock, sleeps, max_wait_s=30.0)

    client.fetch("station_status")

    assert sleeps == [30.0]


def test_503_retry_after_http_date_is_honoured(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=20)
    server.script(
        STATUS, [Reply(status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})]
    )
    client = make_client(ecobici, clock, sleeps)

    client.fetch("station_status")

    assert len(sleeps) == 1
    assert 17.0 <= sleeps[0] <= 20.0


# -- bodies and ttl ----------------------------------------------------------------------


def test_malformed_json_is_returned_verbatim_and_not_cached(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(STATUS, [Reply(body=b"{not json")])
    client = make_client(ecobici, clock, sleeps)

    broken = client.fetch("station_status")
    assert broken.body == b"{not json"
    assert server.hits(STATUS) == 1

    # Same instant, well within Ecobici's ttl of 2 s: the broken body was not cached.
    fixed = client.fetch("station_status")
    assert fixed.body == ECOBICI_STATUS.read_bytes()
    assert server.hits(STATUS) == 2

    # A valid document is cached again.
    assert client.fetch("station_status") is fixed
    assert server.hits(STATUS) == 2


def test_ttl_is_respected(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    assert json.loads(ECOBICI_STATUS.read_bytes())["ttl"] == 2
    client = make_client(ecobici, clock, sleeps)

    first = client.fetch("station_status")
    clock.advance(1.9)
    second = client.fetch("station_status")
    assert second is first
    assert server.hits(STATUS) == 1

    clock.advance(0.2)  # 2.1 s after the first fetch: expired
    third = client.fetch("station_status")
    assert third is not first
    assert third.body == first.body
    assert server.hits(STATUS) == 2
    assert server.hits(GBFS) == 1  # gbfs.json has its own, longer ttl (300 s)


def test_ttl_zero_means_no_caching(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.serve_system("v23", V23 / "gbfs.json", fixture_feeds("fixtures-v2.3"))
    assert json.loads((V23 / "station_status.json").read_bytes())["ttl"] == 0
    client = make_client(url, clock, sleeps)

    client.fetch("station_status")
    client.fetch("station_status")

    assert server.hits("/v23/en/station_status.json") == 2


def test_max_ttl_caps_an_overlong_ttl(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.serve_system(
        "velib",
        None,
        {"station_status": VELIB / "station_status.json"},
        languages=("fr",),
    )
    client = make_client(url, clock, sleeps, language="fr", max_ttl_s=60)

    client.fetch("station_status")
    clock.advance(59)
    client.fetch("station_status")
    assert server.hits("/velib/fr/station_status.json") == 1
    clock.advance(2)  # Vélib' claims 3600 s, the cap says 60 s
    client.fetch("station_status")
    assert server.hits("/velib/fr/station_status.json") == 2


# -- autodiscovery -----------------------------------------------------------------------


def test_discovery_official_v23_language_shape(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    original = json.loads((V23 / "gbfs.json").read_bytes())
    listed = {f["name"] for f in original["data"]["en"]["feeds"]}
    feeds = {name: path for name, path in fixture_feeds("fixtures-v2.3").items() if name in listed}
    assert set(feeds) == listed  # every feed the document lists has a recorded body
    url = server.serve_system("v23", V23 / "gbfs.json", feeds)

    served = _get_json(url)
    assert served["version"] == "2.3"
    assert list(served["data"]) == ["en"]

    client = make_client(url, clock, sleeps)
    discovered = client.discover()

    assert discovered == {name: server.url(f"/v23/en/{name}.json") for name in listed}
    doc = client.fetch("station_information")
    assert doc.body == (V23 / "station_information.json").read_bytes()


def test_discovery_official_v30_flat_shape(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    original = json.loads((V30 / "gbfs.json").read_bytes())
    listed = {f["name"] for f in original["data"]["feeds"]}
    feeds = {name: path for name, path in fixture_feeds("fixtures-v3.0").items() if name in listed}
    assert set(feeds) == listed
    url = server.serve_system("v30", V30 / "gbfs.json", feeds)

    served = _get_json(url)
    assert served["version"] == "3.0"
    assert isinstance(served["data"]["feeds"], list)

    client = make_client(url, clock, sleeps)
    assert client.discover() == {name: server.url(f"/v30/{name}.json") for name in listed}
    doc = client.fetch("station_status")
    assert doc.body == (V30 / "station_status.json").read_bytes()


def test_discovery_is_cached_for_the_gbfs_json_ttl(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.serve_system("v30", V30 / "gbfs.json", fixture_feeds("fixtures-v3.0"))
    assert _get_json(url)["ttl"] == 60
    client = make_client(url, clock, sleeps)
    before = server.hits("/v30/gbfs.json")

    client.discover()
    clock.advance(59)
    client.discover()
    assert server.hits("/v30/gbfs.json") == before + 1
    clock.advance(2)
    client.discover()
    assert server.hits("/v30/gbfs.json") == before + 2


@pytest.mark.parametrize(
    ("languages", "wanted", "expected"),
    [
        (("en", "fr"), "fr", "fr"),  # the configured language
        (("fr", "en"), "de", "en"),  # not published: English
        (("es", "fr"), None, "es"),  # neither: the first one
    ],
)
def test_discovery_language_choice(
    server: GbfsServer,
    clock: FakeClock,
    sleeps: list[float],
    languages: tuple[str, ...],
    wanted: str | None,
    expected: str,
) -> None:
    url = server.serve_system(
        "multi", None, {"station_status": ECOBICI_STATUS}, languages=languages
    )
    client = make_client(url, clock, sleeps, language=wanted)

    assert client.discover() == {
        "station_status": server.url(f"/multi/{expected}/station_status.json")
    }


def test_real_velib_documents_via_autodiscovery(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.serve_system(
        "velib",
        None,
        {
            "station_information": VELIB / "station_information.json",
            "station_status": VELIB / "station_status.json",
        },
        languages=("fr",),
    )
    day = datetime(2026, 3, 4, tzinfo=UTC)
    source = LiveGbfsSource(
        make_client(url, clock, sleeps, language="fr"), now=lambda: day + timedelta(hours=9)
    )

    info = source.station_information(day, day + timedelta(days=1))
    assert info is not None
    assert info.body == (VELIB / "station_information.json").read_bytes()
    assert info.url == server.url("/velib/fr/station_information.json")

    client = source.client
    status = client.fetch("station_status")
    assert status.body == (VELIB / "station_status.json").read_bytes()
    parsed = json.loads(status.body)
    # Vélib' quirks the parser must live with: no last_updated, integer station ids,
    # and an hour-long ttl that makes a ttl-respecting client cache for an hour.
    assert "last_updated" not in parsed and "lastUpdatedOther" in parsed
    assert isinstance(parsed["data"]["stations"][0]["station_id"], int)
    assert parsed["ttl"] == 3600
    clock.advance(3599)
    assert client.fetch("station_status") is status
    assert server.hits("/velib/fr/station_status.json") == 1


def test_real_ecobici_documents_via_autodiscovery(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    client = make_client(ecobici, clock, sleeps)

    assert set(client.discover()) == {"station_information", "station_status"}
    info = client.fetch("station_information")
    status = client.fetch("station_status")

    assert info.body == ECOBICI_INFO.read_bytes()
    assert status.body == ECOBICI_STATUS.read_bytes()
    parsed = json.loads(status.body)
    # GBFS 1.x with string ids, no version field, and a 2 s ttl.
    assert len(parsed["data"]["stations"]) == 667
    assert "version" not in parsed and parsed["ttl"] == 2
    assert server.hits(GBFS) == 1  # one discovery served both feeds


def test_missing_feed_in_gbfs_json_names_the_feed(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.serve_system("infoonly", None, {"station_information": ECOBICI_INFO})
    client = make_client(url, clock, sleeps)

    with pytest.raises(SourceError) as info:
        client.fetch("station_status")

    message = str(info.value)
    assert "'station_status'" in message
    assert url in message
    assert "station_information" in message  # what it does list
    assert info.value.url == url


def test_missing_gbfs_json_is_a_clear_error(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.url("/nowhere/gbfs.json")
    client = make_client(url, clock, sleeps)

    with pytest.raises(SourceError) as info:
        client.discover()

    err = info.value
    assert err.status == 404
    assert url in str(err)
    assert "gbfs_url" in str(err) and "BIKESHARE_SOURCE=replay" in str(err)
    assert server.hits("/nowhere/gbfs.json") == 1


def test_unparseable_gbfs_json_is_a_clear_error(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    server.add("/broken/gbfs.json", b"<html>maintenance</html>")
    url = server.url("/broken/gbfs.json")

    with pytest.raises(SourceError) as info:
        make_client(url, clock, sleeps).discover()

    assert "not valid JSON" in str(info.value)
    assert url in str(info.value)
    assert info.value.body == b"<html>maintenance</html>"


def test_manifest_instead_of_gbfs_json_is_a_clear_error(
    server: GbfsServer, clock: FakeClock, sleeps: list[float]
) -> None:
    url = server.url("/fixtures-v3.0/manifest.json")  # served straight from the fixtures dir

    with pytest.raises(SourceError, match=r"manifest\.json"):
        make_client(url, clock, sleeps).discover()


def test_gbfs_json_5xx_is_retried(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    server.script(GBFS, [Reply(status=503)])
    client = make_client(ecobici, clock, sleeps)

    assert client.fetch("station_status").body == ECOBICI_STATUS.read_bytes()
    assert server.hits(GBFS) == 2


# -- LiveGbfsSource ----------------------------------------------------------------------

NOW = datetime(2026, 3, 4, 12, 3, tzinfo=UTC)


def _live(server: GbfsServer, url: str, clock: FakeClock, sleeps: list[float]) -> LiveGbfsSource:
    return LiveGbfsSource(make_client(url, clock, sleeps), now=lambda: NOW)


def test_live_source_serves_the_current_window(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    source = _live(server, ecobici, clock, sleeps)
    assert isinstance(source, SnapshotSource)

    doc = source.station_status(NOW.replace(minute=0), NOW.replace(minute=5))

    assert isinstance(doc, FeedDocument)
    assert doc.body == ECOBICI_STATUS.read_bytes()
    assert server.hits(STATUS) == 1


def test_live_source_tolerates_a_slightly_late_run(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    source = _live(server, ecobici, clock, sleeps)
    # [11:50, 11:55) ended 8 minutes ago; the default tolerance is 2 x 5 min.
    doc = source.station_status(NOW.replace(hour=11, minute=50), NOW.replace(hour=11, minute=55))
    assert doc is not None
    with pytest.raises(SourceError, match="BIKESHARE_SOURCE=replay"):
        # [11:45, 11:50) ended 13 minutes ago: too late for a live snapshot.
        source.station_status(NOW.replace(hour=11, minute=45), NOW.replace(hour=11, minute=50))


def test_live_source_refuses_a_past_window(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    source = _live(server, ecobici, clock, sleeps)
    start = datetime(2025, 9, 8, 10, 0, tzinfo=UTC)

    with pytest.raises(SourceError) as info:
        source.station_status(start, start + timedelta(minutes=5))

    message = str(info.value)
    assert "BIKESHARE_SOURCE=replay" in message
    assert "past" in message and "2025-09-08T10:00:00+00:00" in message
    assert info.value.url == ecobici
    assert server.hits(STATUS) == 0  # refused before touching the network


def test_live_source_refuses_a_future_window(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    source = _live(server, ecobici, clock, sleeps)

    with pytest.raises(SourceError, match="has not started"):
        source.station_status(NOW.replace(minute=5), NOW.replace(minute=10))
    assert server.hits(STATUS) == 0


def test_live_source_custom_lateness(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    source = LiveGbfsSource(
        make_client(ecobici, clock, sleeps), now=lambda: NOW, max_lateness=timedelta(hours=1)
    )
    doc = source.station_status(NOW.replace(hour=11, minute=5), NOW.replace(hour=11, minute=10))
    assert doc is not None and doc.body == ECOBICI_STATUS.read_bytes()


def test_live_station_list_only_for_the_day_under_way(
    server: GbfsServer, ecobici: str, clock: FakeClock, sleeps: list[float]
) -> None:
    """A live feed has no history: today's list for a past day would be stored under that
    day's date. Only the day under way (or one that ended minutes ago) is served."""
    source = _live(server, ecobici, clock, sleeps)
    today = NOW.replace(hour=0, minute=0)
    info = "/ecobici/en/station_information.json"

    doc = source.station_information(today, today + timedelta(days=1))
    assert doc is not None and doc.body == ECOBICI_INFO.read_bytes()
    assert server.hits(info) == 1

    just_over = LiveGbfsSource(
        make_client(ecobici, clock, sleeps), now=lambda: today + timedelta(minutes=10)
    )
    yesterday = today - timedelta(days=1)
    assert just_over.station_information(yesterday, today) is not None  # ended 10 min ago

    with pytest.raises(SourceError) as past:
        source.station_information(yesterday, today)  # ended 12 h ago
    message = str(past.value)
    assert "station_information" in message and "past" in message
    assert "2026-03-03T00:00:00+00:00" in message
    assert "today's station list, which would be stored under this past date" in message
    assert "BIKESHARE_SOURCE=replay" in message
    with pytest.raises(SourceError, match="has not started"):
        source.station_information(today + timedelta(days=1), today + timedelta(days=2))
    assert server.hits(info) == 2  # the refusals never touched the network


# -- the test server itself --------------------------------------------------------------


def test_server_serves_files_and_falls_back_after_script(server: GbfsServer) -> None:
    path = "/fixtures-v2.3/system_information.json"
    server.script(path, [Reply(status=500), Reply(status=200, body=b"scripted")])
    assert server.pending(path) == 2

    assert _get(server.url(path)) == (500, b"500 Internal Server Error: " + path.encode() + b"\n")
    assert _get(server.url(path)) == (200, b"scripted")
    assert _get(server.url(path)) == (200, (V23 / "system_information.json").read_bytes())
    assert _get(server.url("/../../etc/passwd"))[0] == 404
    assert server.pending(path) == 0
    assert server.hits(path) == 3
    times = [r.time for r in server.requests if r.path == path]
    assert times == sorted(times)


def test_server_shuts_down_cleanly_with_a_slow_reply_pending(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"{}")
    with GbfsServer(tmp_path) as srv:
        srv.script("/a.json", [Reply(delay_s=30)])
        client = GbfsClient(srv.url("/a.json"), timeout_s=0.1, retries=0)
        with pytest.raises(SourceError):
            client.discover()
        started = time.monotonic()
    assert time.monotonic() - started < 2.0


def _get(url: str) -> tuple[int, bytes]:
    response = requests.get(url, timeout=5)
    return response.status_code, response.content


def _get_json(url: str) -> Any:
    status, body = _get(url)
    assert status == 200
    return json.loads(body)
