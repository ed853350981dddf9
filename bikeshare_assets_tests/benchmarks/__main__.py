"""`python -m bikeshare_assets_tests.benchmarks` (= `make bench`): run benchmarks, print
markdown tables, optionally rewrite their sections of docs/performance.md."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from bikeshare_assets_tests import benchmarks as harness


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bikeshare_assets_tests.benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their cases")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite each benchmark's marked section of docs/performance.md (only if all its cases succeeded)",
    )
    parser.add_argument(
        "--docs", type=Path, default=harness.DEFAULT_DOCS, help="the file --write-docs updates"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="override every case's recorded runs"
    )
    # internal: one case in this process, result as JSON
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _worker(args: argparse.Namespace) -> int:
    bench = harness.discover()[args.worker]
    try:
        result = harness.run_case(bench, args.case, args.repeat)
    except BaseException as exc:
        traceback.print_exc()
        spec = bench.cases[args.case]
        result = {
            "benchmark": bench.name,
            "case": spec.label,
            "params": dict(spec.params),
            "error": f"{type(exc).__name__}: {exc}",
        }
    harness.dump_json(result, args.out)
    return 0 if result.get("error") is None else 1


def _run_in_subprocess(
    bench: harness.Benchmark, index: int, repeat: int | None
) -> harness.CaseResult:
    with tempfile.TemporaryDirectory(prefix="bench-result-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            harness.PACKAGE,
            "--worker",
            bench.name,
            "--case",
            str(index),
            "--out",
            str(out),
        ]
        if repeat:
            cmd += ["--repeat", str(repeat)]
        # The case's own output (Dagster logs, warnings) goes to stderr; stdout is the tables.
        proc = subprocess.run(
            cmd, cwd=harness.REPO_ROOT, stdout=sys.stderr, stderr=sys.stderr, check=False
        )
        if out.exists():
            return harness.CaseResult.from_json(json.loads(out.read_text(encoding="utf-8")))
        spec = bench.cases[index]
        return harness.CaseResult(
            bench.name, spec.label, dict(spec.params), error=f"worker exited with {proc.returncode}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # Dagster's beta/preview warnings at import are noise here (as in `bikeshare demo`).
    warnings.filterwarnings("ignore")
    if args.worker:
        return _worker(args)
    registry = harness.discover()
    if args.list:
        for bench in registry.values():
            cases = ", ".join(c.label for c in bench.cases)
            print(f"{bench.name:28} [{bench.area}] {bench.title} — cases: {cases}")
        return 0
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(registry)
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(registry)}", file=sys.stderr)
        return 2
    command = "python -m bikeshare_assets_tests.benchmarks" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv or sys.argv[1:])
        else ""
    )
    machine = harness.machine_info()
    git = harness.git_state()
    print(
        f"<!-- {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, Python {machine['python']}, "
        f"polars {machine['polars']}, dagster {machine['dagster']}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} -->\n"
    )
    failed = 0
    for name in wanted:
        bench = registry[name]
        results = []
        for i, spec in enumerate(bench.cases):
            started = time.perf_counter()
            print(f"[bench] {name} / {spec.label} ...", file=sys.stderr, flush=True)
            result = _run_in_subprocess(bench, i, args.repeat)
            state = "FAILED: " + result.error if result.error else "ok"
            print(
                f"[bench] {name} / {spec.label}: {state} ({time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
            results.append(result)
        section = harness.render_section(bench, results, command=command, machine=machine, git=git)
        print(section + "\n", flush=True)
        errors = [r for r in results if r.error]
        failed += len(errors)
        if args.write_docs:
            if errors:
                print(
                    f"[bench] {name}: not written to {args.docs} (a case failed)", file=sys.stderr
                )
            else:
                harness.update_docs(args.docs, name, section)
                print(f"[bench] {name}: section updated in {args.docs}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
