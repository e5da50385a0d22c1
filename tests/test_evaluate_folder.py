"""``avits evaluate``: a folder of mp4 files scored without generating, with every edge case visible."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from avclips import bounce_clip, jump_clip
from avits_core.errors import ConfigError
from avits_core.evaluate_folder import EvalSpec, clip_file_name, evaluate_folder, prepare
from avits_core.media import write_mp4, write_wav
from avits_core.store.parquet import RunStore
from tiny_models import build_tiny_i3d_and_audioclip


def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _video_only_mp4(path: Path, frames: np.ndarray, fps: int = 12) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.fixture
def messy(tmp_path):
    """p0 ok, p1 ok, p2 missing, p3 without audio, p4 corrupt, p5 ok."""
    folder = tmp_path / "clips"
    folder.mkdir()
    write_mp4(jump_clip(), folder / "p0.mp4")
    write_mp4(bounce_clip(), folder / "p1.mp4")
    _video_only_mp4(folder / "p3.mp4", jump_clip().video)
    (folder / "p4.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    write_mp4(jump_clip(seed=4), folder / "p5.mp4")
    rows = [{"id": i, "text": f"prompt {i}", "cat0_ind": c, "cat0_title": t}
            for i, c, t in (("p0", "0", "Natural"), ("p1", "1", "Urban"), ("p2", "0", "Natural"),
                            ("p3", "1", "Urban"), ("p4", "0,1", "Natural,Urban"), ("p5", "1", "Urban"))]
    return folder, _csv(tmp_path / "prompts.csv", rows)


def test_every_edge_case_is_an_error_row_or_a_value(messy, tmp_path):
    folder, prompts = messy
    out = tmp_path / "ev"
    res = evaluate_folder(EvalSpec(folder=folder, prompts=prompts, out=out))
    info = res["evaluation"]
    assert info["n_prompts"] == 6 and info["n_missing"] == 1 and info["naming"] == "id"
    err = info["errors"]
    assert "missing" in err["av_align"]["p2"] and "p2.mp4" in err["av_align"]["p2"]
    assert "missing" in err["temporal_flickering"]["p2"]
    assert "no audio stream" in err["av_align"]["p3"]
    assert "p3" not in err["temporal_flickering"]  # video-only metric still measured
    assert "p4.mp4" in err["av_align"]["p4"] and "p4" in err["temporal_flickering"]
    assert set(err["av_align"]) == {"p2", "p3", "p4"}

    store = RunStore(out.parent, out.name)
    m = store.read("metrics").to_pylist()
    assert len(m) == 2 * 6  # one row per (clip, metric): nothing skipped
    vals = {(r["metric"], r["prompt_id"]): r["value"] for r in m}
    assert vals[("av_align", "p0")] == pytest.approx(1.0)
    assert vals[("av_align", "p5")] is not None
    assert vals[("temporal_flickering", "p3")] is not None and 0 < vals[("temporal_flickering", "p3")] <= 1
    for pid in ("p2", "p4"):
        assert vals[("av_align", pid)] is None and vals[("temporal_flickering", pid)] is None

    # the evaluator's JSON layout: per-clip list in CSV order, per-aspect category means
    s = json.loads((out / "summary.json").read_text())
    assert set(s) == {"av_align", "temporal_flickering"}
    a = s["av_align"]
    assert a["all"][2] is None and a["all"][0] == pytest.approx(1.0)
    ok = [v for v in a["all"] if v is not None]
    assert a["overall"] == pytest.approx(np.mean(ok))
    assert a["0"][0] == pytest.approx(np.mean([a["all"][0]]))  # category 0: p0, p2 (missing), p4 (corrupt)
    assert a["0"][1] == pytest.approx(np.mean([a["all"][1], a["all"][5]]))  # p1, p3 (no audio), p4, p5
    cats = json.loads((out / "categories.json").read_text())
    c1 = next(r for r in cats if r["metric"] == "av_align" and r["category"] == 1)
    assert (c1["n"], c1["n_failed"], c1["title"]) == (2, 2, "Urban")


def test_cached_rows_are_not_recomputed_and_a_replaced_clip_is(messy, tmp_path):
    folder, prompts = messy
    out = tmp_path / "ev"
    spec = EvalSpec(folder=folder, prompts=prompts, out=out)
    evaluate_folder(spec)
    store = RunStore(out.parent, out.name)
    n1 = store.read("rewards").num_rows
    evaluate_folder(spec)
    ok_then = [r for r in store.read("rewards").to_pylist() if r["status"] == "ok"]
    assert store.read("rewards").num_rows - n1 == 5  # only the 5 error rows are retried
    assert len(ok_then) == n1 - 5
    write_mp4(jump_clip(audio_shift=0.3), folder / "p0.mp4")  # a new clip for p0
    res = evaluate_folder(spec)
    assert res["summary"]["av_align"]["all"][0] == pytest.approx(0.0)


def test_extra_clip_and_bad_requests_are_clear_errors(messy, tmp_path):
    folder, prompts = messy
    write_mp4(jump_clip(), folder / "stray.mp4")
    with pytest.raises(ConfigError, match=r"1 mp4 file\(s\) match no prompt.*stray\.mp4"):
        prepare(EvalSpec(folder=folder, prompts=prompts, out=tmp_path / "ev"))
    plan = prepare(EvalSpec(folder=folder, prompts=prompts, out=tmp_path / "ev", allow_extra=True))
    assert plan.extra == ["stray.mp4"]
    with pytest.raises(ConfigError, match="unknown metric 'nope'"):
        prepare(EvalSpec(folder=folder, prompts=prompts, metrics={"nope": {}}, allow_extra=True))
    with pytest.raises(ConfigError, match="--protocol"):
        prepare(EvalSpec(folder=folder, prompts=prompts, protocol="paper", allow_extra=True))
    with pytest.raises(ConfigError, match="--reference"):
        prepare(EvalSpec(folder=folder, prompts=prompts, metrics={"fvd": {"path": "x.pt"}}, allow_extra=True))
    bad = _csv(tmp_path / "bad.csv", [{"id": "p0", "text": "x"}, {"id": "a/b c", "text": "y"}])
    with pytest.raises(ConfigError, match=r"'a/b c'"):  # refused, never rewritten into another file name
        prepare(EvalSpec(folder=folder, prompts=bad, allow_extra=True))
    assert clip_file_name("m1INxJfEzjQ_scene-1") == "m1INxJfEzjQ_scene-1.mp4"
    with pytest.raises(ConfigError, match=r"prompt id '\.\.'"):
        clip_file_name("..")
    with pytest.raises(ConfigError, match="not a folder"):
        prepare(EvalSpec(folder=tmp_path / "nowhere", prompts=prompts))


#: JavisBench's av_align on these files, computed by running the evaluator's published functions
#: (extract_frames on the mp4 with OpenCV, detect_audio_peaks on the 16-bit wav) in a throwaway script
#: outside the repository; the files were written by avits' own writers, byte-identical here.
JAVISBENCH_FILES = {
    "sample_0000": (lambda: bounce_clip(), 1.4999996250000938, "d61b042bd15b6cc8"),
    "sample_0001": (lambda: jump_clip(audio_shift=0.1, seed=2), 0.285714244897965, "ee00a30249db2e5e"),
    "sample_0002": (lambda: jump_clip(fps=24.0, seed=1), 0.9999997500000625, "eaa3972edc373df2"),
}


def test_javisbench_protocol_on_files_matches_the_evaluator(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    for name, (make, _, digest) in JAVISBENCH_FILES.items():
        c = make()
        p = write_mp4(c, folder / f"{name}.mp4")
        write_wav(c.audio, c.sample_rate, folder / f"{name}.wav", subtype="PCM_16")
        if hashlib.sha256(p.read_bytes()).hexdigest()[:16] != digest:
            pytest.skip(f"this x264 build encodes {name}.mp4 differently; the stored oracle is for other bytes")
    prompts = _csv(tmp_path / "JavisBench-mini.csv", [{"text": f"t{i}"} for i in range(3)])
    res = evaluate_folder(EvalSpec(folder=folder, prompts=prompts, out=tmp_path / "jb", protocol="javisbench",
                                   metrics={"av_align": {}}))
    assert res["evaluation"]["naming"] == "javisbench"
    got = res["summary"]["av_align"]
    want = [v[1] for v in JAVISBENCH_FILES.values()]
    assert got == pytest.approx(float(np.mean(want)), rel=1e-12)  # no categories: one number, as the evaluator
    rows = RunStore(tmp_path, "jb").read("metrics").to_pylist()
    assert sorted(r["value"] for r in rows) == pytest.approx(sorted(want), rel=1e-12)
    assert {r["extractor"] for r in rows} == {"av_align+protocol=javisbench"}
    versions = {r["verifier_version"] for r in RunStore(tmp_path, "jb").read("rewards").to_pylist()}
    assert versions == {"1+protocol=javisbench"}


def test_tasks_and_cli(messy, tmp_path):
    from typer.testing import CliRunner

    from avits.cli import app
    from avits_core import evaluate_folder as ef
    from tasks import evaluate as t

    folder, prompts = messy
    spec = ef.spec_to_dict(EvalSpec(folder=folder, prompts=prompts, out=tmp_path / "ev", batch_size=4))
    plan = ef.cached_plan(spec)
    assert [len(b) for b in ef.batches(plan)] == [4, 2]
    n = sum(t.score_clips.fn(spec, [e.prompt.prompt_id for e in b]) for b in ef.batches(plan))
    assert n == 12
    assert t.score_clips.fn(spec, ["p0", "p1"]) == 0  # cached
    res = t.finish.fn(spec)
    assert res["evaluation"]["n_errors"] == {"av_align": 3, "temporal_flickering": 2}
    before = {e.prompt.prompt_id: e.candidate_id for e in ef.cached_plan(spec).entries}
    write_mp4(jump_clip(audio_shift=0.2), folder / "p0.mp4")
    assert ef.cached_plan(spec).entries[0].candidate_id == before["p0"]  # the run's plan
    assert ef.refresh_plan(spec).entries[0].candidate_id != before["p0"]  # a new flow run sees the new file
    assert ef.cached_plan(spec).entries[1].candidate_id == before["p1"]

    runner = CliRunner()
    r = runner.invoke(app, ["evaluate", str(folder), "--prompts", str(prompts), "--out", str(tmp_path / "ev2"), "--local"])
    assert r.exit_code == 0, r.output
    assert "av_align" in r.output and (tmp_path / "ev2" / "summary.json").is_file()
    write_mp4(jump_clip(), folder / "stray.mp4")
    r = runner.invoke(app, ["evaluate", str(folder), "--prompts", str(prompts), "--local"])
    assert r.exit_code == 2 and "stray.mp4" in r.output
    r = runner.invoke(app, ["evaluate", str(folder), "--prompts", str(prompts), "--local", "--allow-extra",
                            "--metrics", "av_align", "--metric-param", "av_align.protocol=javisbench",
                            "--out", str(tmp_path / "ev3")])
    assert r.exit_code == 0, r.output
    assert "1+protocol=javisbench" in r.output
    r = runner.invoke(app, ["evaluate", str(folder), "--prompts", str(prompts), "--local", "--allow-extra",
                            "--metric-param", "clip.num_frames=4"])
    assert r.exit_code == 2 and "clip" in r.output


def test_protocol_reaches_every_verifier_with_a_published_variant():
    from avits_core.evaluate_folder import make_verifier

    assert make_verifier("av_align", {}, "javisbench").cache_version == "1+protocol=javisbench"
    assert make_verifier("av_align", {}, "avits").cache_version == "1"
    assert "policy=javisbench" in make_verifier("desync", {}, "javisbench").cache_version
    assert "video_policy=tile" in make_verifier("vqascore", {}, "javisbench").cache_version
    assert make_verifier("temporal_flickering", {}, "javisbench").cache_version == "1"  # no counterpart
    assert make_verifier("clip", {"model_path": "/nowhere"}, "javisbench").protocol == "javisbench"


def test_set_level_metrics_with_tiny_i3d_and_audioclip(tmp_path):
    from avits_core.metrics.features import FeatureSet, fad, fvd, kvd_video
    from avits_core.metrics.frechet import frechet_distance_javisbench

    i3d, ac, arch = build_tiny_i3d_and_audioclip(tmp_path)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i in range(4):
        write_mp4(jump_clip(seed=i, video_noise=2.0, audio_noise=0.01), gen / f"p{i}.mp4")
    for i in range(3):
        write_mp4(bounce_clip(seed=i), ref / f"r{i}.mp4")
    prompts = _csv(tmp_path / "p.csv", [{"id": f"p{i}", "text": "x"} for i in range(4)])
    metrics = {"fvd": {"path": str(i3d), "extractor": "i3d", "num_frames": 4, "size": 16}, "kvd": {},
               "fad": {"path": str(ac), **arch}}
    res = evaluate_folder(EvalSpec(folder=gen, prompts=prompts, out=tmp_path / "ev", protocol="javisbench",
                                   metrics=metrics, reference=ref))
    rows = {r["metric"]: r for r in RunStore(tmp_path, "ev").read("metrics").to_pylist()}
    assert set(rows) == {"fvd", "kvd", "fad"} and all(r["prompt_id"] is None for r in rows.values())
    assert rows["fad"]["extractor"] == "audioclip:ac.pt/16k-4s+protocol=javisbench"
    assert res["summary"]["fvd"] == rows["fvd"]["value"]
    # the same numbers from the library functions on the same features (both sets cut to 3 rows)
    from avits_core.evaluate_folder import prepare, read_entry, set_extractors

    plan = prepare(EvalSpec(folder=gen, prompts=prompts, out=tmp_path / "ev", protocol="javisbench",
                            metrics=metrics, reference=ref))
    ex = set_extractors(plan.set_metrics, "javisbench")
    from avits_core.media import read_mp4

    g = [read_entry(e, "javisbench")[0] for e in plan.entries]
    r = [read_mp4(ref / f"r{i}.mp4") for i in range(3)]
    ga = ex["audio"].embed([c.audio for c in g], [c.sample_rate for c in g])
    ra = ex["audio"].embed([c.audio for c in r], [c.sample_rate for c in r])
    assert rows["fad"]["value"] == pytest.approx(1e4 * frechet_distance_javisbench(ga[:3], ra), rel=1e-6)
    gv, rv = ex["video"](g), ex["video"](r)
    assert rows["fvd"]["value"] == pytest.approx(fvd(gv, rv, protocol="javisbench").value, rel=1e-9)
    assert rows["kvd"]["value"] == pytest.approx(kvd_video(gv, rv, protocol="javisbench").value, rel=1e-9)
    assert fad(FeatureSet(ga, "a"), FeatureSet(ra, "a")).value != pytest.approx(rows["fad"]["value"])


def test_javisbench_reference_cache_pairs_rows_and_breaks_down_by_category(tmp_path):
    import torch

    from avits_core.metrics.features import FeatureSet, fvd

    i3d, ac, arch = build_tiny_i3d_and_audioclip(tmp_path)
    gen = tmp_path / "gen"
    gen.mkdir()
    for i in range(6):
        write_mp4(jump_clip(seed=i, video_noise=2.0, audio_noise=0.01), gen / f"p{i}.mp4")
    cats = ["0", "1", "0", "1", "0", "0,1"]
    prompts = _csv(tmp_path / "p.csv", [{"id": f"p{i}", "text": "x", "cat0_ind": c} for i, c in enumerate(cats)])
    rng = np.random.default_rng(0)
    cache = {"video": torch.from_numpy(rng.standard_normal((7, 12))), "audio": torch.from_numpy(rng.standard_normal((7, 8)))}
    torch.save(cache, tmp_path / "JavisBench-mini-vanilla-max4s.pt")
    metrics = {"fvd": {"path": str(i3d), "extractor": "i3d", "num_frames": 4, "size": 16}, "fad": {"path": str(ac), **arch}}
    spec = EvalSpec(folder=gen, prompts=prompts, out=tmp_path / "ev", protocol="javisbench", metrics=metrics,
                    reference=tmp_path / "JavisBench-mini-vanilla-max4s.pt")
    res = evaluate_folder(spec)
    s = res["summary"]["fvd"]
    assert set(s) == {"overall", "0"} and len(s["0"]) == 5  # JavisBench has 5 event-scenario categories
    assert s["0"][2:] == [None, None, None]  # no prompt in them
    z = np.load(tmp_path / "ev" / f"set-features-{res['evaluation']['evaluation_id']}.npz")
    g = z["video_gen"]
    np.testing.assert_array_equal(z["video_ref"], cache["video"].numpy()[:6])  # real row i pairs with CSV row i
    cat0 = [0, 2, 4, 5]
    want = fvd(FeatureSet(g[cat0], "f"), FeatureSet(cache["video"].numpy()[cat0], "f"), protocol="javisbench").value
    assert s["0"][0] == pytest.approx(want, rel=1e-9)
    assert s["overall"] == pytest.approx(fvd(FeatureSet(g, "f"), FeatureSet(cache["video"].numpy()[:6], "f"),
                                             protocol="javisbench").value, rel=1e-9)
    assert isinstance(res["summary"]["fad"]["overall"], float)
    with pytest.raises(ConfigError, match="--protocol javisbench"):
        prepare(EvalSpec(folder=gen, prompts=prompts, out=tmp_path / "ev2", metrics=metrics,
                         reference=tmp_path / "JavisBench-mini-vanilla-max4s.pt"))


def test_scoring_reads_the_rewards_table_once_per_batch_and_decodes_each_clip_once(messy, tmp_path, monkeypatch):
    """pending() reads the rewards table once for every metric of a batch; with the javisbench protocol
    the frames come from OpenCV and the audio from read_mp4_audio, never a second full read_mp4."""
    import avits_core.media as media
    from avits_core import evaluate_folder as ef

    folder, prompts = messy
    reads, full = [], []
    real_read, real_mp4 = RunStore.read, media.read_mp4
    monkeypatch.setattr(RunStore, "read", lambda self, table, *a, **k: reads.append(table) or real_read(self, table, *a, **k))
    monkeypatch.setattr(media, "read_mp4", lambda *a, **k: full.append(a[0]) or real_mp4(*a, **k))
    spec = EvalSpec(folder=folder, prompts=prompts, out=tmp_path / "ev", protocol="javisbench", batch_size=3,
                    metrics={"av_align": {}, "temporal_flickering": {}, "synth_text": {}})
    plan = prepare(spec)
    store = plan.store()
    for b in ef.batches(plan):
        ef.score_entries(plan, store, b)
    assert reads.count("rewards") == 2  # two batches, three metrics
    assert full == []  # p0, p1, p5 have audio in the mp4: read by read_mp4_audio, not a second decode
    rows = store.read("rewards").to_pylist()
    assert len(rows) == 18 and sum(r["status"] == "ok" for r in rows) == 7  # p0 p1 p5 x 2 + p3 flickering
    assert {p: sorted(r["verifier"] for r in rows if r["prompt_id"] == p and r["status"] == "ok")
            for p in ("p0", "p3")} == {"p0": ["av_align", "temporal_flickering"], "p3": ["temporal_flickering"]}
