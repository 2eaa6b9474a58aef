"""``coverage_then_uncertainty``: a representativeness strategy while the labeled set covers the pool
poorly, then ClaSP PE's class-balanced uncertainty.

Hacohen et al. 2022 find that representative picks win at low budgets and uncertain ones at high budgets;
the budget at which they cross depends on the data. The switch reads it from the pool itself: the
generalised coverage of Bae et al. 2024,
GCov = (1/|P|) sum_{i in P} max_{l in labeled} k(x_i, x_l), k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)),
over the training pool P (labeled and candidate regions, L2-normalised embeddings). While
GCov < ``threshold`` the round is ``coverage``'s (``typiclust`` or ``maxherding``), else ``claspe``'s.

Decisions:
- Embeddings as ``typiclust`` and ``maxherding``: the pretrained encoder's when the round has them, else
  the round model's descriptors (the measure then drifts with the model from round to round).
- The delegate gets its own ``query.options.<name>`` from the run's settings (``extras["cfg"]``) and the
  query's generator; the switch draws nothing from it.
- ``branch`` returns the round's choice and coverage; the selection is the delegate's, scores included.
"""

from __future__ import annotations

import numpy as np

from activeseg.core.config import CoverageThenUncertaintyOptions
from activeseg.strategies.base import QueryContext, Selection, Strategy
from activeseg.strategies.registry import get_strategy, register
from activeseg.strategies.representative import embeddings, mean_coverage


@register
class CoverageThenUncertaintyStrategy(Strategy):
    name = "coverage_then_uncertainty"
    Options = CoverageThenUncertaintyOptions

    def branch(self, ctx: QueryContext) -> tuple[str, float]:
        """(the strategy this round delegates to, the pool's mean coverage by the labeled regions)."""
        candidates, labeled = embeddings(ctx)
        covered = mean_coverage(np.vstack([labeled, candidates]), labeled, self.options.bandwidth)
        return (self.options.coverage if covered < self.options.threshold else "claspe"), covered

    def select(self, ctx: QueryContext) -> Selection:
        """The selection of the strategy :meth:`branch` names, with the branch and the coverage in its
        ``details``."""
        name, covered = self.branch(ctx)
        selection = get_strategy(name, ctx.extras["cfg"].query.options.get(name)).select(ctx)
        selection.details = {**selection.details, "branch": name, "coverage": round(float(covered), 6)}
        return selection
