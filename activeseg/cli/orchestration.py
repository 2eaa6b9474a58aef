"""Orchestration commands: ``server``, ``worker``, ``round``, ``status``, ``approve``, ``reject``,
``campaign`` and the ``demo``.

They run the campaign in the workspace containing the current folder (or ``--workspace DIR``) under
Prefect: the workspace's local server (started when needed, and said so) unless ``PREFECT_API_URL``
names an external one, and a worker that executes the rounds. Prefect is imported inside the
commands, so the library stays importable without it.
Exit status: 0 done, 1 a round failed, 2 usage or state error (e.g. nothing to approve).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DEMO_SETTINGS = [
    "partition.side=32",
    "partition.initial_labeled=8",
    "model.width=8",
    "model.depth=2",
    "train.epochs=20",
    "train.samples_per_epoch=64",
    "train.crop=32",
    "query.mc_passes=4",
]
"""The demo's campaign: a few rounds in a few minutes on two CPU cores."""
DEMO_THREADS = {"OMP_NUM_THREADS": "1"}
"""Compute threads per flow-run process in the demo (unless set): the demo's tiny model trains fastest
on one, and a round and the simulated annotator may run at once on two cores (with two threads each,
torch's threads spin while waiting for each other: ten times slower on a busy machine)."""
FOLLOW_SECONDS = 1.0


def _root(args: argparse.Namespace) -> Path:
    from activeseg.workspace.workspace import Workspace

    return Workspace.find(args.workspace or Path.cwd())


def _say(text: str) -> None:
    err.print(text, highlight=False)


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a refused round operation, an unreachable server or a failed resume (exit 2)."""

    def run(args: argparse.Namespace) -> int:
        from activeseg.orchestration.server import ServerError
        from flows.control import RoundError
        from flows.runtime import ResumeError

        try:
            return func(args)
        except (RoundError, ServerError, ResumeError, TimeoutError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            return 2

    return run


def ensure_worker(root: Path) -> None:
    """Start a background worker for the workspace when it uses its local server and has none (inside connect)."""
    from activeseg.orchestration import server
    from flows import runtime, worker

    srv = server.status(root)
    if srv is None or srv.external or runtime.worker_pid(root) is not None:
        return
    started = worker.start_and_wait(root)
    _say(f"Started a background worker (pid {started.pid}, log {started.log}); stop it with `activeseg worker stop`.")


# -- server and worker -----------------------------------------------------------------------------

@_guard
def cmd_server(args: argparse.Namespace) -> int:
    from activeseg.orchestration import server
    from flows import control

    root = _root(args)
    if args.action == "start":
        control.require_workspace(root)
        srv = server.start(root)
        where = "external server (PREFECT_API_URL)" if srv.external else f"log {srv.log}"
        console.print(f"Prefect server {'started' if srv.started else 'already running'} at {srv.url} ({where})")
    elif args.action == "stop":
        console.print("stopped the Prefect server" if server.stop(root) else "no local Prefect server was running")
    else:
        srv = server.status(root)
        console.print(f"Prefect server at {srv.url}" + (" (external)" if srv.external else f", pid {srv.pid}")
                      if srv else "no Prefect server is running for this workspace")
        return 0 if srv else 2
    return 0


@_guard
def cmd_worker(args: argparse.Namespace) -> int:
    from flows import control, runtime, worker

    root = _root(args)
    if args.action == "stop":
        with control.connect(root, say=_say):
            stopped = runtime.stop_worker(root)
        console.print("stopped the worker" if stopped else "no background worker was running")
        return 0
    if args.action == "status":
        pid = runtime.worker_pid(root)
        console.print(f"worker running, pid {pid}" if pid else "no background worker is running")
        return 0 if pid else 2
    if not args.background:
        console.print(f"serving the rounds of {root} (Ctrl-C to stop)")
        worker.serve(root, poll_seconds=args.poll_seconds)
        return 0
    with control.connect(root, say=_say):
        started = worker.start_and_wait(root, poll_seconds=args.poll_seconds)
    state = "started" if started.started else "already running"
    console.print(f"worker {state}: pid {started.pid}, log {started.log}")
    return 0


# -- rounds ----------------------------------------------------------------------------------------

@_guard
def cmd_round(args: argparse.Namespace) -> int:
    from activeseg.workspace.workspace import Workspace
    from flows import control

    root = _root(args)
    ws = Workspace.open(root)
    with control.connect(root, say=_say):
        active = control.active_run(root)
        if active:
            claim, state = active
            console.print(f"not started: round {claim.round} is {control.PHASES[state.type]} in flow run "
                          f"{claim.flow_run_id} ({state.name}); a campaign runs one round at a time")
            return 2
        if args.round is not None and args.round != ws.current_round():
            console.print(f"round {args.round} cannot start: the round in progress is {ws.current_round()}")
            return 2
        ensure_worker(root)
        run_id = control.start_round(root, args.round, trigger="manual")
        console.print(f"round {args.round or ws.current_round()}: flow run {run_id}")
        if not args.wait:
            return 0
        state = control.wait_for_round(run_id, until_final=ws.cfg.oracle.kind == "simulated",
                                       timeout=float("inf"), say=lambda s: console.print(f"  {s}"))
        return _report_round(Workspace.open(root), run_id, state)


def _report_round(ws: Any, run_id: Any, state: Any) -> int:
    from flows import control

    if state.name == control.SKIPPED:
        console.print(state.message)
        return 2
    status = control.status(ws)
    if status["hint"]:
        console.print(status["hint"])
    if state.type == "COMPLETED":
        row = status["rounds"][-1]
        console.print(f"round {row['round']} completed: {row['split']} Dice {row['dice']:.4f}")
    return 1 if state.final and state.type != "COMPLETED" else 0


@_guard
def cmd_status(args: argparse.Namespace) -> int:
    from activeseg.workspace.workspace import Workspace
    from flows import control

    root = _root(args)
    with control.connect(root, say=_say):
        result = control.status(Workspace.open(root))
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    run = result["flow_run"]
    console.print(f"campaign [bold]{result['campaign']}[/] ({result['workspace']}), strategy {result['strategy']}, "
                  f"oracle {result['oracle']}, schedule {result['schedule'] or 'none'}")
    console.print(f"current round {result['current_round']}: [bold]{result['state']}[/]")
    if run:
        console.print(f"  round {run['round']} flow run {run['id']}: {run['state']} since {run['since']}"
                      + (f" ({run['message']})" if run["message"] else ""))
    if result["hint"]:
        console.print(f"  {result['hint']}")
    for item in result["pending"]:
        console.print(f"  pending: round {item['round']}, {item['regions']} regions requested at {item['request']}; "
                      f"{item['uploaded']} files uploaded, {item['rejected_batches']} batches rejected")
    if result["stop"]:
        console.print(f"  campaign stop rule holds: {result['stop']}")
    if result["rounds"]:
        console.print(curve_table(result["rounds"]))
    return 0


@_guard
def cmd_approve(args: argparse.Namespace) -> int:
    from activeseg.workspace.workspace import Workspace
    from flows import control

    root = _root(args)
    with control.connect(root, say=_say):
        result = control.approve(Workspace.open(root), args.round, args.by, args.comment or "")
    console.print(f"round {args.round}: batch {result['batch_sha256'][:12]} from {result['annotator']} approved by "
                  f"{args.by}; flow run {result['flow_run_id']} resumes")
    return 0


@_guard
def cmd_reject(args: argparse.Namespace) -> int:
    from activeseg.workspace.workspace import Workspace
    from flows import control

    root = _root(args)
    with control.connect(root, say=_say):
        result = control.reject(Workspace.open(root), args.round, args.by, args.reason)
    waiting = (f"flow run {result['flow_run_id']} is {result['state']}" if result["flow_run_id"]
               else "no flow run is waiting for it")
    console.print(f"round {args.round}: batch {result['batch_sha256'][:12]} rejected by {args.by}, moved to "
                  f"{result['quarantine']}; the request stays open ({waiting}) and waits for another batch")
    return 0


# -- campaign --------------------------------------------------------------------------------------

@_guard
def cmd_campaign(args: argparse.Namespace) -> int:
    from flows import control

    root = _root(args)
    with control.connect(root, say=_say):
        ensure_worker(root)
        return run_campaign(root, args.rounds, wait=not args.no_wait)


def run_campaign(root: Path, rounds: int | None, *, wait: bool = True) -> int:
    """Start the campaign flow for `rounds` more rounds and (with `wait`) follow it to its end (inside connect)."""
    from flows import control, runtime

    run_id = runtime.start_run(control.deployment_name(control.CAMPAIGN_FLOW, root),
                               parameters={"workspace": str(root), "rounds": rounds}, tags=[control.campaign_name(root)])
    console.print(f"campaign flow run {run_id}" + (f" for {rounds} rounds" if rounds else ""))
    if not wait:
        return 0
    state = follow(root, run_id)
    console.print(f"campaign {state.name}: {state.message or ''}")
    return 0 if state.type == "COMPLETED" else 1


def follow(root: Path, run_id: Any) -> Any:
    """Print the campaign's round states as they change until the flow run `run_id` is final."""
    from flows import control, runtime

    seen: tuple | None = None
    while True:
        state = runtime.read_state(run_id)
        claim = control.read_claim(root)
        round_state = control.run_state(claim.run_id) if claim else None
        now = (claim.round, claim.flow_run_id, round_state.name) if claim and round_state else None
        if now and now != seen:
            console.print(f"  round {now[0]}: {now[2]}" + (" (awaiting labels)" if round_state.suspended else ""))
            seen = now
        if state.final:
            return state
        time.sleep(FOLLOW_SECONDS)


def curve_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("round", "labeled pixels", "val Dice", "test Dice", title="learning curve")
    for row in rows:
        val = "-" if row["val_dice"] is None else f"{row['val_dice']:.4f}"
        table.add_row(str(row["round"]), f"{row['labeled_pixel_fraction']:.2%}", val, f"{row['dice']:.4f}")
    return table


# -- demo ------------------------------------------------------------------------------------------

def run_demo(out: Path, rounds: int, overrides: list[str], params: Path | None = None) -> int:
    """`make demo`: a campaign on the synthetic data through the real path.

    Init a workspace in OUT/workspace, start its local Prefect server and a worker, run `rounds` rounds
    with the simulated annotator (every round suspends until its labels are approved, then resumes),
    print the learning curve, each round run's states and the audit history of one queried region,
    write OUT/report.md, and stop the server and worker it started.
    """
    from activeseg.orchestration import server
    from activeseg.workspace.workspace import Workspace
    from flows import control, runtime, worker

    out = Path(out).resolve()
    root = out / "workspace"
    _remove_previous(root)
    console.rule("activeseg demo: an active-learning campaign under Prefect, simulated annotator")
    started_at = time.monotonic()
    ws = Workspace.init(root, "synthetic", overrides=[*DEMO_SETTINGS, "oracle.kind=simulated", *overrides],
                        params=params)
    console.print(f"workspace {ws.root}: {len(ws.dataset.stems)} synthetic images, object store {ws.store.url}")
    with control.connect(root, say=_say) as srv:
        try:
            threads = {k: os.environ.get(k, v) for k, v in DEMO_THREADS.items()}
            started = worker.start_and_wait(root, poll_seconds=FOLLOW_SECONDS, env=threads)
            console.print(f"Prefect server {srv.url}, worker pid {started.pid} (log {started.log})")
            code = run_campaign(root, rounds)
            report = demo_report(Workspace.open(root), out)
        finally:
            runtime.stop_worker(root)
            if srv.started:
                server.stop(root)
            console.print("stopped the worker" + (" and the Prefect server" if srv.started else ""))
    console.print(f"demo finished in {time.monotonic() - started_at:.0f} s; report: {report}")
    return code


def _remove_previous(root: Path) -> None:
    """Stop what a previous demo left running in `root` and remove its workspace and local remote."""
    from activeseg.orchestration import processes
    from activeseg.orchestration import server

    if not root.exists():
        return
    console.print(f"removing the previous demo workspace {root}")
    home = server.prefect_home(root)
    for name in ("worker.pid", "server.pid"):
        pid = processes.read_pid(home / name)
        if pid is not None:
            processes.stop(pid)
    shutil.rmtree(root)
    shutil.rmtree(root.parent / f"{root.name}-remote", ignore_errors=True)


def demo_report(ws: Any, out: Path) -> Path:
    """Print and write (OUT/report.md, OUT/learning_curve.png) the demo's results (inside connect)."""
    from activeseg.loop.curves import plot_learning_curves
    from flows import campaign, control

    rows = campaign.learning_curve(ws)
    console.print(curve_table(rows))
    lines = ["# activeseg demo", "", f"Workspace: `{ws.root}`", "", "## Learning curve", "",
             "| round | labeled pixels | val Dice | test Dice |", "|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['labeled_pixel_fraction']:.2%} | {r['val_dice'] or 0:.4f} | {r['dice']:.4f} |"
              for r in rows]
    lines += ["", "## Round runs (Prefect states)", ""]
    console.rule("each round's flow run")
    for event in ws.ledger.events(type="labels_approved"):
        states = " -> ".join(name for name, _ in control.state_history(event.data["flow_run_id"]))
        line = f"round {event.round}: flow run {event.data['flow_run_id']}: {states}"
        console.print(line, highlight=False)
        lines.append(f"- {line}")
    queried = ws.ledger.events(type="queried")
    if queried:
        region = queried[0].data["regions"][0]
        console.rule(f"audit history of region {region}")
        lines += ["", f"## Audit history of region {region}", ""]
        for e in ws.ledger.events(sample=region):
            line = f"{e.time[:19]}  round {e.round}  {e.type} by {e.actor}: {control.describe(e, region)}"
            console.print(line, highlight=False)
            lines.append(f"- {line}")
    tracking = ws.cfg.tracking.uri or f"sqlite:///{ws.root / 'mlflow' / 'mlflow.db'}"
    plot = plot_learning_curves([{**r, "strategy": ws.cfg.query.strategy, "seed": 0} for r in rows],
                                out / "learning_curve.png", title="demo campaign: test Dice") if rows else None
    where = [f"MLflow runs: {tracking} (browse with `mlflow ui --backend-store-uri {tracking}`)",
             f"audit ledger: {ws.root / 'ledger.jsonl'} (`activeseg audit --workspace {ws.root}`)",
             f"learning curve plot: {plot}" if plot else "no round finished"]
    for line in where:
        console.print(line, highlight=False)
    lines += ["", "## Where things are", ""] + [f"- {line}" for line in where]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


# -- parser ----------------------------------------------------------------------------------------

def add_commands(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the orchestration commands on the main parser's subcommands."""

    def where(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--workspace", type=Path, help="workspace folder (default: the one containing .)")
        return parser

    p = where(sub.add_parser("server", help="the workspace's local Prefect server"))
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=cmd_server)

    p = where(sub.add_parser("worker", help="serve the campaign's rounds (foreground, or --background; stop)"))
    p.add_argument("action", nargs="?", choices=["start", "stop", "status"], default="start")
    p.add_argument("--background", action="store_true", help="detach, with a pid file (stop: activeseg worker stop)")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="how often to look for runs to start")
    p.set_defaults(func=cmd_worker)

    rounds = sub.add_parser("round", help="start a round").add_subparsers(dest="round_command", required=True)
    p = where(rounds.add_parser("start", help="start the round in progress (a worker runs it)"))
    p.add_argument("--round", type=int, help="must be the round in progress (default: it)")
    p.add_argument("--wait", action="store_true",
                   help="wait until it completes, fails, or (human oracle) waits for labels")
    p.set_defaults(func=cmd_round)

    p = where(sub.add_parser("status", help="the campaign: current round, its state, flow run, pending labels"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = where(sub.add_parser("approve", help="approve the ingested batch of a round: its flow run resumes"))
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--by", required=True, help="who approves")
    p.add_argument("--comment")
    p.set_defaults(func=cmd_approve)

    p = where(sub.add_parser("reject", help="quarantine the uploaded batch of a round; it keeps waiting"))
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--by", required=True, help="who rejects")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_reject)

    campaign = sub.add_parser("campaign", help="rounds back to back").add_subparsers(dest="campaign_command",
                                                                                    required=True)
    p = where(campaign.add_parser("run", help="run rounds until a stop rule holds"))
    p.add_argument("--rounds", type=int, help="this many more rounds (default: up to params rounds in all)")
    p.add_argument("--no-wait", action="store_true", help="start the campaign flow and return")
    p.set_defaults(func=cmd_campaign)
