"""VBench's temporal flickering score as a weight-free per-clip quality metric (and verifier).

What it computes, per clip (the prompt and the audio are not used)
    score = (255 - mean_t MAE(frame_t, frame_t+1)) / 255, in [0, 1], higher is better (1 = no
    change between any two consecutive frames), where MAE is the mean absolute difference over
    every pixel and channel of two consecutive uint8 frames taken as float32, and the outer mean
    runs over the T - 1 consecutive pairs (VBench, "temporal_flickering"; Huang et al. 2024).
    A clip needs at least 2 frames (below that: an error row).

Exactness
    The arithmetic follows VBench's: each frame pair's MAE is a float32 mean over the (H, W, 3)
    array in OpenCV's BGR channel order (VBench reads frames with cv2), the per-pair values are
    averaged in float32, and only the final (255 - m) / 255 is float64. So the value equals
    VBench's on the same decoded frames. VBench reports this dimension on its static-scene prompt
    subset; the per-clip formula is the same for any clip, but large true motion lowers the score
    too: it measures frame-to-frame change, not only flicker.
"""

from __future__ import annotations

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import MinInput, Verifier


def temporal_flickering(video: np.ndarray) -> float:
    """VBench temporal flickering of a uint8 RGB (T, H, W, 3) video (see the module docstring)."""
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"temporal_flickering: video must be (T, H, W, 3), got shape {v.shape}")
    if v.shape[0] < 2:
        raise ValueError(f"temporal_flickering: needs at least 2 frames, got {v.shape[0]}")
    bgr = v[..., ::-1]
    maes = np.array([
        np.mean(np.abs(np.ascontiguousarray(bgr[i], dtype=np.float32) - np.ascontiguousarray(bgr[i + 1], dtype=np.float32)))
        for i in range(v.shape[0] - 1)
    ], dtype=np.float32)
    return (255.0 - float(np.mean(maes))) / 255.0


class TemporalFlickering(Verifier):
    """VBench temporal flickering: (255 - mean consecutive-frame MAE) / 255 in [0, 1], higher is better.

    Input: the clip's video only (uint8 frames; at least 2). No weights."""

    name = "temporal_flickering"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)
    needs_weights = False
    min_input = MinInput(frames=2, modalities=("video",))

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        return temporal_flickering(clip.video)
