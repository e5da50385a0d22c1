"""Decoding LTX-2 latents, as ``LTX2Pipeline.__call__`` does after its loop.

``decode_chunk``: video = unpack, (timestep-conditioned VAEs: mix in decode noise from each row's seed
generator), denormalise ``x * std / scaling_factor + mean``, VAE decode, ``postprocess_video`` to float
frames in [0, 1]; audio = denormalise the packed latents, unpack, audio-VAE decode to a mel
spectrogram, vocoder to a (stereo) waveform. ``to_clips``: uint8 frames = round(255 x), audio
down-mixed to mono as the plain channel mean.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from avits_core.generators.base import Latents
from avits_core.generators.ltx2.noise import draw_initial
from avits_core.generators.ltx2.packing import unpack_audio, unpack_video
from avits_core.generators.ltx2.settings import Geometry
from avits_core.media import AVClip


def decode_noise(geo: Geometry, x: torch.Tensor, seeds: Sequence[int], decode_timestep: float,
                 decode_noise_scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Timestep-conditioned VAE: mix in noise from each row's seed generator (after its initial draws);
    returns the noised latents and the per-row decode timesteps."""
    b = x.shape[0]
    ts = torch.tensor([decode_timestep] * b, device=x.device, dtype=x.dtype)
    dns_value = decode_timestep if decode_noise_scale is None else float(decode_noise_scale)
    dns = torch.tensor([dns_value] * b, device=x.device, dtype=x.dtype)[:, None, None, None, None]
    noise = []
    for s in seeds:
        _, _, g = draw_initial(geo, s)
        noise.append(torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype))
    return (1 - dns) * x + dns * torch.cat(noise).to(x.device), ts


def decode_chunk(pipe: Any, geo: Geometry, V: torch.Tensor, A: torch.Tensor, seeds: Sequence[int],
                 model_dtype: torch.dtype, decode_timestep: float, decode_noise_scale: float | None
                 ) -> tuple[np.ndarray, torch.Tensor]:
    """Float32 frames ``[b, T, H, W, 3]`` in [0, 1] and the vocoder's waveform ``[b, channels, N]`` of
    clean packed latents ``V`` / ``A`` (float32) whose rows have the seeds ``seeds``."""
    with torch.no_grad():
        vae, avae = pipe.vae, pipe.audio_vae
        x = unpack_video(V, geo.tf, geo.th, geo.tw, geo.p, geo.pt)
        x = x.to(model_dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            x, timestep = decode_noise(geo, x, seeds, decode_timestep, decode_noise_scale)
        mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(x.device, x.dtype)
        std = vae.latents_std.view(1, -1, 1, 1, 1).to(x.device, x.dtype)
        x = x * std / vae.config.scaling_factor + mean
        video = vae.decode(x.to(vae.dtype), timestep, return_dict=False)[0]
        frames = pipe.video_processor.postprocess_video(video, output_type="np")

        a = A * avae.latents_std.to(A.device, A.dtype) + avae.latents_mean.to(A.device, A.dtype)
        a = unpack_audio(a, geo.m).to(avae.dtype)
        mel = avae.decode(a, return_dict=False)[0]
        wave = pipe.vocoder(mel).float()
    return np.asarray(frames, dtype=np.float32), wave


def to_clips(frames: np.ndarray, wave: torch.Tensor, latents: Latents, prompt: Any, fps: float,
             sample_rate: int, generator: str) -> list[AVClip]:
    """One :class:`AVClip` per row: uint8 frames ``round(255 x)`` clipped to [0, 255], audio the mean
    over the waveform's channels; ``meta`` records generator, seed, NFE, prompt id and channels mixed."""
    video_u8 = np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)
    n_channels = int(wave.shape[1])
    mono = wave.mean(dim=1) if n_channels > 1 else wave[:, 0]
    mono_np = mono.cpu().numpy().astype(np.float32)
    clips = []
    for k in range(len(latents)):
        clips.append(
            AVClip(
                video=video_u8[k],
                fps=fps,
                audio=mono_np[k],
                sample_rate=sample_rate,
                meta={
                    "generator": generator,
                    "seed": int(latents.seeds[k]),
                    "nfe": int(latents.nfe[k]),
                    "prompt_id": getattr(prompt, "prompt_id", None),
                    "audio_channels_mixed": n_channels,
                },
            )
        )
    return clips
