"""The object store: the same behaviour from a local folder and from S3 (moto over HTTP, MinIO SDK)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activeseg.workspace.storage import LocalStore, ObjectInfo, S3Store, StoreError, open_store, s3_credentials
from tests.workspace.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/campaign", endpoint=endpoint)


def test_put_get_list_delete(store) -> None:
    store.ensure()
    store.put_bytes("labels/round-001/a.png", b"aaa")
    store.put_bytes("labels/round-001/sub/b.png", b"bb")
    store.put_bytes("labels/round-0010/c.png", b"c")
    store.put_bytes("requests/round-001/manifest.json", b"{}")
    assert store.list("labels/round-001/") == [ObjectInfo("labels/round-001/a.png", 3),
                                               ObjectInfo("labels/round-001/sub/b.png", 2)]
    assert store.get_bytes("labels/round-001/sub/b.png") == b"bb"
    assert store.exists("requests/round-001/manifest.json")
    assert not store.exists("requests/round-001/manifest")
    store.delete("labels/round-001/a.png")
    store.delete("labels/round-001/a.png")  # a missing object is not an error
    assert [i.key for i in store.list("labels/")] == ["labels/round-001/sub/b.png", "labels/round-0010/c.png"]
    with pytest.raises(StoreError, match="labels/round-001/a.png"):
        store.get_bytes("labels/round-001/a.png")
    store.delete("labels/round-001/sub/b.png")  # the last object under a prefix: the prefix is gone, as in S3
    assert [i.key for i in store.list("labels/")] == ["labels/round-0010/c.png"]
    if isinstance(store, LocalStore):
        assert not (store.root / "labels/round-001").exists() and (store.root / "labels").is_dir()


@pytest.mark.parametrize("key", ["../x.png", "/abs.png", "a//b.png", "a/./b.png", "a\\b.png", ""])
def test_writes_refuse_keys_that_are_not_plain(tmp_path: Path, key: str) -> None:
    with pytest.raises(StoreError, match="not a plain object key"):
        LocalStore(tmp_path).put_bytes(key, b"x")
    assert list(tmp_path.iterdir()) == []


def test_local_listing_reports_links_and_never_follows_them(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    root = tmp_path / "store"
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "ok.png").write_bytes(b"ok")
    os.symlink(secret, root / "labels" / "link.png")
    os.symlink(outside, root / "labels" / "dir")
    store = LocalStore(root)
    assert store.list("labels/") == [ObjectInfo("labels/dir", len(os.readlink(root / "labels" / "dir")), True),
                                     ObjectInfo("labels/link.png", len(str(secret)), True),
                                     ObjectInfo("labels/ok.png", 2)]
    with pytest.raises(StoreError, match="symbolic link"):
        store.get_bytes("labels/link.png")


def test_s3_lists_and_deletes_names_other_clients_can_upload(s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    weird = ["campaign/labels/round-001/../evil.png", "campaign/labels/round-001//abs.png"]
    for key in weird:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    store = open_store(f"s3://{s3_bucket}/campaign", endpoint=s3_endpoint)
    assert [i.key for i in store.list("labels/round-001/")] == ["labels/round-001/../evil.png",
                                                                "labels/round-001//abs.png"]
    for info in store.list("labels/round-001/"):
        store.delete(info.key)
    assert store.list("labels/") == []


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
                 "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert s3_credentials() == (None, None)
    monkeypatch.setenv("MINIO_ROOT_USER", "root")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "rootpw")
    assert s3_credentials() == ("root", "rootpw")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "mk")
    monkeypatch.setenv("MINIO_SECRET_KEY", "ms")
    assert s3_credentials() == ("mk", "ms")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    assert s3_credentials() == ("mk", "ms")  # an incomplete pair is skipped
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "as")
    assert s3_credentials() == ("ak", "as")


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    s3 = open_store("s3://bucket/a/b/", endpoint="https://minio.lab:9000", region="eu-west-1")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.url, s3.region) == ("bucket", "a/b", "s3://bucket/a/b", "eu-west-1")
    assert s3.client._base_url.is_https
    assert not open_store("s3://bucket", endpoint="http://127.0.0.1:9000").client._base_url.is_https
    assert isinstance(open_store(tmp_path), LocalStore)
    with pytest.raises(StoreError, match="only for s3://"):
        open_store(tmp_path, endpoint="http://127.0.0.1:9000")
    with pytest.raises(StoreError, match="expected s3://bucket/prefix"):
        open_store("s3://")
