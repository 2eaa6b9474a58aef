"""Credentials never land anywhere (issue 13, fault matrix): after a full campaign round on an S3 remote,
with the keys in the environment only, no file of the workspace (git objects decompressed, the MLflow
database, ledger.db, .dvc/, logs, tmp/) and no object name or content in the bucket holds the access
key or the secret key. The round runs at the workspace level, without Prefect, so there are no Prefect
results to scan (the Prefect path calls the same workspace steps)."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path
from urllib.parse import quote

import pytest

from activeseg.workspace import Workspace
from tests.workspace.s3 import s3_bucket, s3_endpoint, s3_server  # noqa: F401  (fixtures)
from tests.workspace.test_workspace import SETTINGS
from tests.people import enrol

ACCESS_KEY = "AKIACREDENTIALSCAN7Q"
SECRET_KEY = "cred/Scan+Secret-9f3Kq2Lx7Vb1Nz8Wm4Ty6Rp0"


def needles() -> list[bytes]:
    """The keys as they could be written: plain, and URL-encoded (the secret has '/' and '+')."""
    return [k.encode() for k in (ACCESS_KEY, SECRET_KEY, quote(SECRET_KEY, safe=""))]


def leaks(blob: bytes) -> list[str]:
    return [n.decode() for n in needles() if n in blob]


def workspace_blobs(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` as bytes; loose git objects also decompressed, and every git object
    (packed ones too) as ``git cat-file`` prints it."""
    blobs = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            name, data = path.relative_to(root).as_posix(), path.read_bytes()
            blobs[name] = data
            if name.startswith(".git/objects/") and len(path.parent.name) == 2:
                blobs[name + " (inflated)"] = zlib.decompress(data)
    dump = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=root, check=True,
                          capture_output=True).stdout
    blobs["git cat-file --batch-all-objects"] = dump
    return blobs


def test_no_credential_lands_in_the_workspace_or_the_bucket(tmp_path: Path, s3_endpoint: str, s3_bucket: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    ws = Workspace.init(tmp_path / "ws", "synthetic", remote=f"s3://{s3_bucket}/campaign", endpoint=s3_endpoint,
                        overrides=[*SETTINGS, "tracking.mlflow=true"])
    enrol(ws.root)
    ws.train(1)
    ws.query(1)
    ws.simulate_labels(1)
    ws.approve(1, "pi")
    ws.evaluate(1)
    assert ws.current_round() == 2 and ws.verify().ok
    blobs = workspace_blobs(ws.root)
    for part in ("ledger.db", ".dvc/config", ".git/HEAD", "ledger.jsonl"):
        assert part in blobs, part
    assert any(n.startswith("mlflow/") and n.endswith(".db") for n in blobs), sorted(blobs)[:50]
    assert any(n.endswith("(inflated)") for n in blobs)
    found = {name: leaks(blob) for name, blob in blobs.items() if leaks(blob)}
    assert found == {}
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    objects = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
               for o in page.get("Contents", [])]
    assert len(objects) > 20 and any(k.startswith("campaign/staged/round-001/") for k in objects)
    assert [k for k in objects if leaks(k.encode())] == []
    bodies = {k: client.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for k in objects}
    assert {k: leaks(b) for k, b in bodies.items() if leaks(b)} == {}
    # the scan does find a key where one is written, also inside a git object
    (ws.root / "notes.txt").write_text(f"secret: {SECRET_KEY}\n")
    ws.git("add", "notes.txt")
    ws.git("commit", "-q", "-m", "a leak")
    (ws.root / "notes.txt").unlink()
    leaked = {name for name, blob in workspace_blobs(ws.root).items() if leaks(blob)}
    assert "git cat-file --batch-all-objects" in leaked and any(n.endswith("(inflated)") for n in leaked)
