"""LTX2Generator against diffusers' LTX2Pipeline on tiny random components (CPU, no download).

The tiny components are written to a local diffusers folder and loaded through ``model_path`` as a
user would load the real weights. Parity: our step loop vs ``LTX2Pipeline.__call__`` for the same
initial noise and settings, on decoded frames / waveforms and on the final latents.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install 'avits[ltx2]')")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_ltx2 import TINY_MAX_SEQUENCE_LENGTH, one_torch_thread, save_tiny_ltx2  # noqa: E402

from avits_core.errors import ConfigError, MissingWeightsError  # noqa: E402
from avits_core.generators.base import JointGenerator, Latents  # noqa: E402
from avits_core.generators.ltx2 import (  # noqa: E402
    LTX2Generator,
    ltx2_doctor,
    unpack_audio,
    unpack_video,
)
from avits_core.prompts import Prompt  # noqa: E402
from avits_core.registry import GENERATORS  # noqa: E402

GEO = dict(height=64, width=96, num_frames=9, frame_rate=24.0)
OFF = dict(
    guidance_scale=1.0,
    audio_guidance_scale=1.0,
    stg_scale=0.0,
    audio_stg_scale=0.0,
    modality_scale=1.0,
    audio_modality_scale=1.0,
    guidance_rescale=0.0,
    audio_guidance_rescale=0.0,
)
CFG_RESCALE = dict(OFF, guidance_scale=3.0, audio_guidance_scale=5.0, guidance_rescale=0.5, audio_guidance_rescale=0.6)
PROMPT = Prompt("p0", "a red ball bounces twice")
NEG = "blurry, distorted"
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny models gain nothing from intra-op threads; one thread avoids spin-waiting on a busy CPU."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "tiny-2.0", "2.0")


@pytest.fixture(scope="module")
def tiny23(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ltx2(tmp_path_factory.mktemp("ltx2") / "tiny-2.3", "2.3")


def make(path: Path, steps: int = 3, **kw) -> LTX2Generator:
    params = dict(GEO, model_path=str(path), num_steps=steps, max_sequence_length=TINY_MAX_SEQUENCE_LENGTH,
                  negative_prompt=NEG)
    params.update(kw)
    return LTX2Generator(**params)


def pipeline_reference(gen: LTX2Generator, seeds: list[int], guidance: dict, stg_blocks=None):
    """LTX2Pipeline.__call__ on the generator's own components: (frames np, audio, video latents, audio latents)."""
    pipe = gen._pipe
    kw = dict(
        prompt=PROMPT.text,
        negative_prompt=NEG,
        num_inference_steps=gen.num_steps,
        num_videos_per_prompt=len(seeds),
        max_sequence_length=TINY_MAX_SEQUENCE_LENGTH,
        return_dict=False,
        **GEO,
        **guidance,
    )
    if stg_blocks is not None:
        kw["spatio_temporal_guidance_blocks"] = stg_blocks

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    frames, audio = pipe(output_type="np", generator=gens(), **kw)
    lat_v, lat_a = pipe(output_type="latent", generator=gens(), **kw)
    return frames, audio, lat_v, lat_a


def denormalised(gen: LTX2Generator, lat: Latents) -> tuple[torch.Tensor, torch.Tensor]:
    """Our packed normalised latents in the pipeline's output_type='latent' form."""
    pipe = gen._pipe
    v = unpack_video(lat.video, gen._tf, gen._th, gen._tw)
    v = v * pipe.vae.latents_std.view(1, -1, 1, 1, 1) / pipe.vae.config.scaling_factor + pipe.vae.latents_mean.view(
        1, -1, 1, 1, 1
    )
    a = unpack_audio(lat.audio * pipe.audio_vae.latents_std + pipe.audio_vae.latents_mean, gen._m)
    return v, a


def check_parity(gen: LTX2Generator, seeds: list[int], guidance: dict, stg_blocks=None) -> dict[str, float]:
    out = gen.denoise(gen.init_noise(seeds), PROMPT, 0, gen.num_steps)
    frames, wave = gen.decode_tensors(out)
    ref_frames, ref_audio, ref_v, ref_a = pipeline_reference(gen, seeds, guidance, stg_blocks)
    v, a = denormalised(gen, out)
    diffs = {
        "frames": float(np.abs(frames - ref_frames).max()),
        "waveform": float((wave - ref_audio).abs().max()),
        "video_latent": float((v - ref_v).abs().max()),
        "audio_latent": float((a - ref_a).abs().max()),
    }
    print(f"parity {seeds} {diffs}")
    assert all(d <= TOL for d in diffs.values()), diffs
    # the outputs are not trivial (a constant output would make parity meaningless)
    assert ref_frames.std() > 1e-3 and float(ref_audio.std()) > 1e-4
    return diffs


# ------------------------------------------------------------------------------------- parity


def test_parity_no_guidance_batched(tiny20: Path) -> None:
    gen = make(tiny20, batch_size=2, **OFF)
    assert gen.nfe_per_step == 1
    check_parity(gen, [11, 12], OFF)


def test_parity_cfg_audio_cfg_rescale(tiny20: Path) -> None:
    gen = make(tiny20, **CFG_RESCALE)
    assert gen.do_cfg and not gen.do_stg and not gen.do_mod
    check_parity(gen, [5], CFG_RESCALE)


def test_parity_default_guidance_ltx23_with_stg(tiny23: Path) -> None:
    """The pipeline's default guidance set (CFG 3 / audio 7, STG 1/1, modality 3/3, rescale 0.7/0.7) on a
    2.3-style DiT (perturbed_attn=True); STG acts on block 1 (the default block 28 does not exist here)."""
    gen = make(tiny23, stg_blocks=[1])
    assert (gen.guidance_scale, gen.audio_guidance_scale, gen.stg_scale, gen.modality_scale) == (3.0, 7.0, 1.0, 3.0)
    assert gen.nfe_per_step == 4
    check_parity(gen, [3], {}, stg_blocks=[1])


def test_parity_default_guidance_ltx20_skips_noop_stg(tiny20: Path) -> None:
    """On LTX-2.0 (perturbed_attn=False) STG is a no-op: we skip its pass and still match the pipeline."""
    gen = make(tiny20)
    assert gen.do_stg and gen.nfe_per_step == 3
    check_parity(gen, [4], {})


def test_stg_changes_the_result_on_ltx23(tiny23: Path) -> None:
    with_stg = make(tiny23, stg_blocks=[1], steps=2)
    without = make(tiny23, stg_blocks=[1], steps=2, stg_scale=0.0, audio_stg_scale=0.0)
    a = with_stg.denoise(with_stg.init_noise([1]), PROMPT, 0, 2)
    b = without.denoise(without.init_noise([1]), PROMPT, 0, 2)
    assert (a.video - b.video).abs().max() > 1e-3 and (a.audio - b.audio).abs().max() > 1e-4


def test_timestep_conditioned_vae_decode_matches_pipeline(tmp_path: Path) -> None:
    path = save_tiny_ltx2(tmp_path / "tiny-tc", "2.0", timestep_conditioning=True)
    gen = make(path, steps=2, decode_timestep=0.05, decode_noise_scale=0.3, batch_size=2, **OFF)
    out = gen.denoise(gen.init_noise([3, 4]), PROMPT, 0, 2)
    frames, wave = gen.decode_tensors(out)
    # a list of prompts (not num_videos_per_prompt, which the pipeline's decode_timestep handling breaks)
    ref_frames, ref_audio = gen._pipe(
        prompt=[PROMPT.text] * 2, num_inference_steps=2, generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
        max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, decode_timestep=0.05, decode_noise_scale=0.3,
        output_type="np", return_dict=False, **GEO, **OFF,
    )
    assert np.abs(frames - ref_frames).max() <= TOL and (wave - ref_audio).abs().max() <= TOL


# ------------------------------------------------------------------------ protocol behaviour


def test_registry_and_protocol(tiny20: Path) -> None:
    gen = GENERATORS.create("ltx2", **dict(GEO, model_path=str(tiny20), num_steps=3,
                                           max_sequence_length=TINY_MAX_SEQUENCE_LENGTH, **OFF))
    assert isinstance(gen, LTX2Generator) and isinstance(gen, JointGenerator)
    ts = gen.timesteps
    assert ts.shape == (4,) and ts[0] == 1.0 and ts[-1] == 0.0 and np.all(np.diff(ts) < 0)
    # the LTX-2 schedule for 12 video tokens: exponential shift then stretch to shift_terminal=0.1
    assert abs(ts[-2] - 0.1) < 1e-6
    # loading is cached per process: a second generator reuses the loaded components
    assert make(tiny20, **CFG_RESCALE)._pipe is gen._pipe


def test_init_noise_per_seed_independent_of_batch(tiny20: Path) -> None:
    gen = make(tiny20, **OFF)
    batch = gen.init_noise([7, 8, 9])
    single = gen.init_noise([8])
    assert torch.equal(batch.video[1:2], single.video) and torch.equal(batch.audio[1:2], single.audio)
    assert torch.equal(gen.init_noise([7, 8, 9]).video, batch.video)
    assert not torch.equal(batch.video[0], batch.video[1])
    assert batch.video.shape == (3, 12, 8) and batch.audio.shape == (3, 9, 8)
    assert batch.step == 0 and batch.seeds == [7, 8, 9] and batch.nfe.tolist() == [0, 0, 0]
    # same standard-normal draws the pipeline makes with generator=torch.Generator().manual_seed(8)
    g = torch.Generator().manual_seed(8)
    v = torch.randn((1, 8, 2, 2, 3), generator=g)
    a = torch.randn((1, 2, 9, 4), generator=g)
    assert torch.equal(single.video, v.permute(0, 2, 3, 4, 1).reshape(1, 12, 8))
    assert torch.equal(single.audio, a.transpose(1, 2).flatten(2, 3))


def test_batching_equals_one_by_one(tiny23: Path) -> None:
    seeds = [21, 22, 23]
    one = make(tiny23, steps=2, stg_blocks=[1], batch_size=1)
    many = make(tiny23, steps=2, stg_blocks=[1], batch_size=2)  # chunks of 2 + 1
    a = one.denoise(one.init_noise(seeds), PROMPT, 0, 2)
    b = many.denoise(many.init_noise(seeds), PROMPT, 0, 2)
    assert (a.video - b.video).abs().max() <= 1e-5 and (a.audio - b.audio).abs().max() <= 1e-5
    assert a.nfe.tolist() == b.nfe.tolist() == [8, 8, 8]
    # deterministic: the same call twice gives the same bits
    c = one.denoise(one.init_noise(seeds), PROMPT, 0, 2)
    assert torch.equal(a.video, c.video) and torch.equal(a.audio, c.audio)


def test_split_denoise_equals_full(tiny20: Path) -> None:
    gen = make(tiny20, steps=4, **CFG_RESCALE)
    x = gen.init_noise([1, 2])
    full = gen.denoise(x, PROMPT, 0, 4)
    part = gen.denoise(gen.denoise(x, PROMPT, 0, 1), PROMPT, 1, 4)
    assert torch.equal(full.video, part.video) and torch.equal(full.audio, part.audio)
    assert full.step == part.step == 4 and full.nfe.tolist() == part.nfe.tolist() == [8, 8]
    # replacing the audio latent mid-way changes the result (both modalities are searchable)
    mid = gen.denoise(x, PROMPT, 0, 2)
    swapped = gen.denoise(mid.with_(audio=mid.audio.flip(0)), PROMPT, 2, 4)
    assert not torch.equal(swapped.audio, full.audio)
    with pytest.raises(ValueError, match="step"):
        gen.denoise(mid, PROMPT, 1, 3)
    with pytest.raises(ValueError, match="start"):
        gen.denoise(x, PROMPT, 0, 5)


def test_nfe_counts(tiny20: Path, tiny23: Path) -> None:
    cases = [
        (tiny20, OFF, 1),
        (tiny20, CFG_RESCALE, 2),
        (tiny20, dict(OFF, modality_scale=2.0), 2),
        (tiny20, {}, 3),  # CFG 2 + modality 1; STG skipped (perturbed_attn=False)
        (tiny23, {}, 3),  # default stg_blocks=[28] do not exist in a 2-layer DiT: skipped
        (tiny23, dict(stg_blocks=[1]), 4),  # CFG 2 + STG 1 + modality 1
        (tiny23, dict(OFF, stg_scale=1.0, audio_stg_scale=1.0, stg_blocks=[0]), 2),
    ]
    for path, kw, per_step in cases:
        gen = make(path, steps=2, **kw)
        assert gen.nfe_per_step == per_step, (path.name, kw)
        out = gen.denoise(gen.init_noise([1, 2]), PROMPT, 0, 2)
        assert out.nfe.tolist() == [2 * per_step] * 2
        assert gen.nfe_total == 4 * per_step
        x0 = gen.predict_x0(out.with_(step=1), PROMPT, 1)
        assert x0.nfe.tolist() == [3 * per_step] * 2 and gen.nfe_total == 6 * per_step


def test_predict_x0_is_the_guided_x0_of_the_step(tiny23: Path) -> None:
    gen = make(tiny23, steps=3, stg_blocks=[1])
    x = gen.denoise(gen.init_noise([5]), PROMPT, 0, 1)
    x0 = gen.predict_x0(x, PROMPT, 1)
    nxt = gen.denoise(x, PROMPT, 1, 2)
    s, s1 = (float(v) for v in gen.timesteps[1:3])
    expected_video = x.video + (s1 - s) * (x.video - x0.video) / s
    expected_audio = x.audio + (s1 - s) * (x.audio - x0.audio) / s
    assert (nxt.video - expected_video).abs().max() <= 1e-5
    assert (nxt.audio - expected_audio).abs().max() <= 1e-5
    assert x0.step == 3  # an estimate of the clean latent, decodable
    assert len(gen.decode(x0, PROMPT)) == 1
    with pytest.raises(ValueError):
        gen.predict_x0(nxt, PROMPT, 3)


def test_decode_clips(tiny20: Path, tiny23: Path) -> None:
    for path, rate in ((tiny20, 24000), (tiny23, 48000)):
        gen = make(path, steps=2, batch_size=2, **OFF)
        out = gen.denoise(gen.init_noise([1, 2]), PROMPT, 0, 2)
        frames, wave = gen.decode_tensors(out)
        clips = gen.decode(out, PROMPT)
        n_audio = (4 * 9 - 3) * (240 if rate == 24000 else 480)  # 9 latent frames -> 33 mel frames
        assert len(clips) == 2 and wave.shape == (2, 2, n_audio)
        for k, clip in enumerate(clips):
            assert clip.video.shape == (9, 64, 96, 3) and clip.video.dtype == np.uint8
            assert clip.fps == 24.0 and clip.sample_rate == rate == gen.sample_rate
            assert clip.audio.shape == (n_audio,) and clip.audio.dtype == np.float32
            np.testing.assert_array_equal(clip.video, np.round(frames[k] * 255).astype(np.uint8))
            np.testing.assert_allclose(clip.audio, wave[k].mean(0).numpy(), atol=1e-7)
            assert clip.meta["seed"] == [1, 2][k] and clip.meta["audio_channels_mixed"] == 2
        with pytest.raises(ValueError, match="clean latents"):
            gen.decode(gen.init_noise([1]), PROMPT)


# --------------------------------------------------------------------------- errors & doctor


def test_missing_model_path_errors(tmp_path: Path, tiny20: Path) -> None:
    with pytest.raises(MissingWeightsError, match="model_path is not set"):
        LTX2Generator(model_path=None, **GEO)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingWeightsError) as err:
        LTX2Generator(model_path=str(empty), **GEO)
    msg = str(err.value)
    assert str(empty) in msg and "hf download" in msg
    missing_line = msg.splitlines()[0]
    for comp in ("model_index.json", "transformer", "vae", "audio_vae", "vocoder", "text_encoder", "connectors"):
        assert comp in missing_line
    partial = tmp_path / "partial"
    shutil.copytree(tiny20, partial)
    shutil.rmtree(partial / "vocoder")
    for f in (partial / "transformer").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(MissingWeightsError) as err:
        LTX2Generator(model_path=str(partial), **GEO)
    missing_line = str(err.value).splitlines()[0]
    assert "vocoder: folder missing" in missing_line and "transformer: no weight file" in missing_line
    assert "audio_vae" not in missing_line and "text_encoder" not in missing_line
    with pytest.raises(MissingWeightsError, match="Hugging Face cache"):
        LTX2Generator(model_path="nobody-here/not-a-model", **GEO)


def test_prompt_cache_and_audio_fallback(tiny20: Path, caplog) -> None:
    gen = make(tiny20, steps=2, prompt_cache_size=2, **CFG_RESCALE)
    x = gen.init_noise([1])
    gen.denoise(x, PROMPT, 0, 1)
    first = gen._prompt_cache[PROMPT.text]
    gen.denoise(x, PROMPT, 0, 1)
    assert gen._prompt_cache[PROMPT.text] is first  # encoded once
    gen.denoise(x, Prompt("p1", "a cat"), 0, 1)
    gen.denoise(x, Prompt("p2", "a dog"), 0, 1)
    assert list(gen._prompt_cache) == ["a cat", "a dog"]  # LRU bound
    # the pipeline's `audio_x or x`: an explicit audio 0 falls back to the video value, with a warning
    with caplog.at_level("WARNING", logger="avits_core.generators.ltx2"):
        g2 = make(tiny20, **dict(OFF, guidance_rescale=0.7, audio_guidance_rescale=0.0))
    assert g2.audio_guidance_rescale == 0.7 and "audio_guidance_rescale=0 falls back" in caplog.text


def test_bad_settings(tiny20: Path) -> None:
    with pytest.raises(ConfigError, match="8k\\+1"):
        make(tiny20, num_frames=10)
    with pytest.raises(ConfigError, match="multiples of 32"):
        make(tiny20, height=50)
    with pytest.raises(ConfigError, match="num_steps"):
        make(tiny20, steps=1)
    with pytest.raises(ConfigError, match="dtype"):
        make(tiny20, dtype="float8")
    gen = make(tiny20, **OFF)
    wrong = Latents(video=torch.zeros(1, 5, 8), audio=torch.zeros(1, 9, 8), step=0, seeds=[0])
    with pytest.raises(ValueError, match="geometry"):
        gen.denoise(wrong, PROMPT, 0, 1)


def test_doctor(tmp_path: Path, tiny20: Path) -> None:
    ok = ltx2_doctor(str(tiny20), "cpu")
    text = "\n".join(ok)
    assert "MISSING" not in text and "transformer/ LTX2VideoTransformer3DModel" in text
    assert "memory estimate" in text and "parameters" in text
    bad = "\n".join(ltx2_doctor(str(tmp_path / "nowhere"), "cpu"))
    assert "MISSING" in bad and "hf download" in bad
    partial = tmp_path / "p"
    shutil.copytree(tiny20, partial)
    shutil.rmtree(partial / "audio_vae")
    assert any(line.startswith("MISSING: audio_vae/") for line in ltx2_doctor(str(partial), "cpu"))
    if not torch.cuda.is_available():
        assert any("CUDA is not available" in line for line in ltx2_doctor(str(tiny20), "cuda"))


def test_loads_from_hugging_face_cache_by_repo_id(tmp_path: Path, tiny20: Path, monkeypatch) -> None:
    """A repo id resolves to its snapshot in the local HF cache (offline; nothing is downloaded)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-ltx2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    shutil.copytree(tiny20, repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    gen = LTX2Generator(model_path="tiny-org/tiny-ltx2", num_steps=2, max_sequence_length=TINY_MAX_SEQUENCE_LENGTH,
                        cpu_offload=True, **GEO, **OFF)  # cpu_offload is ignored (with a warning) on the CPU
    out = gen.denoise(gen.init_noise([1]), PROMPT, 0, 2)
    ref = make(tiny20, steps=2, **OFF)
    assert torch.equal(out.video, ref.denoise(ref.init_noise([1]), PROMPT, 0, 2).video)
    assert any("found in the Hugging Face cache" in line for line in ltx2_doctor("tiny-org/tiny-ltx2", "cpu"))
