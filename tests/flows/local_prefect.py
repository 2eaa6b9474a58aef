"""A local Prefect server for one test module's folder, torn down with any worker left running."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from activeseg.orchestration import server
from flows import runtime


@contextmanager
def local_prefect(root: Path, connect: Callable) -> Iterator[None]:
    """Start (through ``connect``) a server whose expired waits are checked every second; stop it after."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PREFECT_API_URL", raising=False)
        env.setenv("PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS", "1")
        try:
            with connect(root, say=lambda _: None):
                try:
                    yield
                finally:
                    runtime.stop_worker(root, settle_seconds=0)
        finally:
            server.stop(root)
