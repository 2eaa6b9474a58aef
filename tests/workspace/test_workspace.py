"""The campaign workspace: init, a round end to end, idempotent steps, bad batches, audit, clones and S3."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.cli.main import main
from activeseg.workspace.exchange.images import mask_png
from activeseg.workspace.exchange.layout import round_prefix
from activeseg.loop.oracle import ground_truth
from activeseg.core.partition import Region
from activeseg.strategies import STRATEGIES, QueryContext, Selection, Strategy, fill_budget
from activeseg.core.synthetic import synthesize
from activeseg.workspace.validation import ValidationFailed
from activeseg.core.util import sha256_file
from activeseg.workspace import BatchRejected, Workspace, WorkspaceError, steps
from tests.conftest import TINY
from tests.workspace.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)
from tests.people import enrol

SETTINGS = [*TINY, "query.budget_pixels=2048"]  # two to four 32 x 32 regions per round


@pytest.fixture(scope="module")
def round_one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace (and its local remote beside it) after init, train and query of round 1; tests copy it."""
    parent = tmp_path_factory.mktemp("campaign")
    ws = Workspace.init(parent / "ws", "synthetic", overrides=SETTINGS)
    enrol(ws.root)
    ws.train(1)
    assert len(ws.query(1)["regions"]) >= 2
    return parent


@pytest.fixture
def ws(round_one: Path, tmp_path: Path) -> Workspace:
    copy = Path(shutil.copytree(round_one, tmp_path / "campaign", symlinks=True))
    return Workspace.open(copy / "ws")


def tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file below ``folder``, except under the ``skip`` prefixes."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)}


def workspace_files(ws: Workspace) -> dict[str, str]:
    """Everything a step could change, besides the ledger database and scratch space."""
    return tree(ws.root, (".git/", ".dvc/tmp/", ".dvc/cache/", "ledger.db", "tmp/"))


def requested(ws: Workspace, n: int = 1) -> list[Region]:
    return [r.region() for r in ws.record(n).queried.regions]


def write_good_batch(ws: Workspace, folder: Path, n: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for region in requested(ws, n):
        (folder / f"{region.id}.png").write_bytes(mask_png(ground_truth(ws.dataset, region), ws.cfg.data.classes))
    return folder


def head(ws: Workspace) -> str:
    return ws.git("rev-parse", "HEAD").strip()


def label_round(ws: Workspace, n: int = 1) -> dict:
    """The simulated annotator's batch for round ``n``, staged, then approved by "pi": taken in."""
    ws.simulate_labels(n)
    return ws.approve(n, "pi")


def test_init_makes_a_tagged_versioned_workspace(ws: Workspace) -> None:
    root = ws.root
    assert ws.git("tag", "-l").split() == ["round-000"]
    assert ws.current_round() == 1
    tracked = ws.git("ls-files").split()
    for name in ("params.yaml", "dvc.yaml", "dvc.lock", "data.dvc", "split.json", "labels/round-000.dvc",
                 "ledger.jsonl", "workspace.json", "validation/dataset.json", "rounds/round-000/record.json"):
        assert name in tracked
    assert "# activeseg default campaign" in (root / "params.yaml").read_text()  # copied with its comments
    assert ws.cfg.query.budget_pixels == 2048 and ws.cfg.data.synthetic.n == 10
    split = json.loads((root / "split.json").read_text())
    assert sorted(sum(split.values(), [])) == ws.dataset.stems
    initial = ws.record(0).initial.regions
    assert len(initial) == ws.cfg.partition.initial_labeled
    assert {r.stem for r in initial} <= set(split["train"])
    assert sorted(p.stem for p in (root / "labels/round-000").iterdir()) == sorted(r.id for r in initial)
    state = ws.label_state()
    assert state.revealed_pixels() == ws.record(0).labels_accepted.revealed_pixels > 0
    types = [e.type for e in ws.ledger.events()]
    assert types == ["access_changed", "dataset_registered", "split_frozen", "labels_committed",
                     "access_changed", "round_started", "queried", "request_published"]  # the second: enrol
    remote = root.parent / "ws-remote"
    assert (remote / "dvc" / "files" / "md5").is_dir()
    assert ws.store.exists("requests/round-001/manifest.json")
    status = ws.dvc("status")
    assert "evaluate" in status and "train" not in status and "query" not in status


def test_a_round_end_to_end_is_idempotent_and_clones_bit_identically(ws: Workspace) -> None:
    labels = label_round(ws)
    evaluated = ws.evaluate(1)
    assert ws.round_status(1) == {"round": 1, "trained": True, "queried": True, "labels_accepted": True,
                                  "evaluated": True, "rejected_batches": 0}
    assert ws.current_round() == 2 and ws.git("tag", "-l").split() == ["round-000", "round-001"]
    assert ws.git("status", "--porcelain") == ""
    assert labels["annotator"] == "simulated-oracle" and labels["files"] == len(requested(ws))
    assert evaluated["commit"] == head(ws) and 0 <= evaluated["metrics"]["dice"] <= 1
    types = [e.type for e in ws.ledger.events(round=1)]
    assert types == ["access_changed", "round_started", "queried", "request_published", "labels_received",
                     "labels_submitted", "labels_approved", "labels_committed", "round_evaluated"]
    # every step again: the recorded result, no new event, commit, tag or upload
    events, commit, remote = len(ws.ledger.events()), head(ws), tree(ws.root.parent / "ws-remote")
    again = Workspace.open(ws.root)
    assert again.train(1) == ws.record(1).trained.model_dump()
    assert again.query(1) == ws.record(1).queried.model_dump()
    assert again.simulate_labels(1) == labels and again.ingest(1) == labels and again.approve(1, "pi") == labels
    assert again.submit(1, write_good_batch(ws, ws.root.parent / "same"), "simulated-oracle") == labels
    assert again.evaluate(1) == evaluated
    assert (len(ws.ledger.events()), head(ws), tree(ws.root.parent / "ws-remote")) == (events, commit, remote)
    # a fresh clone and dvc pull restore the dataset, labels, model and selection bit for bit
    clone = ws.root.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(ws.root), str(clone)], check=True)
    cloned = Workspace.open(clone)
    cloned.dvc("pull", "-q")
    for part in ("data", "labels", "pretrain", "model", "query", "pool"):
        assert tree(clone / part) == tree(ws.root / part), part
    assert cloned.verify().ok and len(cloned.ledger.events()) == events
    # checking out round-000 restores exactly that round (no model or selection yet: allow-missing)
    old = ws.root.parent / "clone0"
    subprocess.run(["git", "clone", "-q", "--branch", "round-000", str(ws.root), str(old)], check=True,
                   capture_output=True)
    Workspace.open(old).dvc("pull", "-q", "--allow-missing")
    assert sorted(p.name for p in (old / "labels").iterdir()) == [".gitignore", "round-000", "round-000.dvc"]
    assert tree(old / "labels/round-000") == tree(ws.root / "labels/round-000")
    assert not (old / "model").exists()


def test_a_round_through_dvc_repro(ws: Workspace) -> None:
    label_round(ws)
    ws.evaluate(1)
    status = ws.dvc("status")
    assert "train" in status and "query" in status and "modified:           labels" in status
    ws.dvc("repro", "-q")
    assert ws.round_status(2) | {"rejected_batches": 0} == {"round": 2, "trained": True, "queried": True,
                                                           "labels_accepted": False, "evaluated": False,
                                                           "rejected_batches": 0}
    assert json.loads((ws.root / "metrics/evaluation.json").read_text())["round"] == 2
    assert "Data and pipelines are up to date" in ws.dvc("status")
    with pytest.raises(WorkspaceError, match="no accepted label batch yet"):
        ws.evaluate(2)
    label_round(ws, 2)
    assert ws.evaluate(2)["round"] == 2 and ws.current_round() == 3
    assert len(ws.ledger.events(type="round_evaluated", round=2)) == 1


def test_steps_refuse_the_wrong_order(ws: Workspace) -> None:
    with pytest.raises(WorkspaceError, match="round 1: no accepted label batch yet"):
        ws.evaluate(1)
    with pytest.raises(WorkspaceError, match="round 3 cannot start: the round in progress is 1"):
        ws.train(3)
    with pytest.raises(WorkspaceError, match="round 2: no trained model yet"):
        ws.query(2)
    with pytest.raises(WorkspaceError, match="round 2: no label request was published"):
        ws.simulate_labels(2)
    with pytest.raises(WorkspaceError, match="no label batch in .*labels/round-001/"):
        ws.ingest(1)
    with pytest.raises(WorkspaceError, match="rounds start at 1"):
        ws.train(0)
    # DVC's own refusals, through its Python API, name the command and the workspace
    with pytest.raises(WorkspaceError, match=r"dvc add failed in .*\n.*no-such-folder"):
        ws.vcs.track("no-such-folder")
    with pytest.raises(WorkspaceError, match=r"dvc commit failed in .*\n.*no-such-stage"):
        ws.vcs.stage_done("no-such-stage")


def damage(kind: str, ws: Workspace, folder: Path) -> str:
    """Turn a good batch into a bad one of the given kind; returns a piece of the expected reason."""
    first = sorted(folder.iterdir())[0]
    if kind == "missing":
        first.unlink()
        return f"{first.name}: no mask uploaded"
    if kind == "extra":
        shutil.copy(first, folder / "syn-009_y0000_x0000_32x32.png")
        return "syn-009_y0000_x0000_32x32.png: not a requested region id"
    if kind == "unreadable":
        first.write_bytes(b"\x89PNG truncated")
        return f"{first.name}: not a readable PNG"
    if kind == "not single channel":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(first)
        return f"{first.name}: 3 channels, a mask has one"
    if kind == "wrong size":
        Image.fromarray(np.zeros((16, 32), np.uint8)).save(first)
        return f"{first.name}: size 16 x 32 (height x width), the region's in-image part is 32 x 32"
    if kind == "values":
        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(first)
        return f"{first.name}: 1024 pixels outside the classes"
    if kind == "empty":
        ws.cfg.oracle.allow_empty_masks = False
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(first)
        return f"{first.name}: all-empty mask"
    if kind == "too big":
        ws.cfg.oracle.max_file_bytes = max(p.stat().st_size for p in folder.iterdir()) + 100
        first.write_bytes(first.read_bytes() + bytes(1000))  # still a valid PNG, just too large
        return f"{first.name}: {first.stat().st_size} bytes, over oracle.max_file_bytes"
    if kind == "path separator":
        (folder / "sub").mkdir()
        first.rename(folder / "sub" / first.name)
        return f"sub/{first.name}: path separator in the name"
    if kind == "symlink":
        target = first.rename(folder.parent / "elsewhere.png")
        os.symlink(target, first)
        return f"{first.name}: a symlink, not a plain file"
    if kind == "hidden":
        first.rename(folder / f".{first.name}")
        return f".{first.name}: hidden file"
    assert kind == "second submission"
    label_round(ws)
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(first)
    return "batch: round 1 already has an accepted batch"


BAD_KINDS = ["missing", "extra", "unreadable", "not single channel", "wrong size", "values", "empty", "too big",
             "path separator", "symlink", "hidden", "second submission"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_batch_is_quarantined_and_a_good_one_then_accepted(ws: Workspace, tmp_path: Path, kind: str) -> None:
    folder = write_good_batch(ws, tmp_path / "batch")
    reason = damage(kind, ws, folder)
    before, commit = workspace_files(ws), head(ws)
    accepted_before = ws.record(1).labels_accepted
    with pytest.raises(BatchRejected) as rejected:
        ws.submit(1, folder, "alice")
    assert any(r.startswith(reason) for r in rejected.value.reasons), rejected.value.reasons
    assert "expect_" not in str(rejected.value) and reason in str(rejected.value)  # sentences, no GX names
    # quarantined with a report naming each file, the expectation behind each reason, the GX result as JSON
    prefix = rejected.value.quarantine.removeprefix(ws.store.url + "/")
    report = json.loads(ws.store.get_bytes(prefix + "report.json"))
    assert report["reasons"] == rejected.value.reasons and report["annotator"] == "alice"
    assert len(report["checks"]) == len(report["reasons"]) and all(c.startswith("expect_") for c in report["checks"])
    assert report["success"] is False and set(report["gx_result"]) == {"files", "batch"}
    # nothing applied: workspace, commit, the store's upload folder and the record are as they were
    assert workspace_files(ws) == before and head(ws) == commit
    assert ws.record(1).labels_accepted == accepted_before
    assert ws.store.list(round_prefix("labels", 1)) == []
    event = ws.ledger.events(type="batch_rejected", round=1)[-1]
    assert event.data["reasons"] == rejected.value.reasons and event.data["annotator"] == "alice"
    assert ws.ledger.events(type="labels_received", round=1)[-1].data["annotator"] == "alice"
    # a correct batch afterwards is accepted (for a second submission: the accepted one stands)
    ws.cfg.oracle.allow_empty_masks = True
    result = label_round(ws)
    assert ws.round_status(1)["labels_accepted"] and ws.round_status(1)["rejected_batches"] == 1
    assert result == (accepted_before or ws.record(1).labels_accepted).model_dump()
    assert sorted(p.stem for p in (ws.root / "labels/round-001").iterdir()) == sorted(r.id for r in requested(ws))


def test_store_uploads_can_be_rejected_by_a_person_then_ingested(ws: Workspace, tmp_path: Path) -> None:
    folder = write_good_batch(ws, tmp_path / "batch")
    with pytest.raises(WorkspaceError, match="no staged or uploaded batch to reject"):
        ws.reject(1, "carol", "blurry")
    for path in folder.iterdir():
        ws.store.put_bytes(f"labels/round-001/{path.name}", path.read_bytes())
    rejected = ws.reject(1, "carol", "masks drawn on the wrong image")
    again = ws.reject(1, "carol", "masks drawn on the wrong image")
    assert again == rejected
    assert ws.store.list("labels/round-001/") == [] and not ws.round_status(1)["labels_accepted"]
    event = ws.ledger.events(type="batch_rejected", round=1)[-1]
    assert (event.actor, event.data["reasons"]) == ("carol", ["rejected by carol: masks drawn on the wrong image"])
    assert len(ws.ledger.events(type="batch_rejected")) == 1
    assert [p["round"] for p in ws.pending()] == [1]
    for path in folder.iterdir():
        ws.store.put_bytes(f"labels/round-001/{path.name}", path.read_bytes())
    staged = ws.ingest(1, "bob")
    assert ws.pending()[0]["staged"]["batch_sha256"] == staged["batch_sha256"]
    result = ws.approve(1, "pi")
    assert result["annotator"] == "bob" and ws.pending() == []
    with pytest.raises(WorkspaceError, match="already approved"):
        ws.reject(1, "carol", "too late")


class PseudoLabeling(Strategy):
    """For the test: the first candidates that fit, and pseudo-labels (all foreground) for the last two."""

    name = "test-pseudo"
    needs_model = False

    def select(self, ctx: QueryContext) -> Selection:
        picks, costs = fill_budget(np.arange(len(ctx.candidates)), ctx)
        others = [r for i, r in reversed(list(enumerate(ctx.candidates))) if i not in picks][:2]
        pseudo = [(r, np.ones([s.stop - s.start for s in r.clipped(*ctx.state.shapes[r.stem])], np.uint8))
                  for r in others]
        return Selection(picks, [1.0] * len(picks), costs, pseudo=pseudo, pseudo_origin=ctx.model_id)


@pytest.fixture
def pseudo_strategy() -> Iterator[str]:
    STRATEGIES[PseudoLabeling.name] = PseudoLabeling
    yield PseudoLabeling.name
    del STRATEGIES[PseudoLabeling.name]


def test_pseudo_labels_are_recorded_and_applied_with_the_round_labels(ws: Workspace, pseudo_strategy: str) -> None:
    label_round(ws)
    ws.evaluate(1)
    ws.cfg.query.strategy = pseudo_strategy
    model_sha = ws.train(2)["checkpoint_sha256"]
    selection = ws.query(2)
    pseudo_ids = [r["id"] for r in selection["pseudo"]["regions"]]
    event = ws.ledger.events(type="pseudo_labeled", round=2)[0]
    assert (event.data["regions"], event.data["model"]) == (pseudo_ids, model_sha) and len(pseudo_ids) == 2
    assert ws.label_state().pseudo_regions == {}  # applied with the round's labels, not before
    label_round(ws, 2)
    state = ws.label_state()
    assert {k: v["origin"] for k, v in state.pseudo_regions.items()} == {i: model_sha for i in pseudo_ids}
    for item in selection["pseudo"]["regions"]:
        region = Region.from_dict(item)
        ys, xs = region.clipped(*state.shapes[region.stem])
        unknown = ~state.known[region.stem][ys, xs]
        assert unknown.any() and state.pseudo_known[region.stem][ys, xs][unknown].all()
    assert "pseudo/round-002.npz.dvc" in ws.git("ls-files").split()


def test_tampering_makes_audit_verify_fail(ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    label_round(ws)
    assert ws.verify().ok
    assert main(["audit", "verify", "--workspace", str(ws.root)]) == 0
    label = sorted((ws.root / "labels/round-001").iterdir())[0]
    original = label.read_bytes()
    label.write_bytes(mask_png(np.ones((32, 32), np.uint8), 2))
    result = ws.verify()
    committed = ws.ledger.events(type="labels_committed", round=1)[0]
    assert not result.ok and result.bad_seq == committed.seq
    assert f"labels/round-001/{label.name} no longer matches its recorded hash" in result.message
    capsys.readouterr()
    assert main(["audit", "verify", "--workspace", str(ws.root)]) == 1
    assert f"event {committed.seq} (labels_committed, round 1)" in capsys.readouterr().out
    label.write_bytes(original)
    assert ws.verify().ok
    db = sqlite3.connect(ws.root / "ledger.db", isolation_level=None)
    db.execute("DROP TRIGGER events_no_update")
    db.execute("UPDATE events SET actor='mallory' WHERE seq=4")
    db.close()
    result = ws.verify()
    assert not result.ok and result.bad_seq == 4 and "content does not match its hash" in result.message


def test_an_edited_ledger_export_fails_verification(ws: Workspace) -> None:
    label_round(ws)
    export = ws.root / "ledger.jsonl"
    export.write_text(export.read_text().replace('"simulated-oracle"', '"mallory"', 1))
    result = ws.verify()
    assert not result.ok and "ledger.jsonl line" in result.message


def test_cli_labels_and_audit(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    where = ["--workspace", str(ws.root)]
    assert main(["labels", "pending", *where]) == 0
    assert "open label requests" in capsys.readouterr().out
    folder = write_good_batch(ws, tmp_path / "batch")
    sorted(folder.iterdir())[0].unlink()
    assert main(["labels", "submit", str(folder), "--round", "1", "--annotator", "dan", *where]) == 1
    out = capsys.readouterr().err
    assert "rejected" in out and "no mask uploaded" in out and "expect_" not in out
    assert main(["labels", "simulate", *where]) == 0
    assert " from simulated-oracle staged (" in capsys.readouterr().out
    assert main(["approve", "--round", "1", "--by", "pi", *where]) == 0  # no round run: taken in by hand
    assert "approved by pi and taken in by hand" in capsys.readouterr().out
    region = requested(ws)[0].id
    assert main(["audit", "--sample", region, "--json", *where]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in history] == ["queried", "request_published", "labels_approved", "labels_committed"]
    assert main(["audit", "--annotator", "dan", "--csv", *where]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("seq,time") and [r.split(",")[3] for r in rows[1:]] == ["labels_received",
                                                                                      "batch_rejected"]
    assert main(["step", "evaluate", *where]) == 0
    assert json.loads(capsys.readouterr().out)["round"] == 1


def test_step_validate_reuses_its_report_while_nothing_it_depends_on_changed(ws: Workspace,
                                                                              monkeypatch: pytest.MonkeyPatch):
    ws.validate()
    report = json.loads((ws.root / "validation/dataset.json").read_text())
    suites = []
    run_suite = steps.validate_dataset
    monkeypatch.setattr(steps, "validate_dataset", lambda *a, **k: suites.append(a[0]) or run_suite(*a, **k))
    assert ws.validate()["success"] and suites == []  # same files, settings, split, queries and suite code
    assert json.loads((ws.root / "validation/dataset.json").read_text()) == report
    image = sorted((ws.root / "data" / "images").iterdir())[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1))  # touched: validated again
    assert ws.validate()["success"] and suites == [ws.root / "data"]
    assert ws.validate()["success"] and len(suites) == 1


def test_step_validate_checks_the_frozen_split(ws: Workspace) -> None:
    assert ws.validate() == {"success": True, "images": 10, "report": "validation/dataset.json"}
    queried = requested(ws)[0].stem
    split = json.loads((ws.root / "split.json").read_text())
    split["train"].remove(queried)
    split["val"].append(queried)
    (ws.root / "split.json").write_text(json.dumps(split))
    with pytest.raises(ValidationFailed) as failed:
        ws.validate()
    assert failed.value.report.reasons == [
        f"images/{queried}.png: regions of this image were queried, but it is in the val split",
        "split.json: differs from the split frozen at init (ledger split_frozen)"]
    assert json.loads((ws.root / "validation/dataset.json").read_text())["success"] is False


def test_init_refuses_a_bad_dataset_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = synthesize(tmp_path / "data", n=4, size=64, seed=1)
    (data / "masks" / "syn-002.png").unlink()
    assert main(["init", str(tmp_path / "ws"), "--dataset", str(data), *[f"--set={o}" for o in SETTINGS]]) == 1
    out = capsys.readouterr().err
    assert "images/syn-002.png: no mask masks/syn-002.png" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    with pytest.raises(WorkspaceError, match="not an activeseg workspace"):
        Workspace.open(tmp_path)
    with pytest.raises(WorkspaceError, match="already exists and is not empty"):
        Workspace.init(tmp_path, "synthetic")


def test_s3_remote_round_trip(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    source = synthesize(tmp_path / "source", n=10, size=64, seed=0)  # a plain-folder dataset this time
    ws = Workspace.init(tmp_path / "ws", source, remote=f"s3://{s3_bucket}/campaign", endpoint=s3_endpoint,
                        overrides=SETTINGS)
    enrol(ws.root)
    assert tree(ws.root / "data/images") == tree(source / "images")
    ws.train(1)
    ws.query(1)
    assert ws.store.url == f"s3://{s3_bucket}/campaign"
    assert ws.store.exists("requests/round-001/manifest.json")
    # names only other clients can upload: a '..' segment and an absolute path
    good = write_good_batch(ws, tmp_path / "batch")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for path in good.iterdir():
        client.put_object(Bucket=s3_bucket, Key=f"campaign/labels/round-001/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket=s3_bucket, Key="campaign/labels/round-001/../escape.png", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key="campaign/labels/round-001//etc/x.png", Body=b"x")
    with pytest.raises(BatchRejected) as rejected:
        ws.ingest(1, "eve")
    assert any(r.startswith("../escape.png: '.' or '..' path segment") for r in rejected.value.reasons)
    assert any(r.startswith("/etc/x.png: absolute path") for r in rejected.value.reasons)
    assert ws.store.list("labels/round-001/") == []
    assert ws.store.exists(rejected.value.quarantine.removeprefix(ws.store.url + "/") + "report.json")
    label_round(ws)
    ws.evaluate(1)
    # credentials never land in the workspace, its git history or DVC's config
    assert "activeseg-test-secret" not in ws.git("log", "-p", "--all")
    for path in ws.root.rglob("*"):
        if path.is_file() and ".dvc/cache" not in path.as_posix():
            assert b"activeseg-test-secret" not in path.read_bytes(), path
    assert "endpointurl = " + s3_endpoint in (ws.root / ".dvc" / "config").read_text()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ws.root), str(clone)], check=True)
    Workspace.open(clone).dvc("pull", "-q")
    for part in ("data", "labels", "model", "query"):
        assert tree(clone / part) == tree(ws.root / part), part
    dvc_objects = [i.key for i in ws.store.list("dvc/files/md5/")]
    assert len(dvc_objects) > len(ws.dataset.stems) * 2


def test_a_lock_file_left_by_a_killed_git_does_not_block_the_next_commit_or_tag(ws: Workspace) -> None:
    """A SIGKILL inside `git tag` (fault matrix: evaluate-commit-no-tag) leaves refs/tags/round-NNN.lock."""
    (ws.root / ".git" / "index.lock").write_text("")
    (ws.root / "notes.txt").write_text("after the kill\n")
    commit = ws.vcs.commit("a commit after a killed git")
    assert commit == head(ws) and not (ws.root / ".git" / "index.lock").exists()
    (ws.root / ".git" / "refs" / "tags" / "round-001.lock").write_text("")
    ws.vcs.tag(1, "round 1")
    assert ws.vcs.tag_commit(1) == commit
