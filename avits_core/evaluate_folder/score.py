"""Per-clip metrics, cached in the rewards table: what is still to score, scoring a batch, and the latest
row of each (metric, clip)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Sequence

from avits_core.evaluate_folder.read import read_entry
from avits_core.verifiers.base import Verifier

if TYPE_CHECKING:
    from avits_core.evaluate_folder.match import ClipEntry
    from avits_core.evaluate_folder.plan import EvalPlan


def _reads_audio(v: Verifier) -> bool:
    return "audio" in v.modalities


def pending(plan: EvalPlan, store: Any) -> dict[str, list[ClipEntry]]:
    """Per metric, the clips without an ``ok`` rewards row for its cache version (one read of the
    rewards table for all metrics, four of its columns)."""
    t = store.read("rewards", ["candidate_id", "verifier", "verifier_version", "status"])
    done: dict[tuple[str, str], set[str]] = {}
    for cid, ver, version, status in zip(*(t[c].to_pylist() for c in ("candidate_id", "verifier",
                                                                        "verifier_version", "status"))):
        if status == "ok":
            done.setdefault((ver, version), set()).add(cid)
    out = {}
    for name, v in plan.verifiers.items():
        ok = done.get((v.name, str(v.cache_version)), set())
        out[name] = [e for e in plan.entries if e.candidate_id not in ok]
    return out


def score_entries(plan: EvalPlan, store: Any, entries: Sequence[ClipEntry]) -> int:
    """Score ``entries`` with every metric still missing for them; append rewards rows. Returns rows written."""
    todo = pending(plan, store)
    want = {e.candidate_id for e in entries}
    todo = {n: [e for e in es if e.candidate_id in want] for n, es in todo.items()}
    need = {e.candidate_id: e for es in todo.values() for e in es}
    if not need:
        return 0
    read = {cid: read_entry(e, plan.spec.protocol) for cid, e in need.items()}
    rows = []
    for name, es in todo.items():
        if not es:
            continue
        v = plan.verifiers[name]
        clips = [read[e.candidate_id][0 if _reads_audio(v) else 1] for e in es]
        t0 = time.perf_counter()
        res = v.score(clips, [e.prompt for e in es])
        share = (time.perf_counter() - t0) / len(es)
        for k, e in enumerate(es):
            err = res.errors[k]
            rows.append({
                "prompt_id": e.prompt.prompt_id, "candidate_id": e.candidate_id, "verifier": v.name,
                "verifier_version": v.cache_version,
                "value": None if err else float(res.values[k]), "status": "error" if err else "ok",
                "error": err, "event_seq": e.index, "generation": 0, "wall_s": share,
                "higher_is_better": bool(v.higher_is_better),
                "details": (json.dumps(res.details[k], sort_keys=True) if res.details and res.details[k] else None),
            })
    store.append("rewards", rows)
    return len(rows)


def latest_rewards(plan: EvalPlan, store: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(metric, candidate_id) -> the latest ok row, else the latest error row, for this plan's versions."""
    tbl = store.read("rewards", ["candidate_id", "verifier", "verifier_version", "status", "value", "error", "scored_at"])
    best: dict[tuple[str, str], dict[str, Any]] = {}
    versions = {v.name: (n, v.cache_version) for n, v in plan.verifiers.items()}
    for r in tbl.to_pylist():
        key = versions.get(r["verifier"])
        if key is None or r["verifier_version"] != key[1]:
            continue
        k = (key[0], r["candidate_id"])
        old = best.get(k)
        rank = (r["status"] == "ok", r["scored_at"])
        if old is None or rank > (old["status"] == "ok", old["scored_at"]):
            best[k] = r
    return best

