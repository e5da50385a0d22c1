"""Command latency of the ``avits`` CLI on a finished demo run, each figure next to its goal (issue 17).

    python bench/bench_commands.py [--root DIR] [--repeat 3]

Makes (or reuses, under ``--root``) a finished demo run with ``avits run data/configs/demo.yaml``,
then times real ``avits`` processes, wall clock from start to exit, median of ``--repeat`` runs, and
their CPU time (user + system of the process and its children): on a loaded machine wall time grows
with the load while CPU time does not, so both are printed, with the load average.

Figures (goal):
  first output       `avits run` of a new run id: seconds to its first line (a line saying what runs)  2 s
  finished run       `avits run` of the finished demo config (prints the stored results)                3 s
  rerank (cached)    `avits rerank RUN --aggregator rank` (every reward stored)                         3 s
  refusal (name)     `avits run demo.yaml --set verifiers.0.name=bogus`                                 1 s
  refusal (value)    `avits run demo.yaml --set search.n=0`                                             1 s
  sql -c             `avits sql RUN -c winners`                                                        1 s
  doctor             `avits doctor` (no config)                                                        2 s
  refusal (gen param) `avits run demo.yaml --set generator.params.num_steps=0` (SynthAV's torch-free
                     ``validate_params``)                                                            1 s
Also reported, without a goal: the whole demo run when it had to be made. The cached rerank is the
median of ``--repeat`` reruns of one spec: the first draws the selection's plots, later ones find their
data hashes unchanged in ``plots.json`` and draw nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AVITS = Path(sys.executable).parent / "avits"
DEMO = REPO / "data" / "configs" / "demo.yaml"


def timed(args: list[str], env: dict[str, str], expect: int | None = 0) -> tuple[float, float, str]:
    """(wall s, cpu s, output) of one avits process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(AVITS), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if expect is not None and proc.returncode != expect:
        raise SystemExit(f"`avits {' '.join(args)}` exited {proc.returncode}, expected {expect}:\n{out[-3000:]}")
    return wall, ru.ru_utime + ru.ru_stime, out


def first_output(args: list[str], env: dict[str, str]) -> float:
    """Seconds until the process prints its first line; then it is stopped (its private server dies with it)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(AVITS), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    line = proc.stdout.readline()
    dt = time.perf_counter() - t0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not line:
        raise SystemExit("avits run printed nothing")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="folder for the demo run (reused when it is finished)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    root = a.root or Path(tempfile.mkdtemp(prefix="avits-bench-cmd-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("PREFECT_API_URL", None)
    runs = root / "runs"
    base = ["--set", f"output_root={runs}"]

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    before = {p.name for p in runs.glob("demo-*") if (p / "run.json").exists()} if runs.exists() else set()
    wall, cpu, out = timed(["run", str(DEMO), *base, "-q"], env)
    run = next(p for p in runs.iterdir() if (p / "run.json").exists() and p.name.startswith("demo-"))
    print(f"demo run {run.name}: {'reused' if run.name in before else 'made'} in {wall:.1f} s wall, {cpu:.1f} s CPU")

    cases = [
        ("finished run", ["run", str(DEMO), *base], 0, 3.0),
        ("rerank (cached)", ["rerank", str(run), "--aggregator", "rank"], 0, 3.0),
        ("refusal (name)", ["run", str(DEMO), *base, "--set", "verifiers.0.name=bogus"], 2, 1.0),
        ("refusal (value)", ["run", str(DEMO), *base, "--set", "search.n=0"], 2, 1.0),
        ("sql -c", ["sql", str(run), "-c", "winners"], 0, 1.0),
        ("doctor", ["doctor"], 0, 2.0),
        ("refusal (generator param)", ["run", str(DEMO), *base, "--set", "generator.params.num_steps=0"], 2, 1.0),
    ]
    rows = []
    firsts = [first_output(["run", str(DEMO), *base, "--run-id", f"bench-first-{i}"], env) for i in range(a.repeat)]
    rows.append(("first output of avits run", statistics.median(firsts), None, 2.0))
    for name, args, code, goal in cases:
        walls, cpus = [], []
        for _ in range(a.repeat):
            w, c, _ = timed(args, env, expect=code)
            walls.append(w)
            cpus.append(c)
        rows.append((name, statistics.median(walls), statistics.median(cpus), goal))

    print(f"\n{'command':<28}{'wall s':>8}{'CPU s':>8}{'goal s':>8}  holds")
    for name, w, c, goal in rows:
        cs = "–" if c is None else f"{c:.2f}"
        gs = "–" if goal is None else f"{goal:.1f}"
        ok = "" if goal is None else ("yes" if w <= goal else "NO")
        print(f"{name:<28}{w:>8.2f}{cs:>8}{gs:>8}  {ok}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; median of {a.repeat}; run folder {run}")


if __name__ == "__main__":
    main()
