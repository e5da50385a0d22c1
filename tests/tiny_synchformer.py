"""A tiny, randomly initialised Synchformer (same structure, small dims) saved like the real weights.

The structure that the DeSync policies depend on is kept: 16-frame segments in tubelets of 2 (8 video
tokens per segment), 66-frame log-mels in time patches of 16 with stride 10 (6 audio tokens per
segment), 14 segments per window, 198 head positions, 21 offset classes. Only widths, depths, the
picture size (32 px: 2 x 2 patches) and the mel bins (32: 2 frequency patches) shrink.
"""

from __future__ import annotations

from pathlib import Path

TINY = dict(v_dim=32, v_depth=1, v_heads=2, img_size=32, a_dim=32, a_depth=1, a_heads=2, a_intermediate=64,
            n_mels=32, h_dim=32, h_layers=1, h_heads=2)


def tiny_model(seed: int = 0):
    """The tiny model itself (eval mode), every parameter drawn from N(0, 0.2^2) (LayerNorm weights 1 + that)."""
    import torch

    from avits_core.verifiers.synchformer.model import Synchformer, SynchformerConfig

    torch.manual_seed(seed)
    model = Synchformer(SynchformerConfig(**TINY))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + noise if ("norm" in name or "layernorm" in name or "ln" in name.split(".")[-2:][0])
                    and name.endswith("weight") and p.dim() == 1 else noise)
    return model.eval()


def build_tiny_synchformer(path: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` ({"synchformer_config", "state_dict"} under the published key names)."""
    from avits_core.verifiers.synchformer.model import save_weights

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(tiny_model(seed), path)
    return path
