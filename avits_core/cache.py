"""One bounded, thread-safe, single-flight memo: the cache behind decoded clips
(:mod:`avits_core.clipcache`), shared verifier features (:class:`avits_core.verifiers.features.FeatureCache`)
and loaded models / generator and verifier instances (:mod:`avits_core.loading`).

``SingleFlightCache.get_or_compute(key, compute)`` returns the value stored under ``key``, or calls
``compute()`` and stores what it returns. The rules, the same for every user:

- *Single flight*: while one thread computes a key, other threads asking for that key wait for it and get
  the same value (or the same exception). Different keys compute side by side: no lock is held while
  ``compute`` runs, so a ``compute`` may itself ask the cache for *other* keys (a generator whose
  constructor loads its weights through the cache). Asking for the key it is computing is a
  ``RuntimeError`` naming the key, not a deadlock.
- *Errors are not stored*: a failed computation is raised to its caller and to every thread that waited
  for it; the next call computes again.
- *Bounded*: at most ``max_entries`` entries and/or at most ``max_bytes`` bytes as measured by ``sizeof``
  (None: no bound); the least recently used entries go first. A value larger than the whole byte bound
  (or any value when ``max_bytes`` is 0) is returned but not kept.
- *Waiting gives the slot back*: a thread that waits for another's flight lends its compute slot
  (:func:`avits_core.threads.compute_slot`) to others meanwhile, so a bound on the threads computing at
  once never leaves the cores idle behind a wait, and never deadlocks on one.
- *Counters* per group (``group(key)``, default one group ``""``): ``hits``, ``computed`` (misses that
  ran ``compute``), ``waited`` (found the key in flight), ``failed``, ``evicted``.

- *Deferring* (caches made with ``deferrable=True``: the shared verifier features): inside a
  :func:`deferring` block, asking for a key that *another* thread is computing raises :class:`InFlight`
  at once instead of waiting, so the caller can do other work first (a verifier scores its next clip
  and comes back to this one: two verifiers that share a feature then compute it for different clips
  instead of one waiting for the other). ``compute`` itself never defers (it waits for the keys it
  needs), so no flight fails because of it. A deferred request counts as nothing.

Subclasses may override :meth:`SingleFlightCache._compute` (run the computation: e.g. limit numeric
threads, freeze the result's arrays) and :meth:`SingleFlightCache.sizeof`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, Iterator, TypeVar

from avits_core.threads import slot_released

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

COUNTERS = ("hits", "computed", "waited", "failed", "evicted")

_defer = threading.local()


class InFlight(BaseException):
    """Raised inside :func:`deferring` by a deferrable cache when another thread is computing the key.

    A BaseException (like GeneratorExit): code between the caller of :func:`deferring` and the cache
    (a verifier's ``except Exception`` around its features) must not mistake it for a failure."""

    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


class deferring:
    """``with deferring():`` deferrable caches raise :class:`InFlight` for keys another thread is
    computing, instead of waiting for them (module docstring); ``deferring(False)`` switches that off for
    the block. Nests; thread-local."""

    def __init__(self, on: bool = True) -> None:
        self.on = on

    def __enter__(self) -> "deferring":
        self._before = getattr(_defer, "on", False)
        _defer.on = self.on
        return self

    def __exit__(self, *exc: Any) -> None:
        _defer.on = self._before


class _Flight:
    __slots__ = ("done", "value", "error", "owner")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.owner = threading.get_ident()


class SingleFlightCache(Generic[K, V]):
    """Values computed once per key, shared between threads, bounded (LRU); see the module docstring."""

    def __init__(self, *, max_entries: int | None = None, max_bytes: int | None = None,
                 sizeof: Callable[[Any], int] | None = None,
                 group: Callable[[Any], str] | None = None, deferrable: bool = False) -> None:
        if max_entries is not None and max_entries < 0:
            raise ValueError(f"max_entries must be >= 0 or None, got {max_entries!r}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._group = group
        self.deferrable = deferrable
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()  # key -> (value, size)
        self._inflight: dict[Any, _Flight] = {}
        self._bytes = 0
        self._lock = threading.Lock()  # guards the dicts and counters; never held while computing
        self._stats: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------------------ hooks
    def _compute(self, key: K, compute: Callable[[], V]) -> V:
        """Run one computation (outside the lock). Override to wrap it."""
        return compute()

    def sizeof(self, value: Any) -> int:
        """Bytes a value counts against ``max_bytes`` (the ``sizeof`` given, else 0)."""
        return int(self._sizeof(value)) if self._sizeof is not None else 0

    # ------------------------------------------------------------------------------ use
    def _count(self, key: Any, what: str, n: int = 1) -> None:
        g = self._group(key) if self._group is not None else ""
        d = self._stats.get(g)
        if d is None:
            d = self._stats[g] = dict.fromkeys(COUNTERS, 0)
        d[what] += n

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The value of ``key``, computing it with ``compute()`` at most once at a time (module docstring)."""
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                self._count(key, "hits")
                return hit[0]
            flight = self._inflight.get(key)
            owner = flight is None
            if owner:
                flight = self._inflight[key] = _Flight()
                self._count(key, "computed")
            elif flight.owner == threading.get_ident():
                raise RuntimeError(f"cache key {key!r} was asked for while it is being computed by the same "
                                   f"thread (a computation that needs its own result)")
            elif self.deferrable and getattr(_defer, "on", False):
                raise InFlight(key)
            else:
                self._count(key, "waited")
        if not owner:
            with slot_released():  # the owner may need a compute slot to finish (avits_core.threads)
                flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            with deferring(False):  # a computation waits for the keys it needs (never fails with InFlight)
                value = self._compute(key, compute)
                size = self.sizeof(value)
        except BaseException as exc:
            with self._lock:
                self._inflight.pop(key, None)
                self._count(key, "failed")
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            self._inflight.pop(key, None)
            self._store(key, value, size)
        flight.value = value
        flight.done.set()
        return value

    def _keeps(self, size: int) -> bool:
        if self.max_entries == 0:
            return False
        if self.max_bytes is not None and (self.max_bytes == 0 or size > self.max_bytes):
            return False
        return True

    def _evict(self) -> None:  # under the lock
        while self._data and ((self.max_entries is not None and len(self._data) > self.max_entries)
                              or (self.max_bytes is not None and self._bytes > self.max_bytes)):
            k, (_, size) = self._data.popitem(last=False)
            self._bytes -= size
            self._count(k, "evicted")

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` now (replacing a stored one), within the bounds."""
        size = self.sizeof(value)
        with self._lock:
            self._store(key, value, size)

    def _store(self, key: Any, value: Any, size: int) -> None:  # under the lock
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if self._keeps(size):
            self._data[key] = (value, size)
            self._bytes += size
            self._evict()

    def peek(self, key: K, default: Any = None) -> Any:
        """The stored value of ``key`` (no counter, no recency change), else ``default``."""
        with self._lock:
            hit = self._data.get(key)
            return default if hit is None else hit[0]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def keys(self) -> list[K]:
        """The stored keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    @property
    def nbytes(self) -> int:
        """Bytes held (sum of ``sizeof`` of the stored values)."""
        with self._lock:
            return self._bytes

    def discard(self, where: Callable[[Any], bool] | None = None) -> int:
        """Drop the stored entries whose key satisfies ``where`` (all when None); returns how many.
        Computations in flight finish and store their value normally."""
        with self._lock:
            gone = [k for k in self._data if where is None or where(k)]
            for k in gone:
                self._bytes -= self._data.pop(k)[1]
            return len(gone)

    def clear(self, counters: bool = True) -> None:
        """Drop every stored value (and, by default, the counters)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            if counters:
                self._stats.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per group: {group: {hits, computed, waited, failed, evicted}}."""
        with self._lock:
            return {g: dict(d) for g, d in self._stats.items()}

    def totals(self) -> dict[str, int]:
        """Counters summed over groups, plus ``entries`` and ``bytes``."""
        with self._lock:
            out = dict.fromkeys(COUNTERS, 0)
            for d in self._stats.values():
                for k, v in d.items():
                    out[k] += v
            out["entries"] = len(self._data)
            out["bytes"] = self._bytes
            return out
