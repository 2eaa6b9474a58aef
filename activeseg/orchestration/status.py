"""The campaign at a glance: the round in progress, the state of its round run, the open label
requests, what to do next, the learning curve and whether a stop rule holds."""

from __future__ import annotations

from typing import Any

from activeseg.core.image_kind import detect_preset
from activeseg.workspace.audit import control_estimates, learning_curve, stop_reason
from activeseg.orchestration import server, workers
from activeseg.orchestration.engine import RunEngine, RunState
from activeseg.orchestration.guard import PHASES, Claim, read_claim
from activeseg.orchestration.names import campaign_name
from activeseg.workspace import Workspace

EXPIRED_MESSAGES = ("The flow was paused and never resumed.", "The flow was resuming and never resumed.")
NO_SERVER = "no Prefect server is running for this workspace: start one with `activeseg server start`"


def status(engine: RunEngine | None, ws: Workspace) -> dict[str, Any]:
    """The campaign's state (JSON-able): current round, the phase of its round run (idle, running,
    awaiting_labels, completed, failed, model_collapsed: failed because its model collapsed; unknown while
    no server runs: `engine` None) with the flow run's id, state and since when, the staged batch that
    waits for approval (the hash the approval form needs), the open label requests, a hint, the round's
    collapsed model (or None), the learning curve, the control estimates per round (``controls``:
    :func:`activeseg.workspace.audit.control_estimates`), whether a stop rule holds, the augmentation preset
    and the current user's roles (``you``: :func:`current_user`)."""
    claim = read_claim(ws.root)
    state = engine.state(claim.run_id) if claim and engine else None
    collapsed = _collapsed(ws, claim.round_number if claim else ws.current_round())
    phase = _phase(ws, claim, state, engine is not None)
    if phase == "failed" and collapsed:
        phase = "model_collapsed"
    srv = server.status(ws.root)
    run = None
    if claim:
        run = {"id": claim.flow_run_id, "round": claim.round_number, "trigger": claim.trigger, "claimed": claim.since,
               "state": state.name if state else "unknown", "type": state.type if state else None,
               "message": state.message if state else None, "since": state.since.isoformat() if state else None}
    open_requests = pending(ws)
    staged = next((item for item in open_requests if item["staged"]), None)
    batch = {"round": staged["round"], "sha256": staged["staged"]["batch_sha256"],
             "annotator": staged["staged"]["annotator"], "files": staged["staged"]["files"],
             "reviewed_unchanged": staged["staged"]["reviewed_unchanged"]} if staged else None
    initial = ws.record(0).initial
    return {"campaign": campaign_name(ws.root), "workspace": str(ws.root), "strategy": ws.cfg.query.strategy,
            "start": initial.strategy if initial else None, "oracle": ws.cfg.oracle.kind, "server": srv.url if srv else None, "current_round": ws.current_round(),
            "round": claim.round_number if claim else None, "state": phase, "flow_run": run, "batch": batch,
            "hint": _hint(ws, phase, claim, state, batch, srv), "pending": open_requests,
            "schedule": ws.cfg.schedule.cron, "worker_pid": workers.worker_pid(ws.root),
            "collapsed": collapsed, "stop": stop_reason(ws, ws.cfg.rounds), "rounds": learning_curve(ws),
            "controls": control_estimates(ws),
            "labelstudio": labelstudio_progress(ws, open_requests), "augment": augment_preset(ws),
            "you": current_user(ws)}


def current_user(ws: Workspace) -> dict[str, Any]:
    """The roles of the current user (the OS user name, whom ``--by`` defaults to) in the access file:
    ``{name, roles, keys}`` (the number of their keys); ``roles`` None (with a ``note``) when they are not
    in it, or it cannot be read."""
    from activeseg.workspace.access import AccessError, os_user

    name = os_user()
    try:
        person = ws.access().person(name)
    except AccessError as exc:
        return {"name": name, "roles": None, "keys": 0, "note": str(exc)}
    return {"name": name, "roles": list(person.roles), "keys": len(person.keys)}


def augment_preset(ws: Workspace) -> dict[str, str]:
    """The augmentation preset training uses (``train.augment.preset``; auto: detected from the dataset) and why."""
    preset = ws.cfg.train.augment.preset
    if preset != "auto":
        return {"preset": preset, "reason": "train.augment.preset in params.yaml"}
    detected = detect_preset(ws.dataset)
    return {"preset": detected.preset, "reason": detected.reason}


def labelstudio_progress(ws: Workspace, open_requests: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """With ``oracle.kind: labelstudio``: for each open request, how many of its Label Studio tasks are done
    (``round, project, done, tasks, url``; ``error`` when the server cannot say); else None."""
    if ws.cfg.oracle.kind != "labelstudio":
        return None
    from activeseg.workspace.errors import WorkspaceError
    from activeseg.workspace.exchange.formats.live import progress

    found = []
    for item in open_requests:
        try:
            found.append(progress(ws, item["round"]))
        except WorkspaceError as exc:
            found.append({"round": item["round"], "error": str(exc)})
    return found


def control_line(row: dict[str, Any]) -> str:
    """A round's control check in words: "round 2: Dice on queried 0.61, on controls 0.84; pool estimate 0.84
    [0.78, 0.90] from 6 controls" (a row of :func:`activeseg.workspace.audit.control_estimates`; two decimals:
    the interval of a handful of regions is wider than the third). A single control gives no interval."""
    queried = "-" if row["queried_dice"] is None else f"{row['queried_dice']:.2f}"
    interval = "" if row["low"] is None else f" [{row['low']:.2f}, {row['high']:.2f}]"
    controls = f"{row['n_controls']} control" + ("s" if row["n_controls"] != 1 else "")
    return (f"round {row['round']}: Dice on queried {queried}, on controls {row['control_dice']:.2f}; "
            f"pool estimate {row['control_dice']:.2f}{interval} from {controls}")


def headline(result: dict[str, Any]) -> str:
    """Where the campaign is, in words: "round 2 finished, round 3 not started", "round 3: awaiting_labels"."""
    current, phase = result["current_round"], result["state"]
    if phase in ("idle", "completed") or (result["round"] is not None and result["round"] < current):
        return (f"round {current - 1} finished, " if current > 1 else "") + f"round {current} not started"
    return f"round {result['round']}: {phase}"


def _phase(ws: Workspace, claim: Claim | None, state: RunState | None, connected: bool) -> str:
    """The phase of the campaign's last round run; without a server, "completed" once its round is
    closed and "unknown" while it is the round in progress."""
    if claim is None:
        return "idle"
    if not connected:
        return "completed" if claim.round_number < ws.current_round() else "unknown"
    return PHASES[state.type] if state else "idle"


def _collapsed(ws: Workspace, round_number: int) -> dict[str, Any] | None:
    """The round's trained model when it collapsed and the round has not queried with it: round, why
    and val Dice; else None."""
    record = ws.record(round_number)
    trained = record.trained
    if trained is None or trained.collapsed is None or record.queried is not None:
        return None
    return {"round": round_number, "reason": trained.collapsed, "val_dice": trained.val_dice}


def pending(ws: Workspace) -> list[dict[str, Any]]:
    """The open label requests, each with the ids of its regions."""
    return [{**item, "region_ids": [r.id for r in ws.record(item["round"]).queried.regions]}
            for item in ws.pending()]


def _hint(ws: Workspace, phase: str, claim: Claim | None, state: RunState | None, batch: dict[str, Any] | None,
          srv: server.Server | None) -> str | None:
    if phase == "unknown":
        return f"the state of round {claim.round_number}'s flow run is unknown while no server runs: {NO_SERVER}"
    if phase == "awaiting_labels" and claim:
        n = claim.round_number
        if batch:
            return (f"batch {batch['sha256']} staged: approve it with `activeseg approve --round {n} --by NAME` "
                    f"(or in the Prefect UI's form with this batch hash), or `activeseg reject --round {n} --by NAME "
                    "--reason TEXT`")
        if ws.cfg.oracle.kind == "labelstudio":
            return (f"waiting for the labels of round {n} in Label Studio: `activeseg labels pull --round {n}` "
                    f"imports them once every task is done, then `activeseg approve --round {n} --by NAME`")
        return (f"waiting for the labels of round {n}: `activeseg labels submit DIR --annotator NAME --round {n}`, "
                f"then `activeseg approve --round {n} --by NAME`")
    if phase == "model_collapsed":
        return (f"round {claim.round_number}'s model collapsed and the round stopped before the query: set "
                "query.allow_collapsed_model: true to query with it anyway, then `activeseg round start`")
    if phase == "failed" and claim and state:
        if state.message in EXPIRED_MESSAGES:
            return (f"round {claim.round_number} got no approval within oracle.timeout_hours = "
                    f"{ws.cfg.oracle.timeout_hours:g} h and stopped waiting; its label request stays open. "
                    "`activeseg round start` runs the round again (finished steps are reused) and waits anew.")
        return f"round {claim.round_number} failed: `activeseg round start` runs it again (finished steps are reused)"
    no_worker = srv is None or (not srv.external and workers.worker_pid(ws.root) is None)
    if phase == "running" and no_worker:
        return "no worker is running: start one with `activeseg worker --background`"
    if phase in ("idle", "completed") and batch:
        n = batch["round"]
        return (f"batch {batch['sha256']} staged for round {n}: `activeseg approve --round {n} --by NAME` takes it "
                f"in, `activeseg reject --round {n} --by NAME --reason TEXT` sends it to quarantine")
    if phase in ("idle", "completed") and stop_reason(ws, ws.cfg.rounds):
        return (f"the campaign is finished ({stop_reason(ws, ws.cfg.rounds)}); `activeseg round start --force` "
                f"starts round {ws.current_round()} anyway")
    if phase in ("idle", "completed"):
        steps = ["`activeseg server start`"] * (srv is None) + ["`activeseg worker --background`"] * no_worker
        return f"start round {ws.current_round()} with " + ", ".join([*steps, "`activeseg round start`"])
    return None
