"""One small filesystem layer: a run folder on local disk or on an object store (``s3://bucket/prefix``).

A location is either a :class:`pathlib.Path` (local) or a ``upath.UPath`` over an fsspec filesystem
(``s3://`` through s3fs; any other fsspec protocol with a ``://`` works the same way). Both have the
pathlib API the store and the runner use (``/``, ``exists``, ``is_dir``, ``glob``, ``open``,
``read_text``); what differs between them lives here:

- :func:`as_path` turns a string (``output_root``, a run folder on the command line) into one of the
  two. Object-store credentials and the endpoint come from the standard environment
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``) or
  from :func:`set_storage_options` (config ``storage: {endpoint_url, key, secret, ...}``: s3fs
  keyword arguments, for that config's ``output_root`` and what lies under it). Listings are never
  cached (``use_listings_cache=False``): another process or machine may have added a part file since
  the last listing.
- :func:`put_bytes` writes a whole file: locally under a hidden temp name, fsync, ``os.replace``;
  on an object store as ONE PUT of the whole object (atomic: readers see the old object or the new
  one, never a prefix). So a part file appears complete or not at all on both.
- :func:`put_if_absent` creates a file only when it does not exist: locally ``O_CREAT|O_EXCL``; on
  S3 a conditional PUT (``If-None-Match: *``; AWS S3 and moto honour it), so two machines racing for
  the same name get exactly one winner.
- :func:`local_copy` (read) and :func:`local_target` (write) give code that needs a real local file
  (PyAV, ``torch.save``, matplotlib) a temp file that is downloaded first / uploaded afterwards.

``avits_core`` code should call these helpers instead of ``os.replace``/``open`` on run paths.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Union

__all__ = ["AnyPath", "as_path", "is_url", "is_remote", "put_bytes", "write_atomic", "atomic_path", "put_if_absent", "put_conditional", "read_bytes",
           "local_copy", "local_target", "upload_dir", "set_storage_options", "storage_options",
           "fs_of", "fs_key", "remove", "PreconditionFailed", "flock_exclusive"]

AnyPath = Union[Path, Any]  # Path or upath.UPath

_LOCAL_PROTOCOLS = ("", "file", "local")
#: Object-store schemes recognised in a path whose '//' was collapsed to '/' by pathlib (a CLI
#: argument typed as Path turns ``s3://b/k`` into ``s3:/b/k``): :func:`as_path` restores them.
_REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory")
#: extra fsspec options by location: "" for every object-store location, else a root URL
#: (``scheme://bucket/prefix``, no trailing "/") for that location and everything under it
_options: dict[str, dict[str, Any]] = {}


class PreconditionFailed(Exception):
    """A conditional write found the object already there."""


def _root_key(root: Any) -> str:
    s = str(root)
    s = _collapsed(s) or s
    if "://" in s:
        scheme, rest = s.split("://", 1)
        s = f"{scheme.lower()}://{rest}"
    return s.rstrip("/")


def set_storage_options(options: Mapping[str, Any] | None, root: Any = None) -> None:
    """Extra fsspec keyword arguments for the object-store locations :func:`as_path` makes from now on.

    ``root`` (a config's ``output_root``): only for that location and what lies under it, so configs
    for different stores (a benchmark's runs, a test process) each keep their own endpoint and
    credentials; empty ``options`` remove that root's entry. Without ``root``: for every object-store
    location that no root entry covers; ``set_storage_options(None)`` forgets every entry."""
    if root is None and not options:
        _options.clear()
        return
    key = "" if root is None else _root_key(root)
    if options:
        _options[key] = dict(options)
    else:
        _options.pop(key, None)


def storage_options(url: Any = None) -> dict[str, Any]:
    """The fsspec keyword arguments :func:`as_path` uses for the object-store URL ``url``: no listings
    cache, ``AWS_ENDPOINT_URL`` when set, then the entry of :func:`set_storage_options` for the longest
    root that ``url`` lies under (else the entry for every location, if any)."""
    opts: dict[str, Any] = {"use_listings_cache": False}
    ep = os.environ.get("AWS_ENDPOINT_URL")
    if ep:
        opts["endpoint_url"] = ep
    u = _root_key(url) if url is not None else None
    best = max((k for k in _options if k == "" or (u is not None and (u == k or u.startswith(k + "/")))),
               key=len, default=None)
    if best is not None:
        opts.update(_options[best])
    return opts


def is_url(p: Any) -> bool:
    """True for a string/UPath naming an object-store location (``scheme://`` other than file://)."""
    s = str(p)
    if isinstance(p, Path) or "://" not in s:
        return _collapsed(s) is not None
    return s.split("://", 1)[0].lower() not in _LOCAL_PROTOCOLS


def as_path(p: str | os.PathLike[str] | Any) -> AnyPath:
    """``Path`` for a local path (``~`` expanded), ``UPath`` for an object-store URL."""
    if not isinstance(p, (str, Path)) and hasattr(p, "protocol") and hasattr(p, "fs"):
        return p  # already a UPath
    if is_url(p):
        from upath import UPath

        s = _collapsed(str(p)) or str(p).rstrip("/")
        return UPath(s, **storage_options(s))
    return Path(os.fspath(p)).expanduser()


def _collapsed(s: str) -> str | None:
    """``s3://b/k`` for a pathlib-collapsed ``s3:/b/k``, else None."""
    head, sep, rest = s.partition(":/")
    if sep and head.lower() in _REMOTE_SCHEMES and rest and not rest.startswith("/"):
        return f"{head}://{rest.rstrip('/')}"
    return None


def is_remote(p: Any) -> bool:
    """True when ``p`` lives on an object store (not on this machine's filesystem)."""
    return not isinstance(p, Path) and getattr(p, "protocol", "") not in _LOCAL_PROTOCOLS


def fs_of(p: Any) -> Any:
    """The fsspec filesystem of ``p`` (local paths: fsspec's LocalFileSystem)."""
    if is_remote(p):
        return p.fs
    import fsspec

    return fsspec.filesystem("file")


def fs_key(p: Any) -> str:
    """The path of ``p`` as its filesystem names it (``bucket/key`` for S3, the absolute path locally)."""
    return p.path if is_remote(p) else str(Path(p))


def _translate(exc: Exception) -> Exception:
    text = str(exc)
    if "PreconditionFailed" in text or "412" in text or "pre-conditions" in text:
        return PreconditionFailed(text)
    return exc


def put_bytes(p: AnyPath, data: bytes) -> None:
    """Write ``data`` as the whole content of ``p`` atomically (see the module docstring)."""
    if is_remote(p):
        p.fs.pipe_file(p.path, data)
        return
    p = Path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, lambda f: f.write(data))


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Local files: a hidden temp path beside ``final`` (its folder must exist) for a writer that
    needs a path (an encoder); renamed onto ``final`` when the block exits cleanly, deleted otherwise."""
    tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def write_atomic(final: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Local files: call ``write(fileobj)`` on a hidden temp file beside ``final`` (its folder must
    exist), fsync, rename onto ``final``, fsync the folder. A crash leaves the old file or the new one."""
    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(final.parent)


@contextmanager
def flock_exclusive(lock_file: Path) -> Iterator[None]:
    """Local files: hold an exclusive ``fcntl.flock`` on ``lock_file`` (created if missing; its folder
    must exist) for the block. POSIX only."""
    import fcntl

    with open(lock_file, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def put_if_absent(p: AnyPath, data: bytes) -> bool:
    """Create ``p`` with ``data`` only if nothing is there; True when this call created it."""
    if is_remote(p):
        return put_conditional(p, data)
    p = Path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def put_conditional(p: Any, data: bytes, if_match: str | None = None) -> bool:
    """Object stores: ONE PUT of ``data`` to ``p`` only while ``p`` still has ETag ``if_match`` (None: only
    while ``p`` does not exist); False when the store refused it because the condition failed."""
    cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
    try:
        p.fs.pipe_file(p.path, data, **cond)
    except Exception as exc:  # s3fs re-raises botocore errors under its own types
        if isinstance(_translate(exc), PreconditionFailed):
            return False
        raise
    return True


def read_bytes(p: AnyPath) -> bytes:
    """The whole content of ``p`` (FileNotFoundError when missing)."""
    if is_remote(p):
        return p.fs.cat_file(p.path)
    return Path(p).read_bytes()


def remove(p: AnyPath, missing_ok: bool = True) -> None:
    """Delete file ``p``."""
    try:
        if is_remote(p):
            p.fs.rm_file(p.path)
        else:
            Path(p).unlink()
    except FileNotFoundError:
        if not missing_ok:
            raise


@contextmanager
def local_copy(p: AnyPath) -> Iterator[Path]:
    """A local file with the content of ``p``: ``p`` itself when local, else a downloaded temp file
    (same suffix; removed afterwards)."""
    if not is_remote(p):
        yield Path(p)
        return
    fd, tmp = tempfile.mkstemp(prefix="avits-dl-", suffix=Path(p.path).suffix)
    os.close(fd)
    try:
        p.fs.get_file(p.path, tmp)
        yield Path(tmp)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


@contextmanager
def local_target(p: AnyPath) -> Iterator[Path]:
    """A local path to write ``p``'s content to: ``p`` itself when local (its folder created), else a
    temp file uploaded in one PUT when the block exits without an error."""
    if not is_remote(p):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        yield Path(p)
        return
    d = tempfile.mkdtemp(prefix="avits-up-")
    tmp = Path(d) / Path(p.path).name
    try:
        yield tmp
        p.fs.put_file(str(tmp), p.path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def upload_dir(local: Path, p: AnyPath) -> int:
    """Copy every file under local folder ``local`` to ``p`` (same relative names); returns how many."""
    n = 0
    for f in sorted(Path(local).rglob("*")):
        if f.is_file():
            rel = f.relative_to(local).as_posix()
            dest = p / rel
            if is_remote(dest):
                dest.fs.put_file(str(f), dest.path)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest)
            n += 1
    return n


def remote_root_line(root: Any) -> str:
    """A pre-flight line for an object-store ``output_root``: 'ok: ...' when its bucket answers, else 'ERROR: ...'."""
    try:
        p = as_path(root)
        bucket = p.path.split("/", 1)[0]
        if not p.fs.exists(bucket):
            return f"ERROR: output_root {str(root)!r}: bucket {bucket!r} does not exist (or is not visible with these credentials)"
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, network: all reported as one line
        msg = " ".join(str(exc).split())[:300]
        return (f"ERROR: output_root {str(root)!r} cannot be reached ({type(exc).__name__}: {msg}); "
                "check AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or config storage")
    return f"ok: output_root {root} is reachable (object store)"


def read_with_etag(p: Any) -> tuple[bytes, str] | None:
    """(content, ETag) of object ``p`` from ONE GET (so the tag belongs to these bytes), or None when
    missing. Object stores only (S3 through s3fs)."""
    from fsspec.asyn import sync

    bucket, _, key = p.path.partition("/")

    async def get() -> tuple[bytes, str]:
        resp = await p.fs._call_s3("get_object", Bucket=bucket, Key=key)
        body = resp["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        return data, resp.get("ETag", "")

    try:
        return sync(p.fs.loop, get)
    except FileNotFoundError:
        return None
