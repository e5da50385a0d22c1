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
from pathlib import Path
from typing import Callable

from avits_core.cache import SingleFlightCache
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


class ClipCache:
    """Decoded clips keyed by (resolved path, size, mtime_ns), at most ``max_bytes`` in total (LRU), in a
    :class:`avits_core.cache.SingleFlightCache` (single flight; errors raised to every waiter, not kept)."""

    def __init__(self, max_bytes: int | None = None, reader: Callable[[Path], AVClip] | None = None) -> None:
        self.max_bytes = _env_max_bytes() if max_bytes is None else int(max_bytes)
        self._reader = reader
        self._cache: SingleFlightCache[tuple, AVClip] = SingleFlightCache(max_bytes=self.max_bytes, sizeof=clip_nbytes)

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

    def _decode(self, path: Path) -> AVClip:
        clip = self._read(path)
        clip.video.setflags(write=False)
        clip.audio.setflags(write=False)
        return clip

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
        return _view(self._cache.get_or_compute(key, lambda: self._decode(path)))

    def stats(self) -> dict[str, int]:
        """hits, decoded, waited, evicted, entries, bytes."""
        t = self._cache.totals()
        return {"hits": t["hits"], "decoded": t["computed"], "waited": t["waited"], "evicted": t["evicted"],
                "entries": t["entries"], "bytes": t["bytes"]}

    def clear(self) -> None:
        self._cache.clear()


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
