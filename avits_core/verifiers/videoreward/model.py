"""The VideoReward network on transformers 5.x, and its loading.

Network (:class:`RewardModel`): transformers' ``Qwen2VLModel`` (vision tower + language model) and
``rm_head = Linear(hidden, 1, bias=False)``. Forward, for a right-padded batch:

1. embed the token ids; run the vision tower on the video patches (cast to the tower's dtype);
   scatter its merged outputs, clip after clip, into the ``<|video_pad|>`` positions;
2. run the language model with **explicit sequential positions** ``0..L-1`` for every token (what
   VideoAlign's reference got from transformers 4.45 with ``position_ids=None``), not Qwen2-VL's 3-D
   M-RoPE positions that transformers 5.x would compute; then its final norm;
3. take the hidden states at the three reward-token positions in sequence order (VQ, MQ, TA; each
   row must hold each token exactly once) and apply ``rm_head``: (B, 3) raw rewards.

Applying ``rm_head`` only at those positions equals the reference's head-at-every-position-then-pick.

Loading (:func:`load_reward_model`): tokenizer from the base folder plus the three reward tokens
(``<|VQ_reward|>``, ``<|MQ_reward|>``, ``<|TA_reward|>``; in the released model ids 151657-151659,
tokenizer length 151660); the architecture from the base ``config.json`` with the vocabulary set to
the tokenizer length; parameters created empty (meta device, no random init, no fp32 copy of 2B
weights) and then assigned from the assembled state dict (see :mod:`.checkpoint`), strictly: a
missing or an unexpected tensor is an error naming it. Then ``model.to(device, dtype)``: like the
reference's ``model.to(torch.bfloat16)``, this also casts the rotary ``inv_freq`` buffers.

Rotary angles as the reference: transformers 4.45 built the vision tower's rotary angles (and their
cos/sin) in the buffer's dtype, bf16 after the cast; 5.x computes them in float32.
:func:`reference_vision_rope` restores the 4.45 arithmetic (a no-op in float32). Checked against
transformers 4.45.2 running VideoAlign's forward on the tiny model (see docs/videoreward.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from avits_core.loading import check_state_dict
from avits_core.verifiers.videoreward import checkpoint as ck
from avits_core.verifiers.videoreward.template import (
    REWARD_TOKENS,
    VIDEO_PAD,
    chat_messages,
    chat_text,
)

log = logging.getLogger(__name__)

_NN_CACHE: dict[str, type] = {}


def _reward_model_class() -> type:
    """Define :class:`RewardModel` lazily (torch and transformers are imported on first use only)."""
    if "RewardModel" in _NN_CACHE:
        return _NN_CACHE["RewardModel"]
    import torch
    from torch import nn
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    class RewardModel(nn.Module):
        """Qwen2-VL + ``rm_head``; see the module docstring for the forward."""

        def __init__(self, config: Any) -> None:
            super().__init__()
            self.config = config
            self.model = Qwen2VLModel(config)
            self.rm_head = nn.Linear(config.text_config.hidden_size, 1, bias=False)

        def forward(self, input_ids: Any, attention_mask: Any, pixel_values_videos: Any, video_grid_thw: Any,
                    reward_ids: Sequence[int], video_token_id: int) -> Any:
            B, L = input_ids.shape
            lm = self.model.language_model
            emb = lm.embed_tokens(input_ids)
            vis = self.model.visual(pixel_values_videos.to(self.model.visual.dtype), grid_thw=video_grid_thw)
            merged = getattr(vis, "pooler_output", vis)
            mask = input_ids == video_token_id
            if int(mask.sum()) != merged.shape[0]:
                raise RuntimeError(f"{int(mask.sum())} video tokens but {merged.shape[0]} vision outputs")
            emb = emb.masked_scatter(mask[..., None].expand_as(emb), merged.to(emb.dtype))
            pos = torch.arange(L, device=input_ids.device)[None].expand(B, L)
            hidden = lm(inputs_embeds=emb, attention_mask=attention_mask, position_ids=pos,
                        use_cache=False).last_hidden_state
            rid = torch.tensor(list(reward_ids), device=input_ids.device)
            sel = (input_ids[..., None] == rid).any(-1)
            counts = sel.sum(-1)
            if not bool((counts == len(rid)).all()):
                raise RuntimeError(f"each row needs the {len(rid)} reward tokens once, found {counts.tolist()}")
            order = input_ids[sel].view(B, len(rid))
            if not bool((order == rid).all()):
                raise RuntimeError(f"reward tokens out of order: {order.tolist()}")
            pooled = hidden[sel].view(B, len(rid), -1)
            return self.rm_head(pooled).squeeze(-1)

    _NN_CACHE["RewardModel"] = RewardModel
    return RewardModel


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Create module parameters on the meta device (no memory, no init); buffers stay real."""
    import torch
    from torch import nn

    original = nn.Module.register_parameter

    def register(module: Any, name: str, param: Any) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def reference_vision_rope(rope: Any) -> Any:
    """Make the vision tower's rotary angles follow transformers 4.45 (the reference): the angle
    ``position * inv_freq`` and its cos/sin are computed in the dtype of the ``inv_freq`` buffer (bf16
    after ``.to(torch.bfloat16)``), then used in float32. transformers 5.x computes them in float32;
    with a float32 buffer both are the same. Patches the module instance; returns it."""

    def forward(x: Any, position_ids: Any) -> tuple[Any, Any]:
        inv = rope.inv_freq.to(device=x.device)
        freqs = position_ids[..., None].to(inv.dtype) * inv
        cos = freqs.cos() * rope.attention_scaling
        sin = freqs.sin() * rope.attention_scaling
        return rope.recomposition_frequencies(cos), rope.recomposition_frequencies(sin)

    rope.forward = forward
    return rope


def build_config(base_dir: Path, vocab_size: int) -> Any:
    """The base model's Qwen2VLConfig with ``vocab_size`` rows, sdpa attention."""
    from transformers import Qwen2VLConfig

    cfg = Qwen2VLConfig.from_pretrained(str(base_dir), local_files_only=True)
    cfg.text_config.vocab_size = int(vocab_size)
    cfg._attn_implementation = "sdpa"
    cfg.text_config._attn_implementation = "sdpa"
    cfg.vision_config._attn_implementation = "sdpa"
    return cfg


def add_reward_tokens(tok: Any) -> list[int]:
    """Add the three reward tokens as special tokens (as VideoAlign did) and return their ids."""
    from tokenizers import AddedToken

    missing = [t for t in REWARD_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens([AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in missing],
                       special_tokens=True)
    ids = [int(tok.convert_tokens_to_ids(t)) for t in REWARD_TOKENS]
    if ids != list(range(ids[0], ids[0] + 3)):
        raise ck.CheckpointError(f"VideoReward: reward tokens got ids {ids}; expected three consecutive ids")
    return ids


@dataclass
class LoadedRewardModel:
    """A loaded VideoReward: network, tokenizer, the ids it needs, and a forward counter (tests)."""

    net: Any
    tokenizer: Any
    reward_ids: list[int]
    video_token_id: int
    pad_token_id: int
    device: str
    dtype: Any
    layout: str
    folded: int
    forwards: int = 0  # clips sent through the network
    calls: int = 0  # network calls
    info: dict[str, Any] = field(default_factory=dict)

    def token_ids(self, user_text: str, num_video_tokens: int) -> list[int]:
        """Token ids of the chat text with ``<|video_pad|>`` expanded to ``num_video_tokens`` copies."""
        ids = self.tokenizer(chat_text(user_text), add_special_tokens=False)["input_ids"]
        pos = [i for i, t in enumerate(ids) if t == self.video_token_id]
        if len(pos) != 1:
            raise RuntimeError(f"the chat text holds {len(pos)} {VIDEO_PAD} tokens, expected 1")
        i = pos[0]
        return ids[:i] + [self.video_token_id] * int(num_video_tokens) + ids[i + 1:]

    def forward(self, token_rows: Sequence[Sequence[int]], patches: Sequence[Any],
                grids: Sequence[tuple[int, int, int]]) -> Any:
        """Raw (B, 3) float64 numpy rewards for one batch (right padding)."""
        import numpy as np
        import torch

        B = len(token_rows)
        L = max(len(r) for r in token_rows)
        ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        att = torch.zeros((B, L), dtype=torch.long)
        for b, r in enumerate(token_rows):
            ids[b, :len(r)] = torch.tensor(list(r), dtype=torch.long)
            att[b, :len(r)] = 1
        pv = torch.cat(list(patches)).to(self.device)
        grid = torch.tensor([list(g) for g in grids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.net(ids.to(self.device), att.to(self.device), pv, grid, self.reward_ids, self.video_token_id)
        self.calls += 1
        self.forwards += B
        return out.float().cpu().numpy().astype(np.float64)


def _check_chat_template(tok: Any, base_dir: Path) -> None:
    """If the base folder ships the processor's chat template, it must render what chat_text writes."""
    path = base_dir / "chat_template.json"
    template = None
    if path.is_file():
        try:
            template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError) as exc:
            raise ck.CheckpointError(f"VideoReward: {str(path)!r} is not valid JSON ({exc})") from None
    if not template:
        return
    probe = "\nprobe {text} prompt  \n"
    theirs = tok.apply_chat_template(chat_messages(probe), chat_template=template, tokenize=False,
                                     add_generation_prompt=True)
    ours = chat_text(probe)
    if theirs != ours:
        raise ck.CheckpointError(f"VideoReward: the base model's chat template ({str(path)!r}) renders "
                                 f"{theirs!r}, this port writes {ours!r}; it expects Qwen2-VL-2B-Instruct's template")


def load_reward_model(base_dir: Path, reward_dir: Path, device: str, dtype: Any,
                      cfg: ck.RewardConfig) -> LoadedRewardModel:
    """Load tokenizer + network (module docstring). ``dtype`` is a torch dtype."""
    import torch
    from transformers import AutoTokenizer

    steps = ck.checkpoint_steps(reward_dir)
    if not steps:
        raise ck.MissingWeightsError(f"VideoReward: no checkpoint-<step> folder in {str(reward_dir)!r}; "
                                     f"{ck.reward_hint()}")
    step, ckpt = steps[0]
    layout, files = ck.checkpoint_layout(ckpt)
    tok = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    tok.padding_side = "right"
    reward_ids = add_reward_tokens(tok)
    _check_chat_template(tok, base_dir)
    video_id = int(tok.convert_tokens_to_ids(VIDEO_PAD))
    config = build_config(base_dir, len(tok))
    if int(config.video_token_id) != video_id:
        raise ck.CheckpointError(f"VideoReward: config.json says video_token_id {config.video_token_id}, the "
                                 f"tokenizer gives {VIDEO_PAD} id {video_id}")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
    base_files = ck.base_weight_files(base_dir) if layout == "adapter" else None
    log.info("VideoReward: loading %s (%s layout, step %d) on %s/%s", ckpt, layout, step, device, dtype)
    sd, folded = ck.assemble_state_dict(layout, files, cfg.lora_scale, base_files=base_files, vocab_size=len(tok))
    emb = sd.get("model.language_model.embed_tokens.weight")
    if emb is not None and emb.shape[0] != len(tok):
        raise ck.CheckpointError(f"VideoReward: the checkpoint's embedding has {emb.shape[0]} rows but the tokenizer "
                                 f"with the reward tokens has {len(tok)}; is base_model_path Qwen2-VL-2B-Instruct?")
    cls = _reward_model_class()
    with empty_parameters():
        net = cls(config)
    check_state_dict(net.state_dict(), sd, what=f"VideoReward: checkpoint {str(ckpt)!r} does not fit the model",
                     error=ck.CheckpointError)
    net.load_state_dict(sd, strict=True, assign=True)
    del sd
    net = net.to(device=device, dtype=dtype).eval()
    reference_vision_rope(net.model.visual.rotary_pos_emb)
    log.info("VideoReward: %d LoRA pairs folded; %.2f B parameters", folded,
             sum(p.numel() for p in net.parameters()) / 1e9)
    return LoadedRewardModel(net=net, tokenizer=tok, reward_ids=reward_ids, video_token_id=video_id,
                             pad_token_id=int(pad), device=device, dtype=dtype, layout=layout, folded=folded,
                             info={"checkpoint": str(ckpt), "step": step})
