"""Cost growth of a run with its size, at library level (``runner.run``: no Prefect, no report).

    .venv/bin/python bench/bench_growth.py                       # default grid (several minutes)
    .venv/bin/python bench/bench_growth.py --prompts 6,24,100 --n 2,8 --max-candidates 1000

For every (P prompts, N candidates per prompt) of the grid (``--prompts`` x ``--n``, skipping cells
above ``--max-candidates``), one Best-of-N SynthAV run (``--steps`` Euler steps, guided verifier
``--verifiers``, ARW, oracle evaluation) is made in a temporary folder, and the per-candidate wall
of each stage is printed: generate (incl. mp4 encode and the candidate rows), score (per
verifier, incl. decode), select, evaluate, and the whole run. Prompts are distinct SynthAV grammar
prompts. A step that is O(1) per candidate in the run's size gives a flat column; a step that
re-reads or rewrites what is already stored grows with P (the growth ratio column: per-candidate
wall at this P over the per-candidate wall at the smallest P with the same N).

Timing on a shared 2-core machine is noisy: compare within one run of this script.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avits_core import runner  # noqa: E402
from avits_core.config import config_from_dict  # noqa: E402
from avits_core.generators.synth_world import BACKGROUNDS, COUNTS, NUMBER_WORDS, PITCHES, SIZES, TIMBRES  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("ball", "cube")


def prompts(n: int) -> list[str]:
    """``n`` distinct SynthAV grammar prompts (cycling through the attribute grid in a fixed order)."""
    grid = itertools.product(COUNTS, SIZES, COLOURS, SHAPES, PITCHES, TIMBRES, BACKGROUNDS)
    out = [f"a {s} {c} {sh} bounces {NUMBER_WORDS[k]} with a {p} {t} over {b}" for k, s, c, sh, p, t, b in grid]
    if n > len(out):
        raise SystemExit(f"at most {len(out)} distinct prompts")
    step = max(1, len(out) // n)  # spread over the grid
    return out[::step][:n]


def one_run(root: Path, n_prompts: int, n: int, steps: int, verifiers: list[str]) -> dict[str, float]:
    src = root / f"prompts-{n_prompts}.txt"
    src.write_text("\n".join(prompts(n_prompts)) + "\n")
    cfg = config_from_dict(dict(
        name=f"growth-{n_prompts}x{n}", seed=0, output_root=str(root / "runs"),
        generator=dict(name="synth", params=dict(num_steps=steps)), prompts=dict(source=str(src)),
        search=dict(method="best_of_n", n=n), verifiers=[dict(name=v) for v in verifiers],
        aggregator=dict(name="arw"), evaluation=dict(oracle=True, verifiers=[])))
    t0, c0 = time.perf_counter(), time.process_time()
    out = runner.run(cfg)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    timings = dict(out["ctx"].store.read_run_json().get("timings") or {})
    t1 = time.perf_counter()
    runner.evaluate(out["ctx"], out["selection_id"])  # already stored: the cost of the cache check
    timings["evaluate (cached)"] = time.perf_counter() - t1
    timings["rest (evaluate, run.json)"] = total - sum(v for k, v in timings.items() if k != "evaluate (cached)")
    timings["total"] = total
    timings["total CPU"] = cpu
    shutil.rmtree(root / "runs", ignore_errors=True)
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default="6,24,100,400,1000")
    ap.add_argument("--n", default="2,8,32")
    ap.add_argument("--max-candidates", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--verifiers", default="av_sync")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ps = [int(x) for x in args.prompts.split(",")]
    ns = [int(x) for x in args.n.split(",")]
    verifiers = [v for v in args.verifiers.split(",") if v]
    root = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    print(f"SynthAV Best-of-N, {args.steps} steps, verifiers {verifiers} + ARW, oracle evaluation; "
          f"ms per candidate per stage (library level, runner.run)")
    one_run(root, 2, 2, args.steps, verifiers)  # warm-up: imports, first-call initialisation
    stages_seen: list[str] = []
    results: dict[tuple[int, int], dict[str, float]] = {}
    try:
        for n in ns:
            for p in ps:
                if p * n > args.max_candidates:
                    print(f"  (skip P={p} N={n}: {p * n} candidates > --max-candidates {args.max_candidates})")
                    continue
                t = one_run(root, p, n, args.steps, verifiers)
                results[(p, n)] = t
                for k in t:
                    if k not in stages_seen:
                        stages_seen.append(k)
                base = results[min(q for q, m in results if m == n), n]
                c = p * n
                cells = "  ".join(f"{k}={1e3 * v / c:.2f}" for k, v in t.items())
                print(f"P={p:5d} N={n:3d} ({c:6d} candidates): {cells}  "
                      f"[total/candidate x{(t['total'] / c) / (base['total'] / (min(q for q, m in results if m == n) * n)):.2f} "
                      f"vs smallest P]", flush=True)
        print("\nper-candidate ms by stage (rows: P x N):")
        head = ["P", "N"] + stages_seen
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for (p, n), t in results.items():
            print("| " + " | ".join([str(p), str(n)] + [f"{1e3 * t[k] / (p * n):.2f}" if k in t else "–"
                                                        for k in stages_seen]) + " |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
