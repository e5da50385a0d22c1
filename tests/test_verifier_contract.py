"""The Verifier base contract: minimum input, identity in the cache version, per-clip details."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import MinInput, Verifier
from avclips import jump_clip


class _Loud(Verifier):
    """Test verifier: peak absolute audio sample; a protocol knob scales it."""

    name = "loud"
    version = "3"
    min_input = MinInput(frames=4, audio_seconds=0.5, sample_rate=8000, height=8, width=8,
                         modalities=("video", "audio"))
    identity_params = ("protocol", "scale")

    def __init__(self, protocol: str = "avits", scale: float = 1.0, device: str = "cpu"):
        self.protocol, self.scale, self.device = protocol, scale, device
        self.calls = 0

    def score_clips(self, clips, prompts):
        self.calls += 1
        return [self.scale * float(np.abs(c.audio).max()) for c in clips]

    def score_clip(self, clip, prompt):
        return self.score_clips([clip], [prompt])[0]

    def score_details(self, clips, prompts):
        return [{"rms": float(np.sqrt(np.mean(c.audio.astype(np.float64) ** 2)))} for c in clips]


P = Prompt("p", "a square jumps")


def test_cache_version_names_non_default_identity_params_only():
    assert _Loud().cache_version == "3"
    assert _Loud(device="cuda").cache_version == "3"  # not an identity parameter
    assert _Loud(protocol="javisbench").cache_version == "3+protocol=javisbench"
    assert _Loud(protocol="javisbench", scale=2.0).cache_version == "3+protocol=javisbench,scale=2.0"


def test_clips_below_min_input_are_error_rows_and_never_reach_the_model():
    good = jump_clip()
    short = AVClip(video=good.video[:3], fps=12, audio=good.audio, sample_rate=16000)
    brief = AVClip(video=good.video, fps=12, audio=good.audio[:1600], sample_rate=16000)  # 0.1 s
    small = AVClip(video=good.video[:, :6, :6], fps=12, audio=good.audio, sample_rate=16000)
    lowsr = AVClip(video=good.video, fps=12, audio=good.audio[::4].copy(), sample_rate=4000)
    v = _Loud()
    res = v.score([good, short, brief, small, lowsr], [P] * 5)
    assert res.errors[0] is None and res.values[0] == pytest.approx(float(np.abs(good.audio).max()))
    assert res.errors[1] == "input too small for loud: 3 frames < 4"
    assert res.errors[2] == "input too small for loud: 0.100 s of audio < 0.5 s"
    assert res.errors[3] == "input too small for loud: picture 6x6 smaller than 8x8"
    assert res.errors[4] == "input too small for loud: audio sample rate 4000 Hz < 8000 Hz"
    assert np.isnan(res.values[1:]).all()
    assert v.calls == 1  # one batch with the one measurable clip


def test_unread_media_handed_in_as_exception_is_an_error_row():
    v = _Loud()
    res = v.score([jump_clip(), FileNotFoundError("media/p/c1.mp4 is missing")], [P, P])
    assert res.errors[0] is None
    assert res.errors[1] == "FileNotFoundError: media/p/c1.mp4 is missing"
    assert np.isnan(res.values[1])


def test_details_follow_their_clip_and_vanish_on_error():
    good = jump_clip()
    short = AVClip(video=good.video[:2], fps=12, audio=good.audio, sample_rate=16000)
    res = _Loud().score([short, good], [P, P])
    assert res.details is not None and res.details[0] is None
    rms = float(np.sqrt(np.mean(good.audio.astype(np.float64) ** 2)))
    assert res.details[1] == {"rms": pytest.approx(rms)}


def test_modalities_not_read_are_not_checked():
    class _VideoOnly(_Loud):
        name = "vonly"
        min_input: ClassVar[MinInput] = MinInput(frames=4, audio_seconds=5.0, modalities=("video",))

    good = jump_clip()
    silent_short = AVClip(video=good.video, fps=12, audio=np.zeros(10, np.float32), sample_rate=16000)
    res = _VideoOnly().score([silent_short], [P])
    assert res.errors[0] is None  # 10 samples of audio, but audio is not read


def test_details_and_cache_version_reach_the_rewards_table(tmp_path):
    from avits_core.store import RunStore

    store = RunStore(tmp_path, "r1")
    v = _Loud(protocol="javisbench")
    res = v.score([jump_clip()], [P])
    store.append("rewards", [dict(run_id="r1", prompt_id="p", candidate_id="c0", verifier=v.name,
                                  verifier_version=v.cache_version, value=float(res.values[0]), status="ok",
                                  error=None, event_seq=0, generation=0, wall_s=0.0,
                                  details=json.dumps(res.details[0]))])
    row = store.read("rewards").to_pylist()[0]
    assert row["verifier_version"] == "3+protocol=javisbench"
    assert json.loads(row["details"])["rms"] == pytest.approx(res.details[0]["rms"])
    assert store.scored_pairs("loud", "3+protocol=javisbench") == {"c0"}
    assert store.scored_pairs("loud", "3") == set()
