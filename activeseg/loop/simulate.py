"""A simulated active-learning campaign: the oracle answers from the ground truth.

Per strategy and seed, round k trains on what is revealed, evaluates on the test split, then (except
in the last round) queries the budget and reveals it. Every finished round is written to
``OUT/runs/<strategy>/seed-<s>/round-<k>/`` (labels after the query, selection, metrics, checkpoint,
then ``done.json`` last), so rerunning with the same ``OUT`` resumes after the last finished round.
``full`` reveals the whole pool and trains once: the upper bound. With ``pretrain.enabled`` the network is
pretrained once per ``OUT`` (``OUT/pretrain/model.pt``, reused on resume) and every campaign starts from it.
Each record keeps the round's wall and CPU seconds (training, evaluation and query).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from activeseg.core.config import Config, dump_config
from activeseg.core.data import Dataset, load_dataset, load_or_create_split
from activeseg.model.evaluation import evaluate_model
from activeseg.core.labels import LabelState
from activeseg.core.util import round_name
from activeseg.metrics import METRICS, auc_dice
from activeseg.model.network import load_checkpoint, pick_device
from activeseg.model.pretrain import pretrain_model, region_embeddings, save_pretrained
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.partition import Region
from activeseg.loop.curves import plot_learning_curves
from activeseg.core.pool import pool_regions
from activeseg.loop.selection import apply_pseudo, choose_initial, select_regions
from activeseg.strategies import QueryContext, Selection, get_strategy
from activeseg.model.tracking import Tracker
from activeseg.model.training import train_model


@dataclass
class Campaign:
    """One strategy and seed over a dataset's frozen split."""

    cfg: Config
    dataset: Dataset
    split: dict[str, list[str]]
    strategy: str
    seed: int
    folder: Path
    embeddings: dict[str, np.ndarray] | None = None  # region id -> (D,) by the pretrained encoder

    def initial_state(self, regions: list[Region]) -> LabelState:
        """The initial labeled set revealed (:func:`choose_initial`; ``full``: the whole pool)."""
        shapes = {s: (self.dataset.samples[s].height, self.dataset.samples[s].width) for s in self.split["train"]}
        state = LabelState.empty(shapes)
        first = regions if self.strategy == "full" else choose_initial(self.cfg, self.strategy, regions, self.seed,
                                                                        self.embeddings)[0]
        reveal_from_ground_truth(state, self.dataset, first, 0)
        return state

    def last_done(self) -> int:
        done = [int(p.parent.name.split("-")[1]) for p in self.folder.glob("round-*/done.json")]
        return max(done, default=-1)


def query(cfg: Config, campaign: Campaign, state: LabelState, regions: list[Region], checkpoint: Path,
          round_number: int, progress: bool) -> tuple[Selection, QueryContext]:
    """Run the campaign's strategy over the unlabeled regions: its selection and the context it saw."""
    return select_regions(cfg, campaign.strategy, campaign.dataset, campaign.split, state, regions, checkpoint,
                          round_number, campaign.seed, campaign.folder.parents[2] / "cache", progress,
                          pool_embeddings=campaign.embeddings)


def apply_selection(state: LabelState, dataset: Dataset, selection: Selection, candidates: list[Region],
                    round_number: int) -> int:
    """Reveal the selected regions from the ground truth, then the selection's pseudo-labels; the
    pixels newly revealed."""
    picked = [candidates[i] for i in selection.indices]
    cost = reveal_from_ground_truth(state, dataset, picked, round_number)
    apply_pseudo(state, selection.pseudo, selection.pseudo_origin or round_name(round_number),
                 selection.replace_pseudo)
    return cost


def pretrained_weights(cfg: Config, dataset: Dataset, split: dict[str, list[str]], out: Path) -> dict | None:
    """The pretrained network's state dict (``activeseg.model.pretrain``) when ``pretrain.enabled``, else None:
    read from ``out/pretrain/model.pt``, or pretrained on the train pool and written there first (atomically:
    two processes may share ``out``)."""
    if not cfg.pretrain.enabled:
        return None
    path = out / "pretrain" / "model.pt"
    if not path.is_file():
        device = pick_device(cfg.train.device, cfg.train.threads)
        result = pretrain_model(cfg, dataset, pool_regions(dataset, split["train"], cfg), device)
        save_pretrained(result.model, path, cfg, dataset.channels)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def pool_embeddings(cfg: Config, dataset: Dataset, split: dict[str, list[str]], out: Path) -> dict[str, np.ndarray] | None:
    """Region id -> (D,) embedding by the pretrained encoder of every region of the train pool
    (:func:`activeseg.model.pretrain.region_embeddings`), read from or written to ``out/pretrain/embeddings.npz``;
    None without pretraining."""
    if not cfg.pretrain.enabled:
        return None
    path = out / "pretrain" / "embeddings.npz"
    if not path.is_file():
        device = pick_device(cfg.train.device, cfg.train.threads)
        model, _ = load_checkpoint(out / "pretrain" / "model.pt", device)
        regions = pool_regions(dataset, split["train"], cfg)
        vectors = region_embeddings(model, dataset, regions, device)
        partial = path.with_suffix(f".{os.getpid()}.npz")
        np.savez_compressed(partial, **{r.id: v for r, v in zip(regions, vectors)})
        partial.replace(path)
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def run_campaign(campaign: Campaign, rounds: int, tracker: Tracker, progress: bool = True,
                 pretrained: dict | None = None) -> list[dict]:
    """Run (or resume) one campaign, starting from ``pretrained`` (a state dict) when given; returns one
    record per round."""
    cfg, dataset = campaign.cfg, campaign.dataset
    regions = pool_regions(dataset, campaign.split["train"], cfg)
    rounds = 1 if campaign.strategy == "full" else rounds
    start = campaign.last_done() + 1
    if start == 0:
        state = campaign.initial_state(regions)
    else:
        state = LabelState.load(campaign.folder / round_name(start - 1))
    device = pick_device(cfg.train.device, cfg.train.threads)
    for k in range(start, rounds):
        folder = campaign.folder / round_name(k)
        fraction = state.revealed_fraction()
        wall, cpu = time.perf_counter(), time.process_time()
        params = {**cfg.flat(), "strategy": campaign.strategy, "seed": campaign.seed, "round": k}
        with tracker.run(f"{campaign.strategy}-seed{campaign.seed}-round{k}", params) as run:
            prev = campaign.folder / round_name(k - 1) / "model.pt"
            init = torch.load(prev, weights_only=True)["state_dict"] if k > 0 and prev.exists() else None
            result = train_model(cfg, dataset, state, campaign.split["val"], folder, run,
                                 init=init, seed=campaign.seed * 1000 + k, progress=progress,
                                 pretrained=pretrained)
            model, _ = load_checkpoint(result.checkpoint, device)
            metrics = evaluate_model(model, dataset, campaign.split["test"], device)
            run.log_metrics({f"test_{m}": metrics["mean"][m] for m in METRICS})
            run.log_metrics({"labeled_pixel_fraction": fraction})
        record = {"strategy": campaign.strategy, "seed": campaign.seed, "round": k,
                  "labeled_pixel_fraction": fraction, **{m: metrics["mean"][m] for m in METRICS},
                  "val_dice": result.val_dice, "mlflow_run_id": result.run_id, "train_steps": result.train_steps,
                  "stop_epoch": result.stop_epoch, "train_seconds": result.train_seconds}
        selection_log = []
        if k < rounds - 1:
            selection, ctx = query(cfg, campaign, state, regions, result.checkpoint, k, progress)
            apply_selection(state, dataset, selection, ctx.candidates, k + 1)
            selection_log = [{"id": ctx.candidates[i].id, "score": s, "cost": c}
                             for i, s, c in zip(selection.indices, selection.scores, selection.costs)]
            record["selection_details"] = selection.details
        record["round_seconds"] = time.perf_counter() - wall
        record["cpu_seconds"] = time.process_time() - cpu
        state.save(folder)
        (folder / "selection.json").write_text(json.dumps(selection_log, indent=1))
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (folder / "done.json").write_text(json.dumps(record, indent=1))
    return [json.loads((campaign.folder / round_name(k) / "done.json").read_text()) for k in range(rounds)]


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per strategy: AUC of Dice over rounds, mean and population std (ddof=0) over seeds."""
    summary = {}
    for strategy in sorted({r["strategy"] for r in runs}):
        per_seed = {}
        for r in sorted((r for r in runs if r["strategy"] == strategy), key=lambda r: r["round"]):
            per_seed.setdefault(r["seed"], []).append(r["dice"])
        aucs = [auc_dice(d) for d in per_seed.values()]
        finals = [d[-1] for d in per_seed.values()]
        summary[strategy] = {"auc_dice_mean": float(np.mean(aucs)), "auc_dice_std": float(np.std(aucs)),
                             "final_dice_mean": float(np.mean(finals)), "seeds": len(per_seed),
                             "rounds": max(len(d) for d in per_seed.values())}
    return summary


def simulate(cfg: Config, dataset_dir: Path, strategies: list[str], seeds: list[int], out: Path,
             rounds: int | None = None, progress: bool = True) -> dict:
    """Run every (strategy, seed) campaign; writes ``results.json`` and ``learning_curves.png``. ``rounds``
    (default ``cfg.rounds``) is the campaign's planned number of rounds (claspe's noise schedule reads it)."""
    cfg = cfg.model_copy(update={"rounds": rounds or cfg.rounds})
    for name in strategies:
        get_strategy(name, cfg.query.options.get(name))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(dataset_dir, cfg.data.classes, cfg.data.slides)
    split = load_or_create_split(out / "split.json", dataset.stems, cfg.data.split.train, cfg.data.split.val,
                                 cfg.data.seed)
    dump_config(cfg, out / "params.yaml")
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, out, enabled=cfg.tracking.mlflow)
    pretrained = pretrained_weights(cfg, dataset, split, out)
    embeddings = pool_embeddings(cfg, dataset, split, out)
    runs = []
    for name in strategies:
        for seed in seeds:
            campaign = Campaign(cfg, dataset, split, name, seed, out / "runs" / name / f"seed-{seed}", embeddings)
            runs += run_campaign(campaign, cfg.rounds, tracker, progress, pretrained)
    results = {"runs": runs, "summary": summarize(runs)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    name = "synthetic" if cfg.data.dataset == "synthetic" else Path(dataset_dir).name
    plot_learning_curves(runs, out / "learning_curves.png", title=f"{name}: test Dice")
    return results
