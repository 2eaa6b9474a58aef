"""MLflow tracking through an explicit client (no global MLflow state).

Embedded default: a SQLite store ``<out>/mlflow.db`` with artifacts under ``<out>/mlartifacts``; any
other tracking URI (a lab's MLflow server) works the same way. ``tracking.mlflow: false`` gives a
tracker that records nothing.

The model registry (:class:`ModelRegistry`): one registered model per campaign, named after the
campaign's experiment (``tracking.experiment``: a workspace's own store holds one campaign; campaigns
sharing a lab's server already need distinct experiment names for their runs). One version per round
(its source: the ``checkpoint/`` artifacts of the round's train run), tagged with the round, the
checkpoint hash, the workspace commit, the label batches it was trained on, the strategy and the
evaluate step's metrics. Aliases: ``round-N`` (N unpadded, as ``activeseg predict --model round-N``
takes it) and ``champion``, the best Dice of the evaluate split so far (the earliest round among
equals, so a tie does not move it). ``latest`` is MLflow's own reserved alias: it resolves to the
highest version, which is the last round registered, as rounds are registered in order.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activeseg.core.util import sha256_file
from activeseg.metrics import METRICS

ROUND_TAG = "activeseg.round"
CHAMPION = "champion"
LATEST = "latest"
CHECKPOINT = "checkpoint/model.pt"
"""The checkpoint's path among the train run's artifacts (:func:`activeseg.model.training.train_model`)."""


class RunLog:
    """Logging calls for one run; the no-op base is used when tracking is off."""

    run_id: str | None = None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...


class MlflowRunLog(RunLog):
    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))


@functools.cache
def mlflow_client(uri: str) -> Any:
    """One MlflowClient per tracking store and process: opening a store (SQLAlchemy engine, schema check)
    costs about a second, and a step opens its workspace's tracker more than once."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class Tracker:
    """Opens runs in one experiment of one tracking store."""

    def __init__(self, uri: str | None, experiment: str, out_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.uri = uri or f"sqlite:///{(self.out_dir / 'mlflow.db').resolve()}"
        self.experiment = experiment
        self._client = None
        self._experiment_id: str | None = None

    def client(self) -> Any:
        """The MlflowClient of the store (the experiment created when missing)."""
        self._setup()
        return self._client

    def _setup(self) -> None:
        if self._client is not None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._client = mlflow_client(self.uri)
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            self._experiment_id = found.experiment_id
        else:
            artifacts = (self.out_dir / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite") else None
            self._experiment_id = self._client.create_experiment(self.experiment, artifact_location=artifacts)

    @contextmanager
    def run(self, name: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator[RunLog]:
        if not self.enabled:
            yield RunLog()
            return
        self._setup()
        run = self._client.create_run(self._experiment_id, run_name=name, tags=tags or {})
        log = MlflowRunLog(self._client, run.info.run_id)
        from mlflow.entities import Param

        self._client.log_batch(log.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        status = "FAILED"
        try:
            yield log
            status = "FINISHED"
        finally:
            self._client.set_terminated(log.run_id, status)


@dataclass(frozen=True)
class RoundModel:
    """One round's model as the registry keeps it: ``run_id`` is the train run that logged the checkpoint,
    ``metrics`` the evaluate step's means on ``split``, ``commit`` the workspace commit, ``label_batches``
    the batches it was trained on (``round-NNN:<batch hash prefix>`` or ``round-NNN:initial``)."""

    round_number: int
    run_id: str
    checkpoint_sha256: str
    split: str
    metrics: dict[str, float | int | None]
    commit: str
    label_batches: list[str]
    strategy: str

    def tags(self) -> dict[str, str]:
        tags = {ROUND_TAG: str(self.round_number), "activeseg.checkpoint_sha256": self.checkpoint_sha256,
                "activeseg.split": self.split, "activeseg.workspace_commit": self.commit,
                "activeseg.label_batches": ",".join(self.label_batches), "activeseg.strategy": self.strategy}
        tags.update({f"activeseg.metric.{m}": str(self.metrics[m]) for m in METRICS if self.metrics.get(m) is not None})
        return tags


def round_alias(round_number: int) -> str:
    """``round-N``: the alias of round N's version (unpadded)."""
    return f"round-{round_number}"


def champion_round(dice: dict[int, float | None]) -> int | None:
    """The round with the best Dice (the earliest among equals; a round without a Dice never wins), or None."""
    scored = [(value, -n) for n, value in dice.items() if value is not None]
    return -max(scored)[1] if scored else None


class ModelRegistry:
    """The campaign's registered model in the store of ``tracker`` (module docstring)."""

    def __init__(self, tracker: Tracker):
        self.client = tracker.client()
        self.name = tracker.experiment

    def versions(self) -> list[Any]:
        """The registered versions (MLflow ModelVersion), in version order; none when nothing is registered."""
        found = self.client.search_model_versions(f"name='{self.name}'")
        return sorted(found, key=lambda v: int(v.version))

    def register(self, model: RoundModel) -> Any:
        """Register the round's model once (a version tagged with its round already there is reused, so an
        evaluate step rerun after a crash adds none), set its ``round-N`` alias and move ``champion``."""
        versions = self.versions()
        version = next((v for v in versions if v.tags.get(ROUND_TAG) == str(model.round_number)), None)
        if version is None:
            if not self.client.search_registered_models(f"name='{self.name}'"):
                self.client.create_registered_model(self.name, description="activeseg campaign: one version per round")
            source = f"{self.client.get_run(model.run_id).info.artifact_uri}/checkpoint"
            version = self.client.create_model_version(self.name, source, run_id=model.run_id, tags=model.tags())
            versions.append(version)
        self.client.set_registered_model_alias(self.name, round_alias(model.round_number), version.version)
        by_round = {int(v.tags[ROUND_TAG]): v for v in versions if ROUND_TAG in v.tags}
        dice = {n: _float(v.tags.get("activeseg.metric.dice")) for n, v in by_round.items()}
        best = champion_round(dice)
        if best is not None:
            self.client.set_registered_model_alias(self.name, CHAMPION, by_round[best].version)
        return version

    def aliases(self) -> dict[str, list[str]]:
        """Version (a string) -> its aliases, ``latest`` included (on the highest version)."""
        versions = self.versions()
        if not versions:
            return {}
        named: dict[str, list[str]] = {str(v.version): [] for v in versions}
        for alias, version in sorted(self.client.get_registered_model(self.name).aliases.items(),
                                     key=lambda item: _alias_order(item[0])):
            named[str(version)].append(alias)
        named[str(versions[-1].version)].append(LATEST)
        return named

    def resolve(self, alias: str) -> Any:
        """The version an alias names; an unknown alias raises ValueError listing the valid ones."""
        versions = self.versions()
        if not versions:
            raise ValueError(f"no model registered in {self.name!r} of {self.client.tracking_uri} (a round's evaluate "
                             "step registers one; tracking.mlflow must be true)")
        known = self.client.get_registered_model(self.name).aliases
        if alias == LATEST:
            return versions[-1]
        if alias not in known:
            valid = ", ".join([LATEST, *sorted(known, key=_alias_order)])
            raise ValueError(f"unknown model alias {alias!r}: the valid ones are {valid} (or a checkpoint path)")
        return next(v for v in versions if str(v.version) == str(known[alias]))

    def checkpoint(self, alias: str, folder: Path) -> Path:
        """Download the checkpoint of the version ``alias`` names into ``folder``; its hash is checked
        against the version's tag (a ValueError when they differ)."""
        version = self.resolve(alias)
        path = Path(self.client.download_artifacts(version.run_id, CHECKPOINT, str(folder)))
        expected = version.tags.get("activeseg.checkpoint_sha256")
        if expected and sha256_file(path) != expected:
            raise ValueError(f"{path}: the checkpoint of {self.name} version {version.version} ({alias}) does not "
                             f"match its registered hash {expected[:12]}")
        return path


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _alias_order(alias: str) -> tuple[int, str]:
    """``champion`` first, then ``round-N`` by N."""
    number = alias.removeprefix("round-")
    return (int(number), alias) if number.isdigit() else (-1, alias)
