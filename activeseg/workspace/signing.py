"""SSH signatures on ledger events: the signed payload of an event, signing it with ``ssh-keygen -Y sign``
(a key file, or a key held by the SSH agent) and verifying it in this process.

A signature is OpenSSH's SSHSIG format (``-----BEGIN SSH SIGNATURE-----``, PROTOCOL.sshsig) in the
namespace :data:`NAMESPACE`: a signature made for git commits or for another tool never verifies here.

Signing runs ``ssh-keygen`` (it reads the private key, asks for its passphrase on the terminal, talks to
the agent); verifying does not: :func:`verify` uses the ``sshsig`` library, which checks the SSHSIG
format in Python (no process per event, so ``audit verify`` checks thousands of events in a second).
``sshsig`` knows Ed25519 and RSA keys, so those are the key types accepted here (:data:`KEY_TYPES`);
:func:`public_key` refuses others when a key is added, never later at verification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sshsig
from sshsig.sshsig import SshsigSignature

from activeseg.core.util import canonical_json
from activeseg.workspace.errors import WorkspaceError

NAMESPACE = "activeseg"
"""The SSHSIG namespace of every activeseg signature (``ssh-keygen -Y sign -n activeseg``)."""

KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
"""The public key types a person may sign with (those the ``sshsig`` library verifies)."""

HASHES = (b"sha256", b"sha512")
"""The message hashes OpenSSH signs with and accepts (``sshsig`` alone would accept any hashlib name)."""

SIGNATURE = "signature"
"""The field of an event's ``data`` holding its signature (so the event's hash covers it too)."""

PAYLOAD_FIELDS = ("actor", "round", "type", "time", "prev")
"""The event fields a signature covers besides ``data``: who, which round, the decision (the event
type), when, and the hash of the ledger's previous event (which pins the event's place in the chain)."""


class SigningError(WorkspaceError):
    """A signature cannot be made, or a public key is not usable; the message says why."""


class BadSignature(SigningError):
    """A signature does not verify. ``key``: the OpenSSH public key that made it, when the signature is
    sound but made with a key other than the expected ones (else None)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def canonical_payload(event: Mapping[str, Any]) -> bytes:
    """The bytes a signature of ``event`` (a ledger event as stored: :meth:`Event.to_dict`) covers: the
    canonical JSON (sorted keys, no spaces, UTF-8) of its :data:`PAYLOAD_FIELDS` and its whole ``data``
    but the :data:`SIGNATURE` field (so the round's batch sha256, the reason or comment and the person
    named in ``data`` are signed). Not signed: ``seq`` (``prev`` fixes it), ``once_key`` and ``hash``."""
    missing = [name for name in (*PAYLOAD_FIELDS, "data") if name not in event]
    if missing:
        raise SigningError(f"cannot sign an event without {', '.join(missing)}")
    signed = {name: event[name] for name in PAYLOAD_FIELDS}
    signed["data"] = {key: value for key, value in event["data"].items() if key != SIGNATURE}
    return canonical_json(signed).encode("utf-8")


def public_key(line: str) -> str:
    """``line`` as a checked OpenSSH public key line (``ssh-ed25519 AAAA... comment``, stripped); a
    :class:`SigningError` says what is wrong with any other text."""
    line = line.strip()
    _blob(line)
    try:
        sshsig.PublicKey.from_openssh_str(line)
    except NotImplementedError:
        raise SigningError(f"key type {line.split()[0]!r} is not supported (use one of {', '.join(KEY_TYPES)}, "
                           "e.g. ssh-keygen -t ed25519)") from None
    except ValueError:
        raise SigningError(f"not a valid {line.split()[0]} public key (its base64 does not hold one)") from None
    return line


def read_public_key(text: str) -> str:
    """The public key that ``text`` gives (as on a command line): an OpenSSH public key line, or the path
    of a file holding one (``~/.ssh/id_ed25519.pub``)."""
    path = _existing_file(text)
    if path is not None:
        content = path.read_text(encoding="utf-8", errors="replace").strip()
        try:
            return public_key(content)
        except SigningError as exc:
            raise SigningError(f"{path}: {exc}") from None
    return public_key(text)


def fingerprint(key: str) -> str:
    """The SHA256 fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` prints it
    (``SHA256:`` and unpadded base64), to name a key in messages."""
    digest = hashlib.sha256(_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _blob(line: str) -> bytes:
    """The key blob of an OpenSSH public key line (its base64 field), checked to name the line's type."""
    parts = line.split()
    if len(parts) < 2 or "\n" in line.strip():
        raise SigningError(f"not an OpenSSH public key line (expected one line such as 'ssh-ed25519 AAAA... "
                           f"name@host', got {_shown(line)})")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise SigningError(f"not an OpenSSH public key line: {_shown(parts[1])} is not base64") from None
    kind = parts[0].encode("ascii", errors="replace")
    if blob[:4] != len(kind).to_bytes(4, "big") or blob[4:4 + len(kind)] != kind:
        raise SigningError(f"not a valid {parts[0]} public key (its base64 holds another type or none)")
    return blob


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut to 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def sign(payload: bytes, key: str | Path, agent: bool = False) -> str:
    """The armored SSH signature of ``payload`` (``-----BEGIN SSH SIGNATURE-----...``), made by
    ``ssh-keygen -Y sign -n activeseg``.

    ``key``: the private key file (when the SSH agent holds that key, ssh-keygen signs through the agent;
    for a key with a passphrase, it asks for it on the terminal). ``agent=True``: sign only through the
    agent (``-U``); ``key`` may then be the public key file or a public key line."""
    with tempfile.TemporaryDirectory(prefix="activeseg-sign-") as folder:
        message = Path(folder) / "payload"
        message.write_bytes(payload)
        key_file = _key_file(key, agent, Path(folder))
        done = _ssh_keygen(["-Y", "sign", *(["-U"] if agent else []), "-n", NAMESPACE, "-f", str(key_file),
                            str(message)])
        if done.returncode != 0:
            named = f"key {fingerprint(str(key))}" if key_file.parent == Path(folder) else str(key)
            raise SigningError(_sign_failure(named, agent, done.stderr))
        return message.with_name("payload.sig").read_text(encoding="ascii")


def _key_file(key: str | Path, agent: bool, folder: Path) -> Path:
    """The file to give ``ssh-keygen -f``: ``key`` itself, or with ``agent`` a public key line written
    to ``folder``; a missing file fails here, naming it."""
    path = _existing_file(key)
    if path is not None:
        return path
    if agent and " " in str(key).strip():
        written = folder / "key.pub"
        written.write_text(public_key(str(key)) + "\n", encoding="utf-8")
        return written
    raise SigningError(f"{Path(key).expanduser()}: no such key file")


def _existing_file(text: str | Path) -> Path | None:
    """``text`` as the path of an existing file (``~`` expanded), else None: also for a text that cannot
    be a path (a long public key line: a name too long for the file system)."""
    path = Path(text).expanduser()
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def _ssh_keygen(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``ssh-keygen`` with ``args``; stdin closed (a passphrase is asked on the terminal, if any)."""
    try:
        return subprocess.run(["ssh-keygen", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise SigningError("ssh-keygen (OpenSSH) is not installed or not on PATH: it makes the signatures") from None


def _sign_failure(key: str, agent: bool, stderr: str) -> str:
    """Why ``ssh-keygen -Y sign`` failed, in words, from its error output."""
    if "passphrase" in stderr:
        return (f"{key}: the key's passphrase was wrong or not given (without a terminal it cannot be asked): "
                f"add the key to the SSH agent (ssh-add {key}) and sign again")
    if "agent socket" in stderr:
        return f"{key}: no SSH agent to sign with (SSH_AUTH_SOCK is not set or the agent is not running)"
    if "in agent" in stderr:
        return f"{key}: the SSH agent does not hold this key (add it with ssh-add)"
    if "No private key found" in stderr:
        return f"{key}: a public key file, and the SSH agent does not hold its private key (ssh-add it)"
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return f"{key}: ssh-keygen could not sign{' through the agent' if agent else ''} ({detail})"


def verify(payload: bytes, signature: str, public_keys: Sequence[str]) -> str:
    """Which of ``public_keys`` (OpenSSH lines) signed ``payload`` with ``signature`` in the namespace
    :data:`NAMESPACE`: that line, as given. :class:`BadSignature` says why not: the text is no SSH
    signature, the signature is of other bytes (the event was edited) or of another namespace, or it was
    made with a key not among ``public_keys`` (then its ``key`` is that key)."""
    signer = _signer(payload, signature)
    for line in public_keys:
        if sshsig.PublicKey.from_openssh_str(public_key(line)) == signer:
            return line
    made_with = signer.openssh_str()
    allowed = ", ".join(fingerprint(line) for line in public_keys) or "none"
    raise BadSignature(f"signed with key {fingerprint(made_with)}, which is not among the allowed keys "
                       f"({allowed})", key=made_with)


def _signer(payload: bytes, signature: str) -> sshsig.PublicKey:
    """The public key that made ``signature`` of ``payload`` (as ``ssh-keygen -Y check-novalidate``),
    or :class:`BadSignature`."""
    try:  # sshsig parses untrusted text: a malformed one may raise any error
        algorithm = SshsigSignature.from_armored(signature).hash_algo
    except Exception as exc:
        raise BadSignature(f"not an SSH signature ({exc or type(exc).__name__})") from None
    if algorithm not in HASHES:
        raise BadSignature(f"signature hashes with {algorithm.decode('ascii', 'replace')!r} (OpenSSH allows "
                           "sha256 and sha512 only)")
    try:
        return sshsig.check_signature(payload, signature, namespace=NAMESPACE)
    except sshsig.InvalidSignature as exc:
        raise BadSignature(_invalid(exc)) from None
    except Exception as exc:
        raise BadSignature(f"cannot verify the signature ({exc or type(exc).__name__})") from None


def _invalid(exc: sshsig.InvalidSignature) -> str:
    """An :class:`sshsig.InvalidSignature` in words."""
    text = str(exc)
    if text.startswith("Namespace"):
        return f"signature made for another namespace than {NAMESPACE!r} ({text})"
    if not text or text.startswith("InvalidSignature"):
        return "signature does not match the event (the signed fields were changed after signing)"
    return f"not a valid SSH signature ({text})"
