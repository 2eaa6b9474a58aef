"""The live Label Studio loop (``oracle.kind: labelstudio``): the query step fills a Label Studio project with
the round's tasks and the model's prediction, ``activeseg labels pull`` fetches the completed annotations and
hands them in through the tool-import path (:func:`.service.import_round`: validation, quarantine, ledger,
annotator from ``completed_by``), and ``activeseg status`` counts the round's done tasks.

The server is ``oracle.labelstudio_url``; its API token comes from the environment variable named by
``oracle.labelstudio_token_env`` (default ``LABEL_STUDIO_API_KEY``) only: it is never written to params, logs,
the ledger or the workspace. The project is created once per campaign and remembered, with the ids of each
round's tasks, in :data:`STATE` (``labelstudio.json``, committed with the round). Tasks and predictions are
the ones ``activeseg labels export --format labelstudio`` writes (same labeling config, same task building,
the export also in the store so that untouched predictions are recorded as ``reviewed_unchanged``); each
task carries its crop (the region outlined in yellow, :func:`.labelstudio.shown`) inline as a PNG data URI,
so the server needs no access to the object store.
Publishing is idempotent: a region already in the project is not imported twice.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from activeseg.core.util import read_json, write_json
from activeseg.workspace.base import WorkspaceCore
from activeseg.workspace.identity import Actor
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.exchange.images import to_uint8
from activeseg.workspace.exchange.formats import labelstudio
from activeseg.workspace.exchange.formats.common import RequestItem
from activeseg.workspace.records import LabelsAccepted, Staged

STATE = "labelstudio.json"
"""The campaign's Label Studio project: ``{"url", "project", "rounds": {"<n>": {"tasks": {region id: task id}}}}``."""
PAGE = 100


class LabelStudioError(WorkspaceError):
    """The Label Studio server cannot be used (no URL or token, not reachable, an API error): the message
    says which and never contains the token."""


def enabled(ws: WorkspaceCore) -> bool:
    return ws.cfg.oracle.kind == "labelstudio"


def client(ws: WorkspaceCore, timeout: float = 60) -> Any:
    """A ``label_studio_sdk.LabelStudio`` client for ``oracle.labelstudio_url`` with the token from the
    environment (``timeout`` seconds per request)."""
    from label_studio_sdk import LabelStudio

    oracle = ws.cfg.oracle
    if not oracle.labelstudio_url:
        raise LabelStudioError("oracle.labelstudio_url is not set (the Label Studio server, e.g. http://127.0.0.1:8080)")
    token = os.environ.get(oracle.labelstudio_token_env, "").strip()
    if not token:
        raise LabelStudioError(f"no Label Studio API token: set the environment variable {oracle.labelstudio_token_env} "
                               "(Account & Settings > Access Token in Label Studio); it is never read from params")
    return LabelStudio(base_url=oracle.labelstudio_url.rstrip("/"), api_key=token, timeout=timeout)


@contextmanager
def _api(ws: WorkspaceCore, what: str) -> Iterator[None]:
    """Turn the SDK's and the network's errors into a :class:`LabelStudioError` naming the server and the step."""
    try:
        yield
    except LabelStudioError:
        raise
    except Exception as exc:  # httpx, the SDK's ApiError, pydantic: all mean the server did not do it
        status = getattr(exc, "status_code", None)
        detail = f"HTTP {status}: {getattr(exc, 'body', '')}" if status else f"{type(exc).__name__}: {exc}"
        token = os.environ.get(ws.cfg.oracle.labelstudio_token_env, "")
        if token:
            detail = detail.replace(token, "***")
        raise LabelStudioError(f"Label Studio at {ws.cfg.oracle.labelstudio_url}: {what} failed ({detail[:500]})") from None


def read_state(ws: WorkspaceCore) -> dict[str, Any]:
    path = ws.root / STATE
    return read_json(path) if path.is_file() else {}


def _project(ws: WorkspaceCore, ls: Any, state: dict[str, Any], config: str) -> int:
    """The campaign's project id: the remembered one (same server), else a new project (remembered)."""
    url = ws.cfg.oracle.labelstudio_url.rstrip("/")
    if state.get("project") is not None and state.get("url") == url:
        return int(state["project"])
    with _api(ws, "creating the project"):
        project = ls.projects.create(title=f"activeseg {ws.root.name}"[:50], label_config=config,
                                     description=f"activeseg campaign {ws.root}: one task per requested region; "
                                                 "paint the region inside the box, sort by prediction score")
    state.clear()
    state.update({"url": url, "project": int(project.id), "rounds": {}})
    write_json(ws.root / STATE, state)
    return int(project.id)


def _data_uri(ws: WorkspaceCore, item: RequestItem) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    crop = to_uint8(ws.dataset.read_box(item.stem, item.crop_box))
    Image.fromarray(labelstudio.shown(crop, item)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def project_tasks(ls: Any, project: int, fields: str = "task_only") -> Iterator[Any]:
    """The project's tasks, page by page up to the total the server gives (never asking for a page past
    the last one, which Label Studio answers with 404)."""
    page, seen = 1, 0
    while True:
        pager = ls.tasks.list(project=project, fields=fields, page=page, page_size=PAGE)
        items = list(pager.items or [])
        yield from items
        seen += len(items)
        if not items or seen >= pager.response.total:
            return
        page += 1


def publish(ws: WorkspaceCore, round_number: int) -> dict[str, Any]:
    """Create the campaign's project (once) and import the round's tasks with the model's prediction (those
    not in the project yet); returns the project id and the round's task count."""
    from activeseg.workspace.exchange.formats.service import export_round, export_prefix

    n, state = round_number, read_state(ws)
    known = state.get("rounds", {}).get(str(n), {}).get("tasks", {})
    requested = [ref.id for ref in ws.record(n).requested()]
    if state.get("url") == ws.cfg.oracle.labelstudio_url.rstrip("/") and set(requested) <= set(known):
        return {"project": state["project"], "round": n, "tasks": len(requested), "imported": 0}
    ls = client(ws)
    (ws.root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / "tmp") as folder:
        out = Path(folder)
        export_round(ws, n, "labelstudio", out, image_url=lambda item: _data_uri(ws, item))
        tasks, config = read_json(out / labelstudio.TASKS), (out / labelstudio.CONFIG).read_text()
    project = _project(ws, ls, state, config)
    with _api(ws, f"listing the tasks of project {project}"):
        present = {t.data.get("region_id"): int(t.id) for t in project_tasks(ls, project)
                   if isinstance(t.data, dict) and t.data.get("activeseg_round") == n}
    missing = [t for t in tasks if t["data"]["region_id"] not in present]
    if missing:
        with _api(ws, f"importing {len(missing)} tasks into project {project}"):
            ls.projects.import_tasks(project, request=missing)
            present = {t.data.get("region_id"): int(t.id) for t in project_tasks(ls, project)
                       if isinstance(t.data, dict) and t.data.get("activeseg_round") == n}
    absent = [rid for rid in requested if rid not in present]
    if absent:
        raise LabelStudioError(f"project {project}: the tasks of regions {', '.join(absent[:10])} were not created")
    state.setdefault("rounds", {})[str(n)] = {"tasks": {rid: present[rid] for rid in requested},
                                              "export": export_prefix(n, "labelstudio")}
    write_json(ws.root / STATE, state)
    ws.ledger.append("labelstudio_published", n, ws.actor, {
        "url": state["url"], "project": project, "tasks": len(requested), "imported": len(missing)},
        once_key=f"{project}:{len(requested)}")
    return {"project": project, "round": n, "tasks": len(requested), "imported": len(missing)}


def _round_tasks(ws: WorkspaceCore, n: int) -> tuple[int, dict[str, int]]:
    state = read_state(ws)
    tasks = state.get("rounds", {}).get(str(n), {}).get("tasks")
    if state.get("project") is None or not tasks:
        raise LabelStudioError(f"round {n}: no Label Studio tasks were published (the query step publishes them with "
                               "oracle.kind labelstudio; `activeseg step query` runs it again)")
    return int(state["project"]), {rid: int(tid) for rid, tid in tasks.items()}


def _done(annotations: Any) -> bool:
    return any(isinstance(a, dict) and not a.get("was_cancelled") for a in annotations or [])


def fetch(ws: WorkspaceCore, n: int, timeout: float = 60) -> tuple[list[dict[str, Any]], int]:
    """The round's tasks as Label Studio's JSON export has them (``id``, ``data``, ``annotations`` with
    ``result`` and ``completed_by``; ``completed_by`` a user object with the email when the server names
    the user) and the number of tasks done (an annotation that was not cancelled)."""
    project, ids = _round_tasks(ws, n)
    ls = client(ws, timeout)
    wanted = set(ids.values())
    with _api(ws, f"reading the annotations of project {project}"):
        found = {int(t.id): t for t in project_tasks(ls, project, "all") if int(t.id) in wanted}
        users = {}
        for user in ls.users.list():
            users[int(user.id)] = {"id": int(user.id), "email": user.email, "username": user.username}
    missing = [rid for rid, tid in ids.items() if tid not in found]
    if missing:
        raise LabelStudioError(f"project {project}: the tasks of regions {', '.join(missing[:10])} are gone "
                               "(deleted in Label Studio?)")
    exported = []
    for rid, tid in ids.items():
        task = found[tid]
        annotations = []
        for a in task.annotations or []:
            a = a if isinstance(a, dict) else a.model_dump()
            who = a.get("completed_by")
            if isinstance(who, int) and who in users:
                a = {**a, "completed_by": users[who]}
            annotations.append(a)
        exported.append({"id": tid, "data": task.data, "annotations": annotations})
    return exported, sum(_done(t["annotations"]) for t in exported)


def progress(ws: WorkspaceCore, round_number: int) -> dict[str, Any]:
    """How many of the round's tasks are done in Label Studio: ``{round, project, done, tasks, url}`` (a
    server that does not answer within 10 s is an error: ``activeseg status`` must not hang on it)."""
    tasks, done = fetch(ws, round_number, timeout=10)
    project, _ = _round_tasks(ws, round_number)
    return {"round": round_number, "project": project, "done": done, "tasks": len(tasks),
            "url": f"{ws.cfg.oracle.labelstudio_url.rstrip('/')}/projects/{project}"}


def pull(ws: WorkspaceCore, round_number: int | None = None, replace: bool = False,
         by: Actor | None = None) -> dict[str, Any]:
    """Fetch the round's annotations; when every task is done, hand them in through
    :func:`.service.import_round` (validated, staged for approval or quarantined; the annotator from
    ``completed_by``) and say that the batch is ready to approve. Until then, only the count. ``by``
    hands the batch in: an annotator (default: Label Studio itself, :meth:`Actor.labelstudio`)."""
    from activeseg.workspace.exchange.formats.service import import_round

    n = ws.resolve(round_number)
    tasks, done = fetch(ws, n)
    result: dict[str, Any] = {"round": n, "done": done, "tasks": len(tasks)}
    if done < len(tasks):
        return {**result, "staged": None,
                "message": f"{done} of {len(tasks)} tasks of round {n} are done in Label Studio; pull again when "
                           "every task is complete"}
    (ws.root / "tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ws.root / "tmp") as folder:
        export = Path(folder) / labelstudio.TASKS
        write_json(export, tasks)
        batch = import_round(ws, n, "labelstudio", export, replace=replace, by=by or Actor.labelstudio())
    summary = batch.model_dump()
    if isinstance(batch, LabelsAccepted):
        return {**result, "accepted": summary, "message": f"round {n}: this batch was accepted already"}
    assert isinstance(batch, Staged)
    return {**result, "staged": summary,
            "message": f"every task of round {n} is complete: batch {batch.batch_sha256} from {batch.annotator} is "
                       f"staged and ready to approve (`activeseg approve --round {n} --by NAME`)"}
