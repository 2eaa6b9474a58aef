"""The benchmark's statistics (issue 9, item 4): plain functions over per-seed values.

A strategy is compared with ``random`` seed by seed (paired: the same seed fixes the same initial
labeled regions and the same training seeds), on the AUC of Dice over rounds (Belharbi et al.,
``activeseg.metrics.auc_dice``):

- the mean and a two-sided 95 % t interval over seeds: mean +- t_{0.975, S-1} s / sqrt(S), s the
  sample standard deviation (ddof=1); undefined (None) with a single seed;
- the two-sided Wilcoxon signed-rank p-value of the differences (``scipy.stats.wilcoxon``, zero
  differences dropped, scipy's exact null distribution when there are no ties, its normal
  approximation otherwise). With S non-zero differences the smallest possible p is 2 / 2^S, so below
  6 seeds (0.0625 at 5) no difference can reach p < 0.05. All-zero differences give p = 1.0 (no seed
  shows a difference; scipy itself would warn and divide by zero);
- the labeled-pixel fraction at which a learning curve first reaches a level (a share of ``full``'s
  Dice), linearly interpolated between rounds; None ("not reached") when it never does. The curve is
  not extrapolated below its first round: a curve that starts above the level needs its first
  round's fraction. The saving against random is 1 - strategy / random.
"""

from __future__ import annotations

import numpy as np

from activeseg.metrics import auc_dice

CONFIDENCE = 0.95


def mean_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, float | None]:
    """Mean of ``values`` (S,) and its two-sided t confidence interval over the S seeds.

    Returns ``{"mean", "half_width", "low", "high"}``; the last three are None when S < 2.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"mean_ci needs a non-empty 1-D array of per-seed values, got shape {values.shape}")
    mean = float(values.mean())
    if values.size < 2:
        return {"mean": mean, "half_width": None, "low": None, "high": None}
    from scipy import stats  # here: a round's report draws curves without paying for scipy.stats (~1 s)

    t = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1))
    half = t * float(values.std(ddof=1)) / np.sqrt(values.size)
    return {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half}


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (S,) (strategy - random per seed).

    Zero differences are dropped (``zero_method="wilcox"``); all zero gives 1.0.
    """
    differences = np.asarray(differences, dtype=float)
    if differences.ndim != 1 or differences.size == 0:
        raise ValueError(f"wilcoxon_p needs a non-empty 1-D array of differences, got shape {differences.shape}")
    if not np.any(differences):
        return 1.0
    from scipy import stats

    return float(stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def smallest_p(seeds: int) -> float:
    """The smallest two-sided Wilcoxon p that ``seeds`` paired differences can give: 2 / 2^seeds."""
    return 2.0 / 2**seeds


def auc_by_seed(runs: list[dict], strategy: str) -> dict[int, float]:
    """Per seed, the AUC of Dice over the rounds of ``strategy`` (records as in ``results.json``'s runs)."""
    dices: dict[int, list[float]] = {}
    for r in sorted((r for r in runs if r["strategy"] == strategy), key=lambda r: r["round"]):
        dices.setdefault(r["seed"], []).append(r["dice"])
    return {seed: auc_dice(d) for seed, d in sorted(dices.items())}


def paired_difference(auc: dict[int, float], reference: dict[int, float]) -> dict:
    """``auc - reference`` over the seeds both have: mean, t interval, Wilcoxon p and the seeds used."""
    seeds = sorted(set(auc) & set(reference))
    if not seeds:
        raise ValueError(f"no seed in common between {sorted(auc)} and the reference's {sorted(reference)}")
    differences = np.array([auc[s] - reference[s] for s in seeds])
    return {**mean_ci(differences), "p": wilcoxon_p(differences), "seeds": seeds}


def fraction_to_reach(fraction: np.ndarray, dice: np.ndarray, level: float) -> float | None:
    """The first labeled fraction at which the curve ``(fraction, dice)``, both (R,), reaches ``level``.

    Linear interpolation between the two rounds around the first crossing; the first round's fraction
    when it already reaches it; None when no round does.
    """
    for i, d in enumerate(dice):
        if d >= level:
            if i == 0:
                return float(fraction[0])
            f0, f1, d0, d1 = fraction[i - 1], fraction[i], dice[i - 1], d
            return float(f0 + (level - d0) * (f1 - f0) / (d1 - d0))
    return None


def saving(fraction: float | None, random_fraction: float | None) -> float | None:
    """1 - fraction / random_fraction: the share of random's labeled pixels a strategy does not need.

    None when either did not reach the level.
    """
    if fraction is None or random_fraction is None:
        return None
    return 1.0 - fraction / random_fraction
