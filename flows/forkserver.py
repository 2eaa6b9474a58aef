"""A worker's flow-run processes, forked from a warm one.

Prefect's runner starts the run of a served flow with `run_flow_in_subprocess`: a fresh interpreter
(multiprocessing's "spawn") that imports Prefect and the flow, then, in its tasks, torch, MLflow, DVC
and matplotlib again: about 5 s per process, and a round has two (its run, and the run again after the
suspension). A worker instead forks each run from multiprocessing's fork server, which imported those
modules (`PRELOAD`) once, when the worker started: a run's process is ready in milliseconds. Each run
still has a process of its own (suspended by exiting, killed alone, recovered as before); the fork
server holds no thread or connection when it forks (it only imports).

The fork server ends with its worker: it exits once every copy of its "alive" pipe is closed, and a run's
process closes the copy multiprocessing gives it (:func:`_let_go`), so only the worker holds one. A worker
killed during a run thus leaves no idle fork server behind, while the run's process carries on.

The run's process starts with the fork server's environment, which does not name the run, so the
worker records it (:func:`activeseg.orchestration.workers.record_run_process`). The runs execute the
code as it was when the worker started: restart the worker after upgrading activeseg.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import prefect.flow_engine
from prefect.runner import _starter_direct

from activeseg.orchestration import workers

PRELOAD = ("flows.worker", "flows.al_round", "flows.campaign", "prefect.task_engine", "prefect.utilities.visualization",
           "torch", "torch._dynamo", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.store.model_registry.sqlalchemy_store", "sqlalchemy.dialects.sqlite",
           "dvc.repo", "dvc.repo.plots", "dvc.repo.datasets", "dvc.scm", "dvc.dirs", "dvc.rwlock", "dulwich.index",
           "networkx", "activeseg.model.training", "activeseg.model.tracking", "activeseg.model.evaluation",
           "activeseg.loop.selection", "activeseg.report.page", "matplotlib.pyplot")
"""What a flow run of the campaign imports (a module that fails to import is skipped). Each run's process
runs the worker's main module again (multiprocessing's `__mp_main__`), so `flows.worker` comes first;
torch's optimizers import `torch._dynamo` (3 s), MLflow's SQLite store SQLAlchemy and Alembic on first
use, and DVC, when it opens a repository, its Git bindings and networkx."""
READY = "flow runs start from a warm process"
"""What the worker's log says once the fork server has imported `PRELOAD`."""


class _Multiprocessing:
    """Stands for the `multiprocessing` module in `prefect.flow_engine`: its `run_flow_in_subprocess`
    asks for the "spawn" context and gets this stand-in, whose processes the fork server forks and which
    let go of the fork server first (:func:`_let_go`)."""

    def __init__(self, context: multiprocessing.context.BaseContext):
        self.context = context

    def get_context(self, method: str | None = None) -> _Multiprocessing:
        return self

    def Process(self, target: Callable[..., Any], args: tuple = (), kwargs: dict[str, Any] | None = None,
                **options: Any) -> multiprocessing.process.BaseProcess:
        """A process the fork server forks, which lets go of it before it runs `target`."""
        return self.context.Process(target=_let_go, args=(target, args, kwargs or {}), **options)


def _let_go(target: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """In a run's process: close its copy of the fork server's "alive" pipe, then run `target`. (Each
    process the fork server forks gets a copy, to ask it for processes of its own; one that needs to
    starts a fork server of its own instead.) The copy is multiprocessing's private state, as CPython 3.11
    keeps it."""
    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    return target(*args, **kwargs)


def fork_flow_runs(root: Path, preload: tuple[str, ...] = PRELOAD) -> None:
    """From now on, start this process's flow runs from a fork server that imported `preload`, and
    record each run's process under the workspace `root`. The fork server starts (imports) at once, in
    the background. Call once, in the worker, before its runner starts."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    prefect.flow_engine.multiprocessing = _Multiprocessing(context)
    start = _starter_direct.run_flow_in_subprocess  # the runner's documented point of override

    def start_recorded(flow: Any, flow_run: Any = None, **kwargs: Any) -> Any:
        process = start(flow, flow_run=flow_run, **kwargs)
        workers.record_run_process(root, flow_run.id, process.pid)
        return process

    _starter_direct.run_flow_in_subprocess = start_recorded
    threading.Thread(target=_warm, args=(context,), daemon=True, name="forkserver").start()


def _warm(context: multiprocessing.context.BaseContext) -> None:
    """Start the fork server and wait until it has imported `PRELOAD` (a first fork returns only then);
    say so in the worker's log."""
    start = time.perf_counter()
    process = context.Process(target=int)
    process.start()
    process.join()
    print(f"{READY} (its imports took {time.perf_counter() - start:.1f} s)", flush=True)
