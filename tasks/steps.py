"""The steps of a round as Prefect tasks: thin wrappers over :class:`activeseg.workspace.workspace.Workspace`.

Every task takes the workspace path and the round number (what its cache key is made of, see
tasks/README.md) and returns a small JSON-able dict. The tasks that talk to the workflow engine are
handed it by their flow (the orchestration services' `RunEngine`; its hash is the same in every run).
Two layers keep a resumed or retried flow run from doing anything twice: the persisted task results (a
finished task comes back "Cached" without running), and the workspace itself (a finished step returns its record; ledger events carry once-keys).

`Workspace.query` also publishes the label request (crops, previews and manifest in the object store),
so `publish_request` does not write anything: it checks that the manifest the annotator reads is the
one recorded for the round and says where it is.

Tasks that talk to the object store are retried when the failure is transient (`transient`).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from prefect.context import TaskRunContext
from prefect.client.schemas.objects import State, TaskRun
from prefect.runtime import flow_run

from activeseg.workspace.exchange.layout import round_prefix
from activeseg.workspace.exchange.requests import read_manifest
from activeseg.workspace.identity import Presigned
from activeseg.core.util import canonical_json, sha256_text
from activeseg.workspace.storage import StoreUnavailable
from activeseg.orchestration.engine import RunEngine
from activeseg.orchestration.guard import claim_round
from activeseg.workspace.pretraining import pretrain_inputs
from activeseg.workspace.workspace import Workspace, WorkspaceError
from tasks import STEP

TRANSIENT = (StoreUnavailable, ConnectionError, TimeoutError)
"""Failures worth retrying: the object store or DVC's remote did not answer through the workspace's own
retries (`storage` in params.yaml), or the network failed (never a rejected batch, a refused object
name or a step called out of order)."""


def transient(task: Any, task_run: TaskRun, state: State) -> bool:
    """Prefect's `retry_condition_fn`: retry only a transient failure."""
    return isinstance(state.result(raise_on_failure=False), TRANSIENT)


RETRY = {"retries": 2, "retry_delay_seconds": 10, "retry_condition_fn": transient}


def _open(workspace: str) -> Workspace:
    return Workspace.open(workspace)


@task(name="start-round", version="1", **STEP)
def start_round(workspace: str, round_number: int | None, flow_run_id: str, trigger: str,
                engine: RunEngine) -> dict[str, Any]:
    """Claim the round for this flow run, or skip it when another round of the campaign is active (see
    :func:`activeseg.orchestration.guard.claim_round`). Cached per flow run: the run's later re-runs get the
    same answer."""
    return claim_round(engine, _open(workspace), round_number, flow_run_id, trigger)


@task(name="validate", version="1", **STEP)
def validate(workspace: str, round_number: int) -> dict[str, Any]:
    """The dataset suite on data/ with the frozen split (raises ValidationFailed naming every problem)."""
    return _open(workspace).validate()


@task(name="partition", version="1", **STEP)
def partition(workspace: str, round_number: int) -> dict[str, Any]:
    """The training pool's candidate regions, written to pool/regions.json."""
    ws = _open(workspace)
    path = ws.partition()
    return {"regions": str(path.relative_to(ws.root)), "count": len(ws.regions())}


def _pretrain_key(context: TaskRunContext, inputs: dict[str, Any]) -> str:
    """The pretrain task's cache key: the workspace and its pretraining inputs' hash (the pool's images and
    regions, the settings, the method's code), not the round: it runs once per campaign, again when they change."""
    ws = _open(inputs["workspace"])
    return f"{ws.root}:{ws.cfg.pretrain.enabled}:{pretrain_inputs(ws)}"


@task(name="pretrain", version="1", persist_result=True, result_serializer="json",
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_pretrain_key) + TASK_SOURCE)
def pretrain(workspace: str, round_number: int) -> dict[str, Any]:
    """Self-supervised pretraining on the pool before the first training (skipped by the workspace too while
    its inputs' hash is the recorded one); cached across rounds by that hash."""
    return _open(workspace).pretrain() or {"enabled": False}


@task(name="train", version="1", **STEP)
def train(workspace: str, round_number: int) -> dict[str, Any]:
    """Train the round's model on every accepted label (checkpoint hash, MLflow run, val Dice); a
    collapsed model is said in the run's log."""
    result = _open(workspace).train(round_number)
    if result.get("collapsed"):  # absent when the model did not collapse
        print(f"round {round_number}: model collapsed: {result['collapsed']} (val Dice {result['val_dice']:.4f})")
    return result


@task(name="query", version="1", **STEP, **RETRY)
def query(workspace: str, round_number: int) -> dict[str, Any]:
    """Select the round's regions with the trained model; the workspace publishes the request too. With
    ``query.cluster``, MC-dropout scoring runs in shards on that Dask cluster (`tasks.scoring`)."""
    ws = _open(workspace)
    if ws.cfg.query.cluster:
        from tasks.scoring import dask_shards  # Dask only where a cluster is used

        ws.run_shards = dask_shards(ws.cfg.query.cluster)
    queried = ws.query(round_number)
    return {"round": round_number, "strategy": queried["strategy"], "regions": [r["id"] for r in queried["regions"]],
            "budget": queried["budget"], "spent": queried["spent"], "request": queried["request"],
            "manifest_sha256": queried["manifest_sha256"], "checkpoint_sha256": queried["checkpoint_sha256"]}


@task(name="publish-request", version="1", **STEP, **RETRY)
def publish_request(workspace: str, round_number: int) -> dict[str, Any]:
    """Check that the round's label request is in the object store as recorded; where it is."""
    ws = _open(workspace)
    queried = ws.record(round_number).queried
    if queried is None:
        raise WorkspaceError(f"round {round_number}: no label request was made (the query step has not run)")
    manifest = read_manifest(ws.store, round_number)
    if manifest is None or sha256_text(canonical_json(manifest)) != queried.manifest_sha256:
        raise WorkspaceError(f"round {round_number}: the request in {queried.request} is missing or is not the "
                             "one recorded in the ledger")
    return {"round": round_number, "request": queried.request, "regions": len(manifest["regions"]),
            "labels": f"{ws.store.url}/{round_prefix('labels', round_number)}",
            "signatures_required": ws.cfg.campaign.require_signatures}


@task(name="labels-taken", version="1", persist_result=False, cache_policy=NO_CACHE)
def labels_taken(workspace: str, round_number: int) -> dict[str, Any] | None:
    """The round's batch as `ingest_labels` returns it when one was already taken in (by an earlier run of
    the round that failed after its approval, e.g. in the evaluate), else None. Never cached: it reads
    the workspace as it is now."""
    return _taken(_open(workspace), round_number)


def _taken(ws: Workspace, n: int) -> dict[str, Any] | None:
    """Round `n`'s accepted batch and its approval (what `ingest_labels` returns), or None."""
    accepted = ws.record(n).labels_accepted
    if accepted is None:
        return None
    event = ws.ledger.last("labels_approved", round=n)
    return {"accepted": True, "round": n, "batch_sha256": accepted.batch_sha256, "annotator": accepted.annotator,
            "files": accepted.files, "commit": accepted.commit, "approver": event.data["approver"] if event else None,
            "comment": event.data["comment"] if event else "", "approved": event.time if event else None}


@task(name="ingest-labels", version="1", **STEP, **RETRY)
def ingest_labels(workspace: str, round_number: int, wait: str, approval: dict[str, Any]) -> dict[str, Any]:
    """Take the approved staged batch in; `accepted` False (with the reason) when the round must wait on.

    `wait`: the key of the wait that `approval` answered. It is part of the cache key, so each answer is
    taken once (a re-run from the top gets it back cached) and the same approval given again to a later
    wait (the same batch handed in again after a refusal) is decided anew, not answered from the cache.

    Approved: the staged batch must be the one the approval names and hold the bytes that were staged;
    the workspace records the approval (`labels_approved`) and takes the batch in (`labels_committed`),
    or records the refusal (`approval_refused`, which `activeseg approve` waits for and reports). Not
    approved (from the Prefect UI form): the staged batch goes to quarantine, as with `activeseg reject`.
    The approver must be a reviewer (four eyes: not an annotator of the batch), and the approval signed
    when `campaign.require_signatures` is on (by `activeseg approve --sign KEY`: the form cannot sign);
    otherwise it is refused and recorded like any other refusal.
    """
    ws, n = _open(workspace), round_number
    by = approval["approver"]
    signed = approval.get("signature") or None
    presigned = Presigned(signed, approval["signed_time"], approval["signed_prev"]) if signed else None
    if not approval["approved"]:
        reason = approval.get("comment") or "not approved"
        try:
            rejected = ws.reject(n, by, reason)
            note = f"batch {rejected['batch_sha256'][:12]} moved to {rejected['quarantine']}"
        except WorkspaceError as exc:
            note = str(exc)
        return {"accepted": False, "reason": f"not approved by {by}: {reason} ({note})"}
    try:
        ws.approve(n, ws.person(by, presigned=presigned), approval.get("comment", ""), approval["batch_hash"],
                   str(flow_run.get_id()))
    except WorkspaceError as exc:
        return {"accepted": False, "reason": str(exc)}
    return _taken(ws, n)


@task(name="evaluate", version="1", **STEP, **RETRY)
def evaluate(workspace: str, round_number: int) -> dict[str, Any]:
    """Test metrics of the round's model; closes the round (DVC push, git commit, tag round-NNN); then
    writes the campaign report (report.html in the workspace and reports/report.html in the object store)."""
    ws = _open(workspace)
    result = ws.evaluate(round_number)
    return {**result, "report": _report(ws)}


def _report(ws: Workspace) -> str | None:
    """Write the campaign report; its path relative to the workspace, or None when it failed: the round is
    closed already, and a report that cannot be drawn must not fail it (the error is in the run's log; an
    outage of the object store is retried like the task's other transient failures). Imported here: only
    the process that evaluates draws (matplotlib)."""
    from activeseg.report.page import write_campaign_report

    try:
        return write_campaign_report(ws, upload=True).relative_to(ws.root).as_posix()
    except TRANSIENT:
        raise
    except Exception as exc:  # noqa: BLE001  (any bug of the report; the round stays closed)
        print(f"round report not written: {type(exc).__name__}: {exc}")
        return None
