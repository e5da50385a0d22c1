"""The Dask task runner (prefect-dask, threads, as in CI): same tables as the default thread runner.
Worker processes need a real Prefect server; they are not tested here."""

from __future__ import annotations

import pytest

from scale_common import demo_config, table_rows

pytest.importorskip("prefect_dask")


def test_runner_config_is_a_scheduling_knob():
    from avits_core.config import ConfigError, config_from_dict

    base = demo_config("runs")
    a = config_from_dict(base)
    b = config_from_dict({**base, "runner": {"kind": "dask", "workers": 2}})
    assert a.runner.kind == "thread" and b.runner.kind == "dask" and b.runner.workers == 2
    assert a.config_hash() == b.config_hash() and a.resolved_run_id() == b.resolved_run_id()
    with pytest.raises(ConfigError, match="runner"):
        config_from_dict({**base, "runner": {"kind": "ray"}})
    with pytest.raises(ConfigError, match="runner"):
        config_from_dict({**base, "runner": {"kind": "dask", "workers": 0}})


def test_task_runner_for():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from avits_core.config import config_from_dict
    from flows.task_runner import task_runner_for

    assert isinstance(task_runner_for(config_from_dict(demo_config("runs"))), ThreadPoolTaskRunner)
    tr = task_runner_for(config_from_dict({**demo_config("runs"), "runner": {"kind": "dask", "workers": 3}}))
    assert isinstance(tr, DaskTaskRunner)
    assert tr.cluster_kwargs["n_workers"] == 3 and tr.cluster_kwargs["processes"] is False


@pytest.mark.slow
def test_dask_threads_run_equals_thread_runner_run(tmp_path, prefect_harness):
    from avits_core.config import config_from_dict
    from flows.its import its

    outs = {}
    for kind in ("thread", "dask"):
        cfg = demo_config(str(tmp_path / kind), limit=3, n=3, run_id="r",
                          runner={"kind": kind, "workers": 2})
        outs[kind] = its(config=config_from_dict(cfg))
    for table in ("candidates", "rewards", "selections", "metrics", "arw_trace"):
        ref = table_rows(outs["thread"]["run_path"], table)
        assert ref and table_rows(outs["dask"]["run_path"], table) == ref, table
    assert outs["dask"]["results"] == outs["thread"]["results"]
