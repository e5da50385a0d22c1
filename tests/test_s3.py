"""Runs on object storage: a real moto S3 server on 127.0.0.1 (started and stopped here).

Fast: the store, run.json's compare-and-swap, DuckDB over s3:// and the run lock on S3.
Slow: the demo config (fewer prompts) with ``output_root=s3://...`` end to end, its tables equal to
the same config run on local disk; ``avits sql`` and ``avits rerank`` on it; SIGKILL mid-run, rerun:
no lost and no duplicated rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from scale_common import REPO, demo_config, moto_server, new_bucket, table_rows

pytest.importorskip("s3fs")
pytest.importorskip("moto")


@pytest.fixture(scope="module")
def s3():
    with moto_server() as env:
        yield env


@pytest.fixture
def bucket(s3):
    return new_bucket()


def test_store_on_s3_append_read_duckdb(bucket):
    from avits_core.store import RunStore, connect
    from avits_core.store.fs import is_remote

    st = RunStore(f"s3://{bucket}/runs", "r1").create()
    assert is_remote(st.path) and str(st.path) == f"s3://{bucket}/runs/r1"
    st.write_run_json({"status": "running"})
    rows = [dict(prompt_id="p0", candidate_id=f"p0_g0_c{i}", verifier="v", verifier_version="1", status="ok",
                 value=float(i) / 4, event_seq=0, generation=0, wall_s=0.0) for i in range(3)]
    part = st.append("rewards", rows)
    st.append("rewards", [dict(rows[0], candidate_id="p0_g0_c9", value=None, status="error", error="boom")])
    assert str(part).startswith(f"s3://{bucket}/runs/r1/rewards/part-")
    assert len(st.parts("rewards")) == 2
    t = st.read("rewards")
    assert sorted(t["value"].to_pylist(), key=lambda v: (v is None, v)) == [0.0, 0.25, 0.5, None]
    assert st.scored_pairs("v", "1", include_errors=False) == {"p0_g0_c0", "p0_g0_c1", "p0_g0_c2"}
    # DuckDB reads the s3:// parts through the registered fsspec filesystem (no httpfs)
    con = connect(st.path)
    got = con.sql("SELECT status, count(*), sum(value) FROM rewards GROUP BY ALL ORDER BY ALL").fetchall()
    assert got == [("error", 1, None), ("ok", 3, 0.75)]
    # runs root: views across runs
    RunStore(f"s3://{bucket}/runs", "r2").create().append("rewards", rows[:1])
    con = connect(f"s3://{bucket}/runs")
    assert con.sql("SELECT run_id, count(*) FROM rewards GROUP BY ALL ORDER BY ALL").fetchall() == [("r1", 4), ("r2", 1)]


def test_run_json_compare_and_swap_keeps_every_concurrent_update(bucket):
    from avits_core.store import RunStore

    st = RunStore(f"s3://{bucket}/runs", "cas").create()
    st.write_run_json({"timings": {}})

    def add(i):
        st2 = RunStore(f"s3://{bucket}/runs", "cas")  # its own object, as another process would be

        def change(info):
            t = dict(info.get("timings") or {})
            t[f"t{i}"] = i
            return {**info, "timings": t}

        st2.modify_run_json(change)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert st.read_run_json()["timings"] == {f"t{i}": i for i in range(8)}


def test_put_if_absent_is_conditional(bucket):
    from avits_core.store import fs as sfs

    p = sfs.as_path(f"s3://{bucket}/x/lock")
    assert sfs.put_if_absent(p, b"first") is True
    assert sfs.put_if_absent(p, b"second") is False
    assert sfs.read_bytes(p) == b"first"


def test_run_lock_on_s3(bucket):
    from avits_core.lock import LOCK_NAME, LockInfo, RunLock, RunLockedError, read_lock
    from avits_core.store import fs as sfs
    from avits_core.store.cas import ObjectStoreBackend

    run = f"s3://{bucket}/runs/locked"
    lk = RunLock(run, "avits run a.yaml", heartbeat_s=0).acquire()
    assert isinstance(lk.backend, ObjectStoreBackend)
    held = read_lock(run)
    assert held.pid == os.getpid() and held.command == "avits run a.yaml"
    with pytest.raises(RunLockedError, match="in use by `avits run a.yaml`"):
        RunLock(run, "avits run b.yaml", heartbeat_s=0).acquire()
    before = held.heartbeat_at
    time.sleep(0.01)
    assert lk.beat() and read_lock(run).heartbeat_at > before
    lk.release()
    assert read_lock(run) is None and not sfs.as_path(run + "/" + LOCK_NAME).exists()

    # a lock from another machine whose heartbeat stopped: reported, broken only with break_lock
    ghost = LockInfo(user="u", host="gpu-node-7", boot_id="b", pid=4242, pid_start="1", command="avits run c.yaml",
                     started_at=time.time() - 3600, heartbeat_at=time.time() - 3600)
    assert sfs.put_if_absent(sfs.as_path(run + "/" + LOCK_NAME), ghost.to_bytes())
    with pytest.raises(RunLockedError, match="stale lock.*gpu-node-7.*--break-lock"):
        RunLock(run, "avits run d.yaml", heartbeat_s=0).acquire()
    lk = RunLock(run, "avits run d.yaml", heartbeat_s=0).acquire(break_lock=True)
    assert any("gpu-node-7" in n and "--break-lock" in n for n in lk.notes)
    # someone else broke OUR lock: the heartbeat notices (compare-and-swap on the ETag fails)
    sfs.put_bytes(sfs.as_path(run + "/" + LOCK_NAME), ghost.to_bytes())
    assert lk.beat() is False and lk.lost
    lk.release()
    assert read_lock(run).host == "gpu-node-7"  # a lock we no longer own is not deleted


def test_output_root_on_a_missing_bucket_is_one_preflight_error(s3):
    from avits_core.checks.inputs import writable_line

    line = writable_line("s3://no-such-bucket-here/runs")
    assert line.startswith("ERROR: output_root") and "no-such-bucket-here" in line
    ok = writable_line(f"s3://{new_bucket()}/runs")
    assert ok.startswith("ok:")


# --------------------------------------------------------------------------------------------- slow


def _avits(args, **kw):
    exe = os.path.join(os.path.dirname(sys.executable), "avits")
    return subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, env=dict(os.environ), **kw)


@pytest.mark.slow
def test_demo_on_s3_equals_local_run_and_cli_works(bucket, tmp_path, prefect_harness):
    from avits_core.config import config_from_dict
    from flows.its import its

    outs = {}
    for where, root in (("local", str(tmp_path / "runs")), ("s3", f"s3://{bucket}/runs")):
        cfg = config_from_dict(demo_config(root, limit=3, n=3, run_id="demo-small"))
        outs[where] = its(config=cfg)
    s3_run = outs["s3"]["run_path"]
    assert s3_run == f"s3://{bucket}/runs/demo-small"
    for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
        local_rows = table_rows(outs["local"]["run_path"], table)
        assert local_rows and table_rows(s3_run, table) == local_rows, table
    from avits_core.store import fs as sfs

    run = sfs.as_path(s3_run)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    # the mp4 files are the same bytes (deterministic encode), uploaded whole
    mp4 = table_rows(s3_run, "candidates")[-1][7]  # media_path of the last candidate
    assert sfs.read_bytes(run / mp4) == (tmp_path / "runs" / "demo-small" / mp4).read_bytes()
    assert (run / "report" / "report.md").exists() and (run / "report" / "index.html").exists()
    assert not (run / "owner.lock").exists()

    # the benchmark flow's tail on S3: comparison rows (run.json and the tables read from the bucket) and
    # the comparison written under <output_root>/benchmarks/<name> as flows/benchmark.py does (it read
    # run.json through a local Path and failed after all the generation)
    from pathlib import Path

    from avits_core.benchmark import comparison_rows
    from avits_core.report.benchmark import write_comparison

    rows = {w: comparison_rows([{"label": w, **o}]) for w, o in outs.items()}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("label", "run_id")} for r in rs]
    assert rows["s3"] and strip(rows["s3"]) == strip(rows["local"])
    paths = write_comparison(rows["local"] + rows["s3"], sfs.as_path(f"s3://{bucket}/runs") / "benchmarks" / "t")
    for name in ("comparison.parquet", "comparison.md", "comparison.svg"):
        assert sfs.as_path(f"s3://{bucket}/runs/benchmarks/t/{name}").exists(), (name, paths)
    assert not Path("s3:").exists()  # nothing written to a local folder named after the scheme

    # avits sql on the S3 run (DuckDB through fsspec) and across the runs root
    r = _avits(["sql", s3_run, "-c", "SELECT count(*) AS n FROM rewards WHERE status = 'ok'", "--format", "json"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == [{"n": 3 * 3 * 4}]  # 3 prompts x 3 candidates x (3 guided + quality)
    r = _avits(["sql", f"s3://{bucket}/runs", "-c", "SELECT run_id, count(*) AS n FROM selections GROUP BY ALL",
                "--format", "json"], timeout=300)
    assert json.loads(r.stdout) == [{"run_id": "demo-small", "n": 3}]
    # avits rerank on the S3 run: a new selection under a new id, rewards untouched
    n_rewards = len(table_rows(s3_run, "rewards"))
    r = _avits(["rerank", s3_run, "--aggregator", "rank"], timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    sel = table_rows(s3_run, "selections")
    assert len({s[0] for s in sel}) == 2 and len(sel) == 6
    assert len(table_rows(s3_run, "rewards")) == n_rewards
    # the local run reranked the same way picks the same candidates
    r2 = _avits(["rerank", outs["local"]["run_path"], "--aggregator", "rank"], timeout=600)
    assert r2.returncode == 0
    assert table_rows(outs["local"]["run_path"], "selections") == sel


@pytest.mark.slow
def test_sigkill_mid_run_on_s3_then_resume(bucket, tmp_path):
    from avits_core.store import fs as sfs
    from avits_core.store.duck import query

    cfg = demo_config(f"s3://{bucket}/runs", limit=8, n=3, run_id="killme")
    cfg["verifiers"] = [{"name": "av_sync"}, {"name": "synth_text"}, {"name": "av_align"}]
    cfg["evaluation"] = {"oracle": True, "verifiers": []}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "ph"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               AVITS_SCORE_FLUSH_ROWS="3")
    exe = os.path.join(os.path.dirname(sys.executable), "avits")
    run = sfs.as_path(f"s3://{bucket}/runs/killme")
    proc = subprocess.Popen([exe, "run", str(path), "-q"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed:\n" + proc.stdout.read()[-3000:])
        n = len(run.fs.glob(run.path + "/rewards/part-*.parquet"))
        if n >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            killed = True
            break
        time.sleep(0.05)
    assert killed, "scoring never started"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "running"
    before = {p: run.fs.info(p)["ETag"] for p in run.fs.glob(run.path + "/*/part-*.parquet")}
    n_before = query(run, "SELECT count(*) n FROM rewards_all").to_pylist()[0]["n"]
    assert 0 < n_before < 8 * 3 * 3
    # the killed command's lock: same machine, process gone -> taken over with a warning
    again = subprocess.run([exe, "run", str(path), "-q"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "took over the lock" in again.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    for p, etag in before.items():  # nothing stored before the kill was rewritten
        assert run.fs.info(p)["ETag"] == etag
    c = query(run, "SELECT count(*) n, count(DISTINCT candidate_id) u FROM candidates").to_pylist()[0]
    assert c == {"n": 24, "u": 24}
    r = query(run, "SELECT count(*) n, count(DISTINCT (candidate_id, verifier)) u FROM rewards_all").to_pylist()[0]
    assert r == {"n": 24 * 3, "u": 24 * 3}
    s = query(run, "SELECT count(*) n, count(DISTINCT prompt_id) p FROM selections").to_pylist()[0]
    assert s == {"n": 8, "p": 8}


@pytest.mark.slow
def test_evosearch_on_s3_latents_and_plans_equal_local_run(bucket, tmp_path):
    """A multi-event method keeps latents and plans under the run: on S3 they round-trip (one PUT each,
    read back for branching), and the run equals the local one (library level, no Prefect)."""
    from avits_core import runner
    from avits_core.config import config_from_dict
    from avits_core.store import fs as sfs

    base = yaml.safe_load((REPO / "data/configs/evosearch-demo.yaml").read_text())
    base["prompts"] = {"source": str(REPO / "data/prompts/synth-24.csv"), "limit": 1}
    paths = {}
    for where, root in (("local", str(tmp_path / "runs")), ("s3", f"s3://{bucket}/runs")):
        out = runner.run(config_from_dict(dict(base, output_root=root, run_id="evo")))
        paths[where] = out["run_path"]
    for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
        ref = table_rows(paths["local"], table)
        assert ref and table_rows(paths["s3"], table) == ref, table
    run = sfs.as_path(paths["s3"])
    n_lat = len(run.fs.find(run.path + "/latents"))
    assert n_lat > 0 and n_lat == len(list((tmp_path / "runs" / "evo" / "latents").rglob("*.pt")))
    assert len(run.fs.find(run.path + "/plans")) == len(list((tmp_path / "runs" / "evo" / "plans").rglob("*.json"))) > 0


def test_doctor_and_quarantine_on_an_s3_run(bucket, tmp_path):
    """``avits doctor s3://RUN``: run.json, lock and every part read through the store's fs layer; a
    truncated part is named (exit 1), ``--quarantine`` moves it to quarantine/ on the bucket (copy +
    delete) and the run is readable again with the other part's rows."""
    from pathlib import Path

    from avits_core.doctor import run_doctor
    from avits_core.store import RunStore
    from avits_core.store import fs as sfs
    from avits_core.store.duck import query

    st = RunStore(f"s3://{bucket}/runs", "doc").create()
    st.write_run_json({"run_id": "doc", "status": "completed"})
    rows = [dict(prompt_id="p0", candidate_id=f"p0_g0_c{i}", verifier="v", verifier_version="1", status="ok",
                 value=float(i), event_seq=0, generation=0, wall_s=0.0) for i in range(3)]
    good = st.append("rewards", rows[:2])
    bad = st.append("rewards", rows[2:])
    sfs.put_bytes(bad, sfs.read_bytes(bad)[:40])  # a truncated object, as a torn upload by another tool would be
    run = f"s3://{bucket}/runs/doc"
    name = str(bad).rsplit("/", 1)[1]
    for target in (run, Path(run)):  # the CLI hands typer's Path (``s3:/bucket/...``)
        lines, ok = run_doctor(target)
        assert not ok and "ok: run doc: status completed" in lines and "ok: lock: no command holds this run" in lines
        err = [ln for ln in lines if ln.startswith("ERROR: corrupt part")]
        assert len(err) == 1 and err[0].startswith(f"ERROR: corrupt part rewards/{name}: "), lines
    exe = os.path.join(os.path.dirname(sys.executable), "avits")
    r = subprocess.run([exe, "doctor", run], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and f"ERROR: corrupt part rewards/{name}" in r.stdout, r.stdout + r.stderr
    lines, ok = run_doctor(run, quarantine=True)
    moved = [ln for ln in lines if ln.startswith("WARNING: corrupt part")]
    assert ok and moved == [ln for ln in moved if f"rewards/{name} (" in ln and f"moved to quarantine/rewards/{name};" in ln]
    assert len(moved) == 1, lines
    q = sfs.as_path(f"{run}/quarantine/rewards/{name}")
    assert sfs.read_bytes(q) and not sfs.as_path(str(bad)).exists()
    lines, ok = run_doctor(run)
    assert ok and "ok: 1 Parquet part files, all readable" in lines, lines
    assert query(run, "SELECT candidate_id FROM rewards ORDER BY 1").column("candidate_id").to_pylist() == [
        "p0_g0_c0", "p0_g0_c1"]
    assert str(good).startswith(f"{run}/rewards/part-")
