"""``toy_pair``: two scoring events per prompt. Event 0: ``k`` fresh noises; event 1: ``k`` children of
the best candidate of event 0 (by the run's aggregate after event 0), branched at step ``step`` with
a variance-preserving mutation of rate ``beta``. The whole method is this file."""

from __future__ import annotations

from pydantic import Field

from avits_core.search.base import CandidatePlan, EventPlan, MethodParams, PromptView, SearchMethod
from avits_core.seeding import candidate_seeds, derive_seed


class ToyPairParams(MethodParams):
    k: int = Field(default=2, ge=1)
    step: int = Field(default=0, ge=0)
    beta: float = Field(default=0.5, ge=0.0, le=1.0)


class ToyPair(SearchMethod):
    name = "toy_pair"
    Params = ToyPairParams

    @property
    def n_events(self) -> int:
        return 2

    def capture_steps(self, event: int) -> list[int]:
        return [self.params.step] if event == 0 else []

    def check_generator(self, num_steps: int) -> None:
        from avits_core.errors import ConfigError

        if self.params.step >= num_steps:
            raise ConfigError(f"search.params.step: {self.params.step} must be below num_steps={num_steps}")

    def plan(self, event: int, view: PromptView) -> EventPlan:
        pid, k = view.prompt_id, self.params.k
        if event == 0:
            return EventPlan(pid, 0, [CandidatePlan(seed=s) for s in candidate_seeds(view.run_seed, pid, k)])
        agg = view.aggregates()
        best = max(sorted(agg), key=lambda c: agg[c])
        mutation = {"rule": "vp", "beta": self.params.beta, "modality": "joint"}
        return EventPlan(pid, 1, [CandidatePlan(seed=derive_seed(view.run_seed, pid, i, salt="toy"), parent=best,
                                                step=self.params.step, mutation=mutation) for i in range(k)],
                         info={"parent": best, "parent_aggregate": agg[best]})


class Misnamed(ToyPair):
    """Registered as ``toy_misnamed`` but calls itself ``toy_other``: loading it is an error."""

    name = "toy_other"
