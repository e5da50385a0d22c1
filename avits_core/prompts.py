"""Prompt sets: CSV (JavisBench columns), plain text (one prompt a line), or inline lists.

A Prompt has a stable ``prompt_id`` (used as a key in every table), the ``text`` fed to the
generator and to text-conditioned verifiers, and ``meta``: every other column of the source
(for JavisBench: ``audio_text``, ``video_text``, ``cat*_ind`` / ``cat*_title``...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
