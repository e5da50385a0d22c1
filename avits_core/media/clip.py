"""AVClip: one video with sound in memory (the layout is in :mod:`avits_core.media`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

@dataclass
class AVClip:
    video: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.video)
        if v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"AVClip.video must be (T, H, W, 3), got shape {v.shape}")
        if v.dtype != np.uint8:
            raise ValueError(f"AVClip.video must be uint8, got {v.dtype}")
        a = np.asarray(self.audio, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"AVClip.audio must be mono (N,), got shape {a.shape}")
        if not self.fps or self.fps <= 0:
            raise ValueError(f"AVClip.fps must be > 0, got {self.fps}")
        if not self.sample_rate or self.sample_rate <= 0:
            raise ValueError(f"AVClip.sample_rate must be > 0, got {self.sample_rate}")
        self.video = v
        self.audio = a

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def duration(self) -> float:
        """Duration of the video track in seconds."""
        return self.num_frames / float(self.fps)

    @property
    def audio_duration(self) -> float:
        return self.audio.shape[0] / float(self.sample_rate)
