"""drift_report: PSI on known distributions, the reference stored with each registered
version (lake + MLflow), and the real asset on a real Dagster instance and MLflow store.

The city is the registry tests' simulated one (support/training_data.py): models trained
by `train_target`, logged by the pipeline's own `_log_to_mlflow` (which logs the drift
reference) and registered by the real `registered_model_version` asset. The hour's
station_features are the project's features of that hour; its stockout_predictions are
those features scored by the registered versions themselves. Shifts are injected into the
features before they are scored, as a real upstream change would reach the model.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest

from bikeshare_assets.cities import PARTITION_FMT
from bikeshare_assets.features.compute import FEATURE_COLUMNS, KEY
from bikeshare_assets.features.labels import TARGETS
from bikeshare_assets.monitoring.drift import (
    DriftPolicy,
    DriftThresholds,
    drift_verdict,
    parse_serving_label,
    psi_report,
    reference_key,
    reference_sample,
)
from bikeshare_assets.registry.registry import registered_model_name
from bikeshare_assets.serving.predict import PREDICTION_SCHEMA
from bikeshare_assets.storage import LakeStorage, partition_key_path
from bikeshare_assets_tests.conftest import materializations, step_failure_message, utc
from bikeshare_assets_tests.registry.test_registry import CITY, Registry
from bikeshare_assets_tests.support.training_data import (
    SPLIT_A,
    simulated_frame,
    simulated_split,
    trained,
)

DRIFT = dg.AssetKey([CITY, "drift_report"])
# 10:00 in Paris on the models' validation day: scored rows drawn from the distribution
# the models were fit on (their fit rows are train + validation).
HOUR = utc(2026, 1, 7, 9)
HOUR_KEY = HOUR.strftime(PARTITION_FMT)
NEXT_HOUR_KEY = (HOUR + timedelta(hours=1)).strftime(PARTITION_FMT)
LABEL = "stockout_bikes:v1+stockout_docks:v1"


# --------------------------------------------------------------------------------------
# pure functions


def test_psi_of_known_distributions() -> None:
    rng = np.random.default_rng(0)
    reference = pl.DataFrame(
        {
            "half": np.r_[np.zeros(2500), np.ones(2500)],
            "normal": rng.normal(0, 1, 5000),
            "same": rng.normal(0, 1, 5000),
        }
    )
    current = pl.DataFrame(
        {
            "half": np.r_[np.zeros(2400), np.ones(600)],  # 50/50 -> 80/20
            "normal": rng.normal(1, 1, 3000),  # shifted by one standard deviation
            "same": rng.normal(0, 1, 3000),
        }
    )
    psi, _ = psi_report(reference, current, ["half", "normal", "same"], 0.2)
    # PSI = sum (ref - cur) * ln(ref / cur) over the two values
    assert psi["half"] == pytest.approx((0.5 - 0.8) * np.log(0.5 / 0.8) + 0.3 * np.log(0.5 / 0.2))
    assert psi["half"] == pytest.approx(0.4159, abs=1e-4)
    assert psi["normal"] > 0.5  # a one-sigma shift is far past any threshold
    assert psi["same"] < 0.05  # two samples of one distribution


def test_verdicts_at_the_thresholds() -> None:
    limits = DriftThresholds(warn_psi=0.2, fail_psi=0.3)

    def table(psi: float) -> pl.DataFrame:
        return pl.DataFrame(
            {"feature": ["bikes_available", "p_stockout_bikes"], "kind": ["feature", "prediction"]}
        ).with_columns(psi=pl.Series([psi, 0.01]))

    ok, warn, fail = (drift_verdict(table(v), "feature", limits) for v in (0.19, 0.2, 0.3))
    assert ok.passed and not warn.passed and not fail.passed
    assert warn.severity == dg.AssetCheckSeverity.WARN
    assert fail.severity == dg.AssetCheckSeverity.ERROR
    assert "bikes_available 0.300" in fail.description
    assert drift_verdict(table(0.5), "prediction", limits).passed
    nothing = drift_verdict(table(0.5).clear(), "feature", limits)
    assert nothing.passed and "Nothing compared" in nothing.description
    with pytest.raises(ValueError, match="warn_psi <= fail_psi"):
        DriftPolicy(warn_psi=0.4, fail_psi=0.3).thresholds()


def test_reference_sample_is_seeded_per_local_hour_and_order_free() -> None:
    fit = simulated_split(SPLIT_A)
    rows = pl.concat([fit.train, fit.validation])
    sample = reference_sample(rows, rows_per_hour=50)
    again = reference_sample(rows.sample(fraction=1.0, shuffle=True, seed=3), rows_per_hour=50)
    assert sample.equals(again)
    per_hour = sample.group_by("local_hour").len()
    assert per_hour.get_column("len").max() == 50
    assert per_hour.height == rows.get_column("local_hour").n_unique()
    assert sample.columns == [*KEY, *FEATURE_COLUMNS]


def test_serving_label() -> None:
    assert parse_serving_label(LABEL) == {"stockout_bikes": "1", "stockout_docks": "1"}
    assert parse_serving_label("persistence-baseline") is None
    assert parse_serving_label("stockout_bikes:v2") is None


# --------------------------------------------------------------------------------------
# the asset


class DriftCity:
    """The registry harness with v1 of both targets registered, and a way to store the
    hour's features and real predictions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.lake = LakeStorage(root=registry.settings.storage_root)
        result, row = registry.register(simulated_split(SPLIT_A), trained(TARGETS_BIKES, SPLIT_A))
        assert result.success, step_failure_message(result)
        assert (row["version"], row["decision"]) == ("1", "promoted")
        self.models = {
            t: mlflow.pyfunc.load_model(f"models:/{registered_model_name(CITY, t)}/1")
            for t in TARGETS
        }

    def hour_features(self) -> pl.DataFrame:
        frame = simulated_frame().select(*KEY, *FEATURE_COLUMNS)
        t = pl.col("snapshot_at")
        return frame.filter((t >= HOUR) & (t < HOUR + timedelta(hours=1)))

    def store_scored(self, features: pl.DataFrame, label: str = LABEL) -> None:
        """The hour's station_features partitions and the predictions the registered
        versions make on them."""
        x = features.select(pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS).to_pandas()
        p = {t: np.asarray(self.models[t].predict(x)[f"p_{t}"]) for t in TARGETS}
        predictions = features.select(*KEY, "bikes_available", "docks_available").with_columns(
            *[pl.Series(f"p_{t}", p[t]) for t in TARGETS],
            *[pl.Series(f"flag_{t}", p[t] >= 0.5) for t in TARGETS],
            model_version=pl.lit(label),
            source=pl.lit("model"),
            latency_ms=pl.lit(5.0),
            predicted_at=pl.col("snapshot_at"),
            seen_in_training=pl.lit(False),
        )
        predictions = predictions.select(pl.col(c).cast(d) for c, d in PREDICTION_SCHEMA.items())
        for (at,), part in features.partition_by("snapshot_at", as_dict=True).items():
            key = at.strftime(PARTITION_FMT)
            self.lake.write_parquet(
                partition_key_path(dg.AssetKey([CITY, "station_features"]), key), part
            )
            self.lake.write_parquet(
                partition_key_path(dg.AssetKey([CITY, "stockout_predictions"]), key),
                predictions.filter(pl.col("snapshot_at") == at),
            )

    def materialize(
        self, first: str, last: str | None = None, policy: DriftPolicy | None = None
    ) -> dg.ExecuteInProcessResult:
        defs = self.registry.defs
        return dg.materialize(
            list(defs.assets or []),
            selection=[DRIFT],
            instance=self.registry.instance,
            resources={**defs.resources, **({"drift_policy": policy} if policy else {})},
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last or first,
            },
            raise_on_error=False,
        )

    def report(self, key: str = HOUR_KEY) -> pl.DataFrame:
        return self.lake.read_parquet(partition_key_path(DRIFT, key))


TARGETS_BIKES = "stockout_bikes"


def checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {
        (e.event_specific_data.partition, e.event_specific_data.check_name): e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


@pytest.fixture
def drift_city(home: Path, tmp_path: Path, instance: dg.DagsterInstance) -> DriftCity:
    return DriftCity(Registry(home, tmp_path, instance))


def test_reference_stored_in_lake_and_mlflow_once_per_version(drift_city: DriftCity) -> None:
    registry, lake = drift_city.registry, drift_city.lake
    for target in TARGETS:
        name = registered_model_name(CITY, target)
        key = reference_key(name, "1")
        sample = lake.read_parquet(key)
        assert sample.columns == [*KEY, *FEATURE_COLUMNS, f"p_{target}"]
        assert 0 < sample.height <= 24 * 1000
        # only fit rows (train + validation), never the test window
        split = simulated_split(SPLIT_A)
        assert sample.get_column("snapshot_at").max() < split.test.get_column("snapshot_at").min()
        version = registry.client.get_model_version(name, "1")
        assert version.tags["drift_reference"] == lake.uri(key)
        logged = [a.path for a in registry.client.list_artifacts(version.run_id, "drift")]
        assert logged == ["drift/reference_sample.parquet"]
        local = registry.client.download_artifacts(
            version.run_id, "drift/reference_sample.parquet", str(drift_city.lake.root)
        )
        assert pl.read_parquet(local).equals(sample)
    before = sorted(lake.list_keys("drift_reference"))
    result, again = registry.register(None, None)  # the same day registered again
    assert result.success, step_failure_message(result)
    assert again["version"] == "1"
    assert sorted(lake.list_keys("drift_reference")) == before
    assert len(before) == 2 * 2  # one sample + checksum per target
    version = registry.client.get_model_version(registered_model_name(CITY, "stockout_bikes"), "1")
    assert [a.path for a in registry.client.list_artifacts(version.run_id, "drift")] == [
        "drift/reference_sample.parquet"
    ]


def test_drift_report_passes_on_scored_hour_and_empty_hour(drift_city: DriftCity) -> None:
    drift_city.store_scored(drift_city.hour_features())
    started = time.perf_counter()
    result = drift_city.materialize(HOUR_KEY, NEXT_HOUR_KEY)  # one run over two hours
    elapsed = time.perf_counter() - started
    assert result.success, step_failure_message(result)
    print(f"drift_report over 2 hours (1 scored): {elapsed:.1f} s")

    report = drift_city.report()
    assert {"feature", "psi", "kind", "drifted", "model_version"} <= set(report.columns)
    features = report.filter(pl.col("kind") == "feature")
    assert features.height > 20 and report.filter(pl.col("kind") == "prediction").height == 2
    assert features.get_column("psi").max() < 0.2, features.sort("psi").tail(3)
    assert set(report.get_column("model_version")) == {LABEL}
    assert report.get_column("rows_current").max() == drift_city.hour_features().height

    evaluations = checks(result)
    for name in ("feature_drift", "prediction_drift"):
        assert evaluations[(HOUR_KEY, name)].passed
        nothing = evaluations[(NEXT_HOUR_KEY, name)]
        assert nothing.passed and "Nothing compared" in nothing.description
    assert drift_city.report(NEXT_HOUR_KEY).height == 0  # an empty partition, with the schema

    folder = partition_key_path(DRIFT, HOUR_KEY).rsplit("/", 1)[0]
    files = drift_city.lake.list_keys(folder)
    assert f"{folder}/report.html" in files and f"{folder}/report.json" in files
    assert b"<html" in drift_city.lake.read_bytes(f"{folder}/report.html")[:2000].lower()
    metadata = materializations(result)[HOUR_KEY]
    assert metadata["report_html"] == drift_city.lake.uri(f"{folder}/report.html")
    psi_rows = metadata["psi"].records
    assert {r.data["feature"] for r in psi_rows} >= {"bikes_available", "p_stockout_bikes"}


def test_emptied_stations_fail_feature_and_prediction_drift(drift_city: DriftCity) -> None:
    features = drift_city.hour_features()
    # Two thirds of the stations emptied (a van emptied them, or the feed reports zeros):
    # the counts and everything computed from them, as the feature function would see it.
    stations = features.get_column("station_id").unique().sort()
    emptied = stations.head(len(stations) * 2 // 3).to_list()
    hit = pl.col("station_id").is_in(emptied)
    shifted = features.with_columns(
        bikes_available=pl.when(hit).then(0).otherwise(pl.col("bikes_available")),
        docks_available=pl.when(hit).then(pl.col("capacity")).otherwise(pl.col("docks_available")),
        utilisation=pl.when(hit).then(0.0).otherwise(pl.col("utilisation")),
        bikes_mean_60=pl.when(hit).then(0.0).otherwise(pl.col("bikes_mean_60")),
        bikes_min_60=pl.when(hit).then(0).otherwise(pl.col("bikes_min_60")),
    ).select(features.columns)
    drift_city.store_scored(shifted)

    result = drift_city.materialize(HOUR_KEY)
    assert result.success, step_failure_message(result)  # drift checks do not block
    evaluations = checks(result)
    feature = evaluations[(HOUR_KEY, "feature_drift")]
    assert not feature.passed and feature.severity == dg.AssetCheckSeverity.ERROR
    assert "bikes_available" in feature.description
    assert feature.metadata["worst"].value in {
        "bikes_available",
        "docks_available",
        "utilisation",
        "bikes_mean_60",
        "bikes_min_60",
    }
    prediction = evaluations[(HOUR_KEY, "prediction_drift")]
    assert not prediction.passed and prediction.severity == dg.AssetCheckSeverity.ERROR
    assert "p_stockout_bikes" in prediction.description
    report = drift_city.report()
    row = report.filter(pl.col("feature") == "bikes_available").row(0, named=True)
    assert row["drifted"] and row["status"] == "fail"
    assert row["current_mean"] < row["reference_mean"]

    # The same hour under a configured policy whose failure line lies above what was
    # measured: both checks now only warn (the thresholds come from the resource).
    worst = report.get_column("psi").max()
    result = drift_city.materialize(
        HOUR_KEY, policy=DriftPolicy(warn_psi=0.2, fail_psi=float(worst) + 1)
    )
    assert result.success, step_failure_message(result)
    for name in ("feature_drift", "prediction_drift"):
        warned = checks(result)[(HOUR_KEY, name)]
        assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
        assert "(warn)" in warned.description


def test_a_version_without_reference_fails_naming_what_to_do(drift_city: DriftCity) -> None:
    drift_city.store_scored(drift_city.hour_features(), label="stockout_bikes:v7+stockout_docks:v1")
    result = drift_city.materialize(HOUR_KEY)
    assert not result.success
    message = step_failure_message(result)
    assert f"{CITY}/drift_report {HOUR_KEY}" in message
    assert "paris_stockout_bikes v7" in message


def test_drift_windows_are_hours_unless_the_city_says_fewer_minutes(tmp_path: Path) -> None:
    from bikeshare_assets.cities import SourceMode
    from bikeshare_assets.partitions import city_partitions
    from bikeshare_assets_tests.support.feeds import paris_city

    live = {"live_start": "2026-11-01-10:00", "cadence_minutes": 1}
    hourly = city_partitions(paris_city(tmp_path / "a", **live), SourceMode.LIVE)
    assert hourly.drift is hourly.hours
    drill = city_partitions(
        paris_city(tmp_path / "b", **live, drift_window_minutes=2), SourceMode.LIVE
    )
    window = drill.drift.time_window_for_partition_key("2026-11-01-10:02")
    assert (window.start.minute, window.end.minute) == (2, 4)
    assert drill.drift.get_partition_keys_in_range(
        dg.PartitionKeyRange("2026-11-01-10:00", "2026-11-01-10:06")
    ) == ["2026-11-01-10:00", "2026-11-01-10:02", "2026-11-01-10:04", "2026-11-01-10:06"]


def test_window_features_of_a_short_history_are_left_out_of_the_comparison() -> None:
    """Four minutes into a 1-minute live feed a 60-minute trend spans four minutes, and just
    after a 4-minute outage a 15-minute trend spans a hole: their values describe another
    window, and the PSI would call that drift. A full window of a 15-minute replay stays."""
    from bikeshare_assets.monitoring.drift import mask_partial_windows

    windows = ("bikes_trend_per_h_15", "nb_bikes_net_flow_30", "bikes_trend_per_h_60")
    live = pl.DataFrame(
        {
            # fresh start (4 min), after a 4-minute outage, all full, fresh first snapshot
            "obs_15": [5, 12, 16, 1],
            "obs_30": [5, 27, 31, 1],
            "obs_60": [5, 57, 61, 1],
            "minutes_since_previous": [1.0, 5.0, 1.0, None],
            **{c: [1.0, 2.0, 3.0, 4.0] for c in windows},
            "bikes_available": [5, 6, 7, 8],
            "p_stockout_bikes": [0.1, 0.2, 0.3, 0.4],
        }
    )
    masked = mask_partial_windows(live, cadence=1)
    # A prediction is compared only where it was made from full windows, every one of them.
    assert masked.get_column("p_stockout_bikes").to_list() == [None, None, 0.3, None]
    assert masked.get_column("bikes_trend_per_h_15").to_list() == [None, None, 3.0, None]
    assert masked.get_column("nb_bikes_net_flow_30").to_list() == [None, None, 3.0, None]
    assert masked.get_column("bikes_trend_per_h_60").to_list() == [None, 2.0, 3.0, None]
    assert masked.get_column("bikes_available").to_list() == [5, 6, 7, 8]
    assert masked.get_column("obs_60").to_list() == [5, 57, 61, 1]  # cadence: reported only
    # The window right after the outage holds only rows spaced by the hole (4 minutes): the
    # feed's cadence, not theirs, says what a full window is.
    after_hole = live.slice(1, 1)
    assert mask_partial_windows(after_hole, cadence=1).get_column(windows[0]).to_list() == [None]
    replay = live.with_columns(
        obs_15=pl.lit(2), obs_30=pl.lit(3), obs_60=pl.lit(5), minutes_since_previous=pl.lit(15.0)
    )
    assert mask_partial_windows(replay).get_column("bikes_trend_per_h_60").to_list() == [
        1.0,
        2.0,
        3.0,
        4.0,
    ]
