"""What the campaign report costs on a workspace: the time to gather its data and to render the page,
the page's size, and how many region thumbnails it holds.

    .venv/bin/python benchmarks/campaign_report.py WORKSPACE [--out FILE.html]

(e.g. ``demo-output/workspace`` after ``make demo``). Nothing in the workspace is changed; the page goes
to ``--out`` (default: a temporary file).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from activeseg.report.campaign import gather
from activeseg.report.page import render_campaign, scrub
from activeseg.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ws = Workspace.open(args.workspace)
    started = time.perf_counter()
    campaign = gather(ws)
    gathered = time.perf_counter()
    html = scrub(render_campaign(campaign), ws.root)
    rendered = time.perf_counter()
    out = args.out or Path(tempfile.mkdtemp()) / "report.html"
    out.write_text(html, encoding="utf-8")
    regions, thumbnails = sum(len(r.views) for r in campaign.regions.values()), html.count('class="thumbnail"')
    print(f"rounds {len(campaign.rows)}, queried regions {regions}, thumbnails {thumbnails}")
    print(f"gather {gathered - started:.2f} s, render {rendered - gathered:.2f} s, page {len(html) / 1024:.0f} KiB")
    print(f"page: {out}")


if __name__ == "__main__":
    main()
