"""Detached processes: pid files, stopping a whole tree; and finding a process by its environment (here:\nthe tests use it to check that nothing of a workspace is left)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from activeseg.orchestration import processes

# Ignores SIGTERM; starts a child in its process group and one in a session of its own.
STUBBORN_PARENT = """
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sleep", "60"])
subprocess.Popen(["sleep", "60"], start_new_session=True)
time.sleep(60)
"""


def environ(pid: int) -> dict[str, str]:
    """The environment process `pid` started with (empty when it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


def with_env(key: str, value: str) -> list[int]:
    """Live processes whose environment has `key` set to `value` (from /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if environ(pid).get(key) == value and processes.alive(pid):
            found.append(pid)
    return found


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_stop_ends_a_process_that_ignores_sigterm_and_all_it_started(tmp_path: Path):
    pid_file = tmp_path / "p.pid"
    process = processes.spawn(
        [sys.executable, "-c", STUBBORN_PARENT], pid_file=pid_file, log_file=tmp_path / "p.log", env=os.environ
    )
    assert processes.read_pid(pid_file) == process.pid
    wait_until(lambda: len(processes.descendants(process.pid)) == 2)
    children = processes.descendants(process.pid)

    processes.stop(process.pid, timeout=0.5)

    assert not processes.alive(process.pid)
    assert not any(processes.alive(child) for child in children)
    assert processes.read_pid(pid_file) is None
    assert not pid_file.exists()  # a stale pid file is removed


def test_environment_marks_find_a_process(tmp_path: Path):
    mark = f"mark-{os.getpid()}-{time.monotonic_ns()}"
    process = processes.spawn(
        ["sleep", "30"], pid_file=tmp_path / "s.pid", log_file=tmp_path / "s.log", env={**os.environ, "MARK": mark}
    )
    try:
        wait_until(lambda: environ(process.pid).get("MARK") == mark)  # once the child has exec'd
        assert with_env("MARK", mark) == [process.pid]
    finally:
        processes.stop(process.pid, timeout=2)
    assert with_env("MARK", mark) == []
