"""avits_core.cache.SingleFlightCache, the one cache behind decoded clips, shared features and loaded
models: one computation per key across threads, LRU bounds by entries and by bytes, failures shared with
the waiters and never stored, a computation asking for its own key refused."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from avits_core import clipcache, loading
from avits_core.cache import InFlight, SingleFlightCache, deferring
from avits_core.verifiers import features


def test_two_threads_asking_for_one_key_compute_once():
    cache: SingleFlightCache = SingleFlightCache()
    started, release, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(threading.get_ident())
        started.set()
        assert release.wait(10)
        return object()

    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(cache.get_or_compute, "k", slow)
        assert started.wait(10)
        second = ex.submit(cache.get_or_compute, "k", slow)
        # the second caller is waiting for the first computation, not running its own
        t0 = time.monotonic()
        while cache.stats()[""]["waited"] == 0 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        # another key computes side by side while "k" is in flight
        assert cache.get_or_compute("other", lambda: 7) == 7
        release.set()
        a, b = first.result(10), second.result(10)
    assert a is b and len(calls) == 1
    assert cache.stats()[""] == {"hits": 0, "computed": 2, "waited": 1, "failed": 0, "evicted": 0}
    assert cache.get_or_compute("k", slow) is a and len(calls) == 1  # now a hit
    assert cache.stats()[""]["hits"] == 1


def test_entry_bound_evicts_the_least_recently_used():
    cache: SingleFlightCache = SingleFlightCache(max_entries=2)
    cache.get_or_compute("a", lambda: 1)
    cache.get_or_compute("b", lambda: 2)
    assert cache.get_or_compute("a", lambda: -1) == 1  # touch a: b is now the oldest
    cache.get_or_compute("c", lambda: 3)
    assert cache.keys() == ["a", "c"] and "b" not in cache
    assert cache.get_or_compute("b", lambda: 22) == 22  # recomputed after eviction; evicts a
    assert cache.keys() == ["c", "b"]
    assert cache.totals()["evicted"] == 2


def test_byte_bound_evicts_lru_and_never_keeps_a_value_larger_than_the_bound():
    cache: SingleFlightCache = SingleFlightCache(max_bytes=10, sizeof=len)
    cache.get_or_compute("x", lambda: b"4444")
    cache.get_or_compute("y", lambda: b"55555")
    assert cache.nbytes == 9 and len(cache) == 2
    cache.get_or_compute("z", lambda: b"333")  # 12 > 10: x (oldest) goes
    assert cache.keys() == ["y", "z"] and cache.nbytes == 8
    big = cache.get_or_compute("big", lambda: b"0123456789A")  # 11 > 10: returned, not kept
    assert big == b"0123456789A" and "big" not in cache and cache.nbytes == 8
    off: SingleFlightCache = SingleFlightCache(max_bytes=0, sizeof=len)
    assert off.get_or_compute("k", lambda: b"") == b"" and len(off) == 0  # 0 turns storing off


def test_an_exception_is_not_cached_and_the_waiter_sees_it():
    cache: SingleFlightCache = SingleFlightCache()
    started, release, calls = threading.Event(), threading.Event(), []

    class Boom(RuntimeError):
        pass

    def failing():
        calls.append(1)
        started.set()
        assert release.wait(10)
        raise Boom("no luck")

    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(cache.get_or_compute, "k", failing)
        assert started.wait(10)
        second = ex.submit(cache.get_or_compute, "k", failing)
        t0 = time.monotonic()
        while cache.stats()[""]["waited"] == 0 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        release.set()
        e1, e2 = first.exception(10), second.exception(10)
    assert isinstance(e1, Boom) and e2 is e1 and len(calls) == 1
    assert "k" not in cache and cache.stats()[""]["failed"] == 1
    assert cache.get_or_compute("k", lambda: "fine") == "fine"  # the next call computes again


def test_a_computation_asking_for_its_own_key_is_an_error_not_a_deadlock():
    cache: SingleFlightCache = SingleFlightCache()
    with pytest.raises(RuntimeError, match="'loop'.*same thread"):
        cache.get_or_compute("loop", lambda: cache.get_or_compute("loop", lambda: 1))
    # a nested computation of another key is fine
    assert cache.get_or_compute("outer", lambda: cache.get_or_compute("inner", lambda: 2) + 1) == 3
    assert set(cache.keys()) == {"inner", "outer"}


def test_discard_clear_and_groups():
    cache: SingleFlightCache = SingleFlightCache(group=lambda k: k[0])
    for k in (("m", 1), ("m", 2), ("g", 1)):
        cache.get_or_compute(k, lambda: k)
    assert cache.discard(lambda k: k[0] == "m") == 2 and cache.keys() == [("g", 1)]
    assert cache.stats()["m"]["computed"] == 2 and cache.stats()["g"]["computed"] == 1
    cache.clear()
    assert len(cache) == 0 and cache.stats() == {}


def test_the_three_caches_are_this_class():
    assert isinstance(features.FEATURES, SingleFlightCache)
    assert isinstance(loading._CACHE, SingleFlightCache)
    assert isinstance(clipcache.ClipCache(max_bytes=1)._cache, SingleFlightCache)


def test_put_replaces_and_respects_the_bound():
    cache: SingleFlightCache = SingleFlightCache(max_bytes=6, sizeof=len)
    cache.put("a", b"123")
    cache.put("a", b"12")  # replaces: bytes follow the new value
    assert cache.peek("a") == b"12" and cache.nbytes == 2
    cache.put("b", b"12345")  # 7 > 6: a goes
    assert cache.keys() == ["b"] and cache.nbytes == 5
    cache.put("c", b"1234567")  # larger than the bound: not kept
    assert "c" not in cache and cache.keys() == ["b"]


def test_deferring_raises_for_a_key_another_thread_computes_and_a_computation_never_defers():
    """Inside ``deferring()`` a deferrable cache raises InFlight (a BaseException: a verifier's ``except
    Exception`` cannot swallow it) for a key in flight in another thread, instead of waiting; outside it,
    or in a cache that is not deferrable, the caller waits. A computation run inside ``deferring()``
    waits for the keys it needs, so its own flight never fails with InFlight."""
    cache: SingleFlightCache = SingleFlightCache(deferrable=True)
    plain: SingleFlightCache = SingleFlightCache()
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        assert release.wait(10)
        return "v"

    assert not issubclass(InFlight, Exception)
    with ThreadPoolExecutor(3) as ex:
        first = ex.submit(cache.get_or_compute, "k", slow)
        assert started.wait(10)
        with deferring():
            with pytest.raises(InFlight) as info:
                cache.get_or_compute("k", slow)
            assert info.value.key == "k"
            assert cache.get_or_compute("other", lambda: 1) == 1  # a key nobody computes: computed here
            # a computation inside deferring() that needs "k" waits for it (released below)
            nested = ex.submit(lambda: _in_deferring(lambda: cache.get_or_compute("outer", lambda: cache.get_or_compute("k", slow) + "!")))
            time.sleep(0.2)
            assert not nested.done()
        release.set()
        assert first.result(10) == "v" and nested.result(10) == "v!"
    assert cache.stats()[""]["failed"] == 0 and cache.stats()[""]["waited"] == 1  # the nested one
    # not deferrable: deferring() changes nothing
    started.clear(), release.clear()
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(plain.get_or_compute, "k", slow)
        assert started.wait(10)
        second = ex.submit(lambda: _in_deferring(lambda: plain.get_or_compute("k", slow)))
        time.sleep(0.1)
        release.set()
        assert first.result(10) == second.result(10) == "v"


def _in_deferring(fn):
    with deferring():
        return fn()


def test_the_feature_cache_defers_and_the_others_wait():
    assert features.FEATURES.deferrable
    assert not clipcache.clip_cache()._cache.deferrable
    assert not loading._CACHE.deferrable
