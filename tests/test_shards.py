"""Sharded runs (flows/shards.py).

Fast: the shard split, the per-shard ARW config of multi-event methods, the refusals (a worker split
that cuts an ARW shard, no server).
Server (slow; one server for the module): a real ``prefect server`` on 127.0.0.1, the GPU pool of
prefect.yaml with two process workers (CUDA_VISIBLE_DEVICES=0 and 1, --limit 1).
``avits run CONFIG --shards 2`` with Best-of-N: the tables equal the unsharded run's, and every
candidate records the CUDA_VISIBLE_DEVICES of the worker that made it. With EvoSearch: the flow-run
process of one shard is SIGKILLed mid-shard, the coordinator re-submits that shard alone, and the
tables and plans equal a library-level run with ``search.arw_shards=2`` (per-shard ARW state).
On S3 (a moto server started after the workers, reached by them only through the config's
``storage`` block): both workers write one run, its tables equal the unsharded run's, the lock
object is held by the coordinator alone and released, ``avits sql`` answers on it.
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


@pytest.fixture(scope="module")
def gpu_pool(tmp_path_factory):
    """(environment, home) of one real Prefect server with two GPU workers, shared by this module's server tests."""
    home = tmp_path_factory.mktemp("pool")
    with prefect_server_with_gpu_workers(home, n_workers=2) as env:
        yield env, home


def _worker_logs(home: Path) -> str:
    return "\n".join(f"--- {n}\n" + (home / "logs" / f"{n}.log").read_text()[-3000:] for n in ("gpu0", "gpu1"))


@pytest.mark.slow
@pytest.mark.server
def test_two_shards_on_two_gpu_workers_equal_the_unsharded_run(tmp_path, gpu_pool):
    bindir = Path(sys.executable).parent
    env, home = gpu_pool

    def worker_logs():
        return _worker_logs(home)

    cfg = demo_config(str(tmp_path / "sharded"), limit=5, n=3, run_id="r")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    avits = str(bindir / "avits")
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


EVO_PROMPTS = ["a small red ball bounces twice with a high click", "a large blue cube bounces three times over rain",
               "a small green ball bounces once with a low thud", "a large yellow cube bounces twice with a high click"]


def _evo_config(output_root: str, **search: object) -> dict:
    return dict(
        name="evo-shards", run_id="evo", output_root=output_root, seed=0,
        generator=dict(name="synth", params=dict(num_steps=6)), prompts=dict(source=EVO_PROMPTS),
        search=dict(method="evosearch", params=dict(evolution_schedule=[0, 3], population_size_schedule=[3, 2, 2],
                                                    elite_size=1, mutation_rate=0.5), **search),
        verifiers=[dict(name="av_sync"), dict(name="synth_text")],
        aggregator=dict(name="arw", params=dict(optimizer="adam", lr=0.05, max_iter=20)),
        evaluation=dict(oracle=True, verifiers=[]))


def _shard_flow_processes(home: Path, device: str) -> list:
    """The flow-run processes (not the workers) that the worker with CUDA_VISIBLE_DEVICES=device started."""
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            e = p.environ()
        except (psutil.Error, OSError):
            continue
        if e.get("PREFECT_HOME") == str(home / "ph") and e.get("CUDA_VISIBLE_DEVICES") == device \
                and e.get("PREFECT__FLOW_RUN_ID"):
            out.append(p)
    return out


def _devices_stored(run: Path) -> set:
    import pyarrow.parquet as pq

    out = set()
    for part in (run / "candidates").glob("part-*.parquet"):
        try:
            out |= set(pq.read_table(part, columns=["cuda_visible_devices"]).column(0).to_pylist())
        except Exception:  # noqa: BLE001 - a part being renamed into place: next poll
            pass
    return out


@pytest.mark.slow
@pytest.mark.server
def test_evosearch_in_two_shards_with_a_killed_shard_equals_the_per_shard_replay(tmp_path, gpu_pool):
    """EvoSearch over two GPU workers: per-shard ARW state (search.arw_shards=2 from --shards 2); the
    flow-run process of the shard on the device-1 worker is SIGKILLed (while held with SIGSTOP) after its
    first candidates are stored; the coordinator re-submits that shard alone; the tables and plans equal a library-level run with arw_shards=2."""
    import signal
    import time

    from avits_core import runner
    from avits_core.config import config_from_dict

    env, home = gpu_pool
    bindir = Path(sys.executable).parent
    path = tmp_path / "evo.yaml"
    path.write_text(yaml.safe_dump(_evo_config(str(tmp_path / "sharded"))))
    out, err = open(tmp_path / "run.out", "w"), open(tmp_path / "run.err", "w")
    proc = subprocess.Popen([str(bindir / "avits"), "run", str(path), "--shards", "2", "-q"], env=env, cwd=REPO,
                            stdout=out, stderr=err, start_new_session=True)
    run = tmp_path / "sharded" / "evo"
    killed = killed_fid = None
    shard: list = []
    try:
        deadline = time.time() + 1200
        # the shard flow run on the device-1 worker is held with SIGSTOP as soon as its process exists and
        # let run in 0.2 s steps until it has stored candidates; it is SIGKILLed while stopped, so the kill
        # lands mid-shard however fast the shard is and however slow this poller (a loaded machine)
        while killed is None and proc.poll() is None and time.time() < deadline:
            if not shard:
                shard = _shard_flow_processes(home, "1")
                for p in shard:
                    p.send_signal(signal.SIGSTOP)
            elif "1" in _devices_stored(run):  # stored while it ran its last step; stopped now
                for p in shard:
                    killed_fid = p.environ().get("PREFECT__FLOW_RUN_ID")
                    p.send_signal(signal.SIGKILL)
                    killed = p.pid
                break
            else:
                for p in shard:
                    p.send_signal(signal.SIGCONT)
                time.sleep(0.2)
                for p in shard:
                    p.send_signal(signal.SIGSTOP)
                continue
            time.sleep(0.1)
        assert killed, f"no shard-1 flow run to kill (coordinator rc {proc.poll()})\n{_worker_logs(home)}"
        rc = proc.wait(timeout=max(60.0, deadline - time.time()))
    finally:
        from scale_common import stop_process

        if killed is None:  # never leave a stopped flow-run process behind
            import psutil

            for p in shard:
                try:
                    p.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
        stop_process(proc)
        out.close()
        err.close()
    assert rc == 0, (tmp_path / "run.out").read_text()[-3000:] + (tmp_path / "run.err").read_text()[-3000:] \
        + _worker_logs(home)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["search"]["arw_shards"] == 2
    # either shard may have run on the device-1 worker (workers take any run of the pool): the killed one
    # was re-submitted alone, the other ran once
    runs = info["shards"]["runs"]
    assert sorted(v["attempts"] for v in runs.values()) == [1, 2], runs
    assert killed_fid and killed_fid not in {v["flow_run_id"] for v in runs.values()}, (killed_fid, runs)
    assert {v["state"] for v in info["shards"]["runs"].values()} == {"COMPLETED"}
    # the same config in one process, per-shard ARW state by config: the same search and selection
    lib = runner.run(config_from_dict(_evo_config(str(tmp_path / "lib"), arw_shards=2)), check_models=False)
    for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
        ref = table_rows(lib["run_path"], table)
        assert ref and table_rows(run, table) == ref, table
    ctx = runner.open_run(run)
    for p in ctx.prompts:
        for g in range(1, ctx.n_generations):
            assert runner.read_plan(run, p.prompt_id, g) == runner.read_plan(Path(lib["run_path"]), p.prompt_id, g)


@pytest.mark.slow
@pytest.mark.server
def test_dask_worker_processes_on_the_real_server(tmp_path, gpu_pool):
    """``runner: {kind: dask, processes: true}``: Dask worker PROCESSES report to the real server (in
    ephemeral mode each would start its own API); the tables equal a library-level run of the config."""
    from avits_core import runner
    from avits_core.config import config_from_dict

    env, home = gpu_pool
    cfg = demo_config(str(tmp_path / "dask"), limit=3, n=3, run_id="r")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(Path(sys.executable).parent / "avits"), "run", str(path), "-q", "--set", "runner.kind=dask",
                        "--set", "runner.workers=2", "--set", "runner.processes=true"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lib = runner.run(config_from_dict(dict(cfg, output_root=str(tmp_path / "lib"))), check_models=False)
    for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
        ref = table_rows(lib["run_path"], table)
        assert ref and table_rows(tmp_path / "dask" / "r", table) == ref, table
    info = json.loads((tmp_path / "dask" / "r" / "run.json").read_text())
    ru = info["config"]["runner"]
    assert info["status"] == "completed" and (ru["kind"], ru["workers"], ru["processes"]) == ("dask", 2, True)


@pytest.mark.slow
@pytest.mark.server
def test_two_shards_on_two_workers_write_one_run_on_s3(tmp_path, gpu_pool):
    """One run, two machines' worth of writers, one object store: ``avits run --shards 2`` with
    ``output_root=s3://…`` on a moto server started AFTER the workers, so the worker processes have no
    AWS_* variables: they reach the bucket only through the config's ``storage`` block, which travels
    with the config to each shard flow run (``its_shard`` -> ``config_from_dict`` ->
    ``set_storage_options``). Both workers write candidates into the one S3 run while the coordinator
    holds its lock object (one owner seen throughout); the tables equal a library-level unsharded run
    of the same config on local disk; the lock object is gone at the end;
    ``avits sql`` answers on the S3 run."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    import time

    from helpers import tiny_config
    from scale_common import moto_server, new_bucket, stop_process

    from avits_core import runner
    from avits_core.config import config_from_dict
    from avits_core.lock import LOCK_NAME, read_lock
    from avits_core.store import fs as sfs
    from avits_core.store.duck import query

    env, home = gpu_pool
    assert not {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), \
        "the workers must not get the endpoint or credentials from their environment"
    bindir = Path(sys.executable).parent
    try:
        with moto_server() as s3env:
            bucket = new_bucket()
            storage = {"endpoint_url": s3env["AWS_ENDPOINT_URL"], "key": "testing", "secret": "testing"}
            cfg = tiny_config(tmp_path, prompts={"source": EVO_PROMPTS}, run_id="r",
                              output_root=f"s3://{bucket}/runs", storage=storage)
            path = tmp_path / "cfg.yaml"
            path.write_text(yaml.safe_dump(cfg))
            cli_env = dict(env, **s3env)  # the coordinator (this machine) has the standard variables too
            run = f"s3://{bucket}/runs/r"
            out, err = open(tmp_path / "run.out", "w+"), open(tmp_path / "run.err", "w+")
            proc = subprocess.Popen([str(bindir / "avits"), "run", str(path), "--shards", "2", "-q"], env=cli_env,
                                    cwd=REPO, stdout=out, stderr=err, start_new_session=True)
            holders = set()  # the lock object as other machines see it while the shards write
            try:
                deadline = time.time() + 900
                while proc.poll() is None and time.time() < deadline:
                    held = read_lock(run)
                    if held is not None:
                        holders.add((held.pid, held.command))
                    time.sleep(0.5)
                rc = proc.wait(timeout=max(1.0, deadline - time.time()))
            finally:
                stop_process(proc)
                out.close()
                err.close()
            assert rc == 0, "sharded S3 run failed:\n" + (tmp_path / "run.out").read_text()[-3000:] \
                + (tmp_path / "run.err").read_text()[-3000:] + _worker_logs(home)
            assert len(holders) == 1 and "--shards 2" in next(iter(holders))[1], holders  # one owner: the coordinator
            # the same config unsharded, at library level, on local disk
            local = {k: v for k, v in cfg.items() if k != "storage"}
            lib = runner.run(config_from_dict(dict(local, output_root=str(tmp_path / "plain"))), check_models=False)
            for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
                ref = table_rows(lib["run_path"], table)
                assert ref and table_rows(run, table) == ref, table
            dev = query(run, "SELECT prompt_id, list(DISTINCT cuda_visible_devices) AS d FROM candidates GROUP BY ALL "
                             "ORDER BY prompt_id").to_pylist()
            assert len(dev) == 4 and all(len(x["d"]) == 1 for x in dev), dev
            by_pos = [x["d"][0] for x in dev]  # shard i = prompt positions i, i+2: one worker each
            assert set(by_pos) == {"0", "1"} and by_pos[0] == by_pos[2] and by_pos[1] == by_pos[3], dev
            rp = sfs.as_path(run)
            info = json.loads((rp / "run.json").read_text())
            assert info["status"] == "completed" and info["shards"]["n"] == 2
            assert sorted(v["state"] for v in info["shards"]["runs"].values()) == ["COMPLETED", "COMPLETED"]
            assert read_lock(run) is None and not (rp / LOCK_NAME).exists()  # the run lock object was released
            q = subprocess.run([str(bindir / "avits"), "sql", run, "-c",
                                "SELECT cuda_visible_devices AS d, count(*) AS n FROM candidates GROUP BY ALL ORDER BY d",
                                "--format", "json"], env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=300)
            assert q.returncode == 0, q.stderr[-2000:]
            assert json.loads(q.stdout) == [{"d": "0", "n": 4}, {"d": "1", "n": 4}]  # 2 prompts x 2 candidates each
    finally:
        sfs.set_storage_options(None)  # config_from_dict registered its storage: leave no dead endpoint behind
