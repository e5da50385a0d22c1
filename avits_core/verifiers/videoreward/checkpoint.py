"""VideoReward's checkpoint on disk: the folders, ``model_config.json``, both weight layouts, the LoRA fold.

Folders the user supplies (local paths, or hub ids found in the local Hugging Face cache only)
    ``base_model_path``  Qwen2-VL-2B-Instruct: ``config.json`` and the tokenizer (``tokenizer.json``,
                         ``tokenizer_config.json``); its weights (``model.safetensors`` or the
                         ``model.safetensors.index.json`` shards) only for layout (b).
    ``model_path``       the reward checkpoint (hub id ``KwaiVGI/VideoReward``): ``model_config.json`` and
                         ``checkpoint-<step>/``; the highest step is used. Layout (a): ``model.pth``, the
                         full ``state_dict()`` of the PEFT-wrapped model. Layout (b):
                         ``adapter_model.safetensors`` (LoRA only) + ``non_lora_state_dict.pth`` (the
                         trained non-LoRA tensors: vision tower, merger, ``rm_head``...), applied on top of
                         the base weights.

``model_config.json`` is checked before any weight is read (:func:`read_model_config`): the fields
the port relies on must hold the released values (data_config fps 2.0, max_frame_pixels 200,704,
eval_dim [VQ, MQ, TA], prompt_template_type detailed_special, uniform sampling; model_config
output_dim 1, special reward tokens; peft_lora_config LoRA on, not on the vision tower, r 64,
alpha 128, no rsLoRA) and ``inference_config`` must give a finite mean and a positive std per head.
A difference is a :class:`CheckpointError` naming the field and both values.

Key handling (:func:`assemble_state_dict`), without peft:
    1. strip the PEFT wrapper prefix ``base_model.model.``;
    2. rename to transformers 5.x's Qwen2-VL layout: ``visual.*`` -> ``model.visual.*``,
       ``model.*`` -> ``model.language_model.*`` (keys already in that layout are kept);
       ``lm_head.*`` and ``rm_head.*`` unchanged;
    3. fold every adapter: ``W <- W + (alpha / r) · (lora_B @ lora_A)`` computed in float32 and cast
       back to W's dtype, where W is ``X.base_layer.weight`` (layout a) or ``X.weight`` (layout b's
       base weights); ``X.base_layer.*`` becomes ``X.*`` and the LoRA tensors are dropped. Adapter
       keys may carry the adapter name (``lora_A.default.weight``, in ``model.pth``) or not
       (``lora_A.weight``, in ``adapter_model.safetensors``). A ``base_layer`` without an adapter,
       an adapter without its weight, or any other LoRA tensor (DoRA magnitudes, embedding LoRA)
       is an error.
The reward model keeps no ``lm_head`` (it is never used), so ``lm_head.weight`` is dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avits_core.errors import AvitsError, MissingWeightsError

log = logging.getLogger(__name__)

REWARD_REPO = "KwaiVGI/VideoReward"
BASE_REPO = "Qwen/Qwen2-VL-2B-Instruct"
PEFT_PREFIX = "base_model.model."
FULL_FILE = "model.pth"
ADAPTER_FILE = "adapter_model.safetensors"
NON_LORA_FILE = "non_lora_state_dict.pth"
HEADS = ("VQ", "MQ", "TA")

EXPECTED_FIELDS: dict[str, dict[str, Any]] = {
    "data_config": {
        "fps": 2.0,
        "max_frame_pixels": 200704,
        "eval_dim": ["VQ", "MQ", "TA"],
        "prompt_template_type": "detailed_special",
        "sample_type": "uniform",
    },
    "model_config": {"output_dim": 1, "use_special_tokens": True, "reward_token": "special"},
    "peft_lora_config": {
        "lora_enable": True,
        "vision_lora": False,
        "lora_r": 64,
        "lora_alpha": 128,
        "use_rslora": False,
    },
}


class CheckpointError(AvitsError, ValueError):
    """The reward checkpoint is not the layout or configuration this port reads."""


@dataclass(frozen=True)
class RewardConfig:
    """What the verifier needs from ``model_config.json``."""

    fps: float
    max_pixels: int
    lora_r: int
    lora_alpha: float
    norm: dict[str, tuple[float, float]] = field(default_factory=dict)  # head -> (mean, std)
    base_model: str = BASE_REPO

    @property
    def lora_scale(self) -> float:
        return float(self.lora_alpha) / float(self.lora_r)


def read_model_config(path: str | os.PathLike[str]) -> RewardConfig:
    """Parse and check ``model_config.json`` (see the module docstring)."""
    p = Path(path)
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingWeightsError(f"VideoReward: {str(p)!r} does not exist; {reward_hint()}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"VideoReward: {str(p)!r} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"VideoReward: {str(p)!r} must hold a JSON object")
    for section, want in EXPECTED_FIELDS.items():
        got = cfg.get(section)
        if not isinstance(got, dict):
            raise CheckpointError(f"VideoReward: {str(p)!r} lacks the section {section!r}")
        for key, value in want.items():
            if key not in got:
                raise CheckpointError(f"VideoReward: {str(p)!r}: {section}.{key} is missing (expected {value!r})")
            if got[key] != value:
                raise CheckpointError(f"VideoReward: {str(p)!r}: {section}.{key} is {got[key]!r}, this port reads "
                                      f"only the released VideoReward setting {value!r}")
    nf = cfg["data_config"].get("num_frames")
    if nf is not None:
        raise CheckpointError(f"VideoReward: {str(p)!r}: data_config.num_frames is {nf!r}; the released "
                              f"checkpoint samples by fps (num_frames null)")
    inf = cfg.get("inference_config")
    if not isinstance(inf, dict):
        raise CheckpointError(f"VideoReward: {str(p)!r} has no inference_config (the per-head mean/std the "
                              f"scores are normalised with)")
    norm: dict[str, tuple[float, float]] = {}
    for h in HEADS:
        try:
            mean, std = float(inf[f"{h}_mean"]), float(inf[f"{h}_std"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"VideoReward: {str(p)!r}: inference_config needs numbers {h}_mean and {h}_std, "
                                  f"got {inf.get(f'{h}_mean')!r} / {inf.get(f'{h}_std')!r}") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise CheckpointError(f"VideoReward: {str(p)!r}: inference_config {h}: mean {mean}, std {std} "
                                  f"(need a finite mean and std > 0)")
        norm[h] = (mean, std)
    lora = cfg["peft_lora_config"]
    base = str(cfg["model_config"].get("model_name_or_path") or BASE_REPO)
    return RewardConfig(fps=float(cfg["data_config"]["fps"]), max_pixels=int(cfg["data_config"]["max_frame_pixels"]),
                        lora_r=int(lora["lora_r"]), lora_alpha=float(lora["lora_alpha"]), norm=norm,
                        base_model=base)


def reward_hint(target: str = "./models/VideoReward") -> str:
    return (f"get the reward checkpoint with `hf download {REWARD_REPO}` (fills the Hugging Face cache; "
            f"model_path={REWARD_REPO!r} then finds it) or `hf download {REWARD_REPO} --local-dir {target}` "
            f"and model_path={target!r} (older huggingface_hub: `huggingface-cli download ...`)")


def base_hint(target: str = "./models/Qwen2-VL-2B-Instruct") -> str:
    return (f"get the base model with `hf download {BASE_REPO}` (Hugging Face cache; base_model_path="
            f"{BASE_REPO!r}) or `hf download {BASE_REPO} --local-dir {target}` and base_model_path={target!r}")


# --------------------------------------------------------------------------- checkpoint folders
def checkpoint_steps(folder: Path) -> list[tuple[int, Path]]:
    """``checkpoint-<step>`` subfolders, highest step first."""
    out = []
    if folder.is_dir():
        for d in folder.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", d.name)
            if m and d.is_dir():
                out.append((int(m.group(1)), d))
    return sorted(out, reverse=True)


def checkpoint_layout(ckpt: Path) -> tuple[str, list[Path]]:
    """("full", [model.pth]) or ("adapter", [adapter, non_lora]); MissingWeightsError when neither is complete."""
    full = ckpt / FULL_FILE
    if full.is_file():
        return "full", [full]
    adapter, non_lora = ckpt / ADAPTER_FILE, ckpt / NON_LORA_FILE
    if adapter.is_file() and non_lora.is_file():
        return "adapter", [adapter, non_lora]
    missing = [str(p) for p in (adapter, non_lora) if not p.is_file()]
    raise MissingWeightsError(f"VideoReward: {str(ckpt)!r} holds neither {FULL_FILE} nor the pair {ADAPTER_FILE} + "
                              f"{NON_LORA_FILE} (missing: {', '.join(missing)}); {reward_hint()}")


def base_weight_files(base: Path) -> list[Path]:
    """The base model's safetensors files (single file or the shards named by the index)."""
    single = base / "model.safetensors"
    if single.is_file():
        return [single]
    index = base / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"VideoReward: {str(index)!r} is not a safetensors index ({exc})") from None
        return [base / n for n in names]
    return [single]


# --------------------------------------------------------------------------- keys and LoRA
def strip_peft_prefix(sd: dict[str, Any]) -> dict[str, Any]:
    return {(k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k): v for k, v in sd.items()}


def remap_key(key: str) -> str:
    """transformers 4.x / VideoAlign names -> transformers 5.x Qwen2-VL names (idempotent)."""
    if key.startswith(("model.language_model.", "model.visual.")):
        return key
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    return key


def remap_keys(sd: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in sd.items():
        nk = remap_key(k)
        if nk in out:
            raise CheckpointError(f"VideoReward: two tensors map to {nk!r}")
        out[nk] = v
    return out


_LORA = re.compile(r"^(?P<mod>.+)\.lora_A(?:\.(?P<adapter>[^.]+))?\.weight$")


def fold_lora(sd: dict[str, Any], scale: float) -> tuple[dict[str, Any], int]:
    """Fold every LoRA pair into its base weight (module docstring, step 3). Returns (new dict, pairs folded)."""
    import torch

    sd = dict(sd)
    folded = 0
    for key in sorted(k for k in sd if _LORA.match(k)):
        m = _LORA.match(key)
        assert m is not None
        mod, adapter = m.group("mod"), m.group("adapter")
        kb = f"{mod}.lora_B.{adapter}.weight" if adapter else f"{mod}.lora_B.weight"
        if kb not in sd:
            raise CheckpointError(f"VideoReward: {key} has no matching {kb}")
        base_key = f"{mod}.base_layer.weight" if f"{mod}.base_layer.weight" in sd else f"{mod}.weight"
        if base_key not in sd:
            raise CheckpointError(f"VideoReward: adapter {key} has no base weight ({mod}.base_layer.weight or "
                                  f"{mod}.weight)")
        a, b, w = sd.pop(key), sd.pop(kb), sd.pop(base_key)
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0] or tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise CheckpointError(f"VideoReward: LoRA shapes of {mod} do not fit: A {tuple(a.shape)}, "
                                  f"B {tuple(b.shape)}, W {tuple(w.shape)}")
        sd[f"{mod}.weight"] = (w.float() + float(scale) * (b.float() @ a.float())).to(w.dtype)
        if f"{mod}.base_layer.bias" in sd:
            sd[f"{mod}.bias"] = sd.pop(f"{mod}.base_layer.bias")
        folded += 1
    leftover = [k for k in sd if ".base_layer." in k or "lora_" in k]
    if leftover:
        raise CheckpointError(f"VideoReward: {len(leftover)} tensors are neither plain weights nor foldable LoRA "
                              f"pairs (e.g. {leftover[:3]}); only LoRA A/B on linear layers is supported")
    return sd, folded


def load_torch_file(path: Path) -> dict[str, Any]:
    """A ``torch.save``d state dict, tensors only (weights_only), memory-mapped when possible."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
        if "mmap" not in str(exc):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)


def load_safetensors(paths: list[Path]) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for p in paths:
        out.update(load_file(str(p), device="cpu"))
    return out


def assemble_state_dict(layout: str, files: list[Path], scale: float, *, base_files: list[Path] | None = None,
                        vocab_size: int | None = None) -> tuple[dict[str, Any], int]:
    """The reward model's state dict in transformers 5.x names with LoRA folded; (state dict, pairs folded).

    ``vocab_size``: the embedding rows the model has (tokenizer length incl. the reward tokens);
    layout (b) cuts or checks the base embedding to it, as the reference's ``resize_token_embeddings``.
    """
    if layout == "full":
        sd = remap_keys(strip_peft_prefix(load_torch_file(files[0])))
    elif layout == "adapter":
        if not base_files:
            raise CheckpointError("VideoReward: layout (b) needs the base model weights")
        sd = remap_keys(strip_peft_prefix(load_safetensors(base_files)))
        emb = "model.language_model.embed_tokens.weight"
        if vocab_size is not None and emb in sd and sd[emb].shape[0] != vocab_size:
            if sd[emb].shape[0] < vocab_size:
                raise CheckpointError(f"VideoReward: the base embedding has {sd[emb].shape[0]} rows, the tokenizer "
                                      f"{vocab_size} tokens")
            sd[emb] = sd[emb][:vocab_size]
        sd.update(remap_keys(strip_peft_prefix(load_torch_file(files[1]))))
        sd.update(remap_keys(strip_peft_prefix(load_safetensors([files[0]]))))
    else:
        raise CheckpointError(f"unknown layout {layout!r}")
    sd, n = fold_lora(sd, scale)
    sd.pop("lm_head.weight", None)
    return sd, n
