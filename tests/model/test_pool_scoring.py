"""Pool scoring in shards with the score cache: the same scores as one MC-dropout pass over the pool, and
a second query with the same model scores nothing."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from activeseg.core.config import SlidesConfig
from activeseg.core.partition import partition_image
from activeseg.model.inference import PixelMaps, RegionReduction, mc_dropout_scores
from activeseg.model.network import build_model, save_checkpoint
from activeseg.model.pool_scoring import ScoreCache, ScoringJob, cached_scorer, load_model, local_shards

FIELDS = ("ids", "entropy", "variance", "bald", "descriptors")


def job_for(tmp_path, dataset, seed: int = 7) -> ScoringJob:
    torch.manual_seed(0)
    save_checkpoint(build_model(3, 2, 4, 2, 0.3), tmp_path / "model.pt",
                    {"in_channels": 3, "classes": 2, "width": 4, "depth": 2, "dropout": 0.3})
    return ScoringJob(str(tmp_path / "model.pt"), "sha-a", dataset, str(dataset.root), dataset.classes,
                      SlidesConfig(), passes=3, batch_size=4, device="cpu", threads=0,
                      reduction=RegionReduction(), seed=seed)


def pool(dataset) -> list:
    return [r for stem in dataset.stems[:3] for r in partition_image(stem, 64, 64, 32, 0.0)]


class Counting:
    """A shard runner scoring in this process that records the shards it was given (their region ids)."""

    def __init__(self):
        self.shards: list[list[str]] = []

    def __call__(self, job, shards, hooks):
        self.shards += [[r.id for r in s] for s in shards]
        return local_shards(job, shards, hooks)


def edge_score(maps: PixelMaps) -> torch.Tensor:
    """A per-pixel hook: (B, h, w) foreground probability."""
    return maps.mean_prob[:, 1]


def assert_same(a, b, hooks=()) -> None:
    for name in FIELDS:
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name
    for name in hooks:
        assert np.array_equal(a.extra[name], b.extra[name]), name


def test_shards_and_cache_give_the_scores_of_one_pass_and_a_second_query_scores_nothing(tmp_path, tiny_dataset):
    job, regions = job_for(tmp_path, tiny_dataset), pool(tiny_dataset)
    model, device = job.model()
    whole = mc_dropout_scores(model, tiny_dataset, regions, 3, 4, device, seed=7, hooks={"fg": edge_score})
    counting = Counting()
    score = cached_scorer(job, ScoreCache(tmp_path / "scores", "sha-a"), shard_size=8, run_shards=counting)

    first = score(regions)
    assert [len(s) for s in counting.shards] == [8, 4]  # 12 regions in shards of 8, in region order
    assert_same(first, whole)  # the same batches of 4 as one pass: the same floats
    again = cached_scorer(job, ScoreCache(tmp_path / "scores", "sha-a"), 8, counting)(regions[::-1])
    assert len(counting.shards) == 2  # nothing rescored: all 12 from the cache, in the order asked for
    assert again.ids == [r.id for r in regions[::-1]] and np.array_equal(again.bald, whole.bald[::-1])

    hooked = score(regions, {"fg": edge_score})  # another hook: scored (and cached) apart
    assert len(counting.shards) == 4
    assert_same(hooked, whole, ["fg"])
    assert (tmp_path / "scores" / "sha-a.sqlite").is_file()


def test_a_resumed_query_scores_only_what_is_missing_and_another_model_or_seed_rescored(tmp_path, tiny_dataset):
    job, regions = job_for(tmp_path, tiny_dataset), pool(tiny_dataset)
    counting = Counting()
    cached_scorer(job, ScoreCache(tmp_path / "scores", "sha-a"), 4, counting)(regions[:8])  # cut short
    full = cached_scorer(job, ScoreCache(tmp_path / "scores", "sha-a"), 4, counting)(regions)
    assert counting.shards[2:] == [[r.id for r in regions[8:]]]
    assert_same(full, cached_scorer(job, ScoreCache(tmp_path / "fresh", "sha-a"), 12)(regions))

    other_seed = job_for(tmp_path, tiny_dataset, seed=8)
    cached_scorer(other_seed, ScoreCache(tmp_path / "scores", "sha-a"), 12, counting)(regions)
    cached_scorer(job, ScoreCache(tmp_path / "scores", "sha-b"), 12, counting)(regions)
    assert [len(s) for s in counting.shards[3:]] == [12, 12]


def test_a_pickled_job_reads_the_dataset_again_and_scores_the_same(tmp_path, tiny_dataset):
    job, regions = job_for(tmp_path, tiny_dataset), pool(tiny_dataset)[:4]
    copy = pickle.loads(pickle.dumps(job))
    assert copy.dataset is None and copy.dataset_root == str(tiny_dataset.root)
    assert_same(copy.score(regions), job.score(regions))
    load_model.cache_clear()
    job.model(), copy.model()
    assert load_model.cache_info().misses == 1  # one load per process and checkpoint hash
