"""The query step of a round: the strategy's picks on its share of the budget and the control regions on the
rest, the query maps, and the label request published to the object store (:func:`query`). It writes its outputs
first and its record entry last (:func:`activeseg.workspace.base.round_step`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from activeseg.core.partition import Region
from activeseg.core.pool import round_budget
from activeseg.core.util import canonical_json, read_json, round_name, sha256_file, sha256_text, utc_now, write_json
from activeseg.workspace.base import WorkspaceCore, round_step
from activeseg.workspace.errors import ModelCollapsed, WorkspaceError
from activeseg.workspace.exchange.layout import round_prefix
from activeseg.workspace.exchange.requests import publish_request
from activeseg.workspace.pretraining import save_embeddings
from activeseg.workspace.query_maps import maps_path, save_query_maps
from activeseg.workspace.records import Queried, RoundRecord, Trained
from activeseg.workspace.state import label_state
from activeseg.workspace.steps import trained_model

STAGES_BEFORE_LABELS = ("validate", "partition", "pretrain", "train", "query")
"""The stages of a round before its labels arrive: recorded in dvc.lock together, by the query step (one
``dvc commit`` instead of four; none of their deps changes in between, and the round is committed to git
only when it closes)."""


def query(ws: WorkspaceCore, round_number: int | None = None) -> Queried:
    """Select the round's regions with the trained model and publish the label request (:func:`_query`);
    with ``oracle.kind: labelstudio`` also fill the campaign's Label Studio project with the round's tasks
    and predictions (each call imports the tasks missing there, so a call after an outage completes it)."""
    queried = _query(ws, round_number)
    if ws.cfg.oracle.kind == "labelstudio" and not ws.in_dvc:
        from activeseg.workspace.exchange.formats.live import publish

        publish(ws, queried.round)
    return queried


@round_step("queried")
def _query(ws: WorkspaceCore, record: RoundRecord) -> Queried:
    """Select the round's regions with the trained model and publish the label request."""
    n, trained = record.round, trained_model(record)
    if trained.collapsed and not ws.cfg.query.allow_collapsed_model:
        raise ModelCollapsed(f"round {n}: model collapsed ({trained.collapsed}, val Dice {trained.val_dice:.4f}); "
                             "the round stops before the query. Set query.allow_collapsed_model: true in "
                             "params.yaml to query with it anyway")
    model_sha = trained.checkpoint_sha256
    checkpoint = ws.root / "model" / "model.pt"
    if not checkpoint.is_file() or sha256_file(checkpoint) != model_sha:
        raise WorkspaceError(f"{checkpoint}: not the model trained in round {n} (its hash differs; dvc checkout?)")
    path = ws.root / "query" / "selection.json"
    selection = read_json(path) if path.is_file() else None
    if not (selection and (selection["round"], selection["checkpoint_sha256"]) == (n, model_sha)):
        selection = _select(ws, n, trained, checkpoint)
        picked = [Region.from_dict(r) for r in selection["regions"]]
        save_query_maps(ws.cfg, ws.dataset, picked, checkpoint, maps_path(ws.root, n), ws.cfg.train.seed * 1000 + n)
        write_json(path, selection)
    classes = ws.cfg.data.classes
    meta = {"strategy": selection["strategy"], "created": selection["created"], "classes": classes,
            "checkpoint_sha256": model_sha,
            "masks": "one PNG per region, named <id>.png, sized label_size, "
                     + ("values 0/255 (or 0/1)" if classes == 2 else "values = class ids")}
    request = f"{ws.store.url}/{round_prefix('requests', n)}"
    queried = Queried.model_validate({**selection, "request": request, "manifest_sha256": ""})
    manifest = publish_request(ws.store, n, [r.model_dump() for r in queried.published()], ws.dataset, meta)
    manifest_sha = sha256_text(canonical_json(manifest))
    _log_query(ws, n, selection, trained, manifest_sha)
    # a workspace made by an older version lacks the newer stages (pretrain) in its dvc.yaml
    ws.vcs.stage_done(*[stage for stage in STAGES_BEFORE_LABELS if stage in ws.vcs.stages()])
    return queried.model_copy(update={"manifest_sha256": manifest_sha})


def _log_query(ws: WorkspaceCore, n: int, selection: dict[str, Any], trained: Trained, manifest_sha: str) -> None:
    """Ledger ``queried``, ``pseudo_labeled`` (when the strategy made pseudo-labels) and ``request_published``."""
    model_sha, ids = trained.checkpoint_sha256, [r["id"] for r in selection["regions"]]
    ws.ledger.append("queried", n, ws.actor, {
        "regions": ids, "scores": [r["score"] for r in selection["regions"]],
        "costs": [r["cost"] for r in selection["regions"]], "strategy": selection["strategy"],
        "options": selection["options"], "budget": selection["budget"],
        "checkpoint_sha256": model_sha, "mlflow_run_id": trained.mlflow_run_id,
        **{key: selection[key] for key in ("controls", "details") if selection.get(key)}}, once_key=model_sha)
    pseudo = selection["pseudo"]
    if pseudo:
        ws.ledger.append("pseudo_labeled", n, ws.actor, {
            "regions": [p["id"] for p in pseudo["regions"]], "model": model_sha,
            "mlflow_run_id": trained.mlflow_run_id, "origin": pseudo["origin"], "replace": pseudo["replace"]},
            once_key=model_sha)
    request = round_prefix("requests", n)
    ws.ledger.append("request_published", n, ws.actor, {
        "regions": ids, "store": ws.store.url, "manifest": request + "manifest.json",
        "manifest_sha256": manifest_sha}, once_key=manifest_sha)


def _select(ws: WorkspaceCore, n: int, trained: Trained, checkpoint: Path) -> dict[str, Any]:
    """The query (query/selection.json): the strategy's picks on its share of the round's budget, then the
    controls drawn on the rest (:mod:`activeseg.loop.control`), the pseudo-labels saved to pseudo/. With
    pretraining the pool's embeddings are stored first (query/embeddings.npz) and the strategy sees them."""
    from activeseg.loop.control import control_rng, draw_controls, split_budget, strategy_settings
    from activeseg.loop.selection import select_regions
    from activeseg.model.pool_scoring import local_shards
    from activeseg.strategies import get_strategy

    cfg, name, state = ws.cfg, ws.cfg.query.strategy, label_state(ws)
    budget = round_budget(cfg, state)
    strategy_budget, control_budget = split_budget(budget, cfg.query.control_fraction)
    selection, ctx = select_regions(strategy_settings(cfg, strategy_budget), name, ws.dataset, ws.split(), state,
                                    ws.regions(), checkpoint, n, cfg.train.seed, ws.root / "cache",
                                    model_id=trained.checkpoint_sha256, run_shards=ws.run_shards or local_shards,
                                    pool_embeddings=save_embeddings(ws), first_round=1)
    if not selection.indices:
        raise WorkspaceError(f"round {n}: nothing left to query (every region of the pool is labeled)")
    controls, control_costs = draw_controls(ctx, selection.indices, control_budget, control_rng(cfg.train.seed, n))
    picked = [{**ctx.candidates[i].to_dict(), "cost": c, "score": s}
              for i, s, c in zip([*selection.indices, *controls], [*selection.scores, *[None] * len(controls)],
                                 [*selection.costs, *control_costs])]
    pseudo = None
    if selection.pseudo:
        file = f"pseudo/{round_name(n)}.npz"
        (ws.root / "pseudo").mkdir(exist_ok=True)
        np.savez_compressed(ws.root / file, **{region.id: mask for region, mask in selection.pseudo})
        pseudo = {"file": file, "regions": [region.to_dict() for region, _ in selection.pseudo],
                  "origin": selection.pseudo_origin or round_name(n), "replace": selection.replace_pseudo}
    options = get_strategy(name, cfg.query.options.get(name)).options.model_dump()
    return {"round": n, "created": utc_now(), "strategy": name, "options": options, "budget": budget,
            "spent": selection.spent + sum(control_costs), "checkpoint_sha256": trained.checkpoint_sha256,
            "mlflow_run_id": trained.mlflow_run_id, "regions": picked, "pseudo": pseudo,
            "controls": [ctx.candidates[i].id for i in controls] or None, "details": selection.details or None}
