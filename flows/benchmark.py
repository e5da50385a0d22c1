"""The ``benchmark`` flow: several run configs over one prompt set, then one comparison table.

A benchmark file (YAML) lists configs, each a path (relative to the benchmark file) with optional
``set`` overrides, plus shared overrides applied to all of them::

    name: nightly
    set: [output_root=runs]          # applied to every config
    configs:
      - path: demo.yaml
      - {path: evosearch-demo.yaml, label: evo}
      - {path: demo.yaml, label: bon-equal-nfe, match_nfe: evo}

``match_nfe: LABEL`` runs that (Best-of-N) config with N chosen so that its NFE per prompt equals
the NFE per prompt actually spent by the run LABEL (which must come earlier in the list):
N = round(NFE per prompt of LABEL / NFE of one full-schedule candidate), where the latter is read
from LABEL's generation-0 candidates (they are denoised from noise over the whole schedule).

The configs are loaded and validated first, all of them (:func:`avits_core.config.benchmark.load_benchmark_plan`):
``avits benchmark`` does that and the pre-flight checks, then passes the plan (``plan=``) so nothing is
parsed or checked twice; a deployment passes ``benchmark_path`` and the plan is loaded here. Each
config runs as an ``its`` subflow given its validated config (resuming if its run exists). The comparison table (one row
per config x metric: baseline, selected, change, total NFE) is written as Parquet and Markdown
under ``<output_root>/benchmarks/<name>/``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from avits_core.config.benchmark import BenchmarkPlan, load_benchmark_plan


def comparison_folder(output_root: str, name: str) -> Any:
    """``<output_root>/benchmarks/<name>``, a local folder or an object-store location; UnsafePathError
    (locally: symlinks resolved) or UnsafeNameError (object store: a key has no symlinks, the name must be
    one safe component) when ``name`` would leave ``benchmarks/``. The benchmark file's name is checked
    when it is loaded; this holds for a plan made any other way too."""
    from avits_core.names import check_name, inside
    from avits_core.store.fs import as_path, is_remote

    base = as_path(output_root) / "benchmarks"
    if is_remote(base):
        check_name(name, "benchmark name")
    else:
        inside(base, name)
    return base / name


@flow(name="its-benchmark", log_prints=False)
def benchmark(benchmark_path: str = "data/configs/benchmark.yaml", overrides: list[str] | None = None,
              plan: BenchmarkPlan | None = None) -> dict[str, Any]:
    """Run every config of a benchmark (``plan``, else the file ``benchmark_path`` with ``overrides``)
    and write one comparison table."""
    from avits_core.benchmark import comparison_rows
    from avits_core.report.benchmark import write_comparison
    from flows.its import its

    logger = get_run_logger()
    if plan is None:
        plan = load_benchmark_plan(benchmark_path, list(overrides or []))  # validate all first
    outs = []
    by_label: dict[str, dict[str, Any]] = {}
    for it in plan.entries:
        cfg = it.config
        if it.match_nfe:
            from avits_core.benchmark import matched_n
            from avits_core.config import apply_overrides, config_from_dict

            n = matched_n(by_label[it.match_nfe]["run_path"])
            logger.info("%s: Best-of-%d matches the NFE of %s", it.label, n, it.match_nfe)
            cfg = config_from_dict(apply_overrides(cfg.model_dump(mode="json"), [f"search.n={n}"]),
                                   source=f"{it.path} (match_nfe: search.n={n})")
        out = its(config=cfg)  # the validated config, not a path for the subflow to parse again
        by_label[it.label] = out
        outs.append({"label": it.label, **out})
        logger.info("%s -> %s", it.label, out["run_path"])
    rows = comparison_rows(outs)
    cfgs = [it.config for it in plan.entries]
    paths = write_comparison(rows, comparison_folder(cfgs[0].output_root, plan.name))
    return {"name": plan.name, "rows": rows, "paths": {k: str(v) for k, v in paths.items()},
            "runs": [o["run_path"] for o in outs]}
