"""The Verifier base class: one reward model = one small class.

A verifier maps a batch of (clip, prompt) pairs to one float64 reward per clip. Subclasses set
``name``, ``version`` (bump it when the numbers change: the rewards table caches by it),
``higher_is_better`` and ``value_range`` (documented bounds; None where unbounded), and implement
``score_clip`` (or override ``score_clips`` for batched models).

``score`` never returns a silent 0.0 for a failure: a clip whose scoring raises, or yields a
non-finite value, gets NaN in ``values`` and the reason in ``errors``; the other clips are scored.

Minimum input. Each verifier declares in ``min_input`` (a :class:`MinInput`) the smallest clip it
can measure: frames, seconds of video and audio, audio sample rate, picture size, and whether it
reads the video and/or the audio at all (``modalities``). ``score`` checks every clip against it
*before* calling the model; a clip below it is an error row naming the shortfall (for example
``"too short for av_align: 3 frames < 6"``), never a number. Conditions that are not sizes
(silence, a static picture) are checked in ``check_input``, which subclasses may extend.

Identity. ``identity_params`` names the constructor parameters that change the numbers (a
``protocol``, a reward ``head``, a video ``policy``). Their non-default values are appended to the
class version in ``cache_version`` (``"2+protocol=javisbench"``), which is what the rewards table
records in ``verifier_version`` and caches by: two settings of one verifier never share a cached row.
A subclass stores each identity parameter as an attribute of the same name.

Details. ``score`` may return per-clip extra numbers (``ScoreResult.details``: a dict per clip, e.g.
the raw and normalised value of every head of a multi-head reward model); they are stored as JSON in
``rewards.details``.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MinInput:
    """The smallest clip a verifier can measure. A clip below any bound is an error row, never a value.

    ``frames``/``video_seconds`` bound the video track, ``audio_seconds``/``sample_rate`` the audio
    track, ``height``/``width`` the picture; ``modalities`` says which tracks the verifier reads
    ("video", "audio"; "text" for the prompt): bounds of a track it does not read are not checked.
    """

    frames: int = 1
    video_seconds: float = 0.0
    audio_seconds: float = 0.0
    sample_rate: int = 1
    height: int = 1
    width: int = 1
    modalities: tuple[str, ...] = ("video", "audio", "text")

    def shortfall(self, clip: AVClip) -> str | None:
        """None when ``clip`` meets every bound, else a message naming the first one it misses."""
        if "video" in self.modalities:
            t, h, w = clip.video.shape[:3]
            if t < self.frames:
                return f"{t} frames < {self.frames}"
            if clip.duration + 1e-9 < self.video_seconds:
                return f"{clip.duration:.3f} s of video < {self.video_seconds:g} s"
            if h < self.height or w < self.width:
                return f"picture {w}x{h} smaller than {self.width}x{self.height}"
        if "audio" in self.modalities:
            if clip.sample_rate < self.sample_rate:
                return f"audio sample rate {clip.sample_rate} Hz < {self.sample_rate} Hz"
            if self.audio_seconds > 0 and clip.audio_duration + 1e-9 < self.audio_seconds:
                return f"{clip.audio_duration:.3f} s of audio < {self.audio_seconds:g} s"
        return None


@dataclass
class ScoreResult:
    """``values``: float64 (B,), NaN where scoring failed. ``errors``: None or a message per clip.
    ``details``: None, or per clip a dict of extra finite numbers (stored as JSON in rewards.details)."""

    values: np.ndarray
    errors: list[str | None]
    details: list[dict[str, Any] | None] | None = None

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def each_deferring(n: int, call: Any) -> None:
    """``call(i)`` for i in 0..n-1, putting off to the end every i whose shared feature another thread is
    computing right now (:class:`avits_core.cache.deferring`), then calling those (waiting if still needed).
    ``call`` must be safe to start again: what it computed before the deferral is cached."""
    from avits_core.cache import InFlight, deferring

    later = []
    with deferring():
        for i in range(n):
            try:
                call(i)
            except InFlight:
                later.append(i)
    for i in later:  # the other thread has most likely stored them by now
        call(i)


class Verifier(ABC):
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[bool] = True
    value_range: ClassVar[tuple[float | None, float | None]] = (None, None)
    #: True when the verifier needs nothing but the rendered media (no weights).
    needs_weights: ClassVar[bool] = False
    #: The smallest clip the verifier can measure (see the module docstring).
    min_input: ClassVar[MinInput] = MinInput()
    #: Constructor parameters that change the numbers; recorded in ``cache_version``.
    identity_params: ClassVar[tuple[str, ...]] = ()
    #: Identity parameters recorded in ``cache_version`` even at their default value (a policy that a
    #: reader of the table must always see, e.g. VQAScore's ``video_policy``).
    identity_always: ClassVar[tuple[str, ...]] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the verifier reads: a subset of ("video", "audio", "text")."""
        return self.min_input.modalities

    @property
    def cache_version(self) -> str:
        """``version`` plus the non-default identity parameters: the rewards cache key and
        ``rewards.verifier_version`` (``"2"``, or ``"2+protocol=javisbench"``)."""
        return str(self.version) + self.identity_suffix()

    def identity_suffix(self) -> str:
        if not self.identity_params:
            return ""
        sig = inspect.signature(type(self).__init__).parameters
        parts = []
        for p in self.identity_params:
            value = getattr(self, p)
            default = sig[p].default if p in sig else inspect.Parameter.empty
            if p in self.identity_always or default is inspect.Parameter.empty or value != default:
                parts.append(f"{p}={value}")
        return ("+" + ",".join(parts)) if parts else ""

    def check_input(self, clip: AVClip) -> str | None:
        """None when the clip can be measured, else why not (the error row's message).

        The default checks ``min_input``; subclasses add conditions that are not sizes."""
        short = self.min_input.shortfall(clip)
        return f"input too small for {self.name}: {short}" if short else None

    def score_details(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[dict[str, Any]] | None:
        """Per-clip extra numbers of the last ``score_clips`` call (default: none). Called right after
        a successful batch; a multi-head model returns e.g. every head's raw and normalised value."""
        return None

    @abstractmethod
    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        """Reward of one clip. Raise on failure; never return a placeholder."""

    def score_clips(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> list[float]:
        """Batched scoring; the default loops over ``score_clip``. Raising here triggers a per-clip retry.

        A clip whose shared feature (:func:`avits_core.verifiers.features.shared_feature`) another thread
        is computing right now is put off to the end of the loop instead of waiting for it
        (:class:`avits_core.cache.deferring`): two verifiers that share a feature and score the same clips
        in parallel tasks then compute it for different clips, each once, rather than one task idling in
        step behind the other (issue 17: av_sync behind av_align with ``runner.workers: 2``)."""
        out: list[Any] = [None] * len(clips)

        def one(i: int) -> None:
            out[i] = self.score_clip(clips[i], prompts[i])

        each_deferring(len(clips), one)
        return out

    def check_ready(self) -> None:
        """Raise MissingWeightsError (or similar) before any generation starts if the verifier cannot run."""

    def score(self, clips: Sequence[AVClip], prompts: Sequence[Prompt]) -> ScoreResult:
        if len(clips) != len(prompts):
            raise ValueError(f"{self.name}: {len(clips)} clips but {len(prompts)} prompts")
        n = len(clips)
        values = np.full(n, np.nan, dtype=np.float64)
        errors: list[str | None] = [None] * n
        details: list[dict[str, Any] | None] = [None] * n

        def check(i: int) -> None:
            c = clips[i]
            if isinstance(c, BaseException):  # an unreadable media file handed in by the caller
                errors[i] = f"{type(c).__name__}: {c}"
                return
            try:
                errors[i] = self.check_input(c)
            except Exception as e:  # noqa: BLE001 - recorded as an error row
                errors[i] = f"{type(e).__name__}: {e}"

        each_deferring(n, check)  # input checks may use shared features too (a static picture)
        idx = [i for i in range(n) if errors[i] is None]
        if idx:
            sub_c = [clips[i] for i in idx]
            sub_p = [prompts[i] for i in idx]
            try:
                batch = list(self.score_clips(sub_c, sub_p))
                if len(batch) != len(idx):
                    raise RuntimeError(f"returned {len(batch)} values for {len(idx)} clips")
                for i, v in zip(idx, batch):
                    values[i] = float(v)
                extra = self.score_details(sub_c, sub_p)
                if extra is not None:
                    for i, d in zip(idx, extra):
                        details[i] = d
            except Exception as exc:  # fall back to one clip at a time
                log.warning("%s: batch scoring failed (%s); retrying clip by clip", self.name, exc)
                for i in idx:
                    try:
                        values[i] = float(self.score_clip(clips[i], prompts[i]))
                        extra = self.score_details([clips[i]], [prompts[i]])
                        details[i] = extra[0] if extra else None
                    except Exception as e:  # noqa: BLE001 - recorded as an error row
                        values[i] = np.nan
                        errors[i] = f"{type(e).__name__}: {e}"
        for i in range(n):
            if errors[i] is None and not math.isfinite(values[i]):
                errors[i] = f"non-finite score {values[i]!r}"
            if errors[i] is not None:
                values[i] = np.nan
                details[i] = None
        return ScoreResult(values=values, errors=errors,
                           details=details if any(d is not None for d in details) else None)


def get_verifier(name: str, **params) -> Verifier:
    from avits_core.registry import VERIFIERS

    return VERIFIERS.create(name, **params)
