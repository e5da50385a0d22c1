"""CLI: bad input exits 2 with one clear message and writes nothing; listings work."""

import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from avits.cli import app
from helpers import tiny_config_file

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"searchh": {"n": 2}}, "searchh: unknown key"),
        ({"search": {"n": "two"}}, "search.n"),
        ({"prompts": {"source": "missing.csv"}}, "prompt file not found"),
        ({"verifiers": [{"name": "nope"}]}, "unknown verifier 'nope'; known verifiers: "),
        ({"aggregator": {"name": "median"}}, "unknown aggregator 'median'"),
        ({"aggregator": {"name": "arw", "params": {"lr": 0.1, "bogus": 1}}}, "bogus"),
        ({"aggregator": {"name": "zscore"}}, "zscore: needs parameter stats"),
        ({"generator": {"name": "dream"}}, "unknown generator 'dream'"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(tmp_path, over, needle):
    p = tiny_config_file(tmp_path, **over)
    res = runner.invoke(app, ["run", str(p)])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_set_override_and_missing_config(tmp_path):
    res = runner.invoke(app, ["run", str(tiny_config_file(tmp_path)), "--set", "search.n"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "config file not found" in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; checked with a file in the way instead")
def test_unwritable_output_root(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    res = runner.invoke(app, ["run", str(tiny_config_file(tmp_path, output_root=str(ro / "runs")))])
    assert res.exit_code == 2 and "not writable" in res.output


def test_output_root_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    res = runner.invoke(app, ["run", str(tiny_config_file(tmp_path, output_root=str(f)))])
    assert res.exit_code == 2 and "not writable" in res.output and str(f) in res.output


def test_listings():
    res = runner.invoke(app, ["verifiers"])
    assert res.exit_code == 0
    for name in ("av_align", "av_sync", "synth_text", "quality", "clap", "clip", "javis_score"):
        assert name in res.output
    res = runner.invoke(app, ["generators"])
    assert res.exit_code == 0 and "synth" in res.output and "ltx2" in res.output


def test_sql_on_missing_folder_and_bad_query(tmp_path):
    res = runner.invoke(app, ["sql", str(tmp_path / "none"), "-c", "SELECT 1"])
    assert res.exit_code == 2 and "no such run folder" in res.output
    (tmp_path / "r").mkdir()
    res = runner.invoke(app, ["sql", str(tmp_path / "r"), "-c", "SELECT * FROM nonexistent_table"])
    assert res.exit_code == 2


def test_benchmark_bad_files(tmp_path):
    res = runner.invoke(app, ["benchmark", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "benchmark file not found" in res.output
    (tmp_path / "b.yaml").write_text("configs:\n  - {path: missing.yaml}\n")
    res = runner.invoke(app, ["benchmark", str(tmp_path / "b.yaml")])
    assert res.exit_code == 2 and "configs.0.path: file not found" in res.output
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"configs": [{"path": str(tiny_config_file(tmp_path)), "match_nfe": "later"}]}))
    res = runner.invoke(app, ["benchmark", str(tmp_path / "c.yaml")])
    assert res.exit_code == 2 and "match_nfe" in res.output


# --------------------------------------------------------------------------- pre-flight refusals (issue 10 case 7)


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["generator.params.num_steps=0"], "generator.params: synth: num_steps must be an integer >= 1, got 0"),
        (["search.n=1000000000"], "above the limit of 1024"),
        (["verifiers.0.params.bogus=1"], "verifier av_sync (guided)"),
    ],
)
def test_component_params_refused_before_any_folder(tmp_path, sets, needle):
    args = ["run", str(tiny_config_file(tmp_path))]
    for s in sets:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], res.output
    assert not (tmp_path / "runs").exists()


def test_switching_the_aggregator_drops_the_old_params():
    """README's second command: the demo's ARW params must not stay behind when the aggregator changes."""
    from avits_core import preflight
    from avits_core.config import load_config

    cfg = load_config(REPO / "data/configs/demo.yaml", ["search.n=4", "aggregator.name=rank", "run_id=bon4-rank"])
    assert cfg.aggregator.name == "rank" and cfg.aggregator.params == {}
    assert "ok: aggregator rank" in preflight.collect(cfg, models=False)
    # params given on the command line still apply, in either order
    cfg = load_config(REPO / "data/configs/demo.yaml", ["aggregator.params.lr=0.2", "aggregator.name=arw"])
    assert cfg.aggregator.params["lr"] == 0.2 and cfg.aggregator.params["max_iter"] == 50
    cfg = load_config(REPO / "data/configs/demo.yaml", ["aggregator.params.temperature=2", "aggregator.name=weighted"])
    assert cfg.aggregator.params == {"temperature": 2}


def test_preflight_collect_lists_every_problem_and_check_run_the_first(tmp_path):
    from avits_core import preflight
    from avits_core.config import load_config

    cfg = load_config(tiny_config_file(tmp_path), ["generator.params.num_steps=0", "aggregator.params.lr=-1", "search.n=5000"])
    lines = preflight.collect(cfg)
    bad = [ln for ln in lines if preflight.is_failure(ln)]
    assert len(bad) == 3, lines
    assert any("num_steps" in ln for ln in bad) and any("aggregator" in ln for ln in bad) and any("search.n=5000" in ln for ln in bad)
    with pytest.raises(preflight.PreflightError) as exc:
        preflight.check_run(cfg)
    assert "aggregator" in str(exc.value)  # names and aggregator come before the generator
    assert preflight.check_run(load_config(tiny_config_file(tmp_path), ["search.n=5000"]), force=True).prompts
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- real processes (slow)

def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    return env


def _avits(args, env, **kw):
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "avits"
    return subprocess.Popen([str(exe), *map(str, args)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(d.name), cmd))
    return out


@pytest.mark.slow
def test_second_run_of_a_config_exits_2_and_kill_9_leaves_no_server(tmp_path):
    """Issue 10 cases 4 and 9 with real `avits run` processes."""
    import signal
    import time

    from avits import server

    cfg = tiny_config_file(tmp_path, run_id="twice")
    env = _env(tmp_path)
    first = _avits(["run", cfg], env, start_new_session=True)
    try:
        lock = tmp_path / "runs" / "twice" / "owner.lock"
        t0 = time.monotonic()
        while not lock.exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() - t0 < 120, "the first run never took the lock"
            time.sleep(0.05)
        second = _avits(["run", cfg], env)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 2, out
        errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "in use by" in errors[0] and f"pid {first.pid}" in errors[0], out
        assert "Traceback" not in out
        # the first run's private Prefect server: a child of the avits process
        t0 = time.monotonic()
        srv = []
        while not srv:
            srv = [pid for pid, cmd in _children(first.pid) if "uvicorn" in cmd]
            assert first.poll() is None and time.monotonic() - t0 < 300, "no server child seen"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)  # the avits process only, not its group
        first.wait(timeout=30)
        t0 = time.monotonic()
        while server._alive(srv[0]) and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        assert not server._alive(srv[0]), f"Prefect server pid {srv[0]} outlived its killed avits run"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)


FAILING_REPORT = """
import sys
import avits_core.report as report
def boom(ctx, selection_id):
    raise OSError(28, "No space left on device")
report.write_report = boom
from avits.cli import main
sys.argv = ["avits", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run made by `avits run` (real process, private server)."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = tiny_config_file(tmp, run_id="done")
    proc = _avits(["run", cfg, "-q"], _env(tmp))
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    return tmp, cfg, tmp / "runs" / "done"


@pytest.mark.slow
def test_finished_run_and_cached_rerank_start_no_server(finished_run):
    import json
    import time

    tmp, cfg, run = finished_run
    t0 = time.perf_counter()
    proc = _avits(["run", cfg], _env(tmp))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "(finished" in out and "Prefect server" not in out and "faithful" in out, out
    print(f"avits run of a finished run: {time.perf_counter() - t0:.2f} s")
    proc = _avits(["rerank", run, "--aggregator", "rank"], _env(tmp))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "Prefect server" not in out and "scored 0, errors 0, already stored 4" in out, out
    proc = _avits(["sql", run, "-c", "SELECT DISTINCT aggregator FROM selections ORDER BY 1", "--format", "csv"], _env(tmp))
    out, _ = proc.communicate(timeout=120)
    assert out.split() == ["aggregator", "arw", "rank"], out
    assert not (run / "owner.lock").exists()


@pytest.mark.slow
def test_error_after_the_start_is_one_line_with_step_and_cause(tmp_path):
    import json
    import subprocess
    import sys

    cfg = tiny_config_file(tmp_path, run_id="fails")
    proc = subprocess.run([sys.executable, "-c", FAILING_REPORT, "run", str(cfg), "-q"], env=_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    assert "failed at step report" in errors[0] and "No space left on device" in errors[0], out
    assert "Traceback" not in out and "UnfinishedRun" not in out, out
    info = json.loads((tmp_path / "runs" / "fails" / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["failure"]["step"] == "report" and "No space left on device" in info["failure"]["cause"]
    assert not (tmp_path / "runs" / "fails" / "owner.lock").exists()


def test_run_freezes_the_imported_objects_out_of_the_collectors_reach():
    """`avits run` moves what is alive before the flow (Prefect, pydantic, ...) into the permanent
    generation, so the run's full collections walk only the run's objects (issue 17)."""
    import gc

    from avits import cli

    gc.unfreeze()  # an earlier in-process `avits run` of this test session may have frozen already
    try:
        cli._freeze_imported_objects()
        assert gc.get_freeze_count() > 10_000  # the imported modules' objects
        import weakref

        class Node:
            pass

        n = Node()
        n.me = n  # a cycle made during the run is still collected
        gone = weakref.ref(n)
        del n
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_run_raises_the_collectors_thresholds_while_the_flow_runs_and_restores_them(monkeypatch):
    """During a run's flow the collector runs less often (RUN_GC_THRESHOLDS; issue 17: ~0.4 CPU-s of the
    demo run); the thresholds are restored after it, even when the flow fails, and thresholds someone
    already changed are kept."""
    import gc

    from avits import cli

    before = gc.get_threshold()
    start = cli._GC_THRESHOLDS_AT_IMPORT  # the interpreter's own in the `avits` command
    try:
        for default in ((700, 10, 10), (2000, 10, 10)):  # 3.11/3.12 and 3.13's defaults
            monkeypatch.setattr(cli, "_GC_THRESHOLDS_AT_IMPORT", default)
            gc.set_threshold(*default)
            seen = []
            with pytest.raises(RuntimeError):
                with cli._collector_tuned():
                    seen.append(gc.get_threshold())
                    raise RuntimeError("the flow failed")
            assert seen == [cli.RUN_GC_THRESHOLDS] and gc.get_threshold() == default
        monkeypatch.setattr(cli, "_GC_THRESHOLDS_AT_IMPORT", start)
        gc.set_threshold(*start)
        with cli._collector_tuned():
            assert gc.get_threshold() == cli.RUN_GC_THRESHOLDS  # this interpreter's own default is tuned
        gc.set_threshold(1234, 5, 5)  # an embedding process's own choice
        with cli._collector_tuned():
            assert gc.get_threshold() == (1234, 5, 5)
        gc.set_threshold(0)  # collection switched off by the embedding process
        monkeypatch.setattr(cli, "_GC_THRESHOLDS_AT_IMPORT", gc.get_threshold())
        with cli._collector_tuned():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
