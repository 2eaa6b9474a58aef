"""How ledger events read: one human line per event for the audit table (:func:`summary`) and the CSV
export of ``activeseg audit --csv`` (:func:`to_csv`)."""

from __future__ import annotations

import csv
import io

from activeseg.core.util import canonical_json
from activeseg.workspace.ledger import Event


def to_csv(events: list[Event]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seq", "time", "round", "type", "actor", "data", "hash"])
    for e in events:
        writer.writerow([e.seq, e.time, e.round, e.type, e.actor, canonical_json(e.data), e.hash])
    return out.getvalue()


def refusal(data: dict) -> str:
    """An ``approval_refused`` event's data in words (with its time when given, as `pending` adds it)."""
    when = f" at {data['time'][:19].replace('T', ' ')} UTC" if data.get("time") else ""
    kept = f"; the batch is in quarantine at {data['quarantine']}" if data.get("quarantine") else ""
    return (f"approval of batch {data['batch_sha256'][:12]} by {data['approver']} refused{when}: "
            f"{data['reason']}{kept}")


def summary(event: Event, sample: str | None = None) -> str:
    """One human line for the audit table; with ``sample``, that region's score and cost where known."""
    d = event.data
    short = lambda h: (h or "-")[:12]  # noqa: E731
    if event.type == "queried":
        branch = d.get("details", {}).get("branch")
        text = (f"strategy {d['strategy']}" + (f" (round by {branch})" if branch else "")
                + f", {len(d['regions'])} regions" + (f" ({len(d['controls'])} of them controls)" if d.get("controls") else "")
                + f", model {short(d['checkpoint_sha256'])}, mlflow run {d.get('mlflow_run_id') or '-'}")
        if sample in d["regions"]:
            i = d["regions"].index(sample)
            score = d["scores"][i]
            text += (f"; score {score:.6g}" if score is not None else "; a control region (no score)") \
                + f", cost {d['costs'][i]} px"
        return text
    if event.type in ("labels_received", "labels_submitted"):
        return (f"annotator {d['annotator']}, batch {short(d['batch_sha256'])}, {d['files']} files"
                + (f", replaces batch {short(d['replaces'])}" if d.get("replaces") else ""))
    if event.type == "batch_rejected":  # a reviewer's reason already says "rejected by NAME: ..."
        by = "" if d["reasons"][:1] and d["reasons"][0].startswith(f"rejected by {d['by']}") else f"by {d['by']}: "
        return by + "; ".join(d["reasons"][:3]) + (" ..." if len(d["reasons"]) > 3 else "")
    if event.type == "batch_unstaged":
        return f"batch {short(d['batch_sha256'])} from {d['annotator']} unstaged by {d['by']}: {d['reason']}"
    if event.type == "approval_refused":
        return refusal(d)
    if event.type == "labels_approved":
        return (f"batch {short(d['batch_sha256'])} from {d['annotator']} approved by {d['approver']}"
                + (f" ({d['comment']})" if d.get("comment") else "")
                + (f", flow run {d['flow_run_id']}" if d.get("flow_run_id") else ", by hand") + _signed(d))
    if event.type == "round_skipped":
        return f"{d['trigger']} trigger, flow run {d['flow_run_id']}: {d['reason']}"
    if event.type == "labels_committed":
        return f"annotator {d['annotator']}, {len(d['regions'])} regions, commit {short(d['commit'])}"
    if event.type == "labels_revoked":
        back = f"; back in round {d['returned_to']}'s request" if d.get("returned_to") is not None else ""
        return (f"by {d['by']}: {d['reason']}; {len(d['regions'])} regions of batch {short(d['batch_sha256'])} "
                f"from {d['annotator']}, {d['revoked_pixels']} px no longer known{back}")
    if event.type == "pseudo_labeled":
        return f"{len(d['regions'])} regions pseudo-labeled by model {short(d['model'])}"
    if event.type == "round_evaluated":
        return ", ".join(f"{k} {v:.4f}" for k, v in d["metrics"].items() if isinstance(v, float))
    if event.type == "request_published":
        return f"{len(d['regions'])} regions at {d['store']}/{d['manifest']}"
    if event.type == "split_frozen":
        return ", ".join(f"{k} {len(v)}" for k, v in d["split"].items())
    if event.type == "dataset_registered":
        slides = f", {d['slides']} slides" if d.get("slides") else ""
        return f"{d['images']} images{slides}, {d['classes']} classes, from {d['source']}"
    if event.type == "round_started":
        return f"strategy {d['strategy']}"
    if event.type == "access_changed":
        return f"by {d['by']}: {d['change']} (access file {short(d['access_sha256'])})" + _signed(d)
    if event.type == "decision_refused":
        return f"{d['action']} by {d['by']} refused: {d['reason']}"
    return canonical_json(d)


def _signed(data: dict) -> str:
    """", signed" for a decision that carries a signature (``audit verify`` checks it), else nothing."""
    return ", signed" if data.get("signature") else ""
