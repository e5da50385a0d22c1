"""Conditioning and the guided x0 of one LTX-2 step, as ``LTX2Pipeline.__call__`` computes them.

``encode_prompt`` (Gemma + connectors, negative and positive rows together), ``context`` (the rows of a
chunk of candidates), ``rope_coords`` (RoPE coordinates), ``call_dit`` (one transformer call with the
pipeline's keyword arguments), ``guided_x0`` (main pass, CFG / STG / modality-isolation deltas in x0
space, rescale) and ``euler_step``. :class:`Guidance` holds the resolved scales and switches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from avits_core.errors import ConfigError
from avits_core.generators.ltx2.packing import rescale_guidance
from avits_core.generators.ltx2.settings import Geometry, resolve_audio
from avits_core.prompts import Prompt


class Encoded:
    """Connector outputs for one prompt: rows ``[negative, positive]`` with CFG, ``[positive]`` without."""

    __slots__ = ("video", "audio", "mask")

    def __init__(self, video: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor):
        self.video, self.audio, self.mask = video, audio, mask


@dataclass(frozen=True)
class Guidance:
    """The guidance scales after the pipeline's ``audio_x or x`` resolution, and which passes run:
    CFG when either CFG scale > 1, STG when either STG scale > 0 (``run_stg``: and the pass is not a
    no-op on this transformer, see :func:`~avits_core.generators.ltx2.settings.stg_runs`), modality
    isolation when either modality scale > 1."""

    guidance_scale: float
    audio_guidance_scale: float
    stg_scale: float
    audio_stg_scale: float
    modality_scale: float
    audio_modality_scale: float
    guidance_rescale: float
    audio_guidance_rescale: float
    run_stg: bool = False

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0 or self.audio_guidance_scale > 1.0

    @property
    def do_stg(self) -> bool:
        return self.stg_scale > 0.0 or self.audio_stg_scale > 0.0

    @property
    def do_mod(self) -> bool:
        return self.modality_scale > 1.0 or self.audio_modality_scale > 1.0

    @property
    def nfe_per_step(self) -> int:
        """DiT calls per candidate per step: ``(2 if CFG else 1) + (1 if STG runs) + (1 if modality)``."""
        return (2 if self.do_cfg else 1) + int(self.run_stg) + int(self.do_mod)


def resolve_guidance(guidance_scale: float, audio_guidance_scale: float | None, stg_scale: float,
                     audio_stg_scale: float | None, modality_scale: float, audio_modality_scale: float | None,
                     guidance_rescale: float, audio_guidance_rescale: float | None,
                     stg_blocks: Sequence[int]) -> Guidance:
    """Resolve the audio scales exactly as ``LTX2Pipeline.__call__`` does (``audio_x or x``); STG asked
    for with no ``stg_blocks`` is a :class:`ConfigError`. ``run_stg`` is set once the transformer is known."""
    g = Guidance(
        guidance_scale=float(guidance_scale),
        audio_guidance_scale=resolve_audio("audio_guidance_scale", audio_guidance_scale, guidance_scale),
        stg_scale=float(stg_scale),
        audio_stg_scale=resolve_audio("audio_stg_scale", audio_stg_scale, stg_scale),
        modality_scale=float(modality_scale),
        audio_modality_scale=resolve_audio("audio_modality_scale", audio_modality_scale, modality_scale),
        guidance_rescale=float(guidance_rescale),
        audio_guidance_rescale=resolve_audio("audio_guidance_rescale", audio_guidance_rescale, guidance_rescale),
    )
    if g.do_stg and not stg_blocks:
        raise ConfigError("ltx2: stg_scale/audio_stg_scale > 0 but stg_blocks is empty")
    return g


def prompt_text(prompt: Prompt | str) -> str:
    """The text of a :class:`Prompt` (or a plain string); anything else is a ``ValueError``."""
    text = prompt if isinstance(prompt, str) else getattr(prompt, "text", None)
    if not isinstance(text, str):
        raise ValueError(f"ltx2: prompt must be a Prompt or str, got {type(prompt).__name__}")
    return text


def encode_prompt(pipe: Any, text: str, negative_prompt: str | None, do_cfg: bool, max_sequence_length: int,
                  device: torch.device) -> Encoded:
    """Gemma hidden states of the prompt (and of the negative prompt with CFG, first) through the
    text connectors, as the pipeline runs them."""
    with torch.no_grad():
        pe, pm, ne, nm = pipe.encode_prompt(
            prompt=text,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=do_cfg,
            num_videos_per_prompt=1,
            max_sequence_length=max_sequence_length,
            device=device,
        )
        if do_cfg:
            pe = torch.cat([ne, pe], dim=0)
            pm = torch.cat([nm, pm], dim=0)
        padding_side = getattr(pipe.tokenizer, "padding_side", "left") if pipe.tokenizer is not None else "left"
        v_ctx, a_ctx, mask = pipe.connectors(pe, pm, padding_side=padding_side)
    return Encoded(v_ctx, a_ctx, mask)


def context(enc: Encoded, b: int, do_cfg: bool) -> dict[str, torch.Tensor]:
    """Contexts for a chunk of ``b`` candidates: main pass (``[neg]*b + [pos]*b`` with CFG) and positive."""

    def rows(x: torch.Tensor, i: int) -> torch.Tensor:
        return x[i : i + 1].expand(b, *x.shape[1:])

    pos = 1 if do_cfg else 0
    ctx = {
        "v_pos": rows(enc.video, pos).contiguous(),
        "a_pos": rows(enc.audio, pos).contiguous(),
        "m_pos": rows(enc.mask, pos).contiguous(),
    }
    if do_cfg:
        ctx["v_main"] = torch.cat([rows(enc.video, 0), rows(enc.video, 1)])
        ctx["a_main"] = torch.cat([rows(enc.audio, 0), rows(enc.audio, 1)])
        ctx["m_main"] = torch.cat([rows(enc.mask, 0), rows(enc.mask, 1)])
    else:
        ctx["v_main"], ctx["a_main"], ctx["m_main"] = ctx["v_pos"], ctx["a_pos"], ctx["m_pos"]
    return ctx


def rope_coords(transformer: Any, geo: Geometry, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE coordinates (video, audio) for ``b`` rows, prepared exactly as the pipeline does."""
    vc = transformer.rope.prepare_video_coords(b, geo.tf, geo.th, geo.tw, device, fps=geo.cond_fps)
    ac = transformer.audio_rope.prepare_audio_coords(b, geo.l, device)
    return vc, ac


def call_dit(transformer: Any, geo: Geometry, v_in: torch.Tensor, a_in: torch.Tensor, v_ctx: torch.Tensor,
             a_ctx: torch.Tensor, mask: torch.Tensor, timestep: torch.Tensor, v_coords: torch.Tensor,
             a_coords: torch.Tensor, *, isolate: bool, stg_blocks: Sequence[int] | None, use_cross_timestep: bool,
             cache_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One DiT call with the pipeline's keyword arguments; the two velocity predictions in float32."""
    kwargs = dict(
        hidden_states=v_in,
        audio_hidden_states=a_in,
        encoder_hidden_states=v_ctx,
        audio_encoder_hidden_states=a_ctx,
        timestep=timestep,
        sigma=timestep,  # LTX-2.3 reads sigma (also 1000-scaled, as in the pipeline)
        encoder_attention_mask=mask,
        audio_encoder_attention_mask=mask,
        num_frames=geo.tf,
        height=geo.th,
        width=geo.tw,
        fps=geo.cond_fps,
        audio_num_frames=geo.l,
        video_coords=v_coords,
        audio_coords=a_coords,
        isolate_modalities=isolate,
        spatio_temporal_guidance_blocks=stg_blocks,
        perturbation_mask=None,
        use_cross_timestep=use_cross_timestep,
        attention_kwargs=None,
        return_dict=False,
    )
    cache_context = getattr(transformer, "cache_context", None)
    if cache_context is not None:
        with cache_context(cache_name):
            out_v, out_a = transformer(**kwargs)
    else:  # pragma: no cover - older diffusers
        out_v, out_a = transformer(**kwargs)
    return out_v.float(), out_a.float()


#: ``dit(v_in, a_in, v_ctx, a_ctx, mask, timestep, v_coords, a_coords, isolate, stg, cache_name)``
DiT = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def guided_x0(dit: DiT, g: Guidance, V: torch.Tensor, A: torch.Tensor, ctx: dict[str, torch.Tensor],
              sigma: torch.Tensor, t: torch.Tensor, vc: torch.Tensor, ac: torch.Tensor, mdt: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided x0 (after rescale) for packed float32 latents ``V``, ``A`` at sigma ``sigma`` (``t`` =
    1000 sigma): x0 = x - v sigma for every pass, then ``x0_c + cfg + stg + mod`` (left to right), then
    the per-modality rescale. DiT inputs are cast to ``mdt`` (the text encoder's dtype, as the pipeline)."""
    b = V.shape[0]
    if g.do_cfg:
        vc2 = vc.repeat((2,) + (1,) * (vc.ndim - 1))
        ac2 = ac.repeat((2,) + (1,) * (ac.ndim - 1))
        timestep = t.expand(2 * b)
        out_v, out_a = dit(
            torch.cat([V] * 2).to(mdt), torch.cat([A] * 2).to(mdt), ctx["v_main"], ctx["a_main"],
            ctx["m_main"], timestep, vc2, ac2, isolate=False, stg=False, cache_name="cond_uncond",
        )
        v_u, v_c = out_v.chunk(2)
        x0_v = V - v_c * sigma
        x0_v_u = V - v_u * sigma
        cfg_v = (g.guidance_scale - 1) * (x0_v - x0_v_u)
        a_u, a_c = out_a.chunk(2)
        x0_a = A - a_c * sigma
        x0_a_u = A - a_u * sigma
        cfg_a = (g.audio_guidance_scale - 1) * (x0_a - x0_a_u)
        timestep = timestep.chunk(2, dim=0)[0]
        vc_pos, ac_pos = vc2.chunk(2, dim=0)[0], ac2.chunk(2, dim=0)[0]
    else:
        timestep = t.expand(b)
        out_v, out_a = dit(
            V.to(mdt), A.to(mdt), ctx["v_main"], ctx["a_main"], ctx["m_main"], timestep, vc, ac,
            isolate=False, stg=False, cache_name="cond_uncond",
        )
        cfg_v = cfg_a = 0
        x0_v = V - out_v * sigma
        x0_a = A - out_a * sigma
        vc_pos, ac_pos = vc, ac

    if g.run_stg:
        s_v, s_a = dit(
            V.to(mdt), A.to(mdt), ctx["v_pos"], ctx["a_pos"], ctx["m_pos"], timestep, vc_pos, ac_pos,
            isolate=False, stg=True, cache_name="uncond_stg",
        )
        stg_v = g.stg_scale * (x0_v - (V - s_v * sigma))
        stg_a = g.audio_stg_scale * (x0_a - (A - s_a * sigma))
    else:
        stg_v = stg_a = 0

    if g.do_mod:
        m_v, m_a = dit(
            V.to(mdt), A.to(mdt), ctx["v_pos"], ctx["a_pos"], ctx["m_pos"], timestep, vc_pos, ac_pos,
            isolate=True, stg=False, cache_name="uncond_modality",
        )
        mod_v = (g.modality_scale - 1) * (x0_v - (V - m_v * sigma))
        mod_a = (g.audio_modality_scale - 1) * (x0_a - (A - m_a * sigma))
    else:
        mod_v = mod_a = 0

    g_v = x0_v + cfg_v + stg_v + mod_v
    g_a = x0_a + cfg_a + stg_a + mod_a
    if g.guidance_rescale > 0:
        g_v = rescale_guidance(g_v, x0_v, g.guidance_rescale)
    if g.audio_guidance_rescale > 0:
        g_a = rescale_guidance(g_a, x0_a, g.audio_guidance_rescale)
    return g_v, g_a


def euler_step(x: torch.Tensor, g: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the flow from sigma to sigma_next with the velocity ``(x - g) / sigma``."""
    vel = (x - g) / sigma
    return (x.to(torch.float32) + (sigma_next - sigma) * vel).to(vel.dtype)
