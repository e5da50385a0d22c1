"""ToyLoudness: a verifier plugin example (one small class on avits' Verifier base)."""

from __future__ import annotations

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import Verifier


class ToyLoudness(Verifier):
    """Toy verifier (plugin example): RMS of the clip's audio track, in [0, 1] for audio in [-1, 1].

    Computed on the rendered audio (mono float32 samples), whatever the prompt says; higher is
    "better" only by this toy's definition. A clip with no audio samples is an error, never 0.
    """

    name = "toy_loudness"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        a = np.asarray(clip.audio, dtype=np.float64)
        if a.size == 0:
            raise ValueError("the clip has no audio samples")
        return float(np.sqrt(np.mean(np.clip(a, -1.0, 1.0) ** 2)))
