"""Fréchet distance, KVD, the FVD/FAD feature plumbing and the embedding-score metrics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from avits_core.errors import MissingWeightsError
from avits_core.media import AVClip
from avits_core.metrics.embedding import embedding_scores, parse_category_indices, per_category
from avits_core.metrics.features import (
    BackboneAudioEmbedding,
    CallableAudioEmbedding,
    FeatureSet,
    I3DVideoFeatures,
    audio_features,
    fad,
    fvd,
    kvd_video,
    video_features,
)
from avits_core.metrics.frechet import (
    frechet_distance,
    frechet_distance_from_stats,
    kernel_mmd_unbiased,
    kvd,
    trace_sqrt_product,
)
from avits_core.prompts import Prompt
from avits_core.verifiers.imagebind import TinyBackbone


# ------------------------------------------------------------------------------------------------
# Fréchet distance
# ------------------------------------------------------------------------------------------------
def diag_closed_form(m1, s1, m2, s2) -> float:
    m1, s1, m2, s2 = map(np.asarray, (m1, s1, m2, s2))
    return float(np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))


def test_frechet_from_stats_matches_diagonal_closed_form():
    m1, s1 = [0.0, 1.0, -2.0], [1.0, 4.0, 0.25]
    m2, s2 = [1.0, 1.0, 0.0], [9.0, 1.0, 0.25]
    got = frechet_distance_from_stats(np.array(m1), np.diag(s1), np.array(m2), np.diag(s2))
    # 1 + 0 + 4  +  (1 + 9 - 6) + (4 + 1 - 4) + 0  = 10
    assert got == pytest.approx(10.0, abs=1e-12)
    assert got == pytest.approx(diag_closed_form(m1, s1, m2, s2), abs=1e-12)


def test_frechet_from_stats_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = a @ a.T + 0.5 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    assert trace_sqrt_product(s1, s2) == pytest.approx(trace_sqrt_product(s2, s1), rel=1e-10)


def test_frechet_on_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(1)
    m1, s1, m2, s2 = [0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [0.5, -1.0, 0.0], [1.5, 0.5, 0.5]
    a = rng.normal(m1, np.sqrt(s1), size=(40000, 3))
    b = rng.normal(m2, np.sqrt(s2), size=(40000, 3))
    expected = diag_closed_form(m1, s1, m2, s2)  # 1.25 + (0.0505 + 0.5 + 0) = 1.8005
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a[:500], b[:500]) == pytest.approx(frechet_distance(b[:500], a[:500]), rel=1e-9)


def test_frechet_is_stable_on_singular_covariances():
    rng = np.random.default_rng(2)
    # 10 samples in 64 dimensions: rank-deficient covariances (sqrtm(S1 S2) turns complex here)
    a, b = rng.standard_normal((10, 64)), rng.standard_normal((10, 64)) + 0.3
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0
    # features living in a 2-d subspace of 8 dimensions
    basis = rng.standard_normal((2, 8))
    c, e = rng.standard_normal((200, 2)) @ basis, rng.standard_normal((200, 2)) @ basis
    assert frechet_distance(c, c) == pytest.approx(0.0, abs=1e-7)
    assert frechet_distance(c, e) >= 0.0


def test_frechet_rejects_bad_input():
    ok = np.zeros((4, 3))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(ok, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 3)), ok)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((4, 3), np.nan), ok)
    with pytest.raises(ValueError, match="2-D"):
        frechet_distance(np.zeros(4), ok)


# ------------------------------------------------------------------------------------------------
# KVD
# ------------------------------------------------------------------------------------------------
def test_kernel_mmd_exact_on_hand_example():
    a, b = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    # linear kernel x*y: K_aa off-diagonal 0, K_bb off-diagonal 6, mean K_ab = (0+0+2+3)/4
    assert kernel_mmd_unbiased(a, b, degree=1, gamma=1.0, coef0=0.0) == pytest.approx(0 + 6 - 2 * 1.25)
    # default cubic kernel (x*y/1 + 1)^3: 1 + 343 - 2 * (1 + 1 + 27 + 64) / 4
    assert kernel_mmd_unbiased(a, b) == pytest.approx(1 + 343 - 2 * 23.25)
    assert kvd(a, b) == pytest.approx(297.5)


def test_kvd_same_distribution_near_zero_shift_larger():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same = kvd(a, b)
    shifted = kvd(a, b + 0.5)
    far = kvd(a, b + 1.5)
    assert abs(same) < 0.05
    assert shifted > 10 * abs(same) and far > shifted
    # subsets: the mean over subsets agrees with the full estimate on average
    assert kvd(a, b + 0.5, subset_size=100, num_subsets=50) == pytest.approx(shifted, rel=0.25)
    assert kvd(a, b, subset_size=1000) == pytest.approx(same)  # subset >= n -> the full sets (permuted)


# ------------------------------------------------------------------------------------------------
# FVD / FAD feature extractors
# ------------------------------------------------------------------------------------------------
def tiny_i3d(path):
    """A TorchScript stand-in with the StyleGAN-V I3D calling convention that reports its input:
    [min, max, T, H, W, mean of channel 0, flag rescale, flag resize, flag return_features]."""
    import torch

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            b = x.shape[0]
            stats = [x.amin(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4)),
                     torch.full((b,), float(x.shape[2])), torch.full((b,), float(x.shape[3])),
                     torch.full((b,), float(x.shape[4])), x[:, 0].mean(dim=(1, 2, 3)),
                     torch.full((b,), float(rescale)), torch.full((b,), float(resize)),
                     torch.full((b,), float(return_features))]
            return torch.stack(stats, dim=1)

    torch.jit.script(Probe()).save(str(path))
    return path


def video_clip(frames: int, value_fn=None, h: int = 24, w: int = 40) -> AVClip:
    v = np.zeros((frames, h, w, 3), np.uint8)
    for i in range(frames):
        v[i] = value_fn(i) if value_fn else (i * 10) % 256
    v[:, 0, 0, 1] = 255  # one bright pixel so the max is 255 before resizing
    v[:, 1, 1, 2] = 0
    return AVClip(v, 8.0, np.zeros(800, np.float32), 8000)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_i3d_features_preprocessing_and_name(tmp_path):
    ext = I3DVideoFeatures(tiny_i3d(tmp_path / "i3d_torchscript.pt"), num_frames=16, size=32, batch_size=2)
    ext.check_ready()
    clips = [video_clip(32), video_clip(8), video_clip(20, lambda i: 255)]
    fs = video_features(clips, ext)
    assert fs.extractor == "i3d:i3d_torchscript.pt/16f-uniform-32"
    f = fs.features
    assert f.shape == (3, 9)
    assert np.all(f[:, 0] >= -1.0) and np.all(f[:, 1] <= 1.0)
    np.testing.assert_array_equal(f[:, 2:5], [[16, 32, 32]] * 3)
    np.testing.assert_array_equal(f[:, 6:], [[0, 0, 1]] * 3)
    # uniform sampling of 32 frames: indices 1, 3, ..., 31 -> channel-0 values 10 * i / 255 in [-1, 1]
    expected = np.mean([((i * 10) % 256) / 255 * 2 - 1 for i in range(1, 32, 2)])
    assert f[0, 5] == pytest.approx(expected, abs=1e-3)
    assert f[2, 5] == pytest.approx(1.0, abs=1e-6)
    first = I3DVideoFeatures(tmp_path / "i3d_torchscript.pt", num_frames=16, size=32, sampling="first")
    expected_first = np.mean([(i * 10) / 255 * 2 - 1 for i in range(16)])
    assert first(clips[:1]).features[0, 5] == pytest.approx(expected_first, abs=1e-3)


def test_i3d_missing_file_is_a_clear_error(tmp_path):
    ext = I3DVideoFeatures(tmp_path / "absent_i3d.pt")
    with pytest.raises(MissingWeightsError, match="absent_i3d.pt"):
        ext.check_ready()


def test_fvd_kvd_fad_record_their_extractor_and_refuse_mixed_spaces():
    rng = np.random.default_rng(4)
    a = FeatureSet(rng.standard_normal((50, 4)), "i3d:x")
    b = FeatureSet(rng.standard_normal((60, 4)) + 1.0, "i3d:x")
    r = fvd(a, b)
    assert r.metric == "fvd" and r.extractor == "i3d:x" and (r.n_a, r.n_b) == (50, 60)
    assert r.value == pytest.approx(frechet_distance(a.features, b.features))
    assert r.as_row()["extractor"] == "i3d:x"
    assert kvd_video(a, b).value == pytest.approx(kernel_mmd_unbiased(a.features, b.features))
    with pytest.raises(ValueError, match="different extractors"):
        fvd(a, FeatureSet(b.features, "other"))
    feats, name = a  # a FeatureSet unpacks as (features, extractor_name)
    assert name == "i3d:x" and feats.shape == (50, 4)


def test_fad_with_configurable_audio_embeddings():
    rng = np.random.default_rng(5)
    clips = [AVClip(np.zeros((2, 8, 8, 3), np.uint8), 2.0, (0.1 * rng.standard_normal(16000)).astype(np.float32),
                    16000) for _ in range(6)]
    loud = [AVClip(c.video, c.fps, c.audio * 8, c.sample_rate) for c in clips]
    stats = CallableAudioEmbedding(
        lambda waves, srs: np.array([[np.std(w), np.mean(np.abs(w)), float(sr) / 16000] for w, sr in zip(waves, srs)]),
        name="rms3")
    ga, gb = audio_features(clips[:3], stats, batch_size=2), audio_features(clips[3:], stats)
    assert ga.extractor == "rms3" and ga.features.shape == (3, 3)
    near = fad(ga, gb).value
    far = fad(ga, audio_features(loud[3:], stats)).value
    assert far > near >= 0
    tiny = BackboneAudioEmbedding(TinyBackbone())
    ft = audio_features(clips, tiny)
    assert ft.extractor == "tiny:audio" and ft.features.shape == (6, 32)


# ------------------------------------------------------------------------------------------------
# embedding scores as metrics, per-category breakdown
# ------------------------------------------------------------------------------------------------
def test_embedding_scores_rows():
    rng = np.random.default_rng(6)
    clips = [AVClip(rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), 12.0,
                    (0.2 * rng.standard_normal(16000)).astype(np.float32), 16000) for _ in range(2)]
    prompts = [Prompt("p0", "a red ball"), Prompt("p1", "a dog barks")]
    rows = embedding_scores(clips, prompts, {"ib_tv": {"backbone": "tiny"}, "avh_score": {"backbone": "tiny"}},
                            keys=[{"candidate_id": "c0"}, {"candidate_id": "c1"}])
    assert [(r["metric"], r["prompt_id"], r["candidate_id"]) for r in rows] == [
        ("ib_tv", "p0", "c0"), ("ib_tv", "p1", "c1"), ("avh_score", "p0", "c0"), ("avh_score", "p1", "c1")]
    assert all(r["extractor"].endswith("tiny:dim=32,seed=0") and r["error"] is None for r in rows)
    assert all(-1 <= r["value"] <= 1 and r["metric_version"] == "1" for r in rows)


def test_parse_category_indices():
    assert parse_category_indices("2") == [2]
    assert parse_category_indices(3) == [3]
    assert parse_category_indices("0,1") == [0, 1]
    assert parse_category_indices("[1, 0]") == [0, 1]
    assert parse_category_indices("1;4") == [1, 4]
    assert parse_category_indices("") == [] and parse_category_indices(None) == []
    assert parse_category_indices(float("nan")) == []
    with pytest.raises(ValueError, match="cat2_ind"):
        parse_category_indices("sound", prompt_id="p9", column="cat2_ind")


def test_per_category_breakdown():
    prompts = [
        Prompt("a", "t", {"cat0_ind": "0", "cat0_title": "Natural Scenario", "cat2_ind": "0,1",
                          "cat2_title": "Ambient Sounds, Musical Sounds"}),
        Prompt("b", "t", {"cat0_ind": "1", "cat0_title": "Urban Scenario", "cat2_ind": "1"}),
        Prompt("c", "t", {"cat0_ind": "0", "cat0_title": "Natural Scenario", "cat2_ind": ""}),
    ]
    rows = [
        {"prompt_id": "a", "metric": "clip", "value": 0.2},
        {"prompt_id": "b", "metric": "clip", "value": 0.4},
        {"prompt_id": "c", "metric": "clip", "value": 0.6},
        {"prompt_id": "a", "metric": "clap", "value": float("nan")},
        {"prompt_id": "c", "metric": "clap", "value": 0.1},
    ]
    out = {(r["metric"], r["aspect"], r["category"]): r for r in per_category(rows, prompts)}
    c00 = out[("clip", "cat0", 0)]
    assert (c00["n"], c00["label"], c00["n_failed"]) == (2, "Natural Scenario", 0)
    assert c00["mean"] == pytest.approx(0.4) and c00["std"] == pytest.approx(np.std([0.2, 0.6], ddof=1))
    assert out[("clip", "cat0", 1)]["mean"] == pytest.approx(0.4) and np.isnan(out[("clip", "cat0", 1)]["std"])
    assert out[("clip", "cat2", 0)]["label"] == "Ambient Sounds" and out[("clip", "cat2", 0)]["n"] == 1
    c21 = out[("clip", "cat2", 1)]  # prompts a (multi-label) and b
    assert c21["n"] == 2 and c21["mean"] == pytest.approx(0.3) and c21["label"] == "Musical Sounds"
    clap00 = out[("clap", "cat0", 0)]
    assert (clap00["n"], clap00["n_failed"]) == (1, 1) and clap00["mean"] == pytest.approx(0.1)
    assert ("clip", "cat2", 2) not in out
    with pytest.raises(ValueError, match="zzz"):
        per_category([{"prompt_id": "zzz", "metric": "clip", "value": 1.0}], prompts)
