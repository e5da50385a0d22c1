"""VBench temporal flickering: hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from avits_core.media import AVClip
from avits_core.metrics.flicker import TemporalFlickering, temporal_flickering
from avits_core.prompts import Prompt


def _video(*frames: np.ndarray) -> np.ndarray:
    return np.stack(frames).astype(np.uint8)


def _const(v: int, h: int = 4, w: int = 6) -> np.ndarray:
    return np.full((h, w, 3), v, dtype=np.uint8)


def test_hand_computed_values():
    assert temporal_flickering(_video(_const(7), _const(7), _const(7))) == 1.0  # nothing changes
    assert temporal_flickering(_video(_const(0), _const(255))) == 0.0  # every value jumps by 255
    # pair MAEs 10 and 0 -> mean 5 -> (255 - 5) / 255
    assert temporal_flickering(_video(_const(0), _const(10), _const(10))) == pytest.approx(250 / 255, abs=1e-15)
    # the left half of a 4x6 frame goes 0 -> 100 in one channel only: MAE = 100 * 12 / 72
    b = _const(0)
    b[:, :3, 1] = 100
    got = temporal_flickering(_video(_const(0), b))
    assert got == pytest.approx((255 - 100 * 12 / 72) / 255, abs=1e-8)
    assert got == (255 - float(np.float32(1200) / np.float32(72))) / 255  # VBench's float32 mean, exactly
    # flicker back and forth costs the same each pair; a one-off change is diluted by static pairs
    assert temporal_flickering(_video(_const(0), _const(51), _const(0), _const(51))) == pytest.approx(204 / 255)
    assert temporal_flickering(_video(_const(0), _const(51), _const(51), _const(51))) == pytest.approx(238 / 255)


def test_verifier_rows_and_min_input():
    ok = AVClip(_video(_const(0), _const(10), _const(10)), 12.0, np.zeros(100, np.float32), 16000)
    one = AVClip(_video(_const(0)), 12.0, np.zeros(100, np.float32), 16000)
    res = TemporalFlickering().score([ok, one], [Prompt("a", "x"), Prompt("b", "y")])
    assert res.values[0] == pytest.approx(250 / 255)
    assert res.errors[0] is None
    assert np.isnan(res.values[1]) and "frames" in res.errors[1]


def test_registered():
    from avits_core.registry import VERIFIERS

    assert isinstance(VERIFIERS.create("temporal_flickering"), TemporalFlickering)
