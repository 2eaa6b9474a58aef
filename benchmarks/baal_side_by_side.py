"""MC-dropout scoring side by side with baal 2.1.0 (the Bayesian active-learning library) on the same work.

    .venv/bin/python benchmarks/baal_side_by_side.py [--repeats 5] [--threads 2] [--baal-dir DIR]

The work (issue 12, "scoring ahead of the peer"): 392 patches of 64 px (8 synthetic 256 px images,
overlap 0.5), T = 8 passes, batch 32, the project's EDConvNet width 16 depth 3, ``--threads`` torch threads.
Paths, each timed ``--repeats`` times after one warm-up, the median printed in patches/s:
- ours: ``mc_dropout_scores`` (entropy, variance, BALD, descriptors, per-region reductions);
- baal best: ``MCCachingModule(MCDropoutModule(model))``, ``ModelWrapper.predict_on_batch(iterations=T)``
  with ``replicate_in_memory=False``, then ``BALD(reduction="mean").get_uncertainties``;
- baal default: the same with ``replicate_in_memory=True`` (baal's default) and no caching module.
baal is not a project dependency: it is installed with pip into ``--baal-dir`` (``pip install --target``,
with what it needs that the venv lacks), never into the venv, and put on ``sys.path`` for this process only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from activeseg.model.inference import mc_dropout_scores, region_batches
from activeseg.model.network import EDConvNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mc_dropout import setup  # noqa: E402

BAAL = ["baal==2.1.0", "structlog>=22,<23", "torchmetrics>=1.7.3,<2", "lightning-utilities"]
DEFAULT_BAAL_DIR = Path.home() / ".cache" / "activeseg-bench" / "baal-2.1.0"


def install_baal(folder: Path) -> None:
    """baal and the packages it imports that the venv lacks, into ``folder`` (once), on sys.path."""
    if not (folder / "baal").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
                        *BAAL], check=True)
    sys.path.insert(0, str(folder))


def ours(model: EDConvNet, dataset, regions, passes: int, batch: int) -> None:
    mc_dropout_scores(model, dataset, regions, passes, batch, torch.device("cpu"), seed=0)


def baal_path(model: EDConvNet, replicate: bool, cache: bool) -> Callable:
    """A scoring function (dataset, regions, passes, batch) over baal's wrapper of a copy of ``model``."""
    from baal.active.heuristics import BALD
    from baal.bayesian.caching_utils import MCCachingModule
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    wrapped = MCDropoutModule(copy.deepcopy(model))
    if cache:
        wrapped = MCCachingModule(wrapped)
    wrapped.eval()
    wrapper = ModelWrapper(wrapped, TrainingArgs(batch_size=32, use_cuda=False, replicate_in_memory=replicate))
    heuristic = BALD(reduction="mean")

    def score(dataset, regions, passes: int, batch: int) -> None:
        for _, x, _ in region_batches(dataset, regions, batch):
            heuristic.get_uncertainties(wrapper.predict_on_batch(x, iterations=passes))

    return score


def median_rates(paths: dict[str, Callable[[], None]], patches: int, repeats: int) -> dict[str, float]:
    """patches/s of each path, the median of ``repeats`` timed runs after one warm-up; the paths take
    turns within each repeat, so that a load change on the machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for repeat in range(repeats + 1):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            if repeat:
                times[name].append(time.perf_counter() - start)
    return {name: patches / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--baal-dir", type=Path, default=DEFAULT_BAAL_DIR)
    parser.add_argument("--skip-default", action="store_true", help="skip baal's (slow) default path")
    args = parser.parse_args()
    install_baal(args.baal_dir)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = EDConvNet(3, 2, 16, 3, 0.2)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, regions = setup(Path(tmp), images=8, size=256, side=64)
        print(f"{len(regions)} patches of 64 px, T = {args.passes}, batch {args.batch}, {args.threads} threads, "
              f"EDConvNet width 16 depth 3, median of {args.repeats}")
        paths = {"ours": lambda: ours(model, dataset, regions, args.passes, args.batch),
                 "baal best": lambda: best(dataset, regions, args.passes, args.batch)}
        best = baal_path(model, replicate=False, cache=True)
        if not args.skip_default:
            default = baal_path(model, replicate=True, cache=False)
            paths["baal default"] = lambda: default(dataset, regions, args.passes, args.batch)
        rates = median_rates(paths, len(regions), args.repeats)
    for name, rate in rates.items():
        print(f"{name:14s} {rate:8.1f} patches/s")
    print(f"ratio ours / baal best: {rates['ours'] / rates['baal best']:.2f}   (target >= 1.2)")


if __name__ == "__main__":
    main()
