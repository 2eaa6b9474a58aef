"""The record of which process executes a flow run (written by the worker that forked it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from uuid import uuid4

from activeseg.orchestration import processes, workers


def test_a_recorded_run_process_counts_while_it_lives_and_only_as_itself(tmp_path: Path):
    run_id = uuid4()
    assert workers.run_processes(tmp_path, run_id) == []  # nothing recorded

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        workers.record_run_process(tmp_path, run_id, child.pid)
        assert workers.run_processes(tmp_path, run_id) == [child.pid]
        assert workers.run_processes(tmp_path, uuid4()) == []  # another run

        # the same pid with another start time (a later process given the recycled pid) is not the run's
        record = tmp_path / ".prefect" / workers.RUNS_DIR / f"{run_id}.pid"
        pid, started = record.read_text().split()
        assert int(started) == processes.start_time(child.pid)
        record.write_text(f"{pid} {int(started) - 1}\n")
        assert workers.run_processes(tmp_path, run_id) == []
    finally:
        child.kill()
        child.wait()
    workers.record_run_process(tmp_path, run_id, child.pid)  # a process that is gone
    assert workers.run_processes(tmp_path, run_id) == []
    assert processes.start_time(child.pid) is None
