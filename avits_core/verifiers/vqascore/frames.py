"""Frame sampling and image preprocessing for VQAScore, written by hand (no torchvision).

Frame sampling (both video policies)
    ``frame_indices(T, N)``: frames ``i * floor(T / N)`` for ``i = 0 .. N-1``. This is what the
    t2v_metrics evaluator seeks to (OpenCV ``CAP_PROP_POS_FRAMES``) for a video of ``T`` frames; the
    last ``T - N * floor(T / N)`` frames are never looked at. A clip with fewer than ``N`` frames is
    refused (the evaluator would read frame 0 ``N`` times).

Tile image (policy ``tile``, the evaluator's recipe)
    Each sampled frame goes through a JPEG round trip (OpenCV, quality 95, as the evaluator writes its
    temporary frames), the frames are concatenated left to right in time order with ``gap`` = 10 black
    columns between neighbours (height = the tallest frame, shorter frames top-aligned on black), and the
    tile itself goes through a second JPEG round trip (written by OpenCV, read back by Pillow, as the
    evaluator writes ``concat_*.jpg`` and its model loads it).

CLIP input (both policies)
    ``pad_to_square``: the picture centred on a square canvas of side max(H, W) filled with the CLIP mean
    colour ``(int(255 * m) for m in image_mean)`` = (122, 116, 104) (offsets ``(side - H) // 2`` and
    ``(side - W) // 2``, as LLaVA's ``expand2square``). ``clip_pixels``: resize so that the short side is
    ``size`` (long side ``int(size * long / short)``; Pillow bicubic on uint8), centre crop
    ``crop`` x ``crop`` (offsets ``(h - crop) // 2``, ``(w - crop) // 2``), scale by 1/255, normalise with
    ``image_mean`` / ``image_std``: float32 (3, crop, crop).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TILE_GAP = 10
JPEG_QUALITY = 95


def frame_indices(num_total: int, num_frames: int) -> np.ndarray:
    """Frame ``i * floor(num_total / num_frames)`` for ``i < num_frames`` (the evaluator's sampler).

    Raises ValueError when the clip has fewer frames than ``num_frames``."""
    if num_frames < 1:
        raise ValueError(f"frames must be >= 1, got {num_frames}")
    if num_total < num_frames:
        raise ValueError(f"the clip has {num_total} frames, fewer than frames={num_frames}")
    step = num_total // num_frames
    return np.arange(num_frames, dtype=np.int64) * step


def _check_rgb(img: np.ndarray, what: str = "frame") -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (H, W, 3), got {a.dtype} {a.shape}")
    return a


def jpeg_roundtrip(rgb: np.ndarray, quality: int = JPEG_QUALITY, reader: str = "cv2") -> np.ndarray:
    """Encode an RGB uint8 picture as JPEG with OpenCV (BGR order, ``quality``) and decode it again
    with OpenCV (``reader="cv2"``) or Pillow (``reader="pil"``); returns RGB uint8."""
    import cv2

    a = _check_rgb(rgb)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(a[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {a.shape} picture as JPEG")
    if reader == "cv2":
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[:, :, ::-1])
    if reader == "pil":
        import io

        from PIL import Image

        with Image.open(io.BytesIO(buf.tobytes())) as im:
            return np.asarray(im.convert("RGB"))
    raise ValueError(f"reader must be 'cv2' or 'pil', got {reader!r}")


def tile_frames(frames: Sequence[np.ndarray], gap: int = TILE_GAP) -> np.ndarray:
    """Frames side by side, left to right, ``gap`` black columns between neighbours, height = the
    tallest frame (shorter frames top-aligned on black): uint8 (H, sum(W) + gap * (n - 1), 3)."""
    if not frames:
        raise ValueError("tile_frames needs at least one frame")
    fr = [_check_rgb(f) for f in frames]
    height = max(f.shape[0] for f in fr)
    width = sum(f.shape[1] for f in fr) + gap * (len(fr) - 1)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    x = 0
    for f in fr:
        h, w = f.shape[:2]
        out[:h, x : x + w] = f
        x += w + gap
    return out


def evaluator_tile(frames: Sequence[np.ndarray], gap: int = TILE_GAP, jpeg: bool = True) -> np.ndarray:
    """The evaluator's one picture for a video: per-frame JPEG round trip, :func:`tile_frames`, then a
    JPEG round trip of the tile read back by Pillow (``jpeg=False`` skips both round trips)."""
    if not jpeg:
        return tile_frames(frames, gap)
    tile = tile_frames([jpeg_roundtrip(f, reader="cv2") for f in frames], gap)
    return jpeg_roundtrip(tile, reader="pil")


def mean_colour(image_mean: Sequence[float]) -> tuple[int, int, int]:
    """The padding colour LLaVA derives from the processor mean: ``int(255 * m)`` per channel."""
    r, g, b = (int(x * 255) for x in image_mean)
    return (r, g, b)


def pad_to_square(img: np.ndarray, colour: Sequence[int]) -> np.ndarray:
    """``img`` centred on a square canvas of side max(H, W) filled with ``colour`` (LLaVA's expand2square)."""
    a = _check_rgb(img, "picture")
    h, w = a.shape[:2]
    if h == w:
        return a
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = np.asarray(colour, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = a
    return out


def clip_pixels(img: Any, size: int, crop: int, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """CLIP's image input for one RGB uint8 picture (array or PIL image): float32 (3, crop, crop)
    (see the module docstring)."""
    from PIL import Image

    pil = img if isinstance(img, Image.Image) else None
    a = None if pil is not None else _check_rgb(img, "picture")
    w, h = pil.size if pil is not None else (a.shape[1], a.shape[0])
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = int(size), int(size * long / short)
    nh, nw = (new_short, new_long) if h <= w else (new_long, new_short)
    if (nh, nw) != (h, w):
        src = pil if pil is not None else Image.fromarray(a)
        a = np.asarray(src.resize((nw, nh), resample=Image.Resampling.BICUBIC))
    elif a is None:
        a = np.asarray(pil.convert("RGB"))
    top, left = (nh - crop) // 2, (nw - crop) // 2
    if top < 0 or left < 0:
        raise ValueError(f"crop {crop} is larger than the resized picture {nw}x{nh}")
    a = a[top : top + crop, left : left + crop].astype(np.float32) / 255.0
    a = (a - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def clip_input(img: np.ndarray, colour: Sequence[int], size: int, crop: int, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """``clip_pixels(pad_to_square(img, colour), ...)`` computed with Pillow's fill and paste (the same
    pixels, without building the padded square in numpy: a tile of 8 frames of 768 px pads to a
    6214 x 6214 square)."""
    from PIL import Image

    a = _check_rgb(img, "picture")
    h, w = a.shape[:2]
    if h == w:
        return clip_pixels(a, size, crop, mean, std)
    side = max(h, w)
    canvas = Image.new("RGB", (side, side), tuple(int(c) for c in colour))
    canvas.paste(Image.fromarray(a), ((side - w) // 2, (side - h) // 2))
    return clip_pixels(canvas, size, crop, mean, std)
