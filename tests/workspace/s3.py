"""An S3 service for tests: moto's server on 127.0.0.1 (a free port), used over HTTP by the same MinIO
SDK and DVC S3 remote code a lab uses. Import the fixtures into a test module to use them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

BUCKET = "activeseg-test"


class MotoServer:
    """moto's S3 server on 127.0.0.1 that can be stopped and started again on the same port (moto keeps
    its buckets in process memory, so they are all still there): an object store outage."""

    def __init__(self) -> None:
        self.port, self.server = 0, None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        return self.endpoint

    def stop(self) -> None:
        self.server.stop()
        self.server = None


@contextmanager
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A running moto server (stopped afterwards, whatever state the test left it in) and throwaway
    credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "activeseg-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "activeseg-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoServer()
    endpoint = server.start()
    # moto keeps its buckets in process-wide memory: start and leave every test with none
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    try:
        yield server
    finally:
        if server.server is None:
            server.start()
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto server the test may stop and start again (see :class:`MotoServer`)."""
    with moto_server(monkeypatch) as server:
        yield server


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a running moto server."""
    with moto_server(monkeypatch) as server:
        yield server.endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """The test bucket, created with the MinIO SDK; returns its name."""
    from minio import Minio

    client = Minio(s3_endpoint.removeprefix("http://"), access_key="activeseg-test-key",
                   secret_key="activeseg-test-secret", secure=False, region="us-east-1")
    client.make_bucket(BUCKET)
    return BUCKET
