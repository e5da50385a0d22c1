"""Headroom of ITS on SynthAV, at library level (no Prefect, no store).

Best-of-N on the default prompt set: every candidate is generated once and scored by every
verifier; then each selection rule picks one candidate per prompt, and the held-out oracle metrics
of the picks are averaged. "first" is the baseline (candidate 0 of each prompt, i.e. no search).
Single-verifier rows show the trade-offs (what each verifier alone fixes and what it does not).

    python bench/headroom.py [--n 8] [--prompts 24] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avits_core.aggregate import get_aggregator  # noqa: E402
from avits_core.generators.synth import SynthAVGenerator  # noqa: E402
from avits_core.metrics.oracle import ORACLE_METRICS, oracle_metrics  # noqa: E402
from avits_core.prompts import load_prompts  # noqa: E402
from avits_core.registry import VERIFIERS  # noqa: E402
from avits_core.search.best_of_n import BestOfN  # noqa: E402
from avits_core.search.memory import run_in_memory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VERIFIERS_USED = ["av_align", "av_sync", "synth_text", "quality"]
RULES = [
    ("first (no search)", None, None),
    ("ARW: av_align+av_sync+synth_text", ["av_align", "av_sync", "synth_text"], "arw"),
    ("weighted sum: same three", ["av_align", "av_sync", "synth_text"], "weighted"),
    ("rank: same three", ["av_align", "av_sync", "synth_text"], "rank"),
    ("ARW: all four", ["av_align", "av_sync", "synth_text", "quality"], "arw"),
    ("av_align alone", ["av_align"], "weighted"),
    ("av_sync alone", ["av_sync"], "weighted"),
    ("synth_text alone", ["synth_text"], "weighted"),
    ("quality alone", ["quality"], "weighted"),
]


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    prompts = load_prompts(REPO / "data/prompts/synth-24.csv", limit=args.prompts)
    gen = SynthAVGenerator(num_steps=20)
    verifiers = {n: VERIFIERS.create(n) for n in VERIFIERS_USED}
    # the search engine over memory (the pipeline's own loop): Best-of-N, every verifier scoring every candidate
    searched = run_in_memory(gen, list(verifiers.values()), get_aggregator("weighted", VERIFIERS_USED), prompts,
                             BestOfN({"n": args.n}), args.seed)
    data = []  # per prompt: scores per verifier, oracle per candidate
    for r in searched:
        ids = [c.candidate_id for c in r.records]
        scores = {n: np.array([r.scores[c][n] if verifiers[n].higher_is_better else -r.scores[c][n] for c in ids])
                  for n in verifiers}
        bad = [n for n, v in scores.items() if np.isnan(v).any()]
        if bad:
            raise SystemExit(f"{bad[0]} failed on a candidate of {r.prompt_id}")
        data.append((r.prompt_id, scores, [oracle_metrics(r.clips[c].meta["truth"]) for c in ids]))
    rows = []
    for label, vs, agg_name in RULES:
        agg = get_aggregator(agg_name, vs) if vs else None
        picks = []
        for pid, scores, oracle in data:
            if agg is None:
                picks.append(oracle[0])
                continue
            s = {v: scores[v] for v in vs}
            agg.observe(s, prompt_id=pid)
            a = agg.combine(s)
            picks.append(oracle[int(np.flatnonzero(a == a.max())[0])])
        rows.append({"rule": label, **{m: float(np.mean([o[m] for o in picks])) for m in ORACLE_METRICS}})
    out = {"n": args.n, "prompts": len(prompts), "seconds": time.perf_counter() - t0, "rows": rows}
    if args.json:
        print(json.dumps(out))
    else:
        ms = list(ORACLE_METRICS)
        arrows = {m: "↑" if ORACLE_METRICS[m]["higher_is_better"] else "↓" for m in ms}
        print(f"Best-of-{args.n}, {len(prompts)} prompts, held-out oracle metrics (mean over prompts):")
        print("| selection | " + " | ".join(f"{m} {arrows[m]}" for m in ms) + " |")
        print("|---|" + "---|" * len(ms))
        for r in rows:
            print(f"| {r['rule']} | " + " | ".join(f"{r[m]:.3f}" for m in ms) + " |")
        print(f"({out['seconds']:.1f} s)")
    return out


if __name__ == "__main__":
    main()
