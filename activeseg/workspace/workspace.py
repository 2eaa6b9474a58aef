"""A campaign workspace: a git repository with DVC where a lab runs active-learning rounds by hand.

``Workspace.init`` creates it; every step is a method (the ``activeseg step ...`` commands, the stages
of ``dvc.yaml`` and, later, Prefect tasks call the same methods). Rounds are numbered from 1; round 0
is the initial labeled set made by ``init``. One round: :meth:`train`, :meth:`query` (publishes the
label request), labels arrive (:meth:`submit`, :meth:`ingest` or :meth:`simulate_labels`), then
:meth:`evaluate`, which ends the round in a git commit tagged ``round-NNN``.

Layout::

    workspace.json          where the remote is (no credentials)
    params.yaml, dvc.yaml   copied from the project's top-level files (with init's overrides)
    dvc.lock                stage hashes, committed with every round
    data/                   the imported dataset (data.dvc)
    split.json              the frozen split (git)
    validation/dataset.json GX result of the last dataset validation (git)
    pool/regions.json       the partition of the training pool (stage output)
    model/                  model.pt and train.json of the round's model (stage output)
    query/selection.json    the round's selection (stage output); pseudo/round-NNN.npz pseudo-labels
    metrics/evaluation.json test metrics of the round's model (git)
    labels/round-NNN/       accepted label increments, one .dvc file per round
    rounds/round-NNN/       record.json (what the round's steps did) and labels-validation.json (git)
    ledger.jsonl            export of the audit ledger (git); ledger.db is the SQLite ledger itself
                            (opening a workspace adds the exported events it lacks: a fresh clone)
    state/                  known masks (LabelState), rebuilt from the accepted labels (not versioned)
    mlflow/                 the MLflow SQLite store (not versioned: a lab points tracking.uri at its server)

Every step is idempotent and restartable: its outputs are written first and its entry in
``rounds/round-NNN/record.json`` last, so calling it again after it finished returns the recorded
result (no second ledger event, commit or upload), and calling it again after a crash completes it.
A step that finished for a round is not redone when parameters change: they apply from the next round.
Ledger events of a step carry a ``once_key``, so a repeated step never records them twice.

Under ``dvc repro`` (``--in-dvc``) the steps leave DVC and git to ``dvc repro``, and ``evaluate`` only
computes the metrics: ``activeseg step evaluate`` afterwards closes the round (push, commit, tag).

The remote is a local folder beside the workspace by default (``<name>-remote``), or
``s3://bucket/prefix`` with an endpoint; the label exchange lives at its root and DVC's storage under
``dvc/``. Credentials come from the environment only (see :mod:`activeseg.workspace.storage`): they are handed
to the ``dvc`` subprocess through its environment and never written anywhere.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import activeseg
from activeseg.core.config import Config, load_config, parse_override
from activeseg.core.data import Dataset, load_dataset, load_or_create_split, read_mask
from activeseg.workspace.exchange import (BatchEntry, batch_sha256, mask_png, publish_request, quarantine, read_folder_batch,
                                read_store_batch, round_prefix, upload_batch)
from activeseg.core.labels import LabelState
from activeseg.core.util import canonical_json, read_json, round_name, sha256_file, sha256_text, utc_now, write_json
from activeseg.metrics import METRICS
from activeseg.workspace.ledger import Ledger, VerifyResult, region_stem
from activeseg.loop.oracle import SIMULATED, ground_truth
from activeseg.core.partition import Region
from activeseg.core.pool import initial_regions, pool_regions
from activeseg.workspace.storage import ObjectStore, open_store, s3_credentials, split_s3_url
from activeseg.workspace.validation import ValidationFailed, ValidationReport, validate_dataset, validate_label_batch

PROJECT_ROOT = Path(activeseg.__file__).resolve().parents[1]
SETTINGS = "workspace.json"
INITIAL_ANNOTATOR = "initial-ground-truth"
GIT = ["git", "-c", "user.name=activeseg", "-c", "user.email=activeseg@localhost", "-c", "commit.gpgsign=false",
       "-c", "tag.gpgsign=false", "-c", "core.hooksPath=/dev/null"]
GITIGNORE = "/ledger.db*\n/mlflow/\n/tmp/\n/cache/\n/state/\n/.prefect/\n"


class WorkspaceError(ValueError):
    """A step cannot run (wrong order, missing input, failed subprocess); the message says why."""


class BatchRejected(ValueError):
    """A label batch failed validation or was rejected; it is in quarantine and nothing was applied."""

    def __init__(self, round_index: int, reasons: list[str], quarantine_at: str):
        self.round, self.reasons, self.quarantine = round_index, reasons, quarantine_at
        shown = "\n  ".join(reasons[:50]) + (f"\n  ... and {len(reasons) - 50} more" if len(reasons) > 50 else "")
        super().__init__(f"round {round_index}: label batch rejected, moved to {quarantine_at}:\n  {shown}")





def dvc_executable() -> str:
    """The ``dvc`` next to this Python (the project's virtual environment), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def subprocess_env() -> dict[str, str]:
    """This process's environment for ``dvc`` and ``git``: telemetry off, the venv's bin first on PATH
    (``dvc repro`` runs ``activeseg``), and S3 credentials under the names DVC reads."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    access, secret = s3_credentials()
    if access and not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = access, secret
    return env



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
class Remote:
    """Where the exchange and DVC's storage live: ``url`` is a folder (relative to the workspace) or
    ``s3://bucket/prefix``."""

    url: str
    endpoint: str | None = None
    region: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def store(self, root: Path) -> ObjectStore:
        return open_store(self.url if self.is_s3 else (root / self.url).resolve(), self.endpoint, self.region)

    def dvc_url(self) -> str:
        """DVC's storage: ``<remote>/dvc`` (``dvc remote add`` stores a folder relative to ``.dvc/``)."""
        return self.url.rstrip("/") + "/dvc" if self.is_s3 else os.path.join(self.url, "dvc")


class Workspace:
    """One campaign workspace; see the module docstring. ``actor`` names who runs the steps in the
    ledger (default: ``$ACTIVESEG_ACTOR`` or the user name)."""

    def __init__(self, root: Path, actor: str | None = None, in_dvc: bool = False):
        self.root = Path(root).resolve()
        settings_path = self.root / SETTINGS
        if not settings_path.is_file():
            raise WorkspaceError(f"{self.root}: not an activeseg workspace (no {SETTINGS}; "
                                 "create one with activeseg init)")
        self.settings = read_json(settings_path)
        self.remote = Remote(**self.settings["remote"])
        self.cfg: Config = load_config(self.root / "params.yaml")
        self.actor = actor or os.environ.get("ACTIVESEG_ACTOR") or getpass.getuser()
        self.in_dvc = in_dvc
        self.ledger = Ledger(self.root / "ledger.db")
        if (self.root / "ledger.jsonl").is_file():
            self.ledger.import_jsonl(self.root / "ledger.jsonl")
        self.store = self.remote.store(self.root)

    # -- creation ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, actor: str | None = None, in_dvc: bool = False) -> "Workspace":
        return cls(Path(root), actor, in_dvc)

    @staticmethod
    def find(start: str | Path = ".") -> Path:
        """The workspace containing ``start`` (it or a parent holds ``workspace.json``)."""
        start = Path(start).resolve()
        for folder in (start, *start.parents):
            if (folder / SETTINGS).is_file():
                return folder
        raise WorkspaceError(f"{start}: not inside an activeseg workspace (use --workspace DIR or activeseg init)")

    @classmethod
    def init(cls, root: str | Path, dataset: str | Path, classes: int | None = None, remote: str | None = None,
             endpoint: str | None = None, overrides: list[str] | tuple[str, ...] = (), params: Path | None = None,
             actor: str | None = None) -> "Workspace":
        """Create a workspace: git + DVC, params and dvc.yaml, the dataset imported, validated, tracked
        and pushed, the split frozen, the initial labeled set committed and tagged ``round-000``.

        ``dataset``: ``"synthetic"`` (generated from ``data.synthetic``) or a folder with images/ and
        masks/. ``remote``: a folder (default: ``<root>-remote`` beside the workspace) or
        ``s3://bucket/prefix`` with ``endpoint``. All or nothing: on failure the new folders are removed.
        """
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
        cfg = load_config(base, overrides)
        source = None if str(dataset) == "synthetic" else Path(dataset).resolve()
        if source is not None:
            report = validate_dataset(source, cfg.data.classes, cfg.partition.side)
            if not report.success:
                raise ValidationFailed(f"dataset {source}", report)
        settings = cls._remote_settings(root, remote, endpoint)
        remote_dir = None if settings.is_s3 else (root / settings.url).resolve()
        made = [p for p in (root, remote_dir) if p is not None and not p.exists()]
        inside = remote_dir is not None and remote_dir.is_relative_to(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_params(base, root / "params.yaml", overrides)
            shutil.copyfile(PROJECT_ROOT / "dvc.yaml", root / "dvc.yaml")
            (root / ".gitignore").write_text(GITIGNORE + (f"/{remote_dir.relative_to(root)}/\n" if inside else ""))
            write_json(root / SETTINGS, {"remote": dataclasses.asdict(settings), "created": utc_now(),
                                         "activeseg": activeseg.__version__})
            subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, capture_output=True)
            ws = cls(root, actor)
            ws._create(source)
            return ws
        except BaseException:
            for path in made if root in made else [*made, *root.iterdir()]:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()
            raise

    @staticmethod
    def _remote_settings(root: Path, remote: str | None, endpoint: str | None) -> Remote:
        if remote and remote.startswith("s3://"):
            split_s3_url(remote)
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            return Remote(remote.rstrip("/"), endpoint, region)
        if endpoint:
            raise WorkspaceError("--endpoint is only for an s3:// remote")
        folder = Path(remote).resolve() if remote else root.parent / f"{root.name}-remote"
        return Remote(os.path.relpath(folder, root))

    def _create(self, source: Path | None) -> None:
        cfg = self.cfg
        self.dvc("init", "-q")
        self.dvc("config", "core.analytics", "false")
        data = self.root / "data"
        if source is None:
            from activeseg.core.synthetic import synthesize

            s = cfg.data.synthetic
            synthesize(data, n=s.n, size=s.size, seed=s.seed, classes=cfg.data.classes)
        else:
            for part in ("images", "masks"):
                (data / part).mkdir(parents=True)
                for path in sorted((source / part).iterdir()):
                    if path.is_file() and not path.name.startswith("."):
                        shutil.copy2(path, data / part / path.name)
        dataset = self.dataset
        split = load_or_create_split(self.root / "split.json", dataset.stems, cfg.data.split.train,
                                     cfg.data.split.val, cfg.data.seed)
        digest = sha256_text(canonical_json([[s, sha256_file(dataset.samples[s].image_path),
                                              sha256_file(dataset.samples[s].mask_path)] for s in dataset.stems]))
        self.ledger.append("dataset_registered", 0, self.actor,
                           {"images": len(dataset.stems), "classes": cfg.data.classes, "source": cfg.data.dataset,
                            "content_sha256": digest}, once_key=digest)
        split_sha = sha256_file(self.root / "split.json")
        self.ledger.append("split_frozen", 0, self.actor, {"split": split, "split_sha256": split_sha},
                           once_key=split_sha)
        self._validate()
        self._partition()
        first = initial_regions(self.regions(), cfg.partition.initial_labeled, cfg.train.seed)
        folder = self.root / "labels" / round_name(0)
        folder.mkdir(parents=True)
        for region in first:
            (folder / f"{region.id}.png").write_bytes(mask_png(ground_truth(dataset, region), cfg.data.classes))
        record = {"round": 0, "initial": {"seed": cfg.train.seed, "regions": [
            {**r.to_dict(), "cost": None, "score": None} for r in first]}}
        self._save_record(0, record)
        state = self._save_state([(0, INITIAL_ANNOTATOR)])
        self.store.ensure()
        self.dvc("remote", "add", "-d", "origin", self.remote.dvc_url())
        if self.remote.endpoint:
            self.dvc("remote", "modify", "origin", "endpointurl", self.remote.endpoint)
        if self.remote.region:
            self.dvc("remote", "modify", "origin", "region", self.remote.region)
        self.dvc("add", "-q", "data", f"labels/{round_name(0)}")
        self.dvc("commit", "-f", "-q", "validate", "partition")
        self.dvc("push", "-q")
        self.ledger.export_jsonl(self.root / "ledger.jsonl")
        self._commit(f"init: dataset ({len(dataset.stems)} images), frozen split, initial labeled set")
        record["labels_accepted"] = self._commit_labels(0, INITIAL_ANNOTATOR, first, None, state)
        self._save_record(0, record)
        self._close(0, "round 0: initial labeled set")

    # -- subprocesses --------------------------------------------------------------------------------

    def _run(self, args: list[str]) -> str:
        done = subprocess.run(args, cwd=self.root, env=subprocess_env(), capture_output=True, text=True)
        if done.returncode != 0:
            name = Path(args[0]).name if args[0] != "git" else "git"
            shown = [a for a in args[1:] if not a.startswith("-c") and "=" not in a][:6]
            output = (done.stderr or done.stdout)[-2000:]
            raise WorkspaceError(f"{name} {' '.join(shown)} failed in {self.root}:\n{output}")
        return done.stdout

    def dvc(self, *args: str) -> str:
        """Run the ``dvc`` command line in the workspace (credentials through the environment only)."""
        return self._run([dvc_executable(), *args])

    def git(self, *args: str) -> str:
        """Run git in the workspace with the fixed activeseg identity."""
        return self._run([*GIT, *args])

    def _commit(self, message: str) -> str:
        """Commit everything that changed (if anything did); returns HEAD."""
        self.git("add", "-A")
        if self.git("status", "--porcelain").strip():
            self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def _tag_exists(self, round_index: int) -> bool:
        return bool(self.git("tag", "-l", round_name(round_index)).strip())

    def _tag_commit(self, round_index: int) -> str:
        return self.git("rev-list", "-n", "1", round_name(round_index)).strip()

    def _stage_done(self, *stages: str) -> None:
        """Record the stages' current deps and outs in dvc.lock (``dvc repro`` does it itself)."""
        if not self.in_dvc:
            self.dvc("commit", "-f", "-q", *stages)

    # -- records and data ----------------------------------------------------------------------------

    def _record_path(self, round_index: int) -> Path:
        return self.root / "rounds" / round_name(round_index) / "record.json"

    def record(self, round_index: int) -> dict[str, Any]:
        path = self._record_path(round_index)
        return read_json(path) if path.is_file() else {"round": round_index}

    def _save_record(self, round_index: int, record: dict[str, Any]) -> None:
        write_json(self._record_path(round_index), record)

    def current_round(self) -> int:
        """The round in progress (1-based): the last recorded round while it is open, else the next one."""
        rounds = [int(p.parent.name[6:]) for p in (self.root / "rounds").glob("round-*/record.json")]
        last = max(rounds, default=0)
        return last + 1 if self._tag_exists(last) else last

    def _resolve(self, round_index: int | None) -> int:
        n = self.current_round() if round_index is None else int(round_index)
        if n < 1:
            raise WorkspaceError("rounds start at 1 (round 0 is the initial labeled set made by init)")
        return n

    @cached_property
    def dataset(self) -> Dataset:
        return load_dataset(self.root / "data", self.cfg.data.classes)

    def split(self) -> dict[str, list[str]]:
        return read_json(self.root / "split.json")

    def regions(self) -> list[Region]:
        path = self.root / "pool" / "regions.json"
        if not path.is_file():
            raise WorkspaceError(f"{path}: missing (run activeseg step partition, or dvc pull)")
        return [Region.from_dict(d) for d in read_json(path)]

    def _requested(self, round_index: int) -> list[dict[str, Any]]:
        """The regions asked for in a round (round 0: the initial set)."""
        record = self.record(round_index)
        return record["initial"]["regions"] if round_index == 0 else record["queried"]["regions"]

    def _accepted(self) -> list[tuple[int, str]]:
        """(round, annotator) of every accepted label batch, in round order."""
        rounds = sorted(int(p.parent.name[6:]) for p in (self.root / "rounds").glob("round-*/record.json"))
        records = [self.record(n) for n in rounds]
        return [(r["round"], r["labels_accepted"]["annotator"]) for r in records if "labels_accepted" in r]

    def _build_state(self, accepted: list[tuple[int, str]]) -> LabelState:
        """Known masks from the accepted label files of the given rounds, in order, each round's
        pseudo-labels applied after its labels (as in the simulation)."""
        dataset, classes = self.dataset, self.cfg.data.classes
        shapes = {s: (dataset.samples[s].height, dataset.samples[s].width) for s in self.split()["train"]}
        state = LabelState.empty(shapes)
        for n, annotator in accepted:
            for item in self._requested(n):
                region = Region.from_dict(item)
                state.reveal(region, read_mask(self.root / "labels" / round_name(n) / f"{region.id}.png", classes),
                             n, annotator)
            pseudo = self.record(n).get("queried", {}).get("pseudo")
            if pseudo:
                from activeseg.loop.simulate import apply_pseudo

                with np.load(self.root / pseudo["file"]) as masks:
                    regions = [(Region.from_dict(p), masks[p["id"]]) for p in pseudo["regions"]]
                apply_pseudo(state, regions, pseudo["origin"], pseudo["replace"])
        return state

    def _save_state(self, accepted: list[tuple[int, str]]) -> LabelState:
        state = self._build_state(accepted)
        folder = self.root / "state"
        (folder / "source.json").unlink(missing_ok=True)
        state.save(folder)
        write_json(folder / "source.json", accepted)
        return state

    def label_state(self) -> LabelState:
        """The known masks after every accepted batch (``state/``, rebuilt when out of date)."""
        accepted = self._accepted()
        source = self.root / "state" / "source.json"
        if source.is_file() and [tuple(x) for x in read_json(source)] == accepted:
            return LabelState.load(self.root / "state")
        return self._save_state(accepted)

    def _tracker(self):
        from activeseg.model.tracking import Tracker

        t = self.cfg.tracking
        return Tracker(t.uri, t.experiment, self.root / "mlflow", enabled=t.mlflow)

    # -- steps ---------------------------------------------------------------------------------------

    def _validate(self) -> ValidationReport:
        frozen = self.ledger.last("split_frozen")
        queried = {region_stem(r) for e in self.ledger.events(type="queried") for r in e.data["regions"]}
        report = validate_dataset(self.root / "data", self.cfg.data.classes, self.cfg.partition.side, self.split(),
                                  split_intact=frozen is not None and frozen.data["split_sha256"] == sha256_file(
                                      self.root / "split.json"),
                                  queried_stems=queried)
        write_json(self.root / "validation" / "dataset.json", report.to_dict())
        if not report.success:
            raise ValidationFailed("dataset data/", report)
        return report

    def validate(self) -> dict[str, Any]:
        """Run the dataset suite on data/ with the frozen split; raises :class:`ValidationFailed`
        naming every file and expectation that failed."""
        self._validate()
        self._stage_done("validate")
        return {"success": True, "images": len(self.dataset.stems), "report": "validation/dataset.json"}

    def _partition(self) -> Path:
        path = self.root / "pool" / "regions.json"
        write_json(path, [r.to_dict() for r in pool_regions(self.dataset, self.split()["train"], self.cfg)])
        return path

    def partition(self) -> Path:
        """Write the training pool's candidate regions to pool/regions.json."""
        path = self._partition()
        self._stage_done("partition")
        return path

    def train(self, round: int | None = None) -> dict[str, Any]:
        """Train the round's model on every accepted label; returns {checkpoint, checkpoint_sha256,
        mlflow_run_id, val_dice, best_epoch, revealed_pixels, labeled_pixel_fraction}."""
        n = self._resolve(round)
        record = self.record(n)
        if "trained" in record:
            return record["trained"]
        current = self.current_round()
        if n != current:
            raise WorkspaceError(f"round {n} cannot start: the round in progress is {current}")
        params_sha = sha256_file(self.root / "params.yaml")
        self.ledger.append("round_started", n, self.actor, {"strategy": self.cfg.query.strategy,
                                                            "params_sha256": params_sha}, once_key="start")
        info_path = self.root / "model" / "train.json"
        info = read_json(info_path) if info_path.is_file() else None
        checkpoint = self.root / "model" / "model.pt"
        done = info and info["round"] == n and checkpoint.is_file()
        if not (done and sha256_file(checkpoint) == info["checkpoint_sha256"]):
            info = self._train(n, checkpoint)
            write_json(info_path, info)
        self._stage_done("train")
        record["trained"] = info
        self._save_record(n, record)
        return info

    def _train(self, n: int, checkpoint: Path) -> dict[str, Any]:
        import torch

        from activeseg.model.training import train_model

        cfg, state = self.cfg, self.label_state()
        previous = self.record(n - 1).get("trained", {}).get("checkpoint_sha256")
        init = None
        if cfg.train.mode == "finetune" and checkpoint.is_file() and sha256_file(checkpoint) == previous:
            init = torch.load(checkpoint, weights_only=True)["state_dict"]
        params = {**cfg.flat(), "round": n, "workspace": str(self.root)}
        with self._tracker().run(f"{round_name(n)}-train", params, {"activeseg.step": "train"}) as run:
            result = train_model(cfg, self.dataset, state, self.split()["val"], checkpoint.parent, run, init=init,
                                 seed=cfg.train.seed * 1000 + n, progress=False)
        return {"round": n, "checkpoint": "model/model.pt", "checkpoint_sha256": sha256_file(result.checkpoint),
                "mlflow_run_id": result.run_id, "val_dice": result.val_dice, "best_epoch": result.best_epoch,
                "revealed_pixels": state.revealed_pixels(), "labeled_pixel_fraction": state.revealed_fraction()}

    def query(self, round: int | None = None) -> dict[str, Any]:
        """Select the round's regions with the trained model and publish the label request."""
        n = self._resolve(round)
        record = self.record(n)
        if "queried" in record:
            return record["queried"]
        if "trained" not in record:
            raise WorkspaceError(f"round {n}: no trained model yet (run activeseg step train)")
        trained = record["trained"]
        model_sha = trained["checkpoint_sha256"]
        checkpoint = self.root / "model" / "model.pt"
        if not checkpoint.is_file() or sha256_file(checkpoint) != model_sha:
            raise WorkspaceError(f"{checkpoint}: not the model trained in round {n} (its hash differs; dvc checkout?)")
        path = self.root / "query" / "selection.json"
        selection = read_json(path) if path.is_file() else None
        if not (selection and (selection["round"], selection["checkpoint_sha256"]) == (n, model_sha)):
            selection = self._select(n, trained, checkpoint)
            write_json(path, selection)
        ids = [r["id"] for r in selection["regions"]]
        meta = {"strategy": selection["strategy"], "created": selection["created"], "classes": self.cfg.data.classes,
                "checkpoint_sha256": model_sha,
                "masks": "one PNG per region, named <id>.png, sized label_size, "
                         + ("values 0/255 (or 0/1)" if self.cfg.data.classes == 2 else "values = class ids")}
        manifest = publish_request(self.store, n, selection["regions"], self.dataset, meta)
        manifest_sha = sha256_text(canonical_json(manifest))
        self.ledger.append("queried", n, self.actor, {
            "regions": ids, "scores": [r["score"] for r in selection["regions"]],
            "costs": [r["cost"] for r in selection["regions"]], "strategy": selection["strategy"],
            "options": selection["options"], "budget": selection["budget"],
            "checkpoint_sha256": model_sha, "mlflow_run_id": trained["mlflow_run_id"]},
            once_key=model_sha)
        if selection["pseudo"]:
            self.ledger.append("pseudo_labeled", n, self.actor, {
                "regions": [p["id"] for p in selection["pseudo"]["regions"]], "model": model_sha,
                "mlflow_run_id": trained["mlflow_run_id"], "origin": selection["pseudo"]["origin"],
                "replace": selection["pseudo"]["replace"]}, once_key=model_sha)
        request = round_prefix("requests", n)
        self.ledger.append("request_published", n, self.actor, {
            "regions": ids, "store": self.store.url, "manifest": request + "manifest.json",
            "manifest_sha256": manifest_sha}, once_key=manifest_sha)
        self._stage_done("query")
        record["queried"] = {**selection, "request": f"{self.store.url}/{request}", "manifest_sha256": manifest_sha}
        self._save_record(n, record)
        return record["queried"]

    def _select(self, n: int, trained: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
        from activeseg.loop.simulate import select_regions
        from activeseg.strategies import get_strategy

        cfg = self.cfg
        name = cfg.query.strategy
        selection, ctx = select_regions(cfg, name, self.dataset, self.split(), self.label_state(), self.regions(),
                                        checkpoint, n, cfg.train.seed, self.root / "cache",
                                        model_id=trained["checkpoint_sha256"])
        if not selection.indices:
            raise WorkspaceError(f"round {n}: nothing left to query (every region of the pool is labeled)")
        picked = [{**ctx.candidates[i].to_dict(), "cost": c, "score": s}
                  for i, s, c in zip(selection.indices, selection.scores, selection.costs)]
        pseudo = None
        if selection.pseudo:
            file = f"pseudo/{round_name(n)}.npz"
            (self.root / "pseudo").mkdir(exist_ok=True)
            np.savez_compressed(self.root / file, **{region.id: mask for region, mask in selection.pseudo})
            pseudo = {"file": file, "regions": [region.to_dict() for region, _ in selection.pseudo],
                      "origin": selection.pseudo_origin or round_name(n), "replace": selection.replace_pseudo}
        options = dataclasses.asdict(get_strategy(name, cfg.query.options.get(name)).options)
        return {"round": n, "created": utc_now(), "strategy": name, "options": options, "budget": ctx.budget,
                "spent": selection.spent, "checkpoint_sha256": trained["checkpoint_sha256"],
                "mlflow_run_id": trained["mlflow_run_id"], "regions": picked, "pseudo": pseudo}

    def _label_sizes(self, round_index: int) -> dict[str, tuple[int, int]]:
        """Requested id -> (h, w) of the region's in-image part: the size of the mask to upload."""
        sizes = {}
        for item in self._requested(round_index):
            region = Region.from_dict(item)
            sample = self.dataset.samples[region.stem]
            ys, xs = region.clipped(sample.height, sample.width)
            sizes[region.id] = (ys.stop - ys.start, xs.stop - xs.start)
        return sizes

    def ingest(self, round: int | None = None, annotator: str | None = None,
               source: Path | None = None) -> dict[str, Any]:
        """Take a label batch in, from ``source`` (a local folder) or else from ``labels/round-NNN/`` in
        the store. The whole batch is validated first. Accepted: written to labels/, tracked by DVC,
        pushed, committed, the known masks updated. Otherwise it is quarantined, the ledger records the
        rejection, nothing is applied, and :class:`BatchRejected` is raised with the reasons.
        """
        n = self._resolve(round)
        record = self.record(n)
        if "queried" not in record:
            raise WorkspaceError(f"round {n}: no label request was published (run activeseg step query)")
        cap = self.cfg.oracle.max_file_bytes
        entries = read_folder_batch(source, cap) if source is not None else read_store_batch(self.store, n, cap)
        accepted = record.get("labels_accepted")
        if not entries:
            if accepted and source is None:
                return accepted
            where = source if source is not None else f"{self.store.url}/{round_prefix('labels', n)}"
            raise WorkspaceError(f"round {n}: no label batch in {where}")
        digest = batch_sha256(entries)
        if accepted and accepted["batch_sha256"] == digest:
            return accepted
        annotator = annotator or "unknown"
        self.ledger.append("labels_received", n, annotator, {
            "annotator": annotator, "batch_sha256": digest, "files": len(entries),
            "source": "folder" if source is not None else "store"}, once_key=digest)
        report = validate_label_batch(entries, self._label_sizes(n), self.cfg.data.classes,
                                      self.cfg.oracle.allow_empty_masks, cap, n, already_accepted=accepted is not None)
        if not report.success:
            prefix = self._quarantine(n, entries, digest, annotator, report.reasons, "validation", source is None,
                                      report.to_dict())
            raise BatchRejected(n, report.reasons, f"{self.store.url}/{prefix}")
        return self._accept(n, record, entries, digest, annotator, report, uploaded=source is None)

    def _quarantine(self, n: int, entries: list[BatchEntry], digest: str, annotator: str | None, reasons: list[str],
                    by: str, from_store: bool, extra: dict[str, Any]) -> str:
        """Move a batch to quarantine with its report, restore an accepted batch it displaced, and
        record the rejection; returns the quarantine prefix."""
        prefix = quarantine(self.store, n, entries, {"annotator": annotator, "batch_sha256": digest,
                                                     "rejected_by": by, "reasons": reasons, **extra}, from_store)
        accepted = self.record(n).get("labels_accepted")
        if accepted and from_store:  # a second batch for an accepted round: the accepted one goes back
            folder = self.root / "labels" / round_name(n)
            upload_batch(self.store, n, [BatchEntry(p.name, "file", p.stat().st_size, p.read_bytes())
                                         for p in sorted(folder.glob("*.png"))])
        self.ledger.append("batch_rejected", n, by, {"annotator": annotator, "batch_sha256": digest,
                                                     "reasons": reasons, "quarantine": prefix, "by": by})
        return prefix

    def _accept(self, n: int, record: dict[str, Any], entries: list[BatchEntry], digest: str, annotator: str,
                report: ValidationReport, uploaded: bool) -> dict[str, Any]:
        folder = self.root / "labels" / round_name(n)
        staging = self.root / "tmp" / f"labels-{round_name(n)}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for entry in entries:
            (staging / entry.name).write_bytes(entry.data)
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
        if not uploaded:
            upload_batch(self.store, n, entries)
        write_json(self.root / "rounds" / round_name(n) / "labels-validation.json", report.to_dict())
        state = self._save_state(self._accepted() + [(n, annotator)])
        regions = [Region.from_dict(r) for r in self._requested(n)]
        result = self._commit_labels(n, annotator, regions, digest, state)
        record["labels_accepted"] = result
        self._save_record(n, record)
        return result

    def _commit_labels(self, n: int, annotator: str, regions: list[Region], digest: str | None,
                       state: LabelState) -> dict[str, Any]:
        """Track, push and commit a round's label files (and pseudo-labels); ledger labels_committed."""
        targets = [f"labels/{round_name(n)}"]
        pseudo = self.record(n).get("queried", {}).get("pseudo")
        if pseudo:
            targets.append(pseudo["file"])
        if n > 0:
            self.dvc("add", "-q", *targets)
            self.dvc("push", "-q", *targets)
            self.ledger.export_jsonl(self.root / "ledger.jsonl")
            self._commit(f"round {n}: labels from {annotator} ({len(regions)} masks, batch {digest[:12]})")
        commit = self.git("log", "-1", "--format=%H", "--", f"{targets[0]}.dvc").strip()
        files = {f"{targets[0]}/{r.id}.png": sha256_file(self.root / targets[0] / f"{r.id}.png") for r in regions}
        hashes = {t: yaml.safe_load((self.root / f"{t}.dvc").read_text())["outs"][0]["md5"] for t in targets}
        revealed = sum(h["cost"] for h in state.history if h["round"] == n)
        event = self.ledger.append("labels_committed", n, annotator, {
            "annotator": annotator, "regions": [r.id for r in regions], "files": files, "dvc": hashes,
            "commit": commit, "batch_sha256": digest, "revealed_pixels": revealed}, once_key=digest or "initial")
        return {"round": n, "annotator": annotator, "batch_sha256": digest, "files": len(files), "commit": commit,
                "revealed_pixels": revealed, "known_pixel_fraction": state.revealed_fraction(), "time": event.time}

    def submit(self, round: int | None, folder: str | Path, annotator: str) -> dict[str, Any]:
        """Hand in a folder of masks as ``annotator``: validated whole, then uploaded to
        ``labels/round-NNN/`` and ingested (or quarantined with :class:`BatchRejected`)."""
        if not annotator:
            raise WorkspaceError("an annotator name is required")
        return self.ingest(round, annotator, source=Path(folder))

    def simulate_labels(self, round: int | None = None) -> dict[str, Any]:
        """Answer the round's request from the ground truth as ``simulated-oracle``, through :meth:`submit`."""
        n = self._resolve(round)
        record = self.record(n)
        if "labels_accepted" in record:
            return record["labels_accepted"]
        if "queried" not in record:
            raise WorkspaceError(f"round {n}: no label request was published (run activeseg step query)")
        (self.root / "tmp").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root / "tmp") as folder:
            for item in record["queried"]["regions"]:
                region = Region.from_dict(item)
                mask = ground_truth(self.dataset, region)
                (Path(folder) / f"{region.id}.png").write_bytes(mask_png(mask, self.cfg.data.classes))
            return self.submit(n, folder, SIMULATED)

    def reject(self, round: int | None, by: str, reason: str) -> dict[str, Any]:
        """Send the batch waiting in ``labels/round-NNN/`` (not yet accepted) to quarantine with the
        reason; the request stays open."""
        n = self._resolve(round)
        record = self.record(n)
        if "labels_accepted" in record:
            raise WorkspaceError(f"round {n}: batch {record['labels_accepted']['batch_sha256'][:12]} was already "
                                 "accepted; there is nothing to reject")
        entries = read_store_batch(self.store, n, self.cfg.oracle.max_file_bytes)
        reasons = [f"rejected by {by}: {reason}"]
        if not entries:
            done = [e for e in self.ledger.events(type="batch_rejected", round=n) if e.data["reasons"] == reasons]
            if done:
                return {"round": n, "batch_sha256": done[-1].data["batch_sha256"], "by": by, "reason": reason,
                        "quarantine": f"{self.store.url}/{done[-1].data['quarantine']}"}
            where = f"{self.store.url}/{round_prefix('labels', n)}"
            raise WorkspaceError(f"round {n}: no uploaded batch in {where} to reject")
        digest = batch_sha256(entries)
        prefix = self._quarantine(n, entries, digest, None, reasons, by, True, {"reason": reason})
        return {"round": n, "batch_sha256": digest, "by": by, "reason": reason,
                "quarantine": f"{self.store.url}/{prefix}"}

    def evaluate(self, round: int | None = None) -> dict[str, Any]:
        """Test metrics of the round's model; ledger round_evaluated; then the round is closed: DVC
        push, git commit of dvc.lock, params, records and the ledger export, tag ``round-NNN``."""
        n = self._resolve(round)
        record = self.record(n)
        if self._tag_exists(n):
            return {**record["evaluated"], "commit": self._tag_commit(n)}
        if "trained" not in record:
            raise WorkspaceError(f"round {n}: no trained model yet (run activeseg step train)")
        if "labels_accepted" not in record and not self.in_dvc:
            raise WorkspaceError(f"round {n}: no accepted label batch yet (activeseg labels submit|ingest|simulate)")
        trained = record["trained"]
        path = self.root / "metrics" / "evaluation.json"
        metrics = read_json(path) if path.is_file() else None
        if not (metrics and metrics["round"] == n and metrics["checkpoint_sha256"] == trained["checkpoint_sha256"]):
            metrics = self._evaluate(n, trained)
            write_json(path, metrics)
        self.ledger.append("round_evaluated", n, self.actor, {
            "metrics": metrics["mean"], "split": metrics["split"], "checkpoint_sha256": metrics["checkpoint_sha256"],
            "labeled_pixel_fraction": trained["labeled_pixel_fraction"]}, once_key=metrics["checkpoint_sha256"])
        result = {"round": n, "metrics": metrics["mean"], "split": metrics["split"],
                  "checkpoint_sha256": metrics["checkpoint_sha256"], "mlflow_run_id": metrics["mlflow_run_id"],
                  "labeled_pixel_fraction": trained["labeled_pixel_fraction"]}
        if self.in_dvc:
            return result
        self._stage_done("evaluate")
        self.dvc("push", "-q", "partition", "train", "query")
        record["evaluated"] = result
        self._save_record(n, record)
        dice = metrics["mean"]["dice"]
        return {**result, "commit": self._close(n, f"round {n}: evaluated, {metrics['split']} dice {dice:.4f}")}

    def _evaluate(self, n: int, trained: dict[str, Any]) -> dict[str, Any]:
        from activeseg.model.evaluation import evaluate_model
        from activeseg.model.network import load_checkpoint, pick_device

        part = self.cfg.evaluate.split
        device = pick_device(self.cfg.train.device)
        model, _ = load_checkpoint(self.root / "model" / "model.pt", device)
        params = {"round": n, "checkpoint_sha256": trained["checkpoint_sha256"], "split": part,
                  "train_run_id": trained["mlflow_run_id"]}
        with self._tracker().run(f"{round_name(n)}-evaluate", params, {"activeseg.step": "evaluate"}) as run:
            result = evaluate_model(model, self.dataset, self.split()[part], device)
            run.log_metrics({f"{part}_{m}": result["mean"][m] for m in METRICS})
            run.log_metrics({"labeled_pixel_fraction": trained["labeled_pixel_fraction"]})
        return {"round": n, "split": part, "checkpoint_sha256": trained["checkpoint_sha256"],
                "mlflow_run_id": run.run_id, **result}

    def _close(self, n: int, message: str) -> str:
        """Export the ledger, commit, tag ``round-NNN``; returns the tagged commit."""
        self.ledger.export_jsonl(self.root / "ledger.jsonl")
        commit = self._commit(message)
        if not self._tag_exists(n):
            self.git("tag", "-a", round_name(n), "-m", message)
        return commit

    # -- status and audit ----------------------------------------------------------------------------

    def round_status(self, round: int | None = None) -> dict[str, Any]:
        """Which steps of a round are done, from its record on disk (and its tag)."""
        n = self.current_round() if round is None else int(round)
        record = self.record(n)
        return {"round": n, "trained": "trained" in record, "queried": "queried" in record,
                "labels_accepted": "labels_accepted" in record,
                "evaluated": "evaluated" in record and self._tag_exists(n),
                "rejected_batches": len(self.ledger.events(type="batch_rejected", round=n))}

    def pending(self) -> list[dict[str, Any]]:
        """Open label requests: queried rounds without an accepted batch."""
        found = []
        for path in sorted((self.root / "rounds").glob("round-*/record.json")):
            record = read_json(path)
            if "queried" in record and "labels_accepted" not in record:
                n = record["round"]
                found.append({"round": n, "regions": len(record["queried"]["regions"]),
                              "request": record["queried"]["request"],
                              "uploaded": len(self.store.list(round_prefix("labels", n))),
                              "rejected_batches": len(self.ledger.events(type="batch_rejected", round=n))})
        return found

    def verify(self) -> VerifyResult:
        """The ledger's hash chain, its JSON Lines export, and every committed label file against its hash."""
        result = self.ledger.verify()
        export = self.root / "ledger.jsonl"
        if result.ok and export.is_file():
            result = self.ledger.check_export(export)
        if not result.ok:
            return result
        checked = 0
        for event in self.ledger.events(type="labels_committed"):
            where = f"event {event.seq} (labels_committed, round {event.round})"
            for name, digest in event.data["files"].items():
                path = self.root / name
                if not path.is_file():
                    return VerifyResult(False, checked, f"{where}: {name} is missing (dvc pull?)", event.seq)
                if sha256_file(path) != digest:
                    return VerifyResult(False, checked, f"{where}: {name} no longer matches its recorded hash",
                                        event.seq)
                checked += 1
        events = len(self.ledger.events())
        return VerifyResult(True, events, f"{events} events, chain intact; {checked} committed label files match")

