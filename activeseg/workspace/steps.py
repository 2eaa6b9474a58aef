"""The steps of a round: validate, partition, pretrain (once per campaign: :mod:`.pretraining`), train, query (publishes the
label request: :mod:`.querying`), evaluate (closes the round). Each writes its outputs first and its record entry last (:func:`round_step`), so a
finished step returns its recorded result and an interrupted one completes when called again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from activeseg.core.config import from_dict
from activeseg.core.pool import pool_regions
from activeseg.core.util import read_json, round_name, sha256_file, write_json
from activeseg.metrics import METRICS
from activeseg.workspace.base import WorkspaceCore, round_step
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.exchange.intake import label_targets
from activeseg.workspace.ledger import region_stem
from activeseg.workspace.pretraining import pretrain
from activeseg.workspace.records import Evaluated, RoundRecord, Trained
from activeseg.workspace.state import label_state
from activeseg.workspace.validation import ValidationFailed, ValidationReport, dataset_fingerprint, validate_dataset


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


def trained_model(record: RoundRecord) -> Trained:
    """The round's trained entry; a :class:`WorkspaceError` saying what to run when there is none yet."""
    if record.trained is None:
        raise WorkspaceError(f"round {record.round}: no trained model yet (run activeseg step train)")
    return record.trained


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
    tracker, trained = ws.tracker(), trained_model(record)
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
    n, trained = record.round, trained_model(record)
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
    identity = {"activeseg.step": "evaluate", "activeseg.round": str(n),
                "activeseg.checkpoint_sha256": trained.checkpoint_sha256}
    with ws.tracker().run(f"{round_name(n)}-evaluate", params, identity, once=True) as run:  # logged once
        result = evaluate_model(model, ws.dataset, ws.split()[part], device)
        run.log_metrics({f"{part}_{m}": result["mean"][m] for m in METRICS})
        run.log_metrics({"labeled_pixel_fraction": trained.labeled_pixel_fraction})
    return {"round": n, "split": part, "checkpoint_sha256": trained.checkpoint_sha256,
            "mlflow_run_id": run.run_id, **result}
