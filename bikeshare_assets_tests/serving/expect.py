"""Assertions shared by the serving tests."""

from __future__ import annotations

import polars as pl

from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.serving.predict import FALLBACK_VERSION, SnapshotPrediction


def assert_fallback(
    features: pl.DataFrame, result: SnapshotPrediction, error_startswith: str, threshold: int = 2
) -> None:
    """Every row is the persistence baseline, and says so."""
    assert result.source == "fallback"
    assert result.error is not None and result.error.startswith(error_startswith), result.error
    assert_fallback_rows(features, result.frame, threshold)


def assert_fallback_rows(features: pl.DataFrame, frame: pl.DataFrame, threshold: int = 2) -> None:
    assert frame.height == features.height
    assert frame.get_column("source").unique().to_list() == ["fallback"]
    assert frame.get_column("model_version").unique().to_list() == [FALLBACK_VERSION]
    assert frame.get_column("station_id").to_list() == features.get_column("station_id").to_list()
    for target, count in TARGETS.items():
        expected = (features.get_column(count) <= threshold).cast(pl.Float64).to_list()
        assert frame.get_column(f"p_{target}").to_list() == expected
        assert frame.get_column(f"flag_{target}").to_list() == [bool(x) for x in expected]
