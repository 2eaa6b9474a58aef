"""Label intake behind a reviewer: a valid batch is staged (uploaded, recorded, not taken in), approving
it takes it in, rejecting it quarantines it and the round waits; one staged batch at a time."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.cli.main import main
from activeseg.workspace import ApprovalRefused, BatchRejected, Workspace, WorkspaceError
from activeseg.workspace.exchange.batches import batch_sha256, read_folder_batch, read_staged_batch
from tests.workspace.test_workspace import head, requested, round_one, write_good_batch, ws  # noqa: F401

INTAKE = ("labels_received", "labels_submitted", "batch_rejected", "batch_unstaged", "labels_approved",
          "labels_committed")


def variant(ws: Workspace, folder: Path) -> Path:
    """A valid batch that differs from the ground truth in one pixel of its first mask."""
    write_good_batch(ws, folder)
    first = sorted(folder.iterdir())[0]
    mask = np.array(Image.open(first))
    mask[0, 0] = 255 - mask[0, 0]
    Image.fromarray(mask).save(first)
    return folder


def digest(folder: Path) -> str:
    return batch_sha256(read_folder_batch(folder, 1 << 20))


def intake_events(ws: Workspace) -> list[tuple[str, str, str]]:
    """(type, actor, batch hash) of round 1's intake events, in order."""
    return [(e.type, e.actor, e.data["batch_sha256"]) for e in ws.ledger.events(round=1) if e.type in INTAKE]


def store_keys(ws: Workspace, prefix: str = "labels/round-001/") -> list[str]:
    return sorted(info.key for info in ws.store.list(prefix))


def test_a_batch_is_staged_rejected_resubmitted_and_taken_in_only_when_approved(ws: Workspace, tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture):
    first, second = write_good_batch(ws, tmp_path / "alice"), variant(ws, tmp_path / "bob")
    a, b = digest(first), digest(second)
    ids = sorted(r.id for r in requested(ws))
    commit, known = head(ws), ws.label_state().revealed_pixels()

    staged = ws.submit(1, first, "alice")
    assert {k: staged[k] for k in ("round", "annotator", "batch_sha256", "files", "replaces")} == {
        "round": 1, "annotator": "alice", "batch_sha256": a, "files": len(ids), "replaces": None}
    # copied to its write-once staged place and recorded, but not in labels/, the known masks or git
    assert store_keys(ws, "staged/") == [f"staged/round-001/{a}/batch.json",
                                         *(f"staged/round-001/{a}/files/{i}.png" for i in ids)]
    assert store_keys(ws) == []
    assert ws.record(1).staged.batch_sha256 == a and ws.record(1).labels_accepted is None
    assert not (ws.root / "labels/round-001").exists()
    assert head(ws) == commit and ws.label_state().revealed_pixels() == known
    with pytest.raises(WorkspaceError, match="no accepted label batch yet"):
        ws.evaluate(1)
    # what the reviewer sees: labels pending and status name the staged batch
    where = ["--workspace", str(ws.root)]
    assert main(["labels", "pending", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)[0]["staged"]["batch_sha256"] == a
    assert main(["status", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)["batch"] == {"round": 1, "sha256": a, "annotator": "alice",
                                                           "files": len(ids), "reviewed_unchanged": None}
    # submitting the same batch again changes nothing; another one is refused, naming the staged one
    assert ws.submit(1, first, "alice") == staged
    with pytest.raises(WorkspaceError, match=f"round 1: batch {a} from alice is staged and waits for review"):
        ws.submit(1, second, "bob")

    rejected = ws.reject(1, "rita", "boundaries too coarse")
    report = json.loads(ws.store.get_bytes(rejected["quarantine"].removeprefix(ws.store.url + "/") + "report.json"))
    assert (report["annotator"], report["reasons"]) == ("alice", ["rejected by rita: boundaries too coarse"])
    assert store_keys(ws, "staged/") == [] and ws.record(1).staged is None and head(ws) == commit
    assert [(p["round"], p["staged"]) for p in ws.pending()] == [(1, None)]  # the round keeps waiting
    with pytest.raises(WorkspaceError, match="round 1: no label batch is staged"):
        ws.approve(1, "pi")

    ws.submit(1, second, "bob")
    with pytest.raises(ApprovalRefused, match=f"the staged batch is {b[:12]}, not the one approved"):
        ws.approve(1, "pi", batch=a)
    accepted = ws.approve(1, "pi", "checked", batch=b)
    assert ws.approve(1, "pi") == accepted and ws.approve(1, "sam") == accepted  # one approval
    assert (accepted["annotator"], accepted["batch_sha256"], accepted["files"]) == ("bob", b, len(ids))
    assert sorted(p.stem for p in (ws.root / "labels/round-001").iterdir()) == ids
    assert ws.label_state().revealed_pixels() > known and ws.git("status", "--porcelain", "labels") == ""
    assert ws.git("log", "-1", "--format=%s").startswith(f"round 1: labels from bob ({len(ids)} masks, batch {b[:12]}")
    assert ws.record(1).staged is None and ws.pending() == []
    assert store_keys(ws, "staged/") == [f"staged/round-001/{b}/batch.json",  # the store's copy of what was taken in
                                         *(f"staged/round-001/{b}/files/{i}.png" for i in ids)]
    with pytest.raises(WorkspaceError, match=f"batch {b[:12]} was already approved; there is nothing to reject"):
        ws.reject(1, "rita", "too late")
    assert intake_events(ws) == [("labels_received", "alice", a), ("labels_submitted", "alice", a),
                                 ("batch_rejected", "rita", a), ("labels_received", "bob", b),
                                 ("labels_submitted", "bob", b), ("labels_approved", "pi", b),
                                 ("labels_committed", "bob", b)]
    refused = ws.ledger.last("approval_refused", round=1)
    assert (refused.actor, refused.data["batch_sha256"], refused.data["quarantine"]) == ("pi", a, None)
    approval = ws.ledger.last("labels_approved", round=1).data
    assert (approval["comment"], approval["annotator"], approval["flow_run_id"]) == ("checked", "bob", None)
    assert ws.evaluate(1)["round"] == 1 and ws.verify().ok


def test_replacing_a_staged_batch_is_recorded_and_a_rejected_batch_may_come_again(ws: Workspace, tmp_path: Path):
    first, second = write_good_batch(ws, tmp_path / "alice"), variant(ws, tmp_path / "bob")
    a, b = digest(first), digest(second)
    ws.submit(1, first, "alice")
    replacing = ws.submit(1, second, "bob", replace=True)
    assert (replacing["batch_sha256"], replacing["replaces"]) == (b, a)
    assert ws.ledger.last("labels_submitted", round=1).data["replaces"] == a
    quarantined = store_keys(ws, "quarantine/round-001/")
    kept = [json.loads(ws.store.get_bytes(k)) for k in quarantined if k.endswith("report.json")]
    assert [(r["batch_sha256"], r["unstaged_by"], r["reasons"]) for r in kept] == [
        (a, "bob", [f"replaced by batch {b[:12]} from bob"])]
    assert len([k for k in quarantined if "/files/" in k]) == len(requested(ws))
    unstaged = ws.ledger.last("batch_unstaged", round=1)
    assert (unstaged.actor, unstaged.data["batch_sha256"], unstaged.data["annotator"]) == ("bob", a, "alice")

    ws.reject(1, "rita", "not convinced")
    assert ws.submit(1, second, "bob")["batch_sha256"] == b  # the same batch again, after the rejection
    ws.approve(1, "pi")
    assert intake_events(ws) == [("labels_received", "alice", a), ("labels_submitted", "alice", a),
                                 ("labels_received", "bob", b), ("batch_unstaged", "bob", a),
                                 ("labels_submitted", "bob", b), ("batch_rejected", "rita", b), ("labels_received", "bob", b),
                                 ("labels_submitted", "bob", b), ("labels_approved", "pi", b),
                                 ("labels_committed", "bob", b)]


def test_two_submissions_at_once_stage_exactly_one(ws: Workspace, tmp_path: Path):
    folders = {"alice": write_good_batch(ws, tmp_path / "alice"), "bob": variant(ws, tmp_path / "bob")}
    outcomes: dict[str, str] = {}

    def hand_in(annotator: str) -> None:
        try:
            outcomes[annotator] = Workspace.open(ws.root).submit(1, folders[annotator], annotator)["batch_sha256"]
        except WorkspaceError as exc:
            outcomes[annotator] = str(exc)

    threads = [threading.Thread(target=hand_in, args=(name,)) for name in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    staged = ws.record(1).staged
    loser = "bob" if staged.annotator == "alice" else "alice"
    assert outcomes[staged.annotator] == staged.batch_sha256 == digest(folders[staged.annotator])
    assert outcomes[loser].startswith(f"round 1: batch {staged.batch_sha256} from {staged.annotator} is staged")
    assert [e.actor for e in ws.ledger.events(type="labels_submitted", round=1)] == [staged.annotator]


def test_two_approvals_at_once_take_the_batch_in_once(ws: Workspace, tmp_path: Path):
    batch = digest(write_good_batch(ws, tmp_path / "alice"))
    ws.submit(1, tmp_path / "alice", "alice")
    commits = int(ws.git("rev-list", "--count", "HEAD"))
    outcomes: dict[str, dict] = {}

    def approve(approver: str) -> None:
        outcomes[approver] = Workspace.open(ws.root).approve(1, approver, f"ok from {approver}")

    threads = [threading.Thread(target=approve, args=(name,)) for name in ("pi", "sam")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    approvals = ws.ledger.events(type="labels_approved", round=1)
    assert len(approvals) == 1 and approvals[0].actor in ("pi", "sam")
    assert outcomes["pi"] == outcomes["sam"] and outcomes["pi"]["batch_sha256"] == batch
    assert [e.data["batch_sha256"] for e in ws.ledger.events(type="labels_committed", round=1)] == [batch]
    assert int(ws.git("rev-list", "--count", "HEAD")) == commits + 1
    assert ws.record(1).staged is None and ws.record(1).labels_accepted.batch_sha256 == batch


def quarantined_bytes(ws: Workspace) -> set[bytes]:
    """The bytes of every file kept in the round's quarantine."""
    return {ws.store.get_bytes(k) for k in store_keys(ws, "quarantine/round-001/") if "/files/" in k}


def upload(ws: Workspace, folder: Path, names: list[str] | None = None) -> None:
    """Put a batch folder's files (or only ``names``) into the round's upload folder, as an annotator would."""
    for path in sorted(folder.iterdir()):
        if names is None or path.name in names:
            ws.store.put_bytes(f"labels/round-001/{path.name}", path.read_bytes())


def test_an_upload_over_a_staged_batch_never_changes_or_loses_it(ws: Workspace, tmp_path: Path):
    """Defect: a second annotator's upload into the folder that held the staged batch, then `labels
    ingest --replace`, unstaged the first batch with no record and no copy. Now staging moves the batch
    to its own write-once place: a partial upload is quarantined alone, a whole one replaces the staged
    batch on the record (unstaged into the quarantine), a rejection quarantines, and every byte ever
    handed in can still be found."""
    alice, bob = write_good_batch(ws, tmp_path / "alice"), variant(ws, tmp_path / "bob")
    a, b = digest(alice), digest(bob)
    handed_in = {p.read_bytes() for p in [*alice.iterdir(), *bob.iterdir()]}
    upload(ws, alice)
    assert ws.ingest(1, "alice")["batch_sha256"] == a
    assert store_keys(ws) == []  # the upload folder is empty again: the batch lies in staged/ alone
    assert len(store_keys(ws, f"staged/round-001/{a}/files/")) == len(requested(ws))

    first = sorted(p.name for p in bob.iterdir())[0]
    upload(ws, bob, [first])  # bob uploads one mask "over" alice's batch
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / first).write_bytes((bob / first).read_bytes())
    with pytest.raises(BatchRejected, match="no mask uploaded for this requested region"):
        ws.ingest(1, "bob", replace=True)
    assert ws.record(1).staged.batch_sha256 == a  # alice's batch stays staged, untouched
    assert ws.ledger.events(type="batch_unstaged", round=1) == []
    assert batch_sha256(read_staged_batch(ws.store, 1, a, 1 << 20)) == a

    upload(ws, bob)  # now the whole batch: it replaces alice's, on the record, with alice's kept
    assert ws.ingest(1, "bob", replace=True)["replaces"] == a
    unstaged = ws.ledger.last("batch_unstaged", round=1).data
    assert (unstaged["batch_sha256"], unstaged["annotator"], unstaged["by"]) == (a, "alice", "bob")
    report = json.loads(ws.store.get_bytes(unstaged["quarantine"] + "report.json"))
    assert report["reasons"] == [f"replaced by batch {b[:12]} from bob"]
    assert store_keys(ws, f"staged/round-001/{a}/") == []
    ws.reject(1, "pi", "one pixel off")  # bob's batch goes to the quarantine too
    upload(ws, alice)  # alice's batch, handed in again, is taken in
    assert ws.ingest(1, "alice")["batch_sha256"] == a
    ws.approve(1, "pi")
    taken = {p.read_bytes() for p in (ws.root / "labels/round-001").iterdir()}
    assert handed_in <= quarantined_bytes(ws) | taken  # every mask anyone handed in can be found
    assert [(e.type, e.data["batch_sha256"]) for e in ws.ledger.events(round=1)
            if e.type in ("batch_rejected", "batch_unstaged", "labels_committed")] == [
        ("batch_rejected", batch_sha256(read_folder_batch(tmp_path / "partial", 1 << 20))),
        ("batch_unstaged", a), ("batch_rejected", b), ("labels_committed", a)]


def test_an_approval_of_a_changed_staged_batch_is_refused_recorded_and_shown(ws: Workspace, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture):
    """Defect: an approval whose staged bytes had changed exited 1 by hand and recorded nothing. Now it is
    refused on the record, the changed batch goes to the quarantine with the reason, and `approve`,
    `status` and `labels pending` say so."""
    alice = write_good_batch(ws, tmp_path / "alice")
    a, where = digest(alice), ["--workspace", str(ws.root)]
    ws.submit(1, alice, "alice")
    changed = sorted(store_keys(ws, f"staged/round-001/{a}/files/"))[0]
    ws.store.put_bytes(changed, b"not the staged bytes")
    name = changed.rsplit("/", 1)[1]

    assert main(["approve", "--round", "1", "--by", "bob", *where]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"the approval of batch {a[:12]} by bob was not taken" in out and f"({name} changed)" in out
    refused = ws.ledger.last("approval_refused", round=1)
    assert (refused.actor, refused.data["batch_sha256"]) == ("bob", a)
    assert refused.data["reason"] == f"the staged batch no longer holds the bytes that were staged ({name} changed)"
    unstaged = ws.ledger.last("batch_unstaged", round=1).data
    assert unstaged["quarantine"] == refused.data["quarantine"] and unstaged["reason"] == refused.data["reason"]
    assert b"not the staged bytes" in quarantined_bytes(ws)
    assert ws.record(1).staged is None and ws.record(1).labels_accepted is None
    assert ws.ledger.events(type="labels_approved", round=1) == []

    assert main(["status", "--json", *where]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["batch"] is None and status["pending"][0]["refused"]["batch_sha256"] == a
    assert main(["status", *where]) == 0
    assert f"approval of batch {a[:12]} by bob refused" in " ".join(capsys.readouterr().out.split())
    assert main(["labels", "pending", *where]) == 0
    said = capsys.readouterr()
    assert f"approval of batch {a[:12]} by bob refused" in " ".join((said.out + said.err).split())

    ws.submit(1, alice, "alice")  # handed in again, the batch is staged afresh and can be approved
    assert main(["approve", "--round", "1", "--by", "bob", *where]) == 0
    assert f"batch {a[:12]} from alice approved by bob and taken in" in " ".join(capsys.readouterr().out.split())
    assert ws.pending() == [] and ws.verify().ok


def test_approve_on_a_round_without_a_request_says_so(ws: Workspace, capsys: pytest.CaptureFixture):
    assert main(["approve", "--round", "2", "--by", "bob", "--workspace", str(ws.root)]) == 2
    out = " ".join(capsys.readouterr().err.split())  # an error: on stderr
    assert "round 2 has no label request, so there is nothing to approve: it has not started" in out


def test_replacing_a_staged_batch_with_the_same_bytes_says_so(ws: Workspace, tmp_path: Path):
    alice = write_good_batch(ws, tmp_path / "alice")
    a = ws.submit(1, alice, "alice")["batch_sha256"]
    with pytest.raises(WorkspaceError, match=f"the batch from dan is byte for byte batch {a[:12]}, already staged "
                                             "from alice: nothing to replace"):
        ws.submit(1, alice, "dan", replace=True)
    assert ws.submit(1, alice, "alice", replace=True)["batch_sha256"] == a  # the same hand-in again: as it was
    assert [e.actor for e in ws.ledger.events(type="labels_submitted", round=1)] == ["alice"]
