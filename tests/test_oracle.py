"""Oracle metrics from SynthAV ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avits_core.errors import ConfigError
from avits_core.generators.base import Latents
from avits_core.generators.synth import SynthAVGenerator
from avits_core.generators.synth_world import VIDEO_DIM, parse_prompt, scene_spec
from avits_core.metrics.oracle import ORACLE_METRICS, oracle_metrics
from avits_core.prompts import Prompt

TEXT = "a small red ball bounces three times with a high click over rain"


def truth(**changes) -> dict:
    spec = scene_spec(TEXT)
    t = {k: spec[k] for k in ("size", "colour", "shape", "count", "pitch", "timbre", "background")}
    t.update(audio_offset_s=0.0, picture_noise=0.02, sound_noise=0.03, requested=parse_prompt(TEXT), spec=spec,
             fps=12.0)
    t.update(changes)
    return t


def test_registry_of_metrics_matches_output():
    assert set(ORACLE_METRICS) == set(oracle_metrics(truth()))
    for info in ORACLE_METRICS.values():
        assert set(info) == {"higher_is_better", "unit", "description"}
    assert ORACLE_METRICS["sync_error_ms"]["higher_is_better"] is False
    assert ORACLE_METRICS["noise_level"]["higher_is_better"] is False
    assert ORACLE_METRICS["attribute_accuracy"]["higher_is_better"] is True


def test_faithful_truth():
    m = oracle_metrics(truth(audio_offset_s=-0.012))
    assert m == pytest.approx({"sync_error_ms": 12.0, "attribute_accuracy": 1.0, "noise_level": 0.025,
                               "bounce_count_correct": 1.0, "faithful": 1.0})


@pytest.mark.parametrize(
    "changes, expect",
    [
        ({"audio_offset_s": 0.25}, {"sync_error_ms": 250.0, "attribute_accuracy": 1.0, "faithful": 0.0}),
        ({"audio_offset_s": -0.04}, {"sync_error_ms": 40.0, "faithful": 1.0}),  # < half a frame (41.7 ms)
        ({"audio_offset_s": -0.05}, {"sync_error_ms": 50.0, "faithful": 0.0}),
        ({"colour": "blue"}, {"attribute_accuracy": 6 / 7, "bounce_count_correct": 1.0, "faithful": 0.0}),
        ({"count": 4}, {"attribute_accuracy": 6 / 7, "bounce_count_correct": 0.0}),
        ({"pitch": "low", "timbre": "beep"}, {"attribute_accuracy": 5 / 7}),
        ({"picture_noise": 0.98}, {"noise_level": 0.505, "attribute_accuracy": 1.0, "faithful": 0.0}),
        ({"sound_noise": 0.97, "picture_noise": 0.99}, {"noise_level": 0.98}),
    ],
)
def test_corrupted_truths(changes, expect):
    m = oracle_metrics(truth(**changes))
    for k, v in expect.items():
        assert m[k] == pytest.approx(v), k


def test_unnamed_attributes_compare_with_the_intended_scene():
    text = "something happens"
    spec = scene_spec(text)
    base = {k: spec[k] for k in ("size", "colour", "shape", "count", "pitch", "timbre", "background")}
    t = {**base, "audio_offset_s": 0.0, "picture_noise": 0.0, "sound_noise": 0.0, "requested": {}, "spec": spec}
    assert oracle_metrics(t)["attribute_accuracy"] == 1.0
    wrong = 1 + spec["count"] % 4
    m = oracle_metrics({**t, "count": wrong})
    assert m["bounce_count_correct"] == 0.0 and m["attribute_accuracy"] == pytest.approx(6 / 7)
    # only the colour is named: the count is judged against the intended scene, accuracy on colour only
    t2 = {**t, "requested": {"colour": spec["colour"]}, "count": wrong}
    m2 = oracle_metrics(t2)
    assert m2["attribute_accuracy"] == 1.0 and m2["bounce_count_correct"] == 0.0


def test_malformed_truth_raises():
    with pytest.raises(ConfigError, match="audio_offset_s"):
        oracle_metrics({k: v for k, v in truth().items() if k != "audio_offset_s"})
    with pytest.raises(ConfigError, match="picture_noise"):
        oracle_metrics(truth(picture_noise="loud"))
    with pytest.raises(ConfigError, match="requested"):
        oracle_metrics(truth(requested=None))
    with pytest.raises(ConfigError):
        oracle_metrics(["not", "a", "dict"])  # type: ignore[arg-type]


def test_on_generated_clips():
    gen = SynthAVGenerator()
    p = Prompt("p", TEXT)
    mix = gen.mixture(p)
    x = torch.from_numpy(mix.means.astype(np.float32))
    lat = Latents(video=x[:, :VIDEO_DIM].clone(), audio=x[:, VIDEO_DIM:].clone(), step=20,
                  seeds=list(range(len(mix.names))))
    for clip, name in zip(gen.decode(lat, p), mix.names):
        m = oracle_metrics(clip.meta["truth"])
        assert (m["faithful"] == 1.0) == (name == "faithful"), name
        if name == "av_offset":
            assert m["sync_error_ms"] == pytest.approx(250.0, abs=0.1)
        if name in ("missing_bounce", "extra_bounce"):
            assert m["bounce_count_correct"] == 0.0
        if name.startswith("noisy"):
            assert m["noise_level"] > 0.45
