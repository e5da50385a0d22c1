"""Settings and geometry of the LTX-2 generator, as plain functions.

``check_settings`` refuses constructor values the step loop cannot run (before any weight is loaded);
``resolve_audio`` applies the pipeline's ``audio_x or x`` rule; ``make_geometry`` derives, from the
loaded pipeline, the latent grid (video tokens, audio latent frames, channels) and the sigma schedule
of one (height, width, num_frames, frame_rate, num_steps) exactly as ``LTX2Pipeline.__call__`` does;
``stg_runs`` decides whether the STG pass can change anything on this transformer.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from avits_core.errors import ConfigError

log = logging.getLogger(__name__)


def check_settings(height: int, width: int, num_frames: int, frame_rate: float, num_steps: int,
                   batch_size: int, max_sequence_length: int, motion_speed: float,
                   prompt_cache_size: int) -> None:
    """Raise :class:`ConfigError` naming the first setting the LTX-2 loop cannot run with."""
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ConfigError(f"ltx2: height and width must be positive multiples of 32, got {height}x{width}")
    if num_frames < 1 or (num_frames - 1) % 8:
        raise ConfigError(
            f"ltx2: num_frames must be 8k+1 (9, 17, ..., 121), got {num_frames}; the VAE would decode "
            f"{8 * ((num_frames - 1) // 8) + 1} frames while the audio follows {num_frames}"
        )
    if not frame_rate or frame_rate <= 0:
        raise ConfigError(f"ltx2: frame_rate must be > 0, got {frame_rate}")
    if num_steps < 2:
        raise ConfigError(f"ltx2: num_steps must be >= 2 (1 step makes the LTX-2 schedule NaN), got {num_steps}")
    if batch_size < 1:
        raise ConfigError(f"ltx2: batch_size must be >= 1, got {batch_size}")
    if max_sequence_length < 1:
        raise ConfigError(f"ltx2: max_sequence_length must be >= 1, got {max_sequence_length}")
    if motion_speed <= 0:
        raise ConfigError(f"ltx2: motion_speed must be > 0, got {motion_speed}")
    if prompt_cache_size < 1:
        raise ConfigError(f"ltx2: prompt_cache_size must be >= 1, got {prompt_cache_size}")


def resolve_audio(field: str, audio_value: float | None, video_value: float) -> float:
    """The pipeline's ``audio_x or x``: ``None`` or 0 falls back to the video value (an explicit 0 is
    logged as a warning, since it cannot switch the audio term off on its own)."""
    if audio_value is not None and audio_value == 0 and video_value:
        log.warning(
            "ltx2: %s=0 falls back to the video value %s (LTX2Pipeline resolves audio settings as "
            "'audio_x or x'); set both to switch this guidance term off", field, video_value,
        )
    return float(audio_value or video_value)


@dataclass(frozen=True)
class Geometry:
    """Latent grid and schedule of one generator setting.

    Video latent ``[1, c, f, h, w]`` (f = (frames-1)/8 + 1, h, w = size/32), patched into a token grid
    ``tf x th x tw`` (patch sizes ``pt``, ``p``); audio latent ``[1, ca, l, m]``. ``sigmas`` (float32,
    length S+1, ends with 0) and ``ts`` (1000 sigma, length S) live on the execution device;
    ``cond_fps`` is the frame rate the DiT's RoPE sees (``frame_rate / motion_speed``).
    """

    p: int
    pt: int
    f: int
    h: int
    w: int
    c: int
    tf: int
    th: int
    tw: int
    l: int  # the audio latent length, as in the pipeline
    ca: int
    m: int
    sigmas: torch.Tensor
    ts: torch.Tensor
    cond_fps: float

    @property
    def video_tokens(self) -> int:
        return self.tf * self.th * self.tw

    @property
    def video_shape(self) -> tuple[int, int]:
        """Packed video latent shape per candidate: (tokens, channels)."""
        return (self.video_tokens, self.c * self.pt * self.p * self.p)

    @property
    def audio_shape(self) -> tuple[int, int]:
        """Packed audio latent shape per candidate: (latent frames, channels x latent mel bins)."""
        return (self.l, self.ca * self.m)


def make_geometry(pipe: Any, height: int, width: int, num_frames: int, frame_rate: float, num_steps: int,
                  motion_speed: float, device: torch.device) -> Geometry:
    """The latent grid and the sigma schedule for these settings, computed as ``LTX2Pipeline.__call__``
    does (``set_timesteps(sigmas=linspace(1, 1/S, S), mu=calculate_shift(video_tokens, ...))`` on a
    private copy of the scheduler). Raises :class:`ConfigError` when the clip has no audio latent
    frame, the scheduler is stochastic, or the schedule is not finite."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

    p = int(pipe.transformer_spatial_patch_size)
    pt = int(pipe.transformer_temporal_patch_size)
    f = (num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
    h = height // pipe.vae_spatial_compression_ratio
    w = width // pipe.vae_spatial_compression_ratio
    c = int(pipe.transformer.config.in_channels)
    tf, th, tw = f // pt, h // p, w // p

    per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
    n_audio = round(num_frames / frame_rate * per_second)
    ca = int(pipe.audio_vae.config.latent_channels)
    m = int(pipe.audio_vae.config.mel_bins) // pipe.audio_vae_mel_compression_ratio
    if n_audio < 1:
        raise ConfigError(f"ltx2: {num_frames} frames at {frame_rate} fps give no audio latent frame")

    sched = copy.deepcopy(pipe.scheduler)
    if getattr(sched.config, "stochastic_sampling", False):
        raise ConfigError("ltx2: the scheduler has stochastic_sampling=True, which the pipeline seeds from "
                          "the global RNG; only the deterministic Euler sampler is supported")
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
    mu = calculate_shift(
        tf * th * tw,
        sched.config.get("base_image_seq_len", 1024),
        sched.config.get("max_image_seq_len", 4096),
        sched.config.get("base_shift", 0.95),
        sched.config.get("max_shift", 2.05),
    )
    sched.set_timesteps(sigmas=sigmas, device=device, mu=mu)
    if len(sched.timesteps) != num_steps or not torch.isfinite(sched.sigmas).all():
        raise ConfigError(f"ltx2: the scheduler produced an invalid schedule {sched.sigmas.tolist()}")

    try:
        from diffusers.pipelines.ltx2.utils import conditioning_frame_rate

        cond_fps = float(conditioning_frame_rate(frame_rate, motion_speed))
    except ImportError:  # pragma: no cover - older diffusers
        cond_fps = frame_rate / motion_speed

    return Geometry(p=p, pt=pt, f=f, h=h, w=w, c=c, tf=tf, th=th, tw=tw, l=n_audio, ca=ca, m=m,
                    sigmas=sched.sigmas, ts=sched.timesteps, cond_fps=cond_fps)


def stg_runs(transformer: Any, do_stg: bool, stg_blocks: Sequence[int]) -> bool:
    """Whether the STG pass runs: asked for, and not provably a no-op (a transformer built with
    ``perturbed_attn=False``, or no index in ``stg_blocks`` naming an existing block); a skipped pass
    is logged once, with the reason."""
    n_layers = len(transformer.transformer_blocks)
    perturbed = bool(getattr(transformer.config, "perturbed_attn", False))
    effective = perturbed and any(0 <= b < n_layers for b in stg_blocks)
    if do_stg and not effective:
        why = ("the transformer has perturbed_attn=False" if not perturbed
               else f"no stg_blocks {list(stg_blocks)} index an existing block (0..{n_layers - 1})")
        log.info("ltx2: STG would be a no-op (%s); skipping its DiT pass (saves 1 NFE per step)", why)
    return do_stg and effective
