"""One query and how its pseudo-labels are applied: shared by the simulation and the campaign workspace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from activeseg.core.config import Config
from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region
from activeseg.core.pool import round_budget, unlabeled
from activeseg.model.inference import RegionReduction, mc_dropout_scores
from activeseg.model.network import load_checkpoint, pick_device
from activeseg.strategies import QueryContext, Selection, get_strategy


def select_regions(cfg: Config, strategy_name: str, dataset: Dataset, split: dict[str, list[str]],
                   state: LabelState, regions: list[Region], checkpoint: Path, round_number: int, seed: int,
                   cache_dir: Path, progress: bool = False, model_id: str | None = None
                   ) -> tuple[Selection, QueryContext]:
    """One query with the model at ``checkpoint`` over the unlabeled ``regions``: the strategy's
    selection and the context it saw. ``model_id`` (default: the checkpoint path) names the model in
    the context, e.g. as the origin of pseudo-labels. The query draws from torch's random state seeded
    from (``seed``, ``round_number``) and restored afterwards, and MC dropout draws each region's masks
    from (that seed, the region id), so the same model picks the same regions in any process, batch or shard."""
    device = pick_device(cfg.train.device, cfg.train.threads)
    query_seed = int(np.random.SeedSequence([seed, round_number]).generate_state(1)[0])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(query_seed)
        model, _ = load_checkpoint(checkpoint, device)
        strategy = get_strategy(strategy_name, cfg.query.options.get(strategy_name))
        ctx = QueryContext(
            candidates=unlabeled(regions, state),
            budget=round_budget(cfg, state),
            state=state,
            dataset=dataset,
            rng=np.random.default_rng([seed, round_number]),
            score_pool=lambda regs, hooks=None: mc_dropout_scores(
                model, dataset, regs, cfg.query.mc_passes, cfg.query.batch_size, device, progress=progress,
                reduction=RegionReduction(cfg.query.reduction, cfg.query.top_fraction), hooks=hooks,
                seed=query_seed),
            round_number=round_number,
            model_id=model_id or str(checkpoint),
            extras={"model": model, "device": device, "cfg": cfg, "split": split, "cache_dir": cache_dir},
        )
        return strategy.select(ctx), ctx


def apply_pseudo(state: LabelState, pseudo: list[tuple[Region, np.ndarray]], origin: str, replace: bool) -> None:
    """Pseudo-label the regions' unrevealed pixels (each mask (h, w) of the region's box), after
    dropping every earlier pseudo-label if ``replace``."""
    if replace:
        state.clear_pseudo()
    for region, mask in pseudo:
        state.set_pseudo(region, mask, origin=origin)
