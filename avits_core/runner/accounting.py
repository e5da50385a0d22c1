"""Compute accounting from a run's tables (written to run.json ``compute``).

NFE actually spent (sum of ``nfe_own``: inherited prefixes of branched candidates count once) per
prompt and in total, decodes (= stored candidates: each is decoded once), verifier calls (reward rows
per verifier, errors included), scoring events, Best-of-N equivalent (NFE spent / NFE of one
full-schedule sample), and the wall time per stage from run.json ``timings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext


def compute_summary(ctx: "RunContext") -> dict[str, Any]:
    """Compute actually spent by the run, from its tables: NFE (each candidate's own passes, so
    inherited EvoSearch prefixes count once), decodes, verifier calls (every rewards row, retries
    included) and errors, scoring events, and wall time per stage (from run.json's timings)."""
    cands = ctx.store.read("candidates", ["prompt_id", "generation", "nfe", "nfe_own", "kind"]).to_pylist()
    rew = ctx.store.read("rewards", ["verifier", "status", "event_seq"]).to_pylist()
    per_prompt: dict[str, int] = {}
    finals = [c for c in cands if (c["kind"] or "final") == "final"]  # intermediate estimates are not samples
    full = [c["nfe"] for c in finals if c["generation"] == 0] or [c["nfe"] for c in finals]
    for c in cands:
        own = c["nfe_own"] if c["nfe_own"] is not None else c["nfe"]
        per_prompt[c["prompt_id"]] = per_prompt.get(c["prompt_id"], 0) + int(own)
    calls: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in rew:
        calls[r["verifier"]] = calls.get(r["verifier"], 0) + 1
        if r["status"] != "ok":
            errors[r["verifier"]] = errors.get(r["verifier"], 0) + 1
    total = sum(per_prompt.values())
    nfe_full = max(full) if full else None
    info = ctx.store.read_run_json()
    return {
        "nfe_total": int(total),
        "nfe_per_prompt": per_prompt,
        "nfe_full_sample": nfe_full,
        "best_of_n_equivalent": (total / len(per_prompt) / nfe_full) if per_prompt and nfe_full else None,
        "decodes": len(cands),
        "verifier_calls": calls,
        "verifier_errors": errors,
        "scoring_events": len({r["event_seq"] for r in rew}),
        "wall_s_per_stage": dict(info.get("timings") or {}),
    }


def record_compute(ctx: "RunContext") -> dict[str, Any]:
    """Write :func:`compute_summary` into run.json under ``compute``; returns it."""
    summary = compute_summary(ctx)
    ctx.store.update_run_json(compute=summary)
    return summary
