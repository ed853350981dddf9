"""Server processes the tests start on 127.0.0.1 (moto, patched moto) and always stop."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def server_process(
    command: Sequence[str], port: int, *, cwd: Path | None = None, startup_s: float = 30
) -> Iterator[str]:
    """Start `command`, wait until it accepts connections on `port`, yield its URL; the
    process is terminated (then killed) whatever happens."""
    name = Path(command[0]).name if "-m" not in command else command[command.index("-m") + 1]
    proc = subprocess.Popen(
        list(command), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + startup_s
        while not port_open(port):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {startup_s:.0f} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
