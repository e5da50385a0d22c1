"""Initial noise of the LTX-2 generator: one CPU ``torch.Generator`` per seed draws the video noise
``[1, C, F, H, W]`` and then the audio noise ``[1, Ca, L, M]`` (float32), as ``randn_tensor`` does with a
list of generators, so a row depends only on its seed and equals the pipeline's draws."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from avits_core.generators.base import Latents
from avits_core.generators.ltx2.packing import pack_audio, pack_video
from avits_core.generators.ltx2.settings import Geometry


def check_seed(seed: Any) -> int:
    """A seed as a Python int in [0, 2**64); anything else is a ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"ltx2: seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"ltx2: seed must be in [0, 2**64), got {seed}")
    return int(seed)


def draw_initial(geo: Geometry, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """The seed's unpacked video and audio noise, and its generator positioned after both draws
    (the decode noise of a timestep-conditioned VAE continues from there)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    v = torch.randn((1, geo.c, geo.f, geo.h, geo.w), generator=g, dtype=torch.float32)
    a = torch.randn((1, geo.ca, geo.l, geo.m), generator=g, dtype=torch.float32)
    return v, a, g


def initial_noise(geo: Geometry, seeds: Sequence[Any], device: torch.device) -> Latents:
    """Packed noise latents at step 0, one row per seed, on ``device``."""
    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("ltx2.init_noise needs at least one seed")
    vs, as_ = [], []
    for s in seeds:
        v, a, _ = draw_initial(geo, s)
        vs.append(pack_video(v, geo.p, geo.pt))
        as_.append(pack_audio(a))
    return Latents(video=torch.cat(vs).to(device), audio=torch.cat(as_).to(device), step=0, seeds=seeds)
