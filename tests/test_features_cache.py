"""Work done once per clip: the shared feature cache (single flight, bounded, read-only values), the
numeric-thread limit inside feature computation, and the decoded-clip cache."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from avclips import bounce_clip, jump_clip  # noqa: E402

from avits_core.clipcache import ClipCache  # noqa: E402
from avits_core.media import read_mp4, write_mp4  # noqa: E402
from avits_core.verifiers import features as F  # noqa: E402
from avits_core.verifiers.av_align import AVAlign  # noqa: E402
from avits_core.verifiers.av_sync import AVSync  # noqa: E402


def _clips(n: int):
    return [jump_clip(audio_shift=0.02 * i, video_noise=2.0, seed=i) for i in range(n // 2)] + \
           [bounce_clip(audio_shift=0.03 * i, height=24.0 + 2 * i) for i in range(n - n // 2)]


@pytest.fixture(autouse=True)
def fresh_cache():
    F.FEATURES.clear()
    yield
    F.FEATURES.clear()


def test_cached_features_equal_the_direct_computation_and_are_computed_once():
    clip = jump_clip(video_noise=3.0)
    m = F.motion_energy(clip.video, clip.fps)
    e = F.audio_onset_envelope(clip.audio, clip.sample_rate, clip.fps)
    direct_m = F._motion_energy(clip.video, clip.fps)
    direct_e = F._onset_envelope(clip.audio, clip.sample_rate, clip.fps, F.ONSET_OVERSAMPLE)
    np.testing.assert_array_equal(m.values, direct_m.values)
    np.testing.assert_array_equal(m.times, direct_m.times)
    np.testing.assert_array_equal(e.values, direct_e.values)
    # a copy of the same content is a hit; another fps or other samples are other keys
    assert F.motion_energy(clip.video.copy(), clip.fps) is m
    assert F.audio_onset_envelope(clip.audio.copy(), clip.sample_rate, clip.fps) is e
    assert F.motion_energy(clip.video, 2 * clip.fps) is not m
    st = F.FEATURES.stats()
    assert st["motion"] == {"hits": 1, "computed": 2, "waited": 0, "failed": 0, "evicted": 0}
    assert st["onset"] == {"hits": 1, "computed": 1, "waited": 0, "failed": 0, "evicted": 0}
    assert not m.values.flags.writeable and not e.values.flags.writeable


def _alone_then_side_by_side(clips):
    """Each of av_align and av_sync alone on an empty cache, then both in two threads started together
    on an empty cache (thread named after its verifier): {name: values} twice, compared here."""
    prompts = [None] * len(clips)
    ref = {}
    for v in (AVAlign(), AVSync()):
        F.FEATURES.clear()
        ref[v.name] = v.score(clips, prompts).values
    F.FEATURES.clear()
    start = threading.Barrier(2)

    def run(v):
        threading.current_thread().name = v.name
        start.wait()
        return v.score(clips, prompts).values

    with ThreadPoolExecutor(2) as ex:
        got = dict(zip(("av_align", "av_sync"), ex.map(run, (AVAlign(), AVSync()))))
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])
    return F.FEATURES.stats()


def test_av_align_and_av_sync_in_parallel_threads_compute_each_feature_once_per_clip():
    st = _alone_then_side_by_side(_clips(6))
    # 6 distinct clips: 6 flow computations and 6 onset envelopes for two verifiers, not 12
    assert st["motion"]["computed"] == 6 and st["onset"]["computed"] == 6
    assert st["motion"]["hits"] + st["motion"]["waited"] == 6


def test_parallel_verifiers_sharing_a_feature_work_on_different_clips_instead_of_waiting(monkeypatch):
    """Two verifiers that share the flow and onset features, scoring the same 12 clips in two threads:
    a clip whose feature the other thread is computing is put off to the end of the loop
    (Verifier.score_clips + cache.deferring), so neither waits in step behind the other (the old loop
    waited on most clips); still one computation per clip and feature, the same values as alone."""
    who = []
    real = F._motion_energy

    def counted(*a, **k):
        if threading.current_thread().name in ("av_align", "av_sync"):
            who.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(F, "_motion_energy", counted)
    st = _alone_then_side_by_side(_clips(12))
    assert st["motion"]["computed"] == 12 and st["onset"]["computed"] == 12 and len(who) == 12
    assert sum(k["waited"] for k in st.values()) <= 3, st  # at most what is in flight at the end (old: ~27)
    assert set(who) == {"av_align", "av_sync"}  # both threads computed flow: the work was shared


def test_single_flight_waits_for_the_computation_in_progress_and_shares_failures():
    cache = F.FeatureCache(maxsize=4)
    calls = []

    def slow():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return np.arange(3.0)

    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda _: cache.get_or_compute(("k", 1), slow), range(8)))
    assert len(calls) == 1 and all(o is outs[0] for o in outs)
    assert cache.stats()["k"]["computed"] == 1 and cache.stats()["k"]["waited"] + cache.stats()["k"]["hits"] == 7

    def boom():
        calls.append("boom")
        time.sleep(0.1)
        raise F.FlatSignalError("nothing here")

    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(cache.get_or_compute, ("bad",), boom) for _ in range(4)]
        errs = [f.exception() for f in futs]
    assert all(isinstance(e, F.FlatSignalError) for e in errs) and calls.count("boom") == 1
    with pytest.raises(F.FlatSignalError):  # failures are not stored: a later call tries again
        cache.get_or_compute(("bad",), boom)
    assert calls.count("boom") == 2
    # bounded: least recently used first
    for i in range(6):
        cache.get_or_compute(("n", i), lambda i=i: i)
    assert len(cache) == 4
    assert cache.get_or_compute(("n", 0), lambda: "recomputed") == "recomputed"
    assert cache.get_or_compute(("n", 5), lambda: "x") == 5


def test_flat_signals_still_raise_through_the_cache():
    clip = jump_clip()
    with pytest.raises(F.FlatSignalError, match="silent"):
        F.audio_onset_envelope(np.zeros_like(clip.audio), clip.sample_rate, clip.fps)
    with pytest.raises(F.FlatSignalError, match="3 video frames"):
        F.motion_energy(clip.video[:2], clip.fps)


def test_numeric_threads_are_limited_inside_and_restored_after():
    import cv2
    from threadpoolctl import threadpool_info

    def blas():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before_blas, before_cv = blas(), cv2.getNumThreads()
    with F.numeric_threads(1):
        assert blas() <= {1} and cv2.getNumThreads() == 1
        with F.numeric_threads(1):  # nested (another thread's computation): still limited
            pass
        assert blas() <= {1}
    assert blas() == before_blas and cv2.getNumThreads() == before_cv


# --------------------------------------------------------------------------- decoded clips


def test_clip_cache_decodes_once_and_decodes_again_when_the_file_changes(tmp_path):
    decoded = []

    def reader(p):
        decoded.append(p)
        return read_mp4(p)

    clip = jump_clip()
    path = write_mp4(clip, tmp_path / "a.mp4")
    cache = ClipCache(max_bytes=64 * 2**20, reader=reader)
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: cache.read(path), range(4)))
    assert len(decoded) == 1
    assert all(o.video is outs[0].video for o in outs) and outs[0].meta is not outs[1].meta
    np.testing.assert_array_equal(outs[0].video, read_mp4(path).video)
    assert not outs[0].video.flags.writeable
    with pytest.raises(ValueError):
        outs[0].video[0, 0, 0, 0] = 1
    # a rewritten file (new mtime / size) is decoded again, never served stale
    write_mp4(jump_clip(audio_shift=0.1), path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = cache.read(path)
    assert len(decoded) == 2
    np.testing.assert_array_equal(again.audio, read_mp4(path).audio)
    st = cache.stats()
    assert st["decoded"] == 2 and st["hits"] + st["waited"] == 3 and st["entries"] == 2


def test_clip_cache_is_bounded_by_bytes_and_errors_are_not_stored(tmp_path):
    paths = [write_mp4(jump_clip(seed=i, video_noise=1.0), tmp_path / f"c{i}.mp4") for i in range(3)]
    one = read_mp4(paths[0])
    size = one.video.nbytes + one.audio.nbytes
    cache = ClipCache(max_bytes=int(2.5 * size))
    for p in paths:
        cache.read(p)
    st = cache.stats()
    assert st["entries"] == 2 and st["evicted"] == 1 and st["bytes"] <= 2.5 * size
    cache.read(paths[0])  # evicted first (least recently used): decoded again
    assert cache.stats()["decoded"] == 4
    off = ClipCache(max_bytes=0)
    off.read(paths[0])
    off.read(paths[0])
    assert off.stats()["decoded"] == 2 and off.stats()["entries"] == 0
    from avits_core.errors import AvitsError

    with pytest.raises(AvitsError, match="not found"):
        cache.read(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    for _ in range(2):
        with pytest.raises(AvitsError, match="bad.mp4"):
            cache.read(bad)
    assert cache.stats()["entries"] == 2


def test_clip_cache_size_from_the_environment(monkeypatch):
    monkeypatch.setenv("AVITS_CLIP_CACHE_MB", "1.5")
    assert ClipCache().max_bytes == int(1.5 * 2**20)
    monkeypatch.setenv("AVITS_CLIP_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="AVITS_CLIP_CACHE_MB.*'lots'"):
        ClipCache()


def test_digest_of_a_frozen_array_is_remembered_and_forgotten_with_it():
    import gc

    a = np.arange(1000, dtype=np.float32)
    a.setflags(write=False)
    d = F.array_digest(a)
    assert F.array_digest(a) == d == F.array_digest(a.copy())  # same content, same key
    assert id(a) in F._digests
    b = np.arange(1000, dtype=np.float32)  # writable: never remembered (it may change)
    F.array_digest(b)
    assert id(b) not in F._digests
    b[0] = 5
    assert F.array_digest(b) != d
    key = id(a)
    del a
    gc.collect()
    assert key not in F._digests
