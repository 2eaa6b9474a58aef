"""Prefect tasks: one per step of a round, each a thin wrapper over activeseg and its workspace code.

`STEP` holds the options every step task shares (see tasks/README.md):
`@task(name="train", version="1", retries=..., **STEP)`.
"""

from prefect.cache_policies import INPUTS, TASK_SOURCE

STEP_CACHE = INPUTS + TASK_SOURCE
STEP = {"persist_result": True, "result_serializer": "json", "cache_policy": STEP_CACHE}
