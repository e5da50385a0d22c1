"""End to end against a real Prefect server on 127.0.0.1: work pool, deploy from prefect.yaml,
a process worker, `prefect deployment run 'its/adhoc' --watch` on a tiny config, then the tables.

Every process started here is stopped by PID (the worker needs TERM then INT)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from scale_common import free_port, stop_process

from avits_core.store.duck import query

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.server]
STARTUP_TIMEOUT = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600"))


def test_deployment_run_against_real_server(tmp_path):
    port = free_port()
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=bindir + os.pathsep + env.get("PATH", ""),
        HF_HUB_OFFLINE="1",
    )
    prefect = [str(Path(bindir) / "prefect")] if (Path(bindir) / "prefect").exists() else [sys.executable, "-m", "prefect"]
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []

    def start(name, args):
        p = subprocess.Popen(prefect + args, env=env, cwd=REPO, stdout=open(logs / f"{name}.log", "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((name, p))
        return p

    def cli(args, timeout=600):
        r = subprocess.run(prefect + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    out_root = tmp_path / "runs"
    try:
        server = start("server", ["server", "start", "--host", "127.0.0.1", "--port", str(port)])
        deadline = time.time() + STARTUP_TIMEOUT  # a busy machine needs more than Prefect's default
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (logs / "server.log").read_text()
            assert time.time() < deadline, f"server did not become healthy in {STARTUP_TIMEOUT} s"
            time.sleep(0.5)
        cli(["work-pool", "create", "avits-local", "--type", "process"])
        cli(["work-pool", "create", "avits-gpu", "--type", "process"])  # prefect.yaml's its-shard/gpu needs it
        cli(["--no-prompt", "deploy", "--all"])
        ls = cli(["deployment", "ls"])
        assert "its/adhoc" in ls and "its-benchmark/nightly" in ls
        start("worker", ["worker", "start", "--pool", "avits-local", "--type", "process"])
        params = {"config_path": str(REPO / "tests/data/tiny.yaml"), "overrides": [f"output_root={out_root}"]}
        run = subprocess.run(
            prefect + ["deployment", "run", "its/adhoc", "--params", json.dumps(params), "--watch",
                       "--watch-interval", "2", "--watch-timeout", "1200"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=1260,
        )
        assert run.returncode == 0, f"deployment run failed:\n{run.stdout}\n{run.stderr}\n" + (logs / "worker.log").read_text()[-4000:]
        runs = [p for p in out_root.iterdir() if (p / "run.json").exists()]
        assert len(runs) == 1
        info = json.loads((runs[0] / "run.json").read_text())
        assert info["status"] == "completed"
        n = query(runs[0], "SELECT count(*) AS n, count(DISTINCT candidate_id) AS u FROM candidates").to_pylist()[0]
        assert n == {"n": 4, "u": 4}
        r = query(runs[0], "SELECT count(*) AS n FROM rewards WHERE status='ok'").to_pylist()[0]
        assert r["n"] == 8
        s = query(runs[0], "SELECT count(*) AS n FROM selections WHERE candidate_id IS NOT NULL").to_pylist()[0]
        assert s["n"] == 2
        assert (runs[0] / "report" / "report.md").exists()
        # the schedule of the nightly benchmark exists and is inactive by default
        sched = cli(["deployment", "schedule", "ls", "its-benchmark/nightly"])
        assert "0 3 * * *" in sched
    finally:
        for name, p in reversed(procs):
            stop_process(p, (signal.SIGTERM, signal.SIGINT) if name == "worker" else (signal.SIGTERM,))
