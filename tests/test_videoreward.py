"""VideoReward: frame sampling / resize / patches by hand, template hash, checkpoint layouts and the LoRA
fold, the forward against transformers' own Qwen2-VL path, head order and normalisation, the
per-clip cache across heads, batching, and the missing-file messages. Tiny random model (no download)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_videoreward import NORM, TEMPLATE, build_tiny_videoreward  # noqa: E402

from avits_core.errors import ConfigError, MissingWeightsError  # noqa: E402
from avits_core.media import AVClip  # noqa: E402
from avits_core.prompts import Prompt  # noqa: E402
from avits_core.registry import VERIFIERS  # noqa: E402
from avits_core.verifiers import hf  # noqa: E402
from avits_core.verifiers.videoreward import checkpoint as ck  # noqa: E402
from avits_core.verifiers.videoreward import clear_head_cache  # noqa: E402
from avits_core.verifiers.videoreward import frames as fr  # noqa: E402
from avits_core.verifiers.videoreward import template as tp  # noqa: E402

SMALL = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)  # keeps the tiny forwards cheap


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_videoreward(tmp_path_factory.mktemp("videoreward"))


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_head_cache()
    yield
    clear_head_cache()


def clip(seed: int = 0, frames: int = 9, h: int = 64, w: int = 96, fps: float = 24.0) -> AVClip:
    rng = np.random.default_rng(seed)
    return AVClip(video=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8), fps=fps,
                  audio=np.zeros(16000, np.float32), sample_rate=16000)


P = [Prompt("p0", "a dog barks"), Prompt("p1", "thunder rolls over the sea"), Prompt("p2", "a girl plays piano")]


# --------------------------------------------------------------------------- frames
@pytest.mark.parametrize("total,fps,n,idx", [
    (121, 24.0, 10, [0, 13, 27, 40, 53, 67, 80, 93, 107, 120]),  # 121/24*2 = 10.08 -> 10
    (48, 24.0, 4, [0, 16, 31, 47]),  # 4.0 -> 4
    (9, 24.0, 4, [0, 3, 5, 8]),  # 0.75 -> clamped up to 4
    (60, 24.0, 4, None),  # 5.0 -> round half to even -> 4 (not 6)
    (3, 24.0, 2, [0, 2]),  # upper clamp floor_even(3) = 2
    (2000, 30.0, 134, None),  # 133.3 -> 134
    (10000, 1.0, 768, None),  # 20000 -> 768
    (10, 2.0, 10, list(range(10))),  # one frame per 0.5 s already
])
def test_frame_count_and_indices(total, fps, n, idx):
    assert fr.num_frames(total, fps) == n
    if idx is not None:
        assert fr.frame_indices(total, n) == idx
    assert fr.num_frames(total, fps, nframes=5) == min(4, total)  # fixed count: 5 -> round-half-even 4


def test_too_few_frames_is_an_error():
    with pytest.raises(ValueError, match="at least 2 frames"):
        fr.num_frames(1, 24.0)


@pytest.mark.parametrize("hw,out", [
    ((240, 426), (252, 420)),  # 9x15 blocks of 28 = 105,840 px, inside the bounds
    ((512, 768), (364, 532)),  # 381,024 > 200,704: scale by sqrt(393216/200704), floor
    ((64, 96), (280, 392)),  # 4,704 < 100,352: scale up by sqrt(100352/6144), ceil
    ((480, 640), (364, 504)),  # 476x644=306,544 > max: beta=sqrt(307200/200704)=1.2372; 387.97->364, 517.3->504
])
def test_smart_resize_sizes(hw, out):
    assert fr.smart_resize(*hw) == out
    assert out[0] % 28 == 0 and out[1] % 28 == 0


def test_resize_rounds_to_integers_and_keeps_constants():
    v = np.full((2, 40, 60, 3), 100, np.uint8)
    y = fr.resize_frames(v, 56, 84)
    assert tuple(y.shape) == (2, 3, 56, 84) and float(y.min()) == float(y.max()) == 100.0
    rng = np.random.default_rng(1)
    v = rng.integers(0, 256, (1, 50, 70, 3), dtype=np.uint8)
    y = fr.resize_frames(v, 28, 56).numpy()
    assert np.array_equal(y, np.round(y)) and y.min() >= 0 and y.max() <= 255
    same = fr.resize_frames(v, 50, 70).numpy()
    assert np.array_equal(same, v.transpose(0, 3, 1, 2).astype(np.float32))


def test_patchify_order_hand_computed():
    import torch

    T, C, H, W = 2, 3, 56, 56
    code = lambda t, c, h, w: ((t * 10 + c) * 100 + h) * 100 + w  # noqa: E731
    t_, c_, h_, w_ = np.meshgrid(np.arange(T), np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    x = torch.tensor(code(t_, c_, h_, w_), dtype=torch.float64)
    rows, grid = fr.patchify(x)
    assert grid == (1, 4, 4) and tuple(rows.shape) == (16, 1176)
    # row = (block_h, block_w, in-block h, in-block w); column = (channel, frame, y, x) within 14x14
    assert rows[0, 0] == code(0, 0, 0, 0)
    assert rows[1, 0] == code(0, 0, 0, 14)  # 2nd patch of the 2x2 block: right neighbour
    assert rows[2, 0] == code(0, 0, 14, 0)  # 3rd: the patch below
    assert rows[3, 0] == code(0, 0, 14, 14)
    assert rows[4, 0] == code(0, 0, 0, 28)  # next 2x2 block to the right
    assert rows[8, 0] == code(0, 0, 28, 0)  # first block of the second block row
    assert rows[0, 15] == code(0, 0, 1, 1)  # y=1, x=1 inside the patch
    assert rows[0, 196] == code(1, 0, 0, 0)  # second frame of the temporal pair
    assert rows[0, 392] == code(0, 1, 0, 0)  # next channel
    assert rows[5, 392 + 196 + 14 * 3 + 2] == code(1, 1, 3, 28 + 14 + 2)
    # an odd frame count repeats the last frame
    odd, g = fr.patchify(x[:1].repeat(3, 1, 1, 1) * 0 + x[:1])
    assert g == (2, 4, 4) and torch.equal(odd[16:], odd[:16])


def test_pixels_match_transformers_image_processor():
    """External oracle: Qwen2-VL's (PIL) image processor patches an image as a 2-frame video of itself."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    theirs = Qwen2VLImageProcessorPil(do_resize=False)(images=[img], return_tensors="pt")
    ours = fr.prepare_video(np.stack([img, img]), 2.0, min_pixels=56 * 84, max_pixels=56 * 84)
    assert ours.grid == tuple(theirs["image_grid_thw"][0].tolist()) == (1, 4, 6)
    np.testing.assert_allclose(ours.patches.numpy(), theirs["pixel_values"].numpy(), rtol=0, atol=2e-6)
    assert ours.num_tokens == 6


# --------------------------------------------------------------------------- template and chat
def test_template_hash_check(tmp_path, tiny):
    t = tp.load_template(tiny.template, expected_sha256=tiny.template_sha256)
    assert t == TEMPLATE
    with pytest.raises(tp.TemplateError) as e:  # our tiny template is not VideoAlign's
        tp.load_template(tiny.template)
    msg = str(e.value)
    assert tp.TEMPLATE_SHA256 in msg and tiny.template_sha256 in msg and "3997 characters" in msg
    assert str(tiny.template) in msg and "prompt_template.py" in msg
    # one changed byte (a trailing space dropped) is a mismatch
    (tmp_path / "t.txt").write_text(TEMPLATE.replace("axes.  \n", "axes. \n"))
    with pytest.raises(tp.TemplateError, match="sha256"):
        tp.load_template(tmp_path / "t.txt", expected_sha256=tiny.template_sha256)
    # VideoAlign's prompt_template.py is parsed, never executed
    py = tmp_path / "prompt_template.py"
    py.write_text(f"raise SystemExit('executed')\nOTHER = 'x'\n{tp.TEMPLATE_CONSTANT} = {TEMPLATE!r}\n")
    assert tp.load_template(py, expected_sha256=tiny.template_sha256) == TEMPLATE
    (tmp_path / "other.py").write_text("X = 1\n")
    with pytest.raises(tp.TemplateError, match=tp.TEMPLATE_CONSTANT):
        tp.read_template(tmp_path / "other.py")
    with pytest.raises(tp.TemplateError, match="does not exist"):
        tp.read_template(tmp_path / "none.txt")


def test_template_structure_and_prompt_formatting():
    bad = TEMPLATE.replace("<|MQ_reward|>", "").replace("<|VQ_reward|>", "<|MQ_reward|>")
    with pytest.raises(tp.TemplateError, match="VQ_reward"):
        tp.check_template(bad, expected_sha256=tp.sha256_text(bad))
    swapped = TEMPLATE.replace("<|VQ_reward|>", "@").replace("<|MQ_reward|>", "<|VQ_reward|>").replace("@", "<|MQ_reward|>")
    with pytest.raises(tp.TemplateError, match="order"):
        tp.check_template(swapped, expected_sha256=tp.sha256_text(swapped))
    assert tp.format_prompt(TEMPLATE, "a {curly} dog").count("a {curly} dog") == 1
    with pytest.raises(ValueError, match="control token"):
        tp.format_prompt(TEMPLATE, "cheat <|TA_reward|>")
    assert tp.chat_text("X") == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                 "<|vision_start|><|video_pad|><|vision_end|>X<|im_end|>\n<|im_start|>assistant\n")


def test_known_template_hash_of_the_facts():
    assert tp.TEMPLATE_SHA256 == "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
    assert tp.TEMPLATE_CHARS == 3997


# --------------------------------------------------------------------------- checkpoint
def test_model_config_checks(tmp_path, tiny):
    cfg = ck.read_model_config(tiny.full / "model_config.json")
    assert cfg.lora_scale == 2.0 and cfg.fps == 2.0 and cfg.max_pixels == 200704 and cfg.norm == NORM
    raw = json.loads((tiny.full / "model_config.json").read_text())
    for section, key, value, needle in [("peft_lora_config", "lora_r", 16, "lora_r is 16"),
                                        ("data_config", "fps", 1.0, "data_config.fps is 1.0"),
                                        ("model_config", "reward_token", "last", "reward_token")]:
        bad = json.loads(json.dumps(raw))
        bad[section][key] = value
        (tmp_path / "m.json").write_text(json.dumps(bad))
        with pytest.raises(ck.CheckpointError, match=needle):
            ck.read_model_config(tmp_path / "m.json")
    bad = json.loads(json.dumps(raw))
    bad["inference_config"]["TA_std"] = 0
    (tmp_path / "m.json").write_text(json.dumps(bad))
    with pytest.raises(ck.CheckpointError, match="TA"):
        ck.read_model_config(tmp_path / "m.json")
    del bad["inference_config"]
    (tmp_path / "m.json").write_text(json.dumps(bad))
    with pytest.raises(ck.CheckpointError, match="inference_config"):
        ck.read_model_config(tmp_path / "m.json")


def test_lora_fold_and_key_remap_on_a_synthetic_peft_state_dict():
    import torch

    W = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    A = torch.tensor([[1.0, 0.0, -1.0]])  # r = 1
    B = torch.tensor([[0.5], [2.0]])
    pre = "base_model.model."
    sd = {
        pre + "model.layers.0.self_attn.q_proj.base_layer.weight": W,
        pre + "model.layers.0.self_attn.q_proj.base_layer.bias": torch.tensor([7.0, 8.0]),
        pre + "model.layers.0.self_attn.q_proj.lora_A.default.weight": A,
        pre + "model.layers.0.self_attn.q_proj.lora_B.default.weight": B,
        pre + "model.embed_tokens.weight": torch.ones(4, 3),
        pre + "visual.blocks.0.attn.qkv.weight": torch.zeros(2, 2),
        pre + "rm_head.weight": torch.ones(1, 3),
        pre + "lm_head.weight": torch.ones(4, 3),
    }
    out, n = ck.fold_lora(ck.remap_keys(ck.strip_peft_prefix(sd)), scale=2.0)
    assert n == 1
    # W + 2 * B @ A, by hand: B @ A = [[0.5, 0, -0.5], [2, 0, -2]]
    assert out["model.language_model.layers.0.self_attn.q_proj.weight"].tolist() == [[2.0, 2.0, 2.0], [8.0, 5.0, 2.0]]
    assert out["model.language_model.layers.0.self_attn.q_proj.bias"].tolist() == [7.0, 8.0]
    assert sorted(out) == ["lm_head.weight", "model.language_model.embed_tokens.weight",
                           "model.language_model.layers.0.self_attn.q_proj.bias",
                           "model.language_model.layers.0.self_attn.q_proj.weight",
                           "model.visual.blocks.0.attn.qkv.weight", "rm_head.weight"]
    # bf16 weights are folded in fp32 and cast back
    o16, _ = ck.fold_lora({"m.weight": W.bfloat16(), "m.lora_A.weight": A, "m.lora_B.weight": B}, 2.0)
    assert o16["m.weight"].dtype == torch.bfloat16 and o16["m.weight"].float().tolist() == [[2, 2, 2], [8, 5, 2]]
    assert ck.remap_key("model.language_model.norm.weight") == "model.language_model.norm.weight"  # idempotent
    with pytest.raises(ck.CheckpointError, match="neither plain weights"):
        ck.fold_lora({"m.base_layer.weight": W}, 2.0)  # a base_layer without its adapter
    with pytest.raises(ck.CheckpointError, match="no matching"):
        ck.fold_lora({"m.weight": W, "m.lora_A.weight": A}, 2.0)
    with pytest.raises(ck.CheckpointError, match="do not fit"):
        ck.fold_lora({"m.weight": W.T, "m.lora_A.weight": A, "m.lora_B.weight": B}, 2.0)


def _loaded(tiny, layout):
    v = VERIFIERS.create("videoreward", **tiny.params(layout, **SMALL))
    return v, v._components()[0]


@pytest.mark.parametrize("layout", ["full", "adapter"])
def test_both_layouts_load_the_folded_weights(tiny, layout):
    import torch

    _, m = _loaded(tiny, layout)
    assert m.layout == layout and m.folded == 2 * 7 and m.info["step"] == 7  # highest step, not checkpoint-3
    sd = m.net.state_dict()
    assert sorted(sd) == sorted(tiny.expected)
    for k, v in tiny.expected.items():
        torch.testing.assert_close(sd[k], v, rtol=0, atol=1e-6, msg=k)
    assert m.reward_ids == [tiny.tokenizer_len - 3, tiny.tokenizer_len - 2, tiny.tokenizer_len - 1]


def test_both_layouts_score_alike(tiny):
    clips = [clip(0), clip(1)]
    a = VERIFIERS.create("videoreward", **tiny.params("full", **SMALL)).score(clips, P[:2])
    clear_head_cache()
    b = VERIFIERS.create("videoreward", **tiny.params("adapter", **SMALL)).score(clips, P[:2])
    assert a.ok.all() and b.ok.all()
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- forward
def _oracle_hidden(tiny, m, token_rows, patches, grids, mrope=False):
    """transformers' own Qwen2VLModel (its video scatter) on the expected weights; rm_head on every position."""
    import torch
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    ref = Qwen2VLModel(tiny.config).eval()
    ref.load_state_dict({k[len("model."):]: v for k, v in tiny.expected.items() if k.startswith("model.")})
    L = max(len(r) for r in token_rows)
    ids = torch.full((len(token_rows), L), m.pad_token_id)
    att = torch.zeros_like(ids)
    for b, r in enumerate(token_rows):
        ids[b, :len(r)] = torch.tensor(r)
        att[b, :len(r)] = 1
    kw = dict(input_ids=ids, attention_mask=att, pixel_values_videos=torch.cat(patches),
              video_grid_thw=torch.tensor([list(g) for g in grids]))
    if mrope:
        kw["mm_token_type_ids"] = (ids == m.video_token_id).int() * 2
    else:
        kw["position_ids"] = torch.arange(L)[None].expand(len(token_rows), L)
    with torch.no_grad():
        h = ref(**kw).last_hidden_state
    return ids, h @ tiny.expected["rm_head.weight"][0]


def test_forward_matches_transformers_with_sequential_positions_not_mrope(tiny):
    _, m = _loaded(tiny, "full")
    cs = [clip(0), clip(1, frames=20, h=40, w=120, fps=10.0)]
    vis = [fr.prepare_video(c.video, c.fps, **SMALL) for c in cs]
    rows = [m.token_ids(tp.format_prompt(TEMPLATE, p.text), v.num_tokens) for v, p in zip(vis, P)]
    ours = m.forward(rows, [v.patches for v in vis], [v.grid for v in vis])
    assert ours.shape == (2, 3)
    ids, per_pos = _oracle_hidden(tiny, m, rows, [v.patches for v in vis], [v.grid for v in vis])
    for b in range(2):  # pooling positions: the VQ, MQ, TA tokens, in that order
        pos = [int((ids[b] == t).nonzero()[0, 0]) for t in m.reward_ids]
        assert pos == sorted(pos)
        tail = m.tokenizer.decode(rows[b][pos[-1] + 1:], skip_special_tokens=False)
        assert tail == "\nEND\n<|im_end|>\n<|im_start|>assistant\n"  # TA is the last reward token
        np.testing.assert_allclose(ours[b], per_pos[b, pos].numpy(), rtol=0, atol=2e-5)
    _, mrope = _oracle_hidden(tiny, m, rows, [v.patches for v in vis], [v.grid for v in vis], mrope=True)
    pos0 = [int((ids[0] == t).nonzero()[0, 0]) for t in m.reward_ids]
    assert np.abs(mrope[0, pos0].numpy() - ours[0]).max() > 1e-3  # 3-D M-RoPE positions give other numbers


def test_heads_order_and_normalisation(tiny):
    cs = [clip(0), clip(1)]
    v = VERIFIERS.create("videoreward", **tiny.params(**SMALL))
    res = v.score(cs, P[:2])
    _, m = _loaded(tiny, "full")
    vis = [fr.prepare_video(c.video, c.fps, **SMALL) for c in cs]
    raw = m.forward([m.token_ids(tp.format_prompt(TEMPLATE, p.text), x.num_tokens) for x, p in zip(vis, P)],
                    [x.patches for x in vis], [x.grid for x in vis])
    for i, d in enumerate(res.details):
        assert [d["VQ_raw"], d["MQ_raw"], d["TA_raw"]] == pytest.approx(raw[i].tolist(), abs=1e-6)
        for h in ("VQ", "MQ", "TA"):
            mean, std = NORM[h]
            assert d[h] == pytest.approx((d[f"{h}_raw"] - mean) / std, abs=1e-12)
        assert d["overall"] == pytest.approx(d["VQ"] + d["MQ"] + d["TA"], abs=1e-12)
        assert d["overall_raw"] == pytest.approx(d["VQ_raw"] + d["MQ_raw"] + d["TA_raw"], abs=1e-12)
        assert (d["frames"], d["height"], d["width"]) == (4, 56, 84)
        assert res.values[i] == d["TA"]  # default head TA, normalised
    for kw, key in [({"head": "VQ"}, "VQ"), ({"head": "MQ"}, "MQ"), ({"head": "overall"}, "overall"),
                    ({"normalize": False}, "TA_raw"), ({"head": "overall", "normalize": False}, "overall_raw")]:
        r = VERIFIERS.create("videoreward", **tiny.params(**SMALL, **kw)).score(cs, P[:2])
        assert r.values.tolist() == [d[key] for d in res.details], kw
    # hand check of the arithmetic for one number: (raw - 1.0) / 4.0 for TA
    d = res.details[0]
    assert d["TA"] == (d["TA_raw"] - 1.0) / 4.0


def test_identity_params_and_cache_version(tiny):
    mk = lambda **kw: VERIFIERS.create("videoreward", **tiny.params(**kw))  # noqa: E731
    assert mk().cache_version.startswith("1+") and "template_sha256=" in mk().cache_version  # tiny template
    base = dict(template_sha256=tp.TEMPLATE_SHA256)
    assert mk(**base).cache_version == "1"
    assert mk(**base, head="VQ").cache_version == "1+head=VQ"
    assert mk(**base, normalize=False).cache_version == "1+normalize=False"
    assert mk(**base, fps=1.0).cache_version == "1+fps=1.0"
    with pytest.raises(ConfigError, match="head"):
        mk(head="ta")
    with pytest.raises(ConfigError, match="fps or nframes"):
        mk(fps=2.0, nframes=8)


def test_one_forward_scores_all_heads(tiny):
    cs = [clip(0), clip(1), clip(2)]
    vs = {h: VERIFIERS.create("videoreward", **tiny.params(**SMALL, head=h)) for h in ("TA", "VQ", "MQ", "overall")}
    m = vs["TA"]._components()[0]
    before = m.forwards
    results = {h: v.score(cs, P) for h, v in vs.items()}
    assert m.forwards - before == 3  # three clips, one forward each, for four heads (and their details)
    raw_norm = VERIFIERS.create("videoreward", **tiny.params(**SMALL, normalize=False)).score(cs, P)
    assert m.forwards - before == 3
    for h in ("VQ", "MQ", "TA"):
        assert results[h].values.tolist() == [d[h] for d in results["TA"].details]
    assert raw_norm.values.tolist() == [d["TA_raw"] for d in results["TA"].details]
    # another prompt or other pixels are another forward
    VERIFIERS.create("videoreward", **tiny.params(**SMALL)).score([cs[0]], [P[1]])
    changed = AVClip(video=cs[0].video.copy(), fps=cs[0].fps, audio=cs[0].audio, sample_rate=cs[0].sample_rate)
    changed.video[0, 0, 0, 0] ^= 1
    VERIFIERS.create("videoreward", **tiny.params(**SMALL)).score([changed], [P[0]])
    assert m.forwards - before == 5
    # the same (clip, prompt) twice in one batch is forwarded once
    clear_head_cache()
    before = m.forwards
    VERIFIERS.create("videoreward", **tiny.params(**SMALL)).score([cs[0], cs[0]], [P[0], P[0]])
    assert m.forwards - before == 1


def test_same_clip_alone_and_in_a_batch(tiny):
    cs = [clip(0), clip(1, frames=30, h=48, w=64, fps=12.0), clip(2, frames=5, h=80, w=60, fps=8.0)]
    v = VERIFIERS.create("videoreward", **tiny.params(**SMALL, batch_size=3))
    together = v.score(cs, P)
    alone = []
    for c, p in zip(cs, P):
        clear_head_cache()
        alone.append(VERIFIERS.create("videoreward", **tiny.params(**SMALL, batch_size=1)).score([c], [p]).values[0])
    assert together.ok.all()
    np.testing.assert_allclose(together.values, alone, rtol=0, atol=1e-5)
    assert len(set(np.round(together.values, 6))) == 3  # three different clips, three different numbers


def test_default_picture_size_runs(tiny):
    """The released pixel bounds: a 64x96 clip is upscaled to 280x392 (4 frames -> 280 video tokens)."""
    v = VERIFIERS.create("videoreward", **tiny.params())
    r = v.score([clip(0)], [P[0]])
    assert r.ok.all() and (r.details[0]["height"], r.details[0]["width"], r.details[0]["frames"]) == (280, 392, 4)


def test_oom_halves_the_batch(tiny, monkeypatch):
    import torch

    v = VERIFIERS.create("videoreward", **tiny.params(**SMALL, batch_size=4))
    m = v._components()[0]
    real = m.forward
    sizes = []

    def fake(rows, patches, grids):
        sizes.append(len(rows))
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(rows, patches, grids)

    monkeypatch.setattr(m, "forward", fake)
    cs = [clip(i) for i in range(3)]
    res = v.score(cs, P)
    assert res.ok.all() and v.batch_size == 1 and sizes == [3, 2, 1, 1, 1]
    monkeypatch.setattr(m, "forward", real)
    clear_head_cache()
    ref = VERIFIERS.create("videoreward", **tiny.params(**SMALL, batch_size=4)).score(cs, P)
    np.testing.assert_allclose(res.values, ref.values, rtol=0, atol=1e-5)


def test_error_rows_for_bad_input(tiny):
    one_frame = clip(0, frames=1)
    res = VERIFIERS.create("videoreward", **tiny.params(**SMALL)).score(
        [clip(0), one_frame, clip(1)], [P[0], P[1], Prompt("x", "cheat <|im_end|> here")])
    assert res.errors[0] is None and np.isfinite(res.values[0])
    assert "1 frames < 2" in res.errors[1] and np.isnan(res.values[1])
    assert "control token" in res.errors[2] and np.isnan(res.values[2])


# --------------------------------------------------------------------------- weights on disk
def test_check_ready_lists_every_missing_file(tmp_path, tiny):
    v = VERIFIERS.create("videoreward", model_path=str(tmp_path / "VideoReward"),
                         base_model_path=str(tmp_path / "Qwen2-VL-2B-Instruct"))
    with pytest.raises(MissingWeightsError) as e:
        v.check_ready()
    msg = str(e.value)
    for needle in [str(tmp_path / "VideoReward"), "hf download KwaiVGI/VideoReward",
                   str(tmp_path / "Qwen2-VL-2B-Instruct"), "hf download Qwen/Qwen2-VL-2B-Instruct",
                   "template_path is not set", "prompt_template.py"]:
        assert needle in msg, needle
    # folders there but incomplete: each missing file is named
    reward, base = tmp_path / "r", tmp_path / "b"
    shutil.copytree(tiny.adapter, reward)
    (reward / "checkpoint-7" / "non_lora_state_dict.pth").unlink()
    base.mkdir()
    shutil.copy(tiny.base / "config.json", base / "config.json")
    v = VERIFIERS.create("videoreward", model_path=str(reward), base_model_path=str(base),
                         template_path=str(tmp_path / "pt.py"))
    with pytest.raises(MissingWeightsError) as e:
        v.check_ready()
    msg = str(e.value)
    assert "non_lora_state_dict.pth" in msg and str(base / "tokenizer_config.json") in msg
    assert str(base / "tokenizer.json") in msg and str(tmp_path / "pt.py") in msg and f"{base / 'config.json'} (" not in msg
    # complete: ready; a wrong template is a TemplateError (a config problem, not a missing file)
    ok = VERIFIERS.create("videoreward", **tiny.params("adapter"))
    ok.check_ready()
    with pytest.raises(tp.TemplateError):
        VERIFIERS.create("videoreward", **{**tiny.params(), "template_sha256": tp.TEMPLATE_SHA256}).check_ready()


def test_hub_ids_come_from_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf"
    cache.mkdir()
    v = VERIFIERS.create("videoreward", cache_dir=str(cache), template_path=str(tmp_path / "t.txt"))
    with pytest.raises(MissingWeightsError) as e:
        v.check_ready()
    msg = str(e.value)
    assert "'KwaiVGI/VideoReward' is not in the local Hugging Face cache" in msg
    assert "'Qwen/Qwen2-VL-2B-Instruct' is not in the local Hugging Face cache" in msg
    with pytest.raises(MissingWeightsError):  # scoring fails the same way, at once
        v.score_clips([clip(0)], [P[0]])


def test_dtype_auto_and_importing_needs_no_transformers():
    import subprocess

    assert VERIFIERS.create("videoreward").dtype == "float32"
    code = ("import sys; import avits_core.verifiers.videoreward as m; "
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert hf.parse_device("cpu") == "cpu"


def test_vision_rotary_angles_follow_the_reference_dtype(tiny):
    """transformers 4.45 (VideoAlign's) formed the vision tower's angles position * inv_freq and their
    cos in the buffer's dtype; in bf16 that rounds, in float32 it equals transformers 5.x."""
    import torch
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionRotaryEmbedding

    from avits_core.verifiers.videoreward.model import reference_vision_rope

    pos = torch.tensor([[0, 1], [3, 5], [17, 9], [40, 53]])  # (patches, 2): row and column of each patch
    x = torch.zeros(1)
    stock = Qwen2VLVisionRotaryEmbedding(tiny.config.vision_config)
    want_cos, want_sin = stock(x, pos)
    ours = reference_vision_rope(Qwen2VLVisionRotaryEmbedding(tiny.config.vision_config))
    got_cos, got_sin = ours(x, pos)
    assert torch.equal(got_cos, want_cos) and torch.equal(got_sin, want_sin)  # float32: unchanged
    ours.to(torch.bfloat16)
    inv = ours.inv_freq  # bf16 after the cast, as after the reference's model.to(torch.bfloat16)
    by_hand = (pos[..., None].to(torch.bfloat16) * inv).cos()  # bf16 product, bf16 cos
    cos, _ = ours(x, pos)
    assert cos.dtype == torch.bfloat16
    assert torch.equal(cos[:, : inv.numel()], by_hand[:, 0]) and torch.equal(cos[:, inv.numel(): 2 * inv.numel()],
                                                                             by_hand[:, 1])
    assert not torch.equal(cos.float(), stock(x, pos)[0])  # float32 angles give other numbers


def test_full_size_key_mapping_on_meta_tensors():
    """At the released size (Qwen2-VL-2B: text 1536/8960, 28 layers; vision 1280, depth 32) the PEFT
    layout has 1,123 tensors, 196 LoRA pairs fold, and the renamed keys are exactly the model's (no
    memory used: every tensor lives on the meta device)."""
    import torch
    from transformers import Qwen2VLConfig

    from avits_core.verifiers.videoreward.model import _reward_model_class, empty_parameters
    from tiny_videoreward import LORA_TARGETS, old_name

    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=151660, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, rope_parameters={
                             "rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, in_channels=3))
    with empty_parameters():
        net = _reward_model_class()(cfg)
    model_sd = net.state_dict()
    n_params = sum(v.numel() for v in model_sd.values())
    assert 2.0e9 < n_params < 2.3e9, n_params  # "2B" (no lm_head)
    peft = {}
    for k, v in model_sd.items():
        mod = k[: -len(".weight")] if k.endswith(".weight") else k[: -len(".bias")]
        target = mod.startswith("model.language_model.layers.") and mod.endswith(LORA_TARGETS)
        key = "base_model.model." + old_name(k)
        if target:
            key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
            if k.endswith(".weight"):
                old = "base_model.model." + old_name(mod)
                peft[f"{old}.lora_A.default.weight"] = torch.empty(64, v.shape[1], device="meta")
                peft[f"{old}.lora_B.default.weight"] = torch.empty(v.shape[0], 64, device="meta")
        peft[key] = v
    peft["base_model.model.lm_head.weight"] = torch.empty(151660, 1536, device="meta")
    assert len(peft) == 1123  # the released model.pth holds 1,123 tensors
    out, folded = ck.fold_lora(ck.remap_keys(ck.strip_peft_prefix(peft)), 2.0)
    out.pop("lm_head.weight")
    assert folded == 196 and sorted(out) == sorted(model_sd)
    assert all(tuple(out[k].shape) == tuple(model_sd[k].shape) for k in out)
