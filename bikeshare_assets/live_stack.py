"""What `bikeshare live` and the drills share: Paris against the local live feed, and
`dagster dev` started and stopped as one process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from bikeshare_assets.cities import PARTITION_FMT
from bikeshare_assets.settings import Settings

LIVE_CITIES = """\
# Written by `bikeshare live` (and the drills): Paris against the local live feed it serves on 127.0.0.1
# (bikeshare_assets/ingest/feed_server.py). Rewritten at every start.
[cities.paris]
display_name = "Paris Vélib' Métropole (local live feed)"
gbfs_url = "{gbfs_url}"
language = "fr"
timezone = "Europe/Paris"
country = "FR"
latitude = 48.8566
longitude = 2.3522
radius_km = 40.0
cadence_minutes = {cadence}
drift_window_minutes = {drift_window}
stockout_threshold = 2
live_start = "{live_start}"
"""


def first_live_window(now: datetime, cadence: int) -> tuple[datetime, datetime]:
    """(start of the window under way, start of the one that just ended): the latter is the
    first live partition, fetched at once, so snapshots land from the first minute."""
    floored = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % cadence)
    return floored, floored - timedelta(minutes=cadence)


def write_live_cities(
    path: Path, *, gbfs_url: str, cadence: int, drift_window: int, live_start: datetime
) -> Path:
    path.write_text(
        LIVE_CITIES.format(
            gbfs_url=gbfs_url,
            cadence=cadence,
            drift_window=drift_window,
            live_start=live_start.strftime(PARTITION_FMT),
        ),
        encoding="utf-8",
    )
    return path


def start_dagster_dev(
    env: dict[str, str], cwd: Path, port: int, log_path: Path | None
) -> subprocess.Popen:
    """`dagster dev` (webserver, daemon, code server) on 127.0.0.1:`port`, in a process group
    of its own (stopped as one by `stop_group`); its output to `log_path`, or inherited.

    A process group, not a session: a new session is a scheduler autogroup of its own on
    Linux, which gets an equal share of the CPU whatever the `nice` of the other processes,
    so `make test` could not give the drill stack priority over the suite beside it."""
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-m", "bikeshare_assets.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        env={**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"},
        cwd=cwd,
        process_group=0,
        stdout=None if log_path is None else subprocess.DEVNULL,
        stderr=None if log_path is None else open(log_path, "wb"),
    )  # fmt: skip


def stop_group(proc, grace_s: float = 15.0) -> None:
    """`dagster dev` and everything it started share one process group: SIGTERM it, then
    SIGKILL whatever is left after the grace period."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # The leader is gone; its children may linger a moment: one more SIGKILL.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def stop_endpoints(settings: Settings) -> None:
    from bikeshare_assets.definitions import build_endpoint

    endpoint = build_endpoint(settings)
    if endpoint.kind != "local":
        return
    for city in settings.cities:
        # Signals only a process proven to be this city's scoring server; an unreadable
        # state file is named and set aside.
        for line in endpoint.local(city).stop().lines(city):
            print(line)
