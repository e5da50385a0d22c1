"""Helpers of the scale-out tests (test_s3, test_shards, test_dask, bench/bench_scale.py): a moto S3
server on 127.0.0.1, small run configs, and the comparable content of a run's tables."""

from __future__ import annotations

import os
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
