"""Features benchmark: `build_station_features` (polars) against a straightforward pandas
implementation of the same features, on simulated cities of realistic size."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from bikeshare_assets.features.compute import (
    LOOKBACK,
    WEATHER_TOLERANCE,
    build_station_features,
)
from bikeshare_assets_tests.benchmarks import (
    BenchContext,
    CaseResult,
    Run,
    benchmark,
    case,
    current_rss,
    fmt_bytes,
    fmt_seconds,
)
from bikeshare_assets_tests.benchmarks.pandas_features import (
    FeatureInputs,
    assert_same_features,
    build_station_features_pandas,
    max_abs_difference,
    simulated_inputs,
)

POLARS, PANDAS = "polars", "pandas"
ONE_CALL, DAILY = "one call", "one call per day"


@dataclass(frozen=True)
class Call:
    """The inputs of one feature computation, in the implementation's frame type."""

    history: Any
    information: Any
    weather: Any
    snapshot_times: list[datetime]


def _equivalence_check(ctx: BenchContext) -> None:
    """Fail loudly unless the pandas reference computes the same features."""
    small = simulated_inputs(50, 1)
    expected = build_station_features(
        small.status, small.information, small.weather, small.snapshot_times, small.context
    )
    status, information, weather = small.as_pandas()
    got = build_station_features_pandas(
        status, information, weather, small.snapshot_times, small.context
    )
    assert_same_features(expected, got, tolerance=1e-9)
    ctx.metric(
        "pandas = polars (50 stations × 1 day)",
        f"yes, max Δ {max_abs_difference(expected, got):.0e}",
    )


def _daily_calls(inputs: FeatureInputs) -> list[Call]:
    """One call per UTC day, with the inputs the station_features asset reads for a run over
    that day: raw status from 60 min before, the station lists of the days touched, and the
    weather hours from 3 h before."""
    calls = []
    days = sorted({t.replace(hour=0, minute=0) for t in inputs.snapshot_times})
    for day in days:
        end = day + timedelta(days=1)
        snap = pl.col("snapshot_at")
        calls.append(
            Call(
                history=inputs.status.filter((snap >= day - LOOKBACK) & (snap < end)),
                information=inputs.information.filter(
                    pl.col("as_of_day").is_between(day - timedelta(days=1), day)
                ),
                weather=inputs.weather.filter(
                    pl.col("hour_start").is_between(day - WEATHER_TOLERANCE, end, closed="left")
                ),
                snapshot_times=[t for t in inputs.snapshot_times if day <= t < end],
            )
        )
    return calls


def _settle_memory(timeout_s: float = 20.0) -> None:
    """Let the memory freed during setup go back to the OS before the RSS baseline is
    taken: polars' allocator returns freed pages ~1 s later in the background, which would
    otherwise shrink RSS *during* the measured call and hide part of its growth."""
    gc.collect()
    with contextlib.suppress(Exception):
        pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    deadline = time.monotonic() + timeout_s
    last, stable = current_rss(), 0
    while stable < 4 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = current_rss()
        stable = stable + 1 if abs(now - last) < 4 * 2**20 else 0
        last = now


def _check_daily_equals_one_call() -> None:
    """The per-day split gives the same features as one call over the whole period.

    Not bit for bit: the trend's x is hours since the *history's* first snapshot, and its
    one-pass moment formula loses ~1e-9 when that origin moves by a day, hence 1e-6."""
    small = simulated_inputs(50, 2)
    whole = build_station_features(
        small.status, small.information, small.weather, small.snapshot_times, small.context
    )
    parts = [
        build_station_features(c.history, c.information, c.weather, c.snapshot_times, small.context)
        for c in _daily_calls(small)
    ]
    daily = pl.concat(parts)
    assert_same_features(whole, daily.to_pandas(), tolerance=1e-6)


@benchmark(
    "features_build",
    title="station_features: polars `build_station_features` vs a pandas implementation",
    description="""
        `build_station_features` (bikeshare_assets/features/compute.py, polars) against a
        straightforward pandas implementation of the same features
        (`benchmarks/pandas_features.py`: `groupby().rolling()` windows, `merge` for the
        exact snapshot at t − w and the day's station list, `merge_asof` for weather, the
        same BallTree neighbours from each day's station list, one sparse product per
        neighbour column on a `DataFrame.pivot` station × snapshot table), for every
        snapshot of a simulated city (`SimulatedSystem`, Paris settings, seed 7, 5-minute
        cadence, from 2026-01-05). The inputs are built in setup (not timed) from the
        simulator's long frames (`status_frame` one day at a time, `information_frame`
        once per day with its `as_of_day`, `hourly_weather`); the pandas cases get the same
        frames converted with `to_pandas()` in setup. Each implementation runs in its own
        subprocess, so each peak RSS is its own (setup waits until the memory it freed is
        back with the OS before the baseline is taken). Setup first asserts that both
        implementations give the same features on 50 stations × 1 day (every column
        within 1e-9, same nulls) and fails the case otherwise. *One call* computes the
        whole period at once, as a single-run Dagster backfill of `station_features`
        over that range does; *one call per day* runs each UTC day separately with the
        inputs the asset reads for it (60 min of raw history before, the day's and
        previous day's station lists, weather from 3 h before), keeping only each day's
        row count, as a backfill in one-day runs would. 30 days × 2,000 stations is only
        run per day: in one call it would need about 20 GiB (see the summary), too much
        for this shared 23.5 GiB machine. polars uses both cores, pandas one. One cold
        run per case (`--repeat N` for more).
    """,
    cases=[
        case(
            "14 d × 1,500 stations, one call — polars",
            days=14,
            stations=1_500,
            impl=POLARS,
            mode=ONE_CALL,
        ),
        case(
            "14 d × 1,500 stations, one call — pandas",
            days=14,
            stations=1_500,
            impl=PANDAS,
            mode=ONE_CALL,
        ),
        case(
            "14 d × 1,500 stations, per day — polars",
            days=14,
            stations=1_500,
            impl=POLARS,
            mode=DAILY,
        ),
        case(
            "14 d × 1,500 stations, per day — pandas",
            days=14,
            stations=1_500,
            impl=PANDAS,
            mode=DAILY,
        ),
        case(
            "30 d × 2,000 stations, per day — polars",
            days=30,
            stations=2_000,
            impl=POLARS,
            mode=DAILY,
        ),
        case(
            "30 d × 2,000 stations, per day — pandas",
            days=30,
            stations=2_000,
            impl=PANDAS,
            mode=DAILY,
        ),
    ],
    repeat=1,
    warmup=0,
    summarize=lambda results: _summary(results),
)
def features_build(ctx: BenchContext, days: int, stations: int, impl: str, mode: str):
    _equivalence_check(ctx)
    if mode == DAILY:
        _check_daily_equals_one_call()

    started = time.perf_counter()
    inputs = simulated_inputs(stations, days)
    context = inputs.context
    if mode == ONE_CALL:
        calls = [Call(inputs.status, inputs.information, inputs.weather, inputs.snapshot_times)]
    else:
        calls = _daily_calls(inputs)
    input_rows = inputs.status.height
    snapshots = len(inputs.snapshot_times)
    del inputs
    compute: Callable[..., Any]
    if impl == PANDAS:
        calls = [
            Call(
                c.history.to_pandas(),
                c.information.to_pandas(),
                c.weather.to_pandas(),
                c.snapshot_times,
            )
            for c in calls
        ]
        compute = build_station_features_pandas
    else:
        compute = build_station_features
    _settle_memory()
    ctx.metric("build inputs (setup, not timed)", fmt_seconds(time.perf_counter() - started))
    ctx.metric("snapshots", snapshots)
    ctx.metric("status rows", input_rows)

    def once(run: Run) -> None:
        rows = 0
        per_call: list[float] = []
        for c in calls:
            t0 = time.perf_counter()
            out = compute(c.history, c.information, c.weather, c.snapshot_times, context)
            per_call.append(time.perf_counter() - t0)
            rows += len(out)
            del out  # a backfill writes each result and lets it go
        with run.untimed():
            run.metric("calls", len(calls))
            if len(per_call) > 1:
                run.metric("per call: median", fmt_seconds(statistics.median(per_call)))
                run.metric("per call: max", fmt_seconds(max(per_call)))
            run.metric("feature rows", rows)
            run.metric("rows / s", round(rows / sum(per_call)))

    return once


def _summary(results: list[CaseResult]) -> list[str]:
    by_key = {
        (r.params["days"], r.params["stations"], r.params["mode"], r.params["impl"]): r
        for r in results
    }
    lines = [
        "**pandas / polars.** Same input, same features (checked in every case's setup):",
        "",
        "| input | how | polars | pandas | pandas / polars time | polars peak RSS Δ "
        "| pandas peak RSS Δ | pandas / polars memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (days, stations, mode, impl), pol in by_key.items():
        if impl != POLARS or (days, stations, mode, PANDAS) not in by_key:
            continue
        pan = by_key[(days, stations, mode, PANDAS)]
        t_pol, t_pan = pol.median(), pan.median()
        m_pol = pol.memory.get("peak_rss_delta", 0)
        m_pan = pan.memory.get("peak_rss_delta", 0)
        lines.append(
            f"| {days} d × {stations:,} stations | {mode} | {fmt_seconds(t_pol)} | "
            f"{fmt_seconds(t_pan)} | **{t_pan / t_pol:.2f}×** | {fmt_bytes(m_pol)} | "
            f"{fmt_bytes(m_pan)} | {m_pan / m_pol:.2f}× |"
            if m_pol
            else f"| {days} d × {stations:,} | {mode} | {fmt_seconds(t_pol)} | "
            f"{fmt_seconds(t_pan)} | **{t_pan / t_pol:.2f}×** | — | — | — |"
        )
    one = by_key.get((14, 1_500, ONE_CALL, POLARS))
    daily = by_key.get((14, 1_500, DAILY, POLARS))
    if one and daily:
        rows = one.metrics.get("feature rows", 0)
        per_row = one.memory.get("peak_rss_delta", 0) / rows if rows else 0
        big = 30 * 288 * 2_000  # 30 days x 288 snapshots x 2,000 stations (upper bound)
        lines += [
            "",
            f"**One call over the whole period vs one call per day.** For 14 days × 1,500 "
            f"stations, one polars call took {fmt_seconds(one.median())} against "
            f"{fmt_seconds(daily.median())} for the same days one at a time "
            f"({one.median() / daily.median():.2f}×); its peak RSS grew by "
            f"{fmt_bytes(one.memory.get('peak_rss_delta', 0))} "
            f"({per_row * 1e6 / 2**20:,.0f} MiB per million feature rows). At that rate one "
            f"call over 30 days × 2,000 stations (≤ {big / 1e6:.1f} M rows) would need about "
            f"{fmt_bytes(per_row * big)} (extrapolated, not run).",
        ]
    return lines
