"""Pool scoring on a Dask cluster (``query.cluster``): MC-dropout throughput (regions/s) with 1 and 2 Dask
workers against the scorer alone in this process, and the per-shard overhead.

    .venv/bin/python benchmarks/cluster_scoring.py [--images 24] [--size 128] [--side 32] [--passes 8]
                                                   [--width 16] [--depth 3] [--shard 32] [--repeats 5]

Every process scores with one torch thread (``train.threads: 1``, ``threads_per_worker=1``), so the
ratio 2 workers / 1 worker is the scaling over processes. Each shard is a Prefect task run
(``tasks/scoring.py``) reporting to a local Prefect server started here (and stopped after). The
workers are warmed up first (model loaded, dataset indexed: once per worker), then the whole pool is
scored in shards of ``--shard`` regions. Per-shard overhead: what each further one-region shard of a
query adds on one worker (submit, Prefect task run, result back; from a query of 9 such shards minus a
query of one) minus the scorer alone on that region; the connection to the scheduler is paid once per
query. Times of the overhead figures: the best of ``--repeats``.
The load average is printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from distributed import LocalCluster

from activeseg.core.config import SlidesConfig
from activeseg.core.data import load_dataset
from activeseg.core.partition import partition_image
from activeseg.core.synthetic import synthesize
from activeseg.model.inference import RegionReduction
from activeseg.model.network import build_model, save_checkpoint
from activeseg.model.pool_scoring import ScoringJob, local_shards
from activeseg.orchestration import server
from tasks.scoring import dask_shards


def make_job(folder: Path, args) -> tuple[ScoringJob, list]:
    synthesize(folder / "data", n=args.images, size=args.size)
    dataset = load_dataset(folder / "data")
    torch.manual_seed(0)
    meta = {"in_channels": 3, "classes": 2, "width": args.width, "depth": args.depth, "dropout": 0.3}
    save_checkpoint(build_model(3, 2, args.width, args.depth, 0.3), folder / "model.pt", meta)
    regions = [r for stem in dataset.stems for r in partition_image(stem, args.size, args.size, args.side, 0.0)]
    job = ScoringJob(str(folder / "model.pt"), "bench", dataset, str(dataset.root), 2, SlidesConfig(), args.passes,
                     16, "cpu", 1, RegionReduction(), 0)
    return job, regions


def timed(run, job: ScoringJob, shards: list[list]) -> float:
    start = time.perf_counter()
    done = sum(len(scores.ids) for _, scores in run(job, shards, {}))
    assert done == sum(map(len, shards))
    return time.perf_counter() - start


def cluster_figures(job: ScoringJob, regions: list, workers: int, args) -> dict[str, float]:
    """On ``workers`` Dask workers: ``rate`` (regions/s over the pool), ``call`` (s, a query of one
    one-region shard: connecting to the scheduler included) and ``shard`` (s, each further one-region shard
    of a query, one worker running them one after the other)."""
    with LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        run = dask_shards(cluster.scheduler_address)
        timed(run, job, [regions[i : i + 1] for i in range(workers * 2)])  # warm-up: every worker loads once
        seconds = timed(run, job, [regions[i : i + args.shard] for i in range(0, len(regions), args.shard)])
        call = min(timed(run, job, [regions[:1]]) for _ in range(args.repeats))
        many = min(timed(run, job, [regions[i : i + 1] for i in range(9)]) for _ in range(args.repeats))
    return {"rate": len(regions) / seconds, "call": call, "shard": (many - call) / 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("images", 24), ("size", 128), ("side", 32), ("passes", 8), ("width", 16), ("depth", 3),
                          ("shard", 32), ("repeats", 5)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        job, regions = make_job(root, args)
        srv = server.start(root)
        os.environ.update({**server.client_env(root, srv), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
                           "PREFECT_LOGGING_LEVEL": "WARNING"})
        try:
            job.model()
            torch.set_num_threads(1)
            alone = len(regions) / timed(local_shards, job, [regions])
            single = [timed(local_shards, job, [regions[:1]]) for _ in range(args.repeats)]
            one, two = (cluster_figures(job, regions, workers, args) for workers in (1, 2))
        finally:
            server.stop(root)
    scorer = min(single)
    print(f"pool: {len(regions)} regions of {args.side} px, T={args.passes} passes, EDConvNet width {args.width} "
          f"depth {args.depth}, shards of {args.shard}, 1 torch thread per process")
    print(f"scorer alone, this process: {alone:.1f} regions/s; one region {scorer * 1000:.1f} ms")
    print(f"1 Dask worker:  {one['rate']:.1f} regions/s")
    print(f"2 Dask workers: {two['rate']:.1f} regions/s  (ratio 2/1 workers: {two['rate'] / one['rate']:.2f})")
    print(f"a query of one one-region shard: {one['call'] * 1000:.0f} ms (client connection included); "
          f"each further shard: {one['shard'] * 1000:.0f} ms, overhead {(one['shard'] - scorer) * 1000:.0f} ms "
          f"over the scorer alone (1 worker)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
