"""Pool scoring in shards, anywhere, with a score cache: what the query step runs MC dropout through.

The candidates still unscored are cut into shards of ``query.shard_size`` regions (in region order); a
:data:`ShardRunner` scores the shards, in this process (:func:`local_shards`, the default) or on a
cluster (the Prefect/Dask runner of ``tasks/scoring.py``; the library never imports it). Each shard's
scores are written to the :class:`ScoreCache` as it comes back, so a resumed or retried query does not
rescore a region, and the merged result is in the order of the regions asked for.

A :class:`ScoringJob` is what a shard needs, picklable: the checkpoint (and its hash), the dataset (sent
as its folder and re-read where it lands), the MC-dropout settings and the seed. Each process loads the
checkpoint once (:func:`load_model`, keyed by its hash) and the dataset once (:func:`open_dataset`).
Every region draws its dropout masks from (seed, region id) (:func:`activeseg.model.inference.region_generator`),
so a region's scores do not depend on its shard, process or worker, up to the float rounding of the batch
it is in (PyTorch's CPU kernels may round a batch of 1 differently from a batch of 4). One process and a
cluster cut the same shards from the same candidates, so their scores, and the selection, are identical.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activeseg.core.config import SlidesConfig
from activeseg.core.data import Dataset, load_dataset
from activeseg.core.partition import Region
from activeseg.core.util import canonical_json, sha256_text
from activeseg.model.inference import PixelHook, PoolScores, RegionReduction, ScorePool, mc_dropout_scores
from activeseg.model.network import EDConvNet, load_checkpoint, pick_device


@lru_cache(maxsize=1)
def load_model(checkpoint: str, checkpoint_sha256: str, device: str, threads: int) -> tuple[EDConvNet, torch.device]:
    """The model at ``checkpoint`` on the device ``train.device`` names, loaded once per process and
    checkpoint hash (the last one kept: a new round's model replaces it)."""
    target = pick_device(device, threads)
    return load_checkpoint(checkpoint, target)[0], target


@lru_cache(maxsize=1)
def open_dataset(root: str, classes: int, slides_json: str) -> Dataset:
    """The dataset folder (``data.slides`` as JSON), indexed once per process (its pixel cache then
    shared by the shards)."""
    return load_dataset(root, classes, SlidesConfig.model_validate_json(slides_json))


@dataclass(frozen=True)
class ScoringJob:
    """Everything a shard needs to score regions in any process. ``dataset`` is used where the job was
    made; a pickled copy (a Dask worker's) drops it and re-reads ``dataset_root`` there (and shows no
    progress bar)."""

    checkpoint: str
    checkpoint_sha256: str
    dataset: Dataset | None
    dataset_root: str
    classes: int
    slides: SlidesConfig
    passes: int
    batch_size: int
    device: str
    threads: int
    reduction: RegionReduction
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "dataset": None, "progress": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def model(self) -> tuple[EDConvNet, torch.device]:
        return load_model(self.checkpoint, self.checkpoint_sha256, self.device, self.threads)

    def score(self, regions: list[Region], hooks: Mapping[str, PixelHook] | None = None) -> PoolScores:
        """MC-dropout scores of ``regions`` (:func:`mc_dropout_scores`)."""
        model, device = self.model()
        dataset = self.dataset or open_dataset(self.dataset_root, self.classes, self.slides.model_dump_json())
        return mc_dropout_scores(model, dataset, regions, self.passes, self.batch_size, device,
                                 progress=self.progress, reduction=self.reduction, hooks=hooks, seed=self.seed)

    def key(self, hooks: Mapping[str, PixelHook]) -> str:
        """What scores depend on besides the model and the region: the MC-dropout settings, the seed, the
        hooks' names and the strategies' options (which set what a hook computes)."""
        return sha256_text(canonical_json({
            "passes": self.passes, "reduction": [self.reduction.kind, self.reduction.top_fraction],
            "seed": self.seed, "hooks": sorted(hooks), "options": self.options}))[:16]


ShardRunner = Callable[[ScoringJob, list[list[Region]], Mapping[str, PixelHook]], Iterator[tuple[int, PoolScores]]]
"""Scores the shards with the job: yields (shard index, its scores) as each shard finishes, in any order."""


def local_shards(job: ScoringJob, shards: list[list[Region]], hooks: Mapping[str, PixelHook]
                 ) -> Iterator[tuple[int, PoolScores]]:
    """The default :data:`ShardRunner`: the shards one after the other, in this process."""
    for index, shard in enumerate(shards):
        yield index, job.score(shard, hooks)


def concat(parts: list[PoolScores], hooks: Mapping[str, Any]) -> PoolScores:
    """The regions of ``parts`` one after the other (no maps)."""
    parts = [p for p in parts if p.ids]
    if not parts:
        return PoolScores([], np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 0), np.float32),
                          extra={name: np.zeros(0) for name in hooks})
    return PoolScores([i for p in parts for i in p.ids],
                      *(np.concatenate([getattr(p, k) for p in parts]) for k in ("entropy", "variance", "bald")),
                      np.concatenate([p.descriptors for p in parts]),
                      extra={name: np.concatenate([p.extra[name] for p in parts]) for name in hooks})


def take(scores: PoolScores, ids: list[str]) -> PoolScores:
    """The rows of ``ids``, in that order."""
    where = {region_id: i for i, region_id in enumerate(scores.ids)}
    rows = np.array([where[i] for i in ids], dtype=np.int64)
    return PoolScores(list(ids), scores.entropy[rows], scores.variance[rows], scores.bald[rows],
                      scores.descriptors[rows], extra={name: v[rows] for name, v in scores.extra.items()})


class ScoreCache:
    """Region scores on disk, one SQLite file per model (``<folder>/<model sha256>.sqlite``), a row per
    (settings key, region id): the three scores, the hooks' scores (JSON; a float64 comes back exact) and
    the descriptor (float32 bytes). Only the process running the query writes, a shard per transaction."""

    def __init__(self, folder: Path, model_sha256: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{model_sha256}.sqlite"
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT, region TEXT, entropy REAL, variance REAL, "
                       "bald REAL, extra TEXT, descriptor BLOB, PRIMARY KEY (key, region))")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def load(self, key: str, ids: list[str], hooks: Mapping[str, Any]) -> PoolScores:
        """The cached scores among ``ids`` (those found, in the cache's order)."""
        wanted = set(ids)
        with self._db() as db:
            rows = [r for r in db.execute("SELECT region, entropy, variance, bald, extra, descriptor FROM scores "
                                          "WHERE key = ?", (key,)) if r[0] in wanted]
        if not rows:
            return concat([], hooks)
        extra = [json.loads(r[4]) for r in rows]
        return PoolScores([r[0] for r in rows], *(np.array([r[k] for r in rows], np.float64) for k in (1, 2, 3)),
                          np.stack([np.frombuffer(r[5], np.float32) for r in rows]),
                          extra={name: np.array([e[name] for e in extra], np.float64) for name in hooks})

    def save(self, key: str, scores: PoolScores) -> None:
        rows = [(key, region_id, float(scores.entropy[i]), float(scores.variance[i]), float(scores.bald[i]),
                 json.dumps({name: float(v[i]) for name, v in scores.extra.items()}),
                 np.ascontiguousarray(scores.descriptors[i], np.float32).tobytes())
                for i, region_id in enumerate(scores.ids)]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def cached_scorer(job: ScoringJob, cache: ScoreCache, shard_size: int,
                  run_shards: ShardRunner = local_shards) -> ScorePool:
    """The :data:`ScorePool` a query context gets: the regions not in the cache, in shards of
    ``shard_size``, scored by ``run_shards``; each shard cached as it comes back; the merged scores in
    the order of the regions asked for."""

    def score(regions: list[Region], hooks: Mapping[str, PixelHook] | None = None) -> PoolScores:
        hooks = hooks or {}
        key = job.key(hooks)
        cached = cache.load(key, [r.id for r in regions], hooks)
        done = set(cached.ids)
        todo = [r for r in regions if r.id not in done]
        shards = [todo[start : start + shard_size] for start in range(0, len(todo), shard_size)]
        parts = [cached]
        for _, scores in run_shards(job, shards, hooks):
            cache.save(key, scores)
            parts.append(scores)
        return take(concat(parts, hooks), [r.id for r in regions])

    return score
