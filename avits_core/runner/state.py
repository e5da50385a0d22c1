"""The store-backed search state of a run: the tables read once per process, then kept current.

:class:`RunState` is the engine's :class:`~avits_core.search.engine.SearchState` over a run folder:

* candidates: every stored row (by id), their records per prompt, the set of ids (the store's
  duplicate check gets it instead of re-reading the table on every append);
* the scoring cache: per (verifier, version), the status of every scored candidate ('ok' wins
  over 'error');
* the guided rewards (the run's verifiers at their current version) that the online aggregate
  feeds on;
* plans of events >= 1 in ``plans/<prompt_id>/e<event>.json`` (written once, atomically; a resumed
  run reuses them and continues the lineage it started);
* latents in ``latents/<prompt_id>/<candidate_id>.pt`` (``torch.save`` of ``{"steps": {"<k>":
  {"video", "audio", "nfe"}}}``; ``nfe`` is the candidate's NFE when it was at step k).

The steps that write (generation, scoring) update the state after their append, so a per-prompt
step never re-reads a table. A second process (or a reopened context) builds its own state from the
tables.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from avits_core.aggregate import get_aggregator
from avits_core.errors import EvoSearchError
from avits_core.generators.base import Latents
from avits_core.search.base import CandidateRecord, EventPlan
from avits_core.runner.models import get_verifier
from avits_core.runner.select import default_spec, higher_is_better
from avits_core.search.engine import OnlineSelection, SearchState

if TYPE_CHECKING:  # pragma: no cover
    from avits_core.runner.context import RunContext

log = logging.getLogger(__name__)

LATENT_DIR = "latents"
PLAN_DIR = "plans"


def latent_relpath(prompt_id: str, cid: str) -> Path:
    return Path(LATENT_DIR) / prompt_id / f"{cid}.pt"


def plan_relpath(prompt_id: str, event: int) -> Path:
    return Path(PLAN_DIR) / prompt_id / f"e{event:02d}.json"


def save_latents(path: Path, snaps: Mapping[int, Latents], row: int = 0) -> None:
    """Write row ``row`` of every snapshot to ``path`` (temp file, then rename)."""
    data = {"steps": {str(k): {"video": lat.video[row].detach().cpu().clone(),
                               "audio": lat.audio[row].detach().cpu().clone(),
                               "nfe": int(lat.nfe[row])} for k, lat in snaps.items()}}
    import io

    import torch

    from avits_core.store import fs as sfs

    buf = io.BytesIO()
    torch.save(data, buf)
    sfs.put_bytes(path, buf.getvalue())  # temp + rename locally, one whole PUT on an object store


def load_latent_file(path: Path, cid: str, seed: int, step: int) -> Latents:
    """The one-row latent of candidate ``cid`` at ``step`` from its latent file."""
    import io

    import torch

    from avits_core.store import fs as sfs

    try:
        src = io.BytesIO(sfs.read_bytes(path)) if sfs.is_remote(path) else path
        data = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EvoSearchError(f"latent file {path} of candidate {cid} is missing") from None
    snap = data.get("steps", {}).get(str(step))
    if snap is None:
        have = sorted(int(k) for k in data.get("steps", {}))
        raise EvoSearchError(f"{path}: no latent at step {step} (kept steps: {have})")
    return Latents(video=snap["video"][None], audio=snap["audio"][None], step=step, seeds=[int(seed)],
                   nfe=[int(snap["nfe"])])


def record_of(row: Mapping[str, Any]) -> CandidateRecord:
    nfe = int(row["nfe"])
    own = row.get("nfe_own")
    bi = row.get("batch_index")
    return CandidateRecord(
        candidate_id=row["candidate_id"], prompt_id=row["prompt_id"], generation=int(row.get("generation") or 0),
        step=int(row.get("step") or 0), parent_ids=tuple(row.get("parent_ids") or ()), seed=int(row["seed"]),
        nfe=nfe, nfe_own=int(own) if own is not None else nfe,
        batch_index=int(bi) if bi is not None else int(row["candidate_id"].rsplit("_c", 1)[-1]),
        kind=row.get("kind") or "final", x0_step=row.get("x0_step"))


class RunState(SearchState):
    """See the module docstring."""

    def __init__(self, ctx: "RunContext"):
        self.ctx = ctx
        spec = default_spec(ctx.cfg)
        hib = higher_is_better(spec.verifiers)

        def make_online() -> OnlineSelection:
            agg = get_aggregator(spec.aggregator, spec.verifiers, spec.weight_map, **spec.params)
            return OnlineSelection(agg, spec.verifiers, hib)

        super().__init__(ctx.method, [p.prompt_id for p in ctx.prompts], ctx.cfg.seed, make_online,
                         arw_shards=spec.arw_shards)
        params = {v.name: dict(v.params) for v in ctx.all_verifier_specs()}
        self.guided_version = {n: get_verifier(n, params.get(n, {})).cache_version for n in spec.verifiers}
        self.rows: dict[str, dict[str, Any]] = {}
        self.ids: set[str] = set()  # the stored candidate ids (handed to the store's duplicate check)
        self.scored: dict[tuple[str, str], dict[str, str]] = {}
        self._write_lock = threading.Lock()
        cands = ctx.store.read("candidates").to_pylist()
        for r in cands:
            self.rows[r["candidate_id"]] = r
            self.ids.add(r["candidate_id"])
        self.add_records([record_of(r) for r in cands])
        rew = ctx.store.read("rewards", ["candidate_id", "verifier", "verifier_version", "status", "value"]).to_pylist()
        for r in rew:  # 'ok' wins over 'error'; the value of an ok row is the same on every retry
            self.mark_scored(r["verifier"], r["verifier_version"], r["candidate_id"], r["status"], r["value"])
        log.debug("run state of %s: %d candidates, %d reward rows", ctx.run_id, len(cands), len(rew))

    # -- candidates ---------------------------------------------------------------------------------
    def candidate_ids(self) -> set[str]:
        """The stored candidate ids (the live set, not a copy: do not modify)."""
        return self.ids

    def add_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self.lock:
            for r in rows:
                self.rows[r["candidate_id"]] = dict(r)
                self.ids.add(r["candidate_id"])
            self.add_records([record_of(r) for r in rows])

    def event_rows(self, prompt_id: str, event: int) -> list[dict[str, Any]]:
        return [self.rows[r.candidate_id] for r in self.event_records(prompt_id, event)]

    # -- scoring cache ------------------------------------------------------------------------------
    def mark_scored(self, verifier: str, version: str, cid: str, status: str, value: float | None) -> None:
        with self.lock:
            seen = self.scored.setdefault((verifier, str(version)), {})
            if seen.get(cid) != "ok":
                seen[cid] = status
            if self.guided_version.get(verifier) == str(version):
                have = self.rewards.get(cid, {})
                if status == "ok" or verifier not in have or have[verifier] is None:
                    self.add_reward(cid, verifier, value if status == "ok" else None)

    def is_scored(self, verifier: str, version: str, cid: str, *, retry_errors: bool = True) -> bool:
        st = self.scored.get((verifier, str(version)), {}).get(cid)
        return st == "ok" or (st == "error" and not retry_errors)

    # -- hooks of the engine ------------------------------------------------------------------------
    def load_latent(self, cid: str, step: int) -> Latents:
        row = self.rows.get(cid)
        if row is None:
            raise EvoSearchError(f"unknown parent candidate {cid}")
        if not row.get("latent_path"):
            raise EvoSearchError(f"candidate {cid} kept no latents; cannot branch from it at step {step}")
        return load_latent_file(self.ctx.store.path / str(row["latent_path"]), cid, row["seed"], step)

    def save_plan(self, plan: EventPlan) -> None:
        from avits_core.store import fs as sfs

        p = self.ctx.store.inside(plan_relpath(plan.prompt_id, plan.event))
        sfs.put_bytes(p, json.dumps(plan.to_dict(), indent=1).encode("utf-8"))

    def load_plan(self, prompt_id: str, event: int) -> EventPlan | None:
        return read_plan(self.ctx.store.path, prompt_id, event)


def read_plan(run_path: Path, prompt_id: str, event: int) -> EventPlan | None:
    """The stored plan of (prompt, event >= 1), or None."""
    from avits_core.store.fs import as_path

    p = as_path(run_path) / plan_relpath(prompt_id, event).as_posix()
    if not p.exists():
        return None
    return EventPlan.from_dict(json.loads(p.read_text(encoding="utf-8")))
