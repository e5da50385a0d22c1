"""The JointGenerator protocol: a text-to-audio+video model driven step by step.

Time convention (rectified flow / flow matching): ``timesteps`` is a float array of noise
levels sigma_0 = 1 (pure noise) > sigma_1 > ... > sigma_S = 0 (data), length S + 1, where S is
the number of denoising steps. A step index ``k`` in [0, S] names the state *at* sigma_k: step 0 is
the initial noise, step S the final clean latent. ``denoise(latents, prompt, start, stop)`` moves a
batch from step ``start`` to step ``stop`` (start < stop).

NFE accounting: every call that runs the denoiser adds its forward passes to ``Latents.nfe``
(per candidate; a CFG pair counts 2) and to the generator's running ``nfe_total``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch is imported where used: commands that only read a run's tables stay light
    import torch

from avits_core.media import AVClip
from avits_core.prompts import Prompt


@dataclass
class Latents:
    """A batch of joint latents. ``video`` and ``audio`` share batch dim 0 (one row per candidate).

    ``step``: the index into ``timesteps`` these latents sit at. ``nfe``: int64 array (B,) of
    denoiser forward passes spent so far on each candidate. ``seeds``: the seed each row started from.
    """

    video: torch.Tensor
    audio: torch.Tensor
    step: int
    seeds: list[int]
    nfe: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.video.shape[0] != self.audio.shape[0]:
            raise ValueError(
                f"video and audio latents disagree on batch size: {self.video.shape[0]} vs {self.audio.shape[0]}"
            )
        if len(self.seeds) != self.video.shape[0]:
            raise ValueError(f"{len(self.seeds)} seeds for a batch of {self.video.shape[0]}")
        if self.nfe is None:
            self.nfe = np.zeros(self.video.shape[0], dtype=np.int64)
        self.nfe = np.asarray(self.nfe, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.video.shape[0])

    def select(self, idx: Sequence[int]) -> "Latents":
        ix = list(idx)
        return Latents(
            video=self.video[ix].clone(),
            audio=self.audio[ix].clone(),
            step=self.step,
            seeds=[self.seeds[i] for i in ix],
            nfe=self.nfe[ix].copy(),
        )

    def with_(self, **kw: Any) -> "Latents":
        return replace(self, **kw)

    @staticmethod
    def cat(parts: Sequence["Latents"]) -> "Latents":
        if not parts:
            raise ValueError("Latents.cat needs at least one part")
        steps = {p.step for p in parts}
        if len(steps) != 1:
            raise ValueError(f"cannot concatenate latents at different steps {sorted(steps)}")
        import torch

        return Latents(
            video=torch.cat([p.video for p in parts]),
            audio=torch.cat([p.audio for p in parts]),
            step=parts[0].step,
            seeds=[s for p in parts for s in p.seeds],
            nfe=np.concatenate([p.nfe for p in parts]),
        )


@runtime_checkable
class JointGenerator(Protocol):
    """What a search algorithm needs from a joint audio-video generator."""

    name: str
    nfe_total: int

    @property
    def timesteps(self) -> np.ndarray:
        """Noise levels, length num_steps + 1, from 1.0 down to 0.0."""
        ...

    @property
    def num_steps(self) -> int: ...

    def init_noise(self, seeds: Sequence[int]) -> Latents:
        """Standard-normal initial latents at step 0, one row per seed, deterministic per seed."""
        ...

    def denoise(self, latents: Latents, prompt: Prompt, start: int, stop: int) -> Latents:
        """Integrate the sampler from step ``start`` to step ``stop`` (0 <= start < stop <= num_steps)."""
        ...

    def predict_x0(self, latents: Latents, prompt: Prompt, step: int) -> Latents:
        """The model's estimate of the clean latent from ``latents`` at ``step`` (spends NFE)."""
        ...

    def decode(self, latents: Latents, prompt: Prompt) -> list[AVClip]:
        """Render clean latents (step == num_steps) to clips. Decoding spends no NFE."""
        ...


# --------------------------------------------------------------------------- stochastic sampler
#
# Added for the methods that need stochastic transitions (SMC) or several continuations of one
# latent (beam search). Everything below is optional for a generator: a generator may implement
# ``denoise_sde(latents, prompt, start, stop, noise_scale)`` itself (SynthAV and LTX-2 do); any other
# generator gets :func:`denoise_sde`'s generic version built on ``predict_x0`` and ``init_noise``.


def sde_coefficients(t: float, t_next: float, noise_scale: float) -> tuple[float, float]:
    """(c_eps, sigma) of one stochastic step from noise level ``t`` to ``t_next`` (``t > t_next >= 0``).

    The rectified-flow path is x_t = (1 - t) x0 + t eps. Given the model's estimates x0_hat and
    eps_hat = (x_t - (1 - t) x0_hat) / t, a step is

        x_next = (1 - t_next) x0_hat + c_eps * eps_hat + sigma * z,    z ~ N(0, I),
        sigma  = noise_scale * t_next * sqrt(1 - ((1 - t) t_next / ((1 - t_next) t))^2),
        c_eps  = sqrt(t_next^2 - sigma^2).

    ``noise_scale`` = 0 gives c_eps = t_next, sigma = 0: exactly the Euler step of the ODE
    dx/dt = v. ``noise_scale`` = 1 gives the ancestral (DDPM-posterior) step: sigma^2 is the
    variance of x_{t_next} given x_t and x0 under the forward chain x_t = ((1-t)/(1-t_next)) x_{t_next}
    + noise that has the path's marginals. Every noise_scale in [0, 1] keeps the variance the path
    prescribes at t_next for a given x0 ((1 - t_next) x0 plus t_next^2 of noise), so all of them share
    the ODE's marginals in the small-step limit (this is the DDIM family written for flow matching;
    in continuous time it is the reverse SDE dx = [v - g^2/2 * score] dt + g dW with score(x, t) =
    -eps_hat / t). At t = 1 (pure noise) sigma = t_next * noise_scale: no division by zero, unlike the
    sqrt(t / (1 - t)) diffusion schedule; at t_next = 0 sigma = 0 and the step lands on x0_hat.
    """
    if not 0.0 <= noise_scale <= 1.0:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")
    if not t > t_next >= 0.0:
        raise ValueError(f"a step needs t > t_next >= 0, got t={t}, t_next={t_next}")
    if noise_scale == 0.0 or t_next == 0.0:
        return float(t_next), 0.0
    if t >= 1.0:
        ratio = 0.0
    else:
        ratio = ((1.0 - t) * t_next) / ((1.0 - t_next) * t)
    sigma = noise_scale * t_next * math.sqrt(max(0.0, 1.0 - ratio * ratio))
    return math.sqrt(max(0.0, t_next * t_next - sigma * sigma)), sigma


def sde_noise_seeds(seeds: Sequence[int], step: int) -> list[int]:
    """Seeds of the fresh noise z that row ``i`` (started from ``seeds[i]``) draws at ``step``.

    A function of (row seed, step) only, so denoise_sde(a, c) equals denoise_sde(a, b) followed by
    denoise_sde(b, c) and a row draws the same noise in any batch."""
    import hashlib

    out = []
    for s in seeds:
        h = hashlib.blake2b(f"sde|{int(s)}|{int(step)}".encode(), digest_size=8)
        out.append(int.from_bytes(h.digest(), "little") & ((1 << 63) - 1))
    return out


def modality_noise_scales(noise_scale: float, modality: str = "joint") -> tuple[float, float]:
    """(video, audio) noise scales: ``modality`` "joint" = both, "video" / "audio" = that track's
    transitions are stochastic and the other track follows the ODE (noise scale 0)."""
    if modality == "joint":
        return float(noise_scale), float(noise_scale)
    if modality == "video":
        return float(noise_scale), 0.0
    if modality == "audio":
        return 0.0, float(noise_scale)
    raise ValueError(f"modality must be one of ['joint', 'video', 'audio'], got {modality!r}")


def denoise_sde(generator: Any, latents: Latents, prompt: Prompt, start: int, stop: int,
                noise_scale: float, modality: str = "joint") -> Latents:
    """Stochastic sampler from step ``start`` to ``stop`` with the ODE's marginals (see
    :func:`sde_coefficients`). ``noise_scale`` = 0 is ``generator.denoise`` itself (bit for bit).
    ``modality``: which track's transitions are stochastic (:func:`modality_noise_scales`).

    Uses ``generator.denoise_sde`` when the generator has one; otherwise a generic version: per step
    one ``predict_x0`` (the generator's NFE of one step), eps_hat from it, the fresh noise z from
    ``generator.init_noise(sde_noise_seeds(latents.seeds, k))``. NFE: the same as ``denoise``.
    """
    if not 0.0 <= float(noise_scale) <= 1.0:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")
    eta_v, eta_a = modality_noise_scales(noise_scale, modality)
    if float(noise_scale) == 0.0:
        return generator.denoise(latents, prompt, start, stop)
    own = getattr(generator, "denoise_sde", None)
    if callable(own):
        if modality == "joint":
            return own(latents, prompt, start, stop, float(noise_scale))
        return own(latents, prompt, start, stop, float(noise_scale), modality=modality)
    if not 0 <= start < stop <= generator.num_steps or latents.step != start:
        raise ValueError(f"denoise_sde: need latents at start={start} < stop={stop} <= {generator.num_steps}, "
                         f"got latents at step {latents.step}")
    ts = generator.timesteps
    cur = latents
    for k in range(start, stop):
        t, t_next = float(ts[k]), float(ts[k + 1])
        x0 = generator.predict_x0(cur, prompt, k)
        cv, sv = sde_coefficients(t, t_next, eta_v)
        ca, sa = sde_coefficients(t, t_next, eta_a)
        v0, a0 = x0.video.to(cur.video.dtype), x0.audio.to(cur.audio.dtype)
        ev = (cur.video - (1.0 - t) * v0) / t
        ea = (cur.audio - (1.0 - t) * a0) / t
        video = (1.0 - t_next) * v0 + cv * ev
        audio = (1.0 - t_next) * a0 + ca * ea
        if sv > 0.0 or sa > 0.0:
            z = generator.init_noise(sde_noise_seeds(cur.seeds, k))
            video = video + sv * z.video.to(video.device, video.dtype)
            audio = audio + sa * z.audio.to(audio.device, audio.dtype)
        cur = Latents(video=video, audio=audio, step=k + 1, seeds=list(cur.seeds), nfe=x0.nfe.copy())
    return cur


def lookahead_x0(generator: Any, latents: Latents, prompt: Prompt, evals: int = 1) -> Latents:
    """A clean-sample estimate of latents at step s < num_steps from ``evals`` model evaluations.

    ``evals`` = 1: ``predict_x0`` at s. ``evals`` = L > 1: L deterministic (ODE) steps over a coarse
    sub-schedule of the generator's own noise levels, at step indices i_j = s + round(j (S - s) / L)
    for j = 0..L-1 (made distinct), each a jump x_{i_{j+1}} = (1 - t') x0_hat + t' eps_hat (the Euler
    step from i_j to i_{j+1}), and the x0_hat of the last one is the estimate (the "look-ahead" of
    latent beam search). NFE: ``evals`` times the generator's cost of one step; returned at
    step num_steps with the rows' nfe increased by it.
    """
    S = generator.num_steps
    s = int(latents.step)
    if not 0 <= s < S:
        raise ValueError(f"lookahead_x0 needs latents before the last step, got step {s} of {S}")
    if int(evals) < 1:
        raise ValueError(f"lookahead evals must be >= 1, got {evals}")
    L = min(int(evals), S - s)
    idx = sorted({s + int(round(j * (S - s) / L)) for j in range(L)})
    ts = generator.timesteps
    cur = latents
    x0 = None
    for j, i in enumerate(idx):
        x0 = generator.predict_x0(cur, prompt, i)
        if j + 1 == len(idx):
            break
        t, t_next = float(ts[i]), float(ts[idx[j + 1]])
        v0, a0 = x0.video.to(cur.video.dtype), x0.audio.to(cur.audio.dtype)
        video = (1.0 - t_next) * v0 + t_next * (cur.video - (1.0 - t) * v0) / t
        audio = (1.0 - t_next) * a0 + t_next * (cur.audio - (1.0 - t) * a0) / t
        cur = Latents(video=video, audio=audio, step=idx[j + 1], seeds=list(cur.seeds), nfe=x0.nfe.copy())
    assert x0 is not None
    return x0
