"""The access file: people, roles and keys; its YAML; the pure changes and what they refuse; its
versions in git and the version in force at a ledger event (what verifies that event's signature)."""

from __future__ import annotations

import getpass
import re
import subprocess
from pathlib import Path

import pytest

from activeseg.workspace import access
from activeseg.workspace.access import (ACCESS_FILE, CHANGE_EVENT, DIGEST_FIELD, HEADER, Access, AccessError,
                                        Person)
from activeseg.workspace.ledger import Event
from activeseg.workspace.signing import BadSignature, canonical_payload, fingerprint, sign, verify
from tests.workspace.test_signing import keygen, pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {"alice": keygen(folder, "alice"), "bob": keygen(folder, "bob"), "carol": keygen(folder, "carol", "rsa")}


@pytest.fixture
def team(keys: dict[str, Path]) -> Access:
    """alice the admin, bob an annotator and reviewer, carol an annotator (RSA key)."""
    team = access.create("alice", pub(keys["alice"]))
    team = access.add(team, "bob", "annotator", pub(keys["bob"]))
    team = access.add(team, "bob", "reviewer")
    return access.add(team, "carol", "annotator", pub(keys["carol"]))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def committed(repo: Path, team: Access, message: str) -> str:
    """Save ``team`` as the access file of ``repo`` and commit it; returns the commit."""
    access.save(repo, team)
    git(repo, "add", ACCESS_FILE)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def test_the_file_is_commented_yaml_and_reads_back(team: Access, keys: dict[str, Path], tmp_path: Path) -> None:
    path = access.save(tmp_path, team)
    text = path.read_text()
    assert text.startswith(HEADER) and "activeseg access add | remove | role" in HEADER
    assert text[len(HEADER):].splitlines()[:5] == ["people:", "- name: alice", "  roles:", "  - admin", "  keys:"]
    assert f"  - {pub(keys['carol'])}\n" in text  # a long RSA key stays on one line
    assert access.load(tmp_path) == team
    assert access.load(tmp_path).digest() == team.digest()
    assert team.names() == ["alice", "bob", "carol"] and team.person("bob").roles == ["annotator", "reviewer"]


def test_digest_ignores_comments_and_layout(team: Access) -> None:
    text = access.dump(team).replace("# The activeseg", "# Edited. The activeseg")
    assert access.parse(text, "x").digest() == team.digest()
    assert access.remove(team, "carol").digest() != team.digest()


def test_unknown_name_lists_the_known_ones(team: Access) -> None:
    with pytest.raises(AccessError, match=r"unknown person 'dave' \(the access file knows: alice, bob, carol"):
        team.keys_of("dave")


def test_require_names_the_role_needed_and_the_roles_held(team: Access) -> None:
    assert team.require("bob", "reviewer").name == "bob"
    with pytest.raises(AccessError, match="carol may not approve a batch: that needs the reviewer role, and carol "
                       "has annotator$"):
        team.require("carol", "reviewer", "approve a batch")
    with pytest.raises(AccessError, match="that needs the reviewer role, and alice has admin$"):
        team.require("alice", "reviewer")  # admin implies no other role


def test_keys_and_their_owners(team: Access, keys: dict[str, Path]) -> None:
    assert team.keys_of("carol") == [pub(keys["carol"])]
    renamed = pub(keys["carol"]).rsplit(" ", 1)[0] + " other-comment"
    assert team.owner_of(renamed) == "carol"
    assert team.owner_of(pub(keys["alice"])) == "alice" and access.remove(team, "carol").owner_of(renamed) is None


def test_add_gives_a_known_person_a_role_or_a_second_key(team: Access, tmp_path: Path) -> None:
    laptop = pub(keygen(tmp_path, "laptop"))
    more = access.add(team, "carol", "annotator", laptop)
    assert more.keys_of("carol") == [*team.keys_of("carol"), laptop]
    with pytest.raises(AccessError, match=re.escape(f"carol has the annotator role and key {fingerprint(laptop)} "
                                                    "already: nothing to change")):
        access.add(more, "carol", "annotator", laptop)
    assert team.person("carol").roles == ["annotator"]  # the changes return a new Access


def test_add_refuses_someone_elses_key_a_bad_name_a_bad_role_a_bad_key(team: Access, keys: dict[str, Path]) -> None:
    alices = fingerprint(pub(keys["alice"]))
    with pytest.raises(AccessError, match=re.escape(f"cannot add dave with the reviewer role and key {alices}: key "
                                                    f"{alices} is both alice's and dave's")):
        access.add(team, "dave", "reviewer", pub(keys["alice"]))
    with pytest.raises(AccessError, match="'dave smith' is not a valid name"):
        access.add(team, "dave smith", "reviewer")
    with pytest.raises(AccessError, match=r"unknown role 'boss' \(roles: annotator, reviewer, admin\)"):
        access.add(team, "dave", "boss")
    with pytest.raises(ValueError, match="not an OpenSSH public key line"):
        access.add(team, "dave", "reviewer", "my key")


def test_remove_and_set_role_keep_an_admin(team: Access) -> None:
    with pytest.raises(AccessError, match="cannot remove alice: nobody would have the admin role"):
        access.remove(team, "alice")
    with pytest.raises(AccessError, match="cannot give alice the roles reviewer: nobody would have the admin role"):
        access.set_role(team, "alice", ["reviewer"])
    two_admins = access.set_role(team, "bob", ["admin", "reviewer", "admin"])
    assert two_admins.person("bob").roles == ["reviewer", "admin"]
    assert access.remove(two_admins, "alice").names() == ["bob", "carol"]
    with pytest.raises(AccessError, match="unknown person 'dave'"):
        access.remove(team, "dave")
    with pytest.raises(AccessError, match="bob has the roles annotator, reviewer already"):
        access.set_role(team, "bob", ["reviewer", "annotator"])
    with pytest.raises(AccessError, match="bob needs at least one role"):
        access.set_role(team, "bob", [])


@pytest.mark.parametrize("body, problem", [
    ("people:\n- name: x\n  roles: [admin]\n  keys: [not-a-key]\n",
     "people.0.keys.0: not an OpenSSH public key line"),
    ("people:\n- name: x\n  roles: [boss]\n", "people.0.roles.0: Input should be 'annotator', 'reviewer' or 'admin'"),
    ("people:\n- name: x\n  roles: [annotator]\n", "nobody would have the admin role"),
    ("people:\n- name: x\n  roles: [admin]\n- name: x\n  roles: [reviewer]\n", "x is listed twice"),
    ("people:\n- name: x\n  roles: [admin]\n  email: x@y\n", "people.0.email: Extra inputs are not permitted"),
    ("people:\n- roles: [admin]\n", "people.0.name: missing"),
    ("- x\n", "expected a mapping with the key 'people'"),
    ("people: [\n", "not valid YAML"),
])
def test_a_broken_file_is_refused_naming_it(tmp_path: Path, body: str, problem: str) -> None:
    (tmp_path / ACCESS_FILE).write_text(body)
    with pytest.raises(AccessError, match=f"^{tmp_path / ACCESS_FILE}: .*{problem}"):
        access.load(tmp_path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AccessError, match=f"{tmp_path / ACCESS_FILE}: no access file"):
        access.load(tmp_path)


def test_persons_are_frozen(team: Access) -> None:
    with pytest.raises(ValueError):
        team.person("bob").name = "eve"  # type: ignore[misc]
    assert isinstance(team.person("bob"), Person)


def test_read_at_a_commit_shows_the_older_content_after_a_removal(team: Access, tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    before = committed(tmp_path, team, "team")
    committed(tmp_path, access.remove(team, "carol"), "carol leaves")
    assert access.read_at(tmp_path, before) == team
    assert access.read_at(tmp_path, "HEAD").names() == ["alice", "bob"]
    with pytest.raises(AccessError, match=f"nosuchrev: no {ACCESS_FILE} there"):
        access.read_at(tmp_path, "nosuchrev")


def change(seq: int, team: Access) -> Event:
    return Event(seq, f"2025-01-0{seq}T00:00:00Z", "alice", 0, CHANGE_EVENT, None, {DIGEST_FIELD: team.digest()},
                 "0" * 64, "h")


def submitted(seq: int, by: str) -> Event:
    return Event(seq, f"2025-01-0{seq}T00:00:00Z", by, 1, "labels_submitted", None,
                 {"annotator": by, "batch_sha256": "ab"}, "0" * 64, "h")


def test_the_version_in_force_follows_the_ledger(team: Access, tmp_path: Path) -> None:
    """carol's batch 2 was submitted while she was in the file, batch 4 after her removal (event 3); the
    removal and batch 2 were committed together: the ledger, not the commit, says what verifies batch 2."""
    git(tmp_path, "init", "-q")
    committed(tmp_path, team, "team")
    without = access.remove(team, "carol")
    committed(tmp_path, without, "carol leaves")
    events = [change(1, team), submitted(2, "carol"), change(3, without), submitted(4, "carol")]
    known = access.versions(tmp_path)
    assert set(known) == {team.digest(), without.digest()}
    assert access.in_force(events, 1, known) is None
    assert access.in_force(events, 2, known) == access.in_force(events, 3, known) == team
    assert access.in_force(events, 4, known) == without


def test_a_hand_edit_or_a_rewritten_version_verifies_nothing(team: Access, keys: dict[str, Path],
                                                             tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    committed(tmp_path, team, "team")
    edited = access.add(team, "mallory", "reviewer")
    access.save(tmp_path, edited)  # a hand edit in the working tree: a version, but no change event names it
    events = [change(1, team), submitted(2, "mallory")]
    assert access.in_force(events, 2, access.versions(tmp_path)) == team
    rewritten = [change(1, edited), submitted(2, "mallory")]
    git(tmp_path, "checkout", "-q", "--", ACCESS_FILE)
    with pytest.raises(AccessError, match=f"event 1 \\({CHANGE_EVENT}\\) names {ACCESS_FILE} version "
                       f"{edited.digest()[:12]}, which no commit holds"):
        access.in_force(rewritten, 2, access.versions(tmp_path))


def test_a_removal_keeps_earlier_signatures_and_fails_later_ones(team: Access, keys: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    committed(tmp_path, team, "team")
    without = access.remove(team, "carol")
    committed(tmp_path, without, "carol leaves")
    events = [change(1, team), submitted(2, "carol"), change(3, without), submitted(4, "carol")]
    signatures = {e.seq: sign(canonical_payload(e.to_dict()), keys["carol"]) for e in events[1::2]}
    known = access.versions(tmp_path)
    early = access.in_force(events, 2, known)
    assert early is not None
    assert verify(canonical_payload(events[1].to_dict()), signatures[2], early.keys_of("carol"))
    late = access.in_force(events, 4, known)
    assert late is not None
    with pytest.raises(AccessError, match="unknown person 'carol'"):
        late.keys_of("carol")
    with pytest.raises(BadSignature, match="not among the allowed keys"):  # nor is her key anyone else's now
        verify(canonical_payload(events[3].to_dict()), signatures[4], [k for p in late.people for k in p.keys])


def test_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert access.os_user() == getpass.getuser()

    def nobody() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", nobody)
    with pytest.raises(AccessError, match="--by NAME"):
        access.os_user()
