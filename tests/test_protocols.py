"""The ``protocol`` parameter: JavisBench-evaluator reproductions beside avits' own recipes.

AV-Align oracle: the expected numbers below were computed by running JavisBench's published
``eval/javisbench/src/av_align.py`` (JavisDiT repository, commit b505b37) in a throwaway script outside
this repository on exactly these clips (frames handed over in BGR order, as OpenCV decodes them; audio
as the float32 array at its own sample rate). Only the resulting numbers are stored here.
"""

from __future__ import annotations

import numpy as np
import pytest

from avclips import bounce_clip, jump_clip
from avits_core.errors import ConfigError
from avits_core.prompts import Prompt
from avits_core.verifiers.av_align import AVAlign, javisbench_iou, strict_local_maxima_times

#: name -> (clip, evaluator score, evaluator |audio peaks|, evaluator |video peaks|)
JAVISBENCH_AV_ALIGN = {
    "bounce_sync": (lambda: bounce_clip(), 1.4999996250000938, 7, 3),
    "bounce_shift": (lambda: bounce_clip(audio_shift=0.25), 0.0, 6, 3),
    "jump_sync": (lambda: jump_clip(), 1.333332888889037, 4, 3),
    "jump_noisy_shift": (lambda: jump_clip(audio_shift=0.1, video_noise=4.0, audio_noise=0.01, seed=3), 0.0, 6, 6),
    "jump_24fps_22k": (lambda: jump_clip(fps=24.0, sr=22050, seed=1), 0.9999996666667778, 3, 3),
}


def test_av_align_javisbench_reproduces_the_evaluator_exactly():
    names = list(JAVISBENCH_AV_ALIGN)
    clips = [JAVISBENCH_AV_ALIGN[n][0]() for n in names]
    prompts = [Prompt(n, n) for n in names]
    res = AVAlign(protocol="javisbench").score(clips, prompts)
    assert res.errors == [None] * len(names)
    for i, n in enumerate(names):
        _, want, n_a, n_v = JAVISBENCH_AV_ALIGN[n]
        assert res.values[i] == pytest.approx(want, rel=1e-12, abs=1e-15), n
        assert res.details[i]["n_audio_peaks"] == n_a, n
        assert res.details[i]["n_video_peaks"] == n_v, n


def test_av_align_protocols_differ_where_documented():
    clip = bounce_clip()
    ours = AVAlign().score([clip], [Prompt("p", "p")])
    theirs = AVAlign(protocol="javisbench").score([clip], [Prompt("p", "p")])
    assert ours.values[0] == pytest.approx(1.0)  # one-to-one matching, filtered peaks
    assert theirs.values[0] > 1.0  # several onsets may hit one motion peak: the evaluator's value exceeds 1


def test_javisbench_matching_rules_by_hand():
    fps = 10.0
    # strictly within one frame: 0.1 s apart is NOT a hit; one video peak serves two audio peaks
    score, hits = javisbench_iou(np.array([0.5, 0.52, 1.0]), np.array([0.5, 0.9]), fps)
    assert hits == 2  # 0.5 and 0.52 hit 0.5; 1.0 vs 0.9 is exactly one frame away (not strictly within)
    assert score == pytest.approx(2 / (3 + 2 - 2 + 1e-6), rel=1e-15)
    assert javisbench_iou(np.array([]), np.array([]), fps) == (0.0, 0)
    # every strict local maximum, ends excluded, plateaus are not peaks, time = index / fps
    t = strict_local_maxima_times(np.array([5.0, 1.0, 2.0, 1.0, 3.0, 3.0, 1.0, 0.5, 0.7]), fps)
    np.testing.assert_allclose(t, [0.2])


def test_protocol_is_part_of_the_identity():
    assert AVAlign().cache_version == AVAlign.version
    assert AVAlign(protocol="javisbench").cache_version == f"{AVAlign.version}+protocol=javisbench"
    with pytest.raises(ConfigError, match="protocol"):
        AVAlign(protocol="paper")
