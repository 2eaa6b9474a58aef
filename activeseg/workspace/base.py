"""What every part of a workspace shares: its folder, settings, params, ledger, object store, git and
DVC, round records and dataset (:class:`WorkspaceCore`), and :func:`round_step`, the preamble of a step."""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from activeseg.core.config import Config, load_config
from activeseg.core.data import Dataset, load_dataset
from activeseg.core.partition import Region
from activeseg.core.util import campaign_name, read_json
from activeseg.workspace.errors import WorkspaceError
from activeseg.workspace.ledger import Ledger
from activeseg.workspace.records import Entry, Records, RoundRecord
from activeseg.workspace.storage import Retry
from activeseg.workspace.vcs import Remote, Vcs

if TYPE_CHECKING:  # the model layer (PyTorch) loads only in the steps that need it
    from activeseg.model.pool_scoring import ShardRunner

SETTINGS = "workspace.json"


class WorkspaceCore:
    """An opened workspace's state; ``actor`` names who runs the steps in the ledger (default:
    ``$ACTIVESEG_ACTOR`` or the user name). ``run_shards``: how the query step scores the pool's shards
    (None: in this process; the query task sets a Dask one with ``query.cluster``)."""

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
        self.run_shards: ShardRunner | None = None
        retry = Retry.of(self.cfg.storage)
        self.vcs = Vcs(self.root, in_dvc, retry, self.remote.dvc_url())
        self.records = Records(self.root)
        self.ledger = Ledger(self.root / "ledger.db")
        if (self.root / "ledger.jsonl").is_file():
            self.ledger.import_jsonl(self.root / "ledger.jsonl")
        self.store = self.remote.store(self.root, retry)

    def dvc(self, *args: str) -> str:
        """Run the ``dvc`` command line in the workspace (credentials through the environment only)."""
        return self.vcs.dvc(*args)

    def git(self, *args: str) -> str:
        """Run git in the workspace with the fixed activeseg identity."""
        return self.vcs.git(*args)

    def record(self, round_number: int) -> RoundRecord:
        """What the round's steps recorded (no entry for a step that has not finished)."""
        return self.records.read(round_number)

    def current_round(self) -> int:
        """The round in progress (1-based): the last recorded round while it is open, else the next one."""
        last = max(self.records.numbers(), default=0)
        return last + 1 if self.vcs.tag_exists(last) else last

    def resolve(self, round_number: int | None) -> int:
        """The round a step runs for: ``round_number``, by default the round in progress (never 0)."""
        n = self.current_round() if round_number is None else int(round_number)
        if n < 1:
            raise WorkspaceError("rounds start at 1 (round 0 is the initial labeled set made by init)")
        return n

    def close(self, round_number: int, message: str) -> str:
        """Export the ledger, commit, tag ``round-NNN``; returns the tagged commit."""
        self.ledger.export_jsonl(self.root / "ledger.jsonl")
        commit = self.vcs.commit(message)
        self.vcs.tag(round_number, message)
        return commit

    @cached_property
    def dataset(self) -> Dataset:
        return load_dataset(self.root / "data", self.cfg.data.classes, self.cfg.data.slides)

    def split(self) -> dict[str, list[str]]:
        return read_json(self.root / "split.json")

    def regions(self) -> list[Region]:
        path = self.root / "pool" / "regions.json"
        if not path.is_file():
            raise WorkspaceError(f"{path}: missing (run activeseg step partition, or dvc pull)")
        return [Region.from_dict(d) for d in read_json(path)]

    def tracker(self):
        """The MLflow tracker of ``tracking`` in params (a local store under mlflow/ by default); on a shared
        tracking server the campaign's experiment is ``<tracking.experiment>-<campaign>``
        (:func:`activeseg.model.tracking.experiment_name`)."""
        from activeseg.model.tracking import Tracker

        t = self.cfg.tracking
        return Tracker(t.uri, t.experiment, self.root / "mlflow", enabled=t.mlflow, campaign=campaign_name(self.root))


E = TypeVar("E", bound=Entry)


def round_step(entry: str) -> Callable[[Callable[[WorkspaceCore, RoundRecord], E]],
                                       Callable[[WorkspaceCore, int | None], E]]:
    """A step that fills the record entry ``entry``: the decorated ``step(ws, record)`` gets the record
    of the resolved round (default: the round in progress); when the entry is there already the step
    is not run again and the recorded entry is returned; else the step's result is recorded, last."""

    def decorate(step: Callable[[WorkspaceCore, RoundRecord], E]) -> Callable[[WorkspaceCore, int | None], E]:
        @functools.wraps(step)
        def run(ws: WorkspaceCore, round_number: int | None = None) -> E:
            record = ws.record(ws.resolve(round_number))
            done = getattr(record, entry)
            if done is not None:
                return done
            result = step(ws, record)
            setattr(record, entry, result)
            ws.records.save(record)
            return result

        return run

    return decorate
