"""The LTX-2 JointGenerator: our own step loop over video and audio latents (see the package docstring).

:class:`LTX2Generator` holds the settings and the loaded pipeline and runs the protocol (noise, steps,
x0 prediction, decoding) over row chunks of candidates; the pieces are plain functions by job:
``settings`` (checks, geometry, schedule), ``noise`` (per-seed draws), ``guidance`` (conditioning, the
DiT call, the guided x0, the Euler step), ``decode`` (VAE, vocoder, clips).
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

from avits_core.generators.base import Latents
from avits_core.generators.ltx2 import decode as _decode
from avits_core.generators.ltx2 import guidance as _guidance
from avits_core.generators.ltx2.loading import load_ltx2_pipeline
from avits_core.generators.ltx2.noise import initial_noise
from avits_core.generators.ltx2.settings import check_settings, make_geometry, stg_runs
from avits_core.loading import chunks_halving_on_oom
from avits_core.media import AVClip
from avits_core.prompts import Prompt


class LTX2Generator:
    """LTX-2 text-to-audio+video through diffusers components with a step-addressable loop.

    See the package docstring for the latent space, the step, NFE counting, batching and decoding.
    """

    name = "ltx2"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        cpu_offload: bool = False,
        height: int = 512,
        width: int = 768,
        num_frames: int = 121,
        frame_rate: float = 24.0,
        num_steps: int = 30,
        guidance_scale: float = 3.0,
        audio_guidance_scale: float | None = 7.0,
        stg_scale: float = 1.0,
        audio_stg_scale: float | None = 1.0,
        modality_scale: float = 3.0,
        audio_modality_scale: float | None = 3.0,
        guidance_rescale: float = 0.7,
        audio_guidance_rescale: float | None = 0.7,
        negative_prompt: str | None = None,
        max_sequence_length: int = 1024,
        batch_size: int = 1,
        stg_blocks: Sequence[int] = (28,),
        motion_speed: float = 1.0,
        use_cross_timestep: bool = True,
        decode_timestep: float = 0.0,
        decode_noise_scale: float | None = None,
        prompt_cache_size: int = 16,
    ) -> None:
        self.nfe_total = 0
        self.last_peak_memory_bytes: int | None = None
        check_settings(height, width, num_frames, frame_rate, num_steps, batch_size, max_sequence_length,
                       motion_speed, prompt_cache_size)
        self.model_path = model_path
        self.device = str(device)
        self.dtype = str(dtype)
        self.cpu_offload = bool(cpu_offload)
        self.height, self.width, self.num_frames = int(height), int(width), int(num_frames)
        self.frame_rate = float(frame_rate)
        self._num_steps = int(num_steps)
        self.batch_size = int(batch_size)
        self.negative_prompt = negative_prompt
        self.max_sequence_length = int(max_sequence_length)
        self.stg_blocks = [int(b) for b in stg_blocks]
        self.motion_speed = float(motion_speed)
        self.use_cross_timestep = bool(use_cross_timestep)
        self.decode_timestep = float(decode_timestep)
        self.decode_noise_scale = decode_noise_scale
        self._prompt_cache: OrderedDict[str, _guidance.Encoded] = OrderedDict()
        self._prompt_cache_size = int(prompt_cache_size)

        # Guidance, resolved exactly as LTX2Pipeline.__call__ does (``audio_x or x``).
        g = _guidance.resolve_guidance(guidance_scale, audio_guidance_scale, stg_scale, audio_stg_scale,
                                       modality_scale, audio_modality_scale, guidance_rescale,
                                       audio_guidance_rescale, self.stg_blocks)
        self.guidance_scale, self.audio_guidance_scale = g.guidance_scale, g.audio_guidance_scale
        self.stg_scale, self.audio_stg_scale = g.stg_scale, g.audio_stg_scale
        self.modality_scale, self.audio_modality_scale = g.modality_scale, g.audio_modality_scale
        self.guidance_rescale, self.audio_guidance_rescale = g.guidance_rescale, g.audio_guidance_rescale
        self.do_cfg, self.do_stg, self.do_mod = g.do_cfg, g.do_stg, g.do_mod

        self._pipe = load_ltx2_pipeline(model_path, self.device, dtype, cpu_offload)
        pipe = self._pipe
        self._exec_device = torch.device(pipe._execution_device)
        self._model_dtype = pipe.text_encoder.dtype  # the pipeline casts DiT inputs to the prompt dtype
        self._geo = make_geometry(pipe, self.height, self.width, self.num_frames, self.frame_rate,
                                  self._num_steps, self.motion_speed, self._exec_device)
        self._sigmas, self._ts = self._geo.sigmas, self._geo.ts
        self._tf, self._th, self._tw, self._m = self._geo.tf, self._geo.th, self._geo.tw, self._geo.m
        self._guidance = dataclasses.replace(g, run_stg=stg_runs(pipe.transformer, g.do_stg, self.stg_blocks))
        self._run_stg = self._guidance.run_stg
        self.nfe_per_step = self._guidance.nfe_per_step
        self._coords_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- protocol: schedule

    @property
    def timesteps(self) -> np.ndarray:
        return self._sigmas.detach().cpu().double().numpy()

    @property
    def num_steps(self) -> int:
        return self._num_steps

    @property
    def video_shape(self) -> tuple[int, int]:
        """Packed video latent shape per candidate: (tokens, channels)."""
        return self._geo.video_shape

    @property
    def audio_shape(self) -> tuple[int, int]:
        """Packed audio latent shape per candidate: (latent frames, channels x latent mel bins)."""
        return self._geo.audio_shape

    @property
    def sample_rate(self) -> int:
        return int(self._pipe.vocoder.config.output_sampling_rate)

    # ---------------------------------------------------------------- protocol: noise

    def init_noise(self, seeds: Sequence[int]) -> Latents:
        return initial_noise(self._geo, seeds, self._exec_device)

    # ---------------------------------------------------------------- conditioning and the step

    def _encode(self, text: str) -> _guidance.Encoded:
        """The prompt's connector outputs, from an LRU cache of ``prompt_cache_size`` texts."""
        hit = self._prompt_cache.get(text)
        if hit is not None:
            self._prompt_cache.move_to_end(text)
            return hit
        enc = _guidance.encode_prompt(self._pipe, text, self.negative_prompt, self.do_cfg,
                                      self.max_sequence_length, self._exec_device)
        self._prompt_cache[text] = enc
        while len(self._prompt_cache) > self._prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return enc

    def _coords(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE coordinates for ``b`` rows, cached per ``b``."""
        hit = self._coords_cache.get(b)
        if hit is None:
            hit = _guidance.rope_coords(self._pipe.transformer, self._geo, b, self._exec_device)
            self._coords_cache[b] = hit
        return hit

    def _dit(self, v_in: torch.Tensor, a_in: torch.Tensor, v_ctx: torch.Tensor, a_ctx: torch.Tensor,
             mask: torch.Tensor, timestep: torch.Tensor, v_coords: torch.Tensor, a_coords: torch.Tensor,
             isolate: bool, stg: bool, cache_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return _guidance.call_dit(
            self._pipe.transformer, self._geo, v_in, a_in, v_ctx, a_ctx, mask, timestep, v_coords, a_coords,
            isolate=isolate, stg_blocks=self.stg_blocks if stg else None,
            use_cross_timestep=self.use_cross_timestep, cache_name=cache_name,
        )

    def _guided_x0(self, V: torch.Tensor, A: torch.Tensor, ctx: dict[str, torch.Tensor], i: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided x0 (after rescale) for packed float32 latents at step index ``i``."""
        vc, ac = self._coords(V.shape[0])
        return _guidance.guided_x0(self._dit, self._guidance, V, A, ctx, self._sigmas[i], self._ts[i], vc, ac,
                                   self._model_dtype)

    def _euler(self, x: torch.Tensor, g: torch.Tensor, i: int) -> torch.Tensor:
        return _guidance.euler_step(x, g, self._sigmas[i], self._sigmas[i + 1])

    # ---------------------------------------------------------------- chunked execution

    def _check_latents(self, latents: Latents, what: str) -> None:
        if not isinstance(latents, Latents):
            raise TypeError(f"ltx2.{what} expects Latents, got {type(latents).__name__}")
        vs, as_ = tuple(latents.video.shape[1:]), tuple(latents.audio.shape[1:])
        if vs != self.video_shape or as_ != self.audio_shape:
            raise ValueError(
                f"ltx2.{what}: latents have video {vs} / audio {as_} per candidate, this generator's geometry "
                f"({self.height}x{self.width}, {self.num_frames} frames at {self.frame_rate} fps) needs video "
                f"{self.video_shape} / audio {self.audio_shape}"
            )

    def _chunked(self, n: int, fn: Any, what: str) -> list[Any]:
        """Run ``fn(lo, hi)`` over row chunks of at most ``batch_size``; halve the size on CUDA OOM."""
        cuda = self._exec_device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self._exec_device)
        results = chunks_halving_on_oom(self, n, fn, device=self._exec_device, what=f"ltx2.{what}", unit="candidates")
        self.last_peak_memory_bytes = int(torch.cuda.max_memory_allocated(self._exec_device)) if cuda else None
        return results

    def _check_span(self, latents: Latents, start: int, stop: int, what: str) -> None:
        self._check_latents(latents, what)
        if not (0 <= start < stop <= self._num_steps):
            raise ValueError(
                f"ltx2.{what}: need 0 <= start < stop <= {self._num_steps}, got start={start}, stop={stop}"
            )
        if latents.step != start:
            raise ValueError(f"ltx2.{what}: latents are at step {latents.step}, not at start={start}")

    def _over_rows(self, latents: Latents, prompt: Prompt, body: Any, what: str, step: int, spent: int
                   ) -> Latents:
        """Run ``body(V, A, ctx, lo, hi) -> (V, A)`` without grad on each row chunk of ``latents``
        (float32 on the execution device, ``ctx`` the prompt's context for the chunk), count ``spent``
        NFE per row and return the concatenated rows at ``step``."""
        enc = self._encode(_guidance.prompt_text(prompt))
        V_all = latents.video.to(self._exec_device, torch.float32)
        A_all = latents.audio.to(self._exec_device, torch.float32)

        def run(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            ctx = _guidance.context(enc, hi - lo, self.do_cfg)
            with torch.no_grad():
                return body(V_all[lo:hi], A_all[lo:hi], ctx, lo, hi)

        parts = self._chunked(len(latents), run, what)
        self.nfe_total += spent * len(latents)
        return Latents(
            video=torch.cat([p[0] for p in parts]),
            audio=torch.cat([p[1] for p in parts]),
            step=step,
            seeds=list(latents.seeds),
            nfe=latents.nfe + spent,
        )

    def denoise(self, latents: Latents, prompt: Prompt, start: int, stop: int) -> Latents:
        self._check_span(latents, start, stop, "denoise")

        def run(V: torch.Tensor, A: torch.Tensor, ctx: dict[str, torch.Tensor], lo: int, hi: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
            for i in range(start, stop):
                g_v, g_a = self._guided_x0(V, A, ctx, i)
                V = self._euler(V, g_v, i)
                A = self._euler(A, g_a, i)
            return V, A

        return self._over_rows(latents, prompt, run, "denoise", stop, self.nfe_per_step * (stop - start))

    def denoise_sde(self, latents: Latents, prompt: Prompt, start: int, stop: int, noise_scale: float,
                    modality: str = "joint") -> Latents:
        """Stochastic sampler with the flow's marginals: the standard flow-matching conversion of the
        guided velocity (``avits_core.generators.base.sde_coefficients``): x0_hat is the guided x0 of
        the step loop, eps_hat = (x - (1 - sigma) x0_hat) / sigma, the fresh noise z comes from
        ``init_noise`` seeded per (row seed, step). Same NFE as :meth:`denoise`; ``noise_scale`` = 0 is
        :meth:`denoise` itself; ``modality`` "video" / "audio": only that track is stochastic."""
        from avits_core.generators.base import modality_noise_scales, sde_coefficients, sde_noise_seeds

        eta_v, eta_a = modality_noise_scales(noise_scale, modality)

        if float(noise_scale) == 0.0:
            return self.denoise(latents, prompt, start, stop)
        self._check_span(latents, start, stop, "denoise_sde")
        sig = self.timesteps

        def run(V: torch.Tensor, A: torch.Tensor, ctx: dict[str, torch.Tensor], lo: int, hi: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
            for i in range(start, stop):
                t, t_next = float(sig[i]), float(sig[i + 1])
                cv, sv = sde_coefficients(t, t_next, eta_v)
                ca, sa = sde_coefficients(t, t_next, eta_a)
                g_v, g_a = self._guided_x0(V, A, ctx, i)
                V = (1.0 - t_next) * g_v + cv * (V - (1.0 - t) * g_v) / t
                A = (1.0 - t_next) * g_a + ca * (A - (1.0 - t) * g_a) / t
                if sv > 0.0 or sa > 0.0:
                    z = self.init_noise(sde_noise_seeds(latents.seeds[lo:hi], i))
                    V = V + sv * z.video.to(V.device, V.dtype)
                    A = A + sa * z.audio.to(A.device, A.dtype)
                V, A = V.to(torch.float32), A.to(torch.float32)
            return V, A

        return self._over_rows(latents, prompt, run, "denoise_sde", stop, self.nfe_per_step * (stop - start))

    def predict_x0(self, latents: Latents, prompt: Prompt, step: int) -> Latents:
        """The guided x0 estimate at step index ``step`` (0 <= step < num_steps); returned at step num_steps."""
        self._check_latents(latents, "predict_x0")
        if not 0 <= step < self._num_steps:
            raise ValueError(f"ltx2.predict_x0: step must be in [0, {self._num_steps - 1}], got {step}")
        if latents.step != step:
            raise ValueError(f"ltx2.predict_x0: latents are at step {latents.step}, not at step={step}")

        def run(V: torch.Tensor, A: torch.Tensor, ctx: dict[str, torch.Tensor], lo: int, hi: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
            return self._guided_x0(V, A, ctx, step)

        return self._over_rows(latents, prompt, run, "predict_x0", self._num_steps, self.nfe_per_step)

    # ---------------------------------------------------------------- decoding

    def decode_tensors(self, latents: Latents) -> tuple[np.ndarray, torch.Tensor]:
        """Frames as float32 ``[B, T, H, W, 3]`` in [0, 1] (as ``LTX2Pipeline(output_type='np')``) and the
        vocoder's waveform ``[B, channels, N]`` (float32), before uint8 quantisation and down-mixing."""
        self._check_latents(latents, "decode")
        if latents.step != self._num_steps:
            raise ValueError(f"ltx2.decode: latents are at step {latents.step}; decode needs clean latents "
                             f"(step {self._num_steps}); use denoise or predict_x0 first")
        V_all = latents.video.to(self._exec_device, torch.float32)
        A_all = latents.audio.to(self._exec_device, torch.float32)
        seeds = list(latents.seeds)

        def run(lo: int, hi: int) -> tuple[np.ndarray, torch.Tensor]:
            return _decode.decode_chunk(self._pipe, self._geo, V_all[lo:hi], A_all[lo:hi], seeds[lo:hi],
                                        self._model_dtype, self.decode_timestep, self.decode_noise_scale)

        parts = self._chunked(len(latents), run, "decode")
        return np.concatenate([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def decode(self, latents: Latents, prompt: Prompt) -> list[AVClip]:
        frames, wave = self.decode_tensors(latents)
        return _decode.to_clips(frames, wave, latents, prompt, self.frame_rate, self.sample_rate, self.name)

    def __repr__(self) -> str:
        return (f"LTX2Generator(model_path={self.model_path!r}, device={self.device!r}, dtype={self.dtype!r}, "
                f"{self.height}x{self.width}x{self.num_frames}@{self.frame_rate}, steps={self._num_steps}, "
                f"nfe/step={self.nfe_per_step}, batch_size={self.batch_size})")
