"""One query and how its pseudo-labels are applied: shared by the simulation and the campaign workspace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from activeseg.core.config import (Config, ConfigError, MaxHerdingOptions, TypiclustOptions, build,
                                    initial_method)
from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.core.pool import initial_regions, round_budget, unlabeled
from activeseg.core.util import sha256_file
from activeseg.model.inference import RegionReduction
from activeseg.model.network import pick_device
from activeseg.model.pool_scoring import ScoreCache, ScoringJob, ShardRunner, cached_scorer, local_shards
from activeseg.strategies import QueryContext, Selection, get_strategy
from activeseg.strategies.representative import maxherding_order, typiclust_order


def select_regions(cfg: Config, strategy_name: str, dataset: Dataset, split: dict[str, list[str]],
                   state: LabelState, regions: list[Region], checkpoint: Path, round_number: int, seed: int,
                   cache_dir: Path, progress: bool = False, model_id: str | None = None,
                   run_shards: ShardRunner = local_shards,
                   pool_embeddings: dict[str, np.ndarray] | None = None,
                   first_round: int = 0) -> tuple[Selection, QueryContext]:
    """One query with the model at ``checkpoint`` over the unlabeled ``regions``: the strategy's
    selection and the context it saw. ``model_id`` (default: the checkpoint path) names the model in
    the context, e.g. as the origin of pseudo-labels. The query draws from torch's random state seeded
    from (``seed``, ``round_number``) and restored afterwards, and MC dropout draws each region's masks
    from (that seed, the region id), so the same model picks the same regions in any process, batch or shard.

    MC dropout runs through ``run_shards`` (default: in this process; the query task passes a Dask one
    with ``query.cluster``) in shards of ``query.shard_size``, its scores cached in
    ``cache_dir/scores/<checkpoint sha256>.sqlite`` (:func:`activeseg.model.pool_scoring.cached_scorer`).
    ``pool_embeddings`` (region id -> (D,) unit vector by the pretrained encoder, every region of the pool)
    reach the strategy as ``extras["pool_embeddings"]``, for the representativeness strategies.
    ``first_round`` is the round that queries first in the campaign (0 in a simulation, 1 in a workspace):
    ``extras["query_index"]`` = ``round_number - first_round`` counts the campaign's queries from 0 (claspe's
    noise schedule reads it)."""
    query_seed = int(np.random.SeedSequence([seed, round_number]).generate_state(1)[0])
    job = scoring_job(cfg, dataset, checkpoint, query_seed, progress)
    device = pick_device(cfg.train.device, cfg.train.threads)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model, _ = job.model()  # built before the seed, so a model cached in this process changes nothing
        torch.manual_seed(query_seed)
        strategy = get_strategy(strategy_name, cfg.query.options.get(strategy_name))
        ctx = QueryContext(
            candidates=unlabeled(regions, state),
            budget=round_budget(cfg, state),
            state=state,
            dataset=dataset,
            rng=np.random.default_rng([seed, round_number]),
            score_pool=cached_scorer(job, ScoreCache(cache_dir / "scores", job.checkpoint_sha256),
                                     cfg.query.shard_size, run_shards),
            round_number=round_number,
            model_id=model_id or str(checkpoint),
            extras={"model": model, "device": device, "cfg": cfg, "split": split, "cache_dir": cache_dir,
                    "query_index": round_number - first_round,
                    **({"pool_embeddings": pool_embeddings} if pool_embeddings is not None else {})},
        )
        return strategy.select(ctx), ctx


def choose_initial(cfg: Config, strategy_name: str, regions: list[Region], seed: int,
                   pool_embeddings: dict[str, np.ndarray] | None) -> tuple[list[Region], str]:
    """The initial labeled set of a campaign (``partition.initial_labeled`` regions of ``regions``) and how it
    was chosen (:func:`activeseg.core.config.initial_method`): seeded at random, or the first picks of
    TypiClust or MaxHerding over the regions' embeddings by the pretrained encoder, nothing labeled yet."""
    method, count = initial_method(cfg, strategy_name), cfg.partition.initial_labeled
    if method == "random":
        return initial_regions(regions, count, seed), method
    if pool_embeddings is None:
        raise ConfigError(f"partition.initial_strategy: {method} needs the pool's embeddings by the pretrained "
                          "encoder, and there are none (pretrain.enabled: true)")
    X = np.stack([pool_embeddings[r.id] for r in regions])
    options = cfg.query.options.get(method) or {}
    if method == "typiclust":
        o = build(TypiclustOptions, options, "query.options.typiclust")
        order = typiclust_order(X, np.zeros((0, X.shape[1])), count, seed, o.min_cluster_size, o.neighbours)
    else:
        o = build(MaxHerdingOptions, options, "query.options.maxherding")
        order = maxherding_order(X, np.zeros((0, X.shape[1])), count, o.bandwidth)
    return [regions[int(i)] for i in sorted(order[:count])], method


def scoring_job(cfg: Config, dataset: Dataset, checkpoint: Path, query_seed: int, progress: bool = False
                ) -> ScoringJob:
    """What a shard of the query's MC-dropout scoring needs (``query`` and ``train.device`` settings)."""
    q = cfg.query
    return ScoringJob(str(checkpoint), sha256_file(checkpoint), dataset, str(dataset.root), dataset.classes,
                      dataset.slides, q.mc_passes, q.batch_size, cfg.train.device, cfg.train.threads,
                      RegionReduction(q.reduction, q.top_fraction), query_seed, q.options, progress)


def apply_pseudo(state: LabelState, pseudo: list[tuple[Region, np.ndarray]], origin: str, replace: bool) -> None:
    """Pseudo-label the regions' unrevealed pixels (each mask (h, w) of the region's box), after
    dropping every earlier pseudo-label if ``replace``."""
    if replace:
        state.clear_pseudo()
    for region, mask in pseudo:
        state.set_pseudo(region, mask, origin=origin)
