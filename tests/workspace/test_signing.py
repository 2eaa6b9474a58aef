"""SSH signatures on ledger events: the signed payload, signing with ssh-keygen (key file or agent),
verifying in process, key checks, fingerprints and the errors."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from activeseg.workspace.ledger import GENESIS, Ledger
from activeseg.workspace.signing import (NAMESPACE, SIGNATURE, BadSignature, SigningError, canonical_payload,
                                         fingerprint, public_key, read_public_key, sign, verify)


def keygen(folder: Path, name: str, kind: str = "ed25519", passphrase: str = "") -> Path:
    """A new key pair ``folder/name`` (private) and ``folder/name.pub``; returns the private key's path."""
    path = folder / name
    bits = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", passphrase, "-C", f"{name}@test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def pub(key: Path) -> str:
    """The public key line of the private key file ``key``."""
    return key.with_name(key.name + ".pub").read_text().strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {"alice": keygen(folder, "alice"), "bob": keygen(folder, "bob"), "carol": keygen(folder, "carol", "rsa"),
            "locked": keygen(folder, "locked", passphrase="secret")}


EVENT = {"seq": 7, "time": "2025-01-02T03:04:05.000000Z", "actor": "bob", "round": 2, "type": "labels_approved",
         "once_key": None, "data": {"approver": "bob", "batch_sha256": "ab12", "comment": "looks right"},
         "prev": "cd34", "hash": "ef56"}


def test_canonical_payload_exact_bytes() -> None:
    assert canonical_payload(EVENT) == (b'{"actor":"bob","data":{"approver":"bob","batch_sha256":"ab12","comment":'
                                        b'"looks right"},"prev":"cd34","round":2,"time":"2025-01-02T03:04:05.000000Z",'
                                        b'"type":"labels_approved"}')


def test_canonical_payload_is_utf8_and_leaves_out_signature_seq_once_key_hash() -> None:
    signed = {**EVENT, "seq": 8, "once_key": "k", "hash": "00", "data": {**EVENT["data"], SIGNATURE: "-----BEGIN"}}
    assert canonical_payload(signed) == canonical_payload(EVENT)
    assert b'"comment":"r\xc3\xa9vis\xc3\xa9"' in canonical_payload({**EVENT, "data": {"comment": "révisé"}})


def test_canonical_payload_of_a_stored_ledger_event(tmp_path: Path) -> None:
    event = Ledger(tmp_path / "ledger.db").append("batch_rejected", 1, "rita", {"by": "rita", "reasons": ["blurry"]})
    assert canonical_payload(event.to_dict()) == ('{"actor":"rita","data":{"by":"rita","reasons":["blurry"]},'
                                                  f'"prev":"{GENESIS}","round":1,"time":"{event.time}",'
                                                  '"type":"batch_rejected"}').encode()


def test_canonical_payload_needs_the_chain_fields() -> None:
    with pytest.raises(SigningError, match="without time, prev"):
        canonical_payload({k: v for k, v in EVENT.items() if k not in ("time", "prev")})


@pytest.mark.parametrize("who", ["alice", "carol"])  # ed25519 and RSA
def test_sign_verify_roundtrip(keys: dict[str, Path], who: str) -> None:
    payload = canonical_payload(EVENT)
    signature = sign(payload, keys[who])
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert signature.rstrip().endswith("-----END SSH SIGNATURE-----")
    assert verify(payload, signature, [pub(keys["bob"]), pub(keys[who])]) == pub(keys[who])


def test_ssh_keygen_accepts_our_signature(keys: dict[str, Path], tmp_path: Path) -> None:
    payload = canonical_payload(EVENT)
    (tmp_path / "sig").write_text(sign(payload, keys["alice"]))
    (tmp_path / "allowed").write_text(f"alice {pub(keys['alice'])}\n")
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "alice", "-n",
                           NAMESPACE, "-s", str(tmp_path / "sig")], input=payload, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_verify_fails_with_another_persons_key(keys: dict[str, Path]) -> None:
    payload = canonical_payload(EVENT)
    message = (f"signed with key {fingerprint(pub(keys['alice']))}, which is not among the allowed keys "
               f"({fingerprint(pub(keys['bob']))})")
    with pytest.raises(BadSignature, match=re.escape(message)) as refused:
        verify(payload, sign(payload, keys["alice"]), [pub(keys["bob"])])
    assert refused.value.key is not None and fingerprint(refused.value.key) == fingerprint(pub(keys["alice"]))


def test_verify_fails_when_the_reason_changed(keys: dict[str, Path]) -> None:
    signature = sign(canonical_payload(EVENT), keys["bob"])
    edited = canonical_payload({**EVENT, "data": {**EVENT["data"], "comment": "looks wrong"}})
    with pytest.raises(BadSignature, match="does not match the event") as refused:
        verify(edited, signature, [pub(keys["bob"])])
    assert refused.value.key is None


@pytest.mark.parametrize("cut", [40, 150, 250])
def test_verify_fails_with_a_truncated_signature(keys: dict[str, Path], cut: int) -> None:
    payload = canonical_payload(EVENT)
    with pytest.raises(BadSignature, match="not an SSH signature"):
        verify(payload, sign(payload, keys["bob"])[:cut], [pub(keys["bob"])])


def test_verify_fails_for_another_namespace(keys: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "payload").write_bytes(b"x")
    subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(keys["bob"]), str(tmp_path / "payload")],
                   check=True, capture_output=True)
    with pytest.raises(BadSignature, match="another namespace than 'activeseg'"):
        verify(b"x", (tmp_path / "payload.sig").read_text(), [pub(keys["bob"])])


def test_fingerprint_is_ssh_keygens(keys: dict[str, Path]) -> None:
    for key in keys.values():
        listed = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], check=True, capture_output=True, text=True)
        assert fingerprint(pub(key)) == listed.stdout.split()[1]


def test_public_key_refuses_garbage_and_unsupported_types(tmp_path: Path, keys: dict[str, Path]) -> None:
    line = pub(keys["alice"])
    assert public_key(f"  {line}\n") == line
    for text, problem in [("", "not an OpenSSH public key line"), ("hello", "not an OpenSSH public key line"),
                          ("ssh-ed25519 %%%", "'%%%' is not base64"),
                          (f"ssh-rsa {line.split()[1]}", "not a valid ssh-rsa public key"),
                          (f"{line}\n{line}", "expected one line"),
                          (line[:60], "not a valid ssh-ed25519 public key")]:
        with pytest.raises(SigningError, match=problem):
            public_key(text)
    with pytest.raises(SigningError, match=r"key type 'ecdsa-sha2-nistp256' is not supported \(use one of "
                       "ssh-ed25519, ssh-rsa"):
        public_key(pub(keygen(tmp_path, "ec", "ecdsa")))


def ssh_string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def test_read_public_key_from_a_line_or_a_file(keys: dict[str, Path], tmp_path: Path) -> None:
    line = pub(keys["carol"])
    assert read_public_key(line) == read_public_key(f"{keys['carol']}.pub") == line
    modulus = b"\x41" * 255 + b"\x43"  # 2048 bits, odd: its base64 has no '/', one name too long for a file
    blob = ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01") + ssh_string(modulus)
    long_line = f"ssh-rsa {base64.b64encode(blob).decode()} long"
    assert read_public_key(long_line) == long_line
    (tmp_path / "bad.pub").write_text("nonsense\n")
    with pytest.raises(SigningError, match=f"{tmp_path / 'bad.pub'}: not an OpenSSH public key line"):
        read_public_key(str(tmp_path / "bad.pub"))


def test_sign_errors_name_the_key(keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(SigningError, match=f"{tmp_path / 'nokey'}: no such key file"):
        sign(b"x", tmp_path / "nokey")
    with pytest.raises(SigningError, match="passphrase was wrong or not given.*ssh-add"):
        sign(b"x", keys["locked"])
    with pytest.raises(SigningError, match="no SSH agent to sign with"):
        sign(b"x", f"{keys['bob']}.pub", agent=True)
    lonely = tmp_path / "lonely.pub"  # no private key beside it
    lonely.write_text(pub(keys["bob"]))
    with pytest.raises(SigningError, match="agent does not hold its private key"):
        sign(b"x", lonely)


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An SSH agent of this test (its socket), stopped afterwards."""
    socket = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(socket))
    deadline = time.monotonic() + 10
    while subprocess.run(["ssh-add", "-l"], capture_output=True).returncode == 2:  # 2: no agent answers yet
        assert time.monotonic() < deadline, "the SSH agent did not start"
        time.sleep(0.05)
    yield socket
    process.terminate()
    process.wait(timeout=10)


def test_sign_through_the_agent(keys: dict[str, Path], agent: Path, tmp_path: Path) -> None:
    payload = canonical_payload(EVENT)
    with pytest.raises(SigningError, match="the SSH agent does not hold this key"):
        sign(payload, pub(keys["bob"]), agent=True)
    subprocess.run(["ssh-add", "-q", str(keys["bob"])], check=True, capture_output=True)
    for key in (pub(keys["bob"]), f"{keys['bob']}.pub"):  # a public key line, or its file
        assert verify(payload, sign(payload, key, agent=True), [pub(keys["bob"])]) == pub(keys["bob"])
