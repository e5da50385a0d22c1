"""Framework overhead of a run (issue 17): ``avits run`` of the demo vs a bare library loop doing the same
model and verifier work on the same candidates, in one invocation.

    .venv/bin/python bench/bench_overhead.py [--prompts 24] [--root DIR] [--marginal 6] [--interleave R]

Three processes, one after the other, each on the demo config (``data/configs/demo.yaml``: SynthAV 20 steps,
Best-of-8, ARW over av_align + av_sync + synth_text, quality held out; ``--prompts`` limits the prompts; beyond
the demo's 24, its texts are repeated under new ids: :func:`prompt_sets`):

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

All three run with the numeric-thread limit ``avits run`` picks for the demo (avits_core/threads.py:
cores // parallel scoring tasks, 1 on 2 cores), so the comparison is of the same numeric work. The
long-lived server's own background CPU (its services run with no flow at all) is measured idle first
and subtracted at that rate from its CPU during the run.

``--interleave R`` (the figures the README quotes) also meters the model, media and verifier work inside
both processes (bench/work_meter.py: thread CPU time of the same calls), so that the framework's CPU is
measured in the same run as the work: (avits CPU - its metered work) - (bare CPU - its metered work).
This VM's CPU speed drifts ~25 % between minutes; the plain difference of two processes a minute apart
carries that drift, the metered one does not.

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


def prompt_sets(prompts: int) -> list[str]:
    """The config overrides for ``prompts`` prompts: the demo's list limited, or beyond its 24 prompts
    a list that repeats the demo's texts under new ids (``x0000``, ...: other seeds, so other candidates),
    written to the temp folder when it is not there yet. Same for the bare loop and ``avits run`` (a wider
    slope span)."""
    import csv
    import io

    import yaml

    source = (DEMO.parent / yaml.safe_load(DEMO.read_text())["prompts"]["source"]).resolve()
    with source.open(newline="") as f:
        demo = list(csv.DictReader(f))
    if prompts <= len(demo):
        return [f"prompts.limit={prompts}"]
    path = Path(tempfile.gettempdir()) / f"avits-bench-prompts-{prompts}.csv"
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(demo[0]))
    w.writeheader()
    w.writerows({**demo[i % len(demo)], "prompt_id": f"x{i:04d}"} for i in range(prompts))
    data = buf.getvalue().encode("utf-8")
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return [f"prompts.source={path}", f"prompts.limit={prompts}"]


#: Config overrides for the avits runs only (``--avits-set``).
AVITS_SETS: list[str] = []


def _sets(prompts: int) -> list[str]:
    """:func:`prompt_sets` and ``--avits-set`` as ``--set`` arguments of ``avits run``."""
    return [a for s in [*prompt_sets(prompts), *AVITS_SETS] for a in ("--set", s)]


# --------------------------------------------------------------------------- the parts (child processes)

def _cfg(prompts: int, root: Path):
    """The demo config; the process takes the numeric-thread limit ``avits run`` takes for it
    (avits_core/threads.py), so the three parts do the same numeric work with the same threads."""
    sys.path.insert(0, str(REPO))
    from avits_core.config import load_config
    from avits_core.threads import apply_numeric_threads, numeric_threads_for

    cfg = load_config(DEMO, [*prompt_sets(prompts), f"output_root={root}"])
    apply_numeric_threads(numeric_threads_for(cfg))
    return cfg


def part_bare(prompts: int, root: Path) -> dict:
    """The model and verifier work of the demo run, nothing else (metered as bench/work_meter.py meters a run)."""
    t_imp = time.perf_counter()
    sys.path.insert(0, str(REPO / "bench"))
    import work_meter

    work_meter.install()
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
    make = work_meter._metered("generate", lambda seeds, p: gen.decode(gen.denoise(gen.init_noise(seeds), p, 0,
                                                                                      gen.num_steps), p))
    for seq, p in enumerate(ps):
        seeds = candidate_seeds(cfg.seed, p.prompt_id, n)
        clips = clock("generate", make, seeds, p)
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
            "walls": walls, "cpus": cpus, "picks": picks, "n_candidates": n * len(ps), "n_prompts": len(ps),
            "meter": work_meter.snapshot()}


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

def start_server(env: dict[str, str], idle_s: float) -> int:
    """Start a long-lived ``avits server`` in ``env``'s PREFECT_HOME, give its services ``idle_s`` for their
    first rounds after the start, and return its pid (stop it with :func:`stop_server`)."""
    from avits.server import free_port

    _, _, out, rc = _child([str(AVITS), "server", "start", "--port", str(free_port())], env)
    if rc != 0:
        raise SystemExit(f"avits server start failed ({rc}):\n{out[-3000:]}")
    pid = json.loads((Path(env["PREFECT_HOME"]) / "avits-server.json").read_text())["pid"]
    time.sleep(idle_s)
    return pid


def stop_server(env: dict[str, str]) -> None:
    _child([str(AVITS), "server", "stop"], env)


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


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, itself and its waited-for children) of a running process, from /proc."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def _run_dir(root: Path) -> Path:
    return next(p for p in root.iterdir() if (p / "run.json").exists())


def _framework(bare: dict, run: dict) -> dict:
    """The metered figures of one (bare, avits) pair (bench/work_meter.py): each process's CPU minus its own
    metered work. A work kind the run calls more often than the bare loop (read_mp4 for the report's posters)
    counts as work only for the bare loop's number of calls; the rest of it is framework."""
    bm, am = bare["meter"], run["meter"]
    work = {}
    for k, v in am["work_cpu"].items():
        c_b, c_a = bm["calls"][k], am["calls"][k]
        work[k] = v * min(1.0, c_b / c_a) if c_a else 0.0
    bare_work, run_work = sum(bm["work_cpu"].values()), sum(work.values())
    bare_fw = bare["cpu"] - bare_work  # imports, the plain loop, ARW bookkeeping: no framework at all
    run_fw = run["cpu"] - run_work
    return {"bare_work": bare_work, "run_work": run_work, "bare_fw": bare_fw, "run_fw": run_fw,
            "extra": run_fw - bare_fw, "work_by_kind": work, "bare_by_kind": dict(bm["work_cpu"]),
            "calls": (bm["calls"], am["calls"]),
            "gc": (bm.get("gc_cpu"), am.get("gc_cpu")),
            "hidden": bare["cpu_loop"] - bare_work}


def interleaved(a: argparse.Namespace, root: Path, env: dict[str, str]) -> None:
    """Bare loop and ``avits run`` (metered: bench/work_meter.py) on one long-lived server, alternated
    ``a.interleave`` times at two sizes (counterbalanced: even rounds run bare first and the big size first,
    odd rounds the reverse).

    Two figures per pair. Plain: (avits CPU + server CPU - bare CPU) / bare CPU, two processes a minute
    apart, so it carries this VM's CPU-speed drift (~25 %). Metered: each process's CPU minus its own
    metered model/media/verifier work is its framework CPU; the overhead is (avits framework - bare
    framework) / bare CPU, whose error scales with the overhead itself, not with the work. The server's
    whole CPU during a run is counted (its idle background work included); the "beyond its idle rate"
    figures take off the rate the server burns while the bare loop of the same pair runs (it is idle then).
    Figures are medians of the rounds.
    """
    import statistics

    if not a.marginal:
        raise SystemExit("--interleave needs --marginal K (the small size of the slope)")
    senv = {**env, "PREFECT_HOME": str(root / "prefect-shared")}
    pid = start_server(senv, a.idle_s)
    rounds, idle_rates = [], []
    meter = str(REPO / "bench" / "work_meter.py")

    def run_bare(r: int, prompts: int, js: Path) -> tuple[float, float, float]:
        """(wall, CPU, the server's idle rate meanwhile) of the bare loop."""
        s0 = _proc_cpu(pid)
        bw, bc, out, rc = _child([sys.executable, __file__, "--part", "bare", "--prompts", str(prompts),
                                  "--root", str(root / f"bare-{r}-{prompts}"), "--json", str(js)], env)
        if rc != 0:
            raise SystemExit(f"bare part failed ({rc}):\n{out[-3000:]}")
        # the server is idle while the bare loop runs: its idle rate in the same phase of the VM
        return bw, bc, (_proc_cpu(pid) - s0) / bw

    def run_avits(r: int, prompts: int, mj: Path) -> tuple[float, float, float]:
        """(wall, CPU, the server's CPU meanwhile: all of it, its idle work too) of the metered avits run."""
        c0 = _proc_cpu(pid)
        aw, ac, out, rc = _child([sys.executable, meter, str(mj), "avits", "run", str(DEMO), *_sets(prompts),
                                  "--set", f"output_root={root / f'avits-{r}-{prompts}'}"], senv)
        if rc != 0:
            raise SystemExit(f"avits run failed ({rc}):\n{out[-3000:]}")
        return aw, ac, _proc_cpu(pid) - c0

    try:
        for r in range(a.interleave):
            got = {}
            # counterbalanced (ABBA): even rounds bare first and the big size first, odd rounds the reverse,
            # so a trend in this VM's speed within a round does not favour one side in the medians
            bare_first = r % 2 == 0
            sizes = (a.prompts, a.marginal) if bare_first else (a.marginal, a.prompts)
            for prompts in sizes:
                js, mj = root / f"bare-{r}-{prompts}.json", root / f"meter-{r}-{prompts}.json"
                if bare_first:
                    (bw, bc, idle_rate), (aw, ac, srv) = run_bare(r, prompts, js), run_avits(r, prompts, mj)
                else:
                    (aw, ac, srv), (bw, bc, idle_rate) = run_avits(r, prompts, mj), run_bare(r, prompts, js)
                bare = json.loads(js.read_text())
                idle_rates.append(idle_rate)
                fw = _framework({"cpu": bc, "cpu_loop": bare["cpu"], "meter": bare["meter"]},
                                {"cpu": ac + srv, "meter": json.loads(mj.read_text())})
                n = bare["n_candidates"]
                got[prompts] = {"n": n, "prompts": bare["n_prompts"], "bare_cpu": bc, "bare_wall": bw,
                                "avits_cpu": ac + srv, "avits_wall": aw, **fw,
                                "idle_during": min(srv, idle_rate * aw)}  # the server's idle CPU in the run
                print(f"round {r + 1}, {bare['n_prompts']} prompts ({n} candidates): bare {bc:.1f} CPU-s (work {fw['bare_work']:.1f}) "
                      f"/ {bw:.1f} s wall; avits {ac:.1f} + server {srv:.2f} CPU-s (work {fw['run_work']:.1f}; server "
                      f"idle rate x wall {idle_rate * aw:.2f}) / {aw:.1f} s wall; framework: bare {fw['bare_fw']:.2f}, "
                      f"avits {fw['run_fw']:.2f} CPU-s", flush=True)
            big, small = got[a.prompts], got[a.marginal]
            dn = big["n"] - small["n"]
            rounds.append({
                "overhead_cpu": (big["avits_cpu"] - big["bare_cpu"]) / big["bare_cpu"],
                "overhead_metered": big["extra"] / big["bare_cpu"],
                "overhead_wall": (big["avits_wall"] - big["bare_wall"]) / big["bare_wall"],
                "slope_ms": ((big["avits_cpu"] - big["bare_cpu"]) - (small["avits_cpu"] - small["bare_cpu"])) / dn * 1e3,
                "slope_metered_ms": (big["extra"] - small["extra"]) / dn * 1e3,
                "overhead_beyond_idle": (big["extra"] - big["idle_during"]) / big["bare_cpu"],
                "overhead_cpu_beyond_idle": (big["avits_cpu"] - big["idle_during"] - big["bare_cpu"]) / big["bare_cpu"],
                "slope_beyond_idle_ms": ((big["extra"] - big["idle_during"]) - (small["extra"] - small["idle_during"]))
                / dn * 1e3,
                "fixed_s": small["extra"], "work_ratio": big["run_work"] / big["bare_work"],
                "kind_ratio": {k: v / big["bare_by_kind"][k] for k, v in big["work_by_kind"].items()
                               if big["bare_by_kind"].get(k)},
                "extra_big": big["extra"]})
            last = big
    finally:
        stop_server(senv)
    (root / "rounds.json").write_text(json.dumps(rounds, indent=1))  # kept if a print below fails
    med = {k: statistics.median(x[k] for x in rounds) for k, v in rounds[0].items() if not isinstance(v, dict)}
    bc, ac = last["calls"]
    print(f"\nmetered work of the last {last['prompts']}-prompt avits run (CPU-s; calls avits / bare): "
          + ", ".join(f"{k} {v:.2f} ({ac[k]}/{bc[k]})" for k, v in last["work_by_kind"].items()))
    print(f"the bare loop's CPU outside its metered work (imports, loop): {last['bare_fw']:.2f} CPU-s, of which "
          f"{last['hidden']:.2f} inside its timed loop (first imports taken out of the work calls, codec threads "
          "outside the calling thread, the loop itself)")
    print(f"\n{a.interleave} rounds (the server's whole CPU during each run counted; idle it uses "
          f"{1e3 * statistics.median(idle_rates):.0f} ms/s, read during each bare loop); per round, metered "
          "overhead / slope: "
          + "; ".join(f"{100 * x['overhead_metered']:.1f} % / {x['slope_metered_ms']:.2f} ms" for x in rounds)
          + "; plain: " + "; ".join(f"{100 * x['overhead_cpu']:.1f} % / {x['slope_ms']:.1f} ms" for x in rounds))
    print("work CPU avits / bare (the same work; drift shows here): "
          + ", ".join(f"{x['work_ratio']:.3f}" for x in rounds))
    print("  by kind, per round: " + "; ".join(
        ", ".join(f"{k} {v:.3f}" for k, v in x["kind_ratio"].items()) for x in rounds))
    gcb, gca = last["gc"]
    print(f"garbage collection in the last {last['prompts']}-prompt pair (CPU-s per generation 0/1/2): bare {gcb}, avits {gca}")
    print(f"{'target (medians of the rounds)':<72}{'figure':>10}{'goal':>8}  holds")
    for label, v, goal, unit in (
            ("overhead, CPU, metered: (avits framework - bare framework) / bare", med["overhead_metered"], .2, "%"),
            (f"CPU overhead per extra candidate, metered ({small['prompts']} -> {big['prompts']} prompts)",
             med["slope_metered_ms"], 2.0, "ms"),
            ("  the same, the server's CPU beyond its idle rate (the run's own)", med["overhead_beyond_idle"], .2, "%"),
            ("  per extra candidate, the server's CPU beyond its idle rate", med["slope_beyond_idle_ms"], 2.0, "ms"),
            ("overhead, CPU, plain: (client + server - bare) / bare (drift-prone)", med["overhead_cpu"], .2, "%"),
            ("  the same, the server's CPU beyond its idle rate", med["overhead_cpu_beyond_idle"], .2, "%"),
            ("CPU overhead per extra candidate, plain (drift-prone)", med["slope_ms"], 2.0, "ms"),
            ("overhead, wall, on a long-lived server (noisy)", med["overhead_wall"], .2, "%")):
        fig = f"{100 * v:9.1f}%" if unit == "%" else f"{v:8.2f}ms"
        print(f"{label:<72}{fig:>10}{('20%' if unit == '%' else '2 ms'):>8}  {'yes' if v <= goal else 'NO'}")
    print(f"framework CPU beyond the bare loop's: {med['fixed_s']:.2f} CPU-s at {small['prompts']} prompts, "
          f"{med['extra_big']:.2f} at {big['prompts']} (medians)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--avits-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the avits runs only (e.g. runner.workers=1: one task at a time, "
                         "as the bare loop works; add runner.threads=1 with it, or the numeric-thread limit, "
                         "which follows workers, differs from the bare loop's); repeatable")
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--no-shared", action="store_true", help="skip the run on a long-lived `avits server`")
    ap.add_argument("--marginal", type=int, default=0,
                    help="also run bare + shared-server avits at this many prompts: the overhead's slope per candidate")
    ap.add_argument("--idle-s", dest="idle_s", type=float, default=10.0,
                    help="seconds the long-lived server is watched idle before the run (its background CPU rate)")
    ap.add_argument("--interleave", type=int, default=0, metavar="R",
                    help="only bare vs avits-on-a-long-lived-server, alternated R times at --prompts and --marginal "
                         "prompts: medians of the paired figures (this machine's CPU speed drifts by ~25 %% between "
                         "minutes, so only adjacent pairs compare)")
    ap.add_argument("--part", choices=("bare", "library"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    AVITS_SETS.extend(a.avits_set)
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
          f"demo config, {a.prompts} prompts; avits runs with {AVITS_SETS or 'the demo config'}; root {root}", flush=True)
    run_args = [str(AVITS), "run", str(DEMO), *_sets(a.prompts)]
    if a.interleave:
        return interleaved(a, root, env)

    got = {}
    for part in ("bare", "library"):
        js = root / f"{part}.json"
        wall, cpu, out, rc = _child([sys.executable, __file__, "--part", part, "--prompts", str(a.prompts),
                                     "--root", str(root / part), "--json", str(js)], env)
        if rc != 0:
            raise SystemExit(f"{part} part failed ({rc}):\n{out[-3000:]}")
        got[part] = {**json.loads(js.read_text()), "proc_wall": wall, "proc_cpu": cpu}
        print(f"{part}: process {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    wall, cpu, out, rc = _child(run_args + ["--set", f"output_root={root / 'avits'}"], env)
    if rc != 0:
        raise SystemExit(f"avits run failed ({rc}):\n{out[-3000:]}")
    m = re.search(r"up in ([0-9.]+) s", out)
    server_s = float(m.group(1)) if m else float("nan")
    run_path = _run_dir(root / "avits")
    timings = json.loads((run_path / "run.json").read_text()).get("timings", {})
    print(f"avits run (private server): process {wall:.1f} s wall, {cpu:.1f} s CPU (server start {server_s:.1f} s)",
          flush=True)
    shared = None
    if not a.no_shared:
        from avits.server import free_port

        senv = {**env, "PREFECT_HOME": str(root / "prefect-shared")}
        w0 = time.perf_counter()
        sw, sc, out, rc = _child([str(AVITS), "server", "start", "--port", str(free_port())], senv)
        if rc != 0:
            raise SystemExit(f"avits server start failed ({rc}):\n{out[-3000:]}")
        try:
            st = json.loads((root / "prefect-shared" / "avits-server.json").read_text())
            start_wall, start_cpu = time.perf_counter() - w0, _proc_cpu(st["pid"]) + sc
            # the long-lived server's own background services (scheduler, late runs, ...) use CPU with no
            # run at all: measured idle for a while, then subtracted at that rate from its CPU during the run
            i0, iw = _proc_cpu(st["pid"]), time.perf_counter()
            time.sleep(a.idle_s)
            idle_rate = (_proc_cpu(st["pid"]) - i0) / (time.perf_counter() - iw)
            c0 = _proc_cpu(st["pid"])
            cw, cc, out, rc = _child(run_args + ["--set", f"output_root={root / 'avits-shared'}"], senv)
            srv_total = _proc_cpu(st["pid"]) - c0
            srv_cpu = max(0.0, srv_total - idle_rate * cw)
            if rc != 0:
                raise SystemExit(f"avits run on the shared server failed ({rc}):\n{out[-3000:]}")
            if a.marginal:
                k = a.marginal
                js = root / "bare-small.json"
                _, kbc, out, rc = _child([sys.executable, __file__, "--part", "bare", "--prompts", str(k),
                                          "--root", str(root / "bare-small"), "--json", str(js)], env)
                c0 = _proc_cpu(st["pid"])
                kw, kcc, out2, rc2 = _child([str(AVITS), "run", str(DEMO), *_sets(k), "--set",
                                             f"output_root={root / 'avits-shared-small'}"], senv)
                if rc or rc2:
                    raise SystemExit(f"--marginal runs failed:\n{out[-2000:]}\n{out2[-2000:]}")
                small = {"prompts": k, "n": json.loads(js.read_text())["n_candidates"], "bare_cpu": kbc,
                         "avits_cpu": kcc + max(0.0, _proc_cpu(st["pid"]) - c0 - idle_rate * kw)}
        finally:
            _child([str(AVITS), "server", "stop"], senv)
        shared = {"start_wall": start_wall, "start_cpu": start_cpu, "wall": cw, "cpu": cc, "server_cpu": srv_cpu,
                  "server_total": srv_total, "idle_rate": idle_rate, "small": small if a.marginal else None}
        print(f"avits server start: {start_wall:.1f} s wall, {start_cpu:.1f} s CPU; avits run on it: {cw:.1f} s wall, "
              f"{cc:.1f} s CPU client + {srv_cpu:.1f} s CPU server for the run ({srv_total:.1f} s in all, idle "
              f"{1e3 * idle_rate:.0f} ms/s)", flush=True)

    bare, lib = got["bare"], got["library"]
    n = bare["n_candidates"]
    same = _selections(str(run_path)) == bare["picks"]
    same_lib = _selections(lib["run_path"]) == bare["picks"]
    bw, bc, bpc = bare["wall"], bare["cpu"], bare["proc_cpu"]
    bwalls, bcpus = bare["walls"], bare["cpus"]
    media = ("encode", "decode")

    def row(name, w, c=None, note=""):
        ws = "" if w is None else f"{w:8.2f}"
        cs = "" if c is None else f"{c:8.2f}"
        print(f"  {name:<52}{ws:>8}{cs:>8}  {note}")

    print(f"\nbreakdown ({n} candidates){'':<27}{'wall s':>8}{'CPU s':>8}")
    row("bare: model + verifier work + ARW", sum(v for k, v in bwalls.items() if k not in media),
        sum(v for k, v in bcpus.items() if k not in media))
    row("bare: media encode + decode (mp4)", sum(bwalls[k] for k in media), sum(bcpus[k] for k in media))
    row("bare: loop total / process (imports, python)", bw, bc, f"process {bare['proc_wall']:.1f} s wall, {bpc:.1f} s CPU")
    row("library run (runner.run + report) / process", lib["wall"], lib["cpu"],
        f"process {lib['proc_wall']:.1f} s wall, {lib['proc_cpu']:.1f} s CPU")
    row("  Parquet/DuckDB, run.json, evaluation, report: lib - bare", None, lib["proc_cpu"] - bpc, "CPU, processes")
    row("  evaluation (library run.json)", lib["timings"].get("evaluate"), None)
    row("  report and plots (library run.json)", lib["timings"].get("report"), None)
    row("avits run, private server (what a user runs)", wall, cpu)
    row("  server start", server_s, None, "wall (its CPU is in the process CPU)")
    for k in sorted(timings):
        row(f"  stage {k} (run.json; stages overlap)", timings[k], None)
    row("  orchestration: avits CPU - library process CPU", None, cpu - lib["proc_cpu"],
        "CLI, pre-flight, Prefect client + tasks, server start + API")
    if shared:
        row("avits server start (long-lived)", shared["start_wall"], shared["start_cpu"])
        row("avits run on it: client process", shared["wall"], shared["cpu"])
        row("  server CPU for the run (beyond its idle rate)", None, shared["server_cpu"],
            f"{shared['server_total']:.2f} s during the run, idle {1e3 * shared['idle_rate']:.0f} ms/s")
        row("  orchestration beyond server start: client + server - library", None,
            shared["cpu"] + shared["server_cpu"] - lib["proc_cpu"])
    print(f"\nselections: avits run == bare loop: {same}; library run == bare loop: {same_lib}")

    def verdict(x, goal):
        return "yes" if x <= goal else "NO"

    print(f"\n{'target':<66}{'figure':>10}{'goal':>8}  holds")
    ov_c = (cpu - bpc) / bpc
    ov_w = (wall - bare["proc_wall"]) / bare["proc_wall"]
    print(f"{'overhead, CPU, private server: (avits run - bare process) / bare':<66}{100 * ov_c:>9.1f}%{'20%':>8}  {verdict(ov_c, .2)}")
    print(f"{'overhead, wall, private server (noisy; the flow runs stages in parallel)':<66}{100 * ov_w:>9.1f}%{'20%':>8}  "
          f"{verdict(ov_w, .2)}")
    if shared:
        ov_s = (shared["cpu"] + shared["server_cpu"] - bpc) / bpc
        print(f"{'overhead, CPU, on a long-lived server: (client + server for the run - bare) / bare':<66}"
              f"{100 * ov_s:>9.1f}%{'20%':>8}  {verdict(ov_s, .2)}")
        ov_sw = (shared["wall"] - bare["proc_wall"]) / bare["proc_wall"]
        print(f"{'overhead, wall, on a long-lived server (noisy)':<66}{100 * ov_sw:>9.1f}%{'20%':>8}  {verdict(ov_sw, .2)}")
        pc = (shared["cpu"] + shared["server_cpu"] - bpc) / n * 1e3
        pw = (shared["wall"] - bare["proc_wall"]) / n * 1e3
        print(f"{'CPU per candidate beyond server start (shared server run - bare)':<66}{pc:>8.1f}ms{'2 ms':>8}  "
              f"{verdict(pc, 2)}")
        print(f"{'wall per candidate beyond server start (noisy)':<66}{pw:>8.1f}ms{'2 ms':>8}  {verdict(pw, 2)}")
        sm = shared["small"]
        if sm:
            big = shared["cpu"] + shared["server_cpu"] - bpc
            little = sm["avits_cpu"] - sm["bare_cpu"]
            slope = (big - little) / (n - sm["n"]) * 1e3
            label = f"CPU overhead per extra candidate: slope {sm['n']} -> {n} candidates"
            print(f"{label:<66}{slope:>8.1f}ms"
                  f"{'2 ms':>8}  {verdict(slope, 2)}   (fixed part {little:.1f} s CPU at {sm['n']} candidates)")
    pw = (wall - server_s - bare["proc_wall"]) / n * 1e3
    print(f"{'wall per candidate beyond server start, private server (noisy)':<66}{pw:>8.1f}ms{'2 ms':>8}  {verdict(pw, 2)}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}. CPU figures are the ones to trust "
          "on a shared machine; walls move with the other work running.")


if __name__ == "__main__":
    main()
