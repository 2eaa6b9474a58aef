"""One object-store interface, two backends: a local folder and S3 through the ``minio`` SDK.

The label exchange lives in a store (see :mod:`activeseg.workspace.exchange`)::

    requests/round-NNN/     manifest.json, per region <id>.png (crop) and <id>.preview.png
    labels/round-NNN/       what annotators upload: <id>.png per requested region
    quarantine/round-NNN/<timestamp>/   rejected batches with report.json

Keys are ``/``-separated and relative to the store's root (a folder, or ``bucket/prefix``). Keys this
package writes are always plain (no empty, ``.`` or ``..`` segment); keys found by :meth:`list` are
reported as they are, because an annotator may upload anything and the batch checks must see it.

``open_store("s3://bucket/prefix", endpoint="http://127.0.0.1:9000")`` gives an :class:`S3Store`
(MinIO or any S3 service; TLS on for ``https://`` endpoints, off for ``http://``); any other URL is a
local folder. Credentials come from the environment only: ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, or ``MINIO_ACCESS_KEY`` and ``MINIO_SECRET_KEY``, or ``MINIO_ROOT_USER`` and
``MINIO_ROOT_PASSWORD``; the region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` unless given.

A store that does not answer is retried by one policy (:class:`Retry`, from ``storage`` in params.yaml),
which DVC push/pull share (:class:`activeseg.workspace.vcs.Vcs`); the MinIO SDK's own retries are off, so
that policy is the only one. What is transient (the issue leaves it open): for S3, a connection or
protocol error or an HTTP 5xx answer, never an answer such as NoSuchKey or AccessDenied; a local folder
is not retried (its errors are not network hiccups). After the last attempt :class:`StoreUnavailable`
names the store and what was being done.
"""

from __future__ import annotations

import io
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from activeseg.core.config import StorageConfig

T = TypeVar("T")

CREDENTIAL_PAIRS = (
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
    ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
)


class StoreError(RuntimeError):
    """An object-store operation failed; the message names the key and the store."""


class StoreUnavailable(StoreError):
    """The store did not answer through every attempt of the :class:`Retry` policy: transient, so worth
    trying again later (a Prefect task retries it, ``activeseg round start`` resumes the round)."""


@dataclass(frozen=True)
class Retry:
    """Up to ``retries`` more attempts after a transient failure, waiting ``seconds`` before the first
    retry and twice as long before each next one (3 and 1.0: 1 + 2 + 4 = 7 s of waiting at most)."""

    retries: int = 3
    seconds: float = 1.0

    @staticmethod
    def of(settings: StorageConfig) -> Retry:
        return Retry(settings.retries, settings.retry_seconds)

    def call(self, action: Callable[[], T], url: str, doing: str, transient: Callable[[Exception], bool]) -> T:
        """``action()``; retried while it raises an exception ``transient`` accepts, then
        :class:`StoreUnavailable` naming ``url`` and ``doing`` (e.g. "writing requests/round-001/manifest.json");
        any other exception passes at once."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                return action()
            except Exception as exc:
                if not transient(exc):
                    raise
                if attempt == self.retries:
                    raise StoreUnavailable(
                        f"{url}: the store did not answer while {doing} ({attempt + 1} attempts in "
                        f"{time.monotonic() - started:.1f} s; set storage.retries and storage.retry_seconds in "
                        f"params.yaml to wait longer); last error: {exc}") from None
            time.sleep(self.seconds * 2 ** attempt)
            attempt += 1


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its full key, its size in bytes, and whether it is a symbolic link (local
    folders only; links are reported, never followed)."""

    key: str
    size: int
    symlink: bool = False


def check_key(key: str) -> str:
    """A key this package may write: non-empty ``/``-separated segments, none of them ``.`` or ``..``."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise StoreError(f"{key!r}: not a plain object key")
    return key


class ObjectStore(ABC):
    """Put, get, list and delete objects by key."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (recursively), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing one is not an error."""

    def ensure(self) -> None:
        """Create the bucket or folder if needed."""

    def put_file(self, key: str, path: Path) -> None:
        self.put_bytes(key, Path(path).read_bytes())

    def exists(self, key: str) -> bool:
        return any(info.key == key for info in self.list(key))

    def __str__(self) -> str:
        return self.url


class LocalStore(ObjectStore):
    """A folder; every key is a file below it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if path.is_symlink():
            raise StoreError(f"{self.url}/{key}: a symbolic link, not followed")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: cannot read ({exc.strerror})") from None

    def list(self, prefix: str) -> list[ObjectInfo]:
        found = []
        start = self.root / prefix.rstrip("/") if prefix.rstrip("/") else self.root
        if start.is_file() or start.is_symlink():
            walk = [(str(start.parent), [], [start.name])]
        else:
            walk = os.walk(start, followlinks=False)
        for folder, dirs, files in walk:
            # a link to a folder shows up among dirs: report it like a file, never walk into it
            for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(folder, d))):
                path = Path(folder) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.lstat()
                    found.append(ObjectInfo(key, stat.st_size, path.is_symlink()))
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        """Remove the file, then its folders up to the store's root while they are empty (as in a bucket,
        where a prefix with no object does not exist)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root) or any(folder.iterdir()):
                break
            folder.rmdir()


class S3Store(ObjectStore):
    """A bucket (and key prefix) of an S3 service, through the MinIO SDK."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None, retry: Retry = Retry()):
        from minio import Minio

        parsed = urlparse(endpoint) if endpoint else None
        if parsed is not None and not parsed.netloc:
            raise StoreError(f"--endpoint {endpoint!r}: expected a URL such as http://127.0.0.1:9000")
        host = parsed.netloc if parsed else "s3.amazonaws.com"
        secure = parsed.scheme != "http" if parsed else True
        if access_key is None:
            access_key, secret_key = s3_credentials()
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.retry = retry
        self.client = Minio(host, access_key=access_key, secret_key=secret_key, secure=secure, region=self.region,
                            http_client=_http_client())

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, doing: str, key: str, action: Callable[[], T]) -> T:
        """``action()`` under the retry policy; a failure that is not transient becomes a
        :class:`StoreError` naming the key (the SDK raises S3Error, urllib3 errors, ValueError)."""
        try:
            return self.retry.call(action, self.url, f"{doing} {key or 'the bucket'}", s3_transient)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.url}/{key}: {exc}") from None

    def ensure(self) -> None:
        def make() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        self._call("creating", "", make)

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._key(check_key(key))
        self._call("writing", key, lambda: self.client.put_object(self.bucket, name, io.BytesIO(data), len(data)))

    def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, self._key(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("reading", key, read)

    def list(self, prefix: str) -> list[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        objects = self._call("listing", prefix, lambda: list(
            self.client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True)))
        return sorted((ObjectInfo(o.object_name[strip:], o.size or 0) for o in objects), key=lambda i: i.key)

    def delete(self, key: str) -> None:
        from minio.deleteobjects import DeleteObject

        # the bulk delete sends names in the request body, so it also removes objects whose names the
        # SDK refuses in a URL ("." or ".." segments, which other clients can upload)
        errors = self._call("deleting", key, lambda: list(
            self.client.remove_objects(self.bucket, [DeleteObject(self._key(key))])))
        if errors:
            raise StoreError(f"{self.url}/{key}: {errors[0].message}")


def _http_client():
    """The MinIO SDK's default HTTP pool without its own retries (5 attempts with backoff): :class:`Retry`
    is the one retry policy."""
    import certifi
    import urllib3

    timeout = urllib3.Timeout(connect=60, read=300)
    return urllib3.PoolManager(timeout=timeout, maxsize=10, cert_reqs="CERT_REQUIRED",
                               ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(), retries=False)


def s3_transient(exc: Exception) -> bool:
    """An S3 failure worth retrying: no connection, a broken or timed-out exchange, or an HTTP 5xx answer."""
    import urllib3
    from minio.error import S3Error, ServerError

    if isinstance(exc, S3Error):
        return exc.response is not None and exc.response.status >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, ServerError, ConnectionError, TimeoutError))


def s3_credentials() -> tuple[str | None, str | None]:
    """The first complete pair of :data:`CREDENTIAL_PAIRS` set in the environment, else (None, None)."""
    for access, secret in CREDENTIAL_PAIRS:
        if os.environ.get(access) and os.environ.get(secret):
            return os.environ[access], os.environ[secret]
    return None, None


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"{url!r}: expected s3://bucket/prefix")
    return parsed.netloc, parsed.path.strip("/")


def open_store(url: str | Path, endpoint: str | None = None, region: str | None = None,
               retry: Retry = Retry()) -> ObjectStore:
    """An :class:`S3Store` for ``s3://`` URLs (retried by ``retry``), else a :class:`LocalStore` for the folder."""
    if str(url).startswith("s3://"):
        bucket, prefix = split_s3_url(str(url))
        return S3Store(bucket, prefix, endpoint, region, retry=retry)
    if endpoint:
        raise StoreError(f"--endpoint is only for s3:// remotes, not {url}")
    return LocalStore(url)
