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
