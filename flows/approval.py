"""The human gate of a round: suspend the flow run until an approval arrives as typed run input."""

from __future__ import annotations

from prefect import suspend_flow_run
from prefect.input import RunInput


class ApprovalInput(RunInput):
    """What resumes a round that waits for labels (the Prefect UI shows these fields as a form).

    approved: the batch is taken in (False: it goes to quarantine). approver: who decided (a reviewer of
    the workspace's access file). comment: free text. batch_hash: the content hash of the staged label batch
    the decision is about (`activeseg status`). signature, signed_time, signed_prev: an approval signed by
    `activeseg approve --sign KEY` (the SSH signature, and the event time and previous hash it covers);
    left empty in the form, which cannot sign.
    """

    approved: bool
    approver: str
    comment: str = ""
    batch_hash: str
    signature: str = ""
    signed_time: str = ""
    signed_prev: str = ""


def await_approval(*, key: str, timeout: int | None, description: str) -> ApprovalInput:
    """Suspend the current flow run until it is resumed with an ApprovalInput, and return that input.

    No process is held while suspended: the flow-run process exits, and after the resume the flow
    function runs again from the top; this call then returns the stored input at once. `key` must be
    the same on that re-run and different for every separate wait of one flow run. `timeout` in
    seconds (None: wait forever); on expiry Prefect fails the run ("The flow was paused and never
    resumed."). `description` (Markdown) is shown above the form in the Prefect UI.
    """
    return suspend_flow_run(
        wait_for_input=ApprovalInput.with_initial_data(description=description),
        key=key,
        timeout=timeout,
    )
