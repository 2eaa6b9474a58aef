"""The control check of a round whose request held controls (:mod:`activeseg.loop.control`), made when its
labels are accepted, before any model trains on them: the model that chose the round's regions (the query's
checkpoint, still ``model/model.pt`` until the next round trains) predicts the strategy's picks and the
controls, each prediction is scored against the accepted mask, and the controls' mean Dice estimates the
model's Dice on the pool the strategy left (:class:`~activeseg.workspace.records.ControlCheck`; MLflow run
``round-NNN-control`` when tracking is on). PyTorch loads only for a round with controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activeseg.core.data import read_mask
from activeseg.core.util import round_name, sha256_file
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.records import ControlCheck, RoundRecord


def control_check(ws: WorkspaceCore, record: RoundRecord, labels: Path) -> ControlCheck | None:
    """The round's control check against the accepted masks in ``labels`` (``<id>.png`` per requested
    region); None when its request held no controls. The query's model must still be at its place: a
    different checkpoint there is an error (as for the query itself)."""
    queried = record.queried
    if queried is None or not queried.controls:
        return None
    from activeseg.loop.control import pool_estimate, region_dices
    from activeseg.model.network import load_checkpoint, pick_device

    n, checkpoint = record.round, ws.root / record.trained.checkpoint
    if not checkpoint.is_file() or sha256_file(checkpoint) != queried.checkpoint_sha256:
        raise WorkspaceError(f"{checkpoint}: not the model that queried round {n} (its hash differs; dvc checkout?); "
                             "the round's control regions are scored with that model before its labels are taken in")
    device = pick_device(ws.cfg.train.device, ws.cfg.train.threads)
    model, _ = load_checkpoint(checkpoint, device)
    picks, controls = queried.picks(), queried.control_regions()
    scored = [*picks, *controls]
    truths = [read_mask(labels / f"{r.id}.png", ws.cfg.data.classes) for r in scored]
    dices = dict(zip([r.id for r in scored], region_dices(model, ws.dataset, [r.region() for r in scored], truths,
                                                          device)))
    mean, low, high = pool_estimate([dices[r.id] for r in controls])
    check = ControlCheck(round=n, checkpoint_sha256=queried.checkpoint_sha256,
                         queried_dice=float(np.mean([dices[r.id] for r in picks])) if picks else None,
                         control_dice=mean, low=low, high=high, n_queried=len(picks), n_controls=len(controls),
                         region_dice=dices, mlflow_run_id=None)
    return check.model_copy(update={"mlflow_run_id": _log(ws, check)})


def _log(ws: WorkspaceCore, check: ControlCheck) -> str | None:
    """The check's numbers in an MLflow run of their own (none while tracking is off); its id."""
    params = {"round": check.round, "checkpoint_sha256": check.checkpoint_sha256, "n_queried": check.n_queried,
              "n_controls": check.n_controls, "control_fraction": ws.cfg.query.control_fraction}
    with ws.tracker().run(f"{round_name(check.round)}-control", params, {"activeseg.step": "control"}) as run:
        run.log_metrics({"queried_dice": check.queried_dice, "control_dice": check.control_dice,
                         "pool_dice_low": check.low, "pool_dice_high": check.high})
    return run.run_id
