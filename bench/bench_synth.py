"""SynthAV throughput and headroom.

    .venv/bin/python bench/bench_synth.py                 # candidates/s (generate + decode), ratio to 50/s
    .venv/bin/python bench/bench_synth.py --headroom      # also: mode fractions and oracle metrics of
                                                          # first vs best-by-synth_text vs best-by-quality

Throughput: every prompt of data/prompts/synth-24.csv, ``--seeds`` candidates per prompt, batched
``--batch`` at a time: init_noise -> denoise(0, S) -> decode, timed end to end (wall clock, one
process). Headroom: the same candidates scored by synth_text and quality (ties broken by the lower
candidate index), oracle metrics averaged over prompts.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avits_core.generators.synth import SynthAVGenerator  # noqa: E402
from avits_core.metrics.oracle import ORACLE_METRICS, oracle_metrics  # noqa: E402
from avits_core.prompts import load_prompts  # noqa: E402
from avits_core.seeding import candidate_seeds  # noqa: E402
from avits_core.verifiers.quality import Quality  # noqa: E402
from avits_core.verifiers.synth_text import SynthText  # noqa: E402

TARGET_PER_S = 50.0


def generate_all(gen: SynthAVGenerator, prompts, n_seeds: int, batch: int):
    out = {}
    for p in prompts:
        seeds = candidate_seeds(0, p.prompt_id, n_seeds)
        clips = []
        for i in range(0, n_seeds, batch):
            lat = gen.denoise(gen.init_noise(seeds[i:i + batch]), p, 0, gen.num_steps)
            clips.extend(gen.decode(lat, p))
        out[p.prompt_id] = clips
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(ROOT / "data/prompts/synth-24.csv"))
    ap.add_argument("--seeds", type=int, default=16, help="candidates per prompt")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--headroom", action="store_true")
    ap.add_argument("--headroom-seeds", type=int, default=8)
    args = ap.parse_args()

    prompts = load_prompts(args.prompts)
    gen = SynthAVGenerator(num_steps=args.steps, guidance=args.guidance)
    generate_all(gen, prompts[:1], args.batch, args.batch)  # warm-up
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        generate_all(gen, prompts, args.seeds, args.batch)
        dt = time.perf_counter() - t0
        rates.append(len(prompts) * args.seeds / dt)
    best, med = max(rates), float(np.median(rates))
    print(f"synth: {len(prompts)} prompts x {args.seeds} candidates, batch {args.batch}, {args.steps} steps, "
          f"guidance {args.guidance}")
    print(f"candidates/s (generate + decode): median {med:.1f}, best {best:.1f} over {args.repeats} runs; "
          f"ratio to the {TARGET_PER_S:.0f}/s target: {med / TARGET_PER_S:.2f}x")

    if not args.headroom:
        return
    clips = generate_all(gen, prompts, args.headroom_seeds, args.batch)
    st, q = SynthText(), Quality()
    modes: collections.Counter[str] = collections.Counter()
    picks: dict[str, list[dict[str, float]]] = {"first": [], "best synth_text": [], "best quality": [],
                                                 "oracle best (faithful)": []}
    n_err = 0
    t0 = time.perf_counter()
    for p in prompts:
        cs = clips[p.prompt_id]
        for c in cs:
            modes[c.meta["truth"]["mode"]] += 1
        s_st = st.score(cs, [p] * len(cs))
        s_q = q.score(cs, [p] * len(cs))
        n_err += int((~s_st.ok).sum() + (~s_q.ok).sum())
        om = [oracle_metrics(c.meta["truth"]) for c in cs]
        picks["first"].append(om[0])
        for key, vals in (("best synth_text", s_st.values), ("best quality", s_q.values)):
            v = np.where(np.isfinite(vals), vals, -np.inf)
            picks[key].append(om[int(np.argmax(v))])
        picks["oracle best (faithful)"].append(max(om, key=lambda m: m["faithful"]))
    dt = time.perf_counter() - t0
    n = sum(modes.values())
    print(f"\nheadroom: {len(prompts)} prompts x {args.headroom_seeds} seeds ({n} candidates); "
          f"scoring took {dt:.1f} s; {n_err} error rows")
    print("mode fractions: " + ", ".join(f"{k} {v / n:.3f}" for k, v in modes.most_common()))
    names = list(ORACLE_METRICS)
    print(f"{'pick':24s}" + "".join(f"{k:>22s}" for k in names))
    for key, rows in picks.items():
        print(f"{key:24s}" + "".join(f"{np.mean([r[k] for r in rows]):22.3f}" for k in names))


if __name__ == "__main__":
    main()
