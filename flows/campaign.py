"""A campaign: rounds back to back until a stop rule holds.

Stop rules (checked before every round; the first that holds ends the campaign):

- rounds: the last round is done (`rounds` in params, the campaign's total; `activeseg campaign run
  --rounds N`: N more rounds);
- label budget: `campaign.budget_pixels` pixels, or `campaign.budget_fraction` of the training pool,
  are labeled (the initial set included);
- Dice plateau: over the last `campaign.plateau_rounds` rounds the best test Dice gained less than
  `campaign.plateau_delta` on the best of the rounds before.

The campaign flow starts each round as a run of the round deployment (not as a subflow: Prefect
cannot suspend a subflow) and waits for it. While a round waits for labels the round holds no process, but the campaign flow
run does (a small poller): for campaigns whose labels take days, a schedule (`schedule.cron`) or
`activeseg round start` per round needs no process at all in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.deployments import run_deployment
from prefect.states import Completed, State

from activeseg.core.config import CampaignConfig
from activeseg.core.util import round_name
from activeseg.workspace import Workspace
from flows import control

POLL_SECONDS = 2


def stop_rule(rules: CampaignConfig, next_round: int, last_round: int, revealed_pixels: int, pool_pixels: int,
              dice: list[float]) -> str | None:
    """Why the campaign stops before `next_round`, or None to go on.

    `dice`: test Dice of every finished round, in order. Plateau: with p = `rules.plateau_rounds` > 0
    and more than p rounds done, stop when max(last p) - max(before them) < `rules.plateau_delta`.
    """
    if next_round > last_round:
        return f"round limit: round {last_round} was the last"
    if rules.budget_pixels is not None and revealed_pixels >= rules.budget_pixels:
        return f"label budget: {revealed_pixels} pixels labeled, budget {rules.budget_pixels}"
    if rules.budget_fraction is not None and revealed_pixels >= rules.budget_fraction * pool_pixels:
        return (f"label budget: {revealed_pixels / pool_pixels:.1%} of the training pool labeled, "
                f"budget {rules.budget_fraction:.1%}")
    p = rules.plateau_rounds
    if p and len(dice) > p:
        recent, before = max(dice[-p:]), max(dice[:-p])
        if recent - before < rules.plateau_delta:
            return (f"Dice plateau: best test Dice of the last {p} rounds {recent:.4f} gained {recent - before:+.4f} "
                    f"on {before:.4f}, less than {rules.plateau_delta}")
    return None


def learning_curve(ws: Workspace) -> list[dict[str, Any]]:
    """One row per evaluated round: labeled pixel fraction it trained on, its val and test Dice."""
    rows = []
    for event in ws.ledger.events(type="round_evaluated"):
        trained = ws.record(event.round).get("trained", {})
        rows.append({"round": event.round, "labeled_pixel_fraction": event.data["labeled_pixel_fraction"],
                     "val_dice": trained.get("val_dice"), "dice": event.data["metrics"]["dice"],
                     "split": event.data["split"]})
    return rows


def stop_reason(ws: Workspace, last_round: int) -> str | None:
    """The campaign's stop rule (`stop_rule`) on the workspace's state: why it stops, or None."""
    state = ws.label_state()
    dice = [row["dice"] for row in learning_curve(ws)]
    return stop_rule(ws.cfg.campaign, ws.current_round(), last_round, state.revealed_pixels(), state.total_pixels(),
                     dice)


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
    while (reason := stop_reason(Workspace.open(root), last)) is None:
        active = control.active_run(root)
        if active:
            print(f"round {active[0].round} is already under way (flow run {active[0].flow_run_id}): waiting for it")
            control.wait_for_round(active[0].run_id, until_final=True, timeout=float("inf"))
            continue
        n = Workspace.open(root).current_round()
        run = run_deployment(control.deployment_name(control.ROUND_FLOW, root),
                             parameters={"workspace": str(root), "round": n, "trigger": "campaign"},
                             tags=[control.campaign_name(root), round_name(n)], timeout=None,
                             poll_interval=POLL_SECONDS, as_subflow=False)  # a subflow cannot suspend
        if run.state.name == control.SKIPPED:
            continue
        if not run.state.is_completed():
            raise RuntimeError(f"round {n} ended {run.state.name}: {run.state.message or 'no message'} "
                               f"(flow run {run.id})")
        done.append(n)
        print(f"round {n} completed (flow run {run.id})")
    print(f"campaign stops: {reason}; rounds run: {done or 'none'}")
    return Completed(message=f"stopped: {reason}")
