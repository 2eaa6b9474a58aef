"""The versioned campaign workspace (git + DVC): round records, label intake and quarantine, the steps,
the audit ledger, the label exchange, object storage and data validation.

Builds on the AL loop."""

from activeseg.workspace.workspace import ApprovalRefused, BatchRejected, Workspace, WorkspaceError

__all__ = ["ApprovalRefused", "BatchRejected", "Workspace", "WorkspaceError"]
