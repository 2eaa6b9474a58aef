"""The workspace's errors."""

from __future__ import annotations


class WorkspaceError(ValueError):
    """A step cannot run (wrong order, missing input, failed subprocess); the message says why."""


class ModelCollapsed(WorkspaceError):
    """The round's model collapsed and ``query.allow_collapsed_model`` is false: the round stops before the query."""


class ApprovalRefused(WorkspaceError):
    """An approval was not taken (it named another batch, none was staged, or the staged bytes changed);
    the ledger records it as ``approval_refused``. ``round``, ``batch`` (the hash the approval named) and
    the message with the reason."""

    def __init__(self, round_number: int, batch: str, message: str):
        self.round, self.batch = round_number, batch
        super().__init__(message)


class BatchRejected(ValueError):
    """A label batch failed validation or was rejected; it is in quarantine and nothing was applied.
    ``round``: the round number; ``reasons``: every problem; ``quarantine``: where the batch went."""

    def __init__(self, round_number: int, reasons: list[str], quarantine_at: str):
        self.round, self.reasons, self.quarantine = round_number, reasons, quarantine_at
        shown = "\n  ".join(reasons[:50]) + (f"\n  ... and {len(reasons) - 50} more" if len(reasons) > 50 else "")
        super().__init__(f"round {round_number}: label batch rejected, moved to {quarantine_at}:\n  {shown}")
