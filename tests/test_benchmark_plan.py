"""A benchmark file is loaded and validated once (avits_core.config.benchmark): `avits benchmark` checks
every config, then hands those validated configs to the its-benchmark flow, which passes each one to
its `its` subflow; nothing is parsed or checked a second time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import tiny_config, write_config
from typer.testing import CliRunner

from avits_core.config.benchmark import BenchmarkPlan, load_benchmark_plan
from avits_core.errors import ConfigError


def _bench(tmp_path: Path, configs: list, **top) -> Path:
    tiny = tiny_config(tmp_path)
    write_config(tiny, tmp_path / "tiny.yaml")
    evo = dict(tiny, name="tinyevo", search={"method": "evosearch", "params": {
        "evolution_schedule": [0, 3], "population_size_schedule": [2, 2, 2], "elite_size": 1,
        "tournament_ratio": 0.5, "mutation_rate": 0.3}})
    write_config(evo, tmp_path / "evo.yaml")
    return write_config({"name": "tb", "configs": configs, **top}, tmp_path / "bench.yaml")


def test_plan_holds_every_config_with_overrides_in_order(tmp_path):
    p = _bench(tmp_path, [{"path": "tiny.yaml", "label": "a", "set": ["search.n=3"]},
                          {"path": "evo.yaml", "label": "evo"},
                          {"path": "tiny.yaml", "label": "eq", "match_nfe": "evo"}], set=["seed=5"])
    plan = load_benchmark_plan(p, ["seed=7"])
    assert isinstance(plan, BenchmarkPlan) and plan.name == "tb"
    assert [(e.label, e.match_nfe) for e in plan.entries] == [("a", None), ("evo", None), ("eq", "evo")]
    a, evo, eq = (e.config for e in plan.entries)
    assert (a.search.n, eq.search.n) == (3, 2)  # entry `set` on its own config only (tiny.yaml has n=2)
    assert {a.seed, evo.seed, eq.seed} == {7}  # the command line's --set comes after the file's shared set
    assert evo.search.method == "evosearch" and plan.entries[1].path == str((tmp_path / "evo.yaml").resolve())
    # the same file and overrides give the same config (and so the same run id) as load_config
    from avits_core.config import load_config

    assert a.resolved_run_id() == load_config(tmp_path / "tiny.yaml", ["seed=5", "search.n=3", "seed=7"]).resolved_run_id()


def test_plan_refuses_a_bad_entry_before_anything_runs(tmp_path):
    p = _bench(tmp_path, [{"path": "evo.yaml", "label": "evo"},
                          {"path": "evo.yaml", "label": "evo2", "match_nfe": "evo"}])
    with pytest.raises(ConfigError, match=r"^evo2: match_nfe needs a best_of_n config, got evosearch$"):
        load_benchmark_plan(p)
    p = _bench(tmp_path, [{"path": "tiny.yaml", "label": "a"}, {"path": "tiny.yaml", "label": "b", "set": ["search.n=0"]}])
    with pytest.raises(ConfigError, match=r"tiny\.yaml: invalid config: search\.n: .*greater than or equal to 1"):
        load_benchmark_plan(p)


def test_cli_checks_each_config_once_and_hands_the_plan_to_the_flow(tmp_path, monkeypatch):
    import flows.benchmark
    from avits import cli
    from avits_core import preflight

    p = _bench(tmp_path, [{"path": "tiny.yaml", "label": "a"}, {"path": "evo.yaml", "label": "evo"}])
    checked = []
    real_check = preflight.check_run

    def counting_check(cfg, **kw):
        checked.append(cfg)
        return real_check(cfg, **kw)

    got = {}

    def fake_flow(*args, **kwargs):
        got["args"], got["kwargs"] = args, kwargs
        md = tmp_path / "cmp.md"
        md.write_text("| comparison |\n")
        return {"paths": {"markdown": str(md), "parquet": "x.parquet", "plot": "x.svg"}}

    monkeypatch.setattr(preflight, "check_run", counting_check)
    monkeypatch.setattr(flows.benchmark, "benchmark", fake_flow)
    monkeypatch.setattr(cli, "_run_flow", lambda call, **kw: call())  # no Prefect server: the wiring only
    res = CliRunner().invoke(cli.app, ["benchmark", str(p), "--set", "seed=3"])
    assert res.exit_code == 0, res.output
    assert "| comparison |" in res.output
    assert got["args"] == () and set(got["kwargs"]) == {"plan"}  # no path for the flow to parse again
    plan = got["kwargs"]["plan"]
    assert [e.label for e in plan.entries] == ["a", "evo"]
    # exactly the config objects the CLI checked, each checked once
    assert len(checked) == 2 and all(c is e.config for c, e in zip(checked, plan.entries))
    assert all(e.config.seed == 3 for e in plan.entries)
    # the checks passed with the weights: the its subflow's prepare_run takes them instead of checking again
    assert all(preflight.take_passed(e.config) is not None for e in plan.entries)


def test_cli_refuses_a_bad_match_nfe_before_the_flow(tmp_path, monkeypatch):
    import flows.benchmark
    from avits import cli

    p = _bench(tmp_path, [{"path": "evo.yaml", "label": "evo"}, {"path": "evo.yaml", "label": "e2", "match_nfe": "evo"}])
    monkeypatch.setattr(flows.benchmark, "benchmark", lambda **kw: pytest.fail("the flow must not start"))
    res = CliRunner().invoke(cli.app, ["benchmark", str(p)])
    assert res.exit_code == 2 and "e2: match_nfe needs a best_of_n config" in res.output


def test_flow_runs_each_plan_entry_with_its_validated_config(tmp_path, monkeypatch):
    """The flow body (``.fn``, no Prefect run) over a plan: every entry's config object goes to ``its``
    as is; a match_nfe entry gets the same config with search.n from the matched run's NFE."""
    import avits_core.benchmark
    import avits_core.report.benchmark
    import flows.benchmark
    import flows.its

    p = _bench(tmp_path, [{"path": "evo.yaml", "label": "evo"}, {"path": "tiny.yaml", "label": "eq", "match_nfe": "evo"}])
    plan = load_benchmark_plan(p)
    ran = []

    def fake_its(*, config):
        ran.append(config)
        return {"run_id": config.resolved_run_id(), "run_path": str(tmp_path / config.resolved_run_id()),
                "selection_id": "s", "results": []}

    monkeypatch.setattr(flows.its, "its", fake_its)
    monkeypatch.setattr(flows.benchmark, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(avits_core.benchmark, "matched_n", lambda run_path: 5 if run_path.endswith(ran[0].resolved_run_id()) else -1)
    monkeypatch.setattr(avits_core.benchmark, "comparison_rows", lambda outs: [o["label"] for o in outs])
    monkeypatch.setattr(avits_core.report.benchmark, "write_comparison", lambda rows, root: {"markdown": root / "c.md"})
    out = flows.benchmark.benchmark.fn(plan=plan)
    assert ran[0] is plan.entries[0].config
    eq = ran[1]
    assert eq.search.n == 5 and eq.model_dump(exclude={"search"}) == plan.entries[1].config.model_dump(exclude={"search"})
    assert out["rows"] == ["evo", "eq"] and out["name"] == "tb"
    assert out["paths"]["markdown"] == str(tmp_path / "runs" / "benchmarks" / "tb" / "c.md")


def test_cli_prints_a_comparison_written_to_an_object_store(tmp_path, monkeypatch):
    """`avits benchmark` prints the comparison table from where the flow wrote it: with an object-store
    output_root that is an s3:// object (it was read as a local Path, after the whole benchmark had run).
    fsspec's in-memory filesystem stands in for the store."""
    import fsspec

    import flows.benchmark
    from avits import cli

    pytest.importorskip("upath")
    p = _bench(tmp_path, [{"path": "tiny.yaml", "label": "a"}])
    url = "memory://avits-bench/benchmarks/b/comparison.md"
    with fsspec.open(url, "w") as f:
        f.write("| comparison on the store |\n")
    monkeypatch.setattr(flows.benchmark, "benchmark",
                        lambda **kw: {"paths": {"markdown": url, "parquet": "p", "plot": "s"}})
    monkeypatch.setattr(cli, "_run_flow", lambda call, **kw: call())
    res = CliRunner().invoke(cli.app, ["benchmark", str(p)])
    assert res.exit_code == 0, res.output
    assert "| comparison on the store |" in res.output
