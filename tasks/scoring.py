"""The query's MC-dropout scoring sharded across a Dask cluster (``query.cluster``), each shard a Prefect
task run by prefect-dask's `DaskTaskRunner`.

`dask_shards(cluster)` is a :data:`activeseg.model.pool_scoring.ShardRunner`: the query task hands it to
the workspace, whose query step scores the shards it does not find in its score cache through it and
merges them in region order (the library stays Prefect-free). Each Dask worker process loads the
checkpoint and indexes the dataset once (`ScoringJob.model`, keyed by the checkpoint's hash), so the
workers must see the workspace at the same path (infra/README.md). A worker lost mid-shard: Dask runs the
shard again on another worker; a shard that failed is retried by Prefect (`retries`). Imported only
when a cluster is set: Dask stays out of the light worker and flow processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import distributed
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from activeseg.core.partition import Region
from activeseg.model.inference import PixelHook, PoolScores
from activeseg.model.pool_scoring import ScoringJob, ShardRunner


@task(name="score-shard", version="1", persist_result=False, cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=1)
def score_shard(job: ScoringJob, regions: list[Region], hooks: Mapping[str, PixelHook]) -> PoolScores:
    """MC-dropout scores of one shard of the pool (the query's score cache keeps them, not Prefect)."""
    return job.score(regions, hooks)


def task_runner(cluster: str) -> DaskTaskRunner:
    """``local``: a temporary cluster on this machine, one single-threaded worker process per core (no
    dashboard); else the scheduler at the address ``tcp://host:port``."""
    if cluster == "local":
        return DaskTaskRunner(cluster_kwargs={"processes": True, "threads_per_worker": 1, "dashboard_address": None})
    return DaskTaskRunner(address=cluster)


def dask_shards(cluster: str) -> ShardRunner:
    """A shard runner submitting each shard to the Dask cluster ``cluster`` as a `score_shard` task run;
    yields each shard's scores as it finishes."""

    def run(job: ScoringJob, shards: list[list[Region]], hooks: Mapping[str, PixelHook]
            ) -> Iterator[tuple[int, PoolScores]]:
        if not shards:
            return
        with task_runner(cluster) as runner:
            futures = {runner.submit(score_shard, {"job": job, "regions": shard, "hooks": hooks}).wrapped_future: i
                       for i, shard in enumerate(shards)}
            for future in distributed.as_completed(futures, loop=runner.client.loop):  # its client: no default
                yield futures.pop(future), future.result().result()  # released from the worker once read

    return run
