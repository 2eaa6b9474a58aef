"""Background processes with a pid file: start detached, check, stop with everything they started.

Used for the local Prefect server and the worker. Plain Python (no Prefect import). Stopping relies on
Linux's /proc to find the descendants that left the process group (Prefect starts each flow run in a
session of its own); elsewhere only the process group is signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(
    command: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start `command` in a new session, output appended to `log_file`, its pid written to `pid_file`."""
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a zombie child of ours is reaped here)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc/self").exists()


def start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (tells it from a later process given the same
    pid); None when there is no such process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def read_pid(pid_file: Path) -> int | None:
    """The live process recorded in `pid_file`, or None; a stale pid file is removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if alive(pid):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` in the process tree (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop(pid: int, *, timeout: float = 20.0) -> None:
    """SIGTERM `pid` and give it `timeout` s to shut down what it started; then SIGKILL its process
    group and every descendant still alive."""
    tree = [pid, *descendants(pid)]
    _signal_all(pid, [pid], signal.SIGTERM, group=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        tree += [p for p in descendants(pid) if p not in tree]
        time.sleep(0.1)
    _signal_all(pid, [p for p in tree if alive(p)], signal.SIGKILL, group=True)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.05)


def _signal_all(leader: int, pids: list[int], sig: signal.Signals, *, group: bool) -> None:
    if group:
        try:
            os.killpg(leader, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
