"""ToyAV: a minimal JointGenerator (avits' protocol) with an exact Gaussian rectified flow.

The world: for a prompt, a 3-d video latent and a 3-d audio latent whose data distribution is
N(mu, s^2 I) with s = ``spread`` and mu drawn from a hash of the prompt text (so each prompt has
its own look and sound). Rectified flow interpolates x_t = (1 - t) x0 + t eps (t = sigma, 1 = noise,
0 = data); for a Gaussian x0 the posterior mean has a closed form,
    E[x0 | x_t] = mu + (1 - t) s^2 / ((1 - t)^2 s^2 + t^2) * (x_t - (1 - t) mu),
and the velocity is v = (x_t - E[x0 | x_t]) / t. ``denoise`` takes Euler steps x += (t' - t) v over
``num_steps`` uniform steps (1 NFE per step per candidate); ``predict_x0`` returns E[x0 | x_t]
(1 NFE). ``decode`` renders 1 s of 32x32 video at 8 fps (a coloured square whose colour is
sigmoid(video latent) and whose position drifts with it) and a 16 kHz sine whose pitch is
220 * 2^(a0) Hz and whose amplitude is 0.8 * sigmoid(a1).

This is what a JavisDiT or Ovi adapter implements, on a model small enough for a test.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np
import torch

from avits_core.generators.base import Latents
from avits_core.media import AVClip
from avits_core.prompts import Prompt

DIM = 3


def _prompt_mean(text: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
    return rng.normal(0.0, 1.0, DIM), rng.normal(0.0, 1.0, DIM)


class ToyAVGenerator:
    """Toy joint audio-video generator (plugin example): exact Gaussian rectified flow, 3+3 latents."""

    name = "toy_av"

    def __init__(self, num_steps: int = 8, spread: float = 0.5, fps: int = 8, size: int = 32,
                 sample_rate: int = 16000, duration: float = 1.0) -> None:
        from avits_core.errors import ConfigError

        if int(num_steps) != num_steps or num_steps < 1:
            raise ConfigError(f"toy_av: num_steps must be an integer >= 1, got {num_steps!r}")
        if not spread > 0:
            raise ConfigError(f"toy_av: spread must be > 0, got {spread!r}")
        self._num_steps = int(num_steps)
        self.spread = float(spread)
        self.fps, self.size, self.sample_rate, self.duration = int(fps), int(size), int(sample_rate), float(duration)
        self.nfe_total = 0

    @classmethod
    def doctor(cls, **params: Any) -> list[str]:
        """Findings for ``avits doctor`` (the optional plugin hook): this model needs no weights."""
        try:
            cls(**params)
        except Exception as exc:  # noqa: BLE001 - reported as a finding
            return [f"ERROR: toy_av: {exc}"]
        return ["ok: toy_av needs no weights (a closed-form toy model)"]

    @property
    def timesteps(self) -> np.ndarray:
        return np.linspace(1.0, 0.0, self._num_steps + 1)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    def init_noise(self, seeds: Sequence[int]) -> Latents:
        rows_v, rows_a = [], []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            rows_v.append(torch.randn(DIM, generator=g))
            rows_a.append(torch.randn(DIM, generator=g))
        return Latents(video=torch.stack(rows_v), audio=torch.stack(rows_a), step=0, seeds=[int(s) for s in seeds])

    def _x0(self, x: torch.Tensor, mu: np.ndarray, t: float) -> torch.Tensor:
        m = torch.as_tensor(mu, dtype=x.dtype)
        s2 = self.spread**2
        gain = (1.0 - t) * s2 / ((1.0 - t) ** 2 * s2 + t**2)
        return m + gain * (x - (1.0 - t) * m)

    def denoise(self, latents: Latents, prompt: Prompt, start: int, stop: int) -> Latents:
        if not 0 <= start < stop <= self._num_steps or latents.step != start:
            raise ValueError(f"toy_av: cannot denoise from step {start} to {stop} (latents at {latents.step})")
        mu_v, mu_a = _prompt_mean(prompt.text)
        ts = self.timesteps
        v, a = latents.video.clone(), latents.audio.clone()
        for i in range(start, stop):
            t, t_next = float(ts[i]), float(ts[i + 1])
            v = v + (t_next - t) * (v - self._x0(v, mu_v, t)) / t
            a = a + (t_next - t) * (a - self._x0(a, mu_a, t)) / t
        n = stop - start
        self.nfe_total += n * len(latents)
        return Latents(video=v, audio=a, step=stop, seeds=list(latents.seeds), nfe=latents.nfe + n)

    def predict_x0(self, latents: Latents, prompt: Prompt, step: int) -> Latents:
        mu_v, mu_a = _prompt_mean(prompt.text)
        t = float(self.timesteps[step])
        self.nfe_total += len(latents)
        return Latents(video=self._x0(latents.video, mu_v, t), audio=self._x0(latents.audio, mu_a, t),
                       step=self._num_steps, seeds=list(latents.seeds), nfe=latents.nfe + 1)

    def decode(self, latents: Latents, prompt: Prompt) -> list[AVClip]:
        clips = []
        n_frames = max(1, round(self.duration * self.fps))
        n_samples = round(self.duration * self.sample_rate)
        tt = np.arange(n_samples) / self.sample_rate
        for v, a in zip(latents.video.numpy().astype(np.float64), latents.audio.numpy().astype(np.float64)):
            colour = (255.0 / (1.0 + np.exp(-v))).astype(np.uint8)
            frames = np.zeros((n_frames, self.size, self.size, 3), dtype=np.uint8)
            side = self.size // 4
            for f in range(n_frames):
                x = int((f / n_frames + np.tanh(v[0])) % 1.0 * (self.size - side))
                frames[f, side : 2 * side, x : x + side] = colour
            pitch = 220.0 * 2.0 ** float(np.clip(a[0], -2, 2))
            amp = 0.8 / (1.0 + np.exp(-a[1]))
            audio = (amp * np.sin(2 * np.pi * pitch * tt)).astype(np.float32)
            clips.append(AVClip(video=frames, fps=float(self.fps), audio=audio, sample_rate=self.sample_rate,
                                meta={"pitch_hz": pitch, "amplitude": amp}))
        return clips
