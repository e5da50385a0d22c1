"""CLAP, CLIP and the ImageBind family: tiny random models loaded by path, formulas on designed vectors."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.registry import VERIFIERS
from avits_core.verifiers import hf
from avits_core.verifiers.clip import uniform_frame_indices
from avits_core.verifiers.imagebind import (
    CLIP_MEAN,
    CLIP_STD,
    AVHScore,
    EmbeddingBackbone,
    ImageBindBackbone,
    JavisScore,
    TinyBackbone,
    ib_audio_input,
    ib_image_input,
    ib_video_input,
    javis_windows,
    kaldi_fbank,
    lowest_fraction_mean,
)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_clap, build_tiny_clip  # noqa: E402


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_models")
    build_tiny_clap(d / "clap")
    build_tiny_clap(d / "clap_fusion", fusion=True, sampling_rate=48000)
    build_tiny_clip(d / "clip")
    yield d
    hf.clear_cache()


def make_clip(seed: int = 0, frames: int = 24, fps: float = 12.0, sr: int = 16000, seconds: float = 2.0,
              amp: float = 0.3) -> AVClip:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 40, 56, 3), dtype=np.uint8)
    audio = (amp * rng.standard_normal(int(sr * seconds))).astype(np.float32)
    return AVClip(video, fps, audio, sr)


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


PROMPTS = [Prompt("p0", "a red ball bounces twice"), Prompt("p0", "a red ball bounces twice"),
           Prompt("p1", "a dog barks in the rain")]


# ------------------------------------------------------------------------------------------------
# CLAP
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["clap", "clap_fusion"])
def test_clap_scores_are_cosines_and_batch_invariant(model_dir, variant):
    clips = [make_clip(0), make_clip(1, sr=8000, seconds=0.5), make_clip(2, sr=44100, seconds=2.3)]
    one = VERIFIERS.create("clap", model_path=str(model_dir / variant), batch_size=1)
    three = VERIFIERS.create("clap", model_path=str(model_dir / variant), batch_size=3)
    one.check_ready()
    r1, r3 = one.score(clips, PROMPTS), three.score(clips, PROMPTS)
    assert r1.errors == [None] * 3 and r3.errors == [None] * 3
    assert r1.values.shape == (3,) and r1.values.dtype == np.float64
    assert np.all(np.abs(r1.values) <= 1.0)
    np.testing.assert_allclose(r1.values, r3.values, atol=1e-5)
    # deterministic across calls, also for audio longer than the extractor's 1 s window
    np.testing.assert_allclose(one.score(clips, PROMPTS).values, r1.values, atol=1e-6)
    # the score is the cosine of the two normalised embeddings
    t = one.embed_text([PROMPTS[2].text])
    a = one.embed_audio([clips[2].audio], [clips[2].sample_rate])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert r1.values[2] == pytest.approx(float(t[0] @ a[0]), abs=1e-5)


def test_clap_resamples_from_true_rate_and_clips_to_unit_range(model_dir):
    v = VERIFIERS.create("clap", model_path=str(model_dir / "clap"))
    assert v.sampling_rate == 16000
    # the same 440 Hz tone given at 8 kHz and at 16 kHz embeds (nearly) identically ...
    e = v.embed_audio([sine(440, 8000, 1.0), sine(440, 16000, 1.0), sine(3000, 16000, 1.0)], [8000, 16000, 16000])
    assert float(e[0] @ e[1]) > 0.99
    # ... whereas mislabelling the rate (8 kHz samples read as 16 kHz) changes the content
    wrong = v.embed_audio([sine(440, 8000, 1.0)], [16000])
    assert float(wrong[0] @ e[1]) < float(e[0] @ e[1])
    # samples outside [-1, 1] are clipped before feature extraction
    x = sine(440, 16000, 1.0, amp=5.0)
    clipped = v.embed_audio([x, np.clip(x, -1, 1)], [16000, 16000])
    np.testing.assert_allclose(clipped[0], clipped[1], atol=1e-6)


def test_clap_text_field_and_bad_audio_are_errors_per_clip(model_dir):
    v = VERIFIERS.create("clap", model_path=str(model_dir / "clap"), text_field="audio_text")
    good = make_clip(0)
    silent = AVClip(good.video, good.fps, np.zeros(0, np.float32), 16000)
    prompts = [Prompt("a", "video text", {"audio_text": "a dog barks"}), Prompt("b", "x", {"audio_text": "rain"}),
               Prompt("c", "no audio text column")]
    r = v.score([good, silent, good], prompts)
    assert r.errors[0] is None and np.isfinite(r.values[0])
    assert "0.000 s of audio" in r.errors[1] and np.isnan(r.values[1])  # below min_input
    assert "audio_text" in r.errors[2] and np.isnan(r.values[2])
    plain = VERIFIERS.create("clap", model_path=str(model_dir / "clap"))
    direct = plain.score([good], [Prompt("a", "a dog barks")]).values[0]
    assert r.values[0] == pytest.approx(direct, abs=1e-6)


def test_clap_audio_embedding_for_fad(model_dir):
    from avits_core.metrics.features import ClapAudioEmbedding, audio_features

    emb = ClapAudioEmbedding(model_path=str(model_dir / "clap"), batch_size=2)
    emb.check_ready()
    fs = audio_features([make_clip(i) for i in range(3)], emb, batch_size=2)
    assert fs.features.shape == (3, 16) and fs.extractor == f"clap:{model_dir / 'clap'}"


# ------------------------------------------------------------------------------------------------
# CLIP
# ------------------------------------------------------------------------------------------------
def test_uniform_frame_indices():
    assert uniform_frame_indices(24, 8).tolist() == [1, 4, 7, 10, 13, 16, 19, 22]
    assert uniform_frame_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert uniform_frame_indices(8, 8).tolist() == list(range(8))
    assert uniform_frame_indices(10, 1).tolist() == [5]
    with pytest.raises(ValueError):
        uniform_frame_indices(0, 8)


def test_clip_scores_mean_over_sampled_frames(model_dir):
    clips = [make_clip(0), make_clip(1, frames=5), make_clip(2, frames=30)]
    v1 = VERIFIERS.create("clip", model_path=str(model_dir / "clip"), batch_size=1, num_frames=8)
    v3 = VERIFIERS.create("clip", model_path=str(model_dir / "clip"), batch_size=3, num_frames=8)
    r1, r3 = v1.score(clips, PROMPTS), v3.score(clips, PROMPTS)
    assert r1.errors == [None] * 3
    assert np.all(np.abs(r1.values) <= 1.0)
    np.testing.assert_allclose(r1.values, r3.values, atol=1e-5)
    # by hand: mean over the 8 sampled frames of text . frame
    t = v1.embed_text([PROMPTS[0].text])[0]
    f = v1.embed_frames([clips[0].video[i] for i in uniform_frame_indices(24, 8)])
    assert r1.values[0] == pytest.approx(float(np.mean(f @ t)), abs=1e-5)
    # only the sampled frames matter
    c = make_clip(0)
    changed_unsampled, changed_sampled = c.video.copy(), c.video.copy()
    changed_unsampled[0] = 255 - changed_unsampled[0]  # frame 0 is not among [1, 4, ..., 22]
    changed_sampled[4] = 255 - changed_sampled[4]
    s = [v1.score([AVClip(v, 12.0, c.audio, 16000)], PROMPTS[:1]).values[0]
         for v in (c.video, changed_unsampled, changed_sampled)]
    assert s[1] == pytest.approx(s[0], abs=1e-7)
    assert abs(s[2] - s[0]) > 1e-6


# ------------------------------------------------------------------------------------------------
# weights: resolution, errors, cache, lazy import
# ------------------------------------------------------------------------------------------------
def test_missing_local_dir_fails_fast_with_path_and_hint(tmp_path):
    missing = tmp_path / "nope" / "clap"
    v = VERIFIERS.create("clap", model_path=str(missing))
    with pytest.raises(MissingWeightsError) as ei:
        v.check_ready()
    msg = str(ei.value)
    assert str(missing) in msg and "hf download laion/clap-htsat-unfused" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="config.json"):
        VERIFIERS.create("clip", model_path=str(tmp_path / "empty")).check_ready()


def test_hub_id_is_resolved_from_local_cache_only(tmp_path, model_dir):
    cache = tmp_path / "hub"
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as ei:
        VERIFIERS.create("clip", model_path="someorg/not-cached", cache_dir=str(cache)).check_ready()
    assert time.perf_counter() - t0 < 5.0
    assert "someorg/not-cached" in str(ei.value) and "hf download someorg/not-cached" in str(ei.value)
    # a hub-cache layout holding the tiny CLIP: models--org--name/{refs/main, snapshots/<rev>/...}
    repo = cache / "models--tinyorg--tiny-clip"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    for f in (model_dir / "clip").iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap.name)
    v = VERIFIERS.create("clip", model_path="tinyorg/tiny-clip", cache_dir=str(cache))
    v.check_ready()
    by_path = VERIFIERS.create("clip", model_path=str(model_dir / "clip"))
    c = [make_clip(3)]
    assert v.score(c, PROMPTS[:1]).values[0] == pytest.approx(by_path.score(c, PROMPTS[:1]).values[0], abs=1e-6)


def test_model_cache_shares_one_model_per_path_device_dtype(model_dir):
    a = VERIFIERS.create("clip", model_path=str(model_dir / "clip"))
    b = VERIFIERS.create("clip", model_path=str(model_dir / "clip"), batch_size=2)
    assert a._components()[0] is b._components()[0]
    n = len(hf.cache_keys())
    c = VERIFIERS.create("clip", model_path=str(model_dir / "clip"), dtype="float64")
    assert c._components()[0] is not a._components()[0]
    assert len(hf.cache_keys()) == n + 1


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match="batch_size"):
        VERIFIERS.create("clap", batch_size=0)
    with pytest.raises(ConfigError, match="dtype"):
        VERIFIERS.create("clip", dtype="int7")
    with pytest.raises(ConfigError, match="backbone"):
        VERIFIERS.create("ib_tv", backbone="nope")
    with pytest.raises(ConfigError, match="overlap"):
        VERIFIERS.create("javis_score", backbone="tiny", window_s=1.0, overlap_s=1.0)


def test_importing_verifier_modules_does_not_import_transformers():
    code = ("import sys, avits_core.verifiers.clap, avits_core.verifiers.clip, avits_core.verifiers.imagebind, "
            "avits_core.metrics.features, avits_core.metrics.embedding; "
            "assert 'transformers' not in sys.modules, 'transformers imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------------------------
# ImageBind family: formulas on designed embeddings
# ------------------------------------------------------------------------------------------------
def unit2(c: float) -> np.ndarray:
    """A 2-d unit vector whose cosine with [1, 0] is c."""
    return np.array([c, np.sqrt(max(0.0, 1.0 - c * c))])


class DesignedBackbone:
    """Frame embedding: its cosine with [1, 0] is (pixel value of the frame) / 100 - 1. Audio
    embedding: angle = pi * (mean sample value) from [1, 0] (so 0 -> [1, 0]). Text: [1, 0] or
    [0, 1] ("up"). Video: unit2 of the mean frame cosine."""

    name = "designed"

    def __init__(self):
        self.calls = {"text": 0, "frames": 0, "audio": 0, "video": 0}

    def embed_text(self, texts):
        self.calls["text"] += 1
        return np.array([[0.0, 1.0] if "up" in t else [1.0, 0.0] for t in texts])

    def embed_frames(self, frames):
        self.calls["frames"] += 1
        return np.array([unit2(float(f[0, 0, 0]) / 100.0 - 1.0) for f in frames])

    def embed_video(self, videos, fps):
        self.calls["video"] += 1
        return np.array([unit2(float(np.mean(v[:, 0, 0, 0])) / 100.0 - 1.0) for v in videos])

    def embed_audio(self, waves, sample_rates):
        self.calls["audio"] += 1
        ang = [np.pi * float(np.mean(w)) for w in waves]
        return np.array([[np.cos(a), np.sin(a)] for a in ang])


def designed_clip(frame_cos: list[float], fps: float, audio: np.ndarray, sr: int = 100) -> AVClip:
    v = np.zeros((len(frame_cos), 4, 4, 3), np.uint8)
    for i, c in enumerate(frame_cos):
        v[i] = int(round((c + 1.0) * 100))
    return AVClip(v, fps, audio.astype(np.float32), sr)


def test_backbone_protocol():
    assert isinstance(DesignedBackbone(), EmbeddingBackbone)
    assert isinstance(TinyBackbone(), EmbeddingBackbone)
    assert isinstance(ImageBindBackbone("x.pth"), EmbeddingBackbone)


def test_avh_score_known_answer():
    b = DesignedBackbone()
    clip = designed_clip([1.0, 0.5, 0.0, -0.5], fps=4.0, audio=np.zeros(100))  # audio emb = [1, 0]
    v = VERIFIERS.create("avh_score", backbone=b, num_frames=16)
    assert v.score([clip], [Prompt("p", "x")]).values[0] == pytest.approx((1 + 0.5 + 0 - 0.5) / 4)
    # num_frames=2 samples frames floor((i + 0.5) * 4 / 2) = 1, 3  ->  (0.5 - 0.5) / 2
    v2 = AVHScore(backbone=b, num_frames=2)
    assert v2.score([clip], [Prompt("p", "x")]).values[0] == pytest.approx(0.0, abs=1e-12)


def test_javis_score_single_window_for_short_clip():
    # 1 s clip (< 2 s window): one window; cosines [1, .5, 0, -.5, -1]; lowest 40% of 5 = 2 -> -0.75
    clip = designed_clip([1.0, 0.5, 0.0, -0.5, -1.0], fps=5.0, audio=np.zeros(100))
    v = VERIFIERS.create("javis_score", backbone=DesignedBackbone())
    assert v.plan(clip)[0][:2] == (0.0, 1.0)
    assert v.score([clip], [Prompt("p", "x")]).values[0] == pytest.approx(-0.75)


def test_javis_score_sliding_windows_known_answer():
    # 3 s at 2 fps: frames at 0, .5, ..., 2.5 s; windows [0,2), [.5,2.5), [1,3)
    cos = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    sr = 100
    audio = np.zeros(300)
    audio[250:] = 1.0  # only the window [1, 3) has non-zero mean audio: 50/200 -> angle pi/4
    clip = designed_clip(cos, fps=2.0, audio=audio, sr=sr)
    b = DesignedBackbone()
    v = JavisScore(backbone=b, num_frames=None)
    plan = v.plan(clip)
    assert [(s, e, list(i)) for s, e, i in plan] == [
        (0.0, 2.0, [0, 1, 2, 3]), (0.5, 2.5, [1, 2, 3, 4]), (1.0, 3.0, [2, 3, 4, 5])]
    # windows 1, 2: audio [1, 0]; k = floor(0.4 * 4) = 1 -> the minimum cosine
    w1, w2 = 0.4, 0.2
    # window 3: audio at angle pi/4, frame f at angle acos(c): cos(acos(c) - pi/4), min over frames
    w3 = min(np.cos(np.arccos(c) - np.pi / 4) for c in cos[2:])
    got = v.score([clip], [Prompt("p", "x")]).values[0]
    assert got == pytest.approx((w1 + w2 + w3) / 3, abs=1e-2 / 100)  # frames quantised to 1/100
    # shared frames are embedded once, in one call; one audio call for all windows
    assert b.calls["frames"] == 1 and b.calls["audio"] == 1


def test_javis_windows_and_lowest_fraction():
    assert javis_windows(4.0) == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0), (1.5, 3.5), (2.0, 4.0)]
    assert javis_windows(2.0) == [(0.0, 2.0)]
    assert javis_windows(1.2) == [(0.0, 1.2)]
    assert javis_windows(2.4) == [(0.0, 2.0)]
    assert javis_windows(3.0, window_s=1.0, overlap_s=0.0) == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert lowest_fraction_mean([1.0, 0.5, 0.0, -0.5, -1.0]) == pytest.approx(-0.75)
    assert lowest_fraction_mean([0.3, 0.9]) == pytest.approx(0.3)  # at least one frame
    assert lowest_fraction_mean([0.7]) == pytest.approx(0.7)
    assert lowest_fraction_mean(np.arange(10.0), 0.4) == pytest.approx(1.5)


def test_pairwise_ib_scores_on_designed_vectors():
    b = DesignedBackbone()
    clip = designed_clip([0.5, 0.5], fps=2.0, audio=np.full(100, 0.5))  # audio angle pi/2 -> [0, 1]
    prompts = [Prompt("p", "up please")]  # text [0, 1]
    tv = VERIFIERS.create("ib_tv", backbone=b).score([clip], prompts).values[0]
    ta = VERIFIERS.create("ib_ta", backbone=b).score([clip], prompts).values[0]
    av = VERIFIERS.create("ib_av", backbone=b).score([clip], prompts).values[0]
    assert tv == pytest.approx(np.sqrt(0.75), abs=1e-2)
    assert ta == pytest.approx(1.0)
    assert av == pytest.approx(np.sqrt(0.75), abs=1e-2)


def test_zero_embedding_is_an_error_not_a_zero():
    class Zero(DesignedBackbone):
        def embed_audio(self, waves, sample_rates):
            return np.zeros((len(waves), 2))

    clip = designed_clip([0.5], fps=1.0, audio=np.zeros(100))
    r = VERIFIERS.create("ib_av", backbone=Zero()).score([clip], [Prompt("p", "x")])
    assert np.isnan(r.values[0]) and "non-finite" in r.errors[0]


def test_tiny_backbone_runs_every_ib_verifier_batched():
    big = make_clip(2, frames=36)
    big = AVClip(np.repeat(np.repeat(big.video, 2, axis=1), 2, axis=2), big.fps, big.audio, big.sample_rate)
    clips = [make_clip(0, seconds=3.0), make_clip(1, frames=10, sr=22050, seconds=0.8), big]  # mixed sizes
    for name in ("ib_tv", "ib_ta", "ib_av", "avh_score", "javis_score"):
        r1 = VERIFIERS.create(name, backbone="tiny", batch_size=1).score(clips, PROMPTS)
        r4 = VERIFIERS.create(name, backbone="tiny", batch_size=4).score(clips, PROMPTS)
        assert r1.errors == [None] * 3, (name, r1.errors)
        assert np.all(np.abs(r1.values) <= 1.0 + 1e-12)
        np.testing.assert_allclose(r1.values, r4.values, atol=1e-6, err_msg=name)
    other_seed = VERIFIERS.create("ib_tv", backbone="tiny", seed=1).score(clips, PROMPTS).values
    assert not np.allclose(other_seed, VERIFIERS.create("ib_tv", backbone="tiny").score(clips, PROMPTS).values)


# ------------------------------------------------------------------------------------------------
# ImageBind: preprocessing and the official-weights path (package faked)
# ------------------------------------------------------------------------------------------------
def test_kaldi_fbank_matches_kaldi_reference():
    # reference: kaldi-native-fbank 1.22.4 (Kaldi's C++ fbank) with dither 0, hanning window,
    # 40 bins, use_energy false, on this exact signal (int16-like amplitude)
    t = np.arange(1600) / 16000
    x = 1000 * (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
                + 0.05 * np.sin(2 * np.pi * (200 + 20000 * t) * t))
    ref = np.array([[3.20745, 12.20165, 13.57941, -2.19844, -1.42692, -9.5829],
                    [2.16611, 11.93755, 4.23883, 16.05569, -1.50935, -9.97377],
                    [2.43889, 11.93832, 4.21984, -2.4402, 13.10311, -9.76166]])
    fb = kaldi_fbank(x.astype(np.float32), 16000, num_mel_bins=40).numpy()
    assert fb.shape == (8, 40)
    got = fb[[0, 3, 7]][:, [0, 5, 10, 20, 30, 39]]
    np.testing.assert_allclose(got[:, :5], ref[:, :5], atol=2e-3)
    # the top bin holds ~1e-11 of the peak energy: float32 FFT round-off dominates there
    np.testing.assert_allclose(got[:, 5], ref[:, 5], atol=0.05)
    assert kaldi_fbank(np.zeros(399, np.float32), 16000).shape == (0, 128)


def test_imagebind_inputs_shapes():
    a = ib_audio_input(sine(440, 48000, 3.0), 48000)
    assert tuple(a.shape) == (3, 1, 128, 204)
    short = ib_audio_input(sine(440, 16000, 0.5), 16000)  # 48 fbank frames, zero-padded to 204
    assert tuple(short.shape) == (3, 1, 128, 204)
    np.testing.assert_allclose(short[0, 0, :, 60:].numpy(), 4.268 / 9.138, atol=1e-6)
    portrait = np.random.default_rng(0).integers(0, 256, (30, 80, 40, 3), dtype=np.uint8)
    v = ib_video_input(portrait, 10.0)
    assert tuple(v.shape) == (15, 3, 2, 224, 224)
    # crops 0 and 2 of a portrait video are the top and bottom of the 448x224 rescaled frames
    assert not np.allclose(v[0].numpy(), v[2].numpy())
    im = ib_image_input(portrait[:3])
    assert tuple(im.shape) == (3, 3, 224, 224)
    lo = min((0 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    hi = max((1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    assert lo - 1e-5 <= float(im.min()) and float(im.max()) <= hi + 1e-5


def test_imagebind_backbone_missing_file_and_package(tmp_path, monkeypatch):
    v = VERIFIERS.create("ib_tv", model_path=str(tmp_path / "imagebind_huge.pth"))
    with pytest.raises(MissingWeightsError) as ei:
        v.check_ready()
    assert "imagebind_huge.pth" in str(ei.value) and "dl.fbaipublicfiles.com" in str(ei.value)
    (tmp_path / "imagebind_huge.pth").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "imagebind", None)  # makes `import imagebind` fail
    with pytest.raises(MissingWeightsError, match="imagebind"):
        v.check_ready()


def fake_imagebind(tmp_path: Path, monkeypatch) -> dict:
    """Install a stand-in `imagebind` package whose model checks ImageBind's input layout."""
    import torch
    from torch import nn

    seen: dict = {}

    class ModalityType:
        TEXT, VISION, AUDIO = "text", "vision", "audio"

    class FakeModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = nn.Embedding(100, 4)
            self.vision = nn.Linear(3, 4)
            self.audio = nn.Linear(128, 4)

        def forward(self, inputs):
            (key, x), = inputs.items()
            seen.setdefault(key, []).append(tuple(x.shape))
            if key == "text":
                return {key: self.text(x).mean(1)}
            if key == "vision":
                dims = tuple(range(2, x.dim())) if x.dim() == 4 else (3, 4, 5)
                feats = x.mean(dim=dims)
                if x.dim() == 6:
                    feats = feats.mean(1)
                return {key: self.vision(feats)}
            return {key: self.audio(x.mean(dim=(2, 4)).mean(1))}

    def imagebind_huge(pretrained=False):
        assert pretrained is False
        return FakeModel()

    class SimpleTokenizer:
        def __init__(self, bpe_path, context_length=77):
            seen["bpe"] = bpe_path

        def __call__(self, texts):
            return torch.tensor([[len(w) % 100 for w in t.split()][:5] + [0] * (5 - len(t.split()[:5]))
                                 for t in texts])

    pkg_dir = tmp_path / "imagebind"
    (pkg_dir / "bpe").mkdir(parents=True)
    (pkg_dir / "bpe" / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"")
    pkg = types.ModuleType("imagebind")
    pkg.__file__ = str(pkg_dir / "__init__.py")
    pkg.__path__ = [str(pkg_dir)]
    models = types.ModuleType("imagebind.models")
    ibm = types.ModuleType("imagebind.models.imagebind_model")
    ibm.imagebind_huge, ibm.ModalityType = imagebind_huge, ModalityType
    pre = types.ModuleType("imagebind.models.multimodal_preprocessors")
    pre.SimpleTokenizer = SimpleTokenizer
    for name, mod in [("imagebind", pkg), ("imagebind.models", models),
                      ("imagebind.models.imagebind_model", ibm), ("imagebind.models.multimodal_preprocessors", pre)]:
        monkeypatch.setitem(sys.modules, name, mod)
    torch.manual_seed(0)
    weights = tmp_path / "imagebind_huge.pth"
    torch.save(FakeModel().state_dict(), weights)
    seen["weights"] = weights
    return seen


def test_imagebind_backbone_loads_state_dict_and_feeds_imagebind_layout(tmp_path, monkeypatch):
    import torch

    seen = fake_imagebind(tmp_path, monkeypatch)
    clips = [make_clip(0, seconds=3.0), make_clip(1, sr=48000, seconds=1.0)]
    v = VERIFIERS.create("ib_av", model_path=str(seen["weights"]), batch_size=2)
    v.check_ready()
    r = v.score(clips, PROMPTS[:2])
    assert r.errors == [None, None] and np.all(np.abs(r.values) <= 1.0)
    assert seen["vision"] == [(2, 15, 3, 2, 224, 224)] and seen["audio"] == [(2, 3, 1, 128, 204)]
    assert seen["bpe"].endswith("bpe_simple_vocab_16e6.txt.gz")
    # the weights came from the file, not from the random init
    model = v.backbone._load()[0]
    ref = torch.load(seen["weights"])
    assert torch.equal(model.audio.weight, ref["audio.weight"])
    AVHScore(model_path=str(seen["weights"]), num_frames=3).score(clips[:1], PROMPTS[:1])
    assert seen["vision"][-1] == (3, 3, 224, 224)
    t = VERIFIERS.create("ib_tv", model_path=str(seen["weights"])).score(clips[:1], PROMPTS[:1])
    assert t.errors == [None] and seen["text"] == [(1, 5)]
