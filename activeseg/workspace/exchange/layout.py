"""Where the label exchange lies in the object store (see :mod:`activeseg.workspace.storage`)::

    requests/round-NNN/manifest.json          the request (written last: its presence means published)
    requests/round-NNN/<id>.png               the image around the region, with a context margin
    requests/round-NNN/<id>.preview.png       the same crop enlarged (>= 384 px long side) with the region outlined
    requests/round-NNN/INSTRUCTIONS.md        what to label, the classes, mask sizes, file names, how to hand in
    requests/round-NNN/manifest.schema.json   the manifest's JSON Schema (draft 2020-12)
    requests/round-NNN/<format>/...           an export for QuPath, CVAT or Label Studio (`activeseg labels export`)
    labels/round-NNN/<id>.png                 the upload folder: the annotator's mask for each requested region
    staged/round-NNN/<batch sha256>/batch.json, files/<id>.png
                                              a validated batch waiting for review: write-once, apart from the
                                              upload folder, so no later upload can change what is approved
    quarantine/round-NNN/<timestamp>/report.json, files/...   a rejected, replaced or refused batch
"""

from __future__ import annotations

from datetime import datetime, timezone

from activeseg.core.util import round_name


MANIFEST = "manifest.json"


REPORT = "report.json"


STAGED_BATCH = "batch.json"


def round_prefix(area: str, round_number: int) -> str:
    """``requests``, ``labels``, ``staged`` or ``quarantine`` of one round: ``labels/round-007/``."""
    return f"{area}/{round_name(round_number)}/"


def staged_prefix(round_number: int, digest: str) -> str:
    """Where a staged batch lies: ``staged/round-NNN/<batch sha256>/``."""
    return f"{round_prefix('staged', round_number)}{digest}/"


def timestamp() -> str:
    """A UTC time usable in a key: ``20250131T120000.123456Z``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
