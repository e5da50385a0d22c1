"""Tiny, randomly initialised CLAP and CLIP model folders for tests (no download), and a tiny I3D
stand-in with a seeded tiny AudioCLIP audio tower (``build_tiny_i3d_and_audioclip``).

Each builder writes a complete ``save_pretrained`` folder (config + safetensors weights + tokenizer
+ preprocessor config) that the verifiers load through ``model_path`` exactly as they would load
real weights. The tokenizer is an in-memory WordLevel vocabulary wrapped in PreTrainedTokenizerFast
(with BOS/EOS added around every text, as CLIP and RoBERTa tokenizers do).
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "a an the of and with over in on small big red blue green yellow ball cube bounces bouncing once "
    "twice three times high low click thud rain wind dog cat barks meows music piano sound car engine"
).split()


def tiny_tokenizer(model_max_length: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
        model_max_length=model_max_length,
    )


def build_tiny_clap(path: Path, *, sampling_rate: int = 16000, fusion: bool = False, seed: int = 0) -> Path:
    """A 16-d CLAP (text: 2-layer RoBERTa; audio: 2-stage HTSAT) + ClapFeatureExtractor (1 s max)."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(seed)
    tc = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              max_position_embeddings=34, projection_dim=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    mels = 64 if fusion else 32  # the extractor's fusion path hard-codes 64 mel bins
    ac = dict(spec_size=128, num_mel_bins=mels, patch_size=4, patch_stride=(4, 4), window_size=4,
              patch_embeds_hidden_size=16, hidden_size=32, depths=[1, 1], num_attention_heads=[2, 4],
              projection_dim=16, enable_fusion=fusion)
    model = ClapModel(ClapConfig(text_config=tc, audio_config=ac, projection_dim=16)).eval()
    fe = ClapFeatureExtractor(feature_size=mels, sampling_rate=sampling_rate, hop_length=sampling_rate // 100,
                              max_length_s=1, fft_window_size=1024 * max(1, sampling_rate // 16000),
                              frequency_max=min(14000, sampling_rate // 2),
                              truncation="fusion" if fusion else "rand_trunc", padding="repeatpad")
    path = Path(path)
    model.save_pretrained(path)
    fe.save_pretrained(path)
    tiny_tokenizer(32).save_pretrained(path)
    return path


def build_tiny_clip(path: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A 16-d CLIP (2-layer text and ViT towers, 32x32 images, patch 8) + CLIPImageProcessorPil."""
    import torch
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=16, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    proc = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size})
    path = Path(path)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    tiny_tokenizer(16).save_pretrained(path)
    return path


def build_tiny_i3d_and_audioclip(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A scripted stand-in for the I3D extractor and a seeded tiny AudioCLIP audio tower: (i3d, ac, arch)."""
    import torch

    from avits_core.metrics.audioclip import build_audio_tower

    class TinyI3D(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = True) -> torch.Tensor:
            return x.mean(dim=(3, 4)).flatten(1)

    i3d = tmp_path / "i3d.pt"
    torch.jit.script(TinyI3D()).save(str(i3d))
    arch = dict(embed_dim=8, layers=[1, 1, 1, 1], groups=2, width_per_group=4, n_fft=64, hop_length=16, win_length=48)
    torch.manual_seed(0)
    ac = tmp_path / "ac.pt"
    torch.save({f"audio.{k}": v for k, v in build_audio_tower(**arch).state_dict().items()}, ac)
    return i3d, ac, arch
