"""Station features at snapshot t from raw data at or before t — pure functions, no Dagster.

This is the online and the offline feature store at once: training reads many partitions of
the asset built from `build_station_features`, serving reads the newest one, and both come
from this one function, so they cannot skew.

Windows are defined in minutes, never in rows: a 15-minute replay and a 5-minute live feed
get the same features. A recorder gap is never bridged: a net flow needs the snapshot at
exactly t - w (else null), and window statistics use only the snapshots that exist in the
window, with `obs_<w>` saying how many that was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

WINDOWS_MINUTES: tuple[int, ...] = (15, 30, 60)
LOOKBACK = timedelta(minutes=max(WINDOWS_MINUTES))
NEIGHBOUR_RADIUS_M = 500.0
EARTH_RADIUS_M = 6_371_008.8
WEATHER_TOLERANCE = timedelta(hours=3)
GRID_CELL_M = 500.0

KEY = ["snapshot_at", "station_id"]

# The model's inputs, in order. Serving sends exactly these columns.
FEATURE_COLUMNS: list[str] = [
    "bikes_available",
    "docks_available",
    "capacity",
    "utilisation",
    "is_renting",
    "is_returning",
    "minutes_since_previous",
    *[f"{stat}_{w}" for w in WINDOWS_MINUTES for stat in ("bikes_net_flow", "docks_net_flow")],
    *[
        f"{stat}_{w}"
        for w in WINDOWS_MINUTES
        for stat in (
            "bikes_mean",
            "bikes_var",
            "bikes_trend_per_h",
            "bikes_min",
            "docks_min",
            "obs",
        )
    ],
    "lat",
    "lon",
    "grid_cell",
    "nb_bikes_weighted",
    "nb_docks_weighted",
    "nb_weight",
    "nb_empty_share",
    "nb_full_share",
    "nb_bikes_net_flow_30",
    "local_hour",
    "local_minute_of_day",
    "weekday",
    "is_weekend",
    "is_holiday",
    "temperature_c",
    "precipitation_mm",
    "wind_speed_kmh",
]


@dataclass(frozen=True)
class FeatureContext:
    """What a city contributes to its features."""

    timezone: str
    country: str
    cadence_minutes: int
    neighbour_radius_m: float = NEIGHBOUR_RADIUS_M
    stockout_threshold: int = 2  # what counts as an empty/full neighbour


def _status_core(status: pl.DataFrame) -> pl.DataFrame:
    return status.select(
        "snapshot_at",
        "station_id",
        pl.col("bikes_available").cast(pl.Float64),
        pl.col("docks_available").cast(pl.Float64),
        pl.col("is_renting").cast(pl.Float64),
        pl.col("is_returning").cast(pl.Float64),
    ).sort("station_id", "snapshot_at")


def rolling_features(history: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """Per station and target snapshot: net flows, window mean/var/trend/min, observations.

    `history` holds raw snapshots up to the newest target; windows look back only.
    """
    # Hours since the start of `history`: the plain moment formula below is ~20x faster in
    # polars' rolling kernels than centring inside each window, and with hours this small
    # it loses nothing; runs over different history lengths agree to float rounding
    # (~1e-6 bikes/h), and the no_look_ahead recomputation shares the origin exactly.
    hist = _status_core(history).with_columns(
        hours=(pl.col("snapshot_at") - pl.col("snapshot_at").min()).dt.total_seconds() / 3600.0
    )
    out = targets.select(KEY)
    for w in WINDOWS_MINUTES:
        x, y = pl.col("hours"), pl.col("bikes_available")
        slope = ((x * y).mean() - x.mean() * y.mean()) / ((x * x).mean() - x.mean() * x.mean())
        stats = hist.rolling(
            index_column="snapshot_at", period=f"{w}m", closed="both", group_by="station_id"
        ).agg(
            pl.len().cast(pl.Int32).alias(f"obs_{w}"),
            y.mean().alias(f"bikes_mean_{w}"),
            y.var().alias(f"bikes_var_{w}"),
            pl.when(pl.len() >= 2).then(slope).otherwise(None).alias(f"bikes_trend_per_h_{w}"),
            y.min().alias(f"bikes_min_{w}"),
            pl.col("docks_available").min().alias(f"docks_min_{w}"),
        )
        out = out.join(stats, on=KEY, how="left")
        past = hist.select(
            (pl.col("snapshot_at") + pl.duration(minutes=w)).alias("snapshot_at"),
            "station_id",
            pl.col("bikes_available").alias("_b_past"),
            pl.col("docks_available").alias("_d_past"),
        )
        out = (
            out.join(hist.select([*KEY, "bikes_available", "docks_available"]), on=KEY, how="left")
            .join(past, on=KEY, how="left")
            .with_columns(
                (pl.col("bikes_available") - pl.col("_b_past")).alias(f"bikes_net_flow_{w}"),
                (pl.col("docks_available") - pl.col("_d_past")).alias(f"docks_net_flow_{w}"),
            )
            .drop("bikes_available", "docks_available", "_b_past", "_d_past")
        )
    previous = hist.with_columns(
        minutes_since_previous=(
            pl.col("snapshot_at").diff().over("station_id").dt.total_seconds() / 60.0
        )
    ).select([*KEY, "minutes_since_previous"])
    out = out.join(previous, on=KEY, how="left").with_columns(
        # A previous snapshot older than the lookback is not "the previous one" for features.
        pl.when(pl.col("minutes_since_previous") <= LOOKBACK.total_seconds() / 60)
        .then(pl.col("minutes_since_previous"))
        .otherwise(None)
    )
    return out


def neighbour_edges(
    information: pl.DataFrame, radius_m: float = NEIGHBOUR_RADIUS_M
) -> pl.DataFrame:
    """Pairs of stations within `radius_m` (great-circle, scikit-learn BallTree/haversine),
    weighted 1 - d/radius so a station next door counts more than one at the edge."""
    stations = (
        information.select("station_id", "lat", "lon").unique("station_id").sort("station_id")
    )
    if stations.height == 0:
        return pl.DataFrame(
            schema={"station_id": pl.String, "neighbour_id": pl.String, "weight": pl.Float64}
        )
    from sklearn.neighbors import BallTree  # heavy: imported when features are computed

    coords = np.radians(stations.select("lat", "lon").to_numpy())
    tree = BallTree(coords, metric="haversine")
    radius = radius_m / EARTH_RADIUS_M
    indices, distances = tree.query_radius(coords, r=radius, return_distance=True)
    ids = stations.get_column("station_id").to_numpy()
    src = np.repeat(np.arange(len(ids)), [len(i) for i in indices])
    dst = np.concatenate(indices) if len(indices) else np.array([], dtype=int)
    dist = np.concatenate(distances) if len(distances) else np.array([])
    keep = src != dst
    return pl.DataFrame(
        {
            "station_id": ids[src[keep]],
            "neighbour_id": ids[dst[keep]],
            "weight": 1.0 - dist[keep] / radius,
        }
    )


def neighbour_features(
    current: pl.DataFrame, edges: pl.DataFrame, threshold: int = 2
) -> pl.DataFrame:
    """Distance-weighted state of each station's neighbours at the same snapshot.

    One sparse matrix product per column (stations x stations weights times stations x
    snapshots values) instead of a join that would multiply rows by the neighbour count.
    Only neighbours that reported at t count; `nb_weight` is their total weight.
    """
    columns = {
        "nb_bikes_weighted": "bikes_available",
        "nb_docks_weighted": "docks_available",
        "nb_empty_share": "_empty",
        "nb_full_share": "_full",
        "nb_bikes_net_flow_30": "bikes_net_flow_30",
    }
    base = current.select([*KEY, "bikes_available", "docks_available", "bikes_net_flow_30"])
    if base.height == 0 or edges.height == 0:
        # Same columns, same order as below: days with and without neighbours concatenate.
        return base.select(KEY).with_columns(
            [pl.lit(None, pl.Float64).alias(c) for c in ["nb_weight", *columns]]
        )
    import scipy.sparse as sp  # heavy: imported when features are computed

    ids = sorted(
        set(edges.get_column("station_id").to_list()) | set(base.get_column("station_id").to_list())
    )
    index = pl.DataFrame({"station_id": ids, "_i": np.arange(len(ids), dtype=np.int64)})
    times = base.get_column("snapshot_at").unique().sort()
    tindex = pl.DataFrame({"snapshot_at": times, "_t": np.arange(len(times), dtype=np.int64)})
    base = (
        base.join(index, on="station_id")
        .join(tindex, on="snapshot_at")
        .with_columns(
            _empty=(pl.col("bikes_available") <= threshold).cast(pl.Float64),
            _full=(pl.col("docks_available") <= threshold).cast(pl.Float64),
        )
    )
    e = edges.join(index, on="station_id").join(
        index.rename({"station_id": "neighbour_id", "_i": "_j"}), on="neighbour_id"
    )
    weights = sp.csr_matrix(
        (
            e.get_column("weight").to_numpy(),
            (e.get_column("_i").to_numpy(), e.get_column("_j").to_numpy()),
        ),
        shape=(len(ids), len(ids)),
    )
    rows, cols = base.get_column("_i").to_numpy(), base.get_column("_t").to_numpy()
    shape = (len(ids), len(times))
    result = base.select(KEY)
    reported = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    total_weight = np.asarray((weights @ reported)[rows, cols]).ravel()
    result = result.with_columns(nb_weight=pl.Series(total_weight))
    for name, column in columns.items():
        values = base.get_column(column).to_numpy().astype(np.float64)
        present = ~np.isnan(values)
        matrix = sp.csr_matrix(
            (np.nan_to_num(values[present]), (rows[present], cols[present])), shape=shape
        )
        weight_present = sp.csr_matrix(
            (np.ones(present.sum()), (rows[present], cols[present])), shape=shape
        )
        num = np.asarray((weights @ matrix)[rows, cols]).ravel()
        den = np.asarray((weights @ weight_present)[rows, cols]).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(den > 0, num / den, np.nan)
        result = result.with_columns(pl.Series(name, mean).fill_nan(None))
    return result


def time_features(frame: pl.DataFrame, timezone: str, country: str) -> pl.DataFrame:
    local = pl.col("snapshot_at").dt.convert_time_zone(timezone)
    out = frame.with_columns(
        local_hour=local.dt.hour().cast(pl.Int32),
        local_minute_of_day=(
            local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
        ),
        weekday=local.dt.weekday().cast(pl.Int32),
        _local_date=local.dt.date(),
    ).with_columns(is_weekend=(pl.col("weekday") >= 6))
    years = sorted({d.year for d in out.get_column("_local_date").unique().to_list()})
    days = []
    if country and years:
        import holidays  # the country's calendar module loads here, not with the definitions

        days = list(holidays.country_holidays(country, years=years))
    return out.with_columns(is_holiday=pl.col("_local_date").is_in(days)).drop("_local_date")


def observable_weather(weather: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """The weather rows known at `at`.

    A row's `hour_start` T is the time its values are valid at, in both sources' own
    convention: temperature and wind are the values at T, precipitation is the total of the
    hour that *ends* at T (Open-Meteo: "sum of the preceding hour"; Meteostat: the observed
    last-hour total, and its met.no provider shifts next-hour totals by one hour to match).
    So a row is observable once T has passed, and the rain falling in [h, h+1) (row h+1) is
    not visible at h:30. The simulator publishes its weather the same way.
    """
    return weather.filter(pl.col("hour_start") <= at) if weather.height else weather


def weather_features(frame: pl.DataFrame, weather: pl.DataFrame) -> pl.DataFrame:
    """The newest weather row observable at t (`observable_weather`), within 3 hours."""
    cols = ["temperature_c", "precipitation_mm", "wind_speed_kmh"]
    if weather.height == 0:
        return frame.with_columns([pl.lit(None, pl.Float64).alias(c) for c in cols])
    w = weather.select(pl.col("hour_start").alias("_weather_at"), *cols).sort("_weather_at")
    return (
        frame.sort("snapshot_at")
        .join_asof(
            w,
            left_on="snapshot_at",
            right_on="_weather_at",
            strategy="backward",
            tolerance=WEATHER_TOLERANCE,
        )
        .drop("_weather_at")
    )


def static_features(frame: pl.DataFrame, information: pl.DataFrame) -> pl.DataFrame:
    """Capacity and location from the station list of t's own day (a later day's list would
    leak the future, e.g. a capacity change)."""
    cell_deg = GRID_CELL_M / 111_320.0
    info = information.select(
        pl.col("as_of_day").alias("_day"),
        "station_id",
        pl.col("capacity").cast(pl.Float64),
        "lat",
        "lon",
    ).unique(["_day", "station_id"], keep="last")
    return (
        frame.with_columns(_day=pl.col("snapshot_at").dt.truncate("1d"))
        .join(info, on=["_day", "station_id"], how="left")
        .drop("_day")
        .with_columns(
            grid_cell=(
                (pl.col("lat") / cell_deg).floor() * 100_000 + (pl.col("lon") / cell_deg).floor()
            ).cast(pl.Int64)
        )
    )


FeatureFunction = Callable[
    [pl.DataFrame, pl.DataFrame, pl.DataFrame, Sequence[datetime], "FeatureContext"], pl.DataFrame
]
"""The signature of `build_station_features` (the no_look_ahead check takes one)."""


def build_station_features(
    history: pl.DataFrame,
    information: pl.DataFrame,
    weather: pl.DataFrame,
    snapshot_times: Sequence[datetime],
    context: FeatureContext,
) -> pl.DataFrame:
    """Features for every station reporting at each of `snapshot_times`.

    `history` is raw_station_status covering [min(snapshot_times) - 60 min, max(snapshot_times)];
    rows after a target time never influence that target (tested).
    """
    if history.height == 0 or not snapshot_times:
        return empty_features()
    core = _status_core(history)
    targets = core.filter(pl.col("snapshot_at").is_in(list(snapshot_times)))
    if targets.height == 0:
        return empty_features()
    rolled = rolling_features(history, targets)
    current = targets.join(rolled, on=KEY, how="left").with_columns(
        utilisation=pl.col("bikes_available")
        / pl.when((pl.col("bikes_available") + pl.col("docks_available")) > 0)
        .then(pl.col("bikes_available") + pl.col("docks_available"))
        .otherwise(None)
    )
    neighbours = _neighbours_by_day(
        current, information, context.neighbour_radius_m, context.stockout_threshold
    )
    out = current.join(neighbours, on=KEY, how="left")
    out = static_features(out, information)
    out = out.with_columns(
        pl.col("capacity").fill_null(pl.col("bikes_available") + pl.col("docks_available"))
    )
    out = time_features(out, context.timezone, context.country)
    out = weather_features(out, weather)
    return out.select(KEY + FEATURE_COLUMNS).with_columns(_casts()).sort(KEY)


def _neighbours_by_day(
    current: pl.DataFrame, information: pl.DataFrame, radius_m: float, threshold: int
) -> pl.DataFrame:
    """Neighbour features of each snapshot from the station list of its own (UTC) day, as
    static_features does: a later day's list (a station moved) must not reach earlier
    snapshots, and a run over many days must give each day what a run over it alone gives."""
    days = current.with_columns(_day=pl.col("snapshot_at").dt.truncate("1d"))
    parts = []
    for (day,), group in days.partition_by("_day", as_dict=True).items():
        info = information.filter(pl.col("as_of_day") == day)
        edges = neighbour_edges(info, radius_m)
        parts.append(neighbour_features(group.drop("_day"), edges, threshold))
    return pl.concat(parts)


def _casts() -> list[pl.Expr]:
    return [pl.col(c).cast(t) for c, t in feature_schema().items() if c in FEATURE_COLUMNS]


def feature_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "snapshot_at": pl.Datetime("us", "UTC"),
        "station_id": pl.String(),
    }
    ints = {"obs_15", "obs_30", "obs_60", "local_hour", "local_minute_of_day", "weekday"}
    for c in FEATURE_COLUMNS:
        if c in ints:
            schema[c] = pl.Int32()
        elif c in ("is_weekend", "is_holiday"):
            schema[c] = pl.Boolean()
        elif c == "grid_cell":
            schema[c] = pl.Int64()
        else:
            schema[c] = pl.Float64()
    return schema


def empty_features() -> pl.DataFrame:
    return pl.DataFrame(schema=feature_schema())
