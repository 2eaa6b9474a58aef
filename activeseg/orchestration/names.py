"""What a campaign's things are called on the workflow engine.

One workspace is one campaign. Its deployments are named after the workspace folder
(`al-round/<campaign>`, `campaign/<campaign>`), so several campaigns can share one server.
"""

from __future__ import annotations

import re
from pathlib import Path

ROUND_FLOW = "al-round"
CAMPAIGN_FLOW = "campaign"
FLOW_NAMES = (ROUND_FLOW, CAMPAIGN_FLOW)
SKIPPED = "Skipped"
"""The name of the final state of a round run that found another round of the campaign active."""


def campaign_name(root: Path) -> str:
    """The campaign's name: its workspace folder's name, made safe for a deployment name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(root).resolve().name).strip("-") or "campaign"


def deployment_name(flow_name: str, root: Path) -> str:
    """"flow-name/deployment-name" of one of the campaign's deployments."""
    return f"{flow_name}/{campaign_name(root)}"
