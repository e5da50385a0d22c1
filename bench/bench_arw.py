"""ARW at scale: fast (running moments + closed-form optimizer) vs the direct torch rule.

Plain script; prints its figures. Run: ``.venv/bin/python bench/bench_arw.py [--quick]``.

1. Replay 1,000 prompts x 64 candidates x 6 verifiers (one scoring event per prompt) through the
   fast ARW (observe + combine + select per event) and print the wall time.
2. Per-event cost at a history of ~100k values per verifier: both implementations are first fed
   the same 100k-value history (one large event), then the same further events of 64 candidates
   are timed on each; the ratio of the median per-event times is printed (target >= 100x).
3. The max relative sigma difference between the two over shared streams (the one of step 2 and a
   200-event stream fitted event by event), target <= 1e-5.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from avits_core.aggregate import get_aggregator, select_best

VERIFIERS = ["clap", "clip", "ib_av", "av_align", "av_sync", "synth_text"]
LOCS = [0.3, 0.25, 0.5, 0.2, -0.1, 0.6]
SCALES = [0.03, 0.05, 0.2, 0.1, 0.05, 0.15]


def make_events(rng: np.random.Generator, n_events: int, n_cand: int) -> list[dict[str, np.ndarray]]:
    return [
        {v: rng.normal(m, s, size=n_cand) for v, m, s in zip(VERIFIERS, LOCS, SCALES)} for _ in range(n_events)
    ]


def replay(agg, events) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    picks = []
    for seq, ev in enumerate(events):
        agg.observe(ev, event_seq=seq, prompt_id=f"p{seq:05d}")
        picks.append(select_best(agg.combine(ev)))
    return time.perf_counter() - t0, picks


def max_rel_sigma(a, b) -> float:
    sa, sb = a.sigma, b.sigma
    return max(abs(sa[v] / sb[v] - 1.0) for v in VERIFIERS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()
    n_prompts, n_cand = (100, 64) if args.quick else (1000, 64)
    hist = 10_000 if args.quick else 100_000
    n_timed_torch, n_timed_fast = (3, 50) if args.quick else (5, 200)
    n_shared = 30 if args.quick else 200
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}")

    # 1. replay at scale
    events = make_events(rng, n_prompts, n_cand)
    fast = get_aggregator("arw", VERIFIERS)
    wall, _ = replay(fast, events)
    print(
        f"[1] fast ARW replay: {n_prompts} prompts x {n_cand} candidates x {len(VERIFIERS)} verifiers "
        f"(adam, 50 iters/event): {wall:.3f} s wall, {1e3 * wall / n_prompts:.3f} ms/event, "
        f"final history {fast.history_n} values/verifier"
    )

    # 2. per-event cost at a ~100k history
    big = {v: rng.normal(m, s, size=hist) for v, m, s in zip(VERIFIERS, LOCS, SCALES)}
    timed = make_events(rng, max(n_timed_fast, n_timed_torch), n_cand)
    impls = {"fast": get_aggregator("arw", VERIFIERS), "torch": get_aggregator("arw", VERIFIERS, impl="torch")}
    per_event: dict[str, float] = {}
    diff_big = 0.0
    for name, agg in impls.items():
        agg.observe(big, event_seq=0)
    diff_big = max(diff_big, max_rel_sigma(impls["fast"], impls["torch"]))
    for name, agg in impls.items():
        n = n_timed_fast if name == "fast" else n_timed_torch
        times = []
        for ev in timed[:n]:
            t0 = time.perf_counter()
            agg.observe(ev)
            select_best(agg.combine(ev))
            times.append(time.perf_counter() - t0)
        per_event[name] = statistics.median(times)
    # bring the fast one to the same stream position as torch before comparing sigmas
    check_fast = get_aggregator("arw", VERIFIERS)
    check_fast.observe(big)
    for ev in timed[:n_timed_torch]:
        check_fast.observe(ev)
    diff_big = max(diff_big, max_rel_sigma(check_fast, impls["torch"]))
    ratio = per_event["torch"] / per_event["fast"]
    print(
        f"[2] per-event cost at history {impls['torch'].history_n} values/verifier: "
        f"torch (direct, full history) {1e3 * per_event['torch']:.1f} ms, fast {1e3 * per_event['fast']:.3f} ms "
        f"-> ratio {ratio:.0f}x (target >= 100x)"
    )

    # 3. agreement over a stream fitted event by event
    shared = make_events(np.random.default_rng(1), n_shared, n_cand)
    a, b = get_aggregator("arw", VERIFIERS), get_aggregator("arw", VERIFIERS, impl="torch")
    diff_stream = 0.0
    same_pick = 0
    for ev in shared:
        a.observe(ev)
        b.observe(ev)
        diff_stream = max(diff_stream, max_rel_sigma(a, b))
        same_pick += select_best(a.combine(ev)) == select_best(b.combine(ev))
    print(
        f"[3] max relative sigma difference fast vs torch: {diff_stream:.2e} over {n_shared} events x {n_cand} "
        f"(every event), {diff_big:.2e} on the {hist}-value stream of [2] (target <= 1e-5); "
        f"same selection on {same_pick}/{n_shared} events"
    )


if __name__ == "__main__":
    main()
