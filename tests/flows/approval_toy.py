"""A toy flow with the shape of a round (work, wait for approval, more work) to prove the mechanics.

Every execution of a task body, and of the flow body, appends a line to a file in `counter_dir`, so a
test can count what ran how often across processes; the flow body also notes its process (pid, parent,
whether torch was imported before it started: this module never imports it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefect import flow, task

from flows.approval import await_approval
from tasks import STEP


def executions(counter_dir: str, name: str) -> list[str]:
    """One line per execution of `name`, as written by `_tick`."""
    path = Path(counter_dir) / f"{name}.count"
    return path.read_text().splitlines() if path.exists() else []


def _tick(counter_dir: str, name: str, note: str = "ran") -> None:
    with open(Path(counter_dir) / f"{name}.count", "a") as handle:
        handle.write(f"{note}\n")


@task(**STEP)
def prepare(counter_dir: str) -> dict:
    _tick(counter_dir, "prepare")
    return {"prepared": True}


@task(**STEP)
def finish(counter_dir: str, approval: dict) -> dict:
    _tick(counter_dir, "finish", f"{approval['approver']} {approval['batch_hash']}")
    return {"approver": approval["approver"], "batch_hash": approval["batch_hash"]}


@flow(persist_result=True, result_serializer="json")
def approval_flow(counter_dir: str, timeout: int = 600) -> dict:
    _tick(counter_dir, "flow_body")  # outside any task on purpose: counts runs of the flow body
    _tick(counter_dir, "process", f"{os.getpid()} {os.getppid()} {'torch' in sys.modules}")
    prepare(counter_dir)
    approval = await_approval(key="approval", timeout=timeout, description="Approve the toy batch.")
    return finish(counter_dir, approval.model_dump(mode="json"))
