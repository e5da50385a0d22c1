"""A tiny, randomly initialised VideoReward for CPU tests (no download).

``build_tiny_videoreward(root)`` writes, from one seeded reference network:

- ``root/base``: a Qwen2-VL "base model" folder: ``config.json`` (text: hidden 64, 2 layers, 4/2
  heads, mrope_section [2, 3, 3]; vision: depth 2, embed 32, merger out 64), a byte-level BPE
  tokenizer trained here on a small corpus with Qwen2-VL's 14 special tokens appended in Qwen's order
  (``tokenizer.json``), a ``chat_template.json`` (our own Jinja that renders Qwen2-VL's chat format),
  and ``model.safetensors`` in the transformers-4 key layout (``model.*``, ``visual.*``, ``lm_head``)
  with a padded vocabulary and a *different* vision tower (the reward checkpoint's fine-tuned tower
  must win over it);
- ``root/full``: a reward checkpoint in layout (a): ``model_config.json`` + ``checkpoint-7/model.pth``
  (the PEFT-wrapped state dict: ``base_model.model.`` prefix, ``X.base_layer.weight`` +
  ``X.lora_A.default.weight`` / ``X.lora_B.default.weight`` on every q/k/v/o/gate/up/down of the
  language model); a lower ``checkpoint-3`` holds garbage (the loader must pick the highest step);
- ``root/adapter``: the same weights in layout (b): ``adapter_model.safetensors`` (LoRA only, no
  adapter name in the keys) + ``non_lora_state_dict.pth`` (vision tower and ``rm_head``);
- ``root/template.txt``: a short template of our own with the ``{text_prompt}`` slot and the three
  reward tokens (its sha256 is returned: pass it as ``template_sha256``).

LoRA is r 64, alpha 128 (scale 2) as in the released checkpoint, with non-zero A and B. The
returned :class:`TinyVideoReward` holds the expected folded state dict (transformers-5 names) and
the config, so tests can build an oracle network independently of the loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
REWARD_TOKENS = ["<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>"]
CORPUS = [
    "a small red ball bounces twice with a high click over rain",
    "a dog barks in a garden while a car passes by on the street",
    "rate the visual quality, the motion quality and the text alignment of the video",
    "system user assistant you are a helpful assistant",
    "the camera follows a girl who plays the piano in a quiet room",
    "thunder rolls over the sea and waves crash on the rocks",
]
TEMPLATE = ("\nScore this clip from 0 to 10 on three axes.  \nLooks: <|VQ_reward|>\nEND\nMoves: <|MQ_reward|>\nEND\n"
            "Prompt - {text_prompt}\nMatches: <|TA_reward|>\nEND\n")
NORM = {"VQ": (0.5, 2.0), "MQ": (-0.25, 0.5), "TA": (1.0, 4.0)}
CHAT_JINJA = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class TinyVideoReward:
    root: Path
    base: Path
    full: Path
    adapter: Path
    template: Path
    template_sha256: str
    expected: dict[str, Any] = field(repr=False)  # folded weights, transformers-5 names, no lm_head
    config: Any = field(repr=False)
    tokenizer_len: int = 0

    def params(self, layout: str = "full", **over: Any) -> dict[str, Any]:
        """Verifier params for this tiny model (float32, CPU)."""
        p = dict(model_path=str(self.full if layout == "full" else self.adapter), base_model_path=str(self.base),
                 template_path=str(self.template), template_sha256=self.template_sha256, dtype="float32",
                 device="cpu", batch_size=4)
        p.update(over)
        return p


def train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(QWEN_SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   model_max_length=32768)
    fast.padding_side = "right"
    return fast


def tiny_config(vocab_size: int, ids: dict[str, int]) -> Any:
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rms_norm_eps=1e-6, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                             "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def old_name(key: str) -> str:
    """transformers-5 name -> VideoAlign / transformers-4 name."""
    if key.startswith("model.visual."):
        return key[len("model."):]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    return key


def build_tiny_videoreward(root: Path, seed: int = 0) -> TinyVideoReward:
    import hashlib

    import torch
    from safetensors.torch import save_file

    from avits_core.verifiers.videoreward.model import _reward_model_class

    root = Path(root)
    base, full, adapter = root / "base", root / "full", root / "adapter"
    for d in (base, full / "checkpoint-7", full / "checkpoint-3", adapter / "checkpoint-7"):
        d.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save_pretrained(str(base))
    (base / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_JINJA}))
    n_tok = len(tok) + len(REWARD_TOKENS)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    padded_vocab = n_tok + 13  # the base embedding is padded, as Qwen's 151936 rows vs 151660 tokens
    tiny_config(padded_vocab, ids).save_pretrained(str(base))
    cfg = tiny_config(n_tok, ids)
    cfg._attn_implementation = "sdpa"

    g = torch.Generator().manual_seed(seed)
    net = _reward_model_class()(cfg)
    with torch.no_grad():
        for p in net.parameters():  # larger than the default init so that outputs differ visibly
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for name, p in net.named_parameters():
            if name.endswith("norm.weight") or ".norm1." in name or ".norm2." in name or name.endswith("ln_q.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    plain = {k: v.detach().clone() for k, v in net.state_dict().items()}

    r, alpha = 64, 128
    peft: dict[str, Any] = {}
    adapter_sd: dict[str, Any] = {}
    expected = dict(plain)
    lm_head = torch.randn(n_tok, 64, generator=g) * 0.05
    for key, value in plain.items():
        mod = key[: -len(".weight")] if key.endswith(".weight") else None
        is_target = mod is not None and mod.startswith("model.language_model.layers.") and mod.endswith(LORA_TARGETS)
        if is_target:
            a = torch.randn(r, value.shape[1], generator=g) * 0.05
            b = torch.randn(value.shape[0], r, generator=g) * 0.05
            old = "base_model.model." + old_name(mod)
            peft[f"{old}.base_layer.weight"] = value
            peft[f"{old}.lora_A.default.weight"] = a
            peft[f"{old}.lora_B.default.weight"] = b
            adapter_sd[f"{old}.lora_A.weight"] = a
            adapter_sd[f"{old}.lora_B.weight"] = b
            expected[key] = value + (alpha / r) * (b @ a)
        elif key.endswith(".bias") and key[: -len(".bias")].endswith(LORA_TARGETS):
            peft["base_model.model." + old_name(key[: -len(".bias")]) + ".base_layer.bias"] = value
        else:
            peft["base_model.model." + old_name(key)] = value
    peft["base_model.model.lm_head.weight"] = lm_head
    torch.save(peft, full / "checkpoint-7" / "model.pth")
    (full / "checkpoint-3" / "model.pth").write_bytes(b"not a checkpoint")

    # layout (b): base weights (4.x names, padded vocab, an *untuned* vision tower) + adapter + non-LoRA
    base_sd = {old_name(k): v.clone() for k, v in plain.items() if k != "rm_head.weight"}
    emb = base_sd["model.embed_tokens.weight"]
    base_sd["model.embed_tokens.weight"] = torch.cat([emb, torch.randn(padded_vocab - n_tok, 64, generator=g)])
    for k in list(base_sd):
        if k.startswith("visual."):
            base_sd[k] = torch.randn(base_sd[k].shape, generator=g)
    base_sd["lm_head.weight"] = torch.cat([lm_head, torch.zeros(padded_vocab - n_tok, 64)])
    save_file({k: v.contiguous() for k, v in base_sd.items()}, str(base / "model.safetensors"))
    non_lora = {"base_model.model." + old_name(k): v for k, v in plain.items()
                if k.startswith("model.visual.") or k == "rm_head.weight"}
    torch.save(non_lora, adapter / "checkpoint-7" / "non_lora_state_dict.pth")
    save_file({k: v.contiguous() for k, v in adapter_sd.items()}, str(adapter / "checkpoint-7" / "adapter_model.safetensors"))

    model_config = {
        "data_config": {"meta_data": None, "data_dir": None, "fps": 2.0, "num_frames": None,
                        "max_frame_pixels": 200704, "eval_dim": ["VQ", "MQ", "TA"],
                        "prompt_template_type": "detailed_special", "sample_type": "uniform"},
        "model_config": {"model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "output_dim": 1,
                         "use_special_tokens": True, "reward_token": "special"},
        "peft_lora_config": {"lora_enable": True, "vision_lora": False, "lora_r": r, "lora_alpha": alpha,
                             "lora_dropout": 0.05, "use_rslora": False},
        "inference_config": {f"{h}_{s}": v for h, (m, sd) in NORM.items() for s, v in (("mean", m), ("std", sd))},
    }
    for d in (full, adapter):
        (d / "model_config.json").write_text(json.dumps(model_config, indent=2))
    template = root / "template.txt"
    template.write_bytes(TEMPLATE.encode("utf-8"))
    expected.pop("lm_head.weight", None)
    return TinyVideoReward(root=root, base=base, full=full, adapter=adapter, template=template,
                           template_sha256=hashlib.sha256(TEMPLATE.encode("utf-8")).hexdigest(),
                           expected=expected, config=cfg, tokenizer_len=n_tok)
