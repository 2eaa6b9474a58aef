"""Who records a person's decision, and whether they may: the checks every decision passes before it
is recorded, and its recording with the person's SSH signature.

A decision (:data:`ACTIONS`: submitting a batch, approving, rejecting or revoking one, changing the
access file) is made by an :class:`Actor`: a person of the access file (:mod:`.access`), named by
``--by NAME`` or ``--annotator NAME`` (default: the OS user name), signing with ``--sign KEY`` or not.
:func:`authorize` checks, in this order:

1. the name is in the access file, else refused with the known names (not recorded: a typo names nobody);
2. the person holds the role the decision needs (:data:`ACTIONS`);
3. four eyes (``campaign.four_eyes``, on by default for ``oracle.kind: human | labelstudio``): a reviewer
   does not approve a batch they annotated;
4. ``campaign.require_signatures``: the decision is signed;
5. the signing key is one of the person's keys (when its public key is known before signing: the
   key line, the agent's key, or ``KEY.pub`` beside a private key file).

A decision refused at 2 to 5 is recorded (:func:`refusal`): an approval as ``approval_refused``,
anything else as ``decision_refused``, both naming the person and the reason. :func:`record` appends
the decision's event; signed, its signature covers the event's actor, round, type, time, prev and data
(:func:`activeseg.workspace.signing.canonical_payload`) and is checked against the person's keys before
the event is appended (a signature by another key: refused and recorded).

Two actors are no person (:data:`SYSTEM`): they hold no role, sign nothing and pass no check. The
simulated annotator (:meth:`Actor.simulated_oracle`, ``simulated-oracle``) answers from the ground truth
(``labels simulate``) and approves with ``oracle.kind: simulated``; Label Studio (:meth:`Actor.labelstudio`)
hands in the batch that ``activeseg approve`` pulls from it, annotated by the people its export names
(``activeseg labels pull --by NAME`` hands it in as an annotator instead, signed if they like). Both
exist only inside the workspace's own code: a person typing their names is an unknown person.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from activeseg.core.config import Config
from activeseg.core.util import utc_now
from activeseg.loop.oracle import SIMULATED
from activeseg.workspace import access
from activeseg.workspace.access import Access, AccessError, Person, Role
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.errors import ApprovalRefused
from activeseg.workspace.ledger import Event, StaleHead
from activeseg.workspace.signing import (SIGNATURE, BadSignature, SigningError, canonical_payload, fingerprint,
                                         read_public_key, sign, verify)

LABELSTUDIO = "labelstudio"
SYSTEM = (SIMULATED, LABELSTUDIO)
"""The names of the actors that are no person (see the module docstring)."""

ACTIONS: dict[str, tuple[Role, str]] = {
    "labels_submitted": ("annotator", "submit a label batch"),
    "labels_approved": ("reviewer", "approve a batch"),
    "batch_rejected": ("reviewer", "reject a batch"),
    "labels_revoked": ("reviewer", "revoke labels"),
    access.CHANGE_EVENT: ("admin", "change the access file"),
}
"""The decisions of people, by ledger event type: the role each needs, and the action in words."""

AGENT = "agent"
"""``--sign agent``: sign with the first key of the person's that the SSH agent holds."""

ATTEMPTS = 3
"""How often a decision is signed anew when another event takes its place in the chain meanwhile."""


class Refused(AccessError):
    """A decision refused for who made it (role, four eyes, signature); the ledger records it."""


@dataclass(frozen=True)
class Presigned:
    """A signature made before the event is appended (by ``activeseg approve``, for the round run that
    records the approval): the signature and the time and previous hash it covers."""

    signature: str
    time: str
    prev: str


@dataclass(frozen=True)
class Actor:
    """Who makes a decision: ``name`` (a person of the access file); ``sign``: how they sign (a private
    key file; a public key, file or line, whose private key the SSH agent holds; :data:`AGENT`; None:
    unsigned); ``presigned``: a signature made already; ``system``: no person (:data:`SYSTEM`)."""

    name: str
    sign: str | None = None
    presigned: Presigned | None = None
    system: bool = False

    @classmethod
    def simulated_oracle(cls) -> Actor:
        return cls(SIMULATED, system=True)

    @classmethod
    def labelstudio(cls) -> Actor:
        return cls(LABELSTUDIO, system=True)

    @property
    def signs(self) -> bool:
        return self.sign is not None or self.presigned is not None


def actor(cfg: Config, name: str, sign: str | None = None, presigned: Presigned | None = None) -> Actor:
    """The :class:`Actor` a name stands for: with ``oracle.kind: simulated``, :data:`SIMULATED` is the
    simulated annotator (unsigned: the worker approves its batches under that name); any other name is
    a person, checked against the access file."""
    if name == SIMULATED and cfg.oracle.kind == "simulated" and sign is None and presigned is None:
        return Actor.simulated_oracle()
    return Actor(name, sign, presigned)


def is_decision(event: Event) -> bool:
    """Whether ``event`` is a person's decision (:data:`ACTIONS`; not one of :data:`SYSTEM`'s, nor a
    rejection by validation): what a person may sign, and under ``campaign.require_signatures`` must."""
    if event.type not in ACTIONS or event.actor in SYSTEM:
        return False
    return event.type != "batch_rejected" or event.data.get("by") != "validation"


def four_eyes(cfg: Config) -> bool:
    """Whether a reviewer may not approve a batch they annotated: ``campaign.four_eyes``, or when unset,
    on for ``oracle.kind: human | labelstudio``."""
    if cfg.campaign.four_eyes is not None:
        return cfg.campaign.four_eyes
    return cfg.oracle.kind in ("human", "labelstudio")


def require_known(ws: WorkspaceCore, actor: Actor) -> None:
    """An :class:`AccessError` listing the known names unless ``actor`` is in the access file (or no
    person): checked before anything that records the actor's name."""
    if not actor.system:
        access.load(ws.root).person(actor.name)


def authorize(ws: WorkspaceCore, actor: Actor, type: str, round_number: int, context: dict[str, Any] | None = None,
              annotators: tuple[str, ...] = (), people: Access | None = None) -> None:
    """Check that ``actor`` may make the decision ``type`` (see the module docstring); a refusal is
    recorded with ``context`` (what the decision named, e.g. the batch) and raised (:class:`Refused`, or
    :class:`ApprovalRefused` for an approval). ``annotators``: who annotated the batch an approval names;
    ``people``: the access file to check against (default: the workspace's)."""
    if actor.system:
        if actor.name == LABELSTUDIO and ws.cfg.campaign.require_signatures:
            raise AccessError("Label Studio cannot sign, and campaign.require_signatures is on: an annotator hands "
                              f"its batch in, signed (activeseg labels pull --round {round_number} --by NAME "
                              "--sign KEY)")
        return
    role, action = ACTIONS[type]
    people = people or access.load(ws.root)
    person = people.person(actor.name)
    name = actor.name
    if role not in person.roles:
        raise refusal(ws, actor, type, round_number, f"{name} may not {action}: that needs the {role} role, and "
                      f"{name} has {', '.join(person.roles)}", context)
    if type == "labels_approved" and name in annotators and four_eyes(ws.cfg):
        raise refusal(ws, actor, type, round_number, f"{name} may not approve a batch they annotated "
                      "(campaign.four_eyes: another reviewer approves it)", context)
    if not actor.signs and ws.cfg.campaign.require_signatures:
        raise refusal(ws, actor, type, round_number, f"{name}'s decision to {action} is not signed, and "
                      "campaign.require_signatures is on: sign it with --sign KEY (a private key file, a public "
                      "key the SSH agent holds, or 'agent')", context)
    known = _public_key(actor.sign, person) if actor.sign is not None else None
    if known is not None and not person.has_key(known):
        raise refusal(ws, actor, type, round_number, _not_theirs(people, name, known), context)


def record(ws: WorkspaceCore, actor: Actor, type: str, round_number: int, data: dict[str, Any],
           once_key: str | None = None, people: Access | None = None) -> Event:
    """Append the decision ``type`` of ``actor`` (checked with :func:`authorize` first), signed when the
    actor signs: the signature is checked against the person's keys in ``people`` (default: the
    workspace's access file) and stored in ``data["signature"]``; a signature by another key is refused
    and recorded. When another event takes the event's place in the chain while it is signed, it is
    signed again (a presigned one is refused: it cannot be)."""
    if not actor.signs or actor.system:
        return ws.ledger.append(type, round_number, actor.name, data, once_key)
    people = people or access.load(ws.root)
    for _ in range(ATTEMPTS):
        signature, time, prev = _signature(ws, actor, people, type, round_number, data)
        try:
            return ws.ledger.append(type, round_number, actor.name, {**data, SIGNATURE: signature}, once_key,
                                    time=time, prev=prev)
        except StaleHead as exc:
            if actor.presigned is not None:
                raise refusal(ws, actor, type, round_number, f"the signature was made for another place in the "
                              f"ledger ({exc}): decide again", data) from None
    raise refusal(ws, actor, type, round_number, f"other events kept taking the event's place in the ledger "
                  f"while it was signed ({ATTEMPTS} tries): decide again", data)


def presign(ws: WorkspaceCore, actor: Actor, type: str, round_number: int, data: dict[str, Any]) -> Presigned:
    """Sign the decision ``type`` with ``data`` now, for an event another process appends next (the
    round run that records an approval): refused and recorded when the key is not the person's."""
    signature, time, prev = _signature(ws, actor, access.load(ws.root), type, round_number, data)
    return Presigned(signature, time, prev)


def refusal(ws: WorkspaceCore, actor: Actor, type: str, round_number: int, reason: str,
            context: dict[str, Any] | None = None) -> Refused | ApprovalRefused:
    """Record that ``actor``'s decision ``type`` was refused for ``reason`` (``approval_refused`` for an
    approval, with the batch ``context`` names; else ``decision_refused``); the error to raise."""
    context = {k: v for k, v in (context or {}).items() if k != SIGNATURE}
    if type == "labels_approved":
        batch = context.get("batch_sha256") or ""
        ws.ledger.append("approval_refused", round_number, actor.name, {
            "approver": actor.name, "batch_sha256": batch, "reason": reason,
            "flow_run_id": context.get("flow_run_id"), "quarantine": None})
        return ApprovalRefused(round_number, batch, f"round {round_number}: the approval of batch {batch[:12]} by "
                                                    f"{actor.name} was refused: {reason}")
    ws.ledger.append("decision_refused", round_number, actor.name,
                     {**context, "by": actor.name, "action": type, "reason": reason})
    return Refused(f"refused: {reason}")


def create_access(ws: WorkspaceCore, actor: Actor, key: str | None) -> Access:
    """``init``: the access file with ``actor`` its first admin (with the public ``key``), written and
    recorded (``access_changed``, round 0; a signature is checked against the file it creates). The
    caller commits it."""
    made = access.create(actor.name, read_public_key(key) if key else None)
    access.save(ws.root, made)
    authorize(ws, actor, access.CHANGE_EVENT, 0, people=made)
    record(ws, actor, access.CHANGE_EVENT, 0, _change_data(actor, f"created with {actor.name} as admin",
                                                           actor.name, made), people=made)
    return made


def change_access(ws: WorkspaceCore, actor: Actor, person: str, change: str,
                  edit: Callable[[Access], Access]) -> Access:
    """Change the access file by ``edit`` as ``actor`` (an admin in the file in force, which also checks
    their signature), described as ``change``: written, recorded (``access_changed`` in the round in
    progress) and committed with the ledger export. A refused change leaves the file as it was."""
    with FileLock(_lock(ws)):
        old = access.load(ws.root)
        round_number = ws.current_round()
        if person == SIMULATED:
            raise AccessError(f"{SIMULATED!r} names the simulated annotator, never a person")
        data = {"change": change, "person": person}
        authorize(ws, actor, access.CHANGE_EVENT, round_number, data, people=old)
        new = edit(old)
        access.save(ws.root, new)
        try:
            record(ws, actor, access.CHANGE_EVENT, round_number, _change_data(actor, change, person, new), people=old)
        except BaseException:
            access.save(ws.root, old)
            raise
        ws.ledger.export_jsonl(ws.root / "ledger.jsonl")
        ws.vcs.commit(f"access: {change} (by {actor.name})")
    return new


def _change_data(actor: Actor, change: str, person: str, new: Access) -> dict[str, Any]:
    """The data of an ``access_changed`` event: who, what, whom, and the digest of the file it produced."""
    return {"by": actor.name, "change": change, "person": person, access.DIGEST_FIELD: new.digest()}


def _lock(ws: WorkspaceCore) -> Path:
    """The lock file that makes access changes one at a time (across processes)."""
    (ws.root / "tmp").mkdir(exist_ok=True)
    return ws.root / "tmp" / "access.lock"


def _signature(ws: WorkspaceCore, actor: Actor, people: Access, type: str, round_number: int,
               data: dict[str, Any]) -> tuple[str, str, str]:
    """The signature of the decision (made now, or the presigned one), its time and prev, checked against
    the person's keys in ``people`` (another key: refused and recorded)."""
    if actor.presigned is not None:
        signature, time, prev = actor.presigned.signature, actor.presigned.time, actor.presigned.prev
    else:
        time, prev = utc_now(), ws.ledger.head()
        key, agent = _signing_key(actor.sign, people.person(actor.name))
        signature = sign(payload(actor.name, type, round_number, time, prev, data), key, agent)
    try:
        verify(payload(actor.name, type, round_number, time, prev, data), signature, people.keys_of(actor.name))
    except BadSignature as exc:
        reason = _not_theirs(people, actor.name, exc.key) if exc.key else f"{actor.name}'s signature: {exc}"
        raise refusal(ws, actor, type, round_number, reason, data) from None
    return signature, time, prev


def payload(actor: str, type: str, round_number: int, time: str, prev: str, data: dict[str, Any]) -> bytes:
    """The bytes a decision's signature covers (:func:`activeseg.workspace.signing.canonical_payload`)."""
    return canonical_payload({"actor": actor, "round": round_number, "type": type, "time": time, "prev": prev,
                              "data": data})


def _not_theirs(people: Access, name: str, key: str) -> str:
    """Why a signature by ``key`` does not sign for ``name``, naming the key's owner when there is one."""
    owner = people.owner_of(key)
    whose = f"{owner}'s key" if owner else "a key of nobody in the access file"
    return (f"signed with {fingerprint(key)}, {whose}, not one of {name}'s keys "
            f"({', '.join(fingerprint(k) for k in people.keys_of(name)) or 'none'})")


def _signing_key(spec: str | None, person: Person) -> tuple[str, bool]:
    """What :func:`activeseg.workspace.signing.sign` signs with for ``--sign spec``: a private key file,
    or (through the agent) a public key line."""
    if spec == AGENT:
        return _agent_key(person), True
    try:
        return read_public_key(spec), True
    except SigningError:
        return str(spec), False


def _public_key(spec: str, person: Person) -> str | None:
    """The public key ``--sign spec`` signs with when it is known before signing: a public key (line or
    file), the agent's key of the person, or ``KEY.pub`` beside a private key file; else None."""
    key, agent = _signing_key(spec, person)
    if agent:
        return key
    beside = Path(key).expanduser().with_name(Path(key).name + ".pub")
    return read_public_key(str(beside)) if beside.is_file() else None


def _agent_key(person: Person) -> str:
    """The first key of ``person``'s that the SSH agent holds (``ssh-add -L``)."""
    try:
        done = subprocess.run(["ssh-add", "-L"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise SigningError("ssh-add (OpenSSH) is not installed or not on PATH: --sign agent needs it") from None
    if done.returncode == 2:
        raise SigningError("--sign agent: no SSH agent is running (SSH_AUTH_SOCK is not set or stale)")
    held = [line.strip() for line in done.stdout.splitlines() if line.startswith(("ssh-", "ecdsa-", "sk-"))]
    for line in held:
        if person.has_key(line):
            return line
    raise SigningError(f"--sign agent: the SSH agent holds none of {person.name}'s keys "
                       f"({', '.join(fingerprint(k) for k in person.keys) or 'the access file lists none'}); "
                       f"add one with ssh-add, or name the key file with --sign KEY")
