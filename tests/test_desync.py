"""DeSync (Synchformer audio-video offset): policies, preprocessing, model structure, weights, verifier.

A tiny random Synchformer (tests/tiny_synchformer.py) stands in for the 950 MB published weights;
structure facts of the real model are checked on the meta device (no memory, no download).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from avits_core.errors import ConfigError, MissingWeightsError  # noqa: E402
from avits_core.media import AVClip  # noqa: E402
from avits_core.prompts import Prompt  # noqa: E402
from avits_core.verifiers.synchformer.windows import (  # noqa: E402
    ClipTooShortError,
    javisbench_windows,
    plan_windows,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_synchformer import build_tiny_synchformer, tiny_model  # noqa: E402


def _clip(seconds: float, fps: float = 12.0, sr: int = 16000, seed: int = 0, size: int = 48) -> AVClip:
    rng = np.random.default_rng(seed)
    t = int(round(seconds * fps))
    video = rng.integers(0, 256, (t, size, size + 16, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(int(round(seconds * sr)))).astype(np.float32)
    return AVClip(video, fps, audio, sr)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return build_tiny_synchformer(tmp_path_factory.mktemp("synchformer") / "tiny_synchformer.pth")


# ------------------------------------------------------------------------------------------ windows
FIRST = tuple(range(14))


@pytest.mark.parametrize("seconds,segments,windows", [
    (4.8, 14, [FIRST, FIRST]),
    (8.0, 24, [FIRST, tuple(range(10, 24))]),
    (10.0, 30, [FIRST, tuple(range(16, 30))]),
])
def test_av_benchmark_plans(seconds, segments, windows):
    n25, n16 = int(round(seconds * 25)), int(round(seconds * 16000))
    p = plan_windows("av_benchmark", n25, n16, None)
    assert (p.video_segments, p.audio_segments) == (segments, segments)
    assert (p.video_frames, p.audio_samples) == (n25, n16)
    assert [w[0] for w in p.windows] == windows and [w[1] for w in p.windows] == windows


@pytest.mark.parametrize("seconds", [2.0, 4.0, 4.79])
def test_av_benchmark_needs_one_full_window(seconds):
    with pytest.raises(ClipTooShortError, match="av_benchmark.*4.8 s"):
        plan_windows("av_benchmark", int(seconds * 25), int(seconds * 16000), None)


def test_av_benchmark_with_max_length_cuts_and_requires_it():
    p = plan_windows("av_benchmark", 250, 160000, 8.0)  # a 10 s clip evaluated on its first 8 s
    assert (p.video_frames, p.audio_samples, p.video_segments) == (200, 128000, 24)
    with pytest.raises(ClipTooShortError, match="max_length_s=8"):
        plan_windows("av_benchmark", 150, 96000, 8.0)  # 6 s < 8 s: upstream's "too short"


TILE_11 = tuple(range(11)) + (0, 1, 2)


@pytest.mark.parametrize("seconds", [2.0, 4.0, 4.8, 8.0, 10.0])
def test_javisbench_default_reads_4s_padded_or_cut(seconds):
    n25, n16 = int(round(seconds * 25)), int(round(seconds * 16000))
    p = plan_windows("javisbench", n25, n16, 4.0)
    assert (p.video_frames, p.audio_samples, p.video_segments, p.audio_segments) == (100, 64000, 11, 11)
    assert p.windows == ((TILE_11, TILE_11),)
    assert p.video_pad == max(0, 100 - n25) and p.audio_pad == max(0, 64000 - n16)


@pytest.mark.parametrize("length,segments,windows", [
    (8.0, 24, [FIRST, tuple(range(10, 24))]),
    (10.0, 30, [FIRST, tuple(range(14, 28)), tuple(range(16, 30))]),
    (2.0, 5, [(0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3)]),
    (4.8, 14, [FIRST]),
    (0.64, 1, [(0,) * 14]),
])
def test_javisbench_windows_for_other_lengths(length, segments, windows):
    for seconds in (2.0, 4.0, 4.8, 8.0, 10.0):  # the clip length changes only the padding
        p = plan_windows("javisbench", int(round(seconds * 25)), int(round(seconds * 16000)), length)
        assert p.video_segments == p.audio_segments == segments
        assert [w[0] for w in p.windows] == windows


def test_javisbench_windows_tile_in_order():
    assert javisbench_windows(3) == ((0, 1, 2) * 4 + (0, 1),)
    assert javisbench_windows(28) == (FIRST, tuple(range(14, 28)))


def test_javisbench_needs_one_real_segment():
    with pytest.raises(ClipTooShortError, match="javisbench.*one segment"):
        plan_windows("javisbench", 15, 16000, 4.0)


def test_verifier_plans_real_clips_at_other_rates():
    from avits_core.verifiers.synchformer import DeSync

    v = DeSync(policy="av_benchmark", model_path="unused.pth")
    p = v.plan(_clip(8.0, fps=24.0, sr=24000))
    assert (p.video_frames, p.audio_samples, p.video_segments) == (200, 128000, 24)
    # 2 s at 12 fps: 24 frames -> 50 frames at 25 fps, padded to 100 for javisbench
    p = DeSync(policy="javisbench", model_path="unused.pth").plan(_clip(2.0))
    assert (p.video_frames, p.video_pad, p.audio_pad) == (100, 50, 32000)


# ---------------------------------------------------------------------------------- preprocessing
def test_log_mel_matches_librosa_htk_no_norm_reflect():
    librosa = pytest.importorskip("librosa")
    from avits_core.verifiers.synchformer.audio import log_mel

    rng = np.random.default_rng(3)
    t = np.arange(10240) / 16000.0
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3150 * t)
            + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = log_mel(torch.from_numpy(wave)[None], 128)[0].numpy()
    ref = librosa.feature.melspectrogram(y=wave.astype(np.float64), sr=16000, n_fft=1024, hop_length=160,
                                         win_length=400, window="hann", center=True, pad_mode="reflect",
                                         power=2.0, n_mels=128, fmin=0.0, fmax=8000.0, htk=True, norm=None)
    ref = np.log(ref + 1e-6)
    assert ours.shape == ref.shape == (128, 65)
    assert np.max(np.abs(ours - ref)) < 1e-5


def test_audio_input_pads_in_log_domain_then_normalises():
    from avits_core.verifiers.synchformer.audio import MEL_MEAN, MEL_STD, audio_input

    x = audio_input(np.zeros(16000, dtype=np.float32), 16000, 32)
    assert x.shape == (2, 32, 66)  # (16000 - 10240) // 5120 + 1 segments
    silent = (np.log(1e-6) - MEL_MEAN) / (2 * MEL_STD)
    assert torch.allclose(x[..., :65], torch.full_like(x[..., :65], silent), atol=1e-5)
    assert torch.allclose(x[..., 65], torch.full_like(x[..., 65], -MEL_MEAN / (2 * MEL_STD)))


@pytest.mark.parametrize("n,fps", [(24, 12.0), (121, 24.0), (30, 30.0), (50, 25.0), (17, 7.5)])
def test_fps_resampling_matches_ffmpeg_fps_filter(n, fps):
    """Oracle: FFmpeg's own fps filter (through PyAV) on frames whose grey level is their index."""
    av = pytest.importorskip("av")
    from fractions import Fraction

    from avits_core.verifiers.synchformer.video import fps_resample_indices

    rate = Fraction(fps).limit_denominator(1000)
    graph = av.filter.Graph()
    src = graph.add_buffer(width=16, height=16, format="gray", time_base=1 / rate)
    fpsf = graph.add("fps", "fps=25")
    sink = graph.add("buffersink")
    src.link_to(fpsf)
    fpsf.link_to(sink)
    graph.configure()
    got = []

    def drain():
        while True:
            try:
                got.append(int(graph.pull().to_ndarray()[0, 0]))
            except (av.BlockingIOError, av.EOFError):
                return

    for i in range(n):
        f = av.VideoFrame.from_ndarray(np.full((16, 16), i, dtype=np.uint8), format="gray")
        f.pts, f.time_base = i, 1 / rate
        try:
            f.duration = 1
        except AttributeError:  # older PyAV
            pass
        src.push(f)
        drain()
    src.push(None)
    drain()
    assert fps_resample_indices(n, fps).tolist() == got


def test_resize_crop_bicubic_antialias_and_normalise():
    from avits_core.verifiers.synchformer.video import normalise, resize_crop, video_input

    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    out = resize_crop(frames, 64)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 64, 64)
    # the shorter side goes to 64: 90x160 -> 64x113, then columns 24..88 (round(49 / 2) = 24)
    full = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), size=(64, 113),
                                           mode="bicubic", antialias=True, align_corners=False)
    assert torch.equal(out, full[:, :, :, 24:88])
    assert normalise(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
    # JavisBench zero padding: missing frames are black (-1); 2 s at 12 fps padded to 4 s at 25 fps
    clip = _clip(2.0)
    x = video_input(clip.video, clip.fps, 100, 32)
    assert x.shape == (11, 3, 16, 32, 32)
    assert torch.all(x[-1] == -1.0) and not torch.all(x[0] == -1.0)
    assert torch.equal(x[1, :, 0], x[0, :, 8])  # stride 8


# -------------------------------------------------------------------------------- model structure
def test_published_architecture_key_and_parameter_counts():
    from avits_core.verifiers.synchformer.model import Synchformer, published_state_dict

    with torch.device("meta"):
        model = Synchformer()
    sd = published_state_dict(model)
    assert len(sd) == 513
    count = lambda prefix: sum(v.numel() for k, v in sd.items() if k.startswith(prefix))  # noqa: E731
    assert round(count("") / 1e6, 1) == 237.5
    assert round(count("vfeat_extractor.") / 1e6, 1) == 122.4
    assert round(count("afeat_extractor.") / 1e6, 1) == 92.4
    assert round(count("transformer.") / 1e6, 1) == 21.4
    assert tuple(sd["vfeat_extractor.pos_embed"].shape) == (1, 197, 768)
    assert tuple(sd["vfeat_extractor.temp_embed"].shape) == (1, 8, 768)
    assert tuple(sd["afeat_extractor.ast.embeddings.position_embeddings"].shape) == (1, 74, 768)
    assert tuple(sd["transformer.pos_emb_cfg.pos_emb"].shape) == (1, 198, 768)
    assert tuple(sd["transformer.off_head.weight"].shape) == (21, 768)
    assert "afeat_extractor.ast.encoder.layer.11.attention.attention.query.weight" in sd


def test_ast_key_remap_on_a_synthetic_state_dict():
    from avits_core.verifiers.synchformer.model import remap_ast_keys

    p = "afeat_extractor.ast."
    sd = {f"{p}encoder.layer.3.attention.attention.query.weight": 1,
          f"{p}encoder.layer.3.attention.attention.key.bias": 2,
          f"{p}encoder.layer.3.attention.attention.value.weight": 3,
          f"{p}encoder.layer.3.attention.output.dense.weight": 4,
          f"{p}encoder.layer.3.intermediate.dense.bias": 5,
          f"{p}encoder.layer.10.output.dense.weight": 6,
          f"{p}encoder.layer.3.layernorm_before.weight": 7,
          f"{p}embeddings.position_embeddings": 8,
          f"{p}layernorm.bias": 9,
          "afeat_extractor.freq_attn_agg.linear1.weight": 10,
          "vfeat_extractor.blocks.0.attn.qkv.weight": 11}
    assert remap_ast_keys(sd, new_naming=True) == {
        f"{p}layers.3.attention.q_proj.weight": 1, f"{p}layers.3.attention.k_proj.bias": 2,
        f"{p}layers.3.attention.v_proj.weight": 3, f"{p}layers.3.attention.o_proj.weight": 4,
        f"{p}layers.3.mlp.fc1.bias": 5, f"{p}layers.10.mlp.fc2.weight": 6,
        f"{p}layers.3.layernorm_before.weight": 7, f"{p}embeddings.position_embeddings": 8,
        f"{p}layernorm.bias": 9, "afeat_extractor.freq_attn_agg.linear1.weight": 10,
        "vfeat_extractor.blocks.0.attn.qkv.weight": 11}
    assert remap_ast_keys(sd, new_naming=False) == sd


def _masked_reference(attn, x, frames, over):
    """Divided attention written as full attention with a mask (an independent formulation)."""
    n, length, dim = x.shape
    h, d = attn.heads, dim // attn.heads
    q, k, v = (t.reshape(n, length, h, d).transpose(1, 2) for t in attn.qkv(x).chunk(3, dim=-1))
    p = (length - 1) // frames
    f_idx = torch.cat([torch.tensor([-1]), torch.arange(frames).repeat_interleave(p)])
    s_idx = torch.cat([torch.tensor([-1]), torch.arange(p).repeat(frames)])
    same = (s_idx[:, None] == s_idx[None, :]) if over == "time" else (f_idx[:, None] == f_idx[None, :])
    allowed = same.clone()
    allowed[:, 0] = True  # everyone sees CLS
    allowed[0, :] = True  # CLS sees everyone
    scores = (q @ k.transpose(-2, -1)) * d ** -0.5
    out = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(n, length, dim))


@pytest.mark.parametrize("over", ["time", "space"])
def test_divided_attention_equals_masked_full_attention(over):
    from avits_core.verifiers.synchformer.model import DividedAttention

    torch.manual_seed(0)
    attn = DividedAttention(16, 2)
    x = torch.randn(3, 1 + 4 * 5, 16)  # 4 time steps x 5 patches
    with torch.no_grad():
        assert torch.allclose(attn(x, 4, over), _masked_reference(attn, x, 4, over), atol=1e-5)


def test_strict_loading_names_missing_unexpected_and_misshapen_keys(tmp_path, tiny_path):
    from avits_core.verifiers.synchformer.model import SynchformerWeightsError, load_synchformer

    obj = torch.load(tiny_path, weights_only=True)
    sd = obj["state_dict"]
    sd.pop("transformer.off_head.bias")
    sd.pop("afeat_extractor.ast.encoder.layer.0.attention.attention.query.weight")
    sd["vfeat_extractor.head.weight"] = torch.zeros(2)
    sd["transformer.OFF_tok"] = torch.zeros(1, 1, 7)
    bad = tmp_path / "bad.pth"
    torch.save(obj, bad)
    with pytest.raises(SynchformerWeightsError) as err:
        load_synchformer(bad)
    msg = str(err.value)
    assert "bad.pth" in msg and "2 missing keys" in msg
    assert "transformer.off_head.bias" in msg
    assert "afeat_extractor.ast.encoder.layer.0.attention.attention.query.weight" in msg
    assert "1 unexpected keys: vfeat_extractor.head.weight" in msg
    assert "1 keys with other shapes: transformer.OFF_tok: checkpoint (1, 1, 7) vs model (1, 1, 32)" in msg
    assert isinstance(err.value, MissingWeightsError)


def test_save_load_round_trip_keeps_outputs(tiny_path):
    from avits_core.verifiers.synchformer.model import load_synchformer

    ref, loaded = tiny_model(seed=0), load_synchformer(tiny_path)
    v = torch.randn(2, 14, 8, 32)
    a = torch.randn(2, 14, 6, 32)
    seg = torch.randn(2, 3, 16, 32, 32)
    spec = torch.randn(2, 32, 66)
    with torch.no_grad():
        assert torch.equal(ref.logits(v, a), loaded.logits(v, a))
        assert torch.equal(ref.video_features(seg), loaded.video_features(seg))
        assert torch.allclose(ref.audio_features(spec), loaded.audio_features(spec), atol=1e-6)
        assert loaded.video_features(seg).shape == (2, 8, 32)
        assert loaded.audio_features(spec).shape == (2, 6, 32)
        with pytest.raises(ValueError, match="198 tokens"):
            loaded.logits(v[:, :11], a[:, :11])  # 4 s = 11 segments does not fit the head


# ----------------------------------------------------------------------------------------- verifier
def test_missing_weights_name_file_and_source(tmp_path):
    from avits_core.verifiers.base import get_verifier

    v = get_verifier("desync", model_path=str(tmp_path / "nope" / "synchformer_state_dict.pth"))
    with pytest.raises(MissingWeightsError, match=r"synchformer_state_dict\.pth.*does not exist.*MMAudio/releases"):
        v.check_ready()


def test_doctor_lists_missing_synchformer_weights(tmp_path, tiny_path):
    import yaml

    from avits_core.doctor import run_doctor

    missing = tmp_path / "ckpt" / "synchformer_state_dict.pth"
    data = dict(name="doc", output_root=str(tmp_path / "runs"), generator=dict(name="synth"),
                prompts=dict(source=["a small red ball bounces twice"]), verifiers=[dict(name="av_sync")],
                evaluation=dict(oracle=False, verifiers=[dict(name="desync", params=dict(model_path=str(missing)))]))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    lines, ok = run_doctor(cfg)
    miss = [ln for ln in lines if ln.startswith("MISSING:")]
    assert not ok and len(miss) == 1
    assert "desync" in miss[0] and str(missing) in miss[0] and "MMAudio/releases/download/v0.1" in miss[0]
    data["evaluation"]["verifiers"][0]["params"]["model_path"] = str(tiny_path)
    cfg.write_text(yaml.safe_dump(data))
    lines, ok = run_doctor(cfg)
    assert not [ln for ln in lines if ln.startswith(("MISSING:", "ERROR:"))], lines


def test_params_identity_and_direction():
    from avits_core.verifiers.synchformer import DeSync

    assert DeSync.higher_is_better is False
    assert DeSync(model_path="x").cache_version == "1+policy=av_benchmark"
    assert DeSync(policy="javisbench", model_path="x").cache_version == "1+policy=javisbench,max_length_s=4"
    assert DeSync(policy="av_benchmark", max_length_s=8, model_path="x").cache_version == \
        "1+policy=av_benchmark,max_length_s=8"
    with pytest.raises(ConfigError, match="policy"):
        DeSync(policy="mmaudio")
    with pytest.raises(ConfigError, match="4.8"):
        DeSync(policy="av_benchmark", max_length_s=4.0)
    with pytest.raises(ConfigError, match="max_length_s"):
        DeSync(policy="javisbench", max_length_s=0.5)


def test_too_short_clip_is_an_error_row_and_others_score(tiny_path):
    from avits_core.verifiers.synchformer import DeSync

    v = DeSync(policy="av_benchmark", model_path=str(tiny_path))
    res = v.score([_clip(4.0, seed=1), _clip(5.0, seed=2), _clip(0.3, seed=3)], [Prompt("p", "x")] * 3)
    assert np.isnan(res.values[0]) and "too small for desync" in res.errors[0] and "4.8" in res.errors[0]
    assert res.errors[1] is None and 0.0 <= res.values[1] <= 2.0
    assert res.errors[2] is not None
    j = DeSync(policy="javisbench", model_path=str(tiny_path))
    res = j.score([_clip(0.5, seed=3), _clip(2.0, seed=4)], [Prompt("p", "x")] * 2)
    assert "one segment" in res.errors[0] or "0.64" in res.errors[0]
    assert res.errors[1] is None


def test_value_is_mean_abs_of_argmax_offsets_and_details(tiny_path):
    from avits_core.verifiers.synchformer import DeSync

    v = DeSync(policy="javisbench", max_length_s=10.0, model_path=str(tiny_path))
    clip = _clip(10.0, seed=5)
    [(plan, logits)] = v.window_logits([clip])
    assert logits.shape == (3, 21) and len(plan.windows) == 3
    grid = np.linspace(-2.0, 2.0, 21).astype(np.float32)
    expected = float(np.mean(np.abs(grid[logits.argmax(-1).numpy()].astype(np.float64))))
    res = v.score([clip], [Prompt("p", "x")])
    assert res.values[0] == pytest.approx(expected, abs=1e-12)
    d = res.details[0]
    assert d["windows"] == 3 and d["segments"] == 30
    assert np.mean(np.abs(d["offsets_s"])) == pytest.approx(res.values[0])
    assert all(0 < p <= 1 for p in d["p_top"] + d["p_sync"])
    json.dumps(d)


@pytest.mark.parametrize("policy", ["av_benchmark", "javisbench"])
def test_batch_equals_single_clip(tiny_path, policy):
    from avits_core.verifiers.synchformer import DeSync

    clips = [_clip(s, fps=f, sr=r, seed=i) for i, (s, f, r) in enumerate([(5.0, 12, 16000), (8.0, 24, 22050), (6.0, 25, 16000)])]
    v = DeSync(policy=policy, model_path=str(tiny_path), batch_size=3, segment_batch=7)
    s = DeSync(policy=policy, model_path=str(tiny_path), batch_size=1, segment_batch=64)
    rb = v.score(clips, [Prompt("p", "x")] * 3)
    rs = [s.score([c], [Prompt("p", "x")]) for c in clips]
    assert rb.errors == [None] * 3
    assert rb.values.tolist() == [r.values[0] for r in rs]
    for db, r in zip(rb.details, rs):
        ds = r.details[0]
        assert db["offsets_s"] == ds["offsets_s"] and db["segments"] == ds["segments"]
        assert np.allclose(db["p_top"] + db["p_sync"], ds["p_top"] + ds["p_sync"], atol=1e-5)


def test_windows_gather_segment_features_as_upstream(tiny_path):
    """JavisBench 2 s: 5 segment features tiled to 14 (0..4, 0..4, 0..3), computed by hand here."""
    from avits_core.verifiers.synchformer import DeSync
    from avits_core.verifiers.synchformer.audio import audio_input
    from avits_core.verifiers.synchformer.model import load_synchformer
    from avits_core.verifiers.synchformer.video import video_input

    clip = _clip(2.0, fps=25, seed=6)
    v = DeSync(policy="javisbench", max_length_s=2.0, model_path=str(tiny_path))
    [(plan, logits)] = v.window_logits([clip])
    m = load_synchformer(tiny_path)
    with torch.no_grad():
        vf = m.video_features(video_input(clip.video, clip.fps, 50, 32))
        af = m.audio_features(audio_input(clip.audio, 32000, 32))
        assert vf.shape[0] == af.shape[0] == 5
        tile = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3]
        ref = m.logits(vf[tile][None], af[tile][None])
    assert torch.allclose(logits, ref, atol=1e-5)


# ------------------------------------------------------------------------------------ pipeline
def test_desync_as_guided_and_held_out_verifier_in_a_run(tmp_path, tiny_path):
    from avits_core import runner
    from avits_core.config import config_from_dict

    prompts = ["a red ball bounces twice with a high click", "a blue cube bounces three times with a low thud"]
    params = {"policy": "javisbench", "max_length_s": 2.0, "model_path": str(tiny_path)}
    base = dict(seed=3, output_root=str(tmp_path / "runs"), generator={"name": "synth", "params": {"num_steps": 4}},
                prompts={"source": prompts}, search={"method": "best_of_n", "n": 3})
    # held out: scored on every candidate, evaluated, never selected on
    cfg = config_from_dict(dict(base, name="heldout", verifiers=[{"name": "av_sync"}], aggregator={"name": "weighted"},
                                evaluation={"oracle": False, "verifiers": [{"name": "desync", "params": params}]}))
    ctx = runner.prepare_run(cfg)
    runner.generate_shard(ctx, ctx.prompts)
    for spec in ctx.all_verifier_specs():
        runner.score_verifier(ctx, spec)
    sid = runner.select(ctx)
    runner.evaluate(ctx, sid)
    rew = [r for r in ctx.store.read("rewards").to_pylist() if r["verifier"] == "desync"]
    assert len(rew) == 6 and all(r["status"] == "ok" for r in rew)
    assert {r["verifier_version"] for r in rew} == {"1+policy=javisbench,max_length_s=2"}
    assert all(json.loads(r["details"])["windows"] == 1 for r in rew)
    met = [m for m in ctx.store.read("metrics").to_pylist() if m["metric"] == "desync"]
    assert met and all(m["held_out"] for m in met)
    # guided: the selection takes the lowest DeSync of each prompt
    cfg = config_from_dict(dict(base, name="guided", verifiers=[{"name": "desync", "params": params}],
                                aggregator={"name": "weighted"}, evaluation={"oracle": False}))
    ctx = runner.prepare_run(cfg)
    runner.generate_shard(ctx, ctx.prompts)
    for spec in ctx.all_verifier_specs():
        runner.score_verifier(ctx, spec)
    sid = runner.select(ctx)
    rew = ctx.store.read("rewards").to_pylist()
    best = {}
    for r in sorted(rew, key=lambda r: (r["value"], r["candidate_id"])):
        best.setdefault(r["prompt_id"], r["candidate_id"])
    sel = {s["prompt_id"]: s["candidate_id"] for s in ctx.store.read("selections").to_pylist() if s["selection_id"] == sid}
    assert sel == best


# ------------------------------------------------------------------------------------------ cost
def test_cpu_cost_of_the_tiny_model(tiny_path):
    """Not a timing assertion: records seconds per clip (docs/desync.md quotes a measured run)."""
    from avits_core.verifiers.synchformer import DeSync

    v = DeSync(policy="av_benchmark", model_path=str(tiny_path))
    clip = _clip(8.0, fps=24, seed=7, size=224)
    v.score([clip], [Prompt("p", "x")])  # load
    t0 = time.perf_counter()
    res = v.score([clip], [Prompt("p", "x")])
    assert res.errors[0] is None
    print(f"tiny DeSync, 8 s 224x240 clip at 24 fps: {time.perf_counter() - t0:.3f} s")
