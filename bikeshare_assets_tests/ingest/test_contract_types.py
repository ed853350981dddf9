"""The raw assets' Dagster types are dagster-pandera's, built on first use.

`contracts.PanderaFrameType` defers `pandera_schema_to_dagster_type` (and so pandera and
pandas) until a run type-checks a frame or the code location's snapshot asks for the column
schema. These tests hold it to the type dagster-pandera builds itself: the same name,
description and column-schema metadata, and the same verdict and message on a real Vélib'
snapshot, directly and as the output check of a materialized asset.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest
from dagster_pandera import pandera_schema_to_dagster_type

from bikeshare_assets.ingest.contracts import (
    PanderaFrameType,
    StationInformationFrame,
    StationStatusFrame,
    WeatherFrame,
)
from bikeshare_assets.ingest.gbfs import document_last_updated, parse_station_status
from bikeshare_assets.ingest.schemas import (
    StationInformationSchema,
    StationStatusSchema,
    WeatherSchema,
)
from bikeshare_assets_tests.support.gbfs_server import FIXTURES_DIR

SNAPSHOT = datetime(2025, 9, 8, 8, 0, tzinfo=UTC)
TYPES = [
    (StationStatusFrame, StationStatusSchema),
    (StationInformationFrame, StationInformationSchema),
    (WeatherFrame, WeatherSchema),
]


def velib_status() -> pl.DataFrame:
    body = (FIXTURES_DIR / "velib-2025" / "station_status.json").read_bytes()
    at = document_last_updated(json.loads(body))
    assert at is not None
    return parse_station_status(body, snapshot_at=SNAPSHOT, received_at=at).frame


def with_negative_bikes(frame: pl.DataFrame) -> pl.DataFrame:
    """The real snapshot with one station reporting -3 bikes (a broken feed)."""
    first = pl.int_range(pl.len()) == 0
    return frame.with_columns(
        bikes_available=pl.when(first).then(-3).otherwise("bikes_available").cast(pl.Int32)
    )


@pytest.mark.parametrize(("lazy", "schema"), TYPES, ids=lambda x: getattr(x, "__name__", ""))
def test_the_lazy_type_describes_the_schema_as_dagster_pandera_does(lazy, schema) -> None:
    built = pandera_schema_to_dagster_type(schema)
    assert lazy.key == lazy.display_name == built.display_name == schema.__name__
    assert lazy.description == built.description
    assert lazy.metadata == built.metadata  # the column schema the Dagster UI shows
    assert [c.name for c in lazy.metadata["schema"].schema.columns] == list(
        schema.to_schema().columns
    )
    assert lazy.typing_type is built.typing_type


def test_an_unknown_schema_name_is_refused_when_the_type_is_declared() -> None:
    with pytest.raises(ValueError, match="StationSchema"):
        PanderaFrameType("StationSchema")


def test_the_type_check_gives_dagster_panderas_verdict_and_message() -> None:
    good = velib_status()
    bad = with_negative_bikes(good)
    built = pandera_schema_to_dagster_type(StationStatusSchema)

    assert dg.check_dagster_type(StationStatusFrame, good).success

    lazy_verdict = dg.check_dagster_type(StationStatusFrame, bad)
    assert not lazy_verdict.success
    assert lazy_verdict.description == dg.check_dagster_type(built, bad).description
    assert "bikes_available" in lazy_verdict.description
    assert "greater_than_or_equal_to(0)" in lazy_verdict.description


def test_a_materialized_asset_that_breaks_the_schema_fails_its_type_check(tmp_path) -> None:
    frames = {"snapshot": with_negative_bikes(velib_status())}

    @dg.asset(dagster_type=StationStatusFrame)
    def raw_station_status() -> pl.DataFrame:
        return frames["snapshot"]

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([raw_station_status], instance=instance, raise_on_error=False)
        assert not result.success
        checks = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "STEP_OUTPUT" and e.event_specific_data.type_check_data
        ]
        assert [c.type_check_data.success for c in checks] == [False]
        assert "bikes_available" in checks[0].type_check_data.description

        frames["snapshot"] = velib_status()
        assert dg.materialize([raw_station_status], instance=instance).success
