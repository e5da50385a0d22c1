"""Helpers of the scale-out tests (test_s3, test_shards, test_dask, bench/bench_scale.py): a moto S3
server on 127.0.0.1, small run configs, and the comparable content of a run's tables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]

#: The columns that must be equal between two runs of one config (timestamps, wall times, run ids
#: and the worker's device column are left out: they describe where/when, not what).
COMPARE = {
    "candidates": "prompt_id, prompt_index, candidate_id, generation, seed, nfe, nfe_own, media_path, truth",
    "rewards": "candidate_id, verifier, verifier_version, status, round(value, 12) AS value, event_seq",
    "selections": "selection_id, prompt_id, candidate_id, round(score, 12) AS score, n_candidates",
    "metrics": "selection_id, prompt_id, candidate_id, metric, round(value, 12) AS value",
    "arw_trace": "selection_id, event_seq, verifier, round(sigma, 10) AS sigma, history_n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 (``moto_server``), its env vars set in os.environ while it runs."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_bucket() -> str:
    """A fresh bucket on the current endpoint; returns its name."""
    import s3fs

    name = f"avits-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"]).mkdir(name)
    return name


def demo_config(output_root: str, *, limit: int = 4, n: int = 4, run_id: str | None = None,
                **extra: Any) -> dict[str, Any]:
    """data/configs/demo.yaml with fewer prompts and candidates (and fewer steps)."""
    cfg = yaml.safe_load((REPO / "data/configs/demo.yaml").read_text())
    cfg["prompts"] = {"source": str(REPO / "data/prompts/synth-24.csv"), "limit": limit}
    cfg["search"] = {"method": "best_of_n", "n": n, "prompts_per_task": 1}
    cfg["generator"]["params"]["num_steps"] = 8
    cfg["output_root"] = output_root
    if run_id:
        cfg["run_id"] = run_id
    cfg.update(extra)
    return cfg


def table_rows(run_path: Any, table: str) -> list[tuple]:
    """The comparable content of one table, sorted."""
    from avits_core.store.duck import query

    t = query(run_path, f"SELECT {COMPARE[table]} FROM {table} ORDER BY ALL")
    return [tuple(r.values()) for r in t.to_pylist()]


def stop_process(proc: subprocess.Popen, signals: tuple = (signal.SIGTERM,), wait: float = 15) -> None:
    """Stop a process started with ``start_new_session=True``: each of ``signals`` to its group in turn
    (sharing ``wait`` seconds), then SIGKILL if it is still running."""
    for sig in signals:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait / len(signals))
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def prefect_server_with_gpu_workers(home: Path, n_workers: int = 2) -> Iterator[dict[str, str]]:
    """A real ``prefect server`` on 127.0.0.1, the deployments of prefect.yaml, and ``n_workers`` process
    workers on the avits-gpu pool (CUDA_VISIBLE_DEVICES=i, --limit 1). Yields the environment to use."""
    import urllib.request

    port = free_port()
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PREFECT_HOME=str(home / "ph"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2",
               PATH=str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    prefect = [str(bindir / "prefect")]
    procs: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, args: list[str], **extra: str) -> subprocess.Popen:
        p = subprocess.Popen(prefect + args, env=dict(env, **extra), cwd=REPO, stdout=open(logs / f"{name}.log", "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((name, p))
        return p

    def cli(args: list[str]) -> str:
        r = subprocess.run(prefect + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    try:
        server = start("server", ["server", "start", "--host", "127.0.0.1", "--port", str(port)])
        deadline = time.time() + float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600"))
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError((logs / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        cli(["work-pool", "create", "avits-local", "--type", "process"])
        cli(["work-pool", "create", "avits-gpu", "--type", "process"])
        cli(["--no-prompt", "deploy", "--all"])
        for i in range(n_workers):
            start(f"gpu{i}", ["worker", "start", "--pool", "avits-gpu", "--name", f"gpu{i}", "--limit", "1",
                              "--type", "process"], CUDA_VISIBLE_DEVICES=str(i))
        yield env
    finally:
        for name, p in reversed(procs):
            stop_process(p, (signal.SIGTERM, signal.SIGINT) if name.startswith("gpu") else (signal.SIGTERM,))
