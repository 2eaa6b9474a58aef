"""What a campaign's things are called on the workflow engine.

One workspace is one campaign. Its deployments are named after the workspace folder
(`al-round/<campaign>`, `campaign/<campaign>`), so several campaigns can share one server.
"""

from __future__ import annotations

from pathlib import Path

from activeseg.core.util import campaign_name

ROUND_FLOW = "al-round"
CAMPAIGN_FLOW = "campaign"
FLOW_NAMES = (ROUND_FLOW, CAMPAIGN_FLOW)
__all__ = ["CAMPAIGN_FLOW", "FLOW_NAMES", "ROUND_FLOW", "SKIPPED", "campaign_name", "deployment_name"]
SKIPPED = "Skipped"
"""The name of the final state of a round run that found another round of the campaign active."""


def deployment_name(flow_name: str, root: Path) -> str:
    """"flow-name/deployment-name" of one of the campaign's deployments."""
    return f"{flow_name}/{campaign_name(root)}"
