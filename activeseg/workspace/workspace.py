"""A campaign workspace: a git repository with DVC where a lab runs active-learning rounds by hand.

``Workspace.init`` creates it; every step is a method (the ``activeseg step ...`` commands, the stages
of ``dvc.yaml`` and the Prefect tasks call the same methods). The class is a facade: its state is
:class:`~activeseg.workspace.base.WorkspaceCore` (git and DVC in :mod:`.vcs`, typed round records in
:mod:`.records`), the work is done by :mod:`.creation` (init), :mod:`.steps`, :mod:`.querying` (the query),
:mod:`.exchange.intake` (labels in, quarantine), :mod:`.state` (known masks) and :mod:`.audit` (status, pending,
verify, learning curve).

Rounds are numbered from 1; round 0 is the initial labeled set made by ``init``. One round: :meth:`pretrain`
(once per campaign), :meth:`train`, :meth:`query` (publishes the
label request), labels arrive (:meth:`submit`, :meth:`ingest` or :meth:`simulate_labels`: staged) and
are approved (:meth:`approve`: taken in) or rejected (:meth:`reject`), then :meth:`evaluate`, which
ends the round in a git commit tagged ``round-NNN``.

Layout::

    workspace.json          where the remote is (no credentials)
    params.yaml, dvc.yaml   copied from the project's top-level files (with init's overrides)
    dvc.lock                stage hashes, committed with every round
    data/                   the imported dataset (data.dvc)
    split.json              the frozen split (git)
    validation/dataset.json GX result of the last dataset validation (git)
    pool/regions.json       the partition of the training pool (stage output)
    pretrain/               model.pt and pretrain.json: the network pretrained on the pool (stage output)
    model/                  model.pt and train.json of the round's model (stage output)
    query/selection.json    the round's selection (stage output); pseudo/round-NNN.npz pseudo-labels
    query/maps/round-NNN.npz  the asking model's uncertainty and prediction around each queried region
    metrics/evaluation.json test metrics of the round's model (git)
    labels/round-NNN/       accepted label increments, one .dvc file per round
    labels/revoked.json     revoked labels (round, region ids, by, reason), never used for training (git)
    rounds/round-NNN/       record.json (what the round's steps did) and labels-validation.json (git)
    ledger.jsonl            export of the audit ledger (git); ledger.db is the SQLite ledger itself
                            (opening a workspace adds the exported events it lacks: a fresh clone)
    state/                  known masks (LabelState), rebuilt from the accepted labels (not versioned)
    report.html             the campaign report (activeseg.report; written by the evaluate task, not versioned)
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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from activeseg.core.labels import LabelState
from activeseg.workspace import audit, pretraining, querying, state, steps
from activeseg.workspace.base import SETTINGS, WorkspaceCore
from activeseg.workspace.creation import all_or_nothing, plan, populate, prepare
from activeseg.workspace.errors import ApprovalRefused, BatchRejected, WorkspaceError
from activeseg.workspace import access, identity
from activeseg.workspace.access import Access, check_name, os_user
from activeseg.workspace.exchange import intake, revocation
from activeseg.workspace.identity import Actor, Presigned
from activeseg.workspace.identity import actor as identity_actor
from activeseg.workspace.ledger import VerifyResult

__all__ = ["BatchRejected", "Workspace", "WorkspaceError"]


class Workspace(WorkspaceCore):
    """One campaign workspace (see the module docstring): the steps, label intake and audit as methods.
    Its state (``root``, ``cfg``, ``ledger``, ``store``, ``vcs``, ``records``, ``dataset``...) is
    :class:`WorkspaceCore`'s; the work is done in :mod:`.steps`, :mod:`.exchange.intake`, :mod:`.state`,
    :mod:`.audit` and :mod:`.creation`. Results are JSON-able dicts (a step's record entry)."""

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
             actor: str | None = None, admin: str | None = None, key: str | None = None,
             sign: str | None = None) -> "Workspace":
        """Create a workspace: git + DVC, params and dvc.yaml, the dataset imported, validated, tracked
        and pushed, the split frozen, the initial labeled set committed and tagged ``round-000``.

        ``dataset``: ``"synthetic"`` (generated from ``data.synthetic``) or a folder with images/ and
        masks/. ``remote``: a folder (default: ``<root>-remote`` beside the workspace) or
        ``s3://bucket/prefix`` with ``endpoint``. ``admin`` (default: the OS user name), with the public
        ``key``: the first admin of the access file (``access.yaml``), its creation signed with ``sign``
        (see :class:`~activeseg.workspace.identity.Actor`). All or nothing: on failure the new folders
        are removed.
        """
        checked = plan(root, dataset, classes, remote, endpoint, overrides, params)
        first = Actor(check_name(admin or os_user()), sign)
        with all_or_nothing(checked):
            prepare(checked)
            ws = cls(checked.root, actor)
            populate(ws, checked.source, first, key)
        return ws

    # -- state ---------------------------------------------------------------------------------------

    def label_state(self) -> LabelState:
        """The known masks after every accepted batch (``state/``, rebuilt when out of date)."""
        return state.label_state(self)

    # -- steps ---------------------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        """Run the dataset suite on data/ with the frozen split; raises :class:`ValidationFailed`
        naming every file and what is wrong with it."""
        return steps.validate(self)

    def partition(self) -> Path:
        """Write the training pool's candidate regions to pool/regions.json."""
        return steps.partition(self)

    def pretrain(self) -> dict[str, Any] | None:
        """Pretrain the network on the pool (self-supervised), or return the recorded result while its inputs'
        hash is unchanged; None with ``pretrain.enabled`` false."""
        pretrained = pretraining.pretrain(self)
        return pretrained.model_dump() if pretrained else None

    def train(self, round_number: int | None = None) -> dict[str, Any]:
        """Train the round's model on every accepted label; returns {checkpoint, checkpoint_sha256,
        mlflow_run_id, val_dice, best_epoch, revealed_pixels, labeled_pixel_fraction, train_steps, stop_epoch,
        train_seconds, ...}."""
        return steps.train(self, round_number).model_dump()

    def query(self, round_number: int | None = None) -> dict[str, Any]:
        """Select the round's regions with the trained model and publish the label request."""
        return querying.query(self, round_number).model_dump()

    def evaluate(self, round_number: int | None = None) -> dict[str, Any]:
        """Test metrics of the round's model; ledger round_evaluated; then the round is closed: DVC
        push, git commit of dvc.lock, params, records and the ledger export, tag ``round-NNN``."""
        return steps.evaluate(self, round_number)

    # -- labels --------------------------------------------------------------------------------------

    def person(self, name: str, sign: str | None = None, presigned: Presigned | None = None) -> Actor:
        """Who ``name`` stands for in a decision, signing with ``sign`` (see :mod:`.identity`)."""
        return identity_actor(self.cfg, name, sign, presigned)

    def ingest(self, round_number: int | None = None, annotator: str | None = None, source: Path | None = None,
               replace: bool = False, sign: str | None = None) -> dict[str, Any]:
        """Stage a label batch from ``source`` (a folder) or the store for approval, handed in by
        ``annotator`` (default: the OS user; signed with ``sign``), or quarantine it (:class:`BatchRejected`),
        see :func:`.exchange.intake.ingest`."""
        by = self.person(annotator or os_user(), sign)
        return intake.ingest(self, round_number, by, source, replace).model_dump()

    def submit(self, round_number: int | None, folder: str | Path, annotator: str,
               replace: bool = False, sign: str | None = None) -> dict[str, Any]:
        """Hand in a folder of masks as ``annotator`` (signed with ``sign``): validated whole, then uploaded
        to ``labels/round-NNN/`` and staged for approval (or quarantined with :class:`BatchRejected`)."""
        return intake.submit(self, round_number, folder, self.person(annotator, sign), replace).model_dump()

    def simulate_labels(self, round_number: int | None = None) -> dict[str, Any]:
        """Answer the round's request from the ground truth as ``simulated-oracle``, through :meth:`submit`."""
        return intake.simulate_labels(self, round_number).model_dump()

    def approve(self, round_number: int | None, by: str | Actor, comment: str = "", batch: str | None = None,
                flow_run_id: str | None = None, sign: str | None = None) -> dict[str, Any]:
        """Take the staged batch in (labels/, DVC, commit, known masks), approved by ``by`` (a name, signing
        with ``sign``, or an :class:`Actor`); see :func:`.exchange.intake.approve`."""
        by = by if isinstance(by, Actor) else self.person(by, sign)
        return intake.approve(self, round_number, by, comment, batch, flow_run_id).model_dump()

    def reject(self, round_number: int | None, by: str, reason: str, sign: str | None = None) -> dict[str, Any]:
        """Send the batch waiting in ``labels/round-NNN/`` (staged or uploaded, not yet approved) to
        quarantine with the reason, rejected by ``by`` (signing with ``sign``); the request stays open."""
        return intake.reject(self, round_number, self.person(by, sign), reason)

    def revoke(self, round_number: int, by: str, reason: str, regions: list[str] | None = None,
               sign: str | None = None) -> dict[str, Any]:
        """Revoke an accepted batch of round ``round_number`` (or its ``regions``) as ``by`` (signing with
        ``sign``) with ``reason``: ledger ``labels_revoked``, ``labels/revoked.json`` and a commit; the labels
        leave the known masks and the regions go back to the open request or the pool; see
        :func:`.exchange.revocation.revoke`."""
        return revocation.revoke(self, round_number, self.person(by, sign), reason, regions)

    # -- access --------------------------------------------------------------------------------------

    def access(self) -> Access:
        """The access file (``access.yaml``): who works here, in which roles, with which keys."""
        return access.load(self.root)

    def change_access(self, by: str, person: str, change: str, edit: Callable[[Access], Access],
                      sign: str | None = None) -> Access:
        """Change the access file by ``edit`` as the admin ``by`` (signing with ``sign``); recorded and
        committed, see :func:`.identity.change_access`."""
        return identity.change_access(self, self.person(by, sign), person, change, edit)

    # -- status and audit ----------------------------------------------------------------------------

    def round_status(self, round_number: int | None = None) -> dict[str, Any]:
        """Which steps of a round are done, from its record on disk (and its tag)."""
        return audit.round_status(self, round_number)

    def pending(self) -> list[dict[str, Any]]:
        """Open label requests: queried rounds without an accepted batch."""
        return audit.pending(self)

    def verify(self) -> VerifyResult:
        """The ledger's hash chain, its JSON Lines export, and every committed label file against its hash."""
        return audit.verify(self)
