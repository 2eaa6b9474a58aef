"""``activeseg report [--workspace DIR] [--out FILE.html] [--reference RESULTS.json]``: the campaign report
(:mod:`activeseg.report`) on demand, and the comparison pages of ``activeseg benchmark`` and ``simulate``.

The state of the round run comes from the workspace's Prefect server when one runs (none is started).
There is no link from a workspace to a simulation of the same campaign, so the ``random`` reference
curve is drawn only from the ``results.json`` that ``--reference`` names (``activeseg simulate --strategy
random`` with the campaign's params.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from activeseg.cli.output import console
from activeseg.core.util import read_json

COMPARISON = "report.html"
"""The comparison page of ``activeseg benchmark`` and ``simulate``, in their ``--out`` folder."""


def reference_runs(path: Path | None) -> list[dict[str, Any]]:
    """The runs of a simulation's ``results.json`` (none without a path); a file that is not one is named."""
    if path is None:
        return []
    results = read_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ValueError(f"{path}: not a simulation's results.json (no list 'runs')")
    if not any(run.get("strategy") == "random" for run in results["runs"]):
        raise ValueError(f"{path}: the simulation has no 'random' runs to draw as the reference")
    return results["runs"]


def cmd_report(args: argparse.Namespace) -> int:
    from activeseg.cli.orchestration import connected
    from activeseg.report.page import write_campaign_report
    from activeseg.workspace.workspace import Workspace

    root = Workspace.find(args.workspace or Path.cwd())
    reference = reference_runs(args.reference)
    with connected(root, start=False) as engine:
        path = write_campaign_report(Workspace.open(root), args.out, engine, reference)
    console.print(f"report: {path}", highlight=False)
    return 0


def write_comparison(title: str, out: Path, columns: tuple[str, ...] | list[str], rows: list[tuple],
                     notes: list[str]) -> Path:
    """The comparison page of a simulation or benchmark in ``out`` (beside its learning_curves.png)."""
    from activeseg.report.page import write_comparison_report

    return write_comparison_report(title, out / "learning_curves.png", columns, rows, notes, out / COMPARISON)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the campaign report: one self-contained HTML page")
    p.add_argument("--workspace", type=Path, help="workspace folder (default: the one containing .)")
    p.add_argument("--out", type=Path, help="the HTML file (default: report.html in the workspace)")
    p.add_argument("--reference", type=Path, metavar="RESULTS.json",
                   help="a simulation's results.json: its random strategy is drawn as the reference curve")
    p.set_defaults(func=cmd_report)
