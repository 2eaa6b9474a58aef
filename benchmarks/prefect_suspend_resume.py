"""Prefect's own latencies for the round mechanics, with the toy flow of tests/flows (no compute):
local server start, worker start, run start -> Suspended, resume -> Completed (same worker, and with
a worker restarted while the run waits). Prints seconds; run from the repository root:

    .venv/bin/python benchmarks/prefect_suspend_resume.py [--rounds 3] [--poll-seconds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOY_DIR = Path(__file__).resolve().parents[1] / "tests" / "flows"
sys.path.insert(0, str(TOY_DIR))

from activeseg.orchestration import server, workers  # noqa: E402
from activeseg.orchestration.engine import wait_for  # noqa: E402
from flows import worker  # noqa: E402
from flows.engine import PrefectEngine, connect  # noqa: E402

DEPLOYMENT = "approval-flow/toy"
APPROVAL = {"approved": True, "approver": "bench", "batch_hash": "0"}
ENGINE = PrefectEngine()


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def start_worker(workspace: Path, poll_seconds: float) -> float:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(TOY_DIR), os.environ.get("PYTHONPATH")]))}
    seconds, _ = timed(lambda: worker.start(workspace, ["approval_toy:approval_flow"], "toy",
                                            poll_seconds=poll_seconds, env=env))
    return seconds


def one_round(workspace: Path, counter_dir: Path, restart: bool, poll_seconds: float) -> dict[str, float]:
    counter_dir.mkdir()
    wait = lambda run_id, names: wait_for(ENGINE, run_id, lambda s: s.name in names or s.type in names,  # noqa: E731
                                          timeout=120, poll_seconds=0.05)
    start = time.perf_counter()
    run_id = ENGINE.start(DEPLOYMENT, {"counter_dir": str(counter_dir)})
    wait(run_id, {"RUNNING"})
    running = time.perf_counter() - start
    wait(run_id, {"Suspended"})
    suspended = time.perf_counter() - start
    while workers.run_processes(workspace, run_id):
        time.sleep(0.05)
    released = time.perf_counter() - start
    if restart:
        workers.stop(ENGINE, workspace)
    start = time.perf_counter()
    ENGINE.resume(run_id, APPROVAL)
    if restart:
        start_worker(workspace, poll_seconds)
    wait(run_id, {"COMPLETED"})
    return {"start->Running": running, "start->Suspended": suspended, "start->process gone": released,
            "resume->Completed": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poll-seconds", type=float, default=worker.POLL_SECONDS)
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        try:
            seconds, _ = timed(lambda: server.start(workspace))
            print(f"server start (cold workspace): {seconds:.2f} s")
            with connect(workspace, say=lambda _: None):
                try:
                    seconds = start_worker(workspace, args.poll_seconds)  # returns once the deployment is registered
                    print(f"worker start -> deployment registered: {seconds:.2f} s (poll {args.poll_seconds} s)")
                    for restart in (False, True):
                        rows = [one_round(workspace, Path(tmp) / f"c-{restart}-{i}", restart, args.poll_seconds)
                                for i in range(args.rounds)]
                        label = "worker restarted while suspended" if restart else "same worker"
                        print(f"{label} (median of {args.rounds}):")
                        for key in rows[0]:
                            print(f"  {key:22s} {statistics.median(r[key] for r in rows):6.2f} s")
                finally:
                    workers.stop(ENGINE, workspace)
        finally:
            server.stop(workspace)


if __name__ == "__main__":
    main()
