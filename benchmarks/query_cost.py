"""Query cost: time and peak memory of each strategy's selection rule, model excluded.

Synthetic pool of N patches (N = 1k, 10k, 100k by default): scores uniform in [0, 1), 256-d descriptors
(``--descriptors isotropic``: ReLU of standard normals, the hardest case for the lazy greedy cover
since every gain shrinks alike; ``clustered``: ReLU of 10 Gaussian clusters), every patch costing 1024
pixels (32 x 32) and a budget of ``--picks`` (default 1 %) of the pool per round. The pure selection
functions run as the strategies call them:

- score ranking (``entropy``, ``mc_variance``, ``bald``, ``random``): a stable argsort;
- ``stochastic_batches``: B = picks, floor(N / B) shuffled batches, batch means, the order;
- ``focannot``: ``double_ranking`` with k = 3, T = picks, Q = 2T (``t_from_budget``), and with the
  paper's fractions T = 2.5 %, Q = 5 % of the pool;
- ``suggestive``: K = 4 x picks most uncertain, greedy max cover of the whole pool;
- ``coreset``: k-center greedy from a labeled set of 1 % of N (descriptors drawn alike).

Time: wall clock of one run; peak memory: ``tracemalloc`` peak of a second run (NumPy, SciPy and
scikit-learn arrays are traced; BLAS work buffers are not). Then the sorted 2-Wasserstein closed form
against POT on pairs of 256-d descriptors, with the largest difference in value.

    python benchmarks/query_cost.py [--sizes 1000 10000 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from typing import Callable


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--picks", type=float, default=0.01, help="patches the budget buys, fraction of N")
    p.add_argument("--descriptors", choices=["isotropic", "clustered"], default="isotropic")
    p.add_argument("--strategies", nargs="+", default=None, help="subset of the rows below")
    p.add_argument("--pairs", type=int, default=200, help="Wasserstein: pairs x pairs descriptors")
    p.add_argument("--emd-pairs", type=int, default=20, help="ot.emd2 (exact LP) on this many x this many")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


ARGS = parse()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (thread counts must be set first)
import ot  # noqa: E402

from activeseg.strategies.coreset import k_center_greedy  # noqa: E402
from activeseg.strategies.focannot import double_ranking, pairwise_wasserstein2  # noqa: E402
from activeseg.strategies.stochastic_batches import batch_order, draw_batches  # noqa: E402
from activeseg.strategies.suggestive import suggestive_order  # noqa: E402

COST = 1024


def descriptors(rng: np.random.Generator, n: int, d: int, kind: str) -> np.ndarray:
    if kind == "isotropic":
        return np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    centres = rng.normal(size=(10, d)) * 2
    return np.maximum(centres[rng.integers(0, 10, size=n)] + rng.normal(size=(n, d)), 0).astype(np.float32)


def selections(n: int, d: int, picks: int, kind: str) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    scores, X = rng.random(n), descriptors(rng, n, d, kind)
    labeled = descriptors(rng, max(1, n // 100), d, kind)
    costs = np.full(n, COST)
    budget = picks * COST
    return {
        "score ranking": lambda: np.argsort(-scores, kind="stable"),
        "stochastic_batches": lambda: batch_order(scores, draw_batches(n, picks, np.random.default_rng(1))),
        "focannot (T from budget)": lambda: double_ranking(X, scores, 3, 2 * picks, picks, 0.5, 0),
        "focannot (T = 2.5 % N)": lambda: double_ranking(X, scores, 3, round(0.05 * n), round(0.025 * n), 0.5, 0),
        "suggestive": lambda: suggestive_order(X, scores, 4 * picks, costs, budget),
        "coreset": lambda: k_center_greedy(X, labeled, costs, budget),
    }


def measure(run: Callable[[], object]) -> tuple[float, float]:
    """(seconds, peak MiB)."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def wasserstein(pairs: int, emd_pairs: int, d: int) -> None:
    rng = np.random.default_rng(0)
    X, Y = (descriptors(rng, pairs, d, "isotropic").astype(np.float64) for _ in range(2))
    start = time.perf_counter()
    ours = pairwise_wasserstein2(X, Y)
    t_ours = (time.perf_counter() - start) / pairs**2

    start = time.perf_counter()
    loop = np.array([[ot.wasserstein_1d(x, y, p=2) for y in Y] for x in X])
    t_loop = (time.perf_counter() - start) / pairs**2

    start = time.perf_counter()
    batched = ot.wasserstein_1d(np.repeat(X, pairs, axis=0).T, np.tile(Y, (pairs, 1)).T, p=2).reshape(pairs, pairs)
    t_batched = (time.perf_counter() - start) / pairs**2

    w = np.full(d, 1.0 / d)
    start = time.perf_counter()
    exact = np.array([[ot.emd2(w, w, (x[:, None] - y[None, :]) ** 2) for y in Y[:emd_pairs]] for x in X[:emd_pairs]])
    t_emd = (time.perf_counter() - start) / emd_pairs**2

    print(f"\nSquared 2-Wasserstein between {d}-d descriptors, time per pair "
          f"({pairs} x {pairs} pairs; ot.emd2 on {emd_pairs} x {emd_pairs}):")
    print(f"{'method':<44}{'us/pair':>12}{'ours faster':>14}{'max |diff|':>14}")
    rows = [("sorted closed form (pairwise_wasserstein2)", t_ours, 0.0),
            ("POT ot.wasserstein_1d, one call per pair", t_loop, np.abs(loop - ours).max()),
            ("POT ot.wasserstein_1d, all pairs batched", t_batched, np.abs(batched - ours).max()),
            ("POT ot.emd2 (exact network simplex)", t_emd, np.abs(exact - ours[:emd_pairs, :emd_pairs]).max())]
    for name, t, diff in rows:
        print(f"{name:<44}{t * 1e6:>12.2f}{t / t_ours:>13.0f}x{diff:>14.1e}")


def main() -> None:
    print(f"Selection cost, model excluded: {ARGS.dim}-d {ARGS.descriptors} descriptors, budget = "
          f"{ARGS.picks:.0%} of the pool ({COST} px patches), {ARGS.threads} BLAS threads, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}")
    print(f"{'strategy':<28}{'N':>8}{'picks':>7}{'seconds':>10}{'peak MiB':>10}")
    for n in ARGS.sizes:
        picks = max(1, round(ARGS.picks * n))
        for name, run in selections(n, ARGS.dim, picks, ARGS.descriptors).items():
            if ARGS.strategies and not any(name.startswith(s) for s in ARGS.strategies):
                continue
            seconds, peak = measure(run)
            print(f"{name:<28}{n:>8}{picks:>7}{seconds:>10.3f}{peak:>10.1f}", flush=True)
    wasserstein(ARGS.pairs, ARGS.emd_pairs, ARGS.dim)


if __name__ == "__main__":
    sys.exit(main())
