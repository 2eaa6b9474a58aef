"""The report as one self-contained HTML file: jinja2 templates (``templates/``), every image embedded
as a base64 PNG data URI, no script; it opens from disk and from an object store.

No path of the machine goes into a page: the data names none (see :mod:`activeseg.report.campaign`), and
:func:`scrub` replaces what could still slip in through a message (the workspace's folder and
the home folder) by ``<workspace>`` and ``~``. Credentials are never read here (they
live in the environment only).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from activeseg.orchestration.engine import RunEngine
from activeseg.report.campaign import Campaign, gather
from activeseg.report.figures import control_png, learning_curve_png, thumbnail_png
from activeseg.workspace import Workspace

REPORT = "report.html"
"""The campaign report, in the workspace root (git-ignored) and at the root of the object store."""
STORE_KEY = f"reports/{REPORT}"
DATA_URI = re.compile(r"(data:image/png;base64,[A-Za-z0-9+/=]*)")

_ENV = Environment(loader=PackageLoader("activeseg.report", "templates"), autoescape=select_autoescape(["j2"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def number(value: float | int | None, digits: int = 4) -> str:
    """A table cell: ``-`` for None, integers with thousands separators, floats to ``digits`` decimals."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    """``-``, ``45 s``, ``12 min`` or ``3.5 h``."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


_ENV.filters.update(number=number, duration=duration)


def scrub(text: str, root: Path) -> str:
    """``text`` with the workspace folder and the home folder replaced (see the module docstring), outside
    the data URIs (base64 may hold any such string by chance)."""
    parts = DATA_URI.split(text)
    for i in range(0, len(parts), 2):  # the even parts are the text between the URIs
        for path, name in ((root, "<workspace>"), (Path.home(), "~")):
            if len(str(path)) > 1:
                parts[i] = parts[i].replace(str(path), name)
    return "".join(parts)


def render_campaign(campaign: Campaign) -> str:
    """The campaign page's HTML."""
    curve = learning_curve_png(campaign.curve, dict(campaign.glance)["strategy"], campaign.reference)
    thumbnails = {(view.round, view.id): data_uri(thumbnail_png(view, campaign.classes))
                  for regions in campaign.regions.values()
                  for view in regions.views}  # a revoked region may be asked again
    controls = data_uri(control_png(campaign.controls)) if campaign.controls else None
    return _ENV.get_template("campaign.html.j2").render(
        c=campaign, curve=data_uri(curve), controls=controls, thumbnails=thumbnails, written=_now())


def write_campaign_report(ws: Workspace, out: Path | None = None, engine: RunEngine | None = None,
                          reference: list[dict[str, Any]] | None = None, upload: bool = False) -> Path:
    """Write the campaign report of ``ws`` to ``out`` (default: ``report.html`` in the workspace);
    ``reference``: a simulation's runs for the reference curve; ``upload``: also put it in the object
    store (``reports/report.html``). Returns the file written."""
    html = scrub(render_campaign(gather(ws, engine, reference)), ws.root)
    path = Path(out) if out is not None else ws.root / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    if upload:
        ws.store.put_bytes(STORE_KEY, html.encode("utf-8"))
    return path


def write_comparison_report(title: str, plot: Path, columns: tuple[str, ...] | list[str], rows: list[tuple],
                            notes: list[str], out: Path) -> Path:
    """A comparison page (``activeseg benchmark`` and ``simulate``): the learning curves with their
    spread (the PNG at ``plot``, drawn by :func:`activeseg.loop.curves.plot_learning_curves`), the table
    (``columns``, ``rows`` of cells) and notes (e.g. the protocol's warnings). Returns ``out``."""
    html = _ENV.get_template("comparison.html.j2").render(
        title=title, curve=data_uri(plot.read_bytes()), columns=columns, rows=rows, notes=notes, written=_now())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(scrub(html, out.resolve().parent), encoding="utf-8")
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
