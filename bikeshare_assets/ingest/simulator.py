"""A seeded, realistic bike-share system that speaks GBFS 2.3.

Scale benchmarks need thousands of stations over weeks, and drift tests need a system whose
behaviour can be changed on purpose; neither is possible with a recording. The simulator
hands back the same bytes a live feed would send, so simulated snapshots go through the very
parsing and validation path live ones do, plus a fast long-frame path for benchmarks and
training that holds exactly the same numbers as the documents.

Determinism: everything is drawn from numpy generators seeded by (seed, purpose[, day]).
The trajectory is simulated one UTC day at a time from the state at that day's start
(a checkpoint), with a generator seeded by (seed, day), so any snapshot can be requested in
any order, re-simulated after a cache eviction, and always comes back byte-identical.

What is modelled, and why it matters for a stockout predictor:

- stations placed around the centre, business stations nearer the middle, residential
  stations further out and a few leisure spots anywhere; capacities 12-60 docks;
- trips as Poisson departures/arrivals whose rates follow local-time profiles per station
  kind: weekday commute peaks (residential stations empty in the morning while business
  stations fill, the reverse in the evening), flatter weekends with leisure peaks;
- demand noise per station-day and per hour, a weak pull back toward each station's usual
  fill (riders avoid near-empty stations), rebalancing vans that occasionally reset a
  stocked-out station during working hours;
- hourly weather (diurnal temperature cycle, synoptic anomalies, rain spells, wind) that
  cuts trips when it rains, is cold or windy;
- feed faults: station outages (not renting/returning, counts and last_reported frozen),
  stations occasionally missing from the feed, bikes and docks disabled now and then.

Drift knobs (`demand_scale`, `temperature_shift_c`, `outage_rate`) apply from
`drift_start` on (the whole run when it is None), so a drifted system is identical to the
undrifted one before the drift starts.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from bikeshare_assets.ingest.sources import FeedDocument

if TYPE_CHECKING:
    from bikeshare_assets.cities import City

GBFS_VERSION = "2.3"
STOCKOUT_THRESHOLD = 2  # bikes <= 2 or docks <= 2, as in the architecture
KINDS: tuple[str, ...] = ("residential", "business", "leisure")
_RESIDENTIAL, _BUSINESS, _LEISURE = 0, 1, 2

# Purpose tags mixed into the seed so layout, weather and each day draw independent streams.
_TAG_LAYOUT, _TAG_WEATHER, _TAG_DAY = 1, 2, 3
_BURN_IN_DAYS = 2  # simulated before `start` so the first snapshot is already "lived in"
_INFO_TTL_S = 86_400
DEFAULT_OUTAGE_RATE = 0.01

# Flag bits in the recorded status array.
_F_INSTALLED, _F_RENTING, _F_RETURNING, _F_PRESENT = 1, 2, 4, 8

# fmt: off
_STREETS = (
    "Rivoli", "Saint-Antoine", "Oberkampf", "Faubourg du Temple", "République", "Bastille",
    "Voltaire", "Charonne", "Belleville", "Ménilmontant", "Pyrénées", "Daumesnil", "Bercy",
    "Tolbiac", "Italie", "Gobelins", "Mouffetard", "Monge", "Saint-Michel", "Saint-Germain",
    "Raspail", "Montparnasse", "Vaugirard", "Convention", "Lecourbe", "Grenelle", "Invalides",
    "Trocadéro", "Kléber", "Wagram", "Courcelles", "Batignolles", "Clichy", "Pigalle",
    "Abbesses", "Barbès", "Château-Rouge", "Stalingrad", "Jaurès", "Villette", "Ourcq",
    "Crimée", "Botzaris", "Gambetta", "Nation", "Picpus", "Opéra", "Haussmann", "Lafayette",
    "Poissonnière", "Sentier", "Réaumur", "Turbigo", "Beaubourg", "Temple", "Marais", "Sévigné",
    "Pont-Neuf", "Louvre", "Palais-Royal",
)
# fmt: on
_SUFFIXES = ("", "", "", " - Gare", " - Mairie", " - Parc", " - Marché", " - Église")


# --------------------------------------------------------------------------------------
# configuration


def _utc(value: datetime, what: str) -> datetime:
    """Return `value` in UTC; naive datetimes are refused rather than silently guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"simulator: {what}={value!r} must be timezone-aware (UTC).")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines one simulated system; equal configs give equal bytes."""

    stations: int
    days: int
    seed: int
    start: datetime  # UTC, aligned to the cadence
    cadence_minutes: int = 5
    center_lat: float = 48.8566
    center_lon: float = 2.3522
    radius_km: float = 8.0
    timezone: str = "Europe/Paris"
    country: str | None = None  # ISO code: public holidays behave like Sundays when set
    # drift knobs
    demand_scale: float = 1.0
    temperature_shift_c: float = 0.0
    outage_rate: float = DEFAULT_OUTAGE_RATE  # expected fraction of station-time spent in an outage
    drift_start: datetime | None = None  # knobs apply from here on (None: the whole run)

    def __post_init__(self) -> None:
        if self.stations < 1:
            raise ValueError(f"simulator: stations={self.stations} must be >= 1.")
        if self.days < 1:
            raise ValueError(f"simulator: days={self.days} must be >= 1.")
        if self.seed < 0:
            raise ValueError(f"simulator: seed={self.seed} must be >= 0.")
        if self.cadence_minutes <= 0 or 60 % self.cadence_minutes:
            raise ValueError(
                f"simulator: cadence_minutes={self.cadence_minutes} must divide 60 "
                "(1, 2, 3, 5, 10, 15, 20, 30 or 60)."
            )
        start = _utc(self.start, "start")
        if int(start.timestamp()) % (self.cadence_minutes * 60) or start.microsecond:
            raise ValueError(
                f"simulator: start={start.isoformat()} is not aligned to the "
                f"{self.cadence_minutes}-minute cadence."
            )
        object.__setattr__(self, "start", start)
        if self.drift_start is not None:
            object.__setattr__(self, "drift_start", _utc(self.drift_start, "drift_start"))
        if not 0.0 <= self.outage_rate < 0.5:
            raise ValueError(f"simulator: outage_rate={self.outage_rate} must be in [0, 0.5).")
        if self.demand_scale < 0:
            raise ValueError(f"simulator: demand_scale={self.demand_scale} must be >= 0.")
        if self.radius_km <= 0:
            raise ValueError(f"simulator: radius_km={self.radius_km} must be > 0.")
        ZoneInfo(self.timezone)  # fail here, not in the middle of a simulation

    @property
    def end(self) -> datetime:
        """Exclusive end of the simulated period."""
        return self.start + timedelta(days=self.days)

    @property
    def steps_per_day(self) -> int:
        return 1440 // self.cadence_minutes

    @classmethod
    def from_city(cls, city: City, **overrides: Any) -> SimulationConfig:
        """Build the config of a city's `[simulate]` table (centre, timezone, holidays).

        The city's `radius_km` is the coordinate-check radius, not the service area, so the
        station spread keeps its own default unless overridden.
        """
        if city.simulate is None:
            raise ValueError(f"city '{city.key}' has no [simulate] table in its cities file.")
        sim = city.simulate
        values: dict[str, Any] = {
            "stations": sim.stations,
            "days": sim.days,
            "seed": sim.seed,
            "start": sim.start,
            "cadence_minutes": sim.cadence_minutes,
            "center_lat": city.latitude,
            "center_lon": city.longitude,
            "timezone": city.timezone,
            "country": city.country or None,
        }
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------------------
# static layout and daily profiles


@dataclass(frozen=True)
class _Layout:
    ids: list[str]
    names: list[str]
    lat: np.ndarray
    lon: np.ndarray
    capacity: np.ndarray  # int16
    kind: np.ndarray  # int8 index into KINDS
    distance_km: np.ndarray
    popularity: np.ndarray  # mean departures per hour on an average weekday hour
    imbalance_scale: np.ndarray
    target_fill: np.ndarray


def _build_layout(cfg: SimulationConfig) -> _Layout:
    """Place stations: business in the middle, residential around, leisure anywhere."""
    rng = np.random.default_rng([cfg.seed, _TAG_LAYOUT])
    n = cfg.stations
    rel = np.sqrt(rng.random(n))  # uniform over the disc: relative distance 0..1
    angle = rng.random(n) * 2 * np.pi
    dist = rel * cfg.radius_km
    p_business = 0.8 * np.exp(-rel / 0.38) + 0.06
    p_leisure = np.full(n, 0.12)
    u = rng.random(n)
    kind = np.where(
        u < p_business, _BUSINESS, np.where(u < p_business + p_leisure, _LEISURE, _RESIDENTIAL)
    ).astype(np.int8)
    dy, dx = dist * np.sin(angle), dist * np.cos(angle)
    lat = cfg.center_lat + dy / 110.574
    lon = cfg.center_lon + dx / (111.320 * np.cos(np.radians(cfg.center_lat)))
    base_cap = rng.lognormal(np.log(28.0), 0.32, n) * np.where(kind == _BUSINESS, 1.15, 1.0)
    capacity = np.clip(np.round(base_cap), 12, 60).astype(np.int16)
    centrality = 1.35 - 0.55 * rel
    popularity = rng.lognormal(np.log(3.0), 0.45, n) * np.sqrt(capacity / 28.0) * centrality
    imbalance_scale = rng.uniform(0.6, 1.4, n)
    target_fill = np.clip(
        rng.normal(0.38, 0.1, n) + np.where(kind == _RESIDENTIAL, 0.02, 0.0), 0.15, 0.7
    )
    width = max(5, len(str(n)))
    ids = [f"sim-{i + 1:0{width}d}" for i in range(n)]
    a = rng.integers(0, len(_STREETS), n)
    b = (a + rng.integers(1, len(_STREETS), n)) % len(_STREETS)
    s = rng.integers(0, len(_SUFFIXES), n)
    names = [
        f"{_STREETS[i]} - {_STREETS[j]}{_SUFFIXES[k]}"
        for i, j, k in zip(a.tolist(), b.tolist(), s.tolist(), strict=True)
    ]
    return _Layout(
        ids=ids,
        names=names,
        lat=np.round(lat, 6),
        lon=np.round(lon, 6),
        capacity=capacity,
        kind=kind,
        distance_km=dist,
        popularity=popularity,
        imbalance_scale=imbalance_scale,
        target_fill=target_fill,
    )


def _bump(h: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((h - mu) / sigma) ** 2)


def _daytime(h: np.ndarray, wake: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(h - wake) * 2.0)) / (1.0 + np.exp((h - 22.5) * 1.5))


def _profiles(hour: np.ndarray, weekend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activity (relative trip rate) and imbalance (+ = more departures) per kind.

    Shapes (steps, 3). Weekday activity averages ~1 so `popularity` reads as trips per hour.
    """
    h = hour
    wd_day, we_day = _daytime(h, 6.5), _daytime(h, 8.5)
    act_wd = np.stack(
        [
            0.10 + 0.75 * wd_day + 1.7 * _bump(h, 8.3, 0.9) + 1.4 * _bump(h, 18.0, 1.2),
            0.08
            + 0.75 * wd_day
            + 1.9 * _bump(h, 8.6, 0.9)
            + 1.6 * _bump(h, 17.9, 1.2)
            + 0.4 * _bump(h, 12.7, 0.8),
            0.12
            + 0.85 * wd_day
            + 0.5 * _bump(h, 8.4, 1.0)
            + 0.9 * _bump(h, 18.3, 1.5)
            + 0.6 * _bump(h, 13.5, 2.0),
        ],
        axis=1,
    )
    act_we = np.stack(
        [
            0.14 + 0.65 * we_day + 0.9 * _bump(h, 15.0, 2.6) + 0.25 * _bump(h, 1.0, 1.2),
            0.10 + 0.40 * we_day + 0.5 * _bump(h, 15.0, 2.6) + 0.25 * _bump(h, 1.0, 1.2),
            0.14 + 0.80 * we_day + 1.8 * _bump(h, 14.5, 2.6) + 0.25 * _bump(h, 1.0, 1.2),
        ],
        axis=1,
    )
    imb_wd = np.stack(
        [
            0.60 * _bump(h, 8.0, 1.1) - 0.55 * _bump(h, 18.6, 1.6),
            -0.62 * _bump(h, 8.5, 1.0) + 0.58 * _bump(h, 17.8, 1.4),
            -0.15 * _bump(h, 12.0, 2.0) + 0.15 * _bump(h, 18.0, 2.0),
        ],
        axis=1,
    )
    imb_we = np.stack(
        [
            0.30 * _bump(h, 11.0, 2.0) - 0.30 * _bump(h, 18.5, 2.0),
            -0.10 * _bump(h, 13.0, 2.0) + 0.10 * _bump(h, 18.0, 2.0),
            -0.50 * _bump(h, 12.5, 1.8) + 0.50 * _bump(h, 17.5, 1.8),
        ],
        axis=1,
    )
    w = weekend[:, None]
    return np.where(w, act_we, act_wd), np.where(w, imb_we, imb_wd)


# --------------------------------------------------------------------------------------
# weather


@dataclass(frozen=True)
class _Weather:
    origin: datetime  # UTC hour of index 0
    temperature_c: np.ndarray
    precipitation_mm: np.ndarray
    wind_speed_kmh: np.ndarray
    weather_code: np.ndarray  # int32, WMO codes
    demand_factor: np.ndarray  # (hours, 3): trips multiplier per station kind


def _local_clock(times: list[datetime], tz: ZoneInfo) -> tuple[np.ndarray, list[date]]:
    """Local hour-of-day (float) and local date of each UTC instant."""
    local = [t.astimezone(tz) for t in times]
    hour = np.array([t.hour + t.minute / 60.0 for t in local])
    return hour, [t.date() for t in local]


def _build_weather(cfg: SimulationConfig) -> _Weather:
    """Hourly weather from the seed: a prefix-stable sequence (more days never rewrites earlier
    hours), shifted by `temperature_shift_c` from `drift_start` on."""
    origin = (cfg.start - timedelta(days=_BURN_IN_DAYS)).replace(minute=0, second=0)
    n = (_BURN_IN_DAYS + cfg.days) * 24 + 2
    times = [origin + timedelta(hours=i) for i in range(n)]
    hour, dates = _local_clock(times, ZoneInfo(cfg.timezone))
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=float)
    season_phase = 0.0 if cfg.center_lat >= 0 else np.pi
    seasonal = 11.5 + 8.5 * np.cos(2 * np.pi * (doy - 200.0) / 365.25 + season_phase)

    # one generator per stream, so hour i never depends on how many hours are drawn
    streams = [np.random.default_rng([cfg.seed, _TAG_WEATHER, j]) for j in range(5)]
    innov_t = streams[0].standard_normal(n)
    innov_w = streams[1].standard_normal(n)
    innov_c = streams[2].standard_normal(n)
    u_rain = streams[3].random(n)
    amount = streams[4].gamma(0.9, 1.3, n)

    phi_t, phi_w, phi_c = np.exp(-1 / 72), np.exp(-1 / 12), np.exp(-1 / 8)
    anomaly = np.empty(n)
    log_wind = np.empty(n)
    cloud = np.empty(n)
    wet = np.zeros(n, dtype=bool)
    a = innov_t[0] * 3.0
    lw = innov_w[0] * 0.45
    c = innov_c[0]
    state = False
    for i in range(n):  # a few hundred hours: a plain loop keeps the Markov chains readable
        a = phi_t * a + 3.0 * np.sqrt(1 - phi_t**2) * innov_t[i]
        lw = phi_w * lw + 0.45 * np.sqrt(1 - phi_w**2) * innov_w[i]
        c = phi_c * c + np.sqrt(1 - phi_c**2) * innov_c[i]
        state = u_rain[i] < (0.80 if state else 0.028)
        anomaly[i], log_wind[i], cloud[i], wet[i] = a, lw, c, state

    precip = np.where(wet, np.maximum(amount, 0.1), 0.0)
    amplitude = np.where(wet, 1.5, 4.5)
    temp = seasonal + anomaly + amplitude * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    temp = temp - np.where(wet, 1.0, 0.0)
    wind = np.exp(np.log(11.0) + log_wind) * np.where(wet, 1.3, 1.0)
    wind = wind * (1.0 + 0.15 * _bump(hour, 15.0, 3.0))

    drift = np.ones(n, dtype=bool)
    if cfg.drift_start is not None:
        drift = np.array([t >= cfg.drift_start for t in times])
    temp = temp + np.where(drift, cfg.temperature_shift_c, 0.0)
    temp, precip, wind = np.round(temp, 1), np.round(precip, 1), np.round(wind, 1)

    cloud_u = 0.5 * (1.0 + np.tanh(cloud))  # 0..1
    dry_code = np.select([cloud_u < 0.25, cloud_u < 0.5, cloud_u < 0.75], [0, 1, 2], 3)
    rain_code = np.select([precip < 0.3, precip < 2.5, precip < 7.6], [51, 61, 63], 65)
    snow_code = np.select([precip < 2.5, precip < 7.6], [71, 73], 75)
    wet_code = np.where(temp <= 0.5, snow_code, rain_code)
    wet_code = np.where((precip >= 6.0) & (temp >= 18.0), 95, wet_code)
    code = np.where(precip > 0, wet_code, dry_code).astype(np.int32)

    factor = (
        np.where(precip > 0, 0.8 / (1.0 + 0.35 * precip**0.7), 1.0)
        * np.clip(1.0 - 0.035 * np.maximum(0.0, 10.0 - temp), 0.35, 1.0)
        * np.clip(1.0 - 0.03 * np.maximum(0.0, temp - 30.0), 0.6, 1.0)
        * np.clip(1.0 - 0.012 * np.maximum(0.0, wind - 25.0), 0.6, 1.0)
    )
    # commuters ride anyway, leisure riders stay home
    per_kind = np.stack([factor**0.85, factor**0.7, factor**1.4], axis=1)
    return _Weather(origin, temp, precip, wind, code, per_kind)


# --------------------------------------------------------------------------------------
# dynamics


@dataclass
class _State:
    """Per-station state at a step; copied into checkpoints at day boundaries."""

    bikes: np.ndarray  # int16
    bikes_disabled: np.ndarray  # int16
    docks_disabled: np.ndarray  # int16
    outage_left: np.ndarray  # int32 steps still in outage (0: working)
    uninstalled: np.ndarray  # bool: the outage also takes the station out (is_installed false)
    missing_left: np.ndarray  # int32 steps still absent from the feed
    last_reported: np.ndarray  # int64 seconds relative to config.start

    def copy(self) -> _State:
        return _State(**{k: v.copy() for k, v in self.__dict__.items()})


class _EventPlan:
    """Which stations an event of per-station probability p[k] hits at each step of a day.

    Drawing a count per step then the stations costs O(events), not a coin per station and
    step. A station may be drawn twice in a step; every consumer treats that as once.
    """

    def __init__(self, rng: np.random.Generator, n: int, p: np.ndarray) -> None:
        counts = rng.binomial(n, np.clip(p, 0.0, 1.0))
        self.idx = rng.integers(0, n, int(counts.sum()))
        self._offsets = np.concatenate(([0], np.cumsum(counts))).tolist()

    @property
    def size(self) -> int:
        return int(self.idx.size)

    def bounds(self, k: int) -> tuple[int, int]:
        return self._offsets[k], self._offsets[k + 1]

    def at(self, k: int) -> np.ndarray:
        return self.idx[self._offsets[k] : self._offsets[k + 1]]


@dataclass(frozen=True)
class _DayRecord:
    """One day of snapshots, (steps, stations), small ints."""

    bikes: np.ndarray  # uint8
    bikes_disabled: np.ndarray  # uint8
    docks_disabled: np.ndarray  # uint8
    flags: np.ndarray  # uint8 bit set (_F_*)
    last_reported: np.ndarray  # int32 seconds relative to config.start

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.__dict__.values())


class SimulatedSystem:
    """A deterministic simulated bike-share system; serves any snapshot in any order.

    Days are simulated lazily and kept in a small LRU cache (`cache_days`); the state at
    the start of every simulated day is kept as a checkpoint, so an evicted day is
    re-simulated from its checkpoint with the same (seed, day) generator.
    """

    def __init__(self, config: SimulationConfig, *, cache_days: int = 8) -> None:
        self.config = config
        self._cache_days = max(1, cache_days)
        self._layout = _build_layout(config)
        self._weather = _build_weather(config)
        self._tz = ZoneInfo(config.timezone)
        self._epoch = int(config.start.timestamp())
        self._cadence_s = config.cadence_minutes * 60
        self._checkpoints: dict[int, _State] = {}
        self._days: OrderedDict[int, _DayRecord] = OrderedDict()
        self._lock = threading.RLock()
        self._holidays: Any = None
        if config.country:
            import holidays

            years = range(config.start.year - 1, config.end.year + 2)
            self._holidays = holidays.country_holidays(config.country, years=years)
        cap = self._layout.capacity
        self._max_disabled = np.maximum(1, cap // 10).astype(np.int16)
        self._n_vans = max(1, round(config.stations / 150))

    # ---- time helpers -----------------------------------------------------------------

    @property
    def start(self) -> datetime:
        return self.config.start

    @property
    def end(self) -> datetime:
        return self.config.end

    @property
    def station_ids(self) -> list[str]:
        return list(self._layout.ids)

    def snapshot_times(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[datetime]:
        """The snapshot instants in [start, end) ∩ the simulated period."""
        k0, k1 = self._step_range(start or self.start, end or self.end)
        return [self.start + timedelta(seconds=k * self._cadence_s) for k in range(k0, k1)]

    def first_snapshot_in(self, start: datetime, end: datetime) -> datetime | None:
        """The first snapshot instant in [start, end) ∩ the simulated period, if any."""
        k0, k1 = self._step_range(start, end)
        return self.start + timedelta(seconds=k0 * self._cadence_s) if k1 > k0 else None

    def _step_range(self, start: datetime, end: datetime) -> tuple[int, int]:
        s = int(_utc(start, "start").timestamp()) - self._epoch
        e = int(_utc(end, "end").timestamp()) - self._epoch
        total = self.config.days * self.config.steps_per_day
        k0 = max(0, -(-s // self._cadence_s))
        k1 = min(total, -(-e // self._cadence_s))
        return k0, max(k0, k1)

    def _step_of(self, at: datetime) -> int:
        offset = (_utc(at, "at") - self.start).total_seconds()
        total = self.config.days * self.config.steps_per_day
        step, rem = divmod(offset, self._cadence_s)
        if rem or not 0 <= step < total:
            raise ValueError(
                f"simulator: no snapshot at {at.isoformat()}; snapshots are every "
                f"{self.config.cadence_minutes} min in [{self.start.isoformat()}, "
                f"{self.end.isoformat()})."
            )
        return int(step)

    # ---- simulation -------------------------------------------------------------------

    def _initial_state(self) -> _State:
        lay = self._layout
        rng = np.random.default_rng([self.config.seed, _TAG_DAY, 0])
        fill = np.clip(lay.target_fill + rng.normal(0, 0.1, len(lay.ids)), 0.05, 0.95)
        n = len(lay.ids)
        return _State(
            bikes=np.round(fill * lay.capacity).astype(np.int16),
            bikes_disabled=np.zeros(n, np.int16),
            docks_disabled=np.zeros(n, np.int16),
            outage_left=np.zeros(n, np.int32),
            uninstalled=np.zeros(n, bool),
            missing_left=np.zeros(n, np.int32),
            last_reported=np.full(n, -_BURN_IN_DAYS * 86_400, np.int64),
        )

    def _checkpoint(self, day: int) -> _State:
        """State at the start of `day`, simulating forward from the nearest known checkpoint."""
        if day in self._checkpoints:
            return self._checkpoints[day]
        known = [d for d in self._checkpoints if d < day]
        if known:
            first = max(known)
            state = self._checkpoints[first]
        else:
            first, state = -_BURN_IN_DAYS, self._initial_state()
        for d in range(first, day):
            record, state = self._simulate_day(d, state)
            self._checkpoints[d + 1] = state
            if d >= 0:
                self._remember(d, record)
        return state

    def _remember(self, day: int, record: _DayRecord) -> None:
        self._days[day] = record
        self._days.move_to_end(day)
        while len(self._days) > self._cache_days:
            self._days.popitem(last=False)

    def _day(self, day: int) -> _DayRecord:
        with self._lock:
            if day in self._days:
                self._days.move_to_end(day)
                return self._days[day]
            record, end_state = self._simulate_day(day, self._checkpoint(day))
            self._checkpoints[day + 1] = end_state
            self._remember(day, record)
            return record

    def _simulate_day(self, day: int, state: _State) -> tuple[_DayRecord, _State]:
        """Simulate the UTC day `day` (0 = the day starting at config.start) from `state`.

        Depends only on `state` and the (seed, day) generator, never on what was asked
        before, which is what makes any request order give identical snapshots.
        """
        cfg, lay = self.config, self._layout
        s = state
        n, steps = cfg.stations, cfg.steps_per_day
        dt_h = cfg.cadence_minutes / 60.0
        rng = np.random.default_rng([cfg.seed, _TAG_DAY, day + _BURN_IN_DAYS + 1])
        day_offset = day * 86_400
        rel_times = day_offset + np.arange(steps, dtype=np.int64) * self._cadence_s
        times = [self.start + timedelta(seconds=int(t)) for t in rel_times]
        hour, dates = _local_clock(times, self._tz)
        weekend = np.array(
            [
                d.weekday() >= 5 or (self._holidays is not None and d in self._holidays)
                for d in dates
            ]
        )
        activity, imbalance = _profiles(hour, weekend)
        weather_idx = (rel_times + self._epoch - int(self._weather.origin.timestamp())) // 3600
        wfac = self._weather.demand_factor[weather_idx]  # (steps, 3)
        if cfg.drift_start is None:
            drift = np.ones(steps, bool)
        else:
            drift = rel_times + self._epoch >= int(cfg.drift_start.timestamp())
        scale = np.where(drift, cfg.demand_scale, 1.0)
        outage_rate = np.where(drift, cfg.outage_rate, DEFAULT_OUTAGE_RATE)
        # Noise: per station-day (local events, a closed street) and per hour (city-wide mood).
        station_day = rng.lognormal(-0.02, 0.2, n)
        hourly = rng.lognormal(-0.005, 0.1, 25)[np.minimum(hour.astype(int), 24)]
        kind = lay.kind
        # base trips per step per station in each direction, (steps, n)
        base = (
            (activity * wfac)[:, kind]
            * (lay.popularity * station_day * dt_h)[None, :]
            * (scale * hourly)[:, None]
        )
        imb_base = imbalance[:, kind] * lay.imbalance_scale[None, :]
        working = (hour >= 6.0) & (hour < 22.0)
        cap = lay.capacity.astype(np.int16)

        rec_bikes = np.empty((steps, n), np.uint8)
        rec_bd = np.empty((steps, n), np.uint8)
        rec_dd = np.empty((steps, n), np.uint8)
        rec_flags = np.empty((steps, n), np.uint8)
        rec_lr = np.empty((steps, n), np.int32)
        max_dis = self._max_disabled
        cad = self._cadence_s
        per5 = cfg.cadence_minutes / 5.0  # event probabilities below are per 5 minutes
        report_phase = rng.integers(0, cad, n)  # each station reports on its own clock
        # riders lean away from near-empty / near-full stations: a pull toward target fill
        pull = 0.6
        imb_base = imb_base - pull * lay.target_fill[None, :]

        # Every rare event of the day is drawn up front as (step, station) plans, so the hot
        # loop only applies them; the draws never depend on the state, the filters do.
        broken = _EventPlan(rng, n, np.full(steps, 0.0015 * per5))
        jammed = _EventPlan(rng, n, np.full(steps, 0.0004 * per5))
        bikes_fixed = _EventPlan(rng, n, np.full(steps, 0.008 * per5))
        docks_fixed = _EventPlan(rng, n, np.full(steps, 0.003 * per5))
        # outage durations: lognormal, median 90 min, clipped to [15 min, 24 h]: ~2 h mean
        outages = _EventPlan(rng, n, outage_rate / (120.0 / cfg.cadence_minutes))
        outage_len = np.maximum(
            1,
            np.round(
                np.clip(rng.lognormal(np.log(90.0), 0.8, outages.size), 15.0, 1440.0)
                / cfg.cadence_minutes
            ),
        ).astype(np.int32)
        outage_inst = np.where(rng.random(outages.size) < 0.2, 0, _F_INSTALLED).astype(np.uint8)
        gaps = _EventPlan(rng, n, outage_rate / 4.0 / 3.5)  # 1-6 steps, mean 3.5
        gap_len = rng.integers(1, 7, gaps.size).astype(np.int32)
        van_moves = np.where(
            working, rng.binomial(self._n_vans, min(1.0, cfg.cadence_minutes / 20.0), steps), 0
        ).tolist()
        van_level = rng.uniform(0.35, 0.6, int(sum(van_moves)))
        van_used = 0

        # Hot loop: plain arrays and a handful of vector ops per step. Outages and feed
        # absences are kept as "until step" (day-local index; < k means over).
        bikes = s.bikes.astype(np.int16)
        bd = s.bikes_disabled.astype(np.int16)
        dd = s.docks_disabled.astype(np.int16)
        usable = cap - bd - dd
        pull_per_bike = pull / usable
        outage_until = (s.outage_left - 1).astype(np.int32)
        missing_until = (s.missing_left - 1).astype(np.int32)
        installed = np.where(s.uninstalled, 0, _F_INSTALLED).astype(np.uint8)
        frozen_lr = s.last_reported.astype(np.int64)
        working_flags = np.uint8(_F_INSTALLED | _F_RENTING | _F_RETURNING)
        sign = np.array([[1.0], [-1.0]])  # departures, arrivals
        for k in range(steps):
            active = outage_until < k
            flags = np.where(active, working_flags, installed)
            flags |= (missing_until < k).view(np.uint8) << 3  # _F_PRESENT
            rec_flags[k] = flags
            rec_bikes[k] = bikes
            rec_bd[k] = bd
            rec_dd[k] = dd
            rec_lr[k] = np.where(active, rel_times[k] - report_phase, frozen_lr)

            # trips over [t_k, t_k+1): departures first, then arrivals into free docks
            imb = imb_base[k] + bikes * pull_per_bike
            np.clip(imb, -0.9, 0.9, out=imb)
            trips = rng.poisson((base[k] * active) * (1.0 + sign * imb))
            np.minimum(trips[0], bikes, out=trips[0])
            bikes -= trips[0]
            np.minimum(trips[1], usable - bikes, out=trips[1])
            bikes += trips[1]

            # bikes break, docks jam, mechanics repair
            changed = False
            hit = broken.at(k)
            if hit.size:
                hit = hit[active[hit] & (bikes[hit] > 0) & (bd[hit] < max_dis[hit])]
                bikes[hit] -= 1
                bd[hit] += 1
                changed = True
            hit = jammed.at(k)
            if hit.size:
                hit = hit[active[hit] & (usable[hit] > bikes[hit]) & (dd[hit] < max_dis[hit])]
                dd[hit] += 1
                changed = True
            hit = bikes_fixed.at(k)
            if hit.size:
                bd[hit[active[hit]]] = 0
                changed = True
            hit = docks_fixed.at(k)
            if hit.size:
                dd[hit[active[hit]]] = 0
                changed = True
            if changed:
                usable = cap - bd - dd
                pull_per_bike = pull / usable

            # rebalancing vans reset a few stocked-out stations during working hours
            moves = van_moves[k]
            if moves:
                cand = np.flatnonzero(
                    active
                    & ((bikes <= STOCKOUT_THRESHOLD) | (usable - bikes <= STOCKOUT_THRESHOLD))
                )
                if cand.size:
                    pick = np.unique(cand[rng.integers(0, cand.size, moves)])
                    level = van_level[van_used : van_used + pick.size]
                    bikes[pick] = np.round(level * usable[pick])
                van_used += moves

            # outages start; a station that goes dark keeps its last report
            lo, hi = outages.bounds(k)
            if hi > lo:
                hit = outages.idx[lo:hi]
                ok = active[hit]
                hit = hit[ok]
                outage_until[hit] = k + outage_len[lo:hi][ok]
                installed[hit] = outage_inst[lo:hi][ok]
                frozen_lr[hit] = rel_times[k] + cad - report_phase[hit]
            # absences from the feed: short (5-30 min), independent of outages
            lo, hi = gaps.bounds(k)
            if hi > lo:
                hit = gaps.idx[lo:hi]
                ok = missing_until[hit] <= k
                missing_until[hit[ok]] = k + gap_len[lo:hi][ok]

        end = steps  # the first step of the next day
        active = outage_until < end
        end_state = _State(
            bikes=bikes,
            bikes_disabled=bd,
            docks_disabled=dd,
            outage_left=np.maximum(outage_until - end + 1, 0).astype(np.int32),
            uninstalled=(installed == 0) & ~active,
            missing_left=np.maximum(missing_until - end + 1, 0).astype(np.int32),
            last_reported=np.where(active, rel_times[-1] + cad - report_phase, frozen_lr),
        )
        return _DayRecord(rec_bikes, rec_bd, rec_dd, rec_flags, rec_lr), end_state

    # ---- outputs ----------------------------------------------------------------------

    def _snapshot_arrays(self, step: int) -> dict[str, np.ndarray]:
        day, k = divmod(step, self.config.steps_per_day)
        rec = self._day(day)
        return {
            "bikes": rec.bikes[k],
            "bd": rec.bikes_disabled[k],
            "dd": rec.docks_disabled[k],
            "flags": rec.flags[k],
            "lr": rec.last_reported[k].astype(np.int64) + self._epoch,
        }

    def station_information_document(self, at: datetime | None = None) -> bytes:
        """GBFS 2.3 station_information bytes; `last_updated` is `at` (default: start)."""
        lay = self._layout
        stations = [
            {"station_id": sid, "name": name, "lat": la, "lon": lo, "capacity": c}
            for sid, name, la, lo, c in zip(
                lay.ids,
                lay.names,
                lay.lat.tolist(),
                lay.lon.tolist(),
                lay.capacity.tolist(),
                strict=True,
            )
        ]
        updated = self._epoch if at is None else int(_utc(at, "at").timestamp())
        return _encode(updated, _INFO_TTL_S, stations)

    def station_status_document(self, at: datetime) -> bytes:
        """GBFS 2.3 station_status bytes at snapshot instant `at` (on the cadence grid)."""
        step = self._step_of(at)
        a = self._snapshot_arrays(step)
        cap = self._layout.capacity
        flags = a["flags"]
        present = np.flatnonzero(flags & _F_PRESENT)
        bikes, bd, dd = a["bikes"], a["bd"], a["dd"]
        docks = cap - bikes - bd - dd
        cols = [
            [self._layout.ids[i] for i in present.tolist()],
            bikes[present].tolist(),
            bd[present].tolist(),
            docks[present].tolist(),
            dd[present].tolist(),
            ((flags[present] & _F_INSTALLED) > 0).tolist(),
            ((flags[present] & _F_RENTING) > 0).tolist(),
            ((flags[present] & _F_RETURNING) > 0).tolist(),
            a["lr"][present].tolist(),
        ]
        keys = (
            "station_id",
            "num_bikes_available",
            "num_bikes_disabled",
            "num_docks_available",
            "num_docks_disabled",
            "is_installed",
            "is_renting",
            "is_returning",
            "last_reported",
        )
        stations = [dict(zip(keys, row, strict=True)) for row in zip(*cols, strict=True)]
        return _encode(int(_utc(at, "at").timestamp()), self._cadence_s, stations)

    def status_frame(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        """Every snapshot in [start, end) as one long frame: the documents' numbers, no JSON.

        Columns: snapshot_at, station_id, bikes_available, docks_available, bikes_disabled,
        docks_disabled (Int32), is_installed, is_renting, is_returning (Boolean),
        last_reported (Datetime[us, UTC]). Stations absent from a document are absent here.
        """
        k0, k1 = self._step_range(start or self.start, end or self.end)
        spd = self.config.steps_per_day
        n = self.config.stations
        ids = pl.Series("station_id", self._layout.ids, dtype=pl.String)
        cap = self._layout.capacity.astype(np.int32)
        frames: list[pl.DataFrame] = []
        k = k0
        while k < k1:
            day, first = divmod(k, spd)
            last = min(spd, first + (k1 - k))
            rec = self._day(day)
            sl = slice(first, last)
            flags = rec.flags[sl].ravel()
            mask = (flags & _F_PRESENT) > 0
            bikes = rec.bikes[sl].ravel().astype(np.int32)
            bd = rec.bikes_disabled[sl].ravel().astype(np.int32)
            dd = rec.docks_disabled[sl].ravel().astype(np.int32)
            docks = np.tile(cap, last - first) - bikes - bd - dd
            snap_s = (
                self._epoch + (day * spd + np.arange(first, last, dtype=np.int64)) * self._cadence_s
            )
            snap_us = np.repeat(snap_s * 1_000_000, n)
            lr_us = (rec.last_reported[sl].ravel().astype(np.int64) + self._epoch) * 1_000_000
            station_idx = np.tile(np.arange(n, dtype=np.int64), last - first)
            frames.append(
                pl.DataFrame(
                    {
                        "snapshot_at": pl.Series(snap_us[mask]).cast(pl.Datetime("us", "UTC")),
                        "station_id": ids.gather(station_idx[mask]),
                        "bikes_available": bikes[mask],
                        "docks_available": docks[mask],
                        "bikes_disabled": bd[mask],
                        "docks_disabled": dd[mask],
                        "is_installed": (flags[mask] & _F_INSTALLED) > 0,
                        "is_renting": (flags[mask] & _F_RENTING) > 0,
                        "is_returning": (flags[mask] & _F_RETURNING) > 0,
                        "last_reported": pl.Series(lr_us[mask]).cast(pl.Datetime("us", "UTC")),
                    }
                )
            )
            k += last - first
        if not frames:
            return _empty_status_frame()
        return pl.concat(frames, rechunk=False)

    def information_frame(self) -> pl.DataFrame:
        """station_id, name, lat, lon (Float64), capacity (Int32), as in the document."""
        lay = self._layout
        return pl.DataFrame(
            {
                "station_id": pl.Series(lay.ids, dtype=pl.String),
                "name": pl.Series(lay.names, dtype=pl.String),
                "lat": lay.lat,
                "lon": lay.lon,
                "capacity": lay.capacity.astype(np.int32),
            }
        )

    def station_profile(self) -> pl.DataFrame:
        """Ground truth the feed does not show (kind, distance to centre, popularity).

        For tests and diagnostics only: a model must never see it.
        """
        lay = self._layout
        return pl.DataFrame(
            {
                "station_id": pl.Series(lay.ids, dtype=pl.String),
                "kind": pl.Series([KINDS[k] for k in lay.kind.tolist()], dtype=pl.String),
                "distance_km": lay.distance_km,
                "popularity": lay.popularity,
                "target_fill": lay.target_fill,
            }
        )

    def hourly_weather(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        """Hourly weather rows labelled T in [start, end) ∩ the simulated period, in the real
        sources' convention (Open-Meteo, Meteostat): temperature and wind are the values at
        T, precipitation (and the weather code derived from it) is the hour that ends at T.
        The rain that thins trips in [h, h+1) is therefore published at h+1, never visible
        before it has fallen."""
        w = self._weather
        origin = int(w.origin.timestamp())
        lo = max(int(_utc(start or self.start, "start").timestamp()), self._epoch)
        hi = min(int(_utc(end or self.end, "end").timestamp()), int(self.end.timestamp()))
        i0 = max(0, -(-(lo - origin) // 3600))
        i1 = max(i0, -(-(hi - origin) // 3600))
        idx = np.arange(i0, i1)
        return pl.DataFrame(
            {
                "hour_start": pl.Series((origin + idx * 3600) * 1_000_000, dtype=pl.Int64).cast(
                    pl.Datetime("us", "UTC")
                ),
                "temperature_c": pl.Series(w.temperature_c[idx], dtype=pl.Float64),
                # idx - 1 >= 0: the period starts after the burn-in days of the weather record
                "precipitation_mm": pl.Series(w.precipitation_mm[idx - 1], dtype=pl.Float64),
                "wind_speed_kmh": pl.Series(w.wind_speed_kmh[idx], dtype=pl.Float64),
                "weather_code": pl.Series(w.weather_code[idx - 1], dtype=pl.Int32),
            }
        )

    def cache_nbytes(self) -> int:
        """Bytes held by cached day records (the checkpoints are tiny)."""
        return sum(r.nbytes for r in self._days.values())


def _encode(last_updated: int, ttl: int, stations: list[dict[str, Any]]) -> bytes:
    doc = {
        "last_updated": last_updated,
        "ttl": ttl,
        "version": GBFS_VERSION,
        "data": {"stations": stations},
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _empty_status_frame() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "snapshot_at": pl.Datetime("us", "UTC"),
            "station_id": pl.String,
            "bikes_available": pl.Int32,
            "docks_available": pl.Int32,
            "bikes_disabled": pl.Int32,
            "docks_disabled": pl.Int32,
            "is_installed": pl.Boolean,
            "is_renting": pl.Boolean,
            "is_returning": pl.Boolean,
            "last_reported": pl.Datetime("us", "UTC"),
        }
    )


# --------------------------------------------------------------------------------------
# the source interface


class SimulatedSource:
    """A `SnapshotSource` and `WeatherSource` backed by a `SimulatedSystem`."""

    def __init__(self, system: SimulatedSystem | SimulationConfig) -> None:
        self.system = system if isinstance(system, SimulatedSystem) else SimulatedSystem(system)

    @property
    def _base_url(self) -> str:
        return f"simulator://seed={self.system.config.seed}"

    def station_information(self, day_start: datetime, day_end: datetime) -> FeedDocument | None:
        """The station list, or None when [day_start, day_end) misses the simulated period."""
        system = self.system
        if _utc(day_end, "day_end") <= system.start or _utc(day_start, "day_start") >= system.end:
            return None
        return FeedDocument(
            feed="station_information",
            body=system.station_information_document(day_start),
            url=f"{self._base_url}/station_information",
            received_at=_utc(day_start, "day_start"),
            headers={"content-type": "application/json"},
        )

    def station_status(self, window_start: datetime, window_end: datetime) -> FeedDocument | None:
        """The first snapshot in [window_start, window_end), or None outside the period."""
        at = self.system.first_snapshot_in(window_start, window_end)
        if at is None:
            return None
        return FeedDocument(
            feed="station_status",
            body=self.system.station_status_document(at),
            url=f"{self._base_url}/station_status?at={at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            received_at=at,
            headers={"content-type": "application/json"},
        )

    def hourly(self, start: datetime, end: datetime) -> pl.DataFrame:
        return self.system.hourly_weather(start, end)


__all__ = [
    "GBFS_VERSION",
    "KINDS",
    "SimulatedSource",
    "SimulatedSystem",
    "SimulationConfig",
]
