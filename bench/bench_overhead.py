"""Framework overhead of a run (issue 17): ``avits run`` of the demo vs a bare library loop doing the same
model and verifier work on the same candidates, in one invocation.

    .venv/bin/python bench/bench_overhead.py [--prompts 24] [--root DIR]

Three processes, one after the other, each on the demo config (``data/configs/demo.yaml``: SynthAV 20 steps,
Best-of-8, ARW over av_align + av_sync + synth_text, quality held out; ``--prompts`` limits the prompts):

  bare     plain Python: per prompt, the run's seeds -> SynthAV denoise + decode -> write each clip as mp4
           (the run's encoder settings) -> read each mp4 back once -> av_align, av_sync, synth_text, quality
           score the prompt's clips -> ARW (the run's parameters) observes the event and picks the argmax.
           No tables, no run.json, no Prefect. Its picks are checked equal to the run's selections.
  library  ``avits_core.runner.run`` (the pipeline without Prefect: Parquet parts, run.json, caches, replay,
           oracle evaluation) + ``write_report``; stage walls from run.json.
  avits    ``avits run demo.yaml`` as a user runs it (CLI, pre-flight, a private Prefect server, the ``its``
           flow with its tasks, evaluation, report); stage walls from its run.json, server start from its log.

Printed: wall and CPU (user + system, the process and its children) of each; the breakdown of the avits run
(server start, orchestration = what the library run does not spend, media encode/decode, model + verifier
work, Parquet/DuckDB + bookkeeping = library minus bare, evaluation, report and plots) and the two targets:
overhead <= 20 % of the bare loop, and <= 2 ms per candidate beyond server start.

The machine is shared and loaded (2 cores): wall time grows with the load and CPU time does not, so both
are printed, with the load average; the stages of the flow overlap (generation and the four scoring tasks
run in parallel threads), so their walls do not add up to the run's wall.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "configs" / "demo.yaml"
AVITS = Path(sys.executable).parent / "avits"


# --------------------------------------------------------------------------- the parts (child processes)

def _cfg(prompts: int, root: Path):
    sys.path.insert(0, str(REPO))
    from avits_core.config import load_config

    return load_config(DEMO, [f"prompts.limit={prompts}", f"output_root={root}"])


def part_bare(prompts: int, root: Path) -> dict:
    """The model and verifier work of the demo run, nothing else."""
    t_imp = time.perf_counter()
    from avits_core.aggregate import get_aggregator
    from avits_core.media import read_mp4, write_mp4
    from avits_core.prompts import load_prompts
    from avits_core.registry import GENERATORS, VERIFIERS
    from avits_core.seeding import candidate_seeds

    cfg = _cfg(prompts, root)
    ps = load_prompts(cfg.prompts.source, text_column=cfg.prompts.text_column, limit=cfg.prompts.limit)
    gen = GENERATORS.create(cfg.generator.name, **cfg.generator.params)
    guided = [v.name for v in cfg.verifiers]
    specs = [(v.name, dict(v.params)) for v in cfg.verifiers] + [
        (e, {}) if isinstance(e, str) else (e.name, dict(e.params)) for e in cfg.evaluation.verifiers]
    verifiers = {name: VERIFIERS.create(name, **params) for name, params in specs}
    arw = get_aggregator(cfg.aggregator.name, guided, cfg.weights, **cfg.aggregator.params)
    imports_s = time.perf_counter() - t_imp
    n = cfg.search.n
    walls = dict.fromkeys(["generate", "encode", "decode", "select"] + [f"score:{k}" for k in verifiers], 0.0)
    cpus = dict(walls)
    picks: dict[str, int] = {}
    media = root / "bare-media"
    media.mkdir(parents=True, exist_ok=True)

    def clock(stage, fn, *a):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*a)
        walls[stage] += time.perf_counter() - w0
        cpus[stage] += time.process_time() - c0
        return out

    w_all, c_all = time.perf_counter(), time.process_time()
    for seq, p in enumerate(ps):
        seeds = candidate_seeds(cfg.seed, p.prompt_id, n)
        clips = clock("generate", lambda: gen.decode(gen.denoise(gen.init_noise(seeds), p, 0, gen.num_steps), p))
        paths = clock("encode", lambda: [write_mp4(c, media / f"{p.prompt_id}_{i}.mp4") for i, c in enumerate(clips)])
        stored = clock("decode", lambda: [read_mp4(q) for q in paths])
        scores = {}
        for name, v in verifiers.items():
            res = clock(f"score:{name}", v.score, stored, [p] * n)
            if any(e is not None for e in res.errors):
                raise SystemExit(f"bare loop: {name} failed on {p.prompt_id}: {res.errors}")
            scores[name] = res.values

        def select():
            import numpy as np

            g = {k: scores[k] for k in guided}
            arw.observe(g, event_seq=seq, prompt_id=p.prompt_id, generation=0)
            return int(np.argmax(arw.combine(g)))  # ties: the lowest index, as the run's selection

        picks[p.prompt_id] = clock("select", select)
    return {"wall": time.perf_counter() - w_all, "cpu": time.process_time() - c_all, "imports_s": imports_s,
            "walls": walls, "cpus": cpus, "picks": picks, "n_candidates": n * len(ps)}


def part_library(prompts: int, root: Path) -> dict:
    """The pipeline without Prefect (avits_core.runner.run) + the report."""
    t_imp = time.perf_counter()
    from avits_core import runner
    from avits_core.report import write_report

    cfg = _cfg(prompts, root)
    imports_s = time.perf_counter() - t_imp
    w0, c0 = time.perf_counter(), time.process_time()
    out = runner.run(cfg)
    ctx = out["ctx"]
    runner.timed(ctx, "report", write_report, ctx, out["selection_id"])
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "imports_s": imports_s, "run_path": out["run_path"],
            "timings": ctx.store.read_run_json().get("timings", {})}


# --------------------------------------------------------------------------- the driver

def _child(args: list[str], env: dict[str, str]) -> tuple[float, float, str, int]:
    """(wall s, CPU s of the process and its children, output, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, out, os.waitstatus_to_exitcode(status)


def _selections(run_path: str) -> dict[str, int]:
    from avits_core.store.duck import connect

    con = connect(run_path)
    info = json.loads((Path(run_path) / "run.json").read_text())
    rows = con.sql("SELECT prompt_id, candidate_id FROM selections WHERE selection_id = ?",
                   params=[info["selection_id"]]).fetchall()
    con.close()
    return {pid: int(cid.rsplit("_c", 1)[1]) for pid, cid in rows if cid is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--part", choices=("bare", "library"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    root = (a.root or Path(tempfile.mkdtemp(prefix="avits-bench-overhead-"))).absolute()
    if a.part:
        res = (part_bare if a.part == "bare" else part_library)(a.prompts, root)
        a.json.write_text(json.dumps(res))
        return
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"demo config, {a.prompts} prompts; root {root}", flush=True)

    got = {}
    for part in ("bare", "library"):
        js = root / f"{part}.json"
        wall, cpu, out, rc = _child([sys.executable, __file__, "--part", part, "--prompts", str(a.prompts),
                                     "--root", str(root / part), "--json", str(js)], env)
        if rc != 0:
            raise SystemExit(f"{part} part failed ({rc}):\n{out[-3000:]}")
        got[part] = {**json.loads(js.read_text()), "proc_wall": wall, "proc_cpu": cpu}
        print(f"{part}: process {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    wall, cpu, out, rc = _child([str(AVITS), "run", str(DEMO), "--set", f"prompts.limit={a.prompts}",
                                 "--set", f"output_root={root / 'avits'}"], env)
    if rc != 0:
        raise SystemExit(f"avits run failed ({rc}):\n{out[-3000:]}")
    m = re.search(r"up in ([0-9.]+) s", out)
    server_s = float(m.group(1)) if m else float("nan")
    run_path = next(p for p in (root / "avits").iterdir() if (p / "run.json").exists())
    timings = json.loads((run_path / "run.json").read_text()).get("timings", {})
    print(f"avits run: process {wall:.1f} s wall, {cpu:.1f} s CPU (server start {server_s:.1f} s)\n", flush=True)

    bare, lib = got["bare"], got["library"]
    n = bare["n_candidates"]
    same = _selections(str(run_path)) == {k: v for k, v in bare["picks"].items()}
    same_lib = _selections(lib["run_path"]) == bare["picks"]
    bw, bc = bare["wall"], bare["cpu"]
    bwalls = bare["walls"]
    work_w = bwalls["generate"] + sum(v for k, v in bwalls.items() if k.startswith("score:")) + bwalls["select"]
    media_w = bwalls["encode"] + bwalls["decode"]

    def row(name, w, c=None, note=""):
        cs = "" if c is None else f"{c:8.2f}"
        print(f"  {name:<44}{w:8.2f}{cs:>8}  {note}")

    print(f"{'':2}{'':<44}{'wall s':>8}{'CPU s':>8}")
    row("bare loop: model + verifier work", work_w, sum(bare["cpus"][k] for k in bwalls if k not in ("encode", "decode")))
    row("bare loop: media encode + decode", media_w, bare["cpus"]["encode"] + bare["cpus"]["decode"])
    row("bare loop total (after imports)", bw, bc, f"imports {bare['imports_s']:.1f} s wall")
    row("library run (runner.run + report)", lib["wall"], lib["cpu"], f"imports {lib['imports_s']:.1f} s wall")
    row("  Parquet/DuckDB + bookkeeping (library - bare)", lib["wall"] - bw - lib["timings"].get("evaluate", 0.0)
        - lib["timings"].get("report", 0.0), lib["cpu"] - bc, "CPU includes evaluation + report")
    row("avits run (process)", wall, cpu)
    row("  server start", server_s)
    for k in sorted(timings):
        row(f"  stage {k} (run.json, overlapping)", timings[k])
    row("  evaluation (run.json)", timings.get("evaluate", float("nan")))
    row("  report and plots (run.json)", timings.get("report", float("nan")))
    orch = wall - server_s - lib["wall"] - lib["imports_s"]
    row("  orchestration: avits - server - library run", orch, cpu - lib["proc_cpu"],
        "CLI, pre-flight, Prefect client/tasks, server CPU")
    print(f"\nselections: avits run == bare loop: {same}; library run == bare loop: {same_lib}")
    over_w = (wall - bw) / bw
    over_c = (cpu - bare["proc_cpu"]) / bare["proc_cpu"]
    per_cand = (wall - server_s - bw) / n * 1e3
    per_cand_c = (cpu - bare["proc_cpu"]) / n * 1e3
    print(f"\n{'target':<58}{'figure':>10}{'goal':>8}  holds")
    print(f"{'overhead, wall: (avits run - bare loop) / bare loop':<58}{100 * over_w:>9.1f}%{'20%':>8}  "
          f"{'yes' if over_w <= 0.2 else 'NO'}")
    print(f"{'overhead, CPU: (avits CPU - bare process CPU) / bare CPU':<58}{100 * over_c:>9.1f}%{'20%':>8}  "
          f"{'yes' if over_c <= 0.2 else 'NO'}")
    print(f"{'wall per candidate beyond server start':<58}{per_cand:>8.1f}ms{'2 ms':>8}  "
          f"{'yes' if per_cand <= 2 else 'NO'}")
    print(f"{'CPU per candidate (avits - bare process), all included':<58}{per_cand_c:>8.1f}ms{'–':>8}")
    print(f"\n{n} candidates; load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
