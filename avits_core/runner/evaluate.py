"""Evaluation step: metrics rows of the baseline (the first candidate of each prompt) and of a selection.

Per evaluated clip: SynthAV's oracle metrics from the stored ground truth (held out), and every ok
verifier reward (held out unless the selection was guided by it). The set-level FVD / KVD / FAD rows
come from :mod:`avits_core.metrics.distribution`. ``results_table`` is the per-metric summary the
CLI and the report print.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from avits_core.errors import ConfigError
from avits_core.metrics.distribution import evaluate_distribution
from avits_core.registry import VERIFIERS

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext

log = logging.getLogger(__name__)


def _evaluation_inputs(ctx: "RunContext") -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Candidates (id -> row with truth) and ok rewards (id -> verifier -> value), read once per evaluate."""
    from avits_core.store.duck import connect

    cands = {c["candidate_id"]: c for c in ctx.store.read("candidates").select(["candidate_id", "truth"]).to_pylist()}
    con = connect(ctx.store.path)
    rew = con.sql("SELECT candidate_id, verifier, value FROM rewards WHERE status = 'ok'").to_arrow_table().to_pylist()
    con.close()
    by_cand: dict[str, dict[str, float]] = {}
    for r in rew:
        by_cand.setdefault(r["candidate_id"], {})[r["verifier"]] = r["value"]
    return cands, by_cand


def _metric_rows(
    ctx: "RunContext", selection_id: str | None, picks: dict[str, str], guided: set[str],
    cands: dict[str, dict[str, Any]], by_cand: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    rows = []
    oracle = None
    if ctx.cfg.evaluation.oracle:
        from avits_core.metrics.oracle import oracle_metrics as oracle
    for pid, cid in picks.items():
        if cid is None:
            continue
        base = dict(run_id=ctx.run_id, selection_id=selection_id, prompt_id=pid, candidate_id=cid)
        truth = cands.get(cid, {}).get("truth")
        if oracle is not None and truth:
            for m, val in oracle(json.loads(truth)).items():
                rows.append(dict(base, metric=m, value=float(val), held_out=True, extractor="synthav-truth"))
        for vname, val in sorted(by_cand.get(cid, {}).items()):
            rows.append(dict(base, metric=vname, value=float(val), held_out=vname not in guided, extractor="verifier"))
    return rows


def evaluate(ctx: "RunContext", selection_id: str) -> int:
    """Write the metrics rows that are missing for the baseline and for ``selection_id``. Returns #rows.

    Idempotent: a (selection, candidate, metric) that already has a row is not written again, so
    re-evaluating after a rerank scored a new verifier adds just that verifier's rows, to the
    baseline too (the baseline's ``selection_id`` is null). Then :func:`evaluate_distribution` adds
    the set-level FVD/KVD/FAD rows when the config has ``evaluation.distribution``.
    """
    sels = [r for r in ctx.store.read("selections").to_pylist() if r["selection_id"] == selection_id]
    if not sels:
        raise ConfigError(f"no selection {selection_id!r} in run {ctx.run_id}")
    metrics = ctx.store.read("metrics", ["selection_id", "candidate_id", "metric"]).to_pylist()
    have = {(m["selection_id"], m["candidate_id"], m["metric"]) for m in metrics}
    cands = ctx.store.read("candidates").select(["prompt_id", "candidate_id", "kind"]).to_pylist()
    first: dict[str, str] = {}
    for c in sorted(cands, key=lambda c: c["candidate_id"]):
        if (c["kind"] or "final") == "final":  # the baseline is a fully denoised clip
            first.setdefault(c["prompt_id"], c["candidate_id"])
    data = _evaluation_inputs(ctx)
    rows = _metric_rows(ctx, None, first, {v.name for v in ctx.cfg.verifiers}, *data)
    rows += _metric_rows(ctx, selection_id, {s["prompt_id"]: s["candidate_id"] for s in sels}, set(sels[0]["verifiers"]), *data)
    rows = [r for r in rows if (r["selection_id"], r["candidate_id"], r["metric"]) not in have]
    ctx.store.append("metrics", rows)
    return len(rows) + evaluate_distribution(ctx, selection_id)


def results_table(ctx: "RunContext", selection_id: str) -> list[dict[str, Any]]:
    """Per metric: baseline mean, selected mean, change (selected - baseline), direction."""
    from avits_core.store.duck import connect

    con = connect(ctx.store.path)
    rows = con.sql(
        """
        SELECT metric, bool_or(held_out) FILTER (WHERE selection_id = ?) AS held_out,
               avg(value) FILTER (WHERE selection_id IS NULL) AS baseline,
               avg(value) FILTER (WHERE selection_id = ?) AS selected
        FROM metrics WHERE selection_id IS NULL OR selection_id = ?
        GROUP BY metric ORDER BY metric
        """,
        params=[selection_id, selection_id, selection_id],
    ).to_arrow_table().to_pylist()
    con.close()
    hib = _metric_directions()
    for r in rows:
        if r["baseline"] is not None and r["selected"] is not None:
            r["change"] = r["selected"] - r["baseline"]
        else:
            r["change"] = None
        r["higher_is_better"] = hib.get(r["metric"], True)
    return rows


def _metric_directions() -> dict[str, bool]:
    out: dict[str, bool] = {}
    try:
        from avits_core.metrics.oracle import ORACLE_METRICS

        out.update({k: bool(v["higher_is_better"]) for k, v in ORACLE_METRICS.items()})
    except ImportError:  # pragma: no cover
        pass
    for n in VERIFIERS.names():
        try:
            out[n] = bool(VERIFIERS.get_class(n).higher_is_better)
        except Exception:  # optional dependency missing: default direction
            out.setdefault(n, True)
    from avits_core.metrics.features import DISTRIBUTION_HIGHER_IS_BETTER

    out.update(DISTRIBUTION_HIGHER_IS_BETTER)
    return out
