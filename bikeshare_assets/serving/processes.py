"""Which process is which, before anything is signalled.

PIDs are reused, so a PID written to a file proves nothing a minute later. A scoring server
is identified by what was recorded when it started — PID, start time (psutil's
`create_time`: boot time + field 22 of /proc/<pid>/stat) and command line — and by leading
its own process group (it is started in a new session). Who holds a port is read from the
kernel's socket table (psutil maps the listening socket's inode to the PID owning it).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

# create_time is boot time + start ticks (1/100 s); the same process reads the same value.
_START_TIME_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: float
    cmdline: tuple[str, ...]

    def describe(self) -> str:
        command = shlex.join(self.cmdline)
        return f"PID {self.pid} (`{command[:160]}{'…' if len(command) > 160 else ''}`)"


def identity_of(pid: int) -> ProcessIdentity | None:
    """The running (non-zombie) process `pid`, or None."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return ProcessIdentity(pid, process.create_time(), tuple(process.cmdline()))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def identity_mismatch(recorded: ProcessIdentity) -> str | None:
    """None when PID `recorded.pid` is still the process that was recorded; else why not."""
    current = identity_of(recorded.pid)
    if current is None:
        return f"PID {recorded.pid} is not running"
    if abs(current.start_time - recorded.start_time) > _START_TIME_TOLERANCE_S:
        return (
            f"PID {recorded.pid} is another process now ({current.describe()}, started "
            f"{current.start_time:.2f}, not {recorded.start_time:.2f}: the PID was reused)"
        )
    if current.cmdline != recorded.cmdline:
        return f"PID {recorded.pid} now runs {current.describe()}, not the recorded command"
    if _pgid(recorded.pid) != recorded.pid:
        return f"PID {recorded.pid} does not lead its own process group"
    return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is this process's child (else a zombie lingers)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_group(recorded: ProcessIdentity, grace_s: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL) the process group `recorded` leads — only while its leader is
    still the recorded process. Returns False when it was not (nothing is signalled)."""
    if identity_mismatch(recorded) is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(recorded.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(recorded.pid)
        if identity_of(recorded.pid) is None:
            return True
        time.sleep(0.1)
    if identity_mismatch(recorded) is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(recorded.pid, signal.SIGKILL)
        _reap(recorded.pid)
    return True


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails the way the scoring server's own bind would
    (uvicorn binds with SO_REUSEADDR, so TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_listeners(port: int) -> list[int | None]:
    """PIDs listening on TCP `port` (None for a socket whose owner this user cannot see)."""
    return [
        conn.pid
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    ]


def in_group(pid: int | None, pgid: int) -> bool:
    return pid is not None and _pgid(pid) == pgid


def describe_port_user(port: int) -> str:
    """`port 8080 is used by PID N (`command`)`, for an error message."""
    listeners = port_listeners(port)
    if not listeners:
        return f"port {port} is in use"
    users = []
    for pid in dict.fromkeys(listeners):
        if pid is None:
            users.append("a process of another user")
            continue
        identity = identity_of(pid)
        user = identity.describe() if identity else f"PID {pid}"
        group = _pgid(pid)
        leader = identity_of(group) if group is not None and group != pid else None
        if leader is not None:  # e.g. uvicorn under `mlflow models serve`: stop the group
            user += f", in process group {group} of {leader.describe()}"
        users.append(user)
    return f"port {port} is used by {'; '.join(users)}"


def running_processes() -> Iterator[ProcessIdentity]:
    """Every running (non-zombie) process this user can read, except this one."""
    for process in psutil.process_iter(["cmdline", "create_time", "status"]):
        info = process.info
        if info.get("status") == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
            continue
        if info.get("cmdline") and info.get("create_time") is not None:
            yield ProcessIdentity(process.pid, info["create_time"], tuple(info["cmdline"]))


def leads_own_group(pid: int) -> bool:
    return _pgid(pid) == pid
