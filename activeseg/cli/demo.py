"""``activeseg demo`` (``make demo``): a campaign on the synthetic data through the real path."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from activeseg.cli.orchestration import print_curve, run_campaign
from activeseg.cli.output import console, say
from activeseg.orchestration.engine import RunEngine

DEMO_SETTINGS = [
    "partition.side=32",
    "partition.initial_labeled=8",
    "model.width=8",
    "model.depth=2",
    "train.passes=60",
    "train.min_steps=120",
    "train.max_steps=240",
    "train.crop=32",
    "query.mc_passes=4",
]
"""The demo's campaign: a few rounds in a few minutes on two CPU cores."""
DEMO_THREADS = {"OMP_NUM_THREADS": "1"}
"""Compute threads per flow-run process in the demo (unless set): the demo's tiny model trains fastest
on one, and the worker, the server and a round's process share two cores (with two threads each, torch's
threads spin while waiting for each other: ten times slower on a busy machine)."""


def run_demo(out: Path, rounds: int, overrides: list[str], params: Path | None = None) -> int:
    """Init a workspace in OUT/workspace, start its local Prefect server and a worker, run `rounds` rounds
    with the simulated annotator (every round suspends until its labels are approved, then resumes),
    print the learning curve, each round run's states and the audit history of one queried region,
    write OUT/report.md and the campaign report OUT/report.html, and stop the server and worker it started.
    """
    from activeseg.orchestration import server, workers
    from activeseg.workspace.workspace import Workspace
    from flows import worker
    from flows.engine import PrefectEngine, connect

    out = Path(out).resolve()
    root = out / "workspace"
    _remove_previous(root)
    console.rule("activeseg demo: an active-learning campaign under Prefect, simulated annotator")
    started_at = time.monotonic()
    ws = Workspace.init(root, "synthetic", overrides=[*DEMO_SETTINGS, "oracle.kind=simulated", *overrides],
                        params=params)
    console.print(f"workspace {ws.root}: {len(ws.dataset.stems)} synthetic images, object store {ws.store.url}")
    engine = PrefectEngine()
    with connect(root, say=say) as srv:
        try:
            threads = {k: os.environ.get(k, v) for k, v in DEMO_THREADS.items()}
            started = worker.start(root, env=threads)
            console.print(f"Prefect server {srv.url}, worker pid {started.pid} (log {started.log})")
            code = run_campaign(engine, root, rounds)
            report = demo_report(engine, Workspace.open(root), out)
        finally:
            workers.stop(engine, root)
            if srv.started:
                server.stop(root)
            console.print("stopped the worker" + (" and the Prefect server" if srv.started else ""))
    console.print(f"demo finished in {time.monotonic() - started_at:.0f} s; report: {report}")
    return code


def _remove_previous(root: Path) -> None:
    """Stop what a previous demo left running in `root` and remove its workspace and local remote."""
    from activeseg.orchestration import processes, server

    if not root.exists():
        return
    console.print(f"removing the previous demo workspace {root}")
    home = server.prefect_home(root)
    for name in ("worker.pid", "server.pid"):
        pid = processes.read_pid(home / name)
        if pid is not None:
            processes.stop(pid)
    shutil.rmtree(root)
    shutil.rmtree(root.parent / f"{root.name}-remote", ignore_errors=True)


def demo_report(engine: RunEngine, ws: Any, out: Path) -> Path:
    """Print and write (OUT/report.md, OUT/learning_curve.png, OUT/report.html) the demo's results (inside
    connect)."""
    from activeseg.loop.curves import plot_learning_curves
    from activeseg.workspace.audit import learning_curve
    from activeseg.workspace.ledger_text import summary
    from activeseg.report.page import write_campaign_report

    rows = learning_curve(ws)
    print_curve(rows)
    lines = ["# activeseg demo", "", f"Workspace: `{ws.root}`", "", "## Learning curve", "",
             "| round | labeled pixels | val Dice | test Dice |", "|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['labeled_pixel_fraction']:.2%} | {r['val_dice'] or 0:.4f} | {r['dice']:.4f} |"
              for r in rows]
    lines += ["", "## Round runs (Prefect states)", ""]
    console.rule("each round's flow run")
    for event in ws.ledger.events(type="labels_approved"):
        states = " -> ".join(name for name, _ in engine.history(UUID(event.data["flow_run_id"])))
        line = f"round {event.round}: flow run {event.data['flow_run_id']}: {states}"
        console.print(line, highlight=False)
        lines.append(f"- {line}")
    queried = ws.ledger.events(type="queried")
    if queried:
        region = queried[0].data["regions"][0]
        console.rule(f"audit history of region {region}")
        lines += ["", f"## Audit history of region {region}", ""]
        for e in ws.ledger.events(sample=region):
            line = f"{e.time[:19]}  round {e.round}  {e.type} by {e.actor}: {summary(e, region)}"
            console.print(line, highlight=False)
            lines.append(f"- {line}")
    tracking = ws.cfg.tracking.uri or f"sqlite:///{ws.root / 'mlflow' / 'mlflow.db'}"
    plot = plot_learning_curves([{**r, "strategy": ws.cfg.query.strategy, "seed": 0} for r in rows],
                                out / "learning_curve.png", title="demo campaign: test Dice") if rows else None
    where = [f"MLflow runs: {tracking} (browse with `mlflow ui --backend-store-uri {tracking}`)",
             f"audit ledger: {ws.root / 'ledger.jsonl'} (`activeseg audit --workspace {ws.root}`)",
             f"learning curve plot: {plot}" if plot else "no round finished"]
    for line in where:
        console.print(line, highlight=False)
    page = write_campaign_report(ws, out / "report.html", engine)
    console.print(f"campaign report (HTML, self-contained): {page}", highlight=False)
    lines += ["", "## Where things are", ""] + [f"- {line}" for line in [*where, f"campaign report: {page}"]]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
