"""A local Prefect server for one test module's folder, torn down with any worker left running."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from activeseg.orchestration import server, workers
from flows.engine import PrefectEngine, connect


@contextmanager
def local_prefect(root: Path) -> Iterator[PrefectEngine]:
    """Start a server whose expired waits are checked every second, connect to it, and yield the engine;
    stop the worker and the server after."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PREFECT_API_URL", raising=False)
        env.setenv("PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS", "1")
        engine = PrefectEngine()
        try:
            with connect(root, say=lambda _: None):
                try:
                    yield engine
                finally:
                    workers.stop(engine, root, settle_seconds=0)
        finally:
            server.stop(root)
