"""LTX-2 (Lightricks) as a JointGenerator, through diffusers' ``LTX2Pipeline`` components.

Package layout (diffusers-style, one job per module): ``loading`` (locating the weights in a local
folder or the Hugging Face cache, checking components, loading them once per process), ``packing``
(latent token layouts, guidance rescale), ``settings`` (constructor checks, ``audio_x or x``, latent
geometry and sigma schedule), ``noise`` (per-seed initial draws), ``guidance`` (prompt encoding,
contexts, RoPE coordinates, the DiT call, the guided x0, the Euler step), ``decode`` (VAE, vocoder,
clips), ``generator`` (:class:`LTX2Generator`, the one public class: settings, caches, the protocol's
step loop over row chunks), ``doctor`` (``avits doctor``'s report on a weights folder). The public
names are re-exported here.

The components (transformer, video VAE, audio VAE, vocoder, Gemma-3 text encoder, tokenizer, text
connectors, scheduler) are loaded from a local diffusers folder or from the Hugging Face cache, never
from the network (``local_files_only=True``). The denoising loop is our own, so that search can set
the video *and* the audio latents at the start and read or replace both at any step (the pipeline's
``callback_on_step_end`` cannot reach the audio latents). The loop reproduces ``LTX2Pipeline.__call__``
(diffusers 0.42.1, text-to-video+audio path) operation for operation; tests/test_ltx2.py checks it
against the pipeline on tiny random components (LTX-2.0 and 2.3 layouts, every guidance term).

Latent space (what ``Latents.video`` / ``Latents.audio`` hold)
    The *packed, normalised* latents the pipeline's loop runs on:
    video ``[B, F*H*W, C]`` (token order f, h, w; F = (num_frames-1)//8 + 1, H = height//32,
    W = width//32, C = 128 for the real model), audio ``[B, L, Ca*M]`` (channel-major;
    L = round(num_frames / frame_rate * 25), Ca = 8, M = mel_bins/4 = 16). Always float32, on the
    execution device. Mapping to ``LTX2Pipeline.__call__`` arguments: ``latents=video`` (a 3-D tensor
    is used as is) and ``audio_latents=audio * std + mean`` with the audio VAE's ``latents_std`` /
    ``latents_mean`` (the pipeline *normalises* every audio latent it is given, 3-D or 4-D). Easier:
    ``generator=[torch.Generator().manual_seed(s) for s in seeds]`` gives the pipeline the same noise
    as ``init_noise(seeds)``.

init_noise(seeds)
    For each seed its own CPU ``torch.Generator(seed)`` draws the video noise ``[1, C, F, H, W]`` and
    then the audio noise ``[1, Ca, L, M]`` (float32), exactly what ``randn_tensor`` does with a list
    of generators; both are packed. A row depends only on its seed, never on the batch.

timesteps
    The scheduler's sigmas (length S+1, 1 -> 0) computed as the pipeline does:
    ``set_timesteps(sigmas=linspace(1, 1/S, S), mu=calculate_shift(video_tokens, ...))`` on a private
    copy of the scheduler (exponential time shift, stretch to ``shift_terminal``, then 0 appended).
    The audio branch uses the same sigmas. S >= 2 (S = 1 makes the terminal stretch divide by 0).

One step (index i, sigma = sigmas[i], t = scheduler.timesteps[i]) -- all in float32 except the DiT
call, whose inputs are cast to the text encoder's dtype as in the pipeline:
    1. main pass: with CFG the batch is ``[x, x]`` against ``[negative, positive]`` contexts
       (``chunk(2)`` gives uncond, cond), else ``x`` against the positive context;
    2. x0 = x - v * sigma for every prediction; CFG delta ``(gs-1)(x0_c - x0_u)`` (audio: ags);
    3. STG pass (batch of the candidates, positive context, ``spatio_temporal_guidance_blocks``):
       delta ``stg (x0_c - x0_stg)``; modality-isolation pass (``isolate_modalities=True``): delta
       ``(ms-1)(x0_c - x0_iso)``;
    4. g = x0_c + cfg + stg + mod (left to right); rescale per modality when phi > 0:
       ``g = phi * g * std(x0_c)/std(g) + (1-phi) g`` (unbiased std over all non-batch dims, per row);
    5. v = (x - g) / sigma; x' = x + (sigma_{i+1} - sigma_i) v.
    ``predict_x0(latents, prompt, i)`` returns g of step 4 (the guided x0) at step index ``num_steps``.

Guidance switches follow the pipeline exactly, including its quirk that an audio value of ``None`` *or
0* falls back to the video value (``audio_x or x``); a warning is logged when an explicit 0 is
overridden. CFG is on when gs > 1 or ags > 1, STG when stg > 0 or astg > 0, modality isolation when
ms > 1 or ams > 1. To switch everything off set gs = ags = 1, stg = astg = 0, ms = ams = 1,
guidance_rescale = audio_guidance_rescale = 0.

NFE per candidate per step (the count added to ``Latents.nfe``):
    ``(2 if CFG else 1) + (1 if STG runs) + (1 if modality isolation)`` -- 4 with the defaults on
    LTX-2.3, 1 with all guidance off. Decision: the STG pass is *skipped* (and not counted) when it is
    provably a no-op -- the transformer was built with ``perturbed_attn=False`` (LTX-2.0: the blocks
    ignore the perturbation mask) or no index in ``stg_blocks`` names an existing block -- because the
    pipeline would spend a full DiT call to add a zero delta. A log line says so once.

Batching
    ``batch_size`` = most candidates per DiT call (a CFG call then holds 2 x batch_size rows);
    1 runs candidates one by one. Rows are independent, so results equal one-by-one results up to
    float rounding of batched matmuls (~1e-7 on CPU). On CUDA an out-of-memory error halves the
    batch size for this generator (down to 1) and retries the chunk; the peak CUDA memory of the last
    ``denoise`` / ``predict_x0`` / ``decode`` call is in ``last_peak_memory_bytes`` (None on CPU).
    See docs/ltx2.md for measured and estimated peaks.

decode(latents, prompt) -> list[AVClip]
    Video: unpack, denormalise (``x * std / scaling_factor + mean``), VAE decode (timestep-conditioned
    VAEs get ``decode_timestep`` and ``decode_noise_scale`` noise drawn from the row's seed generator
    after its initial draws, as the pipeline's generator list would), ``(x/2 + 0.5).clamp(0, 1)``,
    then uint8 = round(255 x); fps = ``frame_rate``; 8(F-1)+1 frames. Audio: denormalise the packed
    latents, unpack, audio-VAE decode to a mel spectrogram, vocoder to a stereo waveform
    (``[2, N]``), down-mixed to mono as the plain mean (L + R) / 2; sample_rate = the vocoder's
    ``output_sampling_rate`` (24000 for LTX-2.0, 48000 for LTX-2.3's BWE vocoder). No resampling here:
    a verifier that needs another rate resamples explicitly.

Prompt encodings (Gemma hidden states through the connectors, negative and positive together as
the pipeline runs them) are cached per prompt text (LRU, ``prompt_cache_size`` entries).
Loaded pipelines are cached per process keyed by (resolved folder, device, dtype, cpu_offload); the
offload flag is part of the key because it changes where the modules live.
"""

from avits_core.generators.ltx2.doctor import ltx2_doctor
from avits_core.generators.ltx2.generator import LTX2Generator
from avits_core.generators.ltx2.loading import (
    COMPONENTS,
    HOW_TO_GET_WEIGHTS,
    WEIGHTED_COMPONENTS,
    clear_ltx2_cache,
    load_ltx2_pipeline,
    missing_components,
    parse_dtype,
    resolve_model_path,
)
from avits_core.generators.ltx2.packing import pack_audio, pack_video, rescale_guidance, unpack_audio, unpack_video

__all__ = [
    "COMPONENTS", "HOW_TO_GET_WEIGHTS", "LTX2Generator", "WEIGHTED_COMPONENTS", "clear_ltx2_cache", "load_ltx2_pipeline",
    "ltx2_doctor", "missing_components", "pack_audio", "pack_video", "parse_dtype", "rescale_guidance",
    "resolve_model_path", "unpack_audio", "unpack_video",
]
