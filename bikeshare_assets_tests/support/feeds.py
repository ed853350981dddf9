"""Run one feed document through the raw layer's per-partition path, without Dagster.

`DocumentSource` is a `SnapshotSource` that hands back exactly the bytes a test gives it
(the way a live feed hands back whatever it serves), so hostile documents go through the
project's real parse → contract → quarantine path in `ingest_status` / `ingest_information`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from bikeshare_assets.cities import City, load_cities
from bikeshare_assets.ingest.assets import PartitionResult, ingest_information, ingest_status
from bikeshare_assets.ingest.gbfs import INFORMATION_SCHEMA, empty_frame
from bikeshare_assets.ingest.sources import FeedDocument
from bikeshare_assets.storage import LakeStorage
from bikeshare_assets_tests.conftest import write_cities

SNAPSHOT_KEY = "2025-09-08-08:00"
SNAPSHOT_WINDOW = dg.TimeWindow(
    datetime(2025, 9, 8, 8, 0, tzinfo=UTC), datetime(2025, 9, 8, 8, 5, tzinfo=UTC)
)
DAY_KEY = "2025-09-08"
DAY_WINDOW = dg.TimeWindow(datetime(2025, 9, 8, tzinfo=UTC), datetime(2025, 9, 9, tzinfo=UTC))


@dataclass
class DocumentSource:
    """Serves `body` for whichever feed is asked, received at `received_at`."""

    body: bytes
    received_at: datetime = SNAPSHOT_WINDOW.start

    def _doc(self, feed: str) -> FeedDocument:
        return FeedDocument(feed, self.body, f"test://{feed}", self.received_at)

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument:
        return self._doc("station_status")

    def station_information(self, day_start: datetime, day_end: datetime) -> FeedDocument:
        return self._doc("station_information")


def paris_city(tmp_path: Path, **city: object) -> City:
    return load_cities(write_cities(tmp_path / "cities.toml", **city))["paris"]


def run_status(
    lake: LakeStorage,
    city: City,
    body: bytes,
    received_at: datetime,
    information: pl.DataFrame | None = None,
) -> PartitionResult:
    info = empty_frame(INFORMATION_SCHEMA) if information is None else information
    source = DocumentSource(body, received_at)
    return ingest_status(lake, city, source, SNAPSHOT_KEY, SNAPSHOT_WINDOW, info)


def run_information(
    lake: LakeStorage, city: City, body: bytes, received_at: datetime | None = None
) -> PartitionResult:
    source = DocumentSource(body, received_at or DAY_WINDOW.start + timedelta(minutes=1))
    return ingest_information(lake, city, source, DAY_KEY, DAY_WINDOW)
