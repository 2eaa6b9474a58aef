"""The simulated annotator (`oracle.kind: simulated`): answers a round's label request from the ground
truth through the same path as a human, then approves.

It submits the masks as a folder (validated whole, uploaded, staged: `Workspace.simulate_labels`),
waits until the round's flow run is suspended, and resumes it with an approval of the staged batch,
which the round's run then takes in: exactly what `activeseg labels submit` and `activeseg approve` do. A round run starts this flow for
each of its waits.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from activeseg.loop.oracle import SIMULATED
from flows.engine import PrefectEngine
from tasks import steps

COMMENT = "automatic approval (oracle: simulated)"


@flow(name="simulated-annotator", persist_result=True, result_serializer="json", log_prints=True)
def simulated_annotator(workspace: str, round: int, round_run_id: str) -> dict[str, Any]:
    """Label round `round` from the ground truth and approve it for the flow run `round_run_id`."""
    labels = steps.simulate_labels(workspace, round)
    approval = steps.approve(workspace, round, SIMULATED, COMMENT, round_run_id, PrefectEngine())
    return {"round": round, "batch_sha256": labels["batch_sha256"], "approved_run": approval["flow_run_id"]}
