"""VQAScore (CLIP-FlanT5): frame sampling, tiling, CLIP pixels, the splice, the exact score definition,
both video policies, batching, missing files and checkpoint key errors, on a tiny random checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.vqascore import VQAScore, chat_prompt, ids_with_image
from avits_core.verifiers.vqascore import frames as fr
from avits_core.verifiers.vqascore.checkpoint import CheckpointError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_vqascore import build_tiny_vqascore  # noqa: E402

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_vqascore(tmp_path_factory.mktemp("vqascore") / "clip-flant5-tiny")


def make_clip(seed: int = 0, frames: int = 24, h: int = 40, w: int = 56) -> AVClip:
    rng = np.random.default_rng(seed)
    return AVClip(video=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8), fps=12.0,
                  audio=np.zeros(16000, np.float32), sample_rate=16000)


PROMPTS = [Prompt("p0", "a small red ball bounces three times with a high click over rain"),
           Prompt("p1", "a dog barks"), Prompt("p2", "music")]


# ------------------------------------------------------------------------------------------------
# frames, tile, pixels (no model)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total,n,expected", [
    (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
    (10, 8, [0, 1, 2, 3, 4, 5, 6, 7]),          # floor(10/8) = 1: the last two frames are never read
    (24, 8, [0, 3, 6, 9, 12, 15, 18, 21]),
    (121, 8, [0, 15, 30, 45, 60, 75, 90, 105]),  # LTX-2's 121 frames
    (49, 4, [0, 12, 24, 36]),
])
def test_frame_indices(total, n, expected):
    assert fr.frame_indices(total, n).tolist() == expected


def test_frame_indices_refuse_short_clips():
    with pytest.raises(ValueError, match="7 frames, fewer than frames=8"):
        fr.frame_indices(7, 8)


def test_tile_layout_hand_computed():
    a = np.full((2, 3, 3), 10, np.uint8)
    b = np.full((3, 2, 3), 200, np.uint8)  # taller and narrower: top-aligned on black
    c = np.full((2, 3, 3), 77, np.uint8)
    t = fr.tile_frames([a, b, c], gap=10)
    assert t.shape == (3, 3 + 10 + 2 + 10 + 3, 3)
    expected = np.zeros((3, 28, 3), np.uint8)
    expected[0:2, 0:3] = 10
    expected[0:3, 13:15] = 200
    expected[0:2, 25:28] = 77
    np.testing.assert_array_equal(t, expected)


def test_evaluator_tile_is_the_tile_after_jpeg():
    yy, xx = np.mgrid[0:32, 0:40]
    frames = [np.stack([(xx * 6 + k * 20) % 256, yy * 7, np.full_like(xx, 90 + k)], -1).astype(np.uint8) for k in range(3)]
    raw = fr.evaluator_tile(frames, jpeg=False)
    assert raw.shape == (32, 3 * 40 + 2 * 10, 3)
    jpg = fr.evaluator_tile(frames)
    assert jpg.shape == raw.shape
    diff = np.abs(jpg.astype(int) - raw.astype(int))
    assert 0 < diff.mean() < 4  # JPEG q95 changes pixels a little, not the layout


def test_pad_to_square_hand_computed():
    img = np.full((2, 4, 3), 50, np.uint8)
    colour = fr.mean_colour(fr.CLIP_MEAN)
    assert colour == (122, 116, 104)
    sq = fr.pad_to_square(img, colour)
    assert sq.shape == (4, 4, 3)
    np.testing.assert_array_equal(sq[1:3], 50)   # offset (4 - 2) // 2 = 1
    np.testing.assert_array_equal(sq[0], np.tile([122, 116, 104], (4, 1)))
    np.testing.assert_array_equal(sq[3], np.tile([122, 116, 104], (4, 1)))
    tall = fr.pad_to_square(np.full((5, 2, 3), 9, np.uint8), colour)
    np.testing.assert_array_equal(tall[:, 1:3], 9)  # offset (5 - 2) // 2 = 1
    np.testing.assert_array_equal(tall[:, 0], np.tile([122, 116, 104], (5, 1)))


@pytest.mark.parametrize("shape", [(40, 56), (61, 33), (28, 28)])
def test_clip_pixels_match_transformers_processor(shape):
    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24})
    ref = proc(Image.fromarray(img), return_tensors="np")["pixel_values"][0]
    ours = fr.clip_pixels(img, 28, 24)
    assert ours.shape == (3, 24, 24) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(40, 56), (61, 33), (30, 30), (12, 150)])
def test_clip_input_equals_pad_then_pixels(shape):
    img = np.random.default_rng(2).integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = fr.clip_pixels(fr.pad_to_square(img, (122, 116, 104)), 28, 28)
    np.testing.assert_array_equal(fr.clip_input(img, (122, 116, 104), 28, 28), want)


# ------------------------------------------------------------------------------------------------
# prompt format and tokens
# ------------------------------------------------------------------------------------------------
def test_chat_prompt_and_token_layout(tiny):
    from transformers import T5Tokenizer

    q = 'Does this figure show "a dog"? Please answer yes or no.'
    text = chat_prompt(q)
    assert text == ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the user's questions. USER: <image>\n" + q + " ASSISTANT: ")
    tok = T5Tokenizer.from_pretrained(str(tiny), local_files_only=True)
    ids = ids_with_image(text, tok)
    before, after = text.split("<image>")
    assert ids == tok(before).input_ids + [-200] + tok(after).input_ids
    k = ids.index(-200)
    assert ids[k - 1] == 1 and ids[-1] == 1  # each piece carries T5's EOS (id 1), as in t2v_metrics
    yes = tok("Yes").input_ids
    assert yes == [tok.convert_tokens_to_ids("▁Yes"), 1]  # the answer is 2 tokens: "Yes" and EOS


# ------------------------------------------------------------------------------------------------
# the model: splice and score definition
# ------------------------------------------------------------------------------------------------
def test_splice_places_image_rows_and_masks_padding(tiny):
    import torch

    model, _, _ = VQAScore(model_path=str(tiny), video_policy="tile").components()
    feats = torch.randn(2, 4, 32)
    with torch.inference_mode():
        embeds, mask = model.splice([[5, 6, -200, 7], [8, -200]], feats)
    E = model.t5.get_input_embeddings().weight
    assert embeds.shape == (2, 2 + 4 + 1, 32)
    torch.testing.assert_close(embeds[0, 0], E[5])
    torch.testing.assert_close(embeds[0, 1], E[6])
    torch.testing.assert_close(embeds[0, 2:6], feats[0])
    torch.testing.assert_close(embeds[0, 6], E[7])
    torch.testing.assert_close(embeds[1, 0], E[8])
    torch.testing.assert_close(embeds[1, 1:5], feats[1])
    assert mask.tolist() == [[1] * 7, [1] * 5 + [0, 0]]
    assert float(embeds[1, 5:].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="exactly one image placeholder"):
        model.splice([[5, 6]], feats[:1])


def test_score_is_geometric_mean_over_answer_tokens_including_eos(tiny):
    import torch

    v = VQAScore(model_path=str(tiny), video_policy="tile")
    model, tok, pre = v.components()
    clip = make_clip(3)
    _, pics = v.pictures(clip)
    px = fr.clip_pixels(fr.pad_to_square(pics[0], fr.mean_colour(pre["mean"])), pre["size"], pre["crop"])
    q_ids = ids_with_image(v.question(PROMPTS[0]), tok)
    a_ids = tok("Yes").input_ids
    pixels = torch.from_numpy(px[None])
    with torch.inference_mode():
        logits, lab = model.answer_logits(pixels, [q_ids], [a_ids])
        # hand computation from the logits: softmax, pick the label tokens, geometric mean
        p = torch.softmax(logits[0].double(), -1)
        p_yes, p_eos = float(p[0, a_ids[0]]), float(p[1, 1])
        hand = (p_yes * p_eos) ** 0.5
        # external oracle: transformers' own shifted-label cross-entropy (mean over the 2 tokens)
        embeds, mask = model.splice([q_ids], model.encode_images(pixels))
        loss = model.t5(inputs_embeds=embeds, attention_mask=mask, labels=torch.tensor([a_ids])).loss
    got = model.score(pixels, [q_ids], [a_ids])[0]
    assert got == pytest.approx(hand, rel=1e-5)
    assert got == pytest.approx(float(torch.exp(-loss)), rel=1e-5)
    assert abs(got - p_yes) > 1e-3 * p_yes  # not P("Yes") alone
    assert 0.0 < got <= 1.0
    # the verifier's value for the clip is that same number
    res = v.score([clip], [PROMPTS[0]])
    assert res.errors == [None]
    assert res.values[0] == pytest.approx(hand, rel=1e-5)


def test_mean_policy_is_mean_of_per_frame_scores(tiny):
    import torch

    v = VQAScore(model_path=str(tiny), video_policy="mean", frames=4)
    model, tok, pre = v.components()
    clip = make_clip(4, frames=12)
    res = v.score([clip], [PROMPTS[1]])
    q_ids, a_ids = ids_with_image(v.question(PROMPTS[1]), tok), tok("Yes").input_ids
    per = []
    for i in (0, 3, 6, 9):
        px = fr.clip_pixels(fr.pad_to_square(clip.video[i], (122, 116, 104)), pre["size"], pre["crop"])
        per.append(model.score(torch.from_numpy(px[None]), [q_ids], [a_ids])[0])
    assert res.values[0] == pytest.approx(float(np.mean(per)), rel=1e-5)
    assert res.details[0]["frame_indices"] == [0, 3, 6, 9]
    np.testing.assert_allclose(res.details[0]["frame_scores"], per, rtol=1e-5)


def test_policies_differ_and_are_recorded_in_cache_version(tiny):
    clips = [make_clip(s) for s in range(3)]
    tile = VQAScore(model_path=str(tiny), video_policy="tile")
    mean = VQAScore(model_path=str(tiny), video_policy="mean")
    rt, rm = tile.score(clips, PROMPTS), mean.score(clips, PROMPTS)
    assert all(e is None for e in rt.errors + rm.errors)
    assert np.all((rt.values > 0) & (rt.values <= 1)) and np.all((rm.values > 0) & (rm.values <= 1))
    assert np.all(np.abs(rt.values - rm.values) > 1e-4 * rm.values)
    assert tile.cache_version == "1+video_policy=tile"
    assert mean.cache_version == "1+video_policy=mean"
    assert VQAScore(model_path=str(tiny), video_policy="mean", frames=4).cache_version == "1+frames=4,video_policy=mean"
    q = VQAScore(model_path=str(tiny), video_policy="tile", question_template='Is "{}" shown?')
    assert q.cache_version == '1+video_policy=tile,question_template=Is "{}" shown?'
    assert "frame_scores" not in rt.details[0] and len(rm.details[0]["frame_scores"]) == 8


@pytest.mark.parametrize("policy", ["tile", "mean"])
def test_same_clip_alone_and_in_a_batch(tiny, policy):
    v = VQAScore(model_path=str(tiny), video_policy=policy, batch_size=5)
    clips = [make_clip(s, frames=16 + 4 * s) for s in range(3)]
    _, tok, _ = v.components()
    lengths = [len(ids_with_image(v.question(p), tok)) for p in PROMPTS]
    assert len(set(lengths)) == 3  # rows of different lengths: the padding and its mask matter
    batch = v.score(clips, PROMPTS).values
    for i in range(3):
        alone = v.score([clips[i]], [PROMPTS[i]]).values[0]
        assert alone == pytest.approx(batch[i], rel=1e-5)


def test_short_clip_is_an_error_row_and_others_are_scored(tiny):
    v = VQAScore(model_path=str(tiny), video_policy="tile")
    res = v.score([make_clip(0, frames=5), make_clip(1)], PROMPTS[:2])
    assert res.errors[0] == "input too small for vqascore: 5 frames < 8"
    assert np.isnan(res.values[0]) and res.errors[1] is None and 0 < res.values[1] <= 1
    v4 = VQAScore(model_path=str(tiny), video_policy="tile", frames=4)
    assert v4.score([make_clip(0, frames=5)], PROMPTS[:1]).errors == [None]


def test_cuda_oom_halves_the_batch(tiny, monkeypatch):
    import torch

    v = VQAScore(model_path=str(tiny), video_policy="mean", batch_size=8)
    clips = [make_clip(s) for s in range(2)]
    want = v.score(clips, PROMPTS[:2]).values
    model, _, _ = v.components()
    real = model.score
    sizes = []

    def flaky(px, q, a):
        sizes.append(len(q))
        if len(q) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(px, q, a)

    monkeypatch.setattr(model, "score", flaky)
    got = v.score(clips, PROMPTS[:2]).values
    assert v.batch_size == 2 and sizes[:3] == [8, 4, 2]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_params_are_validated():
    assert VQAScore(model_path="x").cache_version == "1+video_policy=tile"  # the policy is always recorded
    with pytest.raises(ConfigError, match="video_policy must be one of"):
        VQAScore(model_path="x", video_policy="median")
    with pytest.raises(ConfigError, match="frames"):
        VQAScore(model_path="x", video_policy="tile", frames=0)
    with pytest.raises(ConfigError, match="question_template"):
        VQAScore(model_path="x", video_policy="tile", question_template="no slot")
    v = VQAScore(model_path="x", video_policy="tile", device="cpu")
    assert v.dtype == "float32" and v.value_range == (0.0, 1.0) and v.higher_is_better
    from avits_core.registry import VERIFIERS

    assert isinstance(VERIFIERS.create("vqascore", model_path="x", video_policy="mean"), VQAScore)


# ------------------------------------------------------------------------------------------------
# files and keys
# ------------------------------------------------------------------------------------------------
def test_missing_files_are_all_listed(tmp_path):
    p = build_tiny_vqascore(tmp_path / "m", vision_in_checkpoint=False, shards=2)
    (p / "model-00002-of-00002.safetensors").unlink()
    (p / "tokenizer.json").unlink()
    (p / "clip-vision" / "model.safetensors").unlink()
    (p / "clip-vision" / "preprocessor_config.json").unlink()
    v = VQAScore(model_path=str(p), video_policy="tile")
    with pytest.raises(MissingWeightsError) as ei:
        v.check_ready()
    msg = str(ei.value)
    assert "model-00002-of-00002.safetensors" in msg
    assert "preprocessor_config.json" in msg
    assert "does not carry them" in msg and "openai/clip-vit-large-patch14-336" in msg
    assert "google/flan-t5-xxl" in msg  # no tokenizer in the model folder: the default hub id, not cached
    assert "4 missing: (1) " in msg and "(4) " in msg and "(5)" not in msg and "\n" not in msg
    # scoring turns it into error rows, never a number
    res = v.score([make_clip()], PROMPTS[:1])
    assert np.isnan(res.values[0]) and "MissingWeightsError" in res.errors[0]


def test_missing_model_folder_and_uncached_hub_id_fail_fast(tmp_path):
    v = VQAScore(model_path=str(tmp_path / "nope"), video_policy="tile")
    with pytest.raises(MissingWeightsError, match="does not exist.*hf download zhiqiulin/clip-flant5-xxl"):
        v.check_ready()
    t0 = time.monotonic()
    hub = VQAScore(model_path="zhiqiulin/clip-flant5-xxl", video_policy="tile", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache"):
        hub.check_ready()
    assert time.monotonic() - t0 < 10  # offline: an error, not a hang


def test_vision_tower_from_checkpoint_or_folder_give_the_same_scores(tmp_path, tiny):
    in_ckpt = build_tiny_vqascore(tmp_path / "a", vision_in_checkpoint=True)
    (in_ckpt / "clip-vision" / "model.safetensors").unlink()  # only config + preprocessor needed
    VQAScore(model_path=str(in_ckpt), video_policy="tile").check_ready()
    in_folder = build_tiny_vqascore(tmp_path / "b", vision_in_checkpoint=False, shards=3, fmt="bin")
    clips = [make_clip(s) for s in range(2)]
    a = VQAScore(model_path=str(in_ckpt), video_policy="tile").score(clips, PROMPTS[:2])
    b = VQAScore(model_path=str(in_folder), video_policy="tile").score(clips, PROMPTS[:2])
    ref = VQAScore(model_path=str(tiny), video_policy="tile").score(clips, PROMPTS[:2])
    assert a.errors == [None, None] and b.errors == [None, None]
    np.testing.assert_allclose(a.values, ref.values, rtol=1e-6)
    np.testing.assert_allclose(b.values, ref.values, rtol=1e-6)


def _rewrite(p: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(p / "model.safetensors"))
    edit(sd)
    save_file(sd, str(p / "model.safetensors"))


def test_loading_errors_name_the_keys(tmp_path):
    import torch

    from avits_core.verifiers.vqascore.model import load_model

    p = build_tiny_vqascore(tmp_path / "m")
    v = VQAScore(model_path=str(p), video_policy="tile")

    _rewrite(p, lambda sd: sd.pop("mm_projector.2.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing keys: mm_projector\.2\.weight"):
        load_model(v.layout(), "cpu", torch.float32)

    _rewrite(p, lambda sd: sd.update({"mm_projector.2.weight": torch.zeros(32, 32), "foo.bar": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="unexpected key 'foo.bar'"):
        load_model(v.layout(), "cpu", torch.float32)

    _rewrite(p, lambda sd: (sd.pop("foo.bar"), sd.update({"shared.weight": torch.zeros(3, 32)})))
    with pytest.raises(CheckpointError, match=r"shared\.weight: checkpoint \(3, 32\) vs model \(\d+, 32\)"):
        load_model(v.layout(), "cpu", torch.float32)

    def drop_vision_layer(sd):
        for k in [k for k in sd if ".encoder.layers.2." in k and k.startswith("vision_tower.")]:
            sd.pop(k)
    build_tiny_vqascore(p)
    _rewrite(p, drop_vision_layer)
    with pytest.raises(CheckpointError, match=r"vision_tower\.vision_tower\.vision_model\.encoder\.layers\.2\."):
        load_model(v.layout(), "cpu", torch.float32)

    cfg = json.loads((p / "config.json").read_text())
    cfg["mm_projector_type"] = "linear"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mm_projector_type 'linear'"):
        load_model(v.layout(), "cpu", torch.float32)


def test_importing_the_package_does_not_import_transformers():
    code = ("import sys, avits_core.verifiers.vqascore; "
            "assert 'transformers' not in sys.modules, 'transformers imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_doctor_lists_every_missing_file_on_one_line(tmp_path):
    import yaml

    from avits_core.doctor import run_doctor

    p = build_tiny_vqascore(tmp_path / "m", vision_in_checkpoint=False)
    (p / "tokenizer.json").unlink()
    (p / "clip-vision" / "model.safetensors").unlink()
    (tmp_path / "p.txt").write_text("a red ball bounces\n")
    cfg = {"name": "vq", "generator": {"name": "synth"}, "prompts": {"source": str(tmp_path / "p.txt")},
           "search": {"method": "best_of_n", "n": 2}, "verifiers": [{"name": "av_align", "weight": 1.0}],
           "aggregator": {"name": "weighted"}, "output_root": str(tmp_path / "runs"),
           "evaluation": {"oracle": False, "verifiers": [{"name": "vqascore", "params": {
               "model_path": str(p), "video_policy": "tile", "cache_dir": str(tmp_path / "hf")}}]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    lines, ok = run_doctor(tmp_path / "c.yaml")
    vq = [line for line in lines if "vqascore" in line]
    assert not ok and len(vq) == 1 and vq[0].startswith("MISSING: verifier vqascore"), lines
    assert "2 missing" in vq[0] and "google/flan-t5-xxl" in vq[0] and "clip-vision" in vq[0]
