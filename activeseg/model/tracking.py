"""MLflow tracking through an explicit client (no global MLflow state).

Embedded default: a SQLite store ``<out>/mlflow.db`` with artifacts under ``<out>/mlartifacts``; any
other tracking URI (a lab's MLflow server) works the same way. ``tracking.mlflow: false`` gives a
tracker that records nothing.

Campaigns sharing a tracking server (``tracking.uri`` set, e.g. the lab stack's MLflow server) are kept
apart by name: a workspace's experiment there is ``<tracking.experiment>-<campaign>`` (the campaign: the
workspace folder's name, as its Prefect deployments are named), and every run and registered version is
tagged ``activeseg.campaign``. A workspace's own store (``tracking.uri`` null) holds one campaign: its
experiment is ``tracking.experiment`` as it is.

The tracking server may be down for a while (restarted, its database restarted): every call to it is
retried (:func:`retrying`: ``RETRIES`` times, waits doubling from ``RETRY_SECONDS``, on top of MLflow's
own HTTP retries), then it fails with :class:`TrackingUnavailable` (a ``ConnectionError``: the round's
task is retried as for any transient failure). What is retried is made idempotent: a run opened with
``once=True`` (the evaluate step's) is looked up by its identifying tags before one is created, and a
round's model version by its campaign and round tags before one is registered, so a step rerun after
an outage logs its run and registers its version once.

The model registry (:class:`ModelRegistry`): one registered model per campaign, named after the
campaign's experiment (above). One version per round
(its source: the ``checkpoint/`` artifacts of the round's train run), tagged with the round, the
checkpoint hash, the workspace commit, the label batches it was trained on, the strategy and the
evaluate step's metrics. Aliases: ``round-N`` (N unpadded, as ``activeseg predict --model round-N``
takes it) and ``champion``, the best Dice of the evaluate split so far (the earliest round among
equals, so a tie does not move it). ``latest`` is MLflow's own reserved alias: it resolves to the
highest version, which is the last round registered, as rounds are registered in order.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from activeseg.core.util import sha256_file
from activeseg.metrics import METRICS

ROUND_TAG = "activeseg.round"
CAMPAIGN_TAG = "activeseg.campaign"
RETRIES = 6
RETRY_SECONDS = 1.0
"""A call to the tracking server that fails for want of an answer is tried again `RETRIES` times, after
1, 2, 4, ... s (about a minute in all), on top of MLflow's own retries of each HTTP request
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``)."""
T = TypeVar("T")


class TrackingUnavailable(ConnectionError):
    """The tracking server did not answer through the retries (a transient failure: a step's task retries it)."""


def transient(exc: BaseException) -> bool:
    """Whether a failed call to the tracking server is worth retrying: no answer (refused, reset, timed
    out: MLflow's client reports these as "API request to ... failed with exception ...") or a server
    error answer (5xx, e.g. while its database restarts); never a refused request (4xx)."""
    try:
        import requests
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return False
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                        TimeoutError)):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        return ("failed with exception" in text or "failed with timeout exception" in text
                or exc.error_code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")
                and ("Max retries exceeded" in text or "error response" in text or "503" in text))
    return False


def retrying(action: Callable[[], T], what: str, uri: str = "") -> T:
    """``action()``, tried again while it fails transiently (:func:`transient`), `RETRIES` times with
    doubling waits; then :class:`TrackingUnavailable`. Each retry is said on stderr (the run's log)."""
    for attempt in range(RETRIES + 1):
        try:
            return action()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == RETRIES:
                raise TrackingUnavailable(f"the MLflow tracking server {uri} did not answer while {what} "
                                          f"({RETRIES + 1} attempts): {exc}") from exc
            wait = RETRY_SECONDS * 2 ** attempt
            print(f"MLflow tracking server {uri}: no answer while {what} ({type(exc).__name__}); "
                  f"trying again in {wait:g} s", file=sys.stderr, flush=True)
            time.sleep(wait)
    raise AssertionError("unreachable")
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
    """Logging calls for one MLflow run, each retried while the server does not answer (:func:`retrying`)."""

    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id

    def _retry(self, action: Callable[[], T], what: str) -> T:
        return retrying(action, f"{what} (run {self.run_id})", self.client.tracking_uri)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        self._retry(lambda: self.client.log_batch(self.run_id, metrics=batch), "logging metrics")

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._retry(lambda: self.client.log_artifact(self.run_id, str(path), folder), f"logging {Path(path).name}")

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._retry(lambda: self.client.set_tag(self.run_id, key, str(value)), f"setting tag {key}")


@functools.cache
def mlflow_client(uri: str) -> Any:
    """One MlflowClient per tracking store and process: opening a store (SQLAlchemy engine, schema check)
    costs about a second, and a step opens its workspace's tracker more than once."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_name(experiment: str, uri: str | None, campaign: str | None) -> str:
    """The experiment (and registered model) of a campaign: ``experiment`` in a store of its own (`uri`
    None), ``<experiment>-<campaign>`` in a shared one (module docstring)."""
    return experiment if uri is None or not campaign else f"{experiment}-{campaign}"


class Tracker:
    """Opens runs in one experiment of one tracking store. ``campaign``: the campaign whose runs these are
    (tagged ``activeseg.campaign``; in a shared store, part of the experiment's name: :func:`experiment_name`)."""

    def __init__(self, uri: str | None, experiment: str, out_dir: Path, enabled: bool = True,
                 campaign: str | None = None):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.uri = uri or f"sqlite:///{(self.out_dir / 'mlflow.db').resolve()}"
        self.campaign = campaign
        self.experiment = experiment_name(experiment, uri, campaign)
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
        client = mlflow_client(self.uri)
        self._experiment_id = retrying(lambda: self._experiment(client), f"opening experiment {self.experiment!r}",
                                       self.uri)
        self._client = client

    def _experiment(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        artifacts = (self.out_dir / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite") else None
        try:
            return client.create_experiment(self.experiment, artifact_location=artifacts)
        except Exception:  # created meanwhile (by a retried request whose answer was lost, or another process)
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    @contextmanager
    def run(self, name: str, params: dict[str, Any], tags: dict[str, str] | None = None,
            once: bool = False) -> Iterator[RunLog]:
        """A run named `name` with `params` and `tags` (and the campaign's tag), FINISHED when the block
        ends, FAILED when it raises. ``once``: `tags` identify the run; a run of the experiment with the
        same tags is reused instead of creating another (one left unfinished by an outage or a crash is
        logged into again and finished; a finished one is yielded without logging anything: logged once)."""
        if not self.enabled:
            yield RunLog()
            return
        self._setup()
        tags = {**(tags or {}), **({CAMPAIGN_TAG: self.campaign} if self.campaign else {})}
        found = retrying(lambda: self._find_run(tags), f"looking up run {name!r}", self.uri) if once else None
        if found is not None and found.info.status == "FINISHED":
            done = RunLog()
            done.run_id = found.info.run_id
            yield done
            return
        run = found or retrying(lambda: self._client.create_run(self._experiment_id, run_name=name, tags=tags),
                                f"creating run {name!r}", self.uri)
        log = MlflowRunLog(self._client, run.info.run_id)
        from mlflow.entities import Param

        batch = [Param(k, str(v)[:6000]) for k, v in params.items()]  # the same values again: allowed
        retrying(lambda: self._client.log_batch(log.run_id, params=batch), f"logging the params of {name!r}",
                 self.uri)
        status = "FAILED"
        try:
            yield log
            status = "FINISHED"
        finally:
            retrying(lambda: self._client.set_terminated(log.run_id, status), f"ending run {name!r}", self.uri)

    def _find_run(self, tags: dict[str, str]) -> Any | None:
        """The experiment's most recent run carrying every tag of `tags`, or None."""
        condition = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        found = self._client.search_runs([self._experiment_id], condition, max_results=1,
                                         order_by=["attributes.start_time DESC"])
        return found[0] if found else None


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
        self.campaign = tracker.campaign

    def versions(self) -> list[Any]:
        """The registered versions (MLflow ModelVersion), in version order; none when nothing is registered."""
        found = retrying(lambda: self.client.search_model_versions(f"name='{self.name}'"),
                         f"listing the versions of {self.name!r}", self.client.tracking_uri)
        return sorted(found, key=lambda v: int(v.version))

    def register(self, model: RoundModel) -> Any:
        """Register the round's model once (a version tagged with its campaign and round already there is
        reused, so an evaluate step rerun after a crash or an outage of the server adds none), set its
        ``round-N`` alias and move ``champion``; retried as a whole while the server does not answer."""
        return retrying(lambda: self._register(model), f"registering round {model.round_number}'s model in "
                        f"{self.name!r}", self.client.tracking_uri)

    def _mine(self, version: Any, round_number: int) -> bool:
        tags = version.tags
        return tags.get(ROUND_TAG) == str(round_number) and tags.get(CAMPAIGN_TAG, self.campaign) == self.campaign

    def _register(self, model: RoundModel) -> Any:
        versions = sorted(self.client.search_model_versions(f"name='{self.name}'"), key=lambda v: int(v.version))
        version = next((v for v in versions if self._mine(v, model.round_number)), None)
        if version is None:
            if not self.client.search_registered_models(f"name='{self.name}'"):
                try:
                    self.client.create_registered_model(self.name,
                                                        description="activeseg campaign: one version per round")
                except Exception:  # created meanwhile (a retried request whose answer was lost)
                    if not self.client.search_registered_models(f"name='{self.name}'"):
                        raise
            source = f"{self.client.get_run(model.run_id).info.artifact_uri}/checkpoint"
            tags = {**model.tags(), **({CAMPAIGN_TAG: self.campaign} if self.campaign else {})}
            version = self.client.create_model_version(self.name, source, run_id=model.run_id, tags=tags)
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
