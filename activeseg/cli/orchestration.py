"""Orchestration commands: ``server``, ``worker``, ``round``, ``status``, ``approve``, ``reject`` and
``campaign``.

They run the campaign in the workspace containing the current folder (or ``--workspace DIR``) under
Prefect: the workspace's local server (started when needed, and said so) unless ``PREFECT_API_URL``
names an external one, and a worker that executes the rounds. ``status`` only reads: it starts no
server and says when none runs; nor do ``approve`` and ``reject`` of a round that no round run claimed
(a round run by hand with ``activeseg step``). The services are ``activeseg.orchestration``; this
module hands them the Prefect engine (``flows.engine``), imported inside the commands so that the
library and ``activeseg --help`` load without Prefect.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from activeseg.cli.output import console, count, print_json, print_table, say
from activeseg.cli.workspace import add_person_options, by
from activeseg.orchestration.engine import RunEngine, RunState

FOLLOW_SECONDS = 1.0


def _root(args: argparse.Namespace) -> Path:
    from activeseg.workspace.workspace import Workspace

    return Workspace.find(args.workspace or Path.cwd())


@contextmanager
def connected(root: Path, *, start: bool = True) -> Iterator[RunEngine | None]:
    """The Prefect engine on the workspace's server for the block; the server is started when none runs
    (and said so), or, with `start` False, the engine is None when none runs."""
    from activeseg.orchestration import server
    from activeseg.orchestration.guard import require_workspace

    require_workspace(root)
    if not start and server.status(root) is None:
        yield None
        return
    from flows.engine import PrefectEngine, connect  # Prefect only when there is a server to talk to

    with connect(root, start=start, say=say):
        yield PrefectEngine()


def ensure_worker(root: Path) -> None:
    """Start a background worker for the workspace when it uses its local server and has none (inside connect)."""
    from activeseg.orchestration import server, workers
    from flows import worker

    srv = server.status(root)
    if srv is None or srv.external or workers.worker_pid(root) is not None:
        return
    started = worker.start(root)
    say(f"Started a background worker (pid {started.pid}, log {started.log}); stop it with `activeseg worker stop`.")


# -- server and worker -----------------------------------------------------------------------------

def cmd_server(args: argparse.Namespace) -> int:
    from activeseg.orchestration import server
    from activeseg.orchestration.guard import require_workspace

    root = _root(args)
    if args.action == "start":
        require_workspace(root)
        srv = server.start(root, host=args.host)
        where = "external server (PREFECT_API_URL)" if srv.external else f"log {srv.log}"
        if not srv.external and srv.host != server.HOST:
            where = f"listening on {srv.host}, {where}"
        console.print(f"Prefect server {'started' if srv.started else 'already running'} at {srv.url} ({where})")
    elif args.action == "stop":
        from activeseg.orchestration import workers
        if workers.worker_pid(root) is not None:  # it would start the server again within seconds
            raise server.ServerError("a worker is running and keeps the local server up: stop it first with "
                                     "`activeseg worker stop`")
        console.print("stopped the Prefect server" if server.stop(root) else "no local Prefect server was running")
    else:
        srv = server.status(root)
        console.print(f"Prefect server at {srv.url}" + (" (external)" if srv.external else f", pid {srv.pid}")
                      if srv else "no Prefect server is running for this workspace")
        return 0 if srv else 2
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from activeseg.orchestration import workers
    from flows import worker

    root = _root(args)
    if args.action == "stop":
        with connected(root) as engine:
            stopped = workers.stop(engine, root)
        console.print("stopped the worker" if stopped else "no background worker was running")
        return 0
    if args.action == "status":
        pid = workers.worker_pid(root)
        console.print(f"worker running, pid {pid}" if pid else "no background worker is running")
        return 0 if pid else 2
    poll = args.poll_seconds or worker.POLL_SECONDS
    if not args.background:
        console.print(f"serving the rounds of {root} (Ctrl-C to stop)")
        worker.serve(root, poll_seconds=poll)
        return 0
    with connected(root):
        started = worker.start(root, poll_seconds=poll)
    state = "started" if started.started else "already running"
    console.print(f"worker {state}: pid {started.pid}, log {started.log}")
    return 0


# -- rounds ----------------------------------------------------------------------------------------

def cmd_round(args: argparse.Namespace) -> int:
    from activeseg.orchestration import guard, rounds
    from activeseg.workspace.workspace import Workspace

    root = _root(args)
    ws = Workspace.open(root)
    reason = None if args.force else _stop_rule(ws)
    if reason:
        console.print(f"not started: a stop rule holds ({reason}); `activeseg round start --force` starts round "
                      f"{ws.current_round()} anyway", highlight=False)
        return 2
    with connected(root) as engine:
        active = guard.active_run(engine, root)
        if active:
            claim, state = active
            console.print(f"not started: round {claim.round_number} is {guard.PHASES[state.type]} in flow run "
                          f"{claim.flow_run_id} ({state.name}); a campaign runs one round at a time")
            return 2
        if args.round is not None and args.round != ws.current_round():
            console.print(f"round {args.round} cannot start: the round in progress is {ws.current_round()}")
            return 2
        ensure_worker(root)
        run_id = rounds.start_round(engine, root, args.round, trigger="manual")
        console.print(f"round {args.round or ws.current_round()}: flow run {run_id}")
        if not args.wait:
            return 0
        state = rounds.wait_for_round(engine, run_id, until_final=ws.cfg.oracle.kind == "simulated",
                                      timeout=float("inf"), say=lambda s: console.print(f"  {s}"))
        return _report_round(engine, Workspace.open(root), state)


def _stop_rule(ws: Any) -> str | None:
    """The campaign's stop rule on a round that has not started (a started one may always finish)."""
    from activeseg.workspace.audit import stop_reason

    return None if ws.current_round() in ws.records.numbers() else stop_reason(ws, ws.cfg.rounds)


def _report_round(engine: RunEngine, ws: Any, state: RunState) -> int:
    from activeseg.orchestration.names import SKIPPED
    from activeseg.orchestration.status import status

    if state.name == SKIPPED:
        console.print(state.message)
        return 2
    result = status(engine, ws)
    if result["hint"] and state.type != "COMPLETED":
        console.print(result["hint"])
    if state.type == "COMPLETED":
        row = result["rounds"][-1]
        console.print(f"round {row['round']} completed: {row['split']} Dice {row['dice']:.4f}")
    return 1 if state.final and state.type != "COMPLETED" else 0


def cmd_status(args: argparse.Namespace) -> int:
    from activeseg.orchestration.status import control_line, headline, status
    from activeseg.workspace.ledger_text import refusal
    from activeseg.workspace.workspace import Workspace

    root = _root(args)
    with connected(root, start=False) as engine:
        result = status(engine, Workspace.open(root))
    if args.json:
        print_json(result)
        return 0
    console.print(f"campaign {result['campaign']} ({result['workspace']}), strategy {result['strategy']} "
                  f"({result['start'] or 'random'} start), oracle {result['oracle']}, "
                  f"schedule {result['schedule'] or 'none'}", highlight=False)
    console.print(headline(result), style="bold", highlight=False)
    lines = [f"Prefect server {result['server']}" if result["server"] else
             "no Prefect server is running for this workspace (status starts none)", you_line(result["you"])]
    run = result["flow_run"]
    if run:
        lines.append(f"round {run['round']} flow run {run['id']}: {run['state']}"
                     + (f" since {run['since']}" if run["since"] else "")
                     + (f" ({run['message']})" if run["message"] else ""))
    if result["batch"]:
        batch = result["batch"]
        unchanged = batch["reviewed_unchanged"]
        lines.append(f"batch to approve: {batch['sha256']} (round {batch['round']}, from {batch['annotator']}"
                     + (f"; {len(unchanged)} of {batch['files']} masks are the prediction unchanged" if unchanged
                        is not None else "") + ")")
    lines += [f"round {item['round']}: {refusal(item['refused'])}" for item in result["pending"] if item["refused"]]
    lines += [result["hint"]] * bool(result["hint"])
    lines += [f"pending: round {item['round']}, {count(item['regions'], 'region')} requested at {item['request']}; "
              f"{count(item['uploaded'], 'file')} uploaded, {count(item['rejected_batches'], 'batch')} rejected"
              + (f"; batch {item['staged']['batch_sha256']} staged" if item["staged"] else "")
              for item in result["pending"]]
    for item in result["labelstudio"] or []:
        lines.append(f"Label Studio, round {item['round']}: " + (
            item["error"] if "error" in item else
            f"{item['done']} of {item['tasks']} tasks done ({item['url']})"
            + ("; every task is complete: `activeseg labels pull` stages the batch" * (item["done"] == item["tasks"]))))
    if result["collapsed"]:
        model = result["collapsed"]
        lines.append(f"model of round {model['round']} collapsed: {model['reason']} (val Dice {model['val_dice']:.4f})")
    lines += [control_line(row) for row in result["controls"]]
    lines += [f"campaign stop rule holds: {result['stop']}"] * bool(result["stop"])
    lines.append(f"augmentation preset {result['augment']['preset']} ({result['augment']['reason']})")
    for line in lines:
        console.print(f"  {line}", highlight=False, markup=False)
    if result["rounds"]:
        print_curve(result["rounds"])
    return 0


def you_line(you: dict[str, Any]) -> str:
    """The current user's roles in words (``status``'s ``you``)."""
    if you["roles"] is None:
        return f"you ({you['name']}) are not in access.yaml: {you['note']}"
    keys = f", {you['keys']} key" + "s" * (you["keys"] != 1)
    return f"you ({you['name']}): {', '.join(you['roles'])}{keys}"


def _engine_for(ws: Any, round_number: int) -> AbstractContextManager[RunEngine | None]:
    """The engine (connected, a server started when none runs) when a round run claimed the round; else
    None: a round run by hand needs no server to approve or reject its labels."""
    from activeseg.orchestration.approval import run_owns_round

    return connected(ws.root) if run_owns_round(ws, round_number) else nullcontext()


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve, then say what became of the batch: taken in (0), refused or failed (1, with the reason), or
    not yet known after the wait (3)."""
    from activeseg.orchestration.approval import approve
    from activeseg.workspace.workspace import Workspace

    root = _root(args)
    ws = Workspace.open(root)
    with _engine_for(ws, args.round) as engine:
        result = approve(engine, ws, args.round, by(args), args.comment or "",
                         wait_seconds=0.0 if args.no_wait else args.wait_seconds, sign=args.sign)
    n, batch = args.round, result["batch_sha256"][:12]
    if result["pulled"]:
        console.print(f"round {n}: {result['pulled']}", highlight=False)
    run = f"flow run {result['flow_run_id']}" if result["flow_run_id"] else "by hand (no round run waits for it)"
    if result["outcome"] == "taken_in":
        console.print(f"round {n}: batch {batch} from {result['annotator']} approved by {result['approver']} and "
                      f"taken in {run}, commit {result['commit'][:12]}", highlight=False)
        return 0
    if result["outcome"] in ("refused", "failed"):
        console.print(f"round {n}: the approval of batch {batch} by {result['approver']} was not taken ({run}): "
                      f"{result['reason']}. `activeseg status` shows what the round waits for now.",
                      highlight=False, style="red")
        return 1
    console.print(f"round {n}: batch {batch} approved by {result['approver']}; {run} resumes and takes it in "
                  f"({'not waited for' if args.no_wait else 'not yet taken in after the wait: ' + result['reason']}"
                  f"). `activeseg status` shows whether it was taken in or refused.", highlight=False)
    return 0 if args.no_wait else 3


def cmd_reject(args: argparse.Namespace) -> int:
    from activeseg.orchestration.approval import reject
    from activeseg.workspace.workspace import Workspace

    root = _root(args)
    ws = Workspace.open(root)
    with _engine_for(ws, args.round) as engine:
        result = reject(engine, ws, args.round, by(args), args.reason, args.sign)
    waiting = (f"flow run {result['flow_run_id']} is {result['state']}" if result["flow_run_id"]
               else "no flow run is waiting for it")
    console.print(f"round {args.round}: batch {result['batch_sha256'][:12]} rejected by {result['by']}, moved to "
                  f"{result['quarantine']}; the request stays open ({waiting}) and waits for another batch",
                  highlight=False)
    return 0


# -- campaign --------------------------------------------------------------------------------------

def cmd_campaign(args: argparse.Namespace) -> int:
    root = _root(args)
    with connected(root) as engine:
        ensure_worker(root)
        return run_campaign(engine, root, args.rounds, wait=not args.no_wait)


def run_campaign(engine: RunEngine, root: Path, rounds: int | None, *, wait: bool = True) -> int:
    """Start the campaign flow for `rounds` more rounds and (with `wait`) follow it to its end (inside connect)."""
    from activeseg.orchestration.names import CAMPAIGN_FLOW, campaign_name, deployment_name

    run_id = engine.start(deployment_name(CAMPAIGN_FLOW, root), {"workspace": str(root), "rounds": rounds},
                          [campaign_name(root)])
    console.print(f"campaign flow run {run_id}" + (f" for {rounds} rounds" if rounds else ""))
    if not wait:
        return 0
    state = follow(engine, root, run_id)
    console.print(f"campaign {state.name}: {state.message or ''}", highlight=False)
    return 0 if state.type == "COMPLETED" else 1


def follow(engine: RunEngine, root: Path, run_id: Any) -> RunState:
    """Print the campaign's round states as they change until the flow run `run_id` is final."""
    from activeseg.orchestration.guard import read_claim

    seen: tuple | None = None
    while True:
        state = engine.state(run_id)
        claim = read_claim(root)
        round_state = engine.state(claim.run_id) if claim else None
        now = (claim.round_number, claim.flow_run_id, round_state.name) if claim and round_state else None
        if now and now != seen:
            console.print(f"  round {now[0]}: {now[2]}" + (" (awaiting labels)" if round_state.suspended else ""))
            seen = now
        if state is not None and state.final:
            return state
        time.sleep(FOLLOW_SECONDS)


def print_curve(rows: list[dict[str, Any]]) -> None:
    """The learning curve: one row per evaluated round."""
    print_table(("round", "labeled pixels", "val Dice", "test Dice"),
                [(row["round"], f"{row['labeled_pixel_fraction']:.2%}",
                  "-" if row["val_dice"] is None else f"{row['val_dice']:.4f}", f"{row['dice']:.4f}") for row in rows],
                title="learning curve")


# -- parser ----------------------------------------------------------------------------------------

def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the orchestration commands on the main parser's subcommands."""

    def where(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--workspace", type=Path, help="workspace folder (default: the one containing .)")
        return parser

    p = where(sub.add_parser("server", help="the workspace's local Prefect server"))
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--host", help="start: the address to listen on (default: PREFECT_SERVER_API_HOST, else "
                                  "127.0.0.1); off loopback PREFECT_SERVER_API_AUTH_STRING must be set")
    p.set_defaults(func=cmd_server)

    p = where(sub.add_parser("worker", help="serve the campaign's rounds (foreground, or --background; stop)"))
    p.add_argument("action", nargs="?", choices=["start", "stop", "status"], default="start")
    p.add_argument("--background", action="store_true", help="detach, with a pid file (stop: activeseg worker stop)")
    p.add_argument("--poll-seconds", type=float, help="how often to look for runs to start (default 0.5)")
    p.set_defaults(func=cmd_worker)

    rounds = sub.add_parser("round", help="start a round").add_subparsers(dest="round_command", required=True)
    p = where(rounds.add_parser("start", help="start the round in progress (a worker runs it)"))
    p.add_argument("--round", type=int, help="must be the round in progress (default: it)")
    p.add_argument("--wait", action="store_true",
                   help="wait until it completes, fails, or (human oracle) waits for labels")
    p.add_argument("--force", action="store_true", help="start it even when a campaign stop rule holds")
    p.set_defaults(func=cmd_round)

    p = where(sub.add_parser("status", help="the campaign: current round, its state, flow run, pending labels"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = where(sub.add_parser("approve", help="approve the staged batch of a round: its flow run (or this command) "
                                                "takes it in"))
    p.add_argument("--round", type=int, required=True)
    add_person_options(p, help="who approves: a reviewer, not an annotator of the batch")
    p.add_argument("--comment")
    p.add_argument("--wait-seconds", type=float,
                   help="how long to wait for the round run to take the batch in or refuse it (default 120); "
                        "exit 0 taken in, 1 refused or failed, 3 not known yet")
    p.add_argument("--no-wait", action="store_true", help="resume the round run and return at once")
    p.set_defaults(func=cmd_approve)

    p = where(sub.add_parser("reject", help="quarantine the staged batch of a round; it keeps waiting"))
    p.add_argument("--round", type=int, required=True)
    add_person_options(p, help="who rejects: a reviewer")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_reject)

    campaign = sub.add_parser("campaign", help="rounds back to back").add_subparsers(dest="campaign_command",
                                                                                    required=True)
    p = where(campaign.add_parser("run", help="run rounds until a stop rule holds"))
    p.add_argument("--rounds", type=int, help="this many more rounds (default: up to params rounds in all)")
    p.add_argument("--no-wait", action="store_true", help="start the campaign flow and return")
    p.set_defaults(func=cmd_campaign)
