"""The steps of a round: validate, partition, pretrain (once per campaign: :mod:`.pretraining`), train, query (publishes the
label request), evaluate (closes the round). Each writes its outputs first and its record entry last (:func:`round_step`), so a
finished step returns its recorded result and an interrupted one completes when called again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from activeseg.core.config import from_dict
from activeseg.core.partition import Region
from activeseg.core.pool import pool_regions, round_budget
from activeseg.core.util import canonical_json, read_json, round_name, sha256_file, sha256_text, utc_now, write_json
from activeseg.metrics import METRICS
from activeseg.workspace.base import WorkspaceCore, round_step
from activeseg.workspace.errors import ModelCollapsed, WorkspaceError
from activeseg.workspace.exchange.layout import round_prefix
from activeseg.workspace.exchange.requests import publish_request
from activeseg.workspace.exchange.intake import label_targets
from activeseg.workspace.ledger import region_stem
from activeseg.workspace.pretraining import pretrain, save_embeddings
from activeseg.workspace.records import Evaluated, Queried, RoundRecord, Trained
from activeseg.workspace.query_maps import maps_path, save_query_maps
from activeseg.workspace.state import label_state
from activeseg.workspace.validation import ValidationFailed, ValidationReport, dataset_fingerprint, validate_dataset


STAGES_BEFORE_LABELS = ("validate", "partition", "pretrain", "train", "query")
"""The stages of a round before its labels arrive: recorded in dvc.lock together, by the query step (one
``dvc commit`` instead of four; none of their deps changes in between, and the round is committed to git
only when it closes)."""


def check_frozen_data(ws: WorkspaceCore) -> None:
    """Refuse a ``params.yaml`` whose ``data`` section (dataset, classes, split, seed, synthetic data)
    differs from the one committed by init (tag ``round-000``): the dataset and its split are frozen
    for the whole campaign. Every other key (``train.lr``, ...) may change between rounds."""
    initial = from_dict(yaml.safe_load(ws.git("show", f"{round_name(0)}:params.yaml")) or {}).flat()
    current = ws.cfg.flat()
    changed = [key for key in sorted(initial) if key.startswith("data.") and initial[key] != current.get(key)]
    if changed:
        details = "; ".join(f"{key}: {initial[key]!r} at init, now {current.get(key)!r}" for key in changed)
        raise WorkspaceError(f"{ws.root / 'params.yaml'}: {details}. The dataset and its split are frozen when the "
                             "campaign starts; restore these values (or start a new campaign with activeseg init)")


def check_dataset(ws: WorkspaceCore) -> ValidationReport:
    """The dataset suite on data/ with the frozen split, written to validation/dataset.json with its
    inputs' fingerprint; raises :class:`ValidationFailed` naming every file and what is wrong with it.
    A passed report whose fingerprint is the current one (nothing it depends on changed:
    :func:`~activeseg.workspace.validation.dataset.dataset_fingerprint`) is reused, as DVC skips a stage
    whose deps did not change: the round's process then never imports Great Expectations."""
    frozen = ws.ledger.last("split_frozen")
    queried = {region_stem(r) for e in ws.ledger.events(type="queried") for r in e.data["regions"]}
    intact = frozen is not None and frozen.data["split_sha256"] == sha256_file(ws.root / "split.json")
    inputs = {"classes": ws.cfg.data.classes, "patch_side": ws.cfg.partition.side, "split": ws.split(),
              "split_intact": intact, "queried_stems": queried, "slides": ws.cfg.data.slides}
    fingerprint = dataset_fingerprint(ws.root / "data", **inputs)
    path = ws.root / "validation" / "dataset.json"
    last = read_json(path) if path.is_file() else {}
    if last.get("success") and last.get("fingerprint") == fingerprint:
        report = ValidationReport.from_dict(last)
    else:
        report = validate_dataset(ws.root / "data", **inputs)
    write_json(path, {**report.to_dict(), "fingerprint": fingerprint})
    if not report.success:
        raise ValidationFailed("dataset data/", report)
    return report


def validate(ws: WorkspaceCore) -> dict[str, Any]:
    """The frozen ``data`` settings (:func:`check_frozen_data`) and the dataset suite
    (:func:`check_dataset`) as the ``validate`` stage."""
    check_frozen_data(ws)
    check_dataset(ws)
    return {"success": True, "images": len(ws.dataset.stems), "report": "validation/dataset.json"}


def write_pool(ws: WorkspaceCore) -> Path:
    """Write the training pool's candidate regions to pool/regions.json."""
    path = ws.root / "pool" / "regions.json"
    write_json(path, [r.to_dict() for r in pool_regions(ws.dataset, ws.split()["train"], ws.cfg)])
    return path


def partition(ws: WorkspaceCore) -> Path:
    """The pool (:func:`write_pool`) as the ``partition`` stage."""
    return write_pool(ws)


@round_step("trained")
def train(ws: WorkspaceCore, record: RoundRecord) -> Trained:
    """Train the round's model on every accepted label (checkpoint hash, MLflow run, val Dice, labeled pixels)."""
    n, current = record.round, ws.current_round()
    if n != current:
        raise WorkspaceError(f"round {n} cannot start: the round in progress is {current}")
    check_frozen_data(ws)
    params_sha = sha256_file(ws.root / "params.yaml")
    ws.ledger.append("round_started", n, ws.actor, {"strategy": ws.cfg.query.strategy, "params_sha256": params_sha},
                     once_key="start")
    info_path, checkpoint = ws.root / "model" / "train.json", ws.root / "model" / "model.pt"
    info = Trained.model_validate(read_json(info_path)) if info_path.is_file() else None
    done = info is not None and info.round == n and checkpoint.is_file()
    if not (done and sha256_file(checkpoint) == info.checkpoint_sha256):
        info = _train(ws, n, checkpoint)
        write_json(info_path, info.model_dump())
    return info


def _train(ws: WorkspaceCore, n: int, checkpoint: Path) -> Trained:
    import torch

    from activeseg.model.training import train_model

    cfg, state = ws.cfg, label_state(ws)
    previous = ws.record(n - 1).trained
    init = pretrained = None
    if cfg.train.mode == "finetune" and previous and checkpoint.is_file() \
            and sha256_file(checkpoint) == previous.checkpoint_sha256:
        init = torch.load(checkpoint, weights_only=True)["state_dict"]
    start = pretrain(ws) if init is None else None  # a round that does not continue the previous model
    if start is not None:
        pretrained = torch.load(ws.root / start.checkpoint, weights_only=True)["state_dict"]
    params = {**cfg.flat(), "round": n, "workspace": str(ws.root),
              "pretrained_sha256": start.checkpoint_sha256 if start else None}
    with ws.tracker().run(f"{round_name(n)}-train", params, {"activeseg.step": "train"}) as run:
        result = train_model(cfg, ws.dataset, state, ws.split()["val"], checkpoint.parent, run, init=init,
                             seed=cfg.train.seed * 1000 + n, progress=False, pretrained=pretrained)
    classes = _val_classes(ws, result.checkpoint)
    return Trained(round=n, checkpoint="model/model.pt", checkpoint_sha256=sha256_file(result.checkpoint),
                   mlflow_run_id=result.run_id, val_dice=result.val_dice, best_epoch=result.best_epoch,
                   revealed_pixels=state.revealed_pixels(), labeled_pixel_fraction=state.revealed_fraction(),
                   train_steps=result.train_steps, stop_epoch=result.stop_epoch, train_seconds=result.train_seconds,
                   predicted_classes=classes, collapsed=collapse_reason(result.val_dice, classes))


def _val_classes(ws: WorkspaceCore, checkpoint: Path) -> list[int]:
    """The classes the saved model predicts anywhere on the validation images."""
    from activeseg.model.evaluation import predicted_classes
    from activeseg.model.network import load_checkpoint, pick_device

    device = pick_device(ws.cfg.train.device, ws.cfg.train.threads)
    model, _ = load_checkpoint(checkpoint, device)
    return predicted_classes(model, ws.dataset, ws.split()["val"], device)


def collapse_reason(val_dice: float, predicted: list[int]) -> str | None:
    """Why a model counts as collapsed, or None: it predicts a single class on every validation pixel,
    or its validation Dice is 0 (no foreground pixel right). Not a paper criterion: a guard before a
    query, whose uncertainty scores from such a model carry no information."""
    if len(predicted) == 1:
        return f"the model predicts class {predicted[0]} everywhere on the validation images"
    if val_dice == 0:
        return "the model's validation Dice is 0"
    return None


def _trained(record: RoundRecord) -> Trained:
    if record.trained is None:
        raise WorkspaceError(f"round {record.round}: no trained model yet (run activeseg step train)")
    return record.trained


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
    n, trained = record.round, _trained(record)
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
        **({"controls": selection["controls"]} if selection.get("controls") else {})}, once_key=model_sha)
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
            "controls": [ctx.candidates[i].id for i in controls] or None}


def evaluate(ws: WorkspaceCore, round_number: int | None = None) -> dict[str, Any]:
    """Test metrics of the round's model; ledger round_evaluated; then the round is closed: DVC push,
    git commit of dvc.lock, params, records and the ledger export, tag ``round-NNN``. Under ``dvc
    repro`` (``in_dvc``) only the metrics: nothing is recorded or committed."""
    n = ws.resolve(round_number)
    if ws.vcs.tag_exists(n):
        return {**ws.record(n).evaluated.model_dump(), "commit": ws.vcs.tag_commit(n)}
    if ws.in_dvc:
        return _evaluation(ws, ws.record(n)).model_dump()
    result = _record_evaluation(ws, n)
    message = f"round {n}: evaluated, {result.split} dice {result.metrics['dice']:.4f}"
    return {**result.model_dump(), "commit": ws.close(n, message)}


@round_step("evaluated")
def _record_evaluation(ws: WorkspaceCore, record: RoundRecord) -> Evaluated:
    result = _evaluation(ws, record)
    _register_model(ws, record, result)
    ws.vcs.stage_done("evaluate")
    # the round's one push; labels named by their .dvc files (with the folder itself among stage targets,
    # dvc push left both that folder and the train stage's model out)
    labels = [f"{target}.dvc" for target in label_targets(record)]
    stages = [stage for stage in ("partition", "pretrain", "train", "query") if stage in ws.vcs.stages()]
    ws.dvc("push", "-q", *stages, *labels)
    return result


def _register_model(ws: WorkspaceCore, record: RoundRecord, evaluated: Evaluated) -> None:
    """The round's model in the campaign's MLflow model registry, when tracking is on (once per round:
    :meth:`activeseg.model.tracking.ModelRegistry.register`). Its commit is the workspace's HEAD (the
    round's labels committed); its label batches those of the earlier rounds, which it was trained on.
    A model trained while tracking was off has no logged checkpoint to register."""
    tracker, trained = ws.tracker(), _trained(record)
    if not tracker.enabled or trained.mlflow_run_id is None:
        return
    from activeseg.model.tracking import ModelRegistry, RoundModel

    n = record.round
    batches = [f"{round_name(r.round)}:{(r.labels_accepted.batch_sha256 or 'initial')[:12]}"
               for r in ws.records.all() if r.round < n and r.labels_accepted is not None]
    ModelRegistry(tracker).register(RoundModel(
        round_number=n, run_id=trained.mlflow_run_id, checkpoint_sha256=trained.checkpoint_sha256,
        split=evaluated.split, metrics=evaluated.metrics, commit=ws.git("rev-parse", "HEAD").strip(),
        label_batches=batches, strategy=record.queried.strategy))


def _evaluation(ws: WorkspaceCore, record: RoundRecord) -> Evaluated:
    """The round's test metrics (metrics/evaluation.json, reused when it is of this round's model) and
    the ledger event round_evaluated."""
    n, trained = record.round, _trained(record)
    if record.labels_accepted is None and not ws.in_dvc:
        raise WorkspaceError(f"round {n}: no accepted label batch yet (activeseg labels submit|ingest|simulate)")
    path = ws.root / "metrics" / "evaluation.json"
    metrics = read_json(path) if path.is_file() else None
    if not (metrics and metrics["round"] == n and metrics["checkpoint_sha256"] == trained.checkpoint_sha256):
        metrics = _test_metrics(ws, n, trained)
        write_json(path, metrics)
    ws.ledger.append("round_evaluated", n, ws.actor, {
        "metrics": metrics["mean"], "split": metrics["split"], "checkpoint_sha256": metrics["checkpoint_sha256"],
        "labeled_pixel_fraction": trained.labeled_pixel_fraction}, once_key=metrics["checkpoint_sha256"])
    return Evaluated(round=n, metrics=metrics["mean"], split=metrics["split"],
                     checkpoint_sha256=metrics["checkpoint_sha256"], mlflow_run_id=metrics["mlflow_run_id"],
                     labeled_pixel_fraction=trained.labeled_pixel_fraction)


def _test_metrics(ws: WorkspaceCore, n: int, trained: Trained) -> dict[str, Any]:
    from activeseg.model.evaluation import evaluate_model
    from activeseg.model.network import load_checkpoint, pick_device

    part = ws.cfg.evaluate.split
    device = pick_device(ws.cfg.train.device, ws.cfg.train.threads)
    model, _ = load_checkpoint(ws.root / "model" / "model.pt", device)
    params = {"round": n, "checkpoint_sha256": trained.checkpoint_sha256, "split": part,
              "train_run_id": trained.mlflow_run_id}
    with ws.tracker().run(f"{round_name(n)}-evaluate", params, {"activeseg.step": "evaluate"}) as run:
        result = evaluate_model(model, ws.dataset, ws.split()[part], device)
        run.log_metrics({f"{part}_{m}": result["mean"][m] for m in METRICS})
        run.log_metrics({"labeled_pixel_fraction": trained.labeled_pixel_fraction})
    return {"round": n, "split": part, "checkpoint_sha256": trained.checkpoint_sha256,
            "mlflow_run_id": run.run_id, **result}
