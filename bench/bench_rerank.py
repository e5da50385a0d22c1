"""Re-rank at scale: 1,000 prompts x 64 candidates x 6 verifiers, ARW, from the stored rewards.

Plain script; prints its figures. Run: ``.venv/bin/python bench/bench_rerank.py [--quick] [--layout L] [--cli]``.

1. Builds a synthetic run folder in a temp dir (not timed): run.json, a prompt file, 64,000
   candidates rows (no media) and 384,000 ok rewards rows written with ``RunStore.append``.
   ``--layout events`` writes rewards parts as ``runner.score_verifier`` does (one part per
   ``SCORE_FLUSH_ROWS`` rows of a verifier: 16 per verifier here); ``--layout verifier`` one part
   per verifier (a compacted run); ``both`` (default) times the two.
2. Times one re-rank with ARW = everything after scoring, as the ``rerank`` flow runs it:
   ``avits_core.rerank.rerank_spec`` (spec + validation) and ``runner.select`` (read the candidates and
   the deduplicated ok rewards from the store, replay ARW event by event, write selections and
   arw_trace). Target: <= 5 s. Printed: the figure and its ratio to the target.
3. Separately: the scoring-cache check (``runner.score_verifier`` for the 6 verifiers when every
   pair is already stored: nothing is scored) and ``runner.evaluate`` of the new selection.
4. ``--cli``: the same re-rank (the 6 verifiers, ARW) as a user runs it, ``avits rerank RUN
   --verifiers ...`` in a new process (imports, the stored-rewards check, replay, evaluation, report;
   no Prefect server since every reward is stored): wall and CPU next to the library figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from avits_core import runner
from avits_core.config import VerifierSpec, config_from_dict
from avits_core.search.base import candidate_id
from avits_core.store import RunStore

VERIFIERS = ["clap", "clip", "ib_av", "av_align", "av_sync", "synth_text"]
LOCS = [0.3, 0.25, 0.5, 0.2, -0.1, 0.6]
SCALES = [0.03, 0.05, 0.2, 0.1, 0.05, 0.15]
TARGET_S = 5.0


def build(root: Path, n_prompts: int, n_cand: int, layout: str, seed: int = 0) -> Path:
    """Write the synthetic run; returns its folder."""
    rng = np.random.default_rng(seed)
    run_id = "bench-rerank"
    prompt_file = root / "prompts.txt"
    prompt_file.write_text("".join(f"prompt number {i} a red ball bounces\n" for i in range(n_prompts)))
    cfg = config_from_dict(
        dict(
            name="bench",
            run_id=run_id,
            output_root=str(root),
            generator=dict(name="synth"),
            prompts=dict(source=str(prompt_file)),
            search=dict(method="best_of_n", n=n_cand),
            verifiers=[dict(name=v) for v in VERIFIERS],
            aggregator=dict(name="arw", params=dict(optimizer="adam", lr=0.05, max_iter=50)),
            evaluation=dict(oracle=False, verifiers=[]),
        )
    )
    store = RunStore(root, run_id).create()
    store.write_run_json(dict(run_id=run_id, status="completed", config=cfg.model_dump(mode="json"),
                              config_hash=cfg.config_hash(), n_prompts=n_prompts, timings={}))
    pids = [f"p{i:04d}" for i in range(n_prompts)]
    cids = [candidate_id(p, 0, j) for p in pids for j in range(n_cand)]
    prompt_col = np.repeat(np.array(pids, dtype=object), n_cand)
    n = len(cids)
    store.append("candidates", pa.table(dict(
        prompt_id=pa.array(prompt_col, pa.string()),
        prompt_index=pa.array(np.repeat(np.arange(n_prompts, dtype=np.int32), n_cand)),
        prompt_text=pa.array(np.repeat(np.array([f"prompt number {i}" for i in range(n_prompts)], dtype=object), n_cand),
                             pa.string()),
        candidate_id=pa.array(cids, pa.string()),
        search=pa.array(["best_of_n"] * n, pa.string()),
        generation=pa.array(np.zeros(n, np.int32)),
        step=pa.array(np.zeros(n, np.int32)),
        seed=pa.array(np.arange(n, dtype=np.int64)),
        generator=pa.array(["synth"] * n, pa.string()),
        nfe=pa.array(np.full(n, 20, np.int64)),
        media_path=pa.array([f"media/{c}.mp4" for c in cids], pa.string()),
    )))
    event = np.repeat(np.arange(n_prompts, dtype=np.int64), n_cand)
    for v, loc, scale in zip(VERIFIERS, LOCS, SCALES):
        values = rng.normal(loc, scale, size=n)
        tbl = pa.table(dict(
            prompt_id=pa.array(prompt_col, pa.string()),
            candidate_id=pa.array(cids, pa.string()),
            verifier=pa.array([v] * n, pa.string()),
            verifier_version=pa.array(["1"] * n, pa.string()),
            value=pa.array(values),
            status=pa.array(["ok"] * n, pa.string()),
            event_seq=pa.array(event),
            generation=pa.array(np.zeros(n, np.int32)),
            wall_s=pa.array(np.full(n, 0.01)),
        ))
        if layout == "verifier":
            store.append("rewards", tbl)
        else:  # as runner.score_verifier writes them: one part per SCORE_FLUSH_ROWS rows
            from avits_core.runner import SCORE_FLUSH_ROWS

            for i in range(0, n, SCORE_FLUSH_ROWS):
                store.append("rewards", tbl.slice(i, SCORE_FLUSH_ROWS))
    return store.path


def _cli_rerank(path: Path, verifiers: str) -> dict:
    """Wall and CPU (the process and its children) of ``avits rerank path --verifiers ...``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "avits"), "rerank", str(path), "--verifiers", verifiers],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"avits rerank failed:\n{out[-3000:]}")
    return {"wall": round(time.perf_counter() - t0, 3), "cpu": round(ru.ru_utime + ru.ru_stime, 3),
            "server": "starting a local Prefect server" in out}


def bench(layout: str, n_prompts: int, n_cand: int, keep: bool, with_cli: bool = False) -> dict:
    from avits_core.rerank import rerank_spec

    tmp = Path(tempfile.mkdtemp(prefix="avits-bench-rerank-"))
    try:
        t0 = time.perf_counter()
        path = build(tmp, n_prompts, n_cand, layout)
        n_parts = len(list((path / "rewards").glob("part-*.parquet")))
        print(f"[{layout}] built {n_prompts} prompts x {n_cand} candidates x {len(VERIFIERS)} verifiers "
              f"({n_prompts * n_cand * len(VERIFIERS):,} rewards rows in {n_parts:,} parts) "
              f"in {time.perf_counter() - t0:.1f}s (not timed)")
        for v in VERIFIERS:  # class imports (transformers for clap) are not part of a re-rank's cost
            runner.get_verifier(v, {})

        ctx = runner.open_run(path)
        t0 = time.perf_counter()
        counts = [runner.score_verifier(ctx, VerifierSpec(name=v)) for v in VERIFIERS]
        t_cache = time.perf_counter() - t0
        assert all(c["scored"] == 0 and c["cached"] == n_prompts * n_cand for c in counts), counts

        ctx = runner.open_run(path)
        t0 = time.perf_counter()
        spec = rerank_spec(ctx, ",".join(VERIFIERS), "arw", None, None)
        sel_id = runner.select(ctx, spec)
        t_rerank = time.perf_counter() - t0

        sel = ctx.store.read("selections")
        trace = ctx.store.read("arw_trace")
        assert sel.num_rows == n_prompts and sel.column("candidate_id").null_count == 0
        assert trace.num_rows == n_prompts * len(VERIFIERS)

        t0 = time.perf_counter()
        n_metrics = runner.evaluate(ctx, sel_id)
        t_eval = time.perf_counter() - t0

        print(f"[{layout}] scoring-cache check (6 verifiers, nothing to score): {t_cache:.2f}s")
        print(f"[{layout}] rerank with ARW (spec + read rewards + replay + write selections/arw_trace): "
              f"{t_rerank:.2f}s = {t_rerank / TARGET_S:.2f} x the {TARGET_S:.0f}s target "
              f"({'OK' if t_rerank <= TARGET_S else 'SLOWER THAN TARGET'}); selection {sel_id}")
        print(f"[{layout}] evaluate (baseline + selection, {n_metrics:,} metrics rows): {t_eval:.2f}s")
        cli = None
        if with_cli:  # the same re-rank from the command line, as a user runs it (new process, report included)
            cli = _cli_rerank(path, ",".join(VERIFIERS))
            print(f"[{layout}] `avits rerank RUN --verifiers <the 6>` (new process: imports, "
                  f"rewards check, replay, evaluation, report): {cli['wall']:.2f}s wall, {cli['cpu']:.2f}s CPU "
                  f"(library select + evaluate above: {t_rerank + t_eval:.2f}s)")
        if keep:
            print(f"[{layout}] run folder kept: {path}")
        return dict(layout=layout, reward_parts=n_parts, rerank_s=round(t_rerank, 3),
                    ratio_to_target=round(t_rerank / TARGET_S, 3), cache_check_s=round(t_cache, 3),
                    evaluate_s=round(t_eval, 3), cli=cli)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 prompts instead of 1,000 (smoke run)")
    ap.add_argument("--layout", choices=["events", "verifier", "both"], default="both",
                    help="rewards parts: as scoring writes them, one per verifier, or both")
    ap.add_argument("--keep", action="store_true", help="keep the temp run folders and print their paths")
    ap.add_argument("--cli", action="store_true", help="also time `avits rerank` from the command line on each run")
    args = ap.parse_args()
    n_prompts, n_cand = (100, 64) if args.quick else (1000, 64)
    layouts = ["verifier", "events"] if args.layout == "both" else [args.layout]
    results = [bench(layout, n_prompts, n_cand, args.keep, args.cli) for layout in layouts]
    print(json.dumps(dict(prompts=n_prompts, candidates=n_cand, verifiers=len(VERIFIERS), target_s=TARGET_S,
                          results=results)))


if __name__ == "__main__":
    main()
