"""A campaign: rounds back to back until a stop rule holds.

The stop rules (checked before every round; the first that holds ends the campaign) are in
:mod:`activeseg.loop.stop_rules`, applied to the workspace by :func:`activeseg.workspace.audit.stop_reason`.

The campaign flow starts each round as a run of the round deployment (not as a subflow: Prefect
cannot suspend a subflow) and waits for it. While a round waits for labels the round holds no process, but the campaign flow
run does (a small poller): for campaigns whose labels take days, a schedule (`schedule.cron`) or
`activeseg round start` per round needs no process at all in between.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.deployments import run_deployment
from prefect.states import Completed, State

from activeseg.core.util import round_name
from activeseg.orchestration.guard import active_run
from activeseg.orchestration.names import ROUND_FLOW, SKIPPED, campaign_name, deployment_name
from activeseg.orchestration.rounds import wait_for_round
from activeseg.workspace import Workspace
from activeseg.workspace.audit import stop_reason
from flows.engine import PrefectEngine

POLL_SECONDS = 0.5
"""How often the campaign looks whether its round run has ended (the next round starts no later)."""


@flow(name="campaign", persist_result=True, result_serializer="json", log_prints=True)
def campaign(workspace: str, rounds: int | None = None) -> State:
    """Rounds until a stop rule holds: `rounds` more rounds (default: up to params `rounds` in all).

    A round that is already running or waiting when the campaign starts is waited for and counts.
    Ends Completed with the stop rule that held as its message.
    """
    root = Path(workspace)
    first = Workspace.open(root).current_round()
    last = first + rounds - 1 if rounds else Workspace.open(root).cfg.rounds
    done = []
    engine = PrefectEngine()
    while (reason := stop_reason(Workspace.open(root), last)) is None:
        active = active_run(engine, root)
        if active:
            print(f"round {active[0].round_number} is already under way (flow run {active[0].flow_run_id}): "
                  "waiting for it")
            wait_for_round(engine, active[0].run_id, until_final=True, timeout=float("inf"))
            continue
        n = Workspace.open(root).current_round()
        run = run_deployment(deployment_name(ROUND_FLOW, root),
                             parameters={"workspace": str(root), "round": n, "trigger": "campaign"},
                             tags=[campaign_name(root), round_name(n)], timeout=None,
                             poll_interval=POLL_SECONDS, as_subflow=False)  # a subflow cannot suspend
        if run.state.name == SKIPPED:
            continue
        if not run.state.is_completed():
            raise RuntimeError(f"round {n} ended {run.state.name}: {run.state.message or 'no message'} "
                               f"(flow run {run.id})")
        done.append(n)
        print(f"round {n} completed (flow run {run.id})")
    print(f"campaign stops: {reason}; rounds run: {done or 'none'}")
    return Completed(message=f"stopped: {reason}")
