"""MLflow calls retried while the tracking server does not answer, made idempotent where a retry could
log twice, and campaigns kept apart by name on a shared tracking server (activeseg.model.tracking)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from activeseg.model import tracking
from activeseg.model.tracking import CAMPAIGN_TAG, Tracker, TrackingUnavailable, experiment_name, retrying

DOWN = MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                       "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded (Connection refused)")


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "RETRY_SECONDS", 0.0)


def test_a_call_is_retried_while_the_server_does_not_answer(capsys):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise DOWN
        return "done"

    assert retrying(flaky, "creating a run", "http://lab:5000") == "done" and len(calls) == 3
    assert capsys.readouterr().err.count("MLflow tracking server http://lab:5000: no answer while creating a run") == 2


def test_a_refused_request_is_not_retried_and_an_outage_ends_as_a_transient_error():
    calls = []

    def refused():
        calls.append(1)
        raise MlflowException("Experiment 'x' already exists.", error_code="RESOURCE_ALREADY_EXISTS")

    with pytest.raises(MlflowException, match="already exists"):
        retrying(refused, "creating an experiment")
    assert len(calls) == 1
    with pytest.raises(TrackingUnavailable, match="did not answer while logging metrics") as raised:
        retrying(lambda: (_ for _ in ()).throw(DOWN), "logging metrics")
    assert isinstance(raised.value, ConnectionError)  # tasks/steps.py's TRANSIENT: the step's task retries it


def test_campaigns_sharing_a_server_get_their_own_experiment():
    assert experiment_name("activeseg", None, "campaign-a") == "activeseg"  # the workspace's own store
    assert experiment_name("activeseg", "http://lab:5000", "campaign-a") == "activeseg-campaign-a"
    assert experiment_name("activeseg", "http://lab:5000", None) == "activeseg"


def test_a_run_opened_once_is_reused_not_created_again(tmp_path: Path):
    tracker = Tracker(None, "exp", tmp_path / "mlflow", campaign="campaign-a")
    identity = {"activeseg.step": "evaluate", "activeseg.round": "1"}
    with pytest.raises(RuntimeError):  # an outage in the middle: the run is left FAILED, half logged
        with tracker.run("round-001-evaluate", {"round": 1}, identity, once=True) as first:
            first.log_metrics({"dice": 0.5})
            raise RuntimeError("the server went away")
    with tracker.run("round-001-evaluate", {"round": 1}, identity, once=True) as second:  # the retried step
        second.log_metrics({"dice": 0.5})
    with tracker.run("round-001-evaluate", {"round": 1}, identity, once=True) as third:  # finished: nothing logged
        third.log_metrics({"dice": 0.9})
    assert first.run_id == second.run_id == third.run_id
    client = tracker.client()
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id], "")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics == {"dice": 0.5} and runs[0].data.tags[CAMPAIGN_TAG] == "campaign-a"
