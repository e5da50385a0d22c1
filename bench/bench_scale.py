"""Scale-out overheads on this machine: the demo (fewer prompts) under each way of running it.

Plain script; prints a table and writes JSON. Run:
``.venv/bin/python bench/bench_scale.py [--prompts 8] [--n 8] [--skip-shards] [--out bench-scale.json]``.

Variants, all of one config (the demo's generator, verifiers and aggregator; ``--prompts`` x ``--n``
candidates, 8 steps), each a fresh run, measured in ONE invocation so the ratios share the machine's
load:

1. ``thread/local``: the ``its`` flow, Prefect's thread runner, run folder on local disk (baseline);
2. ``dask/local``: ``runner: {kind: dask, workers: 2}`` (prefect-dask, local cluster of threads);
3. ``thread/s3``: ``output_root`` on a moto S3 server on 127.0.0.1 (every part, mp4, run.json over HTTP);
4. ``shards=1`` / ``shards=2`` (unless ``--skip-shards``): a real ``prefect server``, two process workers
   on the GPU pool (CUDA_VISIBLE_DEVICES=0/1, --limit 1), the ``its-sharded`` flow with 1 and 2 shards
   (flow-run process start-up included: that is the cost of a shard).

Walls 1-3 are the flow's wall inside one Prefect test server (its start-up not counted); overhead per
candidate = (wall - baseline wall) / candidates. The tables of every variant are checked equal to the
baseline's (candidates, rewards, selections, metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")

from scale_common import demo_config, moto_server, new_bucket, prefect_server_with_gpu_workers, table_rows  # noqa: E402

TABLES = ("candidates", "rewards", "selections", "metrics")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _compare(rows: list[dict], paths: dict, n_cand: int) -> None:
    """Add ratio and overhead per candidate vs ``rows[0]``, and whether every table equals thread/local's."""
    base = rows[0]["wall_s"]
    for r in rows:
        r["ratio"] = round(r["wall_s"] / base, 3)
        r["overhead_ms_per_candidate"] = round(1e3 * (r["wall_s"] - base) / n_cand, 1)
        r["tables_equal"] = all(table_rows(paths[r["variant"]], t) == table_rows(paths["thread/local"], t)
                                for t in TABLES)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--skip-shards", action="store_true")
    ap.add_argument("--out", default="bench-scale.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "ph-harness"))
    n_cand = a.prompts * a.n
    rows: list[dict] = []

    from prefect.testing.utilities import prefect_test_harness

    from avits_core.config import config_from_dict
    from flows.its import its

    def cfg(root, run_id, **extra):
        return config_from_dict(demo_config(root, limit=a.prompts, n=a.n, run_id=run_id, **extra))

    paths = {}
    with moto_server():
        bucket = new_bucket()
        with prefect_test_harness(server_startup_timeout=600):
            its(config=cfg(str(tmp / "warm"), "warm", prompts={"source": demo_config("x")["prompts"]["source"], "limit": 1}))
            for name, root, extra in (("thread/local", str(tmp / "local"), {}),
                                      ("dask/local", str(tmp / "dask"), {"runner": {"kind": "dask", "workers": 2}}),
                                      ("thread/s3", f"s3://{bucket}/runs", {})):
                out, wall = _timed(lambda: its(config=cfg(root, "b", **extra)))
                paths[name] = out["run_path"]
                rows.append({"variant": name, "wall_s": round(wall, 2)})
                print(f"{name}: {wall:.1f} s", flush=True)
        _compare(rows, paths, n_cand)
    if not a.skip_shards:
        from flows.shards import its_sharded

        shard_rows = []
        with prefect_server_with_gpu_workers(tmp / "srv", 2) as env:
            os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"]
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
                for k in (1, 2):
                    out, wall = _timed(lambda: its_sharded(config=cfg(str(tmp / f"shards{k}"), "s"), shards=k))
                    paths[f"shards={k}"] = out["run_path"]
                    shard_rows.append({"variant": f"shards={k}", "wall_s": round(wall, 2)})
                    print(f"shards={k}: {wall:.1f} s", flush=True)
        _compare(shard_rows, paths, n_cand)
        rows += shard_rows
    print(f"\n{a.prompts} prompts x {a.n} candidates = {n_cand}; ratio/overhead vs thread/local "
          f"(shards vs shards=1)")
    print("| variant | wall s | ratio | overhead ms/candidate | tables equal |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['wall_s']} | {r['ratio']} | {r['overhead_ms_per_candidate']} | {r['tables_equal']} |")
    Path(a.out).write_text(json.dumps({"prompts": a.prompts, "n": a.n, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
