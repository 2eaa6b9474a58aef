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
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

CREDENTIAL_PAIRS = (
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
    ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
)


class StoreError(RuntimeError):
    """An object-store operation failed; the message names the key and the store."""


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
        self._path(key).unlink(missing_ok=True)


class S3Store(ObjectStore):
    """A bucket (and key prefix) of an S3 service, through the MinIO SDK."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None):
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
        self.client = Minio(host, access_key=access_key, secret_key=secret_key, secure=secure, region=self.region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, key: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.url}/{key}: {exc}")

    def ensure(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as exc:  # the SDK raises S3Error, urllib3 errors, ValueError
            raise self._error("", exc) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(self.bucket, self._key(check_key(key)), io.BytesIO(data), len(data))
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(key, exc) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except Exception as exc:
            raise self._error(key, exc) from None
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def list(self, prefix: str) -> list[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            objects = self.client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True)
            return sorted((ObjectInfo(o.object_name[strip:], o.size or 0) for o in objects), key=lambda i: i.key)
        except Exception as exc:
            raise self._error(prefix, exc) from None

    def delete(self, key: str) -> None:
        from minio.deleteobjects import DeleteObject

        # the bulk delete sends names in the request body, so it also removes objects whose names the
        # SDK refuses in a URL ("." or ".." segments, which other clients can upload)
        try:
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(self._key(key))]))
        except Exception as exc:
            raise self._error(key, exc) from None
        if errors:
            raise self._error(key, RuntimeError(errors[0].message))


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


def open_store(url: str | Path, endpoint: str | None = None, region: str | None = None) -> ObjectStore:
    """An :class:`S3Store` for ``s3://`` URLs, else a :class:`LocalStore` for the folder."""
    if str(url).startswith("s3://"):
        bucket, prefix = split_s3_url(str(url))
        return S3Store(bucket, prefix, endpoint, region)
    if endpoint:
        raise StoreError(f"--endpoint is only for s3:// remotes, not {url}")
    return LocalStore(url)
