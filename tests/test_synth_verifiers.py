"""synth_text and quality: they read rendered pixels and samples and tell faithful from corrupted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avits_core.generators.base import Latents
from avits_core.generators.synth import SynthAVGenerator
from avits_core.generators.synth_world import (
    I_PHASE,
    I_TPHASE,
    I_VX,
    I_X0,
    PALETTE,
    SIZES,
    VIDEO_DIM,
    describe,
    spec_to_gaussian,
)
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.registry import VERIFIERS
from avits_core.verifiers.quality import Quality, immerkaer_sigma
from avits_core.verifiers.synth_text import MeasurementError, SynthText, count_bounces

BASE = {"size": "medium", "colour": "red", "shape": "ball", "count": 3, "pitch": "high", "timbre": "beep",
        "background": "rain", "audio_offset_s": 0.0, "picture_noise": "clean", "sound_noise": "clean"}
GEN = SynthAVGenerator(num_steps=1)


def render(spec: dict | None = None, nuisance: int = 0, **changes) -> AVClip:
    """Render the clip at a scene spec's mode mean (nuisance dims drawn from ``nuisance``)."""
    full = {**BASE, **(spec or {}), **changes}
    mu, _ = spec_to_gaussian(full)
    rng = np.random.default_rng(nuisance)
    for i in (I_PHASE, I_X0, I_VX, I_TPHASE):
        mu[i] = rng.normal()
    x = torch.from_numpy(mu.astype(np.float32))[None]
    lat = Latents(video=x[:, :VIDEO_DIM].clone(), audio=x[:, VIDEO_DIM:].clone(), step=1, seeds=[nuisance])
    return GEN.decode(lat, Prompt("t", describe(full)))[0]


def prompt_for(**spec) -> Prompt:
    return Prompt("t", describe({**BASE, **spec}))


def test_registry_and_metadata():
    st, q = VERIFIERS.create("synth_text"), VERIFIERS.create("quality")
    assert isinstance(st, SynthText) and isinstance(q, Quality)
    assert st.name == "synth_text" and q.name == "quality" and st.version == q.version == "1"
    assert st.higher_is_better and q.higher_is_better
    assert st.value_range == (0.0, 1.0) and q.value_range == (0.0, 1.0)


@pytest.mark.parametrize("i", range(7))
def test_measure_reads_every_attribute(i):
    colours, sizes = list(PALETTE), list(SIZES)
    spec = {"colour": colours[i], "size": sizes[i % 3], "shape": ("ball", "cube")[i % 2], "count": 1 + i % 5,
            "pitch": ("low", "mid", "high")[(i + 1) % 3], "timbre": ("beep", "buzz", "click")[i % 3],
            "background": ("rain", "wind", "hum", "silence")[i % 4]}
    clip = render(spec, nuisance=i)
    got = SynthText().measure(clip)
    for k in ("colour", "size", "shape", "count", "pitch", "timbre"):
        assert got[k] == spec[k], (k, got)


def test_synth_text_tells_faithful_from_corrupted():
    st = SynthText()
    p = prompt_for()
    assert st.score_clip(render(), p) == 1.0
    # six measurable attributes named: one wrong -> 5/6
    for change in ({"colour": "blue"}, {"count": 4}, {"count": 2}, {"pitch": "low"}, {"timbre": "buzz"},
                   {"timbre": "click"}, {"shape": "cube"}, {"size": "large"}):
        assert st.score_clip(render(**change), p) == pytest.approx(5 / 6), change
    assert st.score_clip(render(colour="green", pitch="mid"), p) == pytest.approx(4 / 6)
    # a prompt naming fewer attributes is judged on those only
    assert st.score_clip(render(colour="blue"), Prompt("t", "a ball bounces three times")) == 1.0
    assert st.score_clip(render(colour="blue"), Prompt("t", "a red thing")) == 0.0


def test_synth_text_robust_to_noise_and_ignores_meta():
    st = SynthText()
    p = prompt_for()
    noisy = render(picture_noise="noisy", sound_noise="noisy", nuisance=3)
    assert st.score_clip(noisy, p) == 1.0  # noise is quality's business, not a wrong attribute
    clip = render(colour="orange")
    stripped = AVClip(video=clip.video, fps=clip.fps, audio=clip.audio, sample_rate=clip.sample_rate)
    assert st.score_clip(stripped, p) == st.score_clip(clip, p) == pytest.approx(5 / 6)


def test_quality_tells_clean_from_noisy():
    q = Quality()
    clean = [q.score_clip(render(nuisance=i), prompt_for()) for i in range(3)]
    pic = q.score_clip(render(picture_noise="noisy"), prompt_for())
    snd = q.score_clip(render(sound_noise="noisy"), prompt_for())
    assert min(clean) > 0.75 and pic < 0.4 and snd < 0.6
    assert min(clean) > max(pic, snd) + 0.2
    for bg in ("wind", "hum", "silence"):
        assert q.score_clip(render(background=bg), prompt_for()) > 0.75
    comp = q.components(render(picture_noise="noisy"))
    assert 30 < comp["picture_sigma"] < 45  # rendered pixel noise std ~41 (clipped at 0/255)


def test_immerkaer_on_known_noise():
    rng = np.random.default_rng(0)
    flat = np.full((4, 64, 64, 3), 128.0)
    for sigma in (5.0, 20.0):
        v = np.clip(np.rint(flat + rng.normal(0, sigma, flat.shape)), 0, 255).astype(np.uint8)
        assert immerkaer_sigma(v) == pytest.approx(sigma, rel=0.08)
    ramp = np.broadcast_to(np.linspace(0, 250, 64)[None, None, :, None], (2, 64, 64, 3)).astype(np.uint8)
    assert immerkaer_sigma(ramp) < 1.0  # smooth structure is not noise


def test_count_bounces_on_trajectories():
    t = np.arange(24) / 12
    for k in (1, 2, 3, 4, 5):
        period = 2 / k
        u = t / period - 0.5
        d = np.abs(u - np.round(u)) * period
        cy = 50 - 120 * (d / period) * (1 - d / period)
        assert count_bounces(cy) == k
    assert count_bounces(np.full(24, 30.0)) == 0


def test_unmeasurable_clips_raise_and_become_error_rows():
    st, q = SynthText(), Quality()
    good = render()
    empty_audio = AVClip(video=good.video, fps=12, audio=np.zeros(0, np.float32), sample_rate=16000)
    silent = AVClip(video=good.video, fps=12, audio=np.zeros(32000, np.float32), sample_rate=16000)
    tiny = AVClip(video=good.video[:, :2, :2], fps=12, audio=good.audio, sample_rate=16000)
    for clip in (empty_audio, silent, tiny):
        with pytest.raises(MeasurementError):
            q.score_clip(clip, prompt_for())
    for clip in (empty_audio, silent):
        with pytest.raises(MeasurementError):
            st.score_clip(clip, Prompt("t", "a high beep"))
    assert st.score_clip(empty_audio, Prompt("t", "a red ball")) == 1.0  # audio not needed
    with pytest.raises(MeasurementError, match="names no measurable"):
        st.score_clip(good, Prompt("free", "a dog barks in the park"))
    with pytest.raises(MeasurementError, match="names no measurable"):
        st.score_clip(good, Prompt("bg", "over rain"))
    with pytest.raises(MeasurementError, match="too few"):
        st.score_clip(AVClip(video=good.video[:2], fps=12, audio=good.audio, sample_rate=16000),
                      Prompt("t", "bounces twice"))
    res = q.score([good, empty_audio], [prompt_for()] * 2)
    assert np.isfinite(res.values[0]) and np.isnan(res.values[1])
    assert res.errors[0] is None and res.errors[1] == "input too small for quality: 0.000 s of audio < 0.02 s"


def test_blank_video_shows_no_attribute():
    good = render()
    blank = AVClip(video=np.full_like(good.video, 40), fps=12, audio=good.audio, sample_rate=16000)
    st = SynthText()
    assert st.score_clip(blank, Prompt("t", "a red ball bounces three times")) == 0.0
    assert st.score_clip(blank, prompt_for()) == pytest.approx(2 / 6)  # pitch and timbre still heard
