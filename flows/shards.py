"""Sharded runs: the prompts of one run split into K shards, each generated and scored by its own flow
run on a work pool (one worker per GPU), then one replay / evaluation / report over the whole run.

- :func:`shard_prompt_ids`: shard ``i`` of ``K`` is every K-th prompt from ``i`` on (prompt order),
  so shards are balanced whatever the prompt count.
- ``its-shard`` (:func:`its_shard`): one shard's generation and scoring (guided and held-out
  verifiers) into the shared run folder (a local folder every worker sees, or ``s3://``). It is the
  ``its`` flow's wave loop restricted to the shard's prompts; stored work is skipped, so a retried or
  resumed shard only does what is missing. It runs on the config's ``runner`` and sets the run's
  numeric-thread limit in the worker's flow-run process, as ``its`` does.
- ``its-sharded`` (:func:`its_sharded`): prepares the run (run.json), submits the K shard runs with
  ``run_deployment`` to the deployment ``shard_deployment`` (default ``its-shard/gpu``, on the GPU work
  pool of prefect.yaml) without waiting for each, waits for all, re-submits only the shards that
  failed or crashed (up to ``shard_retries`` times; finished shards are not touched), checks that
  every (prompt, event) and every reward is stored, then selects (the replay of the rewards in
  event_seq order), evaluates and reports exactly as the ``its`` flow does.

Best-of-N has one scoring event per prompt, and the replay is defined by event_seq, not by the order
in which shards ran: a K-shard run's tables equal the unsharded run's (except the
``cuda_visible_devices`` column, which says where a candidate was made); its ARW scope stays the
whole run. Methods with several events per prompt (EvoSearch, zero_order, search_over_paths, smc,
beam, prune) plan each event from the online aggregate; in K shards each shard process holds its own
(as the paper's multi-GPU scripts do), so :func:`sharded_config` sets ``search.arw_shards = K``: the
ARW state is per shard of prompts (prompt i in shard i mod K, the split of :func:`shard_prompt_ids`)
during the search and in the default selection's replay, which therefore reproduces the choices the
search made. ``search.arw_shards`` is part of the run identity (a multi-event run in K shards is
another run id than the unsharded one: its results differ), and the same per-shard result comes
from one process with ``--set search.arw_shards=K`` (no workers). A worker split must keep every
ARW shard on one worker: ``shards`` must divide ``search.arw_shards``.

Workers: ``CUDA_VISIBLE_DEVICES=i prefect worker start --pool avits-gpu --name gpu<i> --limit 1``
(the flow-run process inherits the worker's environment; the generator sees one GPU). The
coordinator must not run on that pool (it would hold a GPU worker while it waits): run it from
``avits run CONFIG --shards K`` (against a running Prefect server) or the ``its/sharded`` deployment
on the CPU pool.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

from prefect import flow, get_run_logger

from avits_core import runner
from avits_core.config import RunConfig, config_from_dict
from avits_core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SHARD_DEPLOYMENT = "its-shard/gpu"


def shard_prompt_ids(prompt_ids: Sequence[str], shard: int, shards: int) -> list[str]:
    """The prompt ids of shard ``shard`` (0-based) of ``shards``: every ``shards``-th prompt from ``shard`` on."""
    if shards < 1:
        raise ConfigError(f"shards must be >= 1, got {shards}")
    if not 0 <= shard < shards:
        raise ConfigError(f"shard {shard} out of range for {shards} shards (0..{shards - 1})")
    return list(prompt_ids[shard::shards])


def _multi_event(cfg: RunConfig) -> bool:
    from avits_core.search.base import search_from_config

    return search_from_config(cfg.search).n_events != 1


def sharded_config(cfg: RunConfig, shards: int) -> RunConfig:
    """The config a run in ``shards`` shards runs: ``cfg`` itself for a one-event method (Best-of-N:
    sharding changes nothing) or when ``search.arw_shards`` already fits; for a multi-event method
    with ``search.arw_shards`` 1, the same config with ``search.arw_shards = shards`` (ARW state per
    shard: a new run id). Then :func:`check_shardable`."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"--shards must be an integer >= 1, got {shards!r}")
    if shards > 1 and cfg.search.arw_shards == 1 and _multi_event(cfg):
        cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"arw_shards": shards})})
    check_shardable(cfg, shards)
    return cfg


def check_shardable(cfg: RunConfig, shards: int) -> None:
    """ConfigError unless ``cfg`` can run in ``shards`` shard flow runs: for a multi-event method every
    ARW shard (``search.arw_shards``) must lie within one worker shard, i.e. ``shards`` divides it."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"--shards must be an integer >= 1, got {shards!r}")
    if shards == 1:
        return
    k = cfg.search.arw_shards
    if k % shards and _multi_event(cfg):
        raise ConfigError(f"--shards {shards} does not divide search.arw_shards={k}: search.method "
                          f"{cfg.search.method!r} plans from a per-shard ARW state, so each of its {k} ARW shards "
                          f"must run on one worker; use --shards {k} (or a divisor of it)")


def _cfg(config: RunConfig | dict[str, Any]) -> RunConfig:
    return config if isinstance(config, RunConfig) else config_from_dict(dict(config), source="config parameter")


@flow(name="its-shard", log_prints=False, validate_parameters=False)
def its_shard(config: dict[str, Any], shard: int, shards: int) -> dict[str, Any]:
    """Generate and score the prompts of one shard of a run (the run folder must be prepared)."""
    from flows.waves import run_waves

    from avits_core.threads import apply_run_limits
    from flows.task_runner import needs_runner, run_on_runner

    logger = get_run_logger()
    cfg = _cfg(config)
    check_shardable(cfg, shards)  # the coordinator's config: arw_shards already set (sharded_config)
    if needs_runner(cfg):  # the worker's flow run again, as a subflow on the configured runner
        return run_on_runner(its_shard, cfg, f"{cfg.resolved_run_id()}-shard{shard}of{shards}-{cfg.runner.kind}",
                             config=cfg, shard=shard, shards=shards)
    apply_run_limits(cfg)  # the worker's flow-run process: its own limits
    ctx = runner.prepare_run(cfg)
    pids = shard_prompt_ids([p.prompt_id for p in ctx.prompts], shard, shards)
    device = os.environ.get("CUDA_VISIBLE_DEVICES")
    logger.info("run %s shard %d/%d: %d prompts, CUDA_VISIBLE_DEVICES=%s", ctx.run_id, shard, shards, len(pids), device)
    t0 = time.perf_counter()
    run_waves(ctx, only=set(pids))
    return {"run_id": ctx.run_id, "shard": shard, "shards": shards, "prompts": len(pids),
            "cuda_visible_devices": device, "wall_s": round(time.perf_counter() - t0, 3)}


def missing_work(ctx: runner.RunContext) -> list[str]:
    """What a finished set of shards left undone: '(prompt, event) not generated' or 'rewards missing' lines."""
    st = ctx.state
    out = []
    for p in ctx.prompts:
        for e in range(ctx.n_generations):
            if not st.has_event(p.prompt_id, e):
                out.append(f"{p.prompt_id} e{e}: not generated")
    cands = ctx.store.candidate_ids()
    for spec in ctx.all_verifier_specs():  # an 'error' row counts as done, as in an unsharded run
        v = runner.get_verifier(spec.name, spec.params)
        n = len(cands - ctx.store.scored_pairs(v.name, v.cache_version))
        if n:
            out.append(f"{spec.name}: {n} candidates without a reward row")
    return out


def _submit(name: str, cfg: RunConfig, shard: int, shards: int) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(name=name, parameters={"config": cfg.model_dump(mode="json"), "shard": shard, "shards": shards},
                          timeout=0, as_subflow=True, flow_run_name=f"{cfg.resolved_run_id()}-shard{shard}of{shards}")


def _wait(flow_run_ids: dict[int, Any], poll_s: float, timeout_s: float | None) -> dict[int, Any]:
    from prefect.client.orchestration import get_client

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    final: dict[int, Any] = {}
    with get_client(sync_client=True) as client:
        while len(final) < len(flow_run_ids):
            for i, fid in flow_run_ids.items():
                if i in final:
                    continue
                fr = client.read_flow_run(fid)
                if fr.state is not None and fr.state.is_final():
                    final[i] = fr.state
            if len(final) < len(flow_run_ids):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"shards {sorted(set(flow_run_ids) - set(final))} not finished in {timeout_s} s")
                time.sleep(poll_s)
    return final


def run_shards(cfg: RunConfig, shards: int, *, deployment: str = DEFAULT_SHARD_DEPLOYMENT, shard_retries: int = 1,
               poll_s: float = 2.0, timeout_s: float | None = None) -> dict[int, dict[str, Any]]:
    """Submit every shard, wait, re-submit failed shards (finished ones are left alone). Returns per shard
    {state, attempts, flow_run_id}; RuntimeError when a shard still fails after its retries."""
    logger = get_run_logger()
    todo = list(range(shards))
    info: dict[int, dict[str, Any]] = {}
    for attempt in range(1 + shard_retries):
        runs = {i: _submit(deployment, cfg, i, shards) for i in todo}
        states = _wait({i: fr.id for i, fr in runs.items()}, poll_s, timeout_s)
        for i, state in states.items():
            info[i] = {"state": state.type.value, "attempts": attempt + 1, "flow_run_id": str(runs[i].id)}
        todo = [i for i, s in states.items() if not s.is_completed()]
        if not todo:
            return info
        logger.warning("shards %s ended %s; %s", todo, [states[i].type.value for i in todo],
                       "retrying them" if attempt < shard_retries else "no retries left")
    raise RuntimeError(f"shards {todo} did not complete after {1 + shard_retries} attempts "
                       f"(states {[info[i]['state'] for i in todo]})")


@flow(name="its-sharded", log_prints=False, validate_parameters=False)
def its_sharded(config_path: str | None = None, overrides: list[str] | None = None,
                config: RunConfig | dict[str, Any] | None = None, shards: int = 2,
                shard_deployment: str = DEFAULT_SHARD_DEPLOYMENT, shard_retries: int = 1) -> dict[str, Any]:
    """One ITS run over ``shards`` shard flow runs on a work pool, then replay, evaluation and report."""
    from flows.waves import resolve_config, select_evaluate_report
    from tasks import its as t

    logger = get_run_logger()
    cfg = sharded_config(resolve_config(config_path, overrides, config), shards)
    ctx = runner.prepare_run(cfg)
    logger.info("run %s: %d prompts in %d shards on %s (ARW state: %s)", ctx.run_id, len(ctx.prompts), shards,
                shard_deployment, "whole run" if cfg.search.arw_shards == 1 else f"per shard of {cfg.search.arw_shards}")
    try:
        t0 = time.perf_counter()
        shard_info = run_shards(cfg, shards, deployment=shard_deployment, shard_retries=shard_retries)
        runner.record_timing(ctx, "shards", time.perf_counter() - t0)
        ctx = runner.open_run(ctx.store.path)  # a fresh state: the shards wrote in other processes
        left = missing_work(ctx)
        if left:
            raise RuntimeError("shards finished but work is missing: " + "; ".join(left[:10]))
        t.record_compute(ctx)
        sel_id, results, report_path = select_evaluate_report(ctx, cfg)
    except BaseException:
        runner.finish_run(ctx, status="failed")
        raise
    runner.finish_run(ctx, status="completed", selection_id=sel_id,
                      shards={"n": shards, "deployment": shard_deployment,
                              "runs": {str(i): v for i, v in sorted(shard_info.items())}})
    return {"run_id": ctx.run_id, "run_path": str(ctx.store.path), "selection_id": sel_id, "results": results,
            "report": report_path, "shards": shard_info}
