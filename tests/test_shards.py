"""Sharded runs (flows/shards.py).

Fast: the shard split, the refusals (multi-event method, no server).
Server (slow): a real ``prefect server`` on 127.0.0.1, the GPU pool of prefect.yaml with two process
workers (CUDA_VISIBLE_DEVICES=0 and 1, --limit 1), ``avits run CONFIG --shards 2``: the tables equal
the unsharded run's, and every candidate records the CUDA_VISIBLE_DEVICES of the worker that made it.
Every process started here is stopped by its PID (workers: TERM, then INT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scale_common import REPO, demo_config, prefect_server_with_gpu_workers, table_rows


def test_shard_split_partitions_prompts():
    from flows.shards import shard_prompt_ids

    ids = [f"p{i:02d}" for i in range(11)]
    parts = [shard_prompt_ids(ids, i, 3) for i in range(3)]
    assert parts[0] == ["p00", "p03", "p06", "p09"] and parts[2] == ["p02", "p05", "p08"]
    assert sorted(x for p in parts for x in p) == ids
    assert [len(p) for p in parts] == [4, 4, 3]
    assert shard_prompt_ids(ids, 0, 1) == ids
    from avits_core.errors import ConfigError

    with pytest.raises(ConfigError, match="shard 3 out of range"):
        shard_prompt_ids(ids, 3, 3)


def test_multi_event_methods_get_per_shard_arw_state():
    """A multi-event method in K shards runs with search.arw_shards = K (a new run id); a worker split
    that would cut an ARW shard in two is refused; Best-of-N is unchanged by sharding."""
    from avits_core.config import config_from_dict
    from avits_core.errors import ConfigError
    from flows.shards import check_shardable, sharded_config

    cfg = yaml.safe_load((REPO / "data/configs/evosearch-demo.yaml").read_text())
    cfg["prompts"]["source"] = str(REPO / "data/prompts/synth-24.csv")
    evo = config_from_dict(cfg)
    assert sharded_config(evo, 1) is evo
    two = sharded_config(evo, 2)
    assert two.search.arw_shards == 2 and evo.search.arw_shards == 1
    assert two.resolved_run_id() != evo.resolved_run_id()  # another ARW scope, other results: another run
    assert sharded_config(two, 2) == two
    four = config_from_dict(dict(cfg, search=dict(cfg["search"], arw_shards=4)))
    assert sharded_config(four, 2) is four and sharded_config(four, 4) is four  # 2 workers x 2 ARW shards each
    with pytest.raises(ConfigError, match="--shards 3 does not divide search.arw_shards=4"):
        sharded_config(four, 3)
    with pytest.raises(ConfigError, match="--shards 4 does not divide search.arw_shards=2"):
        check_shardable(two, 4)
    with pytest.raises(ConfigError, match="--shards must be an integer >= 1"):
        sharded_config(evo, 0)
    bon = config_from_dict(demo_config("runs"))
    assert sharded_config(bon, 4) is bon  # Best-of-N: run-scope replay, the unsharded run's id and tables
    check_shardable(bon, 4)


def test_cli_shards_without_a_server_is_one_error(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(demo_config(str(tmp_path / "runs"), limit=2, n=2)))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "ph")
    exe = os.path.join(os.path.dirname(sys.executable), "avits")
    r = subprocess.run([exe, "run", str(path), "--shards", "2"], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "--shards needs a running Prefect server" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.server
def test_two_shards_on_two_gpu_workers_equal_the_unsharded_run(tmp_path):
    bindir = Path(sys.executable).parent
    logs = tmp_path / "logs"

    def worker_logs():
        return "\n".join(f"--- {n}\n" + (logs / f"{n}.log").read_text()[-3000:] for n in ("gpu0", "gpu1"))

    cfg = demo_config(str(tmp_path / "sharded"), limit=5, n=3, run_id="r")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    avits = str(bindir / "avits")
    with prefect_server_with_gpu_workers(tmp_path, n_workers=2) as env:
        ls = subprocess.run([str(bindir / "prefect"), "deployment", "ls"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=600)
        assert ls.returncode == 0, f"prefect deployment ls failed:\n{ls.stdout}\n{ls.stderr}"
        assert "its-shard/gpu" in ls.stdout and "its/sharded" in ls.stdout
        r = subprocess.run([avits, "run", str(path), "--shards", "2"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=1500)
        assert r.returncode == 0, f"sharded run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n{worker_logs()}"
        # the same config unsharded, in another output root (same process layout otherwise)
        cfg1 = dict(cfg, output_root=str(tmp_path / "plain"))
        path1 = tmp_path / "cfg1.yaml"
        path1.write_text(yaml.safe_dump(cfg1))
        r1 = subprocess.run([avits, "run", str(path1), "-q"], env=env, cwd=REPO, capture_output=True, text=True, timeout=1500)
        assert r1.returncode == 0, r1.stdout[-3000:] + r1.stderr[-3000:]

    sharded, plain = tmp_path / "sharded" / "r", tmp_path / "plain" / "r"
    for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
        ref = table_rows(plain, table)
        assert ref and table_rows(sharded, table) == ref, table
    from avits_core.store.duck import query

    dev = query(sharded, "SELECT prompt_id, list(DISTINCT cuda_visible_devices) AS d FROM candidates GROUP BY ALL "
                         "ORDER BY prompt_id").to_pylist()
    assert all(len(r["d"]) == 1 and r["d"][0] in ("0", "1") for r in dev), dev  # one worker per shard's prompt
    assert {r["d"][0] for r in dev} == {"0", "1"}, dev  # both workers took a shard
    # prompts of one shard were made on one device: shard i = prompt positions i, i+2, ...
    by_pos = [r["d"][0] for r in dev]
    assert len(set(by_pos[0::2])) == 1 and len(set(by_pos[1::2])) == 1
    assert query(plain, "SELECT count(*) n FROM candidates WHERE cuda_visible_devices IS NOT NULL").to_pylist()[0]["n"] == 0
    info = json.loads((sharded / "run.json").read_text())
    assert info["status"] == "completed" and info["shards"]["n"] == 2
    assert sorted(v["state"] for v in info["shards"]["runs"].values()) == ["COMPLETED", "COMPLETED"]


def test_failed_shard_is_resubmitted_alone(monkeypatch):
    """run_shards: a shard that fails is submitted again; finished shards are not; a shard failing
    every attempt ends in one error naming it."""
    from types import SimpleNamespace

    import flows.shards as sh
    from avits_core.config import config_from_dict

    submitted = []
    fail_plan = {1: 1, 2: 99}  # shard -> attempts that fail

    def submit(name, cfg, shard, shards):
        submitted.append(shard)
        return SimpleNamespace(id=f"run-{shard}-{submitted.count(shard)}")

    def state(ok):
        return SimpleNamespace(is_completed=lambda: ok, type=SimpleNamespace(value="COMPLETED" if ok else "FAILED"))

    def wait(ids, poll_s, timeout_s):
        return {i: state(int(fid.rsplit("-", 1)[1]) > fail_plan.get(i, 0)) for i, fid in ids.items()}

    monkeypatch.setattr(sh, "_submit", submit)
    monkeypatch.setattr(sh, "_wait", wait)
    monkeypatch.setattr(sh, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    cfg = config_from_dict(demo_config("runs"))
    fail_plan = {1: 1}
    info = sh.run_shards(cfg, 3, shard_retries=1)
    assert submitted == [0, 1, 2, 1]
    assert {i: (v["state"], v["attempts"]) for i, v in info.items()} == {
        0: ("COMPLETED", 1), 1: ("COMPLETED", 2), 2: ("COMPLETED", 1)}
    submitted.clear()
    fail_plan = {2: 99}
    with pytest.raises(RuntimeError, match=r"shards \[2\] did not complete after 3 attempts"):
        sh.run_shards(cfg, 3, shard_retries=2)
    assert submitted == [0, 1, 2, 2, 2]
