"""Best-of-N over initial noises: the one-event search method.

Candidate ``i`` of a prompt starts from the noise seeded by ``derive_seed(run_seed, prompt_id, i)``
and is denoised over the generator's full schedule (NFE = the generator's cost of the full
schedule). Selection is the aggregator's argmax over the N candidates; the first ``k`` candidates
of a run with N >= k are exactly a Best-of-k run (seeds do not depend on N), which is what the
budget curves (BoN@k) rely on.

``n`` comes from ``search.n`` of the config (or ``search.params.n``).
"""

from __future__ import annotations

from typing import Sequence

from pydantic import Field

from avits_core.generators.base import JointGenerator, Latents
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.search.base import CandidatePlan, EventPlan, MethodParams, PromptView, SearchMethod
from avits_core.seeding import candidate_seeds


class BestOfNParams(MethodParams):
    n: int = Field(default=8, ge=1, description="candidates per prompt")


class BestOfN(SearchMethod):
    """One scoring event per prompt: ``n`` fresh noises."""

    name = "best_of_n"
    Params = BestOfNParams

    def label(self) -> str:
        return f"Best-of-{self.params.n}"

    def plan(self, event: int, view: PromptView) -> EventPlan:
        seeds = candidate_seeds(view.run_seed, view.prompt_id, self.params.n)
        return EventPlan(view.prompt_id, event, [CandidatePlan(seed=int(s)) for s in seeds])


def generate_candidates(
    generator: JointGenerator, prompt: Prompt, seeds: Sequence[int], batch_size: int | None = None
) -> tuple[Latents, list[AVClip]]:
    """Denoise one latent per seed over the full schedule and decode them (batched by ``batch_size``).

    A helper for callers that want clips without a search (tests, reference sets); searches go
    through :mod:`avits_core.search.engine`."""
    if len(seeds) < 1:
        raise ValueError("Best-of-N needs N >= 1 seeds")
    bs = batch_size or len(seeds)
    lat_parts: list[Latents] = []
    clips: list[AVClip] = []
    for i in range(0, len(seeds), bs):
        lat = generator.init_noise(list(seeds[i : i + bs]))
        lat = generator.denoise(lat, prompt, 0, generator.num_steps)
        lat_parts.append(lat)
        clips.extend(generator.decode(lat, prompt))
    return Latents.cat(lat_parts), clips
