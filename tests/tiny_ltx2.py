"""Tiny, randomly initialised LTX-2 components for CPU tests (no download).

``build_tiny_ltx2(version)`` returns the eight components ``LTX2Pipeline`` takes, built from configs
with the real model's *structure* (module classes, couplings, rope type, 2.0 vs 2.3 switches) but
widths of a few channels, so a 64x96, 9-frame, 3-step generation runs in well under a second on a
laptop CPU. ``save_tiny_ltx2(path, version)`` writes them as a local diffusers folder
(``model_index.json`` + one subfolder per component) through ``LTX2Pipeline.save_pretrained``, so a
test loads them through ``model_path`` exactly as a user loads the real weights.

Couplings that must hold (cf. diffusers' ``scripts/convert_ltx2_to_diffusers.py``; real values in []):
- transformer ``in_channels`` = video VAE ``latent_channels`` (8) [128];
  ``audio_in_channels`` = audio VAE ``latent_channels * mel_bins / 4`` (2*16/4 = 8) [8*64/4 = 128];
- ``cross_attention_dim`` = DiT inner dim; ``audio_cross_attention_dim`` = audio inner dim (the
  cross-modal RoPE is built with that width);
- ``caption_channels`` = Gemma hidden size (16) [3840]; connectors ``text_proj_in_factor`` = Gemma
  layers + 1;
- audio VAE ``base_channels`` = ``latent_channels * mel_bins / 4`` because ``latents_mean/std`` (length
  ``base_channels``) are applied to *packed* audio latents;
- vocoder ``in_channels`` = 2 * mel_bins (two audio channels of the mel decoder, stacked);
- ``max_sequence_length`` must be a multiple of the connectors' learnable registers (8 here).

The VAE normalisation buffers (``latents_mean``/``latents_std``) and the video ``scaling_factor`` are
set to non-trivial values so that a wrong (de)normalisation shows up in the parity tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

TINY_MAX_SEQUENCE_LENGTH = 16  # multiple of the 8 learnable registers
_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"


def _tokenizer() -> Any:
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "\u2581": 5}
    for ch in _LETTERS:
        vocab[ch] = len(vocab)
    tok = GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True)
    tok.model_max_length = 1024
    return tok


def _text_encoder(vocab_size: int) -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text_cfg = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=64,
    )
    vision_cfg = SiglipVisionConfig(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    cfg = Gemma3Config(
        text_config=text_cfg,
        vision_config=vision_cfg,
        mm_tokens_per_image=4,
        boi_token_index=vocab_size,
        eoi_token_index=vocab_size + 1,
        image_token_index=vocab_size + 2,
    )
    return Gemma3ForConditionalGeneration(cfg).eval()


def build_tiny_ltx2(version: str = "2.0", seed: int = 0, timestep_conditioning: bool = False) -> dict[str, Any]:
    """The eight ``LTX2Pipeline`` components, tiny and randomly initialised (deterministic in ``seed``).

    ``version``: ``"2.0"`` (plain attention, one text projection, ``LTX2Vocoder`` at 24 kHz, STG a
    no-op because ``perturbed_attn=False``) or ``"2.3"`` (gated attention, cross-attention modulation,
    per-modality text projections, ``perturbed_attn=True`` so STG acts, 4-block video decoder and
    ``LTX2VocoderWithBWE`` at 48 kHz).
    """
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

    if version not in ("2.0", "2.3"):
        raise ValueError(f"version must be '2.0' or '2.3', got {version!r}")
    v23 = version == "2.3"
    torch.manual_seed(seed)

    tokenizer = _tokenizer()
    text_encoder = _text_encoder(len(tokenizer))
    n_text_layers = text_encoder.config.text_config.num_hidden_layers

    heads, head_dim = 2, 8  # DiT inner dim 16
    a_heads, a_head_dim = 2, 4  # audio inner dim 8
    inner, a_inner = heads * head_dim, a_heads * a_head_dim
    latent_c, a_latent_c, mel_bins = 8, 2, 16
    a_packed = a_latent_c * mel_bins // 4

    if v23:
        connectors = LTX2TextConnectors(
            caption_channels=16,
            text_proj_in_factor=n_text_layers + 1,
            video_connector_num_attention_heads=heads,
            video_connector_attention_head_dim=head_dim,
            video_connector_num_layers=1,
            video_connector_num_learnable_registers=8,
            video_gated_attn=True,
            audio_connector_num_attention_heads=a_heads,
            audio_connector_attention_head_dim=a_head_dim,
            audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=8,
            audio_gated_attn=True,
            rope_type="split",
            per_modality_projections=True,
            video_hidden_dim=inner,
            audio_hidden_dim=a_inner,
            proj_bias=True,
        )
    else:
        connectors = LTX2TextConnectors(
            caption_channels=16,
            text_proj_in_factor=n_text_layers + 1,
            video_connector_num_attention_heads=2,
            video_connector_attention_head_dim=8,
            video_connector_num_layers=1,
            video_connector_num_learnable_registers=8,
            audio_connector_num_attention_heads=2,
            audio_connector_attention_head_dim=8,
            audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=8,
            rope_type="split",
        )

    tkw: dict[str, Any] = {}
    if v23:
        tkw = dict(
            gated_attn=True,
            cross_attn_mod=True,
            audio_gated_attn=True,
            audio_cross_attn_mod=True,
            use_prompt_embeddings=False,
            perturbed_attn=True,
        )
    transformer = LTX2VideoTransformer3DModel(
        in_channels=latent_c,
        out_channels=latent_c,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        cross_attention_dim=inner,
        vae_scale_factors=(8, 32, 32),
        audio_in_channels=a_packed,
        audio_out_channels=a_packed,
        audio_num_attention_heads=a_heads,
        audio_attention_head_dim=a_head_dim,
        audio_cross_attention_dim=a_inner,
        num_layers=2,
        caption_channels=16,
        rope_type="split",
        **tkw,
    ).eval()

    if v23:
        vae = AutoencoderKLLTX2Video(
            latent_channels=latent_c,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_block_out_channels=(8, 16, 16, 32),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            decoder_spatio_temporal_scaling=(True, True, True, True),
            decoder_inject_noise=(False,) * 5,
            upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
            upsample_residual=(False, False, False, False),
            upsample_factor=(2, 2, 1, 2),
            spatial_compression_ratio=32,
            temporal_compression_ratio=8,
            decoder_spatial_padding_mode="zeros",
            timestep_conditioning=timestep_conditioning,
            scaling_factor=0.8,
        ).eval()
    else:
        vae = AutoencoderKLLTX2Video(
            latent_channels=latent_c,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_block_out_channels=(8, 16, 32),
            decoder_layers_per_block=(1, 1, 1, 1),
            spatial_compression_ratio=32,
            temporal_compression_ratio=8,
            decoder_spatial_padding_mode="reflect",
            timestep_conditioning=timestep_conditioning,
            scaling_factor=0.8,
        ).eval()
    with torch.no_grad():
        vae.latents_mean.copy_(torch.randn(latent_c) * 0.5)
        vae.latents_std.copy_(torch.rand(latent_c) + 0.5)

    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=a_packed,
        latent_channels=a_latent_c,
        mel_bins=mel_bins,
        ch_mult=(1, 2, 4),
        num_res_blocks=0,
    ).eval()
    with torch.no_grad():
        audio_vae.latents_mean.copy_(torch.randn(a_packed) * 0.5)
        audio_vae.latents_std.copy_(torch.rand(a_packed) + 0.5)

    if v23:
        vocoder = LTX2VocoderWithBWE(
            in_channels=2 * mel_bins,
            hidden_channels=8,
            upsample_kernel_sizes=[20, 32],
            upsample_factors=[10, 16],  # x160: 16 kHz from 100 mel frames/s
            resnet_kernel_sizes=[3],
            resnet_dilations=[[1]],
            bwe_in_channels=2 * 16,  # two channels x num_mel_channels
            bwe_hidden_channels=8,
            bwe_upsample_kernel_sizes=[24, 40],
            bwe_upsample_factors=[12, 20],  # x240: 48 kHz from 200 BWE mel frames/s (hop 80)
            bwe_resnet_kernel_sizes=[3],
            bwe_resnet_dilations=[[1]],
            filter_length=64,
            hop_length=80,
            window_length=64,
            num_mel_channels=16,
            input_sampling_rate=16000,
            output_sampling_rate=48000,
        ).eval()
        # The STFT/mel buffers are zeros until a checkpoint is loaded: fill them so the BWE path is live.
        with torch.no_grad():
            stft = vocoder.mel_stft.stft_fn
            stft.forward_basis.copy_(torch.randn_like(stft.forward_basis) * 0.1)
            stft.inverse_basis.copy_(torch.randn_like(stft.inverse_basis) * 0.1)
            vocoder.mel_stft.mel_basis.copy_(torch.rand_like(vocoder.mel_stft.mel_basis))
    else:
        vocoder = LTX2Vocoder(
            in_channels=2 * mel_bins,
            hidden_channels=8,
            upsample_kernel_sizes=[24, 40],
            upsample_factors=[12, 20],
            resnet_kernel_sizes=[3],
            resnet_dilations=[[1]],
            output_sampling_rate=24000,
        ).eval()

    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        time_shift_type="exponential",
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
        shift=1.0,
    )
    return dict(
        scheduler=scheduler,
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


def tiny_pipeline(version: str = "2.0", seed: int = 0, **kw: Any) -> Any:
    """An ``LTX2Pipeline`` over ``build_tiny_ltx2(version, seed)`` (CPU, float32)."""
    from diffusers import LTX2Pipeline

    pipe = LTX2Pipeline(**build_tiny_ltx2(version, seed, **kw))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_ltx2(path: str | Path, version: str = "2.0", seed: int = 0, **kw: Any) -> Path:
    """Write the tiny components as a local diffusers folder (``model_index.json`` + subfolders)."""
    path = Path(path)
    tiny_pipeline(version, seed, **kw).save_pretrained(str(path), safe_serialization=True)
    return path


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the tiny models on one intra-op thread (they gain nothing from more, and more spin-wait on a busy
    CPU); the previous thread count is restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
