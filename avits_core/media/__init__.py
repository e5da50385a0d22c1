"""AVClip: one generated video with sound, plus mp4/wav I/O.

An AVClip holds
  video        uint8 array, shape (T, H, W, 3), RGB
  fps          frames per second (float)
  audio        float32 array, shape (N,), mono, nominally in [-1, 1]
  sample_rate  audio samples per second (int)
  meta         free-form dict (SynthAV puts the scene's ground truth here under "truth")

Modules, by job: ``clip`` (AVClip), ``mp4`` (write/read mp4; the encoding and timestamp decisions
are noted there), ``timing`` (frames placed by timestamps, variable frame rate -> constant rate),
``audio`` (wav files, resampling), ``video`` (the video track alone). Import the names from here.
"""

from __future__ import annotations

# The error classes live in avits_core.errors; re-exported so `from avits_core.media import MediaError` works.
from avits_core.errors import MediaError, MediaFileNotFoundError, MediaFormatError
from avits_core.media.audio import read_wav, resample, write_wav
from avits_core.media.clip import AVClip
from avits_core.media.mp4 import AAC_SAMPLE_RATES, read_mp4, read_mp4_audio, write_mp4
from avits_core.media.timing import VFR_TOLERANCE, constant_rate
from avits_core.media.video import read_video

__all__ = [
    "AAC_SAMPLE_RATES", "AVClip", "MediaError", "MediaFileNotFoundError", "MediaFormatError", "VFR_TOLERANCE",
    "constant_rate", "read_mp4", "read_mp4_audio", "read_video", "read_wav", "resample", "write_mp4", "write_wav",
]
