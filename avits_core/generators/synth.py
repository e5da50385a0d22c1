"""SynthAVGenerator: the embedded joint audio-video world with an exact rectified-flow sampler.

The data distribution for a prompt is a diagonal Gaussian mixture over scene modes in the joint
latent x = [video | audio] (see :mod:`avits_core.generators.synth_world` for the modes, the latent
layout, the prompt grammar and the renderer).

Rectified flow, exactly: x_t = (1 - t) x0 + t eps, eps ~ N(0, I). Given component k (mean m_k, std
s_k), x_t ~ N((1 - t) m_k, (1 - t)^2 s_k^2 + t^2) per dimension, so

    r_k(x_t)         = softmax_k[ log w_k + log N(x_t; (1 - t) m_k, (1 - t)^2 s_k^2 + t^2) ]
    E[x0 | x_t, k]   = m_k + (1 - t) s_k^2 / ((1 - t)^2 s_k^2 + t^2) * (x_t - (1 - t) m_k)
    x0_hat(x_t)      = sum_k r_k E[x0 | x_t, k]
    v(x_t)           = E[eps - x0 | x_t] = (x_t - x0_hat) / t

``denoise`` integrates dx/dt = v with Euler steps over ``timesteps`` = linspace(1, 0, S + 1); the
last step lands on x0_hat at t = 1/S. One velocity evaluation = 1 NFE.

Guidance (decision): classifier-free guidance between the prompt-conditional mixture and an
"unconditional" mixture with the same components but uniform weights (without the text every scene
variant is equally plausible): x0_cfg = x0_u + g (x0_c - x0_u), v = (x_t - x0_cfg) / t. With g = 1
this is the plain conditional flow and costs 1 NFE per step; any g != 1 costs 2 NFE per step (and 2
per ``predict_x0``), as a real CFG pair would. g > 1 shifts mass toward the modes the prompt favours
(the faithful one most), approximately tilting the weights by (w_c / w_u)^(g - 1).

Precision (decision): public latents are float32 torch tensors. The math runs in float64 from the
float32 state, and the state is rounded to float32 after every Euler step, so that
denoise(0, S) equals denoise(0, k) followed by denoise(k, S) bit for bit.

``init_noise`` draws each row from its own ``torch.Generator`` seeded with the row's seed (video
dims first, then audio), so a row is identical whatever batch it is in. The renderer's own noise
(pixel noise, hiss, textures) is seeded from a hash of the clean latent row.

``predict_x0(latents, prompt, step)`` returns x0_hat (or its CFG version) as clean latents
(``step = num_steps``); at step == num_steps (t = 0) the latents are already clean and it returns a
copy spending 0 NFE. ``decode`` needs clean latents (step == num_steps) and spends no NFE.

Each clip's ``meta`` holds ``truth`` (see ``_truth``; JSON-serialisable) and ``seed``.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from avits_core.errors import ConfigError
from avits_core.generators.base import Latents
from avits_core.generators.synth_world import (
    AUDIO_DIM,
    VIDEO_DIM,
    Mixture,
    build_mixture,
    component_log_likelihood,
    decode_params,
    latent_rng,
    parse_prompt,
    render_audio,
    render_video,
    scene_spec,
    scene_truth,
)
from avits_core.media import AVClip
from avits_core.prompts import Prompt

__all__ = ["SynthAVGenerator", "gmm_posterior", "gmm_velocity", "parse_prompt", "scene_spec", "WORLD_VERSION"]

log = logging.getLogger(__name__)

WORLD_VERSION = 1


def _gmm_terms(x: np.ndarray, t: float, means: np.ndarray, stds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-component log N(x_t; (1-t) m_k, (1-t)^2 s_k^2 + t^2) (B, K, without the 2 pi constant)
    and per-component posterior means E[x0 | x_t, k] (B, K, D)."""
    a = 1.0 - t
    var = a * a * stds * stds + t * t  # (K, D) variance of x_t given the component
    diff = x[:, None, :] - a * means[None]  # (B, K, D)
    loglik = -0.5 * np.sum(diff * diff / var[None] + np.log(var)[None], axis=-1)
    comp_mean = means[None] + (a * stds * stds / var)[None] * diff
    return loglik, comp_mean


def _responsibilities(loglik: np.ndarray, log_weights: np.ndarray) -> np.ndarray:
    ll = loglik + log_weights[None]
    ll = ll - ll.max(axis=1, keepdims=True)
    r = np.exp(ll)
    return r / r.sum(axis=1, keepdims=True)


def gmm_posterior(x: np.ndarray, t: float, means: np.ndarray, stds: np.ndarray,
                  log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior of x0 given x_t under a diagonal Gaussian-mixture prior and x_t = (1-t) x0 + t eps.

    x (B, D), means/stds (K, D), log_weights (K,), 0 <= t <= 1; all float64.
    Returns (x0_hat (B, D), responsibilities (B, K), per-component posterior means (B, K, D)).
    """
    loglik, comp_mean = _gmm_terms(x, t, means, stds)
    resp = _responsibilities(loglik, log_weights)
    x0_hat = np.sum(resp[:, :, None] * comp_mean, axis=1)
    return x0_hat, resp, comp_mean


def gmm_velocity(x: np.ndarray, t: float, means: np.ndarray, stds: np.ndarray,
                 log_weights: np.ndarray) -> np.ndarray:
    """Rectified-flow velocity E[eps - x0 | x_t] = (x_t - x0_hat) / t (t > 0)."""
    if t <= 0:
        raise ValueError(f"the velocity is undefined at t = {t}; use gmm_posterior for x0")
    x0_hat, _, _ = gmm_posterior(x, t, means, stds, log_weights)
    return (x - x0_hat) / t


class SynthAVGenerator:
    """SynthAV: a Gaussian-mixture world of bouncing objects with an exact rectified-flow sampler.

    Parameters: ``num_steps`` (Euler steps, >= 1), ``guidance`` (CFG scale >= 0; 1 = plain
    conditional, != 1 costs 2 NFE per step), ``duration`` (s), ``fps``, ``size`` (frame side, px),
    ``sample_rate`` (Hz), ``mode_weights`` (optional override of synth_world.MODE_WEIGHTS).
    """

    name = "synth"
    video_dim = VIDEO_DIM
    audio_dim = AUDIO_DIM

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> None:
        """The pre-flight check of ``generator.params`` (no torch, nothing built): unknown keys and bad
        values raise :class:`ConfigError` naming the parameter and the value."""
        import inspect

        try:
            inspect.signature(cls.__init__).bind(None, **dict(params))
        except TypeError as exc:
            raise ConfigError(f"synth: {exc}") from exc
        cls(**params)  # the constructor's checks; it imports no torch and builds no tensors

    def __init__(self, num_steps: int = 20, guidance: float = 1.0, duration: float = 2.0, fps: float = 12,
                 size: int = 64, sample_rate: int = 16000,
                 mode_weights: dict[str, float] | None = None) -> None:
        if int(num_steps) != num_steps or num_steps < 1:
            raise ConfigError(f"synth: num_steps must be an integer >= 1, got {num_steps!r}")
        if not math.isfinite(guidance) or guidance < 0:
            raise ConfigError(f"synth: guidance must be finite and >= 0, got {guidance!r}")
        if not duration > 0 or not math.isfinite(duration):
            raise ConfigError(f"synth: duration must be > 0 seconds, got {duration!r}")
        if not fps > 0 or round(duration * fps) < 1:
            raise ConfigError(f"synth: fps must be > 0 and give at least one frame, got {fps!r}")
        if int(size) != size or size < 16:
            raise ConfigError(f"synth: size must be an integer >= 16 pixels, got {size!r}")
        if int(sample_rate) != sample_rate or sample_rate < 4000:
            raise ConfigError(f"synth: sample_rate must be an integer >= 4000 Hz, got {sample_rate!r}")
        self._num_steps = int(num_steps)
        self.guidance = float(guidance)
        self.duration = float(duration)
        self.fps = float(fps)
        self.size = int(size)
        self.sample_rate = int(sample_rate)
        self.mode_weights = None if mode_weights is None else dict(mode_weights)
        if self.mode_weights is not None:
            try:
                build_mixture("a ball", self.mode_weights)
            except ValueError as exc:
                raise ConfigError(f"synth: mode_weights: {exc}") from exc
        self.nfe_total = 0
        self._timesteps = np.linspace(1.0, 0.0, self._num_steps + 1)
        self._mixtures: OrderedDict[str, tuple[Mixture, Mixture]] = OrderedDict()

    # -- protocol properties -------------------------------------------------------------------
    @property
    def timesteps(self) -> np.ndarray:
        return self._timesteps.copy()

    @property
    def num_steps(self) -> int:
        return self._num_steps

    @property
    def nfe_per_step(self) -> int:
        return 1 if self.guidance == 1.0 else 2

    # -- mixtures -------------------------------------------------------------------------------
    def mixtures(self, prompt: Prompt | str) -> tuple[Mixture, Mixture]:
        """(conditional, unconditional) mixtures for a prompt (cached by text)."""
        text = prompt.text if isinstance(prompt, Prompt) else str(prompt)
        hit = self._mixtures.get(text)
        if hit is None:
            cond = build_mixture(text, self.mode_weights)
            uncond = cond.with_weights(np.ones(len(cond.names)))
            hit = (cond, uncond)
            self._mixtures[text] = hit
            if len(self._mixtures) > 256:
                self._mixtures.popitem(last=False)
        return hit

    def mixture(self, prompt: Prompt | str) -> Mixture:
        return self.mixtures(prompt)[0]

    def _x0_hat(self, x: np.ndarray, t: float, prompt: Prompt) -> np.ndarray:
        """x0_hat of the conditional flow, or x0_u + g (x0_c - x0_u) under guidance g != 1."""
        cond, uncond = self.mixtures(prompt)
        loglik, comp_mean = _gmm_terms(x, t, cond.means, cond.stds)
        x0_c = np.sum(_responsibilities(loglik, cond.log_weights)[:, :, None] * comp_mean, axis=1)
        if self.guidance == 1.0:
            return x0_c
        x0_u = np.sum(_responsibilities(loglik, uncond.log_weights)[:, :, None] * comp_mean, axis=1)
        return x0_u + self.guidance * (x0_c - x0_u)

    # -- helpers --------------------------------------------------------------------------------
    def _joint(self, latents: Latents) -> np.ndarray:
        v, a = latents.video, latents.audio
        if v.ndim != 2 or v.shape[1] != VIDEO_DIM or a.ndim != 2 or a.shape[1] != AUDIO_DIM:
            raise ValueError(
                f"synth latents must be video (B, {VIDEO_DIM}) and audio (B, {AUDIO_DIM}), "
                f"got {tuple(v.shape)} and {tuple(a.shape)}"
            )
        import torch  # imported where used: a config check constructs this class without torch

        x = torch.cat([v, a], dim=1).detach().to("cpu", torch.float32).numpy()
        if not np.all(np.isfinite(x)):
            raise ValueError("synth latents contain NaN or infinite values")
        return x

    def _latents(self, x32: np.ndarray, like: Latents, step: int, nfe: np.ndarray) -> Latents:
        import torch

        x32 = np.ascontiguousarray(x32, dtype=np.float32)
        return Latents(
            video=torch.from_numpy(x32[:, :VIDEO_DIM].copy()),
            audio=torch.from_numpy(x32[:, VIDEO_DIM:].copy()),
            step=step,
            seeds=list(like.seeds),
            nfe=nfe,
        )

    def _check_step(self, step: int, what: str) -> None:
        if int(step) != step or not 0 <= step <= self._num_steps:
            raise ValueError(f"synth: {what} must be an integer step in [0, {self._num_steps}], got {step!r}")

    def _check_span(self, latents: Latents, start: int, stop: int, what: str) -> None:
        self._check_step(start, "start")
        self._check_step(stop, "stop")
        if not start < stop:
            raise ValueError(f"synth: {what} needs start < stop, got start={start}, stop={stop}")
        if latents.step != start:
            raise ValueError(f"synth: latents are at step {latents.step}, but {what} was asked to start at {start}")

    # -- protocol methods -----------------------------------------------------------------------
    def init_noise(self, seeds: Sequence[int]) -> Latents:
        """Standard-normal latents, one row per seed (video dims drawn first, then audio)."""
        import torch

        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("synth: init_noise needs at least one seed")
        vids, auds = [], []
        for s in seeds:
            if not 0 <= s < 2**64:
                raise ValueError(f"synth: seed must be in [0, 2**64), got {s}")
            g = torch.Generator(device="cpu").manual_seed(s)
            vids.append(torch.randn(VIDEO_DIM, generator=g, dtype=torch.float32))
            auds.append(torch.randn(AUDIO_DIM, generator=g, dtype=torch.float32))
        return Latents(video=torch.stack(vids), audio=torch.stack(auds), step=0, seeds=seeds)

    def denoise(self, latents: Latents, prompt: Prompt, start: int, stop: int) -> Latents:
        """Euler-integrate the exact mixture flow from step ``start`` to ``stop``."""
        self._check_span(latents, start, stop, "denoise")
        x = self._joint(latents)
        ts = self._timesteps
        for k in range(start, stop):
            t, t_next = float(ts[k]), float(ts[k + 1])
            x64 = x.astype(np.float64)
            x0 = self._x0_hat(x64, t, prompt)
            vel = (x64 - x0) / t
            x = (x64 + (t_next - t) * vel).astype(np.float32)
        spent = (stop - start) * self.nfe_per_step
        self.nfe_total += spent * len(latents)
        return self._latents(x, latents, stop, latents.nfe + spent)

    def denoise_sde(self, latents: Latents, prompt: Prompt, start: int, stop: int, noise_scale: float,
                    modality: str = "joint") -> Latents:
        """Stochastic sampler with the flow's marginals (``avits_core.generators.base.sde_coefficients``):
        per step x_next = (1 - t') x0_hat + c_eps eps_hat + sigma z, with the exact mixture posterior
        mean x0_hat (so eps_hat, and the score -eps_hat / t, are exact) and z drawn per (row seed,
        step) from ``init_noise``. Same NFE as :meth:`denoise`; ``noise_scale`` = 0 is :meth:`denoise`.
        The math runs in float64 and the state is rounded to float32 after every step, as in denoise.
        ``modality`` "video" / "audio": only that track's dimensions get stochastic steps."""
        from avits_core.generators.base import modality_noise_scales, sde_coefficients, sde_noise_seeds

        eta_v, eta_a = modality_noise_scales(noise_scale, modality)

        if float(noise_scale) == 0.0:
            return self.denoise(latents, prompt, start, stop)
        self._check_span(latents, start, stop, "denoise_sde")
        x = self._joint(latents)
        ts = self._timesteps
        for k in range(start, stop):
            t, t_next = float(ts[k]), float(ts[k + 1])
            cv, sv = sde_coefficients(t, t_next, eta_v)
            ca, sa = sde_coefficients(t, t_next, eta_a)
            c_eps = np.r_[np.full(VIDEO_DIM, cv), np.full(AUDIO_DIM, ca)]
            sigma = np.r_[np.full(VIDEO_DIM, sv), np.full(AUDIO_DIM, sa)]
            x64 = x.astype(np.float64)
            x0 = self._x0_hat(x64, t, prompt)
            eps = (x64 - (1.0 - t) * x0) / t
            nxt = (1.0 - t_next) * x0 + c_eps * eps
            if sv > 0.0 or sa > 0.0:
                z = self.init_noise(sde_noise_seeds(latents.seeds, k))
                nxt = nxt + sigma * np.concatenate([z.video.numpy(), z.audio.numpy()], axis=1).astype(np.float64)
            x = nxt.astype(np.float32)
        spent = (stop - start) * self.nfe_per_step
        self.nfe_total += spent * len(latents)
        return self._latents(x, latents, stop, latents.nfe + spent)

    def predict_x0(self, latents: Latents, prompt: Prompt, step: int) -> Latents:
        """Posterior mean of the clean latent (CFG-combined when guidance != 1), at step num_steps."""
        self._check_step(step, "step")
        if latents.step != step:
            raise ValueError(f"synth: latents are at step {latents.step}, but predict_x0 was given step {step}")
        x = self._joint(latents)
        t = float(self._timesteps[step])
        if t <= 0.0:
            return self._latents(x, latents, self._num_steps, latents.nfe.copy())
        x0 = self._x0_hat(x.astype(np.float64), t, prompt)
        self.nfe_total += self.nfe_per_step * len(latents)
        return self._latents(x0, latents, self._num_steps, latents.nfe + self.nfe_per_step)

    def decode(self, latents: Latents, prompt: Prompt) -> list[AVClip]:
        """Render clean latents to clips; ``meta["truth"]`` holds the scene's ground truth."""
        if latents.step != self._num_steps:
            raise ValueError(
                f"synth: decode needs clean latents (step {self._num_steps}), got step {latents.step}; "
                "denoise them first or use predict_x0"
            )
        x32 = self._joint(latents)
        x = x32.astype(np.float64)
        cond = self.mixture(prompt)
        ll = component_log_likelihood(x, cond)
        best = np.argmax(ll, axis=1)
        requested = parse_prompt(prompt.text)
        clips = []
        for i in range(len(latents)):
            p = decode_params(x[i], self.duration, self.size)
            rng = latent_rng(x32[i])
            video = render_video(p, rng, self.duration, self.fps, self.size)
            audio, times = render_audio(p, rng, self.duration, self.sample_rate)
            truth = self._truth(p, times, cond, int(best[i]), requested, prompt.text)
            clips.append(AVClip(video=video, fps=self.fps, audio=audio, sample_rate=self.sample_rate,
                                meta={"truth": truth, "seed": int(latents.seeds[i])}))
        log.debug("synth: decoded %d clips for prompt %r (modes %s)", len(clips), prompt.prompt_id,
                  [c.meta["truth"]["mode"] for c in clips])
        return clips

    def _truth(self, p: dict[str, Any], times: list[float], cond: Mixture, k: int,
               requested: dict[str, Any], text: str) -> dict[str, Any]:
        truth: dict[str, Any] = {"world": "synthav", "world_version": WORLD_VERSION, "mode": cond.names[k]}
        truth.update(scene_truth(p, times))
        truth.update(prompt_text=text, requested=dict(requested), spec=dict(cond.spec),
                     duration_s=self.duration, fps=self.fps)
        return truth

    def generate(self, prompt: Prompt, seeds: Sequence[int]) -> list[AVClip]:
        """Convenience: init_noise -> denoise(0, S) -> decode."""
        lat = self.denoise(self.init_noise(seeds), prompt, 0, self._num_steps)
        return self.decode(lat, prompt)
