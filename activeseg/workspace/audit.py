"""Read-only views of a workspace: a round's status, the open label requests, the learning curve, the
control estimates and the campaign's stop rule on them, and verification of the ledger and of every
committed label file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from activeseg.core.util import sha256_file
from activeseg.loop.stop_rules import stop_rule
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.exchange.layout import round_prefix
from activeseg.workspace import access
from activeseg.workspace.access import Access
from activeseg.workspace.identity import is_decision
from activeseg.workspace.ledger import Event, Export, VerifyResult, parse_export, read_export
from activeseg.workspace import signing
from activeseg.workspace.signing import SIGNATURE, BadSignature, canonical_payload
from activeseg.workspace.state import label_state


def round_status(ws: WorkspaceCore, round_number: int | None = None) -> dict[str, Any]:
    """Which steps of a round are done, from its record on disk (and its tag)."""
    n = ws.current_round() if round_number is None else int(round_number)
    record = ws.record(n)
    return {"round": n, "trained": record.trained is not None, "queried": record.queried is not None,
            "labels_accepted": record.labels_accepted is not None,
            "evaluated": record.evaluated is not None and ws.vcs.tag_exists(n),
            "rejected_batches": len(ws.ledger.events(type="batch_rejected", round=n))}


def pending(ws: WorkspaceCore) -> list[dict[str, Any]]:
    """Open label requests: queried rounds without an accepted batch; ``staged``: the batch waiting for
    approval (its hash, annotator, files, since when), or None; ``refused``: the round's last refused
    approval (approver, batch_sha256, reason, time, quarantine) when no batch was staged since, else None."""
    return [{"round": r.round, "regions": len(r.queried.regions), "request": r.queried.request,
             "uploaded": len(ws.store.list(round_prefix("labels", r.round))),
             "rejected_batches": len(ws.ledger.events(type="batch_rejected", round=r.round)),
             "staged": r.staged.model_dump(exclude={"round"}) if r.staged else None,
             "refused": last_refusal(ws, r.round)}
            for r in ws.records.all() if r.queried is not None and r.labels_accepted is None]


def last_refusal(ws: WorkspaceCore, round_number: int) -> dict[str, Any] | None:
    """The round's last ``approval_refused`` event (its data and time) unless a batch was staged after it."""
    refused = ws.ledger.last("approval_refused", round=round_number)
    staged = ws.ledger.last("labels_submitted", round=round_number)
    if refused is None or (staged is not None and staged.seq > refused.seq):
        return None
    return {**refused.data, "time": refused.time}


def verify(ws: WorkspaceCore) -> VerifyResult:
    """The ledger's hash chain; its JSON Lines export, whole on its own, a prefix of the database and
    extending the export committed with every round tag; the signatures of the decisions
    (:func:`check_signatures`); every committed label file against its hash."""
    result = ws.ledger.verify()
    export = ws.root / "ledger.jsonl"
    if result.ok and export.is_file():
        result = ws.ledger.check_export(export)
        if result.ok:
            result = check_history(ws, read_export(export))
    if not result.ok:
        return result
    signatures = check_signatures(ws)
    if signatures.bad:
        seq, problem = signatures.bad[0]
        more = f" (and {len(signatures.bad) - 1} more bad signatures)" if len(signatures.bad) > 1 else ""
        return VerifyResult(False, len(ws.ledger.events()), problem + more, seq)
    checked = 0
    for event in ws.ledger.events(type="labels_committed"):
        where = f"event {event.seq} (labels_committed, round {event.round})"
        for name, digest in event.data["files"].items():
            path = ws.root / name
            if not path.is_file():
                return VerifyResult(False, checked, f"{where}: {name} is missing (dvc pull?)", event.seq)
            if sha256_file(path) != digest:
                return VerifyResult(False, checked, f"{where}: {name} no longer matches its recorded hash", event.seq)
            checked += 1
    events = len(ws.ledger.events())
    return VerifyResult(True, events, f"{events} events, chain intact; {checked} committed label files match")


@dataclass(frozen=True)
class Signatures:
    """The decisions of the ledger by their signatures: ``signed`` (verified), ``unsigned`` and ``bad``
    (event seq, what is wrong: a signature that does not verify, by a key not the person's in the access
    file in force, or missing under ``campaign.require_signatures``)."""

    signed: int
    unsigned: int
    bad: list[tuple[int, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"signed": self.signed, "unsigned": self.unsigned,
                "bad": [{"seq": seq, "problem": problem} for seq, problem in self.bad]}


def check_signatures(ws: WorkspaceCore) -> Signatures:
    """Check the signature of every decision (:func:`activeseg.workspace.identity.is_decision`) against
    the keys of its actor in the access file in force at the event (:func:`activeseg.workspace.access.in_force`:
    the version the last ``access_changed`` before it names, from git; the first change against the version
    it names itself). Removing a person thus keeps their earlier signatures valid and fails later ones."""
    known = access.versions(ws.root)
    required = ws.cfg.campaign.require_signatures
    signed, unsigned, bad = 0, 0, []
    current: Access | None = None
    for event in ws.ledger.events():
        if is_decision(event):
            problem = _signature_problem(event, current, known, required)
            if problem is not None:
                bad.append((event.seq, f"event {event.seq} ({event.type} by {event.actor}, round {event.round}): "
                                       f"{problem}"))
            elif event.data.get(SIGNATURE):
                signed += 1
            else:
                unsigned += 1
        if event.type == access.CHANGE_EVENT:
            current = known.get(event.data.get(access.DIGEST_FIELD, ""))
    return Signatures(signed, unsigned, bad)


def _signature_problem(event: Event, current: Access | None, known: dict[str, Access], required: bool) -> str | None:
    """What is wrong with the signature of the decision ``event`` (``current``: the access file in force),
    or None."""
    signature = event.data.get(SIGNATURE)
    if not signature:
        return "unsigned, and campaign.require_signatures is on" if required else None
    if current is None and event.type == access.CHANGE_EVENT:  # the first change: the file it created
        current = known.get(event.data.get(access.DIGEST_FIELD, ""))
    if current is None:
        return "signed, but no access file version held by git was in force (its history was rewritten?)"
    if event.actor not in current.names():
        return f"signed by {event.actor}, who is not in the access file in force"
    try:
        signing.verify(canonical_payload(event.to_dict()), signature, current.keys_of(event.actor))
    except BadSignature as exc:
        owner = current.owner_of(exc.key) if exc.key else None
        return f"{exc}" + (f" (a key of {owner}'s)" if owner else "")
    return None


def check_history(ws: WorkspaceCore, current: Export) -> VerifyResult:
    """Whether the ledger export committed with each ``round-NNN`` tag and with HEAD is a prefix of
    ``current``: lines deleted or rewritten after a commit are found even when the export was made
    whole again."""
    for tag in [*ws.git("tag", "-l", "round-*").split(), "HEAD"]:
        result = parse_export(ws.git("show", f"{tag}:ledger.jsonl"), f"{tag}:ledger.jsonl").is_prefix_of(current)
        if not result.ok:
            return result
    return VerifyResult(True, len(current.events), f"{current.name} extends every round's committed ledger")


def learning_curve(ws: WorkspaceCore) -> list[dict[str, Any]]:
    """One row per evaluated round: labeled pixel fraction it trained on, its val and test Dice."""
    rows = []
    for event in ws.ledger.events(type="round_evaluated"):
        trained = ws.record(event.round).trained
        rows.append({"round": event.round, "labeled_pixel_fraction": event.data["labeled_pixel_fraction"],
                     "val_dice": trained.val_dice if trained else None, "dice": event.data["metrics"]["dice"],
                     "split": event.data["split"]})
    return rows


def control_estimates(ws: WorkspaceCore) -> list[dict[str, Any]]:
    """One row per round whose labels landed with controls, in round order: its control check
    (:class:`~activeseg.workspace.records.ControlCheck`) without the per-region Dice."""
    return [r.control.model_dump(exclude={"region_dice"}) for r in ws.records.all() if r.control is not None]


def plateau_dice(ws: WorkspaceCore) -> list[float]:
    """The Dice the plateau rule reads, per round in order (``campaign.plateau_on``): the test Dice of every
    evaluated round, or the control estimate of the pool Dice of every round with a control check."""
    if ws.cfg.campaign.plateau_on == "control":
        return [row["control_dice"] for row in control_estimates(ws)]
    return [row["dice"] for row in learning_curve(ws)]


def stop_reason(ws: WorkspaceCore, last_round: int) -> str | None:
    """The campaign's stop rule (:func:`activeseg.loop.stop_rules.stop_rule`) on the workspace's state:
    why it stops before the round in progress, or None."""
    state = label_state(ws)
    return stop_rule(ws.cfg.campaign, ws.current_round(), last_round, state.revealed_pixels(), state.total_pixels(),
                     plateau_dice(ws))
