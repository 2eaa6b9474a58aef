"""``bald``: ranks by PoolScores.bald within the pixel budget; a tiny campaign end to end."""

from __future__ import annotations

import json

import numpy as np

from activeseg.model.inference import PoolScores
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.loop.simulate import simulate
from activeseg.strategies import QueryContext, get_strategy


def context(bald: list[float], budget: int) -> QueryContext:
    """One 4 x 4n image cut into n disjoint 4 x 4 regions (16 pixels each)."""
    n = len(bald)
    regions = [Region("img", 0, 4 * i, 4, 4 * i + 4) for i in range(n)]
    zeros = np.zeros(n)
    pool = PoolScores([r.id for r in regions], zeros + 1.0, zeros + 1.0, np.array(bald), np.zeros((n, 2)))
    return QueryContext(regions, budget, LabelState.empty({"img": (4, 4 * n)}), None, np.random.default_rng(0),
                        score_pool=lambda regs: pool)


def test_bald_takes_the_highest_mutual_information_within_the_budget():
    selection = get_strategy("bald").select(context([0.1, 0.5, 0.3, 0.2, 0.4], budget=48))
    assert selection.indices == [1, 4, 2]
    assert selection.scores == [0.5, 0.4, 0.3]
    assert selection.spent == 48


def test_bald_never_exceeds_the_budget():
    selection = get_strategy("bald").select(context([0.1, 0.5, 0.3], budget=40))
    assert selection.indices == [1, 2]
    assert selection.spent == 32


def test_bald_campaign_end_to_end(tiny_cfg, tiny_data_dir, tmp_path):
    check_campaign("bald", tiny_cfg, tiny_data_dir, tmp_path / "out")


def check_campaign(name, cfg, data_dir, out) -> list[dict]:
    """Two rounds; the query spends at most the budget, only on training images, only unrevealed pixels."""
    results = simulate(cfg, data_dir, [name], [0], out, rounds=2, progress=False)
    assert [r["round"] for r in results["runs"]] == [0, 1]
    split = json.loads((out / "split.json").read_text())
    picked = json.loads((out / "runs" / name / "seed-0" / "round-000" / "selection.json").read_text())
    budget = round(cfg.query.budget_fraction * len(split["train"]) * 64 * 64)
    assert picked and sum(p["cost"] for p in picked) <= budget
    assert all(p["cost"] > 0 and p["id"].rsplit("_", 3)[0] in split["train"] for p in picked)
    return picked
