"""The worker of a campaign workspace: serves its two deployments (the round, with the params'
`schedule.cron`, and the campaign) and executes their runs, each in a process of its own, forked from a
warm one that imported what a round needs once (`flows.forkserver`). This module is the one place that
starts a worker.

On start it retries the campaign's round run if a worker died under it (`rounds.recover`); while it
runs it restarts the local Prefect server when it stops answering and retries a round run lost to a
dead process or server (`rounds.tend`), and it plays the simulated annotator: it labels a suspended
round from the ground truth and approves (`rounds.answer_simulated`). Run it as
`activeseg worker` (foreground), `activeseg worker --background` (`start`, pid file `.prefect/worker.pid`,
log `.prefect/worker.log`; `activeseg worker stop`), or in a container as
`python -m flows.worker --workspace /campaigns/NAME`. `--flow module:attribute --name NAME` serves other
flows instead (deployments `<flow name>/NAME`, no schedule), e.g. a toy flow in a test.

Flows are referred to as "module:attribute" (e.g. "flows.al_round:al_round") and deployed with a
module-path entrypoint, so any process with the package installed can load them, whatever its
working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound, TerminationSignal
from prefect.runner import Runner
from prefect.types.entrypoint import EntrypointType

from activeseg.core.config import load_config
from activeseg.orchestration import rounds, server, workers
from activeseg.orchestration.names import campaign_name
from activeseg.workspace.validation.suite import warm_up
from flows.engine import PrefectEngine, connect
from flows.forkserver import fork_flow_runs

FLOWS = (("flows.al_round:al_round", True), ("flows.campaign:campaign", False))
"""The campaign's flows: (flow, whether the params' schedule applies to it)."""
POLL_SECONDS = 0.5
"""How often a worker asks the server for runs to start, a round's first run or its resumption (Prefect's
default is 10 s; each ask costs the local server about 10 ms of CPU)."""
TEND_SECONDS = 5
"""How often a worker checks that the local server answers and that the round run has not been lost."""
ANSWER_SECONDS = 0.5
"""How often a worker looks for a suspended round that waits for the simulated annotator."""


def load_flow(ref: str) -> Flow:
    """The flow object named by "module:attribute"."""
    module, _, attribute = ref.partition(":")
    flow = getattr(importlib.import_module(module), attribute, None)
    if not isinstance(flow, Flow):
        raise ValueError(f"{ref!r} does not name a Prefect flow (expected 'module:attribute')")
    return flow


def deployments(root: Path, flow_refs: Sequence[str], name: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The deployments to serve, as (flow, options of `Runner.add_flow`): the campaign's, named after it,
    with the params' schedule and the workspace as their default parameter; or, with `flow_refs`, those
    flows' deployments named `name`, without a schedule or parameters."""
    if flow_refs:
        return [(ref, {"name": name or campaign_name(root)}) for ref in flow_refs]
    root = Path(root).resolve()
    cron = load_config(root / "params.yaml").schedule.cron
    return [(ref, {"name": campaign_name(root), "cron": cron if scheduled else None,
                   "parameters": {"workspace": str(root)}}) for ref, scheduled in FLOWS]


def check_campaign_name(client: SyncPrefectClient, root: Path, flow_refs: Sequence[str] = ()) -> None:
    """ServerError when the campaign's deployments on the server belong to another workspace that still
    exists here: campaigns sharing a server are told apart by their folder's name (`names.campaign_name`),
    and a second worker serving the same deployments would run the other campaign's rounds with this
    workspace's Prefect home. A workspace moved to another folder takes its deployments over."""
    if flow_refs:
        return
    root = Path(root).resolve()
    for ref, _ in FLOWS:
        full_name = f"{load_flow(ref).name}/{campaign_name(root)}"
        try:
            deployment = client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            continue
        other = (deployment.parameters or {}).get("workspace")
        if other and Path(other).resolve() != root and (Path(other) / "workspace.json").is_file():
            raise server.ServerError(
                f"the campaign name {campaign_name(root)!r} is taken on this Prefect server: deployment "
                f"{full_name} serves the workspace {other}. Campaigns sharing a server are named after their "
                f"workspace folder: rename the folder of {root} (or of {other}).")


def serve(root: Path, flow_refs: Sequence[str] = (), name: str | None = None, *,
          poll_seconds: float = POLL_SECONDS) -> None:
    """Serve the deployments in this process until SIGTERM/SIGINT, each run in a process forked from a
    warm one (`flows.forkserver`). The schedule is not paused when the worker stops, so a restarted
    worker carries on."""
    with connect(root) as srv:
        os.environ.update(server.client_env(root, srv))  # inherited by the flow-run processes
        with get_client(sync_client=True) as client:
            check_campaign_name(client, root, flow_refs)
        retried = rounds.recover(PrefectEngine(), root)
        if retried:
            print(retried, flush=True)
        context = contextvars.copy_context()  # the settings `connect` chose, in the thread too
        simulated = not flow_refs and load_config(root / "params.yaml").oracle.kind == "simulated"
        threading.Thread(target=context.run, args=(_tend, root, srv.url, simulated), daemon=True, name="tend").start()
        runner = Runner(pause_on_shutdown=False, query_seconds=poll_seconds)
        for ref, options in deployments(root, flow_refs, name):
            runner.add_flow(load_flow(ref), **options, entrypoint_type=EntrypointType.MODULE_PATH)
        fork_flow_runs(root)
        try:
            asyncio.run(runner.start())
        except (KeyboardInterrupt, TerminationSignal):
            print("worker stopped", flush=True)


def _tend(root: Path, url: str, simulated: bool) -> None:
    """Every `TEND_SECONDS`, `rounds.tend`: restart the local server if it died, retry a lost round run;
    every `ANSWER_SECONDS`, `rounds.answer_simulated`: label and approve a round waiting for the simulated
    annotator (whose validation is warmed up first)."""
    engine = PrefectEngine()
    if simulated:
        warm_up()  # the annotator's batches are validated here: Great Expectations imported before round 1
    for tick in itertools.count(1):
        time.sleep(ANSWER_SECONDS)
        try:
            done = rounds.tend(engine, root, url) if tick % round(TEND_SECONDS / ANSWER_SECONDS) == 0 else []
            for line in done + [answer for answer in [rounds.answer_simulated(engine, root)] if answer]:
                print(line, flush=True)
        except Exception as exc:  # the server may be down or restarting: look again next time
            print(f"checking the server and the round run: {type(exc).__name__}: {exc}", flush=True)


def start(root: Path, flow_refs: Sequence[str] = (), name: str | None = None, *, poll_seconds: float = POLL_SECONDS,
          env: Mapping[str, str] | None = None, timeout: float = 120.0) -> workers.Worker:
    """Start `serve` as a detached process (the running worker instead when there is one), then wait
    until it has registered (or, already running, has) every deployment with its current schedule and
    parameters. Call inside `connect`. `env`: extra environment variables for the worker and its runs."""
    root = Path(root).resolve()
    srv = server.status(root)
    if srv is None:
        raise server.ServerError(f"no Prefect server is running for {root}")
    command = [sys.executable, "-m", "flows.worker", "--workspace", str(root), "--poll-seconds", str(poll_seconds)]
    command += [arg for ref in flow_refs for arg in ("--flow", ref)] + (["--name", name] if name else [])
    with get_client(sync_client=True) as client:
        check_campaign_name(client, root, flow_refs)
    since = datetime.now(timezone.utc)
    worker = workers.start(root, command, {**os.environ, **server.client_env(root, srv), **(env or {})})
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        for ref, options in deployments(root, flow_refs, name):
            full_name = f"{load_flow(ref).name}/{options['name']}"
            while not _registered(client, full_name, since if worker.started else None):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker did not register {full_name!r} within {timeout:.0f} s "
                                       f"(see {worker.log})")
                time.sleep(0.5)
    return worker


def _registered(client: SyncPrefectClient, name: str, since: datetime | None) -> bool:
    try:
        deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        return False
    return since is None or deployment.updated >= since


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.worker", description="Serve a campaign's deployments.")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS)
    parser.add_argument("--flow", dest="flows", action="append", default=[],
                        help="module:attribute of a flow to serve instead of the campaign's (repeatable)")
    parser.add_argument("--name", help="deployment name of the --flow flows (default: the campaign's name)")
    args = parser.parse_args(argv)
    serve(args.workspace, args.flows, args.name, poll_seconds=args.poll_seconds)


if __name__ == "__main__":
    main()
