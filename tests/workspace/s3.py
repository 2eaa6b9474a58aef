"""An S3 service for tests: moto's server on 127.0.0.1 (a free port), used over HTTP by the same MinIO
SDK and DVC S3 remote code a lab uses. Import the fixtures into a test module to use them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

BUCKET = "activeseg-test"


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A running moto server (stopped afterwards) and throwaway credentials in the environment."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "activeseg-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "activeseg-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide memory: start and leave every test with none
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """The test bucket, created with the MinIO SDK; returns its name."""
    from minio import Minio

    client = Minio(s3_endpoint.removeprefix("http://"), access_key="activeseg-test-key",
                   secret_key="activeseg-test-secret", secure=False, region="us-east-1")
    client.make_bucket(BUCKET)
    return BUCKET
