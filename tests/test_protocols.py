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


# ---------------------------------------------------------------------------------------------------
# ImageBind family: a designed backbone makes the javisbench windows hand-computable
# ---------------------------------------------------------------------------------------------------
from avits_core.media import AVClip  # noqa: E402
from avits_core.verifiers import hf  # noqa: E402
from avits_core.verifiers.imagebind import AVHScore, IBTextAudio, JavisScore  # noqa: E402


class Designed:
    """frame with value v -> (1, v/100); audio of n samples -> (1, n/32000 - 1); text -> (1, len)."""

    name = "designed"

    def __init__(self):
        self.texts: list[str] = []

    def embed_text(self, texts):
        self.texts += list(texts)
        return np.array([[1.0, float(len(t))] for t in texts])

    def embed_frames(self, frames):
        return np.array([[1.0, float(np.asarray(f)[0, 0, 0]) / 100.0] for f in frames])

    def embed_video(self, videos, fps):
        return np.array([[1.0, 0.0] for _ in videos])

    def embed_audio(self, waves, rates):
        return np.array([[1.0, len(w) / 32000.0 - 1.0] for w in waves])


def _ramp_clip(n_frames: int, fps: float, seconds: float, sr: int = 16000) -> AVClip:
    video = np.zeros((n_frames, 8, 8, 3), np.uint8)
    for i in range(n_frames):
        video[i] = 10 * i
    audio = (0.1 * np.sin(np.arange(int(seconds * sr)) * 0.05)).astype(np.float32)
    return AVClip(video, fps, audio, sr)


def _cos(x: float, a: float = 0.0) -> float:
    return (1 + x * a) / np.sqrt(1 + x * x) / np.sqrt(1 + a * a)


def test_javis_score_javisbench_windows_by_hand():
    clip = _ramp_clip(12, 3.0, 4.0)  # 12 frames at 3 fps, 4 s of 16 kHz audio
    v = JavisScore(backbone=Designed(), protocol="javisbench")
    fwins, awins, _ = v.javisbench_plan(clip)
    # frames: size int(2*3)=6, step 6-int(1.5*3)=2 (0.67 s, not 0.5 s) -> 4 windows; audio: 32000 samples,
    # step 8000 -> 5 windows; both cut to 4, so the last frame window (2.0-4.0 s) meets audio 1.5-3.5 s
    assert [(int(w[0]), int(w[-1]) + 1) for w in fwins] == [(0, 6), (2, 8), (4, 10), (6, 12)]
    assert awins == [(0, 32000), (8000, 40000), (16000, 48000), (24000, 56000)]
    # per window: k = int(6 * 0.4) = 2 lowest cosines with audio (1, 0): the 2 largest frame values
    want = np.mean([np.mean([_cos(0.1 * i) for i in (s + 4, s + 5)]) for s in (0, 2, 4, 6)])
    assert v.score([clip], [Prompt("p", "x")]).values[0] == pytest.approx(want, rel=1e-12)
    # ours: 0.5 s steps in seconds (5 windows of 6 frames, 16 sampled frames = all 12 here)
    ours = np.mean([np.mean(sorted(_cos(0.1 * i) for i in range(12) if s <= i / 3 < s + 2)[:2])
                    for s in (0.0, 0.5, 1.0, 1.5, 2.0)])
    assert JavisScore(backbone=Designed()).score([clip], [Prompt("p", "x")]).values[0] == pytest.approx(ours, rel=1e-12)
    assert ours != pytest.approx(want)
    assert v.cache_version == "1+protocol=javisbench"
    assert JavisScore(backbone=Designed()).cache_version == "1"


def test_javis_score_javisbench_short_clip_is_one_window_and_k0_is_an_error():
    clip = _ramp_clip(6, 4.0, 1.5)  # 6 frames <= int(2*4): one window, every frame, the whole audio
    v = JavisScore(backbone=Designed(), protocol="javisbench")
    fwins, awins, _ = v.javisbench_plan(clip)
    assert [list(w) for w in fwins] == [list(range(6))] and awins == [(0, 24000)]
    a = 24000 / 32000 - 1.0
    want = np.mean(sorted(_cos(0.1 * i, a) for i in range(6))[:2])  # k = int(6 * 0.4) = 2
    assert v.score([clip], [Prompt("p", "x")]).values[0] == pytest.approx(want, rel=1e-12)
    res = v.score([_ramp_clip(2, 4.0, 1.5)], [Prompt("p", "x")])  # k = int(2 * 0.4) = 0
    assert np.isnan(res.values[0]) and "k = 0" in res.errors[0]


def test_avh_javisbench_uses_every_frame():
    clip = _ramp_clip(20, 4.0, 5.0)
    a = 80000 / 32000 - 1.0
    every = np.mean([_cos(0.1 * i, a) for i in range(20)])
    assert AVHScore(backbone=Designed(), protocol="javisbench").score([clip], [Prompt("p", "x")]).values[0] == \
        pytest.approx(every, rel=1e-12)
    assert AVHScore(backbone=Designed()).score([clip], [Prompt("p", "x")]).values[0] != pytest.approx(every)


def test_audio_text_column_in_the_javisbench_protocol():
    b = Designed()
    clip = _ramp_clip(4, 4.0, 1.5)
    with_col = Prompt("p", "a video caption", {"audio_text": "sound"})
    without = Prompt("q", "a caption")
    IBTextAudio(backbone=b, protocol="javisbench").score([clip, clip], [with_col, without])
    assert b.texts == ["a caption", "sound"]  # audio_text when the prompt has it, else text
    assert hf.prompt_text(with_col, hf.JAVISBENCH_AUDIO_TEXT) == "sound"
    with pytest.raises(ConfigError, match="text_field"):
        IBTextAudio(backbone=b, protocol="javisbench", text_field="video_text")


# ---------------------------------------------------------------------------------------------------
# CLIP and CLAP with tiny random models of the real structure
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_tiny_clap, build_tiny_clip

    d = tmp_path_factory.mktemp("tiny")
    return build_tiny_clip(d / "clip"), build_tiny_clap(d / "clap")


def test_clip_javisbench_frames_channels_and_crop(tiny, monkeypatch):
    from avits_core.verifiers.clip import ClipScore

    clip_dir, _ = tiny
    v = ClipScore(model_path=str(clip_dir), protocol="javisbench")
    assert v.cache_version == "1+protocol=javisbench"
    # pixels: a 32x32 frame (the model's size) is only scaled and normalised, channels as given
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    _, proc, _ = v._components()
    want = ((frame / 255.0 - np.array(proc.image_mean)) / np.array(proc.image_std)).transpose(2, 0, 1)
    np.testing.assert_allclose(v.javisbench_pixels([frame])[0].numpy(), want, atol=1e-6)
    # centre crop with torchvision's rounding: 35 rows -> top = round(1.5) = 2 (HF's // would give 1)
    tall = np.repeat(np.arange(35, dtype=np.uint8)[:, None, None], 32, 1).repeat(3, 2)
    px = v.javisbench_pixels([tall])[0].numpy()
    assert px[0, 0, 0] == pytest.approx((2 / 255.0 - proc.image_mean[0]) / proc.image_std[0], abs=1e-6)
    # 48 frames at round(linspace(0, T-1, 48)), channels swapped (the evaluator's double BGR<->RGB)
    seen = []
    real = v.javisbench_pixels
    monkeypatch.setattr(v, "javisbench_pixels", lambda fr: (seen.extend(fr), real(fr))[1])
    video = np.zeros((5, 32, 32, 3), np.uint8)
    video[:, :, :, 0] = (np.arange(5) * 10)[:, None, None]
    res = v.score([AVClip(video, 12.0, np.zeros(10, np.float32), 16000)], [Prompt("p", "red ball")])
    assert res.errors == [None]
    assert [int(f[0, 0, 2]) // 10 for f in seen] == [int(np.rint(4 * j / 47)) for j in range(48)]
    assert all(int(f[0, 0, 0]) == 0 for f in seen)  # red moved to the last channel


def test_clap_javisbench_resamples_like_librosa_load_and_reads_audio_text(tiny):
    import librosa

    from avits_core.verifiers.clap import ClapScore

    _, clap_dir = tiny
    jb = ClapScore(model_path=str(clap_dir), protocol="javisbench")
    ours = ClapScore(model_path=str(clap_dir))
    assert jb.text_field == hf.JAVISBENCH_AUDIO_TEXT and jb.cache_version == "1+protocol=javisbench"
    w = (0.3 * np.sin(np.arange(8000) * 0.3)).astype(np.float32)  # 1 s at 8 kHz
    up = librosa.resample(w, orig_sr=8000, target_sr=16000, res_type="soxr_hq")
    np.testing.assert_allclose(jb.embed_audio([w], [8000]), ours.embed_audio([up], [16000]), atol=1e-6)
    assert not np.allclose(ours.embed_audio([w], [8000]), jb.embed_audio([w], [8000]), atol=1e-6)
