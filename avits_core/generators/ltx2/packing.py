"""Packing helpers of LTX-2's latents (the same token layouts as ``LTX2Pipeline``) and guidance rescale."""

from __future__ import annotations

import torch

# --------------------------------------------------------------------------------------------------
# Packing helpers (same layouts as the pipeline)
# --------------------------------------------------------------------------------------------------


def pack_video(x: torch.Tensor, p: int = 1, pt: int = 1) -> torch.Tensor:
    """``[B, C, F, H, W]`` -> ``[B, (F/pt)(H/p)(W/p), C*pt*p*p]``, tokens in (f, h, w) order."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f // pt, pt, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_video(x: torch.Tensor, f: int, h: int, w: int, p: int = 1, pt: int = 1) -> torch.Tensor:
    """Inverse of :func:`pack_video`; ``f, h, w`` are the token-grid sizes."""
    b = x.size(0)
    x = x.reshape(b, f, h, w, -1, pt, p, p)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def pack_audio(x: torch.Tensor) -> torch.Tensor:
    """``[B, Ca, L, M]`` -> ``[B, L, Ca*M]`` (channel-major features)."""
    return x.transpose(1, 2).flatten(2, 3)


def unpack_audio(x: torch.Tensor, mel: int) -> torch.Tensor:
    """Inverse of :func:`pack_audio` (``mel`` = latent mel bins M)."""
    return x.unflatten(2, (-1, mel)).transpose(1, 2)


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, sec. 3.4) in x0 space, per row:
    ``phi * guided * std(cond) / std(guided) + (1 - phi) * guided`` (unbiased std over non-batch dims)."""
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return phi * rescaled + (1 - phi) * guided
