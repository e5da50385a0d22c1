"""A tiny, randomly initialised CLIP-FlanT5 checkpoint folder in the real layout (no download).

``build_tiny_vqascore(path)`` writes what ``zhiqiulin/clip-flant5-xxl`` + ``openai/clip-vit-large-patch14-336``
+ ``google/flan-t5-xxl`` provide, at toy sizes:

    path/config.json             T5 config, model_type clip_t5, mm_* fields (mm_vision_tower = "clip-vision")
    path/model.safetensors       T5 keys (shared, encoder, decoder, lm_head), the alias embed_tokens.weight,
                                 mm_projector.{0,2}.*, and (vision_in_checkpoint) vision_tower.vision_tower.vision_model.*
                                 (shards > 1: model-0000i-of-0000n.safetensors + model.safetensors.index.json;
                                 fmt="bin": pytorch_model.bin / pytorch_model.bin.index.json)
    path/tokenizer.json, tokenizer_config.json   a T5 (Unigram) tokenizer: <pad>=0, </s>=1, <unk>=2
    path/clip-vision/            a full tiny CLIPModel save (config.json with vision_config, model.safetensors
                                 with vision_model.* and text_model.* keys) + preprocessor_config.json
                                 (short side 28, crop 28, CLIP mean/std, bicubic)

The T5 has d_model 32, 2+2 layers; the CLIP ViT 28 px, patch 14 (4 patches), 3 layers; the projector
16 -> 32 -> 32. Another engineer's end-to-end test may point a config at the folder (``video_policy`` is
required in the verifier params).
"""

from __future__ import annotations

import json
from pathlib import Path

EXTRA_WORDS = (
    "a an the of and with over in on small big red blue green yellow ball cube bounces bouncing once "
    "twice three times high low click thud rain wind dog cat barks meows music piano sound car engine"
).split()


def tiny_t5_tokenizer():
    """A T5Tokenizer (tokenizers Unigram) whose vocabulary covers the chat template word by word,
    with single characters as fallback."""
    from transformers import T5Tokenizer

    from avits_core.verifiers.vqascore import QUESTION_TEMPLATE, SYSTEM_MSG

    words: list[str] = []
    text = SYSTEM_MSG + " USER: " + QUESTION_TEMPLATE + " ASSISTANT: Yes No yes no " + " ".join(EXTRA_WORDS)
    for w in text.replace("{}", " ").split():
        for piece in (w, w.strip('".?,')):
            if piece and "▁" + piece not in words:
                words.append("▁" + piece)
    chars = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!:'\"-"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(w, -3.0) for w in words] + [(c, -6.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_vqascore(path: Path, *, vision_in_checkpoint: bool = True, shards: int = 1, fmt: str = "safetensors",
                        seed: int = 0) -> Path:
    """Write a tiny CLIP-FlanT5 setup to ``path`` (see the module docstring); returns ``path``."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel, T5Config, T5ForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    t5cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                     num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                     decoder_start_token_id=0)
    t5 = T5ForConditionalGeneration(t5cfg).eval()
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3),
        vision_config=dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                           image_size=28, patch_size=14),
        projection_dim=8)).eval()
    projector = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 32))
    with torch.no_grad():  # larger projector weights so that the picture visibly moves the answer
        for m in (projector[0], projector[2]):
            m.weight.mul_(4.0)
        t5.lm_head.weight.mul_(0.02)  # moderate logits: answer probabilities near 1/vocab, not 1e-8

    sd: dict[str, torch.Tensor] = {}
    for k, v in t5.state_dict().items():
        if k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue
        sd[k] = v.detach().clone().contiguous()
    sd["embed_tokens.weight"] = sd["shared.weight"].clone()
    for k, v in projector.state_dict().items():
        sd[f"mm_projector.{k}"] = v.detach().clone().contiguous()
    if vision_in_checkpoint:
        for k, v in clip.state_dict().items():
            if k.startswith("vision_model."):
                sd[f"vision_tower.vision_tower.{k}"] = v.detach().clone().contiguous()

    cfg = t5cfg.to_dict()
    cfg.update(model_type="clip_t5", architectures=["CLIPT5ForConditionalGeneration"],
               mm_vision_tower="clip-vision", mm_hidden_size=16, mm_projector_type="mlp2x_gelu",
               mm_vision_select_layer=-2, mm_vision_select_feature="patch", use_mm_proj=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))

    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    keys = sorted(sd)
    groups = [keys[i::shards] for i in range(shards)]

    def write(obj: dict, name: str) -> None:
        if fmt == "safetensors":
            save_file(obj, str(path / name), metadata={"format": "pt"})
        else:
            torch.save(obj, str(path / name))

    if shards == 1:
        write(sd, f"{stem}.{ext}")
    else:
        weight_map = {}
        for i, g in enumerate(groups):
            name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
            write({k: sd[k] for k in g}, name)
            weight_map.update({k: name for k in g})
        (path / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    tok.save_pretrained(path)
    vdir = path / "clip-vision"
    clip.save_pretrained(vdir)
    (vdir / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 28, "width": 28}, "do_center_crop": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 28}, "image_processor_type": "CLIPImageProcessor"}, indent=2))
    return path
