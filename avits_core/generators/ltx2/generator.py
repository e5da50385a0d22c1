"""The LTX-2 JointGenerator: our own step loop over video and audio latents (see the package docstring)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

from avits_core.errors import ConfigError
from avits_core.generators.base import Latents
from avits_core.generators.ltx2.loading import load_ltx2_pipeline
from avits_core.generators.ltx2.packing import pack_audio, pack_video, rescale_guidance, unpack_audio, unpack_video
from avits_core.loading import chunks_halving_on_oom
from avits_core.media import AVClip
from avits_core.prompts import Prompt

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------------


class _Encoded:
    """Connector outputs for one prompt: rows ``[negative, positive]`` with CFG, ``[positive]`` without."""

    __slots__ = ("video", "audio", "mask")

    def __init__(self, video: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor):
        self.video, self.audio, self.mask = video, audio, mask


class LTX2Generator:
    """LTX-2 text-to-audio+video through diffusers components with a step-addressable loop.

    See the module docstring for the latent space, the step, NFE counting, batching and decoding.
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
        self._check_settings(height, width, num_frames, frame_rate, num_steps, batch_size, max_sequence_length,
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
        self._prompt_cache: OrderedDict[str, _Encoded] = OrderedDict()
        self._prompt_cache_size = int(prompt_cache_size)

        # Guidance, resolved exactly as LTX2Pipeline.__call__ does (``audio_x or x``).
        self.guidance_scale = float(guidance_scale)
        self.stg_scale = float(stg_scale)
        self.modality_scale = float(modality_scale)
        self.guidance_rescale = float(guidance_rescale)
        self.audio_guidance_scale = self._resolve_audio("audio_guidance_scale", audio_guidance_scale, guidance_scale)
        self.audio_stg_scale = self._resolve_audio("audio_stg_scale", audio_stg_scale, stg_scale)
        self.audio_modality_scale = self._resolve_audio("audio_modality_scale", audio_modality_scale, modality_scale)
        self.audio_guidance_rescale = self._resolve_audio(
            "audio_guidance_rescale", audio_guidance_rescale, guidance_rescale
        )
        self.do_cfg = self.guidance_scale > 1.0 or self.audio_guidance_scale > 1.0
        self.do_stg = self.stg_scale > 0.0 or self.audio_stg_scale > 0.0
        self.do_mod = self.modality_scale > 1.0 or self.audio_modality_scale > 1.0
        if self.do_stg and not self.stg_blocks:
            raise ConfigError("ltx2: stg_scale/audio_stg_scale > 0 but stg_blocks is empty")

        self._pipe = load_ltx2_pipeline(model_path, self.device, dtype, cpu_offload)
        self._setup_geometry()

    # ---------------------------------------------------------------- settings

    @staticmethod
    def _check_settings(height: int, width: int, num_frames: int, frame_rate: float, num_steps: int,
                        batch_size: int, max_sequence_length: int, motion_speed: float,
                        prompt_cache_size: int) -> None:
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

    @staticmethod
    def _resolve_audio(field: str, audio_value: float | None, video_value: float) -> float:
        if audio_value is not None and audio_value == 0 and video_value:
            log.warning(
                "ltx2: %s=0 falls back to the video value %s (LTX2Pipeline resolves audio settings as "
                "'audio_x or x'); set both to switch this guidance term off", field, video_value,
            )
        return float(audio_value or video_value)

    def _setup_geometry(self) -> None:
        import copy

        from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

        pipe = self._pipe
        tr = pipe.transformer
        self._exec_device = torch.device(pipe._execution_device)
        self._model_dtype = pipe.text_encoder.dtype  # the pipeline casts DiT inputs to the prompt dtype
        self._p = int(pipe.transformer_spatial_patch_size)
        self._pt = int(pipe.transformer_temporal_patch_size)
        self._f = (self.num_frames - 1) // pipe.vae_temporal_compression_ratio + 1
        self._h = self.height // pipe.vae_spatial_compression_ratio
        self._w = self.width // pipe.vae_spatial_compression_ratio
        self._c = int(tr.config.in_channels)
        self._tf, self._th, self._tw = self._f // self._pt, self._h // self._p, self._w // self._p
        self._video_tokens = self._tf * self._th * self._tw

        per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
        self._l = round(self.num_frames / self.frame_rate * per_second)
        self._ca = int(pipe.audio_vae.config.latent_channels)
        self._m = int(pipe.audio_vae.config.mel_bins) // pipe.audio_vae_mel_compression_ratio
        if self._l < 1:
            raise ConfigError(f"ltx2: {self.num_frames} frames at {self.frame_rate} fps give no audio latent frame")

        sched = copy.deepcopy(pipe.scheduler)
        if getattr(sched.config, "stochastic_sampling", False):
            raise ConfigError("ltx2: the scheduler has stochastic_sampling=True, which the pipeline seeds from "
                              "the global RNG; only the deterministic Euler sampler is supported")
        sigmas = np.linspace(1.0, 1 / self._num_steps, self._num_steps)
        mu = calculate_shift(
            self._video_tokens,
            sched.config.get("base_image_seq_len", 1024),
            sched.config.get("max_image_seq_len", 4096),
            sched.config.get("base_shift", 0.95),
            sched.config.get("max_shift", 2.05),
        )
        sched.set_timesteps(sigmas=sigmas, device=self._exec_device, mu=mu)
        self._sigmas = sched.sigmas  # float32, length S+1, ends with 0
        self._ts = sched.timesteps  # float32, 1000 * sigma, length S
        if len(self._ts) != self._num_steps or not torch.isfinite(self._sigmas).all():
            raise ConfigError(f"ltx2: the scheduler produced an invalid schedule {self._sigmas.tolist()}")

        try:
            from diffusers.pipelines.ltx2.utils import conditioning_frame_rate

            self._cond_fps = float(conditioning_frame_rate(self.frame_rate, self.motion_speed))
        except ImportError:  # pragma: no cover - older diffusers
            self._cond_fps = self.frame_rate / self.motion_speed

        n_layers = len(tr.transformer_blocks)
        self._stg_effective = bool(getattr(tr.config, "perturbed_attn", False)) and any(
            0 <= b < n_layers for b in self.stg_blocks
        )
        self._run_stg = self.do_stg and self._stg_effective
        if self.do_stg and not self._stg_effective:
            why = ("the transformer has perturbed_attn=False" if not getattr(tr.config, "perturbed_attn", False)
                   else f"no stg_blocks {self.stg_blocks} index an existing block (0..{n_layers - 1})")
            log.info("ltx2: STG would be a no-op (%s); skipping its DiT pass (saves 1 NFE per step)", why)
        self.nfe_per_step = (2 if self.do_cfg else 1) + int(self._run_stg) + int(self.do_mod)
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
        return (self._video_tokens, self._c * self._pt * self._p * self._p)

    @property
    def audio_shape(self) -> tuple[int, int]:
        """Packed audio latent shape per candidate: (latent frames, channels x latent mel bins)."""
        return (self._l, self._ca * self._m)

    @property
    def sample_rate(self) -> int:
        return int(self._pipe.vocoder.config.output_sampling_rate)

    # ---------------------------------------------------------------- protocol: noise

    def _draw_initial(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        v = torch.randn((1, self._c, self._f, self._h, self._w), generator=g, dtype=torch.float32)
        a = torch.randn((1, self._ca, self._l, self._m), generator=g, dtype=torch.float32)
        return v, a, g

    def init_noise(self, seeds: Sequence[int]) -> Latents:
        seeds = [self._check_seed(s) for s in seeds]
        if not seeds:
            raise ValueError("ltx2.init_noise needs at least one seed")
        vs, as_ = [], []
        for s in seeds:
            v, a, _ = self._draw_initial(s)
            vs.append(pack_video(v, self._p, self._pt))
            as_.append(pack_audio(a))
        return Latents(
            video=torch.cat(vs).to(self._exec_device),
            audio=torch.cat(as_).to(self._exec_device),
            step=0,
            seeds=seeds,
        )

    @staticmethod
    def _check_seed(seed: Any) -> int:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"ltx2: seed must be an integer, got {seed!r}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"ltx2: seed must be in [0, 2**64), got {seed}")
        return int(seed)

    # ---------------------------------------------------------------- prompts

    def _encode(self, text: str) -> _Encoded:
        hit = self._prompt_cache.get(text)
        if hit is not None:
            self._prompt_cache.move_to_end(text)
            return hit
        pipe = self._pipe
        with torch.no_grad():
            pe, pm, ne, nm = pipe.encode_prompt(
                prompt=text,
                negative_prompt=self.negative_prompt,
                do_classifier_free_guidance=self.do_cfg,
                num_videos_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
                device=self._exec_device,
            )
            if self.do_cfg:
                pe = torch.cat([ne, pe], dim=0)
                pm = torch.cat([nm, pm], dim=0)
            padding_side = getattr(pipe.tokenizer, "padding_side", "left") if pipe.tokenizer is not None else "left"
            v_ctx, a_ctx, mask = pipe.connectors(pe, pm, padding_side=padding_side)
        enc = _Encoded(v_ctx, a_ctx, mask)
        self._prompt_cache[text] = enc
        while len(self._prompt_cache) > self._prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return enc

    def _context(self, enc: _Encoded, b: int) -> dict[str, torch.Tensor]:
        """Contexts for a chunk of ``b`` candidates: main pass (``[neg]*b + [pos]*b`` with CFG) and positive."""

        def rows(x: torch.Tensor, i: int) -> torch.Tensor:
            return x[i : i + 1].expand(b, *x.shape[1:])

        pos = 1 if self.do_cfg else 0
        ctx = {
            "v_pos": rows(enc.video, pos).contiguous(),
            "a_pos": rows(enc.audio, pos).contiguous(),
            "m_pos": rows(enc.mask, pos).contiguous(),
        }
        if self.do_cfg:
            ctx["v_main"] = torch.cat([rows(enc.video, 0), rows(enc.video, 1)])
            ctx["a_main"] = torch.cat([rows(enc.audio, 0), rows(enc.audio, 1)])
            ctx["m_main"] = torch.cat([rows(enc.mask, 0), rows(enc.mask, 1)])
        else:
            ctx["v_main"], ctx["a_main"], ctx["m_main"] = ctx["v_pos"], ctx["a_pos"], ctx["m_pos"]
        return ctx

    def _coords(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE coordinates for ``b`` rows (prepared exactly as the pipeline does)."""
        hit = self._coords_cache.get(b)
        if hit is None:
            tr = self._pipe.transformer
            vc = tr.rope.prepare_video_coords(b, self._tf, self._th, self._tw, self._exec_device, fps=self._cond_fps)
            ac = tr.audio_rope.prepare_audio_coords(b, self._l, self._exec_device)
            hit = (vc, ac)
            self._coords_cache[b] = hit
        return hit

    # ---------------------------------------------------------------- the step

    def _dit(self, v_in: torch.Tensor, a_in: torch.Tensor, v_ctx: torch.Tensor, a_ctx: torch.Tensor,
             mask: torch.Tensor, timestep: torch.Tensor, v_coords: torch.Tensor, a_coords: torch.Tensor,
             isolate: bool, stg: bool, cache_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        tr = self._pipe.transformer
        kwargs = dict(
            hidden_states=v_in,
            audio_hidden_states=a_in,
            encoder_hidden_states=v_ctx,
            audio_encoder_hidden_states=a_ctx,
            timestep=timestep,
            sigma=timestep,  # LTX-2.3 reads sigma (also 1000-scaled, as in the pipeline)
            encoder_attention_mask=mask,
            audio_encoder_attention_mask=mask,
            num_frames=self._tf,
            height=self._th,
            width=self._tw,
            fps=self._cond_fps,
            audio_num_frames=self._l,
            video_coords=v_coords,
            audio_coords=a_coords,
            isolate_modalities=isolate,
            spatio_temporal_guidance_blocks=self.stg_blocks if stg else None,
            perturbation_mask=None,
            use_cross_timestep=self.use_cross_timestep,
            attention_kwargs=None,
            return_dict=False,
        )
        cache_context = getattr(tr, "cache_context", None)
        if cache_context is not None:
            with cache_context(cache_name):
                out_v, out_a = tr(**kwargs)
        else:  # pragma: no cover - older diffusers
            out_v, out_a = tr(**kwargs)
        return out_v.float(), out_a.float()

    def _guided_x0(self, V: torch.Tensor, A: torch.Tensor, ctx: dict[str, torch.Tensor], i: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided x0 (after rescale) for packed float32 latents at step index ``i``."""
        b = V.shape[0]
        sigma = self._sigmas[i]
        t = self._ts[i]
        mdt = self._model_dtype
        vc, ac = self._coords(b)

        if self.do_cfg:
            vc2 = vc.repeat((2,) + (1,) * (vc.ndim - 1))
            ac2 = ac.repeat((2,) + (1,) * (ac.ndim - 1))
            timestep = t.expand(2 * b)
            out_v, out_a = self._dit(
                torch.cat([V] * 2).to(mdt), torch.cat([A] * 2).to(mdt), ctx["v_main"], ctx["a_main"],
                ctx["m_main"], timestep, vc2, ac2, isolate=False, stg=False, cache_name="cond_uncond",
            )
            v_u, v_c = out_v.chunk(2)
            x0_v = V - v_c * sigma
            x0_v_u = V - v_u * sigma
            cfg_v = (self.guidance_scale - 1) * (x0_v - x0_v_u)
            a_u, a_c = out_a.chunk(2)
            x0_a = A - a_c * sigma
            x0_a_u = A - a_u * sigma
            cfg_a = (self.audio_guidance_scale - 1) * (x0_a - x0_a_u)
            timestep = timestep.chunk(2, dim=0)[0]
            vc_pos, ac_pos = vc2.chunk(2, dim=0)[0], ac2.chunk(2, dim=0)[0]
        else:
            timestep = t.expand(b)
            out_v, out_a = self._dit(
                V.to(mdt), A.to(mdt), ctx["v_main"], ctx["a_main"], ctx["m_main"], timestep, vc, ac,
                isolate=False, stg=False, cache_name="cond_uncond",
            )
            cfg_v = cfg_a = 0
            x0_v = V - out_v * sigma
            x0_a = A - out_a * sigma
            vc_pos, ac_pos = vc, ac

        if self._run_stg:
            s_v, s_a = self._dit(
                V.to(mdt), A.to(mdt), ctx["v_pos"], ctx["a_pos"], ctx["m_pos"], timestep, vc_pos, ac_pos,
                isolate=False, stg=True, cache_name="uncond_stg",
            )
            stg_v = self.stg_scale * (x0_v - (V - s_v * sigma))
            stg_a = self.audio_stg_scale * (x0_a - (A - s_a * sigma))
        else:
            stg_v = stg_a = 0

        if self.do_mod:
            m_v, m_a = self._dit(
                V.to(mdt), A.to(mdt), ctx["v_pos"], ctx["a_pos"], ctx["m_pos"], timestep, vc_pos, ac_pos,
                isolate=True, stg=False, cache_name="uncond_modality",
            )
            mod_v = (self.modality_scale - 1) * (x0_v - (V - m_v * sigma))
            mod_a = (self.audio_modality_scale - 1) * (x0_a - (A - m_a * sigma))
        else:
            mod_v = mod_a = 0

        g_v = x0_v + cfg_v + stg_v + mod_v
        g_a = x0_a + cfg_a + stg_a + mod_a
        if self.guidance_rescale > 0:
            g_v = rescale_guidance(g_v, x0_v, self.guidance_rescale)
        if self.audio_guidance_rescale > 0:
            g_a = rescale_guidance(g_a, x0_a, self.audio_guidance_rescale)
        return g_v, g_a

    def _euler(self, x: torch.Tensor, g: torch.Tensor, i: int) -> torch.Tensor:
        sigma, sigma_next = self._sigmas[i], self._sigmas[i + 1]
        vel = (x - g) / sigma
        return (x.to(torch.float32) + (sigma_next - sigma) * vel).to(vel.dtype)

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
        enc = self._encode(_prompt_text(prompt))
        V_all = latents.video.to(self._exec_device, torch.float32)
        A_all = latents.audio.to(self._exec_device, torch.float32)

        def run(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            ctx = self._context(enc, hi - lo)
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
        pipe = self._pipe
        V_all = latents.video.to(self._exec_device, torch.float32)
        A_all = latents.audio.to(self._exec_device, torch.float32)
        seeds = list(latents.seeds)

        def run(lo: int, hi: int) -> tuple[np.ndarray, torch.Tensor]:
            with torch.no_grad():
                vae, avae = pipe.vae, pipe.audio_vae
                x = unpack_video(V_all[lo:hi], self._tf, self._th, self._tw, self._p, self._pt)
                x = x.to(self._model_dtype)
                timestep = None
                if vae.config.timestep_conditioning:
                    x, timestep = self._decode_noise(x, seeds[lo:hi])
                mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(x.device, x.dtype)
                std = vae.latents_std.view(1, -1, 1, 1, 1).to(x.device, x.dtype)
                x = x * std / vae.config.scaling_factor + mean
                video = vae.decode(x.to(vae.dtype), timestep, return_dict=False)[0]
                frames = pipe.video_processor.postprocess_video(video, output_type="np")

                a = A_all[lo:hi]
                a = a * avae.latents_std.to(a.device, a.dtype) + avae.latents_mean.to(a.device, a.dtype)
                a = unpack_audio(a, self._m).to(avae.dtype)
                mel = avae.decode(a, return_dict=False)[0]
                wave = pipe.vocoder(mel).float()
            return np.asarray(frames, dtype=np.float32), wave

        parts = self._chunked(len(latents), run, "decode")
        return np.concatenate([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _decode_noise(self, x: torch.Tensor, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestep-conditioned VAE: mix in noise from each row's seed generator (after its initial draws)."""
        b = x.shape[0]
        ts = torch.tensor([self.decode_timestep] * b, device=x.device, dtype=x.dtype)
        dns_value = self.decode_timestep if self.decode_noise_scale is None else float(self.decode_noise_scale)
        dns = torch.tensor([dns_value] * b, device=x.device, dtype=x.dtype)[:, None, None, None, None]
        noise = []
        for s in seeds:
            _, _, g = self._draw_initial(s)
            noise.append(torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype))
        return (1 - dns) * x + dns * torch.cat(noise).to(x.device), ts

    def decode(self, latents: Latents, prompt: Prompt) -> list[AVClip]:
        frames, wave = self.decode_tensors(latents)
        video_u8 = np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)
        n_channels = int(wave.shape[1])
        mono = wave.mean(dim=1) if n_channels > 1 else wave[:, 0]
        mono_np = mono.cpu().numpy().astype(np.float32)
        clips = []
        for k in range(len(latents)):
            clips.append(
                AVClip(
                    video=video_u8[k],
                    fps=self.frame_rate,
                    audio=mono_np[k],
                    sample_rate=self.sample_rate,
                    meta={
                        "generator": self.name,
                        "seed": int(latents.seeds[k]),
                        "nfe": int(latents.nfe[k]),
                        "prompt_id": getattr(prompt, "prompt_id", None),
                        "audio_channels_mixed": n_channels,
                    },
                )
            )
        return clips

    def __repr__(self) -> str:
        return (f"LTX2Generator(model_path={self.model_path!r}, device={self.device!r}, dtype={self.dtype!r}, "
                f"{self.height}x{self.width}x{self.num_frames}@{self.frame_rate}, steps={self._num_steps}, "
                f"nfe/step={self.nfe_per_step}, batch_size={self.batch_size})")


def _prompt_text(prompt: Prompt | str) -> str:
    text = prompt if isinstance(prompt, str) else getattr(prompt, "text", None)
    if not isinstance(text, str):
        raise ValueError(f"ltx2: prompt must be a Prompt or str, got {type(prompt).__name__}")
    return text
