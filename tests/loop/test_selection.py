"""The query shared by simulation and workspace: MC-dropout scoring seeded from (seed, round)."""

import torch

from activeseg.core.data import load_or_create_split
from activeseg.core.labels import LabelState
from activeseg.core.pool import pool_regions
from activeseg.loop.selection import select_regions
from activeseg.model.network import build_model, save_checkpoint


def query(cfg, dataset, tmp_path, seed, round_number):
    split = load_or_create_split(tmp_path / "split.json", dataset.stems, 0.6, 0.2, 0)
    state = LabelState.empty({s: (dataset.samples[s].height, dataset.samples[s].width) for s in split["train"]})
    selection, _ = select_regions(cfg, "mc_variance", dataset, split, state, pool_regions(dataset, split["train"], cfg),
                                  tmp_path / "model.pt", round_number, seed, tmp_path / "cache")
    return selection.indices


def test_the_same_model_picks_the_same_regions_and_the_callers_random_state_is_kept(tiny_cfg, tiny_dataset,
                                                                                      tmp_path):
    torch.manual_seed(123)
    model = build_model(3, 2, tiny_cfg.model.width, tiny_cfg.model.depth, 0.5)
    save_checkpoint(model, tmp_path / "model.pt", {"in_channels": 3, "classes": 2, "width": tiny_cfg.model.width,
                                                   "depth": tiny_cfg.model.depth, "dropout": 0.5})
    before = torch.get_rng_state()
    first = query(tiny_cfg, tiny_dataset, tmp_path, 0, 1)
    assert torch.equal(torch.get_rng_state(), before)  # scoring draws from its own seeded state
    torch.manual_seed(999)  # whatever the caller's state, the same picks
    assert query(tiny_cfg, tiny_dataset, tmp_path, 0, 1) == first
    others = {tuple(query(tiny_cfg, tiny_dataset, tmp_path, seed, k)) for seed, k in [(1, 1), (0, 2), (2, 3)]}
    assert others != {tuple(first)}  # other (seed, round): other dropout masks, so (almost surely) other picks
