"""Start-up: what every `dagster` / `bikeshare` command and code-server reload pays before
it does anything — importing the code location in a fresh interpreter."""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict

from bikeshare_assets_tests.benchmarks import (
    REPO_ROOT,
    BenchContext,
    CaseResult,
    Run,
    benchmark,
    case,
    fmt_seconds,
)

DEFINITIONS = "bikeshare_assets.definitions"
IMPORTTIME_RUNS = 3
TOP_PACKAGES = 12


def _env(home: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONWARNINGS": "ignore",
        "BIKESHARE_HOME": home,
    }
    env.pop("BIKESHARE_CITIES_FILE", None)
    # Measure what a user pays on every command, not once: the warm-up import writes the
    # project's bytecode (__pycache__), as the first run of any installed package does. With
    # PYTHONDONTWRITEBYTECODE inherited, every timed run would recompile the ~40 project
    # modules the definitions load.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def importtime_by_package(stderr: str) -> dict[str, float]:
    """Self time per top-level package from `python -X importtime` output, in seconds.

    Self times add up to the whole import without double counting; a package's own
    sub-imports of *other* packages are charged to those packages."""
    totals: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            name = match.group(2).split(".")[0].lstrip("_") or match.group(2)
            totals[name] += int(match.group(1)) / 1e6
    return dict(totals)


def _summarize(results: list[CaseResult]) -> list[str]:
    """A `python -X importtime` breakdown of the definitions import, by top-level package."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-importtime-") as home:
        for _ in range(IMPORTTIME_RUNS):
            proc = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", f"import {DEFINITIONS}"],
                env=_env(home),
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(importtime_by_package(proc.stderr))
    names = {n for r in runs for n in r}
    median = {n: statistics.median(r.get(n, 0.0) for r in runs) for n in names}
    total = sum(median.values())
    top = sorted(median.items(), key=lambda kv: kv[1], reverse=True)[:TOP_PACKAGES]
    lines = [
        f"**Where the import time goes** (`python -X importtime -c 'import {DEFINITIONS}'`, "
        f"self time per top-level package, median of {IMPORTTIME_RUNS} runs, run after the "
        f"cases above; `-X importtime` adds overhead of its own, total {fmt_seconds(total)}):",
        "",
        "| package | self time | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{n}` | {fmt_seconds(s)} | {s / total:.0%} |" for n, s in top]
    rest = total - sum(s for _, s in top)
    lines.append(
        f"| everything else ({len(median) - len(top)} packages) | {fmt_seconds(rest)} | {rest / total:.0%} |"
    )
    return lines


@benchmark(
    "definitions_import",
    title="Start-up: importing the code location in a fresh interpreter",
    description=f"""
    `python -c "import MODULE"` in a fresh subprocess, timed from the parent: what every
    `dagster` CLI command, `bikeshare` command and code-server reload pays before it does
    anything. `{DEFINITIONS}` imports the project and builds the Definitions of the
    embedded default (Paris replay, 11 assets and their checks); `dagster` alone is the
    floor no project code can go under. Heavy libraries (scikit-learn, SciPy, MLflow,
    LightGBM, Optuna, matplotlib, dagster-aws/boto3, SageMaker, pandera/pandas/pyarrow,
    the `holidays` calendars) are imported by the functions that use them, so they are not
    in this number: `test_startup.py` asserts that none of them is loaded. The warm-up run
    writes the project's bytecode, as the first run of an install does. Goal: the
    definitions in 2 s or less on this machine. The import runs in a child process, so
    memory is the child's peak RSS (the harness's own peak RSS Δ is ~0).
    """,
    cases=[
        case("bikeshare_assets.definitions", module=DEFINITIONS),
        case("dagster alone", module="dagster"),
        case("bikeshare_assets.cli (`bikeshare --help`)", module="bikeshare_assets.cli"),
        case("the interpreter itself", module="sys"),
    ],
    repeat=7,
    warmup=1,
    summarize=_summarize,
)
def definitions_import(ctx: BenchContext, module: str):
    env = _env(str(ctx.tmp_path / "home"))
    probe = (
        f"import sys; import {module}; "
        "print(len(sys.modules), sum(m.split('.')[0] == 'bikeshare_assets' for m in sys.modules))"
    )

    def once(run: Run) -> None:
        with run.phase(f"fresh interpreter: `import {module}`"):
            proc = subprocess.run(
                [sys.executable, "-c", probe],
                env=env,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
        modules, own = (int(x) for x in proc.stdout.split())
        run.metric("modules loaded", modules)
        run.metric("of which bikeshare_assets", own)
        # The work happens in the child: the harness's peak RSS Δ (this process) stays ~0.
        child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        run.metric("child peak RSS (MiB)", round(child_kib / 1024, 1))

    return once
