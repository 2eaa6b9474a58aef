import json
import math

import numpy as np
import pytest

from activeseg.core.config import ConfigError, load_config
from activeseg.core.data import make_split
from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.loop.oracle import reveal_from_ground_truth
from activeseg.core.pool import initial_regions, pool_regions, unlabeled
from activeseg.loop.simulate import simulate
from activeseg.strategies import QueryContext, get_strategy
from activeseg.strategies.bsq import bsq_order, likelihood_ratio_scores, tail_probability, uncertain_count

VAE = {"latent_dim": 3, "width": 4, "epochs": 2, "size": 16}


def test_tail_probability_is_the_two_sided_erf_tail():
    z = np.array([[0.0, 1.0, -3.0]])
    p = tail_probability(z, np.zeros(3), np.array([1.0, 1.0, 1.5]))
    assert p[0, 0] == 1.0  # at the mean
    assert p[0, 1] == pytest.approx(math.erfc(1 / math.sqrt(2)))  # one sigma: 0.3173
    assert p[0, 2] == pytest.approx(1 + math.erf(-2 / math.sqrt(2)))  # two sigmas, Eq. 8 as written


def test_single_annotated_sample_uses_the_floor_and_the_pool_sigma():
    z_pool = np.array([[-1.0], [1.0], [-1.0], [1.0]])  # mu 0, sigma 1
    z_an = np.array([[-1.0]])  # sigma 0 -> floored at 0.1 x 1
    s = likelihood_ratio_scores(np.array([[1.0], [-1.0]]), z_an, z_pool, sigma_floor=0.1)
    pool_term = math.log(math.erfc(1 / math.sqrt(2)) + 1e-10)
    far = math.log(math.erfc(2 / (0.1 * math.sqrt(2))) + 1e-10) - pool_term
    near = math.log(1 + 1e-10) - pool_term
    assert s == pytest.approx([far, near])
    assert s[0] < s[1]  # the sample the annotated set does not explain comes first


def test_bsq_prefers_a_sample_from_a_mode_the_annotated_set_lacks():
    rng = np.random.default_rng(0)
    mode_a = rng.normal([-3.0, 0.0], 0.3, size=(20, 2))
    mode_b = rng.normal([3.0, 0.0], 0.3, size=(20, 2))
    z_pool = np.concatenate([mode_a, mode_b])
    z_an = mode_a[:5]  # the annotated set only covers mode A
    candidates = np.array([[-3.0, 0.1], [3.0, -0.1], [-2.8, 0.0]])
    s = likelihood_ratio_scores(candidates, z_an, z_pool, sigma_floor=0.1)
    order = bsq_order(np.array([0.5, 0.5, 0.5]), s, n_unc=3)
    assert order[0] == 1


def test_order_ranks_the_most_uncertain_by_score_then_the_rest_by_uncertainty():
    uncertainty = np.array([0.9, 0.1, 0.8, 0.7, 0.2])
    scores = np.array([5.0, -10.0, 1.0, -1.0, -20.0])
    assert bsq_order(uncertainty, scores, 3).tolist() == [3, 2, 0, 4, 1]
    assert bsq_order(uncertainty, scores, 5).tolist() == [4, 1, 3, 2, 0]


def test_n_unc_is_a_fraction_or_a_count():
    assert uncertain_count(0.1, 54) == 6
    assert uncertain_count(1.0, 7) == 7
    assert uncertain_count(2, 10) == 2
    assert uncertain_count(64, 10) == 10
    for bad in (0, 2.5, -1):
        with pytest.raises(ConfigError, match=r"query\.options\.bsq\.n_unc: "):
            get_strategy("bsq", {"n_unc": bad})
    with pytest.raises(ConfigError, match="multiple of 8"):
        get_strategy("bsq", {"size": 20})


def context(cfg, dataset, budget, tmp_path, seed=0):
    split = make_split(dataset.stems, cfg.data.split.train, cfg.data.split.val, cfg.data.seed)
    regions = pool_regions(dataset, split["train"], cfg)
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    reveal_from_ground_truth(state, dataset, initial_regions(regions, 2, seed), 0)
    candidates = unlabeled(regions, state)
    variance = np.random.default_rng(seed).random(len(candidates))
    pool = PoolScores([r.id for r in candidates], variance, variance, variance, np.zeros((len(candidates), 2)))
    return QueryContext(candidates, budget, state, dataset, np.random.default_rng(seed), lambda regs: pool,
                        extras={"cfg": cfg, "split": split, "cache_dir": tmp_path / "cache"})


def test_select_spends_the_budget_exactly_on_unlabeled_regions_deterministically(tiny_dataset, tmp_path):
    cfg = load_config(None, ["partition.side=32", "partition.overlap=0"])  # 4 disjoint 1024-px patches per image
    strategy = get_strategy("bsq", {"n_unc": 0.5, **VAE})
    ctx = context(cfg, tiny_dataset, 3 * 1024, tmp_path)
    selection = strategy.select(ctx)
    assert selection.costs == [1024, 1024, 1024] and selection.spent == ctx.budget
    labeled = ctx.state.labeled_region_ids()
    assert not {ctx.candidates[i].id for i in selection.indices} & labeled
    # all picks come from the most uncertain half, in increasing likelihood-ratio score
    top = set(np.argsort(-ctx.pool.variance, kind="stable")[: math.ceil(0.5 * len(ctx.candidates))].tolist())
    assert set(selection.indices) <= top and selection.scores == sorted(selection.scores)
    again = strategy.select(context(cfg, tiny_dataset, 3 * 1024, tmp_path))
    assert again.indices == selection.indices and again.scores == pytest.approx(selection.scores)
    assert len(list((tmp_path / "cache").glob("infovae-*.pt"))) == 1  # trained once, then reused


def test_tiny_simulation_end_to_end(tiny_cfg, tiny_data_dir, tmp_path):
    tiny_cfg.query.options["bsq"] = dict(VAE)
    out = tmp_path / "out"
    results = simulate(tiny_cfg, tiny_data_dir, ["bsq"], [0], out, rounds=2, progress=False)
    assert [r["round"] for r in results["runs"]] == [0, 1]
    folder = out / "runs" / "bsq" / "seed-0"
    selection = json.loads((folder / "round-000" / "selection.json").read_text())
    before = LabelState.load(folder / "round-000")
    assert selection and sum(s["cost"] for s in selection) <= round(0.05 * before.total_pixels())
    assert len(list((out / "cache").glob("infovae-*.pt"))) == 1
