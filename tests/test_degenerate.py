"""Every registered verifier on a catalogue of degenerate clips (issue 10, case 2).

For each (verifier, clip) the expected outcome is stated below: ``OK`` (a finite value with no
error) or an error row whose message contains the given text. Never a number on unmeasurable input.
Learned verifiers run on the tiny random models of tests/tiny_models.py (CLIP, CLAP) and on
ImageBind's ``tiny`` backbone; ImageBind's own floors (its 2 s fbank windows) are checked separately
against the real backbone class, which needs no weights to refuse a clip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from avclips import EVENTS, jump_clip, midframe
from avits_core.errors import MediaFileNotFoundError
from avits_core.media import AVClip, read_mp4, resample
from avits_core.prompts import Prompt
from avits_core.registry import VERIFIERS

OK = "OK"
PROMPT = Prompt("p", "a yellow cube jumps three times with a click")


def _catalogue() -> dict[str, AVClip]:
    g = jump_clip()  # 2 s, 12 fps, 64x64, 16 kHz, clicks in sync with the jumps at EVENTS
    v, a, fps, sr = g.video, g.audio, g.fps, g.sample_rate

    def clip(video=v, audio=a, rate=sr) -> AVClip:
        return AVClip(np.ascontiguousarray(video), fps, np.asarray(audio, np.float32), rate)

    k = int(round(EVENTS[0] * fps + 0.5))  # the first jump is between frames k-1 and k
    assert EVENTS[0] == midframe(k)
    click = int(EVENTS[0] * sr)

    def span(f0: int, f1: int) -> np.ndarray:  # the audio of frames [f0, f1), click included
        return a[int(f0 * sr / fps): int(f1 * sr / fps)]

    cat = {
        "reference": clip(),
        "one_frame": clip(v[k - 1:k], span(k - 1, k)),
        "three_frames_in_sync": clip(v[k - 1:k + 2], span(k - 1, k + 2)),  # 0.25 s, the example
        "audio_10ms": clip(v, a[: int(0.010 * sr)]),
        "audio_23ms": clip(v, a[click:click + int(0.023 * sr)]),  # 23 ms: the click
        "silence": clip(v, np.zeros_like(a)),
        "static_video": clip(np.repeat(v[:1], len(v), axis=0)),
        "all_black": clip(np.zeros_like(v)),
        "stereo_downmix": clip(v, np.stack([a, 0.5 * a]).mean(axis=0)),  # what read_mp4 does to stereo
        "stereo_antiphase": clip(v, np.stack([a, -a]).mean(axis=0)),  # L = -R downmixes to silence
        "rate_8k": clip(v, resample(a, sr, 8000), 8000),
        "rate_4k": clip(v, resample(a, sr, 4000), 4000),
        "odd_size_63x37": clip(v[:, :37, :63]),
        "tiny_picture_6x6": clip(v[:, 20:26, 20:26]),
        "audio_longer_4s": clip(v, np.concatenate([a, a])),
        "audio_shorter_0.6s": clip(v, a[: int(0.6 * sr)]),
    }
    assert np.max(np.abs(cat["audio_23ms"].audio)) > 0.1 and np.max(np.abs(cat["one_frame"].audio)) > 0.1
    return cat


SILENT = "audio is silent"
STATIC = "video is static"

#: The expected outcome of every (verifier, clip) that is not OK.
EXPECTED: dict[str, dict[str, str]] = {
    "av_align": {
        "one_frame": "1 frames < 6", "three_frames_in_sync": "3 frames < 6",
        "audio_10ms": "0.010 s of audio < 0.5 s", "audio_23ms": "0.023 s of audio < 0.5 s",
        "silence": SILENT, "stereo_antiphase": SILENT, "static_video": STATIC, "all_black": STATIC,
        "rate_4k": "4000 Hz < 8000 Hz", "tiny_picture_6x6": "picture 6x6 smaller than 16x16",
    },
    "av_sync": {
        "one_frame": "1 frames < 6", "three_frames_in_sync": "3 frames < 6",
        "audio_10ms": "0.010 s of audio < 1 s", "audio_23ms": "0.023 s of audio < 1 s",
        "silence": SILENT, "stereo_antiphase": SILENT, "static_video": STATIC, "all_black": STATIC,
        "rate_4k": "4000 Hz < 8000 Hz", "tiny_picture_6x6": "picture 6x6 smaller than 16x16",
        "audio_shorter_0.6s": "0.600 s of audio < 1 s",
    },
    "quality": {  # a black or static picture has no noise: a real 1.0 for the picture part
        "audio_10ms": "0.010 s of audio < 0.02 s", "silence": "digital silence", "stereo_antiphase": "digital silence",
        "rate_4k": "4000 Hz < 8000 Hz",
    },
    "synth_text": {  # all-black: the cube is not found, a real low score
        "one_frame": "0.083 s of audio < 0.1 s", "audio_10ms": "0.010 s of audio < 0.1 s",
        "audio_23ms": "0.023 s of audio < 0.1 s",  # 3 frames: one jump is seen, a real count mismatch
        "silence": "digital silence", "stereo_antiphase": "digital silence", "rate_4k": "4000 Hz < 8000 Hz",
        "tiny_picture_6x6": "picture 6x6 smaller than 8x8",
    },
    "temporal_flickering": {"one_frame": "1 frames < 2"},  # video only: audio cases are OK
    "clip": {"tiny_picture_6x6": "picture 6x6 smaller than 32x32"},  # frames only; black is a picture
    "clap": {  # tiny CLAP: 1 s window -> 0.1 s floor (LAION CLAP: 10 s -> 1 s)
        "one_frame": "0.083 s of audio < 0.1 s", "audio_10ms": "0.010 s of audio < 0.1 s",
        "audio_23ms": "0.023 s of audio < 0.1 s", "silence": SILENT, "stereo_antiphase": SILENT,
        "rate_4k": "4000 Hz < 8000 Hz",
    },
    "ib_tv": {},  # tiny backbone: one frame, any picture
    "vqascore": {"one_frame": "1 frames < 8", "three_frames_in_sync": "3 frames < 8"},  # 8 frames, any size
    "desync": {k: f"{s} < 0.64 s" for k, s in (  # javisbench: one 0.64 s segment of real content; pads the rest
        ("one_frame", "0.083 s of video"), ("three_frames_in_sync", "0.250 s of video"), ("audio_10ms", "0.010 s of audio"),
        ("audio_23ms", "0.023 s of audio"), ("audio_shorter_0.6s", "0.600 s of audio"))},
    "videoreward": {"one_frame": "1 frames < 2"},  # 2 frames; small pictures are upscaled, audio not read
}
_TINY_IB_AUDIO = {"audio_10ms": "0.010 s of audio < 0.025 s", "silence": SILENT, "stereo_antiphase": SILENT}
for _n in ("ib_ta", "ib_av", "avh_score", "javis_score"):
    EXPECTED[_n] = dict(_TINY_IB_AUDIO)
# the tiny backbone's floor is one 25 ms fbank frame: 23 ms of audio is no frame at all
for _n in ("ib_ta", "ib_av", "avh_score", "javis_score"):
    EXPECTED[_n]["audio_23ms"] = "0.023 s of audio < 0.025 s"


@pytest.fixture(scope="module")
def catalogue():
    return _catalogue()


@pytest.fixture(scope="module")
def learned_params(tmp_path_factory):
    from tiny_models import build_tiny_clap, build_tiny_clip

    root = tmp_path_factory.mktemp("tiny")
    params = {"clip": {"model_path": str(build_tiny_clip(root / "clip"))},
              "clap": {"model_path": str(build_tiny_clap(root / "clap"))}}
    for n in ("ib_tv", "ib_ta", "ib_av", "avh_score", "javis_score"):
        params[n] = {"backbone": "tiny"}
    from tiny_vqascore import build_tiny_vqascore

    params["vqascore"] = {"model_path": str(build_tiny_vqascore(root / "vqascore")), "video_policy": "tile"}
    from tiny_videoreward import build_tiny_videoreward

    params["videoreward"] = build_tiny_videoreward(root / "videoreward").params()
    from tiny_synchformer import build_tiny_synchformer

    params["desync"] = {"policy": "javisbench", "model_path": str(build_tiny_synchformer(root / "synchformer.pth"))}
    return params


def _needs_expected(name: str) -> None:
    """A verifier shipped with avits must be in EXPECTED (a new one fails here, it is not skipped); one
    registered by a test or a plugin is skipped."""
    if name in EXPECTED:
        return
    if name in VERIFIERS.builtin_names():
        pytest.fail(f"{name}: a built-in verifier with no expected outcomes here: add them to EXPECTED and its "
                    "tiny model's builder to learned_params")
    pytest.skip(f"{name}: registered by a test or a plugin, not shipped with avits")


@pytest.mark.parametrize("name", VERIFIERS.names())
def test_every_verifier_on_degenerate_clips(name, catalogue, learned_params):
    _needs_expected(name)
    verifier = VERIFIERS.create(name, **learned_params.get(name, {}))
    names = list(catalogue)
    res = verifier.score([catalogue[c] for c in names], [PROMPT] * len(names))
    got = {}
    for c, value, err in zip(names, res.values, res.errors):
        if err is None:
            assert math.isfinite(value), (name, c, value)
            got[c] = OK
        else:
            assert math.isnan(value) and err.strip(), (name, c, value, err)
            got[c] = err
    want = {c: EXPECTED[name].get(c, OK) for c in names}
    wrong = {c: (want[c], got[c]) for c in names
             if (want[c] == OK) != (got[c] == OK) or (want[c] != OK and want[c] not in got[c])}
    assert not wrong, f"{name}: expected vs got: {wrong}"
    assert got["reference"] == OK


def test_av_align_on_a_three_frame_in_sync_clip_is_an_error_row_not_zero(catalogue):
    res = VERIFIERS.create("av_align").score([catalogue["three_frames_in_sync"]], [PROMPT])
    assert not res.ok[0] and np.isnan(res.values[0])
    assert res.errors[0] == "input too small for av_align: 3 frames < 6"


def test_imagebind_floors_come_from_its_windowing_and_are_checked_before_the_model(catalogue):
    """The real ImageBind backbone (no package, no weights here): 23 ms of audio, 0.6 s of audio and
    one frame are refused by check_input before any model is loaded; a 2 s clip passes the check."""
    from avits_core.verifiers.imagebind import IB_AUDIO_SECONDS, kaldi_fbank

    # the windowing: 25 ms frames every 10 ms; 23 ms gives no frame, 1 s gives 98 of the 204 per clip
    assert kaldi_fbank(np.ones(int(0.023 * 16000), np.float32), 16000).shape[0] == 0
    assert kaldi_fbank(np.ones(int(IB_AUDIO_SECONDS * 16000), np.float32), 16000).shape[0] == 98
    clips = [catalogue["audio_23ms"], catalogue["audio_shorter_0.6s"], catalogue["one_frame"], catalogue["silence"]]
    want = {
        "ib_ta": ["0.023 s of audio < 1 s", "0.600 s of audio < 1 s", "0.083 s of audio < 1 s", SILENT],
        "ib_av": ["0.023 s of audio < 1 s", "0.600 s of audio < 1 s", "1 frames < 2", SILENT],
        "avh_score": ["0.023 s of audio < 1 s", "0.600 s of audio < 1 s", "0.083 s of audio < 1 s", SILENT],
        "javis_score": ["0.023 s of audio < 1 s", "0.600 s of audio < 1 s", "0.083 s of video < 1 s", SILENT],
        "ib_tv": [None, None, "1 frames < 2", None],
    }
    for name, msgs in want.items():
        v = VERIFIERS.create(name, backbone="imagebind", model_path="/nonexistent/imagebind_huge.pth")
        for c, m in zip(clips, msgs):
            err = v.check_input(c)
            assert (err is None) if m is None else (m in err), (name, m, err)
        assert v.check_input(catalogue["reference"]) is None
        res = v.score(clips[:3] if name != "ib_tv" else clips[2:3], [PROMPT] * (3 if name != "ib_tv" else 1))
        assert all("input too small" in e for e in res.errors), res.errors  # never reached the missing model


def test_stereo_cannot_enter_a_clip_unmixed():
    with pytest.raises(ValueError, match="mono"):
        AVClip(np.zeros((2, 8, 8, 3), np.uint8), 12.0, np.zeros((2, 100), np.float32), 16000)


def test_a_missing_media_file_is_an_error_row_for_that_candidate_only(tmp_path, catalogue):
    """What the runner hands to Verifier.score for an unreadable mp4: the exception, in the clip's place."""
    try:
        missing = read_mp4(tmp_path / "media" / "s00" / "gone.mp4")
    except MediaFileNotFoundError as exc:
        missing = exc
    res = VERIFIERS.create("quality").score([missing, catalogue["reference"]], [PROMPT, PROMPT])
    assert list(res.ok) == [False, True]
    assert res.errors[0].startswith("MediaFileNotFoundError: media file not found:") and "gone.mp4" in res.errors[0]
    assert np.isnan(res.values[0]) and 0.9 < res.values[1] <= 1.0


@pytest.mark.parametrize("name", VERIFIERS.names())
def test_scoring_in_chunks_gives_the_numbers_of_one_call(name, catalogue, learned_params):
    """The scoring step hands an event's clips to a verifier in chunks (runner.score.score_chunk_size:
    whole batches, so memory does not grow with N): every verifier must give the same values and
    errors chunk by chunk as over the whole list, and the same details (to 1e-6). Smallest chunks:
    one batch (one clip for a verifier without batches)."""
    from avits_core.runner.score import score_chunk_size

    _needs_expected(name)
    verifier = VERIFIERS.create(name, **learned_params.get(name, {}))
    clips = list(catalogue.values())
    prompts = [PROMPT] * len(clips)
    whole = verifier.score(clips, prompts)
    size = score_chunk_size(verifier, clips=1)
    assert size == max(1, getattr(verifier, "batch_size", 1) or 1)
    values, errors, details = [], [], []
    for i in range(0, len(clips), size):
        part = verifier.score(clips[i:i + size], prompts[i:i + size])
        values += list(part.values)
        errors += list(part.errors)
        details += list(part.details or [None] * len(part.values))
    np.testing.assert_array_equal(np.asarray(values), np.asarray(whole.values))
    assert errors == list(whole.errors)
    # details: desync batches its 0.64 s windows across clips, so a chunk boundary changes the batch
    # shapes of its classifier and its probabilities move in the 8th digit (its offsets do not)
    assert _close(details, list(whole.details or [None] * len(clips))), (details, whole.details)


def _close(a, b) -> bool:
    """Equal, floats to rel 1e-6 (nested dicts and lists)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def test_chunk_size_is_whole_batches():
    from avits_core.runner.score import score_chunk_size

    class V:
        batch_size = 8

    assert score_chunk_size(V(), clips=32) == 32
    assert score_chunk_size(V(), clips=20) == 16
    assert score_chunk_size(V(), clips=3) == 8
    assert score_chunk_size(object(), clips=5) == 5
