"""Creating a workspace (``activeseg init``): the files written before it opens (:func:`prepare`), and
its first commit (:func:`populate`): dataset imported, validated, tracked and pushed, split frozen,
initial labeled set committed and tagged ``round-000``."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import activeseg
from activeseg.core.config import Config, initial_method, load_config, parse_override
from activeseg.core.data import load_or_create_split
from activeseg.core.partition import Region
from activeseg.core.pool import initial_regions
from activeseg.core.util import canonical_json, round_name, sha256_file, sha256_text, utc_now, write_json
from activeseg.loop.oracle import ground_truth
from activeseg.workspace.base import SETTINGS, WorkspaceCore
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.exchange.images import mask_png
from activeseg.workspace.exchange.intake import commit_labels
from activeseg.workspace.identity import Actor, create_access
from activeseg.workspace.pretraining import pool_embeddings
from activeseg.workspace.records import Initial, RequestedRegion, RoundRecord
from activeseg.workspace.state import save_state
from activeseg.workspace.steps import check_dataset, write_pool
from activeseg.workspace.validation import ValidationFailed, validate_dataset
from activeseg.workspace.vcs import Remote

PROJECT_ROOT = Path(activeseg.__file__).resolve().parents[1]
INITIAL_ANNOTATOR = "initial-ground-truth"
GITIGNORE = "/ledger.db*\n/mlflow/\n/tmp/\n/cache/\n/state/\n/.prefect/\n/report.html\n"


def write_params(base: Path, target: Path, overrides: list[str]) -> None:
    """Copy a params file and apply ``key.path=value`` overrides, keeping its comments and layout."""
    from ruamel.yaml import YAML

    rt = YAML()
    data = rt.load(base.read_text())
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    with target.open("w") as f:
        rt.dump(data, f)


@dataclasses.dataclass
class Plan:
    """A workspace to create, checked: its params (``base`` with ``overrides``), the dataset folder
    (None: synthetic) and the remote."""

    root: Path
    base: Path
    overrides: list[str]
    cfg: Config
    source: Path | None
    remote: Remote


def plan(root: str | Path, dataset: str | Path, classes: int | None, remote: str | None, endpoint: str | None,
         overrides: list[str] | tuple[str, ...], params: Path | None) -> Plan:
    """Check what ``init`` was given (an empty target, the params and dvc.yaml, a valid dataset folder)."""
    root = Path(root).resolve()
    if root.exists() and any(root.iterdir()):
        raise WorkspaceError(f"{root}: already exists and is not empty")
    base = Path(params) if params else PROJECT_ROOT / "params.yaml"
    for path in (base, PROJECT_ROOT / "dvc.yaml"):
        if not path.is_file():
            raise WorkspaceError(f"{path}: not found (the project's params.yaml and dvc.yaml sit next to the "
                                 "activeseg package; install it from the source tree with pip install -e)")
    overrides = list(overrides) + ([f"data.classes={classes}"] if classes is not None else [])
    name = "synthetic" if str(dataset) == "synthetic" else str(Path(dataset).resolve())
    overrides.append(f"data.dataset={json.dumps(name)}")  # a quoted YAML scalar, whatever the path holds
    cfg = load_config(base, overrides, "--set" if classes is None else "--set or --classes")
    source = None if str(dataset) == "synthetic" else Path(dataset).resolve()
    if source is not None:
        report = validate_dataset(source, cfg.data.classes, cfg.partition.side, slides=cfg.data.slides)
        if not report.success:
            raise ValidationFailed(f"dataset {source}", report)
    return Plan(root, base, overrides, cfg, source, Remote.choose(root, remote, endpoint))


@contextmanager
def all_or_nothing(plan: Plan) -> Iterator[None]:
    """On failure inside, remove the workspace and remote folders this creation made (or, for a
    workspace folder that existed empty, what was put in it)."""
    remote_dir = None if plan.remote.is_s3 else (plan.root / plan.remote.url).resolve()
    made = [p for p in (plan.root, remote_dir) if p is not None and not p.exists()]
    try:
        yield
    except BaseException:
        for path in made if plan.root in made else [*made, *plan.root.iterdir()]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        raise


def prepare(plan: Plan) -> None:
    """The files a workspace opens with: params.yaml, dvc.yaml, .gitignore, workspace.json; git init."""
    root = plan.root
    remote_dir = None if plan.remote.is_s3 else (root / plan.remote.url).resolve()
    inside = remote_dir is not None and remote_dir.is_relative_to(root)
    root.mkdir(parents=True, exist_ok=True)
    write_params(plan.base, root / "params.yaml", plan.overrides)
    shutil.copyfile(PROJECT_ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / ".gitignore").write_text(GITIGNORE + (f"/{remote_dir.relative_to(root)}/\n" if inside else ""))
    write_json(root / SETTINGS, {"remote": dataclasses.asdict(plan.remote), "created": utc_now(),
                                 "activeseg": activeseg.__version__})
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, capture_output=True)


DATASET_FOLDERS = ("images", "masks", "slides", "slide_masks")


def _import_dataset(ws: WorkspaceCore, source: Path | None) -> None:
    """data/: generated from ``data.synthetic`` (``source`` None) or copied from ``source`` (those of
    :data:`DATASET_FOLDERS` it has). Slides are copied too, not hard-linked: a link would share the
    file with the user's folder, so an edit there (or DVC protecting or replacing the file here) would
    change the registered dataset behind the ledger's back; ``dvc add`` then caches the copy."""
    data = ws.root / "data"
    if source is None:
        from activeseg.core.synthetic import synthesize

        s = ws.cfg.data.synthetic
        synthesize(data, n=s.n, size=s.size, seed=s.seed, classes=ws.cfg.data.classes,
                   style_weights=s.style_weights, object_weights=s.object_weights)
        return
    for part in (p for p in DATASET_FOLDERS if (source / p).is_dir()):
        (data / part).mkdir(parents=True)
        for path in sorted((source / part).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                shutil.copy2(path, data / part / path.name)


def _register(ws: WorkspaceCore) -> None:
    """Freeze the split; ledger dataset_registered (with a hash of every file: per stem the image's or
    slide's and the mask's, ``None`` for a slide without one; files are hashed streaming, so a slide is
    never held in memory) and split_frozen."""
    cfg, dataset = ws.cfg, ws.dataset
    split = load_or_create_split(ws.root / "split.json", dataset.stems, cfg.data.split.train, cfg.data.split.val,
                                 cfg.data.seed)
    samples = [dataset.samples[s] for s in dataset.stems]
    digest = sha256_text(canonical_json([[s.stem, sha256_file(s.image_path),
                                          sha256_file(s.mask_path) if s.mask_path else None] for s in samples]))
    slides = sum(dataset.is_slide(s.stem) for s in samples)
    ws.ledger.append("dataset_registered", 0, ws.actor,
                     {"images": len(samples) - slides, "classes": cfg.data.classes, "source": cfg.data.dataset,
                      "content_sha256": digest, **({"slides": slides} if slides else {})}, once_key=digest)
    split_sha = sha256_file(ws.root / "split.json")
    ws.ledger.append("split_frozen", 0, ws.actor, {"split": split, "split_sha256": split_sha}, once_key=split_sha)


def _add_remote(ws: WorkspaceCore) -> None:
    ws.store.ensure()
    ws.dvc("remote", "add", "-d", "origin", ws.remote.dvc_url())
    if ws.remote.endpoint:
        ws.dvc("remote", "modify", "origin", "endpointurl", ws.remote.endpoint)
    if ws.remote.region:
        ws.dvc("remote", "modify", "origin", "region", ws.remote.region)


def initial_set(ws: WorkspaceCore) -> tuple[list[Region], str]:
    """The initial labeled regions and how they were chosen (``partition.initial_strategy``,
    :func:`activeseg.loop.selection.choose_initial`); TypiClust and MaxHerding pretrain first (the campaign's
    ``pretrain`` step, which round 1 then finds done) and pick from the pool's embeddings."""
    cfg = ws.cfg
    if initial_method(cfg, cfg.query.strategy) == "random":
        return initial_regions(ws.regions(), cfg.partition.initial_labeled, cfg.train.seed), "random"
    from activeseg.loop.selection import choose_initial  # PyTorch: only when a chosen start needs it

    return choose_initial(cfg, cfg.query.strategy, ws.regions(), cfg.train.seed, pool_embeddings(ws))


def populate(ws: WorkspaceCore, source: Path | None, admin: Actor, key: str | None = None) -> None:
    """Fill a prepared workspace: the access file (``admin`` its first admin, with the public ``key``;
    the ledger's first event), DVC, the dataset, validation, the pool, the initial labeled set;
    everything pushed, committed and tagged ``round-000``."""
    cfg = ws.cfg
    create_access(ws, admin, key)
    ws.dvc("init", "-q")
    ws.dvc("config", "core.analytics", "false")
    _import_dataset(ws, source)
    _register(ws)
    check_dataset(ws)
    write_pool(ws)
    first, method = initial_set(ws)
    folder = ws.root / "labels" / round_name(0)
    folder.mkdir(parents=True)
    for region in first:
        (folder / f"{region.id}.png").write_bytes(mask_png(ground_truth(ws.dataset, region), cfg.data.classes))
    regions = [RequestedRegion(**r.to_dict(), cost=None, score=None) for r in first]
    record = RoundRecord(round=0, initial=Initial(seed=cfg.train.seed, regions=regions, strategy=method))
    ws.records.save(record)
    state = save_state(ws, [(0, INITIAL_ANNOTATOR)])
    _add_remote(ws)
    ws.vcs.track("data", f"labels/{round_name(0)}")
    ws.vcs.stage_done("validate", "partition", *(["pretrain"] if method != "random" else []))
    ws.dvc("push", "-q")
    ws.ledger.export_jsonl(ws.root / "ledger.jsonl")
    ws.vcs.commit(f"init: dataset ({len(ws.dataset.stems)} images), frozen split, initial labeled set")
    record.labels_accepted = commit_labels(ws, record, INITIAL_ANNOTATOR, None, state)
    ws.records.save(record)
    ws.close(0, "round 0: initial labeled set")
