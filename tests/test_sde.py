"""The stochastic sampler (``denoise_sde``) and the look-ahead x0 estimate of the generator protocol.

* ``sde_coefficients`` on hand-computed cases;
* noise scale 0 is the ODE sampler bit for bit (SynthAV and tiny LTX-2);
* on SynthAV the SDE's marginals match the ODE's and the exact data distribution (the Gaussian
  mixture): mode frequencies, per-dimension means, total variance, over 2,000 samples, at the end
  and at an intermediate step (where the path's marginal is known in closed form);
* determinism: a row's noise depends on (row seed, step) only (split runs and batches agree);
* the generic fallback (a plugin generator without ``denoise_sde``) equals SynthAV's own version;
* ``lookahead_x0``: 1 evaluation is predict_x0, S - s evaluations are the ODE to the end; NFE.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avits_core.generators.base import Latents, denoise_sde, lookahead_x0, sde_coefficients, sde_noise_seeds
from avits_core.generators.synth import SynthAVGenerator
from avits_core.generators.synth_world import component_log_likelihood
from avits_core.prompts import Prompt

PROMPT = Prompt("p0", "a small red ball bounces three times with a high click over rain")


def _joint(lat: Latents) -> np.ndarray:
    return torch.cat([lat.video, lat.audio], 1).double().numpy()


def test_sde_coefficients_by_hand():
    # noise scale 0: the Euler step (c_eps = t_next, no fresh noise)
    assert sde_coefficients(0.8, 0.6, 0.0) == (0.6, 0.0)
    # from pure noise with noise scale 1: everything of eps_hat is replaced by fresh noise
    c, s = sde_coefficients(1.0, 0.5, 1.0)
    assert c == pytest.approx(0.0, abs=1e-12) and s == pytest.approx(0.5)
    # t = 0.5 -> 0.25, scale 1: ratio = (0.5 * 0.25) / (0.75 * 0.5) = 1/3; sigma = 0.25 sqrt(8/9)
    c, s = sde_coefficients(0.5, 0.25, 1.0)
    assert s == pytest.approx(0.25 * math.sqrt(8 / 9)) and c == pytest.approx(math.sqrt(0.25**2 - s**2))
    assert c == pytest.approx(0.25 / 3)
    # half the noise scale halves sigma; c_eps^2 + sigma^2 = t_next^2 always
    c2, s2 = sde_coefficients(0.5, 0.25, 0.5)
    assert s2 == pytest.approx(s / 2) and c2**2 + s2**2 == pytest.approx(0.25**2)
    # the last step lands on x0_hat
    assert sde_coefficients(0.05, 0.0, 1.0) == (0.0, 0.0)
    for bad in [(0.5, 0.5, 0.5), (0.5, 0.6, 0.5), (0.5, 0.2, 1.5), (0.5, 0.2, -0.1)]:
        with pytest.raises(ValueError):
            sde_coefficients(*bad)


def test_noise_scale_zero_is_the_ode_bit_for_bit():
    g = SynthAVGenerator(num_steps=10, guidance=2.0)
    x = g.init_noise([1, 2, 3])
    ode = g.denoise(x, PROMPT, 0, 10)
    for out in (denoise_sde(g, x, PROMPT, 0, 10, 0.0), g.denoise_sde(x, PROMPT, 0, 10, 0.0)):
        assert torch.equal(out.video, ode.video) and torch.equal(out.audio, ode.audio)
        assert out.nfe.tolist() == ode.nfe.tolist() == [20, 20, 20]
    sde = denoise_sde(g, x, PROMPT, 0, 10, 0.5)
    assert not torch.equal(sde.video, ode.video)
    assert sde.nfe.tolist() == [20, 20, 20] and sde.step == 10


def test_sde_noise_depends_on_row_seed_and_step_only():
    g = SynthAVGenerator(num_steps=8)
    x = g.init_noise([11, 12, 13])
    full = g.denoise_sde(x, PROMPT, 0, 8, 0.7)
    split = g.denoise_sde(g.denoise_sde(x, PROMPT, 0, 3, 0.7), PROMPT, 3, 8, 0.7)
    assert torch.equal(full.video, split.video) and torch.equal(full.audio, split.audio)
    one = g.denoise_sde(x.select([1]), PROMPT, 0, 8, 0.7)
    assert torch.equal(one.video[0], full.video[1]) and torch.equal(one.audio[0], full.audio[1])
    # another seed for the same start latent gives another path (the continuation of a particle)
    other = g.denoise_sde(x.with_(seeds=[21, 22, 23]), PROMPT, 0, 8, 0.7)
    assert not torch.equal(other.video, full.video)
    assert sde_noise_seeds([1], 3) != sde_noise_seeds([1], 4) != sde_noise_seeds([2], 3)


class _PlainGenerator:
    """SynthAV seen through the bare protocol (no denoise_sde method): exercises the generic version."""

    def __init__(self, inner: SynthAVGenerator):
        self.inner = inner
        self.name = "plain"
        self.timesteps = inner.timesteps
        self.num_steps = inner.num_steps

    def init_noise(self, seeds):
        return self.inner.init_noise(seeds)

    def denoise(self, lat, prompt, start, stop):
        return self.inner.denoise(lat, prompt, start, stop)

    def predict_x0(self, lat, prompt, step):
        return self.inner.predict_x0(lat, prompt, step)


def test_generic_fallback_equals_synthav_own_sde():
    g = SynthAVGenerator(num_steps=12)
    x = g.init_noise([5, 6])
    own = g.denoise_sde(x, PROMPT, 0, 12, 0.8)
    generic = denoise_sde(_PlainGenerator(g), x, PROMPT, 0, 12, 0.8)
    assert generic.nfe.tolist() == own.nfe.tolist() == [12, 12]
    # float32 state vs float64 math inside SynthAV: equal up to rounding
    assert float((generic.video - own.video).abs().max()) < 1e-4
    assert float((generic.audio - own.audio).abs().max()) < 1e-4


def _mixture_moments(g: SynthAVGenerator) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    mix = g.mixture(PROMPT)
    w = np.exp(mix.log_weights - np.logaddexp.reduce(mix.log_weights))
    mu = (w[:, None] * mix.means).sum(0)
    var = (w[:, None] * (mix.stds**2 + mix.means**2)).sum(0) - mu**2
    return w, mu, var, mix


def test_sde_marginals_match_the_ode_and_the_data():
    """2,000 samples per sampler, 60 steps: ODE, SDE at noise scale 0.5 and 1.

    Mode frequencies (the scene mode a sample lands in) and per-dimension means agree with the
    mixture within 4 standard errors for every sampler, and between the SDE and the ODE (two-sample);
    total variance within 10 % of the data's. At step 30 (t = 0.5) the path's marginal is known:
    mean (1 - t) mu, total variance (1 - t)^2 tr Var(x0) + D t^2.
    """
    S, N = 60, 2000
    g = SynthAVGenerator(num_steps=S)
    w, mu, var, mix = _mixture_moments(g)
    x = g.init_noise(list(range(N)))
    half = S // 2
    t = float(g.timesteps[half])
    out = {}
    for eta in (0.0, 0.5, 1.0):
        mid = denoise_sde(g, x, PROMPT, 0, half, eta)
        end = denoise_sde(g, mid, PROMPT, half, S, eta)
        a, m = _joint(end), _joint(mid)
        freq = np.bincount(np.argmax(component_log_likelihood(a, mix), 1), minlength=len(w)) / N
        out[eta] = (a, freq)
        z_freq = (freq - w) / np.sqrt(w * (1 - w) / N)
        z_mean = (a.mean(0) - mu) / np.sqrt(var / N)
        assert np.abs(z_freq).max() < 4, (eta, z_freq)
        assert np.abs(z_mean).max() < 4, (eta, z_mean)
        assert 0.9 < a.var(0).sum() / var.sum() < 1.1, (eta, a.var(0).sum() / var.sum())
        # intermediate marginal
        mid_var = (1 - t) ** 2 * var + t**2
        z_mid = (m.mean(0) - (1 - t) * mu) / np.sqrt(mid_var / N)
        assert np.abs(z_mid).max() < 4, (eta, z_mid)
        assert 0.95 < m.var(0).sum() / mid_var.sum() < 1.05, (eta, m.var(0).sum() / mid_var.sum())
    a0, f0 = out[0.0]
    for eta in (0.5, 1.0):
        a, f = out[eta]
        pooled = np.sqrt((f0 * (1 - f0) + f * (1 - f)) / N) + 1e-12
        assert np.abs((f - f0) / pooled).max() < 4, eta
        se = np.sqrt((a0.var(0) + a.var(0)) / N)
        assert np.abs((a.mean(0) - a0.mean(0)) / se).max() < 4, eta
        assert 0.9 < a.var(0).sum() / a0.var(0).sum() < 1.1
        # the paths really differ (a stochastic sampler, not the ODE again)
        assert np.abs(a - a0).mean() > 0.05


def test_modality_option_makes_one_track_stochastic():
    """modality "video": the video track takes the stochastic step, the audio track the ODE step (up to
    rounding), and vice versa; native SynthAV and the generic version agree."""
    g = SynthAVGenerator(num_steps=10)
    x = g.denoise(g.init_noise([1, 2]), PROMPT, 0, 3)
    ode = g.denoise(x, PROMPT, 3, 4)
    for modality, noisy, plain in (("video", "video", "audio"), ("audio", "audio", "video")):
        out = denoise_sde(g, x, PROMPT, 3, 4, 1.0, modality)
        generic = denoise_sde(_PlainGenerator(g), x, PROMPT, 3, 4, 1.0, modality)
        assert float((getattr(out, plain) - getattr(ode, plain)).abs().max()) < 1e-5
        assert float((getattr(out, noisy) - getattr(ode, noisy)).abs().max()) > 1e-2
        assert float((out.video - generic.video).abs().max()) < 1e-4
        assert float((out.audio - generic.audio).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="modality"):
        denoise_sde(g, x, PROMPT, 3, 4, 1.0, "both")


def test_lookahead_x0():
    g = SynthAVGenerator(num_steps=10)
    x = g.denoise(g.init_noise([3, 4]), PROMPT, 0, 4)
    one = lookahead_x0(g, x, PROMPT, 1)
    px = g.predict_x0(x, PROMPT, 4)
    assert torch.equal(one.video, px.video) and one.step == 10 and one.nfe.tolist() == [5, 5]
    # as many evaluations as steps left: the ODE itself (the last Euler step lands on x0_hat)
    full = lookahead_x0(g, x, PROMPT, 6)
    ode = g.denoise(x, PROMPT, 4, 10)
    assert full.nfe.tolist() == ode.nfe.tolist() == [10, 10]
    assert float((full.video - ode.video).abs().max()) < 1e-5
    # more evaluations than steps left are capped
    assert lookahead_x0(g, x, PROMPT, 50).nfe.tolist() == [10, 10]
    # 3 evaluations: predict at steps 4, 6, 8 (costs 3) and differ from the 1-evaluation estimate
    three = lookahead_x0(g, x, PROMPT, 3)
    assert three.nfe.tolist() == [7, 7] and not torch.equal(three.video, one.video)
    with pytest.raises(ValueError):
        lookahead_x0(g, ode, PROMPT, 1)


# ----------------------------------------------------------------------------------- tiny LTX-2


def test_ltx2_sde(tmp_path):
    pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_ltx2 import TINY_MAX_SEQUENCE_LENGTH, one_torch_thread, save_tiny_ltx2
    from avits_core.generators.ltx2 import LTX2Generator

    path = save_tiny_ltx2(tmp_path / "tiny", "2.0")
    with one_torch_thread():
        gen = LTX2Generator(height=64, width=96, num_frames=9, frame_rate=24.0, model_path=str(path), num_steps=4,
                            max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, guidance_scale=3.0,
                            audio_guidance_scale=3.0)
        p = Prompt("p0", "a red ball bounces twice")
        x = gen.init_noise([1, 2])
        ode = gen.denoise(x, p, 0, 4)
        zero = denoise_sde(gen, x, p, 0, 4, 0.0)
        assert torch.equal(zero.video, ode.video) and torch.equal(zero.audio, ode.audio)
        sde = denoise_sde(gen, x, p, 0, 4, 0.7)
        assert sde.nfe.tolist() == ode.nfe.tolist() and sde.step == 4
        assert not torch.equal(sde.video, ode.video) and not torch.equal(sde.audio, ode.audio)
        again = gen.denoise_sde(gen.denoise_sde(x, p, 0, 2, 0.7), p, 2, 4, 0.7)
        assert torch.equal(again.video, sde.video) and torch.equal(again.audio, sde.audio)
        # the generic version on predict_x0 agrees with the step loop's own
        generic = denoise_sde(_PlainLTX(gen), x, p, 0, 4, 0.7)
        assert float((generic.video - sde.video).abs().max()) < 1e-4
        assert float((generic.audio - sde.audio).abs().max()) < 1e-4
        assert len(gen.decode(sde, p)) == 2
        one = gen.denoise(x, p, 0, 1)
        vid = denoise_sde(gen, x, p, 0, 1, 1.0, "video")  # from pure noise the video is all fresh noise
        assert float((vid.audio - one.audio).abs().max()) < 1e-4 and not torch.allclose(vid.video, one.video)


class _PlainLTX(_PlainGenerator):
    pass
