"""Per-clip details come from the call, not from state an instance keeps between calls: two threads scoring
different clips with ONE instance (the scoring step runs verifiers in parallel threads and the instance
cache shares instances) each get the details of their own clips.

Thread A scores its batch and is held between ``score_clips`` and ``score_details`` (the instance's
``score_clips`` is wrapped) until thread B has scored its own batch completely; before the fix, A then read
B's details (vqascore) or none (av_align, whose per-batch dict B had reset)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from avclips import bounce_clip, jump_clip  # noqa: E402

from avits_core.media import AVClip  # noqa: E402
from avits_core.prompts import Prompt  # noqa: E402
from avits_core.verifiers.av_align import AVAlign  # noqa: E402


def _a_waits_for_b(verifier, batch_a, batch_b):
    """(A's ScoreResult, B's ScoreResult), A held after its score_clips until B's score returned."""
    real = verifier.score_clips
    a_scored, b_done = threading.Event(), threading.Event()

    def held(clips, prompts):
        out = real(clips, prompts)
        if threading.current_thread().name == "A":
            a_scored.set()
            assert b_done.wait(60)
        return out

    verifier.score_clips = held
    out: dict[str, object] = {}

    def run_a():
        out["A"] = verifier.score(*batch_a)

    def run_b():
        assert a_scored.wait(60)
        try:
            out["B"] = verifier.score(*batch_b)
        finally:
            b_done.set()

    threads = [threading.Thread(target=run_a, name="A"), threading.Thread(target=run_b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(out) == {"A", "B"}
    return out["A"], out["B"]


def test_av_align_javisbench_details_per_thread():
    v = AVAlign(protocol="javisbench")
    # JavisBench evaluator's own peak counts for these clips (tests/test_protocols.py, external oracle)
    a_clips = [bounce_clip(), jump_clip()]
    b_clips = [bounce_clip(audio_shift=0.25)]
    ra, rb = _a_waits_for_b(v, (a_clips, [Prompt("a0", "x"), Prompt("a1", "x")]), (b_clips, [Prompt("b0", "x")]))
    assert ra.errors == [None, None] and rb.errors == [None]
    assert [(d["n_audio_peaks"], d["n_video_peaks"]) for d in ra.details] == [(7, 3), (4, 3)]
    assert [(d["n_audio_peaks"], d["n_video_peaks"], d["hits"]) for d in rb.details] == [(6, 3, 0)]
    assert ra.values[0] == pytest.approx(1.4999996250000938, rel=1e-12)
    assert rb.values[0] == 0.0


def _noise_clip(seed: int, frames: int) -> AVClip:
    rng = np.random.default_rng(seed)
    return AVClip(video=rng.integers(0, 256, (frames, 40, 56, 3), dtype=np.uint8), fps=12.0,
                  audio=np.zeros(16000, np.float32), sample_rate=16000)


def test_vqascore_details_per_thread(tmp_path):
    pytest.importorskip("transformers")
    from tiny_vqascore import build_tiny_vqascore

    from avits_core.verifiers.vqascore import VQAScore

    tiny = build_tiny_vqascore(tmp_path / "clip-flant5-tiny")
    a_batch = ([_noise_clip(1, 12), _noise_clip(2, 12)], [Prompt("a0", "a dog barks"), Prompt("a1", "music")])
    b_batch = ([_noise_clip(3, 20)], [Prompt("b0", "a small red ball bounces")])
    # reference: each clip alone, one thread
    ref = VQAScore(model_path=str(tiny), video_policy="mean", frames=4)
    want = {p.prompt_id: ref.score([c], [p]) for c, p in zip(a_batch[0] + b_batch[0], a_batch[1] + b_batch[1])}

    v = VQAScore(model_path=str(tiny), video_policy="mean", frames=4)
    ra, rb = _a_waits_for_b(v, a_batch, b_batch)
    assert ra.errors == [None, None] and rb.errors == [None]
    assert [d["frame_indices"] for d in ra.details] == [[0, 3, 6, 9]] * 2
    assert [d["frame_indices"] for d in rb.details] == [[0, 5, 10, 15]]
    for res, prompts in ((ra, a_batch[1]), (rb, b_batch[1])):
        for i, p in enumerate(prompts):
            w = want[p.prompt_id]
            np.testing.assert_allclose(res.details[i]["frame_scores"], w.details[0]["frame_scores"], rtol=1e-5)
            # the details are those behind this clip's own value
            assert res.values[i] == pytest.approx(float(np.mean(res.details[i]["frame_scores"])), rel=1e-12)
            assert res.values[i] == pytest.approx(w.values[0], rel=1e-5)
