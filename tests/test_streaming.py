"""Streaming generation (issue 10, case 7: memory must not grow with N).

The engine makes an event chunk by chunk (``generation.iter_event``, chunks of the generator's batch
size, ``DEFAULT_CHUNK_SIZE`` = 8 for SynthAV) and the store-backed step writes and drops each chunk.
These tests check that (1) chunking changes no candidate of any search method (ids, seeds, NFE,
lineage, pixels, samples, kept latents, scores, selections); (2) one event's memory stays flat from
N = 8 to N = 256 (before streaming it grew linearly: see ``test_event_memory_is_flat_in_n``); (3) a
crash between two chunks is resumed with no duplicated row and no chunk generated twice.
"""

from __future__ import annotations

import json
import tracemalloc
import weakref

import numpy as np
import pytest

from avits_core.aggregate import get_aggregator
from avits_core.errors import EvoSearchError
from avits_core.generators.synth import SynthAVGenerator
from avits_core.prompts import Prompt
from avits_core.search import generation
from avits_core.search.base import CandidatePlan, EventPlan, get_search
from avits_core.search.memory import run_in_memory
from avits_core.verifiers.base import Verifier

PROMPTS = [Prompt("pa", "a small red ball bounces three times with a high click over rain"),
           Prompt("pb", "a large blue cube bounces twice with a low beep over wind")]


class Brightness(Verifier):
    """Test verifier: mean pixel value of the clip's frames / 255 plus the RMS of its audio, >= 0."""

    name = "brightness"
    version = "1"
    higher_is_better = True

    def score_clip(self, clip, prompt):
        a = np.asarray(clip.audio, dtype=np.float64)
        return float(np.asarray(clip.video, dtype=np.float64).mean() / 255.0 + np.sqrt(np.mean(a * a)))


class CountingSynth(SynthAVGenerator):
    """SynthAV that records how many rows every ``decode`` call got."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.decoded: list[int] = []

    def decode(self, latents, prompt):
        self.decoded.append(len(latents))
        return super().decode(latents, prompt)


METHODS = [
    ("best_of_n", dict(n=11)),
    ("evosearch", dict(evolution_schedule=[0, 3], population_size_schedule=[5, 5, 5], elite_size=1,
                       mutation_rate=0.5)),
    ("zero_order", dict(n=9, neighbours=4)),
    ("search_over_paths", dict(paths=3, branches=3, schedule=[3, 5])),
    ("smc", dict(particles=5, resample_steps=[2, 5], ess_threshold=1.0)),
    ("beam", dict(beams=2, candidates_per_beam=3, beam_steps=[3], lookahead=2)),
    ("prune", dict(n=7, prune_steps=[3], keep=0.5)),
]


def _summary(results):
    out = []
    for r in results:
        recs = [(c.candidate_id, c.generation, c.step, c.parent_ids, c.seed, c.nfe, c.nfe_own, c.batch_index, c.kind,
                 c.x0_step) for c in r.records]
        out.append((r.prompt_id, recs, r.scores, r.aggregates, r.selected))
    return out


@pytest.mark.parametrize("method, params", METHODS, ids=[m for m, _ in METHODS])
def test_chunking_changes_no_candidate_of_any_method(method, params):
    """Chunks of 1, 3 and the whole event give the same candidates (ids, seeds, NFE, lineage, bytes of
    every clip), scores, aggregates and selections; with chunks of 1 every decode call holds one row."""
    agg = lambda: get_aggregator("weighted", ["brightness"])  # noqa: E731
    runs = {}
    for size in (1, 3, 10_000):
        gen = CountingSynth(num_steps=8, size=16, duration=0.5, sample_rate=8000)
        res = run_in_memory(gen, [Brightness()], agg(), PROMPTS, get_search(method, params), run_seed=7,
                            chunk_size=size)
        runs[size] = (res, gen.decoded)
    (whole, whole_calls), (ones, one_calls), (threes, three_calls) = runs[10_000], runs[1], runs[3]
    assert set(one_calls) == {1} and max(three_calls) <= 3
    n_cands = sum(len(r.records) for r in whole)
    assert sum(one_calls) == sum(three_calls) == sum(whole_calls) == n_cands
    assert len(one_calls) == n_cands > len(whole_calls)  # the chunking really happened
    assert _summary(ones) == _summary(whole) == _summary(threes)
    for a, b, c in zip(whole, ones, threes):
        for cid, clip in a.clips.items():
            for other in (b.clips[cid], c.clips[cid]):
                assert np.array_equal(clip.video, other.video) and np.array_equal(clip.audio, other.audio), cid
                assert clip.meta == other.meta, cid


def test_streamed_in_memory_run_keeps_no_clip_and_scores_the_same():
    agg = lambda: get_aggregator("weighted", ["brightness"])  # noqa: E731
    gen = SynthAVGenerator(num_steps=6, size=16, duration=0.5, sample_rate=8000)
    kept = run_in_memory(gen, [Brightness()], agg(), PROMPTS, get_search("best_of_n", dict(n=20)), 3)
    streamed = run_in_memory(gen, [Brightness()], agg(), PROMPTS, get_search("best_of_n", dict(n=20)), 3,
                             keep_clips=False, chunk_size=4)
    assert all(not r.clips for r in streamed) and all(len(r.clips) == 20 for r in kept)
    assert _summary(streamed) == _summary(kept)


def test_kept_latents_do_not_depend_on_the_chunking():
    """Branch candidates (a mutation at step 3 from stored parents) with latents kept at steps 3 and 5:
    identical tensors, NFE and records for chunks of 1, 2 and the whole event."""
    import torch

    gen = SynthAVGenerator(num_steps=8, size=16, duration=0.5, sample_rate=8000)
    p = PROMPTS[0]
    parents = generation.generate_event(gen, p, EventPlan("pa", 0, [CandidatePlan(seed=s) for s in (11, 12)]), [3], None)
    store = {r.candidate_id: lat for r, lat in zip(parents.records, parents.latents)}

    def parent_latent(cid, step):
        return store[cid][step]

    cands = [CandidatePlan(seed=100 + i, parent=parents.records[i % 2].candidate_id, step=3,
                           mutation={"rule": "vp", "beta": 0.4}) for i in range(5)]
    cands.insert(2, CandidatePlan(seed=99))  # a fresh one between the branches: two groups
    plan = EventPlan("pa", 1, cands)
    out = {k: generation.generate_event(gen, p, plan, [3, 5], parent_latent, chunk_size=k) for k in (1, 2, 100)}
    ref = out[100]
    assert [r.nfe for r in ref.records][:2] == [gen.num_steps + 1] * 2  # parent's 3 + vp's predict_x0 + 5 more
    for k in (1, 2):
        assert out[k].records == ref.records
        for a, b in zip(out[k].latents, ref.latents):
            assert a.keys() == b.keys() and set(a) <= {3, 5}
            for step in a:
                assert torch.equal(a[step].video, b[step].video) and torch.equal(a[step].audio, b[step].audio)
                assert a[step].nfe.tolist() == b[step].nfe.tolist() and a[step].seeds == b[step].seeds
        for a, b in zip(out[k].clips, ref.clips):
            assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)


def test_event_chunks_cut_groups_in_plan_order():
    gen = SynthAVGenerator(num_steps=8)
    cands = [CandidatePlan(seed=i) for i in range(5)]
    cands[3] = CandidatePlan(seed=3, parent="pa_g00_c000", step=4, mutation={"rule": "vp", "beta": 0.5})
    plan = EventPlan("pa", 1, cands)
    got = [idx for _, idx in generation.event_chunks(gen, plan, 2)]
    assert got == [[0, 1], [2, 4], [3]]
    assert [idx for _, idx in generation.event_chunks(gen, plan, 2, skip=[1, 2])] == [[0, 4], [3]]
    assert generation.chunk_size_of(gen) == generation.DEFAULT_CHUNK_SIZE == 8
    gen.batch_size = 3  # a generator with a batch size (LTX-2's generator.params.batch_size) sets the chunk
    assert generation.chunk_size_of(gen) == 3 and generation.chunk_size_of(gen, 5) == 5
    for bad in (0, -1, 1.5, True):
        with pytest.raises(Exception, match="chunk size must be an integer >= 1"):
            generation.chunk_size_of(gen, bad)
    with pytest.raises(EvoSearchError, match="must stop at a step"):  # a bad plan fails before any work
        next(generation.iter_event(gen, PROMPTS[0], EventPlan("pa", 0, [CandidatePlan(seed=1, stop=9)]), [], None))


# --------------------------------------------------------------------------- store-backed step


def _cfg(tmp_path, n, name="stream", size=32, prompts=2):
    from avits_core.config import config_from_dict

    return config_from_dict(dict(
        name=name, output_root=str(tmp_path), seed=0,
        generator=dict(name="synth", params=dict(num_steps=2, size=size, duration=0.5, fps=12, sample_rate=8000)),
        prompts=dict(source=[p.text for p in PROMPTS[:prompts]]),
        search=dict(method="best_of_n", n=n), verifiers=[dict(name="av_sync")],
        aggregator=dict(name="weighted"), evaluation=dict(oracle=True, verifiers=[])))


def _event_memory(tmp_path, n, monkeypatch):
    """(peak traced bytes above what the event leaves behind, most clips alive at once) of generating
    and storing event 0 of a one-prompt run at budget ``n``."""
    import avits_core.media as media
    from avits_core import runner
    from avits_core.runner import generate as gen_mod

    # mp4 encoding is left out (an empty file is written instead): it allocates in C, where tracemalloc
    # does not look, and 256 encodes would make this test slow; the clips still reach the writer.
    monkeypatch.setattr(media, "write_mp4", lambda clip, target: target.write_bytes(b""))
    ctx = runner.prepare_run(_cfg(tmp_path / f"n{n}", n, name=f"mem{n}", prompts=1), check_models=False)
    runner.start_search(ctx)
    gen = runner.get_generator(ctx.cfg.generator.name, ctx.cfg.generator.params)
    refs: list[weakref.ref] = []
    most = [0]
    orig = type(gen).decode

    def decode(self, latents, prompt):
        clips = orig(self, latents, prompt)
        refs.extend(weakref.ref(c) for c in clips)
        most[0] = max(most[0], sum(r() is not None for r in refs))
        return clips

    monkeypatch.setattr(type(gen), "decode", decode)
    pid = ctx.prompts[0].prompt_id
    ctx.state.plan_for(pid, 0, gen.num_steps)
    tracemalloc.start()
    try:
        rows = gen_mod.generate_event(ctx, pid, 0)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    monkeypatch.setattr(type(gen), "decode", orig)
    assert len(rows) == n and len({r["candidate_id"] for r in rows}) == n
    return peak - current, most[0]


def test_event_memory_is_flat_in_n(tmp_path, monkeypatch):
    """Peak memory of one store-backed event at N = 256 vs N = 8 (SynthAV, 32x32 px, 6 frames, 0.5 s at
    8 kHz). Measured with tracemalloc (numpy arrays and Python objects; it counts this process's own
    allocations only, so other work on a shared machine does not move it, unlike RSS), as the peak
    above what the event leaves behind (the rows the run state keeps for the whole run: ~2.5 kB per
    candidate, by design), and as the most clip objects alive at once. Before streaming (one batch
    per event, measured with this very helper on the code before the change): 9.6 MB at N = 256 vs
    0.55 MB at N = 8 (17x) and 256 clips alive; now 0.40 MB vs 0.55 MB and 8 clips."""
    _event_memory(tmp_path, 2, monkeypatch)  # warms every import and cache of the process
    small, clips_small = _event_memory(tmp_path, 8, monkeypatch)
    large, clips_large = _event_memory(tmp_path, 256, monkeypatch)
    assert clips_small == 8 and clips_large == generation.DEFAULT_CHUNK_SIZE == 8
    assert large < 1.5 * small, (large, small)


def test_crash_between_chunks_then_rerun_finishes_the_event_once(tmp_path, monkeypatch):
    """A kill after 2 of 3 chunks: their media and staged rows stay, no candidate row is stored (the
    event is stored whole or not at all); the rerun generates only the last chunk, appends the 20 rows
    once (one part file), removes the staged rows, and equals an uninterrupted run row for row."""
    from avits_core import runner
    from avits_core.runner import generate as gen_mod
    from avits_core.store.duck import query

    n = 20  # chunks of 8, 8, 4
    ref = runner.prepare_run(_cfg(tmp_path / "ref", n, size=16), check_models=False)
    runner.start_search(ref)
    pid = ref.prompts[0].prompt_id
    want = gen_mod.generate_event(ref, pid, 0)

    ctx = runner.prepare_run(_cfg(tmp_path / "crash", n, size=16), check_models=False)
    runner.start_search(ctx)
    orig_iter = generation.iter_event

    class Killed(BaseException):
        pass

    def dies_after_two(*a, **kw):
        for k, chunk in enumerate(orig_iter(*a, **kw)):
            if k == 2:
                raise Killed()
            yield chunk

    monkeypatch.setattr(generation, "iter_event", dies_after_two)
    with pytest.raises(Killed):
        gen_mod.generate_event(ctx, pid, 0)
    monkeypatch.setattr(generation, "iter_event", orig_iter)
    run = ctx.store.path
    staged = sorted((run / "staging" / pid / "e00").glob("*.json"))
    assert [p.name for p in staged] == [f"{pid}_g00_c000.json", f"{pid}_g00_c008.json"]
    assert len(json.loads(staged[1].read_text())["rows"]) == 8
    assert not list((run / "candidates").glob("part-*.parquet"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run / "media" / pid).glob("*.mp4")}
    assert len(mtimes) == 16

    decoded = []
    ctx2 = runner.open_run(run)
    gen = runner.get_generator(ctx2.cfg.generator.name, ctx2.cfg.generator.params)
    orig_decode = type(gen).decode
    monkeypatch.setattr(type(gen), "decode", lambda self, lat, p: decoded.append(len(lat)) or orig_decode(self, lat, p))
    got = gen_mod.generate_event(ctx2, pid, 0)
    assert decoded == [4]  # only the last chunk was generated again
    assert not (run / "staging" / pid).exists()
    assert len(list((run / "candidates").glob("part-*.parquet"))) == 1
    for name, t in mtimes.items():  # the staged chunks' files were not rewritten
        assert (run / "media" / pid / name).stat().st_mtime_ns == t, name
    drop = ("run_id", "wall_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in got] == \
        [{k: v for k, v in r.items() if k not in drop} for r in want]
    for a, b in zip(got, want):  # the mp4 bytes too
        assert (run / a["media_path"]).read_bytes() == (ref.store.path / b["media_path"]).read_bytes()
    stored = query(run, "SELECT count(*) n, count(DISTINCT candidate_id) u FROM candidates").to_pylist()[0]
    assert stored == {"n": n, "u": n}
    # a third call: the event is stored, nothing is generated or appended
    again = gen_mod.generate_event(runner.open_run(run), pid, 0)
    assert [r["candidate_id"] for r in again] == [r["candidate_id"] for r in got]
    assert len(list((run / "candidates").glob("part-*.parquet"))) == 1 and decoded == [4]


def test_scoring_holds_a_chunk_of_clips_not_the_event(tmp_path, monkeypatch):
    """The scoring step reads and scores an event's mp4s chunk by chunk (runner.score.score_chunk_size):
    with chunks of 3 clips no verifier call gets more than 3, and the rewards and selections equal a
    run scored in one call per event."""
    from helpers import tiny_config

    from avits_core import runner
    from avits_core.config import config_from_dict
    from avits_core.runner import score as score_mod
    from avits_core.verifiers.base import Verifier

    seen: list[int] = []
    orig = Verifier.score

    def spy(self, clips, prompts):
        seen.append(len(clips))
        return orig(self, clips, prompts)

    monkeypatch.setattr(Verifier, "score", spy)
    out = {}
    for chunk in (3, 32):
        monkeypatch.setattr(score_mod, "SCORE_CHUNK_CLIPS", chunk)
        seen.clear()
        d = tiny_config(tmp_path / f"c{chunk}", search={"method": "best_of_n", "n": 8, "prompts_per_task": 1})
        res = runner.run(config_from_dict(d), check_models=False)
        rewards = res["ctx"].store.read("rewards").select(["candidate_id", "verifier", "value", "status"])
        out[chunk] = (sorted(rewards.to_pylist(), key=lambda r: (r["candidate_id"], r["verifier"])),
                      res["ctx"].store.read("selections").column("candidate_id").to_pylist(), list(seen))
    assert max(out[3][2]) == 3 and max(out[32][2]) == 8  # 8 candidates per event
    assert out[3][0] == out[32][0] and out[3][1] == out[32][1]
