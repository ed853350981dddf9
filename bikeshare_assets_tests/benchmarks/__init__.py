"""Benchmarks: the only place speed and memory targets live (`make bench`).

Run them with `python -m bikeshare_assets_tests.benchmarks` (see `--help`); results are
recorded in docs/performance.md with `--write-docs`. The harness is small on purpose:

* A benchmark is a *setup function* registered with `@benchmark(...)`, in a module named
  `bench_<area>.py` in this package (found automatically; pytest never collects `bench_*`).
  Setup is neither timed nor counted in memory. It returns (or yields, to clean up after)
  the *measured callable*, which receives a `Run`:

      @benchmark(
          "features_one_partition",
          title="Features: one station_features partition",
          description="What is measured and why it matters.",
          cases=[case("1,500 stations", stations=1500), case("10,000 stations", stations=10_000)],
          repeat=7,
          warmup=1,
      )
      def features_one_partition(ctx: BenchContext, stations: int):
          frame = make_input(stations, tmp=ctx.tmp_path)  # setup: not measured
          ctx.metric("input rows", frame.height)

          def once(run: Run) -> None:
              with run.phase("compute"):
                  out = compute(frame)
              with run.phase("write"):
                  write(out)
              run.metric("rows", out.height)

          return once

* Every case runs in a fresh Python subprocess: setup, then `warmup` unrecorded calls, then
  `repeat` recorded calls. Wall time is `time.perf_counter`; each phase and the total are
  reported as median and min over the recorded calls. The total is the whole call minus
  time spent in `with run.untimed():` (bookkeeping such as reading back results).
* Memory is the peak resident set size (RSS) of the subprocess during its *first* call
  (warm-up included: cold caches are real) minus the RSS just before it. On Linux the
  kernel's high-water mark is reset right before the call (`/proc/self/clear_refs`) and read
  from `VmHWM`, so it is exact and covers polars/arrow buffers that tracemalloc cannot see;
  elsewhere it falls back to `resource.getrusage` `ru_maxrss`, which is only a lower bound
  when setup peaked higher. The method used is printed with the result.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import json
import os
import pkgutil
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = __name__
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DOCS = REPO_ROOT / "docs" / "performance.md"
MODULE_PREFIX = "bench_"

# --------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Case:
    """One parameter set of a benchmark; `repeat`/`warmup` override the benchmark's."""

    label: str
    params: Mapping[str, Any] = field(default_factory=dict)
    repeat: int | None = None
    warmup: int | None = None


def case(
    label: str, *, repeat: int | None = None, warmup: int | None = None, **params: Any
) -> Case:
    return Case(label, dict(params), repeat, warmup)


Summarize = Callable[[list["CaseResult"]], list[str]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    description: str
    setup: Callable[..., Any]
    cases: tuple[Case, ...]
    repeat: int
    warmup: int
    module: str
    summarize: Summarize | None = None

    @property
    def area(self) -> str:
        return self.module.rsplit(".", 1)[-1].removeprefix(MODULE_PREFIX)


REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str,
    *,
    title: str,
    description: str,
    cases: Sequence[Case] | None = None,
    repeat: int = 5,
    warmup: int = 1,
    summarize: Summarize | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a setup function as benchmark `name` (unique across all bench modules).

    `summarize(results)` may return extra markdown lines for the section, e.g. a
    comparison between cases; it runs in the parent process after every case finished.
    """
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"benchmark name {name!r}: use lowercase letters, digits and _.")

    def register(setup: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY and REGISTRY[name].setup is not setup:
            raise ValueError(f"benchmark {name!r} is registered twice ({REGISTRY[name].module}).")
        REGISTRY[name] = Benchmark(
            name=name,
            title=title,
            description=inspect.cleandoc(description),
            setup=setup,
            cases=tuple(cases or (Case("default"),)),
            repeat=repeat,
            warmup=warmup,
            module=setup.__module__,
            summarize=summarize,
        )
        return setup

    return register


def discover() -> dict[str, Benchmark]:
    """Import every `bench_*` module of this package; return the registry."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):  # type: ignore[name-defined]
        if info.name.startswith(MODULE_PREFIX):
            importlib.import_module(f"{PACKAGE}.{info.name}")
    return REGISTRY


# --------------------------------------------------------------------------------------
# measurement (runs inside the per-case subprocess)


def _proc_status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def current_rss() -> int:
    kib = _proc_status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - no /proc and no psutil
        return _ru_maxrss()


def _ru_maxrss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MemoryMeter:
    """Peak RSS above a baseline; `pause()`/`resume()` leave a stretch out (Linux only)."""

    def __init__(self) -> None:
        self.exact = self._reset_peak()
        self.method = (
            "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before the first call"
            if self.exact
            else "ru_maxrss (resource.getrusage) minus RSS before the first call; a lower bound"
        )
        self.baseline = 0
        self.peak = 0

    @staticmethod
    def _reset_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return _proc_status_kib("VmHWM") is not None
        except OSError:
            return False

    def _high_water(self) -> int:
        if self.exact:
            return (_proc_status_kib("VmHWM") or 0) * 1024
        return _ru_maxrss()

    def start(self) -> None:
        self.baseline = current_rss()
        if self.exact:
            self._reset_peak()
        self.peak = self.baseline

    def pause(self) -> None:
        self.peak = max(self.peak, self._high_water())

    def resume(self) -> None:
        if self.exact:
            self._reset_peak()

    def stop(self) -> dict[str, Any]:
        self.pause()
        return {
            "peak_rss_delta": max(0, self.peak - self.baseline),
            "baseline_rss": self.baseline,
            "method": self.method,
        }


class BenchContext:
    """Handed to setup: a private temporary directory and setup-time metrics."""

    def __init__(self, tmp_path: Path, iterations: int, case_label: str) -> None:
        self.tmp_path = tmp_path
        self.iterations = iterations  # warm-up + recorded calls of the measured callable
        self.case_label = case_label
        self.metrics: dict[str, Any] = {}

    def metric(self, name: str, value: Any) -> None:
        self.metrics[name] = value


class Run:
    """Handed to the measured callable, once per call."""

    def __init__(self, index: int, warmup: bool, meter: MemoryMeter | None) -> None:
        self.index = index  # 0-based over warm-up and recorded calls
        self.warmup = warmup
        self.phases: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        self.untimed_s = 0.0
        self._meter = meter

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add_phase(name, time.perf_counter() - started)

    def add_phase(self, name: str, seconds: float) -> None:
        """A phase measured some other way (e.g. from event timestamps); adds up by name."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def untimed(self) -> Iterator[None]:
        """Bookkeeping left out of the total (and, on Linux, out of the memory peak)."""
        if self._meter:
            self._meter.pause()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.untimed_s += time.perf_counter() - started
            if self._meter:
                self._meter.resume()

    def metric(self, name: str, value: Any) -> None:
        self.metrics[name] = value


def run_case(bench: Benchmark, index: int, repeat: int | None = None) -> dict[str, Any]:
    """Setup, warm-up and recorded calls of one case, in this process."""
    spec = bench.cases[index]
    n_repeat = repeat or spec.repeat or bench.repeat
    n_warmup = bench.warmup if spec.warmup is None else spec.warmup
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        ctx = BenchContext(Path(tmp), n_warmup + n_repeat, spec.label)
        started = time.perf_counter()
        made = bench.setup(ctx, **spec.params)
        teardown = made if inspect.isgenerator(made) else None
        measured = next(teardown) if teardown is not None else made
        setup_s = time.perf_counter() - started
        gc.collect()
        meter = MemoryMeter()
        meter.start()
        memory: dict[str, Any] = {}
        recorded: list[Run] = []
        totals: list[float] = []
        for i in range(n_warmup + n_repeat):
            run = Run(i, i < n_warmup, meter if i == 0 else None)
            t0 = time.perf_counter()
            measured(run)
            wall = time.perf_counter() - t0
            if i == 0:
                memory = meter.stop()
            if not run.warmup:
                recorded.append(run)
                totals.append(wall - run.untimed_s)
        if teardown is not None:
            with contextlib.suppress(StopIteration):
                next(teardown)
    phase_names: list[str] = []
    for run in recorded:
        phase_names += [p for p in run.phases if p not in phase_names]
    metrics = dict(ctx.metrics)
    for run in recorded:
        metrics.update(run.metrics)
    return {
        "benchmark": bench.name,
        "case": spec.label,
        "params": dict(spec.params),
        "repeat": n_repeat,
        "warmup": n_warmup,
        "setup_s": setup_s,
        "total": totals,
        "phases": {p: [r.phases[p] for r in recorded if p in r.phases] for p in phase_names},
        "metrics": metrics,
        "memory": memory,
        "load": [load_start[0], os.getloadavg()[0]],
        "error": None,
    }


# --------------------------------------------------------------------------------------
# results and rendering (parent process)


@dataclass
class CaseResult:
    benchmark: str
    case: str
    params: dict[str, Any]
    repeat: int = 0
    warmup: int = 0
    setup_s: float = 0.0
    total: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def median(self, phase: str | None = None) -> float:
        values = self.total if phase is None else self.phases[phase]
        return statistics.median(values)


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 100:
        return f"{s:.2f} s"
    return f"{s:.0f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        match = re.search(
            r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE
        )
        if match:
            cpu = match.group(1).strip()
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    ram = ""
    with contextlib.suppress(OSError):
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        if match:
            ram = f"{int(match.group(1)) / 2**20:.1f} GiB"
    versions = {}
    for dist in ("polars", "dagster", "pyarrow", "pandera"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu": cpu,
        "cores": f"{usable}" if usable == cores else f"{usable} usable of {cores}",
        "ram": ram or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **versions,
    }


def git_state() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bikeshare_assets"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} + uncommitted changes in bikeshare_assets/" if dirty else sha


def render_section(
    bench: Benchmark,
    results: list[CaseResult],
    *,
    command: str,
    machine: Mapping[str, str],
    git: str,
) -> str:
    """The markdown written between the benchmark's markers (and printed)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    loads = [x for r in results for x in r.load]
    lines = [
        f"### `{bench.name}` — {bench.title}",
        "",
        bench.description,
        "",
        f"*Measured {when} with `{command}` on {machine['cpu']} ({machine['cores']} cores, "
        f"{machine['ram']} RAM, {machine['os']}), Python {machine['python']}, polars "
        f"{machine['polars']}, dagster {machine['dagster']}, pyarrow {machine['pyarrow']}, "
        f"pandera {machine['pandera']}; code {git}. 1-minute load average "
        + (f"{min(loads):.2f}–{max(loads):.2f}" if loads else "n/a")
        + " while the cases ran.*",
        "",
        "| case | phase | median | min | runs |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.case} | **failed**: {r.error.splitlines()[-1][:150]} | | | |")
            continue
        label = r.case
        for name, values in r.phases.items():
            lines.append(
                f"| {label} | {name} | {fmt_seconds(statistics.median(values))} | "
                f"{fmt_seconds(min(values))} | {len(values)} |"
            )
            label = ""
        lines.append(
            f"| {label} | **total** | **{fmt_seconds(r.median())}** | {fmt_seconds(min(r.total))} | "
            f"{len(r.total)} |"
        )
    ok = [r for r in results if not r.error]
    metric_names: list[str] = []
    for r in ok:
        metric_names += [m for m in r.metrics if m not in metric_names]
    if ok:
        lines += [
            "",
            "| case | peak RSS Δ | RSS before | warm-up + runs | "
            + " | ".join(metric_names)
            + " |",
            "|---|---:|---:|---:|" + "---:|" * len(metric_names),
        ]
        for r in ok:
            cells = [fmt_value(r.metrics[m]) if m in r.metrics else "—" for m in metric_names]
            lines.append(
                f"| {r.case} | {fmt_bytes(r.memory.get('peak_rss_delta', 0))} | "
                f"{fmt_bytes(r.memory.get('baseline_rss', 0))} | {r.warmup} + {r.repeat} | "
                + " | ".join(cells)
                + " |"
            )
        methods = sorted({r.memory.get("method", "") for r in ok})
        lines += ["", f"Memory: {'; '.join(methods)}, one fresh subprocess per case."]
    if bench.summarize and ok and len(ok) == len(results):
        extra = bench.summarize(ok)
        if extra:
            lines += ["", *extra]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# docs/performance.md


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def update_docs(path: Path, name: str, body: str) -> None:
    """Replace what is between the benchmark's markers; append the section if it is new.

    Everything outside the markers is left exactly as it was.
    """
    start, end = markers(name)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dump_json(result: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, default=str), encoding="utf-8")


__all__ = [
    "REGISTRY",
    "BenchContext",
    "Benchmark",
    "Case",
    "CaseResult",
    "Run",
    "benchmark",
    "case",
    "discover",
    "fmt_bytes",
    "fmt_seconds",
    "fmt_value",
]
