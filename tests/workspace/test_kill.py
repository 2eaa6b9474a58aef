"""SIGKILL inside each step of a round (issue 13's fault matrix, at workspace level: the steps a Prefect task
calls, and calls again after a worker died). Each step runs as its own process (``activeseg step NAME`` /
``activeseg approve``) in a process group; a poller watches for what the step writes (a file rewritten,
request objects appearing in the store, a ``dvc push`` child process, the round's commit without its tag)
and SIGKILLs the group (the step and its git/DVC children) at that point. A timing window can be missed:
then the kill came earlier or later than aimed, which is recorded, and the invariants are asserted anyway.
The step is then run again with the rest of the round and compared with a clean run of the same round:
the same ledger events exactly once, the same label files in the store (the same regions: the query is
seeded), the same label objects in the DVC cache and remote with every object hashing to its name (none
missing, extra or half-written), a linear history with one
``round-NNN`` tag per round, ``dvc status -c`` in sync, ``verify().ok``, and ``round_status`` / ``status``
telling the truth right after the kill and at the end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from activeseg.orchestration.status import status
from activeseg.workspace import Workspace
from tests.workspace.test_workspace import SETTINGS, head
from tests.people import enrol

ROUND_ONE = ["round_started", "queried", "request_published", "labels_received", "labels_submitted", "labels_approved",
             "labels_committed", "round_evaluated"]
STEPS = ("validate", "partition", "train", "query", "simulate", "approve", "evaluate")
CLI = "import sys; from activeseg.cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Reference:
    """The clean run of round 1, for comparison."""
    events: Counter
    checkpoint: str
    labels: list[str]
    tags: list[str]
    commits: int
    label_objects: list[str]


def dvc_folders(ws: Workspace) -> list[Path]:
    """The DVC cache and the DVC remote (both content-addressed: files/md5/<2 hex>/<30 hex>[.dir])."""
    return [ws.root / ".dvc" / "cache" / "files" / "md5", ws.root.parent / "ws-remote" / "dvc" / "files" / "md5"]


def label_objects(ws: Workspace) -> list[str]:
    """The DVC objects of labels/round-001 (its .dir listing and each mask), after checking that every
    object in the cache and the remote hashes to its name (none half-written) and that both hold these."""
    for folder in dvc_folders(ws):
        for path in folder.rglob("*"):
            if path.is_file() and path.parent.name != "tmp":
                assert hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name.removesuffix(".dir")
    listing = yaml.safe_load((ws.root / "labels" / "round-001.dvc").read_text())["outs"][0]["md5"]
    entries = json.loads((dvc_folders(ws)[0] / listing[:2] / listing[2:]).read_text())
    names = sorted([listing] + [e["md5"] for e in entries])
    for folder in dvc_folders(ws):
        assert all((folder / n[:2] / n[2:]).is_file() for n in names)
    return names


def run_round(ws: Workspace, start: str = "validate") -> None:
    """The steps of round 1 from ``start`` on, in this process (each finished one returns its record)."""
    for step in STEPS[STEPS.index(start):]:
        if step == "validate":
            ws.validate()
        elif step == "partition":
            ws.partition()
        elif step == "simulate":
            ws.simulate_labels(1)
        elif step == "approve":
            ws.approve(1, "x")
        else:
            getattr(ws, step)(1)


def store_labels(ws: Workspace) -> list[str]:
    """The mask files of round 1's batches in the store (staged, or kept there once taken in)."""
    return sorted(i.key.rsplit("/", 1)[1] for i in ws.store.list("staged/round-001/") if i.key.endswith(".png"))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after init (round 0) with its local remote beside it; tests copy it."""
    parent = tmp_path_factory.mktemp("kill")
    Workspace.init(parent / "ws", "synthetic", overrides=SETTINGS)
    enrol(parent / "ws")
    return parent


@pytest.fixture(scope="module")
def reference(campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    copy = Path(shutil.copytree(campaign, tmp_path_factory.mktemp("clean") / "campaign", symlinks=True))
    ws = Workspace.open(copy / "ws")
    run_round(ws)
    steps = Counter(e.type for e in ws.ledger.events(round=1) if e.type != "access_changed")  # not enrol's
    return Reference(steps, ws.record(1).trained.checkpoint_sha256,
                     store_labels(ws), ws.git("tag", "-l").split(), int(ws.git("rev-list", "--count", "HEAD")),
                     label_objects(ws))


def copy_of(campaign: Path, tmp_path: Path) -> Workspace:
    return Workspace.open(Path(shutil.copytree(campaign, tmp_path / "campaign", symlinks=True)) / "ws")


def rewritten(path: Path) -> Callable[[], bool]:
    """True once ``path`` is written again (or appears) after now."""
    before = path.stat().st_mtime_ns if path.exists() else None

    def check() -> bool:
        return path.exists() and path.stat().st_mtime_ns != before
    return check


def child_running(word: str) -> Callable[[psutil.Process], bool]:
    def check(proc: psutil.Process) -> bool:
        try:
            return any(word in " ".join(c.cmdline()) for c in proc.children(recursive=True))
        except psutil.Error:
            return False
    return check


def kill_at(ws: Workspace, argv: list[str], point: Callable[..., bool], with_proc: bool = False,
            timeout: float = 300) -> str:
    """Run ``activeseg ARGV`` in the workspace as a process group and SIGKILL the group as soon as
    ``point`` holds; returns "killed at the point", or "finished before the point" (the window was missed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[2]),
                                                                     os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", CLI, *argv], cwd=ws.root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (point(watched) if with_proc else point()):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "killed at the point"
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
            return "finished before the point"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{argv}: neither the point nor the end within {timeout} s")


def assert_truthful(ws: Workspace) -> None:
    """``round_status`` and ``status`` say what is on disk, in the store and in git, right now."""
    ws = Workspace.open(ws.root)  # a fresh reader, as the next process would be
    record, tagged = ws.record(1), ws.vcs.tag_exists(1)
    said = ws.round_status(1)
    assert said["trained"] == (record.trained is not None)
    if said["trained"]:
        assert (ws.root / "model/model.pt").is_file()
    assert said["queried"] == (record.queried is not None)
    if said["queried"]:
        assert ws.store.exists("requests/round-001/manifest.json")
    assert said["labels_accepted"] == (record.labels_accepted is not None)
    assert said["evaluated"] == tagged
    campaign = status(None, ws)
    assert campaign["current_round"] == (2 if tagged else 1)
    open_rounds = [item["round"] for item in campaign["pending"]]
    assert open_rounds == ([1] if record.queried is not None and record.labels_accepted is None else [])


def assert_like_the_clean_run(ws: Workspace, ref: Reference) -> None:
    ws = Workspace.open(ws.root)
    steps = Counter(e.type for e in ws.ledger.events(round=1) if e.type != "access_changed")  # enrol's
    assert steps == ref.events == Counter(ROUND_ONE)
    ids = sorted(r.id for r in ws.record(1).requested())
    assert store_labels(ws) == [f"{i}.png" for i in ids] and ws.store.list("labels/round-001/") == []
    assert sorted(p.name for p in (ws.root / "labels/round-001").iterdir()) == [f"{i}.png" for i in ids]
    if ws.record(1).trained.checkpoint_sha256 == ref.checkpoint:
        # the same model picks the same regions in any process: MC dropout is seeded from (seed, round)
        assert store_labels(ws) == ref.labels
    assert ws.git("tag", "-l").split() == ref.tags == ["round-000", "round-001"]
    assert ws.git("rev-list", "--merges", "HEAD") == "" and int(ws.git("rev-list", "--count", "HEAD")) == ref.commits
    assert ws.vcs.tag_commit(1) == head(ws) and ws.git("status", "--porcelain") == ""
    assert "in sync" in ws.dvc("status", "-c")
    assert label_objects(ws) == ref.label_objects  # the same label objects, in cache and remote, all whole
    assert ws.verify().ok
    assert ws.round_status(1) == {"round": 1, "trained": True, "queried": True, "labels_accepted": True,
                                  "evaluated": True, "rejected_batches": 0}
    assert_truthful(ws)


def scoring(ws: Workspace) -> Callable[[psutil.Process], bool]:
    """True a second after the query process mapped torch (imported lazily by the selection only), while
    query/selection.json is not written yet: the model scoring the pool."""
    selection, seen = ws.root / "query" / "selection.json", []

    def check(proc: psutil.Process) -> bool:
        if not seen:
            try:
                if any("libtorch" in m.path for m in proc.memory_maps()):
                    seen.append(time.monotonic())
            except psutil.Error:
                pass
            return False
        return time.monotonic() - seen[0] > 1.0 and not selection.exists()
    return check


def request_objects(ws: Workspace) -> Callable[[], bool]:
    """True once the round's request has objects in the store but no manifest yet (the upload under way)."""
    folder = ws.root.parent / "ws-remote" / "requests" / "round-001"
    return lambda: folder.is_dir() and any(folder.iterdir())


def commit_without_tag(ws: Workspace) -> Callable[[], bool]:
    git = ws.root / ".git"

    def check() -> bool:
        message = subprocess.run(["git", "log", "-1", "--format=%s"], cwd=ws.root, capture_output=True,
                                 text=True).stdout
        return message.startswith("round 1: evaluated") and not (git / "refs" / "tags" / "round-001").exists()
    return check


# point name -> (the step killed, its argv, the point, whether the point watches the process)
POINTS = {
    "validate": ("validate", ["step", "validate"], lambda ws: rewritten(ws.root / "validation/dataset.json"), False),
    "partition": ("partition", ["step", "partition"], lambda ws: rewritten(ws.root / "pool/regions.json"), False),
    "train": ("train", ["step", "train", "--round", "1"], lambda ws: rewritten(ws.root / "model/model.pt"), False),
    "query-scoring": ("query", ["step", "query", "--round", "1"], scoring, True),
    "query-upload": ("query", ["step", "query", "--round", "1"], request_objects, False),
    "approve-before-commit": ("approve", ["approve", "--round", "1", "--by", "x"],
                              lambda ws: rewritten(ws.root / "labels/round-001"), False),
    "evaluate-dvc-push": ("evaluate", ["step", "evaluate", "--round", "1"], lambda ws: child_running("push"), True),
    "evaluate-commit-no-tag": ("evaluate", ["step", "evaluate", "--round", "1"], commit_without_tag, False),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_inside_a_step_then_the_round_completes_as_a_clean_run(point: str, campaign: Path,
                                                                        reference: Reference, tmp_path: Path) -> None:
    step, argv, make_point, with_proc = POINTS[point]
    ws = copy_of(campaign, tmp_path)
    before = STEPS[:STEPS.index(step)]
    for done in before:  # the round up to the step killed
        run_round_one(ws, done)
    outcome = kill_at(ws, argv, make_point(ws), with_proc)
    print(f"{point}: {outcome}")
    assert_truthful(ws)
    assert ws.git("rev-list", "--merges", "HEAD") == ""
    run_round(Workspace.open(ws.root), step)  # the step again (a task retried), then the rest of the round
    assert_like_the_clean_run(ws, reference)
    run_round(Workspace.open(ws.root), "train")  # the round's steps once more: nothing doubled (validate and
    # partition are not steps of round 1 alone: after the round closed they belong to round 2)
    assert_like_the_clean_run(ws, reference)


def run_round_one(ws: Workspace, step: str) -> None:
    """One step of round 1, in this process."""
    run_round_steps = {"validate": ws.validate, "partition": ws.partition, "train": lambda: ws.train(1),
                       "query": lambda: ws.query(1), "simulate": lambda: ws.simulate_labels(1),
                       "approve": lambda: ws.approve(1, "x"), "evaluate": lambda: ws.evaluate(1)}
    run_round_steps[step]()
