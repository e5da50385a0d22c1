"""The Verifier base class: one reward model = one small class.

A verifier maps a batch of (clip, prompt) pairs to one float64 reward per clip. Subclasses set
``name``, ``version`` (bump it when the numbers change: the rewards table caches by it),
``higher_is_better`` and ``value_range`` (documented bounds; None where unbounded), and implement
``score_clip`` (or override ``score_clips`` for batched models).

``score`` never returns a silent 0.0 for a failure: a clip whose scoring raises, or yields a
non-finite value, gets NaN in ``values`` and the reason in ``errors``; the other clips are scored.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """``values``: float64 (B,), NaN where scoring failed. ``errors``: None or a message per clip."""

    values: np.ndarray
    errors: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


class Verifier(ABC):
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    value_range: ClassVar[tuple[float | None, float | None]] = (None, None)
    #: True when the verifier needs nothing but the rendered media (no weights).
    needs_weights: ClassVar[bool] = False

    @abstractmethod
    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        """Reward of one clip. Raise on failure; never return a placeholder."""

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        """Batched scoring; the default loops over ``score_clip``. Raising here triggers a per-clip retry."""
        return [self.score_clip(c, p) for c, p in zip(clips, prompts)]

    def check_ready(self) -> None:
        """Raise MissingWeightsError (or similar) before any generation starts if the verifier cannot run."""

    def score(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> ScoreResult:
        if len(clips) != len(prompts):
            raise ValueError(f"{self.name}: {len(clips)} clips but {len(prompts)} prompts")
        n = len(clips)
        values = np.full(n, np.nan, dtype=np.float64)
        errors: list[str | None] = [None] * n
        try:
            batch = list(self.score_clips(clips, prompts))
            if len(batch) != n:
                raise RuntimeError(f"returned {len(batch)} values for {n} clips")
            for i, v in enumerate(batch):
                values[i] = float(v)
        except Exception as exc:  # fall back to one clip at a time
            log.warning("%s: batch scoring failed (%s); retrying clip by clip", self.name, exc)
            for i, (c, p) in enumerate(zip(clips, prompts)):
                try:
                    values[i] = float(self.score_clip(c, p))
                except Exception as e:  # noqa: BLE001 - recorded as an error row
                    values[i] = np.nan
                    errors[i] = f"{type(e).__name__}: {e}"
        for i in range(n):
            if errors[i] is None and not math.isfinite(values[i]):
                errors[i] = f"non-finite score {values[i]!r}"
                values[i] = np.nan
        return ScoreResult(values=values, errors=errors)


def get_verifier(name: str, **params) -> Verifier:
    from avits_core.registry import VERIFIERS

    return VERIFIERS.create(name, **params)
