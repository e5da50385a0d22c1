"""Compare-and-swap on one small object, on local disk or on an object store (the run lock's storage).

A :class:`LockBackend` offers four atomic operations on one key of a folder: create-if-absent,
read, compare-and-replace and compare-and-delete. :class:`LocalBackend` implements them on a local or
NFS folder with ``O_CREAT|O_EXCL`` (create) and a ``flock``-guarded read-compare-write (replace,
delete). :class:`ObjectStoreBackend` implements the same four calls on ``s3://`` (through s3fs; AWS S3
and moto honour both conditions) with conditional requests: ``If-None-Match: *`` on create,
``If-Match: <etag>`` on replace and delete. Replace and delete first read the object with its ETag,
compare the content, then send the request conditional on that ETag: a writer that changed the
object in between makes the request fail (no lost update). On a store that ignores the conditions
the create would silently overwrite a concurrent object; the backend cannot detect that, so use a
store that supports conditional writes (S3 does since 2024). :func:`backend_for` picks the backend
from the folder's path. The lock logic itself is :mod:`avits_core.lock`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

from avits_core.store import fs as sfs

__all__ = ["LockBackend", "LocalBackend", "ObjectStoreBackend", "backend_for"]



class LockBackend(Protocol):
    """Four atomic operations on one small object; see the module docstring."""

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` under ``key`` only if ``key`` does not exist; True when written."""

    def read(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""

    def replace_if(self, key: str, expected: bytes, data: bytes) -> bool:
        """Replace the content with ``data`` only if it is still ``expected``; True when replaced."""

    def delete_if(self, key: str, expected: bytes) -> bool:
        """Delete ``key`` only if its content is still ``expected``; True when deleted."""


class LocalBackend:
    """A folder on a POSIX filesystem: ``O_CREAT|O_EXCL`` creates, ``flock`` guards compare-and-swap."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key

    def create(self, key: str, data: bytes) -> bool:
        return sfs.put_if_absent(self._path(key), data)

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    @contextmanager
    def _guard(self, key: str) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with sfs.flock_exclusive(self.folder / f".{key}.guard"):
            yield

    def replace_if(self, key: str, expected: bytes, data: bytes) -> bool:
        with self._guard(key):
            if self.read(key) != expected:
                return False
            sfs.put_bytes(self._path(key), data)
            return True

    def delete_if(self, key: str, expected: bytes) -> bool:
        with self._guard(key):
            if self.read(key) != expected:
                return False
            self._path(key).unlink()
            return True


class ObjectStoreBackend:
    """The lock object ``<run>/<key>`` on an object store, with conditional requests (see the module docstring)."""

    def __init__(self, folder: Any):
        self.folder = sfs.as_path(folder)
        self.fs = self.folder.fs

    def _key(self, key: str) -> str:
        return (self.folder / key).path

    def create(self, key: str, data: bytes) -> bool:
        return sfs.put_if_absent(self.folder / key, data)

    def _read_tagged(self, key: str) -> tuple[bytes, str] | None:
        return sfs.read_with_etag(self.folder / key)

    def read(self, key: str) -> bytes | None:
        got = self._read_tagged(key)
        return None if got is None else got[0]

    def _conditional(self, fn: Any) -> bool:
        try:
            fn()
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - s3fs wraps botocore errors as OSError
            if isinstance(sfs._translate(exc), sfs.PreconditionFailed):
                return False
            raise
        return True

    def replace_if(self, key: str, expected: bytes, data: bytes) -> bool:
        got = self._read_tagged(key)
        if got is None or got[0] != expected:
            return False
        return self._conditional(lambda: self.fs.pipe_file(self._key(key), data, IfMatch=got[1]))

    def delete_if(self, key: str, expected: bytes) -> bool:
        from fsspec.asyn import sync

        got = self._read_tagged(key)
        if got is None or got[0] != expected:
            return False
        bucket, _, k = self._key(key).partition("/")
        return self._conditional(lambda: sync(self.fs.loop, self.fs._call_s3, "delete_object",
                                              Bucket=bucket, Key=k, IfMatch=got[1]))


def backend_for(run_path: Any) -> LockBackend:
    """:class:`ObjectStoreBackend` for a run on an object store, else :class:`LocalBackend`."""
    p = sfs.as_path(run_path)
    return ObjectStoreBackend(p) if sfs.is_remote(p) else LocalBackend(p)
