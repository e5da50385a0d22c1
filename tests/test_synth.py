"""SynthAV generator: protocol, determinism, NFE accounting, exact flow math, grammar, rendering."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avits_core.errors import ConfigError
from avits_core.generators.base import JointGenerator, Latents
from avits_core.generators.synth import SynthAVGenerator, gmm_posterior, gmm_velocity
from avits_core.generators.synth_world import (
    ATTRIBUTES,
    AUDIO_DIM,
    LATENT_DIM,
    MODE_WEIGHTS,
    VIDEO_DIM,
    build_mixture,
    component_log_likelihood,
    describe,
    parse_prompt,
    scene_spec,
    spec_to_gaussian,
)
from avits_core.prompts import Prompt
from avits_core.registry import GENERATORS

PROMPT = Prompt("p0", "a small red ball bounces three times with a high click over rain")


def joint(lat: Latents) -> np.ndarray:
    return torch.cat([lat.video, lat.audio], dim=1).numpy()


def mode_of(gen: SynthAVGenerator, lat: Latents, prompt: Prompt) -> list[str]:
    mix = gen.mixture(prompt)
    best = component_log_likelihood(joint(lat).astype(np.float64), mix).argmax(axis=1)
    return [mix.names[k] for k in best]


# ---------------------------------------------------------------------------------------------
# protocol, noise, determinism
# ---------------------------------------------------------------------------------------------


def test_registry_and_protocol():
    gen = GENERATORS.create("synth")
    assert isinstance(gen, SynthAVGenerator)
    assert isinstance(gen, JointGenerator)
    assert gen.name == "synth" and gen.num_steps == 20 and gen.nfe_total == 0
    ts = gen.timesteps
    assert ts.shape == (21,) and ts[0] == 1.0 and ts[-1] == 0.0 and np.all(np.diff(ts) < 0)
    np.testing.assert_allclose(ts, np.linspace(1, 0, 21))


def test_init_noise_deterministic_and_batch_independent():
    gen = SynthAVGenerator()
    a = gen.init_noise([5, 7, 2**62 + 3])
    b = gen.init_noise([2**62 + 3])
    assert a.video.shape == (3, VIDEO_DIM) and a.audio.shape == (3, AUDIO_DIM)
    assert a.video.dtype == torch.float32 and a.step == 0 and list(a.nfe) == [0, 0, 0]
    assert torch.equal(a.video[2], b.video[0]) and torch.equal(a.audio[2], b.audio[0])
    assert torch.equal(gen.init_noise([5]).video, a.video[:1])
    assert not torch.equal(a.video[0], a.video[1])
    x = joint(gen.init_noise(list(range(400))))
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    with pytest.raises(ValueError, match="seed"):
        gen.init_noise([-1])


def test_denoise_deterministic_and_batch_independent():
    gen = SynthAVGenerator()
    seeds = [11, 12, 13, 14, 15]
    full = gen.denoise(gen.init_noise(seeds), PROMPT, 0, 20)
    again = SynthAVGenerator().denoise(SynthAVGenerator().init_noise(seeds), PROMPT, 0, 20)
    assert torch.equal(full.video, again.video) and torch.equal(full.audio, again.audio)
    for i in (0, 3):
        one = gen.denoise(gen.init_noise([seeds[i]]), PROMPT, 0, 20)
        assert torch.equal(one.video[0], full.video[i]) and torch.equal(one.audio[0], full.audio[i])
    assert full.step == 20 and full.seeds == seeds and full.video.dtype == torch.float32


def test_nfe_accounting():
    gen = SynthAVGenerator(num_steps=10)
    lat = gen.init_noise([1, 2, 3])
    mid = gen.denoise(lat, PROMPT, 0, 4)
    assert list(mid.nfe) == [4, 4, 4] and gen.nfe_total == 12 and list(lat.nfe) == [0, 0, 0]
    x0 = gen.predict_x0(mid, PROMPT, 4)
    assert list(x0.nfe) == [5, 5, 5] and gen.nfe_total == 15 and x0.step == 10
    end = gen.denoise(mid, PROMPT, 4, 10)
    assert list(end.nfe) == [10, 10, 10] and gen.nfe_total == 33
    clean = gen.predict_x0(end, PROMPT, 10)  # already clean: no denoiser call
    assert list(clean.nfe) == [10, 10, 10] and gen.nfe_total == 33
    assert torch.equal(clean.video, end.video)
    gen.decode(end.select([0]), PROMPT)
    assert gen.nfe_total == 33  # decoding is free

    cfg = SynthAVGenerator(num_steps=10, guidance=2.0)
    out = cfg.denoise(cfg.init_noise([1, 2]), PROMPT, 0, 10)
    assert list(out.nfe) == [20, 20] and cfg.nfe_total == 40
    cfg.predict_x0(cfg.denoise(cfg.init_noise([1]), PROMPT, 0, 3), PROMPT, 3)
    assert cfg.nfe_total == 40 + 6 + 2


def test_denoise_split_equals_full():
    gen = SynthAVGenerator()
    lat = gen.init_noise([3, 4, 5, 6])
    full = gen.denoise(lat, PROMPT, 0, 20)
    for k in (1, 7, 19):
        part = gen.denoise(gen.denoise(lat, PROMPT, 0, k), PROMPT, k, 20)
        assert torch.equal(part.video, full.video) and torch.equal(part.audio, full.audio)
        assert np.array_equal(part.nfe, full.nfe)


def test_step_and_shape_errors():
    gen = SynthAVGenerator()
    lat = gen.init_noise([1])
    with pytest.raises(ValueError, match="step 0"):
        gen.denoise(lat, PROMPT, 3, 5)
    with pytest.raises(ValueError, match="start < stop"):
        gen.denoise(lat, PROMPT, 0, 0)
    with pytest.raises(ValueError, match=r"\[0, 20\]"):
        gen.denoise(lat, PROMPT, 0, 21)
    with pytest.raises(ValueError, match="clean latents"):
        gen.decode(lat, PROMPT)
    bad = Latents(video=torch.zeros(1, 5), audio=torch.zeros(1, AUDIO_DIM), step=0, seeds=[0])
    with pytest.raises(ValueError, match="video"):
        gen.denoise(bad, PROMPT, 0, 1)
    nan = Latents(video=torch.full((1, VIDEO_DIM), float("nan")), audio=torch.zeros(1, AUDIO_DIM), step=0, seeds=[0])
    with pytest.raises(ValueError, match="NaN"):
        gen.denoise(nan, PROMPT, 0, 1)
    for kw in ({"num_steps": 0}, {"guidance": -1.0}, {"size": 8}, {"fps": 0}, {"sample_rate": 100},
               {"mode_weights": {"faithful": 1.0, "nope": 1.0}}):
        with pytest.raises(ConfigError):
            SynthAVGenerator(**kw)


# ---------------------------------------------------------------------------------------------
# flow math
# ---------------------------------------------------------------------------------------------


def test_velocity_one_gaussian_matches_analytic():
    rng = np.random.default_rng(0)
    d = 6
    m = rng.normal(size=(1, d))
    s = rng.uniform(0.1, 2.0, size=(1, d))
    x = rng.normal(size=(4, d))
    for t in (0.95, 0.5, 0.1):
        # x_t ~ N((1-t) m, sigma_t^2), sigma_t^2 = (1-t)^2 s^2 + t^2; the Gaussian-to-Gaussian flow
        # x_t = (1-t) m + sigma_t z has velocity -m + (d sigma_t / dt) / sigma_t (x - (1-t) m).
        sig2 = (1 - t) ** 2 * s**2 + t**2
        dsig2 = -2 * (1 - t) * s**2 + 2 * t
        v_true = -m + 0.5 * dsig2 / sig2 * (x - (1 - t) * m)
        v = gmm_velocity(x, t, m, s, np.zeros(1))
        np.testing.assert_allclose(v, v_true, rtol=1e-10, atol=1e-12)
        x0, resp, _ = gmm_posterior(x, t, m, s, np.zeros(1))
        np.testing.assert_allclose(resp, 1.0)
        np.testing.assert_allclose(x0, m + (1 - t) * s**2 / sig2 * (x - (1 - t) * m), rtol=1e-12)
    with pytest.raises(ValueError):
        gmm_velocity(x, 0.0, m, s, np.zeros(1))


def test_posterior_two_modes():
    means = np.array([[-3.0, 0.0], [3.0, 0.0]])
    stds = np.full((2, 2), 0.2)
    logw = np.log(np.array([0.25, 0.75]))
    x = np.array([[0.3, -0.2], [-2.9, 0.1]])
    _, resp, _ = gmm_posterior(x, 1.0, means, stds, logw)
    np.testing.assert_allclose(resp, [[0.25, 0.75], [0.25, 0.75]])  # pure noise: the prior
    x0, resp, _ = gmm_posterior(x, 1e-6, means, stds, logw)
    np.testing.assert_allclose(resp[1], [1.0, 0.0], atol=1e-12)  # clean: the nearest mode
    np.testing.assert_allclose(x0[1], x[1], atol=1e-4)  # and x0_hat -> x itself


def test_one_mode_ode_transports_noise_to_the_gaussian():
    # with only the faithful mode the exact flow is x0 = m + s * x1 (per dim); fine Euler steps get there
    gen = SynthAVGenerator(num_steps=400, mode_weights={"faithful": 1.0})
    lat = gen.init_noise([1, 2])
    out = gen.denoise(lat, PROMPT, 0, 400)
    m, s = spec_to_gaussian(scene_spec(PROMPT.text))
    np.testing.assert_allclose(joint(out), m + s * joint(lat), atol=2e-2)  # Euler error O(1/S)


def test_prior_mode_fractions_and_guidance():
    seeds = list(range(1000, 1400))

    def faithful_fraction(guidance: float) -> tuple[float, dict[str, float]]:
        gen = SynthAVGenerator(guidance=guidance)
        modes = mode_of(gen, gen.denoise(gen.init_noise(seeds), PROMPT, 0, 20), PROMPT)
        frac = {k: modes.count(k) / len(modes) for k in MODE_WEIGHTS}
        return frac["faithful"], frac

    f1, frac = faithful_fraction(1.0)
    assert 0.22 <= f1 <= 0.40  # near the prior 0.30: a random candidate is usually not faithful
    assert all(frac[k] > 0 for k in MODE_WEIGHTS)
    f3, _ = faithful_fraction(3.0)
    assert f3 > f1 + 0.2


def test_mixture_structure():
    mix = build_mixture(PROMPT.text)
    assert abs(mix.weights.sum() - 1) < 1e-12 and mix.means.shape == (len(mix.names), LATENT_DIM)
    assert mix.mode_weights()["faithful"] == pytest.approx(0.30)
    assert mix.names.count("av_offset") == 2
    # count 1 has no "missing bounce" mode; the weights renormalise
    once = build_mixture("a red ball bounces once")
    assert "missing_bounce" not in once.names and abs(once.weights.sum() - 1) < 1e-12
    wrong = once.specs[once.names.index("wrong_colour")]
    assert wrong["colour"] != "red"


# ---------------------------------------------------------------------------------------------
# grammar
# ---------------------------------------------------------------------------------------------


def test_parse_prompt_grammar():
    assert parse_prompt(PROMPT.text) == {
        "size": "small", "colour": "red", "shape": "ball", "count": 3, "pitch": "high", "timbre": "click",
        "background": "rain",
    }
    assert parse_prompt("A BIG Violet box bounces twice, deep buzzer, windy") == {
        "size": "large", "colour": "purple", "shape": "cube", "count": 2, "pitch": "low", "timbre": "buzz",
        "background": "wind",
    }
    assert parse_prompt("one red ball") == {"colour": "red", "shape": "ball"}  # "one" without "times"
    assert parse_prompt("the cube hits the floor 4 times") == {"shape": "cube", "count": 4}
    assert parse_prompt("a dog barks in the park") == {}
    assert parse_prompt("a red and blue ball")["colour"] == "red"  # first mention wins
    for spec_text in (describe(scene_spec("x")), describe(scene_spec("y"))):
        assert set(parse_prompt(spec_text)) == set(ATTRIBUTES)


def test_scene_spec_free_text_is_hashed_deterministically():
    a = scene_spec("a dog barks in the park")
    assert a == scene_spec("  A dog   barks in the PARK ") and set(ATTRIBUTES) <= set(a)
    assert a["audio_offset_s"] == 0.0 and a["picture_noise"] == "clean"
    specs = [scene_spec(f"free text number {i}") for i in range(40)]
    for attr in ATTRIBUTES:
        assert len({s[attr] for s in specs}) > 1  # the hash varies every attribute
    assert scene_spec("a green thing")["colour"] == "green"  # named attributes are kept


# ---------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------


def test_decode_shapes_ranges_and_truth():
    gen = SynthAVGenerator()
    lat = gen.denoise(gen.init_noise([1, 2, 3]), PROMPT, 0, 20)
    clips = gen.decode(lat, PROMPT)
    assert len(clips) == 3
    modes = mode_of(gen, lat, PROMPT)
    for c, mode in zip(clips, modes):
        assert c.video.shape == (24, 64, 64, 3) and c.video.dtype == np.uint8
        assert c.audio.shape == (32000,) and c.audio.dtype == np.float32
        assert c.fps == 12 and c.sample_rate == 16000
        assert np.all(np.abs(c.audio) <= 1.0) and np.abs(c.audio).max() > 0.1
        assert c.video.std() > 5  # an object and a floor are drawn
        truth = json.loads(json.dumps(c.meta["truth"]))  # JSON-serialisable
        assert truth["mode"] == mode and truth["requested"] == parse_prompt(PROMPT.text)
        for key in ("colour", "rgb", "shape", "size", "count", "bounce_times_s", "audio_event_times_s",
                    "audio_offset_s", "pitch", "pitch_hz", "timbre", "background", "picture_noise",
                    "sound_noise", "spec"):
            assert key in truth
        assert len(truth["bounce_times_s"]) == truth["count"]
        assert all(0 < t < 2 for t in truth["bounce_times_s"] + truth["audio_event_times_s"])
        if mode == "faithful":
            for k, v in parse_prompt(PROMPT.text).items():
                assert truth[k] == v
            assert abs(truth["audio_offset_s"]) < 0.083
    # decoding is deterministic and independent of the batch
    again = gen.decode(lat.select([2]), PROMPT)[0]
    assert np.array_equal(again.video, clips[2].video) and np.array_equal(again.audio, clips[2].audio)


def test_decode_other_settings():
    gen = SynthAVGenerator(num_steps=4, duration=1.5, fps=8, size=32, sample_rate=8000)
    c = gen.generate(Prompt("q", "a large white cube bounces twice"), [9])[0]
    assert c.video.shape == (12, 32, 32, 3) and c.audio.shape == (12000,)
    assert c.meta["truth"]["duration_s"] == 1.5


def test_modes_decode_to_their_scene():
    """A latent at each mode's mean renders that mode's scene."""
    gen = SynthAVGenerator()
    mix = gen.mixture(PROMPT)
    lat = Latents(video=torch.from_numpy(mix.means[:, :VIDEO_DIM].astype(np.float32)),
                  audio=torch.from_numpy(mix.means[:, VIDEO_DIM:].astype(np.float32)),
                  step=20, seeds=list(range(len(mix.names))))
    for c, name, spec in zip(gen.decode(lat, PROMPT), mix.names, mix.specs):
        t = c.meta["truth"]
        assert t["mode"] == name
        for attr in ATTRIBUTES:
            assert t[attr] == spec[attr], (name, attr)
        assert t["audio_offset_s"] == pytest.approx(spec["audio_offset_s"], abs=1e-4)
        assert (t["picture_noise"] > 0.5) == (spec["picture_noise"] == "noisy")
        assert (t["sound_noise"] > 0.5) == (spec["sound_noise"] == "noisy")
        if name == "av_offset":
            assert math.isclose(abs(t["audio_offset_s"]), 0.25, abs_tol=1e-4)
