"""What a dispatcher acts on: stations about to stock out that are still fine now, and
which bikes to move where. Pure polars on a scored snapshot (`stockout_predictions` joined
with the day's station list); the dashboard and `bikeshare demo` both rank with these.

A station already at or below the stockout threshold is not "at risk", it is out already:
persistence sees that for free, so it is listed apart (`stocked_out_now`).
"""

from __future__ import annotations

import math

import polars as pl

from bikeshare_assets.features.labels import TARGETS

TARGET_LABELS = {"stockout_bikes": "no bikes", "stockout_docks": "no docks"}
VAN_CAPACITY = 20  # bikes one van trip moves at most
EARTH_RADIUS_KM = 6371.0


def station_snapshot(predictions: pl.DataFrame, stations: pl.DataFrame | None) -> pl.DataFrame:
    """One scored snapshot with the station's name, position and capacity (left join: a
    station missing from the day's list keeps its prediction, without a name)."""
    frame = predictions.with_columns(risk=pl.max_horizontal("p_stockout_bikes", "p_stockout_docks"))
    if stations is None or stations.height == 0:
        return frame.with_columns(
            name=pl.lit(None, pl.String),
            lat=pl.lit(None, pl.Float64),
            lon=pl.lit(None, pl.Float64),
            capacity=pl.lit(None, pl.Int64),
        )
    info = stations.select(
        "station_id", "name", "lat", "lon", pl.col("capacity").cast(pl.Int64)
    ).unique("station_id", keep="last")
    return frame.join(info, on="station_id", how="left")


def at_risk(
    snapshot: pl.DataFrame,
    threshold: int,
    *,
    targets: tuple[str, ...] = tuple(TARGETS),
    min_p: float = 0.0,
) -> pl.DataFrame:
    """Stations not stocked out now for a target whose P(stockout in 30 min) >= min_p, one
    row per (station, target), highest probability first."""
    parts = []
    for target in targets:
        count = TARGETS[target]
        parts.append(
            snapshot.filter((pl.col(count) > threshold) & (pl.col(f"p_{target}") >= min_p)).select(
                pl.lit(target).alias("target"),
                pl.lit(TARGET_LABELS[target]).alias("risk_of"),
                pl.col(f"p_{target}").alias("p"),
                *[c for c in snapshot.columns if c not in ("target", "p")],
            )
        )
    if not parts:
        return snapshot.clear()
    return pl.concat(parts).sort(["p", "station_id"], descending=[True, False])


def decision_thresholds(predictions: pl.DataFrame) -> dict[str, float]:
    """Per target, the lowest P the served model flagged in this snapshot (`flag_<target>`
    is P >= the decision threshold in the registry): the threshold as the rows show it,
    without asking MLflow. Targets with no flagged row (or no flag column) are left out."""
    out = {}
    for target in TARGETS:
        flag = f"flag_{target}"
        if flag in predictions.columns:
            lowest = predictions.filter(pl.col(flag).cast(pl.Boolean))[f"p_{target}"].min()
            if lowest is not None:
                out[target] = float(lowest)  # type: ignore[arg-type]
    return out


def stocked_out_now(snapshot: pl.DataFrame, threshold: int) -> dict[str, pl.DataFrame]:
    """Per target, the stations already at or below the threshold (empty / full now)."""
    return {
        target: snapshot.filter(pl.col(count) <= threshold).sort(f"p_{target}", descending=True)
        for target, count in TARGETS.items()
    }


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance; works on floats and on polars expressions."""
    if isinstance(lat1, float | int) and isinstance(lat2, float | int):
        p1, p2 = math.radians(lat1), math.radians(lat2)
        dp, dl = p2 - p1, math.radians(lon2 - lon1)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))
    p1, p2 = lat1.radians(), lat2.radians()
    dp, dl = p2 - p1, (lon2 - lon1).radians()
    a = (dp / 2).sin() ** 2 + p1.cos() * p2.cos() * (dl / 2).sin() ** 2
    return 2 * EARTH_RADIUS_KM * a.sqrt().arcsin()


def within_radius(frame: pl.DataFrame, lat: float, lon: float, radius_km: float) -> pl.DataFrame:
    """Rows within `radius_km` of a point, with their distance (`distance_km`)."""
    return frame.with_columns(
        distance_km=haversine_km(pl.col("lat"), pl.col("lon"), pl.lit(lat), pl.lit(lon))
    ).filter(pl.col("distance_km") <= radius_km)


def suggest_moves(
    snapshot: pl.DataFrame,
    threshold: int,
    *,
    min_p: float = 0.5,
    max_km: float = 2.0,
    van_capacity: int = VAN_CAPACITY,
) -> pl.DataFrame:
    """Pair stations about to run out of docks (too many bikes: take bikes there) with the
    nearest station about to run out of bikes (bring them there).

    Receivers are served in order of P(no bikes); each takes the nearest unused donor within
    `max_km`. Bikes to move bring both towards half full, at most one van load and never
    below 1. Stations already empty/full are candidates too (they need it most); the
    `*_now` columns say which.
    """
    cols = ["station_id", "name", "lat", "lon", "capacity", "bikes_available", "docks_available"]
    receivers = (
        snapshot.filter(pl.col("p_stockout_bikes") >= min_p, pl.col("lat").is_not_null())
        .sort(["p_stockout_bikes", "station_id"], descending=[True, False])
        .select(*cols, "p_stockout_bikes")
        .with_row_index("index")
    )
    donors = (
        snapshot.filter(pl.col("p_stockout_docks") >= min_p, pl.col("lat").is_not_null())
        .select(*cols, "p_stockout_docks")
        .with_row_index("index")
    )
    if receivers.height == 0 or donors.height == 0:
        return pl.DataFrame(schema=MOVES_SCHEMA)
    # Every (receiver, donor) pair within reach, in one vectorized pass (a Python loop over
    # all pairs took ~0.2 s for a city); nearest first per receiver, ties to the later donor.
    pairs = (
        receivers.select(r="index", r_id="station_id", r_lat="lat", r_lon="lon")
        .join(donors.select(d="index", d_id="station_id", d_lat="lat", d_lon="lon"), how="cross")
        .with_columns(
            km=haversine_km(pl.col("r_lat"), pl.col("r_lon"), pl.col("d_lat"), pl.col("d_lon"))
        )
        .filter(pl.col("km") <= max_km, pl.col("r_id") != pl.col("d_id"))
        .sort(["r", "km", "d"], descending=[False, False, True])
        .select("r", "d", "km")
    )
    receiver_rows, donor_rows = receivers.to_dicts(), donors.to_dicts()
    used: set[int] = set()
    served: set[int] = set()
    rows = []
    for r_index, d_index, best_km in pairs.iter_rows():
        if r_index in served or d_index in used:
            continue
        served.add(r_index)
        r, best = receiver_rows[r_index], donor_rows[d_index]
        used.add(d_index)
        need = (
            _half(r["capacity"], r["bikes_available"] + r["docks_available"]) - r["bikes_available"]
        )
        surplus = best["bikes_available"] - _half(
            best["capacity"], best["bikes_available"] + best["docks_available"]
        )
        rows.append(
            {
                "from_station": best["station_id"],
                "from_name": best["name"],
                "from_bikes": int(best["bikes_available"]),
                "from_docks": int(best["docks_available"]),
                "p_no_docks": best["p_stockout_docks"],
                "from_full_now": best["docks_available"] <= threshold,
                "to_station": r["station_id"],
                "to_name": r["name"],
                "to_bikes": int(r["bikes_available"]),
                "to_docks": int(r["docks_available"]),
                "p_no_bikes": r["p_stockout_bikes"],
                "to_empty_now": r["bikes_available"] <= threshold,
                "distance_km": round(best_km, 2),
                "bikes_to_move": int(max(1, min(need, surplus, van_capacity))),
            }
        )
    return pl.DataFrame(rows, schema=MOVES_SCHEMA)


def _half(capacity: int | None, docks_in_service: float) -> int:
    """Half of the usable docks (capacity, or bikes + free docks when capacity is missing)."""
    usable = docks_in_service if capacity is None else min(capacity, docks_in_service)
    return math.ceil(usable / 2)


MOVES_SCHEMA = {
    "from_station": pl.String,
    "from_name": pl.String,
    "from_bikes": pl.Int64,
    "from_docks": pl.Int64,
    "p_no_docks": pl.Float64,
    "from_full_now": pl.Boolean,
    "to_station": pl.String,
    "to_name": pl.String,
    "to_bikes": pl.Int64,
    "to_docks": pl.Int64,
    "p_no_bikes": pl.Float64,
    "to_empty_now": pl.Boolean,
    "distance_km": pl.Float64,
    "bikes_to_move": pl.Int64,
}
