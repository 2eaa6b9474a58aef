"""The worker of a campaign workspace: serves its three deployments (the round, with the params'
`schedule.cron`, the simulated annotator and the campaign) and executes their runs, each in a process
of its own.

On start it retries the campaign's round run if a worker died under it (`control.recover`). Run it
as `activeseg worker` (foreground), `activeseg worker --background` (`start`, pid file
`.prefect/worker.pid`, log `.prefect/worker.log`; `activeseg worker stop`), or in a container as
`python -m flows.worker --workspace /campaigns/NAME`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from prefect import serve as prefect_serve
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound

from activeseg.orchestration import processes
from activeseg.orchestration import server
from activeseg.core.config import load_config
from flows import control, runtime

FLOWS = (("flows.al_round:al_round", True), ("flows.annotator:simulated_annotator", False),
         ("flows.campaign:campaign", False))
"""(flow, whether the params' schedule applies to it)."""
FLOW_NAMES = (control.ROUND_FLOW, control.ANNOTATOR_FLOW, control.CAMPAIGN_FLOW)


def deployments(root: Path) -> list[RunnerDeployment]:
    """The campaign's deployments, named after it, with the workspace as their default parameter."""
    root = Path(root).resolve()
    cron = load_config(root / "params.yaml").schedule.cron
    return [runtime.deployment(ref, control.campaign_name(root), cron=cron if scheduled else None,
                               parameters={"workspace": str(root)})
            for ref, scheduled in FLOWS]


def serve(root: Path, *, poll_seconds: float = runtime.POLL_SECONDS) -> None:
    """Serve the campaign's deployments in this process until SIGTERM/SIGINT."""
    with control.connect(root) as srv:
        os.environ.update(server.client_env(root, srv))  # inherited by the flow-run processes
        retried = control.recover(root)
        if retried:
            print(retried, flush=True)
        prefect_serve(*deployments(root), pause_on_shutdown=False, print_starting_message=False,
                      query_seconds=poll_seconds)


def start(root: Path, *, poll_seconds: float = runtime.POLL_SECONDS,
          env: dict[str, str] | None = None) -> runtime.Worker:
    """Start `serve` as a detached process; the running worker instead when there is one.

    Call inside `control.connect`. `env`: extra environment variables for the worker and its runs.
    """
    root = Path(root).resolve()
    home = server.prefect_home(root)
    pid_file, log = home / "worker.pid", home / "worker.log"
    pid = processes.read_pid(pid_file)
    if pid is not None:
        return runtime.Worker(pid, log, started=False)
    srv = server.status(root)
    if srv is None:
        raise server.ServerError(f"no Prefect server is running for {root}")
    command = [sys.executable, "-m", "flows.worker", "--workspace", str(root), "--poll-seconds", str(poll_seconds)]
    child_env = {**os.environ, **server.client_env(root, srv), **(env or {})}
    process = processes.spawn(command, pid_file=pid_file, log_file=log, env=child_env)
    return runtime.Worker(process.pid, log, started=True)


def start_and_wait(root: Path, *, poll_seconds: float = runtime.POLL_SECONDS, env: dict[str, str] | None = None,
                   timeout: float = 120.0) -> runtime.Worker:
    """`start`, then wait until the worker has registered (or, if it was already running, has) every
    deployment of the campaign, with its current schedule and parameters."""
    since = datetime.now(timezone.utc)
    started = start(root, poll_seconds=poll_seconds, env=env)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        for flow_name in FLOW_NAMES:
            name = control.deployment_name(flow_name, root)
            while not _registered(client, name, since if started.started else None):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker did not register {name!r} within {timeout:.0f} s "
                                       f"(see {started.log})")
                time.sleep(0.5)
    return started


def _registered(client: SyncPrefectClient, name: str, since: datetime | None) -> bool:
    try:
        deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        return False
    return since is None or deployment.updated >= since


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.worker", description="Serve a campaign's deployments.")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--poll-seconds", type=float, default=runtime.POLL_SECONDS)
    args = parser.parse_args(argv)
    serve(args.workspace, poll_seconds=args.poll_seconds)


if __name__ == "__main__":
    main()
