"""One active-learning round of a campaign workspace, as a Prefect flow:

    validate -> partition -> pretrain -> train -> query -> await labels -> evaluate

Pretrain (self-supervised, on the pool) runs once per campaign: its task is cached by the hash of its
inputs, not by round, and runs again only when the pool's data or the settings change.

Await labels publishes the request, then suspends the flow run (no process is held) until it is
resumed with an `ApprovalInput` (`activeseg approve`, or the form in the Prefect UI) or its timeout
(`oracle.timeout_hours`) expires. After the resume the flow runs again from the top: every step is a
task with a persisted result, so the finished ones come back cached and nothing is done twice. A
submitted batch that passed validation is only staged; an approval takes it in only when it names
that staged batch and the batch still holds the bytes that were staged; otherwise (the refusal is
recorded in the ledger, and `activeseg approve` reports it), or when it says "not approved" (the staged
batch is quarantined), the round waits again.

With `oracle.kind: simulated` the worker plays the annotator: once the request is published it submits
the ground truth through the same path as a person's batch (validated, uploaded, staged), and once the
run is suspended it approves it (`activeseg.orchestration.rounds.answer_simulated`): the round really
suspends and resumes, and no process is started for the annotator.

The first step claims the campaign: a trigger that finds another round running or waiting ends at
once in the state "Skipped" (recorded in the ledger), so a campaign never runs two rounds.
"""

from __future__ import annotations

from itertools import count
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, State

from activeseg.core.util import round_name
from activeseg.orchestration.names import SKIPPED
from flows.approval import await_approval
from flows.engine import PrefectEngine
from tasks import steps


@flow(name="al-round", persist_result=True, result_serializer="json", log_prints=True)
def al_round(workspace: str, round: int | None = None, trigger: str = "schedule") -> dict[str, Any] | State:
    """Run round `round` (default: the round in progress) of the campaign in `workspace`.

    `trigger`: "schedule" (the deployment's cron; the campaign's stop rule is checked), "manual" or
    "campaign" (a caller that checked it).
    """
    engine = PrefectEngine()
    start = steps.start_round(workspace, round, str(flow_run.get_id()), trigger, engine)
    if start["skipped"]:
        return Completed(name=SKIPPED, message=start["reason"])
    n = start["round"]
    steps.validate(workspace, n)
    steps.partition(workspace, n)
    steps.pretrain(workspace, n)
    model = steps.train(workspace, n)
    selection = steps.query(workspace, n)
    labels = await_labels(workspace, n, start["timeout_seconds"])
    metrics = steps.evaluate(workspace, n)
    return {"round": n, "model": model["checkpoint_sha256"], "val_dice": model["val_dice"],
            "regions": selection["regions"], "labels": labels, "metrics": metrics["metrics"],
            "commit": metrics["commit"]}


def await_labels(workspace: str, n: int, timeout_seconds: int) -> dict[str, Any]:
    """Publish the request, then wait, suspended, for an approval of the staged batch; its ingest record.
    A round whose batch was already taken in (by an earlier run that failed later) does not wait.

    Each wait has its own key (`round-NNN-labels-K`), so on a re-run from the top an answered wait
    returns its stored approval at once and only the open one suspends again.
    """
    request = steps.publish_request(workspace, n)
    taken = steps.labels_taken(workspace, n)
    if taken:  # an earlier run of this round was approved and took the batch in
        return taken
    for attempt in count():
        wait = f"{round_name(n)}-labels-{attempt}"
        approval = await_approval(key=wait, timeout=timeout_seconds, description=_form_text(n, request, attempt))
        labels = steps.ingest_labels(workspace, n, wait, approval.model_dump(mode="json"))
        if labels["accepted"]:
            return labels
        print(f"round {n}: batch not taken ({labels['reason']}); waiting for another")


def _form_text(n: int, request: dict[str, Any], attempt: int) -> str:
    """What the Prefect UI shows above the approval form."""
    again = f" (wait {attempt + 1}: the previous answer was not taken)" if attempt else ""
    text = (f"**Round {n}** waits for labels{again}.\n\n"
            f"The request ({request['regions']} regions) is at `{request['request']}`. Upload one mask per region "
            f"to `{request['labels']}`, or run `activeseg labels submit DIR --annotator NAME --round {n}`.\n\n")
    if request.get("signatures_required"):
        return text + (f"This campaign requires signed decisions (`campaign.require_signatures`), and this form "
                       f"cannot sign: an approval or rejection sent from it is refused and recorded. Approve with "
                       f"`activeseg approve --round {n} --by NAME --sign KEY`, or reject with `activeseg reject "
                       f"--round {n} --by NAME --reason TEXT --sign KEY`.")
    return text + (f"Approve with `activeseg approve --round {n} --by NAME`, or here with your name (a reviewer of "
                   f"the workspace's access.yaml, not an annotator of the batch) and the batch hash that "
                   f"`activeseg status` shows. Reject with `activeseg reject --round {n} --by NAME --reason TEXT`.")
