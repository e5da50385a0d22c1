"""SynthText: does the rendered clip show what the prompt asks for? (SynthAV prompts)

Input: an AVClip (uint8 frames, mono float audio) and its Prompt. The prompt is parsed with the
SynthAV grammar (``avits_core.generators.synth_world.parse_prompt``); the clip is measured from its
pixels and samples only (never latents, never ``meta["truth"]``).

Output: the fraction in [0, 1] of the measurable attributes the prompt names that the clip shows.
Measurable attributes and how they are measured:

    colour  object segmentation (below); the median RGB of the object's interior pixels -> nearest
            palette colour (Euclidean RGB)
    shape   per frame, the ratio of the object's extents along the two diagonals to its extents
            along the two axes (each extent = 98th - 2nd percentile of the pixel coordinates
            projected on that direction, so stray noise pixels barely move it); the 20 %-trimmed
            mean over frames > 1.062 -> "cube", else "ball". A disc gives 1.0, the cube mode ~1.15,
            and 1.062 is the ratio of the superellipse at the world's truth boundary (p = 2.85,
            bounding-box fill 0.87). (Decision: the bounding-box fill itself is also reported,
            ``fill``, but a few noise pixels attached to a small cube inflate its box, so the fill
            of noisy small cubes overlapped that of balls on rendered clips; the extent ratio kept a
            clear gap: cubes >= 1.09, balls <= 1.04 over 3600 rendered clips of every size, clean
            and noisy.)
    size    per frame sqrt(bbox width * bbox height) / 2 (unchanged by the area-preserving squash),
            median over frames, scaled to a 64-px frame -> nearest of small 5 / medium 8 / large 11 px
    count   the object centroid's vertical trajectory: peaks of its row coordinate (lowest points)
            found by scipy.signal.find_peaks with prominence >= max(1.5 px, 0.25 * range) that lie in
            the lower half of the range; the number of such minima of height = bounces
    pitch   sound events (below); the event power spectrum minus the noise spectrum; its peak in
            150..1500 Hz (parabolic refinement) -> nearest of 220 / 440 / 880 Hz in log frequency
    timbre  temporal envelope and harmonics: the events' median amplitude decay constant (see
            ``event_decay_s``) < 25 ms -> "click" (a short burst); otherwise, on the event spectrum,
            the odd-harmonic ratio (E(3 f0) + E(5 f0)) / E(f0), each E summed within max(35 Hz, 2 %)
            of the harmonic, > 0.04 -> "buzz" (square-ish; a square wave gives 1/9 + 1/25 = 0.15),
            else "beep" (sine)

Background (rain / wind / hum / silence) is rendered but NOT measured here (decision): the
"noisy sound" mode's broadband hiss masks the quieter textures by design, so measuring it would
count sound noise a second time; sound noise is what the ``quality`` verifier measures. A prompt
that names only a background (or nothing) has no measurable attribute: scoring raises.

Object segmentation: 3x3 box blur of each frame; background colour = the frame's per-channel
median; coarse mask = blurred pixels farther than 60 (RGB Euclidean) from the background; object
colour = per-channel median of the coarse pixels in the upper half of that distance; fine mask =
projection of each blurred pixel onto the background->object colour line > 0.5; per frame the
largest 8-connected component (>= 4 px) is the object. A clip in which no object is found in any
frame shows none of colour/shape/size/count (they count as not shown, not as an error).

Sound events: frame RMS (20 ms window, 10 ms hop); floor = 20th percentile, peak = maximum; an
event starts where the RMS rises above floor + 0.3 (peak - floor), provided peak > 1.3 floor (else
there are no events and pitch/timbre count as not shown). Each event contributes the periodogram of
a 64 ms Hann window starting 16 ms before its onset; the noise spectrum is the per-bin median of a
64 ms STFT over the whole clip divided by ln 2 (the median of an exponential variable).

Raises ``MeasurementError`` when the clip cannot be measured at all: no frames, frames smaller than
8x8, fewer than 3 frames when a count is asked, empty / non-finite / all-zero audio when pitch or
timbre is asked, or a prompt naming no measurable attribute.

Modules: ``video`` (segmentation, track, colour / shape / size / count), ``audio`` (events,
pitch, timbre); the verifier is here.
"""

from __future__ import annotations

from typing import Any

from avits_core.errors import MeasurementError  # defined there, re-exported here
from avits_core.generators.synth_world import parse_prompt
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import MinInput, Verifier
from avits_core.verifiers.synth_text.audio import (
    BUZZ_ODD_RATIO,
    CLICK_DECAY_S,
    EVENT_MIN_RATIO,
    check_audio,
    event_decay_s,
    event_onsets,
    event_spectrum,
    frame_rms,
    measure_audio,
)
from avits_core.verifiers.synth_text.video import (
    CUBE_RATIO,
    ObjectTrack,
    check_video,
    count_bounces,
    extent_ratio,
    measure_video,
    track_object,
)

__all__ = [
    "AUDIO_ATTRS", "BUZZ_ODD_RATIO", "CLICK_DECAY_S", "CUBE_RATIO", "EVENT_MIN_RATIO", "MEASURABLE", "VIDEO_ATTRS",
    "MeasurementError", "ObjectTrack", "SynthText", "check_audio", "check_video", "count_bounces", "event_decay_s",
    "event_onsets", "event_spectrum", "extent_ratio", "frame_rms", "measure_audio", "measure_video",
    "requested_attributes", "track_object",
]

MEASURABLE: tuple[str, ...] = ("colour", "shape", "size", "count", "pitch", "timbre")
VIDEO_ATTRS = ("colour", "shape", "size", "count")
AUDIO_ATTRS = ("pitch", "timbre")


def requested_attributes(prompt: Prompt) -> dict[str, Any]:
    """The measurable attributes the prompt names; raises MeasurementError when there are none."""
    named = parse_prompt(prompt.text)
    req = {k: v for k, v in named.items() if k in MEASURABLE}
    if not req:
        raise MeasurementError(
            f"prompt {prompt.prompt_id!r} names no measurable SynthAV attribute "
            f"({', '.join(MEASURABLE)}): {prompt.text!r}"
        )
    return req


class SynthText(Verifier):
    """Fraction in [0, 1] of the prompt's named attributes (colour, shape, size, count, pitch,
    timbre) that the clip's pixels and sound show; higher is better. See the module docstring."""

    name = "synth_text"
    version = "1"
    higher_is_better = True
    value_range = (0.0, 1.0)
    #: The object tracker needs 8x8 px, the pitch/timbre analysis 0.1 s of sound; counting bounces
    #: needs 3 frames (checked when the prompt names a count).
    min_input = MinInput(frames=1, audio_seconds=0.1, sample_rate=8000, height=8, width=8,
                         modalities=("video", "audio", "text"))

    def measure(self, clip: AVClip, attrs: tuple[str, ...] = MEASURABLE) -> dict[str, Any]:
        """Measured attribute values of a clip (only the channels ``attrs`` needs are analysed)."""
        out: dict[str, Any] = {}
        if any(a in VIDEO_ATTRS for a in attrs):
            out.update(measure_video(clip, need_count="count" in attrs))
        if any(a in AUDIO_ATTRS for a in attrs):
            out.update(measure_audio(clip))
        return out

    def score_clip(self, clip: AVClip, prompt: Prompt) -> float:
        req = requested_attributes(prompt)
        got = self.measure(clip, tuple(req))
        hits = sum(1 for k, v in req.items() if got.get(k) == v)
        return hits / len(req)
