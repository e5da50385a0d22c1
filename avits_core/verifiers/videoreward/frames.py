"""VideoReward's video input, written without torchvision / qwen-vl-utils / the Qwen2-VL processor.

What a clip becomes (VideoAlign's inference recipe; numbers from its ``model_config.json``):

1. **How many frames** (:func:`num_frames`): ``n = total / src_fps * fps`` (``fps`` = 2.0), clamped to
   ``[4, floor_even(min(768, total))]``, rounded to an even number with Python's ``round`` (half to
   even: 5.0 frames -> 4), and capped at ``total``. A fixed ``nframes`` (the reference's other mode)
   is rounded to even the same way. Fewer than 2 frames is an error.
2. **Which frames** (:func:`frame_indices`): ``torch.linspace(0, total - 1, n)`` in float32, rounded
   half to even (``torch.round``).
3. **Picture size** (:func:`smart_resize`): both sides a multiple of 28; first each side rounded to
   the nearest multiple (half to even); if the area exceeds ``max_pixels`` (200,704) both sides are
   scaled by ``sqrt(h w / max_pixels)`` and floored to multiples of 28; if it is below ``min_pixels``
   (100,352 = 128·28·28) they are scaled up by ``sqrt(min_pixels / (h w))`` and ceiled (small videos
   are *upscaled*). Aspect ratios above 200 are an error.
4. **Resampling** (:func:`resize_frames`): bicubic with antialiasing (torch's
   ``interpolate(..., antialias=True)``, the kernel torchvision's ``resize`` uses), on the uint8 frames
   as float32, then clamped to [0, 255] and rounded to integers (torchvision's uint8 round trip);
   the same size is returned unchanged.
5. **Pixel values** (:func:`normalise`): ``(x / 255 - mean) / std`` in float32 with the CLIP mean
   (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711).
6. **Patches** (:func:`patchify`): the frame count is padded to even by repeating the last frame;
   the (T, C, H, W) video is cut into 2 x 14 x 14 patches and ordered in the vision tower's
   merge-block order: rows indexed by (t, h/2, w/2, 2, 2) and, within a row, values ordered by
   (C, 2 frames, 14, 14), i.e. rows of 3·2·14·14 = 1,176 values; ``grid_thw = [T/2, H/14, W/14]``. The
   language model sees ``T/2 · H/14 · W/14 / 4`` video tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

IMAGE_FACTOR = 28
FRAME_FACTOR = 2
MIN_FRAMES = 4
MAX_FRAMES = 768
MAX_RATIO = 200
VIDEO_MIN_PIXELS = 128 * 28 * 28  # 100,352
VIDEO_MAX_PIXELS = 200_704  # VideoReward's data_config.max_frame_pixels
PATCH_SIZE = 14
TEMPORAL_PATCH = 2
MERGE_SIZE = 2
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _round_even(x: float, factor: int) -> int:
    """The multiple of ``factor`` closest to ``x`` (Python's round: ties to the even multiple)."""
    return int(round(x / factor)) * factor


def _floor_by(x: float, factor: int) -> int:
    return int(math.floor(x / factor)) * factor


def _ceil_by(x: float, factor: int) -> int:
    return int(math.ceil(x / factor)) * factor


def num_frames(total: int, src_fps: float, fps: float = 2.0, nframes: int | None = None,
               min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> int:
    """How many frames the model reads from a ``total``-frame video at ``src_fps`` (module docstring, 1)."""
    if total < 1:
        raise ValueError(f"the video has no frames (total={total})")
    if nframes is not None:
        n = _round_even(nframes, FRAME_FACTOR)
    else:
        if not (src_fps > 0 and math.isfinite(src_fps)):
            raise ValueError(f"the video's frame rate must be > 0, got {src_fps!r}")
        lo = _ceil_by(min_frames, FRAME_FACTOR)
        hi = _floor_by(min(max_frames, total), FRAME_FACTOR)
        n = total / float(src_fps) * float(fps)
        n = _round_even(min(max(n, lo), hi), FRAME_FACTOR)
    n = min(n, total)
    if not FRAME_FACTOR <= n <= total:
        raise ValueError(f"VideoReward needs at least {FRAME_FACTOR} frames; this video has {total} "
                         f"(would sample {n})")
    return n


def frame_indices(total: int, n: int) -> list[int]:
    """``round(linspace(0, total - 1, n))`` computed in float32 with ties to even, as the reference."""
    import torch

    return torch.linspace(0, total - 1, n).round().long().tolist()


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = VIDEO_MIN_PIXELS,
                 max_pixels: int = VIDEO_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) the model reads a ``height`` x ``width`` frame at (module docstring, 3)."""
    if height < 1 or width < 1:
        raise ValueError(f"picture {width}x{height} is empty")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio of {width}x{height} exceeds {MAX_RATIO}")
    h = max(factor, _round_even(height, factor))
    w = max(factor, _round_even(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = _floor_by(height / beta, factor)
        w = _floor_by(width / beta, factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = _ceil_by(height * beta, factor)
        w = _ceil_by(width * beta, factor)
    return h, w


def resize_frames(frames: np.ndarray, height: int, width: int) -> Any:
    """uint8 (n, H, W, 3) frames -> float32 tensor (n, 3, height, width) of integer values 0..255."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) == (height, width):
        return x
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", align_corners=False,
                                        antialias=True)
    return y.clamp_(0, 255).round_()


def normalise(x: Any) -> Any:
    """(x / 255 - CLIP mean) / CLIP std per channel, float32; ``x`` is (n, 3, H, W) in 0..255."""
    import torch

    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() * (1.0 / 255.0) - mean) / std


def patchify(x: Any, patch: int = PATCH_SIZE, temporal: int = TEMPORAL_PATCH,
             merge: int = MERGE_SIZE) -> tuple[Any, tuple[int, int, int]]:
    """(T, C, H, W) float video -> (rows, C·temporal·patch·patch) patches in merge-block order, grid (t, h, w)."""
    import torch

    if x.shape[0] % temporal:
        x = torch.cat([x, x[-1:].expand(temporal - x.shape[0] % temporal, *x.shape[1:])])
    T, C, H, W = x.shape
    if H % (patch * merge) or W % (patch * merge):
        raise ValueError(f"frame size {W}x{H} is not a multiple of {patch * merge}")
    gt, gh, gw = T // temporal, H // patch, W // patch
    y = x.reshape(gt, temporal, C, gh // merge, merge, patch, gw // merge, merge, patch)
    y = y.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/2, w/2, 2, 2, C, temporal, patch, patch)
    return y.reshape(gt * gh * gw, C * temporal * patch * patch), (gt, gh, gw)


@dataclass
class VideoInput:
    """One clip ready for the vision tower: ``patches`` float32 (rows, 1176), ``grid`` (t, h, w),
    the sampled ``indices`` and the model's picture size."""

    patches: Any
    grid: tuple[int, int, int]
    indices: list[int]
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        """Video tokens the language model sees (patches after the 2x2 merge)."""
        t, h, w = self.grid
        return t * h * w // (MERGE_SIZE * MERGE_SIZE)


def prepare_video(video: np.ndarray, src_fps: float, *, fps: float = 2.0, nframes: int | None = None,
                  min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS) -> VideoInput:
    """uint8 (T, H, W, 3) video at ``src_fps`` -> :class:`VideoInput` (steps 1-6 of the module docstring)."""
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3), got shape {v.shape}")
    if v.dtype != np.uint8:
        raise ValueError(f"video must be uint8, got {v.dtype}")
    total = int(v.shape[0])
    n = num_frames(total, src_fps, fps=fps, nframes=nframes)
    idx = frame_indices(total, n)
    h, w = smart_resize(int(v.shape[1]), int(v.shape[2]), min_pixels=min_pixels, max_pixels=max_pixels)
    x = normalise(resize_frames(v[idx], h, w))
    patches, grid = patchify(x)
    return VideoInput(patches=patches, grid=grid, indices=idx, height=h, width=w)
