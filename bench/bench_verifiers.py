"""Per-verifier cost of one scoring pass, before and after "work once per candidate" (issue 17).

    .venv/bin/python bench/bench_verifiers.py [--prompts 8] [--n 4] [--repeats 2]

SynthAV candidates (``--prompts`` prompts of data/prompts/synth-24.csv x ``--n`` seeds, 20 steps)
are written as mp4 like a run stores them; then av_align, av_sync, synth_text and quality score
every clip from its mp4, the way the runner's scoring step does (decode, then ``Verifier.score``
per scoring event), in two settings:

  before  every verifier decodes every mp4 itself (``read_mp4``), computes its own features (no
          shared cache), numeric libraries use their default thread counts
  after   one decode per file (``avits_core.clipcache``), features shared between verifiers with
          single flight (``features.shared_feature``), BLAS/OpenCV single-threaded in features
  after-threads  the caches of 'after' but default numeric thread counts (isolates the thread cap)

and two schedules: the verifier tasks one after the other (``sequential``: per-verifier cost), and
all four in parallel threads (``parallel``, what Prefect's thread-pool task runner does).
Printed: per-verifier ms per clip, the wall of each schedule, the number of optical-flow and mp4
decodes, and the after/before ratios. Timing on a shared 2-core machine is noisy: every ratio
printed is measured within this one run (settings alternate, best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avits_core import clipcache  # noqa: E402
from avits_core.generators.synth import SynthAVGenerator  # noqa: E402
from avits_core.media import read_mp4, write_mp4  # noqa: E402
from avits_core.prompts import load_prompts  # noqa: E402
from avits_core.registry import VERIFIERS as REGISTRY  # noqa: E402
from avits_core.seeding import candidate_seeds  # noqa: E402
from avits_core.verifiers import features as F  # noqa: E402

NAMES = ["av_align", "av_sync", "synth_text", "quality"]
MODES = ("before", "after", "after-threads")  # after-threads: caches on, numeric threads not limited


class Counters:
    def __init__(self) -> None:
        self.flow = 0
        self.decode = 0


def make_candidates(outdir: Path, n_prompts: int, n: int) -> list[tuple[Path, object]]:
    gen = SynthAVGenerator(num_steps=20)
    out = []
    for p in load_prompts(ROOT / "data/prompts/synth-24.csv")[:n_prompts]:
        lat = gen.denoise(gen.init_noise(candidate_seeds(0, p.prompt_id, n)), p, 0, gen.num_steps)
        for i, clip in enumerate(gen.decode(lat, p)):
            out.append((write_mp4(clip, outdir / f"{p.prompt_id}_{i}.mp4"), p))
    return out


def setting(mode: str, counters: Counters):
    """Install 'before', 'after' or 'after-threads' behaviour; return the clip reader to use."""
    real_motion = F._ORIG_MOTION
    F.FEATURES.clear()
    F.numeric_threads = F._ORIG_THREADS if mode == "after" else contextlib.nullcontext

    def counted_motion(v, fps):
        counters.flow += 1
        return real_motion(v, fps)

    F._motion_energy = counted_motion
    if mode == "before":
        F.shared_feature = lambda kind, arrays, params, compute: compute()

        def reader(path):
            counters.decode += 1
            return read_mp4(path)

        return reader
    F.shared_feature = F._ORIG_SHARED

    def counted_read(path):
        counters.decode += 1
        return read_mp4(path)

    cache = clipcache.ClipCache(reader=counted_read)
    return cache.read


def score_pass(verifier, cands, reader, n_per_event: int) -> float:
    """One verifier over every candidate, event by event (decode + score), like runner.score_verifier."""
    t0 = time.perf_counter()
    for i in range(0, len(cands), n_per_event):
        group = cands[i:i + n_per_event]
        clips = [reader(p) for p, _ in group]
        res = verifier.score(clips, [pr for _, pr in group])
        assert all(e is None for e in res.errors) or verifier.name in ("av_align", "av_sync"), res.errors
    return time.perf_counter() - t0


def run(mode: str, schedule: str, cands, n_per_event: int) -> dict:
    c = Counters()
    reader = setting(mode, c)
    verifiers = [REGISTRY.create(n) for n in NAMES]
    t0, c0 = time.perf_counter(), time.process_time()
    per: dict[str, float] = {}
    if schedule == "sequential":
        for v in verifiers:
            per[v.name] = score_pass(v, cands, reader, n_per_event)
    else:
        with ThreadPoolExecutor(len(verifiers)) as ex:
            futs = {v.name: ex.submit(score_pass, v, cands, reader, n_per_event) for v in verifiers}
            per = {k: f.result() for k, f in futs.items()}
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "per": per, "flow": c.flow,
            "decode": c.decode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4, help="candidates per prompt (one scoring event)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    F._ORIG_MOTION = F._motion_energy
    F._ORIG_SHARED = F.shared_feature
    F._ORIG_THREADS = F.numeric_threads
    tmp = Path(tempfile.mkdtemp(prefix="bench-verifiers-"))
    try:
        cands = make_candidates(tmp, args.prompts, args.n)
        nclips = len(cands)
        print(f"{nclips} SynthAV clips ({args.prompts} prompts x {args.n}), 2 s 64x64 12 fps, 16 kHz; "
              f"verifiers {', '.join(NAMES)}; best of {args.repeats} (settings alternate)")
        best: dict[tuple[str, str], dict] = {}
        for _ in range(args.repeats):
            for schedule in ("sequential", "parallel"):
                for mode in MODES:
                    r = run(mode, schedule, cands, args.n)
                    k = (mode, schedule)
                    if k not in best:
                        best[k] = r
                    else:
                        best[k]["wall"] = min(best[k]["wall"], r["wall"])
                        best[k]["cpu"] = min(best[k]["cpu"], r["cpu"])
                        best[k]["per"] = {n: min(best[k]["per"][n], r["per"][n]) for n in NAMES}
        F._motion_energy = F._ORIG_MOTION
        F.shared_feature = F._ORIG_SHARED
        F.numeric_threads = F._ORIG_THREADS
        print("\nper-verifier cost, verifier tasks one after the other (ms per clip, decode included):")
        print(f"  {'verifier':<12} {'before':>8} {'after':>8} {'after/before':>13}")
        b, a = best[("before", "sequential")], best[("after", "sequential")]
        for n in NAMES:
            pb, pa = 1e3 * b["per"][n] / nclips, 1e3 * a["per"][n] / nclips
            print(f"  {n:<12} {pb:8.1f} {pa:8.1f} {pa / pb:13.2f}")
        print(f"  {'all four':<12} {1e3 * b['wall'] / nclips:8.1f} {1e3 * a['wall'] / nclips:8.1f} "
              f"{a['wall'] / b['wall']:13.2f}")
        print("\nwork counted (first repeat):")
        for sched in ("sequential", "parallel"):
            for mode in MODES:
                r = best[(mode, sched)]
                print(f"  {sched:<10} {mode:<13}: optical flow {r['flow']:4d}x, mp4 decodes {r['decode']:4d} "
                      f"for {nclips} clips; wall {r['wall']:.2f} s, CPU {r['cpu']:.2f} s")
        for sched in ("sequential", "parallel"):
            b, a, t = (best[(m, sched)] for m in MODES)
            print(f"\n{sched}: after/before wall {a['wall'] / b['wall']:.2f}, CPU {a['cpu'] / b['cpu']:.2f}; "
                  f"one-thread numerics vs default threads (both with the caches): wall "
                  f"{a['wall'] / t['wall']:.2f}, CPU {a['cpu'] / t['cpu']:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
