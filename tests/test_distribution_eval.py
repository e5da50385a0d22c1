"""Set-level distribution metrics (FVD, KVD, FAD) in a run's evaluation: config validation, rows in
the metrics table, the reference-feature cache, idempotence, and results_table directions.

The "I3D" is a tiny TorchScript module with I3D's calling convention (per-channel mean and std of
the (B, 3, T, H, W) input: 6-d features); FAD uses the tiny random CLAP of tests/tiny_models.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from avits_core import runner
from avits_core.config import config_from_dict, load_config
from avits_core.errors import ConfigError, MissingWeightsError
from avits_core.media import write_mp4
from avits_core.prompts import Prompt
from avits_core.search.best_of_n import generate_candidates
from tiny_models import build_tiny_clap

PROMPTS = [
    "a small red ball bounces twice with a high click over rain",
    "a big blue cube bounces three times with a low thud",
    "a small green ball bounces once with a high click",
]
REFERENCE = [
    "a small yellow ball bounces twice with a low click",
    "a big red cube bounces once with a high thud over wind",
    "a small blue ball bounces three times with a high click",
    "a big green cube bounces twice with a low thud",
]


class TinyI3D(torch.nn.Module):
    """(B, 3, T, H, W) in [-1, 1] -> (B, 6): per-channel mean and std (I3D's call signature)."""

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("called with the wrong flags")
        flat = x.flatten(2)
        return torch.cat([flat.mean(dim=2), flat.std(dim=2)], dim=1)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dist_assets")
    i3d = d / "tiny_i3d.pt"
    with warnings.catch_warnings():  # FVD's I3D only exists as TorchScript; the deprecation is noise here
        warnings.filterwarnings("ignore", message=".*jit.script.* is deprecated", category=DeprecationWarning)
        torch.jit.script(TinyI3D()).save(str(i3d))
    gen = runner.get_generator("synth", {"num_steps": 4})
    ref = d / "reference"
    ref.mkdir()
    for i, text in enumerate(REFERENCE):
        _, clips = generate_candidates(gen, Prompt(f"r{i}", text), [100 + i])
        write_mp4(clips[0], ref / f"ref{i}.mp4")
    return {"dir": d, "i3d": i3d, "ref": ref, "clap": build_tiny_clap(d / "clap")}


def _cfg_dict(tmp: Path, assets: dict[str, Path], **dist) -> dict:
    distribution = dict(reference=str(assets["ref"]), video={"extractor": "i3d", "path": str(assets["i3d"]), "size": 32},
                        audio={"extractor": "clap", "model_path": str(assets["clap"])})
    distribution.update(dist)
    return dict(name="dist", seed=1, output_root=str(tmp / "runs"), generator={"name": "synth", "params": {"num_steps": 4}},
                prompts={"source": PROMPTS}, search={"method": "best_of_n", "n": 2},
                verifiers=[{"name": "synth_text"}], aggregator={"name": "weighted"},
                evaluation={"oracle": True, "distribution": distribution})


def _run(cfg) -> tuple[runner.RunContext, str]:
    ctx = runner.prepare_run(cfg)
    runner.generate_shard(ctx, ctx.prompts)
    for spec in ctx.all_verifier_specs():
        runner.score_verifier(ctx, spec)
    return ctx, runner.select(ctx)


def test_distribution_rows_cache_idempotence_and_results(tmp_path, assets):
    ctx, sid = _run(config_from_dict(_cfg_dict(tmp_path, assets)))
    n = runner.evaluate(ctx, sid)
    rows = ctx.store.read("metrics").to_pylist()
    dist = [r for r in rows if r["candidate_id"] is None]
    assert n == len(rows)
    assert sorted((r["selection_id"] or "", r["metric"]) for r in dist) == sorted(
        (s, m) for s in ("", sid) for m in ("fvd", "kvd", "fad"))
    for r in dist:
        assert r["prompt_id"] is None and r["held_out"] is True
        assert np.isfinite(r["value"])
        if r["metric"] == "fvd":
            assert r["value"] > 0  # generated and reference scenes differ
        if r["metric"] in ("fvd", "fad"):
            assert r["value"] >= 0
        expected = "i3d:tiny_i3d.pt/16f-uniform-32" if r["metric"] != "fad" else f"clap:{assets['clap']}"
        assert r["extractor"] == expected
    # per-clip rows are untouched: every one still names its prompt and candidate
    assert all(r["prompt_id"] is not None for r in rows if r["candidate_id"] is not None)

    # the FVD equals one computed by hand from the stored media and the reference clips
    from avits_core.media import read_mp4
    from avits_core.metrics.features import I3DVideoFeatures, fvd, video_features

    ext = I3DVideoFeatures(assets["i3d"], size=32)
    cands = sorted(ctx.store.read("candidates").to_pylist(), key=lambda c: c["candidate_id"])
    firsts = {}
    for c in cands:
        firsts.setdefault(c["prompt_id"], c)
    gen = video_features([read_mp4(ctx.store.path / c["media_path"]) for c in firsts.values()], ext)
    ref = video_features([read_mp4(p) for p in sorted(assets["ref"].glob("*.mp4"))], ext)
    base_fvd = next(r["value"] for r in dist if r["selection_id"] is None and r["metric"] == "fvd")
    assert base_fvd == pytest.approx(fvd(gen, ref).value, rel=1e-9)

    # reference features are cached (one file per extractor) and reused
    caches = sorted((ctx.store.path / "analysis").glob("reference-features-*.npz"))
    assert len(caches) == 2
    with np.load(next(p for p in caches if "i3d" in p.name)) as z:
        np.testing.assert_allclose(z["features"], ref.features)
    mtimes = [p.stat().st_mtime_ns for p in caches]

    # idempotent: nothing new, no model needed, cache untouched
    assert runner.evaluate(ctx, sid) == 0
    assert ctx.store.read("metrics").num_rows == len(rows)
    assert [p.stat().st_mtime_ns for p in caches] == mtimes

    # results_table shows the set metrics as lower-is-better, baseline vs selected
    table = {r["metric"]: r for r in runner.results_table(ctx, sid)}
    for m in ("fvd", "kvd", "fad"):
        assert table[m]["higher_is_better"] is False and table[m]["held_out"] is True
        assert table[m]["baseline"] is not None and table[m]["selected"] is not None
    assert table["synth_text"]["higher_is_better"] is True


def test_metrics_subset_and_stale_reference_cache(tmp_path, assets):
    d = _cfg_dict(tmp_path, assets, metrics=["fvd"], audio=None)
    ctx, sid = _run(config_from_dict(d))
    runner.evaluate(ctx, sid)
    dist = [r for r in ctx.store.read("metrics").to_pylist() if r["candidate_id"] is None]
    assert sorted(r["metric"] for r in dist) == ["fvd", "fvd"]
    cache = next((ctx.store.path / "analysis").glob("reference-features-*.npz"))
    # a cache under another reference key is recomputed, not trusted
    np.savez(cache, features=np.zeros((4, 6)), key=np.array("stale"), extractor=np.array("i3d:tiny_i3d.pt/16f-uniform-32"))
    assert runner.evaluate_distribution(ctx, sid) == 0  # nothing missing: the cache is not even read
    with np.load(cache) as z:
        assert str(z["key"]) == "stale"
    from avits_core.selection import SelectionSpec

    # a new selection: its set needs the reference features again
    spec = SelectionSpec(verifiers=["synth_text"], weights=[1.0], aggregator="rank", params={}, budget=1)
    sid2 = runner.select(ctx, spec)
    assert runner.evaluate_distribution(ctx, sid2) == 1
    with np.load(cache) as z:
        assert str(z["key"]) != "stale" and np.abs(z["features"]).sum() > 0
    row = [r for r in ctx.store.read("metrics").to_pylist() if r["selection_id"] == sid2 and r["candidate_id"] is None]
    base = [r for r in dist if r["selection_id"] is None]
    # budget 1 = the first candidate of each prompt = the baseline set
    assert row[0]["value"] == pytest.approx(base[0]["value"], rel=1e-12)


def test_config_hash_unchanged_without_block_and_relative_paths(tmp_path, assets):
    d = _cfg_dict(tmp_path, assets)
    del d["evaluation"]["distribution"]
    cfg = config_from_dict(d)
    import hashlib
    import json

    legacy = cfg.model_dump(exclude={"run_id", "output_root", "runner", "storage"})  # scheduling knobs are not identity
    legacy["search"].pop("prompts_per_task")
    legacy["search"].pop("arw_shards")  # at its default (one ARW state per run) it is not in the identity
    legacy["evaluation"].pop("distribution")
    assert cfg.config_hash() == hashlib.sha256(json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()
    with_block = config_from_dict(_cfg_dict(tmp_path, assets))
    assert with_block.config_hash() != cfg.config_hash()

    # relative reference / i3d paths resolve against the config file's folder
    d = _cfg_dict(tmp_path, assets, reference="reference", video={"extractor": "i3d", "path": "tiny_i3d.pt"})
    (assets["dir"] / "cfg.yaml").write_text(yaml.safe_dump(d))
    loaded = load_config(assets["dir"] / "cfg.yaml")
    assert loaded.evaluation.distribution.reference == str(assets["ref"].resolve())
    assert loaded.evaluation.distribution.video.path == str(assets["i3d"].resolve())
    assert [p.name for p in loaded.evaluation.distribution.reference_files()] == [f"ref{i}.mp4" for i in range(4)]


def test_reference_lists(tmp_path, assets):
    refs = sorted(assets["ref"].glob("*.mp4"))
    (tmp_path / "refs.txt").write_text("# reference clips\n" + "\n".join(str(p) for p in refs[:3]) + "\n\n")
    cfg = config_from_dict(_cfg_dict(tmp_path, assets, reference=str(tmp_path / "refs.txt")))
    assert cfg.evaluation.distribution.reference_files() == refs[:3]
    (tmp_path / "refs.csv").write_text("path,split\n" + "".join(f"{p},test\n" for p in refs))
    cfg = config_from_dict(_cfg_dict(tmp_path, assets, reference=str(tmp_path / "refs.csv")))
    assert cfg.evaluation.distribution.reference_files() == refs
    (tmp_path / "bad.csv").write_text("file\n" + str(refs[0]) + "\n")
    with pytest.raises(ConfigError, match=r"evaluation\.distribution\.reference.*no 'path' column"):
        config_from_dict(_cfg_dict(tmp_path, assets, reference=str(tmp_path / "bad.csv"))).evaluation.distribution.reference_files()
    (tmp_path / "gone.txt").write_text(f"{refs[0]}\n{tmp_path / 'nope.mp4'}\n")
    with pytest.raises(ConfigError, match=r"nope\.mp4"):
        runner.validate_config(config_from_dict(_cfg_dict(tmp_path, assets, reference=str(tmp_path / "gone.txt"))))


@pytest.mark.parametrize("change, error, pattern", [
    (dict(reference="no-such-folder"), ConfigError, r"evaluation\.distribution\.reference: .*no-such-folder.* does not exist"),
    (dict(video={"extractor": "i3d", "path": "missing_i3d.pt"}), MissingWeightsError, r"FVD I3D.*missing_i3d\.pt"),
])
def test_missing_files_fail_before_generation(tmp_path, assets, change, error, pattern):
    d = _cfg_dict(tmp_path, assets, **change)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(d))
    cfg = load_config(tmp_path / "cfg.yaml")
    with pytest.raises(error, match=pattern):
        runner.prepare_run(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("change, pattern", [
    (dict(video=None, audio=None), r"evaluation\.distribution.*set video"),
    (dict(audio=None, metrics=["fad"]), r"'fad' needs audio"),
    (dict(metrics=["fvd", "fvd"]), r"listed twice"),
    (dict(metrics=["fid"]), r"evaluation\.distribution\.metrics\.0"),
    (dict(video={"extractor": "c3d", "path": "x.pt"}), r"evaluation\.distribution\.video\.extractor"),
    (dict(refs="x"), r"evaluation\.distribution\.refs: unknown key"),
])
def test_config_validation_names_the_field(tmp_path, assets, change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(_cfg_dict(tmp_path, assets, **change))


def test_javisbench_protocol_in_a_run(tmp_path, assets):
    """evaluation.distribution.protocol: javisbench gives the evaluator's recipes, tagged in metrics.extractor."""
    from avits_core.media import read_mp4
    from avits_core.metrics.distribution import _distribution_extractors
    from avits_core.metrics.features import ClapAudioEmbedding, I3DVideoFeatures, audio_features, fad, fvd, video_features

    cfg = config_from_dict(_cfg_dict(tmp_path, assets, protocol="javisbench"))
    ctx, sid = _run(cfg)
    runner.evaluate(ctx, sid)
    dist = {(r["selection_id"], r["metric"]): r for r in ctx.store.read("metrics").to_pylist() if r["candidate_id"] is None}
    assert dist[(None, "fvd")]["extractor"] == "i3d:tiny_i3d.pt/16f-uniform-32+protocol=javisbench"
    assert dist[(None, "fad")]["extractor"] == f"clap:{assets['clap']}+protocol=javisbench"
    cands = sorted(ctx.store.read("candidates").to_pylist(), key=lambda c: c["candidate_id"])
    firsts = {}
    for c in cands:
        firsts.setdefault(c["prompt_id"], c)
    clips = [read_mp4(ctx.store.path / c["media_path"]) for c in firsts.values()]
    refs = [read_mp4(p) for p in sorted(assets["ref"].glob("*.mp4"))]
    ext = I3DVideoFeatures(assets["i3d"], size=32)
    g, r = video_features(clips, ext), video_features(refs, ext)
    assert dist[(None, "fvd")]["value"] == pytest.approx(fvd(g, r, protocol="javisbench").value, rel=1e-9)
    assert dist[(None, "fvd")]["value"] != pytest.approx(fvd(g, r).value, rel=1e-6)
    aext = ClapAudioEmbedding(str(assets["clap"]))
    ga, ra = audio_features(clips, aext), audio_features(refs, aext)
    assert dist[(None, "fad")]["value"] == pytest.approx(fad(ga, ra, protocol="javisbench").value, rel=1e-6)
    # the evaluator's own extractors are offered by name
    d = config_from_dict(_cfg_dict(tmp_path, assets, protocol="javisbench",
                                   video={"extractor": "i3d-jb", "path": str(assets["i3d"])},
                                   audio={"extractor": "audioclip", "model_path": str(assets["i3d"])})).evaluation.distribution
    ex = _distribution_extractors(d)
    assert type(ex["video"]).__name__ == "JavisBenchI3DFeatures" and ex["video"].num_frames == 24
    assert type(ex["audio"]).__name__ == "AudioClipEmbedding"
