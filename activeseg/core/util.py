"""Small helpers every layer shares: JSON files, hashes, UTC time stamps and round names."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def round_name(round_number: int) -> str:
    """``round-NNN``: the name of a round's folders, git tags and object-store prefixes."""
    return f"round-{round_number:03d}"


def campaign_name(root: str | Path) -> str:
    """A campaign's name: its workspace folder's name, made safe for a deployment or registered model name.
    What keeps campaigns apart on shared servers (Prefect deployments, the MLflow experiment and registered
    model of a shared tracking server)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(root).resolve().name).strip("-") or "campaign"


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json(path: str | Path, value: Any) -> None:
    """Write atomically (a crash leaves the old file or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(value, indent=1, default=str) + "\n")
    tmp.replace(path)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the text that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    """Now in UTC, ISO 8601 with microseconds and ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
