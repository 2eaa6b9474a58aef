"""The contract every registered strategy keeps, checked the same way for each on a tiny synthetic pool
with a tiny untrained model: the picks are distinct, still-unlabeled training-pool candidates; their
costs are the pixels each newly reveals; they stay within the round's budget (``full`` takes the whole
pool instead); pseudo-labels, if any, lie in the training pool outside the picks; and a fixed seed
gives the same selection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from activeseg.core.config import Config, load_config
from activeseg.core.data import Dataset, make_split
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.core.pool import initial_regions, pool_regions, round_budget, unlabeled
from activeseg.loop.simulate import simulate
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.model.inference import mc_dropout_scores
from activeseg.model.network import build_model
from activeseg.strategies import QueryContext, Selection, get_strategy, names
from tests.conftest import TINY

# a budget that is no multiple of a patch (32 x 32 = 1024 px, overlapping by half), so it cannot be spent exactly
SETTINGS = [*TINY, "query.budget_pixels=2500", "query.mc_passes=2"]
SEED = 0


@dataclass
class Pool:
    """The training pool of the tiny dataset, its split and the label state after the initial regions."""

    cfg: Config
    dataset: Dataset
    split: dict[str, list[str]]
    regions: list[Region]
    state: LabelState


def make_pool(dataset: Dataset) -> Pool:
    cfg = load_config(None, list(SETTINGS))
    split = make_split(dataset.stems, cfg.data.split.train, cfg.data.split.val, cfg.data.seed)
    regions = pool_regions(dataset, split["train"], cfg)
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    reveal_from_ground_truth(state, dataset, initial_regions(regions, cfg.partition.initial_labeled, SEED), 0)
    return Pool(cfg, dataset, split, regions, state)


def query(pool: Pool, name: str, cache_dir: Path, round_number: int = 0) -> tuple[Selection, QueryContext]:
    """One query of strategy ``name`` as the campaign runs it, with a freshly seeded tiny model."""
    cfg, device = pool.cfg, torch.device("cpu")
    torch.manual_seed(SEED)
    model = build_model(pool.dataset.channels, pool.dataset.classes, cfg.model.width, cfg.model.depth,
                        cfg.model.dropout)
    ctx = QueryContext(
        candidates=unlabeled(pool.regions, pool.state),
        budget=round_budget(cfg, pool.state),
        state=pool.state,
        dataset=pool.dataset,
        rng=np.random.default_rng([SEED, round_number]),
        score_pool=lambda regions, hooks=None: mc_dropout_scores(model, pool.dataset, regions, cfg.query.mc_passes,
                                                                 cfg.query.batch_size, device, hooks=hooks),
        model_id="tiny-model",
        extras={"model": model, "device": device, "cfg": cfg, "split": pool.split, "cache_dir": cache_dir},
    )
    return get_strategy(name, cfg.query.options.get(name)).select(ctx), ctx


def assert_keeps_the_contract(name: str, selection: Selection, ctx: QueryContext, pool: Pool) -> None:
    picked = [ctx.candidates[i] for i in selection.indices]
    assert len(set(selection.indices)) == len(picked) > 0, "a round picks distinct candidates, at least one"
    assert len(selection.scores) == len(selection.costs) == len(picked)
    assert {r.stem for r in picked} <= set(pool.split["train"]), "a pick outside the training pool (val/test)"
    assert not {r.id for r in picked} & ctx.state.labeled_region_ids(), "an already labeled region picked again"
    known = {stem: mask.copy() for stem, mask in ctx.state.known.items()}
    for region, cost in zip(picked, selection.costs):  # each cost is what the pick newly reveals, in pick order
        ys, xs = region.clipped(*known[region.stem].shape)
        assert cost == int((~known[region.stem][ys, xs]).sum()) > 0, f"{region.id}: wrong cost {cost}"
        known[region.stem][ys, xs] = True
    if name == "full":  # the upper bound: the whole pool, whatever the budget
        assert all(mask.all() for mask in known.values())
    else:
        assert selection.spent <= ctx.budget
    pseudo = {region.id: region for region, _ in selection.pseudo}
    assert {r.stem for r in pseudo.values()} <= set(pool.split["train"]), "a pseudo-label outside the training pool"
    assert not set(pseudo) & {r.id for r in picked}, "a region both picked and pseudo-labeled"


def fingerprint(selection: Selection, ctx: QueryContext) -> tuple:
    return ([ctx.candidates[i].id for i in selection.indices], selection.costs,
            sorted(region.id for region, _ in selection.pseudo))


@pytest.mark.parametrize("name", names())
def test_strategy_keeps_the_contract_over_two_rounds_and_is_deterministic_by_seed(name: str, tiny_dataset: Dataset,
                                                                                   tmp_path: Path):
    pool = make_pool(tiny_dataset)
    selection, ctx = query(pool, name, tmp_path / "cache")
    assert_keeps_the_contract(name, selection, ctx, pool)
    again, again_ctx = query(make_pool(tiny_dataset), name, tmp_path / "cache-again")
    assert fingerprint(again, again_ctx) == fingerprint(selection, ctx), "the same seed gave another selection"
    if name == "full":
        return  # nothing is left to query
    reveal_from_ground_truth(pool.state, tiny_dataset, [ctx.candidates[i] for i in selection.indices], 1)
    second, second_ctx = query(pool, name, tmp_path / "cache", round_number=1)
    assert_keeps_the_contract(name, second, second_ctx, pool)


@pytest.mark.parametrize("name", ["bald", "coreset", "focannot", "stochastic_batches", "suggestive"])
def test_strategy_runs_a_simulated_campaign_end_to_end(name: str, tiny_cfg: Config, tiny_data_dir: Path,
                                                       tmp_path: Path) -> None:
    """Two simulated rounds: the first query spends at most the budget, only on unrevealed pixels of
    training images (the strategies with their own model-based machinery; the others are covered above)."""
    out = tmp_path / "out"
    results = simulate(tiny_cfg, tiny_data_dir, [name], [0], out, rounds=2, progress=False)
    assert [r["round"] for r in results["runs"]] == [0, 1]
    split = json.loads((out / "split.json").read_text())
    picked = json.loads((out / "runs" / name / "seed-0" / "round-000" / "selection.json").read_text())
    budget = round(tiny_cfg.query.budget_fraction * len(split["train"]) * 64 * 64)
    assert picked and sum(p["cost"] for p in picked) <= budget
    assert all(p["cost"] > 0 and p["id"].rsplit("_", 3)[0] in split["train"] for p in picked)
