"""A toy flow that keeps running until told to stop: a flow run in progress when its worker is killed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow


@flow
def busy_flow(folder: str) -> None:
    """Write this process's pid to `folder`/pid, then run until `folder`/stop exists."""
    Path(folder, "pid").write_text(str(os.getpid()))
    while not Path(folder, "stop").exists():
        time.sleep(0.1)
