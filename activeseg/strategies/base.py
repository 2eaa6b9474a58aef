"""The shared base of every query strategy.

A strategy ranks or picks candidate regions of the training pool; subclasses only compute scores
(``score``) or pick (``select``), as baal's heuristics do. The base turns a ranking into a selection
that spends the round's budget of newly revealed pixels: regions are taken in rank order, skipping one
whose cost would overrun what is left, until nothing more fits. Costs account for overlap between the
round's own picks (two overlapping patches never pay twice). If no candidate fits at all (whole
images larger than the budget), the top-ranked one is taken alone, so a round always reveals
something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from activeseg.core.config import ConfigError, NoOptions, Settings, build
from activeseg.core.data import Dataset
from activeseg.model.inference import PixelHook, PoolScores, ScorePool
from activeseg.core.labels import LabelState
from activeseg.core.partition import Region


@dataclass
class QueryContext:
    """Everything a strategy may look at. ``candidates`` are unlabeled training-pool regions; the model
    outputs are computed lazily, once, by ``score_pool`` (MC-dropout inference over the candidates,
    each per-pixel score reduced per region as ``query.reduction`` says)."""

    candidates: list[Region]
    budget: int
    state: LabelState
    dataset: Dataset
    rng: np.random.Generator
    score_pool: ScorePool | None = None
    round_number: int = 0
    model_id: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def pool(self) -> PoolScores:
        return self._scorer()(self.candidates)

    def pixel_score(self, name: str, hook: PixelHook) -> np.ndarray:
        """(N,) the candidates' region scores of the per-pixel score ``hook``, reduced like the pool's
        scores, in a streaming MC-dropout pass of its own (no per-pixel map of the pool is kept)."""
        return self.pixel_scores({name: hook}).extra[name]

    def pixel_scores(self, hooks: dict[str, PixelHook]) -> PoolScores:
        """The candidates' scores with every hook of ``hooks`` (``extra[name]`` (N,) each) in one streaming
        MC-dropout pass of their own."""
        return self._scorer()(self.candidates, hooks)

    def _scorer(self) -> ScorePool:
        if self.score_pool is None:
            raise RuntimeError("this strategy needs a trained model, and no model was given")
        return self.score_pool

    @cached_property
    def costs(self) -> np.ndarray:
        """(N,) newly revealed pixels of each candidate taken alone."""
        return np.array([self.state.new_pixels(r) for r in self.candidates], dtype=np.int64)


@dataclass
class Selection:
    """Indices into the candidates, in pick order, with their scores and the pixels each newly reveals.

    ``pseudo`` holds (region, (h, w) mask of its in-image part) pseudo-labels made by the model
    ``pseudo_origin``; with ``replace_pseudo`` they replace every earlier pseudo-label of the pool.
    ``details``: what else the strategy decided, for the record (e.g. the branch a switch took).
    """

    indices: list[int]
    scores: list[float]
    costs: list[int]
    pseudo: list[tuple[Region, np.ndarray]] = field(default_factory=list)
    pseudo_origin: str = ""
    replace_pseudo: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def spent(self) -> int:
        return int(sum(self.costs))


def take_within(order: np.ndarray, ctx: QueryContext, budget: int, taken: dict[str, np.ndarray]
                ) -> tuple[list[int], list[int]]:
    """Walk ``order`` and take every candidate whose new pixels fit what is left of ``budget``.

    ``taken`` holds per image the pixels known or already taken (copies of the known masks, filled in
    as candidates are taken), so calls that share it never pay twice for a pixel. Returns (indices,
    incremental costs)."""
    picks, costs, left = [], [], budget
    for i in order:
        if ctx.costs[i] == 0:
            continue
        region = ctx.candidates[int(i)]
        known = taken.setdefault(region.stem, ctx.state.known[region.stem].copy())
        ys, xs = region.clipped(*known.shape)
        cost = int((~known[ys, xs]).sum())
        if cost == 0 or cost > left:
            continue
        known[ys, xs] = True
        picks.append(int(i))
        costs.append(cost)
        left -= cost
        if left == 0:
            break
    return picks, costs


def fill_budget(order: np.ndarray, ctx: QueryContext) -> tuple[list[int], list[int]]:
    """Take candidates in ``order`` while they fit the budget; returns (indices, incremental costs)."""
    picks, costs = take_within(order, ctx, ctx.budget, {})
    if not picks:
        first = next((int(i) for i in order if ctx.costs[i] > 0), None)
        if first is not None:
            picks, costs = [first], [int(ctx.costs[first])]
    return picks, costs


def affordable_count(costs: np.ndarray, budget: int) -> int:
    """How many candidates of median cost the pixel budget buys: ``max(1, budget // median)``, the median
    taken over candidates that still reveal something (``costs > 0``). Strategies whose papers count
    samples (a batch of B, T patches, K candidates) turn the pixel budget into a count with this; the
    median is robust to the few clipped or partly revealed regions. 0 if no candidate reveals anything."""
    positive = np.asarray(costs)[np.asarray(costs) > 0]
    if positive.size == 0:
        return 0
    return max(1, int(budget // np.median(positive)))


class Strategy:
    """Base class. ``Options`` is the settings model of the strategy's ``query.options.<name>``: its entry
    of ``activeseg.core.config.STRATEGY_OPTIONS``, where the settings are checked when they are read."""

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True
    Options: ClassVar[type[Settings]] = NoOptions

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = build(self.Options, options or {}, f"query.options.{self.name}")

    def score(self, ctx: QueryContext) -> np.ndarray:
        """(N,) higher means query first."""
        raise NotImplementedError(f"{type(self).__name__} must define score() or select()")

    def refuse_slides(self, ctx: QueryContext, stems: list[str], why: str) -> None:
        """A :class:`ConfigError` when one of ``stems`` is a whole-slide image, which this strategy
        cannot query: ``why`` (it reads images whole, and a slide is only ever read per region)."""
        slide = next((s for s in stems if ctx.dataset.is_slide(s)), None)
        if slide is not None:
            raise ConfigError(f"query.strategy: {self.name!r} cannot query whole-slide images "
                              f"({ctx.dataset.samples[slide].image_path}): {why}; a slide is only read per region. "
                              "Choose a strategy that scores regions (entropy, bald, ...)")

    def select(self, ctx: QueryContext) -> Selection:
        scores = np.asarray(self.score(ctx), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        picks, costs = fill_budget(order, ctx)
        return Selection(picks, [float(scores[i]) for i in picks], costs)
