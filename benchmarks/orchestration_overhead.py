"""Orchestration overhead per round, on the demo settings (or a params file's) with the simulated annotator.

The same rounds (same data, split, initial labels, seeds) are run three ways:

1. compute: directly through the library (train, query, reveal the ground truth, evaluate), nothing
   else;
2. workspace: `Workspace` steps called in this process, no Prefect (adds DVC and git, the ledger,
   MLflow, Great Expectations validation, the label exchange); time spent in each is measured;
3. Prefect: local server and worker, each round a flow run that stages the simulated annotator's
   labels, suspends until the worker approves them, then resumes (what `make demo` does). A round's
   wall time runs from its run being scheduled to Completed; "in tasks" is the time its executed tasks
   took, the rest is Prefect's own (process starts, polling, state changes, the suspension round trip).
   The worker is started, and its fork server has done its imports, before the first round is timed
   (a once-per-worker cost, printed on its own).

The fixed overhead per round (the last line) is the mean wall time per round of the Prefect path minus
that of the bare compute. Overhead = (time per round - compute per round) / compute per round, in wall
time (what a user waits; noisy on a shared machine) and in CPU time of every process involved (server, worker, flow runs,
subprocesses; steadier). Every process computes with one thread (OMP_NUM_THREADS=1 unless set): with
two, torch's threads spin while they wait for each other and CPU time grows with the machine's load.
Run from the repository root:

    .venv/bin/python benchmarks/orchestration_overhead.py [--rounds 3] [--set key=value ...]
    .venv/bin/python benchmarks/orchestration_overhead.py --params benchmarks/params/isbi-patch.yaml \
        --set tracking.mlflow=true     # the ISBI patch settings of docs/benchmarks.md (benchmarks/prepare_isbi.py)
    .venv/bin/python benchmarks/orchestration_overhead.py --set train.min_steps=1 --set train.max_steps=1 \
        --set query.mc_passes=1 --set query.allow_collapsed_model=true   # the floor: a round with next to no compute
"""

from __future__ import annotations

import argparse
import json
import functools
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one compute thread per process, here and in every
    os.environ.setdefault(_name, "1")                  # flow run: CPU times then do not depend on other load

from activeseg.cli.demo import DEMO_SETTINGS  # noqa: E402
from activeseg.core.config import Config, load_config  # noqa: E402
from activeseg.workspace.workspace import Workspace  # noqa: E402

SPENT: dict[str, float] = defaultdict(float)


def timed(category: str, func):
    """`func`, adding the seconds each call takes to SPENT[category] (outermost call only)."""
    active = {"depth": 0}

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        active["depth"] += 1
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            active["depth"] -= 1
            if active["depth"] == 0:
                SPENT[category] += time.perf_counter() - start

    return wrapper


def instrument() -> None:
    """Measure DVC and git (subprocesses and DVC's API), ledger writes, MLflow calls, GX validation, and
    the label request (query maps, request files, upload) in this process."""
    from mlflow.tracking import MlflowClient

    from activeseg.model import tracking
    from activeseg.workspace import creation, ledger, steps, vcs
    from activeseg.workspace.exchange import intake

    vcs.Vcs.run = timed("dvc + git (run)", vcs.Vcs.run)
    vcs.Vcs._in_process = timed("dvc (Python API)", vcs.Vcs._in_process)
    for name in ("save_query_maps", "publish_request"):
        setattr(steps, name, timed("label request", getattr(steps, name)))
    for name in ("append", "export_jsonl", "import_jsonl"):
        setattr(ledger.Ledger, name, timed("ledger", getattr(ledger.Ledger, name)))
    tracking.Tracker._setup = timed("mlflow", tracking.Tracker._setup)
    for name in ("create_run", "log_batch", "set_terminated", "log_artifact", "set_tag"):
        setattr(MlflowClient, name, timed("mlflow", getattr(MlflowClient, name)))
    for module, name in ((steps, "validate_dataset"), (creation, "validate_dataset"), (intake, "validate_label_batch")):
        setattr(module, name, timed("validation (GX)", getattr(module, name)))


def cpu_now() -> float:
    """CPU seconds used so far by this process and its reaped children (subprocesses)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of a live process and of its children it has reaped (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a live process and of every live descendant (the worker's fork server, whose
    reaped children are the flow runs), each with the children it has reaped."""
    from activeseg.orchestration import processes

    return sum(process_cpu(p) for p in [pid, *processes.descendants(pid)])


def compute_rounds(cfg: Config, root: Path, rounds: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per round of the bare compute, on the workspace's data, split and initial labels."""
    from activeseg.model.evaluation import evaluate_model
    from activeseg.core.labels import LabelState
    from activeseg.model.network import load_checkpoint, pick_device
    from activeseg.loop.oracle import reveal_from_ground_truth
    from activeseg.loop.selection import select_regions
    from activeseg.loop.simulate import apply_selection
    from activeseg.model.tracking import RunLog
    from activeseg.model.training import train_model

    ws = Workspace.open(root)
    dataset, split, regions = ws.dataset, ws.split(), ws.regions()
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    reveal_from_ground_truth(state, dataset, [r.region() for r in ws.record(0).initial.regions], 0)
    device = pick_device(cfg.train.device)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(1, rounds + 1):
            start, cpu = time.perf_counter(), cpu_now()
            result = train_model(cfg, dataset, state, split["val"], Path(tmp) / "model", RunLog(),
                                 seed=cfg.train.seed * 1000 + n, progress=False)
            selection, ctx = select_regions(cfg, cfg.query.strategy, dataset, split, state, regions, result.checkpoint,
                                            n, cfg.train.seed, Path(tmp) / "cache")
            apply_selection(state, dataset, selection, ctx.candidates, n)
            model, _ = load_checkpoint(result.checkpoint, device)
            evaluate_model(model, dataset, split[cfg.evaluate.split], device)
            seconds.append((time.perf_counter() - start, cpu_now() - cpu))
    return seconds


def workspace_rounds(root: Path, rounds: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per round of the workspace steps called directly (SPENT says where the wall
    time went)."""
    seconds = []
    for n in range(1, rounds + 1):
        start, cpu = time.perf_counter(), cpu_now()
        ws = Workspace.open(root)
        ws.validate()
        ws.partition()
        ws.train(n)
        ws.query(n)
        ws.simulate_labels(n)
        ws.approve(n, "simulated-oracle")  # as the worker approves the simulated annotator's batch
        ws.evaluate(n)
        seconds.append((time.perf_counter() - start, cpu_now() - cpu))
    return seconds


def prefect_rounds(root: Path, rounds: int,
                   poll_seconds: float | None = None) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per round under Prefect: wall time, time inside executed tasks, the rest; and the CPU seconds
    that the server, the worker with its flow-run processes and this process used during the rounds,
    by process."""
    from activeseg.orchestration import server, workers
    from activeseg.orchestration.engine import wait_for
    from activeseg.orchestration.names import CAMPAIGN_FLOW, deployment_name
    from flows import worker
    from flows.engine import PrefectEngine, connect
    from flows.forkserver import READY

    os.environ.pop("PREFECT_API_URL", None)
    engine = PrefectEngine()
    with connect(root, say=lambda _: None) as srv:
        try:
            since = time.perf_counter()
            started = worker.start(root, poll_seconds=poll_seconds or worker.POLL_SECONDS)
            while READY not in started.log.read_text() and time.perf_counter() - since < 300:
                time.sleep(0.2)  # the fork server's imports: once per worker, not part of a round
            print(f"worker started, its flow runs' process warm, in {time.perf_counter() - since:.1f} s")
            pids = {"server": srv.pid, "worker and its flow runs": started.pid}
            cpu = {name: tree_cpu(pid) for name, pid in pids.items()} | {"this process": time.process_time()}
            run_id = engine.start(deployment_name(CAMPAIGN_FLOW, root), {"workspace": str(root), "rounds": rounds})
            state = wait_for(engine, run_id, lambda s: s.final, timeout=3600)
            if state.type != "COMPLETED":
                raise RuntimeError(f"the campaign ended {state.name}: {state.message}")
            deadline = time.monotonic() + 30
            runs = [UUID(f.stem) for f in (server.prefect_home(root) / workers.RUNS_DIR).glob("*.pid")]
            while any(workers.run_processes(root, r) for r in runs) and time.monotonic() < deadline:
                time.sleep(0.2)  # let the last flow-run processes exit and be reaped
            used = {name: tree_cpu(pid) for name, pid in pids.items()} | {"this process": time.process_time()}
            cpu = {name: used[name] - cpu[name] for name in cpu}
            times = [_round_times(engine, event.data["flow_run_id"])
                     for event in Workspace.open(root).ledger.events(type="labels_approved")]
            return times, cpu
        finally:
            workers.stop(engine, root)
            if srv.started:
                server.stop(root)


def _round_times(engine: Any, round_run_id: str) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    history = engine.history(UUID(round_run_id))
    wall = _seconds(history[0][1], history[-1][1])
    with get_client(sync_client=True) as client:
        own = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(round_run_id)])))
    in_tasks = sum((t.end_time - t.start_time).total_seconds() for t in own
                   if t.state.name == "Completed" and t.start_time and t.end_time)
    return {"wall": wall, "in tasks": in_tasks, "Prefect": wall - in_tasks}


def _seconds(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def settings_from(params: Path | None) -> tuple[str, list[str]]:
    """(dataset, KEY=VALUE settings): the demo's, or every key of a params file (its ``data.dataset`` as
    the dataset; ``rounds`` left to ``--rounds``)."""
    if params is None:
        return "synthetic", list(DEMO_SETTINGS)
    given = load_config(params).flat()
    written = _keys(yaml.safe_load(params.read_text()) or {})
    dataset = str(given["data.dataset"]) if "data.dataset" in written else "synthetic"
    return dataset, [f"{key}={json.dumps(given[key])}" for key in written if key not in ("rounds", "data.dataset")]


def _keys(section: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys a params file sets."""
    return [name for key, value in section.items()
            for name in (_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=Path, help="settings from this params file (its data.dataset too) "
                        "instead of the demo's, e.g. benchmarks/params/isbi-patch.yaml")
    parser.add_argument("--poll-seconds", type=float, default=None,
                        help="how often the worker asks for runs to start (default: flows.worker.POLL_SECONDS)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = parser.parse_args()
    dataset, settings = settings_from(args.params)
    settings = [*settings, "oracle.kind=simulated", *args.overrides]
    print(f"dataset {dataset}, settings: {' '.join(settings)}; {args.rounds} rounds; {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        direct = Workspace.init(Path(tmp) / "direct", dataset, overrides=settings)
        compute = compute_rounds(direct.cfg, direct.root, args.rounds)
        instrument()
        steps = workspace_rounds(direct.root, args.rounds)
        spent = dict(SPENT)
        orchestrated, cpu_by_process = prefect_rounds(
            Workspace.init(Path(tmp) / "prefect", dataset, overrides=settings).root, args.rounds, args.poll_seconds)

    base = statistics.mean(c for c, _ in compute)
    print(f"\nwall seconds\n{'round':>5} {'compute':>9} {'workspace':>10} {'Prefect wall':>13} {'in tasks':>9} "
          f"{'Prefect own':>12}")
    for n, (c, w, p) in enumerate(zip(compute, steps, orchestrated), start=1):
        print(f"{n:>5} {c[0]:>8.1f}s {w[0]:>9.1f}s {p['wall']:>12.1f}s {p['in tasks']:>8.1f}s {p['Prefect']:>11.1f}s")
    mean_steps = statistics.mean(w for w, _ in steps)
    mean_wall = statistics.mean(p["wall"] for p in orchestrated)
    print(f"mean per round: compute {base:.1f} s, workspace {mean_steps:.1f} s, Prefect path {mean_wall:.1f} s")
    print("workspace overhead per round (wall), by cause:")
    for name, total in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:16s} {total / args.rounds:6.1f} s")
    print(f"Prefect's own per round (wall): {statistics.mean(p['Prefect'] for p in orchestrated):.1f} s")
    prefect_cpu = sum(cpu_by_process.values())
    cpu_compute = statistics.mean(c for _, c in compute)
    cpu_steps = statistics.mean(c for _, c in steps)
    print(f"\nCPU seconds per round (all processes; insensitive to other load on the machine): compute "
          f"{cpu_compute:.1f}, workspace {cpu_steps:.1f}, Prefect path {prefect_cpu / args.rounds:.1f}")
    for name, total in cpu_by_process.items():
        print(f"  {name:26s} {total / args.rounds:6.1f}")
    print(f"\noverhead, workspace without Prefect: wall {(mean_steps - base) / base:.0%}, "
          f"CPU {(cpu_steps - cpu_compute) / cpu_compute:.0%} of the compute")
    print(f"overhead, full orchestrated round:   wall {(mean_wall - base) / base:.0%}, "
          f"CPU {(prefect_cpu / args.rounds - cpu_compute) / cpu_compute:.0%} of the compute (target < 10%)")
    print(f"fixed overhead per round: {mean_wall - base:.1f} s")

if __name__ == "__main__":
    main()
