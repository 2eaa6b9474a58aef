"""The query shared by simulation and workspace: MC-dropout scoring seeded from (seed, round)."""

import numpy as np
import pytest
import torch

from activeseg.core.config import ConfigError, initial_method
from activeseg.core.data import load_or_create_split
from activeseg.core.labels import LabelState
from activeseg.core.pool import initial_regions, pool_regions
from activeseg.loop.selection import choose_initial, select_regions
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


def blob_regions(sizes=(9, 7, 6)):
    """Regions of an image "a" whose unit embeddings form well-separated blobs of ``sizes`` points around
    the axes e_0, e_1, e_2: (regions, embeddings by region id)."""
    from activeseg.core.partition import Region

    regions, embeddings = [], {}
    for blob, size in enumerate(sizes):
        for offset in np.linspace(-0.04, 0.04, size):
            region = Region("a", 10 * len(regions), 0, 10 * len(regions) + 10, 10)
            vector = np.zeros(4)
            vector[blob], vector[3] = 1.0, offset
            regions.append(region)
            embeddings[region.id] = vector / np.linalg.norm(vector)
    return regions, embeddings


def test_the_initial_set_is_random_with_random_and_the_strategys_own_choice_with_own(tiny_cfg):
    regions, embeddings = blob_regions()
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.partition.initial_labeled, cfg.partition.initial_strategy = 3, "random"
    assert choose_initial(cfg, "typiclust", regions, 3, None) == (initial_regions(regions, 3, 3), "random")
    cfg.partition.initial_strategy, cfg.pretrain.enabled = "own", True
    assert initial_method(cfg, "entropy") == "random" and initial_method(cfg, "maxherding") == "maxherding"
    cfg.query.options = {"coverage_then_uncertainty": {"coverage": "maxherding"}}
    assert initial_method(cfg, "coverage_then_uncertainty") == "maxherding"
    first, method = choose_initial(cfg, "typiclust", regions, 3, embeddings)
    # TypiClust, K = 3 clusters, one per blob: a point of each blob (returned in pool order)
    assert method == "typiclust" and [int(np.argmax(embeddings[r.id][:3])) for r in first] == [0, 1, 2]
    small_regions, small_embeddings = blob_regions((9, 7, 2))  # a blob of <= 5 points is left out
    first, _ = choose_initial(cfg, "typiclust", small_regions, 3, small_embeddings)
    assert [int(np.argmax(small_embeddings[r.id][:3])) for r in first] == [0, 0, 1]
    first, method = choose_initial(cfg, "maxherding", regions, 3, embeddings)
    assert method == "maxherding" and sorted(int(np.argmax(embeddings[r.id][:3])) for r in first) == [0, 1, 2]


def test_a_chosen_start_without_embeddings_is_refused(tiny_cfg):
    regions, _ = blob_regions()
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.partition.initial_strategy, cfg.pretrain.enabled = "maxherding", True
    with pytest.raises(ConfigError, match="needs the pool's embeddings"):
        choose_initial(cfg, "random", regions, 0, None)
