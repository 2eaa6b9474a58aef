"""The query's MC-dropout scoring sharded on a Dask cluster (`query.cluster`, tasks/scoring.py): a
`LocalCluster` of 2 worker processes gives exactly the scores and the selection of one process, each
worker loads the checkpoint once, and a worker SIGKILLed while shards run changes nothing. Under a real
local Prefect server (each shard a task run)."""

from __future__ import annotations

import os
import signal
import sqlite3

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

from activeseg.core.config import load_config
from activeseg.core.data import load_or_create_split
from activeseg.core.labels import LabelState
from activeseg.core.pool import pool_regions
from activeseg.loop.selection import select_regions
from activeseg.model.network import build_model, save_checkpoint
from activeseg.model.pool_scoring import load_model, local_shards
from activeseg.orchestration import server
from activeseg.workspace.workspace import Workspace
from local_prefect import local_prefect
from tests.conftest import TINY
from tests.people import enrol
from tasks import steps
from tasks.scoring import dask_shards


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local Prefect server, then 2 single-threaded Dask worker processes that talk to it."""
    root = tmp_path_factory.mktemp("cluster")
    with local_prefect(root), pytest.MonkeyPatch.context() as env:
        for key, value in server.client_env(root, server.status(root)).items():
            env.setenv(key, value)  # the worker processes inherit the environment
        env.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # shards outside a flow run here
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as dask:
            with Client(dask, set_as_default=False) as client:  # the query task finds no default client
                yield client


@pytest.fixture
def query(tiny_dataset, tmp_path):
    """One query of the tiny pool with a fixed model: (selection, context), scored by ``run_shards``."""
    cfg = load_config(None, [*TINY, "query.shard_size=6", "query.batch_size=3", "train.threads=1"])
    torch.manual_seed(0)
    save_checkpoint(build_model(3, 2, 4, 2, 0.5), tmp_path / "model.pt",
                    {"in_channels": 3, "classes": 2, "width": 4, "depth": 2, "dropout": 0.5})
    split = load_or_create_split(tmp_path / "split.json", tiny_dataset.stems, 0.6, 0.2, 0)
    shapes = {s: (tiny_dataset.samples[s].height, tiny_dataset.samples[s].width) for s in split["train"]}

    def run(strategy: str, run_shards, cache: str):
        return select_regions(cfg, strategy, tiny_dataset, split, LabelState.empty(shapes),
                              pool_regions(tiny_dataset, split["train"], cfg), tmp_path / "model.pt", 1, 0,
                              tmp_path / cache, run_shards=run_shards)

    return run


def assert_same(a, b) -> None:
    """The same selection (regions, scores, costs) from two (selection, context) pairs; not empty."""
    (one, _), (two, _) = a, b
    assert (one.indices, one.scores, one.costs) == (two.indices, two.scores, two.costs)
    assert one.indices


@pytest.mark.parametrize("strategy", ["mc_variance", "ripu"])  # ripu: a per-pixel hook, sharded too
def test_two_workers_give_the_scores_and_selection_of_one_process(cluster, query, strategy):
    one = query(strategy, local_shards, "one")
    cluster.run(load_model.cache_clear)
    two = query(strategy, dask_shards(cluster.scheduler.address), "two")
    assert_same(one, two)
    if strategy == "mc_variance":
        for name in ("ids", "entropy", "variance", "bald", "descriptors"):
            assert np.array_equal(np.asarray(getattr(one[1].pool, name)), np.asarray(getattr(two[1].pool, name)))
    assert len(one[1].candidates) == 54  # 9 shards of 6
    loads = cluster.run(lambda: load_model.cache_info().misses)
    assert sorted(loads.values()) == [1, 1]  # each worker loaded the checkpoint once for its shards


def test_a_worker_killed_mid_query_changes_nothing(cluster, query):
    pids = cluster.run(os.getpid)
    shards = dask_shards(cluster.scheduler.address)
    killed: list[int] = []

    def kill_after_the_first_shard(job, parts, hooks):
        for done, (index, scores) in enumerate(shards(job, parts, hooks)):
            if done == 0:  # a worker running a shard now, its process killed
                busy = next(worker for worker, keys in cluster.processing().items() if keys)
                killed.append(pids[busy])
                os.kill(pids[busy], signal.SIGKILL)
            yield index, scores

    cut = query("mc_variance", kill_after_the_first_shard, "killed")
    assert killed and killed[0] not in cluster.run(os.getpid).values()  # the nanny started another process
    assert_same(query("mc_variance", local_shards, "one"), cut)



def test_cluster_local_starts_a_temporary_cluster_that_gives_the_same_selection(cluster, query):
    assert_same(query("mc_variance", local_shards, "one"), query("mc_variance", dask_shards("local"), "local"))


def test_the_query_task_scores_on_the_cluster_that_params_name(cluster, tmp_path):
    address = cluster.scheduler.address
    ws = Workspace.init(tmp_path / "lab", "synthetic", overrides=[*TINY, "oracle.kind=human", "query.shard_size=8",
                                                                 f"query.cluster={address}"])
    enrol(ws.root)
    ws.validate(), ws.partition(), ws.train(1)
    cluster.run(load_model.cache_clear)
    queried = steps.query.fn(str(ws.root), 1)
    assert sum(cluster.run(lambda: load_model.cache_info().misses).values()) >= 1  # scored by the workers
    with sqlite3.connect(ws.root / "cache" / "scores" / f"{queried['checkpoint_sha256']}.sqlite") as db:
        cached = {region for (region,) in db.execute("SELECT region FROM scores")}
    assert set(queried["regions"]) <= cached and len(cached) > 8  # every candidate, in several shards
