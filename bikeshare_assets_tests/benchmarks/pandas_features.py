"""A straightforward pandas implementation of `build_station_features`, as a reference.

The features benchmark (`bench_features.py`) times it against the project's polars
function on the same input, and `features/test_pandas_reference.py` checks that both give
the same numbers. It is written the way a data scientist would write it in pandas —
`groupby(...).rolling(...)` for the windows, `merge` for the exact snapshot at t - w and
the station list of the day, `merge_asof` for the weather — not tuned and not made slow.
The semantics follow bikeshare_assets/features/compute.py line by line:

* windows are minutes, not rows: `rolling("15min", closed="both")` is [t - w, t], like
  polars' `rolling(period="15m", closed="both")`; `obs_<w>` counts the snapshots in it;
* a net flow needs the snapshot at exactly t - w (left merge on the shifted key, else NaN);
* the trend is the least-squares slope of bikes on hours (same moment formula), only with
  two or more snapshots in the window;
* `minutes_since_previous` is the gap to the station's previous snapshot, NaN over 60 min;
* neighbours: the same BallTree/haversine edges within 500 m weighted 1 - d/radius (as a
  pandas frame) from the station list of each snapshot's own UTC day, and for each column
  the weighted mean over neighbours that reported a value at the same snapshot (empty /
  full: at or below the city's stockout threshold). Like compute.py this is one product per column of the
  (sparse) station x station weights and a station x snapshot table — here the table
  comes from `DataFrame.pivot` — rather than a merge of every row with every neighbour,
  which would multiply 17 M rows by ~8 neighbours;
* local time, weekday (Monday = 1), weekend and public holidays in the city's timezone;
* the latest weather hour at or before t within 3 hours (`merge_asof`, backward);
* capacity, lat and lon from the station list of t's own UTC day.

NaN stands for null throughout; `to_polars` turns the result into the polars schema of
`feature_schema()` (NaN -> null) for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import holidays
import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp
from sklearn.neighbors import BallTree

from bikeshare_assets.features.compute import (
    EARTH_RADIUS_M,
    FEATURE_COLUMNS,
    GRID_CELL_M,
    KEY,
    LOOKBACK,
    WEATHER_TOLERANCE,
    WINDOWS_MINUTES,
    FeatureContext,
    feature_schema,
)

STATE = ["bikes_available", "docks_available", "is_renting", "is_returning"]
WEATHER = ["temperature_c", "precipitation_mm", "wind_speed_kmh"]
INT32 = {"obs_15", "obs_30", "obs_60", "local_hour", "local_minute_of_day", "weekday"}


def build_station_features_pandas(
    history: pd.DataFrame,
    information: pd.DataFrame,
    weather: pd.DataFrame,
    snapshot_times: Sequence[datetime],
    context: FeatureContext,
) -> pd.DataFrame:
    """pandas twin of `compute.build_station_features` (same inputs, as pandas frames)."""
    hist = history[KEY + STATE].astype({c: "float64" for c in STATE})
    hist = hist.sort_values(["station_id", "snapshot_at"], ignore_index=True)
    hist = add_rolling_features(hist)

    times = pd.DatetimeIndex(pd.to_datetime(list(snapshot_times), utc=True))
    current = hist[hist["snapshot_at"].isin(times)].reset_index(drop=True)
    if current.empty:
        raise ValueError("no snapshot of `history` is one of `snapshot_times`")
    total = current["bikes_available"] + current["docks_available"]
    current["utilisation"] = current["bikes_available"] / total.where(total > 0)

    # Neighbours from the station list of each snapshot's own UTC day, as compute.py does.
    day = current["snapshot_at"].dt.floor("D")
    info_day = information["as_of_day"].dt.tz_convert("UTC")
    current = pd.concat(
        [
            add_neighbour_features(
                group,
                neighbour_edges(information[info_day == d], context.neighbour_radius_m),
                context.stockout_threshold,
            )
            for d, group in current.groupby(day, sort=False)
        ],
        ignore_index=True,
    )
    current = add_static_features(current, information)
    current["capacity"] = current["capacity"].fillna(
        current["bikes_available"] + current["docks_available"]
    )
    current = add_time_features(current, context.timezone, context.country)
    current = add_weather_features(current, weather)
    out = current[KEY + FEATURE_COLUMNS].sort_values(KEY, ignore_index=True)
    return out.astype(
        {c: "int32" for c in INT32}
        | {c: "bool" for c in ("is_weekend", "is_holiday")}
        | {"grid_cell": "Int64"}  # null where t's day has no station list entry
    )


def add_rolling_features(hist: pd.DataFrame) -> pd.DataFrame:
    """Window statistics, net flows and the gap to the previous snapshot, on every row of
    `hist` (sorted by station, then time). New columns are collected and added at once."""
    hours = (hist["snapshot_at"] - hist["snapshot_at"].min()).dt.total_seconds() / 3600.0
    bikes = hist["bikes_available"]
    moments = pd.DataFrame(
        {
            "station_id": hist["station_id"],
            "snapshot_at": hist["snapshot_at"],
            "one": 1.0,
            "bikes_available": bikes,
            "docks_available": hist["docks_available"],
            "hours": hours,
            "xy": hours * bikes,
            "xx": hours * hours,
        }
    )
    by_station = moments.groupby("station_id", sort=True)
    now = hist[KEY]
    state = hist[[*KEY, "bikes_available", "docks_available"]].rename(
        columns={"bikes_available": "_b_past", "docks_available": "_d_past"}
    )
    new: dict[str, np.ndarray | pd.Series] = {}
    for w in WINDOWS_MINUTES:
        window = by_station.rolling(f"{w}min", on="snapshot_at", closed="both")
        # hist is sorted by (station, time), which is the order groupby.rolling returns.
        obs = window["one"].count().to_numpy()
        means = window[["bikes_available", "hours", "xy", "xx"]].mean()
        mx, my = means["hours"].to_numpy(), means["bikes_available"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):  # one snapshot: 0 / 0
            slope = (means["xy"].to_numpy() - mx * my) / (means["xx"].to_numpy() - mx * mx)
        new[f"obs_{w}"] = obs
        new[f"bikes_mean_{w}"] = my
        new[f"bikes_var_{w}"] = window["bikes_available"].var().to_numpy()
        new[f"bikes_trend_per_h_{w}"] = np.where(obs >= 2, slope, np.nan)
        new[f"bikes_min_{w}"] = window["bikes_available"].min().to_numpy()
        new[f"docks_min_{w}"] = window["docks_available"].min().to_numpy()

        past = state.assign(snapshot_at=state["snapshot_at"] + pd.Timedelta(minutes=w))
        matched = now.merge(past, on=KEY, how="left")  # keeps now's row order
        new[f"bikes_net_flow_{w}"] = bikes.to_numpy() - matched["_b_past"].to_numpy()
        new[f"docks_net_flow_{w}"] = (
            hist["docks_available"].to_numpy() - matched["_d_past"].to_numpy()
        )

    gap = by_station["snapshot_at"].diff().dt.total_seconds() / 60.0
    new["minutes_since_previous"] = gap.where(gap <= LOOKBACK.total_seconds() / 60)
    return pd.concat([hist, pd.DataFrame(new, index=hist.index)], axis=1)


def neighbour_edges(information: pd.DataFrame, radius_m: float) -> pd.DataFrame:
    """station_id, neighbour_id, weight: pairs within radius_m, weighted 1 - d/radius."""
    stations = (
        information[["station_id", "lat", "lon"]]
        .drop_duplicates("station_id")
        .sort_values("station_id", ignore_index=True)
    )
    if stations.empty:
        return pd.DataFrame({"station_id": [], "neighbour_id": [], "weight": []})
    coords = np.radians(stations[["lat", "lon"]].to_numpy())
    radius = radius_m / EARTH_RADIUS_M
    indices, distances = BallTree(coords, metric="haversine").query_radius(
        coords, r=radius, return_distance=True
    )
    ids = stations["station_id"].to_numpy()
    edges = pd.DataFrame(
        {
            "station_id": np.repeat(ids, [len(i) for i in indices]),
            "neighbour_id": ids[np.concatenate(indices)],
            "weight": 1.0 - np.concatenate(distances) / radius,
        }
    )
    return edges[edges["station_id"] != edges["neighbour_id"]].reset_index(drop=True)


def add_neighbour_features(
    current: pd.DataFrame, edges: pd.DataFrame, threshold: int = 2
) -> pd.DataFrame:
    """Distance-weighted mean of each column over the neighbours with a value at t;
    empty/full neighbours are those at or below the city's stockout threshold."""
    current = current.copy()
    current["_reported"] = 1.0
    current["_empty"] = (current["bikes_available"] <= threshold).astype("float64")
    current["_empty"] = current["_empty"].where(current["bikes_available"].notna())
    current["_full"] = (current["docks_available"] <= threshold).astype("float64")
    current["_full"] = current["_full"].where(current["docks_available"].notna())
    columns = {
        "nb_bikes_weighted": "bikes_available",
        "nb_docks_weighted": "docks_available",
        "nb_empty_share": "_empty",
        "nb_full_share": "_full",
        "nb_bikes_net_flow_30": "bikes_net_flow_30",
    }
    if edges.empty:
        for name in [*columns, "nb_weight"]:
            current[name] = np.nan
        return current.drop(columns=["_reported", "_empty", "_full"])

    stations = pd.Index(sorted(set(edges["station_id"]) | set(current["station_id"])))
    weights = sp.csr_matrix(
        (
            edges["weight"].to_numpy(),
            (
                stations.get_indexer(edges["station_id"]),
                stations.get_indexer(edges["neighbour_id"]),
            ),
        ),
        shape=(len(stations), len(stations)),
    )
    # Where each row of `current` sits in the station x snapshot tables below.
    table_times = pd.Index(current["snapshot_at"].unique()).sort_values()
    row = stations.get_indexer(current["station_id"])
    col = table_times.get_indexer(current["snapshot_at"])

    def table(column: str) -> pd.DataFrame:
        return current.pivot(index="station_id", columns="snapshot_at", values=column).reindex(
            index=stations, columns=table_times
        )

    reported = table("_reported").notna().astype("float64").to_numpy()
    current["nb_weight"] = (weights @ reported)[row, col]
    for name, column in columns.items():
        values = table(column)
        num = weights @ values.fillna(0.0).to_numpy()
        den = weights @ values.notna().astype("float64").to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(den > 0, num / den, np.nan)
        current[name] = mean[row, col]
    return current.drop(columns=["_reported", "_empty", "_full"])


def add_static_features(frame: pd.DataFrame, information: pd.DataFrame) -> pd.DataFrame:
    """Capacity, lat, lon from the station list of t's own UTC day; a 500 m grid cell."""
    info = (
        information[["as_of_day", "station_id", "capacity", "lat", "lon"]]
        .rename(columns={"as_of_day": "_day"})
        .astype({"capacity": "float64"})
        .drop_duplicates(["_day", "station_id"], keep="last")
    )
    info["_day"] = info["_day"].dt.tz_convert("UTC").dt.as_unit("us")
    frame = frame.assign(_day=frame["snapshot_at"].dt.floor("D").dt.as_unit("us"))
    frame = frame.merge(info, on=["_day", "station_id"], how="left").drop(columns="_day")
    cell_deg = GRID_CELL_M / 111_320.0
    frame["grid_cell"] = (
        np.floor(frame["lat"] / cell_deg) * 100_000 + np.floor(frame["lon"] / cell_deg)
    ).astype("Int64")
    return frame


def add_time_features(frame: pd.DataFrame, timezone: str, country: str) -> pd.DataFrame:
    local = frame["snapshot_at"].dt.tz_convert(timezone)
    frame = frame.copy()
    frame["local_hour"] = local.dt.hour
    frame["local_minute_of_day"] = local.dt.hour * 60 + local.dt.minute
    frame["weekday"] = local.dt.dayofweek + 1  # Monday = 1, as polars
    frame["is_weekend"] = frame["weekday"] >= 6
    local_day = local.dt.tz_localize(None).dt.normalize()
    years = sorted(local_day.dt.year.unique().tolist())
    days = list(holidays.country_holidays(country, years=years)) if country and years else []
    frame["is_holiday"] = local_day.isin(pd.to_datetime(days))
    return frame


def add_weather_features(frame: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """The latest weather hour that started at or before t, within 3 hours."""
    if weather.empty:
        return frame.assign(**{c: np.nan for c in WEATHER})
    hourly = (
        weather[["hour_start", *WEATHER]]
        .rename(columns={"hour_start": "_weather_at"})
        .sort_values("_weather_at")
    )
    unit = frame["snapshot_at"].dt.unit
    hourly["_weather_at"] = hourly["_weather_at"].dt.as_unit(unit)
    return pd.merge_asof(
        frame.sort_values("snapshot_at"),
        hourly,
        left_on="snapshot_at",
        right_on="_weather_at",
        direction="backward",
        tolerance=pd.Timedelta(WEATHER_TOLERANCE),
    ).drop(columns="_weather_at")


# --------------------------------------------------------------------------------------
# comparison with the polars function


def to_polars(features: pd.DataFrame) -> pl.DataFrame:
    """The pandas result in the polars feature schema (NaN -> null)."""
    frame = pl.from_pandas(features, nan_to_null=True)
    return frame.select(
        [pl.col(c).cast(t) for c, t in feature_schema().items() if c in frame.columns]
    )


def feature_differences(
    polars_features: pl.DataFrame, pandas_features: pd.DataFrame, tolerance: float = 1e-9
) -> dict[str, str]:
    """Column -> what differs ({} when the two results are the same).

    Same rows in the same order, same nulls, and every value equal within `tolerance`
    (absolute; booleans, integers and keys exactly).
    """
    expected = polars_features.sort(KEY)
    got = to_polars(pandas_features).sort(KEY)
    problems: dict[str, str] = {}
    missing = [c for c in expected.columns if c not in got.columns]
    if missing:
        return {"columns": f"missing from the pandas result: {missing}"}
    if expected.height != got.height:
        return {"rows": f"polars {expected.height}, pandas {got.height}"}
    for c in KEY:
        if not expected.get_column(c).equals(got.get_column(c)):
            problems[c] = "keys differ"
    if problems:
        return problems
    for c in FEATURE_COLUMNS:
        a, b = expected.get_column(c), got.get_column(c)
        null_a, null_b = a.is_null(), b.is_null()
        if not null_a.equals(null_b):
            problems[c] = (
                f"nulls differ: polars {a.null_count()}, pandas {b.null_count()}, "
                f"{(null_a != null_b).sum()} rows disagree"
            )
            continue
        keep = ~null_a
        a, b = a.filter(keep), b.filter(keep)
        if a.dtype.is_float():
            x, y = a.to_numpy(), b.to_numpy()
            nan = np.isnan(x) | np.isnan(y)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                problems[c] = "NaNs differ"
                continue
            diff = np.abs(x[~nan] - y[~nan])
            worst = float(diff.max()) if diff.size else 0.0
            limit = tolerance
            if worst > limit:
                problems[c] = (
                    f"max |polars - pandas| = {worst:.3g} ({int((diff > limit).sum())} rows)"
                )
        elif not a.equals(b):
            problems[c] = f"{int((a != b).sum())} values differ"
    return problems


def max_abs_difference(polars_features: pl.DataFrame, pandas_features: pd.DataFrame) -> float:
    """The largest |polars - pandas| over every float feature (rows matched by key)."""
    expected = polars_features.sort(KEY)
    got = to_polars(pandas_features).sort(KEY)
    worst = 0.0
    for c in FEATURE_COLUMNS:
        if expected.schema[c].is_float():
            diff = (expected.get_column(c) - got.get_column(c)).abs().max()
            if diff is not None:
                worst = max(worst, float(diff))  # type: ignore[arg-type]
    return worst


def assert_same_features(
    polars_features: pl.DataFrame, pandas_features: pd.DataFrame, tolerance: float = 1e-9
) -> None:
    problems = feature_differences(polars_features, pandas_features, tolerance)
    if problems:
        details = "; ".join(f"{c}: {p}" for c, p in problems.items())
        raise AssertionError(
            f"pandas reference and build_station_features disagree ({len(problems)} "
            f"column(s)): {details}"
        )


# --------------------------------------------------------------------------------------
# inputs from the simulator, shared by the benchmark and the equivalence test


@dataclass(frozen=True)
class FeatureInputs:
    """What `build_station_features` needs, from the seeded simulator (polars frames)."""

    status: pl.DataFrame
    information: pl.DataFrame
    weather: pl.DataFrame
    snapshot_times: list[datetime]
    context: FeatureContext

    def as_pandas(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return self.status.to_pandas(), self.information.to_pandas(), self.weather.to_pandas()


def simulated_inputs(
    stations: int, days: int, *, city: str = "paris", **overrides: object
) -> FeatureInputs:
    """Every snapshot of a simulated city (`SimulatedSystem.status_frame`, built one day at
    a time), the station list once per simulated UTC day with its `as_of_day` (as
    `raw_station_information` partitions hold it), and the hourly weather."""
    from bikeshare_assets.cities import DEFAULT_CITIES_FILE, load_cities
    from bikeshare_assets.ingest.simulator import SimulatedSystem, SimulationConfig

    spec = load_cities(DEFAULT_CITIES_FILE)[city]
    config = SimulationConfig.from_city(spec, stations=stations, days=days, **overrides)
    system = SimulatedSystem(config)
    day_starts = [config.start + timedelta(days=d) for d in range(days)]
    status = pl.concat(
        [system.status_frame(s, s + timedelta(days=1)) for s in day_starts], rechunk=True
    )
    info = system.information_frame()
    information = pl.concat(
        [info.with_columns(as_of_day=pl.lit(s, dtype=pl.Datetime("us", "UTC"))) for s in day_starts]
    )
    return FeatureInputs(
        status=status,
        information=information,
        weather=system.hourly_weather(),
        snapshot_times=system.snapshot_times(),
        context=FeatureContext(
            spec.timezone,
            spec.country,
            config.cadence_minutes,
            stockout_threshold=spec.stockout_threshold,
        ),
    )
