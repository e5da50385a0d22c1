"""ImageBind's image and video inputs without torchvision: resize, crop, CLIP normalisation, 2 s clips
of 2 frames with 3 spatial crops (see the package docstring for the recipe)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from avits_core.verifiers.imagebind.audio import _even_clip_starts


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

def _normalise_chw(x: Any) -> Any:
    import torch

    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(3, *([1] * (x.dim() - 1)))
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(3, *([1] * (x.dim() - 1)))
    return (x - mean) / std


def ib_image_input(frames: Sequence[np.ndarray], size: int = 224) -> Any:
    """ImageBind's vision input for single frames: resize the short side to ``size`` (PIL bicubic),
    centre crop, scale to [0, 1], CLIP mean/std. float32 (N, 3, size, size)."""
    import torch
    from PIL import Image

    out = []
    for f in frames:
        img = Image.fromarray(np.ascontiguousarray(f))
        w, h = img.size
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append(_normalise_chw(t))
    return torch.stack(out)


def ib_video_input(video: np.ndarray, fps: float, *, clip_duration: float = 2.0, clips_per_video: int = 5,
                   frames_per_clip: int = 2, size: int = 224) -> Any:
    """ImageBind's vision input for one video: float32 (clips_per_video * 3, 3, frames_per_clip, size, size).

    Clips of ``clip_duration`` s at evenly spaced starts; in each, ``frames_per_clip`` frames evenly
    spaced over the frames with start <= i / fps < end; short side scaled to ``size`` (bilinear);
    CLIP mean/std; three crops along the long side (start, centre, end)."""
    import torch

    v = np.asarray(video)
    T = v.shape[0]
    if T == 0:
        raise ValueError("the video has no frames")
    times = np.arange(T) / float(fps)
    crops = []
    for s in _even_clip_starts(T / float(fps), clip_duration, clips_per_video):
        idx = np.nonzero((times >= s - 1e-9) & (times < s + clip_duration - 1e-9))[0]
        if idx.size == 0:
            idx = np.array([min(int(round(s * fps)), T - 1)])
        pick = idx[torch.linspace(0, idx.size - 1, frames_per_clip).long().numpy()]
        x = torch.from_numpy(v[pick].astype(np.float32) / 255.0).permute(3, 0, 1, 2)  # (C, t, H, W)
        h, w = x.shape[-2:]
        nh, nw = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = _normalise_chw(x)
        for k in range(3):
            y0, x0 = int(math.ceil((nh - size) / 2)), int(math.ceil((nw - size) / 2))
            if nh > nw:
                y0 = 0 if k == 0 else (nh - size if k == 2 else y0)
            else:
                x0 = 0 if k == 0 else (nw - size if k == 2 else x0)
            crops.append(x[:, :, y0:y0 + size, x0:x0 + size])
    return torch.stack(crops)
