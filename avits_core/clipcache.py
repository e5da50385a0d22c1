"""A process-wide cache of decoded mp4 clips, so a scoring pass decodes each candidate's file once
rather than once per verifier.

``read_clip(path)`` returns :func:`avits_core.media.read_mp4` of the file, decoding it only when the
cache has no clip for the same (resolved path, file size, modification time in ns): a rewritten
file (other size or mtime) is decoded again, so the cache can never serve stale pixels.

Decisions:
- *Bounded by bytes*, not entries: a 2 s 64x64 SynthAV clip decodes to ~0.4 MB, a 5 s 768x512 LTX-2
  clip to ~140 MB. The bound is ``AVITS_CLIP_CACHE_MB`` (default 512 MB; 0 turns the cache off);
  least recently used clips go first; a clip larger than the whole bound is returned but not kept.
  Verifier tasks of one scoring pass walk the candidates in the same (event) order, so when they run
  in parallel threads the clips they need are the recent ones; when they run one after the other,
  the bound decides how many clips the next verifier finds (the demo's 192 clips take ~80 MB).
- *Single flight*: while one thread decodes a file, other threads asking for it wait and share the
  result (two verifier tasks in parallel threads decode a file once).
- *Shared, read-only*: every caller gets its own :class:`AVClip` (its own ``meta`` dict) over the
  same arrays, which are made read-only, so a verifier that tried to change pixels in place would
  fail loudly instead of corrupting another verifier's input.
- Errors (missing or unreadable file) are raised to every waiting caller and never stored.
- Object-store paths (``s3://``, :mod:`avits_core.store.fs`) are read through ``read_mp4`` every
  time (not cached): there is no size + mtime key for them here yet.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from avits_core.media import AVClip

log = logging.getLogger(__name__)

DEFAULT_MAX_MB = 512.0


def _env_max_bytes() -> int:
    raw = os.environ.get("AVITS_CLIP_CACHE_MB", str(DEFAULT_MAX_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"AVITS_CLIP_CACHE_MB must be a number of megabytes, got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"AVITS_CLIP_CACHE_MB must be >= 0, got {raw!r}")
    return int(mb * 1024 * 1024)


def clip_nbytes(clip: AVClip) -> int:
    """Bytes held by a clip's arrays (video + audio)."""
    return int(clip.video.nbytes + clip.audio.nbytes)


class _Flight:
    __slots__ = ("done", "clip", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.clip: AVClip | None = None
        self.error: BaseException | None = None


class ClipCache:
    """Decoded clips keyed by (resolved path, size, mtime_ns), at most ``max_bytes`` in total (LRU)."""

    def __init__(self, max_bytes: int | None = None, reader: Callable[[Path], AVClip] | None = None) -> None:
        self.max_bytes = _env_max_bytes() if max_bytes is None else int(max_bytes)
        self._reader = reader
        self._data: OrderedDict[tuple, AVClip] = OrderedDict()
        self._inflight: dict[tuple, _Flight] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = {"hits": 0, "decoded": 0, "waited": 0, "evicted": 0}

    @staticmethod
    def key(path: str | os.PathLike[str]) -> tuple:
        """(resolved path, size, mtime_ns); raises like os.stat for a missing file."""
        p = Path(path).resolve()
        st = p.stat()
        return (str(p), st.st_size, st.st_mtime_ns)

    def _read(self, path: Path) -> AVClip:
        if self._reader is not None:
            return self._reader(path)
        from avits_core.media import read_mp4

        return read_mp4(path)

    def read(self, path: str | os.PathLike[str]) -> AVClip:
        """The decoded clip of ``path`` (see the module docstring); raises what ``read_mp4`` raises."""
        from avits_core.store import fs as sfs

        if sfs.is_url(path) or sfs.is_remote(path):
            return self._read(path)  # object store: not cached (no cheap version key here)
        path = Path(path)
        try:
            key = self.key(path)
        except OSError:
            return self._read(path)  # let the reader raise its own, clearer error (file not found)
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                self._stats["hits"] += 1
                return _view(hit)
            flight = self._inflight.get(key)
            owner = flight is None
            if owner:
                flight = self._inflight[key] = _Flight()
                self._stats["decoded"] += 1
            else:
                self._stats["waited"] += 1
        if not owner:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return _view(flight.clip)
        try:
            clip = self._read(path)
        except BaseException as exc:
            with self._lock:
                self._inflight.pop(key, None)
            flight.error = exc
            flight.done.set()
            raise
        clip.video.setflags(write=False)
        clip.audio.setflags(write=False)
        n = clip_nbytes(clip)
        with self._lock:
            self._inflight.pop(key, None)
            if 0 < n <= self.max_bytes:
                self._data[key] = clip
                self._bytes += n
                while self._bytes > self.max_bytes and self._data:
                    _, old = self._data.popitem(last=False)
                    self._bytes -= clip_nbytes(old)
                    self._stats["evicted"] += 1
        flight.clip = clip
        flight.done.set()
        return _view(clip)

    def stats(self) -> dict[str, int]:
        """hits, decoded, waited, evicted, entries, bytes."""
        with self._lock:
            return {**self._stats, "entries": len(self._data), "bytes": self._bytes}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self._stats = {k: 0 for k in self._stats}


def _view(clip: AVClip) -> AVClip:
    """A new AVClip over the same (read-only) arrays with its own meta dict."""
    return dataclasses.replace(clip, meta=dict(clip.meta))


_CACHE: ClipCache | None = None
_CACHE_LOCK = threading.Lock()


def clip_cache() -> ClipCache:
    """The process-wide cache (created on first use with the bound from ``AVITS_CLIP_CACHE_MB``)."""
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None:
            _CACHE = ClipCache()
        return _CACHE


def read_clip(path: str | os.PathLike[str]) -> AVClip:
    """``read_mp4(path)``, decoded at most once per file version in this process (module docstring)."""
    return clip_cache().read(path)
