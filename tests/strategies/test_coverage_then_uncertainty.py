"""``coverage_then_uncertainty``: the pool's mean coverage by the labeled regions picks the round's strategy,
a representativeness one below the threshold, ``claspe`` from it on; the selection is the delegate's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activeseg.core.config import load_config
from activeseg.model.inference import mc_dropout_scores
from activeseg.model.network import build_model
from activeseg.strategies import get_strategy
from tests.conftest import TINY
from tests.strategies.test_representative import PATCH, embedded_context

BUDGET = 3 * PATCH + 600
# image 0 (2 labeled regions, 7 candidates) on e0, the 27 regions of images 1-3 on e1:
# k(e0, e1) = exp(-2 / (2 x 0.5^2)) = exp(-4), so GCov = (9 + 27 exp(-4)) / 36
COVERAGE = (9 + 27 * np.exp(-4)) / 36


def two_axes(dataset):
    first = dataset.stems[0]
    return lambda region: np.eye(2)[int(region.stem != first)]


def test_branch_reads_the_mean_coverage_of_the_pool(tiny_cfg, tiny_dataset):
    ctx = embedded_context(tiny_cfg, tiny_dataset, two_axes(tiny_dataset), BUDGET)
    name, covered = get_strategy("coverage_then_uncertainty").branch(ctx)
    assert (name, covered) == ("typiclust", pytest.approx(COVERAGE, abs=1e-6))
    lower = {"coverage": "maxherding", "threshold": 0.25}
    assert get_strategy("coverage_then_uncertainty", lower).branch(ctx)[0] == "claspe"
    wider = {"threshold": 0.5, "bandwidth": 2.0}  # k(e0, e1) = exp(-1/4): (9 + 27 exp(-1/4)) / 36 = 0.83
    assert get_strategy("coverage_then_uncertainty", wider).branch(ctx) == ("claspe", pytest.approx(
        (9 + 27 * np.exp(-0.25)) / 36, abs=1e-6))


@pytest.mark.parametrize("coverage", ["typiclust", "maxherding"])
def test_below_the_threshold_the_selection_is_the_coverage_strategys_with_its_options(coverage, tiny_dataset):
    cfg = load_config(None, [*TINY, "query.options.maxherding.bandwidth=0.8", "query.options.typiclust.neighbours=3"])
    vector = two_axes(tiny_dataset)
    selection = get_strategy("coverage_then_uncertainty", {"coverage": coverage}).select(
        embedded_context(cfg, tiny_dataset, vector, BUDGET, seed=4))
    expected = get_strategy(coverage, cfg.query.options[coverage]).select(
        embedded_context(cfg, tiny_dataset, vector, BUDGET, seed=4))
    assert (selection.indices, selection.scores, selection.costs) == (expected.indices, expected.scores, expected.costs)
    assert selection.details["branch"] == coverage and selection.details["coverage"] < 0.5  # recorded with the query
    assert 0 < selection.spent <= BUDGET


def test_from_the_threshold_on_the_selection_is_claspes(tiny_cfg, tiny_dataset):
    torch.manual_seed(0)
    model, device = build_model(3, 2, tiny_cfg.model.width, tiny_cfg.model.depth, tiny_cfg.model.dropout), "cpu"

    def context():
        ctx = embedded_context(tiny_cfg, tiny_dataset, lambda region: np.ones(3), BUDGET, seed=2)  # coverage 1
        ctx.score_pool = lambda regions, hooks=None: mc_dropout_scores(model, tiny_dataset, regions, 2, 4,
                                                                       torch.device(device), hooks=hooks)
        return ctx

    strategy = get_strategy("coverage_then_uncertainty")
    assert strategy.branch(context()) == ("claspe", pytest.approx(1.0))
    selection, expected = strategy.select(context()), get_strategy("claspe").select(context())
    assert (selection.indices, selection.scores, selection.costs) == (expected.indices, expected.scores, expected.costs)
    assert selection.details == {"branch": "claspe", "coverage": pytest.approx(1.0)}
