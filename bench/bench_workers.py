"""How many tasks at once: the demo's ``avits run`` with ``runner.workers`` unset (Prefect's default pool, up to
6 threads), ``workers = cores`` and ``workers = 1``, alternated on one long-lived ``avits server``; and how
many of them compute at once (``runner.compute_slots``, default cores // numeric threads).

    .venv/bin/python bench/bench_workers.py [--rounds 3] [--prompts 24] [--variants default,2,1]
    .venv/bin/python bench/bench_workers.py --variants default,slots=0     # compute slots vs none

A variant is ``default`` (the config's runner block as shipped), ``K`` or ``workers=K`` (``runner.workers``),
``slots=K`` (``runner.compute_slots``; 0: no bound), or several joined by ``+`` (``2+slots=0``).

Every variant runs with ``runner.threads=1`` (one thread per numeric library, what ``avits run`` picks on 2
cores for the default and ``workers = cores``), so only the number of tasks at once differs. Per run: wall,
CPU of the ``avits run`` process and the server's CPU during it; the selections must be the same in every
run. Printed: per round and as medians of the rounds, CPU and wall of each variant relative to the default
pool's in the same round (this VM's CPU speed drifts ~25 % between minutes: rounds alternate the variants,
and each ratio is of runs a minute apart).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import (AVITS, DEMO, _child, _proc_cpu, _run_dir, _selections, prompt_sets,  # noqa: E402
                            start_server, stop_server)


def variant_sets(v: str) -> list[str]:
    """The ``--set`` overrides of one variant (module text)."""
    out = []
    for part in v.split("+"):
        if part == "default":
            continue
        key, _, val = part.rpartition("=")
        key = {"": "workers", "workers": "workers", "slots": "compute_slots"}.get(key)
        if key is None or not val.isdigit():
            raise SystemExit(f"variant {v!r}: expected default, K, workers=K or slots=K joined by '+'")
        out.append(f"runner.{key}={int(val)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--variants", default=f"default,{os.cpu_count()},1",
                    help="comma-separated variants (module text); 'default' is the reference")
    a = ap.parse_args()
    variants = [v.strip() for v in a.variants.split(",")]
    if "default" not in variants:
        raise SystemExit("--variants must include 'default' (the reference of the ratios)")
    for v in variants:
        variant_sets(v)  # a misspelled variant stops here, before the server starts
    root = Path(tempfile.mkdtemp(prefix="avits-bench-workers-"))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           "PREFECT_HOME": str(root / "prefect")}
    env.pop("PREFECT_API_URL", None)
    env.pop("OMP_NUM_THREADS", None)
    pid = start_server(env, 10.0)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {a.prompts} prompts x Best-of-8, "
          f"variants: {variants}", flush=True)
    rounds: list[dict[str, dict[str, float]]] = []
    picks = None
    try:
        for r in range(a.rounds):
            got = {}
            order = variants[r % len(variants):] + variants[:r % len(variants)]  # rotate who runs first
            for v in order:
                sets = [*prompt_sets(a.prompts), "runner.threads=1", f"output_root={root / f'{v}-{r}'}"]
                sets += variant_sets(v)
                s0 = _proc_cpu(pid)
                wall, cpu, out, rc = _child([str(AVITS), "run", str(DEMO), "--quiet",
                                             *[x for s in sets for x in ("--set", s)]], env)
                srv = _proc_cpu(pid) - s0
                if rc != 0:
                    raise SystemExit(f"avits run ({v}) failed ({rc}):\n{out[-3000:]}")
                sel = _selections(str(_run_dir(root / f"{v}-{r}")))
                if picks is None:
                    picks = sel
                elif sel != picks:
                    raise SystemExit(f"variant {v}: other selections than the first run's")
                got[v] = {"wall": wall, "cpu": cpu + srv}
                print(f"round {r + 1} {v}: {wall:.1f} s wall, {cpu:.1f} + server {srv:.2f} CPU-s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
            rounds.append(got)
    finally:
        stop_server(env)
    print(f"\nrelative to the default pool in the same round (medians of {a.rounds} rounds; per round in brackets)")
    print(f"{'variant':<16}{'CPU-s':>8}{'wall s':>8}{'CPU ratio':>11}{'wall ratio':>12}")
    for v in variants:
        cr = [x[v]["cpu"] / x["default"]["cpu"] for x in rounds]
        wr = [x[v]["wall"] / x["default"]["wall"] for x in rounds]
        print(f"{v:<16}{statistics.median(x[v]['cpu'] for x in rounds):8.1f}"
              f"{statistics.median(x[v]['wall'] for x in rounds):8.1f}{statistics.median(cr):11.3f}"
              f"{statistics.median(wr):12.3f}   ({', '.join(f'{c:.2f}/{w:.2f}' for c, w in zip(cr, wr))})")
    print(f"same selections in all {a.rounds * len(variants)} runs ({len(picks or {})} prompts)")


if __name__ == "__main__":
    main()
