"""Who may do what, four eyes and signed decisions (issue 23), fault-matrix style: each row one way a
person may try to act as someone else or unchecked, and what the workspace does with it (refused,
recorded; or ``audit verify`` failing on the event). Real SSH keys (``ssh-keygen -t ed25519``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from activeseg.cli.main import main
from activeseg.workspace import ApprovalRefused, Workspace
from activeseg.workspace.access import AccessError, os_user
from activeseg.workspace.audit import check_signatures
from activeseg.workspace.creation import write_params
from activeseg.workspace.identity import Refused, payload
from activeseg.workspace.ledger import GENESIS, Event, Ledger
from activeseg.workspace.signing import SIGNATURE, sign
from tests.conftest import TINY
from tests.workspace.test_workspace import write_good_batch

SETTINGS = [*TINY, "query.budget_pixels=2048", "oracle.kind=human"]  # four eyes on by default


def keygen(folder: Path, name: str) -> Path:
    """A new ed25519 key pair ``folder/name`` and ``folder/name.pub``; the private key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(folder / name)],
                   check=True, capture_output=True)
    return folder / name


def pub(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text().strip()


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: keygen(folder, name) for name in ("admin", "ann", "rita", "stranger")}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Path:
    """A human-oracle workspace after round 1's query; its admin (the OS user) added, by ``access add``: ann
    (annotator and reviewer) and rita (reviewer), each with a key."""
    parent = tmp_path_factory.mktemp("identity")
    ws = Workspace.init(parent / "ws", "synthetic", overrides=SETTINGS, key=pub(keys["admin"]), sign=str(keys["admin"]))
    where = ["--workspace", str(ws.root)]
    for name, role in (("ann", "annotator"), ("ann", "reviewer"), ("rita", "reviewer")):
        assert main(["access", "add", name, "--role", role, "--key", f"{keys[name]}.pub", "--sign",
                     str(keys["admin"]), *where]) == 0
    ws.train(1)
    ws.query(1)
    return parent


@pytest.fixture
def ws(campaign: Path, tmp_path: Path) -> Workspace:
    return Workspace.open(Path(shutil.copytree(campaign, tmp_path / "c", symlinks=True)) / "ws")


def staged(ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> str:
    """ann's batch for round 1, signed by ann and staged; its hash."""
    return ws.submit(1, write_good_batch(ws, tmp_path / "batch"), "ann", sign=str(keys["ann"]))["batch_sha256"]


def last(ws: Workspace, type: str) -> Event:
    event = ws.ledger.last(type)
    assert event is not None
    return event


# -- roles -----------------------------------------------------------------------------------------

def test_init_makes_the_os_user_the_first_admin_recorded_and_signed(ws: Workspace, keys: dict[str, Path]) -> None:
    first = ws.ledger.events()[0]
    assert (first.type, first.actor, first.data["by"]) == ("access_changed", os_user(), os_user())
    assert first.data[SIGNATURE].startswith("-----BEGIN SSH SIGNATURE-----")
    assert ws.git("show", "round-000:access.yaml").startswith("# The activeseg access file")
    assert {p.name: p.roles for p in ws.access().people} == {os_user(): ["admin"], "ann": ["annotator", "reviewer"],
                                                            "rita": ["reviewer"]}
    assert f"access: added rita as reviewer with a key (by {os_user()})" in ws.git("log", "--format=%s")
    assert ws.git("status", "--porcelain", "access.yaml", "ledger.jsonl").strip() == ""  # each change committed


def test_an_unknown_name_is_refused_with_the_known_names(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(AccessError, match=r"unknown person 'mallory' \(the access file knows: ") as error:
        ws.submit(1, write_good_batch(ws, tmp_path / "b"), "mallory")
    assert all(name in str(error.value) for name in ("ann", "rita", os_user()))
    with pytest.raises(AccessError, match="unknown person 'simulated-oracle'"):  # no one may pose as the simulation
        ws.submit(1, write_good_batch(ws, tmp_path / "b"), "simulated-oracle")


def test_a_reviewer_submitting_is_refused_and_recorded(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(Refused, match="rita may not submit a label batch: that needs the annotator role, and rita "
                                      "has reviewer"):
        ws.submit(1, write_good_batch(ws, tmp_path / "b"), "rita")
    refused = last(ws, "decision_refused")
    assert (refused.actor, refused.data["action"]) == ("rita", "labels_submitted")
    assert ws.record(1).staged is None


def test_only_an_admin_changes_the_access_file(ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    code, out = cli(capsys, "access", "add", "eve", "--role", "reviewer", "--by", "rita", "--workspace", str(ws.root))
    assert code != 0 and "rita may not change the access file: that needs the admin role, and rita has reviewer" in out
    assert "eve" not in ws.access().names() and last(ws, "decision_refused").data["person"] == "eve"


# -- four eyes -------------------------------------------------------------------------------------

def test_an_annotator_approving_their_own_batch_is_refused_and_recorded(ws: Workspace, keys: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    batch = staged(ws, keys, tmp_path)
    with pytest.raises(ApprovalRefused, match="ann may not approve a batch they annotated"):
        ws.approve(1, "ann", sign=str(keys["ann"]))
    refused = last(ws, "approval_refused")
    assert (refused.actor, refused.data["batch_sha256"]) == ("ann", batch)
    assert ws.record(1).staged.batch_sha256 == batch and ws.record(1).labels_accepted is None


def test_a_reviewer_approving_is_accepted(ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    batch = staged(ws, keys, tmp_path)
    assert ws.approve(1, "rita", "fine")["batch_sha256"] == batch
    approved = last(ws, "labels_approved")
    assert (approved.actor, approved.data["annotator"], SIGNATURE in approved.data) == ("rita", "ann", False)


def test_four_eyes_off_lets_an_annotator_approve(ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    write_params(ws.root / "params.yaml", ws.root / "params.yaml", ["campaign.four_eyes=false"])
    ws = Workspace.open(ws.root)
    staged(ws, keys, tmp_path)
    assert ws.approve(1, "ann")["annotator"] == "ann"


# -- signatures ------------------------------------------------------------------------------------

def test_a_decision_signed_with_another_persons_key_is_refused_at_once_and_recorded(
        ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    batch = staged(ws, keys, tmp_path)
    with pytest.raises(ApprovalRefused, match=r"signed with SHA256:\S+, ann's key, not one of rita's keys"):
        ws.approve(1, "rita", sign=str(keys["ann"]))
    assert "ann's key" in last(ws, "approval_refused").data["reason"]
    with pytest.raises(Refused, match="a key of nobody in the access file, not one of ann's keys"):
        ws.submit(1, write_good_batch(ws, tmp_path / "again"), "ann", replace=True, sign=str(keys["stranger"]))
    assert last(ws, "decision_refused").data["action"] == "labels_submitted"
    assert ws.record(1).staged.batch_sha256 == batch and ws.record(1).labels_accepted is None


def test_a_signed_approval_verifies(ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    staged(ws, keys, tmp_path)
    ws.approve(1, "rita", "ok", sign=str(keys["rita"]))
    result, signatures = ws.verify(), check_signatures(ws)
    assert result.ok, result.message
    # init's creation, three access changes, ann's submission, rita's approval
    assert (signatures.signed, signatures.unsigned, signatures.bad) == (6, 0, [])


def rewrite(ws: Workspace, seq: int, data: dict) -> None:
    """Replace event ``seq``'s data and re-hash the chain from there (a forger who rewrites the ledger and
    its export whole), so that only the signature can tell."""
    events, prev, rewritten = ws.ledger.events(), GENESIS, []
    for event in events:
        body = Event(event.seq, event.time, event.actor, event.round, event.type, event.once_key,
                     data if event.seq == seq else event.data, prev, "")
        event = Event(**{**body.__dict__, "hash": body.expected_hash()})
        rewritten.append(event)
        prev = event.hash
    export = ws.root / "ledger.jsonl"
    export.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in rewritten)
                      + json.dumps({"head": {"events": len(rewritten), "hash": prev}}) + "\n")
    for path in ws.root.glob("ledger.db*"):
        path.unlink()
    Ledger(ws.root / "ledger.db").import_jsonl(export)


@pytest.mark.parametrize("forgery", ["stranger's signature", "changed comment", "signature removed"])
def test_a_forged_signed_approval_fails_audit_verify_naming_the_event(ws: Workspace, keys: dict[str, Path],
                                                                      tmp_path: Path, forgery: str) -> None:
    staged(ws, keys, tmp_path)
    ws.approve(1, "rita", "checked every mask", sign=str(keys["rita"]))
    event = last(ws, "labels_approved")
    data = dict(event.data)
    if forgery == "stranger's signature":
        data[SIGNATURE] = sign(payload(event.actor, event.type, event.round, event.time, event.prev, event.data),
                               keys["stranger"])
        problem = "which is not among the allowed keys"
    elif forgery == "changed comment":
        data["comment"] = "not checked"
        problem = "signature does not match the event"
    else:
        del data[SIGNATURE]
        write_params(ws.root / "params.yaml", ws.root / "params.yaml", ["campaign.require_signatures=true"])
        problem = "unsigned, and campaign.require_signatures is on"
    rewrite(ws, event.seq, data)
    ws = Workspace.open(ws.root)
    signatures = check_signatures(ws)
    assert [seq for seq, _ in signatures.bad] == [event.seq]
    assert f"event {event.seq} (labels_approved by rita, round 1): " in signatures.bad[0][1]
    assert problem in signatures.bad[0][1]
    result = ws.verify()
    assert not result.ok and result.bad_seq == event.seq


def test_removing_a_person_keeps_their_earlier_signatures_and_fails_later_ones(
        ws: Workspace, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    staged(ws, keys, tmp_path)
    ws.approve(1, "rita", sign=str(keys["rita"]))
    code, out = cli(capsys, "access", "remove", "rita", "--sign", str(keys["admin"]), "--workspace", str(ws.root))
    assert code == 0, out
    # a later decision by rita, signed with her (old) key: appended as she would, to the end of the chain
    time, prev = "2030-01-01T00:00:00.000000Z", ws.ledger.head()
    data = {"by": "rita", "reason": "late", "regions": [], "batch_sha256": None, "annotator": "ann",
            "revoked_pixels": 0, "returned_to": None, "returned": []}
    signature = sign(payload("rita", "labels_revoked", 1, time, prev, data), keys["rita"])
    late = ws.ledger.append("labels_revoked", 1, "rita", {**data, SIGNATURE: signature}, time=time, prev=prev)
    signatures = check_signatures(ws)
    assert [seq for seq, _ in signatures.bad] == [late.seq]
    assert "signed by rita, who is not in the access file in force" in signatures.bad[0][1]
    assert signatures.signed == 7  # her approval among them
    with pytest.raises(AccessError, match="unknown person 'rita'"):
        ws.revoke(1, "rita", "gone")


def test_require_signatures_refuses_unsigned_decisions_and_the_form_cannot_sign(
        ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    batch = staged(ws, keys, tmp_path)
    write_params(ws.root / "params.yaml", ws.root / "params.yaml", ["campaign.require_signatures=true"])
    ws = Workspace.open(ws.root)
    with pytest.raises(ApprovalRefused, match="is not signed, and campaign.require_signatures is on: sign it with "
                                              "--sign KEY"):
        ws.approve(1, "rita", batch=batch)  # what the Prefect form's approval does
    assert ws.approve(1, "rita", sign=str(keys["rita"]))["batch_sha256"] == batch


def test_the_simulated_annotator_signs_nothing_and_is_named_as_simulated(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", "synthetic", overrides=[*TINY, "query.budget_pixels=2048"])
    ws.train(1)
    ws.query(1)
    ws.simulate_labels(1)
    ws.approve(1, "simulated-oracle")  # the worker's approval with oracle.kind: simulated
    submitted, approved = last(ws, "labels_submitted"), last(ws, "labels_approved")
    assert (submitted.actor, approved.actor) == ("simulated-oracle", "simulated-oracle")
    assert SIGNATURE not in submitted.data and SIGNATURE not in approved.data
    assert check_signatures(ws).unsigned == 1  # init's creation of the access file only: no simulated event counts


# -- the CLI ---------------------------------------------------------------------------------------

def test_the_cli_session(ws: Workspace, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    where = ["--workspace", str(ws.root)]
    batch = write_good_batch(ws, tmp_path / "masks")
    code, out = cli(capsys, "labels", "submit", str(batch), "--annotator", "ann", "--sign", str(keys["ann"]),
                    "--round", "1", *where)
    assert code == 0 and "from ann staged" in out, out
    code, out = cli(capsys, "approve", "--round", "1", "--by", "ann", *where)
    assert code == 1 and "ann may not approve a batch they annotated" in out, out
    code, out = cli(capsys, "approve", "--round", "1", "--by", "rita", "--sign", f"{keys['rita']}.pub", *where)
    assert code != 0  # the .pub file signs through the SSH agent, which holds no key here
    code, out = cli(capsys, "approve", "--round", "1", "--by", "rita", "--sign", str(keys["rita"]), *where)
    assert code == 0 and "approved by rita and taken in" in out, out
    code, out = cli(capsys, "audit", "verify", *where)
    assert code == 0 and "signatures: 6 signed, 0 unsigned, 0 bad" in out, out
    code, out = cli(capsys, "audit", "verify", "--json", *where)
    assert json.loads(out)["signatures"] == {"signed": 6, "unsigned": 0, "bad": []}
    code, out = cli(capsys, "access", "list", "--json", *where)
    assert [p["name"] for p in json.loads(out)] == ["ann", "rita", os_user()]
    code, out = cli(capsys, "status", "--json", *where)
    assert json.loads(out)["you"] == {"name": os_user(), "roles": ["admin"], "keys": 1}


def test_an_approval_signed_for_a_round_run_is_recorded_by_it_or_refused_when_the_ledger_moved(
        ws: Workspace, keys: dict[str, Path], tmp_path: Path) -> None:
    """`activeseg approve --sign` for a suspended round run signs first (presign); the run records it."""
    from activeseg.workspace.exchange.intake import approval_data
    from activeseg.workspace.identity import presign

    staged(ws, keys, tmp_path)
    record = ws.record(1)
    data = approval_data(record, record.staged, "rita", "", "run-1")
    signed = presign(ws, ws.person("rita", str(keys["rita"])), "labels_approved", 1, data)
    ws.ledger.append("round_skipped", 1, "scheduler", {"trigger": "schedule", "flow_run_id": "x", "reason": "busy",
                                                       "active_flow_run_id": "run-1"})
    with pytest.raises(ApprovalRefused, match="the signature was made for another place in the ledger"):
        ws.approve(1, ws.person("rita", presigned=signed), "", None, "run-1")
    signed = presign(ws, ws.person("rita", str(keys["rita"])), "labels_approved", 1, data)
    ws.approve(1, ws.person("rita", presigned=signed), "", None, "run-1")
    assert last(ws, "labels_approved").data[SIGNATURE] == signed.signature
    assert ws.verify().ok
