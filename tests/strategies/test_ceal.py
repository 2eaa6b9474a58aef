import json

import numpy as np
import pytest
import torch

from activeseg.core.config import ConfigError, load_config
from activeseg.core.data import make_split
from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.model.network import build_model
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.partition import Region
from activeseg.core.pool import initial_regions, pool_regions, unlabeled
from activeseg.loop.simulate import apply_selection, simulate
from activeseg.strategies import QueryContext, Selection, get_strategy
from activeseg.strategies.ceal import (fill_groups, group_budgets, group_orders, histogram_bins, modal_bin,
                                       pseudo_candidates)


def test_histogram_bins_are_equal_width_over_the_range():
    assert histogram_bins(np.array([0.0, 0.05, 0.5, 1.0]), 10).tolist() == [0, 0, 5, 9]
    assert histogram_bins(np.array([0.3, 0.3]), 10).tolist() == [0, 0]


def test_modal_bin_by_increasing_uncertainty_lower_bin_on_ties():
    u = np.array([0.02, 0.0, 0.01, 0.5, 0.9, 1.0])  # bins of 4: 0, 0, 0, 2, 3, 3
    assert modal_bin(u, 4).tolist() == [1, 2, 0]
    assert modal_bin(np.array([0.0, 1.0, 0.1, 0.9]), 2).tolist() == [0, 2]


def test_pseudo_candidates_skip_oracle_picks_and_take_a_fraction():
    u = np.array([0.02, 0.0, 0.01, 0.03, 0.9, 1.0])  # modal bin: 0, 1, 2, 3
    excluded = np.array([False, True, False, False, False, False])
    assert pseudo_candidates(u, excluded, 4, 0.5).tolist() == [2, 0]  # ceil(0.5 x 3) of 2, 0, 3
    assert pseudo_candidates(u, excluded, 4, 0.0).tolist() == []
    assert pseudo_candidates(u, excluded, 4, 1.0).tolist() == [2, 0, 3]


def test_group_budgets_sum_exactly_to_the_budget():
    assert group_budgets(100, (10, 15, 10)) == [29, 43, 28]
    assert group_budgets(7, (1, 0, 1)) == [4, 0, 3]
    for budget in (0, 1, 999, 12345):
        assert sum(group_budgets(budget, (10, 15, 10))) == budget


def test_group_orders_low_random_middle_high():
    u = np.array([0.5, 0.0, 1.0, 0.4, 0.9])
    low, middle, high = group_orders(u, 0.5, np.random.default_rng(0))
    assert low.tolist() == [1, 3, 0, 4, 2] and high.tolist() == [2, 4, 0, 3, 1]
    assert sorted(middle.tolist()) == [0, 3]  # u in [0.25, 0.75]
    again = group_orders(u, 0.5, np.random.default_rng(0))[1]
    assert middle.tolist() == again.tolist()


def small_context(budget):
    """Image 8x8 cut into four disjoint 4x4 candidates (16 px each)."""
    regions = [Region("a", y, x, y + 4, x + 4) for y in (0, 4) for x in (0, 4)]
    state = LabelState.empty({"a": (8, 8)})
    return QueryContext(regions, budget, state, dataset=None, rng=np.random.default_rng(0))


def test_fill_groups_carries_what_a_group_leaves_to_the_next():
    ctx = small_context(48)
    orders = [np.array([0, 1, 2, 3]), np.array([1, 2]), np.array([3, 2, 1, 0])]
    # group 1 gets 12 px (nothing fits), group 2 12 + 20 = 32 (two regions), group 3 16 (one more)
    assert fill_groups(orders, [12, 20, 16], ctx) == ([1, 2, 3], [16, 16, 16])
    assert fill_groups(orders, [16, 16, 16], ctx) == ([0, 1, 3], [16, 16, 16])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="middle_width"):
        get_strategy("ceal", {"middle_width": 0})
    with pytest.raises(ConfigError, match="pseudo_fraction"):
        get_strategy("ceal", {"pseudo_fraction": 1.5})
    with pytest.raises(ConfigError, match="low_weight"):
        get_strategy("ceal", {"low_weight": 0, "middle_weight": 0, "high_weight": 0})


def model_context(cfg, dataset, budget, seed=0):
    """Tiny dataset, two labeled patches, a tiny untrained model for the pseudo-masks and seeded scores."""
    split = make_split(dataset.stems, cfg.data.split.train, cfg.data.split.val, cfg.data.seed)
    regions = pool_regions(dataset, split["train"], cfg)
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    reveal_from_ground_truth(state, dataset, initial_regions(regions, 2, seed), 0)
    candidates = unlabeled(regions, state)
    # a skewed histogram: most candidates confident, a few uncertain
    variance = np.random.default_rng(seed).exponential(0.01, len(candidates))
    pool = PoolScores([r.id for r in candidates], variance, variance, variance, np.zeros((len(candidates), 2)))
    torch.manual_seed(0)
    model = build_model(dataset.channels, dataset.classes, 4, 2, 0.2)
    extras = {"cfg": cfg, "split": split, "model": model, "device": torch.device("cpu")}
    return QueryContext(candidates, budget, state, dataset, np.random.default_rng(seed), lambda regs: pool,
                        model_id="model-7", extras=extras)


def test_select_groups_and_pseudo_labels_with_provenance(tiny_dataset):
    cfg = load_config(None, ["partition.side=32", "partition.overlap=0", "query.mc_passes=2"])
    ctx = model_context(cfg, tiny_dataset, 4 * 1024)
    strategy = get_strategy("ceal", {"pseudo_fraction": 0.5})
    selection = strategy.select(ctx)
    u = ctx.pool.variance
    assert selection.spent == ctx.budget and selection.costs == [1024] * 4
    assert selection.scores == [float(u[i]) for i in selection.indices]
    assert int(np.argmin(u)) in selection.indices and int(np.argmax(u)) in selection.indices
    picked = {ctx.candidates[i].id for i in selection.indices}
    assert not picked & ctx.state.labeled_region_ids()
    expected = pseudo_candidates(u, np.isin(np.arange(len(u)), selection.indices), 10, 0.5)
    assert [r.id for r, _ in selection.pseudo] == [ctx.candidates[i].id for i in expected]
    assert selection.pseudo and not {r.id for r, _ in selection.pseudo} & picked
    for region, mask in selection.pseudo:
        assert mask.shape == (32, 32) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert selection.pseudo_origin == "model-7" and selection.replace_pseudo
    again = strategy.select(model_context(cfg, tiny_dataset, 4 * 1024))
    assert again.indices == selection.indices
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(again.pseudo, selection.pseudo))

    before = ctx.state.revealed_pixels()
    ctx.state.set_pseudo(ctx.candidates[0], np.ones((32, 32), np.uint8), "older-model")
    cost = apply_selection(ctx.state, tiny_dataset, selection, ctx.candidates, 1)
    assert cost == selection.spent and ctx.state.revealed_pixels() == before + cost  # pseudo costs nothing
    assert set(ctx.state.pseudo_regions) == {r.id for r, _ in selection.pseudo}  # the older ones are gone
    assert {p["origin"] for p in ctx.state.pseudo_regions.values()} == {"model-7"}
    assert sum(int(k.sum()) for k in ctx.state.pseudo_known.values()) == 1024 * len(selection.pseudo)


def test_apply_selection_keeps_pseudo_labels_apart_from_human_labels(tiny_dataset):
    stem = tiny_dataset.stems[0]
    state = LabelState.empty({stem: (64, 64)})
    state.set_pseudo(Region(stem, 0, 0, 4, 8), np.ones((4, 8), np.uint8), "m0")
    regions = [Region(stem, 0, 0, 8, 4)]
    keep = Selection([0], [0.0], [32], pseudo=[(Region(stem, 4, 4, 8, 8), np.ones((4, 4), np.uint8))])
    assert apply_selection(state, tiny_dataset, keep, regions, 1) == 32
    assert state.revealed_pixels() == 32
    # the human label replaced the pseudo-label under it; the others stay, with their origins
    assert state.pseudo_known[stem][:4, :4].sum() == 0 and state.pseudo_known[stem][:4, 4:8].all()
    assert state.pseudo_regions[f"{stem}_y0004_x0004_4x4"]["origin"] == "round-001"
    assert state.pseudo_regions[f"{stem}_y0000_x0000_4x8"]["origin"] == "m0"
    assert np.array_equal(state.labels[stem][:8, :4], tiny_dataset.mask(stem)[:8, :4])


def test_tiny_simulation_end_to_end(tiny_cfg, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    results = simulate(tiny_cfg, tiny_data_dir, ["ceal"], [0], out, rounds=2, progress=False)
    assert [r["round"] for r in results["runs"]] == [0, 1]
    folder = out / "runs" / "ceal" / "seed-0"
    selection = json.loads((folder / "round-000" / "selection.json").read_text())
    state = LabelState.load(folder / "round-000")
    spent = sum(s["cost"] for s in selection)
    assert 0 < spent <= round(0.05 * state.total_pixels())
    assert state.revealed_pixels() == sum(h["cost"] for h in state.history)  # pseudo-labels cost nothing
    assert state.pseudo_regions  # the round-1 model trained on them too
    origins = {p["origin"] for p in state.pseudo_regions.values()}
    assert origins == {str(folder / "round-000" / "model.pt")}
    assert not set(state.pseudo_regions) & {s["id"] for s in selection}
