"""Synchformer (Iashin et al. 2024) in plain torch, for inference: the audio-visual offset classifier
behind DeSync. No timm, torchvision or torchaudio; the audio encoder is transformers' ``ASTModel``.

Layout (defaults = the published ``synchformer_state_dict.pth``; :class:`SynchformerConfig` shrinks
it for tests). Per 0.64 s segment:

Video (``vfeat_extractor``, MotionFormer = TimeSformer-style ViT-B/16 with divided space-time
    attention). A (3, 16, 224, 224) segment -> Conv3d tubelets 2x16x16 -> 8 x 14 x 14 tokens (time
    major) + a CLS token; positions = the spatial table (1, 197, D) tiled over the 8 time steps plus
    a temporal table (1, 8, D) (CLS gets the spatial CLS entry). 12 blocks, each: time attention
    (every patch attends to the CLS token and to its own location in the 8 time steps; the CLS
    token attends to everything) -> residual -> space attention (within each time step, plus CLS)
    -> residual -> MLP -> residual; pre-LayerNorms (eps 1e-6) norm3, norm1, norm2 respectively. Then
    the CLS token is dropped, a final LayerNorm, and a spatial aggregation layer (a norm-first
    ``nn.TransformerEncoderLayer`` with GELU, its own CLS token prepended to each time step's 196
    tokens, output = that CLS) gives (8, D) per segment.
Audio (``afeat_extractor``, AST). A (128 mel, 66 frame) log-mel -> ``ASTModel`` (patches 16x16 with
    strides 10/10 -> 12 frequency x 6 time patches, CLS + distillation tokens, positions (1, 74, D))
    -> drop the two special tokens -> a frequency aggregation layer (same kind as above) over the 12
    frequency tokens of each time step -> (6, D) per segment.
Sync head (``transformer``). vproj/aproj (Linear D -> D) -> 14 segments flattened -> v (112, D),
    a (84, D) -> own input LayerNorms -> [OFF token, v, MOD token, a] (198 tokens) + learned
    positions (1, 198, D) -> 3 pre-LN GPT blocks (8 heads, GELU MLP x4) -> LayerNorm -> Linear(D, 21)
    on the OFF token: logits over offsets -2.0, -1.8, ..., +2.0 s.

Weights. :func:`load_synchformer` loads a file strictly: every published key must be present with its
shape, none may be left over; the error names the file and the missing / unexpected / mismatched
keys. The published file names the AST keys as transformers 4 did
(``afeat_extractor.ast.encoder.layer.N.attention.attention.query``, ...); they are renamed to the
installed transformers' names (5.x: ``afeat_extractor.ast.layers.N.attention.q_proj``, ...) by
:func:`remap_ast_keys` (module ``keys``, re-exported here). A file may also hold
``{"synchformer_config": {...}, "state_dict": {...}}`` (tiny test models); a plain state dict means the
published architecture.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from avits_core import loading
from avits_core.errors import MissingWeightsError
from avits_core.verifiers.synchformer.keys import published_state_dict, remap_ast_keys

log = logging.getLogger(__name__)

WEIGHTS_URL = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1/synchformer_state_dict.pth"


class SynchformerWeightsError(MissingWeightsError):
    """The weights file does not match the architecture (names the keys)."""


@dataclass(frozen=True)
class SynchformerConfig:
    """Architecture numbers. Defaults: the published Synchformer (237.5 M parameters)."""

    # video (MotionFormer)
    v_dim: int = 768
    v_depth: int = 12
    v_heads: int = 12
    v_mlp_ratio: int = 4
    img_size: int = 224
    patch_size: int = 16
    tubelet: int = 2
    segment_frames: int = 16
    # audio (AST)
    a_dim: int = 768
    a_depth: int = 12
    a_heads: int = 12
    a_intermediate: int = 3072
    n_mels: int = 128
    spec_frames: int = 66
    a_patch: int = 16
    a_stride: int = 10
    # sync head
    h_dim: int = 768
    h_layers: int = 3
    h_heads: int = 8
    n_classes: int = 21
    max_offset_s: float = 2.0
    n_segments: int = 14

    @property
    def v_tokens_per_segment(self) -> int:
        return self.segment_frames // self.tubelet

    @property
    def a_freq_patches(self) -> int:
        return (self.n_mels - self.a_patch) // self.a_stride + 1

    @property
    def a_tokens_per_segment(self) -> int:
        return (self.spec_frames - self.a_patch) // self.a_stride + 1

    @property
    def n_positions(self) -> int:
        return 2 + self.n_segments * (self.v_tokens_per_segment + self.a_tokens_per_segment)

    def offsets(self) -> torch.Tensor:
        """Offset (s) of each class, float32 (n_classes,): linspace(-max, +max)."""
        import numpy as np

        return torch.from_numpy(np.linspace(-self.max_offset_s, self.max_offset_s, self.n_classes)).float()


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------
class ClsAggregation(nn.TransformerEncoderLayer):
    """A norm-first transformer encoder layer (GELU, eps 1e-6) that prepends its own CLS token to each
    sequence and returns that token: (N, L, D) -> (N, D)."""

    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__(d_model=dim, nhead=heads, dim_feedforward=ff, dropout=0.0, activation=nn.GELU(),
                         layer_norm_eps=1e-6, batch_first=True, norm_first=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return super().forward(x)[:, 0]


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DividedAttention(nn.Module):
    """One half of divided space-time attention. Tokens: CLS then F x P patches (time major).

    ``over="time"``: each patch attends to CLS + the F patches at its spatial location;
    ``over="space"``: each patch attends to CLS + the P patches of its time step. The CLS token
    attends to all tokens in both."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, over: str) -> torch.Tensor:
        n, length, dim = x.shape
        h, d = self.heads, dim // self.heads
        q, k, v = (t.reshape(n, length, h, d).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        q = q * self.scale
        cls_out = torch.softmax(q[:, :, :1] @ k.transpose(-2, -1), dim=-1) @ v  # (n, h, 1, d)
        p = (length - 1) // frames

        def grid(t: torch.Tensor) -> torch.Tensor:  # (n, h, F*P, d) -> groups (n, h, G, M, d)
            t = t[:, :, 1:].reshape(n, h, frames, p, d)
            return t.transpose(2, 3) if over == "time" else t

        qg, kg, vg = grid(q), grid(k), grid(v)
        groups = qg.shape[2]
        kg = torch.cat([k[:, :, :1, None].expand(n, h, groups, 1, d), kg], dim=3)
        vg = torch.cat([v[:, :, :1, None].expand(n, h, groups, 1, d), vg], dim=3)
        out = torch.softmax(qg @ kg.transpose(-2, -1), dim=-1) @ vg  # (n, h, G, M, d)
        if over == "time":
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.reshape(n, h, frames * p, d)], dim=2)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class DividedBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, dim * mlp_ratio)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.proj = conv


class MotionFormer(nn.Module):
    """Video segment encoder: (N, 3, 16, H, W) in [-1, 1] -> (N, 8, D)."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d, p = cfg.v_dim, cfg.patch_size
        self.cfg = cfg
        self.grid = cfg.img_size // p
        n_patches = self.grid * self.grid
        # the 2-D patch embedding of the image ViT is kept (it is in the weights) but unused
        self.patch_embed = _PatchEmbed(nn.Conv2d(3, d, kernel_size=p, stride=p))
        self.patch_embed_3d = _PatchEmbed(nn.Conv3d(3, d, kernel_size=(cfg.tubelet, p, p), stride=(cfg.tubelet, p, p)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.v_tokens_per_segment, d))
        self.blocks = nn.ModuleList(DividedBlock(d, cfg.v_heads, cfg.v_mlp_ratio) for _ in range(cfg.v_depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.spatial_attn_agg = ClsAggregation(d, cfg.v_heads, cfg.v_mlp_ratio * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        frames = self.cfg.v_tokens_per_segment
        x = self.patch_embed_3d.proj(x).flatten(2).transpose(1, 2)  # (n, F*P, D), time major
        p = x.shape[1] // frames
        pos = self.pos_embed[:, 1:].repeat(1, frames, 1) + self.temp_embed.repeat_interleave(p, dim=1)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + torch.cat([self.pos_embed[:, :1], pos], dim=1)
        for blk in self.blocks:
            x = blk(x, frames)
        x = self.norm(x[:, 1:])  # (n, F*P, D)
        x = self.spatial_attn_agg(x.reshape(n * frames, p, x.shape[-1]))
        return x.reshape(n, frames, -1)


class ASTFeatures(nn.Module):
    """Audio segment encoder: (N, n_mels, 66) normalised log-mels -> (N, 6, D)."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        from transformers import ASTConfig, ASTModel

        self.cfg = cfg
        ast_cfg = ASTConfig(hidden_size=cfg.a_dim, num_hidden_layers=cfg.a_depth, num_attention_heads=cfg.a_heads,
                            intermediate_size=cfg.a_intermediate, num_mel_bins=cfg.n_mels,
                            max_length=cfg.spec_frames, patch_size=cfg.a_patch, frequency_stride=cfg.a_stride,
                            time_stride=cfg.a_stride, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.ast = ASTModel(ast_cfg)
        self.freq_attn_agg = ClsAggregation(cfg.a_dim, cfg.a_heads, cfg.a_intermediate)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        n = spec.shape[0]
        f, t = self.cfg.a_freq_patches, self.cfg.a_tokens_per_segment
        out = self.ast(input_values=spec.transpose(1, 2))  # AST reads (N, time, freq)
        x = out.last_hidden_state[:, 2:]  # (n, f*t, D), frequency major
        x = x.reshape(n, f, t, -1).transpose(1, 2).reshape(n * t, f, -1)
        return self.freq_attn_agg(x).reshape(n, t, -1)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.heads
        k, q, v = (m(x).reshape(b, t, h, c // h).transpose(1, 2) for m in (self.key, self.query, self.value))
        att = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / (c // h) ** 0.5), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))


class _GPTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _Positions(nn.Module):
    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, n, dim))


class SyncHead(nn.Module):
    """[OFF, video tokens, MOD, audio tokens] -> 3 GPT blocks -> logits over the offset classes."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.h_dim
        self.vis_in_lnorm = nn.LayerNorm(d)
        self.aud_in_lnorm = nn.LayerNorm(d)
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_emb_cfg = _Positions(cfg.n_positions, d)
        self.blocks = nn.Sequential(*[_GPTBlock(d, cfg.h_heads) for _ in range(cfg.h_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, cfg.n_classes)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b = v.shape[0]
        x = torch.cat([self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(v),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(a)], dim=1)
        if x.shape[1] != self.pos_emb_cfg.pos_emb.shape[1]:
            raise ValueError(f"sync head takes {self.pos_emb_cfg.pos_emb.shape[1]} tokens, got {x.shape[1]}")
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


class Synchformer(nn.Module):
    """The full model. ``video_features``/``audio_features`` encode segments independently;
    ``logits(v, a)`` scores one window: v (B, 14, 8, Dv), a (B, 14, 6, Da) -> (B, n_classes)."""

    def __init__(self, cfg: SynchformerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or SynchformerConfig()
        self.vfeat_extractor = MotionFormer(self.cfg)
        self.afeat_extractor = ASTFeatures(self.cfg)
        self.vproj = nn.Linear(self.cfg.v_dim, self.cfg.h_dim)
        self.aproj = nn.Linear(self.cfg.a_dim, self.cfg.h_dim)
        self.transformer = SyncHead(self.cfg)

    def video_features(self, segments: torch.Tensor) -> torch.Tensor:
        """(N, 3, 16, H, W) -> (N, 8, Dv)."""
        return self.vfeat_extractor(segments)

    def audio_features(self, specs: torch.Tensor) -> torch.Tensor:
        """(N, n_mels, 66) -> (N, 6, Da)."""
        return self.afeat_extractor(specs)

    def logits(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        v, a = self.vproj(v), self.aproj(a)
        b = v.shape[0]
        return self.transformer(v.reshape(b, -1, v.shape[-1]), a.reshape(b, -1, a.shape[-1]))


# --------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------
def check_state_dict(model: Synchformer, sd: Mapping[str, Any], source: str) -> None:
    """Raise SynchformerWeightsError naming the missing, unexpected and wrongly shaped keys (published names)."""
    loading.check_state_dict(published_state_dict(model), sd, what=f"Synchformer weights {source!r} do not match "
                             f"the architecture", error=SynchformerWeightsError,
                             hint=f"expected the published synchformer_state_dict.pth ({WEIGHTS_URL})")


def read_weights(path: str | os.PathLike[str]) -> tuple[SynchformerConfig, dict[str, torch.Tensor]]:
    """(architecture, published-name state dict) of a weights file (``weights_only`` load)."""
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise SynchformerWeightsError(f"Synchformer weights {os.fspath(path)!r}: expected a state dict, got {type(obj).__name__}")
    if "state_dict" in obj and "synchformer_config" in obj:
        return SynchformerConfig(**dict(obj["synchformer_config"])), dict(obj["state_dict"])
    return SynchformerConfig(), dict(obj)


def save_weights(model: Synchformer, path: str | os.PathLike[str]) -> None:
    """Save under the published names; a non-default architecture is stored beside the tensors."""
    sd = published_state_dict(model)
    obj: Any = sd
    if model.cfg != SynchformerConfig():
        obj = {"synchformer_config": dataclasses.asdict(model.cfg), "state_dict": sd}
    torch.save(obj, os.fspath(path))


def load_synchformer(path: str | os.PathLike[str], device: str = "cpu", dtype: Any = torch.float32) -> Synchformer:
    """Build the architecture the file describes and load it strictly (eval mode, on ``device``/``dtype``)."""
    cfg, sd = read_weights(path)
    model = Synchformer(cfg)
    check_state_dict(model, sd, os.fspath(path))
    model.load_state_dict(remap_ast_keys(sd), strict=True)
    return model.to(device=device, dtype=dtype).eval()
