"""Best-of-N over initial noises.

Candidate ``i`` of a prompt starts from the noise seeded by ``derive_seed(run_seed, prompt_id, i)``
and is denoised over the generator's full schedule (NFE = the generator's cost of the full
schedule). Selection is the aggregator's argmax over the N candidates; the first ``k`` candidates
of a run with N >= k are exactly a Best-of-k run (seeds do not depend on N), which is what the
budget curves (BoN@k) rely on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from avits_core.aggregate.base import Aggregator
from avits_core.generators.base import JointGenerator, Latents
from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.seeding import candidate_seeds
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)


def generate_candidates(
    generator: JointGenerator, prompt: Prompt, seeds: Sequence[int], batch_size: int | None = None
) -> tuple[Latents, list[AVClip]]:
    """Denoise one latent per seed over the full schedule and decode them (batched by ``batch_size``)."""
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


@dataclass
class BestOfNResult:
    prompt_id: str
    seeds: list[int]
    scores: dict[str, np.ndarray]
    aggregate: np.ndarray
    selected: int
    nfe: np.ndarray
    clips: list[AVClip]


def best_of_n(
    generator: JointGenerator,
    verifiers: Sequence[Verifier],
    aggregator: Aggregator,
    prompts: Sequence[Prompt],
    n: int,
    run_seed: int = 0,
) -> list[BestOfNResult]:
    """The whole Best-of-N loop in memory (no store, no Prefect): one scoring event per prompt.

    For each prompt in order: generate N candidates, score them with every verifier, feed the
    event to the aggregator (``observe``), rank with ``combine`` and keep the argmax (lowest index
    wins exact ties). Verifier failures propagate as NaN -> the aggregator raises; the pipeline's
    store-backed path handles error rows instead.
    """
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1, got {n}")
    out = []
    for p in prompts:
        seeds = candidate_seeds(run_seed, p.prompt_id, n)
        lat, clips = generate_candidates(generator, p, seeds)
        scores: dict[str, np.ndarray] = {}
        for v in verifiers:
            res = v.score(clips, [p] * len(clips))
            if not res.ok.all():
                bad = int(np.flatnonzero(~res.ok)[0])
                raise RuntimeError(f"{v.name} failed on candidate {bad} of {p.prompt_id}: {res.errors[bad]}")
            scores[v.name] = res.values if v.higher_is_better else -res.values
        aggregator.observe(scores, prompt_id=p.prompt_id, generation=0, event_seq=len(out))
        agg = aggregator.combine(scores)
        sel = int(np.flatnonzero(agg == agg.max())[0])
        out.append(BestOfNResult(p.prompt_id, seeds, scores, agg, sel, lat.nfe.copy(), clips))
        log.debug("%s: selected candidate %d (aggregate %.4f)", p.prompt_id, sel, agg[sel])
    return out
