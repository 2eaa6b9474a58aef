"""The object store unreachable: the moto server is stopped during publish, upload, ingest (approve) and
DVC push. A short outage is absorbed by the retries; a longer one fails the step with a message naming
the store and what was being done, with nothing half-applied; once the server is back (same port,
same buckets) the step runs again and the round completes with every ledger event exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from activeseg.workspace import Workspace
from activeseg.workspace.storage import Retry, StoreError, StoreUnavailable, open_store
from tests.workspace.s3 import BUCKET, MotoServer, s3_server  # noqa: F401  (fixtures)
from tests.workspace.test_workspace import SETTINGS, head, requested, write_good_batch
from tests.people import enrol

RETRIES = ["storage.retries=2", "storage.retry_seconds=1.0"]  # waits 1 s, then 2 s: 3 attempts
ROUND_ONE = ["access_changed", "round_started", "queried", "request_published", "labels_received", "labels_submitted",
             "labels_approved", "labels_committed", "round_evaluated"]  # access_changed: the people enrol adds


def test_retry_retries_transient_failures_then_names_the_store_and_the_action() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "done"

    transient = lambda exc: isinstance(exc, ConnectionError)  # noqa: E731
    assert Retry(2, 0.01).call(flaky, "s3://b/p", "writing x", transient) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(StoreUnavailable, match=r"^s3://b/p: the store did not answer while writing x \(2 attempts "
                                               r"in 0\.0 s; .*last error: refused$"):
        Retry(1, 0.01).call(flaky, "s3://b/p", "writing x", transient)
    assert len(calls) == 2

    def refused() -> None:
        calls.append(1)
        raise KeyError("NoSuchKey")

    calls.clear()
    with pytest.raises(KeyError):  # not transient: at once, no retry
        Retry(3, 0.01).call(refused, "s3://b/p", "reading x", transient)
    assert len(calls) == 1


def restart_after(server: MotoServer, seconds: float) -> None:
    """Start the stopped server again from a thread after ``seconds``: a short outage."""
    threading.Timer(seconds, server.start).start()


def round_one_events(ws: Workspace) -> Counter[str]:
    return Counter(e.type for e in ws.ledger.events(round=1))


def test_a_round_survives_store_outages(tmp_path: Path, s3_server: MotoServer) -> None:
    url = f"s3://{BUCKET}/campaign"  # init makes the bucket
    ws = Workspace.init(tmp_path / "ws", "synthetic", remote=url, endpoint=s3_server.endpoint,
                        overrides=[*SETTINGS, *RETRIES])
    enrol(ws.root)
    ws.train(1)

    # publish: a longer outage fails the query with nothing recorded; a short one is absorbed
    s3_server.stop()
    with pytest.raises(StoreUnavailable, match=rf"^{url}: the store did not answer while writing requests/round-001/"
                                               r"\S+ \(3 attempts in [3-9]\.\d s; "):
        ws.query(1)
    assert ws.record(1).queried is None and "request_published" not in round_one_events(ws)
    restart_after(s3_server, 1.0)
    assert ws.store.list("requests/") == []
    assert ws.query(1)["request"] == f"{url}/requests/round-001/"
    assert ws.store.exists("requests/round-001/manifest.json")

    # upload (labels submit): nothing staged, the batch is staged once the store is back
    batch = write_good_batch(ws, tmp_path / "batch")
    s3_server.stop()
    with pytest.raises(StoreUnavailable, match=rf"^{url}: the store did not answer while listing staged/round-001/"):
        ws.submit(1, batch, "alice")
    assert ws.record(1).staged is None and "labels_submitted" not in round_one_events(ws)
    s3_server.start()
    staged = ws.submit(1, batch, "alice")

    # ingest (approve): the staged batch is not taken in, no approval recorded, no commit
    commit = head(ws)
    s3_server.stop()
    with pytest.raises(StoreUnavailable, match=rf"^{url}: the store did not answer while listing staged/round-001/"):
        ws.approve(1, "pi")
    assert ws.record(1).staged.batch_sha256 == staged["batch_sha256"] and ws.record(1).labels_accepted is None
    assert head(ws) == commit
    assert "labels_approved" not in round_one_events(ws) and not (ws.root / "labels/round-001").exists()
    s3_server.start()
    assert ws.approve(1, "pi")["batch_sha256"] == staged["batch_sha256"]

    # DVC push (evaluate): a short outage is absorbed; a longer one leaves the round untagged
    s3_server.stop()
    restart_after(s3_server, 1.0)
    ws.dvc("push", "-q")
    s3_server.stop()
    with pytest.raises(StoreUnavailable, match=rf"(?s)^{url}/dvc: the store did not answer while running dvc push "
                                               r"\(3 attempts in .*Could not connect to the endpoint URL"):
        ws.evaluate(1)
    assert not ws.vcs.tag_exists(1) and ws.record(1).evaluated is None
    s3_server.start()
    assert ws.evaluate(1)["round"] == 1

    # the round as a clean run leaves it: every event once, the labels and DVC objects all in the store
    assert round_one_events(ws) == Counter(ROUND_ONE)
    ids = sorted(r.id for r in requested(ws))
    staged = f"staged/round-001/{staged['batch_sha256']}/files/"  # the store's copy of the batch taken in
    assert sorted(i.key for i in ws.store.list(staged)) == [f"{staged}{i}.png" for i in ids]
    assert "in sync" in ws.dvc("status", "-c")
    assert ws.git("tag", "-l").split() == ["round-000", "round-001"] and ws.git("rev-list", "--merges", "HEAD") == ""
    assert ws.verify().ok


def test_an_s3_store_retries_an_outage_but_not_a_missing_object(s3_server: MotoServer) -> None:
    store = open_store(f"s3://{BUCKET}/campaign", endpoint=s3_server.endpoint, retry=Retry(3, 0.5))
    store.ensure()
    s3_server.stop()
    restart_after(s3_server, 1.0)  # back within the 0.5 + 1 + 2 s the retries wait
    store.put_bytes("labels/round-001/a.png", b"mask")
    assert store.get_bytes("labels/round-001/a.png") == b"mask"
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"^s3://{BUCKET}/campaign/labels/round-001/b.png: .*NoSuchKey") as missing:
        store.get_bytes("labels/round-001/b.png")
    assert not isinstance(missing.value, StoreUnavailable) and time.monotonic() - started < 0.5
