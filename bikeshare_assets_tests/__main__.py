"""`make test`: the suite and, beside it, the drills — every test, in the wall time of the
drills alone.

The drills (automation/test_drills.py, marked `slow`) spend ~15 minutes on one live stack,
mostly waiting for its 1-minute cadence; the suite needs ~10 minutes of one core. Run one
after the other they take half an hour, so the suite runs beside them at nice 19: the stack
(`dagster dev`, started in this session, so `nice` ranks it against the suite) gets the CPU
whenever it wants it and keeps its cadence, the suite takes the rest. The drills' output goes
to a log file, shown once the suite is done; the exit status fails if either failed.

    python -m bikeshare_assets_tests --drills-log PATH [pytest args for the suite]
    python -m bikeshare_assets_tests --drills-only     # `make drills`: output as it happens
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

# The drills' pytest arguments (`-s`: their timelines are the point of reading the log).
DRILLS = [
    "-q",
    "-s",
    "-m",
    "slow",
    "-p",
    "no:cacheprovider",
    "bikeshare_assets_tests/automation/test_drills.py",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bikeshare_assets_tests")
    parser.add_argument("--drills-log", type=Path)
    parser.add_argument("--drills-only", action="store_true")
    args, suite_args = parser.parse_known_args(argv)
    pytest = [sys.executable, "-m", "pytest"]
    if args.drills_only:
        return subprocess.call([*pytest, *DRILLS])
    if args.drills_log is None:
        parser.error("--drills-log is required unless --drills-only")
    args.drills_log.parent.mkdir(parents=True, exist_ok=True)
    with args.drills_log.open("wb") as log:
        drills = subprocess.Popen([*pytest, *DRILLS], stdout=log, stderr=subprocess.STDOUT)
    started = time.strftime("%H:%M:%S")
    print(f"drills: running beside the suite since {started}, output in {args.drills_log}")
    try:
        suite = subprocess.call(["nice", "-n", "19", *pytest, "-q", *suite_args])
        if drills.poll() is None:
            print(f"\nsuite done; waiting for the drills (started {started}) ...", flush=True)
        drilled = drills.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the drills too (same process group): let pytest stop the stack.
        drills.wait()
        raise
    print(f"\n===== the drills ({args.drills_log}) =====")
    sys.stdout.write(args.drills_log.read_text(errors="replace"))
    print(
        f"\nsuite: {'passed' if suite == 0 else f'FAILED (exit {suite})'}; "
        f"drills: {'passed' if drilled == 0 else f'FAILED (exit {drilled})'}"
    )
    return 0 if suite == 0 and drilled == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
