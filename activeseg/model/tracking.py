"""MLflow tracking through an explicit client (no global MLflow state).

Embedded default: a SQLite store ``<out>/mlflow.db`` with artifacts under ``<out>/mlartifacts``; any
other tracking URI (a lab's MLflow server) works the same way. ``tracking.mlflow: false`` gives a
tracker that records nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


class Tracker:
    """Opens runs in one experiment of one tracking store."""

    def __init__(self, uri: str | None, experiment: str, out_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.uri = uri or f"sqlite:///{(self.out_dir / 'mlflow.db').resolve()}"
        self.experiment = experiment
        self._client = None
        self._experiment_id: str | None = None

    def _setup(self) -> None:
        if self._client is not None:
            return
        from mlflow.tracking import MlflowClient

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.uri)
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
