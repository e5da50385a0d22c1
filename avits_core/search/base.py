"""Search methods turn a compute budget into candidates. Shared helpers live here."""

from __future__ import annotations


def candidate_id(prompt_id: str, generation: int, index: int) -> str:
    """Stable, sortable id of candidate ``index`` of ``generation`` for ``prompt_id``.

    Zero padding makes the lexicographic order equal to (generation, index) order, so the baseline
    (the first candidate of each prompt) is the smallest id of its prompt.
    """
    return f"{prompt_id}_g{generation:02d}_c{index:03d}"
