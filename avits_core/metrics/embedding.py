"""Embedding scores (CLIP, CLAP, ImageBind family) as evaluation metrics, and a per-category
breakdown for JavisBench prompt sets.

:func:`embedding_scores` runs verifiers on the clips and returns one row per (clip, metric):
    {**keys[i], "prompt_id", "metric", "value", "error", "extractor", "metric_version"}
``metric`` is the verifier name (clip, clap, ib_tv, ib_ta, ib_av, avh_score, javis_score);
``value`` is the raw cosine in [-1, 1] (NaN when the clip failed; ``error`` says why);
``extractor`` names the model that produced it (e.g. ``clip:openai/clip-vit-base-patch32``,
``ib_tv:imagebind_huge:.checkpoints/imagebind_huge.pth``) and, for a non-default protocol, the
protocol (``...+protocol=javisbench``), so rows from different weights or recipes are never mixed up;
``metric_version`` is the verifier's ``cache_version`` (version plus non-default identity params). The exact recipes are in docs/metrics.md.

:func:`per_category` groups such rows by the JavisBench category columns of each prompt
(``cat<k>_ind`` in ``Prompt.meta``; one value "2", or several "0,1" / "[0, 1]" when a prompt belongs
to several categories of an aspect — it then counts in each). Rows whose value is NaN are counted in
``n_failed`` and left out of the statistics. Output rows:
    {"metric", "aspect" ("cat<k>"), "category" (int index), "label" (from ``cat<k>_title`` when it
     names exactly the listed categories, else None), "n", "mean", "std" (sample, ddof=1; NaN for
     n < 2), "n_failed"}
sorted by metric, aspect number, category.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections import defaultdict
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from avits_core.media import AVClip
from avits_core.prompts import Prompt
from avits_core.verifiers.base import Verifier

log = logging.getLogger(__name__)

EMBEDDING_METRICS = ("clip", "clap", "ib_tv", "ib_ta", "ib_av", "avh_score", "javis_score")
_CAT = re.compile(r"^cat(\d+)_ind$")


def describe_extractor(verifier: Verifier) -> str:
    """The model behind a verifier's numbers, for the ``extractor`` column."""
    parts = [verifier.name]
    backbone = getattr(verifier, "backbone", None)
    if backbone is not None:
        parts.append(str(getattr(backbone, "name", type(backbone).__name__)))
        path = getattr(backbone, "model_path", None)
        if path:
            parts.append(str(path))
        elif hasattr(backbone, "dim") and hasattr(backbone, "seed"):
            parts.append(f"dim={backbone.dim},seed={backbone.seed}")
    elif getattr(verifier, "model_path", None):
        parts.append(str(verifier.model_path))
    return ":".join(parts)


def embedding_scores(
    clips: Sequence[AVClip],
    prompts: Sequence[Prompt],
    metrics: Sequence[str] | Mapping[str, Mapping[str, Any]] = EMBEDDING_METRICS,
    *,
    verifiers: Mapping[str, Verifier] | None = None,
    keys: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Score every clip with each metric; one row per (clip, metric) (see the module docstring).

    ``metrics``: verifier names, or {name: constructor params} (e.g. {"clip": {"model_path": ...}}).
    ``verifiers``: ready instances by name, used instead of constructing (tests, shared models).
    ``keys``: per-clip columns copied into its rows (e.g. run_id, candidate_id, selection_id).
    """
    from avits_core.registry import VERIFIERS

    if len(clips) != len(prompts):
        raise ValueError(f"{len(clips)} clips but {len(prompts)} prompts")
    if keys is not None and len(keys) != len(clips):
        raise ValueError(f"{len(keys)} key rows for {len(clips)} clips")
    specs: Mapping[str, Mapping[str, Any]] = (
        dict(metrics) if isinstance(metrics, Mapping) else {m: {} for m in metrics}
    )
    rows: list[dict[str, Any]] = []
    for name, params in specs.items():
        v = (verifiers or {}).get(name) or VERIFIERS.create(name, **dict(params))
        v.check_ready()
        res = v.score(clips, prompts)
        extractor = describe_extractor(v) + v.identity_suffix()  # e.g. "+protocol=javisbench"
        for i, (p, value, err) in enumerate(zip(prompts, res.values, res.errors)):
            row = dict(keys[i]) if keys is not None else {}
            row.update(prompt_id=p.prompt_id, metric=v.name, value=float(value), error=err,
                       extractor=extractor, metric_version=v.cache_version)
            rows.append(row)
    return rows


def parse_category_indices(value: Any, *, prompt_id: str = "?", column: str = "cat?_ind") -> list[int]:
    """Category indices of one ``cat<k>_ind`` cell: 2, "2", "0,1", "0;1", "[0, 1]" -> [..]; empty -> []."""
    if value is None:
        return []
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value)]
    if isinstance(value, float):
        if math.isnan(value):
            return []
        if value.is_integer():
            return [int(value)]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in parse_category_indices(v, prompt_id=prompt_id, column=column)]
    s = str(value).strip()
    if s == "" or s.lower() in ("nan", "none", "null", "[]"):
        return []
    body = s.strip("[]() ")
    tokens = [t for t in re.split(r"[,;\s|]+", body) if t]
    out = []
    for t in tokens:
        try:
            f = float(t)
        except ValueError:
            f = math.nan
        if not (math.isfinite(f) and f.is_integer()):
            raise ValueError(f"prompt {prompt_id!r}: column {column} has a non-integer category {value!r}")
        out.append(int(f))
    return sorted(set(out))


def _labels(title: Any, n: int) -> list[str | None]:
    if title is None or (isinstance(title, float) and math.isnan(title)):
        return [None] * n
    s = str(title).strip()
    if not s:
        return [None] * n
    if n == 1:
        try:
            lit = ast.literal_eval(s)
            if isinstance(lit, (list, tuple)) and len(lit) == 1:
                return [str(lit[0])]
        except (ValueError, SyntaxError):
            pass
        return [s]
    try:
        lit = ast.literal_eval(s)
        parts = [str(x) for x in lit] if isinstance(lit, (list, tuple)) else None
    except (ValueError, SyntaxError):
        parts = [p.strip() for p in re.split(r"[;,|]", s) if p.strip()]
    return parts if parts is not None and len(parts) == n else [None] * n


def category_tags(p: Prompt) -> Iterator[tuple[int, int, str | None]]:
    """(k, category index, title or None) for every index in the prompt's ``cat<k>_ind`` columns,
    titled from its ``cat<k>_title`` column when that holds one title per index.

    Raises ValueError naming the prompt and column for a non-integer index."""
    for col, cell in p.meta.items():
        m = _CAT.match(col)
        if not m:
            continue
        k = int(m.group(1))
        idx = parse_category_indices(cell, prompt_id=p.prompt_id, column=col)
        for i, title in zip(idx, _labels(p.meta.get(f"cat{k}_title"), len(idx))):
            yield k, i, title


def per_category(rows: Sequence[Mapping[str, Any]], prompts: Sequence[Prompt], *, metric_key: str = "metric",
                 value_key: str = "value") -> list[dict[str, Any]]:
    """Mean of each metric per JavisBench category (see the module docstring)."""
    by_id = {p.prompt_id: p for p in prompts}
    groups: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    labels: dict[tuple[int, int], str] = {}
    for r in rows:
        pid = r.get("prompt_id")
        if pid not in by_id:
            raise ValueError(f"per_category: row for prompt_id {pid!r} has no matching prompt")
        p = by_id[pid]
        for k, i, lab in category_tags(p):
            groups[(str(r[metric_key]), k, i)].append(float(r[value_key]))
            if lab is not None:
                labels.setdefault((k, i), lab)
    out = []
    for (metric, k, i), vals in sorted(groups.items()):
        v = np.asarray(vals, dtype=np.float64)
        ok = v[np.isfinite(v)]
        out.append({
            "metric": metric, "aspect": f"cat{k}", "category": i, "label": labels.get((k, i)),
            "n": int(ok.size),
            "mean": float(ok.mean()) if ok.size else float("nan"),
            "std": float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
            "n_failed": int(v.size - ok.size),
        })
    return out
