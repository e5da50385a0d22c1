"""Event features and the synchronisation verifiers av_align and av_sync, on hand-made clips."""

from __future__ import annotations

import numpy as np
import pytest
from avclips import EVENTS, FPS, jump_clip, silent, static

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.registry import VERIFIERS
from avits_core.verifiers.av_align import AVAlign, av_align_score, clip_events, count_hits
from avits_core.verifiers.av_sync import AVSync, estimate_offset
from avits_core.verifiers.features import (
    FlatSignalError,
    audio_onset_envelope,
    audio_peaks,
    motion_energy,
    video_peaks,
)

FRAME = 1.0 / FPS
PROMPT = Prompt("p0", "a yellow square jumps three times with a click")


def _score(verifier, clips):
    return verifier.score(clips, [PROMPT] * len(clips))


def test_features_find_the_events():
    clip = jump_clip(video_noise=6.0, audio_noise=0.02)
    env = audio_onset_envelope(clip.audio, clip.sample_rate, clip.fps)
    assert env.times.shape == env.values.shape and np.all(env.values >= 0)
    a = audio_peaks(env, clip.sample_rate, clip.fps)
    motion = motion_energy(clip.video, clip.fps)
    assert motion.values.shape == (clip.num_frames - 1,)
    assert motion.times[0] == pytest.approx(0.5 * FRAME)
    v = video_peaks(motion)
    assert a.shape == v.shape == (3,)
    np.testing.assert_allclose(a, EVENTS, atol=0.012)  # onset located within ~half an envelope hop
    np.testing.assert_allclose(v, EVENTS, atol=1e-9)  # jumps are placed at mid-frame times


def test_count_hits_is_one_to_one_within_one_frame():
    tol = FRAME
    assert count_hits(np.array([1.0, 1.01]), np.array([1.0]), tol) == 1  # a video peak is used once
    assert count_hits(np.array([1.0]), np.array([0.95, 1.02]), tol) == 1
    assert count_hits(np.array([0.0, 0.1]), np.array([0.05, 0.15]), tol) == 2  # greedy-but-maximal
    assert count_hits(np.array([1.0]), np.array([1.0 + 1.5 * tol]), tol) == 0
    assert av_align_score(np.array([0.5, 1.0]), np.array([0.5, 1.5]), tol) == pytest.approx(1 / 3)
    assert av_align_score(np.array([0.5]), np.array([]), tol) == 0.0  # events on one side only
    with pytest.raises(FlatSignalError, match="no audio or video events"):
        av_align_score(np.array([]), np.array([]), tol)


def test_av_align_prefers_the_aligned_clip():
    v = AVAlign()
    for noise in ({}, {"video_noise": 6.0, "audio_noise": 0.02}):
        clips = [jump_clip(audio_shift=s, **noise) for s in (0.0, 0.25, 0.4)]
        res = _score(v, clips)
        assert all(e is None for e in res.errors), res.errors
        assert np.all((res.values >= 0) & (res.values <= 1))
        assert res.values[0] == pytest.approx(1.0)
        assert res.values[0] > res.values[1] and res.values[0] > res.values[2]


def test_av_align_partial_alignment_is_an_iou():
    # video jumps at three times; only two clicks land within a frame of a jump, one is 3 frames off
    clip = jump_clip()
    audio = jump_clip((EVENTS[0], EVENTS[1], EVENTS[2] + 3 * FRAME)).audio
    a, v = clip_events(AVClip(clip.video, clip.fps, audio, clip.sample_rate))
    assert len(a) == len(v) == 3
    score = AVAlign().score_clip(AVClip(clip.video, clip.fps, audio, clip.sample_rate), PROMPT)
    assert score == pytest.approx(2 / 4)


@pytest.mark.parametrize("shift", [0.25, -0.25, 0.4, -0.4, 0.1])
def test_av_sync_recovers_a_known_shift(shift):
    clip = jump_clip(audio_shift=shift)
    assert estimate_offset(clip) == pytest.approx(shift, abs=FRAME)
    assert AVSync().score_clip(clip, PROMPT) == pytest.approx(-abs(shift), abs=FRAME)


def test_av_sync_aligned_clip_scores_about_zero_and_best():
    v = AVSync()
    clips = [jump_clip(audio_shift=s, video_noise=6.0, audio_noise=0.02) for s in (0.0, 0.25, -0.25)]
    res = _score(v, clips)
    assert all(e is None for e in res.errors), res.errors
    assert -0.02 < res.values[0] <= 0.0
    assert res.values[0] > res.values[1] and res.values[0] > res.values[2]
    assert np.all((res.values >= -0.5) & (res.values <= 0.0))


@pytest.mark.parametrize("name", ["av_align", "av_sync"])
def test_flat_clips_become_error_rows_not_zero(name):
    verifier = VERIFIERS.create(name)
    good = jump_clip()
    short = AVClip(good.video[:2], good.fps, good.audio, good.sample_rate)
    res = _score(verifier, [good, silent(good), static(good), short])
    assert res.errors[0] is None and np.isfinite(res.values[0])
    assert list(res.ok) == [True, False, False, False]
    assert np.all(np.isnan(res.values[1:]))
    assert "silent" in res.errors[1]
    assert "static" in res.errors[2]
    assert "2 frames < 6" in res.errors[3]  # min_input, checked before any measurement


def test_registered_metadata():
    align, sync = VERIFIERS.create("av_align"), VERIFIERS.create("av_sync")
    assert isinstance(align, AVAlign) and isinstance(sync, AVSync)
    assert (align.name, align.version, align.higher_is_better, align.value_range) == ("av_align", "1", True, (0.0, 1.0))
    assert (sync.name, sync.version, sync.higher_is_better, sync.value_range) == ("av_sync", "1", True, (-0.5, 0.0))
    assert not align.needs_weights and not sync.needs_weights


def test_motion_cache_is_keyed_by_content():
    from avits_core.verifiers import features

    clip = jump_clip()
    features._MOTION_CACHE.clear()
    first = motion_energy(clip.video, clip.fps)
    again = motion_energy(clip.video.copy(), clip.fps)
    assert again is first  # same frames: served from the cache
    assert not first.values.flags.writeable
    moved = clip.video.copy()
    moved[3:] = np.roll(moved[3:], 5, axis=2)  # one more jump, between frames 2 and 3
    other = motion_energy(moved, clip.fps)
    assert other is not first and other.values[2] > 1.0 and first.values[2] < 0.1
    assert motion_energy(clip.video, 2 * clip.fps).times[0] == pytest.approx(first.times[0] / 2)


def test_bouncing_ball_impacts_are_seen():
    """A physical bounce (velocity reverses at the impact), not a teleporting square."""
    from avclips import BOUNCES, bounce_clip

    aligned = bounce_clip()
    a, v = clip_events(aligned)
    np.testing.assert_allclose(a, BOUNCES, atol=0.012)
    np.testing.assert_allclose(v, BOUNCES, atol=FRAME)
    res = _score(AVAlign(), [bounce_clip(audio_shift=s) for s in (0.0, 0.25, -0.25)])
    assert res.values[0] == pytest.approx(1.0) and res.values[0] > max(res.values[1:])
    for shift in (0.0, 0.25, -0.25, 0.1):
        assert estimate_offset(bounce_clip(audio_shift=shift)) == pytest.approx(shift, abs=0.03)
    # the smoothing is what removes the bias of the lopsided motion peaks around an impact
    assert abs(estimate_offset(aligned, smooth_frames=0.0)) > 2 * abs(estimate_offset(aligned))


def test_video_peaks_prominence_rule_handles_continuous_motion():
    from avits_core.verifiers.features import Series

    t = (np.arange(23) + 0.5) / FPS
    # always moving (floor 1.0) with three bumps and small wiggles: the bumps are the peaks
    values = 1.0 + 0.02 * np.sin(7 * np.arange(23)) + np.isin(np.arange(23), [4, 11, 19]) * 1.5
    np.testing.assert_allclose(video_peaks(Series(t, values)), t[[4, 11, 19]])
    # smoothing merges two humps one frame either side of an event into one peak at the event
    humps = np.zeros(23)
    humps[[9, 11]] = 1.0
    assert len(video_peaks(Series(t, humps))) == 2
    np.testing.assert_allclose(video_peaks(Series(t, humps), smooth_frames=1.5), t[[10]])
    assert len(video_peaks(Series(t, np.ones(23)))) == 0


def test_static_textured_picture_is_an_error_row_not_a_zero():
    """Farnebäck reports ~0.005 px/frame on identical textured frames; av_align once stored ok 0.0 there."""
    from avclips import bounce_clip

    from avits_core.prompts import Prompt

    clip = static(bounce_clip())
    for v in (AVAlign(), AVSync(), AVAlign(protocol="javisbench")):
        res = v.score([clip, bounce_clip()], [Prompt("p", "x")] * 2)
        assert np.isnan(res.values[0]) and "video is static" in res.errors[0], (v.name, res.errors)
        assert res.errors[1] is None and np.isfinite(res.values[1])
